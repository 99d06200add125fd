"""Plain NumPy reference of nanoshape's silhouette, the baseline of bench_render.py.

The same coverage model (the box-filtered area of the local half-plane, with the gradient of
f = S R(theta) - r from the analytic R'/R) written the direct way: arctan2, cos, sin and pow
per pixel, vectorised over the batch with NumPy broadcasting.
"""

import numpy as np


def silhouette_numpy(p, d, l_ratio, phi, center_xy, scale, size):
    """Coverage (B, size, size) of a batch of particles; every argument is a (B,) or (B, 2) array."""
    p, d, l_ratio, phi, scale = (np.asarray(a, np.float32)[:, None, None] for a in (p, d, l_ratio, phi, scale))
    grid = np.arange(size, dtype=np.float32)
    xs = grid[None, None, :] - np.asarray(center_xy, np.float32)[:, 0, None, None]
    ys = grid[None, :, None] - np.asarray(center_xy, np.float32)[:, 1, None, None]
    r = np.sqrt(xs * xs + ys * ys) + 1e-6
    theta = np.arctan2(ys, xs)
    arg = 0.5 * d * theta + phi
    c, s = np.cos(arg), np.sin(arg)
    a_term = np.abs(l_ratio * c) ** p
    b_term = np.abs(s) ** p
    unit_radius = (a_term + b_term) ** (-1 / p)
    f = scale * unit_radius - r
    cs = c * s
    cs = np.where(np.abs(cs) < 1e-7, np.where(cs < 0, -1e-7, 1e-7), cs)
    k = 0.5 * d * (a_term * s * s - b_term * c * c) / ((a_term + b_term) * cs)
    k = np.clip(k, -50, 50)
    ux, uy = xs / r, ys / r
    gx, gy = np.abs(-k * uy - ux), np.abs(k * ux - uy)
    a = np.maximum(np.maximum(gx, gy), 1e-6)
    b = np.maximum(np.minimum(gx, gy), 1e-6)
    t = np.clip(f + 0.5 * (a + b), 0, a + b)
    low = np.minimum(t, b) ** 2 / (2 * a * b)
    middle = (t - 0.5 * b) / a
    high = 1 - (a + b - np.maximum(t, a)) ** 2 / (2 * a * b)
    return np.where(t < b, low, np.where(t <= a, middle, high))
