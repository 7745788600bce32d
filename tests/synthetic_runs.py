"""Finished run folders written by hand, with known answers, for the analysis tests."""

import copy
import json
import os

import numpy as np

from earlyjax.config import default_config

GENERATED = "MNIST-C-style (generated)"


def write_run(
    root,
    name,
    *,
    seed,
    id_acc,
    ood_acc,
    k=None,
    dataset="digits",
    ood_set=GENERATED,
    records=None,
    drop=(),
    final_solution=None,
    **overrides,
):
    """A finished run folder: config.json (default_config with `overrides`, dotted with '__';
    without the dotted fields in `drop`, as an older version wrote it), results.json and, with
    `records`, metrics.jsonl record lines."""
    c = default_config()
    c.seed = seed
    c.unfreeze.k = k
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split("__")
        node = c
        for p in parents:
            node = node[p]
        node[leaf] = value
    folder = os.path.join(str(root), name)
    os.makedirs(folder)
    saved = json.loads(c.to_json())
    for dotted in drop:
        *parents, leaf = dotted.split(".")
        node = saved
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(saved, f)
    results = {
        "dataset": dataset,
        "model": c.model.name,
        "k": k,
        "seed": seed,
        "steps": 100,
        "id_accuracy": id_acc,
        "id_loss": 0.1,
        "ood_accuracy": ood_acc,
        "ood_table": {},
    }
    if ood_set is not None:
        results["ood_set"] = ood_set
    if final_solution is not None:
        results["final_solution"] = final_solution
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump(results, f)
    if records is not None:
        with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
            f.write(json.dumps({"step": 0, "kind": "train", "loss": 2.3}) + "\n")
            f.writelines(json.dumps({"kind": "record", **r}) + "\n" for r in records)
    return folder


def curve(scale=1.0, n=21, every=10, metrics=("fisher", "avg_sharpness", "worst_sharpness")):
    steps = np.arange(n) * every
    values = scale * (1 - np.exp(-np.arange(n) / 4.0)) + 0.01
    return [
        {"step": int(s), **{m: float(v) * (i + 1) for i, m in enumerate(metrics)}}
        for s, v in zip(steps, values, strict=True)
    ]


def autok_summary():
    acc = lambda *v: {str(s): x for s, x in enumerate(v)}  # noqa: E731
    return {
        "version": 2,
        "setting": {
            "dataset": "digits",
            "model": "resnet18",
            "ood_set": GENERATED,
            "total_steps": 250,
            "num_blocks": 5,
            "intervention": "gradual_unfreezing",
            "label": "GU",
        },
        "seeds": [0, 1, 2],
        "stabilization": {"tau": 3, "eps": 0.02, "rapid_eps": 0.05},
        "k_rule": "Algorithm 2 on the seed-mean of the head-only runs' curves",
        "k_range": [5, 10, 15, 20, 25, 30],
        "picked": {
            "fisher": {
                "k": 15,
                "reason": "",
                "per_seed": {"0": {"k": 15}, "1": {"k": 20}, "2": {"k": 20}},
            },
            "avg_sharpness": {
                "k": 20,
                "reason": "",
                "per_seed": {"0": {"k": 20}, "1": {"k": 20}, "2": {"k": 25}},
            },
            "worst_sharpness": {
                "k": None,
                "reason": "never stabilised",
                "per_seed": {"0": {"k": None}, "1": {"k": 30}, "2": {"k": None}},
            },
        },
        "random_k": [5, 15, 25, 30],
        "runs": {
            "standard": {"k": None, "id": acc(98.0, 98.2, 98.4), "ood": acc(50.0, 51.0, 52.0)},
            "k=5": {"k": 5, "id": acc(97.0, 97.0, 97.0), "ood": acc(40.0, 41.0, 42.0)},
            "k=15": {"k": 15, "id": acc(97.5, 97.5, 97.5), "ood": acc(55.0, 56.0, 57.0)},
            "k=20": {"k": 20, "id": acc(97.0, 97.2, 97.4), "ood": acc(58.0, 58.0, 58.0)},
            "k=25": {"k": 25, "id": acc(96.0, 96.0, 96.0), "ood": acc(60.0, 60.0, 60.0)},
            "k=30": {"k": 30, "id": acc(95.0, 95.0, 95.0), "ood": acc(45.0, 45.0, 45.0)},
        },
        "metric_runs": {"fisher": "k=15", "avg_sharpness": "k=20"},
    }


def write_autok_folder(root, summary: dict) -> str:
    """An auto-k folder for `summary`: autok.json, seed=S/signal (head-only, recorded), and the
    standard and k runs (standard and the metric k record, random k do not)."""
    for seed in summary["seeds"]:
        base = os.path.join(str(root), f"seed={seed}")
        n = 21 if seed < 2 else 18  # the seeds need not record the same steps
        write_run(
            base, "signal", seed=seed, id_acc=10.0, ood_acc=None, unfreeze__head_only=True,
            records=curve(1 + seed / 10, n=n), record__every=10,
        )  # fmt: skip
        for name, run in summary["runs"].items():
            record = name in ("standard", *summary["metric_runs"].values())
            write_run(
                base, name, seed=seed, k=run["k"], id_acc=run["id"][str(seed)],
                ood_acc=run["ood"][str(seed)], record__every=10 if record else 0,
                records=curve(0.5 + (run["k"] or 0) / 10) if record else None,
            )  # fmt: skip
    with open(os.path.join(str(root), "autok.json"), "w") as f:
        json.dump(summary, f)
    return str(root)


def write_transformer_autok_folders(qa_root, nli_root):
    """The synthetic auto-k summary twice: as MNLI (accuracy) and as SQuAD, whose runs score
    F1/EM per XQuAD and MLQA language: xquad/en F1 = 80 + seed, each other language 60 + seed
    + the run's k / 5, EM 10 below F1; MLQA's languages 20 below XQuAD's."""
    nli = autok_summary()
    nli["setting"]["dataset"] = "mnli"
    qa = copy.deepcopy(autok_summary())
    qa["setting"]["dataset"] = "squad"
    nli_dir = write_autok_folder(nli_root, nli)
    qa_dir = write_autok_folder(qa_root, qa)
    for seed in qa["seeds"]:
        for name, run in qa["runs"].items():
            scores = {}
            for lang in ("en", "de", "zh"):
                f1 = 80.0 + seed if lang == "en" else 60.0 + seed + (run["k"] or 0) / 5
                scores[f"xquad/{lang}"] = {"f1": f1, "exact_match": f1 - 10}
                scores[f"mlqa/{lang}"] = {"f1": f1 - 20, "exact_match": f1 - 30}
            for folder, fields in (
                (qa_dir, {"score": "f1", "scores": scores, "dataset": "squad"}),
                (nli_dir, {"dataset": "mnli"}),
            ):
                path = os.path.join(folder, f"seed={seed}", name, "results.json")
                with open(path) as f:
                    results = json.load(f)
                with open(path, "w") as f:
                    json.dump({**results, **fields}, f)
    return qa_dir, nli_dir, nli
