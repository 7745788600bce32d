"""The pretext tasks of Frankle et al. 2020 §6 (earlyjax/tasks/image_classification.py): fixed,
seeded random labels; rotation prediction (per-step rotations from the step key, fixed ones on
the evaluation and metric sets, a 4-way head); blur (block mean, bilinear up-sampling); their
config checks; one short run of each. The model is LeNet-300-100 at width 4 on the conftest's
tiny digits, so nothing here compiles a ResNet."""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from earlyjax.config import ConfigError, default_config
from earlyjax.data.base import Dataset, Split
from earlyjax.data.pipeline import random_crop_flip
from earlyjax.metric_log import read_records
from earlyjax.periodic import StopAt
from earlyjax.tasks.image_classification import (
    ROTATIONS,
    ImageClassification,
    blur,
    fixed_rotations,
    random_labels,
    rotate,
    rotation_key,
)
from earlyjax.train import build_task, train_and_evaluate
from earlyjax.validation import validate

MODEL = {"model": "lenet300_100", "width": 4, "init": "pytorch"}


def build(dataset, pretext, augment=False, seed=0, blur_factor=4):
    return ImageClassification.build(
        dataset, **MODEL, augment=augment, pretext=pretext, blur_factor=blur_factor, seed=seed
    )


def rotated_back(images, k):
    """Each image of [N, H, H, C] rotated by -k[i]·90° (np.rot90 on H, W)."""
    pairs = zip(images, k, strict=True)
    return np.stack([np.rot90(image, -int(r), axes=(0, 1)) for image, r in pairs])


# --- random labels ---------------------------------------------------------------------------


def test_random_labels_are_fixed_by_the_seed_and_the_test_labels_stay_true(tiny_dataset):
    a, again, other = (build(tiny_dataset, "random_labels", seed=s) for s in (0, 0, 1))
    labels = a.dataset.train.labels
    np.testing.assert_array_equal(labels, again.dataset.train.labels)
    assert not np.array_equal(labels, other.dataset.train.labels)
    assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() < 10
    # About 1 in 10 agrees with the true label: the labels carry no information.
    assert np.mean(labels == tiny_dataset.train.labels) < 0.2
    np.testing.assert_array_equal(a.dataset.train.images, tiny_dataset.train.images)
    for name, split in a.eval_sets().items():
        true = tiny_dataset.test if name is None else tiny_dataset.ood[name]
        np.testing.assert_array_equal(split.labels, true.labels)
        np.testing.assert_array_equal(split.images, true.images)
    assert a.header()["pretext"] == "random_labels"


def test_random_labels_are_roughly_uniform():
    counts = np.bincount(random_labels(10_000, 10, seed=3), minlength=10)
    assert counts.sum() == 10_000 and counts.min() > 880 and counts.max() < 1120  # ±4 sd


# --- rotation --------------------------------------------------------------------------------


def test_rotation_train_batch_rotates_each_image_by_its_label(tiny_dataset):
    task = build(tiny_dataset, "rotation")
    images = tiny_dataset.train.images[:64]
    batch = {"image": jnp.asarray(images), "label": jnp.asarray(tiny_dataset.train.labels[:64])}
    key = jax.random.key(7)
    out = task.train_batch(batch, key)
    k = np.asarray(out["label"])
    assert k.dtype == np.int32 and set(k.tolist()) == set(range(ROTATIONS))
    for image, rotated, r in zip(images, np.asarray(out["image"]), k, strict=True):
        np.testing.assert_array_equal(rotated, np.rot90(image, r, axes=(0, 1)))
    # Deterministic in the step key (a resumed run rotates alike), different for another key.
    np.testing.assert_array_equal(task.train_batch(batch, key)["label"], k)
    assert not np.array_equal(task.train_batch(batch, jax.random.key(8))["label"], k)


def test_rotation_comes_after_the_augmentation_from_an_independent_key(tiny_dataset):
    plain, augmented = build(tiny_dataset, "rotation"), build(tiny_dataset, "rotation", True)
    images = jnp.asarray(tiny_dataset.train.images[:64])
    batch = {"image": images, "label": jnp.zeros(64, jnp.int32)}
    key = jax.random.key(3)
    out = augmented.train_batch(batch, key)
    # The augmentation's crop and flip are those of the key alone; the rotation follows them
    # (a flip after a rotation would turn 90° into 270°) and does not depend on augmenting.
    np.testing.assert_array_equal(out["label"], plain.train_batch(batch, key)["label"])
    np.testing.assert_array_equal(
        rotated_back(np.asarray(out["image"]), np.asarray(out["label"])),
        np.asarray(random_crop_flip(key, images)),
    )
    # The rotations' key is none of the keys the augmentation draws from.
    used = [key, *jax.random.split(key)]
    rotations = jax.random.key_data(rotation_key(key))
    assert not any(np.array_equal(rotations, jax.random.key_data(k)) for k in used)


