"""The Python API (nanoshape.analyze, render, fit, load_model): docstring examples, the README's
Python section, any dtype in, and a cheap `import nanoshape`."""

import doctest
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nanoshape
import nanoshape.api

README = Path(__file__).resolve().parent.parent / "README.md"


def _docstring_examples():
    finder = doctest.DocTestFinder()
    return [test for test in finder.find(nanoshape.api) if test.examples]


@pytest.mark.parametrize("example", _docstring_examples(), ids=lambda test: test.name.rsplit(".", 1)[-1])
def test_docstring_example(example):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(example)
    assert runner.failures == 0, f"{example.name}: {runner.failures} of {len(example.examples)} examples failed"


def test_every_public_function_has_an_example():
    named = {test.name.rsplit(".", 1)[-1] for test in _docstring_examples()}
    assert set(nanoshape.api.__all__) <= named
    assert set(nanoshape.api.__all__) <= set(nanoshape.__all__)


def _readme_python_blocks() -> list[str]:
    section = README.read_text().split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_python_example_runs_and_finds_its_three_shapes(capsys):
    """The README's first Python block, as written there (29 s alone on 2 busy cores, less after
    the docstring examples have compiled the CNN and the fits; in the default run so the README
    cannot drift)."""
    namespace: dict = {}
    exec(compile(_readme_python_blocks()[0], "README.md (Python)", "exec"), namespace)
    particles = namespace["particles"]
    assert len(particles) == 3
    by_size = particles.sort_values("area_nm2")
    # disc 18 px in radius, square 36 px, rod 81 x 25 px, at 0.4 nm per pixel
    np.testing.assert_allclose(by_size.area_nm2, np.array([np.pi * 18 ** 2, 36 ** 2, 81 * 25]) * 0.16, rtol=0.06)
    disc, square, rod = by_size.itertuples()
    assert rod.l_ratio > 2.5 and rod.d == 2 and disc.l_ratio < 1.15
    assert (particles.jaccard_refined > 0.85).all(), particles.jaccard_refined
    fitted = namespace["nanoshape"].fit(namespace["mask"]).iloc[0]
    assert fitted.d == 2 and abs(fitted.l_ratio - 2.5) < 0.15 and fitted.jaccard_refined > 0.95
    assert "equivalent_diameter_nm" in capsys.readouterr().out


def _disc_image(dtype) -> np.ndarray:
    yy, xx = np.mgrid[:128, :128]  # the size of analyze's docstring example: compiled once
    image = np.full((128, 128), 200.0)
    image[(xx - 30) ** 2 + (yy - 34) ** 2 <= 10 ** 2] = 50
    image[(xx - 64) ** 2 + (yy - 60) ** 2 <= 14 ** 2] = 50
    return image.astype(dtype)


def test_analyze_takes_any_real_dtype_alike():
    """An array of any real dtype is analysed as its values (it once had to be float32, and
    pipeline.analyze_micrograph failed on arrays with an AttributeError)."""
    from nanoshape.pipeline import AnalyzeOptions, ShapeOptions, analyze_micrograph

    tables = {np.dtype(dtype).name: nanoshape.analyze(_disc_image(dtype), pixel_size_nm=0.5, shape={"cnn": False})
              for dtype in (np.uint8, np.uint16, np.int32, np.int64, np.float32, np.float64)}
    reference = tables.pop("float64")
    assert len(reference) == 2
    np.testing.assert_allclose(sorted(reference.equivalent_diameter_nm), [10.0, 14.0], rtol=0.05)
    for name, table in tables.items():
        np.testing.assert_array_equal(table.area_nm2, reference.area_nm2, err_msg=name)
    result = analyze_micrograph(_disc_image(np.uint16), AnalyzeOptions(shape=ShapeOptions(cnn=False)))
    assert result.particles.image.tolist() == ["array", "array"] and "area_px2" in result.particles.columns


def test_fit_starts_masks_from_the_cnn_and_recovers_shapes_a_moment_start_misses():
    """A square (p = 40, d = 2, L = 1): the second-moment start (a disc, L = 1) stays a disc."""
    mask = nanoshape.render(40.0, 2, 1.0, 0.0, size_px=64, silhouette=True) > 0.5
    cnn, moments = nanoshape.fit(mask).iloc[0], nanoshape.fit(mask, start="moments").iloc[0]
    assert cnn.jaccard_refined > 0.93 and cnn.jaccard_refined > moments.jaccard_refined + 0.03
    from nanoshape.crop import crop_labels

    one = crop_labels(1 - 0.6 * mask.astype(np.float32), mask.astype(np.int32), np.array([1]))
    twice = nanoshape.fit(np.concatenate([one, one]))  # (n, S, S, C) crops, as the analysis cuts them
    np.testing.assert_allclose(twice.jaccard_refined, cnn.jaccard_refined, atol=1e-6)
    np.testing.assert_allclose(twice.p, cnn.p, rtol=1e-5)


def test_analyze_refuses_what_is_not_an_image_or_an_option():
    with pytest.raises(ValueError, match="array of real numbers"):
        nanoshape.analyze(np.zeros((8, 8), complex))
    with pytest.raises(TypeError, match="did you mean pixel_size_nm"):
        nanoshape.analyze(_disc_image(np.uint8), pixel_size=0.5)
    with pytest.raises(TypeError, match="did you mean method"):
        nanoshape.analyze(_disc_image(np.uint8), segment={"methd": "classical"})


def test_import_nanoshape_is_cheap_and_render_is_the_function():
    code = ("import sys, nanoshape\n"
            "assert 'jax' not in sys.modules and 'pandas' not in sys.modules\n"
            "import nanoshape.render\n"
            "from nanoshape.render import silhouette\n"
            "assert callable(nanoshape.render) and nanoshape.render.__module__ == 'nanoshape.api'\n"
            "assert sys.modules['nanoshape.render'].silhouette is silhouette\n")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_analyze_a_file_gives_the_table_of_its_pixels(tmp_path):
    """A path runs the command's analysis (a run directory, temporary unless output= is given);
    the same pixels given as an array with the same pixel size give the same particles."""
    from nanoshape.io import write_tiff

    path = tmp_path / "two discs.tif"
    write_tiff(path, _disc_image(np.uint16), pixel_size_nm=0.5)  # ImageJ calibration, read back
    quick = {"shape": {"cnn": False}, "group": False, "calibration": {"read": False}}
    from_file = nanoshape.analyze(path, output=tmp_path / "run", **quick)
    assert (tmp_path / "run" / "particles.csv").exists() and (tmp_path / "run" / "report.html").exists()
    assert from_file.image.tolist() == ["two discs"] * 2 and (from_file.pixel_size_nm == 0.5).all()
    from_array = nanoshape.analyze(_disc_image(np.uint16), pixel_size_nm=0.5, **quick)
    np.testing.assert_allclose(from_array.area_nm2.to_numpy(), from_file.area_nm2.to_numpy(), rtol=1e-6)
    temporary = nanoshape.analyze(str(path), **quick)  # no output=: a temporary run directory, removed
    np.testing.assert_allclose(temporary.area_nm2.to_numpy(), from_file.area_nm2.to_numpy(), rtol=1e-6)
