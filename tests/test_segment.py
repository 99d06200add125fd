"""Segmentation: real micrographs with hand-drawn masks, and rendered scenes with known truth.

The learned detector (the default) and the classical thresholds and watershed
(``method="classical"``) are both held to floors; the validation part of the annotated
micrographs, which nothing was trained or tuned on, is scored in a slow test."""

import jax
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import shared_data
from nanoshape.evaluate import match_instances
from nanoshape.scene import POPULATIONS, SceneOptions, render_scene
from nanoshape.segment import DROP_REASONS, SegmentOptions, segment
from nanoshape.segnet import DetectOptions

#: pooled F1 on the 41 EMPS micrographs: the classical segmentation was developed on them
#: and measures 0.898 (1769 TP, 205 FP, 204 FN); the learned detector was trained on the 21
#: of them outside the validation and development parts and measures 0.843 (P 0.923, R 0.776).
#: The floors leave room for numerical noise across platforms, not for regressions.
EMPS_F1_FLOOR = {"classical": 0.88}
#: the learned detector scored on each half of the 41 (alternate rows of index.csv), so that the two halves run
#: beside each other (each compiles its own level shapes: ~35 s alone, where the 41 in one test took 73 s on a
#: 2-core Xeon): pooled F1 0.820 on the even rows (903 TP, 77 FP, 319 FN), 0.878 on the odd (628, 51, 123).
#: The even half (44 s) runs with -m slow; the odd half keeps the learned floor in the default run
EMPS_HALF_F1_FLOOR = {0: 0.81, 1: 0.855}
#: the learned detector on the 115 validation micrographs measures pooled F1 0.846
#: (experiments/results/segmentation/summary.csv); the floor is a little under it
VALIDATION_F1_FLOOR = 0.82
CLASSICAL = SegmentOptions(method="classical")
LEARNED = SegmentOptions(method="learned")


@pytest.fixture(scope="module")
def scene():
    options = SceneOptions(height_px=384, width_px=384, n_particles=45, touching_fraction=0.4,
                           populations=tuple(POPULATIONS[n] for n in ("spheres", "cubes", "rods", "triangles", "stars")))
    return render_scene(jax.random.key(7), options)


@pytest.mark.parametrize("options, half", [pytest.param(CLASSICAL, None, id="classical"),
                                           pytest.param(LEARNED, 0, id="learned-even", marks=pytest.mark.slow),
                                           pytest.param(LEARNED, 1, id="learned-odd")])
def test_real_micrographs_reach_the_f1_floor(options, half):
    root = shared_data("emps_train")
    index = pd.read_csv(root / "index.csv")
    if half is not None:
        index = index.iloc[half::2]
    tp = fp = fn = 0
    for stem in index.id:
        image = np.asarray(Image.open(root / "images" / f"{stem}.png").convert("L"), dtype=np.float32)
        mask = np.asarray(Image.open(root / "masks" / f"{stem}.png")).astype(np.int64)
        scores = match_instances(segment(image, options).labels, mask)
        tp, fp, fn = tp + scores["tp"], fp + scores["fp"], fn + scores["fn"]
    f1 = 2 * tp / (2 * tp + fp + fn)
    floor = EMPS_F1_FLOOR[options.method] if half is None else EMPS_HALF_F1_FLOOR[half]
    assert f1 >= floor, f"pooled F1 {f1:.3f} (tp {tp}, fp {fp}, fn {fn}) on {len(index)} EMPS images"


@pytest.mark.slow
def test_the_validation_part_reaches_its_floor():
    """The micrographs the fixed rule holds out of training and tuning: the learned detector
    beats the classical segmentation and the plain pipeline there, pooled and per image."""
    from nanoshape.evaluate import plain_segmentation, score_images
    from nanoshape.segtrain import annotated_micrographs

    folders = [shared_data("emps_train"), shared_data("emps_train_more")]
    items = list(annotated_micrographs(folders, "validation"))
    assert len(items) == 115
    scores = {}
    for name, run in (("learned", lambda image: segment(image, LEARNED).labels),
                      ("classical", lambda image: segment(image, CLASSICAL).labels), ("plain", plain_segmentation)):
        scores[name] = score_images((stem, run(image), truth) for stem, image, truth in items)["pooled"]
    learned = scores["learned"]
    assert learned["f1"] >= VALIDATION_F1_FLOOR, scores
    assert learned["f1"] > scores["classical"]["f1"] and learned["f1"] > scores["plain"]["f1"], scores


@pytest.mark.parametrize("options", [CLASSICAL, LEARNED], ids=["classical", "learned"])
def test_rendered_scene_is_found_and_split(scene, options):
    result = segment(scene.image.astype(np.float32), options)
    scores = match_instances(result.labels, scene.labels)
    # one small scene (45 particles, 40 % touching): classical 1.0, learned 0.931 (27 of 29
    # found; 0.982 pooled over the 12 rendered evaluation scenes of segmentation_eval)
    assert scores["f1"] >= (0.95 if options.method == "classical" else 0.9), scores
    assert scores["mean_iou"] >= 0.85
    assert result.polarity == "bright_field"
    if options.method == "learned":
        assert list(result.particles.particle_id) == list(range(1, result.labels.max() + 1))
        assert (result.particles.segmentation_score >= DetectOptions().min_score).all()
    assert result.labels.dtype == np.uint32 and result.labels.shape == scene.image.shape
    assert set(result.dropped.reason) <= set(DROP_REASONS)


