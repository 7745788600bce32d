"""The paper's tables and figures from a sweep folder (see experiments/sweep.py), an auto-k
folder (see experiments/autok.py), or all of them from the folder of experiments/paper.py.

    python -m experiments.analysis all runs/paper             # every table and figure
    python -m experiments.analysis table1 runs/mnist_k        # standard vs GU, mean ± std
    python -m experiments.analysis table3 runs/c10_lr         # LR switch (l2h / h2l)
    python -m experiments.analysis fig1 runs/mnist_k          # ΔID and ΔOOD vs k, log x
    python -m experiments.analysis fig2 runs/mnist_k          # recorded metrics, seed mean ± std
    python -m experiments.analysis table2 runs/mnist_autok    # auto-k per metric, winning rate
    python -m experiments.analysis table6 runs/mnist_autok    # the k each metric picked
    python -m experiments.analysis fig6 runs/mnist_autok      # signal curves, picked k marked
    python -m experiments.analysis fig5 runs/c10_lr           # final solution vs OOD, Kendall τ

Outputs go to `<folder>/analysis/` (or --out): tables as Markdown (printed too; the caption
says how each statistic is computed), CSV (raw means and stds) and LaTeX, figures as PNG and
PDF. Only finished runs (with results.json) count; every cell averaged over
seeds is the mean ± sample std (ddof=1), with the number of values in `n`.

How runs are grouped (Tables 1 and 3, Figures 1 and 2). Each run's saved config.json is
flattened (`earlyjax.config.flatten`) and compared field by field; the dataset named in
results.json counts as a field too. A **setting** is the set of runs equal in every field except
the seed and the fields that do not change a run's results:

* `earlyjax.config.RESUMABLE_CHANGES` (checkpointing, progress bar, eval batch size, cache dir),
  `log_every`, `eval_every` (evaluating during training does not touch the training state),
  where the data lives (`data.data_dir`, `data.ood_dir`) and `unfreeze.allow_late_release` (it
  only permits a schedule; a finished run trained the same with or without it);
* `record.*` (recording the early-period metrics reads the state and never changes it) and
  `stabilization.*` (Algorithm 2's τ/ε, used by auto-k's head-only signal runs), except for
  adaptive-unfreezing runs, whose schedule Algorithm 2 decides from the recorded metric: there
  these fields are part of the setting;
* the step of an LR switch without `optimizer.lr_switch`.

A field missing from an older config.json takes its `default_config` value. Runs of one setting
differ only in the seed; two runs of one setting with the same seed are an error (the number of
seeds n would be wrong). A **setting family** is the set of settings equal in every field but
the intervention (`unfreeze.k`, `unfreeze.adaptive`, `unfreeze.head_only`,
`optimizer.lr_switch` and its step, and, for adaptive runs, `record.*` and `stabilization.*`).
In a family the
**baseline** ("standard") is the setting with no intervention at all: k = None, no adaptive
unfreezing, no LR switch, not head-only. Every other setting of the family (GU at each k,
adaptive unfreezing, LR switches) is a row of its own, with Δ against that baseline; nothing is
ever averaged into it. Fields that differ between families (model width, total_steps,
freeze_bn_stats, ...) become columns of the tables and name the figure files.

The OOD set a run was evaluated on (results.json's `ood_set`, e.g. "MNIST-C-style (generated)")
follows from its config, so it does not split groups; it is shown in an "OOD set" column (and
figure titles) whenever a results.json names it, so a generated set is labelled as generated.
Older results without it load ("-"); runs of one family naming different OOD sets are an error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

from earlyjax.config import RESUMABLE_CHANGES, default_config, flatten
from earlyjax.train import CONFIG_FILE, RESULTS_FILE

# Fields that never change a run's results (see the module docstring).
NON_RESULT_FIELDS = frozenset(
    RESUMABLE_CHANGES
    | {"log_every", "eval_every", "data.data_dir", "data.ood_dir", "unfreeze.allow_late_release"}
    | {"final.metrics"}  # measures the trained model, never changes it
)
# Fields that say which intervention a run used: they tell settings of one family apart.
INTERVENTION_FIELDS = (
    "unfreeze.k",
    "unfreeze.head_only",
    "unfreeze.adaptive",
    "unfreeze.adaptive_tau",  # older configs; now stabilization.tau
    "unfreeze.adaptive_eps",  # older configs; now stabilization.eps
    "optimizer.lr_switch",
    "optimizer.lr_switch_step",
    "optimizer.lr_switch_adaptive",
    "optimizer.lr_switch_hold",
)
# Fields that change only adaptive-unfreezing runs (recording, Algorithm 2's parameters).
ADAPTIVE_ONLY_PREFIXES = ("record.", "stabilization.", "unfreeze.adaptive_")
# A pseudo-field taken from results.json.
DATASET_FIELD = "results.dataset"
# Differing fields that have a column of their own (dataset, model, lr).
SHOWN_ELSEWHERE = frozenset({"data.name", "model.name", "optimizer.lr_scale", DATASET_FIELD})

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
        flat.get("unfreeze.adaptive") is not None
        or flat.get("optimizer.lr_switch_adaptive") is not None
    )
    fields = {}
    for name, value in flat.items():
        if name == "seed" or name in NON_RESULT_FIELDS:
            continue
        if not adaptive and name.startswith(ADAPTIVE_ONLY_PREFIXES):
            continue
        if name == "optimizer.lr_switch_step" and flat.get("optimizer.lr_switch") is None:
            continue
        fields[name] = _hashable(value)
    fields[DATASET_FIELD] = results["dataset"]
    return fields


def _saved(config: dict, *names: str):
    """The first of `names` the saved config has, else the first default_config has."""
    flat = flatten(config)
    for source in (flat, _defaults()):
        for n in names:
            if n in source:
                return source[n]
    return None


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
            if flat["unfreeze.head_only"] or flat["optimizer.lr_switch_hold"]:
                continue  # an auto-k signal run, not a training result
            ood = results.get("ood_accuracy")
            runs.append(
                {
                    "run": os.path.relpath(root, sweep_dir),
                    "path": root,
                    "dataset": results["dataset"],
                    "model": flat["model.name"],
                    "lr_scale": flat["optimizer.lr_scale"],
                    "lr_switch": flat["optimizer.lr_switch"],
                    "lr_switch_step": flat["optimizer.lr_switch_step"],
                    "k": flat["unfreeze.k"],
                    "adaptive": flat["unfreeze.adaptive"],
                    "adaptive_tau": _saved(config, "stabilization.tau", "unfreeze.adaptive_tau"),
                    "adaptive_eps": _saved(config, "stabilization.eps", "unfreeze.adaptive_eps"),
                    "head_only": bool(flat["unfreeze.head_only"]),
                    "seed": flat["seed"],
                    "id": results["id_accuracy"],
                    "ood": math.nan if ood is None else ood,
                    "ood_set": results.get("ood_set"),
                    "lr": flat["optimizer.lr"] * flat["optimizer.lr_scale"],
                    "final_solution": results.get("final_solution") or {},
                    "fields": result_fields(config, results),
                }
            )
    if not runs:
        raise SystemExit(f"no finished runs (folders with {RESULTS_FILE}) under {sweep_dir}")
    return sorted(runs, key=lambda r: r["run"])


def _fields(r: dict) -> dict:
    """A run's grouping fields; hand-made records without `fields` group by what they have."""
    if "fields" in r:
        return r["fields"]
    return {
        DATASET_FIELD: r.get("dataset"),
        "model.name": r.get("model"),
        "optimizer.lr_scale": r.get("lr_scale"),
        "unfreeze.k": r.get("k"),
        "unfreeze.adaptive": r.get("adaptive"),
        "unfreeze.head_only": r.get("head_only", False),
        "optimizer.lr_switch": r.get("lr_switch"),
        "optimizer.lr_switch_step": r.get("lr_switch_step"),
    }


