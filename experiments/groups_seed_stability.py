"""Does the grouping's choice depend on the random seed? Regroup one run's particles with several seeds (issue 20).

    nanoshape analyze input=../shared/data/emps_train/images output=/tmp/emps_run     (about 2 minutes)
    python experiments/groups_seed_stability.py --run /tmp/emps_run [--seeds 0 1 2 3] [--choice finest_stable]
        [--output runs/groups_seed_stability/finest_stable.json]
        (regrouping only, no analysis: about 15-60 s per seed on a 2-core CPU)

Reads the run's ``particles.parquet`` (or ``.csv``) and groups it with
:func:`nanoshape.groups.cluster_particles` once per ``groups.seed``, with the run's other group
options (``config.yaml``) and ``--choice``. Reported per seed: the chosen method and K, the
halves' agreement, the groups' names and sizes (:func:`nanoshape.groups.describe_groups`),
the grouping stage's wall time, and the reason; then the ARI between the groupings of every
pair of seeds. A grouping is a result only where every seed gives the same one.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import pandas as pd


def main() -> None:
    from sklearn.metrics import adjusted_rand_score

    from nanoshape.groups import GroupOptions, cluster_particles, describe_groups

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run directory of `nanoshape analyze`")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--choice", default="finest_stable")
    parser.add_argument("--stable-seeds", type=int, default=None, help="GroupOptions.stable_seeds (default: the library's)")
    parser.add_argument("--output", type=Path, default=None, help="JSON file for the results")
    args = parser.parse_args()
    parquet = args.run / "particles.parquet"
    table = pd.read_parquet(parquet) if parquet.is_file() else pd.read_csv(args.run / "particles.csv")
    table = table.drop(columns=[c for c in ("group", "group_name", "group_assigned", "unassigned_reason") if c in table])
    base = {}
    config = args.run / "config.yaml"
    if config.is_file():
        import yaml

        groups = (yaml.safe_load(config.read_text()) or {}).get("groups", {}) or {}
        fields = GroupOptions.__dataclass_fields__
        base = {k: tuple(v) if isinstance(v, list) else v for k, v in groups.items() if k in fields}
    base["choice"] = args.choice
    if args.stable_seeds is not None:
        base["stable_seeds"] = args.stable_seeds
    results, labels = [], {}
    for seed in args.seeds:
        options = GroupOptions(**(base | {"seed": seed}))
        start = time.perf_counter()
        grouping = cluster_particles(table, options)
        seconds = time.perf_counter() - start
        labels[seed] = grouping.labels
        names = describe_groups(table, grouping.labels)
        results.append({"seed": seed, "method": grouping.method, "k": grouping.k, "stability": grouping.stability,
                        "seconds": round(seconds, 1),
                        "groups": [f"{row.name} {row.particles}" for row in names.itertuples()],
                        "reason": grouping.reason})
        print(f"seed {seed}: {grouping.method} K = {grouping.k}, halves {grouping.stability:.3f}, {seconds:.1f} s: "
              + ", ".join(results[-1]["groups"]), flush=True)
    pairs = {f"{a}-{b}": round(adjusted_rand_score(labels[a], labels[b]), 3) for a, b in itertools.combinations(args.seeds, 2)}
    print("ARI between seeds' groupings:", pairs)
    out = {"run": str(args.run), "options": {k: v for k, v in base.items()}, "per_seed": results,
           "ari_between_seeds": pairs}
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(out, indent=1, default=str))
        print("written to", args.output)


if __name__ == "__main__":
    main()
