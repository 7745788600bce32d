"""Early-period recording inside the training loop: when, over what, and resumable."""

import os

import pytest

from earlyjax.config import ConfigError
from earlyjax.metric_log import read_records
from earlyjax.recording import record_steps
from earlyjax.train import train_and_evaluate


def test_record_steps_cover_zero_to_until():
    assert record_steps(10, 30, 1000) == [0, 10, 20, 30]
    assert record_steps(10, 2000, 25) == [0, 10, 20]
    assert record_steps(0, 2000, 100) == []


@pytest.fixture
def recording_config(tiny_config):
    c = tiny_config
    c.total_steps = 6
    c.log_every = 3
    c.checkpoint_every = 3
    c.record.every = 2
    c.record.until = 4
    c.record.set_size = 64
    c.record.batch_size = 32
    c.record.metrics = ("fisher", "avg_sharpness")
    c.record.avg_samples = 2
    return c


def records(workdir):
    return [
        r for r in read_records(os.path.join(workdir, "metrics.jsonl")) if r["kind"] == "record"
    ]


def test_records_follow_the_schedule_and_survive_resume(recording_config, tiny_dataset, tmp_path):
    full, split = str(tmp_path / "full"), str(tmp_path / "split")
    results = train_and_evaluate(recording_config, full, dataset=tiny_dataset)
    got = records(full)
    assert [r["step"] for r in got] == [0, 2, 4]
    # k=2, L=5: layer4 is released at step 1, layer3 at step 3.
    assert [r["trainable"] for r in got] == [
        ["head"],
        ["layer4", "head"],
        ["layer3", "layer4", "head"],
    ]
    assert all(r["fisher"] > 0 for r in got)
    assert results["record_seconds_this_session"] > 0

    train_and_evaluate(recording_config, split, dataset=tiny_dataset, stop_after=3)
    train_and_evaluate(recording_config, split, dataset=tiny_dataset)
    assert records(split) == got  # same values, no duplicate or missing line

    from experiments.analysis import figure2

    paths = figure2(str(tmp_path), str(tmp_path / "figs"))
    assert [os.path.basename(p) for p in paths] == ["fig2.png", "fig2.pdf"]


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
