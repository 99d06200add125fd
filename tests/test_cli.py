"""The command line: help, validation errors, and `nanoshape render`."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nanoshape.cli import main


def test_usage_lists_commands(capsys):
    assert main([]) == 0
    assert "render" in capsys.readouterr().out


def test_help_lists_options_with_defaults(capsys):
    assert main(["render", "--help"]) == 0
    out = capsys.readouterr().out
    assert "n_shapes: 48" in out and "p_range:" in out


def test_bad_override_is_a_clear_error(capsys):
    assert main(["render", "no_such_option=1"]) == 2
    assert "no_such_option" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2


def test_render_sheet_writes_png_and_csv(tmp_path, capsys):
    out = tmp_path / "sheet"
    assert main(["render", f"output={out}", "n_shapes=6", "columns=3", "size_px=48", "seed=5"]) == 0
    table = pd.read_csv(out / "sheet.csv")
    assert list(table.columns[:5]) == ["index", "p", "d", "l_ratio", "phi"]
    assert len(table) == 6 and table.l_ratio.min() >= 1 and table.phi.max() < 3.1416
    with Image.open(out / "sheet.png") as png:
        assert png.size[0] > 200 and png.size[1] > 100
    assert str(out / "sheet.png") in capsys.readouterr().out
    from omegaconf import OmegaConf  # the run's options, as Hydra keeps a sweep job's

    assert OmegaConf.load(out / ".hydra" / "config.yaml").n_shapes == 6
    assert "seed=5" in OmegaConf.load(out / ".hydra" / "overrides.yaml")


def test_render_draws_another_shape_family(tmp_path):
    """``shape.family=polygon``: the sheet is drawn from the family's prior and its table holds the
    family's parameters; a scene takes the rounded-polygon populations."""
    out = tmp_path / "sheet"
    assert main(["render", f"output={out}", "shape.family=polygon", "n_shapes=6", "columns=3", "size_px=48",
                 "polygon_prior.n_sides_values=[3,5]"]) == 0
    table = pd.read_csv(out / "sheet.csv")
    assert list(table.columns) == ["index", "n_sides", "rounding", "phi", "scale_px"]
    assert set(table.n_sides) <= {3, 5} and table.rounding.between(0.03, 0.9).all()
    assert (table.phi < 2 * np.pi / table.n_sides).all()
    assert main(["render", f"output={tmp_path / 'scene'}", "mode=scene", "n_scenes=1", "scene_size_px=96",
                 "scene_particles=3", "populations=[polygon_squares]"]) == 0
    truth = pd.read_csv(tmp_path / "scene" / "truth" / "scene_000.csv")
    assert len(truth) and (truth.n_sides == 4).all() and (truth.shape_family == "polygon").all()
    with pytest.raises(SystemExit, match="unknown shape family 'gielis'"):
        main(["render", f"output={tmp_path / 'bad'}", "shape.family=gielis"])
    assert not (tmp_path / "bad").exists()


def test_analyze_without_input_runs_on_the_bundled_examples_and_evaluate_scores_them(bundled_run, tmp_path):
    """`nanoshape analyze output=<dir> workers=0` (the shared run of conftest.bundled_run)."""
    from nanoshape.examples import bundled_examples_dir

    out, printed = bundled_run
    assert str(out / "particles.csv") in printed
    particles = pd.read_csv(out / "particles.csv")
    assert set(particles.image) == {"mixed_shapes", "cubes_and_rods", "crowded_spheres"}
    assert "area_nm2" in particles.columns  # the examples carry their pixel size
    assert (out / "config.yaml").read_text().count("threshold_fraction") == 1
    from omegaconf import OmegaConf

    assert list(OmegaConf.load(out / ".hydra" / "overrides.yaml")) == [f"output={out}", "workers=0"]
    assert OmegaConf.load(out / ".hydra" / "config.yaml").output == str(out)
    evaluation = tmp_path / "scores.json"
    assert main(["evaluate", f"predictions={out}", f"masks={bundled_examples_dir() / 'truth'}", f"output={evaluation}"]) == 0
    import json

    pooled = json.loads(evaluation.read_text())["pooled"]
    assert pooled["n_images"] == 3 and pooled["f1"] >= 0.95
    assert (out / "report.html").stat().st_size > 100_000 and (out / "groups" / "classifier.skops").exists()
    # the groups are the rendered populations (spheres, cubes, rods, triangles, stars)
    import tifffile
    from sklearn.metrics import adjusted_rand_score

    from nanoshape.evaluate import match_instances

    truth = {}
    for stem in particles.image.unique():
        table = pd.read_csv(bundled_examples_dir() / "truth" / f"{stem}.csv").set_index("particle_id").population
        pairs = match_instances(tifffile.imread(out / "labels" / f"{stem}.tif"),
                                tifffile.imread(bundled_examples_dir() / "truth" / f"{stem}.tif"))["pairs"]
        truth |= {(stem, int(p)): table[int(t)] for p, t in pairs}
    population = [truth.get((s, int(p))) for s, p in zip(particles.image, particles.particle_id)]
    matched = [i for i, name in enumerate(population) if name is not None]
    ari = adjusted_rand_score([population[i] for i in matched], particles.group.to_numpy()[matched])
    assert ari >= 0.9, ari
    # a micrograph of that run sorted by the run's classifier lands in the same groups
    sorted_out = tmp_path / "classified"
    one = bundled_examples_dir() / "mixed_shapes.tif"
    assert main(["classify", str(one), f"model={out}", f"output={sorted_out}", "workers=0"]) == 0
    again = pd.read_csv(sorted_out / "particles.csv")
    before = particles[particles.image == "mixed_shapes"]
    assert len(again) == len(before) > 20 and (again.group.to_numpy() == before.group.to_numpy()).mean() >= 0.95


