"""One writer per workdir, checkpoint-and-exit on SIGTERM/SIGINT, and sweep children that die
with their driver (real signals to real processes)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import assert_tensorboard_matches_log

from earlyjax.workdir_lock import WorkdirBusy, workdir_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _train_records(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["kind"] == "train"]


def test_lock_refuses_a_second_holder_and_is_released(tmp_path):
    workdir = str(tmp_path / "run")
    busy = pytest.raises(WorkdirBusy, match=f"pid {os.getpid()} ")
    with workdir_lock(workdir), busy, workdir_lock(workdir):
        pass
    with workdir_lock(workdir):  # released on exit
        pass
    with pytest.raises(RuntimeError), workdir_lock(workdir):
        raise RuntimeError
    with workdir_lock(workdir):  # and on an exception
        pass


def test_train_refuses_a_locked_workdir_before_writing(tmp_path, tiny_config, tiny_dataset):
    from earlyjax.train import train_and_evaluate

    workdir = str(tmp_path / "run")
    with workdir_lock(workdir), pytest.raises(WorkdirBusy, match="in use by another run"):
        train_and_evaluate(tiny_config, workdir, dataset=tiny_dataset)
    assert sorted(os.listdir(workdir)) == [".lock"]
    assert train_and_evaluate(tiny_config, workdir, dataset=tiny_dataset) is not None


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
    assert _train_records(workdir) == _train_records(str(tmp_path / "ref"))
    assert_tensorboard_matches_log(workdir)


@pytest.mark.slow
def test_main_process_sigterm_sigint_lock_and_resume(tmp_path):
    """A real `experiments.main`: a second run on its workdir refuses naming it; SIGINT, then
    SIGTERM, each checkpoint and exit cleanly; the resumed run logs what an uninterrupted one
    does."""
    steps = ["--config.total_steps=400"]
    main = [sys.executable, "-m", "experiments.main", *TINY_RUN, *steps]
    ref = str(tmp_path / "ref")
    subprocess.run([*main, f"--workdir={ref}"], cwd=REPO, check=True, capture_output=True)
    workdir = str(tmp_path / "run")
    last_step = 0
    for signum in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen(
            [*main, f"--workdir={workdir}"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

        def trained_on(last=last_step):
            return os.path.exists(os.path.join(workdir, "metrics.jsonl")) and any(
                r["step"] > last + 2 for r in _train_records(workdir)
            )

        _wait_for(trained_on, 120, "training to start")
        if signum == signal.SIGINT:
            second = subprocess.run(
                [*main, f"--workdir={workdir}"], cwd=REPO, capture_output=True, text=True
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
    subprocess.run([*main, f"--workdir={workdir}"], cwd=REPO, check=True, capture_output=True)
    assert _train_records(workdir) == _train_records(ref)


DRIVER = """
import sys
from experiments.sweep import Point, run_processes
sweep_dir = sys.argv[1]
sleeper = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)"
def command(config_arg, overrides, sweep_dir, point):
    return [sys.executable, "-c", sleeper, f"{sweep_dir}/{point.name}.pid"]
run_processes("unused", [], sweep_dir, [Point("a", ()), Point("b", ())], 2, command=command)
"""


def _start_driver(sweep_dir: str) -> tuple[subprocess.Popen, list[int]]:
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, sweep_dir],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    paths = [os.path.join(sweep_dir, f"{name}.pid") for name in ("a", "b")]

    def started():
        return all(os.path.exists(p) and _read(p) for p in paths)

    _wait_for(started, 60, "the sweep's children")
    pids = [int(_read(p)) for p in paths]
    assert all(map(_alive, pids))
    return driver, pids


def test_sweep_children_die_with_a_killed_driver(tmp_path):
    driver, children = _start_driver(str(tmp_path))
    driver.kill()  # SIGKILL: the driver cannot pass anything on itself
    driver.wait()
    _wait_for(lambda: not any(map(_alive, children)), 10, "the children to end")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sweep_driver_passes_signals_on_and_waits(tmp_path, signum):
    driver, children = _start_driver(str(tmp_path))
    driver.send_signal(signum)
    _, err = driver.communicate(timeout=30)
    assert driver.returncode == 128 + signum, err
    assert "Traceback" not in err and "stopped the sweep" in err
    assert not any(map(_alive, children))  # the driver waited for them
