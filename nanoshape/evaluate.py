"""Score predicted instance labels against hand-drawn instance masks.

A predicted particle and a true particle match when their intersection over union (IoU)
reaches a threshold; matching is one to one. Above IoU 0.5 a particle can overlap at most
one partner that well, so matches are unique by construction; at or below 0.5 (where a
merged prediction of two equal particles has IoU exactly 0.5 with each) the matching is
solved by the Hungarian method (:func:`scipy.optimize.linear_sum_assignment`), maximising
first the number of matches and then their summed IoU, as in StarDist's ``matching``.

Counts follow the usual instance-detection definitions:

    precision = TP / (TP + FP),  recall = TP / (TP + FN),  F1 = 2 TP / (2 TP + FP + FN).

Particles cut by the image border are ignored on both sides, because annotators and
segmenters treat them differently (EMPS annotates the visible part; nanoshape drops them):
a true particle touching the border is removed from the truth, and a predicted particle is
ignored when it touches the border itself or when the true particle it overlaps most is an
ignored one, so it counts neither as a true nor as a false positive.

All overlaps come from one contingency table (``np.bincount`` of ``pred * K + truth``), so
scoring a 2048 x 2048 image with thousands of particles takes a fraction of a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nanoshape.labels import border_ids, relabel_sequential

__all__ = ["match_instances", "evaluate_folder", "read_mask", "score_images", "is_validation", "is_development", "VALIDATION_PERCENT", "plain_segmentation"]

_MASK_SUFFIXES = (".png", ".tif", ".tiff")

#: share of annotated micrographs held out of every training and tuning, in percent
VALIDATION_PERCENT = 30


def is_validation(image_id: str) -> bool:
    """Whether an annotated micrograph belongs to the validation part, which nothing is
    trained or tuned on: a fixed rule of its id alone (the first 32 bits of the SHA-256 of
    the id, modulo 100, below :data:`VALIDATION_PERCENT`), so the split never changes and
    needs no list. On the 366 EMPS train-split micrographs it holds out 115 (2,289 scored particles)."""
    return _id_percentile(image_id) < VALIDATION_PERCENT


def is_development(image_id: str) -> bool:
    """Whether an annotated micrograph belongs to the development part of the training
    micrographs (the next 15 percentiles of the rule of :func:`is_validation`), on which
    choices are made with a model trained without them; the shipped model then trains on
    the development part too. Never true of a validation micrograph."""
    return VALIDATION_PERCENT <= _id_percentile(image_id) < VALIDATION_PERCENT + 15


def _id_percentile(image_id: str) -> int:
    import hashlib

    return int(hashlib.sha256(image_id.encode()).hexdigest()[:8], 16) % 100


#: largest contingency table counted densely (np.bincount); beyond it, np.unique
_DENSE_TABLE_LIMIT = 50_000_000


def _overlaps(pred: np.ndarray, truth: np.ndarray, n_pred: int, n_true: int):
    """Sparse contingency table: (pred id, truth id, pixels in common) for every overlapping pair."""
    k = n_true + 1
    keys = pred.ravel().astype(np.int64) * k + truth.ravel()
    if (n_pred + 1) * k <= _DENSE_TABLE_LIMIT:
        counts = np.bincount(keys, minlength=(n_pred + 1) * k)
        keys = np.flatnonzero(counts)
        counts = counts[keys]
    else:
        keys, counts = np.unique(keys, return_counts=True)
    return keys // k, keys % k, counts


def _ratio(num: float, den: float, *, empty: float) -> float:
    return float(num) / float(den) if den > 0 else empty


def _scores(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision, recall, F1; 1.0 when there was nothing to find and nothing was claimed."""
    nothing = float(tp + fp + fn == 0)
    return {
        "precision": _ratio(tp, tp + fp, empty=nothing),
        "recall": _ratio(tp, tp + fn, empty=nothing),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, empty=nothing),
    }


