"""The outputs of lottery studies (`experiments.lottery`; Frankle, Schwab & Morcos 2020), each
on the ID test set and the OOD set, with 95% Student-t intervals over seeds:

  lth_imp        accuracy vs weights remaining, one line per rewinding step k (IMP)
  lth_rewind     accuracy at the study's fixed sparsity vs k
  lth_perturb    accuracy at that sparsity vs k, per weight transform at k
  lth_pretext    accuracy at that sparsity vs pre-training epochs, per pre-training task,
                 with IMP rewound to 0 and to the rewinding steps as reference lines
  lth_telemetry  the trunk's weights over the kept early steps (earlyjax.telemetry) beside
                 the recorder's tr(F), S_avg, S_worst at the same steps

Each reads the study folders it is given (`Source`), their `lottery.json` and every finished
run's results.json; an output drawn from several studies writes one set of files per study.
"""

from __future__ import annotations

import json
import math
import os
import re

from experiments.analysis import render
from experiments.analysis.render import band, save_figure_and_close
from experiments.analysis.stats import mean_ci, mean_ci_cell

LOTTERY_FILE = "lottery.json"  # experiments.lottery writes it
SCORES = (("id", "ID accuracy (%)"), ("ood", "OOD accuracy (%)"))

_RUN = re.compile(
    r"seed=(?P<seed>\d+)/(?:trunk$|k=(?P<k>\d+)/level=(?P<level>\d+)(?:/(?P<transform>\w+))?$"
    r"|pretext=(?P<pretext>\w+)/epochs=(?P<epochs>[\d.e+-]+)/(?:pretrain$|level=(?P<plevel>\d+)$))"
)


def read_design(folder: str) -> dict:
    path = os.path.join(folder, LOTTERY_FILE)
    if not os.path.exists(path):
        raise ValueError(f"{folder} is not a lottery study folder ({LOTTERY_FILE} not found)")
    with open(path) as f:
        return json.load(f)


def load_lottery(folder: str):
    """A frame of the study's finished runs: seed, kind (trunk | imp | perturb | pretrain |
    pretext), k, level, transform, pretext, epochs, density, id, ood, run."""
    import pandas as pd

    rows = []
    for root, _, files in os.walk(folder):
        if "results.json" not in files:
            continue
        name = os.path.relpath(root, folder).replace(os.sep, "/")
        match = _RUN.match(name)
        if match is None:
            continue
        with open(os.path.join(root, "results.json")) as f:
            results = json.load(f)
        g = match.groupdict()
        kind = "trunk"
        if g["pretext"]:
            kind = "pretext" if g["plevel"] is not None else "pretrain"
        elif g["k"] is not None:
            kind = "perturb" if g["transform"] else "imp"
        branch = results.get("branch") or {}
        rows.append(
            {
                "run": name,
                "seed": int(g["seed"]),
                "kind": kind,
                "k": int(g["k"]) if g["k"] is not None else None,
                "level": int(g["level"] or g["plevel"] or 0),
                "transform": g["transform"] or "identity",
                "pretext": g["pretext"],
                "epochs": float(g["epochs"]) if g["epochs"] else None,
                "density": branch.get("density", 1.0),
                "id": results["id_accuracy"],
                "ood": results["ood_accuracy"],
            }
        )
    if not rows:
        raise ValueError(f"{folder} holds no finished lottery run")
    return pd.DataFrame(rows)


def imp_frame(frame):
    """IMP rows per rewinding step: the trunk is level 0 of every k's chain."""
    import pandas as pd

    imp = frame[frame.kind == "imp"]
    trunks = frame[frame.kind == "trunk"]
    chains = [imp]
    for k in sorted(imp.k.dropna().unique()):
        chains.append(trunks.assign(k=int(k), level=0))
    return pd.concat(chains, ignore_index=True)


def _summary(frame, by: list[str]) -> list[dict]:
    """Rows of mean ± CI of ID and OOD accuracy per group of `by`, with weights remaining."""
    rows = []
    for key, group in frame.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = {name: _plain(value) for name, value in zip(by, key, strict=True)}
        row["weights remaining (%)"] = f"{100 * group.density.mean():.1f}"
        row["ID accuracy (%)"] = mean_ci_cell(group.id)
        row["OOD accuracy (%)"] = mean_ci_cell(group.ood)
        row["n"] = int(group.seed.nunique())
        rows.append(row)
    return rows


