"""Shape groups without supervision, and a classifier that sorts new particles into them.

:func:`cluster_particles` compares nine ways of grouping the particles of a run, three
datasets by three methods, as the seed paper's Tables S8 and S9 do:

- datasets: (1) ``features``: the unit-free morphology descriptors plus the log of the
  size (:data:`FEATURE_COLUMNS`); (2) ``parameters``: the fitted shape, by default as the
  harmonic spectrum of its outline (:data:`HARMONIC_COLUMNS`, below), or as the seed
  paper's log p, log L and d (``parameter_space="raw"``; phi, the orientation, is left out
  either way); (3) ``both``; every column standardised (the spectrum as one block);
- methods: K-means, a Gaussian mixture (full covariances) and hierarchical clustering
  (Ward), each with K chosen by the silhouette value over ``k_range``.

Why a spectrum: (p, d, L) is not one-to-one with shapes. Near L = 1 a shape and its dual a
quarter phase on are nearly the same (:func:`nanoshape.shape.dual_p`; a cube is a turned
p = 1 diamond), a circle is drawn by every d, and log p above ~8 changes nothing visible.
In raw parameters one population of five-armed stars split into p ~ 1 and p ~ 5 and the
spheres spread over d (experiments/groups_ablation.py: ARI 0.84 against the truth); the
spectrum of the drawn outline (:func:`nanoshape.shape.harmonic_spectrum`, in log above a
floor, scaled as one block so that the weak harmonics keep their small weight) is the same
for every description of a shape.

Each combination's K is chosen by the silhouette value in its own space, and the
combination with the highest silhouette is used (its silhouette in the common space of
all predictors is reported beside it: that score favours merging groups that differ in a
few predictors only, such as spheres and cubes of one size, so it is not the criterion);
the table (:attr:`Grouping.comparison`),
the cophenetic correlation coefficient of each hierarchical tree, and the reason for the
choice go to the run's summary. Everything is deterministic for a given seed.

:func:`train_classifier` fits a multiclass RBF support-vector machine on the group labels
(scikit-learn; C and gamma by a 10-fold cross-validated grid search on an 80 % training
split; accuracy and confusion matrix on the held-out 20 %; 10-fold cross-validated
accuracy on all particles). :func:`save_classifier` writes it with skops (no pickle),
atomically, with its metadata and the file's SHA-256 beside it; :func:`load_classifier`
reads the file's type list first and loads only a file made of exactly the types a
``Pipeline(StandardScaler, SVC)`` holds, so a file from elsewhere can neither run code nor
pass off another model (a ``DummyClassifier`` answering one group for every particle).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

__all__ = ["GroupOptions", "Grouping", "FEATURE_COLUMNS", "PARAMETER_COLUMNS", "HARMONIC_COLUMNS", "design_matrix", "cluster_particles",
           "Classifier", "train_classifier", "save_classifier", "load_classifier"]

#: unit-free morphology descriptors used for grouping; the size enters as log equivalent diameter
FEATURE_COLUMNS = ("aspect_ratio", "feret_ratio", "circularity", "roundness", "solidity", "convexity", "eccentricity")
#: shape parameters used for grouping (phi, the orientation, is not a property of the shape)
PARAMETER_COLUMNS = ("p", "l_ratio", "d")
#: the fitted shape's outline spectrum (computed from p, d, l_ratio, phi when the table lacks it)
HARMONIC_COLUMNS = tuple(f"shape_harmonic_{m}" for m in range(1, 13))
#: harmonics enter as log(amplitude + this): amplitudes below a few % of the radius are at
#: the resolution of a ~30 px mask, above it relative changes count (experiments/groups_ablation.py)
HARMONIC_FLOOR = 0.05
PARAMETER_SPACES = ("harmonics", "raw")
DATASETS = ("features", "parameters", "both")
METHODS = ("kmeans", "gmm", "ward")


@dataclass(frozen=True)
class GroupOptions:
    """How particles are grouped and the classifier trained.

    Attributes:
      k_range: smallest and largest number of groups tried.
      seed: seed of K-means, the mixture, the train/test split and the grid search.
      datasets, methods: the combinations compared (subsets of ``features``/``parameters``/
        ``both`` and ``kmeans``/``gmm``/``ward``).
      max_particles: silhouette values and Ward trees are computed on a random sample of at
        most this many particles (both are quadratic in the count); the chosen method then
        labels every particle.
      use_size: include log(equivalent diameter) in the ``features`` dataset.
      parameter_space: how the fitted shape enters the ``parameters`` and ``both`` datasets:
        ``harmonics`` (the outline spectrum, default) or ``raw`` (log p, log L, d).
      min_group_fraction: a K whose smallest group holds less than this fraction of the
        particles is not chosen (a few outliers are not a shape group).
      test_fraction: held-out share for the classifier's test accuracy.
      cv_folds: folds of the cross-validation.
    """

    k_range: tuple[int, int] = (2, 8)
    seed: int = 0
    datasets: tuple[str, ...] = DATASETS
    methods: tuple[str, ...] = METHODS
    max_particles: int = 4000
    use_size: bool = True
    parameter_space: str = "harmonics"
    min_group_fraction: float = 0.02
    test_fraction: float = 0.2
    cv_folds: int = 10

    def __post_init__(self):
        # checked here so a bad option stops a run before its micrographs are analysed
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
    """

    labels: np.ndarray
    dataset: str
    method: str
    k: int
    comparison: pd.DataFrame
    reason: str
    silhouette_by_k: pd.DataFrame
    columns: tuple[str, ...]


