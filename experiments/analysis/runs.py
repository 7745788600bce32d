"""Finished runs: sweep folders and auto-k folders read into records and one pandas DataFrame,
and runs grouped into setting families and settings (see the package docstring)."""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from earlyjax.config import RESUMABLE_CHANGES, Field, default_config, flatten
from earlyjax.train import CONFIG_FILE, RESULTS_FILE
from experiments.analysis.stats import mean_std

# Fields that never change a run's results (see the module docstring).
NON_RESULT_FIELDS = frozenset(
    RESUMABLE_CHANGES
    | {"log_every", "eval_every", "data.data_dir", "data.ood_dir", "unfreeze.allow_late_release"}
    | {Field.FINAL_METRICS}  # measures the trained model, never changes it
)
# Fields that say which intervention a run used: they tell settings of one family apart.
INTERVENTION_FIELDS = (
    Field.UNFREEZE_K,
    Field.UNFREEZE_HEAD_ONLY,
    Field.UNFREEZE_ADAPTIVE,
    Field.LR_SWITCH,
    Field.LR_SWITCH_STEP,
    Field.LR_SWITCH_ADAPTIVE,
    Field.LR_SWITCH_HOLD,
)
# Fields that change only adaptive-unfreezing runs (recording, Algorithm 2's parameters).
ADAPTIVE_ONLY_PREFIXES = ("record.", "stabilization.")
# A pseudo-field taken from results.json.
DATASET_FIELD = "results.dataset"
# Differing fields that have a column of their own (dataset, model, lr).
SHOWN_ELSEWHERE = frozenset({"data.name", "model.name", Field.LR_SCALE, DATASET_FIELD})

METRIC_TITLES = {
    "fisher": "tr(F)",
    "avg_sharpness": "S_avg",
    "worst_sharpness": "S_worst",
    "hessian": "λ_max",
    "feature_rank": "feature rank",
}


# --------------------------------------------------------------------------------------------
# Loading and grouping runs


@lru_cache(maxsize=1)
def _defaults() -> dict:
    return flatten(default_config().to_dict())


def _hashable(value):
    return tuple(_hashable(v) for v in value) if isinstance(value, list | tuple) else value


def result_fields(config: dict, results: dict) -> dict:
    """The fields of a run that can change its results (see the module docstring), dotted."""
    flat = {**_defaults(), **flatten(config)}
    adaptive = (
        flat.get(Field.UNFREEZE_ADAPTIVE) is not None
        or flat.get(Field.LR_SWITCH_ADAPTIVE) is not None
    )
    fields = {}
    for name, value in flat.items():
        if name == "seed" or name in NON_RESULT_FIELDS:
            continue
        if not adaptive and name.startswith(ADAPTIVE_ONLY_PREFIXES):
            continue
        if name == Field.LR_SWITCH_STEP and flat.get(Field.LR_SWITCH) is None:
            continue
        fields[name] = _hashable(value)
    fields[DATASET_FIELD] = results["dataset"]
    return fields


def load_runs(sweep_dir: str) -> list[dict]:
    """One flat record per finished run under sweep_dir (any depth), head-only runs excluded.

    Each record has `run` (the folder, relative), `path` (the folder), `dataset`, `model`,
    `lr_scale`, `k`, `adaptive` (+ `adaptive_tau`, `adaptive_eps`), `head_only`, `lr_switch`,
    `lr_switch_step`, `seed`, `id`, `ood` (NaN when the run had no OOD set), `ood_set` (the OOD
    set's name from results.json, None in older results), `lr`, `final_solution` and `fields`
    (`result_fields`, used for grouping).
    """
    runs = []
    for root, _, files in os.walk(sweep_dir):
        if RESULTS_FILE in files and CONFIG_FILE in files:
            with open(os.path.join(root, RESULTS_FILE)) as f:
                results = json.load(f)
            with open(os.path.join(root, CONFIG_FILE)) as f:
                config = json.load(f)
            flat = {**_defaults(), **flatten(config)}
            if flat[Field.UNFREEZE_HEAD_ONLY] or flat[Field.LR_SWITCH_HOLD]:
                continue  # an auto-k signal run, not a training result
            ood = results.get("ood_accuracy")
            runs.append(
                {
                    "run": os.path.relpath(root, sweep_dir),
                    "path": root,
                    "dataset": results["dataset"],
                    "model": flat["model.name"],
                    "lr_scale": flat[Field.LR_SCALE],
                    "lr_switch": flat[Field.LR_SWITCH],
                    "lr_switch_step": flat[Field.LR_SWITCH_STEP],
                    "k": flat[Field.UNFREEZE_K],
                    "adaptive": flat[Field.UNFREEZE_ADAPTIVE],
                    "adaptive_tau": flat["stabilization.tau"],
                    "adaptive_eps": flat["stabilization.eps"],
                    "head_only": bool(flat[Field.UNFREEZE_HEAD_ONLY]),
                    "seed": flat["seed"],
                    "id": results["id_accuracy"],
                    "ood": math.nan if ood is None else ood,
                    "ood_set": results.get("ood_set"),
                    "lr": flat["optimizer.lr"] * flat[Field.LR_SCALE],
                    "final_solution": results.get("final_solution") or {},
                    "fields": result_fields(config, results),
                }
            )
    if not runs:
        raise SystemExit(f"no finished runs (folders with {RESULTS_FILE}) under {sweep_dir}")
    return sorted(runs, key=lambda r: r["run"])


