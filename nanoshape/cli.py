"""The ``nanoshape`` command line: ``nanoshape <command> key=value ...`` (Hydra overrides).

The command line parses and validates the configuration first, imports the heavy
libraries after, makes one library call per stage and owns the progress bar; the library
never prints.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Callable

__all__ = ["main"]


def _run_render(cfg) -> Path:
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
        return output
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
        return output
    raise SystemExit(f"nanoshape render: mode must be 'sheet' or 'scene', got {cfg.mode!r}")


def _run_classify(cfg) -> Path:
    if not cfg.model:
        raise SystemExit("nanoshape classify: give model=<run directory of an earlier nanoshape analyze>")
    from nanoshape.groups import load_classifier

    path = Path(cfg.model)
    if path.is_dir():
        path = path / "groups" / "classifier.skops"
    try:
        load_classifier(path)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"nanoshape classify: {error}") from None
    return _run_analyze(cfg, command="classify", classifier=str(path))


def _run_analyze(cfg, command: str = "analyze", classifier: str = "") -> Path:
    from omegaconf import OmegaConf
    from tqdm import tqdm

    from nanoshape.config import to_options
    from nanoshape.crop import CropOptions
    from nanoshape.examples import bundled_examples_dir
    from nanoshape.io import find_micrographs
    from nanoshape.groups import GroupOptions
    from nanoshape.imagefit import ImageFitOptions
    from nanoshape.pipeline import AnalyzeOptions, DistributeOptions, ShapeOptions, run_analysis
    from nanoshape.refine import RefineOptions
    from nanoshape.scalebar import ScaleBarOptions
    from nanoshape.segment import SegmentOptions

    if cfg.pixel_size_nm is not None and not (cfg.pixel_size_nm > 0 and cfg.pixel_size_nm < float("inf")):
        raise SystemExit(f"nanoshape {command}: pixel_size_nm must be a positive number of nm, got {cfg.pixel_size_nm}")
    source = cfg.input or str(bundled_examples_dir())
    if not cfg.input:
        print(f"nanoshape {command}: no input given; analysing the bundled examples in {source}")
    try:
        n_files = len(find_micrographs(source))
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
        )
    except (ValueError, TypeError) as error:
        raise SystemExit(f"nanoshape {command}: {error}") from None
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    if options.shape.cnn:
        from nanoshape.cnn import load_model

        try:  # fail before the run, not once per micrograph
            load_model(options.shape.model or None)
        except (FileNotFoundError, ValueError) as error:
            raise SystemExit(f"nanoshape {command}: cannot load the shape model: {error} "
                             "(shape.cnn=false analyses without shape parameters)") from None
    with tqdm(total=n_files, desc="analysing", unit="micrograph") as bar:
        summary = run_analysis(source, output, options, distribute=DistributeOptions(scheduler=cfg.scheduler, workers=cfg.workers),
                               progress=lambda stem: (bar.set_postfix_str(stem), bar.update()))
    unit = "nm" if "major_axis_mean_nm" in summary else "px"
    print(f"nanoshape {command}: {summary['particles']} particles in {summary['micrographs_analysed']} micrograph(s)"
          + (f", {summary['micrographs_resumed']} resumed" if summary["micrographs_resumed"] else ""))
    if f"major_axis_mean_{unit}" in summary:
        print(f"  major axis {summary[f'major_axis_mean_{unit}']:.3g} +/- {summary[f'major_axis_std_{unit}']:.2g} {unit}"
              f" (polydispersity {summary[f'polydispersity_{unit}']:.1%})")
    for skip in summary["files_skipped"]:
        print(f"  skipped {skip['file']}: {skip['reason']}")
    for warning in summary["warnings"]:
        print(f"  warning: {warning}")
    if summary.get("groups"):
        print(f"  {summary['groups']} shape groups ({summary['grouping']['method']} on {summary['grouping']['dataset']})"
              + (f"; classifier test accuracy {summary['classifier']['test_accuracy']:.1%}" if "classifier" in summary else ""))
    print(f"  results: {output / 'particles.csv'}, overlays in {output / 'overlays'}, summary in {output / 'summary.json'}")
    if (output / "report.html").exists():
        print(f"  report: {output / 'report.html'}")
    return output


def _run_evaluate(cfg) -> Path:
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
    return output


def _run_train(cfg) -> Path:
    import json

    from tqdm import tqdm

    from nanoshape.config import to_options
    from nanoshape.training import TrainOptions, run_training

    try:
        options = to_options(TrainOptions, cfg.train)
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
    print(f"  test set ({figures['n']} rendered particles): median shape Jaccard {figures['jaccard_median']:.3f} "
          f"(10th percentile {figures['jaccard_p10']:.3f}), d exact {figures['d_exact_fraction']:.1%}, "
          f"median |log p error| {figures['median_abs_error_log_p']:.3f}")
    crop_args = f" crop.context={options.crop.context:g}" if options.crop.context > 0 else ""
    print(f"  use it with: nanoshape analyze shape.model={model_dir}{crop_args} ...")
    return model_dir


def _run_train_segmentation(cfg) -> Path:
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
    return model_dir


#: name -> (one-line description, runner). Runners import their heavy modules themselves.
COMMANDS: dict[str, tuple[str, Callable]] = {
    "analyze": ("find, separate and measure every particle of some micrographs", _run_analyze),
    "classify": ("sort the particles of new micrographs into the groups of an earlier run's classifier", _run_classify),
    "evaluate": ("score label images against hand-drawn instance masks (precision, recall, F1)", _run_evaluate),
    "train": ("train the shape CNN on rendered particles (checkpoints, metrics, test-set figures)", _run_train),
    "train-segmentation": ("train the particle detector on annotated and rendered micrographs", _run_train_segmentation),
    "render": ("render a sheet of shapes from the prior (PNG + CSV), or example micrographs", _run_render),
}


def _usage() -> str:
    lines = ["usage: nanoshape <command> [key=value ...] [--help]", "", "commands:"]
    lines += [f"  {name:<19} {doc}" for name, (doc, _) in COMMANDS.items()]
    lines += ["", "Options are Hydra overrides; `nanoshape <command> --help` lists them with their defaults."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nanoshape`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    command, overrides = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"nanoshape: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    from omegaconf import OmegaConf

    from nanoshape.config import COMMAND_SCHEMAS, compose

    wants_help = any(arg in ("-h", "--help") for arg in overrides)
    overrides = [arg for arg in overrides if arg not in ("-h", "--help")]
    try:
        cfg = compose(command, overrides)
    except Exception as error:  # Hydra's composition errors say which override is wrong
        message = str(error).strip()
        print(f"nanoshape {command}: invalid configuration: {message}", file=sys.stderr)
        return 2
    if wants_help:
        doc = textwrap.dedent(COMMAND_SCHEMAS[command].__doc__ or "")
        print(f"nanoshape {command}: {COMMANDS[command][0]}\n\n{doc.strip()}\n\nOptions with their defaults:\n")
        print(OmegaConf.to_yaml(cfg))
        return 0
    COMMANDS[command][1](cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
