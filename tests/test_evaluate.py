"""Instance matching and scoring, against counts worked out by hand."""

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from nanoshape.evaluate import evaluate_folder, match_instances


def canvas(shape=(40, 40)):
    return np.zeros(shape, np.uint32)


def square(labels, y, x, side, value, width=None):
    labels[y : y + side, x : x + (width or side)] = value
    return labels


def test_identical_labels_score_one_whatever_the_ids():
    truth = square(square(canvas(), 5, 5, 8, 1), 20, 20, 10, 2)
    pred = np.where(truth == 1, 70, np.where(truth == 2, 9, 0)).astype(np.uint32)
    result = match_instances(pred, truth)
    assert (result["tp"], result["fp"], result["fn"]) == (2, 0, 0)
    assert result["f1"] == result["precision"] == result["recall"] == result["mean_iou"] == 1.0
    assert sorted(map(tuple, result["pairs"].tolist())) == [(9, 2), (70, 1)]


@pytest.mark.parametrize("shift, expected_iou", [(3, 70 / 130), (4, 60 / 140)])
def test_shifted_particle_matches_only_above_threshold(shift, expected_iou):
    # 10 x 10 squares shifted along x: intersection 10 (10 - shift), union 200 - intersection
    truth = square(canvas(), 10, 10, 10, 1)
    pred = square(canvas(), 10, 10 + shift, 10, 1)
    result = match_instances(pred, truth)
    iou = (100 - 10 * shift) / (100 + 10 * shift)
    assert iou == pytest.approx(expected_iou)
    if iou >= 0.5:  # shift 3: IoU 0.538
        assert (result["tp"], result["fp"], result["fn"]) == (1, 0, 0)
        assert result["mean_iou"] == pytest.approx(iou)
        assert result["ious"].tolist() == pytest.approx([iou])
    else:  # shift 4: IoU 0.429
        assert (result["tp"], result["fp"], result["fn"]) == (0, 1, 1)
        assert result["f1"] == 0.0 and np.isnan(result["mean_iou"])
    # a lower threshold accepts the shift-4 pair too
    assert match_instances(pred, truth, iou_threshold=0.4)["tp"] == 1


def test_split_particle_keeps_one_half_if_large_enough():
    truth = square(canvas(), 10, 10, 12, 1, width=20)  # 12 x 20
    pred = square(square(canvas(), 10, 10, 12, 1, width=14), 10, 24, 12, 2, width=6)
    result = match_instances(pred, truth)
    # left piece: 168 / 240 = 0.7 matches, right piece (72 / 240) is a false positive
    assert (result["tp"], result["fp"], result["fn"]) == (1, 1, 0)
    assert result["mean_iou"] == pytest.approx(0.7)
    assert result["count_error"] == 1
    # split in three (widths 7, 7, 6): no piece reaches 0.5 (84 / 240 = 0.35 at best)
    thirds = square(square(square(canvas(), 10, 10, 12, 1, width=7), 10, 17, 12, 2, width=7), 10, 24, 12, 3, width=6)
    result = match_instances(thirds, truth)
    assert (result["tp"], result["fp"], result["fn"]) == (0, 3, 1)


def test_merged_pair_of_unequal_particles_matches_the_larger():
    truth = square(square(canvas(), 10, 5, 10, 1, width=12), 10, 17, 10, 2, width=8)
    merged = (truth > 0).astype(np.uint32)
    result = match_instances(merged, truth)
    # IoU with the 120 px particle is 120 / 200 = 0.6, with the 80 px one 0.4
    assert (result["tp"], result["fp"], result["fn"]) == (1, 0, 1)
    assert result["mean_iou"] == pytest.approx(0.6)
    assert result["precision"] == 1.0 and result["recall"] == 0.5
    assert result["f1"] == pytest.approx(2 / 3)


def test_merged_equal_pair_at_threshold_half_is_matched_once():
    # IoU exactly 0.5 with both particles: the Hungarian step must keep a single match
    truth = square(square(canvas(), 10, 5, 10, 1), 10, 15, 10, 2)
    merged = (truth > 0).astype(np.uint32)
    result = match_instances(merged, truth, iou_threshold=0.5)
    assert (result["tp"], result["fp"], result["fn"]) == (1, 0, 1)
    assert result["mean_iou"] == pytest.approx(0.5)


def test_hungarian_prefers_more_matches_at_low_threshold():
    # pred 1 overlaps truth A and B; pred 2 overlaps only B: the best pairing is 1-A, 2-B
    truth = square(square(canvas((40, 60)), 10, 5, 10, 1, width=10), 10, 15, 10, 2, width=10)
    pred = square(square(canvas((40, 60)), 10, 6, 10, 1, width=12), 10, 18, 10, 2, width=10)
    result = match_instances(pred, truth, iou_threshold=0.3)
    assert result["tp"] == 2 and result["fp"] == 0 and result["fn"] == 0


