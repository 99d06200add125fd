"""Read the text of scale-bar labels: glyphs cut from an image, classified by a small CNN.

The classifier is trained only on labels rendered here from the fonts matplotlib ships
(DejaVu Sans/Serif/Mono, STIX, Computer Modern; regular and bold) and, where installed,
Debian's Liberation fonts (shaped like Arial and Times), with the blur, noise,
stroke width, scale, JPEG compression and contrast inversion real figures show
(:func:`render_label`, :func:`glyph_dataset`), so nothing is downloaded and no real
micrograph is needed. Its weights ship in ``nanoshape/data/glyphs.npz``;
``python experiments/scale_bars/train_glyphs.py`` retrains them in a few minutes on a CPU.

The same two functions cut glyphs in training and in use: :func:`ink` turns grey values
into ink (0 background .. 1 text) for one text polarity (as they are, or strokes only: a
top-hat that drops particles touching the text), and :func:`cut_glyphs` labels its
connected components, joins the pieces of one glyph stacked above each other (the ring of
Å) and groups the glyphs into lines of text. The classes are the digits, the unit letters
(n, m, u, µ, Å) with the pairs that touch at small sizes (nm, um, µm), and ``other``.
"""

from __future__ import annotations

import functools
import io as _io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flax import nnx
from scipy import ndimage as ndi

__all__ = [
    "CLASSES",
    "FONTS",
    "Glyph",
    "background_noise",
    "degrade",
    "font_has",
    "font_path",
    "is_point",
    "GlyphNet",
    "classify_glyphs",
    "cut_glyphs",
    "draw_scale_bar",
    "glyph_dataset",
    "ink",
    "load_glyph_model",
    "load_weights",
    "patches",
    "random_label",
    "spans",
    "render_label",
    "save_glyph_model",
    "train_glyph_model",
    "training_fonts",
]

#: What the classifier tells apart; ``other`` is every other glyph or blob.
CLASSES = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "n", "m", "u", "µ", "Å", "nm", "um", "µm", "other")
_CLASS_INDEX = {c: i for i, c in enumerate(CLASSES)}
#: Side of the square patch a glyph is scaled into (its longer side to PATCH_PX - 4).
PATCH_PX = 24
#: matplotlib's fonts used for training (file names in mpl-data/fonts/ttf).
FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSansMono.ttf",
         "DejaVuSansMono-Bold.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf", "cmr10.ttf", "cmb10.ttf", "cmtt10.ttf")
_WEIGHTS = Path(__file__).parent / "data" / "glyphs.npz"


#: Debian's fonts-liberation (Arial- and Times-shaped, the faces most figures use), added to
#: the training fonts where installed (``apt-get install fonts-liberation``); the shipped
#: weights were trained with them. Only training uses them: the weights ship, and reading a
#: label at run time draws matplotlib's fonts alone (:mod:`nanoshape.labelsynth`), so that
#: what a micrograph reads does not depend on the fonts its user has installed.
LIBERATION_FONTS = ("LiberationSans-Regular.ttf", "LiberationSans-Bold.ttf", "LiberationSerif-Regular.ttf",
                    "LiberationSerif-Bold.ttf", "LiberationSansNarrow-Regular.ttf")
_LIBERATION_DIR = "/usr/share/fonts/truetype/liberation"


def font_path(name: str) -> str:
    """The path of a font: one of matplotlib's bundled fonts, or of fonts-liberation."""
    import matplotlib

    if name.startswith("Liberation"):
        return os.path.join(_LIBERATION_DIR, name)
    return os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf", name)


def training_fonts() -> tuple[str, ...]:
    """:data:`FONTS` and those of :data:`LIBERATION_FONTS` installed on this machine."""
    return FONTS + tuple(f for f in LIBERATION_FONTS if os.path.isfile(font_path(f)))


@functools.cache
def font_has(name: str, char: str) -> bool:
    """Whether the font ``name`` (a file of :func:`font_path`) has a glyph for ``char``."""
    from matplotlib.ft2font import FT2Font

    return FT2Font(font_path(name)).get_char_index(ord(char)) != 0


# ----------------------------------------------------------------------------- cutting


