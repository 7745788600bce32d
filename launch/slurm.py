"""SLURM: writes (and with --submit, submits) a batch script for a sweep or one experiment.

    python launch/slurm.py --partition=gpu --gpus=1 --time=12:00:00 --submit \\
        -- sweep --config=cifar10_rn18.py --sweep_dir=runs/c10 --k=none,10,100 --seeds=0,1,2
    python launch/slurm.py --partition=gpu --gpus=4 --nodes=2 --submit \\
        -- main --config=cifar10_rn18.py --workdir=runs/c10_k100 --config.unfreeze.k=100

A sweep becomes an array job with one task per grid point (`--array=0-(N-1)`, the grid from
`experiments.sweep.plan`, called with the sweep's flags); task i runs
`experiments.sweep ... --only=i`. One experiment is a plain job; with `--nodes` > 1 it runs one
process per node with `--distributed`.

Preemption and time limits: the job is `--requeue`able, and Slurm sends USR1 to the batch
shell `--signal_seconds` before the time limit; the script traps it and requeues itself
(`scontrol requeue $SLURM_JOB_ID`). The rerun resumes from the newest checkpoint in its
workdir, finished sweep points are skipped. `--dry_run` prints the script and the sbatch
command and writes nothing.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass

from _common import REPO_ROOT, LaunchError, Program, Runner, fail, split_argv


@dataclass(frozen=True)
class GridPoint:
    """One point of the sweep's grid: its index, whether it is done, its run name."""

    index: int
    done: bool
    name: str


def sweep_grid(program: Program) -> list[GridPoint]:
    """The sweep's grid, from the sweep's own `experiments.sweep.plan` (one source of truth),
    called here with the same flags: a bad sweep flag fails before anything is written."""
    for flag in ("only", "dry_run"):
        if program.has_flag(flag):
            raise LaunchError(f"--{flag} is set by the launcher; leave it out of the sweep flags")
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    from experiments import sweep  # absl, ml_collections and JAX: only for a sweep

    try:
        sweep_dir, points = sweep.plan(program.args)
    except SystemExit as e:
        raise LaunchError(f"the sweep's flags do not make a grid: {e.code}") from None
    if not points:
        raise LaunchError("the sweep's grid is empty")
    return [GridPoint(i, sweep.is_done(sweep_dir, p), p.name) for i, p in enumerate(points)]


def sbatch_header(opts: argparse.Namespace, log_dir: str, array: str | None) -> list[str]:
    """The `#SBATCH` lines."""
    log = os.path.join(log_dir, "%x-%A_%a.out" if array else "%x-%j.out")
    lines = [f"--job-name={opts.job_name}"]
    if array:
        lines.append(f"--array={array}")
    for name in ("partition", "account", "qos", "mem"):
        if getattr(opts, name):
            lines.append(f"--{name}={getattr(opts, name)}")
    lines += [f"--time={opts.time}", f"--nodes={opts.nodes}", "--ntasks-per-node=1"]
    if opts.gpus:
        lines.append(f"--gres=gpu:{opts.gpus}")
    lines += [
        f"--cpus-per-task={opts.cpus_per_task}",
        f"--output={log}",
        "--open-mode=append",
        f"--chdir={os.getcwd()}",
        "--requeue",
        f"--signal=B:USR1@{opts.signal_seconds}",
        *opts.sbatch_arg,
    ]
    return [f"#SBATCH {line}" for line in lines]


REQUEUE_TRAP = """\
# Slurm sends USR1 to this shell {seconds} s before the time limit (--signal above): requeue,
# and the rerun resumes from the newest checkpoint. (Preemption with PreemptMode=REQUEUE
# requeues the job by itself, thanks to --requeue.)
requeue() {{
  echo "$(date): USR1 before the time limit, requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
}}
trap requeue USR1
"""

RUN_AND_WAIT = """\
# In the background, so that bash runs the trap while the run goes on.
{command} &
child=$!
wait "$child"
status=$?
while kill -0 "$child" 2>/dev/null; do  # the trap interrupted `wait`: keep waiting
  wait "$child"
  status=$?
done
exit "$status"
"""


def run_command(opts: argparse.Namespace, program: Program) -> tuple[list[str], str]:
    """The lines before the run (exports) and the run's shell line."""
    if program.name == "sweep":
        if opts.nodes > 1:
            raise LaunchError(
                f"--nodes={opts.nodes}: a sweep point runs on one node; use --nodes=1 "
                "(each array task is one point), or `-- main` for a multi-node run"
            )
        cmd = shlex.join(program.command(opts.python))
        return [], f'{cmd} --only="$SLURM_ARRAY_TASK_ID"'
    if opts.nodes == 1:
        return [], shlex.join(program.command(opts.python))
    extra = [] if program.has_flag("distributed") else ["--distributed"]
    srun = ["srun", "--ntasks-per-node=1", f"--cpus-per-task={opts.cpus_per_task}"]
    cmd = [*srun, *program.command(opts.python, *extra)]
    exports = [
        "# One process per node; jax.distributed.initialize() reads the Slurm variables.",
    ]
    if opts.gpus:
        ids = ",".join(str(i) for i in range(opts.gpus))
        exports += [
            "# Without this, JAX's Slurm detection gives each process a single GPU.",
            f"export JAX_LOCAL_DEVICE_IDS={ids}",
        ]
    return exports, shlex.join(cmd)


