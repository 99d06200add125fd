"""The crop function shared by rendered and real particles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nanoshape.crop import CropOptions, crop_labels, crop_particle, particle_box
from nanoshape.render import Imaging, render
from nanoshape.shape import ShapeParams

SHAPE = ShapeParams(jnp.float32(4.0), jnp.int32(2), jnp.float32(2.0), jnp.float32(0.5))


def rendered(center=(40.3, 37.8), scale=14.0, imaging=Imaging(), size=96, key=0):
    image, coverage = render(jax.random.key(key), SHAPE, jnp.asarray(center, jnp.float32), jnp.float32(scale),
                             height=size, width=size, imaging=imaging)
    return np.asarray(image), (np.asarray(coverage) > 0.5).astype(np.float32)


def test_box_is_centred_on_the_mask_with_margin():
    mask = np.zeros((50, 60), np.float32)
    mask[10:20, 30:50] = 1
    cy, cx, side = particle_box(jnp.asarray(mask), 0.25)
    assert (float(cy), float(cx)) == (14.5, 39.5)
    assert float(side) == pytest.approx(20 * 1.5)


def test_crop_normalises_intensity_and_keeps_the_mask_centred():
    image, mask = rendered()
    crop = np.asarray(crop_particle(jnp.asarray(image), jnp.asarray(mask)))
    assert crop.shape == (64, 64, 2)
    inside, outside = crop[..., 1] > 0.9, crop[..., 1] < 0.01
    assert crop[..., 0][inside].mean() == pytest.approx(1.0, abs=0.1)
    assert crop[..., 0][outside].mean() == pytest.approx(0.0, abs=0.1)
    # the mask's bounding box spans 1 / (1 + 2 margin) of the crop, centred
    rows, cols = np.nonzero(crop[..., 1] > 0.5)
    extent = max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
    assert extent == pytest.approx(64 / 1.3, abs=2.5)
    assert (rows.min() + rows.max()) / 2 == pytest.approx(31.5, abs=1.5)
    assert (cols.min() + cols.max()) / 2 == pytest.approx(31.5, abs=1.5)


def test_crop_is_polarity_invariant():
    bright, mask = rendered()
    dark, _ = rendered(imaging=Imaging(dark_field=True))
    a = np.asarray(crop_particle(jnp.asarray(bright), jnp.asarray(mask)))
    b = np.asarray(crop_particle(jnp.asarray(dark), jnp.asarray(mask)))
    np.testing.assert_allclose(a[..., 1], b[..., 1])
    inside = a[..., 1] > 0.9
    assert np.abs(a[..., 0][inside].mean() - b[..., 0][inside].mean()) < 0.1


def test_crop_is_translation_invariant():
    # large enough that the context window (3x) stays on the image before and after the shift
    image, mask = rendered(center=(120.3, 117.8), size=256)
    shifted_image = np.roll(image, (7, -5), axis=(0, 1))
    shifted_mask = np.roll(mask, (7, -5), axis=(0, 1))
    a = crop_particle(jnp.asarray(image), jnp.asarray(mask))
    b = crop_particle(jnp.asarray(shifted_image), jnp.asarray(shifted_mask))
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_crop_labels_cuts_each_particle_like_crop_particle_and_blanks_neighbours():
    # the window stays on the image (crop_labels pads beyond it with the median, crop_particle
    # resamples zeros there)
    image, mask = rendered(center=(100.0, 110.0), size=200)
    labels = mask.astype(np.uint32)
    # a neighbour just below the particle, inside its crop window
    bottom = np.nonzero(mask.any(axis=1))[0].max()
    labels[bottom + 2 : bottom + 16, 90:115] = 7
    image = image.copy()
    image[labels == 7] = 0.3
    crops = crop_labels(image, labels, np.array([1, 7]), options=CropOptions())
    assert crops.shape == (2, 64, 64, 2)
    direct = np.asarray(crop_particle(jnp.asarray(image), jnp.asarray(mask), jnp.asarray((labels == 7).astype(np.float32))))
    np.testing.assert_allclose(crops[0], direct, atol=0.05)
    # the neighbour reads as background in particle 1's crop; without the exclusion it would not
    unblanked = np.asarray(crop_particle(jnp.asarray(image), jnp.asarray(mask)))
    neighbour = (unblanked[..., 0] > 1.2) & (unblanked[..., 1] < 0.01)
    assert neighbour.sum() > 30
    assert np.abs(crops[0][..., 0][neighbour]).max() < 1e-6
    # particle 7 is a uniform dark rectangle: its crop reads 1 inside
    assert crops[1][..., 0][crops[1][..., 1] > 0.9].mean() == pytest.approx(1.0, abs=0.05)


def test_crop_labels_handles_particles_at_the_border_and_unknown_ids():
    image = np.ones((40, 40), np.float32)
    labels = np.zeros((40, 40), np.uint32)
    labels[0:6, 0:8] = 1
    image[labels == 1] = 0.5
    crops = crop_labels(image, labels)
    assert crops.shape == (1, 64, 64, 2) and np.all(np.isfinite(crops))
    with pytest.raises(ValueError, match="not in the label image"):
        crop_labels(image, labels, np.array([3]))


def _core_and_arm(size=96):
    """A dark disk (radius 5 px) with a faint 1 px arm running 25 px to its right; the mask
    holds only the disk, as a segmentation of a thin-armed star would."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = size // 2, size // 2
    core = (yy - cy) ** 2 + (xx - cx) ** 2 <= 25
    image = np.ones((size, size), np.float32)
    image[cy, cx : cx + 26] = 0.7
    image[core] = 0.5
    return image, core.astype(np.float32), (cy, cx)


