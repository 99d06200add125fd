"""Differentiable rendering of one particle: an anti-aliased silhouette and a TEM imaging model.

Every function renders one image; batch with ``jax.vmap`` at the call site and ``jax.jit``
at the edge. Random functions take ``key`` first and are thin wrappers around deterministic
ones.

The silhouette avoids the per-pixel ``arctan2``, ``sin``, ``cos`` and ``pow`` of a direct
evaluation of eq. 1 (they dominate the cost on a CPU). For a pixel at offset ``z = x + iy``
from the centre, ``exp(i theta / 2)`` is the normalised bisector of ``z`` and the real axis
(two square roots); its d-th power by repeated complex squaring, rotated by ``exp(i phi)``,
gives ``(cos, sin)(d theta / 2 + phi)`` up to a common sign, which eq. 1 ignores. The radius
then costs two logs and two exps (:func:`nanoshape.shape._pnorm_inverse`). Pixel coverage is
the box-filtered area of the local half-plane: ``clip(1/2 + f / |grad f|_1, 0, 1)`` with
``f = S R(theta) - r`` and its gradient from the analytic ``R'/R`` (no autodiff), which is
exact for straight edges and differentiable in every parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nanoshape.family import family_of
from nanoshape.shape import ShapeParams

__all__ = [
    "silhouette",
    "Imaging",
    "ImagingParams",
    "sample_imaging",
    "optical_density",
    "tem_image",
    "expected_counts",
    "film_transmission",
    "render",
    "fast_normal",
    "particle_thickness",
    "soft_jaccard",
    "gaussian_blur",
]

#: Largest d the eq. 1 kernel draws: (hx + i hy)^d is built from the powers 1, 2 and 4.
_MAX_D = 7

#: Bound on |R'/R|: concave cusps (p < 1) make it unbounded; beyond ~50 the edge is a point.
_MAX_LOG_SLOPE = 50.0


def _edge_field(shape, center_xy_px: jax.Array, scale_px: jax.Array, height: int, width: int):
    """Per-pixel ``f = S R(theta) - r`` (px, > 0 inside), |df/dx|, |df/dy| and k = d log R / d theta.

    The gradient is taken at the boundary point on the pixel's ray, so deep-inside pixels
    get a large positive ``f / |grad f|`` and the centre pixel is well defined. Eq. 1
    (:class:`nanoshape.shape.ShapeParams`) has its own fast kernel; any other family
    (:mod:`nanoshape.family`) is drawn from its ``radius`` and ``log_slope`` per pixel.
    """
    if not isinstance(shape, ShapeParams):
        return _family_edge_field(shape, center_xy_px, scale_px, height, width)
    if not isinstance(shape.d, jax.core.Tracer) and np.any((np.asarray(shape.d) < 1) | (np.asarray(shape.d) > _MAX_D)):
        # a traced d cannot be checked here: ShapePrior, the CNN and the fits keep it in 1..6
        raise ValueError(f"the renderer draws eq. 1 for d in 1..{_MAX_D} (three binary powers of exp(i theta / 2)); "
                         f"got d = {np.asarray(shape.d)}")
    dtype = jnp.float32
    ys = jnp.arange(height, dtype=dtype)[:, None] - center_xy_px[1]
    xs = jnp.arange(width, dtype=dtype)[None, :] - center_xy_px[0]
    r_squared = xs * xs + ys * ys + 1e-12
    inv_r = jax.lax.rsqrt(r_squared)
    r = r_squared * inv_r
    # exp(i theta / 2) up to sign: bisector of z and +1 for x >= 0, of z and -1 (times i) otherwise
    right = xs >= 0
    hx = jnp.where(right, xs + r, ys)
    hy = jnp.where(right, ys, r - xs)
    inv_norm = jax.lax.rsqrt(hx * hx + hy * hy)
    hx, hy = hx * inv_norm, hy * inv_norm
    # (hx + i hy)^d for d in 1..7 by binary powers: d is traced, so select per bit
    d = shape.d
    h2x, h2y = hx * hx - hy * hy, 2 * hx * hy
    h4x, h4y = h2x * h2x - h2y * h2y, 2 * h2x * h2y
    one = jnp.ones_like(hx)
    zero = jnp.zeros_like(hx)
    ax, ay = jnp.where(d % 2 == 1, hx, one), jnp.where(d % 2 == 1, hy, zero)
    bx, by = jnp.where((d // 2) % 2 == 1, h2x, one), jnp.where((d // 2) % 2 == 1, h2y, zero)
    cx, cy = jnp.where((d // 4) % 2 == 1, h4x, one), jnp.where((d // 4) % 2 == 1, h4y, zero)
    abx, aby = ax * bx - ay * by, ax * by + ay * bx
    px_, py_ = abx * cx - aby * cy, abx * cy + aby * cx
    cos_phi, sin_phi = jnp.cos(shape.phi), jnp.sin(shape.phi)
    c = px_ * cos_phi - py_ * sin_phi  # cos(d theta / 2 + phi), up to a sign shared with s
    s = px_ * sin_phi + py_ * cos_phi
    u = jnp.abs(shape.l_ratio * c)
    v = jnp.abs(s)
    # R = (u^p + v^p)^(-1/p) = (1 + q)^(-1/p) / max(u, v), q = (min/max)^p, as in shape._pnorm_inverse
    big = jnp.maximum(u, v)
    q = jnp.exp(shape.p * jnp.log(jnp.maximum(jnp.minimum(u, v) / big, 1e-30)))
    unit_radius = jnp.exp(-jnp.log1p(q) / shape.p) / big
    f = scale_px * unit_radius - r
    # d log R / dtheta = (d/2) (A s/c - B c/s) / (A + B) = (d/2) (wA s^2 - wB c^2) / (c s), A = u^p, B = v^p
    w_big = 1 / (1 + q)
    w_u = jnp.where(u >= v, w_big, 1 - w_big)
    cs = c * s
    cs = jnp.where(jnp.abs(cs) < 1e-7, jnp.where(cs < 0, -1e-7, 1e-7), cs)
    k = 0.5 * d.astype(dtype) * (w_u * s * s - (1 - w_u) * c * c) / cs
    k = jnp.clip(k, -_MAX_LOG_SLOPE, _MAX_LOG_SLOPE)
    ux, uy = xs * inv_r, ys * inv_r
    # grad f at the boundary point of the ray: k (-uy, ux) - (ux, uy); |grad f|_2 = sqrt(1 + k^2)
    grad_x, grad_y = -k * uy - ux, k * ux - uy
    return f, jnp.abs(grad_x), jnp.abs(grad_y), k


def _family_edge_field(shape, center_xy_px: jax.Array, scale_px: jax.Array, height: int, width: int):
    """:func:`_edge_field` of any shape family: ``theta`` by ``arctan2``, R and d log R / d theta
    from the family (its analytic slope, or forward-mode autodiff of its radius)."""
    family = family_of(shape)
    dtype = jnp.float32
    ys = jnp.arange(height, dtype=dtype)[:, None] - center_xy_px[1]
    xs = jnp.arange(width, dtype=dtype)[None, :] - center_xy_px[0]
    ys, xs = jnp.broadcast_arrays(ys, xs)
    r_squared = xs * xs + ys * ys + 1e-12
    inv_r = jax.lax.rsqrt(r_squared)
    r = r_squared * inv_r
    unit_radius, k = family.log_slope(jnp.arctan2(ys, xs), shape)
    k = jnp.clip(k, -_MAX_LOG_SLOPE, _MAX_LOG_SLOPE)
    f = scale_px * unit_radius - r
    ux, uy = xs * inv_r, ys * inv_r
    grad_x, grad_y = -k * uy - ux, k * ux - uy
    return f, jnp.abs(grad_x), jnp.abs(grad_y), k


def silhouette(
    shape: ShapeParams,
    center_xy_px: jax.Array,
    scale_px: jax.Array,
    *,
    height: int,
    width: int,
    edge_width_px: float | jax.Array = 1.0,
) -> jax.Array:
    """Anti-aliased pixel coverage of one particle on a ``height x width`` grid.

    Pixel ``(i, j)`` has its centre at ``x = j``, ``y = i``. The particle's boundary is
    ``r = scale_px * R(theta)`` around ``center_xy_px`` (eq. 1, :func:`nanoshape.shape.radius`).

    Args:
      shape: shape parameters of one particle.
      center_xy_px: (2,) centre (x, y) in pixels.
      scale_px: the unit radius in pixels (R = 1 along the minor-axis direction of a canonical shape).
      height, width: grid size (static).
      edge_width_px: width of the coverage ramp; 1 is the box filter of one pixel (anti-aliasing),
        larger values give softer edges with wider gradients (used when fitting).

    Returns:
      (height, width) float32 coverage in [0, 1], differentiable in p, l_ratio, phi, scale and centre.
    """
    f, grad_x, grad_y, _ = _edge_field(shape, center_xy_px, scale_px, height, width)
    return _box_coverage(f, grad_x, grad_y, edge_width_px)


def _box_coverage(f: jax.Array, grad_x: jax.Array, grad_y: jax.Array, box_px) -> jax.Array:
    """Area of a ``box_px``-wide square around each pixel centre where the linearised ``f`` is > 0.

    Exact for a straight edge: with ``a >= b`` the gradient magnitudes along the axes and
    ``t`` the height of ``f`` above its minimum over the box (0 .. a + b), the covered part
    is a triangle (``t < b``), a trapezoid, or the box minus a triangle (``t > a``).
    """
    a = jnp.maximum(jnp.maximum(grad_x, grad_y), 1e-6)
    b = jnp.maximum(jnp.minimum(grad_x, grad_y), 1e-6)
    inv_a = 1 / a
    half_inv_ab = 0.5 * inv_a / b
    t = jnp.clip(f * (1 / box_px) + 0.5 * (a + b), 0.0, a + b)
    t_low = jnp.minimum(t, b)
    t_high = jnp.maximum(t, a)
    low = t_low * t_low * half_inv_ab
    middle = (t - 0.5 * b) * inv_a
    high = 1 - (a + b - t_high) ** 2 * half_inv_ab
    return jnp.where(t < b, low, jnp.where(t <= a, middle, high))


def soft_jaccard(a: jax.Array, b: jax.Array) -> jax.Array:
    """Jaccard index of two coverage maps in [0, 1]: sum(a b) / (sum(a) + sum(b) - sum(a b)).

    Equals intersection over union for binary masks and is differentiable for soft ones.
    """
    intersection = jnp.sum(a * b)
    return intersection / jnp.maximum(jnp.sum(a) + jnp.sum(b) - intersection, 1e-12)


@dataclass(frozen=True)
class Imaging:
    """Static options and parameter ranges of the TEM imaging model (bright field by default).

    Each range is sampled uniformly per image by :func:`sample_imaging` (doses and blur
    log-uniformly). Intensities are relative to the unobstructed beam (background = 1 in bright field).

    Attributes:
      dark_field: render bright particles on a dark background (HAADF / dark field).
      contrast_range: fraction of the beam a particle removes at full thickness (mass-thickness).
      dome_range: 0 = flat plate of uniform thickness, 1 = thickness rising like a sphere's from the edge.
      texture_range: rms of the amorphous-carbon film's relative thickness variation.
      texture_cell_px: correlation length of the film texture in pixels.
      gradient_range: largest relative illumination change across the image (each axis).
      blur_sigma_px_range: standard deviation of the Gaussian point-spread function, pixels.
      dose_range: electrons per pixel of the unobstructed beam (sets the shot noise).
      dark_field_background_range: dark-field background as a fraction of the particle signal.
      exact_poisson: draw shot noise from the Poisson distribution (slow on CPU) instead of
        its normal approximation (accurate at the doses used here).
      quantize_levels: number of grey levels after normalisation (256 mimics 8-bit figures); 0 = off.
    """

    dark_field: bool = False
    contrast_range: tuple[float, float] = (0.2, 0.85)
    dome_range: tuple[float, float] = (0.0, 1.0)
    texture_range: tuple[float, float] = (0.0, 0.06)
    texture_cell_px: int = 4
    gradient_range: tuple[float, float] = (0.0, 0.1)
    blur_sigma_px_range: tuple[float, float] = (0.3, 1.5)
    dose_range: tuple[float, float] = (30.0, 3000.0)
    dark_field_background_range: tuple[float, float] = (0.02, 0.3)
    exact_poisson: bool = False
    quantize_levels: int = 0


class ImagingParams(NamedTuple):
    """Per-image values of the imaging model (scalars; a batch under ``vmap``)."""

    contrast: jax.Array
    dome: jax.Array
    texture: jax.Array
    gradient_x: jax.Array
    gradient_y: jax.Array
    blur_sigma_px: jax.Array
    dose: jax.Array
    dark_background: jax.Array


def sample_imaging(key: jax.Array, imaging: Imaging = Imaging()) -> ImagingParams:
    """Draw the per-image values of the imaging model from the ranges of ``imaging``."""
    keys = jax.random.split(key, 8)

    def uniform(k, bounds):
        return jax.random.uniform(k, (), minval=bounds[0], maxval=bounds[1])

    def log_uniform(k, bounds):
        return jnp.exp(uniform(k, (math.log(bounds[0]), math.log(bounds[1]))))

    g = imaging.gradient_range[1]
    return ImagingParams(
        contrast=uniform(keys[0], imaging.contrast_range),
        dome=uniform(keys[1], imaging.dome_range),
        texture=uniform(keys[2], imaging.texture_range),
        gradient_x=uniform(keys[3], (-g, g)),
        gradient_y=uniform(keys[4], (-g, g)),
        blur_sigma_px=log_uniform(keys[5], imaging.blur_sigma_px_range),
        dose=log_uniform(keys[6], imaging.dose_range),
        dark_background=uniform(keys[7], imaging.dark_field_background_range),
    )


def fast_normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Approximately standard-normal float32 noise from one random 32-bit word per value.

    The sum of the word's four bytes (Irwin-Hall with four discrete uniforms) has the exact
    mean and variance of the normalised target and kurtosis -0.3: plenty for shot noise and
    film texture, at twice the speed of ``jax.random.normal`` on a CPU.
    """
    bits = jax.random.bits(key, shape, jnp.uint32)
    total = (bits & 0xFF) + ((bits >> 8) & 0xFF) + ((bits >> 16) & 0xFF) + (bits >> 24)
    return (total.astype(jnp.float32) - 510.0) * (1.0 / math.sqrt(4 * (256**2 - 1) / 12))


