"""Configuration of every command: Hydra structured-config schemas, in one place.

Each stage keeps its options in a frozen, hashable dataclass beside its code (so jitted
functions can take them as static arguments and the library runs without Hydra). This
module mirrors each into a mutable Hydra schema with the same fields and defaults
(:func:`schema`), composes them into one schema per command, registers those in Hydra's
ConfigStore, and turns a composed config back into the frozen options
(:func:`to_options`). YAML under ``configs/`` only composes the schemas.
"""

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from nanoshape.crop import CropOptions
from nanoshape.groups import GroupOptions
from nanoshape.pipeline import ShapeOptions
from nanoshape.imagefit import ImageFitOptions
from nanoshape.refine import RefineOptions
from nanoshape.render import Imaging
from nanoshape.scalebar import ScaleBarOptions
from nanoshape.segment import SegmentOptions
from nanoshape.segtrain import SegTrainOptions
from nanoshape.shape import ShapePrior
from nanoshape.training import TrainOptions

__all__ = ["schema", "to_options", "RenderCommand", "AnalyzeCommand", "ClassifyCommand", "EvaluateCommand", "TrainCommand", "TrainSegmentationCommand", "CompareCommand", "COMMAND_SCHEMAS", "register", "compose"]


def _hydra_type(annotation: Any) -> Any:
    """OmegaConf understands Optional[X] but not PEP 604 ``X | None``."""
    if isinstance(annotation, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return Optional[args[0]]
        return Any
    return annotation


@functools.cache
def schema(options_cls: type) -> type:
    """A mutable Hydra schema with the fields, types and defaults of a frozen options dataclass."""
    hints = typing.get_type_hints(options_cls)
    defaults = options_cls()
    fields = []
    for f in dataclasses.fields(options_cls):
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            sub = schema(type(value))
            fields.append((f.name, sub, field(default_factory=functools.partial(_schema_instance, sub, value))))
        else:
            fields.append((f.name, _hydra_type(hints[f.name]), field(default=value)))
    return dataclasses.make_dataclass(options_cls.__name__ + "Schema", fields)


def _schema_instance(schema_cls: type, options: Any) -> Any:
    kwargs = {}
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        kwargs[f.name] = _schema_instance(schema(type(value)), value) if dataclasses.is_dataclass(value) else value
    return schema_cls(**kwargs)


def _default(options_cls: type) -> Any:
    """The schema instance holding the defaults of an options class."""
    return _schema_instance(schema(options_cls), options_cls())


def to_options(options_cls: type, node: Any) -> Any:
    """Build the frozen options dataclass from a composed config node (lists become tuples)."""
    if isinstance(node, (DictConfig, ListConfig)):
        node = OmegaConf.to_container(node, resolve=True)
    elif dataclasses.is_dataclass(node):
        node = dataclasses.asdict(node)
    defaults = options_cls()
    kwargs = {}
    for f in dataclasses.fields(options_cls):
        if f.name not in node:
            continue
        value = node[f.name]
        default = getattr(defaults, f.name)
        if dataclasses.is_dataclass(default):
            value = to_options(type(default), value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return options_cls(**kwargs)


@dataclass
class RenderCommand:
    """``nanoshape render``: a sheet of rendered shapes (PNG + CSV), or example micrographs.

    Attributes:
      output: directory for the results.
      seed: the one random seed of the run.
      mode: ``sheet`` (single particles on a grid, with their parameters) or ``scene``
        (whole micrographs with labels and truth, as used for the bundled examples).
      n_shapes: particles on the sheet.
      columns: particles per row of the sheet.
      size_px: side of each rendered particle image.
      silhouettes: draw bare silhouettes instead of TEM images on the sheet.
      n_scenes: micrographs to render in scene mode.
      scene_size_px: side of each scene.
      scene_particles: particles per scene.
      pixel_size_nm: pixel size of the scenes (written into the TIFF calibration).
      populations: population names of the scenes (spheres, cubes, rods, triangles, stars).
      prior: the shape prior of the sheet.
      imaging: the imaging model.
    """

    output: str = "nanoshape-render"
    seed: int = 0
    mode: str = "sheet"
    n_shapes: int = 48
    columns: int = 8
    size_px: int = 96
    silhouettes: bool = False
    n_scenes: int = 3
    scene_size_px: int = 512
    scene_particles: int = 60
    pixel_size_nm: float = 0.5
    populations: list[str] = field(default_factory=lambda: ["spheres", "cubes", "rods", "triangles", "stars"])
    prior: schema(ShapePrior) = field(default_factory=lambda: _default(ShapePrior))
    imaging: schema(Imaging) = field(default_factory=lambda: _default(Imaging))

@dataclass
class AnalyzeCommand:
    """``nanoshape analyze``: find, separate and measure every particle of some micrographs.

    Attributes:
      input: a micrograph, a folder of micrographs, or a glob (quote it in the shell).
        Empty analyses the example micrographs bundled with nanoshape.
      output: the run directory (particles.csv/.parquet, labels/, overlays/,
        summary.json, config.yaml, run.json; complete.json once finished). Rerunning into
        the same directory resumes when the inputs hold the same bytes and the options that
        change results are the same; otherwise the run stops and names what differs. One
        run writes into a directory at a time.
      overwrite: delete the results already in output= and start over (needed to rerun
        into a directory with other inputs or options).
      pixel_size_nm: pixel size for every micrograph, overriding the files' calibration and
        scale bars; null uses each file's own, else its burned-in scale bar (and reports
        sizes in px where neither gives one).
      scale_bar: the scale bar's label for every micrograph (100nm, '0.5 µm') where it
        cannot be read; the bar's length is still measured.
      scale_bars: a CSV with columns file,scale_bar giving the label per file.
      samples: a CSV with columns file,sample naming each micrograph's sample (e.g. the
        batch or synthesis); by default a micrograph's sample is its folder's name. The
        report and tables/samples.csv compare the samples (bootstrap 95 % intervals,
        pairwise tests); changing it needs no re-analysis.
      calibration: the scale bar reader (calibration.read=false skips it) and which wins
        when bar and metadata disagree (calibration.prefer=metadata|scale_bar).
      overlays: write overlays/<stem>.png (outlines coloured by particle over the micrograph).
      save_crops: also write each particle's CNN crop to crops/<stem>.npy.
      workers: parallel worker processes (Dask); 0 = serial, -1 = one per core when
        there are at least 8 micrographs and 4 cores (on fewer cores XLA already uses them all).
      scheduler: address of an existing Dask scheduler to use instead (tcp://host:8786).
        Dask sends pickles between this process, the scheduler and its workers, and
        unpickling runs code: use only a cluster you trust (your own, reachable by no one
        else, ideally over TLS), as anyone who can connect to it can run code in this
        process and read your micrographs.
      max_megapixels: largest micrograph read (height x width, millions of pixels); a file
        whose header declares more is skipped with its reason before it is decoded.
      segment: segmentation (lengths in units of the typical particle radius found).
      crop: how particles are cut and normalised for the CNN.
      shape: the CNN (shape.model= a trained model) and whether to refine its parameters.
      image_fit: the fit of each CNN shape to the particle's pixels (shape.image_fit=false skips it).
      refine: the refinement by gradient descent through the renderer.
      group: group the particles into shape groups and train the classifier (groups/).
      groups: how groups are found (datasets, methods, K range) and the classifier trained.
      report: write report.html, figures/ and tables/.
      compilation_cache: directory of the persistent XLA compilation cache, so that a second
        run does not compile the jitted stages again; empty: $XDG_CACHE_HOME/nanoshape/xla
        (~/.cache/nanoshape/xla); off: no cache.
    """

    input: str = ""
    output: str = "nanoshape-results"
    overwrite: bool = False
    pixel_size_nm: Optional[float] = None
    scale_bar: str = ""
    scale_bars: str = ""
    samples: str = ""
    calibration: schema(ScaleBarOptions) = field(default_factory=lambda: _default(ScaleBarOptions))
    overlays: bool = True
    save_crops: bool = False
    workers: int = -1
    scheduler: str = ""
    max_megapixels: float = 300.0
    segment: schema(SegmentOptions) = field(default_factory=lambda: _default(SegmentOptions))
    crop: schema(CropOptions) = field(default_factory=lambda: _default(CropOptions))
    shape: schema(ShapeOptions) = field(default_factory=lambda: _default(ShapeOptions))
    image_fit: schema(ImageFitOptions) = field(default_factory=lambda: _default(ImageFitOptions))
    refine: schema(RefineOptions) = field(default_factory=lambda: _default(RefineOptions))
    group: bool = True
    groups: schema(GroupOptions) = field(default_factory=lambda: _default(GroupOptions))
    report: bool = True
    compilation_cache: str = ""


@dataclass
class ClassifyCommand(AnalyzeCommand):
    """``nanoshape classify``: analyse micrographs and sort their particles into the shape
    groups learned by an earlier run, with that run's classifier.

    Attributes:
      model: the run directory of an earlier ``nanoshape analyze`` (its
        groups/classifier.skops is used), or that .skops file itself. Loaded with skops,
        only when it holds exactly the types of a StandardScaler + SVC pipeline; never pickle.
      output: the run directory of this run (never the model's run directory).
      (every other option as for ``nanoshape analyze``)
    """

    model: str = ""
    output: str = "nanoshape-classified"


@dataclass
class EvaluateCommand:
    """``nanoshape evaluate``: score label images against hand-drawn instance masks.

    Attributes:
      predictions: a run directory of ``nanoshape analyze`` (its labels/ folder is used)
        or a folder of label images named <stem>.tif / <stem>.png.
      masks: a folder of instance masks named like the micrographs (<stem>.png or .tif;
        0 = background, one integer id per particle).
      output: the JSON file for the scores (default: <predictions>/evaluation.json).
      iou_threshold: smallest intersection-over-union of a match.
    """

    predictions: str = ""
    masks: str = ""
    output: str = ""
    iou_threshold: float = 0.5


@dataclass
class CompareCommand:
    """``nanoshape compare <run> <run> ...``: compare run directories of ``nanoshape analyze`` as samples.

    Attributes:
      runs: the run directories (also given as plain arguments before or after the options).
      output: the folder for samples.csv (sizes, bootstrap 95 % intervals of the mean,
        median, cv and group shares), sample_pairs.csv (Kolmogorov-Smirnov, Mann-Whitney,
        chi-square, effect sizes, Holm-corrected p-values), micrographs.csv, samples.png
        and compare.json.
      by: ``run`` (each run is one sample) or ``sample`` (every run's own samples, named
        <run>/<sample>; one run is enough).
      seed: seed of the bootstrap (each sample's resamples also depend on its name).
      n_boot: bootstrap resamples per sample.
      level: coverage of the intervals.
    """

    runs: list[str] = field(default_factory=list)
    output: str = "nanoshape-compare"
    by: str = "run"
    seed: int = 0
    n_boot: int = 2000
    level: float = 0.95


@dataclass
class TrainShape:
    """The shape model a ``nanoshape train`` run learns.

    Attributes:
      family: the shape family (``superellipse``: eq. 1, the default; ``polygon``: rounded
        regular polygons; see nanoshape.family). Its prior is ``train.prior`` for eq. 1 and
        ``train.<family>_prior`` otherwise.
    """

    family: str = "superellipse"


@dataclass
class TrainCommand:
    """``nanoshape train``: train the shape CNN on particles rendered on the fly.

    Attributes:
      output: the run directory (options.json, metrics.jsonl, checkpoints/, model/,
        test.json). Rerunning into the same directory resumes from its newest checkpoint.
      shape: the shape family learned (``shape.family=polygon``).
      train: the training options (steps, batch, learning rate, validation and test sets,
        architecture, shape prior, imaging model, crop).
    """

    output: str = "nanoshape-train"
    shape: TrainShape = field(default_factory=TrainShape)
    train: schema(TrainOptions) = field(default_factory=lambda: _default(TrainOptions))


@dataclass
class TrainSegmentationCommand:
    """``nanoshape train-segmentation``: train the particle detector (a U-Net over an image pyramid).

    Attributes:
      output: the run directory (options.json, metrics.jsonl, checkpoints/, model/,
        test.json). Rerunning into the same directory resumes from its newest checkpoint.
      data: folders of annotated micrographs, each with images/ and masks/ (instance masks
        of the same stems: 0 = background, one integer per particle).
      split: which of their micrographs to train on: ``train`` (all but the validation
        part, see nanoshape.evaluate.is_validation), ``fit`` (also without the development
        part) or ``all``. test.json scores the validation part (and the development part
        when it was left out) beside rendered evaluation scenes.
      rendered: micrographs rendered by nanoshape to train on beside the annotated ones.
      evaluation_scenes: rendered evaluation micrographs of each kind (plain, hard) scored in test.json.
      train: the training options (steps, batch, patch size, zoom ranges, architecture).
    """

    output: str = "nanoshape-segmentation"
    data: list[str] = field(default_factory=list)
    split: str = "train"
    rendered: int = 300
    evaluation_scenes: int = 12
    train: schema(SegTrainOptions) = field(default_factory=lambda: _default(SegTrainOptions))


#: Command name -> schema; ``register`` stores each as ``<name>_schema`` in the ConfigStore.
COMMAND_SCHEMAS: dict[str, type] = {"render": RenderCommand, "analyze": AnalyzeCommand, "evaluate": EvaluateCommand, "train": TrainCommand,
                                   "classify": ClassifyCommand, "train-segmentation": TrainSegmentationCommand,
                                   "compare": CompareCommand}


def register() -> None:
    """Store every command schema in Hydra's ConfigStore (idempotent)."""
    store = ConfigStore.instance()
    for name, command_schema in COMMAND_SCHEMAS.items():
        store.store(name=f"{name}_schema", node=command_schema)


def compose(command: str, overrides: list[str]) -> DictConfig:
    """Compose ``configs/<command>.yaml`` with ``key=value`` overrides into a validated config."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    register()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="nanoshape.configs", version_base=None):
        return hydra_compose(config_name=command, overrides=list(overrides))
