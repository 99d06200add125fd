"""Shape families: the interface, eq. 1 through it, rounded polygons end to end (render, CNN, training, fit, groups)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from flax import nnx

from nanoshape.cnn import CNNOptions, ShapeCNN, load_model, predict
from nanoshape.family import (
    FAMILIES,
    ROUNDED_POLYGON,
    SUPERELLIPSE,
    PolygonParams,
    PolygonPrior,
    area,
    descriptor,
    family_of,
    get_family,
)
from nanoshape.render import _edge_field, _family_edge_field, silhouette
from nanoshape.shape import ShapeParams, ShapePrior, harmonic_spectrum, radius
from nanoshape.training import TrainOptions, _targets, run_training
from nanoshape.trainingdata import training_batch


def polygon(n, rounding, phi):
    return PolygonParams(jnp.int32(n), jnp.float32(rounding), jnp.float32(phi))


def eq1(p, d, l_ratio, phi):
    return ShapeParams(jnp.float32(p), jnp.int32(d), jnp.float32(l_ratio), jnp.float32(phi))


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7])
@pytest.mark.parametrize("rounding", [1e-4, 0.3, 1.0])
def test_polygon_area_is_the_minkowski_sum_area(n, rounding):
    # inner n-gon of inradius 1 - rho (area n tan(pi/n) a^2, perimeter 2 n tan(pi/n) a) plus a disc of radius rho
    t, a = n * math.tan(math.pi / n), 1 - rounding
    exact = t * a * a + 2 * t * a * rounding + math.pi * rounding**2
    assert float(area(polygon(n, rounding, 0.4), n=8192)) == pytest.approx(exact, rel=2e-4)


def test_moment_axes_of_any_family_are_its_second_moment_axes():
    """The fitted sizes' axes (4 sqrt of the covariance's eigenvalues): a square of inradius 1 (side
    2) has both 4 sqrt(1/3), a disc of radius 1 both 2; eq. 1 through the interface is shape.moment_axes."""
    from nanoshape.family import moment_axes
    from nanoshape.shape import moment_axes as eq1_moment_axes

    np.testing.assert_allclose(moment_axes(polygon(4, 1e-4, 0.3), 8192), 4 * math.sqrt(1 / 3), rtol=2e-3)
    np.testing.assert_allclose(moment_axes(polygon(6, 1.0, 0.3)), 2.0, rtol=1e-4)
    shape = eq1(2.0, 2, 2.0, 0.3)  # [(2 cos)^2 + sin^2]^(-1/2): the ellipse of semi-axes 1 and 1/2
    np.testing.assert_array_equal(moment_axes(shape), eq1_moment_axes(shape))
    np.testing.assert_allclose(moment_axes(shape), [2.0, 1.0], rtol=1e-4)


def test_polygon_radius_invariances():
    theta = jnp.linspace(0, 2 * jnp.pi, 301)
    shape = polygon(5, 0.2, 0.3)
    r = ROUNDED_POLYGON.radius(theta, shape)
    # a turn by 2 pi / n draws the same shape; the side's normal (theta = phi) is at the inradius
    np.testing.assert_allclose(ROUNDED_POLYGON.radius(theta + 2 * jnp.pi / 5, shape), r, rtol=1e-5)
    assert float(ROUNDED_POLYGON.radius(jnp.float32(0.3), shape)) == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(ROUNDED_POLYGON.radius(theta, polygon(4, 1.0, 0.7)), 1.0, rtol=1e-5)
    canonical = ROUNDED_POLYGON.canonicalize(polygon(5, 0.2, 0.3 + 3 * 2 * math.pi / 5))
    assert float(canonical.phi) == pytest.approx(0.3, abs=1e-5)


def test_log_slope_by_autodiff_matches_finite_differences_and_eq1():
    theta = jnp.linspace(0.05, 6.2, 97)
    h = 1e-3
    for family, shape in ((ROUNDED_POLYGON, polygon(3, 0.4, 0.2)), (SUPERELLIPSE, eq1(3.0, 3, 1.5, 0.4))):
        r, slope = family.log_slope(theta, shape)
        numeric = (jnp.log(family.radius(theta + h, shape)) - jnp.log(family.radius(theta - h, shape))) / (2 * h)
        np.testing.assert_allclose(slope, numeric, atol=2e-2)
        np.testing.assert_allclose(r, family.radius(theta, shape), rtol=1e-6)


def test_generic_renderer_draws_eq1_as_its_own_kernel():
    """Eq. 1 drawn through the family path (arctan2, radius, jvp slope) matches the fast kernel
    (complex powers, analytic R'/R): the generic path is right wherever eq. 1 is."""
    for shape in (eq1(2.0, 2, 2.0, 0.3), eq1(6.0, 4, 1.3, 1.1), eq1(0.8, 5, 1.0, 0.2)):
        center, scale = jnp.asarray([31.3, 32.6]), jnp.float32(18.0)
        fast = _edge_field(shape, center, scale, 64, 64)
        generic = _family_edge_field(shape, center, scale, 64, 64)
        np.testing.assert_allclose(generic[0], fast[0], atol=2e-3)  # f = S R - r, px
        inside = np.asarray(fast[0]) > -3  # the slope matters at the edge
        np.testing.assert_allclose(np.asarray(generic[3])[inside], np.asarray(fast[3])[inside], atol=2e-2)


def test_polygon_silhouette_matches_a_supersampled_polygon():
    shape, center, scale, size, factor = polygon(3, 0.15, 0.5), (31.3, 32.6), 12.0, 64, 8
    coverage = np.asarray(silhouette(shape, jnp.asarray(center), jnp.float32(scale), height=size, width=size))
    offsets = (np.arange(factor) + 0.5) / factor - 0.5
    coords = (np.arange(size)[:, None] + offsets[None, :]).ravel()
    xs, ys = np.meshgrid(coords - center[0], coords - center[1])
    boundary = scale * np.asarray(ROUNDED_POLYGON.radius(jnp.asarray(np.arctan2(ys, xs), jnp.float32), shape))
    truth = (np.hypot(xs, ys) <= boundary).reshape(size, factor, size, factor).mean(axis=(1, 3))
    assert np.abs(coverage - truth).max() < 0.2
    assert abs(coverage.sum() - truth.sum()) / truth.sum() < 2e-3


def test_out_of_range_d_is_refused_not_drawn_wrongly():
    with pytest.raises(ValueError, match="1..6"):
        ShapePrior(d_values=(2, 8))
    with pytest.raises(ValueError, match="d in 1..7"):
        silhouette(eq1(2.0, 8, 1.5, 0.0), jnp.asarray([32.0, 32.0]), jnp.float32(10.0), height=64, width=64)
    with pytest.raises(ValueError, match="supports n_sides"):
        TrainOptions(polygon_prior=PolygonPrior(n_sides_values=(3, 9))).with_family("polygon")
    # d = 7, the largest the kernel draws, is drawn as shape.radius says
    shape = eq1(3.0, 7, 1.4, 0.3)
    drawn = np.asarray(silhouette(shape, jnp.asarray([64.0, 64.0]), jnp.float32(40.0), height=129, width=129)) > 0.5
    ys, xs = np.mgrid[:129, :129] - 64.0
    truth = np.hypot(xs, ys) <= 40.0 * np.asarray(radius(jnp.asarray(np.arctan2(ys, xs), jnp.float32), shape))
    assert (drawn & truth).sum() / (drawn | truth).sum() > 0.98


def test_targets_index_the_classes_without_clipping():
    options = CNNOptions(family="polygon")
    shapes = PolygonParams(jnp.asarray([3, 7, 5], jnp.int32), jnp.asarray([0.1, 0.5, 0.9]), jnp.asarray([0.1, 0.2, 1.0]))
    t = _targets(shapes, options)
    np.testing.assert_array_equal(t["d_index"], [0, 4, 2])
    np.testing.assert_allclose(t["log_rounding"], np.log([0.1, 0.5, 0.9]), rtol=1e-6)
    # the phase target is -n phi (see the equivariance test): a turn by the period 2 pi / n is no change
    np.testing.assert_allclose(t["phi_vec"][:, 0], np.cos(np.array([3 * 0.1, 7 * 0.2, 5 * 1.0])), atol=1e-6)
    np.testing.assert_allclose(t["phi_vec"][:, 1], -np.sin(np.array([3 * 0.1, 7 * 0.2, 5 * 1.0])), atol=1e-6)
    eq1_targets = _targets(ShapeParams(jnp.asarray([2.0]), jnp.asarray([6], jnp.int32), jnp.asarray([0.5]),
                                       jnp.asarray([0.3])), CNNOptions())
    assert int(eq1_targets["d_index"][0]) == 5 and float(eq1_targets["log_l"][0]) == 0.0


def test_the_polar_polygon_model_is_equivariant_to_quarter_turns():
    """A quarter turn leaves log rounding and the class logits as they are and turns class n's
    phase vector by n pi / 2 (harmonic n)."""
    options = CNNOptions(family="polygon")
    crops, _ = training_batch(jax.random.key(3), 6, prior=PolygonPrior())
    turned = jnp.rot90(crops, k=1, axes=(1, 2))
    model = ShapeCNN(options, rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    state["out"]["kernel"].set_value(0.1 * jax.random.normal(jax.random.key(1), state["out"]["kernel"].get_value().shape))
    nnx.update(model, state)
    forward = nnx.jit(lambda model, x: model(x))  # compiled once: op by op the two calls took ~8 s
    raw, raw_turned = np.asarray(forward(model, crops)), np.asarray(forward(model, turned))
    layout = options.layout
    invariant = np.r_[layout["log_rounding"], layout["logvar_phi"], layout["d"]]
    np.testing.assert_allclose(raw[:, invariant], raw_turned[:, invariant], rtol=1e-4, atol=1e-5)
    pairs, pairs_turned = (r[:, layout["phase"]].reshape(len(r), 5, 2) for r in (raw, raw_turned))
    for k, n in enumerate(ROUNDED_POLYGON.classes):
        before = np.arctan2(pairs[:, k, 1], pairs[:, k, 0])
        after = np.arctan2(pairs_turned[:, k, 1], pairs_turned[:, k, 0])
        assert np.abs(np.mod(after - before - n * np.pi / 2 + np.pi, 2 * np.pi) - np.pi).max() < 1e-3
        # the training target turns the same way: the turned particle is the polygon at phi - pi/2
        # (a target turning the other way, (cos n phi, sin n phi), left odd n's phase unlearnable:
        # a 3,000-step run predicted -phi + const for triangles and pentagons)
        shapes = PolygonParams(jnp.full(2, n, jnp.int32), jnp.full(2, 0.2), jnp.asarray([0.3, 0.3 - np.pi / 2]))
        target = np.asarray(_targets(shapes, options)["phi_vec"])
        turn = np.arctan2(target[1, 1], target[1, 0]) - np.arctan2(target[0, 1], target[0, 0])
        assert abs(np.mod(turn - n * np.pi / 2 + np.pi, 2 * np.pi) - np.pi) < 1e-4, n


def _short_polygon_options() -> TrainOptions:
    return TrainOptions(steps=2, batch_size=8, validation_size=16, test_size=16, checkpoint_every=2,
                        validation_every=2, warmup_steps=1, render_chunk=8).with_family("polygon")


def _check_polygon_predictions(model):
    crops, _ = training_batch(jax.random.key(5), 8, prior=PolygonPrior())
    out = predict(model, np.asarray(crops))
    assert set(out["n_sides"]) <= set(ROUNDED_POLYGON.classes)
    assert out["n_sides_probs"].shape == (8, 5) and np.all(out["rounding"] > 0)
    assert np.all((out["phi"] >= 0) & (out["phi"] < 2 * np.pi / out["n_sides"] + 1e-6))
    return crops


@pytest.mark.slow  # ~37 s on a 2-core Xeon; fast in the default run: training (tests/test_cnn.py::
# test_resumed_run_equals_an_uninterrupted_one) and a polygon model in the analysis (test_a_polygon_model_analyses_particles)
def test_a_short_polygon_training_run_saves_a_model_of_its_family(tmp_path):
    options = _short_polygon_options()
    assert options.model.family == "polygon" and options.model.std_scales == (1.0, 1.0)
    model = load_model(run_training(options, tmp_path / "run", evaluate=False))
    assert model.options.family == "polygon" and len(model.options.std_scales) == 2
    assert model.options.std_scales != (1.0, 1.0)  # calibrated on the polygon validation set
    _check_polygon_predictions(model)


@pytest.mark.slow
def test_a_short_polygon_training_run_scores_its_test_set(tmp_path):
    run_training(_short_polygon_options(), tmp_path / "run")
    figures = __import__("json").loads((tmp_path / "run" / "test.json").read_text())
    assert {"median_abs_error_log_rounding", "coverage90_log_rounding", "d_exact_fraction"} <= set(figures)
    assert 0 < figures["jaccard_median"] <= 1


def test_a_polygon_model_analyses_particles(tmp_path):
    from nanoshape.cnn import save_model
    from nanoshape.pipeline import SHAPE_COLUMNS, AnalyzeOptions, ShapeOptions, _add_shape_parameters, nan_reasons

    model_dir = save_model(ShapeCNN(CNNOptions(family="polygon"), rngs=nnx.Rngs(0)), tmp_path / "model")
    crops = _check_polygon_predictions(load_model(model_dir))
    with pytest.raises(ValueError, match="trained for the polygon family"):
        table = pd.DataFrame({"particle_id": [1]})
        _add_shape_parameters(table, np.asarray(crops[:1]), AnalyzeOptions(shape=ShapeOptions(model=str(model_dir))), {})
    # the family's columns, fitted to the pixels and refined from the CNN's start; eq. 1's NaN with a reason
    options = AnalyzeOptions(shape=ShapeOptions(model=str(model_dir), family="polygon"))
    table = pd.DataFrame({"particle_id": [1, 2]})
    timings = {}
    _add_shape_parameters(table, np.asarray(crops[:2]), options, timings, window_px=np.full(2, 64.0),
                          pixel_size_nm=0.5)
    assert set(SHAPE_COLUMNS) <= set(table) and table["p"].isna().all() and table["shape_family"].eq("polygon").all()
    assert set(table["n_sides"]) <= set(ROUNDED_POLYGON.classes) and (table["rounding"] > 0).all()
    assert (table["jaccard_refined"] >= table["jaccard_cnn"]).all() and table["jaccard_refined"].min() > 0.9
    # the image fit ran by default: its parameters, its Jaccard (the refinement's start) and the fitted sizes
    assert "image_fit_s" in timings and set(table["n_sides_image"]) <= set(ROUNDED_POLYGON.classes)
    assert table[["rounding_image", "phi_image_rad", "jaccard_image"]].notna().all().all()
    assert (table["jaccard_refined"] >= table["jaccard_image"]).all() and table["jaccard_image"].min() > 0.5
    mask_diameter_nm = 0.5 * 2 * np.sqrt(np.asarray(crops[:2, ..., 1]).sum(axis=(1, 2)) / np.pi)  # 1 crop px = 0.5 nm
    np.testing.assert_allclose(table["equivalent_diameter_fit_nm"], mask_diameter_nm, rtol=0.2)  # not px, not a radius
    assert (table["major_axis_fit_nm"] >= table["minor_axis_fit_nm"]).all()
    reasons = nan_reasons(table, options)
    assert reasons.str.contains("shape.family=polygon").all() and not reasons.str.contains("image_fit").any()
    # without the image fit its columns are NaN, and say why
    off = AnalyzeOptions(shape=ShapeOptions(model=str(model_dir), family="polygon", image_fit=False, refine=False))
    table = pd.DataFrame({"particle_id": [1, 2]})
    _add_shape_parameters(table, np.asarray(crops[:2]), off, {})
    assert table[["n_sides_image", "rounding_image", "phi_image_rad", "jaccard_image"]].isna().all().all()
    assert "equivalent_diameter_fit_nm" not in table
    assert nan_reasons(table, off).str.contains("phi_image_rad jaccard_image n_sides_image rounding_image: "
                                                "shape.image_fit=false; jaccard_refined: shape.refine=false").all()
    with pytest.raises(ValueError, match="unknown shape family 'gielis'"):
        ShapeOptions(family="gielis")


def test_fit_masks_recovers_rounded_polygons_from_their_masks():
    from nanoshape.familyfit import fit_masks

    truth = [(3, 0.1, 0.4), (4, 0.5, 0.1), (5, 0.05, 1.0), (6, 0.3, 0.2)]
    masks = np.stack([np.asarray(silhouette(polygon(*t), jnp.asarray([31.5, 30.0]), jnp.float32(18.0),
                                            height=64, width=64)) > 0.5 for t in truth]).astype(np.float32)
    fit = fit_masks(masks, family="polygon")
    np.testing.assert_array_equal(fit["n_sides"], [t[0] for t in truth])
    # the corner radius within 2 px (inradius 18 px): a binary mask resolves no finer corner
    # (measured: the pentagon's 0.9 px corner fits as 2.8 px at a mask Jaccard of 0.998)
    np.testing.assert_allclose(fit["rounding"], [t[1] for t in truth], atol=2 / 18)
    period = 2 * np.pi / np.array([t[0] for t in truth])
    phi_error = np.abs(np.mod(fit["phi"] - np.array([t[2] for t in truth]) + period / 2, period) - period / 2)
    assert phi_error.max() < 0.05
    assert fit["jaccard_refined"].min() > 0.98 and np.all(fit["jaccard_refined"] >= fit["jaccard_init"])
    # the run's saved outline of a row of a polygon run, drawn from its own columns
    from skimage.draw import polygon2mask

    from nanoshape.views import fitted_outlines

    inside = masks[0] > 0.5
    ys, xs = np.nonzero(inside)
    row = pd.DataFrame({"particle_id": [1], "centroid_x_px": [xs.mean()], "centroid_y_px": [ys.mean()],
                        "n_sides": fit["n_sides"][:1], "rounding": fit["rounding"][:1], "phi_rad": fit["phi"][:1],
                        "p": [np.nan], "shape_family": ["polygon"]})
    outline = polygon2mask(inside.shape, fitted_outlines(row, inside.astype(np.uint32))[0, :, ::-1])
    assert (outline & inside).sum() / (outline | inside).sum() > 0.97


def test_descriptor_reads_the_symmetry_of_any_family():
    spectra = {n: np.asarray(descriptor(polygon(n, 0.05, 0.3))) for n in (3, 4, 6)}
    for n, spectrum in spectra.items():
        assert int(np.argmax(spectrum[:7])) + 1 == n
    # eq. 1 through the interface is harmonic_spectrum itself
    shape = eq1(5.0, 2, 1.0, 0.2)
    np.testing.assert_array_equal(descriptor(shape), harmonic_spectrum(shape))


def test_groups_read_the_family_of_the_table():
    from nanoshape.groups import GroupOptions, dataset_columns, parameter_columns, shape_spectrum

    table = pd.DataFrame({"n_sides": [3, 4, 6], "rounding": [0.05, 0.05, 0.05], "phi_rad": [0.1, 0.2, 0.3],
                          "shape_family": "polygon"})
    assert parameter_columns(table) == ("rounding", "n_sides")
    assert dataset_columns(table, "parameters", GroupOptions(parameter_space="raw")) == ("rounding", "n_sides")
    spectrum = shape_spectrum(table)
    np.testing.assert_array_equal(np.argmax(spectrum[:, :7], axis=1) + 1, [3, 4, 6])


def test_registry():
    assert get_family("polygon") is ROUNDED_POLYGON and set(FAMILIES) == {"superellipse", "polygon"}
    assert family_of(polygon(4, 0.2, 0.0)) is ROUNDED_POLYGON and family_of(eq1(2.0, 2, 1.0, 0.0)) is SUPERELLIPSE
    with pytest.raises(ValueError, match="known: superellipse, polygon"):
        get_family("gielis")


@pytest.mark.parametrize("command, message", [
    (["train", "shape.family=gielis"], "unknown shape family 'gielis'"),
    (["train", "shape.family=polygon", "train.polygon_prior.n_sides_values=[3,9]"], "supports n_sides in"),
    (["train", "train.prior.d_values=[2,8]"], "d must be in 1..6"),
    (["analyze", "shape.family=polygon"], "of the superellipse family, not shape.family=polygon"),
])
def test_the_command_line_refuses_a_wrong_family_before_writing(tmp_path, command, message):
    from nanoshape.cli import main

    with pytest.raises(SystemExit, match=message):
        main([*command, f"output={tmp_path / 'run'}"])
    # (analyze checks that its output can be written first, as for any model problem)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_a_particle_table_names_its_family_and_an_older_table_is_eq1():
    import pandas as pd

    from nanoshape.family import table_family

    assert table_family(pd.DataFrame({"shape_family": ["polygon"], "p": [1.0]})) is ROUNDED_POLYGON
    assert table_family(pd.DataFrame({"p": [1.0]})) is SUPERELLIPSE  # a table of a run before families existed
    assert table_family(pd.DataFrame({"shape_family": [None]})) is SUPERELLIPSE  # no shape parameters
    with pytest.raises(ValueError, match="unknown shape family"):
        table_family(pd.DataFrame({"shape_family": ["blob"]}))
