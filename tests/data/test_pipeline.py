"""Input pipeline: per-epoch shuffles, fixed-shape evaluation batches, on-device augmentation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from earlyjax.data.base import Split
from earlyjax.data.pipeline import (
    batch_indices,
    eval_batches,
    metric_set,
    random_crop_flip,
    steps_per_epoch,
    train_batches,
)


def test_each_epoch_is_a_fresh_permutation_with_a_smaller_last_batch():
    n, b = 103, 10
    assert steps_per_epoch(n, b) == 11  # ceil, as PyTorch's drop_last=False
    sizes = [len(batch_indices(7, s, n, b)) for s in range(11)]
    assert sizes == [10] * 10 + [3]
    epoch0 = np.concatenate([batch_indices(7, s, n, b) for s in range(11)])
    epoch1 = np.concatenate([batch_indices(7, s, n, b) for s in range(11, 22)])
    assert sorted(epoch0) == list(range(n)) and sorted(epoch1) == list(range(n))
    assert not np.array_equal(epoch0, epoch1)
    np.testing.assert_array_equal(batch_indices(7, 13, n, b), batch_indices(7, 13, n, b))
    assert not np.array_equal(batch_indices(7, 0, n, b), batch_indices(8, 0, n, b))


def test_the_papers_step_counts_per_epoch():
    assert steps_per_epoch(60_000, 128) == 469  # MNIST
    assert steps_per_epoch(50_000, 128) == 391  # CIFAR-10/100
    assert steps_per_epoch(50_000, 125) == 400


def test_batch_larger_than_data_names_the_fix():
    with pytest.raises(ValueError, match="batch_size 300 is larger .* at most 200"):
        steps_per_epoch(200, 300)


def test_train_batches_resume_mid_run_with_the_same_batches():
    images = np.arange(50, dtype=np.uint8).reshape(50, 1, 1, 1)
    split = Split(images, np.arange(50, dtype=np.int32))
    whole = list(train_batches(split, seed=3, batch_size=8, start_step=0, stop_step=12))
    tail = list(train_batches(split, seed=3, batch_size=8, start_step=7, stop_step=12))
    assert [s for s, _ in whole] == list(range(12))
    for (s, a), (t, b) in zip(whole[7:], tail, strict=True):
        assert s == t
        np.testing.assert_array_equal(a["label"], b["label"])
        np.testing.assert_array_equal(a["image"][:, 0, 0, 0], b["label"])


def test_train_batches_yield_the_smaller_last_batch_of_an_epoch():
    split = Split(np.zeros((10, 1, 1, 1), np.uint8), np.arange(10, dtype=np.int32))
    batches = list(train_batches(split, seed=0, batch_size=4, start_step=0, stop_step=6))
    assert [b["label"].shape[0] for _, b in batches] == [4, 4, 2, 4, 4, 2]
    assert sorted(np.concatenate([b["label"] for _, b in batches[:3]])) == list(range(10))


def test_eval_batches_pad_the_last_batch_and_mask_it():
    split = Split(np.ones((10, 2, 2, 1), np.uint8), np.arange(10, dtype=np.int32))
    batches = list(eval_batches(split, 4))
    assert [b["image"].shape[0] for b in batches] == [4, 4, 4]
    np.testing.assert_array_equal(batches[-1]["mask"], [1, 1, 0, 0])
    assert sum(b["mask"].sum() for b in batches) == 10


def test_random_crop_flip_is_a_shifted_or_mirrored_window():
    images = jnp.arange(64 * 8 * 8, dtype=jnp.int32).reshape(64, 8, 8, 1) % 251 + 1
    out = np.asarray(random_crop_flip(jax.random.key(0), images, pad=2))
    assert out.shape == images.shape
    flipped = 0
    for x, y in zip(np.asarray(images), out, strict=True):
        padded = np.pad(x, ((2, 2), (2, 2), (0, 0)))
        windows = [padded[i : i + 8, j : j + 8] for i in range(5) for j in range(5)]
        plain = any(np.array_equal(y, w) for w in windows)
        mirrored = any(np.array_equal(y[:, ::-1], w) for w in windows)
        assert plain or mirrored
        flipped += mirrored and not plain
    assert 10 < flipped < 54  # about half are flipped


def test_metric_set_is_the_first_examples_in_fixed_batches():
    split = Split(
        (np.arange(600) % 256).astype(np.uint8).reshape(600, 1, 1, 1),
        np.arange(600, dtype=np.int32),
    )
    batches = metric_set(split, size=512, batch_size=128)
    assert batches["image"].shape == (4, 128, 1, 1, 1) and batches["label"].shape == (4, 128)
    np.testing.assert_array_equal(batches["label"].reshape(-1), np.arange(512))
    with pytest.raises(ValueError, match="at most the 600 training examples"):
        metric_set(split, size=2048, batch_size=256)
