"""Auto-k as the paper computes it: one k per metric from the seed-mean signal, one shared set of
random k trained on every seed, winning rate by seed means, Tables 2 and 6."""

import json
import os

import numpy as np
import pytest
from helpers import small_nli_config

from earlyjax.metric_log import METRICS_FILE, read_records
from earlyjax.train import build_task
from experiments import analysis, autok

STABILIZATION = {"tau": 3, "eps": 0.02, "rapid_eps": 0.05}


def test_pick_k_turns_a_saturating_curve_into_a_step():
    steps = list(range(0, 600, 10))
    i = np.arange(60)
    # 1 - exp(-i/5): the smoothed change |S[i+3] - S[i]|/3 first drops to <= 0.02 at i = 11.
    assert autok.pick_k(steps, 1 - np.exp(-i / 5.0), STABILIZATION)["k"] == 110
    assert autok.pick_k(steps, 7 * (1 - np.exp(-i / 5.0)), STABILIZATION)["k"] == 110
    flat = autok.pick_k(steps, np.zeros(60), STABILIZATION)
    assert flat["k"] is None and "step 0" in flat["reason"]


def test_seed_mean_curves_average_the_seeds_at_common_steps():
    recs = [
        [{"step": s, "fisher": v} for s, v in zip([0, 10, 20], [1.0, 2.0, 3.0], strict=True)],
        [{"step": s, "fisher": v} for s, v in zip([0, 10, 20], [3.0, 4.0, 5.0], strict=True)],
    ]
    steps, means = autok.seed_mean_curves(recs, ["fisher"])
    assert steps == [0, 10, 20] and means["fisher"] == [2.0, 3.0, 4.0]


def test_random_k_come_from_the_range_a_metric_can_pick(tiny_config):
    c = tiny_config
    c.record.every, c.record.until = 10, 2000
    assert autok.candidate_ks(c.record, None)[:3] == [10, 20, 30]
    assert autok.candidate_ks(c.record, None)[-1] == 2000
    assert autok.candidate_ks(c.record, 937)[-1] == 930  # MNIST: 4690 steps, L = 5
    ks = autok.random_ks(autok.candidate_ks(c.record, 937), 10)
    assert len(set(ks)) == 10 and all(k % 10 == 0 and 10 <= k <= 930 for k in ks)
    assert ks == autok.random_ks(autok.candidate_ks(c.record, 937), 10)  # fixed: reruns reuse


class _Task:
    """What autok.plan needs of a task: its blocks and the training set's size."""

    blocks, head, num_train = ("stem", "layer1", "layer2", "layer3", "layer4"), "head", 256


def test_plan_refuses_what_cannot_work(tiny_config):
    c = tiny_config
    c.unfreeze.k = None
    c.unfreeze.allow_late_release = False
    c.record.every, c.record.until = 1, 6
    c.record.metrics = ("fisher",)
    c.total_steps = 16  # L = 5: k <= 3 fits
    setting = autok.plan(c, ("fisher",), 3, _Task)
    assert setting.candidates == [1, 2, 3] and setting.max_k == 3
    with pytest.raises(ValueError, match="--n_random=4 distinct k"):
        autok.plan(c, ("fisher",), 4, _Task)
    with pytest.raises(ValueError, match="must be recorded"):
        autok.plan(c, ("avg_sharpness",), 1, _Task)
    with pytest.raises(ValueError, match="the largest k that fits is 3"):
        autok.refuse_late_k(setting, {"fisher": {"k": 4}})
    # The LR switch: k is a step, any recording step before the end fits.
    with pytest.raises(ValueError, match="needs its direction"):
        autok.plan(c, ("fisher",), 3, _Task, "lr_switch")
    c.optimizer.lr_switch = "l2h"
    with pytest.raises(ValueError, match="a second intervention in every run"):
        autok.plan(c, ("fisher",), 3, _Task)
    switch = autok.plan(c, ("fisher",), 6, _Task, "lr_switch")
    assert switch.candidates == [1, 2, 3, 4, 5, 6] and switch.max_k == 15
    assert switch.random_candidates == switch.candidates
    # The paper draws its random k <= 800 while a metric may pick later ones (Table 6).
    capped = autok.plan(c, ("fisher",), 4, _Task, "lr_switch", max_random_k=4)
    assert capped.candidates == [1, 2, 3, 4, 5, 6] and capped.random_candidates == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="--n_random=5 .* and --max_random_k=4: 4"):
        autok.plan(c, ("fisher",), 5, _Task, "lr_switch", max_random_k=4)
    assert switch.intervention.held_overrides() == (
        ("optimizer.lr_switch_step", None),
        ("optimizer.lr_switch_hold", True),
    )
    c.optimizer.lr_switch = None
    c.unfreeze.k = 2
    with pytest.raises(ValueError, match="sets the schedule itself: unset unfreeze.k=2"):
        autok.plan(c, ("fisher",), 1, _Task)


