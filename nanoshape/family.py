"""Shape families: the plug-in point for the shape model.

A :class:`ShapeFamily` says what the renderer, the CNN, training, the fits and the grouping
need to know about one parametric family of outlines R(theta): its parameters (one
**discrete** class parameter, e.g. eq. 1's ``d``; **continuous** positive ones, each
regressed as a Gaussian in its logarithm; a **phase** ``phi``), its prior (a frozen
dataclass, :meth:`ShapeFamily.sample_prior`), the radius of a unit-scale shape at one angle
for one particle (batch with ``jax.vmap`` at the call site) and its log-slope
``d log R / d theta`` for anti-aliasing (:meth:`ShapeFamily.log_slope`, forward-mode autodiff
by default), its canonical form, and a grouping descriptor (:func:`descriptor`, the same
rotation- and scale-free outline spectrum for every family).

Two ship: :data:`SUPERELLIPSE` (eq. 1 of the seed paper, the default; bit for bit the code
paths of :mod:`nanoshape.shape` and :mod:`nanoshape.render`) and :data:`ROUNDED_POLYGON`
(regular n-gons with rounded corners, which eq. 1 cannot draw). To add one, see
docs/methods.md, "Shape families", and register it in :data:`FAMILIES`.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from nanoshape import shape as _eq1

__all__ = ["ShapeFamily", "Continuous", "Superellipse", "RoundedPolygon", "PolygonParams", "PolygonPrior",
           "SUPERELLIPSE", "ROUNDED_POLYGON", "FAMILIES", "get_family", "table_family", "family_of", "family_of_prior",
           "radius", "area", "centroid", "moment_axes", "max_radius", "placement", "descriptor"]


@dataclass(frozen=True)
class Continuous:
    """A continuous, positive parameter, regressed by the CNN as a Gaussian in its logarithm.

    Attributes:
      name: the parameter's field name (and column name).
      head: the name of the CNN output holding its logarithm (eq. 1 keeps ``log_p``, ``log_l``).
      std_name: the name of the predicted standard deviation of the logarithm.
      floor: the smallest value of the canonical form (eq. 1's L >= 1), or 0.
      fit_range: bounds of the logarithm when fitted by gradient descent.
      upper: the largest value the family draws (values are in ``(0, upper]``; eq. 1's are
        unbounded, a polygon's rounding is at most 1, a disc).
    """

    name: str
    head: str
    std_name: str
    floor: float = 0.0
    fit_range: tuple[float, float] = (-10.0, 10.0)
    upper: float = math.inf


@dataclass(frozen=True)
class ShapeFamily(abc.ABC):
    """The interface of a shape family (frozen and hashable: usable as a static argument).

    Attributes:
      name: the name used on the command line (``shape.family=<name>``).
      params_type: the NamedTuple of one shape's parameters.
      prior_type: the dataclass of the family's prior (its defaults are the training prior).
      discrete: the name of the discrete parameter.
      classes: the values of the discrete parameter the CNN distinguishes (logit order).
      continuous: the continuous parameters, in CNN head order.
      phase_multipliers: per class, the factor m of the phase target ``(cos m phi, sin m phi)``:
        phi is periodic with period ``2 pi / |m|``. Its sign makes the target turn as the
        angular harmonic the CNN reads: a turn of the particle by ``a`` multiplies harmonic k
        by ``exp(-i k a)``, so ``m phi`` must move by ``-k a`` (eq. 1: phi moves by ``-d a / 2``,
        m = 2, k = d; a phase that turns with the particle, phi + a: m = -k).
      phase_harmonics: per class, the angular harmonic k of the particle whose complex phase
        turns with ``m phi`` (the polar CNN reads the phase there).
    """

    name: str
    params_type: type
    prior_type: type
    discrete: str
    classes: tuple[int, ...]
    continuous: tuple[Continuous, ...]
    phase_multipliers: tuple[int, ...]
    phase_harmonics: tuple[int, ...]

    # --- what a family implements -----------------------------------------------------
    @abc.abstractmethod
    def radius(self, theta: jax.Array, params: Any) -> jax.Array:
        """R(theta) of the unit-scale shape (elementwise in ``theta``)."""

    @abc.abstractmethod
    def canonicalize(self, params: Any) -> Any:
        """The canonical parameters drawing the same shape (up to scale)."""

    @abc.abstractmethod
    def sample_prior(self, key: jax.Array, prior: Any) -> Any:
        """One shape (scalars) drawn from ``prior``."""

    @abc.abstractmethod
    def make(self, discrete: jax.Array, continuous: tuple[jax.Array, ...], phi: jax.Array) -> Any:
        """Parameters from the discrete value, the continuous values (head order) and the phase."""

    # --- derived, overridable ---------------------------------------------------------
    def log_slope(self, theta: jax.Array, params: Any) -> tuple[jax.Array, jax.Array]:
        """``(R, d log R / d theta)`` at ``theta`` (forward-mode autodiff of :meth:`radius`)."""
        r, slope = jax.jvp(lambda t: self.radius(t, params), (theta,), (jnp.ones_like(theta),))
        return r, slope / r

    def split(self, params: Any) -> tuple[jax.Array, tuple[jax.Array, ...], jax.Array]:
        """(discrete, continuous values in head order, phi) of a parameter set."""
        return (getattr(params, self.discrete), tuple(getattr(params, c.name) for c in self.continuous),
                params.phi)

    @property
    def columns(self) -> tuple[str, ...]:
        """The parameter names, in the order of ``params_type``."""
        return tuple(self.params_type._fields)

    def validate_prior(self, prior: Any) -> None:
        """Refuse a prior whose discrete values the CNN, the renderer and the fits do not support."""
        values = getattr(prior, f"{self.discrete}_values")
        outside = [v for v in values if v not in self.classes]
        if outside:
            raise ValueError(f"the {self.name} family supports {self.discrete} in {self.classes}; "
                             f"the prior asks for {tuple(outside)}")


@dataclass(frozen=True)
class Superellipse(ShapeFamily):
    """Eq. 1 of the seed paper: ``R = [|L cos(d theta/2 + phi)|^p + |sin(d theta/2 + phi)|^p]^(-1/p)``.

    Its functions are :mod:`nanoshape.shape`'s; :func:`nanoshape.render.silhouette` draws it
    with its own fast kernel (complex powers instead of trigonometry, the analytic R'/R).
    """

    def radius(self, theta, params):
        return _eq1.radius(theta, params)

    def canonicalize(self, params):
        return _eq1.canonicalize(params)

    def sample_prior(self, key, prior):
        return _eq1.sample_prior(key, prior)

    def make(self, discrete, continuous, phi):
        p, l_ratio = continuous
        return _eq1.ShapeParams(p, discrete, l_ratio, phi)


class PolygonParams(NamedTuple):
    """One rounded regular polygon (or, under ``vmap``, a batch).

    Attributes:
      n_sides: number of sides, integer (int32).
      rounding: corner radius over the inradius, in (0, 1] (1 = a disc; -> 0 sharp corners).
      phi: the angle of the first side's normal, radians (canonical: in [0, 2 pi / n)).
    """

    n_sides: jax.Array
    rounding: jax.Array
    phi: jax.Array


@dataclass(frozen=True)
class PolygonPrior:
    """Training prior of rounded polygons: n uniform, rounding log-uniform, phi uniform over a period.

    Attributes:
      n_sides_values: the numbers of sides, drawn with equal probability.
      rounding_range: bounds of the log-uniform rounding (corner radius / inradius).
    """

    n_sides_values: tuple[int, ...] = (3, 4, 5, 6)
    rounding_range: tuple[float, float] = (0.03, 0.9)

    def __post_init__(self):
        lo, hi = self.rounding_range
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"PolygonPrior.rounding_range must satisfy 0 < low <= high <= 1, got {(lo, hi)}")
        if not self.n_sides_values or any(int(n) != n or n < 3 for n in self.n_sides_values):
            raise ValueError(f"PolygonPrior.n_sides_values must be integers >= 3, got {self.n_sides_values}")


@dataclass(frozen=True)
class RoundedPolygon(ShapeFamily):
    """Regular n-gons with rounded corners: the Minkowski sum of a regular n-gon of inradius
    ``1 - rho`` and a disc of radius ``rho`` (inradius 1 at every rounding).

    With ``beta`` the angle between the ray and the nearest side's normal (``|beta| <= pi/n``),
    ``a = 1 - rho`` and ``c = a / cos(pi/n)`` the distance of the inner polygon's corner::

        R = 1 / cos(beta)                                         if tan|beta| <= a tan(pi/n)
        R = c cos(pi/n - |beta|) + sqrt(rho^2 - c^2 sin^2(pi/n - |beta|))   otherwise (the arc)

    Triangular, square and hexagonal plates with straight sides (eq. 1's d = 3 shapes have
    curved ones). A turn by ``2 pi / n`` gives the same shape, so ``phi`` has that period, and
    a turn of the particle by ``a`` moves ``n phi`` by ``n a``, and angular harmonic n by ``-n a``:
    the CNN reads the phase there with the target ``(cos(-n phi), sin(-n phi))``.
    """

    def radius(self, theta, params):
        n = params.n_sides.astype(theta.dtype)
        half = jnp.pi / n
        beta = jnp.abs(jnp.mod(theta - params.phi + half, 2 * half) - half)
        rho = params.rounding
        inner = 1 - rho
        flat = 1 / jnp.cos(beta)
        c = inner / jnp.cos(half)
        gap = half - beta
        arc = c * jnp.cos(gap) + jnp.sqrt(jnp.maximum(rho * rho - (c * jnp.sin(gap)) ** 2, 1e-12))
        return jnp.where(jnp.tan(beta) <= inner * jnp.tan(half), flat, arc)

    def canonicalize(self, params):
        period = 2 * jnp.pi / params.n_sides.astype(params.phi.dtype)
        phi = jnp.mod(params.phi, period)
        phi = jnp.where(phi >= period, 0.0, phi).astype(params.phi.dtype)
        return PolygonParams(params.n_sides, jnp.clip(params.rounding, 1e-4, 1.0), phi)

    def sample_prior(self, key, prior):
        key_n, key_r, key_phi = jax.random.split(key, 3)
        n = jax.random.choice(key_n, jnp.asarray(prior.n_sides_values, jnp.int32))
        lo, hi = (math.log(v) for v in prior.rounding_range)
        rounding = jnp.exp(jax.random.uniform(key_r, (), minval=lo, maxval=hi))
        phi = jax.random.uniform(key_phi, ()) * (2 * jnp.pi / n.astype(jnp.float32))
        return PolygonParams(n, rounding, phi)

    def make(self, discrete, continuous, phi):
        (rounding,) = continuous
        return PolygonParams(discrete, rounding, phi)


#: Eq. 1 (the default family).
SUPERELLIPSE = Superellipse(
    name="superellipse", params_type=_eq1.ShapeParams, prior_type=_eq1.ShapePrior, discrete="d",
    classes=(1, 2, 3, 4, 5, 6),
    continuous=(Continuous("p", "log_p", "p_log_std", 0.0, (math.log(0.1), math.log(200.0))),
                Continuous("l_ratio", "log_l", "l_ratio_log_std", 1.0, (-math.log(30.0), math.log(30.0)))),
    phase_multipliers=(2, 2, 2, 2, 2, 2), phase_harmonics=(1, 2, 3, 4, 5, 6))

#: Rounded regular polygons with 3 to 7 sides.
ROUNDED_POLYGON = RoundedPolygon(
    name="polygon", params_type=PolygonParams, prior_type=PolygonPrior, discrete="n_sides",
    classes=(3, 4, 5, 6, 7),
    continuous=(Continuous("rounding", "log_rounding", "rounding_log_std", 0.0, (math.log(1e-3), 0.0), upper=1.0),),
    phase_multipliers=(-3, -4, -5, -6, -7), phase_harmonics=(3, 4, 5, 6, 7))

#: Every family by name (``shape.family=<name>``).
FAMILIES: dict[str, ShapeFamily] = {f.name: f for f in (SUPERELLIPSE, ROUNDED_POLYGON)}


def get_family(name: str | ShapeFamily) -> ShapeFamily:
    """The family called ``name`` (a family passes through), or a ValueError listing the known ones."""
    if isinstance(name, ShapeFamily):
        return name
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown shape family {name!r}; known: {', '.join(FAMILIES)}") from None


def table_family(table: Any) -> ShapeFamily:
    """The shape family of a particle table: its ``shape_family`` column (the first row's), eq. 1 without one."""
    if "shape_family" in table and len(table) and isinstance(table["shape_family"].iloc[0], str):
        return get_family(table["shape_family"].iloc[0])
    return SUPERELLIPSE


def family_of(params: Any) -> ShapeFamily:
    """The family whose parameter type ``params`` is."""
    for family in FAMILIES.values():
        if isinstance(params, family.params_type):
            return family
    raise TypeError(f"{type(params).__name__} is the parameter type of no registered shape family")


def family_of_prior(prior: Any) -> ShapeFamily:
    """The family whose prior type ``prior`` is."""
    for family in FAMILIES.values():
        if isinstance(prior, family.prior_type):
            return family
    raise TypeError(f"{type(prior).__name__} is the prior of no registered shape family")


def _angles(n: int) -> jax.Array:
    return jnp.arange(n, dtype=jnp.float32) * (2 * jnp.pi / n)


def radius(theta: jax.Array, params: Any) -> jax.Array:
    """R(theta) of any family's unit-scale shape."""
    return family_of(params).radius(theta, params)


def area(params: Any, n: int = _eq1.DEFAULT_QUADRATURE_POINTS) -> jax.Array:
    """Area of any family's unit-scale shape (:func:`nanoshape.shape.area` for eq. 1)."""
    if isinstance(params, _eq1.ShapeParams):
        return _eq1.area(params, n)
    r = radius(_angles(n), params)
    return 0.5 * jnp.mean(r**2) * 2 * jnp.pi


def centroid(params: Any, n: int = _eq1.DEFAULT_QUADRATURE_POINTS) -> jax.Array:
    """Centroid (x, y) of any family's unit-scale shape relative to its origin."""
    if isinstance(params, _eq1.ShapeParams):
        return _eq1.centroid(params, n)
    theta = _angles(n)
    r = radius(theta, params)
    a = 0.5 * jnp.mean(r**2)
    return jnp.stack([jnp.mean(r**3 * jnp.cos(theta)), jnp.mean(r**3 * jnp.sin(theta))]) / (3 * a)


def moment_axes(params: Any, n: int = _eq1.DEFAULT_QUADRATURE_POINTS) -> jax.Array:
    """Major and minor axis (second moments) of any family's unit-scale shape, (2,)
    (:func:`nanoshape.shape.moment_axes`)."""
    if isinstance(params, _eq1.ShapeParams):
        return _eq1.moment_axes(params, n)
    theta = _angles(n)
    return _eq1.outline_moment_axes(theta, radius(theta, params), centroid(params, n))


def max_radius(params: Any, n: int = 256) -> jax.Array:
    """Largest radius of any family's unit-scale shape over n angles."""
    if isinstance(params, _eq1.ShapeParams):
        return _eq1.max_radius(params, n)
    return jnp.max(radius(_angles(n), params))


def placement(params: Any, area_px: jax.Array, centroid_xy_px: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Centre and scale giving any family's shape the area and centroid of a particle
    (:func:`nanoshape.shape.placement`)."""
    if isinstance(params, _eq1.ShapeParams):
        return _eq1.placement(params, area_px, centroid_xy_px)
    scale = jnp.sqrt(area_px / area(params, n=1024))
    center = centroid_xy_px - scale * centroid(params, n=1024)
    return center, scale


def descriptor(params: Any, harmonics: int = 12, n: int = 256) -> jax.Array:
    """The grouping descriptor of any family's shape: the harmonic spectrum of its drawn outline
    (:func:`nanoshape.shape.harmonic_spectrum`), comparable across families."""
    if isinstance(params, _eq1.ShapeParams):
        return _eq1.harmonic_spectrum(params, harmonics, n)
    theta = _angles(4 * n)
    return _eq1.outline_spectrum(theta, radius(theta, params), harmonics, n)
