"""Runs a grid of experiments (k values, seeds, LR scales, LR switches) into one sweep folder.

    python -m experiments.sweep --config=mnist_rn18.py --sweep_dir=runs/mnist_k \
        --k=none,1,10,100,1000 --seeds=0,1,2 --lr_scale=1.0,0.1
    python -m experiments.sweep --config=cifar10_rn18.py --sweep_dir=runs/c10_k --k_log=10
    python -m experiments.sweep --config=cifar10_rn18.py --sweep_dir=runs/c10_lr \
        --lr_switch=l2h:300,h2l:300 --seeds=0,1,2

Each grid point is one run in `sweep_dir/<name>/` (e.g. `k=10_seed=0_lrs=1`), trained by
`earlyjax.train.train_and_evaluate`: finished runs are skipped, interrupted ones resume from
their newest checkpoint, so a killed sweep is simply started again with the same command.
`--config.a.b=v` overrides apply to every run. `sweep.json` records the grid; a sweep folder
refuses a different grid. `--processes=N` runs N runs at once as separate processes (on GPUs,
process i sees only GPU i via CUDA_VISIBLE_DEVICES). `--dry_run` lists the grid with each
point's index; `--only=I,J` runs only those points (a SLURM array task runs
`--only=$SLURM_ARRAY_TASK_ID`, see launch/slurm.py).
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from absl import app, flags, logging

from earlyjax.config import Field
from experiments import cli
from experiments.cli import apply_overrides

if TYPE_CHECKING:
    from earlyjax.task_protocol import Task

SWEEP_FILE = "sweep.json"

flags.DEFINE_string("sweep_dir", None, "Folder of the sweep; each run gets a subfolder.")
flags.DEFINE_list(
    "k",
    [],
    "Removal steps of --intervention: unfreezing intervals, or LR switch steps; ints and/or "
    "'none' (standard training).",
)
flags.DEFINE_integer(
    "k_log", 0, "Also add this many k values log-spaced from 1 to total_steps / L (Fig. 1)."
)
flags.DEFINE_list("lr_scale", [], "LR scales (1.0 = lr_d, 0.1 = 0.1*lr_d); default: config's.")
flags.DEFINE_list("lr_switch", [], "LR switches as DIRECTION:STEP, e.g. l2h:300,h2l:300.")
flags.DEFINE_integer("processes", 1, "Runs at once, each in its own process.")
flags.DEFINE_bool("dry_run", False, "Print the runs (index, whether each is done, name) and exit.")
flags.DEFINE_list(
    "only", [], "Run only the grid points with these 0-based indices (as --dry_run lists them)."
)


@dataclass(frozen=True)
class Point:
    """One run of the grid: its folder name and its config overrides (dotted field -> value)."""

    name: str
    overrides: tuple[tuple[str, object], ...]


def _parse_k(value: str) -> int | None:
    if value.lower() == "none":
        return None
    k = int(value)
    if k < 1:
        raise ValueError(f"--k value {value!r}: use 'none' or an int >= 1")
    return k


def log_spaced_ks(num: int, max_k: int) -> list[int]:
    """`num` distinct ints from 1 to max_k, evenly spaced in log (Fig. 1's x axis)."""
    if num < 1 or max_k < 1:
        return []
    if num == 1:
        return [1]
    ks = {round(math.exp(math.log(max_k) * i / (num - 1))) for i in range(num)}
    return sorted(ks)


def _fmt(value: object) -> str:
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def expand_grid(
    ks: Sequence[int | None],
    seeds: Sequence[int],
    lr_scales: Sequence[float],
    lr_switches: Sequence[tuple[str, int]],
    intervention=None,
) -> list[Point]:
    """The cross product of the grid's axes as Points (empty axes keep the config's value).

    `ks` are removal steps of `intervention` (`earlyjax.interventions`; default gradual
    unfreezing): its `overrides_for_k` turns each into config fields."""
    from earlyjax.interventions import GradualUnfreezing

    intervention = intervention or GradualUnfreezing(())
    axes: list[list[tuple[str, tuple[tuple[str, object], ...]]]] = []
    if ks:
        axes.append([(f"k={_fmt(k)}", intervention.overrides_for_k(k)) for k in ks])
    if lr_switches:
        axes.append(
            [
                (
                    f"lr={d}@{s}",
                    ((Field.LR_SWITCH, d), (Field.LR_SWITCH_STEP, s)),
                )
                for d, s in lr_switches
            ]
        )
    axes.append([(f"seed={s}", (("seed", s),)) for s in seeds])
    if lr_scales:
        axes.append([(f"lrs={_fmt(x)}", ((Field.LR_SCALE, x),)) for x in lr_scales])
    points = []
    for combo in itertools.product(*axes):
        name = "_".join(n for n, _ in combo)
        overrides = tuple(kv for _, kvs in combo for kv in kvs)
        points.append(Point(name, overrides))
    return points


def manifest(config, points: Sequence[Point]) -> dict:
    """What `sweep.json` records: the config and every grid point's overrides (always the whole
    grid, so that `--only` tasks of one sweep agree)."""
    return {
        "config": json.loads(config.to_json()),
        "runs": {p.name: dict(p.overrides) for p in points},
    }


def write_manifest(sweep_dir: str, content: dict) -> None:
    """Writes `sweep.json`, or checks that the folder's is the same sweep (SystemExit if not)."""
    from earlyjax.metric_log import naming_the_file  # noqa: PLC0415 (it imports jax)

    path = os.path.join(sweep_dir, SWEEP_FILE)
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if saved != content:
            raise SystemExit(
                f"{sweep_dir} holds a different sweep ({path}); use a fresh --sweep_dir, or "
                "rerun the original command to finish it"
            )
        return
    os.makedirs(sweep_dir, exist_ok=True)
    # A unique temporary name: array tasks of one sweep may write the manifest at the same time.
    fd, tmp = tempfile.mkstemp(prefix=SWEEP_FILE + ".", suffix=".tmp", dir=sweep_dir)
    with naming_the_file(tmp), os.fdopen(fd, "w") as f:
        json.dump(content, f, indent=2)
    os.replace(tmp, path)


def select_points(points: Sequence[Point], only: Sequence[str]) -> list[tuple[int, Point]]:
    """The (index, point) pairs that `--only` names, in grid order; all of them without `only`.

    Raises ValueError naming a value that is not an index of the grid, and the valid range.
    """
    if not only:
        return list(enumerate(points))
    valid = f"indices 0 to {len(points) - 1}" if points else "no indices"
    chosen = set()
    for value in only:
        try:
            index = int(value)
        except ValueError:
            index = -1
        if not 0 <= index < len(points):
            raise ValueError(
                f"--only value {value!r} is not a grid index: this grid has {len(points)} "
                f"points, {valid} (--dry_run lists them)"
            )
        chosen.add(index)
    return [(i, points[i]) for i in sorted(chosen)]


def gpu_for_slot(slot: int, visible: str | None) -> str:
    """The CUDA_VISIBLE_DEVICES value for process slot `slot`, within the parent's GPUs."""
    if visible:
        gpus = [g.strip() for g in visible.split(",") if g.strip()]
        if slot < len(gpus):
            return gpus[slot]
    return str(slot)


def is_done(sweep_dir: str, point: Point) -> bool:
    from earlyjax.train import RESULTS_FILE

    return os.path.exists(os.path.join(sweep_dir, point.name, RESULTS_FILE))


def run_sequential(config, sweep_dir: str, points: Sequence[Point]) -> None:
    """Runs the points one after another, on one task built for the first run to do: the
    points differ in fields the task does not read (k, seed, learning rate)."""
    from earlyjax.train import build_task, train_and_evaluate

    task: Task | None = None
    for i, point in enumerate(points):
        if is_done(sweep_dir, point):
            print(f"[{i + 1}/{len(points)}] {point.name}: done, skipped")
            continue
        print(f"[{i + 1}/{len(points)}] {point.name}")
        run_config = config.copy_and_resolve_references()
        apply_overrides(run_config, point.overrides)
        task = task or build_task(run_config)
        train_and_evaluate(run_config, os.path.join(sweep_dir, point.name), task=task)


def child_command(
    config_arg: str,
    override_args: Sequence[str],
    sweep_dir: str,
    point: Point,
) -> list[str]:
    """The `python -m experiments.main` command that runs `point` in its own process.

    `override_args` are the sweep's own `--config.x=v` arguments as the user gave them
    (cli.config_override_args()), passed on unchanged; the point's overrides come after them,
    so they win, each written so that the child parses it back to itself.
    """
    return [
        sys.executable,
        "-m",
        "experiments.main",
        f"--config={config_arg}",
        f"--workdir={os.path.join(sweep_dir, point.name)}",
        *override_args,
        *cli.override_args(point.overrides),
    ]


def run_processes(
    config_arg: str,
    override_args: Sequence[str],
    sweep_dir: str,
    points: Sequence[Point],
    n: int,
    command: Callable[[str, Sequence[str], str, Point], list[str]] = child_command,
) -> None:
    """Runs the points as `python -m experiments.main` processes (`command`), n at a time.

    The children die with the driver: on Linux each gets SIGTERM when the driver dies, even by
    `kill -9`; SIGTERM or SIGINT to the driver is passed on to them as SIGTERM (each saves a
    checkpoint and stops), the driver waits for them and exits with 128 + the signal number.
    A second signal kills the children at once.
    """
    todo = [p for p in points if not is_done(sweep_dir, p)]
    running: list[tuple[subprocess.Popen, int, Point]] = []
    free = list(range(n))
    failed = []
    signals = _DriverSignals()
    signals.install()
    try:
        while (todo or running) and not signals.received:
            while todo and free:
                slot, point = free.pop(0), todo.pop(0)
                cmd = command(config_arg, override_args, sweep_dir, point)
                gpu = gpu_for_slot(slot, os.environ.get("CUDA_VISIBLE_DEVICES"))
                env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpu) if n > 1 else None
                print(f"start {point.name} (slot {slot})", flush=True)
                running.append((_start_child(cmd, env), slot, point))
            finished = [r for r in running if r[0].poll() is not None]
            for proc, slot, point in finished:
                running.remove((proc, slot, point))
                if proc.returncode != 0:
                    failed.append(point.name)
                print(f"{'FAILED' if proc.returncode else 'done'} {point.name}", flush=True)
                free.append(slot)
            if running and not finished:
                time.sleep(0.1)
        if signals.received:
            _stop_children([proc for proc, _, _ in running], signals)
            name = signal.Signals(signals.received[0]).name
            print(
                f"{name}: stopped the sweep and its {len(running)} running runs; rerun the same "
                "command to resume",
                file=sys.stderr,
            )
            raise SystemExit(128 + signals.received[0])
    finally:
        signals.restore()
    if failed:
        raise SystemExit(f"runs failed: {', '.join(failed)}; rerun the same command to retry")


