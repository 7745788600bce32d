"""The outputs of basin studies (`experiments.basin`; Sadrtdinov, Pozdeev, Vetrov & Lobacheva
2023), each with 95% Student-t intervals over the study's seeds (replicates):

  sse_cycles   ensemble (K members) and single-model accuracy, ID and OOD, against the cycle
               learning rate, one line per method and cycle length; local and global DE as
               reference lines; with the ensembles' NLL, ECE and disagreement
  sse_size     accuracy against ensemble size 1..K for each method
  sse_barrier  the loss and error barrier on the ID test set from the first fine-tuned model
               to each later model, against the cycle learning rate: the "stay in the basin"
               criterion; local DE (to the other fine-tuned models) and global DE as references
  sse_soups    the uniform weight soup of each ensemble's members against the ensemble
  sse_early    beyond the paper: tr(F), S_avg, S_worst recorded at the start of every cycle
               (the last recorded step of its early period) against the cycle's barrier, with
               Spearman's rank correlation over the cycles

The members' logits and the paths between models are computed from the runs' checkpoints
(`earlyjax.ensembles`), once per process: outputs drawn from one study share them.
"""

from __future__ import annotations

import functools
import json
import math
import os

import numpy as np

from experiments.analysis import render
from experiments.analysis.render import band, save_figure_and_close
from experiments.analysis.stats import mean_ci, mean_ci_cell

BASIN_FILE = "basin.json"  # experiments.basin writes it
SETS = (("id", "ID"), ("ood_mean", "OOD"))
REFERENCES = ("local", "global")  # the deep ensembles, drawn as reference lines
LABELS = {"local": "local DE", "global": "global DE", "sse": "SSE", "starsse": "StarSSE"}
EARLY_METRICS = (("fisher", "tr(F)"), ("avg_sharpness", "S_avg"), ("worst_sharpness", "S_worst"))
CAPTION = (
    "Mean ± half-width of the 95% Student-t interval over the n seeds (no interval for one "
    "seed); ID: the clean test set, OOD: the mean over the corruption x severity splits. "
)


def read_design(folder: str) -> dict:
    path = os.path.join(folder, BASIN_FILE)
    if not os.path.exists(path):
        raise ValueError(f"{folder} is not a basin study folder ({BASIN_FILE} not found)")
    with open(path) as f:
        return json.load(f)


def _setting(key: tuple) -> str:
    method, lr, epochs = key
    if method in REFERENCES:
        return LABELS[method]
    return f"{LABELS[method]} lr×{lr:g} len×{epochs:g}"


# --------------------------------------------------------------------------------------------
# Evaluations shared by the outputs (once per folder and process)


@functools.cache
def _task(folder: str, with_ood: bool = True):
    """The task every fine-tuned model of the study is evaluated on (built once: its compiled
    evaluation is shared); without OOD splits for the paths, measured on the ID test set."""
    from earlyjax import ensembles
    from experiments.basin import finetune_run

    first = os.path.join(folder, finetune_run(read_design(folder)["seeds"][0], 0))
    return ensembles.member_task([(first, "end")], with_ood=with_ood)


@functools.cache
def member_outputs(folder: str, run: str) -> dict:
    """{set: (logits, labels)} of the run's final model."""
    from earlyjax import ensembles

    member = (os.path.join(folder, run), "end")
    return ensembles.evaluate_members([member], task=_task(folder))[0]


@functools.cache
def ensemble_frame(folder: str):
    """One row per (seed, ensemble, set, k): the ensemble of its first k members (accuracy,
    NLL, ECE, disagreement) and `single`, the mean accuracy of the members it adds to the
    first fine-tuned model (all members for the deep ensembles)."""
    import pandas as pd

    from earlyjax import ensembles
    from experiments.basin import ensembles as study_ensembles

    design = read_design(folder)
    rows = []
    for seed in design["seeds"]:
        for key, members in study_ensembles(design, seed).items():
            outputs = [member_outputs(folder, run) for run in members]
            curves = ensembles.ensemble_curves(outputs)
            singles = [ensembles.ensemble_curves([o]) for o in outputs]
            counted = singles if key[0] in REFERENCES else singles[1:]
            for name, _ in SETS:
                if name not in curves:
                    continue
                single = float(np.mean([s[name]["accuracy"][0] for s in counted]))
                for k in range(len(members)):
                    row = {m: curves[name][m][k] for m in curves[name]}
                    rows.append(
                        {"seed": seed, "method": key[0], "lr": key[1], "epochs": key[2]}
                        | {"set": name, "k": k + 1, "single": single, **row}
                    )
    return pd.DataFrame(rows)


