"""Per-particle measurements of a labelled micrograph, vectorised over all particles.

:func:`measure` turns an instance label image (and the micrograph's intensities) into one
table row per particle. Every feature is computed for all particles at once from
whole-image array operations (moments and intensity statistics by ``bincount``, the
perimeter by classifying boundary pixels, convex hulls and Feret diameters from support
functions along fixed directions), instead of one Python-level loop per particle as
``skimage.measure.regionprops`` does: see ``benchmarks/bench_analyze.py`` for the speed.

A particle is the union of its pixels taken as unit squares. Column names carry their
units: sizes end in ``_nm`` / ``_nm2`` when the pixel size is known and in ``_px`` /
``_px2`` when it is not; positions (centroid, bounding box) are always in pixels, as they
index the image; angles end in ``_deg`` and are measured counter-clockwise from the
image's x axis as displayed (y up), in [-90, 90). :data:`FEATURES` documents every column
in one line.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from skimage.measure import label as skimage_label

__all__ = ["Feature", "FEATURES", "ANGULAR_HARMONICS", "AFFINE_HARMONICS", "angular_harmonics", "affine_harmonics",
           "feature_columns", "measure", "convex_areas", "HULL_DIRECTIONS"]


class Feature(NamedTuple):
    """One measured column: ``name`` without unit, ``kind`` and a one-line description.

    ``kind`` is 'length' or 'area' (unit appended: _nm/_px, _nm2/_px2), 'position' (always
    _px), 'angle' (_deg), or 'number' (no unit).
    """

    name: str
    kind: str
    description: str


#: the orders m of the ``angular_harmonic_m`` columns: up to 12, so that the 2d-pointed stars
#: eq. 1 draws at L ~ 1 (d = 5: ten points) are counted (grouping uses 2..8, see groups)
ANGULAR_HARMONICS = tuple(range(2, 13))
#: the orders m of the ``affine_harmonic_m`` columns (:func:`affine_harmonics`: the corners of a
#: particle with its elongation taken out; order 2 is 0 by construction)
AFFINE_HARMONICS = tuple(range(3, 9))

FEATURES: tuple[Feature, ...] = (
    Feature("particle_id", "number", "label of the particle in labels/<stem>.tif"),
    Feature("centroid_x", "position", "centroid, column coordinate (pixel centres at integers)"),
    Feature("centroid_y", "position", "centroid, row coordinate"),
    Feature("bbox_x0", "position", "first column of the bounding box"),
    Feature("bbox_y0", "position", "first row of the bounding box"),
    Feature("bbox_width", "position", "bounding-box width"),
    Feature("bbox_height", "position", "bounding-box height"),
    Feature("area", "area", "projected area: pixel count times pixel area"),
    Feature("filled_area", "area", "area with enclosed holes filled"),
    Feature("convex_area", "area", "area of the convex hull of the particle's pixel squares"),
    Feature("perimeter", "length", "length of the outline at half height (marching squares on the mask, as "
            "skimage.measure.find_contours at 0.5; diagonal neighbours apart), holes included"),
    Feature("convex_perimeter", "length", "perimeter of the convex hull of that outline"),
    Feature("equivalent_diameter", "length", "diameter of the disc with the same area, sqrt(4 A / pi)"),
    Feature("major_axis", "length", "major axis of the ellipse with the same second moments (4 sqrt(lambda1))"),
    Feature("minor_axis", "length", "minor axis of that ellipse (4 sqrt(lambda2))"),
    Feature("feret_max", "length", "maximum Feret (caliper) diameter"),
    Feature("feret_min", "length", "minimum Feret (caliper) diameter, the particle's width"),
    Feature("feret_angle", "angle", "direction of the maximum Feret diameter"),
    Feature("orientation", "angle", "direction of the major axis"),
    Feature("aspect_ratio", "number", "major axis / minor axis (>= 1)"),
    Feature("feret_ratio", "number", "maximum / minimum Feret diameter (>= 1)"),
    Feature("eccentricity", "number", "eccentricity of the moment ellipse, 0 for a disc, -> 1 for a line"),
    Feature("circularity", "number", "4 pi A / perimeter^2 with A the area inside the outline: at most 1 "
            "(isoperimetric inequality), 0.785 for one pixel, 0.90 +- 0.01 for digital discs of radius 10 to 80 px (the "
            "outline's 45-degree steps make it ~5 % longer than a circle)"),
    Feature("roundness", "number", "4 area / (pi major_axis^2), 1 for a disc"),
    Feature("solidity", "number", "area / convex area, 1 for a convex particle"),
    Feature("convexity", "number", "convex perimeter / perimeter: at most 1, 1 for a convex particle"),
    Feature("extent", "number", "area / bounding-box area"),
    Feature("euler_number", "number", "connected pieces (8-connected) minus enclosed holes; 1 for a particle without holes"),
    Feature("touching_neighbours", "number", "number of other particles sharing a boundary with this one"),
    Feature("nearest_neighbour_distance", "length", "distance from the centroid to the nearest other centroid"),
    Feature("intensity_mean", "number", "mean intensity of the particle's pixels, in the micrograph's units"),
    Feature("intensity_std", "number", "standard deviation of the particle's intensities"),
    Feature("intensity_min", "number", "minimum intensity"),
    Feature("intensity_max", "number", "maximum intensity"),
    Feature("intensity_contrast", "number", "(intensity_mean - background median) / background median"),
    *(Feature(f"angular_harmonic_{m}", "number",
              f"|sum r^2 exp(i {m} theta)| / sum r^2 over the particle's pixels (r, theta about the centroid): the "
              f"{m}-fold angular harmonic of its mass, 0 for a disc, large for {m}-fold shapes"
              + {2: " (elongation)", 3: " (triangles, tripods)", 4: " (cubes, crosses)", 6: " (hexagons)",
                 10: " (ten-pointed stars: eq. 1's d = 5 at L ~ 1)"}.get(m, ""))
      for m in ANGULAR_HARMONICS),
    *(Feature(f"affine_harmonic_{m}", "number",
              f"angular_harmonic_{m} of the particle stretched along its minor axis until its second moments are "
              f"those of a disc: the {m}-fold symmetry without the elongation (an ellipse reads 0, a rectangle as "
              f"much as a square)")
      for m in AFFINE_HARMONICS),
)

#: Directions (over the full circle) whose support points define the convex hull. A hull
#: vertex is missed only where its exterior angle is under 360/HULL_DIRECTIONS degrees.
HULL_DIRECTIONS = 128

_SUFFIX = {"position": "_px", "angle": "_deg", "number": ""}


def feature_columns(calibrated: bool) -> list[str]:
    """The column names :func:`measure` returns, in order."""
    length, area = ("_nm", "_nm2") if calibrated else ("_px", "_px2")
    suffix = dict(_SUFFIX, length=length, area=area)
    return [f.name + suffix[f.kind] for f in FEATURES]


_FOUR = ((-1, 0), (1, 0), (0, -1), (0, 1))


def _shifted(padded: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """View of a 1-padded array moved so element [y, x] is the original's [y + dy, x + dx]."""
    h, w = padded.shape[0] - 2, padded.shape[1] - 2
    return padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def _boundary_and_pairs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boundary pixels (a 4-neighbour belongs to another label or the outside) and the
    label pairs sharing an edge."""
    padded = np.pad(labels, 1)
    inside = labels > 0
    same = [(_shifted(padded, dy, dx) == labels) & inside for dy, dx in _FOUR]
    boundary = inside & ~(same[0] & same[1] & same[2] & same[3])
    # particles sharing an edge: right and down neighbours suffice (the relation is symmetric)
    pairs = []
    for dy, dx in ((1, 0), (0, 1)):
        other = _shifted(padded, dy, dx)
        touch = boundary & (other > 0) & (other != labels)
        pairs.append(np.stack([labels[touch], other[touch]], axis=1))
    pairs = np.concatenate(pairs).astype(np.int64)
    return boundary, pairs


def _cell_tables() -> tuple[np.ndarray, np.ndarray]:
    """Outline length and enclosed area inside one 2 x 2 cell of pixel centres, by the cell's
    code (bit 1: top-left corner in the particle, 2: top-right, 4: bottom-left, 8: bottom-right).

    Marching squares at half height: the outline crosses each cell edge between a corner in
    and a corner out at its midpoint. One corner in: a corner triangle (length sqrt(1/2),
    area 1/8); two on one side: a straight cut (1, 1/2); three: the complement of a corner
    (sqrt(1/2), 7/8); two diagonal corners are kept apart (two triangles: the particle's
    4-connected pixels, as skimage.measure.find_contours with fully_connected='low').
    """
    half_diagonal = math.sqrt(0.5)
    length, area = np.zeros(16), np.zeros(16)
    for code in range(1, 16):
        corners = bin(code).count("1")
        if corners == 1:
            length[code], area[code] = half_diagonal, 1 / 8
        elif corners == 2:
            diagonal = code in (6, 9)
            length[code], area[code] = (2 * half_diagonal, 1 / 4) if diagonal else (1.0, 1 / 2)
        elif corners == 3:
            length[code], area[code] = half_diagonal, 7 / 8
        else:
            length[code], area[code] = 0.0, 1.0
    return length, area


_CELL_LENGTH, _CELL_AREA = _cell_tables()


def _outlines(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per label 1..n: the length of its outline at half height and the area the outline
    encloses (px, px^2), summed over the cells of the label image padded by one pixel.

    The two are consistent (one polygon per piece, holes subtracted), so 4 pi area /
    length^2 <= 1 by the isoperimetric inequality, whatever the particle's size.
    """
    padded = np.pad(labels, 1)
    corners = [padded[:-1, :-1], padded[:-1, 1:], padded[1:, :-1], padded[1:, 1:]]
    cells = np.flatnonzero(((corners[0] > 0) | (corners[1] > 0) | (corners[2] > 0) | (corners[3] > 0)).ravel())
    values = [corner.ravel()[cells] for corner in corners]
    length, area = np.zeros(n + 1), np.zeros(n + 1)
    for i, owner in enumerate(values):
        # each label present in a cell is counted once, at the first corner it holds
        first = owner > 0
        for earlier in values[:i]:
            first &= owner != earlier
        ids = owner[first]
        code = np.zeros(len(ids), dtype=np.int64)
        for bit, corner in enumerate(values):
            code |= (corner[first] == ids).astype(np.int64) << bit
        length += np.bincount(ids, weights=_CELL_LENGTH[code], minlength=n + 1)
        area += np.bincount(ids, weights=_CELL_AREA[code], minlength=n + 1)
    return length[1:], area[1:]


