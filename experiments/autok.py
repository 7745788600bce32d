"""Auto-k (§6.4, Table 2): pick the unfreezing interval k from a head-only run's metrics.

    python -m experiments.autok --config=mnist_rn18.py --out=runs/mnist_autok --seeds=0,1,2
    python -m experiments.autok --config=quickstart_autok.py --out=runs/autok

Per seed:
  1. a head-only run (every block frozen all run) records tr(F), S_avg and S_worst every
     `record.every` steps up to `record.until` (`signal/` folder; it stops at record.until);
  2. Algorithm 2 (earlyjax/stabilization.py) turns each metric's curve into a step k;
  3. full gradual-unfreezing runs with each metric's k, standard training (k = None), and
     `--n_random` runs with k drawn uniformly from 1..`--max_random_k` (paper: 10 and 800);
  4. Table 2: per metric, k, ID and OOD accuracy (mean ± std over seeds) and the winning rate:
     the share of (seed, random k) pairs whose OOD accuracy the metric's k beats.
Everything lands in `--out` (runs skip when finished and resume when interrupted, so the same
command finishes a killed pipeline); `autok.json` and `analysis/table2.{md,csv}` hold the result.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
from absl import app, flags, logging

from experiments import analysis, cli
from experiments.cli import apply_overrides

SIGNAL_METRICS = ("fisher", "avg_sharpness", "worst_sharpness")

flags.DEFINE_string("out", None, "Folder for the pipeline's runs and results.")
flags.DEFINE_integer("n_random", 10, "Random k per seed to compare against (paper: 10).")
flags.DEFINE_integer("max_random_k", 800, "Random k are drawn from 1..max_random_k (paper: 800).")
flags.DEFINE_list("metrics", list(SIGNAL_METRICS), "Metrics that pick k.")
flags.DEFINE_integer("tau", 3, "Algorithm 2's moving-average window (paper: 3 or 8).")
flags.DEFINE_float("eps", 0.02, "Algorithm 2's threshold on the normalised change.")


def run(config, workdir: str, overrides) -> dict:
    from earlyjax.train import train_and_evaluate

    run_config = config.copy_and_resolve_references()
    apply_overrides(run_config, overrides)
    return train_and_evaluate(run_config, workdir)


def signal_records(workdir: str) -> list[dict]:
    from earlyjax.metric_log import METRICS_FILE, read_records

    return [r for r in read_records(os.path.join(workdir, METRICS_FILE)) if r["kind"] == "record"]


def pick_ks(records: list[dict], metrics, tau: int, eps: float) -> dict[str, dict]:
    """Algorithm 2 on each metric's recorded curve -> {metric: {k, stable, reason, ...}}."""
    from earlyjax.stabilization import stabilization_point

    steps = [r["step"] for r in records]
    picked = {}
    for name in metrics:
        values = [r[name] for r in records]
        point = stabilization_point(values, steps, tau=tau, eps=eps)
        picked[name] = {
            "k": int(point.step) if point.stable and point.step else None,
            "stable": point.stable,
            "index": point.index,
            "reason": point.reason,
        }
        if point.stable and not point.step:
            picked[name]["reason"] = "stabilised at step 0: no k to unfreeze at"
    return picked


def random_ks(seed: int, n: int, max_k: int) -> list[int]:
    """n distinct k uniform on 1..max_k (fixed per seed, so reruns reuse the same runs)."""
    rng = np.random.default_rng([seed, 0xA070])
    return sorted(int(k) for k in rng.choice(np.arange(1, max_k + 1), size=n, replace=False))


def winning_rate(metric_ood: list[float], random_ood: list[list[float]]) -> float:
    """Share of (seed, random k) pairs where the metric's k has the higher OOD accuracy."""
    wins = [m > r for m, rs in zip(metric_ood, random_ood, strict=True) for r in rs]
    return 100.0 * float(np.mean(wins)) if wins else float("nan")