_ABSENT = ("<absent>",)


def _in_family_key(name: str) -> bool:
    return name not in INTERVENTION_FIELDS and not name.startswith(ADAPTIVE_ONLY_PREFIXES)


def _order(value) -> tuple:
    """A sort key for field values of mixed types (None first, numbers numerically)."""
    if value is None or value is _ABSENT:
        return (0, 0, "")
    if isinstance(value, bool | int | float):
        return (1, float(value), "")
    if isinstance(value, str):
        return (2, 0, value)
    return (3, 0, repr(value))


def differing(runs: Sequence[dict]) -> list[str]:
    """The grouping fields (sorted) whose values are not the same in all runs."""
    names = sorted(set().union(*(_fields(r) for r in runs)))
    return [n for n in names if len({_fields(r).get(n, _ABSENT) for r in runs}) > 1]


def families(
    runs: Sequence[dict], within: Sequence[str] = ()
) -> tuple[list[str], list[tuple[dict, list[dict]]]]:
    """(the fields that differ between families, [(their values, the family's runs)]), sorted.

    Fields in `within` (besides the intervention's) tell settings of one family apart instead,
    as the learning-rate scale does in Table 3."""
    names = [n for n in differing(runs) if _in_family_key(n) and n not in within]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        groups[tuple(_fields(r).get(n, _ABSENT) for n in names)].append(r)
    ordered = sorted(groups.items(), key=lambda kv: [_order(v) for v in kv[0]])
    return names, [(dict(zip(names, key, strict=True)), rs) for key, rs in ordered]


def is_standard(r: dict) -> bool:
    """No intervention: k = None, no adaptive unfreezing, no LR switch, not head-only."""
    return (
        r["k"] is None
        and r.get("adaptive") is None
        and r.get("lr_switch") is None
        and not r.get("head_only", False)
    )


