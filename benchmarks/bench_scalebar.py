"""The time the scale-bar reader adds per micrograph, beside reading the file and segmenting it.

    python benchmarks/bench_scalebar.py [--rounds 5]

Micrographs: the 41 emps_train PNGs from ../shared/data (skipped with a note where absent)
and 8 rendered 512 x 512 scenes with a drawn bar. For each set, in one process and in
alternation (benchmarks/_common.interleaved_times): read_micrograph alone (the baseline),
scalebar.find_bars, scalebar.read_scale_bar with the glyph classifier alone (no analysis
by synthesis), with the classifier and synthesis (no line reader), scalebar.calibrate
(find the bars and read their labels, every reader), and segment.segment (for scale). Prints the median per micrograph of each.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import jax
import numpy as np

from _common import command, interleaved_times, machine
from nanoshape.glyphs import draw_scale_bar
from nanoshape.io import Micrograph, read_micrograph
from nanoshape.labelsynth import templates
from nanoshape.scalebar import calibrate, find_bars, read_label, read_scale_bar
from nanoshape.scene import SceneOptions, render_scene
from nanoshape.segment import segment

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "emps_train" / "images"


def rendered(n: int) -> list[Micrograph]:
    out = []
    for i in range(n):
        image = np.asarray(render_scene(jax.random.key(i), SceneOptions(n_particles=50)).image, np.float32)
        image = 255 * (image - image.min()) / np.ptp(image)
        image, _ = draw_scale_bar(image, length_px=100 + 15 * i, label=f"{50 * (i + 1)} nm", cap_height_px=14)
        out.append(Micrograph(image, None, Path(f"rendered_{i}.png"), {"warnings": []}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"# {command()}\n# {machine()}")
    sets = {"rendered 512 x 512 with a bar": (rendered(8), None)}
    if DATA.is_dir():
        files = sorted(DATA.glob("*.png"))
        sets["emps_train (41 real PNGs)"] = ([read_micrograph(f) for f in files], files)
    else:
        print(f"# {DATA} absent: real micrographs skipped")
    calibrate(next(iter(sets.values()))[0][0])  # load the classifier and compile it outside the clock
    start = time.perf_counter()
    templates()  # draw the labels analysis by synthesis compares with, once per process
    print(f"# labels drawn for analysis by synthesis, once per process: {time.perf_counter() - start:.2f} s")
    classifier_only = lambda image, bar, floor: read_label(image, bar, min_confidence=floor, synthesis=False,
                                                           line_reader=False)
    no_line_reader = lambda image, bar, floor: read_label(image, bar, min_confidence=floor, line_reader=False)
    print("| micrographs | read_micrograph (baseline) | find_bars | bars + labels, classifier alone "
          "| classifier + synthesis | calibrate (bars + labels, every reader) | segment |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (micrographs, files) in sets.items():
        n = len(micrographs)
        fns = {
            "read": (lambda: [read_micrograph(f) for f in files]) if files else (lambda: None),
            "find_bars": lambda: [find_bars(m.pixels) for m in micrographs],
            "classifier": lambda: [read_scale_bar(m.pixels, reader=classifier_only) for m in micrographs],
            "synthesis": lambda: [read_scale_bar(m.pixels, reader=no_line_reader) for m in micrographs],
            "calibrate": lambda: [calibrate(m) for m in micrographs],
            "segment": lambda: [segment(m.pixels) for m in micrographs],
        }
        times = interleaved_times(fns, rounds=args.rounds)
        ms = {k: 1000 * statistics.median(v) / n for k, v in times.items()}
        read = f"{ms['read']:.1f} ms" if files else "(in memory)"
        print(f"| {name} | {read} | {ms['find_bars']:.1f} ms | {ms['classifier']:.1f} ms | {ms['synthesis']:.1f} ms "
              f"| {ms['calibrate']:.1f} ms "
              f"| {ms['segment']:.1f} ms |")


if __name__ == "__main__":
    main()
