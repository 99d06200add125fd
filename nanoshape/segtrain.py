"""Training the particle detector (:mod:`nanoshape.segnet`) on annotated and rendered micrographs.

Training examples are patches cut at a random zoom, turn and flip from a bank of sources,
each a micrograph with its instance labels: the annotated micrographs of a training folder
(only those the fixed validation rule of :func:`nanoshape.evaluate.is_validation` leaves
in training) and micrographs rendered by :mod:`nanoshape.scene`. For every source the
targets are computed once at its own resolution and block-averaged into a pyramid:

- foreground: 1 inside a particle;
- distance: distance to the particle's edge over the particle's largest such distance
  (invariant to zoom, so it is computed once);
- log2 size: log2 of the particle's equivalent diameter.

A patch of the zoom ``z`` (network pixels per source pixel) is resampled from the pyramid
level of factor ``2^k <= 1/z`` (so a zoom-out averages blocks first, as inference does),
with bilinear interpolation; the log2 size becomes log2(diameter * z). The zoom is drawn so
the particles appear from a few pixels to far larger than the patch, so that the size
output learns to say when a particle is too small or too large for the level it sees.

Loss: binary cross-entropy of the foreground and of the distance (soft targets), and a
Huber loss of the log2 size on particle pixels. The distance is not scored on particles
too small or too large at that zoom to show it (under 2.5 or over 96 network pixels).
"""

from __future__ import annotations

import dataclasses
import json
import math
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from scipy import ndimage as ndi

from nanoshape.segnet import OUTPUTS, SegNet, SegNetOptions, block_mean, normalise

__all__ = ["SegTrainOptions", "Source", "prepare_source", "sample_patch", "sample_batch", "segnet_loss",
           "rendered_sources", "annotated_sources", "annotated_micrographs",
           "random_scene_options", "evaluation_scenes", "train_segnet", "run_segmentation_training"]

#: log2 sizes (network pixels) the size output is trained on; beyond, targets are clipped
_LOG2_SIZE_RANGE = (1.0, 8.0)
#: particles whose diameter (network pixels) lies outside this range do not score the distance
_DISTANCE_DIAMETER_RANGE = (2.5, 96.0)


@dataclass(frozen=True)
class SegTrainOptions:
    """How the detector is trained.

    Attributes:
      model: the architecture.
      steps: optimiser steps.
      batch_size: patches per step.
      patch_px: side of a training patch (network pixels; a multiple of ``model.multiple``).
      learning_rate: peak learning rate (warm-up then cosine decay).
      warmup_steps: linear warm-up steps.
      weight_decay: AdamW weight decay.
      size_weight: weight of the log2 size loss.
      focus_diameter_px: range of the sources' median particle diameter at the drawn zoom
        (network pixels) for most patches...
      wide_diameter_px: ...and for the rest (``wide_fraction``), so the size output learns
        what lies outside the focus range.
      wide_fraction: share of patches drawn from the wide range.
      max_zoom: largest zoom (network pixels per source pixel); inference never upsamples,
        so this stays near 1.
      foreground_centre_fraction: share of patches centred on a particle pixel.
      rendered_fraction: share of patches cut from rendered micrographs.
      seed: seed of the initial weights and of the patch draws.
      checkpoint_every: steps between checkpoints.
      log_every: steps between records of ``metrics.jsonl`` (means over those steps).
      loader_threads: threads cutting patches beside the training step.
    """

    model: SegNetOptions = SegNetOptions()
    steps: int = 8000
    batch_size: int = 16
    patch_px: int = 128
    learning_rate: float = 2e-3
    warmup_steps: int = 200
    weight_decay: float = 1e-4
    size_weight: float = 0.5
    focus_diameter_px: tuple[float, float] = (6.0, 64.0)
    wide_diameter_px: tuple[float, float] = (2.0, 512.0)
    wide_fraction: float = 0.4
    max_zoom: float = 1.5
    foreground_centre_fraction: float = 0.6
    rendered_fraction: float = 0.35
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 50
    loader_threads: int = 2

    def __post_init__(self):
        if self.patch_px % self.model.multiple:
            raise ValueError(f"patch_px must be a multiple of {self.model.multiple}, got {self.patch_px}")


