"""What the report shows of one micrograph, saved while it is analysed: ``parts/views/<stem>.npz``.

The report reads only the run directory, so each micrograph's stage leaves it what its
figures draw (compressed: about 0.24 MB of preview for a noisy 512 x 512 micrograph and
4.5 kB a particle; 0.5 to 1 MB for each bundled example):

- ``image_shape``: the micrograph's (height, width) in px;
- ``preview``: the micrograph in grey (uint8, 0.5-99.5 percentile stretch), shrunk by a
  whole factor ``preview_step`` to at most :data:`PREVIEW_LONG_SIDE_PX` on its long side;
- ``particle_id``, ``crops``: each particle's CNN crop (:mod:`nanoshape.crop`), intensity
  and mask as uint8, the intensity over the range the montages show (:data:`CROP_RANGE`);
- ``windows``: each crop's window in the micrograph (centre x, centre y, side; px);
- ``outlines``: each particle's fitted shape as a polygon of :data:`OUTLINE_POINTS`
  vertices (x, y; px of the micrograph, pixel centres at integers), placed at the
  particle's area and centroid as the Jaccard columns place it; NaN without parameters.

Reading (:func:`read_views`, :func:`crop_outlines`) needs numpy only; making them
(:func:`make_views`) imports JAX for the outlines.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

__all__ = ["PREVIEW_LONG_SIDE_PX", "OUTLINE_POINTS", "CROP_RANGE", "Views", "preview", "fitted_outlines",
           "make_views", "write_views", "read_views", "crop_outlines"]

#: the preview's long side at most (the report draws a micrograph 900 px wide)
PREVIEW_LONG_SIDE_PX = 1024
#: vertices of each fitted outline
OUTLINE_POINTS = 128
#: the normalised intensities (background 0, particle 1) a crop keeps: what the montages show
CROP_RANGE = (-0.2, 1.2)


class Views(NamedTuple):
    """One micrograph's views (see the module docstring for each field)."""

    image_shape: np.ndarray
    preview: np.ndarray
    preview_step: int
    particle_id: np.ndarray
    crops: np.ndarray
    windows: np.ndarray
    outlines: np.ndarray


