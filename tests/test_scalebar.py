"""Scale bars: finding and measuring bars, reading labels, deciding the pixel size."""

import dataclasses
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from nanoshape.glyphs import CLASSES, classify_glyphs, draw_scale_bar, glyph_dataset, load_glyph_model
from nanoshape.io import read_micrograph, write_tiff
from nanoshape.scalebar import (
    ScaleBarOptions,
    calibrate,
    evaluate_readings,
    find_bars,
    parse_label,
    read_scale_bar,
    read_scale_bar_labels,
)
from nanoshape.scene import SceneOptions, render_scene

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HAND_TABLE = Path(__file__).resolve().parents[1] / "experiments" / "scale_bars" / "hand_measured.csv"


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    """A rendered micrograph scaled to 0..255."""
    image = np.asarray(render_scene(jax.random.key(3), SceneOptions(n_particles=30)).image, np.float32)
    return 255 * (image - image.min()) / np.ptp(image)


@pytest.mark.parametrize("text, nm, unit", [
    ("100 nm", 100.0, "nm"), ("500nm", 500.0, "nm"), ("0.5 µm", 500.0, "µm"), ("1μm", 1000.0, "µm"),
    ("2 um", 2000.0, "µm"), ("5 Å", 0.5, "Å"), ("1 mm", 1e6, "mm"), ("2,5 nm", 2.5, "nm"), ("1.0 UM", 1000.0, "µm"),
])
def test_parse_label(text, nm, unit):
    value, shown = parse_label(text)
    assert value == pytest.approx(nm) and shown == unit


@pytest.mark.parametrize("text", ["", "nm", "100", "100 px", "0 nm", "(a)", "1 00 nm x", "10 kV"])
def test_parse_label_rejects(text):
    assert parse_label(text) is None


def _spells_a_label(symbols: list[str]) -> bool:
    from nanoshape.scalebar import _next_state

    state = "start"
    for symbol in symbols:
        state = _next_state(state, symbol)
        if state is None:
            return False
    return state == "end"


@pytest.mark.parametrize("symbols, ok", [
    (["1", "0", "0", "nm"], True), (["1", "0", "0", "n", "m"], True), (["0", ".", "5", "um"], True),
    (["2", ".", "5", "u", "m"], True), (["5", "Å"], True), (["1", "m", "m"], True), (["2", "5", "0", "0", "nm"], True),
    (["0", "2", "nm"], False),  # a leading zero: "0.2" with its point lost, never "02"
    (["2", "nm", "m"], False), (["nm"], False), ([".", "5", "nm"], False), (["1", ".", "nm"], False),
    (["1", "0", "0"], False), (["1", "2", "3", "4", "5", "nm"], False), (["1", "n"], False), (["1", "um", "1"], False),
])
def test_label_grammar(symbols, ok):
    assert _spells_a_label(symbols) == ok


@pytest.mark.parametrize("colour, background", [("white", 60.0), ("black", 200.0)])
@pytest.mark.parametrize("length", [37, 120, 251])
def test_find_bars_measures_drawn_bars_exactly(colour, background, length):
    rng = np.random.default_rng(length)
    image = background + rng.normal(0, 6, (300, 400)).astype(np.float32)
    image, (x0, y0, x1, y1) = draw_scale_bar(image, length_px=length, label="50 nm", colour=colour, thickness_px=5)
    bars = find_bars(image)
    assert bars, "no bar found"
    bar = bars[0]
    assert (bar.x0_px, bar.x1_px, bar.length_px) == (x0, x1, length)
    assert bar.polarity == ("light" if colour == "white" else "dark")


def test_find_bars_counts_ticks_and_outline(scene):
    image, (x0, _, x1, _) = draw_scale_bar(scene, length_px=150, label="200 nm", ticks=True, thickness_px=4)
    assert find_bars(image)[0].length_px == 150
    # a white bar with a 1 px black outline: the outline is part of the bar
    image = np.full((200, 300), 150.0, np.float32)
    image[99:108, 49:152] = 0.0
    image[100:107, 50:151] = 255.0
    bar = find_bars(image)[0]
    assert (bar.x0_px, bar.x1_px) == (49, 151)


def test_find_bars_does_not_count_a_particle_touching_the_bar():
    yy, xx = np.mgrid[0:200, 0:300]
    image = np.full((200, 300), 200.0, np.float32)
    image[(yy - 104) ** 2 + (xx - 163) ** 2 < 15 ** 2] = 70.0  # darker than half-way, not as dark as the bar
    image[100:108, 50:150] = 0.0
    bar = find_bars(image)[0]
    assert (bar.x0_px, bar.x1_px) == (50, 149)
    assert bar.exact_length_px == pytest.approx(100, abs=0.1)


