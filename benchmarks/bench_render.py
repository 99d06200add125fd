"""Renderer throughput at 64 x 64 beside a plain NumPy silhouette, in the same process.

    python benchmarks/bench_render.py            (about 2 minutes on a 2-core CPU)

asv-style: each ``time_*`` method of :class:`RenderSuite` is one figure; ``setup`` builds
the inputs and compiles. Throughputs are images per second, medians of several runs after
warm-up; the NumPy reference is timed in the same run, so the ratio holds on a noisy
machine even when absolute figures drift. Benchmarks never fail: they report.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from _common import command, machine, median_time
from _numpy_silhouette import silhouette_numpy
from nanoshape.render import render, silhouette
from nanoshape.shape import ShapeParams, max_radius, sample_prior
from nanoshape.trainingdata import training_batch

SIZE = 64
CHUNK = 128


class RenderSuite:
    """Throughput of the silhouette, the full imaging model, training batches and the gradient."""

    params = (256, 4096)

    def setup(self, batch: int):
        keys = jax.random.split(jax.random.key(0), batch)
        self.shapes = jax.vmap(sample_prior)(keys)
        self.scales = 0.4 * SIZE / jax.vmap(max_radius)(self.shapes)
        self.centers = jax.random.uniform(jax.random.key(1), (batch, 2), minval=30.0, maxval=33.0)
        self.keys = keys
        self.batch = batch
        chunk = min(CHUNK, batch)

        def one_silhouette(args):
            shape, center, scale = args
            return silhouette(shape, center, scale, height=SIZE, width=SIZE)

        def one_render(args):
            key, shape, center, scale = args
            return render(key, shape, center, scale, height=SIZE, width=SIZE)[0]

        target = jax.vmap(one_silhouette)((self.shapes, self.centers, self.scales))

        def loss(p, l_ratio, phi, center, scale, d, mask):
            soft = silhouette(ShapeParams(p, d, l_ratio, phi), center, scale, height=SIZE, width=SIZE)
            intersection = jnp.sum(soft * mask)
            return 1 - intersection / (jnp.sum(soft) + jnp.sum(mask) - intersection)

        grad = jax.grad(loss, argnums=(0, 1, 2, 3, 4))

        def one_grad(args):
            shape, center, scale, mask = args
            return grad(shape.p, shape.l_ratio, shape.phi, center, scale, shape.d, mask)

        self.silhouette_fn = jax.jit(lambda s, c, k: jax.lax.map(one_silhouette, (s, c, k), batch_size=chunk))
        self.silhouette_vmap_fn = jax.jit(jax.vmap(lambda s, c, k: silhouette(s, c, k, height=SIZE, width=SIZE)))
        self.render_fn = jax.jit(lambda ks, s, c, k: jax.lax.map(one_render, (ks, s, c, k), batch_size=chunk))
        self.batch_fn = jax.jit(lambda key: training_batch(key, batch)[0])
        self.grad_fn = jax.jit(lambda s, c, k, m: jax.lax.map(one_grad, (s, c, k, m), batch_size=chunk))
        # the grad of a perturbed shape against the target masks
        self.perturbed = ShapeParams(self.shapes.p * 1.1, self.shapes.d, self.shapes.l_ratio * 1.05, self.shapes.phi + 0.05)
        self.target = target
        self.numpy_args = tuple(np.asarray(a) for a in (*self.shapes, self.centers, self.scales))
        for fn in (self.time_silhouette, self.time_silhouette_single_vmap, self.time_full_imaging,
                   self.time_training_batch, self.time_soft_jaccard_gradient):
            fn()

    def time_silhouette(self):
        jax.block_until_ready(self.silhouette_fn(self.shapes, self.centers, self.scales))

    def time_silhouette_single_vmap(self):
        jax.block_until_ready(self.silhouette_vmap_fn(self.shapes, self.centers, self.scales))

    def time_full_imaging(self):
        jax.block_until_ready(self.render_fn(self.keys, self.shapes, self.centers, self.scales))

    def time_training_batch(self):
        jax.block_until_ready(self.batch_fn(jax.random.key(2)))

    def time_soft_jaccard_gradient(self):
        jax.block_until_ready(self.grad_fn(self.perturbed, self.centers, self.scales, self.target))

    def time_numpy_silhouette(self):
        p, d, l_ratio, phi, centers, scales = self.numpy_args
        # in chunks, as the JAX version, so both stay in cache
        for i in range(0, self.batch, 256):
            silhouette_numpy(p[i:i + 256], d[i:i + 256], l_ratio[i:i + 256], phi[i:i + 256], centers[i:i + 256],
                             scales[i:i + 256], SIZE)


def main() -> None:
    print(f"# bench_render\ncommand: {command()}\nmachine: {machine()}\n")
    print(f"{'batch':>6} {'what':<34} {'images/s':>10} {'x NumPy':>8}")
    suite = RenderSuite()
    for batch in RenderSuite.params:
        suite.setup(batch)
        inner = max(1, 4096 // batch)
        numpy_rate = batch / median_time(suite.time_numpy_silhouette, repeats=5, warmup=1)
        rows = [
            ("silhouette (lax.map, chunks of 128)", suite.time_silhouette),
            ("silhouette (one vmap)", suite.time_silhouette_single_vmap),
            ("full imaging model", suite.time_full_imaging),
            ("training batch (render + crop)", suite.time_training_batch),
            ("grad of soft-Jaccard loss", suite.time_soft_jaccard_gradient),
        ]
        for name, fn in rows:
            rate = batch / median_time(fn, repeats=7, inner=inner)
            print(f"{batch:>6} {name:<34} {rate:>10.0f} {rate / numpy_rate:>8.1f}")
        print(f"{batch:>6} {'NumPy silhouette (baseline)':<34} {numpy_rate:>10.0f} {1.0:>8.1f}")


if __name__ == "__main__":
    main()
