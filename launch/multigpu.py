"""GPU boxes without a scheduler: one run over all GPUs, a sweep with one run per GPU, or
one run over several nodes.

    # one box: one data-parallel run over all (or the listed) GPUs
    python launch/multigpu.py --gpus=0,1,2,3 -- main --config=cifar10_rn18.py --workdir=runs/a
    # one box: a sweep, one run per GPU at a time (experiments.sweep --processes=N)
    python launch/multigpu.py --num_gpus=8 -- sweep --config=cifar10_rn18.py \\
        --sweep_dir=runs/c10 --k=none,10,100 --seeds=0,1,2
    # several nodes: one process per node, started over ssh (or --node_rank=R on node R)
    python launch/multigpu.py --hosts=node0,node1 --port=29500 -- main --config=... --workdir=...

On several nodes each process gets JAX_COORDINATOR_ADDRESS (the first host and --port),
JAX_NUM_PROCESSES and JAX_PROCESS_ID, and `--distributed`, which makes experiments.main call
`jax.distributed.initialize()` with them. `--dry_run` prints the commands.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys

from _common import LaunchError, Program, Runner, fail, shell_line, split_argv


def parse_gpus(value: str) -> list[str]:
    """`0,1,3` -> ['0', '1', '3']; raises LaunchError for anything but distinct ints."""
    gpus = [g.strip() for g in value.split(",")]
    if not all(g.isdigit() for g in gpus) or len(set(gpus)) != len(gpus):
        raise LaunchError(f"--gpus={value!r}: use distinct GPU indices such as 0,1,2,3")
    return gpus


def detect_gpu_count() -> int:
    """The number of GPUs `nvidia-smi -L` lists; raises LaunchError where it cannot tell."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise LaunchError(f"cannot count the GPUs with nvidia-smi ({e}); pass --num_gpus") from e
    count = sum(line.startswith("GPU ") for line in out.stdout.splitlines())
    if not count:
        raise LaunchError("nvidia-smi lists no GPU; pass --num_gpus")
    return count


def visible_gpus(opts: argparse.Namespace) -> list[str] | None:
    """The GPUs to use, from --gpus or the first --num_gpus; None: whatever is visible."""
    if opts.gpus:
        return parse_gpus(opts.gpus)
    if opts.num_gpus:
        return [str(i) for i in range(opts.num_gpus)]
    return None


def cuda_env(gpus: list[str] | None) -> dict[str, str]:
    return {"CUDA_VISIBLE_DEVICES": ",".join(gpus)} if gpus else {}


def one_box(opts: argparse.Namespace, program: Program, runner: Runner) -> None:
    """A single run over the GPUs, or a sweep with one process per GPU."""
    gpus = visible_gpus(opts)
    if program.name == "main":
        runner.note(
            "one data-parallel run over " + (f"GPUs {','.join(gpus)}" if gpus else "all GPUs")
        )
        runner.run(program.command(opts.python), cuda_env(gpus))
        return
    if program.has_flag("processes"):
        raise LaunchError("--processes is set by the launcher (one per GPU); leave it out")
    count = len(gpus) if gpus else detect_gpu_count()
    runner.note(f"sweep: {count} runs at once, one per GPU (process i sees only GPU i)")
    runner.run(program.command(opts.python, f"--processes={count}"), cuda_env(gpus))


def node_env(opts: argparse.Namespace, hosts: list[str], rank: int) -> dict[str, str]:
    """What `jax.distributed.initialize()` needs on node `rank` (plus the GPUs to use)."""
    env = {
        "JAX_COORDINATOR_ADDRESS": f"{hosts[0]}:{opts.port}",
        "JAX_NUM_PROCESSES": str(len(hosts)),
        "JAX_PROCESS_ID": str(rank),
    }
    return {**env, **cuda_env(visible_gpus(opts))}


def several_nodes(opts: argparse.Namespace, program: Program, runner: Runner) -> None:
    """One process per node, all with --distributed: here (--node_rank) or over ssh."""
    hosts = [h.strip() for h in opts.hosts.split(",") if h.strip()]
    if len(hosts) < 2:
        raise LaunchError(f"--hosts={opts.hosts!r}: list two or more nodes (or leave it out)")
    if program.name == "sweep":
        raise LaunchError(
            "a sweep runs on one node; launch it per node with its own --sweep_dir, "
            "or use `-- main` for a run over several nodes"
        )
    if opts.node_rank is not None and not 0 <= opts.node_rank < len(hosts):
        raise LaunchError(
            f"--node_rank={opts.node_rank}: use 0 to {len(hosts) - 1} (one per --hosts entry)"
        )
    extra = [] if program.has_flag("distributed") else ["--distributed"]
    cmd = program.command(opts.python, *extra)
    runner.note(f"{len(hosts)} nodes, coordinator {hosts[0]}:{opts.port} (process 0)")
    if opts.node_rank is not None:
        runner.run(cmd, node_env(opts, hosts, opts.node_rank))
        return
    remote_dir = shlex.quote(opts.remote_dir)
    runner.run_parallel(
        [
            ["ssh", host, f"cd {remote_dir} && {shell_line(cmd, node_env(opts, hosts, rank))}"]
            for rank, host in enumerate(hosts)
        ]
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="multigpu.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [options] -- {main,sweep} [flags of experiments.main or .sweep]",
    )
    gpus = p.add_mutually_exclusive_group()
    gpus.add_argument("--gpus", help="GPU indices to use, e.g. 0,1,2,3 (default: all)")
    gpus.add_argument("--num_gpus", type=int, help="use GPUs 0..N-1 (default: all)")
    p.add_argument("--hosts", help="nodes, comma-separated; the first is the coordinator")
    p.add_argument("--port", type=int, default=29500, help="coordinator port on the first host")
    p.add_argument("--node_rank", type=int, help="run only this node's process, here")
    p.add_argument("--remote_dir", default=os.getcwd(), help="repository folder on the nodes")
    p.add_argument("--python", default="python", help="interpreter")
    p.add_argument("--dry_run", action="store_true", help="print the commands only")
    return p


def main(argv: list[str]) -> None:
    parser = build_parser()
    try:
        own, program = split_argv(argv)
        opts = parser.parse_args(own)
        if program is None:
            raise LaunchError("give the program after '--': `-- main ...` or `-- sweep ...`")
        if opts.num_gpus is not None and opts.num_gpus < 1:
            raise LaunchError(f"--num_gpus={opts.num_gpus}: use 1 or more")
        if opts.node_rank is not None and not opts.hosts:
            raise LaunchError("--node_rank needs --hosts (all nodes, the coordinator first)")
        runner = Runner(opts.dry_run)
        if opts.hosts:
            several_nodes(opts, program, runner)
        else:
            one_box(opts, program, runner)
    except LaunchError as e:
        fail(parser.prog, e)


if __name__ == "__main__":
    main(sys.argv[1:])
