"""Samples side by side: the tables and figure of a run's samples, and ``nanoshape compare``.

:func:`write_sample_tables` writes ``micrographs.csv``, ``samples.csv`` and
``sample_pairs.csv`` (:func:`nanoshape.samples.sample_tables`) into a folder;
:func:`samples_figure` draws each sample's size distribution and its mean and median with
their 95 % intervals. The run's report uses both (section "samples");
:func:`compare_runs` reads several run directories of ``nanoshape analyze`` and compares
them as samples (one sample per run, or every run's own samples), into a folder of its own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from nanoshape.io import write_csv
from nanoshape.rundir import atomic_write
from nanoshape.samples import MIN_MICROGRAPHS_FOR_CLUSTERS, SampleTables, read_run_fields, sample_tables, sizes_in

__all__ = ["TABLE_FILES", "write_sample_tables", "samples_figure", "correction_statement", "compare_runs"]

#: SampleTables attribute -> file name
TABLE_FILES = {"micrographs": "micrographs.csv", "samples": "samples.csv", "pairs": "sample_pairs.csv"}


def write_sample_tables(tables: SampleTables, folder: str | os.PathLike) -> dict[str, Path]:
    """Write the per-micrograph, per-sample and pairwise tables as CSV (spreadsheet-safe) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, file in TABLE_FILES.items():
        path = folder / file
        atomic_write(path, lambda tmp, frame=getattr(tables, name): write_csv(frame, tmp))
        written[name] = path
    return written


def correction_statement(tables: SampleTables) -> str:
    """What the pairwise p-values are and how they were corrected, in one sentence for the reader."""
    m = len(tables.pairs)
    return (f"Pairwise tests of {tables.size} (two-sided Kolmogorov-Smirnov and Mann-Whitney) and of the shape "
            f"groups' counts (chi-square, no continuity correction) between every two of the "
            f"{len(tables.samples)} samples ({m} pair{'s' if m != 1 else ''}); p-values are corrected with Holm's "
            f"method within each test over the {m} pair{'s' if m != 1 else ''} (columns *_p_holm), so that each "
            f"test's chance of any false difference is at most the level they are compared with (5 % here). Effect "
            f"sizes: KS D (largest gap between the two distributions), rank-biserial r (P(b > a) - P(b < a)), "
            f"relative difference of the means, Cramér's V. The particle tests treat particles as independent draws; "
            f"particles of one micrograph share its imaging, so where micrographs differ their p-values are too small "
            f"and the Welch test on the micrographs' mean sizes (micrograph_welch) is the one to read. Intervals: "
            f"bias-corrected and accelerated bootstrap, {tables.n_boot} resamples, {tables.level:.0%}, of the "
            f"sample's particles, or, for samples of {MIN_MICROGRAPHS_FOR_CLUSTERS} or more micrographs, the wider "
            f"of that and of resampling whole micrographs, widened for few micrographs (interval_resamples).")