def test_context_channel_shows_what_the_mask_left_out():
    image, mask, _ = _core_and_arm()
    plain = np.asarray(crop_particle(jnp.asarray(image), jnp.asarray(mask), options=CropOptions(context=0.0)))
    wide = np.asarray(crop_particle(jnp.asarray(image), jnp.asarray(mask), options=CropOptions(context=3.0)))
    assert plain.shape == (64, 64, 2)
    assert CropOptions(context=3.0).channels == 3 and wide.shape == (64, 64, 3)
    np.testing.assert_allclose(wide[..., :2], plain, atol=1e-6)  # the first two channels do not change
    # the main window (11 px * 1.3) holds 7 px of the 25 px arm; the wide one (3x) holds 21
    ctx = wide[..., 2]
    centre = 31.5
    scale = 64 / (3 * 11 * 1.3)  # crop px per image px in the wide window
    row = ctx[int(round(centre)) - 1 : int(round(centre)) + 1].max(axis=0)
    beyond = [int(round(centre + r * scale)) for r in (10, 14, 18)]  # image px 10-18 from the centre: outside the main window
    assert np.all(row[beyond] > 0.3), row[beyond]  # the arm reads (0.7 - 1) / (0.5 - 1) = 0.6, blurred by the resampling
    above = ctx[int(round(centre - 14 * scale)), beyond]
    assert np.all(np.abs(above) < 0.05)  # and only along the arm
    with pytest.raises(ValueError, match="context"):
        CropOptions(context=0.5)


def test_the_context_channel_is_background_beyond_the_image_edge():
    # a particle in the corner: its context window reaches past the top and left edges
    image = np.full((40, 40), 0.9, np.float32)
    mask = np.zeros((40, 40), np.float32)
    mask[1:9, 1:9] = 1
    image[mask > 0] = 0.4
    crop = np.asarray(crop_particle(jnp.asarray(image), jnp.asarray(mask), options=CropOptions(margin=0.5, context=2.0)))
    # the context window spans image px -11 to 21 (32 px): crop rows and columns below 22 lie off the image
    assert np.abs(crop[:21, :, 2]).max() < 1e-6 and np.abs(crop[:, :21, 2]).max() < 1e-6
    # resampled as they are, the zeros there would read (0 - background) / contrast, far from 0
    assert crop[24:38, 24:38, 2].mean() > 0.5  # the particle, on the image


def test_crop_labels_gives_the_context_channel_of_crop_particle():
    image, mask, _ = _core_and_arm()
    labels = mask.astype(np.uint32)
    options = CropOptions(context=3.0)
    crops = crop_labels(image, labels, options=options)
    direct = np.asarray(crop_particle(jnp.asarray(image), jnp.asarray(mask), options=options))
    assert crops.shape == (1, 64, 64, 3)
    np.testing.assert_allclose(crops[0], direct, atol=0.05)
