"""The shape CNN and its training: shapes, learning, checkpoints, resumption, devices, the shipped model."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nanoshape.cnn import D_VALUES, CNNOptions, ShapeCNN, decode, default_model_dir, load_model, predict, save_model
from nanoshape.shape import ShapeParams, ShapePrior
from nanoshape.training import TrainOptions, run_training
from nanoshape.trainingdata import training_batch, training_example

TINY = TrainOptions(steps=20, batch_size=16, checkpoint_every=10, validation_every=10, validation_size=64,
                    test_size=64, warmup_steps=2, render_chunk=16)


POLAR = CNNOptions(geometry="polar")
CARTESIAN = CNNOptions(geometry="cartesian", channels=(16, 32, 64, 128), refine_from_stage=2)


@pytest.mark.parametrize("options", [CNNOptions(input_channels=2), CNNOptions(input_channels=3),
                                     dataclasses.replace(CARTESIAN, phi_per_d=False),
                                     dataclasses.replace(CARTESIAN, stem_channels=8), CARTESIAN],
                         ids=["polar-two-channels", "polar-context", "shared-phi", "stem", "cartesian"])
def test_output_shapes_and_parameter_count(options):
    model = ShapeCNN(options, rngs=nnx.Rngs(0))
    channels = options.input_channels
    assert model(jnp.zeros((3, 64, 64, channels))).shape == (3, 13 if not options.phi_per_d else 23)
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert 300_000 < n_params < 1_500_000  # a few MB on disk
    with pytest.raises(ValueError, match=f"64, 64, {channels}"):
        predict(model, np.zeros((2, 64, 64, 5 - channels), np.float32))
    out = predict(model, np.random.default_rng(0).random((5, 64, 64, channels), np.float32), batch_size=4)
    assert out["p"].shape == (5,) and out["d_probs"].shape == (5, 6)
    assert np.all(out["l_ratio"] >= 1) and np.all((out["phi"] >= 0) & (out["phi"] < np.pi))
    assert set(out["d"]) <= set(range(1, 7))
    np.testing.assert_allclose(out["d_probs"].sum(axis=1), 1, rtol=1e-5)


def _with_random_head(model: ShapeCNN, seed: int) -> ShapeCNN:
    """The model with its zero-initialised output layer drawn at random (so every output varies)."""
    state = nnx.state(model, nnx.Param)
    kernel = state["out"]["kernel"]
    kernel.set_value(0.1 * jax.random.normal(jax.random.key(seed), kernel.get_value().shape))
    nnx.update(model, state)
    return model


def test_the_polar_model_is_equivariant_to_quarter_turns():
    """A quarter turn of the crop leaves log p, log L, their variances and the d logits as they
    are and turns each d's phase vector by d pi / 2 (a turn by a moves 2 phi by -d a; np.rot90
    turns the image by a = -pi / 2 in eq. 1's theta). The cartesian model has no such property."""
    crops = training_batch(jax.random.key(0), 6)[0]  # one compiled call (six eager examples took ~9 s)
    turned = jnp.rot90(crops, k=1, axes=(1, 2))
    layout = POLAR.layout
    invariant = np.r_[layout["log_p"], layout["log_l"], layout["logvar_phi"], layout["d"]]
    forward = nnx.jit(lambda model, x: model(x))
    for options, equivariant in ((POLAR, True), (CARTESIAN, False)):
        model = _with_random_head(ShapeCNN(options, rngs=nnx.Rngs(0)), seed=1)
        raw, raw_turned = np.asarray(forward(model, crops)), np.asarray(forward(model, turned))
        same = np.allclose(raw[:, invariant], raw_turned[:, invariant], rtol=1e-4, atol=1e-5)
        turns = []
        pairs, pairs_turned = (r[:, layout["phase"]].reshape(len(r), len(D_VALUES), 2) for r in (raw, raw_turned))
        for k, d in enumerate(D_VALUES):
            before = np.arctan2(pairs[:, k, 1], pairs[:, k, 0])
            after = np.arctan2(pairs_turned[:, k, 1], pairs_turned[:, k, 0])
            turns.append(np.abs(np.mod(after - before - d * np.pi / 2 + np.pi, 2 * np.pi) - np.pi))
        assert same == equivariant, options.geometry
        assert (np.max(turns) < 1e-3) == equivariant, (options.geometry, np.max(turns))


