"""Evidence for issue 5: Jaccard and parameter errors before and after refinement, rendered and real particles.

    python experiments/refine_evidence.py                       (about 2 minutes on a 2-core CPU)
    python experiments/refine_evidence.py --runlocal            (under 1 minute: 256 rendered particles, 8 EMPS images)

Writes to ``runs/refine_evidence/`` (``--output`` to change):

- ``rendered.csv``: one row per rendered particle (``training_batch`` crops with the full
  imaging model, at two canvas sizes, see below): truth, start, refined parameters, and
  Jaccards: ``shape_jaccard_*`` against the true shape (both shapes at equal area and
  centroid, :func:`nanoshape.refine.shape_jaccard`), ``jaccard_*`` against the particle's mask,
  ``jaccard_truth_on_mask`` (the true shape placed on its own mask: what the mask allows).
- ``rendered_parameter_errors.csv``: median errors before and after, overall and by p range,
  and after the same fit started from the true parameters (``refined_from_truth``: the
  errors the masks themselves leave, the floor a better start cannot go below).
- ``emps.csv``: one row per real EMPS particle not touching the border (hand-drawn masks).
- ``summary.json``: the done-when figures, which start was used, timings.
- figures: ``rendered_jaccard.png``, ``rendered_parameter_errors.png``, ``emps_jaccard.png``,
  ``worst_rendered.png``, ``worst_emps.png`` (mask outline cyan, fitted outline red, over
  the crop's intensity channel).

The start is the CNN when ``nanoshape.cnn.load_model()`` works; otherwise perturbed truth
for rendered particles (log p + N(0, 0.3), log L + N(0, 0.15), phi + N(0, 0.15), d replaced
by another value for 20%, the uncertainties set to those scales, no d probabilities) and
the second-moment ellipse (:func:`nanoshape.refine.moment_start`) for real ones. The script
prints which it used.

Rendered particles: canvas 64 px is the training distribution (particles 13 to 58 px
across in the source image, upsampled into the crop); canvas 128 px has the same shapes
twice as large (26 to 115 px), closer to particles imaged for shape analysis.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EMPS = REPO.parent / "shared" / "data" / "emps_train"
P_BINS = ((0.0, 1.0), (1.0, 4.0), (4.0, 16.0), (16.0, math.inf))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default=str(REPO / "runs" / "refine_evidence"))
    parser.add_argument("--rendered", type=int, default=2048, help="rendered particles per canvas size")
    parser.add_argument("--emps", default=str(EMPS), help="folder of the EMPS subset")
    parser.add_argument("--runlocal", action="store_true", help="a small run for a laptop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="override a RefineOptions field (repeatable), e.g. --option shape_prior_weight=0.1")
    parser.add_argument("--skip-emps", action="store_true", help="rendered particles only")
    return parser.parse_args()


def main():
    args = parse_args()
    import jax
    import matplotlib

    matplotlib.use("Agg")

    from nanoshape.refine import RefineOptions

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    n_rendered = 256 if args.runlocal else args.rendered
    key_rendered, key_start = jax.random.split(jax.random.key(args.seed))
    model, start_source = load_cnn()
    print(f"start: {start_source}")
    overrides = {}
    for item in args.option:
        name, _, value = item.partition("=")
        overrides[name] = type(getattr(RefineOptions(), name))(value)
    options = RefineOptions(**overrides)
    summary = {"start": start_source, "options": repr(options), "timings_s": {}}
    start_time = begin = time.perf_counter()

    rendered_rows = []
    for canvas, key in zip((64, 128), jax.random.split(key_rendered)):
        rows = evaluate_rendered(key, key_start, canvas, n_rendered, model, options, output)
        rendered_rows += rows
    summary["timings_s"]["rendered"] = time.perf_counter() - begin
    write_csv(output / "rendered.csv", rendered_rows)
    summary["rendered"] = summarise_rendered(rendered_rows, output)

    if args.skip_emps:
        (output / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
        print(json.dumps(summary["rendered"], indent=2, default=float))
        return
    begin = time.perf_counter()
    emps_rows, emps_crops, emps_fits = evaluate_emps(Path(args.emps), model, options, 8 if args.runlocal else None)
    summary["timings_s"]["emps"] = time.perf_counter() - begin
    write_csv(output / "emps.csv", emps_rows)
    summary["emps"] = summarise_emps(emps_rows, output)
    worst_montage(emps_crops, emps_fits, [r["jaccard_refined"] for r in emps_rows], output / "worst_emps.png",
                  "EMPS: worst refined fits (cyan: hand-drawn mask, red: fitted shape)")

    (output / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    print(json.dumps(summary, indent=2, default=float))
    print(f"results in {output} ({time.perf_counter() - start_time:.0f} s)")


def load_cnn():
    """(model, description): the CNN if it loads, else (None, the reason and the fallback)."""
    try:
        from nanoshape.cnn import load_model
    except ImportError as error:
        return None, f"perturbed truth / moment ellipse (nanoshape.cnn not importable: {error})"
    try:
        return load_model(), "CNN (nanoshape.cnn.load_model())"
    except Exception as error:  # no checkpoint yet, or an API change: say so and go on
        return None, f"perturbed truth / moment ellipse (load_model() failed: {type(error).__name__}: {error})"


def cnn_predict(model, crops):
    import numpy as np

    from nanoshape.cnn import predict

    parts = [predict(model, crops[i : i + 256]) for i in range(0, len(crops), 256)]
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def perturbed_truth(key, truth, p_log_std=0.3, l_log_std=0.15, phi_std=0.15, d_wrong=0.2):
    """A stand-in for the CNN: truth with known errors, and those error scales as its uncertainty."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from nanoshape.shape import ShapeParams, canonicalize

    n = truth.p.shape[0]
    k_p, k_l, k_phi, k_wrong, k_d = jax.random.split(key, 5)
    p = truth.p * jnp.exp(p_log_std * jax.random.normal(k_p, (n,)))
    l_ratio = truth.l_ratio * jnp.exp(l_log_std * jax.random.normal(k_l, (n,)))
    phi = truth.phi + phi_std * jax.random.normal(k_phi, (n,))
    wrong = jax.random.uniform(k_wrong, (n,)) < d_wrong
    other = (truth.d - 1 + jax.random.randint(k_d, (n,), 1, 6)) % 6 + 1
    d = jnp.where(wrong, other, truth.d).astype(jnp.int32)
    shape = canonicalize(ShapeParams(p, d, l_ratio, phi))
    start = {k: np.asarray(v) for k, v in zip(("p", "d", "l_ratio", "phi"), shape)}
    start |= {
        "p_log_std": np.full(n, p_log_std, np.float32),
        "l_ratio_log_std": np.full(n, l_log_std, np.float32),
        "phi_std": np.full(n, phi_std, np.float32),
    }
    return start


