"""``nanoshape analyze``: micrographs in, a run directory of particles out.

One micrograph goes read -> segment -> features -> crops (-> CNN -> refinement) in
:func:`analyze_micrograph`, which returns arrays and tables and writes nothing.
:func:`run_analysis` drives a whole run: each micrograph's results are written
atomically as it finishes (``parts/particles/<stem>.parquet`` last, after
``parts/dropped/``, ``parts/info/``, ``labels/<stem>.tif`` and ``overlays/<stem>.png``), so a rerun of the same command skips finished micrographs; a
file that cannot be read, analysed or written is recorded with its reason and the run goes
on; at the end :mod:`nanoshape.gather` gathers the parts into ``particles.csv`` /
``particles.parquet``, the shape groups and ``summary.json``; :mod:`nanoshape.schedule`
runs the micrographs serially or on Dask. :mod:`nanoshape.rundir` keeps the run directory honest: one run writes
at a time, a rerun resumes only with the same inputs and result-changing options, damaged
parts are redone, and ``complete.json`` is written last. The output layout is the
contract of DESIGN.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from nanoshape import rundir
from nanoshape.columns import RENAMED
from nanoshape.crop import CropOptions, crop_labels, window_sides
from nanoshape.features import measure
from nanoshape.io import Micrograph, MicrographError, as_micrograph, find_inputs, read_micrograph, write_labels
from nanoshape.groups import GroupOptions
from nanoshape.imagefit import ImageFitOptions
from nanoshape.provenance import provenance
from nanoshape.refine import RefineOptions
from nanoshape.scalebar import ScaleBarOptions, calibrate, parse_label, read_scale_bar_labels
from nanoshape.rundir import atomic_write as _atomic_write
from nanoshape.schedule import DistributeOptions, FileSteps, run_files
from nanoshape.segment import SegmentOptions, segment
from nanoshape.gather import gather_run
from nanoshape.progress import Progress, report_progress as _report
from nanoshape.views import make_views, write_views

__all__ = ["ShapeOptions", "AnalyzeOptions", "DistributeOptions", "ImageResult", "Progress", "analyze_micrograph",
           "process_file", "run_analysis", "run_fingerprint"]


@dataclass(frozen=True)
class ShapeOptions:
    """How each particle's shape parameters (p, d, L, phi) are found.

    Attributes:
      cnn: predict them with the CNN from each particle's crop (off: no shape parameters).
      model: a model directory from ``nanoshape train`` (the run directory or its model/);
        empty uses the model shipped with nanoshape.
      image_fit: before the refinement, fit the CNN's shape to the particle's pixels with
        the imaging model it was trained on (:mod:`nanoshape.imagefit`), the slowest shape stage;
        ``false`` skips it (the CNN's shape goes straight to the refinement).
      refine: refine the CNN's parameters by gradient descent through the renderer until
        the re-rendered shape matches the particle's mask (:mod:`nanoshape.refine`).
      batch_size: crops per CNN call.
      family: the shape family (:mod:`nanoshape.family`): ``superellipse`` (eq. 1, the
        shipped model) or another, with ``model=`` a model trained for it (``nanoshape train
        shape.family=<name>``). Other families are fitted to the crop's pixels as eq. 1 is
        (:mod:`nanoshape.imagefit`, with ``image_fit``), then to the masks by
        :func:`nanoshape.familyfit.fit_masks` (with ``refine``), and get their own columns.
    """

    cnn: bool = True
    model: str = ""
    image_fit: bool = True
    refine: bool = True
    batch_size: int = 256
    family: str = "superellipse"

    def __post_init__(self):
        from nanoshape.family import get_family

        get_family(self.family)  # an unknown family stops the run before it starts


@dataclass(frozen=True)
class AnalyzeOptions:
    """Options of ``nanoshape analyze`` below the command line.

    Attributes:
      pixel_size_nm: pixel size to use for every micrograph, overriding the metadata and
        the scale bar; None uses each file's own calibration, else its scale bar (and
        pixels where neither gives one).
      scale_bar: the scale bar's label for every micrograph (``"100nm"``), where the reader
        cannot read it; the bar's length is still measured. Empty reads each label.
      scale_bars: a CSV with columns ``file,scale_bar`` giving the label per file (name,
        stem or path), over ``scale_bar``.
      calibration: how the scale bar is read and weighed against the metadata.
      segment: segmentation options.
      crop: how particles are cut for the CNN.
      save_crops: also write every particle's crop to ``crops/<stem>.npy``.
      overlays: write ``overlays/<stem>.png``.
      shape: the CNN and the refinement of the shape parameters.
      image_fit: options of the image fit (used with ``shape.image_fit``).
      refine: options of the refinement.
      group: group the run's particles into shape groups and train a classifier on them.
      groups: how groups are found and the classifier trained.
      report: write report.html (with figures/ and tables/) at the end of the run.
      classifier: a classifier saved by an earlier run (groups/classifier.skops): sort the
        particles into its groups instead of finding new ones (``nanoshape classify``).
      max_megapixels: largest micrograph read (height x width, in millions of pixels); a
        file whose header declares more is skipped before it is decoded.
      samples: a CSV with columns ``file,sample`` naming each micrograph's sample (name,
        stem or path); a micrograph it does not name belongs to the sample named after its
        folder (:func:`nanoshape.samples.assign_samples`).
    """

    pixel_size_nm: float | None = None
    scale_bar: str = ""
    scale_bars: str = ""
    calibration: ScaleBarOptions = field(default_factory=ScaleBarOptions)
    segment: SegmentOptions = field(default_factory=SegmentOptions)
    crop: CropOptions = field(default_factory=CropOptions)
    save_crops: bool = False
    overlays: bool = True
    shape: ShapeOptions = field(default_factory=ShapeOptions)
    image_fit: ImageFitOptions = field(default_factory=ImageFitOptions)
    refine: RefineOptions = field(default_factory=RefineOptions)
    group: bool = True
    groups: GroupOptions = field(default_factory=GroupOptions)
    report: bool = True
    classifier: str = ""
    max_megapixels: float = 300.0
    samples: str = ""

    def __post_init__(self):
        if self.scale_bar and parse_label(self.scale_bar) is None:
            raise ValueError(f"scale_bar={self.scale_bar!r} is not a number and a length unit (e.g. 100nm, '0.5 µm')")
        if self.scale_bars:
            read_scale_bar_labels(self.scale_bars)  # a bad file stops the run before it starts
        if self.samples:
            from nanoshape.samples import read_sample_table

            read_sample_table(self.samples)

    def scale_bar_label(self, path: str | os.PathLike) -> str:
        """The scale-bar label the user gave for one file (empty: read it)."""
        if self.scale_bars:
            label = read_scale_bar_labels(self.scale_bars).get(Path(path).stem)
            if label:
                return label
        return self.scale_bar


#: particles per call of the CNN, the image fit and the refinement inside one micrograph:
#: a micrograph of 20,000 particles reports its progress in steps of this many
SHAPE_CHUNK = 2048


@dataclass(frozen=True, eq=False)
class ImageResult:
    """What one micrograph gives.

    Attributes:
      particles: one row per kept particle (image, particle_id, centroids, features...).
      labels: (H, W) uint32 instance labels of the kept particles.
      crops: (n, S, S, C) crops (C = crop.channels) in the row order of ``particles``.
      dropped: candidates removed by segmentation, with reasons.
      info: JSON-safe facts: pixel size and its source, polarity, timings (s) per stage.
      window_px: (n,) side of each crop's window in the micrograph's pixels (for the image
        fit; None when it is off).
    """

    particles: pd.DataFrame
    labels: np.ndarray
    crops: np.ndarray
    dropped: pd.DataFrame
    info: dict[str, Any]
    window_px: np.ndarray | None = None


def analyze_micrograph(micrograph: Micrograph | np.ndarray, options: AnalyzeOptions = AnalyzeOptions(),
                       progress: Callable[[Progress], None] | None = None) -> ImageResult:
    """Segment, measure and crop every particle of one micrograph and find its shape (``progress``: see :class:`Progress`).

    The same as :func:`measure_micrograph`, then :func:`add_shapes` and
    :func:`finish_micrograph` on it alone; a run batches the middle step across micrographs.
    ``micrograph`` may be an image array of any real dtype (:func:`nanoshape.io.as_micrograph`;
    sizes in px, named ``array``).
    """
    result = measure_micrograph(as_micrograph(micrograph), options, progress)
    add_shapes([result], options, progress)
    return finish_micrograph(result, options)


def measure_micrograph(micrograph: Micrograph, options: AnalyzeOptions = AnalyzeOptions(),
                       progress: Callable[[Progress], None] | None = None) -> ImageResult:
    """Segment, measure and crop every particle of one micrograph, without the shape stages.

    Returns an :class:`ImageResult` whose ``particles`` hold the features (not yet the shape
    columns, ``image`` and the pixel-size columns: :func:`add_shapes` and
    :func:`finish_micrograph` add them) and whose ``window_px`` holds each crop's window.
    """
    timings: dict[str, float] = {}
    stem = micrograph.stem
    _report(progress, "segment", 0, 1, stem)
    start = time.perf_counter()
    seg = segment(micrograph.pixels, options.segment)
    timings["segment_s"] = time.perf_counter() - start
    _report(progress, "segment", 1, 1, stem)

    start = time.perf_counter()
    table = measure(seg.labels, micrograph.pixels, pixel_size_nm=micrograph.pixel_size_nm)
    timings["features_s"] = time.perf_counter() - start
    _add_segmentation_columns(table, seg)
    _report(progress, "features", 1, 1, stem)

    start = time.perf_counter()
    crops = crop_labels(micrograph.pixels, seg.labels, table["particle_id"].to_numpy(), options=options.crop)
    timings["crop_s"] = time.perf_counter() - start
    _report(progress, "crops", 1, 1, stem)
    sides = (window_sides(seg.labels, table["particle_id"].to_numpy(), options.crop)
             if options.shape.cnn and options.shape.image_fit else None)

    dropped = seg.dropped.copy()
    dropped.insert(0, "image", micrograph.stem)
    info = {
        "image": micrograph.stem,
        "path": str(micrograph.path),
        "height_px": int(micrograph.pixels.shape[0]),
        "width_px": int(micrograph.pixels.shape[1]),
        "pixel_size_nm": micrograph.pixel_size_nm,
        "pixel_size_source": micrograph.meta.get("pixel_size_source"),
        "scale_bar": micrograph.meta.get("scale_bar"),
        "polarity": seg.polarity,
        "particle_size_px": float(seg.particle_size_px),
        "particles": int(len(table)),
        "dropped": int(len(dropped)),
        "warnings": list(micrograph.meta.get("warnings", [])) + list(seg.info.get("self_check", []))
        + ([("no particles found: the image has no contrast" if seg.info.get("no_contrast") else "no particles found")]
           if len(table) == 0 and not seg.info.get("self_check") else []),
        "timings": timings,
    }
    return ImageResult(particles=table, labels=seg.labels, crops=crops, dropped=dropped, info=info, window_px=sides)


def add_shapes(results: list[ImageResult], options: AnalyzeOptions = AnalyzeOptions(),
               progress: Callable[[Progress], None] | None = None) -> None:
    """The shape stages (CNN, image fit, refinement) over the particles of several measured micrographs at once.

    Appends the shape columns (:data:`SHAPE_COLUMNS`, and :data:`FIT_SIZE_COLUMNS` with the
    image fit) to each result's ``particles`` in place, exactly as one micrograph alone would
    get them (each particle is fitted on its own), and adds each stage's seconds to each
    result's ``info["timings"]``, shared out by particle count. Nothing is done with
    ``shape.cnn=false``.
    """
    if not options.shape.cnn:
        return
    counts = [len(r.particles) for r in results]
    n = sum(counts)
    item = results[0].info["image"] if len(results) == 1 else f"{len(results)} micrographs"
    timings: dict[str, float] = {}
    values, fitted = {}, None
    if n:
        crops = results[0].crops if len(results) == 1 else np.concatenate([r.crops for r in results if len(r.particles)])
        window = None
        if options.shape.image_fit:
            window = np.concatenate([r.window_px if r.window_px is not None else np.full(len(r.particles), crops.shape[1])
                                     for r in results])
        values, fitted = _shape_parameters(crops, options, timings, window_px=window,
                                           progress=(lambda stage, done, total: _report(progress, stage, done, total, item))
                                           if progress else None)
    begin = 0
    for result, count in zip(results, counts):
        part = slice(begin, begin + count)
        begin += count
        table = result.particles
        if count == 0:
            for column in SHAPE_COLUMNS:
                table[column] = pd.Series(dtype="bool" if column == "fit_converged" else "float64")
            continue
        if fitted is not None:
            window = result.window_px if result.window_px is not None else np.full(count, result.crops.shape[1])
            _add_fit_sizes(table, {k: np.asarray(v)[part] for k, v in fitted.items()}, window, result.crops.shape[1],
                           result.info["pixel_size_nm"], options.shape.family)
        for column in SHAPE_COLUMNS:  # the table's angles carry their unit in the name
            table[column] = np.asarray(values[_INTERNAL_NAMES.get(column, column)])[part]
        for column in [c for c in values if c not in _SHAPE_STAGE_NAMES]:  # another family's own parameters
            table[column] = np.asarray(values[column])[part]
        for stage, seconds in timings.items():
            result.info["timings"][stage] = seconds * count / n


def finish_micrograph(result: ImageResult, options: AnalyzeOptions = AnalyzeOptions()) -> ImageResult:
    """Add the ``nan_reason``, ``image`` and pixel-size columns to a measured (and shaped) micrograph's table."""
    table = result.particles
    table["nan_reason"] = nan_reasons(table, options)
    table.insert(0, "image", result.info["image"])
    table["pixel_size_nm"] = result.info["pixel_size_nm"] if result.info["pixel_size_nm"] is not None else np.nan
    table["pixel_size_source"] = result.info["pixel_size_source"] or "none: sizes in px"
    return result


