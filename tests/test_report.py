"""The HTML report: every section, figures inlined, nothing fetched from elsewhere, data escaped."""

import base64
import json
import re
from pathlib import Path

import jax
import numpy as np
import pytest

from nanoshape.examples import write_scene
from nanoshape.pipeline import AnalyzeOptions, DistributeOptions, ShapeOptions, run_analysis
from nanoshape.report import REPORT_SECTIONS
from nanoshape.scene import POPULATIONS, SceneOptions

HOSTILE = "<img src=x onerror=alert(1)>"  # a legal file name on POSIX (no slash)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("in")
    populations = tuple(POPULATIONS[n] for n in ("spheres", "rods", "stars"))
    for i in range(2):
        write_scene(jax.random.key(40 + i), SceneOptions(height_px=384, width_px=384, n_particles=45,
                                                         populations=populations), folder, f"scene_{i}")
    (folder / f"{HOSTILE}.tif").write_bytes(b"II*\x00 not really a tiff")
    output = tmp_path_factory.mktemp("run")
    run_analysis(folder, output, AnalyzeOptions(shape=ShapeOptions(cnn=False)), distribute=DistributeOptions(workers=0))
    return output, (output / "report.html").read_text()


def test_every_section_is_present_with_figures(report):
    output, text = report
    for section in REPORT_SECTIONS:
        assert f'id="{section}"' in text, section
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) >= 8  # without shape parameters: no (p, d, L) scatter and no fits
    for encoded in images:
        data = base64.b64decode(encoded)
        assert data.startswith(b"\x89PNG") and len(data) > 2000  # a real, non-trivial image
    figures = list((output / "figures").glob("*.png"))
    assert len(figures) == len(images)
    for name in ("sizes", "group_comparison", "group_statistics", "files_skipped", "group_names"):
        assert (output / "tables" / f"{name}.csv").stat().st_size > 20, name


def test_groups_are_named_in_the_report_and_the_particle_table(report):
    """Spheres, rods and stars rendered: each group is named and described with its share and size."""
    import json

    import pandas as pd

    output, text = report
    names = pd.read_csv(output / "groups" / "groups.csv")
    particles = pd.read_csv(output / "particles.csv")
    assert set(particles.group_name) == set(names.name) and len(names) == particles.group.nunique()
    assert names.share.sum() == pytest.approx(1.0)
    descriptions = json.loads((output / "groups" / "grouping.json").read_text())["group_names"]
    for description in descriptions.values():
        assert "% of particles" in description and description.split(",")[0] in text
    # the classifier's accuracy is called what it is, beside the grouping's stability
    assert "agreement with this run&#x27;s own clustering" in text or "agreement with this run's own clustering" in text
    assert "each half of the particles grouped on its own" in text
    # the rendered rods (aspect 2.5-4) are named as such, with their aspect
    rods = names[names.name.str.startswith("rods")]
    assert len(rods) >= 1 and (rods.aspect_mean > 2).all()


def test_the_report_needs_no_network_and_runs_no_script(report):
    _, text = report
    assert "<script" not in text.lower() and "onerror=" not in text.replace("&lt;img src=x onerror=", "")
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert "@import" not in text and "url(" not in text


def test_file_names_from_data_are_escaped(report):
    _, text = report
    assert HOSTILE not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text


def test_report_is_checkable_by_eye(report):
    """Group statistics average no positions; the page says its version and date."""
    import json

    import pandas as pd

    from nanoshape.provenance import version

    output, text = report
    measures = pd.read_csv(output / "tables" / "group_statistics.csv").measure
    positional = [m for m in measures if m.startswith(("centroid_", "bbox_", "particle_id", "pixel_size_nm"))]
    assert not positional and any(m.startswith("area_nm2") for m in measures)
    # angles are not averaged (the mean of 5 and 175 degrees is no orientation)
    assert not [m for m in measures if m.startswith(("orientation_deg", "feret_angle_deg"))]
    # the page shows the key measures; the CSV has every one
    page_rows = set(re.findall(r"<td>([a-z_0-9]+ \((?:mean|std)\))</td>", text))
    assert "circularity (mean)" in page_rows and "area_nm2 (mean)" not in page_rows and "area_nm2 (mean)" in set(measures)
    # a wide table scrolls in its box, not off the page: every table of data
    assert text.count('<div class="scroll"><table') == text.count('<table class="dataframe data">') > 0
    sizes = pd.read_csv(output / "tables" / "sizes.csv")
    particles = pd.read_csv(output / "particles.csv")
    assert sizes.loc[sizes.particles == "all", "with a size in nm"].item() == particles.major_axis_nm.notna().sum()
    facts = json.loads((output / "summary.json").read_text())["provenance"]
    assert f"nanoshape {version()}" in text and facts["date_utc"] in text and 'id="provenance"' in text
    assert facts["segmentation_model_sha256"] in text and f"numpy {facts['dependencies']['numpy']}" in text
    # the histograms count particles (no fitted density curve) and their captions say so
    assert "fitted normal" not in text and "particle counts per group" in text


