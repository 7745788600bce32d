"""Every run the paper's tables and figures need, as data, and one command to run them.

    python -m experiments.paper --grid=paper --out=runs/paper --dry_run   # runs, device hours
    python -m experiments.paper --grid=paper --out=runs/paper             # run (or resume) all
    python -m experiments.paper --grid=paper --out=runs/paper --only=cifar10_rn18/lr_switch
    python -m experiments.analysis all runs/paper     # every table and figure whose runs exist

A grid (`experiments/grids/<name>.py`, whose `get_grid()` returns a list of `Study`) names each
study: a sweep (`experiments.sweep`'s grid of k, seeds, LR scales and LR switches) or an auto-k
pipeline (`experiments.autok`) of one config, run into `OUT/<study name>/`, and the tables and
figures it feeds (`OUTPUTS`). `OUT/paper.json` records the grid, so that `analysis all` knows
what to expect: it writes each output whose runs (those it draws, `RUNS_USED`) have finished
and names the missing runs of the others. Finished runs are skipped and interrupted ones
resume, so a killed command is simply started again.

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
import dataclasses
import importlib.util
import json
import os
import sys
import time
from collections.abc import Sequence

from earlyjax.config import Field

GRID_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grids")
PAPER_FILE = "paper.json"

# Every output `analysis all` writes, and what it is drawn from.
OUTPUTS = {
    "table1": "Table 1: standard vs GU at each k, lr_d and 0.1·lr_d (sweeps)",
    "fig1": "Figure 1: ΔID and ΔOOD vs k, log x (sweeps)",
    "fig2": "Figure 2: tr(F), S_avg, S_worst over the early period, lr_d (recorded sweeps)",
    "fig10": "Figure 10: Figure 2 at 0.1·lr_d (recorded sweeps)",
    "fig7": "Figure 7: feature rank before the head over the early period (recorded sweeps)",
    "fig5": "Figure 5: final-solution λ_max, S_avg, S_worst, feature λ_max vs OOD (sweeps)",
    "table3": "Table 3: LR switches vs constant lr_d and 0.1·lr_d (sweeps)",
    "fig3": "Figure 3: S_avg through an LR switch (recorded sweeps)",
    "fig8": "Figure 8: tr(F), S_avg, S_worst through an LR switch (recorded sweeps)",
    "table2": "Table 2: GU with each metric's k vs random k, winning rate (auto-k)",
    "table6": "Table 6: the k each metric picked (auto-k)",
    "fig6": "Figure 6: the signal curves and the picked k (auto-k)",
    "table3_autok": "Table 3's extra rows (§7.1): the LR switch step from each metric (auto-k)",
    "table4": "Table 4: XLM-R, standard vs GU with tr(F)'s k, per language (auto-k, nli + qa)",
    "table7": "Table 7: Table 4 with every metric's k (auto-k, nli + qa)",
    "fig4": "Figure 4: XLM-R's tr(F), S_avg, |S_worst| on MNLI (auto-k, nli)",
    "fig9": "Figure 9: Figure 4 on SQuAD (auto-k, qa)",
}


@dataclasses.dataclass(frozen=True)
class Study:
    """One sweep or auto-k pipeline of one config, run into `<out>/<name>/`.

    A sweep trains the cross product of `k` (removal steps of `intervention`; None = standard
    training), `seeds`, `lr_scale` and `lr_switch` ((direction, step) pairs), as
    `experiments.sweep`; an auto-k study runs `experiments.autok` with `seeds`, `n_random`,
    `max_random_k` and `intervention`. `overrides` are dotted config fields set in every run;
    `outputs` the keys of `OUTPUTS` the study's runs feed.
    """

    name: str
    config: str
    outputs: tuple[str, ...]
    kind: str = "sweep"
    seeds: tuple[int, ...] = (0,)
    k: tuple[int | None, ...] = ()
    lr_scale: tuple[float, ...] = ()
    lr_switch: tuple[tuple[str, int], ...] = ()
    intervention: str = "gradual_unfreezing"
    n_random: int = 10
    max_random_k: int | None = None
    overrides: tuple[tuple[str, object], ...] = ()

    def __post_init__(self):
        if self.kind not in ("sweep", "autok"):
            raise ValueError(f"study {self.name}: kind {self.kind!r} is not 'sweep' or 'autok'")
        unknown = sorted(set(self.outputs) - set(OUTPUTS))
        if unknown:
            raise ValueError(
                f"study {self.name}: unknown outputs {unknown}; known: {list(OUTPUTS)}"
            )
        if self.kind == "autok" and (self.k or self.lr_scale or self.lr_switch):
            raise ValueError(f"study {self.name}: an auto-k study picks k itself: drop k/lr axes")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Study:
        tuples = ("outputs", "seeds", "k", "lr_scale")
        fields = {k: tuple(v) if k in tuples else v for k, v in d.items()}
        fields["lr_switch"] = tuple(tuple(x) for x in d.get("lr_switch", ()))
        fields["overrides"] = tuple(tuple(x) for x in d.get("overrides", ()))
        return cls(**fields)


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
        studies = list(_load_module(path, "earlyjax_grid").get_grid())
    except Exception as e:  # a grid is user code: say which file and what, not a traceback
        raise SystemExit(f"grid {path}: {type(e).__name__}: {e}") from None
    names = [s.name for s in studies]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SystemExit(f"grid {name}: study names {twice} are used twice")
    return studies


def _load_module(path: str, module_name: str):
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def study_config(study: Study):
    """The study's config file (experiments/configs/ or a path) with its overrides applied."""
    from experiments.cli import apply_overrides, resolve_config_path

    config = _load_module(resolve_config_path(study.config), "earlyjax_study_config").get_config()
    apply_overrides(config, study.overrides)
    return config


