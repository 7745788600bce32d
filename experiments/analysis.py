"""The paper's tables and figures from a sweep folder (see experiments/sweep.py).

    python -m experiments.analysis table1 runs/mnist_k        # standard vs GU, mean ± std
    python -m experiments.analysis table2 runs/mnist_autok    # auto-k per metric, winning rate
    python -m experiments.analysis table3 runs/c10_lr         # LR switch (l2h / h2l)
    python -m experiments.analysis fig1 runs/mnist_k          # ΔID and ΔOOD vs k, log x
    python -m experiments.analysis fig2 runs/mnist_k          # recorded metric curves per k
    python -m experiments.analysis fig6 runs/mnist_autok      # signal curves, picked k marked

Outputs go to `<sweep>/analysis/` (or --out): tables as Markdown (printed too) and CSV,
figures as PNG and PDF. Only finished runs (with results.json) count; mean ± sample std over
seeds, with the number of seeds in `n`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from earlyjax.train import CONFIG_FILE, RESULTS_FILE


def load_runs(sweep_dir: str) -> list[dict]:
    """One flat record per finished run under sweep_dir (any depth)."""
    runs = []
    for root, _, files in os.walk(sweep_dir):
        if RESULTS_FILE in files and CONFIG_FILE in files:
            with open(os.path.join(root, RESULTS_FILE)) as f:
                results = json.load(f)
            with open(os.path.join(root, CONFIG_FILE)) as f:
                config = json.load(f)
            if config["unfreeze"].get("head_only"):
                continue  # an auto-k signal run, not a training result
            o = config["optimizer"]
            runs.append(
                {
                    "run": os.path.relpath(root, sweep_dir),
                    "dataset": results["dataset"],
                    "model": config["model"]["name"],
                    "lr_scale": o["lr_scale"],
                    "lr_switch": o["lr_switch"],
                    "lr_switch_step": o["lr_switch_step"],
                    "k": config["unfreeze"]["k"],
                    "seed": config["seed"],
                    "id": results["id_accuracy"],
                    "ood": math.nan if results["ood_accuracy"] is None else results["ood_accuracy"],
                }
            )
    if not runs:
        raise SystemExit(f"no finished runs (folders with {RESULTS_FILE}) under {sweep_dir}")
    return sorted(runs, key=lambda r: r["run"])


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, float)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def _group(runs: list[dict], key: Callable[[dict], tuple]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        groups[key(r)].append(r)
    return dict(groups)


def _setting(r: dict) -> tuple:
    return (r["dataset"], r["model"], r["lr_scale"])


def _k_sort(k: int | None) -> float:
    return -1 if k is None else k


def table1(runs: list[dict]) -> list[dict]:
    """Per setting: standard training (k = None) and GU at each k, with Δ vs standard."""
    rows = []
    for (dataset, model, scale), group in sorted(_group(runs, _setting).items(), key=str):
        by_k = _group(group, lambda r: (r["k"],))
        base = by_k.get((None,))
        base_id = mean_std([r["id"] for r in base])[0] if base else math.nan
        base_ood = mean_std([r["ood"] for r in base])[0] if base else math.nan
        for (k,), rs in sorted(by_k.items(), key=lambda kv: _k_sort(kv[0][0])):
            id_m, id_s = mean_std([r["id"] for r in rs])
            ood_m, ood_s = mean_std([r["ood"] for r in rs])
            rows.append(
                {
                    "dataset": dataset,
                    "model": model,
                    "lr": f"{scale:g}*lr_d",
                    "training": "standard" if k is None else f"GU k={k}",
                    "ID": id_m,
                    "ID std": id_s,
                    "OOD": ood_m,
                    "OOD std": ood_s,
                    "ΔID": id_m - base_id,
                    "ΔOOD": ood_m - base_ood,
                    "n": len(rs),
                }
            )
    return rows


def table3(runs: list[dict]) -> list[dict]:
    """Per setting: constant LR vs each LR switch (direction @ step)."""
    rows = []
    for (dataset, model, scale), group in sorted(_group(runs, _setting).items(), key=str):
        by_switch = _group(group, lambda r: (r["lr_switch"], r["lr_switch_step"], r["k"]))
        for (switch, step, k), rs in sorted(by_switch.items(), key=str):
            id_m, id_s = mean_std([r["id"] for r in rs])
            ood_m, ood_s = mean_std([r["ood"] for r in rs])
            name = "constant" if switch is None else f"lr_{switch} @ {step}"
            rows.append(
                {
                    "dataset": dataset,
                    "model": model,
                    "lr": f"{scale:g}*lr_d",
                    "schedule": name + ("" if k is None else f", GU k={k}"),
                    "ID": id_m,
                    "ID std": id_s,
                    "OOD": ood_m,
                    "OOD std": ood_s,
                    "n": len(rs),
                }
            )
    return rows


def to_markdown(rows: list[dict]) -> str:
    """A Markdown table; 'X' and 'X std' columns are shown together as 'mean ± std'."""
    cols = [c for c in rows[0] if not c.endswith(" std")]

    def cell(row: dict, col: str) -> str:
        v = row[col]
        if isinstance(v, float):
            text = "n/a" if math.isnan(v) else f"{v:+.2f}" if col.startswith("Δ") else f"{v:.2f}"
            if f"{col} std" in row:
                text += f" ± {row[col + ' std']:.2f}"
            return text
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r, c) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def write_table(rows: list[dict], out_dir: str, name: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, name + ".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    markdown = to_markdown(rows)
    with open(os.path.join(out_dir, name + ".md"), "w") as f:
        f.write(markdown + "\n")
    return markdown


def figure1(runs: list[dict], out_dir: str) -> list[str]:
    """ΔID and ΔOOD (GU minus standard, mean ± std over seeds) vs k on a log axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table1(runs) if r["training"] != "standard" and not math.isnan(r["ΔID"])]
    if not rows:
        raise SystemExit("Figure 1 needs standard runs (k=none) and GU runs in the sweep")
    paths = []
    for setting, group in _group(rows, lambda r: (r["dataset"], r["model"], r["lr"])).items():
        ks = [int(r["training"].split("=")[1]) for r in group]
        order = np.argsort(ks)
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for col, color in (("ΔID", "tab:blue"), ("ΔOOD", "tab:orange")):
            y = np.array([group[i][col] for i in order])
            err = np.array([group[i][col.strip("Δ") + " std"] for i in order])
            x = np.array(ks)[order]
            ax.plot(x, y, "o-", color=color, label=col)
            ax.fill_between(x, y - err, y + err, color=color, alpha=0.2)
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("unfreezing interval k (steps)")
        ax.set_ylabel("accuracy change vs standard (points)")
        ax.set_title(" / ".join(setting))
        ax.legend()
        fig.tight_layout()
        paths += _save(fig, os.path.join(out_dir, "fig1_" + "_".join(setting).replace("*", "")))
        plt.close(fig)
    return paths


