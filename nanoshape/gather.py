"""The end of a run: the finished micrographs' parts gathered into the run's tables
(particles.csv/.parquet, dropped.csv, columns.csv), the shape groups and their classifier
(groups/), and summary.json."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nanoshape.columns import describe_columns, upgrade_columns
from nanoshape.io import write_csv
from nanoshape.progress import report_progress as _report
from nanoshape.provenance import write_parquet
from nanoshape.rundir import atomic_write as _atomic_write

if TYPE_CHECKING:
    from nanoshape.pipeline import AnalyzeOptions

__all__ = ["gather_run"]


def _group(output: Path, particles: pd.DataFrame, options: "AnalyzeOptions", progress=None) -> dict[str, Any]:
    """Shape groups of the run's particles and the classifier trained on them (groups/)."""
    from nanoshape.groups import cluster_particles, save_classifier, train_classifier, unassigned_reasons

    folder = output / "groups"
    folder.mkdir(exist_ok=True)
    if options.classifier:
        return _classify(folder, particles, options.classifier)
    try:
        grouping = cluster_particles(particles, options.groups,
                                     progress=(lambda done, total: _report(progress, "group", done, total))
                                     if progress else None)
    except ValueError as error:
        particles["group"] = 0
        flagged = unassigned_reasons(particles)
        _set_reasons(particles, flagged.mask(flagged == "", "the run's particles were not grouped"))
        return {"groups": 0, "groups_skipped_reason": str(error)}
    particles["group"] = grouping.labels
    if grouping.assigned is not None:
        particles["group_assigned"] = grouping.assigned
    names = _name_groups(folder, particles)
    _set_reasons(particles, unassigned_reasons(particles, grouping.labels))
    _atomic_write(folder / "comparison.csv", lambda tmp: grouping.comparison.to_csv(tmp, index=False))
    _atomic_write(folder / "silhouette_by_k.csv", lambda tmp: grouping.silhouette_by_k.to_csv(tmp, index=False))
    info = {"groups": grouping.k, "dataset": grouping.dataset, "method": grouping.method, "reason": grouping.reason,
            "stability_halves_ari": grouping.stability,
            "clustered_particles": int((grouping.labels > 0).sum() - (0 if grouping.assigned is None else grouping.assigned.sum())),
            "assigned_particles": 0 if grouping.assigned is None else int(grouping.assigned.sum()),
            "columns": list(grouping.columns),
            "group_sizes": {str(g): int(n) for g, n in zip(*np.unique(grouping.labels[grouping.labels > 0], return_counts=True))},
            "group_names": names, "unassigned": _reason_counts(particles)}
    _atomic_write(folder / "grouping.json", lambda tmp: tmp.write_text(json.dumps(info, indent=1)))
    out = {"groups": grouping.k, "grouping": info}
    try:
        _report(progress, "classifier", 0, 1)
        classifier = train_classifier(particles, grouping.labels, grouping.columns, options.groups)
    except ValueError as error:
        out["classifier_skipped_reason"] = str(error)
        return out
    save_classifier(classifier, folder / "classifier.skops")
    _report(progress, "classifier", 1, 1)
    out["classifier"] = {k: v for k, v in classifier.summary().items() if k != "confusion"}
    return out


def _name_groups(folder: Path, particles: pd.DataFrame) -> dict[str, str]:
    """Name the groups of ``particles.group`` (column ``group_name``; ``unassigned`` for group 0, ``unknown``
    for particles a classifier found far from all its groups), write
    groups/groups.csv and return each group's description in words."""
    from nanoshape.groups import describe_groups

    table = describe_groups(particles, particles.group.to_numpy())
    names = dict(zip(table.group, table.name)) if len(table) else {}
    particles["group_name"] = [names.get(g, "unknown" if g < 0 else "unassigned") for g in particles.group]
    _atomic_write(folder / "groups.csv", lambda tmp: table.to_csv(tmp, index=False))
    return {str(g): d for g, d in zip(table.group, table.description)} if len(table) else {}


def _set_reasons(particles: pd.DataFrame, reasons: pd.Series) -> None:
    """The ``unassigned_reason`` column: missing for a grouped particle (as ``segmentation_flag`` without a flag)."""
    particles["unassigned_reason"] = pd.Series(reasons.where(reasons != ""), index=particles.index, dtype="str")


def _reason_counts(particles: pd.DataFrame) -> dict[str, int]:
    """How many particles were left out of the groups, by reason."""
    return {str(k): int(v) for k, v in particles["unassigned_reason"].dropna().value_counts().items()}


def _classify(folder: Path, particles: pd.DataFrame, path: str) -> dict[str, Any]:
    """Sort particles into the groups of a saved classifier (groups/, like a grouping)."""
    from nanoshape.groups import UNKNOWN, load_classifier, unassigned_reasons

    classifier = load_classifier(path)
    labels = classifier.predict(particles)
    labels[(unassigned_reasons(particles) != "").to_numpy()] = 0  # fragments and noise are sorted into no group
    particles["group"] = labels
    particles["group_distance"] = classifier.distance(particles)
    sizes = {str(g): int((labels == g).sum()) for g in classifier.groups}
    unknown = (f"; {int((labels == UNKNOWN).sum())} particle(s) farther than {classifier.unknown_distance:.2f} from "
               f"every group (group_distance) are unknown (group {UNKNOWN})"
               if classifier.unknown_distance is not None else "")
    info = {"groups": len(classifier.groups), "dataset": "classifier", "method": "svm",
            "reason": f"particles sorted into the {len(classifier.groups)} groups of the classifier {path} "
                      f"(its test accuracy on the run it was trained on: {classifier.test_accuracy:.3f}); "
                      f"{int((labels == 0).sum())} particle(s) flagged or lacking a predictor left ungrouped "
                      f"(group 0, unassigned_reason){unknown}",
            "unknown": int((labels == UNKNOWN).sum()),
            "columns": list(classifier.columns), "group_sizes": sizes, "group_names": _name_groups(folder, particles),
            "classifier": str(path)}
    _set_reasons(particles, unassigned_reasons(particles, labels))
    info["unassigned"] = _reason_counts(particles)
    _atomic_write(folder / "grouping.json", lambda tmp: tmp.write_text(json.dumps(info, indent=1)))
    _atomic_write(folder / "comparison.csv",
                  lambda tmp: pd.DataFrame([{"dataset": "classifier", "method": "svm", "k": len(classifier.groups)}]).to_csv(tmp, index=False))
    return {"groups": len(classifier.groups), "grouping": info}


