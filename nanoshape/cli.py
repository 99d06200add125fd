"""The ``nanoshape`` command line: ``nanoshape <command> key=value ...`` (Hydra overrides).

The command line parses and validates the configuration first, imports the heavy
libraries after, makes one library call per stage and owns the progress bar; the library
never prints.

Exit statuses (README, "Run directories"): 0 every micrograph analysed (or the command done);
1 the command stopped with a message (an input, output or run-directory problem); 2 an
invalid command or option; 3 the run finished but skipped some files (summary.json lists
each with its reason); 4 the run finished without analysing any micrograph.
"""

from __future__ import annotations

import os
import sys
import inspect
from pathlib import Path
from typing import Callable

__all__ = ["main", "EXIT_OK", "EXIT_STOPPED", "EXIT_USAGE", "EXIT_SOME_SKIPPED", "EXIT_NOTHING_ANALYSED"]

EXIT_OK = 0
EXIT_STOPPED = 1
EXIT_USAGE = 2
EXIT_SOME_SKIPPED = 3
EXIT_NOTHING_ANALYSED = 4


def _run_render(cfg) -> int:
    import jax
    import pandas as pd

    from nanoshape.config import to_options
    from nanoshape.family import get_family
    from nanoshape.render import Imaging

    try:
        family = get_family(cfg.shape.family)
    except ValueError as error:
        raise SystemExit(f"nanoshape render: {error}") from None
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    imaging = to_options(Imaging, cfg.imaging)
    key = jax.random.key(cfg.seed)
    if cfg.mode == "sheet":
        from nanoshape.trainingdata import shape_sheet
        from nanoshape.report import save_sheet

        prior = to_options(family.prior_type, cfg.prior if family.name == "superellipse" else cfg[f"{family.name}_prior"])
        images, shapes, scales = jax.jit(
            shape_sheet, static_argnames=("n", "prior", "imaging", "size_px", "silhouettes")
        )(key, cfg.n_shapes, prior=prior, imaging=imaging, size_px=cfg.size_px, silhouettes=cfg.silhouettes)
        table = pd.DataFrame({"index": range(cfg.n_shapes), **{name: getattr(shapes, name) for name in family.columns},
                              "scale_px": scales})
        table.to_csv(output / "sheet.csv", index=False)
        save_sheet(jax.device_get(images), table, output / "sheet.png", columns=cfg.columns)
        print(f"nanoshape render: {cfg.n_shapes} shapes -> {output / 'sheet.png'} and {output / 'sheet.csv'}")
        return EXIT_OK
    if cfg.mode == "scene":
        from tqdm import tqdm

        from nanoshape.examples import write_scene
        from nanoshape.scene import POLYGON_POPULATIONS, POPULATIONS, SceneOptions

        known = POPULATIONS | POLYGON_POPULATIONS
        unknown = [name for name in cfg.populations if name not in known]
        if unknown:
            raise SystemExit(f"nanoshape render: unknown population(s) {unknown}; choose from {sorted(known)}")
        options = SceneOptions(
            height_px=cfg.scene_size_px, width_px=cfg.scene_size_px, pixel_size_nm=cfg.pixel_size_nm,
            n_particles=cfg.scene_particles, populations=tuple(known[name] for name in cfg.populations),
            imaging=imaging,
        )
        for i in tqdm(range(cfg.n_scenes), desc="rendering scenes", unit="scene"):
            write_scene(jax.random.fold_in(key, i), options, output, f"scene_{i:03d}")
        print(f"nanoshape render: {cfg.n_scenes} micrographs with labels and truth tables -> {output}")
        return EXIT_OK
    raise SystemExit(f"nanoshape render: mode must be 'sheet' or 'scene', got {cfg.mode!r}")


def _run_classify(cfg) -> int:
    if not cfg.model:
        raise SystemExit("nanoshape classify: give model=<run directory of an earlier nanoshape analyze>")
    from nanoshape.groups import load_classifier

    path = Path(cfg.model)
    model_run = path if path.is_dir() else path.parent.parent
    if path.is_dir():
        path = path / "groups" / "classifier.skops"
    try:
        load_classifier(path)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"nanoshape classify: {error}") from None
    if os.path.abspath(cfg.output) == os.path.abspath(model_run):
        raise SystemExit(f"nanoshape classify: output={cfg.output} is the run directory of the model {cfg.model}; "
                         f"its results would be replaced. Give another output= (the default is nanoshape-classified)")
    return _run_analyze(cfg, command="classify", classifier=str(path))