def batch_script(
    opts: argparse.Namespace, run: tuple[list[str], str], grid: list[GridPoint]
) -> str:
    """The whole sbatch script: `run` from `run_command`, a sweep's `grid` or [] for one run."""
    log_dir = os.path.abspath(opts.log_dir)
    array = None
    if grid:
        array = f"0-{len(grid) - 1}" + (f"%{opts.max_parallel}" if opts.max_parallel else "")
    exports, command = run
    parts = ["#!/bin/bash", *sbatch_header(opts, log_dir, array), ""]
    parts.append("# Written by launch/slurm.py. Submitting it again is safe: finished runs are")
    parts.append("# skipped and interrupted ones resume from their newest checkpoint.")
    if grid:
        parts.append("# Array task -> sweep point (state when written):")
        parts += [f"#   {p.index:>3}  {'done' if p.done else 'todo'}  {p.name}" for p in grid]
    parts += ["", "set -u", 'echo "$(date): job $SLURM_JOB_ID on $(hostname)"', ""]
    parts.append(REQUEUE_TRAP.format(seconds=opts.signal_seconds))
    if opts.setup:
        parts += [*opts.setup, ""]
    parts += exports
    parts.append(RUN_AND_WAIT.format(command=command))
    return "\n".join(parts)


def script_path(opts: argparse.Namespace) -> str:
    return os.path.abspath(opts.script or os.path.join(opts.log_dir, f"{opts.job_name}.sbatch"))


def launch(opts: argparse.Namespace, program: Program) -> None:
    run = run_command(opts, program)  # checks the request before the sweep's dry run
    grid = sweep_grid(program) if program.name == "sweep" else []
    script = batch_script(opts, run, grid)
    path = script_path(opts)
    sbatch = ["sbatch", path]
    runner = Runner(opts.dry_run)
    if grid:
        runner.note(f"{len(grid)} sweep points -> array job --array=0-{len(grid) - 1}")
    if opts.dry_run:
        runner.note(f"--- {path} (not written) ---")
        print(script)
        runner.note("--- submit with ---")
        print(shlex.join(sbatch))
        return
    os.makedirs(os.path.abspath(opts.log_dir), exist_ok=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(script)
    runner.note(f"wrote {path}")
    if opts.submit:
        runner.run(sbatch)
    else:
        runner.note("submit with:")
        print(shlex.join(sbatch))


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: use an int >= 1")
    return number


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="slurm.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [options] -- {main,sweep} [flags of experiments.main or .sweep]",
    )
    p.add_argument("--job_name", default="earlyjax")
    p.add_argument("--partition")
    p.add_argument("--account")
    p.add_argument("--qos")
    p.add_argument("--time", default="24:00:00", help="time limit per job / array task")
    p.add_argument("--gpus", type=int, default=1, help="GPUs per node (0: CPU only)")
    p.add_argument("--cpus_per_task", type=positive, default=8)
    p.add_argument("--mem", help="memory per node, e.g. 64G")
    p.add_argument("--nodes", type=positive, default=1, help="nodes (one experiment only)")
    p.add_argument("--max_parallel", type=positive, help="array tasks running at once")
    p.add_argument(
        "--signal_seconds", type=positive, default=120, help="USR1 this long before the limit"
    )
    p.add_argument("--setup", action="append", default=[], help="shell line run first")
    p.add_argument("--sbatch_arg", action="append", default=[], help="extra #SBATCH option")
    p.add_argument("--python", default="python", help="interpreter on the compute nodes")
    p.add_argument("--log_dir", default="slurm_logs", help="job output (and script) folder")
    p.add_argument("--script", help="where to write the script (default: in --log_dir)")
    p.add_argument("--submit", action="store_true", help="submit with sbatch")
    p.add_argument("--dry_run", action="store_true", help="print the script, write nothing")
    return p


def main(argv: list[str]) -> None:
    parser = build_parser()
    try:
        own, program = split_argv(argv)
        opts = parser.parse_args(own)
        if program is None:
            raise LaunchError("give the program after '--': `-- main ...` or `-- sweep ...`")
        if opts.gpus < 0:
            raise LaunchError(f"--gpus={opts.gpus}: use 0 (CPU only) or more")
        launch(opts, program)
    except LaunchError as e:
        fail(parser.prog, e)


if __name__ == "__main__":
    main(sys.argv[1:])
