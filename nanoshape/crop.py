"""Cut one particle out of an image into a normalised, fixed-size crop for the CNN.

One function serves rendered training particles and segmented real particles, so the
CNN sees the same kind of input in training and in use: a square window around the
particle's mask, with a margin, resampled (anti-aliased) to ``size x size``, with two
channels:

0. intensity normalised so the background is 0 and the particle 1, whatever the contrast
   polarity (bright or dark field), with neighbouring particles blanked to background;
1. the particle's mask, resampled the same way;
2. (with ``CropOptions.context`` > 0) the intensity, normalised and blanked the same way, of
   a window ``context`` times wider around the same centre: what lies beyond the mask. A
   segmentation keeps the core of a thin-armed star and loses the arms, so a window sized
   from the mask cuts them off; this channel keeps them in view. Its pixels beyond the
   image's edge are background (0).

In channels 0 and 1, pixels beyond the image's edge are resampled as zeros and count in the
background estimate, as the shipped model was trained; a rendered training crop larger
than its canvas therefore has a wrong background there (real crops do not: ``crop_labels``
pads with the image's median). Mend it with the next model, which must be trained with it.

:func:`crop_particle` is plain JAX on one particle (jit at the edge, vmap at the call site).
:func:`crop_labels` cuts every particle of a labelled micrograph with it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from nanoshape.batching import geometric_size

__all__ = ["CropOptions", "crop_particle", "crop_labels", "particle_box", "window_sides", "crop_windows"]


@dataclass(frozen=True)
class CropOptions:
    """How particles are cut for the CNN.

    Attributes:
      size: side of the square crop in pixels (the CNN input size).
      margin: fraction of the particle's larger bounding-box side added on each side.
      context: if > 0, a third channel shows a window this many times wider than the main
        one (see the module docstring); 0 = two channels.
    """

    size: int = 64
    margin: float = 0.15
    context: float = 0.0

    def __post_init__(self):
        if self.context != 0 and self.context < 1:
            raise ValueError(f"crop.context must be 0 (off) or >= 1, got {self.context}")

    @property
    def channels(self) -> int:
        """Channels of a crop: intensity and mask, and the context intensity if any."""
        return 3 if self.context > 0 else 2


def particle_box(mask: jax.Array, margin: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Square window around a mask: centre (y, x) and side, in pixels of the mask's grid.

    The window is centred on the bounding box of ``mask > 0.5`` and its side is the larger
    box side times ``1 + 2 margin``. An empty mask gives the whole grid.
    """
    height, width = mask.shape
    inside = mask > 0.5
    rows = jnp.any(inside, axis=1)
    cols = jnp.any(inside, axis=0)
    empty = ~jnp.any(rows)
    y0 = jnp.argmax(rows)
    y1 = height - 1 - jnp.argmax(rows[::-1])
    x0 = jnp.argmax(cols)
    x1 = width - 1 - jnp.argmax(cols[::-1])
    center_y = jnp.where(empty, (height - 1) / 2, (y0 + y1) / 2).astype(jnp.float32)
    center_x = jnp.where(empty, (width - 1) / 2, (x0 + x1) / 2).astype(jnp.float32)
    side = jnp.maximum(y1 - y0 + 1, x1 - x0 + 1).astype(jnp.float32) * (1 + 2 * margin)
    side = jnp.where(empty, float(max(height, width)), side)
    return center_y, center_x, side


def _resample(image: jax.Array, center_y, center_x, side, size: int) -> jax.Array:
    """Resample the square window (centre, side) of ``image`` to ``size x size``, anti-aliased."""
    scale = size / side
    # scale_and_translate maps continuous input coordinates (pixel i spans [i, i + 1)) to
    # output ones by out = scale * in + translation; the window's top-left edge goes to 0.
    translation = jnp.stack([-scale * (center_y + 0.5 - side / 2), -scale * (center_x + 0.5 - side / 2)])
    return jax.image.scale_and_translate(
        image, (size, size), (0, 1), jnp.stack([scale, scale]), translation, method="linear", antialias=True
    )