def _assign(pred_ids: np.ndarray, true_ids: np.ndarray, iou: np.ndarray) -> np.ndarray:
    """Indices of the candidate pairs kept by a one-to-one matching (all pairs already >= threshold)."""
    if iou.size == 0:
        return np.zeros(0, dtype=np.int64)
    if np.unique(pred_ids).size == pred_ids.size and np.unique(true_ids).size == true_ids.size:
        return np.arange(iou.size)
    from scipy.optimize import linear_sum_assignment

    rows, row_of = np.unique(pred_ids, return_inverse=True)
    cols, col_of = np.unique(true_ids, return_inverse=True)
    # every candidate is worth 1 plus a tie-breaking bonus < 1 for its IoU, so the solver
    # maximises the number of matches first and their IoU second
    gain = np.zeros((rows.size, cols.size))
    gain[row_of, col_of] = 1.0 + iou / 2.0
    chosen = np.full((rows.size, cols.size), -1, dtype=np.int64)
    chosen[row_of, col_of] = np.arange(iou.size)
    r, c = linear_sum_assignment(gain, maximize=True)
    picked = chosen[r, c]
    return np.sort(picked[picked >= 0])


def match_instances(
    pred: np.ndarray,
    truth: np.ndarray,
    *,
    iou_threshold: float = 0.5,
    ignore_border: bool = True,
) -> dict[str, Any]:
    """Match predicted particles to true particles one to one at IoU >= ``iou_threshold``.

    Args:
      pred: (H, W) integer instance labels, 0 = background (ids need not be contiguous).
      truth: (H, W) integer instance labels of the hand-drawn masks.
      iou_threshold: smallest IoU of a match, in (0, 1].
      ignore_border: drop particles touching the image border on both sides (see module
        docstring); False scores every particle.

    Returns:
      A dict with the counts ``tp``, ``fp``, ``fn``, ``n_pred`` and ``n_true`` (particles
      scored, i.e. after ignoring), ``n_pred_ignored``, ``n_true_ignored``, the scores
      ``precision``, ``recall``, ``f1``, ``mean_iou`` (over matches; NaN without any),
      ``count_error`` (``n_pred - n_true``), and per match ``ious`` (float array) and
      ``pairs`` ((n, 2) array of original (pred id, truth id)). With nothing to find and
      nothing predicted, precision, recall and F1 are 1.

    Example:
      >>> import numpy as np
      >>> a = np.zeros((8, 8), np.uint32); a[2:5, 2:5] = 1
      >>> match_instances(a, a)["f1"]
      1.0
    """
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.ndim != 2 or truth.ndim != 2:
        raise ValueError(f"expected 2-D label images, got shapes {pred.shape} and {truth.shape}")
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    if not (np.issubdtype(pred.dtype, np.integer) and np.issubdtype(truth.dtype, np.integer)):
        raise ValueError(f"label images must be integer, got {pred.dtype} and {truth.dtype}")
    if pred.size and (pred.min() < 0 or truth.min() < 0):
        raise ValueError("label images must not hold negative ids")

    pred_c, pred_orig = relabel_sequential(pred)
    true_c, true_orig = relabel_sequential(truth)
    n_pred_all, n_true_all = pred_orig.size - 1, true_orig.size - 1
    p_idx, t_idx, inter = _overlaps(pred_c, true_c, n_pred_all, n_true_all)
    area_pred = np.bincount(p_idx, weights=inter, minlength=n_pred_all + 1)
    area_true = np.bincount(t_idx, weights=inter, minlength=n_true_all + 1)
    both = (p_idx > 0) & (t_idx > 0)
    p_idx, t_idx, inter = p_idx[both], t_idx[both], inter[both].astype(np.float64)
    iou = inter / (area_pred[p_idx] + area_true[t_idx] - inter)

    ignored_true = np.zeros(n_true_all + 1, dtype=bool)
    ignored_pred = np.zeros(n_pred_all + 1, dtype=bool)
    if ignore_border:
        ignored_true[border_ids(true_c)] = True
        ignored_pred[border_ids(pred_c)] = True
        if iou.size:
            # best partner of each prediction: the last pair of its group when sorted by IoU
            order = np.lexsort((iou, p_idx))
            p_sorted = p_idx[order]
            last = np.append(p_sorted[1:] != p_sorted[:-1], True)
            best_true = np.zeros(n_pred_all + 1, dtype=np.int64)
            best_true[p_sorted[last]] = t_idx[order][last]
            ignored_pred |= ignored_true[best_true] & (best_true > 0)
    ignored_true[0] = ignored_pred[0] = True

    keep = (iou >= iou_threshold) & ~ignored_pred[p_idx] & ~ignored_true[t_idx]
    cand_p, cand_t, cand_iou = p_idx[keep], t_idx[keep], iou[keep]
    picked = _assign(cand_p, cand_t, cand_iou)
    match_p, match_t, match_iou = cand_p[picked], cand_t[picked], cand_iou[picked]

    n_pred = int(n_pred_all + 1 - ignored_pred.sum())
    n_true = int(n_true_all + 1 - ignored_true.sum())
    tp = int(match_iou.size)
    fp, fn = n_pred - tp, n_true - tp
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "n_pred": n_pred,
        "n_true": n_true,
        "n_pred_ignored": int(ignored_pred[1:].sum()),
        "n_true_ignored": int(ignored_true[1:].sum()),
        **_scores(tp, fp, fn),
        "mean_iou": float(match_iou.mean()) if tp else float("nan"),
        "count_error": n_pred - n_true,
        "ious": match_iou,
        "pairs": np.stack([pred_orig[match_p], true_orig[match_t]], axis=1) if tp else np.zeros((0, 2), np.int64),
    }


