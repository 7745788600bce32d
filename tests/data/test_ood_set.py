"""What an OOD mean covers: the selected corruptions, the set's honest name, and results.json.

Design: "CIFAR-10-C / CIFAR-100-C over the 15 benchmark corruptions x 5 severities unless the
config opts into the 4 extra ones; MNIST-C has one severity per corruption. A generated set is
labelled as generated wherever it is reported."
"""

import json
import os

import numpy as np
import pytest

from earlyjax import data as data_module
from earlyjax.config import ConfigError, default_config
from earlyjax.data import load_dataset, ood_corruptions, ood_set_name
from earlyjax.data.base import Dataset, Split
from earlyjax.data.corruptions import CIFAR10_C_BENCHMARK, CIFAR10_C_CORRUPTIONS
from earlyjax.data.local_files import DatasetFileError
from earlyjax.metric_log import RunFileError
from earlyjax.train import format_results, train_and_evaluate
from earlyjax.validation import validate
from experiments import cli


def _data(name="digits", source="embedded", ood_source="generated", **fields):
    c = default_config()
    c.data.name, c.data.source, c.data.ood_source = name, source, ood_source
    if ood_source == "local":
        c.data.ood_dir = "/release"
    for k, v in fields.items():
        c.data[k] = v
    return c


@pytest.mark.parametrize(
    "kind,expected",
    [
        (
            ("mnist", "tfds", "tfds", {"ood_severities": (3,)}),
            "MNIST-C (tfds mnist_corrupted: 15 corruptions x its single severity, keyed 3)",
        ),
        (
            ("cifar10", "tfds", "tfds", {}),
            "CIFAR-10-C (tfds cifar10_corrupted: 15 benchmark corruptions x 5 severities)",
        ),
        (
            ("cifar100", "local", "local", {"ood_corruptions": "all"}),
            "CIFAR-100-C (.npy release: 19 corruptions (15 benchmark + 4 extra) x 5 severities)",
        ),
        (
            ("digits", "embedded", "generated", {}),
            "MNIST-C-style (generated from scikit-learn digits: 15 corruptions x 5 severities)",
        ),
        (
            ("mnist", "local", "generated", {"ood_severities": (2, 4), "ood_max_examples": 50}),
            "MNIST-C-style (generated: 15 corruptions x severities 2, 4; first 50 images of each "
            "split)",
        ),
        (
            ("cifar10", "tfds", "generated", {}),
            "CIFAR-10-C-style (generated: 15 benchmark corruptions x 5 severities; frost from a "
            "procedural texture)",
        ),
        (
            ("cifar100", "local", "generated", {"ood_corruptions": "fog,snow"}),
            "CIFAR-100-C-style (generated: 2 of the 19 corruptions (fog, snow) x 5 severities)",
        ),
        (("cifar10", "tfds", "none", {}), "none (data.ood_source='none')"),
    ],
)
def test_ood_set_name_says_what_the_set_is(kind, expected):
    name, source, ood_source, fields = kind
    c = _data(name, source, ood_source, **fields)
    if name != "digits":
        c.data.data_dir = "/data"
    validate(c)
    assert ood_set_name(c.data) == expected


def test_generated_sets_are_never_called_by_the_published_name():
    for name, source in (("digits", "embedded"), ("mnist", "local"), ("cifar10", "local")):
        c = _data(name, source)
        got = ood_set_name(c.data)
        assert "-style (generated" in got, got
        assert not got.startswith(("MNIST-C (", "CIFAR-10-C (")), got


def test_benchmark_is_the_default_and_all_opts_in():
    c = _data("cifar10", "tfds", "tfds")
    assert c.data.ood_corruptions == "benchmark"
    assert ood_corruptions(c.data) == CIFAR10_C_BENCHMARK
    c.data.ood_corruptions = "all"
    assert ood_corruptions(c.data) == CIFAR10_C_CORRUPTIONS
    c.data.ood_corruptions = "speckle_noise, fog"
    assert ood_corruptions(c.data) == ("speckle_noise", "fog")
    c.data.ood_source = "none"
    assert ood_corruptions(c.data) == ()


