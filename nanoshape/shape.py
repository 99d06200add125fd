"""The superellipse shape family of the seed paper, its prior and its canonical form.

The radius of a shape at polar angle ``theta`` (seed paper, eq. 1; Nanoscale 2022,
"Creating ground truth for nanocrystal morphology")::

    R(theta) = [ |L cos(d theta / 2 + phi)|^p + |sin(d theta / 2 + phi)|^p ]^(-1/p)

``p`` sets the curvature (p < 1 concave, star-like; p = 2 ellipse-like; large p boxy),
``d`` the number of major axes (integer 1..6), ``L`` the axis ratio and ``phi`` the
rotational phase. Two facts shape the code:

* ``phi`` matters only modulo pi: shifting the argument by pi flips the sign of both
  cosine and sine, and only their magnitudes enter.
* ``(p, d, L, phi)`` and ``(p, d, 1/L, phi + pi/2)`` draw the same shape, scaled by L:
  the quarter shift swaps |cos| and |sin|. The canonical form has ``L >= 1`` and
  ``phi`` in ``[0, pi)``.

Every function here works on one shape; batch with ``jax.vmap``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "ShapeParams",
    "ShapePrior",
    "radius",
    "canonicalize",
    "dual_p",
    "harmonic_spectrum",
    "outline_spectrum",
    "outline_moment_axes",
    "sample_prior",
    "area",
    "perimeter",
    "centroid",
    "max_radius",
    "placement",
]

#: Largest number of major axes eq. 1 is drawn, learned and fitted with (the CNN's classes 1..6).
MAX_D = 6

#: Angles used by the quadrature rules: the integrands are periodic, so the trapezoid
#: rule converges spectrally for smooth shapes; concave cusps (p < 1) need the density.
DEFAULT_QUADRATURE_POINTS = 4096


class ShapeParams(NamedTuple):
    """Parameters of one shape (or, under ``vmap``, of a batch of shapes).

    Attributes:
      p: curvature exponent, > 0.
      d: number of major axes, integer 1..6 (int32).
      l_ratio: axis ratio L, > 0 (canonical form: >= 1).
      phi: rotational phase in radians (canonical form: in [0, pi)).
    """

    p: jax.Array
    d: jax.Array
    l_ratio: jax.Array
    phi: jax.Array


@dataclass(frozen=True)
class ShapePrior:
    """The distribution of training shapes: p and L log-uniform, d uniform, phi uniform.

    Attributes:
      p_range: bounds of the log-uniform curvature exponent.
      d_values: the numbers of major axes drawn with equal probability.
      l_ratio_range: bounds of the log-uniform axis ratio (canonical: lower bound >= 1).
      phi_range: bounds of the uniform phase, radians.
    """

    p_range: tuple[float, float] = (0.25, 64.0)
    d_values: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    l_ratio_range: tuple[float, float] = (1.0, 4.0)
    phi_range: tuple[float, float] = (0.0, math.pi)

    def __post_init__(self):
        for name in ("p_range", "l_ratio_range"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"ShapePrior.{name} must satisfy 0 < low <= high, got {(lo, hi)}")
        if not self.d_values or any(int(d) != d or d < 1 for d in self.d_values):
            raise ValueError(f"ShapePrior.d_values must be positive integers, got {self.d_values}")
        if max(self.d_values) > MAX_D:
            # the renderer builds exp(i d theta / 2) from three binary powers (d <= 7) and the
            # CNN has a class for each d in 1..6: beyond, shapes would be drawn or learned wrongly
            raise ValueError(f"ShapePrior.d_values: d must be in 1..{MAX_D} (the CNN's classes and what the "
                             f"renderer draws), got {self.d_values}")


def radius(theta: jax.Array, shape: ShapeParams) -> jax.Array:
    """Radius R(theta) of a unit-scale shape at polar angle ``theta`` (eq. 1 of the seed paper).

    Args:
      theta: polar angle(s) in radians, any shape; broadcast against the parameters.
      shape: the shape parameters.

    Returns:
      R(theta), same shape as ``theta``. For a canonical shape the largest value lies in [1, sqrt(2)].
    """
    arg = 0.5 * shape.d.astype(theta.dtype) * theta + shape.phi
    u = jnp.abs(shape.l_ratio * jnp.cos(arg))
    v = jnp.abs(jnp.sin(arg))
    return _pnorm_inverse(u, v, shape.p)


def _pnorm_inverse(u: jax.Array, v: jax.Array, p: jax.Array) -> jax.Array:
    """(u^p + v^p)^(-1/p) for u, v >= 0 (not both 0), stable for p in [0.1, 1000].

    Written as M^-1 (1 + (m/M)^p)^(-1/p) with M = max(u, v), m = min(u, v): two logs and
    two exps, no overflow at large p, and finite gradients where u or v is 0.
    """
    big = jnp.maximum(u, v)
    ratio = jnp.minimum(u, v) / big
    q = jnp.exp(p * jnp.log(jnp.maximum(ratio, 1e-30)))
    return jnp.exp(-jnp.log1p(q) / p) / big


def canonicalize(shape: ShapeParams) -> ShapeParams:
    """Map any parameter set to the canonical one drawing the same shape (up to scale).

    Uses ``(p, d, L, phi) ~ (p, d, 1/L, phi + pi/2)`` to get ``L >= 1`` and the period pi of
    ``phi`` to get ``phi`` in ``[0, pi)``.
    """
    flip = shape.l_ratio < 1
    l_ratio = jnp.where(flip, 1 / shape.l_ratio, shape.l_ratio)
    phi = jnp.where(flip, shape.phi + 0.5 * jnp.pi, shape.phi)
    phi = jnp.mod(phi, jnp.pi)
    # mod can return pi itself for inputs a hair below a multiple of pi in float32
    phi = jnp.where(phi >= jnp.pi, 0.0, phi).astype(shape.phi.dtype)
    return ShapeParams(shape.p, shape.d, l_ratio, phi)


#: Largest exponent :func:`dual_p` returns (the dual of p <= 1 + 1/63): beyond, shapes no
#: longer change at any pixel size.
DUAL_P_MAX = 64.0


def dual_p(p: jax.Array) -> jax.Array:
    """The exponent whose shape, a quarter phase on (``phi + pi/4``), nearly draws the same one at L = 1.

    At ``L = 1`` eq. 1 depends on ``u = d theta / 2 + phi`` through the unit ball of the
    p-norm, and the 1-ball turned by pi/4 *is* the infinity-ball: ``(1, d, 1, phi)`` and
    ``(inf, d, 1, phi + pi/4)`` draw the same shape (scaled by sqrt 2) for every d. Between,
    the conjugate exponent ``p / (p - 1)`` is close: shape Jaccard 0.98-0.99 for p in
    1.1..2.5 at d = 5 (measured with :func:`nanoshape.refine.shape_jaccard`), 2 is its own
    dual. The duality fades as L leaves 1 (0.93-0.96 at L = 1.08). Concave shapes (p < 1)
    have no convex dual; they map to :data:`DUAL_P_MAX`, the nearest one.

    Args:
      p: exponents (> 0), any shape.

    Returns:
      ``p / (p - 1)`` clipped to ``[1 + 1/63, DUAL_P_MAX]``.
    """
    p = jnp.asarray(p)
    dual = p / jnp.maximum(p - 1, 1 / (DUAL_P_MAX - 1))
    return jnp.clip(jnp.where(p > 1, dual, DUAL_P_MAX), DUAL_P_MAX / (DUAL_P_MAX - 1), DUAL_P_MAX)


def harmonic_spectrum(shape: ShapeParams, harmonics: int = 12, n: int = 256) -> jax.Array:
    """Rotation-, translation- and scale-free spectrum of a shape's outline: how strongly it is m-fold.

    The outline is resampled at ``n`` points equally spaced along its length (an intrinsic
    parametrisation: the polar angle about eq. 1's origin would make a circle drawn off its
    origin, as d = 1 shapes are, look lopsided) and written as complex points z; with their
    Fourier coefficients ``Z_k``, harmonic m is ``sqrt(|Z_(1+m)|^2 + |Z_(1-m)|^2) / |Z_1|``
    (for m = 1 only ``Z_2``: ``Z_0`` is the position). A circle has none; an ellipse of axis
    ratio L mostly m = 2; a cube m = 4 and 8; a five-armed star m = 10 (at L = 1, eq. 1
    with d axes is 2d-fold). Unlike (p, d, L), it is the same for every description of one
    drawn shape: a turned diamond and a square (:func:`dual_p`), a circle at any d.

    Args:
      shape: one shape (vmap for batches).
      harmonics: how many (m = 1..harmonics).
      n: samples of the outline.

    Returns:
      (harmonics,) non-negative amplitudes relative to the mean radius term.
    """
    theta = _angles(4 * n)
    return outline_spectrum(theta, radius(theta, shape), harmonics, n)


def outline_spectrum(theta: jax.Array, r: jax.Array, harmonics: int = 12, n: int = 256) -> jax.Array:
    """:func:`harmonic_spectrum` of an outline given as radii ``r`` at the angles ``theta``
    (for any shape family, :func:`nanoshape.family.descriptor`)."""
    x, y = r * jnp.cos(theta), r * jnp.sin(theta)
    step = jnp.hypot(jnp.roll(x, -1) - x, jnp.roll(y, -1) - y)
    length = jnp.concatenate([jnp.zeros(1, x.dtype), jnp.cumsum(step)])
    at = jnp.arange(n, dtype=x.dtype) * (length[-1] / n)
    xs = jnp.interp(at, length, jnp.concatenate([x, x[:1]]))
    ys = jnp.interp(at, length, jnp.concatenate([y, y[:1]]))
    coefficients = jnp.fft.fft(jax.lax.complex(xs, ys)) / n
    m = jnp.arange(1, harmonics + 1)
    plus = jnp.abs(coefficients[(1 + m) % n]) ** 2
    minus = jnp.where(m == 1, 0.0, jnp.abs(coefficients[(1 - m) % n]) ** 2)
    return jnp.sqrt(plus + minus) / jnp.abs(coefficients[1])


def sample_prior(key: jax.Array, prior: ShapePrior = ShapePrior()) -> ShapeParams:
    """Draw one canonical shape from the prior.

    Args:
      key: a JAX PRNG key.
      prior: the distribution (static).

    Returns:
      ShapeParams of scalars (p, l_ratio, phi float32; d int32).
    """
    key_p, key_d, key_l, key_phi = jax.random.split(key, 4)
    log_p = jax.random.uniform(key_p, (), minval=math.log(prior.p_range[0]), maxval=math.log(prior.p_range[1]))
    d = jax.random.choice(key_d, jnp.asarray(prior.d_values, jnp.int32))
    log_l = jax.random.uniform(
        key_l, (), minval=math.log(prior.l_ratio_range[0]), maxval=math.log(prior.l_ratio_range[1])
    )
    phi = jax.random.uniform(key_phi, (), minval=prior.phi_range[0], maxval=prior.phi_range[1])
    return ShapeParams(jnp.exp(log_p), d, jnp.exp(log_l), phi)


def _angles(n: int) -> jax.Array:
    return jnp.arange(n, dtype=jnp.float32) * (2 * jnp.pi / n)


def area(shape: ShapeParams, n: int = DEFAULT_QUADRATURE_POINTS) -> jax.Array:
    """Area of the unit-scale shape, A = 1/2 integral R(theta)^2 dtheta (trapezoid rule, n angles)."""
    r = radius(_angles(n), shape)
    return 0.5 * jnp.mean(r**2) * 2 * jnp.pi


def perimeter(shape: ShapeParams, n: int = DEFAULT_QUADRATURE_POINTS) -> jax.Array:
    """Perimeter of the unit-scale shape as the length of the closed polygon through n boundary points.

    The polygon converges to integral sqrt(R^2 + R'^2) dtheta without differentiating R,
    which is unbounded at the cusps of concave shapes (p < 1).
    """
    theta = _angles(n)
    r = radius(theta, shape)
    x, y = r * jnp.cos(theta), r * jnp.sin(theta)
    return jnp.sum(jnp.hypot(jnp.roll(x, -1) - x, jnp.roll(y, -1) - y))


def centroid(shape: ShapeParams, n: int = DEFAULT_QUADRATURE_POINTS) -> jax.Array:
    """Centroid (x, y) of the unit-scale shape relative to its origin: (1/A) integral R^3/3 (cos, sin) dtheta.

    Non-zero only for shapes without central symmetry (odd d).
    """
    theta = _angles(n)
    r = radius(theta, shape)
    a = 0.5 * jnp.mean(r**2)
    return jnp.stack([jnp.mean(r**3 * jnp.cos(theta)), jnp.mean(r**3 * jnp.sin(theta))]) / (3 * a)


def moment_axes(shape: ShapeParams, n: int = DEFAULT_QUADRATURE_POINTS) -> jax.Array:
    """Major and minor axis of the unit-scale shape from its second moments, (2,).

    The lengths 4 sqrt(lambda) of the eigenvalues lambda of the covariance of a uniform
    density over the shape (the definition of the features' ``major_axis`` and
    ``minor_axis`` and of scikit-image's ``axis_major_length``; an ellipse gives its axes),
    with M_ij = integral R^4 / 4 u_i u_j dtheta over the unit vector u(theta).
    """
    theta = _angles(n)
    return outline_moment_axes(theta, radius(theta, shape), centroid(shape, n))


def outline_moment_axes(theta: jax.Array, r: jax.Array, centroid_xy: jax.Array) -> jax.Array:
    """:func:`moment_axes` of any star-shaped outline ``r`` at ``n`` equally spaced angles
    ``theta``, with its centroid (x, y) relative to the origin of ``r``."""
    c, s = jnp.cos(theta), jnp.sin(theta)
    a = 0.5 * jnp.mean(r**2)
    cx, cy = centroid_xy
    quarter = r**4 / 4
    xx = jnp.mean(quarter * c * c) / a - cx * cx
    yy = jnp.mean(quarter * s * s) / a - cy * cy
    xy = jnp.mean(quarter * c * s) / a - cx * cy
    half_sum, root = 0.5 * (xx + yy), jnp.sqrt(0.25 * (xx - yy) ** 2 + xy**2)
    return 4 * jnp.sqrt(jnp.stack([half_sum + root, jnp.maximum(half_sum - root, 0.0)]))


def max_radius(shape: ShapeParams, n: int = 256) -> jax.Array:
    """Largest radius of the unit-scale shape over n angles (a cheap bound used to place shapes)."""
    return jnp.max(radius(_angles(n), shape))


def placement(shape: ShapeParams, area_px: jax.Array, centroid_xy_px: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Centre and scale that give a shape the area and centroid of a particle.

    Size and position are measured from the mask, so a predicted shape is compared with a
    particle at equal area and with coincident centroids (translation- and scale-free).

    Args:
      shape: the shape parameters.
      area_px: the particle's area in px^2.
      centroid_xy_px: (2,) its centroid (x, y) in px.

    Returns:
      (center_xy_px (2,), scale_px) for :func:`nanoshape.render.silhouette`.
    """
    scale = jnp.sqrt(area_px / area(shape, n=1024))
    center = centroid_xy_px - scale * centroid(shape, n=1024)
    return center, scale
