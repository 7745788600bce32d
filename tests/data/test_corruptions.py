"""Corruption generator: shapes, determinism, severity behaviour, errors, on-disk cache."""

import os

import numpy as np
import pytest

from earlyjax.data import corruptions as C
from earlyjax.data.base import Split

NOISE = {
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "glass_blur",
    "motion_blur",
    "snow",
    "frost",
    "fog",
    "spatter",
    "elastic_transform",
    "shear",
    "rotate",
    "translate",
    "dotted_line",
    "zigzag",
}


def _digits(n: int = 6) -> np.ndarray:
    """Digit-like 28x28 gray images: a bright blob/ring on black, like MNIST."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:28, 0:28]
    out = np.zeros((n, 28, 28, 1), np.uint8)
    for i in range(n):
        cy, cx, r = rng.uniform(11, 17), rng.uniform(11, 17), rng.uniform(5, 8)
        d = np.hypot(yy - cy, xx - cx)
        out[i, ..., 0] = np.clip(255 * np.exp(-((d - r) ** 2) / 4), 0, 255).astype(np.uint8)
    return out


def _photos(n: int = 4) -> np.ndarray:
    """Smooth colour 32x32 images with an object, values spread over 0..255."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    out = np.empty((n, 32, 32, 3), np.uint8)
    for i in range(n):
        base = rng.uniform(0.2, 0.8, 3) + 0.3 * np.stack([xx, yy, xx * yy], -1) - 0.15
        base[8:24, 10:22] = rng.uniform(0, 1, 3)
        out[i] = np.clip(base * 255, 0, 255).astype(np.uint8)
    return out


MNIST = _digits()
CIFAR = _photos()


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


@pytest.mark.parametrize("name", C.MNIST_C_CORRUPTIONS)
def test_mnist_c_shape_dtype_change_determinism(name):
    outs = [C.corrupt(MNIST, name, s, seed=3) for s in C.SEVERITIES]
    for y in outs:
        assert y.shape == MNIST.shape and y.dtype == np.uint8
        assert _mad(y, MNIST) > 0.5, name
    np.testing.assert_array_equal(C.corrupt(MNIST, name, 3, seed=3), outs[2])
    assert len({o.tobytes() for o in outs}) == 5  # five distinct levels


@pytest.mark.parametrize("name", C.CIFAR10_C_CORRUPTIONS)
def test_cifar10_c_shape_dtype_change_determinism(name):
    outs = [C.corrupt(CIFAR, name, s, seed=3) for s in C.SEVERITIES]
    for s, y in zip(C.SEVERITIES, outs, strict=True):
        assert y.shape == CIFAR.shape and y.dtype == np.uint8
        if not (name in ("defocus_blur", "gaussian_blur", "pixelate") and s == 1):
            assert _mad(y, CIFAR) > 0.2, (name, s)  # mildest blurs barely change smooth images
    np.testing.assert_array_equal(C.corrupt(CIFAR, name, 5, seed=3), outs[4])


@pytest.mark.parametrize("name", sorted(NOISE & set(C.CIFAR10_C_CORRUPTIONS)))
def test_random_corruptions_depend_on_seed(name):
    assert not np.array_equal(C.corrupt(CIFAR, name, 4, seed=0), C.corrupt(CIFAR, name, 4, seed=1))


@pytest.mark.parametrize("name", sorted(NOISE & set(C.MNIST_C_CORRUPTIONS)))
def test_random_mnist_corruptions_depend_on_seed(name):
    assert not np.array_equal(C.corrupt(MNIST, name, 4, seed=0), C.corrupt(MNIST, name, 4, seed=1))


@pytest.mark.parametrize(
    "images,name",
    [
        (MNIST, n)
        for n in (
            "shot_noise",
            "impulse_noise",
            "brightness",
            "motion_blur",
            "scale",
            "rotate",
            "stripe",
            "translate",
            "spatter",
        )
    ]
    + [
        (CIFAR, n)
        for n in (
            "gaussian_noise",
            "shot_noise",
            "impulse_noise",
            "speckle_noise",
            "brightness",
            "contrast",
            "gaussian_blur",
            "defocus_blur",
            "zoom_blur",
            "jpeg_compression",
            "fog",
        )
    ],
)
def test_severity_is_monotone(images, name):
    mads = [_mad(C.corrupt(images, name, s, seed=0), images) for s in C.SEVERITIES]
    assert all(a < b for a, b in zip(mads, mads[1:], strict=False)), (name, mads)


