"""Grouping and the group classifier at 2k, 5k and 20k particles: this branch against a baseline commit.

    python benchmarks/bench_groups.py RUN/particles.parquet [--baseline REV] [--sizes 2000 5000 20606]
        (7 minutes on a 2-core CPU, 4 of them the baseline's classifier at 20k)

What ``nanoshape analyze`` does at the end of a run (:func:`nanoshape.gather._group`):
:func:`nanoshape.groups.cluster_particles` then :func:`nanoshape.groups.train_classifier` on its
labels, with the default :class:`~nanoshape.groups.GroupOptions`. The baseline is
``nanoshape/groups.py`` as it is at ``REV`` (default: where this branch left main), loaded from git
into the same process, so both run on the same table under the same load. Tables of n particles
are seeded samples of the run's particles (drawn with replacement, each descriptor perturbed by
1 % so that no two rows are equal, where the run has fewer than n). Each figure is one wall time
(the baseline at 20k takes minutes). Also printed: whether the ``group`` column of both is the same.
Benchmarks never fail: they report.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _common import command, machine

REPOSITORY = Path(__file__).resolve().parents[1]


def baseline_module(rev: str):
    """``nanoshape/groups.py`` at ``rev`` as a module of its own (it imports only unchanged modules)."""
    source = subprocess.run(["git", "-C", str(REPOSITORY), "show", f"{rev}:nanoshape/groups.py"],
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "groups_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("nanoshape._groups_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def table_of(particles: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """n particles of the run: a seeded sample, perturbed copies where the run has fewer than n."""
    rng = np.random.default_rng(seed)
    if n <= len(particles):
        return particles.iloc[np.sort(rng.choice(len(particles), n, replace=False))].reset_index(drop=True)
    table = particles.iloc[rng.integers(0, len(particles), n)].reset_index(drop=True).copy()
    for column in table.select_dtypes("float").columns:
        if column not in ("d", "phi_rad"):
            table[column] *= np.exp(rng.normal(0, 0.01, n))
    return table


def run(module, table: pd.DataFrame) -> tuple[float, float, np.ndarray]:
    """Seconds of the grouping, seconds of the classifier, and the group of each particle."""
    start = time.perf_counter()
    grouping = module.cluster_particles(table, module.GroupOptions())
    middle = time.perf_counter()
    module.train_classifier(table, grouping.labels, grouping.columns, module.GroupOptions())
    return middle - start, time.perf_counter() - middle, grouping.labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("particles", help="particles.parquet of a run with fitted shapes")
    parser.add_argument("--baseline", default=None, help="git revision of the baseline (default: merge-base with main)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 20606])
    args = parser.parse_args()
    rev = args.baseline or subprocess.run(["git", "-C", str(REPOSITORY), "merge-base", "HEAD", "main"], check=True,
                                          capture_output=True, text=True).stdout.strip()
    from sklearn.metrics import adjusted_rand_score

    import nanoshape.groups as new

    old = baseline_module(rev)
    particles = pd.read_parquet(args.particles).drop(columns=["group", "group_name", "group_assigned"], errors="ignore")
    print(machine())
    print(command())
    print(f"table: {args.particles} ({len(particles):,} particles); baseline groups.py at {rev[:10]}")
    print("| particles | baseline grouping + classifier (s) | this branch (s) | speed-up | same groups |")
    print("|---:|---:|---:|---:|---|")
    for module in (old, new):  # each compiles its outline spectrum once, outside the timings
        run(module, table_of(particles, 300))
    for n in args.sizes:
        table = table_of(particles, n)
        old_group, old_svm, old_labels = run(old, table)
        new_group, new_svm, new_labels = run(new, table)
        same = "yes" if np.array_equal(old_labels, new_labels) else f"no: ARI {adjusted_rand_score(old_labels, new_labels):.3f}"
        print(f"| {n:,} | {old_group:.1f} + {old_svm:.1f} = {old_group + old_svm:.1f} | "
              f"{new_group:.1f} + {new_svm:.1f} = {new_group + new_svm:.1f} | "
              f"{(old_group + old_svm) / (new_group + new_svm):.1f}x | {same} |", flush=True)


if __name__ == "__main__":
    main()
