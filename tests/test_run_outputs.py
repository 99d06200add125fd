"""What a run directory gives a reader and other tools: columns.csv, provenance, label TIFFs for Fiji
and napari, numbered overlays, the napari reader; and older runs' column names read on resume."""

import datetime
import json

import jax
import numpy as np
import pandas as pd
import pytest
import tifffile

from nanoshape import rundir
from nanoshape._napari import get_reader, read_run
from nanoshape.cli import main
from nanoshape.columns import UNDOCUMENTED, describe_columns
from nanoshape.examples import write_scene
from nanoshape.io import read_micrograph, write_labels
from nanoshape.overlay import draw_overlay, overlay_scale
from nanoshape.pipeline import AnalyzeOptions, DistributeOptions, ShapeOptions, run_analysis
from nanoshape.provenance import read_parquet_provenance, version
from nanoshape.scene import POPULATIONS, SceneOptions

PIXEL_SIZE_NM = 0.8
#: the CNN without the image fit and the refinement: shape columns to read, a few seconds of compiling; the
#: report's provenance footer is tested in test_report.py
OPTIONS = AnalyzeOptions(shape=ShapeOptions(image_fit=False, refine=False), report=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("in")
    populations = tuple(POPULATIONS[n] for n in ("spheres", "rods"))
    write_scene(jax.random.key(7), SceneOptions(height_px=256, width_px=256, n_particles=30, pixel_size_nm=PIXEL_SIZE_NM,
                                                populations=populations), folder, "small")
    output = tmp_path_factory.mktemp("run")
    summary = run_analysis(folder, output, OPTIONS, distribute=DistributeOptions(workers=0))
    return folder, output, summary


def test_columns_csv_documents_every_particle_column(run):
    _, output, _ = run
    particles = pd.read_csv(output / "particles.csv")
    columns = pd.read_csv(output / "columns.csv", keep_default_na=False)
    assert columns.name.tolist() == particles.columns.tolist()
    undocumented = columns.name[columns.meaning == UNDOCUMENTED].tolist()
    assert not undocumented, f"particles.csv columns without a description: {undocumented}"
    units = dict(zip(columns.name, columns.unit))
    assert units["area_nm2"] == "nm2" and units["major_axis_nm"] == "nm" and units["phi_rad"] == "rad"
    assert units["centroid_x_px"] == "px" and units["orientation_deg"] == "deg" and units["pixel_size_nm"] == "nm"
    assert "phi" not in particles and particles.phi_rad.between(0, np.pi).all()
    assert (particles.pixel_size_nm == PIXEL_SIZE_NM).all() and (particles.pixel_size_source != "").all()
    # the shape parameters are explained in words, not only named
    meaning = dict(zip(columns.name, columns.meaning))
    assert "star" in meaning["p"] and "triangle" in meaning["d"] and "aspect ratio" in meaning["l_ratio"]


def test_an_unknown_column_is_reported_undocumented():
    table = describe_columns(["area_px2", "equivalent_diameter_fit_nm", "mystery_value"])
    assert table.meaning.tolist()[2] == UNDOCUMENTED
    assert table.unit.tolist()[:2] == ["px2", "nm"] and UNDOCUMENTED not in table.meaning.tolist()[:2]


def test_provenance_in_summary_and_parquet(run):
    _, output, summary = run
    facts = summary["provenance"]
    assert facts["nanoshape_version"] == version() != "unknown"
    from nanoshape.cnn import default_model_dir

    assert facts["shape_model_sha256"] == rundir.folder_sha256(default_model_dir())
    assert len(facts["segmentation_model_sha256"]) == 64  # the learned detector is the default
    assert facts["dependencies"]["jax"] == jax.__version__ and facts["dependencies"]["numpy"] == np.__version__
    when = datetime.datetime.fromisoformat(facts["date_utc"])
    assert abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) < 3600
    assert facts["command_line"]
    assert read_parquet_provenance(output / "particles.parquet") == facts


def test_label_image_reads_back_as_integer_labels_with_the_pixel_size(run):
    folder, output, _ = run
    path = output / "labels" / "small.tif"
    with tifffile.TiffFile(path) as tif:
        labels = tif.asarray()
        assert tif.is_imagej and tif.imagej_metadata["unit"] == "nm"
        x_resolution = tif.pages[0].tags["XResolution"].value
    assert labels.dtype == np.uint16  # ImageJ has no uint32: Fiji would open it as 32-bit float
    assert x_resolution[1] / x_resolution[0] == pytest.approx(PIXEL_SIZE_NM, rel=1e-6)
    assert read_micrograph(path).pixel_size_nm == pytest.approx(PIXEL_SIZE_NM, rel=1e-6)
    particles = pd.read_csv(output / "particles.csv")
    assert set(np.unique(labels[labels > 0])) == set(particles.particle_id)


