"""The image fit after the CNN (nanoshape.imagefit) on rendered test particles and on EMPS.

    python experiments/image_fit.py                  (about an hour on a 2-core CPU)
    python experiments/image_fit.py --n 512 --skip-emps   (about 2 minutes)

Rendered: the first ``--n`` particles of the default test set (exactly those
:func:`nanoshape.training.evaluate_model` scores first: batches of 512 from the test seed),
the CNN's prediction and the image fit started from it, scored with issue 4's figures
against the truth (median and 10th percentile of the shape Jaccard, median |log p error|,
d exact), overall and by true p. Each crop's window is taken as 1.3 times the particle's
largest diameter (the crop's margin 0.15 on each side; the window is sized from the mask's
bounding box, which the diameter slightly overstates for boxy shapes).

EMPS (``../shared/data/emps_train``, hand-drawn masks, particles off the border): the
Jaccard of the shape placed on its hand mask (:func:`nanoshape.refine.fit_jaccard`), for the
CNN and for the image fit, and both after the mask refinement of :mod:`nanoshape.refine`.
There is no true p on real particles, only the mask.

Writes ``summary.json``, ``rendered.csv``, ``emps.csv`` and ``image_fit.png`` to
``experiments/results/image_fit/`` (``--output`` to change).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EMPS = REPO.parent / "shared" / "data" / "emps_train"
P_BINS = ((0.0, 0.5), (0.5, 1.0), (1.0, 6.0), (6.0, 16.0), (16.0, math.inf), (0.0, math.inf))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=13_000, help="rendered test particles (the first n of the test set)")
    parser.add_argument("--emps", type=Path, default=EMPS)
    parser.add_argument("--skip-emps", action="store_true")
    parser.add_argument("--validation-only", action="store_true",
                        help="only the EMPS micrographs of the fixed validation part (nanoshape.evaluate.is_validation), "
                             "e.g. with --emps ../shared/data/emps_train_more: figures on data never tuned on")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="override an ImageFitOptions field, e.g. --option prior_weight=2")
    parser.add_argument("--output", type=Path, default=REPO / "experiments" / "results" / "image_fit")
    return parser.parse_args()


def test_particles(train, n: int):
    """The first ``n`` crops of the test set of the training options ``train`` (its family's prior,
    512 at a time from ``fold_in(key(test_seed), i)``, as :func:`nanoshape.training.evaluate_model`
    draws them), with their truths and largest diameters (px)."""
    import jax
    import numpy as np

    from nanoshape.trainingdata import training_batch

    render = jax.jit(lambda k: training_batch(k, 512, chunk=train.render_chunk, prior=train.shape_prior,
                                              imaging=train.imaging, crop=train.crop, with_extent=True))
    key = jax.random.key(train.test_seed)
    crops, truths, extents = [], [], []
    for i in range(math.ceil(n / 512)):
        c, t, e = render(jax.random.fold_in(key, i))
        crops.append(np.asarray(c)), truths.append(jax.tree.map(np.asarray, t)), extents.append(np.asarray(e))
    truth = jax.tree.map(lambda *a: np.concatenate(a)[:n], *truths)
    return np.concatenate(crops)[:n], truth, np.concatenate(extents)[:n]


def figures(jaccard, abs_log_p, d_right):
    import numpy as np

    return {"n": int(len(jaccard)), "jaccard_median": float(np.median(jaccard)),
            "jaccard_p10": float(np.percentile(jaccard, 10)), "share_jaccard_below_0.85": float(np.mean(jaccard < 0.85)),
            "median_abs_error_log_p": float(np.median(abs_log_p)), "d_exact_fraction": float(np.mean(d_right))}


def main():
    import dataclasses

    import jax
    import jax.numpy as jnp
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nanoshape.cnn import load_model, predict
    from nanoshape.imagefit import ImageFitOptions, fit_image
    from nanoshape.refine import shape_jaccard
    from nanoshape.shape import ShapeParams
    from nanoshape.training import TrainOptions

    args = parse_args()
    options = ImageFitOptions()
    for item in args.option:
        name, value = item.split("=", 1)
        options = dataclasses.replace(options, **{name: type(getattr(options, name))(value)})
    args.output.mkdir(parents=True, exist_ok=True)
    train = TrainOptions()
    model = load_model()
    started = time.perf_counter()

    crops, truth, extent = test_particles(train, args.n)
    cnn = predict(model, crops)
    begin = time.perf_counter()
    fit = fit_image(crops, cnn, window_px=1.3 * extent, options=options)
    fit_seconds = time.perf_counter() - begin
    print(f"rendered: {args.n} image fits in {fit_seconds:.0f} s", flush=True)

    jaccard = jax.jit(jax.vmap(shape_jaccard))
    true = ShapeParams(*(jnp.asarray(a) for a in truth))

    def against_truth(o):
        """Shape Jaccard of the prediction ``o`` against the truth, 1,024 at a time."""
        shapes = ShapeParams(*(jnp.asarray(o[k]) for k in ("p", "d", "l_ratio", "phi")))
        return np.concatenate([np.asarray(jaccard(jax.tree.map(lambda a: a[i:i + 1024], shapes),
                                                  jax.tree.map(lambda a: a[i:i + 1024], true)))
                               for i in range(0, args.n, 1024)])

    j_cnn, j_fit = against_truth(cnn), against_truth(fit)
    true_log_p = np.log(truth[0])

    def coverage90(o):
        """Share of truths inside the CNN's central 90 % intervals (+-1.645 sigma) around the values
        ``o``: the fit has no uncertainties of its own, and the analysis reports the CNN's."""
        errors = {"log_p": np.abs(np.log(o["p"]) - true_log_p),
                  "log_l": np.abs(np.log(o["l_ratio"]) - np.log(np.maximum(truth[2], 1.0))),
                  "phi": np.abs(np.mod(o["phi"] - truth[3] + np.pi / 2, np.pi) - np.pi / 2)}
        stds = {"log_p": cnn["p_log_std"], "log_l": cnn["l_ratio_log_std"], "phi": cnn["phi_std"]}
        return {k: float(np.mean(errors[k] <= 1.6448536 * stds[k])) for k in errors}

    e_cnn, e_fit = np.abs(np.log(cnn["p"]) - true_log_p), np.abs(np.log(fit["p"]) - true_log_p)
    d_right, d_right_fit = cnn["d"] == truth[1], fit["d"] == truth[1]
    by_p = []
    for lo, hi in P_BINS:
        s = (truth[0] >= lo) & (truth[0] < hi)
        by_p.append({"p_range": f"[{lo}, {hi})", "cnn": figures(j_cnn[s], e_cnn[s], d_right[s]),
                     "image_fit": figures(j_fit[s], e_fit[s], d_right_fit[s])})
    summary = {
        "command": "python experiments/image_fit.py " + " ".join(
            (["--n", str(args.n)] if args.n != 13_000 else []) + (["--skip-emps"] if args.skip_emps else [])
            + ([f"--emps {args.emps}"] if args.emps != EMPS else [])
            + (["--validation-only"] if args.validation_only else []) + [f"--option {o}" for o in args.option]),
        "options": repr(options),
        "rendered": {"particles": "the first n of the default test set (full imaging model)",
                     "cnn": figures(j_cnn, e_cnn, d_right) | {"coverage90": coverage90(cnn)},
                     "image_fit": figures(j_fit, e_fit, d_right_fit) | {"coverage90": coverage90(fit)},
                     "cost_never_rose": bool(np.all(fit["cost"] <= fit["cost_start"] * (1 + 1e-5))),
                     "seconds": fit_seconds, "particles_per_s": args.n / fit_seconds, "by_p": by_p},
    }
    summary["rendered"]["skip_where_sure"] = skip_rule(cnn, j_cnn, j_fit, e_cnn, e_fit, d_right, d_right_fit)
    with open(args.output / "rendered.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["p", "d", "l_ratio", "phi", "extent_px", "p_cnn", "d_cnn", "l_ratio_cnn", "phi_cnn",
                         "p_fit", "d_fit", "l_ratio_fit", "phi_fit", "jaccard_cnn", "jaccard_fit"])
        for i in range(args.n):
            writer.writerow([f"{truth[0][i]:.5g}", int(truth[1][i]), f"{truth[2][i]:.5g}", f"{truth[3][i]:.5g}",
                             f"{extent[i]:.4g}", f"{cnn['p'][i]:.5g}", int(cnn["d"][i]), f"{cnn['l_ratio'][i]:.5g}",
                             f"{cnn['phi'][i]:.5g}", f"{fit['p'][i]:.5g}", int(fit["d"][i]), f"{fit['l_ratio'][i]:.5g}",
                             f"{fit['phi'][i]:.5g}", f"{j_cnn[i]:.5f}", f"{j_fit[i]:.5f}"])

    if not args.skip_emps:
        if not (args.emps / "index.csv").exists():
            raise SystemExit(f"{args.emps}: no index.csv (the EMPS subset is not there); use --skip-emps")
        summary["emps"] = evaluate_emps(args.emps, model, options, args.output, validation_only=args.validation_only)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    grid = np.linspace(0.4, 1.0, 121)
    axes[0].plot(grid, [np.mean(j_cnn <= g) for g in grid], label="CNN")
    axes[0].plot(grid, [np.mean(j_fit <= g) for g in grid], label="CNN + image fit")
    axes[0].axhline(0.1, color="grey", lw=0.8, ls=":")
    axes[0].axvline(0.85, color="grey", lw=0.8, ls=":")
    axes[0].set(xlabel="shape Jaccard against the truth", ylabel="fraction of test particles at or below",
                title=f"rendered test particles (n = {args.n})")
    axes[0].legend()
    edges = np.exp(np.linspace(np.log(0.25), np.log(64), 13))
    mids = np.sqrt(edges[1:] * edges[:-1])
    for name, err in (("CNN", e_cnn), ("CNN + image fit", e_fit)):
        axes[1].plot(mids, [np.median(err[(truth[0] >= a) & (truth[0] < b)]) for a, b in zip(edges[:-1], edges[1:])],
                     marker="o", label=name)
    axes[1].axhline(0.15, color="grey", lw=0.8, ls=":")
    axes[1].set(xscale="log", xlabel="true p", ylabel="median |log p error|", title="by true p")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(args.output / "image_fit.png", dpi=110)
    summary["seconds"] = time.perf_counter() - started
    (args.output / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: summary["rendered"][k] for k in ("cnn", "image_fit")}, indent=1))
    if "emps" in summary:
        print(json.dumps(summary["emps"], indent=1))


