"""Fit rounded polygons (and eq. 1) to particle masks, as a researcher would (issue 23, item 1).

    python experiments/fit_polygons.py [--per-class 16] [--output experiments/results/fit_polygons]
        (28 s on a 2-core CPU at the default --per-class 16, compilation included)

The masks come from the second generator of ``experiments/groups_second_generator.py``,
which draws its shapes explicitly, not from any nanoshape family: rounded triangles,
squares and hexagons (a regular polygon grown by a disc), discs, rounded-rectangle
platelets and capsules (rods), each turned at random, at two sizes (24 and 44 px across),
antialiased and thresholded at one half. Every mask is fitted twice through nanoshape's
public fitting entry point, :func:`nanoshape.fit_masks`: with the rounded-polygon
family (``family="polygon"``: n sides, corner rounding, phase; started from the middle of
its prior, every n tried) and with eq. 1 (``family="superellipse"``: the refinement,
started from the mask's moments).

Reported per class (``summary.csv``, ``summary.json``; ``per_mask.csv``): the median and
10th percentile of each family's Jaccard index with the mask, for the polygons the share
with the right number of sides, and the median |fitted - drawn| rounding (corner radius
over inradius, converted from the generator's corner radius over circumradius).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from nanoshape import fit_masks  # the public API only

HERE = Path(__file__).resolve().parent
SIDES = {"triangles": 3, "squares": 4, "hexagons": 6}
CLASSES = ("triangles", "squares", "hexagons", "discs", "platelets", "rods")
CANVAS = 64


def _second_generator():
    spec = importlib.util.spec_from_file_location("groups_second_generator", HERE / "groups_second_generator.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def drawn_rounding(n: int, corner: float) -> float:
    """The generator's corner radius over circumradius, as corner radius over inradius."""
    radius = 1.0
    rounding = corner * radius
    inner = radius - rounding / math.cos(math.pi / n)
    return rounding / (inner * math.cos(math.pi / n) + rounding)


def masks_of(generator, per_class: int, seed: int) -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    masks, rows = [], []
    for name in CLASSES:
        for across in (24.0, 44.0):
            for _ in range(per_class):
                corner = float(rng.uniform(0.05, 0.35))
                spec = generator.ClassSpec(name, across, aspect=2.5 if name in ("platelets", "rods") else 1.0,
                                           corner=corner)
                coverage = generator._particle_mask(spec, rng)
                # the generator's box is its particle plus a margin: a large draw (44 px x up to
                # +2.3 sd of its size jitter) makes a box over 64 px, whose empty margin is cut
                side = max(CANVAS, coverage.shape[0])
                canvas = np.zeros((side, side), np.float32)
                top = (side - coverage.shape[0]) // 2
                canvas[top : top + coverage.shape[0], top : top + coverage.shape[1]] = coverage
                inside = canvas > 0.5
                cut = (side - CANVAS) // 2
                mask = inside[cut : cut + CANVAS, cut : cut + CANVAS]
                if mask.sum() != inside.sum():
                    raise ValueError(f"a {name} of {coverage.shape[0]} px does not fit the {CANVAS} px canvas")
                masks.append(mask.astype(np.float32))
                rows.append({"class": name, "across_px": across, "corner": corner,
                             "n_true": SIDES.get(name, 0),
                             "rounding_true": drawn_rounding(SIDES[name], corner) if name in SIDES else np.nan})
    return np.stack(masks), pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=16, help="masks per class and size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "fit_polygons")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)

    masks, table = masks_of(_second_generator(), args.per_class, args.seed)
    timings = {}
    for family in ("polygon", "superellipse"):
        start = time.perf_counter()
        fit = fit_masks(masks, family=family)
        timings[family] = time.perf_counter() - start
        table[f"jaccard_{family}"] = fit["jaccard_refined"]
        if family == "polygon":
            table["n_fit"], table["rounding_fit"], table["phi_fit"] = fit["n_sides"], fit["rounding"], fit["phi"]
        else:
            for k in ("p", "d", "l_ratio", "phi"):
                table[f"{k}_eq1"] = fit[k]
    table.to_csv(args.output / "per_mask.csv", index=False)

    rows = []
    for name, part in table.groupby("class", sort=False):
        row = {"class": name, "masks": len(part)}
        for family in ("polygon", "superellipse"):
            row[f"jaccard_{family}_median"] = float(part[f"jaccard_{family}"].median())
            row[f"jaccard_{family}_p10"] = float(part[f"jaccard_{family}"].quantile(0.1))
        if name in SIDES:
            row["n_sides_right"] = float((part["n_fit"] == part["n_true"]).mean())
            right = part[part["n_fit"] == part["n_true"]]
            row["rounding_abs_error_median"] = float((right["rounding_fit"] - right["rounding_true"]).abs().median())
        rows.append(row)
    summary = pd.DataFrame(rows)
    summary.to_csv(args.output / "summary.csv", index=False)
    (args.output / "summary.json").write_text(json.dumps({"masks": len(table), "fit_seconds": timings,
                                                          "classes": rows}, indent=1))
    with pd.option_context("display.width", 200, "display.precision", 3):
        print(summary.to_string(index=False))
    print(f"fit time: {', '.join(f'{k} {v:.0f} s' for k, v in timings.items())} for {len(table)} masks "
          f"(with compilation); results in {args.output}")


if __name__ == "__main__":
    main()
