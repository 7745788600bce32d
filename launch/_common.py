"""What the launch scripts share: the program to launch, and printing or running commands.

Every launcher takes its own options, then `--`, then the program and its flags:

    python launch/X.py [launcher options] -- main --config=cifar10_rn18.py --workdir=runs/a
    python launch/X.py [launcher options] -- sweep --config=... --sweep_dir=... --k=none,10

`main` is `python -m experiments.main`, `sweep` is `python -m experiments.sweep`; the flags go
to them unchanged. Standard library only, and no JAX import, so a dry run starts in an instant
(slurm.py imports experiments.sweep, and so JAX, for a sweep's grid).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn

PROGRAMS = {"main": "experiments.main", "sweep": "experiments.sweep"}
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class LaunchError(Exception):
    """A launch request that cannot work; the message names the value and the fix."""


@dataclass(frozen=True)
class Program:
    """`experiments.main` or `experiments.sweep` with the flags to pass it."""

    name: str
    args: tuple[str, ...]

    def command(self, python: str, *extra: str) -> list[str]:
        """The argv that runs it with interpreter `python`, `extra` flags appended."""
        return [python, "-m", PROGRAMS[self.name], *self.args, *extra]

    def flag(self, name: str) -> str | None:
        """The value of `--name=V` or `--name V` among its flags (the last one), else None."""
        value = None
        for i, arg in enumerate(self.args):
            if arg.startswith(f"--{name}="):
                value = arg.split("=", 1)[1]
            elif arg == f"--{name}" and i + 1 < len(self.args):
                value = self.args[i + 1]
        return value

    def has_flag(self, name: str) -> bool:
        """Whether `--name`, `--name=V` or `--noname` is among its flags."""
        return any(
            a in (f"--{name}", f"--no{name}") or a.startswith(f"--{name}=") for a in self.args
        )


def split_argv(argv: Sequence[str]) -> tuple[list[str], Program | None]:
    """Splits `[launcher args] -- PROGRAM [flags]` into the launcher's args and the Program."""
    if "--" not in argv:
        return list(argv), None
    at = list(argv).index("--")
    own, rest = list(argv[:at]), list(argv[at + 1 :])
    if not rest or rest[0] not in PROGRAMS:
        got = repr(rest[0]) if rest else "nothing"
        raise LaunchError(
            f"after '--' comes the program, {' or '.join(PROGRAMS)}, then its flags; got {got}"
        )
    return own, Program(rest[0], tuple(rest[1:]))


def shell_line(cmd: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """`cmd` as one line of POSIX shell, with `env` as `NAME=value` prefixes."""
    prefix = [f"{k}={shlex.quote(v)}" for k, v in (env or {}).items()]
    return " ".join([*prefix, shlex.join(cmd)])


class Runner:
    """Prints each command; runs it unless this is a dry run. Stops at the first failure."""

    def __init__(self, dry_run: bool):
        self.dry_run = dry_run

    def note(self, text: str) -> None:
        """A comment line in the printed plan."""
        print(f"# {text}", flush=True)

    def run(self, cmd: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        """Runs argv `cmd` with `env` added to the environment."""
        print(shell_line(cmd, env), flush=True)
        if self.dry_run:
            return
        try:
            proc = subprocess.run(cmd, env=dict(os.environ, **env) if env else None)
        except OSError as e:
            raise SystemExit(f"cannot run {cmd[0]!r}: {e}") from None
        if proc.returncode:
            raise SystemExit(f"command failed with exit code {proc.returncode}; stopped")

    def run_parallel(self, cmds: Sequence[Sequence[str]]) -> None:
        """Runs argv commands at once (e.g. one ssh per node); fails if any of them fails."""
        for cmd in cmds:
            print(shell_line(cmd), flush=True)
        if self.dry_run:
            return
        procs = []
        try:
            for cmd in cmds:
                procs.append(subprocess.Popen(cmd))
        except OSError as e:
            for proc in procs:
                proc.terminate()
            raise SystemExit(f"cannot run {cmd[0]!r}: {e}") from None
        codes = [p.wait() for p in procs]
        failed = [i for i, code in enumerate(codes) if code]
        if failed:
            raise SystemExit(f"commands {failed} (0-based, as printed) failed: {codes}")


def fail(prog: str, error: Exception) -> NoReturn:
    """Exits with status 2 and `prog: error: message` on stderr, as argparse does."""
    print(f"{prog}: error: {error}", file=sys.stderr)
    raise SystemExit(2)