def _size_column(table: pd.DataFrame) -> str | None:
    for column in ("equivalent_diameter_nm", "equivalent_diameter_px"):
        if column in table and table[column].notna().any():
            return column
    return None


def dataset_columns(table: pd.DataFrame, dataset: str, options: GroupOptions = GroupOptions()) -> tuple[str, ...]:
    """The table columns that make up ``dataset``."""
    features = list(FEATURE_COLUMNS)
    size = _size_column(table) if options.use_size else None
    if size:
        features.append(size)
    if dataset == "features":
        return tuple(features)
    parameters = HARMONIC_COLUMNS if options.parameter_space == "harmonics" else PARAMETER_COLUMNS
    if dataset == "parameters":
        return parameters
    if dataset == "both":
        return tuple(features) + parameters
    raise ValueError(f"unknown dataset {dataset!r}; choose from {DATASETS}")


def design_matrix(table: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    """(n, len(columns)) raw predictor values: sizes, p and L in log, the outline spectrum as
    log(amplitude + :data:`HARMONIC_FLOOR`) (computed from p, d, l_ratio and phi where the table
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
        else:
            x = table[column].to_numpy(float)
        if column in ("p", "l_ratio") or column.startswith("equivalent_diameter"):
            x = np.log(np.maximum(x, 1e-12))
        values.append(x)
    return np.stack(values, axis=1)


def shape_spectrum(table: pd.DataFrame, chunk: int = 4096) -> np.ndarray:
    """(n, 12) :func:`nanoshape.shape.harmonic_spectrum` of each particle's fitted shape (NaN where a
    parameter is missing), in fixed-size jitted chunks (one compilation)."""
    missing = [c for c in ("p", "d", "l_ratio", "phi") if c not in table]
    if missing:
        raise KeyError(f"the particle table lacks the columns {missing} (shape parameters need the CNN: shape.cnn=true)")
    p, l_ratio, phi = (table[c].to_numpy(np.float32) for c in ("p", "l_ratio", "phi"))
    d = table["d"].to_numpy(float)
    valid = np.isfinite(p) & np.isfinite(l_ratio) & np.isfinite(phi) & np.isfinite(d) & (p > 0) & (l_ratio > 0)
    out = np.full((len(table), len(HARMONIC_COLUMNS)), np.nan)
    index = np.flatnonzero(valid)
    for begin in range(0, len(index), chunk):
        part = index[begin:begin + chunk]
        pad = np.concatenate([part, np.full(chunk - len(part), part[0])])
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


def _scaling(x: np.ndarray, columns: tuple[str, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Means and scales of :func:`_standardise` (fitted on ``x``)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    block = [i for i, c in enumerate(columns or ()) if c in HARMONIC_COLUMNS]
    if block:
        scale[block] = np.sqrt(np.mean((x[:, block] - mean[block]) ** 2))
    return mean, np.where(scale > 1e-12, scale, 1.0)


def _standardise(x: np.ndarray, columns: tuple[str, ...] | None = None) -> np.ndarray:
    """Each column to zero mean and unit variance, except the outline spectrum: one scale for the block,
    so harmonics that barely vary (noise) keep their small weight."""
    mean, scale = _scaling(x, columns)
    return (x - mean) / scale


def _fit_labels(x: np.ndarray, method: str, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering, KMeans
    from sklearn.mixture import GaussianMixture

    if method == "kmeans":
        return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    if method == "gmm":
        return GaussianMixture(n_components=k, covariance_type="full", n_init=3, random_state=seed, reg_covar=1e-4).fit_predict(x)
    if method == "ward":
        return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x)
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def _relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Groups numbered 1..K by decreasing size (deterministic names across runs)."""
    values, counts = np.unique(labels, return_counts=True)
    order = values[np.lexsort((values, -counts))]
    mapping = {old: new + 1 for new, old in enumerate(order)}
    return np.array([mapping[v] for v in labels], dtype=np.int64)


