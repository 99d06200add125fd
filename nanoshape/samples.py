"""Sizes a chemist reports, per micrograph and per sample, and the comparison of samples.

A *sample* is one synthesis batch; each micrograph belongs to one, by default the name of its
folder (:func:`assign_samples`) or as a ``file,sample`` CSV says (:func:`read_sample_table`).
Small pure functions from tables to tables: one size unit per table, nm where every
micrograph has a pixel size, else px (:func:`size_unit`, :func:`sizes_in`); rod length and
width and cube edge from a fitted d = 2 shape (:func:`fitted_extents`); count, coverage and
mean / median / sd / cv per micrograph or sample (:func:`size_summary`); seeded BCa bootstrap
95 % intervals of the mean, median, cv and group shares (:func:`bootstrap_intervals`:
particles as independent draws, or whole micrographs given ``clusters``); and
Kolmogorov-Smirnov, Mann-Whitney and chi-square tests with effect sizes and Holm's correction
over pairs of samples (:func:`compare_pair`, :func:`pairwise_tests`, :func:`holm`).
"""

from __future__ import annotations

import itertools
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

__all__ = ["SIZE_MEASURES", "SHAPE_SIZES", "read_sample_table", "assign_samples", "size_unit", "sizes_in",
           "fitted_extents", "shape_sizes", "size_summary", "bootstrap_intervals", "holm", "compare_pair",
           "pairwise_tests", "widest", "MIN_MICROGRAPHS_FOR_CLUSTERS", "SampleTables", "sample_tables", "read_run_fields"]

#: particle columns (without their unit) summarised per micrograph and per sample, in order;
#: the ``_fit`` ones are the image fit's (nanoshape.pipeline.FIT_SIZE_COLUMNS)
SIZE_MEASURES = ("equivalent_diameter", "feret_min", "feret_max", "major_axis", "minor_axis",
                 "equivalent_diameter_fit", "major_axis_fit", "minor_axis_fit")

#: shape-specific sizes from the fitted shape: name -> (group names it applies to, what it is)
SHAPE_SIZES = {
    "rod_length": (("rods",), "rods: the fitted shape's extent along its long axis"),
    "rod_width": (("rods",), "rods: the fitted shape's extent across its long axis"),
    "cube_edge": (("cubes",), "cubes: the mean of the fitted shape's two axis extents"),
}

#: the size the confidence intervals and tests are about
DEFAULT_SIZE = "equivalent_diameter"


# ----------------------------------------------------------------------------- samples


def read_sample_table(path: str | os.PathLike) -> dict[str, str]:
    """The ``file,sample`` CSV's samples, keyed by file stem (results are keyed by stem).

    Raises:
      ValueError: the file is missing, lacks the two columns, names a file twice with two
        samples, or leaves a sample empty (the message names the file and the row).
    """
    from nanoshape.io import read_file_table

    samples: dict[str, str] = {}
    for row_number, file, sample in read_file_table(path, "sample", "sample table"):
        if not sample:
            raise ValueError(f"{path}, row {row_number}: file {file!r} has no sample")
        stem = Path(file).stem
        if samples.get(stem, sample) != sample:
            raise ValueError(f"{path}, row {row_number}: {file!r} is given two samples, {samples[stem]!r} and {sample!r}")
        samples[stem] = sample
    return samples


def assign_samples(paths: Mapping[str, str | os.PathLike], table: Mapping[str, str] | None = None) -> dict[str, str]:
    """Each micrograph's sample: ``table``'s where it names the micrograph, else its folder's name.

    Args:
      paths: micrograph stem -> the path it was read from.
      table: stem -> sample (:func:`read_sample_table`), overriding the folder.

    Returns:
      stem -> sample name.
    """
    table = table or {}
    out = {}
    for stem, path in paths.items():
        folder = Path(os.path.abspath(path)).parent.name
        out[stem] = table.get(stem) or folder or "sample"
    return out


# ------------------------------------------------------------------------------- units


def size_unit(pixel_sizes_nm: Iterable[float | None]) -> str:
    """``nm`` when every micrograph has a pixel size, else ``px``: one unit for a whole table.

    Args:
      pixel_sizes_nm: each micrograph's pixel size (None or NaN: none).
    """
    values = np.array([np.nan if v is None else v for v in pixel_sizes_nm], float)
    return "nm" if len(values) and bool((np.isfinite(values) & (values > 0)).all()) else "px"