#: the image fit's own size of each particle (the unit follows the table's: nm where the
#: pixel size is known, else px)
FIT_SIZE_COLUMNS = ("equivalent_diameter_fit", "major_axis_fit", "minor_axis_fit")


def _add_fit_sizes(table: pd.DataFrame, fitted: dict, window_px: np.ndarray, crop_px: int,
                   pixel_size_nm: float | None, family: str = "superellipse") -> None:
    """Sizes of the shapes the image fit drew into each crop, in the micrograph's units.

    The fit places the particle's edge where its imaging model (thickness profile, blur,
    contrast) puts it, not where a threshold cut the mask's soft edge, so these sizes are
    not biased by the edge's softness: ``equivalent_diameter_fit`` (of the fitted shape's
    area) and ``major_axis_fit`` / ``minor_axis_fit`` (its second-moment axes, as the
    mask's ``major_axis`` is defined), of the shape of the run's ``family``.
    """
    import jax

    from nanoshape.family import area, get_family, moment_axes

    family = get_family(family)
    shapes = family.params_type(*(np.asarray(fitted[k], np.int32 if k == family.discrete else np.float32)
                                  for k in family.columns))
    unit_area = np.asarray(jax.jit(jax.vmap(lambda s: area(s, 1024)))(shapes), np.float64)
    axes = np.asarray(jax.jit(jax.vmap(lambda s: moment_axes(s, 1024)))(shapes), np.float64)
    scale = fitted["scale_px"].astype(np.float64) * np.asarray(window_px, np.float64) / crop_px
    unit, factor = ("nm", pixel_size_nm) if pixel_size_nm else ("px", 1.0)
    table[f"equivalent_diameter_fit_{unit}"] = 2 * scale * np.sqrt(unit_area / np.pi) * factor
    table[f"major_axis_fit_{unit}"] = scale * axes[:, 0] * factor
    table[f"minor_axis_fit_{unit}"] = scale * axes[:, 1] * factor


