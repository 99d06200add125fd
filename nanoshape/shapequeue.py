"""The shape stages across micrographs: a queue of measured micrographs flushed in large batches.

The CNN, the image fit and the refinement are jitted calls over fixed-size buckets of
particles; run per micrograph (tens of particles each on typical micrographs), most of each
call is padding and per-call overhead. :class:`ShapeQueue` gathers measured micrographs
(segmented, measured, cropped) until they hold ``flush_particles`` particles (or
``max_items`` micrographs, or ``max_pixels`` pixels of micrograph), runs the shape stages once over all of their crops, and hands
each micrograph back on its own to be finished and written: results stay per micrograph and
are written atomically one by one, so resuming and ``kill -9`` behave as before (a
micrograph still waiting in the queue has nothing written that marks it finished, and a
rerun analyses it again).

A particle's shape does not depend on which other particles share its batch (each is
fitted alone, vmapped; ``tests/test_pipeline.py`` checks that a batched run equals a run
per micrograph), so the batching changes no result.

The first micrograph is flushed alone, so its results appear as soon as they can; after
that the queue flushes by size and at the end. If a batch fails, each of its micrographs
is run again alone, so one bad micrograph is reported with its own error and the rest go on.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

__all__ = ["ShapeQueue"]

Item = TypeVar("Item")


class ShapeQueue(Generic[Item]):
    """Items waiting for a batched stage; flushed by size, after the first item, and at :meth:`close`.

    Args:
      run_batch: runs the stage over a list of items (in place, or raising).
      finish: called with each item after its batch ran, in the order the items came.
      failed: called with an item and the exception when the stage failed for it alone.
      size: the particles an item holds.
      flush_particles: flush once the waiting items hold at least this many particles.
      max_items: flush once this many items wait (bounds the memory of many small ones).
      pixels: the pixels an item holds in memory (its micrograph and label image), and
      max_pixels: flush once the waiting items hold this many (bounds the memory of a few
        large micrographs with few particles).

    Use as a context manager, or call :meth:`close` to flush what is left.
    """

    def __init__(self, run_batch: Callable[[list[Item]], None], finish: Callable[[Item], None],
                 failed: Callable[[Item, Exception], None], size: Callable[[Item], int], *,
                 flush_particles: int = 2048, max_items: int = 64, pixels: Callable[[Item], int] = lambda item: 0,
                 max_pixels: int = 2**26):
        if flush_particles < 1 or max_items < 1 or max_pixels < 1:
            raise ValueError(f"flush_particles, max_items and max_pixels must be >= 1, got {flush_particles}, "
                             f"{max_items} and {max_pixels}")
        self._run_batch, self._finish, self._failed, self._size = run_batch, finish, failed, size
        self._pixels_of = pixels
        self.flush_particles, self.max_items, self.max_pixels = flush_particles, max_items, max_pixels
        self._waiting: list[Item] = []
        self._particles = self._pixels = 0
        self.flushes = 0

    def put(self, item: Item) -> None:
        """Queue ``item``; flush when the queue is full (or the item is the first of the run)."""
        self._waiting.append(item)
        self._particles += self._size(item)
        self._pixels += self._pixels_of(item)
        if (self.flushes == 0 or self._particles >= self.flush_particles or len(self._waiting) >= self.max_items
                or self._pixels >= self.max_pixels):
            self.flush()

    def flush(self) -> None:
        """Run the stage over every waiting item and finish each."""
        items, self._waiting, self._particles, self._pixels = self._waiting, [], 0, 0
        if not items:
            return
        self.flushes += 1
        try:
            self._run_batch(items)
        except Exception:  # find the item that fails: each alone
            for item in items:
                try:
                    self._run_batch([item])
                except Exception as error:
                    self._failed(item, error)
                else:
                    self._finish(item)
            return
        for item in items:
            self._finish(item)

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> "ShapeQueue[Item]":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()

    def __len__(self) -> int:
        return len(self._waiting)