def test_exact_simple_corruptions():
    x = MNIST.astype(np.int32)
    b = C.corrupt(MNIST, "brightness", 3, 0).astype(np.int32)  # gray: adds 0.5, clipped
    assert np.abs(b - np.clip(x + 127.5, 0, 255)).max() <= 0.5
    y = C.corrupt(MNIST, "stripe", 3, 0).astype(np.int32)  # 7 px bands inverted
    np.testing.assert_array_equal(y[:, :, :7], 255 - x[:, :, :7])
    np.testing.assert_array_equal(y[:, :, 7:21], x[:, :, 7:21])
    np.testing.assert_array_equal(y[:, :, 21:], 255 - x[:, :, 21:])
    c = C.corrupt(CIFAR, "contrast", 5, 0).astype(np.float64)  # per-channel means kept
    np.testing.assert_allclose(c.mean((1, 2)), CIFAR.mean((1, 2)), atol=1.0)
    assert c.std((1, 2)).mean() < 0.2 * CIFAR.std((1, 2)).mean()


def test_pixelate_matches_pillow_box_resize():
    from PIL import Image

    for s, c in zip(C.SEVERITIES, (0.95, 0.9, 0.85, 0.75, 0.65), strict=True):
        ours = C.corrupt(CIFAR, "pixelate", s, 0)
        for img, y in zip(CIFAR, ours, strict=True):
            small = Image.fromarray(img).resize((int(32 * c),) * 2, Image.BOX)
            ref = np.asarray(small.resize((32, 32), Image.BOX)).astype(int)
            assert np.abs(ref - y).max() <= 1  # Pillow rounds in fixed point


def test_translate_shifts_by_severity_pixels():
    img = np.zeros((1, 28, 28, 1), np.uint8)
    img[0, 14, 14] = 200
    for s in C.SEVERITIES:
        (r,), (c,) = np.nonzero(C.corrupt(img, "translate", s, seed=s)[0, ..., 0])
        assert abs(r - 14) == s and abs(c - 14) == s


def test_scale_shrinks_digit():
    y = C.corrupt(MNIST, "scale", 3, 0)  # digit shrinks to 0.7 of its size
    ink = lambda a: (a > 60).sum()  # noqa: E731
    assert ink(y) < 0.7 * ink(MNIST)


def test_lines_and_canny_add_or_replace_ink():
    for name in ("dotted_line", "zigzag"):
        y = C.corrupt(MNIST, name, 3, 0)
        assert (y.astype(int) >= MNIST).all()  # lines are added on top
        assert ((y > MNIST).sum((1, 2, 3)) > 5).all()  # every image got its line
    e = C.corrupt(MNIST, "canny_edges", 3, 0)
    assert set(np.unique(e)) <= {0, 255}  # pure edge map


def test_errors_name_value_and_choices():
    with pytest.raises(ValueError, match="'foggy'.*shot_noise"):
        C.corrupt(MNIST, "foggy", 1, 0)
    with pytest.raises(ValueError, match="'gaussian_noise' is not in the mnist_c set"):
        C.corrupt(MNIST, "gaussian_noise", 1, 0)  # CIFAR-only name on 28x28
    with pytest.raises(ValueError, match=r"severity 6.*\(1, 2, 3, 4, 5\)"):
        C.corrupt(MNIST, "fog", 6, 0)
    with pytest.raises(ValueError, match=r"severity 0"):
        C.corrupt(CIFAR, "fog", 0, 0)
    with pytest.raises(ValueError, match=r"\(32, 32, 1\).*\(28, 28, 1\).*\(32, 32, 3\)"):
        C.corrupt(np.zeros((2, 32, 32, 1), np.uint8), "fog", 1, 0)
    with pytest.raises(ValueError, match="uint8"):
        C.corrupt(MNIST.astype(np.float32), "fog", 1, 0)
    with pytest.raises(ValueError, match="seed"):
        C.corrupt(MNIST, "fog", 1, -1)
    with pytest.raises(ValueError, match="'nope'"):
        C.corrupted_splits(Split(MNIST, np.zeros(len(MNIST), np.int32)), ["fog", "nope"])