#: what the segmentation says of each particle (empty for the classical segmentation)
SEGMENTATION_COLUMNS = ("segmentation_score", "segmentation_level", "segmentation_flag")


def _add_segmentation_columns(table: pd.DataFrame, seg) -> None:
    """Append the segmentation's score, pyramid level and self-check flag of each particle in place.

    A particle without a flag has it missing (not ""), so particles.csv reads back what
    particles.parquet holds; the classical segmentation gives no score (NaN) and level -1.
    """
    if seg.particles is not None and len(seg.particles):
        by_id = seg.particles.set_index("particle_id")
        ids = table["particle_id"].to_numpy()
        table["segmentation_score"] = by_id["segmentation_score"].reindex(ids).to_numpy()
        table["segmentation_level"] = by_id["segmentation_level"].reindex(ids).to_numpy()
        flags = by_id["segmentation_flag"].reindex(ids).to_numpy(dtype=object)
    else:
        table["segmentation_score"] = np.full(len(table), np.nan)
        table["segmentation_level"] = np.full(len(table), -1, np.int64)
        flags = np.full(len(table), "", dtype=object)
    flags = np.where(pd.isna(flags) | (flags == ""), np.nan, flags)
    table["segmentation_flag"] = pd.Series(flags, index=table.index, dtype="str")


