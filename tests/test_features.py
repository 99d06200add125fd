"""Features: exact values on shapes with known geometry, agreement with scikit-image, units."""

import math

import numpy as np
import pandas as pd
import pytest
from skimage.draw import disk, polygon
from skimage.measure import find_contours, regionprops_table

from nanoshape.features import FEATURES, feature_columns, measure


def _rectangle(h=200, w=300, box=(40, 60, 30, 100)):
    labels = np.zeros((h, w), np.int32)
    y0, x0, height, width = box
    labels[y0 : y0 + height, x0 : x0 + width] = 1
    return labels


def test_every_feature_is_documented_and_named_with_its_unit():
    assert len(FEATURES) >= 30
    assert all(f.description and f.kind in {"length", "area", "position", "angle", "number"} for f in FEATURES)
    calibrated, uncalibrated = feature_columns(True), feature_columns(False)
    assert {"area_nm2", "major_axis_nm", "feret_max_nm", "centroid_x_px", "orientation_deg"} <= set(calibrated)
    assert {"area_px2", "major_axis_px", "feret_max_px"} <= set(uncalibrated)
    assert not any(c.endswith("_nm") or c.endswith("_nm2") for c in uncalibrated)


def test_rectangle_has_its_exact_geometry():
    row = measure(_rectangle(), pixel_size_nm=None).iloc[0]
    assert row.area_px2 == 3000
    # the outline at half height: the pixel edges, each corner cut by half a pixel's diagonal
    assert row.perimeter_px == pytest.approx(2 * (100 + 30) - 4 + 4 * math.sqrt(0.5))
    assert row.feret_min_px == pytest.approx(30.0)
    assert row.feret_max_px == pytest.approx(math.hypot(100, 30))
    # the moment ellipse of a w x h rectangle has axes 4 w / sqrt(12), 4 h / sqrt(12)
    assert row.major_axis_px == pytest.approx(400 / math.sqrt(12))
    assert row.minor_axis_px == pytest.approx(120 / math.sqrt(12))
    assert row.orientation_deg == pytest.approx(0.0, abs=1e-9)
    assert row.solidity == pytest.approx(1.0)
    assert row.extent == pytest.approx(1.0)
    assert (row.bbox_x0_px, row.bbox_y0_px, row.bbox_width_px, row.bbox_height_px) == (60, 40, 100, 30)
    assert (row.centroid_x_px, row.centroid_y_px) == (pytest.approx(109.5), pytest.approx(54.5))


def test_physical_units_scale_lengths_and_areas():
    px = measure(_rectangle(), pixel_size_nm=None).iloc[0]
    nm = measure(_rectangle(), pixel_size_nm=0.25).iloc[0]
    assert nm.area_nm2 == pytest.approx(px.area_px2 * 0.0625)
    assert nm.major_axis_nm == pytest.approx(px.major_axis_px * 0.25)
    assert nm.feret_min_nm == pytest.approx(px.feret_min_px * 0.25)
    assert nm.aspect_ratio == pytest.approx(px.aspect_ratio)
    assert nm.centroid_x_px == px.centroid_x_px


