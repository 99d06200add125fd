"""Shape groups against by-eye labels of real particles (issue 20, item 5b).

    python experiments/groups_labelled_emps.py sheets --source emps_train [--output runs/groups_labelled_emps]
    python experiments/groups_labelled_emps.py sheets --source emps_train_more
        (the first cuts montages in seconds; the second first segments 8 emps_train_more
         micrographs with `nanoshape analyze`, a few minutes on a 2-core CPU)
    python experiments/groups_labelled_emps.py score [--output runs/groups_labelled_emps]
        (fits each labelled particle's shape, CNN start + refinement, and groups each part:
         ~2 minutes on a 2-core CPU)

The labels (``experiments/groups_labelled_emps.csv``) were given by eye, one per particle, by
looking at the numbered montage sheets this script cuts (``sheets``): each cell is a crop of
the micrograph around one particle with its outline drawn in red. Classes: sphere, cube,
rod, triangle, plate (hexagonal or other flat polygon), star (multipods too), irregular,
not_particle (a glyph, a fragment, an aggregate drawn as one), unsure. The CSV holds ids
only (source, image, particle id, centroid); the pixels are publishers' figures and stay out
of the repository: ``sheets`` regenerates the montages from the data folders.

Particles: the hand-drawn instance masks of every emps_train micrograph (up to
``PER_IMAGE`` particles each), and, for variety, nanoshape's own segmentation (``nanoshape
analyze``, default options) of 8 bright-field or bright-particle emps_train_more micrographs
(:data:`MORE_IMAGES`, chosen by eye from the 30 candidates with 15+ instances and median
area 300-8000 px first by SHA-256 of their id) (up to ``PER_IMAGE_MORE`` each). In each
image only particles >= ``MIN_DIAMETER_PX`` across and not cut by the border, a seeded
sample (seed from the id's hash).

Split rule (fixed before any label was given): micrographs are grouped into strata
(emps_train by its index's ``shape_guess``; the emps_train_more ones one stratum), sorted
within their stratum by the SHA-256 of their id, and alternate: rank 0, 2, 4, ... is
``tuning``, 1, 3, 5, ... ``validation``. Changes to the grouping may be tuned on the tuning
part; the validation part is only scored.

``score`` measures every eligible particle of the labelled micrographs on the mask it was
labelled on (:func:`nanoshape.features.measure`), fits its shape as the analysis does
(:func:`nanoshape.fit` on the crop of the micrograph: the shipped CNN's guess refined through
the renderer), and groups each part's particles, all of them, as a run would, with
:func:`nanoshape.groups.cluster_particles` (sizes left out: most micrographs have no pixel
size). Reported per part, over its labelled particles with a shape class (not
``not_particle``, not ``unsure``): the ARI between groups and by-eye classes, and per class
the share of its particles in its largest group; and the groups' names. Outputs in
``--output``: ``fits/`` (measured + fitted, cached per micrograph), ``score.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
LABELS = Path(__file__).with_suffix(".csv")
#: emps_train_more micrographs segmented by nanoshape (dark particles on a light film, and one of bright cubes)
MORE_IMAGES = ("406975041a", "4545280c2b", "3ac1920a79", "b3e7900e39", "173c98ef82", "fb1eb65fe5", "97e645b56e",
               "fd1f58d925")
PER_IMAGE, PER_IMAGE_MORE, MIN_DIAMETER_PX = 8, 10, 20.0
CLASSES = ("sphere", "cube", "rod", "triangle", "plate", "star", "irregular", "not_particle", "unsure")
SHAPE_CLASSES = CLASSES[:7]
CELL, COLUMNS, ROWS = 128, 8, 6


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def split(images: pd.DataFrame) -> pd.Series:
    """``tuning``/``validation`` per row of ``images`` (columns ``image``, ``stratum``): alternate ranks by
    SHA-256 of the id within each stratum."""
    rank = images.assign(h=images.image.map(_hash)).groupby("stratum").h.rank(method="first").astype(int) - 1
    return pd.Series(np.where(rank % 2 == 0, "tuning", "validation"), index=images.index)


def _grey(path: Path) -> np.ndarray:
    from skimage.io import imread

    image = imread(path)
    if image.ndim == 3:
        image = image[..., :3].mean(axis=2)
    return image.astype(np.float32)


def _mask(source: str, image: str, run: Path) -> np.ndarray:
    from skimage.io import imread

    if source == "emps_train":
        mask = imread(DATA / "emps_train" / "masks" / f"{image}.png")
        return (mask[..., 0] if mask.ndim == 3 else mask).astype(np.int32)
    return imread(run / "segmentation" / "labels" / f"{image}.tif").astype(np.int32)


def segment_more(run: Path) -> None:
    """nanoshape's own segmentation of :data:`MORE_IMAGES` (``nanoshape analyze``, default options)."""
    import nanoshape

    folder = run / "more_images"
    folder.mkdir(parents=True, exist_ok=True)
    for image in MORE_IMAGES:
        link = folder / f"{image}.png"
        if not link.exists():
            link.symlink_to((DATA / "emps_train_more" / "images" / f"{image}.png").resolve())
    if not (run / "segmentation" / "complete.json").exists():
        nanoshape.analyze(str(folder), output=str(run / "segmentation"), group=False)