def crop_particle(
    image: jax.Array,
    mask: jax.Array,
    exclude: jax.Array | None = None,
    *,
    options: CropOptions = CropOptions(),
) -> jax.Array:
    """Cut one particle into a normalised two-channel crop.

    Args:
      image: (H, W) float intensities (any units, either contrast polarity).
      mask: (H, W) particle mask in [0, 1] (hard or soft; > 0.5 is inside).
      exclude: optional (H, W) mask of other particles, blanked to background.
      options: crop size and margin (static).

    Returns:
      (size, size, options.channels) float32: normalised intensity (background 0, particle
      1), mask, and with ``options.context`` the normalised intensity of the wider window.
    """
    if image.ndim != 2 or mask.shape != image.shape:
        raise ValueError(f"crop_particle expects 2-D image and mask of one shape, got {image.shape} and {mask.shape}")
    image = image.astype(jnp.float32)
    mask = mask.astype(jnp.float32)
    center_y, center_x, side = particle_box(mask, options.margin)
    size = options.size
    image_crop = _resample(image, center_y, center_x, side, size)
    mask_crop = _resample(mask, center_y, center_x, side, size)
    inside = mask_crop > 0.5
    outside = mask_crop < 0.02
    if exclude is not None:
        exclude_crop = _resample(exclude.astype(jnp.float32), center_y, center_x, side, size) > 0.02
        outside = outside & ~exclude_crop
    foreground = _masked_mean(image_crop, inside)
    # the window is mostly background; where it holds none (a particle filling it), use the image's mean
    background = jnp.where(jnp.any(outside), _masked_mean(image_crop, outside), jnp.mean(image))
    contrast = foreground - background
    contrast = jnp.where(jnp.abs(contrast) < 1e-6, jnp.where(contrast < 0, -1e-6, 1e-6), contrast)
    normalised = jnp.clip((image_crop - background) / contrast, -0.5, 1.5)
    if exclude is not None:
        normalised = jnp.where(exclude_crop & ~inside, 0.0, normalised)
    channels = [normalised, mask_crop]
    if options.context > 0:
        wide = options.context * side
        wide_crop = jnp.clip((_resample(image, center_y, center_x, wide, size) - background) / contrast, -0.5, 1.5)
        keep = _resample(jnp.ones_like(image), center_y, center_x, wide, size) > 0.5
        if exclude is not None:
            neighbours = _resample(exclude.astype(jnp.float32), center_y, center_x, wide, size) > 0.02
            own = _resample(mask, center_y, center_x, wide, size) > 0.5
            keep = keep & ~(neighbours & ~own)
        channels.append(jnp.where(keep, wide_crop, 0.0))
    return jnp.stack(channels, axis=-1)


def _masked_mean(values: jax.Array, where: jax.Array) -> jax.Array:
    weights = where.astype(values.dtype)
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


#: Window sides (px) real particles are padded to, so each bucket compiles once.
_WINDOW_BUCKETS = (32, 64, 128, 256, 512, 1024, 2048, 4096)


