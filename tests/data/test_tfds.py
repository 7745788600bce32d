"""tfds sources through `tfds.data_source`, exercised with `tfds.testing.mock_data`.

No TensorFlow and no network: the mock replaces the ArrayRecord files with deterministic
random examples of the real feature shapes, and everything else (builder lookup, config
names, the data source, our batched read and checks) is the real code path.
"""

import numpy as np
import pytest
import tensorflow_datasets as tfds  # a dependency of earlyjax: a broken install fails here

from earlyjax.data import tfds_source as ts
from earlyjax.data.corruptions import (
    CIFAR10_C_BENCHMARK,
    CIFAR10_C_CORRUPTIONS,
    MNIST_C_CORRUPTIONS,
)

pytestmark = pytest.mark.usefixtures("small_chunks")


@pytest.mark.parametrize(
    "name,shape,k",
    [("mnist", (28, 28, 1), 10), ("cifar10", (32, 32, 3), 10), ("cifar100", (32, 32, 3), 100)],
)
def test_load_tfds_shapes_and_labels(mock_tfds, name, shape, k):
    with mock_tfds(num_examples=7):
        train, test = ts.load_tfds(name, data_dir="/nonexistent")
    for split in (train, test):
        assert split.images.shape == (7, *shape) and split.images.dtype == np.uint8
        assert split.labels.shape == (7,) and split.labels.dtype == np.int32
        assert split.labels.min() >= 0 and split.labels.max() < k
    assert train.images.std() > 0  # decoded random examples, not zeros


def test_read_matches_per_record_access(mock_tfds):
    with mock_tfds(num_examples=8):
        split = ts.read_tfds_split("mnist", "test", (28, 28, 1), 10)
        ds = tfds.data_source("mnist", split="test", download=False)
        for i in range(8):
            np.testing.assert_array_equal(split.images[i], ds[i]["image"])
            assert split.labels[i] == ds[i]["label"]


def test_cifar10_corrupted_defaults_to_the_15_benchmark_corruptions(mock_tfds):
    with mock_tfds(num_examples=2):
        ood = ts.load_tfds_ood("cifar10_corrupted")
    assert len(ood) == 15 * 5
    assert set(ood) == {(c, s) for c in CIFAR10_C_BENCHMARK for s in range(1, 6)}
    assert not {"speckle_noise", "gaussian_blur", "spatter", "saturate"} & {c for c, _ in ood}
    for split in ood.values():
        assert split.images.shape == (2, 32, 32, 3) and split.labels.dtype == np.int32


def test_cifar10_corrupted_all_95_configs(mock_tfds):
    with mock_tfds(num_examples=2):
        ood = ts.load_tfds_ood("cifar10_corrupted", corruptions="all")
        chosen = ts.load_tfds_ood("cifar10_corrupted", corruptions="spatter,fog", severities=[2])
    assert len(ood) == 95
    assert set(ood) == {(c, s) for c in CIFAR10_C_CORRUPTIONS for s in range(1, 6)}
    assert set(chosen) == {("spatter", 2), ("fog", 2)}


def test_cifar10_corrupted_config_names_exist():
    # Canonical names map onto the real tfds configs (frosted_glass_blur, elastic, ...).
    configs = {c.name for c in tfds.builder_cls("cifar10_corrupted").BUILDER_CONFIGS}
    wanted = {
        ts.tfds_config_name("cifar10_corrupted", c, s).split("/")[1]
        for c in CIFAR10_C_CORRUPTIONS
        for s in range(1, 6)
    }
    assert wanted == configs
    mnist = {c.name for c in tfds.builder_cls("mnist_corrupted").BUILDER_CONFIGS}
    assert mnist == set(MNIST_C_CORRUPTIONS) | {ts.MNIST_C_IDENTITY}


def test_mnist_corrupted_severity_mapping(mock_tfds):
    with mock_tfds(num_examples=3):
        ood = ts.load_tfds_ood("mnist_corrupted", corruptions=["fog", "identity"])
        assert set(ood) == {("fog", 3), ("identity", 3)}
        assert ood[("fog", 3)].images.shape == (3, 28, 28, 1)
        full = ts.load_tfds_ood("mnist_corrupted", severities=[3])
        assert set(full) == {(c, 3) for c in MNIST_C_CORRUPTIONS}  # identity not by default


def test_ood_argument_errors(mock_tfds):
    with pytest.raises(ValueError, match="single severity"):
        ts.load_tfds_ood("mnist_corrupted", severities=[1, 2])
    with pytest.raises(ValueError, match="severity 0"):
        ts.load_tfds_ood("cifar10_corrupted", severities=[0])
    with pytest.raises(ValueError, match="'frosted'"):
        ts.load_tfds_ood("cifar10_corrupted", corruptions=["frosted"])
    with pytest.raises(ValueError, match="no CIFAR-100-C.*load_corrupted_npy"):
        ts.load_tfds_ood("cifar100_corrupted")
    with pytest.raises(ValueError, match="choose one of"):
        ts.load_tfds("svhn_cropped")


