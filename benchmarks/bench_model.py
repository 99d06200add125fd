"""Shape-CNN throughput: inference (crops/s) beside training (rendered images/s), same process.

    python benchmarks/bench_model.py        (about 1 minute on a 2-core CPU)

Inference runs :func:`nanoshape.cnn.predict` (batches of 256, the analysis default) on the
shipped model (or a fresh one of the default architecture if none is shipped), decoding
included. Training runs the jitted training step of :mod:`nanoshape.training` with the
default options (render a batch with the full imaging model, forward, backward, AdamW).
The baseline for both is rendering alone: ``training_batch`` of the training batch's size,
which bounds training.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from _common import command, machine, median_time
from nanoshape.cnn import CNNOptions, ShapeCNN, default_model_dir, load_model, predict
from nanoshape.trainingdata import training_batch
from nanoshape.training import TrainOptions, _make_step, _mesh


def main() -> None:
    print(f"# bench_model\ncommand: {command()}\nmachine: {machine()}\n")
    model = load_model() if (default_model_dir() / "model.json").exists() else ShapeCNN(CNNOptions(), rngs=nnx.Rngs(0))
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    crops, _ = jax.jit(lambda k: training_batch(k, 4096))(jax.random.key(0))
    crops = np.asarray(crops)
    infer_s = median_time(lambda: predict(model, crops, batch_size=256), repeats=5, warmup=1)

    options = TrainOptions()
    batch = options.batch_size
    graphdef, params = nnx.split(ShapeCNN(options.model, rngs=nnx.Rngs(0)), nnx.Param)
    step_fn, tx = _make_step(graphdef, options, _mesh(1))
    state = {"params": params, "opt": tx.init(params), "step": 0}
    key = jax.random.key(1)

    def train_steps(n=20):
        for _ in range(n):
            state["params"], state["opt"], terms = step_fn(state["params"], state["opt"], key, state["step"])
            state["step"] += 1
        jax.block_until_ready(terms["loss"])

    train_s = median_time(train_steps, repeats=5, warmup=1) / 20
    render = jax.jit(lambda k: training_batch(k, batch))
    render_s = median_time(lambda: jax.block_until_ready(render(key)), repeats=10, warmup=1)
    size, channels = model.options.input_size, model.options.input_channels
    print(f"model: {n_params:,} parameters, {model.options.geometry} geometry, input {size} x {size} x {channels}; "
          f"training batch {batch}")
    print(f"{'what':<46} {'per s':>10} {'x rendering':>12}")
    print(f"{'inference, crops (predict, batches of 256)':<46} {4096 / infer_s:>10.0f} {4096 / infer_s / (batch / render_s):>12.2f}")
    print(f"{'training, images (render + fwd + bwd + AdamW)':<46} {batch / train_s:>10.0f} {train_s and render_s / train_s:>12.2f}")
    print(f"{'rendering alone, images (baseline)':<46} {batch / render_s:>10.0f} {1.0:>12.2f}")


if __name__ == "__main__":
    main()
