"""Shape groups without supervision, and a classifier that sorts new particles into them.

:func:`cluster_particles` compares groupings of a run's particles on three datasets, every
column standardised: ``features`` (mask descriptors and log size, :data:`AFFINE_COLUMNS` or
the seed paper's :data:`FEATURE_COLUMNS`), ``parameters`` (the fitted shape as its outline's
harmonic spectrum, :data:`HARMONIC_COLUMNS`, or the raw log p, log L, d) and ``both``; by
K-means, a Gaussian mixture and Ward clustering with K by the silhouette (the seed paper's
Tables S8 and S9), and by HDBSCAN, which finds K itself. The spectrum is used because
(p, d, L) is not one-to-one with shapes (:func:`nanoshape.shape.dual_p`).
``GroupOptions.choice`` picks the grouping (HDBSCAN on ``both`` by default), and the
comparison and the reason go to the run's summary; deterministic for a given seed.
Measurements: docs/methods.md, "How shape groups are found".

:func:`describe_groups` names each group by its median particle's shape (:func:`shape_name`: the mask's
symmetry, or the fitted outline's where the two agree and the mask's corners are faint).
:func:`train_classifier` fits an RBF SVM on the groups; :func:`save_classifier` writes it
with skops (no pickle) and its SHA-256, and :func:`load_classifier` loads only a
``Pipeline(StandardScaler, SVC)``, so a foreign file can neither run code nor pass off
another model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from nanoshape.batching import pad_rows

__all__ = ["GroupOptions", "Grouping", "UNASSIGNED_FLAGS", "unassigned_reasons", "FEATURE_COLUMNS", "PARAMETER_COLUMNS", "parameter_columns", "HARMONIC_COLUMNS", "ANGULAR_COLUMNS",
           "AFFINE_COLUMNS", "design_matrix", "cluster_particles",
           "shape_name", "polygon_sharpness", "describe_groups",
           "Classifier", "train_classifier", "save_classifier", "load_classifier"]

#: the mask's symmetry descriptors (:func:`nanoshape.features.angular_harmonics`) that grouping
#: uses: order m = 2..8 (as measured in experiments/groups_ablation.py); the higher orders the
#: table also has serve only to count a star's points in :func:`shape_name`
ANGULAR_COLUMNS = tuple(f"angular_harmonic_{m}" for m in range(2, 9))
#: the same symmetry orders with the particle's elongation normalised away
#: (:func:`nanoshape.features.affine_harmonics`): grouping uses these where the table has them, and leaves
#: the elongation to the Feret ratio (and the fitted shape). In the raw harmonics a rod's elongation fills
#: every even order (emps_train's hand-drawn rods: A_4 0.61 median, a cube's 0.17, a sphere's 0.03), so
#: the rods set the block's one scale and cubes and hexagonal plates stayed within the spheres' spread.
#: Measured (docs/methods.md, "How shape groups are found"): experiments/groups_emps_masks.py,
#: 1,254 hand-drawn particles, ARI
#: against the image's label 0.36 (K = 2: rods, the rest) -> 0.535 (K = 3: cubes a group, 163 of 182);
#: the by-eye labelled particles of experiments/groups_labelled_emps.py 0.401 / 0.080 -> 0.528 / 0.527
#: (tuning / validation part). Adding A_2 (elongation) to the block undid it (K = 2 on both real checks)
AFFINE_COLUMNS = tuple(f"affine_harmonic_{m}" for m in range(3, 9))
#: they enter as log(A_m + this): below it, A_m is the pixelation of a ~20 px disc, not the shape
ANGULAR_FLOOR = 0.03
#: unit-free morphology descriptors used for grouping (``feature_set="classic"``); the size enters as log
#: equivalent diameter, and the angular harmonics are added where the table has them
FEATURE_COLUMNS = ("aspect_ratio", "feret_ratio", "circularity", "roundness", "solidity", "convexity", "eccentricity")
#: ``feature_set="shape"``: one descriptor per property (elongation, outline length, concavity) beside the
#: symmetry block; the classic set counts elongation four times over (aspect, Feret ratio, roundness,
#: eccentricity), which outweighs the one harmonic that tells a hexagon from a sphere
SHAPE_FEATURE_COLUMNS = ("feret_ratio", "circularity", "solidity")
FEATURE_SETS = ("shape", "classic")
CHOICES = ("finest_stable", "hdbscan", "bic", "stable", "silhouette")
#: shape parameters used for grouping (phi, the orientation, is not a property of the shape)
PARAMETER_COLUMNS = ("p", "l_ratio", "d")


def parameter_columns(table: pd.DataFrame) -> tuple[str, ...]:
    """The raw shape-parameter predictors of a table: :data:`PARAMETER_COLUMNS` for eq. 1, the
    family's continuous and discrete parameters for another (``shape_family`` column)."""
    from nanoshape.family import table_family

    family = table_family(table)
    if family.name == "superellipse":
        return PARAMETER_COLUMNS
    return (*(c.name for c in family.continuous), family.discrete)


#: the fitted shape's outline spectrum (computed from p, d, l_ratio, phi_rad when the table lacks it)
HARMONIC_COLUMNS = tuple(f"shape_harmonic_{m}" for m in range(1, 13))
#: harmonics enter as log(amplitude + this): amplitudes below a few % of the radius are at
#: the resolution of a ~30 px mask, above it relative changes count (experiments/groups_ablation.py)
HARMONIC_FLOOR = 0.05
PARAMETER_SPACES = ("harmonics", "raw")
DATASETS = ("features", "parameters", "both")
METHODS = ("kmeans", "gmm", "ward", "hdbscan")


@dataclass(frozen=True)
class GroupOptions:
    """How particles are grouped and the classifier trained.

    Attributes:
      k_range: smallest and largest number of groups tried.
      seed: seed of K-means, the mixture, the train/test split and the grid search.
      datasets, methods: the combinations compared (subsets of ``features``/``parameters``/
        ``both`` and ``kmeans``/``gmm``/``ward``/``hdbscan``).
      feature_set: the descriptors of the ``features`` dataset: ``shape`` (log Feret ratio,
        circularity, solidity, :data:`AFFINE_COLUMNS`, log size) or ``classic`` (the seed
        paper's :data:`FEATURE_COLUMNS`, plus the angular harmonics where the table has them).
      choice: which grouping is used: ``hdbscan`` (the default: HDBSCAN on ``both``, else
        ``features``, K from the particles' density; the silhouette rule where it finds fewer
        than two groups), ``finest_stable`` (of HDBSCAN's grouping and the Gaussian mixtures with
        more groups than it and at most as many as the lowest BIC gives, on the same dataset: the
        one with the most groups that mixtures started from ``stable_seeds`` seeds find alike and
        that each half of the particles, grouped on its own, reproduces, both at ARI >= ``stable_ari``;
        HDBSCAN's where no mixture does),
        ``bic`` (a Gaussian mixture on the same dataset, K by the lowest Bayesian information
        criterion), ``stable`` (of those two, the one whose groups each half of the particles,
        grouped on its own, reproduces best) or ``silhouette`` (the highest silhouette value of
        all combinations, the seed paper's way).
      max_particles: a run with more usable particles is grouped on a seeded random sample of
        this many (silhouette values, Ward trees and the halves' stability are quadratic in the
        count); every other particle takes the group of the majority of its 5 nearest sampled
        neighbours and is flagged (:attr:`Grouping.assigned`, column ``group_assigned``). The
        classifier's grid search, test split and cross-validation use a seeded sample of this
        many grouped particles too. A run of at most this many is grouped and the classifier trained on
        every particle.
      use_size: include log(equivalent diameter) in the ``features`` dataset.
      parameter_space: how the fitted shape enters the ``parameters`` and ``both`` datasets:
        ``harmonics`` (the outline spectrum, default) or ``raw`` (log p, log L, d).
      min_group_fraction: a K whose smallest group holds less than this fraction of the
        particles is not chosen (a few outliers are not a shape group), and HDBSCAN's smallest
        group (``min_cluster_size``) is this fraction of the particles, at least
        ``min_group_size``.
      min_group_size: the smallest group HDBSCAN may find, however few the particles.
      stable_ari: with ``choice="finest_stable"``, the agreement (adjusted Rand index) between the
        groups of all particles and those of each half grouped on its own that a finer mixture
        must reach to be chosen (the issue's bar for "the same groups"), and between the mixtures of
        the ``stable_seeds`` seeds.
      stable_seeds: with ``choice="finest_stable"``, how many seeds (``seed`` and ones drawn from it)
        each fit the mixture of a finer K: it is chosen only where every pair of their groupings agrees
        and each passes the halves' test. A K whose groups depend on where the mixture started is the
        mixture's local optimum, not the particles' groups (on emps_train with one seed, seeds 0-3 chose
        K = 6, 2, 5 and 3, each passing its own halves' test).
      name_split: with ``choice="hdbscan"``, split each of HDBSCAN's groups where the components of the
        Gaussian mixture with the lowest BIC (on the same dataset) that fall inside it are, by their median
        particle, another canonical shape (:func:`shape_name`; "irregular particles" splits nothing) than
        the group's commonest one, each such part holding at least the smallest group's size
        (:func:`_split_by_names`). Cubes, plates and
        triangles among spheres are a tail of the spheres' cloud, not a density peak of their own, so
        HDBSCAN alone leaves them there; the mixture's components separate them but depend on its start and
        split one shape by size; their names join what the eye joins.
      test_fraction: held-out share for the classifier's test accuracy.
      cv_folds: folds of the cross-validation.
    """

    k_range: tuple[int, int] = (2, 8)
    seed: int = 0
    datasets: tuple[str, ...] = DATASETS
    methods: tuple[str, ...] = METHODS
    feature_set: str = "shape"
    choice: str = "hdbscan"
    max_particles: int = 4000
    use_size: bool = True
    parameter_space: str = "harmonics"
    min_group_fraction: float = 0.02
    min_group_size: int = 5
    stable_ari: float = 0.9
    stable_seeds: int = 3
    name_split: bool = True
    test_fraction: float = 0.2
    cv_folds: int = 10

    def __post_init__(self):
        # checked here so a bad option stops a run before its micrographs are analysed
        if self.stable_seeds < 1:
            raise ValueError(f"stable_seeds must be at least 1, got {self.stable_seeds}")
        if self.choice not in CHOICES:
            raise ValueError(f"unknown choice {self.choice!r}; choose from {CHOICES}")
        if self.feature_set not in FEATURE_SETS:
            raise ValueError(f"unknown feature_set {self.feature_set!r}; choose from {FEATURE_SETS}")
        if self.parameter_space not in PARAMETER_SPACES:
            raise ValueError(f"unknown parameter_space {self.parameter_space!r}; choose from {PARAMETER_SPACES}")
        if not set(self.datasets) <= set(DATASETS) or not set(self.methods) <= set(METHODS):
            raise ValueError(f"datasets must be among {DATASETS} and methods among {METHODS}, "
                             f"got {tuple(self.datasets)} and {tuple(self.methods)}")


