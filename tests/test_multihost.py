"""Two processes as two hosts (2 CPU devices each) train like one process on one device.

The processes form one JAX cluster through `jax.distributed.initialize` on localhost, share one
workdir (as hosts share a file system), place only their own rows of each batch, and only
process 0 writes the metric log, config and results; orbax checkpoints are written by both.

The model is ResNet-18 with GELU for ReLU (`helpers.smooth_resnet`), and the runs are
compared relative to each leaf's scale, with a tolerance from the measured gap: two hosts reduce
the batch in another order than one device, and with ReLU a gate flipped by that rounding moves
a gradient by far more than rounding (tests/multidevice/test_data_parallel.py measures it).
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import ROOT, assert_close_to_scale, metric_records, restore_latest, smooth_resnet

WORKER = os.path.join(ROOT, "tests", "multihost_worker.py")
# Measured, two hosts (2 devices each) vs one device after 6 steps: parameters 5.4e-6 of a leaf's
# scale, logged losses 3.5e-8 and tr(F) 1.4e-7 relative. 2e-4 is 37x the largest, as for 8 steps
# on 4 devices in tests/multidevice/, where a step without the global reductions moved the
# state by more than its scale.
TOL = 2e-4


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
    from multihost_worker import tiny_data, worker_config

    from earlyjax.train import setup

    _, like = setup(worker_config(), tiny_data())
    return [np.asarray(x) for x in jax.tree.leaves(restore_latest(workdir, like).params)]


@pytest.mark.slow  # ~65 s on 2 cores: two JAX processes, each compiling a ResNet
def test_two_hosts_train_like_one(tmp_path, monkeypatch):
    smooth_resnet(monkeypatch)  # as the workers do
    port = free_port()
    two_hosts, one_host = str(tmp_path / "two_hosts"), str(tmp_path / "one_host")
    hosts = [start(2, i, 2, two_hosts, port) for i in range(2)]
    from multihost_worker import tiny_data, worker_config

    from earlyjax.train import train_and_evaluate

    train_and_evaluate(worker_config(), one_host, dataset=tiny_data())  # here, on one device
    outputs = [finish(p) for p in hosts]

    assert "process 0 of 2: 4 devices" in outputs[0]
    assert "process 1 of 2: 4 devices" in outputs[1]
    assert_close_to_scale(final_params(two_hosts), final_params(one_host), TOL, what="param")
    logged, ref = metric_records(two_hosts), metric_records(one_host)
    # One writer: each line once, the same lines as the single process wrote.
    assert [(r["step"], r["kind"]) for r in logged] == [(r["step"], r["kind"]) for r in ref]
    for a, b in zip(logged, ref, strict=True):
        for key in ("loss", "fisher"):
            if key in b:
                assert abs(a[key] - b[key]) <= TOL * abs(b[key]), (a["step"], key)
        if "id_accuracy" in b:  # a prediction flips only for a digit whose top logits tie
            assert a["id_accuracy"] == pytest.approx(b["id_accuracy"], abs=100 / 96 + 1e-9)
    assert sorted(os.listdir(os.path.join(two_hosts, "checkpoints"))) == ["3", "6"]
    with open(os.path.join(two_hosts, "results.json")) as f:
        assert json.load(f)["steps"] == 6
