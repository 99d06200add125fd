"""Where a run stands: the events a progress bar is drawn from (the library itself never prints)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Progress:
    """Where a run stands, for a progress bar (the library itself never prints).

    Attributes:
      stage: ``micrographs`` (one step per micrograph finished, ``item`` its stem); a step of
        the micrograph ``item``: ``read``, ``segment``, ``features``, ``crops``, ``cnn``,
        ``image_fit``, ``refine`` (these three count particles, in chunks), ``write``; or a
        stage at the end of the run: ``gather``, ``group`` (one step per grouping tried),
        ``classifier``, ``report`` (one step per section, ``item`` its name).
      done, total: steps done of the stage's total.
      item: what the stage works on.
    """

    stage: str
    done: int
    total: int
    item: str = ""


def report_progress(progress: Callable[[Progress], None] | None, stage: str, done: int, total: int, item: str = "") -> None:
    """Tell ``progress`` (if any) where a stage stands."""
    if progress is not None:
        progress(Progress(stage, done, total, item))
