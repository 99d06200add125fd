"""Padded batching: a jitted function over any number of rows, compiled for a few batch sizes.

A jitted function compiles once per input shape, and a compilation costs about as much as
the work on a thousand particles. Called on each micrograph's own number of particles, it
would compile for almost every micrograph; instead the rows go in pieces padded to one of a
few sizes, so each size compiles once, and the padding rows' results are dropped.

:func:`pieces` cuts n rows for a list of sizes, :func:`geometric_size` gives a size from an
unbounded list (``smallest * factor**k``), :func:`pad_rows` pads one piece.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

__all__ = ["Piece", "pieces", "geometric_size", "pad_rows"]


class Piece(NamedTuple):
    """Rows ``begin`` to ``begin + count`` of the input, in a call of ``size`` rows (``size - count`` padding)."""

    begin: int
    count: int
    size: int

    @property
    def rows(self) -> slice:
        """The piece's rows of the input."""
        return slice(self.begin, self.begin + self.count)


def pieces(n: int, sizes: Sequence[int]) -> list[Piece]:
    """Cut ``n`` rows into pieces of the given sizes, with little padding and few distinct shapes.

    Each piece is the largest size that the rows left fill; the last rows, fewer than the
    smallest size, go in one piece padded to the smallest size.

    Example:
      >>> [tuple(p) for p in pieces(600, (32, 512))]
      [(0, 512, 512), (512, 32, 32), (544, 32, 32), (576, 24, 32)]
    """
    ordered = sorted(sizes)
    if not ordered or ordered[0] < 1:
        raise ValueError(f"pieces: sizes must be positive, got {tuple(sizes)}")
    out, begin = [], 0
    while begin < n:
        size = max((s for s in ordered if s <= n - begin), default=ordered[0])
        count = min(size, n - begin)
        out.append(Piece(begin, count, size))
        begin += count
    return out


def geometric_size(n: int, *, smallest: int, factor: int) -> int:
    """The smallest ``smallest * factor**k`` (k >= 0) that holds ``n`` rows.

    Example:
      >>> geometric_size(33, smallest=32, factor=2), geometric_size(5, smallest=1, factor=4)
      (64, 16)
    """
    if smallest < 1 or factor < 2:
        raise ValueError(f"geometric_size: smallest must be >= 1 and factor >= 2, got {smallest} and {factor}")
    size = smallest
    while size < n:
        size *= factor
    return size


def pad_rows(rows: np.ndarray, size: int, fill: float | int | None = None) -> np.ndarray:
    """``rows`` (m, ...) followed by ``size - m`` padding rows, of the same dtype.

    The padding is ``fill`` everywhere, or with ``fill=None`` copies of the first row: valid
    input for a function that a row of zeros would send down another path (or to NaN).
    """
    rows = np.asarray(rows)
    m = rows.shape[0]
    if not 0 < m <= size:
        raise ValueError(f"pad_rows: {m} rows do not fit a batch of {size} (or there are none)")
    if fill is None:
        return rows[np.concatenate([np.arange(m), np.zeros(size - m, np.int64)])]
    out = np.full((size, *rows.shape[1:]), fill, rows.dtype)
    out[:m] = rows
    return out
