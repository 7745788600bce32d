"""Cloud TPU VMs and TPU pod slices: create, install earlyjax, run, fetch results, delete.

    python launch/tpu_vm.py create  --name=ej --zone=us-central2-b --accelerator_type=v4-32
    python launch/tpu_vm.py install --name=ej --zone=us-central2-b
    python launch/tpu_vm.py run     --name=ej --zone=us-central2-b --accelerator_type=v4-32 \\
        -- main --config=cifar10_rn18.py --workdir=runs/c10 --config.unfreeze.k=100
    python launch/tpu_vm.py fetch   --name=ej --zone=us-central2-b --workdir=runs/c10
    python launch/tpu_vm.py delete  --name=ej --zone=us-central2-b

Every step is a `gcloud compute tpus tpu-vm` command; `--dry_run` prints them instead of
running them. `run` starts the same command on every worker (`--worker=all`) and adds
`--distributed` when the slice has more than one host (see `tpu_hosts` for the rule).
Rerunning `run` with the same workdir resumes from the newest checkpoint.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass

from _common import REPO_ROOT, LaunchError, Program, Runner, fail, split_argv

# Families named by TensorCores: 2 TensorCores per chip, 4 chips (8 TensorCores) per host.
BY_CORES = {
    "v2": "tpu-ubuntu2204-base",
    "v3": "tpu-ubuntu2204-base",
    "v4": "tpu-ubuntu2204-base",
    "v5p": "v2-alpha-tpuv5",
}
# Families named by chips: 1, 4 or 8 chips on one host; larger slices have 4 chips per host.
BY_CHIPS = {"v5litepod": "v2-alpha-tpuv5-lite", "v6e": "v2-alpha-tpuv6e"}
CHIP_SIZES = (1, 4, 8, 16, 32, 64, 128, 256)
ARCHIVE = "earlyjax-src.tar.gz"


@dataclass(frozen=True)
class TpuType:
    """An accelerator type such as v4-32: its chips, hosts and default runtime version."""

    name: str
    chips: int
    hosts: int
    default_version: str


def tpu_hosts(accelerator_type: str) -> TpuType:
    """Chips and hosts of an accelerator type, by the number in its name.

    v2, v3, v4, v5p: the number counts TensorCores, 8 per host (4 chips of 2): v4-8 is 4 chips
    on 1 host, v4-32 is 16 chips on 4 hosts. v5litepod (v5e), v6e: the number counts chips;
    1, 4 or 8 chips are one host, larger slices have 4 chips per host (v5litepod-16: 4 hosts).
    Raises LaunchError for a name outside these rules.
    """
    match = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", accelerator_type)
    family, size = (match.group(1), int(match.group(2))) if match else (None, 0)
    if family in BY_CORES:
        if size < 8 or size % 8:
            raise LaunchError(
                f"TPU type {accelerator_type!r}: {family}-N counts TensorCores, 8 per host; "
                f"N must be a multiple of 8 ({family}-8, {family}-16, {family}-32, ...)"
            )
        return TpuType(accelerator_type, size // 2, size // 8, BY_CORES[family])
    if family in BY_CHIPS:
        if size not in CHIP_SIZES:
            raise LaunchError(
                f"TPU type {accelerator_type!r}: {family}-N counts chips; "
                f"N is one of {', '.join(map(str, CHIP_SIZES))}"
            )
        return TpuType(accelerator_type, size, 1 if size <= 8 else size // 4, BY_CHIPS[family])
    known = ", ".join(f"{f}-N" for f in [*BY_CORES, *BY_CHIPS])
    raise LaunchError(f"unknown TPU type {accelerator_type!r}; known types: {known}")


def hosts(tpu: TpuType) -> str:
    return "1 host" if tpu.hosts == 1 else f"{tpu.hosts} hosts"


def gcloud(verb: str, opts: argparse.Namespace, *args: str) -> list[str]:
    """`gcloud compute tpus tpu-vm VERB ARGS --zone=... [--project=...]`."""
    cmd = ["gcloud", "compute", "tpus", "tpu-vm", verb, *args, f"--zone={opts.zone}"]
    if opts.project:
        cmd.append(f"--project={opts.project}")
    return cmd


def on_all_workers(opts: argparse.Namespace, remote: str) -> list[str]:
    """Runs shell line `remote` on every worker of the slice at once."""
    return gcloud("ssh", opts, opts.name, "--worker=all", f"--command={remote}")


def create(opts: argparse.Namespace, runner: Runner) -> None:
    """Creates the TPU VM (or every VM of a pod slice)."""
    tpu = tpu_hosts(opts.accelerator_type)
    version = opts.version or tpu.default_version
    runner.note(f"{tpu.name}: {tpu.chips} chips on {hosts(tpu)}; runtime {version}")
    extra = ["--spot"] if opts.spot else []
    runner.run(
        gcloud(
            "create",
            opts,
            opts.name,
            f"--accelerator-type={tpu.name}",
            f"--version={version}",
            *extra,
        )
    )


def checkout_files() -> list[str]:
    """The files of this checkout: tracked or untracked, not ignored, that exist."""
    cmd = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    try:
        out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise LaunchError(
            f"cannot list the files of {REPO_ROOT} with git ({e}); use --source=git"
        ) from e
    return [f for f in out.split("\0") if f and os.path.isfile(os.path.join(REPO_ROOT, f))]


def pack_checkout(path: str) -> None:
    """Writes this checkout's files (see `checkout_files`) to the gzipped tar `path`."""
    with tarfile.open(path, "w:gz") as tar:
        for name in checkout_files():
            tar.add(os.path.join(REPO_ROOT, name), arcname=name)


