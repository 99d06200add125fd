"""The shape-parameter CNN: a Flax NNX regressor from particle crops to (p, d, L, phi).

Input: crops from :func:`nanoshape.crop.crop_particle` (``(B, S, S, 2)``: normalised
intensity with neighbours blanked, and the particle's mask; ``(B, S, S, 3)`` for models
trained with ``crop.context``, whose third channel shows a wider window). Output, per crop:

- ``log p``: mean and log-variance (Gaussian negative log-likelihood; optionally a beta-NLL,
  see :class:`nanoshape.training.TrainOptions`);
- ``log L`` (canonical L >= 1): mean and log-variance;
- ``phi`` through ``(cos 2 phi, sin 2 phi)``, which respects phi's period pi (the canonical
  range is [0, pi)), with one log-variance for both components;
- ``d``: logits over 1..6 (cross-entropy).

The uncertainties make the degeneracies of the shape family visible instead of hiding
them: for a circle (p = 2, L = 1) every d and phi draw the same shape, and the model
learns a flat d distribution and a wide phi variance there. :func:`predict` turns the
outputs into the parameters and their uncertainties (``p_log_std``, ``l_ratio_log_std``,
``phi_std``, ``d_probs``), the names :func:`nanoshape.refine.refine` takes as a start.

Models are saved and loaded through orbax only (:func:`save_model`, :func:`load_model`);
the default model ships inside the package (``nanoshape/data/model``) and is what
:func:`load_model` returns when no path is given.
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

from nanoshape.shape import ShapePrior

__all__ = ["CNNOptions", "ShapeCNN", "D_VALUES", "predict", "save_model", "load_model",
           "default_model_dir", "decode", "phi_vectors"]

#: d classes, in logit order
D_VALUES = (1, 2, 3, 4, 5, 6)
_LOGVAR_RANGE = (-10.0, 4.0)


@dataclass(frozen=True)
class CNNOptions:
    """Architecture of :class:`ShapeCNN` (static; stored beside every saved model).

    Attributes:
      input_size: side of the input crops (px).
      input_channels: channels of the input crops (2, or 3 with the context window of
        :class:`nanoshape.crop.CropOptions`).
      channels: output channels of the stride-2 convolution stages (each halves the side).
      refine_from_stage: stages from this index on add a second 3x3 convolution at the same
        size (cheap where the maps are small; the first stages stay single for speed).
      hidden: width of the dense layer before the output heads.
      log_p_center, log_p_scale: the network predicts (log p - center) / scale; set from
        the training prior (log-uniform p on [0.25, 64]).
      log_l_center, log_l_scale: the same for log L (log-uniform L on [1, 4]).
      stem_channels: if > 0, a 3x3 convolution at the full input resolution comes first
        (cheap on two input channels; the first stride-2 stage then sees features instead
        of raw pixels, which keeps sub-pixel edge positions).
      phi_per_d: one (cos 2 phi, sin 2 phi) pair per d class instead of one shared pair: a
        turn of the particle by a moves phi by d a / 2, so each d needs its own read-out.
      std_scales: factors on the predicted standard deviations of (log p, log L, phi), set
        after training so that the central 90 % intervals hold 90 % of a held-out
        validation set (:func:`nanoshape.training.calibrate_uncertainties`); 1 = as trained.
    """

    input_size: int = 64
    input_channels: int = 2
    channels: tuple[int, ...] = (16, 32, 64, 128)
    refine_from_stage: int = 2
    hidden: int = 192
    log_p_center: float = math.log(4.0)
    log_p_scale: float = math.log(256.0) / math.sqrt(12.0)
    log_l_center: float = math.log(2.0)
    log_l_scale: float = math.log(4.0) / math.sqrt(12.0)
    stem_channels: int = 0
    phi_per_d: bool = True
    std_scales: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def n_outputs(self) -> int:
        """[mu, logvar] of log p and log L, the phi pair(s), logvar phi, the d logits."""
        return 4 + 2 * (len(D_VALUES) if self.phi_per_d else 1) + 1 + len(D_VALUES)

    @staticmethod
    def for_prior(prior: ShapePrior, **kwargs) -> "CNNOptions":
        """Target normalisation matching a training prior."""
        lp, hp = (math.log(v) for v in prior.p_range)
        ll, hl = (math.log(v) for v in prior.l_ratio_range)
        return CNNOptions(log_p_center=0.5 * (lp + hp), log_p_scale=max((hp - lp) / math.sqrt(12.0), 0.1),
                          log_l_center=0.5 * (ll + hl), log_l_scale=max((hl - ll) / math.sqrt(12.0), 0.1), **kwargs)


class ShapeCNN(nnx.Module):
    """Stride-2 3x3 convolutions (the later ones followed by a 3x3 one at the same size) and a dense head."""

    def __init__(self, options: CNNOptions = CNNOptions(), *, rngs: nnx.Rngs):
        self.options = options
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

    def __call__(self, crops: jax.Array) -> jax.Array:
        x = crops
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
        x = x.reshape(x.shape[0], -1)
        return self.out(jax.nn.relu(self.dense(x)))


def phi_vectors(raw: jax.Array, options: CNNOptions, d_index: jax.Array) -> jax.Array:
    """The (B, 2) raw (cos 2 phi, sin 2 phi) read-out for the d class ``d_index`` (B,) of each crop."""
    if not options.phi_per_d:
        return raw[:, 4:6]
    pairs = raw[:, 4 : 4 + 2 * len(D_VALUES)].reshape(raw.shape[0], len(D_VALUES), 2)
    return jnp.take_along_axis(pairs, d_index[:, None, None], axis=1)[:, 0]


def _logvar_phi_index(options: CNNOptions) -> int:
    return 4 + 2 * (len(D_VALUES) if options.phi_per_d else 1)


def decode(raw: jax.Array, options: CNNOptions) -> dict[str, jax.Array]:
    """Network outputs ``(B, options.n_outputs)`` -> parameters and uncertainties (jax arrays).

    With ``phi_per_d`` the phase is read from the pair of the most probable d.
    """
    lo, hi = _LOGVAR_RANGE
    log_p = options.log_p_center + options.log_p_scale * raw[:, 0]
    scale_p, scale_l, scale_phi = options.std_scales
    log_p_std = scale_p * options.log_p_scale * jnp.exp(0.5 * jnp.clip(raw[:, 1], lo, hi))
    log_l = options.log_l_center + options.log_l_scale * raw[:, 2]
    log_l_std = scale_l * options.log_l_scale * jnp.exp(0.5 * jnp.clip(raw[:, 3], lo, hi))
    first_logit = _logvar_phi_index(options) + 1
    d_probs = jax.nn.softmax(raw[:, first_logit:], axis=1)
    vec = phi_vectors(raw, options, jnp.argmax(d_probs, axis=1))
    norm = jnp.linalg.norm(vec, axis=1)
    phi = jnp.mod(0.5 * jnp.arctan2(vec[:, 1], vec[:, 0]), jnp.pi)
    # a perpendicular error of sigma in the unit vector turns 2 phi by sigma / |v|
    logvar_phi = jnp.clip(raw[:, first_logit - 1], lo, hi)
    phi_std = scale_phi * 0.5 * jnp.exp(0.5 * logvar_phi) / jnp.maximum(norm, 0.25)
    # the phase each d class reads (for fits that try a second d)
    every = jnp.stack([phi_vectors(raw, options, jnp.full(raw.shape[0], k)) for k in range(len(D_VALUES))], axis=1)
    phi_by_d = jnp.mod(0.5 * jnp.arctan2(every[..., 1], every[..., 0]), jnp.pi)
    return {
        "log_p": log_p, "p_log_std": log_p_std, "log_l": log_l, "l_ratio_log_std": log_l_std,
        "phi": phi, "phi_std": jnp.minimum(phi_std, jnp.pi / math.sqrt(12.0)), "d_probs": d_probs,
        "d_logits": raw[:, first_logit:], "logvar_phi": logvar_phi, "phi_by_d": phi_by_d,
    }


_PREDICTED = ("log_p", "p_log_std", "log_l", "l_ratio_log_std", "phi", "phi_std", "d_probs", "phi_by_d")


@functools.partial(jax.jit, static_argnames=("graphdef", "options"))
def _forward(graphdef, state, crops, options: CNNOptions):
    # decoded inside the compiled call: run eagerly, each op of decode would compile again
    # for every new number of crops (about a second per micrograph)
    decoded = decode(nnx.merge(graphdef, state)(crops), options)
    return {k: decoded[k] for k in _PREDICTED}


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
      d's); ``d_confidence`` (the probability of the chosen d).
    """
    crops = np.asarray(crops, np.float32)
    n = crops.shape[0]
    size, channels = model.options.input_size, model.options.input_channels
    if crops.ndim != 4 or crops.shape[1:] != (size, size, channels):
        hint = " (crop.context > 0 adds the third channel)" if crops.ndim == 4 and crops.shape[-1] != channels else ""
        raise ValueError(f"predict: this model takes crops of (n, {size}, {size}, {channels}), got {crops.shape}{hint}")
    graphdef, state = nnx.split(model)
    parts = []
    for start in range(0, n, batch_size):
        chunk = crops[start : start + batch_size]
        padded = np.zeros((batch_size, size, size, channels), np.float32)
        padded[: len(chunk)] = chunk
        decoded = _forward(graphdef, state, jnp.asarray(padded), model.options)
        parts.append({k: np.asarray(v)[: len(chunk)] for k, v in decoded.items()})
    if parts:
        out = {k: np.concatenate([part[k] for part in parts]) for k in _PREDICTED}
    else:
        out = {k: np.zeros((0, len(D_VALUES)) if k in ("d_probs", "phi_by_d") else 0, np.float32) for k in _PREDICTED}
    d_index = out["d_probs"].argmax(axis=1) if n else np.zeros(0, int)
    return {
        "p": np.exp(out["log_p"]).astype(np.float32),
        "d": np.asarray(D_VALUES)[d_index].astype(np.int32),
        "l_ratio": np.exp(np.maximum(out["log_l"], 0.0)).astype(np.float32),
        "phi": out["phi"].astype(np.float32),
        "p_log_std": out["p_log_std"].astype(np.float32),
        "l_ratio_log_std": out["l_ratio_log_std"].astype(np.float32),
        "phi_std": out["phi_std"].astype(np.float32),
        "d_probs": out["d_probs"].astype(np.float32),
        "phi_by_d": out["phi_by_d"].astype(np.float32),
        "d_confidence": out["d_probs"][np.arange(n), d_index].astype(np.float32) if n else np.zeros(0, np.float32),
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
_BEFORE_OPTION_EXISTED = {"stem_channels": 0, "phi_per_d": False, "input_channels": 2}


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
    model = ShapeCNN(options, rngs=nnx.Rngs(0))
    target = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), target)
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore((path / "weights").absolute(), abstract)
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