@dataclass(frozen=True)
class Glyph:
    """One glyph of a line of text (pixel indices, ends excluded: ``image[y0:y1, x0:x1]``)."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0


def ink(grey: np.ndarray, polarity: str, *, level: float | None = None, background: float | None = None,
        strokes_px: int = 0) -> np.ndarray:
    """Grey values as ink for text of one polarity: 0 at the background, 1 at the text.

    Where the label's own grey value and its background's are known (a label is drawn in
    its bar's colour, on its bar's background) they set the scale; else the background is
    the median of ``grey`` and the text level its 1st (dark text) or 99th (light text)
    percentile.

    With ``strokes_px``, only what is narrower than that counts as ink: the grey values
    less their morphological opening (light text) or their closing less them (dark text),
    a top-hat with a ``strokes_px`` square, over the same contrast. Text strokes are
    thinner than particles, so a particle touching the label, or a background that changes
    along it (a particle's halo, uneven illumination), drops out while the strokes stay.

    Args:
      grey: (H, W) grey values of a region around a label.
      polarity: ``"dark"`` or ``"light"`` text.
      level: the text's grey value, where known.
      background: the background's grey value, where known (used with ``level``).
      strokes_px: the side of the top-hat's square, wider than the label's strokes; 0: none.

    Returns:
      (H, W) float32 in [0, 1].
    """
    grey = np.asarray(grey, dtype=np.float32)
    sign = 1.0 if polarity == "light" else -1.0
    if level is None or background is None or (level - background) * sign <= 0:
        background = float(np.median(grey))
        level = float(np.percentile(grey, 1 if polarity == "dark" else 99))
    span = level - background
    if abs(span) < 1e-6:
        return np.zeros_like(grey)
    if strokes_px:
        square = (strokes_px, strokes_px)
        detail = grey - ndi.grey_opening(grey, size=square) if sign > 0 else ndi.grey_closing(grey, size=square) - grey
        return np.clip(detail / abs(span), 0.0, 1.0).astype(np.float32)
    return np.clip((grey - background) / span, 0.0, 1.0).astype(np.float32)


def cut_glyphs(ink_image: np.ndarray, *, min_height_px: int = 5) -> list[list[Glyph]]:
    """Cut ink into glyphs and group them into lines of text, each line left to right.

    Components of ink above 0.25 that reach 0.5 somewhere (8-connected; both thresholds
    raised above the noise where it is strong) are glyphs; a component above or below
    another that overlaps it by half its width joins it (the ring of Å, a broken µ), but
    not one wholly inside the other's box (a label in a box, inside the ink around it); a
    glyph belongs to a line when it overlaps the line's rows by half its own height or
    sits on its baseline (a decimal point) and lies within 1.2 line heights of it.

    Args:
      ink_image: (H, W) ink in [0, 1] (see :func:`ink`).
      min_height_px: lines whose tallest glyph is lower are dropped.

    Returns:
      Lines of glyphs.
    """
    # hysteresis: components above a low threshold that reach a high one, so a faint, thin
    # stroke (the top of a small serif 0) keeps its glyph whole; both thresholds rise above
    # the background's noise (3.5 robust standard deviations) so noise does not join glyphs
    # (ink is clipped at the background, the median: its 75th percentile is 0.674 sigma);
    # on a noisy background the ink is smoothed first (0.8 px), which strokes survive
    base, noise = background_noise(ink_image)
    if noise > 0.1:
        ink_image = ndi.gaussian_filter(ink_image, 0.8)
        base, noise = background_noise(ink_image)
    low = min(0.6, max(0.25, base + 3.0 * noise))
    high = max(0.5, low + 0.2)
    labels, n = ndi.label(ink_image > low, structure=np.ones((3, 3), bool))
    if n:
        strong = np.zeros(n + 1, bool)
        strong[np.unique(labels[ink_image > high])] = True
        strong[0] = False
        labels, n = ndi.label(strong[labels], structure=np.ones((3, 3), bool))
    if n == 0:
        return []
    boxes = [[s[0].start, s[0].stop, s[1].start, s[1].stop] for s in ndi.find_objects(labels)]
    # join pieces stacked vertically (the ring of Å, i's dot); largest first. A piece
    # wholly inside another's box, clear of its edges on all four sides, is not a piece of
    # it: the glyphs of a label drawn in a box lie inside the ink of the image around the
    # box (a grey scene is half ink to white text on a black box), and a glyph's own
    # pieces reach its edges (a serif 5's flag, its top; a broken 0's arcs, its sides)
    boxes.sort(key=lambda b: -(b[1] - b[0]) * (b[3] - b[2]))
    joined: list[list[int]] = []
    for box in boxes:
        for other in joined:
            overlap = min(box[3], other[3]) - max(box[2], other[2])
            gap = max(box[0], other[0]) - min(box[1], other[1])
            inside = other[0] < box[0] and box[1] < other[1] and other[2] < box[2] and box[3] < other[3]
            if overlap >= 0.5 * min(box[3] - box[2], other[3] - other[2]) and gap <= 0.5 * (other[1] - other[0]) \
                    and not inside:
                other[:] = [min(box[0], other[0]), max(box[1], other[1]), min(box[2], other[2]), max(box[3], other[3])]
                break
        else:
            joined.append(list(box))
    # lines grow left to right: a glyph joins the line whose last glyph is beside it (gap
    # within 1.2 heights), on the same rows (overlap of half the lower one) and of a like
    # height (0.5-2x), or sits small on its baseline (a decimal point); a particle next to
    # the text is no glyph's neighbour and starts its own line; of several lines, it joins
    # the one it fits best (the most rows shared with its last glyph, as a fraction), so a
    # speck of noise beside the text does not take the next glyph into a line of its own
    joined.sort(key=lambda b: b[2])
    lines: list[list[list[int]]] = []
    for box in joined:
        height = box[1] - box[0]
        best, best_fit = None, -1.0
        for line in lines:
            tallest = max(b[1] - b[0] for b in line)
            last = max((b for b in line if b[1] - b[0] > 0.45 * tallest), key=lambda b: b[3])  # not a point
            last_height = last[1] - last[0]
            gap = box[2] - max(b[3] for b in line)
            overlap = min(box[1], last[1]) - max(box[0], last[0])
            alike = 0.5 <= height / max(last_height, 1) <= 2.0 and overlap >= 0.5 * min(height, last_height)
            point = height <= 0.45 * last_height and abs(box[1] - last[1]) <= max(2, 0.2 * last_height)
            if -2 <= gap <= 1.2 * max(height, last_height) and (alike or point):
                fit = overlap / max(height, last_height, 1)
                if fit > best_fit:
                    best, best_fit = line, fit
        if best is not None:
            best.append(box)
        else:
            lines.append([box])
    out = []
    for line in lines:
        if max(b[1] - b[0] for b in line) < min_height_px:
            continue
        out.append([Glyph(*b) for b in sorted(line, key=lambda b: b[2])])
    return out


def background_noise(ink_image: np.ndarray) -> tuple[float, float]:
    """The background's ink level and its noise (a robust standard deviation): the median
    of the pixels under half ink and its distance to their 75th percentile over 0.674.

    Text and particles (half ink or more) are left out, so a region crowded with particles
    does not pass for a noisy one; a background a little off the ink's zero (its grey value
    estimated from elsewhere) moves the median, not the spread.
    """
    values = ink_image[ink_image < 0.5]
    if values.size < 16:
        return 0.0, 0.0
    median, upper = np.percentile(values, (50, 75))
    return float(median), float(upper - median) / 0.674


def is_point(glyph: Glyph, line: list[Glyph]) -> bool:
    """A decimal point: small, about square, on the line's baseline (the median glyph
    bottom, so a µ's descender does not move it), at most 0.35 of the cap height (the
    tallest glyph up to 1.5 median glyph heights: a digit, not the x-height of "nm" beside
    it, nor one tall glyph joined to a particle) and 0.45 of the median glyph height wide.
    A bold point blurred is 0.3 cap heights tall: against the median of "0.5 nm" (the
    x-height) it was too tall to be a point."""
    height = float(np.median([g.height for g in line]))
    cap = max(g.height for g in line if g.height <= 1.5 * height)
    baseline = float(np.median([g.y1 for g in line]))
    return (glyph.height <= 0.35 * cap and glyph.width <= 0.45 * height
            and abs(glyph.y1 - baseline) <= max(2.0, 0.15 * height))


#: The top-hat's side for strokes-only ink (:func:`ink`): wider than the strokes of labels up
#: to 40 px high in bold faces, narrower than most particles beside them.
STROKES_PX = 11
#: A glyph is cut into at most this many pieces (a serif font's hairlines lost to the threshold).
MAX_PIECES = 3


def spans(line: list[Glyph]) -> list[tuple[int, int, Glyph]]:
    """The glyphs a line may hold: every run of 1 to MAX_PIECES consecutive pieces that are
    not decimal points, as (first piece, one past the last, their joint box).

    The glyph cutter may break a glyph at a thin stroke (an ``n`` into two stems); the
    reader classifies every run and lets the label's grammar and the runs' probabilities
    choose. The classifier is trained on whole glyphs (touching pairs other than ``nm``,
    ``um``, ``µm`` as ``other``), so a run that is not one glyph reads as ``other`` or
    with a low probability, which a reading built on it carries as its weakest glyph.
    """
    points = [is_point(g, line) for g in line]
    height = max(g.height for g in line)
    out = []
    for i in range(len(line)):
        if points[i]:
            continue
        for j in range(i + 1, min(len(line), i + MAX_PIECES) + 1):
            if points[j - 1]:
                break
            part = line[i:j]
            box = Glyph(min(g.y0 for g in part), max(g.y1 for g in part), part[0].x0, max(g.x1 for g in part))
            if j - i > 1 and box.width > 2.5 * height:
                break
            out.append((i, j, box))
    return out


def patches(ink_image: np.ndarray, glyphs: list[Glyph]) -> tuple[np.ndarray, np.ndarray]:
    """Each glyph scaled into a PATCH_PX square (aspect kept), and its log aspect ratio.

    Returns:
      (n, PATCH_PX, PATCH_PX, 1) float32 patches and (n, 1) float32 log(height / width).
    """
    from skimage.transform import resize

    out = np.zeros((len(glyphs), PATCH_PX, PATCH_PX, 1), np.float32)
    aspect = np.zeros((len(glyphs), 1), np.float32)
    inner = PATCH_PX - 4
    for i, g in enumerate(glyphs):
        crop = ink_image[g.y0 : g.y1, g.x0 : g.x1]
        scale = inner / max(crop.shape)
        h, w = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
        small = resize(crop, (h, w), order=1, anti_aliasing=scale < 1, preserve_range=True)
        top, left = (PATCH_PX - h) // 2, (PATCH_PX - w) // 2
        out[i, top : top + h, left : left + w, 0] = small
        aspect[i, 0] = np.log(max(g.height, 1) / max(g.width, 1))
    return out, aspect


# ----------------------------------------------------------------------------- model


class GlyphNet(nnx.Module):
    """A small CNN: three 3x3 convolutions (16, 32, 48 channels) with 2x2 pooling, a dense
    layer of 64 units that also sees the glyph's log aspect ratio, and one logit per class."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 16, kernel_size=(3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(16, 32, kernel_size=(3, 3), rngs=rngs)
        self.conv3 = nnx.Conv(32, 48, kernel_size=(3, 3), rngs=rngs)
        self.dense = nnx.Linear(6 * 6 * 48 + 1, 64, rngs=rngs)
        self.out = nnx.Linear(64, len(CLASSES), rngs=rngs)

    def __call__(self, patch, aspect):
        import jax
        import jax.numpy as jnp

        pool = lambda x: jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        x = pool(jax.nn.relu(self.conv1(patch)))
        x = pool(jax.nn.relu(self.conv2(x)))
        x = jax.nn.relu(self.conv3(x))
        x = jnp.concatenate([x.reshape(x.shape[0], -1), aspect], axis=-1)
        return self.out(jax.nn.relu(self.dense(x)))


