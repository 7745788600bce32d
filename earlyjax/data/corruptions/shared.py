"""Image helpers and the corruptions both sets use (x: float32 [N, H, W, C] in [0, 1])."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

Array = np.ndarray
Rng = np.random.Generator
_Table = dict[str, tuple[Callable[[Array, Any, Rng], Array], tuple]]

# ----------------------------------------------------------------------------------------------
# Shared helpers (x: float32 [N, H, W, C] in [0, 1])
# ----------------------------------------------------------------------------------------------


def _gauss(x: Array, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> Array:
    """Gaussian blur over the two spatial axes of [N, H, W, C] (or [N, H, W])."""
    s = (0, sigma, sigma, 0)[: x.ndim]
    return ndimage.gaussian_filter(x, s, mode=mode, truncate=truncate)


def _linear_zoom_matrix(n_in: int, z: float) -> Array:
    """[round(n_in * z), n_in] linear-interpolation matrix of scipy.ndimage.zoom(order=1)."""
    n_out = int(round(n_in * z))
    pos = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    lo = np.minimum(np.floor(pos).astype(int), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    f = pos - lo
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1 - f)
    np.add.at(m, (np.arange(n_out), hi), f)
    return m


def _clipped_zoom(x: Array, z: float) -> Array:
    """Zooms the centre of every image by `z` (bilinear) and crops back to the input size.

    x: [N, H, H] or [N, H, H, C]; the zoom is separable, done as two matrix products.
    """
    h = x.shape[1]
    ch = int(np.ceil(h / z))
    top = (h - ch) // 2
    crop = x[:, top : top + ch, top : top + ch]
    m = _linear_zoom_matrix(ch, z)
    t = (m.shape[0] - h) // 2
    m = m[t : t + h].astype(np.float32)
    if x.ndim == 3:
        return m @ crop @ m.T
    return np.moveaxis(m @ np.moveaxis(crop, 3, 1) @ m.T, 1, 3)


def _reflect_coords(p: Array, n: int, mode: str) -> Array:
    """Maps sample coordinates into [0, n - 1] as scipy.ndimage's `mode` extends a signal."""
    if mode == "mirror":  # d c b | a b c d | c b a  (OpenCV's BORDER_REFLECT_101)
        period = 2 * (n - 1) if n > 1 else 1
        p = np.abs(np.mod(p, period))
        return np.where(p > n - 1, period - p, p)
    if mode == "reflect":  # d c b a | a b c d | d c b a
        period = 2 * n
        p = np.mod(p + 0.5, period) - 0.5
        p = np.where(p > n - 0.5, period - 1 - p, p)
        return np.clip(p, 0, n - 1)
    raise ValueError(mode)


def _bilinear(x: Array, rows: Array, cols: Array, mode: str) -> Array:
    """Samples image n of x [N, H, W, C] at (rows[n], cols[n]) (each [N, H', W']), bilinearly.

    mode: 'constant' (zero outside, as scipy.ndimage order=1 mode='constant'), 'mirror' or
    'reflect' (scipy.ndimage's boundary modes).
    """
    n, h, w = x.shape[:3]
    if mode != "constant":
        rows, cols = _reflect_coords(rows, h, mode), _reflect_coords(cols, w, mode)
    r0, c0 = np.floor(rows), np.floor(cols)
    fr, fc = (rows - r0)[..., None], (cols - c0)[..., None]
    r0, c0 = r0.astype(np.int64), c0.astype(np.int64)
    nidx = np.arange(n).reshape((n,) + (1,) * (rows.ndim - 1))
    out = np.zeros(rows.shape + x.shape[3:], np.float32)
    for dr, wr in ((0, 1 - fr), (1, fr)):
        for dc, wc in ((0, 1 - fc), (1, fc)):
            rr, cc = r0 + dr, c0 + dc
            valid = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            v = x[nidx, np.clip(rr, 0, h - 1), np.clip(cc, 0, w - 1)]
            out += (wr * wc * valid[..., None]) * v
    return out


def _plasma(rng: Rng, n: int, mapsize: int, decay: float) -> Array:
    """Diamond-square plasma fractals, float32 [n, mapsize, mapsize], each scaled to [0, 1].

    Noise at a level is w * U(-w, w) with w = 100 / decay**level, on a wrapped grid.
    """

    def noise(shape: tuple[int, ...], w: float) -> Array:  # w * U(-w, w)
        return (rng.random(shape, dtype=np.float32) * 2 - 1) * np.float32(w * w)

    m = np.zeros((n, mapsize, mapsize), np.float32)
    step, w = mapsize, 100.0
    while step >= 2:
        h = step // 2
        corners = m[:, ::step, ::step]
        s = corners + np.roll(corners, -1, axis=1)
        s = s + np.roll(s, -1, axis=2)
        m[:, h::step, h::step] = s / 4 + noise(s.shape, w)
        centres = m[:, h::step, h::step]
        top = corners + np.roll(corners, -1, axis=2) + centres + np.roll(centres, 1, axis=1)
        m[:, ::step, h::step] = top / 4 + noise(top.shape, w)
        left = corners + np.roll(corners, -1, axis=1) + centres + np.roll(centres, 1, axis=2)
        m[:, h::step, ::step] = left / 4 + noise(left.shape, w)
        step //= 2
        w /= decay
    m -= m.min(axis=(1, 2), keepdims=True)
    m /= np.maximum(m.max(axis=(1, 2), keepdims=True), 1e-12)
    return m


def _plasma_crops(rng: Rng, n: int, mapsize: int, decay: float, size: int) -> Array:
    """Top-left `size` x `size` crops of plasma fractals, [n, size, size], in chunks."""
    chunk = max(1, (1 << 22) // (mapsize * mapsize))
    parts = [
        _plasma(rng, min(chunk, n - i), mapsize, decay)[:, :size, :size] for i in range(0, n, chunk)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, size, size), np.float32)


