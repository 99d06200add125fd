"""Whole synthetic micrographs: many particles of chosen shape populations, with ground truth.

A scene places particles drawn from one or more :class:`Population` s on a canvas (sizes in
nm at a pixel size; some touching their neighbours, some cut by the border), renders each
with :func:`nanoshape.render.silhouette` in a window around it, adds their optical
densities (overlapping particles get darker, as in projection) and images the result with
:func:`nanoshape.render.tem_image`. It returns the image, the uint32 instance labels and a
per-particle truth table, so segmentation, features and shape fitting can be tested end to
end against known answers.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from nanoshape.render import (
    Imaging,
    ImagingParams,
    optical_density,
    particle_thickness,
    sample_imaging,
    tem_image,
)
from nanoshape.family import SUPERELLIPSE, ShapeFamily, area, get_family, radius
from nanoshape.labels import border_ids

__all__ = ["Population", "SceneOptions", "Scene", "render_scene", "POPULATIONS", "POLYGON_POPULATIONS",
           "draw_graphics", "evaluation_scene_options"]


@dataclass(frozen=True)
class Population:
    """A kind of particle in a scene: shape-parameter ranges, size distribution and abundance.

    Attributes:
      name: label written to the truth table.
      p_range, l_ratio_range: uniform ranges of the curvature exponent and axis ratio.
      d_values: numbers of major axes, drawn with equal probability.
      diameter_nm: median equivalent circular diameter.
      diameter_cv: spread of the log-normal diameter distribution (coefficient of variation).
      weight: relative abundance among the populations of a scene.
      family: the shape family drawn (:mod:`nanoshape.family`); eq. 1 (``superellipse``)
        reads ``p_range``, ``d_values`` and ``l_ratio_range``, another family the fields
        named after its parameters, ``<discrete>_values`` and ``<continuous>_range``
        (uniform), with phi uniform over a full turn.
      n_sides_values, rounding_range: the rounded polygons' (``family="polygon"``).
    """

    name: str = "spheres"
    p_range: tuple[float, float] = (2.0, 2.0)
    d_values: tuple[int, ...] = (2,)
    l_ratio_range: tuple[float, float] = (1.0, 1.1)
    diameter_nm: float = 20.0
    diameter_cv: float = 0.08
    weight: float = 1.0
    family: str = "superellipse"
    n_sides_values: tuple[int, ...] = (4,)
    rounding_range: tuple[float, float] = (0.1, 0.3)

    def __post_init__(self):
        family = get_family(self.family)
        family.validate_prior(self)


#: Shape populations seen in colloidal syntheses, at a common 20 nm size.
POPULATIONS: dict[str, Population] = {
    "spheres": Population("spheres", (1.8, 2.2), (2,), (1.0, 1.1)),
    "cubes": Population("cubes", (12.0, 30.0), (2,), (1.0, 1.08)),
    "rods": Population("rods", (3.0, 8.0), (2,), (2.5, 3.5)),
    "triangles": Population("triangles", (1.3, 1.8), (3,), (1.7, 2.0)),
    "stars": Population("stars", (0.7, 0.9), (5,), (1.0, 1.15)),
}

#: Rounded regular polygons (the ``polygon`` family): plates with straight sides, at 20 nm.
#: Kept apart from :data:`POPULATIONS`, which the detector's rendered training and the
#: evaluation scenes draw from whole.
POLYGON_POPULATIONS: dict[str, Population] = {
    "polygon_triangles": Population("polygon_triangles", family="polygon", n_sides_values=(3,), rounding_range=(0.05, 0.2)),
    "polygon_squares": Population("polygon_squares", family="polygon", n_sides_values=(4,), rounding_range=(0.05, 0.3)),
    "polygon_hexagons": Population("polygon_hexagons", family="polygon", n_sides_values=(6,), rounding_range=(0.05, 0.3)),
}


@dataclass(frozen=True)
class SceneOptions:
    """What to render.

    Attributes:
      height_px, width_px: micrograph size.
      pixel_size_nm: size of a pixel; particle diameters are in nm.
      n_particles: particles to place (fewer if the canvas fills up).
      populations: the particle kinds and their weights.
      touching_fraction: probability that a particle is placed in contact with one already placed.
      gap_px: smallest gap between particles not placed in contact.
      contact_overlap_px: how far particles placed in contact overlap (negative: a gap);
        contact is computed along the whole outline, so elongated and concave particles
        touch without overlapping elsewhere.
      allow_border: let particles be cut by the image border (as in real micrographs).
      imaging: the imaging model (random values drawn once per scene).
      porosity_range: share of each particle's density taken out by pores (uniform per
        particle); pores are the upper half of a smooth random field...
      pore_size: ...whose correlation length is this fraction of the particle's diameter
        (mesoporous silica, porous metals: bright specks inside a dark particle).
      grain_range: rms of a granular variation of each particle's density (polycrystalline
        or textured particles), with the correlation length of the pores.
      saturate_fraction: share of the darkest pixels clipped to one value, as an
        over-exposed camera or an 8-bit export with crushed blacks gives.
      graphics: draw a scale bar with its label and a panel letter onto the micrograph
        (saturated, as figures in papers have them; the labels do not change: graphics
        are not particles).
      data_band: draw an instrument data band with text along the bottom edge (SEM and
        some TEM software print one).
    """

    height_px: int = 512
    width_px: int = 512
    pixel_size_nm: float = 0.5
    n_particles: int = 60
    populations: tuple[Population, ...] = (POPULATIONS["spheres"],)
    touching_fraction: float = 0.2
    gap_px: float = 3.0
    contact_overlap_px: float = 0.5
    allow_border: bool = True
    imaging: Imaging = field(
        default_factory=lambda: Imaging(dose_range=(300.0, 1000.0), texture_range=(0.01, 0.03), contrast_range=(0.4, 0.6))
    )
    porosity_range: tuple[float, float] = (0.0, 0.0)
    pore_size: float = 0.12
    grain_range: tuple[float, float] = (0.0, 0.0)
    saturate_fraction: float = 0.0
    graphics: bool = False
    data_band: bool = False


@dataclass(frozen=True, eq=False)
class Scene:
    """A rendered micrograph with its ground truth.

    Attributes:
      image: (H, W) float32 intensities (bright-field background ~1).
      labels: (H, W) uint32 instance labels; id k is row k - 1 of ``truth``.
      truth: one row per particle: particle_id, population, p, d, l_ratio, phi (canonical),
        scale_px, center_x_px, center_y_px (shape origin), centroid_x_px, centroid_y_px,
        area_px, equivalent_diameter_nm, major_axis_nm, minor_axis_nm (second moments of the
        particle's own silhouette), touches_border, in_contact; in a scene with populations of
        another family (:data:`POLYGON_POPULATIONS`) also shape_family and that family's
        parameters (n_sides, rounding), NaN where a row is of the other family.
      pixel_size_nm: the scene's pixel size.
      imaging: the imaging values drawn for this scene.
    """

    image: np.ndarray
    labels: np.ndarray
    truth: pd.DataFrame
    pixel_size_nm: float
    imaging: ImagingParams


_N_ANGLES = 360


@jax.jit
def _boundaries(shapes):
    """Unit-scale radii at ``_N_ANGLES`` angles and areas of a batch of shapes (of any family)."""
    theta = jnp.arange(_N_ANGLES, dtype=jnp.float32) * (2 * jnp.pi / _N_ANGLES)
    return jax.vmap(lambda s: radius(theta, s))(shapes), jax.vmap(area)(shapes)


def _batch(family: ShapeFamily, parts: list[dict]):
    """The family's parameters of ``parts`` (their values by name) as one batch."""
    return family.params_type(*(jnp.asarray([q[name] for q in parts], jnp.int32 if name == family.discrete else jnp.float32)
                                for name in family.columns))


def _outline(boundary: np.ndarray, theta: float, upsample: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Outline points of a tabulated star-shaped boundary, in a frame whose x axis points
    along ``theta``: (along, lateral)."""
    n = len(boundary)
    angles = np.arange(n * upsample) * (2 * np.pi / (n * upsample))
    radii = np.interp(angles, np.arange(n + 1) * (2 * np.pi / n), np.append(boundary, boundary[0]))
    return radii * np.cos(angles - theta), radii * np.sin(angles - theta)


def _contact_distance(first: np.ndarray, second: np.ndarray, theta: float, bin_px: float = 0.5) -> float:
    """Centre distance along ``theta`` at which ``second`` just touches ``first``.

    Both outlines are cut into lateral strips; in each strip the second particle must
    clear the first one's farthest point, so the distance is the largest such clearance
    over the strips they share (exact up to the strip width, for any star-shaped outline:
    elongated and concave particles touch without overlapping anywhere).
    """
    a_along, a_lat = _outline(first, theta)
    b_along, b_lat = _outline(second, theta)
    lo = min(a_lat.min(), b_lat.min())
    a_bin = ((a_lat - lo) / bin_px).astype(int)
    b_bin = ((b_lat - lo) / bin_px).astype(int)
    bins = max(a_bin.max(), b_bin.max()) + 1
    a_far = np.full(bins, -np.inf)
    np.maximum.at(a_far, a_bin, a_along)
    b_near = np.full(bins, np.inf)
    np.minimum.at(b_near, b_bin, b_along)
    # the outline bounds a star-shaped region that contains its centre: fill strips
    # through the centre line (along = 0) for both
    shared = np.isfinite(a_far) & np.isfinite(b_near)
    return float(np.max(np.maximum(a_far[shared], 0.0) - np.minimum(b_near[shared], 0.0)))


def _draw_particles(rng: np.random.Generator, options: SceneOptions) -> list[dict]:
    """Place particles on the canvas: random positions without overlap, some in contact."""
    n = options.n_particles
    weights = np.array([pop.weight for pop in options.populations], float)
    which = rng.choice(len(weights), size=n, p=weights / weights.sum())
    pops = [options.populations[i] for i in which]
    p = np.array([rng.uniform(*pop.p_range) for pop in pops])
    d = np.array([int(rng.choice(pop.d_values)) for pop in pops])
    l_ratio = np.array([rng.uniform(*pop.l_ratio_range) for pop in pops])
    phi = rng.uniform(0, np.pi, n)
    sigma = np.array([math.sqrt(math.log1p(pop.diameter_cv**2)) for pop in pops])
    diameter_nm = np.array([pop.diameter_nm for pop in pops]) * np.exp(rng.normal(0, sigma) - sigma**2 / 2)
    # every particle's parameters by name (eq. 1's drawn above for all, so that a scene of eq. 1
    # alone draws the same numbers as before other families existed); other families' after
    values = [dict(family=SUPERELLIPSE, p=p[i], d=int(d[i]), l_ratio=l_ratio[i], phi=phi[i]) for i in range(n)]
    for i, pop in enumerate(pops):
        family = get_family(pop.family)
        if family is not SUPERELLIPSE:
            values[i] = {"family": family, family.discrete: int(rng.choice(getattr(pop, f"{family.discrete}_values"))),
                         **{c.name: rng.uniform(*getattr(pop, f"{c.name}_range")) for c in family.continuous},
                         "phi": rng.uniform(0, 2 * np.pi)}
    unit_boundary, unit_area = np.zeros((n, _N_ANGLES)), np.zeros(n)
    for family, rows in _by_family(values).items():
        boundary, unit = _boundaries(_batch(family, [values[i] for i in rows]))
        unit_boundary[rows], unit_area[rows] = np.asarray(boundary), np.asarray(unit)
    scale_px = 0.5 * diameter_nm / options.pixel_size_nm * np.sqrt(np.pi / unit_area)
    boundaries = unit_boundary * scale_px[:, None]
    placed: list[dict] = []
    height, width = options.height_px, options.width_px
    grid = _Grid(cell=2 * float(boundaries.max()) + max(options.gap_px, 0.0) + 1 if n else 1.0)
    for i in range(n):
        circum = float(boundaries[i].max())
        center = None
        in_contact = False
        if placed and rng.random() < options.touching_fraction:
            for _ in range(10):
                partner = placed[rng.integers(len(placed))]
                theta = rng.uniform(0, 2 * np.pi)
                dist = _contact_distance(partner["boundary"], boundaries[i], theta) - options.contact_overlap_px
                candidate = np.array(partner["center"]) + dist * np.array([np.cos(theta), np.sin(theta)])
                if _fits(candidate, circum, grid, options, ignore=partner, gap=0.0):
                    center = candidate
                    in_contact = True
                    partner["in_contact"] = True
                    break
        if center is None:
            for _ in range(60):
                if options.allow_border:
                    candidate = rng.uniform([-0.3 * circum, -0.3 * circum], [width + 0.3 * circum, height + 0.3 * circum])
                else:
                    candidate = rng.uniform([circum + 2, circum + 2], [width - circum - 2, height - circum - 2])
                if _fits(candidate, circum, grid, options, ignore=None, gap=options.gap_px):
                    center = candidate
                    break
        if center is None:
            continue
        part = dict(population=pops[i].name, **values[i], scale_px=scale_px[i],
                    circum_px=circum, boundary=boundaries[i], center=tuple(center), diameter_nm=diameter_nm[i],
                    in_contact=in_contact)
        placed.append(part)
        grid.add(part)
    return placed


def _by_family(parts: list[dict]) -> dict[ShapeFamily, list[int]]:
    """Indices of ``parts`` by their shape family, in order of first appearance."""
    out: dict[ShapeFamily, list[int]] = {}
    for i, part in enumerate(parts):
        out.setdefault(part["family"], []).append(i)
    return out


class _Grid:
    """Placed particles hashed by cell, so overlap checks look at neighbours only."""

    def __init__(self, cell: float):
        self.cell = cell
        self.cells: dict[tuple[int, int], list[dict]] = {}

    def _key(self, center) -> tuple[int, int]:
        return int(math.floor(center[0] / self.cell)), int(math.floor(center[1] / self.cell))

    def add(self, part: dict) -> None:
        self.cells.setdefault(self._key(part["center"]), []).append(part)

    def near(self, center):
        cx, cy = self._key(center)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                yield from self.cells.get((cx + dx, cy + dy), ())


def _fits(center, circum, grid: "_Grid", options, *, ignore, gap) -> bool:
    """No overlap of circumscribed circles (plus ``gap``) with placed particles other than ``ignore``."""
    if not options.allow_border:
        if not (circum + 1 <= center[0] <= options.width_px - circum - 1 and circum + 1 <= center[1] <= options.height_px - circum - 1):
            return False
    elif not (0 <= center[0] < options.width_px and 0 <= center[1] < options.height_px):
        return False
    for other in grid.near(center):
        if other is ignore:
            continue
        dist = math.hypot(center[0] - other["center"][0], center[1] - other["center"][1])
        if dist < circum + other["circum_px"] + gap:
            return False
    return True


@functools.partial(jax.jit, static_argnames=("side",))
def _render_windows(shapes, centers, scales, dome, contrast, *, side: int):
    """Coverage and optical density of each particle in its own ``side x side`` window."""

    def one(shape, center, scale):
        coverage, thickness = particle_thickness(shape, center, scale, dome, height=side, width=side)
        return coverage, optical_density(coverage, thickness, contrast)

    return jax.vmap(one)(shapes, centers, scales)


@functools.partial(jax.jit, static_argnames=("imaging",))
def _image(key, density, params, *, imaging):
    return tem_image(key, density, params, imaging)


def render_scene(key: jax.Array, options: SceneOptions = SceneOptions()) -> Scene:
    """Render a micrograph with many particles and return it with its labels and truth table.

    Args:
      key: PRNG key; the same key gives the same scene.
      options: what to render.

    Returns:
      a :class:`Scene`.
    """
    key_place, key_imaging, key_noise = jax.random.split(key, 3)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key_place)).ravel().tolist())
    particles = _draw_particles(rng, options)
    params = sample_imaging(key_imaging, options.imaging)
    height, width = options.height_px, options.width_px
    density = np.zeros((height, width), np.float32)
    best = np.zeros((height, width), np.float32)
    labels = np.zeros((height, width), np.uint32)
    rows: list[list] = []
    # windows of a few bucket sizes (per family), so rendering compiles once per bucket
    by_side: dict[tuple[ShapeFamily, int], list[int]] = {}
    for index, part in enumerate(particles):
        side = 16 * math.ceil((2 * part["circum_px"] + 6) / 16)
        by_side.setdefault((part["family"], side), []).append(index)
    windows: dict[int, tuple] = {}
    for (family, side), indices in by_side.items():
        parts = [particles[i] for i in indices]
        # pad the batch to a power of two: a handful of compiled shapes per window size
        n_padded = 1 << (len(parts) - 1).bit_length()
        padded = parts + [parts[0]] * (n_padded - len(parts))
        origin = np.array([[math.floor(q["center"][0]) - side // 2, math.floor(q["center"][1]) - side // 2] for q in padded])
        local = np.array([q["center"] for q in padded], np.float32) - origin
        shapes = _batch(family, padded)
        scales = jnp.asarray([q["scale_px"] for q in padded], jnp.float32)
        coverage, dens = _render_windows(shapes, jnp.asarray(local), scales, params.dome, params.contrast, side=side)
        coverage, dens = np.asarray(coverage), np.asarray(dens)
        for j, i in enumerate(indices):
            windows[i] = (origin[j], coverage[j], dens[j])
    canonical: dict[int, dict] = {}  # each particle's canonical parameters by name
    for family, indices in _by_family(particles).items():
        batch = jax.jit(family.canonicalize)(_batch(family, [particles[i] for i in indices]))
        for j, i in enumerate(indices):
            canonical[i] = {name: np.asarray(getattr(batch, name))[j] for name in family.columns}
    families = sorted({part["family"].name for part in particles} - {SUPERELLIPSE.name})
    for index, part in enumerate(particles):
        (x0, y0), coverage, dens = windows[index]
        pid = index + 1
        side = coverage.shape[0]
        ys, xs = slice(max(y0, 0), min(y0 + side, height)), slice(max(x0, 0), min(x0 + side, width))
        cy, cx = slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0)
        cov = coverage[cy, cx]
        if options.porosity_range[1] > 0 or options.grain_range[1] > 0:
            dens = dens * _internal_structure(rng, dens.shape, part["scale_px"], options)
        density[ys, xs] += dens[cy, cx]
        win = (cov >= 0.5) & (cov > best[ys, xs])
        labels[ys, xs][win] = pid
        best[ys, xs] = np.maximum(best[ys, xs], cov)
        rows.append(_truth_row(pid, part, canonical[index], coverage, x0, y0, options, families))
    image = np.asarray(_image(key_noise, jnp.asarray(density), params, imaging=options.imaging))
    if options.saturate_fraction > 0:
        image = np.maximum(image, np.quantile(image, options.saturate_fraction)).astype(np.float32)
    if options.graphics or options.data_band:
        image, covered = draw_graphics(rng, image, scale_bar=options.graphics, panel_letter=options.graphics,
                                       data_band=options.data_band)
        labels[covered] = 0  # what graphics cover shows no particle
    truth = pd.DataFrame(rows, columns=_TRUTH_COLUMNS + _family_truth_columns(families))
    labels_present = np.bincount(labels.ravel(), minlength=len(rows) + 1)[1:]
    truth["visible_area_px"] = labels_present
    truth["touches_border"] = _touches_border(labels, len(rows))
    return Scene(image=image, labels=labels, truth=truth, pixel_size_nm=options.pixel_size_nm, imaging=params)


def _internal_structure(rng: np.random.Generator, shape: tuple[int, int], scale_px: float, options: SceneOptions) -> np.ndarray:
    """Multiplicative density factor of one particle's window: pores and grain."""
    from scipy import ndimage as ndi

    cell = max(options.pore_size * 2 * scale_px, 0.7)
    field_ = ndi.gaussian_filter(rng.standard_normal(shape), cell / 2)
    field_ /= max(float(field_.std()), 1e-9)
    porosity = rng.uniform(*options.porosity_range)
    grain = rng.uniform(*options.grain_range)
    pores = 1.0 / (1.0 + np.exp(-4.0 * field_))  # soft upper half of the field
    second = ndi.gaussian_filter(rng.standard_normal(shape), cell / 2)
    second /= max(float(second.std()), 1e-9)
    return np.clip((1.0 - porosity * pores) * (1.0 + grain * second), 0.0, None).astype(np.float32)


_BAND_TEXT = ("EHT = 5.00 kV", "WD = 4.2 mm", "Mag = 50.00 K X", "Signal A = InLens", "Width = 2.286 um",
              "HV 200 kV", "Spot 3", "Det TLD")


def draw_graphics(rng: np.random.Generator, image: np.ndarray, *, scale_bar: bool = True, panel_letter: bool = True,
                  data_band: bool = False) -> np.ndarray:
    """Draw figure graphics onto a micrograph: a scale bar with its label, a panel letter, a data band.

    Graphics are drawn saturated (the image's extreme values), in a font matplotlib ships,
    at random sizes and corners, black on light or white on dark, sometimes on a box.

    Returns:
      the image with the graphics (float32, same shape) and the (H, W) bool mask of the
      pixels they cover.
    """
    from matplotlib import font_manager
    from PIL import Image, ImageDraw, ImageFont

    height, width = image.shape
    lo, hi = float(image.min()), float(image.max())
    fonts = [font_manager.findfont(font_manager.FontProperties(family=family, weight=weight))
             for family in ("DejaVu Sans", "DejaVu Serif") for weight in ("normal", "bold")]
    ink = Image.new("L", (width, height), 0)  # 255 where the foreground colour goes
    box = Image.new("L", (width, height), 0)  # 255 where the box colour goes
    draw_ink, draw_box = ImageDraw.Draw(ink), ImageDraw.Draw(box)
    dark_ink = rng.random() < 0.5
    if data_band:
        band = int(rng.uniform(0.06, 0.12) * height)
        draw_box.rectangle([0, height - band, width, height], fill=255)
        font = ImageFont.truetype(fonts[int(rng.integers(len(fonts)))], max(8, int(band * 0.35)))
        x = 4
        for text in rng.choice(_BAND_TEXT, size=4, replace=False):
            draw_ink.text((x, height - band + band * 0.15), str(text), fill=255, font=font)
            x += int(draw_ink.textlength(str(text), font=font)) + 12
        height_free = height - band
    else:
        height_free = height
    if scale_bar:
        length = int(rng.uniform(0.12, 0.3) * width)
        thick = max(2, int(rng.uniform(0.008, 0.02) * height))
        size = max(9, int(rng.uniform(0.035, 0.07) * height))
        font = ImageFont.truetype(fonts[int(rng.integers(len(fonts)))], size)
        label = f"{int(rng.choice([2, 5, 10, 20, 50, 100, 200, 500]))} {rng.choice(['nm', 'µm'])}"
        right = rng.random() < 0.7
        x0 = width - length - int(0.05 * width) if right else int(0.05 * width)
        y0 = height_free - int(rng.uniform(0.05, 0.1) * height) - thick
        if rng.random() < 0.4:
            draw_box.rectangle([x0 - 6, y0 - size - 12, x0 + length + 6, y0 + thick + 6], fill=255)
        draw_ink.rectangle([x0, y0, x0 + length, y0 + thick], fill=255)
        text_width = draw_ink.textlength(label, font=font)
        draw_ink.text((x0 + (length - text_width) / 2, y0 - size - 4), label, fill=255, font=font)
    if panel_letter:
        size = max(10, int(rng.uniform(0.05, 0.1) * height))
        font = ImageFont.truetype(fonts[int(rng.integers(len(fonts)))], size)
        letter = str(rng.choice(list("abcdefABCDEF") + ["(a)", "(b)", "(c)"]))
        x, y = int(rng.uniform(0.01, 0.05) * width), int(rng.uniform(0.01, 0.05) * height)
        if rng.random() < 0.3:
            draw_box.rectangle([x - 3, y - 3, x + 1.2 * size * len(letter) * 0.6 + 3, y + 1.2 * size], fill=255)
        draw_ink.text((x, y), letter, fill=255, font=font)
    ink_value, box_value = (lo, hi) if dark_ink else (hi, lo)
    out = np.where(np.asarray(box) > 127, box_value, image)
    alpha = np.asarray(ink, np.float32) / 255.0
    covered = (np.asarray(box) > 127) | (alpha > 0.25)
    return (out * (1 - alpha) + ink_value * alpha).astype(np.float32), covered


def evaluation_scene_options(index: int, *, hard: bool = False, side_px: int = 384) -> SceneOptions:
    """Options of the rendered evaluation scenes (``experiments/segmentation_eval.py``).

    Plain scenes: touching spheres, cubes, rods, triangles and stars, 15-60 px across.
    Hard scenes add, in turn: porous particles, textured particles, agglomerates (most
    particles in contact, overlapping), saturated cores, and every one of them figure
    graphics (scale bar, label, panel letter) and, every third, a data band.
    """
    rng = np.random.default_rng(index)
    names = list(POPULATIONS)
    chosen = rng.choice(names, size=int(rng.integers(1, 4)), replace=False)
    diameter_px = float(rng.uniform(15, 60))
    populations = tuple(dataclasses.replace(POPULATIONS[n], diameter_nm=diameter_px, diameter_cv=0.12) for n in chosen)
    n_particles = int(np.clip(0.3 * side_px**2 / (np.pi / 4 * diameter_px**2), 4, 200))
    options = SceneOptions(height_px=side_px, width_px=side_px, pixel_size_nm=1.0, n_particles=n_particles,
                           populations=populations, touching_fraction=0.4)
    if not hard:
        return options
    kind = index % 4
    changes: dict = {"graphics": True, "data_band": index % 3 == 0}
    if kind == 0:
        changes |= {"porosity_range": (0.4, 0.8), "pore_size": 0.1}
    elif kind == 1:
        changes |= {"grain_range": (0.2, 0.4), "pore_size": 0.08}
    elif kind == 2:
        changes |= {"touching_fraction": 0.9, "contact_overlap_px": 0.06 * diameter_px, "gap_px": 1.0,
                    "n_particles": int(1.5 * n_particles)}
    else:
        changes |= {"saturate_fraction": 0.1}
    return dataclasses.replace(options, **changes)


_TRUTH_COLUMNS = [
    "particle_id", "population", "p", "d", "l_ratio", "phi", "scale_px", "center_x_px", "center_y_px",
    "centroid_x_px", "centroid_y_px", "area_px", "equivalent_diameter_nm", "major_axis_nm", "minor_axis_nm",
    "in_contact",
]


def _family_truth_columns(families: list[str]) -> list[str]:
    """The truth's columns for a scene with other families than eq. 1: ``shape_family`` and their parameters
    (``phi`` is each family's phase; ``p``, ``d``, ``l_ratio`` are NaN for another family's particles)."""
    if not families:
        return []
    names = [name for family in families for name in get_family(family).columns if name != "phi"]
    return ["shape_family", *dict.fromkeys(names)]


def _truth_row(pid, part, canon: dict, coverage, x0, y0, options, families: list[str] = ()) -> list:
    """Truth of one particle, sizes from the second moments of its own (unoccluded) silhouette."""
    w = coverage.astype(np.float64)
    total = w.sum()
    yy, xx = np.mgrid[: w.shape[0], : w.shape[1]]
    my, mx = (w * yy).sum() / total, (w * xx).sum() / total
    # second central moments of the silhouette, with the 1/12 of each pixel's own extent
    cyy = (w * (yy - my) ** 2).sum() / total + 1 / 12
    cxx = (w * (xx - mx) ** 2).sum() / total + 1 / 12
    cxy = (w * (yy - my) * (xx - mx)).sum() / total
    common = math.sqrt(((cxx - cyy) / 2) ** 2 + cxy**2)
    major = 4 * math.sqrt((cxx + cyy) / 2 + common)
    minor = 4 * math.sqrt(max((cxx + cyy) / 2 - common, 0.0))
    px = options.pixel_size_nm
    eq1 = part["family"] is SUPERELLIPSE
    row = [
        pid, part["population"], *((float(canon["p"]), int(canon["d"]), float(canon["l_ratio"])) if eq1 else (np.nan,) * 3),
        float(canon["phi"]), part["scale_px"], part["center"][0], part["center"][1], x0 + mx, y0 + my, total,
        2 * math.sqrt(total / math.pi) * px, major * px, minor * px, part["in_contact"],
    ]
    extra = _family_truth_columns(list(families))
    if extra:
        row += [part["family"].name] + [canon.get(name, np.nan) for name in extra[1:]]
    return row


def _touches_border(labels: np.ndarray, n: int) -> np.ndarray:
    flags = np.zeros(n + 1, bool)
    flags[border_ids(labels)] = True
    return flags[1:]