def test_find_bars_keeps_a_pale_end_drawn_within_the_bar():
    image = np.full((200, 300), 170.0, np.float32)
    image[100:104, 50:90] = 40.0
    image[100:104, 90:93] = 70.0  # a paler end within the bar's own rows (resampled figures)
    bar = find_bars(image)[0]
    assert (bar.x0_px, bar.x1_px) == (50, 92)


@pytest.mark.parametrize("blur_px", [0.6, 1.0])
def test_find_bars_measures_blurred_bars_to_a_fraction_of_a_pixel(blur_px):
    from scipy.ndimage import gaussian_filter

    image = np.full((200, 300), 180.0, np.float32)
    image[100:106, 41:114] = 0.0  # 73 px
    bar = find_bars(gaussian_filter(image, blur_px))[0]
    assert bar.exact_length_px == pytest.approx(73, abs=0.25)


def test_find_bars_takes_a_white_bar_on_a_black_box_not_the_box(scene):
    image, (x0, _, x1, _) = draw_scale_bar(scene, length_px=120, label="2.5um", colour="white", box=True, ticks=True,
                                           thickness_px=8)
    bar = find_bars(image)[0]
    assert (bar.x0_px, bar.x1_px, bar.polarity, bar.outlined) == (x0, x1, "light", False)


def test_find_bars_measures_a_white_bar_ending_on_a_dark_particle():
    from scipy.ndimage import gaussian_filter

    yy, xx = np.mgrid[0:200, 0:300]
    image = np.full((200, 300), 200.0, np.float32)
    image[(yy - 110) ** 2 + (xx - 45) ** 2 < 20 ** 2] = 60.0  # the bar's left end lies on it
    image[100:109, 50:150] = 255.0
    bar = find_bars(gaussian_filter(image, 0.8))[0]
    assert bar.polarity == "light"
    assert bar.exact_length_px == pytest.approx(100, abs=0.3)


def test_find_bars_takes_a_bar_at_the_top_of_its_box_not_the_box(scene):
    image, (x0, _, x1, _) = draw_scale_bar(scene, length_px=126, label="250nm", colour="white", box=True,
                                           corner="top-left", label_above=False, thickness_px=9)
    bar = find_bars(image)[0]
    assert (bar.x0_px, bar.x1_px, bar.polarity) == (x0, x1, "light")


def test_find_bars_ignores_particles_and_boxes():
    yy, xx = np.mgrid[0:256, 0:256]
    image = np.full((256, 256), 200.0, np.float32)
    image[(yy - 120) ** 2 + (xx - 100) ** 2 < 40 ** 2] = 20.0  # a particle
    image[10:60, 150:250] = 255.0  # a label box with a dark letter in it
    image[20:50, 190:200] = 0.0
    assert find_bars(image) == []


@pytest.mark.parametrize("case", [0, 1, 2, 3])
def test_read_scale_bar_on_rendered_micrographs(scene, case):
    fonts = ("DejaVuSans.ttf", "STIXGeneral.ttf", "DejaVuSans-Bold.ttf", "cmss10.ttf")
    labels = ("100 nm", "0.5 µm", "20nm", "2 um")
    lengths = (180, 123, 95, 240)
    image, _ = draw_scale_bar(scene, length_px=lengths[case], label=labels[case], font=fonts[case], cap_height_px=14 + 3 * case,
                              corner=("bottom-right", "top-left", "bottom-left", "top-right")[case],
                              colour=("white", "black")[case % 2], box=case == 2, label_above=case != 1)
    reading = read_scale_bar(image)
    expected = parse_label(labels[case])[0] / lengths[case]
    assert reading.pixel_size_nm == pytest.approx(expected, rel=0.01), reading
    assert reading.source == f'scale bar: "{reading.label}" = {lengths[case]} px'


def test_read_scale_bar_reads_a_label_touching_a_particle():
    yy, xx = np.mgrid[0:300, 0:400]
    image = np.full((300, 400), 200.0, np.float32)
    image, _ = draw_scale_bar(image, length_px=200, label="2 µm", font="DejaVuSansMono-Bold.ttf", cap_height_px=16,
                              colour="black", corner="bottom-left", label_above=False)
    particle = (yy - 314) ** 2 + (xx - 130) ** 2 < 22 ** 2  # dark, not as dark as the text, touching its µ
    image = np.where(particle & (image > 100), 40.0, image)
    reading = read_scale_bar(image)
    assert reading.pixel_size_nm == pytest.approx(2000 / 200, rel=0.01), reading