def evaluate_rendered(key, key_start, canvas, n, model, options, output):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from nanoshape.refine import fit_jaccard, refine, shape_jaccard
    from nanoshape.trainingdata import training_batch
    from nanoshape.shape import ShapeParams

    crops, truth = jax.jit(lambda k: training_batch(k, n, canvas_px=canvas))(key)
    crops = np.asarray(crops)
    masks = crops[..., 1]
    truth = ShapeParams(*(jnp.asarray(a) for a in truth))
    start = cnn_predict(model, crops) if model is not None else perturbed_truth(jax.random.fold_in(key_start, canvas), truth)
    begin = time.perf_counter()
    fit = refine(masks, start, options=options)
    seconds = time.perf_counter() - begin
    print(f"canvas {canvas}: refined {n} rendered particles in {seconds:.1f} s (compilation included)")
    # the floor: the same fit started from the truth itself (with the start's uncertainties,
    # so the same steps, and its p prior centred on the true p, but no prior on L and phi,
    # which would hold them at the truth): what the masks let a fit keep
    uncertainties = {k: start[k] for k in ("p_log_std", "l_ratio_log_std", "phi_std") if k in start}
    from_truth = refine(masks, {k: np.asarray(getattr(truth, k)) for k in ("p", "d", "l_ratio", "phi")} | uncertainties,
                        options=dataclasses.replace(options, shape_prior_weight=0.0))

    def params(d):
        return ShapeParams(jnp.asarray(d["p"], jnp.float32), jnp.asarray(d["d"], jnp.int32),
                           jnp.asarray(d["l_ratio"], jnp.float32), jnp.asarray(d["phi"], jnp.float32))

    pair_jaccard = jax.jit(jax.vmap(shape_jaccard))
    shape_start = np.asarray(pair_jaccard(params(start), truth))
    shape_refined = np.asarray(pair_jaccard(params(fit), truth))
    shape_from_truth = np.asarray(pair_jaccard(params(from_truth), truth))
    truth_on_mask = fit_jaccard(masks, truth)
    truth = ShapeParams(*(np.asarray(a) for a in truth))
    rows = []
    for i in range(n):
        row = {"canvas_px": canvas, "index": i}
        row |= {f"true_{k}": getattr(truth, k)[i] for k in ("p", "d", "l_ratio", "phi")}
        row |= {f"start_{k}": start[k][i] for k in ("p", "d", "l_ratio", "phi")}
        row |= {f"refined_{k}": fit[k][i] for k in ("p", "d", "l_ratio", "phi")}
        row |= {f"from_truth_{k}": from_truth[k][i] for k in ("p", "d", "l_ratio", "phi")}
        row |= {
            "shape_jaccard_start": shape_start[i],
            "shape_jaccard_refined": shape_refined[i],
            "shape_jaccard_refined_from_truth": shape_from_truth[i],
            "jaccard_init": fit["jaccard_init"][i],
            "jaccard_refined": fit["jaccard_refined"][i],
            "jaccard_truth_on_mask": truth_on_mask[i],
            "converged": bool(fit["converged"][i]),
        }
        rows.append(row)
    if canvas == 64:
        worst_montage(crops, fit, fit["jaccard_refined"], output / "worst_rendered.png",
                      "rendered (canvas 64): worst refined fits (cyan: mask, red: fitted shape)")
    return rows


