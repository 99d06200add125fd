"""How far a shape may be off before issue 4's test-set figures fail, in pixels of the micrograph.

    python experiments/cnn_resolution_floor.py                 (about 2 minutes on a 2-core CPU)
    python experiments/cnn_resolution_floor.py --n 2000        (under a minute)

The test-set figures of issue 4 compare shapes at a normalised scale (both drawn ~58 px
across, :func:`nanoshape.refine.shape_jaccard` on a 64 px grid), whatever the size the
particle had in its image: 13 to 58 px across in the training distribution (64 px canvas,
extent 0.2-0.9 of it, blur sigma 0.3-1.5 px, shot noise). A small error in the image's
pixels becomes a large one on that grid. This script renders a test set like the training
run's (``training_example``, with each particle's extent), runs the CNN on it and measures:

- ``by_extent.csv``: the CNN's median and 10th-percentile shape Jaccard and median |log p
  error|, by particle size and by p;
- ``turn_floor.csv``: the same Jaccard statistics for the *true* shape turned just enough
  to move its farthest point by s = 0.05 .. 0.5 px in the source image: no error in p, L, d,
  centre or size at all;
- ``log_p_floor.csv``: the share of the test set where changing log p by 0.15 (the issue's
  median target) moves the outline, at equal area, by less than s px anywhere;
- ``oracle.csv``: the CNN's Jaccard with its phi, its p, or both replaced by the truth;
- ``cnn_tip_error.csv``: how far the CNN's own phi error moves the farthest point, in px
  of the source image, by p range (d right);
- ``resolution_floor.png`` and ``summary.json``.

These are sensitivities of the figures, not limits of the images: what the images allow
is measured by ``experiments/cnn_information_bound.py`` (a Cramér-Rao bound per particle),
which finds the CNN well short of it.

Writes to ``experiments/results/cnn_resolution_floor/`` (``--output`` to change); the
model is the shipped one unless ``--model`` names a trained one.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
P_RANGES = ((0.0, 0.5), (0.5, 1.0), (1.0, 6.0), (6.0, math.inf), (0.0, math.inf))
EXTENT_BINS = ((0, 20), (20, 30), (30, 45), (45, 64))
TIP_SHIFTS_PX = (0.05, 0.1, 0.25, 0.5)
OUTLINE_SHIFTS_PX = (0.1, 0.25, 0.5)
LOG_P_STEP = 0.15


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=13_000, help="rendered test particles")
    parser.add_argument("--seed", type=int, default=2_000_003)
    parser.add_argument("--model", default="", help="a trained model or run directory (default: the shipped model)")
    parser.add_argument("--output", type=Path, default=REPO / "experiments" / "results" / "cnn_resolution_floor")
    return parser.parse_args()


def main():
    import jax
    import jax.numpy as jnp
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from nanoshape.cnn import load_model, predict
    from nanoshape.refine import shape_jaccard
    from nanoshape.trainingdata import training_example
    from nanoshape.shape import ShapeParams, area, max_radius, radius

    args = parse_args()
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    begin = time.perf_counter()
    keys = jax.random.split(jax.random.key(args.seed), args.n)
    render = jax.jit(jax.vmap(functools.partial(training_example, with_extent=True)))
    parts = [render(keys[i : i + 512]) for i in range(0, args.n, 512)]
    crops = np.concatenate([np.asarray(c) for c, _, _ in parts])
    truth = ShapeParams(*(jnp.concatenate([getattr(s, k) for _, s, _ in parts]) for k in ShapeParams._fields))
    extent = np.concatenate([np.asarray(e) for _, _, e in parts])
    pred = predict(load_model(args.model or None), crops)

    jaccard_fn = jax.jit(jax.vmap(functools.partial(shape_jaccard, grid_px=64)))

    def jaccard(shapes):
        return np.concatenate([np.asarray(jaccard_fn(jax.tree.map(lambda a: a[i : i + 1024], shapes),
                                                     jax.tree.map(lambda a: a[i : i + 1024], truth)))
                               for i in range(0, args.n, 1024)])

    def params(p, d, l_ratio, phi):
        return ShapeParams(jnp.asarray(p, jnp.float32), jnp.asarray(d, jnp.int32),
                           jnp.asarray(l_ratio, jnp.float32), jnp.asarray(phi, jnp.float32))

    t = {k: np.asarray(getattr(truth, k)) for k in ShapeParams._fields}
    cnn_jaccard = jaccard(params(pred["p"], pred["d"], pred["l_ratio"], pred["phi"]))
    log_p_error = np.abs(np.log(pred["p"] / t["p"]))

    def stats(values, sel):
        return {"n": int(sel.sum()), "jaccard_median": float(np.median(values[sel])),
                "jaccard_p10": float(np.percentile(values[sel], 10)), "share_below_0.85": float(np.mean(values[sel] < 0.85))}

    def p_selection(lo, hi):
        return (t["p"] >= lo) & (t["p"] < hi)

    rows = []
    for lo, hi in EXTENT_BINS:
        for p_lo, p_hi in P_RANGES:
            sel = (extent >= lo) & (extent < hi) & p_selection(p_lo, p_hi)
            rows.append({"extent_px": f"[{lo}, {hi})", "p_range": f"[{p_lo}, {p_hi})", **stats(cnn_jaccard, sel),
                         "median_abs_log_p_error": float(np.median(log_p_error[sel]))})
    by_extent = pd.DataFrame(rows)
    by_extent.to_csv(out / "by_extent.csv", index=False)

    # the true shape, turned: a turn by a (radians) shifts eq. 1's phase by d a / 2, and moves
    # the farthest point (at extent / 2 from the centre) by a * extent / 2 px
    rows = []
    for shift in TIP_SHIFTS_PX:
        turn = shift / (0.5 * extent)
        turned = truth._replace(phi=truth.phi + 0.5 * truth.d.astype(jnp.float32) * jnp.asarray(turn, jnp.float32))
        values = jaccard(turned)
        for p_lo, p_hi in P_RANGES:
            rows.append({"tip_shift_px": shift, "p_range": f"[{p_lo}, {p_hi})", **stats(values, p_selection(p_lo, p_hi))})
    turn_floor = pd.DataFrame(rows)
    turn_floor.to_csv(out / "turn_floor.csv", index=False)

    # log p moved by LOG_P_STEP at equal area (size is measured from the mask): the largest
    # displacement of the outline, in px of the source image, the smaller of the two directions
    theta = jnp.arange(2048, dtype=jnp.float32) * (2 * jnp.pi / 2048)

    def outline_shift(shape, extent_px):
        scale = 0.5 * extent_px / max_radius(shape, n=64)  # as training_example sizes the particle
        particle_area = area(shape, n=1024) * scale**2
        shifts = []
        for sign in (1.0, -1.0):
            other = shape._replace(p=shape.p * jnp.exp(sign * LOG_P_STEP))
            other_scale = jnp.sqrt(particle_area / area(other, n=1024))
            shifts.append(jnp.max(jnp.abs(scale * radius(theta, shape) - other_scale * radius(theta, other))))
        return jnp.minimum(*shifts)

    shift_fn = jax.jit(jax.vmap(outline_shift))
    moved = np.concatenate([np.asarray(shift_fn(jax.tree.map(lambda a: a[i : i + 1024], truth),
                                                jnp.asarray(extent[i : i + 1024])))
                            for i in range(0, args.n, 1024)])
    rows = []
    for p_lo, p_hi in P_RANGES:
        sel = p_selection(p_lo, p_hi)
        row = {"p_range": f"[{p_lo}, {p_hi})", "n": int(sel.sum()),
               "cnn_share_within_0.15": float(np.mean(log_p_error[sel] <= LOG_P_STEP)),
               "cnn_median_abs_log_p_error": float(np.median(log_p_error[sel]))}
        for shift in OUTLINE_SHIFTS_PX:
            row[f"share_outline_moves_below_{shift}px"] = float(np.mean(moved[sel] < shift))
        rows.append(row)
    log_p_floor = pd.DataFrame(rows)
    log_p_floor.to_csv(out / "log_p_floor.csv", index=False)

    rows = []
    variants = {
        "CNN": cnn_jaccard,
        "CNN, true phi": jaccard(params(pred["p"], pred["d"], pred["l_ratio"], t["phi"])),
        "CNN, true p": jaccard(params(t["p"], pred["d"], pred["l_ratio"], pred["phi"])),
        "CNN, true p and phi": jaccard(params(t["p"], pred["d"], pred["l_ratio"], t["phi"])),
    }
    for name, values in variants.items():
        for p_lo, p_hi in P_RANGES:
            rows.append({"variant": name, "p_range": f"[{p_lo}, {p_hi})", **stats(values, p_selection(p_lo, p_hi))})
    oracle = pd.DataFrame(rows)
    oracle.to_csv(out / "oracle.csv", index=False)

    phi_error = np.abs(np.mod(pred["phi"] - t["phi"] + np.pi / 2, np.pi) - np.pi / 2)
    tip_px = phi_error / (0.5 * t["d"]) * 0.5 * extent
    rows = []
    for p_lo, p_hi in P_RANGES:
        sel = p_selection(p_lo, p_hi) & (pred["d"] == t["d"]) & (t["l_ratio"] >= 1.05)
        rows.append({"p_range": f"[{p_lo}, {p_hi})", "n": int(sel.sum()),
                     "median_tip_shift_px": float(np.median(tip_px[sel])),
                     "p75_tip_shift_px": float(np.percentile(tip_px[sel], 75))})
    tip = pd.DataFrame(rows)
    tip.to_csv(out / "cnn_tip_error.csv", index=False)

    whole = turn_floor[turn_floor.p_range == f"[0.0, {math.inf})"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for (p_lo, p_hi), marker in zip(P_RANGES, "os^vD"):
        part = turn_floor[turn_floor.p_range == f"[{p_lo}, {p_hi})"]
        ax.plot(part.tip_shift_px, part.jaccard_p10, marker + "-", label=f"p in [{p_lo:g}, {p_hi:g})")
    ax.axhline(0.85, color="k", ls="--", lw=1, label="issue 4 target (p10 >= 0.85)")
    ax.axhline(float(np.percentile(cnn_jaccard, 10)), color="tab:red", ls=":", lw=1.5, label="the CNN (all p)")
    ax.set_xlabel("turn of the true shape: shift of its farthest point (px of the source image)")
    ax.set_ylabel("10th percentile of the shape Jaccard")
    ax.set_title("a sub-pixel turn, and nothing else wrong")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax = axes[1]
    edges = np.linspace(0, 1.0, 41)
    for (p_lo, p_hi) in ((1.0, 6.0), (6.0, math.inf)):
        sel = p_selection(p_lo, p_hi)
        ax.hist(np.minimum(moved[sel], 1.0), edges, alpha=0.5, label=f"p in [{p_lo:g}, {p_hi:g})")
    ax.set_xlabel(f"largest outline shift for log p +- {LOG_P_STEP} (px of the source image)")
    ax.set_ylabel("particles")
    ax.set_title("what a log p error of 0.15 looks like in the image")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "resolution_floor.png", dpi=110)
    plt.close(fig)

    everything_row = lambda table: table[table.p_range == f"[0.0, {math.inf})"]  # noqa: E731
    summary = {
        "command": "python experiments/cnn_resolution_floor.py" + ("" if args.n == 13_000 else f" --n {args.n}"),
        "n": args.n,
        "model": args.model or "shipped (nanoshape/data/model)",
        "cnn_jaccard_median": float(np.median(cnn_jaccard)),
        "cnn_jaccard_p10": float(np.percentile(cnn_jaccard, 10)),
        "cnn_median_abs_log_p_error": float(np.median(log_p_error)),
        "turned_truth_jaccard_p10_by_tip_shift_px": {str(s): float(v) for s, v in zip(whole.tip_shift_px, whole.jaccard_p10)},
        "share_where_log_p_0.15_moves_outline_below_px": {
            str(s): float(everything_row(log_p_floor)[f"share_outline_moves_below_{s}px"].iloc[0]) for s in OUTLINE_SHIFTS_PX},
        "cnn_median_tip_shift_px_by_p": dict(zip(tip.p_range, tip.median_tip_shift_px.astype(float))),
        "seconds": time.perf_counter() - begin,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    print(by_extent[by_extent.p_range == f"[0.0, {math.inf})"].round(3).to_string(index=False))
    print(turn_floor.round(3).to_string(index=False))
    print(log_p_floor.round(3).to_string(index=False))
    print(oracle.round(3).to_string(index=False))
    print(tip.round(3).to_string(index=False))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
