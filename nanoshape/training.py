"""Training the shape CNN on particles rendered on the fly (``nanoshape train``).

Every step renders its own batch inside one jitted function from
``fold_in(key, step)`` (:func:`nanoshape.trainingdata.training_batch`: a shape from the prior,
the full TEM imaging model, the mask, the crop), so there is no dataset on disk and a
resumed run sees exactly the batches an uninterrupted one would. The loss is the
Gaussian negative log-likelihood of log p, log L and (cos 2 phi, sin 2 phi), each term
weighted by its predicted variance to the power ``nll_beta`` (the beta-NLL), plus the
cross-entropy of d (see :mod:`nanoshape.cnn`).

A run directory holds ``options.json`` (the resolved options), ``metrics.jsonl`` (one
JSON object per logged step: training loss and RMSEs, validation metrics, images/s),
``checkpoints/`` (orbax CheckpointManager: parameters, optimiser state and step) and, at
the end, ``model/`` (the trained model, its uncertainties calibrated on the validation set
by :func:`calibrate_uncertainties`, loadable by :func:`nanoshape.cnn.load_model`) and
``test.json`` (the test-set figures of :func:`evaluate_model`). Rerunning into the same
directory resumes from the newest checkpoint.

With several JAX devices the batch is sharded over a one-axis mesh (``data``) and the
parameters replicated, so the same command uses every GPU; random numbers do not depend
on the sharding, so the loss curve matches a single-device run.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from nanoshape.cnn import (CNNOptions, ShapeCNN, decode, gaussian_output, phase_multiplier,
                           phi_vectors, save_model)
from nanoshape.crop import CropOptions
from nanoshape.family import PolygonPrior, ShapeFamily, get_family
from nanoshape.render import Imaging
from nanoshape.shape import ShapePrior
from nanoshape.trainingdata import training_batch

__all__ = ["TrainOptions", "run_training", "evaluate_model", "loss_terms", "calibrate_uncertainties"]


@dataclass(frozen=True)
class TrainOptions:
    """How the CNN is trained (all static and hashable).

    Attributes:
      seed: seed of the training batches and the initial weights.
      steps: optimiser steps.
      batch_size: rendered crops per step (split over the devices).
      learning_rate: peak learning rate (AdamW), reached after ``warmup_steps`` and decayed
        to 2% by a cosine over the rest.
      warmup_steps: linear warm-up.
      weight_decay: AdamW decoupled weight decay.
      clip_norm: global gradient-norm clipping.
      validation_size, validation_seed: the fixed validation set, scored every
        ``validation_every`` steps.
      test_size, test_seed: the fixed test set scored at the end (the seed paper's 20 % of
        65,000 images is 13,000).
      checkpoint_every: steps between checkpoints (and metric lines).
      keep_checkpoints: checkpoints kept on disk.
      devices: how many JAX devices to shard the batch over (0 = all).
      render_chunk: crops rendered per ``lax.map`` iteration.
      nll_beta: the beta of the beta-NLL (Seitzer et al., ICLR 2022): each Gaussian term
        (log p, log L, phi) is weighted by its predicted variance to the power beta (held
        constant in the gradient), so that hard, high-variance examples (the boxy shapes'
        log p) still pull on the mean; 0 = the plain negative log-likelihood (the default).
        It also shifts weight between the terms: phi and L, predicted precisely, weigh
        less.
      model: the architecture; ``model.family`` chooses the shape family
        (:mod:`nanoshape.family`; ``nanoshape train shape.family=<name>`` sets it).
      prior: the shape prior of the rendered particles (eq. 1, ``superellipse``).
      polygon_prior: the shape prior of the ``polygon`` family.
      imaging: the TEM imaging model.
      crop: the crop size and margin (must match ``model.input_size``).
    """

    seed: int = 0
    steps: int = 16000
    batch_size: int = 128
    learning_rate: float = 2e-3
    warmup_steps: int = 200
    weight_decay: float = 1e-4
    clip_norm: float = 5.0
    validation_size: int = 2048
    validation_seed: int = 1_000_003
    validation_every: int = 1000
    test_size: int = 13_000
    test_seed: int = 2_000_003
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    devices: int = 0
    render_chunk: int = 128
    nll_beta: float = 0.0
    model: CNNOptions = field(default_factory=CNNOptions)
    prior: ShapePrior = field(default_factory=ShapePrior)
    polygon_prior: PolygonPrior = field(default_factory=PolygonPrior)
    imaging: Imaging = field(default_factory=Imaging)
    crop: CropOptions = field(default_factory=CropOptions)

    def __post_init__(self):
        if self.crop.size != self.model.input_size:
            raise ValueError(f"crop.size ({self.crop.size}) must equal model.input_size ({self.model.input_size})")
        if self.crop.channels != self.model.input_channels:
            raise ValueError(f"crop.context={self.crop.context} gives {self.crop.channels}-channel crops; "
                             f"model.input_channels is {self.model.input_channels}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be positive")
        self.model.shape_family.validate_prior(self.shape_prior)

    def with_family(self, name: str) -> "TrainOptions":
        """These options training a model of the shape family ``name`` (its heads normalised
        for its prior, its uncertainties uncalibrated); unchanged if the model already is."""
        family = get_family(name)
        if family.name == self.model.family:
            return self
        prior = self.prior if family.name == "superellipse" else getattr(self, f"{family.name}_prior")
        kept = {f.name: getattr(self.model, f.name) for f in dataclasses.fields(CNNOptions)
                if not f.name.startswith(("log_p_", "log_l_", "head_")) and f.name not in ("family", "std_scales")}
        return dataclasses.replace(self, model=CNNOptions.for_prior(prior, **kept))

    @property
    def shape_prior(self):
        """The prior of the model's shape family (``prior`` for eq. 1, ``<family>_prior`` otherwise)."""
        family = self.model.shape_family
        return self.prior if family.name == "superellipse" else getattr(self, f"{family.name}_prior")


