"""Refine the CNN's shape against the particle's pixels: a maximum a posteriori image fit.

The CNN reads (p, d, L, phi) off a crop in one pass, less precisely than the image allows
(most of all p of boxy particles). This stage takes its answer as a prior and fits the
crop's intensity channel with the imaging model the training particles were rendered with:

    y(x) = a * blur_sigma(1 - exp(-mu t(x))) + b0 + bx * x + by * y + noise,

``mu t`` the shape's optical density with its dome and contrast
(:func:`nanoshape.render.particle_thickness`, :func:`nanoshape.render.optical_density`),
``blur_sigma`` a Gaussian PSF; ``a`` and the background plane are solved in closed form at
every step (variable projection), leaving nine unknowns: log p, log L, phi, centre (x, y),
log scale, contrast, dome and log blur. The cost is
``1/2 sum(residual^2) / (sigma^2 u^2) + w/2 sum(((theta - cnn) / cnn_std)^2)`` over
(log p, log L, phi): ``sigma`` the background pixels' spread, ``u`` the crop's upsampling
factor, ``w`` :attr:`ImageFitOptions.prior_weight`. Levenberg-Marquardt in a fixed number of
iterations (``lax.scan``), vmapped over particles; a second d the CNN finds probable is fitted
too, and the d with the lower cost plus -log P(d) kept. Crops of small windows
(:attr:`ImageFitOptions.coarse_window_px`) are fitted on their 2 x 2 block means.

Any shape family (:mod:`nanoshape.family`) is fitted the same way: its shape unknowns are
the logarithms of its continuous parameters and its phase (rounded polygons: log rounding,
phi; eight unknowns in all), its discrete parameter plays d's part. The model image is drawn
by :func:`nanoshape.render.particle_thickness`, which draws eq. 1 with its analytic kernel
and any other family from its ``radius`` and ``log_slope``; the Jacobian is forward-mode
autodiff through either.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import expit

from nanoshape.batching import pad_rows, pieces
from nanoshape.family import SUPERELLIPSE, ShapeFamily, get_family, placement
from nanoshape.refine import mask_moments
from nanoshape.render import gaussian_blur_matrix, optical_density, particle_thickness
from nanoshape.xla_cache import keep_traces

__all__ = ["ImageFitOptions", "fit_image"]

#: unknowns after the shape's: centre (x, y), log scale, contrast and dome logits, log blur
_N_NUISANCE = 6


def _n_shape(family: ShapeFamily) -> int:
    """The family's shape unknowns: the logarithm of each continuous parameter, and phi."""
    return len(family.continuous) + 1


def _shape(theta: jax.Array, discrete: jax.Array, family: ShapeFamily):
    """The family's parameters of a fitted vector (log continuous..., phi, ...)."""
    k = len(family.continuous)
    return family.make(discrete, tuple(jnp.exp(theta[i]) for i in range(k)), theta[k])


