"""The image fit: it moves a wrong start toward the truth, never raises its cost, and its prior holds."""

import dataclasses

import jax
import numpy as np
import pytest

from nanoshape.crop import CropOptions, window_sides
from nanoshape.imagefit import ImageFitOptions, fit_image
from nanoshape.render import Imaging
from nanoshape.shape import ShapePrior
from nanoshape.trainingdata import training_batch

N = 16
OPTIONS = ImageFitOptions(bucket_sizes=(N,))


@pytest.fixture(scope="module")
def particles():
    """Rendered test crops of moderate p, well exposed, with their truths and window sides."""
    prior = ShapePrior(p_range=(1.5, 8.0))
    imaging = Imaging(dose_range=(1000.0, 3000.0), texture_range=(0.0, 0.02))
    crops, truth, extent = training_batch(jax.random.key(7), N, prior=prior, imaging=imaging, with_extent=True,
                                          extent_fraction_range=(0.5, 0.9))
    return np.asarray(crops), jax.tree.map(np.asarray, truth), 1.3 * np.asarray(extent)


def wrong_start(truth, offset):
    """The truth with log p shifted by ``offset`` and broad, honest uncertainties."""
    return {"p": (truth.p * np.exp(offset)).astype(np.float32), "d": truth.d, "l_ratio": truth.l_ratio,
            "phi": truth.phi, "p_log_std": np.full(N, 0.5, np.float32),
            "l_ratio_log_std": np.full(N, 0.1, np.float32), "phi_std": np.full(N, 0.1, np.float32)}


def test_the_fit_moves_a_wrong_p_toward_the_truth(particles):
    crops, truth, window = particles
    offsets = np.where(np.arange(N) % 2 == 0, 0.5, -0.5)
    fit = fit_image(crops, wrong_start(truth, offsets), window_px=window, options=OPTIONS)
    before = np.abs(offsets)
    after = np.abs(np.log(fit["p"]) - np.log(truth.p))
    assert np.median(after) < 0.4 * np.median(before)
    assert np.all(fit["cost"] <= fit["cost_start"] * (1 + 1e-5))
    assert np.all(fit["d"] == truth.d)
    assert np.all(fit["l_ratio"] >= 1) and np.all((fit["phi"] >= 0) & (fit["phi"] < np.pi))
    assert np.all((fit["blur_px"] >= 0.2) & (fit["blur_px"] <= 6.0))


def test_a_heavy_prior_holds_the_start(particles):
    crops, truth, window = particles
    start = wrong_start(truth, np.full(N, 0.5))
    held = fit_image(crops, start, window_px=window, options=dataclasses.replace(OPTIONS, prior_weight=1e6))
    np.testing.assert_allclose(np.log(held["p"]), np.log(start["p"]), atol=0.02)


def test_a_second_d_is_tried_and_kept_where_the_image_prefers_it(particles):
    crops, truth, window = particles
    wrong = (truth.d % 6) + 1  # another d, preferred by the start
    probs = np.full((N, 6), 0.0, np.float32)
    probs[np.arange(N), wrong - 1] = 0.6
    probs[np.arange(N), truth.d - 1] = 0.4
    phi_by_d = np.repeat(truth.phi[:, None], 6, axis=1)
    start = wrong_start(truth, np.zeros(N)) | {"d": wrong, "d_probs": probs, "phi_by_d": phi_by_d}
    tried = fit_image(crops, start, window_px=window, options=OPTIONS)
    assert np.mean(tried["d"] == truth.d) >= 0.75
    kept = fit_image(crops, start, window_px=window, options=dataclasses.replace(OPTIONS, second_d_min_prob=1.0))
    assert np.all(kept["d"] == wrong)


def test_the_fit_refuses_crops_without_a_mask_channel():
    with pytest.raises(ValueError, match="fit_image expects crops"):
        fit_image(np.zeros((2, 64, 64, 1), np.float32), {})


def test_window_sides_are_the_crop_windows():
    labels = np.zeros((100, 100), np.int32)
    labels[10:30, 10:20] = 1  # 20 x 10: the window is the larger side with the margin each way
    labels[50:55, 60:90] = 3
    sides = window_sides(labels, np.array([3, 1]), CropOptions(margin=0.25))
    np.testing.assert_allclose(sides, [30 * 1.5, 20 * 1.5])
    with pytest.raises(ValueError, match="particle id 2"):
        window_sides(labels, np.array([2]))