def _class_index(family: ShapeFamily, discrete: jax.Array) -> jax.Array:
    """Index of each discrete value among the family's classes (the prior holds only those)."""
    classes = jnp.asarray(family.classes, discrete.dtype)
    return jnp.argmax(discrete[:, None] == classes[None, :], axis=1).astype(jnp.int32)


def _targets(shapes, options: CNNOptions) -> dict[str, jax.Array]:
    """The training targets of a batch of canonical shapes: each continuous head's logarithm
    (at its canonical floor, eq. 1's L >= 1), the phase vector (cos m phi, sin m phi) and the
    class index. A discrete value outside the family's classes is refused by the prior
    (:meth:`nanoshape.family.ShapeFamily.validate_prior`), never clipped."""
    family = options.shape_family
    discrete, continuous, phi = family.split(shapes)
    d_index = _class_index(family, discrete)
    m = phase_multiplier(options, d_index)
    targets = {c.head: jnp.log(jnp.maximum(value, c.floor) if c.floor > 0 else value)
               for c, value in zip(family.continuous, continuous)}
    return {**targets, "phi_vec": jnp.stack([jnp.cos(m * phi), jnp.sin(m * phi)], axis=1), "d_index": d_index}


def loss_terms(raw: jax.Array, shapes, options: CNNOptions, *, nll_beta: float = 0.0) -> dict[str, jax.Array]:
    """Per-batch mean of each loss term and the training RMSEs (of each continuous head's
    logarithm, eq. 1: log p and log L, and of phi)."""
    family = options.shape_family
    t = _targets(shapes, options)
    decoded = decode(raw, options)
    nlls, weights = {}, {}
    for c, center, scale in zip(family.continuous, options.centers, options.scales):
        z = (t[c.head] - center) / scale
        mean, lv = gaussian_output(raw, options, c.head)
        nlls[c.head] = 0.5 * (lv + (z - mean) ** 2 * jnp.exp(-lv))
        weights[c.head] = lv
    lv_phi = decoded["logvar_phi"]
    # the phase read-out of the true class (with one shared pair, that pair)
    vec = phi_vectors(raw, options, t["d_index"])
    nll_phi = 0.5 * (2 * lv_phi + jnp.sum((t["phi_vec"] - vec) ** 2, axis=1) * jnp.exp(-lv_phi))
    labels = optax.smooth_labels(jax.nn.one_hot(t["d_index"], len(family.classes)), 0.02)
    ce_d = optax.softmax_cross_entropy(decoded["d_logits"], labels)
    _, _, true_phi = family.split(shapes)
    period = 2 * jnp.pi / jnp.abs(phase_multiplier(options, t["d_index"]))
    phi_error = jnp.abs(jnp.mod(decoded["phi"] - true_phi + period / 2, period) - period / 2)
    heads = [c.head for c in family.continuous]
    if nll_beta > 0:
        weight = lambda lv: jax.lax.stop_gradient(jnp.exp(nll_beta * lv))  # noqa: E731
        total = weight(weights[heads[0]]) * nlls[heads[0]]
        for head in heads[1:]:
            total = total + weight(weights[head]) * nlls[head]
        total = total + weight(lv_phi) * nll_phi + ce_d
    else:
        total = nlls[heads[0]]
        for head in heads[1:]:
            total = total + nlls[head]
        total = total + nll_phi + ce_d
    return {
        "loss": jnp.mean(total),
        **{f"nll_{head.removeprefix('log_')}": jnp.mean(nlls[head]) for head in heads},
        "nll_phi": jnp.mean(nll_phi), "ce_d": jnp.mean(ce_d),
        **{f"rmse_{head}": jnp.sqrt(jnp.mean((decoded[head] - t[head]) ** 2)) for head in heads},
        "rmse_phi": jnp.sqrt(jnp.mean(phi_error**2)),
        "d_accuracy": jnp.mean(jnp.argmax(decoded["d_logits"], axis=1) == t["d_index"]),
    }