class _Bars:
    """The CLI's progress display: micrographs done, and the stage in hand (tqdm, on stderr)."""

    #: stages of the run as a whole (their item goes after the bar, not into its label)
    _END_STAGES = ("gather", "group", "classifier", "report")

    def __init__(self, n_files: int):
        from tqdm import tqdm

        self.files = tqdm(total=n_files, desc="analysing", unit="micrograph", position=0)
        self.stage = tqdm(total=1, desc="starting", position=1, leave=False,
                          bar_format="{desc} {bar} {n_fmt}/{total_fmt} {postfix}")

    def __call__(self, event) -> None:
        if event.stage == "micrographs":
            self.files.update(event.done - self.files.n)
            self.files.set_postfix_str(event.item[-40:])
            return
        at_end = event.stage in self._END_STAGES
        label = event.stage if at_end or not event.item else f"{event.item[-30:]}: {event.stage}"
        if self.stage.desc != label or self.stage.total != max(event.total, 1):
            self.stage.reset(total=max(event.total, 1))
            self.stage.set_description_str(label, refresh=False)
        self.stage.n = event.done
        self.stage.set_postfix_str(event.item[-30:] if at_end else "", refresh=False)
        self.stage.refresh()  # stages are few and slow: show each at once

    def close(self) -> None:
        self.stage.close()
        self.files.close()


def _run_analyze(cfg, command: str = "analyze", classifier: str = "") -> int:
    from omegaconf import OmegaConf

    from nanoshape.config import to_options
    from nanoshape.examples import bundled_examples_dir
    from nanoshape.io import PIXEL_SIZE_NM_RANGE, find_inputs
    from nanoshape.pipeline import AnalyzeOptions, run_analysis
    from nanoshape.rundir import RunDirectoryError, check_output
    from nanoshape.schedule import DistributeOptions

    low, high = PIXEL_SIZE_NM_RANGE
    if cfg.pixel_size_nm is not None and not (low <= cfg.pixel_size_nm <= high):
        raise SystemExit(f"nanoshape {command}: pixel_size_nm must be a number of nm from {low:g} to {high:g}, "
                         f"got {cfg.pixel_size_nm}")
    source = cfg.input or str(bundled_examples_dir())
    if not cfg.input:
        print(f"nanoshape {command}: no input given; analysing the bundled examples in {source}")
    try:
        n_files = len(find_inputs(source)[0])
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"nanoshape {command}: {error}") from None
    if n_files == 0:
        raise SystemExit(f"nanoshape {command}: no micrographs found in {source!r}")
    try:  # a bad option stops the run before anything is written
        options = to_options(AnalyzeOptions, cfg, classifier=classifier)
    except (ValueError, TypeError) as error:
        raise SystemExit(f"nanoshape {command}: {error}") from None
    output = Path(cfg.output)
    try:  # a path that cannot take the results stops the run before any micrograph is read
        check_output(output)
    except RunDirectoryError as error:
        raise SystemExit(f"nanoshape {command}: {error}") from None
    from nanoshape.xla_cache import enable_compilation_cache

    enable_compilation_cache(str(cfg.compilation_cache))
    if options.shape.cnn:
        from nanoshape.cnn import load_model

        try:  # fail before the run, not once per micrograph
            model = load_model(options.shape.model or None)
        except (FileNotFoundError, ValueError) as error:
            raise SystemExit(f"nanoshape {command}: cannot load the shape model: {error} "
                             "(shape.cnn=false analyses without shape parameters)") from None
        if model.options.family != options.shape.family:
            raise SystemExit(f"nanoshape {command}: the shape model {options.shape.model or '(shipped)'} is of the "
                             f"{model.options.family} family, not shape.family={options.shape.family}: train one with "
                             f"`nanoshape train shape.family={options.shape.family}` and give shape.model=<its directory>")
    bars = _Bars(n_files)
    try:
        summary = run_analysis(source, output, options, distribute=to_options(DistributeOptions, cfg),
                               progress=bars, overwrite=cfg.overwrite, config_yaml=OmegaConf.to_yaml(cfg))
    except RunDirectoryError as error:
        raise SystemExit(f"nanoshape {command}: {error}") from None
    except OSError as error:  # writing the run's tables or report: a full disk, a vanished folder
        where = f" {error.filename}" if error.filename else ""
        raise SystemExit(f"nanoshape {command}: could not write{where}: {error.strerror or error}. The micrographs "
                         f"finished so far are kept in {output}; free the space (or fix the folder) and run the same "
                         f"command again to finish") from None
    finally:
        bars.close()
    unit = "nm" if "major_axis_mean_nm" in summary else "px"
    print(f"nanoshape {command}: {summary['particles']} particles in {summary['micrographs_analysed']} micrograph(s)"
          + (f", {summary['micrographs_resumed']} resumed" if summary["micrographs_resumed"] else ""))
    if f"major_axis_mean_{unit}" in summary:
        print(f"  major axis {summary[f'major_axis_mean_{unit}']:.3g} +/- {summary[f'major_axis_std_{unit}']:.2g} {unit}"
              f" (polydispersity ratio sd/mean {summary[f'cv_major_axis_{unit}']:.1%})")
    for skip in summary["files_skipped"]:
        print(f"  skipped {skip['file']}: {skip['reason']}")
    for warning in summary["warnings"]:
        print(f"  warning: {warning}")
    if summary.get("groups"):
        print(f"  {summary['groups']} shape groups ({summary['grouping']['method']} on {summary['grouping']['dataset']})"
              + (f", stability {summary['grouping']['stability_halves_ari']:.2f} (ARI of halves)"
                 if isinstance(summary["grouping"].get("stability_halves_ari"), float)
                 and summary["grouping"]["stability_halves_ari"] == summary["grouping"]["stability_halves_ari"] else "")
              + (f"; classifier agrees with them on {summary['classifier']['test_accuracy']:.1%} of held-out particles"
                 if "classifier" in summary else ""))
    print(f"  results: {output / 'particles.csv'}, overlays in {output / 'overlays'}, summary in {output / 'summary.json'}")
    if (output / "report.html").exists():
        print(f"  report: {output / 'report.html'}")
    if summary["micrographs_analysed"] == 0:
        print(f"nanoshape {command}: no micrograph could be analysed (exit status {EXIT_NOTHING_ANALYSED})", file=sys.stderr)
        return EXIT_NOTHING_ANALYSED
    if summary["files_skipped"]:
        print(f"nanoshape {command}: {len(summary['files_skipped'])} file(s) skipped (exit status {EXIT_SOME_SKIPPED})",
              file=sys.stderr)
        return EXIT_SOME_SKIPPED
    return EXIT_OK


