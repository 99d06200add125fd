"""Steps 2-5 of the classical segmentation: contrast polarity, typical particle radius,
background surface and the hysteresis thresholds (Otsu, or a noise-peak rule when sparse)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

from nanoshape.segment.filters import _block_all, _block_mean, _by_rows, _gauss


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D sample (between-class variance maximised on a histogram): the
    upper edge of the chosen bin. :func:`skimage.filters.threshold_otsu` chooses the same bin but
    returns its centre, half a bin lower; the classical method's thresholds were set with this one."""
    hist, edges = np.histogram(values, bins)
    centres = 0.5 * (edges[1:] + edges[:-1])
    weight0 = np.cumsum(hist).astype(np.float64)
    weight1 = weight0[-1] - weight0
    mean_sum = np.cumsum(hist * centres)
    mean0 = mean_sum / np.maximum(weight0, 1)
    mean1 = (mean_sum[-1] - mean_sum) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def _largest_component_fraction(mask: np.ndarray) -> float:
    labels, n = ndi.label(mask)
    if n == 0:
        return 0.0
    area = np.bincount(labels.ravel())[1:]
    return float(area.max() / area.sum())


def detect_polarity(normalised: np.ndarray, usable: np.ndarray) -> tuple[str, float]:
    """Bright field (dark particles) unless the image is unambiguously dark field.

    The image (block-averaged to <= 512 px, smoothed by 1 px) is split at Otsu's
    threshold and three antisymmetric cues are computed, each positive when the dark
    phase looks like the particles:

    - percolation: the background is the phase that percolates (share of the phase in its
      largest connected component, bright minus dark);
    - variability: particles vary in thickness and orientation, the support film does not
      (log ratio of the dark and bright phases' median absolute deviations);
    - tail: particles form the heavier tail beyond the histogram's main peak (log ratio of
      the dark and bright tails beyond three peak widths).

    Each cue alone fails on some real images (networks of wires percolate, close-packed
    crystals hold the histogram's peak, Otsu splits the noise of sparse images, shot noise
    makes a bright film vary more than uniform crystals), and bright field is by far the
    common case in TEM, so dark field is returned only when the dark phase clearly does
    not percolate (percolation < -0.2) and the other two cues together agree
    (variability + tail < -0.5). On the 41 bright-field EMPS micrographs no image meets
    this; on their negatives, and on negated rendered scenes, the clear cases do.

    Args:
      normalised: (H, W) intensities in [0, 1].
      usable: (H, W) bool, pixels free of overlays.

    Returns:
      ('bright_field' | 'dark_field', score), score being the weakest cue for dark field
      (negative: dark field).
    """
    factor = max(1, int(np.ceil(max(normalised.shape) / 512)))
    small = _gauss(_block_mean(normalised, factor), 1.0)
    ok = _block_all(usable, factor)
    if ok.sum() < 64:
        return "bright_field", 0.0
    values = small[ok]
    threshold = _otsu(values)
    bright = (small > threshold) & ok
    dark = ~bright & ok
    percolation = _largest_component_fraction(bright) - _largest_component_fraction(dark)
    upper, lower = values[values > threshold], values[values <= threshold]
    spread_upper = np.median(np.abs(upper - np.median(upper))) if upper.size else 0.0
    spread_lower = np.median(np.abs(lower - np.median(lower))) if lower.size else 0.0
    variability = float(np.log((spread_lower + 1e-6) / (spread_upper + 1e-6)))
    mode, width = _histogram_peak(values)
    tail_dark = np.mean(values < mode - 3 * width)
    tail_bright = np.mean(values > mode + 3 * width)
    tail = float(np.log((tail_dark + 1e-3) / (tail_bright + 1e-3)))
    dark_field = percolation < -0.2 and variability + tail < -0.5
    score = max(percolation / 0.2, (variability + tail) / 0.5)
    return ("dark_field" if dark_field else "bright_field"), float(score)