def sizes_in(particles: pd.DataFrame, measure: str, unit: str, *, power: int = 1) -> np.ndarray:
    """One size measure of every particle in ``unit`` (NaN where the particle has none).

    Particles of calibrated micrographs carry ``<measure>_nm``, the others ``<measure>_px``;
    in px the nm values are divided by their micrograph's ``pixel_size_nm`` (to the
    ``power``: 2 for areas, whose columns end ``_nm2`` / ``_px2``).
    """
    tail = "" if power == 1 else str(power)
    nm = particles.get(f"{measure}_nm{tail}")
    out = np.full(len(particles), np.nan)
    if nm is not None:
        out = nm.to_numpy(float).copy()
        if unit == "px":
            out = out / particles["pixel_size_nm"].to_numpy(float) ** power
    elif unit == "nm":
        return out
    px = particles.get(f"{measure}_px{tail}")
    if unit == "px" and px is not None:
        values = px.to_numpy(float)
        out = np.where(np.isfinite(values), values, out)
    return out


# --------------------------------------------------------------------- fitted shape sizes


def fitted_extents(p: np.ndarray, l_ratio: np.ndarray, equivalent_diameter: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Length and width of two-axis fitted shapes (d = 2) of a given area-equivalent diameter.

    With d = 2, eq. 1 of the seed paper is the superellipse |L x|^p + |y|^p = 1 (x along
    the phase direction): its half-extents are 1/L and 1, and its area is
    4 Gamma(1 + 1/p)^2 / (L Gamma(1 + 2/p)) (Lamé curve). Scaled to the particle's area
    (pi D^2 / 4), the extents along its two axes are 2 s and 2 s / L with
    s = (D / 2) sqrt(pi / A_unit).

    Args:
      p, l_ratio: (n,) fitted curvature and axis ratio (any L > 0; the larger extent is the length).
      equivalent_diameter: (n,) area-equivalent diameter, in the unit wanted.

    Returns:
      (length, width), each (n,), in the unit of ``equivalent_diameter``.
    """
    from scipy.special import gammaln

    p, l_ratio, diameter = (np.asarray(v, float) for v in (p, l_ratio, equivalent_diameter))
    unit_area = 4.0 * np.exp(2 * gammaln(1 + 1 / p) - gammaln(1 + 2 / p)) / l_ratio
    scale = 0.5 * diameter * np.sqrt(np.pi / unit_area)
    a, b = 2 * scale, 2 * scale / l_ratio
    return np.maximum(a, b), np.minimum(a, b)


def shape_sizes(particles: pd.DataFrame, unit: str) -> pd.DataFrame:
    """Rod length and width and cube edge (:data:`SHAPE_SIZES`) of the particles in groups so named.

    The fitted shape is the image fit's (``p_image``, ``l_ratio_image``, sized by
    ``equivalent_diameter_fit``, whose edge the imaging model places) where the run has it,
    else the refined one (``p``, ``l_ratio``) sized by the mask's ``equivalent_diameter``;
    only two-axis shapes (d = 2) get these sizes. NaN elsewhere.

    Returns:
      one column per :data:`SHAPE_SIZES` entry, ``<name>_<unit>``, in the row order of ``particles``.
    """
    n = len(particles)
    out = pd.DataFrame({f"{name}_{unit}": np.full(n, np.nan) for name in SHAPE_SIZES}, index=particles.index)
    if "group_name" not in particles or n == 0:
        return out
    fit = sizes_in(particles, "equivalent_diameter_fit", unit)
    use_fit = np.isfinite(fit) & particles.get("p_image", pd.Series(np.nan, index=particles.index)).notna().to_numpy()
    pick = {k: np.where(use_fit, particles.get(f"{k}_image", pd.Series(np.nan, index=particles.index)).to_numpy(float),
                        particles.get(k, pd.Series(np.nan, index=particles.index)).to_numpy(float))
            for k in ("p", "d", "l_ratio")}
    diameter = np.where(use_fit, fit, sizes_in(particles, "equivalent_diameter", unit))
    two_axes = pick["d"] == 2
    length, width = fitted_extents(np.where(two_axes, pick["p"], 2.0), np.where(two_axes, pick["l_ratio"], 1.0), diameter)
    names = particles["group_name"].astype(str).to_numpy()
    for name, (groups, _) in SHAPE_SIZES.items():
        member = two_axes & np.array([n_.startswith(groups) for n_ in names], bool)
        value = {"rod_length": length, "rod_width": width, "cube_edge": 0.5 * (length + width)}[name]
        out[f"{name}_{unit}"] = np.where(member, value, np.nan)
    return out


# ----------------------------------------------------------------------- summary tables


def _describe(values: np.ndarray, stem: str, unit: str) -> dict[str, float]:
    """mean, median, sd (n - 1) and cv (sd / mean, a ratio) of the finite values, named after their column."""
    x = values[np.isfinite(values)]
    mean = float(x.mean()) if len(x) else math.nan
    sd = float(x.std(ddof=1)) if len(x) > 1 else math.nan
    return {f"mean_{stem}_{unit}": mean, f"median_{stem}_{unit}": float(np.median(x)) if len(x) else math.nan,
            f"sd_{stem}_{unit}": sd, f"cv_{stem}": sd / mean if mean > 0 else math.nan}


def size_summary(particles: pd.DataFrame, fields: pd.DataFrame, by: str, unit: str) -> pd.DataFrame:
    """Count, coverage and every size's mean / median / sd / cv, per micrograph or per sample.

    Args:
      particles: the run's particle table (columns ``image``, ``sample``, sizes, ``pixel_size_nm``).
      fields: one row per micrograph analysed: ``image``, ``sample``, ``height_px``,
        ``width_px``, ``pixel_size_nm`` (micrographs without particles count too).
      by: ``image`` (one row per micrograph) or ``sample``.
      unit: ``nm`` or ``px`` (:func:`size_unit`).

    Returns:
      one row per micrograph or sample: ``micrographs``, ``particles``, ``coverage_fraction``
      (projected particle area over the micrographs' area), then for each size of
      :data:`SIZE_MEASURES` the run has and each of :data:`SHAPE_SIZES`: ``mean_<size>_<unit>``,
      ``median_...``, ``sd_...`` and ``cv_<size>`` (sd / mean: the polydispersity ratio);
      the shape sizes with ``<name>_count``.
    """
    measures = [m for m in SIZE_MEASURES if np.isfinite(sizes_in(particles, m, unit)).any()]
    table = pd.DataFrame({m: sizes_in(particles, m, unit) for m in measures}, index=particles.index)
    shapes = shape_sizes(particles, unit)
    shape_names = [n for n in SHAPE_SIZES if np.isfinite(shapes[f"{n}_{unit}"]).any()]
    area_px = sizes_in(particles, "area", "px", power=2)
    field_px = (fields["height_px"] * fields["width_px"]).to_numpy(float)
    field_scale = fields["pixel_size_nm"].to_numpy(float) ** 2 if unit == "nm" else np.ones(len(fields))
    field_area = pd.Series(field_px * field_scale, index=fields.index).groupby(fields[by]).sum()
    particle_scale = particles["pixel_size_nm"].to_numpy(float) ** 2 if unit == "nm" else 1.0
    particle_area = pd.Series(area_px * particle_scale, index=particles.index)
    rows = []
    for key, part in fields.groupby(by, sort=True):
        mine = (particles[by] == key).to_numpy() if len(particles) else np.zeros(0, bool)
        row = {by: key}
        if by == "image":
            row["sample"] = part["sample"].iloc[0]
            row["pixel_size_nm"] = float(part["pixel_size_nm"].iloc[0])
        else:
            row["micrographs"] = int(len(part))
        row["particles"] = int(mine.sum())
        row["coverage_fraction"] = float(np.nansum(particle_area[mine])) / field_area[key] if field_area[key] > 0 else math.nan
        for m in measures:
            row.update(_describe(table[m].to_numpy()[mine], m, unit))
        for name in shape_names:
            values = shapes[f"{name}_{unit}"].to_numpy()[mine]
            row[f"{name}_count"] = int(np.isfinite(values).sum())
            row.update(_describe(values, name, unit))
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- bootstrap


def _rng(seed: int, sample: str) -> np.random.Generator:
    """One generator per (seed, sample name): a sample's intervals do not depend on which others are compared."""
    return np.random.default_rng([int(seed), zlib.crc32(str(sample).encode("utf-8"))])


def _resampled(rng: np.random.Generator, values: np.ndarray, n_boot: int, statistic, max_elements: int = 4_000_000):
    """``statistic`` of ``n_boot`` resamples (with replacement, same size) of ``values``, in chunks: (n_boot, ...)."""
    n = len(values)
    chunk = max(1, max_elements // max(n, 1))
    parts = []
    for start in range(0, n_boot, chunk):
        index = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        parts.append(statistic(values[index]))
    return np.concatenate(parts)


def _size_statistics(x: np.ndarray) -> np.ndarray:
    """(..., n) -> (..., 3): mean, median, cv (sd with n - 1 over mean)."""
    mean = x.mean(axis=-1)
    return np.stack([mean, np.median(x, axis=-1), x.std(axis=-1, ddof=1) / mean], axis=-1)


def _jackknife_sizes(x: np.ndarray) -> np.ndarray:
    """(n,) -> (n, 3): :func:`_size_statistics` with each particle left out, in closed form (O(n log n))."""
    n = len(x)
    total, squares = x.sum(), (x * x).sum()
    mean = (total - x) / (n - 1)
    var = (squares - x * x - (n - 1) * mean**2) / max(n - 2, 1)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(n, int)
    ranks[order] = np.arange(n)
    ordered = x[order]

    def kept(j: int) -> np.ndarray:  # the j-th smallest of the n - 1 left, for each left-out rank
        return np.where(ranks > j, ordered[j], ordered[min(j + 1, n - 1)])

    m = n - 1
    median = kept(m // 2) if m % 2 else 0.5 * (kept(m // 2 - 1) + kept(m // 2))
    return np.stack([mean, median, np.sqrt(np.maximum(var, 0.0)) / mean], axis=-1)


def _jackknife_shares(g: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(m,) -> (m, K): the shares of ``labels`` with each particle left out."""
    member = (g[:, None] == labels).astype(float)
    return (member.sum(axis=0) - member) / (len(g) - 1)


def _bca(point: np.ndarray, boot: np.ndarray, jack: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Bias-corrected and accelerated bootstrap interval (Efron 1987; Efron & Tibshirani 1993, ch. 14).

    The percentile interval's quantiles are moved by the bias z0 (the normal quantile of
    the share of resampled statistics below the estimate, ties counted half) and the
    acceleration a (from the jackknife's skewness): alpha' = Phi(z0 + (z0 + z) / (1 - a (z0 + z))).
    Falls back to the percentile interval where z0 or a is not finite (a constant sample).

    Args:
      point: (k,) the statistics on the sample; boot: (B, k) on the resamples; jack: (n, k)
        with each particle left out.
    """
    from scipy.stats import norm

    below = (boot < point).mean(axis=0) + 0.5 * (boot == point).mean(axis=0)
    z0 = norm.ppf(np.clip(below, 1.0 / (len(boot) + 1), 1 - 1.0 / (len(boot) + 1)))
    d = jack.mean(axis=0) - jack
    with np.errstate(invalid="ignore", divide="ignore"):
        a = (d**3).sum(axis=0) / (6.0 * ((d**2).sum(axis=0)) ** 1.5)
    alpha = (1 - level) / 2
    bounds = []
    for z in norm.ppf([alpha, 1 - alpha]):
        with np.errstate(invalid="ignore", divide="ignore"):
            q = norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
        q = np.where(np.isfinite(q), q, norm.cdf(z))
        bounds.append(np.array([np.quantile(boot[:, k], q[k]) for k in range(boot.shape[1])]))
    return bounds[0], bounds[1]


def _cluster_counts(rng: np.random.Generator, n_clusters: int, n_boot: int) -> np.ndarray:
    """(n_boot, M): how often each of M micrographs is drawn when M are drawn with replacement."""
    draws = rng.integers(0, n_clusters, size=(n_boot, n_clusters))
    counts = np.zeros((n_boot, n_clusters))
    np.add.at(counts, (np.repeat(np.arange(n_boot), n_clusters), draws.ravel()), 1.0)
    return counts


def _weighted_size_statistics(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """:func:`_size_statistics` of ``x`` (n,) with each value repeated w times: w (B, n) -> (B, 3).

    The median is that of the repeated values (the mean of the two middle ones for an even count).
    """
    total = w.sum(axis=1)
    mean = w @ x / total
    var = (w @ (x * x) - total * mean**2) / np.maximum(total - 1, 1)
    order = np.argsort(x, kind="stable")
    cum = np.cumsum(w[:, order], axis=1)
    ranks = [np.floor((total - 1) / 2), np.floor(total / 2)]
    middle = [x[order][(cum > r[:, None]).argmax(axis=1)] for r in ranks]
    return np.stack([mean, 0.5 * (middle[0] + middle[1]), np.sqrt(np.maximum(var, 0)) / mean], axis=-1)


def _cluster_resampled(rng: np.random.Generator, cluster: np.ndarray, n_boot: int, statistic,
                       max_elements: int = 4_000_000) -> np.ndarray:
    """``statistic(w)`` for ``n_boot`` resamples of whole micrographs; w (b, n): each particle's repeats."""
    n_clusters = int(cluster.max()) + 1
    chunk = max(1, max_elements // max(len(cluster), 1))
    parts = []
    for start in range(0, n_boot, chunk):
        counts = _cluster_counts(rng, n_clusters, min(chunk, n_boot - start))
        parts.append(statistic(counts[:, cluster]))
    return np.concatenate(parts)


def _few_clusters_widening(n_clusters: int, level: float) -> float:
    """How much wider to draw a cluster bootstrap's spread with few micrographs: sqrt(M / (M - 1)) t_{M-1} / z.

    Resampling M micrographs gives their means' spread without the factor M / (M - 1), and
    with few of them the reference distribution is Student's t with M - 1 degrees of freedom
    rather than the normal (Cameron, Gelbach & Miller 2008, for few clusters); the factor is
    1.44 for 6 micrographs, 1.07 for 20.
    """
    from scipy import stats

    quantile = 1 - (1 - level) / 2
    return math.sqrt(n_clusters / (n_clusters - 1)) * stats.t.ppf(quantile, n_clusters - 1) / stats.norm.ppf(quantile)


#: fewest micrographs in a sample for intervals that resample micrographs (below: particles)
MIN_MICROGRAPHS_FOR_CLUSTERS = 5


def widest(first: dict[str, float], second: dict[str, float]) -> dict[str, float]:
    """Two sets of :func:`bootstrap_intervals` joined: each interval from the lower of the lows to the higher of the highs.

    Resampling micrographs counts the spread between them but estimates it from few
    (five micrographs give it four degrees of freedom, and by chance it can come out
    narrower than the particles' own spread); resampling particles misses it. Where a
    sample has enough micrographs, the tables report the wider of the two.
    """
    out = dict(first)
    for key, value in second.items():
        if key.endswith("_ci_low"):
            out[key] = float(np.fmin(first.get(key, np.nan), value))
        elif key.endswith("_ci_high"):
            out[key] = float(np.fmax(first.get(key, np.nan), value))
    return out


def bootstrap_intervals(sizes: np.ndarray, groups: np.ndarray | None = None, *, clusters: np.ndarray | None = None,
                        sample: str = "", seed: int = 0, n_boot: int = 2000, level: float = 0.95) -> dict[str, float]:
    """Bootstrap (BCa) intervals of one sample's size mean, median and cv, and of its group shares.

    Each of ``n_boot`` resamples draws, with replacement, as many particles as the sample
    has, or, given ``clusters``, as many whole micrographs as it has (the cluster
    bootstrap: Davison & Hinkley 1997, sec. 3.8; Field & Welsh 2007). Particles of one
    micrograph share its imaging (focus, contrast, the threshold's cut through a blurred
    edge), so their sizes are not independent. Resampling micrographs counts that spread,
    and needs several micrographs (:data:`MIN_MICROGRAPHS_FOR_CLUSTERS`); with few, the
    resampled statistics' spread is widened by :func:`_few_clusters_widening`.

    The interval is the bias-corrected and accelerated one (:func:`_bca`), with the
    jackknife over particles or micrographs; its coverage of a skewed statistic such as the
    cv is closer to ``level`` than the plain percentile interval's (docs/methods.md, "Sample
    statistics"). The generator is seeded by ``seed`` and the sample's name, so the same
    sample gets the same intervals in every table it appears in.

    Args:
      sizes: (n,) sizes of the sample's particles (NaN: no size; left out of the size statistics).
      groups: (n,) the particles' shape groups; only groups > 0 count (0: unassigned,
        -1: unknown), shares are of the grouped particles.
      clusters: (n,) each particle's micrograph (any labels): resample micrographs.
      sample: the sample's name (seeds its generator).
      seed: the run's seed.
      n_boot: resamples.
      level: coverage of the intervals.

    Returns:
      ``mean``, ``median``, ``cv`` and ``share_group_<g>`` with ``_ci_low`` / ``_ci_high``;
      NaN intervals with fewer than 3 particles (or, resampling micrographs, 2 micrographs).
    """
    rng = _rng(seed, sample)
    out: dict[str, float] = {}
    x = np.asarray(sizes, float)
    keep = np.isfinite(x)
    cluster = None if clusters is None else np.unique(np.asarray(clusters), return_inverse=True)[1].ravel()
    nothing = np.full(3, np.nan)
    point, low, high = nothing, nothing, nothing
    xs = x[keep]
    if len(xs):
        point = _size_statistics(xs) if len(xs) >= 2 else np.array([xs[0], xs[0], np.nan])
    if cluster is None and len(xs) >= 3:
        low, high = _bca(point, _resampled(rng, xs, n_boot, _size_statistics), _jackknife_sizes(xs), level)
    elif cluster is not None and len(xs) >= 3:
        _, c = np.unique(cluster[keep], return_inverse=True)
        if c.max() >= 1:
            jack = np.array([_size_statistics(xs[c != j]) for j in range(c.max() + 1)])
            boot = _cluster_resampled(rng, c, n_boot, lambda w: _weighted_size_statistics(xs, w))
            boot = point + (boot - point) * _few_clusters_widening(c.max() + 1, level)
            low, high = _bca(point, boot, jack, level)
    for i, name in enumerate(("mean", "median", "cv")):
        out.update({name: float(point[i]), f"{name}_ci_low": float(low[i]), f"{name}_ci_high": float(high[i])})
    if groups is not None:
        g = np.asarray(groups)
        grouped = g > 0
        labels = np.unique(g[grouped])
        if len(labels):
            gg = g[grouped]
            member = (gg[:, None] == labels).astype(float)
            point = member.mean(axis=0)
            low = high = np.full(len(labels), np.nan)
            if cluster is None and len(gg) >= 3:
                boot = _resampled(rng, gg, n_boot, lambda r: (r[..., None] == labels).mean(axis=-2))
                low, high = _bca(point, boot, _jackknife_shares(gg, labels), level)
            elif cluster is not None and len(gg) >= 3:
                _, c = np.unique(cluster[grouped], return_inverse=True)
                if c.max() >= 1:
                    jack = np.array([member[c != j].mean(axis=0) for j in range(c.max() + 1)])
                    boot = _cluster_resampled(rng, c, n_boot, lambda w: (w @ member) / w.sum(axis=1, keepdims=True))
                    boot = point + (boot - point) * _few_clusters_widening(c.max() + 1, level)
                    low, high = _bca(point, boot, jack, level)
            for i, label in enumerate(labels):
                out.update({f"share_group_{label}": float(point[i]), f"share_group_{label}_ci_low": float(low[i]),
                            f"share_group_{label}_ci_high": float(high[i])})
    return out


# ------------------------------------------------------------------------------- tests


def holm(p_values: Iterable[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979), which control the family-wise error rate.

    The k-th smallest of m p-values is multiplied by (m - k + 1), made non-decreasing along
    the order and capped at 1. NaN p-values stay NaN and do not count in m.
    """
    p = np.asarray(list(p_values), float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(adjusted, 1.0)
    return out


def compare_pair(sizes_a: np.ndarray, sizes_b: np.ndarray, groups_a: np.ndarray | None = None,
                 groups_b: np.ndarray | None = None, clusters_a: np.ndarray | None = None,
                 clusters_b: np.ndarray | None = None) -> dict[str, float]:
    """Two samples' sizes and group counts compared, each test with its effect size.

    - Kolmogorov-Smirnov (two-sided, exact for small samples): ``ks_statistic`` D, the
      largest gap between the two size distributions (itself the effect size, 0 to 1).
    - Mann-Whitney U (two-sided): ``rank_biserial`` = P(b > a) - P(b < a) over all pairs
      of one particle from each (-1 to 1; positive when b's particles tend to be larger).
    - ``relative_difference_mean`` = mean(b) / mean(a) - 1 and ``relative_difference_median``.
    - Chi-square of the 2 x K table of group counts (groups > 0; groups neither sample
      has dropped; no continuity correction): ``cramers_v`` = sqrt(chi2 / N) (0 to 1);
      ``chi2_min_expected`` < 5 warns that the p-value is approximate.
    - Given each particle's micrograph (``clusters_a``, ``clusters_b``, aligned with the
      sizes): Welch's t-test on the micrographs' mean sizes (``micrograph_welch_p``, at
      least 2 micrographs each). The three tests above treat particles as independent; where
      micrographs differ in imaging, their p-values are too small (experiments/results/
      samples), and the micrograph-level test is the one to read.

    Returns NaN for a test the data cannot support (fewer than 2 sizes in a sample, fewer
    than 2 groups), never raises.
    """
    from scipy import stats

    a = np.asarray(sizes_a, float)
    b = np.asarray(sizes_b, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    out: dict[str, float] = {"n_a": int(len(a)), "n_b": int(len(b))}
    if len(a) >= 2 and len(b) >= 2:
        ks = stats.ks_2samp(a, b)
        mw = stats.mannwhitneyu(b, a, alternative="two-sided")
        out.update({"relative_difference_mean": float(b.mean() / a.mean() - 1),
                    "relative_difference_median": float(np.median(b) / np.median(a) - 1),
                    "ks_statistic": float(ks.statistic), "ks_p": float(ks.pvalue),
                    "mannwhitney_u": float(mw.statistic), "mannwhitney_p": float(mw.pvalue),
                    "rank_biserial": float(2 * mw.statistic / (len(a) * len(b)) - 1)})
    else:
        out.update(dict.fromkeys(("relative_difference_mean", "relative_difference_median", "ks_statistic", "ks_p",
                                  "mannwhitney_u", "mannwhitney_p", "rank_biserial"), math.nan))
    out.update({"micrographs_a": math.nan, "micrographs_b": math.nan, "micrograph_welch_p": math.nan})
    if clusters_a is not None and clusters_b is not None:
        means = []
        for sizes, clusters in ((sizes_a, clusters_a), (sizes_b, clusters_b)):
            frame = pd.DataFrame({"size": np.asarray(sizes, float), "micrograph": np.asarray(clusters)}).dropna()
            means.append(frame.groupby("micrograph")["size"].mean().to_numpy())
        out.update({"micrographs_a": len(means[0]), "micrographs_b": len(means[1])})
        if min(len(means[0]), len(means[1])) >= 2:
            out["micrograph_welch_p"] = float(stats.ttest_ind(means[1], means[0], equal_var=False).pvalue)
    out.update(dict.fromkeys(("chi2", "chi2_dof", "chi2_p", "cramers_v", "chi2_min_expected"), math.nan))
    if groups_a is not None and groups_b is not None:
        ga, gb = np.asarray(groups_a), np.asarray(groups_b)
        ga, gb = ga[ga > 0], gb[gb > 0]
        labels = np.union1d(ga, gb)
        counts = np.array([[np.sum(ga == g) for g in labels], [np.sum(gb == g) for g in labels]])
        if len(labels) >= 2 and counts.sum(axis=1).min() > 0:
            chi2, p, dof, expected = stats.chi2_contingency(counts, correction=False)
            out.update({"chi2": float(chi2), "chi2_dof": int(dof), "chi2_p": float(p),
                        "cramers_v": float(math.sqrt(chi2 / counts.sum())), "chi2_min_expected": float(expected.min())})
    return out


def pairwise_tests(sizes: Mapping[str, np.ndarray], groups: Mapping[str, np.ndarray] | None = None,
                   clusters: Mapping[str, np.ndarray] | None = None) -> pd.DataFrame:
    """:func:`compare_pair` for every pair of samples (in sorted order), with Holm-adjusted p-values.

    Holm's correction runs within each test (KS, Mann-Whitney, micrograph-level Welch,
    chi-square) over the pairs,
    as ``<test>_p_holm``: each test's family-wise error rate over the m pairs is at most
    the level the adjusted p-values are compared with.
    """
    names = sorted(sizes)
    rows = []
    for a, b in itertools.combinations(names, 2):
        row = {"sample_a": a, "sample_b": b}
        row.update(compare_pair(sizes[a], sizes[b], None if groups is None else groups.get(a),
                                None if groups is None else groups.get(b), None if clusters is None else clusters.get(a),
                                None if clusters is None else clusters.get(b)))
        rows.append(row)
    empty = np.zeros(0)
    columns = ["sample_a", "sample_b", *compare_pair(empty, empty, empty, empty, empty, empty)]
    table = pd.DataFrame(rows, columns=columns)  # one sample: no rows, the columns still there
    for test in ("ks", "mannwhitney", "micrograph_welch", "chi2"):
        position = table.columns.get_loc(f"{test}_p") + 1
        table.insert(position, f"{test}_p_holm", holm(table[f"{test}_p"]))
    return table


# --------------------------------------------------------------------------- one run


@dataclass(frozen=True, eq=False)
class SampleTables:
    """A run's size tables and its comparison of samples.

    Attributes:
      unit: ``nm`` or ``px``, of every size in the tables.
      size: the size the intervals and tests are about (``equivalent_diameter_<unit>``).
      micrographs: :func:`size_summary` per micrograph.
      samples: :func:`size_summary` per sample, with :func:`bootstrap_intervals` of ``size``
        (``mean_<size>_ci_low`` ...) and group shares; ``interval_resamples`` says whether
        they are the wider of resampling micrographs and particles (:func:`widest`, samples
        of at least :data:`MIN_MICROGRAPHS_FOR_CLUSTERS` micrographs) or resample particles
        only (fewer: the spread between micrographs is then not in the interval).
      pairs: :func:`pairwise_tests` on ``size`` (empty with one sample).
      n_boot, level: the bootstrap's resamples and the intervals' coverage.
    """

    unit: str
    size: str
    micrographs: pd.DataFrame
    samples: pd.DataFrame
    pairs: pd.DataFrame
    n_boot: int
    level: float


def sample_tables(particles: pd.DataFrame, fields: pd.DataFrame, *, seed: int = 0, n_boot: int = 2000,
                  level: float = 0.95, measure: str = DEFAULT_SIZE) -> SampleTables:
    """Per-micrograph and per-sample sizes, per-sample intervals, and pairwise tests of a run.

    Args:
      particles: the particle table (``image``, ``sample``, sizes, ``pixel_size_nm``, ``group``).
      fields: one row per micrograph (:func:`read_run_fields`).
      seed, n_boot, level: of the bootstrap.
      measure: the size the intervals and tests are about.
    """
    if "sample" not in particles:  # a run written before samples existed: its micrographs' samples
        particles = particles.assign(sample=particles["image"].map(dict(zip(fields["image"], fields["sample"]))))
    unit = size_unit(fields["pixel_size_nm"])
    micrographs = size_summary(particles, fields, "image", unit)
    samples = size_summary(particles, fields, "sample", unit)
    values = sizes_in(particles, measure, unit) if len(particles) else np.zeros(0)
    group = particles["group"].to_numpy() if "group" in particles else None
    by_sample = {name: (particles["sample"] == name).to_numpy() for name in samples["sample"]}
    intervals = []
    image = particles["image"].to_numpy() if len(particles) else np.zeros(0, object)
    for name, mine in by_sample.items():
        n_micrographs = len(set(image[mine & np.isfinite(values)]))
        clusters = image[mine] if n_micrographs >= MIN_MICROGRAPHS_FOR_CLUSTERS else None
        ci = bootstrap_intervals(values[mine], None if group is None else group[mine], sample=name, seed=seed,
                                 n_boot=n_boot, level=level)
        if clusters is not None:
            ci = widest(ci, bootstrap_intervals(values[mine], None if group is None else group[mine], clusters=clusters,
                                                sample=name, seed=seed, n_boot=n_boot, level=level))
        renamed = {"interval_resamples": "particles and micrographs, the wider" if clusters is not None else "particles"}
        for key, value in ci.items():
            stat, _, tail = key.partition("_ci_")
            if stat in ("mean", "median") and tail:
                renamed[f"{stat}_{measure}_{unit}_ci_{tail}"] = value
            elif stat == "cv" and tail:
                renamed[f"cv_{measure}_ci_{tail}"] = value
            elif key.startswith("share_"):
                renamed[key] = value
        intervals.append(renamed)
    ci_table = pd.DataFrame(intervals, index=samples.index)
    shares = sorted((c for c in ci_table.columns if c.startswith("share_") and "_ci_" not in c),
                    key=lambda c: int(c.rsplit("_", 1)[1]))
    ordered = [c for c in ci_table.columns if not c.startswith("share_")]
    ordered += [c for s in shares for c in (s, f"{s}_ci_low", f"{s}_ci_high")]
    samples = pd.concat([samples, ci_table[ordered].fillna({s: 0.0 for s in shares})], axis=1)
    pairs = pairwise_tests({name: values[mine] for name, mine in by_sample.items()},
                           None if group is None else {name: group[mine] for name, mine in by_sample.items()},
                           {name: image[mine] for name, mine in by_sample.items()})
    return SampleTables(unit=unit, size=f"{measure}_{unit}", micrographs=micrographs, samples=samples, pairs=pairs,
                        n_boot=n_boot, level=level)


def read_run_fields(run: str | os.PathLike, samples: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per micrograph a run analysed: image, sample, path, height_px, width_px, pixel_size_nm.

    Read from ``parts/info/<stem>.json`` of the micrographs ``summary.json`` lists; the sample
    is ``summary.json``'s ``samples`` entry, else ``samples`` (stem -> sample), else the
    micrograph's folder name (runs written before samples existed).
    """
    import json

    run = Path(run)
    summary = json.loads((run / "summary.json").read_text())
    infos = []
    for stem in summary.get("particles_per_image", {}):
        path = run / "parts" / "info" / f"{stem}.json"
        if path.exists():
            infos.append(json.loads(path.read_text()))
    known = summary.get("samples") or {}
    folders = assign_samples({info["image"]: info["path"] for info in infos}, samples)
    return pd.DataFrame({
        "image": [info["image"] for info in infos],
        "sample": [(samples or {}).get(info["image"]) or known.get(info["image"]) or folders[info["image"]]
                   for info in infos],
        "path": [info["path"] for info in infos],
        "height_px": [int(info["height_px"]) for info in infos],
        "width_px": [int(info["width_px"]) for info in infos],
        "pixel_size_nm": [np.nan if info.get("pixel_size_nm") is None else float(info["pixel_size_nm"]) for info in infos],
    }, columns=["image", "sample", "path", "height_px", "width_px", "pixel_size_nm"])
