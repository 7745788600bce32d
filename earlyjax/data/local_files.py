"""Readers for data set files people already have on disk (no TensorFlow, no network).

* MNIST in the IDX format (LeCun / torchvision file names, gzipped or not):
  :func:`load_mnist_idx`. Fashion-MNIST and KMNIST use the same format and names.
* CIFAR-10 / CIFAR-100 "python version" pickles (``cifar-10-batches-py``,
  ``cifar-100-python``): :func:`load_cifar_pickles`.
* The official CIFAR-10-C / CIFAR-100-C release (Hendrycks & Dietterich 2019): one
  ``<corruption>.npy`` per corruption holding the 5 severities stacked (severity 1 first),
  plus ``labels.npy``: :func:`load_corrupted_npy` (by default the 15 benchmark corruptions of
  the 19 files).

Every reader validates what it reads (magic numbers, declared counts against the bytes
present, shapes, dtypes, label ranges). A truncated or corrupt file raises
:class:`DatasetFileError` naming the file; a short set is never returned silently.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import zlib
from collections.abc import Iterable, Sequence

import numpy as np

from earlyjax.data.base import DatasetFileError, OODKey, Split, check_split
from earlyjax.data.corruptions import CIFAR_SHAPE, SEVERITIES, select_corruptions

PathLike = str | os.PathLike

# IDX magic numbers: 0x00000803 (unsigned byte, 3 dims) and 0x00000801 (unsigned byte, 1 dim).
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049

MNIST_IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

CIFAR_PICKLE_LAYOUT: dict[str, dict] = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test": ("test_batch",),
        "label_key": "labels",
        "num_classes": 10,
        "counts": {"train": 50000, "test": 10000},
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ("train",),
        "test": ("test",),
        "label_key": "fine_labels",
        "num_classes": 100,
        "counts": {"train": 50000, "test": 10000},
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    },
}

CORRUPTED_NPY_LABELS = "labels.npy"
CORRUPTED_NPY_SOURCES = (
    "CIFAR-100-C: https://zenodo.org/record/3555552 (CIFAR-100-C.tar); "
    "CIFAR-10-C: https://zenodo.org/record/2535967 (CIFAR-10-C.tar)"
)


class DatasetNotFoundError(FileNotFoundError):
    """The files of a data set are not where the reader looked."""


# ----------------------------------------------------------------------------------------------
# MNIST IDX
# ----------------------------------------------------------------------------------------------


def _idx_candidates(stem: str) -> list[str]:
    # LeCun's names, the same gzipped, and the dotted variant some unpackers produce.
    dotted = stem.replace("-idx", ".idx")
    return [stem, stem + ".gz", dotted, dotted + ".gz"]


def _find_file(directories: Sequence[str], names: Sequence[str]) -> str | None:
    for d in directories:
        for n in names:
            p = os.path.join(d, n)
            if os.path.isfile(p):
                return p
    return None


def _read_bytes(path: str) -> bytes:
    """Reads a whole file, transparently gunzipping `*.gz`; errors name the file."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
        raise DatasetFileError(
            f"{path}: cannot read ({type(e).__name__}: {e}); the file is "
            "truncated or corrupt, download it again"
        ) from e


