"""Sweeps: grid expansion, skip/resume after a kill, and the tables and figure made from them."""

import json
import os
import signal
import subprocess
import sys

import pytest
from absl import flags
from helpers import ROOT, read_text, wait_for

from earlyjax.interventions import LRSwitch
from earlyjax.periodic import StopAt
from experiments import analysis, cli
from experiments.cli import apply_overrides
from experiments.sweep import (
    Point,
    expand_grid,
    gpu_for_slot,
    intervention_for,
    log_spaced_ks,
    max_removal_step,
    run_sequential,
    select_points,
)


def test_grid_is_the_cross_product_with_readable_names():
    points = expand_grid([None, 10], [0, 1], [1.0, 0.1], [])
    assert len(points) == 8
    assert points[0] == Point(
        "k=none_seed=0_lrs=1", (("unfreeze.k", None), ("seed", 0), ("optimizer.lr_scale", 1.0))
    )
    switch = expand_grid([], [0], [], [("l2h", 300)])
    assert switch[0].name == "lr=l2h@300_seed=0"
    assert dict(switch[0].overrides)["optimizer.lr_switch_step"] == 300
    # --k of another intervention: the same axis, that intervention's config fields.
    steps = expand_grid([None, 300], [0], [], [], LRSwitch("h2l"))
    assert [p.overrides for p in steps] == [
        (("optimizer.lr_switch", None), ("optimizer.lr_switch_step", None), ("seed", 0)),
        (("optimizer.lr_switch_step", 300), ("seed", 0)),
    ]


def test_log_spaced_ks_span_one_to_max():
    ks = log_spaced_ks(5, 1000)
    assert ks[0] == 1 and ks[-1] == 1000 and ks == sorted(set(ks))
    assert log_spaced_ks(4, 8) == [1, 2, 4, 8]


@pytest.fixture
def sweep_config(tiny_config):
    tiny_config.total_steps = 4
    tiny_config.log_every = 2
    tiny_config.checkpoint_every = 2
    return tiny_config


@pytest.mark.slow  # ~17 s: trains and kills a sweep; lottery and paper reruns skip done runs
def test_killed_sweep_resumes_without_redoing_finished_runs(sweep_config, tmp_path, capsys):
    from earlyjax.train import train_and_evaluate

    points = expand_grid([None, 2], [0, 1], [], [])
    sweep = str(tmp_path)
    # As if killed during the second run: the first finished, the second stopped at step 2.
    first = points[0]
    cfg = sweep_config.copy_and_resolve_references()
    apply_overrides(cfg, first.overrides)
    train_and_evaluate(cfg, os.path.join(sweep, first.name))
    cfg = sweep_config.copy_and_resolve_references()
    apply_overrides(cfg, points[1].overrides)
    train_and_evaluate(cfg, os.path.join(sweep, points[1].name), extra_actions=[StopAt(2)])
    finished = os.path.join(sweep, first.name, "results.json")
    mtime = os.stat(finished).st_mtime_ns
    capsys.readouterr()

    run_sequential(sweep_config, sweep, points)
    out = capsys.readouterr().out
    assert f"{first.name}: done, skipped" in out
    assert "resumed from the checkpoint at step 2" in out
    assert os.stat(finished).st_mtime_ns == mtime
    assert all(os.path.exists(os.path.join(sweep, p.name, "results.json")) for p in points)

    runs = analysis.load_runs(sweep)
    assert len(runs) == 4
    rows = analysis.table1(runs)
    assert [r["training"] for r in rows] == ["standard", "GU k=2"]
    assert rows[0]["ΔID"] == 0 and rows[1]["n"] == 2
    std = [r["id"] for r in runs if r["k"] is None]
    assert rows[0]["ID"] == pytest.approx(sum(std) / 2)
    markdown = analysis.write_table(rows, str(tmp_path / "out"), "table1")
    assert "GU k=2" in markdown and " ± " in markdown
    assert (tmp_path / "out" / "table1.csv").exists()
    paths = analysis.figure1(runs, str(tmp_path / "out"))
    assert paths and all(os.path.getsize(p) > 1000 for p in paths)