def table2(summary: dict) -> list[dict]:
    rows = []
    std = summary["standard"]
    id_m, id_s = analysis.mean_std(std["id"])
    ood_m, ood_s = analysis.mean_std(std["ood"])
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
    id_m, id_s = analysis.mean_std(flat_id)
    ood_m, ood_s = analysis.mean_std(flat_ood)
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
        id_m, id_s = analysis.mean_std(m["id"])
        ood_m, ood_s = analysis.mean_std(m["ood"])
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


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS.out or not flags.FLAGS.config:
        raise app.UsageError("--config and --out are required")
    cli.initialize_distributed()
    cli.enable_compilation_cache()
    logging.set_verbosity(logging.WARNING)
    try:
        summary = pipeline(flags.FLAGS.config, flags.FLAGS.out)
    except cli.user_errors() as e:
        raise SystemExit(f"error: {e}") from None
    rows = table2(summary)
    print(analysis.write_table(rows, os.path.join(flags.FLAGS.out, "analysis"), "table2"))


def pipeline(config, out: str) -> dict:
    """Runs (or resumes) the whole pipeline and returns the summary written to autok.json."""
    f = flags.FLAGS
    metrics = tuple(f.metrics)
    unknown = sorted(set(metrics) - set(SIGNAL_METRICS))
    if unknown:
        raise SystemExit(f"--metrics {unknown}: choose from {SIGNAL_METRICS}")
    if f.n_random < 0 or f.max_random_k < f.n_random:
        raise SystemExit(
            f"--n_random={f.n_random} distinct k need --max_random_k >= n_random (got "
            f"{f.max_random_k})"
        )
    if not config.record.every:
        raise SystemExit("the signal run needs recording: set --config.record.every=10, say")
    summary = {
        "max_random_k": f.max_random_k,
        "standard": {"id": [], "ood": []},
        "random": {"k": [], "id": [], "ood": []},
        "metrics": {m: {"k": [], "id": [], "ood": [], "random_ood": []} for m in metrics},
        "picked": {},
    }
    no_recording = (("record.every", 0),)
    for seed in (int(s) for s in f.seeds):
        base = f"seed={seed}"
        signal_dir = os.path.join(out, base, "signal")
        run(
            config,
            signal_dir,
            (
                ("seed", seed),
                ("unfreeze.k", None),
                ("unfreeze.head_only", True),
                ("total_steps", config.record.until),
                ("data.ood_source", "none"),
            ),
        )
        picked = pick_ks(signal_records(signal_dir), metrics, f.tau, f.eps)
        summary["picked"][base] = picked
        for name, p in picked.items():
            print(f"seed {seed}: {name} -> k = {p['k']} ({p['reason'] or 'stable'})")

        def gu(k, seed=seed, base=base):
            name = "standard" if k is None else f"k={k}"
            return run(
                config,
                os.path.join(out, base, name),
                (("seed", seed), ("unfreeze.k", k), *no_recording),
            )

        std = gu(None)
        summary["standard"]["id"].append(std["id_accuracy"])
        summary["standard"]["ood"].append(std["ood_accuracy"])
        ks = random_ks(seed, f.n_random, f.max_random_k)
        rnd = [gu(k) for k in ks]
        summary["random"]["k"].append(ks)
        summary["random"]["id"].append([r["id_accuracy"] for r in rnd])
        summary["random"]["ood"].append([r["ood_accuracy"] for r in rnd])
        for name, p in picked.items():
            if p["k"] is None:
                continue
            res = gu(p["k"])
            m = summary["metrics"][name]
            m["k"].append(p["k"])
            m["id"].append(res["id_accuracy"])
            m["ood"].append(res["ood_accuracy"])
            m["random_ood"].append(summary["random"]["ood"][-1])
    with open(os.path.join(out, "autok.json.tmp"), "w") as fh:
        json.dump(summary, fh, indent=2)
    os.replace(os.path.join(out, "autok.json.tmp"), os.path.join(out, "autok.json"))
    return summary


def run_cli() -> None:
    sys.argv = cli.rewrite_config_argument(sys.argv)
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run_cli()