def _gaussian_weights(sigma_px: jax.Array, radius: int) -> jax.Array:
    """Normalised Gaussian weights at the offsets -radius..radius."""
    offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    weights = jnp.exp(-0.5 * (offsets / jnp.maximum(sigma_px, 1e-3)) ** 2)
    return weights / jnp.sum(weights)


def gaussian_blur(image: jax.Array, sigma_px: jax.Array, radius: int = 4) -> jax.Array:
    """Separable Gaussian blur with a traced sigma and a static kernel radius (edge padding)."""
    weights = _gaussian_weights(sigma_px, radius)
    height, width = image.shape
    padded = jnp.pad(image, radius, mode="edge")
    rows = sum(weights[i] * padded[i : i + height, :] for i in range(2 * radius + 1))
    return sum(weights[i] * rows[:, i : i + width] for i in range(2 * radius + 1))


def gaussian_blur_matrix(size: int, sigma_px: jax.Array, radius: int = 4) -> jax.Array:
    """The (size, size) matrix ``K`` with ``K @ image @ K.T == gaussian_blur(image, sigma_px)``
    for a square ``image`` (the same weights and edge padding).

    For small images with many derivatives: the image fit blurs the Jacobian of its unblurred
    model image, all tangents at once, as two dense matrix products, where 2 (2 radius + 1)
    shifted copies per tangent are not fused by XLA on the CPU. The cost grows as size^3:
    keep :func:`gaussian_blur` for micrographs.
    """
    # picks[k, i, j] = 1 where output row i reads input row j at offset k - radius (edge padding)
    source = np.clip(np.arange(size)[None, :] + np.arange(-radius, radius + 1)[:, None], 0, size - 1)
    picks = (source[:, :, None] == np.arange(size)).astype(np.float32)
    return jnp.einsum("k,kij->ij", _gaussian_weights(sigma_px, radius), jnp.asarray(picks))