@dataclass(frozen=True)
class ImageFitOptions:
    """Options of :func:`fit_image` (static).

    Attributes:
      iterations: Levenberg-Marquardt iterations (fixed: a compiled loop).
      prior_weight: weight of the CNN's Gaussian prior on log p, log L and phi against the
        image (1 = the predicted variances at face value).
      nuisance_std: standard deviation of a weak prior holding the nuisance unknowns
        (centre in crop px, log scale, the contrast and dome logits, log blur) near their
        start, so that a direction the image does not constrain stays put.
      blur_px_range: range of the fitted blur (crop pixels).
      second_d_min_prob: also fit the second most probable d (another family's discrete
        parameter) where the CNN gives it at least this probability (1 = never).
      bucket_sizes: crops per compiled call: each call takes the largest size that the
        crops left fill, the last few are padded to the smallest, so a small micrograph does
        not pay for a large batch and each size compiles once.
      coarse_window_px: a crop whose window in the micrograph is at most this many pixels
        across was upsampled at least twice into its S x S crop, so its 2 x 2 block means (an
        S/2 grid) hold all the micrograph's pixels: it is fitted on that grid, at about a
        quarter of the cost (0: every crop on the full grid).

    log p and log L (another family's continuous parameters) stay inside the ranges of the
    prior the CNN was trained on (:class:`nanoshape.shape.ShapePrior`, the family's prior).
    """

    iterations: int = 10
    prior_weight: float = 3.0
    nuisance_std: float = 3.0
    blur_px_range: tuple[float, float] = (0.2, 6.0)
    second_d_min_prob: float = 0.05
    bucket_sizes: tuple[int, ...] = (16, 64, 256)
    coarse_window_px: float = 32.0

    def __post_init__(self):
        if self.iterations < 0:
            raise ValueError(f"image_fit.iterations must be >= 0, got {self.iterations}")
        if not (self.prior_weight > 0 and self.nuisance_std > 0):
            raise ValueError(f"image_fit.prior_weight and image_fit.nuisance_std must be > 0, got "
                             f"{self.prior_weight} and {self.nuisance_std}")
        if not 0 < self.blur_px_range[0] < self.blur_px_range[1]:
            raise ValueError(f"image_fit.blur_px_range must be (low, high) with 0 < low < high, got {self.blur_px_range}")
        if not 0 <= self.second_d_min_prob <= 1:
            raise ValueError(f"image_fit.second_d_min_prob must be in [0, 1], got {self.second_d_min_prob}")
        if not self.bucket_sizes or min(self.bucket_sizes) < 1:
            raise ValueError(f"image_fit.bucket_sizes must be positive sizes, got {self.bucket_sizes}")


def _absorbed(theta: jax.Array, d: jax.Array, size: int, family: ShapeFamily = SUPERELLIPSE) -> jax.Array:
    """Absorbed fraction 1 - exp(-mu t) of the shape ``theta`` on a size x size grid, before the blur.

    ``theta``: the family's shape unknowns (eq. 1: log p, log L, phi), then centre (x, y),
    log scale, contrast and dome logits, log blur; ``d`` the family's discrete parameter.
    """
    k = _n_shape(family)
    shape = _shape(theta, d, family)
    coverage, thickness = particle_thickness(shape, theta[k : k + 2], jnp.exp(theta[k + 2]),
                                             jax.nn.sigmoid(theta[k + 4]), height=size, width=size)
    contrast = 0.02 + 0.96 * jax.nn.sigmoid(theta[k + 3])
    return -jnp.expm1(-optical_density(coverage, thickness, contrast))


def _model_image(theta: jax.Array, d: jax.Array, size: int, family: ShapeFamily = SUPERELLIPSE) -> jax.Array:
    """Blurred absorbed fraction 1 - exp(-mu t) of the shape ``theta`` on a size x size grid."""
    blur = gaussian_blur_matrix(size, jnp.exp(theta[theta.shape[0] - 1]))
    return blur @ _absorbed(theta, d, size, family) @ blur.T


def _model_image_and_jacobian(theta: jax.Array, d: jax.Array, size: int,
                              family: ShapeFamily = SUPERELLIPSE) -> tuple[jax.Array, jax.Array]:
    """:func:`_model_image` and its Jacobian (size, size, u) in theta's u unknowns (eq. 1: 9).

    The blur is linear in the image and its matrix depends on the last unknown (log blur)
    alone, so the unblurred image's Jacobian (forward mode, u - 1 tangents) is blurred as one
    stack of matrix products, and the blur's own derivative is added for the last. With
    forward mode through the whole model instead (the blur as shifted copies, which XLA on
    the CPU does not fuse across the tangents) the fit ran 3.7 times slower
    (``benchmarks/bench_imagefit.py``).
    """
    last = theta.shape[0] - 1
    absorbed, tangent = jax.linearize(lambda t: _absorbed(jnp.concatenate([t, theta[last:]]), d, size, family),
                                      theta[:last])
    jac = jax.vmap(tangent, out_axes=2)(jnp.eye(last, dtype=theta.dtype))  # (S, S, u - 1)
    blur, blur_tangent = jax.jvp(lambda log_sigma: gaussian_blur_matrix(size, jnp.exp(log_sigma)), (theta[last],),
                                 (jnp.ones_like(theta[last]),))
    image = blur @ absorbed @ blur.T
    jac = jnp.einsum("ij,jkn,lk->iln", blur, jac, blur)
    sigma_column = blur_tangent @ absorbed @ blur.T + blur @ absorbed @ blur_tangent.T
    return image, jnp.concatenate([jac, sigma_column[..., None]], axis=2)