def install(opts: argparse.Namespace, runner: Runner) -> None:
    """Puts the code on every worker (this checkout, or a git clone) and pip-installs it."""
    target = shlex.quote(opts.remote_dir)
    if not re.fullmatch(r"[\w,-]+", opts.extras):
        raise LaunchError(f"--extras={opts.extras!r}: use names such as tpu or tpu,dev")
    pip = f'{opts.python} -m pip install -e ".[{opts.extras}]"'
    if opts.source == "local":
        archive = os.path.join(tempfile.gettempdir(), ARCHIVE)
        runner.note(f"pack {REPO_ROOT} (git ls-files: tracked and untracked, not ignored)")
        runner.note(f"into {archive}")
        if not runner.dry_run:
            pack_checkout(archive)
        runner.run(gcloud("scp", opts, archive, f"{opts.name}:{ARCHIVE}", "--worker=all"))
        fetch_code = f"mkdir -p {target} && tar -xzf {ARCHIVE} -C {target}"
    else:
        if not opts.repo_url:
            raise LaunchError("--source=git needs --repo_url (the URL to git clone)")
        url, ref = shlex.quote(opts.repo_url), shlex.quote(opts.ref)
        fetch_code = (
            f"(test -d {target}/.git || git clone {url} {target})"
            f" && git -C {target} fetch origin {ref}"
            f" && git -C {target} checkout --detach FETCH_HEAD"
        )
    runner.run(on_all_workers(opts, f"{fetch_code} && cd {target} && {pip}"))


def program_command(opts: argparse.Namespace, program: Program, tpu: TpuType) -> list[str]:
    """The experiments command each worker runs; `--distributed` on a multi-host slice."""
    if program.name == "sweep":
        processes = program.flag("processes")
        if processes not in (None, "1"):
            raise LaunchError(
                f"--processes={processes}: a TPU host's chips can be opened by one process at "
                "a time; leave it out, the sweep then runs one point after another on all chips"
            )
    extra = ["--distributed"] if tpu.hosts > 1 and not program.has_flag("distributed") else []
    return program.command(opts.python, *extra)