@dataclass(frozen=True, eq=False)
class Source:
    """One annotated micrograph as a pyramid of inputs and targets.

    Attributes:
      name: where it came from.
      levels: per pyramid level (factor 2**k), a (H_k, W_k, 4) float32 array of normalised
        image, foreground, distance and log2 size (source pixels; 0 outside particles).
      median_diameter_px: median equivalent diameter of its particles (source pixels).
      foreground_pixels: (n, 2) row, column of particle pixels at level 0 (for centring).
    """

    name: str
    levels: tuple[np.ndarray, ...]
    median_diameter_px: float
    foreground_pixels: np.ndarray


def _instance_targets(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Foreground, normalised distance to the edge and log2 equivalent diameter per pixel."""
    labels = np.asarray(labels)
    fg = labels > 0
    # distance to the nearest pixel not of the same particle (touching particles split)
    edge = np.zeros(labels.shape, bool)
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[:, :-1] |= labels[:, 1:] != labels[:, :-1]
    edge[1:] |= labels[1:] != labels[:-1]
    edge[:-1] |= labels[1:] != labels[:-1]
    depth = ndi.distance_transform_edt(fg & ~edge) + fg  # edge pixels of a particle: 1
    n = int(labels.max())
    deepest = np.zeros(n + 1)
    np.maximum.at(deepest, labels.ravel(), depth.ravel())
    distance = np.where(fg, depth / np.maximum(deepest[labels], 1e-6), 0.0)
    area = np.bincount(labels.ravel(), minlength=n + 1).astype(np.float64)
    diameter = 2 * np.sqrt(area / np.pi)
    log2_size = np.where(fg, np.log2(np.maximum(diameter[labels], 1.0)), 0.0)
    present = area[1:] > 0
    median = float(np.median(diameter[1:][present])) if present.any() else float("nan")
    return fg.astype(np.float32), distance.astype(np.float32), log2_size.astype(np.float32), median


def prepare_source(image: np.ndarray, labels: np.ndarray, name: str = "", *, min_side_px: int = 8) -> Source:
    """Targets of one annotated micrograph and their block-mean pyramid."""
    image = normalise(image)
    if image.shape != labels.shape:
        raise ValueError(f"{name}: image {image.shape} and labels {labels.shape} differ in shape")
    fg, distance, log2_size, median = _instance_targets(labels)
    stack = np.stack([image, fg, distance, log2_size * fg], axis=-1)
    levels = []
    k = 0
    while min(stack.shape[:2]) // 2 ** k >= min_side_px:
        level = block_mean(stack, 2 ** k)
        # log2 size: mean over the particle pixels of each block, not over the block
        level[..., 3] = np.where(level[..., 1] > 0, level[..., 3] / np.maximum(level[..., 1], 1e-6), 0.0)
        levels.append(level.astype(np.float32))
        k += 1
    rows, cols = np.nonzero(fg > 0)
    pick = np.random.default_rng(0).permutation(rows.size)[:20000]
    return Source(name=name, levels=tuple(levels), median_diameter_px=median if np.isfinite(median) else 32.0,
                  foreground_pixels=np.stack([rows[pick], cols[pick]], axis=1))


def sample_patch(rng: np.random.Generator, source: Source, options: SegTrainOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One training patch: input (P, P, 1), targets (P, P, 3) and loss weights (P, P, 3)."""
    size = options.patch_px
    wide = rng.random() < options.wide_fraction
    low, high = options.wide_diameter_px if wide else options.focus_diameter_px
    diameter_work = math.exp(rng.uniform(math.log(low), math.log(high)))
    zoom = min(diameter_work / source.median_diameter_px, options.max_zoom)
    k = min(max(0, int(math.floor(math.log2(1.0 / zoom)))), len(source.levels) - 1)
    level = source.levels[k]
    r = zoom * 2 ** k  # network pixels per level pixel
    h, w = level.shape[:2]
    if source.foreground_pixels.size and rng.random() < options.foreground_centre_fraction:
        cy, cx = source.foreground_pixels[rng.integers(len(source.foreground_pixels))]
        cy, cx = (cy + 0.5) / 2 ** k - 0.5, (cx + 0.5) / 2 ** k - 0.5
    else:
        cy, cx = rng.uniform(-0.5, h - 0.5), rng.uniform(-0.5, w - 0.5)
    theta = rng.uniform(0, 2 * np.pi)
    flip = -1.0 if rng.random() < 0.5 else 1.0
    u = np.arange(size, dtype=np.float32) - (size - 1) / 2
    du, dv = np.meshgrid(u, u * flip, indexing="ij")
    ys = cy + (np.cos(theta) * du - np.sin(theta) * dv) / r
    xs = cx + (np.sin(theta) * du + np.cos(theta) * dv) / r
    coords = np.stack([ys, xs])
    valid = ((ys >= -0.5) & (ys <= h - 0.5) & (xs >= -0.5) & (xs <= w - 0.5)).astype(np.float32)
    channels = [ndi.map_coordinates(level[..., c], coords, order=1, mode="reflect") for c in range(3)]
    log2_size = ndi.map_coordinates(level[..., 3], coords, order=0, mode="reflect")
    image, fg, distance = channels
    log2_work = log2_size + math.log2(zoom)  # the levels hold log2 sizes in source pixels
    diameter = np.exp2(log2_work)
    in_range = (diameter >= _DISTANCE_DIAMETER_RANGE[0]) & (diameter <= _DISTANCE_DIAMETER_RANGE[1])
    particle = fg >= 0.5
    w_distance = valid * np.where(particle, in_range, fg < 0.5).astype(np.float32)
    w_size = valid * particle
    targets = np.stack([fg, distance, np.clip(log2_work, *_LOG2_SIZE_RANGE)], axis=-1)
    weights = np.stack([valid, w_distance, w_size], axis=-1).astype(np.float32)
    return _augment(rng, image)[..., None], targets.astype(np.float32), weights


def _augment(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Contrast, offset, gamma, blur and noise, on the normalised scale (-0.5 .. 0.5)."""
    x = np.clip(image + 0.5, 0.0, 1.0)
    x = x ** math.exp(rng.uniform(-0.35, 0.35))
    if rng.random() < 0.3:
        x = ndi.gaussian_filter(x, rng.uniform(0.3, 1.2))
    x = (x - 0.5) * rng.uniform(0.6, 1.3) + rng.uniform(-0.15, 0.15)
    if rng.random() < 0.5:
        x = x + rng.normal(0, rng.uniform(0.005, 0.08), x.shape)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def sample_batch(rng: np.random.Generator, annotated: Sequence[Source], rendered: Sequence[Source],
                 options: SegTrainOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A batch of patches, each from an annotated or (``rendered_fraction``) a rendered source."""
    parts = []
    for _ in range(options.batch_size):
        pool = rendered if (rendered and (not annotated or rng.random() < options.rendered_fraction)) else annotated
        parts.append(sample_patch(rng, pool[rng.integers(len(pool))], options))
    return tuple(np.stack(p) for p in zip(*parts))


def segnet_loss(raw: jax.Array, targets: jax.Array, weights: jax.Array, size_weight: float) -> tuple[jax.Array, dict]:
    """Weighted BCE of foreground and (twice) distance plus Huber loss of log2 size; returns (loss, parts).

    The distance counts twice because its cores decide how touching particles are split,
    and its targets are mostly zero (background), which a loss of one weight learns late."""
    bce = optax.sigmoid_binary_cross_entropy(raw[..., :2], targets[..., :2])
    huber = optax.huber_loss(raw[..., 2], targets[..., 2], delta=1.0)
    per = jnp.concatenate([bce, huber[..., None]], axis=-1) * weights
    terms = per.sum(axis=(0, 1, 2)) / jnp.maximum(weights.sum(axis=(0, 1, 2)), 1.0)
    loss = terms[0] + 2.0 * terms[1] + size_weight * terms[2]
    return loss, {name: terms[i] for i, name in enumerate(OUTPUTS)}


# ----------------------------------------------------------------------------- sources


def annotated_micrographs(folders: Sequence[str | Path], part: str = "train"):
    """(name, image, instance labels) of the annotated micrographs of one part of the split.

    Args:
      folders: dataset folders, each with ``images/`` and ``masks/`` (same stems).
      part: ``"train"`` (all but the validation part of :func:`nanoshape.evaluate.is_validation`),
        ``"fit"`` (also without the development part of :func:`nanoshape.evaluate.is_development`),
        ``"development"``, ``"validation"`` or ``"all"``.
    """
    from nanoshape.evaluate import read_mask
    from nanoshape.io import read_micrograph

    for name, image_path, mask_path in annotated_paths(folders, part):
        yield name, read_micrograph(image_path).pixels, read_mask(mask_path).astype(np.int64)


def annotated_paths(folders: Sequence[str | Path], part: str = "train") -> list[tuple[str, Path, Path]]:
    """(name, image path, mask path) of the annotated micrographs of one part (see :func:`annotated_micrographs`)."""
    from nanoshape.evaluate import is_development, is_validation

    if part not in ("train", "fit", "development", "validation", "all"):
        raise ValueError(f"unknown part {part!r}")
    found = []
    for folder in folders:
        folder = Path(folder)
        for path in sorted((folder / "images").iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            which = "validation" if is_validation(path.stem) else "development" if is_development(path.stem) else "fit"
            if part != "all" and part != which and not (part == "train" and which != "validation"):
                continue
            masks = sorted((folder / "masks").glob(f"{path.stem}.*"))
            if masks:
                found.append((f"{folder.name}/{path.stem}", path, masks[0]))
    return found


def annotated_sources(folders: Sequence[str | Path], *, split: str = "train",
                      progress: Callable[[str], None] | None = None) -> list[Source]:
    """Sources of the annotated micrographs of one part of the split (see :func:`annotated_micrographs`)."""
    sources = []
    for name, image, labels in annotated_micrographs(folders, split):
        sources.append(prepare_source(image, labels, name))
        if progress:
            progress(name)
    return sources


def rendered_sources(n: int, seed: int = 0, side_px: int = 384,
                     progress: Callable[[str], None] | None = None) -> list[Source]:
    """Sources rendered by :mod:`nanoshape.scene`, each with random populations, sizes (6-250 px
    across), coverage, contact, imaging and polarity, and some with porous, grainy,
    agglomerated or saturated particles, figure graphics and data bands."""
    from nanoshape.scene import render_scene

    rng = np.random.default_rng(seed)
    sources = []
    for i in range(n):
        options = random_scene_options(rng, side_px)
        scene = render_scene(jax.random.key(int(rng.integers(2**31))), options)
        sources.append(prepare_source(scene.image, scene.labels.astype(np.int64), f"rendered/{i}"))
        if progress:
            progress(f"rendered/{i}")
    return sources


def random_scene_options(rng: np.random.Generator, side_px: int = 384):
    """Options of one random training scene (see :func:`rendered_sources`)."""
    from nanoshape.render import Imaging
    from nanoshape.scene import POPULATIONS, SceneOptions

    names = list(POPULATIONS)
    chosen = rng.choice(names, size=rng.integers(1, 4), replace=False)
    diameter_px = math.exp(rng.uniform(math.log(6), math.log(250)))
    pops = tuple(dataclasses.replace(POPULATIONS[c], diameter_nm=diameter_px * rng.uniform(0.7, 1.4),
                                     diameter_cv=rng.uniform(0.05, 0.25)) for c in chosen)
    coverage = rng.uniform(0.05, 0.5)
    n_particles = int(np.clip(coverage * side_px**2 / (np.pi / 4 * diameter_px**2), 1, 400))
    imaging = Imaging(dark_field=bool(rng.random() < 0.2))
    changes: dict[str, Any] = {}
    if rng.random() < 0.2:
        changes |= {"porosity_range": (0.3, 0.8), "pore_size": rng.uniform(0.04, 0.15)}
    if rng.random() < 0.2:
        changes |= {"grain_range": (0.1, 0.4), "pore_size": rng.uniform(0.04, 0.15)}
    if rng.random() < 0.2:
        changes |= {"touching_fraction": 0.9, "contact_overlap_px": rng.uniform(0.0, 0.1) * diameter_px, "gap_px": 1.0,
                    "n_particles": int(1.5 * n_particles)}
    if rng.random() < 0.15:
        changes["saturate_fraction"] = rng.uniform(0.02, 0.15)
    settings = {"n_particles": n_particles, "touching_fraction": rng.uniform(0.0, 0.6)} | changes
    return SceneOptions(height_px=side_px, width_px=side_px, pixel_size_nm=1.0, populations=pops, imaging=imaging,
                        graphics=bool(rng.random() < 0.5), data_band=bool(rng.random() < 0.2), **settings)


# ----------------------------------------------------------------------------- training


def _batches(annotated, rendered, options: SegTrainOptions, start_step: int) -> Iterator[tuple]:
    """Batches from ``loader_threads`` threads, deterministic per step (each step its own seed)."""
    jobs: queue.Queue = queue.Queue()
    results: dict[int, tuple] = {}
    ready = threading.Condition()
    ahead = 4 * max(1, options.loader_threads)

    def work():
        while True:
            step = jobs.get()
            if step is None:
                return
            rng = np.random.default_rng([options.seed, step])
            batch = sample_batch(rng, annotated, rendered, options)
            with ready:
                results[step] = batch
                ready.notify_all()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(max(1, options.loader_threads))]
    for t in threads:
        t.start()
    queued = start_step
    try:
        for step in range(start_step, options.steps):
            while queued < min(options.steps, step + ahead):
                jobs.put(queued)
                queued += 1
            with ready:
                while step not in results:
                    ready.wait()
                batch = results.pop(step)
            yield step, batch
    finally:
        for _ in threads:
            jobs.put(None)


def train_segnet(
    annotated: Sequence[Source],
    rendered: Sequence[Source],
    run_dir: str | Path,
    options: SegTrainOptions = SegTrainOptions(),
    *,
    progress: Callable[[int, dict], None] | None = None,
) -> SegNet:
    """Train the detector; checkpoints (orbax) and ``metrics.jsonl`` go to ``run_dir``; resumes.

    Returns:
      the trained model, also saved to ``run_dir/model`` (:func:`nanoshape.segnet.save_segnet`).
    """
    import orbax.checkpoint as ocp

    from nanoshape.segnet import save_segnet

    run_dir = Path(run_dir).absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    model = SegNet(options.model, rngs=nnx.Rngs(options.seed))
    model.train()
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    schedule = optax.warmup_cosine_decay_schedule(0.0, options.learning_rate, options.warmup_steps,
                                                  max(options.steps, options.warmup_steps + 1), 0.02 * options.learning_rate)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=options.weight_decay))
    opt_state = optimizer.init(params)
    manager = ocp.CheckpointManager(run_dir / "checkpoints", options=ocp.CheckpointManagerOptions(max_to_keep=2))
    start = 0
    latest = manager.latest_step()
    if latest is not None:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": params, "stats": stats, "opt_state": opt_state})
        restored = manager.restore(latest, args=ocp.args.StandardRestore(abstract))
        params, stats, opt_state, start = restored["params"], restored["stats"], restored["opt_state"], latest

    @jax.jit
    def step_fn(params, stats, opt_state, x, targets, weights):
        def loss_fn(p, s):
            # fresh variables at this trace level: batch normalisation writes its statistics
            module = nnx.merge(graphdef, p, jax.tree.map(lambda v: v, s))
            loss, parts = segnet_loss(module(x), targets, weights, options.size_weight)
            return loss, (parts, nnx.state(module, nnx.BatchStat))

        (loss, (parts, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats)
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state, loss, parts

    metrics_path = run_dir / "metrics.jsonl"
    clock = time.perf_counter()
    window: list[dict] = []
    with metrics_path.open("a") as metrics:
        for step, (x, targets, weights) in _batches(annotated, rendered, options, start):
            params, stats, opt_state, loss, parts = step_fn(params, stats, opt_state, jnp.asarray(x),
                                                            jnp.asarray(targets), jnp.asarray(weights))
            window.append({"loss": float(loss), **{k: float(v) for k, v in parts.items()}})
            done = step + 1
            if done % options.log_every == 0 or done == options.steps:
                record = {"step": done, **{k: float(np.mean([w[k] for w in window])) for k in window[0]},
                          "seconds": round(time.perf_counter() - clock, 2)}
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
                window = []
                if progress:
                    progress(done, record)
            if done % options.checkpoint_every == 0 or done == options.steps:
                manager.save(done, args=ocp.args.StandardSave({"params": params, "stats": stats, "opt_state": opt_state}))
    manager.wait_until_finished()
    nnx.update(model, jax.device_get(params), jax.device_get(stats))
    model.eval()
    save_segnet(model, run_dir / "model", metadata={"train": _jsonable(options), "steps": options.steps,
                                                  "annotated_sources": len(annotated), "rendered_sources": len(rendered)})
    return model


def _jsonable(options: Any) -> Any:
    return json.loads(json.dumps(dataclasses.asdict(options)))


def run_segmentation_training(
    folders: Sequence[str | Path],
    run_dir: str | Path,
    options: SegTrainOptions = SegTrainOptions(),
    *,
    split: str = "train",
    rendered: int = 300,
    evaluation_scenes_per_kind: int = 12,
    progress: Callable[..., None] | None = None,
) -> Path:
    """``nanoshape train-segmentation``: sources, training, then scores written to ``test.json``.

    Args:
      folders: annotated dataset folders (``images/`` and ``masks/``).
      run_dir: the run directory (resumes from its newest checkpoint).
      options: training options.
      split: which annotated micrographs to train on (see :func:`annotated_sources`).
      rendered: number of rendered training micrographs.
      evaluation_scenes_per_kind: rendered evaluation scenes of each kind (plain, hard) scored.
      progress: called as ``progress(stage, done, total, postfix)``.

    Returns:
      the model directory.
    """
    from nanoshape.evaluate import score_images
    from nanoshape.segment import SegmentOptions, segment

    if split not in ("train", "fit", "all"):
        raise ValueError(f"split must be 'train', 'fit' or 'all', got {split!r}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "options.json").write_text(json.dumps({"data": [str(f) for f in folders], "split": split,
                                                      "rendered": rendered, "train": _jsonable(options)}, indent=1))
    note = (lambda stage, total: (lambda _name, c=iter(range(1, total + 1)): progress(stage, next(c), total))) \
        if progress else (lambda stage, total: None)
    n_images = len(annotated_paths(folders, split))
    annotated = annotated_sources(folders, split=split, progress=note("annotated micrographs", n_images)) if folders else []
    synthetic = rendered_sources(rendered, seed=options.seed + 1, progress=note("rendering", rendered)) if rendered else []
    if not annotated and not synthetic:
        raise ValueError("nothing to train on: give annotated folders or rendered > 0")
    train_segnet(annotated, synthetic, run_dir, options,
                 progress=(lambda step, record: progress("training", step, options.steps, f"loss {record['loss']:.3f}"))
                 if progress else None)
    model_dir = run_dir / "model"
    segment_options = SegmentOptions(method="learned", model=str(model_dir))
    figures = {}
    # parts trained on are not scored: with split=all nothing annotated is left to score
    parts = {"train": ["validation"], "fit": ["validation", "development"], "all": []}[split]
    for part in parts if folders else []:
        pairs = ((name, segment(image, segment_options).labels, truth)
                 for name, image, truth in annotated_micrographs(folders, part))
        figures[part] = score_images(pairs)["pooled"]
    for hard in (False, True) if evaluation_scenes_per_kind else ():
        scenes = evaluation_scenes(hard, n=evaluation_scenes_per_kind)
        figures["rendered_hard" if hard else "rendered"] = score_images(
            (name, segment(image, segment_options).labels, truth) for name, image, truth in scenes)["pooled"]
    (run_dir / "test.json").write_text(json.dumps(figures, indent=1))
    return model_dir


def evaluation_scenes(hard: bool, n: int = 12, seed: int = 10_000):
    """(name, image, truth) of the rendered evaluation scenes (seeds no training scene uses)."""
    from nanoshape.scene import evaluation_scene_options, render_scene

    for i in range(n):
        scene = render_scene(jax.random.key(seed + i), evaluation_scene_options(i, hard=hard))
        yield f"{'hard' if hard else 'scene'}{i:02d}", scene.image, scene.labels.astype(np.int64)
