"""MNIST-C-style corruptions (x: [N, 28, 28, 1]) and their severities (`_MNIST`).

MNIST-C severity ladder
-----------------------
MNIST-C publishes one severity per corruption. We need five, so level 3 is MNIST-C's
published parameter (the default severity of its script, which produced the released set)
and the other levels are the neighbouring entries of the script's own 5-entry tables where
they exist, else interpolated / extrapolated (marked *). Units: x in [0, 1].

================ ======================================= ==========================================
corruption       parameter                               levels 1..5 (level 3 = MNIST-C)
================ ======================================= ==========================================
shot_noise       Poisson photons per unit intensity c    12, 5, 3, 2*, 1.5*
impulse_noise    salt & pepper fraction of pixels        .06, .09, .17, .27, .37*
glass_blur       (sigma, max shift px, iterations)       (.4,1,1)*, (.6,1,1)*, (.7,1,2), (.9,2,1),
                                                         (1,2,3)
motion_blur      (radius, sigma) px, angle U(-45, 45)    (10,1)*, (10,2)*, (10,3), (15,5), (15,8)
shear            shear angle (rad), random sign          .1*, .2, .4, .6, .8
scale            inverse zoom 1/s (digit shrinks to s)   1/.9, 1/.8, 1/.7, 1/.6, 1/.5
rotate           angle (rad), random sign                .1*, .2, .4, .6, .8
brightness       added to HSV value (= x for gray)       .3, .4, .5, .6*, .7*
translate        shift px in x and y, random signs       1, 2, 3, 4, 5
stripe           width px of the inverted side bands     3*, 5*, 7, 9*, 11*
fog              (strength, plasma decay)                (2,2), (2.5,1.7), (3,1.4), (3.5,1.3)*,
                                                         (4,1.2)*
spatter          (loc, scale, sigma, threshold, sigma2)  (.65,.3,1,.68,1.5)*, (.65,.3,1,.67,1.5)*,
                 of the mud mask                         (.65,.3,1,.65,1.5), (.67,.4,1,.65,1.5),
                                                         (.70,.45,1,.65,1.5)*
dotted_line      (peak intensity, number of lines)       (.5,1)*, (.75,1)*, (1,1), (1,2)*, (1,3)*
zigzag           (peak intensity, number of zigzags)     (.5,1)*, (.75,1)*, (1,1), (1,2)*, (1,3)*
canny_edges      (weight of the image kept, Canny sigma) (2/3,1)*, (1/3,1)*, (0,1), (0,1.5)*,
                                                         (0,2)*
================ ======================================= ==========================================

MNIST-C's own spatter levels 1-3 are not milder than its level 4 in covered area, so levels
1-2 here raise the mask threshold instead (covered area about 5%, 7%, 13%, 20%, 31%).
Shear uses the matrix [[1, -sin a], [0, cos a]] of the scikit-image that generated MNIST-C
(newer scikit-image defines shear with tan a). Affine corruptions keep the centre fixed,
interpolate bilinearly and fill with black, as skimage.transform.warp.

For canny_edges, levels 1-2 overlay the edge map on the dimmed digit (max of both), level 3
is the pure edge map of MNIST-C, levels 4-5 coarser edge maps of a more smoothed digit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from earlyjax.data.corruptions.shared import (
    Array,
    Rng,
    _affine_warp,
    _brightness,
    _centred,
    _fog,
    _gauss,
    _glass_blur,
    _impulse_noise,
    _motion_blur,
    _shot_noise,
    _spatter_mud,
    _Table,
)


def _mnist_glass_blur(x: Array, p: tuple, rng: Rng) -> Array:
    return _glass_blur(x, p, rng, coin=True)


def _mnist_motion_blur(x: Array, p: tuple, rng: Rng) -> Array:
    return _motion_blur(x, p[0], p[1], rng.uniform(-45, 45, x.shape[0]))


def _signed_affine(x: Array, build: Callable[[float], Array], c: float, rng: Rng) -> Array:
    sign = rng.choice([-1, 1], x.shape[0])
    centre = (x.shape[2] - 1) / 2
    maps = np.stack([_centred(build(-c), centre), _centred(build(c), centre)])
    return _affine_warp(x, maps[(sign > 0).astype(int)])


def _shear(x: Array, c: float, rng: Rng) -> Array:
    return _signed_affine(x, lambda s: np.array([[1.0, -np.sin(s)], [0.0, np.cos(s)]]), c, rng)


def _rotate(x: Array, c: float, rng: Rng) -> Array:
    return _signed_affine(
        x, lambda r: np.array([[np.cos(r), -np.sin(r)], [np.sin(r), np.cos(r)]]), c, rng
    )


def _scale(x: Array, c: float, rng: Rng) -> Array:
    del rng
    centre = (x.shape[2] - 1) / 2
    return _affine_warp(x, np.repeat(_centred(np.eye(2) * c, centre)[None], x.shape[0], 0))


def _translate(x: Array, c: int, rng: Rng) -> Array:
    signs = rng.choice([-1, 1], (x.shape[0], 2))
    maps = np.zeros((x.shape[0], 2, 3))
    maps[:, 0, 0] = maps[:, 1, 1] = 1
    maps[:, :, 2] = signs * c
    return _affine_warp(x, maps)


def _stripe(x: Array, width: int, rng: Rng) -> Array:
    del rng
    y = x.copy()
    w = x.shape[2]
    y[:, :, :width] = 1 - y[:, :, :width]
    y[:, :, w - width :] = 1 - y[:, :, w - width :]
    return y


def _mnist_fog(x: Array, p: tuple, rng: Rng) -> Array:
    return _fog(x, p, rng, mapsize=256)


def _mnist_spatter(x: Array, p: tuple, rng: Rng) -> Array:
    loc, scale, sigma, threshold, sigma2 = p
    liquid = _gauss(rng.normal(loc, scale, x.shape[:3]).astype(np.float32), sigma)
    return _spatter_mud(x, liquid, threshold, sigma2, np.float32(63 / 255))


def _line_profiles(c0: Array, r0: Array, c1: Array, r1: Array, h: int, w: int) -> Array:
    """Anti-aliased segments from (c0, r0) to (c1, r1), float32 [K, h, w] in [0, 1].

    Intensity 1 + log(1 - d / 2.3) at vertical distance d < 2.3 from the line, only over
    the columns floor(c0) .. ceil(c1) - 1 (MNIST-C's line profile); vertical segments are
    empty.
    """
    c0, r0, c1, r1 = (np.asarray(v, np.float64)[:, None, None] for v in (c0, r0, c1, r1))
    cc = np.arange(w, dtype=np.float64)[None, None, :]
    rr = np.arange(h, dtype=np.float64)[None, :, None]
    dc = np.where(c1 == c0, 1.0, c1 - c0)
    f = (r1 - r0) / dc * (cc - c0) + r0
    d = np.clip(np.abs(rr - f), 0, 2.3 - 1e-10)
    prof = np.clip(np.log(1 - d / 2.3) + 1, 0, 1)
    keep = (cc >= np.floor(c0)) & (cc < np.ceil(c1)) & (c1 != c0)
    return np.where(keep, prof, 0).astype(np.float32)


def _dotted_line(x: Array, p: tuple, rng: Rng) -> Array:
    intensity, count = p
    n, h, w = x.shape[:3]
    acc = np.zeros((n, h, w), np.float32)
    for _ in range(count):
        r0, r1 = rng.integers(0, h - 1, size=(2, n))
        acc += _line_profiles(np.zeros(n), r0, np.full(n, w - 1.0), r1, h, w)
    acc[:, :, (np.arange(w) // 2) % 2 == 0] = 0  # dashes: 2 px off, 2 px on
    return x + intensity * acc[..., None]


def _zigzag_segments(rng: Rng, h: int) -> Array:
    """One random zigzag as segments [(c0, r0, c1, r1), ...] (MNIST-C's construction)."""
    a = b = 2.0
    c0, c1 = 2, 25
    r0 = int(rng.integers(0, h - 1))
    r1 = r0 + int(rng.integers(-5, 5))
    theta = np.arctan((r1 - r0) / (c1 - c0))
    d = (c1 - c0) / np.cos(theta)
    pts = [(0.0, 0.0)]
    ri = 0.0
    for i in range(int((d - a) // (2 * a)) + 1):
        ri = (-1) ** i * b
        pts.append(((2 * i + 1) * a, ri))
    max_c = (2 * a) * (d // (2 * a))
    if d != max_c:
        pts.append((d, ri / (2 * (d - max_c))))
    e = np.array(pts).T
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    cs, rs = rot @ e
    cs, rs = cs + c0, rs + r0
    return np.stack([cs[:-1], rs[:-1], cs[1:], rs[1:]], axis=1)


def _zigzag(x: Array, p: tuple, rng: Rng) -> Array:
    intensity, count = p
    n, h, w = x.shape[:3]
    out = np.empty((n, h, w), np.float32)
    chunk = 256
    for s in range(0, n, chunk):
        segs, owner = [], []
        for k in range(s, min(s + chunk, n)):
            for _ in range(count):
                sg = _zigzag_segments(rng, h)
                segs.append(sg)
                owner.append(np.full(len(sg), k - s))
        segs_a, owner_a = np.concatenate(segs), np.concatenate(owner)
        prof = _line_profiles(*segs_a.T, h, w)
        starts = np.searchsorted(owner_a, np.arange(min(chunk, n - s)))
        out[s : s + chunk] = np.add.reduceat(prof, starts, axis=0)
    return x + intensity * out[..., None]


def _canny_edges(x: Array, p: tuple, rng: Rng) -> Array:
    from skimage.feature import canny

    del rng
    keep, sigma = p
    edges = np.stack([canny(im, sigma=sigma) for im in x[..., 0].astype(np.float64)])
    return np.maximum(edges[..., None].astype(np.float32), keep * x)


# fmt: off
_MNIST: _Table = {
    "shot_noise": (_shot_noise, (12, 5, 3, 2, 1.5)),
    "impulse_noise": (_impulse_noise, (0.06, 0.09, 0.17, 0.27, 0.37)),
    "glass_blur": (_mnist_glass_blur,
                   ((0.4, 1, 1), (0.6, 1, 1), (0.7, 1, 2), (0.9, 2, 1), (1.0, 2, 3))),
    "motion_blur": (_mnist_motion_blur, ((10, 1), (10, 2), (10, 3), (15, 5), (15, 8))),
    "shear": (_shear, (0.1, 0.2, 0.4, 0.6, 0.8)),
    "scale": (_scale, (1 / 0.9, 1 / 0.8, 1 / 0.7, 1 / 0.6, 1 / 0.5)),
    "rotate": (_rotate, (0.1, 0.2, 0.4, 0.6, 0.8)),
    "brightness": (_brightness, (0.3, 0.4, 0.5, 0.6, 0.7)),
    "translate": (_translate, (1, 2, 3, 4, 5)),
    "stripe": (_stripe, (3, 5, 7, 9, 11)),
    "fog": (_mnist_fog, ((2.0, 2.0), (2.5, 1.7), (3.0, 1.4), (3.5, 1.3), (4.0, 1.2))),
    "spatter": (_mnist_spatter, ((0.65, 0.3, 1, 0.68, 1.5), (0.65, 0.3, 1, 0.67, 1.5),
                                 (0.65, 0.3, 1, 0.65, 1.5), (0.67, 0.4, 1, 0.65, 1.5),
                                 (0.70, 0.45, 1, 0.65, 1.5))),
    "dotted_line": (_dotted_line, ((0.5, 1), (0.75, 1), (1.0, 1), (1.0, 2), (1.0, 3))),
    "zigzag": (_zigzag, ((0.5, 1), (0.75, 1), (1.0, 1), (1.0, 2), (1.0, 3))),
    "canny_edges": (_canny_edges, ((2 / 3, 1.0), (1 / 3, 1.0), (0.0, 1.0), (0.0, 1.5),
                                   (0.0, 2.0))),
}
# fmt: on
