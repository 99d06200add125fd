"""How well could *any* method read the shape from the test images? A Cramér-Rao bound per image.

    python experiments/cnn_information_bound.py               (about 3 minutes on a 2-core CPU)
    python experiments/cnn_information_bound.py --fit-blind   (the fit without the film, beam or true d)
    python experiments/cnn_information_bound.py --flat        (flat plates: no dome term in the bound)
    python experiments/cnn_information_bound.py --n 512       (about a minute)

Issue 4 asks, on the rendered test set, for a median |log p error| <= 0.15 and a 10th
percentile of the shape Jaccard >= 0.85. This script asks what the images themselves allow.
For each test particle (the first ``--n`` of the test set, rendered exactly as
:func:`nanoshape.trainingdata.training_example` renders it) it differentiates the *expected*
bright-field image (dose x blurred beam x film x exp(-mu t), before shot noise) with respect
to nine unknowns: log p, log L, phi, the centre (x, y), the log scale, the contrast, the
dome and the log blur. With Poisson shot noise the Fisher information is
``F = J^T diag(1 / counts) J`` and no unbiased estimator has a smaller covariance than
``F^-1`` (Cramér-Rao). The observer of the bound is generous: it knows d, the film's texture,
the beam's gradient and the dose exactly, and sees the whole 64 px canvas at full resolution.

From ``F^-1`` it simulates that observer: an error drawn from ``N(0, F^-1)`` for each particle
(the efficient estimator's error), log p and log L kept inside the prior, and reports

- ``median_abs_error_log_p_bound``: the median |log p error| of the efficient observer, and
  of a Bayesian one (posterior median of log p under the flat prior on [log 0.25, log 64]
  and the Gaussian likelihood, which the bounded prior helps where the images say little);
- ``jaccard_p10_bound``: the 10th percentile (and median) of the shape Jaccard
  (:func:`nanoshape.refine.shape_jaccard`) between the truth and the efficient observer's
  (p, d, L, phi);
- the CNN's figures on the same particles, for comparison;
- ``fit_*``: an actual estimator that uses the image alone, to show the bound is not just
  arithmetic: a Poisson likelihood fit of the canvas (``--fit-steps`` Adam steps, all nine
  unknowns free) started from the CNN's p, L and phi and the true centre, size, contrast,
  dome and blur, with the true d and film; ``--fit-blind`` takes the CNN's d and a flat film
  and beam instead.

What the bound leaves out: the training crops carry a second channel, the particle mask,
made from the *noise-free* coverage (blurred and thresholded). It stands in for a
segmentation, which in a real micrograph is computed from the noisy image and adds no
information; on rendered crops it leaks the true outline at pixel resolution. A figure
better than the bound is therefore possible on rendered crops, but only through that leak,
not from the image.

With ``--flat`` every particle is imaged as a flat plate (dome 0), for the bound and for the
CNN's crops: the dome profile sqrt(1 - (1 - depth)^2) has a vertical tangent at the edge,
and sampled at pixel centres its derivative overstates what a pixel, which integrates,
would tell. The flat run has no such term.

Writes ``summary.json``, ``per_particle.csv`` and ``bound.png`` to
``experiments/results/cnn_information_bound/`` (``..._flat/`` with ``--flat``; ``--output``
to change).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAMES = ("log_p", "log_l", "phi", "center_x", "center_y", "log_scale", "contrast", "dome", "log_blur")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2048, help="test particles (a multiple of 256)")
    parser.add_argument("--seed", type=int, default=2_000_003, help="the test set's seed")
    parser.add_argument("--draws", type=int, default=8, help="simulated observer errors per particle")
    parser.add_argument("--fit-steps", type=int, default=150, help="Adam steps of the likelihood fit (0 = no fit)")
    parser.add_argument("--fit-blind", action="store_true",
                        help="the likelihood fit does not know the film texture, the beam gradient or d (CNN's d)")
    parser.add_argument("--flat", action="store_true",
                        help="image every particle as a flat plate (dome 0) for the bound and the CNN alike: the dome "
                             "profile's vertical tangent at the edge, sampled at pixel centres, inflates the information")
    parser.add_argument("--output", type=Path, default=parse_args.default_output)
    return parser.parse_args()


parse_args.default_output = REPO / "experiments" / "results" / "cnn_information_bound"


def main():
    import jax
    import jax.numpy as jnp
    import matplotlib
    import numpy as np
    import pandas as pd
    from scipy.stats import norm

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nanoshape.cnn import load_model, predict
    from nanoshape.refine import shape_jaccard
    import optax

    from nanoshape.render import (
        Imaging,
        expected_counts,
        film_transmission,
        optical_density,
        particle_thickness,
        tem_image,
    )
    from nanoshape.shape import ShapeParams, ShapePrior
    from nanoshape.trainingdata import training_draws, training_example

    args = parse_args()
    started = time.perf_counter()
    imaging = Imaging(dome_range=(0.0, 0.0)) if args.flat else Imaging()
    prior, canvas, lo_fraction, hi_fraction = ShapePrior(), 64, 0.2, 0.9
    if args.output == parse_args.default_output:
        args.output = args.output.with_name(args.output.name + ("_flat" if args.flat else "")
                                            + ("_blind_fit" if args.fit_blind else ""))
    if imaging.dark_field or imaging.exact_poisson or imaging.quantize_levels:
        raise SystemExit("the bound is written for the default bright-field imaging model")
    args.output.mkdir(parents=True, exist_ok=True)

    def components(key):
        """training_example's draws for this key (shape, pose, imaging, film), its observed counts, the truth."""
        draws = training_draws(key, prior=prior, imaging=imaging, canvas_px=canvas,
                               extent_fraction_range=(lo_fraction, hi_fraction))
        shape, center, scale, extent, params, key_noise, _ = draws
        coverage, thickness = particle_thickness(shape, center, scale, params.dome, height=canvas, width=canvas)
        observed = tem_image(key_noise, optical_density(coverage, thickness, params.contrast), params, imaging) * params.dose
        film = film_transmission(key_noise, params, imaging, canvas, canvas)
        theta = jnp.stack([jnp.log(shape.p), jnp.log(shape.l_ratio), shape.phi, center[0], center[1], jnp.log(scale),
                           params.contrast, params.dome, jnp.log(params.blur_sigma_px)])
        return theta, shape.d, film, params, extent, observed

    def expected(theta, d, film, params):
        """tem_image's noise-free counts as a function of the nine unknowns (the rest from ``params``)."""
        shape = ShapeParams(jnp.exp(theta[0]), d, jnp.exp(theta[1]), theta[2])
        coverage, thickness = particle_thickness(shape, theta[3:5], jnp.exp(theta[5]), theta[7], height=canvas, width=canvas)
        params = params._replace(contrast=theta[6], dome=theta[7], blur_sigma_px=jnp.exp(theta[8]))
        density = optical_density(coverage, thickness, theta[6])
        return jnp.maximum(expected_counts(density, film, params, imaging), 1e-3)

    def fisher(key):
        theta, d, film, params, extent, _ = components(key)
        counts = expected(theta, d, film, params)
        jac = jax.jacfwd(expected)(theta, d, film, params).reshape(-1, len(NAMES))
        info = jac.T @ (jac / counts.reshape(-1, 1))
        return theta, d, extent, info

    # the likelihood fit: Poisson NLL of the observed counts, Adam with a step size per unknown
    steps_per_unknown = jnp.asarray([0.05, 0.02, 0.02, 0.1, 0.1, 0.01, 0.01, 0.02, 0.02], jnp.float32)
    lo_p, hi_p = math.log(prior.p_range[0]), math.log(prior.p_range[1])

    def likelihood_fit(key, start_shape, start_d):
        theta_true, d, film, params, _, observed = components(key)
        start = theta_true.at[0:3].set(start_shape)
        if args.fit_blind:
            # the film's texture and the beam's gradient unknown (taken flat), d from the CNN
            film, d = jnp.ones_like(film), start_d
            params = params._replace(gradient_x=jnp.zeros_like(params.gradient_x), gradient_y=jnp.zeros_like(params.gradient_y))

        def nll(theta):
            mu = expected(theta, d, film, params)
            return jnp.sum(mu - observed * jnp.log(mu)) / (canvas * canvas)

        tx = optax.adam(optax.cosine_decay_schedule(1.0, args.fit_steps, 0.05))

        def step(carry, _):
            theta, state = carry
            grad = jax.grad(nll)(theta)
            updates, state = tx.update(grad, state)
            theta = theta + updates * steps_per_unknown
            theta = theta.at[0].set(jnp.clip(theta[0], lo_p, hi_p))
            return (theta, state), None

        (theta, _), _ = jax.lax.scan(step, (start, tx.init(start)), None, length=args.fit_steps)
        return theta

    fisher_batch = jax.jit(jax.vmap(fisher))
    render_batch = jax.jit(jax.vmap(lambda k: training_example(k, imaging=imaging)[0]))
    jaccard = jax.jit(jax.vmap(shape_jaccard))
    model = load_model()

    rows, crops = [], []
    batch = 256
    key = jax.random.fold_in(jax.random.key(args.seed), 0)
    keys = jax.random.split(key, args.n)  # the first n particles of a test batch of n
    for start in range(0, args.n, batch):
        part = keys[start : start + batch]
        theta, d, extent, info = (np.asarray(a, np.float64) for a in fisher_batch(part))
        crops.append(np.asarray(render_batch(part)))
        for i in range(len(part)):
            rows.append((theta[i], int(d[i]), float(extent[i]), info[i]))
        print(f"  {start + len(part)}/{args.n} particles, {time.perf_counter() - started:.0f} s", flush=True)
    theta = np.stack([r[0] for r in rows])
    d = np.array([r[1] for r in rows])
    extent = np.array([r[2] for r in rows])
    info = np.stack([r[3] for r in rows])
    # F = V diag(lam) V^T; an eigenvalue floor of 1e-9 of the largest keeps F invertible where a
    # direction carries nothing (phi of a circle): there the bound is the prior, not the image
    lam, vectors = np.linalg.eigh(0.5 * (info + np.swapaxes(info, 1, 2)))
    lam = np.maximum(lam, 1e-9 * np.maximum(lam[:, -1:], 1e-30))
    root = vectors / np.sqrt(lam)[:, None, :]  # covariance = root @ root^T
    covariance = root @ np.swapaxes(root, 1, 2)
    std = np.sqrt(np.clip(np.diagonal(covariance, axis1=1, axis2=2), 0.0, None))
    std_known = 1.0 / np.sqrt(np.maximum(info[:, 0, 0], 1e-30))  # log p with everything else known

    rng = np.random.default_rng(0)
    hi_l = math.log(prior.l_ratio_range[1])
    true_p, true_l, true_phi = np.exp(theta[:, 0]), np.exp(theta[:, 1]), theta[:, 2]

    def posterior_median(observed, sigma):
        """Median of N(observed, sigma^2) truncated to the prior's [lo_p, hi_p] (flat prior on log p)."""
        a, b = norm.cdf((lo_p - observed) / sigma), norm.cdf((hi_p - observed) / sigma)
        return observed + sigma * norm.ppf(np.clip(0.5 * (a + b), 1e-12, 1 - 1e-12))

    efficient_p, bayes_p, jac_draws = [], [], []
    for _ in range(args.draws):
        draw = np.einsum("nij,nj->ni", root, rng.standard_normal((len(theta), len(NAMES))))
        observed_p = theta[:, 0] + draw[:, 0]
        efficient_p.append(np.abs(np.clip(observed_p, lo_p, hi_p) - theta[:, 0]))
        bayes_p.append(np.abs(posterior_median(observed_p, np.maximum(std[:, 0], 1e-6)) - theta[:, 0]))
        guess = ShapeParams(jnp.asarray(np.exp(np.clip(observed_p, lo_p, hi_p)), jnp.float32), jnp.asarray(d, jnp.int32),
                            jnp.asarray(np.exp(np.clip(theta[:, 1] + draw[:, 1], 0.0, hi_l)), jnp.float32),
                            jnp.asarray(true_phi + draw[:, 2], jnp.float32))
        truth = ShapeParams(jnp.asarray(true_p, jnp.float32), jnp.asarray(d, jnp.int32),
                            jnp.asarray(true_l, jnp.float32), jnp.asarray(true_phi, jnp.float32))
        jac_draws.append(np.asarray(jaccard(guess, truth)))
    efficient_p, bayes_p, jac_draws = np.stack(efficient_p), np.stack(bayes_p), np.stack(jac_draws)

    out = predict(model, np.concatenate(crops))
    cnn_guess = ShapeParams(*(jnp.asarray(out[k]) for k in ("p", "d", "l_ratio", "phi")))
    cnn_jaccard = np.asarray(jaccard(cnn_guess, truth))
    cnn_log_p = np.abs(np.log(out["p"]) - theta[:, 0])

    fit_log_p = fit_jaccard = None
    if args.fit_steps > 0:
        fit_batch = jax.jit(jax.vmap(likelihood_fit))
        start_shapes = np.stack([np.log(out["p"]), np.log(out["l_ratio"]), out["phi"]], axis=1).astype(np.float32)
        fitted = np.concatenate([np.asarray(fit_batch(keys[i : i + batch], jnp.asarray(start_shapes[i : i + batch]),
                                                      jnp.asarray(out["d"][i : i + batch], jnp.int32)))
                                 for i in range(0, args.n, batch)])
        fit_d = out["d"] if args.fit_blind else d
        print(f"  likelihood fits done, {time.perf_counter() - started:.0f} s", flush=True)
        fit_log_p = np.abs(fitted[:, 0] - theta[:, 0])
        fit_guess = ShapeParams(jnp.asarray(np.exp(fitted[:, 0]), jnp.float32), jnp.asarray(fit_d, jnp.int32),
                                jnp.asarray(np.exp(fitted[:, 1]), jnp.float32), jnp.asarray(fitted[:, 2], jnp.float32))
        fit_jaccard = np.asarray(jaccard(fit_guess, truth))

    p_bins = ((0.0, 0.5), (0.5, 1.0), (1.0, 6.0), (6.0, math.inf), (0.0, math.inf))
    by_p = []
    for lo, hi in p_bins:
        sel = (true_p >= lo) & (true_p < hi)
        by_p.append({
            "p_range": f"[{lo}, {hi})", "n": int(sel.sum()),
            "bound_median_abs_log_p_efficient": float(np.median(efficient_p[:, sel])),
            "bound_median_abs_log_p_bayes": float(np.median(bayes_p[:, sel])),
            "bound_median_std_log_p_everything_else_known": float(np.median(std_known[sel])),
            "cnn_median_abs_log_p": float(np.median(cnn_log_p[sel])),
            "bound_jaccard_p10": float(np.percentile(jac_draws[:, sel], 10)),
            "cnn_jaccard_p10": float(np.percentile(cnn_jaccard[sel], 10)),
            **({} if fit_log_p is None else {
                "fit_median_abs_log_p": float(np.median(fit_log_p[sel])),
                "fit_jaccard_p10": float(np.percentile(fit_jaccard[sel], 10))}),
        })
    summary = {
        "command": "python experiments/cnn_information_bound.py" + (f" --n {args.n}" if args.n != 2048 else "")
                   + (" --flat" if args.flat else "") + (" --fit-blind" if args.fit_blind else ""),
        "imaging": "flat plates (dome 0)" if args.flat else "the full imaging model (dome 0-1)",
        "n": int(args.n), "draws_per_particle": int(args.draws),
        "observer": "Cramér-Rao (Poisson shot noise), knows d, film texture, beam gradient and dose; "
                    "estimates " + ", ".join(NAMES),
        "bound_median_abs_error_log_p_efficient": float(np.median(efficient_p)),
        "bound_median_abs_error_log_p_bayes": float(np.median(bayes_p)),
        "bound_median_abs_error_log_p_everything_else_known": float(np.median(0.6745 * std_known)),
        "bound_jaccard_median": float(np.median(jac_draws)),
        "bound_jaccard_p10": float(np.percentile(jac_draws, 10)),
        "cnn_median_abs_error_log_p": float(np.median(cnn_log_p)),
        "cnn_jaccard_median": float(np.median(cnn_jaccard)),
        "cnn_jaccard_p10": float(np.percentile(cnn_jaccard, 10)),
        "share_cnn_log_p_better_than_bound_std": float(np.mean(cnn_log_p < std[:, 0])),
        **({} if fit_log_p is None else {
            "fit": f"Poisson likelihood of the canvas, {args.fit_steps} Adam steps from the CNN's p, L, phi, "
                   + ("the CNN's d, film and beam taken flat (unknown), " if args.fit_blind else
                      "the true d, the true film and beam, ")
                   + "the true centre, size, contrast, dome and blur as the start (all nine free)",
            "fit_median_abs_error_log_p": float(np.median(fit_log_p)),
            "fit_jaccard_median": float(np.median(fit_jaccard)),
            "fit_jaccard_p10": float(np.percentile(fit_jaccard, 10))}),
        "by_p": by_p,
        "seconds": time.perf_counter() - started,
    }
    (args.output / "summary.json").write_text(json.dumps(summary, indent=1))
    table = pd.DataFrame({"p": true_p, "d": d, "l_ratio": true_l, "phi": true_phi, "extent_px": extent,
                          **{f"bound_std_{n}": std[:, i] for i, n in enumerate(NAMES)},
                          "bound_std_log_p_everything_else_known": std_known,
                          "bound_jaccard_median_of_draws": np.median(jac_draws, axis=0),
                          "cnn_abs_error_log_p": cnn_log_p, "cnn_jaccard": cnn_jaccard,
                          **({} if fit_log_p is None else {"fit_abs_error_log_p": fit_log_p, "fit_jaccard": fit_jaccard})})
    table.to_csv(args.output / "per_particle.csv", index=False)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].scatter(true_p, std[:, 0], s=3, alpha=0.4, label="Cramér-Rao std of log p (image)")
    axes[0].scatter(true_p, cnn_log_p, s=3, alpha=0.4, label="CNN |log p error|")
    axes[0].axhline(0.15, color="k", lw=0.8, ls="--", label="issue 4 median target")
    axes[0].set(xscale="log", yscale="log", xlabel="true p", ylabel="|log p error|, or its bound (std)", ylim=(1e-3, 10))
    axes[0].legend(fontsize=7, markerscale=3)
    grid = np.linspace(0.3, 1.0, 200)
    axes[1].plot(grid, [np.mean(jac_draws <= g) for g in grid], label="efficient observer of the image")
    axes[1].plot(grid, [np.mean(cnn_jaccard <= g) for g in grid], label="CNN (image + mask)")
    if fit_jaccard is not None:
        axes[1].plot(grid, [np.mean(fit_jaccard <= g) for g in grid], label="likelihood fit from the CNN (image)")
        axes[0].scatter(true_p, fit_log_p, s=3, alpha=0.4, label="likelihood fit |log p error|")
        axes[0].legend(fontsize=7, markerscale=3)
    axes[1].axvline(0.85, color="k", lw=0.8, ls="--")
    axes[1].axhline(0.10, color="k", lw=0.8, ls=":")
    axes[1].set(xlabel="shape Jaccard vs truth", ylabel="share of test particles at or below", ylim=(0, 0.5))
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.output / "bound.png", dpi=120)
    print(json.dumps({k: v for k, v in summary.items() if k != "by_p"}, indent=1))
    print(pd.DataFrame(by_p).to_string(index=False))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