def test_empty_batch():
    assert C.corrupt(MNIST[:0], "fog", 2, 0).shape == (0, 28, 28, 1)


def test_corruption_names_by_shape():
    assert C.corruption_names((28, 28, 1)) == C.MNIST_C_CORRUPTIONS
    assert len(C.MNIST_C_CORRUPTIONS) == 15 and len(C.CIFAR10_C_CORRUPTIONS) == 19
    # Hendrycks & Dietterich's 15 benchmark corruptions, and the 4 extra ones of the release.
    assert C.CIFAR10_C_BENCHMARK == (
        "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
        "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
        "elastic_transform", "pixelate", "jpeg_compression",
    )  # fmt: skip
    assert set(C.CIFAR10_C_CORRUPTIONS) - set(C.CIFAR10_C_BENCHMARK) == {
        "speckle_noise", "gaussian_blur", "spatter", "saturate"
    }  # fmt: skip
    assert C.benchmark_names((32, 32, 3)) == C.CIFAR10_C_BENCHMARK
    assert C.benchmark_names((28, 28, 1)) == C.MNIST_C_CORRUPTIONS


@pytest.mark.parametrize(
    "spec,shape,expected",
    [
        (None, (32, 32, 3), C.CIFAR10_C_BENCHMARK),
        ("benchmark", (32, 32, 3), C.CIFAR10_C_BENCHMARK),
        ("all", (32, 32, 3), C.CIFAR10_C_CORRUPTIONS),
        ("benchmark", (28, 28, 1), C.MNIST_C_CORRUPTIONS),
        ("all", (28, 28, 1), C.MNIST_C_CORRUPTIONS),  # MNIST-C has no extra corruptions
        ("saturate, fog", (32, 32, 3), ("saturate", "fog")),
        (("stripe", "fog"), (28, 28, 1), ("stripe", "fog")),
    ],
)
def test_select_corruptions(spec, shape, expected):
    assert C.select_corruptions(spec, shape) == expected


def test_select_corruptions_refuses_unknown_names_listing_the_valid_ones():
    with pytest.raises(ValueError) as e:
        C.select_corruptions("fog,stripe", (32, 32, 3))  # stripe is MNIST-C's
    msg = str(e.value)
    assert "unknown corruption(s) 'stripe'" in msg and "'benchmark'" in msg and "'all'" in msg
    assert all(n in msg for n in C.CIFAR10_C_CORRUPTIONS)
    with pytest.raises(ValueError, match="'gaussian_noise'.*MNIST-C.*canny_edges"):
        C.select_corruptions(["gaussian_noise"], (28, 28, 1))
    with pytest.raises(ValueError, match="no corruption"):
        C.select_corruptions((), (32, 32, 3))
    with pytest.raises(ValueError, match="'fog' named more than once"):
        C.select_corruptions("fog,snow,fog", (32, 32, 3))
    assert C.select_corruptions(["identity"], (28, 28, 1), also_valid=("identity",)) == (
        "identity",
    )


# --------------------------------------------------------------------------------------------
# corrupted_splits and its cache
# --------------------------------------------------------------------------------------------


@pytest.fixture
def count_calls(monkeypatch):
    calls = []
    real = C.corrupt

    def counting(images, name, severity, seed):
        calls.append((name, severity, seed))
        return real(images, name, severity, seed)

    monkeypatch.setattr(C, "corrupt", counting)
    return calls


def _split(images):
    return Split(images, np.arange(len(images), dtype=np.int32) % 10)


def test_corrupted_splits_without_cache(count_calls):
    out = C.corrupted_splits(_split(MNIST), ["fog", "stripe"], [1, 4], seed=2)
    assert sorted(out) == [("fog", 1), ("fog", 4), ("stripe", 1), ("stripe", 4)]
    np.testing.assert_array_equal(out[("fog", 4)].images, C.corrupt(MNIST, "fog", 4, 2))
    np.testing.assert_array_equal(out[("stripe", 1)].labels, _split(MNIST).labels)
    assert len(count_calls) == 5  # 4 generated + the direct call above


