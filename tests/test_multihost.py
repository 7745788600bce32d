"""Two processes as two hosts (2 CPU devices each) train like one process on one device.

The processes form one JAX cluster through `jax.distributed.initialize` on localhost, share one
workdir (as hosts share a file system), place only their own rows of each batch, and only
process 0 writes the metric log, config and results; orbax checkpoints are written by both.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "multihost_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(num_processes: int, process_id: int, devices: int, workdir: str, port: int):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    args = [f"127.0.0.1:{port}", str(num_processes), str(process_id), workdir]
    return subprocess.Popen(
        [sys.executable, WORKER, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc) -> str:
    try:
        out, _ = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    assert proc.returncode == 0, out[-5000:]
    return out


def final_params(workdir):
    """The last checkpoint's parameters, restored onto this process's single device."""
    import jax
    from multihost_worker import tiny_config, tiny_data

    from earlyjax.checkpoint import Checkpointer
    from earlyjax.train import build_experiment

    _, like = build_experiment(tiny_config(), tiny_data())
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    state, _ = ckpt.restore(ckpt.latest_step(), like)
    ckpt.close()
    return [np.asarray(x) for x in jax.tree.leaves(state.params)]


def records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_two_hosts_train_like_one(tmp_path):
    port = free_port()
    two_hosts, one_host = str(tmp_path / "two_hosts"), str(tmp_path / "one_host")
    hosts = [start(2, i, 2, two_hosts, port) for i in range(2)]
    from multihost_worker import tiny_config, tiny_data

    from earlyjax.train import train_and_evaluate

    train_and_evaluate(tiny_config(), one_host, dataset=tiny_data())  # here, on one device
    outputs = [finish(p) for p in hosts]

    assert "process 0 of 2: 4 devices" in outputs[0]
    assert "process 1 of 2: 4 devices" in outputs[1]
    for a, b in zip(final_params(two_hosts), final_params(one_host), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    logged, ref = records(two_hosts), records(one_host)
    # One writer: each line once, the same lines as the single process wrote.
    assert [(r["step"], r["kind"]) for r in logged] == [(r["step"], r["kind"]) for r in ref]
    for a, b in zip(logged, ref, strict=True):
        for key in ("loss", "fisher", "id_accuracy"):
            if key in b:
                assert abs(a[key] - b[key]) <= 1e-4 * abs(b[key]), (a["step"], key)
    assert sorted(os.listdir(os.path.join(two_hosts, "checkpoints"))) == ["3", "6"]
    with open(os.path.join(two_hosts, "results.json")) as f:
        assert json.load(f)["steps"] == 6
