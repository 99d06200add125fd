"""Configuration schemas: the light mirrors of the options classes, descriptions, suggestions."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from nanoshape import _schemas
from nanoshape.config import (COMMAND_SCHEMAS, OPTIONS_CLASSES, _node_descriptions, compose, generate_schemas,
                              option_keys, suggest, to_options)


def test_generated_schemas_are_those_of_the_options_classes():
    """nanoshape/_schemas.py must be rewritten (python -m nanoshape.config) when an options class changes."""
    with open(_schemas.__file__) as handle:
        assert handle.read() == generate_schemas(), "run: python -m nanoshape.config"


def test_schemas_compose_back_into_the_options_with_their_defaults():
    import importlib

    cfg = compose("analyze", [])
    from nanoshape.pipeline import ShapeOptions
    from nanoshape.segment import SegmentOptions

    assert to_options(SegmentOptions, cfg.segment) == SegmentOptions()
    assert to_options(ShapeOptions, cfg.shape) == ShapeOptions()
    train = compose("train", ["train.steps=7", "train.model.channels=[4,8,16]"])
    from nanoshape.training import TrainOptions

    options = to_options(TrainOptions, train.train)
    assert options.steps == 7 and options.model.channels == (4, 8, 16)
    assert dataclasses.replace(options, steps=TrainOptions().steps, model=TrainOptions().model) == TrainOptions()
    for module, names in OPTIONS_CLASSES.items():
        for name in names:
            assert hasattr(_schemas, name + "Schema"), (module, name)
            importlib.import_module(module)


def test_a_command_config_builds_its_options_in_one_call():
    """The CLI builds AnalyzeOptions and DistributeOptions from the whole analyze config by field name:
    every field but the classifier is a key of the command, and values reach the nested options."""
    from nanoshape.pipeline import AnalyzeOptions
    from nanoshape.schedule import DistributeOptions

    keys = {f.name for f in dataclasses.fields(COMMAND_SCHEMAS["analyze"])}
    assert {f.name for f in dataclasses.fields(AnalyzeOptions)} - keys == {"classifier"}
    cfg = compose("classify", ["scale_bar=100nm", "segment.method=classical", "crop.context=2", "group=false",
                               "workers=3", "scheduler=tcp://host:8786"])
    options = to_options(AnalyzeOptions, cfg, classifier="run/groups/classifier.skops")
    assert options == dataclasses.replace(
        AnalyzeOptions(), scale_bar="100nm", group=False, classifier="run/groups/classifier.skops",
        segment=dataclasses.replace(AnalyzeOptions().segment, method="classical"),
        crop=dataclasses.replace(AnalyzeOptions().crop, context=2.0))
    assert to_options(DistributeOptions, cfg) == DistributeOptions(scheduler="tcp://host:8786", workers=3)


@pytest.mark.parametrize("command", sorted(COMMAND_SCHEMAS))
def test_every_key_is_described(command):
    described = _node_descriptions(command)
    missing = [key for key in option_keys(command) if not described.get(key)]
    assert not missing, missing


@pytest.mark.parametrize("command, typo, meant", [("analyze", "pixelsize", "pixel_size_nm"),
                                                  ("analyze", "pixel_size", "pixel_size_nm"),
                                                  ("analyze", "segment.metod", "segment.method"),
                                                  ("train", "steps", "train.steps"),
                                                  ("train", "train.learningrate", "train.learning_rate")])
def test_a_misspelled_key_gets_the_one_meant(command, typo, meant):
    assert suggest(command, typo)[0] == meant


def test_parsing_options_and_help_import_no_jax():
    """--help must stay fast: the schemas and the CLI's parsing import neither JAX, Flax nor optax."""
    code = ("import sys\nfrom nanoshape.cli import main\n"
            "for command in ('analyze', 'train', 'render', 'classify', 'evaluate', 'train-segmentation'):\n"
            "    assert main([command, '--help']) == 0\n"
            "heavy = sorted(m for m in ('jax', 'flax', 'optax', 'orbax', 'skimage', 'sklearn') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_every_command_runs_with_the_shared_hydra_settings():
    """Without them Hydra configures its own logging, which closes the handlers it finds (absl's
    closed pytest's captured stderr, and so the test session, after `nanoshape compare`)."""
    import yaml

    from nanoshape.config import COMMAND_SCHEMAS

    configs = Path(__file__).resolve().parents[1] / "configs"
    for command in COMMAND_SCHEMAS:
        defaults = yaml.safe_load((configs / f"{command}.yaml").read_text())["defaults"]
        assert "hydra_settings" in defaults, command


def test_the_schemas_are_stored_once_per_process(monkeypatch):
    """Every command composes its configuration two or three times (the values' check, Hydra's run); storing
    the seven schemas in Hydra's ConfigStore each time cost ~0.1 s of every command. They are stored once,
    and again only where the store has lost them."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    stored = []
    original = type(store).store
    monkeypatch.setattr(type(store), "store", lambda self, *a, **k: (stored.append(k.get("name")), original(self, *a, **k))[1])
    compose("analyze", ["workers=0"])
    compose("render", [])
    assert len(stored) <= len(COMMAND_SCHEMAS)
    store.repo.pop("analyze_schema.yaml")  # a store emptied behind our back is filled again
    assert compose("analyze", ["workers=1"]).workers == 1 and "analyze_schema" in stored
