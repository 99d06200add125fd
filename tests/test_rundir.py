"""The run-directory contract (nanoshape.rundir) and the reader's guards, piece by piece.

tests/test_faults.py drives the same guarantees end to end through the command line; these
tests pin each rule on its own so a failure names the rule.
"""

import json
import os

import numpy as np
import pandas as pd
import pytest
import tifffile

from nanoshape import rundir
from nanoshape.io import MicrographError, find_inputs, read_micrograph, write_csv, write_tiff
from nanoshape.pipeline import AnalyzeOptions, ShapeOptions, run_fingerprint
from nanoshape.segment import SegmentOptions

FAST = AnalyzeOptions(shape=ShapeOptions(cnn=False))


def _finished_part(output, stem, sha="abc", shape=(8, 8)):
    paths = rundir.part_paths(output, stem)
    write_tiff_path = paths["labels"]
    write_tiff_path.parent.mkdir(parents=True, exist_ok=True)
    write_tiff(write_tiff_path, np.zeros(shape, np.uint32))
    info = {"image": stem, "path": f"/data/{stem}.tif", "sha256": sha, "height_px": shape[0], "width_px": shape[1],
            "pixel_size_nm": None, "particles": 0, "timings": {}}
    rundir.atomic_write(paths["info"], lambda tmp: tmp.write_text(json.dumps(info)))
    rundir.atomic_write(paths["dropped"], lambda tmp: pd.DataFrame({"a": [1]}).to_parquet(tmp))
    rundir.atomic_write(paths["particles"], lambda tmp: pd.DataFrame({"b": [2]}).to_parquet(tmp))


def test_a_rerun_with_other_options_is_refused_naming_each_difference(tmp_path):
    with rundir.open_run(tmp_path, run_fingerprint(FAST)):
        pass
    other = AnalyzeOptions(shape=ShapeOptions(cnn=False), pixel_size_nm=0.7,
                           segment=SegmentOptions(threshold_fraction=0.3))
    with pytest.raises(rundir.RunDirectoryError) as refused:
        with rundir.open_run(tmp_path, run_fingerprint(other)):
            pass
    message = str(refused.value)
    assert "pixel_size_nm: null there, 0.7 now" in message and "segment.threshold_fraction" in message
    assert "overwrite=true" in message
    # options that do not change a micrograph's results do not stop a resume
    same = AnalyzeOptions(shape=ShapeOptions(cnn=False), report=False, group=False,
                          segment=SegmentOptions(threads=1), max_megapixels=10)
    with rundir.open_run(tmp_path, run_fingerprint(same)):
        pass


def test_overwrite_deletes_only_nanoshape_results(tmp_path):
    with rundir.open_run(tmp_path, {"options": 1}):
        _finished_part(tmp_path, "a")
    (tmp_path / "my_notes.txt").write_text("keep me")
    with rundir.open_run(tmp_path, {"options": 2}, overwrite=True):
        pass
    assert not (tmp_path / "parts").exists() and not (tmp_path / "labels").exists()
    assert (tmp_path / "my_notes.txt").read_text() == "keep me"
    assert json.loads((tmp_path / rundir.RUN_FILE).read_text())["options"] == 2


def test_a_second_run_is_refused_while_the_first_holds_the_directory(tmp_path):
    with rundir.open_run(tmp_path, {"options": 1}):
        with pytest.raises(rundir.RunDirectoryError, match=f"another nanoshape run \\(process {os.getpid()}"):
            with rundir.open_run(tmp_path, {"options": 1}):
                pass
    with rundir.open_run(tmp_path, {"options": 1}):  # the lock went with the first run
        pass


def test_completion_marker_is_removed_when_a_run_starts(tmp_path):
    with rundir.open_run(tmp_path, {}):
        rundir.mark_complete(tmp_path, {"particles": 3})
    assert rundir.is_complete(tmp_path)
    with rundir.open_run(tmp_path, {}):
        assert not rundir.is_complete(tmp_path)


def test_damaged_parts_are_redone_and_changed_or_missing_inputs_stop_the_run(tmp_path):
    with rundir.open_run(tmp_path, {}):
        for stem in ("whole", "broken", "no_info"):
            _finished_part(tmp_path, stem)
        rundir.part_paths(tmp_path, "broken")["particles"].write_bytes(b"PAR1 truncated")
        rundir.part_paths(tmp_path, "no_info")["info"].unlink()
        inputs = {stem: (tmp_path / f"{stem}.tif", "abc") for stem in ("whole", "broken", "no_info")}
        plan = rundir.plan_resume(tmp_path, inputs)
        assert plan.finished == {"whole"}
        assert set(plan.redone) == {"broken", "no_info"} and "cannot be read" in plan.redone["broken"]
        assert not rundir.part_paths(tmp_path, "broken")["particles"].exists()
        with pytest.raises(rundir.RunDirectoryError, match="whole.tif"):
            rundir.plan_resume(tmp_path, {"whole": (tmp_path / "whole.tif", "other bytes")})
        with pytest.raises(rundir.RunDirectoryError, match="not among the inputs now \\(whole\\)"):
            rundir.plan_resume(tmp_path, {"new": (tmp_path / "new.tif", "xyz")})