def test_not_prepared_gives_prepare_command(tmp_path):
    with pytest.raises(ts.TfdsNotPreparedError) as e:
        ts.load_tfds_ood(
            "cifar10_corrupted", data_dir=str(tmp_path), corruptions=["fog"], severities=[2]
        )
    msg = str(e.value)
    assert "is not prepared in" in msg and str(tmp_path) in msg
    assert "pip install tensorflow-cpu" in msg
    assert (
        f"tfds build cifar10_corrupted/fog_2 --data_dir={tmp_path} "
        "--file_format=array_record" in msg
    )
    assert "file_format='array_record').download_and_prepare()" in msg


def test_prepare_command_cli_flags_exist():
    # The CLI flags named in the message are real flags of this tfds version's `tfds build`.
    from tensorflow_datasets.scripts.cli import cli_utils

    fields = {
        f
        for cls in (cli_utils.PathOptions, cli_utils.GenerationOptions)
        for f in cls.__dataclass_fields__
    }
    assert {"data_dir", "file_format"} <= fields
    assert "array_record" in [f.value for f in tfds.core.file_adapters.FileFormat]


def test_no_tensorflow_was_imported():
    # Last in this file: nothing above (mocked reads included) imported TensorFlow.
    import sys

    assert "tensorflow" not in sys.modules or sys.modules["tensorflow"] is None


def _paper_config(name):
    import importlib

    return importlib.import_module(f"experiments.configs.{name}").get_config()


@pytest.mark.parametrize(
    "config_name,num_ood,ood_set",
    [
        ("mnist_rn18", 15, "MNIST-C (tfds mnist_corrupted: 15 corruptions x its single severity"),
        ("cifar10_rn18", 15 * 5, "CIFAR-10-C (tfds cifar10_corrupted: 15 benchmark corruptions"),
    ],
)
def test_paper_configs_load_id_and_ood_through_tfds(mock_tfds, config_name, num_ood, ood_set):
    from earlyjax.data import load_dataset

    config = _paper_config(config_name)
    with mock_tfds(num_examples=6):
        dataset = load_dataset(config.data)
    assert dataset.train.images.shape[0] == 6
    assert len(dataset.ood) == num_ood
    assert dataset.ood_set.startswith(ood_set)
    assert {s for _, s in dataset.ood} == set(config.data.ood_severities)
    assert all(split.images.shape[1:] == dataset.image_shape for split in dataset.ood.values())


def test_cifar100_has_no_tfds_ood_and_the_error_says_what_to_use():
    from earlyjax.config import ConfigError
    from earlyjax.validation import validate

    config = _paper_config("cifar100_rn18")
    config.data.ood_source = "tfds"
    with pytest.raises(ConfigError, match="ood_source=local --config.data.ood_dir=DIR"):
        validate(config)


def test_mnist_c_from_tfds_needs_its_single_severity():
    from earlyjax.config import ConfigError
    from earlyjax.validation import validate

    config = _paper_config("mnist_rn18")
    config.data.ood_severities = (1, 2)
    with pytest.raises(ConfigError, match=r"ood_severities='\(3,\)'"):
        validate(config)


@pytest.mark.parametrize(
    "spec,names",
    [
        ("all", CIFAR10_C_CORRUPTIONS),
        ("saturate, fog", ("saturate", "fog")),
    ],
)
def test_cifar10_config_opts_into_extra_corruptions(mock_tfds, spec, names):
    from earlyjax.data import load_dataset
    from earlyjax.validation import validate

    config = _paper_config("cifar10_rn18")
    config.data.ood_severities = (1, 5)
    config.data.ood_corruptions = spec
    validate(config)
    with mock_tfds(num_examples=2):
        dataset = load_dataset(config.data)
    assert set(dataset.ood) == {(c, s) for c in names for s in (1, 5)}


def test_cifar10_config_refuses_an_unknown_corruption_before_reading(monkeypatch):
    from earlyjax.config import ConfigError
    from earlyjax.data import load_dataset
    from earlyjax.validation import validate

    monkeypatch.setattr(ts, "read_tfds_split", lambda *a, **k: pytest.fail("read"))
    config = _paper_config("cifar10_rn18")
    config.data.ood_corruptions = "fog,frosted_glass_blur"
    with pytest.raises(ConfigError, match="unknown corruption.*'frosted_glass_blur'") as e:
        validate(config)
    assert "glass_blur, motion_blur" in str(e.value) and "'all'" in str(e.value)
    with pytest.raises(ValueError, match="'frosted_glass_blur'"):
        load_dataset(config.data)