ABSENT = ("<absent>",)


def _in_family_key(name: str) -> bool:
    return name not in INTERVENTION_FIELDS and not name.startswith(ADAPTIVE_ONLY_PREFIXES)


def sort_key(value) -> tuple:
    """A sort key for field values of mixed types (None first, numbers numerically)."""
    if value is None or value is ABSENT:
        return (0, 0, "")
    if isinstance(value, bool | int | float):
        return (1, float(value), "")
    if isinstance(value, str):
        return (2, 0, value)
    return (3, 0, repr(value))


def differing(runs: Sequence[dict]) -> list[str]:
    """The grouping fields (sorted) whose values are not the same in all runs."""
    names = sorted(set().union(*(r["fields"] for r in runs)))
    return [n for n in names if len({r["fields"].get(n, ABSENT) for r in runs}) > 1]


def families(
    runs: Sequence[dict], within: Sequence[str] = ()
) -> tuple[list[str], list[tuple[dict, list[dict]]]]:
    """(the fields that differ between families, [(their values, the family's runs)]), sorted.

    Fields in `within` (besides the intervention's) tell settings of one family apart instead,
    as the learning-rate scale does in Table 3."""
    names = [n for n in differing(runs) if _in_family_key(n) and n not in within]
    ordered = sorted(group_by_fields(runs, names), key=lambda kv: [sort_key(v) for v in kv[0]])
    return names, [(dict(zip(names, key, strict=True)), rs) for key, rs in ordered]


def is_standard(r: dict) -> bool:
    """No intervention: k = None, no adaptive unfreezing, no LR switch, not head-only."""
    return (
        r["k"] is None
        and r.get("adaptive") is None
        and r.get("lr_switch") is None
        and not r.get("head_only", False)
    )


