"""Auto-k (§6.4, §7.1, Table 2, Table 6): pick the step k at which an early-period intervention
is removed from the metrics of a run that keeps it.

    python -m experiments.autok --config=mnist_rn18.py --out=runs/mnist_autok --seeds=0,1,2,3,4,5
    python -m experiments.autok --config=quickstart_autok.py --out=runs/autok --seeds=0,1,2
    python -m experiments.autok --config=cifar10_rn18.py --config.optimizer.lr_switch=l2h \
        --intervention=lr_switch --out=runs/c10_lr_autok        # §7.1: the LR switch step

The intervention (`--intervention`, `earlyjax.interventions`) is gradual unfreezing (k is the
unfreezing interval) or the LR switch (k is the switch step); everything below is the same
code for both. As the paper computes it: ONE k per metric per setting, compared with ONE set
of random k, each trained on every seed, by seed means.
  1. Per seed, a signal run that keeps the intervention all along (`Intervention.held()`: every
     block frozen, head-only; or the first learning rate throughout) records tr(F), S_avg and
     S_worst every `record.every` steps up to `record.until` (`seed=S/signal/`).
  2. Per metric, Algorithm 2 (`earlyjax.stabilization`, parameters from the config's
     `stabilization` block) runs on the SEED-MEAN of the signal curves and gives that metric's
     k. Averaging the curves before picking keeps one k per setting, as Table 6 has, and damps
     the recording noise the paper names as the heuristic's weakness; each seed's own pick is
     kept in `autok.json` as information (its spread), not used.
  3. `--n_random` k are drawn once, without replacement, from the k a metric can pick: the
     recording steps `record.every`, 2 `record.every`, ... up to `record.until`, and only those
     whose schedule ends inside the run (`Intervention.max_fitting_k`: k * L < total steps for
     GU) unless `unfreeze.allow_late_release`; a metric's k outside that range is refused.
  4. Standard training (no intervention), the intervention removed at each metric's k and at
     each random k, on every seed
     (`seed=S/standard/`, `seed=S/k=K/`); the standard and metric-k runs record the metrics too
     (Figure 2).
  5. Table 2 (ID/OOD mean ± std over seeds, winning rate = share of random k whose seed-mean OOD
     accuracy the metric's k beats, ties counting one half: `experiments.analysis`), Table 6 (k per
     metric), Figure 2 and Figure 6, in `OUT/analysis/`; the summary with every per-seed value in
     `OUT/autok.json`.
Runs skip when finished and resume when interrupted, so the same command finishes a killed
pipeline.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import TYPE_CHECKING

import numpy as np
from absl import app, flags, logging

from earlyjax.config import Field
from experiments import analysis, cli
from experiments.cli import apply_overrides

if TYPE_CHECKING:
    from earlyjax.task_protocol import Task

SIGNAL_METRICS = analysis.DYNAMICS_METRICS  # the paper's three: tr(F), S_avg, S_worst
RANDOM_K_STREAM = 0xA070  # the random k depend on this and the candidate range only

flags.DEFINE_string("out", None, "Folder for the pipeline's runs and results.")
flags.DEFINE_integer("n_random", 10, "Random k, each trained on every seed (paper: 10).")
flags.DEFINE_integer(
    "max_random_k",
    None,
    "Draw the random k only from those <= this (the paper: 800); default: from every k a "
    "metric can pick.",
)
flags.DEFINE_bool(
    "record_runs",
    True,
    "The standard and metric-k runs record the metrics too, for Figure 2; --norecord_runs "
    "skips that (and Figure 2), which on a CPU saves most of the time of those runs.",
)
flags.DEFINE_list(
    "metrics",
    None,
    "Metrics that pick k (default: those of tr(F), S_avg, S_worst the config records).",
)


def run(config, workdir: str, overrides, task: Task) -> dict:
    """One run of the pipeline: the config with `overrides`, on the pipeline's one task."""
    from earlyjax.train import train_and_evaluate

    run_config = config.copy_and_resolve_references()
    apply_overrides(run_config, overrides)
    return train_and_evaluate(run_config, workdir, task=task)


def signal_records(workdir: str) -> list[dict]:
    from earlyjax.metric_log import METRICS_FILE, read_records

    return [r for r in read_records(os.path.join(workdir, METRICS_FILE)) if r["kind"] == "record"]


def seed_mean_curves(per_seed: list[list[dict]], metrics) -> tuple[list[int], dict]:
    """(steps, {metric: mean over seeds at each step}) over the steps every seed recorded."""
    common = sorted(set.intersection(*({r["step"] for r in recs} for recs in per_seed)))
    means = {}
    for name in metrics:
        by_step = [{r["step"]: float(r[name]) for r in recs} for recs in per_seed]
        means[name] = [float(np.mean([b[s] for b in by_step])) for s in common]
    return common, means


def pick_k(steps, values, stabilization: dict) -> dict:
    """Algorithm 2 on one curve -> {"k": step or None, "reason": str}."""
    from earlyjax.stabilization import stabilization_point

    point = stabilization_point(values, steps, **stabilization)
    if point.stable and not point.step:
        return {"k": None, "reason": "stabilised at step 0: no k to unfreeze at"}
    return {"k": point.step if point.stable else None, "reason": point.reason}


