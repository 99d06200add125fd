"""Refinement throughput (particles per minute) beside the cost of the start, in the same process.

    python benchmarks/bench_refine.py            (about 3 minutes on a 2-core CPU)

asv-style: each ``time_*`` method of :class:`RefineSuite` is one figure; ``setup`` renders
the particles (``training_batch`` crops, full imaging model, 64 x 64 masks) and compiles.
The baseline timed in the same run is the CNN's forward pass when ``nanoshape.cnn``
loads (the "CNN-only" cost of a particle), else placing and scoring the start
(:func:`nanoshape.refine.fit_jaccard`, what ``jaccard_cnn`` costs). Medians of several runs
after warm-up; compilation is excluded (it happens once per bucket size and options).
Benchmarks never fail: they report.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from _common import command, machine, median_time
from nanoshape.refine import RefineOptions, fit_jaccard, refine
from nanoshape.trainingdata import training_batch
from nanoshape.shape import ShapeParams, canonicalize

#: the defaults, and two cheaper settings for the trade-off (quality figures: benchmarks/RESULTS.md)
VARIANTS = {
    "refine (defaults)": RefineOptions(),
    "refine, 1 d candidate": RefineOptions(d_candidates=1),
    "refine, 3 d, 20 + 20 steps, 32 px grid": RefineOptions(d_candidates=3, coarse_iterations=20, grid_px=32),
}


def perturbed_start(truth: ShapeParams, seed: int = 1) -> dict[str, np.ndarray]:
    """Truth with CNN-like errors (log p 0.3, log L 0.15, phi 0.15 rad, 20% wrong d) and those uncertainties."""
    rng = np.random.default_rng(seed)
    n = truth.p.shape[0]
    d = np.asarray(truth.d).copy()
    wrong = rng.random(n) < 0.2
    d[wrong] = (d[wrong] - 1 + rng.integers(1, 6, wrong.sum())) % 6 + 1
    shape = canonicalize(ShapeParams(
        jnp.asarray(truth.p * np.exp(rng.normal(0, 0.3, n)), jnp.float32), jnp.asarray(d, jnp.int32),
        jnp.asarray(truth.l_ratio * np.exp(rng.normal(0, 0.15, n)), jnp.float32),
        jnp.asarray(truth.phi + rng.normal(0, 0.15, n), jnp.float32),
    ))
    start = {k: np.asarray(v) for k, v in zip(("p", "d", "l_ratio", "phi"), shape)}
    return start | {"p_log_std": np.full(n, 0.3, np.float32), "l_ratio_log_std": np.full(n, 0.15, np.float32),
                    "phi_std": np.full(n, 0.15, np.float32)}


def load_cnn():
    try:
        from nanoshape.cnn import load_model, predict

        return load_model(), predict
    except Exception:  # the model is not there yet (or has no checkpoint): the start's cost is the baseline
        return None, None


class RefineSuite:
    """Refinement of n particles, and the baseline cost of their start."""

    params = (512, 2048)

    def setup(self, n: int):
        crops, truth = jax.jit(lambda k: training_batch(k, n))(jax.random.key(0))
        self.crops = np.asarray(crops)
        self.masks = self.crops[..., 1]
        self.start = perturbed_start(jax.tree.map(np.asarray, truth))
        self.start_shapes = ShapeParams(*(self.start[k] for k in ("p", "d", "l_ratio", "phi")))
        self.model, self.predict = load_cnn()
        self.options = VARIANTS["refine (defaults)"]
        for options in VARIANTS.values():  # compile every variant's buckets
            refine(self.masks, self.start, options=options)

    def time_refine(self):
        refine(self.masks, self.start, options=self.options)

    def time_place_and_score_start(self):
        fit_jaccard(self.masks, self.start_shapes)

    def time_cnn_predict(self):
        jax.block_until_ready(jax.tree.map(jnp.asarray, self.predict(self.model, self.crops)))


def main() -> None:
    print(f"# bench_refine\ncommand: {command()}\nmachine: {machine()}\n")
    suite = RefineSuite()
    print(f"{'n':>6} {'what':<40} {'particles/s':>12} {'particles/min':>14} {'x baseline':>11}")
    for n in RefineSuite.params:
        suite.setup(n)
        if suite.model is not None:
            baseline_name, baseline = "CNN forward pass (baseline)", suite.time_cnn_predict
        else:
            baseline_name, baseline = "place + score the start (baseline)", suite.time_place_and_score_start
        baseline_rate = n / median_time(baseline, repeats=5, warmup=1)
        for name, options in VARIANTS.items():
            suite.options = options
            rate = n / median_time(suite.time_refine, repeats=3, warmup=1)
            print(f"{n:>6} {name:<40} {rate:>12.0f} {60 * rate:>14,.0f} {rate / baseline_rate:>11.4f}", flush=True)
        print(f"{n:>6} {baseline_name:<40} {baseline_rate:>12.0f} {60 * baseline_rate:>14,.0f} {1.0:>11.4f}")
        if suite.model is not None:
            rate = n / median_time(suite.time_place_and_score_start, repeats=5, warmup=1)
            print(f"{n:>6} {'place + score the start':<40} {rate:>12.0f} {60 * rate:>14,.0f} {rate / baseline_rate:>11.4f}")


if __name__ == "__main__":
    main()