@pytest.mark.parametrize("angle_deg", [30.0, -50.0, 75.0])
def test_orientation_is_counter_clockwise_as_displayed(angle_deg):
    labels = np.zeros((300, 300), np.int32)
    a = math.radians(angle_deg)
    u, v = np.array([math.cos(a), -math.sin(a)]), np.array([math.sin(a), math.cos(a)])  # x right, y down
    corners = [150 + s * 80 * u + t * 12 * v for s, t in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    xs, ys = zip(*corners)
    rr, cc = polygon(ys, xs, labels.shape)
    labels[rr, cc] = 1
    row = measure(labels).iloc[0]
    assert row.orientation_deg == pytest.approx(angle_deg, abs=1.0)
    assert row.feret_angle_deg == pytest.approx(angle_deg, abs=12.0)  # the diagonal of a 160 x 24 rod
    assert row.feret_min_px == pytest.approx(24, abs=1.5)


def test_agrees_with_scikit_image_on_many_shapes():
    rng = np.random.default_rng(0)
    labels = np.zeros((400, 400), np.int32)
    for i in range(1, 25):
        cy, cx = 40 + 80 * ((i - 1) // 5), 40 + 80 * ((i - 1) % 5)
        if i % 3 == 0:
            rr, cc = disk((cy, cx), rng.uniform(5, 30), shape=labels.shape)
        else:
            n = rng.integers(3, 7)
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            rad = rng.uniform(10, 35, n)
            rr, cc = polygon(cy + rad * np.sin(ang), cx + rad * np.cos(ang), labels.shape)
        labels[rr, cc] = 3 * i  # ids need not be consecutive
    image = rng.normal(size=labels.shape)
    ours = measure(labels, image).set_index("particle_id")
    ref = pd.DataFrame(regionprops_table(labels, image, properties=(
        "label", "area", "area_filled", "euler_number", "intensity_mean", "intensity_min", "intensity_max",
        "area_convex", "feret_diameter_max", "eccentricity"))).set_index("label")
    assert list(ours.index) == list(ref.index)
    np.testing.assert_array_equal(ours.area_px2, ref.area)
    np.testing.assert_array_equal(ours.filled_area_px2, ref.area_filled)
    np.testing.assert_array_equal(ours.euler_number, ref.euler_number)
    np.testing.assert_allclose(ours.intensity_mean, ref.intensity_mean)
    np.testing.assert_allclose(ours.intensity_min, ref.intensity_min)
    np.testing.assert_allclose(ours.intensity_max, ref.intensity_max)
    for pid in ours.index:
        contours = find_contours(np.pad(labels == pid, 1).astype(float), 0.5)
        length = sum(np.linalg.norm(np.diff(c, axis=0), axis=1).sum() for c in contours)
        assert ours.loc[pid, "perimeter_px"] == pytest.approx(length)
    # the hull of the pixel squares is scikit-image's (rasterised) hull of the pixel
    # centres grown by half a pixel all round: they differ by about half a hull perimeter
    difference = ours.convex_area_px2 - ref.area_convex
    assert (difference.abs() <= 0.5 * ours.convex_perimeter_px + 2).all()
    np.testing.assert_allclose(ours.feret_max_px, ref.feret_diameter_max, rtol=0.05)
    np.testing.assert_allclose(ours.eccentricity, ref.eccentricity, atol=0.02)


def test_holes_neighbours_and_concavity():
    labels = np.zeros((120, 200), np.int32)
    labels[10:60, 10:60] = 1
    labels[25:45, 25:45] = 0  # a hole
    labels[10:60, 60:110] = 2  # touches 1
    labels[70:110, 120:190] = 3
    labels[70:100, 135:175] = 0  # a notch open to the outside (U shape): not a hole, concave
    table = measure(labels).set_index("particle_id")
    assert table.loc[1, "euler_number"] == 0
    assert table.loc[1, "filled_area_px2"] == 2500
    assert table.loc[1, "touching_neighbours"] == 1 and table.loc[2, "touching_neighbours"] == 1
    assert table.loc[3, "touching_neighbours"] == 0
    assert table.loc[3, "euler_number"] == 1
    assert table.loc[3, "solidity"] < 0.7 and table.loc[3, "convexity"] < 0.8
    assert table.loc[2, "solidity"] == pytest.approx(1.0)


def test_empty_and_invalid_inputs():
    empty = measure(np.zeros((50, 50), np.int32), pixel_size_nm=1.0)
    assert len(empty) == 0 and list(empty.columns) == feature_columns(True)
    with pytest.raises(ValueError, match="shape"):
        measure(np.zeros((5, 5), np.int32), np.zeros((6, 5)))
    with pytest.raises(ValueError, match="pixel_size_nm"):
        measure(np.zeros((5, 5), np.int32), pixel_size_nm=0.0)


def test_circularity_and_convexity_stay_within_their_definitions_down_to_one_pixel():
    labels = np.zeros((40, 40), np.int32)
    labels[2, 2] = 1
    labels[6, 6:8] = 2
    labels[10, 10], labels[11, 11] = 3, 3  # two pixels touching at a corner: two pieces of outline
    labels[20:23, 20:23] = 4
    table = measure(labels, np.ones(labels.shape)).set_index("particle_id")
    # one pixel: the diamond through its edge midpoints, area 1/2, side sqrt(1/2)
    assert table.loc[1, "perimeter_px"] == pytest.approx(4 * math.sqrt(0.5))
    assert table.loc[1, "circularity"] == pytest.approx(math.pi / 4)
    assert table.loc[3, "perimeter_px"] == pytest.approx(8 * math.sqrt(0.5))
    numbers = table.select_dtypes("number")
    assert np.isfinite(numbers.drop(columns=["nearest_neighbour_distance_px"]).to_numpy()).all()
    assert (table.circularity > 0).all() and (table.circularity <= 1).all()
    assert (table.convexity > 0).all() and (table.convexity <= 1).all()


def test_circularity_of_digital_discs_is_near_090_at_every_size_and_never_above_1():
    rng = np.random.default_rng(0)
    values = {}
    for radius in (3, 10, 40):
        for _ in range(8):
            labels = np.zeros((2 * radius + 10,) * 2, np.int32)
            centre = radius + 5 + rng.uniform(-0.5, 0.5, 2)
            labels[disk(tuple(centre), radius + rng.uniform(-0.5, 0.5), shape=labels.shape)] = 1
            values.setdefault(radius, []).append(measure(labels).circularity[0])
    for radius, found in values.items():
        assert 0.84 <= min(found) and max(found) <= 1.0, (radius, found)
    assert np.mean(values[40]) == pytest.approx(0.90, abs=0.01)
    # random polygons: still within the definition
    labels = np.zeros((400, 400), np.int32)
    for i in range(16):
        cy, cx = 50 + 100 * (i // 4), 50 + 100 * (i % 4)
        angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 9)))
        radius = rng.uniform(2, 45, len(angles))
        labels[polygon(cy + radius * np.sin(angles), cx + radius * np.cos(angles), labels.shape)] = i + 1
    table = measure(labels)
    assert (table.circularity <= 1).all() and (table.convexity <= 1).all() and (table.solidity <= 1).all()


