"""Shape groups of real particles: the hand-drawn masks of emps_train, pooled (issue 20).

    python experiments/groups_emps_masks.py [--data ../shared/data/emps_train] [--output runs/groups_emps_masks]
        (about 1 minute on a 2-core CPU)

No segmentation and no CNN: every particle is a hand-drawn instance of the 41 EMPS
micrographs (particles cut by the border and those under ``--min-diameter-px`` across left
out, and the images labelled ``mixed``), measured with :func:`nanoshape.features.measure`,
so what is measured is the grouping alone, on real shapes. The only labels are per image
(``shape_guess`` in index.csv: the dominant shape, by eye), so the adjusted Rand index
against them is a coarse figure (an image of cubes holds some irregular particles too).
Sizes are left out of the grouping (``use_size=False``): the micrographs have different,
mostly unknown pixel sizes.

Reported: the groups found the seed paper's way (classic features, K by the silhouette), the
current default, the default before the affine harmonics and the mixture with K by BIC,
their ARI against the image labels, crosstabs and group names; and, as
an upper bound on what the descriptors carry, the accuracy of an RBF SVM predicting the
image label from them with 5-fold cross-validation grouped by image (no image in both
training and test).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd


def particles(data: Path, min_diameter_px: float) -> pd.DataFrame:
    from skimage.io import imread

    from nanoshape.features import measure

    index = pd.read_csv(data / "index.csv")
    tables = []
    for _, row in index.iterrows():
        mask = imread(data / "masks" / f"{row.id}.png")
        mask = mask[..., 0] if mask.ndim == 3 else mask
        table = measure(mask.astype(np.int32))
        h, w = mask.shape
        inside = ((table.bbox_x0_px > 0) & (table.bbox_y0_px > 0) & (table.bbox_x0_px + table.bbox_width_px < w)
                  & (table.bbox_y0_px + table.bbox_height_px < h))
        table = table[inside & (table.equivalent_diameter_px >= min_diameter_px)].copy()
        table["image"], table["shape_guess"] = row.id, row.shape_guess
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    return table[table.shape_guess != "mixed"].reset_index(drop=True)


def separability(table: pd.DataFrame, columns: tuple[str, ...]) -> float:
    """5-fold CV accuracy (folds by image) of an RBF SVM predicting the image label."""
    from sklearn.model_selection import GroupKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from nanoshape.groups import design_matrix

    x = design_matrix(table, columns)
    model = make_pipeline(StandardScaler(), SVC(kernel="rbf", class_weight="balanced"))
    return float(cross_val_score(model, x, table.shape_guess, groups=table.image, cv=GroupKFold(5)).mean())


def main() -> None:
    from sklearn.metrics import adjusted_rand_score

    from nanoshape.groups import AFFINE_COLUMNS, ANGULAR_COLUMNS, GroupOptions, cluster_particles, dataset_columns, describe_groups

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/emps_train"))
    parser.add_argument("--output", type=Path, default=Path("runs/groups_emps_masks"))
    parser.add_argument("--min-diameter-px", type=float, default=20.0)
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    table = particles(args.data, args.min_diameter_px)
    summary = {"particles": len(table), "images": int(table.image.nunique()),
               "particles_by_label": table.shape_guess.value_counts().to_dict(), "ways": {}}
    ways = {"seed paper (classic features, silhouette)":
            (table.drop(columns=list(ANGULAR_COLUMNS) + list(AFFINE_COLUMNS)),
             GroupOptions(choice="silhouette", methods=("kmeans", "gmm", "ward"), feature_set="classic", use_size=False)),
            "default (shape features with affine harmonics, HDBSCAN)": (table, GroupOptions(use_size=False)),
            "raw angular harmonics, HDBSCAN (the default before the affine harmonics)":
            (table.drop(columns=list(AFFINE_COLUMNS)), GroupOptions(use_size=False)),
            "shape features with affine harmonics, Gaussian mixture with K by BIC":
            (table, GroupOptions(use_size=False, choice="bic"))}
    pd.set_option("display.width", 200)
    for name, (data, options) in ways.items():
        grouping = cluster_particles(data, options)
        names = describe_groups(table, grouping.labels)
        summary["ways"][name] = {
            "k": grouping.k, "ari_vs_image_label": round(adjusted_rand_score(table.shape_guess, grouping.labels), 4),
            "groups": names.description.tolist(),
            "svm_cv_accuracy_vs_image_label": round(separability(data, dataset_columns(data, "features", options)), 4)}
        print(f"== {name}: K = {grouping.k}")
        print(pd.crosstab(table.shape_guess, grouping.labels).to_string())
        print(names[["group", "description"]].to_string(index=False))
    (args.output / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