#: why a measurement can be NaN (no value can be infinite): column prefix -> reason
_NAN_REASONS = {
    "nearest_neighbour_distance": "the only particle kept in its micrograph",
    "intensity_contrast": "the background's median intensity is 0, so a relative contrast is undefined",
}


def nan_reasons(table: pd.DataFrame, options: AnalyzeOptions = AnalyzeOptions()) -> pd.Series:
    """Per particle, each measurement that is NaN and why (missing when none is): the ``nan_reason`` column.

    NaN means "no value", never a failed computation: a stage switched off leaves its
    columns NaN (``shape.image_fit=false``, ``shape.refine=false``), and two features have
    no value for some particles (:data:`_NAN_REASONS`).
    """
    off = {}
    if options.shape.cnn and not options.shape.image_fit:
        from nanoshape.columns import table_column
        from nanoshape.family import get_family

        image_columns = [f"{name}_image" for name in ("p", "d", "l_ratio", *get_family(options.shape.family).columns)]
        off.update(dict.fromkeys([*map(table_column, image_columns), "jaccard_image"], "shape.image_fit=false"))
    if options.shape.cnn and not options.shape.refine:
        off["jaccard_refined"] = "shape.refine=false"
    if options.shape.cnn and options.shape.family != "superellipse":
        from nanoshape.familyfit import family_nan_reasons

        off.update(family_nan_reasons(options.shape.family))
    numeric = table.select_dtypes("number")
    missing = numeric.isna().to_numpy()
    out = np.full(len(table), np.nan, dtype=object)
    if missing.any():
        patterns, which = np.unique(missing, axis=0, return_inverse=True)
        for k, pattern in enumerate(patterns):
            by_reason: dict[str, list[str]] = {}
            for column in numeric.columns[pattern]:
                reason = off.get(column) or next((why for prefix, why in _NAN_REASONS.items() if column.startswith(prefix)),
                                                 "not computed for this particle")
                by_reason.setdefault(reason, []).append(column)
            out[np.asarray(which).ravel() == k] = "; ".join(f"{' '.join(c)}: {why}" for why, c in by_reason.items())
    # missing rather than "": the CSV reads back what the parquet holds
    return pd.Series(out, index=table.index, dtype="str")