def gather_run(output: Path, stems: list[str], skipped: list[dict[str, str]], resumed: int, seconds: float,
               options: "AnalyzeOptions", notes: list[str] = (), progress=None,
               facts: dict[str, Any] | None = None) -> dict[str, Any]:
    """Concatenate the finished parts into the run's tables and write summary.json and columns.csv.

    ``notes``: warnings about the run as a whole (inputs passed over, parts redone);
    ``facts``: the run's :func:`nanoshape.provenance.provenance`, written into summary.json
    and the schema metadata of particles.parquet.
    """
    tables, dropped, infos = [], [], []
    _report(progress, "gather", 0, 1)
    # groups/ is redone (or, with group=false, dropped) in every run: nothing of an earlier grouping may stay
    shutil.rmtree(output / "groups", ignore_errors=True)
    for stem in stems:
        part = output / "parts" / "particles" / f"{stem}.parquet"
        if not part.exists():
            continue
        tables.append(upgrade_columns(pd.read_parquet(part)))  # parts of a run resumed from an older version
        drop_part = output / "parts" / "dropped" / f"{stem}.parquet"
        if drop_part.exists():
            dropped.append(pd.read_parquet(drop_part))
        infos.append(json.loads((output / "parts" / "info" / f"{stem}.json").read_text()))
    particles = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["image", "particle_id"])
    samples = _samples(infos, options)
    particles["sample"] = particles["image"].map(samples).astype("str")
    grouped = _group(output, particles, options, progress) if options.group and len(particles) else {}
    _atomic_write(output / "particles.csv", lambda tmp: write_csv(particles, tmp))
    _atomic_write(output / "particles.parquet", lambda tmp: write_parquet(particles, tmp, facts))
    _atomic_write(output / "columns.csv", lambda tmp: describe_columns(particles.columns).to_csv(tmp, index=False))
    dropped_table = pd.concat(dropped, ignore_index=True) if dropped else pd.DataFrame()
    _atomic_write(output / "dropped.csv", lambda tmp: write_csv(dropped_table, tmp))

    warnings = list(notes)
    no_scale = [info["image"] for info in infos if info["pixel_size_nm"] is None]
    if no_scale:
        warnings.append(
            f"{len(no_scale)} micrograph(s) without a pixel size (sizes in px, columns ending _px): "
            + ", ".join(no_scale[:20]) + (" ..." if len(no_scale) > 20 else "")
        )
    for info in infos:
        warnings.extend(f"{info['image']}: {w}" for w in info.get("warnings", []))
    size = _size_statistics(particles)
    summary = {
        "output": str(output),
        **({"provenance": facts} if facts is not None else {}),
        "files_read": [info["path"] for info in infos],
        "files_skipped": skipped,
        "micrographs_analysed": len(infos),
        "micrographs_resumed": resumed,
        "particles": int(len(particles)),
        "particles_dropped": int(len(dropped_table)),
        "particles_per_image": {info["image"]: info["particles"] for info in infos},
        "samples": samples,
        "pixel_sizes": {info["image"]: {"pixel_size_nm": info["pixel_size_nm"], "pixel_size_source": info["pixel_size_source"],
                                        **({"scale_bar": info["scale_bar"]} if info.get("scale_bar") else {})}
                        for info in infos},
        **size,
        **grouped,
        **{f"{column}_median": float(particles[column].median()) for column in ("jaccard_cnn", "jaccard_refined")
           if column in particles and particles[column].notna().any()},
        "warnings": warnings,
        "timings_s": {
            "total": seconds,
            **{k: float(sum(info["timings"].get(k, 0.0) for info in infos)) for k in ("segment_s", "features_s", "crop_s", "cnn_s", "image_fit_s", "refine_s")},
        },
    }
    _atomic_write(output / "summary.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2, default=_json_default)))
    _report(progress, "gather", 1, 1)
    return summary


def _samples(infos: list[dict[str, Any]], options: "AnalyzeOptions") -> dict[str, str]:
    """Each analysed micrograph's sample (``samples=`` file, else its folder's name)."""
    from nanoshape.samples import assign_samples, read_sample_table

    table = read_sample_table(options.samples) if options.samples else None
    return assign_samples({info["image"]: info["path"] for info in infos}, table)


def _size_statistics(particles: pd.DataFrame) -> dict[str, Any]:
    """Ensemble mean, std and polydispersity ratio (``cv_``: std / mean) of the major axis, in nm where known."""
    out: dict[str, Any] = {}
    for unit in ("nm", "px"):
        column = f"major_axis_{unit}"
        if column in particles and particles[column].notna().any():
            values = particles[column].dropna().to_numpy(float)
            mean, std = float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0
            out[f"major_axis_mean_{unit}"] = mean
            out[f"major_axis_std_{unit}"] = std
            out[f"cv_{column}"] = std / mean if mean > 0 else math.nan
            out[f"particles_measured_{unit}"] = int(len(values))
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