def test_rotation_evaluation_sets_are_rotated_once_with_fixed_labels(tiny_dataset):
    task = build(tiny_dataset, "rotation", seed=0)
    other_seed = build(tiny_dataset, "rotation", seed=5)
    test = task.eval_sets()[None]
    assert set(test.labels.tolist()) == set(range(ROTATIONS))
    np.testing.assert_array_equal(rotated_back(test.images, test.labels), tiny_dataset.test.images)
    for name, split in task.eval_sets().items():
        # Fixed: the same for every run's seed; an OOD image gets its test image's rotation.
        np.testing.assert_array_equal(split.labels, other_seed.eval_sets()[name].labels)
        np.testing.assert_array_equal(split.labels, test.labels[: len(split.labels)])
        if name is not None:
            original = tiny_dataset.ood[name].images
            np.testing.assert_array_equal(rotated_back(split.images, split.labels), original)
    metric = task.metric_batches(64, 32)
    assert metric["label"].shape == (2, 32) and metric["label"].max() < ROTATIONS
    flat = metric["image"].reshape(64, 28, 28, 1)
    back = rotated_back(flat, metric["label"].reshape(-1))
    np.testing.assert_array_equal(back, tiny_dataset.train.images[:64])
    assert "rotation prediction" in task.header()["id_set"]


def test_rotation_builds_a_four_way_head(tiny_dataset):
    task = build(tiny_dataset, "rotation")
    params, model_state = task.init(jax.random.key(0))
    batch = {"image": jnp.asarray(tiny_dataset.test.images[:5])}
    logits, _ = task.logits(params, model_state, batch, None, train=False)
    assert logits.shape == (5, ROTATIONS)


def test_numpy_and_jax_rotations_agree():
    images = np.arange(2 * 3 * 3 * 2, dtype=np.uint8).reshape(2, 3, 3, 2)
    images = np.concatenate([images] * 4)
    k = np.repeat(np.arange(4, dtype=np.int32), 2)
    jax_rotated = np.asarray(rotate(jnp.asarray(images), jnp.asarray(k)))
    for image, rotated, r in zip(images, jax_rotated, k, strict=True):
        np.testing.assert_array_equal(rotated, np.rot90(image, r, axes=(0, 1)))
    fixed = fixed_rotations(Split(images, np.zeros(8, np.int32)), stream=11)
    np.testing.assert_array_equal(rotated_back(fixed.images, fixed.labels), images)


def test_rotation_refuses_non_square_images():
    split = Split(np.zeros((4, 28, 32, 1), np.uint8), np.arange(4, dtype=np.int32))
    with pytest.raises(ConfigError, match="needs square images") as error:
        build(Dataset("wide", 10, split, split, {}), "rotation")
    assert "\n" not in str(error.value)


# --- blur ------------------------------------------------------------------------------------


def test_blur_is_the_block_mean_bilinearly_up_sampled_by_hand():
    # 2x2 blocks with means 10, 50 / 90, 130; bilinear up-sampling x2 with half-pixel centres
    # weighs the two nearest block values 1, 3/4 + 1/4, 1/4 + 3/4, 1 along each axis.
    image = np.array(
        [[0, 20, 40, 60], [0, 20, 60, 40], [80, 100, 120, 140], [100, 80, 140, 120]], np.uint8
    )
    out = blur(image[None, :, :, None], 2)[0, :, :, 0]
    expected = [[10, 20, 40, 50], [30, 40, 60, 70], [70, 80, 100, 110], [90, 100, 120, 130]]
    np.testing.assert_array_equal(out, np.array(expected, np.uint8))


def test_blur_keeps_constant_images_shapes_and_matches_jax_resize():
    constant = np.full((3, 28, 28, 3), 77, np.uint8)
    np.testing.assert_array_equal(blur(constant, 4), constant)
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    out = blur(images, 4)
    assert out.shape == images.shape and out.dtype == np.uint8
    small = images.reshape(5, 8, 4, 8, 4, 3).mean(axis=(2, 4))
    reference = jax.image.resize(jnp.asarray(small, jnp.float32), (5, 32, 32, 3), "bilinear")
    assert np.abs(out.astype(float) - np.asarray(reference)).max() <= 0.5 + 1e-4
    with pytest.raises(ConfigError, match=r"the 32x32 images, got 3: .* \(2, 4, 8, 16, 32\)"):
        blur(images, 3)


