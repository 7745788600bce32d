"""The training loop: one compilation, bit-identical resume, and refusing bad input safely."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_tensorboard_matches_log, restore_latest

from earlyjax.checkpoint import Checkpointer, CheckpointError
from earlyjax.config import ConfigError
from earlyjax.metric_log import read_records
from earlyjax.periodic import StopAt
from earlyjax.train import (
    TrainingDiverged,
    make_train_step,
    setup,
    train_and_evaluate,
)


def snapshot(workdir):
    """Every file under workdir with its bytes, to prove nothing was changed."""
    out = {}
    for root, _, files in os.walk(workdir):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, workdir)] = f.read()
    return out


def test_one_compilation_across_releases(tiny_config, tiny_dataset):
    tiny_config.data.augment = True
    tiny_config.unfreeze.freeze_bn_stats = True
    run_setup, state = setup(tiny_config, tiny_dataset)
    step = make_train_step(run_setup, state)
    batch = {
        "image": jnp.asarray(tiny_dataset.train.images[:32]),
        "label": jnp.asarray(tiny_dataset.train.labels[:32]),
    }
    before = state.params["stem"]["conv"]["kernel"]
    state, _ = step(state, batch)  # compiles
    lowered = []  # programs lowered for XLA from here on (jax.monitoring: public events)

    def listener(name, secs, **kwargs):
        if name == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            lowered.append(name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        for _ in range(11):  # k=2, L=5: the stem is released at step 9
            state, _ = step(state, batch)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert not np.array_equal(before, state.params["stem"]["conv"]["kernel"])
    assert lowered == []  # no step compiled again


def test_interrupted_and_resumed_run_is_bit_identical(tiny_config, tiny_dataset, tmp_path):
    full, split = str(tmp_path / "full"), str(tmp_path / "split")
    ref = train_and_evaluate(tiny_config, full, dataset=tiny_dataset)
    assert (
        train_and_evaluate(tiny_config, split, dataset=tiny_dataset, extra_actions=[StopAt(5)])
        is None
    )
    resumed = train_and_evaluate(tiny_config, split, dataset=tiny_dataset)

    _, like = setup(tiny_config, tiny_dataset)
    a, b = restore_latest(full, like), restore_latest(split, like)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert read_records(os.path.join(full, "metrics.jsonl")) == read_records(
        os.path.join(split, "metrics.jsonl")
    )
    assert resumed["id_accuracy"] == ref["id_accuracy"]
    assert [r["step"] for r in read_records(os.path.join(full, "metrics.jsonl"))] == [3, 6, 8, 8]
    assert_tensorboard_matches_log(split)


def test_crash_after_checkpoint_sets_later_lines_aside(tiny_config, tiny_dataset, tmp_path):
    tiny_config.log_every = 2
    tiny_config.checkpoint_every = 3
    full, crashed = str(tmp_path / "full"), str(tmp_path / "crashed")
    train_and_evaluate(tiny_config, full, dataset=tiny_dataset)
    train_and_evaluate(tiny_config, crashed, dataset=tiny_dataset, extra_actions=[StopAt(5)])
    # As if the process died after step 5's work but before its checkpoint was written:
    shutil.rmtree(os.path.join(crashed, "checkpoints", "5"))
    train_and_evaluate(tiny_config, crashed, dataset=tiny_dataset)
    log = os.path.join(crashed, "metrics.jsonl")
    assert read_records(log) == read_records(os.path.join(full, "metrics.jsonl"))
    orphaned = read_records(log + ".orphaned-after-3")
    assert [r["step"] for r in orphaned] == [4]  # kept, not lost
    assert_tensorboard_matches_log(crashed)  # step 4's first events are gone from TensorBoard


def test_results_table_covers_every_ood_split(tiny_config, tiny_dataset, tmp_path):
    results = train_and_evaluate(tiny_config, str(tmp_path), dataset=tiny_dataset)
    assert set(results["ood_table"]) == {"darken", "invert"}
    cells = [v for row in results["ood_table"].values() for v in row.values()]
    assert results["ood_accuracy"] == pytest.approx(np.mean(cells))
    with open(tmp_path / "results.json") as f:
        assert json.load(f)["id_accuracy"] == results["id_accuracy"]
    # A finished workdir is not trained again or overwritten.
    before = snapshot(str(tmp_path))
    assert train_and_evaluate(tiny_config, str(tmp_path), dataset=tiny_dataset) == results
    assert snapshot(str(tmp_path)) == before


def test_workdir_with_a_different_config_refuses_to_resume(tiny_config, tiny_dataset, tmp_path):
    train_and_evaluate(tiny_config, str(tmp_path), dataset=tiny_dataset, extra_actions=[StopAt(2)])
    before = snapshot(str(tmp_path))
    tiny_config.optimizer.lr = 0.2
    tiny_config.unfreeze.k = 3
    with pytest.raises(ConfigError, match=r"optimizer\.lr: 0\.05 -> 0\.2") as err:
        train_and_evaluate(tiny_config, str(tmp_path), dataset=tiny_dataset)
    assert "unfreeze.k: 2 -> 3" in str(err.value)
    assert snapshot(str(tmp_path)) == before


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("unfreeze.k", 0, "unfreeze.k must be None"),
        ("unfreeze.k", -5, "unfreeze.k must be None"),
        ("model.name", "resnet50", "unknown model 'resnet50'"),
        ("data.name", "svhn", "unknown dataset 'svhn'"),
        ("batch_size", 1000, "batch_size 1000 is larger than the training set"),
        ("optimizer.lr_switch", "l2h", "needs exactly one of --config.optimizer.lr_switch_step"),
        ("optimizer.lr", 0.0, "optimizer.lr must be > 0"),
        (
            "optimizer.name",
            "adam",
            r"unknown optimizer.name 'adam': choose one of \('sgd', 'adamw'\)",
        ),
        ("optimizer.schedule", "cosine", "unknown optimizer.schedule 'cosine'"),
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


def test_adamw_refuses_sgd_momentum_and_trains_with_a_linear_schedule(
    tiny_config, tiny_dataset, tmp_path
):
    tiny_config.optimizer.name = "adamw"
    tiny_config.optimizer.momentum = 0.9
    with pytest.raises(ConfigError, match="optimizer.momentum=0.9 is SGD's"):
        train_and_evaluate(tiny_config, str(tmp_path / "bad"), dataset=tiny_dataset)
    tiny_config.optimizer.momentum = 0.0
    tiny_config.optimizer.lr = 1e-3
    tiny_config.optimizer.schedule = "linear"
    train_and_evaluate(tiny_config, str(tmp_path / "run"), dataset=tiny_dataset)
    lrs = [r["lr"] for r in read_records(str(tmp_path / "run" / "metrics.jsonl"))
           if r["kind"] == "train"]  # fmt: skip
    assert lrs and lrs == sorted(lrs, reverse=True) and lrs[0] < 1e-3  # decays from 1e-3


@pytest.mark.parametrize("name", ["runs*", "a/**/b", "run?", "run[1]"])
def test_a_workdir_path_with_glob_characters_is_refused_before_writing(
    tiny_config, tiny_dataset, tmp_path, name
):
    workdir = tmp_path / name
    with pytest.raises(ConfigError, match=r"contains the glob character\(s\) .*choose a path"):
        train_and_evaluate(tiny_config, str(workdir), dataset=tiny_dataset)
    assert os.listdir(tmp_path) == []


def test_nan_loss_stops_and_keeps_what_was_written(tiny_config, tiny_dataset, tmp_path):
    tiny_config.optimizer.lr = 1e30
    tiny_config.unfreeze.k = None
    tiny_config.checkpoint_every = 1
    tiny_config.log_every = 1
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf) at step \d") as err:
        train_and_evaluate(tiny_config, str(tmp_path), dataset=tiny_dataset)
    assert "Lower --config.optimizer.lr" in str(err.value)
    ckpt = Checkpointer(str(tmp_path / "checkpoints"))
    assert ckpt.latest_step() >= 1
    records = read_records(str(tmp_path / "metrics.jsonl"))
    assert records and all(np.isfinite(r["loss"]) for r in records)


def test_corrupt_checkpoint_is_refused_and_left_alone(tiny_config, tiny_dataset, tmp_path):
    train_and_evaluate(tiny_config, str(tmp_path), dataset=tiny_dataset, extra_actions=[StopAt(2)])
    for root, _, files in os.walk(tmp_path / "checkpoints" / "2"):
        for name in files:
            with open(os.path.join(root, name), "r+b") as f:
                f.truncate(3)
    before = snapshot(str(tmp_path))
    with pytest.raises(CheckpointError, match="cannot restore the checkpoint at .*2"):
        train_and_evaluate(tiny_config, str(tmp_path), dataset=tiny_dataset)
    assert snapshot(str(tmp_path)) == before


def test_foreign_checkpoint_is_refused(tiny_config, tiny_dataset, tmp_path):
    train_and_evaluate(
        tiny_config, str(tmp_path / "a"), dataset=tiny_dataset, extra_actions=[StopAt(2)]
    )
    shutil.copytree(tmp_path / "a" / "checkpoints", tmp_path / "b" / "checkpoints")
    tiny_config.model.width = 8
    with pytest.raises(CheckpointError, match="different model/config"):
        train_and_evaluate(tiny_config, str(tmp_path / "b"), dataset=tiny_dataset)


def test_frozen_blocks_keep_bn_statistics_only_when_asked(tiny_config, tiny_dataset):
    tiny_config.unfreeze.k = 4  # layer4 is released at step 3, the stem at step 19
    batch = {
        "image": jnp.asarray(tiny_dataset.train.images[:32]),
        "label": jnp.asarray(tiny_dataset.train.labels[:32]),
    }

    def running_means(stats):
        return {
            "stem": np.asarray(stats["stem"]["bn"]["mean"]),
            "layer4": np.asarray(stats["layer4"]["block0"]["bn1"]["mean"]),
        }

    for freeze, stem_moves in [(True, False), (False, True)]:
        tiny_config.unfreeze.freeze_bn_stats = freeze
        run_setup, state = setup(tiny_config, tiny_dataset)
        step = make_train_step(run_setup, state)
        before = running_means(state.model_state)  # copied: the step donates its input state
        for _ in range(4):
            state, _ = step(state, batch)
        after = running_means(state.model_state)
        assert not np.array_equal(before["layer4"], after["layer4"])
        assert (not np.array_equal(before["stem"], after["stem"])) == stem_moves


def test_cli_rejects_unknown_config_field(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.main",
            "--config=quickstart.py",
            f"--workdir={tmp_path / 'run'}",
            "--config.optimizer.lrr=0.1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert proc.returncode != 0
    assert "unknown config field: --config.optimizer.lrr (did you mean optimizer.lr" in proc.stderr
    assert not os.path.exists(tmp_path / "run")


def test_cli_sets_a_nullable_field_to_none_and_refuses_others():
    script = (
        "import sys; from absl import flags; from experiments import cli; "
        "sys.argv = cli.rewrite_config_argument(sys.argv); cli.parse_flags(sys.argv); "
        "print('k =', flags.FLAGS.config.unfreeze.k)"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def parse(*args):
        cmd = [sys.executable, "-c", script, "--config=quickstart.py", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=root)

    assert "k = 10" in parse().stdout  # the quickstart's own k
    proc = parse("--config.unfreeze.k=None")
    assert proc.returncode == 0 and "k = None" in proc.stdout, proc.stderr
    proc = parse("--config.batch_size=none")
    assert proc.returncode != 0
    assert "config field batch_size cannot be None; give a value" in proc.stderr