#: the shape stages' own names of the table's renamed columns (``phi_rad`` is ``phi`` there)
_INTERNAL_NAMES = {new: old for old, new in RENAMED.items()}
#: shape columns, in order (the CNN's values keep the suffix ``_cnn`` once refined, the
#: image fit's the suffix ``_image``: NaN when the image fit is off)
SHAPE_COLUMNS = ("p", "d", "l_ratio", "phi_rad", "p_cnn", "d_cnn", "l_ratio_cnn", "phi_cnn_rad", "p_log_std",
                 "l_ratio_log_std", "phi_std_rad", "d_confidence", "p_image", "d_image", "l_ratio_image", "phi_image_rad",
                 "jaccard_cnn", "jaccard_image", "jaccard_refined", "fit_converged")
_SHAPE_STAGE_NAMES = {_INTERNAL_NAMES.get(column, column) for column in SHAPE_COLUMNS}


def _in_chunks(run: Callable[[slice], dict[str, np.ndarray]], n: int, stage: str, progress) -> dict[str, np.ndarray]:
    """``run`` over slices of at most :data:`SHAPE_CHUNK` particles, joined; progress after each."""
    parts = []
    for begin in range(0, n, SHAPE_CHUNK):
        parts.append(run(slice(begin, min(begin + SHAPE_CHUNK, n))))
        if progress is not None:
            progress(stage, min(begin + SHAPE_CHUNK, n), n)
    if len(parts) == 1:
        return parts[0]
    return {key: np.concatenate([np.asarray(part[key]) for part in parts]) for key in parts[0]}


def _add_shape_parameters(table: pd.DataFrame, crops: np.ndarray, options: AnalyzeOptions, timings: dict,
                          window_px: np.ndarray | None = None, pixel_size_nm: float | None = None,
                          progress: Callable[[str, int, int], None] | None = None) -> None:
    """Append the CNN's (the image fit's, and the refined) shape parameters to one particle table in place.

    ``jaccard_cnn`` is the Jaccard index between the CNN's shape, placed at the particle's
    area and centroid, and the particle's mask; ``jaccard_image`` and ``jaccard_refined``
    the same after the image fit and after the refinement (NaN when they are off). The
    refinement starts from the image fit when there is one. ``window_px``: each crop's
    window side in the micrograph's pixels (for the image fit). With the image fit, the
    fitted shape's own size is added too (:data:`FIT_SIZE_COLUMNS`).
    """
    result = ImageResult(particles=table, labels=np.zeros((0, 0), np.uint32), crops=crops, dropped=pd.DataFrame(),
                         info={"image": "", "pixel_size_nm": pixel_size_nm, "timings": timings}, window_px=window_px)
    add_shapes([result], dataclasses.replace(options, shape=dataclasses.replace(options.shape, cnn=True)),
               (lambda event: progress(event.stage, event.done, event.total)) if progress else None)