METRIC_TITLES = {
    "fisher": "tr(F)",
    "avg_sharpness": "S_avg",
    "worst_sharpness": "S_worst",
    "hessian": "λ_max",
    "feature_rank": "feature rank",
}


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
    lo = min(c.min() for c in curves)
    hi = max(c.max() for c in curves)
    span = hi - lo if hi > lo else 1.0
    return [1.0 + 1000.0 * (c - lo) / span for c in curves]


def _save(fig, stem: str) -> list[str]:
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        fig.savefig(f"{stem}.{ext}", dpi=150)
        paths.append(f"{stem}.{ext}")
    return paths


def figure2(sweep_dir: str, out_dir: str) -> list[str]:
    """Recorded metrics vs step for each run with records (standard and each k), one panel per
    metric, normalised to 0..1000 per panel, log y (as Fig. 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {r["run"]: r for r in load_runs(sweep_dir)}
    curves = {name: recorded_curves(os.path.join(sweep_dir, name)) for name in runs}
    curves = {name: c for name, c in curves.items() if c}
    if not curves:
        raise SystemExit(f"no run under {sweep_dir} has recorded metrics (--config.record.every)")
    metrics = [m for m in METRIC_TITLES if any(m in c for c in curves.values())]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        names = sorted((n for n in curves if metric in curves[n]), key=lambda n: str(runs[n]["k"]))
        ys = normalize_0_1000([curves[n][metric][1] for n in names])
        for name, y in zip(names, ys, strict=True):
            k = runs[name]["k"]
            label = ("standard" if k is None else f"k={k}") + f" (seed {runs[name]['seed']})"
            ax.plot(curves[name][metric][0], y, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(f"{METRIC_TITLES[metric]} (normalised 0-1000)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    paths = _save(fig, os.path.join(out_dir, "fig2"))
    plt.close(fig)
    return paths


def read_autok(autok_dir: str) -> dict:
    """The summary `experiments.autok` wrote to `autok_dir/autok.json`."""
    path = os.path.join(autok_dir, "autok.json")
    if not os.path.exists(path):
        raise SystemExit(f"{path} not found: run experiments.autok with --out={autok_dir} first")
    with open(path) as f:
        return json.load(f)


def figure6(autok_dir: str, out_dir: str) -> list[str]:
    """The auto-k signal curves (head-only runs) with each metric's picked k as a vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picked = read_autok(autok_dir)["picked"]
    paths = []
    for seed_dir, per_metric in sorted(picked.items()):
        curves = recorded_curves(os.path.join(autok_dir, seed_dir, "signal"))
        metrics = [m for m in per_metric if m in curves]
        fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
        for ax, metric in zip(axes[0], metrics, strict=True):
            steps, values = curves[metric]
            ax.plot(steps, normalize_0_1000([values])[0], color="tab:blue")
            k = per_metric[metric]["k"]
            if k is not None:
                ax.axvline(k, color="tab:red", ls="--", label=f"k = {k}")
                ax.legend(fontsize=8)
            ax.set_yscale("log")
            ax.set_xlabel("step (head-only run)")
            ax.set_title(f"{METRIC_TITLES[metric]}, {seed_dir}")
        fig.tight_layout()
        paths += _save(fig, os.path.join(out_dir, f"fig6_{seed_dir}"))
        plt.close(fig)
    return paths