def _label_over_bar(label: str) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A black label above a 220 px black bar on a plain grey image, and the label's ink box
    (top, bottom, left, right; bottom and right exclusive)."""
    image, bar = draw_scale_bar(np.full((300, 420), 200.0, np.float32), length_px=220, label=label,
                                font="DejaVuSans.ttf", cap_height_px=18, colour="black", corner="bottom-left")
    rows, cols = np.nonzero(image[: bar[1] - 1] < 100)
    return image, (int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1)


def test_a_centred_label_is_read_beside_a_particle_as_dark_as_its_text():
    # a label centred on its bar has lost no glyph, so a particle drawn just left of it
    # (as dark as the text) does not make the reading doubtful
    image, (top, bottom, left, _) = _label_over_bar("200 nm")
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    radius = 8  # about a glyph's size, 4 px left of the "2"
    image[(yy - (top + bottom) // 2) ** 2 + (xx - (left - radius - 4)) ** 2 < radius**2] = 0.0
    reading = read_scale_bar(image)
    assert reading.label == "200 nm" and reading.pixel_size_nm == pytest.approx(200 / 220), reading


def test_a_label_whose_first_glyphs_are_hidden_is_not_read_as_what_is_left():
    # "2." of "2.5 nm" under a particle as dark as the text: "5 nm" is left, off the bar's
    # centre, and must not be taken
    image, (top, bottom, left, _) = _label_over_bar("2.5 nm")
    digit = 0.62 * (bottom - top)  # about one digit and a point
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    radius = 16
    image[(yy - (top + bottom) // 2) ** 2 + (xx - (left + digit - radius)) ** 2 < radius**2] = 0.0
    reading = read_scale_bar(image)
    assert reading.pixel_size_nm is None or reading.pixel_size_nm == pytest.approx(2.5 / 220), reading


def test_an_outlined_bar_s_label_is_read_from_its_outline():
    # a white bar outlined in dark, its label drawn the same way with strokes barely paler
    # than the background (as in Gatan exports on a pale film): only the outline spells it
    from scipy import ndimage as ndi

    from nanoshape.glyphs import render_label

    background = 225.0
    image = np.full((260, 400), background, np.float32)
    text, _ = render_label("0.5 µm", "DejaVuSans.ttf", 16, margin_px=3)
    strokes = text > 0.5
    region = image[200 - text.shape[0] - 4 : 196, 30 : 30 + text.shape[1]]
    region[ndi.binary_dilation(strokes) & ~strokes] = 60.0
    region[strokes] = background + 8
    image[199:207, 20:160] = 60.0  # the outline
    image[200:206, 21:159] = 255.0  # the bar: 140 px end to end with its outline
    image += np.random.default_rng(0).normal(0, 4, image.shape).astype(np.float32)
    reading = read_scale_bar(image)
    assert reading.bar.outlined and reading.label == "0.5 µm", reading
    assert reading.pixel_size_nm == pytest.approx(500 / 140), reading


def test_a_label_in_a_box_stays_glyphs_inside_the_ink_around_the_box():
    from nanoshape.glyphs import cut_glyphs, ink, render_label

    # white text on a black box in a grey scene: as light ink the scene is 0.6 ink and one
    # component around the box, whose box holds the label; its glyphs stay a line of their own
    text, chars = render_label("0.2um", "DejaVuSans.ttf", 18, margin_px=6)
    grey = np.full((text.shape[0] + 40, text.shape[1] + 40), 0.6, np.float32)
    grey[20:-20, 20:-20] = text
    lines = cut_glyphs(ink(grey, "light", level=1.0, background=0.0))
    assert len(lines) == 2, lines  # the scene around the box, and the label
    label = min(lines, key=lambda line: line[0].width)
    assert len(label) == 5, label  # 0 . 2 u m
    assert abs(label[0].x0 - (chars[0][1] + 20)) <= 1.5 and abs(label[-1].x1 - (chars[-1][2] + 20)) <= 2.5


def test_a_reading_starts_at_the_line_s_first_glyph_with_no_stroke_left_of_it():
    from nanoshape.glyphs import cut_glyphs, render_label
    from nanoshape.scalebar import _line_readings

    text, _ = render_label("0.5 nm", "DejaVuSans.ttf", 20)
    line = cut_glyphs(text)[0]
    assert _line_readings(text, line, load_glyph_model())[0][1] == "0.5nm"
    # "0." left out of the line (set apart, or lost to the threshold) with its ink in place: not "5 nm"
    assert _line_readings(text, line[2:], load_glyph_model()) == []


def test_a_number_is_one_word():
    from nanoshape.glyphs import cut_glyphs, is_point, render_label
    from nanoshape.scalebar import _line_readings

    text, _ = render_label("1.0um", "DejaVuSans.ttf", 20)
    line = cut_glyphs(text)[0]
    assert _line_readings(text, line, load_glyph_model())[0][1] == "1.0um"
    # the point lost (too faint to cut): "1" and "0um" are two words, and never "10 um"
    point = next(g for g in line if is_point(g, line))
    text[point.y0 : point.y1, point.x0 : point.x1] = 0
    readings = _line_readings(text, [g for g in line if g is not point], load_glyph_model())
    assert all(spelled != "10um" for _, spelled, _ in readings)


def test_two_touching_digits_are_read_split():
    from nanoshape.glyphs import cut_glyphs, render_label
    from nanoshape.scalebar import _line_readings

    text, chars = render_label("200 nm", "DejaVuSans-Bold.ttf", 20, stroke=3)
    middle = text.shape[0] // 2
    text[middle - 1 : middle + 1, int(chars[0][2]) - 2 : int(chars[1][1]) + 2] = 1.0  # the 2 joined to the 0
    line = cut_glyphs(text)[0]
    assert len(line) == 4  # "20", "0", "n", "m"
    probability, spelled, weakest = _line_readings(text, line, load_glyph_model())[0]
    assert spelled == "200nm" and weakest >= 0.9


def _installed(font: str):
    """A Liberation font where Debian's fonts-liberation is installed, else a skip. The templates never
    draw it: a label in it is read as one in a font not drawn (cmss10)."""
    import os

    from nanoshape.glyphs import font_path

    return [] if os.path.isfile(font_path(font)) else [pytest.mark.skip(reason=f"{font} is not installed "
                                                                             "(apt-get install fonts-liberation)")]


@pytest.mark.parametrize("text, font, cap", [
    pytest.param("200 nm", "LiberationSans-Regular.ttf", 12, marks=_installed("LiberationSans-Regular.ttf")),
    ("0.5 µm", "DejaVuSerif.ttf", 12), ("5 Å", "DejaVuSerif.ttf", 9),
    pytest.param("20nm", "LiberationSans-Regular.ttf", 8, marks=_installed("LiberationSans-Regular.ttf")),
    ("20nm", "DejaVuSans.ttf", 8), ("2 um", "cmss10.ttf", 12),  # cmss10 and Liberation: fonts not drawn
])
def test_synthesis_reads_a_rendered_label(text, font, cap):
    """A label in a drawn font scores at least 0.85; one in a font not drawn at least what the reader takes
    alone (with fonts-liberation from Debian's package: "20nm" in LiberationSans at 8 px scores 0.835,
    margin 0.053; 0.874 when Liberation was drawn too)."""
    from nanoshape.glyphs import FONTS, cut_glyphs, render_label
    from nanoshape.labelsynth import match_line
    from nanoshape.scalebar import _SYNTHESIS_MARGIN, _SYNTHESIS_SCORE

    ink, _ = render_label(text, font, cap)
    found = match_line(ink, cut_glyphs(ink)[0])
    assert found.value_nm == pytest.approx(parse_label(text)[0])
    if font in FONTS:
        assert found.score >= 0.85 and found.margin > 0
    else:
        assert found.score >= _SYNTHESIS_SCORE and found.margin >= _SYNTHESIS_MARGIN


def test_label_templates_do_not_depend_on_the_installed_fonts(monkeypatch):
    """What a micrograph reads must not depend on the user's machine: synthesis draws matplotlib's fonts
    only, not the Liberation fonts the classifier's training takes where they are installed (before, the
    templates followed glyphs.training_fonts, with them on one machine and without on another)."""
    import nanoshape.glyphs as glyphs
    from nanoshape.labelsynth import templates

    monkeypatch.setattr(glyphs, "training_fonts", lambda: glyphs.FONTS + glyphs.LIBERATION_FONTS)
    templates.cache_clear()
    try:
        assert templates().fonts == glyphs.FONTS
    finally:
        templates.cache_clear()


@pytest.mark.parametrize("text", ["TEM", "HV 20kV", "x50000", "(b)"])
def test_synthesis_finds_no_label_in_other_text(text):
    from nanoshape.glyphs import cut_glyphs, render_label
    from nanoshape.labelsynth import match_line
    from nanoshape.scalebar import _SYNTHESIS_SCORE

    ink, _ = render_label(text, "DejaVuSans.ttf", 12)
    found = match_line(ink, cut_glyphs(ink)[0])
    assert found is None or found.score < _SYNTHESIS_SCORE


def test_synthesis_splits_number_and_unit_at_any_gap():
    """A label is matched as its number and its unit apart: the gap a figure leaves between
    them changes nothing."""
    from nanoshape.glyphs import cut_glyphs, render_label
    from nanoshape.labelsynth import match_line

    tight, _ = render_label("100nm", "DejaVuSans.ttf", 14)
    wide, _ = render_label("100  nm", "DejaVuSans.ttf", 14)
    a, b = match_line(tight, cut_glyphs(tight)[0]), match_line(wide, cut_glyphs(wide)[0])
    assert a.label == b.label == "100 nm"
    assert a.score == pytest.approx(b.score, abs=0.02)


def test_a_reading_no_microscope_gives_is_no_rival_of_a_more_probable_one():
    """9928dad0ac: "20nm" read at 0.97 beside a 123 px bar, its n also read as an m at 0.63. "20 mm"
    over 123 px is 163 µm per px, refused anyway: it must not leave the line doubtful. Where the
    "mm" reading is the most probable, it is kept (and its label refused with that reason)."""
    from nanoshape.scalebar import Bar, _accept, _plausible

    bar = Bar(x0_px=11, x1_px=133, y0_px=489, y1_px=496, polarity="light", bar_value=255.0, background_value=174.0)
    readings = [(0.97, "20nm", 0.994), (0.63, "20mm", 0.63)]
    assert _accept(readings, 0.9) is None  # the share 0.97 / 1.60: doubtful
    assert _accept(_plausible(readings, bar), 0.9) == ("20 nm", 20.0, 0.994)
    assert _plausible(readings[::-1], bar) == readings[::-1]  # "mm" most probable: nothing dropped
    # a rival with other digits stays a doubt, plausible or not (seed 11's "100nm" read "10mm" 205 px long
    # while "100mm" was dropped: a wrong size)
    for rival in ((0.63, "2mm", 0.63), (0.63, "200mm", 0.63)):
        assert _plausible([(0.97, "20nm", 0.994), rival], bar) == [(0.97, "20nm", 0.994), rival]


def test_read_scale_bar_does_not_take_a_pixel_size_no_microscope_gives(scene):
    # "50 mm" over 65 px is 0.77 mm per px: in a micrograph, "50 nm" with its n misread
    image, _ = draw_scale_bar(scene, length_px=65, label="50 mm", cap_height_px=20, colour="white")
    reading = read_scale_bar(image)
    assert reading.pixel_size_nm is None
    assert '"50 mm" = 65 px gives 7.6' in reading.reason and "nm per px, more than 100000" in reading.reason


def test_read_scale_bar_abstains_without_a_label_and_takes_a_given_one(scene):
    plain, _ = draw_scale_bar(scene, length_px=150, label=".", cap_height_px=1)
    reading = read_scale_bar(plain)
    assert reading.pixel_size_nm is None and reading.reason
    given = read_scale_bar(plain, label="100nm")
    assert given.pixel_size_nm == pytest.approx(100 / 150, rel=1e-3)  # the bar's sub-pixel span
    assert given.source == 'scale bar: "100 nm" = 150 px'
    with pytest.raises(ValueError, match="not a number and a length unit"):
        read_scale_bar(plain, label="100 px")


@pytest.mark.parametrize("cut_px", [0, 4, 12])
def test_a_bar_running_into_the_edge_is_used_only_where_its_centred_label_shows_it_whole(cut_px):
    # drawn up to the right edge, then the edge moved cut_px into the bar: the label stays
    # where it was drawn, centred on the whole bar, so it lies cut_px / 2 towards the edge
    # of what is left (4 px of 150: 2.7 %, more than the reading's 2 %)
    image = np.full((200, 300), 200.0, np.float32)
    image, _ = draw_scale_bar(image, length_px=150, label="50 nm", colour="black", margin_px=0, corner="bottom-right")
    reading = read_scale_bar(image[:, : image.shape[1] - cut_px])
    if cut_px:
        assert reading.pixel_size_nm is None and "edge" in reading.reason, reading
    else:
        assert reading.pixel_size_nm == pytest.approx(50 / 150, rel=0.01), reading


def test_a_label_read_beside_two_bars_is_the_label_of_the_bar_it_pairs_with_best():
    # a 200 px bar, its label below it, and a short bar just below the label (a box's edge,
    # a halo): the label, read beside each bar with boxes a few px apart (two inks), is
    # one line and the 200 px bar's; it is not two bars disagreeing
    image = np.full((320, 400), 200.0, np.float32)
    image[250:256, 100:300] = 0.0
    image[280:284, 180:261] = 0.0
    boxes = {200: (259, 277, 170, 230, "dark"), 81: (262, 279, 171, 231, "dark")}
    reading = read_scale_bar(image, reader=lambda image, bar, confidence: ("1 µm", 1000.0, 0.99, boxes[bar.length_px]))
    assert reading.pixel_size_nm == pytest.approx(1000 / 200), reading


def test_a_label_pairs_with_the_bar_it_is_centred_on_before_a_nearer_one():
    # "10 nm" centred 9 px above its 120 px bar, and 7 px below it a strip of background
    # between a box and the image's top edge, found as a 91 px bar 5 px off centre: the
    # label is the centred bar's
    image = np.full((200, 520), 200.0, np.float32)
    image[45:49, 380:500] = 0.0
    image[3:5, 390:481] = 0.0
    box = (12, 36, 398, 483, "dark")  # centre 440.5; the 120 px bar's 440, the 91 px bar's 435.5
    reading = read_scale_bar(image, reader=lambda image, bar, confidence: ("10 nm", 10.0, 0.99, box))
    assert reading.pixel_size_nm == pytest.approx(10 / 120), reading


def test_a_label_fainter_than_its_bar_is_read_at_its_own_level():
    # a white bar at 255 and its label's strokes at 45 % of the bar's contrast (thin,
    # antialiased text never reaches the bar's grey value): under the cut's threshold on the
    # bar's scale, read on the region's own
    image = np.full((300, 400), 190.0, np.float32)
    image, (_, _, _, bottom) = draw_scale_bar(image, length_px=120, label="20 nm", colour="white", corner="bottom-left",
                                              cap_height_px=14, label_above=False)
    image[bottom + 1 :] = 190 + 0.45 * (image[bottom + 1 :] - 190)
    reading = read_scale_bar(image)
    assert reading.label == "20 nm" and reading.pixel_size_nm == pytest.approx(20 / 120), reading


def test_a_bold_decimal_point_is_a_point():
    # DejaVu Sans Bold's point, blurred, is 0.3 of the digits' height: against the median
    # glyph height of "0.5 nm" (its n and m, the x-height) it was too tall to be a point
    from scipy import ndimage as ndi

    from nanoshape.glyphs import cut_glyphs, render_label
    from nanoshape.scalebar import _line_readings

    text, _ = render_label("0.5 nm", "DejaVuSans-Bold.ttf", 27)
    text = np.clip(ndi.gaussian_filter(text, 0.7), 0, 1)
    line = cut_glyphs(text)[0]
    assert _line_readings(text, line, load_glyph_model(), whole=True)[0][1] == "0.5nm"


def test_a_stroke_above_the_text_beside_its_first_glyph_is_no_digit():
    # a stroke from above the label's cap line to half its height, 8 px left of "10 nm":
    # it joins the line as its first glyph and would read as a "1" ("110 nm"), or make the
    # line doubtful; it is left out, and the label, centred on its bar, is read
    image, (top, bottom, left, _) = _label_over_bar("10 nm")
    image[top - 14 : top + (bottom - top) // 2, left - 11 : left - 8] = 0.0
    reading = read_scale_bar(image)
    assert reading.label == "10 nm" and reading.pixel_size_nm == pytest.approx(10 / 220), reading


def test_a_gap_in_a_line_that_holds_a_cut_out_glyph_is_seen():
    from nanoshape.glyphs import cut_glyphs, render_label
    from nanoshape.scalebar import _gap_holds_stroke

    text, _ = render_label("10 nm", "DejaVuSans.ttf", 20)
    line = cut_glyphs(text)[0]
    assert len(line) == 4 and not _gap_holds_stroke(text, line)  # 1, 0, n, m: the word space holds no ink
    # the "0" cut out of the line (joined to a particle): "1 nm" is left, its ends where
    # the label's were; the gap it leaves holds its ink
    assert _gap_holds_stroke(text, [glyph for i, glyph in enumerate(line) if i != 1])


def _calibrated_file(tmp_path, scene, pixel_size_nm, *, length_px=200, label="100 nm"):
    image, _ = draw_scale_bar(scene, length_px=length_px, label=label, cap_height_px=16)
    path = tmp_path / "bar.tif"
    write_tiff(path, np.clip(image, 0, 255).astype(np.uint8), pixel_size_nm=pixel_size_nm)
    return path


def test_calibrate_warns_when_metadata_and_a_read_bar_disagree(tmp_path):
    """A real micrograph whose label the reader reads ("100 nm" = 122 px, 0.8197 nm/px),
    saved with an ImageJ calibration 10 % off."""
    source = DATA / "emps_train" / "images" / "36de69b2c0.png"
    if not source.is_file():
        pytest.skip(f"{source} is absent: the real micrographs live in ../shared/data beside the checkout")
    path = tmp_path / "36de69b2c0.tif"
    write_tiff(path, read_micrograph(source).pixels.astype(np.uint8), pixel_size_nm=0.9)
    micrograph = calibrate(read_micrograph(path))
    assert micrograph.pixel_size_nm == pytest.approx(0.9)
    warning = [w for w in micrograph.meta["warnings"] if "disagree" in w]
    assert len(warning) == 1 and '"100 nm" = 122 px' in warning[0] and "used the metadata" in warning[0]


def test_calibrate_warns_when_metadata_and_bar_disagree(tmp_path, scene):
    # the label is given (the glyph reader does not read this rendered one yet); the bar is measured
    path = _calibrated_file(tmp_path, scene, 0.45)  # the bar says 0.5 nm/px: 11 % apart
    micrograph = calibrate(read_micrograph(path), label="100 nm")
    assert micrograph.pixel_size_nm == pytest.approx(0.45)
    assert micrograph.meta["pixel_size_source"] == "metadata: ImageJ"
    warning = [w for w in micrograph.meta["warnings"] if "disagree" in w]
    assert len(warning) == 1 and '"100 nm" = 200 px' in warning[0] and "used the metadata" in warning[0]
    preferred = calibrate(read_micrograph(path), ScaleBarOptions(prefer="scale_bar"), label="100 nm")
    assert preferred.pixel_size_nm == pytest.approx(0.5, rel=0.01)
    assert preferred.meta["pixel_size_source"] == 'scale bar: "100 nm" = 200 px'


def test_calibrate_agreeing_metadata_and_bar_is_quiet(tmp_path, scene):
    micrograph = calibrate(read_micrograph(_calibrated_file(tmp_path, scene, 0.502)), label="100 nm")
    assert micrograph.pixel_size_nm == pytest.approx(0.502)
    assert not [w for w in micrograph.meta["warnings"] if "disagree" in w]
    assert micrograph.meta["scale_bar"]["pixel_size_nm"] == pytest.approx(0.5, rel=0.01)


def test_calibrate_takes_the_bar_without_metadata_and_respects_override(tmp_path, scene):
    path = _calibrated_file(tmp_path, scene, None, length_px=160, label="50 nm")
    micrograph = calibrate(read_micrograph(path), label="50nm")
    assert micrograph.pixel_size_nm == pytest.approx(50 / 160, rel=0.01)
    assert micrograph.meta["pixel_size_source"] == 'scale bar: "50 nm" = 160 px'
    override = calibrate(read_micrograph(path, pixel_size_nm=0.7), label="50nm")
    assert override.pixel_size_nm == 0.7 and override.meta["pixel_size_source"] == "pixel_size_nm override"


def test_calibrate_stays_in_px_and_says_why(tmp_path):
    path = tmp_path / "plain.tif"
    write_tiff(path, np.full((64, 64), 100, np.uint8))
    micrograph = calibrate(read_micrograph(path))
    assert micrograph.pixel_size_nm is None
    assert any("no pixel size" in w and "no scale bar found" in w for w in micrograph.meta["warnings"])


def test_read_scale_bar_labels(tmp_path):
    good = tmp_path / "labels.csv"
    good.write_text("file,scale_bar\nimages/a.png,100 nm\nb,0.5 µm\nc,\n", encoding="utf-8")
    assert read_scale_bar_labels(good) == {"a": "100 nm", "b": "0.5 µm"}
    bad = tmp_path / "bad.csv"
    bad.write_text("file,scale_bar\na.png,100 px\n")
    with pytest.raises(ValueError, match=r"bad.csv, row 2: scale_bar '100 px'"):
        read_scale_bar_labels(bad)
    with pytest.raises(ValueError, match="needs the columns"):
        (tmp_path / "cols.csv").write_text("name,label\n")
        read_scale_bar_labels(tmp_path / "cols.csv")


def test_glyph_model_is_small_and_reads_rendered_glyphs():
    from nanoshape.glyphs import _WEIGHTS

    assert _WEIGHTS.stat().st_size < 500_000
    patch, aspect, label = glyph_dataset(12345, 150)
    probabilities = classify_glyphs(patch, aspect, load_glyph_model())
    accuracy = (probabilities.argmax(-1) == label).mean()
    confident = probabilities.max(-1) >= 0.9
    assert accuracy >= 0.85
    assert (probabilities.argmax(-1)[confident] == label[confident]).mean() >= 0.97
    assert set(CLASSES[k] for k in label) >= set("0123456789nm")


def test_hand_measured_floor():
    """The reader against 53 hand-measured micrographs: none wrong, and a floor on the share
    read within 2 % at what the reader reaches now (44 of 51: a bar at the image's edge whose
    label shows it whole, one line read beside a bar and its halo, a faint label read at its
    own level, 2026-12-07, third session; 41 before). The issue's target
    is 90 %: not met yet (see experiments/scale_bars/results/hand_summary.json)."""
    if not DATA.is_dir():
        pytest.skip(f"{DATA} is absent: the hand-measured micrographs live in ../shared/data beside the checkout")
    table = pd.read_csv(HAND_TABLE, keep_default_na=False, na_values={"bar_length_px": [""]})
    scored = evaluate_readings(table, DATA)
    judged = scored[(scored.label_readable == "yes") & scored.bar_length_px.notna()]
    wrong = scored[scored.outcome == "wrong"]
    assert wrong.empty, wrong[["file", "label", "read_label", "relative_error"]].to_string()
    within = (judged.outcome == "within 2 %").mean()
    assert within >= 44 / 51 - 1e-9, judged[judged.outcome != "within 2 %"][["file", "label", "reason"]].to_string()


def test_run_records_pixel_size_source_per_micrograph(tmp_path, scene):
    from PIL import Image

    from nanoshape.pipeline import AnalyzeOptions, ShapeOptions, run_analysis

    folder = tmp_path / "in"
    folder.mkdir()
    with_bar, _ = draw_scale_bar(scene, length_px=200, label="100 nm", cap_height_px=16)
    Image.fromarray(np.clip(with_bar, 0, 255).astype(np.uint8)).save(folder / "bar.png")
    plain, _ = draw_scale_bar(scene, length_px=160, label=".", cap_height_px=1)
    Image.fromarray(np.clip(plain, 0, 255).astype(np.uint8)).save(folder / "unlabelled.png")
    (tmp_path / "labels.csv").write_text("file,scale_bar\nunlabelled.png,50 nm\n")
    (tmp_path / "bar_only.csv").write_text("file,scale_bar\nbar.png,100 nm\n")
    options = AnalyzeOptions(shape=ShapeOptions(cnn=False), group=False, report=False, overlays=False,
                             scale_bars=str(tmp_path / "bar_only.csv"))
    summary = run_analysis(folder, tmp_path / "run", options)
    assert summary["pixel_sizes"]["bar"]["pixel_size_source"] == 'scale bar: "100 nm" = 200 px'
    assert summary["pixel_sizes"]["unlabelled"]["pixel_size_nm"] is None
    assert any("unlabelled: no pixel size" in w for w in summary["warnings"])
    particles = pd.read_csv(tmp_path / "run" / "particles.csv")
    bar_rows = particles[particles.image == "bar"]
    assert len(bar_rows) and np.allclose(bar_rows.pixel_size_nm, 0.5, rtol=1e-3)
    assert (bar_rows.pixel_size_source == 'scale bar: "100 nm" = 200 px').all()
    assert (particles[particles.image == "unlabelled"].pixel_size_source == "none: sizes in px").all()
    given = run_analysis(folder, tmp_path / "run2", dataclasses.replace(options, scale_bars=str(tmp_path / "labels.csv")))
    assert given["pixel_sizes"]["unlabelled"]["pixel_size_nm"] == pytest.approx(50 / 160, rel=2e-3)  # sub-pixel span
    assert given["pixel_sizes"]["unlabelled"]["pixel_size_source"] == 'scale bar: "50 nm" = 160 px'