def test_polar_resample_of_a_centred_disk():
    from nanoshape.cnn import polar_resample

    size, radius = 64, 20.0
    yy, xx = np.mgrid[:size, :size]
    centre = np.array([33.3, 30.6])  # (y, x), off the crop's middle: the grid follows the mask's centroid
    disk = (np.hypot(yy - centre[0], xx - centre[1]) <= radius).astype(np.float32)
    crop = jnp.asarray(np.stack([disk * 0.8, disk], axis=-1))
    polar = np.asarray(polar_resample(crop, angles=64, radii=32))
    assert polar.shape == (64, 32, 2)
    r = (np.arange(32) + 0.5) * (0.5 * size * np.sqrt(2) / 32)
    # the mask's centroid is the disk's centre to within its pixelation
    np.testing.assert_allclose(polar[:, r < radius - 1.5, 1], 1.0, atol=1e-6)
    np.testing.assert_allclose(polar[:, r > radius + 1.5, 1], 0.0, atol=1e-6)
    np.testing.assert_allclose(polar[:, r < radius - 1.5, 0], 0.8, atol=1e-6)
    # a quarter turn of the crop is a shift of the angles by a quarter
    turned = np.asarray(polar_resample(jnp.rot90(crop, k=1, axes=(0, 1)), angles=64, radii=32))
    np.testing.assert_allclose(turned, np.roll(polar, -16, axis=0), atol=1e-5)


