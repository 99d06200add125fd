"""Segment a TEM micrograph into nanocrystal instances, splitting touching crystals.

Two methods (``SegmentOptions.method``):

- ``learned`` (the default): the detector of :mod:`nanoshape.segnet`, a small U-Net trained
  on annotated micrographs and on micrographs nanoshape renders, run over an image
  pyramid so that every particle is taken at the scale where it is best seen, whatever
  its size; then the removals of step 8 below and a self-check (:func:`self_check`) that
  flags doubtful particles and says by name where the result is doubtful.
- ``classical``: the threshold-based steps below, developed on 41 annotated bright-field
  micrographs, fast and exact on clean images, fragile on porous, textured and
  agglomerated particles and on SEM images.

The classical method is one pass of whole-image operations, every length scaled by the
typical particle size found in the image itself, so the same defaults serve 3 nm dots and
500 nm spheres:

1. **Data bands, scale bars and text** are found on the raw intensities (saturated, flat,
   axis-aligned graphics; see :func:`find_overlays`) and kept out of every statistic.
2. **Normalisation and polarity.** Intensities are scaled to [0, 1] by robust percentiles;
   the contrast polarity is detected (:func:`detect_polarity`: the background is the
   phase that percolates) or forced, and the image is flipped so particles are bright.
3. **Particle size.** The typical radius ``r0`` is the scale of the strongest
   scale-normalised Laplacian-of-Gaussian response (Lindeberg 1998: a disc of radius r
   peaks at sigma = r / sqrt(2)), which needs no threshold and is robust to noise. The
   image is then analysed at a working resolution where ``r0`` is a few pixels.
4. **Background flattening and denoising.** A quadratic surface is fitted robustly to
   low tile percentiles (the beam's slow fall-off) and subtracted; a Gaussian of width
   ``smoothing * r0`` removes shot noise.
5. **Threshold with hysteresis.** Detection uses Otsu's threshold; delineation a lower
   one, ``threshold_fraction`` of the way from the background level to Otsu's, because
   the visible edge of a particle lies nearer the background than the mid-level. When
   particles are so sparse that Otsu splits the background peak, the detection threshold
   becomes ``background mode + sparse_sigmas * peak width`` instead.
6. **Holes and specks.** Holes smaller than ``hole_area`` typical particle areas are
   filled; components smaller than ``speck_area`` typical areas are dropped as specks.
7. **Splitting** (seed paper: a watershed that fills each well from one marker). Narrow
   bright-field gaps between touching crystals are cut with a black top-hat (valleys
   narrower than ``valley_width * r`` and deeper than ``valley_depth`` of the contrast);
   the landscape is the distance transform of the cut mask, and its basins are merged
   wherever a peak rises less than ``split_depth * r`` above the pass to a higher
   neighbour (the h-maxima criterion, computed from the basin graph rather than by
   morphological reconstruction).
8. **Removals**, each recorded with its reason: particles touching the image border, and
   particles lying mostly on a scale bar, text or data band (and, classical method only,
   particles joined to one).

The library never prints and holds no global state; :func:`segment` is a pure function
of the image and the options.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from nanoshape.labels import border_ids
from nanoshape.scalebar import is_bar_box

__all__ = [
    "SegmentOptions",
    "Segmentation",
    "segment",
    "detect_polarity",
    "find_overlays",
    "estimate_radius",
    "DROP_REASONS",
    "self_check",
]

#: Reasons a candidate particle can be dropped, in the order the checks run.
DROP_REASONS = (
    "speck",
    "scale bar/text",
    "joined to scale bar/text",
    "touches border",
)

_DROPPED_COLUMNS = ["centroid_x_px", "centroid_y_px", "area_px", "reason"]
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class SegmentOptions:
    """How :func:`segment` finds particles. Lengths are fractions of the typical particle
    radius ``r`` found in each image unless their name says otherwise.

    Attributes:
      method: 'learned' (the detector of :mod:`nanoshape.segnet`, trained on annotated and
        rendered micrographs) or 'classical' (the thresholds and watershed below, which
        the options from ``polarity`` on configure).
      model: a segmentation model directory (``nanoshape train-segmentation``); empty uses
        the one shipped with nanoshape.
      polarity: 'auto' (detect), 'bright_field' (dark particles) or 'dark_field'.
      particle_diameter_px: typical particle diameter in pixels, or None to estimate it.
      working_radius_px: images are analysed block-averaged so the typical radius is at
        least this many pixels (speed); the label boundaries are then refined at full
        resolution. 0 analyses every image at full resolution.
      flatten: subtract a smooth (quadratic) background before thresholding.
      smoothing: width of the denoising Gaussian used to delineate particles.
      sparse_smoothing: width of the Gaussian used instead when the particles are sparse in
        noise (Otsu splits the background peak): close to a disc's matched filter.
      threshold_fraction: where the delineation threshold sits between the background
        level (0) and Otsu's threshold (1).
      sparse_sigmas: detection threshold, in background-peak widths above its mode, used
        when Otsu splits the background peak (very sparse particles)...
      sparse_low: ...and the delineation threshold in that case.
      hole_area: fill enclosed holes smaller than this many typical particle areas.
      speck_area: drop components smaller than this many typical particle areas.
      valley_depth: cut valleys deeper than this fraction of the particle contrast...
      valley_width: ...and narrower than this (0 disables the cut)...
      valley_level: ...whose floor lies in the lower part of the particle intensity range
        (this fraction of the contrast above the threshold): a gap, not a stripe inside a
        twinned or faceted crystal.
      split_depth: a marker must rise this much above the pass to a higher one...
      split_ratio: ...and this fraction of its own height (a neck criterion).
      landscape_smoothing: Gaussian width (working pixels) applied to the distance
        transform, whose ridges are bumpy where a boundary is jagged.
      min_inscribed_px: when the typical inscribed radius comes out under this many
        working pixels (thin rods), the image is analysed again at a finer resolution.
      remove_border: drop particles touching the image border.
      remove_overlays: find scale bars, text and data bands, and drop particles joined
        to them.
      threads: threads for the whole-image filters (bands of rows, identical results);
        0 = one per CPU core (at most 8). Runs that already use one process per core set 1.
    """

    method: str = "learned"
    model: str = ""
    polarity: str = "auto"
    particle_diameter_px: float | None = None
    working_radius_px: float = 4.0
    flatten: bool = True
    smoothing: float = 0.1
    sparse_smoothing: float = 0.35
    sparse_low: float = 4.0
    threshold_fraction: float = 0.9
    sparse_sigmas: float = 4.0
    hole_area: float = 1.0
    speck_area: float = 0.15
    valley_depth: float = 0.2
    valley_width: float = 1.5
    valley_level: float = 0.5
    split_depth: float = 0.15
    split_ratio: float = 0.2
    landscape_smoothing: float = 0.5
    min_inscribed_px: float = 4.0
    remove_border: bool = True
    remove_overlays: bool = True
    threads: int = 0

    def __post_init__(self):
        if self.method not in ("learned", "classical"):
            raise ValueError(f"SegmentOptions.method must be 'learned' or 'classical', got {self.method!r}")
        if self.polarity not in ("auto", "bright_field", "dark_field"):
            raise ValueError(f"polarity must be 'auto', 'bright_field' or 'dark_field', got {self.polarity!r}")
        if self.threads < 0:
            raise ValueError(f"SegmentOptions.threads must be >= 0 (0 = one per core), got {self.threads}")


@dataclass(frozen=True, eq=False)
class Segmentation:
    """What :func:`segment` found in one micrograph.

    Attributes:
      labels: (H, W) uint32 instance labels of the kept particles, 0 = background, ids 1..N.
      dropped: one row per removed candidate: ``centroid_x_px``, ``centroid_y_px``,
        ``area_px`` and ``reason`` (one of :data:`DROP_REASONS`).
      polarity: 'bright_field' (dark particles) or 'dark_field' (bright particles).
      particle_size_px: typical particle diameter found (px), which scales every step.
      info: JSON-safe diagnostics: thresholds, radii, working factor, counts, timings (s),
        and ``self_check``: findings that say where the result is doubtful.
      particles: one row per kept particle (``particle_id``) with what the segmentation knows
        of it: ``segmentation_score``, ``segmentation_level`` and ``segmentation_flag`` (see
        :func:`self_check`); the learned method fills them, the classical one leaves them empty.
    """

    labels: np.ndarray
    dropped: pd.DataFrame
    polarity: str
    particle_size_px: float
    info: Mapping[str, Any]
    particles: pd.DataFrame | None = None


# ----------------------------------------------------------------------------- helpers


def _gauss(x: np.ndarray, sigma: float, threads: int = 1) -> np.ndarray:
    if sigma <= 0:
        return x
    return _by_rows(lambda part: ndi.gaussian_filter(part, sigma, mode="nearest", truncate=3.0), x,
                    int(3.0 * sigma + 0.5) + 1, threads)


#: images smaller than this (pixels) are filtered in one piece: threads would not pay
_THREADED_PIXELS = 250_000


def _threads(requested: int) -> int:
    """Worker threads for the whole-image filters: ``requested``, or the CPU count when 0."""
    return max(1, requested if requested > 0 else min(os.cpu_count() or 1, 8))


def _by_rows(filter_fn, x: np.ndarray, reach: int, threads: int) -> np.ndarray:
    """``filter_fn(x)`` computed on bands of rows in ``threads`` threads (scipy.ndimage releases the GIL).

    Each band is filtered with ``reach`` extra rows on each side, which the filter's
    footprint must not exceed (half its support), so the result equals one call on the
    whole image, the image edges included.
    """
    height = x.shape[0]
    bands = min(threads, max(1, height // max(4 * reach, 64)))
    if bands <= 1 or x.size < _THREADED_PIXELS:
        return filter_fn(x)
    bounds = np.linspace(0, height, bands + 1).astype(int)

    def band(i):
        top, bottom = bounds[i], bounds[i + 1]
        lo, hi = max(0, top - reach), min(height, bottom + reach)
        return filter_fn(x[lo:hi])[top - lo : top - lo + bottom - top]

    with ThreadPoolExecutor(bands) as pool:
        return np.concatenate(list(pool.map(band, range(bands))), axis=0)


def _blocks(x: np.ndarray, factor: int) -> np.ndarray:
    """(H/f, f, W/f, f) view of ``x`` edge-padded to a multiple of ``factor``."""
    h, w = x.shape
    ph, pw = -h % factor, -w % factor
    if ph or pw:
        x = np.pad(x, ((0, ph), (0, pw)), mode="edge")
    return x.reshape(x.shape[0] // factor, factor, x.shape[1] // factor, factor)


def _block_mean(x: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor x factor`` blocks (edge-padded to a multiple of ``factor``).

    Summed as ``factor^2`` strided slices: several times faster than a mean over the axes
    of the (H/f, f, W/f, f) view, which numpy reduces element by element.
    """
    if factor == 1:
        return x
    blocks = _blocks(x, factor)
    out = np.zeros((blocks.shape[0], blocks.shape[2]), np.float32)
    for i in range(factor):
        for j in range(factor):
            out += blocks[:, i, :, j]
    out *= np.float32(1.0 / (factor * factor))
    return out


