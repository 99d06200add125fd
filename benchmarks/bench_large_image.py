"""A 16,384 x 16,384 micrograph with ~100,000 particles through the analysis: time and peak memory.

    python benchmarks/bench_large_image.py [--side 16384] [--keep DIR]

A 2048 x 2048 scene rendered by nanoshape (0.5 nm/px, 14 nm spheres, cubes and rods, 30 %
in contact) is tiled to the requested side, written as a calibrated uint16 TIFF, and run
through :func:`nanoshape.pipeline.process_file` (read, segment, measure, crop, write the
run-directory outputs), as ``nanoshape analyze`` would. Peak memory is the process's
maximum resident set size (``getrusage``), which includes the tiled image held by the
benchmark itself; it is printed beside the size of the image as float32. The baseline in
the same run is the 2048 x 2048 tile alone (time per particle should stay flat).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from _common import command, machine
from nanoshape.io import write_tiff
from nanoshape.pipeline import AnalyzeOptions, process_file
from nanoshape.scene import Population, SceneOptions, render_scene


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def _run(path: Path, output: Path) -> tuple[float, int]:
    start = time.perf_counter()
    record = process_file(path, output, AnalyzeOptions(overlays=True))
    seconds = time.perf_counter() - start
    if record["status"] != "done":
        raise SystemExit(f"{path.name}: {record}")
    import pandas as pd

    return seconds, len(pd.read_parquet(output / "parts" / "particles" / f"{path.stem}.parquet"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=16384)
    parser.add_argument("--keep", type=Path, default=None, help="keep the run directory here")
    args = parser.parse_args()
    print(f"# bench_large_image\ncommand: {command()}\nmachine: {machine()}\n")
    spheres = Population("spheres", (1.8, 2.2), (2,), (1.0, 1.1), diameter_nm=14.0, diameter_cv=0.1)
    cubes = Population("cubes", (12.0, 30.0), (2,), (1.0, 1.08), diameter_nm=14.0, diameter_cv=0.1)
    rods = Population("rods", (3.0, 8.0), (2,), (2.0, 3.0), diameter_nm=14.0, diameter_cv=0.1)
    scene = render_scene(jax.random.key(0), SceneOptions(height_px=2048, width_px=2048, pixel_size_nm=0.5,
                                                         n_particles=2600, populations=(spheres, cubes, rods),
                                                         touching_fraction=0.3, gap_px=2.0))
    tile = np.clip(scene.image * 40000, 0, 65535).astype(np.uint16)
    reps = -(-args.side // tile.shape[0])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_tiff(tmp / "tile.tif", tile, pixel_size_nm=0.5)
        large = np.tile(tile, (reps, reps))[: args.side, : args.side]
        write_tiff(tmp / "large.tif", large, pixel_size_nm=0.5)
        del large
        output = args.keep or tmp / "run"
        tile_s, tile_n = _run(tmp / "tile.tif", output)
        before = _peak_rss_gib()
        large_s, large_n = _run(tmp / "large.tif", output)
        peak = _peak_rss_gib()
    float_gib = args.side**2 * 4 / 2**30
    print(f"{'micrograph':<22} {'particles':>10} {'s':>8} {'particles/min':>14}")
    print(f"{'2048 x 2048 (baseline)':<22} {tile_n:>10} {tile_s:>8.1f} {tile_n / tile_s * 60:>14.0f}")
    print(f"{f'{args.side} x {args.side}':<22} {large_n:>10} {large_s:>8.1f} {large_n / large_s * 60:>14.0f}")
    print(f"peak resident memory: {peak:.1f} GiB (before the large image: {before:.1f} GiB; "
          f"the image as float32: {float_gib:.1f} GiB)")


if __name__ == "__main__":
    main()
