"""Figures, tables and the self-contained HTML report of a run.

:func:`write_report` reads a run directory of ``nanoshape analyze`` and nothing else
(``particles.parquet``, ``summary.json``, ``groups/``, ``labels/``, ``parts/info/`` and the
micrographs' previews, crops and fitted outlines in ``parts/views/``, :mod:`nanoshape.views`;
a run without views gets its report with those figures left out and the reason said), one
function per section, and writes ``figures/*.png``, ``tables/*.csv`` and ``report.html``: one
page with every figure inlined (base64 PNG) and no script, stylesheet or font from
anywhere else, so it opens offline and can be mailed as one file. Every string that comes
from data (file names, reasons, warnings) is text everywhere: HTML-escaped in the page,
drawn without mathtext in figures (a ``$...$`` in a file name is not TeX), kept a string
(``001`` stays ``001``; the tables are read from parquet), and neutralised in the CSV
tables where a spreadsheet would run it as a formula.

:func:`save_sheet` draws a sheet of rendered shapes (``nanoshape render``).
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import tifffile

from nanoshape.columns import SHAPE_PARAMETERS, upgrade_columns
from nanoshape.io import write_csv
from nanoshape.overlay import PNG_COMPRESS_LEVEL, nice_length
from nanoshape.rundir import atomic_write
from nanoshape.views import CROP_RANGE, crop_outlines, read_views

__all__ = ["save_sheet", "write_report", "REPORT_SECTIONS"]

#: section ids of report.html, in order
REPORT_SECTIONS = ("summary", "sizes", "samples", "groups", "group-statistics", "histograms", "structure", "micrographs",
                   "exemplars", "all-particles", "fits", "classifier", "skipped")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_sheet(images: np.ndarray, table: pd.DataFrame, path: str | Path, *, columns: int = 8) -> Path:
    """Write a grid of particle images, each titled with its (p, d, L, phi), as a PNG.

    Args:
      images: (n, H, W) images.
      table: n rows with columns p, d, l_ratio, phi (another shape family: its parameters,
        ``index`` first and ``scale_px`` last, as ``nanoshape render`` writes them).
      path: the PNG to write.
      columns: images per row.

    Returns:
      the path written.
    """
    plt = _plt()
    n = len(images)
    rows = max(1, -(-n // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.75 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (ax, image) in enumerate(zip(axes.ravel(), images)):
        row = table.iloc[i]
        ax.imshow(image, cmap="gray", interpolation="nearest")
        if "p" in table:
            ax.set_title(f"p={row.p:.2g} d={int(row.d)}\nL={row.l_ratio:.2f} φ={row.phi:.2f}", fontsize=7)
        else:  # another family: its parameters in the table's order
            ax.set_title("\n".join(f"{name}={row[name]:.3g}" for name in table.columns[1:-1]), fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------ helpers


def _colours(k: int) -> np.ndarray:
    plt = _plt()
    cmap = plt.get_cmap("tab10" if k <= 10 else "tab20")
    return np.array([cmap(i % cmap.N)[:3] for i in range(max(k, 1))])


def _unit(particles: pd.DataFrame) -> str:
    return "nm" if "major_axis_nm" in particles and particles["major_axis_nm"].notna().any() else "px"


class _Page:
    """Collects sections, saves figures to figures/ and inlines them."""

    def __init__(self, run: Path):
        self.run = run
        self.figures = run / "figures"
        self.tables = run / "tables"
        # figures and tables of an earlier report (of more micrographs, say) must not stay
        for folder in (self.figures, self.tables):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
        self.parts: list[str] = []
        self.progress: Callable[[int, int, str], None] | None = None
        self.sections_done = 0

    def section(self, ident: str, title: str) -> None:
        if self.progress is not None:
            self.progress(self.sections_done, len(REPORT_SECTIONS), ident)
        self.sections_done += 1
        self.parts.append(f'<h2 id="{ident}">{html.escape(title)}</h2>')

    def text(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def figure(self, fig, name: str, caption: str) -> None:
        plt = _plt()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
        plt.close(fig)
        data = buffer.getvalue()
        (self.figures / f"{name}.png").write_bytes(data)
        encoded = base64.b64encode(data).decode("ascii")
        self.parts.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{encoded}">'
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def table(self, frame: pd.DataFrame, name: str, *, digits: int = 3, index: bool = False,
              rows: pd.Series | None = None) -> None:
        """Write ``frame`` to tables/<name>.csv and show it (only ``rows``, a boolean mask, when given)."""
        write_csv(frame.reset_index() if index else frame, self.tables / f"{name}.csv")
        shown = (frame if rows is None else frame[rows.to_numpy(bool)]).copy()
        for column in shown.columns:
            if pd.api.types.is_float_dtype(shown[column]):
                shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.{digits}g}")
        self.show(shown, index=index)

    def show(self, shown: pd.DataFrame, *, index: bool = False) -> None:
        """Show a formatted table; a wide one scrolls in its own box instead of running off the page."""
        self.parts.append('<div class="scroll">' + shown.to_html(index=index, escape=True, border=0, classes="data")
                          + "</div>")


#: the colour of particles in no group (unassigned, unknown)
_UNGROUPED_RGB = np.array([0.55, 0.55, 0.55])

#: columns whose mean over a group says nothing (ids, positions, the pixel size, the segmentation's pyramid level,
#: angles: the mean of 5 and 175 degrees is no orientation)
_NOT_AVERAGED = ("particle_id", "group", "pixel_size_nm", "segmentation_level", "group_distance", "phi_rad",
                 "phi_cnn_rad", "phi_image_rad", "feret_angle_deg", "orientation_deg")

#: the measures the page shows per group (tables/group_statistics.csv has every one)
_KEY_MEASURES = ("equivalent_diameter", "major_axis", "minor_axis", "feret_max", "feret_min", "aspect_ratio",
                 "feret_ratio", "circularity", "solidity", "p", "d", "l_ratio", "jaccard_refined")


def _size_table(particles: pd.DataFrame, unit: str) -> pd.DataFrame:
    column = f"major_axis_{unit}"
    rows = []
    groups = [("all", particles)]
    if "group" in particles:
        groups += [(f"group {g}", particles[particles.group == g]) for g in sorted(particles.group.unique()) if g > 0]
    for name, part in groups:
        values = part[column].dropna()
        mean = values.mean() if len(values) else np.nan
        std = values.std(ddof=1) if len(values) > 1 else np.nan
        # in nm the statistics come from the micrographs with a pixel size only: say how many particles that is
        rows.append({"particles": name, "count": len(part), f"with a size in {unit}": len(values),
                     f"major axis mean ({unit})": mean,
                     f"major axis std ({unit})": std, "polydispersity (std/mean)": std / mean if mean else np.nan})
    return pd.DataFrame(rows)


def _predictors(particles: pd.DataFrame, unit: str) -> list[str]:
    from nanoshape.groups import FEATURE_COLUMNS, PARAMETER_COLUMNS

    wanted = [f"major_axis_{unit}", f"equivalent_diameter_{unit}", *FEATURE_COLUMNS, *PARAMETER_COLUMNS,
              "jaccard_refined"]
    return [c for c in wanted if c in particles and particles[c].notna().any()]


#: what each histogram's axis says, by column (the unit follows the table's)
_AXIS_TITLES = {"p": "p (curvature)", "l_ratio": "L = l_ratio (lobe length ratio)", "d": "d (repeats of the outline)",
                "jaccard_refined": "Jaccard: fitted shape vs mask"}


def _axis_title(column: str) -> str:
    """A histogram's axis title with the unit in words: ``major_axis_nm`` -> ``major axis (nm)``."""
    if column in _AXIS_TITLES:
        return _AXIS_TITLES[column]
    for suffix, unit in (("_nm2", "nm²"), ("_px2", "px²"), ("_nm", "nm"), ("_px", "px"), ("_deg", "°"), ("_rad", "rad")):
        if column.endswith(suffix):
            return f"{column[: -len(suffix)].replace('_', ' ')} ({unit})"
    return column.replace("_", " ")