def _run_evaluate(cfg) -> int:
    import json

    from nanoshape.evaluate import evaluate_folder

    if not cfg.predictions or not cfg.masks:
        raise SystemExit("nanoshape evaluate: give predictions=<run directory or labels folder> and masks=<folder>")
    try:
        scores = evaluate_folder(cfg.predictions, cfg.masks, iou_threshold=cfg.iou_threshold)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"nanoshape evaluate: {error}") from None
    output = Path(cfg.output) if cfg.output else Path(cfg.predictions) / "evaluation.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(scores, indent=2, allow_nan=True))
    pooled = scores["pooled"]
    if pooled["n_images"] == 0:
        raise SystemExit(f"nanoshape evaluate: no image has both a prediction and a mask "
                         f"(predictions only: {scores['only_in_predictions'][:5]}, masks only: {scores['only_in_masks'][:5]})")
    print(f"nanoshape evaluate: {pooled['n_images']} image(s), {pooled['n_true']} particles in the masks, "
          f"{pooled['n_pred']} found")
    print(f"  at IoU >= {pooled['iou_threshold']}: precision {pooled['precision']:.3f}, recall {pooled['recall']:.3f}, "
          f"F1 {pooled['f1']:.3f}; mean IoU of matches {pooled['mean_iou']:.3f}; count error {pooled['count_error']:+d}")
    print(f"  per image: median F1 {pooled['median_image_f1']:.3f}, largest found/annotated ratio "
          f"{pooled['max_count_ratio']:.2f}")
    by_name = {row["image"]: row for row in scores["images"]}
    print("  worst images (F1, annotated, found): " + ", ".join(
        f"{name} ({by_name[name]['f1']:.2f}, {by_name[name]['n_true']}, {by_name[name]['n_pred']})" for name in scores["worst"]))
    for skip in scores["skipped"]:
        print(f"  skipped {skip['image']}: {skip['reason']}")
    print(f"  scores: {output}")
    return EXIT_OK


