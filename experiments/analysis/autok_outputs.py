"""Outputs of auto-k folders (autok.json): Tables 2, 6 and 3's auto-k rows, Figure 6."""

from __future__ import annotations

import os

from experiments.analysis import render
from experiments.analysis.runs import METRIC_TITLES, recorded_curves
from experiments.analysis.stats import (
    mean_std,
    normalize_0_1000,
    paired_difference_ci,
    seed_band,
    winning_rate,
    winning_rate_interval,
)
from experiments.analysis.summary import (
    intervention_label,
    metric_run,
    read_autok,
    run_for_k,
    seed_mean,
    seed_values,
)


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
    std_run = _standard_run(summary)
    rows = [
        _table2_row(
            setting,
            "standard",
            "-",
            seed_values(summary, std_run, "id"),
            seed_values(summary, std_run, "ood"),
            n=n_seeds,
            n_of="seeds",
        )
    ]
    random_k = sorted(summary["random_k"])
    if random_k:
        runs = [run_for_k(summary, k) for k in random_k]
        rows.append(
            _table2_row(
                setting,
                f"{label}, random k",
                ", ".join(str(k) for k in random_k),
                [seed_mean(summary, r, "id") for r in runs],
                [seed_mean(summary, r, "ood") for r in runs],
                n=len(random_k),
                n_of=f"random k, each the mean over {n_seeds} seeds",
            )
        )
    for metric in _metrics(summary):
        rows.append(_metric_row(summary, metric, setting, label, std_run))
    return rows


def _table2_row(setting, method, k, ids, oods, wr=None, wtl=None, *, n, n_of, delta="-",
                wr_ci="-") -> dict:  # fmt: skip
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


def _standard_run(summary: dict) -> str:
    """The summary's run of standard training ("standard", else the run with k = null)."""
    std_run = "standard" if "standard" in summary["runs"] else None
    std_run = std_run or next((n for n, r in summary["runs"].items() if r.get("k") is None), None)
    if std_run is None:
        raise ValueError("autok.json has no standard run (k = null)")
    return std_run


def _metric_row(summary: dict, metric: str, setting: dict, label: str, std_run: str) -> dict:
    """Table 2's row of the k `metric` picked (its reason when it picked none)."""
    title = f"{label}, k from {METRIC_TITLES.get(metric, metric)}"
    run = metric_run(summary, metric)
    if run is None:
        reason = summary["picked"][metric].get("reason") or "no k"
        return _table2_row(setting, title, f"none ({reason})", [], [], n=0, n_of="seeds")
    wr = winning_rate(summary, metric) if summary["random_k"] else None
    interval = winning_rate_interval(summary, metric) if wr else None
    wr_ci = "[{:.1f}, {:.1f}]".format(*interval) if interval else "n/a" if wr else "-"
    return _table2_row(
        setting,
        title,
        str(summary["picked"][metric]["k"]),
        seed_values(summary, run, "id"),
        seed_values(summary, run, "ood"),
        wr["percent"] if wr else None,
        f"{wr['wins']}/{wr['ties']}/{wr['losses']}" if wr else None,
        n=len(summary["seeds"]),
        n_of="seeds",
        delta=paired_difference_ci(
            seed_values(summary, run, "ood"), seed_values(summary, std_run, "ood")
        ),
        wr_ci=wr_ci,
    )


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


def figure6(autok_dir: str, out_dir: str, stem: str = "fig6") -> list[str]:
    """Figure 6 (App. D): one figure, one panel per metric: each seed's head-only signal curve
    (thin), their seed mean (thick: the curve Algorithm 2 ran on), normalised together to
    0..1000 for display on a log y axis as the paper does, and the picked k as a vertical line
    (each seed's own k dotted, for information)."""
    plt = render.pyplot()
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
    render.suptitle(fig, title)
    fig.tight_layout()
    paths = render.save_figure(fig, os.path.join(out_dir, stem))
    plt.close(fig)
    return paths


def write_tables(name: str, rows, sources, out_dir: str) -> list[str]:
    """Table `name` from the `rows(summary)` of every auto-k folder in `sources`, in order."""
    table = [row for s in sources for row in rows(read_autok(s.path))]
    render.write_table(table, out_dir, name)
    return render.table_files(name, out_dir)


def write_figure6(sources, out_dir: str) -> list[str]:
    """Figure 6 of every auto-k folder: `fig6` for one, else `fig6_<study>` each."""
    paths = []
    for s in sources:
        stem = "fig6" if len(sources) == 1 else "fig6_" + s.name.replace("/", "_")
        paths += figure6(s.path, out_dir, stem)
    return paths