def _fmt(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(_fmt(v) for v in value)
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
        d_tau = d.get("stabilization.tau", d.get("unfreeze.adaptive_tau"))
        d_eps = d.get("stabilization.eps", d.get("unfreeze.adaptive_eps"))
        if tau is not None and tau != d_tau:
            extra += f", τ={tau}"
        if eps is not None and eps != d_eps:
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


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1); the std of a single value is NaN (shown as no "± ...", not
    as a misleading ± 0.00)."""
    a = np.asarray(values, float)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else math.nan


def paired_difference_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> str:
    """Mean of a - b over paired seeds with its `level` Student-t confidence interval, as text
    ("+3.10 [+1.02, +5.18]"); without two pairs the interval is "n/a"."""
    from scipy import stats

    d = np.asarray(a, float) - np.asarray(b, float)
    if d.size < 2:
        return f"{d.mean():+.2f} [n/a]" if d.size else "n/a"
    half = stats.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    return f"{d.mean():+.2f} [{d.mean() - half:+.2f}, {d.mean() + half:+.2f}]"


def _paired_ood_ci(setting: dict, base: dict | None) -> str:
    """ΔOOD against the baseline over the seeds both have, with its 95% CI."""
    if base is None or setting is base:
        return "-"
    mine = {r["seed"]: r["ood"] for r in setting["runs"]}
    theirs = {r["seed"]: r["ood"] for r in base["runs"]}
    seeds = sorted(set(mine) & set(theirs), key=_order)
    return paired_difference_ci([mine[s] for s in seeds], [theirs[s] for s in seeds])


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


def _settings(family_runs: Sequence[dict]) -> list[dict]:
    """The settings of one family, sorted: {label, runs, id, id_std, ood, ood_std, n, ...}."""
    ood_set(family_runs)
    names = differing(family_runs)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in family_runs:
        groups[tuple(_fields(r).get(n, _ABSENT) for n in names)].append(r)
    settings = []
    for key, rs in groups.items():
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
                "runs": sorted(rs, key=lambda r: _order(r["seed"])),
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
                s["label"] += " [" + ", ".join(f"{n}={_fmt(s['key'][n])}" for n in diff) + "]"
    return settings


def _family_columns(runs: Sequence[dict], names: list[str], values: dict) -> dict:
    """dataset, model, lr, and one column per other field that differs between families."""
    r = runs[0]
    cols = {"dataset": r["dataset"], "model": r["model"], "lr": f"{r['lr_scale']:g}*lr_d"}
    for n in names:
        if n not in SHOWN_ELSEWHERE:
            cols[n] = _fmt(None if values[n] is _ABSENT else values[n])
    return cols


def _ood_set_column(all_runs: Sequence[dict], family_runs: Sequence[dict]) -> dict:
    """An 'OOD set' column when any results.json names its OOD set ('-' where none does)."""
    if not any(r.get("ood_set") for r in all_runs):
        return {}
    return {"OOD set": ood_set(family_runs) or "-"}


def _is_gu(r: dict) -> bool:
    """Plain gradual unfreezing: a k and no other intervention."""
    return r["k"] is not None and is_standard({**r, "k": None})


def _family_table(runs: list[dict], label_column: str, base_label: str, lr_rows: bool = False):
    """Rows of Tables 1 and 3: per setting family, each setting against the family's baseline.

    With `lr_rows` (Table 3) the learning-rate scale is part of the schedule, not of the
    family: constant training at each scale is a row ("constant 0.1·lr_d"), the baseline is
    constant lr_d, and only constant and LR-switch settings are shown."""
    rows = []
    names, fams = families(runs, within=("optimizer.lr_scale",) if lr_rows else ())
    for values, fam in fams:
        settings = _settings(fam)
        base = next((s for s in settings if s["standard"] and _at_lr_d(s, lr_rows)), None)
        if lr_rows:
            settings = [
                s for s in settings if s["standard"] or s["first"].get("lr_switch") is not None
            ]
            if all(s["standard"] for s in settings):
                continue
        for s in settings:
            label = base_label if s["standard"] else s["label"]
            scale = s["first"]["lr_scale"]
            if lr_rows and (s["standard"] or scale != 1.0):
                label += " " * s["standard"] + " at " * (not s["standard"]) + _lr_text(scale)
            columns = _family_columns(fam, names, values)
            if lr_rows:
                columns.pop("lr")
            rows.append(
                {
                    **columns,
                    **_ood_set_column(runs, fam),
                    label_column: label,
                    "ID": s["id"],
                    "ID std": s["id_std"],
                    "OOD": s["ood"],
                    "OOD std": s["ood_std"],
                    "ΔID": s["id"] - base["id"] if base else math.nan,
                    "ΔOOD": s["ood"] - base["ood"] if base else math.nan,
                    "ΔOOD paired [95% CI]": _paired_ood_ci(s, base),
                    "n": s["n"],
                }
            )
    return rows


def _lr_text(scale: float) -> str:
    return "lr_d" if scale == 1.0 else f"{scale:g}·lr_d"


def _at_lr_d(setting: dict, lr_rows: bool) -> bool:
    return not lr_rows or setting["first"]["lr_scale"] == 1.0


def table1(runs: list[dict]) -> list[dict]:
    """Table 1: per setting family, standard training and every other setting (GU at each k,
    sorted numerically, then adaptive unfreezing and LR switches, each a row of its own), mean ±
    std over seeds, n seeds, Δ against the family's standard row (n/a without one), and ΔOOD
    paired by seed with its 95% Student-t interval (`paired_difference_ci`)."""
    return _family_table(runs, "training", "standard")


def table3(runs: list[dict]) -> list[dict]:
    """Table 3 (§7.1): per setting family with LR-switch runs, constant training at each
    learning rate present (lr_d, 0.1·lr_d) and each LR switch (direction @ step, at its scale,
    with GU k if combined), mean ± std, n seeds, Δ and paired ΔOOD vs constant lr_d."""
    rows = _family_table(runs, "schedule", "constant", lr_rows=True)
    if not rows:
        raise SystemExit("Table 3 needs runs with an LR switch (optimizer.lr_switch) in the sweep")
    return rows


# --------------------------------------------------------------------------------------------
# Writing tables


def _cell(row: dict, col: str) -> str:
    """A table cell as shown: 'X' with its 'X std' as 'mean ± std', Δ columns signed, NaN as
    'n/a' (e.g. no baseline), None as '-' (not applicable)."""
    v = row.get(col)
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        text = f"{v:+.2f}" if col.startswith("Δ") else f"{v:.2f}"
        std = row.get(col + " std")
        if isinstance(std, float) and not math.isnan(std):
            text += f" ± {std:.2f}"
        return text
    return str(v)


def display_frame(rows: list[dict]):
    """The rows as a pandas DataFrame of display strings (`_cell`), 'X std' folded into 'X'.
    The columns are those of every row, in first-seen order (rows of several studies may
    differ: an 'OOD set' only some name)."""
    import pandas as pd

    cols = [c for c in dict.fromkeys(c for r in rows for c in r) if not c.endswith(" std")]
    return pd.DataFrame([[_cell(r, c) for c in cols] for r in rows], columns=cols)


def to_markdown(rows: list[dict]) -> str:
    """A Markdown (pipe) table of `display_frame`."""
    if not rows:
        return "(no rows)"
    return display_frame(rows).to_markdown(index=False, tablefmt="pipe", disable_numparse=True)


# Unicode in our headers and cells, as LaTeX math (after pandas' LaTeX escaping).
_LATEX_SYMBOLS = {
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "τ": r"$\tau$",
    "λ": r"$\lambda$",
    "·": r"$\cdot$",
    "ε": r"$\varepsilon$",
}


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "\\": r"\textbackslash{}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _latex_text(text: str) -> str:
    """Plain text (a caption) as LaTeX."""
    return _symbols("".join(_LATEX_SPECIAL.get(c, c) for c in text))


def _symbols(tex: str) -> str:
    for char, math_ in _LATEX_SYMBOLS.items():
        tex = tex.replace(char, math_)
    return tex


def to_latex(rows: list[dict], caption: str, label: str) -> str:
    """A LaTeX table (booktabs rules) of `display_frame`, with its caption and label."""
    styler = display_frame(rows).style.hide(axis="index")
    styler = styler.format(escape="latex").format_index(escape="latex", axis=1)
    tex = styler.to_latex(caption="@CAPTION@", label=f"tab:{label}", hrules=True, position="t")
    return _symbols(tex).replace("@CAPTION@", _latex_text(caption))


def write_table(rows: list[dict], out_dir: str, name: str, caption: str | None = None) -> str:
    """Writes `name`.md (the table, then its caption), `name`.csv (the raw values: means and
    stds in columns of their own) and `name`.tex to out_dir; returns the Markdown."""
    import pandas as pd

    if not rows:
        raise ValueError(f"table {name} has no rows")
    caption = caption or CAPTIONS.get(name, name)
    os.makedirs(out_dir, exist_ok=True)
    columns = list(dict.fromkeys(c for r in rows for c in r))
    pd.DataFrame(rows, columns=columns).to_csv(os.path.join(out_dir, name + ".csv"), index=False)
    markdown = to_markdown(rows) + f"\n\n{caption}"
    with open(os.path.join(out_dir, name + ".md"), "w") as f:
        f.write(markdown + "\n")
    with open(os.path.join(out_dir, name + ".tex"), "w") as f:
        f.write(to_latex(rows, caption, name))
    return markdown


_SEEDS_NOTE = "ID and OOD accuracy (%): mean ± sample std (ddof 1) over the n seeds of the row."
_PAIRED_NOTE = (
    "ΔOOD paired: the mean over the seeds both rows ran of the per-seed OOD difference from the "
    "{base} row, with its 95% Student-t interval (n-1 degrees of freedom; n/a with one pair)."
)
_WR_NOTE = (
    "WR: per setting, the share of the random k whose seed-mean OOD accuracy the metric's k "
    "beats, a tie counting one half (the paper's Table 2 may pool settings); its 95% interval "
    "is a paired bootstrap over seeds (2000 resamples of the seeds with replacement, the same "
    "resample for every run; percentile interval; n/a with one seed). The random k are held "
    "fixed: the interval is the spread over seeds, not over which k were drawn."
)
CAPTIONS = {
    "table1": "Table 1: standard training vs gradual unfreezing (GU k: unfreezing interval k) "
    "and other early-period interventions, per setting. "
    + _SEEDS_NOTE
    + " ΔID, ΔOOD: difference of seed means from the setting's standard row. "
    + _PAIRED_NOTE.format(base="standard"),
    "table2": "Table 2: k picked by Algorithm 2 from each metric vs random k. "
    + _SEEDS_NOTE
    + " The random-k row: mean ± std over the random k of each k's seed mean. "
    + _WR_NOTE
    + " "
    + _PAIRED_NOTE.format(base="standard"),
    "table3": "Table 3: learning-rate switches in the early period (lr_l2h @ k: 0.1·lr from "
    "step 0, lr from step k; lr_h2l @ k: the reverse) against constant learning rates. Each "
    "switch step run is a row (the paper reports one row per direction, its k from a random "
    "search). "
    + _SEEDS_NOTE
    + " ΔID, ΔOOD: difference of seed means from the constant lr_d row. "
    + _PAIRED_NOTE.format(base="constant lr_d"),
    "table3_autok": "Table 3, §7.1's last paragraph: the LR switch step k picked by Algorithm 2 "
    "from each metric (on runs that keep the first learning rate throughout) vs random switch "
    "steps. "
    + _SEEDS_NOTE
    + " "
    + _WR_NOTE
    + " "
    + _PAIRED_NOTE.format(base="standard (constant lr_d)"),
    "table6": "Table 6: the k Algorithm 2 picked per metric on the seed mean of the signal runs' "
    "curves (the k each seed's own curve gives, for information).",
    "table7": "Table 7: cross-lingual transfer of standard training and GU with each metric's "
    "k, per training task. En: the English test set; X-ling: the mean over the other "
    "languages of a set (XQuAD: 10, MLQA: 6, XNLI: 14). F1 and EM (%) with SQuAD v1.1's answer "
    "normalisation for XQuAD and MLQA's per-language one for MLQA; accuracy (%) for XNLI. Each "
    "cell: mean ± sample std (ddof 1) over the seeds (n). WR: per task, the share of its random "
    "k whose seed-mean OOD score (XNLI: cross-lingual accuracy; SQuAD: the mean F1 over the "
    "XQuAD and MLQA languages other than English) the metric's k beats, a tie counting one "
    "half; 'WR %' is their mean over the tasks where the metric picked a k, as the paper "
    "averages per training data set. MLQA's English is shown too; the paper reports only its "
    "cross-lingual mean.",
}
CAPTIONS["table4"] = (
    "Table 4: Table 7's rows of standard training and of GU with tr(F)'s k. "
    + CAPTIONS["table7"].split(" per training task. ", 1)[1]
)
# An auto-k summary of the QA task compares F1 where the image tasks compare accuracy.
QA_NOTE = (
    " For the QA task (SQuAD) ID and OOD are F1 (%), not accuracy: XQuAD's English, and the "
    "mean over the non-English XQuAD and MLQA sets."
)


def autok_caption(name: str, summary: dict) -> str:
    """`CAPTIONS[name]` for an auto-k table of `summary`, saying when its scores are F1."""
    qa = summary.get("setting", {}).get("task") == "qa"
    return CAPTIONS[name] + (QA_NOTE if qa else "")


# --------------------------------------------------------------------------------------------
# Figures 1 and 2


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, stem: str) -> list[str]:
    os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        fig.savefig(f"{stem}.{ext}", dpi=150)
        paths.append(f"{stem}.{ext}")
    return paths


def _suptitle(fig, text: str) -> None:
    """The figure's title, wrapped to its width (an OOD set's name can be long)."""
    import textwrap

    fig.suptitle(textwrap.fill(text, width=int(fig.get_figwidth() * 13)), fontsize=9)


def _stem(prefix: str, names: list[str], values: dict, n_families: int) -> str:
    """'fig1' for a single family, else 'fig1_<field>=<value>_...' over the differing fields."""
    if n_families == 1:
        return prefix
    parts = [f"{n}={_fmt(None if values[n] is _ABSENT else values[n])}" for n in names]
    return prefix + "_" + re.sub(r"[^A-Za-z0-9._=,+-]+", "-", "_".join(parts)).strip("-")


def _title(runs: Sequence[dict], names: list[str], values: dict) -> str:
    r = runs[0]
    parts = [r["dataset"], r["model"], f"{r['lr_scale']:g}*lr_d"]
    parts += [f"{n}={_fmt(values[n])}" for n in names if n not in SHOWN_ELSEWHERE]
    if ood_set(runs):
        parts.append(f"OOD: {ood_set(runs)}")
    return " / ".join(parts)


def figure1(runs: list[dict], out_dir: str) -> list[str]:
    """ΔID and ΔOOD (GU minus standard, mean ± std over seeds of the GU runs) vs k on a log axis,
    one figure per setting family (files named by the fields that differ between families)."""
    plt = _pyplot()
    names, fams = families(runs)
    paths = []
    for values, fam in fams:
        settings = _settings(fam)
        base = next((s for s in settings if s["standard"]), None)
        gu = [s for s in settings if _is_gu(s["first"])]
        if base is None or not gu:
            continue
        x = np.array([s["first"]["k"] for s in gu], float)  # already in numeric order
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for col, color in (("id", "tab:blue"), ("ood", "tab:orange")):
            y = np.array([s[col] - base[col] for s in gu])
            err = np.array([s[col + "_std"] for s in gu])
            ax.plot(x, y, "o-", color=color, label=f"Δ{col.upper()}")
            ax.fill_between(x, y - err, y + err, color=color, alpha=0.2)
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("unfreezing interval k (steps)")
        ax.set_ylabel("accuracy change vs standard (points)")
        ax.set_title(_title(fam, names, values), fontsize=8)
        ax.legend()
        fig.tight_layout()
        paths += _save(fig, os.path.join(out_dir, _stem("fig1", names, values, len(fams))))
        plt.close(fig)
    if not paths:
        raise SystemExit("Figure 1 needs standard runs (k=none) and GU runs in one setting family")
    return paths


def recorded_curves(workdir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{metric: (steps, values)} from a run's `record` lines."""
    from earlyjax.metric_log import METRICS_FILE, read_records

    recs = [r for r in read_records(os.path.join(workdir, METRICS_FILE)) if r["kind"] == "record"]
    names = [m for m in METRIC_TITLES if recs and m in recs[0]]
    return {
        m: (np.array([r["step"] for r in recs]), np.array([float(r[m]) for r in recs]))
        for m in names
    }