def samples_figure(particles: pd.DataFrame, tables: SampleTables):
    """Each sample's cumulative size distribution (left) and its mean and median with 95 % intervals (right).

    Returns a matplotlib figure (the caller saves and closes it).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measure = tables.size[: -len(tables.unit) - 1]
    values = sizes_in(particles, measure, tables.unit)
    samples = tables.samples.set_index("sample")
    names = list(samples.index)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.9 + max(3.2, 0.35 * len(names))),
                                      gridspec_kw={"width_ratios": [1.2, 1]})
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    for i, name in enumerate(names):
        x = np.sort(values[(particles["sample"] == name).to_numpy() & np.isfinite(values)])
        if len(x):
            left.step(x, np.arange(1, len(x) + 1) / len(x), where="post", color=cmap(i % cmap.N),
                      label=f"{name} (n = {len(x)})")
    left.set_xlabel(f"{measure.replace('_', ' ')} ({tables.unit})", fontsize=11)
    left.set_ylabel("fraction of particles at most this size", fontsize=11)
    left.legend(fontsize=9, loc="lower right")
    left.tick_params(labelsize=10)
    y = np.arange(len(names))[::-1]
    for stat, offset, marker in (("mean", 0.12, "o"), ("median", -0.12, "s")):
        point = samples[f"{stat}_{tables.size}"].to_numpy(float)
        low = samples[f"{stat}_{tables.size}_ci_low"].to_numpy(float)
        high = samples[f"{stat}_{tables.size}_ci_high"].to_numpy(float)
        right.errorbar(point, y + offset, xerr=[point - low, high - point], fmt=marker, capsize=3,
                       label=f"{stat} with its {tables.level:.0%} interval")
    right.set_yticks(y, [str(n) for n in names], fontsize=10)
    right.set_xlabel(f"{measure.replace('_', ' ')} ({tables.unit})", fontsize=11)
    right.tick_params(axis="x", labelsize=10)
    right.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    for text in right.get_yticklabels() + [t for t in left.get_legend().get_texts()]:
        text.set_parse_math(False)  # sample names are text, never TeX
    fig.tight_layout()
    return fig


def _run_name(path: Path, taken: set[str]) -> str:
    """A run's sample name: its folder's name, numbered where two runs share one."""
    name = path.resolve().name or str(path)
    count = 2
    unique = name
    while unique in taken:
        unique, count = f"{name} ({count})", count + 1
    return unique


def _common_groups(particles: pd.DataFrame, parts: list[pd.DataFrame], by: str) -> dict[str, str]:
    """Make ``particles.group`` comparable across runs, in place; returns group number -> name.

    Each run numbers its own groups, so across runs a group is its name (``group_name``:
    "spheres", "rods", ...): the names, sorted, are numbered 1..K ('unassigned' and
    'unknown' are left out as 0). With one run and ``by=sample`` the run's own groups stay.
    Without groups in every run, no shares are compared.
    """
    if not all("group_name" in p and "group" in p for p in parts):
        for column in ("group", "group_name"):
            if column in particles:
                del particles[column]
        return {}
    if len(parts) == 1 and by == "sample":
        pairs = particles.loc[particles.group > 0, ["group", "group_name"]].drop_duplicates()
        return {str(int(g)): str(n) for g, n in sorted(zip(pairs.group, pairs.group_name))}
    names = sorted(set(particles.group_name.astype(str)) - {"unassigned", "unknown", "nan"})
    code = {name: k + 1 for k, name in enumerate(names)}
    particles["group"] = particles.group_name.astype(str).map(code).fillna(0).astype(int)
    return {str(k): name for name, k in code.items()}


def compare_runs(runs: Sequence[str | os.PathLike], output: str | os.PathLike, *, by: str = "run", seed: int = 0,
                 n_boot: int = 2000, level: float = 0.95) -> SampleTables:
    """Compare run directories of ``nanoshape analyze`` as samples; write the tables, a figure and compare.json.

    Args:
      runs: run directories (each with particles.parquet and summary.json): two or more, or
        one with ``by=sample``.
      output: the folder for ``micrographs.csv``, ``samples.csv``, ``sample_pairs.csv``,
        ``samples.png`` and ``compare.json``.
      by: ``run`` (each run is one sample, named after its folder) or ``sample`` (each
        run's own samples, named ``<run>/<sample>``).
      seed, n_boot, level: of the bootstrap intervals.

    Raises:
      ValueError: too few runs, ``by`` unknown, or a folder that is not a finished
        run directory (the message names it).
    """
    if by not in ("run", "sample"):
        raise ValueError(f"by must be 'run' or 'sample', got {by!r}")
    if len(runs) < (2 if by == "run" else 1):
        raise ValueError(f"give at least two run directories to compare (got {len(runs)}), or one with by=sample")
    particles_all, fields_all, names = [], [], set()
    for run in map(Path, runs):
        for needed in ("particles.parquet", "summary.json"):
            if not (run / needed).is_file():
                raise ValueError(f"{run}: not a run directory of nanoshape analyze ({needed} is missing)")
        name = _run_name(run, names)
        names.add(name)
        particles = pd.read_parquet(run / "particles.parquet")
        fields = read_run_fields(run)
        if "sample" not in particles:
            particles["sample"] = particles["image"].map(dict(zip(fields["image"], fields["sample"])))
        for frame in (particles, fields):
            frame["sample"] = name if by == "run" else name + "/" + frame["sample"].astype(str)
            frame["image"] = name + "/" + frame["image"].astype(str)
        particles_all.append(particles)
        fields_all.append(fields)
    particles = pd.concat(particles_all, ignore_index=True)
    fields = pd.concat(fields_all, ignore_index=True)
    group_names = _common_groups(particles, particles_all, by)
    tables = sample_tables(particles, fields, seed=seed, n_boot=n_boot, level=level)
    output = Path(output)
    write_sample_tables(tables, output)
    import matplotlib.pyplot as plt

    fig = samples_figure(particles, tables)
    atomic_write(output / "samples.png", lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    info = {"runs": [str(r) for r in runs], "by": by, "unit": tables.unit, "size": tables.size, "seed": seed,
            "n_boot": n_boot, "level": level, "method": correction_statement(tables),
            "groups": group_names,
            "group_note": "each run finds its own groups, so across runs the shares are of group names (share_group_<k>: "
                          "the name groups[k]); within one run (by=sample) of the run's own groups"}
    atomic_write(output / "compare.json", lambda tmp: tmp.write_text(json.dumps(info, indent=1)))
    return tables