def _motion_blur(x: Array, radius: float, sigma: float, angles_deg: Array) -> Array:
    """ImageMagick-style motion blur of [N, H, W, C] with one angle (degrees) per image."""
    n, h, w = x.shape[:3]
    width = int(2 * np.ceil(radius) + 1)
    i = np.arange(width)
    k = np.exp(-(i**2) / (2.0 * sigma**2))
    k /= k.sum()
    th = np.deg2rad(np.asarray(angles_deg, np.float64))
    rows, cols = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    nidx = np.arange(n)[:, None, None]
    out = np.zeros_like(x)
    for j in range(width):
        if k[j] < 1e-7:
            break
        dx = np.ceil(j * np.cos(th) - 0.5).astype(int)[:, None, None]
        dy = np.ceil(j * np.sin(th) - 0.5).astype(int)[:, None, None]
        out += k[j] * x[nidx, np.clip(rows + dy, 0, h - 1), np.clip(cols + dx, 0, w - 1)]
    return out


def _affine_warp(x: Array, maps: Array) -> Array:
    """Bilinear warp (zero outside) of image n with the 2x3 (x, y) inverse map maps[n].

    maps[n] takes an output point (col, row) to the input point sampled, as
    skimage.transform.warp(inverse_map=...) does.
    """
    h, w = x.shape[1:3]
    rows, cols = np.meshgrid(
        np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij"
    )
    m = maps[:, :, :, None, None]
    src_c = m[:, 0, 0] * cols + m[:, 0, 1] * rows + m[:, 0, 2]
    src_r = m[:, 1, 0] * cols + m[:, 1, 1] * rows + m[:, 1, 2]
    return _bilinear(x, src_r, src_c, "constant")


def _centred(a: Array, c: float) -> Array:
    """Turns a 2x2 (x, y) matrix into a 2x3 map that keeps the point (c, c) fixed."""
    return np.concatenate([a, (np.array([c, c]) - a @ np.array([c, c]))[:, None]], axis=1)


def _to_uint8(x: Array) -> Array:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _rgb_to_hsv(x: Array) -> Array:
    """RGB in [0, 1] (last axis) to HSV in [0, 1]."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    v = x.max(-1)
    c = v - x.min(-1)
    safe = np.where(c > 0, c, 1)
    h = np.where(v == r, (g - b) / safe, np.where(v == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    h = np.where(c > 0, (h / 6) % 1.0, 0)
    s = np.where(v > 0, c / np.where(v > 0, v, 1), 0)
    return np.stack([h, s, v], -1)


def _hsv_to_rgb(x: Array) -> Array:
    h, s, v = x[..., 0], x[..., 1], x[..., 2]
    i = np.floor(h * 6)
    f = h * 6 - i
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    i = i.astype(int) % 6
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], -1)


def _gray(x: Array) -> Array:
    """Luma (ITU-R 601, as OpenCV's RGB2GRAY) of [N, H, W, 3], keeping a channel axis."""
    return (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]


# ----------------------------------------------------------------------------------------------
# Corruptions shared by both sets
# ----------------------------------------------------------------------------------------------


def _gaussian_noise(x: Array, c: float, rng: Rng) -> Array:
    return x + rng.normal(0.0, c, x.shape).astype(np.float32)


def _shot_noise(x: Array, c: float, rng: Rng) -> Array:
    return rng.poisson(x * c).astype(np.float32) / c


def _impulse_noise(x: Array, amount: float, rng: Rng) -> Array:
    hit = rng.random(x.shape) < amount
    salt = rng.random(x.shape) < 0.5
    return np.where(hit, salt.astype(np.float32), x)


def _speckle_noise(x: Array, c: float, rng: Rng) -> Array:
    return x + x * rng.normal(0.0, c, x.shape).astype(np.float32)


def _glass_blur(x: Array, p: tuple, rng: Rng, coin: bool) -> Array:
    """Blur, locally shuffle pixels (sequential swaps, as the original), blur again."""
    sigma, d, iters = p
    n, h, w = x.shape[:3]
    y = np.floor(_gauss(x, sigma) * 255).astype(np.uint8)  # the scripts truncate here
    nidx = np.arange(n)
    for _ in range(iters):
        for r in range(h - d, d, -1):
            for c in range(w - d, d, -1):
                dx, dy = rng.integers(-d, d, size=(2, n))
                sel = nidx if not coin else nidx[rng.random(n) < 0.5]
                if coin:
                    dx, dy = dx[sel], dy[sel]
                a = y[sel, r, c].copy()
                y[sel, r, c] = y[sel, r + dy, c + dx]
                y[sel, r + dy, c + dx] = a
    return _gauss(y.astype(np.float32) / 255, sigma)


def _fog(x: Array, p: tuple, rng: Rng, mapsize: int) -> Array:
    strength, decay = p
    n, h = x.shape[:2]
    plasma = _plasma_crops(rng, n, mapsize, decay, h)[..., None]
    vmax = x.max(axis=(1, 2, 3), keepdims=True)
    return (x + strength * plasma) * vmax / (vmax + strength)


def _brightness(x: Array, c: float, rng: Rng) -> Array:
    del rng
    if x.shape[-1] == 1:  # gray -> HSV value is x itself; back to gray adds c
        return x + c
    hsv = _rgb_to_hsv(x)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return _hsv_to_rgb(hsv)


def _spatter_mud(x: Array, liquid: Array, threshold: float, sigma2: float, color: Array) -> Array:
    m = _gauss((liquid > threshold).astype(np.float32), sigma2)
    m[m < 0.8] = 0
    m = m[..., None]
    return x * (1 - m) + color * m