def _plain(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


CAPTION = (
    "Mean ± half-width of the 95% Student-t interval over the n seeds (no interval for one "
    "seed); ID: the clean test set, OOD: the mean over the corruption x severity splits. "
)


def _stem(name: str, source, several: bool) -> str:
    return f"{name}_{source.name}" if several and source.name else name


def _write_table(rows, out_dir, stem, caption, base: str = CAPTION) -> list[str]:
    render.write_table(rows, out_dir, stem, base + caption)
    return render.table_files(stem, out_dir)


def _score_axes(plt, title: str):
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    render.suptitle(fig, title)
    for ax, (_, label) in zip(axes, SCORES, strict=True):
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    return fig, axes


def _per_source(name: str, sources, out_dir: str, write_one) -> list[str]:
    paths = []
    for source in sources:
        frame = load_lottery(source.path)
        design = read_design(source.path)
        stem = _stem(name, source, len(sources) > 1)
        paths += write_one(frame, design, source.path, out_dir, stem)
    return paths


# --------------------------------------------------------------------------------------------
# Experiment 1: IMP with rewinding


def write_imp(sources, out_dir: str) -> list[str]:
    return _per_source("lth_imp", sources, out_dir, _imp)


def _imp(frame, design, folder, out_dir, stem) -> list[str]:
    chains = imp_frame(frame)
    rows = _summary(chains, ["k", "level"])
    paths = _write_table(
        rows, out_dir, stem, "IMP: prune 20% of the remaining weights, rewind to step k."
    )
    plt = render.pyplot()
    fig, axes = _score_axes(plt, "IMP with rewinding: accuracy vs weights remaining")
    for k, chain in chains.groupby("k"):
        levels = sorted(chain.level.unique())
        x = [100 * chain[chain.level == lv].density.mean() for lv in levels]
        for ax, (score, _) in zip(axes, SCORES, strict=True):
            groups = [chain[chain.level == lv][score] for lv in levels]
            band(ax, x, groups, f"k={int(k)}")
    for ax in axes:
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("weights remaining (%)")
    axes[0].legend(fontsize=7)
    return paths + save_figure_and_close(plt, fig, out_dir, stem)


# --------------------------------------------------------------------------------------------
# Experiments 1 (at a fixed sparsity) and 2: rewinding step and perturbations


def _at_level(frame, design):
    level = design["sparsity_level"]
    chains = imp_frame(frame)
    return chains[chains.level == level], level


def write_rewind(sources, out_dir: str) -> list[str]:
    return _per_source("lth_rewind", sources, out_dir, _rewind)


def _rewind(frame, design, folder, out_dir, stem) -> list[str]:
    at, level = _at_level(frame, design)
    if at.empty:
        raise ValueError(f"no IMP run at level {level} has finished")
    caption = f"IMP level {level} (0.8^{level} of the prunable weights) rewound to step k."
    paths = _write_table(_summary(at, ["k"]), out_dir, stem, caption)
    plt = render.pyplot()
    fig, axes = _score_axes(plt, f"Accuracy vs rewinding step at level {level}")
    _lines_vs_k(axes, {"IMP (rewind to k)": at})
    return paths + save_figure_and_close(plt, fig, out_dir, stem)


def _lines_vs_k(axes, lines: dict) -> None:
    for label, rows in lines.items():
        ks = sorted(rows.k.unique())
        for ax, (score, _) in zip(axes, SCORES, strict=True):
            band(ax, ks, [rows[rows.k == k][score] for k in ks], label)
    for ax in axes:
        ax.set_xscale("symlog", linthresh=max(1, min((k for k in ks if k > 0), default=1)))
        ax.set_xlabel("rewinding step k")
    axes[0].legend(fontsize=7)


def write_perturb(sources, out_dir: str) -> list[str]:
    return _per_source("lth_perturb", sources, out_dir, _perturb)


def _perturb(frame, design, folder, out_dir, stem) -> list[str]:
    at, level = _at_level(frame, design)
    perturbed = frame[(frame.kind == "perturb") & (frame.level == level)]
    if perturbed.empty:
        raise ValueError(f"no perturbation run at level {level} has finished")
    both = [at.assign(transform="identity (IMP)"), perturbed]
    import pandas as pd

    table = pd.concat(both, ignore_index=True)
    caption = (
        f"Level {level}'s mask, the trunk's weights at k perturbed (earlyjax.weight_transforms); "
        "identity (IMP) is unperturbed rewinding, k = 0 rewinds to init."
    )
    paths = _write_table(_summary(table, ["transform", "k"]), out_dir, stem, caption)
    plt = render.pyplot()
    fig, axes = _score_axes(plt, f"Perturbations at step k, level {level}")
    _lines_vs_k(axes, {t: rows for t, rows in table.groupby("transform")})
    return paths + save_figure_and_close(plt, fig, out_dir, stem)


# --------------------------------------------------------------------------------------------
# Experiment 3: data dependence


REFERENCE_KS = (0, 500, 2000)


def write_pretext(sources, out_dir: str) -> list[str]:
    return _per_source("lth_pretext", sources, out_dir, _pretext)


def _pretext(frame, design, folder, out_dir, stem) -> list[str]:
    import pandas as pd

    level = design["sparsity_level"]
    runs = frame[(frame.kind == "pretext") & (frame.level == level)]
    if runs.empty:
        raise ValueError(f"no run after pre-training has finished level {level}")
    at, _ = _at_level(frame, design)
    references = at[at.k.isin(REFERENCE_KS) | (at.k == max(design["rewind"]))]
    table = pd.concat(
        [runs, references.assign(pretext="none (IMP)", epochs=0.0)], ignore_index=True
    )
    caption = (
        f"IMP level {level} rewound to the end of E epochs of pre-training on each task; "
        "none (IMP) rows: standard IMP at that level rewound to step k (epochs 0)."
    )
    rows = _summary(table, ["pretext", "epochs", "k"])
    paths = _write_table(rows, out_dir, stem, caption)
    plt = render.pyplot()
    fig, axes = _score_axes(plt, f"Data dependence: accuracy at level {level} vs pre-training")
    for pretext, group in runs.groupby("pretext"):
        epochs = sorted(group.epochs.unique())
        for ax, (score, _) in zip(axes, SCORES, strict=True):
            band(ax, epochs, [group[group.epochs == e][score] for e in epochs], pretext)
    for k, group in references.groupby("k"):
        for ax, (score, _) in zip(axes, SCORES, strict=True):
            mean, _, _ = mean_ci(group[score])
            ax.axhline(mean, linestyle="--", linewidth=1, color="gray")
            ax.annotate(f"rewind {int(k)}", (ax.get_xlim()[0], mean), fontsize=6, color="gray")
    for ax in axes:
        ax.set_xlabel("pre-training epochs")
    axes[0].legend(fontsize=7)
    return paths + save_figure_and_close(plt, fig, out_dir, stem)


# --------------------------------------------------------------------------------------------
# Experiment 4: telemetry


TELEMETRY = (
    ("mean_magnitude", "mean magnitude"),
    ("sign_changes", "signs changed since init"),
    ("distance_init", "L2 distance to init"),
    ("cosine_init", "cosine to init"),
    ("distance_final", "L2 distance to final"),
    ("cosine_final", "cosine to final"),
    ("gradient_norm", "gradient norm"),
    ("fisher", "tr(F)"),
    ("avg_sharpness", "S_avg"),
    ("worst_sharpness", "S_worst"),
)


def telemetry_rows(folder: str, design: dict) -> list[dict]:
    """One row per (seed, kept step) of the trunks: earlyjax.telemetry's statistics and the
    metrics the trunk recorded at that step."""
    from earlyjax.metric_log import METRICS_FILE, read_records
    from earlyjax.telemetry import run_telemetry

    rows = []
    for seed in design["seeds"]:
        trunk = os.path.join(folder, f"seed={seed}", "trunk")
        if not os.path.exists(os.path.join(trunk, "results.json")):
            continue
        recorded = {
            r["step"]: r
            for r in read_records(os.path.join(trunk, METRICS_FILE))
            if r["kind"] == "record"
        }
        for row in run_telemetry(trunk):
            extra = {m: recorded.get(row["step"], {}).get(m) for m, _ in TELEMETRY[7:]}
            rows.append({"seed": seed, **row, **extra})
    if not rows:
        raise ValueError(f"no trunk of {folder} has finished")
    return rows


def write_telemetry(sources, out_dir: str) -> list[str]:
    return _per_source("lth_telemetry", sources, out_dir, _telemetry)


def _telemetry(frame, design, folder, out_dir, stem) -> list[str]:
    import pandas as pd

    data = pd.DataFrame(telemetry_rows(folder, design))
    names = [(m, label) for m, label in TELEMETRY if data[m].notna().any()]
    rows = []
    for step, group in data.groupby("step"):
        row = {"step": int(step)}
        for m, label in names:
            mean, half, n = mean_ci(group[m].dropna())
            if n == 0:
                row[label] = "—"
            else:
                row[label] = f"{mean:.4g}" if math.isnan(half) else f"{mean:.4g} ± {half:.2g}"
        row["n"] = int(group.seed.nunique())
        rows.append(row)
    caption = (
        "The trunk's prunable weights at each kept step (earlyjax.telemetry) and the recorder's "
        "metrics at the same steps (— where not recorded): mean ± half-width of the 95% "
        "Student-t interval over the n seeds."
    )
    paths = _write_table(rows, out_dir, stem, caption, base="")
    plt = render.pyplot()
    cols = 4
    fig, axes = plt.subplots(math.ceil(len(names) / cols), cols, figsize=(12, 5), squeeze=False)
    render.suptitle(fig, "The early phase: weights (Frankle et al.) and tr(F), S_avg, S_worst")
    steps = sorted(data.step.unique())
    for ax, (m, label) in zip(axes.flat, names, strict=False):
        present = [s for s in steps if data[data.step == s][m].notna().any()]
        band(ax, present, [data[data.step == s][m].dropna() for s in present], label)
        ax.set_xscale("symlog", linthresh=max(1, min((s for s in steps if s > 0), default=1)))
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    return paths + save_figure_and_close(plt, fig, out_dir, stem)