def _optimizer(options: TrainOptions) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(0.0, options.learning_rate, options.warmup_steps,
                                                  max(options.steps, options.warmup_steps + 1), 0.02 * options.learning_rate)
    return optax.chain(optax.clip_by_global_norm(options.clip_norm),
                       optax.adamw(schedule, weight_decay=options.weight_decay))


def _mesh(devices: int) -> jax.sharding.Mesh:
    available = jax.devices()
    n = len(available) if devices <= 0 else devices
    if n > len(available):
        raise ValueError(f"{n} devices requested, {len(available)} available")
    return jax.sharding.Mesh(np.array(available[:n]), ("data",))


def _batch(key, options: TrainOptions):
    return training_batch(key, options.batch_size, chunk=options.render_chunk, prior=options.shape_prior,
                          imaging=options.imaging, crop=options.crop)


def _make_step(graphdef, options: TrainOptions, mesh):
    tx = _optimizer(options)
    data = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())

    def step_fn(params, opt_state, key, step):
        crops, shapes = _batch(jax.random.fold_in(key, step), options)
        crops = jax.lax.with_sharding_constraint(crops, data)

        def loss_fn(p):
            raw = nnx.merge(graphdef, p)(crops)
            terms = loss_terms(raw, shapes, options.model, nll_beta=options.nll_beta)
            return terms["loss"], terms

        (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes its int32 step count with floats
            updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, terms

    return jax.jit(step_fn, out_shardings=(replicated, replicated, replicated), donate_argnums=(0, 1)), tx


def _evaluate_raw(graphdef, params, key, n: int, options: TrainOptions, batch: int = 512):
    """Network outputs and truth on ``n`` rendered crops from ``key`` (batches from fold_in(key, i))."""
    render = jax.jit(lambda k: training_batch(k, batch, chunk=options.render_chunk, prior=options.shape_prior,
                                              imaging=options.imaging, crop=options.crop))
    forward = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))
    raws, truths = [], []
    for i in range(math.ceil(n / batch)):
        crops, shapes = render(jax.random.fold_in(key, i))
        raws.append(np.asarray(forward(params, crops)))
        truths.append(jax.tree.map(np.asarray, shapes))
    raw = np.concatenate(raws)[:n]
    truth = jax.tree.map(lambda *a: np.concatenate(a)[:n], *truths)
    return raw, truth


