"""Image-fit throughput (particles per second) beside the mask refinement and the CNN, in the same process.

    python benchmarks/bench_imagefit.py          (about 4 minutes on a 2-core CPU)
    python benchmarks/bench_imagefit.py --parts  (also: where one iteration's time goes)

asv-style: each ``time_*`` method of :class:`ImageFitSuite` is one figure; ``setup``
renders 256 particles (``training_batch`` crops, full imaging model) and compiles. The
baselines timed in the same run are the CNN's forward pass and the mask refinement with
its defaults (the stages before and after the image fit in ``nanoshape analyze``), on the
same crops, and the fit with its earlier Jacobian (forward mode through the whole model
image, the blur included as shifted copies), patched in for one figure. The start is the
truth with CNN-like errors (``bench_refine.perturbed_start``).
Medians after warm-up; compilation excluded. Benchmarks never fail: they report.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

from _common import command, machine, median_time
from bench_refine import perturbed_start
from nanoshape import imagefit
from nanoshape.cnn import load_model, predict
from nanoshape.imagefit import ImageFitOptions, fit_image
from nanoshape.refine import refine
from nanoshape.render import gaussian_blur
from nanoshape.trainingdata import training_batch

VARIANTS = {
    "image fit (defaults: 10 iterations)": ImageFitOptions(),
    "image fit, every crop on the full grid": ImageFitOptions(coarse_window_px=0.0),
    "image fit, no second d": ImageFitOptions(second_d_min_prob=1.0),
    "image fit, 20 iterations": ImageFitOptions(iterations=20),
}


def _forward_mode_jacobian(theta, d, size):
    """The Jacobian as the fit took it before session 11: jacfwd through the blurred image."""
    def model(t):
        return gaussian_blur(imagefit._absorbed(t, d, size), jnp.exp(t[8]))

    return model(theta), jax.jacfwd(model)(theta)


@contextlib.contextmanager
def forward_mode_jacobian():
    """Run the image fit with :func:`_forward_mode_jacobian` (recompiled), then restore it."""
    assembled = imagefit._model_image_and_jacobian
    imagefit._model_image_and_jacobian = _forward_mode_jacobian
    imagefit._fit_batch.clear_cache()
    try:
        yield
    finally:
        imagefit._model_image_and_jacobian = assembled
        imagefit._fit_batch.clear_cache()


class ImageFitSuite:
    """The image fit of n particles, and the stages around it."""

    n = 256

    def setup(self):
        crops, truth, extent = jax.jit(lambda k: training_batch(k, self.n, with_extent=True))(jax.random.key(0))
        self.crops, self.window = np.asarray(crops), 1.3 * np.asarray(extent)
        self.start = perturbed_start(jax.tree.map(np.asarray, truth))
        self.model = load_model()
        self.options = VARIANTS["image fit (defaults: 10 iterations)"]
        for options in VARIANTS.values():
            fit_image(self.crops, self.start, window_px=self.window, options=options)
        refine(self.crops[..., 1], self.start)

    def time_image_fit(self):
        fit_image(self.crops, self.start, window_px=self.window, options=self.options)

    def time_refine(self):
        refine(self.crops[..., 1], self.start)

    def time_cnn_predict(self):
        jax.block_until_ready(jax.tree.map(jnp.asarray, predict(self.model, self.crops)))


def flops(fn, *args) -> float:
    """XLA's count of the floating-point operations of ``fn(*args)`` (a loop's body counted once)."""
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def parts(suite: "ImageFitSuite") -> None:
    """Seconds and FLOPs per particle of one iteration's pieces, on the full (64) and the half (32) grid,
    vmapped over n, beside what this CPU reaches on a large float32 matrix product."""
    a = jnp.ones((2048, 2048), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    seconds = median_time(lambda: jax.block_until_ready(matmul(a)), repeats=5, warmup=1)
    print(f"\nfloat32 matrix product 2048 x 2048: {2 * 2048**3 / seconds / 1e9:.1f} GFLOP/s (the CPU's practical peak)")
    theta = jnp.asarray(np.concatenate([np.log(suite.start["p"])[:, None], np.zeros((suite.n, 2)),
                                        np.full((suite.n, 2), 20.0), np.full((suite.n, 1), np.log(12.0)),
                                        np.zeros((suite.n, 2)), np.zeros((suite.n, 1))], axis=1), jnp.float32)
    d = jnp.asarray(suite.start["d"], jnp.int32)
    print(f"\n{'grid':>5} {'piece (vmapped over ' + str(suite.n) + ')':<44} {'ms/particle':>12} {'MFLOP/particle':>15} {'GFLOP/s':>8}")
    for size in (64, 32):
        t = theta.at[:, 3:5].set(size / 2.0 - 0.5).at[:, 5].set(np.log(size / 5.0))
        pieces = {
            "unblurred image (_absorbed)": jax.jit(jax.vmap(lambda a, b: imagefit._absorbed(a, b, size))),
            "blurred image (cost of a trial step)": jax.jit(jax.vmap(lambda a, b: imagefit._model_image(a, b, size))),
            "image + Jacobian (9 columns)": jax.jit(jax.vmap(lambda a, b: imagefit._model_image_and_jacobian(a, b, size))),
        }
        for name, fn in pieces.items():
            seconds = median_time(lambda: jax.block_until_ready(fn(t, d)), repeats=5, warmup=1)
            work = flops(fn, t, d)
            print(f"{size:>5} {name:<44} {1e3 * seconds / suite.n:>12.3f} {work / suite.n / 1e6:>15.2f} "
                  f"{work / seconds / 1e9:>8.1f}", flush=True)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", action="store_true", help="also time the pieces of one iteration")
    parser.add_argument("--earlier-jacobian", action="store_true", help="also the fit with the earlier Jacobian (slow)")
    args = parser.parse_args()
    print(f"# bench_imagefit\ncommand: {command()}\nmachine: {machine()}\n")
    suite = ImageFitSuite()
    suite.setup()
    n = suite.n
    coarse = suite.window <= ImageFitOptions().coarse_window_px
    print(f"{n} crops, {coarse.sum()} of them with windows <= {ImageFitOptions().coarse_window_px:g} px (half grid)\n")
    cnn_rate = n / median_time(suite.time_cnn_predict, repeats=5, warmup=1)
    refine_rate = n / median_time(suite.time_refine, repeats=3, warmup=1)
    print(f"{'n':>5} {'what':<40} {'particles/s':>12} {'x CNN':>9} {'x refine':>9}")
    for name, options in VARIANTS.items():
        suite.options = options
        rate = n / median_time(suite.time_image_fit, repeats=3, warmup=0)
        print(f"{n:>5} {name:<40} {rate:>12.1f} {rate / cnn_rate:>9.4f} {rate / refine_rate:>9.3f}", flush=True)
    if args.earlier_jacobian:
        suite.options = VARIANTS["image fit, 20 iterations"]
        with forward_mode_jacobian():
            suite.time_image_fit()  # compile
            rate = n / median_time(suite.time_image_fit, repeats=3, warmup=0)
        name = "image fit, 20 iterations, earlier Jacobian"
        print(f"{n:>5} {name:<40} {rate:>12.1f} {rate / cnn_rate:>9.4f} {rate / refine_rate:>9.3f}", flush=True)
    print(f"{n:>5} {'mask refinement, defaults (baseline)':<40} {refine_rate:>12.1f} {refine_rate / cnn_rate:>9.4f} {1.0:>9.3f}")
    print(f"{n:>5} {'CNN forward pass (baseline)':<40} {cnn_rate:>12.1f} {1.0:>9.4f} {cnn_rate / refine_rate:>9.3f}")
    if args.parts:
        parts(suite)


if __name__ == "__main__":
    main()
