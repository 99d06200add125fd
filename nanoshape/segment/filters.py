"""Whole-image filters and per-label measures shared by the segmentation stages.

The filters run on bands of rows in threads (:func:`_by_rows`, identical results) and on
block means (:func:`_block_mean`), the working resolution of the classical method.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage as ndi

_EIGHT = np.ones((3, 3), dtype=bool)


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


def _solidity(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Area / convex-hull area of the given ids (hull of the pixel squares)."""
    from nanoshape.features import convex_areas

    present, hull = convex_areas(labels)
    area = np.bincount(labels.ravel(), minlength=int(labels.max()) + 1)
    by_id = np.ones(int(labels.max()) + 1)
    by_id[present] = area[present] / np.maximum(hull, 1.0)
    return by_id[ids]
