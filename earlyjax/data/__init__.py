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
ood_       benchmark (default)                      CIFAR-10-C / CIFAR-100-C: the 15 benchmark
corruptions                                         corruptions of Hendrycks & Dietterich;
                                                    MNIST-C: its 15
           all                                      CIFAR: the 19 (+ speckle_noise,
                                                    gaussian_blur, spatter, saturate); MNIST-C:
                                                    its 15 (it has no extra ones)
           "fog,snow" (names, comma-separated)      those corruptions only
========== ======================================== ==========================================

Every OOD source reads or generates only the selected corruptions, so the OOD mean covers
exactly them. `ood_set_name(data_config)` says what the OOD set is, as results report it: the
published set read from tfds or the .npy release ("CIFAR-10-C (tfds cifar10_corrupted: 15
benchmark corruptions x 5 severities)"), or a generated look-alike ("MNIST-C-style (generated
from scikit-learn digits: 15 corruptions x 5 severities)": MNIST-C itself has one severity per
corruption, and the generated CIFAR frost uses a procedural texture).
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np

from earlyjax.data.base import Dataset, Split
from earlyjax.data.corruptions import (
    CIFAR10_C_BENCHMARK,
    CIFAR10_C_CORRUPTIONS,
    CIFAR_SHAPE,
    MNIST_C_CORRUPTIONS,
    MNIST_SHAPE,
    SEVERITIES,
    select_corruptions,
)
from earlyjax.data.tfds_source import MNIST_C_TFDS_SEVERITY as MNIST_C_SEVERITY

