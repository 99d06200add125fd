"""`nanoshape analyze` end to end on rendered scenes: the run-directory contract, accuracy, resilience."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import tifffile

from nanoshape.evaluate import match_instances
from nanoshape.examples import bundled_examples_dir
from nanoshape.pipeline import AnalyzeOptions, DistributeOptions, run_analysis
from nanoshape.segnet import DetectOptions

# the bundled examples (three rendered micrographs: sparse mixed shapes, cubes and rods, crowded
# spheres, 261 particles), analysed once per session with the defaults (conftest.bundled_run)
STEMS = ("mixed_shapes", "cubes_and_rods", "crowded_spheres")


@pytest.fixture(scope="module")
def scene_dir():
    return bundled_examples_dir()


@pytest.fixture(scope="module")
def run(bundled_run):
    output, _ = bundled_run
    return output, json.loads((output / "summary.json").read_text())


def test_run_directory_follows_the_contract(run, scene_dir):
    output, summary = run
    particles = pd.read_csv(output / "particles.csv")
    for column in ("image", "particle_id", "centroid_x_px", "centroid_y_px", "area_nm2", "major_axis_nm",
                   "p", "d", "l_ratio", "phi_rad", "p_cnn", "jaccard_cnn", "jaccard_refined", "fit_converged",
                   "segmentation_score", "segmentation_level", "segmentation_flag", "major_axis_fit_nm",
                   "equivalent_diameter_fit_nm"):
        assert column in particles.columns
    assert (particles.segmentation_score >= DetectOptions().min_score).all() and (particles.segmentation_level >= 0).all()
    assert particles.l_ratio.min() >= 1 and particles.phi_rad.between(0, np.pi).all() and particles.d.isin(range(1, 7)).all()
    # refinement keeps its start (the image fit's shape, on by default) when it cannot improve on it
    # (on the fitting grid's loss or on the reported mask-grid Jaccard: one rendered particle here
    # lost 0.0102 before the second), and fits rendered masks well
    assert particles.jaccard_image.notna().all()
    assert (particles.jaccard_refined >= particles.jaccard_image - 1e-6).all()
    assert particles.jaccard_refined.median() >= 0.9
    pd.testing.assert_frame_equal(pd.read_parquet(output / "particles.parquet"), particles, check_dtype=False)
    for stem in STEMS:
        labels = tifffile.imread(output / "labels" / f"{stem}.tif")
        image = tifffile.imread(scene_dir / f"{stem}.tif")
        assert labels.dtype == np.uint16 and labels.shape == image.shape  # Fiji and napari read uint16 as labels
        ids = set(particles.loc[particles.image == stem, "particle_id"])
        assert ids == set(np.unique(labels[labels > 0]))
        assert (output / "overlays" / f"{stem}.png").stat().st_size > 1000
    assert summary["micrographs_analysed"] == 3 and summary["particles"] == len(particles)
    assert summary["major_axis_mean_nm"] == pytest.approx(particles.major_axis_nm.mean())
    assert summary["cv_major_axis_nm"] == pytest.approx(particles.major_axis_nm.std() / particles.major_axis_nm.mean())
    assert "polydispersity_nm" not in summary
    # a particle is in no group exactly when it has a reason (issue 20 item 4), and the run counts them by reason
    reasons = particles.unassigned_reason.astype(object).fillna("")
    assert ((particles.group == 0) == (reasons != "")).all()
    assert summary["grouping"]["unassigned"] == {k: int(v) for k, v in reasons[reasons != ""].value_counts().items()}


def test_scenes_are_segmented_with_f1_above_095_and_sizes_within_2_percent(run, scene_dir):
    """The image fit's major axis is within 2 % of the truth (median), the mask's within 6 %: the
    learned detector draws edges about half a pixel outside the true coverage masks (it learned
    the EMPS annotators' edges), so masks here are 2-11 % larger in area than the truth's (median
    per micrograph; 11 % for the 20 px crowded spheres) and their major axes 3.7 % longer (median,
    measured 2026-12-07). The fit, which models the blur, is not biased so."""
    output, _ = run
    particles = pd.read_csv(output / "particles.csv")
    tp = fp = fn = 0
    errors, fit_errors = [], []
    for stem in STEMS:
        pred = tifffile.imread(output / "labels" / f"{stem}.tif")
        truth_labels = tifffile.imread(scene_dir / "truth" / f"{stem}.tif")
        truth = pd.read_csv(scene_dir / "truth" / f"{stem}.csv")
        scores = match_instances(pred, truth_labels)
        tp, fp, fn = tp + scores["tp"], fp + scores["fp"], fn + scores["fn"]
        rows = particles[particles.image == stem].set_index("particle_id")
        for pred_id, true_id in scores["pairs"]:
            true_major = truth.set_index("particle_id").loc[true_id, "major_axis_nm"]
            errors.append(abs(rows.loc[pred_id, "major_axis_nm"] - true_major) / true_major)
            fit_errors.append(abs(rows.loc[pred_id, "major_axis_fit_nm"] - true_major) / true_major)
    f1 = 2 * tp / (2 * tp + fp + fn)
    assert f1 >= 0.95, (tp, fp, fn)
    assert np.median(errors) <= 0.06
    assert np.median(fit_errors) <= 0.02  # the image fit's own size of each particle


def test_rerun_resumes_and_gives_the_same_tables(run, scene_dir, tmp_path):
    shared, summary = run
    output = tmp_path / "run"
    shutil.copytree(shared, output)  # the shared run is read by other tests: resume a copy
    again = run_analysis(scene_dir, output, AnalyzeOptions(), distribute=DistributeOptions(workers=0))
    assert again["micrographs_resumed"] == 3
    assert again["particles"] == summary["particles"]


def test_shape_stages_batched_across_micrographs_give_each_micrograph_its_own_results(run, scene_dir, tmp_path):
    """The serial run fits crops of several micrographs in one batch; each micrograph's saved table equals that of a run of it alone
    (process_file, as a Dask worker runs it), timings apart."""
    from nanoshape import pipeline, schedule

    output, _ = run
    assert schedule.SHAPE_QUEUE_PARTICLES > 261  # the three micrographs' particles can share a batch
    alone = tmp_path / "alone"
    for stem in STEMS:
        assert pipeline.process_file(scene_dir / f"{stem}.tif", alone, AnalyzeOptions())["status"] == "done"
        batched = pd.read_parquet(output / "parts" / "particles" / f"{stem}.parquet")
        single = pd.read_parquet(alone / "parts" / "particles" / f"{stem}.parquet")
        pd.testing.assert_frame_equal(batched, single, check_exact=True)
        info = json.loads((output / "parts" / "info" / f"{stem}.json").read_text())
        assert {"cnn_s", "image_fit_s", "refine_s"} <= set(info["timings"]) and info["timings"]["refine_s"] > 0


def test_the_cnn_reads_crops_with_the_channels_it_was_trained_on(tmp_path):
    from flax import nnx

    from nanoshape.cnn import CNNOptions, ShapeCNN, save_model
    from nanoshape.crop import CropOptions
    from nanoshape.pipeline import ShapeOptions, _add_shape_parameters

    crops = np.zeros((3, 64, 64, 3), np.float32)
    crops[:, 20:44, 16:48, 0] = crops[:, 20:44, 16:48, 1] = 1.0
    # a model trained without the context window reads the first two channels, which the
    # window does not change
    save_model(ShapeCNN(CNNOptions(input_channels=2), rngs=nnx.Rngs(0)), tmp_path / "two")
    options = AnalyzeOptions(shape=ShapeOptions(model=str(tmp_path / "two"), refine=False))
    table = pd.DataFrame({"particle_id": [1, 2, 3]})
    _add_shape_parameters(table, crops, options, {})
    from nanoshape.cnn import load_model, predict

    np.testing.assert_array_equal(table["p_cnn"], predict(load_model(tmp_path / "two"), crops[..., :2])["p"])
    assert np.all(table["jaccard_cnn"] > 0)
    # a model trained with the context window refuses crops cut without it, by name
    save_model(ShapeCNN(CNNOptions(input_channels=3), rngs=nnx.Rngs(0)), tmp_path / "three")
    two_channel = AnalyzeOptions(crop=CropOptions(context=0.0), shape=ShapeOptions(model=str(tmp_path / "three"), refine=False))
    with pytest.raises(ValueError, match="crop.context"):
        _add_shape_parameters(pd.DataFrame({"particle_id": [1, 2, 3]}), crops[..., :2], two_channel, {})


def test_the_image_fit_feeds_the_refinement(scene_dir):
    """The image fit (on by default) adds its columns; the refinement starts from the fit, not
    the CNN; shape.image_fit=false sends the CNN's shape to the refinement."""
    from nanoshape.io import read_micrograph
    from nanoshape.pipeline import ShapeOptions, analyze_micrograph

    micrograph = read_micrograph(scene_dir / "mixed_shapes.tif")
    plain = analyze_micrograph(micrograph, AnalyzeOptions(shape=ShapeOptions(image_fit=False))).particles
    fitted = analyze_micrograph(micrograph, AnalyzeOptions()).particles
    assert plain[["p_image", "jaccard_image"]].isna().all().all()
    assert fitted[["p_image", "d_image", "l_ratio_image", "phi_image_rad", "jaccard_image"]].notna().all().all()
    np.testing.assert_allclose(fitted.p_cnn, plain.p_cnn, rtol=1e-5)
    np.testing.assert_allclose(fitted.jaccard_cnn, plain.jaccard_cnn, atol=1e-6)
    assert (fitted.p_image != fitted.p_cnn).mean() > 0.9
    # rendered with the model the fit assumes: its shapes sit on the masks about as well as the CNN's
    assert fitted.jaccard_image.median() >= plain.jaccard_cnn.median() - 0.01
    # the refinement starts from the fit (other results than from the CNN) and keeps it where it
    # cannot improve on it (its guard compares losses on its own 24 px grid, hence the tolerance,
    # as in test_refine)
    assert (fitted.jaccard_refined != plain.jaccard_refined).mean() > 0.5
    assert (fitted.jaccard_refined >= fitted.jaccard_image - 0.02).all()
    assert fitted.jaccard_refined.median() >= fitted.jaccard_image.median()


def test_shape_stages_report_progress_in_chunks_and_give_the_unchunked_particles(scene_dir, monkeypatch):
    """A micrograph of many particles runs the CNN, the image fit and the refinement in chunks,
    reporting after each (issue 24: 20,000 particles showed no progress for 15 minutes)."""
    from nanoshape import pipeline
    from nanoshape.io import read_micrograph

    micrograph = read_micrograph(scene_dir / "mixed_shapes.tif")
    whole = pipeline.analyze_micrograph(micrograph).particles
    n = len(whole)
    monkeypatch.setattr(pipeline, "SHAPE_CHUNK", n // 3 + 1)
    events = []
    chunked = pipeline.analyze_micrograph(micrograph, progress=events.append).particles
    pd.testing.assert_frame_equal(chunked, whole)
    step = n // 3 + 1
    for stage in ("cnn", "image_fit", "refine"):
        assert [(e.done, e.total) for e in events if e.stage == stage] == [(step, n), (2 * step, n), (n, n)]
    assert [e.stage for e in events][:2] == ["segment", "segment"] and {e.item for e in events} == {"mixed_shapes"}
    assert whole.nan_reason.isna().all()


def test_every_nan_measurement_has_its_reason():
    from nanoshape.pipeline import ShapeOptions, nan_reasons

    table = pd.DataFrame({"nearest_neighbour_distance_nm": [np.nan, 1.0, 2.0], "p_image": [np.nan, np.nan, np.nan],
                          "area_nm2": [1.0, 2.0, 3.0]})
    reasons = nan_reasons(table, AnalyzeOptions(shape=ShapeOptions(image_fit=False)))
    assert reasons[0] == "nearest_neighbour_distance_nm: the only particle kept in its micrograph; p_image: shape.image_fit=false"
    assert reasons[1] == reasons[2] == "p_image: shape.image_fit=false"
    assert nan_reasons(table[["area_nm2"]]).isna().all()
