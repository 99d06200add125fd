"""Segment a TEM micrograph into nanocrystal instances, splitting touching crystals.

Two methods (``SegmentOptions.method``):

- ``learned`` (the default): the detector of :mod:`nanoshape.segnet`, a small U-Net run over
  an image pyramid so that every particle is taken at the scale where it is best seen; then
  the removals and a self-check (:func:`self_check`) that flags doubtful particles.
- ``classical``: whole-image thresholds and a marker watershed (the seed paper's), every
  length scaled by the typical particle radius found in the image (scale-normalised LoG,
  Lindeberg 1998); fast and exact on clean bright-field images, fragile on porous, textured
  and agglomerated particles. Overlays (scale bars, text, data bands) are found in
  :mod:`nanoshape.segment.overlays`; normalisation, polarity, size and thresholds in
  :mod:`nanoshape.segment.threshold`; flattening, splitting and removals in
  :mod:`nanoshape.segment.split`. docs/methods.md, "How particles are found", gives the steps.

Both remove particles touching the border or lying mostly on an overlay, each with its
reason. :func:`segment` is a pure function of the image and the options; it never prints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from nanoshape.segment.filters import _solidity, _threads
from nanoshape.segment.overlays import find_overlays
from nanoshape.segment.split import _DROPPED_COLUMNS, DROP_REASONS, _removals, _segment_at
from nanoshape.segment.threshold import detect_polarity, estimate_radius

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
      views: (learned) how many mirror images of the micrograph the detector sees, its
        outputs averaged (1, 2, 4 or 8; :func:`nanoshape.segnet._run_views`). Two against
        one: development F1 0.874 -> 0.881, rendered hard 0.797 -> 0.814, validation 0.841 ->
        0.840 (median per image 0.889 -> 0.899) at 1.33x the segmentation's time; one by
        default, as the validation part did not gain.
      zoom_small_particles: (learned) where most of what the detector sees as particle is
        under ~10 px across, also run it on the micrograph zoomed twice and take those
        particles from there (:func:`nanoshape.segnet.predict_levels`). Rendered 4 / 6 / 8 px
        spheres: F1 0.02 / 0.66 / 0.80 without, 0.66 / 0.80 / 0.83 with; off by default, as
        on the annotated micrographs where it came on (grainy carbon film) it took the
        film's grain for particles.
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
    views: int = 1
    zoom_small_particles: bool = False
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
        if self.views not in (1, 2, 4, 8):
            raise ValueError(f"SegmentOptions.views must be 1, 2, 4 or 8, got {self.views}")
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


def _segment_learned(image: np.ndarray, overlay: np.ndarray, options: SegmentOptions, lap, timings: dict) -> Segmentation:
    """The learned detector's particles (:mod:`nanoshape.segnet`), the removals of step 8 and a self-check."""
    from nanoshape.segnet import DetectOptions, detect, load_segnet, predict_levels

    model = load_segnet(options.model or None)
    levels = predict_levels(model, image, zoom=options.zoom_small_particles, views=options.views)
    lap("network")
    detect_options = DetectOptions()
    labels, found = detect(levels, image.shape, model.options.target_diameter_px, detect_options)
    lap("instances")
    final, removed, kept = _removals(labels, overlay, options)
    table = pd.concat(removed, ignore_index=True) if removed else pd.DataFrame(columns=_DROPPED_COLUMNS)
    table = table.astype({"centroid_x_px": float, "centroid_y_px": float, "area_px": float, "reason": str})
    # the pyramid's levels are consecutive powers of two after the zoomed level, if any, which counts as level 0
    zoomed = int(levels[0].factor < 1)
    pyramid = len(levels) - zoomed
    particles = pd.DataFrame({
        "particle_id": np.arange(1, kept.size + 1, dtype=np.int64),
        "segmentation_score": found["score"][kept - 1].astype(np.float64),
        "segmentation_level": np.maximum(found["level"][kept - 1].astype(np.int64) - zoomed, 0),
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
            f"no particles found: the detector ran on {pyramid} pyramid level(s) (block factors 1 to "
            f"{levels[-1].factor}); its strongest particle core reached {best:.2f} of the 0.5 needed to seed one"
            + ("" if labels.max() == 0 else f", and the {int(labels.max())} candidate(s) it found were all dropped "
               f"(see dropped.csv)")
            + "; if the particles are under ~5 px across, upsample the image; segment.method=classical tries "
              "the threshold-based segmentation instead")
    info = {
        "method": "learned",
        "polarity": polarity,
        "pyramid_levels": pyramid,
        "zoomed": bool(zoomed),
        "particles_per_level": np.bincount(particles["segmentation_level"], minlength=pyramid).tolist(),
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
    # ragged: the outline three times a disc's of its area and solidity under 0.6; the convex
    # hulls only for the few long outlines (all of them cost 0.4 s on a 2048^2 micrograph)
    long = _perimeters(labels, n) > 3 * 2 * np.sqrt(np.pi * area)
    ragged = np.zeros(n, bool)
    if long.any():
        ids = np.flatnonzero(long) + 1
        only = np.zeros(n + 1, np.int32)
        only[ids] = ids
        ragged[long] = _solidity(only[labels], ids) < 0.6
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
    if factor > 1 and result.radius < options.min_inscribed_px:
        # thin particles (rods, plates seen edge-on): the LoG scale follows their length,
        # so analyse again at a resolution where their width is resolved
        factor = max(1, int(factor * result.radius / options.min_inscribed_px))
        result = _segment_at(bright, usable, radius0, factor, options, lap, threads)
    labels, th, sigma, radius = result.labels, result.thresholds, result.sigma, result.radius
    dropped = [result.specks]
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
        "threshold_low": th.low,
        "threshold_high": th.high,
        "threshold_otsu": th.otsu,
        "background_level": th.background,
        "sparse": th.sparse,
        "overlay_fraction": float(overlay.mean()),
        "n_particles": kept_count,
        "n_dropped": int(len(table)),
        "timings_s": timings,
    }
    return Segmentation(labels=final, dropped=table, polarity=polarity, particle_size_px=float(diameter), info=info)
