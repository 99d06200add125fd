"""Segmentation: real micrographs with hand-drawn masks, and rendered scenes with known truth."""

import jax
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import shared_data
from nanoshape.evaluate import match_instances
from nanoshape.scene import POPULATIONS, SceneOptions, render_scene
from nanoshape.segment import DROP_REASONS, SegmentOptions, segment

#: measured pooled F1 0.896 (1769 TP, 205 FP, 204 FN) with the defaults; the floor leaves
#: room for numerical noise across platforms, not for regressions
EMPS_F1_FLOOR = 0.88


@pytest.fixture(scope="module")
def scene():
    options = SceneOptions(height_px=384, width_px=384, n_particles=45, touching_fraction=0.4,
                           populations=tuple(POPULATIONS[n] for n in ("spheres", "cubes", "rods", "triangles", "stars")))
    return render_scene(jax.random.key(7), options)


def test_real_micrographs_reach_the_f1_floor():
    root = shared_data("emps_train")
    index = pd.read_csv(root / "index.csv")
    tp = fp = fn = 0
    for stem in index.id:
        image = np.asarray(Image.open(root / "images" / f"{stem}.png").convert("L"), dtype=np.float32)
        mask = np.asarray(Image.open(root / "masks" / f"{stem}.png")).astype(np.int64)
        scores = match_instances(segment(image).labels, mask)
        tp, fp, fn = tp + scores["tp"], fp + scores["fp"], fn + scores["fn"]
    f1 = 2 * tp / (2 * tp + fp + fn)
    assert f1 >= EMPS_F1_FLOOR, f"pooled F1 {f1:.3f} (tp {tp}, fp {fp}, fn {fn}) on {len(index)} EMPS images"


def test_rendered_scene_is_found_and_split(scene):
    result = segment(scene.image.astype(np.float32))
    scores = match_instances(result.labels, scene.labels)
    assert scores["f1"] >= 0.95, scores
    assert scores["mean_iou"] >= 0.85
    assert result.polarity == "bright_field"
    assert result.labels.dtype == np.uint32 and result.labels.shape == scene.image.shape
    assert set(result.dropped.reason) <= set(DROP_REASONS)


def test_dark_field_is_detected_and_gives_the_same_particles(scene):
    image = scene.image.astype(np.float32)
    bright = segment(image)
    dark = segment(image.max() + image.min() - image)
    assert dark.polarity == "dark_field"
    assert match_instances(dark.labels, bright.labels)["f1"] >= 0.97


def test_scale_adapts_to_particle_size(scene):
    """The same micrograph at 3x the magnification finds the same particles."""
    image = scene.image.astype(np.float32)
    big = np.kron(image, np.ones((3, 3), np.float32))
    small_labels = segment(image).labels
    big_labels = segment(big).labels
    assert match_instances(big_labels, np.kron(small_labels, np.ones((3, 3), np.uint32)))["f1"] >= 0.95
    assert segment(big).particle_size_px == pytest.approx(3 * segment(image).particle_size_px, rel=0.35)


def test_border_particles_and_scale_bars_are_dropped_with_reasons(scene):
    image = scene.image.astype(np.float32).copy()
    image[340:348, 200:330] = image.min()  # a saturated scale bar drawn onto the micrograph
    result = segment(image)
    labels = result.labels
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    assert not edge.any(), "a kept particle touches the border"
    assert not labels[340:348, 200:330].any(), "the scale bar was kept as a particle"
    reasons = set(result.dropped.reason)
    assert "touches border" in reasons
    assert reasons & {"scale bar/text", "joined to scale bar/text"}


def test_blank_image_gives_no_particles():
    rng = np.random.default_rng(0)
    result = segment((100 + rng.normal(0, 1, (256, 256))).astype(np.float32))
    assert result.labels.max() <= 2  # noise may leave the odd blob; never a field of particles


def test_options_are_validated():
    with pytest.raises(ValueError):
        segment(np.zeros((64, 64), np.float32) + 1, SegmentOptions(polarity="sideways"))


def test_threaded_filters_give_the_single_threaded_result():
    """The whole-image filters run on bands of rows in threads; the bands' margins must make
    the result identical to one call (a margin one row short changes pixels near the seams)."""
    from scipy import ndimage as ndi

    from nanoshape.segment import _by_rows

    rng = np.random.default_rng(0)
    x = rng.random((700, 500)).astype(np.float32)
    for sigma in (0.7, 3.0):
        whole = ndi.gaussian_filter(x, sigma, mode="nearest", truncate=3.0)
        reach = int(3.0 * sigma + 0.5)
        banded = _by_rows(lambda part: ndi.gaussian_filter(part, sigma, mode="nearest", truncate=3.0), x, reach, 3)
        np.testing.assert_array_equal(banded, whole)
        short = _by_rows(lambda part: ndi.gaussian_filter(part, sigma, mode="nearest", truncate=3.0), x, reach - 1, 3)
        assert not np.array_equal(short, whole)
    scene = render_scene(jax.random.key(7), SceneOptions(height_px=768, width_px=768, n_particles=120,
                                                         touching_fraction=0.4))
    image = scene.image.astype(np.float32)
    one, two = segment(image, SegmentOptions(threads=1)), segment(image, SegmentOptions(threads=2))
    np.testing.assert_array_equal(one.labels, two.labels)
