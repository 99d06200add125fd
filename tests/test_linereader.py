"""The scale-bar line reader: strips cut as in use, read whole with CTC (issue 22)."""

import numpy as np
import pytest

from nanoshape.glyphs import cut_glyphs, ink, render_label
from nanoshape.linereader import ALPHABET, HEIGHT_PX, WIDTH_PX, line_strip, load_line_reader, read_strips


def _strip(text: str, font: str = "DejaVuSans.ttf", cap: float = 16.0, noise: float = 0.0, seed: int = 0):
    text_ink, _ = render_label(text, font, cap, margin_px=int(2 * cap))
    grey = 0.2 + 0.7 * text_ink + np.random.default_rng(seed).normal(0, noise, text_ink.shape)
    cut = ink(grey, "light", level=0.9, background=0.2)
    lines = [line for line in cut_glyphs(cut) if len(line) >= 2]
    assert len(lines) == 1, text
    return line_strip(cut, lines[0])


def test_a_line_fills_the_strip_at_any_size():
    (small, small_columns), (large, large_columns) = _strip("100 nm", cap=8.0), _strip("100 nm", cap=36.0)
    assert small.shape == large.shape == (HEIGHT_PX, WIDTH_PX)
    # the same text at 4.5x the size fills the same columns and rows (the glyph height sets the scale)
    assert abs(small_columns - large_columns) <= 3 and (large[:, large_columns:] == 0).all()
    for strip in (small, large):
        rows = np.flatnonzero((strip > 0.5).any(axis=1))
        assert 0.45 * HEIGHT_PX <= np.ptp(rows) + 1 <= 0.7 * HEIGHT_PX  # the digits fill about 55 % of the rows
        assert abs(rows.mean() - HEIGHT_PX / 2) <= 2  # centred on the glyphs' middle
    assert large[:, WIDTH_PX // 2 :].max() == 0  # left-aligned, nothing beyond the line's window


_CASES = [("100 nm", "DejaVuSans.ttf", 14.0, "100nm"), ("0.5 µm", "DejaVuSerif.ttf", 20.0, "0.5um"),
          ("20nm", "DejaVuSans-Bold.ttf", 11.0, "20nm"), ("2 um", "STIXGeneral.ttf", 24.0, "2um"),
          ("5 Å", "DejaVuSans.ttf", 18.0, "5Å"), ("250 nm", "DejaVuSansMono.ttf", 12.0, "250nm")]


def test_the_shipped_reader_reads_rendered_labels_and_is_never_sure_of_a_wrong_one():
    read = [read_strips(*(lambda s: (s[0][None], s[1]))(_strip(text, font, cap, noise=0.03)))[0]
            for text, font, cap, _ in _CASES]
    sure = [(spelled, expected) for (spelled, confidence), (*_, expected) in zip(read, _CASES) if confidence >= 0.95]
    assert all(spelled == expected for spelled, expected in sure), read
    # measured 2026-12-07: all but the touching bold "20nm" (read right, at 0.51-0.64) are read with confidence
    assert len(sure) >= 5, read
    assert all(spelled == expected for (spelled, _), (*_, expected) in zip(read, _CASES)), read


def test_text_that_is_no_label_reads_as_no_label():
    from nanoshape.scalebar import parse_label

    strip, columns = _strip("TEM", cap=16.0)
    read, _ = read_strips(strip[None], columns)[0]
    assert parse_label(read) is None and "?" in read, read
    assert set(ALPHABET) >= set("0123456789.nmuÅ?")


def test_weights_of_another_model_are_refused(tmp_path):
    from flax import nnx

    from nanoshape.glyphs import GlyphNet, save_glyph_model

    path = save_glyph_model(GlyphNet(rngs=nnx.Rngs(0)), tmp_path / "glyphs.npz")
    with pytest.raises(ValueError, match="line reader"):
        load_line_reader.__wrapped__(path)
    with pytest.raises(FileNotFoundError, match="train_line_reader"):
        load_line_reader.__wrapped__(tmp_path / "missing.npz")