def _peak_widths(values: np.ndarray, bins: int = 256) -> tuple[float, float, float]:
    """Mode of a sample and the widths (Gaussian sigma from the half maximum) of its peak
    below and above the mode."""
    hist, edges = np.histogram(values, bins)
    smooth = ndi.uniform_filter1d(hist.astype(np.float64), 5)
    centres = 0.5 * (edges[1:] + edges[:-1])
    k = int(np.argmax(smooth))
    mode = float(centres[k])
    below = np.flatnonzero(smooth[: k + 1] < 0.5 * smooth[k])
    above = np.flatnonzero(smooth[k:] < 0.5 * smooth[k])
    width_low = ((mode - centres[below[-1]]) if below.size else (mode - centres[0])) / 1.1774
    width_high = ((centres[k + above[0]] - mode) if above.size else (centres[-1] - mode)) / 1.1774
    return mode, float(width_low), float(width_high)


def _histogram_peak(values: np.ndarray, bins: int = 256) -> tuple[float, float]:
    """Mode of a sample and the width (Gaussian sigma from the half maximum) of its peak."""
    mode, width_low, width_high = _peak_widths(values, bins)
    return mode, max(min(width_low, width_high), 1e-6)


def estimate_radius(particles_bright: np.ndarray, usable: np.ndarray, *, percentile: float = 99.5,
                    threads: int = 1) -> float:
    """Typical particle radius (px) from the scale-normalised Laplacian of Gaussian.

    For each scale sigma on a pyramid of 2 x 2 block means (3 scales per octave) the response
    ``-sigma^2 * LoG_sigma * image`` is computed and its ``percentile`` taken over usable
    pixels; a bright disc of radius r gives its strongest response at sigma = r / sqrt(2)
    (Lindeberg, Int. J. Comput. Vision 30 (1998) 79). Returns ``sqrt(2) * argmax sigma``.
    Images over ~1 Mpx start one octave down (radii under ~3 px are not resolved there).
    ``threads`` filter bands of rows side by side (same result).
    """
    x = particles_bright.astype(np.float32)
    ok = usable
    level, blur2 = 1, 0.0
    if x.size > 1_200_000:
        x = _block_mean(x, 2)
        ok = _block_all(ok, 2)
        level, blur2 = 2, 0.25  # a 2 x 2 block mean blurs by half its pixel (rms) per axis
    best_value, best_sigma = -np.inf, 1.0
    limit = min(particles_bright.shape) / 8
    while min(x.shape) >= 16:
        for step in range(3):
            sigma = level * 2 ** (step / 3)
            if sigma > limit:
                break
            remaining = np.sqrt(max(sigma * sigma - blur2, 0.25)) / level
            response = -((sigma / level) ** 2) * _by_rows(
                lambda part: ndi.gaussian_laplace(part, remaining, mode="nearest"), x, int(4.0 * remaining + 0.5) + 1,
                threads)
            sample = response[::2, ::2][ok[::2, ::2]] if response.size > 250_000 else response[ok]
            value = np.percentile(sample, percentile) if sample.size else -np.inf
            if value > best_value:
                best_value, best_sigma = value, sigma
        x = _block_mean(x, 2)
        ok = _block_all(ok, 2)
        blur2 += 0.25 * level * level
        level *= 2
    return float(best_sigma * np.sqrt(2))


def _inscribed_radius(foreground: np.ndarray) -> float:
    """Typical inscribed radius: area-weighted median of the distance-transform maxima."""
    dist = ndi.distance_transform_edt(foreground)
    peaks = (dist == ndi.maximum_filter(dist, 3)) & (dist >= 1)
    values = dist[peaks]
    if values.size == 0:
        return 1.0
    order = np.argsort(values)
    weights = np.cumsum(values[order] ** 2)
    return float(values[order][np.searchsorted(weights, weights[-1] / 2)])


# ----------------------------------------------------------------------------- background, threshold