def save_glyph_model(model: nnx.Module, path: str | os.PathLike = _WEIGHTS) -> Path:
    """Write a model's weights (the glyph classifier's by default path) as float16 arrays in one .npz file."""
    state = nnx.state(model, nnx.Param)
    flat = {".".join(str(k) for k in key): np.asarray(value.value, np.float16)
            for key, value in nnx.to_flat_state(state)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        np.savez_compressed(handle, **flat)
    return path


@functools.cache
def load_glyph_model(path: str | os.PathLike = _WEIGHTS) -> GlyphNet:
    """The glyph classifier with the weights of ``path`` (the shipped ones by default).

    Raises:
      FileNotFoundError: no weights at ``path``.
      ValueError: the file holds other arrays than a GlyphNet's.
    """
    return load_weights(GlyphNet, path, "glyph classifier",
                        "python experiments/scale_bars/train_glyphs.py")


def load_weights(model_type: type[nnx.Module], path: str | os.PathLike, what: str, how: str) -> nnx.Module:
    """A model with its parameters from a :func:`save_glyph_model` file.

    Args:
      model_type: the saved model's class, built with ``rngs`` only; it is built abstractly
        (``nnx.eval_shape``), as every parameter comes from the file.
      path: the .npz file.
      what: the model's name in errors ("glyph classifier").
      how: the command that writes such a file, named where it is missing.

    Raises:
      FileNotFoundError: no weights at ``path``.
      ValueError: the file holds other arrays than ``model``'s.
    """
    import jax.numpy as jnp

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} weights not found ({how} writes them)")
    model = nnx.eval_shape(lambda: model_type(rngs=nnx.Rngs(0)))
    state = nnx.state(model, nnx.Param)
    with np.load(path) as saved:
        arrays = {name: saved[name] for name in saved.files}
    flat = nnx.to_flat_state(state)
    for key, variable in flat:
        name = ".".join(str(k) for k in key)
        if name not in arrays or arrays[name].shape != variable.value.shape:
            raise ValueError(f"{path}: not the weights of this {what} (missing or misshapen {name})")
        variable.value = jnp.asarray(arrays[name], jnp.float32)
    nnx.update(model, nnx.from_flat_state(flat))
    return model


