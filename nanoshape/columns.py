"""The column dictionary of ``particles.csv``: every column's name, unit and meaning (``columns.csv``).

The measured features are described once, in :data:`nanoshape.features.FEATURES`; this
module adds the other columns (:data:`COLUMNS`: shape parameters, fits, groups, calibration)
and :func:`describe_columns` turns a table's column names into rows of ``name, unit,
meaning``, whichever unit (nm or px) a size column carries. :data:`SHAPE_PARAMETERS` says
in words what p, d, L and phi draw; the report quotes it.

Older runs named the phase ``phi`` (radians); :func:`upgrade_columns` renames such tables
(:data:`RENAMED`) so that a rerun resuming an older run directory gathers one schema.
"""

from __future__ import annotations

from typing import Iterable

import pandas as pd

__all__ = ["COLUMNS", "POLYGON_PARAMETERS", "RENAMED", "SHAPE_PARAMETERS", "UNDOCUMENTED", "describe_columns", "table_column", "upgrade_columns"]

#: the shape family's parameters in words (R(theta) = [|L cos(d theta/2 + phi)|^p + |sin(d theta/2 + phi)|^p]^(-1/p))
SHAPE_PARAMETERS = {
    "p": "curvature of the outline: below 1 its sides curve inwards (star-like arms), 2 draws ellipse-like "
         "curves, large values straight sides meeting in sharp corners (with d = 2: a square at L = 1, a "
         "rectangle above; with d = 4 and L well above 1 the corners become the arms of a cross)",
    "d": "how many times the outline's pattern repeats around the particle: 1 egg-like (a round particle can "
         "get d = 1 with L near 1.5: its outline is then a circle seen from off its centre), 2 ellipses, rods, "
         "rectangles and squares, 3 triangles and tripods, 4 four lobes or arms, 6 hexagons",
    "l_ratio": "how far the d lobes reach beyond the gaps between them (1: no lobes; with d = 2 and p = 2 the "
               "aspect ratio of the ellipse); always >= 1",
    "phi_rad": "rotation of the shape (radians, in [0, pi); the outline is the same at phi and phi + pi)",
}

_SHAPE_SOURCES = {"": "the final shape (after the image fit and the refinement)",
                  "_cnn": "the CNN's own prediction", "_image": "after fitting the CNN's shape to the crop's pixels"}

#: the parameters of the rounded-polygon family (``shape.family=polygon``, :mod:`nanoshape.family`) in words
POLYGON_PARAMETERS = {
    "n_sides": "number of sides of the rounded regular polygon (3 triangles, 4 squares, 6 hexagons)",
    "rounding": "corner radius over the inradius (near 0: sharp corners; 1: a disc)",
}

