"""The on-disk cache of `corrupted_splits`: one .npy per split, its SHA-256 beside it."""

from __future__ import annotations

import hashlib
import os
import tempfile

import numpy as np

from earlyjax.data.corruptions.shared import Array

# Bump when any algorithm or parameter changes: it is part of every cache key.
CORRUPTIONS_VERSION = "1"


def _source_digest(images: Array) -> str:
    h = hashlib.sha256()
    h.update(f"v{CORRUPTIONS_VERSION}|{images.dtype}|{images.shape}|".encode())
    h.update(np.ascontiguousarray(images).tobytes())
    return h.hexdigest()[:16]


def cache_path(
    cache_dir: str, images: Array, name: str, severity: int, seed: int, digest: str | None = None
) -> str:
    """Where :func:`corrupted_splits` caches one generated split (keyed by source and seed)."""
    digest = digest or _source_digest(images)
    return os.path.join(cache_dir, f"{name}_s{severity}_seed{seed}_{digest}.npy")


class CorruptCacheFile(ValueError):
    """A cached corrupted split that cannot be used as it is (unreadable, wrong shape, or not the
    bytes that were saved); corrupted_splits sets it aside and regenerates it."""


def _content_digest(arr: Array) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def _load_cached(path: str, shape: tuple[int, ...]) -> Array:
    """A cached split, checked against its shape and the SHA-256 written beside it at save time
    (`<path>.sha256`; a file cached before digests were kept is checked by shape only)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise CorruptCacheFile(f"cached corrupted split {path} is unreadable ({e})") from e
    if arr.dtype != np.uint8 or arr.shape != shape:
        raise CorruptCacheFile(
            f"cached corrupted split {path} holds {arr.dtype} {arr.shape}, expected uint8 {shape}"
        )
    if os.path.exists(path + ".sha256"):
        with open(path + ".sha256") as f:
            if f.read().strip() != _content_digest(arr):
                raise CorruptCacheFile(
                    f"cached corrupted split {path} does not match the SHA-256 saved with it"
                )
    return arr


def _set_aside(path: str) -> str:
    """Renames a corrupt cache file (and its digest) to `<path>.corrupt[.n]`; returns the name."""
    aside, n = path + ".corrupt", 1
    while os.path.exists(aside):
        aside, n = f"{path}.corrupt.{n}", n + 1
    os.replace(path, aside)
    if os.path.exists(path + ".sha256"):
        os.replace(path + ".sha256", aside + ".sha256")
    return aside


def _save_no_clobber(path: str, arr: Array) -> None:
    """Writes atomically (temporary file, then link/rename) with its SHA-256 beside it; never
    replaces a different file."""
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".npy")
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, arr)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # a full disk: name the file (data sits below metric_log)
            raise e if e.filename else OSError(e.errno, e.strerror, tmp) from e
        try:
            os.link(tmp, path)  # atomic and fails if `path` exists
        except FileExistsError:
            _refuse_a_different_file(path, arr)
        except OSError:  # file system without hard links
            if os.path.exists(path):
                _refuse_a_different_file(path, arr)
            else:
                os.replace(tmp, path)
                tmp = ""
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
    with open(path + ".sha256.tmp", "w") as f:
        f.write(_content_digest(arr))
    os.replace(path + ".sha256.tmp", path + ".sha256")


def _refuse_a_different_file(path: str, arr: Array) -> None:
    if not np.array_equal(_load_cached(path, arr.shape), arr):
        raise ValueError(
            f"{path} already holds a different corrupted split; not overwriting it "
            "(delete it if it is stale)"
        )


def _read_cache(path: str, shape: tuple[int, ...]) -> Array | None:
    """The cached split at `path`; None when absent or corrupt (set aside, with a printed line)."""
    if not os.path.exists(path):
        return None
    try:
        return _load_cached(path, shape)
    except CorruptCacheFile as e:
        print(f"{e}; moved it to {_set_aside(path)} and regenerating it")
        return None