def fmt_value(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(fmt_value(v) for v in value)
    return str(value)


def training_label(r: dict) -> str:
    """'standard', 'GU k=20', 'adaptive (fisher)', 'lr_l2h @ 300', or a combination."""
    parts = []
    if r.get("head_only"):
        parts.append("head only")
    if r.get("adaptive") is not None:
        extra = ""
        d = _defaults()
        tau, eps = r.get("adaptive_tau"), r.get("adaptive_eps")
        if tau is not None and tau != d["stabilization.tau"]:
            extra += f", τ={tau}"
        if eps is not None and eps != d["stabilization.eps"]:
            extra += f", ε={eps:g}"
        parts.append(f"adaptive ({r['adaptive']}{extra})")
    if r["k"] is not None:
        parts.append(f"GU k={r['k']}")
    if r.get("lr_switch") is not None:
        parts.append(f"lr_{r['lr_switch']} @ {r['lr_switch_step']}")
    return ", ".join(parts) or "standard"


def _training_order(r: dict) -> tuple:
    """Standard first, then GU by numeric k, then adaptive, then LR switches."""
    return (
        r.get("lr_switch") is not None,
        r.get("adaptive") is not None,
        bool(r.get("head_only")),
        r["k"] is not None,
        r["k"] or 0,
        str(r.get("adaptive")),
        str(r.get("lr_switch")),
        r.get("lr_switch_step") or 0,
        -(r.get("lr_scale") or 1.0),  # lr_d before 0.1·lr_d (Table 3)
    )


def ood_set(runs: Sequence[dict]) -> str | None:
    """The OOD set the runs' results.json name (None if none does: older results); runs of one
    family naming different OOD sets are an error."""
    named = defaultdict(list)
    for r in runs:
        if r.get("ood_set"):
            named[r["ood_set"]].append(r["run"])
    if len(named) > 1:
        raise ValueError(
            f"runs of one setting family report different OOD sets, so their OOD accuracies "
            f"cannot be compared: {dict(named)}"
        )
    return next(iter(named), None)


def group_by_fields(runs: Sequence[dict], names: Sequence[str]) -> list[tuple[tuple, list[dict]]]:
    """[(the runs' values of the grouping fields `names`, the runs)], in first-seen order: a
    pandas groupby over `runs_frame`'s field columns (a field a run lacks is `ABSENT`)."""
    frame = runs_frame(runs, names)
    keys = frame[list(names)].apply(tuple, axis=1) if names else frame["run"].map(lambda _: ())
    groups = frame.groupby(keys.astype(object), sort=False).indices
    return [(key, [runs[i] for i in rows]) for key, rows in groups.items()]


def runs_frame(runs: Sequence[dict], names: Sequence[str] = ()):
    """The runs as one pandas DataFrame: a row per run with its record's scalar columns (`run`,
    `dataset`, `model`, `lr_scale`, `k`, ..., `id`, `ood`) and one object column per grouping
    field of `names` (dotted, `ABSENT` where a run's config lacks it)."""
    import pandas as pd

    scalar = [c for c in (runs[0] if runs else {}) if c not in ("fields", "final_solution")]
    frame = pd.DataFrame([{c: r.get(c) for c in scalar} for r in runs], dtype=object)
    for n in names:
        frame[n] = pd.Series([r["fields"].get(n, ABSENT) for r in runs], dtype=object)
    return frame


def settings_of(family_runs: Sequence[dict]) -> list[dict]:
    """The settings of one family, sorted: {label, runs, id, id_std, ood, ood_std, n, ...}."""
    ood_set(family_runs)
    names = differing(family_runs)
    settings = []
    for key, rs in group_by_fields(family_runs, names):
        seeds = defaultdict(list)
        for r in rs:
            seeds[r["seed"]].append(r["run"])
        twice = {s: runs for s, runs in seeds.items() if len(runs) > 1}
        if twice:
            raise ValueError(
                f"runs {twice} have the same setting and seed: remove the copies, or the "
                "number of seeds would be wrong"
            )
        first = rs[0]
        id_m, id_s = mean_std([r["id"] for r in rs])
        ood_m, ood_s = mean_std([r["ood"] for r in rs])
        settings.append(
            {
                "label": training_label(first),
                "key": dict(zip(names, key, strict=True)),
                "first": first,
                "standard": is_standard(first),
                "runs": sorted(rs, key=lambda r: sort_key(r["seed"])),
                "id": id_m,
                "id_std": id_s,
                "ood": ood_m,
                "ood_std": ood_s,
                "n": len(rs),
            }
        )
    settings.sort(key=lambda s: _training_order(s["first"]))
    # Two settings with the same label differ in some other intervention field (e.g. the
    # recording of an adaptive run): name it.
    by_label = defaultdict(list)
    for s in settings:
        by_label[s["label"]].append(s)
    for same in by_label.values():
        if len(same) > 1:
            diff = [n for n in names if len({s["key"][n] for s in same}) > 1]
            for s in same:
                s["label"] += " [" + ", ".join(f"{n}={fmt_value(s['key'][n])}" for n in diff) + "]"
    return settings


def recorded_curves(workdir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{metric: (steps, values)} from a run's `record` lines."""
    from earlyjax.metric_log import METRICS_FILE, read_records

    recs = [r for r in read_records(os.path.join(workdir, METRICS_FILE)) if r["kind"] == "record"]
    names = [m for m in METRIC_TITLES if recs and m in recs[0]]
    return {
        m: (np.array([r["step"] for r in recs]), np.array([float(r[m]) for r in recs]))
        for m in names
    }


DYNAMICS_METRICS = ("fisher", "avg_sharpness", "worst_sharpness")
