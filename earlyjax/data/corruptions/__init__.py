"""Corruption generator: MNIST-C for 28x28 grayscale, CIFAR-10-C for 32x32 colour.

For data sets without a published corrupted version (our embedded default, scikit-learn
digits upsampled to 28x28, in particular). The corruption set is picked by the image shape:
``[N, 28, 28, 1]`` uses the MNIST-C set (Mu & Gilmer 2019), ``[N, 32, 32, 3]`` the CIFAR-10-C
set (Hendrycks & Dietterich 2019) with its CIFAR parameters. Parameters and algorithms
follow the authors' generation scripts (``google-research/mnist-c`` ``corruptions.py``,
``hendrycks/robustness`` ``ImageNet-C/create_c/make_cifar_c.py``); the code is our own,
vectorised over the batch with numpy / scipy.ndimage (scikit-image for Canny, Pillow for
JPEG). Pixel statistics match the originals in kind, not bit for bit: the random streams
differ, and ImageMagick / OpenCV operations are re-implemented (see `cifar_c`).

What it makes are therefore *MNIST-C-style* and *CIFAR-10-C-style* sets, reported as generated
(:func:`earlyjax.data.ood_set_name`): MNIST-C itself has one severity per corruption where this
generator makes five, and its CIFAR-10-C frost uses a procedural texture.

Determinism: every (corruption, severity) draws from its own ``numpy.random.Generator``
seeded by ``(seed, crc32(set/name), severity)``; the same images, name, severity and seed
give the same output. Output is rounded to the nearest integer (the scripts truncate or round).

Layout: `shared` holds the image helpers and the corruptions both sets use, `mnist_c` and
`cifar_c` each set's own corruptions, parameter table and notes, `cache` the on-disk cache of
:func:`corrupted_splits`; this module the registry and the entry points.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable

import numpy as np

from earlyjax.data.base import OODKey, Split, check_split
from earlyjax.data.corruptions.cache import CORRUPTIONS_VERSION as CORRUPTIONS_VERSION
from earlyjax.data.corruptions.cache import CorruptCacheFile as CorruptCacheFile
from earlyjax.data.corruptions.cache import (
    _read_cache,
    _save_no_clobber,
    _source_digest,
    cache_path,
)
from earlyjax.data.corruptions.cifar_c import _CIFAR
from earlyjax.data.corruptions.mnist_c import _MNIST
from earlyjax.data.corruptions.shared import Array, _Table, _to_uint8

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
MNIST_C_CORRUPTIONS: tuple[str, ...] = (
    "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale", "rotate",
    "brightness", "translate", "stripe", "fog", "spatter", "dotted_line", "zigzag",
    "canny_edges",
)  # fmt: skip
CIFAR10_C_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "defocus_blur",
    "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur", "snow", "frost", "fog",
    "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression", "spatter",
    "saturate",
)  # fmt: skip
# The 15 corruptions of Hendrycks & Dietterich's benchmark (their Figure 1: noise, blur, weather,
# digital); the OOD mean is over these unless a config opts into the 4 extra ones, which the
# release holds as held-out validation corruptions.
CIFAR10_C_BENCHMARK: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
    "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
    "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
CIFAR10_C_EXTRA: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
# Named selections of corruptions (`select_corruptions`, config field data.ood_corruptions).
# MNIST-C has no extra corruptions: both name its 15 (its clean `identity` control is no
# corruption and never part of either).
CORRUPTION_PRESETS: tuple[str, ...] = ("benchmark", "all")
MNIST_SHAPE = (28, 28, 1)
CIFAR_SHAPE = (32, 32, 3)

_SETS: dict[tuple[int, int, int], tuple[str, _Table, tuple[str, ...]]] = {
    MNIST_SHAPE: ("mnist_c", _MNIST, MNIST_C_CORRUPTIONS),
    CIFAR_SHAPE: ("cifar10_c", _CIFAR, CIFAR10_C_CORRUPTIONS),
}

# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def corruption_names(image_shape: tuple[int, ...]) -> tuple[str, ...]:
    """The corruption names available for images of shape (H, W, C)."""
    return _select(tuple(image_shape))[2]


_BENCHMARK: dict[tuple[int, int, int], tuple[str, ...]] = {
    MNIST_SHAPE: MNIST_C_CORRUPTIONS,
    CIFAR_SHAPE: CIFAR10_C_BENCHMARK,
}
_SET_LABEL = {MNIST_SHAPE: "MNIST-C", CIFAR_SHAPE: "CIFAR-10-C / CIFAR-100-C"}


def benchmark_names(image_shape: tuple[int, ...]) -> tuple[str, ...]:
    """The corruptions an OOD mean covers by default for images of shape (H, W, C).

    (28, 28, 1): MNIST-C's 15. (32, 32, 3): the 15 benchmark corruptions of CIFAR-10-C /
    CIFAR-100-C (:data:`CIFAR10_C_BENCHMARK`), without the 4 extra ones.
    """
    _select(tuple(image_shape))
    return _BENCHMARK[tuple(image_shape)]


def select_corruptions(
    spec: str | Iterable[str] | None,
    image_shape: tuple[int, ...],
    also_valid: tuple[str, ...] = (),
) -> tuple[str, ...]:
    """The corruption names that `spec` selects for images of shape (H, W, C).

    spec: None or ``"benchmark"``: :func:`benchmark_names` (15 for both sets); ``"all"``:
    every corruption of the set (CIFAR-10-C: 19, the 15 + speckle_noise, gaussian_blur,
    spatter, saturate; MNIST-C: the same 15); a comma-separated string (``"fog,snow"``) or
    an iterable of names, kept in the order given. `also_valid` admits further names (the
    tfds MNIST-C ``identity`` split). Raises ValueError naming the unknown or repeated names
    and the valid choices.
    """
    shape = tuple(image_shape)
    _, _, all_names = _select(shape)
    if spec is None or spec == "benchmark":
        return _BENCHMARK[shape]
    if spec == "all":
        return all_names
    if isinstance(spec, str):
        names = tuple(n.strip() for n in spec.split(",") if n.strip())
    else:
        names = tuple(spec)
    valid = (*all_names, *also_valid)
    label = _SET_LABEL[shape]
    if shape == CIFAR_SHAPE:
        presets = (
            f"'benchmark' (the 15 of Hendrycks & Dietterich: {', '.join(CIFAR10_C_BENCHMARK)}), "
            f"'all' (19: those + {', '.join(CIFAR10_C_EXTRA)})"
        )
    else:
        presets = f"'benchmark' or 'all' (both MNIST-C's 15: {', '.join(MNIST_C_CORRUPTIONS)})"
    bad = [n for n in names if not isinstance(n, str) or n not in valid]
    if not names or bad:
        what = f"unknown corruption(s) {', '.join(map(repr, bad))}" if bad else "no corruption"
        raise ValueError(
            f"{what} for the {label} set: choose {presets}, or comma-separated names from: "
            f"{', '.join(valid)}"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"corruption(s) {', '.join(map(repr, repeated))} named more than once")
    return names


def _select(image_shape: tuple[int, ...]) -> tuple[str, _Table, tuple[str, ...]]:
    if image_shape not in _SETS:
        raise ValueError(
            f"image shape {image_shape} (H, W, C): corruptions exist for {MNIST_SHAPE} "
            f"(MNIST-C set) and {CIFAR_SHAPE} (CIFAR-10-C set) only"
        )
    return _SETS[image_shape]


def _check_request(images: Array, name: str, severity: int) -> tuple[str, _Table]:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(
            f"images must be a uint8 array [N, H, W, C], got "
            f"{getattr(images, 'dtype', type(images))} "
            f"{getattr(images, 'shape', '')}"
        )
    set_name, table, names = _select(tuple(images.shape[1:]))
    if name not in table:
        raise ValueError(
            f"corruption {name!r} is not in the {set_name} set for images of shape "
            f"{images.shape[1:]}: choose from {names}"
        )
    if severity not in SEVERITIES:
        raise ValueError(f"severity {severity!r}: choose from {SEVERITIES}")
    return set_name, table


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed {seed!r}: must be a non-negative int")


def corrupt(images: Array, name: str, severity: int, seed: int) -> Array:
    """Applies corruption `name` at `severity` (1..5) to a batch of images.

    images: uint8 [N, 28, 28, 1] (MNIST-C set) or [N, 32, 32, 3] (CIFAR-10-C set), 0..255.
    Returns uint8 of the same shape. Deterministic in (images, name, severity, seed).
    """
    set_name, table = _check_request(images, name, severity)
    _check_seed(seed)
    if images.shape[0] == 0:
        return images.copy()
    fn, params = table[name]
    rng = np.random.default_rng(
        [int(seed), zlib.crc32(f"{set_name}/{name}".encode()), int(severity)]
    )
    x = images.astype(np.float32) / 255.0
    return _to_uint8(np.asarray(fn(x, params[severity - 1], rng), np.float32))


def corrupted_splits(
    split: Split,
    names: Iterable[str] | None = None,
    severities: Iterable[int] | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> dict[OODKey, Split]:
    """Generates corrupted copies of `split` for every (name, severity).

    `names` is anything :func:`select_corruptions` takes: None (the default) is the benchmark
    set for the image shape (MNIST-C: its 15; CIFAR-10-C: the 15 benchmark corruptions),
    ``"all"`` adds CIFAR-10-C's 4 extra ones. `severities` defaults to 1..5. With `cache_dir`,
    each result is stored as
    ``<name>_s<severity>_seed<seed>_<hash of source images and generator version>.npy`` and
    read back on later calls instead of regenerated (a cached file that is unreadable or does not
    match the SHA-256 saved beside it is set aside and regenerated, with a printed line).

    Returns {(name, severity): Split(uint8 images like split.images, split.labels)}.
    """
    images, labels = check_split(split, "corrupted_splits source")
    set_name, table, all_names = _select(tuple(images.shape[1:]))
    names = select_corruptions(names, images.shape[1:])
    sevs = tuple(SEVERITIES if severities is None else severities)
    for n in names:
        _check_request(images[:0], n, sevs[0] if sevs else 1)
    for s in sevs:
        _check_request(images[:0], names[0] if names else all_names[0], s)
    _check_seed(seed)
    digest = None
    if cache_dir is not None:
        cache_dir = os.fspath(cache_dir)
        os.makedirs(cache_dir, exist_ok=True)
        digest = _source_digest(images)
    out: dict[OODKey, Split] = {}
    for n in names:
        for s in sevs:
            if cache_dir is None:
                out[(n, s)] = Split(corrupt(images, n, s, seed), labels)
                continue
            path = cache_path(cache_dir, images, n, s, seed, digest)
            arr = _read_cache(path, images.shape)
            if arr is None:
                arr = corrupt(images, n, s, seed)
                _save_no_clobber(path, arr)
            out[(n, s)] = Split(arr, labels)
    return out