def test_border_particles_ignored_on_both_sides():
    truth = canvas()
    square(truth, 0, 10, 6, 1)      # truth on the top border
    square(truth, 15, 15, 8, 2)     # interior, matched
    square(truth, 30, 34, 6, 3)     # truth on the right border
    pred = canvas()
    square(pred, 1, 10, 6, 5)       # misses the border row but its best match is border truth 1
    square(pred, 15, 15, 8, 6)      # TP
    square(pred, 30, 34, 6, 7)      # touches the border itself
    square(pred, 2, 30, 4, 8)       # interior false positive, overlaps nothing
    result = match_instances(pred, truth)
    assert (result["tp"], result["fp"], result["fn"]) == (1, 1, 0)
    assert (result["n_pred"], result["n_true"]) == (2, 1)
    assert (result["n_pred_ignored"], result["n_true_ignored"]) == (2, 2)
    # the same images without ignoring: pred 5 matches truth 1 (IoU 30 / 42), pred 7 truth 3
    plain = match_instances(pred, truth, ignore_border=False)
    assert (plain["tp"], plain["fp"], plain["fn"]) == (3, 1, 0)


def test_interior_truth_missed_by_border_prediction_counts_as_missed():
    truth = square(canvas(), 2, 10, 6, 1)
    pred = square(canvas(), 0, 10, 8, 1)  # touches the border: ignored, so truth 1 is not found
    result = match_instances(pred, truth)
    assert (result["tp"], result["fp"], result["fn"]) == (0, 0, 1)


def test_empty_prediction_and_empty_both():
    truth = square(square(canvas(), 5, 5, 8, 1), 20, 20, 10, 2)
    result = match_instances(canvas(), truth)
    assert (result["tp"], result["fp"], result["fn"], result["n_pred"]) == (0, 0, 2, 0)
    assert result["f1"] == 0.0 and result["recall"] == 0.0 and result["count_error"] == -2
    both = match_instances(canvas(), canvas())
    assert both["f1"] == 1.0 and both["tp"] == both["fp"] == both["fn"] == 0


def test_rejects_mismatched_shapes_and_float_labels():
    with pytest.raises(ValueError, match="shape"):
        match_instances(canvas((10, 10)), canvas((10, 12)))
    with pytest.raises(ValueError, match="integer"):
        match_instances(np.zeros((4, 4)), canvas((4, 4)))


def test_contingency_table_agrees_with_per_pair_loop():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 6, size=(30, 30)).astype(np.uint32)
    truth = np.kron(truth[::3, ::3], np.ones((3, 3), np.uint32))
    pred = np.roll(truth, 1, axis=1) * 3
    result = match_instances(pred, truth, ignore_border=False, iou_threshold=0.05)
    for (p, t), iou in zip(result["pairs"], result["ious"]):
        a, b = pred == p, truth == t
        assert iou == pytest.approx((a & b).sum() / (a | b).sum())


def test_evaluate_folder_pools_counts_and_lists_unpaired(tmp_path):
    (tmp_path / "run" / "labels").mkdir(parents=True)
    (tmp_path / "masks").mkdir()
    truth_a = square(square(canvas(), 5, 5, 8, 1), 20, 20, 10, 2)
    truth_b = square(canvas(), 10, 10, 10, 1)
    tifffile.imwrite(tmp_path / "run" / "labels" / "a.tif", truth_a)
    tifffile.imwrite(tmp_path / "run" / "labels" / "b.tif", square(canvas(), 10, 14, 10, 1))  # IoU 0.43
    tifffile.imwrite(tmp_path / "run" / "labels" / "only_pred.tif", truth_b)
    Image.fromarray(truth_a.astype(np.uint16)).save(tmp_path / "masks" / "a.png")
    Image.fromarray(truth_b.astype(np.uint16)).save(tmp_path / "masks" / "b.png")
    Image.fromarray(truth_b.astype(np.uint16)).save(tmp_path / "masks" / "only_mask.png")

    result = evaluate_folder(tmp_path / "run", tmp_path / "masks")
    pooled = result["pooled"]
    assert (pooled["tp"], pooled["fp"], pooled["fn"], pooled["n_images"]) == (2, 1, 1, 2)
    assert pooled["f1"] == pytest.approx(4 / 6)
    assert pooled["mean_iou"] == 1.0
    assert [row["image"] for row in result["images"]] == ["a", "b"]
    assert [row["f1"] for row in result["images"]] == [1.0, 0.0]
    assert result["only_in_predictions"] == ["only_pred"]
    assert result["only_in_masks"] == ["only_mask"]
    json.dumps(result)  # JSON-safe


def test_evaluate_folder_skips_mismatched_sizes_with_reason(tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "masks").mkdir()
    tifffile.imwrite(tmp_path / "labels" / "x.tif", canvas((20, 20)))
    Image.fromarray(canvas((20, 24)).astype(np.uint16)).save(tmp_path / "masks" / "x.png")
    result = evaluate_folder(tmp_path / "labels", tmp_path / "masks")
    assert result["pooled"]["n_images"] == 0
    assert result["skipped"][0]["image"] == "x" and "shape" in result["skipped"][0]["reason"]
