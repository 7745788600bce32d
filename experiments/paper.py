"""Every run the paper's tables and figures need, as data, and one command to run them.

    python -m experiments.paper --grid=paper --out=runs/paper --dry_run   # runs, device hours
    python -m experiments.paper --grid=paper --out=runs/paper             # run (or resume) all
    python -m experiments.paper --grid=paper --out=runs/paper --only=cifar10_rn18/lr_switch
    python -m experiments.analysis all runs/paper     # every table and figure whose runs exist

A grid (`experiments/grids/<name>.py`, whose `get_grid()` returns a list of `Study`) names each
study: a sweep (`experiments.sweep`'s grid of k, seeds, LR scales and LR switches) or an auto-k
pipeline (`experiments.autok`) of one config, run into `OUT/<study name>/`, and the tables and
figures it feeds (`OUTPUTS`: the registry of `experiments.analysis`). `OUT/paper.json` records
the grid, so that `analysis all` knows what to expect: it writes each output whose runs (those
it draws, `Output.uses`) have finished and names the missing runs of the others. Finished runs
are skipped and interrupted ones resume, so a killed command is simply started again.

Grids: `paper` (Tables 1, 2, 3 and 6 and Figures 1-3 and 5-8 and 10 on MNIST, CIFAR-10 and
CIFAR-100, as the paper ran them; needs the data sets), `paper_xlmr` (the transformer half:
Tables 4 and 7, Figures 4 and 9; needs an XLM-R checkpoint in `XLMR_DIR` and the tfds text
sets) and `digits` (the image outputs at a toy scale on the embedded digits: about 11 minutes
on 2 CPU cores, the end-to-end test).

`--dry_run` prints each study's runs and optimizer steps and an estimate of device hours: the
steps times a step time measured here, on this machine's devices, with the config's model and
batch on random inputs (or `--step_seconds`). It counts training steps only: evaluation and
recording are not in it (recording every 10 steps to 2000 roughly doubles a recorded run on a
GPU and costs several times its training on a CPU: `benchmarks/metrics.py` measures it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from earlyjax.config import Field

# The paper folder's model (Study, paper.json, missing runs, `analysis all`) and the registry of
# outputs live in experiments.analysis; they are re-exported here, where grids and users find them.
from experiments.analysis.registry import OUTPUTS  # noqa: F401
from experiments.analysis.studies import (  # noqa: F401
    BRANCHED_KINDS,
    PAPER_FILE,
    Study,
    finished_runs,
    load_module,
    missing_runs,
    read_paper_file,
    study_branched_runs,
    study_config,
    sweep_points,
    write_all,
    write_paper_file,
)

GRID_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grids")


# --------------------------------------------------------------------------------------------
# Grids and configs


def load_grid(name: str) -> list[Study]:
    """The studies of grid `name` (a file in experiments/grids/, or a path to one)."""
    path = (
        name if os.path.exists(name) else os.path.join(GRID_DIR, name.removesuffix(".py") + ".py")
    )
    if not os.path.exists(path):
        known = sorted(f[:-3] for f in os.listdir(GRID_DIR) if f.endswith(".py") and f[0] != "_")
        raise SystemExit(f"grid {name!r} not found: give a path or one of {', '.join(known)}")
    try:
        studies = list(load_module(path, "earlyjax_grid").get_grid())
    except Exception as e:  # a grid is user code: say which file and what, not a traceback
        raise SystemExit(f"grid {path}: {type(e).__name__}: {e}") from None
    names = [s.name for s in studies]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SystemExit(f"grid {name}: study names {twice} are used twice")
    return studies


# --------------------------------------------------------------------------------------------
# Running


def run_study(study: Study, out: str) -> None:
    """Runs (or resumes) one study into `out/<study.name>/`."""
    from experiments import autok, basin, branched, lottery, sweep

    config = study_config(study)
    folder = os.path.join(out, study.name)
    print(f"== {study.name} ({study.kind}, {study.config})", flush=True)
    if study.kind in BRANCHED_KINDS:
        runs = study_branched_runs(study, config)  # checks the study before writing
        if study.kind == "basin":
            basin.check_pretrained(study)
        if study.needs_accelerator:
            check_accelerator(study)
        (basin if study.kind == "basin" else lottery).write_design(folder, study)
        branched.run_all(config, folder, runs)
        return
    if study.kind == "autok":
        autok.pipeline(
            config,
            folder,
            seeds=study.seeds,
            n_random=study.n_random,
            intervention=study.intervention,
            max_random_k=study.max_random_k,
        )
        return
    points = sweep_points(study, config)
    sweep.write_manifest(folder, sweep.manifest(config, points))
    sweep.run_sequential(config, folder, points)


def check_accelerator(study: Study) -> None:
    """ValueError (one line) on a machine whose JAX sees only CPUs, for a study that needs a
    GPU or TPU (e.g. ResNet-50 at 224 pixels)."""
    import jax

    if jax.default_backend() == "cpu":
        raise ValueError(
            f"study {study.name} needs a GPU or TPU (its config {study.config} trains for days "
            "on a CPU) and JAX sees only CPUs here: run it where one is (pip install -e "
            '".[cuda]"), or print its runs and device hours with --dry_run'
        )


# --------------------------------------------------------------------------------------------
# Dry run: runs, steps and device hours


def study_runs(study: Study, config, num_train: int) -> list[tuple[str, int]]:
    """(run, optimizer steps) of each run of the study. For auto-k, the most it trains: each
    seed's signal run (record.until steps), standard training, the random k and one k per
    metric (fewer when metrics pick the same k, a random one, or none)."""
    from earlyjax.plan import total_steps
    from experiments import autok

    steps = total_steps(config, num_train)
    if study.kind == "sweep":
        return [(p.name, steps) for p in sweep_points(study, config)]
    if study.kind in BRANCHED_KINDS:
        return branched_run_steps(study, config)
    metrics = [m for m in autok.SIGNAL_METRICS if m in config.record.metrics]
    runs = []
    for seed in study.seeds:
        runs.append((f"seed={seed}/signal", min(config.record.until, steps)))
        trained = ["standard", *(f"random {i}" for i in range(study.n_random)), *metrics]
        runs += [(f"seed={seed}/{name}", steps) for name in trained]
    return runs


def branched_run_steps(study: Study, config) -> list[tuple[str, int]]:
    """(run, optimizer steps) of a lottery or basin study: a branch that continues its
    source's step trains from its branch step on (from an end: the rest of the run); one
    that starts at step 0 (fine-tuning, a cycle) trains its own length."""
    from earlyjax.plan import total_steps
    from earlyjax.train import task_num_train
    from experiments import branched

    out, length, sizes = [], {}, {}
    for run in study_branched_runs(study, config):
        cfg = branched.run_config(branched.base_config(config, run), run, "")
        key = branched.task_key(cfg)
        if key not in sizes:
            sizes[key] = task_num_train(cfg)
        length[run.name] = total_steps(cfg, sizes[key])
        start = 0
        if run.source is not None and cfg.branch.continue_step:
            start = length[run.source] if run.step == "end" else int(run.step)
        out.append((run.name, length[run.name] - start))
    return out


def measure_step_seconds(config, steps: int = 5) -> float:
    """Seconds per train step of the config's model, optimizer and batch on this machine's
    default devices, on random inputs of the data set's shape (after compiling and one step)."""
    import jax
    import jax.numpy as jnp

    from earlyjax.data import IMAGE_SHAPE, NUM_CLASSES
    from earlyjax.data.base import synthetic_dataset
    from earlyjax.tasks import TASKS
    from earlyjax.train import make_train_step, setup
    from experiments.cli import apply_overrides

    name = config.data.name
    n = max(config.batch_size, config.record.set_size)  # the plan checks the metric set fits
    if config.task == "image_classification":
        data, task = synthetic_dataset(IMAGE_SHAPE[name], NUM_CLASSES[name], n, name), None
        fields = {"image": data.train.images, "label": data.train.labels}
    else:  # XLM-R: the checkpoint's architecture on random tokens
        data, task = None, TASKS[config.task].random_like(config, n)
        fields = task.train
    timing = config.copy_and_resolve_references()
    # The same model, optimizer and batch as a plain run (gates and LR switch are data in the
    # same compiled step): no schedule to check, no recording, no OOD data to find.
    plain = (("total_steps", 10**6), (Field.RECORD_EVERY, 0), (Field.FINAL_METRICS, ()))
    plain += (
        (Field.UNFREEZE_K, None),
        (Field.UNFREEZE_ADAPTIVE, None),
        (Field.UNFREEZE_HEAD_ONLY, False),
    )
    plain += ((Field.LR_SWITCH, None), (Field.LR_SWITCH_STEP, None))
    plain += ((Field.LR_SWITCH_ADAPTIVE, None), (Field.LR_SWITCH_HOLD, False))
    apply_overrides(timing, (*plain, (Field.DATA_OOD_SOURCE, "none")))
    run_setup, state = setup(timing, data, task=task)
    step = make_train_step(run_setup, state)
    batch = {k: jnp.asarray(v[: config.batch_size]) for k, v in fields.items()}
    state, _ = step(state, batch)
    jax.block_until_ready(state)
    start = time.perf_counter()
    for _ in range(steps):
        state, stats = step(state, batch)
    jax.block_until_ready((state, stats))
    return (time.perf_counter() - start) / steps