# The image data sets (config.data.name), with their classes; and where data.source and
# data.ood_source may read them from (the table above).
NUM_CLASSES = {"digits": 10, "mnist": 10, "cifar10": 10, "cifar100": 100}
DATA_SOURCES = ("embedded", "tfds", "local")
OOD_SOURCES = ("generated", "tfds", "local", "none")
# Training examples of the published data sets (for estimates made without reading them;
# MNLI: tfds multi_nli's train split).
TRAIN_EXAMPLES = {"mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000, "mnli": 392_702}
TFDS_OOD_NAME = {"mnist": "mnist_corrupted", "cifar10": "cifar10_corrupted"}
# The corruption set of each data set's images (generated, tfds or .npy alike).
IMAGE_SHAPE = {
    "digits": MNIST_SHAPE,
    "mnist": MNIST_SHAPE,
    "cifar10": CIFAR_SHAPE,
    "cifar100": CIFAR_SHAPE,
}
# What a generated OOD set of each data set is called: it resembles, but is not, the published set.
GENERATED_STYLE = {
    "digits": "MNIST-C-style (generated from scikit-learn digits",
    "mnist": "MNIST-C-style (generated",
    "cifar10": "CIFAR-10-C-style (generated",
    "cifar100": "CIFAR-100-C-style (generated",
}


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
    """Raises DataConfigError for source/OOD combinations that cannot work, before any I/O
    (`earlyjax.validation.validate` calls it with the config's other checks)."""
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
    if data.name in IMAGE_SHAPE:
        _selected_corruptions(data)  # refuses unknown names, listing the valid ones


def load_dataset(data: ml_collections.ConfigDict, *, checked: bool = False) -> Dataset:
    """Loads the train/test splits and the OOD splits the config names.

    Generated OOD splits depend on the corruption seed (fixed, 0) and the source images only,
    not on the run's seed, so every run of a sweep is evaluated on the same OOD images.
    `ood_max_examples` keeps the first n examples of every OOD split (a fixed subset).

    The data block is checked first (`check_data_config`: nothing is read for a combination
    that cannot work), unless `checked`: a run's config, which `earlyjax.validation.validate`
    has checked, is not checked again. The OOD splits are checked against the ID data once,
    by `Dataset`, with the fix that fits their source.
    """
    if not checked:
        check_data_config(data)
    train, test = _load_id(data)
    ood = _load_ood(data, test)
    ood = {key: _subsample(split, data.ood_max_examples) for key, split in ood.items()}
    num_classes, set_name = NUM_CLASSES[data.name], ood_set_name(data)
    if data.classes:
        classes = tuple(data.classes)
        train, test = select_classes(train, classes), select_classes(test, classes)
        ood = {key: select_classes(split, classes) for key, split in ood.items()}
        num_classes = len(classes)
    return Dataset(data.name, num_classes, train, test, ood, set_name, ood_fix=_ood_fix(data))


def select_classes(split: Split, classes: tuple[int, ...]) -> Split:
    """The examples of `classes` (in their order in the split), class `classes[i]` relabelled
    i: one data set split into several tasks (`data.classes`). An OOD split capped by
    `ood_max_examples` keeps those of its first examples that are of these classes."""
    keep = np.isin(split.labels, classes)
    relabel = np.full(max(int(np.max(split.labels)), max(classes)) + 1, -1, np.int32)
    relabel[list(classes)] = np.arange(len(classes), dtype=np.int32)
    return Split(split.images[keep], relabel[split.labels[keep]])


def _ood_fix(data: ml_collections.ConfigDict) -> str:
    """What to change when the OOD splits do not fit the ID data (check_ood_splits)."""
    if data.ood_source == "local":
        release = "CIFAR-100-C" if data.name == "cifar100" else "CIFAR-10-C"
        return (
            f"--config.data.ood_dir={data.ood_dir} must hold the {release} release (the "
            f"corrupted {data.name} test set), not another data set's; or use "
            "--config.data.ood_source=generated"
        )
    if data.ood_source == "tfds":
        return (
            f"the tfds {TFDS_OOD_NAME[data.name]} under data_dir={data.data_dir} is not the "
            f"corrupted {data.name} test set: prepare it again, or use "
            "--config.data.ood_source=generated"
        )
    return (
        "the generated OOD cache does not fit this data set: delete "
        f"{data.cache_dir or os.path.join(default_cache_dir(), 'corruptions')} and rerun"
    )


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
    names = ood_corruptions(data)
    if data.ood_source == "none":
        return {}
    if data.ood_source == "generated":
        from earlyjax.data import corruptions

        return corruptions.corrupted_splits(
            _subsample(test, data.ood_max_examples),
            names=names,
            severities=severities,
            seed=0,
            cache_dir=data.cache_dir or os.path.join(default_cache_dir(), "corruptions"),
        )
    if data.ood_source == "tfds":
        from earlyjax.data.tfds_source import load_tfds_ood

        return load_tfds_ood(
            TFDS_OOD_NAME[data.name], data.data_dir, corruptions=names, severities=severities
        )
    from earlyjax.data.local_files import load_corrupted_npy

    return load_corrupted_npy(
        data.ood_dir, corruptions=names, severities=severities, num_classes=NUM_CLASSES[data.name]
    )


def _corruption_spec(data: ml_collections.ConfigDict) -> str | tuple[str, ...]:
    """data.ood_corruptions, a tuple when it names corruptions."""
    spec = data.ood_corruptions
    return tuple(spec) if isinstance(spec, list) else spec


def _selected_corruptions(data: ml_collections.ConfigDict) -> tuple[str, ...]:
    spec = _corruption_spec(data)
    ok = isinstance(spec, str) or (
        isinstance(spec, tuple) and all(isinstance(n, str) for n in spec)
    )
    try:
        if not ok:
            raise ValueError("expected a string: 'benchmark', 'all' or comma-separated names")
        return select_corruptions(spec, IMAGE_SHAPE[data.name])
    except ValueError as e:
        raise DataConfigError(
            f"data.ood_corruptions={spec!r} ({data.name}): {e}. On the command line: "
            "--config.data.ood_corruptions=benchmark (or all, or names separated by commas)"
        ) from None


def ood_corruptions(data: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The corruption names the OOD splits of `data` (the config's data block) cover.

    data.ood_corruptions resolved for the data set's images: "benchmark" (default) is the 15
    benchmark corruptions of CIFAR-10-C / CIFAR-100-C (Hendrycks & Dietterich) or MNIST-C's 15;
    "all" adds CIFAR's 4 extra ones (speckle_noise, gaussian_blur, spatter, saturate; MNIST-C
    has none); "fog,snow" (or a tuple of names) selects those. () when ood_source is "none".
    Raises DataConfigError naming the valid choices.
    """
    names = _selected_corruptions(data)
    return () if data.ood_source == "none" else names


def _describe_corruptions(names: tuple[str, ...], cifar: bool) -> str:
    if cifar and set(names) == set(CIFAR10_C_BENCHMARK):
        return "15 benchmark corruptions"
    if cifar and set(names) == set(CIFAR10_C_CORRUPTIONS):
        return "19 corruptions (15 benchmark + 4 extra)"
    if not cifar and set(names) == set(MNIST_C_CORRUPTIONS):
        return "15 corruptions"
    listed = f" ({', '.join(names)})" if len(names) <= 5 else ""
    return f"{len(names)} of the {19 if cifar else 15} corruptions{listed}"


def _describe_severities(severities: tuple[int, ...]) -> str:
    if sorted(severities) == list(SEVERITIES):
        return "5 severities"
    if len(severities) == 1:
        return f"severity {severities[0]}"
    return f"severities {', '.join(map(str, sorted(severities)))}"


def ood_set_name(data: ml_collections.ConfigDict) -> str:
    """What the OOD set of `data` (the config's data block) is, as results report it.

    E.g. "MNIST-C (tfds mnist_corrupted: 15 corruptions x its single severity, keyed 3)",
    "CIFAR-10-C (tfds cifar10_corrupted: 15 benchmark corruptions x 5 severities)",
    "CIFAR-100-C (.npy release: 19 corruptions (15 benchmark + 4 extra) x 5 severities)",
    "MNIST-C-style (generated from scikit-learn digits: 15 corruptions x 5 severities)",
    "CIFAR-10-C-style (generated: 15 benchmark corruptions x 5 severities; frost from a
    procedural texture)". A generated set is never called by the published set's name: MNIST-C
    has one severity per corruption where the generator makes five, and the generated CIFAR
    frost is not the published one. Ends with "; first N images of each split" when
    data.ood_max_examples subsamples.
    """
    if data.ood_source == "none":
        return "none (data.ood_source='none')"
    names = ood_corruptions(data)
    cifar = IMAGE_SHAPE[data.name] == CIFAR_SHAPE
    what = _describe_corruptions(names, cifar)
    sevs = _describe_severities(tuple(data.ood_severities))
    notes = ""
    if data.ood_source == "tfds" and data.name == "mnist":
        head = "MNIST-C (tfds mnist_corrupted"
        sevs = f"its single severity, keyed {MNIST_C_SEVERITY}"
    elif data.ood_source == "tfds":
        head = f"CIFAR-10-C (tfds {TFDS_OOD_NAME[data.name]}"
    elif data.ood_source == "local":
        head = f"{'CIFAR-100-C' if data.name == 'cifar100' else 'CIFAR-10-C'} (.npy release"
    else:
        head = GENERATED_STYLE[data.name]
        if cifar and "frost" in names:
            notes = "; frost from a procedural texture"
    if data.ood_max_examples is not None:
        notes += f"; first {data.ood_max_examples} images of each split"
    return f"{head}: {what} x {sevs}{notes})"


__all__ = [
    "NUM_CLASSES",
    "select_classes",
    "DataConfigError",
    "Dataset",
    "Split",
    "load_dataset",
    "ood_corruptions",
    "ood_set_name",
]
