"""Read a micrograph's burned-in scale bar: the bar's length in px, its label, the pixel size.

Published micrographs are mostly exports without calibration that carry a drawn bar and a
label ("100 nm", "0.5 µm", "500nm"). :func:`find_bars` finds the bars (uniform, axis-aligned
horizontal rectangles set off from what is above and below them, hollow or outlined ones
included), :func:`read_scale_bar` reads the label beside a bar with the glyph classifier of
:mod:`nanoshape.glyphs` and returns the pixel size with its confidence, or the reason it
abstains; :func:`calibrate` decides a micrograph's pixel size from the override, the
file's metadata and the bar, and records where it came from and every disagreement.

The bar is measured end to end, to a fraction of a pixel, between the half-level crossings
of its ends, outline included. The label is read as a whole: the glyphs cut beside the
bar (as they are and as strokes only) are joined and split every way that may make a
glyph, and the label grammar (a number and a length unit) picks the most probable
reading; it is taken where every one of its glyphs is above the classifier's confidence
floor and no other reading of the line competes. Where it is not, the line is read by
analysis by synthesis (:mod:`nanoshape.labelsynth`: every usual label rendered in the
training fonts and correlated with the line), taken where it is sure alone or names the
length the classifier found most probable; else the micrograph stays in px and the
reason is recorded.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "Bar",
    "ScaleBarOptions",
    "ScaleBarReading",
    "calibrate",
    "explain_label",
    "find_bars",
    "is_bar_box",
    "is_beside",
    "label_region",
    "parse_label",
    "read_label",
    "read_scale_bar",
    "read_scale_bar_labels",
]

#: nm per unit of a scale-bar label (the unit as written, lower case; µ, μ and u alike).
LABEL_UNITS_NM = {"pm": 1e-3, "å": 0.1, "a": 0.1, "nm": 1.0, "µm": 1e3, "um": 1e3, "mm": 1e6}
# fractions of the grey range from each extreme at which bars are looked for: drawn bars
# sit at the extreme, on backgrounds from near it (a white bar on a light SEM image) to far
_THRESHOLDS = (0.06, 0.2, 0.4)
#: The largest pixel size a label read from a bar may give, nm per px (a light
#: microscope's tens of micrometres): beyond it a unit was misread ("nm" as "mm").
_LARGEST_NM = 1e5
_LABEL = re.compile(r"^\s*(\d+(?:[.,]\d+)?)\s*(pm|å|a|nm|µm|um|mm)\s*$")


@dataclass(frozen=True)
class ScaleBarOptions:
    """How the scale bar takes part in a micrograph's pixel size.

    Attributes:
      read: look for a burned-in scale bar and read it (off: metadata and override only).
        A label the reader cannot read is given per run or per file by the caller
        (``nanoshape analyze scale_bar=100nm`` or ``scale_bars=<csv>``).
      prefer: which wins when the bar and the file's metadata disagree by more than
        ``tolerance``: ``"metadata"`` (the default: an instrument's calibration is exact, a
        bar is drawn to the nearest pixel) or ``"scale_bar"``. Either way a warning says so.
      tolerance: relative disagreement of bar and metadata that raises a warning.
      min_confidence: every glyph of a label must be classified with at least this
        probability, and the label must hold this share of its line's readings, else the
        label is not trusted.
    """

    read: bool = True
    prefer: str = "metadata"
    tolerance: float = 0.02
    min_confidence: float = 0.9

    def __post_init__(self):
        if self.prefer not in ("metadata", "scale_bar"):
            raise ValueError(f"scale bar option prefer must be 'metadata' or 'scale_bar', got {self.prefer!r}")
        if not (0 < self.tolerance < 1):
            raise ValueError(f"scale bar option tolerance must be in (0, 1), got {self.tolerance!r}")
        if not (0 < self.min_confidence <= 1):
            raise ValueError(f"scale bar option min_confidence must be in (0, 1], got {self.min_confidence!r}")


@dataclass(frozen=True)
class Bar:
    """A horizontal scale bar found in an image (pixel indices, ends included).

    Attributes:
      x0_px, x1_px: first and last column of the bar, outline included.
      y0_px, y1_px: first and last row.
      polarity: ``"dark"`` (darker than its surroundings) or ``"light"``.
      bar_value, background_value: the bar's and the surroundings' grey values.
      hollow: an outlined, hollow bar (two parallel lines closed at the ends).
      outlined: an outline of opposite contrast closes around the bar (counted in its length).
      span_px: the length end to end to a fraction of a pixel, between the half-level
        crossings of the bar's ends (0 where not measured: ``length_px`` is used).
    """

    x0_px: int
    x1_px: int
    y0_px: int
    y1_px: int
    polarity: str
    bar_value: float
    background_value: float
    hollow: bool = False
    outlined: bool = False
    span_px: float = 0.0

    @property
    def length_px(self) -> int:
        """The bar's length end to end in whole px (first to last pixel of the bar)."""
        return self.x1_px - self.x0_px + 1

    @property
    def exact_length_px(self) -> float:
        """The bar's length end to end to a fraction of a pixel, where measured."""
        return self.span_px if self.span_px > 0 else float(self.length_px)

    @property
    def thickness_px(self) -> int:
        """The bar's height in px."""
        return self.y1_px - self.y0_px + 1


@dataclass(frozen=True)
class ScaleBarReading:
    """What the scale bar of one micrograph says.

    Attributes:
      pixel_size_nm: nm per px (label / bar length), None when abstaining.
      label: the label as read (``"100 nm"``) or given; empty where none.
      value_nm: the label in nm.
      bar: the bar measured, None where none was found.
      confidence: the lowest probability of one of the label's glyphs, or the label's share
        of its line's readings where that is lower; for a label read by synthesis, its
        correlation with the line (1.0 for a label given by the user).
      source: ``'scale bar: "100 nm" = 212 px'``, or empty.
      reason: why no pixel size was taken from the bar (empty when one was).
    """

    pixel_size_nm: float | None
    label: str = ""
    value_nm: float | None = None
    bar: Bar | None = None
    confidence: float = 0.0
    source: str = ""
    reason: str = ""


# ----------------------------------------------------------------------------- labels


def parse_label(text: str) -> tuple[float, str] | None:
    """The length a scale-bar label names.

    Args:
      text: e.g. ``"100 nm"``, ``"0.5 µm"``, ``"1μm"``, ``"500nm"``, ``"2 um"``, ``"5 Å"``.

    Returns:
      (length in nm, the unit as written normalised: nm, µm, mm, Å, pm), or None where the
      text is not one positive number and one length unit.

    Example:
      >>> parse_label("0.5 µm")
      (500.0, 'µm')
    """
    cleaned = text.replace("\u03bc", "µ").replace("\u212b", "Å").replace("\u00c5", "Å").lower().strip()
    match = _LABEL.match(cleaned)
    if match is None:
        return None
    value = float(match.group(1).replace(",", "."))
    unit = match.group(2)
    if value <= 0:
        return None
    shown = {"um": "µm", "a": "Å", "å": "Å"}.get(unit, unit)
    return value * LABEL_UNITS_NM[unit], shown


def read_scale_bar_labels(path: str | os.PathLike) -> dict[str, str]:
    """The per-file labels of a ``file,scale_bar`` CSV, keyed by file stem.

    Raises:
      ValueError: the file is missing, lacks the two columns, or holds a label that is not
        a number and a length unit (the message names the file and the row).
    """
    from nanoshape.io import read_file_table

    labels: dict[str, str] = {}
    for row_number, file, label in read_file_table(path, "scale_bar", "scale bar label file"):
        if not label:
            continue
        if parse_label(label) is None:
            raise ValueError(f"{path}, row {row_number}: scale_bar {label!r} is not a number and a length unit")
        labels[Path(file).stem] = label
    return labels


# ----------------------------------------------------------------------------- bars


def is_bar_box(height_px: int, width_px: int, fill: float, image_width_px: int, *, min_aspect: float = 8.0) -> bool:
    """The shape test of a scale bar: a filled, horizontal or vertical, long thin box.

    Args:
      height_px, width_px: the component's bounding box.
      fill: the fraction of the box the component covers.
      image_width_px: the image's width; a bar is at least 3 % of it long.
      min_aspect: smallest ratio of the long side to the short one.

    Returns:
      True for a bar-shaped component (shared by :func:`nanoshape.segment.overlays.find_overlays`).
    """
    long_side, short_side = max(height_px, width_px), min(height_px, width_px)
    return (fill >= 0.85 and long_side >= min_aspect * short_side and short_side >= 2
            and long_side >= 0.03 * image_width_px)


