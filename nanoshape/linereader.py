"""Read a scale-bar label's line of text whole: a small convolutional recogniser with CTC.

The glyph classifier (:mod:`nanoshape.glyphs`) reads a label glyph by glyph, so it fails
where the glyphs are cut wrongly: strokes broken by noise, digits touching, a glyph
joined to a particle. This reader sees the whole line at once, as a strip of ink scaled to
:data:`HEIGHT_PX` rows around the line's glyphs (:func:`line_strip`), and emits one
distribution over :data:`ALPHABET` per column group; connectionist temporal
classification (CTC) decodes it into text without cutting. It is trained, like the glyph
classifier, only on labels rendered from the fonts matplotlib ships and degraded as
figures degrade them (:func:`nanoshape.glyphs.degrade`), and cut with the same functions
as in use (:func:`nanoshape.glyphs.ink`, :func:`nanoshape.glyphs.cut_glyphs`). Weights ship in
``nanoshape/data/linereader.npz``; ``python experiments/scale_bars/train_line_reader.py``
retrains them.

Characters a label never holds are all one symbol, ``?``: a line of other text reads as
question marks, which no label parses, rather than as the nearest label.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
from flax import nnx
from scipy import ndimage as ndi

__all__ = ["ALPHABET", "HEIGHT_PX", "WIDTH_PX", "LineNet", "line_strip", "line_dataset", "read_strips",
           "train_line_reader", "save_line_reader", "load_line_reader"]

#: The symbols after CTC's blank (index 0): digits, the decimal point, the unit letters (µ read as u) and ``?``.
ALPHABET = "0123456789.nmuÅ?"
#: Rows of the strip a line is scaled into: the line's median glyph height fills 55 % of it.
HEIGHT_PX = 32
#: Columns of the strip: a wider line is squeezed.
WIDTH_PX = 192
_GLYPH_FRACTION = 0.55
_MAX_TEXT = 12
_FRAME_PX = 4
_FRAMES = WIDTH_PX // _FRAME_PX
_WEIGHTS = Path(__file__).parent / "data" / "linereader.npz"


def _symbol(char: str) -> str | None:
    """A character's symbol in :data:`ALPHABET` (None: a space, not read)."""
    if char == " ":
        return None
    char = {"µ": "u", "μ": "u", "\u212b": "Å", ",": "."}.get(char, char)
    return char if char in ALPHABET else "?"


def _strip_box(line) -> tuple[float, float, float, float, float]:
    """The strip's window around a line of glyphs: (centre row, half height, left, right, glyph height).

    The glyph height is the median of the line's glyphs (a particle joined to one glyph or a
    decimal point does not set it); the window reaches half a glyph height past the line's ends."""
    height = float(np.median([g.height for g in line]))
    middle = float(np.median([0.5 * (g.y0 + g.y1) for g in line]))
    half = 0.5 * height / _GLYPH_FRACTION
    return middle, half, line[0].x0 - 0.5 * height, max(g.x1 for g in line) + 0.5 * height, height


