"""Recorded early-period metrics vs step: Figures 2, 3, 7, 8 and 10."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from experiments.analysis import render
from experiments.analysis.runs import (
    DYNAMICS_METRICS,
    METRIC_TITLES,
    families,
    load_runs,
    recorded_curves,
    settings_of,
)
from experiments.analysis.stats import display_scale, seed_band


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
    plt = render.pyplot()
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
        settings = settings_of(fam)
        shown = [m for m in metrics if any(m in curves[r["run"]] for r in fam)]
        fig, axes = plt.subplots(1, len(shown), figsize=(4.3 * len(shown), 3.4), squeeze=False)
        for ax, metric in zip(axes[0], shown, strict=True):
            per_setting = [
                (i, s, [curves[r["run"]][metric] for r in s["runs"] if metric in curves[r["run"]]])
                for i, s in enumerate(settings)
            ]
            per_setting = [(i, s, c) for i, s, c in per_setting if c]
            display = display_scale([v for *_, c in per_setting for _, v in c], normalise)
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
        render.suptitle(fig, render.family_title(fam, names, values) + "; seed mean ± std")
        fig.tight_layout()
        paths += render.save_figure(
            fig, os.path.join(out_dir, render.figure_stem(stem, names, values, len(fams)))
        )
        plt.close(fig)
    return paths