def pipeline_config(c):
    """The tiny config of the end-to-end pipeline tests: 16 steps, tr(F) recorded every step to
    6 on 64 points, Algorithm 2 with tau 1."""
    c.unfreeze.k = None
    c.total_steps = 16
    c.record.every, c.record.until = 1, 6
    c.record.set_size, c.record.batch_size = 64, 32
    c.record.metrics = ("fisher",)
    c.stabilization.tau, c.stabilization.eps, c.stabilization.rapid_eps = 1, 0.05, 0.1
    return c


def _replace_signal(workdir, values):
    """Rewrites a finished signal run's recorded tr(F) with a known curve (same steps)."""
    path = os.path.join(workdir, METRICS_FILE)
    recs = read_records(path)
    it = iter(values)
    with open(path, "w") as f:
        for r in recs:
            if r["kind"] == "record":
                r["fisher"] = next(it)
            f.write(json.dumps(r) + "\n")


@pytest.mark.slow  # ~45 s: 10 real runs; the pieces have fast tests here and in test_analysis
def test_pipeline_end_to_end_reaches_the_metric_k_the_winning_rate_and_resumes(
    tiny_config, tiny_dataset, tmp_path
):
    c = pipeline_config(tiny_config)
    c.unfreeze.allow_late_release = False
    out = str(tmp_path / "autok")
    # The signal runs train for real; their tr(F) curves are then replaced by known ones that
    # settle at step 2 (seed mean: changes 0.8, 0.18, 0.02, 0, ...), so the metric's k is known.
    curves = {0: [0.0, 0.7, 0.97, 1.0, 1.0, 1.0, 1.0], 1: [0.0, 0.9, 0.99, 1.0, 1.0, 1.0, 1.0]}
    for seed, values in curves.items():
        signal_dir = os.path.join(out, f"seed={seed}", "signal")
        overrides = (("seed", seed), ("unfreeze.head_only", True), ("total_steps", 6))
        task = build_task(c, tiny_dataset).without_ood()
        autok.run(c, signal_dir, overrides + (("data.ood_source", "none"),), task)
        _replace_signal(signal_dir, values)

    summary = autok.pipeline(c, out, seeds=[0, 1], n_random=2, dataset=tiny_dataset)

    assert summary["picked"]["fisher"]["k"] == 2
    assert set(summary["picked"]["fisher"]["per_seed"]) == {"0", "1"}
    assert summary["k_range"] == [1, 2, 3] and set(summary["random_k"]) <= {1, 2, 3}
    assert summary["stabilization"] == {"tau": 1, "eps": 0.05, "rapid_eps": 0.1}
    names = {"standard", "k=2", *(f"k={k}" for k in summary["random_k"])}
    assert set(summary["runs"]) == names
    trained = {r["run"] for r in analysis.load_runs(out)}
    assert trained == {f"seed={s}/{n}" for s in (0, 1) for n in names}
    for name in names:  # every run on every seed
        assert set(summary["runs"][name]["ood"]) == {"0", "1"}
    wr = summary["winning_rate"]["fisher"]
    assert wr == analysis.winning_rate(summary, "fisher") and wr["n"] == 2
    metric_ood = np.mean(list(summary["runs"]["k=2"]["ood"].values()))
    expected = sum(
        1.0 if metric_ood > m else 0.5 if metric_ood == m else 0.0
        for m in (
            np.mean(list(summary["runs"][f"k={k}"]["ood"].values())) for k in summary["random_k"]
        )
    )
    assert wr["percent"] == pytest.approx(100 * expected / 2)
    rows = {r["method"]: r for r in analysis.table2(summary)}
    metric_row = next(r for m, r in rows.items() if "tr(F)" in m)
    assert str(metric_row["k"]) == "2" and metric_row["n"] == 2
    for name in ("table2.md", "table6.md", "fig2.png", "fig6.png"):
        assert os.path.getsize(os.path.join(out, "analysis", name)) > 0, name
    with open(os.path.join(out, "autok.json")) as f:
        assert json.load(f) == json.loads(json.dumps(summary))

    # The same command again trains nothing: every run is finished.
    results = os.path.join(out, "seed=0", "standard", "results.json")
    before = os.path.getmtime(results)
    assert autok.pipeline(c, out, seeds=[0, 1], n_random=2, dataset=tiny_dataset) == summary
    assert os.path.getmtime(results) == before