def _validation(graphdef, params, options: TrainOptions) -> dict[str, float]:
    raw, truth = _evaluate_raw(graphdef, params, jax.random.key(options.validation_seed), options.validation_size, options)
    terms = loss_terms(jnp.asarray(raw), jax.tree.map(jnp.asarray, truth), options.model, nll_beta=options.nll_beta)
    return {f"val_{k}": float(v) for k, v in terms.items()}


def _abs_errors(decoded: dict[str, np.ndarray], truth, options: CNNOptions) -> dict[str, np.ndarray]:
    """|error| of each decoded continuous logarithm (canonical, at its floor) and of phi (modulo
    its period) against the true parameters."""
    family = options.shape_family
    discrete, continuous, phi = family.split(truth)
    errors = {c.head: np.abs(decoded[c.head] - np.log(np.maximum(value, c.floor) if c.floor > 0 else value))
              for c, value in zip(family.continuous, continuous)}
    multiplier = np.asarray(phase_multiplier(options, jnp.asarray(_class_index(family, jnp.asarray(discrete)))))
    period = 2 * np.pi / np.abs(multiplier)
    errors["phi"] = np.abs(np.mod(decoded["phi"] - phi + period / 2, period) - period / 2)
    return errors


def calibrate_uncertainties(model: ShapeCNN, options: TrainOptions = TrainOptions(), *,
                            coverage: float = 0.9) -> ShapeCNN:
    """The model with its predicted standard deviations scaled so that the central ``coverage``
    intervals of log p, log L and phi hold that share of the validation set.

    Temperature scaling of the Gaussian uncertainties (Guo et al., ICML 2017, for the
    classifier case; Kuleshov et al., ICML 2018, for regression): one factor per output,
    the ``coverage`` quantile of |error| / sigma over the fixed validation set (its own seed,
    never the test set) divided by the normal quantile of that coverage. The weights are
    unchanged; the factors are stored in ``CNNOptions.std_scales`` (saved in model.json).
    """
    from statistics import NormalDist

    family = model.options.shape_family
    raw_options = dataclasses.replace(model.options, std_scales=(1.0,) * len(model.options.std_scales))
    graphdef, state = nnx.split(model)
    raw, truth = _evaluate_raw(graphdef, state, jax.random.key(options.validation_seed), options.validation_size, options)
    decoded = {k: np.asarray(v) for k, v in decode(jnp.asarray(raw), raw_options).items()}
    errors = _abs_errors(decoded, truth, raw_options)
    stds = {**{c.head: decoded[c.std_name] for c in family.continuous}, "phi": decoded["phi_std"]}
    z = NormalDist().inv_cdf(0.5 + coverage / 2)
    scales = tuple(float(np.quantile(errors[k] / stds[k], coverage) / z) for k in stds)
    calibrated = ShapeCNN(dataclasses.replace(model.options, std_scales=scales), rngs=nnx.Rngs(0))
    nnx.update(calibrated, nnx.state(model, nnx.Param))
    return calibrated


