"""Read a micrograph's burned-in scale bar: the bar's length in px, its label, the pixel size.

Published micrographs are mostly exports without calibration that carry a drawn bar and a
label ("100 nm", "0.5 µm", "500nm"). :func:`find_bars` finds the bars (uniform, axis-aligned
horizontal rectangles set off from what is above and below them, hollow or outlined ones
included), :func:`read_scale_bar` reads the label beside a bar with the glyph classifier of
:mod:`nanoshape.glyphs` and returns the pixel size with its confidence, or the reason it
abstains; :func:`calibrate` decides a micrograph's pixel size from the override, the
file's metadata and the bar, and records where it came from and every disagreement.

The bar is measured end to end, from the first to the last pixel past half-way between the
background and the bar, outline included; the label must be read with every glyph above
the classifier's confidence floor and parse as a number and a length unit, else the
micrograph stays in px and the reason is recorded.
"""

from __future__ import annotations

import csv
import dataclasses
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
        probability, else the label is not trusted.
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

    @property
    def length_px(self) -> int:
        """The bar's length end to end in px."""
        return self.x1_px - self.x0_px + 1

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
      confidence: the lowest glyph probability of the label (1.0 for a label given by the user).
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
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: scale bar label file not found")
    labels: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"file", "scale_bar"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: needs the columns file,scale_bar (has {reader.fieldnames})")
        for row_number, row in enumerate(reader, start=2):
            label = (row["scale_bar"] or "").strip()
            if not label:
                continue
            if parse_label(label) is None:
                raise ValueError(f"{path}, row {row_number}: scale_bar {label!r} is not a number and a length unit")
            labels[Path(row["file"].strip()).stem] = label
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
      True for a bar-shaped component (shared by :func:`nanoshape.segment.find_overlays`).
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


def _box_margin(mask: np.ndarray, first: int, x0: int, x1: int, rows: int = 6) -> bool:
    """Whether a run is the margin of a filled box: the mask goes on up both of its ends."""
    if first < rows:
        return False
    left = mask[first - rows : first, x0 : x0 + 3].mean()
    right = mask[first - rows : first, max(x0, x1 - 2) : x1 + 1].mean()
    return bool(left >= 0.8 and right >= 0.8)


def _coverage(mask: np.ndarray, row: int, x0: int, x1: int) -> float:
    if row < 0 or row >= mask.shape[0]:
        return 0.0
    return float(mask[row, x0 : x1 + 1].mean())


