"""Open a run directory of ``nanoshape analyze`` in napari, as plain LayerData tuples.

Nothing here imports napari: :func:`read_run` returns ``(data, kwargs, layer_type)``
tuples that napari turns into layers, and tests read them without napari or a display.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

__all__ = ["MAX_MICROGRAPHS", "get_reader", "read_run", "fitted_outlines"]

#: a run directory opens at most this many micrographs (the first one visible); open
#: ``labels/<stem>.tif`` of the run for another one
MAX_MICROGRAPHS = 12

LayerData = tuple[Any, dict[str, Any], str]


def _run_and_stems(path: str | os.PathLike) -> tuple[Path, list[str]] | None:
    """(run directory, stems to open) for a run directory or a ``labels/<stem>.tif`` inside one; else None."""
    path = Path(path)
    if path.is_dir() and (path / "labels").is_dir() and (path / "particles.parquet").exists():
        stems = sorted(p.stem for p in (path / "labels").glob("*.tif"))
        return path, stems[:MAX_MICROGRAPHS]
    if path.suffix.lower() in (".tif", ".tiff") and path.parent.name == "labels" \
            and (path.parent.parent / "particles.parquet").exists():
        return path.parent.parent, [path.stem]
    return None


def get_reader(path: str | os.PathLike | list) -> Callable[[Any], list[LayerData]] | None:
    """napari's reader hook: :func:`read_run` for a run directory (or a label image inside one), else None."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    return read_run if _run_and_stems(path) is not None else None


def fitted_outlines(particles: pd.DataFrame, labels: np.ndarray, *, points: int = 96) -> list[np.ndarray]:
    """Each particle's fitted shape as a polygon (``points`` x 2, (row, column) in px) on its micrograph.

    :func:`nanoshape.views.fitted_outlines` (placed at the particle's area and centroid, as
    the report and the Jaccard columns place it); a particle without shape parameters gets
    an empty (0, 2) polygon.
    """
    from nanoshape.views import fitted_outlines as outlines_xy

    return _row_column(outlines_xy(particles, labels, points=points))


def _row_column(outlines: np.ndarray) -> list[np.ndarray]:
    """(n, points, 2) x, y outlines (NaN: none) as napari's (row, column) polygons (empty: none)."""
    return [polygon[:, ::-1].astype(np.float64) if np.isfinite(polygon).all() else np.zeros((0, 2))
            for polygon in outlines]


def _group_colours(groups: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return np.array([cmap((int(g) - 1) % 10) if g > 0 else (0.6, 0.6, 0.6, 1.0) for g in groups])


def read_run(path: str | os.PathLike | list) -> list[LayerData]:
    """The layers of a run directory (or of one ``labels/<stem>.tif`` in it).

    Per micrograph (at most :data:`MAX_MICROGRAPHS`; only the first visible): an ``image``
    layer of the micrograph (when its file is still where the run read it; else its preview
    from ``parts/views/``), a ``labels``
    layer of ``labels/<stem>.tif`` whose ``features`` are the micrograph's rows of
    ``particles.parquet`` (with napari's ``index`` column = ``particle_id``), and a
    ``shapes`` layer of the fitted outlines (:func:`fitted_outlines`) edged in their group's
    colour, with the same features. Layers are scaled to nm where the pixel size is known.

    Raises:
      ValueError: ``path`` is not a run directory of ``nanoshape analyze``.
    """
    import tifffile

    from nanoshape.columns import upgrade_columns
    from nanoshape.io import MicrographError, read_micrograph
    from nanoshape.views import read_views

    if isinstance(path, (list, tuple)):
        path = path[0]
    found = _run_and_stems(path)
    if found is None:
        raise ValueError(f"{path} is not a run directory of nanoshape analyze (no labels/ and particles.parquet)")
    run, stems = found
    particles = upgrade_columns(pd.read_parquet(run / "particles.parquet"))
    layers: list[LayerData] = []
    for k, stem in enumerate(stems):
        labels = np.asarray(tifffile.imread(run / "labels" / f"{stem}.tif"))
        info_path = run / "parts" / "info" / f"{stem}.json"
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        views = read_views(run / "parts" / "views" / f"{stem}.npz")
        size = info.get("pixel_size_nm")
        scale = (size, size) if size else (1.0, 1.0)
        common = {"scale": scale, "visible": k == 0,
                  "metadata": {"run": str(run), "image": stem, "pixel_size_nm": size,
                               "unit": "nm" if size else "px", "pixel_size_source": info.get("pixel_size_source")}}
        try:
            pixels = read_micrograph(info["path"]).pixels if "path" in info else None
        except (MicrographError, OSError):
            pixels = None  # the micrograph moved since the run: its preview, labels and outlines still open
        if pixels is not None and pixels.shape == labels.shape:
            layers.append((pixels, {**common, "name": stem, "colormap": "gray"}, "image"))
        elif views is not None:  # the micrograph moved: its preview, each pixel a block of step x step
            step = views.preview_step
            layers.append((views.preview, {**common, "name": f"{stem} (preview)", "colormap": "gray",
                                           "scale": (scale[0] * step, scale[1] * step),
                                           "translate": ((step - 1) / 2 * scale[0], (step - 1) / 2 * scale[1])},
                           "image"))
        rows = particles[particles["image"].astype(str) == stem].reset_index(drop=True)
        features = rows.copy()
        features.insert(0, "index", rows["particle_id"].to_numpy(np.int64))
        layers.append((labels, {**common, "name": f"{stem} particles", "features": features, "opacity": 0.4},
                       "labels"))
        if views is not None and set(views.particle_id.tolist()) >= set(rows["particle_id"].tolist()):
            where = {int(pid): j for j, pid in enumerate(views.particle_id)}  # saved by the run: no JAX needed
            polygons = _row_column(views.outlines[[where[int(pid)] for pid in rows["particle_id"]]])
        else:
            polygons = fitted_outlines(rows, labels)
        keep = [i for i, polygon in enumerate(polygons) if len(polygon)]
        if keep:
            groups = rows["group"].to_numpy() if "group" in rows else np.ones(len(rows), int)
            layers.append(([polygons[i] for i in keep],
                           {**common, "name": f"{stem} fitted shapes", "shape_type": "polygon",
                            "features": rows.iloc[keep].reset_index(drop=True), "edge_width": 1.0,
                            "edge_color": _group_colours(groups[keep]), "face_color": "transparent"},
                           "shapes"))
    return layers
