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


#: name -> (one-line description, runner). Runners import their heavy modules themselves.
COMMANDS: dict[str, tuple[str, Callable]] = {
    "render": ("render a sheet of shapes from the prior (PNG + CSV), or example micrographs", _run_render),
}


def _usage() -> str:
    lines = ["usage: nanoshape <command> [key=value ...] [--help]", "", "commands:"]
    lines += [f"  {name:<10} {doc}" for name, (doc, _) in COMMANDS.items()]
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