@pytest.mark.slow  # ~45 s: the same pipeline as above, for the LR switch
def test_pipeline_picks_the_lr_switch_step_through_the_same_code(
    tiny_config, tiny_dataset, tmp_path
):
    c = pipeline_config(tiny_config)
    c.optimizer.lr_switch = "l2h"  # the direction; auto-k picks the step
    out = str(tmp_path / "autok")
    held = (("optimizer.lr_switch_step", None), ("optimizer.lr_switch_hold", True))
    curves = {0: [0.0, 0.7, 0.97, 1.0, 1.0, 1.0, 1.0], 1: [0.0, 0.9, 0.99, 1.0, 1.0, 1.0, 1.0]}
    for seed, values in curves.items():
        signal_dir = os.path.join(out, f"seed={seed}", "signal")
        overrides = (("seed", seed), *held, ("total_steps", 6), ("data.ood_source", "none"))
        autok.run(c, signal_dir, overrides, build_task(c, tiny_dataset).without_ood())
        _replace_signal(signal_dir, values)

    summary = autok.pipeline(
        c, out, seeds=[0, 1], n_random=2, intervention="lr_switch", dataset=tiny_dataset
    )
    assert summary["setting"]["intervention"] == "lr_switch"
    assert summary["picked"]["fisher"]["k"] == 2
    assert summary["k_range"] == [1, 2, 3, 4, 5, 6]  # any recording step before the end
    with open(os.path.join(out, "seed=0", "k=2", "results.json")) as f:
        assert json.load(f)["lr_switch_step"] == 2
    with open(os.path.join(out, "seed=0", "standard", "config.json")) as f:
        assert json.load(f)["optimizer"]["lr_switch"] is None  # no intervention at all
    assert summary["winning_rate"]["fisher"]["n"] == 2


def test_command_line_refuses_bad_input_with_one_line(tmp_path):
    """`python -m experiments.autok` parses its flags and stops on a bad value before training."""
    import subprocess
    import sys

    out = tmp_path / "autok"
    cmd = [sys.executable, "-m", "experiments.autok", "--config=quickstart_autok.py"]
    cmd += [f"--out={out}", "--seeds=0", "--n_random=999"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "error: --n_random=999 distinct k" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.slow  # ~60 s: 4 real XLM-R runs
def test_pipeline_runs_on_the_nli_task_through_the_same_code(tmp_path):
    """Auto-k on XLM-R + LoRA (the paper's Table 4): the task is built once from the config,
    the signal run holds every LoRA layer but the last (App. A's head group) and skips the OOD
    languages, the other runs are evaluated per language."""
    c = pipeline_config(small_nli_config())
    c.model.layers = 3  # blocks layers_0, layers_1; head group layers_2 + head
    c.total_steps = 12
    c.record.every, c.record.until = 2, 4
    c.record.set_size, c.record.batch_size = 64, 64
    out = str(tmp_path / "autok")
    signal_dir = os.path.join(out, "seed=0", "signal")
    held = (("seed", 0), ("unfreeze.head_only", True), ("total_steps", 4))
    task = build_task(c)
    autok.run(c, signal_dir, held + (("data.ood_source", "none"),), task.without_ood())
    _replace_signal(signal_dir, [0.0, 0.98, 1.0])  # settles at step 2 (tau 1)

    summary = autok.pipeline(c, out, seeds=[0], n_random=1)

    assert summary["setting"]["task"] == "nli" and summary["setting"]["parts"] == 2
    assert summary["picked"]["fisher"]["k"] == 2
    with open(os.path.join(signal_dir, "results.json")) as f:
        signal = json.load(f)
    assert signal["release_steps"] == [2**31 - 1, 2**31 - 1, 0] and signal["ood_table"] == {}
    with open(os.path.join(out, "seed=0", "k=2", "results.json")) as f:
        metric_run = json.load(f)
    assert metric_run["release_steps"] == [3, 1, 0]  # k(L - j) - 1, top-down
    assert sorted(metric_run["ood_table"]) == ["xa", "xb", "xc"]
    assert summary["runs"]["k=2"]["ood"]["0"] == metric_run["ood_accuracy"]
    assert os.path.getsize(os.path.join(out, "analysis", "table2.md")) > 0
