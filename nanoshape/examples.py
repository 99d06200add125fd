"""Example micrographs rendered by nanoshape itself, shipped inside the package.

``nanoshape render mode=scene`` writes the same kind of files; the bundled ones in
``nanoshape/data/examples`` were made by :func:`make_bundled_examples` (the command is in
that folder's README) and carry their pixel size in the TIFF calibration, their instance
labels and their truth tables, so a new user can run the whole analysis offline and
check it against the truth.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import jax
import numpy as np

from nanoshape.scene import POPULATIONS, SceneOptions, render_scene

__all__ = ["write_scene", "bundled_examples_dir", "make_bundled_examples", "BUNDLED_SCENES"]


def write_scene(key: jax.Array, options: SceneOptions, output: str | Path, stem: str) -> dict[str, Path]:
    """Render one scene and write ``<stem>.tif`` plus ``truth/<stem>.tif`` (labels) and ``truth/<stem>.csv``.

    The micrograph is stored as 16-bit counts scaled so the bright-field background sits
    near 40,000, as a detector would write them, with its pixel size in the calibration.
    The truth sits in its own folder so that ``nanoshape analyze input=<output>`` reads only
    micrographs and ``nanoshape evaluate masks=<output>/truth`` finds the labels by stem.
    """
    from nanoshape.io import write_tiff

    output = Path(output)
    (output / "truth").mkdir(parents=True, exist_ok=True)
    scene = render_scene(key, options)
    counts = np.clip(np.round(scene.image * 40000.0), 0, 65535).astype(np.uint16)
    paths = {
        "image": output / f"{stem}.tif",
        "labels": output / "truth" / f"{stem}.tif",
        "truth": output / "truth" / f"{stem}.csv",
    }
    write_tiff(paths["image"], counts, pixel_size_nm=options.pixel_size_nm)
    write_tiff(paths["labels"], scene.labels.astype(np.uint32), pixel_size_nm=options.pixel_size_nm)
    scene.truth.to_csv(paths["truth"], index=False)
    return paths


#: The bundled examples: (stem, seed, options).
BUNDLED_SCENES: tuple[tuple[str, int, SceneOptions], ...] = (
    (
        "mixed_shapes",
        1,
        SceneOptions(
            height_px=512, width_px=512, pixel_size_nm=0.5, n_particles=70,
            populations=tuple(POPULATIONS[name] for name in ("spheres", "cubes", "rods", "triangles", "stars")),
            touching_fraction=0.25,
        ),
    ),
    (
        "cubes_and_rods",
        2,
        SceneOptions(
            height_px=512, width_px=512, pixel_size_nm=0.8, n_particles=80,
            populations=(POPULATIONS["cubes"], POPULATIONS["rods"]), touching_fraction=0.3,
        ),
    ),
    (
        "crowded_spheres",
        3,
        SceneOptions(
            height_px=512, width_px=512, pixel_size_nm=1.0, n_particles=160,
            populations=(POPULATIONS["spheres"],), touching_fraction=0.5, gap_px=1.0,
        ),
    ),
)


def bundled_examples_dir() -> Path:
    """The folder of example micrographs installed with the package."""
    return Path(str(resources.files("nanoshape.data").joinpath("examples")))


def make_bundled_examples(output: str | Path | None = None) -> list[Path]:
    """Re-create the bundled example micrographs (deterministic)."""
    output = Path(output) if output is not None else bundled_examples_dir()
    written = []
    for stem, seed, options in BUNDLED_SCENES:
        written.append(write_scene(jax.random.key(seed), options, output, stem)["image"])
    return written