def _shape_parameters(crops: np.ndarray, options: AnalyzeOptions, timings: dict, window_px: np.ndarray | None = None,
                      progress: Callable[[str, int, int], None] | None = None) -> tuple[dict, dict | None]:
    """The values of :data:`SHAPE_COLUMNS` for ``n >= 1`` crops (of one micrograph or many), and the image fit's
    output (None when it is off); each stage's seconds go into ``timings``."""
    from nanoshape.cnn import load_model, predict
    from nanoshape.refine import fit_jaccard, refine
    from nanoshape.shape import ShapeParams

    n = len(crops)
    start = time.perf_counter()
    model = load_model(options.shape.model or None)
    if model.options.family != options.shape.family:
        raise ValueError(f"the shape model {options.shape.model or '(shipped)'} was trained for the {model.options.family} "
                         f"family, not shape.family={options.shape.family}: give a model of that family (nanoshape "
                         f"train shape.family={options.shape.family}) or shape.family={model.options.family}")
    wanted = model.options.input_channels
    if crops.shape[-1] < wanted:
        raise ValueError(f"the shape model {options.shape.model or '(shipped)'} reads {wanted}-channel crops (a context "
                         f"window); set crop.context as the model was trained, not {options.crop.context}")
    # the first two channels (intensity, mask) do not depend on crop.context
    cnn = _in_chunks(lambda part: predict(model, crops[part, ..., :wanted], batch_size=options.shape.batch_size), n,
                     "cnn", progress)
    masks = crops[..., 1]
    timings["cnn_s"] = time.perf_counter() - start
    fitted = None
    if options.shape.image_fit:
        from nanoshape.imagefit import fit_image

        start = time.perf_counter()
        fitted = _in_chunks(lambda part: fit_image(crops[part], {k: np.asarray(v)[part] for k, v in cnn.items()},
                                                   window_px=None if window_px is None else window_px[part],
                                                   options=options.image_fit, family=model.options.shape_family),
                            n, "image_fit", progress)
        timings["image_fit_s"] = time.perf_counter() - start
    if options.shape.family != "superellipse":
        from nanoshape.familyfit import family_values

        return family_values(masks, cnn, model.options.shape_family, image=fitted, refine=options.shape.refine,
                             timings=timings), fitted

    def placed_jaccard(shape):
        return fit_jaccard(masks, ShapeParams(shape["p"], shape["d"], shape["l_ratio"], shape["phi"]))

    nothing = np.full(n, np.nan, np.float32)
    image = {"p_image": nothing, "d_image": nothing, "l_ratio_image": nothing, "phi_image": nothing,
             "jaccard_image": nothing}
    shape = cnn
    if fitted is not None:
        shape = dict(cnn) | {k: fitted[k] for k in ("p", "d", "l_ratio", "phi")}
        image = {f"{k}_image": fitted[k] for k in ("p", "d", "l_ratio", "phi")}
    if options.shape.refine:
        start = time.perf_counter()
        fit = _in_chunks(lambda part: refine(masks[part], {k: np.asarray(v)[part] for k, v in shape.items()},
                                             options=options.refine), n, "refine", progress)
        timings["refine_s"] = time.perf_counter() - start
        final = {k: fit[k] for k in ("p", "d", "l_ratio", "phi")}
        # refine scores its start exactly as fit_jaccard would (same placement, same grid)
        jaccard_start, jaccard_refined, converged = fit["jaccard_init"], fit["jaccard_refined"], fit["converged"]
    else:
        final = {k: shape[k] for k in ("p", "d", "l_ratio", "phi")}
        jaccard_start, jaccard_refined, converged = placed_jaccard(shape), nothing, np.zeros(n, bool)
    if options.shape.image_fit:
        jaccard_cnn, image["jaccard_image"] = placed_jaccard(cnn), jaccard_start
    else:
        jaccard_cnn = jaccard_start
    values = {**final, **{f"{k}_cnn": cnn[k] for k in ("p", "d", "l_ratio", "phi")},
              **{k: cnn[k] for k in ("p_log_std", "l_ratio_log_std", "phi_std", "d_confidence")}, **image,
              "jaccard_cnn": jaccard_cnn, "jaccard_refined": jaccard_refined, "fit_converged": converged}
    return values, fitted



def _write_image_result(output: Path, micrograph: Micrograph, result: ImageResult, options: AnalyzeOptions) -> None:
    paths = rundir.part_paths(output, micrograph.stem)
    _atomic_write(paths["labels"], lambda tmp: write_labels(tmp, result.labels, pixel_size_nm=micrograph.pixel_size_nm))
    if options.overlays:
        from nanoshape.overlay import save_overlay

        burned = (micrograph.meta.get("scale_bar") or {}).get("bar_box_px")  # keep clear of the micrograph's own bar

        _atomic_write(paths["overlay"], lambda tmp: save_overlay(tmp, micrograph.pixels, result.labels, result.particles,
                                                                  result.dropped, micrograph.pixel_size_nm,
                                                                  title=micrograph.stem, burned_bar_px=burned))
    if options.save_crops:
        _atomic_write(paths["crops"], lambda tmp: np.save(tmp, result.crops, allow_pickle=False))
    _atomic_write(paths["views"], lambda tmp: write_views(tmp, make_views(micrograph.pixels, result.labels, result.particles,
                                                                          result.crops, crop_options=options.crop)))
    _atomic_write(paths["dropped"], lambda tmp: result.dropped.to_parquet(tmp, index=False))
    _atomic_write(paths["info"], lambda tmp: tmp.write_text(json.dumps(result.info, indent=1)))
    # the particle table is written last: its presence marks the micrograph as finished
    _atomic_write(paths["particles"], lambda tmp: result.particles.to_parquet(tmp, index=False))


def process_file(path: str | os.PathLike, output: str | os.PathLike, options: AnalyzeOptions, *,
                 sha256: str | None = None, progress: Callable[[Progress], None] | None = None) -> dict[str, Any]:
    """Analyse one file into the run directory; the unit of work of Dask runs.

    Args:
      path, output, options: the file, the run directory, the analysis options.
      sha256: the SHA-256 of the file's bytes, recorded with its results (computed when not
        given): a rerun resumes the micrograph only while the file holds the same bytes.
      progress: called as the micrograph's stages advance (:class:`Progress`).

    Returns ``{"stem", "status": "done" | "resumed" | "skipped", "reason"}``; never raises
    for a bad micrograph, nor for a failure to write its results (the reason is recorded
    instead). A serial run does the same in three steps (:func:`_start_file`, the shape
    stages batched across micrographs, :func:`_end_file`).
    """
    started = _start_file(path, output, options, sha256=sha256, progress=progress)
    if isinstance(started, dict):
        return started
    micrograph, result = started
    try:
        add_shapes([result], options, progress)
    except Exception as error:  # one bad micrograph must not end the run: record it, go on
        return _analysis_failed(path, error)
    return _end_file(path, output, micrograph, result, options, progress)


