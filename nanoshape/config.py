"""Configuration of every command: Hydra structured-config schemas, in one place.

Each stage keeps its options in a frozen, hashable dataclass beside its code (so jitted
functions can take them as static arguments and the library runs without Hydra). Those
modules import JAX, which takes seconds; the command line must not wait for it to parse
its options or print ``--help``. So the Hydra schemas are mirrors of the options classes
(same fields, types, defaults and docstrings) written out as plain dataclasses in
:mod:`nanoshape._schemas` by :func:`generate_schemas` (``python -m nanoshape.config``
rewrites it; a test fails while it differs from the options classes). This module
composes them into one schema per command, registers those in Hydra's ConfigStore, and
turns a composed config back into the frozen options (:func:`to_options`). YAML under
``configs/`` only composes the schemas. Importing it imports no JAX.
"""

import dataclasses
import difflib
import importlib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf

from nanoshape import _schemas

__all__ = ["to_options", "RenderCommand", "AnalyzeCommand", "ClassifyCommand", "EvaluateCommand", "TrainCommand",
           "TrainSegmentationCommand", "CompareCommand", "COMMAND_SCHEMAS", "OPTIONS_CLASSES", "register", "compose",
           "option_keys", "descriptions", "suggest", "describe_config", "generate_schemas"]

#: The stage options classes mirrored in :mod:`nanoshape._schemas` (nested ones are found by
#: walking these), by module. The Hydra schema of ``X`` is ``_schemas.XSchema``.
OPTIONS_CLASSES: dict[str, tuple[str, ...]] = {
    "nanoshape.render": ("Imaging",),
    "nanoshape.shape": ("ShapePrior",),
    "nanoshape.scalebar": ("ScaleBarOptions",),
    "nanoshape.segment": ("SegmentOptions",),
    "nanoshape.crop": ("CropOptions",),
    "nanoshape.pipeline": ("ShapeOptions",),
    "nanoshape.imagefit": ("ImageFitOptions",),
    "nanoshape.refine": ("RefineOptions",),
    "nanoshape.groups": ("GroupOptions",),
    "nanoshape.training": ("TrainOptions",),
    "nanoshape.segtrain": ("SegTrainOptions",),
}


def to_options(options_cls: type, node: Any, **given: Any) -> Any:
    """Build the frozen options dataclass from a composed config node, by field name (lists become tuples).

    The node may hold more keys than the class has fields (a command's whole config: its
    ``input``, ``output``, ...); they are left out. ``given`` sets fields the config does
    not hold (``classifier=`` for ``nanoshape classify``).
    """
    if isinstance(node, (DictConfig, ListConfig)):
        node = OmegaConf.to_container(node, resolve=True)
    elif dataclasses.is_dataclass(node):
        node = dataclasses.asdict(node)
    defaults = options_cls()
    kwargs = dict(given)
    for f in dataclasses.fields(options_cls):
        if f.name in given or f.name not in node:
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
class TrainShape:
    """The shape model a ``nanoshape train`` run learns (``nanoshape render`` draws).

    Attributes:
      family: the shape family (``superellipse``: eq. 1, the default; ``polygon``: rounded
        regular polygons; see nanoshape.family). Its prior is ``train.prior`` for eq. 1 and
        ``train.<family>_prior`` otherwise (``prior`` and ``<family>_prior`` in render).
    """

    family: str = "superellipse"


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
      populations: population names of the scenes (spheres, cubes, rods, triangles, stars;
        rounded polygons: polygon_triangles, polygon_squares, polygon_hexagons).
      shape: the shape family of the sheet (``shape.family=polygon``).
      prior: the shape prior of the sheet (eq. 1).
      polygon_prior: the shape prior of the sheet with ``shape.family=polygon``.
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
    shape: TrainShape = field(default_factory=TrainShape)
    prior: _schemas.ShapePriorSchema = field(default_factory=_schemas.ShapePriorSchema)
    polygon_prior: _schemas.PolygonPriorSchema = field(default_factory=_schemas.PolygonPriorSchema)
    imaging: _schemas.ImagingSchema = field(default_factory=_schemas.ImagingSchema)

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
    calibration: _schemas.ScaleBarOptionsSchema = field(default_factory=_schemas.ScaleBarOptionsSchema)
    overlays: bool = True
    save_crops: bool = False
    workers: int = -1
    scheduler: str = ""
    max_megapixels: float = 300.0
    segment: _schemas.SegmentOptionsSchema = field(default_factory=_schemas.SegmentOptionsSchema)
    crop: _schemas.CropOptionsSchema = field(default_factory=_schemas.CropOptionsSchema)
    shape: _schemas.ShapeOptionsSchema = field(default_factory=_schemas.ShapeOptionsSchema)
    image_fit: _schemas.ImageFitOptionsSchema = field(default_factory=_schemas.ImageFitOptionsSchema)
    refine: _schemas.RefineOptionsSchema = field(default_factory=_schemas.RefineOptionsSchema)
    group: bool = True
    groups: _schemas.GroupOptionsSchema = field(default_factory=_schemas.GroupOptionsSchema)
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
    train: _schemas.TrainOptionsSchema = field(default_factory=_schemas.TrainOptionsSchema)


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
    train: _schemas.SegTrainOptionsSchema = field(default_factory=_schemas.SegTrainOptionsSchema)