class _DriverSignals:
    """While installed (main thread only), records SIGTERM and SIGINT instead of stopping."""

    def __init__(self):
        self.received: list[int] = []
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = {
                s: signal.signal(s, lambda signum, frame: self.received.append(signum))
                for s in (signal.SIGTERM, signal.SIGINT)
            }

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}


def _stop_children(procs: Sequence[subprocess.Popen], signals: _DriverSignals) -> None:
    """SIGTERMs the children and waits for them; a further signal to the driver kills them."""
    seen = len(signals.received)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    while any(proc.poll() is None for proc in procs):
        if len(signals.received) > seen:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
        time.sleep(0.1)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with(parent: int) -> None:
    """Runs in the child before exec: asks Linux for SIGTERM when the parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _start_child(cmd: list[str], env: dict[str, str] | None) -> subprocess.Popen:
    on_linux = sys.platform.startswith("linux")
    preexec = functools.partial(_die_with, os.getpid()) if on_linux else None
    return subprocess.Popen(cmd, env=env, preexec_fn=preexec)


def intervention_for(name: str, config):
    """The intervention (`earlyjax.interventions`) called `name`, for the config's task."""
    from earlyjax.config import ConfigError
    from earlyjax.plan import intervention_named
    from earlyjax.train import task_blocks

    class Blocks:  # what intervention_named needs of the task: its block names
        blocks, head = task_blocks(config)

    try:
        return intervention_named(name, config, Blocks)
    except ConfigError as e:
        raise SystemExit(f"--intervention={name}: {e}") from None


