"""The run plan (earlyjax/plan.py): record steps, and the record values a plan refuses."""

import os

import pytest

from earlyjax.config import ConfigError
from earlyjax.plan import record_steps
from earlyjax.train import train_and_evaluate


def test_record_steps_cover_zero_to_until():
    assert record_steps(10, 30, 1000) == (0, 10, 20, 30)
    assert record_steps(10, 2000, 25) == (0, 10, 20)
    assert record_steps(0, 2000, 100) == ()


def test_bad_record_values_are_refused(recording_config, tiny_dataset, tmp_path):
    recording_config.record.metrics = ("fisher", "sharpnes")
    with pytest.raises(ConfigError, match="unknown record.metrics"):
        train_and_evaluate(recording_config, str(tmp_path / "a"), dataset=tiny_dataset)
    recording_config.record.metrics = ("fisher",)
    recording_config.record.set_size = 512
    recording_config.record.batch_size = 256
    with pytest.raises(ConfigError, match="at most the 256 training examples"):
        train_and_evaluate(recording_config, str(tmp_path / "b"), dataset=tiny_dataset)
    assert not os.path.exists(tmp_path / "b" / "config.json")