def _run_compare(cfg) -> int:
    from nanoshape.compare import compare_runs

    try:
        tables = compare_runs(list(cfg.runs), cfg.output, by=cfg.by, seed=cfg.seed, n_boot=cfg.n_boot, level=cfg.level)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"nanoshape compare: {error}") from None
    size, unit = tables.size, tables.unit
    print(f"nanoshape compare: {len(tables.samples)} samples, {int(tables.samples.particles.sum())} particles "
          f"({size}, {tables.level:.0%} bootstrap intervals)")
    for _, row in tables.samples.iterrows():
        print(f"  {row['sample']}: {int(row.particles)} particles in {int(row.micrographs)} micrograph(s); mean "
              f"{row[f'mean_{size}']:.4g} {unit} [{row[f'mean_{size}_ci_low']:.4g}, {row[f'mean_{size}_ci_high']:.4g}], "
              f"median {row[f'median_{size}']:.4g} [{row[f'median_{size}_ci_low']:.4g}, {row[f'median_{size}_ci_high']:.4g}]")
    for _, pair in tables.pairs.iterrows():
        print(f"  {pair.sample_a} vs {pair.sample_b}: mean {pair.relative_difference_mean:+.1%}, "
              f"Mann-Whitney p (Holm) {pair.mannwhitney_p_holm:.2g} (rank-biserial {pair.rank_biserial:+.2f}), "
              f"KS p (Holm) {pair.ks_p_holm:.2g} (D {pair.ks_statistic:.2f})"
              + (f", groups chi-square p (Holm) {pair.chi2_p_holm:.2g} (V {pair.cramers_v:.2f})"
                 if "chi2_p_holm" in pair and pair.chi2_p_holm == pair.chi2_p_holm else ""))
    if len(tables.pairs):
        print(f"  p-values corrected with Holm's method within each test over the {len(tables.pairs)} pair(s); "
              f"{cfg.output}/compare.json says how every number was made")
    print(f"  tables and figure: {cfg.output} (samples.csv, sample_pairs.csv, micrographs.csv, samples.png)")
    return EXIT_OK


def _run_train(cfg) -> int:
    import json

    from tqdm import tqdm

    from nanoshape.config import to_options
    from nanoshape.training import TrainOptions, run_training

    try:
        options = to_options(TrainOptions, cfg.train).with_family(cfg.shape.family)
    except ValueError as error:
        raise SystemExit(f"nanoshape train: {error}") from None
    output = Path(cfg.output)
    with tqdm(total=options.steps, desc="training", unit="step") as bar:
        def progress(step, record):
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", img_s=f"{record['images_per_s']:.0f}")

        try:
            model_dir = run_training(options, output, progress=progress)
        except ValueError as error:
            raise SystemExit(f"nanoshape train: {error}") from None
    figures = json.loads((output / "test.json").read_text())
    print(f"nanoshape train: model saved to {model_dir}")
    family = options.model.shape_family
    first = family.continuous[0]
    print(f"  test set ({figures['n']} rendered particles): median shape Jaccard {figures['jaccard_median']:.3f} "
          f"(10th percentile {figures['jaccard_p10']:.3f}), {family.discrete} exact {figures['d_exact_fraction']:.1%}, "
          f"median |log {first.name} error| {figures[f'median_abs_error_{first.head}']:.3f}")
    crop_args = f" crop.context={options.crop.context:g}" if options.crop.context > 0 else ""
    family_args = f" shape.family={family.name}" if family.name != "superellipse" else ""
    print(f"  use it with: nanoshape analyze shape.model={model_dir}{family_args}{crop_args} ...")
    return EXIT_OK


