"""Local-file readers: MNIST IDX, CIFAR python pickles, CIFAR-10/100-C .npy release."""

import gzip
import os
import pickle

import numpy as np
import pytest

from earlyjax.data import local_files as lf
from earlyjax.data.corruptions import CIFAR10_C_BENCHMARK, CIFAR10_C_CORRUPTIONS

MNIST_TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]

# --------------------------------------------------------------------------------------------
# MNIST IDX
# --------------------------------------------------------------------------------------------


def _idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_mnist(tmp_path, n_train=12, n_test=5, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    data = {}
    for split, n in (("train", n_train), ("test", n_test)):
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        lbls = rng.integers(0, 10, n, dtype=np.uint8)
        img_stem, lbl_stem = lf.MNIST_IDX_FILES[split]
        for stem, arr, magic in ((img_stem, imgs, 2051), (lbl_stem, lbls, 2049)):
            raw = _idx_bytes(arr, magic)
            if gz:
                with gzip.open(tmp_path / (stem + ".gz"), "wb") as f:
                    f.write(raw)
            else:
                (tmp_path / stem).write_bytes(raw)
        data[split] = (imgs, lbls)
    return data


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_roundtrip(tmp_path, gz):
    data = _write_mnist(tmp_path, gz=gz)
    train, test = lf.load_mnist_idx(tmp_path)
    for split, (imgs, lbls) in zip((train, test), (data["train"], data["test"]), strict=True):
        assert split.images.dtype == np.uint8 and split.images.shape == (len(imgs), 28, 28, 1)
        assert split.labels.dtype == np.int32
        np.testing.assert_array_equal(split.images[..., 0], imgs)
        np.testing.assert_array_equal(split.labels, lbls)


def test_mnist_idx_torchvision_layout(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    data = _write_mnist(raw)
    train, _ = lf.load_mnist_idx(tmp_path)
    np.testing.assert_array_equal(train.labels, data["train"][1])


def test_mnist_idx_missing_file_names_it(tmp_path):
    _write_mnist(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(lf.DatasetNotFoundError, match="t10k-labels-idx1-ubyte"):
        lf.load_mnist_idx(tmp_path)


def test_mnist_idx_truncated_is_error(tmp_path):
    _write_mnist(tmp_path, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(lf.DatasetFileError, match="train-images-idx3-ubyte.*truncated"):
        lf.load_mnist_idx(tmp_path)


def test_mnist_idx_truncated_gzip_is_error(tmp_path):
    _write_mnist(tmp_path, gz=True)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    with pytest.raises(lf.DatasetFileError, match="train-images-idx3-ubyte.gz"):
        lf.load_mnist_idx(tmp_path)


def test_mnist_idx_wrong_magic_is_error(tmp_path):
    _write_mnist(tmp_path, gz=False)
    p = tmp_path / "t10k-labels-idx1-ubyte"
    b = bytearray(p.read_bytes())
    b[0:4] = (2051).to_bytes(4, "big")  # an images magic on a labels file
    p.write_bytes(bytes(b))
    with pytest.raises(lf.DatasetFileError, match="magic number 2051, expected 2049"):
        lf.load_mnist_idx(tmp_path)


def test_mnist_idx_count_mismatch_and_label_range(tmp_path):
    _write_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(
        _idx_bytes(np.zeros(4, np.uint8), 2049)
    )  # 4 labels for 5 images
    with pytest.raises(lf.DatasetFileError, match="5 images but .* 4 labels"):
        lf.load_mnist_idx(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(
        _idx_bytes(np.array([0, 1, 2, 3, 10], np.uint8), 2049)
    )
    with pytest.raises(lf.DatasetFileError, match=r"\[0, 10\]"):
        lf.load_mnist_idx(tmp_path)


def test_real_mnist_files(shared_mnist_dir):
    train, test = lf.load_mnist_idx(shared_mnist_dir)
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert np.bincount(train.labels, minlength=10).tolist() == MNIST_TRAIN_CLASS_COUNTS
    assert np.bincount(test.labels, minlength=10).sum() == 10000
    assert train.images.max() == 255 and train.images.min() == 0


# --------------------------------------------------------------------------------------------
# CIFAR pickles
# --------------------------------------------------------------------------------------------


def _write_cifar(root, name, n_per_file, seed=0):
    layout = lf.CIFAR_PICKLE_LAYOUT[name]
    folder = root / layout["folder"]
    folder.mkdir()
    rng = np.random.default_rng(seed)
    written = {}
    for split in ("train", "test"):
        for fname in layout[split]:
            data = rng.integers(0, 256, (n_per_file, 3072), dtype=np.uint8)
            labels = rng.integers(0, layout["num_classes"], n_per_file).tolist()
            d = {b"data": data, layout["label_key"].encode(): labels, b"batch_label": b"x"}
            if name == "cifar100":
                d[b"coarse_labels"] = [0] * n_per_file
            with open(folder / fname, "wb") as f:
                pickle.dump(d, f, protocol=2)
            written[fname] = (data, labels)
    return folder, written


@pytest.fixture
def small_cifar_counts(monkeypatch):
    """Expected counts for tiny files: 2 per CIFAR-10 batch file, 10 per CIFAR-100 file."""
    monkeypatch.setitem(lf.CIFAR_PICKLE_LAYOUT["cifar10"], "counts", {"train": 10, "test": 2})
    monkeypatch.setitem(lf.CIFAR_PICKLE_LAYOUT["cifar100"], "counts", {"train": 10, "test": 10})


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickles(tmp_path, name, small_cifar_counts):
    n_per_file = 2 if name == "cifar10" else 10
    folder, written = _write_cifar(tmp_path, name, n_per_file)
    for where in (tmp_path, folder):  # parent dir or the folder itself
        train, test = lf.load_cifar_pickles(where, name)
        assert train.images.shape == (10, 32, 32, 3) and train.images.dtype == np.uint8
        first = lf.CIFAR_PICKLE_LAYOUT[name]["train"][0]
        data, labels = written[first]
        # channel-first rows -> HWC: pixel (0, 0) of image 0 holds data[0, 0], [1024], [2048]
        np.testing.assert_array_equal(train.images[0, 0, 0], data[0, [0, 1024, 2048]])
        np.testing.assert_array_equal(train.images[0, 0, 1], data[0, [1, 1025, 2049]])
        np.testing.assert_array_equal(train.labels[: len(labels)], labels)
        assert test.labels.dtype == np.int32


def test_cifar_pickles_wrong_count_and_truncated(tmp_path, small_cifar_counts):
    folder, _ = _write_cifar(tmp_path, "cifar10", 3)  # 15 train images, expected 10
    with pytest.raises(lf.DatasetFileError, match="15 images .* expected 10"):
        lf.load_cifar_pickles(tmp_path, "cifar10")
    p = folder / "data_batch_3"
    p.write_bytes(p.read_bytes()[:500])
    with pytest.raises(lf.DatasetFileError, match="data_batch_3"):
        lf.load_cifar_pickles(tmp_path, "cifar10")


def test_cifar_pickles_refuses_code_and_missing(tmp_path):
    with pytest.raises(lf.DatasetNotFoundError, match="cifar-10-python.tar.gz"):
        lf.load_cifar_pickles(tmp_path, "cifar10")
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    with open(folder / "test", "wb") as f:
        pickle.dump({"data": os.system}, f)  # a global outside the allow-list
    (folder / "train").write_bytes((folder / "test").read_bytes())
    with pytest.raises(lf.DatasetFileError, match="refusing to load global"):
        lf.load_cifar_pickles(tmp_path, "cifar100")
    with pytest.raises(ValueError, match="cifar10"):
        lf.load_cifar_pickles(tmp_path, "svhn")


# --------------------------------------------------------------------------------------------
# CIFAR-10-C / CIFAR-100-C .npy release
# --------------------------------------------------------------------------------------------


def _write_c(tmp_path, names, n=4, num_classes=100, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    np.save(tmp_path / "labels.npy", np.tile(labels, 5).astype(np.uint8))
    arrs = {}
    for name in names:
        arr = rng.integers(0, 256, (5 * n, 32, 32, 3), dtype=np.uint8)
        np.save(tmp_path / f"{name}.npy", arr)
        arrs[name] = arr
    return labels, arrs


def test_corrupted_npy_slices_severities(tmp_path):
    labels, arrs = _write_c(tmp_path, ["fog", "snow"])
    out = lf.load_corrupted_npy(tmp_path, ["fog", "snow"], [2, 5])
    assert sorted(out) == [("fog", 2), ("fog", 5), ("snow", 2), ("snow", 5)]
    np.testing.assert_array_equal(out[("fog", 2)].images, arrs["fog"][4:8])
    np.testing.assert_array_equal(out[("snow", 5)].images, arrs["snow"][16:20])
    np.testing.assert_array_equal(out[("fog", 5)].labels, labels)
    assert out[("fog", 5)].labels.dtype == np.int32
    assert not isinstance(out[("fog", 2)].images, np.memmap)


def test_corrupted_npy_defaults_to_the_15_benchmark_corruptions(tmp_path):
    _write_c(tmp_path, CIFAR10_C_CORRUPTIONS, n=1, num_classes=10)  # the release: 19 files
    out = lf.load_corrupted_npy(tmp_path, num_classes=10)
    assert set(out) == {(c, s) for c in CIFAR10_C_BENCHMARK for s in range(1, 6)}
    assert len(lf.load_corrupted_npy(tmp_path, "all", num_classes=10)) == 19 * 5


def test_corrupted_npy_benchmark_needs_only_the_15_files(tmp_path):
    _write_c(tmp_path, CIFAR10_C_BENCHMARK, n=1)
    assert len(lf.load_corrupted_npy(tmp_path, severities=[3])) == 15
    with pytest.raises(lf.DatasetNotFoundError, match="speckle_noise.npy"):
        lf.load_corrupted_npy(tmp_path, "all")


def test_corrupted_npy_errors(tmp_path):
    _write_c(tmp_path, ["fog"])
    with pytest.raises(lf.DatasetNotFoundError, match="snow.npy.*zenodo"):
        lf.load_corrupted_npy(tmp_path, ["snow"])
    with pytest.raises(ValueError, match="severity 6"):
        lf.load_corrupted_npy(tmp_path, ["fog"], [6])
    with pytest.raises(ValueError, match="'foggy'"):
        lf.load_corrupted_npy(tmp_path, ["foggy"])
    with pytest.raises(lf.DatasetFileError, match=r"\[0, 10\)"):
        lf.load_corrupted_npy(tmp_path, ["fog"], num_classes=10)  # labels reach 99
    np.save(tmp_path / "fog.npy", np.zeros((19, 32, 32, 3), np.uint8))  # one image short
    with pytest.raises(lf.DatasetFileError, match="fog.npy.*expected uint8 \\[20"):
        lf.load_corrupted_npy(tmp_path, ["fog"])
    np.save(tmp_path / "fog.npy", np.zeros((20, 32, 32, 3), np.uint8))
    p = tmp_path / "fog.npy"
    p.write_bytes(p.read_bytes()[:-1000])  # truncated
    with pytest.raises(lf.DatasetFileError, match="fog.npy"):
        lf.load_corrupted_npy(tmp_path, ["fog"])
    with pytest.raises(lf.DatasetNotFoundError, match="does not exist"):
        lf.load_corrupted_npy(tmp_path / "nope")


# --------------------------------------------------------------------------------------------
# Through the experiment config (earlyjax.data.load_dataset)
# --------------------------------------------------------------------------------------------


def test_cifar100_config_reads_pickles_and_the_c_release(tmp_path, small_cifar_counts):
    from earlyjax.data import load_dataset
    from experiments.configs.cifar100_rn18 import get_config

    _write_cifar(tmp_path, "cifar100", 10)
    (tmp_path / "c").mkdir()
    _write_c(tmp_path / "c", CIFAR10_C_CORRUPTIONS, n=3)
    config = get_config()
    config.data.source = "local"
    config.data.data_dir = str(tmp_path)
    config.data.ood_dir = str(tmp_path / "c")
    dataset = load_dataset(config.data)
    assert dataset.num_classes == 100 and dataset.train.images.shape == (10, 32, 32, 3)
    assert set(dataset.ood) == {(c, s) for c in CIFAR10_C_BENCHMARK for s in range(1, 6)}
    assert dataset.ood[("fog", 4)].images.shape == (3, 32, 32, 3)
    assert dataset.ood_set == (
        "CIFAR-100-C (.npy release: 15 benchmark corruptions x 5 severities)"
    )
    config.data.ood_corruptions = "all"
    dataset = load_dataset(config.data)
    assert set(dataset.ood) == {(c, s) for c in CIFAR10_C_CORRUPTIONS for s in range(1, 6)}
    assert dataset.ood_set.startswith("CIFAR-100-C (.npy release: 19 corruptions (15 benchmark")
    config.data.ood_corruptions = "spatter,gaussian_noise"
    config.data.ood_severities = (5,)
    assert set(load_dataset(config.data).ood) == {("spatter", 5), ("gaussian_noise", 5)}
    config.data.ood_corruptions = "fog,canny_edges"  # an MNIST-C corruption
    with pytest.raises(ValueError, match="'canny_edges'.*choose 'benchmark'.*jpeg_compression"):
        load_dataset(config.data)


def test_mnist_config_reads_the_real_idx_files(shared_mnist_dir, tmp_path):
    from earlyjax.data import load_dataset
    from experiments.configs.mnist_rn18 import get_config

    config = get_config()
    config.data.source = "local"
    config.data.data_dir = shared_mnist_dir
    config.data.ood_source = "generated"
    config.data.ood_severities = (2,)
    config.data.ood_max_examples = 20
    config.data.cache_dir = str(tmp_path)
    dataset = load_dataset(config.data)
    assert dataset.train.images.shape == (60000, 28, 28, 1)
    assert len(dataset.ood) == 15 and dataset.ood[("fog", 2)].images.shape == (20, 28, 28, 1)
