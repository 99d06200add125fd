"""nanoshape from Python: analyse micrographs, render and fit shapes, load the shape CNN.

The functions a notebook needs, each one call into the library with plain arguments
(arrays of any real dtype, paths, dicts of options) and plain results (pandas tables,
numpy arrays). They are re-exported by :mod:`nanoshape` (``nanoshape.analyze(...)``).
Options are the command line's, given as keyword arguments: a stage's options as a dict
(``segment={"method": "classical"}``) or as its options object; a misspelled key is
refused with the closest ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from nanoshape.family import ShapeFamily

__all__ = ["analyze", "render", "fit", "load_model"]


def _options(cls: type, given: Mapping[str, Any], where: str) -> Any:
    """``cls()`` with the values in ``given`` (nested options as dicts or objects)."""
    defaults = cls()
    names = [f.name for f in dataclasses.fields(cls)]
    changes = {}
    for key, value in given.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
            raise TypeError(f"{where}: no option {key!r}" + (f"; did you mean {' or '.join(close)}?" if close else
                                                              f"; the options are {', '.join(names)}"))
        default = getattr(defaults, key)
        if dataclasses.is_dataclass(default) and isinstance(value, Mapping):
            value = _options(type(default), value, f"{where} {key}")
        elif isinstance(value, list):
            value = tuple(value)
        changes[key] = value
    return dataclasses.replace(defaults, **changes)


def analyze(image: Any, pixel_size_nm: float | None = None, *, output: str | os.PathLike | None = None,
            workers: int = 0, **options: Any) -> pd.DataFrame:
    """Find, separate and measure every particle of a micrograph (array) or of micrograph files.

    Parameters
    ----------
    image : array_like, str or os.PathLike
        An (H, W) micrograph of any real dtype (uint8, uint16, int, float64, bool, a JAX
        array; (H, W, 3) colour becomes grey), a :class:`nanoshape.io.Micrograph`, or a file,
        folder or glob of micrograph files (every format ``nanoshape analyze`` reads).
    pixel_size_nm : float, optional
        nm per pixel. For files it overrides their calibration and scale bars; without it an
        array's sizes are in px (columns ``..._px``) and files use their own calibration.
    output : str or os.PathLike, optional
        Files only: the run directory (particles.csv, labels/, overlays/, report.html, ...;
        rerunning resumes, as with ``nanoshape analyze``). None analyses in a temporary
        directory and returns the table only.
    workers : int
        Files only: parallel worker processes (Dask); 0 analyses them one after the other.
    **options
        Any option of ``nanoshape analyze`` (``nanoshape analyze --help``): ``segment``,
        ``crop``, ``shape``, ``image_fit``, ``refine``, ``calibration``, ``groups`` as dicts
        or options objects, and ``scale_bar``, ``group``, ``report``, ``overlays``, ... .

    Returns
    -------
    pandas.DataFrame
        One row per particle, the columns of ``particles.csv`` (README, "What a run writes";
        a run's ``columns.csv`` describes each): for an array, every measurement and fitted
        shape but no shape group (groups need a run's many particles: analyse files for them).

    Raises
    ------
    TypeError
        An unknown option (the message names the closest).
    ValueError
        An option with an invalid value, or an image that is not one
        (:class:`nanoshape.io.MicrographError`, naming it).

    Examples
    --------
    Two dark discs 24 and 32 px across on a bright film, as 8-bit pixels 0.5 nm wide
    (``shape={"cnn": False}`` measures without fitting shapes, which is quicker):

    >>> import numpy as np
    >>> import nanoshape
    >>> yy, xx = np.mgrid[:128, :128]
    >>> image = np.full((128, 128), 200, np.uint8)
    >>> image[(xx - 40) ** 2 + (yy - 40) ** 2 <= 12 ** 2] = 60
    >>> image[(xx - 88) ** 2 + (yy - 84) ** 2 <= 16 ** 2] = 60
    >>> particles = nanoshape.analyze(image, pixel_size_nm=0.5, shape={"cnn": False})
    >>> sorted(particles["equivalent_diameter_nm"].round().tolist())
    [12.0, 16.0]
    >>> nanoshape.analyze(image, segmnt={"method": "classical"})
    Traceback (most recent call last):
    ...
    TypeError: nanoshape.analyze: no option 'segmnt'; did you mean segment?
    """
    from nanoshape.pipeline import AnalyzeOptions, analyze_micrograph, run_analysis
    from nanoshape.schedule import DistributeOptions

    is_path = isinstance(image, (str, os.PathLike))
    options = dict(options)
    if not is_path:
        options.setdefault("overlays", False)  # no run directory to draw into
    settings = _options(AnalyzeOptions, {**options, "pixel_size_nm": pixel_size_nm}, "nanoshape.analyze")
    if not is_path:
        if output is not None or workers:
            raise TypeError("nanoshape.analyze: output= and workers= are for files; an array's table is returned")
        from nanoshape.io import as_micrograph

        return analyze_micrograph(as_micrograph(image, pixel_size_nm=pixel_size_nm), settings).particles
    distribute = DistributeOptions(workers=workers)
    if output is not None:
        run_analysis(image, output, settings, distribute=distribute)
        return _particles(Path(output))
    if "report" not in options:
        settings = dataclasses.replace(settings, report=False, overlays=options.get("overlays", False))
    with tempfile.TemporaryDirectory(prefix="nanoshape-") as folder:
        run_analysis(image, folder, settings, distribute=distribute)
        return _particles(Path(folder))


def _particles(output: Path) -> pd.DataFrame:
    path = output / "particles.parquet"
    return pd.read_parquet(path) if path.exists() else pd.DataFrame()


#: Eq. 1's parameters where none are given (a disc); other families default only phi to 0.
_EQ1_DEFAULTS = {"p": 2.0, "d": 2, "l_ratio": 1.0, "phi": 0.0}


def _family_signature(family: ShapeFamily) -> str:
    """The family's parameters and their ranges, for error messages: ``n_sides in 3..7, 0 < rounding <= 1, phi``."""
    classes = family.classes
    run = classes == tuple(range(classes[0], classes[-1] + 1))
    parts = {family.discrete: f"{family.discrete} in {classes[0]}..{classes[-1]}" if run
             else f"{family.discrete} in {{{', '.join(map(str, classes))}}}"}
    for c in family.continuous:
        parts[c.name] = f"{c.name} > 0" if c.upper == np.inf else f"0 < {c.name} <= {c.upper:g}"
    return ", ".join(parts.get(name, f"{name} (radians)" if name == "phi" else name) for name in family.columns)


def _shape_values(family: ShapeFamily, given: tuple, named: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The family's parameters from ``given`` (in the order of ``family.columns``) and ``named``,
    checked against the family's ranges and broadcast together: {name: int32 or float32 array}."""
    names = family.columns
    where = f"nanoshape.render: the {family.name} family"
    signature = _family_signature(family)
    if len(given) > len(names):
        raise TypeError(f"{where} has {len(names)} parameters ({signature}); got {len(given)} values by position")
    values = dict(zip(names, given))
    for name, value in named.items():
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise TypeError(f"{where} has no parameter {name!r}{hint}; its parameters are {signature}")
        if name in values:
            raise TypeError(f"nanoshape.render: {name} given twice, by position and by name")
        values[name] = value
    values = {**(_EQ1_DEFAULTS if family.name == "superellipse" else {"phi": 0.0}), **values}
    missing = [name for name in names if name not in values]
    if missing:
        raise TypeError(f"{where} needs {', '.join(missing)}; its parameters are {signature}")
    # checked in float64 (a d of 2.5 is refused, not cut to 2), then cast to what the renderer
    # takes: the same values np.asarray(x, float32 or int32) gives, so eq. 1 draws the same bits
    arrays = dict(zip(names, np.broadcast_arrays(*(np.asarray(values[name], np.float64) for name in names))))
    upper = {c.name: c.upper for c in family.continuous}
    for name, array in arrays.items():
        if name == family.discrete:
            bad = ~np.isin(array, family.classes)
        elif name in upper:
            bad = ~(np.isfinite(array) & (array > 0) & (array <= upper[name]))
        else:
            bad = ~np.isfinite(array)
        if bad.any():
            shown = ", ".join(f"{value:g}" for value in array[bad][:3]) + (", ..." if bad.sum() > 3 else "")
            raise ValueError(f"{where}: {name} = {shown} is out of range; its parameters are {signature}")
    return {name: array.astype(np.int32 if name == family.discrete else np.float32) for name, array in arrays.items()}


def render(*params: Any, family: str | ShapeFamily = "superellipse", size_px: int = 64, scale_px: float | None = None,
           seed: int = 0, imaging: Any = None, silhouette: bool = False, **named: Any) -> np.ndarray:
    """Draw particles of a shape family (eq. 1 by default) as TEM images, or as bare silhouettes.

    Parameters
    ----------
    *params, **named : float or array_like
        The family's parameters, by position in the order of its columns or by name.
        Eq. 1 (``superellipse``): ``p, d, l_ratio, phi`` (curvature exponent p > 0, number of
        major axes d in 1..6, axis ratio L > 0, phase phi in radians; by default 2, 2, 1, 0,
        a disc). Rounded polygons (``polygon``): ``n_sides, rounding, phi`` (3..7 sides,
        corner radius over inradius in (0, 1], the first side's normal in radians; phi
        defaults to 0). Arrays (broadcast together) draw one image each.
    family : str or nanoshape.ShapeFamily
        The shape family (a name of :data:`nanoshape.FAMILIES`, README "Shape families").
    size_px : int
        Side of each image in pixels.
    scale_px : float, optional
        The unit radius in pixels (a polygon's inradius); by default each shape's largest
        radius is 40 % of the side.
    seed : int
        Seed of the random imaging conditions (contrast, blur, film, shot noise); image ``i``
        of a batch uses ``fold_in(key(seed), i)``.
    imaging : dict or nanoshape.render.Imaging, optional
        The imaging model (ranges the conditions are drawn from); ``nanoshape render
        --help`` lists its keys under ``imaging``.
    silhouette : bool
        Return the anti-aliased coverage in [0, 1] instead of a TEM image.

    Returns
    -------
    numpy.ndarray
        (size_px, size_px) float32, or (n, size_px, size_px) for arrays of parameters.

    Raises
    ------
    TypeError
        A parameter the family does not have, or one it needs missing (the message lists
        the family's parameters and their ranges).
    ValueError
        An unknown family, or a parameter outside the family's range.

    Examples
    --------
    A disc (p = 2, d = 2, L = 1) 20 px in radius covers pi r^2 pixels:

    >>> import numpy as np
    >>> import nanoshape
    >>> disc = nanoshape.render(2.0, 2, 1.0, 0.0, size_px=64, scale_px=20.0, silhouette=True)
    >>> disc.shape, round(float(disc.sum()) / (np.pi * 20 ** 2), 3)
    ((64, 64), 1.0)
    >>> nanoshape.render(p=[0.5, 4.0], d=[4, 4], size_px=48).shape
    (2, 48, 48)

    A hexagon of inradius 20 px with corners rounded by 0.2 of it: a hexagon of inradius
    0.8 grown by 0.2, whose area is 6 tan(pi/6) (0.8^2 + 2 x 0.8 x 0.2) + pi 0.2^2:

    >>> hexagon = nanoshape.render(family="polygon", n_sides=6, rounding=0.2, phi=0.1, size_px=64,
    ...                            scale_px=20.0, silhouette=True)
    >>> area = 6 * np.tan(np.pi / 6) * (0.8 ** 2 + 2 * 0.8 * 0.2) + np.pi * 0.2 ** 2
    >>> round(float(hexagon.sum() / (area * 20 ** 2)), 3)
    1.0
    >>> nanoshape.render(family="polygon", n_sides=6, rounding=1.5)
    Traceback (most recent call last):
    ...
    ValueError: nanoshape.render: the polygon family: rounding = 1.5 is out of range; its parameters are n_sides in 3..7, 0 < rounding <= 1, phi (radians)
    """
    import importlib

    import jax
    import jax.numpy as jnp

    rendering = importlib.import_module("nanoshape.render")  # the package's attribute is this function
    from nanoshape.family import get_family, max_radius

    try:
        family = get_family(family)
    except ValueError as error:
        raise ValueError(f"nanoshape.render: {error}") from None
    values = _shape_values(family, params, named)
    batched = values[family.discrete].ndim > 0
    shapes = family.params_type(*(jnp.asarray(np.atleast_1d(values[name]).ravel()) for name in family.columns))
    if imaging is None or isinstance(imaging, Mapping):
        imaging = _options(rendering.Imaging, imaging or {}, "nanoshape.render imaging")
    center = jnp.full(2, (size_px - 1) / 2.0, jnp.float32)
    scales = (jnp.full(shapes.phi.shape, scale_px, jnp.float32) if scale_px is not None
              else 0.4 * size_px / jax.vmap(max_radius)(shapes))

    def one(index, shape, scale):
        if silhouette:
            return rendering.silhouette(shape, center, scale, height=size_px, width=size_px)
        key = jax.random.fold_in(jax.random.key(seed), index)
        return rendering.render(key, shape, center, scale, height=size_px, width=size_px, imaging=imaging)[0]

    images = np.asarray(jax.jit(jax.vmap(one))(jnp.arange(shapes.phi.shape[0]), shapes, scales))
    return images if batched else images[0]


def fit(masks_or_crops: Any, *, model: str | os.PathLike | None = None, start: str = "cnn",
        **refine: Any) -> pd.DataFrame:
    """Fit the shape family (eq. 1) to particle masks or crops: the CNN's guess, refined.

    Parameters
    ----------
    masks_or_crops : array_like
        One (H, W) mask, (n, H, W) masks (> 0.5 is inside, any real or boolean dtype; each
        is cut around its particle by the crop the analysis uses), or (n, S, S, C) crops from
        :func:`nanoshape.crop.crop_labels` (channel 0 the intensities, 1 the mask).
    model : str or os.PathLike, optional
        The shape CNN whose prediction starts the fit (None: the shipped model).
    start : {"cnn", "moments"}
        ``cnn``: the CNN's prediction (for masks, from the mask drawn as a bright-field
        silhouette, 1 - 0.6 x mask); ``moments``: the mask's second-moment ellipse, with d
        ranked by the fit's search alone (weak where the mask is symmetric: a square or an
        8-fold star from the ellipse's L = 1 stays a disc).
    **refine
        Options of the refinement (``nanoshape analyze --help``, under ``refine``).

    Returns
    -------
    pandas.DataFrame
        One row per particle: canonical ``p``, ``d``, ``l_ratio``, ``phi``; ``center_x_px``,
        ``center_y_px``, ``scale_px`` on the fitting grid; ``jaccard_init`` and
        ``jaccard_refined`` (overlap of the start and of the fit with the mask); ``converged``.

    Examples
    --------
    A rendered rod (p = 4, d = 2, L = 2.5) is fitted as one:

    >>> import nanoshape
    >>> mask = nanoshape.render(4.0, 2, 2.5, 0.5, size_px=64, silhouette=True) > 0.5
    >>> shape = nanoshape.fit(mask).iloc[0]
    >>> int(shape.d), round(float(shape.l_ratio), 1), bool(shape.jaccard_refined > 0.95)
    (2, 2.5, True)
    """
    from nanoshape.crop import CropOptions, crop_labels
    from nanoshape.refine import RefineOptions, moment_start
    from nanoshape.refine import refine as refine_masks

    if start not in ("cnn", "moments"):
        raise ValueError(f"nanoshape.fit: start must be 'cnn' or 'moments', got {start!r}")
    array = np.asarray(masks_or_crops)
    if array.dtype.kind not in "biuf" or array.ndim not in (2, 3, 4):
        raise ValueError(f"nanoshape.fit: give (H, W) or (n, H, W) masks or (n, S, S, C) crops, got {array.dtype} "
                         f"of shape {array.shape}")
    options = _options(RefineOptions, refine, "nanoshape.fit")
    if array.ndim == 4:
        crops = array.astype(np.float32)
    else:
        masks = array[None] if array.ndim == 2 else array
        inside = masks.astype(np.float32) > 0.5
        if not inside.any(axis=(1, 2)).all():
            raise ValueError(f"nanoshape.fit: masks {np.flatnonzero(~inside.any(axis=(1, 2))).tolist()} are empty")
        crops = np.concatenate([crop_labels(1.0 - 0.6 * m, m.astype(np.int32), np.array([1]), options=CropOptions())
                                for m in inside.astype(np.float32)])
    if start == "moments":
        initial = moment_start(crops[..., 1])
    else:
        from nanoshape.cnn import load_model as load_cnn
        from nanoshape.cnn import predict

        initial = predict(load_cnn(model), crops)
    return pd.DataFrame(refine_masks(crops[..., 1], initial, options=options))


def load_model(path: str | os.PathLike | None = None) -> Any:
    """Load a shape CNN saved by ``nanoshape train`` (its run directory or model/), by default the shipped one.

    Parameters
    ----------
    path : str or os.PathLike, optional
        The model's folder; None loads the model shipped with nanoshape.

    Returns
    -------
    nanoshape.cnn.ShapeCNN
        The Flax NNX model (cached per folder: do not modify it in place); its options are
        ``model.options``. :func:`nanoshape.cnn.predict` runs it on crops.

    Examples
    --------
    >>> import nanoshape
    >>> model = nanoshape.load_model()
    >>> model.options.input_size
    64
    """
    from nanoshape.cnn import load_model as load_cnn

    return load_cnn(path)