def run(opts: argparse.Namespace, runner: Runner, program: Program) -> None:
    """Starts `program` on every worker at once."""
    tpu = tpu_hosts(opts.accelerator_type)
    cmd = shlex.join(program_command(opts, program, tpu))
    runner.note(f"{tpu.name}: {hosts(tpu)}, the same command on every worker")
    if tpu.hosts > 1:
        runner.note(
            "every host reads the checkpoints to resume: put the workdir on a file system "
            "all workers share (e.g. a Filestore or gcsfuse mount)"
        )
    if opts.detach:
        log = shlex.quote(opts.log)
        cmd = f"nohup {cmd} > {log} 2>&1 < /dev/null &"
        log_path = os.path.join("~", opts.remote_dir, opts.log)
        runner.note(f"detached: output in {log_path} on each worker")
    runner.run(on_all_workers(opts, f"cd {shlex.quote(opts.remote_dir)} && {cmd}"))


def fetch(opts: argparse.Namespace, runner: Runner) -> None:
    """Copies a workdir (or sweep folder) from worker 0 to --dest."""
    remote = opts.workdir
    if not os.path.isabs(remote):
        remote = f"{opts.remote_dir}/{remote}"
    runner.note("worker 0 (process 0) writes the logs and results")
    runner.run(gcloud("scp", opts, "--recurse", f"{opts.name}:{remote}", opts.dest, "--worker=0"))


def delete(opts: argparse.Namespace, runner: Runner) -> None:
    """Deletes the TPU VM (gcloud asks for confirmation)."""
    runner.run(gcloud("delete", opts, opts.name))


ACTIONS = {"create": create, "install": install, "fetch": fetch, "delete": delete}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", required=True, help="TPU VM (node) name")
    common.add_argument("--zone", required=True, help="e.g. us-central2-b")
    common.add_argument("--project", help="GCP project (default: gcloud's)")
    common.add_argument("--dry_run", action="store_true", help="print the commands only")
    on_vm = argparse.ArgumentParser(add_help=False)
    on_vm.add_argument("--remote_dir", default="earlyjax", help="checkout on each worker")
    on_vm.add_argument("--python", default="python3", help="interpreter on the workers")
    tpu_type = argparse.ArgumentParser(add_help=False)
    tpu_type.add_argument(
        "--accelerator_type", required=True, help="e.g. v4-8, v4-32, v5litepod-16, v5p-8"
    )

    parser = argparse.ArgumentParser(
        prog="tpu_vm.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("create", parents=[common, tpu_type], help="create the TPU VM / slice")
    p.add_argument("--version", help="runtime version (default: by TPU family)")
    p.add_argument("--spot", action="store_true", help="a Spot (preemptible) TPU")
    p = sub.add_parser("install", parents=[common, on_vm], help="install earlyjax on workers")
    p.add_argument("--source", choices=["local", "git"], default="local")
    p.add_argument("--repo_url", help="for --source=git")
    p.add_argument("--ref", default="main", help="branch, tag or commit for --source=git")
    p.add_argument("--extras", default="tpu", help="pip extras")
    p = sub.add_parser(
        "run", parents=[common, on_vm, tpu_type], help="run `-- main|sweep ...` on all workers"
    )
    p.add_argument("--detach", action="store_true", help="run under nohup, return at once")
    p.add_argument("--log", default="earlyjax-run.log", help="log file with --detach")
    p = sub.add_parser("fetch", parents=[common, on_vm], help="copy a workdir from worker 0")
    p.add_argument("--workdir", required=True, help="workdir or sweep folder on the worker")
    p.add_argument("--dest", default=".", help="local destination folder")
    sub.add_parser("delete", parents=[common], help="delete the TPU VM / slice")
    return parser


def main(argv: list[str]) -> None:
    parser = build_parser()
    try:
        own, program = split_argv(argv)
        opts = parser.parse_args(own)
        if (program is None) == (opts.action == "run"):
            raise LaunchError(
                "`run` needs `-- main ...` or `-- sweep ...` after its options"
                if opts.action == "run"
                else f"`{opts.action}` takes no program after '--'"
            )
        runner = Runner(opts.dry_run)
        if opts.action == "run":
            run(opts, runner, program)
        else:
            ACTIONS[opts.action](opts, runner)
    except LaunchError as e:
        fail(parser.prog, e)


if __name__ == "__main__":
    main(sys.argv[1:])