def _holes(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-label (hole pixel count, hole count): background components (4-connected) that
    do not touch the image border and touch exactly one particle."""
    background, n_bg = ndi.label(labels == 0)
    if n_bg == 0:
        return np.zeros(n), np.zeros(n)
    edge = np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    open_to_border = np.zeros(n_bg + 1, dtype=bool)
    open_to_border[edge] = True
    padded_bg = np.pad(background, 1)
    keys = []
    for dy, dx in _FOUR:
        other = _shifted(padded_bg, dy, dx)
        touch = (labels > 0) & (other > 0)
        keys.append(other[touch].astype(np.int64) * (n + 1) + labels[touch])
    keys = np.unique(np.concatenate(keys))  # distinct (background component, particle) pairs
    component, particle = np.divmod(keys, n + 1)
    n_owners = np.bincount(component, minlength=n_bg + 1)
    owner = np.zeros(n_bg + 1, dtype=np.int64)
    owner[component] = particle
    is_hole = (n_owners == 1) & ~open_to_border
    is_hole[0] = False
    sizes = np.bincount(background.ravel(), minlength=n_bg + 1)
    holes = np.flatnonzero(is_hole)
    hole_area = np.bincount(owner[holes], weights=sizes[holes], minlength=n + 1)[1:]
    hole_count = np.bincount(owner[holes], minlength=n + 1)[1:]
    return hole_area, hole_count


def _directions(k: int) -> tuple[np.ndarray, np.ndarray]:
    """k unit directions over the circle, offset by half a step so none is axis-aligned."""
    angles = (np.arange(k) + 0.5) * (2.0 * np.pi / k)
    return np.cos(angles), np.sin(angles)


def _support(xs, ys, ids, starts, n: int, directions: int, chunk_points: int = 1 << 15) -> np.ndarray:
    """(n, K) index of a point of each label farthest along each direction.

    Points are sorted by label; label i (1-based) owns points starts[i-1]:starts[i], and
    every label owns at least one.
    """
    ux, uy = _directions(directions)
    support = np.zeros((n, directions), dtype=np.int64)
    label = 1
    while label <= n:
        # a run of whole labels holding at most chunk_points points (at least one label)
        stop = min(max(int(np.searchsorted(starts, starts[label - 1] + chunk_points, side="right")), label + 1), n + 1)
        lo, hi = starts[label - 1], starts[stop - 1]
        proj = xs[lo:hi, None] * ux + ys[lo:hi, None] * uy
        local = ids[lo:hi] - label
        best = np.maximum.reduceat(proj, starts[label - 1 : stop - 1] - lo, axis=0)
        rows, cols = np.nonzero(proj >= best[local])
        support[label - 1 + local[rows], cols] = lo + rows
        label = stop
    return support


def _hull_polygons(boundary: np.ndarray, labels: np.ndarray, n: int, directions: int):
    """Convex hulls of each label's outline at half height and of its pixel squares, both as
    (n, K, 2) vertices (x, y) in counter-clockwise order of the support directions (repeated
    vertices allowed), and the (n, 4) bounding boxes (x0, y0, width, height).

    Both are hulls of the boundary pixel centres grown by a shape (a Minkowski sum), so
    their support point along a direction u is the support centre plus that shape's: the
    unit square's corner 0.5 * sign(u) for the pixel squares; for the outline, the vertex of
    the diamond |x| + |y| <= 1/2 along u (the outline's vertices are such diamonds'
    vertices, and every pixel's diamond lies inside the outline). Points strictly inside a coarse hull (16
    directions) cannot be vertices and are discarded before the fine pass (Akl and
    Toussaint, Inf. Process. Lett. 7 (1978) 219), which leaves a small fraction of them.
    """
    ys, xs = np.nonzero(boundary)
    ids = labels[ys, xs]
    order = np.argsort(ids, kind="stable")
    ids, xs, ys = ids[order], xs[order].astype(np.float64), ys[order].astype(np.float64)
    starts = np.searchsorted(ids, np.arange(1, n + 2))  # point range of label i: starts[i-1]:starts[i]
    # the bounding box's extreme pixels are boundary pixels too
    first = starts[:-1]
    bbox = np.stack([np.minimum.reduceat(xs, first), np.minimum.reduceat(ys, first),
                     np.maximum.reduceat(xs, first) + 1, np.maximum.reduceat(ys, first) + 1], axis=1)
    bbox[:, 2:] -= bbox[:, :2]

    coarse = _support(xs, ys, ids, starts, n, 16)
    cx, cy = xs[coarse], ys[coarse]
    ex, ey = np.roll(cx, -1, axis=1) - cx, np.roll(cy, -1, axis=1) - cy
    inside = np.ones(len(xs), dtype=bool)
    owner = ids - 1
    for k in range(16):
        cross = ex[owner, k] * (ys - cy[owner, k]) - ey[owner, k] * (xs - cx[owner, k])
        degenerate = (ex[owner, k] == 0) & (ey[owner, k] == 0)
        inside &= (cross > 1e-9) | degenerate
    keep = ~inside
    xs, ys, ids = xs[keep], ys[keep], ids[keep]
    starts = np.searchsorted(ids, np.arange(1, n + 2))

    support = _support(xs, ys, ids, starts, n, directions)
    centres = np.stack([xs[support], ys[support]], axis=-1)
    ux, uy = _directions(directions)
    along_x = np.abs(ux) >= np.abs(uy)
    diamond = 0.5 * np.stack([np.where(along_x, np.sign(ux), 0.0), np.where(along_x, 0.0, np.sign(uy))], axis=-1)
    return centres + diamond, centres + 0.5 * np.stack([np.sign(ux), np.sign(uy)], axis=-1), bbox


def _polygon_perimeter(vertices: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.roll(vertices, -1, axis=1) - vertices, axis=-1).sum(axis=1)


def _hull_measures(vertices: np.ndarray) -> dict[str, np.ndarray]:
    """Area, perimeter and Feret diameters of (n, K, 2) convex polygons given by their
    support points along K equally spaced directions (K even).

    Calipers only need antipodal pairs: the vertex farthest from an edge's line, and the
    partner of a diameter, are support points of (nearly) the opposite direction, K/2
    steps on. Checking a few offsets around it keeps the cost O(K) per particle.
    """
    n, k = vertices.shape[:2]
    x, y = vertices[..., 0], vertices[..., 1]
    xn, yn = np.roll(x, -1, axis=1), np.roll(y, -1, axis=1)
    area = 0.5 * np.abs(np.sum(x * yn - xn * y, axis=1))
    edge_x, edge_y = xn - x, yn - y
    edge_len = np.hypot(edge_x, edge_y)
    diameter2 = np.zeros((n, k))
    partner = np.zeros((n, k), dtype=np.int64)
    width = np.zeros((n, k))
    for offset in range(-3, 4):
        other = np.roll(vertices, -(k // 2 + offset), axis=1)
        d2 = np.sum((other - vertices) ** 2, axis=-1)
        better = d2 > diameter2
        diameter2 = np.where(better, d2, diameter2)
        partner = np.where(better, (np.arange(k) + k // 2 + offset) % k, partner)
        cross = np.abs(edge_x * (other[..., 1] - y) - edge_y * (other[..., 0] - x))
        width = np.maximum(width, cross)
    with np.errstate(invalid="ignore", divide="ignore"):
        width = np.where(edge_len > 1e-9, width / edge_len, np.inf)
    rows = np.arange(n)
    first = diameter2.argmax(axis=1)
    second = partner[rows, first]
    dx = vertices[rows, second, 0] - vertices[rows, first, 0]
    dy = vertices[rows, second, 1] - vertices[rows, first, 1]
    return {
        "area": area,
        "perimeter": edge_len.sum(axis=1),
        "feret_max": np.sqrt(diameter2.max(axis=1)),
        "feret_min": width.min(axis=1),
        "feret_angle": _fold_angle(np.degrees(np.arctan2(-dy, dx))),
    }


def _fold_angle(degrees: np.ndarray) -> np.ndarray:
    """An axis direction in degrees, folded into [-90, 90)."""
    return (np.asarray(degrees) + 90.0) % 180.0 - 90.0


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels renumbered 1..n (int32: half the memory of int64 on huge images) and the
    original id of each."""
    present = np.unique(labels)
    present = present[present > 0]
    if len(present) and present[-1] == len(present):
        return labels.astype(np.int32, copy=False), present
    lut = np.zeros(int(present[-1]) + 1 if len(present) else 1, dtype=np.int32)
    lut[present] = np.arange(1, len(present) + 1)
    return lut[labels], present


def convex_areas(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids, convex hull areas in px^2) of every particle of a label image: the hull of its
    pixel squares, as ``convex_area`` in :func:`measure`."""
    compact, present = _compact(np.asarray(labels))
    if len(present) == 0:
        return present, np.zeros(0)
    n = len(present)
    boundary, _ = _boundary_and_pairs(compact)
    _, square_hull, _ = _hull_polygons(boundary, compact, n, HULL_DIRECTIONS)
    x, y = square_hull[..., 0], square_hull[..., 1]
    return present, 0.5 * np.abs(np.sum(x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y, axis=1))


def angular_harmonics(dx: np.ndarray, dy: np.ndarray, ids: np.ndarray, n: int,
                      orders: tuple[int, ...] = ANGULAR_HARMONICS) -> np.ndarray:
    """(n, len(orders)) rotation- and scale-invariant symmetry descriptors of particles 1..n.

    For pixels at (dx, dy) = r (cos theta, sin theta) from their particle's centroid (``ids``
    1..n), ``A_m = |sum r^2 exp(i m theta)| / sum r^2``. The r^2 weight puts the outline in
    charge: a shape whose radius varies as R (1 + e cos(m theta)) gives A_m ~ 4 e / 2 =
    2 e, so a rounded hexagon (e ~ 0.04) reads A_6 ~ 0.08 where a pixelated disc of 15 px
    reads about 0.01. ``A_2`` is (lambda1 - lambda2) / (lambda1 + lambda2) of the second
    moments. These are the complex (Fourier-Mellin) moments of the mask; unlike the fitted
    shape's spectrum they need no shape family.
    """
    r2 = dx * dx + dy * dy
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = np.where(r2 > 0, (dx + 1j * dy) / np.sqrt(r2), 0.0)
    total = np.bincount(ids, weights=r2, minlength=n + 1)[1:]
    out = np.empty((n, len(orders)))
    power = unit ** orders[0]
    for i, m in enumerate(orders):
        if i:
            power = power * unit ** (m - orders[i - 1])
        re = np.bincount(ids, weights=r2 * power.real, minlength=n + 1)[1:]
        im = np.bincount(ids, weights=r2 * power.imag, minlength=n + 1)[1:]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, i] = np.where(total > 0, np.hypot(re, im) / total, 0.0)
    return out


def affine_harmonics(dx: np.ndarray, dy: np.ndarray, ids: np.ndarray, n: int, moments: np.ndarray,
                     orders: tuple[int, ...] = AFFINE_HARMONICS) -> np.ndarray:
    """(n, len(orders)) :func:`angular_harmonics` of particles 1..n after normalising their second moments.

    Each particle's pixel offsets (dx, dy) from its centroid are mapped by M^(-1/2), M its
    (2, 2) second-moment matrix (``moments``, (n, 2, 2)), which turns its moment ellipse into
    a circle (the affine normalisation of moment invariants: Flusser, Suk & Zitova, "2D and
    3D Image Analysis by Moments", 2016, ch. 5). Elongation is then no longer in the
    harmonics: the radius of a rod or of an ellipse of aspect 3 varies with every even
    order (A_4, A_6, A_8 of 0.2-0.6 in the raw harmonics, more than a cube's A_4), which
    buried the corners of cubes and hexagons under the rods' spread when particles were
    grouped; after the normalisation an ellipse reads ~0 at every order, a rectangle or a
    capsule as a (rounded) square (A_4), a hexagon as a hexagon (A_6), a triangle as a
    triangle (A_3). The feret ratio keeps the elongation.
    """
    values, vectors = np.linalg.eigh(moments)
    inverse_root = (vectors / np.sqrt(np.maximum(values, 1e-12))[:, None, :]) @ np.swapaxes(vectors, 1, 2)
    w = inverse_root[ids - 1]
    u = w[:, 0, 0] * dx + w[:, 0, 1] * dy
    v = w[:, 1, 0] * dx + w[:, 1, 1] * dy
    return angular_harmonics(u, v, ids, n, orders)


def measure(labels: np.ndarray, image: np.ndarray | None = None, *, pixel_size_nm: float | None = None) -> pd.DataFrame:
    """Measure every particle of an instance label image.

    Args:
      labels: (H, W) integer labels, 0 = background. Ids need not be consecutive.
      image: (H, W) intensities for the intensity features (NaN columns when None).
      pixel_size_nm: pixel size; sizes are reported in nm when given, in px otherwise.

    Returns:
      One row per particle id present, in increasing id order, with the columns of
      :func:`feature_columns`.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D image, got shape {labels.shape}")
    if image is not None and np.shape(image) != labels.shape:
        raise ValueError(f"image shape {np.shape(image)} differs from labels shape {labels.shape}")
    if pixel_size_nm is not None and not (math.isfinite(pixel_size_nm) and pixel_size_nm > 0):
        raise ValueError(f"pixel_size_nm must be a positive number, got {pixel_size_nm!r}")
    columns = feature_columns(pixel_size_nm is not None)
    compact, present = _compact(labels)
    if len(present) == 0:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns}).astype({"particle_id": "int64"})
    n = len(present)

    flat = compact.ravel()
    fg = np.flatnonzero(flat)
    ids = flat[fg]
    width = labels.shape[1]
    py, px = np.divmod(fg, width)
    px = px.astype(np.float64)
    py = py.astype(np.float64)
    count = np.bincount(ids, minlength=n + 1)[1:].astype(np.float64)
    cx = np.bincount(ids, weights=px, minlength=n + 1)[1:] / count
    cy = np.bincount(ids, weights=py, minlength=n + 1)[1:] / count
    dx = px - cx[ids - 1]
    dy = py - cy[ids - 1]
    # second central moments of the pixel squares (1/12 is a unit square's own variance)
    mxx = np.bincount(ids, weights=dx * dx, minlength=n + 1)[1:] / count + 1.0 / 12.0
    myy = np.bincount(ids, weights=dy * dy, minlength=n + 1)[1:] / count + 1.0 / 12.0
    mxy = np.bincount(ids, weights=dx * dy, minlength=n + 1)[1:] / count
    half_sum, root = 0.5 * (mxx + myy), np.sqrt((0.5 * (mxx - myy)) ** 2 + mxy**2)
    lam1, lam2 = half_sum + root, np.maximum(half_sum - root, 0.0)
    major, minor = 4.0 * np.sqrt(lam1), 4.0 * np.sqrt(lam2)
    # image y points down; report the angle as displayed (counter-clockwise from +x)
    orientation = _fold_angle(-np.degrees(0.5 * np.arctan2(2.0 * mxy, mxx - myy)))

    harmonics = angular_harmonics(dx, dy, ids, n)
    affine = affine_harmonics(dx, dy, ids, n, np.stack([np.stack([mxx, mxy], -1), np.stack([mxy, myy], -1)], -2))
    boundary, pairs = _boundary_and_pairs(compact)
    perimeter, outline_area = _outlines(compact, n)
    hole_area, hole_count = _holes(compact, n)
    # 8-connected pieces per particle (segmentation keeps particles whole: usually 1)
    pieces, n_pieces = skimage_label(compact, connectivity=2, background=0, return_num=True)
    piece_owner = np.zeros(n_pieces + 1, dtype=np.int64)
    piece_owner[pieces.ravel()[fg]] = ids
    components = np.bincount(piece_owner[1:], minlength=n + 1)[1:]
    outline_hull, square_hull, bbox = _hull_polygons(boundary, compact, n, HULL_DIRECTIONS)
    hull = _hull_measures(square_hull)
    # circularity and convexity compare the outline with its own area and hull, so both stay
    # within their definitions (<= 1); areas and calipers use the pixel squares (the
    # particle's extent)
    convex_perimeter = _polygon_perimeter(outline_hull)
    convex_area = np.maximum(hull["area"], count)

    touching = np.zeros(n)
    if len(pairs):
        pairs = np.sort(pairs, axis=1)
        first, second = np.divmod(np.unique(pairs[:, 0] * (n + 1) + pairs[:, 1]), n + 1)
        touching = np.bincount(np.concatenate([first, second]), minlength=n + 1)[1:].astype(np.float64)

    if n > 1:
        distance, _ = cKDTree(np.stack([cx, cy], axis=1)).query(np.stack([cx, cy], axis=1), k=2)
        nearest = distance[:, 1]
    else:
        nearest = np.full(n, np.nan)

    if image is not None:
        values = np.asarray(image, dtype=np.float64).ravel()
        v = values[fg]
        mean = np.bincount(ids, weights=v, minlength=n + 1)[1:] / count
        var = np.bincount(ids, weights=(v - mean[ids - 1]) ** 2, minlength=n + 1)[1:] / count
        order = np.argsort(ids, kind="stable")
        starts = np.searchsorted(ids[order], np.arange(1, n + 1))
        vmin = np.minimum.reduceat(v[order], starts)
        vmax = np.maximum.reduceat(v[order], starts)
        background = values[flat == 0][::7]
        bg = float(np.median(background)) if background.size else math.nan
        contrast = (mean - bg) / bg if bg and math.isfinite(bg) else np.full(n, np.nan)
        std = np.sqrt(var)
    else:
        mean = std = vmin = vmax = contrast = np.full(n, np.nan)

    s = 1.0 if pixel_size_nm is None else float(pixel_size_nm)
    with np.errstate(divide="ignore", invalid="ignore"):
        values_by_name = {
            "particle_id": present.astype(np.int64),
            "centroid_x": cx,
            "centroid_y": cy,
            "bbox_x0": bbox[:, 0],
            "bbox_y0": bbox[:, 1],
            "bbox_width": bbox[:, 2],
            "bbox_height": bbox[:, 3],
            "area": count * s * s,
            "filled_area": (count + hole_area) * s * s,
            "convex_area": convex_area * s * s,
            "perimeter": perimeter * s,
            "convex_perimeter": convex_perimeter * s,
            "equivalent_diameter": np.sqrt(4.0 * count / np.pi) * s,
            "major_axis": major * s,
            "minor_axis": minor * s,
            "feret_max": hull["feret_max"] * s,
            "feret_min": hull["feret_min"] * s,
            "feret_angle": hull["feret_angle"],
            "orientation": orientation,
            "aspect_ratio": major / minor,
            "feret_ratio": hull["feret_max"] / hull["feret_min"],
            "eccentricity": np.sqrt(1.0 - lam2 / lam1),
            "circularity": 4.0 * np.pi * outline_area / perimeter**2,
            "roundness": 4.0 * count / (np.pi * major**2),
            "solidity": count / convex_area,
            # the hull of a curve is never longer than the curve: 1 for a convex particle, up to rounding
            "convexity": np.minimum(convex_perimeter / perimeter, 1.0),
            "extent": count / (bbox[:, 2] * bbox[:, 3]),
            "euler_number": components - hole_count,
            "touching_neighbours": touching,
            "nearest_neighbour_distance": nearest * s,
            "intensity_mean": mean,
            "intensity_std": std,
            "intensity_min": vmin,
            "intensity_max": vmax,
            "intensity_contrast": contrast,
            **{f"angular_harmonic_{m}": harmonics[:, i] for i, m in enumerate(ANGULAR_HARMONICS)},
            **{f"affine_harmonic_{m}": affine[:, i] for i, m in enumerate(AFFINE_HARMONICS)},
        }
    table = pd.DataFrame({col: values_by_name[f.name] for col, f in zip(columns, FEATURES)})
    return table.astype({"euler_number": "int64", "touching_neighbours": "int64", "bbox_x0_px": "int64", "bbox_y0_px": "int64", "bbox_width_px": "int64", "bbox_height_px": "int64"})
