"""Read a scale-bar label by analysis by synthesis: render every label it may be, keep the one that looks like it.

A scale-bar label is a number and a length unit, and the numbers figures use are few (1, 2,
5, 10, 20, 50, 100, 200, 500, 0.5, 2.5 ...). Each number and each unit is rendered in the
fonts matplotlib ships (:data:`nanoshape.glyphs.FONTS`: the same on every machine, so a
reading never depends on the fonts the user has installed), cropped to its ink and scaled
to the height and width of the part of the observed line it is compared with; the observed line is split between its number and
its unit at every gap between its pieces, so the space a figure leaves between them does not
matter. A label's score is the normalised correlation of its number and its unit with the
two parts (each weighted by its width), in one font, at the best split; the reading is the
best label where its score is high and every label naming another length scores clearly
less (the margin is the confidence).

Nothing is learned and nothing is downloaded: the templates are drawn from the font files
once per process (:func:`templates`, under a second).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["NUMBERS", "UNITS", "SynthesisReading", "match_line", "templates"]

#: The numbers a label is matched against: 1-9 times a power of ten (0.1 to 9000) and the
#: halves and quarters figures use.
NUMBERS = tuple(
    [f"0.{m}" for m in range(1, 10)]
    + [str(m * 10**k) for k in range(4) for m in range(1, 10)]
    + ["1.5", "2.5", "7.5", "0.25", "0.75", "15", "25", "75", "150", "250", "750", "1.0", "2.0", "5.0", "0.50",
       "1500", "2500", "12.5", "0.05", "0.01", "0.02"])
#: The units, as drawn (µ is the micro sign; the Greek mu draws alike).
UNITS = ("nm", "µm", "um", "Å", "mm")
_UNIT_NM = {"nm": 1.0, "µm": 1e3, "um": 1e3, "Å": 0.1, "mm": 1e6}
#: Height, px, every part is compared at.
HEIGHT_PX = 16
#: A template whose width-to-height ratio is off the observed part's by more than this
#: factor is not compared (fonts differ in width by less).
_ASPECT_SLACK = 1.35
_BLUR_PX = 0.7


@dataclass(frozen=True)
class SynthesisReading:
    """The best label for a line, and how it was found.

    Attributes:
      label: ``"100 nm"``.
      value_nm: the label's length in nm.
      score: the normalised correlation of the rendered label with the line (-1..1).
      margin: ``score`` less the best score of a label naming another length.
      runner_up: that label.
      font: the font the best label was drawn in.
      pieces: the line's pieces the label covers (number and unit).
    """

    label: str
    value_nm: float
    score: float
    margin: float
    runner_up: str
    font: str
    pieces: int


@dataclass(frozen=True)
class _Templates:
    """Rendered parts: per font, the number and unit strings it has glyphs for.

    ``images[i]`` is (HEIGHT_PX, width) ink cropped to the part's ink; ``aspect[i]`` its
    width over height before scaling; ``height[i]`` its ink height relative to a digit's."""

    fonts: tuple[str, ...]
    strings: tuple[str, ...]  # NUMBERS + UNITS
    images: tuple[np.ndarray | None, ...]  # index font * len(strings) + string
    aspect: np.ndarray  # (fonts, strings), nan where the font lacks a glyph
    height: np.ndarray  # (fonts, strings)
    by_width: dict  # template width -> (indices into images, (n, HEIGHT_PX, width) blurred down the columns)


@functools.lru_cache(maxsize=512)
def templates(fonts: tuple[str, ...] | None = None, strings: tuple[str, ...] = NUMBERS + UNITS) -> _Templates:
    """Every string drawn in every font that has its glyphs (default: :data:`nanoshape.glyphs.FONTS`),
    cropped to its ink (cached per process)."""
    from PIL import ImageFont

    from nanoshape.glyphs import FONTS, font_has, font_path

    fonts = FONTS if fonts is None else fonts
    images: list[np.ndarray | None] = []
    aspect = np.full((len(fonts), len(strings)), np.nan)
    height = np.full((len(fonts), len(strings)), np.nan)
    for f, font in enumerate(fonts):
        face = ImageFont.truetype(font_path(font), 96)
        digit = face.getbbox("0")
        for s, text in enumerate(strings):
            if not all(font_has(font, c) for c in text):
                images.append(None)
                continue
            drawn = _draw(face, text)
            aspect[f, s] = drawn.shape[1] / drawn.shape[0]
            height[f, s] = drawn.shape[0] / (digit[3] - digit[1])
            images.append(_resize(drawn, max(1, round(HEIGHT_PX * aspect[f, s])), HEIGHT_PX))
    groups: dict[int, list[int]] = {}
    for index, image in enumerate(images):
        if image is not None:
            groups.setdefault(image.shape[1], []).append(index)
    blur = _blurring(HEIGHT_PX).T
    by_width = {w: (tuple(indices), np.stack([blur @ images[i] for i in indices])) for w, indices in groups.items()}
    return _Templates(tuple(fonts), tuple(strings), tuple(images), aspect, height, by_width)