@pytest.mark.parametrize(
    "name,source,spec,match",
    [
        ("cifar10", "tfds", "fog,snowy", r"'snowy'.*'benchmark'.*'all'.*jpeg_compression"),
        ("mnist", "tfds", "gaussian_noise", r"'gaussian_noise'.*MNIST-C.*canny_edges"),
        ("digits", "embedded", "", "no corruption"),
        ("cifar100", "local", "fog,fog", "'fog' named more than once"),
    ],
)
def test_validate_refuses_a_bad_selection(name, source, spec, match):
    c = _data(name, source, "tfds" if source == "tfds" else "generated", ood_corruptions=spec)
    c.data.data_dir = None if name == "digits" else "/data"
    if name == "mnist":
        c.data.ood_severities = (3,)
    with pytest.raises(ConfigError, match=f"data.ood_corruptions={spec!r}.*{match}"):
        validate(c)


def test_loaded_dataset_carries_its_name_and_only_the_selected_corruptions(tmp_path):
    c = _data(ood_corruptions="fog,stripe", ood_severities=(1, 5), ood_max_examples=4)
    c.data.cache_dir = str(tmp_path)
    dataset = load_dataset(c.data)
    assert set(dataset.ood) == {("fog", 1), ("fog", 5), ("stripe", 1), ("stripe", 5)}
    assert dataset.ood_set == (
        "MNIST-C-style (generated from scikit-learn digits: 2 of the 15 corruptions (fog, "
        "stripe) x severities 1, 5; first 4 images of each split)"
    )


@pytest.mark.slow  # ~13 s: two trained runs; the OOD set's naming has fast tests here
def test_results_json_and_summary_say_what_the_ood_mean_covers(tiny_config, tmp_path):
    tiny_config.data.ood_source = "generated"
    tiny_config.data.ood_corruptions = "fog,stripe"
    tiny_config.data.ood_severities = (2, 3)
    tiny_config.data.ood_max_examples = 8
    tiny_config.data.cache_dir = str(tmp_path / "cache")
    tiny_config.total_steps = 2
    tiny_config.unfreeze.k = None
    workdir = str(tmp_path / "run")
    results = train_and_evaluate(tiny_config, workdir)
    with open(os.path.join(workdir, "results.json")) as f:
        saved = json.load(f)
    cells = ["fog/2", "fog/3", "stripe/2", "stripe/3"]
    expected_set = (
        "MNIST-C-style (generated from scikit-learn digits: 2 of the 15 corruptions (fog, "
        "stripe) x severities 2, 3; first 8 images of each split)"
    )
    for r in (results, saved):
        assert r["ood_cells"] == cells
        assert r["ood_set"] == expected_set
    table = [saved["ood_table"][c][s] for c, s in (cell.split("/") for cell in cells)]
    assert saved["ood_accuracy"] == pytest.approx(np.mean(table))
    ood_line = format_results(saved).splitlines()[1]
    assert ood_line == (
        f"OOD accuracy: {saved['ood_accuracy']:.2f}%  (mean over the 4 splits of {expected_set})"
    )


def test_format_results_of_a_dataset_built_by_hand_without_an_ood_set_name():
    results = {
        "id_accuracy": 90.0,
        "dataset": "digits",
        "ood_accuracy": 50.0,
        "ood_table": {"fog": {"1": 40.0, "2": 60.0}},
        "ood_set": None,
        "final_solution": None,
    }
    assert format_results(results).splitlines()[1] == (
        "OOD accuracy: 50.00%  (mean over 2 corruption x severity splits)"
    )


@pytest.mark.slow  # ~20 s: a trained run; the OOD set naming has fast tests here
def test_a_finished_run_whose_results_lack_ood_set_is_refused_in_one_line(
    tiny_config, tiny_dataset, tmp_path
):
    """results.json without `ood_set` was never released: refused, naming the file and the fix."""
    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny_config, workdir, dataset=tiny_dataset)
    path = os.path.join(workdir, "results.json")
    with open(path) as f:
        results = json.load(f)
    del results["ood_set"]
    with open(path, "w") as f:
        json.dump(results, f)
    with pytest.raises(RunFileError, match="has no ood_set; delete it and rerun"):
        train_and_evaluate(tiny_config, workdir, dataset=tiny_dataset)