def sweep_points(study: Study, config) -> list:
    """The runs of a sweep study (`experiments.sweep.Point`), named as the sweep names them."""
    from experiments import sweep

    intervention = sweep.intervention_for(study.intervention, config)
    return sweep.expand_grid(study.k, study.seeds, study.lr_scale, study.lr_switch, intervention)


# --------------------------------------------------------------------------------------------
# Running


def run_study(study: Study, out: str) -> None:
    """Runs (or resumes) one study into `out/<study.name>/`."""
    from experiments import autok, sweep

    config = study_config(study)
    folder = os.path.join(out, study.name)
    print(f"== {study.name} ({study.kind}, {study.config})", flush=True)
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


def write_paper_file(out: str, grid: str, studies: Sequence[Study]) -> None:
    """`out/paper.json`: the grid, for `analysis all`. A folder keeps one grid (its name and
    studies); a different one is refused, as `experiments.sweep` refuses a different sweep."""
    path = os.path.join(out, PAPER_FILE)
    content = json.loads(json.dumps({"grid": grid, "studies": [s.to_json() for s in studies]}))
    if os.path.exists(path):
        with open(path) as f:
            if json.load(f) != content:
                raise SystemExit(
                    f"{out} holds a different grid ({path}); use a fresh --out, or rerun the "
                    "command that made it"
                )
        return
    os.makedirs(out, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(content, f, indent=2)
    os.replace(path + ".tmp", path)


def read_paper_file(out: str) -> list[Study]:
    path = os.path.join(out, PAPER_FILE)
    if not os.path.exists(path):
        raise SystemExit(
            f"{path} not found: `analysis all` reads the grid that `python -m experiments.paper "
            f"--out={out}` writes there"
        )
    try:
        with open(path) as f:
            return [Study.from_json(s) for s in json.load(f)["studies"]]
    except (ValueError, TypeError, KeyError) as e:
        raise SystemExit(
            f"{path} is not a grid this version reads ({type(e).__name__}: {e}); rerun "
            f"`python -m experiments.paper --out={out}` with its grid to rewrite it"
        ) from None


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
    metrics = [m for m in autok.SIGNAL_METRICS if m in config.record.metrics]
    runs = []
    for seed in study.seeds:
        runs.append((f"seed={seed}/signal", min(config.record.until, steps)))
        trained = ["standard", *(f"random {i}" for i in range(study.n_random)), *metrics]
        runs += [(f"seed={seed}/{name}", steps) for name in trained]
    return runs


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
        done = _finished(study, out, [name for name, _ in runs])
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


def _finished(study: Study, out: str, names: Sequence[str]) -> set[str]:
    """Which of `names` (the study's runs, as `study_runs` names them) have finished. An
    auto-k study's runs past its signal runs count once its autok.json exists."""
    from earlyjax.train import RESULTS_FILE

    folder = os.path.join(out, study.name)
    if study.kind == "autok":
        if os.path.exists(os.path.join(folder, "autok.json")):
            return set(names)
        names = [f"seed={s}/signal" for s in study.seeds]
    return {n for n in names if os.path.exists(os.path.join(folder, n, RESULTS_FILE))}


def missing_runs(study: Study, out: str, used=None) -> list[str]:
    """The runs of `study` under `out` that have not finished ([] when all have), of those
    `used` selects (a predicate on a run's `k`, `adaptive`, `lr_scale`, `lr_switch`; None:
    all). A sweep's runs are known from the grid; an auto-k study's only once its signal runs
    have picked the k, so until its autok.json exists it is named as a whole."""
    from experiments.cli import apply_overrides

    config = study_config(study)
    if study.kind == "autok":
        if os.path.exists(os.path.join(out, study.name, "autok.json")):
            return []
        return [f"{study.name}/ (the auto-k pipeline has not finished: no autok.json)"]
    points = sweep_points(study, config)
    done = _finished(study, out, [p.name for p in points])
    missing = []
    for point in points:
        run = config.copy_and_resolve_references()
        apply_overrides(run, point.overrides)
        fields = {
            "k": run.unfreeze.k,
            "adaptive": run.unfreeze.adaptive,
            "lr_scale": run.optimizer.lr_scale,
            "lr_switch": run.optimizer.lr_switch,
        }
        if point.name not in done and (used is None or used(fields)):
            missing.append(f"{study.name}/{point.name}")
    return missing


# --------------------------------------------------------------------------------------------
# Every table and figure (`python -m experiments.analysis all DIR`)


def write_all(paper_dir: str, out_dir: str) -> list[str]:
    """Writes every output in `OUTPUTS` whose studies (in `paper_dir/paper.json`) have finished
    the runs it uses (`RUNS_USED`), to out_dir; returns one line per output: the files written,
    or why not (the missing runs, by name; no study in the grid feeds it; an error)."""
    studies = read_paper_file(paper_dir)
    writers = _writers()
    lines = []
    for output, description in OUTPUTS.items():
        feeding = [s for s in studies if output in s.outputs]
        if not feeding:
            lines.append(f"{output}: not written: no study of the grid feeds it ({description})")
            continue
        used = RUNS_USED.get(output)
        try:
            missing = [run for s in feeding for run in missing_runs(s, paper_dir, used)]
            if missing:
                more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
                lines.append(
                    f"{output}: not written: {len(missing)} runs missing: "
                    f"{', '.join(missing[:5])}{more} "
                    f"(python -m experiments.paper --out={paper_dir})"
                )
                continue
            paths = writers[output](feeding, paper_dir, out_dir, used)
        except (ValueError, OSError, SystemExit) as e:
            lines.append(f"{output}: not written: {e}")
            continue
        lines.append(f"{output}: " + ", ".join(os.path.relpath(p, out_dir) for p in paths))
    return lines


def _at_lr_d(r: dict) -> bool:
    return r["lr_scale"] == 1.0


def _below_lr_d(r: dict) -> bool:
    return r["lr_scale"] != 1.0


def _no_gu_at_lr_d(r: dict) -> bool:
    return r["k"] is None and r["adaptive"] is None and r["lr_scale"] == 1.0


def _constant_or_switch(r: dict) -> bool:
    return r["lr_switch"] is not None or (r["k"] is None and r["adaptive"] is None)


# The runs of its studies an output uses (default: all), as a predicate on a run's fields.
RUNS_USED = {
    "fig2": _at_lr_d,
    "fig7": _at_lr_d,
    "fig10": _below_lr_d,
    "fig3": _no_gu_at_lr_d,  # constant lr_d and the LR switches
    "fig8": _no_gu_at_lr_d,
    "table3": _constant_or_switch,
}


def _runs(studies: Sequence[Study], paper_dir: str, used=None) -> list[dict]:
    """The finished runs of the sweep studies (`analysis.load_runs`), named `study/run`, that
    `used` selects (None: all)."""
    from experiments import analysis

    runs = []
    for study in studies:
        for r in analysis.load_runs(os.path.join(paper_dir, study.name)):
            r["run"] = f"{study.name}/{r['run']}"
            if used is None or used(r):
                runs.append(r)
    if not runs:
        raise ValueError(f"no run of {[s.name for s in studies]} is of the kind it needs")
    return runs


def _table(name: str, rows: list[dict], out_dir: str) -> list[str]:
    from experiments import analysis

    analysis.write_table(rows, out_dir, name)
    return [os.path.join(out_dir, f"{name}.{ext}") for ext in ("md", "csv", "tex")]


def _autok_tables(name: str, studies: Sequence[Study], paper_dir: str, out_dir: str):
    from experiments import analysis

    rows = []
    for study in studies:
        summary = analysis.read_autok(os.path.join(paper_dir, study.name))
        rows += analysis.table6(summary) if name == "table6" else analysis.table2(summary)
    return _table(name, rows, out_dir)


def _figure6(studies: Sequence[Study], paper_dir: str, out_dir: str) -> list[str]:
    from experiments import analysis

    paths = []
    for study in studies:
        stem = "fig6" if len(studies) == 1 else "fig6_" + study.name.replace("/", "_")
        paths += analysis.figure6(os.path.join(paper_dir, study.name), out_dir, stem)
    return paths


def _writers() -> dict:
    """output -> writer(studies, paper_dir, out_dir, used) -> the paths written."""
    from experiments import analysis as a

    return {
        "table1": lambda st, d, o, u: _table("table1", a.table1(_runs(st, d, u)), o),
        "fig1": lambda st, d, o, u: a.figure1(_runs(st, d, u), o),
        "fig2": lambda st, d, o, u: a.dynamics_figures(_runs(st, d, u), o, "fig2"),
        "fig10": lambda st, d, o, u: a.dynamics_figures(_runs(st, d, u), o, "fig10"),
        "fig7": lambda st, d, o, u: a.dynamics_figures(
            _runs(st, d, u), o, "fig7", ("feature_rank",), normalise=False
        ),
        "fig5": lambda st, d, o, u: a.figure5(_runs(st, d, u), o),
        "table3": lambda st, d, o, u: _table("table3", a.table3(_runs(st, d, u)), o),
        "fig3": lambda st, d, o, u: a.dynamics_figures(
            _runs(st, d, u), o, "fig3", ("avg_sharpness",), mark_switch=True
        ),
        "fig8": lambda st, d, o, u: a.dynamics_figures(
            _runs(st, d, u), o, "fig8", a.DYNAMICS_METRICS, mark_switch=True
        ),
        "table2": lambda st, d, o, u: _autok_tables("table2", st, d, o),
        "table6": lambda st, d, o, u: _autok_tables("table6", st, d, o),
        "fig6": lambda st, d, o, u: _figure6(st, d, o),
        "table3_autok": lambda st, d, o, u: _autok_tables("table3_autok", st, d, o),
        "table4": lambda st, d, o, u: _table("table4", a.table7(_folders(st, d), ("fisher",)), o),
        "table7": lambda st, d, o, u: _table("table7", a.table7(_folders(st, d)), o),
        "fig4": lambda st, d, o, u: a.figure4(_folders(st, d)[0], o, "fig4"),
        "fig9": lambda st, d, o, u: a.figure4(_folders(st, d)[0], o, "fig9"),
    }


def _folders(studies: Sequence[Study], paper_dir: str) -> list[str]:
    return [os.path.join(paper_dir, s.name) for s in studies]


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