def crop_labels(
    image: np.ndarray,
    labels: np.ndarray,
    particle_ids: np.ndarray | None = None,
    *,
    options: CropOptions = CropOptions(),
    max_chunk: int = 256,
) -> np.ndarray:
    """Crop every labelled particle of a micrograph with :func:`crop_particle`.

    Each particle's square window (with margin) is cut on the host, padded to one of a few
    bucket sizes (so the jitted crop compiles once per bucket, not per particle) and cropped
    in vmapped chunks. Pixels beyond the image edge are padded with the image's median and
    count as background.

    Args:
      image: (H, W) micrograph intensities.
      labels: (H, W) integer instance labels, 0 = background.
      particle_ids: the ids to crop, in output order (default: all ids present, sorted).
      options: crop size and margin.
      max_chunk: most particles per vmapped call (fewer for large windows, to bound memory).

    Returns:
      (n, size, size, options.channels) float32 crops.
    """
    image = np.asarray(image, np.float32)
    labels = np.asarray(labels)
    if particle_ids is None:
        particle_ids = np.unique(labels[labels > 0])
    particle_ids = np.asarray(particle_ids)
    out = np.zeros((len(particle_ids), options.size, options.size, options.channels), np.float32)
    if len(particle_ids) == 0:
        return out
    centers_y, centers_x, box_sides = _boxes(labels, particle_ids)
    fill = float(np.median(image[:: max(1, image.shape[0] // 1024), :: max(1, image.shape[1] // 1024)]))
    # windows are cut chunk by chunk (holding every window of a large micrograph at once
    # would take several times the micrograph's own memory)
    by_bucket: dict[int, list[tuple[int, int, int, int]]] = {}
    for row, pid in enumerate(particle_ids):
        cy, cx = centers_y[row], centers_x[row]
        side = box_sides[row] * (1 + 2 * options.margin) * max(options.context, 1.0) + 2
        bucket = next((b for b in _WINDOW_BUCKETS if b >= side), None)
        if bucket is None:
            bucket = int(2 ** np.ceil(np.log2(side)))
        by_bucket.setdefault(bucket, []).append((row, int(pid), int(round(cy - bucket / 2)), int(round(cx - bucket / 2))))
    for bucket, items in by_bucket.items():
        chunk = int(np.clip(2**22 // bucket**2, 1, max_chunk))
        for start in range(0, len(items), chunk):
            part = items[start : start + chunk]
            n = len(part)
            # pad the count to a power of four: a handful of compiled shapes per bucket
            n_padded = min(chunk, geometric_size(n, smallest=1, factor=4))
            stack = [np.zeros((n_padded, bucket, bucket), np.float32) for _ in range(3)]
            for j, (_, pid, y0, x0) in enumerate(part):
                win_image, win_labels = _window(image, labels, y0, x0, bucket, fill)
                stack[0][j] = win_image
                stack[1][j] = win_labels == pid
                stack[2][j] = (win_labels != pid) & (win_labels > 0)
            crops = _crop_batch(*stack, options=options)
            out[[r for r, _, _, _ in part]] = np.asarray(crops)[:n]
    return out


def _boxes(labels: np.ndarray, particle_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bounding-box centre (y, x) and larger side (px) of each particle id in a label image."""
    from scipy import ndimage

    if labels.dtype == np.uint32 and (labels.size == 0 or labels.max() < 2**31):
        searchable = labels.view(np.int32)  # same ids, no copy (find_objects wants signed ints)
    elif labels.dtype.kind == "u":
        searchable = labels.astype(np.int64)
    else:
        searchable = labels
    slices = ndimage.find_objects(searchable)
    out = np.zeros((3, len(particle_ids)), np.float64)
    for row, pid in enumerate(np.asarray(particle_ids)):
        sl = slices[int(pid) - 1] if 0 < int(pid) <= len(slices) else None
        if sl is None:
            raise ValueError(f"particle id {pid} is not in the label image")
        out[:, row] = ((sl[0].start + sl[0].stop - 1) / 2, (sl[1].start + sl[1].stop - 1) / 2,
                       max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start))
    return out[0], out[1], out[2]


def window_sides(labels: np.ndarray, particle_ids: np.ndarray, options: CropOptions = CropOptions()) -> np.ndarray:
    """Side (px of the micrograph) of each particle's crop window, as :func:`crop_labels` cuts it.

    A window smaller than ``options.size`` was upsampled into its crop
    (:func:`nanoshape.imagefit.fit_image` weighs such crops' pixels accordingly).
    """
    return crop_windows(labels, particle_ids, options)[:, 2]


def crop_windows(labels: np.ndarray, particle_ids: np.ndarray, options: CropOptions = CropOptions()) -> np.ndarray:
    """Each particle's crop window in the micrograph, as :func:`crop_labels` cuts it: (n, 3) centre x,
    centre y and side, in px (pixel centres at integers)."""
    centers_y, centers_x, box_sides = _boxes(np.asarray(labels), particle_ids)
    return np.stack([centers_x, centers_y, box_sides * (1 + 2 * options.margin)], axis=1)


def _window(image, labels, y0, x0, side, fill):
    """The (side x side) window with top-left (y0, x0), padded beyond the image edges."""
    height, width = image.shape
    win_image = np.full((side, side), fill, np.float32)
    win_labels = np.zeros((side, side), labels.dtype)
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + side, height), min(x0 + side, width)
    if ye > ys and xe > xs:
        win_image[ys - y0 : ye - y0, xs - x0 : xe - x0] = image[ys:ye, xs:xe]
        win_labels[ys - y0 : ye - y0, xs - x0 : xe - x0] = labels[ys:ye, xs:xe]
    return win_image, win_labels


@functools.partial(jax.jit, static_argnames=("options",))
def _crop_batch(images, masks, excludes, *, options: CropOptions):
    return jax.vmap(lambda i, m, e: crop_particle(i, m, e, options=options))(images, masks, excludes)