@dataclass(frozen=True, eq=False)
class Grouping:
    """The groups of a run.

    Attributes:
      labels: (n,) group of each particle, 1..K, ordered by decreasing size (0 = not grouped,
        for particles missing a value).
      dataset, method, k: the chosen combination.
      comparison: one row per dataset x method: chosen K, silhouette in its own space and in
        the common space, cophenetic correlation (Ward only), K of every candidate.
      reason: why the combination was chosen, in words.
      silhouette_by_k: per dataset x method, the silhouette value for each K tried.
      columns: the columns of the chosen dataset.
      stability: the smaller ARI between these groups and those of each half of the particles
        grouped on its own the same way (NaN where a half is too small to group).
      assigned: (n,) True where the particle was not among the clustered sample (a run of more
        than :attr:`GroupOptions.max_particles` usable particles) and its group is the vote of
        its 5 nearest clustered neighbours; None where every particle was clustered.
    """

    labels: np.ndarray
    dataset: str
    method: str
    k: int
    comparison: pd.DataFrame
    reason: str
    silhouette_by_k: pd.DataFrame
    columns: tuple[str, ...]
    stability: float = float("nan")
    assigned: np.ndarray | None = None


def _size_column(table: pd.DataFrame) -> str | None:
    """The size predictor: the equivalent diameter in nm, or in px, when every particle has it.

    A run mixing micrographs with and without a pixel size has neither for every particle;
    size is then left out rather than leaving the particles without one ungrouped (41 EMPS
    micrographs, 28 without a pixel size: 1,199 of 1,788 particles had no group).
    """
    for column in ("equivalent_diameter_nm", "equivalent_diameter_px"):
        if column in table and len(table) and table[column].notna().all():
            return column
    return None


def dataset_columns(table: pd.DataFrame, dataset: str, options: GroupOptions = GroupOptions()) -> tuple[str, ...]:
    """The table columns that make up ``dataset``."""
    features = list(SHAPE_FEATURE_COLUMNS if options.feature_set == "shape" else FEATURE_COLUMNS)
    if all(c in table for c in AFFINE_COLUMNS):
        features.extend(AFFINE_COLUMNS)
    elif all(c in table for c in ANGULAR_COLUMNS):  # tables of runs before the affine harmonics existed
        features.extend(ANGULAR_COLUMNS)
    size = _size_column(table) if options.use_size else None
    if size:
        features.append(size)
    if dataset == "features":
        return tuple(features)
    parameters = HARMONIC_COLUMNS if options.parameter_space == "harmonics" else parameter_columns(table)
    if dataset == "parameters":
        return parameters
    if dataset == "both":
        return tuple(features) + parameters
    raise ValueError(f"unknown dataset {dataset!r}; choose from {DATASETS}")


