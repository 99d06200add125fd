"""The renderer: silhouette accuracy, invariances, jit/vmap, gradients, noise statistics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from nanoshape.render import (
    Imaging,
    ImagingParams,
    fast_normal,
    render,
    silhouette,
    tem_image,
)
from nanoshape.shape import ShapeParams, radius
from nanoshape.trainingdata import training_batch, training_example

SIZE = 64


def params(p, d, l_ratio, phi):
    return ShapeParams(jnp.float32(p), jnp.int32(d), jnp.float32(l_ratio), jnp.float32(phi))


def draw(shape, center=(31.3, 32.6), scale=18.0, size=SIZE, **kw):
    return np.asarray(silhouette(shape, jnp.asarray(center, jnp.float32), jnp.float32(scale), height=size, width=size, **kw))


def supersampled(shape, center, scale, size=SIZE, factor=16):
    """Hard rasterisation at factor x factor samples per pixel, from eq. 1 evaluated directly."""
    offsets = (np.arange(factor) + 0.5) / factor - 0.5
    coords = (np.arange(size)[:, None] + offsets[None, :]).ravel()
    xs, ys = np.meshgrid(coords - center[0], coords - center[1])
    r_boundary = scale * np.asarray(radius(jnp.asarray(np.arctan2(ys, xs), jnp.float32), shape))
    inside = np.hypot(xs, ys) <= r_boundary
    return inside.reshape(size, factor, size, factor).mean(axis=(1, 3))


def moments(image):
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    m = image.sum()
    my, mx = (image * yy).sum() / m, (image * xx).sum() / m
    cyy = (image * (yy - my) ** 2).sum() / m + 1 / 12
    cxx = (image * (xx - mx) ** 2).sum() / m + 1 / 12
    cxy = (image * (yy - my) * (xx - mx)).sum() / m
    eig = np.linalg.eigvalsh([[cxx, cxy], [cxy, cyy]])
    return m, eig


def test_ellipse_area_and_eccentricity():
    l_ratio, scale = 1.8, 22.0
    coverage = draw(params(2.0, 2, l_ratio, 0.6), scale=scale)
    a, b = scale, scale / l_ratio
    total, eig = moments(coverage)
    assert total == pytest.approx(math.pi * a * b, rel=0.01)
    eccentricity = math.sqrt(1 - eig[0] / eig[1])
    assert eccentricity == pytest.approx(math.sqrt(1 - (b / a) ** 2), rel=0.01)


def test_large_p_approaches_rectangle():
    scale, l_ratio = 20.0, 2.0
    center = (31.5, 31.5)
    coverage = draw(params(64.0, 2, l_ratio, 0.0), center=center, scale=scale)
    # half-sides: scale / L along x, scale along y
    yy, xx = np.mgrid[:SIZE, :SIZE]
    rectangle = (np.abs(xx - center[0]) <= scale / l_ratio) & (np.abs(yy - center[1]) <= scale)
    assert coverage.sum() == pytest.approx(rectangle.sum(), rel=0.02)
    hard = coverage > 0.5
    assert (hard & rectangle).sum() / (hard | rectangle).sum() > 0.97


@pytest.mark.parametrize(
    "shape",
    [
        (2.0, 2, 1.0, 0.0),  # circle
        (2.0, 2, 2.5, 0.4),  # ellipse
        (40.0, 2, 1.0, 0.3),  # square
        (6.0, 2, 3.0, 1.1),  # rod
        (1.5, 3, 1.8, 0.2),  # rounded triangle
        (4.0, 6, 1.2, 0.5),  # hexagonal
        (1.0, 4, 1.0, 0.0),  # diamond with straight edges
        (0.8, 5, 1.0, 0.3),  # ten-point concave star
        (3.0, 1, 2.0, 2.0),  # egg-like, no central symmetry
    ],
)
def test_silhouette_within_two_percent_of_supersampled_raster(shape):
    shape = params(*shape)
    center, scale = (31.3, 32.6), 22.0
    coverage = draw(shape, center, scale)
    reference = supersampled(shape, center, scale)
    assert np.abs(coverage - reference).sum() / reference.sum() <= 0.02


def test_canonical_fold_and_phi_period_on_rendered_masks():
    p, d, l_ratio, phi, scale = 3.0, 3, 1.6, 0.4, 20.0
    base = draw(params(p, d, l_ratio, phi), scale=scale)
    # (p, d, 1/L, phi + pi/2) is the same shape scaled by L
    folded = draw(params(p, d, 1 / l_ratio, phi + math.pi / 2), scale=scale / l_ratio)
    np.testing.assert_allclose(folded, base, atol=2e-3)
    np.testing.assert_allclose(draw(params(p, d, l_ratio, phi + math.pi), scale=scale), base, atol=2e-3)
    # and it is not trivially true: another phase draws another image
    assert np.abs(draw(params(p, d, l_ratio, phi + 0.5), scale=scale) - base).max() > 0.5


def test_jit_eager_and_vmap_agree():
    shapes = ShapeParams(
        jnp.asarray([0.7, 2.0, 9.0], jnp.float32), jnp.asarray([5, 2, 3], jnp.int32),
        jnp.asarray([1.0, 2.0, 1.3], jnp.float32), jnp.asarray([0.1, 1.0, 2.5], jnp.float32),
    )
    centers = jnp.asarray([[30.0, 31.0], [33.2, 29.9], [31.5, 31.5]], jnp.float32)
    scales = jnp.asarray([15.0, 20.0, 17.0], jnp.float32)

    def one(s, c, k):
        return silhouette(s, c, k, height=48, width=48)

    eager = [one(jax.tree.map(lambda a: a[i], shapes), centers[i], scales[i]) for i in range(3)]
    jitted = [jax.jit(one)(jax.tree.map(lambda a: a[i], shapes), centers[i], scales[i]) for i in range(3)]
    batched = jax.jit(jax.vmap(one))(shapes, centers, scales)
    for i in range(3):
        np.testing.assert_allclose(jitted[i], eager[i], atol=1e-4)
        np.testing.assert_allclose(batched[i], eager[i], atol=1e-4)


@pytest.mark.parametrize("d", [2, 3, 5])
def test_gradients_match_finite_differences(d):
    weights = jax.random.normal(jax.random.key(d), (48, 48))

    def loss(p, l_ratio, phi, scale, cx, cy):
        shape = ShapeParams(p, jnp.int32(d), l_ratio, phi)
        return jnp.sum(weights * silhouette(shape, jnp.stack([cx, cy]), scale, height=48, width=48))

    args = tuple(jnp.float32(v) for v in (3.0, 1.5, 0.4, 14.0, 23.3, 24.1))
    check_grads(loss, args, order=1, modes=["rev"], eps=1e-3, atol=0.05, rtol=0.02)
    grads = jax.grad(loss, argnums=range(6))(*args)
    assert all(np.isfinite(float(g)) and float(g) != 0.0 for g in grads)


def test_gradients_finite_at_pixel_centred_particles():
    # a centre exactly on a pixel puts pixels on the branch cut of the half-angle and at r = 0
    def loss(p, l_ratio, phi, scale, center):
        shape = ShapeParams(p, jnp.int32(3), l_ratio, phi)
        return jnp.sum(silhouette(shape, center, scale, height=32, width=32) ** 2)

    grads = jax.grad(loss, argnums=range(5))(
        jnp.float32(0.6), jnp.float32(1.0), jnp.float32(0.0), jnp.float32(10.0), jnp.asarray([16.0, 16.0])
    )
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)


def test_thickness_gradients_finite():
    # the dome profile sqrt(1 - (1 - depth)^2) has an infinite slope where depth = 0 (every
    # pixel outside the particle): its gradient was NaN everywhere before it was guarded
    from nanoshape.render import particle_thickness

    weights = jax.random.normal(jax.random.key(7), (40, 40))

    def loss(log_p, log_scale, dome, cx):
        shape = ShapeParams(jnp.exp(log_p), jnp.int32(3), jnp.float32(1.4), jnp.float32(0.3))
        coverage, thickness = particle_thickness(shape, jnp.stack([cx, jnp.float32(20.4)]), jnp.exp(log_scale), dome,
                                                 height=40, width=40)
        return jnp.sum(weights * coverage * thickness)

    args = tuple(jnp.float32(v) for v in (math.log(2.5), math.log(11.0), 0.6, 19.7))
    for mode in (jax.grad(loss, argnums=range(4)), jax.jacfwd(loss, argnums=range(4))):
        grads = jax.jit(mode)(*args)  # compiled: op by op each mode took several seconds
        assert all(np.isfinite(float(g)) and float(g) != 0.0 for g in grads)
    # the profile's vertical tangent at the edge defeats finite differences in the shape (the
    # silhouette's gradients are checked above); the dome enters linearly
    check_grads(lambda dome: loss(*args[:2], dome, args[3]), (args[2],), order=1, modes=["fwd", "rev"], eps=1e-2)


def test_same_key_same_image_other_key_other_noise():
    shape = params(2.0, 2, 1.3, 0.2)
    center, scale = jnp.asarray([31.5, 31.5]), jnp.float32(15.0)
    a, _ = render(jax.random.key(0), shape, center, scale, height=SIZE, width=SIZE)
    b, _ = render(jax.random.key(0), shape, center, scale, height=SIZE, width=SIZE)
    c, _ = render(jax.random.key(1), shape, center, scale, height=SIZE, width=SIZE)
    np.testing.assert_array_equal(a, b)
    assert np.abs(np.asarray(a) - np.asarray(c)).mean() > 0.01


def flat_params(dose):
    return ImagingParams(
        contrast=jnp.float32(0.5), dome=jnp.float32(0.0), texture=jnp.float32(0.0), gradient_x=jnp.float32(0.0),
        gradient_y=jnp.float32(0.0), blur_sigma_px=jnp.float32(1.0), dose=jnp.float32(dose),
        dark_background=jnp.float32(0.1),
    )


@pytest.mark.parametrize("exact_poisson", [False, True])
@pytest.mark.parametrize("dose", [20.0, 500.0])
def test_shot_noise_matches_dose(dose, exact_poisson):
    imaging = Imaging(exact_poisson=exact_poisson)
    image = tem_image(jax.random.key(3), jnp.zeros((256, 256)), flat_params(dose), imaging)
    counts = np.asarray(image) * dose
    # Poisson statistics: variance of the counts equals their mean, which is the dose
    assert counts.mean() == pytest.approx(dose, rel=0.01)
    assert counts.var() == pytest.approx(dose, rel=0.05)


def test_fast_normal_moments():
    x = np.asarray(fast_normal(jax.random.key(0), (200_000,)))
    assert abs(x.mean()) < 0.01
    assert x.std() == pytest.approx(1.0, abs=0.01)


def test_bright_and_dark_field_contrast():
    shape = params(2.0, 2, 1.0, 0.0)
    center, scale = jnp.asarray([31.5, 31.5]), jnp.float32(15.0)
    bright, coverage = render(jax.random.key(2), shape, center, scale, height=SIZE, width=SIZE)
    dark, _ = render(jax.random.key(2), shape, center, scale, height=SIZE, width=SIZE, imaging=Imaging(dark_field=True))
    inside, outside = np.asarray(coverage) > 0.99, np.asarray(coverage) < 0.01
    assert np.asarray(bright)[inside].mean() < np.asarray(bright)[outside].mean() - 0.1
    assert np.asarray(dark)[inside].mean() > np.asarray(dark)[outside].mean() + 0.1


def test_training_batch_shapes_targets_and_determinism():
    crops, shapes = jax.jit(lambda k: training_batch(k, 8))(jax.random.key(0))
    assert crops.shape == (8, 64, 64, 2)
    assert np.all(np.asarray(shapes.l_ratio) >= 1) and np.all(np.asarray(shapes.phi) < math.pi)
    again, _ = jax.jit(lambda k: training_batch(k, 8))(jax.random.key(0))
    np.testing.assert_array_equal(crops, again)
    mask = np.asarray(crops[..., 1]) > 0.5
    intensity = np.asarray(crops[..., 0])
    # normalisation: the particle reads ~1 and the background ~0, whatever the contrast
    assert np.median([intensity[i][mask[i]].mean() for i in range(8)]) == pytest.approx(1.0, abs=0.15)
    assert np.median([intensity[i][~mask[i]].mean() for i in range(8)]) == pytest.approx(0.0, abs=0.15)


@pytest.mark.slow  # ~23 s on a 2-core Xeon (three compilations); fast in the default run: training examples
# in test_training_batch_shapes_targets_and_determinism
def test_training_example_extent_is_the_rendered_particle_size():
    keys = jax.random.split(jax.random.key(3), 6)
    crops, shapes = jax.vmap(lambda k: training_example(k))(keys)
    crops_e, shapes_e, extent = jax.vmap(lambda k: training_example(k, with_extent=True))(keys)
    # asking for the extent renders exactly the same examples
    np.testing.assert_array_equal(crops, crops_e)
    np.testing.assert_array_equal(shapes.p, shapes_e.p)
    extent = np.asarray(extent)
    assert np.all((extent >= 0.2 * 64 - 1e-3) & (extent <= 0.9 * 64 + 1e-3))
    # a fixed fraction gives that fraction of the canvas
    _, _, small = training_example(keys[0], with_extent=True, extent_fraction_range=(0.25, 0.25), canvas_px=128)
    assert float(small) == pytest.approx(32.0, rel=1e-5)