def test_the_blur_matrix_is_the_renderers_blur():
    from nanoshape.render import gaussian_blur, gaussian_blur_matrix

    image = jax.random.uniform(jax.random.key(3), (40, 40))
    for sigma in (0.3, 1.7, 5.0):
        blur = gaussian_blur_matrix(40, sigma)
        np.testing.assert_allclose(blur @ image @ blur.T, gaussian_blur(image, sigma), atol=1e-5)


@pytest.mark.parametrize("family, d, shape_unknowns", [("superellipse", 1, [0.5, 0.3, 0.4]),
                                                      ("superellipse", 4, [0.5, 0.3, 0.4]),
                                                      ("polygon", 3, [np.log(0.2), 0.4]),
                                                      ("polygon", 6, [np.log(0.5), 0.1])])
def test_the_assembled_jacobian_is_forward_mode_through_the_model(family, d, shape_unknowns):
    """The fit blurs the unblurred image's Jacobian and adds the blur's own derivative by
    hand; both must equal forward mode through the whole model image, for eq. 1 (nine
    unknowns) and the rounded polygons (eight: log rounding, phi, then the same nuisances)."""
    import jax.numpy as jnp

    from nanoshape.family import get_family
    from nanoshape.imagefit import _model_image, _model_image_and_jacobian

    family = get_family(family)
    theta = jnp.asarray(shape_unknowns + [31.3, 32.6, np.log(20.0), 0.2, -0.3, 0.3], jnp.float32)
    u = theta.shape[0]
    # jitted (d traced, so both d of a family share one compilation): op by op it took 8-16 s
    image, jac = jax.jit(_model_image_and_jacobian, static_argnums=(2, 3))(theta, jnp.int32(d), 48, family)
    np.testing.assert_allclose(image, jax.jit(_model_image, static_argnums=(2, 3))(theta, jnp.int32(d), 48, family),
                               atol=1e-6)
    reference = jax.jit(jax.jacfwd(_model_image), static_argnums=(2, 3))(theta, jnp.int32(d), 48, family)
    assert jac.shape == (48, 48, u) and np.abs(reference[..., u - 1]).max() > 1e-3  # the blur's column is not empty
    assert np.abs(reference[..., : u - 6]).max(axis=(0, 1)).min() > 1e-3  # every shape unknown moves the image
    np.testing.assert_allclose(jac, reference, atol=1e-5 * np.abs(reference).max())


@pytest.fixture(scope="module")
def polygons():
    """Rendered rounded polygons (well exposed) with their truths and window sides."""
    from nanoshape.family import PolygonPrior

    imaging = Imaging(dose_range=(1000.0, 3000.0), texture_range=(0.0, 0.02))
    crops, truth, extent = training_batch(jax.random.key(11), N, prior=PolygonPrior(rounding_range=(0.1, 0.8)),
                                          imaging=imaging, with_extent=True, extent_fraction_range=(0.6, 0.9))
    return np.asarray(crops), jax.tree.map(np.asarray, truth), 1.3 * np.asarray(extent)