def test_analyze_reports_a_missing_input_by_name(tmp_path, capsys):
    with pytest.raises(SystemExit, match="no_such_folder"):
        main(["analyze", f"input={tmp_path / 'no_such_folder'}", f"output={tmp_path / 'run'}"])


def test_classify_needs_an_earlier_run(tmp_path):
    with pytest.raises(SystemExit, match="model="):
        main(["classify", f"output={tmp_path}"])
    with pytest.raises(SystemExit, match="classifier"):
        main(["classify", f"model={tmp_path}", f"output={tmp_path / 'out'}"])


def test_evaluate_needs_both_folders(tmp_path):
    with pytest.raises(SystemExit, match="masks="):
        main(["evaluate", f"predictions={tmp_path}"])


@pytest.mark.parametrize("override, message", [("groups.parameter_space=fourier", "parameter_space"),
                                               ("refine.d_candidates=9", "d_candidates"),
                                               ("image_fit.second_d_min_prob=2", "second_d_min_prob"),
                                               ("segment.polarity=sideways", "polarity")])
def test_a_bad_option_stops_analyze_with_its_name_before_writing(tmp_path, override, message):
    with pytest.raises(SystemExit, match=message):
        main(["analyze", override, f"output={tmp_path / 'run'}"])
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # ~35 s on a 2-core Xeon; fast in the default run: the trainer (tests/test_segnet.py::
# test_a_few_training_steps_lower_the_loss_and_save_a_model) and the command's options (tests/test_config.py)
def test_train_segmentation_trains_a_small_detector_and_says_its_figures(tmp_path, capsys):
    import json

    import jax
    from PIL import Image

    from nanoshape.scene import evaluation_scene_options, render_scene

    data = tmp_path / "annotated"
    for folder in ("images", "masks"):
        (data / folder).mkdir(parents=True)
    for i in range(3):  # by the fixed rule, m0 and m1 are for training, m2 for validation
        scene = render_scene(jax.random.key(i), evaluation_scene_options(i, side_px=128))
        grey = np.clip(255 * scene.image / scene.image.max(), 0, 255).astype(np.uint8)
        Image.fromarray(grey).save(data / "images" / f"m{i}.png")
        Image.fromarray(scene.labels.astype(np.uint16)).save(data / "masks" / f"m{i}.png")
    out = tmp_path / "segnet"
    assert main(["train-segmentation", f"data=[{data}]", f"output={out}", "rendered=1",
                 "evaluation_scenes=1", "train.steps=4", "train.batch_size=2", "train.patch_px=64",
                 "train.checkpoint_every=2", "train.log_every=2", "train.model.channels=[4,8]"]) == 0
    printed = capsys.readouterr().out
    assert f"model saved to {out / 'model'}" in printed and "rendered (1 images" in printed
    figures = json.loads((out / "test.json").read_text())
    assert set(figures) == {"validation", "rendered", "rendered_hard"}
    assert figures["validation"]["n_images"] == 1  # m2 alone: it was not trained on
    assert 0.0 <= figures["rendered"]["f1"] <= 1.0
    assert (out / "model" / "segnet.json").exists()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    # the figures are the new detector's (they were once the classical segmentation's)
    from nanoshape.evaluate import match_instances
    from nanoshape.segment import SegmentOptions, segment

    image = np.asarray(Image.open(data / "images" / "m2.png"), np.float32)
    truth = np.asarray(Image.open(data / "masks" / "m2.png")).astype(np.int64)
    for method, model in (("learned", str(out / "model")), ("classical", "")):
        found = match_instances(segment(image, SegmentOptions(method=method, model=model)).labels, truth)
        assert (found["tp"] == figures["validation"]["tp"] and found["fp"] == figures["validation"]["fp"]) == \
            (method == "learned"), (method, found, figures["validation"])


def test_misspelled_keys_and_stray_words_are_refused_with_what_was_meant(capsys):
    assert main(["analyze", "pixelsize=0.5"]) == 2
    assert "did you mean pixel_size_nm?" in capsys.readouterr().err
    assert main(["train", "steps=3"]) == 2
    assert "did you mean train.steps?" in capsys.readouterr().err
    assert main(["analyze", "--pixel-size", "0.5"]) == 2
    assert "did you mean pixel_size_nm?" in capsys.readouterr().err
    assert main(["analyze", "a.png", "b.png"]) == 2  # a glob the shell expanded
    assert "quote a glob" in capsys.readouterr().err
    assert main(["train", "something"]) == 2
    assert main(["analyze", "hydra.run.dir=elsewhere"]) == 2
    assert "output=" in capsys.readouterr().err
    assert main(["train", "-m", "train.steps=2,3", "--cfg", "job"]) == 2  # Hydra's ValueError, once a traceback
    assert "exclude each other" in capsys.readouterr().err