def _run_train_segmentation(cfg) -> int:
    import json

    from tqdm import tqdm

    from nanoshape.config import to_options
    from nanoshape.segtrain import SegTrainOptions, run_segmentation_training

    try:
        options = to_options(SegTrainOptions, cfg.train)
    except (ValueError, TypeError) as error:
        raise SystemExit(f"nanoshape train-segmentation: {error}") from None
    folders = [Path(folder) for folder in cfg.data]
    for folder in folders:
        if not (folder / "images").is_dir() or not (folder / "masks").is_dir():
            raise SystemExit(f"nanoshape train-segmentation: {folder} needs images/ and masks/ folders (same stems)")
    output = Path(cfg.output)
    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int, postfix: str = "") -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="step" if stage == "training" else "image")
        bar.update(done - bar.n)
        if postfix:
            bar.set_postfix_str(postfix)
        if done >= total:
            bar.close()

    try:
        model_dir = run_segmentation_training(folders, output, options, split=cfg.split, rendered=cfg.rendered,
                                              evaluation_scenes_per_kind=cfg.evaluation_scenes, progress=progress)
    except ValueError as error:
        raise SystemExit(f"nanoshape train-segmentation: {error}") from None
    figures = json.loads((output / "test.json").read_text())
    print(f"nanoshape train-segmentation: model saved to {model_dir}")
    for name, pooled in figures.items():
        print(f"  {name} ({pooled['n_images']} images, {pooled['n_true']} particles): F1 {pooled['f1']:.3f}, "
              f"precision {pooled['precision']:.3f}, recall {pooled['recall']:.3f}, "
              f"median per-image F1 {pooled['median_image_f1']:.3f}")
    print(f"  use it with: nanoshape analyze segment.model={model_dir} ...")
    return EXIT_OK


#: name -> (one-line description, runner). Runners import their heavy modules themselves.
COMMANDS: dict[str, tuple[str, Callable]] = {
    "analyze": ("find, separate and measure every particle of some micrographs", _run_analyze),
    "classify": ("sort the particles of new micrographs into the groups of an earlier run's classifier", _run_classify),
    "evaluate": ("score label images against hand-drawn instance masks (precision, recall, F1)", _run_evaluate),
    "train": ("train the shape CNN on rendered particles (checkpoints, metrics, test-set figures)", _run_train),
    "train-segmentation": ("train the particle detector on annotated and rendered micrographs", _run_train_segmentation),
    "render": ("render a sheet of shapes from the prior (PNG + CSV), or example micrographs", _run_render),
    "compare": ("compare run directories as samples: sizes with 95 % intervals, pairwise tests", _run_compare),
}


def _usage() -> str:
    lines = ["usage: nanoshape <command> [input] [key=value ...] [-m] [--cfg job] [--help]", "", "commands:"]
    lines += [f"  {name:<19} {doc}" for name, (doc, _) in COMMANDS.items()]
    lines += ["", "Options are Hydra overrides (key=value; --key value works too); `nanoshape <command> --help` lists",
              "them with their defaults and meaning. `-m key=a,b` sweeps (one run directory per job, <output>/<n>);",
              "`--cfg job` prints the composed options without running. analyze and classify take the input",
              "(a micrograph, a folder or a quoted glob) as their first word.",
              "Exit statuses: 0 done, 1 stopped with a message, 2 invalid command or option, 3 some files skipped,",
              "4 no micrograph analysed (a sweep exits with the largest of its jobs')."]
    return "\n".join(lines)


#: command -> the option its plain words give (``nanoshape analyze img.png`` is ``input=img.png``);
#: a list option takes every word (``"compare": "runs"`` would give ``runs=[a,b]``), another one word
_POSITIONAL = {"analyze": "input", "classify": "input", "compare": "runs"}
#: Hydra's own flags that take a value (``--cfg job``); the others stand alone
_HYDRA_FLAGS_WITH_VALUE = ("--cfg", "-c", "--package", "-p", "--info", "-i", "--config-path", "-cp", "--config-name",
                           "-cn", "--config-dir", "-cd", "--experimental-rerun", "--shell-completion", "-sc")
_HYDRA_FLAGS = ("-m", "--multirun", "--run", "-r", "--resolve", "--hydra-help")
#: in a sweep, where each job's ``output`` goes inside its job directory (evaluate writes one JSON file)
_SWEEP_OUTPUT = {"evaluate": "/evaluation.json"}


class _UsageError(Exception):
    """An invalid command line; ``str()`` says what is wrong and what to type."""