def test_a_polygon_fit_moves_a_wrong_rounding_toward_the_truth_and_corrects_the_number_of_sides(polygons):
    """The image fit of another family: its continuous parameter (log rounding) from a start
    0.8 off, and its discrete one (n_sides) where the CNN's probabilities favour a wrong n
    (0.6) over the true one (0.4)."""
    from nanoshape.family import ROUNDED_POLYGON

    crops, truth, window = polygons
    classes = np.asarray(ROUNDED_POLYGON.classes)
    offsets = np.where(np.arange(N) % 2 == 0, 0.8, -0.8)
    wrong_n = np.where(truth.n_sides == 6, 5, truth.n_sides + 1).astype(np.int32)
    probs = np.zeros((N, len(classes)), np.float32)
    probs[np.arange(N), np.searchsorted(classes, wrong_n)] = 0.6
    probs[np.arange(N), np.searchsorted(classes, truth.n_sides)] = 0.4
    start = {"n_sides": wrong_n, "rounding": np.minimum(truth.rounding * np.exp(offsets), 1.0).astype(np.float32),
             "phi": truth.phi, "rounding_log_std": np.full(N, 1.0, np.float32), "phi_std": np.full(N, 0.1, np.float32),
             "n_sides_probs": probs, "phi_by_n_sides": np.repeat(truth.phi[:, None], len(classes), axis=1)}
    fit = fit_image(crops, start, window_px=window, options=OPTIONS, family="polygon")
    assert np.mean(fit["n_sides"] == truth.n_sides) >= 0.75
    right = fit["n_sides"] == truth.n_sides
    before = np.abs(np.log(start["rounding"] / truth.rounding))[right]
    after = np.abs(np.log(fit["rounding"] / truth.rounding))[right]
    assert np.median(after) < 0.4 * np.median(before)
    period = 2 * np.pi / fit["n_sides"]
    assert np.all((fit["phi"] >= 0) & (fit["phi"] < period + 1e-6))
    phi_error = np.abs(np.mod(fit["phi"] - truth.phi + period / 2, period) - period / 2)[right]
    assert np.median(phi_error) < 0.05
    assert np.all((fit["rounding"] >= 0.03 * 0.999) & (fit["rounding"] <= 0.9 * 1.001))  # the prior's range
    kept = fit_image(crops, start, window_px=window, family="polygon",
                     options=dataclasses.replace(OPTIONS, second_d_min_prob=1.0))
    assert np.all(kept["n_sides"] == wrong_n) and np.all(kept["cost"] <= kept["cost_start"] * (1 + 1e-5))


def test_a_polygon_start_without_its_uncertainties_is_refused():
    with pytest.raises(ValueError, match="missing \\['rounding_log_std'\\]"):
        fit_image(np.zeros((1, 16, 16, 2), np.float32), {"n_sides": [4], "rounding": [0.2], "phi": [0.0],
                                                        "phi_std": [0.1]}, family="polygon")
    with pytest.raises(ValueError, match="n_sides must be in"):
        fit_image(np.zeros((1, 16, 16, 2), np.float32), {"n_sides": [9], "rounding": [0.2], "phi": [0.0],
                                                        "phi_std": [0.1], "rounding_log_std": [1.0]}, family="polygon")


def test_small_windows_are_fitted_on_the_half_grid_with_the_full_grids_answer():
    """A crop whose window was upsampled at least twice is fitted on its 2 x 2 block means; the
    answer (shape, scale and blur in crop pixels) is that of the full grid, and the fit still
    moves a wrong p toward the truth."""
    prior = ShapePrior(p_range=(1.5, 8.0))
    imaging = Imaging(dose_range=(1000.0, 3000.0), texture_range=(0.0, 0.02))
    crops, truth, extent = training_batch(jax.random.key(8), N, prior=prior, imaging=imaging, with_extent=True,
                                          extent_fraction_range=(0.2, 0.35))
    crops, truth, window = np.asarray(crops), jax.tree.map(np.asarray, truth), 1.3 * np.asarray(extent)
    assert np.all(window <= OPTIONS.coarse_window_px)
    offsets = np.where(np.arange(N) % 2 == 0, 0.5, -0.5)
    start = wrong_start(truth, offsets)
    coarse = fit_image(crops, start, window_px=window, options=OPTIONS)
    full = fit_image(crops, start, window_px=window, options=dataclasses.replace(OPTIONS, coarse_window_px=0.0))
    assert not np.array_equal(coarse["p"], full["p"])  # the half grid was used
    after = np.abs(np.log(coarse["p"]) - np.log(truth.p))
    assert np.median(after) < 0.5 * np.median(np.abs(offsets))
    assert np.median(np.abs(np.log(coarse["p"] / full["p"]))) < 0.1
    np.testing.assert_allclose(np.median(coarse["scale_px"] / full["scale_px"]), 1.0, atol=0.03)
    np.testing.assert_allclose(np.median(coarse["blur_px"] / full["blur_px"]), 1.0, atol=0.25)
    assert np.all((coarse["blur_px"] >= 0.2 * 0.999) & (coarse["blur_px"] <= 6.0 * 1.001))
    assert np.all(coarse["cost"] <= coarse["cost_start"] * (1 + 1e-5))
