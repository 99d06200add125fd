"""The ``nanoshape`` command line: ``nanoshape <command> key=value ...`` (Hydra overrides).

The command line parses and validates the configuration first, imports the heavy
libraries after, makes one library call per stage and owns the progress bar; the library
never prints.

Exit statuses (README, "Exit statuses"): 0 every micrograph analysed (or the command done);
1 the command stopped with a message (an input, output or run-directory problem); 2 an
invalid command or option; 3 the run finished but skipped some files (summary.json lists
each with its reason); 4 the run finished without analysing any micrograph.
"""

from __future__ import annotations

import os
import sys
import textwrap
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
    from nanoshape.render import Imaging
    from nanoshape.shape import ShapePrior

    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    imaging = to_options(Imaging, cfg.imaging)
    key = jax.random.key(cfg.seed)
    if cfg.mode == "sheet":
        from nanoshape.render import shape_sheet
        from nanoshape.report import save_sheet

        images, shapes, scales = jax.jit(
            shape_sheet, static_argnames=("n", "prior", "imaging", "size_px", "silhouettes")
        )(key, cfg.n_shapes, prior=to_options(ShapePrior, cfg.prior), imaging=imaging, size_px=cfg.size_px,
          silhouettes=cfg.silhouettes)
        table = pd.DataFrame(
            {"index": range(cfg.n_shapes), "p": shapes.p, "d": shapes.d, "l_ratio": shapes.l_ratio, "phi": shapes.phi,
             "scale_px": scales}
        )
        table.to_csv(output / "sheet.csv", index=False)
        save_sheet(jax.device_get(images), table, output / "sheet.png", columns=cfg.columns)
        print(f"nanoshape render: {cfg.n_shapes} shapes -> {output / 'sheet.png'} and {output / 'sheet.csv'}")
        return EXIT_OK
    if cfg.mode == "scene":
        from tqdm import tqdm

        from nanoshape.examples import write_scene
        from nanoshape.scene import POPULATIONS, SceneOptions

        unknown = [name for name in cfg.populations if name not in POPULATIONS]
        if unknown:
            raise SystemExit(f"nanoshape render: unknown population(s) {unknown}; choose from {sorted(POPULATIONS)}")
        options = SceneOptions(
            height_px=cfg.scene_size_px, width_px=cfg.scene_size_px, pixel_size_nm=cfg.pixel_size_nm,
            n_particles=cfg.scene_particles, populations=tuple(POPULATIONS[name] for name in cfg.populations),
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
    from nanoshape.crop import CropOptions
    from nanoshape.examples import bundled_examples_dir
    from nanoshape.io import PIXEL_SIZE_NM_RANGE, find_inputs
    from nanoshape.groups import GroupOptions
    from nanoshape.imagefit import ImageFitOptions
    from nanoshape.pipeline import AnalyzeOptions, DistributeOptions, ShapeOptions, run_analysis
    from nanoshape.refine import RefineOptions
    from nanoshape.scalebar import ScaleBarOptions
    from nanoshape.rundir import RunDirectoryError, check_output
    from nanoshape.segment import SegmentOptions

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
        options = AnalyzeOptions(
            pixel_size_nm=cfg.pixel_size_nm,
            scale_bar=str(cfg.scale_bar),
            scale_bars=str(cfg.scale_bars),
            calibration=to_options(ScaleBarOptions, cfg.calibration),
            segment=to_options(SegmentOptions, cfg.segment),
            crop=to_options(CropOptions, cfg.crop),
            save_crops=cfg.save_crops,
            overlays=cfg.overlays,
            shape=to_options(ShapeOptions, cfg.shape),
            image_fit=to_options(ImageFitOptions, cfg.image_fit),
            refine=to_options(RefineOptions, cfg.refine),
            group=cfg.group,
            groups=to_options(GroupOptions, cfg.groups),
            report=cfg.report,
            classifier=classifier,
            max_megapixels=cfg.max_megapixels,
            samples=str(cfg.samples),
        )
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
        summary = run_analysis(source, output, options, distribute=DistributeOptions(scheduler=cfg.scheduler, workers=cfg.workers),
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
    lines = ["usage: nanoshape <command> [key=value ...] [--help]", "", "commands:"]
    lines += [f"  {name:<19} {doc}" for name, (doc, _) in COMMANDS.items()]
    lines += ["", "Options are Hydra overrides; `nanoshape <command> --help` lists them with their defaults.",
              "Exit statuses: 0 done, 1 stopped with a message, 2 invalid command or option, 3 some files skipped,",
              "4 no micrograph analysed."]
    return "\n".join(lines)


def _refused_overrides(overrides: list[str]) -> str | None:
    """Why overrides that nanoshape would silently ignore or add are refused, or None.

    Hydra accepts ``hydra.*`` settings (``hydra.run.dir``: nanoshape never changes directory;
    ``output=`` says where results go) and ``+key`` / ``++key`` / ``~key`` (adding or removing
    keys the schema does not have); none of them would do anything here.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:
        return None  # compose reports the syntax error itself
    for override in parsed:
        key = override.key_or_group
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            return (f"{override.input_line!r}: nanoshape does not use Hydra's own settings (it never changes "
                    f"directory or writes Hydra logs); output= says where the results go")
        if override.type != OverrideType.CHANGE:
            return (f"{override.input_line!r}: every option of nanoshape exists already; set it with {key}=<value> "
                    f"(adding or deleting keys with +, ++ or ~ would do nothing). `--help` lists the options")
    return None


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
    command, overrides = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"nanoshape: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return EXIT_USAGE
    from omegaconf import OmegaConf

    from nanoshape.config import COMMAND_SCHEMAS, compose

    wants_help = any(arg in ("-h", "--help") for arg in overrides)
    overrides = [arg for arg in overrides if arg not in ("-h", "--help")]
    positional = [arg for arg in overrides if "=" not in arg and not arg.startswith("-")] if command == "compare" else []
    overrides = [arg for arg in overrides if arg not in positional]
    refused = _refused_overrides(overrides)
    if refused:
        print(f"nanoshape {command}: invalid configuration: {refused}", file=sys.stderr)
        return EXIT_USAGE
    try:
        cfg = compose(command, overrides)
    except Exception as error:  # Hydra's composition errors say which override is wrong
        message = str(error).strip()
        print(f"nanoshape {command}: invalid configuration: {message}", file=sys.stderr)
        return EXIT_USAGE
    if wants_help:
        doc = textwrap.dedent(COMMAND_SCHEMAS[command].__doc__ or "")
        print(f"nanoshape {command}: {COMMANDS[command][0]}\n\n{doc.strip()}\n\nOptions with their defaults:\n")
        print(OmegaConf.to_yaml(cfg))
        return 0
    if positional:  # nanoshape compare <run> <run>: plain paths, never parsed as overrides
        cfg.runs = positional + list(cfg.runs)
    return COMMANDS[command][1](cfg)


if __name__ == "__main__":
    sys.exit(main())