def test_a_bad_selection_is_refused_before_anything_is_written(tiny_config, tmp_path):
    tiny_config.data.ood_source = "generated"
    tiny_config.data.ood_corruptions = "fog,speckle_noise"  # a CIFAR corruption, on digits
    tiny_config.data.cache_dir = str(tmp_path / "cache")
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError, match="'speckle_noise'"):
        train_and_evaluate(tiny_config, str(workdir))
    assert not workdir.exists() and not (tmp_path / "cache").exists()


def cifar_like(n, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return Split(images, rng.integers(0, 10, n).astype(np.int32))


@pytest.fixture
def cifar10_local_ood(tmp_path, monkeypatch):
    """A CIFAR-10 config reading OOD .npy files from tmp_path/c (ID data: 12 fake images)."""
    from experiments.configs.cifar10_rn18 import get_config

    monkeypatch.setattr(data_module, "_load_id", lambda data: (cifar_like(12), cifar_like(4, 1)))
    config = get_config()
    config.data.ood_source = "local"
    config.data.ood_dir = str(tmp_path / "c")
    config.data.ood_corruptions = "fog"
    (tmp_path / "c").mkdir()
    return config


def write_c(directory, shape, labels):
    n = len(labels)
    np.save(directory / "labels.npy", np.tile(labels, 5).astype(np.int64))
    np.save(directory / "fog.npy", np.zeros((5 * n, *shape), np.uint8))


def test_ood_files_of_another_data_set_are_refused_before_anything_is_written(
    cifar10_local_ood, tmp_path
):
    c_dir = tmp_path / "c"
    write_c(c_dir, (28, 28, 1), np.arange(4))  # MNIST-C-sized images for a CIFAR-10 run
    with pytest.raises(DatasetFileError) as info:
        data_module.load_dataset(cifar10_local_ood.data)
    msg = str(info.value)
    assert "OOD split fog/severity 1" in msg and "(4, 28, 28, 1)" in msg and "32, 32, 3" in msg
    assert f"--config.data.ood_dir={c_dir} must hold the CIFAR-10-C release" in msg
    assert "\n" not in msg and issubclass(DatasetFileError, cli.user_errors())
    workdir = tmp_path / "run"
    with pytest.raises(DatasetFileError, match="fog/severity 1"):
        train_and_evaluate(cifar10_local_ood, str(workdir))
    assert not workdir.exists()
    write_c(c_dir, (32, 32, 3), np.arange(4))
    assert data_module.load_dataset(cifar10_local_ood.data).ood[("fog", 1)].images.shape == (
        4,
        32,
        32,
        3,
    )


def test_every_ood_split_is_checked_against_the_id_data():
    """Whatever the source (a Dataset built by hand too): dtype, shape, label count and range."""
    train, test = cifar_like(8), cifar_like(4, 1)

    def build(images, labels, num_classes=10):
        return Dataset("cifar10", num_classes, train, test, {("fog", 2): Split(images, labels)})

    good = test.images
    build(good, test.labels)
    cases = [
        (good.astype(np.float32), test.labels, r"images are float32 \(4, 32, 32, 3\)"),
        (good[:, :28, :28], test.labels, r"images are uint8 \(4, 28, 28, 3\)"),
        (good[:0], test.labels[:0], r"images are uint8 \(0, 32, 32, 3\).*n >= 1"),
        (good, test.labels[:3], r"labels are int32 \(3,\), expected 4 integer labels"),
        (good, test.labels.astype(np.float32), "labels are float32"),
        (good, np.full(4, 10, np.int32), r"labels range over \[10, 10\].*10 classes"),
    ]
    for images, labels, match in cases:
        with pytest.raises(DatasetFileError, match=r"cifar10 OOD split fog/severity 2: " + match):
            build(images, labels)