def _log_axis(ax, low: float, high: float) -> None:
    """A logarithmic x axis labelled with plain round numbers (0.5, 1, 2, 5 ...), no 10^k notation."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.set_xscale("log")
    candidates = [m * 10.0 ** k for k in range(-2, 4) for m in (1, 1.5, 2, 3, 5, 7)]
    ticks = [t for t in candidates if low <= t <= high] or [low, high]
    while len(ticks) > 7:
        ticks = ticks[::2]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _short_group_names(groups_dir: Path) -> dict[str, str]:
    """Group number (as text) -> its short name from groups/groups.csv (empty without one)."""
    path = groups_dir / "groups.csv"
    if not path.exists():
        return {}
    table = pd.read_csv(path)
    return {str(g): str(n) for g, n in zip(table.group, table.name)} if {"group", "name"} <= set(table) else {}


def _provenance_html(facts: dict[str, Any] | None) -> str:
    """The report's footer: what produced the run (summary.json's ``provenance``)."""
    if not facts:
        return "<footer><p>Provenance: not recorded (a run of an older nanoshape).</p></footer>"
    rows = [("nanoshape", facts.get("nanoshape_version", "?") + (f" (git {facts['git_commit']})" if facts.get("git_commit") else "")),
            ("run started (UTC)", facts.get("date_utc", "?")),
            ("command line", facts.get("command_line", "?")),
            *((name.replace("_model_sha256", " model SHA-256").replace("_", " "), value or "not used")
              for name, value in facts.items() if name.endswith("_sha256") and "scale_bars" not in name),
            ("Python, platform, JAX backend", f"{facts.get('python')}, {facts.get('platform')}, {facts.get('jax_backend')}"),
            ("libraries", ", ".join(f"{k} {v}" for k, v in facts.get("dependencies", {}).items()))]
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f'<footer><h2 id="provenance">Provenance</h2><table class="provenance">{cells}</table></footer>'


def _group_label(g: int, names: dict[str, str]) -> str:
    name = names.get(str(g), "")
    return f"group {g}: {name}" if name else f"group {g}"


def _histograms(page: _Page, particles: pd.DataFrame, columns: list[str], colours: np.ndarray,
                names: dict[str, str]) -> None:
    """One panel per predictor: particle counts per group, stacked (bars per value for the integer d)."""
    plt = _plt()
    groups = sorted(g for g in particles.group.unique() if g > 0) if "group" in particles else [0]
    n = len(columns)
    cols = 3
    rows = -(-n // cols)
    # 11 inches at 100 dpi: shown at full size in the page (max 1100 px), so 10 pt stays 10 pt
    fig, axes = plt.subplots(rows, cols, figsize=(3.65 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    selections = [((particles.group == g).to_numpy() if "group" in particles else np.ones(len(particles), bool))
                  for g in groups]
    group_colours = [colours[(g - 1) % len(colours)] if g else colours[0] for g in groups]
    labels = [_group_label(g, names) if g else "particles" for g in groups]
    for ax, column in zip(axes.ravel(), columns):
        values = particles[column].to_numpy(float)
        log = column in ("p", "l_ratio")
        data = np.log(values) if log else values
        finite = np.isfinite(data)
        if not finite.any():
            continue
        if column == "d" or (np.all(data[finite] == np.round(data[finite])) and np.ptp(data[finite]) <= 12):
            # integers: one bar per value, never a density curve over values that cannot occur
            ticks = np.arange(int(data[finite].min()), int(data[finite].max()) + 1)
            bottom = np.zeros(len(ticks))
            for sel, colour, label in zip(selections, group_colours, labels):
                counts = np.array([np.sum(sel & (data == t)) for t in ticks], float)
                ax.bar(ticks, counts, bottom=bottom, color=colour, label=label, width=0.8)
                bottom += counts
            ax.set_xticks(ticks)
        else:
            lo, hi = np.percentile(data[finite], [1, 99])
            bins = np.linspace(lo, hi + 1e-9 * max(abs(hi), 1), 31)
            stacks = [np.clip(data[sel & finite], bins[0], bins[-1]) for sel in selections]
            if log:  # the values themselves on a logarithmic axis: p = 20 reads as 20, not as 3.0
                bins, stacks = np.exp(bins), [np.exp(x) for x in stacks]
                _log_axis(ax, bins[0], bins[-1])
            # one filled outline per group, not a rectangle per bin and group (~2,000 patches to draw)
            ax.hist(stacks, bins=bins, stacked=True, color=group_colours, label=labels, histtype="stepfilled")
        ax.set_xlabel(_axis_title(column), fontsize=11)
        ax.set_ylabel("particles", fontsize=11)
        ax.tick_params(labelsize=10, which="both")
        drawn, shown = int(sum((sel & finite).sum() for sel in selections)), int(sum(sel.sum() for sel in selections))
        ax.set_title((f"{drawn} particles" if drawn == shown else f"{drawn} of {shown} particles (others: "
                     + ("no pixel size)" if column.endswith(("_nm", "_nm2")) else "no value)"))
                     + (", logarithmic axis" if log else ""), fontsize=10)
    if len(groups) > 1:
        fig.legend(*axes.ravel()[0].get_legend_handles_labels(), loc="upper center", ncol=min(len(groups), 4),
                   fontsize=10, bbox_to_anchor=(0.5, 1.0), frameon=False)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (3.0 * rows)))
    else:
        fig.tight_layout()
    page.figure(fig, "histograms", "Each predictor: particle counts per group, stacked (values outside the 1-99 "
                                   "percentile range are counted in the end bins; d, an integer, one bar per value).")


def _structure(page: _Page, particles: pd.DataFrame, grouping_columns: list[str], colours: np.ndarray, seed: int,
               names: dict[str, str]) -> None:
    from matplotlib import colors as matplotlib_colors
    from scipy.cluster.hierarchy import dendrogram, linkage
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    from nanoshape.groups import design_matrix

    plt = _plt()
    x = design_matrix(particles, tuple(grouping_columns))
    ok = np.isfinite(x).all(axis=1)
    x, groups = x[ok], particles.group.to_numpy()[ok]
    if len(x) < 5:
        return
    z = StandardScaler().fit_transform(x)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(z), min(len(z), 400), replace=False))
    tree = linkage(z[sample], method="ward")
    leaf_groups = groups[sample]
    # a link takes its group's colour when every particle below it is in that group, grey otherwise
    below = {i: {int(g)} for i, g in enumerate(leaf_groups)}
    for k, (a, b, _, _) in enumerate(tree):
        below[len(sample) + k] = below[int(a)] | below[int(b)]

    def link_colour(node: int) -> str:
        members = below[node]
        if len(members) == 1 and next(iter(members)) > 0:
            return matplotlib_colors.to_hex(colours[(next(iter(members)) - 1) % len(colours)])
        return "#777777"

    fig, ax = plt.subplots(figsize=(8.2, 3.8))
    dendrogram(tree, ax=ax, no_labels=True, link_color_func=link_colour)
    from matplotlib.patches import Patch

    present = sorted(g for g in set(leaf_groups.tolist()) if g > 0)
    ax.legend(handles=[Patch(color=colours[(g - 1) % len(colours)], label=_group_label(g, names)) for g in present]
              + [Patch(color="#777777", label="links joining groups")], fontsize=10, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(f"Ward tree of {len(sample)} particles", fontsize=11)
    ax.set_ylabel("linkage distance", fontsize=11)
    ax.tick_params(labelsize=10)
    page.figure(fig, "dendrogram", f"Hierarchical (Ward) clustering tree of a random sample of {len(sample)} "
                                   f"particles on the standardised grouping predictors ({', '.join(grouping_columns)}); "
                                   f"a link is drawn in a group's colour when every particle below it belongs to that "
                                   f"group.")

    fig, ax = plt.subplots(figsize=(10, 3.8))
    for i in sample[:300]:
        ax.plot(range(z.shape[1]), z[i], color=colours[(groups[i] - 1) % len(colours)], alpha=0.25, lw=0.8)
    for g in sorted(set(groups)):
        ax.plot(range(z.shape[1]), z[groups == g].mean(axis=0), color=colours[(g - 1) % len(colours)], lw=3,
                label=f"{_group_label(g, names)}, mean")
    ax.set_xticks(range(z.shape[1]), grouping_columns, rotation=45, ha="right", rotation_mode="anchor", fontsize=10)
    ax.tick_params(axis="y", labelsize=10)
    ax.set_ylabel("standardised value", fontsize=11)
    ax.legend(fontsize=10, ncol=4)
    page.figure(fig, "parallel_coordinates", "Parallel coordinates: particles (thin) and group means (thick).")

    pca = PCA().fit(z)
    share = pca.explained_variance_ratio_
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.bar(range(1, len(share) + 1), share, color="tab:blue")
    ax.plot(range(1, len(share) + 1), np.cumsum(share), "o-", color="tab:red")
    ax.set_xlabel("principal component")
    ax.set_ylabel("explained variance (cumulative: line)")
    ax.set_ylim(0, 1.05)
    page.figure(fig, "pca_pareto", "Pareto chart of the principal components of the grouping predictors.")

    if all(c in particles and particles[c].notna().any() for c in ("p", "d", "l_ratio")):
        fig = plt.figure(figsize=(6, 5))
        ax = fig.add_subplot(projection="3d")
        sel = particles.iloc[np.flatnonzero(ok)[sample]]
        ax.scatter(np.log(sel.p), sel.d + rng.uniform(-0.15, 0.15, len(sel)), np.log(sel.l_ratio),
                   c=[colours[(g - 1) % len(colours)] for g in sel.group], s=8)
        ax.set_xlabel("log p")
        ax.set_ylabel("d")
        ax.set_zlabel("log L")
        page.figure(fig, "scatter_p_d_l", "Shape parameters (log p, d, log L) coloured by group (d jittered).")


def _draw_scale_bar(ax, width_px: int, height_px: int, pixel_size_nm: float, *, left: bool = False) -> str:
    """A white, black-edged scale bar of a round length in a lower corner; returns its label."""
    from matplotlib.patches import Rectangle
    import matplotlib.patheffects as effects

    length_nm = nice_length(0.2 * width_px * pixel_size_nm)
    length_px = length_nm / pixel_size_nm
    label = f"{length_nm / 1000:g} µm" if length_nm >= 1000 else f"{length_nm:g} nm"
    thickness = max(2.0, 0.012 * height_px)
    x0, y0 = (width_px * 0.04 if left else width_px * 0.96 - length_px), height_px * 0.95 - thickness
    ax.add_patch(Rectangle((x0, y0), length_px, thickness, facecolor="white", edgecolor="black", linewidth=0.8))
    ax.text(x0 + length_px / 2, y0 - thickness, label, color="white", ha="center", va="bottom", fontsize=9,
            path_effects=[effects.withStroke(linewidth=2, foreground="black")])
    return label


#: what the page says where a run directory holds no views of a micrograph
_NO_VIEWS = ("the run directory holds no views of {what} (parts/views/: an older nanoshape saved none, or they were "
             "removed); rerun nanoshape analyze into a new output= to draw them")


def _preview_labels(labels: np.ndarray, step: int, shape: tuple[int, int]) -> np.ndarray:
    """The labels on a preview's grid: each preview pixel takes the label at the centre of its block."""
    rows, cols = (np.minimum(np.arange(n) * step + step // 2, size - 1) for n, size in zip(shape, labels.shape))
    return labels[np.ix_(rows, cols)]


def _micrographs(page: _Page, run: "_Run", limit: int = 8) -> None:
    """Section "micrographs": the first micrographs' previews, each particle tinted with its group's colour."""
    if not len(run.particles):
        return
    plt = _plt()
    page.section("micrographs", "Micrographs with particles coloured by group")
    particles, colours = run.particles, run.colours
    stems = list(dict.fromkeys(particles.image))[:limit]
    missing, shown = [], 0
    for stem in stems:
        views = run.views(stem)
        labels_path = run.path / "labels" / f"{stem}.tif"
        if views is None or not labels_path.exists():
            missing.append(stem)
            continue
        height, width = (int(n) for n in views.image_shape)
        step = views.preview_step
        labels = _preview_labels(tifffile.imread(labels_path), step, views.preview.shape)
        rows = particles[particles.image == stem]
        # kept particles by group; ungrouped ones (0 unassigned, -1 unknown) in grey; -2: background
        lut = np.full(int(max(labels.max(), rows.particle_id.max())) + 1, -2, dtype=np.int64)
        lut[rows.particle_id.to_numpy()] = rows.group.to_numpy() if "group" in rows else 1
        group_image = lut[labels]
        rgb = np.repeat((views.preview / 255.0)[..., None], 3, axis=2)
        for g in np.unique(group_image[group_image > -2]):
            sel = group_image == g
            rgb[sel] = 0.45 * rgb[sel] + 0.55 * (colours[(g - 1) % len(colours)] if g > 0 else _UNGROUPED_RGB)
        fig, ax = plt.subplots(figsize=(9, 9 * height / width))
        # drawn in the micrograph's pixel coordinates, whatever the preview's step
        ax.imshow(rgb, interpolation="nearest", extent=(-0.5, rgb.shape[1] * step - 0.5, rgb.shape[0] * step - 0.5, -0.5))
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(height - 0.5, -0.5)
        ax.set_title(stem, fontsize=11, parse_math=False)
        ax.axis("off")
        shown_groups = sorted(int(g) for g in np.unique(group_image[group_image > -2]))
        if shown_groups:
            from matplotlib.patches import Patch

            counts = rows.group.value_counts() if "group" in rows else pd.Series(dtype=int)
            ax.legend(handles=[Patch(color=colours[(g - 1) % len(colours)] if g > 0 else _UNGROUPED_RGB,
                                     label=(_group_label(g, run.names) if g > 0 else "unassigned" if g == 0 else "unknown")
                                     + f" ({int(counts.get(g, 0))})") for g in shown_groups],
                      loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(shown_groups), 3), fontsize=10,
                      frameon=False)
        info = json.loads((run.path / "parts" / "info" / f"{stem}.json").read_text())
        if info.get("pixel_size_nm"):
            burned = (info.get("scale_bar") or {}).get("bar_box_px")  # keep clear of the micrograph's own bar
            left = bool(burned) and burned[0] + burned[2] > width
            bar = _draw_scale_bar(ax, width, height, info["pixel_size_nm"], left=left)
            scale = f" Scale bar {bar}; pixel size {info['pixel_size_nm']:.4g} nm from {info.get('pixel_size_source')}."
        else:
            scale = " No pixel size: sizes in px."
        page.figure(fig, f"micrograph_{shown:02d}", f"{stem}: particles coloured by group.{scale}")
        shown += 1
    if missing:
        page.text(f"Not drawn: {', '.join(missing)}: " + _NO_VIEWS.format(what="these micrographs") + ".")


def _montage(page: _Page, run: "_Run", rows: pd.DataFrame, name: str, caption: str, *, columns: int = 10,
             titles: bool = True, outlines: bool = True) -> None:
    """A figure of the given particles' crops in a grid, each framed in its group's colour.

    With ``outlines``, the mask's outline (cyan) and the fitted shape (red) are drawn on each
    crop; with ``titles``, each crop is titled with its micrograph, particle_id and Jaccard.
    Particles whose micrograph has no saved views are left out, and the page says so.
    """
    if not len(rows):
        return
    plt = _plt()
    lo, hi = CROP_RANGE
    cut = {}  # (micrograph, particle_id) -> (intensity, mask, fitted outline), in the crop's pixels
    for stem, part in rows.groupby("image", sort=False):
        views = run.views(stem)
        if views is None:
            continue
        wanted = set(part.particle_id.astype(int))
        fitted = crop_outlines(views)
        for k, pid in enumerate(views.particle_id):
            if int(pid) in wanted:
                cut[(stem, int(pid))] = (views.crops[k, ..., 0] / 255.0 * (hi - lo) + lo, views.crops[k, ..., 1] / 255.0,
                                         fitted[k])
    items = [(row, *cut[(row.image, int(row.particle_id))]) for _, row in rows.iterrows()
             if (row.image, int(row.particle_id)) in cut]
    if not items:
        page.text("Not drawn: " + _NO_VIEWS.format(what="the particles' micrographs") + ".")
        return
    if len(items) < len(rows):
        page.text(f"{len(rows) - len(items)} of the {len(rows)} particles chosen are not shown: "
                  + _NO_VIEWS.format(what="their micrographs") + ".")
    size = 1.1 if titles else 0.55  # 10 (20) columns: 11 inches, shown at full size in the page
    # one image of every crop in its frame, drawn once, with the outlines and titles on it: an axes
    # per crop took 6 s for 300 crops, and 2-3 s for the 60 exemplars of six groups
    crops = [intensity for _, intensity, _, _ in items]
    side = max(max(c.shape) for c in crops)
    border, cell = _mosaic_cell(side)
    title_px = int(round(0.36 * cell)) if titles else 0
    colours = [_frame_colour(run, row) for row, *_ in items]
    canvas = _mosaic(crops, colours, columns, (lo, hi), title_px=title_px)
    fig = plt.figure(figsize=(size * columns, size * columns * canvas.shape[0] / canvas.shape[1]))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(canvas, interpolation="nearest")
    ax.axis("off")
    if outlines or titles:
        from matplotlib.collections import LineCollection
        from skimage.measure import find_contours

        masks, fitted = [], []
        for k, (row, _, mask, outline) in enumerate(items):
            y0, x0 = _mosaic_origin(k, side, columns, title_px)
            h, w = mask.shape
            if outlines:
                masks += [np.c_[c[:, 1] + x0, c[:, 0] + y0] for c in find_contours(mask, 0.5)]
                if np.isfinite(outline).all():
                    closed = np.vstack([outline, outline[:1]])
                    # clipped to the crop (as its own axes did): never over a neighbour
                    fitted.append(np.c_[np.clip(closed[:, 0], -0.5, w - 0.5) + x0,
                                        np.clip(closed[:, 1], -0.5, h - 0.5) + y0])
            if titles:
                jac = row.get("jaccard_refined", np.nan)
                # the micrograph and particle_id find the row of particles.csv and the particle on the overlay
                ax.text(x0 + w / 2 - 0.5, y0 - 0.5 - border, f"{str(row.image)[:11]}\n#{int(row.particle_id)}"
                        + (f"  J={jac:.2f}" if pd.notna(jac) else f"  group {int(row.get('group', 0))}"),
                        fontsize=8.5, ha="center", va="bottom", parse_math=False)
        ax.add_collection(LineCollection(masks, colors="cyan", linewidths=0.7))
        ax.add_collection(LineCollection(fitted, colors="red", linewidths=0.7))
        ax.set_xlim(-0.5, canvas.shape[1] - 0.5)
        ax.set_ylim(canvas.shape[0] - 0.5, -0.5)
    page.figure(fig, name, caption)


def _frame_colour(run: "_Run", row) -> tuple[float, float, float]:
    """A particle's frame colour: its group's, grey outside the groups."""
    from matplotlib.colors import to_rgb

    group = int(row.get("group", 1))
    return to_rgb(run.colours[(group - 1) % len(run.colours)]) if group > 0 else (0.5, 0.5, 0.5)


def _mosaic(crops: list[np.ndarray], colours: list[tuple[float, float, float]], columns: int,
           grey_range: tuple[float, float], *, title_px: int = 0) -> np.ndarray:
    """Crops in a grid, each in a frame of its colour, row by row, on white: an (H, W, 3) image.

    Each crop's grey values are shown from ``grey_range`` (black) to its upper end (white);
    the frame is a sixteenth of the largest crop's side (at least 2 px), with as wide a gap
    between cells, and ``title_px`` white rows above each row of cells (for titles). Crop
    ``k``'s top-left pixel is at :func:`_mosaic_origin`.
    """
    side = max(max(c.shape) for c in crops)
    border, cell = _mosaic_cell(side)
    n_rows = -(-len(crops) // columns)
    canvas = np.ones((n_rows * (cell + title_px), columns * cell, 3), np.float32)
    lo, hi = grey_range
    for k, (crop, colour) in enumerate(zip(crops, colours)):
        y, x = _mosaic_origin(k, side, columns, title_px)
        h, w = crop.shape
        canvas[y - border : y + h + border, x - border : x + w + border] = colour
        canvas[y : y + h, x : x + w] = np.clip((crop - lo) / (hi - lo), 0, 1)[..., None]
    return canvas


def _mosaic_cell(side: int) -> tuple[int, int]:
    """(frame width, cell width) of :func:`_mosaic` for crops up to ``side`` px: the frame a sixteenth
    of the side (at least 2 px), and as wide a gap."""
    border = max(2, side // 16)
    return border, side + 3 * border


def _mosaic_origin(k: int, side: int, columns: int, title_px: int = 0) -> tuple[int, int]:
    """(row, column) of crop ``k``'s top-left pixel in :func:`_mosaic`'s image of crops up to ``side`` px."""
    border, cell = _mosaic_cell(side)
    return (k // columns) * (cell + title_px) + title_px + border, (k % columns) * cell + border


def _interval(point: float, low: float, high: float) -> str:
    return "" if not np.isfinite(point) else (f"{point:.3g} [{low:.3g}, {high:.3g}]" if np.isfinite(low) else f"{point:.3g}")


def _samples_section(page: _Page, run: "_Run") -> None:
    """Section "samples": sizes per sample and per micrograph, intervals, pairwise tests (tables/ and a figure).

    The full tables go to ``tables/samples.csv``, ``tables/micrographs.csv`` and
    ``tables/sample_pairs.csv`` (:mod:`nanoshape.compare`); the page shows their main columns.
    """
    from nanoshape.compare import correction_statement, samples_figure, write_sample_tables
    from nanoshape.samples import read_run_fields, sample_tables

    page.section("samples", "Sizes per sample and per micrograph; samples compared")
    particles = run.particles
    fields = read_run_fields(run.path)
    if not len(particles) or not len(fields):
        page.text("No particles were found.")
        return
    tables = sample_tables(particles, fields, seed=run.seed)
    write_sample_tables(tables, page.tables)
    size, unit = tables.size, tables.unit
    page.text(f"Each micrograph's sample is its folder's name unless samples= names it (a file,sample table). Sizes in "
              f"{unit}" + ("" if unit == "nm" else " (some micrograph has no pixel size; each micrograph's nm sizes "
                           "are converted back with its own pixel size)")
              + f". The intervals and tests are of the {size[: -len(unit) - 1].replace('_', ' ')}; cv = sd / mean, the polydispersity "
              f"ratio. Full tables: tables/samples.csv, tables/micrographs.csv, tables/sample_pairs.csv.")
    rows = []
    for _, row in tables.samples.iterrows():
        out = {"sample": row["sample"], "micrographs": int(row.micrographs), "particles": int(row.particles),
               "coverage": f"{row.coverage_fraction:.1%}" if np.isfinite(row.coverage_fraction) else ""}
        for stat in ("mean", "median"):
            out[f"{stat} ({unit}) [95 % CI]"] = _interval(row.get(f"{stat}_{size}", np.nan), row.get(f"{stat}_{size}_ci_low", np.nan),
                                                         row.get(f"{stat}_{size}_ci_high", np.nan))
        measure = size[: -len(unit) - 1]
        out["cv [95 % CI]"] = _interval(row.get(f"cv_{measure}", np.nan), row.get(f"cv_{measure}_ci_low", np.nan),
                                        row.get(f"cv_{measure}_ci_high", np.nan))
        for name, label in (("rod_length", "rod length"), ("rod_width", "rod width"), ("cube_edge", "cube edge")):
            if f"mean_{name}_{unit}" in row and np.isfinite(row[f"mean_{name}_{unit}"]):
                out[f"{label} ({unit})"] = f"{row[f'mean_{name}_{unit}']:.3g} ± {row[f'sd_{name}_{unit}']:.2g}"
        for column in [c for c in tables.samples.columns if c.startswith("share_group_") and "_ci_" not in c]:
            out[column.replace("share_group_", "group ") + " share"] = _interval(
                100 * row[column], 100 * row[f"{column}_ci_low"], 100 * row[f"{column}_ci_high"]) + " %"
        rows.append(out)
    page.show(pd.DataFrame(rows))
    fig = samples_figure(particles, tables)
    words = f"{size[: -len(unit) - 1].replace('_', ' ')} ({unit})"
    page.figure(fig, "samples", f"Left: each sample's cumulative distribution of the {words}. Right: its "
                                f"mean and median with their {tables.level:.0%} bootstrap intervals.")
    if len(tables.pairs):
        page.text(correction_statement(tables))
        shown = tables.pairs[["sample_a", "sample_b", "n_a", "n_b", "relative_difference_mean", "ks_statistic",
                              "ks_p_holm", "rank_biserial", "mannwhitney_p_holm", "micrographs_a", "micrographs_b",
                              "micrograph_welch_p_holm", "cramers_v", "chi2_p_holm"]].copy()
        shown["relative_difference_mean"] = shown["relative_difference_mean"].map(lambda v: f"{v:+.1%}")
        for column in ("ks_statistic", "rank_biserial", "cramers_v"):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
        for column in ("ks_p_holm", "mannwhitney_p_holm", "micrograph_welch_p_holm", "chi2_p_holm"):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.2g}")
        page.show(shown)
    else:
        page.text("One sample only: nothing to compare (samples= or folders per sample give several).")
    micrographs = tables.micrographs
    keep = [c for c in ("image", "sample", "pixel_size_nm", "particles", "coverage_fraction", f"mean_{size}",
                        f"median_{size}", f"sd_{size}", f"mean_feret_min_{unit}", f"mean_feret_max_{unit}")
            if c in micrographs]
    shown = micrographs[keep].head(60).copy()
    for column in shown.columns[2:]:
        shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.3g}")
    page.text(f"Per micrograph ({len(micrographs)}" + (", the first 60 shown" if len(micrographs) > 60 else "") + "):")
    page.show(shown)


@dataclass
class _Run:
    """What the sections read from the run directory, read once."""

    path: Path
    summary: dict[str, Any]
    particles: pd.DataFrame
    grouping: dict[str, Any] | None
    names: dict[str, str]
    unit: str
    colours: np.ndarray
    seed: int
    #: draws the exemplars (without groups) and then the sample of all particles, in that order
    rng: np.random.Generator = field(init=False)

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)
        # the montages visit the same micrographs in turn
        self.views = functools.lru_cache(maxsize=8)(lambda stem: read_views(self.path / "parts" / "views" / f"{stem}.npz"))

    @classmethod
    def read(cls, path: Path, seed: int) -> "_Run":
        summary = json.loads((path / "summary.json").read_text())
        # parquet keeps the names as they are (particles.csv neutralises some, and "001" would read back as 1)
        particles = (upgrade_columns(pd.read_parquet(path / "particles.parquet"))
                     if (path / "particles.parquet").exists() else pd.DataFrame())
        grouping_file = path / "groups" / "grouping.json"
        k = int(particles.group.max()) if "group" in particles and len(particles) else 1
        return cls(path, summary, particles, json.loads(grouping_file.read_text()) if grouping_file.exists() else None,
                   _short_group_names(path / "groups"), _unit(particles) if len(particles) else "px", _colours(k), seed)


def _summary(page: _Page, run: _Run) -> None:
    summary = run.summary
    page.section("summary", "Summary")
    page.text(f"{summary['particles']} particles in {summary['micrographs_analysed']} micrograph(s); "
              f"{len(summary['files_skipped'])} file(s) skipped; {summary.get('particles_dropped', 0)} candidates dropped "
              f"during segmentation (dropped.csv lists each with its reason).")
    warnings = [f"<p class='warn'>{html.escape(str(warning))}</p>" for warning in summary.get("warnings", [])]
    page.parts.extend(warnings[:3])
    if len(warnings) > 3:  # a long list of per-micrograph warnings folds away, so the page starts with results
        page.parts.append(f"<details><summary class='warn'>{len(warnings) - 3} more warnings</summary>"
                          + "".join(warnings[3:]) + "</details>")
    if summary.get("pixel_sizes"):
        page.table(pd.DataFrame([{"micrograph": stem, "pixel size (nm)": entry["pixel_size_nm"],
                                  "from": entry["pixel_size_source"] or "none: sizes in px"}
                                 for stem, entry in summary["pixel_sizes"].items()]), "pixel_sizes", digits=4)


def _sizes(page: _Page, run: _Run) -> None:
    page.section("sizes", "Size: ensemble mean, standard deviation and polydispersity")
    if len(run.particles):
        page.table(_size_table(run.particles, run.unit), "sizes")
    else:
        page.text("No particles were found.")


def _groups(page: _Page, run: _Run) -> None:
    page.section("groups", "Shape groups")
    groups_dir = run.path / "groups"
    if run.grouping:
        for group, description in run.grouping.get("group_names", {}).items():
            page.text(f"Group {group}: {description}.")
        left_out = run.grouping.get("unassigned") or {}
        if left_out:
            page.text(f"Left out of the groups and the classifier ({sum(left_out.values())} particles, grey in the "
                      "figures; column unassigned_reason): "
                      + ", ".join(f"{n} {reason}" for reason, n in left_out.items()) + ".")
        page.text(run.grouping["reason"])
        if (groups_dir / "groups.csv").exists():
            page.table(pd.read_csv(groups_dir / "groups.csv"), "group_names")
        page.table(pd.read_csv(groups_dir / "comparison.csv"), "group_comparison")
    else:
        page.text("No groups: " + (run.summary.get("groups_skipped_reason") or "grouping was not run."))


def _group_statistics(page: _Page, run: _Run) -> None:
    page.section("group-statistics", "Mean and standard deviation per group (key measures here; every feature and "
                 "parameter in tables/group_statistics.csv)")
    particles = run.particles
    if len(particles) and "group" in particles:
        numeric = particles.select_dtypes("number").drop(columns=[c for c in particles if c in _NOT_AVERAGED
                                                                   or c.startswith(("centroid_", "bbox_"))])
        stats = numeric.groupby(particles.group).agg(["mean", "std"]).T
        measure = pd.Series([a for a, _ in stats.index])
        key = measure.isin(_KEY_MEASURES) | measure.str.fullmatch("(" + "|".join(_KEY_MEASURES) + ")(_fit)?_(nm|px)")
        stats.index = [f"{a} ({b})" for a, b in stats.index]
        stats.columns = [_group_label(g, run.names) if g > 0 else "unassigned" if g == 0 else "unknown"
                         for g in stats.columns]
        page.table(stats.reset_index(names="measure"), "group_statistics", rows=key)


def _distributions(page: _Page, run: _Run) -> None:
    if not len(run.particles):
        return
    predictors = _predictors(run.particles, run.unit)
    page.section("histograms", "Distributions per group")
    _histograms(page, run.particles, predictors, run.colours, run.names)


def _group_structure(page: _Page, run: _Run) -> None:
    if not len(run.particles):
        return
    page.section("structure", "Structure of the groups")
    if run.grouping and "group" in run.particles:
        _structure(page, run.particles, run.grouping["columns"], run.colours, run.seed, run.names)


def _exemplars(page: _Page, run: _Run) -> None:
    particles = run.particles
    if not len(particles):
        return
    page.section("exemplars", "Exemplary particles per group")
    exemplars = []
    if "group" in particles and run.grouping:
        from nanoshape.groups import design_matrix

        x = design_matrix(particles, tuple(run.grouping["columns"]))
        z = (x - np.nanmean(x, axis=0)) / np.maximum(np.nanstd(x, axis=0), 1e-12)
        for g in sorted(g for g in particles.group.unique() if g > 0):
            idx = np.flatnonzero((particles.group == g).to_numpy() & np.isfinite(z).all(axis=1))
            centre = z[idx].mean(axis=0)
            exemplars += list(idx[np.argsort(((z[idx] - centre) ** 2).sum(axis=1))[:10]])
    else:
        exemplars = list(run.rng.choice(len(particles), min(20, len(particles)), replace=False))
    _montage(page, run, particles.iloc[exemplars], "exemplars",
             "Ten particles nearest each group's centre (rows: groups). Cyan: the particle's mask; red: the shape "
             "drawn from its refined parameters at the mask's area and centroid; J: Jaccard of the two; "
             "titles: micrograph and particle_id (its number on overlays/ and its row of particles.csv); frame: "
             "the group's colour.")


def _all_particles(page: _Page, run: _Run) -> None:
    particles = run.particles
    if not len(particles):
        return
    page.section("all-particles", "All classified particles")
    count = min(len(particles), 300)
    if "group" in particles:
        shares = particles.group.value_counts(normalize=True).sort_index()
        per_group = {g: max(1, int(round(s * count))) for g, s in shares.items()}
        picks = []
        for g, n_pick in per_group.items():
            idx = np.flatnonzero((particles.group == g).to_numpy())
            picks += list(np.sort(run.rng.choice(idx, min(n_pick, len(idx)), replace=False)))
    else:
        picks = list(np.sort(run.rng.choice(len(particles), count, replace=False)))
    _montage(page, run, particles.iloc[picks], "all_particles",
             f"{len(picks)} particles drawn in proportion to their group's size, ordered by group (frame colour).",
             columns=20, titles=False, outlines=False)


def _fits(page: _Page, run: _Run) -> None:
    particles = run.particles
    if not len(particles):
        return
    page.section("fits", "Re-simulated shapes")
    if not ("jaccard_refined" in particles and particles.jaccard_refined.notna().any()):
        page.text("No shape parameters in this run (shape.cnn=false).")
        return
    plt = _plt()
    page.text("Each particle's outline is described by the shape family R(θ) = [|L cos(dθ/2 + φ)|^p + "
              "|sin(dθ/2 + φ)|^p]^(-1/p), sized to the particle's area. What its parameters draw:")
    page.parts.append("<ul class='parameters'>" + "".join(
        f"<li><b>{html.escape(name)}</b>: {html.escape(words)}.</li>" for name, words in SHAPE_PARAMETERS.items())
        + "</ul>")
    fig, ax = plt.subplots(figsize=(6, 3.4))
    bins = np.linspace(0.5, 1.0, 41)
    if "jaccard_cnn" in particles:
        ax.hist(particles.jaccard_cnn.dropna().clip(0.5, 1), bins=bins, alpha=0.5, label="CNN")
    fitted = "jaccard_image" in particles and particles.jaccard_image.notna().any()
    if fitted:
        ax.hist(particles.jaccard_image.dropna().clip(0.5, 1), bins=bins, alpha=0.5, label="image fit")
    ax.hist(particles.jaccard_refined.dropna().clip(0.5, 1), bins=bins, alpha=0.5, label="refined")
    ax.set_xlabel("Jaccard index: re-rendered shape vs particle mask")
    ax.set_ylabel("particles")
    ax.legend()
    image_median = f"image fit {particles.jaccard_image.median():.3f}, " if fitted else ""
    page.figure(fig, "jaccard", f"Median Jaccard: CNN {particles.get('jaccard_cnn', pd.Series(dtype=float)).median():.3f}, "
                                f"{image_median}refined {particles.jaccard_refined.median():.3f}.")
    _montage(page, run, particles.nsmallest(10, "jaccard_refined"), "worst_fits",
             "The ten worst fits (cyan: mask; red: fitted shape).")


def _classifier(page: _Page, run: _Run) -> None:
    page.section("classifier", "Classifier")
    classifier_meta = run.path / "groups" / "classifier.json"
    if not classifier_meta.exists():
        page.text("No classifier was trained in this run.")
        return
    plt = _plt()
    meta = json.loads(classifier_meta.read_text())
    stability = run.grouping.get("stability_halves_ari") if run.grouping else None
    page.text(f"RBF support-vector machine on {', '.join(meta['columns'])}. Its accuracy is its agreement with "
              f"this run's own clustering, not with a ground truth: {meta['test_accuracy']:.3f} on the held-out "
              f"20 %, 10-fold cross-validated {meta['cv_accuracy_mean']:.3f} ± {meta['cv_accuracy_std']:.3f}"
              + (f"; the clustering itself is stable at ARI {stability:.3f} (each half of the particles grouped "
                 f"on its own against the whole)" if isinstance(stability, (int, float)) and np.isfinite(stability) else "")
              + f". C = {meta['best_params'].get('C')}, gamma = {meta['best_params'].get('gamma')}. Sort new "
              f"micrographs with `nanoshape classify model={run.path} input=...`; a particle far from every group is "
              f"put in group -1, unknown.")
    confusion = np.asarray(meta["confusion"])
    fig, ax = plt.subplots(figsize=(2.2 + 0.8 * len(confusion), 1.8 + 0.8 * len(confusion)))
    ax.imshow(confusion, cmap="Blues")
    for (i, j), v in np.ndenumerate(confusion):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=11,
                color="white" if v > 0.6 * confusion.max() else "black")
    labels = [f"g{g}" for g in meta["groups"]]
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("group of the run's clustering")
    page.figure(fig, "confusion", "Confusion matrix of the classifier on the held-out particles, against the "
                                  "run's own clustering (not a ground truth).")