def normalize_0_1000(curves: list[np.ndarray]) -> list[np.ndarray]:
    """The paper's display normalisation: min-max over all curves of a panel, to 0..1000.

    Shifted by 1 before a log axis (so the minimum is drawn at 1, not at log 0).
    """
    scale = _display_scale(curves, normalise=True)
    return [scale(c) for c in curves]


DYNAMICS_METRICS = ("fisher", "avg_sharpness", "worst_sharpness")


def figure2(sweep_dir: str, out_dir: str, stem: str = "fig2") -> list[str]:
    """Figure 2 (and Figure 10 on 0.1·lr_d runs): the early-period dynamics of tr(F), S_avg
    and S_worst of every run under sweep_dir that recorded them (`dynamics_figures`)."""
    return dynamics_figures(load_runs(sweep_dir), out_dir, stem)


def dynamics_figures(
    runs: Sequence[dict],
    out_dir: str,
    stem: str,
    metrics: Sequence[str] = DYNAMICS_METRICS,
    *,
    normalise: bool = True,
    mark_switch: bool = False,
    absolute: Sequence[str] = (),
) -> list[str]:
    """Recorded metrics vs step, as Figures 2, 3, 7, 8 and 10: one figure per setting family
    (`<stem>.png` when there is one, else named by the fields that differ), one panel per
    metric, one curve per setting (standard, each k, adaptive, LR switch): the mean over its
    seeds with a ±1 sample-std band (n in the legend), at the steps all its seeds recorded.

    With `normalise` (the paper's display), every seed's curve of every setting in a panel is
    min-max normalised together to 0..1000 (then shifted by 1) on a log y axis; else raw
    values on a linear axis (Figure 7's feature rank). `mark_switch` draws each LR switch's
    step as a dotted line in its curve's colour (Figures 3 and 8). Metrics in `absolute` are
    drawn as |value| (titled so), as Figures 4 and 9 draw S_worst, which the paper found
    negative for XLM-R."""
    plt = _pyplot()
    curves = {r["run"]: recorded_curves(r["path"]) for r in runs}
    for run_curves in curves.values():
        for metric in set(absolute) & set(run_curves):
            steps, values = run_curves[metric]
            run_curves[metric] = (steps, np.abs(values))
    runs = [r for r in runs if any(m in curves[r["run"]] for m in metrics)]
    if not runs:
        raise SystemExit(f"no run recorded {', '.join(metrics)} (--config.record.metrics)")
    names, fams = families(runs)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    paths = []
    for values, fam in fams:
        settings = _settings(fam)
        shown = [m for m in metrics if any(m in curves[r["run"]] for r in fam)]
        fig, axes = plt.subplots(1, len(shown), figsize=(4.3 * len(shown), 3.4), squeeze=False)
        for ax, metric in zip(axes[0], shown, strict=True):
            per_setting = [
                (i, s, [curves[r["run"]][metric] for r in s["runs"] if metric in curves[r["run"]]])
                for i, s in enumerate(settings)
            ]
            per_setting = [(i, s, c) for i, s, c in per_setting if c]
            display = _display_scale([v for *_, c in per_setting for _, v in c], normalise)
            for i, s, seed_curves in per_setting:
                color = palette[i % len(palette)]
                steps, mean, std = seed_band([(st, display(v)) for st, v in seed_curves])
                ax.plot(steps, mean, color=color, label=f"{s['label']} (n={len(seed_curves)})")
                if len(seed_curves) > 1:
                    ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2, lw=0)
                if mark_switch and s["first"].get("lr_switch") is not None:
                    ax.axvline(s["first"]["lr_switch_step"], color=color, ls=":", lw=1)
            if normalise:
                ax.set_yscale("log", nonpositive="clip")
            ax.set_xlabel("step")
            title = f"|{METRIC_TITLES[metric]}|" if metric in absolute else METRIC_TITLES[metric]
            ax.set_title(title + (" (normalised 0-1000)" if normalise else ""), fontsize=9)
            ax.legend(fontsize=7)
        _suptitle(fig, _title(fam, names, values) + "; seed mean ± std")
        fig.tight_layout()
        paths += _save(fig, os.path.join(out_dir, _stem(stem, names, values, len(fams))))
        plt.close(fig)
    return paths


