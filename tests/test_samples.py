"""Samples: sizes per micrograph and sample, bootstrap intervals, pairwise tests (nanoshape.samples)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nanoshape.samples import (
    assign_samples,
    bootstrap_intervals,
    compare_pair,
    fitted_extents,
    holm,
    pairwise_tests,
    read_sample_table,
    sample_tables,
    shape_sizes,
    size_summary,
    size_unit,
    sizes_in,
)

CV = 0.1
SIGMA = np.sqrt(np.log1p(CV**2))


def _lognormal(rng: np.random.Generator, mean: float, n: int) -> np.ndarray:
    """Sizes whose population mean is ``mean`` and whose cv is :data:`CV` (as nanoshape.scene draws them)."""
    return mean * np.exp(rng.normal(0.0, SIGMA, n) - SIGMA**2 / 2)


def test_intervals_cover_the_population_values_at_the_stated_rate():
    """95 % intervals of the mean, median, cv and a group share hold the truth in 95 +- 3 % of 200 samples."""
    rng = np.random.default_rng(1)
    truth = {"mean": 20.0, "median": 20.0 * np.exp(-SIGMA**2 / 2), "cv": CV, "share_group_1": 0.6}
    hits = dict.fromkeys(truth, 0)
    draws = 200
    for i in range(draws):
        sizes = _lognormal(rng, 20.0, 100)
        groups = rng.choice([1, 2, 3], size=100, p=[0.6, 0.3, 0.1])
        ci = bootstrap_intervals(sizes, groups, sample=f"draw {i}", seed=0, n_boot=1000)
        for name, value in truth.items():
            hits[name] += ci[f"{name}_ci_low"] <= value <= ci[f"{name}_ci_high"]
            assert ci[f"{name}_ci_low"] <= ci[name] <= ci[f"{name}_ci_high"]
    coverage = {name: count / draws for name, count in hits.items()}
    assert all(0.92 <= c <= 0.98 for c in coverage.values()), coverage


def test_samples_five_percent_apart_are_told_apart_and_equal_ones_are_not():
    """Mann-Whitney and KS at 0.05, 150 particles per sample, cv 0.1: power >= 80 % for a 5 % shift, false
    positives <= 8 % (5 % + 2 standard errors over 200 pairs) for two samples of one distribution."""
    rng = np.random.default_rng(2)
    draws = 200
    rejected = {"mw_shift": 0, "ks_shift": 0, "mw_same": 0, "ks_same": 0}
    for _ in range(draws):
        a, b, c = _lognormal(rng, 20.0, 150), _lognormal(rng, 21.0, 150), _lognormal(rng, 20.0, 150)
        shifted, same = compare_pair(a, b), compare_pair(a, c)
        rejected["mw_shift"] += shifted["mannwhitney_p"] < 0.05
        rejected["ks_shift"] += shifted["ks_p"] < 0.05
        rejected["mw_same"] += same["mannwhitney_p"] < 0.05
        rejected["ks_same"] += same["ks_p"] < 0.05
    rate = {k: v / draws for k, v in rejected.items()}
    assert rate["mw_shift"] >= 0.8 and rate["ks_shift"] >= 0.7, rate
    assert rate["mw_same"] <= 0.08 and rate["ks_same"] <= 0.08, rate


def test_effect_sizes_at_their_extremes():
    a, b = np.arange(10.0, 20.0), np.arange(30.0, 40.0)
    result = compare_pair(a, b, np.ones(10, int), np.full(10, 2))
    assert result["ks_statistic"] == 1.0
    assert result["rank_biserial"] == 1.0  # every particle of b is larger than every one of a
    assert compare_pair(b, a)["rank_biserial"] == -1.0
    assert result["relative_difference_mean"] == pytest.approx(34.5 / 14.5 - 1)
    assert result["cramers_v"] == pytest.approx(1.0)  # disjoint groups
    same = compare_pair(a, a, np.array([1, 2] * 5), np.array([1, 2] * 5))
    assert same["ks_statistic"] == 0.0 and same["rank_biserial"] == 0.0 and same["cramers_v"] == 0.0
    assert same["chi2_p"] == pytest.approx(1.0)


def test_a_test_without_enough_data_gives_nan_not_an_error():
    result = compare_pair(np.array([1.0]), np.array([2.0, 3.0]), np.array([1]), np.array([1, 1]))
    assert np.isnan(result["ks_p"]) and np.isnan(result["chi2_p"])  # one size; one group only


def test_holm_matches_a_hand_computed_example():
    # sorted 0.01, 0.02, 0.04 (m = 3): 0.03, 0.04, 0.04 (monotone); NaN stays NaN and does not count
    np.testing.assert_allclose(holm([0.04, 0.01, np.nan, 0.02]), [0.04, 0.03, np.nan, 0.04])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])


def test_pairwise_tests_correct_within_each_test_over_the_pairs():
    rng = np.random.default_rng(3)
    sizes = {"c": _lognormal(rng, 20.0, 80), "a": _lognormal(rng, 20.0, 80), "b": _lognormal(rng, 26.0, 80)}
    table = pairwise_tests(sizes)
    assert list(zip(table.sample_a, table.sample_b)) == [("a", "b"), ("a", "c"), ("b", "c")]
    np.testing.assert_allclose(table.ks_p_holm, holm(table.ks_p))
    np.testing.assert_allclose(table.mannwhitney_p_holm, holm(table.mannwhitney_p))
    assert (table.mannwhitney_p_holm >= table.mannwhitney_p).all()
    assert table.set_index(["sample_a", "sample_b"]).loc[("a", "b"), "mannwhitney_p_holm"] < 1e-6


def test_intervals_are_seeded_by_sample_name_not_by_the_other_samples():
    rng = np.random.default_rng(4)
    x = _lognormal(rng, 20.0, 60)
    first = bootstrap_intervals(x, sample="batch 1", seed=5, n_boot=300)
    assert bootstrap_intervals(x, sample="batch 1", seed=5, n_boot=300) == first
    assert bootstrap_intervals(x, sample="batch 2", seed=5, n_boot=300) != first


def test_fitted_extents_are_the_superellipse_axes():
    """d = 2 shapes: extents 2 s and 2 s / L at the area-equivalent diameter (the renderer's own area)."""
    import jax.numpy as jnp

    from nanoshape.shape import ShapeParams, area

    for p, l_ratio in ((2.0, 1.0), (4.0, 3.0), (20.0, 1.05), (0.8, 1.5)):
        unit_area = float(area(ShapeParams(jnp.float32(p), jnp.int32(2), jnp.float32(l_ratio), jnp.float32(0.3))))
        diameter = 10.0 * 2 * np.sqrt(unit_area / np.pi)  # the shape at scale 10
        length, width = fitted_extents(np.array([p]), np.array([l_ratio]), np.array([diameter]))
        assert length[0] == pytest.approx(20.0, rel=1e-4) and width[0] == pytest.approx(20.0 / l_ratio, rel=1e-4)


def _run_tables():
    """Two micrographs of sample A (one 1 nm/px, one 2 nm/px), one of B, one of C without a pixel size."""
    particles = pd.DataFrame({
        "image": ["m1", "m1", "m2", "m3"],
        "sample": ["A", "A", "A", "B"],
        "pixel_size_nm": [1.0, 1.0, 2.0, 1.0],
        "area_nm2": [100.0, 300.0, 400.0, 50.0],
        "equivalent_diameter_nm": [10.0, 20.0, 30.0, 8.0],
        "group": [1, 1, 2, 2],
        "group_name": ["rods", "rods", "spheres", "spheres"],
    })
    fields = pd.DataFrame({"image": ["m1", "m2", "m3", "m4"], "sample": ["A", "A", "B", "C"],
                           "height_px": [10, 20, 10, 30], "width_px": [100, 10, 10, 30],
                           "pixel_size_nm": [1.0, 2.0, 1.0, 0.5]})
    return particles, fields


def test_sizes_per_micrograph_and_sample_with_coverage():
    particles, fields = _run_tables()
    by_image = size_summary(particles, fields, "image", "nm").set_index("image")
    assert by_image.loc["m1", "coverage_fraction"] == pytest.approx(400 / 1000)  # 400 nm2 of 1000 px at 1 nm/px
    assert by_image.loc["m2", "coverage_fraction"] == pytest.approx(400 / (200 * 4))
    assert by_image.loc["m4", "particles"] == 0 and by_image.loc["m4", "coverage_fraction"] == 0
    assert by_image.loc["m1", "mean_equivalent_diameter_nm"] == 15.0
    by_sample = size_summary(particles, fields, "sample", "nm").set_index("sample")
    assert by_sample.loc["A", "micrographs"] == 2 and by_sample.loc["A", "particles"] == 3
    assert by_sample.loc["A", "coverage_fraction"] == pytest.approx(800 / (1000 + 800))  # areas in nm2
    assert by_sample.loc["A", "median_equivalent_diameter_nm"] == 20.0
    assert by_sample.loc["A", "sd_equivalent_diameter_nm"] == pytest.approx(10.0)
    assert by_sample.loc["A", "cv_equivalent_diameter"] == pytest.approx(0.5)
    assert not any(c.startswith("polydispersity") for c in by_sample.columns)


def test_one_micrograph_without_pixel_size_puts_every_size_in_px():
    particles, fields = _run_tables()
    assert size_unit(fields.pixel_size_nm) == "nm"
    fields.loc[3, "pixel_size_nm"] = np.nan
    particles = pd.concat([particles, pd.DataFrame({"image": ["m4"], "sample": ["C"], "pixel_size_nm": [np.nan],
                                                    "area_px2": [16.0], "equivalent_diameter_px": [4.5],
                                                    "group": [1], "group_name": ["rods"]})], ignore_index=True)
    assert size_unit(fields.pixel_size_nm) == "px"
    np.testing.assert_allclose(sizes_in(particles, "equivalent_diameter", "px"), [10, 20, 15, 8, 4.5])
    np.testing.assert_allclose(sizes_in(particles, "area", "px", power=2), [100, 300, 100, 50, 16])
    tables = sample_tables(particles, fields, n_boot=200)
    assert tables.unit == "px" and tables.size == "equivalent_diameter_px"
    assert "mean_equivalent_diameter_px" in tables.samples and "mean_equivalent_diameter_nm" not in tables.samples
    row = tables.micrographs.set_index("image").loc["m2"]
    assert row.mean_equivalent_diameter_px == 15.0 and row.coverage_fraction == pytest.approx(100 / 200)


def test_sample_tables_give_intervals_shares_and_pairs():
    rng = np.random.default_rng(6)
    n = 120
    particles = pd.DataFrame({"image": np.repeat(["a1", "a2", "b1"], n), "sample": np.repeat(["A", "A", "B"], n),
                              "pixel_size_nm": 1.0, "area_nm2": 100.0,
                              "equivalent_diameter_nm": np.concatenate([_lognormal(rng, 20, 2 * n), _lognormal(rng, 24, n)]),
                              "group": rng.choice([1, 2], 3 * n)})
    fields = pd.DataFrame({"image": ["a1", "a2", "b1"], "sample": ["A", "A", "B"], "height_px": 512, "width_px": 512,
                           "pixel_size_nm": 1.0})
    tables = sample_tables(particles, fields, n_boot=500, seed=3)
    row = tables.samples.set_index("sample").loc["A"]
    assert row.mean_equivalent_diameter_nm_ci_low < row.mean_equivalent_diameter_nm < row.mean_equivalent_diameter_nm_ci_high
    assert row.share_group_1 + row.share_group_2 == pytest.approx(1.0)
    alone = sample_tables(particles[particles["sample"] == "A"], fields[fields["sample"] == "A"], n_boot=500, seed=3)
    assert alone.samples.iloc[0].mean_equivalent_diameter_nm_ci_low == row.mean_equivalent_diameter_nm_ci_low
    (pair,) = tables.pairs.itertuples()
    assert (pair.sample_a, pair.sample_b) == ("A", "B") and pair.mannwhitney_p_holm < 1e-6
    mean_b = tables.samples.set_index("sample").loc["B"].mean_equivalent_diameter_nm
    assert pair.relative_difference_mean == pytest.approx(mean_b / row.mean_equivalent_diameter_nm - 1)
    assert alone.pairs.empty


def test_rod_length_and_width_come_from_the_fitted_shape():
    particles = pd.DataFrame({"pixel_size_nm": [0.5, 0.5, 0.5], "group_name": ["rods", "cubes", "spheres"],
                              "p_image": [4.0, 20.0, 2.0], "d_image": [2, 2, 2], "l_ratio_image": [3.0, 1.0, 1.0],
                              "p": [5.0, 5.0, 5.0], "d": [2, 2, 2], "l_ratio": [1.0, 1.0, 1.0],
                              "equivalent_diameter_fit_nm": [12.0, 20.0, 10.0],
                              "equivalent_diameter_nm": [99.0, 99.0, 99.0]})
    sizes = shape_sizes(particles, "nm")
    length, width = fitted_extents(np.array([4.0, 20.0]), np.array([3.0, 1.0]), np.array([12.0, 20.0]))
    assert sizes.rod_length_nm[0] == pytest.approx(length[0]) and sizes.rod_width_nm[0] == pytest.approx(width[0])
    assert sizes.rod_length_nm[0] == pytest.approx(3 * sizes.rod_width_nm[0])
    assert sizes.cube_edge_nm[1] == pytest.approx(length[1]) and np.isnan(sizes.rod_length_nm[1])
    assert sizes.isna().iloc[2].all()  # a sphere has neither
    in_px = shape_sizes(particles, "px")
    assert in_px.rod_length_px[0] == pytest.approx(length[0] / 0.5)


def test_sample_table_file_overrides_the_folder(tmp_path):
    table = tmp_path / "samples.csv"
    table.write_text("file,sample\nbatch/a1.tif,hot injection\na2.dm4,LARP\n")
    samples = read_sample_table(table)
    assert samples == {"a1": "hot injection", "a2": "LARP"}
    paths = {"a1": "/data/run7/a1.tif", "a2": "/data/run7/a2.dm4", "a3": "/data/run7/a3.tif"}
    assert assign_samples(paths) == {"a1": "run7", "a2": "run7", "a3": "run7"}
    assert assign_samples(paths, samples) == {"a1": "hot injection", "a2": "LARP", "a3": "run7"}


@pytest.mark.parametrize("text, problem", [("name,sample\na.tif,x\n", "needs the columns file,sample"),
                                           ("file,sample\na.tif,\n", "row 2"),
                                           ("file,sample\na.tif,x\nb.tif,y\na.tif,z\n", "row 4")])
def test_a_bad_sample_table_names_the_file_and_the_problem(tmp_path, text, problem):
    path = tmp_path / "samples.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem) as error:
        read_sample_table(path)
    assert str(path) in str(error.value)
    with pytest.raises(ValueError, match="not found"):
        read_sample_table(tmp_path / "missing.csv")


def test_resampling_micrographs_weighs_each_particle_by_its_micrographs_draws():
    from nanoshape.samples import _size_statistics, _weighted_size_statistics

    x = np.random.default_rng(0).lognormal(0, 0.3, 11)
    for repeats in np.random.default_rng(1).integers(0, 4, (6, 11)):
        np.testing.assert_allclose(_weighted_size_statistics(x, repeats[None].astype(float))[0],
                                   _size_statistics(np.repeat(x, repeats)))


def _micrograph_samples(rng, mean, micrographs=10, per_micrograph=30, spread=0.02):
    """Sizes of a sample whose micrographs each scale every size by exp(N(0, spread)) (their own imaging)."""
    offsets = rng.normal(0.0, spread, micrographs)
    sizes = np.concatenate([_lognormal(rng, mean, per_micrograph) * np.exp(o) for o in offsets])
    return sizes, np.repeat(np.arange(micrographs), per_micrograph)


def test_micrographs_with_their_own_imaging_need_intervals_that_resample_micrographs():
    """A 2 % spread between micrographs (10 x 30 particles): particle intervals hold the mean in < 88 % of 150
    samples, micrograph intervals in >= 89 % (over 200 draws: particles 82.5 %, micrographs 99.0 % with the widening
    for few micrographs, 92.5 % without it)."""
    rng = np.random.default_rng(3)
    truth = 20.0 * np.exp(0.02**2 / 2)
    hits = {"particles": 0, "micrographs": 0}
    draws = 150
    for i in range(draws):
        sizes, micrograph = _micrograph_samples(rng, 20.0)
        for name, clusters in (("particles", None), ("micrographs", micrograph)):
            ci = bootstrap_intervals(sizes, clusters=clusters, sample=str(i), n_boot=600)
            hits[name] += ci["mean_ci_low"] <= truth <= ci["mean_ci_high"]
    assert hits["particles"] / draws < 0.88 and hits["micrographs"] / draws >= 0.89, hits


def test_the_micrograph_level_test_keeps_its_false_positive_rate_where_particle_tests_do_not():
    rng = np.random.default_rng(8)
    rejected = {"mannwhitney_p": 0, "micrograph_welch_p": 0}
    draws = 200
    for _ in range(draws):
        (a, ca), (b, cb) = _micrograph_samples(rng, 20.0, spread=0.03), _micrograph_samples(rng, 20.0, spread=0.03)
        result = compare_pair(a, b, clusters_a=ca, clusters_b=cb)
        assert result["micrographs_a"] == 10
        for key in rejected:
            rejected[key] += result[key] < 0.05
    assert rejected["mannwhitney_p"] / draws > 0.15 and rejected["micrograph_welch_p"] / draws <= 0.08, rejected


def test_samples_of_enough_micrographs_get_micrograph_intervals():
    rng = np.random.default_rng(9)
    sizes, micrograph = _micrograph_samples(rng, 20.0, micrographs=6, per_micrograph=20)
    images = np.array([f"a{m}" for m in micrograph] + ["b0"] * 20 + ["b1"] * 20)
    particles = pd.DataFrame({"image": images, "sample": [i[0] for i in images], "pixel_size_nm": 1.0,
                              "area_nm2": 300.0, "equivalent_diameter_nm": np.concatenate([sizes, _lognormal(rng, 20, 40)])})
    fields = particles.groupby("image", as_index=False).first()[["image", "sample", "pixel_size_nm"]]
    fields["height_px"], fields["width_px"] = 256, 256
    tables = sample_tables(particles, fields, n_boot=300)
    assert dict(zip(tables.samples["sample"], tables.samples.interval_resamples)) == {
        "a": "particles and micrographs, the wider", "b": "particles"}
    a = tables.samples.set_index("sample").loc["a"]
    x = sizes[np.isfinite(sizes)]
    for clusters in (None, micrograph):  # the reported interval holds both
        ci = bootstrap_intervals(x, clusters=clusters, sample="a", n_boot=300)
        assert a.mean_equivalent_diameter_nm_ci_low <= ci["mean_ci_low"] and ci["mean_ci_high"] <= a.mean_equivalent_diameter_nm_ci_high
    (pair,) = tables.pairs.itertuples()
    assert (pair.micrographs_a, pair.micrographs_b) == (6, 2) and np.isfinite(pair.micrograph_welch_p_holm)


def test_chi_square_on_group_counts_keeps_its_false_positive_rate_and_sees_a_shifted_share():
    """Groups of 200 particles per sample, shares 60/30/10 %: equal shares rejected in <= 8 % of 200 pairs, shares
    45/45/10 % in >= 80 %."""
    rng = np.random.default_rng(11)
    same = shifted = 0
    sizes = np.ones(200)  # the sizes do not enter the chi-square
    for _ in range(200):
        a = rng.choice([1, 2, 3], 200, p=[0.6, 0.3, 0.1])
        same += compare_pair(sizes, sizes, a, rng.choice([1, 2, 3], 200, p=[0.6, 0.3, 0.1]))["chi2_p"] < 0.05
        shifted += compare_pair(sizes, sizes, a, rng.choice([1, 2, 3], 200, p=[0.45, 0.45, 0.1]))["chi2_p"] < 0.05
    assert same / 200 <= 0.08 and shifted / 200 >= 0.8, (same, shifted)