def _row_runs(mask: np.ndarray, min_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, first column, last column) of every horizontal run of True at least ``min_length`` long."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    change = np.diff(padded, axis=1)
    rows_s, starts = np.nonzero(change == 1)
    rows_e, ends = np.nonzero(change == -1)  # one past the run, in the unpadded index
    keep = ends - starts >= min_length
    return rows_s[keep], starts[keep], ends[keep] - 1


def _chains(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, slack: int = 1) -> list[tuple[int, int, list[int]]]:
    """Runs of consecutive rows whose ends agree within ``slack`` px: (first row, last row, run indices)."""
    order = np.lexsort((starts, rows))
    finished: list[list[int]] = []
    by_row: dict[int, list[int]] = {}
    for index in order:
        by_row.setdefault(int(rows[index]), []).append(int(index))
    previous_row, previous = -10, []
    chain_of: dict[int, list[int]] = {}
    for row in sorted(by_row):
        current = by_row[row]
        linked: dict[int, list[int]] = {}
        for index in current:
            match = None
            if row == previous_row + 1:
                for other in previous:
                    if abs(int(starts[other]) - int(starts[index])) <= slack and abs(int(ends[other]) - int(ends[index])) <= slack:
                        match = other
                        break
            chain = chain_of.pop(match) if match is not None else []
            chain.append(index)
            linked[index] = chain
        for chain in chain_of.values():
            finished.append(chain)
        chain_of = linked
        previous_row, previous = row, current
    finished.extend(chain_of.values())
    return [(int(rows[c[0]]), int(rows[c[-1]]), c) for c in finished]


def _box_margin(mask: np.ndarray, first: int, last: int, x0: int, x1: int, rows: int = 6) -> bool:
    """Whether a run of rows first..last is the margin of a filled box: the mask goes on up
    (or down) both of its ends, and between them, up (down) to where the ends stop, a row is
    covered again (the box's fill or far side). End ticks also rise at both ends, but only
    background lies between them; a bar drawn on the box lies between its margins."""
    ends = [slice(x0, x0 + 3), slice(max(x0, x1 - 2), x1 + 1)]
    for step, edge in ((-1, first), (1, last)):
        reach = 0
        while 0 <= edge + step * (reach + 1) < mask.shape[0] and all(mask[edge + step * (reach + 1), end].any()
                                                                      for end in ends):
            reach += 1
        if reach < rows:
            continue
        span = slice(first - reach, first) if step < 0 else slice(last + 1, last + reach + 1)
        if mask[span, x0 : x1 + 1].mean(axis=1).max() >= 0.75:
            return True
    return False


def _median_int(values: list[int]) -> int:
    """The median of a few integers, rounded down (np.median's, without its overhead)."""
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) // 2


def _half_level_ends(line: np.ndarray, start: int, stop: int, bar_value: float, background: float,
                     around: np.ndarray | None = None) -> tuple[int, int, float, float]:
    """First and last index of the bar on a profile through it, each end at half level of its
    own step, and the sub-pixel positions where the profile crosses those levels.

    The run past half-way from ``background`` to ``bar_value`` that holds the middle of
    [start, stop] is found first; each of its ends is then moved to the last pixel past half
    way between the bar and the plateau 2-4 px beyond that end, where that plateau is
    past half-way and goes on above or below the bar (``around``: the profile 2 px above
    and below, whichever is nearer the bar's value), so a particle touching the bar (darker
    than half-way, but not as dark as the bar) is not counted in it, while a paler end
    drawn within the bar's own rows is; or out to the half level of the step to a plateau
    beyond the background (a white bar's end on a dark particle). The sub-pixel ends are where the profile crosses
    half-way between the bar and what lies 2-4 px beyond each end, interpolated linearly
    between the bar's last pixel and the next (a sharp end falls half-way between them, so
    the span between the crossings equals the count of pixels end to end).
    """
    half = 0.5 * (bar_value + background)
    sign = 1.0 if bar_value > background else -1.0
    inside = (line - half) * sign > 0
    middle = (start + stop) // 2
    if not inside[middle]:
        return start, stop, start - 0.5, stop + 0.5
    left = middle
    while left > 0 and inside[left - 1]:
        left -= 1
    right = middle
    while right < line.size - 1 and inside[right + 1]:
        right += 1
    # the bar's own level on this profile (its inner rows: a thin blurred bar's box median
    # takes in its paler edge rows), and the pixels within 3 robust standard deviations of
    # it (drawn bars are uniform), or 8 % of the contrast where that is more
    bar_value = float(np.median(line[left : right + 1]))
    spread = 1.4826 * float(np.median(np.abs(line[left : right + 1] - bar_value)))
    near = np.abs(line - bar_value) <= max(3 * spread, 0.08 * abs(bar_value - background))
    ends, edges = [], []
    for end, step in ((left, -1), (right, 1)):
        inner = end
        while inner != middle and not near[inner]:
            inner -= step
        beyond = [inner + step * k for k in (2, 3, 4)]
        if all(0 <= b < line.size for b in beyond):
            outside = float(np.median(line[beyond]))
            step_half = 0.5 * (bar_value + outside)
            beside = float(np.median(around[beyond])) if around is not None else outside
            # a paler end drawn within the bar's own rows is kept; else the end is cut at the
            # half level of its own step: toward a particle touching the bar (past half-way),
            # or out to a particle of the other colour the bar is drawn over (a white bar's
            # end on a dark particle is past half-way to the background, not to the particle)
            pale_end = (outside - half) * sign > 0 and (beside - half) * sign <= 0
            if not pale_end:
                position = inner
                while 0 <= position + step < line.size and (line[position + step] - step_half) * sign > 0:
                    position += step
                end = position
        ends.append(end)
        # where the profile crosses half-way between the bar and what lies 2-4 px beyond
        # this end (the background, a particle, a box), between the end and the next pixel
        after = end + step
        fraction = 0.5
        beyond = [end + step * k for k in (2, 3, 4)]
        if all(0 <= b < line.size for b in beyond) and line[end] != line[after]:
            level = 0.5 * (bar_value + float(np.median(line[beyond])))
            fraction = float(np.clip((line[end] - level) / (line[end] - line[after]), 0.0, 1.0))
        edges.append(end + step * fraction)
    return ends[0], ends[1], edges[0], edges[1]


def _outline_reach(line: np.ndarray, end: int, step: int, bar_value: float, background: float) -> int:
    """How far an outline of opposite contrast reaches beyond the bar's ``end`` (0 where none).

    An outline lies within 3 px of the end, is on the far side of the background from the
    bar by at least 40 % of the bar's contrast, and is followed by the background again
    (within a quarter of the outline's own depth).
    """
    contrast = bar_value - background
    sign = np.sign(contrast)
    positions = [end + step * k for k in range(1, 9) if 0 <= end + step * k < line.size]
    if len(positions) < 8:
        return 0
    values = line[positions]
    opposite = -(values[:3] - background) * sign
    k = int(np.argmax(opposite))
    if opposite[k] < 0.4 * abs(contrast):
        return 0
    after = values[k + 2 : k + 5]
    if np.median(-(after - background) * sign) > 0.25 * opposite[k]:
        return 0  # still far from the background: an edge of something else, not an outline
    half = 0.5 * (values[k] + background)
    outer = k
    while outer + 1 < 4 and (values[outer + 1] - half) * np.sign(values[k] - background) > 0:
        outer += 1
    return outer + 1


