"""Array containers every data source returns: uint8 images in NHWC, int32 labels."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np


class Split(NamedTuple):
    """One split of a data set held in host memory.

    images: uint8 [N, H, W, C] (C = 1 for grayscale), pixel values 0..255.
    labels: int32 [N], class indices in [0, num_classes).
    """

    images: np.ndarray
    labels: np.ndarray


OODKey = tuple[str, int]  # (corruption name, severity 1..5)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A training split, the clean (ID) test split and the OOD test splits.

    `ood_set` names what the OOD splits are, as reported (results.json, summaries): e.g.
    "CIFAR-10-C (tfds cifar10_corrupted: 15 benchmark corruptions x 5 severities)" or
    "MNIST-C-style (generated: ...)"; `earlyjax.data.load_dataset` sets it with
    `earlyjax.data.ood_set_name`. None for a Dataset built by hand.
    """

    name: str
    num_classes: int
    train: Split
    test: Split
    ood: dict[OODKey, Split]
    ood_set: str | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])


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
