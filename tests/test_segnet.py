"""The learned particle detector: network, pyramid, level choice, training step and targets."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from nanoshape.evaluate import is_development, is_validation, match_instances
from nanoshape.segnet import DetectOptions, Level, SegNet, SegNetOptions, _run_level, detect, load_segnet, save_segnet
from nanoshape.segtrain import SegTrainOptions, _instance_targets, prepare_source, sample_patch, train_segnet

TINY = SegNetOptions(channels=(4, 8, 8), tile_px=96, tile_margin_px=24)


def _disc_labels(shape, discs):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for i, (cy, cx, r) in enumerate(discs, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    return labels


def test_split_rule_is_fixed_and_disjoint():
    ids = [f"{i:010x}" for i in range(2000)]
    held = np.mean([is_validation(i) for i in ids])
    dev = np.mean([is_development(i) for i in ids])
    assert 0.27 < held < 0.33 and 0.12 < dev < 0.18
    assert not any(is_validation(i) and is_development(i) for i in ids)
    # a fixed rule of the id: these EMPS ids are held out, now and always
    assert is_validation("0fa38de2c7") == is_validation("0fa38de2c7")
    assert [is_validation(i) for i in ("0289bd97e6", "07330c8ea1", "0fa38de2c7")] == \
        [is_validation("0289bd97e6"), is_validation("07330c8ea1"), is_validation("0fa38de2c7")]


def test_targets_of_touching_discs():
    labels = _disc_labels((64, 96), [(32, 30, 12), (32, 53, 12)])  # touching along x = 41..42
    fg, distance, log2_size, median = _instance_targets(labels)
    assert fg.sum() == (labels > 0).sum()
    assert distance.max() == pytest.approx(1.0)
    assert distance[32, 30] == pytest.approx(1.0, abs=0.02) and distance[32, 53] == pytest.approx(1.0, abs=0.02)
    # the contact line is an edge of both particles: their cores are separated
    assert distance[32, 41] < 0.2 and distance[32, 42] < 0.2
    area = (labels == 1).sum()
    assert log2_size[32, 30] == pytest.approx(np.log2(2 * np.sqrt(area / np.pi)), abs=1e-5)
    assert median == pytest.approx(2 * np.sqrt(area / np.pi), rel=0.02)


def test_patch_targets_follow_the_zoom():
    labels = _disc_labels((200, 200), [(100, 100, 40)])
    image = np.where(labels > 0, 0.2, 1.0).astype(np.float32)
    source = prepare_source(image, labels)
    options = SegTrainOptions(model=TINY, patch_px=64, focus_diameter_px=(20.0, 20.0), wide_fraction=0.0,
                              foreground_centre_fraction=1.0)
    x, targets, weights = sample_patch(np.random.default_rng(0), source, options)
    assert x.shape == (64, 64, 1) and targets.shape == weights.shape == (64, 64, 3)
    inside = (targets[..., 0] > 0.99) & (weights[..., 2] > 0)
    # the particle is 20 network pixels across at this zoom: log2 size 4.32
    assert np.median(targets[..., 2][inside]) == pytest.approx(np.log2(20.0), abs=0.05)
    # the input is dark where the target says particle
    assert x[..., 0][targets[..., 0] > 0.99].mean() < x[..., 0][targets[..., 0] < 0.01].mean()


def test_tiles_run_in_uneven_batches_give_the_outputs_of_tiles_run_alone(monkeypatch):
    """15 tiles run as 4, 4, 4, 2, 1 (no call padded with empty tiles) give, bit for bit, what
    each tile run alone gives."""
    from nanoshape import segnet

    assert segnet._tile_batches(15) == [4, 4, 4, 2, 1] and segnet._tile_batches(9) == [4, 4, 1]
    assert segnet._tile_batches(8) == [4, 4] and segnet._tile_batches(0) == []
    model = SegNet(TINY, rngs=nnx.Rngs(3))
    model.eval()  # as load_segnet gives it: batch normalisation from running statistics, not the call's tiles
    image = np.random.default_rng(1).normal(size=(100, 200)).astype(np.float32)  # 3 x 5 tiles of core 48
    batched = _run_level(model, image)
    monkeypatch.setattr(segnet, "_tile_batches", lambda n, batch=4: [1] * n)
    alone = _run_level(model, image)
    np.testing.assert_array_equal(batched, alone)


def test_tiles_per_call_keep_within_the_pixel_budget(monkeypatch):
    """A call holds at most CALL_PX pixels: at twice a tile's pixels, 15 tiles go 2 at a time
    (the budget, not a fixed four, bounds a call's memory when tiles are large)."""
    from nanoshape import segnet

    seen = []
    original = segnet._tile_batches
    monkeypatch.setattr(segnet, "_tile_batches", lambda n, batch=4: seen.append(batch) or original(n, batch))
    monkeypatch.setattr(segnet, "CALL_PX", 2 * TINY.tile_px**2)
    model = SegNet(TINY, rngs=nnx.Rngs(3))
    model.eval()
    out = _run_level(model, np.random.default_rng(1).normal(size=(100, 200)).astype(np.float32))
    assert seen == [2] and out.shape == (100, 200, 3)
    assert segnet.CALL_PX // SegNetOptions().tile_px**2 == 0  # the default tile runs alone: max(1, 0)


def test_a_level_run_whole_is_padded_by_edge_px_not_the_tile_margin(monkeypatch):
    """A level that fits in one call is reflect-padded by ``edge_px`` (its sides then rounded up
    to 32), not by the tiles' wider margin: that is the network's work on a small micrograph.
    The padding changes only pixels near the edge."""
    from nanoshape import segnet

    shapes = []
    forward = segnet._forward
    monkeypatch.setattr(segnet, "_forward", lambda g, st, x: shapes.append(x.shape) or forward(g, st, x))
    image = np.random.default_rng(4).normal(size=(64, 80)).astype(np.float32)
    outs = {}
    for edge in (0, 32):
        options = dataclasses.replace(TINY, tile_px=256, tile_margin_px=48, edge_px=edge)
        outs[edge] = _run_level(_with_options(SegNet(TINY, rngs=nnx.Rngs(5)), options), image)
    assert shapes == [(1, 64, 96, 1), (1, 128, 160, 1)]
    assert np.abs(outs[0] - outs[32]).max() > 1e-3  # the edge differs...
    np.testing.assert_allclose(outs[0][24:-24, 24:-24], outs[32][24:-24, 24:-24], atol=1e-4)  # ...not the inside
    with pytest.raises(ValueError, match="edge_px"):
        SegNetOptions(edge_px=-1)


def test_averaged_views_mirror_with_the_micrograph():
    """Two views (the image and its left-right mirror) give mirrored outputs for a mirrored image;
    all eight give the same for a transposed one; each differs from the single view."""
    from nanoshape.segnet import _run_views

    model = SegNet(TINY, rngs=nnx.Rngs(2))
    model.eval()
    image = np.random.default_rng(3).normal(size=(64, 80)).astype(np.float32)
    two = _run_views(model, image, 2)
    np.testing.assert_allclose(_run_views(model, np.ascontiguousarray(image[:, ::-1]), 2)[:, ::-1], two, atol=1e-5)
    eight = _run_views(model, image, 8)
    np.testing.assert_allclose(_run_views(model, np.ascontiguousarray(image.T), 8).transpose(1, 0, 2), eight, atol=1e-5)
    one = _run_level(model, image)
    assert np.abs(two - one).max() > 1e-3 and np.abs(eight - two).max() > 1e-3
    with pytest.raises(ValueError, match="views must be 1, 2, 4 or 8"):
        _run_views(model, image, 3)


def test_tiled_inference_equals_whole_image():
    model = SegNet(TINY, rngs=nnx.Rngs(1))
    # random batch statistics, so the test sees the inference path's affine normalisation
    model.eval()
    image = np.random.default_rng(0).normal(size=(160, 200)).astype(np.float32)
    tiled = _run_level(model, image)  # 160 x 200 > tile_px = 96: tiled
    whole = _run_level(_with_options(model, dataclasses.replace(TINY, tile_px=256)), image)
    assert tiled.shape == whole.shape == (160, 200, 3)
    # the receptive field of three levels (~40 px) fits in the 24 px margin on each side
    np.testing.assert_allclose(tiled, whole, atol=1e-4)


def _with_options(model, options):
    other = SegNet(options, rngs=nnx.Rngs(1))
    nnx.update(other, nnx.state(model))
    other.eval()
    return other


def _level(factor, fg, distance, log2_size):
    return Level(factor=factor, foreground=fg.astype(np.float32), distance=distance.astype(np.float32),
                 log2_size=log2_size.astype(np.float32))


def test_levels_take_the_particles_of_their_size():
    """A level's particle counts only when its predicted size is in the level's window:
    a large particle seen as fragments at full resolution comes from the coarse level."""
    shape = (128, 128)
    big = _disc_labels(shape, [(64, 64, 40)]) > 0
    # level 0: four fragments inside the big particle, each with its own core, predicted huge
    fragments = _disc_labels(shape, [(50, 50, 8), (50, 78, 8), (78, 50, 8), (78, 78, 8)])
    _, dist0, _, _ = _instance_targets(fragments)
    level0 = _level(1, (fragments > 0) * 0.9, dist0, np.where(fragments > 0, 7.5, 0.0))
    # level 2 (factor 4): the whole particle, 20 level pixels across
    coarse = _disc_labels((32, 32), [(16, 16, 10)])
    _, dist2, _, _ = _instance_targets(coarse)
    level2 = _level(4, (coarse > 0) * 0.95, dist2, np.where(coarse > 0, np.log2(20.0), 0.0))
    level1 = _level(2, np.zeros((64, 64)), np.zeros((64, 64)), np.zeros((64, 64)))
    labels, found = detect([level0, level1, level2], shape, 24.0)
    assert labels.max() == 1 and found["level"].tolist() == [2]
    assert match_instances(labels, big.astype(np.int32))["f1"] == 1.0
    # the same fragments predicted small (real small particles) are taken from level 0
    level0_small = _level(1, (fragments > 0) * 0.9, dist0, np.where(fragments > 0, 4.0, 0.0))
    level2_small = _level(4, (coarse > 0) * 0.95, dist2, np.where(coarse > 0, 1.0, 0.0))  # "sub-resolution"
    labels, found = detect([level0_small, level1, level2_small], shape, 24.0)
    assert labels.max() == 4 and set(found["level"].tolist()) == {0}
    assert match_instances(labels, fragments)["f1"] == 1.0


def test_detect_splits_touching_particles_at_their_cores():
    labels_true = _disc_labels((80, 120), [(40, 40, 15), (40, 69, 15), (40, 98, 12)])
    fg, distance, log2_size, _ = _instance_targets(labels_true)
    level = _level(1, fg, distance, log2_size)
    labels, _ = detect([level], labels_true.shape, 24.0, DetectOptions(min_area_px=4))
    assert match_instances(labels, labels_true)["f1"] == 1.0


def test_detect_drops_a_core_in_pixels_the_network_half_doubts():
    """Two discs with the same distance ridge: the one whose pixels the network calls particle
    with probability 0.52 (texture, a halo) is dropped; the one it is sure of is kept."""
    labels_true = _disc_labels((64, 120), [(32, 30, 14), (32, 90, 14)])
    fg, distance, log2_size, _ = _instance_targets(labels_true)
    doubted = np.where(labels_true == 2, 0.52, fg * 0.98)
    labels, found = detect([_level(1, doubted, distance, log2_size)], labels_true.shape, 24.0)
    assert labels.max() == 1 and match_instances(labels, np.where(labels_true == 1, 1, 0))["f1"] == 1.0
    assert found["score"][0] >= DetectOptions().min_score


def test_a_few_training_steps_lower_the_loss_and_save_a_model(tmp_path):
    discs = [(24 + 40 * (i // 4), 24 + 40 * (i % 4), 10 + i % 3) for i in range(12)]
    labels = _disc_labels((140, 170), discs)
    rng = np.random.default_rng(0)
    image = np.where(labels > 0, 0.3, 1.0) + rng.normal(0, 0.05, labels.shape)
    source = prepare_source(image.astype(np.float32), labels)
    options = SegTrainOptions(model=TINY, steps=30, batch_size=4, patch_px=64, warmup_steps=5, learning_rate=5e-3,
                              checkpoint_every=30, log_every=10, loader_threads=1, focus_diameter_px=(15.0, 30.0), wide_fraction=0.0)
    model = train_segnet([source], [], tmp_path, options)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    import json

    losses = [json.loads(line)["loss"] for line in lines]
    assert losses[-1] < losses[0]
    loaded = load_segnet(tmp_path)
    x = np.random.default_rng(1).normal(size=(64, 64)).astype(np.float32)
    np.testing.assert_allclose(_run_level(loaded, x), _run_level(model, x), atol=1e-5)
    # a rerun resumes from the last checkpoint instead of training again
    again = train_segnet([source], [], tmp_path, options)
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == len(lines)
    np.testing.assert_allclose(_run_level(again, x), _run_level(model, x), atol=1e-5)


def test_save_and_load_keep_the_batch_statistics(tmp_path):
    model = SegNet(TINY, rngs=nnx.Rngs(3))
    stats = nnx.state(model, nnx.BatchStat)
    bumped = jax.tree.map(lambda v: v + 0.5, stats)
    nnx.update(model, bumped)
    model.eval()
    save_segnet(model, tmp_path / "m")
    loaded = load_segnet(tmp_path / "m")
    x = np.random.default_rng(2).normal(size=(32, 32)).astype(np.float32)
    np.testing.assert_allclose(_run_level(loaded, x), _run_level(model, x), atol=1e-6)


def test_self_check_flags_fragments_and_names_them():
    from nanoshape.segment import self_check

    # four large particles, each with many small pieces stuck to it (texture taken as particles)
    labels = _disc_labels((200, 200), [(50, 50, 30), (50, 150, 30), (150, 50, 30), (150, 150, 30)])
    next_id = 5
    for cy, cx in [(50, 50), (50, 150), (150, 50), (150, 150)]:
        for k in range(8):
            angle = k * np.pi / 4
            y, x = int(round(cy + 31 * np.sin(angle))), int(round(cx + 31 * np.cos(angle)))
            labels[y - 1:y + 2, x - 1:x + 2] = next_id
            next_id += 1
    n = labels.max()
    flags, findings = self_check(labels, np.full(n, 0.95), 0.6)
    assert len(flags) == n
    assert all(flags[i] == "" for i in range(4))
    assert all("fragment" in flags[i] for i in range(4, n))
    assert any("fragment" in f for f in findings)
    # the same large particles alone: nothing to say
    clean = np.where(labels <= 4, labels, 0)
    flags, findings = self_check(clean, np.full(4, 0.95), 0.6)
    assert flags == [""] * 4 and findings == []
    # low scores are doubtful
    flags, findings = self_check(clean, np.full(4, 0.62), 0.6)
    assert flags == ["doubtful"] * 4 and any("doubtful" in f for f in findings)


def test_self_check_calls_ragged_only_a_long_outline_of_low_solidity():
    """A comb (724 px of outline for 720 px of area, 2.5x a disc's; solidity 0.55) is ragged; a
    2 px wide rod has as long an outline but is solid; a thick L is not solid (0.47) but its
    outline is short: neither of those is ragged."""
    from nanoshape.segment import self_check

    labels = np.zeros((160, 520), np.int32)
    labels[10:12, 10:70] = 1  # the comb's spine...
    for k in range(15):
        labels[12:32, 10 + 4 * k:12 + 4 * k] = 1  # ...and its 15 teeth
    labels[60:62, 10:410] = 2  # a thin rod
    labels[90:150, 440:450] = 3  # an L
    labels[140:150, 450:500] = 3
    flags, _ = self_check(labels, np.full(3, 0.95), 0.6)
    assert flags == ["ragged", "", ""]