@pytest.mark.parametrize("options", [CLASSICAL, LEARNED], ids=["classical", "learned"])
def test_dark_field_is_detected_and_gives_the_same_particles(scene, options):
    image = scene.image.astype(np.float32)
    bright = segment(image, options)
    dark = segment(image.max() + image.min() - image, options)
    assert dark.polarity == "dark_field"
    assert match_instances(dark.labels, bright.labels)["f1"] >= (0.97 if options.method == "classical" else 0.9)


@pytest.mark.parametrize("options", [CLASSICAL, LEARNED], ids=["classical", "learned"])
def test_scale_adapts_to_particle_size(scene, options):
    """The same micrograph at 3x the magnification finds the same particles."""
    image = scene.image.astype(np.float32)
    big = np.kron(image, np.ones((3, 3), np.float32))
    small, large = segment(image, options), segment(big, options)
    # measured: classical >= 0.95, learned 0.912 (the 3x copy is nearest-neighbour blocky,
    # edges the detector never saw in training)
    same = match_instances(large.labels, np.kron(small.labels, np.ones((3, 3), np.uint32)))["f1"]
    assert same >= (0.95 if options.method == "classical" else 0.88), same
    assert large.particle_size_px == pytest.approx(3 * small.particle_size_px, rel=0.35)


def test_particles_under_ten_pixels_are_found_on_a_zoomed_level():
    """6 px spheres, which the detector (trained at ~24 px) merges or misses at full resolution,
    are found on the level of twice the resolution that the full-resolution level asks for."""
    import dataclasses

    from nanoshape.segnet import detect, load_segnet, predict_levels

    options = SceneOptions(height_px=192, width_px=192, n_particles=300, gap_px=2.0,
                           populations=(dataclasses.replace(POPULATIONS["spheres"], diameter_nm=3.0),))
    scene = render_scene(jax.random.key(0), options)  # 0.5 nm pixels: 6 px across
    model = load_segnet()
    scores = {}
    for zoom in (False, True):
        levels = predict_levels(model, scene.image.astype(np.float32), zoom=zoom)
        assert (levels[0].factor == 0.5) == zoom
        labels, _ = detect(levels, scene.image.shape, model.options.target_diameter_px)
        scores[zoom] = match_instances(labels, scene.labels.astype(np.int64))["f1"]
    # measured: 0.602 at full resolution, 0.736 zoomed (3 scenes of 256 px pooled: 0.655 and 0.803)
    assert scores[True] >= 0.68 and scores[True] >= scores[False] + 0.08, scores
    result = segment(scene.image.astype(np.float32), SegmentOptions(zoom_small_particles=True))
    assert not segment(scene.image.astype(np.float32), LEARNED).info["zoomed"]  # off by default
    assert result.info["zoomed"] and (result.particles.segmentation_level == 0).all()
    assert result.info["pyramid_levels"] == len(result.info["particles_per_level"])


@pytest.mark.parametrize("options", [CLASSICAL, LEARNED], ids=["classical", "learned"])
def test_border_particles_and_scale_bars_are_dropped_with_reasons(scene, options):
    image = scene.image.astype(np.float32).copy()
    image[340:348, 200:330] = image.min()  # a saturated scale bar drawn onto the micrograph
    result = segment(image, options)
    labels = result.labels
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    assert not edge.any(), "a kept particle touches the border"
    assert not labels[340:348, 200:330].any(), "the scale bar was kept as a particle"
    reasons = set(result.dropped.reason)
    assert "touches border" in reasons
    if options.method == "classical":  # the learned detector does not take the bar for a particle at all
        assert reasons & {"scale bar/text", "joined to scale bar/text"}


@pytest.mark.parametrize("options", [CLASSICAL, LEARNED], ids=["classical", "learned"])
def test_blank_image_gives_no_particles(options):
    rng = np.random.default_rng(0)
    result = segment((100 + rng.normal(0, 1, (256, 256))).astype(np.float32), options)
    assert result.labels.max() <= 2  # noise may leave the odd blob; never a field of particles


def test_options_are_validated():
    with pytest.raises(ValueError):
        segment(np.zeros((64, 64), np.float32) + 1, SegmentOptions(polarity="sideways"))


def test_threaded_filters_give_the_single_threaded_result():
    """The whole-image filters run on bands of rows in threads; the bands' margins must make
    the result identical to one call (a margin one row short changes pixels near the seams)."""
    from scipy import ndimage as ndi

    from nanoshape.segment.filters import _by_rows

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
    one = segment(image, SegmentOptions(method="classical", threads=1))
    two = segment(image, SegmentOptions(method="classical", threads=2))
    np.testing.assert_array_equal(one.labels, two.labels)