def _draw(face, text: str) -> np.ndarray:
    """``text`` drawn white on black with a PIL font, cropped to its ink, as floats in [0, 1]."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = face.getbbox(text)
    canvas = Image.new("L", (right - left + 8, bottom - top + 8), 0)
    ImageDraw.Draw(canvas).text((4 - left, 4 - top), text, fill=255, font=face)
    drawn = np.asarray(canvas, np.float32) / 255.0
    rows, cols = np.flatnonzero(drawn.max(1) > 0.25), np.flatnonzero(drawn.max(0) > 0.25)
    return drawn[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """A float image scaled to (height, width): averaged where it shrinks, interpolated where it grows."""
    from PIL import Image

    method = Image.BOX if image.shape[0] > height else Image.BILINEAR
    return np.asarray(Image.fromarray(np.ascontiguousarray(image, np.float32)).resize((width, height), method),
                      np.float32)


def _part(ink: np.ndarray, pieces) -> tuple[np.ndarray, float, int]:
    """The ink of some of a line's pieces (other ink in their box dropped), scaled to
    HEIGHT_PX high; its width-to-height ratio and height in px."""
    y0, y1 = min(g.y0 for g in pieces), max(g.y1 for g in pieces)
    x0, x1 = min(g.x0 for g in pieces), max(g.x1 for g in pieces)
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    for g in pieces:
        mask[g.y0 - y0 : g.y1 - y0, g.x0 - x0 : g.x1 - x0] = True
    crop = np.where(mask, ink[y0:y1, x0:x1], 0.0).astype(np.float32)
    aspect = crop.shape[1] / crop.shape[0]
    return _resize(crop, max(1, round(HEIGHT_PX * aspect)), HEIGHT_PX), aspect, y1 - y0


def _resampling(n_in: int, n_out: int) -> np.ndarray:
    """(n_in, n_out) weights that scale a row of n_in pixels to n_out: the overlap of each
    output pixel with the input pixels where it shrinks, linear interpolation where it grows."""
    if n_out <= n_in:
        edges = np.linspace(0.0, n_in, n_out + 1)
        lo, hi = edges[:-1], edges[1:]
        x = np.arange(n_in)
        overlap = np.clip(np.minimum(x[:, None] + 1, hi[None]) - np.maximum(x[:, None], lo[None]), 0, None)
        return (overlap / overlap.sum(0, keepdims=True)).astype(np.float32)
    centres = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    left = np.floor(centres).astype(int)
    right = np.minimum(left + 1, n_in - 1)
    weights = np.zeros((n_in, n_out), np.float32)
    np.add.at(weights, (left, np.arange(n_out)), 1 - (centres - left))
    np.add.at(weights, (right, np.arange(n_out)), centres - left)
    return weights


@functools.lru_cache(maxsize=256)
def _blurring(n: int) -> np.ndarray:
    """(n, n) Gaussian blur of _BLUR_PX along one axis, rows normalised (edges not padded)."""
    x = np.arange(n)
    weights = np.exp(-0.5 * ((x[:, None] - x[None]) / _BLUR_PX) ** 2)
    return (weights / weights.sum(0, keepdims=True)).astype(np.float32)


@functools.lru_cache(maxsize=4096)
def _scaling(n_in: int, n_out: int) -> np.ndarray:
    """Scale a row from n_in to n_out pixels, then blur it: (n_in, n_out)."""
    return _resampling(n_in, n_out) @ _blurring(n_out)


def _scores(observed: np.ndarray, aspect: float, table: _Templates, columns: list[int]) -> np.ndarray:
    """Normalised correlation of ``observed`` with the templates of the strings ``columns``,
    each scaled to its size, both blurred by _BLUR_PX: (fonts, len(columns)), -inf where a
    template's width-to-height ratio is off the observed one's by more than _ASPECT_SLACK."""
    height, width = observed.shape
    out = np.full((len(table.fonts), len(columns)), -np.inf)
    a = _blurring(height).T @ observed @ _blurring(width)
    a = a - a.mean()
    norm_a = float(np.sqrt((a * a).sum()))
    if norm_a < 1e-6:
        return out
    ratio = table.aspect[:, columns] / aspect
    valid = (ratio <= _ASPECT_SLACK) & (ratio >= 1 / _ASPECT_SLACK)
    wanted = {f * len(table.strings) + columns[c]: (f, c) for f, c in zip(*np.nonzero(valid))}
    for template_width, (indices, stack) in table.by_width.items():
        keep = [i for i, index in enumerate(indices) if index in wanted]
        if not keep:
            continue
        b = stack[keep] @ _scaling(template_width, width)  # (n, HEIGHT_PX, width), blurred
        b = b - b.mean(axis=(1, 2), keepdims=True)
        norm_b = np.sqrt((b * b).sum(axis=(1, 2)))
        score = np.where(norm_b > 1e-6, (b * a).sum(axis=(1, 2)) / np.maximum(norm_b * norm_a, 1e-9), -np.inf)
        for i, value in zip(keep, score):
            out[wanted[indices[i]]] = value
    return out


def match_line(ink: np.ndarray, line, *, extra_numbers: tuple[str, ...] = (), fonts: tuple[str, ...] | None = None
               ) -> SynthesisReading | None:
    """The label a line of glyph pieces looks most like, rendered number and unit beside each other.

    The line (from :func:`nanoshape.glyphs.cut_glyphs`) is split into a number (its first
    pieces) and a unit (the next pieces, up to the end of a word): every split is tried.
    Each part is compared (:func:`_scores`) with every number and unit in every font whose
    width-to-height ratio is near the part's; a label scores the width-weighted mean of its
    number's and its unit's correlation in one font, and only where the unit's height
    relative to the number's is about the font's (an "nm" is lower than the digits, an "Å"
    taller).

    Args:
      ink: (H, W) ink in [0, 1] the line was cut from.
      line: its pieces, left to right (``Glyph``).
      extra_numbers: numbers to try besides :data:`NUMBERS` (the glyph classifier's readings).
      fonts: the fonts to draw (default: matplotlib's, :data:`nanoshape.glyphs.FONTS`; not the system's
        Liberation fonts the classifier may also be trained on, which a user may or may not have).

    Returns:
      The best label with its score and margin, or None where no split fits any label.
    """
    from nanoshape.glyphs import FONTS, is_point

    fonts = FONTS if fonts is None else fonts
    table = templates(fonts)
    if len(line) < 2:
        return None
    numbers = [i for i, s in enumerate(table.strings) if s in NUMBERS]
    units = [i for i, s in enumerate(table.strings) if s in UNITS]
    extra = [n for n in dict.fromkeys(extra_numbers) if n not in NUMBERS]
    height = max(g.y1 for g in line) - min(g.y0 for g in line)
    # word ends: a gap wider than 0.35 line heights, or the line's end
    ends = [i for i in range(1, len(line)) if line[i].x0 - line[i - 1].x1 > 0.35 * height] + [len(line)]
    best: dict[float, tuple[float, str, str, int]] = {}
    for k in range(1, len(line)):
        if is_point(line[k - 1], line) or is_point(line[k], line):
            continue  # a number neither ends nor a unit starts with a point
        number, number_aspect, number_height = _part(ink, line[:k])
        number_scores = _scores(number, number_aspect, table, numbers)
        extra_scores = _extra_scores(number, number_aspect, extra, fonts)
        if not np.isfinite(number_scores).any() and not np.isfinite(extra_scores).any():
            continue
        for m in [e for e in ends if e > k][:2]:
            unit, unit_aspect, unit_height = _part(ink, line[k:m])
            unit_scores = _scores(unit, unit_aspect, table, units)  # (fonts, units)
            # the unit's height over the number's, against the font's: within a quarter
            relative = unit_height / max(number_height, 1)
            fits = np.abs(np.log(table.height[:, units] / relative)) <= math.log(1.3)
            unit_scores = np.where(fits, unit_scores, -np.inf)
            w = number.shape[1] / (number.shape[1] + unit.shape[1])
            for scores, names in ((number_scores, [table.strings[i] for i in numbers]), (extra_scores, extra)):
                if not scores.size:
                    continue
                total = w * scores[:, :, None] + (1 - w) * unit_scores[:, None, :]  # (fonts, numbers, units)
                for f, n, u in zip(*np.nonzero(np.isfinite(total))):
                    value = float(names[n].replace(",", ".")) * _UNIT_NM[table.strings[units[u]]]
                    key = round(value, 9)
                    if total[f, n, u] > best.get(key, (-np.inf,))[0]:
                        best[key] = (float(total[f, n, u]), f"{names[n]} {table.strings[units[u]]}", table.fonts[f], m)
    if not best:
        return None
    ranked = sorted(best.items(), key=lambda item: -item[1][0])
    value, (score, label, font, pieces) = ranked[0]
    second = ranked[1][1] if len(ranked) > 1 else (-1.0, "", "", 0)
    return SynthesisReading(label, value, score, score - second[0], second[1], font, pieces)


def _extra_scores(observed: np.ndarray, aspect: float, numbers: list[str], fonts: tuple[str, ...]) -> np.ndarray:
    """:func:`_scores` for numbers outside :data:`NUMBERS`, drawn on demand."""
    if not numbers:
        return np.zeros((len(fonts), 0))
    return _scores(observed, aspect, templates(fonts, tuple(numbers)), list(range(len(numbers))))