def read_mask(path: str | Path) -> np.ndarray:
    """Read an instance mask or label image (PNG, including 16-bit, or TIFF) as a 2-D integer array."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        array = np.asarray(tifffile.imread(path))
    else:
        from PIL import Image

        with Image.open(path) as image:
            array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] in (3, 4) and np.all(array[..., :3] == array[..., :1]):
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D instance mask, got an array of shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.mod(array, 1) == 0):
            raise ValueError(f"{path}: instance mask holds non-integer values ({array.dtype})")
        array = array.astype(np.int64)
    return array


def _files_by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in _MASK_SUFFIXES and not path.name.startswith("."):
            found.setdefault(path.stem, path)
    return found


def evaluate_folder(predictions_dir: str | Path, masks_dir: str | Path, *, iou_threshold: float = 0.5) -> dict[str, Any]:
    """Score a run directory of ``nanoshape analyze`` against a folder of instance masks.

    Args:
      predictions_dir: run directory holding ``labels/<stem>.tif`` (or that labels folder).
      masks_dir: folder of ``<stem>.png`` / ``<stem>.tif`` instance masks.
      iou_threshold: smallest IoU of a match.

    Returns:
      A JSON-safe dict: ``pooled`` (counts summed over all images, with precision, recall
      and F1 computed from the summed TP/FP/FN, i.e. over all particles, and the mean IoU
      over all matches), ``images`` (one row per scored image: stem and the scores of
      :func:`match_instances` without the per-match arrays), ``only_in_predictions`` and
      ``only_in_masks`` (stems found on one side only), and ``skipped`` (stem and reason for
      pairs that could not be scored, e.g. different sizes).
    """
    predictions_dir, masks_dir = Path(predictions_dir), Path(masks_dir)
    labels_dir = predictions_dir / "labels" if (predictions_dir / "labels").is_dir() else predictions_dir
    for folder in (labels_dir, masks_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"not a folder: {folder}")
    predicted, masks = _files_by_stem(labels_dir), _files_by_stem(masks_dir)

    skipped: list[dict[str, str]] = []

    def pairs():
        for stem in sorted(predicted.keys() & masks.keys()):
            try:
                yield stem, read_mask(predicted[stem]), read_mask(masks[stem])
            except (OSError, ValueError) as error:
                skipped.append({"image": stem, "reason": str(error)})

    scores = score_images(pairs(), iou_threshold=iou_threshold, skipped=skipped)
    return {
        **scores,
        "only_in_predictions": sorted(predicted.keys() - masks.keys()),
        "only_in_masks": sorted(masks.keys() - predicted.keys()),
        "skipped": skipped,
    }


def score_images(pairs, *, iou_threshold: float = 0.5, worst: int = 10,
                 skipped: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """Pooled and per-image scores of (name, predicted labels, true labels) triples.

    Returns:
      A JSON-safe dict: ``pooled`` (TP/FP/FN summed over all images, with precision, recall
      and F1 from the sums, i.e. over all particles; the mean IoU over all matches; the
      median of the per-image F1; the largest ratio of found to annotated particles),
      ``images`` (one row per image: name and the scores of :func:`match_instances` without
      the per-match arrays) and ``worst`` (the names of the ``worst`` images of lowest F1,
      the most missed and extra particles first among equals).
    """
    rows: list[dict[str, Any]] = []
    ious: list[np.ndarray] = []
    for name, pred, truth in pairs:
        try:
            result = match_instances(pred, truth, iou_threshold=iou_threshold)
        except ValueError as error:
            if skipped is None:
                raise
            skipped.append({"image": name, "reason": str(error)})
            continue
        ious.append(result.pop("ious"))
        result.pop("pairs")
        rows.append({"image": name, **result})
    totals = {key: int(sum(row[key] for row in rows)) for key in ("tp", "fp", "fn", "n_pred", "n_true", "n_pred_ignored", "n_true_ignored")}
    all_ious = np.concatenate(ious) if ious else np.zeros(0)
    pooled = {
        "n_images": len(rows),
        **totals,
        **_scores(totals["tp"], totals["fp"], totals["fn"]),
        "mean_iou": float(all_ious.mean()) if all_ious.size else float("nan"),
        "count_error": totals["n_pred"] - totals["n_true"],
        "median_image_f1": float(np.median([row["f1"] for row in rows])) if rows else float("nan"),
        "max_count_ratio": float(max((row["n_pred"] / max(row["n_true"], 1) for row in rows), default=float("nan"))),
        "iou_threshold": float(iou_threshold),
    }
    order = sorted(rows, key=lambda row: (row["f1"], -(row["fp"] + row["fn"])))
    return {"pooled": pooled, "images": rows, "worst": [row["image"] for row in order[:worst]]}


def plain_segmentation(image: np.ndarray, *, smoothing_px: float = 1.0, min_area_px: int = 16,
                       min_distance_px: int = 7) -> np.ndarray:
    """The yardstick every segmentation figure is reported beside: ImageJ's recipe in scikit-image.

    Gaussian smoothing, Otsu's threshold with the particles dark (bright field), holes
    filled, components under ``min_area_px`` dropped (ImageJ's "size" filter), and touching
    particles split by a watershed of the distance transform from its local maxima at least
    ``min_distance_px`` apart.

    Args:
      image: (H, W) intensities.

    Returns:
      (H, W) int32 instance labels.
    """
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.segmentation import watershed
    from scipy import ndimage as ndi

    image = np.nan_to_num(np.asarray(image, dtype=np.float32))
    smooth = gaussian(image, smoothing_px) if smoothing_px > 0 else image
    if smooth.max() <= smooth.min():
        return np.zeros(image.shape, np.int32)
    foreground = ndi.binary_fill_holes(smooth < threshold_otsu(smooth))
    components, n = ndi.label(foreground)
    area = np.bincount(components.ravel())
    keep = area >= min_area_px
    keep[0] = False
    foreground = keep[components]
    distance = ndi.distance_transform_edt(foreground)
    components, _ = ndi.label(foreground)
    peaks = peak_local_max(distance, min_distance=min_distance_px, labels=components, exclude_border=False)
    markers = np.zeros(image.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=foreground).astype(np.int32)

