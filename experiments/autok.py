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
     the share of (seed, random k) pairs whose OOD accuracy the metric's k beats;
  5. Figure 2 (the metrics recorded by the standard and the metric-k runs) and Figure 6 (the
     signal curves with each picked k marked).
Everything lands in `--out` (runs skip when finished and resume when interrupted, so the same
command finishes a killed pipeline); `autok.json` and `analysis/` (table2.{md,csv}, fig2, fig6)
hold the result.
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
flags.DEFINE_list(
    "metrics",
    None,
    "Metrics that pick k (default: those of tr(F), S_avg, S_worst the config records).",
)
flags.DEFINE_integer("tau", 3, "Algorithm 2's moving-average window (paper: 3 or 8).")
flags.DEFINE_float("eps", 0.02, "Algorithm 2's threshold on the normalised change.")


def run(config, workdir: str, overrides, dataset=None) -> dict:
    from earlyjax.train import train_and_evaluate

    run_config = config.copy_and_resolve_references()
    apply_overrides(run_config, overrides)
    return train_and_evaluate(run_config, workdir, dataset=dataset)


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


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    if not f.out or not f.config:
        raise app.UsageError("--config and --out are required")
    cli.initialize_distributed()
    cli.enable_compilation_cache()
    logging.set_verbosity(logging.WARNING)
    try:
        summary = pipeline(
            f.config,
            f.out,
            seeds=[int(s) for s in f.seeds],
            n_random=f.n_random,
            max_random_k=f.max_random_k,
            metrics=tuple(f.metrics or ()),
            tau=f.tau,
            eps=f.eps,
        )
    except cli.user_errors() + (ValueError,) as e:
        raise SystemExit(f"error: {e}") from None
    analysis_dir = os.path.join(f.out, "analysis")
    print(analysis.write_table(analysis.table2(summary), analysis_dir, "table2"))
    print(f"\n(Table 2, Figure 2 and Figure 6 in {analysis_dir})")


def pipeline(
    config,
    out: str,
    *,
    seeds=(0,),
    n_random: int = 10,
    max_random_k: int = 800,
    metrics=(),
    tau: int = 3,
    eps: float = 0.02,
    dataset=None,
) -> dict:
    """Runs (or resumes) the whole pipeline; returns the summary written to `out/autok.json`.

    The standard run and the runs with a metric's k record the metrics like the signal run (for
    Figure 2); the random-k runs do not. Also writes Table 2 and Figures 2 and 6 to
    `out/analysis/`.
    `dataset` replaces the config's data (tests).
    """
    recorded = tuple(config.record.metrics)
    metrics = tuple(metrics) or tuple(m for m in SIGNAL_METRICS if m in recorded)
    unknown = sorted(set(metrics) - set(SIGNAL_METRICS))
    if unknown:
        raise ValueError(f"--metrics {unknown}: choose from {SIGNAL_METRICS}")
    missing = sorted(set(metrics) - set(recorded))
    if missing or not metrics:
        raise ValueError(
            f"--metrics {list(metrics)} must be recorded by the signal run: record.metrics is "
            f"{list(recorded)}; add {missing or list(SIGNAL_METRICS)} to --config.record.metrics"
        )
    if n_random < 0 or max_random_k < n_random:
        raise ValueError(
            f"--n_random={n_random} distinct k need --max_random_k >= n_random (got {max_random_k})"
        )
    if not config.record.every:
        raise ValueError("the signal run needs recording: set --config.record.every=10, say")
    summary = {
        "max_random_k": max_random_k,
        "standard": {"id": [], "ood": []},
        "random": {"k": [], "id": [], "ood": []},
        "metrics": {m: {"k": [], "id": [], "ood": [], "random_ood": []} for m in metrics},
        "picked": {},
    }
    for seed in seeds:
        base = f"seed={seed}"
        signal_dir = os.path.join(out, base, "signal")
        signal = (
            ("seed", seed),
            ("unfreeze.k", None),
            ("unfreeze.head_only", True),
            ("total_steps", config.record.until),
            ("data.ood_source", "none"),
        )
        run(config, signal_dir, signal, dataset)
        picked = pick_ks(signal_records(signal_dir), metrics, tau, eps)
        summary["picked"][base] = picked
        for name, p in picked.items():
            print(f"seed {seed}: {name} -> k = {p['k']} ({p['reason'] or 'stable'})")

        def gu(k, record, seed=seed, base=base):
            name = "standard" if k is None else f"k={k}"
            no_recording = () if record else (("record.every", 0),)
            overrides = (("seed", seed), ("unfreeze.k", k), *no_recording)
            return run(config, os.path.join(out, base, name), overrides, dataset)

        std = gu(None, record=True)
        summary["standard"]["id"].append(std["id_accuracy"])
        summary["standard"]["ood"].append(std["ood_accuracy"])
        ks = random_ks(seed, n_random, max_random_k)
        picked_ks = {p["k"] for p in picked.values()}
        rnd = [gu(k, record=k in picked_ks) for k in ks]  # a run's folder has one config
        summary["random"]["k"].append(ks)
        summary["random"]["id"].append([r["id_accuracy"] for r in rnd])
        summary["random"]["ood"].append([r["ood_accuracy"] for r in rnd])
        for name, p in picked.items():
            if p["k"] is None:
                continue
            res = gu(p["k"], record=True)
            m = summary["metrics"][name]
            m["k"].append(p["k"])
            m["id"].append(res["id_accuracy"])
            m["ood"].append(res["ood_accuracy"])
            m["random_ood"].append(summary["random"]["ood"][-1])
    with open(os.path.join(out, "autok.json.tmp"), "w") as fh:
        json.dump(summary, fh, indent=2)
    os.replace(os.path.join(out, "autok.json.tmp"), os.path.join(out, "autok.json"))
    analysis_dir = os.path.join(out, "analysis")
    analysis.write_table(analysis.table2(summary), analysis_dir, "table2")
    analysis.figure2(out, analysis_dir)
    analysis.figure6(out, analysis_dir)
    return summary


def run_cli() -> None:
    sys.argv = cli.rewrite_config_argument(sys.argv)
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run_cli()
