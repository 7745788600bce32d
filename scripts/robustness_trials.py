"""Hostile-machine trials of `experiments.main`: kill -9 at random moments, a disk that fills
at random points, corrupted checkpoints, and bad input. Prints one line per trial and a count
per kind of how many ended as they must (an exact resume, or one clear error line).

    python scripts/robustness_trials.py --kills=10 --disks=6 --corruptions=4 --out=/tmp/trials

"Exact" means: the finished workdir's metrics.jsonl equals an uninterrupted reference run's,
its results.json too (timings aside), and TensorBoard holds every logged step exactly once.
The full-disk trials mount a tmpfs (root with CAP_SYS_ADMIN) and are skipped where they cannot.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]  # this checkout's earlyjax, not another

from helpers import assert_tensorboard_matches_log  # noqa: E402

from earlyjax.metric_log import read_records  # noqa: E402

RUN = [
    sys.executable,
    "-m",
    "experiments.main",
    "--config=quickstart.py",
    "--config.model.width=4",
    "--config.total_steps=120",
    "--config.checkpoint_every=7",
    "--config.log_every=1",
    "--config.record.every=0",
    "--config.data.ood_source=none",
    "--config.progress_bar=False",
    "--config.unfreeze.k=none",
]


def main_cmd(workdir: str, *extra: str) -> list[str]:
    return [*RUN, f"--workdir={workdir}", *extra]


def run(workdir: str, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        main_cmd(workdir, *extra), cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def results_without_timings(workdir: str) -> dict:
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    return {k: v for k, v in results.items() if not k.endswith("_seconds_this_session")}


def exact(workdir: str, reference: str) -> str | None:
    """None when `workdir` finished exactly as `reference`, else what differs."""
    if not os.path.exists(os.path.join(workdir, "results.json")):
        return "no results.json"
    if results_without_timings(workdir) != results_without_timings(reference):
        return "results differ"
    if read_records(os.path.join(workdir, "metrics.jsonl")) != read_records(
        os.path.join(reference, "metrics.jsonl")
    ):
        return "metric log differs"
    try:
        assert_tensorboard_matches_log(workdir)
    except AssertionError as e:
        return f"TensorBoard: {e}"
    return None


def one_clear_line(proc: subprocess.CompletedProcess) -> bool:
    lines = proc.stderr.strip().splitlines()
    return proc.returncode != 0 and bool(lines) and "Traceback" not in proc.stderr


def kill_trial(workdir: str, reference: str, rng: random.Random) -> str | None:
    for _ in range(rng.randint(1, 2)):  # one or two SIGKILLs, then a run to the end
        proc = subprocess.Popen(
            main_cmd(workdir), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(4.0, 14.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = run(workdir)
    if final.returncode:
        return f"resume failed: {final.stderr.strip().splitlines()[-1:]}"
    return exact(workdir, reference)


def disk_trial(workdir: str, reference: str, mountpoint: str, size_kb: int) -> str | None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", mountpoint])
    try:
        try:
            full = run(workdir, timeout=240)
        except subprocess.TimeoutExpired:
            return "HANG (no exit within 240 s)"
        if full.returncode == 0:  # the disk was large enough
            return exact(workdir, reference)
        if not one_clear_line(full):
            return f"not one clear line: {full.stderr.strip()[-300:]}"
        subprocess.run(["mount", "-o", "remount,size=50m", mountpoint], check=True)
        again = run(workdir)
        if again.returncode:
            return f"resume failed: {again.stderr.strip().splitlines()[-1:]}"
        return exact(workdir, reference)
    finally:
        kept = os.path.dirname(mountpoint) + f"/{os.path.basename(mountpoint)}.kept"
        shutil.copytree(workdir, kept, dirs_exist_ok=True)  # off the tmpfs, for a post-mortem
        subprocess.run(["umount", "-l", mountpoint])


def corruption_trial(workdir: str, reference: str, rng: random.Random) -> str | None:
    stop = rng.randint(20, 110)
    proc = subprocess.Popen(main_cmd(workdir), cwd=REPO, stdout=subprocess.PIPE, text=True)
    log = os.path.join(workdir, "metrics.jsonl")
    while proc.poll() is None:  # SIGTERM once `stop` steps are logged: checkpoint and exit
        if os.path.exists(log) and len(read_records(log)) >= stop:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    proc.wait()
    checkpoints = os.path.join(workdir, "checkpoints")
    newest = max(int(s) for s in os.listdir(checkpoints) if s.isdigit())
    data = [
        os.path.join(r, f)
        for r, _, fs in os.walk(os.path.join(checkpoints, str(newest)))
        for f in fs
        if os.path.basename(r) == "d"
    ]
    path = rng.choice(data)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        offset = rng.randrange(size)
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    again = run(workdir)
    if again.returncode:
        return f"resume failed: {again.stderr.strip().splitlines()[-1:]}"
    if "corrupt" not in again.stdout and "cannot restore" not in again.stdout:
        return "corruption not reported"
    return exact(workdir, reference)


BAD_INPUTS = [
    ["--config.seed=-1"],
    ["--config.unfreeze.k=1.5"],
    ["--config.unfreeze.k=abc"],
    ["--config.batch_size=0"],
    ["--config.model.name=resnet152"],
    ["--config.optimizer.lr=-1"],
    ["--config.record.bn=train"],
    ["--config.data.ood_severities=(7,)"],
]


def bad_input_trial(workdir: str, extra: list[str]) -> str | None:
    proc = run(workdir, *extra)
    if not one_clear_line(proc):
        return f"not one clear line: {proc.stderr.strip()[-300:]}"
    if os.path.exists(workdir):
        return "wrote to the workdir"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--disks", type=int, default=6)
    parser.add_argument("--corruptions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="/tmp/earlyjax-trials")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    reference = os.path.join(args.out, "reference")
    assert run(reference).returncode == 0, "the reference run failed"
    outcomes: dict[str, list[str | None]] = collections.defaultdict(list)

    def report(kind: str, i: int, problem: str | None) -> None:
        outcomes[kind].append(problem)
        print(f"{kind} {i}: {'ok' if problem is None else problem}", flush=True)

    for i in range(args.kills):
        report("kill -9", i, kill_trial(os.path.join(args.out, f"kill{i}"), reference, rng))
    for i in range(args.disks):
        mount = os.path.join(args.out, f"disk{i}")
        os.makedirs(mount)
        size = rng.choice([16, 24, 40, 400, 800, 1200, 1600])
        problem = disk_trial(os.path.join(mount, "run"), reference, mount, size)
        report(f"full disk ({size}k)", i, problem)
    for i in range(args.corruptions):
        workdir = os.path.join(args.out, f"corrupt{i}")
        report("corrupt checkpoint", i, corruption_trial(workdir, reference, rng))
    for i, extra in enumerate(BAD_INPUTS):
        report("bad input", i, bad_input_trial(os.path.join(args.out, f"bad{i}"), extra))
    print("\nkind: ended as they must / trials")
    kinds = collections.defaultdict(lambda: [0, 0])
    for kind, problems in outcomes.items():
        key = kind.split(" (")[0]
        kinds[key][0] += sum(p is None for p in problems)
        kinds[key][1] += len(problems)
    for kind, (good, total) in kinds.items():
        print(f"  {kind}: {good}/{total}")


if __name__ == "__main__":
    main()
