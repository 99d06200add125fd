"""The image fit of another shape family: rounded polygons on rendered test particles (issue 23).

    python experiments/polygon_image_fit.py --model <polygon model dir> [--n 1024]
        (about 4 minutes at --n 1024 on a 2-core CPU, compilation included)

No polygon model ships: train one first (``nanoshape train shape.family=polygon
train.steps=3000 output=<dir>``, ~7 min). The particles are the first ``--n`` of that
training run's test set (the polygon prior, the full imaging model: 512 at a time from the
test seed, as :func:`nanoshape.training.evaluate_model` draws them); each crop's window is
taken as 1.3 times the particle's largest diameter, as ``experiments/image_fit.py`` does.

Four answers are scored against the truth, each with the shape Jaccard at equal area and
centroid (:func:`nanoshape.refine.shape_jaccard` on a 64 px grid, as the training test
set), n_sides exact, the median |log rounding error| and the median phi error (modulo the
period 2 pi / n, where n is right):

- ``cnn``: the CNN alone;
- ``mask_fit``: the CNN, then :func:`nanoshape.familyfit.fit_masks` on the crop's mask
  (what ``nanoshape analyze shape.family=polygon`` did before it had an image fit, and does
  with ``shape.image_fit=false``);
- ``image_fit``: the CNN, then :func:`nanoshape.imagefit.fit_image` on the crop's pixels;
- ``image_then_mask_fit``: the image fit, then the mask fit started from it (the default of
  ``nanoshape analyze shape.family=polygon``).

Writes ``summary.json`` and ``per_particle.csv`` to ``experiments/results/polygon_image_fit/``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _image_fit_experiment():
    """``experiments/image_fit.py`` as a module (its test particles)."""
    spec = importlib.util.spec_from_file_location("image_fit_experiment", REPO / "experiments" / "image_fit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a polygon model (a nanoshape train run directory)")
    parser.add_argument("--n", type=int, default=1024, help="rendered test particles (the first n of the test set)")
    parser.add_argument("--output", type=Path, default=REPO / "experiments" / "results" / "polygon_image_fit")
    return parser.parse_args()


def main():
    import jax
    import jax.numpy as jnp
    import numpy as np
    import pandas as pd

    from nanoshape.cnn import load_model, predict
    from nanoshape.familyfit import fit_masks
    from nanoshape.imagefit import fit_image
    from nanoshape.refine import shape_jaccard
    from nanoshape.training import TrainOptions

    args = parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model)
    family = model.options.shape_family
    if family.name != "polygon":
        raise SystemExit(f"{args.model} is a model of the {family.name} family, not polygon")
    crops, truth, extent = _image_fit_experiment().test_particles(TrainOptions().with_family("polygon"), args.n)
    window = 1.3 * extent
    masks = crops[..., 1]

    seconds = {}
    begin = time.perf_counter()
    cnn = predict(model, crops)
    seconds["cnn"] = time.perf_counter() - begin
    begin = time.perf_counter()
    mask_fit = fit_masks(masks, family=family, init=cnn)
    seconds["mask_fit"] = time.perf_counter() - begin
    begin = time.perf_counter()
    image_fit = fit_image(crops, cnn, window_px=window, family=family)
    seconds["image_fit"] = time.perf_counter() - begin
    begin = time.perf_counter()
    both = fit_masks(masks, family=family, init=dict(cnn) | {name: image_fit[name] for name in family.columns})
    seconds["mask_fit_after_image_fit"] = time.perf_counter() - begin
    answers = {"cnn": cnn, "mask_fit": mask_fit, "image_fit": image_fit, "image_then_mask_fit": both}

    jaccard = jax.jit(jax.vmap(lambda a, b: shape_jaccard(a, b, grid_px=64)))
    true = family.params_type(*(jnp.asarray(getattr(truth, name)) for name in family.columns))

    def against_truth(answer):
        shapes = family.params_type(*(jnp.asarray(answer[name]) for name in family.columns))
        return np.concatenate([np.asarray(jaccard(jax.tree.map(lambda a: a[i:i + 1024], shapes),
                                                  jax.tree.map(lambda a: a[i:i + 1024], true)))
                               for i in range(0, args.n, 1024)])

    table = pd.DataFrame({"n_sides": truth.n_sides, "rounding": truth.rounding, "phi": truth.phi, "window_px": window})
    summary = {"command": f"python experiments/polygon_image_fit.py --model {args.model} --n {args.n}",
               "model": str(args.model), "n": args.n, "seconds": seconds}
    for name, answer in answers.items():
        shape_j = against_truth(answer)
        right = answer["n_sides"] == truth.n_sides
        log_rounding_error = np.abs(np.log(answer["rounding"] / truth.rounding))
        period = 2 * np.pi / truth.n_sides
        phi_error = np.abs(np.mod(answer["phi"] - truth.phi + period / 2, period) - period / 2)
        summary[name] = {"jaccard_median": float(np.median(shape_j)), "jaccard_p10": float(np.percentile(shape_j, 10)),
                         "n_sides_exact_fraction": float(right.mean()),
                         "median_abs_error_log_rounding": float(np.median(log_rounding_error)),
                         "median_abs_error_log_rounding_where_above_0.2": float(
                             np.median(log_rounding_error[truth.rounding > 0.2])),
                         "median_abs_error_phi_rad_where_n_right": float(np.median(phi_error[right]))}
        table[f"n_sides_{name}"], table[f"rounding_{name}"] = answer["n_sides"], answer["rounding"]
        table[f"phi_{name}"], table[f"jaccard_{name}"] = answer["phi"], shape_j
    summary["image_fit"]["cost_never_rose"] = bool(np.all(image_fit["cost"] <= image_fit["cost_start"] * (1 + 1e-5)))
    table.to_csv(args.output / "per_particle.csv", index=False, float_format="%.5g")
    (args.output / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