def _quote(value: str) -> str:
    """A Hydra override value holding ``value`` literally (commas, globs, spaces, quotes)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _split_arguments(command: str, args: list[str]) -> tuple[list[str], list[str], bool]:
    """Sort a command's arguments into (Hydra flags, overrides, wants_help).

    ``--key value`` and ``--key=value`` become ``key=value`` for the command's own keys
    (dashes read as underscores), and a first word that is neither becomes ``input=`` for
    analyze and classify.
    """
    from nanoshape.config import option_keys, suggest

    keys = set(option_keys(command))
    flags: list[str] = []
    overrides: list[str] = []
    positional: list[str] = []
    wants_help = False
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg in ("-h", "--help"):
            wants_help = True
        elif arg in _HYDRA_FLAGS:
            flags.append(arg)
        elif arg.split("=", 1)[0] in _HYDRA_FLAGS_WITH_VALUE:
            flags.append(arg)
            if "=" not in arg and arg not in ("--info", "-i") and i < len(args):
                flags.append(args[i])
                i += 1
            elif arg in ("--info", "-i") and i < len(args) and not args[i].startswith("-") and "=" not in args[i]:
                flags.append(args[i])
                i += 1
        elif arg.startswith("--") and len(arg) > 2:
            name, has_value, value = arg[2:].partition("=")
            key = name if name in keys else name.replace("-", "_")
            if key not in keys:
                close = suggest(command, key)
                raise _UsageError(f"unknown option {arg!r}" + (f"; did you mean {' or '.join(close)}?" if close else "")
                                  + " `--help` lists the options")
            if not has_value:
                if i >= len(args):
                    raise _UsageError(f"{arg} needs a value ({key}=<value>)")
                value = args[i]
                i += 1
            overrides.append(f"{key}={_quote(value)}" if key in ("input", "output") else f"{key}={value}")
        elif arg.startswith("-") and "=" not in arg:
            raise _UsageError(f"unknown flag {arg!r}; options are key=value (`--help` lists them)")
        elif "=" in arg or arg.startswith(("+", "~")):
            overrides.append(arg)
        else:
            positional.append(arg)
    if positional:
        overrides = _positional_overrides(command, positional, overrides)
    return flags, overrides, wants_help


def _positional_overrides(command: str, words: list[str], overrides: list[str]) -> list[str]:
    """The overrides with the command's plain words given to its positional option (``_POSITIONAL``)."""
    from nanoshape.config import COMMAND_SCHEMAS

    key = _POSITIONAL.get(command)
    if key is None:
        raise _UsageError(f"{words[0]!r} is not an option; options are key=value (`--help` lists them)")
    if any(o.split("=", 1)[0] == key for o in overrides):
        raise _UsageError(f"{key} is given twice ({words[0]!r} and {key}=)")
    if isinstance(getattr(COMMAND_SCHEMAS[command](), key), list):
        return [f"{key}=[{','.join(_quote(word) for word in words)}]", *overrides]
    if len(words) > 1:
        raise _UsageError(f"{len(words)} inputs given ({', '.join(words[:3])}{', ...' if len(words) > 3 else ''}); "
                          f"give one file, folder or glob (quote a glob so the shell does not expand it: 'data/*.tif')")
    return [f"{key}={_quote(words[0])}", *overrides]