def candidate_ks(record_config, max_k: int | None) -> list[int]:
    """The k a metric can pick: recording steps after 0 up to record.until (and max_k)."""
    top = record_config.until if max_k is None else min(record_config.until, max_k)
    return list(range(record_config.every, top + 1, record_config.every))


def random_ks(candidates: list[int], n: int) -> list[int]:
    """n distinct k drawn uniformly from `candidates` (fixed, so a rerun reuses the same runs)."""
    rng = np.random.default_rng(RANDOM_K_STREAM)
    return sorted(int(k) for k in rng.choice(np.asarray(candidates), size=n, replace=False))


@dataclasses.dataclass(frozen=True)
class Setting:
    """What the pipeline derives from the config and data before it trains anything."""

    metrics: tuple[str, ...]
    total_steps: int
    intervention: object  # earlyjax.interventions.Intervention
    max_k: int | None  # None: unfreeze.allow_late_release
    candidates: list[int]  # the k a metric can pick
    random_candidates: list[int]  # the k the random ones are drawn from


def plan(
    config,
    metrics,
    n_random: int,
    task: Task,
    intervention: str = "gradual_unfreezing",
    max_random_k: int | None = None,
):
    """Checks the pipeline's inputs (ValueError naming the fix) and derives its setting."""
    from earlyjax.plan import intervention_named, total_steps
    from earlyjax.validation import validate

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
    if not config.record.every:
        raise ValueError("the signal run needs recording: set --config.record.every=10, say")
    u, o = config.unfreeze, config.optimizer
    schedule_fields = {
        Field.UNFREEZE_K: u.k,
        Field.UNFREEZE_ADAPTIVE: u.adaptive,
        Field.UNFREEZE_HEAD_ONLY: u.head_only or None,
        Field.LR_SWITCH_STEP: o.lr_switch_step,
        Field.LR_SWITCH_ADAPTIVE: o.lr_switch_adaptive,
        Field.LR_SWITCH_HOLD: o.lr_switch_hold or None,
    }
    set_fields = [f"{k}={v}" for k, v in schedule_fields.items() if v is not None]
    if set_fields:
        raise ValueError(
            f"auto-k sets the schedule itself: unset {', '.join(set_fields)} in the config "
            "(e.g. --config.unfreeze.k=none)"
        )
    if intervention != "lr_switch" and o.lr_switch is not None:
        raise ValueError(
            f"optimizer.lr_switch={o.lr_switch!r} is a second intervention in every run: unset "
            "it, or pick its step with --intervention=lr_switch"
        )
    removed = intervention_named(intervention, config, task)
    signal_config = config.copy_and_resolve_references()
    apply_overrides(signal_config, removed.held_overrides())
    validate(signal_config)  # the config as the signal run has it (the others differ in k)
    steps = total_steps(config, task.num_train)
    max_k = None if u.allow_late_release else removed.max_fitting_k(steps)
    candidates = candidate_ks(config.record, max_k)
    pool = [k for k in candidates if max_random_k is None or k <= max_random_k]
    if n_random < 0 or n_random > len(pool):
        capped = "" if max_random_k is None else f" and --max_random_k={max_random_k}"
        raise ValueError(
            f"--n_random={n_random} distinct k need at least that many candidates, the "
            f"recording steps up to min(record.until, the largest k whose {removed.name} "
            f"schedule fits a {steps}-step run = {max_k}){capped}: {len(pool)}; lower "
            "--n_random or --config.record.every, or train longer"
        )
    return Setting(metrics, steps, removed, max_k, candidates, pool)


def refuse_late_k(setting: Setting, picked: dict) -> None:
    """A metric's k whose last release comes after the run's end stops the pipeline."""
    for name, p in picked.items():
        if p["k"] is not None and setting.max_k is not None and p["k"] > setting.max_k:
            raise ValueError(
                f"{name} stabilised at k={p['k']}, but {setting.intervention.name} at that k "
                f"is not over before the end of the {setting.total_steps}-step run (the largest "
                f"k that fits is {setting.max_k}): train longer, or set "
                "--config.unfreeze.allow_late_release=True to train with it anyway"
            )