def parameter_errors(rows, which):
    """Per-row |log p| and |log L| errors, phi error (mod pi) and whether d is right."""
    import numpy as np

    t = {k: np.array([r[f"true_{k}"] for r in rows], float) for k in ("p", "d", "l_ratio", "phi")}
    e = {k: np.array([r[f"{which}_{k}"] for r in rows], float) for k in ("p", "d", "l_ratio", "phi")}
    phi = np.abs((e["phi"] - t["phi"] + 0.5 * np.pi) % np.pi - 0.5 * np.pi)
    return {
        "log_p": np.abs(np.log(e["p"] / t["p"])),
        "log_l_ratio": np.abs(np.log(e["l_ratio"] / t["l_ratio"])),
        "phi": phi,
        "d_wrong": (e["d"] != t["d"]).astype(float),
    }


def summarise_rendered(rows, output):
    import matplotlib.pyplot as plt
    import numpy as np

    summary, error_rows = {}, []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    fig_err, axes_err = plt.subplots(2, 4, figsize=(15, 7))
    for column, canvas in enumerate((64, 128)):
        part = [r for r in rows if r["canvas_px"] == canvas]
        before, after = parameter_errors(part, "start"), parameter_errors(part, "refined")
        floor = parameter_errors(part, "from_truth")
        true_p = np.array([r["true_p"] for r in part])
        true_l = np.array([r["true_l_ratio"] for r in part])
        # phi is defined only where the shape is elongated and d is right before and after
        phi_ok = (true_l >= 1.2) & (before["d_wrong"] == 0) & (after["d_wrong"] == 0)
        shape_start = np.array([r["shape_jaccard_start"] for r in part])
        shape_refined = np.array([r["shape_jaccard_refined"] for r in part])
        mask_refined = np.array([r["jaccard_refined"] for r in part])
        mask_init = np.array([r["jaccard_init"] for r in part])
        ceiling = np.array([r["jaccard_truth_on_mask"] for r in part])
        block = {
            "n": len(part),
            "median_shape_jaccard_start": np.median(shape_start),
            "median_shape_jaccard_refined": np.median(shape_refined),
            # the same fit started from the truth: how far the masks pull a perfect start away
            "median_shape_jaccard_refined_from_truth": np.median([r["shape_jaccard_refined_from_truth"] for r in part]),
            "median_jaccard_init_on_mask": np.median(mask_init),
            "median_jaccard_refined_on_mask": np.median(mask_refined),
            "median_jaccard_truth_on_mask": np.median(ceiling),
            "converged_fraction": np.mean([r["converged"] for r in part]),
            "median_shape_jaccard_refined_by_p": {},
        }
        for lo, hi in P_BINS:
            sel = (true_p >= lo) & (true_p < hi)
            block["median_shape_jaccard_refined_by_p"][f"[{lo}, {hi})"] = np.median(shape_refined[sel])
        for name in ("log_p", "log_l_ratio", "phi", "d_wrong"):
            sel = phi_ok if name == "phi" else np.ones(len(part), bool)
            stat = np.mean if name == "d_wrong" else np.median
            b, a = stat(before[name][sel]), stat(after[name][sel])
            block[f"{name}_start"], block[f"{name}_refined"] = b, a
            block[f"{name}_ratio"] = a / b if b > 0 else float("nan")
            block[f"{name}_refined_from_truth"] = stat(floor[name][sel])
            error_rows.append({"canvas_px": canvas, "p_range": "all", "error": name, "statistic": stat.__name__,
                               "start": b, "refined": a, "refined_from_truth": stat(floor[name][sel]),
                               "n": int(sel.sum())})
            for lo, hi in P_BINS:
                bin_sel = sel & (true_p >= lo) & (true_p < hi)
                error_rows.append({"canvas_px": canvas, "p_range": f"[{lo}, {hi})", "error": name,
                                   "statistic": stat.__name__, "start": stat(before[name][bin_sel]),
                                   "refined": stat(after[name][bin_sel]),
                                   "refined_from_truth": stat(floor[name][bin_sel]), "n": int(bin_sel.sum())})
        summary[f"canvas_{canvas}"] = block
        bins = np.linspace(0.3, 1, 71)
        ax = axes[column]
        ax.hist(shape_start, bins, alpha=0.5, label=f"start (median {np.median(shape_start):.3f})")
        ax.hist(shape_refined, bins, alpha=0.5, label=f"refined (median {np.median(shape_refined):.3f})")
        ax.hist(ceiling, bins, histtype="step", color="k", label=f"true shape on its mask ({np.median(ceiling):.3f})")
        ax.set_title(f"rendered, canvas {canvas} px: Jaccard against the true shape")
        ax.set_xlabel("Jaccard")
        ax.legend(loc="upper left", fontsize=8)
        for k, (name, label) in enumerate((("log_p", "|log p error|"), ("log_l_ratio", "|log L error|"),
                                            ("phi", "|phi error| rad (L>=1.2, d right)"))):
            ax = axes_err[column, k]
            sel = phi_ok if name == "phi" else np.ones(len(part), bool)
            top = np.quantile(np.concatenate([before[name][sel], after[name][sel]]), 0.95)
            edges = np.linspace(0, top, 41)
            ax.hist(before[name][sel], edges, alpha=0.5, label=f"start, median {np.median(before[name][sel]):.3f}")
            ax.hist(after[name][sel], edges, alpha=0.5, label=f"refined, median {np.median(after[name][sel]):.3f}")
            ax.set_title(f"canvas {canvas}: {label}", fontsize=9)
            ax.legend(fontsize=7)
        ax = axes_err[column, 3]
        labels = [f"[{lo:g},{hi:g})" for lo, hi in P_BINS]
        x = np.arange(len(P_BINS))
        med = lambda err: [np.median(err[(true_p >= lo) & (true_p < hi)]) for lo, hi in P_BINS]  # noqa: E731
        ax.bar(x - 0.2, med(before["log_p"]), 0.4, label="start")
        ax.bar(x + 0.2, med(after["log_p"]), 0.4, label="refined")
        ax.set_xticks(x, labels)
        ax.set_xlabel("true p")
        ax.set_title(f"canvas {canvas}: median |log p error| by p", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(output / "rendered_jaccard.png", dpi=110)
    fig_err.tight_layout()
    fig_err.savefig(output / "rendered_parameter_errors.png", dpi=110)
    plt.close("all")
    write_csv(output / "rendered_parameter_errors.csv", error_rows)
    return summary


def evaluate_emps(root, model, options, max_images=None):
    """Crop every hand-drawn particle not touching the border, refine it, and score it against its mask."""
    import numpy as np
    from PIL import Image

    from nanoshape.crop import crop_labels
    from nanoshape.refine import moment_start, refine

    with open(root / "index.csv") as f:
        index = list(csv.DictReader(f))[:max_images]
    crops, rows = [], []
    for entry in index:
        image = np.asarray(Image.open(root / "images" / f"{entry['id']}.png").convert("L"), np.float32)
        labels = np.asarray(Image.open(root / "masks" / f"{entry['id']}.png")).astype(np.int32)
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        ids = np.setdiff1d(np.unique(labels[labels > 0]), border)
        areas = np.bincount(labels.ravel())
        crops.append(crop_labels(image, labels, ids))
        rows += [{"image": entry["id"], "particle_id": int(i), "area_px": int(areas[i]),
                  "shape_guess": entry["shape_guess"]} for i in ids]
    crops = np.concatenate(crops)
    start = cnn_predict(model, crops) if model is not None else moment_start(crops[..., 1])
    begin = time.perf_counter()
    fit = refine(crops[..., 1], start, options=options)
    print(f"EMPS: refined {len(crops)} particles of {len(index)} images in {time.perf_counter() - begin:.1f} s "
          "(compilation included)")
    for i, row in enumerate(rows):
        row |= {k: fit[k][i] for k in ("p", "d", "l_ratio", "phi", "jaccard_init", "jaccard_refined")}
        row["converged"] = bool(fit["converged"][i])
    return rows, crops, fit


def summarise_emps(rows, output):
    import matplotlib.pyplot as plt
    import numpy as np

    refined = np.array([r["jaccard_refined"] for r in rows])
    init = np.array([r["jaccard_init"] for r in rows])
    area = np.array([r["area_px"] for r in rows])
    quantiles = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9)
    summary = {
        "n_particles": len(rows),
        "n_images": len({r["image"] for r in rows}),
        "median_jaccard_init": np.median(init),
        "median_jaccard_refined": np.median(refined),
        "jaccard_refined_quantiles": {str(q): np.quantile(refined, q) for q in quantiles},
        "fraction_refined_at_least_0.9": np.mean(refined >= 0.9),
        "converged_fraction": np.mean([r["converged"] for r in rows]),
        "median_jaccard_refined_by_shape_guess": {},
        "median_jaccard_refined_by_area_px": {},
    }
    for guess in sorted({r["shape_guess"] for r in rows}):
        sel = np.array([r["shape_guess"] == guess for r in rows])
        summary["median_jaccard_refined_by_shape_guess"][guess] = [int(sel.sum()), np.median(refined[sel])]
    for lo, hi in ((0, 100), (100, 400), (400, 1600), (1600, 10**9)):
        sel = (area >= lo) & (area < hi)
        if sel.any():
            summary["median_jaccard_refined_by_area_px"][f"[{lo}, {hi})"] = [int(sel.sum()), np.median(refined[sel])]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    bins = np.linspace(0.5, 1, 51)
    axes[0].hist(init, bins, alpha=0.5, label=f"start (median {np.median(init):.3f})")
    axes[0].hist(refined, bins, alpha=0.5, label=f"refined (median {np.median(refined):.3f})")
    axes[0].set_title(f"EMPS real particles (n = {len(rows)}): Jaccard against the hand-drawn mask", fontsize=9)
    axes[0].set_xlabel("Jaccard")
    axes[0].legend(loc="upper left", fontsize=8)
    axes[1].scatter(area, refined, s=4, alpha=0.5)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("particle area (px, original image)")
    axes[1].set_ylabel("refined Jaccard")
    axes[1].set_title("refined Jaccard against particle size", fontsize=9)
    fig.tight_layout()
    fig.savefig(output / "emps_jaccard.png", dpi=110)
    plt.close(fig)
    return summary


