"""A learned particle detector: a small U-Net run over an image pyramid.

The network maps a normalised micrograph to three per-pixel outputs:

- ``foreground``: the probability that the pixel belongs to a particle;
- ``distance``: the pixel's distance to its particle's edge divided by the largest such
  distance in that particle (1 on the particle's medial axis, 0 at its edge and outside),
  whose cores (> 0.5) seed a watershed that separates touching particles;
- ``log2 size``: log2 of the equivalent diameter (in the network's own pixels) of the
  particle the pixel belongs to.

The size output is what makes the detector work on any micrograph without knowing the
particle size beforehand: the image is block-averaged into a pyramid (factors 1, 2, 4, ...),
the network runs on every level, and each pixel takes the maps of the level at which its
particle appears closest to ``target_diameter_px``, the size the network handles best. A
large porous particle seen at full resolution is texture without edges in view; the
network says "larger than I can see" there, and the coarser level, where the whole particle
fits in the receptive field, is used. A clump of small particles seen at a coarse level is
a blob of sub-resolution texture; the network says "smaller than a few pixels" and the
finer level is used. Several populations of different size in one micrograph are each
taken from their own level.

The model ships inside the package (``nanoshape/data/segnet``, orbax, no executable code)
and is trained by ``nanoshape train-segmentation`` (:mod:`nanoshape.segtrain`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from scipy import ndimage as ndi

from nanoshape.xla_cache import keep_traces

__all__ = ["SegNetOptions", "SegNet", "Level", "DetectOptions", "normalise", "predict_levels", "detect", "save_segnet",
           "load_segnet", "segnet_dir", "default_segnet_dir", "OUTPUTS"]

#: output channels, in order
OUTPUTS = ("foreground", "distance", "log2_size")


@dataclass(frozen=True)
class SegNetOptions:
    """Architecture of the U-Net and how it is applied.

    Attributes:
      channels: feature channels at each resolution of the U-Net (one max-pool between
        levels); the receptive field grows with the number of levels.
      target_diameter_px: particle diameter (network pixels) the pyramid aims at; each
        pixel is taken from the level whose predicted size is nearest it.
      min_level_side_px: pyramid levels stop before the shorter image side falls under this.
      tile_px: images (pyramid levels) larger than this are run in overlapping tiles of this
        side (a multiple of 32)... 2304 runs a 2048 x 2048 micrograph's finest level (2240 px
        with its margins) in one call: in 1024 px tiles it was 9 tiles of 1024^2 px, 1.9x the
        work (each tile's margins are computed and thrown away) and 1.9x the time of the
        whole pyramid (5.5 s -> 2.9 s, this 2-core CPU), in the same peak memory (a call holds
        at most :data:`CALL_PX` pixels).
      tile_margin_px: ...whose outer margin, discarded, is this wide.
      edge_px: a level run in one call is reflect-padded by this much on every side (its
        edge pixels see a mirror image rather than zeros). 32 (the deepest feature map's
        pixel) rather than the tile margin's 96: on the development part and the rendered
        sets, F1 of ``detect`` moved by -0.004..+0.009 over margins of 16-96 px (0.871 /
        0.984 / 0.799 at 96; 0.871 / 0.984 / 0.808 at 32), while a 512 x 512 micrograph's
        pyramid costs 1.6x less (0.39 -> 0.24 s): its finest level is 576^2 px of work, not 704^2.
    """

    channels: tuple[int, ...] = (8, 16, 32, 64, 96, 128)
    target_diameter_px: float = 24.0
    min_level_side_px: int = 48
    tile_px: int = 2304
    tile_margin_px: int = 96
    edge_px: int = 32

    def __post_init__(self):
        if len(self.channels) < 2:
            raise ValueError(f"SegNetOptions.channels needs at least two levels, got {self.channels}")
        if self.tile_px % self.multiple or self.tile_px <= 2 * self.tile_margin_px:
            raise ValueError(f"tile_px must be a multiple of {self.multiple} larger than twice tile_margin_px, "
                             f"got {self.tile_px} and {self.tile_margin_px}")
        if self.edge_px < 0:
            raise ValueError(f"edge_px must be >= 0, got {self.edge_px}")

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this (one factor 2 per pooling)."""
        return 2 ** (len(self.channels) - 1)


def _pool(x: jax.Array) -> jax.Array:
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


class _Block(nnx.Module):
    """Two 3 x 3 convolutions, each followed by batch normalisation and a ReLU.

    Batch (not group or instance) normalisation: at inference it is a fixed affine map,
    so the output at a pixel does not depend on the size of the image or tile around it,
    and tiled inference equals whole-image inference.
    """

    def __init__(self, c_in: int, c_out: int, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(c_in, c_out, (3, 3), use_bias=False, rngs=rngs)
        self.norm1 = nnx.BatchNorm(c_out, momentum=0.95, rngs=rngs)
        self.conv2 = nnx.Conv(c_out, c_out, (3, 3), use_bias=False, rngs=rngs)
        self.norm2 = nnx.BatchNorm(c_out, momentum=0.95, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.norm1(self.conv1(x)))
        return jax.nn.relu(self.norm2(self.conv2(x)))


class SegNet(nnx.Module):
    """U-Net: a block of two convolutions per level, max-pooling down, transposed convolutions up."""

    def __init__(self, options: SegNetOptions = SegNetOptions(), *, rngs: nnx.Rngs):
        self.options = options
        encoder, c_in = [], 1
        for c in options.channels:
            encoder.append(_Block(c_in, c, rngs=rngs))
            c_in = c
        self.encoder = nnx.List(encoder)
        ups, decoder = [], []
        for c in reversed(options.channels[:-1]):
            ups.append(nnx.ConvTranspose(c_in, c, (2, 2), strides=(2, 2), rngs=rngs))
            decoder.append(_Block(2 * c, c, rngs=rngs))
            c_in = c
        self.ups = nnx.List(ups)
        self.decoder = nnx.List(decoder)
        self.head = nnx.Conv(c_in, len(OUTPUTS), (1, 1), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(B, H, W, 1) normalised images, H and W multiples of ``options.multiple`` ->
        (B, H, W, 3) raw outputs: foreground logit, distance logit, log2 size."""
        skips = []
        for level, block in enumerate(self.encoder):
            if level:
                x = _pool(x)
            x = block(x)
            skips.append(x)
        for up, block, skip in zip(self.ups, self.decoder, reversed(skips[:-1])):
            x = block(jnp.concatenate([up(x), skip], axis=-1))
        return self.head(x)


# ----------------------------------------------------------------------------- inference


def normalise(image: np.ndarray) -> np.ndarray:
    """Scale intensities so the 0.5th and 99.5th percentiles map to -0.5 and 0.5 (float32).

    Percentiles are taken from a strided sample of at most ~1 Mpx; non-finite pixels take
    the median. The network sees every micrograph on this common scale.
    """
    image = np.asarray(image, dtype=np.float32)
    finite = np.isfinite(image)
    if not finite.all():
        image = np.where(finite, image, np.median(image[finite]) if finite.any() else 0.0).astype(np.float32)
    stride = max(1, int(np.sqrt(image.size / 1_000_000)))
    lo, hi = np.percentile(image[::stride, ::stride], [0.5, 99.5])
    if not hi > lo:
        return np.zeros(image.shape, np.float32)
    return np.clip((image - lo) / (hi - lo) - 0.5, -1.0, 1.0).astype(np.float32)


def block_mean(x: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor x factor`` blocks, the image edge-padded to a multiple of ``factor``."""
    if factor == 1:
        return x
    h, w = x.shape[:2]
    ph, pw = -h % factor, -w % factor
    if ph or pw:
        x = np.pad(x, ((0, ph), (0, pw)) + ((0, 0),) * (x.ndim - 2), mode="edge")
    shape = (x.shape[0] // factor, factor, x.shape[1] // factor, factor) + x.shape[2:]
    return x.reshape(shape).mean(axis=(1, 3), dtype=np.float32)


@keep_traces(static_argnames=("graphdef",))
def _forward(graphdef, state, x):
    return nnx.merge(graphdef, state)(x)


def _run_level(model: SegNet, level: np.ndarray) -> np.ndarray:
    """The network's raw outputs (H, W, 3) on one pyramid level, tiled when large.

    The level is reflect-padded on every side, so that pixels near its edge see a
    mirrored context rather than zeros. A level that fits in ``tile_px`` with ``edge_px``
    of padding runs in one call, its sides rounded up to a multiple of 32 (a few compiled
    shapes serve all images); a larger one, padded by ``tile_margin_px``, is cut into
    ``tile_px`` tiles that overlap by twice that margin, each keeping its centre. With a
    margin of at least half the receptive field the tiles give the outputs of one call;
    the shipped U-Net's receptive field is wider than 192 px, so its tiles differ from one
    call a little near their seams.
    """
    options = model.options
    graphdef, state = nnx.split(model)
    h, w = level.shape
    tile, margin = options.tile_px, options.tile_margin_px
    bucket = max(options.multiple, 32)

    def padded(top: int, bottom: int, right: int) -> np.ndarray:
        # numpy reflects repeatedly where a pad exceeds the side; a side of 1 has nothing to reflect
        mode = "reflect" if min(h, w) > 1 else "edge"
        return np.pad(level, ((top, bottom), (top, right)), mode=mode)

    edge = options.edge_px
    if max(h, w) + 2 * edge <= tile:
        ph, pw = -(h + 2 * edge) % bucket, -(w + 2 * edge) % bucket
        x = padded(edge, edge + ph, edge + pw)
        out = _forward(graphdef, state, jnp.asarray(x[None, ..., None]))
        return np.asarray(out[0, edge:edge + h, edge:edge + w])
    core = tile - 2 * margin
    ny, nx = math.ceil(h / core), math.ceil(w / core)
    x = padded(margin, ny * core - h + margin, nx * core - w + margin)
    out = np.zeros((ny * core, nx * core, len(OUTPUTS)), np.float32)
    tiles = [(i, j) for i in range(ny) for j in range(nx)]
    start = 0
    for count in _tile_batches(len(tiles), max(1, CALL_PX // tile**2)):
        chunk = tiles[start:start + count]
        start += count
        stack = np.stack([x[i * core:i * core + tile, j * core:j * core + tile] for i, j in chunk])
        result = np.asarray(_forward(graphdef, state, jnp.asarray(stack[..., None])))
        for (i, j), r in zip(chunk, result):
            out[i * core:(i + 1) * core, j * core:(j + 1) * core] = r[margin:margin + core, margin:margin + core]
    return out[:h, :w]


#: pixels one network call holds at most (tiles per call: this over the tile's pixels, at least
#: one): four 1024 px tiles, a whole 2240 px level, in ~1.5 GB of peak memory on this CPU
CALL_PX = 4 * 1024**2


def _tile_batches(n: int, batch: int = 4) -> list[int]:
    """Tiles per network call: ``batch`` at a time, the rest in powers of two (9 tiles: 4, 4, 1).

    Three compiled batch shapes at most, and no call runs tiles of zeros: padding the last
    call of a 2048 x 2048 micrograph's finest level (9 tiles) to 4 ran three empty tiles,
    a sixth of the network's work on the whole pyramid. A tile's outputs do not depend on
    the others in its call (``tests/test_segnet.py``).
    """
    sizes = [batch] * (n // batch)
    rest = n % batch
    while rest:
        part = 1 << (rest.bit_length() - 1)
        sizes.append(part)
        rest -= part
    return sizes


@dataclass(frozen=True, eq=False)
class Level:
    """The network's outputs on one pyramid level (block means of ``factor x factor`` pixels).

    Attributes:
      factor: micrograph pixels per level pixel (a power of two; 0.5 for the zoomed level).
      foreground: (h, w) probability that a pixel belongs to a particle.
      distance: (h, w) normalised distance to the particle's edge (1 on its medial axis).
      log2_size: (h, w) log2 of the pixel's particle's equivalent diameter, in level pixels.
    """

    factor: float
    foreground: np.ndarray
    distance: np.ndarray
    log2_size: np.ndarray


#: with zoom on (:func:`predict_levels`), the full-resolution level is zoomed twice when at least ZOOM_MIN_SHARE
#: of its particle pixels (and at least ZOOM_MIN_PX of them) belong, by the network's size output, to particles
#: more than ZOOM_OCTAVES under the size it was trained on (24 px: under ~10 px across). At a share of 0.05 it
#: came on for 20 of the 251 annotated training micrographs, mostly a few large particles on grainy film, and
#: cost F1 there (0.920 -> 0.894: +3 found, +50 false); at 0.5 for 2 (0.927 -> 0.694)
ZOOM_OCTAVES, ZOOM_MIN_SHARE, ZOOM_MIN_PX = 1.25, 0.5, 50


def _wants_zoom(level: Level, target_diameter_px: float) -> bool:
    """Whether the full-resolution level holds particles too small for the network (see :data:`ZOOM_OCTAVES`)."""
    particle = level.foreground > 0.5
    small = int((particle & (level.log2_size < math.log2(target_diameter_px) - ZOOM_OCTAVES)).sum())
    return small >= max(ZOOM_MIN_PX, ZOOM_MIN_SHARE * int(particle.sum()))


def predict_levels(model: SegNet, image: np.ndarray, zoom: bool = False, views: int = 1) -> list[Level]:
    """Run the network on every level of the image's block-mean pyramid.

    Levels halve the resolution until the shorter side would fall under
    ``options.min_level_side_px``. Where the full-resolution level says it holds particles
    under ~10 px across (:func:`_wants_zoom`), a level of twice the resolution (bilinear,
    ``factor`` 0.5) is put first: the network, trained at ~24 px, finds 4-8 px particles
    there that it merges or misses at full resolution.

    Args:
      model: a trained :class:`SegNet`.
      image: (H, W) micrograph, any range and dtype.
      zoom: allow the zoomed level (``SegmentOptions.zoom_small_particles``; off by default).
      views: how many mirror images of each level the network sees, its outputs averaged
        (:func:`_run_views`): 1, 2, 4 or 8.
    """
    options = model.options
    normalised = normalise(image)
    levels = []
    factor = 1
    while True:
        levels.append(_level(model, block_mean(normalised, factor), factor, views))
        if min(normalised.shape) // (2 * factor) < options.min_level_side_px:
            break
        factor *= 2
    if zoom and _wants_zoom(levels[0], options.target_diameter_px):
        h, w = normalised.shape
        levels.insert(0, _level(model, _upsample(normalised[..., None], 2, (2 * h, 2 * w))[..., 0], 0.5, views))
    return levels


#: the dihedral views of :func:`_run_views`, in the order they are taken: (transpose, flip rows, flip columns)
_VIEWS = ((False, False, True), (False, True, False), (False, True, True),
          (True, False, False), (True, False, True), (True, True, False), (True, True, True))


def _run_views(model: SegNet, pixels: np.ndarray, views: int) -> np.ndarray:
    """The network's raw outputs on ``pixels`` averaged over ``views`` of its mirror images (the
    image itself, then mirrored left-right, up-down, turned half a turn, and the four with rows
    and columns swapped), each output mirrored back. A particle's outline and depth do not
    depend on how the micrograph is turned; the network's do a little, and where its distance
    ridge dips under the core threshold in one view (a long thin rod cut in two, a grain taken
    for a core) the average often does not. Development part (``detect`` alone): F1 0.871 with 1
    view, 0.881 with 2, 0.883 with 4, 0.886 with 8, at 1.4x, 2.6x, 4.2x the time."""
    if views not in (1, 2, 4, 8):
        raise ValueError(f"views must be 1, 2, 4 or 8, got {views}")
    total = _run_level(model, pixels)
    for transpose, flip_rows, flip_cols in _VIEWS[: views - 1]:
        x = pixels.T if transpose else pixels
        x = x[::-1 if flip_rows else 1, ::-1 if flip_cols else 1]
        out = _run_level(model, np.ascontiguousarray(x))[::-1 if flip_rows else 1, ::-1 if flip_cols else 1]
        total = total + (out.transpose(1, 0, 2) if transpose else out)
    return total / views


def _level(model: SegNet, pixels: np.ndarray, factor: float, views: int) -> Level:
    raw = _run_views(model, pixels, views)
    return Level(factor=factor, foreground=_sigmoid(raw[..., 0]), distance=_sigmoid(raw[..., 1]), log2_size=raw[..., 2])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)


def _level_instances(level: Level, foreground_threshold: float, core_threshold: float) -> np.ndarray:
    """Instances on one level: a watershed of the distance seeded by its cores.

    Particles are the connected regions of foreground; cores (distance above
    ``core_threshold``) seed a watershed of the negated distance inside them, which splits
    touching particles along the valley between their cores. A foreground region without
    a core becomes a particle of its own.
    """
    from skimage.segmentation import watershed

    fg = level.foreground > foreground_threshold
    markers, n = ndi.label(fg & (level.distance > core_threshold))
    labels = watershed(-level.distance, markers, mask=fg) if n else np.zeros(fg.shape, np.int32)
    orphans, n_orphans = ndi.label(fg & (labels == 0))
    if n_orphans:
        labels = np.where(orphans > 0, orphans + labels.max(), labels)
    return labels.astype(np.int32)


def _upsample(x: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of (h, w, c) block means by an integer factor to ``shape``, pixel centres aligned."""
    if factor == 1:
        return x[: shape[0], : shape[1]]

    def axis_weights(n_out: int, n_in: int):
        pos = np.clip((np.arange(n_out, dtype=np.float32) + 0.5) / factor - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    y0, y1, wy = axis_weights(shape[0], x.shape[0])
    x0, x1, wx = axis_weights(shape[1], x.shape[1])
    rows = x[y0] * (1 - wy)[:, None, None] + x[y1] * wy[:, None, None]
    return rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]


def _to_full(labels: np.ndarray, level: Level, shape: tuple[int, int], foreground_threshold: float,
             finer: Level | None = None) -> np.ndarray:
    """A level's instance labels on the micrograph's grid: nearest-neighbour blocks, the
    edge redrawn where the bilinearly upsampled foreground crosses the threshold.

    With ``finer`` (the level of twice the resolution), the edge is drawn from its
    foreground instead, within the level's own particle grown by one block; the particle's
    interior (its own foreground shrunk by one block) stays particle whatever the finer
    level says of it, as a particle twice the finer level's size can look hollow to it.
    """
    from skimage.segmentation import expand_labels

    f = level.factor
    if f == 1:
        return labels
    if f < 1:  # a zoomed level: each micrograph pixel takes the particle holding at least half its sub-pixels
        k = round(1 / f)
        h, w = shape
        blocks = labels[: h * k, : w * k].reshape(h, k, w, k).transpose(0, 2, 1, 3).reshape(h, w, k * k)
        counts = np.where(blocks > 0, (blocks[..., :, None] == blocks[..., None, :]).sum(-1), 0)
        best = counts.argmax(-1)
        label = np.take_along_axis(blocks, best[..., None], -1)[..., 0]
        return np.where(2 * counts.max(-1) >= k * k, label, 0).astype(np.int32)
    up = np.repeat(np.repeat(labels, f, axis=0), f, axis=1)[: shape[0], : shape[1]]
    fg = _upsample(level.foreground[..., None], f, shape)[..., 0] > foreground_threshold
    if finer is None:
        return np.where(fg, expand_labels(up, distance=f), 0).astype(np.int32)
    fine = _upsample(finer.foreground[..., None], finer.factor, shape)[..., 0] > foreground_threshold
    interior = ndi.binary_erosion(fg, iterations=f)
    return np.where(fine | interior, expand_labels(up, distance=f), 0).astype(np.int32)


@dataclass(frozen=True)
class DetectOptions:
    """How particles are taken from the pyramid's levels.

    Attributes:
      foreground_threshold: foreground probability above which a pixel is particle.
      core_threshold: normalised distance above which a pixel seeds its particle.
      octaves: a level's particles count when their predicted size lies within this many
        octaves of ``target_diameter_px`` (the finest level takes every smaller particle,
        the coarsest every larger one).
      min_area_px: particles smaller than this (micrograph pixels) are dropped.
      min_new_fraction: a particle overlapping particles already taken keeps only its new
        pixels, and is dropped when they are fewer than this fraction of its area.
      consistency_weight: score lost per octave between a candidate's own equivalent
        diameter and the network's mean predicted size over it.
      doubt_weight: score lost per unit of doubt, the share of the candidate's pixels the
        network does not call particle (one less its mean foreground probability).
      min_score: candidates scoring less are not particles.
      zoom_margin: on the zoomed level (factor 0.5, :func:`predict_levels`) candidates must
        score this much more (the margin under which a particle is flagged ``doubtful``).
      finer_edges: draw the edge of a particle found on a coarse level from the foreground
        of the level of twice its resolution (thin arms and sharp corners survive).
    """

    foreground_threshold: float = 0.5
    core_threshold: float = 0.5
    octaves: float = 1.0
    min_area_px: float = 6.0
    min_new_fraction: float = 0.7
    consistency_weight: float = 0.15
    doubt_weight: float = 1.0
    min_score: float = 0.55
    zoom_margin: float = 0.1
    finer_edges: bool = True


def detect(levels: list[Level], shape: tuple[int, int], target_diameter_px: float,
           options: DetectOptions = DetectOptions()) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Particles of the micrograph from the network's levels.

    Each level gives candidate particles (:func:`_level_instances`); a candidate counts at
    its level when the network's mean log2 size over it lies within ``options.octaves`` of
    the target (a particle too large or too small for that level is left to another). The
    candidates of all levels are then painted in order of a score: the largest normalised
    distance inside the candidate (near 1 on a real particle's axis, barely above the core
    threshold on texture and noise), less ``consistency_weight`` times the octaves between
    the candidate's own size and the size the network predicts over it (a fragment of a
    particle is smaller than the particle its pixels belong to, two particles taken as one
    larger), and less ``doubt_weight`` times the share of its pixels the network doubts
    (one less their mean foreground probability: a ridge of the distance output inside
    texture, a halo or a film the network half calls particle); candidates under
    ``min_score`` are dropped. Where levels disagree, the most self-consistent candidate wins.

    Returns:
      (H, W) int32 labels 1..N, and per particle (index i for label i + 1) its ``level``
      and ``score``.
    """
    centre = math.log2(target_diameter_px)
    last = len(levels) - 1
    candidates = []  # (score, level index, id)
    level_labels = []
    for k, level in enumerate(levels):
        labels = _level_instances(level, options.foreground_threshold, options.core_threshold)
        level_labels.append(labels)
        n = int(labels.max())
        if n == 0:
            continue
        flat = labels.ravel()
        area = np.bincount(flat, minlength=n + 1).astype(np.float64)
        size = np.bincount(flat, weights=level.log2_size.ravel(), minlength=n + 1) / np.maximum(area, 1)
        low = -np.inf if k == 0 else centre - options.octaves
        high = np.inf if k == last else centre + options.octaves
        # the distance output peaks near 1 on a particle's axis: a candidate whose core
        # barely passes the threshold is texture or noise, not a particle; the size
        # output says how large the particle a pixel belongs to is: a fragment of a particle
        # is smaller than that, two particles taken as one larger; and a particle's pixels
        # are foreground beyond doubt, where texture's are not
        deepest = np.zeros(n + 1, np.float32)
        deepest[1:] = ndi.maximum(level.distance, labels, np.arange(1, n + 1))
        measured = np.log2(np.maximum(2 * np.sqrt(area / np.pi), 1.0))
        sure = np.bincount(flat, weights=level.foreground.ravel(), minlength=n + 1) / np.maximum(area, 1)
        score = (deepest - options.consistency_weight * np.abs(measured - size)
                 - options.doubt_weight * (1.0 - sure))
        # a zoomed view makes the support film's grain particle-sized: there only candidates the
        # detector does not doubt (scoring zoom_margin over the threshold) count
        threshold = options.min_score + (options.zoom_margin if level.factor < 1 else 0.0)
        ok = (size >= low) & (size <= high) & (area * level.factor**2 >= options.min_area_px) & (score >= threshold)
        ok[0] = False
        candidates.extend((float(score[i]), k, int(i)) for i in np.flatnonzero(ok))
    final = np.zeros(shape, np.int32)
    kept_level, kept_score = [], []
    full_cache: dict[int, tuple[np.ndarray, list]] = {}
    for score, k, i in sorted(candidates, key=lambda c: -c[0]):
        if k not in full_cache:
            full = _to_full(level_labels[k], levels[k], shape, options.foreground_threshold,
                            levels[k - 1] if options.finer_edges and k > 0 else None)
            full_cache[k] = (full, ndi.find_objects(full))
        full, boxes = full_cache[k]
        if i > len(boxes) or boxes[i - 1] is None:
            continue
        box = boxes[i - 1]
        own = full[box] == i
        new = own & (final[box] == 0)
        n_new = int(new.sum())
        if n_new < options.min_area_px or n_new < options.min_new_fraction * own.sum():
            continue
        final[box][new] = len(kept_level) + 1
        kept_level.append(k)
        kept_score.append(score)
    return final, {"level": np.asarray(kept_level, np.int32), "score": np.asarray(kept_score, np.float32)}


# ----------------------------------------------------------------------------- save / load

#: what a saved model holds: the weights and batch normalisation's running statistics
_SAVED = (nnx.Param, nnx.BatchStat)


def default_segnet_dir() -> Path:
    """The model shipped inside the package."""
    return Path(str(resources.files("nanoshape") / "data" / "segnet"))


def save_segnet(model: SegNet, directory: str | Path, *, metadata: dict[str, Any] | None = None) -> None:
    """Save the weights (orbax) and the architecture (``segnet.json``) to ``directory``."""
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    state = nnx.to_pure_dict(nnx.state(model, _SAVED))
    target = directory / "weights"
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(target, state, force=True)
    options = dataclasses.asdict(model.options)
    (directory / "segnet.json").write_text(json.dumps({"options": options, **(metadata or {})}, indent=1))


@functools.cache
def _load_cached(directory: str) -> SegNet:
    import orbax.checkpoint as ocp

    path = Path(directory)
    spec = json.loads((path / "segnet.json").read_text())
    fields = {f.name for f in dataclasses.fields(SegNetOptions)}
    options = SegNetOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["options"].items() if k in fields})
    # built abstractly (shapes only; every variable comes from the file): a real initialisation
    # compiled ~70 small random-number kernels one by one, 11 s of each process' first micrograph
    model = nnx.eval_shape(lambda: SegNet(options, rngs=nnx.Rngs(0)))
    target = nnx.to_pure_dict(nnx.state(model, _SAVED))
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(path / "weights", target)
    restored = jax.tree.map(jnp.asarray, restored)  # on the device once, not copied at every call
    state = nnx.state(model, _SAVED)
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(model, state)
    model.eval()  # batch normalisation from its running statistics
    return model


def segnet_dir(directory: str | Path | None = None) -> Path:
    """The folder a model is read from: ``directory`` itself, its ``model/`` when it is a
    training run (``nanoshape train-segmentation``), or the shipped model when empty."""
    path = Path(directory) if directory else default_segnet_dir()
    return path / "model" if (path / "model" / "segnet.json").exists() else path


def load_segnet(directory: str | Path | None = None) -> SegNet:
    """Load a saved segmentation model (orbax; nothing executable is read), by default the shipped one."""
    path = segnet_dir(directory)
    if not (path / "segnet.json").exists():
        raise FileNotFoundError(f"no segmentation model in {path} (expected segnet.json and weights/)")
    return _load_cached(str(path.absolute()))