def test_positional_input_and_dashed_options_compose_like_overrides(tmp_path, capsys):
    from omegaconf import OmegaConf

    name = str(tmp_path / "my data" / "a,b [1].tif")  # a comma would be a sweep, brackets a list
    out = tmp_path / "run"
    assert main(["analyze", name, "--pixel-size-nm", "0.5", "--segment.method=classical", f"output={out}",
                 "--cfg", "job"]) == 0
    cfg = OmegaConf.create(capsys.readouterr().out)
    assert cfg.input == name and cfg.pixel_size_nm == 0.5 and cfg.segment.method == "classical"
    assert cfg.output == str(out) and not out.exists()  # --cfg prints, runs nothing


def test_provenance_records_the_command_line_as_typed_not_as_rewritten_for_hydra(tmp_path, capsys, monkeypatch):
    import shlex

    from nanoshape import provenance

    monkeypatch.setattr(provenance, "typed_command_line", None)
    typed = ["analyze", str(tmp_path / "my data"), f"output={tmp_path / 'run'}", "--cfg", "job"]
    assert main(typed) == 0
    assert provenance.provenance()["command_line"] == shlex.join(["nanoshape", *typed])  # no input='"""..."""'


def test_a_sweep_runs_every_job_and_exits_with_the_worst_status(tmp_path, capsys):
    out = tmp_path / "sweep"
    missing = [tmp_path / "missing_a", tmp_path / "missing_b"]
    assert main(["analyze", "-m", f"input={missing[0]},{missing[1]}", f"output={out}", "workers=0"]) == 1
    err = capsys.readouterr().err
    assert "missing_a" in err and "missing_b" in err  # the second job ran after the first stopped
    assert (out / "multirun.yaml").exists()


TINY_TRAINING = ["train.batch_size=8", "train.checkpoint_every=2", "train.validation_every=2",
                 "train.validation_size=16", "train.test_size=16", "train.warmup_steps=1", "train.render_chunk=8"]


def test_an_evaluate_sweep_writes_each_jobs_scores_into_its_own_directory(tmp_path, capsys):
    """The fast variant of the train sweep below: Hydra's multirun, one directory per job."""
    import json

    from omegaconf import OmegaConf

    labels = np.zeros((40, 40), np.uint16)
    labels[5:15, 5:15], labels[20:32, 20:32] = 1, 2
    shifted = np.zeros_like(labels)
    shifted[5:15, 9:19], shifted[20:32, 20:32] = 1, 2  # IoU 6/14 = 0.43 and 1
    for folder, image in (("pred", shifted), ("masks", labels)):
        (tmp_path / folder).mkdir()
        Image.fromarray(image).save(tmp_path / folder / "m.png")
    out = tmp_path / "sweep"
    assert main(["evaluate", "-m", "iou_threshold=0.3,0.5", f"predictions={tmp_path / 'pred'}",
                 f"masks={tmp_path / 'masks'}", f"output={out}"]) == 0
    for job, (threshold, matched) in enumerate(((0.3, 2), (0.5, 1))):
        scores = json.loads((out / str(job) / "evaluation.json").read_text())["pooled"]
        assert scores["iou_threshold"] == threshold and scores["tp"] == matched
        assert OmegaConf.load(out / str(job) / ".hydra" / "config.yaml").iou_threshold == threshold
    assert sorted(path.name for path in out.iterdir()) == ["0", "1", "multirun.yaml"]


@pytest.mark.slow
def test_train_sweep_writes_one_run_directory_per_job_with_its_options(tmp_path, capsys):
    """`nanoshape train -m train.steps=2,3` (~80 s of CPU: two compilations and test sets)."""
    import json

    from omegaconf import OmegaConf

    out = tmp_path / "sweep"
    assert main(["train", "-m", "train.steps=2,3", f"output={out}", *TINY_TRAINING]) == 0
    printed = capsys.readouterr().out
    assert sorted(path.name for path in out.iterdir() if path.is_dir()) == ["0", "1"]
    for job, steps in ((0, 2), (1, 3)):
        run = out / str(job)
        assert f"sweep job {job} (train.steps={steps} " in printed
        assert OmegaConf.load(run / ".hydra" / "config.yaml").train.steps == steps
        assert f"train.steps={steps}" in OmegaConf.load(run / ".hydra" / "overrides.yaml")
        assert json.loads((run / "options.json").read_text())["steps"] == steps
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        assert last["step"] == steps and (run / "model").is_dir() and (run / "test.json").exists()
    assert OmegaConf.load(out / "multirun.yaml").hydra.mode == "MULTIRUN"