@functools.cache
def path(folder: str, a: str, b: str) -> dict:
    """`earlyjax.ensembles.interpolation_path` between two runs' final models (ID test set)."""
    from earlyjax import ensembles

    design = read_design(folder)
    return ensembles.interpolation_path(
        (os.path.join(folder, a), "end"),
        (os.path.join(folder, b), "end"),
        num_points=design["path_points"],
        bn_examples=design["bn_examples"],
        task=_task(folder, with_ood=False),
    )


@functools.cache
def barrier_frame(folder: str):
    """One row per (seed, ensemble, member m >= 1): the ID loss and error barriers between the
    ensemble's first model (the first fine-tuned model) and member m."""
    import pandas as pd

    from experiments.basin import ensembles as study_ensembles

    design = read_design(folder)
    rows = []
    for seed in design["seeds"]:
        for key, members in study_ensembles(design, seed).items():
            for m, run in enumerate(members[1:], start=1):
                p = path(folder, members[0], run)["id"]
                rows.append(
                    {"seed": seed, "method": key[0], "lr": key[1], "epochs": key[2], "member": m}
                    | {"run": run, "loss": p["loss_barrier"], "error": p["error_barrier"]}
                )
    return pd.DataFrame(rows)


def _settings(frame) -> list[tuple]:
    """The (method, lr, epochs) of the frame: the references first, then by method, lr, len."""
    keys = {
        (r.method, None, None) if r.method in REFERENCES else (r.method, r.lr, r.epochs)
        for r in frame.itertuples()
    }

    def order(key):
        method, lr, epochs = key
        return (method not in REFERENCES, method, lr or 0.0, epochs or 0.0)

    return sorted(keys, key=order)


def _of(frame, key: tuple):
    method, lr, epochs = key
    rows = frame[frame.method == method]
    if method in REFERENCES:
        return rows
    return rows[np.isclose(rows.lr, lr) & np.isclose(rows.epochs, epochs)]


def _write_table(rows, out_dir, stem, caption) -> list[str]:
    render.write_table(rows, out_dir, stem, CAPTION + caption)
    return render.table_files(stem, out_dir)


def _stem(name: str, source, several: bool) -> str:
    return f"{name}_{source.name}" if several and source.name else name


def _per_source(name: str, sources, out_dir: str, write_one) -> list[str]:
    paths = []
    for source in sources:
        stem = _stem(name, source, len(sources) > 1)
        paths += write_one(source.path, read_design(source.path), out_dir, stem)
    return paths


def _cycle_axes(plt, title: str, n: int = 2, ylabel: str = ""):
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.6), squeeze=False)
    render.suptitle(fig, title)
    for ax in axes.flat:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("cycle lr / fine-tuning lr")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    return fig, list(axes.flat)


def _reference_line(ax, values, label: str, style: str) -> None:
    mean, _, n = mean_ci(values)
    if n:
        ax.axhline(mean, linestyle=style, linewidth=1, color="gray")
        ax.annotate(label, (ax.get_xlim()[0], mean), fontsize=6, color="gray")


def _method_lines(ax, frame, column: str, design: dict) -> None:
    """One band per (method, cycle length) over the cycle learning rates."""
    for method in design["methods"]:
        for epochs in design["cycle_epochs"]:
            rows = frame[(frame.method == method) & np.isclose(frame.epochs, epochs)]
            lrs = sorted(rows.lr.unique())
            groups = [rows[np.isclose(rows.lr, lr)][column] for lr in lrs]
            band(ax, lrs, groups, f"{LABELS[method]} len×{epochs:g}")