def _figure_names(output):
    return sorted(p.stem for p in (output / "figures").glob("*.png"))


def test_the_report_reads_only_the_run_directory(report, tmp_path):
    """With the input micrographs gone, a report of the run still draws every micrograph and montage."""
    import shutil

    from nanoshape.report import write_report

    output, text = report
    before = _figure_names(output)
    assert {"micrograph_00", "micrograph_01", "exemplars", "all_particles"} <= set(before)
    copy = tmp_path / "moved_run"
    shutil.copytree(output, copy)
    folder = json.loads((output / "parts" / "info" / "scene_0.json").read_text())["path"]
    inputs = Path(folder).parent
    moved = inputs.with_name(inputs.name + "_moved")
    inputs.rename(moved)
    try:
        page = write_report(copy).read_text()
    finally:
        moved.rename(inputs)
    assert _figure_names(copy) == before and "Not drawn" not in page
    # the micrograph figure is the same as the run's own: drawn from what the run saved
    assert (copy / "figures" / "micrograph_00.png").read_bytes() == (output / "figures" / "micrograph_00.png").read_bytes()


def test_a_run_without_views_gets_a_report_that_says_why_figures_are_missing(report, tmp_path):
    """A run directory of an older nanoshape (no parts/views/): every section, the figures that
    need the micrographs left out with the reason."""
    import shutil

    from nanoshape.report import write_report

    output, _ = report
    copy = tmp_path / "old_run"
    shutil.copytree(output, copy)
    shutil.rmtree(copy / "parts" / "views")
    page = write_report(copy).read_text()
    for section in REPORT_SECTIONS:
        assert f'id="{section}"' in page, section
    figures = _figure_names(copy)
    assert not [f for f in figures if f.startswith("micrograph_")] and "exemplars" not in figures
    assert "histograms" in figures and "dendrogram" in figures
    assert page.count("holds no views of") == 3 and "rerun nanoshape analyze into a new output=" in page


def test_mosaic_puts_each_crop_in_its_frame_in_reading_order():
    from nanoshape.report import _mosaic

    crops = [np.full((8, 8), v, np.float32) for v in (0.0, 1.0, 0.5)]
    colours = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]
    image = _mosaic(crops, colours, columns=2, grey_range=(0.0, 1.0))
    border, cell = 2, 8 + 3 * 2
    assert image.shape == (2 * cell, 2 * cell, 3)
    for k, (value, colour) in enumerate(zip((0.0, 1.0, 0.5), colours)):
        y, x = (k // 2) * cell, (k % 2) * cell
        assert np.allclose(image[y, x], colour)  # the frame's corner
        assert np.allclose(image[y + border + 3, x + border + 3], value)  # inside the crop, grey
    assert np.allclose(image[cell:, cell:], 1.0)  # the empty fourth cell stays white
    # with a band for titles above each row: white there, and each crop where _mosaic_origin says
    from nanoshape.report import _mosaic_origin

    titled = _mosaic(crops, colours, columns=2, grey_range=(0.0, 1.0), title_px=5)
    assert titled.shape == (2 * (cell + 5), 2 * cell, 3)
    assert np.allclose(titled[:5], 1.0) and np.allclose(titled[cell + 5 : cell + 10], 1.0)
    for k, value in enumerate((0.0, 1.0, 0.5)):
        y, x = _mosaic_origin(k, 8, 2, 5)
        assert np.allclose(titled[y : y + 8, x : x + 8], value) and np.allclose(titled[y - 1, x - 1], colours[k])