def test_label_images_with_more_ids_than_uint16_keep_uint32_and_the_pixel_size(tmp_path):
    labels = np.arange(70_000, dtype=np.int64).reshape(280, 250)
    write_labels(tmp_path / "many.tif", labels, pixel_size_nm=0.25)
    back = tifffile.imread(tmp_path / "many.tif")
    assert back.dtype == np.uint32 and np.array_equal(back, labels)
    assert read_micrograph(tmp_path / "many.tif").pixel_size_nm == pytest.approx(0.25)
    write_labels(tmp_path / "none.tif", labels[:10, :10])
    with tifffile.TiffFile(tmp_path / "none.tif") as tif:
        assert tif.pages[0].dtype == np.uint16 and "unit" not in tif.imagej_metadata
    with pytest.raises(ValueError, match="integer"):
        write_labels(tmp_path / "float.tif", labels.astype(np.float32))


def test_overlay_is_enlarged_numbered_and_shows_dropped_candidates():
    assert overlay_scale(112, 112) == 9 and overlay_scale(1200, 800) == 1 and overlay_scale(6000, 3000) == 0.4
    image = np.full((100, 120), 0.8)
    labels = np.zeros((100, 120), np.uint32)
    labels[20:40, 20:40] = 1
    image[labels > 0] = 0.2
    particles = pd.DataFrame({"particle_id": [1], "centroid_x_px": [29.5], "centroid_y_px": [29.5]})
    dropped = pd.DataFrame({"centroid_x_px": [90.0], "centroid_y_px": [70.0], "area_px": [50.0], "reason": ["speck"]})
    empty = draw_overlay(image, labels, particles.iloc[:0], dropped.iloc[:0], 0.5)
    shown = draw_overlay(image, labels, particles, dropped, 0.5)
    scale = overlay_scale(100, 120)
    assert scale == 9 and shown.shape[:2][1] == 120 * 9 and shown.shape[0] > 100 * 9  # a legend strip below
    centre = (slice(int(25 * scale), int(35 * scale)), slice(int(25 * scale), int(35 * scale)))
    white = (shown[centre] >= 250).all(axis=-1).sum()
    assert white > 10 and (empty[centre] >= 250).all(axis=-1).sum() == 0  # the particle's number is drawn on it
    near = shown[int(60 * scale):int(85 * scale), int(80 * scale):int(100 * scale)].astype(int)
    red = (near[..., 0] > 200) & (near[..., 1] < 80) & (near[..., 2] < 80)
    assert red.sum() > 50  # the dropped candidate and its reason, in red
    # a scale bar in nm: a white bar in the lower right of the micrograph (not there without one)
    height, width = 100 * scale, 120 * scale
    bar = shown[int(0.96 * height) - 7:int(0.96 * height) - 2, int(0.97 * width) - 150:int(0.97 * width) - 10]
    assert (bar == 255).all(axis=-1).mean() > 0.9


def test_napari_reader_opens_a_run_as_image_labels_with_features_and_outlines(run, tmp_path):
    _, output, _ = run
    assert get_reader(str(output)) is read_run and get_reader(str(output / "labels" / "small.tif")) is read_run
    assert get_reader(str(tmp_path)) is None
    layers = read_run(str(output))
    kinds = [kind for _, _, kind in layers]
    assert kinds == ["image", "labels", "shapes"]
    (image, image_meta, _), (labels, labels_meta, _), (polygons, shapes_meta, _) = layers
    assert image.shape == labels.shape and np.issubdtype(labels.dtype, np.integer)
    assert labels_meta["scale"] == (PIXEL_SIZE_NM, PIXEL_SIZE_NM) and labels_meta["metadata"]["unit"] == "nm"
    features = labels_meta["features"]
    particles = pd.read_csv(output / "particles.csv")
    assert sorted(features["index"]) == sorted(particles.particle_id) == sorted(np.unique(labels[labels > 0]))
    assert {"major_axis_nm", "p", "d", "l_ratio", "phi_rad", "group"} <= set(features.columns)
    # each outline sits on its particle: centroid within 1 px, area within 10 % (placed at the mask's area)
    assert len(polygons) == len(shapes_meta["features"]) == len(particles)
    for polygon, (_, row) in zip(polygons, shapes_meta["features"].iterrows()):
        rows, cols = polygon[:, 0], polygon[:, 1]
        area = 0.5 * abs(np.dot(cols, np.roll(rows, 1)) - np.dot(rows, np.roll(cols, 1)))
        assert area == pytest.approx((labels == row.particle_id).sum(), rel=0.1)
        assert np.hypot(cols.mean() - row.centroid_x_px, rows.mean() - row.centroid_y_px) < 3


def test_a_rerun_reads_the_parts_of_a_run_that_named_the_phase_phi(run):
    folder, output, _ = run
    part = rundir.part_paths(output, "small")["particles"]
    new = pd.read_parquet(part)
    new.rename(columns={"phi_rad": "phi", "phi_cnn_rad": "phi_cnn", "phi_std_rad": "phi_std",
                        "phi_image_rad": "phi_image"}).to_parquet(part, index=False)
    summary = run_analysis(folder, output, OPTIONS, distribute=DistributeOptions(workers=0))
    assert summary["micrographs_resumed"] == 1
    particles = pd.read_parquet(output / "particles.parquet")
    assert "phi" not in particles
    np.testing.assert_array_equal(particles.phi_rad.to_numpy(), new.phi_rad.to_numpy())