def classify_glyphs(patch: np.ndarray, aspect: np.ndarray, model: GlyphNet | None = None) -> np.ndarray:
    """Class probabilities of glyph patches.

    Args:
      patch: (n, PATCH_PX, PATCH_PX, 1) from :func:`patches`.
      aspect: (n, 1).
      model: the classifier (the shipped one by default).

    Returns:
      (n, len(CLASSES)) probabilities.
    """
    import jax

    model = load_glyph_model() if model is None else model
    n = len(patch)
    if n == 0:
        return np.zeros((0, len(CLASSES)), np.float32)
    from nanoshape.batching import geometric_size, pad_rows

    size = geometric_size(n, smallest=16, factor=2)  # a handful of compiled shapes
    patch = pad_rows(np.asarray(patch, np.float32), size, fill=0)
    aspect = pad_rows(np.asarray(aspect, np.float32), size, fill=0)
    return np.asarray(jax.nn.softmax(_logits(model, patch, aspect), axis=-1))[:n]


@nnx.jit
def _logits(model: GlyphNet, patch, aspect):
    return model(patch, aspect)


# ----------------------------------------------------------------------------- rendering


def render_label(text: str, font: str, cap_height_px: float, *, stroke: int = 0, stretch: float = 1.0,
                 margin_px: int = 6) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Render one line of text as ink, anti-aliased (drawn 4x larger, then averaged down).

    Args:
      text: the text.
      font: a file name of :data:`FONTS` (or any of matplotlib's fonts).
      cap_height_px: height of a digit in the output, px.
      stroke: thicken (> 0) or thin (< 0) the strokes by this many px of the 4x drawing.
      stretch: horizontal scale of the text.
      margin_px: empty border around the text.

    Returns:
      (H, W) float32 ink in [0, 1] and, per character, (character, left x, right x) in px.
    """
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    factor = 4
    probe = ImageFont.truetype(font_path(font), 100)
    digit_height = probe.getbbox("0")[3] - probe.getbbox("0")[1]
    size = max(4, int(round(cap_height_px * factor * 100 / max(digit_height, 1))))
    face = ImageFont.truetype(font_path(font), size)
    left, top, right, bottom = face.getbbox(text)
    pad = margin_px * factor
    width, height = right - left + 2 * pad, bottom - top + 2 * pad
    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).text((pad - left, pad - top), text, fill=255, font=face)
    if stroke > 0:
        canvas = canvas.filter(ImageFilter.MaxFilter(2 * stroke + 1))
    elif stroke < 0:
        canvas = canvas.filter(ImageFilter.MinFilter(-2 * stroke + 1))
    out_w = max(1, int(round(width * stretch / factor)))
    out_h = max(1, int(round(height / factor)))
    small = canvas.resize((out_w, out_h), Image.BOX)
    chars = []
    for i, char in enumerate(text):
        if char == " ":
            continue
        offset = face.getlength(text[:i])
        box = face.getbbox(char)
        x0 = (pad - left + offset + box[0]) * stretch / factor
        x1 = (pad - left + offset + box[2]) * stretch / factor
        chars.append((char, x0, x1))
    return np.asarray(small, np.float32) / 255.0, chars


_VALUES = ("1", "2", "5", "10", "20", "25", "50", "100", "200", "250", "500", "0.1", "0.2", "0.5", "1.0", "2.5",
           "0.25", "1.5", "300", "400", "5.0", "3", "4", "6", "7", "8", "9", "30", "40", "60", "70", "80", "90", "150")
_UNITS = ("nm", "nm", "nm", "µm", "μm", "um", "Å", "mm")
# letters a label never holds; look-alikes of its glyphs (o O l I S Z B g q) are left out
_OTHER_TEXT = ("(a)", "(b)", "c)", "(d)", "e", "f", "kV", "TEM", "HV", "Mag", "x", "Wd", "Spot", "(A)", "(C)", "PEG",
               "Au", "Ag", "Fe", "Pt", "h", "k", "r", "t", "v", "w", "y", "K", "H", "R", "T", "V", "W", "X", "Y")


def random_label(rng: np.random.Generator) -> str:
    """A random label (a number and a length unit) or, one time in seven, other text a figure holds."""
    if rng.random() < 0.15:
        return str(rng.choice(_OTHER_TEXT))
    value = str(rng.choice(_VALUES)) if rng.random() < 0.7 else str(int(rng.integers(1, 1000)))
    unit = str(rng.choice(_UNITS))
    return value + (" " if rng.random() < 0.6 else "") + unit


def _char_class(chars: list[str]) -> str | None:
    """The class of a glyph covering these characters (in order); None: not learned."""
    text = "".join(chars).replace("μ", "µ")
    if text in _CLASS_INDEX:
        return text
    if len(chars) == 1:
        return None if text == "." else "other"
    return "other"  # any other touching pair ("00" at small sizes): not one glyph, so the label abstains


def glyph_dataset(seed: int, n_labels: int, *, fonts: tuple[str, ...] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Glyph patches cut from rendered, degraded labels, with their classes.

    Each label is drawn at a random size (digit height 6-40 px), stroke width and stretch,
    on a random grey background, plain or textured, with optional blobs (particles) near
    it, blurred, noised, JPEG-compressed and inverted at random; then made ink with
    :func:`ink` (at the text's own grey level; as it is or strokes only, at random) and cut
    with :func:`cut_glyphs`, as in use. A glyph's class is the characters whose centres it
    covers (a touching pair such as ``nm`` is one class; any other pair, a particle or a
    glyph joined to one is ``other``).

    Args:
      seed: the random seed.
      n_labels: labels to render.
      fonts: font files to draw from (default :func:`training_fonts`).

    Returns:
      patches (n, PATCH_PX, PATCH_PX, 1), log aspects (n, 1), class indices (n,).
    """
    fonts = training_fonts() if fonts is None else fonts
    rng = np.random.default_rng(seed)
    all_patches, all_aspects, all_classes = [], [], []
    for _ in range(n_labels):
        font = str(rng.choice(fonts))
        text = random_label(rng)
        if not all(font_has(font, c) for c in text if c != " "):
            text = text.replace("μ", "µ")
            if not all(font_has(font, c) for c in text if c != " "):
                continue
        cap = float(np.exp(rng.uniform(np.log(6), np.log(40))))
        stroke = int(rng.choice([-2, -1, 0, 0, 0, 1, 2, 3])) if cap > 10 else int(rng.choice([0, 0, 1]))
        text_ink, chars = render_label(text, font, cap, stroke=stroke, stretch=float(rng.uniform(0.85, 1.15)),
                                       margin_px=int(rng.integers(4, 12)))
        grey, blobs, text_level, background = degrade(rng, text_ink, cap)
        polarity = "dark" if text_level < background else "light"
        # the label's own grey and its background's, as a bar's give them in use; as is,
        # or strokes only, as the reader reads each label both ways
        cut = ink(grey, polarity, level=float(text_level), background=float(background),
                  strokes_px=STROKES_PX if rng.random() < 0.5 else 0)
        for line in cut_glyphs(cut):
            keep, classes = [], []
            for glyph in line:
                covered = [c for c, x0, x1 in chars if glyph.x0 <= 0.5 * (x0 + x1) < glyph.x1]
                if blobs[glyph.y0 : glyph.y1, glyph.x0 : glyph.x1].sum() > 0.1 * glyph.height * glyph.width:
                    keep.append(glyph)  # a particle, or a glyph joined to one: not a glyph to read
                    classes.append("other")
                    continue
                if not covered:
                    if glyph.height * glyph.width > 0.3 * cap * cap and not is_point(glyph, line):
                        keep.append(glyph)
                        classes.append("other")  # a blob
                    continue
                if covered == ["."] or is_point(glyph, line):
                    continue
                label = _char_class(covered)
                if label is not None:
                    keep.append(glyph)
                    classes.append(label)
            if keep:
                p, a = patches(cut, keep)
                all_patches.append(p)
                all_aspects.append(a)
                all_classes.extend(_CLASS_INDEX[c] for c in classes)
    return (np.concatenate(all_patches), np.concatenate(all_aspects), np.asarray(all_classes, np.int32))


def degrade(rng: np.random.Generator, text_ink: np.ndarray, cap: float) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Rendered text ink as a figure shows it: on a random grey background (plain or
    textured), black, white or grey text, particles (blobs) near or on it at random,
    blurred, noised and JPEG-compressed at random.

    Returns:
      grey values in [0, 1], the blobs' mask, the text's grey level, the background's.
    """
    from PIL import Image

    background, text_level = rng.uniform(0.3, 0.8), rng.choice([0.0, 1.0])
    if rng.random() < 0.3:
        text_level = background + (1 if text_level > background else -1) * rng.uniform(0.25, 0.5)
    grey = background + (text_level - background) * text_ink
    if rng.random() < 0.3:  # a textured background (a support film, a crystal's fringes)
        texture = ndi.gaussian_filter(rng.normal(0, 1, grey.shape), rng.uniform(1, 4))
        grey = grey + rng.uniform(0.05, 0.2) * texture / max(float(texture.std()), 1e-6) * (1 - text_ink)
    grey, blobs = _add_blobs(rng, grey, cap) if rng.random() < 0.35 else (grey, np.zeros(grey.shape, bool))
    grey = ndi.gaussian_filter(grey, rng.uniform(0.0, 0.9)) if rng.random() < 0.7 else grey
    grey = grey + rng.normal(0, rng.uniform(0, 0.08), grey.shape)
    grey = np.clip(grey, 0, 1)
    if rng.random() < 0.4:
        buffer = _io.BytesIO()
        Image.fromarray((grey * 255).astype(np.uint8)).save(buffer, format="JPEG", quality=int(rng.integers(30, 95)))
        grey = np.asarray(Image.open(buffer), np.float32) / 255.0
    return grey, blobs, float(text_level), float(background)


def _add_blobs(rng: np.random.Generator, grey: np.ndarray, cap: float) -> tuple[np.ndarray, np.ndarray]:
    """Dark or light ellipses (particles) near or on the text; returns the image and their mask."""
    h, w = grey.shape
    yy, xx = np.mgrid[0:h, 0:w]
    out = grey.copy()
    mask = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(1, 3))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.3, 1.0) * cap, rng.uniform(0.3, 1.0) * cap
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        out[inside] = rng.choice([0.0, 1.0]) * 0.8 + 0.1
        mask |= inside
    return out, mask


def train_glyph_model(seed: int = 0, *, n_labels: int = 12_000, steps: int = 4_000, batch_size: int = 128,
                      learning_rate: float = 2e-3, fonts: tuple[str, ...] | None = None,
                      progress=None) -> tuple[GlyphNet, dict[str, float]]:
    """Train the glyph classifier on rendered labels (:func:`glyph_dataset`).

    Args:
      seed: the one random seed (data, initialisation, batches).
      n_labels: labels rendered for training; a tenth as many more are held out.
      steps: Adam steps (cosine-decayed learning rate).
      batch_size: glyphs per step.
      learning_rate: peak learning rate.
      fonts: font files to render (default :func:`training_fonts`).
      progress: called as ``progress(step, loss)`` every 500 steps.

    Returns:
      The model and ``{"train_glyphs", "test_glyphs", "test_accuracy", "test_accuracy_confident",
      "test_confident_fraction"}`` (confident: top probability >= 0.9).
    """
    import jax
    import optax

    patch, aspect, label = glyph_dataset(seed, n_labels, fonts=fonts)
    test_patch, test_aspect, test_label = glyph_dataset(seed + 1_000_003, max(200, n_labels // 10), fonts=fonts)
    model = GlyphNet(rngs=nnx.Rngs(seed))
    schedule = optax.cosine_decay_schedule(learning_rate, steps)
    optimizer = nnx.Optimizer(model, optax.adam(schedule), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, patch, aspect, label):
        def loss_fn(model):
            logits = model(patch, aspect)
            return optax.softmax_cross_entropy_with_integer_labels(logits, label).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    rng = np.random.default_rng(seed)
    for step in range(steps):
        index = rng.integers(0, len(label), batch_size)
        batch = patch[index]
        if rng.random() < 0.5:  # small shifts: glyph boxes are cut a pixel either way
            batch = np.roll(batch, tuple(rng.integers(-1, 2, 2)), axis=(1, 2))
        loss = train_step(model, optimizer, batch, aspect[index], label[index])
        if progress is not None and (step + 1) % 500 == 0:
            progress(step + 1, float(loss))
    probabilities = classify_glyphs(test_patch, test_aspect, model)
    predicted, top = probabilities.argmax(-1), probabilities.max(-1)
    confident = top >= 0.9
    metrics = {"fonts": list(training_fonts() if fonts is None else fonts), "train_glyphs": int(len(label)), "test_glyphs": int(len(test_label)),
               "test_accuracy": float((predicted == test_label).mean()),
               "test_confident_fraction": float(confident.mean()),
               "test_accuracy_confident": float((predicted[confident] == test_label[confident]).mean())}
    return model, metrics


def draw_scale_bar(image: np.ndarray, *, length_px: int, label: str, font: str = "DejaVuSans.ttf",
                   cap_height_px: float = 14.0, corner: str = "bottom-right", colour: str = "white",
                   thickness_px: int = 6, label_above: bool = True, box: bool = False, ticks: bool = False,
                   margin_px: int = 12) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Burn a scale bar and its label into a grey image, as figure software does.

    Args:
      image: (H, W) grey values in [0, 255].
      length_px: the bar's length end to end (ticks included).
      label: its text, e.g. ``"100 nm"``.
      font: a matplotlib font file name.
      cap_height_px: digit height of the label.
      corner: ``"bottom-right"``, ``"bottom-left"``, ``"top-right"`` or ``"top-left"``.
      colour: ``"white"`` or ``"black"`` bar and text.
      thickness_px: the bar's height.
      label_above: the label above the bar (else below).
      box: a filled box of the other colour behind bar and label.
      ticks: end ticks rising above the bar by twice its thickness.
      margin_px: distance from the image's edges.

    Returns:
      The new image (float32) and the bar's box (x0, y0, x1, y1), ends included.
    """
    out = np.array(image, dtype=np.float32)
    height, width = out.shape
    text, _ = render_label(label, font, cap_height_px, margin_px=0)
    text_h, text_w = text.shape
    gap = max(2, int(0.3 * cap_height_px))
    tick_px = 2 * thickness_px if ticks else 0
    group_w = max(length_px, text_w)
    group_h = text_h + gap + thickness_px + tick_px
    left = margin_px if corner.endswith("left") else width - margin_px - group_w
    top = margin_px if corner.startswith("top") else height - margin_px - group_h
    ink_value, paper = (255.0, 0.0) if colour == "white" else (0.0, 255.0)
    if box:
        pad = max(3, gap)
        out[max(0, top - pad) : top + group_h + pad, max(0, left - pad) : left + group_w + pad] = paper
    bar_x0 = left + (group_w - length_px) // 2
    text_x0 = left + (group_w - text_w) // 2
    if label_above:
        text_y0, bar_y0 = top, top + text_h + gap + tick_px
    else:
        bar_y0, text_y0 = top + tick_px, top + tick_px + thickness_px + gap
    region = out[text_y0 : text_y0 + text_h, text_x0 : text_x0 + text_w]
    region[:] = region * (1 - text) + ink_value * text
    out[bar_y0 : bar_y0 + thickness_px, bar_x0 : bar_x0 + length_px] = ink_value
    if ticks:
        tick_w = max(1, thickness_px // 2)
        for x in (bar_x0, bar_x0 + length_px - tick_w):
            out[bar_y0 - tick_px : bar_y0, x : x + tick_w] = ink_value
    return out, (bar_x0, bar_y0, bar_x0 + length_px - 1, bar_y0 + thickness_px - 1)