def preview(pixels: np.ndarray, long_side_px: int = PREVIEW_LONG_SIDE_PX) -> tuple[np.ndarray, int]:
    """The micrograph in grey, shrunk by block means: ``(uint8 (h, w), step)``, step micrograph px per preview px.

    The 0.5 and 99.5 percentiles of the image (of every pixel up to 2048 px a side, of a regular
    sample of about 2048 x 2048 beyond) go to 0 and 255. The last block of a side that
    ``step`` does not divide is padded with the edge's values.
    """
    image = np.asarray(pixels, np.float32)
    if image.ndim != 2:
        raise ValueError(f"preview expects a 2-D micrograph, got shape {image.shape}")
    stride = max(1, max(image.shape) // 2048)
    lo, hi = np.percentile(image[::stride, ::stride], [0.5, 99.5])
    step = max(1, math.ceil(max(image.shape) / long_side_px))
    if step > 1:
        height, width = (-(-n // step) * step for n in image.shape)
        image = np.pad(image, ((0, height - image.shape[0]), (0, width - image.shape[1])), mode="edge")
        image = image.reshape(height // step, step, width // step, step).mean(axis=(1, 3))
    grey = np.clip((image - lo) / max(hi - lo, 1e-12), 0, 1)
    return np.round(grey * 255).astype(np.uint8), step


def fitted_outlines(particles: pd.DataFrame, labels: np.ndarray, *, points: int = OUTLINE_POINTS) -> np.ndarray:
    """Each particle's fitted shape as a polygon on its micrograph: (n, points, 2) x, y in px, float32.

    The shape R(theta) of the table's parameters (eq. 1's ``p, d, l_ratio, phi_rad``, or
    another family's, named by ``shape_family``) is placed at the particle's area (pixels of
    its label) and centroid (``centroid_x_px``, ``centroid_y_px``) by
    :func:`nanoshape.family.placement`; vertex k lies at angle ``theta_k = 2 pi k / points``
    from +x towards +y (rows grow downwards), the convention of :mod:`nanoshape.render`.
    A particle without parameters gets NaN.
    """
    import jax.numpy as jnp

    from nanoshape.batching import geometric_size, pad_rows
    from nanoshape.columns import table_column
    from nanoshape.family import table_family

    n = len(particles)
    out = np.full((n, points, 2), np.nan, np.float32)
    family = table_family(particles)
    columns = [table_column(c) for c in family.columns]  # the table's angles carry their unit
    if n == 0 or not all(c in particles for c in columns):
        return out
    ids = particles["particle_id"].to_numpy(np.int64)
    area_px = _pixel_counts(np.asarray(labels), int(ids.max()) + 1)[ids]
    values = particles[columns].to_numpy(np.float64)
    centroids = particles[["centroid_x_px", "centroid_y_px"]].to_numpy(np.float32)
    ok = np.flatnonzero(np.isfinite(values).all(axis=1) & (area_px > 0))
    if not len(ok):
        return out
    size = geometric_size(len(ok), smallest=64, factor=4)  # a few compiled sizes for every micrograph
    rows = pad_rows(np.concatenate([values[ok], area_px[ok, None], centroids[ok]], axis=1), size)
    polygons = np.asarray(_outline_function(family, points)(jnp.asarray(rows, jnp.float32)))
    out[ok] = polygons[: len(ok)]
    return out


def _pixel_counts(labels: np.ndarray, minlength: int) -> np.ndarray:
    """Pixels of each label id, counted in bands of rows (no 64-bit copy of a large label image)."""
    counts = np.zeros(max(minlength, int(labels.max(initial=0)) + 1), np.int64)
    band = max(1, (1 << 22) // max(labels.shape[1], 1))
    for start in range(0, labels.shape[0], band):
        counts += np.bincount(labels[start : start + band].ravel().astype(np.int64), minlength=len(counts))
    return counts


@functools.cache
def _outline_function(family, points: int):
    """Jitted outlines of rows (parameters in ``family.columns`` order, area, centroid x, centroid y)."""
    import jax
    import jax.numpy as jnp

    from nanoshape.family import placement

    theta = jnp.arange(points, dtype=jnp.float32) * jnp.float32(2 * np.pi / points)

    def one(row):
        k = len(family.columns)
        shape = family.params_type(*(row[i].astype(jnp.int32) if c == family.discrete else row[i]
                                     for i, c in enumerate(family.columns)))
        center, scale = placement(shape, row[k], row[k + 1 : k + 3])
        r = scale * family.radius(theta, shape)
        return jnp.stack([center[0] + r * jnp.cos(theta), center[1] + r * jnp.sin(theta)], axis=-1)

    return jax.jit(jax.vmap(one))


def make_views(pixels: np.ndarray, labels: np.ndarray, particles: pd.DataFrame, crops: np.ndarray, *,
               crop_options) -> Views:
    """One micrograph's views from its pixels, labels, particle table and crops (rows of ``particles``).

    Args:
      pixels: (H, W) micrograph intensities.
      labels: (H, W) instance labels.
      particles: one row per kept particle (``particle_id``, centroids, shape parameters).
      crops: (n, S, S, C) crops of those particles, cut with ``crop_options``.
      crop_options: the :class:`nanoshape.crop.CropOptions` the crops were cut with.
    """
    from nanoshape.crop import crop_windows

    ids = particles["particle_id"].to_numpy(np.int64)
    grey, step = preview(pixels)
    lo, hi = CROP_RANGE
    quantised = np.empty((len(ids), *np.shape(crops)[1:3], 2), np.uint8)
    if len(ids):
        quantised[..., 0] = np.round(np.clip((crops[..., 0] - lo) / (hi - lo), 0, 1) * 255)
        quantised[..., 1] = np.round(np.clip(crops[..., 1], 0, 1) * 255)
    windows = crop_windows(labels, ids, crop_options).astype(np.float32)
    return Views(np.asarray(np.shape(pixels), np.int64), grey, step, ids, quantised, windows,
                 fitted_outlines(particles, labels))


def write_views(path: str | os.PathLike, views: Views) -> None:
    """Write views to an ``.npz`` file (compressed) at ``path`` (any name: written through a handle)."""
    with open(path, "wb") as handle:
        np.savez_compressed(handle, **views._asdict())


def read_views(path: str | os.PathLike) -> Views | None:
    """The views saved at ``path``, or None where there are none (a run of an older nanoshape) or they cannot be read."""
    try:
        with np.load(Path(path), allow_pickle=False) as saved:
            views = Views(**{name: saved[name] for name in Views._fields})
    except (OSError, ValueError, KeyError):
        return None
    return views._replace(preview_step=int(views.preview_step))


def crop_outlines(views: Views) -> np.ndarray:
    """The outlines in their crops' pixel coordinates: (n, points, 2) x, y (pixel centres at integers).

    :func:`nanoshape.crop.crop_particle` maps the window (centre c, side s) onto S pixels, so a
    micrograph coordinate x lands at ``(x - c) S / s + S / 2 - 1/2``.
    """
    size = views.crops.shape[1]
    centre, side = views.windows[:, None, :2], views.windows[:, None, 2:]
    return (views.outlines - centre) * (size / side) + size / 2 - 0.5