def _start_file(path: str | os.PathLike, output: str | os.PathLike, options: AnalyzeOptions, *,
                sha256: str | None = None, progress: Callable[[Progress], None] | None = None
                ) -> dict[str, Any] | tuple[Micrograph, ImageResult]:
    """Read, calibrate and measure one file (:func:`measure_micrograph`): the micrograph and its result,
    or the record of :func:`process_file` when it is finished already or cannot be analysed."""
    path, output = Path(path), Path(output)
    stem = path.stem
    unnameable = rundir.name_problem(output, stem)
    if unnameable:
        return {"stem": stem, "file": str(path), "status": "skipped", "reason": unnameable}
    if rundir.part_paths(output, stem)["particles"].exists():
        return {"stem": stem, "file": str(path), "status": "resumed"}
    try:
        _report(progress, "read", 0, 1, stem)
        micrograph = read_micrograph(path, pixel_size_nm=options.pixel_size_nm,
                                     max_pixels=int(options.max_megapixels * 1e6))
        micrograph = calibrate(micrograph, options.calibration, label=options.scale_bar_label(path))
        result = measure_micrograph(micrograph, options, progress)
        result.info["sha256"] = sha256 or rundir.file_sha256(path)
    except Exception as error:  # one bad micrograph must not end the run: record it, go on
        return _analysis_failed(path, error)
    return micrograph, result


def _analysis_failed(path: str | os.PathLike, error: Exception) -> dict[str, Any]:
    """The record of a file whose reading or analysis raised ``error``."""
    path = Path(path)
    if isinstance(error, MicrographError):
        reason = error.reason
    elif isinstance(error, MemoryError):
        reason = "out of memory while analysing it"
    else:
        reason = f"analysis failed: {type(error).__name__}: {error}"
    return {"stem": path.stem, "file": str(path), "status": "skipped", "reason": reason}


def _end_file(path: str | os.PathLike, output: str | os.PathLike, micrograph: Micrograph, result: ImageResult,
              options: AnalyzeOptions, progress: Callable[[Progress], None] | None = None) -> dict[str, Any]:
    """Finish one analysed micrograph's table and write its results atomically: the record of :func:`process_file`."""
    path, output = Path(path), Path(output)
    try:
        finish_micrograph(result, options)
    except Exception as error:
        return _analysis_failed(path, error)
    try:
        _report(progress, "write", 0, 1, path.stem)
        _write_image_result(output, micrograph, result, options)
    except Exception as error:  # a full disk, a name too long for the file system, ...
        return {"stem": path.stem, "file": str(path), "status": "skipped", "reason": _write_failure(error)}
    return {"stem": path.stem, "file": str(path), "status": "done"}