def design_matrix(table: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    """(n, len(columns)) raw predictor values: sizes, p, L and the Feret ratio in log, the angular
    harmonics as log(A + :data:`ANGULAR_FLOOR`), the outline spectrum as
    log(amplitude + :data:`HARMONIC_FLOOR`) (computed from p, d, l_ratio and phi_rad where the table
    lacks it), the rest as they are."""
    spectrum = None
    if any(c in HARMONIC_COLUMNS and c not in table for c in columns):
        spectrum = shape_spectrum(table)
    missing = [c for c in columns if c not in table and not (spectrum is not None and c in HARMONIC_COLUMNS)]
    if missing:
        raise KeyError(f"the particle table lacks the columns {missing} (shape parameters need the CNN: shape.cnn=true)")
    values = []
    for column in columns:
        if column in HARMONIC_COLUMNS:
            x = table[column].to_numpy(float) if column in table else spectrum[:, HARMONIC_COLUMNS.index(column)]
            x = np.log(np.maximum(x, 0.0) + HARMONIC_FLOOR)
        elif column in ANGULAR_COLUMNS or column in AFFINE_COLUMNS:
            x = np.log(np.maximum(table[column].to_numpy(float), 0.0) + ANGULAR_FLOOR)
        else:
            x = table[column].to_numpy(float)
        if column in _log_columns(table) or column.startswith("equivalent_diameter"):
            x = np.log(np.maximum(x, 1e-12))
        values.append(x)
    return np.stack(values, axis=1)


def _log_columns(table: pd.DataFrame) -> tuple[str, ...]:
    from nanoshape.family import table_family

    family = table_family(table)
    if family.name == "superellipse":
        return ("p", "l_ratio", "feret_ratio")
    return (*(c.name for c in family.continuous), "feret_ratio")


def shape_spectrum(table: pd.DataFrame, chunk: int = 4096) -> np.ndarray:
    """(n, 12) :func:`nanoshape.shape.harmonic_spectrum` of each particle's fitted shape (NaN where a
    parameter is missing), in fixed-size jitted chunks (one compilation); for a table of another
    shape family (``shape_family``), :func:`nanoshape.family.descriptor` of its parameters."""
    from nanoshape.family import table_family

    family = table_family(table)
    if family.name != "superellipse":
        return _family_spectrum(table, family, chunk)
    phase = "phi_rad" if "phi_rad" in table or "phi" not in table else "phi"  # "phi": a table of an older run
    missing = [c for c in ("p", "d", "l_ratio", phase) if c not in table]
    if missing:
        raise KeyError(f"the particle table lacks the columns {missing} (shape parameters need the CNN: shape.cnn=true)")
    p, l_ratio, phi = (table[c].to_numpy(np.float32) for c in ("p", "l_ratio", phase))
    d = table["d"].to_numpy(float)
    valid = np.isfinite(p) & np.isfinite(l_ratio) & np.isfinite(phi) & np.isfinite(d) & (p > 0) & (l_ratio > 0)
    out = np.full((len(table), len(HARMONIC_COLUMNS)), np.nan)
    index = np.flatnonzero(valid)
    for begin in range(0, len(index), chunk):
        part = index[begin:begin + chunk]
        pad = pad_rows(part, chunk)
        amplitudes = _spectrum_batch(p[pad], np.clip(d[pad], 1, 6).astype(np.int32), l_ratio[pad], phi[pad])
        out[part] = np.asarray(amplitudes)[: len(part)]
    return out


def _spectrum_batch(p, d, l_ratio, phi):
    import jax

    from nanoshape.shape import ShapeParams, harmonic_spectrum

    global _SPECTRUM
    if _SPECTRUM is None:
        _SPECTRUM = jax.jit(jax.vmap(lambda *a: harmonic_spectrum(ShapeParams(*a), len(HARMONIC_COLUMNS))))
    return _SPECTRUM(p, d, l_ratio, phi)


_SPECTRUM = None


def _family_spectrum(table: pd.DataFrame, family, chunk: int) -> np.ndarray:
    import jax
    import jax.numpy as jnp

    from nanoshape.family import descriptor

    from nanoshape.columns import table_column

    missing = [table_column(c) for c in family.columns if table_column(c) not in table]
    if missing:
        raise KeyError(f"the particle table lacks the columns {missing} of the {family.name} family")
    values = {c: table[table_column(c)].to_numpy(float) for c in family.columns}
    valid = np.all([np.isfinite(v) for v in values.values()], axis=0)
    valid &= np.all([values[c.name] > 0 for c in family.continuous], axis=0)
    out = np.full((len(table), len(HARMONIC_COLUMNS)), np.nan)
    index = np.flatnonzero(valid)
    spectrum = jax.jit(jax.vmap(lambda params: descriptor(params, len(HARMONIC_COLUMNS))))
    for begin in range(0, len(index), chunk):
        part = index[begin:begin + chunk]
        pad = pad_rows(part, chunk)
        params = family.params_type(*(jnp.asarray(values[c][pad], jnp.int32 if c == family.discrete else jnp.float32)
                                      for c in family.columns))
        out[part] = np.asarray(spectrum(params))[: len(part)]
    return out


def _scaling(x: np.ndarray, columns: tuple[str, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Means and scales of :func:`_standardise` (fitted on ``x``)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    for members in (HARMONIC_COLUMNS, ANGULAR_COLUMNS, AFFINE_COLUMNS):
        block = [i for i, c in enumerate(columns or ()) if c in members]
        if block:
            scale[block] = np.sqrt(np.mean((x[:, block] - mean[block]) ** 2))
    return mean, np.where(scale > 1e-12, scale, 1.0)


def _standardise(x: np.ndarray, columns: tuple[str, ...] | None = None) -> np.ndarray:
    """Each column to zero mean and unit variance, except the outline spectrum: one scale for the block,
    so harmonics that barely vary (noise) keep their small weight."""
    mean, scale = _scaling(x, columns)
    return (x - mean) / scale


def _fit_labels(x: np.ndarray, method: str, k: int, seed: int, min_size: int = 5, memory=None,
                table: pd.DataFrame | None = None) -> np.ndarray:
    """Labels 0..K-1 of the rows of ``x``; ``hdbscan`` finds K itself (``k`` unused) and gives each particle
    it calls noise the group of the majority of its 5 nearest grouped neighbours. ``memory`` (a
    ``joblib.Memory``) keeps Ward's tree of ``x`` so that each further K only cuts it."""
    from sklearn.cluster import HDBSCAN, AgglomerativeClustering, KMeans
    from sklearn.neighbors import KNeighborsClassifier

    if method == "hdbscan":
        # "eom" (the most persistent clusters): "leaf" (the finest) scored higher on the tuning scenes of
        # experiments/groups_second_generator.py but split the rods and spheres of nanoshape's own renders
        labels = HDBSCAN(min_cluster_size=min_size, cluster_selection_method="eom", copy=True).fit_predict(x)
        noise = labels < 0
        if noise.all():
            return np.zeros(len(x), dtype=np.int64)
        if noise.any():
            vote = KNeighborsClassifier(n_neighbors=min(5, int((~noise).sum()))).fit(x[~noise], labels[~noise])
            labels[noise] = vote.predict(x[noise])
        return labels

    if method == "hdbscan_named":  # HDBSCAN's groups split by the named components of a K-mixture (``table``: x's rows)
        density = _fit_labels(x, "hdbscan", k, seed, min_size=min_size)
        return _split_by_names(table, density, _mixture(x, k, seed)[0], min_size)[0]
    if method == "kmeans":
        return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    if method in ("gmm", "gmm_bic", "gmm_stable"):  # the mixture whose K had the lowest BIC, or the finest stable one
        return _mixture(x, k, seed)[0]
    if method == "ward":
        return AgglomerativeClustering(n_clusters=k, linkage="ward", memory=memory).fit_predict(x)
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def _mixture(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, float]:
    """Labels 0..K-1 of a Gaussian mixture with full covariances, and its Bayesian information criterion
    (Schwarz 1978: -2 log L + (number of parameters) log n)."""
    from sklearn.mixture import GaussianMixture

    model = GaussianMixture(n_components=k, covariance_type="full", n_init=10, random_state=seed, reg_covar=1e-4).fit(x)
    return model.predict(x), float(model.bic(x))


#: the comparison's mixtures are fitted in worker processes where the sample has at least this many particles
#: (emps_train's 1,787: see _mixtures); below it starting the workers costs more than the fits save
PARALLEL_MIXTURES_MIN = 1000


def _mixtures(inputs: dict[tuple[str, int], np.ndarray], seed: int,
              fitted: Callable[[], None] = lambda: None) -> dict[tuple[str, int], tuple[np.ndarray, float]]:
    """:func:`_mixture` of each ``(dataset, K) -> x``, over the machine's cores (joblib's worker processes, one
    BLAS thread each) where the sample is large enough for that to pay; the same fits as one after another
    (each is seeded alike). ``fitted()`` is called as each fit arrives (for the progress bar)."""
    import joblib

    keys = list(inputs)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if cores < 2 or len(keys) < 2 or max(len(x) for x in inputs.values()) < PARALLEL_MIXTURES_MIN:
        fits = (_mixture(inputs[key], key[1], seed) for key in keys)
    else:
        fits = joblib.Parallel(n_jobs=min(cores, len(keys)), return_as="generator")(
            joblib.delayed(_mixture)(inputs[key], key[1], seed) for key in keys)
    out = {}
    for key, fit in zip(keys, fits):
        out[key] = fit
        fitted()
    return out


def _with_spectrum(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the fitted outlines' spectrum (:data:`HARMONIC_COLUMNS`) where it lacks it and has fitted
    shapes (unchanged where it has no fitted shapes: names then come from the masks alone)."""
    if all(c in table for c in HARMONIC_COLUMNS):
        return table
    try:
        spectrum = pd.DataFrame(shape_spectrum(table), columns=list(HARMONIC_COLUMNS), index=table.index)
    except KeyError:
        return table
    return pd.concat([table.drop(columns=[c for c in HARMONIC_COLUMNS if c in table]), spectrum], axis=1)


#: names that do not split a group: no canonical shape. A mixture gives the outliers of a group of one shape a broad
#: component of their own, whose median particle has no clear symmetry (second-generator scenes 1 and 14: 7-11
#: squares, platelets and unmatched fragments split off as "irregular particles")
NAME_NOT_SPLIT = ("irregular particles", "particles")


def _split_by_names(table: pd.DataFrame, groups: np.ndarray, components: np.ndarray,
                    min_size: int) -> tuple[np.ndarray, list[tuple[int, str, dict[str, int]]]]:
    """Each group of ``groups`` (labels >= 0 of the rows of ``table``) split where the mixture ``components``
    inside it are other canonical shapes: every component is named by :func:`shape_name` of its median
    particle; within a group, the particles of each name held by at least ``min_size`` of its particles form
    a group of their own, except the commonest name's, which keep the group (with every other particle of the
    group), and those of a name in :data:`NAME_NOT_SPLIT`. Returns the new labels 0..K-1 and, per group split,
    (group, its commonest name, {name: particles split off}).
    """
    named = _with_spectrum(table)
    names = np.empty(len(components), dtype=object)
    for c in np.unique(components):
        names[components == c] = shape_name(named[components == c].median(numeric_only=True))
    out = np.asarray(groups).copy()
    parts = []
    following = int(out.max()) + 1
    for g in np.unique(groups):
        inside = groups == g
        counts = pd.Series(names[inside]).value_counts()
        counts = counts[counts >= min_size]
        off = counts.iloc[1:][~counts.index[1:].isin(NAME_NOT_SPLIT)]
        if len(off) == 0:
            continue
        for name in off.index:
            out[inside & (names == name)] = following
            following += 1
        parts.append((int(g), str(counts.index[0]), {str(n): int(v) for n, v in off.items()}))
    _, out = np.unique(out, return_inverse=True)
    return out.astype(np.int64), parts


def _relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Groups numbered 1..K by decreasing size (deterministic names across runs)."""
    values, counts = np.unique(labels, return_counts=True)
    order = values[np.lexsort((values, -counts))]
    mapping = {old: new + 1 for new, old in enumerate(order)}
    return np.array([mapping[v] for v in labels], dtype=np.int64)


def _silhouette(distances: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette value (Rousseeuw 1987) of ``labels`` from the (n, n) Euclidean ``distances``: for each
    particle, (b - a) / max(a, b), a its mean distance to the rest of its group, b the smallest mean distance to
    another group (0 in a group of one), as ``sklearn.metrics.silhouette_score``. One distance matrix serves
    every K and method of a dataset, and the per-group sums are one matrix product, where scikit-learn
    recomputes the distances and sums them row by row for each call (78 calls: ~10 s of 4,000 particles)."""
    _, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    members = np.zeros((len(codes), len(counts)))
    members[np.arange(len(codes)), codes] = 1.0
    sums = distances @ members  # (n, K): each particle's summed distance to each group
    own = np.arange(len(codes)), codes
    with np.errstate(divide="ignore", invalid="ignore"):
        a = sums[own] / (counts[codes] - 1)
        sums[own] = np.inf
        b = (sums / counts).min(axis=1)
        values = (b - a) / np.maximum(a, b)
    return float(np.nan_to_num(values).mean())


def _cophenetic(x: np.ndarray) -> float:
    from scipy.cluster.hierarchy import cophenet, linkage
    from scipy.spatial.distance import pdist

    distances = pdist(x)
    return float(cophenet(linkage(x, method="ward"), distances)[0])


#: segmentation flags that say a "particle" is not one whose shape means anything
#: (:func:`nanoshape.segment.self_check`): a small piece touching another particle, a ragged
#: outline of noise; such particles are left out of the groups and the classifier
UNASSIGNED_FLAGS = ("fragment", "ragged")


def unassigned_reasons(table: pd.DataFrame, labels: np.ndarray | None = None) -> pd.Series:
    """Why each particle is kept out of the shape groups: its first flag in
    :data:`UNASSIGNED_FLAGS` (``segmentation_flag``); given the grouping's ``labels``, ``no shape
    predictor`` for the other particles left in group 0 (a grouping predictor is missing: no
    fitted shape, say); "" for a grouped particle."""
    flags = (table["segmentation_flag"].fillna("").astype(str) if "segmentation_flag" in table
             else pd.Series("", index=table.index))
    reasons = flags.map(lambda f: next((x for x in f.split(",") if x in UNASSIGNED_FLAGS), ""))
    if labels is not None:
        reasons = reasons.mask((reasons == "") & (np.asarray(labels) == 0), "no shape predictor")
    return reasons


def cluster_particles(table: pd.DataFrame, options: GroupOptions = GroupOptions(),
                      progress: Callable[[int, int], None] | None = None) -> Grouping:
    """Group the particles of a table (see the module docstring).

    ``progress(done, total)`` is called after each (dataset, method, K) fit.
    """
    from threadpoolctl import threadpool_limits

    # the limit reaches only the BLAS libraries loaded when it is set: scipy's own, which the Gaussian mixture's
    # Cholesky solves use, is loaded on first use, so the estimators are imported first (one mixture of emps_train's
    # 1,787 particles, K = 6: 59 s unlimited on a loaded 2-core machine, 0.57 s limited)
    import scipy.linalg  # noqa: F401
    import sklearn.cluster  # noqa: F401
    import sklearn.mixture  # noqa: F401

    # these fits are small: BLAS threads only contend (a Gaussian mixture on 180 particles
    # took 17 s with two threads beside JAX, 0.24 s with one)
    with threadpool_limits(1):
        return _cluster_particles(table, options, progress)


def _cluster_particles(table: pd.DataFrame, options: GroupOptions, progress=None) -> Grouping:
    import tempfile

    import joblib
    from sklearn.metrics import pairwise_distances
    from sklearn.neighbors import KNeighborsClassifier

    lo, hi = options.k_range
    if not 2 <= lo <= hi:
        raise ValueError(f"k_range must satisfy 2 <= low <= high, got {options.k_range}")
    datasets = [d for d in options.datasets if d in DATASETS]
    if not datasets or not all(m in METHODS for m in options.methods):
        raise ValueError(f"datasets must be among {DATASETS} and methods among {METHODS}")
    if any(c not in table for c in parameter_columns(table)):
        datasets = [d for d in datasets if d == "features"] or ["features"]
    # the fitted outlines' spectrum once (each design matrix, the names and the halves would compute it again)
    table = _with_spectrum(table)
    all_columns = dataset_columns(table, "both" if "parameters" in datasets or "both" in datasets else "features", options)
    raw = design_matrix(table, all_columns)
    usable = np.isfinite(raw).all(axis=1) & (unassigned_reasons(table) == "").to_numpy()
    n_usable = int(usable.sum())
    labels_out = np.zeros(len(table), dtype=np.int64)
    if n_usable < max(3 * lo, 10):
        raise ValueError(f"{n_usable} particles with every predictor and no {' or '.join(UNASSIGNED_FLAGS)} flag: too few "
                         f"to group (need {max(3 * lo, 10)})")
    rng = np.random.default_rng(options.seed)
    sample = np.flatnonzero(usable)
    if len(sample) > options.max_particles:
        sample = np.sort(rng.choice(sample, options.max_particles, replace=False))
    common = _standardise(raw[sample], all_columns)
    rows, by_k = [], []
    candidates = {}
    by_bic: dict[str, tuple[int, float, np.ndarray, float]] = {}  # per dataset: the mixture with the lowest BIC
    mixtures: dict[tuple[str, int], tuple[np.ndarray, float]] = {}  # (dataset, K): the mixture's labels and silhouette
    total = len(datasets) * sum(1 if m == "hdbscan" else max(0, min(hi, len(sample) - 1) - lo + 1) for m in options.methods)
    done = 0
    tree_cache = tempfile.TemporaryDirectory(prefix="nanoshape-ward-")
    memory = joblib.Memory(tree_cache.name, verbose=0)
    standardised = {}
    for dataset in datasets:
        columns = dataset_columns(table, dataset, options)
        standardised[dataset] = (columns, _standardise(design_matrix(table.iloc[sample], columns), columns))
    mixture_ks = range(lo, min(hi, len(sample) - 1) + 1) if "gmm" in options.methods else range(0)

    def fitted():  # a (dataset, method, K) fit done: the progress bar moves
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    fitted_mixtures = _mixtures({(dataset, k): standardised[dataset][1] for dataset in datasets for k in mixture_ks},
                                options.seed, fitted)
    for dataset in datasets:
        columns, x = standardised[dataset]
        distances = pairwise_distances(x)
        cophenetic = _cophenetic(x) if "ward" in options.methods else float("nan")
        for method in options.methods:
            best = None
            ks = range(lo, min(hi, len(sample) - 1) + 1) if method != "hdbscan" else [0]
            for k in ks:
                bic = float("nan")
                if method == "gmm":
                    labels, bic = fitted_mixtures[(dataset, k)]
                else:
                    labels = _fit_labels(x, method, k, options.seed, memory=memory,
                                         min_size=max(options.min_group_size, int(np.ceil(options.min_group_fraction * len(x)))))
                k = len(np.unique(labels))
                if method != "gmm":  # the mixtures were counted as they were fitted
                    fitted()
                if not lo <= k <= hi:  # hdbscan found one group only, or more than asked for
                    continue
                score = _silhouette(distances, labels)
                small = np.bincount(labels).min() / len(labels)
                by_k.append({"dataset": dataset, "method": method, "k": k, "silhouette": score, "bic": bic,
                             "smallest_group_fraction": float(small)})
                if small >= options.min_group_fraction and (best is None or score > best[1]):
                    best = (k, score, labels)
                if method == "gmm" and small >= options.min_group_fraction:
                    mixtures[(dataset, k)] = (labels, score)
                if method == "gmm" and small >= options.min_group_fraction and (
                        dataset not in by_bic or bic < by_bic[dataset][1]):
                    by_bic[dataset] = (k, bic, labels, score)
            if best is None:
                continue
            k, score, labels = best
            candidates[(dataset, method)] = (k, labels, columns)
            rows.append({"dataset": dataset, "method": method, "k": k, "silhouette": score,
                         "cophenetic_correlation": cophenetic if method == "ward" else float("nan")})
        if dataset in by_bic:
            k, bic, labels, score = by_bic[dataset]
            candidates[(dataset, "gmm_bic")] = (k, labels, columns)
            rows.append({"dataset": dataset, "method": "gmm_bic", "k": k, "silhouette": score, "bic": bic,
                         "cophenetic_correlation": float("nan")})
    tree_cache.cleanup()
    del distances
    if rows:  # every candidate's silhouette in the common space of all predictors, from one distance matrix
        distances = pairwise_distances(common)
        for row in rows:
            row["silhouette_common"] = _silhouette(distances, candidates[(row["dataset"], row["method"])][1])
        del distances
    comparison = pd.DataFrame(rows, columns=["dataset", "method", "k", "silhouette", "silhouette_common", "bic",
                                             "cophenetic_correlation"])
    if comparison.empty:
        raise ValueError("no combination gave at least two groups of sufficient size")
    # HDBSCAN on the mask's descriptors with the fitted shape's spectrum where the run has it
    min_group = max(options.min_group_size, int(np.ceil(options.min_group_fraction * len(sample))))
    name_parts: list[tuple[int, str, dict[str, int]]] = []
    named_sample = None  # the sample, for the names of the halves' test of hdbscan_named
    by_density = [row for dataset in ("both", "features", "parameters") for _, row in comparison.iterrows()
                  if row.method == "hdbscan" and row.dataset == dataset]
    by_likelihood = [row for dataset in ("both", "features", "parameters") for _, row in comparison.iterrows()
                     if row.method == "gmm_bic" and row.dataset == dataset]
    finer: list[tuple[int, float, float]] = []  # finest_stable: (K, halves' ARI, seeds' ARI) of each K tried, finest first
    if options.choice == "finest_stable" and (by_density or by_likelihood):
        # the finest grouping the halves reproduce: HDBSCAN's groups are the most persistent density peaks, and a
        # shape that is a tail of the main cloud rather than a peak of its own (cubes, hexagonal plates among
        # spheres on emps_train) stays inside them; a mixture with more groups is used where both halves of the
        # particles, each grouped on its own, give the same groups (the test of a stable choice), and
        # where mixtures started from other seeds give them too (else the choice is a local optimum's)
        first = (by_density or by_likelihood)[0].dataset
        base = best_by_density = next((row for row in by_density if row.dataset == first), None)
        best_row = base if base is not None else by_likelihood[0]
        base_k = int(base.k) if base is not None else lo - 1
        columns_first = dataset_columns(table, first, options)
        raw_first = design_matrix(table.iloc[sample], columns_first)
        # no finer than the mixture's own K by the lowest BIC: a K the likelihood does not support can still be
        # reproduced by both halves (one Gaussian group of a synthetic table split 84/36 at ARI 0.947)
        k_bic = by_bic[first][0] if first in by_bic else hi
        for k_try in sorted((k for d, k in mixtures if d == first and base_k < k <= k_bic), reverse=True):
            labels_try, score_try = mixtures[(first, k_try)]
            halves, seeds = _mixture_reproduced(raw_first, labels_try, columns_first, k_try, options)
            finer.append((k_try, halves, seeds))
            if halves >= options.stable_ari and not seeds < options.stable_ari:  # seeds NaN: stable_seeds = 1
                candidates[(first, "gmm_stable")] = (k_try, labels_try, columns_first)
                comparison = pd.concat([comparison, pd.DataFrame([{
                    "dataset": first, "method": "gmm_stable", "k": k_try, "silhouette": score_try,
                    "silhouette_common": _silhouette(pairwise_distances(common), labels_try),
                    "stability": halves, "seed_agreement": seeds}])], ignore_index=True)
                best_row = comparison.iloc[-1]
                break
        tried = {k_try: (halves, seeds) for k_try, halves, seeds in finer}
        by_k = [row | {"stability": tried[row["k"]][0], "seed_agreement": tried[row["k"]][1]}
                if row["method"] == "gmm" and row["dataset"] == first and row["k"] in tried else row for row in by_k]
    elif options.choice == "hdbscan" and by_density:
        best_row = by_density[0]
        if options.name_split and best_row.dataset in by_bic:
            # HDBSCAN's groups split where the lowest-BIC mixture's components inside them are other shapes
            columns_first, x_first = standardised[best_row.dataset]
            named_sample = table.iloc[sample]
            split, name_parts = _split_by_names(named_sample, candidates[(best_row.dataset, "hdbscan")][1],
                                                by_bic[best_row.dataset][2], min_group)
            if name_parts:
                k_split = int(split.max()) + 1
                candidates[(best_row.dataset, "hdbscan_named")] = (k_split, split, columns_first)
                comparison = pd.concat([comparison, pd.DataFrame([{
                    "dataset": best_row.dataset, "method": "hdbscan_named", "k": k_split,
                    "silhouette": _silhouette(pairwise_distances(x_first), split),
                    "silhouette_common": _silhouette(pairwise_distances(common), split)}])], ignore_index=True)
                best_row = comparison.iloc[-1]
    elif options.choice == "bic" and by_likelihood:
        best_row = by_likelihood[0]
    elif options.choice == "stable" and (by_density or by_likelihood):
        # HDBSCAN and the lowest-BIC mixture on the first dataset that has either: the one whose groups each
        # half of the particles, grouped on its own, reproduces best (HDBSCAN where they tie)
        first = (by_density or by_likelihood)[0].dataset
        rivals = [row for row in (*by_density, *by_likelihood) if row.dataset == first]
        for row in rivals:
            k_row, labels_row, columns_row = candidates[(row.dataset, row.method)]
            comparison.loc[(comparison.dataset == row.dataset) & (comparison.method == row.method), "stability"] = \
                _halves_agreement(design_matrix(table.iloc[sample], columns_row), labels_row, columns_row, row.method,
                                  k_row, options)
        scored = comparison[comparison.stability.notna()] if "stability" in comparison else comparison.iloc[:0]
        best_row = scored.loc[scored.stability.idxmax()] if len(scored) and scored.stability.notna().any() else rivals[0]
        if len(scored) > 1 and (scored.stability == scored.stability.max()).sum() > 1:
            best_row = rivals[0]
        best_row = comparison[(comparison.dataset == best_row.dataset) & (comparison.method == best_row.method)].iloc[0]
    else:  # the seed paper's way, and where HDBSCAN found fewer than two groups
        best_row = comparison.sort_values(["silhouette", "silhouette_common"], ascending=False).iloc[0]
    dataset, method, k = str(best_row.dataset), str(best_row.method), int(best_row.k)
    comparison["chosen"] = (comparison.dataset == dataset) & (comparison.method == method)
    _, sample_labels, columns = candidates[(dataset, method)]
    # label every usable particle: a nearest-neighbour vote from the clustered sample
    assigned = None
    if len(sample) == n_usable:
        labels_all = sample_labels
    else:
        assigned = usable.copy()
        assigned[sample] = False
        x_all = design_matrix(table, columns)
        mean, scale = _scaling(x_all[sample], columns)  # the clustered sample's scaling, for every particle
        vote = KNeighborsClassifier(n_neighbors=5).fit((x_all[sample] - mean) / scale, sample_labels)
        labels_all = vote.predict((x_all[usable] - mean) / scale)
    labels_out[usable] = _relabel_by_size(labels_all)
    min_size = max(options.min_group_size, int(np.ceil(options.min_group_fraction * len(sample))))
    if options.choice == "finest_stable" and candidates.get((dataset, method)) is not None and method in ("gmm_stable", "hdbscan"):
        tried = ", ".join(f"K = {k_try} {halves:.3f}" + (f" / {seeds:.3f}" if np.isfinite(seeds) else "")
                          for k_try, halves, seeds in finer)
        tried = (f"the smaller ARI by K, finest first, of the halves' and, where they passed, of the {options.stable_seeds} "
                 f"seeds' mixtures with each other: {tried}" if tried else
                 "no mixture with more groups than HDBSCAN's and at most the lowest BIC's had groups of sufficient size")
        if method == "gmm_stable":
            reason = (f"A Gaussian mixture (full covariances) on the {dataset} dataset with K = {k}: the finest grouping "
                      f"that mixtures started from {options.stable_seeds} seeds find alike and each half of the "
                      f"particles, grouped on its own, reproduces, both at ARI >= {options.stable_ari:.2f} ({tried}). "
                      f"HDBSCAN, which finds K where the particles lie densest, found "
                      f"{int(best_by_density.k) if best_by_density is not None else 'no'} groups: shapes that are a tail "
                      f"of a larger cloud, not a peak of their own, stay inside its groups. Silhouette "
                      f"{best_row.silhouette:.3f}; the other combinations are listed for comparison")
        else:
            reason = (f"HDBSCAN on the {dataset} dataset found K = {k} groups of at least {min_size} particles where they "
                      f"lie densest (the most persistent clusters; particles between groups join their 5 nearest "
                      f"neighbours' group); no Gaussian mixture with more groups was found alike from "
                      f"{options.stable_seeds} seeds and reproduced by both halves of the particles, each grouped on its "
                      f"own, at ARI >= {options.stable_ari:.2f} ({tried}). "
                      f"Silhouette {best_row.silhouette:.3f}; the other combinations are listed for comparison")
    elif options.choice == "stable" and "stability" in comparison and comparison.stability.notna().sum() > 1:
        others = comparison[comparison.stability.notna() & ~comparison.chosen]
        reason = (f"{'HDBSCAN' if method == 'hdbscan' else 'A Gaussian mixture with K by the lowest BIC'} on the "
                  f"{dataset} dataset (K = {k}): of the two ways that find K themselves, the one whose groups each half "
                  f"of the particles, grouped on its own, reproduces best (ARI {best_row.stability:.3f}, against "
                  + ", ".join(f"{'HDBSCAN' if o.method == 'hdbscan' else 'the mixture'} {o.stability:.3f} with K = {o.k}"
                              for o in others.itertuples())
                  + f"). Silhouette {best_row.silhouette:.3f}; the other combinations are listed for comparison")
    elif method == "gmm_bic":
        reason = (f"A Gaussian mixture (full covariances) on the {dataset} dataset with K = {k}: the lowest Bayesian "
                  f"information criterion over K = {lo}..{hi} (BIC {best_row.bic:.0f}; silhouette {best_row.silhouette:.3f}); "
                  f"the other combinations are listed for comparison")
    elif method == "hdbscan" and options.choice == "hdbscan":
        reason = (f"HDBSCAN on the {dataset} dataset found K = {k} groups of at least "
                  f"{max(options.min_group_size, int(np.ceil(options.min_group_fraction * len(sample))))} particles where "
                  f"they lie densest (the most persistent clusters; particles between groups join their 5 nearest "
                  f"neighbours' group). "
                  f"K is not chosen by the silhouette value: it favours the largest split, and put hexagons with spheres "
                  f"(experiments/groups_second_generator.py). Silhouette {best_row.silhouette:.3f}; the other "
                  f"{len(comparison) - 1} combinations, K-means, Gaussian mixture and Ward with K chosen by their "
                  f"silhouette over {lo}..{hi}, are listed for comparison")
    elif method == "hdbscan_named":
        density_k = int(next(row.k for row in by_density if row.dataset == dataset))
        splits = "; ".join(f"from HDBSCAN's group of {name} " + ", ".join(f"{n} {other}" for other, n in off.items())
                           for _, name, off in name_parts)
        reason = (f"HDBSCAN on the {dataset} dataset found {density_k} groups of at least {min_group} particles where "
                  f"they lie densest (particles between groups join their 5 nearest neighbours' group); each was "
                  f"then split where the components of the Gaussian mixture with the lowest BIC (K = "
                  f"{by_bic[dataset][0]}) that fall inside it are, by their median particle, another canonical "
                  f"shape than the group's commonest, with at least {min_group} particles ({splits}): K = {k}. "
                  f"Shapes that are a tail of a larger cloud (cubes and plates among spheres) are no density peak "
                  f"of their own, and the mixture alone splits one shape by size and depends on its start. "
                  f"Silhouette {best_row.silhouette:.3f}; the other combinations are listed for comparison")
    else:
        reason = (f"{method} on the {dataset} dataset with K = {k} separates its particles best: highest silhouette "
                  f"value ({best_row.silhouette:.3f}) among {len(comparison)} combinations, each with K chosen by its "
                  f"silhouette over {lo}..{hi} (in the common space of all predictors it scores "
                  f"{best_row.silhouette_common:.3f})")
    # the halves of hdbscan_named: HDBSCAN and the mixture of the whole's K (by the lowest BIC), named and split
    stability = _halves_agreement(design_matrix(table.iloc[sample], columns), sample_labels, columns, method,
                                  by_bic[dataset][0] if method == "hdbscan_named" else k, options, table=named_sample)
    reason += (f". Stability: each half of the particles grouped on its own gives the same groups as the whole at "
               f"ARI {stability:.3f} (the smaller of the two halves)")
    if assigned is not None:
        reason += (f". The groups were found on a random sample of {len(sample):,} of the {n_usable:,} particles "
                   f"(groups.max_particles; seed {options.seed}); the other {int(assigned.sum()):,} took the group of "
                   f"their 5 nearest sampled neighbours (column group_assigned)")
    return Grouping(labels=labels_out, dataset=dataset, method=method, k=k, comparison=comparison, reason=reason,
                    silhouette_by_k=pd.DataFrame(by_k), columns=tuple(columns), stability=stability,
                    assigned=assigned)


def _mixture_seeds(options: GroupOptions) -> tuple[int, ...]:
    """``options.seed`` and ``stable_seeds - 1`` seeds drawn from it (drawn rather than ``seed + 1, ...``, so that
    neighbouring values of ``seed`` do not share their other seeds)."""
    drawn = np.random.SeedSequence(options.seed).spawn(options.stable_seeds - 1)
    return (options.seed, *(int(child.generate_state(1)[0] % 2**31) for child in drawn))


def _mixture_reproduced(raw: np.ndarray, labels: np.ndarray, columns: tuple[str, ...], k: int,
                        options: GroupOptions) -> tuple[float, float]:
    """How well the Gaussian mixture ``labels`` (K = ``k``, fitted with ``options.seed`` on the standardised ``raw``)
    is reproduced: (the smallest halves' ARI, :func:`_halves_agreement`, over the mixtures of the seeds of
    :func:`_mixture_seeds`; the smallest ARI between two of these mixtures). Stops at the first figure under
    ``stable_ari``: the halves of ``options.seed`` first, then the other seeds' mixtures of all particles, then
    their halves; a figure not reached is NaN (so is the second with one seed)."""
    from sklearn.metrics import adjusted_rand_score

    halves = _halves_agreement(raw, labels, columns, "gmm", k, options)
    seeds = _mixture_seeds(options)
    if not halves >= options.stable_ari or len(seeds) == 1:
        return halves, float("nan")
    x = _standardise(raw, columns)
    fits = [labels]
    agreement = 1.0
    for seed in seeds[1:]:
        own = _mixture(x, k, seed)[0]
        agreement = min(agreement, *(adjusted_rand_score(own, other) for other in fits))
        if agreement < options.stable_ari:
            return halves, agreement
        fits.append(own)
    for seed, own in zip(seeds[1:], fits[1:]):
        halves = min(halves, _halves_agreement(raw, own, columns, "gmm", k, dataclasses.replace(options, seed=seed)))
        if halves < options.stable_ari:
            break
    return halves, agreement


def _halves_agreement(raw: np.ndarray, labels: np.ndarray, columns: tuple[str, ...], method: str, k: int,
                      options: GroupOptions, table: pd.DataFrame | None = None) -> float:
    """The smaller ARI between the grouping of all particles and that of each half (alternate rows), each half
    standardised and grouped on its own by the same method (with the same K where the method needs one;
    ``hdbscan_named`` needs ``table``, the rows of ``raw``)."""
    from sklearn.metrics import adjusted_rand_score

    scores = []
    for half in (0, 1):
        rows = np.flatnonzero(np.arange(len(raw)) % 2 == half)
        min_size = max(options.min_group_size, int(np.ceil(options.min_group_fraction * len(rows))))
        if len(rows) <= max(k, min_size):
            return float("nan")
        own = _fit_labels(_standardise(raw[rows], columns), method, k, options.seed, min_size=min_size,
                          table=None if table is None else table.iloc[rows])
        scores.append(adjusted_rand_score(labels[rows], own))
    return float(min(scores))


# ------------------------------------------------------------------------------------ names

#: what each dominant symmetry order of a compact particle is called
_ORDER_NAMES = {3: "triangular plates", 4: "cubes", 5: "five-fold particles", 6: "hexagonal plates"}
#: an angular harmonic below this is pixelation or rounding, not a symmetry (a ~20 px disc reads < 0.05)
NAME_HARMONIC_MIN = 0.06
#: solidity under this: arms (stars, multipods); compact shapes with rounded corners stay above 0.85
NAME_CONCAVE_SOLIDITY = 0.75
#: compact particles with a circularity under this and no harmonic above the next are stars with shallow arms
#: (nanoshape's rendered stars: circularity 0.52, A_5 0.05); triangles read as low (0.64-0.73) but A_3 ~ 0.5
NAME_STAR_CIRCULARITY, NAME_STAR_HARMONIC_MAX = 0.65, 0.2
#: maximum / minimum Feret diameter from which particles are elongated, and from which they are rods
NAME_ELONGATED, NAME_ROD = 1.35, 2.0
#: the fitted outline is an m-sided polygon where its harmonic m is at least this share of a sharp regular
#: m-gon's (:func:`polygon_sharpness`). On emps_train's run the hexagonal/faceted group reads 0.40 at m = 6
#: while its mask's A_6 (0.059) is under :data:`NAME_HARMONIC_MIN`; its round groups read under 0.05
NAME_FIT_SHARPNESS = 0.25
#: elongated particles whose fitted shape covers their mask this poorly (median Jaccard) are not one shape
#: but aggregates, touching pairs and fragments (emps_train's run: such a group 0.86, its rods 0.92, the rest 0.94-0.95)
NAME_FIT_JACCARD_MIN = 0.88


def polygon_sharpness(spectrum_m: float, m: int) -> float:
    """How much of a sharp regular m-gon's harmonic m an outline has: 1 for the polygon, 0 for a circle.

    The outline spectrum of :func:`nanoshape.shape.harmonic_spectrum` of a regular m-gon, traced at constant
    speed, has Fourier coefficients only at k = 1 + j m, each |Z_k| = |Z_1| / k^2, so its harmonic m is
    sqrt((m - 1)^-4 + (m + 1)^-4): 0.258 for a triangle, 0.118 for a square, 0.045 for a hexagon. Dividing
    by it puts every order on one scale, where the raw amplitudes favour low orders tenfold.
    """
    return float(spectrum_m) / float(np.hypot((m - 1.0) ** -2, (m + 1.0) ** -2))


def _fitted_order(row: pd.Series | dict) -> int | None:
    """The symmetry order m = 3..6 of the fitted outline (``shape_harmonic_m``) where it is clearly a
    polygon (:data:`NAME_FIT_SHARPNESS`); None where it is not, or the row has no fitted spectrum."""
    sharpness = {m: polygon_sharpness(float(row.get(f"shape_harmonic_{m}", np.nan)), m) for m in range(3, 7)}
    if not all(np.isfinite(list(sharpness.values()))):
        return None
    order = max(sharpness, key=sharpness.get)
    if order == 6 and sharpness[3] >= 0.8 * sharpness[6]:
        order = 3  # a triangle's harmonics at k = 1 + 3j give it a hexagon's sharpness at m = 6 too
    return order if sharpness[order] >= NAME_FIT_SHARPNESS else None


def shape_name(row: pd.Series | dict) -> str:
    """The canonical shape a chemist would call a particle (or a group's median particle) by.

    From the mask alone: arms where the solidity is low (named by their count, the
    dominant order of the angular harmonics), rods and elongated particles by the Feret
    ratio, shallow-armed stars by a low circularity without a strong harmonic, then the
    dominant symmetry order m of ``angular_harmonic_m`` (m = 3..6, over
    every order that is not its multiple): triangles, cubes, hexagons; no order standing
    out with harmonics above the pixelation is a sphere, several orders at once an
    irregular particle. Where the mask alone says sphere or irregular particle and the fitted
    shape's outline (``shape_harmonic_m``, where the row has it) is a clear polygon
    (:func:`polygon_sharpness`) of the order that dominates the mask's harmonics too, the
    particle is named by that order: two estimators agreeing on a symmetry whose corners
    the mask's harmonics, read at the pixelation floor, leave faint (rounded hexagonal plates).
    Elongated particles whose fitted shape covers the mask poorly (``jaccard_refined`` under
    :data:`NAME_FIT_JACCARD_MIN`) are irregular.
    """
    name = _mask_shape_name(row)
    harmonics = {m: float(row.get(f"angular_harmonic_{m}", np.nan)) for m in range(3, 7)}
    if name in ("spheres", "irregular particles") and all(np.isfinite(list(harmonics.values()))):
        fitted = _fitted_order(row)
        if fitted is not None and fitted == max(harmonics, key=harmonics.get):
            return _ORDER_NAMES[fitted]
    if name == "elongated particles" and float(row.get("jaccard_refined", 1.0)) < NAME_FIT_JACCARD_MIN:
        return "irregular particles"
    return name


def _mask_shape_name(row: pd.Series | dict) -> str:
    """:func:`shape_name` from the mask's descriptors alone."""
    harmonics = {m: float(row.get(f"angular_harmonic_{m}", np.nan)) for m in range(2, 9)}
    if not all(np.isfinite(list(harmonics.values()))):
        return "particles"
    aspect = float(row.get("feret_ratio", np.nan))
    order = max(range(3, 7), key=lambda m: harmonics[m])
    rivals = max(harmonics[m] for m in harmonics if m % order and m != 2)
    if float(row.get("solidity", 1.0)) < NAME_CONCAVE_SOLIDITY:
        return f"{_arms(row, harmonics)}-armed stars"
    if aspect >= NAME_ROD:
        return "rods"
    if aspect >= NAME_ELONGATED:
        return "elongated particles"
    if float(row.get("circularity", 1.0)) < NAME_STAR_CIRCULARITY and harmonics[order] < NAME_STAR_HARMONIC_MAX:
        return f"{_arms(row, harmonics)}-armed stars"  # shallow arms: a long outline, no strong corner of a polygon
    if harmonics[order] < NAME_HARMONIC_MIN:
        return "spheres"
    if rivals >= 0.6 * harmonics[order]:
        return "irregular particles"
    return _ORDER_NAMES[order]


def _arms(row: pd.Series | dict, harmonics: dict[int, float]) -> int:
    """How many arms a star has: the order m = 3..12 whose angular harmonic is strongest,
    or its smallest divisor (>= 3) whose harmonic is at least half as strong (the fundamental
    of a five-armed star also puts weight on m = 10; eq. 1's d = 5 at L ~ 1 is ten-armed and
    has almost nothing at m = 5). Orders above 8 count only where the table has them."""
    amplitudes = dict(harmonics)
    for m in range(9, 13):
        value = float(row.get(f"angular_harmonic_{m}", np.nan))
        if np.isfinite(value):
            amplitudes[m] = value
    strongest = max((m for m in amplitudes if m >= 3), key=lambda m: amplitudes[m])
    return next(m for m in range(3, strongest + 1)
                if strongest % m == 0 and amplitudes.get(m, 0.0) >= 0.5 * amplitudes[strongest])


def describe_groups(table: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    """One row per group (``labels`` 1..K; 0 is left out): its name, share and size.

    The name is :func:`shape_name` of the group's median descriptors; where two groups get
    the same name they are told apart by size ("spheres, small"/"spheres, large").
    Columns: group, name, description (in words, e.g. "rods, aspect 3.1 +- 0.4, median 21 nm
    across, quartiles 19-23, 38 % of particles"), particles, share, size median and quartiles
    of ``equivalent_diameter_nm`` (or ``_px`` where no micrograph has a pixel size) with
    ``sized_particles`` the count they come from, aspect mean and std (max / min Feret).
    """
    labels = np.asarray(labels)
    table = _with_spectrum(table)  # the fitted outlines' symmetry, for the names (none without fitted shapes)
    # sizes are described from the particles that have them (nm where any micrograph has a pixel size)
    size_column = next((c for c in ("equivalent_diameter_nm", "equivalent_diameter_px")
                        if c in table and table[c].notna().any()), None)
    unit = size_column.rsplit("_", 1)[1] if size_column else ""
    grouped = labels > 0
    rows = []
    for g in sorted(set(labels[grouped].tolist())):
        part = table[labels == g]
        median = part.median(numeric_only=True)
        aspect = part["feret_ratio"].to_numpy(float) if "feret_ratio" in part else np.full(len(part), np.nan)
        size = part[size_column].to_numpy(float) if size_column else np.full(len(part), np.nan)
        rows.append({"group": int(g), "name": shape_name(median), "particles": int(len(part)),
                     "share": len(part) / int(grouped.sum()),
                     f"size_median_{unit or 'px'}": _quantile(size, 0.5),
                     f"size_q25_{unit or 'px'}": _quantile(size, 0.25),
                     f"size_q75_{unit or 'px'}": _quantile(size, 0.75),
                     "sized_particles": int(np.isfinite(size).sum()),
                     "aspect_mean": float(np.nanmean(aspect)) if np.isfinite(aspect).any() else np.nan,
                     "aspect_std": float(np.nanstd(aspect)) if np.isfinite(aspect).any() else np.nan})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    size_key = f"size_median_{unit or 'px'}"
    for name, same in out.groupby("name"):
        if len(same) > 1:  # one name, several groups: by size, smallest first
            words = ["small", "large"] if len(same) == 2 else [f"size {i + 1}" for i in range(len(same))]
            for word, index in zip(words, same.sort_values(size_key).index):
                out.loc[index, "name"] = f"{name}, {word}"
    descriptions = []
    for _, row in out.iterrows():
        words = [row["name"]]
        if str(row["name"]).startswith(("rods", "elongated")):
            words.append(f"aspect {row.aspect_mean:.1f} \u00b1 {row.aspect_std:.1f}")
        if np.isfinite(row[size_key]):
            # a median with its quartiles: a sd beside a median reads as mean +- sd and is pulled by a few giants
            q25, q75 = row[size_key.replace("median", "q25")], row[size_key.replace("median", "q75")]
            sized = "" if row.sized_particles == row.particles else f" (of {row.sized_particles} with a pixel size)"
            words.append(f"median {row[size_key]:.3g} {unit or 'px'} across, quartiles {q25:.3g}-{q75:.3g}{sized}")
        words.append(f"{100 * row.share:.0f} % of particles ({row.particles})")
        descriptions.append(", ".join(words))
    out.insert(2, "description", descriptions)
    return out


def _quantile(values: np.ndarray, q: float) -> float:
    """The q-quantile of the finite values; NaN when there are none."""
    finite = values[np.isfinite(values)]
    return float(np.quantile(finite, q)) if finite.size else np.nan


# ------------------------------------------------------------------------------------ SVM


@dataclass(frozen=True, eq=False)
class Classifier:
    """A trained group classifier and how well it did.

    Attributes:
      pipeline: scikit-learn Pipeline (StandardScaler, SVC).
      columns: the particle-table columns it reads, in order.
      groups: the group labels it predicts.
      test_accuracy: accuracy on the held-out split.
      cv_accuracy: mean and std of the cross-validated accuracy on all particles.
      confusion: confusion matrix on the held-out split (rows true, columns predicted).
      best_params: C and gamma chosen by the grid search.
      centres, scales: (K, len(columns)) each group's mean and spread (standard deviation,
        at least :data:`UNKNOWN_MIN_SCALE`) in the pipeline's standardised space; None for a
        classifier saved before they existed (it then calls no particle unknown).
      unknown_distance: a particle farther than this from every group is ``unknown``
        (:data:`UNKNOWN`): the 99.5th percentile of the training particles' own distances.
      trained_on: (particles it was trained and evaluated on, grouped particles of the run):
        a seeded sample of :attr:`GroupOptions.max_particles` where the run has more; None
        for a classifier saved before it was recorded.
    """

    pipeline: Any
    columns: tuple[str, ...]
    groups: tuple[int, ...]
    test_accuracy: float
    cv_accuracy: tuple[float, float]
    confusion: np.ndarray
    best_params: dict[str, float]
    centres: np.ndarray | None = None
    scales: np.ndarray | None = None
    unknown_distance: float | None = None
    trained_on: tuple[int, int] | None = None

    def distance(self, table: pd.DataFrame) -> np.ndarray:
        """(n,) distance of each particle to the nearest group (NaN where a predictor is missing or the
        classifier has no group geometry): max over predictors of |x - centre| / spread, in the
        classifier's standardised space, so one predictor far outside every group suffices."""
        x = design_matrix(table, self.columns)
        out = np.full(len(table), np.nan)
        ok = np.isfinite(x).all(axis=1)
        if ok.any() and self.centres is not None:
            out[ok] = _group_distance(self.pipeline[0].transform(x[ok]), self.centres, self.scales)
        return out

    def predict(self, table: pd.DataFrame) -> np.ndarray:
        """Group of each particle (0 where a predictor is missing, :data:`UNKNOWN` where it lies farther
        than ``unknown_distance`` from every group)."""
        x = design_matrix(table, self.columns)
        out = np.zeros(len(table), dtype=np.int64)
        ok = np.isfinite(x).all(axis=1)
        if ok.any():
            out[ok] = self.pipeline.predict(x[ok])
        if self.unknown_distance is not None:
            out[self.distance(table) > self.unknown_distance] = UNKNOWN
        return out

    def summary(self) -> dict[str, Any]:
        out = {"columns": list(self.columns), "groups": [int(g) for g in self.groups],
               "test_accuracy": self.test_accuracy, "cv_accuracy_mean": self.cv_accuracy[0],
               "cv_accuracy_std": self.cv_accuracy[1], "confusion": self.confusion.tolist(),
               "best_params": self.best_params}
        if self.centres is not None:
            out |= {"centres": self.centres.tolist(), "scales": self.scales.tolist(),
                    "unknown_distance": self.unknown_distance}
        if self.trained_on is not None:
            out |= {"training_particles": self.trained_on[0], "grouped_particles": self.trained_on[1]}
        return out


#: folds of the classifier's grid search over C and gamma: five fit the 30 candidates in half the time of ten, and on
#: emps_train's run chose the same C and gamma (test and cross-validated accuracy 0.992 both ways); on a harder
#: target (Ward's six groups of the same particles) 0.925 test accuracy both ways, 10-fold CV 0.928 against 0.925
SEARCH_FOLDS = 5
#: the group of a particle that resembles no group of a classifier
UNKNOWN = -1
#: smallest spread of a group along a predictor, in standard deviations of all particles: a predictor that
#: hardly varies inside a group (solidity of spheres) must not make a small difference look far
UNKNOWN_MIN_SCALE = 0.1
#: quantile of the training particles' own distances beyond which a particle is unknown
UNKNOWN_QUANTILE = 0.995


def _group_distance(z: np.ndarray, centres: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """(n,) min over groups of max over predictors of |z - centre| / scale."""
    return (np.abs(z[:, None, :] - centres[None]) / scales[None]).max(axis=2).min(axis=1)


def train_classifier(table: pd.DataFrame, labels: np.ndarray, columns: tuple[str, ...],
                     options: GroupOptions = GroupOptions()) -> Classifier:
    """Fit an RBF SVM on ``labels`` (0 = unlabelled, ignored) from ``columns`` of ``table``.

    C and gamma by a grid search cross-validated on the training split (``cv_folds``, at most :data:`SEARCH_FOLDS`);
    accuracy and confusion matrix on the held-out ``test_fraction``; cross-validated accuracy
    on all particles (a seeded sample of ``max_particles`` in a larger run).
    """
    from sklearn.metrics import confusion_matrix
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score, train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    x = design_matrix(table, columns)
    keep = (np.asarray(labels) > 0) & np.isfinite(x).all(axis=1)
    x, y = x[keep], np.asarray(labels)[keep]
    labelled = len(y)
    if labelled > options.max_particles:
        # the grid search refits an RBF SVM 300 times, each superlinear in the count (20,606 particles: 241 s)
        sample = np.sort(np.random.default_rng(options.seed).choice(labelled, options.max_particles, replace=False))
        x, y = x[sample], y[sample]
    groups, counts = np.unique(y, return_counts=True)
    if len(groups) < 2:
        raise ValueError("the classifier needs at least two groups")
    folds = int(max(2, min(options.cv_folds, counts.min())))
    stratify = y if counts.min() >= 2 else None
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=options.test_fraction, random_state=options.seed,
                                                        stratify=stratify)
    pipeline = make_pipeline(StandardScaler(), SVC(kernel="rbf"))
    grid = {"svc__C": [0.3, 1.0, 3.0, 10.0, 30.0, 100.0], "svc__gamma": ["scale", 0.03, 0.1, 0.3, 1.0]}
    # the grid search's own folds: at most SEARCH_FOLDS (the reported cross-validation keeps cv_folds)
    inner = StratifiedKFold(n_splits=int(max(2, min(folds, SEARCH_FOLDS, np.unique(y_train, return_counts=True)[1].min()))),
                            shuffle=True, random_state=options.seed)
    search = GridSearchCV(pipeline, grid, cv=inner, n_jobs=1).fit(x_train, y_train)
    model = search.best_estimator_
    test_accuracy = float((model.predict(x_test) == y_test).mean())
    confusion = confusion_matrix(y_test, model.predict(x_test), labels=groups)
    cv = cross_val_score(model, x, y, cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=options.seed))
    model.fit(x, y)  # the saved classifier uses every particle
    best = {k.replace("svc__", ""): v for k, v in search.best_params_.items()}
    z = model[0].transform(x)
    centres = np.stack([z[y == g].mean(axis=0) for g in groups])
    scales = np.stack([np.maximum(z[y == g].std(axis=0), UNKNOWN_MIN_SCALE) for g in groups])
    unknown = float(np.quantile(_group_distance(z, centres, scales), UNKNOWN_QUANTILE))
    return Classifier(pipeline=model, columns=tuple(columns), groups=tuple(int(g) for g in groups),
                      test_accuracy=test_accuracy, cv_accuracy=(float(cv.mean()), float(cv.std())),
                      confusion=confusion, best_params=best, centres=centres, scales=scales,
                      unknown_distance=unknown, trained_on=(len(y), labelled))


#: every (module, class) a skops file of Pipeline(StandardScaler, SVC) holds, and nothing else:
#: the containers of its state, numpy arrays and scalars, and the three estimators
_CLASSIFIER_TYPES = frozenset({
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("builtins", "str"), ("builtins", "int"),
    ("builtins", "float"), ("builtins", "bool"), ("builtins", "NoneType"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy", "float64"), ("numpy", "float32"), ("numpy", "int64"),
    ("numpy", "int32"), ("numpy", "bool_"),
    ("sklearn.pipeline", "Pipeline"), ("sklearn.preprocessing._data", "StandardScaler"), ("sklearn.svm._classes", "SVC"),
})
_CLASSIFIER_NODES = frozenset({"DictNode", "ListNode", "TupleNode", "JsonNode", "TypeNode", "NdArrayNode", "ObjectNode",
                               "DTypeNode", "NoneNode"})
_CLASSIFIER_META_KEYS = ("columns", "groups", "test_accuracy", "cv_accuracy_mean", "cv_accuracy_std", "confusion",
                         "best_params")


def save_classifier(classifier: Classifier, path: str | Path) -> Path:
    """Write the classifier (skops: no pickle) and its metadata beside it (``.json``, with the
    SHA-256 of the .skops file), each atomically: a failed or killed save leaves the previous
    pair whole, and a .json that does not belong to its .skops is refused on loading."""
    import skops.io as sio

    from nanoshape.rundir import atomic_write

    path = Path(path)
    data = {}

    def dump(tmp: Path) -> None:
        sio.dump(classifier.pipeline, tmp)
        data["sha256"] = hashlib.sha256(tmp.read_bytes()).hexdigest()

    atomic_write(path, dump)
    meta = {"format": "nanoshape-classifier-1", "skops_sha256": data["sha256"], **classifier.summary()}
    atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(meta, indent=1)))
    return path


def _classifier_types(path: Path) -> set[tuple[str, str, str]]:
    """(module, class, skops loader) of every object a skops file describes, read from its schema only."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        schema = json.loads(archive.read("schema.json"))
    found = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__class__" in node or "__module__" in node:
                found.add((str(node.get("__module__")), str(node.get("__class__")), str(node.get("__loader__"))))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def load_classifier(path: str | Path) -> Classifier:
    """Load a classifier saved by :func:`save_classifier`.

    Only a file made of exactly the types of a ``Pipeline(StandardScaler, SVC)``
    (:data:`_CLASSIFIER_TYPES`) is loaded; anything else in it is refused by name before
    skops builds a single object.

    Raises:
      FileNotFoundError: no classifier (or its .json) at ``path``.
      ValueError: the file is damaged or truncated, its .json lacks keys or belongs to
        another file, or it holds types a nanoshape classifier does not.
    """
    import skops.io as sio

    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"{path}: no classifier (and its .json) here; `nanoshape analyze` writes classifier.skops")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{meta_path}: cannot be read ({type(error).__name__}: {error})") from None
    if not isinstance(meta, dict) or meta.get("format") != "nanoshape-classifier-1":
        raise ValueError(f"{meta_path}: not a nanoshape classifier")
    missing = [key for key in _CLASSIFIER_META_KEYS if key not in meta]
    if missing:
        raise ValueError(f"{meta_path}: lacks {missing}; it was damaged or not written by nanoshape")
    if "skops_sha256" in meta and meta["skops_sha256"] != hashlib.sha256(path.read_bytes()).hexdigest():
        raise ValueError(f"{meta_path} does not belong to {path} (the file's SHA-256 differs from the one recorded)")
    try:
        types = _classifier_types(path)
    except Exception as error:  # BadZipFile, a missing or broken schema.json
        raise ValueError(f"{path}: not a readable classifier (truncated or damaged?): {type(error).__name__}: {error}") from None
    foreign = sorted(f"{module}.{name}" for module, name, loader in types
                     if (module, name) not in _CLASSIFIER_TYPES or loader not in _CLASSIFIER_NODES)
    if foreign:
        raise ValueError(f"{path}: refusing to load types that a nanoshape classifier (StandardScaler + SVC) does not "
                         f"contain: {foreign}")
    try:
        pipeline = sio.load(path, trusted=sorted({f"{module}.{name}" for module, name, _ in types}))
    except Exception as error:
        raise ValueError(f"{path}: not a readable classifier (truncated or damaged?): {type(error).__name__}: {error}") from None
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    steps = [type(step) for _, step in getattr(pipeline, "steps", [])] if isinstance(pipeline, Pipeline) else []
    if steps != [StandardScaler, SVC]:
        raise ValueError(f"{path}: holds {type(pipeline).__name__} {[t.__name__ for t in steps]}, not the "
                         f"StandardScaler + SVC pipeline a nanoshape classifier is")
    geometry = {}
    if all(key in meta for key in ("centres", "scales", "unknown_distance")):
        try:
            centres, scales = np.asarray(meta["centres"], float), np.asarray(meta["scales"], float)
            unknown = float(meta["unknown_distance"])
        except (TypeError, ValueError):
            raise ValueError(f"{meta_path}: its group centres or spreads are not numbers") from None
        shape = (len(meta["groups"]), len(meta["columns"]))
        if centres.shape != shape or scales.shape != shape or not (scales > 0).all() or not np.isfinite(unknown):
            raise ValueError(f"{meta_path}: its group centres and spreads must be {shape} with positive spreads")
        geometry = {"centres": centres, "scales": scales, "unknown_distance": unknown}
    if isinstance(meta.get("training_particles"), int) and isinstance(meta.get("grouped_particles"), int):
        geometry["trained_on"] = (meta["training_particles"], meta["grouped_particles"])
    return Classifier(pipeline=pipeline, columns=tuple(meta["columns"]), groups=tuple(meta["groups"]),
                      test_accuracy=meta["test_accuracy"], cv_accuracy=(meta["cv_accuracy_mean"], meta["cv_accuracy_std"]),
                      confusion=np.asarray(meta["confusion"]), best_params=meta["best_params"], **geometry)


def options_dict(options: GroupOptions) -> dict[str, Any]:
    return dataclasses.asdict(options)