def evaluate_model(model: ShapeCNN, options: TrainOptions = TrainOptions(), *, n: int | None = None,
                   seed: int | None = None, jaccard_grid_px: int = 64) -> dict[str, Any]:
    """Figures of the model on a fixed rendered test set (the full imaging model).

    Returns a JSON-safe dict: ``n``; the Jaccard index between the shape re-rendered from
    the prediction and the true shape, both at equal area and centroid
    (:func:`nanoshape.refine.shape_jaccard`), as median and 10th percentile; the fraction
    with d (the family's discrete parameter) exactly right, and (because a circle, p = 2 and
    L = 1, is the same shape for every d) the fraction where d is right or the predicted
    shape matches the truth with Jaccard >= 0.95 anyway; the median absolute errors of each
    continuous head (eq. 1: log p, log L) and phi; the coverage of their central 90 %
    intervals (Gaussian: +-1.645 sigma).
    """
    from nanoshape.refine import shape_jaccard

    n = options.test_size if n is None else n
    key = jax.random.key(options.test_seed if seed is None else seed)
    graphdef, state = nnx.split(model)
    raw, truth = _evaluate_raw(graphdef, state, key, n, options)
    decoded = {k: np.asarray(v) for k, v in decode(jnp.asarray(raw), model.options).items()}
    family = model.options.shape_family
    d_pred = np.asarray(family.classes)[decoded["d_probs"].argmax(axis=1)]
    values = {}
    for c in family.continuous:
        values[c.name] = np.exp(np.maximum(decoded[c.head], math.log(c.floor)) if c.floor > 0 else decoded[c.head])
    pred = family.make(jnp.asarray(d_pred, jnp.int32),
                       tuple(jnp.asarray(values[c.name], jnp.float32) for c in family.continuous),
                       jnp.asarray(decoded["phi"], jnp.float32))
    true = jax.tree.map(jnp.asarray, truth)
    jac_fn = jax.jit(jax.vmap(functools.partial(shape_jaccard, grid_px=jaccard_grid_px)))
    jaccard = np.concatenate([np.asarray(jac_fn(jax.tree.map(lambda a: a[i : i + 1024], pred),
                                                jax.tree.map(lambda a: a[i : i + 1024], true)))
                              for i in range(0, n, 1024)])
    errors = _abs_errors(decoded, truth, model.options)
    d_right = d_pred == getattr(truth, family.discrete)
    z = 1.6448536
    heads = [c.head for c in family.continuous]
    return {
        "n": int(n),
        "jaccard_median": float(np.median(jaccard)),
        "jaccard_p10": float(np.percentile(jaccard, 10)),
        "d_exact_fraction": float(d_right.mean()),
        "d_exact_or_same_shape_fraction": float((d_right | (jaccard >= 0.95)).mean()),
        **{f"median_abs_error_{head}": float(np.median(errors[head])) for head in heads},
        "median_abs_error_phi_rad": float(np.median(errors["phi"])),
        **{f"coverage90_{c.head}": float(np.mean(errors[c.head] <= z * decoded[c.std_name])) for c in family.continuous},
        "coverage90_phi": float(np.mean(errors["phi"] <= z * decoded["phi_std"])),
        "jaccard": jaccard,
        "truth": {k: np.asarray(v) for k, v in truth._asdict().items()},
        "pred": {**values, family.discrete: d_pred, "phi": decoded["phi"],
                 **{c.std_name: decoded[c.std_name] for c in family.continuous}, "phi_std": decoded["phi_std"]},
    }


def _json_safe(options: TrainOptions) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(options), default=float))