def candidates(run: Path, source: str) -> pd.DataFrame:
    """Every particle of ``source`` to be labelled: number, source, image, stratum, part, particle_id, centroid, size."""
    from nanoshape.features import measure

    if source == "emps_train":
        index = pd.read_csv(DATA / "emps_train" / "index.csv")
        images = pd.DataFrame({"source": source, "image": index.id, "stratum": index.shape_guess})
    else:
        images = pd.DataFrame({"source": source, "image": MORE_IMAGES, "stratum": "more"})
    images["part"] = split(images)
    rows = []
    for _, item in images.iterrows():
        mask = _mask(item.source, item.image, run)
        table = measure(mask)
        table = table[_eligible(table, mask.shape)]
        n = PER_IMAGE if item.source == "emps_train" else PER_IMAGE_MORE
        rng = np.random.default_rng(int(_hash(item.image)[:8], 16))
        chosen = np.sort(rng.choice(len(table), min(n, len(table)), replace=False))
        part = table.iloc[chosen]
        rows.append(pd.DataFrame({"source": item.source, "image": item.image, "stratum": item.stratum,
                                  "part": item.part, "particle_id": part.particle_id.to_numpy(),
                                  "centroid_x_px": part.centroid_x_px.round(1).to_numpy(),
                                  "centroid_y_px": part.centroid_y_px.round(1).to_numpy(),
                                  "equivalent_diameter_px": part.equivalent_diameter_px.round(1).to_numpy()}))
    out = pd.concat(rows, ignore_index=True)
    # shuffled across images (seeded), so that a sheet mixes micrographs and labels are given particle by particle
    out = out.iloc[np.random.default_rng(20).permutation(len(out))].reset_index(drop=True)
    out.insert(0, "number", [f"{'t' if source == 'emps_train' else 'm'}{i:03d}" for i in range(len(out))])
    return out