def build_points(config) -> list[Point]:
    removed = intervention_for(flags.FLAGS.intervention, config)
    ks = [_parse_k(v) for v in flags.FLAGS.k]
    if flags.FLAGS.k_log:
        max_k = max_removal_step(config, removed)
        ks += [k for k in log_spaced_ks(flags.FLAGS.k_log, max_k) if k not in ks]
    seeds = [int(s) for s in flags.FLAGS.seeds]
    scales = [float(s) for s in flags.FLAGS.lr_scale]
    switches = []
    for item in flags.FLAGS.lr_switch:
        direction, _, step = item.partition(":")
        if direction not in ("l2h", "h2l") or not step.isdigit() or int(step) < 1:
            raise SystemExit(f"--lr_switch value {item!r}: use l2h:STEP or h2l:STEP, STEP >= 1")
        switches.append((direction, int(step)))
    return expand_grid(ks, seeds, scales, switches, removed)


def max_removal_step(config, intervention, num_train: int | None = None) -> int:
    """The largest k of Fig. 1 whose schedule ends inside the run
    (`Intervention.max_fitting_k`: (T - 1) // L for gradual unfreezing); the task's training
    set is read for its size unless `num_train` gives it."""
    from earlyjax.train import task_num_train, total_steps

    if num_train is None and not config.total_steps:
        num_train = task_num_train(config)
    return max(1, intervention.max_fitting_k(total_steps(config, num_train or 1)))


