"""``nanoshape analyze`` over many micrographs: serial against a local two-worker Dask cluster.

    python benchmarks/bench_distributed.py [--n 200] [--side 512]

Renders ``n`` micrographs (mixed shapes, 0.5 nm/px), analyses them serially and on a
local Dask cluster of two single-threaded worker processes, checks that both runs wrote
the same particle table and label images, and prints both wall times and the speed-up.
The cluster's start-up is included in its time (it is part of what a user waits for), and
so is each worker's compilation of the jitted stages (crop, CNN, refinement).
``--no-cnn`` times segmentation and features alone, which run single-threaded in NumPy;
the CNN and refinement already use both cores of this machine through XLA's threads.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import tifffile

from _common import command, machine
from nanoshape.examples import write_scene
from nanoshape.pipeline import AnalyzeOptions, DistributeOptions, ShapeOptions, run_analysis
from nanoshape.scene import POPULATIONS, SceneOptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-cnn", action="store_true", help="segmentation and features only (single-threaded NumPy)")
    args = parser.parse_args()
    print(f"# bench_distributed\ncommand: {command()}\nmachine: {machine()}\n")
    options = SceneOptions(height_px=args.side, width_px=args.side, n_particles=args.side * args.side // 4000,
                           populations=tuple(POPULATIONS[n] for n in ("spheres", "cubes", "rods", "triangles", "stars")))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i in range(args.n):
            write_scene(jax.random.key(i), options, tmp / "in", f"m{i:04d}")
        analyze = AnalyzeOptions(shape=ShapeOptions(cnn=False)) if args.no_cnn else AnalyzeOptions()
        start = time.perf_counter()
        serial = run_analysis(tmp / "in", tmp / "serial", analyze, distribute=DistributeOptions(workers=0))
        serial_s = time.perf_counter() - start
        start = time.perf_counter()
        parallel = run_analysis(tmp / "in", tmp / "dask", analyze,
                                distribute=DistributeOptions(workers=args.workers))
        parallel_s = time.perf_counter() - start
        a, b = pd.read_csv(tmp / "serial" / "particles.csv"), pd.read_csv(tmp / "dask" / "particles.csv")
        same = a.equals(b) and all(
            np.array_equal(tifffile.imread(p), tifffile.imread(tmp / "dask" / "labels" / p.name))
            for p in (tmp / "serial" / "labels").glob("*.tif"))
    n = serial["micrographs_analysed"]
    print(f"{args.n} micrographs of {args.side} x {args.side} px, {serial['particles']} particles")
    print(f"{'run':<32} {'micrographs':>11} {'s':>8} {'particles/min':>14} {'speed-up':>9}")
    print(f"{'serial (baseline)':<32} {n:>11} {serial_s:>8.1f} {serial['particles'] / serial_s * 60:>14.0f} {1.0:>9.2f}")
    print(f"{f'Dask, {args.workers} worker processes':<32} {parallel['micrographs_analysed']:>11} {parallel_s:>8.1f} "
          f"{parallel['particles'] / parallel_s * 60:>14.0f} {serial_s / parallel_s:>9.2f}")
    print(f"identical particle tables and label images: {same}")


if __name__ == "__main__":
    main()