def find_bars(image: np.ndarray, *, max_bars: int = 8) -> list[Bar]:
    """Find horizontal scale bars: uniform rectangles set off from the rows above and below.

    Each polarity of the image and of its 3x3 median is thresholded at 6, 20 and 40 % of
    the grey range from its extreme; runs of bar-coloured pixels at least 2.5 % of the
    width long (12 px at least) are chained over consecutive rows whose ends agree within
    1 px; a chain is a bar when it is at least 2x as long as thick, the rows just above and
    below it cover under 75 % of its span (so a particle's widest rows are not) and it is
    not the margin of a filled box (the colour going on up or down both its ends to a covered row;
    end ticks rise with background between them). The ends are read on the profile
    averaged over the bar's inner rows, half-way between the bar and the background 6-10 px
    beside it, or between the bar and whatever touches its end where that is past half-way
    (a particle); an outline of opposite contrast closing around both ends is part of the
    bar; a bar within 25 % of the grey range of its background needs such an outline or
    must be drawn (uniform, at the image's extreme grey value); two thin parallel lines
    closed at the ends (a hollow bar) become one bar, and one bar found at
    several thresholds or beside its own halo is kept once.

    Args:
      image: (H, W) grey values.
      max_bars: keep at most this many, the longest first.

    Returns:
      The bars, longest first.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"find_bars expects a 2-D image, got shape {image.shape}")
    height, width = image.shape
    lo, hi = float(image.min()), float(image.max())
    if not hi > lo:
        return []
    min_length = max(12, int(0.025 * width))
    found: list[Bar] = []
    # the image as it is, and its 3x3 median: noise and JPEG speckle at a bar's edge break
    # its runs into rows of unequal ends, while a 1 px line survives only the former
    smooth = ndi.median_filter(image, 3)
    for source, polarity, fraction in [(m, p, f) for m in (image, smooth) for p in ("dark", "light") for f in _THRESHOLDS]:
        mask = source <= lo + fraction * (hi - lo) if polarity == "dark" else source >= hi - fraction * (hi - lo)
        rows, starts, ends = _row_runs(mask, min_length)
        if rows.size == 0 or rows.size > 200_000:
            continue
        start_list, end_list = starts.tolist(), ends.tolist()
        for first, last, chain in _chains(rows, starts, ends):
            thickness = last - first + 1
            x0, x1 = _median_int([start_list[k] for k in chain]), _median_int([end_list[k] for k in chain])
            length = x1 - x0 + 1
            if length < 2 * thickness or (thickness == 1 and length < 20):
                continue
            # the share of the span that a row just above or below covers (outside the image: none);
            # summed where asked, not from running counts of every row (12 masks x 4 Mpx on 2048^2)
            cover = lambda row: np.count_nonzero(mask[row, x0:x1 + 1]) / length if 0 <= row < height else 0.0
            above = min(cover(first - 1), cover(first - 2))
            below = min(cover(last + 1), cover(last + 2))
            if max(above, below) >= 0.75 or _box_margin(mask, first, last, x0, x1):
                continue
            bar = _measure(image, polarity, first, last, x0, x1)
            if bar is not None and not _box_margin(mask, first, last, bar.x0_px, bar.x1_px):
                found.append(bar)
    found = _merge_hollow(found)
    found.sort(key=lambda b: -b.length_px)
    return found[:max_bars]


def _measure(image: np.ndarray, polarity: str, first: int, last: int, x0: int, x1: int) -> Bar | None:
    """The bar's ends at half level on each of its rows (median), with its outline."""
    height, width = image.shape
    rows = range(first + 1, last) if last - first >= 2 else range(first, last + 1)
    bar_value = float(np.median(image[first : last + 1, x0 : x1 + 1]))
    pad = max(4, (x1 - x0) // 20)
    # the background 6-10 px beside the ends and 4-7 px above and below: beyond an outline
    beside = np.concatenate([image[first : last + 1, max(0, x0 - pad - 10) : max(0, x0 - 5)].ravel(),
                             image[first : last + 1, x1 + 6 : x1 + pad + 11].ravel(),
                             image[max(0, first - 7) : max(0, first - 3), x0 : x1 + 1].ravel(),
                             image[last + 4 : last + 8, x0 : x1 + 1].ravel()])
    if beside.size == 0:
        return None
    background = float(np.median(beside))
    if abs(bar_value - background) < 0.08 * (float(image.max()) - float(image.min())):
        return None
    # one profile averaged over the bar's inner rows: noise averages out, ends stay sharp;
    # a bar of one or two rows (a thin bar blurred, its paler edge rows missed by the
    # threshold) takes in the rows beside it that are past half-way to the bar at 90 % of
    # its columns (a row crossing particles is not), so one noisy pixel does not cut its
    # only row short
    if last - first < 2:
        half = 0.5 * (bar_value + background)
        sign = 1.0 if bar_value > background else -1.0
        beside_rows = [r for r in (first - 1, last + 1)
                       if 0 <= r < height and float(np.mean((image[r, x0 : x1 + 1] - half) * sign > 0)) >= 0.9]
        rows = sorted([*rows, *beside_rows])
    line = image[list(rows)].mean(axis=0)
    above, below = image[max(0, first - 2)], image[min(height - 1, last + 2)]
    around = np.where(np.abs(above - bar_value) < np.abs(below - bar_value), above, below)
    left, right, left_edge, right_edge = _half_level_ends(line, x0, x1, bar_value, background, around)
    reach_left = _outline_reach(line, left, -1, bar_value, background)
    reach_right = _outline_reach(line, right, 1, bar_value, background)
    # an outline closes around all four sides, hugging the bar: a box of the other colour
    # behind bar and label reaches on above or below, and is not part of the bar
    column = image[:, left + 1 : right].mean(axis=1) if right - left >= 3 else image[:, left : right + 1].mean(axis=1)
    outlined = bool(reach_left and reach_right and _outline_reach(column, first, -1, bar_value, background)
                    and _outline_reach(column, last, 1, bar_value, background))
    grey_range = float(image.max()) - float(image.min())
    contrast = abs(bar_value - background)
    extreme = float(image.min()) if bar_value < background else float(image.max())
    inner = image[list(rows), left : right + 1]
    drawn = abs(bar_value - extreme) <= 0.06 * grey_range and float(inner.std()) <= 0.25 * contrast
    if outlined:  # an outline closes around the bar: it is part of it
        left, right = left - reach_left, right + reach_right
        left_edge, right_edge = left - 0.5, right + 0.5
    elif contrast < 0.25 * grey_range and not drawn:
        return None  # faint and not a uniform, saturated drawing: texture, not a bar
    return Bar(int(left), int(right), first, last, polarity, bar_value, background, outlined=outlined,
               span_px=float(right_edge - left_edge))


def _merge_hollow(bars: list[Bar]) -> list[Bar]:
    """Two thin parallel bars of one span, a few px apart, with the other polarity between: one hollow bar."""
    out, used = [], set()
    for i, a in enumerate(bars):
        if i in used:
            continue
        for j in range(i + 1, len(bars)):
            b = bars[j]
            if j in used or b.polarity != a.polarity:
                continue
            top, bottom = (a, b) if a.y0_px < b.y0_px else (b, a)
            gap = bottom.y0_px - top.y1_px - 1
            if (abs(a.x0_px - b.x0_px) <= 2 and abs(a.x1_px - b.x1_px) <= 2 and 1 <= gap <= 0.25 * a.length_px
                    and max(a.thickness_px, b.thickness_px) <= 4):
                a = Bar(min(a.x0_px, b.x0_px), max(a.x1_px, b.x1_px), top.y0_px, bottom.y1_px, a.polarity,
                        a.bar_value, a.background_value, hollow=True)
                used.add(j)
        out.append(a)
    # one bar found at several thresholds, or as its interior and its outline, or beside
    # its own halo: keep the one of the strongest contrast times thickness
    result: list[Bar] = []
    for bar in sorted(out, key=lambda b: -abs(b.bar_value - b.background_value) * min(b.thickness_px, 4)):
        same = [r for r in result if abs(r.x0_px - bar.x0_px) <= 4 and abs(r.x1_px - bar.x1_px) <= 4
                and r.y0_px - 4 <= bar.y1_px and bar.y0_px <= r.y1_px + 4]
        if not same:
            result.append(bar)
    return result


# ----------------------------------------------------------------------------- reading


def _touches_edge(bar: Bar, width: int) -> bool:
    return bar.x0_px <= 0 or bar.x1_px >= width - 1


def label_region(image: np.ndarray, bar: Bar) -> tuple[int, int, np.ndarray]:
    """The part of the image a bar's label is looked for in: (top row, left column, pixels)."""
    height, width = image.shape
    reach_x = max(60, int(0.7 * bar.length_px))
    reach_y = max(60, int(0.6 * bar.length_px))
    y0, y1 = max(0, bar.y0_px - reach_y), min(height, bar.y1_px + reach_y + 1)
    x0, x1 = max(0, bar.x0_px - reach_x), min(width, bar.x1_px + reach_x + 1)
    return y0, x0, image[y0:y1, x0:x1]


def is_beside(bar: Bar, top: int, bottom: int, left: int, right: int) -> bool:
    """Whether a line of text (rows top..bottom-1, columns left..right-1) is the bar's label's
    place: above or below it within 1.5 line heights and overlapping its span (give or take
    a line height), or on its rows within 3 line heights to either side."""
    line_height = bottom - top
    vertical_gap = max(top - bar.y1_px - 1, bar.y0_px - bottom, 0)
    horizontal_gap = max(left - bar.x1_px - 1, bar.x0_px - right, 0)
    above_or_below = vertical_gap <= max(1.5 * line_height, 6) and horizontal_gap <= line_height
    beside = vertical_gap == 0 and horizontal_gap <= 3 * line_height
    return (above_or_below or beside) and line_height <= 1.2 * bar.length_px


def _label_lines(image: np.ndarray, bar: Bar, *, own_level: bool = False):
    """The lines of text beside a bar, per text polarity and ink (as is, and strokes only:
    :func:`nanoshape.glyphs.ink`): (ink, [(distance to the bar, glyphs, line box)]).

    ``own_level``: instead, one ink, of text in the bar's colour as it is, scaled to the
    region's own extreme (its 99th or 1st percentile outside the bar) rather than to the
    bar's grey value: a faint label (thin antialiased strokes) never reaches the latter."""
    from nanoshape.glyphs import STROKES_PX, cut_glyphs, ink

    y0, x0, region = label_region(image, bar)
    # the label's background: the median of the region on the far side of half-way from
    # the bar's grey value (the bar's own background, measured a few px from it, takes in
    # the label's strokes where the label is that near)
    half = 0.5 * (bar.bar_value + bar.background_value)
    far = region[region < half] if bar.bar_value > bar.background_value else region[region > half]
    paper = float(np.median(far)) if far.size else bar.background_value
    out = []
    outside = np.ones(region.shape, bool)
    outside[max(0, bar.y0_px - y0 - 3) : bar.y1_px - y0 + 4, max(0, bar.x0_px - x0 - 3) : bar.x1_px - x0 + 4] = False
    kinds = [(bar.polarity, 0)] if own_level else [(p, s) for p in ("dark", "light") for s in (0, STROKES_PX)]
    for polarity, strokes_px in kinds:
        # a label is drawn in its bar's colour on its bar's background: their grey values
        # set the ink's scale (for text of the other colour, the region's own levels); each
        # is read as it is and as strokes only (a top-hat: particles touching it dropped)
        same = polarity == bar.polarity
        level = bar.bar_value if same else None
        if own_level and outside.any():
            level = float(np.percentile(region[outside], 99 if polarity == "light" else 1))
        text = ink(region, polarity, level=level, background=paper if same else None, strokes_px=strokes_px)
        # the bar and 3 px around it (outline, blur) are not text: text sitting on the bar
        # would otherwise join its glyphs through the bar's edge
        text[~outside] = 0
        lines = []
        for line in map(_from_baseline, cut_glyphs(text)):
            if not 2 <= len(line) <= 12:  # a label is a number and a unit: no lone blob, no texture
                continue
            top, bottom = min(g.y0 for g in line) + y0, max(g.y1 for g in line) + y0
            left, right = line[0].x0 + x0, line[-1].x1 + x0
            if is_beside(bar, top, bottom, left, right):
                distance = max(top - bar.y1_px - 1, bar.y0_px - bottom, 0) + max(left - bar.x1_px - 1, bar.x0_px - right, 0)
                lines.append((distance, line, (top, bottom, left, right, polarity)))
        out.append((text, sorted(lines, key=lambda item: item[0])))
    return out


def _from_baseline(line):
    """A line without the leading glyphs that stand wholly above the rest of it: a label
    starts with a digit, which stands on the baseline and reaches up to the cap line. A
    first glyph that ends above the baseline of the glyphs after it (a bottom shared by at
    least two of them, give or take 2 px or 0.2 of the first glyph's height) and starts
    above the top of every one of them, by more than that (the edge of a box or a
    particle's rim beside the text), is no digit and would read as a "1". Where no two
    later glyphs share a bottom ("2 µm": a µ reaches below the baseline, an m does not),
    nothing is left out. Lost leading glyphs make the line doubtful as any stroke left of
    it does (:func:`_stroke_left_of`), unless it is centred on its bar (:func:`_centred`)."""
    start = 0
    while start < len(line) - 2:
        glyph, rest = line[start], line[start + 1 :]
        tolerance = max(2.0, 0.2 * glyph.height)
        shared = [g.y1 for g in rest if sum(abs(h.y1 - g.y1) <= tolerance for h in rest) >= 2]
        if not (shared and glyph.y1 < min(shared) - tolerance and glyph.y0 < min(g.y0 for g in rest) - tolerance):
            break
        start += 1
    return line[start:]


def _pairing(bar: Bar, box: tuple[int, int, int, int, str]) -> tuple[bool, bool, float]:
    """How far a label line (top, bottom, left, right, text polarity) is from being a bar's
    label, as a key that orders a line's bars best first: bars of the line's colour first
    (labels are drawn in their bar's colour); of those, a bar the line is centred on
    (:func:`_centred`: figure software centres a label on its bar, to a pixel or two) before
    one it is not (a strip of background between a box and the image's edge, found as a bar
    a few px nearer the label than the bar itself, is not centred under it); then the line's
    gap to the bar, plus a quarter of its centre's offset from the bar's centre where it is
    above or below."""
    top, bottom, left, right, polarity = box
    vertical = max(top - bar.y1_px - 1, bar.y0_px - bottom, 0)
    horizontal = max(left - bar.x1_px - 1, bar.x0_px - right, 0)
    offset = abs(0.5 * (left + right) - 0.5 * (bar.x0_px + bar.x1_px + 1)) if vertical else 0.0
    return not _bar_colour(bar, polarity), not _centred(bar, box), vertical + horizontal + 0.25 * offset


def _bar_colour(bar: Bar, polarity: str) -> bool:
    """Whether text of a polarity is in the bar's colour: the bar's own, or either for an
    outlined bar, whose label is drawn as it is (light strokes outlined in dark, as Gatan
    draws them), so its outline's ink spells the label too."""
    return polarity == bar.polarity or bar.outlined


#: What each symbol of a label's grammar is, as the glyph classifier's classes (µ and u alike).
_SYMBOLS = {**{d: (d,) for d in "0123456789"}, "n": ("n",), "m": ("m",), "u": ("u", "µ"), "Å": ("Å",),
            "nm": ("nm",), "um": ("um", "µm")}
_UNIT_STEPS = {"nm": "end", "um": "end", "Å": "end", "n": "n", "u": "u", "m": "m"}
_NUMBER_STATES = {"zero", "point", *(f"int{k}" for k in range(1, 5)), *(f"frac{k}" for k in range(1, 4))}


def _next_state(state: str, symbol: str) -> str | None:
    """The label grammar, one symbol at a time: a number (no leading zero but in "0.x", at
    most 4 digits before the point and 3 after) and a unit (nm, µm/um, Å, mm); None where
    ``symbol`` cannot follow."""
    digit = symbol.isdigit()
    if state == "start":
        return ("zero" if symbol == "0" else "int1") if digit else None
    if state == "zero":
        return "point" if symbol == "." else None
    if state.startswith("int") or state.startswith("frac"):
        count = int(state[-1])
        if digit:
            if state.startswith("int") and count < 4:
                return f"int{count + 1}"
            if state.startswith("frac") and count < 3:
                return f"frac{count + 1}"
            return None
        if symbol == ".":
            return "point" if state.startswith("int") else None
        return _UNIT_STEPS.get(symbol)
    if state == "point":
        return "frac1" if digit else None
    if state in ("n", "u", "m"):
        return "end" if symbol == "m" else None
    return None


def _line_readings(text: np.ndarray, line, model, keep: int = 3, *, whole: bool = False) -> list[tuple[float, str, float]]:
    """Every label a line of glyphs can be read as, with its probability, most probable first.

    The line's pieces are joined into glyphs every way :func:`nanoshape.glyphs.spans`
    allows; a reading is a run of whole words (gaps wider than 0.35 line heights; its
    number within one word, as "1 0 um" is a "1.0 um" whose point was lost) from
    the line's first glyph, with no ink just left of it (a number's leading digits spaced
    apart, or too faint to cut, must not be left off; unless the line is known ``whole``:
    :func:`_centred`), whose glyphs spell a label of the grammar (:func:`_next_state`), and its probability the product of its glyphs'
    probabilities of being the symbols it spells (decimal points, found by their shape,
    count 1). A glyph broken at a hairline reads as ``other`` in pieces and whole when
    joined, so the joined reading wins; a glyph that is two touching digits reads as
    ``other`` whole and as its two halves split (:func:`_touching_digits`).

    Returns:
      (probability, text such as ``"0.2um"``, the smallest probability of one of its
      glyphs), one per distinct label, most probable first.
    """
    from nanoshape.glyphs import CLASSES, classify_glyphs, is_point, patches, spans

    points = [is_point(g, line) for g in line]
    runs = spans(line)
    if not runs:
        return []
    probabilities = classify_glyphs(*patches(text, [box for _, _, box in runs]), model)
    index = {c: k for k, c in enumerate(CLASSES)}
    # the moves from each piece: (one past the last piece, {symbols: (probability, weakest)})
    starting: dict[int, list[tuple[int, dict[tuple[str, ...], tuple[float, float]]]]] = {}
    for (i, j, _), p in zip(runs, probabilities):
        symbols = {s: float(sum(p[index[c]] for c in classes)) for s, classes in _SYMBOLS.items()}
        starting.setdefault(i, []).append((j, {(s,): (q, q) for s, q in symbols.items() if q > 1e-4}))
    for i, pair in _touching_digits(text, line, points, model):
        starting.setdefault(i, []).append((i + 1, pair))
    bounds = _words(line)
    if not whole and _stroke_left_of(text, line):
        return []
    best: dict[str, tuple[float, float]] = {}

    def finish(logp: float, spelled: str, weakest: float) -> None:
        if math.exp(logp) > best.get(spelled, (0.0, 0.0))[0]:
            best[spelled] = (math.exp(logp), weakest)

    for start in bounds[:1]:
        # hypotheses at each position: (log probability, grammar state, text, weakest
        # glyph's probability), a few per state
        hypotheses: dict[int, list[tuple[float, str, str, float]]] = {start: [(0.0, "start", "", 1.0)]}
        for position in range(start, len(line)):
            here = hypotheses.get(position, [])
            if position in bounds and position > start:
                for logp, state, spelled, weakest in here:
                    if state == "end":
                        finish(logp, spelled, weakest)
            moves = [(position + 1, {(".",): (1.0, 1.0)})] if points[position] else starting.get(position, [])
            gap = position in bounds and position > start
            for logp, state, spelled, weakest in here:
                for stop, symbols in moves:
                    for sequence, (q, least) in symbols.items():
                        if gap and state in _NUMBER_STATES and (sequence[0].isdigit() or sequence[0] == "."):
                            continue  # a number is one word: a gap in it held a point the cut lost
                        following = state
                        for symbol in sequence:
                            following = _next_state(following, symbol) if following is not None else None
                        if following is not None:
                            hypotheses.setdefault(stop, []).append(
                                (logp + math.log(q), following, spelled + "".join(sequence), min(weakest, least)))
            for stop in {stop for stop, _ in moves}:
                pool = sorted(hypotheses.get(stop, []), reverse=True)
                kept, per_state = [], {}
                for hypothesis in pool:
                    if per_state.get(hypothesis[1], 0) < keep:
                        per_state[hypothesis[1]] = per_state.get(hypothesis[1], 0) + 1
                        kept.append(hypothesis)
                hypotheses[stop] = kept
        for logp, state, spelled, weakest in hypotheses.get(len(line), []):
            if state == "end":
                finish(logp, spelled, weakest)
    return sorted(((p, t, w) for t, (p, w) in best.items()), reverse=True)


#: Ink (0 background .. 1 the label's level) from which a particle hides glyphs drawn on it.
_HIDING_INK = 0.8


def _stroke_left_of(text: np.ndarray, line, *, level: float = 0.5) -> bool:
    """Whether a stroke lies just left of a line's first glyph (within a line height), so
    that a label read from that glyph on may have lost its leading characters.

    A reading starts at the line's first glyph, and not where a stroke lies just left of
    it: "0.5 nm" must not read as "5 nm" where its "0." is set apart or cut off, nor
    "250" as "50". A stroke: a connected blob of ink past ``level`` and past 3 robust
    standard deviations of the background's noise (scattered noise is no blob).
    """
    height = max(g.y1 for g in line) - min(g.y0 for g in line)
    top, bottom, left = min(g.y0 for g in line), max(g.y1 for g in line), line[0].x0
    return _has_stroke(text, text[top:bottom, max(0, left - height) : max(0, left - 1)], height, level)


def _has_stroke(text: np.ndarray, window: np.ndarray, height: int, level: float = 0.5) -> bool:
    """Whether a window of ink holds a stroke for text ``height`` px high: a connected blob
    past ``level`` and past 3 robust standard deviations of the ink's background noise, of
    at least 3 px and 3 % of a glyph's square."""
    from nanoshape.glyphs import background_noise

    if not window.size or window.max() <= level:
        return False  # nothing past level (a word space): no need of the noise's measure
    base, noise = background_noise(text)
    blobs, n = ndi.label(window > max(level, base + 3 * noise))
    return bool(n) and int(np.bincount(blobs.ravel())[1:].max()) >= max(3, 0.03 * height * height)


#: A gap between two glyphs of a line at least this many line heights wide could hold a
#: glyph (a "1" is ~0.3 cap heights wide with its spacing in DejaVu Sans): :func:`_gap_holds_stroke`.
_GLYPH_GAP = 0.25


def _gap_holds_stroke(text: np.ndarray, line, *, level: float = 0.5) -> bool:
    """Whether a gap between two glyphs of a line, wide enough for a glyph, holds ink that
    is not in the line (:func:`_has_stroke`): a glyph joined to a particle is cut out of
    its line, and what is left reads as another label ("1 nm" of "10 nm"), its ends where
    the whole label's were (so :func:`_centred` cannot tell). A word space holds no ink."""
    height = max(g.y1 for g in line) - min(g.y0 for g in line)
    top, bottom = min(g.y0 for g in line), max(g.y1 for g in line)
    for before, after in zip(line, line[1:]):
        if after.x0 - before.x1 >= _GLYPH_GAP * height and \
                _has_stroke(text, text[top:bottom, before.x1 + 1 : after.x0 - 1], height, level):
            return True
    return False


#: How far (in line heights) a label line's centre may lie from its bar's centre and still
#: be whole (:func:`_centred`): what is left of a label that lost its first glyph is off by
#: half that glyph's advance: a digit with its spacing is ~0.87 cap heights wide in DejaVu
#: Sans, so a lost "1" moves the line's centre by ~0.4 cap heights, over 0.3 line heights.
_CENTRED = 0.08


def _centred(bar: Bar, box: tuple[int, int, int, int, str]) -> bool:
    """Whether a line of text (top, bottom, left, right, polarity) above or below a bar is
    centred on it, within :data:`_CENTRED` line heights or 1.5 px.

    Figure software centres a bar's label on the bar. A centred line has lost no glyph at
    either end, to a particle as dark as the text or to the cut: where its first glyphs
    were hidden, what is left of it would lie off to the right. So a stroke just left of a
    centred line (a particle the label was drawn beside) does not make it doubtful
    (:func:`_stroke_left_of`).
    """
    top, bottom, left, right, _ = box
    if not (top > bar.y1_px or bottom <= bar.y0_px):
        return False
    offset = abs(0.5 * (left + right) - 0.5 * (bar.x0_px + bar.x1_px + 1))
    return offset <= max(1.5, _CENTRED * (bottom - top))


def _touching_digits(text: np.ndarray, line, points: list[bool], model):
    """Glyphs that may be two touching digits ("00" at small sizes, a serif "20"): each one
    0.7-1.6 heights wide, split at the column of least ink in its middle third, with the
    two most probable digits of each half as pairs.

    Returns:
      [(index of the glyph in the line, {(digit, digit): (probability, weakest)})].
    """
    from nanoshape.glyphs import CLASSES, Glyph, classify_glyphs, patches

    digits = [k for k, c in enumerate(CLASSES) if c.isdigit()]
    candidates, halves = [], []
    for i, glyph in enumerate(line):
        if points[i] or not 0.7 * glyph.height <= glyph.width <= 1.6 * glyph.height:
            continue
        columns = text[glyph.y0 : glyph.y1, glyph.x0 : glyph.x1].sum(axis=0)
        lo, hi = glyph.width // 3, max(glyph.width // 3 + 1, 2 * glyph.width // 3)
        cut = glyph.x0 + lo + int(np.argmin(columns[lo:hi]))
        pair = []
        for x0, x1 in ((glyph.x0, cut), (cut + 1, glyph.x1)):
            rows = np.flatnonzero(text[glyph.y0 : glyph.y1, x0:x1].max(axis=1) > 0.5) if x1 - x0 >= 2 else []
            if len(rows) == 0:
                break
            pair.append(Glyph(glyph.y0 + int(rows[0]), glyph.y0 + int(rows[-1]) + 1, x0, x1))
        if len(pair) == 2:
            candidates.append(i)
            halves.extend(pair)
    if not candidates:
        return []
    probabilities = classify_glyphs(*patches(text, halves), model)
    out = []
    for n, i in enumerate(candidates):
        first, second = probabilities[2 * n], probabilities[2 * n + 1]
        options = {}
        for a in sorted(digits, key=lambda k: -first[k])[:2]:
            for b in sorted(digits, key=lambda k: -second[k])[:2]:
                q1, q2 = float(first[a]), float(second[b])
                if q1 * q2 > 1e-4:
                    options[(CLASSES[a], CLASSES[b])] = (q1 * q2, min(q1, q2))
        if options:
            out.append((i, options))
    return out


def _words(line) -> list[int]:
    """Indices where a new word starts: a gap wider than 0.35 line heights before a glyph."""
    height = max(g.y1 for g in line) - min(g.y0 for g in line)
    return [0] + [i for i in range(1, len(line)) if line[i].x0 - line[i - 1].x1 > 0.35 * height] + [len(line)]


def _pretty(text: str, unit: str) -> str:
    """``'100nm'`` -> ``'100 nm'``; ``'2um'`` -> ``'2 µm'``."""
    return f"{re.match(r'[0-9.,]+', text).group(0)} {unit}"


def _plausible(readings: list[tuple[float, str, float]], bar: Bar) -> list[tuple[float, str, float]]:
    """A line's readings without the rivals of its most probable one that differ from it in
    the unit alone and could not be the bar's label: "20 mm" beside a 123 px bar (163 µm per
    px, refused by :func:`read_scale_bar` as a misread unit anyway), the n of "20 nm" read as
    an m at 0.63, must not make "20 nm" (0.97) doubtful (:func:`_accept`'s share). A rival
    with other digits stays a doubt, whatever its size ("10 mm" against "100 mm" is a
    doubt about the digits), and so does every rival of a most probable reading that could
    not be the label itself (the line says "mm" as far as the classifier can tell: its
    label is refused with that reason, and no less probable "nm" is taken in its place)."""
    def number_and_nm(reading):
        parsed = parse_label(reading[1])
        number = re.match(r"[0-9.,]+", reading[1])
        return (number.group(0) if number else None), (parsed[0] if parsed is not None else math.inf)

    if not readings:
        return readings
    top_number, top_nm = number_and_nm(readings[0])
    if top_nm / bar.exact_length_px > _LARGEST_NM:
        return readings
    kept = [readings[0]]
    for reading in readings[1:]:
        number, nm = number_and_nm(reading)
        if not (number == top_number and nm / bar.exact_length_px > _LARGEST_NM):
            kept.append(reading)
    return kept


def _accept(readings: list[tuple[float, str, float]], min_confidence: float) -> tuple[str, float, float] | None:
    """The label a line's readings give: the most probable, where each of its glyphs is the
    symbol it spells with probability at least ``min_confidence``, and so is its share of
    all the line's readings (two readings of one line that are both probable, from two ways
    of joining its pieces, are a doubt).

    Returns:
      (label as ``"100 nm"``, nm, confidence: the smaller of weakest glyph and share) or None.
    """
    if not readings:
        return None
    probability, spelled, weakest = readings[0]
    confidence = min(weakest, probability / sum(r[0] for r in readings))
    parsed = parse_label(spelled)
    if confidence < min_confidence or parsed is None:
        return None
    return _pretty(spelled, parsed[1]), parsed[0], confidence


#: A label drawn from the fonts (:func:`nanoshape.labelsynth.match_line`) is taken where
#: its correlation with the line is at least _SYNTHESIS_SCORE and every label naming another
#: length correlates at least _SYNTHESIS_MARGIN less; or where it names the length of the
#: glyph classifier's most probable reading (too unsure to be taken alone) and correlates
#: at least _CONFIRMED_SCORE. Chosen on rendered seed 1 and the hand table's dev half
#: (experiments/scale_bars/synthesis_lines.py): no wrong label there at these values.
_SYNTHESIS_SCORE = 0.8
_SYNTHESIS_MARGIN = 0.05
_CONFIRMED_SCORE = 0.7


def _synthesised(text: np.ndarray, line, readings: list[tuple[float, str, float]], *,
                 whole: bool = False) -> tuple[str, float, float] | None:
    """The label analysis by synthesis reads on a line the glyph classifier does not read
    with confidence (:func:`nanoshape.labelsynth.match_line`), where it is sure of it alone
    or the classifier's most probable reading names the same length.

    Returns:
      (label as ``"100 nm"``, nm, confidence: the label's correlation with the line) or None.
    """
    from nanoshape.labelsynth import match_line

    if not whole and _stroke_left_of(text, line):
        return None
    numbers = tuple(dict.fromkeys(m.group(0) for m in (re.match(r"[0-9.]+", r[1]) for r in readings[:3]) if m))
    found = match_line(text, line, extra_numbers=numbers)
    if found is None:
        return None
    parsed = parse_label(found.label)
    top = parse_label(readings[0][1]) if readings else None
    confirmed = top is not None and abs(top[0] / found.value_nm - 1) < 1e-9 and found.score >= _CONFIRMED_SCORE
    if not (confirmed or (found.score >= _SYNTHESIS_SCORE and found.margin >= _SYNTHESIS_MARGIN)):
        return None
    return _pretty(found.label, parsed[1]), parsed[0], found.score


#: A line the glyph classifier and synthesis leave unread is taken from the line reader
#: (:mod:`nanoshape.linereader`) where every symbol it emits has a probability of at least
#: this in its columns, and the text is one number and one unit.
_LINE_READER_CONFIDENCE = 0.95


def _line_read(text: np.ndarray, line, *, whole: bool = False) -> tuple[str, float, float] | None:
    """The label the line reader reads on a whole line (:func:`nanoshape.linereader.read_strips`),
    where it is sure of every symbol and the text is a label; not where a stroke just left of
    the line may have taken its first glyphs, unless the line is known ``whole`` (:func:`_centred`).

    Returns:
      (label as ``"100 nm"``, nm, confidence: the weakest symbol's probability) or None.
    """
    from nanoshape.linereader import line_strip, read_strips

    if not whole and _stroke_left_of(text, line):
        return None
    strip, columns = line_strip(text, line)
    spelled, confidence = read_strips(strip[None], columns)[0]
    parsed = parse_label(spelled)
    if confidence < _LINE_READER_CONFIDENCE or parsed is None:
        return None
    return _pretty(spelled, parsed[1]), parsed[0], confidence


def read_label(image: np.ndarray, bar: Bar, *, min_confidence: float = 0.9, model=None, synthesis: bool = True,
               line_reader: bool = True) -> tuple[str, float, float] | None:
    """Read the label beside a bar with the glyph classifier and the label grammar.

    The lines of text above, below, or on the bar's rows to either side, in the bar's
    colour (a label is drawn in it), are read nearest first; the first whose most probable
    reading as a label (:func:`_line_readings`) has every glyph, and a share of the line's
    readings, of at least ``min_confidence`` gives the label (:func:`_accept`), or else
    whose label analysis by synthesis reads with confidence (:func:`_synthesised`). Each ink
    (as it is, strokes only: :func:`_label_lines`) gives at most one label; where two
    name different lengths, none is taken. A line with a blob of nearly the text's own
    level just left of it in the grey values (:func:`_stroke_left_of` at _HIDING_INK) is
    passed over in every ink: where strokes-only ink dropped a particle as dark (light) as
    the text, it dropped the glyphs drawn over it too, and what is left of the label reads
    as another ("5 nm" of "2.5 nm"); glyphs over a paler particle stay in strokes-only ink.
    A line centred on the bar has lost nothing (:func:`_centred`) and is never passed over.
    A line neither reads is read whole by the line reader (:func:`_line_read`), which needs
    no cutting into glyphs. Where all of them read nothing, the same is done once more on
    one ink of text in the bar's colour scaled to the region's own extreme, not to the
    bar's grey value (:func:`_label_lines` ``own_level``): a label in thin antialiased
    strokes is fainter than its bar. ``synthesis=False`` and ``line_reader=False`` leave those
    readers out (to measure what each adds).

    Returns:
      (label as ``"100 nm"``, its length in nm, its confidence, the line's box (top,
      bottom, left, right in px, text polarity)), or None.
    """
    found: list = []
    for own_level in (False, True):
        # own_level: a label drawn in thinner strokes than its bar, antialiased, never reaches
        # the bar's grey value and stays under the cut's threshold; read at the text's own
        # level where nothing else read a label
        unread: list = []
        _read_inks(_label_lines(image, bar, own_level=own_level), bar, found, unread, min_confidence, model, synthesis)
        # the line reader only where neither read a line of any ink: it adds readings, never changes one
        for text, lines in unread if line_reader and not found else []:
            for line, box in lines:
                accepted = _line_read(text, line, whole=_centred(bar, box))
                if accepted is not None:
                    found.append((*accepted, box))
                    break
        if found:
            break
    if not found or len({round(f[1], 9) for f in found}) > 1:
        return None
    return max(found, key=lambda f: f[2])


def _read_inks(inks, bar: Bar, found: list, unread: list, min_confidence: float, model, synthesis: bool) -> None:
    """Read each ink's lines beside a bar with the glyph classifier and synthesis (see
    :func:`read_label`): append to ``found`` at most one label per ink, (label, nm,
    confidence, box), and to ``unread`` each ink that gave none, (ink, lines seen)."""
    for index, (text, candidates) in enumerate(inks):
        plain = inks[index - index % 2][0]  # the grey values as ink, for strokes-only ink too
        # a label's lines, nearest first: in the bar's colour, none with its first glyphs
        # possibly lost on a particle as dark as they ("5 nm" of "2.5 nm")
        lines = ((line, box) for _, line, box in itertools.takewhile(lambda c: _bar_colour(bar, c[2][4]), candidates)
                 if _centred(bar, box) or not _stroke_left_of(plain, line, level=_HIDING_INK))
        seen = []
        for line, box in lines:
            seen.append((line, box))
            if _gap_holds_stroke(text, line):
                continue  # a glyph of it was cut out: for the line reader only, which reads the whole strip
            whole = _centred(bar, box)
            readings = _plausible(_line_readings(text, line, model, whole=whole), bar)
            accepted = _accept(readings, min_confidence) or (
                _synthesised(text, line, readings, whole=whole) if synthesis else None)
            if accepted is not None:
                found.append((*accepted, box))
                break
        else:
            unread.append((text, seen))


def explain_label(image: np.ndarray, bar: Bar, *, min_confidence: float = 0.9, model=None) -> list[dict[str, Any]]:
    """What the reader sees beside a bar, line by line (for diagnosis).

    Returns:
      Per candidate line, nearest first: ``text`` (its most probable reading as a label,
      ``?`` where it has none), ``confidence`` (that reading's weakest glyph's probability), ``second``
      (the next reading and its probability), ``glyphs`` (pieces cut) and ``accepted``
      (what :func:`read_label` takes from it, or None).
    """
    out = []
    inks = _label_lines(image, bar) + _label_lines(image, bar, own_level=True)
    for index, (text, candidates) in enumerate(inks):
        plain = inks[index - index % 2][0]
        for _, line, box in candidates:
            whole = _centred(bar, box)
            readings = _plausible(_line_readings(text, line, model, whole=whole), bar)
            out.append({"text": readings[0][1] if readings else "?", "confidence": readings[0][2] if readings else 0.0,
                        "second": f"{readings[1][1]} {readings[1][0]:.2f}" if len(readings) > 1 else "",
                        "readings": readings[:6], "glyphs": len(line), "centred": whole,
                        "accepted": None if not whole and _stroke_left_of(plain, line, level=_HIDING_INK) else
                        _line_read(text, line, whole=whole) if _gap_holds_stroke(text, line) else
                        (_accept(readings, min_confidence) or _synthesised(text, line, readings, whole=whole)
                         or _line_read(text, line, whole=whole))})
    return out


def read_scale_bar(image: np.ndarray, *, label: str = "", min_confidence: float = 0.9, model=None,
                   reader=None) -> ScaleBarReading:
    """The pixel size a micrograph's burned-in scale bar gives, or why it gives none.

    Every bar :func:`find_bars` finds is tried with its label (:func:`read_label`); a line
    of text is the label of the bar beside it that it pairs with best
    (:func:`_pairing`), and gives none to another, and one line read the same
    beside two bars is the label of the one it pairs with best. A bar running into the
    image's left or right edge may be cut and is not used unless its label shows it whole
    (:func:`_whole_at_edge`), nor one within the line of text read as
    its label (a stroke of it), nor a reading whose pixel size is over 100 µm per px (a
    misread unit). Two bars whose labels give pixel sizes more than 2 % apart:
    no answer.

    Args:
      image: (H, W) grey values.
      label: the label, given by the user (the bar's length is still measured); empty reads it.
      min_confidence: lowest glyph probability accepted.
      model: the glyph classifier (the shipped one by default).
      reader: ``reader(image, bar, min_confidence) -> (label, nm, confidence[, line box]) | None``
        to read labels another way (an OCR engine, for comparison); default :func:`read_label`.

    Returns:
      A :class:`ScaleBarReading` (``pixel_size_nm`` None with a ``reason`` where it abstains).
    """
    image = np.asarray(image, dtype=np.float32)
    bars = find_bars(image)
    if not bars:
        return ScaleBarReading(None, reason="no scale bar found")
    width = image.shape[1]
    given = parse_label(label) if label else None
    if label and given is None:
        raise ValueError(f"scale bar label {label!r} is not a number and a length unit (e.g. '100nm', '0.5 µm')")
    if reader is None:
        reader = lambda image, bar, min_confidence: read_label(image, bar, min_confidence=min_confidence, model=model)
    found: list[ScaleBarReading] = []
    reasons: list[str] = []
    if given is not None:
        # the user's label belongs to the longest bar with text beside it (else the longest bar)
        labelled = [bar for bar in bars if any(candidates for _, candidates in _label_lines(image, bar))]
        bar = max(labelled or bars, key=lambda b: b.length_px)
        reading = _reading(_pretty(label.strip(), given[1]), given[0], bar, 1.0, width, reasons)
        return reading if reading.pixel_size_nm is not None else dataclasses.replace(reading, reason=reasons[-1])
    whole = set()  # bars that run into the image edge but are whole: their labels say so
    for bar in bars:
        cut = f"the {bar.length_px} px bar runs into the image edge and may be cut"
        if bar.x0_px <= 0 and bar.x1_px >= width - 1:
            reasons.append(cut)
            continue
        read = reader(image, bar, min_confidence)
        box = read[3] if read is not None and len(read) > 3 else None
        if _touches_edge(bar, width):
            if box is None or not _whole_at_edge(bar, box, width):
                reasons.append(cut)
                continue
            whole.add(id(bar))
        if read is None:
            reasons.append(f"no label read with confidence beside the {bar.length_px} px bar")
            continue
        if box is not None and box[0] <= bar.y1_px and bar.y0_px < box[1] and box[2] <= bar.x1_px and bar.x0_px < box[3]:
            # a "bar" among the label's own glyphs is a stroke of them (the foot of a 2)
            reasons.append(f"the {bar.length_px} px bar lies within the line of its label: a stroke of the text")
            continue
        reading = _reading(read[0], read[1], bar, read[2], width, reasons, whole=id(bar) in whole)
        if reading.pixel_size_nm is not None and reading.pixel_size_nm > _LARGEST_NM:
            # no microscope that images nanocrystals gives such a pixel: a misread unit ("nm" as "mm")
            reasons.append(f"{reading.source} gives {reading.pixel_size_nm:.3g} nm per px, more than {_LARGEST_NM:g}")
            continue
        if reading.pixel_size_nm is not None:
            found.append((reading, box))
    # one line of text is one bar's label: the bar beside it that it pairs with best
    # (nearest, centred on it), whether or not the label was read beside that bar too
    kept = []
    for reading, box in found:
        if box is not None:
            rivals = [b for b in bars if (not _touches_edge(b, width) or id(b) in whole) and is_beside(b, *box[:4])
                      and not (box[0] <= b.y1_px and b.y0_px < box[1] and box[2] <= b.x1_px and b.x0_px < box[3])]
            paired = min(rivals, key=lambda b: _pairing(b, box)) if rivals else reading.bar
            if paired is not reading.bar:
                reasons.append(f'"{reading.label}" was read beside the {reading.bar.length_px} px bar, but it is '
                               f"nearer the {paired.length_px} px bar's place for a label")
                continue
        kept.append((reading, box))
    # ... and so is one line read the same beside two bars in two inks, its box a pixel or
    # two apart: the bar it pairs with best keeps it (read as two labels, it stays a doubt)
    found = [reading for reading, box in kept
             if box is None or not any(other is not None and rival.value_nm == reading.value_nm and _same_line(box, other)
                                       and _pairing(rival.bar, other) < _pairing(reading.bar, box)
                                       for rival, other in kept if rival is not reading)]
    if not found:
        return ScaleBarReading(None, bar=bars[0], reason="; ".join(dict.fromkeys(reasons)) or "no bar with a label")
    sizes = np.array([r.pixel_size_nm for r in found])
    if sizes.max() / sizes.min() > 1.02:
        described = ", ".join(r.source for r in found)
        return ScaleBarReading(None, bar=found[0].bar, reason=f"scale bars disagree: {described}")
    return found[0]


def _same_line(a: tuple, b: tuple) -> bool:
    """Whether two line boxes (top, bottom, left, right, ...) are one line of text: they
    share at least half the smaller one's area."""
    rows = min(a[1], b[1]) - max(a[0], b[0])
    columns = min(a[3], b[3]) - max(a[2], b[2])
    smaller = min((a[1] - a[0]) * (a[3] - a[2]), (b[1] - b[0]) * (b[3] - b[2]))
    return rows > 0 and columns > 0 and rows * columns >= 0.5 * smaller


#: A bar that runs into the image's left or right edge is taken as whole where its label
#: is centred on it (:func:`_centred`), lies off the edge, and says the edge cut at most
#: this share of the bar, give or take :data:`_LABEL_CENTRE_PX` (:func:`_whole_at_edge`).
_EDGE_CUT = 0.02
#: How far a label's measured centre may lie from where it was drawn: on 258 labels read
#: on rendered seeds 1 and 2, |label centre - bar centre| was <= 1 px for 90 % of the
#: centred ones and <= 2.5 px for all.
_LABEL_CENTRE_PX = 1.0


def _whole_at_edge(bar: Bar, box: tuple[int, int, int, int, str], width: int) -> bool:
    """Whether a bar that runs into the image's left or right edge is whole, from where its
    label's line (top, bottom, left, right, polarity) lies.

    Figure software centres a label on its bar; where the image's edge cuts c px off the
    bar, the bar's visible centre moves c / 2 away from that edge and the label's does not.
    So twice the label's shift towards the edge, measured to :data:`_LABEL_CENTRE_PX`,
    bounds the cut: the bar is taken where that bound is within :data:`_EDGE_CUT` of its
    length: a 138 px bar whose label lies at most 0.38 px towards the edge from its centre
    (or any distance towards the other side); a 100 px bar, one whose label lies no
    distance towards the edge; a shorter bar, only one whose label lies off towards the
    other side."""
    top, bottom, left, right, _ = box
    if not _centred(bar, box) or left <= 0 or right >= width:
        return False
    shift = 0.5 * (left + right) - 0.5 * (bar.x0_px + bar.x1_px + 1)
    towards = shift if bar.x1_px >= width - 1 else -shift
    return 2 * (towards + _LABEL_CENTRE_PX) <= _EDGE_CUT * bar.exact_length_px


def _reading(text: str, value_nm: float, bar: Bar, confidence: float, width: int, reasons: list[str], *,
             whole: bool = False) -> ScaleBarReading:
    source = f'scale bar: "{text}" = {bar.length_px} px'
    if _touches_edge(bar, width) and not whole:
        reasons.append(f"{source}, but the bar runs into the image edge and may be cut")
        return ScaleBarReading(None, label=text, value_nm=value_nm, bar=bar, confidence=confidence)
    size = value_nm / bar.exact_length_px
    return ScaleBarReading(size, label=text, value_nm=value_nm, bar=bar, confidence=confidence, source=source)


# ----------------------------------------------------------------------------- calibration


def calibrate(micrograph, options: ScaleBarOptions = ScaleBarOptions(), *, label: str = "", model=None):
    """A micrograph with its pixel size decided between the override, the metadata and the bar.

    The order is: ``pixel_size_nm`` given by the user (the bar is not read); else the
    file's metadata, checked against the bar where one is read (a disagreement over
    ``options.tolerance`` is a warning naming both and the one used, ``options.prefer``);
    else the bar; else none (sizes stay in px) with the reason in the warnings.

    Args:
      micrograph: from :func:`nanoshape.io.read_micrograph`.
      options: see :class:`ScaleBarOptions`.
      label: this micrograph's bar label given by the user; empty reads it.
      model: the glyph classifier (the shipped one by default).

    Returns:
      The micrograph with ``pixel_size_nm`` set and ``meta`` telling ``pixel_size_source``
      (``'metadata: ImageJ'``, ``'scale bar: "100 nm" = 212 px'``, ``'pixel_size_nm
      override'``) and ``scale_bar`` (label, bar length and position, pixel size,
      confidence, or the reason none was taken).
    """
    meta = dict(micrograph.meta)
    warnings = list(meta.get("warnings", []))
    source = meta.get("pixel_size_source")
    if not options.read or source == "pixel_size_nm override":
        return micrograph
    reading = read_scale_bar(micrograph.pixels, label=label, min_confidence=options.min_confidence, model=model)
    meta["scale_bar"] = _reading_meta(reading, given=bool(label))
    size = micrograph.pixel_size_nm
    if reading.pixel_size_nm is None:
        if size is None:
            warnings.append(f"no pixel size: the file has no calibration and the scale bar gives none ({reading.reason}); "
                            f"sizes are in px (scale_bar=<label> gives the label)")
    elif size is None:
        size, source = reading.pixel_size_nm, reading.source
    else:
        difference = reading.pixel_size_nm / size - 1
        if abs(difference) > options.tolerance:
            use_bar = options.prefer == "scale_bar"
            warnings.append(
                f"the scale bar ({reading.source}: {reading.pixel_size_nm:.5g} nm/px) and the {source} "
                f"({size:.5g} nm/px) disagree by {difference:+.1%}; used the "
                + (f"scale bar (calibration.prefer=scale_bar)" if use_bar else "metadata (calibration.prefer=scale_bar uses the bar)"))
            if use_bar:
                size, source = reading.pixel_size_nm, reading.source
    meta["pixel_size_nm"] = size
    meta["pixel_size_source"] = source
    meta["warnings"] = warnings
    return dataclasses.replace(micrograph, pixel_size_nm=size, meta=meta)


def _reading_meta(reading: ScaleBarReading, *, given: bool) -> dict[str, Any]:
    bar = reading.bar
    return {
        "pixel_size_nm": reading.pixel_size_nm,
        "label": reading.label,
        "label_given": given,
        "value_nm": reading.value_nm,
        "bar_length_px": bar.length_px if bar else None,
        "bar_box_px": [bar.x0_px, bar.y0_px, bar.x1_px, bar.y1_px] if bar else None,
        "confidence": round(reading.confidence, 4),
        "source": reading.source,
        "reason": reading.reason,
    }


def evaluate_readings(table, root: str | os.PathLike, *, read=None):
    """Score the reader against hand measurements.

    Args:
      table: a DataFrame with ``file`` (relative to ``root``), ``bar_length_px`` (empty
        where not measurable), ``label`` and ``label_readable`` (yes/no), as
        ``experiments/scale_bars/hand_measured.csv``.
      root: the folder the files are relative to.
      read: ``read(path) -> ScaleBarReading`` (default: read the file, then
        :func:`read_scale_bar`).

    Returns:
      The table with ``hand_pixel_size_nm``, ``read_pixel_size_nm``, ``read_label``,
      ``relative_error``, ``reason`` and ``outcome``: ``within 2 %``, ``wrong`` (off by more
      than 2 %, or an answer where a person reads none), ``abstained``, or ``answered
      (bar not measurable by hand)``.
    """
    from nanoshape.io import read_micrograph

    if read is None:
        read = lambda path: read_scale_bar(read_micrograph(path).pixels)
    rows = []
    for record in table.to_dict("records"):
        reading = read(Path(root) / record["file"])
        label = record.get("label")
        label = label if isinstance(label, str) else ""
        parsed = parse_label(label) if label else None
        length = record.get("bar_length_px")
        hand = parsed[0] / float(length) if parsed and length == length and length else None
        error = reading.pixel_size_nm / hand - 1 if (hand and reading.pixel_size_nm) else None
        if reading.pixel_size_nm is None:
            outcome = "abstained"
        elif hand is None:
            outcome = "wrong" if record.get("label_readable") == "no" else "answered (bar not measurable by hand)"
        else:
            outcome = "within 2 %" if abs(error) <= 0.02 else "wrong"
        rows.append({**record, "hand_pixel_size_nm": hand, "read_pixel_size_nm": reading.pixel_size_nm,
                     "read_label": reading.label, "read_bar_length_px": reading.bar.length_px if reading.bar else None,
                     "relative_error": error, "reason": reading.reason, "outcome": outcome})
    import pandas as pd

    return pd.DataFrame(rows)
