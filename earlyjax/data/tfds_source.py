"""TFDS data sources read through ``tfds.data_source`` (ArrayRecord; no TensorFlow needed).

Reading needs the data set prepared once in the ArrayRecord format. Preparing
(`download_and_prepare`) of these data sets does need TensorFlow, reading does not::

    pip install tensorflow-cpu
    tfds build cifar10_corrupted --data_dir=DIR --file_format=array_record

(`tfds build NAME` without a config builds every config; ``NAME/CONFIG`` builds one.)

Data sets:
* ID: ``mnist``, ``cifar10``, ``cifar100`` (train and test splits): :func:`load_tfds`.
* OOD: ``mnist_corrupted`` (MNIST-C: 15 corruptions + ``identity``, one severity each) and
  ``cifar10_corrupted`` (CIFAR-10-C: 19 corruptions x 5 severities, configs like
  ``brightness_1``, test split only; read by default are the 15 benchmark corruptions,
  ``corruptions="all"`` adds the 4 extra ones): :func:`load_tfds_ood`. tfds has no CIFAR-100-C; read
  the official release with :func:`earlyjax.data.local_files.load_corrupted_npy`.

OOD keys use the canonical corruption names of the original releases (those of
:mod:`earlyjax.data.corruptions`): tfds' ``frosted_glass_blur`` is ``glass_blur`` and
``elastic`` is ``elastic_transform``. MNIST-C has a single severity per corruption; its
splits are keyed with severity :data:`MNIST_C_TFDS_SEVERITY` = 3, the level of the
generator's 5-level ladder that equals MNIST-C's published parameters.

Decoding: records are fetched in batches (``__getitems__``, a parallel ArrayRecord read),
but every record is a PNG inside a tf.Example and has to be decoded on its own; this is
done by tfds per record, spread over a thread pool.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Iterable

import numpy as np

from earlyjax.data.base import OODKey, Split, check_split
from earlyjax.data.corruptions import SEVERITIES, select_corruptions

# name -> (image shape, number of classes)
TFDS_ID_DATASETS: dict[str, tuple[tuple[int, int, int], int]] = {
    "mnist": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
}
TFDS_OOD_DATASETS: dict[str, tuple[tuple[int, int, int], int]] = {
    "mnist_corrupted": ((28, 28, 1), 10),
    "cifar10_corrupted": ((32, 32, 3), 10),
}
# Canonical names whose tfds config name differs.
_CIFAR10_C_TFDS_NAME = {"glass_blur": "frosted_glass_blur", "elastic_transform": "elastic"}
MNIST_C_IDENTITY = "identity"
MNIST_C_TFDS_SEVERITY = 3
READ_CHUNK = 2048  # records per batched read


class TfdsNotPreparedError(FileNotFoundError):
    """A tfds data set is not prepared (in the ArrayRecord format) in the data_dir read."""


def tfds_config_name(dataset: str, corruption: str, severity: int) -> str:
    """The tfds name ``dataset/config`` of one OOD split, e.g. ``cifar10_corrupted/fog_3``."""
    if dataset == "mnist_corrupted":
        return f"{dataset}/{corruption}"
    return f"{dataset}/{_CIFAR10_C_TFDS_NAME.get(corruption, corruption)}_{severity}"


def prepare_command(name: str, data_dir: str | None = None) -> str:
    """Shell commands that prepare tfds data set `name` (``dataset`` or ``dataset/config``)."""
    dd = f"'{data_dir}'" if data_dir else "None"
    dd_flag = f" --data_dir={data_dir}" if data_dir else ""
    base = name.split("/")[0]
    every = (
        (
            f"\n  (or `tfds build {base}{dd_flag} --file_format=array_record` for all its "
            "configs at once)"
        )
        if "/" in name
        else ""
    )
    return (
        "Prepare it once (preparing needs TensorFlow; reading does not):\n"
        "  pip install tensorflow-cpu\n"
        f"  tfds build {name}{dd_flag} --file_format=array_record{every}\n"
        "or in Python:\n"
        f"  python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}', "
        f"data_dir={dd}, file_format='array_record').download_and_prepare()\""
    )


def _not_prepared(name: str, split: str, data_dir: str | None, err: Exception) -> Exception:
    import tensorflow_datasets as tfds

    where = data_dir or "the default data_dir (TFDS_DATA_DIR or ~/tensorflow_datasets)"
    state = "is not prepared in"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        where = os.fspath(builder.data_dir)
        if builder.is_prepared():
            fmt = builder.info.file_format
            fmt = getattr(fmt, "value", fmt)
            if fmt in ("array_record", "parquet"):
                state = (
                    f"is prepared in the {fmt} format but could not be read (files "
                    f"incomplete or corrupt? tfds said: {type(err).__name__}: {err}); "
                    "delete and prepare it again, in"
                )
            else:
                state = (
                    f"is prepared in the {fmt} format, but tfds.data_source reads only "
                    "array_record (or parquet). Delete that version folder (or choose "
                    "another data_dir), then prepare it again as below; it is now in"
                )
    except Exception:  # noqa: BLE001 - diagnosis only; the original error is chained
        pass
    return TfdsNotPreparedError(
        f"tfds data set '{name}' (split '{split}') {state} {where}.\n"
        f"{prepare_command(name, data_dir)}"
    )


def read_tfds_split(
    name: str,
    split: str,
    image_shape: tuple[int, int, int],
    num_classes: int,
    data_dir: str | None = None,
    max_workers: int | None = None,
) -> Split:
    """Reads one prepared tfds split (``name`` may be ``dataset/config``) into host memory.

    Returns Split(images uint8 [N, *image_shape], labels int32 [N] in [0, num_classes)).
    Raises TfdsNotPreparedError with the command that prepares it when it is not prepared.
    """
    import tensorflow_datasets as tfds

    try:
        ds = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        n = len(ds)
    except (NotImplementedError, FileNotFoundError, AssertionError, OSError, KeyError) as e:
        raise _not_prepared(name, split, data_dir, e) from e
    images = np.empty((n, *image_shape), np.uint8)
    labels = np.empty((n,), np.int32)

    def read(start: int) -> None:
        keys = list(range(start, min(start + READ_CHUNK, n)))
        for i, ex in zip(keys, ds.__getitems__(keys), strict=True):
            img = np.asarray(ex["image"])
            if img.shape != image_shape:
                raise ValueError(
                    f"{name} {split}: record {i} has image shape {img.shape}, "
                    f"expected {image_shape}"
                )
            images[i] = img
            labels[i] = ex["label"]

    workers = max_workers or min(8, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(read, range(0, n, READ_CHUNK)))  # list() re-raises worker errors
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{name} {split}: labels range over [{labels.min()}, {labels.max()}],"
            f" expected [0, {num_classes})"
        )
    return check_split(Split(images, labels), f"tfds {name} {split}")


def load_tfds(name: str, data_dir: str | None = None) -> tuple[Split, Split]:
    """Reads the train and test splits of ``mnist``, ``cifar10`` or ``cifar100``.

    Returns (train, test): images uint8 [N, H, W, C] (MNIST [N, 28, 28, 1], CIFAR
    [N, 32, 32, 3]), labels int32 [N]. CIFAR-100 labels are the 100 fine labels.
    """
    if name not in TFDS_ID_DATASETS:
        raise ValueError(f"tfds data set {name!r}: choose one of {sorted(TFDS_ID_DATASETS)}")
    shape, k = TFDS_ID_DATASETS[name]
    return (
        read_tfds_split(name, "train", shape, k, data_dir),
        read_tfds_split(name, "test", shape, k, data_dir),
    )


def load_tfds_ood(
    name: str,
    data_dir: str | None = None,
    corruptions: str | Iterable[str] | None = None,
    severities: Iterable[int] | None = None,
) -> dict[OODKey, Split]:
    """Reads the test splits of ``mnist_corrupted`` or ``cifar10_corrupted``.

    `corruptions` is anything :func:`earlyjax.data.corruptions.select_corruptions` takes;
    None (= ``"benchmark"``) reads MNIST-C's 15 corruptions (``identity`` only when named) or
    the 15 benchmark corruptions of CIFAR-10-C, ``"all"`` CIFAR-10-C's 19. `severities`
    defaults to 1..5 for CIFAR-10-C. MNIST-C has one severity, keyed
    :data:`MNIST_C_TFDS_SEVERITY`; `severities` must then be None or contain only that value.

    Returns {(canonical corruption name, severity): Split}.
    """
    if name not in TFDS_OOD_DATASETS:
        hint = (
            (
                " (tfds has no CIFAR-100-C: use earlyjax.data.local_files.load_corrupted_npy "
                "on the official release)"
            )
            if "100" in name
            else ""
        )
        raise ValueError(
            f"tfds OOD data set {name!r}: choose one of {sorted(TFDS_OOD_DATASETS)}{hint}"
        )
    shape, k = TFDS_OOD_DATASETS[name]
    if name == "mnist_corrupted":
        also_valid: tuple[str, ...] = (MNIST_C_IDENTITY,)
        sevs = (MNIST_C_TFDS_SEVERITY,)
        if severities is not None and set(severities) != {MNIST_C_TFDS_SEVERITY}:
            raise ValueError(
                f"severities={tuple(severities)!r}: mnist_corrupted (MNIST-C) has a single "
                f"severity per corruption, keyed {MNIST_C_TFDS_SEVERITY}; pass None or "
                f"({MNIST_C_TFDS_SEVERITY},), or generate a 5-level set with "
                "earlyjax.data.corruptions.corrupted_splits"
            )
    else:
        also_valid = ()
        sevs = tuple(SEVERITIES if severities is None else severities)
        for s in sevs:
            if s not in SEVERITIES:
                raise ValueError(f"severity {s!r}: choose from {SEVERITIES}")
    try:
        names = select_corruptions(corruptions, shape, also_valid)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
    return {
        (c, s): read_tfds_split(tfds_config_name(name, c, s), "test", shape, k, data_dir)
        for c in names
        for s in sevs
    }
