"""Steps 4-8 of the classical segmentation at one working resolution (flatten, threshold,
holes and specks, watershed splitting) and the removals both methods share."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from nanoshape.labels import border_ids
from nanoshape.segment.filters import _EIGHT, _block_all, _block_mean, _by_rows, _gauss
from nanoshape.segment.threshold import Thresholds, _background_surface, _inscribed_radius, _thresholds

if TYPE_CHECKING:
    from nanoshape.segment import SegmentOptions

#: Reasons a candidate particle can be dropped, in the order the checks run.
DROP_REASONS = (
    "speck",
    "scale bar/text",
    "joined to scale bar/text",
    "touches border",
)

_DROPPED_COLUMNS = ["centroid_x_px", "centroid_y_px", "area_px", "reason"]


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


class WorkingResult(NamedTuple):
    """What :func:`_segment_at` found at one working resolution."""

    labels: np.ndarray  # (H, W) integer ids of the candidates at full resolution, before the removals
    thresholds: Thresholds  # of the working-resolution image
    sigma: float  # smoothing width (working px)
    radius: float  # typical inscribed radius (working px)
    specks: pd.DataFrame  # rows of the dropped table for the specks removed


def _segment_at(bright: np.ndarray, usable: np.ndarray, radius0: float, factor: int, options: SegmentOptions, lap,
                threads: int = 1) -> WorkingResult:
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
    if th.sparse and options.sparse_smoothing * r_work0 > sigma:
        sigma = options.sparse_smoothing * r_work0
        smooth = _gauss(work, sigma, threads)
        th = _thresholds(smooth[work_usable], fraction=options.threshold_fraction, sparse_sigmas=options.sparse_sigmas,
                         sparse_low=options.sparse_low, sparse=True)
    candidate = smooth > th.low
    comp, n_comp = ndi.label(candidate)
    strong = np.zeros(n_comp + 1, dtype=bool)
    strong[comp[smooth > th.high]] = True
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
    contrast_top = float(np.percentile(smooth[foreground], 90)) if foreground.any() else th.high + 1.0
    contrast = max(contrast_top - th.low, 1e-6)
    if options.valley_width > 0 and options.valley_depth > 0 and foreground.any():
        size = max(3, int(round(options.valley_width * radius)) | 1)
        closed = _by_rows(lambda part: ndi.grey_closing(part, size=(size, size)), smooth, size + 1, threads)
        valley = ((closed - smooth) > options.valley_depth * contrast) & (smooth < th.low + options.valley_level * contrast)
        cut = foreground & ~valley
    full_fg = None
    if factor > 1:
        # gaps narrower than a working pixel survive in the full-resolution mask: a block
        # counts as particle only if all its pixels do
        full = bright - np.repeat(np.repeat(surface, factor, axis=0), factor, axis=1)[:height, :width] if surface is not None else bright
        full_fg = _gauss(full, max(sigma * factor / 2, 0.7), threads) > th.low
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
    return WorkingResult(labels=labels, thresholds=th, sigma=sigma, radius=radius, specks=specks_table)