def dry_run(studies: Sequence[Study], out: str, step_seconds: float | None) -> None:
    """Prints each study's runs (done / to do), steps and estimated device hours, and totals."""
    import jax

    from earlyjax.train import task_num_train

    device = f"{jax.default_backend()} ({jax.devices()[0].device_kind}) x{jax.device_count()}"
    measured: dict[tuple, float] = {}
    total_runs = total_todo = 0
    total_hours = todo_hours = 0.0
    w = max(len(s.name) for s in studies)
    print(f"{'study':<{w}} {'kind':<6} {'runs':>5} {'to do':>6} {'steps':>10} {'s/step':>8} "
          f"{'hours':>8}")  # fmt: skip
    for study in studies:
        config = study_config(study)
        key = (config.data.name, config.model.name, config.model.width, config.batch_size)
        if step_seconds is None and key not in measured:
            measured[key] = measure_step_seconds(config)
        seconds = step_seconds if step_seconds is not None else measured[key]
        runs = study_runs(study, config, task_num_train(config))
        done = finished_runs(study, out, [name for name, _ in runs])
        todo = [(name, n) for name, n in runs if name not in done]
        hours = sum(n for _, n in runs) * seconds / 3600
        total_runs, total_todo = total_runs + len(runs), total_todo + len(todo)
        total_hours += hours
        todo_hours += sum(n for _, n in todo) * seconds / 3600
        at_most = "<=" if study.kind == "autok" else "  "
        print(
            f"{study.name:<{w}} {study.kind:<6} {at_most}{len(runs):>3} {len(todo):>6} "
            f"{sum(n for _, n in runs):>10} {seconds:>8.3f} {hours:>8.2f}"
        )
    source = "given (--step_seconds)" if step_seconds is not None else f"measured on {device}"
    bound = "at most " if any(s.kind == "autok" for s in studies) else ""
    print(
        f"total: {bound}{total_runs} runs ({total_todo} to do), {total_hours:.2f} device hours "
        f"({todo_hours:.2f} to do); step times {source}; training steps only (no evaluation "
        "or recording)"
    )