def _display_scale(values: list[np.ndarray], normalise: bool):
    """The map from recorded values to the plotted ones (`normalize_0_1000` over `values`)."""
    if not normalise:
        return lambda v: v
    lo = min(v.min() for v in values)
    span = (max(v.max() for v in values) - lo) or 1.0
    return lambda v: 1.0 + 1000.0 * (v - lo) / span


def seed_band(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """(steps, mean, sample std) over seeds at the steps every seed recorded (std 0 for one)."""
    steps = curves[0][0]
    for s, _ in curves[1:]:
        steps = np.intersect1d(steps, s)
    if steps.size == 0:
        raise ValueError("the seeds' runs share no recorded step")
    values = np.array([v[np.searchsorted(s, steps)] for s, v in curves])
    std = values.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(steps.size)
    return steps, values.mean(axis=0), std


# --------------------------------------------------------------------------------------------
# Auto-k: Tables 2 and 6, Figure 6 (from autok.json, schema version 2)

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


def winning_rate(summary: dict, metric: str) -> dict:
    """The winning rate (Table 2, §6.4) of the k `metric` picked against the random k.

    Compares seed means: the metric's k run's OOD accuracy averaged over the seeds against each
    random k run's OOD accuracy averaged over the same seeds. A win is a strictly higher seed
    mean; a tie (equal seed means, e.g. when a random k equals the metric's k, so the very same
    runs are compared) counts one half. Returns {wins, ties, losses, n (random k), percent}
    with percent = 100 * (wins + ties / 2) / n. Errors (never NaN): a metric without a k, no
    random k, or a run missing a seed (named).
    """
    run = metric_run(summary, metric)
    if run is None:
        reason = summary["picked"][metric].get("reason") or "no reason given"
        raise ValueError(f"{metric} picked no k ({reason}): it has no winning rate")
    if not summary["random_k"]:
        raise ValueError("autok.json has no random k to compare against")
    ours = seed_mean(summary, run, "ood")
    wins = ties = losses = 0
    for k in summary["random_k"]:
        theirs = seed_mean(summary, run_for_k(summary, k), "ood")
        if math.isclose(ours, theirs, rel_tol=1e-12, abs_tol=1e-12):
            ties += 1
        elif ours > theirs:
            wins += 1
        else:
            losses += 1
    n = wins + ties + losses
    return {
        "wins": wins,
        "ties": ties,
        "losses": losses,
        "n": n,
        "percent": 100.0 * (wins + 0.5 * ties) / n,
    }


def winning_rate_bootstrap(summary: dict, metric: str, resamples: int = 2000) -> np.ndarray:
    """`resamples` winning rates of `metric` (percent) under a paired bootstrap over seeds.

    Each resample draws the seeds with replacement (the same draw for every run, so the runs
    stay paired by seed), recomputes every run's seed mean and the winning rate as
    `winning_rate` does (ties count one half). The random k are held fixed: the spread is the
    seeds' only, not that of which k were drawn. Fixed random stream: reproducible."""
    names = [metric_run(summary, metric)] + [run_for_k(summary, k) for k in summary["random_k"]]
    ood = np.array([seed_values(summary, name, "ood") for name in names])  # runs x seeds
    draws = np.random.default_rng(0xB007).integers(0, ood.shape[1], (resamples, ood.shape[1]))
    means = ood[:, draws].mean(axis=2)  # runs x resamples
    ours, theirs = means[0], means[1:]
    tie = np.isclose(ours, theirs, rtol=1e-12, atol=1e-12)
    wins = (ours > theirs) & ~tie
    return 100.0 * (wins + 0.5 * tie).mean(axis=0)


def winning_rate_interval(
    summary: dict, metric: str, level: float = 0.95
) -> tuple[float, float] | None:
    """The `level` percentile interval of `winning_rate_bootstrap`; None with fewer than two
    seeds (one seed has no spread to resample)."""
    if len(summary["seeds"]) < 2:
        return None
    rates = winning_rate_bootstrap(summary, metric)
    low, high = np.percentile(rates, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def intervention_label(summary: dict) -> str:
    """'GU' for gradual unfreezing (and summaries that predate the field), else e.g. 'lr_l2h'."""
    return summary.get("setting", {}).get("label", "GU")


def _setting_columns(summary: dict) -> dict:
    s = summary.get("setting", {})
    cols = {"dataset": s.get("dataset", "-"), "model": s.get("model", "-")}
    if s.get("ood_set"):
        cols["OOD set"] = s["ood_set"]
    return cols


def _metrics(summary: dict) -> list[str]:
    return list(summary["picked"])


def table2(summary: dict) -> list[dict]:
    """Table 2 (§6.4) from an auto-k summary (autok.json, version 2).

    Rows: "standard" (ID and OOD mean ± std over the seeds, n = seeds); "GU, random k" (the k
    column lists the random k; ID/OOD = the mean over the random k of each k's seed mean ± the
    std over the random k; n = the number of random k, each the mean over all the seeds, as the
    `n of` column says); and per metric "GU, k from tr(F)" / S_avg / S_worst (the k picked, ID
    and OOD mean ± std over seeds, the winning rate (`winning_rate`: seed means compared, ties
    count one half) with its 95% paired-bootstrap interval (`winning_rate_interval`) and
    wins/ties/losses, n = seeds, and its OOD difference from standard training paired by seed
    with a 95% Student-t interval). Rows are named by the intervention (`intervention_label`:
    "GU", or "lr_l2h" for an LR-switch summary, Table 3's extra rows). A metric that picked no
    k has a row with no numbers and its reason in the k column.
    """
    seeds = summary["seeds"]
    n_seeds = len(seeds)
    setting = _setting_columns(summary)
    label = intervention_label(summary)

    def row(method, k, ids, oods, wr, wtl, n, n_of, delta="-", wr_ci="-"):
        id_m, id_s = mean_std(ids) if ids else (None, None)
        ood_m, ood_s = mean_std(oods) if oods else (None, None)
        return {
            **setting,
            "method": method,
            "k": k,
            "ID": id_m,
            "ID std": id_s,
            "OOD": ood_m,
            "OOD std": ood_s,
            "ΔOOD vs standard [95% CI]": delta,
            "WR (OOD) %": wr,
            "WR 95% CI": wr_ci,
            "W/T/L": wtl,
            "n": n,
            "n of": n_of,
        }

    std_run = "standard" if "standard" in summary["runs"] else None
    std_run = std_run or next((n for n, r in summary["runs"].items() if r.get("k") is None), None)
    if std_run is None:
        raise ValueError("autok.json has no standard run (k = null)")
    rows = [
        row(
            "standard",
            "-",
            seed_values(summary, std_run, "id"),
            seed_values(summary, std_run, "ood"),
            None,
            None,
            n_seeds,
            "seeds",
        )
    ]
    random_k = sorted(summary["random_k"])
    if random_k:
        runs = [run_for_k(summary, k) for k in random_k]
        rows.append(
            row(
                f"{label}, random k",
                ", ".join(str(k) for k in random_k),
                [seed_mean(summary, r, "id") for r in runs],
                [seed_mean(summary, r, "ood") for r in runs],
                None,
                None,
                len(random_k),
                f"random k, each the mean over {n_seeds} seeds",
            )
        )
    for metric in _metrics(summary):
        title = f"{label}, k from {METRIC_TITLES.get(metric, metric)}"
        run = metric_run(summary, metric)
        if run is None:
            reason = summary["picked"][metric].get("reason") or "no k"
            rows.append(row(title, f"none ({reason})", [], [], None, None, 0, "seeds"))
            continue
        wr = winning_rate(summary, metric) if random_k else None
        interval = winning_rate_interval(summary, metric) if wr else None
        wr_ci = "[{:.1f}, {:.1f}]".format(*interval) if interval else "n/a" if wr else "-"
        rows.append(
            row(
                title,
                str(summary["picked"][metric]["k"]),
                seed_values(summary, run, "id"),
                seed_values(summary, run, "ood"),
                wr["percent"] if wr else None,
                f"{wr['wins']}/{wr['ties']}/{wr['losses']}" if wr else None,
                n_seeds,
                "seeds",
                paired_difference_ci(
                    seed_values(summary, run, "ood"), seed_values(summary, std_run, "ood")
                ),
                wr_ci,
            )
        )
    return rows


def table6(summary: dict) -> list[dict]:
    """Table 6 (App. D): the k Algorithm 2 picked per metric (on the seed-mean of the head-only
    runs' curves, as autok.json's `k_rule` says), the k it picks on each seed's own curve (for
    information), and the reason when it picked none."""
    seeds = [str(s) for s in summary["seeds"]]
    rows = []
    for metric in _metrics(summary):
        p = summary["picked"][metric]
        per_seed = p.get("per_seed", {})
        ks = [per_seed.get(s, {}).get("k") for s in seeds]
        rows.append(
            {
                **_setting_columns(summary),
                "metric": METRIC_TITLES.get(metric, metric),
                "k": "none" if p["k"] is None else str(p["k"]),
                "k per seed": ", ".join(
                    f"{s}: {'none' if k is None else k}" for s, k in zip(seeds, ks, strict=True)
                ),
                "reason": (p.get("reason") or "-") if p["k"] is None else "-",
            }
        )
    return rows


# --------------------------------------------------------------------------------------------
# The transformer half: Tables 4 and 7, Figures 4 and 9 (auto-k folders of the nli / qa tasks)

SCORE_SETS = {"xquad": "XQuAD", "mlqa": "MLQA"}


def language_scores(results: dict) -> dict[str, float]:
    """One transformer run's Table 7 cells: per evaluation set, each score on English and its
    cross-lingual mean over the other languages. NLI: "<set> Acc En" (the ID accuracy) and
    "<set> Acc X-ling" (the OOD mean); QA: "<set> F1 En", "<set> F1 X-ling", and EM alike, per
    set of results.json's `scores` ("xquad/de" is XQuAD's German)."""
    if results.get("score") != "f1":
        name = "XNLI" if results["dataset"] == "mnli" else results["dataset"]
        return {f"{name} Acc En": results["id_accuracy"],
                f"{name} Acc X-ling": results["ood_accuracy"]}  # fmt: skip
    sets: dict[str, dict[str, dict]] = defaultdict(dict)
    for split, scores in results["scores"].items():
        prefix, _, lang = split.rpartition("/")
        sets[SCORE_SETS.get(prefix, prefix or results["dataset"])][lang] = scores
    cells = {}
    for name, by_lang in sets.items():
        for stat, label in (("f1", "F1"), ("exact_match", "EM")):
            if "en" in by_lang:
                cells[f"{name} {label} En"] = by_lang["en"][stat]
            others = [scores[stat] for lang, scores in by_lang.items() if lang != "en"]
            if others:
                cells[f"{name} {label} X-ling"] = float(np.mean(others))
    return cells


def _autok_run_results(autok_dir: str, seed, run: str) -> dict:
    path = os.path.join(autok_dir, f"seed={seed}", run, RESULTS_FILE)
    if not os.path.exists(path):
        raise ValueError(f"{path} not found: finish the auto-k pipeline in {autok_dir} first")
    with open(path) as f:
        return json.load(f)


def table7(autok_dirs: Sequence[str], metrics: Sequence[str] | None = None) -> list[dict]:
    """Table 7 (Table 4 with `metrics=("fisher",)`): standard training and GU with each
    metric's k, one auto-k folder per training task (SQuAD: XQuAD and MLQA; MNLI: XNLI),
    side by side: every score on English and cross-lingually (`language_scores`), mean ± std
    over the seeds, the k each task's metric picked, each task's winning rate and their mean
    (the paper's WR column: "averaged ... per training dataset")."""
    summaries = [(d, read_autok(d)) for d in autok_dirs]
    tasks = [s["setting"].get("dataset", d) for d, s in summaries]
    if len(set(tasks)) < len(tasks):
        raise ValueError(
            f"table7 takes one auto-k folder per training data set; {list(autok_dirs)} train on "
            f"{tasks}"
        )
    picked = {m for _, s in summaries for m in s["picked"]}
    chosen = [m for m in DYNAMICS_METRICS if m in picked and (metrics is None or m in metrics)]
    rows = []
    for method in ["standard", *chosen]:
        label = intervention_label(summaries[0][1])
        title = "standard" if method == "standard" else f"{label}, k from {METRIC_TITLES[method]}"
        row, rates = {"method": title}, []
        for autok_dir, summary in summaries:
            task = summary["setting"].get("dataset", autok_dir)
            run = "standard"
            if method != "standard":
                p = summary["picked"].get(method, {"k": None})
                row[f"k ({task})"] = "-" if p["k"] is None else str(p["k"])
                run = metric_run(summary, method) if p["k"] is not None else None
            if run is None:
                continue
            per_seed = [
                language_scores(_autok_run_results(autok_dir, seed, run))
                for seed in summary["seeds"]
            ]
            for col in per_seed[0]:
                row[col], row[col + " std"] = mean_std([cells[col] for cells in per_seed])
            row[f"n ({task})"] = len(per_seed)
            if method != "standard" and summary["random_k"]:
                rates.append(winning_rate(summary, method)["percent"])
                row[f"WR ({task}) %"] = rates[-1]
        row["WR %"] = float(np.mean(rates)) if rates else None
        rows.append(row)
    columns = list(dict.fromkeys(c for r in rows for c in r if c != "WR %")) + ["WR %"]
    return [{c: r.get(c) for c in columns} for r in rows]


def figure4(autok_dir: str, out_dir: str, stem: str = "fig4") -> list[str]:
    """Figure 4 (MNLI; Figure 9 for SQuAD): tr(F), S_avg and |S_worst| of the auto-k folder's
    recorded runs (standard and each metric's k), normalised to 0..1000 on a log axis."""
    return dynamics_figures(load_runs(autok_dir), out_dir, stem, absolute=("worst_sharpness",))


def figure6(autok_dir: str, out_dir: str, stem: str = "fig6") -> list[str]:
    """Figure 6 (App. D): one figure, one panel per metric: each seed's head-only signal curve
    (thin), their seed mean (thick: the curve Algorithm 2 ran on), normalised together to
    0..1000 for display on a log y axis as the paper does, and the picked k as a vertical line
    (each seed's own k dotted, for information)."""
    plt = _pyplot()
    summary = read_autok(autok_dir)
    seeds = summary["seeds"]
    signals = {}
    for seed in seeds:
        path = os.path.join(autok_dir, f"seed={seed}", "signal")
        signals[seed] = recorded_curves(path)
        if not signals[seed]:
            raise SystemExit(f"{path} has no recorded metrics: rerun experiments.autok")
    metrics = [m for m in _metrics(summary) if all(m in signals[s] for s in seeds)]
    if not metrics:
        raise SystemExit(f"no signal run under {autok_dir} recorded {_metrics(summary)}")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes[0], metrics, strict=True):
        curves = [signals[s][metric] for s in seeds]
        mean_steps, mean_values, _ = seed_band(curves)
        ys = normalize_0_1000([v for _, v in curves] + [mean_values])
        picked = summary["picked"][metric]
        per_seed = picked.get("per_seed", {})
        for i, (seed, (steps, _), y) in enumerate(zip(seeds, curves, ys[:-1], strict=True)):
            color = colors[i % len(colors)]
            ax.plot(steps, y, lw=0.8, alpha=0.6, color=color, label=f"seed {seed}")
            k = per_seed.get(str(seed), {}).get("k")
            if k is not None:
                ax.axvline(k, color=color, lw=0.8, ls=":")
        ax.plot(mean_steps, ys[-1], lw=2.2, color="black", label="seed mean")
        if picked["k"] is not None:
            ax.axvline(
                picked["k"],
                color="tab:red",
                ls="--",
                lw=1.5,
                label=f"k = {picked['k']} (seed mean)",
            )
        else:
            ax.text(
                0.5,
                0.5,
                f"no k: {picked.get('reason', '')}",
                transform=ax.transAxes,
                ha="center",
                fontsize=7,
                wrap=True,
            )
        ax.set_yscale("log")
        ax.set_xlabel("step (head-only run)")
        ax.set_title(f"{METRIC_TITLES.get(metric, metric)} (normalised 0-1000)", fontsize=9)
        ax.legend(fontsize=7)
    s = summary.get("setting", {})
    stab = summary.get("stabilization", {})
    title = " / ".join(str(s[k]) for k in ("dataset", "model") if k in s)
    if stab:
        title += "; Algorithm 2 " + ", ".join(f"{k}={v}" for k, v in stab.items())
    _suptitle(fig, title)
    fig.tight_layout()
    paths = _save(fig, os.path.join(out_dir, stem))
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------------------------


FINAL_METRIC_LABELS = {
    "hessian": "λ_max of the loss Hessian",
    "avg_sharpness": "S_avg",
    "worst_sharpness": "S_worst",
    "feature_eigenvalue": "feature λ_max (penultimate covariance)",
    "fisher": "tr(F)",
    "feature_rank": "feature rank",
}


def final_solution_correlations(runs: Sequence[dict]) -> dict[str, dict]:
    """Per final-solution metric (results.json's `final_solution`, config `final.metrics`):
    the runs' (value, OOD accuracy, learning rate) and Kendall's τ between value and OOD
    accuracy with its two-sided p-value (`scipy.stats.kendalltau`, τ-b), over every run that
    has both; §6.3 and Figure 5 correlate over a sweep of learning rates."""
    from scipy.stats import kendalltau

    out = {}
    names = sorted({m for r in runs for m in r.get("final_solution", {})})
    for name in names:
        points = [
            (r["final_solution"][name], r["ood"], r["lr"])
            for r in runs
            if name in r.get("final_solution", {}) and not math.isnan(r["ood"])
        ]
        if len(points) < 2:
            continue
        values, ood, lrs = (list(x) for x in zip(*points, strict=True))
        tau, p = kendalltau(values, ood)
        out[name] = {"value": values, "ood": ood, "lr": lrs, "tau": tau, "p": p, "n": len(points)}
    return out


def figure5(runs: list[dict], out_dir: str) -> list[str]:
    """Figure 5 (§6.3, App. C): each final-solution metric against OOD accuracy, one point per
    run, coloured by learning rate, each panel titled with Kendall's τ, its p-value and n. One
    figure per setting family, the learning rate counted inside the family (`fig5.png` for one
    family, else named by the fields that differ)."""
    plt = _pyplot()
    if not final_solution_correlations(runs):
        raise SystemExit(
            "Figure 5 needs finished runs with a final-solution analysis: train with "
            "--config.final.metrics=hessian,avg_sharpness,worst_sharpness,feature_eigenvalue"
        )
    names, fams = families(runs, within=("optimizer.lr_scale", "optimizer.lr"))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    paths = []
    for values, fam in fams:
        correlations = final_solution_correlations(fam)
        if not correlations:
            continue
        n = len(correlations)
        fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
        lrs = sorted({lr for c in correlations.values() for lr in c["lr"]})
        for ax, (name, c) in zip(axes[0], correlations.items(), strict=True):
            for i, lr in enumerate(lrs):
                xs = [v for v, r in zip(c["value"], c["lr"], strict=True) if r == lr]
                ys = [o for o, r in zip(c["ood"], c["lr"], strict=True) if r == lr]
                if xs:
                    ax.scatter(xs, ys, s=18, color=colors[i % len(colors)], label=f"lr {lr:g}")
            ax.set_xlabel(FINAL_METRIC_LABELS.get(name, name))
            ax.set_ylabel("OOD accuracy (%)")
            ax.set_title(f"Kendall τ = {c['tau']:.2f} (p = {c['p']:.2g}, n = {c['n']})", fontsize=9)
            ax.legend(fontsize=7)
        r = fam[0]  # the learning rate varies: the legend gives it, not the title
        title = " / ".join(
            [r["dataset"], r["model"]]
            + [f"{k}={_fmt(values[k])}" for k in names if k not in SHOWN_ELSEWHERE]
        )
        _suptitle(fig, title + (f" / OOD: {ood_set(fam)}" if ood_set(fam) else ""))
        fig.tight_layout()
        paths += _save(fig, os.path.join(out_dir, _stem("fig5", names, values, len(fams))))
        plt.close(fig)
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "what",
        choices=["all", "table1", "table2", "table3", "table4", "table6", "table7", "fig1",
                 "fig2", "fig4", "fig5", "fig6", "fig9"],
    )  # fmt: skip
    p.add_argument(
        "sweep_dir",
        nargs="+",
        help="a sweep folder (table1/3, fig1/2/5), an auto-k folder (table2/6, fig4/6/9), one "
        "auto-k folder per transformer task (table4/7: SQuAD's and MNLI's) or the folder of "
        "`python -m experiments.paper` (all)",
    )
    p.add_argument("--out", help="output folder (default: <first folder>/analysis)")
    args = p.parse_args(argv)
    folders = args.sweep_dir
    if len(folders) > 1 and args.what not in ("table4", "table7"):
        p.error(f"{args.what} takes one folder; only table4 and table7 take several")
    args.sweep_dir = folders[0]
    out = args.out or os.path.join(args.sweep_dir, "analysis")
    paths: Iterable[str] = ()
    if args.what in ("table4", "table7"):
        metrics = ("fisher",) if args.what == "table4" else None
        try:
            print(write_table(table7(folders, metrics), out, args.what))
        except ValueError as e:  # a run the table needs has not finished
            raise SystemExit(f"error: {e}") from None
        print(f"\n(written to {out}/{args.what}.md, .csv and .tex)")
        return
    if args.what == "all":
        from experiments.paper import write_all

        for line in write_all(args.sweep_dir, out):
            print(line)
        print(f"(in {out})")
        return
    if args.what in ("fig4", "fig9"):
        paths = figure4(args.sweep_dir, out, args.what)
    elif args.what == "fig2":
        paths = figure2(args.sweep_dir, out)
    elif args.what == "fig6":
        paths = figure6(args.sweep_dir, out)
    elif args.what == "fig1":
        paths = figure1(load_runs(args.sweep_dir), out)
    elif args.what == "fig5":
        runs = load_runs(args.sweep_dir)
        for name, c in final_solution_correlations(runs).items():
            print(f"{name}: Kendall tau {c['tau']:.3f}, p = {c['p']:.3g}, n = {c['n']}")
        paths = figure5(runs, out)
    else:
        caption = None
        if args.what in ("table2", "table6"):
            summary = read_autok(args.sweep_dir)
            rows = table2(summary) if args.what == "table2" else table6(summary)
            caption = autok_caption(args.what, summary)
        else:
            runs = load_runs(args.sweep_dir)
            rows = table1(runs) if args.what == "table1" else table3(runs)
        print(write_table(rows, out, args.what, caption))
        print(f"\n(written to {out}/{args.what}.md, .csv and .tex)")
        return
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
