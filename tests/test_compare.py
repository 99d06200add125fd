"""Samples end to end: the sample column, the report's samples section and tables, ``nanoshape compare``."""

from __future__ import annotations

import dataclasses
import json

import jax
import pandas as pd
import pytest

from nanoshape.cli import main
from nanoshape.examples import write_scene
from nanoshape.pipeline import AnalyzeOptions, DistributeOptions, ShapeOptions, run_analysis
from nanoshape.scene import POPULATIONS, SceneOptions
from nanoshape.segment import SegmentOptions

#: two batches of spheres, the second 25 % larger (20 and 25 nm at 1 nm/px)
BATCHES = {"batch_small": 20.0, "batch_large": 25.0}
#: the classical segmentation (no network to compile) and no shape stages: this file tests the samples, fast
OPTIONS = AnalyzeOptions(segment=SegmentOptions(method="classical"), shape=ShapeOptions(cnn=False), group=False,
                         overlays=False)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("batches")
    for b, (batch, diameter_nm) in enumerate(BATCHES.items()):
        population = dataclasses.replace(POPULATIONS["spheres"], diameter_nm=diameter_nm, diameter_cv=0.08)
        for i in range(2):
            write_scene(jax.random.key(10 * b + i), SceneOptions(height_px=256, width_px=256, pixel_size_nm=1.0,
                                                                 n_particles=30, populations=(population,)),
                        root / batch, f"{batch}_{i}")
    return root


@pytest.fixture(scope="module")
def run(folders, tmp_path_factory):
    output = tmp_path_factory.mktemp("run")
    summary = run_analysis(str(folders / "*" / "*.tif"), output, OPTIONS, distribute=DistributeOptions(workers=0))
    return output, summary


def test_each_micrograph_belongs_to_its_folders_sample(run):
    output, summary = run
    particles = pd.read_csv(output / "particles.csv")
    assert summary["samples"] == {f"{batch}_{i}": batch for batch in BATCHES for i in range(2)}
    assert (particles["sample"] == particles["image"].str.rsplit("_", n=1).str[0]).all()
    assert "cv_major_axis_nm" in summary and not any(k.startswith("polydispersity") for k in summary)


def test_the_report_compares_the_samples_and_tells_them_apart(run):
    output, _ = run
    samples = pd.read_csv(output / "tables" / "samples.csv").set_index("sample")
    small, large = samples.loc["batch_small"], samples.loc["batch_large"]
    assert small.micrographs == 2 and small.interval_resamples == "particles"
    for row, diameter in ((small, 20.0), (large, 25.0)):  # the mask's size, within 6 % of the rendered mean
        assert row.mean_equivalent_diameter_nm == pytest.approx(diameter, rel=0.06)
        assert row.mean_equivalent_diameter_nm_ci_low < row.mean_equivalent_diameter_nm < row.mean_equivalent_diameter_nm_ci_high
    assert small.mean_equivalent_diameter_nm_ci_high < large.mean_equivalent_diameter_nm_ci_low
    for column in ("mean_feret_min_nm", "median_feret_max_nm", "sd_major_axis_nm", "mean_minor_axis_nm",
                   "coverage_fraction", "cv_equivalent_diameter"):
        assert samples[column].notna().all(), column
    (pair,) = pd.read_csv(output / "tables" / "sample_pairs.csv").itertuples()
    assert pair.mannwhitney_p_holm < 1e-6 and pair.rank_biserial < -0.8  # b = batch_small, a = batch_large
    micrographs = pd.read_csv(output / "tables" / "micrographs.csv")
    assert sorted(micrographs.image) == sorted(f"{b}_{i}" for b in BATCHES for i in range(2))
    text = (output / "report.html").read_text()
    assert 'id="samples"' in text and "Holm" in text and (output / "figures" / "samples.png").exists()


def test_a_sample_table_regroups_without_analysing_again(run, folders, tmp_path):
    output, _ = run
    table = tmp_path / "samples.csv"
    table.write_text("file,sample\n" + "".join(f"{b}_{i}.tif,all\n" for b in BATCHES for i in range(2)))
    summary = run_analysis(str(folders / "*" / "*.tif"), output, dataclasses.replace(OPTIONS, samples=str(table)),
                           distribute=DistributeOptions(workers=0))
    assert summary["micrographs_resumed"] == 4 and set(summary["samples"].values()) == {"all"}
    assert set(pd.read_csv(output / "particles.csv")["sample"]) == {"all"}
    assert len(pd.read_csv(output / "tables" / "samples.csv")) == 1
    assert pd.read_csv(output / "tables" / "sample_pairs.csv").empty


def test_compare_treats_each_run_as_a_sample(folders, tmp_path, capsys):
    runs = []
    for batch in BATCHES:
        runs.append(tmp_path / batch)
        run_analysis(folders / batch, runs[-1], dataclasses.replace(OPTIONS, report=False),
                     distribute=DistributeOptions(workers=0))
    out = tmp_path / "comparison"
    assert main(["compare", str(runs[0]), str(runs[1]), f"output={out}", "n_boot=500"]) == 0
    printed = capsys.readouterr().out
    assert "batch_small vs batch_large" in printed.replace("batch_large vs batch_small", "batch_small vs batch_large")
    samples = pd.read_csv(out / "samples.csv").set_index("sample")
    assert set(samples.index) == set(BATCHES)
    assert samples.loc["batch_small", "mean_equivalent_diameter_nm"] < samples.loc["batch_large", "mean_equivalent_diameter_nm"]
    assert pd.read_csv(out / "sample_pairs.csv").mannwhitney_p_holm.iloc[0] < 1e-6
    assert json.loads((out / "compare.json").read_text())["by"] == "run" and (out / "samples.png").stat().st_size > 5000
    # one run directory is not a comparison; a folder that is no run is named
    with pytest.raises(SystemExit, match="at least two run directories"):
        main(["compare", str(runs[0]), f"output={out}"])
    with pytest.raises(SystemExit, match="not a run directory"):
        main(["compare", str(runs[0]), str(folders), f"output={out}"])


def test_across_runs_groups_are_compared_by_their_names():
    from nanoshape.compare import _common_groups

    first = pd.DataFrame({"group": [1, 2, 0], "group_name": ["spheres", "rods", "unassigned"]})
    second = pd.DataFrame({"group": [1, 2, 3], "group_name": ["rods", "cubes", "spheres"]})  # its own numbering
    both = pd.concat([first, second], ignore_index=True)
    names = _common_groups(both, [first, second], "run")
    assert names == {"1": "cubes", "2": "rods", "3": "spheres"}
    assert both.group.tolist() == [3, 2, 0, 2, 1, 3]
    without = pd.concat([first, second.drop(columns="group_name")], ignore_index=True)
    assert _common_groups(without, [first, second.drop(columns="group_name")], "run") == {}
    assert "group" not in without  # no shares where a run has no group names


def test_compare_by_sample_keeps_a_runs_own_samples(run, tmp_path):
    output, _ = run
    out = tmp_path / "by_sample"
    assert main(["compare", str(output), "by=sample", f"output={out}", "n_boot=300"]) == 0
    samples = pd.read_csv(out / "samples.csv")
    assert sorted(samples["sample"]) == sorted(f"{output.name}/{s}" for s in set(
        json.loads((output / "summary.json").read_text())["samples"].values()))
    assert set(pd.read_csv(out / "micrographs.csv").image.str.split("/").str[0]) == {output.name}