def _cophenetic(x: np.ndarray) -> float:
    from scipy.cluster.hierarchy import cophenet, linkage
    from scipy.spatial.distance import pdist

    distances = pdist(x)
    return float(cophenet(linkage(x, method="ward"), distances)[0])


def cluster_particles(table: pd.DataFrame, options: GroupOptions = GroupOptions(),
                      progress: Callable[[int, int], None] | None = None) -> Grouping:
    """Group the particles of a table (see the module docstring).

    ``progress(done, total)`` is called after each (dataset, method, K) fit.
    """
    from threadpoolctl import threadpool_limits

    # these fits are small: BLAS threads only contend (a Gaussian mixture on 180 particles
    # took 17 s with two threads beside JAX, 0.24 s with one)
    with threadpool_limits(1):
        return _cluster_particles(table, options, progress)


def _cluster_particles(table: pd.DataFrame, options: GroupOptions, progress=None) -> Grouping:
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import KNeighborsClassifier

    lo, hi = options.k_range
    if not 2 <= lo <= hi:
        raise ValueError(f"k_range must satisfy 2 <= low <= high, got {options.k_range}")
    datasets = [d for d in options.datasets if d in DATASETS]
    if not datasets or not all(m in METHODS for m in options.methods):
        raise ValueError(f"datasets must be among {DATASETS} and methods among {METHODS}")
    if any(c not in table for c in PARAMETER_COLUMNS):
        datasets = [d for d in datasets if d == "features"] or ["features"]
    all_columns = dataset_columns(table, "both" if "parameters" in datasets or "both" in datasets else "features", options)
    raw = design_matrix(table, all_columns)
    usable = np.isfinite(raw).all(axis=1)
    n_usable = int(usable.sum())
    labels_out = np.zeros(len(table), dtype=np.int64)
    if n_usable < max(3 * lo, 10):
        raise ValueError(f"{n_usable} particles with every predictor: too few to group (need {max(3 * lo, 10)})")
    rng = np.random.default_rng(options.seed)
    sample = np.flatnonzero(usable)
    if len(sample) > options.max_particles:
        sample = np.sort(rng.choice(sample, options.max_particles, replace=False))
    common = _standardise(raw[sample], all_columns)
    rows, by_k = [], []
    candidates = {}
    total = len(datasets) * len(options.methods) * max(0, min(hi, len(sample) - 1) - lo + 1)
    done = 0
    for dataset in datasets:
        columns = dataset_columns(table, dataset, options)
        x = _standardise(design_matrix(table.iloc[sample], columns), columns)
        cophenetic = _cophenetic(x) if "ward" in options.methods else float("nan")
        for method in options.methods:
            best = None
            for k in range(lo, min(hi, len(sample) - 1) + 1):
                labels = _fit_labels(x, method, k, options.seed)
                done += 1
                if progress is not None:
                    progress(done, total)
                if len(np.unique(labels)) < 2:
                    continue
                score = float(silhouette_score(x, labels))
                small = np.bincount(labels).min() / len(labels)
                by_k.append({"dataset": dataset, "method": method, "k": k, "silhouette": score,
                             "smallest_group_fraction": float(small)})
                if small >= options.min_group_fraction and (best is None or score > best[1]):
                    best = (k, score, labels)
            if best is None:
                continue
            k, score, labels = best
            score_common = float(silhouette_score(common, labels))
            candidates[(dataset, method)] = (k, labels, columns)
            rows.append({"dataset": dataset, "method": method, "k": k, "silhouette": score,
                         "silhouette_common": score_common,
                         "cophenetic_correlation": cophenetic if method == "ward" else float("nan")})
    comparison = pd.DataFrame(rows)
    if comparison.empty:
        raise ValueError("no combination gave at least two groups of sufficient size")
    best_row = comparison.sort_values(["silhouette", "silhouette_common"], ascending=False).iloc[0]
    dataset, method, k = str(best_row.dataset), str(best_row.method), int(best_row.k)
    comparison["chosen"] = (comparison.dataset == dataset) & (comparison.method == method)
    _, sample_labels, columns = candidates[(dataset, method)]
    # label every usable particle: a nearest-neighbour vote from the clustered sample
    if len(sample) == n_usable:
        labels_all = sample_labels
    else:
        x_all = design_matrix(table, columns)
        mean, scale = _scaling(x_all[sample], columns)  # the clustered sample's scaling, for every particle
        vote = KNeighborsClassifier(n_neighbors=5).fit((x_all[sample] - mean) / scale, sample_labels)
        labels_all = vote.predict((x_all[usable] - mean) / scale)
    labels_out[usable] = _relabel_by_size(labels_all)
    reason = (f"{method} on the {dataset} dataset with K = {k} separates its particles best: highest silhouette "
              f"value ({best_row.silhouette:.3f}) among {len(comparison)} combinations, each with K chosen by its "
              f"silhouette over {lo}..{hi} (in the common space of all predictors it scores "
              f"{best_row.silhouette_common:.3f})")
    return Grouping(labels=labels_out, dataset=dataset, method=method, k=k, comparison=comparison, reason=reason,
                    silhouette_by_k=pd.DataFrame(by_k), columns=tuple(columns))


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
    """

    pipeline: Any
    columns: tuple[str, ...]
    groups: tuple[int, ...]
    test_accuracy: float
    cv_accuracy: tuple[float, float]
    confusion: np.ndarray
    best_params: dict[str, float]

    def predict(self, table: pd.DataFrame) -> np.ndarray:
        """Group of each particle (0 where a predictor is missing)."""
        x = design_matrix(table, self.columns)
        out = np.zeros(len(table), dtype=np.int64)
        ok = np.isfinite(x).all(axis=1)
        if ok.any():
            out[ok] = self.pipeline.predict(x[ok])
        return out

    def summary(self) -> dict[str, Any]:
        return {"columns": list(self.columns), "groups": [int(g) for g in self.groups],
                "test_accuracy": self.test_accuracy, "cv_accuracy_mean": self.cv_accuracy[0],
                "cv_accuracy_std": self.cv_accuracy[1], "confusion": self.confusion.tolist(),
                "best_params": self.best_params}


def train_classifier(table: pd.DataFrame, labels: np.ndarray, columns: tuple[str, ...],
                     options: GroupOptions = GroupOptions()) -> Classifier:
    """Fit an RBF SVM on ``labels`` (0 = unlabelled, ignored) from ``columns`` of ``table``."""
    from sklearn.metrics import confusion_matrix
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score, train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    x = design_matrix(table, columns)
    keep = (np.asarray(labels) > 0) & np.isfinite(x).all(axis=1)
    x, y = x[keep], np.asarray(labels)[keep]
    groups, counts = np.unique(y, return_counts=True)
    if len(groups) < 2:
        raise ValueError("the classifier needs at least two groups")
    folds = int(max(2, min(options.cv_folds, counts.min())))
    stratify = y if counts.min() >= 2 else None
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=options.test_fraction, random_state=options.seed,
                                                        stratify=stratify)
    pipeline = make_pipeline(StandardScaler(), SVC(kernel="rbf"))
    grid = {"svc__C": [0.3, 1.0, 3.0, 10.0, 30.0, 100.0], "svc__gamma": ["scale", 0.03, 0.1, 0.3, 1.0]}
    inner = StratifiedKFold(n_splits=int(max(2, min(folds, np.unique(y_train, return_counts=True)[1].min()))),
                            shuffle=True, random_state=options.seed)
    search = GridSearchCV(pipeline, grid, cv=inner, n_jobs=1).fit(x_train, y_train)
    model = search.best_estimator_
    test_accuracy = float((model.predict(x_test) == y_test).mean())
    confusion = confusion_matrix(y_test, model.predict(x_test), labels=groups)
    cv = cross_val_score(model, x, y, cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=options.seed))
    model.fit(x, y)  # the saved classifier uses every particle
    best = {k.replace("svc__", ""): v for k, v in search.best_params_.items()}
    return Classifier(pipeline=model, columns=tuple(columns), groups=tuple(int(g) for g in groups),
                      test_accuracy=test_accuracy, cv_accuracy=(float(cv.mean()), float(cv.std())),
                      confusion=confusion, best_params=best)


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
    return Classifier(pipeline=pipeline, columns=tuple(meta["columns"]), groups=tuple(meta["groups"]),
                      test_accuracy=meta["test_accuracy"], cv_accuracy=(meta["cv_accuracy_mean"], meta["cv_accuracy_std"]),
                      confusion=np.asarray(meta["confusion"]), best_params=meta["best_params"])


def options_dict(options: GroupOptions) -> dict[str, Any]:
    return dataclasses.asdict(options)