def _skipped(page: _Page, run: _Run) -> None:
    page.section("skipped", "Files skipped")
    if run.summary["files_skipped"]:
        page.table(pd.DataFrame(run.summary["files_skipped"]), "files_skipped")
    else:
        page.text("None: every file was read.")


#: the sections of report.html, in order (those about particles are left out of a run without any)
_SECTIONS = (_summary, _sizes, _samples_section, _groups, _group_statistics, _distributions, _group_structure,
             _micrographs, _exemplars, _all_particles, _fits, _classifier, _skipped)


def _document(run: _Run, body: str) -> str:
    """The whole page: a title, where it came from, the sections and the provenance footer."""
    facts = run.summary.get("provenance")
    title = f"nanoshape report: {run.path.name}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
h2 {{ border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }}
table.data {{ border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }}
div.scroll {{ overflow-x: auto; max-width: 100%; }}
table.data td, table.data th {{ padding: 2px 8px; border-bottom: 1px solid #eee; text-align: right; }}
figure {{ margin: 1em 0; }} figure img {{ max-width: 100%; }} figcaption {{ font-size: 0.85em; color: #555; }}
p.warn, summary.warn {{ color: #a50; }}
table.provenance {{ font-size: 0.8em; border-collapse: collapse; }}
table.provenance th {{ text-align: left; padding: 2px 10px 2px 0; vertical-align: top; white-space: nowrap; }}
table.provenance td {{ overflow-wrap: anywhere; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Written by nanoshape {html.escape(str((facts or {}).get("nanoshape_version", "")))} from {html.escape(str(run.path))}
on {html.escape(str((facts or {}).get("date_utc", "an unrecorded date")))} (UTC).
Figures are also in figures/, tables in tables/ (CSV); columns.csv explains every column of particles.csv.</p>
{body}
{_provenance_html(facts)}
</body></html>
"""


def write_report(run: str | Path, *, seed: int = 0, progress: Callable[[int, int, str], None] | None = None) -> Path:
    """Write ``report.html`` (and ``figures/``, ``tables/``) for a run directory, from it alone.

    ``progress(done, total, section)`` is called as each section starts.
    """
    data = _Run.read(Path(run), seed)
    page = _Page(data.path)
    page.progress = progress
    for section in _SECTIONS:
        section(page, data)
    out = data.path / "report.html"
    document = _document(data, "\n".join(page.parts))
    atomic_write(out, lambda tmp: tmp.write_text(document, encoding="utf-8"))
    if progress is not None:
        progress(len(REPORT_SECTIONS), len(REPORT_SECTIONS), "written")
    return out