#: Command name -> schema; ``register`` stores each as ``<name>_schema`` in the ConfigStore.
COMMAND_SCHEMAS: dict[str, type] = {"render": RenderCommand, "analyze": AnalyzeCommand, "evaluate": EvaluateCommand,
                                   "train": TrainCommand, "classify": ClassifyCommand,
                                   "train-segmentation": TrainSegmentationCommand, "compare": CompareCommand}


def register() -> None:
    """Store every command schema in Hydra's ConfigStore where it is not there yet: the store is a
    process-wide singleton that GlobalHydra.clear() leaves alone, and storing the seven schemas
    again cost ~0.1 s, twice or three times per command."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, command_schema in COMMAND_SCHEMAS.items():
        if f"{name}_schema.yaml" not in store.repo:
            store.store(name=f"{name}_schema", node=command_schema)


def compose(command: str, overrides: list[str]) -> DictConfig:
    """Compose ``configs/<command>.yaml`` with ``key=value`` overrides into a validated config
    (without Hydra's own ``hydra`` node)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="nanoshape.configs", version_base=None):
            return hydra_compose(config_name=command, overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


# ---------------------------------------------------------------- keys and their descriptions

def _field_schema(schema_cls: type, name: str) -> Optional[type]:
    """The schema class of a nested field, or None for a leaf."""
    for f in dataclasses.fields(schema_cls):
        if f.name == name:
            return f.type if isinstance(f.type, type) and dataclasses.is_dataclass(f.type) else None
    raise KeyError(name)


def option_keys(command: str) -> list[str]:
    """Every key of a command, dotted (``segment.method``), nested groups included (``segment``)."""
    def walk(schema_cls: type, prefix: str) -> list[str]:
        keys = []
        for f in dataclasses.fields(schema_cls):
            keys.append(prefix + f.name)
            nested = _field_schema(schema_cls, f.name)
            if nested is not None:
                keys += walk(nested, prefix + f.name + ".")
        return keys

    return walk(COMMAND_SCHEMAS[command], "")


_ATTRIBUTE = re.compile(r"^(\w+(?:\s*,\s*\w+)*):\s*(.*)$")


def descriptions(schema_cls: type) -> dict[str, str]:
    """Each field's description from the ``Attributes:`` section of a schema's docstring.

    An entry names one field or several (``validation_size, validation_seed: ...``); its
    continuation lines are indented further.
    """
    doc = (schema_cls.__doc__ or "").expandtabs()
    lines = doc.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return {}
    found: dict[str, str] = {}
    names: list[str] = []
    indent = None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        this_indent = len(line) - len(line.lstrip())
        if indent is None:
            indent = this_indent
        if this_indent < indent:
            break
        match = _ATTRIBUTE.match(line.strip()) if this_indent == indent else None
        if match:
            names = [name.strip() for name in match.group(1).split(",")]
            for name in names:
                found[name] = match.group(2).strip()
        else:
            for name in names:
                found[name] = (found[name] + " " + line.strip()).strip()
    return found


def _node_descriptions(command: str) -> dict[str, str]:
    """Dotted key -> description, for every key of a command."""
    result: dict[str, str] = {}

    def walk(schema_cls: type, prefix: str) -> None:
        described = descriptions(schema_cls)
        for base in schema_cls.__mro__[1:]:  # ClassifyCommand inherits AnalyzeCommand's keys
            if dataclasses.is_dataclass(base):
                described = {**descriptions(base), **described}
        for f in dataclasses.fields(schema_cls):
            if f.name in described:
                result[prefix + f.name] = described[f.name]
            nested = _field_schema(schema_cls, f.name)
            if nested is not None:
                walk(nested, prefix + f.name + ".")
        for f in dataclasses.fields(schema_cls):  # a field explained inside another's entry
            if prefix + f.name not in result:
                host = next((name for name, text in described.items() if f"``{f.name}``" in text), None)
                if host is not None:
                    result[prefix + f.name] = f"see {prefix + host}: {described[host]}"

    walk(COMMAND_SCHEMAS[command], "")
    return result


def suggest(command: str, key: str) -> list[str]:
    """The command's keys closest to a misspelled one (``pixelsize`` -> ``pixel_size_nm``)."""
    keys = option_keys(command)
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    last = key.rsplit(".", 1)[-1]
    by_leaf: dict[str, list[str]] = {}
    for full in keys:
        by_leaf.setdefault(full.rsplit(".", 1)[-1], []).append(full)
    for leaf in difflib.get_close_matches(last, list(by_leaf), n=3, cutoff=0.75):
        close += [full for full in by_leaf[leaf] if full not in close]
    return close[:3]


def describe_config(command: str, cfg: DictConfig, width: int = 100) -> str:
    """The composed options as YAML, each key preceded by its description as a comment."""
    import textwrap

    described = _node_descriptions(command)
    out: list[str] = []

    def walk(node: DictConfig, prefix: str, depth: int) -> None:
        pad = "  " * depth
        for name in node:
            key = prefix + str(name)
            text = described.get(key, "")
            if text:
                out.extend(textwrap.wrap(text, width=width, initial_indent=pad + "# ", subsequent_indent=pad + "# "))
            value = node._get_node(name)
            if isinstance(value, DictConfig):
                out.append(f"{pad}{name}:")
                walk(value, key + ".", depth + 1)
            else:
                rendered = OmegaConf.to_yaml({str(name): OmegaConf.to_container(value) if isinstance(value, ListConfig)
                                              else value._value()}).rstrip()
                out.extend(pad + line for line in rendered.splitlines())

    walk(cfg, "", 0)
    return "\n".join(out)


# ---------------------------------------------------------------- the generated light schemas

_GENERATED_HEADER = '''"""Hydra schemas of the stage options (generated: do not edit).

Plain mirrors of the frozen options dataclasses of the stage modules (fields, types,
defaults, docstrings), so that the command line parses its options and prints ``--help``
without importing JAX. Rewrite with ``python -m nanoshape.config`` after changing an
options class; tests/test_config.py fails while this file differs from them.
"""

from dataclasses import dataclass, field
from typing import Any, Optional
'''


def _type_source(annotation: Any) -> str:
    """Python source of a field annotation that OmegaConf understands (``X | None`` -> Optional)."""
    if annotation is type(None):
        return "None"
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return f"Optional[{_type_source(args[0])}]" if len(args) == 1 else "Any"
    if annotation is Any:
        return "Any"
    if annotation is Ellipsis:
        return "..."
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, dict):
        return f"{origin.__name__}[{', '.join(_type_source(a) for a in typing.get_args(annotation))}]"
    if annotation in (str, int, float, bool):
        return annotation.__name__
    if dataclasses.is_dataclass(annotation):
        return annotation.__name__ + "Schema"
    raise TypeError(f"no Hydra schema type for the annotation {annotation!r}")


def _value_source(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f'float("{value}")'
    if isinstance(value, tuple):
        inner = ", ".join(_value_source(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(_value_source(v) for v in value) + "]"
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    raise TypeError(f"no source for the default {value!r}")


def _instance_source(value: Any) -> str:
    """Source building the schema of a nested default, naming only what differs from its class's defaults."""
    defaults = type(value)()
    args = []
    for f in dataclasses.fields(value):
        item, default = getattr(value, f.name), getattr(defaults, f.name)
        if item != default:
            args.append(f"{f.name}={_instance_source(item) if dataclasses.is_dataclass(item) else _value_source(item)}")
    return f"{type(value).__name__}Schema({', '.join(args)})"


def generate_schemas() -> str:
    """The source of :mod:`nanoshape._schemas`, from the options classes (imports them, and so JAX)."""
    ordered: list[type] = []

    def visit(cls: type) -> None:
        if cls in ordered:
            return
        for f in dataclasses.fields(cls):
            default = getattr(cls(), f.name)
            if dataclasses.is_dataclass(default):
                visit(type(default))
        ordered.append(cls)

    for module, names in OPTIONS_CLASSES.items():
        for name in names:
            visit(getattr(importlib.import_module(module), name))
    blocks = []
    for cls in ordered:
        hints = typing.get_type_hints(cls)
        defaults = cls()
        doc = (cls.__doc__ or "").replace("\\", "\\\\").replace('"""', "'''")
        lines = ["@dataclass", f"class {cls.__name__}Schema:", f'    """{doc}"""', ""]
        for f in dataclasses.fields(cls):
            value = getattr(defaults, f.name)
            if dataclasses.is_dataclass(value):
                factory = _instance_source(value)
                factory = factory.removesuffix("()") if factory.endswith("Schema()") else f"lambda: {factory}"
                lines.append(f"    {f.name}: {type(value).__name__}Schema = field(default_factory={factory})")
            else:
                lines.append(f"    {f.name}: {_type_source(hints[f.name])} = {_value_source(value)}")
        blocks.append("\n".join(lines))
    return _GENERATED_HEADER + "\n\n" + "\n\n\n".join(blocks) + "\n"


def _schemas_path() -> Path:
    return Path(__file__).with_name("_schemas.py")


if __name__ == "__main__":
    _schemas_path().write_text(generate_schemas())
    print(f"wrote {_schemas_path()}")