def test_corrupted_splits_defaults_to_the_benchmark_set(count_calls):
    out = C.corrupted_splits(_split(CIFAR[:1]), severities=[2], seed=0)
    assert sorted(k[0] for k in out) == sorted(C.CIFAR10_C_BENCHMARK)
    out = C.corrupted_splits(_split(CIFAR[:1]), "all", severities=[2], seed=0)
    assert sorted(k[0] for k in out) == sorted(C.CIFAR10_C_CORRUPTIONS)
    out = C.corrupted_splits(_split(MNIST[:1]), severities=[2], seed=0)
    assert sorted(k[0] for k in out) == sorted(C.MNIST_C_CORRUPTIONS)


def test_cache_hit_and_keys(tmp_path, count_calls):
    split = _split(MNIST)
    first = C.corrupted_splits(split, ["fog", "shot_noise"], [2, 3], seed=5, cache_dir=tmp_path)
    assert len(count_calls) == 4
    files = sorted(os.listdir(tmp_path))
    arrays = [f for f in files if f.endswith(".npy")]
    assert len(arrays) == 4 and files == sorted(arrays + [f + ".sha256" for f in arrays])
    assert not any(f.startswith(".tmp") for f in files)  # temporary files renamed away
    second = C.corrupted_splits(split, ["fog", "shot_noise"], [2, 3], seed=5, cache_dir=tmp_path)
    assert len(count_calls) == 4  # all read back from disk
    for k in first:
        np.testing.assert_array_equal(first[k].images, second[k].images)
    # A different seed or different source images is a different cache entry.
    C.corrupted_splits(split, ["fog"], [2], seed=6, cache_dir=tmp_path)
    other = _split(MNIST[::-1].copy())
    C.corrupted_splits(other, ["fog"], [2], seed=5, cache_dir=tmp_path)
    assert len(count_calls) == 6 and len(os.listdir(tmp_path)) == 12


def test_a_corrupt_cache_file_is_set_aside_and_regenerated_never_used(tmp_path, capsys):
    split = _split(MNIST)
    good = C.corrupt(MNIST, "fog", 2, 0)
    path = C.cache_path(str(tmp_path), MNIST, "fog", 2, 0)
    C.corrupted_splits(split, ["fog"], [2], seed=0, cache_dir=tmp_path)
    with open(path, "r+b") as f:  # bytes flipped in place: the saved SHA-256 catches it
        f.seek(-100, os.SEEK_END)
        f.write(b"\xff" * 50)
    wrong_shape = np.zeros((3, 28, 28, 1), np.uint8)
    for problem, bad in [("does not match the SHA-256", None), ("holds uint8 (3, 28, 28, 1)", 1)]:
        if bad is not None:
            os.remove(path + ".sha256")
            np.save(path, wrong_shape)
        out = C.corrupted_splits(split, ["fog"], [2], seed=0, cache_dir=tmp_path)
        np.testing.assert_array_equal(out[("fog", 2)].images, good)
        assert problem in capsys.readouterr().out
    with open(path, "wb") as f:  # cut short: unreadable
        f.write(b"\x93NUMPY")
    C.corrupted_splits(split, ["fog"], [2], seed=0, cache_dir=tmp_path)
    assert "is unreadable" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(path), good)
    assert np.load(path + ".corrupt.1").shape == (3, 28, 28, 1)  # every bad file is kept
    assert os.path.exists(path + ".corrupt") and os.path.exists(path + ".corrupt.2")


def test_a_concurrent_writer_with_different_content_is_an_error_not_an_overwrite(tmp_path):
    good = C.corrupt(MNIST, "fog", 2, 0)
    path = C.cache_path(str(tmp_path), MNIST, "fog", 2, 0)
    np.save(path, 255 - good)
    with pytest.raises(ValueError, match="different corrupted split"):
        C._save_no_clobber(path, good)
    np.testing.assert_array_equal(np.load(path), 255 - good)
    C._save_no_clobber(path, 255 - good)  # identical content: fine
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp")] == []