def _log_bounds(family: ShapeFamily) -> tuple[list[float], list[float]]:
    """Lower and upper bounds of the logarithms of the family's continuous parameters: its
    training prior's ranges (``<name>_range`` of ``family.prior_type()``)."""
    prior = family.prior_type()
    ranges = [getattr(prior, f"{c.name}_range") for c in family.continuous]
    return [math.log(r[0]) for r in ranges], [math.log(r[1]) for r in ranges]


def _fit_one(crop: jax.Array, start: jax.Array, std: jax.Array, d: jax.Array, upsample: jax.Array,
             options: ImageFitOptions, pixel: int = 1, family: ShapeFamily = SUPERELLIPSE):
    """The fit of one crop on its own grid, whose pixel is ``pixel`` pixels of the S x S crop (1 or 2):
    the nuisance prior on the centre and the blur's range are in crop pixels, so the fit is the
    same problem on either grid."""
    size = crop.shape[0]
    n_shape = _n_shape(family)
    n_unknowns = n_shape + _N_NUISANCE
    y, mask = crop[..., 0], crop[..., 1]
    area, centroid = mask_moments((mask > 0.5).astype(jnp.float32))
    center, scale = placement(_shape(start, d, family), area, centroid)
    theta0 = jnp.concatenate([start, center, jnp.log(scale)[None], jnp.zeros(2), jnp.zeros(1)])
    # noise: the spread of the background pixels (shot noise and film texture)
    background = mask < 0.02
    count = jnp.maximum(jnp.sum(background, dtype=jnp.float32), 1.0)
    mean = jnp.sum(jnp.where(background, y, 0.0)) / count
    variance = jnp.sum(jnp.where(background, (y - mean) ** 2, 0.0)) / count
    data_scale = jax.lax.rsqrt(jnp.maximum(variance, 1e-6)) / upsample
    coords = jnp.linspace(-1.0, 1.0, size, dtype=jnp.float32)
    xs = jnp.broadcast_to(coords[None, :], (size, size)).ravel()
    ys = jnp.broadcast_to(coords[:, None], (size, size)).ravel()
    ones = jnp.ones(size * size, jnp.float32)
    prior_scale = math.sqrt(options.prior_weight) / jnp.maximum(std, 1e-3)
    # centre in grid px (nuisance_std crop px = nuisance_std / pixel grid px); the rest unitless
    nuisance_scale = jnp.asarray([pixel, pixel] + [1.0] * (_N_NUISANCE - 2), jnp.float32) / options.nuisance_std

    def image_residuals(image):
        basis = jnp.stack([image.ravel(), ones, xs, ys], axis=1)
        gram = basis.T @ basis + 1e-6 * jnp.eye(4)
        coefficients = jnp.linalg.solve(gram, basis.T @ y.ravel())
        return (y.ravel() - basis @ coefficients) * data_scale

    def parameter_residuals(theta):
        return jnp.concatenate([(theta[:n_shape] - start) * prior_scale,
                                (theta[n_shape:] - theta0[n_shape:]) * nuisance_scale])

    def residuals(theta):
        return jnp.concatenate([image_residuals(_model_image(theta, d, size, family)), parameter_residuals(theta)])

    def residuals_and_jacobian(theta):
        image, image_jac = _model_image_and_jacobian(theta, d, size, family)
        data, linear = jax.linearize(image_residuals, image)
        data_jac = jax.vmap(linear, in_axes=2, out_axes=1)(image_jac)  # (S * S, n_unknowns)
        return (jnp.concatenate([data, parameter_residuals(theta)]),
                jnp.concatenate([data_jac, jax.jacfwd(parameter_residuals)(theta)]))

    log_lo, log_hi = _log_bounds(family)
    free = n_unknowns - len(log_lo) - 1  # phi and the nuisance unknowns but the blur
    lo = jnp.asarray(log_lo + [-jnp.inf] * free + [math.log(options.blur_px_range[0] / pixel)], jnp.float32)
    hi = jnp.asarray(log_hi + [jnp.inf] * free + [math.log(options.blur_px_range[1] / pixel)], jnp.float32)

    def cost(theta):
        r = residuals(theta)
        return 0.5 * jnp.sum(r * r)

    def step(carry, _):
        theta, current, damping = carry
        r, jac = residuals_and_jacobian(theta)
        hessian = jac.T @ jac
        gradient = jac.T @ r
        diagonal = jnp.diag(hessian) + 1e-6
        delta = jnp.linalg.solve(hessian + damping * jnp.diag(diagonal), -gradient)
        trial = jnp.clip(theta + delta, lo, hi)
        trial_cost = cost(trial)
        better = jnp.isfinite(trial_cost) & (trial_cost < current)
        theta = jnp.where(better, trial, theta)
        current = jnp.where(better, trial_cost, current)
        damping = jnp.clip(jnp.where(better, damping * 0.3, damping * 4.0), 1e-6, 1e6)
        return (theta, current, damping), None

    start_cost = cost(theta0)
    (theta, final_cost, _), _ = jax.lax.scan(step, (theta0, start_cost, jnp.float32(1e-2)), None,
                                             length=options.iterations)
    return theta, start_cost, final_cost