def _film_texture(key: jax.Array, height: int, width: int, cell_px: int) -> jax.Array:
    """Smooth unit-variance random field with correlation length ``cell_px`` (amorphous carbon)."""
    coarse = fast_normal(key, (height // cell_px + 2, width // cell_px + 2))
    field = jax.image.resize(coarse, (height + 2 * cell_px, width + 2 * cell_px), "linear")
    field = field[cell_px : cell_px + height, cell_px : cell_px + width]
    # linear interpolation of independent nodes lowers the variance to about 4/9
    return field * 1.5


def optical_density(coverage: jax.Array, thickness: jax.Array, contrast: jax.Array) -> jax.Array:
    """Mass-thickness optical density mu t of one particle: ``exp(-mu t_max) = 1 - contrast``.

    Densities of overlapping particles add, as their projected thicknesses do.
    """
    return -jnp.log1p(-contrast) * thickness * coverage


def film_transmission(key: jax.Array, params: ImagingParams, imaging: Imaging, height: int, width: int) -> jax.Array:
    """The amorphous-carbon film's relative transmission that :func:`tem_image` draws from ``key``."""
    key_texture, _ = jax.random.split(key)
    return 1 - params.texture * _film_texture(key_texture, height, width, imaging.texture_cell_px)


def expected_counts(density: jax.Array, film: jax.Array, params: ImagingParams, imaging: Imaging = Imaging()) -> jax.Array:
    """The noise-free image of :func:`tem_image` in electrons per pixel (before shot noise).

    Differentiable in the density and in every imaging value, for fits of the image itself.
    """
    height, width = density.shape
    transmitted = jnp.exp(-density)
    ys = jnp.linspace(-1.0, 1.0, height, dtype=jnp.float32)[:, None]
    xs = jnp.linspace(-1.0, 1.0, width, dtype=jnp.float32)[None, :]
    beam = 1 + params.gradient_x * xs + params.gradient_y * ys
    if imaging.dark_field:
        signal = params.dark_background * film + (1 - transmitted)
    else:
        signal = transmitted * film
    return jnp.maximum(gaussian_blur(beam * signal, params.blur_sigma_px) * params.dose, 0.0)


def tem_image(
    key: jax.Array,
    density: jax.Array,
    params: ImagingParams,
    imaging: Imaging = Imaging(),
) -> jax.Array:
    """Turn a map of optical density (mu t) into a noisy TEM image.

    Bright field: ``I = I_beam(x) exp(-mu t(x)) T_film(x)``, blurred by the Gaussian
    point-spread function, then shot noise at ``dose`` electrons per pixel (normal
    approximation of Poisson, or exact). Dark field: the scattered fraction
    ``1 - exp(-mu t)`` over a small film background. Returned intensities are counts / dose,
    so the bright-field background is ~1.

    Args:
      key: PRNG key for the film texture and the shot noise.
      density: (H, W) optical density >= 0 (see :func:`optical_density`).
      params: the per-image imaging values.
      imaging: static options.

    Returns:
      (H, W) float32 image.
    """
    height, width = density.shape
    expected = expected_counts(density, film_transmission(key, params, imaging, height, width), params, imaging)
    _, key_noise = jax.random.split(key)
    if imaging.exact_poisson:
        counts = jax.random.poisson(key_noise, expected).astype(jnp.float32)
    else:
        counts = expected + jnp.sqrt(expected) * fast_normal(key_noise, expected.shape)
    image = counts / params.dose
    if imaging.quantize_levels:
        lo, hi = jnp.min(image), jnp.max(image)
        step = (hi - lo) / (imaging.quantize_levels - 1) + 1e-12
        image = lo + jnp.round((image - lo) / step) * step
    return image


def particle_thickness(
    shape: ShapeParams, center_xy_px: jax.Array, scale_px: jax.Array, dome: jax.Array, *, height: int, width: int
):
    """Coverage and relative thickness of one particle: flat (dome 0) to sphere-like (dome 1).

    The thickness grows from the edge like a sphere's chord, sqrt(1 - (1 - delta/delta_max)^2),
    where delta is the distance inside the edge and delta_max the half-width of the particle.
    """
    f, grad_x, grad_y, k = _edge_field(shape, center_xy_px, scale_px, height, width)
    coverage = _box_coverage(f, grad_x, grad_y, 1.0)
    depth = jnp.clip(f * jax.lax.rsqrt(1 + k * k) / (0.5 * scale_px), 0.0, 1.0)
    chord = 1 - (1 - depth) ** 2
    # sqrt has an infinite slope at 0 (every pixel outside): take it only where chord > 0, so
    # the thickness stays differentiable (NaN-free) in every parameter
    profile = jnp.where(chord > 0, jnp.sqrt(jnp.where(chord > 0, chord, 1.0)), 0.0)
    thickness = 1 - dome + dome * profile
    return coverage, thickness


def render(
    key: jax.Array,
    shape: ShapeParams,
    center_xy_px: jax.Array,
    scale_px: jax.Array,
    *,
    height: int,
    width: int,
    imaging: Imaging = Imaging(),
) -> tuple[jax.Array, jax.Array]:
    """Render one particle as a TEM image with random imaging conditions drawn from ``imaging``.

    Returns:
      (image, coverage), each (height, width) float32.
    """
    key_params, key_image = jax.random.split(key)
    params = sample_imaging(key_params, imaging)
    coverage, thickness = particle_thickness(
        shape, center_xy_px, scale_px, params.dome, height=height, width=width
    )
    density = optical_density(coverage, thickness, params.contrast)
    return tem_image(key_image, density, params, imaging), coverage