#: name -> (unit, meaning) of every particles.csv column that is not a feature of
#: :data:`nanoshape.features.FEATURES` (size columns: ``{unit}`` is nm or px)
COLUMNS: dict[str, tuple[str, str]] = {
    "image": ("", "the micrograph's file name without its extension (its stem)"),
    "sample": ("", "the sample the micrograph belongs to"),
    **{f"{name}{source}{'_rad' if name == 'phi' else ''}":
       ("rad" if name == "phi" else "",
        f"{SHAPE_PARAMETERS['phi_rad' if name == 'phi' else name]}: {where}")
       for name in ("p", "d", "l_ratio", "phi") for source, where in _SHAPE_SOURCES.items()},
    **{f"{name}{source}": ("", f"{meaning}: {where}") for name, meaning in POLYGON_PARAMETERS.items()
       for source, where in _SHAPE_SOURCES.items()},
    "rounding_log_std": ("", "the CNN's uncertainty of rounding: standard deviation of log rounding"),
    "n_sides_confidence": ("", "the CNN's probability of the n_sides it chose (0 to 1)"),
    "shape_family": ("", "the shape family the parameters belong to (superellipse: eq. 1; polygon: rounded "
                         "regular polygons, whose phi_rad is the first side's normal, in [0, 2 pi / n_sides))"),
    "p_log_std": ("", "the CNN's uncertainty of p: standard deviation of log p"),
    "l_ratio_log_std": ("", "the CNN's uncertainty of l_ratio: standard deviation of log L"),
    "phi_std_rad": ("rad", "the CNN's uncertainty of phi: standard deviation"),
    "d_confidence": ("", "the CNN's probability of the d it chose (0 to 1)"),
    "jaccard_cnn": ("", "overlap (intersection / union, 0 to 1) of the CNN's shape, placed at the particle's area "
                        "and centroid, with the particle's mask"),
    "jaccard_image": ("", "the same overlap for the image fit's shape"),
    "jaccard_refined": ("", "the same overlap for the final, refined shape: how well p, d, l_ratio, phi_rad "
                            "describe this particle (below ~0.8: treat its parameters with care)"),
    "fit_converged": ("", "whether the refinement's loss settled (False also where it kept its start)"),
    "equivalent_diameter_fit": ("{unit}", "diameter of the disc with the area of the image fit's shape (not biased "
                                          "by the softness of the mask's edge)"),
    "major_axis_fit": ("{unit}", "major axis (second moments) of the image fit's shape"),
    "minor_axis_fit": ("{unit}", "minor axis (second moments) of the image fit's shape"),
    "segmentation_score": ("", "the learned detector's confidence in this particle (0 to 1; empty for the "
                               "classical segmentation)"),
    "segmentation_level": ("", "the detector's pyramid level that found it (0 = full resolution, or twice it "
                               "where the particles are under ~10 px; k = the micrograph shrunk 2^k times; -1 for "
                               "the classical segmentation)"),
    "segmentation_flag": ("", "why the segmentation doubts this particle (doubtful, fragment, ragged), empty "
                              "when it does not"),
    "nan_reason": ("", "which measurements of this particle are empty (NaN) and why"),
    "pixel_size_nm": ("nm", "the micrograph's pixel size (empty when none was found: sizes are then in px)"),
    "pixel_size_source": ("", "where the pixel size came from (the configuration, the file's metadata or its "
                              "burned-in scale bar)"),
    "group": ("", "shape group number (1..K; 0 unassigned, -1 far from every group of a classifier)"),
    "group_name": ("", "the shape group's name in words"),
    "unassigned_reason": ("", "why a particle is in no shape group (group 0): its segmentation flag 'fragment' or "
                              "'ragged', 'no shape predictor', or that the run was not grouped; empty when grouped"),
    "group_assigned": ("", "true where the particle was not in the sample the groups were found on (a run of "
                           "more than groups.max_particles particles) and took its 5 nearest sampled neighbours' group"),
    "group_distance": ("", "standardised distance to the nearest group of the classifier (nanoshape classify)"),
    **{f"shape_harmonic_{m}": ("", f"amplitude of the {m}-fold harmonic of the fitted shape's outline radius")
       for m in range(1, 13)},
}

#: old column name -> new (older runs' tables are read with :func:`upgrade_columns`)
RENAMED = {"phi": "phi_rad", "phi_cnn": "phi_cnn_rad", "phi_image": "phi_image_rad", "phi_std": "phi_std_rad"}



def table_column(name: str) -> str:
    """The particle table's name of a shape parameter (``phi`` is ``phi_rad`` there)."""
    return RENAMED.get(name, name)


#: the meaning :func:`describe_columns` gives a column it does not know
UNDOCUMENTED = "(undocumented)"

_FEATURE_UNITS = {"length": ("_nm", "_px"), "area": ("_nm2", "_px2"), "position": ("_px",), "angle": ("_deg",),
                  "number": ("",)}


def _feature_entries() -> dict[str, tuple[str, str]]:
    from nanoshape.features import FEATURES

    out = {}
    for feature in FEATURES:
        for suffix in _FEATURE_UNITS[feature.kind]:
            out[feature.name + suffix] = (suffix.lstrip("_"), feature.description)
    return out


def describe_columns(columns: Iterable[str]) -> pd.DataFrame:
    """``name, unit, meaning`` of each column, in the order given (``meaning`` is :data:`UNDOCUMENTED` for
    a column neither :data:`nanoshape.features.FEATURES` nor :data:`COLUMNS` describes).

    Examples:
      >>> describe_columns(["area_nm2", "phi_rad"]).unit.tolist()
      ['nm2', 'rad']
    """
    features = _feature_entries()
    rows = []
    for name in columns:
        if name in features:
            unit, meaning = features[name]
        elif name in COLUMNS:
            unit, meaning = COLUMNS[name]
        else:
            base, _, unit = name.rpartition("_")
            entry = COLUMNS.get(base) if unit in ("nm", "px") else None
            if entry is not None and entry[0] == "{unit}":
                meaning = entry[1]
            else:
                unit, meaning = "", UNDOCUMENTED
        rows.append({"name": name, "unit": unit, "meaning": meaning})
    return pd.DataFrame(rows, columns=["name", "unit", "meaning"])


def upgrade_columns(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the columns of older runs renamed as :data:`RENAMED` says (a new name already there wins)."""
    renames = {old: new for old, new in RENAMED.items() if old in table and new not in table}
    return table.rename(columns=renames) if renames else table