def worst_montage(crops, fit, jaccard, path, title, count=24):
    """The ``count`` worst fits: crop intensity, mask outline (cyan), fitted outline (red)."""
    import jax.numpy as jnp
    import matplotlib.pyplot as plt
    import numpy as np

    from nanoshape.render import silhouette
    from nanoshape.shape import ShapeParams

    order = np.argsort(np.asarray(jaccard))[:count]
    columns = 6
    fig, axes = plt.subplots(math.ceil(len(order) / columns), columns, figsize=(2.2 * columns, 2.4 * len(order) / columns))
    for ax, i in zip(np.ravel(axes), order):
        size = crops.shape[1]
        shape = ShapeParams(jnp.float32(fit["p"][i]), jnp.int32(fit["d"][i]), jnp.float32(fit["l_ratio"][i]),
                            jnp.float32(fit["phi"][i]))
        center = jnp.asarray([fit["center_x_px"][i], fit["center_y_px"][i]], jnp.float32)
        drawn = np.asarray(silhouette(shape, center, jnp.float32(fit["scale_px"][i]), height=size, width=size))
        ax.imshow(crops[i, ..., 0], cmap="gray", vmin=-0.3, vmax=1.3)
        ax.contour(crops[i, ..., 1], [0.5], colors="cyan", linewidths=1)
        ax.contour(drawn, [0.5], colors="red", linewidths=1)
        ax.set_title(f"J={jaccard[i]:.2f} p={fit['p'][i]:.2g} d={fit['d'][i]} L={fit['l_ratio'][i]:.2f}", fontsize=7)
        ax.set_axis_off()
    for ax in np.ravel(axes)[len(order):]:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_csv(path, rows):
    import numpy as np

    def plain(value):
        if isinstance(value, (np.floating, float)):
            return f"{float(value):.6g}"
        if isinstance(value, np.integer):
            return int(value)
        return value

    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: plain(v) for k, v in row.items()} for row in rows)


if __name__ == "__main__":
    main()