def _write_failure(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        where = f" ({error.filename})" if error.filename else ""
        return f"its results could not be written: {error.strerror}{where}"
    return f"its results could not be written: {type(error).__name__}: {error}"


def run_analysis(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    output: str | os.PathLike,
    options: AnalyzeOptions = AnalyzeOptions(),
    *,
    distribute: DistributeOptions = DistributeOptions(workers=0),
    progress: Callable[[Progress], None] | None = None,
    overwrite: bool = False,
    config_yaml: str | None = None,
) -> dict[str, Any]:
    """Analyse every micrograph of ``inputs`` into the run directory ``output``.

    Args:
      inputs: a file, a folder, a glob, or several of these (files in the result folders of
        nanoshape run directories are passed over, with a warning).
      output: the run directory (created). A rerun resumes, skipping finished micrographs,
        when its inputs hold the same bytes and its result-changing options
        (:func:`run_fingerprint`) are the same; damaged parts are redone.
      options: the analysis options.
      distribute: serial, on a local Dask cluster, or on an existing one. Results are the
        same either way: each micrograph is analysed independently and deterministically.
      progress: called with a :class:`Progress` as micrographs finish and, in serial runs,
        as each micrograph's stages advance, then through grouping and the report.
      overwrite: delete the results already in ``output`` and start over.
      config_yaml: the run's configuration, written to ``config.yaml`` once the run
        directory has accepted the run.

    Returns:
      the summary written to ``summary.json``.

    Raises:
      nanoshape.rundir.RunDirectoryError: ``output`` cannot be written, another run is
        writing there, or it holds results of other inputs or options (nothing is changed).
      OSError: writing the run's tables failed (a full disk); finished micrographs stay.
    """
    output = Path(output)
    run_start = time.perf_counter()
    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    paths: list[Path] = []
    notes: list[str] = []
    for spec in specs:
        found, passed_over = find_inputs(spec)
        paths.extend(found)
        notes.extend(passed_over)
    skipped: list[dict[str, str]] = []
    unique: dict[str, Path] = {}
    for path in paths:
        if path.stem in unique:
            skipped.append({"file": str(path), "reason": f"same file stem as {unique[path.stem]}; results are keyed by stem"})
        else:
            unique[path.stem] = path
    if options.classifier and Path(os.path.abspath(output)) in Path(os.path.abspath(options.classifier)).parents:
        raise rundir.RunDirectoryError(f"the classifier {options.classifier} lies inside the output {output}, whose "
                                       f"groups/ this run replaces; choose another output=")
    digests = {stem: rundir.file_sha256(path) for stem, path in unique.items()}
    fingerprint = run_fingerprint(options)
    facts = provenance({k: v for k, v in fingerprint.items() if k.endswith("_sha256")})
    with rundir.open_run(output, fingerprint, overwrite=overwrite):
        if config_yaml is not None:
            _atomic_write(output / "config.yaml", lambda tmp: tmp.write_text(config_yaml))
        plan = rundir.plan_resume(output, {stem: (unique[stem], digests[stem]) for stem in unique},
                                  overlays=options.overlays, crops=options.save_crops)
        notes += [f"{stem}: its saved results were damaged ({why}); analysed again" for stem, why in plan.redone.items()]
        records = run_files(list(unique.values()), distribute, _file_steps(output, options, progress, digests))
        skipped += [{"file": r["file"], "reason": r["reason"]} for r in records if r["status"] == "skipped"]
        resumed = sum(r["status"] == "resumed" for r in records)
        analysed = {r["stem"] for r in records if r["status"] != "skipped"}
        summary = gather_run(output, [stem for stem in unique if stem in analysed], skipped, resumed,
                            time.perf_counter() - run_start, options, notes, progress, facts)
        if options.report:
            from nanoshape.report import write_report

            write_report(output, seed=options.groups.seed,
                         progress=(lambda done, total, section: _report(progress, "report", done, total, section))
                         if progress else None)
        else:  # an earlier run's report would describe other results
            (output / "report.html").unlink(missing_ok=True)
            for folder in ("figures", "tables"):
                shutil.rmtree(output / folder, ignore_errors=True)
        rundir.mark_complete(output, {"micrographs_analysed": summary["micrographs_analysed"],
                                      "files_skipped": len(summary["files_skipped"]), "particles": summary["particles"]})
    return summary


def _file_steps(output: Path, options: AnalyzeOptions, progress: Callable[[Progress], None] | None,
                digests: dict[str, str]) -> FileSteps:
    """This run's work on each file, for :func:`nanoshape.schedule.run_files` to place."""
    worker_options = options
    if options.segment.threads == 0:
        # one process per core already: filter threads inside each would only compete
        worker_options = dataclasses.replace(options, segment=dataclasses.replace(options.segment, threads=1))
    return FileSteps(
        start=lambda path: _start_file(path, output, options, sha256=digests[path.stem], progress=progress),
        add_shapes=lambda results: add_shapes(results, options, progress),
        end=lambda path, micrograph, result: _end_file(path, output, micrograph, result, options, progress),
        failed=_analysis_failed,
        task=lambda path: (process_file, (str(path), str(output), worker_options), {"sha256": digests[path.stem]}),
        report=lambda done, total, stem: _report(progress, "micrographs", done, total, stem),
    )


def run_fingerprint(options: AnalyzeOptions) -> dict[str, Any]:
    """What shapes each micrograph's saved results: a rerun resumes only where this is the same.

    The options of the stages that run per micrograph (pixel size, scale bars, segmentation,
    crops, the CNN, the image fit, the refinement, the overlays and crops written) and the
    digests of the shape model's files, of the segmentation model's (learned method) and of
    the scale-bar label file. Grouping, the classifier and the report are redone at the end
    of every run, and the number of segmentation threads, the largest micrograph read and
    where the run is distributed do not change any result, so they are left out.
    """
    values = dataclasses.asdict(options)
    for name in ("group", "groups", "report", "classifier", "max_megapixels", "samples"):
        values.pop(name)
    values["segment"].pop("threads", None)
    model = None
    if options.shape.cnn:
        from nanoshape.cnn import default_model_dir

        folder = Path(options.shape.model or default_model_dir())
        if (folder / "model").is_dir() and not (folder / "model.json").exists():
            folder = folder / "model"  # a training run directory, as load_model reads it
        model = rundir.folder_sha256(folder)
    segmenter = None
    if options.segment.method == "learned":
        from nanoshape.segnet import segnet_dir

        segmenter = rundir.folder_sha256(segnet_dir(options.segment.model))
    labels = rundir.file_sha256(options.scale_bars) if options.scale_bars else None
    return {"options": values, "shape_model_sha256": model, "segmentation_model_sha256": segmenter,
            "scale_bars_sha256": labels}