def plan(args: Sequence[str]) -> tuple[str, list[Point]]:
    """The sweep folder and the whole grid (what --dry_run lists, in its order) of
    `python -m experiments.sweep ARGS`, without running anything; launch/slurm.py makes its
    array job of them. A flag that does not parse, or a bad grid, is a SystemExit with one
    line. The flags are parsed into absl's FLAGS and unparsed again before returning."""
    try:
        rest = cli.parse_flags(cli.rewrite_config_argument(["sweep", *args]))
        if len(rest) > 1:
            raise SystemExit(f"unexpected arguments: {rest[1:]}")
        if flags.FLAGS.config is None or not flags.FLAGS.sweep_dir:
            raise SystemExit("--config and --sweep_dir are required")
        return flags.FLAGS.sweep_dir, build_points(flags.FLAGS.config)
    except (flags.Error, ValueError) as e:
        raise SystemExit(str(e)) from None
    finally:
        flags.FLAGS.unparse_flags()


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS.sweep_dir:
        raise app.UsageError("--sweep_dir is required")
    if flags.FLAGS.distributed and flags.FLAGS.processes > 1:
        raise app.UsageError(
            "--distributed runs each point over every host's devices, one after another; "
            f"drop --processes={flags.FLAGS.processes}"
        )
    cli.initialize_distributed()
    cli.enable_compilation_cache()
    logging.set_verbosity(logging.WARNING)
    config = flags.FLAGS.config
    try:
        points = build_points(config)
        selected = select_points(points, flags.FLAGS.only)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    sweep_dir = flags.FLAGS.sweep_dir
    if flags.FLAGS.dry_run:
        for i, p in selected:
            print(f"{i:>3}  {'done' if is_done(sweep_dir, p) else 'todo'}  {p.name}")
        return
    write_manifest(sweep_dir, manifest(config, points))
    todo = [p for _, p in selected]
    if flags.FLAGS.processes > 1:
        args = cli.config_override_args()
        run_processes(_config_arg(), args, sweep_dir, todo, flags.FLAGS.processes)
    else:
        with cli.errors_as_one_line():
            run_sequential(config, sweep_dir, todo)
    of_grid = f" of {len(points)}" if len(todo) < len(points) else ""
    print(f"sweep finished: {len(todo)}{of_grid} runs in {sweep_dir}")


def _config_arg() -> str:
    """The --config value that was parsed (a resolved path, with its ':arg' if any)."""
    if flags.FLAGS.config is None:
        raise app.UsageError("--config is required")
    return flags.FLAGS["config"].config_filename


def run() -> None:
    sys.argv = cli.rewrite_config_argument(sys.argv)
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
