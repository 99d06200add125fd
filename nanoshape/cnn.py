"""The shape-parameter CNN: a Flax NNX regressor from particle crops to (p, d, L, phi).

Input: crops from :func:`nanoshape.crop.crop_particle`, ``(B, S, S, 2)`` (normalised
intensity with neighbours blanked, and the particle's mask; 3 channels with ``crop.context``).
Output per crop: mean and log-variance of ``log p`` and of ``log L`` (canonical L >= 1),
``(cos 2 phi, sin 2 phi)`` per d class with one log-variance (phi has period pi), and logits
of d over 1..6. :func:`predict` turns them into parameters and uncertainties (``p_log_std``,
``l_ratio_log_std``, ``phi_std``, ``d_probs``), the names :func:`nanoshape.refine.refine`
takes; the uncertainties show the shape family's degeneracies (a circle: flat d, wide phi).

The default geometry is polar (``CNNOptions.geometry``): the crop is resampled around its
mask's centroid (:func:`polar_resample`) and convolved with circular padding along the
angle, so a turn of the particle is a shift and the predicted phi turns with it exactly.
Models are saved and loaded through orbax only (:func:`save_model`, :func:`load_model`);
the default model ships in ``nanoshape/data/model``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nanoshape.batching import pad_rows, pieces
from nanoshape.family import ShapeFamily, family_of_prior, get_family
from nanoshape.shape import ShapePrior

__all__ = ["CNNOptions", "ShapeCNN", "D_VALUES", "predict", "save_model", "load_model",
           "default_model_dir", "decode", "phi_vectors"]

#: d classes of eq. 1, in logit order (other families: ``CNNOptions.shape_family.classes``)
D_VALUES = (1, 2, 3, 4, 5, 6)
_LOGVAR_RANGE = (-10.0, 4.0)


@dataclass(frozen=True)
class CNNOptions:
    """Architecture of :class:`ShapeCNN` (static; stored beside every saved model).

    Attributes:
      input_size: side of the input crops (px).
      input_channels: channels of the input crops (2, or 3 with the context window of
        :class:`nanoshape.crop.CropOptions`).
      channels: output channels of the stride-2 convolution stages (each halves the side;
        in polar geometry, the radii and the angles by ``polar_angle_strides``).
      refine_from_stage: stages from this index on add a second 3x3 convolution at the same
        size (cheap where the maps are small; the first stages stay single for speed).
      hidden: width of the dense layer before the output heads.
      log_p_center, log_p_scale: the network predicts (log p - center) / scale; set from
        the training prior (log-uniform p on [0.25, 64]).
      log_l_center, log_l_scale: the same for log L (log-uniform L on [1, 4]).
      stem_channels: (cartesian only) if > 0, a 3x3 convolution at the full input resolution comes first
        (cheap on two input channels; the first stride-2 stage then sees features instead
        of raw pixels, which keeps sub-pixel edge positions).
      phi_per_d: one (cos 2 phi, sin 2 phi) pair per d class instead of one shared pair: a
        turn of the particle by a moves phi by d a / 2, so each d needs its own read-out.
      std_scales: factors on the predicted standard deviations of (log p, log L, phi), set
        after training so that the central 90 % intervals hold 90 % of a held-out
        validation set (:func:`nanoshape.training.calibrate_uncertainties`); 1 = as trained.
      geometry: ``"polar"``: the convolutions run on the crop resampled on a polar grid
        around the mask's centroid (:func:`polar_resample`), circular along the angle, so a
        turn of the particle is a shift along one axis; p, L and d are read from
        turn-invariant summaries and phi from the angular harmonics (equivariant by
        construction). ``"cartesian"``: plain stride-2 convolutions on the crop (the models
        shipped before the polar one).
      polar_angles, polar_radii: the polar grid (angles over 2 pi, radii over the crop's half
        diagonal).
      polar_angle_strides: the angular stride of each stage in ``channels`` (the radial
        stride is 2 everywhere); the angles left at the end must resolve harmonic 6.
      polar_angular_channels: after the stages, the radii are folded into the channels and
        these circular 1-D convolutions (kernel 3) run along the angle.
      polar_features: features per angle before the summaries.
      polar_harmonics: how many angular harmonics' magnitudes enter the summaries.
      family: the shape family whose parameters the heads predict (:mod:`nanoshape.family`):
        one Gaussian head per continuous parameter, one phase pair per class of its discrete
        parameter (read from the class's angular harmonic), the class logits.
      head_centers, head_scales: the normalisation of the continuous heads of a family other
        than eq. 1 (empty: from the family's default prior); eq. 1 uses ``log_p_*``, ``log_l_*``.
    """

    input_size: int = 64
    input_channels: int = 2
    channels: tuple[int, ...] = (16, 32, 64)
    refine_from_stage: int = 3
    hidden: int = 192
    log_p_center: float = math.log(4.0)
    log_p_scale: float = math.log(256.0) / math.sqrt(12.0)
    log_l_center: float = math.log(2.0)
    log_l_scale: float = math.log(4.0) / math.sqrt(12.0)
    stem_channels: int = 0
    phi_per_d: bool = True
    std_scales: tuple[float, float, float] = (1.0, 1.0, 1.0)
    geometry: str = "polar"
    polar_angles: int = 128
    polar_radii: int = 32
    polar_angle_strides: tuple[int, ...] = (2, 2, 2)
    polar_features: int = 128
    polar_harmonics: int = 8
    polar_angular_channels: tuple[int, ...] = (128, 128)
    family: str = "superellipse"
    head_centers: tuple[float, ...] = ()
    head_scales: tuple[float, ...] = ()

    def __post_init__(self):
        family = get_family(self.family)
        if len(self.std_scales) != len(family.continuous) + 1 and set(self.std_scales) == {1.0}:
            # uncalibrated (the default): one factor 1 per continuous parameter and phi
            object.__setattr__(self, "std_scales", (1.0,) * (len(family.continuous) + 1))
        if len(self.std_scales) != len(family.continuous) + 1:
            raise ValueError(f"model.std_scales needs {len(family.continuous) + 1} factors for the {family.name} family "
                             f"(one per continuous parameter and phi), got {self.std_scales}")
        if self.geometry not in ("cartesian", "polar"):
            raise ValueError(f"model.geometry must be 'cartesian' or 'polar', got {self.geometry!r}")
        if self.geometry == "polar":
            if not self.phi_per_d:
                raise ValueError("model.geometry=polar reads one phase per d from the angular harmonics: "
                                 "it needs model.phi_per_d=true")
            if len(self.polar_angle_strides) != len(self.channels):
                raise ValueError(f"model.polar_angle_strides {self.polar_angle_strides} needs one stride per stage "
                                 f"of model.channels {self.channels}")
            if self.polar_radii % 2 ** len(self.channels):
                raise ValueError(f"model.polar_radii ({self.polar_radii}) must be divisible by 2^{len(self.channels)}")
            stride = math.prod(self.polar_angle_strides)
            top = max(family.phase_harmonics)
            if self.polar_angles % stride or self.polar_angles // stride < 2 * top + 1:
                raise ValueError(f"model.polar_angles ({self.polar_angles}) must be divisible by the angular strides' "
                                 f"product ({stride}) and leave at least {2 * top + 1} angles, to resolve "
                                 f"angular harmonic {top}")
            if not 1 <= self.polar_harmonics <= self.polar_angles // stride // 2:
                raise ValueError(f"model.polar_harmonics must be in 1..{self.polar_angles // stride // 2}")

    @property
    def shape_family(self) -> ShapeFamily:
        """The :class:`nanoshape.family.ShapeFamily` of the heads."""
        return get_family(self.family)

    @property
    def n_phase_pairs(self) -> int:
        """(cos m phi, sin m phi) read-outs: one per class (eq. 1: per d), or one shared."""
        return len(self.shape_family.classes) if self.phi_per_d else 1

    @property
    def centers(self) -> tuple[float, ...]:
        """The centre of each continuous head's logarithm (the network predicts (log x - centre) / scale)."""
        return self._normalisation()[0]

    @property
    def scales(self) -> tuple[float, ...]:
        """The scale of each continuous head's logarithm."""
        return self._normalisation()[1]

    def _normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        family = self.shape_family
        if family.name == "superellipse":
            return (self.log_p_center, self.log_l_center), (self.log_p_scale, self.log_l_scale)
        if self.head_centers:
            return self.head_centers, self.head_scales
        return _log_uniform_normalisation(family, family.prior_type())

    @property
    def layout(self) -> dict[str, slice]:
        """Where each output lies in the network's raw output vector: each continuous head
        (eq. 1: log p and log L; each [mean, log-variance]), the phase pair(s), the phase's
        log-variance and the class logits (``"d"``, for every family)."""
        family = self.shape_family
        sizes = {**{c.head: 2 for c in family.continuous}, "phase": 2 * self.n_phase_pairs, "logvar_phi": 1,
                 "d": len(family.classes)}
        starts = np.cumsum([0, *sizes.values()])
        return {name: slice(int(a), int(a + n)) for (name, n), a in zip(sizes.items(), starts)}

    @property
    def n_outputs(self) -> int:
        """Length of the raw output vector (see :attr:`layout`)."""
        return self.layout["d"].stop

    @staticmethod
    def for_prior(prior: Any, **kwargs) -> "CNNOptions":
        """Target normalisation matching a training prior (of any family)."""
        if not isinstance(prior, ShapePrior):
            family = family_of_prior(prior)
            centers, scales = _log_uniform_normalisation(family, prior)
            return CNNOptions(family=family.name, head_centers=centers, head_scales=scales,
                              std_scales=(1.0,) * (len(family.continuous) + 1), **kwargs)
        kwargs = {k: v for k, v in kwargs.items() if k != "family"}
        lp, hp = (math.log(v) for v in prior.p_range)
        ll, hl = (math.log(v) for v in prior.l_ratio_range)
        return CNNOptions(log_p_center=0.5 * (lp + hp), log_p_scale=max((hp - lp) / math.sqrt(12.0), 0.1),
                          log_l_center=0.5 * (ll + hl), log_l_scale=max((hl - ll) / math.sqrt(12.0), 0.1), **kwargs)


def _log_uniform_normalisation(family: ShapeFamily, prior: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Centre and scale of each continuous head for a log-uniform prior on ``<name>_range``."""
    bounds = [tuple(math.log(v) for v in getattr(prior, f"{c.name}_range")) for c in family.continuous]
    return (tuple(0.5 * (lo + hi) for lo, hi in bounds),
            tuple(max((hi - lo) / math.sqrt(12.0), 0.1) for lo, hi in bounds))


class ShapeCNN(nnx.Module):
    """The shape regressor: raw outputs ``(B, options.n_outputs)`` (see :attr:`CNNOptions.layout`).

    Polar geometry (the default): :func:`polar_resample`, 3x3 convolution stages on the
    (angle, radius) grid (circular along the angle, stride 2 along the radius and
    ``polar_angle_strides`` along the angle), the radii folded into the channels, circular 1-D
    convolutions along the angle, per-angle features, then a dense head on their turn-invariant
    summaries and a complex-linear phase read-out of their angular harmonics. Cartesian
    geometry: stride-2 3x3 convolutions on the crop (the later ones followed by a 3x3 one at
    the same size) and a dense head.
    """

    def __init__(self, options: CNNOptions = CNNOptions(), *, rngs: nnx.Rngs):
        self.options = options
        if options.geometry == "polar":
            self._init_polar(options, rngs)
            return
        convs = []
        c_in = options.input_channels
        if options.stem_channels > 0:
            convs.append(nnx.Conv(c_in, options.stem_channels, (3, 3), strides=1, padding="SAME", rngs=rngs))
            c_in = options.stem_channels
        for stage, c_out in enumerate(options.channels):
            convs.append(nnx.Conv(c_in, c_out, (3, 3), strides=2, padding="SAME", rngs=rngs))
            if stage >= options.refine_from_stage:
                convs.append(nnx.Conv(c_out, c_out, (3, 3), strides=1, padding="SAME", rngs=rngs))
            c_in = c_out
        self.convs = nnx.List(convs)
        side = options.input_size // 2 ** len(options.channels)
        self.dense = nnx.Linear(side * side * c_in, options.hidden, rngs=rngs)
        self.out = nnx.Linear(options.hidden, options.n_outputs, rngs=rngs, kernel_init=nnx.initializers.zeros_init())

    def _init_polar(self, options: CNNOptions, rngs: nnx.Rngs):
        convs = []
        c_in = options.input_channels
        for stage, (c_out, angle_stride) in enumerate(zip(options.channels, options.polar_angle_strides)):
            convs.append(nnx.Conv(c_in, c_out, (3, 3), strides=(angle_stride, 2), padding="VALID", rngs=rngs))
            if stage >= options.refine_from_stage:
                convs.append(nnx.Conv(c_out, c_out, (3, 3), strides=1, padding="VALID", rngs=rngs))
            c_in = c_out
        self.convs = nnx.List(convs)
        c_in *= options.polar_radii // 2 ** len(options.channels)
        angular = []
        for c_out in options.polar_angular_channels:
            angular.append(nnx.Conv(c_in, c_out, (3,), padding="VALID", rngs=rngs))
            c_in = c_out
        self.angular = nnx.List(angular)
        features = options.polar_features
        self.per_angle = nnx.Linear(c_in, features, rngs=rngs)
        self.dense = nnx.Linear(features * (2 + options.polar_harmonics), options.hidden, rngs=rngs)
        # every output but the phase pairs, which come from the angular harmonics
        self.out = nnx.Linear(options.hidden, options.n_outputs - 2 * options.n_phase_pairs, rngs=rngs,
                              kernel_init=nnx.initializers.zeros_init())
        # complex weights (real, imaginary) of the phase read-out, one set per phase pair
        self.phase = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (2, options.n_phase_pairs, features)))

    def __call__(self, crops: jax.Array) -> jax.Array:
        if self.options.geometry == "polar":
            return self._polar_call(crops)
        x = crops
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
        x = x.reshape(x.shape[0], -1)
        return self.out(jax.nn.relu(self.dense(x)))

    def _polar_call(self, crops: jax.Array) -> jax.Array:
        o = self.options
        x = jax.vmap(functools.partial(polar_resample, angles=o.polar_angles, radii=o.polar_radii))(crops)
        for conv in self.convs:
            # circular along the angle (axis 1), zeros beyond the radii (axis 2)
            x = jnp.pad(x, ((0, 0), (1, 1), (0, 0), (0, 0)), mode="wrap")
            x = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
            x = jax.nn.relu(conv(x))
        batch, n_angles = x.shape[:2]
        x = x.reshape(batch, n_angles, -1)
        for conv in self.angular:
            x = jax.nn.relu(conv(jnp.pad(x, ((0, 0), (1, 1), (0, 0)), mode="wrap")))
        features = jax.nn.relu(self.per_angle(x))  # (B, T, F)
        spectrum = jnp.fft.rfft(features, axis=1) / n_angles  # (B, T/2 + 1, F)
        magnitudes = jnp.abs(spectrum[:, 1 : 1 + o.polar_harmonics])  # rotation invariant
        invariant = jnp.concatenate([features.mean(axis=1), features.max(axis=1),
                                     magnitudes.reshape(batch, -1)], axis=1)
        raw = self.out(jax.nn.relu(self.dense(invariant)))
        # a turn of the particle by a multiplies angular harmonic k by exp(-i k a) and turns
        # 2 phi by -d a: a complex-linear read-out of harmonic d is equivariant by construction
        n_pairs = o.n_phase_pairs
        first = o.shape_family.phase_harmonics[0]
        if o.shape_family.phase_harmonics == tuple(range(first, first + n_pairs)):
            harmonic = spectrum[:, first : first + n_pairs]  # (B, pairs, F): eq. 1: harmonic d for pair d
        else:
            harmonic = spectrum[:, np.asarray(o.shape_family.phase_harmonics)]
        w_re, w_im = self.phase[0][None], self.phase[1][None]
        z_re = jnp.sum(w_re * harmonic.real - w_im * harmonic.imag, axis=2)
        z_im = jnp.sum(w_re * harmonic.imag + w_im * harmonic.real, axis=2)
        pairs = jnp.stack([z_re, z_im], axis=2).reshape(batch, 2 * n_pairs)
        phase = o.layout["phase"]
        return jnp.concatenate([raw[:, : phase.start], pairs, raw[:, phase.start :]], axis=1)


def polar_resample(crop: jax.Array, *, angles: int, radii: int) -> jax.Array:
    """One crop (S, S, C) resampled (bilinear) on a polar grid around its mask's centroid.

    Row i is the angle ``2 pi i / angles`` (theta as in eq. 1: x along columns, y along rows),
    column j the radius ``(j + 0.5) / radii`` of the crop's half diagonal; beyond the crop, 0
    (the normalised background). Channels 0 and 1 (intensity, mask) are sampled around the
    mask's centroid; a context channel (2, a window ``crop.context`` times wider around the
    crop's middle) around the crop's middle, so it reaches that many times further out. A
    turn of the particle is a circular shift of the rows.

    Returns:
      (angles, radii, C) float32.
    """
    size = crop.shape[0]
    mask = crop[..., 1]
    grid = jnp.arange(size, dtype=jnp.float32)
    total = jnp.sum(mask)
    middle = 0.5 * (size - 1)
    cy = jnp.where(total > 0, jnp.sum(mask * grid[:, None]) / jnp.maximum(total, 1e-6), middle)
    cx = jnp.where(total > 0, jnp.sum(mask * grid[None, :]) / jnp.maximum(total, 1e-6), middle)
    theta = 2 * jnp.pi * jnp.arange(angles, dtype=jnp.float32) / angles
    r = (jnp.arange(radii, dtype=jnp.float32) + 0.5) * (0.5 * size * math.sqrt(2.0) / radii)
    dy, dx = jnp.sin(theta)[:, None] * r[None, :], jnp.cos(theta)[:, None] * r[None, :]
    own = _bilinear(crop[..., :2], cy + dy, cx + dx)
    if crop.shape[-1] == 2:
        return own
    return jnp.concatenate([own, _bilinear(crop[..., 2:], middle + dy, middle + dx)], axis=-1)


def _bilinear(image: jax.Array, ys: jax.Array, xs: jax.Array) -> jax.Array:
    """``image`` (S, S, C) at the points (ys, xs) (pixel-index coordinates), 0 beyond its edge."""
    size = image.shape[0]
    y0, x0 = jnp.floor(ys), jnp.floor(xs)
    wy, wx = ys - y0, xs - x0
    flat = image.reshape(size * size, image.shape[-1])
    out = 0.0
    # the four neighbours of every point, all channels in one gather each
    for dy, dx, weight in ((0, 0, (1 - wy) * (1 - wx)), (0, 1, (1 - wy) * wx), (1, 0, wy * (1 - wx)), (1, 1, wy * wx)):
        yi, xi = y0.astype(jnp.int32) + dy, x0.astype(jnp.int32) + dx
        inside = (yi >= 0) & (yi < size) & (xi >= 0) & (xi < size)
        values = jnp.take(flat, jnp.clip(yi, 0, size - 1) * size + jnp.clip(xi, 0, size - 1), axis=0)
        out = out + jnp.where(inside, weight, 0.0)[..., None] * values
    return out


def phi_vectors(raw: jax.Array, options: CNNOptions, d_index: jax.Array) -> jax.Array:
    """The (B, 2) raw (cos m phi, sin m phi) read-out for the class ``d_index`` (B,) of each crop."""
    pairs = raw[:, options.layout["phase"]]
    if not options.phi_per_d:
        return pairs
    pairs = pairs.reshape(raw.shape[0], len(options.shape_family.classes), 2)
    return jnp.take_along_axis(pairs, d_index[:, None, None], axis=1)[:, 0]


def gaussian_output(raw: jax.Array, options: CNNOptions, name: str) -> tuple[jax.Array, jax.Array]:
    """The standardised mean and the log-variance (clipped) the network gives for a continuous
    head (eq. 1: ``"log_p"`` or ``"log_l"``)."""
    start = options.layout[name].start
    return raw[:, start], jnp.clip(raw[:, start + 1], *_LOGVAR_RANGE)


def phase_multiplier(options: CNNOptions, d_index: jax.Array) -> float | jax.Array:
    """The factor m of the phase target (cos m phi, sin m phi) of class ``d_index`` (a Python
    number where every class shares it, as eq. 1's 2 does)."""
    multipliers = options.shape_family.phase_multipliers
    if len(set(multipliers)) == 1:
        return float(multipliers[0])
    return jnp.asarray(multipliers, jnp.float32)[d_index]


def phase_from_vector(vec: jax.Array, multiplier: float | jax.Array) -> jax.Array:
    """phi in its canonical period ``[0, 2 pi / |m|)`` from (cos m phi, sin m phi)-like vectors (..., 2)."""
    if isinstance(multiplier, float):
        return jnp.mod((1 / multiplier) * jnp.arctan2(vec[..., 1], vec[..., 0]), 2 * math.pi / abs(multiplier))
    return jnp.mod(jnp.arctan2(vec[..., 1], vec[..., 0]) / multiplier, 2 * jnp.pi / jnp.abs(multiplier))


def decode(raw: jax.Array, options: CNNOptions) -> dict[str, jax.Array]:
    """Network outputs ``(B, options.n_outputs)`` -> parameters and uncertainties (jax arrays).

    Keys: each continuous head's logarithm and standard deviation (eq. 1: ``log_p``,
    ``p_log_std``, ``log_l``, ``l_ratio_log_std``), ``phi`` and ``phi_std``, the class
    probabilities and logits ``d_probs``, ``d_logits`` and the phase each class reads,
    ``phi_by_d`` (for every family: ``d`` names the discrete parameter here). With
    ``phi_per_d`` the phase is read from the pair of the most probable class.
    """
    family = options.shape_family
    layout = options.layout
    *scale_continuous, scale_phi = options.std_scales
    out = {}
    for c, center, scale, std_scale in zip(family.continuous, options.centers, options.scales, scale_continuous):
        mean, logvar = gaussian_output(raw, options, c.head)
        out[c.head] = center + scale * mean
        out[c.std_name] = std_scale * scale * jnp.exp(0.5 * logvar)
    d_logits = raw[:, layout["d"]]
    d_probs = jax.nn.softmax(d_logits, axis=1)
    d_index = jnp.argmax(d_probs, axis=1)
    vec = phi_vectors(raw, options, d_index)
    norm = jnp.linalg.norm(vec, axis=1)
    multiplier = phase_multiplier(options, d_index)
    phi = phase_from_vector(vec, multiplier)
    # a perpendicular error of sigma in the unit vector turns m phi by sigma / |v|
    logvar_phi = jnp.clip(raw[:, layout["logvar_phi"].start], *_LOGVAR_RANGE)
    inverse = 1 / abs(multiplier) if isinstance(multiplier, float) else 1 / jnp.abs(multiplier)
    phi_std = scale_phi * inverse * jnp.exp(0.5 * logvar_phi) / jnp.maximum(norm, 0.25)
    # the phase each class reads (for fits that try a second class)
    n_classes = len(family.classes)
    every = jnp.stack([phi_vectors(raw, options, jnp.full(raw.shape[0], k)) for k in range(n_classes)], axis=1)
    phi_by_d = jnp.stack([phase_from_vector(every[:, k], phase_multiplier(options, jnp.full(raw.shape[0], k)))
                          for k in range(n_classes)], axis=1)
    # a uniform phase over the period 2 pi / m has standard deviation (2 pi / m) / sqrt(12)
    period = 2 * math.pi * inverse
    return {
        **out,
        "phi": phi, "phi_std": jnp.minimum(phi_std, period / math.sqrt(12.0)), "d_probs": d_probs,
        "d_logits": d_logits, "logvar_phi": logvar_phi, "phi_by_d": phi_by_d,
    }


def _predicted(options: CNNOptions) -> tuple[str, ...]:
    heads = tuple(name for c in options.shape_family.continuous for name in (c.head, c.std_name))
    return (*heads, "phi", "phi_std", "d_probs", "phi_by_d")


@functools.partial(jax.jit, static_argnames=("graphdef", "options"))
def _forward(graphdef, state, crops, options: CNNOptions):
    # decoded inside the compiled call: run eagerly, each op of decode would compile again
    # for every new number of crops (about a second per micrograph)
    decoded = decode(nnx.merge(graphdef, state)(crops), options)
    return {k: decoded[k] for k in _predicted(options)}


def predict(model: ShapeCNN, crops: np.ndarray | jax.Array, *, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Shape parameters of every crop.

    Args:
      model: a :class:`ShapeCNN` (e.g. :func:`load_model`).
      crops: (n, S, S, C) crops (the model's input size and channels).
      batch_size: crops per compiled call (the last batch is padded: one compilation).

    Returns:
      dict of numpy arrays of (n,): canonical ``p``, ``d``, ``l_ratio`` (>= 1), ``phi`` in
      [0, pi); uncertainties ``p_log_std`` and ``l_ratio_log_std`` (standard deviations of
      log p and log L), ``phi_std`` (radians); ``d_probs`` (n, 6), the probability of each d
      in 1..6; ``phi_by_d`` (n, 6), the phase read out for each d (``phi`` is the chosen
      d's); ``d_confidence`` (the probability of the chosen d). For a model of another
      family (``model.options.family``) the same with its names: its parameters (in
      canonical form), ``<continuous>_log_std``, ``phi_std``, ``<discrete>_probs``,
      ``phi_by_<discrete>`` and ``<discrete>_confidence``.
    """
    crops = np.asarray(crops, np.float32)
    n = crops.shape[0]
    size, channels = model.options.input_size, model.options.input_channels
    if crops.ndim != 4 or crops.shape[1:] != (size, size, channels):
        hint = " (crop.context > 0 adds the third channel)" if crops.ndim == 4 and crops.shape[-1] != channels else ""
        raise ValueError(f"predict: this model takes crops of (n, {size}, {size}, {channels}), got {crops.shape}{hint}")
    graphdef, state = nnx.split(model)
    parts = []
    for piece in pieces(n, (batch_size,)):
        decoded = _forward(graphdef, state, jnp.asarray(pad_rows(crops[piece.rows], piece.size, 0.0)), model.options)
        parts.append({k: np.asarray(v)[: piece.count] for k, v in decoded.items()})
    family = model.options.shape_family
    predicted, n_classes = _predicted(model.options), len(family.classes)
    if parts:
        out = {k: np.concatenate([part[k] for part in parts]) for k in predicted}
    else:
        out = {k: np.zeros((0, n_classes) if k in ("d_probs", "phi_by_d") else 0, np.float32) for k in predicted}
    d_index = out["d_probs"].argmax(axis=1) if n else np.zeros(0, int)
    values = {family.discrete: np.asarray(family.classes)[d_index].astype(np.int32),
              "phi": out["phi"].astype(np.float32)}
    for c in family.continuous:
        log_value = np.maximum(out[c.head], math.log(c.floor)) if c.floor > 0 else out[c.head]
        values[c.name] = np.exp(log_value).astype(np.float32)
    discrete = family.discrete
    return {
        **{name: values[name] for name in family.columns},
        **{c.std_name: out[c.std_name].astype(np.float32) for c in family.continuous},
        "phi_std": out["phi_std"].astype(np.float32),
        f"{discrete}_probs": out["d_probs"].astype(np.float32),
        f"phi_by_{discrete}": out["phi_by_d"].astype(np.float32),
        f"{discrete}_confidence": (out["d_probs"][np.arange(n), d_index].astype(np.float32) if n
                                   else np.zeros(0, np.float32)),
    }


def default_model_dir() -> Path:
    """Where the model shipped with the package lives."""
    return Path(str(resources.files("nanoshape.data").joinpath("model")))


def save_model(model: ShapeCNN, directory: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Save the weights (orbax) and the architecture (``model.json``) to ``directory``."""
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    state = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    weights = directory / "weights"
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(weights, state, force=True)
    meta = {"format": "nanoshape-cnn-1", "options": dataclasses.asdict(model.options), **(extra or {})}
    (directory / "model.json").write_text(json.dumps(meta, indent=1))
    return directory


#: what a model saved before an architecture option existed was built with
_BEFORE_OPTION_EXISTED = {"stem_channels": 0, "phi_per_d": False, "input_channels": 2, "geometry": "cartesian"}


@functools.lru_cache(maxsize=4)
def _load_cached(directory: str) -> ShapeCNN:
    import orbax.checkpoint as ocp

    path = Path(directory)
    meta_path = path / "model.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path}: not a nanoshape model (no model.json); train one with `nanoshape train`")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != "nanoshape-cnn-1":
        raise ValueError(f"{meta_path}: unknown model format {meta.get('format')!r}")
    fields = {f.name for f in dataclasses.fields(CNNOptions)}
    stored = {**_BEFORE_OPTION_EXISTED, **meta["options"]}
    options = CNNOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items() if k in fields})
    # built abstractly (shapes only; every parameter comes from the file), not initialised at random first
    model = nnx.eval_shape(lambda: ShapeCNN(options, rngs=nnx.Rngs(0)))
    abstract = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore((path / "weights").absolute(), abstract)
    restored = jax.tree.map(jnp.asarray, restored)  # on the device once, not copied at every call
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(model, state)
    return model


def load_model(directory: str | Path | None = None) -> ShapeCNN:
    """Load a saved model (orbax; nothing executable is read), by default the shipped one.

    The result is cached per directory: do not modify it in place.
    """
    path = default_model_dir() if directory in (None, "") else Path(directory)
    if (path / "model").is_dir() and not (path / "model.json").exists():
        path = path / "model"  # a training run directory
    return _load_cached(str(path.absolute()))