def sheets(run: Path, source: str) -> None:
    """Numbered montage sheets of ``source`` (``run/sheets/<source>_XX.png``) and ``run/particles_<source>.csv``
    (number -> particle)."""
    from PIL import Image, ImageDraw
    from skimage.measure import find_contours
    from skimage.transform import resize

    if source == "emps_train_more":
        segment_more(run)
    table = candidates(run, source)
    table.to_csv(run / f"particles_{source}.csv", index=False)
    (run / "sheets").mkdir(exist_ok=True)
    per_sheet = COLUMNS * ROWS
    cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for first in range(0, len(table), per_sheet):
        sheet = Image.new("RGB", (COLUMNS * CELL, ROWS * CELL), "white")
        draw = ImageDraw.Draw(sheet)
        for cell, (_, row) in enumerate(table.iloc[first:first + per_sheet].iterrows()):
            key = (row.source, row.image)
            if key not in cache:
                folder = "emps_train" if row.source == "emps_train" else "emps_train_more"
                cache[key] = (_grey(DATA / folder / "images" / f"{row.image}.png"), _mask(row.source, row.image, run))
            image, labels = cache[key]
            ys, xs = np.nonzero(labels == row.particle_id)
            side = int(max(np.ptp(ys), np.ptp(xs)) * 1.8 + 12)
            cy, cx = (ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2
            y0, x0 = cy - side // 2, cx - side // 2
            pad = side
            window = np.pad(image, pad, mode="edge")[y0 + pad:y0 + pad + side, x0 + pad:x0 + pad + side]
            inside = np.pad(labels == row.particle_id, pad)[y0 + pad:y0 + pad + side, x0 + pad:x0 + pad + side]
            lo, hi = np.percentile(window, (1, 99))
            grey = np.clip((resize(window, (CELL - 16, CELL - 16), order=1) - lo) / max(hi - lo, 1e-6), 0, 1)
            tile = Image.fromarray((grey * 255).astype(np.uint8)).convert("RGB")
            tile_draw = ImageDraw.Draw(tile)
            for contour in find_contours(resize(inside.astype(float), (CELL - 16, CELL - 16), order=1), 0.5):
                tile_draw.line([(float(x), float(y)) for y, x in contour], fill=(255, 0, 0), width=1)
            x, y = (cell % COLUMNS) * CELL, (cell // COLUMNS) * CELL
            sheet.paste(tile, (x + 8, y + 14))
            draw.text((x + 8, y + 1), str(row.number), fill=(0, 0, 200))
        sheet.save(run / "sheets" / f"{source}_{first // per_sheet:02d}.png")
    print(f"{len(table)} particles on {int(np.ceil(len(table) / per_sheet))} sheets in {run / 'sheets'}")


def _eligible(table: pd.DataFrame, shape: tuple[int, int]) -> pd.Series:
    """Particles >= MIN_DIAMETER_PX across and not cut by the micrograph's border."""
    h, w = shape
    inside = ((table.bbox_x0_px > 0) & (table.bbox_y0_px > 0) & (table.bbox_x0_px + table.bbox_width_px < w)
              & (table.bbox_y0_px + table.bbox_height_px < h))
    return inside & (table.equivalent_diameter_px >= MIN_DIAMETER_PX)


def measured_table(run: Path) -> pd.DataFrame:
    """Every eligible particle of every labelled micrograph (not only the labelled ones: a run groups all
    its particles), measured on its mask, with its fitted shape and its by-eye label where it has one
    (``label``; NaN for the others). Each micrograph's measurements and fits are cached in
    run/fits/<image>.parquet."""
    labels = pd.read_csv(LABELS)
    (run / "fits").mkdir(exist_ok=True)
    import nanoshape
    from nanoshape.crop import crop_labels
    from nanoshape.features import measure

    tables = []
    for (source, image), rows in labels.groupby(["source", "image"], sort=False):
        folder = "emps_train" if source == "emps_train" else "emps_train_more"
        pixels = _grey(DATA / folder / "images" / f"{image}.png")
        mask = _mask(source, image, run)
        measured = measure(mask, pixels)
        measured = measured[_eligible(measured, mask.shape)].reset_index(drop=True)
        by_id = measured.set_index("particle_id")
        ids = rows.particle_id.to_numpy()
        missing = np.setdiff1d(ids, by_id.index)
        if len(missing):
            raise ValueError(f"{source}/{image}: labelled particles {missing.tolist()} are not in the mask")
        # the recorded centroid checks that a re-segmentation still gives each id the same particle
        moved = np.hypot(by_id.loc[ids, "centroid_x_px"].to_numpy() - rows.centroid_x_px.to_numpy(),
                         by_id.loc[ids, "centroid_y_px"].to_numpy() - rows.centroid_y_px.to_numpy())
        if (moved > 2).any():
            raise ValueError(f"{source}/{image}: particles {ids[moved > 2].tolist()} are not where they were labelled "
                             f"(the segmentation changed; rerun `sheets` and relabel them)")
        cached = run / "fits" / f"{image}.parquet"
        if cached.exists():
            measured = pd.read_parquet(cached)
        else:
            fitted = nanoshape.fit(crop_labels(pixels, mask, measured.particle_id.to_numpy()))
            for column in ("p", "d", "l_ratio", "jaccard_refined"):
                measured[column] = fitted[column].to_numpy()
            measured["phi_rad"] = fitted["phi"].to_numpy()
            measured.to_parquet(cached)
        measured.insert(0, "image", image)
        measured.insert(0, "source", source)
        measured["part"] = rows.part.iloc[0]
        measured["label"] = measured.particle_id.map(rows.set_index("particle_id").label)
        tables.append(measured)
    return pd.concat(tables, ignore_index=True)


def score_part(table: pd.DataFrame, options) -> dict:
    """Group every particle of ``table``; ARI and per-class shares over its labelled particles."""
    from sklearn.metrics import adjusted_rand_score

    from nanoshape.groups import cluster_particles, describe_groups

    grouping = cluster_particles(table, options)
    labelled = table.label.notna().to_numpy()
    truth = table.label.to_numpy()[labelled]
    labels = grouping.labels[labelled]
    shaped = np.isin(truth, SHAPE_CLASSES)
    shares = {}
    for name in SHAPE_CLASSES:
        members = labels[truth == name]
        if len(members):
            shares[name] = {"particles": int(len(members)),
                            "share_in_one_group": round(float(np.bincount(members).max() / len(members)), 3),
                            "largest_group": int(np.bincount(members).argmax())}
    names = describe_groups(table, grouping.labels)
    return {"particles_grouped": int(len(table)), "labelled": int(labelled.sum()), "with_shape_class": int(shaped.sum()),
            "k": int(grouping.k), "dataset": grouping.dataset, "method": grouping.method,
            "ari": round(float(adjusted_rand_score(truth[shaped], labels[shaped])), 4),
            "classes": shares, "groups": names.description.tolist(),
            "crosstab": pd.crosstab(truth, labels).to_dict(orient="index")}


def score(run: Path, features_only: bool, without_affine: bool, choice: str | None, name: str) -> None:
    from nanoshape.groups import GroupOptions

    table = measured_table(run)
    options = GroupOptions(use_size=False, **({"choice": choice} if choice else {}))
    if features_only:
        table = table.drop(columns=["p", "d", "l_ratio", "phi_rad"])
    if without_affine:  # the mask's raw angular harmonics, as grouping used them before the affine ones existed
        table = table.drop(columns=[c for c in table if c.startswith("affine_harmonic_")])
    labelled = table[table.label.notna()]
    out = {"labels": labelled.label.value_counts().to_dict(),
           "labels_by_part": pd.crosstab(labelled.label, labelled.part).to_dict(orient="index")}
    for part in ("tuning", "validation"):
        out[part] = score_part(table[table.part == part].reset_index(drop=True), options)
        print(f"== {part}: ARI {out[part]['ari']}, K = {out[part]['k']} ({out[part]['dataset']}, {out[part]['method']})")
        print(pd.DataFrame(out[part]["crosstab"]).T.fillna(0).astype(int).to_string())
        print("\n".join(out[part]["groups"]))
    out["options"] = {"features_only": features_only, "without_affine": without_affine, "choice": options.choice}
    (run / f"score{name}.json").write_text(json.dumps(out, indent=1, default=int))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("sheets", "score"))
    parser.add_argument("--source", choices=("emps_train", "emps_train_more"), default="emps_train",
                        help="sheets: whose particles")
    parser.add_argument("--output", type=Path, default=Path("runs/groups_labelled_emps"))
    parser.add_argument("--features-only", action="store_true", help="score: group without the fitted shapes")
    parser.add_argument("--without-affine", action="store_true",
                        help="score: group on the raw angular harmonics (the grouping before the affine harmonics)")
    parser.add_argument("--choice", default=None, help="score: GroupOptions.choice (default: the library's)")
    parser.add_argument("--name", default="", help="score: written to score<name>.json")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    if args.command == "sheets":
        sheets(args.output, args.source)
    else:
        score(args.output, args.features_only, args.without_affine, args.choice, args.name)


if __name__ == "__main__":
    main()