def _check_overrides(command: str, overrides: list[str]) -> list:
    """Parse the overrides and refuse unknown keys (naming the closest ones); returns them parsed.

    ``hydra.*`` settings and ``hydra/<group>=<option>`` choices (a launcher, a sweeper) go to
    Hydra. ``+key`` / ``++key`` / ``~key`` (adding or removing keys) are refused: every option
    exists already.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    from nanoshape.config import option_keys, suggest

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as error:  # Hydra's grammar errors quote the override
        raise _UsageError(str(error).strip().splitlines()[0] + " (values with spaces, commas or brackets need quotes: "
                          "key='a b')") from None
    keys = set(option_keys(command))
    for override in parsed:
        key = override.key_or_group
        if key in ("hydra.run.dir", "hydra.sweep.dir"):
            raise _UsageError(f"{override.input_line!r}: output= says where the results go (a sweep's jobs go into "
                              f"<output>/<job number>; hydra.sweep.subdir names them)")
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            continue
        if override.type != OverrideType.CHANGE:
            raise _UsageError(f"{override.input_line!r}: every option of nanoshape exists already; set it with "
                              f"{key}=<value> (adding or deleting keys with +, ++ or ~ would do nothing). `--help` lists "
                              f"the options")
        if key not in keys:
            close = suggest(command, key)
            raise _UsageError(f"no option {key!r}" + (f"; did you mean {' or '.join(close)}?" if close else "")
                              + " `--help` lists the options")
    return parsed


def _check_values(command: str, parsed: list) -> None:
    """Compose the configuration with every value given (each value of a sweep once), so that a
    wrong type stops the command with its name before Hydra runs anything."""
    from nanoshape.config import compose

    task = [o for o in parsed if not (o.key_or_group == "hydra" or o.key_or_group.startswith(("hydra.", "hydra/")))]
    firsts = []
    for override in task:
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        firsts.append(values)
    base = [f"{o.get_key_element()}={values[0] if o.is_sweep_override() else o.get_value_element_as_str()}"
            for o, values in zip(task, firsts)]
    variants = [base]
    for i, (override, values) in enumerate(zip(task, firsts)):
        for value in values[1:]:
            variants.append(base[:i] + [f"{override.get_key_element()}={value}"] + base[i + 1:])
    for overrides in variants:
        try:
            compose(command, overrides)
        except Exception as error:  # Hydra's composition errors say which override is wrong, their cause why
            cause = f": {str(error.__cause__).strip().splitlines()[0]}" if error.__cause__ else ""
            raise _UsageError(str(error).strip() + cause) from None


def _help(command: str, overrides: list[str]) -> int:
    from nanoshape.config import COMMAND_SCHEMAS, compose, describe_config

    cfg = compose(command, [o for o in overrides if not o.startswith("hydra")])
    doc = inspect.cleandoc(COMMAND_SCHEMAS[command].__doc__ or "").split("\nAttributes:")[0].strip()
    usage = f"nanoshape {command} " + (f"[{_POSITIONAL[command]}] " if command in _POSITIONAL else "") + "[key=value ...]"
    examples = _examples(command)
    if examples:
        doc += "\n\nExamples:\n" + "\n".join(examples)
    print(f"usage: {usage} [-m] [--cfg job]\n\n{doc}\n\nOptions, with their defaults (key=value; nested keys "
          f"with dots, e.g. {_example_key(command)}):\n")
    try:
        print(describe_config(command, cfg))
    except BrokenPipeError:  # `--help | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    print("\nSweeps: -m key=a,b (or range(...), choice(...)) runs one job per value in <output>/<job number>, each\n"
          "with .hydra/config.yaml and overrides.yaml. --cfg job prints the composed options without running.\n"
          "Hydra's own flags: --hydra-help.")
    return EXIT_OK


def _examples(command: str) -> list[str]:
    """The example command lines at the top of ``configs/<command>.yaml``."""
    from importlib import resources

    text = resources.files("nanoshape.configs").joinpath(f"{command}.yaml").read_text()
    lines = [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#   ")]
    return [("  " if line.startswith("nanoshape") else "    ") + line for line in lines]


def _example_key(command: str) -> str:
    from nanoshape.config import option_keys

    return next((key for key in option_keys(command) if "." in key), "output")


def _save_hydra_record(cfg, overrides: list[str]) -> None:
    """A single run's options and overrides in ``<output>/.hydra/``, as Hydra keeps them for each
    job of a sweep; written once the command has accepted its options and finished (Hydra
    would create the folder before the options are checked)."""
    from omegaconf import OmegaConf

    output = Path(cfg.output)
    if not output.is_dir():  # evaluate writes one file; a run that stopped may have no folder
        return
    record = output / ".hydra"
    record.mkdir(exist_ok=True)
    OmegaConf.save(cfg, record / "config.yaml", resolve=True)
    OmegaConf.save(OmegaConf.create(overrides), record / "overrides.yaml")


def _hydra_main(command: str, flags: list[str], overrides: list[str]) -> int:
    """Run a command through Hydra's own entry (``hydra.main``): single runs, sweeps (``-m``,
    any sweeper or launcher), ``--cfg``, ``--info``; returns the exit status (a sweep: its
    jobs' largest)."""
    import hydra
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from nanoshape.config import register

    statuses: list[int] = []
    crashes: list[BaseException] = []  # raised again once Hydra is done: a crash keeps its own traceback

    def job(cfg) -> None:
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode != RunMode.MULTIRUN:
            try:
                statuses.append(COMMANDS[command][1](cfg))
            except (Exception, SystemExit) as error:  # raised once Hydra has put back what it changed (logging)
                crashes.append(error)
                return
            _save_hydra_record(cfg, list(hydra_cfg.overrides.task))
            return
        OmegaConf.resolve(cfg)  # output= is this job's directory
        label = " ".join(hydra_cfg.overrides.task[:-1]) or "(defaults)"
        print(f"nanoshape {command}: sweep job {hydra_cfg.job.num} ({label}) -> {cfg.output}")
        try:
            statuses.append(COMMANDS[command][1](cfg))
        except SystemExit as stop:  # one job's problem; the sweep goes on with the others
            if stop.code not in (None, 0) and not isinstance(stop.code, int):
                print(f"nanoshape {command}: sweep job {hydra_cfg.job.num} stopped: {stop.code}", file=sys.stderr)
            statuses.append(stop.code if isinstance(stop.code, int) else EXIT_STOPPED)
        except Exception as error:  # as Hydra's own sweeper: the other jobs run, then the first failure is raised
            print(f"nanoshape {command}: sweep job {hydra_cfg.job.num} failed: {type(error).__name__}: {error}",
                  file=sys.stderr)
            crashes.append(error)

    register()
    GlobalHydra.instance().clear()
    saved_argv = sys.argv
    sys.argv = [f"nanoshape {command}", *flags, *overrides]
    try:
        hydra.main(config_path="pkg://nanoshape.configs", config_name=command, version_base=None)(job)()
    finally:
        sys.argv = saved_argv
        GlobalHydra.instance().clear()
    if crashes:
        raise crashes[0]
    return max(statuses, default=EXIT_OK)


def _sweep_overrides(command: str, parsed: list, overrides: list[str]) -> list[str]:
    """A sweep's overrides: output= becomes the sweep's folder (``hydra.sweep.dir``) and each
    job's ``output`` its own directory in it (``${hydra:runtime.output_dir}``), holding .hydra/."""
    from nanoshape.config import COMMAND_SCHEMAS

    given = [o for o in parsed if o.key_or_group == "output"]
    if given and given[0].is_sweep_override():
        raise _UsageError("output= is the sweep's folder (each job writes into <output>/<job number>); it cannot be swept")
    folder = given[0].value() if given else COMMAND_SCHEMAS[command]().output
    if not folder:
        raise _UsageError(f"give output=<folder> for a sweep of {command}")
    overrides = [o for o in overrides if o.split("=", 1)[0] != "output"] + [f"hydra.sweep.dir={_quote(str(folder))}"]
    if not any(o.key_or_group == "hydra.output_subdir" for o in parsed):
        overrides.append("hydra.output_subdir=.hydra")
    return overrides + ["output=${hydra:runtime.output_dir}" + _SWEEP_OUTPUT.get(command, "")]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nanoshape`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from nanoshape.provenance import version

        print(f"nanoshape {version()}")
        return 0
    command, args = argv[0], argv[1:]
    from nanoshape import provenance

    provenance.typed_command_line = ["nanoshape", *argv]
    if command not in COMMANDS:
        print(f"nanoshape: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return EXIT_USAGE
    try:
        flags, overrides, wants_help = _split_arguments(command, args)
        parsed = _check_overrides(command, overrides)
        if wants_help:
            return _help(command, overrides)
        _check_values(command, parsed)
        modes = [flag for flag in flags if flag in ("-m", "--multirun", "--run", "-r", "--cfg", "-c", "--info", "-i",
                                                    "--shell-completion", "-sc")]
        if len(modes) > 1:
            raise _UsageError(f"{' and '.join(modes)} exclude each other (Hydra takes one of --run, --multirun, --cfg, "
                              f"--info, --shell-completion)")
        if "-m" in flags or "--multirun" in flags:
            overrides = _sweep_overrides(command, parsed, overrides)
    except _UsageError as error:
        print(f"nanoshape {command}: invalid command line: {error}", file=sys.stderr)
        return EXIT_USAGE
    return _hydra_main(command, flags, overrides)


if __name__ == "__main__":
    sys.exit(main())
