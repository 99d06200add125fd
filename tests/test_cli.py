"""The command line: help, validation errors, and `nanoshape render`."""

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