def test_a_label_image_of_the_wrong_size_or_a_truncated_overlay_is_damage(tmp_path):
    _finished_part(tmp_path, "a")
    assert rundir.part_problem(tmp_path, "a") is None
    write_tiff(rundir.part_paths(tmp_path, "a")["labels"], np.zeros((4, 8), np.uint32))
    assert "4 x 8 px" in rundir.part_problem(tmp_path, "a")
    _finished_part(tmp_path, "b")
    overlay = rundir.part_paths(tmp_path, "b")["overlay"]
    overlay.parent.mkdir(exist_ok=True)
    overlay.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    assert "overlays/b.png" in rundir.part_problem(tmp_path, "b", overlays=True)


def test_atomic_write_keeps_the_old_file_when_writing_fails_and_names_temporaries_briefly(tmp_path):
    target = tmp_path / ("x" * 250)
    target.write_text("old")

    def fail(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        rundir.atomic_write(target, fail)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == [target.name]
    rundir.atomic_write(target, lambda tmp: tmp.write_text("new"))  # a 250-character name: its temporary fits
    assert target.read_text() == "new"


def test_output_problems_are_found_before_the_run_with_the_path(tmp_path):
    a_file = tmp_path / "results.txt"
    a_file.write_text("notes")
    with pytest.raises(rundir.RunDirectoryError, match="results.txt is a file"):
        rundir.check_output(a_file)
    assert rundir.name_problem(tmp_path, "n" * 246) is None
    assert "too long" in rundir.name_problem(tmp_path, "m" * 251)


def test_result_folders_of_run_directories_are_not_inputs_and_broken_links_are(tmp_path):
    data = tmp_path / "data"
    (data / "earlier" / "labels").mkdir(parents=True)
    (data / "earlier" / "run.json").write_text(json.dumps({"format": "nanoshape-run-1"}))
    write_tiff(data / "sample.tif", np.zeros((20, 20), np.uint16))
    write_tiff(data / "earlier" / "labels" / "sample.tif", np.zeros((20, 20), np.uint32))
    os.symlink(data / "gone.tif", data / "dangling.tif")
    os.symlink("loop.tif", data / "loop.tif")
    found, notes = find_inputs(f"{data}/**/*.tif")
    assert found == [data / "dangling.tif", data / "loop.tif", data / "sample.tif"]
    assert notes == [f"passed over 1 file(s) in the result folders of the nanoshape run directory {data / 'earlier'}"]
    with pytest.raises(MicrographError, match="no micrographs in this folder"):
        find_inputs(data / "earlier" / "labels")
    with pytest.raises(MicrographError, match="broken symbolic link"):
        read_micrograph(data / "dangling.tif")
    with pytest.raises(MicrographError, match="loops"):
        read_micrograph(data / "loop.tif")


def test_pixel_count_guard_refuses_before_decoding(tmp_path):
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, np.zeros((300, 400), np.uint8))
    with pytest.raises(MicrographError, match="300 x 400 pixels"):
        read_micrograph(path, max_pixels=100_000)
    assert read_micrograph(path, max_pixels=120_000).pixels.shape == (300, 400)
    with pytest.raises(MicrographError, match="from 0.0001 to 1e\\+06 nm"):
        read_micrograph(path, pixel_size_nm=1e-300)


@pytest.mark.parametrize("factor", [1e36, 1e-30])
def test_extreme_pixel_values_are_scaled_by_a_power_of_two(tmp_path, factor):
    counts = np.arange(20 * 30, dtype=np.float64).reshape(20, 30) + 100
    path = tmp_path / "scaled.tif"
    tifffile.imwrite(path, counts * factor)
    micrograph = read_micrograph(path)
    assert np.isfinite(micrograph.pixels).all() and 2**15 <= micrograph.pixels.max() < 2**16
    shift = micrograph.meta["value_scale"]["factor_log2"]
    np.testing.assert_allclose(micrograph.pixels, np.ldexp(counts * factor, shift), rtol=1e-6)
    assert any("beyond what float32 holds" in w for w in micrograph.meta["warnings"])
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, counts.astype(np.float32))
    assert "value_scale" not in read_micrograph(plain).meta


def test_csv_cells_a_spreadsheet_would_run_are_neutralised(tmp_path):
    table = pd.DataFrame({"image": ["=HYPERLINK(\"x\")", "+1", "-2", "@sum", "\tx", "\rx", "plain", "a=b"],
                          "value": [-1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]})
    write_csv(table, tmp_path / "t.csv")
    back = pd.read_csv(tmp_path / "t.csv")
    assert list(back.image[:6]) == ["'=HYPERLINK(\"x\")", "'+1", "'-2", "'@sum", "'\tx", "'\rx"]
    assert list(back.image[6:]) == ["plain", "a=b"] and back.value[0] == -1.0
