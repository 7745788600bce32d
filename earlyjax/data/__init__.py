"""Data: sources (embedded digits, tfds, local files), OOD sets, and the input pipeline.

`load_dataset(data_config, seed)` turns the `data` block of an experiment config into a
`Dataset` (train, clean test, OOD splits keyed by (corruption, severity)).
"""

from __future__ import annotations

import os

import ml_collections

from earlyjax.data.base import Dataset, Split

NUM_CLASSES = {"digits": 10, "mnist": 10, "cifar10": 10, "cifar100": 100}


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return os.path.join(base, "earlyjax")


def _subsample(split: Split, max_examples: int | None) -> Split:
    """The first `max_examples` examples (a fixed subset, the same for every run)."""
    if max_examples is None or split.images.shape[0] <= max_examples:
        return split
    return Split(split.images[:max_examples], split.labels[:max_examples])


def load_dataset(data: ml_collections.ConfigDict, seed: int = 0) -> Dataset:
    """Loads the train/test splits and the OOD splits the config names.

    Generated OOD splits depend on the corruption seed (fixed, 0) and the source images only, not
    on the run's seed, so every run of a sweep is evaluated on the same OOD images.
    """
    del seed  # data order is handled by the pipeline; the data itself is fixed
    if data.source == "embedded":
        from earlyjax.data.digits import load_digits_splits

        train, test = load_digits_splits()
    else:
        raise ValueError(
            f"data.source={data.source!r} is not available in this build; use 'embedded'"
        )
    ood = _load_ood(data, test)
    ood = {key: _subsample(split, data.ood_max_examples) for key, split in ood.items()}
    return Dataset(data.name, NUM_CLASSES[data.name], train, test, ood)


def _load_ood(data: ml_collections.ConfigDict, test: Split) -> dict:
    if data.ood_source == "none":
        return {}
    if data.ood_source == "generated":
        from earlyjax.data import corruptions

        names = (
            corruptions.MNIST_C_CORRUPTIONS
            if test.images.shape[-1] == 1
            else corruptions.CIFAR10_C_CORRUPTIONS
        )
        source = _subsample(test, data.ood_max_examples)
        return corruptions.corrupted_splits(
            source,
            names,
            tuple(data.ood_severities),
            seed=0,
            cache_dir=data.cache_dir or default_cache_dir(),
        )
    raise ValueError(f"data.ood_source={data.ood_source!r} is not available in this build")


__all__ = ["NUM_CLASSES", "Dataset", "Split", "load_dataset"]
