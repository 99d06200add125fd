"""Particle sizes from the mask and from the image fit, against the truth, under several imaging models.

    python experiments/fit_sizes.py [--scenes 4] [--out experiments/results/fit_sizes]

A mask's size depends on where its edge was cut: a particle whose projected thickness falls
towards its rim (a sphere, a dome) or whose edge is blurred loses its faint rim to the
background. The image fit (:mod:`nanoshape.imagefit`) models the thickness profile, the
blur and the contrast, and places the edge where its model of the particle puts it. This
script renders scenes of spheres, cubes, rods and triangles (30-60 px across) under
imaging variants that differ from the renderer's defaults, analyses them as
``nanoshape analyze`` does (segmentation, features, crops, CNN, image fit), matches the
found particles to the true ones (IoU >= 0.5, border particles ignored) and reports, per
variant, the median signed and absolute error of the major axis from the mask
(``major_axis``) and from the fit (``major_axis_fit``), relative to the true second-moment
major axis of each particle's silhouette:

- ``default``: the renderer's random imaging;
- ``flat``: flat plates (dome 0): a sharp step at the edge;
- ``sphere``: sphere-like thickness (dome 1): the rim fades into the background;
- ``blur``: a Gaussian point-spread function of 2.5 px;
- ``low_dose``: 40 electrons per pixel;
- ``fringe``: a bright Fresnel fringe around each particle (the image plus 0.6 times its
  difference from a 2 px blur), as defocus in bright field draws it; the fit's model
  has no fringe.

Writes ``summary.csv`` (one row per variant) and ``particles.csv``. Runtime: a few minutes
on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import jax
import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from nanoshape.crop import CropOptions, crop_labels, window_sides
from nanoshape.evaluate import match_instances
from nanoshape.features import measure
from nanoshape.pipeline import AnalyzeOptions, _add_shape_parameters
from nanoshape.render import Imaging
from nanoshape.scene import POPULATIONS, SceneOptions, render_scene
from nanoshape.segment import segment

VARIANTS = {
    "default": {},
    "flat": {"dome_range": (0.0, 0.0)},
    "sphere": {"dome_range": (1.0, 1.0)},
    "blur": {"blur_sigma_px_range": (2.5, 2.5)},
    "low_dose": {"dose_range": (40.0, 40.0)},
    "fringe": {},
}


def scene_options(variant: str, index: int) -> SceneOptions:
    rng = np.random.default_rng(index)
    populations = tuple(dataclasses.replace(POPULATIONS[name], diameter_nm=float(rng.uniform(30, 60)), diameter_cv=0.1)
                        for name in ("spheres", "cubes", "rods", "triangles"))
    imaging = dataclasses.replace(Imaging(), **VARIANTS[variant])
    return SceneOptions(height_px=512, width_px=512, pixel_size_nm=1.0, n_particles=60, populations=populations,
                        touching_fraction=0.2, imaging=imaging)


def analyse(image: np.ndarray) -> pd.DataFrame:
    """Segmentation, features, crops, CNN and image fit, as ``nanoshape analyze`` runs them."""
    options = AnalyzeOptions(shape=dataclasses.replace(AnalyzeOptions().shape, refine=False))
    seg = segment(image, options.segment)
    table = measure(seg.labels, image, pixel_size_nm=1.0)
    ids = table["particle_id"].to_numpy()
    crops = crop_labels(image, seg.labels, ids, options=CropOptions())
    sides = window_sides(seg.labels, ids, CropOptions())
    _add_shape_parameters(table, crops, options, {}, window_px=sides, pixel_size_nm=1.0)
    return table, seg.labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--out", default="experiments/results/fit_sizes")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for variant in VARIANTS:
        for i in range(args.scenes):
            scene = render_scene(jax.random.key(30_000 + i), scene_options(variant, i))
            image = scene.image.astype(np.float32)
            if variant == "fringe":
                image = image + 0.6 * (image - ndi.gaussian_filter(image, 2.0))
            table, labels = analyse(image)
            match = match_instances(labels.astype(np.int64), scene.labels.astype(np.int64))
            truth = scene.truth.set_index("particle_id")
            found = table.set_index("particle_id")
            for pred_id, true_id in match["pairs"]:
                true_major = float(truth.loc[true_id, "major_axis_nm"])
                rows.append({"variant": variant, "scene": i, "population": truth.loc[true_id, "population"],
                             "true_major_axis_nm": true_major,
                             "mask_error": float(found.loc[pred_id, "major_axis_nm"]) / true_major - 1,
                             "fit_error": float(found.loc[pred_id, "major_axis_fit_nm"]) / true_major - 1})
        part = pd.DataFrame([r for r in rows if r["variant"] == variant])
        print(f"{variant:<9} {len(part):>4} particles: mask median {part.mask_error.median():+.2%} "
              f"(|.| {part.mask_error.abs().median():.2%}), fit median {part.fit_error.median():+.2%} "
              f"(|.| {part.fit_error.abs().median():.2%})", flush=True)
    particles = pd.DataFrame(rows)
    particles.to_csv(out / "particles.csv", index=False)
    summary = particles.groupby("variant", sort=False).agg(
        particles=("mask_error", "size"),
        mask_median_error=("mask_error", "median"), mask_median_abs_error=("mask_error", lambda e: e.abs().median()),
        fit_median_error=("fit_error", "median"), fit_median_abs_error=("fit_error", lambda e: e.abs().median()))
    summary.to_csv(out / "summary.csv", float_format="%.4f")
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