def _half_level_ends(line: np.ndarray, start: int, stop: int, bar_value: float, background: float) -> tuple[int, int]:
    """First and last index of the run past half-way from ``background`` to ``bar_value``
    that holds the middle of [start, stop]."""
    half = 0.5 * (bar_value + background)
    inside = line < half if bar_value < background else line > half
    middle = (start + stop) // 2
    if not inside[middle]:
        return start, stop
    left = middle
    while left > 0 and inside[left - 1]:
        left -= 1
    right = middle
    while right < line.size - 1 and inside[right + 1]:
        right += 1
    return left, right


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

    Each polarity is thresholded at 6, 20 and 40 % of the grey range from its extreme; runs
    of bar-coloured pixels at least 2.5 % of the width long (12 px at least) are chained
    over consecutive rows whose ends agree within 1 px; a chain is a bar when it is at
    least 2x as long as thick, the rows just above and below it cover under 75 % of its
    span (so a particle's widest rows are not) and the colour does not go on up both its
    ends (so a label box's margin is not). The ends are read on the profile averaged over
    the bar's inner rows, half-way between the bar and the background 6-10 px beside it;
    an outline of opposite contrast closing around both ends is part of the bar; a bar
    within 25 % of the grey range of its background needs such an outline or must be
    drawn (uniform, at the image's extreme grey value); two thin
    parallel lines closed at the ends (a hollow bar) become one bar, and one bar found at
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
    for polarity, fraction in [(p, f) for p in ("dark", "light") for f in _THRESHOLDS]:
        mask = image <= lo + fraction * (hi - lo) if polarity == "dark" else image >= hi - fraction * (hi - lo)
        rows, starts, ends = _row_runs(mask, min_length)
        if rows.size == 0 or rows.size > 200_000:
            continue
        for first, last, chain in _chains(rows, starts, ends):
            x0 = int(np.median(starts[chain]))
            x1 = int(np.median(ends[chain]))
            length, thickness = x1 - x0 + 1, last - first + 1
            if length < 2 * thickness or (thickness == 1 and length < 20):
                continue
            above = min(_coverage(mask, first - k, x0, x1) for k in (1, 2))
            below = min(_coverage(mask, last + k, x0, x1) for k in (1, 2))
            if max(above, below) >= 0.75 or _box_margin(mask, first, x0, x1):
                continue
            bar = _measure(image, polarity, first, last, x0, x1)
            if bar is not None:
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
    # one profile averaged over the bar's inner rows: noise averages out, ends stay sharp
    line = image[list(rows)].mean(axis=0)
    left, right = _half_level_ends(line, x0, x1, bar_value, background)
    reach_left = _outline_reach(line, left, -1, bar_value, background)
    reach_right = _outline_reach(line, right, 1, bar_value, background)
    outlined = bool(reach_left and reach_right)
    grey_range = float(image.max()) - float(image.min())
    contrast = abs(bar_value - background)
    extreme = float(image.min()) if bar_value < background else float(image.max())
    inner = image[list(rows), left : right + 1]
    drawn = abs(bar_value - extreme) <= 0.06 * grey_range and float(inner.std()) <= 0.25 * contrast
    if outlined:  # an outline closes around the bar: it is part of it
        left, right = left - reach_left, right + reach_right
    elif contrast < 0.25 * grey_range and not drawn:
        return None  # faint and not a uniform, saturated drawing: texture, not a bar
    return Bar(int(left), int(right), first, last, polarity, bar_value, background, outlined=outlined)


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


def _label_lines(image: np.ndarray, bar: Bar):
    """The lines of text beside a bar, per text polarity: (ink, lines, region origin)."""
    from nanoshape.glyphs import cut_glyphs, ink

    y0, x0, region = label_region(image, bar)
    out = []
    for polarity in ("dark", "light"):
        text = ink(region, polarity)
        # the bar and 3 px around it (outline, blur) are not text: text sitting on the bar
        # would otherwise join its glyphs through the bar's edge
        text[max(0, bar.y0_px - y0 - 3) : bar.y1_px - y0 + 4, max(0, bar.x0_px - x0 - 3) : bar.x1_px - x0 + 4] = 0
        lines = []
        for line in cut_glyphs(text):
            if not 2 <= len(line) <= 12:  # a label is a number and a unit: no lone blob, no texture
                continue
            top, bottom = min(g.y0 for g in line) + y0, max(g.y1 for g in line) + y0
            left, right = line[0].x0 + x0, line[-1].x1 + x0
            if is_beside(bar, top, bottom, left, right):
                distance = max(top - bar.y1_px - 1, bar.y0_px - bottom, 0) + max(left - bar.x1_px - 1, bar.x0_px - right, 0)
                lines.append((distance, line))
        out.append((text, sorted(lines, key=lambda item: item[0])))
    return out


def _read_line(text: np.ndarray, line, model) -> tuple[list[tuple[str, float]], list]:
    """(glyph text, probability) of each glyph of a line (a decimal point has probability 1),
    and the line's glyphs, where a glyph read as ``other`` that is two touching digits
    ("00" at small sizes) is split at its narrowest column when both halves read as digits."""
    from nanoshape.glyphs import CLASSES, classify_glyphs, is_point, patches

    points = [is_point(g, line) for g in line]
    others = [g for g, point in zip(line, points) if not point]
    probabilities = iter(classify_glyphs(*patches(text, others), model))
    tokens, glyphs = [], []
    for glyph, point in zip(line, points):
        if point:
            tokens.append((".", 1.0))
            glyphs.append(glyph)
            continue
        p = next(probabilities)
        token = (CLASSES[int(p.argmax())], float(p.max()))
        halves = _split_pair(text, glyph, model) if token[0] == "other" else None
        if halves is not None:
            tokens.extend(halves[0])
            glyphs.extend(halves[1])
        else:
            tokens.append(token)
            glyphs.append(glyph)
    return tokens, glyphs


def _split_pair(text: np.ndarray, glyph, model):
    """Two digits touching in one glyph, split at the column of least ink in its middle
    third; None unless the glyph is 0.7-1.6 heights wide and both halves read as digits."""
    from nanoshape.glyphs import CLASSES, Glyph, classify_glyphs, patches

    if not 0.7 * glyph.height <= glyph.width <= 1.6 * glyph.height:
        return None
    columns = text[glyph.y0 : glyph.y1, glyph.x0 : glyph.x1].sum(axis=0)
    lo, hi = glyph.width // 3, max(glyph.width // 3 + 1, 2 * glyph.width // 3)
    cut = glyph.x0 + lo + int(np.argmin(columns[lo:hi]))
    halves = []
    for x0, x1 in ((glyph.x0, cut), (cut + 1, glyph.x1)):
        if x1 - x0 < 2:
            return None
        rows = np.flatnonzero(text[glyph.y0 : glyph.y1, x0:x1].max(axis=1) > 0.5)
        if rows.size == 0:
            return None
        halves.append(Glyph(glyph.y0 + int(rows[0]), glyph.y0 + int(rows[-1]) + 1, x0, x1))
    p = classify_glyphs(*patches(text, halves), model)
    tokens = [(CLASSES[int(q.argmax())], float(q.max())) for q in p]
    if not all(t.isdigit() for t, _ in tokens):
        return None
    return tokens, halves


def _words(line) -> list[int]:
    """Indices where a new word starts: a gap wider than 0.35 line heights before a glyph."""
    height = max(g.y1 for g in line) - min(g.y0 for g in line)
    return [0] + [i for i in range(1, len(line)) if line[i].x0 - line[i - 1].x1 > 0.35 * height] + [len(line)]


def _parse_tokens(tokens: list[tuple[str, float]], line, min_confidence: float) -> tuple[str, float, float] | None:
    """The longest run of whole words of confident glyphs that reads as a label:
    (text, nm, lowest probability). Words are never cut, so a misread or unsure glyph
    of the number ("0.2") cannot leave a wrong number ("2") behind."""
    best = None
    bounds = _words(line)
    for i, start in enumerate(bounds[:-1]):
        for stop in bounds[i + 1 :]:
            window = tokens[start:stop]
            if min(p for _, p in window) < min_confidence:
                continue
            text = "".join(t for t, _ in window)
            parsed = parse_label(text)
            if parsed is not None and (best is None or len(window) > best[3]):
                best = (_pretty(text, parsed[1]), parsed[0], min(p for _, p in window), len(window))
    return None if best is None else best[:3]


def _pretty(text: str, unit: str) -> str:
    """``'100nm'`` -> ``'100 nm'``; ``'2um'`` -> ``'2 µm'``."""
    return f"{re.match(r'[0-9.,]+', text).group(0)} {unit}"


def read_label(image: np.ndarray, bar: Bar, *, min_confidence: float = 0.9, model=None) -> tuple[str, float, float] | None:
    """Read the label beside a bar with the glyph classifier.

    The lines of text above, below, or on the bar's rows to either side (dark and light
    text) are read nearest first; the first with a run of glyphs, every one classified with
    at least ``min_confidence``, that parses as a number and a length unit is the label.

    Returns:
      (label as ``"100 nm"``, its length in nm, the lowest glyph probability), or None.
    """
    best = None
    for text, candidates in _label_lines(image, bar):
        for _, line in candidates:
            parsed = _parse_tokens(*_read_line(text, line, model), min_confidence)
            if parsed is not None:
                if best is None or parsed[2] > best[2]:
                    best = parsed
                break
    return best


def read_scale_bar(image: np.ndarray, *, label: str = "", min_confidence: float = 0.9, model=None,
                   reader=None) -> ScaleBarReading:
    """The pixel size a micrograph's burned-in scale bar gives, or why it gives none.

    Every bar :func:`find_bars` finds is tried with its label (:func:`read_label`). A bar
    running into the image's left or right edge may be cut and is not used. Two bars whose
    labels give pixel sizes more than 2 % apart: no answer.

    Args:
      image: (H, W) grey values.
      label: the label, given by the user (the bar's length is still measured); empty reads it.
      min_confidence: lowest glyph probability accepted.
      model: the glyph classifier (the shipped one by default).
      reader: ``reader(image, bar, min_confidence) -> (label, nm, confidence) | None`` to
        read labels another way (an OCR engine, for comparison); default :func:`read_label`.

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
    for bar in bars:
        if _touches_edge(bar, width):
            reasons.append(f"the {bar.length_px} px bar runs into the image edge and may be cut")
            continue
        read = reader(image, bar, min_confidence)
        if read is None:
            reasons.append(f"no label read with confidence beside the {bar.length_px} px bar")
            continue
        found.append(_reading(read[0], read[1], bar, read[2], width, reasons))
    found = [r for r in found if r.pixel_size_nm is not None]
    if not found:
        return ScaleBarReading(None, bar=bars[0], reason="; ".join(dict.fromkeys(reasons)) or "no bar with a label")
    sizes = np.array([r.pixel_size_nm for r in found])
    if sizes.max() / sizes.min() > 1.02:
        described = ", ".join(r.source for r in found)
        return ScaleBarReading(None, bar=found[0].bar, reason=f"scale bars disagree: {described}")
    return found[0]


def _reading(text: str, value_nm: float, bar: Bar, confidence: float, width: int, reasons: list[str]) -> ScaleBarReading:
    source = f'scale bar: "{text}" = {bar.length_px} px'
    if _touches_edge(bar, width):
        reasons.append(f"{source}, but the bar runs into the image edge and may be cut")
        return ScaleBarReading(None, label=text, value_nm=value_nm, bar=bar, confidence=confidence)
    size = value_nm / bar.length_px
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