# --------------------------------------------------------------------------------------------
# Experiment 1: accuracy against the cycle's learning rate and length


def write_cycles(sources, out_dir: str) -> list[str]:
    return _per_source("sse_cycles", sources, out_dir, _cycles)


def _cycles(folder, design, out_dir, stem) -> list[str]:
    frame = ensemble_frame(folder)
    full = frame[frame.k == design["members"]]
    rows = []
    for key in _settings(full):
        cell = _of(full, key)
        row = {"ensemble": _setting(key)}
        for name, label in SETS:
            at = cell[cell.set == name]
            if at.empty:
                continue
            row[f"{label} ensemble acc. (%)"] = mean_ci_cell(at.accuracy)
            row[f"{label} single acc. (%)"] = mean_ci_cell(at.single)
        at = cell[cell.set == "id"]
        row["ID mean per-class acc. (%)"] = mean_ci_cell(at.mean_class_accuracy)
        row["ID NLL"] = mean_ci_cell(at.nll)
        row["ID ECE"] = mean_ci_cell(at.ece)
        row["ID disagreement"] = mean_ci_cell(at.disagreement)
        row["n"] = int(cell.seed.nunique())
        rows.append(row)
    k = design["members"]
    caption = (
        f"Ensembles of K = {k}: local DE (K fine-tunings of one pre-trained model), global DE "
        "(one per pre-trained model), SSE and StarSSE (the first fine-tuned model and K-1 "
        "cycles at the cycle lr and length, multiples of the fine-tuning's). Single: the mean "
        "accuracy of the cycles' models (all members for the deep ensembles)."
    )
    paths = _write_table(rows, out_dir, stem, caption)
    plt = render.pyplot()
    fig, axes = _cycle_axes(plt, f"Accuracy vs the cycle learning rate (K = {k})", 4, "acc. (%)")
    panels = [(n, label, c) for n, label in SETS for c in ("accuracy", "single")]
    for ax, (name, label, column) in zip(axes, panels, strict=False):
        at = full[full.set == name]
        _method_lines(ax, at, column, design)
        for method, style in zip(REFERENCES, ("--", ":"), strict=True):
            _reference_line(ax, at[at.method == method][column], LABELS[method], style)
        ax.set_title(
            f"{label} {'ensemble' if column == 'accuracy' else 'single model'}", fontsize=8
        )
    axes[0].legend(fontsize=6)
    return paths + save_figure_and_close(plt, fig, out_dir, stem)


# --------------------------------------------------------------------------------------------
# Experiment 2: accuracy against the ensemble size


def write_size(sources, out_dir: str) -> list[str]:
    return _per_source("sse_size", sources, out_dir, _size)


