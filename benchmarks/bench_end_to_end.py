"""``nanoshape analyze`` end to end with its defaults, as a user runs it (issue 21).

    python benchmarks/bench_end_to_end.py            # 200 micrographs (~15-40 min on 2 cores)
    python benchmarks/bench_end_to_end.py --quick    # 14 micrographs (~2-4 min)

Builds a folder of micrographs in a temporary directory: the 41 EMPS micrographs of
``/work/shared/data/emps_train`` (or ``--emps``) as they are and flipped / turned (PNG, no
pixel size, as the originals), and rendered 2048 x 2048 scenes of mixed shapes (TIFF, 0.5
nm/px). The full folder is the 41 originals, their left-right and up-down flips and quarter
turns (164) and 36 rendered scenes: 200 micrographs. ``--quick`` takes 6 originals, their
left-right flips and 2 scenes.

Then, in this one process:

1. the plain yardstick on every micrograph (read + Otsu + distance-transform watershed +
   ``regionprops_table``, :func:`bench_analyze.plain_pipeline`): its particles/min;
2. ``run_analysis`` with the default options (as ``nanoshape analyze input=<folder>``),
   cold (the compilation cache as configured: ``--cache`` a directory, else a fresh
   temporary one, i.e. nothing cached);
3. with ``--second``, the same again into a new run directory with the cache the first run
   filled: the start-up a user sees on the second run.

It prints per-stage seconds (summary.json ``timings_s``), particles/min, the ratio to the
plain pipeline and to the seed paper's 6,270/min, peak RSS (the process's high-water mark,
ru_maxrss, so it includes the yardstick), and the first micrograph's latency (from the call
until its results are written). Figures go in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import command, machine

SEED_PAPER_PER_MIN = 6270.0


def build_folder(folder: Path, emps: Path, *, quick: bool) -> dict[str, int]:
    """Write the benchmark's micrographs into ``folder``; returns counts by kind."""
    import jax
    from PIL import Image

    from nanoshape.examples import write_scene
    from nanoshape.scene import POPULATIONS, SceneOptions

    folder.mkdir(parents=True, exist_ok=True)
    images = sorted((emps / "images").glob("*.png"))
    if quick:
        images = images[:6]
    variants = {"": lambda a: a, "_lr": np.fliplr}
    if not quick:
        variants |= {"_ud": np.flipud, "_rot": np.rot90}
    for path in images:
        pixels = np.asarray(Image.open(path))
        for suffix, turn in variants.items():
            Image.fromarray(np.ascontiguousarray(turn(pixels))).save(folder / f"{path.stem}{suffix}.png")
    n_scenes = 2 if quick else 36
    # 2048^2 at 0.5 nm/px, 24 nm particles of every population: ~400 per scene
    populations = tuple(dataclasses.replace(POPULATIONS[name], diameter_nm=24.0)
                        for name in ("spheres", "cubes", "rods", "triangles", "stars"))
    options = SceneOptions(height_px=2048, width_px=2048, pixel_size_nm=0.5, n_particles=400,
                           populations=populations, touching_fraction=0.2)
    scenes = folder.parent / "scenes"  # the truth next to, not inside, the analysed folder
    for i in range(n_scenes):
        paths = write_scene(jax.random.key(1000 + i), options, scenes, f"scene_{i:02d}")
        paths["image"].rename(folder / paths["image"].name)
    return {"emps": len(images) * len(variants), "rendered": n_scenes}


def plain_rate(folder: Path) -> tuple[int, float]:
    """Particles found and seconds taken by the plain pipeline over every micrograph (read included)."""
    from bench_analyze import plain_pipeline
    from nanoshape.io import find_inputs, read_micrograph

    found, start = 0, time.perf_counter()
    for path in find_inputs(folder)[0]:
        image = read_micrograph(path).pixels.astype(np.float32)
        found += plain_pipeline(image)[0]
    return found, time.perf_counter() - start


def analyze(folder: Path, output: Path) -> dict:
    """``run_analysis`` with the defaults; adds the wall time and the first micrograph's latency."""
    from nanoshape.pipeline import AnalyzeOptions, DistributeOptions, run_analysis

    first: list[float] = []
    start = time.perf_counter()

    def progress(event):
        if event.stage == "micrographs" and not first:
            first.append(time.perf_counter() - start)

    summary = run_analysis(folder, output, AnalyzeOptions(), distribute=DistributeOptions(), progress=progress)
    summary["wall_s"] = time.perf_counter() - start
    summary["first_micrograph_s"] = first[0] if first else float("nan")
    return summary


def describe(name: str, summary: dict, plain_per_min: float) -> None:
    per_min = summary["particles"] / summary["wall_s"] * 60
    stages = summary["timings_s"]
    print(f"\n## {name}")
    print(f"micrographs analysed {summary['micrographs_analysed']}, particles {summary['particles']}, "
          f"wall {summary['wall_s']:.1f} s, first micrograph {summary['first_micrograph_s']:.1f} s")
    print(f"particles/min {per_min:,.0f} (x plain {per_min / plain_per_min:.3f}, x seed paper "
          f"{per_min / SEED_PAPER_PER_MIN:.3f})")
    print("stage seconds: " + ", ".join(f"{k.removesuffix('_s')} {v:.1f}" for k, v in stages.items()))
    counted = sum(v for k, v in stages.items() if k != "total")
    print(f"  rest of the run (reading, writing, groups, report, start-up): {summary['wall_s'] - counted:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="14 micrographs instead of 200")
    parser.add_argument("--emps", default="/work/shared/data/emps_train", help="folder with images/*.png")
    parser.add_argument("--cache", default="", help="XLA compilation cache directory (default: a fresh temporary one)")
    parser.add_argument("--second", action="store_true", help="run the analysis again with the cache the first filled")
    parser.add_argument("--keep", default="", help="copy the run directories here")
    args = parser.parse_args()
    print(f"# bench_end_to_end\ncommand: {command()}\nmachine: {machine()}\n")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = Path(args.cache) if args.cache else tmp / "xla-cache"
        try:
            from nanoshape.xla_cache import enable_compilation_cache

            enable_compilation_cache(str(cache))
            cache_note = f"compilation cache {cache}"
        except ImportError:  # a checkout from before the cache
            cache_note = "no compilation cache"
        start = time.perf_counter()
        counts = build_folder(tmp / "in", Path(args.emps), quick=args.quick)
        print(f"folder: {counts['emps']} EMPS micrographs (originals and flips/turns), {counts['rendered']} rendered "
              f"2048 x 2048 scenes; built in {time.perf_counter() - start:.0f} s; {cache_note}")
        found, plain_s = plain_rate(tmp / "in")
        plain_per_min = found / plain_s * 60
        print(f"plain Otsu + watershed + regionprops: {found} particles in {plain_s:.1f} s = {plain_per_min:,.0f}/min")
        runs = {"first run (cold cache)": analyze(tmp / "in", tmp / "run1")}
        if args.second:
            runs["second run (warm cache)"] = analyze(tmp / "in", tmp / "run2")
        for name, summary in runs.items():
            describe(name, summary, plain_per_min)
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"\npeak RSS of the process {peak_gb:.2f} GiB")
        if args.keep:
            import shutil

            for i, name in enumerate(runs, 1):
                shutil.copytree(tmp / f"run{i}", Path(args.keep) / f"run{i}", dirs_exist_ok=True)
        print(json.dumps({name: {k: s[k] for k in ("particles", "wall_s", "first_micrograph_s", "timings_s")}
                          for name, s in runs.items()}))


if __name__ == "__main__":
    main()
