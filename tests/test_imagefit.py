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


@pytest.mark.parametrize("d", [1, 4])
def test_the_assembled_jacobian_is_forward_mode_through_the_model(d):
    """The fit blurs the unblurred image's Jacobian and adds the blur's own derivative by
    hand; both must equal forward mode through the whole model image."""
    import jax.numpy as jnp

    from nanoshape.imagefit import _model_image, _model_image_and_jacobian

    theta = jnp.asarray([0.5, 0.3, 0.4, 31.3, 32.6, np.log(20.0), 0.2, -0.3, 0.3], jnp.float32)
    image, jac = _model_image_and_jacobian(theta, jnp.int32(d), 48)
    np.testing.assert_allclose(image, _model_image(theta, jnp.int32(d), 48), atol=1e-6)
    reference = jax.jacfwd(_model_image)(theta, jnp.int32(d), 48)
    assert jac.shape == (48, 48, 9) and np.abs(reference[..., 8]).max() > 1e-3  # the blur's column is not empty
    np.testing.assert_allclose(jac, reference, atol=1e-5 * np.abs(reference).max())


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