def _block_all(mask: np.ndarray, factor: int) -> np.ndarray:
    """True where every pixel of the ``factor x factor`` block is."""
    if factor == 1:
        return mask
    blocks = _blocks(mask, factor)
    out = blocks[:, 0, :, 0].copy()
    for i in range(factor):
        for j in range(factor):
            if i or j:
                out &= blocks[:, i, :, j]
    return out


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D sample (between-class variance maximised on a histogram): the
    upper edge of the chosen bin. :func:`skimage.filters.threshold_otsu` chooses the same bin but
    returns its centre, half a bin lower; the classical method's thresholds were set with this one."""
    hist, edges = np.histogram(values, bins)
    centres = 0.5 * (edges[1:] + edges[:-1])
    weight0 = np.cumsum(hist).astype(np.float64)
    weight1 = weight0[-1] - weight0
    mean_sum = np.cumsum(hist * centres)
    mean0 = mean_sum / np.maximum(weight0, 1)
    mean1 = (mean_sum[-1] - mean_sum) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def _label_stats(labels: np.ndarray, n: int, ids: np.ndarray, scale: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area, centroid x and centroid y of the given ids (full-resolution pixels when
    ``scale`` > 1), from their own pixels only (a handful of ids need not cost a pass of
    index arithmetic over the whole image)."""
    wanted = np.zeros(n + 1, dtype=bool)
    wanted[ids] = True
    rows, cols = np.nonzero(wanted[labels])
    which = labels[rows, cols]
    area = np.bincount(which, minlength=n + 1).astype(np.float64)
    cy = np.bincount(which, weights=rows, minlength=n + 1) / np.maximum(area, 1)
    cx = np.bincount(which, weights=cols, minlength=n + 1) / np.maximum(area, 1)
    area, cx, cy = area[ids], cx[ids], cy[ids]
    if scale > 1:
        return area * scale * scale, (cx + 0.5) * scale - 0.5, (cy + 0.5) * scale - 0.5
    return area, cx, cy


def _dropped_rows(labels: np.ndarray, n: int, ids: np.ndarray, reason: str, scale: int = 1) -> pd.DataFrame:
    if len(ids) == 0:
        return pd.DataFrame(columns=_DROPPED_COLUMNS)
    area, cx, cy = _label_stats(labels, n, ids, scale)
    return pd.DataFrame({"centroid_x_px": cx, "centroid_y_px": cy, "area_px": area, "reason": reason})


# ----------------------------------------------------------------------------- overlays


def _data_bands(image: np.ndarray, max_fraction: float = 0.2) -> np.ndarray:
    """Instrument data bands: runs of rows (columns) from an edge whose median is saturated.

    A band of text on a black or white strip has a saturated median even on its text rows.
    """
    band = np.zeros(image.shape, dtype=bool)
    lo, hi = float(image.min()), float(image.max())
    margin = 0.04 * (hi - lo)
    for axis in (0, 1):
        lines = image if axis == 0 else image.T
        step = max(1, lines.shape[1] // 256)  # a strided sample of each line is enough for its median
        medians = np.median(lines[:, ::step], axis=1)
        extreme = (medians <= lo + margin) | (medians >= hi - margin)
        n = extreme.size
        for order in (np.arange(n), np.arange(n)[::-1]):
            run = int(np.argmin(extreme[order])) if not extreme[order].all() else n
            if 3 <= run <= max_fraction * n:
                covered = order[: min(run + 2, n)]
                if axis == 0:
                    band[covered] = True
                else:
                    band[:, covered] = True
    return band


def _edge_contrast(image: np.ndarray, box: tuple[slice, slice], own: np.ndarray) -> float:
    """|median of a 2 px ring around a component - its median|: drawn glyphs have a sharp step."""
    height, width = image.shape
    y0, y1 = max(0, box[0].start - 2), min(height, box[0].stop + 2)
    x0, x1 = max(0, box[1].start - 2), min(width, box[1].stop + 2)
    inside = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    inside[box[0].start - y0 : box[0].stop - y0, box[1].start - x0 : box[1].stop - x0] = own
    ring = ndi.binary_dilation(inside, structure=_EIGHT, iterations=2) & ~inside
    window = image[y0:y1, x0:x1]
    return float(abs(np.median(window[ring]) - np.median(window[inside]))) if ring.any() else 0.0


def find_overlays(image: np.ndarray) -> np.ndarray:
    """Pixels covered by figure graphics: data bands, scale bars with their text, label boxes.

    Graphics drawn onto published micrographs are saturated (the image's extreme values)
    and axis-aligned, which real TEM contrast almost never is. The rules:

    - data bands: see :func:`_data_bands`;
    - scale bars: saturated components that fill >= 85% of an axis-aligned box at least
      8 times longer than wide and >= 3% of the image width long; everything saturated in
      the zone around a bar (half its length above and below) is its text;
    - label boxes: saturated components touching the image edge that, holes filled, fill
      >= 95% of their box, are >= 8 px on each side and cover < 10% of the image (panel
      letters and scale bars on white boxes);
    - panel letters without a box: saturated, concave (solidity < 0.75) components in a
      corner zone whose strokes are thin (largest inscribed radius < 12% of their box's
      longer side) and a sharp step around them (over 30% of the range); convex or softly
      bordered saturated particles, such as the cores of dark rods, are not letters.

    Args:
      image: (H, W) raw intensities.

    Returns:
      (H, W) bool mask, dilated by 2 px to cover anti-aliased edges.
    """
    image = np.asarray(image, dtype=np.float32)
    height, width = image.shape
    overlay = _data_bands(image)
    lo, hi = float(image.min()), float(image.max())
    if hi <= lo:
        return overlay
    margin = 0.03 * (hi - lo)
    corner_h, corner_w = 0.15 * height, 0.15 * width
    for saturated in (image <= lo + margin, image >= hi - margin):
        labels, n = ndi.label(saturated & ~overlay, structure=_EIGHT)
        if n == 0:
            continue
        area = np.bincount(labels.ravel(), minlength=n + 1)
        candidates = np.flatnonzero(area >= 12)
        candidates = candidates[candidates > 0]
        if candidates.size > 2000:  # a saturated, noisy micrograph: keep the largest
            candidates = candidates[np.argsort(area[candidates])[-2000:]]
        slices = ndi.find_objects(labels)
        for k in candidates:
            box = slices[k - 1]
            h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
            own = labels[box] == k
            extent = area[k] / (h * w)
            long_side, short_side = max(h, w), min(h, w)
            if is_bar_box(h, w, extent, width):
                pad_y = long_side // 2 if w >= h else long_side // 4
                pad_x = long_side // 4 if w >= h else long_side // 2
                y0, y1 = max(0, box[0].start - pad_y), min(height, box[0].stop + pad_y)
                x0, x1 = max(0, box[1].start - pad_x), min(width, box[1].stop + pad_x)
                zone = np.zeros_like(overlay)
                zone[y0:y1, x0:x1] = True
                text = (image <= lo + margin) | (image >= hi - margin)
                # saturated components lying mostly inside the zone
                tl, tn = ndi.label(text, structure=_EIGHT)
                inside = np.bincount(tl[zone], minlength=tn + 1)
                total = np.bincount(tl.ravel(), minlength=tn + 1)
                keep = (inside >= 0.8 * total) & (total <= (long_side // 2) ** 2 + area[k])
                keep[0] = False
                overlay |= keep[tl]
                overlay[box] |= own
                continue
            filled = ndi.binary_fill_holes(own)
            touches_edge = box[0].start == 0 or box[1].start == 0 or box[0].stop == height or box[1].stop == width
            if (
                filled.sum() >= 0.95 * h * w
                and touches_edge
                and short_side >= 8
                and h * w < 0.1 * height * width
                and filled.sum() > 1.05 * area[k]  # a box holding letters, not a solid particle
            ):
                overlay[box] |= filled
                continue
            in_corner = (box[0].stop <= corner_h or box[0].start >= height - corner_h) and (
                box[1].stop <= corner_w or box[1].start >= width - corner_w
            )
            if (
                in_corner
                and ndi.distance_transform_edt(np.pad(own, 1))[1:-1, 1:-1].max() < 0.12 * long_side
                and _solidity(labels[box] * own, np.array([k]))[0] < 0.75
                and _edge_contrast(image, box, own) > 0.3 * (hi - lo)
            ):
                overlay[box] |= own
    if overlay.any():
        overlay = ndi.binary_dilation(overlay, structure=_EIGHT, iterations=2)
    return overlay


# ----------------------------------------------------------------------------- polarity, size


def _largest_component_fraction(mask: np.ndarray) -> float:
    labels, n = ndi.label(mask)
    if n == 0:
        return 0.0
    area = np.bincount(labels.ravel())[1:]
    return float(area.max() / area.sum())


def detect_polarity(normalised: np.ndarray, usable: np.ndarray) -> tuple[str, float]:
    """Bright field (dark particles) unless the image is unambiguously dark field.

    The image (block-averaged to <= 512 px, smoothed by 1 px) is split at Otsu's
    threshold and three antisymmetric cues are computed, each positive when the dark
    phase looks like the particles:

    - percolation: the background is the phase that percolates (share of the phase in its
      largest connected component, bright minus dark);
    - variability: particles vary in thickness and orientation, the support film does not
      (log ratio of the dark and bright phases' median absolute deviations);
    - tail: particles form the heavier tail beyond the histogram's main peak (log ratio of
      the dark and bright tails beyond three peak widths).

    Each cue alone fails on some real images (networks of wires percolate, close-packed
    crystals hold the histogram's peak, Otsu splits the noise of sparse images, shot noise
    makes a bright film vary more than uniform crystals), and bright field is by far the
    common case in TEM, so dark field is returned only when the dark phase clearly does
    not percolate (percolation < -0.2) and the other two cues together agree
    (variability + tail < -0.5). On the 41 bright-field EMPS micrographs no image meets
    this; on their negatives, and on negated rendered scenes, the clear cases do.

    Args:
      normalised: (H, W) intensities in [0, 1].
      usable: (H, W) bool, pixels free of overlays.

    Returns:
      ('bright_field' | 'dark_field', score), score being the weakest cue for dark field
      (negative: dark field).
    """
    factor = max(1, int(np.ceil(max(normalised.shape) / 512)))
    small = _gauss(_block_mean(normalised, factor), 1.0)
    ok = _block_all(usable, factor)
    if ok.sum() < 64:
        return "bright_field", 0.0
    values = small[ok]
    threshold = _otsu(values)
    bright = (small > threshold) & ok
    dark = ~bright & ok
    percolation = _largest_component_fraction(bright) - _largest_component_fraction(dark)
    upper, lower = values[values > threshold], values[values <= threshold]
    spread_upper = np.median(np.abs(upper - np.median(upper))) if upper.size else 0.0
    spread_lower = np.median(np.abs(lower - np.median(lower))) if lower.size else 0.0
    variability = float(np.log((spread_lower + 1e-6) / (spread_upper + 1e-6)))
    mode, width = _histogram_peak(values)
    tail_dark = np.mean(values < mode - 3 * width)
    tail_bright = np.mean(values > mode + 3 * width)
    tail = float(np.log((tail_dark + 1e-3) / (tail_bright + 1e-3)))
    dark_field = percolation < -0.2 and variability + tail < -0.5
    score = max(percolation / 0.2, (variability + tail) / 0.5)
    return ("dark_field" if dark_field else "bright_field"), float(score)


def _peak_widths(values: np.ndarray, bins: int = 256) -> tuple[float, float, float]:
    """Mode of a sample and the widths (Gaussian sigma from the half maximum) of its peak
    below and above the mode."""
    hist, edges = np.histogram(values, bins)
    smooth = ndi.uniform_filter1d(hist.astype(np.float64), 5)
    centres = 0.5 * (edges[1:] + edges[:-1])
    k = int(np.argmax(smooth))
    mode = float(centres[k])
    below = np.flatnonzero(smooth[: k + 1] < 0.5 * smooth[k])
    above = np.flatnonzero(smooth[k:] < 0.5 * smooth[k])
    width_low = ((mode - centres[below[-1]]) if below.size else (mode - centres[0])) / 1.1774
    width_high = ((centres[k + above[0]] - mode) if above.size else (centres[-1] - mode)) / 1.1774
    return mode, float(width_low), float(width_high)


def _histogram_peak(values: np.ndarray, bins: int = 256) -> tuple[float, float]:
    """Mode of a sample and the width (Gaussian sigma from the half maximum) of its peak."""
    mode, width_low, width_high = _peak_widths(values, bins)
    return mode, max(min(width_low, width_high), 1e-6)


def estimate_radius(particles_bright: np.ndarray, usable: np.ndarray, *, percentile: float = 99.5,
                    threads: int = 1) -> float:
    """Typical particle radius (px) from the scale-normalised Laplacian of Gaussian.

    For each scale sigma on a pyramid of 2 x 2 block means (3 scales per octave) the response
    ``-sigma^2 * LoG_sigma * image`` is computed and its ``percentile`` taken over usable
    pixels; a bright disc of radius r gives its strongest response at sigma = r / sqrt(2)
    (Lindeberg, Int. J. Comput. Vision 30 (1998) 79). Returns ``sqrt(2) * argmax sigma``.
    Images over ~1 Mpx start one octave down (radii under ~3 px are not resolved there).
    ``threads`` filter bands of rows side by side (same result).
    """
    x = particles_bright.astype(np.float32)
    ok = usable
    level, blur2 = 1, 0.0
    if x.size > 1_200_000:
        x = _block_mean(x, 2)
        ok = _block_all(ok, 2)
        level, blur2 = 2, 0.25  # a 2 x 2 block mean blurs by half its pixel (rms) per axis
    best_value, best_sigma = -np.inf, 1.0
    limit = min(particles_bright.shape) / 8
    while min(x.shape) >= 16:
        for step in range(3):
            sigma = level * 2 ** (step / 3)
            if sigma > limit:
                break
            remaining = np.sqrt(max(sigma * sigma - blur2, 0.25)) / level
            response = -((sigma / level) ** 2) * _by_rows(
                lambda part: ndi.gaussian_laplace(part, remaining, mode="nearest"), x, int(4.0 * remaining + 0.5) + 1,
                threads)
            sample = response[::2, ::2][ok[::2, ::2]] if response.size > 250_000 else response[ok]
            value = np.percentile(sample, percentile) if sample.size else -np.inf
            if value > best_value:
                best_value, best_sigma = value, sigma
        x = _block_mean(x, 2)
        ok = _block_all(ok, 2)
        blur2 += 0.25 * level * level
        level *= 2
    return float(best_sigma * np.sqrt(2))


def _inscribed_radius(foreground: np.ndarray) -> float:
    """Typical inscribed radius: area-weighted median of the distance-transform maxima."""
    dist = ndi.distance_transform_edt(foreground)
    peaks = (dist == ndi.maximum_filter(dist, 3)) & (dist >= 1)
    values = dist[peaks]
    if values.size == 0:
        return 1.0
    order = np.argsort(values)
    weights = np.cumsum(values[order] ** 2)
    return float(values[order][np.searchsorted(weights, weights[-1] / 2)])


# ----------------------------------------------------------------------------- background, threshold


def _background_surface(x: np.ndarray, usable: np.ndarray, tile: float, percentile: float = 5.0) -> np.ndarray:
    """Quadratic surface through the low percentile of each tile (iteratively trimmed fit).

    In particles-bright images the low percentile of a tile is background whether the tile
    is sparse (the noise floor) or crowded (the gaps), so the fit follows the beam's slow
    fall-off without a threshold. Tiles that disagree (> 3 MAD) are dropped. Zero mean.
    """
    height, width = x.shape
    ny, nx = max(2, int(round(height / tile))), max(2, int(round(width / tile)))
    ys = np.linspace(0, height, ny + 1).astype(int)
    xs = np.linspace(0, width, nx + 1).astype(int)
    points = []
    for a in range(ny):
        for b in range(nx):
            ok = usable[ys[a] : ys[a + 1], xs[b] : xs[b + 1]]
            if ok.mean() < 0.5:
                continue
            value = np.percentile(x[ys[a] : ys[a + 1], xs[b] : xs[b + 1]][ok], percentile)
            points.append(((ys[a] + ys[a + 1]) / 2 / height - 0.5, (xs[b] + xs[b + 1]) / 2 / width - 0.5, value))
    if len(points) < 9:
        return np.zeros(x.shape, dtype=np.float32)
    yn, xn, values = np.asarray(points).T
    design = np.stack([np.ones_like(yn), xn, yn, xn * xn, xn * yn, yn * yn], axis=-1)
    keep = np.ones(values.size, dtype=bool)
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(design[keep], values[keep], rcond=None)
        residual = values - design @ coef
        spread = 1.4826 * np.median(np.abs(residual[keep])) + 1e-6
        keep = np.abs(residual) < 3 * spread
        if keep.sum() < 6:
            return np.zeros(x.shape, dtype=np.float32)
    yy = (np.arange(height, dtype=np.float32) / height - 0.5)[:, None]
    xx = (np.arange(width, dtype=np.float32) / width - 0.5)[None, :]
    surface = coef[0] + coef[1] * xx + coef[2] * yy + coef[3] * xx * xx + coef[4] * xx * yy + coef[5] * yy * yy
    return (surface - np.median(surface)).astype(np.float32)


def _thresholds(
    values: np.ndarray, *, fraction: float, sparse_sigmas: float, sparse_low: float, sparse: bool | None = None
) -> dict[str, float]:
    """Delineation (``low``) and detection (``high``) thresholds of a particles-bright sample.

    Otsu's threshold separates the classes when both are substantial. When one narrow
    peak (the background) holds > 85% of the pixels and Otsu's threshold falls inside it
    (within one peak width of the mode), Otsu has split the background's noise; detection
    then requires ``sparse_sigmas`` peak widths above the mode (the peak width is taken
    from its half maximum on the side away from the particles).
    """
    otsu = _otsu(values)
    mode, width_low, width_high = _peak_widths(values, 256)
    width = max(min(width_low, width_high), 1e-6)
    in_peak = float(np.mean(np.abs(values - mode) <= 3 * width))
    if sparse is None:
        sparse = abs(otsu - mode) < width and in_peak > 0.85
    background = float(np.median(values[values <= otsu]))
    if sparse:
        high = mode + sparse_sigmas * width_low
        low = mode + min(sparse_low, sparse_sigmas) * width_low
    else:
        high = otsu
        low = background + fraction * (otsu - background)
    return {"low": float(low), "high": float(high), "otsu": otsu, "background": background if not sparse else mode,
            "peak_width": float(width), "sparse": bool(sparse)}


# ----------------------------------------------------------------------------- splitting


def _merge_shallow_basins(landscape: np.ndarray, mask: np.ndarray, depth: float, ratio: float = 0.0) -> np.ndarray:
    """Watershed of ``-landscape`` in ``mask`` with peaks shallower than ``depth`` merged.

    Every plateau of local maxima seeds a basin; for each pair of adjacent basins the pass
    height is the highest ``min`` of two neighbouring pixels across their border. Passes
    are visited from the highest down, and two basins (union-find roots) are merged when
    the lower of their peaks rises less than ``depth`` above the pass: the dynamics
    criterion that defines h-maxima, at the cost of one watershed and a sort.
    """
    from skimage.segmentation import watershed

    peaks = (landscape == ndi.maximum_filter(landscape, 3)) & mask & (landscape > 0)
    seeds, n = ndi.label(peaks, structure=_EIGHT)
    if n <= 1:
        return seeds if n == 0 else mask.astype(np.int32)
    basins = watershed(-landscape, seeds, mask=mask)
    height = np.zeros(n + 1, dtype=np.float64)
    height[seeds[peaks]] = landscape[peaks]

    keys, passes = [], []
    for a, b, la, lb in (
        (basins[:, :-1], basins[:, 1:], landscape[:, :-1], landscape[:, 1:]),
        (basins[:-1, :], basins[1:, :], landscape[:-1, :], landscape[1:, :]),
        (basins[:-1, :-1], basins[1:, 1:], landscape[:-1, :-1], landscape[1:, 1:]),
        (basins[:-1, 1:], basins[1:, :-1], landscape[:-1, 1:], landscape[1:, :-1]),
    ):
        border = (a != b) & (a > 0) & (b > 0)
        lo = np.minimum(a[border], b[border]).astype(np.int64)
        hi = np.maximum(a[border], b[border]).astype(np.int64)
        keys.append(lo * (n + 1) + hi)
        passes.append(np.minimum(la[border], lb[border]))
    keys = np.concatenate(keys)
    passes = np.concatenate(passes)
    parent = np.arange(n + 1)
    if keys.size:
        order = np.lexsort((passes, keys))
        keys, passes = keys[order], passes[order]
        last = np.append(keys[1:] != keys[:-1], True)
        keys, passes = keys[last], passes[last]
        top = height.copy()

        def find(i: int) -> int:
            root = i
            while parent[root] != root:
                root = parent[root]
            while parent[i] != root:
                parent[i], i = root, parent[i]
            return root

        order = np.argsort(-passes, kind="stable")
        for key, level in zip(keys[order].tolist(), passes[order].tolist()):
            ra, rb = find(key // (n + 1)), find(key % (n + 1))
            if ra == rb:
                continue
            lower = min(top[ra], top[rb])
            if lower - level < max(depth, ratio * lower):
                if top[ra] < top[rb]:
                    ra, rb = rb, ra
                parent[rb] = ra
                top[ra] = max(top[ra], top[rb])
        for i in range(n + 1):
            parent[i] = find(i)
    return parent.astype(np.int32)[basins]


# ----------------------------------------------------------------------------- removals


def _solidity(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Area / convex-hull area of the given ids (hull of the pixel squares)."""
    from nanoshape.features import convex_areas

    present, hull = convex_areas(labels)
    area = np.bincount(labels.ravel(), minlength=int(labels.max()) + 1)
    by_id = np.ones(int(labels.max()) + 1)
    by_id[present] = area[present] / np.maximum(hull, 1.0)
    return by_id[ids]


def _removals(labels: np.ndarray, overlay: np.ndarray, options: SegmentOptions
              ) -> tuple[np.ndarray, list[pd.DataFrame], np.ndarray]:
    """Step 8: drop graphics, particles joined to them and particles cut by the border,
    each recorded with its reason; returns the kept particles relabelled 1..N
    (uint32), the dropped rows and the N kept ids of ``labels`` (kept[i] became i + 1)."""
    n = int(labels.max())
    dropped = []
    reason = np.full(n + 1, "", dtype=object)
    if options.remove_overlays and overlay.any():
        ids = np.arange(n + 1)
        area = np.bincount(labels.ravel(), minlength=n + 1)
        in_overlay = np.bincount(labels[overlay], minlength=n + 1)
        mostly = in_overlay > 0.5 * np.maximum(area, 1)
        reason[(ids > 0) & mostly] = "scale bar/text"
        if options.method == "classical":
            touching = np.zeros(n + 1, dtype=bool)
            touching[np.unique(labels[ndi.binary_dilation(overlay, structure=_EIGHT)])] = True
            reason[(ids > 0) & touching & ~mostly] = "joined to scale bar/text"
        else:
            # the learned detector separates particles from graphics: a particle only loses
            # the 2-px margin find_overlays adds around them, and is dropped when the
            # graphics themselves cover part of it (its outline is hidden)
            core = ndi.binary_erosion(overlay, structure=_EIGHT, iterations=2, border_value=1)
            hidden = np.bincount(labels[core], minlength=n + 1) > 0
            reason[(ids > 0) & hidden & ~mostly] = "joined to scale bar/text"
            labels = np.where(overlay & ~mostly[labels], 0, labels)
    if options.remove_border:
        border = border_ids(labels)
        reason[border[reason[border] == ""]] = "touches border"
    kept = np.flatnonzero(reason == "")
    kept = kept[kept > 0]
    area_all = np.bincount(labels.ravel(), minlength=n + 1)
    kept = kept[area_all[kept] > 0]
    for why in DROP_REASONS[1:]:
        ids = np.flatnonzero(reason == why)
        if ids.size:
            dropped.append(_dropped_rows(labels, n, ids, why))
    lut = np.zeros(n + 1, dtype=np.uint32)
    lut[kept] = np.arange(1, kept.size + 1, dtype=np.uint32)
    return lut[labels], dropped, kept


def _segment_at(bright: np.ndarray, usable: np.ndarray, radius0: float, factor: int, options: SegmentOptions, lap,
                threads: int = 1) -> dict:
    """Steps 4-7 at a working resolution of ``factor`` (block means), labels back at full size."""
    height, width = bright.shape
    work = _block_mean(bright, factor)
    work_usable = _block_all(usable, factor)
    r_work0 = radius0 / factor

    # 4. flatten and denoise
    surface = None
    if options.flatten:
        surface = _background_surface(_gauss(work, 1.0, threads), work_usable, max(min(work.shape) / 8, 4 * r_work0))
        work = work - surface
    sigma = max(options.smoothing * r_work0, 0.5)
    smooth = _gauss(work, sigma, threads)
    lap("flatten_denoise")

    # 5. threshold with hysteresis. Sparse particles in noise (Otsu splits the background
    # peak) are detected after a heavier, nearly matched smoothing.
    th = _thresholds(smooth[work_usable], fraction=options.threshold_fraction, sparse_sigmas=options.sparse_sigmas,
                     sparse_low=options.sparse_low)
    if th["sparse"] and options.sparse_smoothing * r_work0 > sigma:
        sigma = options.sparse_smoothing * r_work0
        smooth = _gauss(work, sigma, threads)
        th = _thresholds(smooth[work_usable], fraction=options.threshold_fraction, sparse_sigmas=options.sparse_sigmas,
                         sparse_low=options.sparse_low, sparse=True)
    candidate = smooth > th["low"]
    comp, n_comp = ndi.label(candidate)
    strong = np.zeros(n_comp + 1, dtype=bool)
    strong[comp[smooth > th["high"]]] = True
    strong[0] = False
    foreground = strong[comp]
    radius = _inscribed_radius(foreground)
    typical_area = np.pi * radius * radius
    lap("threshold")

    # 6. holes and specks
    holes = ndi.binary_fill_holes(foreground) & ~foreground
    if holes.any():
        hole_labels, n_holes = ndi.label(holes)
        hole_area = np.bincount(hole_labels.ravel(), minlength=n_holes + 1)
        small = hole_area < options.hole_area * typical_area
        small[0] = False
        foreground |= small[hole_labels]
    comp, n_comp = ndi.label(foreground, structure=_EIGHT)
    comp_area = np.bincount(comp.ravel(), minlength=n_comp + 1)
    specks = np.flatnonzero(comp_area < options.speck_area * typical_area)
    specks = specks[specks > 0]
    specks_table = _dropped_rows(comp, n_comp, specks, "speck", factor)
    if specks.size:
        is_speck = np.zeros(n_comp + 1, dtype=bool)
        is_speck[specks] = True
        foreground &= ~is_speck[comp]
    lap("holes_specks")

    # 7. split touching particles
    cut = foreground
    contrast_top = float(np.percentile(smooth[foreground], 90)) if foreground.any() else th["high"] + 1.0
    contrast = max(contrast_top - th["low"], 1e-6)
    if options.valley_width > 0 and options.valley_depth > 0 and foreground.any():
        size = max(3, int(round(options.valley_width * radius)) | 1)
        closed = _by_rows(lambda part: ndi.grey_closing(part, size=(size, size)), smooth, size + 1, threads)
        valley = ((closed - smooth) > options.valley_depth * contrast) & (smooth < th["low"] + options.valley_level * contrast)
        cut = foreground & ~valley
    full_fg = None
    if factor > 1:
        # gaps narrower than a working pixel survive in the full-resolution mask: a block
        # counts as particle only if all its pixels do
        full = bright - np.repeat(np.repeat(surface, factor, axis=0), factor, axis=1)[:height, :width] if surface is not None else bright
        full_fg = _gauss(full, max(sigma * factor / 2, 0.7), threads) > th["low"]
        cut = cut & _block_all(full_fg, factor)
    landscape = ndi.distance_transform_edt(cut).astype(np.float32)
    if options.landscape_smoothing > 0:
        # the distance transform of a jagged pixel boundary has spurious bumps along ridges
        landscape = _gauss(landscape, options.landscape_smoothing, threads) * foreground
    labels = _merge_shallow_basins(landscape, foreground, options.split_depth * radius, options.split_ratio)
    lap("split")

    # back to full resolution: nearest-neighbour labels, boundaries from the full-resolution threshold
    if factor > 1:
        labels = np.repeat(np.repeat(labels, factor, axis=0), factor, axis=1)[:height, :width]
        labels = np.where(full_fg, labels, 0)
        missing = full_fg & (labels == 0)
        if missing.any():
            # foreground pixels of blocks that were background: the label within half a
            # block (one separable max filter; as fast as a 3 x 3 one)
            reach = 2 * int(np.ceil(factor / 2)) + 1
            spread = _by_rows(lambda part: ndi.maximum_filter(part, reach), labels, reach // 2 + 1, threads)
            labels = np.where(missing, spread, labels)
        lap("upsample")
    return {"labels": labels, "th": th, "sigma": sigma, "radius": radius, "specks": specks_table}


# ----------------------------------------------------------------------------- main entry


def _segment_learned(image: np.ndarray, overlay: np.ndarray, options: SegmentOptions, lap, timings: dict) -> Segmentation:
    """The learned detector's particles (:mod:`nanoshape.segnet`), the removals of step 8 and a self-check."""
    from nanoshape.segnet import DetectOptions, detect, load_segnet, predict_levels

    model = load_segnet(options.model or None)
    levels = predict_levels(model, image)
    lap("network")
    detect_options = DetectOptions()
    labels, found = detect(levels, image.shape, model.options.target_diameter_px, detect_options)
    lap("instances")
    final, removed, kept = _removals(labels, overlay, options)
    table = pd.concat(removed, ignore_index=True) if removed else pd.DataFrame(columns=_DROPPED_COLUMNS)
    table = table.astype({"centroid_x_px": float, "centroid_y_px": float, "area_px": float, "reason": str})
    particles = pd.DataFrame({
        "particle_id": np.arange(1, kept.size + 1, dtype=np.int64),
        "segmentation_score": found["score"][kept - 1].astype(np.float64),
        "segmentation_level": found["level"][kept - 1].astype(np.int64),
    })
    flags, findings = self_check(final, particles["segmentation_score"].to_numpy(), detect_options.min_score)
    particles["segmentation_flag"] = flags
    lap("removals")
    particle = final > 0
    inside = float(np.median(image[particle])) if particle.any() else float("nan")
    outside = float(np.median(image[~particle & ~overlay])) if (~particle & ~overlay).any() else float("nan")
    polarity = "dark_field" if inside > outside else "bright_field"
    area = np.bincount(final.ravel())[1:]
    diameter = float(np.median(2 * np.sqrt(area / np.pi))) if area.size else float("nan")
    if not kept.size:
        best = max((float(level.distance.max()) for level in levels), default=0.0)
        findings.append(
            f"no particles found: the detector ran on {len(levels)} pyramid level(s) (block factors 1 to "
            f"{levels[-1].factor}); its strongest particle core reached {best:.2f} of the 0.5 needed to seed one"
            + ("" if labels.max() == 0 else f", and the {int(labels.max())} candidate(s) it found were all dropped "
               f"(see dropped.csv)")
            + "; if the particles are under ~5 px across, upsample the image; segment.method=classical tries "
              "the threshold-based segmentation instead")
    info = {
        "method": "learned",
        "polarity": polarity,
        "pyramid_levels": len(levels),
        "particles_per_level": np.bincount(particles["segmentation_level"], minlength=len(levels)).tolist(),
        "overlay_fraction": float(overlay.mean()),
        "n_particles": int(kept.size),
        "n_dropped": int(len(table)),
        "self_check": findings,
        "timings_s": timings,
    }
    return Segmentation(labels=final, dropped=table, polarity=polarity, particle_size_px=diameter, info=info,
                        particles=particles)


#: a particle is a fragment when its area is under this share of the micrograph's median...
_FRAGMENT_AREA = 0.1
#: ...and most particles being fragments, ragged or doubtful makes the micrograph doubtful
_DOUBTFUL_SHARE = 0.3


def self_check(labels: np.ndarray, scores: np.ndarray, min_score: float) -> tuple[list[str], list[str]]:
    """Flags per particle and findings per micrograph that say where a segmentation is doubtful.

    Per particle (``segmentation_flag``, "" when none): ``doubtful`` (the detector's score
    within 0.1 of its threshold), ``fragment`` (under a tenth of the area-weighted median
    particle area and touching another particle: a piece of a particle or of texture), ``ragged`` (solidity
    under 0.6 and the outline three times longer than a disc of its area: noise, not a
    crystal outline). Per micrograph: a finding naming the flag when more than 30 % of its
    particles carry it, and when a few large particles hold most of the area while
    thousands of small ones are found.

    Args:
      labels: (H, W) kept particles 1..N.
      scores: (N,) the detector's score of each particle.
      min_score: the detector's threshold.

    Returns:
      (N flags, findings).
    """
    n = int(labels.max())
    flags = [[] for _ in range(n)]
    findings: list[str] = []
    if n == 0:
        return [], findings
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.float64)
    # the median area of the particle a particle pixel belongs to: fragments, however many,
    # hold little area and do not move it
    order = np.argsort(area)
    median = float(area[order][np.searchsorted(np.cumsum(area[order]), 0.5 * area.sum())])
    touching = np.zeros(n + 1, bool)
    for a, b in ((labels[:, 1:], labels[:, :-1]), (labels[1:], labels[:-1])):
        pair = (a != b) & (a > 0) & (b > 0)
        touching[a[pair]] = True
        touching[b[pair]] = True
    solidity = _solidity(labels.astype(np.int32), np.arange(1, n + 1))
    perimeter = _perimeters(labels, n)
    ragged = (solidity < 0.6) & (perimeter > 3 * 2 * np.sqrt(np.pi * area))
    for i in range(n):
        if scores[i] < min_score + 0.1:
            flags[i].append("doubtful")
        if area[i] < _FRAGMENT_AREA * median and touching[i + 1]:
            flags[i].append("fragment")
        if ragged[i]:
            flags[i].append("ragged")
    for name, what in (("doubtful", "scored near the detector's threshold"),
                       ("fragment", "are small pieces touching other particles (fragments of a particle or of texture)"),
                       ("ragged", "have ragged outlines")):
        share = sum(name in f for f in flags) / n
        if share > _DOUBTFUL_SHARE:
            findings.append(f"{share:.0%} of the particles {what} (segmentation_flag '{name}'): check the overlay")
    large = area > 10 * median
    if n >= 1000 and large.any() and area[large].sum() > 0.5 * area.sum():
        findings.append(f"{n} particles, but {int(large.sum())} large ones hold most of the particle area: "
                        "the small ones may be texture inside the large ones; check the overlay")
    return [",".join(f) for f in flags], findings


def _perimeters(labels: np.ndarray, n: int) -> np.ndarray:
    """Pixel-edge perimeter of each particle 1..n (edges shared with another id or background)."""
    perimeter = np.zeros(n + 1)
    padded = np.pad(labels, 1)
    for a, b in ((padded[:, 1:], padded[:, :-1]), (padded[1:], padded[:-1])):
        edge = a != b
        perimeter += np.bincount(a[edge].ravel(), minlength=n + 1) + np.bincount(b[edge].ravel(), minlength=n + 1)
    return perimeter[1:]


def segment(image: np.ndarray, options: SegmentOptions = SegmentOptions()) -> Segmentation:
    """Find and separate the particles of one micrograph.

    Args:
      image: (H, W) intensities of any range and dtype (raw counts are fine), H, W >= 16.
      options: see :class:`SegmentOptions`; the defaults need no tuning.

    Returns:
      A :class:`Segmentation`: uint32 labels 1..N of the kept particles, the dropped
      candidates with their reasons, the polarity, the typical diameter and diagnostics.

    Example:
      >>> import numpy as np
      >>> from skimage.draw import disk
      >>> image = np.ones((96, 96), np.float32)
      >>> for center in [(30, 30), (30, 52), (70, 60)]:  # the first two touch
      ...     image[disk(center, 11)] = 0.3
      >>> int(segment(image).labels.max())
      3
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"segment expects a 2-D greyscale image, got shape {image.shape}")
    if min(image.shape) < 16:
        raise ValueError(f"image of shape {image.shape} is too small to segment (needs 16 x 16)")
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    threads = _threads(options.threads)

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 4)
        clock = now

    image = image.astype(np.float32, copy=False)
    finite = np.isfinite(image)
    if not finite.all():
        image = np.where(finite, image, np.median(image[finite]) if finite.any() else 0.0).astype(np.float32)
    height, width = image.shape

    # 1-2. overlays, normalisation, polarity
    overlay = find_overlays(image) if options.remove_overlays else np.zeros(image.shape, dtype=bool)
    usable = finite & ~overlay
    if usable.sum() < 256:
        usable = finite
    stride = max(1, int(np.sqrt(image.size / 1_000_000)))  # percentiles from <= ~1 Mpx
    lo, hi = np.percentile(image[::stride, ::stride][usable[::stride, ::stride]], [0.5, 99.5])
    if not hi > lo:
        # a constant image (blank, saturated, or all graphics): nothing to find
        return Segmentation(
            labels=np.zeros(image.shape, np.uint32), dropped=pd.DataFrame(
                {"centroid_x_px": pd.Series(dtype=float), "centroid_y_px": pd.Series(dtype=float),
                 "area_px": pd.Series(dtype=float), "reason": pd.Series(dtype=str)}),
            polarity="bright_field" if options.polarity == "auto" else options.polarity, particle_size_px=float("nan"),
            info={"no_contrast": True, "n_particles": 0, "n_dropped": 0, "overlay_fraction": float(overlay.mean()),
                  "timings_s": timings},
        )
    if options.method == "learned":
        return _segment_learned(image, overlay, options, lap, timings)
    normalised = np.clip((image - lo) / max(hi - lo, 1e-12), 0.0, 1.0).astype(np.float32)
    if options.polarity == "auto":
        polarity, polarity_score = detect_polarity(normalised, usable)
    else:
        polarity, polarity_score = options.polarity, float("nan")
    bright = 1.0 - normalised if polarity == "bright_field" else normalised
    # graphics take the background's value so smoothing does not spread them
    if not usable.all():
        bright = np.where(usable, bright, np.float32(np.median(bright[::stride, ::stride][usable[::stride, ::stride]])))
    lap("overlays_polarity")

    # 3. size and working resolution
    if options.particle_diameter_px is not None:
        radius0 = float(options.particle_diameter_px) / 2
    else:
        radius0 = estimate_radius(bright, usable, threads=threads)
    factor = 1
    if options.working_radius_px > 0:
        factor = max(1, int(radius0 // options.working_radius_px))
    lap("size")
    result = _segment_at(bright, usable, radius0, factor, options, lap, threads)
    if factor > 1 and result["radius"] < options.min_inscribed_px:
        # thin particles (rods, plates seen edge-on): the LoG scale follows their length,
        # so analyse again at a resolution where their width is resolved
        factor = max(1, int(factor * result["radius"] / options.min_inscribed_px))
        result = _segment_at(bright, usable, radius0, factor, options, lap, threads)
    labels, th, sigma, radius = result["labels"], result["th"], result["sigma"], result["radius"]
    dropped = [result["specks"]]
    labels = labels.astype(np.int32, copy=False)

    # 8. removals
    final, removed, kept = _removals(labels.astype(np.int32, copy=False), overlay, options)
    kept_count = int(kept.size)
    dropped.extend(removed)
    lap("removals")

    table = pd.concat([d for d in dropped if len(d)], ignore_index=True) if any(len(d) for d in dropped) else pd.DataFrame(columns=_DROPPED_COLUMNS)
    table = table.astype({"centroid_x_px": float, "centroid_y_px": float, "area_px": float, "reason": str})
    diameter = 2.0 * radius * factor
    info = {
        "polarity": polarity,
        "polarity_score": polarity_score,
        "radius_log_px": radius0,
        "radius_inscribed_px": radius * factor,
        "working_factor": factor,
        "smoothing_sigma_px": sigma * factor,
        "threshold_low": th["low"],
        "threshold_high": th["high"],
        "threshold_otsu": th["otsu"],
        "background_level": th["background"],
        "sparse": th["sparse"],
        "overlay_fraction": float(overlay.mean()),
        "n_particles": kept_count,
        "n_dropped": int(len(table)),
        "timings_s": timings,
    }
    return Segmentation(labels=final, dropped=table, polarity=polarity, particle_size_px=float(diameter), info=info)