@pytest.mark.parametrize("override, message", [
    ({"geometry": "spherical"}, "geometry"),
    ({"geometry": "polar", "polar_angle_strides": (2, 2)}, "one stride per stage"),
    ({"geometry": "polar", "polar_angles": 96, "polar_angle_strides": (2, 2, 4)}, "resolve"),
    ({"geometry": "polar", "polar_radii": 20}, "polar_radii"),
    ({"geometry": "polar", "phi_per_d": False}, "phi_per_d"),
])
def test_bad_architecture_options_are_refused_by_name(override, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(POLAR, **override)


def test_phase_is_read_from_the_pair_of_the_most_probable_d():
    options = CNNOptions(phi_per_d=True)
    raw = np.zeros((2, options.n_outputs), np.float32)
    # pair k of crop 0 says 2 phi = k * 0.3 rad; crop 0 is most likely d = 4, crop 1 d = 1
    for k in range(6):
        raw[:, 4 + 2 * k : 6 + 2 * k] = np.cos(0.3 * k), np.sin(0.3 * k)
    raw[0, 17 + 3] = 5.0
    raw[1, 17 + 0] = 5.0
    out = decode(jnp.asarray(raw), options)
    np.testing.assert_allclose(np.asarray(out["phi"]), [0.5 * 0.3 * 3, 0.0], atol=1e-6)
    np.testing.assert_array_equal(np.asarray(out["d_probs"]).argmax(axis=1), [3, 0])
    # every d's phase, for fits that try a second d
    np.testing.assert_allclose(np.asarray(out["phi_by_d"]), np.tile(0.15 * np.arange(6), (2, 1)), atol=1e-6)


def test_the_phase_loss_reads_the_pair_of_the_true_d():
    from nanoshape.training import loss_terms

    options = CNNOptions()
    shapes = ShapeParams(jnp.asarray([2.0, 0.5]), jnp.asarray([3, 5], jnp.int32), jnp.asarray([1.5, 2.0]),
                         jnp.asarray([0.4, 1.2]))
    raw = np.zeros((2, options.n_outputs), np.float32)
    for i, (d, phi) in enumerate(((3, 0.4), (5, 1.2))):
        raw[i, 4 + 2 * (d - 1) : 6 + 2 * (d - 1)] = np.cos(2 * phi), np.sin(2 * phi)
    exact = float(loss_terms(jnp.asarray(raw), shapes, options)["nll_phi"])
    other = raw.copy()
    other[:, 4:6] = 0.7, -0.7  # the d = 1 pair, wrong for both
    assert float(loss_terms(jnp.asarray(other), shapes, options)["nll_phi"]) == pytest.approx(exact)
    wrong = raw.copy()
    wrong[0, 8:10] = 1.0, 0.0  # the d = 3 pair of the first crop, now off by 0.4 rad
    assert float(loss_terms(jnp.asarray(wrong), shapes, options)["nll_phi"]) > exact + 0.01


def test_beta_nll_lets_high_variance_examples_pull_on_the_mean():
    from nanoshape.training import loss_terms

    options = CNNOptions()
    shapes = ShapeParams(jnp.asarray([2.0, 2.0]), jnp.asarray([2, 2], jnp.int32), jnp.asarray([1.5, 1.5]),
                         jnp.asarray([0.4, 0.4]))
    raw = np.zeros((2, options.n_outputs), np.float32)
    raw[:, 0] = raw[:, 2] = 0.5  # both crops' log p and log L off by the same amount
    raw[:, 1] = raw[:, 3] = [-2.0, 2.0]  # crop 0 confident, crop 1 unsure (log-variances)

    def mean_gradients(beta):
        grad = jax.grad(lambda r: loss_terms(r, shapes, options, nll_beta=beta)["loss"])(jnp.asarray(raw))
        return np.asarray(grad[:, 0]), np.asarray(grad[:, 2])

    # the plain NLL pulls the unsure crop's mean e^4 times less; beta = 0.5 e^2 times, beta = 1 not at all
    for beta, ratio in ((0.0, np.exp(4.0)), (0.5, np.exp(2.0)), (1.0, 1.0)):
        grad_p, grad_l = mean_gradients(beta)
        assert grad_p[0] / grad_p[1] == pytest.approx(ratio, rel=1e-4), beta
        assert grad_l[0] / grad_l[1] == pytest.approx(ratio, rel=1e-4), beta
    # the reported NLL is the plain one whatever beta
    assert float(loss_terms(jnp.asarray(raw), shapes, options, nll_beta=0.5)["nll_p"]) == pytest.approx(
        float(loss_terms(jnp.asarray(raw), shapes, options)["nll_p"]))


def test_crop_and_model_channels_must_agree():
    from nanoshape.crop import CropOptions

    with pytest.raises(ValueError, match="input_channels"):
        TrainOptions(crop=CropOptions(context=3.0), model=CNNOptions(input_channels=2))


@pytest.mark.slow  # ~40 s on a 2-core Xeon; fast in the default run: training in test_resumed_run_equals_an_uninterrupted_one
def test_a_short_training_run_lowers_the_validation_loss(tmp_path):
    options = TrainOptions(steps=60, batch_size=32, checkpoint_every=20, validation_every=20, validation_size=256,
                           warmup_steps=5, learning_rate=3e-3, render_chunk=32)
    run_training(options, tmp_path, evaluate=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [20, 40, 60]
    assert records[-1]["val_loss"] < records[0]["val_loss"] - 0.05, records
    assert (tmp_path / "model" / "model.json").exists()


def test_resumed_run_equals_an_uninterrupted_one(tmp_path):
    whole = load_model(run_training(TINY, tmp_path / "whole", evaluate=False))
    run_training(TINY, tmp_path / "resumed", stop_after=10, evaluate=False)
    assert not (tmp_path / "resumed" / "model").exists()
    resumed = load_model(run_training(TINY, tmp_path / "resumed", evaluate=False))
    crops = np.random.default_rng(1).random((8, 64, 64, 2), np.float32)
    a, b = predict(whole, crops), predict(resumed, crops)
    for key in ("p", "l_ratio", "phi", "p_log_std"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=key)
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [10, 20]


def test_save_and_load_round_trip(tmp_path):
    model = ShapeCNN(CNNOptions(hidden=32), rngs=nnx.Rngs(3))
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.options == model.options
    crops = np.random.default_rng(2).random((4, 64, 64, 2), np.float32)
    np.testing.assert_array_equal(predict(model, crops)["p"], predict(loaded, crops)["p"])
    with pytest.raises(FileNotFoundError, match="model.json"):
        load_model(tmp_path)


def test_a_model_saved_before_phi_per_d_the_context_window_and_polar_geometry_existed_loads_as_it_was_built(tmp_path):
    model = ShapeCNN(dataclasses.replace(CARTESIAN, hidden=32, phi_per_d=False), rngs=nnx.Rngs(4))
    save_model(model, tmp_path / "old")
    meta_path = tmp_path / "old" / "model.json"
    meta = json.loads(meta_path.read_text())
    for option in ("phi_per_d", "stem_channels", "input_channels", "geometry"):
        del meta["options"][option]
    meta_path.write_text(json.dumps(meta))
    loaded = load_model(tmp_path / "old")
    assert not loaded.options.phi_per_d and loaded.options.stem_channels == 0 and loaded.options.input_channels == 2
    assert loaded.options.geometry == "cartesian"
    crops = np.random.default_rng(5).random((4, 64, 64, 2), np.float32)
    np.testing.assert_array_equal(predict(model, crops)["phi"], predict(loaded, crops)["phi"])


def test_resuming_with_other_options_is_refused(tmp_path):
    run_training(TINY, tmp_path, stop_after=10, evaluate=False)
    with pytest.raises(ValueError, match="other options"):
        run_training(TrainOptions(**{**TINY.__dict__, "learning_rate": 1e-2}), tmp_path, evaluate=False)


@pytest.mark.slow  # ~60 s, two trainings compiled in a subprocess; every other training test runs the same sharded step on a one-device mesh
def test_two_devices_give_the_one_device_loss_curve(tmp_path):
    script = textwrap.dedent(f"""
        import json, jax
        from nanoshape.training import TrainOptions, run_training
        assert len(jax.devices()) == 2, jax.devices()
        for devices in (1, 2):
            options = TrainOptions(steps=12, batch_size=16, checkpoint_every=4, validation_every=1000,
                                   warmup_steps=2, render_chunk=8, devices=devices)
            run_training(options, r"{tmp_path}" + f"/d{{devices}}", evaluate=False)
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-W", "ignore", "-c", script], check=True, env=env, timeout=600)
    curves = [[json.loads(line)["train_loss"] for line in (tmp_path / f"d{n}" / "metrics.jsonl").read_text().splitlines()]
              for n in (1, 2)]
    assert len(curves[0]) == 3
    np.testing.assert_allclose(curves[0], curves[1], rtol=2e-3)


def _crops_of(prior: ShapePrior, n: int = 6) -> np.ndarray:
    """Crops of one shape, rendered like the training particles (full imaging model,
    random size, position and conditions): the prior is collapsed to a point."""
    return np.stack([np.asarray(training_example(jax.random.key(100 + i), prior=prior)[0]) for i in range(n)])


def _median_shape_jaccard(out: dict, truth: ShapeParams) -> float:
    from nanoshape.refine import shape_jaccard

    return float(np.median([shape_jaccard(ShapeParams(jnp.float32(out["p"][i]), jnp.int32(out["d"][i]),
                                                      jnp.float32(out["l_ratio"][i]), jnp.float32(out["phi"][i])), truth)
                            for i in range(len(out["p"]))]))


@pytest.mark.skipif(not (default_model_dir() / "model.json").exists(), reason="no model shipped in this checkout")
def test_shipped_model_reads_a_circle_a_square_and_a_rod():
    """Judged in shape space (re-rendered prediction against the true shape, equal area and
    centroid). A square is the hard case: at L = 1 it is both (p -> inf, phi) and the
    diamond (p = 1, phi + pi/4), so the CNN's log p lands between the two (measured: median
    shape Jaccard ~0.83 alone); the refinement, fitting the mask, settles it."""
    from nanoshape.refine import refine

    model = load_model()
    cases = {"circle": (2.0, 1.0, 0.0), "square": (30.0, 1.0, 0.3), "rod": (8.0, 3.0, 1.0)}
    for name, (p, l_ratio, phi) in cases.items():
        crops = _crops_of(ShapePrior((p, p), (2,), (l_ratio, l_ratio), (phi, phi)))
        truth = ShapeParams(jnp.float32(p), jnp.int32(2), jnp.float32(l_ratio), jnp.float32(phi))
        out = predict(model, crops)
        cnn = _median_shape_jaccard(out, truth)
        assert cnn >= (0.75 if name == "square" else 0.93), (name, cnn, out["p"], out["l_ratio"])
        refined = _median_shape_jaccard(refine(crops[..., 1], out), truth)
        assert refined >= 0.9, (name, refined)
    rod = predict(model, _crops_of(ShapePrior((8.0, 8.0), (2,), (3.0, 3.0), (1.0, 1.0))))
    assert np.all(np.abs(np.log(rod["l_ratio"] / 3.0)) < 0.15) and np.all(rod["d"] == 2)


@pytest.mark.slow  # ~21 s on a 2-core Xeon; fast in the default run: every training ends in calibrate_uncertainties
# (test_resumed_run_equals_an_uninterrupted_one runs it; the 90 % coverage is checked here, in the slow run)
def test_calibration_makes_the_90_percent_intervals_hold_90_percent_of_the_validation_set():
    from nanoshape.training import _evaluate_raw, calibrate_uncertainties

    options = TrainOptions(validation_size=400, render_chunk=50)
    model = ShapeCNN(CNNOptions(hidden=32), rngs=nnx.Rngs(6))  # untrained: its variances are far off
    calibrated = calibrate_uncertainties(model, options)
    assert calibrated.options.std_scales != (1.0, 1.0, 1.0)
    graphdef, state = nnx.split(calibrated)
    raw, truth = _evaluate_raw(graphdef, state, jax.random.key(options.validation_seed), options.validation_size, options)
    out = {k: np.asarray(v) for k, v in decode(jnp.asarray(raw), calibrated.options).items()}
    err_p = np.abs(out["log_p"] - np.log(truth[0]))
    err_l = np.abs(out["log_l"] - np.log(np.maximum(truth[2], 1.0)))
    for err, std in ((err_p, out["p_log_std"]), (err_l, out["l_ratio_log_std"])):
        assert np.mean(err <= 1.6448536 * std) == pytest.approx(0.9, abs=0.01)
    # the weights, and so the parameters, are unchanged
    crops = np.random.default_rng(7).random((4, 64, 64, 2), np.float32)
    np.testing.assert_array_equal(predict(model, crops)["p"], predict(calibrated, crops)["p"])