def read_idx(path: PathLike, expected_magic: int) -> np.ndarray:
    """Reads one IDX file of unsigned bytes.

    Returns uint8 [N, rows, cols] for images (magic 2051) or [N] for labels (magic 2049).
    Raises DatasetFileError naming `path` on a wrong magic number or when the bytes present
    do not match the declared dimensions (truncated or padded file).
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    ndim = {IDX_IMAGES_MAGIC: 3, IDX_LABELS_MAGIC: 1}[expected_magic]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetFileError(
            f"{path}: {len(data)} bytes, shorter than the {header}-byte "
            "IDX header; the file is truncated"
        )
    magic = int.from_bytes(data[0:4], "big")
    if magic != expected_magic:
        kind = "images" if expected_magic == IDX_IMAGES_MAGIC else "labels"
        raise DatasetFileError(
            f"{path}: IDX magic number {magic}, expected {expected_magic} "
            f"for an {kind} file; not an MNIST {kind} file, or corrupt"
        )
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = int(np.prod(dims))
    actual = len(data) - header
    if actual != expected:
        raise DatasetFileError(
            f"{path}: header declares dims {dims} = {expected} bytes of data, file holds "
            f"{actual}; the file is {'truncated' if actual < expected else 'padded'} or corrupt"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_mnist_idx(directory: PathLike, num_classes: int = 10) -> tuple[Split, Split]:
    """Reads MNIST (or Fashion-MNIST/KMNIST) IDX files from `directory`.

    Looks for ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each also as ``.gz`` or with
    ``.idx`` instead of ``-idx``) in `directory` and in its torchvision layout
    ``directory/MNIST/raw``.

    Returns (train, test) Splits: images uint8 [N, 28, 28, 1], labels int32 [N] in
    [0, num_classes).
    """
    directory = os.fspath(directory)
    search = [directory, os.path.join(directory, "MNIST", "raw")]
    out = []
    for split_name, (img_stem, lbl_stem) in MNIST_IDX_FILES.items():
        paths = []
        for stem in (img_stem, lbl_stem):
            p = _find_file(search, _idx_candidates(stem))
            if p is None:
                raise DatasetNotFoundError(
                    f"MNIST file {stem}[.gz] not found in {' or '.join(search)}. Put the four "
                    "IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz; e.g. from "
                    "torchvision's MNIST/raw folder) there"
                )
            paths.append(p)
        images = read_idx(paths[0], IDX_IMAGES_MAGIC)
        labels = read_idx(paths[1], IDX_LABELS_MAGIC)
        if images.shape[0] != labels.shape[0]:
            raise DatasetFileError(
                f"{paths[0]} holds {images.shape[0]} images but {paths[1]} "
                f"holds {labels.shape[0]} labels"
            )
        _check_labels(labels, num_classes, paths[1])
        out.append(check_split(Split(images[..., None], labels), f"mnist {split_name}"))
    return out[0], out[1]


# ----------------------------------------------------------------------------------------------
# CIFAR python pickles
# ----------------------------------------------------------------------------------------------

_SAFE_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only builds dicts/lists/bytes and numpy arrays (no arbitrary code)."""

    def find_class(self, module: str, name: str):
        if module.startswith("numpy.core"):  # pickles written by numpy < 2
            module = "numpy._core" + module[len("numpy.core") :]
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _load_pickle(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, OSError) as e:
        raise DatasetFileError(
            f"{path}: cannot unpickle ({type(e).__name__}: {e}); the file "
            "is truncated or corrupt, download it again"
        ) from e
    if not isinstance(obj, dict):
        raise DatasetFileError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _read_cifar_batch(path: str, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    d = _load_pickle(path)
    for key in ("data", label_key):
        if key not in d:
            raise DatasetFileError(
                f"{path}: no '{key}' entry (has {sorted(d)}); not a CIFAR "
                "python batch of this data set"
            )
    data = np.asarray(d["data"])
    labels = np.asarray(d[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetFileError(
            f"{path}: 'data' must be uint8 [N, 3072], got {data.dtype} {data.shape}"
        )
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise DatasetFileError(
            f"{path}: {data.shape[0]} images but '{label_key}' has shape {labels.shape}"
        )
    _check_labels(labels, num_classes, path)
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # CHW rows -> NHWC
    return images, labels.astype(np.int32)


def load_cifar_pickles(directory: PathLike, name: str) -> tuple[Split, Split]:
    """Reads the CIFAR-10 (`name='cifar10'`) or CIFAR-100 (`'cifar100'`) python pickles.

    `directory` is either the folder holding ``cifar-10-batches-py`` / ``cifar-100-python``
    (as unpacked from the official tarball) or that folder itself. CIFAR-100 uses the
    100 ``fine_labels``. Returns (train, test) Splits: images uint8 [N, 32, 32, 3], labels
    int32 [N]; counts are checked against the official 50000 / 10000.
    """
    if name not in CIFAR_PICKLE_LAYOUT:
        raise ValueError(f"name={name!r}: choose one of {sorted(CIFAR_PICKLE_LAYOUT)}")
    layout = CIFAR_PICKLE_LAYOUT[name]
    directory = os.fspath(directory)
    candidates = [os.path.join(directory, layout["folder"]), directory]
    root = next(
        (c for c in candidates if all(os.path.isfile(os.path.join(c, f)) for f in layout["test"])),
        None,
    )
    if root is None:
        raise DatasetNotFoundError(
            f"{name}: no {layout['folder']}/{layout['test'][0]} under {directory}. Unpack "
            f"{layout['url']} there (it creates the folder {layout['folder']})"
        )
    out = []
    for split_name in ("train", "test"):
        imgs, lbls = [], []
        for fname in layout[split_name]:
            path = os.path.join(root, fname)
            if not os.path.isfile(path):
                raise DatasetNotFoundError(f"{name}: missing {path}; unpack {layout['url']} again")
            i, lab = _read_cifar_batch(path, layout["label_key"], layout["num_classes"])
            imgs.append(i)
            lbls.append(lab)
        images, labels = np.concatenate(imgs), np.concatenate(lbls)
        expected = layout["counts"][split_name]
        if images.shape[0] != expected:
            raise DatasetFileError(
                f"{name} {split_name}: {images.shape[0]} images in "
                f"{layout[split_name]} under {root}, expected {expected}"
            )
        out.append(check_split(Split(np.ascontiguousarray(images), labels), f"{name} {split_name}"))
    return out[0], out[1]


# ----------------------------------------------------------------------------------------------
# CIFAR-10-C / CIFAR-100-C .npy release
# ----------------------------------------------------------------------------------------------


def _load_npy(path: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DatasetFileError(
            f"{path}: cannot read as .npy ({type(e).__name__}: {e}); the "
            "file is truncated or corrupt, download it again"
        ) from e


def load_corrupted_npy(
    directory: PathLike,
    corruptions: str | Iterable[str] | None = None,
    severities: Iterable[int] | None = None,
    num_classes: int = 100,
) -> dict[OODKey, Split]:
    """Reads the official CIFAR-100-C (or CIFAR-10-C) release from `directory`.

    Layout: ``<corruption>.npy`` uint8 [5*n, H, W, C] holding severities 1..5 stacked in
    order, and ``labels.npy`` [5*n] (the n test labels repeated 5 times). Only the requested
    severities are sliced out of a memory map. `corruptions` is anything
    :func:`earlyjax.data.corruptions.select_corruptions` takes: None (= ``"benchmark"``) reads
    the 15 benchmark corruptions, ``"all"`` all 19 files of the release. `severities` defaults
    to 1..5; set `num_classes` to 10 for CIFAR-10-C.

    Returns {(corruption, severity): Split(images uint8 [n, H, W, C], labels int32 [n])}.
    """
    directory = os.fspath(directory)
    names = select_corruptions(corruptions, CIFAR_SHAPE)
    sevs = tuple(SEVERITIES if severities is None else severities)
    for s in sevs:
        if s not in SEVERITIES:
            raise ValueError(f"severity {s!r}: choose from {SEVERITIES}")
    if not os.path.isdir(directory):
        raise DatasetNotFoundError(
            f"corrupted set directory {directory} does not exist; "
            f"download and unpack the release ({CORRUPTED_NPY_SOURCES})"
        )

    def need(fname: str) -> str:
        p = os.path.join(directory, fname)
        if not os.path.isfile(p):
            raise DatasetNotFoundError(
                f"{fname} not found in {directory}; it is part of the official release of "
                f"Hendrycks & Dietterich's corrupted sets ({CORRUPTED_NPY_SOURCES}); unpack "
                "the tar so that the .npy files lie directly in this directory"
            )
        return p

    labels_path = need(CORRUPTED_NPY_LABELS)
    labels_all = np.asarray(_load_npy(labels_path))
    if labels_all.ndim != 1 or labels_all.shape[0] % len(SEVERITIES):
        raise DatasetFileError(f"{labels_path}: expected [5*n] labels, got {labels_all.shape}")
    n = labels_all.shape[0] // len(SEVERITIES)
    blocks = labels_all.reshape(len(SEVERITIES), n)
    if not (blocks == blocks[:1]).all():
        raise DatasetFileError(
            f"{labels_path}: the 5 severity blocks of labels differ; "
            "expected the test labels repeated 5 times"
        )
    _check_labels(blocks[0], num_classes, labels_path)
    labels = blocks[0].astype(np.int32)

    out: dict[OODKey, Split] = {}
    for name in names:
        path = need(f"{name}.npy")
        arr = _load_npy(path)
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[0] != labels_all.shape[0]:
            raise DatasetFileError(
                f"{path}: expected uint8 [{labels_all.shape[0]}, H, W, C] (5 severities x {n} "
                f"images, matching {CORRUPTED_NPY_LABELS}), got {arr.dtype} {arr.shape}"
            )
        for s in sevs:
            images = np.array(arr[(s - 1) * n : s * n])  # copies only this slice off the map
            out[(name, s)] = check_split(Split(images, labels.copy()), f"{path} severity {s}")
    return out


def _check_labels(labels: np.ndarray, num_classes: int, path: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetFileError(
            f"{path}: labels range over [{labels.min()}, {labels.max()}], "
            f"expected [0, {num_classes})"
        )