def skip_rule(cnn, j_cnn, j_fit, e_cnn, e_fit, d_right, d_right_fit):
    """The figures if the fit were skipped (the CNN's answer kept) where the CNN is sure: its
    log p and log L standard deviations below their q-th percentile and its d probability
    above 0.95, for several q. The fit's cost saved is the share skipped."""
    import numpy as np

    sure_d = cnn["d_confidence"] >= 0.95
    rows = []
    for q in (0, 10, 25, 40, 50, 60):
        limit_p = np.percentile(cnn["p_log_std"], q) if q else -np.inf
        limit_l = np.percentile(cnn["l_ratio_log_std"], q) if q else -np.inf
        skip = sure_d & (cnn["p_log_std"] <= limit_p) & (cnn["l_ratio_log_std"] <= limit_l)
        rows.append({"percentile": q, "p_log_std_max": float(limit_p), "l_ratio_log_std_max": float(limit_l),
                     "share_skipped": float(skip.mean()),
                     **figures(np.where(skip, j_cnn, j_fit), np.where(skip, e_cnn, e_fit),
                               np.where(skip, d_right, d_right_fit))})
    return rows


def evaluate_emps(root, model, options, output, validation_only=False):
    """Hand-masked EMPS particles: the CNN's and the image fit's Jaccard on their masks, before and after refine."""
    import numpy as np
    from PIL import Image

    from nanoshape.cnn import predict
    from nanoshape.crop import crop_labels, window_sides
    from nanoshape.imagefit import fit_image
    from nanoshape.refine import refine

    from nanoshape.evaluate import is_validation

    with open(root / "index.csv") as f:
        index = [entry for entry in csv.DictReader(f) if not validation_only or is_validation(entry["id"])]
    crops, sides, names = [], [], []
    for entry in index:
        image = np.asarray(Image.open(root / "images" / f"{entry['id']}.png").convert("L"), np.float32)
        labels = np.asarray(Image.open(root / "masks" / f"{entry['id']}.png")).astype(np.int32)
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        ids = np.setdiff1d(np.unique(labels[labels > 0]), border)
        crops.append(crop_labels(image, labels, ids))
        sides.append(window_sides(labels, ids))
        names += [(entry["id"], int(i)) for i in ids]
    crops, sides = np.concatenate(crops), np.concatenate(sides)
    cnn = predict(model, crops[..., :model.options.input_channels])
    begin = time.perf_counter()
    fit = fit_image(crops, cnn, window_px=sides, options=options)
    seconds = time.perf_counter() - begin
    print(f"EMPS: {len(crops)} image fits in {seconds:.0f} s", flush=True)
    refined_cnn = refine(crops[..., 1], cnn)
    start_fit = dict(cnn) | {k: fit[k] for k in ("p", "d", "l_ratio", "phi")}
    refined_fit = refine(crops[..., 1], start_fit)
    columns = {"jaccard_cnn": refined_cnn["jaccard_init"], "jaccard_fit": refined_fit["jaccard_init"],
               "jaccard_cnn_refined": refined_cnn["jaccard_refined"], "jaccard_fit_refined": refined_fit["jaccard_refined"]}
    with open(output / "emps.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "particle_id", "p_cnn", "p_fit", *columns])
        for i, (name, pid) in enumerate(names):
            writer.writerow([name, pid, f"{cnn['p'][i]:.5g}", f"{fit['p'][i]:.5g}", *(f"{c[i]:.5f}" for c in columns.values())])
    return {"particles": int(len(crops)), "images": len(index), "seconds": seconds,
            **{f"median_{k}": float(np.median(v)) for k, v in columns.items()},
            **{f"p10_{k}": float(np.percentile(v, 10)) for k, v in columns.items()}}


if __name__ == "__main__":
    main()
