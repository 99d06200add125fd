"""Diagnostics of a trained shape CNN (Fig. 3 of the seed paper, and calibration).

    python experiments/cnn_diagnostics.py RUN_DIR [--output DIR]

RUN_DIR is a ``nanoshape train`` run directory (``metrics.jsonl``, ``test_predictions.npz``
written at the end of training). Writes PNG + CSV into ``DIR`` (default
``RUN_DIR/diagnostics``):

- ``learning_curve``: training and validation RMSE of log p, log L and phi, and the d
  accuracy, by step;
- ``d_qq``: quantiles of predicted against true d, and the d confusion matrix;
- ``rmse_by_p``: RMSE of log p (and the median Jaccard of the re-rendered shape) in bins of
  the true p;
- ``calibration``: for nominal central intervals 10 % .. 95 %, the fraction of test
  truths inside the predicted interval (log p, log L, phi); the diagonal is perfect.
- ``targets_by_p_range.csv``: the issue's test-set figures (10th percentile and median of
  the shape Jaccard, median |log p error|) on the whole prior and on the parts of it a
  64 px crop resolves: without the thinnest stars (arms narrower than a pixel, where the
  renderer itself is off by several %) and without p > 6 (where log p no longer changes
  the drawn shape).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.stats import norm


def learning_curve(run: Path, out: Path) -> pd.DataFrame:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    table = pd.DataFrame(rows)
    table.to_csv(out / "learning_curve.csv", index=False)
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, name, label in zip(axes, ("rmse_log_p", "rmse_log_l", "rmse_phi", "d_accuracy"),
                               ("RMSE log p", "RMSE log L", "RMSE phi (rad)", "d accuracy")):
        ax.plot(table.step, table[f"train_{name}"], label="training (mean since last log)")
        if f"val_{name}" in table:
            val = table.dropna(subset=[f"val_{name}"])
            ax.plot(val.step, val[f"val_{name}"], "o-", label="validation (fixed set)")
        ax.set_xlabel("step")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "learning_curve.png", dpi=110)
    plt.close(fig)
    return table


def d_plots(test: dict, out: Path) -> None:
    true_d, pred_d = test["true_d"], test["pred_d"]
    levels = np.linspace(0.01, 0.99, 99)
    qq = pd.DataFrame({"quantile": levels, "true_d": np.quantile(true_d, levels), "pred_d": np.quantile(pred_d, levels)})
    qq.to_csv(out / "d_qq.csv", index=False)
    confusion = pd.crosstab(pd.Series(true_d, name="true d"), pd.Series(pred_d, name="predicted d"))
    confusion.to_csv(out / "d_confusion.csv")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    axes[0].plot(qq.true_d, qq.pred_d, "o", alpha=0.6)
    axes[0].plot([1, 6], [1, 6], "k--", lw=1)
    axes[0].set_xlabel("true d quantile")
    axes[0].set_ylabel("predicted d quantile")
    axes[0].set_title("Q-Q: predicted against true d")
    shares = confusion.div(confusion.sum(axis=1), axis=0)
    image = axes[1].imshow(shares.to_numpy(), cmap="Blues", vmin=0, vmax=1)
    axes[1].set_xticks(range(shares.shape[1]), shares.columns)
    axes[1].set_yticks(range(shares.shape[0]), shares.index)
    for (i, j), value in np.ndenumerate(shares.to_numpy()):
        axes[1].text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value > 0.5 else "black")
    axes[1].set_xlabel("predicted d")
    axes[1].set_ylabel("true d")
    axes[1].set_title("d confusion (row shares)")
    fig.colorbar(image, ax=axes[1], fraction=0.046)
    fig.tight_layout()
    fig.savefig(out / "d_qq.png", dpi=110)
    plt.close(fig)


def rmse_by_p(test: dict, out: Path) -> pd.DataFrame:
    true_p = test["true_p"]
    edges = np.exp(np.linspace(np.log(true_p.min()), np.log(true_p.max()) + 1e-6, 13))
    which = np.digitize(true_p, edges) - 1
    err = np.log(test["pred_p"]) - np.log(true_p)
    rows = []
    for b in range(len(edges) - 1):
        sel = which == b
        if sel.sum():
            rows.append({"p_low": edges[b], "p_high": edges[b + 1], "n": int(sel.sum()),
                         "rmse_log_p": float(np.sqrt(np.mean(err[sel] ** 2))),
                         "median_abs_error_log_p": float(np.median(np.abs(err[sel]))),
                         "median_jaccard": float(np.median(test["jaccard"][sel]))})
    table = pd.DataFrame(rows)
    table.to_csv(out / "rmse_by_p.csv", index=False)
    centers = np.sqrt(table.p_low * table.p_high)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.semilogx(centers, table.rmse_log_p, "o-", label="RMSE log p")
    ax.semilogx(centers, table.median_abs_error_log_p, "s-", label="median |error| log p")
    ax.set_xlabel("true p")
    ax.set_ylabel("error in log p")
    ax2 = ax.twinx()
    ax2.semilogx(centers, table.median_jaccard, "^-", color="tab:green", label="median shape Jaccard")
    ax2.set_ylim(0.5, 1.0)
    ax2.set_ylabel("median Jaccard (re-rendered vs true shape)")
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "rmse_by_p.png", dpi=110)
    plt.close(fig)
    return table


def calibration(test: dict, out: Path) -> pd.DataFrame:
    err_p = np.abs(np.log(test["pred_p"]) - np.log(test["true_p"]))
    err_l = np.abs(np.log(test["pred_l_ratio"]) - np.log(np.maximum(test["true_l_ratio"], 1.0)))
    err_phi = np.abs(np.mod(test["pred_phi"] - test["true_phi"] + np.pi / 2, np.pi) - np.pi / 2)
    nominal = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    z = norm.ppf(0.5 + nominal / 2)
    table = pd.DataFrame({
        "nominal": nominal,
        "log_p": [np.mean(err_p <= k * test["pred_p_log_std"]) for k in z],
        "log_l": [np.mean(err_l <= k * test["pred_l_ratio_log_std"]) for k in z],
        "phi": [np.mean(err_phi <= k * test["pred_phi_std"]) for k in z],
    })
    table.to_csv(out / "calibration.csv", index=False)
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    for column in ("log_p", "log_l", "phi"):
        ax.plot(table.nominal, table[column], "o-", label=column)
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set_xlabel("nominal coverage of the central interval")
    ax.set_ylabel("fraction of test truths inside")
    ax.set_title("Calibration of the predicted uncertainties")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "calibration.png", dpi=110)
    plt.close(fig)
    return table


def targets_by_p_range(test: dict, out: Path) -> pd.DataFrame:
    p, jaccard = test["true_p"], test["jaccard"]
    log_p_error = np.abs(np.log(test["pred_p"] / p))
    rows = []
    for lo, hi in ((0.0, np.inf), (0.4, np.inf), (0.5, np.inf), (0.6, np.inf), (0.0, 6.0), (0.0, 4.0), (0.5, 6.0)):
        sel = (p >= lo) & (p <= hi)
        rows.append({"p_min": lo, "p_max": hi, "share_of_prior": sel.mean(), "n": int(sel.sum()),
                     "jaccard_p10": np.percentile(jaccard[sel], 10), "jaccard_median": np.median(jaccard[sel]),
                     "median_abs_log_p_error": np.median(log_p_error[sel])})
    table = pd.DataFrame(rows)
    table.to_csv(out / "targets_by_p_range.csv", index=False)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    out = args.output or args.run / "diagnostics"
    out.mkdir(parents=True, exist_ok=True)
    learning_curve(args.run, out)
    test = dict(np.load(args.run / "test_predictions.npz"))
    d_plots(test, out)
    by_p = rmse_by_p(test, out)
    cal = calibration(test, out)
    targets = targets_by_p_range(test, out)
    print(f"diagnostics of {args.run} -> {out}")
    print(targets.round(3).to_string(index=False))
    print(by_p.round(3).to_string(index=False))
    print(cal.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
