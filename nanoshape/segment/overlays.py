"""Step 1 of segmentation: figure graphics (data bands, scale bars and their text, label
boxes, panel letters) found on the raw intensities, to be kept out of every statistic."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from nanoshape.scalebar import is_bar_box
from nanoshape.segment.filters import _EIGHT, _solidity


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