# --------------------------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--grid", default="paper", help="a grid in experiments/grids/ or a path")
    p.add_argument("--out", required=True, help="the folder of all the grid's runs")
    p.add_argument("--only", default="", help="comma-separated study names to run")
    p.add_argument("--dry_run", action="store_true", help="print runs and device hours; exit")
    p.add_argument(
        "--step_seconds", type=float, help="seconds per train step for --dry_run (else measured)"
    )
    args = p.parse_args(argv)
    studies = load_grid(args.grid)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(names) - {s.name for s in studies})
        if unknown:
            raise SystemExit(
                f"--only {unknown}: not studies of grid {args.grid}; its studies are "
                f"{', '.join(s.name for s in studies)}"
            )
        selected = [s for s in studies if s.name in names]
    else:
        selected = studies
    from experiments import cli

    try:
        with cli.errors_as_one_line():
            if args.dry_run:
                dry_run(selected, args.out, args.step_seconds)
                return
            cli.enable_compilation_cache()
            write_paper_file(args.out, args.grid, studies)
            for study in selected:
                run_study(study, args.out)
    except ValueError as e:  # a study's inputs (seeds, n_random, metrics) that cannot work
        raise SystemExit(f"error: {e}") from None
    print(f"done: {len(selected)} studies in {args.out}; tables and figures: "
          f"python -m experiments.analysis all {args.out}")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
