"""Adaptive unfreezing: releases decided from the recorded signal, in one run, resumable."""

import os

import numpy as np
import pytest

from earlyjax.adaptive import AdaptiveRemoval
from earlyjax.freezing import NEVER, head_only_release_steps
from earlyjax.interventions import GradualUnfreezing, LRSwitch
from earlyjax.metric_log import read_records
from earlyjax.train import train_and_evaluate


def feed(adaptive, release, values, start=0, every=10, until=None):
    """Feeds recordings until the first release; returns {step: new release array}, release."""
    out = {}
    for i, v in enumerate(values):
        step = start + i * every
        new = adaptive.update(step, v, release, last_recording=step == until)
        if new is not None:
            return {step: new}, new
    return out, release


def test_releases_the_next_block_top_down_when_the_signal_settles():
    adaptive = AdaptiveRemoval(GradualUnfreezing(("a", "b", "c")), "fisher", tau=2, eps=0.02)
    release = head_only_release_steps(3)
    settled = [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # a jump, then flat
    got, release = feed(adaptive, release, settled)
    ((step, new),) = got.items()
    assert new.tolist() == [NEVER, NEVER, step, 0] and step > 10
    # The next segment starts empty: a still-moving signal releases nothing ...
    got, release = feed(adaptive, release, np.linspace(0, 1, 5), start=step + 10)
    assert not got
    # ... and the last recording releases whatever is still frozen.
    got, release = feed(adaptive, release, [1.0], start=step + 60, until=step + 60)
    assert release.tolist() == [step + 60, step + 60, step, 0]


def test_restore_rebuilds_the_segment_since_the_last_release():
    records = [{"kind": "record", "step": s, "fisher": float(s)} for s in range(0, 60, 10)]
    release = np.array([NEVER, 20, 0])
    adaptive = AdaptiveRemoval(GradualUnfreezing(("a", "b")), "fisher")
    adaptive.restore(records + [{"kind": "train", "step": 50}], release)
    assert adaptive.steps == [30, 40, 50]
    adaptive.restore(records, head_only_release_steps(2))
    assert adaptive.steps == [0, 10, 20, 30, 40, 50]


@pytest.mark.slow  # ~30 s; the LR-switch test below runs the same adaptive path end to end
def test_one_run_releases_every_block_by_the_end_of_recording(tiny_config, tiny_dataset, tmp_path):
    c = tiny_config
    c.unfreeze.k = None
    c.unfreeze.adaptive = "fisher"
    c.stabilization.tau = 1
    c.total_steps = 8
    c.record.every = 1
    c.record.until = 6
    c.record.set_size = 64
    c.record.batch_size = 32
    c.record.metrics = ("fisher", "avg_sharpness")  # the recorder of test_recording (cached)
    c.record.avg_samples = 2
    results = train_and_evaluate(c, str(tmp_path), dataset=tiny_dataset)
    releases = [
        r for r in read_records(os.path.join(tmp_path, "metrics.jsonl")) if r["kind"] == "release"
    ]
    assert releases and releases[-1]["step"] <= 6
    assert results["release_steps"] == releases[-1]["release_steps"]
    assert results["stabilization"] == {"tau": 1, "eps": 0.02, "rapid_eps": 0.05}
    assert max(results["release_steps"]) <= 6
    assert [b for r in releases for b in r["blocks"]] == [
        "layer4",
        "layer3",
        "layer2",
        "layer1",
        "stem",
    ][: sum(len(r["blocks"]) for r in releases)]


def test_the_lr_switch_is_removed_adaptively_through_the_same_path(
    tiny_config, tiny_dataset, tmp_path
):
    """One code path for every intervention: here the l2h switch happens when tr(F) settles
    (or at the last recording), the learning rate 0.1x before it and 1x after."""
    c = tiny_config
    c.unfreeze.k = None
    c.optimizer.lr_switch = "l2h"
    c.optimizer.lr_switch_adaptive = "fisher"
    c.stabilization.tau = 1
    c.total_steps = 8
    c.log_every = 1
    c.record.every = 1
    c.record.until = 6
    c.record.set_size = 64
    c.record.batch_size = 32
    c.record.metrics = ("fisher", "avg_sharpness")
    c.record.avg_samples = 2
    results = train_and_evaluate(c, str(tmp_path), dataset=tiny_dataset)
    records = read_records(os.path.join(tmp_path, "metrics.jsonl"))
    (switch,) = [r for r in records if r["kind"] == "release"]
    assert switch["intervention"] == "lr_switch" and switch["step"] <= 6
    assert results["lr_switch_step"] == switch["switch_step"] == switch["step"]
    lrs = {r["step"] - 1: r["lr"] for r in records if r["kind"] == "train"}  # update's step
    want = {s: 0.1 * 0.05 if s < switch["step"] else 0.05 for s in lrs}
    assert lrs == pytest.approx(want), lrs
    assert results["release_steps"] == [0] * 6  # gradual unfreezing was not used


def test_restore_for_the_lr_switch():
    records = [{"kind": "record", "step": s, "fisher": float(s)} for s in range(0, 40, 10)]
    adaptive = AdaptiveRemoval(LRSwitch("l2h"), "fisher")
    adaptive.restore(records, LRSwitch("l2h").held())
    assert adaptive.steps == [0, 10, 20, 30]
    assert adaptive.update(40, 1.0, [NEVER], last_recording=True).tolist() == [40]
    assert adaptive.update(50, 1.0, [40], last_recording=False) is None  # nothing left