def _regular_polygon(n_sides, radius, angle, centre=(60.3, 61.7), shape=(128, 128)):
    theta = angle + 2 * np.pi * np.arange(n_sides) / n_sides
    labels = np.zeros(shape, np.int32)
    rr, cc = polygon(centre[0] + radius * np.sin(theta), centre[1] + radius * np.cos(theta), shape)
    labels[rr, cc] = 1
    return labels


def test_angular_harmonics_read_the_symmetry_order_of_the_mask():
    # an axis-aligned w x h block of pixels: A_2 = (w^2 - h^2) / (w^2 + h^2 - 2) exactly
    row = measure(_rectangle()).iloc[0]
    assert row.angular_harmonic_2 == pytest.approx((100**2 - 30**2) / (100**2 + 30**2 - 2))
    assert row.angular_harmonic_3 == pytest.approx(0.0, abs=1e-12)  # centrosymmetric: odd orders vanish
    disc = np.zeros((128, 128), np.int32)
    disc[disk((60.3, 61.7), 12)] = 1
    disc_row = measure(disc).iloc[0]
    for n_sides in (3, 4, 6):
        rows = pd.concat([measure(_regular_polygon(n_sides, radius, angle)) for radius in (12, 30)
                          for angle in (0.0, 0.37, 1.1)])
        own = rows[f"angular_harmonic_{n_sides}"]
        # a regular n-gon's own order stands out against a disc of the same size, and against its other orders
        assert own.min() > 0.07 and own.min() > 4 * disc_row[f"angular_harmonic_{n_sides}"], (n_sides, own.tolist())
        others = [m for m in (3, 4, 5) if m != n_sides and n_sides % m]
        assert (rows[[f"angular_harmonic_{m}" for m in others]].max(axis=1) < 0.6 * own).all(), n_sides
        # and it does not depend on the turn or the size (beyond pixelation)
        assert own.max() - own.min() < 0.03, (n_sides, own.tolist())


def test_affine_harmonics_take_the_elongation_out_of_the_symmetry_order():
    """A 3 : 1 rectangle reads as a square and a 3 : 1 ellipse as a disc, at any turn, where the raw
    harmonics give the ellipse a larger A_4 than the square (elongation fills every even order)."""
    from skimage.draw import ellipse

    yy, xx = np.mgrid[:200, :200]
    rows = {}
    for name, turn in (("a", 0.0), ("b", 0.6)):
        c, s = np.cos(turn), np.sin(turn)
        u, v = c * (xx - 100.3) + s * (yy - 99.6), -s * (xx - 100.3) + c * (yy - 99.6)
        rectangle = ((np.abs(u) < 60) & (np.abs(v) < 20)).astype(np.int32)
        square = ((np.abs(u) < 35) & (np.abs(v) < 35)).astype(np.int32)
        oval = np.zeros((200, 200), np.int32)
        oval[ellipse(99.6, 100.3, 20, 60, rotation=turn)] = 1
        rows.update({f"rectangle_{name}": measure(rectangle).iloc[0], f"square_{name}": measure(square).iloc[0],
                     f"ellipse_{name}": measure(oval).iloc[0]})
    for name in ("a", "b"):
        rectangle, square, oval = rows[f"rectangle_{name}"], rows[f"square_{name}"], rows[f"ellipse_{name}"]
        assert rectangle.affine_harmonic_4 == pytest.approx(square.affine_harmonic_4, abs=0.02)
        assert square.affine_harmonic_4 > 0.25 and rectangle.affine_harmonic_8 == pytest.approx(square.affine_harmonic_8, abs=0.02)
        assert oval.angular_harmonic_4 > square.angular_harmonic_4  # the raw harmonic: elongation, not corners
        assert max(oval[f"affine_harmonic_{m}"] for m in range(3, 9)) < 0.02
        assert max(rectangle[f"affine_harmonic_{m}"] for m in (3, 5, 6, 7)) < 0.02  # centrosymmetric, 4-fold
    for n_sides in (3, 6):  # a regular polygon is its own affine normal form: the same as the raw harmonics
        row = measure(_regular_polygon(n_sides, 30, 0.37)).iloc[0]
        assert row[f"affine_harmonic_{n_sides}"] == pytest.approx(row[f"angular_harmonic_{n_sides}"], rel=0.05)