def _size(folder, design, out_dir, stem) -> list[str]:
    frame = ensemble_frame(folder)
    rows = []
    for key in _settings(frame):
        cell = _of(frame, key)
        for k in sorted(cell.k.unique()):
            row = {"ensemble": _setting(key), "size": int(k)}
            for name, label in SETS:
                at = cell[(cell.set == name) & (cell.k == k)]
                if not at.empty:
                    row[f"{label} acc. (%)"] = mean_ci_cell(at.accuracy)
            row["n"] = int(cell.seed.nunique())
            rows.append(row)
    paths = _write_table(rows, out_dir, stem, "The ensemble of its first k members, k = 1..K.")
    plt = render.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    render.suptitle(fig, "Accuracy vs ensemble size")
    for ax, (name, label) in zip(axes, SETS, strict=True):
        at = frame[frame.set == name]
        for key in _settings(at):
            cell = _of(at, key)
            sizes = sorted(cell.k.unique())
            band(ax, sizes, [cell[cell.k == k].accuracy for k in sizes], _setting(key))
        ax.set_xlabel("ensemble size")
        ax.set_ylabel(f"{label} acc. (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=5)
    return paths + save_figure_and_close(plt, fig, out_dir, stem)


# --------------------------------------------------------------------------------------------
# Experiment 3: barriers (staying in the basin) and soups


def write_barrier(sources, out_dir: str) -> list[str]:
    return _per_source("sse_barrier", sources, out_dir, _barrier)


def _barrier(folder, design, out_dir, stem) -> list[str]:
    frame = barrier_frame(folder)
    rows = []
    for key in _settings(frame):
        cell = _of(frame, key)
        rows.append(
            {
                "from the first fine-tuned model to": _setting(key),
                "loss barrier (nats)": _plain_cell(cell.loss),
                "error barrier (%)": _plain_cell(cell.error),
                "n": int(cell.seed.nunique()),
            }
        )
    caption = (
        f"The barrier on the ID test set along the straight path between the first fine-tuned "
        f"model and each later member ({design['path_points']} points, BatchNorm statistics "
        "recomputed on training data at each): the largest excess of the path's loss (error) "
        "over the line between its ends; averaged over the members, then the seeds. Near 0: "
        "the same basin."
    )
    paths = _write_table(rows, out_dir, stem, caption)
    plt = render.pyplot()
    fig, axes = _cycle_axes(plt, "Barrier from the first fine-tuned model vs the cycle lr")
    for ax, (column, label) in zip(
        axes, (("loss", "loss barrier"), ("error", "error barrier (%)")), strict=True
    ):
        seed_means = frame.groupby(["seed", "method", "lr", "epochs"], dropna=False)[column].mean()
        means = seed_means.reset_index()
        _method_lines(ax, means, column, design)
        for method, style in zip(REFERENCES, ("--", ":"), strict=True):
            _reference_line(ax, means[means.method == method][column], LABELS[method], style)
        ax.set_ylabel(label)
    axes[0].legend(fontsize=6)
    return paths + save_figure_and_close(plt, fig, out_dir, stem)


@functools.cache
def soup_frame(folder: str):
    """One row per (seed, ensemble, set): the accuracy of the uniform soup of its members."""
    import pandas as pd

    from earlyjax import ensembles
    from experiments.basin import ensembles as study_ensembles

    design = read_design(folder)
    rows = []
    for seed in design["seeds"]:
        for key, members in study_ensembles(design, seed).items():
            outputs = ensembles.soup_outputs(
                [(os.path.join(folder, run), "end") for run in members],
                bn_examples=design["bn_examples"],
                task=_task(folder),
            )
            curves = ensembles.ensemble_curves([outputs])
            for name, _ in SETS:
                if name in curves:
                    accuracy = curves[name]["accuracy"][0]
                    rows.append(
                        {"seed": seed, "method": key[0], "lr": key[1], "epochs": key[2]}
                        | {"set": name, "soup": accuracy}
                    )
    return pd.DataFrame(rows)


def write_soups(sources, out_dir: str) -> list[str]:
    return _per_source("sse_soups", sources, out_dir, _soups)


def _soups(folder, design, out_dir, stem) -> list[str]:
    soups = soup_frame(folder)
    frame = ensemble_frame(folder)
    full = frame[frame.k == design["members"]]
    rows = []
    for key in _settings(soups):
        row = {"members of": _setting(key)}
        for name, label in SETS:
            soup, ens = _of(soups, key), _of(full, key)
            soup, ens = soup[soup.set == name], ens[ens.set == name]
            if not soup.empty:
                row[f"{label} soup acc. (%)"] = mean_ci_cell(soup.soup)
                row[f"{label} ensemble acc. (%)"] = mean_ci_cell(ens.accuracy)
        row["n"] = int(_of(soups, key).seed.nunique())
        rows.append(row)
    caption = (
        "The uniform weight soup of an ensemble's K members (the mean of their weights, "
        "BatchNorm statistics recomputed on training data) beside the ensemble (the mean of "
        "their softmax outputs). A soup works only for models in one basin."
    )
    paths = _write_table(rows, out_dir, stem, caption)
    plt = render.pyplot()
    fig, axes = _cycle_axes(plt, "Soup accuracy vs the cycle learning rate", ylabel="acc. (%)")
    for ax, (name, label) in zip(axes, SETS, strict=True):
        at = soups[soups.set == name]
        _method_lines(ax, at, "soup", design)
        _reference_line(ax, at[at.method == "local"].soup, "local DE soup", "--")
        ax.set_title(f"{label}: soups", fontsize=8)
    axes[0].legend(fontsize=6)
    return paths + save_figure_and_close(plt, fig, out_dir, stem)


# --------------------------------------------------------------------------------------------
# Experiment 4 (beyond the paper): the early period of each cycle


def early_frame(folder: str, design: dict):
    """One row per cycle run (SSE and StarSSE, cycle >= 1): its recorded metrics at step 0 and
    at the last recorded step of its early period, and its barrier from the first fine-tuned
    model."""
    import pandas as pd

    from earlyjax.metric_log import METRICS_FILE, read_records

    barriers = barrier_frame(folder)
    cycles = barriers[barriers.method.isin(design["methods"])]
    rows = []
    for r in cycles.itertuples():
        records = [
            x
            for x in read_records(os.path.join(folder, r.run, METRICS_FILE))
            if x["kind"] == "record"
        ]
        if not records:
            continue
        first, last = records[0], records[-1]
        row = {"seed": r.seed, "method": r.method, "lr": r.lr, "epochs": r.epochs}
        row |= {"cycle": r.member, "loss": r.loss, "error": r.error, "early_step": last["step"]}
        for metric, _ in EARLY_METRICS:
            row[f"{metric}@0"] = first.get(metric) if first["step"] == 0 else None
            row[metric] = last.get(metric)
        rows.append(row)
    if not rows:
        raise ValueError(f"no cycle of {folder} recorded early-period metrics (record.every)")
    return pd.DataFrame(rows)


def write_early(sources, out_dir: str) -> list[str]:
    return _per_source("sse_early", sources, out_dir, _early)


def _early(folder, design, out_dir, stem) -> list[str]:
    from scipy import stats

    frame = early_frame(folder, design)
    metrics = [(m, label) for m, label in EARLY_METRICS if frame[m].notna().any()]
    step = int(frame.early_step.max())
    rows = []
    for key in _settings(frame):
        cell = _of(frame, key)
        row = {"cycles of": _setting(key)}
        for metric, label in metrics:
            row[f"{label} @0"] = _plain_cell(cell[f"{metric}@0"])
            row[f"{label} @{step}"] = _plain_cell(cell[metric])
        row["loss barrier"] = _plain_cell(cell.loss)
        row["n"] = int(cell.seed.nunique())
        rows.append(row)
    for metric, label in metrics:
        at = frame[[metric, "loss"]].dropna()
        if len(at) > 2 and at[metric].nunique() > 1 and at.loss.nunique() > 1:
            rho, p = stats.spearmanr(at[metric], at.loss)
            value = f"{rho:.2f} (p = {p:.2g}, n = {len(at)} cycles)"
        else:  # a constant input has no rank correlation
            value = f"undefined: constant over the n = {len(at)} cycles"
        rows.append(
            {"cycles of": f"Spearman ρ({label} @{step}, loss barrier)", f"{label} @{step}": value}
        )
    caption = (
        f"Each cycle's early-period metrics, recorded at its step 0 (the model it restarts "
        f"from) and at step {step} (the last recorded step of its early period; record.every "
        "and record.until of the config), beside its loss barrier from the first fine-tuned "
        "model; the last rows: Spearman's rank correlation over all cycles and seeds (does the "
        "early period predict who leaves the basin?)."
    )
    paths = _write_table(rows, out_dir, stem, caption)
    plt = render.pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    render.suptitle(fig, f"Early-period metrics at cycle step {step} vs the barrier")
    for ax, (metric, label) in zip(axes.flat, metrics, strict=True):
        for method in design["methods"]:
            at = frame[frame.method == method]
            ax.scatter(at[metric], at.loss, s=12, label=LABELS[method])
        ax.set_xlabel(f"{label} at cycle step {step}")
        ax.set_ylabel("loss barrier (nats)")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=6)
    return paths + save_figure_and_close(plt, fig, out_dir, stem)


def _plain_cell(values) -> str:
    mean, half, n = mean_ci(values.dropna())
    if n == 0:
        return "—"
    return f"{mean:.4g}" if math.isnan(half) else f"{mean:.4g} ± {half:.2g}"
