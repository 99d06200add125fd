"""Do the per-sample intervals hold the truth, and do the tests tell samples apart? On rendered samples.

    python experiments/sample_statistics.py [--draws 200] [--scenes-per-sample 2] [--out experiments/results/samples]

Issue 25 asks that per-sample 95 % intervals cover the truth at the stated rate on
rendered samples of known size, and that two samples 5 % apart are told apart while two
from one distribution are not. This script renders samples with nanoshape's own scene
renderer (:func:`nanoshape.scene.render_scene`: spheres of log-normal equivalent diameter,
population mean 20 nm or 21 nm, cv 0.10, 1 nm/px, 25 placed per 192 x 192 micrograph, 20 %
placed touching a neighbour, the renderer's random imaging per micrograph), and measures
them with the real pipeline's segmentation (the learned detector, the default) and
features (:func:`nanoshape.features.measure`): the mask's ``equivalent_diameter_nm``. The
shape stages (CNN, image fit, refinement) are off: they do not change the mask's size and
would triple the runtime.

A sample is ``--scenes-per-sample`` micrographs. ``--draws`` samples of each of three
kinds are drawn independently: A and A2 (both 20 nm) and B (21 nm, 5 % larger). Then:

- coverage: for every sample, :func:`nanoshape.samples.bootstrap_intervals` (BCa, 2,000
  resamples, 95 %) of the mean, median and cv, scored against two truths:
  (1) the pipeline's population value, what the measurement converges to with
  infinitely many micrographs: here the pooled value of all the samples of that size
  (> 20,000 particles); (2) the rendered population's value (mean 20 or 21 nm, median
  mean x exp(-sigma^2 / 2), cv 0.10). The gap between (1) and (2) is the measurement's
  bias (the mask's edge, particles cut by the border left out, touching ones merged or
  split), which no interval of one sample can see;
- power: the share of pairs (A_i, B_i) whose Mann-Whitney or Kolmogorov-Smirnov p < 0.05;
- false positives: the same for pairs (A_i, A2_i).

Measured samples are cached under ``--cache`` (one file per sample), so a rerun (or a run
stopped part way) redoes only what is missing. Writes ``summary.json``, ``samples.csv``
(one row per sample), ``figures/*.png`` and ``README.md`` into ``--out``.
Runtime: the defaults (600 samples of 6 micrographs) took the minutes README.md states, on 2
shared CPU cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from nanoshape.evaluate import match_instances
from nanoshape.features import measure
from nanoshape.samples import bootstrap_intervals, compare_pair, widest
from nanoshape.scene import POPULATIONS, SceneOptions, render_scene
from nanoshape.segment import SegmentOptions, segment

PIXEL_SIZE_NM = 1.0
CV = 0.10
KINDS = {"A": 20.0, "A2": 20.0, "B": 21.0}  # kind -> population mean of the equivalent diameter, nm
LEVEL = 0.95
#: how an interval resamples -> words (``wider``: the wider of the two, as the run's tables report it)
WAYS = {"particles": "resampling particles", "micrographs": "resampling micrographs",
        "wider": "the wider of both (the tables')"}
N_BOOT = 2000


def scene_options(mean_nm: float) -> SceneOptions:
    population = dataclasses.replace(POPULATIONS["spheres"], diameter_nm=mean_nm, diameter_cv=CV)
    return SceneOptions(height_px=192, width_px=192, pixel_size_nm=PIXEL_SIZE_NM, n_particles=25,
                        populations=(population,), touching_fraction=0.2)


def measure_sample(key: jax.Array, mean_nm: float, scenes: int) -> dict[str, np.ndarray]:
    """Render ``scenes`` micrographs and measure them: measured sizes, rendered sizes, matched pairs."""
    measured, rendered, inside, matched_true, matched_found, micrograph = [], [], [], [], [], []
    for s in range(scenes):
        scene = render_scene(jax.random.fold_in(key, s), scene_options(mean_nm))
        seg = segment(scene.image, SegmentOptions())
        table = measure(seg.labels, scene.image, pixel_size_nm=scene.pixel_size_nm)
        measured.append(table["equivalent_diameter_nm"].to_numpy(float))
        micrograph.append(np.full(len(table), s))
        truth = scene.truth.set_index("particle_id")
        rendered.append(truth["equivalent_diameter_nm"].to_numpy(float))
        inside.append(truth.loc[~truth["touches_border"].astype(bool), "equivalent_diameter_nm"].to_numpy(float))
        found = table.set_index("particle_id")["equivalent_diameter_nm"]
        for p, t in match_instances(seg.labels, scene.labels)["pairs"]:
            matched_found.append(found[int(p)])
            matched_true.append(truth.loc[int(t), "equivalent_diameter_nm"])
    return {"measured": np.concatenate(measured), "micrograph": np.concatenate(micrograph),
            "rendered": np.concatenate(rendered), "rendered_inside": np.concatenate(inside),
            "matched_true": np.asarray(matched_true, float), "matched_found": np.asarray(matched_found, float)}


def load_or_measure(cache: Path, kind: str, index: int, scenes: int, seed: int) -> dict[str, np.ndarray]:
    path = cache / f"{kind}_{index:04d}_s{scenes}_192.npz"
    if path.exists():
        with np.load(path) as data:
            return dict(data)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), list(KINDS).index(kind)), index)
    result = measure_sample(key, KINDS[kind], scenes)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **result)
    tmp.rename(path)
    return result


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (Wilson 1927)."""
    if n == 0:
        return math.nan, math.nan
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def population_values(x: np.ndarray) -> dict[str, float]:
    return {"mean": float(x.mean()), "median": float(np.median(x)), "cv": float(x.std(ddof=1) / x.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--scenes-per-sample", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="experiments/results/samples")
    parser.add_argument("--cache", default="/tmp/nanoshape_sample_statistics")
    args = parser.parse_args()
    out, cache = Path(args.out), Path(args.cache)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = {kind: [] for kind in KINDS}
    for index in range(args.draws):
        for kind in KINDS:
            data[kind].append(load_or_measure(cache, kind, index, args.scenes_per_sample, args.seed))
        if (index + 1) % 10 == 0:
            print(f"{index + 1}/{args.draws} draws measured ({time.perf_counter() - start:.0f} s)", flush=True)
    measure_s = time.perf_counter() - start

    sigma = math.sqrt(math.log1p(CV**2))
    pooled = {20.0: np.concatenate([d["measured"] for k in ("A", "A2") for d in data[k]]),
              21.0: np.concatenate([d["measured"] for d in data["B"]])}
    pipeline = {size: population_values(x) for size, x in pooled.items()}
    rendered = {size: {"mean": size, "median": size * math.exp(-sigma**2 / 2), "cv": CV} for size in pooled}
    rows = []
    for kind, samples in data.items():
        size = KINDS[kind]
        for index, sample in enumerate(samples):
            row = {"kind": kind, "index": index, "true_mean_nm": size, "particles": len(sample["measured"])}
            by_way = {way: bootstrap_intervals(sample["measured"], clusters=clusters, sample=f"{kind} {index}",
                                               seed=args.seed, n_boot=N_BOOT, level=LEVEL)
                      for way, clusters in (("particles", None), ("micrographs", sample["micrograph"]))}
            by_way["wider"] = widest(by_way["particles"], by_way["micrographs"])
            for way, ci in by_way.items():
                for stat in ("mean", "median", "cv"):
                    row.update({f"{stat}": ci[stat], f"{stat}_ci_low_{way}": ci[f"{stat}_ci_low"],
                                f"{stat}_ci_high_{way}": ci[f"{stat}_ci_high"]})
                    for name, truth in (("pipeline", pipeline[size][stat]), ("rendered", rendered[size][stat])):
                        row[f"{stat}_{way}_covers_{name}"] = bool(ci[f"{stat}_ci_low"] <= truth <= ci[f"{stat}_ci_high"])
            rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(out / "samples.csv", index=False)

    coverage = {}
    for way in ("particles", "micrographs", "wider"):
        for stat in ("mean", "median", "cv"):
            for name in ("pipeline", "rendered"):
                hits = int(table[f"{stat}_{way}_covers_{name}"].sum())
                coverage[f"{stat}_{way}_vs_{name}"] = {"hits": hits, "n": len(table), "rate": hits / len(table),
                                                       "wilson_95": wilson(hits, len(table))}
    tests = {"shifted_5_percent": [], "same_distribution": []}
    for index in range(args.draws):
        a, ca = data["A"][index]["measured"], data["A"][index]["micrograph"]
        for name, kind in (("shifted_5_percent", "B"), ("same_distribution", "A2")):
            other = data[kind][index]
            tests[name].append(compare_pair(a, other["measured"], clusters_a=ca, clusters_b=other["micrograph"]))
    rates = {}
    for name, results in tests.items():
        for test in ("mannwhitney", "ks", "micrograph_welch"):
            hits = int(sum(r[f"{test}_p"] < 0.05 for r in results))
            rates[f"{name}_{test}"] = {"rejected": hits, "n": len(results), "rate": hits / len(results),
                                       "wilson_95": wilson(hits, len(results))}
    matched_true = np.concatenate([d["matched_true"] for k in KINDS for d in data[k]])
    matched_found = np.concatenate([d["matched_found"] for k in KINDS for d in data[k]])
    inside = {size: np.concatenate([d["rendered_inside"] for k, m in KINDS.items() if m == size for d in data[k]])
              for size in pooled}
    every = {size: np.concatenate([d["rendered"] for k, m in KINDS.items() if m == size for d in data[k]])
             for size in pooled}
    between = []
    for kind in KINDS:
        for d in data[kind]:
            frame = pd.DataFrame({"x": d["measured"], "m": d["micrograph"]})
            means = frame.groupby("m").x.mean()
            within = frame.groupby("m").x.var(ddof=1).mean()
            k = frame.groupby("m").size().mean()
            between.append(max(means.var(ddof=1) - within / k, 0.0) / KINDS[kind] ** 2)
    between_sd = math.sqrt(float(np.mean(between)))
    summary = {
        "between_micrograph_sd_of_mean_relative": between_sd,
        "command": f"python experiments/sample_statistics.py --draws {args.draws} --scenes-per-sample "
                   f"{args.scenes_per_sample} --seed {args.seed}",
        "draws_per_kind": args.draws, "micrographs_per_sample": args.scenes_per_sample,
        "particles_per_sample_median": float(table.particles.median()),
        "level": LEVEL, "n_boot": N_BOOT, "interval": "BCa bootstrap (nanoshape.samples.bootstrap_intervals)",
        "pipeline_population": {str(k): v for k, v in pipeline.items()},
        "rendered_population": {str(k): v for k, v in rendered.items()},
        "rendered_particles_mean_nm": {str(k): float(v.mean()) for k, v in every.items()},
        "rendered_inside_mean_nm": {str(k): float(v.mean()) for k, v in inside.items()},
        "matched_particles": int(len(matched_true)),
        "matched_median_relative_error": float(np.median(matched_found / matched_true - 1)),
        "measurement_bias_of_mean": {str(k): pipeline[k]["mean"] / k - 1 for k in pipeline},
        "coverage": coverage, "tests_at_0.05": rates,
        "measure_s": measure_s, "total_s": time.perf_counter() - start,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    figures(out / "figures", table, coverage, tests, pipeline, rendered, pooled, inside)
    write_readme(out, summary)
    print(json.dumps({k: summary[k] for k in ("coverage", "tests_at_0.05", "measurement_bias_of_mean")}, indent=1))


def figures(folder: Path, table, coverage, tests, pipeline, rendered, pooled, inside) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.5))
    bars = (("particles", "pipeline", "tab:blue"), ("micrographs", "pipeline", "tab:cyan"), ("wider", "pipeline", "navy"),
            ("particles", "rendered", "tab:orange"), ("micrographs", "rendered", "gold"), ("wider", "rendered", "brown"))
    for i, stat in enumerate(("mean", "median", "cv")):
        for j, (way, name, colour) in enumerate(bars):
            entry = coverage[f"{stat}_{way}_vs_{name}"]
            low, high = entry["wilson_95"]
            x = i + (j - 2.5) * 0.14
            ax.bar(x, entry["rate"], width=0.13, color=colour,
                   label=(f"{WAYS[way]}, vs the {name} population" if i == 0 else None))
            ax.errorbar(x, entry["rate"], yerr=[[max(entry["rate"] - low, 0)], [max(high - entry["rate"], 0)]], color="k",
                        capsize=2)
            ax.text(x, min(high, 1.0) + 0.01, f"{100 * entry['rate']:.0f}", ha="center", va="bottom", fontsize=7)
    ax.axhline(0.95, color="k", ls="--", lw=1)
    ax.axhspan(0.92, 0.98, color="0.85", zorder=0)
    ax.set_xticks(range(3), ["mean", "median", "cv"], fontsize=11)
    ax.set_ylabel("share of 95 % intervals holding the value", fontsize=11)
    ax.set_ylim(0, 1.12)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(f"{len(table)} rendered samples (grey band: 95 ± 3 %)", fontsize=11)
    fig.tight_layout()
    fig.savefig(folder / "coverage.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    part = table[table.kind == "A"].head(100).sort_values("mean").reset_index(drop=True)
    low, high = part.mean_ci_low_wider, part.mean_ci_high_wider
    hit = (low <= pipeline[20.0]["mean"]) & (pipeline[20.0]["mean"] <= high)
    ax.vlines(part.index, low, high, colors=np.where(hit, "tab:blue", "tab:red"), lw=1.5)
    ax.plot(part.index, part["mean"], "k.", ms=3)
    ax.axhline(pipeline[20.0]["mean"], color="tab:blue", lw=1, label=f"pipeline population mean {pipeline[20.0]['mean']:.2f} nm")
    ax.axhline(20.0, color="tab:orange", lw=1, ls="--", label="rendered population mean 20 nm")
    ax.set_xlabel("sample of kind A (sorted by mean); the wider interval, red: misses the pipeline's mean",
                  fontsize=10)
    ax.set_ylabel("mean equivalent diameter (nm)", fontsize=11)
    ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(folder / "mean_intervals.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (name, results) in zip(axes, tests.items()):
        for test, colour, label in (("mannwhitney", "tab:blue", "Mann-Whitney"), ("ks", "tab:green", "Kolmogorov-Smirnov"),
                                    ("micrograph_welch", "tab:red", "Welch on micrograph means")):
            p = np.sort([r[f"{test}_p"] for r in results])
            ax.step(p, np.arange(1, len(p) + 1) / len(p), where="post", color=colour,
                    label=f"{label}: {np.mean(p < 0.05):.1%} below 0.05")
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls=":")
        ax.axvline(0.05, color="k", lw=1, ls="--")
        ax.set_xscale("log")
        ax.set_xlim(1e-8, 1)
        ax.set_xlabel("p-value", fontsize=11)
        ax.set_ylabel("share of pairs at most this p", fontsize=11)
        ax.set_title("B (21 nm) against A (20 nm)" if name == "shifted_5_percent" else "A2 against A (both 20 nm)",
                     fontsize=11)
        ax.legend(fontsize=9, loc="upper left")
    fig.tight_layout()
    fig.savefig(folder / "tests.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(10, 32, 45)
    ax.hist(inside[20.0], bins=bins, density=True, alpha=0.5, label=f"rendered, inside the frame (n = {len(inside[20.0])})")
    ax.hist(pooled[20.0], bins=bins, density=True, alpha=0.5, label=f"measured (n = {len(pooled[20.0])})")
    ax.set_xlabel("equivalent diameter (nm), population mean 20 nm", fontsize=11)
    ax.set_ylabel("density", fontsize=11)
    ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(folder / "sizes.png", dpi=120)
    plt.close(fig)


def write_readme(out: Path, s: dict) -> None:
    c, t = s["coverage"], s["tests_at_0.05"]

    def rate(entry):
        low, high = entry["wilson_95"]
        return f"{entry['rate']:.1%} ({low:.1%}-{high:.1%})"

    lines = [
        "# Per-sample intervals and tests on rendered samples (issue 25)", "",
        f"Command: `{s['command']}` ({s['total_s'] / 60:.0f} min on 2 shared CPU cores; "
        "measured samples cached in /tmp/nanoshape_sample_statistics).", "",
        f"Samples of {s['micrographs_per_sample']} rendered micrographs of spheres (log-normal equivalent diameter, cv "
        f"0.10, population mean 20 nm for kinds A and A2, 21 nm for B; 1 nm/px, 25 placed per 192 x 192 px micrograph), "
        f"{s['draws_per_kind']} of each kind, "
        f"median {s['particles_per_sample_median']:.0f} particles per sample, measured by the learned segmentation and "
        "the mask's equivalent diameter (shape stages off: they do not change it). Intervals: "
        f"{s['interval']}, {s['n_boot']} resamples, 95 %. Rates with Wilson 95 % intervals.", "",
        "| 95 % interval of | resampling | holds the pipeline's population value | holds the rendered value |",
        "|---|---|---|---|",
        *[f"| {stat} | {way} | {rate(c[f'{stat}_{way}_vs_pipeline'])} | {rate(c[f'{stat}_{way}_vs_rendered'])} |"
          for stat in ("mean", "median", "cv") for way in ("particles", "micrographs", "wider")],
        "",
        "| pairs, test at p < 0.05 | Mann-Whitney | Kolmogorov-Smirnov | Welch on micrograph means |", "|---|---|---|---|",
        f"| B (21 nm) vs A (20 nm): power | {rate(t['shifted_5_percent_mannwhitney'])} | {rate(t['shifted_5_percent_ks'])} "
        f"| {rate(t['shifted_5_percent_micrograph_welch'])} |",
        f"| A2 vs A (both 20 nm): false positives | {rate(t['same_distribution_mannwhitney'])} "
        f"| {rate(t['same_distribution_ks'])} | {rate(t['same_distribution_micrograph_welch'])} |",
        "",
        f"Spread of the micrographs' mean sizes beyond what their particles explain (each micrograph draws its own "
        f"imaging): sd {s['between_micrograph_sd_of_mean_relative']:.2%} of the size.", "",
        "Measurement bias (the pipeline's population against the rendered one): mean "
        + ", ".join(f"{float(k):g} nm -> {v['mean']:.3f} nm ({s['measurement_bias_of_mean'][k]:+.2%})"
                    for k, v in s["pipeline_population"].items())
        + f"; rendered particles lying wholly inside the frame have mean "
        + ", ".join(f"{v:.3f} nm" for v in s["rendered_inside_mean_nm"].values())
        + f" (all rendered: " + ", ".join(f"{v:.3f}" for v in s["rendered_particles_mean_nm"].values())
        + f"); matched particles (IoU >= 0.5, {s['matched_particles']}) measure a median "
        f"{s['matched_median_relative_error']:+.2%} against their own rendered size.", "",
        "Figures: `figures/coverage.png`, `figures/mean_intervals.png`, `figures/tests.png`, `figures/sizes.png`. "
        "`summary.json` holds every number, `samples.csv` every sample's intervals.",
    ]
    (out / "README.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
