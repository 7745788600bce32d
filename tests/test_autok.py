"""Auto-k pieces: k from recorded curves, random k, winning rate, Table 2, Figure 6."""

import json
import os

import numpy as np
import pytest

from experiments import analysis, autok
from experiments.analysis import figure6


def saturating_records(n=60, every=10):
    steps = np.arange(n) * every
    fisher = 1 - np.exp(-np.arange(n) / 5.0)
    flat = np.zeros(n)
    return [
        {
            "step": int(s),
            "kind": "record",
            "fisher": float(f),
            "avg_sharpness": float(a),
            "worst_sharpness": float(f) * 2,
        }
        for s, f, a in zip(steps, fisher, flat, strict=True)
    ]


def test_pick_ks_turns_curves_into_steps():
    picked = autok.pick_ks(saturating_records(), autok.SIGNAL_METRICS, tau=3, eps=0.02)
    # 1 - exp(-i/5): the smoothed change |S[i+3] - S[i]|/3 first drops to <= 0.02 at i = 11.
    assert picked["fisher"]["k"] == 110 and picked["fisher"]["stable"]
    assert picked["worst_sharpness"]["k"] == 110  # scale does not matter after normalising
    assert picked["avg_sharpness"]["k"] is None  # constant: stable at step 0, nothing to pick
    assert "step 0" in picked["avg_sharpness"]["reason"]


def test_random_ks_are_distinct_fixed_per_seed_and_in_range():
    ks = autok.random_ks(0, 10, 800)
    assert len(set(ks)) == 10 and min(ks) >= 1 and max(ks) <= 800
    assert ks == autok.random_ks(0, 10, 800) and ks != autok.random_ks(1, 10, 800)


def test_winning_rate_counts_pairs_over_seeds():
    # seed 0: 50 beats 40 only; seed 1: 60 beats 59 and 30
    assert analysis.winning_rate([50.0, 60.0], [[40, 55, 70], [59, 61, 30]]) == pytest.approx(
        100 * 3 / 6
    )


def test_table2_rows_and_figure6(tmp_path):
    summary = {
        "max_random_k": 30,
        "standard": {"id": [90.0, 92.0], "ood": [50.0, 52.0]},
        "random": {"k": [[3, 7], [4, 9]], "id": [[89, 90], [91, 92]], "ood": [[51, 49], [53, 50]]},
        "metrics": {
            "fisher": {
                "k": [110, 120],
                "id": [91, 91],
                "ood": [52, 52],
                "random_ood": [[51, 49], [53, 50]],
            }
        },
        "picked": {"seed=0": {"fisher": {"k": 110, "stable": True, "index": 11, "reason": ""}}},
    }
    rows = analysis.table2(summary)
    assert [r["method"] for r in rows] == ["standard", "GU, random k", "GU, k from fisher"]
    assert rows[2]["WR (OOD) %"] == pytest.approx(75.0) and rows[2]["k"] == "110,120"
    signal = tmp_path / "seed=0" / "signal"
    signal.mkdir(parents=True)
    with open(signal / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in saturating_records())
    with open(tmp_path / "autok.json", "w") as f:
        json.dump(summary, f)
    paths = figure6(str(tmp_path), str(tmp_path / "out"))
    assert len(paths) == 2 and all(os.path.getsize(p) > 1000 for p in paths)


def test_pipeline_end_to_end_writes_table2_and_figures_and_resumes(
    tiny_config, tiny_dataset, tmp_path
):
    c = tiny_config
    c.record.every = 1
    c.record.until = 6
    c.record.set_size = 64
    c.record.batch_size = 32
    c.record.metrics = ("fisher",)
    out = str(tmp_path / "autok")
    kwargs = dict(seeds=[0], n_random=1, max_random_k=4, metrics=("fisher",), tau=1, eps=0.05)
    summary = autok.pipeline(c, out, dataset=tiny_dataset, **kwargs)

    picked = summary["picked"]["seed=0"]["fisher"]
    signal = autok.signal_records(os.path.join(out, "seed=0", "signal"))
    assert [r["step"] for r in signal] == list(range(7))
    assert all(r["trainable"] == ["head"] for r in signal)  # head-only signal run
    [random_k] = summary["random"]["k"][0]
    runs = {r["run"] for r in analysis.load_runs(out)}
    expected = {"seed=0/standard", f"seed=0/k={random_k}"}
    if picked["k"] is not None:
        expected.add(f"seed=0/k={picked['k']}")
        assert summary["metrics"]["fisher"]["k"] == [picked["k"]]
    assert runs == expected
    for name in ("table2.md", "table2.csv", "fig2.png", "fig2.pdf", "fig6_seed=0.png"):
        assert os.path.getsize(os.path.join(out, "analysis", name)) > 0, name
    with open(os.path.join(out, "autok.json")) as f:
        assert json.load(f) == json.loads(json.dumps(summary))

    # The same command again trains nothing: every run is finished.
    results = os.path.join(out, "seed=0", "standard", "results.json")
    before = os.path.getmtime(results)
    assert autok.pipeline(c, out, dataset=tiny_dataset, **kwargs) == summary
    assert os.path.getmtime(results) == before
