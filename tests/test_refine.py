"""Refinement: recovery of known shapes, loss descent, batched == unbatched, awkward masks, canonical output."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nanoshape.refine import (
    RefineOptions,
    _Prior,
    _adam,
    _coverage,
    _placed,
    _placed_phases,
    _refine_one,
    _starts,
    fit_jaccard,
    fuzzy_jaccard_distance,
    moment_start,
    refine,
    shape_jaccard,
)
from nanoshape.render import silhouette, soft_jaccard
from nanoshape.shape import ShapeParams, placement

SIZE = 64
OPTIONS = RefineOptions()

#: (p, d, L, phi, centre (x, y) px, scale px): convex, elongated, boxy, concave
TRUTH = [
    (3.0, 3, 1.6, 0.7, (30.3, 33.1), 17.0),
    (1.5, 2, 2.2, 2.0, (32.4, 30.8), 20.0),
    (8.0, 4, 1.3, 0.4, (31.0, 32.0), 15.0),
    (0.8, 5, 1.8, 1.1, (33.0, 31.5), 22.0),
]
#: multiplicative errors of p and L and additive errors of phi in the start
P_ERROR = np.array([1.4, 0.7, 1.5, 1.3])
L_ERROR = np.array([0.85, 1.15, 1.1, 0.9])
PHI_ERROR = np.array([0.2, -0.15, 0.1, -0.1])


def shape(p, d, l_ratio, phi):
    return ShapeParams(jnp.float32(p), jnp.int32(d), jnp.float32(l_ratio), jnp.float32(phi))


def draw(params, center, scale, height=SIZE, width=SIZE):
    return np.asarray(silhouette(params, jnp.asarray(center, jnp.float32), jnp.float32(scale), height=height, width=width))


def iou(a, b):
    a, b = a > 0.5, b > 0.5
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.fixture(scope="module")
def masks():
    return np.stack([draw(shape(p, d, l, phi), c, s) for p, d, l, phi, c, s in TRUTH])


@pytest.fixture(scope="module")
def start():
    return {
        "p": np.array([t[0] for t in TRUTH]) * P_ERROR,
        "d": np.array([t[1] for t in TRUTH]),
        "l_ratio": np.array([t[2] for t in TRUTH]) * L_ERROR,
        "phi": np.array([t[3] for t in TRUTH]) + PHI_ERROR,
    }


@pytest.fixture(scope="module")
def refined(masks, start):
    return refine(masks, start, options=OPTIONS)


def test_recovers_known_shapes_from_perturbed_starts(refined):
    # the three shapes with p >= 1: parameters, pose and overlap; the start is 30-50% off in p
    for i in range(3):
        p, d, l_ratio, phi, (cx, cy), scale = TRUTH[i]
        assert refined["d"][i] == d
        # p is the least determined (large p: only the corners tell): within 20%, and the start's error halved
        assert abs(math.log(refined["p"][i] / p)) < min(0.2, 0.5 * abs(math.log(P_ERROR[i])))
        assert refined["l_ratio"][i] == pytest.approx(l_ratio, rel=0.03)
        assert abs(refined["phi"][i] - phi) < 0.02
        assert refined["center_x_px"][i] == pytest.approx(cx, abs=0.15)
        assert refined["center_y_px"][i] == pytest.approx(cy, abs=0.15)
        assert refined["scale_px"][i] == pytest.approx(scale, rel=0.03)
        assert refined["jaccard_refined"][i] > 0.97
    # the concave star (thin arms, p < 1) is harder; it must still gain overlap
    assert refined["jaccard_refined"][3] > refined["jaccard_init"][3] + 0.03
    assert np.all(refined["jaccard_init"] < 0.91)


def test_loss_decreases_along_the_descent(masks, start):
    mask = jnp.asarray(masks[0] > 0.5, jnp.float32)
    target = jnp.asarray(masks[0] > 0.5, jnp.float32)
    area_px, centroid_xy = jnp.sum(mask), jnp.asarray([30.3, 33.1], jnp.float32)
    theta0 = _placed(
        jnp.log(jnp.float32(start["p"][0])), jnp.log(jnp.float32(start["l_ratio"][0])), jnp.float32(start["phi"][0]),
        jnp.int32(3), area_px, centroid_xy,
    )
    step = jnp.asarray([0.15, 0.075, 0.075, 0.5, 0.5, 0.03], jnp.float32)
    edges = jnp.ones(30, jnp.float32)  # constant edge width: losses along the way are comparable
    # the mask loss alone: no prior
    options = RefineOptions(p_prior_weight=0.0, shape_prior_weight=0.0)
    one = jnp.float32(1.0)
    prior = _Prior(log_p=0 * one, log_p_std=one, log_l=0 * one, log_l_std=one, phi=0 * one, phi_std=one, shape_weight=0 * one)
    theta, losses = jax.jit(
        lambda t: _adam(t, jnp.int32(3), target, side_px=SIZE, step=step, edge_widths=edges, learning_rate=1.0,
                        prior=prior, options=options)
    )(theta0)
    losses = np.asarray(losses)
    final = float(fuzzy_jaccard_distance(_coverage(theta, jnp.int32(3), SIZE, SIZE, 1.0), target, options.loss_epsilon))
    assert losses[0] > 0.1
    assert final < 0.25 * losses[0]
    # mostly downhill: the running minimum keeps improving through the second half
    assert losses[-10:].min() < losses[:20].min()


def test_batched_equals_one_at_a_time(masks, start, refined):
    starts = _starts(start, len(masks), OPTIONS)
    one = jax.jit(lambda m, s: _refine_one(m, s, OPTIONS))
    for i in range(len(masks)):
        single = one(jnp.asarray(masks[i]), jax.tree.map(lambda a: jnp.asarray(a[i]), starts))
        # vectorised and scalar code round differently, and the descent can end a little apart: 0.006 in Jaccard on
        # one of the first three on an Intel Xeon (AVX-512) where an AMD EPYC stayed within 0.002; the concave
        # star's landscape amplifies it. A particle fitted with another's values would be off by far more
        tolerance = 1e-2
        assert int(single.d) == refined["d"][i]
        assert float(single.jaccard_refined) == pytest.approx(float(refined["jaccard_refined"][i]), abs=tolerance)
        np.testing.assert_allclose(np.asarray(single.theta)[3:5], [refined["center_x_px"][i], refined["center_y_px"][i]],
                                   atol=10 * tolerance)
    # and the answer of a particle does not depend on which others share its batch
    alone = refine(masks[2:3], {k: v[2:3] for k, v in start.items()}, options=OPTIONS)
    for key in ("p", "l_ratio", "phi", "center_x_px", "center_y_px", "scale_px", "jaccard_refined"):
        assert alone[key][0] == pytest.approx(refined[key][2], rel=1e-4, abs=1e-4), key


def test_outputs_are_canonical_and_draw_the_mask(masks, start, refined):
    # a non-canonical start of the same shapes: L < 1 with the quarter turn, phi beyond pi
    flipped = dict(start, l_ratio=1 / start["l_ratio"], phi=start["phi"] + 0.5 * math.pi + math.pi)
    out = refine(masks, flipped, options=OPTIONS)
    for result in (out, refined):
        assert np.all(result["l_ratio"] >= 1)
        assert np.all((result["phi"] >= 0) & (result["phi"] < math.pi))
        assert np.all((result["d"] >= 1) & (result["d"] <= 6))
        for i in range(len(masks)):
            params = shape(result["p"][i], result["d"][i], result["l_ratio"][i], result["phi"][i])
            drawn = draw(params, (result["center_x_px"][i], result["center_y_px"][i]), result["scale_px"][i])
            # the returned pose draws the fitted silhouette (the scale follows the L <-> 1/L fold)
            assert iou(drawn, masks[i]) == pytest.approx(result["jaccard_refined"][i], abs=0.01)
    for i in range(3):
        # the same shapes as from the canonical start (another path through the fold: not the same digits)
        assert out["jaccard_refined"][i] > 0.98
        assert out["l_ratio"][i] == pytest.approx(TRUTH[i][2], rel=0.04)
        assert abs(out["phi"][i] - TRUTH[i][3]) < 0.03


def test_awkward_masks_give_finite_canonical_results():
    height, width = 37, 53  # odd and not square
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ellipse = ((xx - 30.2) / 14) ** 2 + ((yy - 17.6) / 8) ** 2 < 1
    radius = np.hypot(xx - 26, yy - 18)
    c_shape = (radius > 7) & (radius < 13) & ~((xx > 26) & (np.abs(yy - 18) < 4))
    two_blobs = (np.hypot(xx - 12, yy - 18) < 6) | (np.hypot(xx - 40, yy - 20) < 5)
    tiny = np.zeros((height, width), bool)
    tiny[20:22, 30:32] = True
    empty = np.zeros((height, width), bool)
    full = np.ones((height, width), bool)
    masks = np.stack([ellipse, c_shape, two_blobs, tiny, empty, full]).astype(np.float32)
    out = refine(masks, moment_start(masks), options=OPTIONS)
    for key, values in out.items():
        assert values.shape == (len(masks),), key
        assert np.all(np.isfinite(values)), key
    assert np.all(out["l_ratio"] >= 1) and np.all((out["phi"] >= 0) & (out["phi"] < math.pi))
    assert np.all((out["jaccard_refined"] >= 0) & (out["jaccard_refined"] <= 1))
    # the ellipse sits where it is on the unpadded grid: padding to a square must not move it
    assert out["center_x_px"][0] == pytest.approx(30.2, abs=0.3)
    assert out["center_y_px"][0] == pytest.approx(17.6, abs=0.3)
    assert out["jaccard_refined"][0] > 0.95
    assert out["jaccard_refined"][2] >= out["jaccard_init"][2] - 0.02
    assert out["jaccard_refined"][4] == 0 and not out["converged"][4]


def test_fit_jaccard_scores_the_true_shape_high_and_a_turned_one_low(masks):
    truth = ShapeParams(*(jnp.asarray(np.array(column)) for column in list(zip(*TRUTH))[:4]))
    truth = ShapeParams(truth.p.astype(jnp.float32), truth.d.astype(jnp.int32), truth.l_ratio.astype(jnp.float32),
                        truth.phi.astype(jnp.float32))
    assert np.all(fit_jaccard(masks, truth)[:3] > 0.97)
    turned = truth._replace(phi=truth.phi + 0.4)
    assert np.all(fit_jaccard(masks, turned) < 0.9)


@pytest.mark.parametrize("d", [1, 3, 4])
def test_placing_several_phases_at_once_matches_placing_each(d):
    # one quadrature per d: phase shifts turn the centroid offset instead of recomputing it
    phis = jnp.asarray([0.3, 1.1, 2.0, 2.9], jnp.float32)
    area_px, centroid_xy = jnp.float32(700.0), jnp.asarray([30.0, 33.5], jnp.float32)
    thetas = np.asarray(_placed_phases(jnp.log(jnp.float32(0.8)), jnp.log(jnp.float32(1.7)), phis, jnp.int32(d),
                                       area_px, centroid_xy))
    for theta, phi in zip(thetas, np.asarray(phis)):
        center, scale = placement(shape(0.8, d, 1.7, phi), area_px, centroid_xy)
        np.testing.assert_allclose(theta[3:5], np.asarray(center), atol=0.02)
        assert math.exp(theta[5]) == pytest.approx(float(scale), rel=2e-3)
        assert theta[2] == pytest.approx(phi)


def test_moment_start_recovers_an_ellipse():
    mask = draw(shape(2.0, 2, 1.8, 0.9), (31.5, 32.2), 24.0)
    start = moment_start(mask[None])
    assert start["l_ratio"][0] == pytest.approx(1.8, rel=0.03)
    assert start["phi"][0] == pytest.approx(0.9, abs=0.02)
    assert start["d"][0] == 2 and start["p"][0] == 2


def test_shape_jaccard_respects_the_equivalences_of_the_family():
    base = shape(3.0, 3, 1.6, 0.7)
    folded = shape(3.0, 3, 1 / 1.6, 0.7 + 0.5 * math.pi)
    half_turn = shape(3.0, 3, 1.6, 0.7 + math.pi)
    assert float(shape_jaccard(base, folded)) > 0.99
    assert float(shape_jaccard(base, half_turn)) > 0.99
    assert float(shape_jaccard(base, shape(3.0, 3, 1.6, 1.0))) < 0.95
    assert float(shape_jaccard(base, shape(3.0, 4, 1.6, 0.7))) < 0.95


def test_fuzzy_jaccard_is_the_jaccard_of_binary_maps_and_zero_for_equal_soft_ones():
    rng = np.random.default_rng(0)
    a = (rng.random((16, 16)) > 0.5).astype(np.float32)
    b = (rng.random((16, 16)) > 0.4).astype(np.float32)
    assert float(fuzzy_jaccard_distance(jnp.asarray(a), jnp.asarray(b))) == pytest.approx(1 - iou(a, b), abs=1e-6)
    soft = jnp.asarray(rng.random((16, 16)), jnp.float32)
    assert float(fuzzy_jaccard_distance(soft, soft)) == pytest.approx(0.0, abs=1e-7)
    # the product form does not reach its optimum at equality for soft maps: why the fit does not use it
    assert float(soft_jaccard(soft, soft)) < 0.9


def test_bad_inputs_name_the_problem():
    masks = np.zeros((2, 8, 8), np.float32)
    with pytest.raises(ValueError, match="missing"):
        refine(masks, {"p": np.ones(2), "d": np.ones(2, int), "l_ratio": np.ones(2)})
    with pytest.raises(ValueError, match="1..6"):
        refine(masks, {"p": np.ones(2), "d": np.array([0, 7]), "l_ratio": np.ones(2), "phi": np.zeros(2)})
    with pytest.raises(ValueError, match="3 values for 2 masks"):
        refine(masks, {"p": np.ones(3), "d": np.ones(2, int), "l_ratio": np.ones(2), "phi": np.zeros(2)})
    with pytest.raises(ValueError, match="d_candidates"):
        RefineOptions(d_candidates=7)


def test_a_confident_start_holds_l_and_phi_against_a_mask_that_disagrees(masks):
    # the mask draws phi = 0.4 (TRUTH[2]); the start says 0.3 with a small uncertainty
    p, d, l_ratio, phi, _, _ = TRUTH[2]
    init = {"p": np.array([p]), "d": np.array([d]), "l_ratio": np.array([l_ratio]), "phi": np.array([phi - 0.1]),
            "p_log_std": np.array([0.1]), "l_ratio_log_std": np.array([0.02]), "phi_std": np.array([0.02])}
    free = refine(masks[2:3], init, options=RefineOptions(shape_prior_weight=0.0))
    held = refine(masks[2:3], init, options=RefineOptions(shape_prior_weight=0.1))
    # phi of a d = 4 shape has period pi; compare through the smallest turn
    turn = lambda a, b: abs((a - b + math.pi / 2) % math.pi - math.pi / 2)  # noqa: E731
    assert turn(free["phi"][0], phi) < 0.03, free["phi"]  # the mask alone finds its phase
    assert turn(held["phi"][0], phi - 0.1) < turn(free["phi"][0], phi - 0.1) - 0.03, (held["phi"], free["phi"])
    # without uncertainties of L and phi (a bare guess) the weight changes nothing
    bare = {k: init[k] for k in ("p", "d", "l_ratio", "phi")}
    a = refine(masks[2:3], bare, options=RefineOptions(shape_prior_weight=0.0))
    b = refine(masks[2:3], bare, options=RefineOptions(shape_prior_weight=0.1))
    for key in ("p", "l_ratio", "phi"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6, err_msg=key)
