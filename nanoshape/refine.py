"""Differentiable re-simulation: refine each particle's shape by gradient descent through the renderer.

From the CNN's (or the image fit's) (p, d, L, phi), each particle's log p, log L, phi, centre
and log scale are pushed until its silhouette (:func:`nanoshape.render.silhouette`) matches
its mask: a forward-only search over d and phases, Adam on the leading ``d_candidates`` on a
coarse grid, Adam on the best on the fine grid, and a guard that keeps the start where it
scores better, so refinement never makes a particle worse. The CNN's uncertainties set each
coordinate's step and priors that hold a confident start where the mask says little.

**Loss**: the fuzzy (Ruzicka) Jaccard distance between coverage ``a`` and mask ``b``,
``1 - sum min(a, b) / sum max(a, b) = 2 D / (S + D)`` with ``D = sum |a - b|`` (|x| smoothed)
and ``S = sum a + sum b``: the Jaccard index for binary maps, minimised by ``a = b``.
**Reported Jaccard** (``jaccard_init``, ``jaccard_refined``, :func:`fit_jaccard`): IoU of
``coverage > 0.5`` and ``mask > 0.5`` on the mask's own grid. One jitted call per bucket
(:attr:`RefineOptions.bucket_sizes`). The steps, priors and measurements: docs/methods.md,
"How shapes are refined".
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nanoshape.batching import geometric_size, pad_rows, pieces
from nanoshape.render import silhouette
from nanoshape.shape import ShapeParams, area, canonicalize, centroid
from nanoshape.xla_cache import keep_traces

__all__ = ["RefineOptions", "refine", "fit_jaccard", "moment_start", "shape_jaccard", "fuzzy_jaccard_distance",
           "binary_jaccard", "box_downsample", "mask_moments"]

#: Bounds of the fitted exponent: the renderer is stable for p in [0.1, 1000]; beyond ~200 the
#: shape no longer changes at any pixel size.
_LOG_P_RANGE = (math.log(0.1), math.log(200.0))
#: Bound of |log L|: real rods reach aspect ratios beyond 8 (EMPS).
_LOG_L_MAX = math.log(30.0)
_NUM_D = 6
#: weight of the p prior around a start given without uncertainties (a bare guess)
_BARE_GUESS_P_PRIOR_WEIGHT = 0.003
#: Angles of the quadrature that places shapes at the mask's area and centroid during the fit.
_PLACEMENT_QUADRATURE = 256


@dataclass(frozen=True)
class RefineOptions:
    """How particles are refined (static: hashable, one compilation per value).

    Attributes:
      grid_px: side of the fine fitting grid; masks are box-averaged onto it.
      coarse_grid_px: side of the grid of the search and the coarse fit.
      d_candidates: how many values of d are fitted side by side in the coarse fit (1..6).
      phase_starts: phases tried per d in the search (``phi0 + j pi / phase_starts``).
      d_prior_weight: weight of ``-log P(d)`` (the CNN's d probability) against the loss when
        ranking and choosing d; 0 trusts the mask alone.
      p_prior_weight: weight of the Gaussian prior on log p around the start (module docstring).
      shape_prior_weight: weight of the priors on log L and phi around the start (Gaussian in
        log L, periodic in phi, heavy-tailed: ``log(1 + q)`` of their penalty ``q``), for
        candidates with the start's d, times the start's probability of that d, and only
        where the caller gives their uncertainties (the CNN's); 0 = off.
      coarse_iterations, fine_iterations: Adam steps of the two fits (fixed budget).
      coarse_learning_rate, fine_learning_rate: Adam rates in units of ``step`` (see below);
        both warm up over ``warmup_fraction`` of the steps from 0, then decay to
        ``final_learning_fraction`` of themselves (cosine).
      coarse_edge_width_px: edge ramp (px of the coarse grid) at the start and end of the coarse fit.
      fine_edge_width_px: edge ramp at the start of the fine fit; it reaches 1 px halfway and stays.
      search_edge_width_px: edge ramp of the search.
      default_log_p_std, default_log_l_std, default_phi_std: uncertainty of the start when the
        caller gives none (``p_log_std``, ``l_ratio_log_std``, ``phi_std``).
      step_per_std: early step of log p, log L and phi per unit of the start's uncertainty.
      max_step_per_default: steps are clipped to [1/4, this] times the default ones.
      center_step_px, log_scale_step: early step of the centre (px of the mask grid) and log scale.
      loss_epsilon: smoothing of |a - b| in the loss.
      tolerance: converged when the fine loss changed by at most this over the last quarter of
        the fine fit (loss in units of 1 - Jaccard).
      bucket_sizes: particle counts each call is padded to (one compilation per size and mask
        side): full pieces of the largest that fits, the rest padded to the smallest that holds it.
      chunk: particles fitted at once inside a call (``lax.map`` batch; keeps intermediates in cache).
    """

    grid_px: int = 24
    coarse_grid_px: int = 24
    d_candidates: int = 2
    phase_starts: int = 8
    d_prior_weight: float = 0.1
    p_prior_weight: float = 0.1
    shape_prior_weight: float = 0.01
    coarse_iterations: int = 14
    fine_iterations: int = 20
    coarse_learning_rate: float = 1.0
    fine_learning_rate: float = 0.5
    final_learning_fraction: float = 0.1
    warmup_fraction: float = 0.2
    coarse_edge_width_px: tuple[float, float] = (3.0, 1.5)
    fine_edge_width_px: float = 1.5
    search_edge_width_px: float = 3.0
    default_log_p_std: float = 0.3
    default_log_l_std: float = 0.15
    default_phi_std: float = 0.15
    step_per_std: float = 0.5
    max_step_per_default: float = 4.0
    center_step_px: float = 0.5
    log_scale_step: float = 0.03
    loss_epsilon: float = 0.02
    tolerance: float = 2e-3
    bucket_sizes: tuple[int, ...] = (32, 512)
    chunk: int = 64

    def __post_init__(self):
        if not 1 <= self.d_candidates <= _NUM_D:
            raise ValueError(f"RefineOptions.d_candidates must be in 1..{_NUM_D}, got {self.d_candidates}")
        for name in ("grid_px", "coarse_grid_px", "phase_starts", "coarse_iterations", "chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"RefineOptions.{name} must be >= 1, got {getattr(self, name)}")
        if self.fine_iterations < 2:
            raise ValueError(f"RefineOptions.fine_iterations must be >= 2 (convergence compares two), got {self.fine_iterations}")
        if not self.bucket_sizes or any(b < 1 for b in self.bucket_sizes):
            raise ValueError(f"RefineOptions.bucket_sizes must be positive, got {self.bucket_sizes}")


class _Start(NamedTuple):
    """One particle's start (a batch under vmap): the CNN's prediction and its uncertainty."""

    log_p: jax.Array
    log_l: jax.Array
    phi: jax.Array
    d: jax.Array  # int32
    log_d_prob: jax.Array  # (6,)
    step: jax.Array  # (3,) early steps of log p, log L, phi
    log_p_std: jax.Array
    log_l_std: jax.Array  # inf: no prior on log L
    phi_std: jax.Array  # inf: no prior on phi


def _area_matrix(out_size: int, in_size: int) -> np.ndarray:
    """(out, in) box-filter weights: output pixel k averages the input pixels it overlaps."""
    edges = np.arange(out_size + 1) * (in_size / out_size)
    left = np.arange(in_size)[None, :]
    overlap = np.clip(np.minimum(edges[1:, None], left + 1) - np.maximum(edges[:-1, None], left), 0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def box_downsample(image: jax.Array, size: int) -> jax.Array:
    """Area-average a square image onto a ``size x size`` grid covering the same extent."""
    weights = jnp.asarray(_area_matrix(size, image.shape[0]))
    return weights @ image @ weights.T


def _shape(theta: jax.Array, d: jax.Array) -> ShapeParams:
    """ShapeParams of a fitted vector (log p, log L, phi, centre x, centre y, log scale)."""
    p = jnp.exp(jnp.clip(theta[0], *_LOG_P_RANGE))
    l_ratio = jnp.exp(jnp.clip(theta[1], -_LOG_L_MAX, _LOG_L_MAX))
    return ShapeParams(p, d, l_ratio, theta[2])


def _coverage(theta: jax.Array, d: jax.Array, side_px: int, grid_px: int, edge_width_px) -> jax.Array:
    """Silhouette of a fitted vector (centre and scale on the ``side_px`` mask grid) on a ``grid_px`` grid.

    The grids cover the same square: pixel i of the mask spans [i, i + 1) in edge coordinates,
    so a centre x on the mask grid is ``(x + 1/2) grid / side - 1/2`` on the fitting grid.
    """
    zoom = grid_px / side_px
    center = (theta[3:5] + 0.5) * zoom - 0.5
    return silhouette(
        _shape(theta, d), center, jnp.exp(theta[5]) * zoom, height=grid_px, width=grid_px, edge_width_px=edge_width_px
    )


def fuzzy_jaccard_distance(a: jax.Array, b: jax.Array, epsilon: float = 0.0) -> jax.Array:
    """1 - sum min(a, b) / sum max(a, b) for maps in [0, 1], written as 2 D / (S + D).

    ``D = sum |a - b|`` (with ``|x|`` smoothed to ``sqrt(x^2 + epsilon^2) - epsilon``) and
    ``S = sum a + sum b``. The Jaccard distance for binary maps; zero only at ``a = b``.
    """
    diff = a - b
    distance = jnp.sum(jnp.sqrt(diff * diff + epsilon * epsilon) - epsilon)
    return 2 * distance / jnp.maximum(jnp.sum(a) + jnp.sum(b) + distance, 1e-12)


def binary_jaccard(a: jax.Array, b: jax.Array) -> jax.Array:
    """Intersection over union of ``a > 0.5`` and ``b > 0.5`` (0 when both are empty)."""
    a, b = a > 0.5, b > 0.5
    union = jnp.sum(a | b).astype(jnp.float32)
    return jnp.sum(a & b).astype(jnp.float32) / jnp.maximum(union, 1.0)


def mask_moments(inside: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Area (px^2, at least 1) and centroid (x, y) of a binary mask; an empty mask's centroid is its centre."""
    height, width = inside.shape
    total = jnp.sum(inside)
    ys = jnp.arange(height, dtype=jnp.float32)
    xs = jnp.arange(width, dtype=jnp.float32)
    safe = jnp.maximum(total, 1.0)
    cx = jnp.where(total > 0, jnp.sum(jnp.sum(inside, axis=0) * xs) / safe, 0.5 * (width - 1))
    cy = jnp.where(total > 0, jnp.sum(jnp.sum(inside, axis=1) * ys) / safe, 0.5 * (height - 1))
    return safe, jnp.stack([cx, cy])


def _placed(log_p, log_l, phi, d, area_px, centroid_xy) -> jax.Array:
    """Fitted vector of a shape placed at a mask's area and centroid (:func:`nanoshape.shape.placement`)."""
    return _placed_phases(log_p, log_l, phi[None], d, area_px, centroid_xy)[0]


def _placed_phases(log_p, log_l, phis, d, area_px, centroid_xy) -> jax.Array:
    """:func:`_placed` for several phases of one shape, with one quadrature.

    The area does not depend on phi, and ``R(theta; phi + delta) = R(theta + 2 delta / d; phi)``:
    a phase shift turns the shape by ``-2 delta / d``, and its centroid with it.

    Returns:
      (len(phis), 6) fitted vectors.
    """
    shape = _shape(jnp.stack([log_p, log_l, phis[0], 0.0, 0.0, 0.0]), d)
    scale = jnp.sqrt(area_px / area(shape, n=_PLACEMENT_QUADRATURE))
    offset = scale * centroid(shape, n=_PLACEMENT_QUADRATURE)
    turn = -2 * (phis - phis[0]) / d.astype(jnp.float32)
    cos, sin = jnp.cos(turn), jnp.sin(turn)
    center_x = centroid_xy[0] - (cos * offset[0] - sin * offset[1])
    center_y = centroid_xy[1] - (sin * offset[0] + cos * offset[1])
    ones = jnp.ones_like(phis)
    return jnp.stack([log_p * ones, log_l * ones, phis, center_x, center_y, jnp.log(scale) * ones], axis=1)


class _Prior(NamedTuple):
    """The priors of one candidate's fit around the start.

    log p: ``p_prior_weight * ((log p - log p0) / p_log_std)^2 / 2`` added to the loss; log L
    and phi (periodic, on the canonical form): ``log(1 + q)`` of the same kind of penalty
    ``q``, times ``shape_prior_weight`` and ``shape_weight``.
    """

    log_p: jax.Array
    log_p_std: jax.Array
    log_l: jax.Array  # canonical: |log L| of the start
    log_l_std: jax.Array
    phi: jax.Array
    phi_std: jax.Array
    shape_weight: jax.Array  # of the L/phi prior: the start's P(d) where the candidate has the start's d, else 0


def _adam(theta0, d, target, *, side_px: int, step, edge_widths, learning_rate: float, prior: _Prior,
          options: RefineOptions):
    """Adam on ``theta = theta0 + z * step`` against ``target``, one step per edge width.

    Returns:
      (theta, losses): the final vector and the loss before each step.
    """
    steps = edge_widths.shape[0]
    # Adam's first steps move every coordinate by the full rate whatever its gradient: warm up
    warmup = int(round(options.warmup_fraction * steps))
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, warmup, max(steps, warmup + 1), end_value=learning_rate * options.final_learning_fraction
    )
    optimizer = optax.adam(schedule)

    def loss(z, edge_width):
        theta = theta0 + z * step
        coverage = _coverage(theta, d, side_px, target.shape[0], edge_width)
        deviation = (theta[0] - prior.log_p) / prior.log_p_std
        prior_term = options.p_prior_weight * 0.5 * deviation * deviation
        if options.shape_prior_weight > 0:
            # on the canonical form (the start's L and phi are canonical); p plays no part here
            canonical = canonicalize(ShapeParams(theta[0], d, jnp.exp(theta[1]), theta[2]))
            l_term = 0.5 * ((jnp.log(canonical.l_ratio) - prior.log_l) / prior.log_l_std) ** 2
            # periodic in pi, (phi - phi0)^2 / (2 sigma^2) for small differences
            phi_term = (1 - jnp.cos(2 * (canonical.phi - prior.phi))) / (4 * prior.phi_std ** 2)
            # heavy-tailed (Cauchy-like: log(1 + q)): small deviations cost what the Gaussian
            # says, a mask that disagrees by many sigma (a confident start on an unusual real
            # particle) can still pull the fit away
            prior_term = prior_term + options.shape_prior_weight * prior.shape_weight * jnp.log1p(l_term + phi_term)
        return fuzzy_jaccard_distance(coverage, target, options.loss_epsilon) + prior_term

    def body(carry, edge_width):
        z, state = carry
        value, grad = jax.value_and_grad(loss)(z, edge_width)
        # a degenerate pixel (0/0 at an exact cusp) must not poison the particle
        grad = jnp.where(jnp.isfinite(grad), grad, 0.0)
        # optax's bias correction raises a Python float to an int32 count: allowed by standard promotion only
        with jax.numpy_dtype_promotion("standard"):
            updates, state = optimizer.update(grad, state, z)
        return (optax.apply_updates(z, updates), state), value

    z = jnp.zeros_like(theta0)
    (z, _), losses = jax.lax.scan(body, (z, optimizer.init(z)), edge_widths)
    return theta0 + z * step, losses


class _Fit(NamedTuple):
    theta: jax.Array  # (6,) on the mask grid
    d: jax.Array
    converged: jax.Array
    jaccard_init: jax.Array
    jaccard_refined: jax.Array
    fine_losses: jax.Array


# a kept trace of _refine_bucket (nanoshape.xla_cache.keep_traces) returns a _Fit
jax.export.register_namedtuple_serialization(_Fit, serialized_name="nanoshape.refine._Fit")


def _refine_one(mask: jax.Array, start: _Start, options: RefineOptions) -> _Fit:
    """Refine one particle (the four stages of the module docstring). ``mask``: (S, S) in [0, 1]."""
    side = mask.shape[0]
    inside = (mask > 0.5).astype(jnp.float32)
    area_px, centroid_xy = mask_moments(inside)
    coarse_px = min(options.coarse_grid_px, side)
    fine_px = min(options.grid_px, side)
    coarse = box_downsample(inside, coarse_px)
    fine = box_downsample(inside, fine_px)

    # 1. search
    ds = jnp.arange(1, _NUM_D + 1, dtype=jnp.int32)
    phases = start.phi + jnp.arange(options.phase_starts, dtype=jnp.float32) * (math.pi / options.phase_starts)

    def search(d):
        thetas = _placed_phases(start.log_p, start.log_l, phases, d, area_px, centroid_xy)
        coverages = jax.vmap(lambda theta: _coverage(theta, d, side, coarse_px, options.search_edge_width_px))(thetas)
        losses = jax.vmap(lambda c: fuzzy_jaccard_distance(c, coarse, options.loss_epsilon))(coverages)
        return losses, thetas

    losses, thetas = jax.vmap(search)(ds)
    best_phase = jnp.argmin(losses, axis=1)
    score = jnp.min(losses, axis=1) - options.d_prior_weight * start.log_d_prob
    _, top = jax.lax.top_k(-score, options.d_candidates)
    candidates = thetas[top, best_phase[top]]
    candidate_d = ds[top]

    # 2. coarse fit of every candidate
    def prior(d):
        # the CNN's L and phi belong to its d: the prior binds as much as the CNN believes that d
        # (near-circles, drawn alike by every d, get a weak one)
        belief = jnp.exp(start.log_d_prob[start.d - 1])
        # one stacked array split into the fields: scalars passed one by one compile to other fused
        # loops, whose last bits differ, and the Adam steps amplify them (results would change)
        return _Prior(*jnp.stack([start.log_p, start.log_p_std, jnp.abs(start.log_l), start.log_l_std, start.phi,
                                  start.phi_std, (d == start.d).astype(jnp.float32) * belief]))

    step = jnp.concatenate([start.step, jnp.asarray([options.center_step_px] * 2 + [options.log_scale_step], jnp.float32)])
    first, last = options.coarse_edge_width_px
    coarse_edges = jnp.asarray(np.geomspace(first, last, options.coarse_iterations), jnp.float32)
    fitted, _ = jax.vmap(
        lambda theta, d: _adam(theta, d, coarse, side_px=side, step=step, edge_widths=coarse_edges,
                               learning_rate=options.coarse_learning_rate, prior=prior(d), options=options)
    )(candidates, candidate_d)
    final = jax.vmap(
        lambda theta, d: fuzzy_jaccard_distance(_coverage(theta, d, side, coarse_px, last), coarse, options.loss_epsilon)
    )(fitted, candidate_d)
    final = jnp.where(jnp.isfinite(final), final, jnp.inf) - options.d_prior_weight * start.log_d_prob[candidate_d - 1]
    best = jnp.argmin(final)

    # 3. fine fit of the best
    ramp = max(options.fine_iterations // 2, 1)
    fine_edges = np.ones(options.fine_iterations)
    fine_edges[:ramp] = np.geomspace(options.fine_edge_width_px, 1.0, ramp)
    theta, fine_losses = _adam(
        fitted[best], candidate_d[best], fine, side_px=side, step=step, edge_widths=jnp.asarray(fine_edges, jnp.float32),
        learning_rate=options.fine_learning_rate, prior=prior(candidate_d[best]), options=options,
    )
    d = candidate_d[best]

    # 4. guard: never return worse than the start
    def fine_loss(theta, d):
        return fuzzy_jaccard_distance(_coverage(theta, d, side, fine_px, 1.0), fine, options.loss_epsilon)

    def mask_jaccard(theta, d):
        return binary_jaccard(_coverage(theta, d, side, side, 1.0), inside)

    theta_init = _placed(start.log_p, start.log_l, start.phi, start.d, area_px, centroid_xy)
    loss_fit, loss_init = fine_loss(theta, d), fine_loss(theta_init, start.d)
    jaccard_fit, jaccard_init = mask_jaccard(theta, d), mask_jaccard(theta_init, start.d)
    # worse on the fine grid's loss, or on the Jaccard the caller reports (the mask's own grid)
    keep_init = ~(loss_fit <= loss_init) | (jaccard_fit < jaccard_init)
    theta = jnp.where(keep_init, theta_init, theta)
    d = jnp.where(keep_init, start.d, d)

    quarter = max(options.fine_iterations // 4, 1)
    settled = jnp.abs(fine_losses[-1] - fine_losses[-1 - quarter]) <= options.tolerance
    converged = settled & ~keep_init & (jnp.sum(inside) > 0)
    return _Fit(theta, d, converged, jaccard_init, jnp.where(keep_init, jaccard_init, jaccard_fit), fine_losses)


@keep_traces(static_argnames=("options",))
def _refine_bucket(masks: jax.Array, start: _Start, options: RefineOptions) -> _Fit:
    return jax.lax.map(
        lambda args: _refine_one(args[0], args[1], options), (masks, start), batch_size=min(options.chunk, masks.shape[0])
    )


def _square(masks: np.ndarray) -> np.ndarray:
    """Pad (n, H, W) masks with zeros at the bottom and right to (n, S, S), S = max(H, W)."""
    n, height, width = masks.shape
    side = max(height, width)
    if height == width:
        return masks
    out = np.zeros((n, side, side), np.float32)
    out[:, :height, :width] = masks
    return out


def _starts(init: Mapping[str, np.ndarray], n: int, options: RefineOptions) -> _Start:
    """The batched start from the caller's arrays (validated), with steps from the uncertainties."""
    missing = [k for k in ("p", "d", "l_ratio", "phi") if k not in init]
    if missing:
        raise ValueError(f"refine: init is missing {missing}; it needs 'p', 'd', 'l_ratio', 'phi'")

    def column(name, dtype, default=None):
        if name not in init:
            return np.full(n, default, dtype)
        values = np.asarray(init[name], dtype).reshape(-1)
        if values.shape != (n,):
            raise ValueError(f"refine: init[{name!r}] has {values.shape[0]} values for {n} masks")
        return values

    p, l_ratio, phi = column("p", np.float32), column("l_ratio", np.float32), column("phi", np.float32)
    d = column("d", np.int32)
    if not np.all((d >= 1) & (d <= _NUM_D)):
        raise ValueError(f"refine: init['d'] must be in 1..{_NUM_D}, got values {np.unique(d)}")
    if not (np.all(p > 0) and np.all(l_ratio > 0)):
        raise ValueError("refine: init['p'] and init['l_ratio'] must be positive")
    if "d_probs" in init:
        probs = np.asarray(init["d_probs"], np.float32)
        if probs.shape != (n, _NUM_D):
            raise ValueError(f"refine: init['d_probs'] must be ({n}, {_NUM_D}), got {probs.shape}")
    else:
        # no probabilities: the start's d is preferred by a little (0.016 in loss units at
        # the default weight), the others are equal
        probs = np.ones((n, _NUM_D), np.float32)
        probs[np.arange(n), d - 1] = np.exp(0.016 / max(options.d_prior_weight, 1e-6))
        probs /= probs.sum(axis=1, keepdims=True)
    log_d_prob = np.log(np.clip(probs, 1e-6, 1.0))
    defaults = np.asarray([options.default_log_p_std, options.default_log_l_std, options.default_phi_std], np.float32)
    std = np.stack(
        [
            column("p_log_std", np.float32, defaults[0]),
            column("l_ratio_log_std", np.float32, defaults[1]),
            column("phi_std", np.float32, defaults[2]),
        ],
        axis=1,
    )
    default_step = options.step_per_std * defaults
    step = np.clip(options.step_per_std * np.nan_to_num(std, nan=1.0), 0.25 * default_step,
                   options.max_step_per_default * default_step)
    # the prior on log p binds only where the caller says how sure the start is (the CNN);
    # a bare guess gets a wide one
    log_p_std = np.clip(np.nan_to_num(std[:, 0], nan=defaults[0]), 0.02, 10.0)
    if "p_log_std" not in init:
        # as weak as a weight of _BARE_GUESS_P_PRIOR_WEIGHT would make it
        log_p_std = log_p_std * np.float32(math.sqrt(max(options.p_prior_weight, 1e-12) / _BARE_GUESS_P_PRIOR_WEIGHT))
    # priors on log L and phi only where the caller gives their uncertainties (inf: none),
    # with floors that keep an over-confident start from freezing the fit
    shape_std = [np.clip(np.nan_to_num(std[:, column], nan=np.inf), floor, np.inf).astype(np.float32)
                 if name in init else np.full(n, np.inf, np.float32)
                 for column, name, floor in ((1, "l_ratio_log_std", 0.005), (2, "phi_std", 0.002))]
    return _Start(np.log(p), np.log(l_ratio), phi, d, log_d_prob, step.astype(np.float32), log_p_std, *shape_std)


def refine(
    masks: np.ndarray | jax.Array,
    init: Mapping[str, np.ndarray],
    *,
    options: RefineOptions = RefineOptions(),
) -> dict[str, np.ndarray]:
    """Refine every particle's shape parameters so its rendered silhouette matches its mask.

    Args:
      masks: (n, H, W) particle masks in [0, 1] (> 0.5 is inside), typically channel 1 of
        :func:`nanoshape.crop.crop_labels` crops: the particle should fill most of the window.
      init: the start, arrays of (n,): ``p``, ``d``, ``l_ratio``, ``phi`` (any equivalent form;
        canonical from the CNN); optional ``d_probs`` (n, 6) and uncertainties ``p_log_std``,
        ``l_ratio_log_std``, ``phi_std``.
      options: static options (see :class:`RefineOptions`).

    Returns:
      dict of (n,) arrays: canonical ``p``, ``d``, ``l_ratio``, ``phi``; ``center_x_px``,
      ``center_y_px``, ``scale_px`` on the mask grid (render with
      ``silhouette(shape, (center_x_px, center_y_px), scale_px, height=H, width=W)``);
      ``jaccard_init`` (the start placed at the mask's area and centroid), ``jaccard_refined``
      (both IoU on the mask grid, see the module docstring); ``converged`` (bool).

    Example:
      >>> out = refine(crops[..., 1], cnn_prediction)  # doctest: +SKIP
    """
    masks = np.asarray(masks, np.float32)
    if masks.ndim != 3:
        raise ValueError(f"refine: masks must be (n, H, W), got shape {masks.shape}")
    n = masks.shape[0]
    start = _starts(init, n, options)
    masks = _square(np.nan_to_num(masks))
    results = []
    for piece in pieces(n, options.bucket_sizes):
        # padded with copies of the piece's first particle: valid data, dropped afterwards
        fit = _refine_bucket(jnp.asarray(pad_rows(masks[piece.rows], piece.size)),
                             jax.tree.map(lambda a: jnp.asarray(pad_rows(a[piece.rows], piece.size)), start), options)
        # canonical parameters on the padded bucket: one compilation per bucket size, not per n
        canonical = _canonical_batch(fit.theta, fit.d)
        results.append(jax.tree.map(lambda a: np.asarray(a)[: piece.count], (fit, canonical)))
    if not results:
        empty = np.zeros(0, np.float32)
        return {k: empty for k in ("p", "l_ratio", "phi", "center_x_px", "center_y_px", "scale_px",
                                   "jaccard_init", "jaccard_refined")} | {
            "d": np.zeros(0, np.int32), "converged": np.zeros(0, bool)}
    fit, (shape, l_fit) = jax.tree.map(lambda *parts: np.concatenate(parts), *results)
    theta = fit.theta
    # (p, d, 1/L, phi + pi/2) draws the shape of (p, d, L, phi) scaled by L: keep the drawn size
    scale_px = np.exp(theta[:, 5]) / np.where(l_fit < 1, l_fit, 1.0)
    return {
        "p": np.asarray(shape.p),
        "d": np.asarray(shape.d),
        "l_ratio": np.asarray(shape.l_ratio),
        "phi": np.asarray(shape.phi),
        "center_x_px": theta[:, 3],
        "center_y_px": theta[:, 4],
        "scale_px": scale_px.astype(np.float32),
        "jaccard_init": fit.jaccard_init,
        "jaccard_refined": fit.jaccard_refined,
        "converged": fit.converged,
    }


@jax.jit
def _canonical_batch(theta: jax.Array, d: jax.Array) -> tuple[ShapeParams, jax.Array]:
    """Canonical shapes of fitted vectors (n, 6) and the fitted (possibly < 1) L of each."""
    fitted = jax.vmap(_shape)(theta, d)
    return canonicalize(fitted), fitted.l_ratio


def moment_start(masks: np.ndarray | jax.Array) -> dict[str, np.ndarray]:
    """A start without a CNN: the ellipse of each mask's second moments, with wide uncertainties.

    ``p = 2``, ``d = 2``, ``L = sqrt(lambda_1 / lambda_2)`` of the central second moments
    (pixels as unit squares), and ``phi = pi/2 - theta_major`` (for d = 2 and L > 1 the major
    axis of eq. 1 lies at ``theta = pi/2 - phi``). ``d_probs`` are uniform, so the search
    alone ranks d; ``p_log_std = 1`` lets p move far.

    Args:
      masks: (n, H, W) masks in [0, 1] (> 0.5 is inside).

    Returns:
      dict of (n,) arrays for :func:`refine`'s ``init``.
    """
    inside = (np.asarray(masks, np.float32) > 0.5).astype(np.float64)
    n, height, width = inside.shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    total = np.maximum(inside.sum(axis=(1, 2)), 1.0)
    cx = (inside * xs).sum(axis=(1, 2)) / total
    cy = (inside * ys).sum(axis=(1, 2)) / total
    dx = xs[None] - cx[:, None, None]
    dy = ys[None] - cy[:, None, None]
    cxx = (inside * dx * dx).sum(axis=(1, 2)) / total + 1 / 12
    cyy = (inside * dy * dy).sum(axis=(1, 2)) / total + 1 / 12
    cxy = (inside * dx * dy).sum(axis=(1, 2)) / total
    half_trace, root = 0.5 * (cxx + cyy), np.sqrt(0.25 * (cxx - cyy) ** 2 + cxy**2)
    l_ratio = np.sqrt((half_trace + root) / np.maximum(half_trace - root, 1e-12))
    theta_major = 0.5 * np.arctan2(2 * cxy, cxx - cyy)
    return {
        "p": np.full(n, 2.0, np.float32),
        "d": np.full(n, 2, np.int32),
        "l_ratio": np.clip(l_ratio, 1.0, math.exp(_LOG_L_MAX)).astype(np.float32),
        "phi": np.mod(0.5 * np.pi - theta_major, np.pi).astype(np.float32),
        "d_probs": np.full((n, _NUM_D), 1 / _NUM_D, np.float32),
        "p_log_std": np.full(n, 1.0, np.float32),
        "l_ratio_log_std": np.full(n, 0.3, np.float32),
        "phi_std": np.full(n, 0.3, np.float32),
    }


@jax.jit
def _fit_jaccard_batch(masks: jax.Array, shapes: ShapeParams) -> jax.Array:
    def one(mask, shape):
        inside = (mask > 0.5).astype(jnp.float32)
        area_px, centroid_xy = mask_moments(inside)
        theta = _placed(jnp.log(shape.p), jnp.log(shape.l_ratio), shape.phi, shape.d, area_px, centroid_xy)
        return binary_jaccard(_coverage(theta, shape.d, mask.shape[0], mask.shape[0], 1.0), inside)

    return jax.vmap(one)(masks, shapes)


def fit_jaccard(masks: np.ndarray | jax.Array, shapes: ShapeParams) -> np.ndarray:
    """Jaccard of shapes placed at their masks' area and centroid (the CNN's ``jaccard_cnn``).

    Args:
      masks: (n, H, W) masks in [0, 1] (> 0.5 is inside).
      shapes: ShapeParams of (n,) arrays.

    Returns:
      (n,) IoU of ``coverage > 0.5`` and ``mask > 0.5`` on the mask grid.
    """
    masks = _square(np.asarray(masks, np.float32))
    n = masks.shape[0]
    if n == 0:
        return np.zeros(0, np.float32)
    # pad the count to a power of two (>= 32): one compilation per size class, not per micrograph
    size = geometric_size(n, smallest=32, factor=2)
    shapes = ShapeParams(*(jnp.asarray(pad_rows(np.asarray(value), size), dtype)
                           for value, dtype in zip(shapes, (jnp.float32, jnp.int32, jnp.float32, jnp.float32))))
    return np.asarray(_fit_jaccard_batch(jnp.asarray(pad_rows(masks, size)), shapes))[:n]


def shape_jaccard(a: ShapeParams, b: ShapeParams, *, grid_px: int = 128) -> jax.Array:
    """Jaccard of two shapes at equal area and coincident centroids (free of scale and position).

    Any shape family (:mod:`nanoshape.family`), even two different ones.

    Both are drawn on a ``grid_px`` square at the largest common area that keeps each inside
    0.45 of the side from the centre; IoU of ``coverage > 0.5``. One pair; vmap for batches.
    """
    from nanoshape import family

    fill = 0.45 * grid_px
    area_a, area_b = family.area(a, n=1024), family.area(b, n=1024)
    common = jnp.minimum(area_a * (fill / family.max_radius(a, n=512)) ** 2,
                         area_b * (fill / family.max_radius(b, n=512)) ** 2)
    middle = jnp.full((2,), 0.5 * (grid_px - 1), jnp.float32)
    coverages = []
    for shape, shape_area in ((a, area_a), (b, area_b)):
        scale = jnp.sqrt(common / shape_area)
        coverages.append(silhouette(shape, middle - scale * family.centroid(shape, n=1024), scale,
                                    height=grid_px, width=grid_px))
    return binary_jaccard(*coverages)
