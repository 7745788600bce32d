"""Outputs of sweep folders: Tables 1 and 3, Figures 1 and 5."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from earlyjax.config import Field
from experiments.analysis import render
from experiments.analysis.runs import (
    ABSENT,
    SHOWN_ELSEWHERE,
    families,
    fmt_value,
    is_standard,
    load_runs,
    ood_set,
    settings_of,
    sort_key,
)
from experiments.analysis.stats import paired_difference_ci


def _paired_ood_ci(setting: dict, base: dict | None) -> str:
    """ΔOOD against the baseline over the seeds both have, with its 95% CI."""
    if base is None or setting is base:
        return "-"
    mine = {r["seed"]: r["ood"] for r in setting["runs"]}
    theirs = {r["seed"]: r["ood"] for r in base["runs"]}
    seeds = sorted(set(mine) & set(theirs), key=sort_key)
    return paired_difference_ci([mine[s] for s in seeds], [theirs[s] for s in seeds])


def _family_columns(runs: Sequence[dict], names: list[str], values: dict) -> dict:
    """dataset, model, lr, and one column per other field that differs between families."""
    r = runs[0]
    cols = {"dataset": r["dataset"], "model": r["model"], "lr": f"{r['lr_scale']:g}*lr_d"}
    for n in names:
        if n not in SHOWN_ELSEWHERE:
            cols[n] = fmt_value(None if values[n] is ABSENT else values[n])
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
    names, fams = families(runs, within=(Field.LR_SCALE,) if lr_rows else ())
    for values, fam in fams:
        settings = settings_of(fam)
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


def figure1(runs: list[dict], out_dir: str) -> list[str]:
    """ΔID and ΔOOD (GU minus standard, mean ± std over seeds of the GU runs) vs k on a log axis,
    one figure per setting family (files named by the fields that differ between families)."""
    plt = render.pyplot()
    names, fams = families(runs)
    paths = []
    for values, fam in fams:
        settings = settings_of(fam)
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
        ax.set_title(render.family_title(fam, names, values), fontsize=8)
        ax.legend()
        fig.tight_layout()
        paths += render.save_figure(
            fig, os.path.join(out_dir, render.figure_stem("fig1", names, values, len(fams)))
        )
        plt.close(fig)
    if not paths:
        raise SystemExit("Figure 1 needs standard runs (k=none) and GU runs in one setting family")
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
    plt = render.pyplot()
    if not final_solution_correlations(runs):
        raise SystemExit(
            "Figure 5 needs finished runs with a final-solution analysis: train with "
            "--config.final.metrics=hessian,avg_sharpness,worst_sharpness,feature_eigenvalue"
        )
    names, fams = families(runs, within=(Field.LR_SCALE, "optimizer.lr"))
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
            + [f"{k}={fmt_value(values[k])}" for k in names if k not in SHOWN_ELSEWHERE]
        )
        render.suptitle(fig, title + (f" / OOD: {ood_set(fam)}" if ood_set(fam) else ""))
        fig.tight_layout()
        paths += render.save_figure(
            fig, os.path.join(out_dir, render.figure_stem("fig5", names, values, len(fams)))
        )
        plt.close(fig)
    return paths


def figure5_command(folders: list[str], out_dir: str) -> list[str]:
    """`analysis fig5 FOLDER`: each metric's Kendall τ, then the figures written."""
    runs = load_runs(folders[0])
    lines = [
        f"{name}: Kendall tau {c['tau']:.3f}, p = {c['p']:.3g}, n = {c['n']}"
        for name, c in final_solution_correlations(runs).items()
    ]
    return lines + figure5(runs, out_dir)
