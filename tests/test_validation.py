"""Config values that cannot run stop with one clear message before anything is written."""

import os

import pytest
from helpers import FIXTURES

from earlyjax.config import ConfigError
from earlyjax.train import (
    train_and_evaluate,
)


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("unfreeze.k", 0, "unfreeze.k must be None"),
        ("unfreeze.k", -5, "unfreeze.k must be None"),
        ("model.name", "resnet152", "unknown model 'resnet152'"),
        ("data.name", "svhn", "unknown dataset 'svhn'"),
        ("batch_size", 1000, "batch_size 1000 is larger than the training set"),
        ("optimizer.lr_switch", "l2h", "needs exactly one of --config.optimizer.lr_switch_step"),
        ("optimizer.lr", 0.0, "optimizer.lr must be > 0"),
        (
            "optimizer.name",
            "adam",
            r"unknown optimizer.name 'adam': choose one of \('sgd', 'adamw'\)",
        ),
        ("optimizer.schedule", "cyclic", "unknown optimizer.schedule 'cyclic'"),
        ("model.name", "vgg11", "VGG-11 needs inputs of at least 32x32"),
        ("seed", -1, r"seed must be an int in \[0, 2\*\*31\), got -1"),
    ],
)
def test_impossible_values_stop_with_a_clear_message(
    tiny_config, tiny_dataset, tmp_path, field, value, message
):
    section, _, name = field.rpartition(".")
    (tiny_config[section] if section else tiny_config)[name] = value
    with pytest.raises(ConfigError, match=message):
        train_and_evaluate(tiny_config, str(tmp_path / "run"), dataset=tiny_dataset)
    assert not os.path.exists(tmp_path / "run" / "config.json")


@pytest.mark.parametrize(
    "model,checkpoint,message",
    [
        ("resnet18", "model.safetensors", "for --config.model.name=resnet50, not 'resnet18'"),
        ("resnet50", "nowhere.safetensors", "'.*nowhere.safetensors' is not a file"),
        ("resnet50", "reference.npz", r"has suffix '.npz': give a file ending in one of"),
    ],
)
def test_image_checkpoint_needs_resnet50_and_a_known_file(
    tiny_config, tiny_dataset, tmp_path, model, checkpoint, message
):
    tiny_config.model.name = model
    tiny_config.model.checkpoint = str(FIXTURES / "tiny_resnet50" / checkpoint)
    with pytest.raises(ConfigError, match=message):
        train_and_evaluate(tiny_config, str(tmp_path / "run"), dataset=tiny_dataset)
    assert not os.path.exists(tmp_path / "run")