def _background_surface(x: np.ndarray, usable: np.ndarray, tile: float, percentile: float = 5.0) -> np.ndarray:
    """Quadratic surface through the low percentile of each tile (iteratively trimmed fit).

    In particles-bright images the low percentile of a tile is background whether the tile
    is sparse (the noise floor) or crowded (the gaps), so the fit follows the beam's slow
    fall-off without a threshold. Tiles that disagree (> 3 MAD) are dropped. Zero mean.
    """
    height, width = x.shape
    ny, nx = max(2, int(round(height / tile))), max(2, int(round(width / tile)))
    ys = np.linspace(0, height, ny + 1).astype(int)
    xs = np.linspace(0, width, nx + 1).astype(int)
    points = []
    for a in range(ny):
        for b in range(nx):
            ok = usable[ys[a] : ys[a + 1], xs[b] : xs[b + 1]]
            if ok.mean() < 0.5:
                continue
            value = np.percentile(x[ys[a] : ys[a + 1], xs[b] : xs[b + 1]][ok], percentile)
            points.append(((ys[a] + ys[a + 1]) / 2 / height - 0.5, (xs[b] + xs[b + 1]) / 2 / width - 0.5, value))
    if len(points) < 9:
        return np.zeros(x.shape, dtype=np.float32)
    yn, xn, values = np.asarray(points).T
    design = np.stack([np.ones_like(yn), xn, yn, xn * xn, xn * yn, yn * yn], axis=-1)
    keep = np.ones(values.size, dtype=bool)
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(design[keep], values[keep], rcond=None)
        residual = values - design @ coef
        spread = 1.4826 * np.median(np.abs(residual[keep])) + 1e-6
        keep = np.abs(residual) < 3 * spread
        if keep.sum() < 6:
            return np.zeros(x.shape, dtype=np.float32)
    yy = (np.arange(height, dtype=np.float32) / height - 0.5)[:, None]
    xx = (np.arange(width, dtype=np.float32) / width - 0.5)[None, :]
    surface = coef[0] + coef[1] * xx + coef[2] * yy + coef[3] * xx * xx + coef[4] * xx * yy + coef[5] * yy * yy
    return (surface - np.median(surface)).astype(np.float32)


class Thresholds(NamedTuple):
    """The thresholds :func:`_thresholds` finds in a particles-bright sample."""

    low: float  # delineation
    high: float  # detection
    otsu: float
    background: float  # the background level (the peak's mode when sparse)
    peak_width: float
    sparse: bool  # Otsu split the background peak: the noise-peak rule was used


def _thresholds(
    values: np.ndarray, *, fraction: float, sparse_sigmas: float, sparse_low: float, sparse: bool | None = None
) -> Thresholds:
    """Delineation (``low``) and detection (``high``) thresholds of a particles-bright sample.

    Otsu's threshold separates the classes when both are substantial. When one narrow
    peak (the background) holds > 85% of the pixels and Otsu's threshold falls inside it
    (within one peak width of the mode), Otsu has split the background's noise; detection
    then requires ``sparse_sigmas`` peak widths above the mode (the peak width is taken
    from its half maximum on the side away from the particles).
    """
    otsu = _otsu(values)
    mode, width_low, width_high = _peak_widths(values, 256)
    width = max(min(width_low, width_high), 1e-6)
    in_peak = float(np.mean(np.abs(values - mode) <= 3 * width))
    if sparse is None:
        sparse = abs(otsu - mode) < width and in_peak > 0.85
    background = float(np.median(values[values <= otsu]))
    if sparse:
        high = mode + sparse_sigmas * width_low
        low = mode + min(sparse_low, sparse_sigmas) * width_low
    else:
        high = otsu
        low = background + fraction * (otsu - background)
    return Thresholds(low=float(low), high=float(high), otsu=otsu, background=background if not sparse else mode,
                      peak_width=float(width), sparse=bool(sparse))

