"""Fitting any shape family to particle masks by gradient descent through the renderer.

:func:`fit_masks` is the one entry point for every family: eq. 1 (``superellipse``) goes to
:func:`nanoshape.refine.refine` (its search, priors and guard, measured on rendered and
EMPS particles); any other family of :mod:`nanoshape.family` is fitted here, generically,
from nothing but the family's radius:

1. **Search** (forward only): every class of the family's discrete parameter (or those the
   CNN gives some probability) with ``phase_starts`` phases spread over the class's period,
   each placed at the mask's area and centroid; classes are ranked by their best loss minus
   ``class_prior_weight`` times the log of their probability, and the leading
   ``class_candidates`` are kept with their best phase.
2. **Fit**: Adam on (the logarithms of the continuous parameters, phi, centre, log scale)
   of the candidates side by side on a ``grid_px`` grid, the edge ramp narrowing from
   ``edge_width_px[0]`` to ``[1]``; the loss is the fuzzy Jaccard distance of
   :func:`nanoshape.refine.fuzzy_jaccard_distance`.
3. **Guard**: the best candidate is kept only where its Jaccard with the mask (on the
   mask's own grid, ``coverage > 0.5`` against ``mask > 0.5``) beats the start's.

Every function works on one particle and is vmapped over the masks, in one compiled call.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nanoshape.batching import pad_rows, pieces
from nanoshape.family import ShapeFamily, get_family, placement
from nanoshape.refine import binary_jaccard, box_downsample, fuzzy_jaccard_distance, mask_moments
from nanoshape.render import silhouette

__all__ = ["FamilyFitOptions", "fit_masks"]


@dataclass(frozen=True)
class FamilyFitOptions:
    """How :func:`fit_masks` fits a family other than eq. 1 (static: hashable).

    Attributes:
      grid_px: side of the fitting grid (masks are box-averaged onto it).
      phase_starts: phases tried per class in the search, spread over the class's period.
      class_candidates: classes fitted side by side after the search.
      class_prior_weight: weight of ``-log P(class)`` (the start's probabilities) in the ranking.
      iterations: Adam steps.
      learning_rate: peak Adam rate (cosine decay, short warm-up).
      edge_width_px: edge ramp width at the first and the last step (on the fitting grid).
      loss_epsilon: smoothing of |a - b| in the loss (as :class:`nanoshape.refine.RefineOptions`;
        0 has no gradient where the maps agree).
      batch: masks per compiled call (the last call is padded: one compilation).
    """

    grid_px: int = 32
    phase_starts: int = 8
    class_candidates: int = 3
    class_prior_weight: float = 0.01
    iterations: int = 80
    learning_rate: float = 0.05
    edge_width_px: tuple[float, float] = (2.0, 1.0)
    loss_epsilon: float = 0.02
    batch: int = 64


def _params(family: ShapeFamily, theta: jax.Array, discrete: jax.Array):
    """Family parameters of a fitted vector (log continuous..., phi, centre x, centre y, log scale)."""
    k = len(family.continuous)
    values = tuple(jnp.exp(jnp.clip(theta[i], *c.fit_range)) for i, c in enumerate(family.continuous))
    return family.make(discrete, values, theta[k])


def _coverage(family, theta, discrete, side_px: int, grid_px: int, edge_width_px) -> jax.Array:
    """Silhouette of a fitted vector (centre and scale on the ``side_px`` mask grid) on a ``grid_px`` grid."""
    k = len(family.continuous)
    zoom = grid_px / side_px
    center = (theta[k + 1 : k + 3] + 0.5) * zoom - 0.5
    return silhouette(_params(family, theta, discrete), center, jnp.exp(theta[k + 3]) * zoom,
                      height=grid_px, width=grid_px, edge_width_px=edge_width_px)


def _placed(family, log_values, phi, discrete, area_px, centroid_xy) -> jax.Array:
    """Fitted vector of a shape placed at a mask's area and centroid."""
    params = family.make(discrete, tuple(jnp.exp(v) for v in log_values), phi)
    center, scale = placement(params, area_px, centroid_xy)
    return jnp.concatenate([jnp.stack(log_values), phi[None], center, jnp.log(scale)[None]])


def _fit_one(mask: jax.Array, log_values: jax.Array, phi: jax.Array, discrete: jax.Array, log_probs: jax.Array,
             family: ShapeFamily, options: FamilyFitOptions) -> dict[str, jax.Array]:
    side = mask.shape[0]
    inside = (mask > 0.5).astype(jnp.float32)
    target = box_downsample(mask.astype(jnp.float32), options.grid_px)
    area_px, centroid_xy = mask_moments(inside)
    classes = jnp.asarray(family.classes, jnp.int32)
    multipliers = jnp.abs(jnp.asarray(family.phase_multipliers, jnp.float32))
    start_logs = tuple(log_values[i] for i in range(len(family.continuous)))

    def loss(theta, cls, edge_width):
        coverage = _coverage(family, theta, cls, side, options.grid_px, edge_width)
        return fuzzy_jaccard_distance(coverage, target, options.loss_epsilon)

    def search(index):
        period = 2 * jnp.pi / multipliers[index]
        phases = phi + jnp.arange(options.phase_starts, dtype=jnp.float32) * (period / options.phase_starts)
        thetas = jax.vmap(lambda ph: _placed(family, start_logs, ph, classes[index], area_px, centroid_xy))(phases)
        losses = jax.vmap(lambda th: loss(th, classes[index], options.edge_width_px[0]))(thetas)
        best = jnp.argmin(losses)
        return thetas[best], losses[best]

    thetas, losses = jax.vmap(search)(jnp.arange(len(family.classes)))
    score = losses - options.class_prior_weight * log_probs
    order = jnp.argsort(score)[: options.class_candidates]
    schedule = optax.warmup_cosine_decay_schedule(0.0, options.learning_rate, max(options.iterations // 10, 1),
                                                  options.iterations, 0.05 * options.learning_rate)
    optimizer = optax.adam(schedule)
    widths = jnp.linspace(options.edge_width_px[0], options.edge_width_px[1], options.iterations, dtype=jnp.float32)

    def descend(theta0, cls):
        def body(carry, width):
            theta, state = carry
            grads = jax.grad(loss)(theta, cls, width)
            with jax.numpy_dtype_promotion("standard"):  # optax mixes its int32 step count with floats
                updates, state = optimizer.update(grads, state, theta)
            return (optax.apply_updates(theta, updates), state), None

        (theta, _), _ = jax.lax.scan(body, (theta0, optimizer.init(theta0)), widths)
        return theta

    fitted = jax.vmap(descend)(thetas[order], classes[order])
    final = jax.vmap(lambda th, c: loss(th, c, options.edge_width_px[1]))(fitted, classes[order])
    best = jnp.argmin(final)
    theta, cls = fitted[best], classes[order][best]

    def mask_jaccard(th, c):
        return binary_jaccard(_coverage(family, th, c, side, side, 1.0), inside)

    start_index = jnp.argmax(classes == discrete)
    theta_init = _placed(family, start_logs, phi, classes[start_index], area_px, centroid_xy)
    jaccard_init, jaccard_fit = mask_jaccard(theta_init, discrete), mask_jaccard(theta, cls)
    keep = jaccard_init >= jaccard_fit
    theta = jnp.where(keep, theta_init, theta)
    cls = jnp.where(keep, discrete, cls)
    k = len(family.continuous)
    return {"theta": theta, "class": cls, "jaccard_init": jaccard_init,
            "jaccard_refined": jnp.maximum(jaccard_init, jaccard_fit), "converged": ~keep,
            "center_x_px": theta[k + 1], "center_y_px": theta[k + 2], "scale_px": jnp.exp(theta[k + 3])}


@functools.partial(jax.jit, static_argnames=("family", "options"))
def _fit_batch(masks, log_values, phi, discrete, log_probs, family, options):
    return jax.vmap(functools.partial(_fit_one, family=family, options=options))(masks, log_values, phi, discrete,
                                                                                  log_probs)


def _default_start(family: ShapeFamily, n: int) -> dict[str, np.ndarray]:
    """A start without a CNN: the geometric middle of the family's prior, every class equally likely."""
    prior = family.prior_type()
    start = {c.name: np.full(n, math.sqrt(np.prod(getattr(prior, f"{c.name}_range"))), np.float32)
             for c in family.continuous}
    classes = getattr(prior, f"{family.discrete}_values")
    probs = np.array([1.0 if c in classes else 1e-6 for c in family.classes], np.float32)
    return {**start, family.discrete: np.full(n, classes[0], np.int32), "phi": np.zeros(n, np.float32),
            f"{family.discrete}_probs": np.tile(probs / probs.sum(), (n, 1))}


def fit_masks(masks: np.ndarray, *, family: str | ShapeFamily = "superellipse", init: Mapping[str, Any] | None = None,
              options: FamilyFitOptions = FamilyFitOptions(), refine_options=None) -> dict[str, np.ndarray]:
    """Fit shapes of a family to binary (or soft) masks by gradient descent through the renderer.

    Args:
      masks: (n, S, S) masks in [0, 1], one particle each (e.g. channel 1 of
        :func:`nanoshape.crop.crop_particle`'s crops).
      family: the shape family (a name of :data:`nanoshape.family.FAMILIES` or a family).
      init: a start, arrays of (n,) named as the family's parameters (the CNN's
        :func:`nanoshape.cnn.predict` output), optionally with ``<discrete>_probs`` (n,
        classes); None starts from the middle of the family's prior (eq. 1: from the mask's
        moments, :func:`nanoshape.refine.moment_start`) and tries every class.
      options: the generic fit (families other than eq. 1).
      refine_options: :class:`nanoshape.refine.RefineOptions` for eq. 1.

    Returns:
      dict of (n,) arrays: the family's canonical parameters; ``center_x_px``,
      ``center_y_px``, ``scale_px`` on the mask grid; ``jaccard_init`` and
      ``jaccard_refined`` (IoU with the mask before and after); ``converged`` (the fit was
      kept over its start).

    Examples:
      >>> import numpy as np
      >>> from nanoshape.familyfit import fit_masks
      >>> yy, xx = np.mgrid[:64, :64]
      >>> square = ((abs(xx - 31.5) < 15) & (abs(yy - 31.5) < 15)).astype(np.float32)
      >>> fit = fit_masks(square[None], family="polygon")
      >>> int(fit["n_sides"][0]), bool(fit["jaccard_refined"][0] > 0.95)
      (4, True)
    """
    family = get_family(family)
    masks = np.asarray(masks, np.float32)
    if masks.ndim != 3 or masks.shape[1] != masks.shape[2]:
        raise ValueError(f"fit_masks: masks must be (n, S, S), got {masks.shape}")
    n = masks.shape[0]
    if family.name == "superellipse":
        from nanoshape.refine import RefineOptions, moment_start, refine

        return refine(masks, dict(init) if init is not None else moment_start(masks),
                      options=refine_options or RefineOptions())
    start = dict(init) if init is not None else _default_start(family, n)
    missing = [name for name in family.columns if name not in start]
    if missing:
        raise ValueError(f"fit_masks: init is missing {missing} (the {family.name} family's parameters)")
    discrete = np.asarray(start[family.discrete], np.int32)
    if not np.isin(discrete, family.classes).all():
        raise ValueError(f"fit_masks: {family.discrete} must be in {family.classes}, got {sorted(set(discrete) - set(family.classes))}")
    log_values = np.stack([np.log(np.asarray(start[c.name], np.float32)) for c in family.continuous], axis=1)
    probs_key = f"{family.discrete}_probs"
    probs = (np.asarray(start[probs_key], np.float32) if probs_key in start
             else np.full((n, len(family.classes)), 1 / len(family.classes), np.float32))
    arrays = [masks, log_values, np.asarray(start["phi"], np.float32), discrete, np.log(np.clip(probs, 1e-6, 1.0))]
    parts = []
    for piece in pieces(n, (options.batch,)):
        out = _fit_batch(*(jnp.asarray(pad_rows(a[piece.rows], piece.size)) for a in arrays), family, options)
        parts.append({k: np.asarray(v)[: piece.count] for k, v in out.items()})
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    if not n:
        return {**{name: np.zeros(0, np.float32) for name in family.columns},
                **{k: np.zeros(0, np.float32) for k in ("center_x_px", "center_y_px", "scale_px", "jaccard_init",
                                                         "jaccard_refined")}, "converged": np.zeros(0, bool)}
    params = family.canonicalize(jax.vmap(functools.partial(_params, family))(jnp.asarray(out["theta"]),
                                                                              jnp.asarray(out["class"])))
    return {**{name: np.asarray(getattr(params, name)) for name in family.columns},
            **{k: out[k] for k in ("center_x_px", "center_y_px", "scale_px", "jaccard_init", "jaccard_refined",
                                    "converged")}}


@functools.partial(jax.jit, static_argnames=("family",))
def _placed_jaccard_batch(masks, log_values, phi, discrete, family):
    def one(mask, logs, ph, cls):
        inside = (mask > 0.5).astype(jnp.float32)
        area_px, centroid_xy = mask_moments(inside)
        theta = _placed(family, tuple(logs[i] for i in range(len(family.continuous))), ph, cls, area_px, centroid_xy)
        return binary_jaccard(_coverage(family, theta, cls, mask.shape[0], mask.shape[0], 1.0), inside)

    return jax.vmap(one)(masks, log_values, phi, discrete)


def placed_jaccard(masks: np.ndarray, params: Mapping[str, np.ndarray], family: str | ShapeFamily) -> np.ndarray:
    """(n,) IoU of each mask with the family's shape placed at the mask's area and centroid."""
    family = get_family(family)
    log_values = np.stack([np.log(np.asarray(params[c.name], np.float32)) for c in family.continuous], axis=1)
    return np.asarray(_placed_jaccard_batch(jnp.asarray(masks, jnp.float32), jnp.asarray(log_values),
                                            jnp.asarray(params["phi"], jnp.float32),
                                            jnp.asarray(params[family.discrete], jnp.int32), family))


#: eq. 1's columns of particles.csv that a run of another family leaves NaN
_EQ1_ONLY = ("p", "d", "l_ratio", "p_cnn", "d_cnn", "l_ratio_cnn", "p_log_std", "l_ratio_log_std", "d_confidence",
             "p_image", "d_image", "l_ratio_image")


def family_nan_reasons(name: str) -> dict[str, str]:
    """Why eq. 1's shape columns are NaN in a run of the family ``name`` (for ``nan_reason``)."""
    from nanoshape.columns import table_column

    return dict.fromkeys(map(table_column, _EQ1_ONLY), f"shape.family={name} (eq. 1's parameters are not computed)")


def family_values(masks: np.ndarray, cnn: Mapping[str, np.ndarray], family: ShapeFamily, *,
                  image: Mapping[str, np.ndarray] | None = None, refine: bool, timings: dict) -> dict[str, np.ndarray]:
    """The shape columns of a run with a family other than eq. 1, by the shape stages' names.

    Eq. 1's own parameters are NaN; ``phi``, ``phi_cnn``, ``phi_std``, ``phi_image``,
    ``jaccard_cnn``, ``jaccard_image``, ``jaccard_refined`` and ``fit_converged`` hold the
    family's. Then, per parameter of the family: its value (the image fit's, ``image``:
    :func:`nanoshape.imagefit.fit_image`'s output, or the CNN's, refined by
    :func:`fit_masks` when ``refine``), ``<name>_cnn``, ``<name>_image`` (NaN without
    ``image``), the CNN's ``<continuous>_log_std`` and ``<discrete>_confidence``, and
    ``shape_family``.
    """
    import time

    n = len(masks)
    nothing = np.full(n, np.nan, np.float32)
    jaccard_cnn = placed_jaccard(masks, cnn, family)
    start = dict(cnn) if image is None else dict(cnn) | {name: image[name] for name in family.columns}
    if refine:
        begin = time.perf_counter()
        fit = fit_masks(masks, family=family, init=start)
        timings["refine_s"] = time.perf_counter() - begin
        final = {name: fit[name] for name in family.columns}
        jaccard_refined, converged = fit["jaccard_refined"], fit["converged"].astype(bool)
        jaccard_start = fit["jaccard_init"]  # the start placed at the mask's area and centroid, as placed_jaccard
    else:
        final = {name: start[name] for name in family.columns}
        jaccard_refined, converged = nothing, np.zeros(n, bool)
        jaccard_start = placed_jaccard(masks, start, family) if image is not None else jaccard_cnn
    values = {**dict.fromkeys(_EQ1_ONLY, nothing), "phi": final["phi"], "phi_cnn": cnn["phi"],
              "phi_std": cnn["phi_std"], "phi_image": nothing if image is None else image["phi"],
              "jaccard_cnn": jaccard_cnn, "jaccard_image": nothing if image is None else jaccard_start,
              "jaccard_refined": jaccard_refined, "fit_converged": converged}
    for name in family.columns:
        if name != "phi":
            values[name], values[f"{name}_cnn"] = final[name], cnn[name]
            values[f"{name}_image"] = nothing if image is None else image[name]
    for c in family.continuous:
        values[c.std_name] = cnn[c.std_name]
    values[f"{family.discrete}_confidence"] = cnn[f"{family.discrete}_confidence"]
    values["shape_family"] = np.full(n, family.name, dtype=object)
    return {key: np.asarray(value) for key, value in values.items()}
