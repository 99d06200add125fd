"""Segmentation scored on every set we hold, beside the plain Otsu + distance-watershed pipeline.

    python experiments/segmentation_eval.py [--out experiments/results/segmentation] [--sets ...]
        [--method nanoshape|classical|plain ...] [--overlays 10] [--model <segmentation model dir>]

Sets (particles cut by the border are ignored on both sides, IoU >= 0.5, see
:mod:`nanoshape.evaluate`):

- ``validation``: the EMPS micrographs of ``../shared/data/emps_train`` and
  ``emps_train_more`` that :func:`nanoshape.evaluate.is_validation` holds out (115 of 366):
  nothing is trained or tuned on them;
- ``train_part``: the other 251 (the detector is trained on them: not a result);
- ``development``: the part of ``train_part`` that :func:`nanoshape.evaluate.is_development`
  marks, on which choices are made with a model trained without it;
- ``emps_train``: the 41 micrographs the classical segmentation was developed on;
- ``rendered``: 12 scenes of touching spheres, cubes, rods, triangles and stars rendered by
  :mod:`nanoshape.scene` with seeds no training scene uses;
- ``rendered_hard``: 12 rendered scenes of porous and textured particles, agglomerates,
  saturated cores, panel letters, scale bars and instrument data bands.

Writes ``summary.csv`` (one row per set and method: pooled F1, precision, recall, per-image
median F1, mean IoU of matches, largest found/annotated count ratio), ``images.csv`` (one
row per image and method) and, with ``--overlays N``, the N worst validation images with the
annotation (red) and the method's particles (green) side by side. Runtime: about 3 minutes
for all sets and the three methods on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from nanoshape.evaluate import match_instances, plain_segmentation

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SETS = ("validation", "train_part", "development", "emps_train", "rendered", "rendered_hard")


def items(which: str):
    """(name, image, truth) of one evaluation set."""
    from nanoshape.segtrain import annotated_micrographs, evaluation_scenes

    if which == "emps_train":
        return annotated_micrographs([DATA / "emps_train"], "all")
    if which in ("validation", "train_part", "development"):
        part = {"train_part": "train"}.get(which, which)
        return annotated_micrographs([DATA / "emps_train", DATA / "emps_train_more"], part)
    return evaluation_scenes(which == "rendered_hard")


def segmenter(method: str, model: str = ""):
    """``plain``, ``classical`` or ``nanoshape`` (the learned detector, shipped or ``model``)."""
    if method == "plain":
        return plain_segmentation
    from nanoshape.segment import SegmentOptions, segment

    options = SegmentOptions(method="classical") if method == "classical" else SegmentOptions(method="learned", model=model)
    return lambda image: segment(image, options).labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="experiments/results/segmentation")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--method", nargs="+", default=["nanoshape", "classical", "plain"])
    parser.add_argument("--overlays", type=int, default=0)
    parser.add_argument("--model", default="", help="segmentation model directory (default: the shipped one)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    methods = {m: segmenter(m, args.model) for m in args.method}
    rows, summary, kept = [], [], {}
    for which in args.sets:
        if which in ("validation", "train_part", "development", "emps_train") and not DATA.is_dir():
            print(f"skipping {which}: {DATA} not found")
            continue
        per_method = {m: [] for m in methods}
        seconds = {m: 0.0 for m in methods}
        for name, image, truth in items(which):
            for method, run in methods.items():
                start = time.perf_counter()
                labels = np.asarray(run(image)).astype(np.int64)
                seconds[method] += time.perf_counter() - start
                score = match_instances(labels, truth)
                row = {"set": which, "method": method, "image": name, **{k: score[k] for k in (
                    "tp", "fp", "fn", "n_pred", "n_true", "precision", "recall", "f1", "mean_iou")}}
                per_method[method].append(row)
                if which == "validation" and args.overlays:
                    kept[(method, name)] = (image, truth, labels)
        for method, table in per_method.items():
            frame = pd.DataFrame(table)
            rows.append(frame)
            if frame.empty:
                continue
            tp, fp, fn = frame.tp.sum(), frame.fp.sum(), frame.fn.sum()
            ratio = (frame.n_pred / frame.n_true.clip(lower=1)).max()
            summary.append({
                "set": which, "method": method, "images": len(frame), "annotated": int(frame.n_true.sum()),
                "found": int(frame.n_pred.sum()), "f1": 2 * tp / max(2 * tp + fp + fn, 1),
                "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1),
                "median_image_f1": float(frame.f1.median()),
                "mean_iou": float(np.average(frame.mean_iou.fillna(0), weights=frame.tp)) if tp else float("nan"),
                "max_count_ratio": float(ratio), "seconds": round(seconds[method], 1),
            })
            print(pd.DataFrame(summary[-1:]).to_string(index=False, header=len(summary) == 1, float_format="%.3f"), flush=True)
    images = pd.concat(rows, ignore_index=True)
    images.to_csv(out / "images.csv", index=False)
    table = pd.DataFrame(summary)
    table.to_csv(out / "summary.csv", index=False, float_format="%.4f")
    print(table.to_string(index=False, float_format="%.3f"))
    if args.overlays:
        worst_overlays(images, kept, out, args.overlays)


def worst_overlays(images: pd.DataFrame, kept: dict, out: Path, n: int) -> None:
    """The n validation images with the lowest F1 of the first method, annotation beside result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    method = images.method.iloc[0]
    val = images[(images.set == "validation") & (images.method == method)]
    val = val.assign(weight=val.fn + val.fp).sort_values(["f1", "weight"], ascending=[True, False]).head(n)
    folder = out / "worst_validation"
    folder.mkdir(exist_ok=True)
    for _, row in val.iterrows():
        image, truth, labels = kept[(method, row.image)]
        grey = (image - np.percentile(image, 0.5)) / max(np.ptp(np.percentile(image, [0.5, 99.5])), 1e-9)
        grey = np.clip(grey, 0, 1)
        panels = []
        for lab, colour in ((truth, (1, 0, 0)), (labels, (0, 1, 0))):
            rgb = np.repeat(grey[..., None], 3, axis=2)
            rgb[find_boundaries(lab, mode="inner")] = colour
            panels.append(rgb)
        fig, axes = plt.subplots(1, 2, figsize=(12, 6 * image.shape[0] / image.shape[1]))
        for ax, panel, title in zip(axes, panels, (f"annotated: {row.n_true}", f"{method}: {row.n_pred}, F1 {row.f1:.2f}")):
            ax.imshow(panel)
            ax.set_title(title)
            ax.axis("off")
        fig.suptitle(row.image)
        fig.tight_layout()
        (folder / f"{row.image}.png").parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(folder / f"{row.image}.png", dpi=80)
        plt.close(fig)


if __name__ == "__main__":
    main()
