"""The training loop (earlyjax/train.py): it learns, evaluation is exact, one compilation,
bit-identical resume, a run killed mid-write or by SIGTERM/SIGINT, a NaN loss, a full disk or a
read-only workdir (one clear line, never a hang, and the workdir resumes), refusing bad input
safely, and the final solution's metrics.

The real-disk tests mount a small tmpfs (root with CAP_SYS_ADMIN, as on this project's
machines) and skip, saying why, where mounting is not allowed; the injected-ENOSPC tests run
everywhere. The models are ResNet-18 at width 4 on 28x28x1 digits, the shapes of conftest's
`tiny_config`, so the initialisation (the costliest compilation on a CPU) is shared through the
on-disk compilation cache with the other tests that use it."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import (
    ROOT,
    assert_tensorboard_matches_log,
    copy_run,
    metric_records,
    restore_latest,
    snapshot,
    wait_for,
)

from earlyjax.checkpoint import Checkpointer
from earlyjax.config import ConfigError
from earlyjax.data.base import Dataset
from earlyjax.data.digits import load_digits_splits
from earlyjax.data.pipeline import normalize
from earlyjax.metric_log import read_records
from earlyjax.periodic import StopAt
from earlyjax.train import (
    TrainingDiverged,
    format_results,
    make_train_step,
    setup,
    train_and_evaluate,
)


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


def test_run_killed_before_results_json_writes_one_final_line(finished_run, tmp_path, tiny_dataset):
    config, workdir, results = copy_run(finished_run, tmp_path)
    log = os.path.join(workdir, "metrics.jsonl")
    uninterrupted = read_records(log)
    assert [r["kind"] for r in uninterrupted][-1] == "final"
    os.remove(os.path.join(workdir, "results.json"))  # killed between the final line and it
    again = train_and_evaluate(config, workdir, dataset=tiny_dataset)
    assert again["id_accuracy"] == results["id_accuracy"]
    assert read_records(log) == uninterrupted  # exactly one final line
    assert [r["kind"] for r in read_records(log + ".orphaned-after-6")] == ["final"]
    assert_tensorboard_matches_log(workdir)  # and one final/* event


def test_run_killed_while_writing_the_final_line(finished_run, tmp_path, tiny_dataset, capsys):
    config, workdir, _ = copy_run(finished_run, tmp_path)
    log = os.path.join(workdir, "metrics.jsonl")
    uninterrupted = read_records(log)
    with open(log, "rb") as f:
        data = f.read()
    cut = len(data) - 12  # half of the final line
    with open(log, "wb") as f:
        f.write(data[:cut])
    os.remove(os.path.join(workdir, "results.json"))
    train_and_evaluate(config, workdir, dataset=tiny_dataset)
    assert read_records(log) == uninterrupted
    with open(log + ".incomplete-line", "rb") as f:
        assert f.read() == data[data.rindex(b"\n", 0, len(data) - 1) + 1 : cut]
    assert capsys.readouterr().out.count("incomplete last line") == 1


RUN = [
    sys.executable,
    "-m",
    "experiments.main",
    "--config=quickstart.py",
    "--config.model.width=4",
    "--config.total_steps=40",
    "--config.log_every=1",
    "--config.record.every=0",
    "--config.data.ood_source=none",
    "--config.progress_bar=False",
    "--config.unfreeze.k=none",
]


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) mounts a tmpfs of that size at tmp_path/disk and returns its path;
    remount(size) resizes it. Unmounted at the end."""
    path = tmp_path / "disk"
    path.mkdir()
    mounted = []

    def mount(options):
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
        if proc.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode})")
        mounted.append(path)
        return path

    def remount(options):
        subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)

    mount.remount = remount
    yield mount
    for p in mounted:
        subprocess.run(["umount", "-l", str(p)], check=False)


def run_main(workdir, *extra, timeout=180):
    """experiments.main on the tiny run; a hang fails the test through the timeout."""
    cmd = [*RUN, f"--workdir={workdir}", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def last_line(proc) -> str:
    return proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "size,extra,failing",
    [
        # 4 pages: the lock, config.json, and the first page of the metric log and the event
        # file; the log's second page (~step 25) finds the disk full.
        ("16k", ["--config.checkpoint_every=0"], "metrics.jsonl"),
        # Room for one checkpoint (step 5) but not the next. Slow (~25 s): the injected
        # checkpoint failure below covers the same path in the default run.
        pytest.param(
            "1200k",
            ["--config.checkpoint_every=5", "--config.keep_checkpoints=3"],
            "checkpoint",
            marks=pytest.mark.slow,
        ),
    ],
    ids=["metric-log", "checkpoint"],
)
def test_a_full_disk_ends_the_run_with_one_line_and_the_workdir_resumes(
    small_disk, size, extra, failing
):
    workdir = small_disk(f"size={size}") / "run"
    full = run_main(workdir, *extra)
    assert full.returncode == 1, full.stderr
    line = last_line(full)
    assert line.startswith("error: cannot ") and failing in line, line
    assert "No space left on device" in line or "RESOURCE_EXHAUSTED" in line
    assert "rerun the same command" in line
    steps_before = [r["step"] for r in read_records(os.path.join(workdir, "metrics.jsonl"))]
    assert 0 < max(steps_before) < 40  # it failed mid-run

    small_disk.remount("size=20m")
    resumed = run_main(workdir, *extra)
    assert resumed.returncode == 0, resumed.stderr
    records = read_records(os.path.join(workdir, "metrics.jsonl"))
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 41))
    assert os.path.exists(os.path.join(workdir, "results.json"))
    assert_tensorboard_matches_log(workdir)


