"""Studies made of runs that branch from one another (`earlyjax.branch`): the lottery study
(`experiments.lottery`, Frankle et al. 2020) and the basin study (`experiments.basin`,
Sadrtdinov et al. 2023). Each lists its runs as `BranchedRun`s, every run after the runs it
starts from; `run_all` trains them in that order into the study's folder, beside the study's
design file, which the analysis reads. Finished runs are skipped and interrupted ones
resume, so a killed study is started again with the same command.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

from earlyjax.config import Field
from experiments.cli import apply_overrides


@dataclass(frozen=True)
class BranchedRun:
    """One run of a study: its folder (relative to the study's) and config overrides;
    `source` and `prune_from` name other runs of the study (relative folders) or are None.
    `config` is the config file of the run (None: the study's)."""

    name: str
    overrides: tuple[tuple[str, object], ...] = ()
    source: str | None = None
    step: str = "end"
    prune_from: str | None = None
    config: str | None = None


def run_config(config, run: BranchedRun, folder: str):
    """The config of `run`: `config` (the study's, or the run's own) with the run's overrides
    and its branch's folders."""
    out = config.copy_and_resolve_references()
    apply_overrides(out, run.overrides)
    if run.source is not None:
        apply_overrides(
            out,
            (
                (Field.BRANCH_SOURCE, os.path.join(folder, run.source)),
                (Field.BRANCH_STEP, run.step),
            ),
        )
    if run.prune_from is not None:
        apply_overrides(out, ((Field.BRANCH_PRUNE_FROM, os.path.join(folder, run.prune_from)),))
    return out


def base_config(study_config, run: BranchedRun):
    """The config a run starts from: the study's, or the run's own config file."""
    if run.config is None:
        return study_config
    from experiments.analysis.studies import load_module
    from experiments.cli import resolve_config_path

    return load_module(resolve_config_path(run.config), "earlyjax_run_config").get_config()


def write_design(folder: str, file_name: str, content: dict) -> None:
    """`folder/file_name` (the study's design); a folder that holds another design is
    refused."""
    from earlyjax.metric_log import write_atomically

    path = os.path.join(folder, file_name)
    content = json.loads(json.dumps(content))
    if os.path.exists(path):
        with open(path) as f:
            if json.load(f) != content:
                raise SystemExit(f"{folder} holds another study design ({path}); use a fresh --out")
        return
    os.makedirs(folder, exist_ok=True)
    write_atomically(path, json.dumps(content, indent=2).encode())


def task_key(config) -> tuple:
    """Runs whose configs give the same key train on one task (built once, shared)."""
    seeded = config.data.pretext == "random_labels"  # its labels are drawn from the seed
    data, model = config.data.to_json(sort_keys=True), config.model.to_json(sort_keys=True)
    return config.task, data, model, config.seed if seeded else None


def run_all(config, folder: str, runs: Sequence[BranchedRun]) -> None:
    """Runs (or resumes) `runs` in order into `folder`; runs on the same task share it."""
    from earlyjax.train import RESULTS_FILE, build_task, train_and_evaluate

    tasks = {}
    for i, run in enumerate(runs):
        workdir = os.path.join(folder, run.name)
        if os.path.exists(os.path.join(workdir, RESULTS_FILE)):
            print(f"[{i + 1}/{len(runs)}] {run.name}: done, skipped")
            continue
        print(f"[{i + 1}/{len(runs)}] {run.name}", flush=True)
        cfg = run_config(base_config(config, run), run, folder)
        key = task_key(cfg)
        if key not in tasks:
            tasks[key] = build_task(cfg)
        train_and_evaluate(cfg, workdir, task=tasks[key])
