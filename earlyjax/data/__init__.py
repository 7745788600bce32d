"""Data: sources (embedded digits, tfds, local files), OOD sets, and the input pipeline.

`load_dataset(data_config)` turns the `data` block of an experiment config into a `Dataset`
(train, clean test, OOD splits keyed by (corruption, severity)):

========== ======================================== ==========================================
field      value                                    reads
========== ======================================== ==========================================
source     embedded                                 scikit-learn's digits (`digits` only)
           tfds                                     `tfds.data_source(name)` from data_dir
           local                                    MNIST IDX files / CIFAR python pickles
ood_source generated                                the test split under the MNIST-C (28x28x1)
                                                    or CIFAR-10-C (32x32x3) corruptions, cached
           tfds                                     `mnist_corrupted` / `cifar10_corrupted`
           local                                    CIFAR-10-C / CIFAR-100-C `.npy` release
           none                                     no OOD evaluation
========== ======================================== ==========================================
"""

from __future__ import annotations

import os

import ml_collections

from earlyjax.data.base import Dataset, Split
from earlyjax.data.tfds_source import MNIST_C_TFDS_SEVERITY as MNIST_C_SEVERITY

NUM_CLASSES = {"digits": 10, "mnist": 10, "cifar10": 10, "cifar100": 100}
TFDS_OOD_NAME = {"mnist": "mnist_corrupted", "cifar10": "cifar10_corrupted"}


class DataConfigError(ValueError):
    """A data field combination that cannot be read; the message names the fix."""


def default_cache_dir() -> str:
    """~/.cache/earlyjax (or $XDG_CACHE_HOME/earlyjax): generated corruptions, compiled code."""
    base = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return os.path.join(base, "earlyjax")


def _subsample(split: Split, max_examples: int | None) -> Split:
    """The first `max_examples` examples (a fixed subset, the same for every run)."""
    if max_examples is None or split.images.shape[0] <= max_examples:
        return split
    return Split(split.images[:max_examples], split.labels[:max_examples])


def check_data_config(data: ml_collections.ConfigDict) -> None:
    """Raises DataConfigError for source/OOD combinations that cannot work, before any I/O."""
    if data.source == "local" and not data.data_dir:
        raise DataConfigError(
            f"data.source='local' reads {data.name} files from a folder: set "
            "--config.data.data_dir=DIR (MNIST IDX .gz files, or the folder holding "
            "cifar-10-batches-py / cifar-100-python)"
        )
    if data.ood_source == "tfds" and data.name not in TFDS_OOD_NAME:
        raise DataConfigError(
            f"tfds has no corrupted version of {data.name!r}: use "
            "--config.data.ood_source=local --config.data.ood_dir=DIR (the official "
            "CIFAR-100-C .npy release) or --config.data.ood_source=generated"
            if data.name == "cifar100"
            else f"tfds has no corrupted version of {data.name!r}: use "
            "--config.data.ood_source=generated"
        )
    if (
        data.ood_source == "tfds"
        and data.name == "mnist"
        and tuple(data.ood_severities) != (MNIST_C_SEVERITY,)
    ):
        raise DataConfigError(
            f"MNIST-C (tfds mnist_corrupted) has one severity per corruption, keyed "
            f"{MNIST_C_SEVERITY}: set --config.data.ood_severities='({MNIST_C_SEVERITY},)', or "
            "use --config.data.ood_source=generated for 5 generated severities"
        )
    if data.ood_source == "local":
        if data.name not in ("cifar10", "cifar100"):
            raise DataConfigError(
                f"data.ood_source='local' reads the CIFAR-10-C / CIFAR-100-C .npy release, not "
                f"{data.name!r}: use --config.data.ood_source=generated (or tfds for MNIST-C)"
            )
        if not data.ood_dir:
            raise DataConfigError(
                "data.ood_source='local' needs --config.data.ood_dir=DIR, the folder with "
                "<corruption>.npy and labels.npy of the CIFAR-10-C / CIFAR-100-C release"
            )


def load_dataset(data: ml_collections.ConfigDict) -> Dataset:
    """Loads the train/test splits and the OOD splits the config names.

    Generated OOD splits depend on the corruption seed (fixed, 0) and the source images only,
    not on the run's seed, so every run of a sweep is evaluated on the same OOD images.
    `ood_max_examples` keeps the first n examples of every OOD split (a fixed subset).
    """
    check_data_config(data)
    train, test = _load_id(data)
    ood = _load_ood(data, test)
    ood = {key: _subsample(split, data.ood_max_examples) for key, split in ood.items()}
    return Dataset(data.name, NUM_CLASSES[data.name], train, test, ood)


def _load_id(data: ml_collections.ConfigDict) -> tuple[Split, Split]:
    if data.source == "embedded":
        from earlyjax.data.digits import load_digits_splits

        return load_digits_splits()
    if data.source == "tfds":
        from earlyjax.data.tfds_source import load_tfds

        return load_tfds(data.name, data.data_dir)
    from earlyjax.data import local_files

    if data.name == "mnist":
        return local_files.load_mnist_idx(data.data_dir)
    return local_files.load_cifar_pickles(data.data_dir, data.name)


def _load_ood(data: ml_collections.ConfigDict, test: Split) -> dict:
    severities = tuple(data.ood_severities)
    if data.ood_source == "none":
        return {}
    if data.ood_source == "generated":
        from earlyjax.data import corruptions

        return corruptions.corrupted_splits(
            _subsample(test, data.ood_max_examples),
            severities=severities,
            seed=0,
            cache_dir=data.cache_dir or os.path.join(default_cache_dir(), "corruptions"),
        )
    if data.ood_source == "tfds":
        from earlyjax.data.tfds_source import load_tfds_ood

        return load_tfds_ood(TFDS_OOD_NAME[data.name], data.data_dir, severities=severities)
    from earlyjax.data.local_files import load_corrupted_npy

    return load_corrupted_npy(
        data.ood_dir, severities=severities, num_classes=NUM_CLASSES[data.name]
    )


__all__ = ["NUM_CLASSES", "DataConfigError", "Dataset", "Split", "load_dataset"]
