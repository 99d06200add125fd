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
    """A five-armed star (p = 1.2, d = 5, L = 1): from the second-moment start (a disc, L = 1) the descent finds
    no arms (0.88 against the CNN start's 0.95 on an Intel Xeon). A square was used before: from the disc, where
    every d draws the same circle, a machine's rounding decided whether it found the square's turned-diamond
    twin (d = 4, 0.995 on an Intel Xeon) or stayed round (an AMD EPYC)."""
    mask = nanoshape.render(1.2, 5, 1.0, 0.0, size_px=64, silhouette=True) > 0.5
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


def _render_eq1_before_families(p, d, l_ratio, phi, *, size_px, scale_px=None, seed=0, silhouette=False):
    """``nanoshape.render``'s code path before it drew other families (commit 4c553be), saved
    here so eq. 1's calls can be checked to draw the same bits."""
    import importlib

    import jax
    import jax.numpy as jnp

    rendering = importlib.import_module("nanoshape.render")
    from nanoshape.shape import ShapeParams, max_radius

    values = np.broadcast_arrays(np.asarray(p, np.float32), np.asarray(d, np.int32), np.asarray(l_ratio, np.float32),
                                 np.asarray(phi, np.float32))
    batched = values[0].ndim > 0
    shapes = ShapeParams(*(jnp.asarray(np.atleast_1d(v).ravel()) for v in values))
    imaging = rendering.Imaging()
    center = jnp.full(2, (size_px - 1) / 2.0, jnp.float32)
    scales = (jnp.full(shapes.p.shape, scale_px, jnp.float32) if scale_px is not None
              else 0.4 * size_px / jax.vmap(max_radius)(shapes))

    def one(index, shape, scale):
        if silhouette:
            return rendering.silhouette(shape, center, scale, height=size_px, width=size_px)
        key = jax.random.fold_in(jax.random.key(seed), index)
        return rendering.render(key, shape, center, scale, height=size_px, width=size_px, imaging=imaging)[0]

    images = np.asarray(jax.jit(jax.vmap(one))(jnp.arange(shapes.p.shape[0]), shapes, scales))
    return images if batched else images[0]


def test_render_draws_eq1_calls_as_before_families():
    """Eq. 1 stays the default and its calls draw the same bits: positional, named, defaults, batches, TEM images."""
    np.testing.assert_array_equal(nanoshape.render(4.0, 2, 2.5, 0.5, size_px=64, silhouette=True),
                                  _render_eq1_before_families(4.0, 2, 2.5, 0.5, size_px=64, silhouette=True))
    np.testing.assert_array_equal(nanoshape.render(family="superellipse", size_px=40, seed=5),
                                  _render_eq1_before_families(2.0, 2, 1.0, 0.0, size_px=40, seed=5))
    np.testing.assert_array_equal(
        nanoshape.render(p=[0.5, 4.0], d=[4, 3], l_ratio=1.7, phi=0.3, size_px=48, scale_px=14.0, seed=3),
        _render_eq1_before_families([0.5, 4.0], [4, 3], 1.7, 0.3, size_px=48, scale_px=14.0, seed=3))


def test_render_draws_a_polygon_whose_outline_is_the_familys_radius():
    """``family="polygon"`` draws the family's own R(theta): the silhouette is the coverage of
    r <= scale R(theta) sampled 8 x 8 times a pixel, and not that of the hexagon turned by
    half its period; named, positional and batched calls draw the same."""
    import jax.numpy as jnp

    from nanoshape.family import ROUNDED_POLYGON, PolygonParams

    size, scale = 48, 16.0
    drawn = nanoshape.render(family="polygon", n_sides=6, rounding=0.2, phi=0.1, size_px=size, scale_px=scale,
                             silhouette=True)
    offsets = (np.arange(8 * size) + 0.5) / 8 - 0.5 - (size - 1) / 2  # sample points about the centre, px
    x, y = np.meshgrid(offsets, offsets)

    def coverage(phi):
        params = PolygonParams(jnp.int32(6), jnp.float32(0.2), jnp.float32(phi))
        outline = scale * np.asarray(ROUNDED_POLYGON.radius(jnp.asarray(np.arctan2(y, x), jnp.float32), params))
        return (np.hypot(x, y) <= outline).reshape(size, 8, size, 8).mean(axis=(1, 3))

    error = np.abs(drawn - coverage(0.1))
    assert error.max() < 0.08 and error.mean() < 0.002, (error.max(), error.mean())
    assert np.abs(drawn - coverage(0.1 + np.pi / 6)).mean() > 10 * error.mean()
    batch = nanoshape.render(6, 0.2, [0.1, 0.1 + np.pi / 3], family="polygon", size_px=size, scale_px=scale,
                             silhouette=True)
    np.testing.assert_allclose(batch, [drawn, drawn], atol=1e-5)  # a turn by the period draws it again


@pytest.mark.parametrize("call, error, message", [
    (dict(family="polygon", n_sides=6, p=4.0), TypeError, "polygon family has no parameter 'p'; its parameters are "
                                                           "n_sides in 3..7, 0 < rounding <= 1, phi"),
    (dict(family="polygon", n_side=6, rounding=0.2), TypeError, "did you mean n_sides"),
    (dict(family="polygon", rounding=0.2), TypeError, "polygon family needs n_sides"),
    (dict(family="polygon", n_sides=[4, 8], rounding=0.2), ValueError, "polygon family: n_sides = 8 is out of range"),
    (dict(family="polygon", n_sides=4, rounding=1.5), ValueError, "rounding = 1.5 is out of range"),
    (dict(p=-1.0), ValueError, "superellipse family: p = -1 is out of range; its parameters are p > 0, d in 1..6"),
    (dict(d=2.5), ValueError, "superellipse family: d = 2.5 is out of range"),
    (dict(phi=float("nan")), ValueError, "phi = nan is out of range"),
    (dict(family="hexagon"), ValueError, "unknown shape family 'hexagon'; known: superellipse, polygon"),
])
def test_render_refuses_parameters_outside_the_family(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        nanoshape.render(**call)


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
