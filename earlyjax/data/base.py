"""Array containers every data source returns: uint8 images in NHWC, int32 labels."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np


class DatasetFileError(ValueError):
    """A data set file is missing, truncated, corrupt or has unexpected contents (also: OOD
    splits that do not fit the ID data)."""


class Split(NamedTuple):
    """One split of a data set held in host memory.

    images: uint8 [N, H, W, C] (C = 1 for grayscale), pixel values 0..255.
    labels: int32 [N], class indices in [0, num_classes).
    """

    images: np.ndarray
    labels: np.ndarray


OODKey = tuple[str, int]  # (corruption name, severity 1..5)
OOD_FIX = "build the OOD splits from the test split of the same data set"


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A training split, the clean (ID) test split and the OOD test splits.

    `ood_set` names what the OOD splits are, as reported (results.json, summaries): e.g.
    "CIFAR-10-C (tfds cifar10_corrupted: 15 benchmark corruptions x 5 severities)" or
    "MNIST-C-style (generated: ...)"; `earlyjax.data.load_dataset` sets it with
    `earlyjax.data.ood_set_name`. None for a Dataset built by hand.

    The OOD splits are checked against the ID data when the Dataset is built
    (`check_ood_splits`); `ood_fix` is what its error tells to change (`load_dataset` names
    the config field that chose the OOD files).
    """

    name: str
    num_classes: int
    train: Split
    test: Split
    ood: dict[OODKey, Split]
    ood_set: str | None = None
    ood_fix: dataclasses.InitVar[str] = OOD_FIX

    def __post_init__(self, ood_fix: str):
        check_ood_splits(self.ood, self.train, self.num_classes, self.name, ood_fix)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])


def synthetic_dataset(
    image_shape: tuple[int, int, int], num_classes: int, n: int, name: str = "synthetic"
) -> Dataset:
    """`n` random uint8 images and labels (train = test, no OOD): for timing, not training."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, *image_shape), dtype=np.uint8)
    split = Split(images, rng.integers(0, num_classes, n, dtype=np.int32))
    return Dataset(name, num_classes, split, split, {})


def check_ood_splits(
    ood: dict[OODKey, Split], train: Split, num_classes: int, name: str, fix: str = OOD_FIX
) -> None:
    """Every OOD split must fit the ID data: uint8 images [n >= 1, H, W, C] of the training
    images' (H, W, C), and n integer labels in [0, num_classes). Raises DatasetFileError naming
    the split, the shapes and `fix` otherwise: a mismatched OOD set would otherwise be
    evaluated (e.g. MNIST-C for a CIFAR-10 run) and report a meaningless accuracy."""
    want = tuple(np.shape(train.images)[1:])
    for key in sorted(ood):
        images, labels = ood[key]
        where = f"{name} OOD split {key[0]}/severity {key[1]}"
        shape, dtype = np.shape(images), getattr(images, "dtype", type(images).__name__)
        if dtype != np.uint8 or tuple(shape[1:]) != want or len(shape) != 4 or shape[0] < 1:
            raise DatasetFileError(
                f"{where}: images are {dtype} {tuple(shape)}, but the {name} images the model "
                f"is built for are uint8 [n >= 1, {', '.join(map(str, want))}]; {fix}"
            )
        lshape, ldtype = np.shape(labels), getattr(labels, "dtype", None)
        if lshape != shape[:1] or ldtype is None or not np.issubdtype(ldtype, np.integer):
            raise DatasetFileError(
                f"{where}: labels are {ldtype} {tuple(lshape)}, expected {shape[0]} integer "
                f"labels (one per image, images {tuple(shape)}); {fix}"
            )
        lo, hi = int(np.min(labels)), int(np.max(labels))
        if lo < 0 or hi >= num_classes:
            raise DatasetFileError(
                f"{where}: labels range over [{lo}, {hi}], but {name} has {num_classes} classes "
                f"[0, {num_classes}); {fix}"
            )


def check_split(split: Split, where: str) -> Split:
    """Validates dtypes and shapes; raises ValueError naming `where` on a mismatch."""
    images, labels = split
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(
            f"{where}: images must be uint8 [N, H, W, C], got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{where}: labels must be [N] with N = {images.shape[0]}, got {labels.shape}"
        )
    return Split(images, labels.astype(np.int32))