def pipeline(
    config,
    out: str,
    *,
    seeds=(0,),
    n_random: int = 10,
    metrics=(),
    record_runs=True,
    intervention: str = "gradual_unfreezing",
    max_random_k: int | None = None,
    dataset=None,
):
    """Runs (or resumes) the whole pipeline; returns the summary written to `out/autok.json`
    (the schema `experiments.analysis.read_autok` reads) and writes Tables 2 and 6 and
    Figures 2 (with `record_runs`) and 6 to `out/analysis/`. The task (images or text,
    `earlyjax.train.build_task`) is built once, on `dataset` when given (tests), and shared by
    every run; the signal runs drop its OOD sets."""
    from earlyjax.train import build_task

    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must be distinct, got {seeds}")
    task = build_task(config, dataset)
    setting = plan(config, metrics, n_random, task, intervention, max_random_k)
    removed = setting.intervention
    stabilization = dict(config.stabilization)

    signal = (*removed.held_overrides(), ("total_steps", config.record.until))
    signal += ((Field.DATA_OOD_SOURCE, "none"),)
    no_ood = task.without_ood()
    curves = []
    for seed in seeds:
        signal_dir = os.path.join(out, f"seed={seed}", "signal")
        run(config, signal_dir, (("seed", seed), *signal), no_ood)
        curves.append(signal_records(signal_dir))
    steps, means = seed_mean_curves(curves, setting.metrics)
    picked = {}
    for name in setting.metrics:
        picked[name] = pick_k(steps, means[name], stabilization)
        picked[name]["per_seed"] = {
            str(seed): pick_k([r["step"] for r in recs], [r[name] for r in recs], stabilization)
            for seed, recs in zip(seeds, curves, strict=True)
        }
        print(f"{name}: k = {picked[name]['k']} ({picked[name]['reason']})")
    refuse_late_k(setting, picked)

    metric_ks = sorted({p["k"] for p in picked.values() if p["k"] is not None})
    chosen_random = random_ks(setting.random_candidates, n_random)
    runs = {"standard": None, **{f"k={k}": k for k in sorted(set(metric_ks + chosen_random))}}
    results: dict[str, dict] = {name: {"k": k, "id": {}, "ood": {}} for name, k in runs.items()}
    for seed in seeds:
        for name, k in runs.items():
            record = record_runs and (k is None or k in metric_ks)  # Figure 2's runs
            overrides = (("seed", seed), *removed.overrides_for_k(k))
            overrides += () if record else ((Field.RECORD_EVERY, 0),)
            res = run(config, os.path.join(out, f"seed={seed}", name), overrides, task)
            results[name]["id"][str(seed)] = res["id_accuracy"]
            results[name]["ood"][str(seed)] = res["ood_accuracy"]

    summary = {
        "version": analysis.AUTOK_VERSION,
        "setting": {
            "dataset": task.dataset_name,
            "task": config.task,
            "model": config.model.name,
            "ood_set": task.ood_set,
            "total_steps": setting.total_steps,
            "intervention": removed.name,
            "label": removed.label,
            "parts": removed.parts_left(removed.held()),  # blocks for GU, 1 for the LR switch
        },
        "seeds": seeds,
        "stabilization": stabilization,
        "k_rule": "Algorithm 2 on the seed-mean of the head-only runs' curves",
        "k_range": setting.candidates,
        "random_k_range": setting.random_candidates,
        "picked": picked,
        "random_k": chosen_random,
        "runs": results,
        "metric_runs": {n: f"k={p['k']}" for n, p in picked.items() if p["k"] is not None},
    }
    summary["winning_rate"] = {m: analysis.winning_rate(summary, m) for m in summary["metric_runs"]}
    write_summary(summary, out)
    write_outputs(summary, out, figure2=record_runs)
    return summary


def write_summary(summary: dict, out: str) -> None:
    """out/autok.json, atomically (the file `experiments.analysis.read_autok` reads)."""
    from earlyjax.metric_log import write_atomically  # noqa: PLC0415 (it imports jax)

    write_atomically(os.path.join(out, "autok.json"), json.dumps(summary, indent=2).encode())


def write_outputs(summary: dict, out: str, figure2: bool = True) -> None:
    """Tables 2 and 6 and Figures 2 (if the runs recorded) and 6 into out/analysis/, from the
    registry of outputs (`experiments.analysis.OUTPUTS`) and out/autok.json (`summary`)."""
    del summary  # the outputs read it back from out/autok.json
    analysis_dir = os.path.join(out, "analysis")
    for name in ("table2", *(("fig2",) if figure2 else ()), "fig6"):
        analysis.OUTPUTS[name].command([out], analysis_dir)  # as `analysis <name> OUT` writes it
    # Table 6 as `analysis all` writes it: its caption has no F1 note (it shows no scores).
    analysis.OUTPUTS["table6"].write_from([analysis.Source("", out)], analysis_dir)


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
        seeds = [int(s) for s in f.seeds]
        with cli.errors_as_one_line():
            summary = pipeline(
                f.config,
                f.out,
                seeds=seeds,
                n_random=f.n_random,
                metrics=tuple(f.metrics or ()),
                record_runs=f.record_runs,
                intervention=f.intervention,
                max_random_k=f.max_random_k,
            )
    except ValueError as e:  # a bad --seeds, --metrics or --n_random
        raise SystemExit(f"error: {e}") from None
    print(f"Table 2 ({summary['setting']['ood_set']}):")
    print(analysis.to_markdown(analysis.table2(summary)))
    print("\nTable 6:")
    print(analysis.to_markdown(analysis.table6(summary)))
    figures = "Figures 2 and 6" if f.record_runs else "Figure 6"
    print(f"\n(Tables 2 and 6, {figures} in {os.path.join(f.out, 'analysis')})")


def run_cli() -> None:
    sys.argv = cli.rewrite_config_argument(sys.argv)
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run_cli()