@keep_traces(static_argnames=("options", "pixel", "family"))
def _fit_batch(crops, starts, stds, ds, upsample, options: ImageFitOptions, pixel: int = 1,
               family: ShapeFamily = SUPERELLIPSE):
    return jax.vmap(functools.partial(_fit_one, options=options, pixel=pixel, family=family))(crops, starts, stds, ds,
                                                                                            upsample)


def _fit_rows(crops, starts, stds, ds, window, options: ImageFitOptions, family: ShapeFamily = SUPERELLIPSE):
    """The fit of every row, each on the grid its window calls for (:attr:`ImageFitOptions.coarse_window_px`).

    Returns theta (n, u) in crop pixels (centre, scale and blur of a coarse fit converted),
    the start's and the fit's cost.
    """
    n, size = crops.shape[0], crops.shape[1]
    k = _n_shape(family)
    coarse = (window <= options.coarse_window_px) if size % 2 == 0 else np.zeros(n, bool)
    theta = np.zeros((n, k + _N_NUISANCE), np.float32)
    cost_start, cost = np.zeros(n, np.float32), np.zeros(n, np.float32)
    for pixel, rows in ((1, np.flatnonzero(~coarse)), (2, np.flatnonzero(coarse))):
        if not len(rows):
            continue
        grid = crops[rows]
        if pixel == 2:  # 2 x 2 block means: the crop's pixels on a grid of half the side
            grid = grid.reshape(len(rows), size // 2, 2, size // 2, 2, -1).mean(axis=(2, 4))
        upsample = np.maximum(1.0, grid.shape[1] / np.maximum(window[rows], 1e-6))
        t, c0, c = _fit_all(grid, starts[rows], stds[rows], ds[rows], upsample, options, pixel, family)
        if pixel == 2:
            # grid px -> crop px: a coarse pixel's centre lies at 2 x + 0.5 crop px
            t = t.copy()
            t[:, k : k + 2] = 2 * t[:, k : k + 2] + 0.5
            t[:, k + 2] += math.log(2)
            t[:, k + 5] += math.log(2)
        theta[rows], cost_start[rows], cost[rows] = t, c0, c
    return theta, cost_start, cost


def _fit_all(crops, starts, stds, ds, upsample, options: ImageFitOptions, pixel: int = 1,
             family: ShapeFamily = SUPERELLIPSE):
    """:func:`_fit_batch` over every row, in batches padded to ``options.bucket_sizes``."""
    parts = []
    # padding rows: zero crops with a unit uncertainty, the first class (eq. 1: d = 1) and no upsampling
    inputs = ((crops, np.float32, 0.0), (starts, np.float32, 0.0), (stds, np.float32, 1.0),
              (ds, np.int32, family.classes[0]), (upsample, np.float32, 1.0))
    for piece in pieces(crops.shape[0], options.bucket_sizes):
        batch = [jnp.asarray(pad_rows(a[piece.rows].astype(dtype), piece.size, fill)) for a, dtype, fill in inputs]
        theta, cost_start, cost = _fit_batch(*batch, options, pixel, family)
        parts.append(tuple(np.asarray(out)[: piece.count] for out in (theta, cost_start, cost)))
    if not parts:
        return (np.zeros((0, _n_shape(family) + _N_NUISANCE), np.float32), np.zeros(0, np.float32),
                np.zeros(0, np.float32))
    return tuple(np.concatenate([part[i] for part in parts]) for i in range(3))


def fit_image(
    crops: np.ndarray,
    start: dict[str, np.ndarray],
    *,
    window_px: np.ndarray | None = None,
    options: ImageFitOptions = ImageFitOptions(),
    family: str | ShapeFamily = SUPERELLIPSE,
) -> dict[str, np.ndarray]:
    """Refine shape parameters against the crops' intensity channel.

    Args:
      crops: (n, S, S, C) crops of :func:`nanoshape.crop.crop_particle` (channel 0 the
        normalised intensity, channel 1 the mask).
      start: the CNN's prediction (:func:`nanoshape.cnn.predict`): ``p``, ``d``,
        ``l_ratio``, ``phi`` and the uncertainties ``p_log_std``, ``l_ratio_log_std``,
        ``phi_std``; with ``d_probs`` (n, 6) (and ``phi_by_d``, the phase read for each d)
        the second most probable d is fitted too where its probability reaches
        ``options.second_d_min_prob``, and the d with the lower cost (plus -log of its
        probability) is kept. For another family the same with its names (those of a model
        of that family's ``predict``: its parameters, ``<continuous>_log_std``,
        ``phi_std``, ``<discrete>_probs``, ``phi_by_<discrete>``).
      window_px: (n,) side of each crop's window in the micrograph's pixels; a window
        smaller than S was upsampled, and its pixels count as (S / window)^2 fewer samples.
        None: every window taken as S (no upsampling).
      options: see :class:`ImageFitOptions`.
      family: the shape family (:mod:`nanoshape.family`, a name or a family; eq. 1 by default).

    Returns:
      dict of (n,) arrays: ``p``, ``d``, ``l_ratio`` (>= 1), ``phi`` in [0, pi) (another
      family: its parameters in canonical form); ``cost_start`` and ``cost``: the negative
      log posterior (given d) of the start and of the fit kept (for the start's d the fit
      never raises it; a second d is kept when its cost plus -log P(d) is the lower);
      ``blur_px``, ``dome``, ``contrast`` (the fitted imaging values), ``scale_px`` (the
      unit radius in crop pixels).

    Examples:
      >>> import jax, numpy as np
      >>> from nanoshape.family import PolygonPrior
      >>> from nanoshape.trainingdata import training_batch
      >>> prior = PolygonPrior(n_sides_values=(6,), rounding_range=(0.5, 0.5))  # a well-rounded hexagon
      >>> crops, truth = training_batch(jax.random.key(0), 1, prior=prior)
      >>> start = {"n_sides": np.array([6]), "rounding": np.array([0.1], np.float32), "phi": np.asarray(truth.phi),
      ...          "rounding_log_std": np.array([1.0], np.float32), "phi_std": np.array([0.2], np.float32)}
      >>> fit = fit_image(np.asarray(crops), start, family="polygon", options=ImageFitOptions(bucket_sizes=(1,)))
      >>> error = lambda rounding: abs(float(np.log(rounding[0] / truth.rounding[0])))  # in log rounding
      >>> int(fit["n_sides"][0]), error(fit["rounding"]) < 0.5 * error(start["rounding"])
      (6, True)
    """
    family = get_family(family)
    crops = np.asarray(crops, np.float32)
    if crops.ndim != 4 or crops.shape[1] != crops.shape[2] or crops.shape[3] < 2:
        raise ValueError(f"fit_image expects crops of (n, S, S, >= 2), got {crops.shape}")
    n, size = crops.shape[0], crops.shape[1]
    k = len(family.continuous)
    missing = [name for name in (*family.columns, *(c.std_name for c in family.continuous), "phi_std")
               if name not in start]
    if missing:
        raise ValueError(f"fit_image: start is missing {missing} (the {family.name} family's parameters and "
                         f"uncertainties, as its CNN's predict gives them)")
    starts = np.stack([np.log(np.maximum(start[c.name], c.floor) if c.floor > 0 else start[c.name])
                       for c in family.continuous] + [start["phi"]], axis=1)
    stds = np.stack([start[c.std_name] for c in family.continuous] + [start["phi_std"]], axis=1)
    ds = np.array(start[family.discrete], np.int32)  # a copy: a second class may replace the start's
    classes = np.asarray(family.classes)
    if not np.isin(ds, classes).all():
        raise ValueError(f"fit_image: {family.discrete} must be in {family.classes}, got "
                         f"{sorted(set(ds.tolist()) - set(family.classes))}")
    window = np.full(n, float(size)) if window_px is None else np.asarray(window_px, np.float64)
    if window.shape != (n,):
        raise ValueError(f"fit_image: window_px has shape {window.shape} for {n} crops")
    theta, cost_start, cost = _fit_rows(crops, starts, stds, ds, window, options, family)
    probs_key, phases_key = f"{family.discrete}_probs", f"phi_by_{family.discrete}"
    if probs_key in start and n and options.second_d_min_prob < 1:
        probs = np.clip(np.asarray(start[probs_key], np.float64), 1e-12, 1.0)
        rows = np.arange(n)
        index = np.searchsorted(classes, ds)  # each row's class in the CNN's order (eq. 1: d - 1)
        others = probs.copy()
        others[rows, index] = 0.0
        second = others.argmax(axis=1)  # the most probable class other than the start's
        tried = np.flatnonzero(probs[rows, second] >= options.second_d_min_prob)
        if len(tried):
            d_second = classes[second[tried]].astype(np.int32)
            starts_second = starts[tried].copy()
            if phases_key in start:
                starts_second[:, k] = np.asarray(start[phases_key])[tried, second[tried]]
            theta_2, _, cost_2 = _fit_rows(crops[tried], starts_second, stds[tried], d_second, window[tried], options,
                                           family)
            # costs are negative log posteriors given the class: add -log P(class) and keep the smaller
            first_total = cost[tried] - np.log(probs[tried, index[tried]])
            better = cost_2 - np.log(probs[tried, second[tried]]) < first_total
            chosen = tried[better]
            theta[chosen], ds[chosen], cost[chosen] = theta_2[better], d_second[better], cost_2[better]
    if family is SUPERELLIPSE:
        shape = {"p": np.exp(theta[:, 0]).astype(np.float32), "d": ds,
                 "l_ratio": np.exp(theta[:, 1]).astype(np.float32),
                 "phi": np.mod(theta[:, 2], np.pi).astype(np.float32)}
    else:
        canonical = family.canonicalize(_shape_rows(jnp.asarray(theta), jnp.asarray(ds), family))
        shape = {name: np.asarray(getattr(canonical, name)) for name in family.columns}
    n_shape = k + 1
    return {
        **shape,
        "cost_start": cost_start,
        "cost": cost,
        "blur_px": np.exp(theta[:, n_shape + 5]).astype(np.float32),
        "dome": expit(theta[:, n_shape + 4]).astype(np.float32),
        "contrast": (0.02 + 0.96 * expit(theta[:, n_shape + 3])).astype(np.float32),
        "scale_px": np.exp(theta[:, n_shape + 2]).astype(np.float32),
    }


@functools.partial(jax.jit, static_argnames=("family",))
def _shape_rows(theta, discrete, family: ShapeFamily):
    """The family's parameters of each row of fitted vectors."""
    return jax.vmap(lambda t, c: _shape(t, c, family))(theta, discrete)
