"""Auto-k folders: the summary `experiments.autok` writes to autok.json (schema version 2),
and the runs, seeds and k it names."""

from __future__ import annotations

import json
import math
import os

import numpy as np

AUTOK_VERSION = 2


def read_autok(autok_dir: str) -> dict:
    """The summary `experiments.autok` wrote to `autok_dir/autok.json` (schema version 2)."""
    path = os.path.join(autok_dir, "autok.json")
    if not os.path.exists(path):
        raise SystemExit(f"{path} not found: run experiments.autok with --out={autok_dir} first")
    with open(path) as f:
        summary = json.load(f)
    if summary.get("version") != AUTOK_VERSION:
        raise SystemExit(
            f"{path} has schema version {summary.get('version')}, analysis reads version "
            f"{AUTOK_VERSION}: rerun experiments.autok (finished runs are reused)"
        )
    return summary


def seed_values(summary: dict, run: str, which: str) -> list[float]:
    """The `which` ('id' or 'ood') accuracy of auto-k run `run` for every seed, in seed order;
    a missing or non-finite value is an error naming the run and the seeds."""
    if run not in summary["runs"]:
        raise ValueError(f"autok.json has no run {run!r} (runs: {sorted(summary['runs'])})")
    values = summary["runs"][run][which]
    missing = [
        s
        for s in summary["seeds"]
        if values.get(str(s)) is None or not math.isfinite(float(values[str(s)]))
    ]
    if missing:
        raise ValueError(
            f"autok.json run {run!r} has no {which.upper()} accuracy for seed(s) {missing}: "
            "finish those runs (rerun experiments.autok) before the tables"
        )
    return [float(values[str(s)]) for s in summary["seeds"]]


def seed_mean(summary: dict, run: str, which: str) -> float:
    return float(np.mean(seed_values(summary, run, which)))


def run_for_k(summary: dict, k: int) -> str:
    """The name of the auto-k run trained with unfreezing interval k."""
    name = f"k={k}"
    if summary["runs"].get(name, {}).get("k") == k:
        return name
    for name, run in summary["runs"].items():
        if run.get("k") == k:
            return name
    raise ValueError(f"autok.json has no run with k={k} (runs: {sorted(summary['runs'])})")


def metric_run(summary: dict, metric: str) -> str | None:
    """The run trained with the k `metric` picked (None when it picked no k)."""
    k = summary["picked"][metric]["k"]
    if k is None:
        return None
    name = summary.get("metric_runs", {}).get(metric) or run_for_k(summary, k)
    if summary["runs"].get(name, {}).get("k") != k:
        raise ValueError(f"autok.json: metric_runs[{metric!r}] = {name!r} is not a run with k={k}")
    return name


def intervention_label(summary: dict) -> str:
    """'GU' for gradual unfreezing, else e.g. 'lr_l2h' (autok.json's `setting.label`)."""
    return summary["setting"]["label"]