def test_version_option(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"nanoshape {version()}"


def _longest_white_run(row: np.ndarray) -> int:
    white = np.concatenate([[0], (row >= 250).all(axis=-1).astype(int), [0]])
    edges = np.flatnonzero(np.diff(white))
    return int((edges[1::2] - edges[::2]).max()) if len(edges) else 0


def test_overlay_scale_bar_keeps_clear_of_the_micrographs_own_bar():
    image = np.random.default_rng(0).uniform(0.0, 0.5, (100, 120))
    labels = np.zeros((100, 120), np.uint32)
    nothing = pd.DataFrame({"particle_id": [], "centroid_x_px": [], "centroid_y_px": []})
    dropped = pd.DataFrame({"centroid_x_px": [], "centroid_y_px": [], "area_px": [], "reason": []})
    right = draw_overlay(image, labels, nothing, dropped, 0.5, burned_bar_px=(80, 90, 115, 94))
    left = draw_overlay(image, labels, nothing, dropped, 0.5, burned_bar_px=(5, 90, 40, 94))
    row = int(0.96 * 900) - 4  # inside our bar (10 nm = 20 px, 9x enlarged: 180 px long)
    assert _longest_white_run(right[row, :540]) > 150 and _longest_white_run(right[row, 540:]) < 20
    assert _longest_white_run(left[row, :540]) < 20 and _longest_white_run(left[row, 540:]) > 150


def _jaccard(a, b):
    return (a & b).sum() / (a | b).sum()


def test_the_run_saves_each_particles_fitted_outline_crop_and_a_preview(run):
    """parts/views/: the outlines are the table's shapes, placed as the Jaccard columns place them; the
    crops' outlines land on the crops' masks; the preview is the micrograph in grey."""
    import jax.numpy as jnp
    from skimage.draw import polygon2mask

    from nanoshape.shape import ShapeParams, area, centroid, radius
    from nanoshape.views import OUTLINE_POINTS, crop_outlines, read_views

    folder, output, _ = run
    views = read_views(rundir.part_paths(output, "small")["views"])
    particles = pd.read_parquet(output / "particles.parquet")
    labels = tifffile.imread(output / "labels" / "small.tif")
    np.testing.assert_array_equal(views.particle_id, particles.particle_id)
    theta = np.arange(OUTLINE_POINTS) * 2 * np.pi / OUTLINE_POINTS
    in_crops = crop_outlines(views)
    size = views.crops.shape[1]
    differences = []
    for k, row in particles.iterrows():
        shape = ShapeParams(jnp.float32(row.p), jnp.int32(row.d), jnp.float32(row.l_ratio), jnp.float32(row.phi_rad))
        r = np.asarray(radius(jnp.asarray(theta, jnp.float32), shape), np.float64)
        # vertex k = centre + s R(theta_k) (cos theta_k, sin theta_k): solve for the centre and s
        design = np.concatenate([np.stack([np.ones_like(r), np.zeros_like(r), r * np.cos(theta)], axis=1),
                                 np.stack([np.zeros_like(r), np.ones_like(r), r * np.sin(theta)], axis=1)])
        solution, *_ = np.linalg.lstsq(design, np.concatenate([views.outlines[k, :, 0], views.outlines[k, :, 1]]),
                                       rcond=None)
        residual = design @ solution - np.concatenate([views.outlines[k, :, 0], views.outlines[k, :, 1]])
        assert np.abs(residual).max() < 0.02
        mask = labels == row.particle_id
        scale = solution[2]
        assert scale**2 * float(area(shape)) == pytest.approx(mask.sum(), rel=1e-3)
        placed = solution[:2] + scale * np.asarray(centroid(shape))
        np.testing.assert_allclose(placed, [row.centroid_x_px, row.centroid_y_px], atol=0.02)
        drawn = polygon2mask(labels.shape, views.outlines[k, :, ::-1])
        in_crop = polygon2mask((size, size), in_crops[k, :, ::-1])
        differences.append((_jaccard(drawn, mask) - row.jaccard_cnn, _jaccard(in_crop, views.crops[k, ..., 1] > 127)
                            - _jaccard(drawn, mask)))
    on_micrograph, on_crop = np.abs(np.array(differences)).T
    # jaccard_cnn was measured on the crop's grid, these on the micrograph's and the saved crop's
    assert np.median(on_micrograph) < 0.02 and on_micrograph.max() < 0.08
    assert np.median(on_crop) < 0.02 and on_crop.max() < 0.08
    pixels = read_micrograph(folder / "small.tif").pixels
    lo, hi = np.percentile(pixels, [0.5, 99.5])
    assert views.preview_step == 1 and tuple(views.image_shape) == pixels.shape
    grey = np.clip((pixels - lo) / (hi - lo), 0, 1) * 255
    assert np.abs(views.preview - grey).max() <= 0.5 + 1e-3