@pytest.mark.slow  # ~13 s: four real runs; test_analysis checks Table 3 on synthetic runs
def test_table3_separates_lr_switches(sweep_config, tmp_path):
    sweep_config.unfreeze.k = None
    points = expand_grid([], [0], [], [("l2h", 2), ("h2l", 2)])
    run_sequential(sweep_config, str(tmp_path), points)
    rows = analysis.table3(analysis.load_runs(str(tmp_path)))
    assert sorted(r["schedule"] for r in rows) == ["lr_h2l @ 2", "lr_l2h @ 2"]


def dry_run_command(sweep_dir) -> list[str]:
    """The sweep CLI's dry run of a 2 x 2 grid (k none/5, seeds 0/1) of the quickstart."""
    return [
        sys.executable,
        "-m",
        "experiments.sweep",
        "--config=quickstart.py",
        f"--sweep_dir={sweep_dir}",
        "--k=none,5",
        "--seeds=0,1",
        "--dry_run",
    ]


def test_cli_dry_run_lists_the_grid_and_refuses_bad_values(tmp_path):
    cmd = dry_run_command(tmp_path)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        "0",
        "todo",
        "k=none_seed=0",
        "1",
        "todo",
        "k=none_seed=1",
        "2",
        "todo",
        "k=5_seed=0",
        "3",
        "todo",
        "k=5_seed=1",
    ]
    proc = subprocess.run(
        cmd[:-2] + ["--k=0"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode != 0 and "use 'none' or an int >= 1" in proc.stderr


def test_a_transformer_sweep_takes_blocks_and_run_length_from_the_text_task():
    from experiments.configs.quickstart_nli import get_config

    c = get_config()  # 4 LoRA layers, 160 steps
    unfreezing = intervention_for("gradual_unfreezing", c)
    assert unfreezing.blocks == ("layers_0", "layers_1", "layers_2")
    assert unfreezing.head == ("layers_3", "head")  # App. A: trains from step 0
    assert max_removal_step(c, unfreezing) == (160 - 1) // 3  # Fig. 1's largest k


def test_only_selects_grid_indices_in_grid_order():
    points = expand_grid([None, 10], [0, 1, 2], [], [])
    assert select_points(points, []) == list(enumerate(points))
    assert select_points(points, ["4", "1", "4"]) == [(1, points[1]), (4, points[4])]
    for bad in ("6", "-1", "x"):
        with pytest.raises(ValueError, match=rf"--only value '{bad}'.*6 points, indices 0 to 5"):
            select_points(points, [bad])


def test_process_slots_map_into_the_parents_visible_gpus():
    assert gpu_for_slot(1, None) == "1"
    assert gpu_for_slot(1, "4,6") == "6"
    assert gpu_for_slot(0, "") == "0"


def test_cli_only_lists_and_runs_just_those_indices(tmp_path):
    cmd = dry_run_command(tmp_path)
    proc = subprocess.run(
        cmd + ["--only=3,1"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "todo", "k=none_seed=1", "3", "todo", "k=5_seed=1"]
    proc = subprocess.run(cmd + ["--only=4"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode != 0
    assert "--only value '4'" in proc.stderr and "indices 0 to 3" in proc.stderr
    assert not os.path.exists(tmp_path / "sweep.json")


def test_child_command_passes_the_users_overrides_as_given_then_the_points():
    from experiments.configs import quickstart
    from experiments.sweep import child_command

    given = [
        "--config.unfreeze.k=none",
        "--config.data.ood_source=none",
        "--config.optimizer.lr=1e-3",
        "--config.data.ood_severities=2,4",
        "--config.seed=5",
    ]
    point = Point("k=3_seed=1", (("unfreeze.k", 3), ("seed", 1), ("optimizer.lr_scale", 0.1)))
    cmd = child_command("/c/quickstart.py", given, "/sweep", point)
    assert cmd[:5] == [
        sys.executable,
        "-m",
        "experiments.main",
        "--config=/c/quickstart.py",
        "--workdir=/sweep/k=3_seed=1",
    ]
    assert cmd[5:] == [
        *given,
        "--config.unfreeze.k=3",
        "--config.seed=1",
        "--config.optimizer.lr_scale=0.1",
    ]
    config = quickstart.get_config()
    config.lock()
    rest, raw = cli.split_config_args(cmd[4:])
    assert rest == [cmd[4]]
    assert cli.parse_overrides(config, raw) == [
        ("unfreeze.k", None),
        ("data.ood_source", "none"),
        ("optimizer.lr", 1e-3),
        ("data.ood_severities", (2, 4)),
        ("seed", 5),
        *point.overrides,
    ]


def test_processes_pass_the_users_overrides_to_every_child_as_given(tmp_path, monkeypatch):
    """--processes=N: each child gets the sweep's `--config.x=v` texts as typed (`1e-3`, not
    `0.001`; `2,4`, not `(2, 4)`), then its point's; `none` trains k=None, as recorded."""
    from experiments import sweep

    config = os.path.join(ROOT, "experiments", "configs", "quickstart.py")
    argv = ["sweep", f"--config={config}", f"--sweep_dir={tmp_path}"]
    given = [
        "--config.unfreeze.k=none",
        "--config.optimizer.lr=1e-3",
        "--config.data.ood_severities=2,4",
        "--config.seed",  # the two-argument spelling: passed on as --config.seed=7
        "7",
    ]
    argv += [*given, "--seeds=0,1", "--processes=2"]
    monkeypatch.setattr(sys, "argv", list(argv))
    monkeypatch.setattr(cli, "enable_compilation_cache", lambda: None)
    commands = []

    class Child:
        returncode = 0

        def __init__(self, cmd, env=None, **kwargs):
            commands.append(cmd)

        def poll(self):
            return 0

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(sweep.subprocess, "Popen", Child)
    try:
        assert cli.parse_flags(argv) == ["sweep"]
        sweep.main(["sweep"])
    finally:
        flags.FLAGS.unparse_flags()
    with open(tmp_path / sweep.SWEEP_FILE) as f:
        assert json.load(f)["config"]["unfreeze"]["k"] is None
    assert len(commands) == 2
    as_given = [
        "--config.unfreeze.k=none",
        "--config.optimizer.lr=1e-3",  # the text as typed, not 0.001
        "--config.data.ood_severities=2,4",  # not (2, 4)
        "--config.seed=7",
    ]
    for cmd, seed in zip(commands, (0, 1), strict=True):
        assert cmd[5:] == [*as_given, f"--config.seed={seed}"], cmd
        assert any(a.startswith("--config=") and a.endswith("quickstart.py") for a in cmd)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


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
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    paths = [os.path.join(sweep_dir, f"{name}.pid") for name in ("a", "b")]

    def started():
        return all(os.path.exists(p) and read_text(p) for p in paths)

    wait_for(started, 60, "the sweep's children")
    pids = [int(read_text(p)) for p in paths]
    assert all(map(_alive, pids))
    return driver, pids


def test_sweep_children_die_with_a_killed_driver(tmp_path):
    driver, children = _start_driver(str(tmp_path))
    driver.kill()  # SIGKILL: the driver cannot pass anything on itself
    driver.wait()
    wait_for(lambda: not any(map(_alive, children)), 10, "the children to end")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sweep_driver_passes_signals_on_and_waits(tmp_path, signum):
    driver, children = _start_driver(str(tmp_path))
    driver.send_signal(signum)
    _, err = driver.communicate(timeout=30)
    assert driver.returncode == 128 + signum, err
    assert "Traceback" not in err and "stopped the sweep" in err
    assert not any(map(_alive, children))  # the driver waited for them