def winning_rate(metric_ood: list[float], random_ood: list[list[float]]) -> float:
    """Share of (seed, random k) pairs where the metric's k has the higher OOD accuracy."""
    wins = [m > r for m, rs in zip(metric_ood, random_ood, strict=True) for r in rs]
    return 100.0 * float(np.mean(wins)) if wins else float("nan")


def table2(summary: dict) -> list[dict]:
    """Table 2 from an auto-k summary (`autok.json`): standard, random k, and k per metric with
    its winning rate over the random k."""
    rows = []
    std = summary["standard"]
    id_m, id_s = mean_std(std["id"])
    ood_m, ood_s = mean_std(std["ood"])
    rows.append(
        {
            "method": "standard",
            "k": "-",
            "ID": id_m,
            "ID std": id_s,
            "OOD": ood_m,
            "OOD std": ood_s,
            "WR (OOD) %": float("nan"),
            "n": len(std["id"]),
        }
    )
    rnd = summary["random"]
    flat_id = [x for xs in rnd["id"] for x in xs]
    flat_ood = [x for xs in rnd["ood"] for x in xs]
    id_m, id_s = mean_std(flat_id)
    ood_m, ood_s = mean_std(flat_ood)
    rows.append(
        {
            "method": "GU, random k",
            "k": f"1..{summary['max_random_k']}",
            "ID": id_m,
            "ID std": id_s,
            "OOD": ood_m,
            "OOD std": ood_s,
            "WR (OOD) %": float("nan"),
            "n": len(flat_id),
        }
    )
    for name, m in summary["metrics"].items():
        if not m["id"]:
            continue
        id_m, id_s = mean_std(m["id"])
        ood_m, ood_s = mean_std(m["ood"])
        rows.append(
            {
                "method": f"GU, k from {name}",
                "k": ",".join(str(k) for k in m["k"]),
                "ID": id_m,
                "ID std": id_s,
                "OOD": ood_m,
                "OOD std": ood_s,
                "WR (OOD) %": winning_rate(m["ood"], m["random_ood"]),
                "n": len(m["id"]),
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["table1", "table2", "table3", "fig1", "fig2", "fig6"])
    p.add_argument("sweep_dir")
    p.add_argument("--out", help="output folder (default: <sweep_dir>/analysis)")
    args = p.parse_args(argv)
    out = args.out or os.path.join(args.sweep_dir, "analysis")
    if args.what in ("fig2", "fig6"):
        make = figure2 if args.what == "fig2" else figure6
        for path in make(args.sweep_dir, out):
            print(path)
        return
    if args.what == "table2":
        print(write_table(table2(read_autok(args.sweep_dir)), out, "table2"))
        return
    runs = load_runs(args.sweep_dir)
    if args.what == "fig1":
        for path in figure1(runs, out):
            print(path)
        return
    rows = table1(runs) if args.what == "table1" else table3(runs)
    print(write_table(rows, out, args.what))
    print(f"\n(written to {out}/{args.what}.md and .csv)")


if __name__ == "__main__":
    main()
