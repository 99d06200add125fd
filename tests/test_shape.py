"""The shape family: analytic cases, the canonical form, the prior and quadrature."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nanoshape.shape import (
    ShapeParams,
    ShapePrior,
    area,
    canonicalize,
    centroid,
    dual_p,
    harmonic_spectrum,
    max_radius,
    moment_axes,
    perimeter,
    placement,
    radius,
    sample_prior,
)


def params(p, d, l_ratio, phi):
    return ShapeParams(jnp.float32(p), jnp.int32(d), jnp.float32(l_ratio), jnp.float32(phi))


def test_ellipse_radius_area_and_perimeter():
    # p = 2, d = 2: R = (L^2 cos^2 + sin^2)^(-1/2), an ellipse with semi-axes 1 and 1/L
    shape = params(2.0, 2, 2.0, 0.0)
    theta = jnp.linspace(0, 2 * jnp.pi, 50)
    x, y = radius(theta, shape) * jnp.cos(theta), radius(theta, shape) * jnp.sin(theta)
    np.testing.assert_allclose((x * 2.0) ** 2 + y**2, 1.0, rtol=1e-5)
    assert float(area(shape)) == pytest.approx(math.pi / 2, rel=1e-4)
    a, b = 1.0, 0.5
    h = ((a - b) / (a + b)) ** 2
    ramanujan = math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))
    assert float(perimeter(shape)) == pytest.approx(ramanujan, rel=1e-4)


def test_large_p_approaches_rectangle():
    shape = params(400.0, 2, 2.0, 0.0)  # half-sides 1/L along x and 1 along y
    assert float(area(shape)) == pytest.approx(4 * 1.0 * 0.5, rel=0.01)
    assert float(perimeter(shape)) == pytest.approx(2 * (2.0 + 1.0), rel=0.01)
    assert float(max_radius(shape, n=4096)) == pytest.approx(math.hypot(1.0, 0.5), rel=0.01)


def test_circle_for_every_d_when_p2_and_l1():
    for d in range(1, 7):
        r = radius(jnp.linspace(0, 2 * jnp.pi, 100), params(2.0, d, 1.0, 0.7))
        np.testing.assert_allclose(r, 1.0, rtol=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_canonical_form_draws_the_same_shape_up_to_scale(seed):
    key_l, key_phi, key_p, key_d = jax.random.split(jax.random.key(seed), 4)
    l_ratio = jnp.exp(jax.random.uniform(key_l, (), minval=-1.4, maxval=1.4))
    phi = jax.random.uniform(key_phi, (), minval=-10.0, maxval=10.0)
    p = jnp.exp(jax.random.uniform(key_p, (), minval=-1.0, maxval=3.0))
    d = jax.random.randint(key_d, (), 1, 7)
    shape = ShapeParams(p, d, l_ratio, phi)
    canon = canonicalize(shape)
    assert float(canon.l_ratio) >= 1.0
    assert 0.0 <= float(canon.phi) < math.pi
    theta = jnp.linspace(0, 2 * jnp.pi, 720, endpoint=False)
    ratio = radius(theta, shape) / radius(theta, canon)
    # same boundary up to one overall scale factor (L when the fold was used)
    np.testing.assert_allclose(ratio, ratio[0], rtol=2e-4)
    # R(p, d, 1/L, phi + pi/2) = L R(p, d, L, phi): the folded shape is the original scaled by L
    expected_ratio = 1.0 if float(l_ratio) >= 1 else 1 / float(l_ratio)
    assert float(ratio[0]) == pytest.approx(expected_ratio, rel=2e-4)
    # idempotent
    again = canonicalize(canon)
    np.testing.assert_allclose(np.array(again[2:]), np.array(canon[2:]), rtol=1e-6)


def test_phi_period_pi():
    shape = params(3.0, 3, 1.7, 0.4)
    shifted = params(3.0, 3, 1.7, 0.4 + math.pi)
    theta = jnp.linspace(0, 2 * jnp.pi, 100)
    np.testing.assert_allclose(radius(theta, shape), radius(theta, shifted), rtol=1e-5)


def test_centroid_zero_for_even_d_and_nonzero_for_odd_d():
    np.testing.assert_allclose(centroid(params(3.0, 2, 2.0, 0.3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(centroid(params(3.0, 4, 1.3, 0.3)), 0.0, atol=1e-5)
    assert float(jnp.linalg.norm(centroid(params(2.0, 1, 2.0, 0.3)))) > 0.05


def test_prior_ranges_and_log_uniformity():
    prior = ShapePrior()
    shapes = jax.vmap(lambda k: sample_prior(k, prior))(jax.random.split(jax.random.key(0), 20000))
    p, d, l_ratio, phi = (np.asarray(a) for a in shapes)
    assert p.min() >= 0.25 and p.max() <= 64.0
    assert set(np.unique(d)) == {1, 2, 3, 4, 5, 6}
    assert l_ratio.min() >= 1.0 and l_ratio.max() <= 4.0
    assert phi.min() >= 0.0 and phi.max() < math.pi
    # log-uniform: log p has half its mass below the log midpoint, here p = 4
    assert np.mean(p < 4.0) == pytest.approx(0.5, abs=0.02)
    assert np.mean(l_ratio < 2.0) == pytest.approx(0.5, abs=0.02)
    counts = np.bincount(d)[1:]
    assert counts.min() / counts.max() > 0.9


def test_prior_rejects_bad_ranges():
    with pytest.raises(ValueError, match="p_range"):
        ShapePrior(p_range=(0.0, 2.0))
    with pytest.raises(ValueError, match="d_values"):
        ShapePrior(d_values=(0, 2))


def test_placement_matches_area_and_centroid():
    from nanoshape.render import silhouette

    shape = params(2.5, 1, 2.2, 0.8)  # egg-like: its centroid is off its origin
    center, scale = placement(shape, jnp.float32(900.0), jnp.asarray([40.0, 37.0]))
    coverage = np.asarray(silhouette(shape, center, scale, height=80, width=80))
    yy, xx = np.mgrid[:80, :80]
    assert coverage.sum() == pytest.approx(900.0, rel=0.005)
    assert (coverage * xx).sum() / coverage.sum() == pytest.approx(40.0, abs=0.05)
    assert (coverage * yy).sum() / coverage.sum() == pytest.approx(37.0, abs=0.05)


def test_dual_exponent_draws_nearly_the_same_shape_a_quarter_phase_on():
    from nanoshape.refine import shape_jaccard

    assert float(dual_p(jnp.float32(2.0))) == pytest.approx(2.0)
    assert float(dual_p(jnp.float32(0.5))) == pytest.approx(64.0)  # concave: the nearest convex dual
    for p, d in ((1.0, 2), (1.3, 5), (1.6, 3), (3.0, 4)):
        a, b = params(p, d, 1.0, 0.3), params(float(dual_p(jnp.float32(p))), d, 1.0, 0.3 + math.pi / 4)
        assert float(shape_jaccard(a, b)) >= 0.97, (p, d)
        # and the same shape without the quarter turn is clearly another one
        assert float(shape_jaccard(a, params(float(dual_p(jnp.float32(p))), d, 1.0, 0.3))) < 0.95, (p, d)


def test_harmonic_spectrum_describes_the_drawn_shape_not_its_parameters():
    spectrum = jax.jit(harmonic_spectrum)
    # a circle has no harmonics, whatever d says
    for d in range(1, 7):
        np.testing.assert_allclose(spectrum(params(2.0, d, 1.0, 0.7)), 0.0, atol=1e-5)
    # a turn (phi shifted) changes nothing (up to where the samples fall on the star's cusps)
    star = params(0.8, 5, 1.1, 0.2)
    np.testing.assert_allclose(spectrum(star), spectrum(params(0.8, 5, 1.1, 1.3)), atol=1e-3)
    # a square and the diamond it is when turned: one spectrum
    np.testing.assert_allclose(spectrum(params(1.0, 2, 1.0, 0.0)), spectrum(params(64.0, 2, 1.0, math.pi / 4)),
                               atol=0.01)
    # the symmetry shows where it should: an ellipse at m = 2, a square at 4, a five-armed star at 10
    for shape, m in ((params(2.0, 2, 2.0, 0.0), 2), (params(20.0, 2, 1.0, 0.0), 4), (params(0.8, 5, 1.0, 0.0), 10)):
        amplitudes = np.asarray(spectrum(shape))
        assert np.argmax(amplitudes) + 1 == m, (m, amplitudes.round(3))


def test_harmonic_spectrum_of_a_circle_drawn_off_its_origin_is_nearly_empty():
    # at p = 2, d = 1 and L = 1.2 eq. 1 draws (nearly) a circle whose centre is off the origin
    shape = params(2.0, 1, 1.2, 0.4)
    assert float(jnp.linalg.norm(centroid(shape))) > 0.05
    assert float(jnp.max(harmonic_spectrum(shape))) < 0.005
    # while an ellipse of the same L is clearly two-fold
    assert float(harmonic_spectrum(params(2.0, 2, 1.2, 0.4))[1]) > 0.05


def test_moment_axes_of_an_ellipse_a_square_and_a_drawn_triangle():
    # an ellipse's second-moment axes are its axes, whatever its phase
    for phi in (0.0, 0.7):
        np.testing.assert_allclose(moment_axes(params(2.0, 2, 2.0, phi)), [2.0, 1.0], rtol=1e-4)
    # a square (d = 2, large p, L = 1, sides 2): equal axes of 4 sqrt(side^2 / 12)
    major, minor = np.asarray(moment_axes(params(200.0, 2, 1.0, 0.3)))
    assert major == pytest.approx(minor, rel=1e-4)
    assert major == pytest.approx(4 * math.sqrt(4 / 12), rel=1e-2)
    # the same as the features measure them from the pixels of the drawn shape
    from skimage.measure import regionprops

    for shape in (params(12.0, 2, 1.0, 0.0), params(1.5, 3, 1.8, 0.4), params(3.0, 2, 2.5, 1.0)):
        yy, xx = np.mgrid[-300:301, -300:301] / 250.0
        theta = np.arctan2(yy, xx)
        inside = np.hypot(xx, yy) <= np.asarray(radius(jnp.asarray(theta, jnp.float32), shape))
        props = regionprops(inside.astype(np.uint8))[0]
        np.testing.assert_allclose(np.asarray(moment_axes(shape)) * 250.0,
                                   [props.axis_major_length, props.axis_minor_length], rtol=5e-3)