def line_strip(ink_image: np.ndarray, line, *, jitter: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """A line of text as the reader sees it: its window of ink (:func:`_strip_box`) scaled to
    HEIGHT_PX rows (squeezed to WIDTH_PX columns where wider), left-aligned, zero beyond.

    Args:
      ink_image: (H, W) ink in [0, 1] (:func:`nanoshape.glyphs.ink`).
      line: the line's glyphs (:func:`nanoshape.glyphs.cut_glyphs`).
      jitter: training only: (scale, row shift, left shift, right shift) in glyph heights.

    Returns:
      (HEIGHT_PX, WIDTH_PX) float32, and the columns the line's window fills.
    """
    middle, half, left, right, height = _strip_box(line)
    if jitter is not None:
        half *= float(jitter[0])
        middle += float(jitter[1]) * height
        left += float(jitter[2]) * height
        right += float(jitter[3]) * height
    scale = 2 * half / HEIGHT_PX  # image px per strip px
    columns = max(1, int(round((right - left) / scale)))
    x_scale = scale if columns <= WIDTH_PX else (right - left) / WIDTH_PX
    columns = min(columns, WIDTH_PX)
    rows = middle - half + (np.arange(HEIGHT_PX) + 0.5) * scale - 0.5
    cols = left + (np.arange(columns) + 0.5) * x_scale - 0.5
    sigma = (max(0.0, 0.5 * (scale - 1)), max(0.0, 0.5 * (x_scale - 1)))
    # only the window is smoothed and sampled: the image cut to it, with the filter's reach
    # (truncated at 4 sigma) and the interpolation's pixel as margin, gives the same values
    reach = [int(4.0 * s + 0.5) + 2 for s in sigma]
    height_px, width_px = np.shape(ink_image)
    y0, x0 = max(0, int(np.floor(rows[0])) - reach[0]), max(0, int(np.floor(cols[0])) - reach[1])
    y1 = min(height_px, int(np.ceil(rows[-1])) + reach[0] + 1)
    x1 = min(width_px, int(np.ceil(cols[-1])) + reach[1] + 1)
    out = np.zeros((HEIGHT_PX, WIDTH_PX), np.float32)
    if y1 <= y0 or x1 <= x0:
        return out, columns
    source = np.asarray(ink_image[y0:y1, x0:x1], np.float32)
    if max(sigma) > 0:  # no aliasing where the line is scaled down
        source = ndi.gaussian_filter(source, sigma)
    rows, cols = rows - y0, cols - x0
    yy, xx = np.meshgrid(rows, cols, indexing="ij")
    out[:, :columns] = ndi.map_coordinates(source, [yy, xx], order=1, mode="constant", cval=0.0)
    return out, columns


def _frames(columns) -> np.ndarray:
    """The reader's output columns (one per 4 strip columns) that see the line's window: the
    text is read there only (CTC's sequence ends with the line, not with the strip)."""
    return np.minimum(_FRAMES, (np.asarray(columns) + _FRAME_PX - 1) // _FRAME_PX)


class LineNet(nnx.Module):
    """Four 3x3 convolutions (16, 32, 48, 64 channels; pooled to 1/8 of the rows and 1/4 of
    the columns), the rows folded into a dense layer of 96 per column group, two width-5
    convolutions along the line for context, and one logit per symbol and blank: 48 column
    groups, enough for a label of :data:`_MAX_TEXT` symbols with CTC's blanks."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 16, kernel_size=(3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(16, 32, kernel_size=(3, 3), rngs=rngs)
        self.conv3 = nnx.Conv(32, 48, kernel_size=(3, 3), rngs=rngs)
        self.conv4 = nnx.Conv(48, 64, kernel_size=(3, 3), rngs=rngs)
        self.fold = nnx.Linear(4 * 64, 96, rngs=rngs)
        self.context1 = nnx.Conv(96, 96, kernel_size=(5,), rngs=rngs)
        self.context2 = nnx.Conv(96, 96, kernel_size=(5,), rngs=rngs)
        self.out = nnx.Linear(96, len(ALPHABET) + 1, rngs=rngs)

    def __call__(self, strip):
        import jax
        import jax.numpy as jnp

        def pool(x, rows, cols):
            return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, rows, cols, 1), (1, rows, cols, 1), "VALID")

        x = pool(jax.nn.relu(self.conv1(strip)), 2, 2)  # 16 x 96
        x = pool(jax.nn.relu(self.conv2(x)), 2, 2)  # 8 x 48
        x = pool(jax.nn.relu(self.conv3(x)), 2, 1)  # 4 x 48
        x = jax.nn.relu(self.conv4(x))
        x = jnp.transpose(x, (0, 2, 1, 3)).reshape(x.shape[0], x.shape[2], -1)  # (n, 48, 4 * 64)
        x = jax.nn.relu(self.fold(x))
        x = x + jax.nn.relu(self.context1(x))
        x = x + jax.nn.relu(self.context2(x))
        return self.out(x)


@nnx.jit
def _log_probs(model: LineNet, strip):
    import jax

    return jax.nn.log_softmax(model(strip), axis=-1)


def read_strips(strips: np.ndarray, columns, model: LineNet | None = None) -> list[tuple[str, float]]:
    """Read strips (:func:`line_strip`) by CTC's best path over the columns their lines fill.

    Returns:
      Per strip, (text, confidence): the symbols emitted (``u`` for µ), and the smallest,
      over the emitted symbols, of the largest probability the symbol has in its run of
      columns: a symbol the reader is unsure of anywhere makes the whole line unsure.
    """
    from nanoshape.batching import geometric_size, pad_rows

    model = load_line_reader() if model is None else model
    strips = np.asarray(strips, np.float32).reshape(-1, HEIGHT_PX, WIDTH_PX, 1)
    if len(strips) == 0:
        return []
    size = geometric_size(len(strips), smallest=4, factor=2)
    probs = np.exp(np.asarray(_log_probs(model, pad_rows(strips, size, fill=0))))[: len(strips)]
    out = []
    for p, frames in zip(probs, _frames(np.broadcast_to(columns, len(strips)))):
        best = p[:frames].argmax(-1)
        text, confidence, previous = [], 1.0, 0
        for t, k in enumerate(best):
            if k != 0 and k != previous:
                text.append(ALPHABET[k - 1])
                confidence_k = p[t, k]
                run = t + 1
                while run < len(best) and best[run] == k:
                    confidence_k = max(confidence_k, p[run, k])
                    run += 1
                confidence = min(confidence, float(confidence_k))
            previous = k
        out.append(("".join(text), confidence if text else 0.0))
    return out


# ----------------------------------------------------------------------------- training


def line_dataset(seed: int, n_labels: int, *, fonts: tuple[str, ...] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Strips of rendered, degraded labels (and some other text), with their symbols.

    Each label is drawn and degraded as for the glyph classifier
    (:func:`nanoshape.glyphs.render_label`, :func:`nanoshape.glyphs.degrade`), made ink in
    its own polarity (as is or strokes only) and cut into lines (:func:`nanoshape.glyphs.cut_glyphs`);
    every line of 2-12 glyphs gives a strip, its window jittered a little, whose text is the
    characters with their centres inside the window.

    Returns:
      strips (n, HEIGHT_PX, WIDTH_PX, 1) float16, the columns each line fills (n,), symbol
      indices (n, _MAX_TEXT) (1-based, 0-padded), text lengths (n,).
    """
    from nanoshape.glyphs import (STROKES_PX, cut_glyphs, degrade, font_has, ink, random_label, render_label,
                                  training_fonts)

    fonts = training_fonts() if fonts is None else fonts
    rng = np.random.default_rng(seed)
    strips, widths, targets, lengths = [], [], [], []
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
                                       margin_px=int(rng.integers(int(cap) + 4, int(2 * cap) + 8)))
        grey, _, text_level, background = degrade(rng, text_ink, cap)
        polarity = "dark" if text_level < background else "light"
        cut = ink(grey, polarity, level=text_level, background=background,
                  strokes_px=STROKES_PX if rng.random() < 0.5 else 0)
        for line in cut_glyphs(cut):
            if not 2 <= len(line) <= 12:
                continue
            jitter = np.array([rng.uniform(0.9, 1.15), rng.uniform(-0.1, 0.1), rng.uniform(-0.3, 0.3),
                               rng.uniform(-0.3, 0.3)])
            _, _, left, right, height = _strip_box(line)
            left, right = left + jitter[2] * height, right + jitter[3] * height
            symbols = [_symbol(c) for c, x0, x1 in chars if left <= 0.5 * (x0 + x1) < right]
            symbols = [s for s in symbols if s is not None]
            if not symbols or len(symbols) > _MAX_TEXT:
                continue
            strip, columns = line_strip(cut, line, jitter=jitter)
            strips.append(strip.astype(np.float16))
            widths.append(columns)
            targets.append([ALPHABET.index(s) + 1 for s in symbols] + [0] * (_MAX_TEXT - len(symbols)))
            lengths.append(len(symbols))
    return (np.stack(strips)[..., None], np.asarray(widths, np.int32), np.asarray(targets, np.int32),
            np.asarray(lengths, np.int32))


def train_line_reader(seed: int = 0, *, n_labels: int = 30_000, steps: int = 4_000, batch_size: int = 64,
                      learning_rate: float = 2e-3, fonts: tuple[str, ...] | None = None,
                      progress=None) -> tuple[LineNet, dict[str, float]]:
    """Train the line reader on rendered labels (:func:`line_dataset`) with CTC and Adam.

    Args:
      seed: the one random seed (data, initialisation, batches).
      n_labels: labels rendered for training; a tenth as many more are held out.
      steps: Adam steps (cosine-decayed learning rate).
      batch_size: strips per step.
      learning_rate: peak learning rate.
      fonts: font files to render (default :func:`nanoshape.glyphs.training_fonts`).
      progress: called as ``progress(step, loss)`` every 250 steps.

    Returns:
      The model and its held-out figures: ``test_strips``, ``test_exact`` (whole text right),
      ``test_confident_fraction`` and ``test_exact_confident`` (confidence >= 0.9).
    """
    import jax
    import jax.numpy as jnp
    import optax

    strips, widths, targets, lengths = line_dataset(seed, n_labels, fonts=fonts)
    test = line_dataset(seed + 1_000_003, max(200, n_labels // 10), fonts=fonts)
    model = LineNet(rngs=nnx.Rngs(seed))
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, min(200, steps // 10), steps)
    optimizer = nnx.Optimizer(model, optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule)), wrt=nnx.Param)
    label_paddings = (np.arange(_MAX_TEXT)[None, :] >= lengths[:, None]).astype(np.float32)
    logit_paddings = (np.arange(_FRAMES)[None, :] >= _frames(widths)[:, None]).astype(np.float32)

    @nnx.jit
    def train_step(model, optimizer, strip, paddings, target, target_paddings):
        def loss_fn(model):
            return optax.ctc_loss(model(strip), paddings, target, target_paddings, blank_id=0).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    rng = np.random.default_rng(seed)
    for step in range(steps):
        index = rng.integers(0, len(lengths), batch_size)
        loss = train_step(model, optimizer, jnp.asarray(strips[index], jnp.float32), logit_paddings[index],
                          targets[index], label_paddings[index])
        if progress is not None and (step + 1) % 250 == 0:
            progress(step + 1, float(loss))
    test_strips, test_widths, test_targets, test_lengths = test
    read = read_strips(test_strips.astype(np.float32), test_widths, model)
    truth = ["".join(ALPHABET[k - 1] for k in row[:n]) for row, n in zip(test_targets, test_lengths)]
    exact = np.array([r[0] == t for r, t in zip(read, truth)])
    confident = np.array([r[1] >= 0.9 for r in read])
    metrics = {"train_strips": int(len(lengths)), "test_strips": int(len(test_lengths)),
               "test_exact": float(exact.mean()), "test_confident_fraction": float(confident.mean()),
               "test_exact_confident": float(exact[confident].mean()) if confident.any() else 0.0}
    return model, metrics


def save_line_reader(model: LineNet, path: str | os.PathLike = _WEIGHTS) -> Path:
    """Write the model's weights as float16 arrays in one .npz file."""
    from nanoshape.glyphs import save_glyph_model

    return save_glyph_model(model, path)


@functools.cache
def load_line_reader(path: str | os.PathLike = _WEIGHTS) -> LineNet:
    """The line reader with the weights of ``path`` (the shipped ones by default).

    Raises:
      FileNotFoundError: no weights at ``path``.
      ValueError: the file holds other arrays than a LineNet's.
    """
    from nanoshape.glyphs import load_weights

    return load_weights(LineNet, path, "line reader",
                        "python experiments/scale_bars/train_line_reader.py")
