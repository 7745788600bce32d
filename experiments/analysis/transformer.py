"""The transformer half: Tables 4 and 7, Figures 4 and 9 (auto-k folders of the nli / qa tasks)."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from earlyjax.train import RESULTS_FILE
from experiments.analysis import render
from experiments.analysis.dynamics import dynamics_figures
from experiments.analysis.runs import DYNAMICS_METRICS, METRIC_TITLES, load_runs
from experiments.analysis.stats import mean_std, winning_rate
from experiments.analysis.summary import intervention_label, metric_run, read_autok

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


def write_table7(name: str, metrics, sources, out_dir: str) -> list[str]:
    """Table 7 (Table 4 with `metrics=("fisher",)`) of the auto-k folders in `sources`."""
    render.write_table(table7([s.path for s in sources], metrics), out_dir, name)
    return render.table_files(name, out_dir)


def write_figure4(sources, out_dir: str, stem: str) -> list[str]:
    """Figure 4 (Figure 9: `stem`) of the first auto-k folder in `sources`."""
    return figure4(sources[0].path, out_dir, stem)