def test_blur_pretext_blurs_every_set_and_keeps_labels(tiny_dataset):
    task = build(tiny_dataset, "blur", blur_factor=7)
    data = task.dataset
    np.testing.assert_array_equal(data.train.images, blur(tiny_dataset.train.images, 7))
    np.testing.assert_array_equal(data.train.labels, tiny_dataset.train.labels)
    for name, split in task.eval_sets().items():
        original = tiny_dataset.test if name is None else tiny_dataset.ood[name]
        np.testing.assert_array_equal(split.images, blur(original.images, 7))
        np.testing.assert_array_equal(split.labels, original.labels)
    assert task.header() == {
        "pretext": "blur",
        "id_set": "clean test set, blurred: down-sampled x7, bilinear up-sampled",
    }
    named = build(dataclasses.replace(tiny_dataset, ood_set="MNIST-C-style"), "blur")
    assert named.ood_set == "MNIST-C-style; blurred: down-sampled x4, bilinear up-sampled"


# --- config checks ---------------------------------------------------------------------------


def config_with(task="image_classification", **data):
    c = default_config()
    c.task = task
    if task == "nli":
        c.data.name, c.model.name = "synthetic_nli", "xlmr"
    for name, value in data.items():
        c.data[name] = value
    return c


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"pretext": "jigsaw"}, "unknown data.pretext 'jigsaw'"),
        ({"pretext": "blur", "blur_factor": 3}, r"28x28 digits images, got 3: .*\(2, 4, 7"),
        ({"pretext": "blur", "blur_factor": 1}, "blur_factor must be an int >= 2 .* got 1"),
        ({"pretext": "blur", "blur_factor": 56}, "divides the 28x28 digits images, got 56"),
    ],
)
def test_bad_pretext_fields_are_one_line_config_errors(data, message):
    with pytest.raises(ConfigError, match=message) as error:
        validate(config_with(**data))
    assert "\n" not in str(error.value)


def test_pretext_is_for_the_image_task_only():
    with pytest.raises(ConfigError, match="for task image_classification, not 'nli'") as error:
        validate(config_with("nli", pretext="rotation"))
    assert "\n" not in str(error.value)


def test_good_pretext_fields_pass():
    for data in ({"pretext": "blur", "blur_factor": 7}, {"pretext": "rotation"}, {}):
        validate(config_with(**data))
    c = config_with(pretext="blur", blur_factor=8)
    c.data.name, c.data.source, c.data.ood_source = "cifar10", "tfds", "none"
    validate(c)


def test_build_task_passes_the_pretext_and_the_seed(tiny_config, tiny_dataset):
    tiny_config.data.pretext, tiny_config.seed = "random_labels", 1
    task = build_task(tiny_config, tiny_dataset)
    expected = build(tiny_dataset, "random_labels", seed=1).dataset.train.labels
    np.testing.assert_array_equal(task.dataset.train.labels, expected)


# --- one short run each ----------------------------------------------------------------------


@pytest.mark.parametrize("pretext", ["random_labels", "rotation", "blur"])
def test_a_pretext_run_trains_and_reports_it(pretext, tiny_config, tiny_dataset, tmp_path):
    tiny_config.model.name, tiny_config.data.pretext = "lenet300_100", pretext
    results = train_and_evaluate(tiny_config, str(tmp_path), dataset=tiny_dataset)
    assert results["pretext"] == pretext and np.isfinite(results["id_loss"])
    assert set(results["ood_table"]) == {"darken", "invert"}
    if pretext == "rotation":
        assert "rotation prediction" in results["id_set"]


def test_a_resumed_rotation_run_is_bit_identical(tiny_config, tiny_dataset, tmp_path):
    tiny_config.model.name, tiny_config.data.pretext = "lenet300_100", "rotation"
    tiny_config.data.augment = True
    full, split = str(tmp_path / "full"), str(tmp_path / "split")
    ref = train_and_evaluate(tiny_config, full, dataset=tiny_dataset)
    train_and_evaluate(tiny_config, split, dataset=tiny_dataset, extra_actions=[StopAt(5)])
    resumed = train_and_evaluate(tiny_config, split, dataset=tiny_dataset)
    assert resumed["id_loss"] == ref["id_loss"]
    logs = [read_records(os.path.join(workdir, "metrics.jsonl")) for workdir in (full, split)]
    assert logs[0] == logs[1]