def test_a_read_only_workdir_is_one_line_before_anything_runs(small_disk):
    disk = small_disk("size=1m,ro")
    proc = run_main(disk / "run")
    assert proc.returncode == 1
    assert last_line(proc).startswith(f"error: cannot write or read {disk / 'run'}")
    assert "Read-only file system" in last_line(proc)


TINY_RUN = [
    "--config=quickstart.py",
    "--config.model.width=4",
    "--config.batch_size=32",
    "--config.checkpoint_every=1000",
    "--config.data.ood_source=none",
    "--config.progress_bar=False",
    "--config.unfreeze.k=none",
    "--config.log_every=1",
]


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)]
)  # SIGINT takes the same path (slow: ~9 s each)
def test_signal_saves_a_checkpoint_and_resumes_exactly(
    tmp_path, tiny_config, tiny_dataset, monkeypatch, signum
):
    from earlyjax import train

    tiny_config.log_every = 3
    train.train_and_evaluate(tiny_config, str(tmp_path / "ref"), dataset=tiny_dataset)

    make_train_step = train.make_train_step

    def signalling_train_step(*args, **kwargs):
        step_fn, calls = make_train_step(*args, **kwargs), []

        def step(state, batch):
            calls.append(1)
            if len(calls) == 5:  # mid-way between two log lines: pending stats to carry
                signal.raise_signal(signum)
            return step_fn(state, batch)

        return step

    monkeypatch.setattr(train, "make_train_step", signalling_train_step)
    workdir = str(tmp_path / "run")
    with pytest.raises(train.Interrupted) as info:
        train.train_and_evaluate(tiny_config, workdir, dataset=tiny_dataset)
    assert (info.value.code, info.value.step) == (128 + signum, 5)
    assert signal.getsignal(signum) is not None  # the previous handler is back
    monkeypatch.setattr(train, "make_train_step", make_train_step)
    train.train_and_evaluate(tiny_config, workdir, dataset=tiny_dataset)
    assert metric_records(workdir, "train") == metric_records(str(tmp_path / "ref"), "train")
    assert_tensorboard_matches_log(workdir)