def run_training(options: TrainOptions, run_dir: str | Path, *, progress: Callable[[int, dict], None] | None = None,
                 stop_after: int | None = None, evaluate: bool = True) -> Path:
    """Train (or resume training) into ``run_dir``; returns the saved model's directory.

    Args:
      options: the training options.
      run_dir: the run directory (see the module docstring); an existing one is resumed
        from its newest checkpoint, and must have been started with the same options.
      progress: called as ``progress(step, metrics)`` after each logged step.
      stop_after: stop (after checkpointing) once this step is done, as if interrupted
        (tests use it to exercise resumption).
      evaluate: score the test set at the end and write ``test.json``.
    """
    import orbax.checkpoint as ocp

    run_dir = Path(run_dir).absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = _json_safe(options)
    options_path = run_dir / "options.json"
    if options_path.exists():
        previous = json.loads(options_path.read_text())
        if previous != resolved:
            raise ValueError(f"{options_path}: the run directory was started with other options; "
                             "use a new output directory (or the same options to resume)")
    else:
        options_path.write_text(json.dumps(resolved, indent=1))

    mesh = _mesh(options.devices)
    model = ShapeCNN(options.model, rngs=nnx.Rngs(options.seed))
    graphdef, params = nnx.split(model, nnx.Param)
    step_fn, tx = _make_step(graphdef, options, mesh)
    replicated = NamedSharding(mesh, P())
    params = jax.device_put(params, replicated)
    opt_state = jax.device_put(tx.init(params), replicated)

    manager = ocp.CheckpointManager(run_dir / "checkpoints",
                                    options=ocp.CheckpointManagerOptions(max_to_keep=options.keep_checkpoints))
    start = 0
    latest = manager.latest_step()
    if latest is not None:
        abstract = {"params": jax.tree.map(ocp.utils.to_shape_dtype_struct, params),
                    "opt_state": jax.tree.map(ocp.utils.to_shape_dtype_struct, opt_state)}
        restored = manager.restore(latest, args=ocp.args.StandardRestore(abstract))
        params, opt_state = restored["params"], restored["opt_state"]
        start = latest
    metrics_path = run_dir / "metrics.jsonl"
    if metrics_path.exists():  # drop lines logged after the checkpoint we resume from
        lines = [line for line in metrics_path.read_text().splitlines() if line and json.loads(line)["step"] <= start]
        metrics_path.write_text("".join(line + "\n" for line in lines))

    key = jax.random.key(options.seed)
    window: list[dict] = []
    clock = time.perf_counter()
    images_since = 0
    step = start
    with metrics_path.open("a") as log:
        while step < options.steps:
            params, opt_state, terms = step_fn(params, opt_state, key, step)
            step += 1
            images_since += options.batch_size
            window.append(terms)
            if step % options.checkpoint_every == 0 or step == options.steps or step == stop_after:
                means = {k: float(np.mean([float(w[k]) for w in window])) for k in window[0]}
                now = time.perf_counter()
                record = {"step": step, **{f"train_{k}": v for k, v in means.items()},
                          "images_per_s": images_since / (now - clock)}
                if step % options.validation_every == 0 or step == options.steps:
                    record.update(_validation(graphdef, params, options))
                if not all(math.isfinite(v) for v in means.values()):
                    raise FloatingPointError(f"training diverged at step {step}: {means}")
                manager.save(step, args=ocp.args.StandardSave({"params": params, "opt_state": opt_state}))
                manager.wait_until_finished()
                log.write(json.dumps(record) + "\n")
                log.flush()
                if progress:
                    progress(step, record)
                window, images_since, clock = [], 0, time.perf_counter()
            if stop_after is not None and step >= stop_after:
                manager.close()
                return run_dir / "checkpoints"
    manager.close()
    nnx.update(model, jax.device_get(params))
    model = calibrate_uncertainties(model, options)
    model_dir = save_model(model, run_dir / "model", extra={"trained_steps": step, "train_options": resolved})
    if evaluate:
        figures = evaluate_model(model, options)
        summary = {k: v for k, v in figures.items() if not isinstance(v, (dict, np.ndarray))}
        (run_dir / "test.json").write_text(json.dumps(summary, indent=1))
        np.savez_compressed(run_dir / "test_predictions.npz", jaccard=figures["jaccard"],
                            **{f"true_{k}": v for k, v in figures["truth"].items()},
                            **{f"pred_{k}": v for k, v in figures["pred"].items()})
    return model_dir
