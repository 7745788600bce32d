"""Runs tests/multidevice/ in a subprocess with 4 CPU devices (issue 6).

`XLA_FLAGS=--xla_force_host_platform_device_count=4` only takes effect before JAX starts, and
would change every other test's devices, so the 1-vs-4-device tests get a process of their own.
"""

import os
import subprocess
import sys

import pytest
from helpers import ROOT

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


@pytest.mark.parametrize("marks", ["not slow", pytest.param("slow", marks=pytest.mark.slow)])
def test_one_and_four_devices_agree_in_a_four_device_process(marks):
    """The default run runs the fast tests of tests/multidevice, `-m slow` its slow ones."""
    env = dict(os.environ)
    # Any device count already in XLA_FLAGS (e.g. a CI that forces 2 host devices) is replaced.
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_COUNT_FLAG)]
    env["XLA_FLAGS"] = " ".join([*flags, f"{DEVICE_COUNT_FLAG}=4"])
    env["EARLYJAX_MULTIDEVICE"] = "1"
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", marks, "tests/multidevice"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in summary and "skipped" not in summary, summary