@pytest.mark.slow
def test_main_process_sigterm_sigint_lock_and_resume(tmp_path):
    """A real `experiments.main`: a second run on its workdir refuses naming it; SIGINT, then
    SIGTERM, each checkpoint and exit cleanly; the resumed run logs what an uninterrupted one
    does."""
    steps = ["--config.total_steps=400"]
    main = [sys.executable, "-m", "experiments.main", *TINY_RUN, *steps]
    ref = str(tmp_path / "ref")
    subprocess.run([*main, f"--workdir={ref}"], cwd=ROOT, check=True, capture_output=True)
    workdir = str(tmp_path / "run")
    last_step = 0
    for signum in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen(
            [*main, f"--workdir={workdir}"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

        def trained_on(last=last_step):
            return os.path.exists(os.path.join(workdir, "metrics.jsonl")) and any(
                r["step"] > last + 2 for r in metric_records(workdir, "train")
            )

        wait_for(trained_on, 120, "training to start")
        if signum == signal.SIGINT:
            second = subprocess.run(
                [*main, f"--workdir={workdir}"], cwd=ROOT, capture_output=True, text=True
            )
            assert second.returncode != 0
            assert second.stderr.strip().count("\n") == 0, second.stderr
            assert f"pid {proc.pid} " in second.stderr and "Traceback" not in second.stderr
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signum, err
        assert "Traceback" not in err.decode()
        assert f"{signal.Signals(signum).name}: stopped at step" in err.decode()
        saved = [int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit()]
        assert last_step < max(saved) < 400
        last_step = max(saved)
    subprocess.run([*main, f"--workdir={workdir}"], cwd=ROOT, check=True, capture_output=True)
    assert metric_records(workdir, "train") == metric_records(ref, "train")


def _direct_metrics(task, state, split):
    """Accuracy (%) and mean loss of the whole split in one eval-mode forward pass, normalised
    as the train and eval steps normalise."""
    x = normalize(split.images, task.mean, task.std)
    apply = jax.jit(task.model.apply, static_argnames="train")
    logits = apply({"params": state.params, "batch_stats": state.model_state}, x, train=False)
    labels = split.labels
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    accuracy = 100.0 * float(np.mean(np.argmax(np.asarray(logits), -1) == labels))
    return {"accuracy": accuracy, "loss": float(np.mean(np.asarray(losses, np.float64)))}


@pytest.mark.slow  # ~13 s; the other trainer tests train the same loop on the same data
def test_standard_training_learns_the_digits(tiny_config, tmp_path):
    """A short standard run (no freezing) with MNIST's Table 5 optimiser lowers the training
    loss and scores far above chance on the held-out digits.

    Measured on 2 CPU cores over seeds 0-7: test accuracy 78-98%, the mean loss of the last
    three logged lines 0.12-0.33 against 2.30-2.36 in the first, their training accuracy >= 91%.
    The bounds leave room for other machines' float trajectories while ruling out a run that
    does not learn (10% accuracy, loss 2.3).
    """
    train, test = load_digits_splits()  # 1,347 training and 450 test digits
    dataset = Dataset("digits", 10, train, test, {})
    config = tiny_config
    config.unfreeze.k = None
    config.unfreeze.allow_late_release = False
    config.optimizer.lr = 0.01  # experiments/configs/mnist_rn18.py
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 0.01
    config.total_steps = 150
    config.log_every = 10

    results = train_and_evaluate(config, str(tmp_path), dataset=dataset)

    records = read_records(os.path.join(tmp_path, "metrics.jsonl"))
    lines = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in lines] == list(range(10, 151, 10))
    assert all(r["lr"] == pytest.approx(0.01) for r in lines)  # constant
    assert all(len(r["trainable"]) == 6 for r in lines)  # 5 blocks + head, none frozen
    first, last = lines[0]["loss"], np.mean([r["loss"] for r in lines[-3:]])
    assert first > 2.0, f"the first lines should start near log(10) = 2.30, got {first}"
    assert last < 0.4 * first, f"training loss did not fall: first {first}, last three {last}"
    assert np.mean([r["accuracy"] for r in lines[-3:]]) > 70.0
    assert results["steps"] == 150
    assert results["id_accuracy"] > 50.0, f"ID accuracy {results['id_accuracy']}% (chance: 10%)"


def test_evaluate_equals_one_pass_over_the_split(tiny_config, tiny_dataset):
    """`evaluate` over fixed-size batches, the last one zero-padded and masked, gives what one
    pass over the whole split gives: 50 divides the 100 test digits, 64 leaves a last batch of
    36 real rows and 28 padding, 128 pads the only batch."""
    run_setup, state = setup(tiny_config, tiny_dataset)
    task = run_setup.task
    train_step = make_train_step(run_setup, state)
    train = tiny_dataset.train
    for i in range(4):  # move the weights and BN running statistics off their initial values
        rows = slice(32 * i, 32 * (i + 1))
        batch = {"image": train.images[rows], "label": train.labels[rows]}
        state, _ = train_step(state, jax.device_put(batch))
    split = tiny_dataset.test
    assert split.images.shape[0] == 100
    want = _direct_metrics(task, state, split)
    # The padded rows are zero images labelled 0: were they counted, a metric would move.
    assert 0.0 < want["accuracy"] < 100.0

    for batch_size in (50, 64, 128):
        got = task.evaluate_split(state.params, state.model_state, split, batch_size)
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5), batch_size
        assert got["accuracy"] == pytest.approx(want["accuracy"], abs=1e-9), batch_size


def test_final_solution_metrics_land_in_results_and_the_final_line(
    tiny_config, tiny_dataset, tmp_path
):
    c = tiny_config
    c.final.metrics = ("hessian", "feature_eigenvalue")
    c.record.set_size, c.record.batch_size = 64, 32
    c.record.hessian_iters = 3
    results = train_and_evaluate(c, str(tmp_path), dataset=tiny_dataset)
    final = results["final_solution"]
    assert set(final) == {"hessian", "feature_eigenvalue"}
    assert all(math.isfinite(v) and v > 0 for v in final.values())
    (line,) = [
        r for r in read_records(os.path.join(tmp_path, "metrics.jsonl")) if r["kind"] == "final"
    ]
    assert {k: line[k] for k in final} == final
    summary = format_results(results).splitlines()[-1]
    assert summary.startswith("Final solution (metric set): feature_eigenvalue ")
