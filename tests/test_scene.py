"""Scenes: label images agree with the truth table."""

import jax
import numpy as np
import pytest

from nanoshape.scene import POPULATIONS, SceneOptions, render_scene


@pytest.fixture(scope="module")
def scene():
    options = SceneOptions(height_px=512, width_px=512, n_particles=70, pixel_size_nm=0.5,
                           populations=tuple(POPULATIONS.values()), touching_fraction=0.3)
    return render_scene(jax.random.key(11), options)


def test_labels_match_truth_table(scene):
    truth, labels = scene.truth, scene.labels
    assert labels.dtype == np.uint32 and labels.shape == scene.image.shape
    ids = np.unique(labels[labels > 0])
    assert set(ids) <= set(truth.particle_id)
    assert len(truth) >= 30
    # particles not in contact and inside the image: visible area equals the rendered area (within AA)
    free = truth[~truth.in_contact & ~truth.touches_border]
    assert len(free) >= 10
    np.testing.assert_allclose(free.visible_area_px, free.area_px, rtol=0.03, atol=3)
    for row in free.itertuples():
        ys, xs = np.nonzero(labels == row.particle_id)
        assert xs.mean() == pytest.approx(row.centroid_x_px, abs=0.5)
        assert ys.mean() == pytest.approx(row.centroid_y_px, abs=0.5)


def test_sizes_follow_the_requested_diameter(scene):
    truth = scene.truth
    # 20 nm median diameter with 8% spread
    assert truth.equivalent_diameter_nm.median() == pytest.approx(20.0, rel=0.08)
    assert np.all(truth.major_axis_nm >= truth.minor_axis_nm)
    rods = truth[truth.population == "rods"]
    spheres = truth[truth.population == "spheres"]
    assert (rods.major_axis_nm / rods.minor_axis_nm).median() > 2.0
    assert (spheres.major_axis_nm / spheres.minor_axis_nm).median() < 1.15


def test_some_particles_touch_and_particles_are_darker(scene):
    truth, labels, image = scene.truth, scene.labels, scene.image
    assert truth.in_contact.sum() >= 4
    assert image[labels > 0].mean() < image[labels == 0].mean() - 0.2


def test_same_key_same_scene():
    options = SceneOptions(height_px=128, width_px=128, n_particles=8)
    a, b = render_scene(jax.random.key(3), options), render_scene(jax.random.key(3), options)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    c = render_scene(jax.random.key(4), options)
    assert not np.array_equal(a.labels, c.labels)


def test_a_scene_draws_rounded_polygons_beside_eq1_with_their_truth():
    """Populations of another family are drawn from its own radius: each free polygon's label is
    the silhouette of its truth row (n_sides, rounding, phi, scale, centre); eq. 1's rows keep
    their p, d, L, and a scene of eq. 1 alone has no family columns."""
    import jax.numpy as jnp

    from nanoshape.family import PolygonParams
    from nanoshape.render import silhouette
    from nanoshape.scene import POLYGON_POPULATIONS

    populations = (*POLYGON_POPULATIONS.values(), POPULATIONS["rods"])
    scene = render_scene(jax.random.key(5), SceneOptions(height_px=256, width_px=256, n_particles=24,
                                                         populations=populations, touching_fraction=0.0))
    truth, labels = scene.truth, scene.labels
    polygons = truth[truth.shape_family == "polygon"]
    rods = truth[truth.shape_family == "superellipse"]
    assert len(polygons) >= 8 and len(rods) >= 1
    assert polygons[["p", "d", "l_ratio"]].isna().all().all() and rods[["n_sides", "rounding"]].isna().all().all()
    assert (rods.d == 2).all() and (rods.major_axis_nm / rods.minor_axis_nm).min() > 2
    expected = {"polygon_triangles": 3, "polygon_squares": 4, "polygon_hexagons": 6}
    assert (polygons.n_sides == polygons.population.map(expected)).all()
    free = polygons[~polygons.touches_border]
    assert len(free) >= 5
    plain = render_scene(jax.random.key(5), SceneOptions(height_px=64, width_px=64, n_particles=2))
    assert "shape_family" not in plain.truth and "n_sides" not in plain.truth
    for row in free.itertuples():
        shape = PolygonParams(jnp.int32(row.n_sides), jnp.float32(row.rounding), jnp.float32(row.phi))
        drawn = np.asarray(silhouette(shape, jnp.asarray([row.center_x_px, row.center_y_px], jnp.float32),
                                      jnp.float32(row.scale_px), height=256, width=256)) > 0.5
        mask = labels == row.particle_id
        assert (drawn & mask).sum() / (drawn | mask).sum() > 0.95, row.population
