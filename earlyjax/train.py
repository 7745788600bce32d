"""The training loop: pure, module-level train steps and `train_and_evaluate`, which reads
top to bottom.

    validate(config)                             # earlyjax/validation.py: every value, once
    task = ImageClassification.build(...)       # earlyjax/tasks: model, data, loss, evaluators
    plan = make_plan(config, task, mesh)         # earlyjax/plan.py: data checks, every value
    optimizer = build_optimizer(..., plan.schedules)  # earlyjax/interventions.py
    for each step: state = train_step(state, batch); then the due periodic actions
                                                 # earlyjax/periodic.py
    results.json from task.final_results

`train_and_evaluate(config, workdir)` resumes from the newest intact checkpoint in `workdir`,
trains, evaluates on the ID test set and every OOD split, and writes `results.json`.
Workdir layout: `config.json` (the config the run was started with), `metrics.jsonl`
(append-only records), `tb/` (TensorBoard events, rebuilt from the log), `checkpoints/<step>/`,
`results.json`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh
from tqdm import tqdm

from earlyjax import branch, freezing, parallel
from earlyjax.adaptive import AdaptiveRemoval
from earlyjax.checkpoint import Checkpointer, CheckpointError
from earlyjax.config import ConfigError, differing_fields
from earlyjax.data import load_dataset
from earlyjax.data.base import Dataset
from earlyjax.interventions import build_optimizer
from earlyjax.metric_log import FINAL_KIND, MetricLog, RunFileError, read_json, write_atomically
from earlyjax.periodic import (
    Checkpoint,
    EvaluateID,
    PeriodicAction,
    Record,
    RemoveAdaptively,
    ReportTrain,
    Run,
    StopAt,
    TrainingDiverged,
    TrainState,
)
from earlyjax.plan import RunPlan, make_plan, total_steps
from earlyjax.pruning import apply_mask, density, layer_densities
from earlyjax.recording import make_recorder
from earlyjax.tasks import TASKS, ImageClassification, Task
from earlyjax.tasks.image_classification import ModelDoesNotFit
from earlyjax.validation import check_task_name, validate, validate_task
from earlyjax.workdir_lock import workdir_lock

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"

__all__ = [
    "Interrupted",
    "Setup",
    "StopAt",
    "TrainState",
    "TrainingDiverged",
    "format_results",
    "make_train_step",
    "setup",
    "total_steps",
    "train_and_evaluate",
    "train_step",
]


class Interrupted(SystemExit):
    """SIGTERM or SIGINT stopped training after a checkpoint at `step`; exit code 128 + signum."""

    def __init__(self, signum: int, step: int):
        super().__init__(128 + signum)
        self.signum, self.step = signum, step


class _StopSignals:
    """While installed (main thread only), SIGTERM and SIGINT set `signum` instead of stopping
    the process, for the train loop to check after each step; the same signal a second time
    stops at once (the previous handlers' behaviour)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == self.signum:
            self.restore()
            signal.raise_signal(signum)
        elif self.signum is None:
            self.signum = signum


class Setup(NamedTuple):
    """The static pieces of a run, built once: the task, the plan and the optimizer."""

    task: Task
    plan: RunPlan
    optimizer: optax.GradientTransformationExtraArgs


def build_task(config: ml_collections.ConfigDict, dataset: Dataset | None = None) -> Task:
    """The task of the config: image classification on `dataset` (loaded from the config when
    None), or NLI or QA with XLM-R + LoRA, which load their own data. The fields it reads are
    checked first (`earlyjax.validation.validate_task`: ConfigError), so a bad value is named
    before any data is read."""
    validate_task(config)
    return _build_task(config, dataset)


def _build_task(config: ml_collections.ConfigDict, dataset: Dataset | None) -> Task:
    """`build_task` for a config that `earlyjax.validation.validate` has checked."""
    if config.task != "image_classification":
        return TASKS[config.task].build(config)
    dataset = dataset if dataset is not None else load_dataset(config.data, checked=True)
    return ImageClassification.build(
        dataset,
        model=config.model.name,
        width=config.model.width,
        init=config.model.init,
        augment=config.data.augment,
        pretext=config.data.pretext,
        blur_factor=config.data.blur_factor,
        seed=config.seed,
        checkpoint=config.model.checkpoint,
    )


def task_blocks(config: ml_collections.ConfigDict) -> tuple[tuple[str, ...], Any]:
    """(blocks, head) of the config's task, without reading its data (sweeps, grids)."""
    check_task_name(config)
    return TASKS[config.task].blocks_for(config)


def task_num_train(config: ml_collections.ConfigDict) -> int:
    """Training examples of the config's data set (QA: SQuAD's windows), without reading
    the data where the size is known (`earlyjax.data.TRAIN_EXAMPLES`)."""
    from earlyjax.data import TRAIN_EXAMPLES

    if config.data.name in TRAIN_EXAMPLES and not config.data.get("classes"):
        return TRAIN_EXAMPLES[config.data.name]
    return build_task(config).num_train


def setup(
    config: ml_collections.ConfigDict,
    dataset: Dataset | None = None,
    mesh: Mesh | None = None,
    task: Task | None = None,
) -> tuple[Setup, TrainState]:
    """The task (`task`, or built from the config and `dataset`), the checked plan, the
    optimizer and the initial train state (deterministic in the seed); ConfigError for a
    config that cannot run on this data and mesh (`earlyjax.validation.validate` first)."""
    validate(config)
    return _setup(config, dataset, mesh, task)


def _setup(config, dataset, mesh, task) -> tuple[Setup, TrainState]:
    """`setup` for a validated config: nothing is checked twice."""
    task = task if task is not None else _build_task(config, dataset)
    plan = make_plan(config, task, mesh)
    init_key, rng = jax.random.split(jax.random.key(plan.seed))
    try:
        params, model_state = task.init(init_key)
    except ModelDoesNotFit as e:
        raise ConfigError(f"{config.model.name}: {e}") from None
    optimizer = build_optimizer(
        params,
        plan.schedules,
        lr=plan.lr,
        momentum=plan.momentum,
        weight_decay=plan.weight_decay,
        name=plan.optimizer,
        lr_schedule=plan.lr_schedule,
        num_steps=plan.num_steps,
        milestones=plan.milestones,
        gamma=plan.gamma,
        steps_per_epoch=plan.steps_per_epoch,
        warmup_steps=plan.warmup_steps,
    )
    # A pruned branch's state carries its mask (set when the branch is built: earlyjax.branch).
    mask = None
    if branch.is_pruned(config):
        mask = jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)
    state = TrainState(
        step=jnp.zeros([], jnp.int32),
        params=params,
        model_state=model_state,
        opt_state=optimizer.init(params),
        rng=jax.random.key_data(rng),
        mask=mask,
    )
    return Setup(task, plan, optimizer), state


def train_step(task: Task, optimizer, model_state_groups, state: TrainState, batch: dict):
    """One update: (state, batch) -> (state, {"loss", and the task's stats, e.g. accuracy}).

    Pure. The step's randomness is fold_in(rng, step). `model_state_groups` (group index per
    model-state leaf, or None) keeps the model state of still-frozen blocks as it was
    (unfreeze.freeze_bn_stats); otherwise every block's model state updates in train mode.
    With a mask (a pruned run) the forward pass sees the masked weights, so a pruned weight's
    gradient is exactly 0, and the updated weights are masked again.
    """
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

    def loss_fn(params):
        if state.mask is not None:
            params = apply_mask(params, state.mask)
        return task.loss(params, state.model_state, batch, key, train=True)

    (loss, (stats, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params, step=state.step)
    params = optax.apply_updates(state.params, updates)
    if state.mask is not None:
        params = apply_mask(params, state.mask)
    if model_state_groups is not None:
        release = freezing.get_release_steps(state.opt_state)
        live = freezing.trainable_mask(model_state_groups, release, state.step)
        model_state = jax.tree.map(jnp.where, live, model_state, state.model_state)
    new_state = TrainState(state.step + 1, params, model_state, opt_state, state.rng, state.mask)
    return new_state, {"loss": loss, **stats}


def make_train_step(run_setup: Setup, state: TrainState, mesh: Mesh | None = None) -> Callable:
    """`train_step` bound to the run's task and optimizer, jitted (the state is donated). With
    a `mesh` the batch comes split over its devices and the new state leaves replicated: data
    parallelism with global-batch BatchNorm statistics."""
    groups = None
    if run_setup.plan.freeze_model_state:
        groups = run_setup.plan.gradual_unfreezing.groups(state.model_state)
    step = functools.partial(train_step, run_setup.task, run_setup.optimizer, groups)
    if mesh is None:
        return jax.jit(step, donate_argnums=0)
    return jax.jit(step, donate_argnums=0, out_shardings=parallel.replicated(mesh))


def periodic_actions(run_setup: Setup, mesh: Mesh | None) -> list[PeriodicAction]:
    """The run's periodic actions, in the order they run after a step (earlyjax.periodic)."""
    plan = run_setup.plan
    actions: list[PeriodicAction] = [ReportTrain(every=plan.log_every, at_end=True)]
    if plan.record is not None:
        unfreezing = plan.gradual_unfreezing
        recorder = make_recorder(run_setup.task, plan.record, unfreezing, mesh)
        actions.append(Record(recorder, plan.record.steps))
        if plan.adaptive is not None:
            adaptive = AdaptiveRemoval(
                plan.adaptive.intervention,
                plan.adaptive.metric,
                **dataclasses.asdict(plan.stabilization),
            )
            actions.append(RemoveAdaptively(adaptive, plan.record.steps))
    if plan.eval_every:
        actions.append(EvaluateID(every=plan.eval_every))
    actions.append(
        Checkpoint(every=plan.checkpoint_every, steps=plan.checkpoint_steps, at_end=True)
    )
    return actions


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    dataset: Dataset | None = None,
    task: Task | None = None,
    mesh: Mesh | None = None,
    extra_actions: Sequence[PeriodicAction] = (),
) -> dict | None:
    """Trains (resuming from `workdir`'s newest intact checkpoint), evaluates, writes
    results.json and returns the results: ID accuracy, mean OOD accuracy and the
    per-corruption, per-severity table.

    The task is built from the config (on `dataset`, for images, when given), or is `task`:
    one task built once for several runs of a config that differ only in fields the task does
    not read (seed, schedule: auto-k, sweeps), which then share its data and compiled
    evaluators.

    Training and metrics run data-parallel over `mesh` (default: every device of every host,
    `earlyjax.parallel.data_mesh()`). `extra_actions` run after the built-in periodic actions;
    when one of them stops the run (`earlyjax.periodic.StopAt`) it ends with a checkpoint and
    returns None. The workdir is locked for the run (`earlyjax.workdir_lock`; by process 0 of a
    multi-host run): a second run on it refuses at once. SIGTERM or SIGINT during training
    saves a checkpoint at the current step and raises `Interrupted` (a SystemExit with code
    128 + signum).
    """
    with contextlib.ExitStack() as cleanup:
        return _train_and_evaluate(config, workdir, cleanup, dataset, task, mesh, extra_actions)


def _train_and_evaluate(config, workdir, cleanup, dataset, task: Task | None, mesh, extra_actions):
    validate(config)  # the run's one check of the config's values, before anything is touched
    check_workdir_path(workdir)
    finished = _finished_results(config, workdir)
    if finished is not None:
        return finished
    is_writer = jax.process_index() == 0
    locked = is_writer and os.path.isdir(workdir)
    if locked:  # an existing workdir is locked first, so a second run on it refuses at once
        cleanup.enter_context(workdir_lock(workdir))
    mesh = mesh or parallel.data_mesh()
    run_setup, state = _setup(config, dataset, mesh, task)
    point = branch.check_sources(config, run_setup.plan.num_steps)
    if is_writer and not locked:
        cleanup.enter_context(workdir_lock(workdir))
    _prepare_workdir(config, workdir, write=is_writer)  # a config that cannot run writes nothing

    def first_state() -> TrainState:  # a fresh run's: from init, or the branch point's
        if point is not None:
            return branch_initial_state(config, run_setup, state, point)
        return state

    run, start, resumed = _open_run(run_setup, first_state, workdir, mesh, cleanup)
    actions = [*periodic_actions(run_setup, mesh), *extra_actions]
    for action in actions:
        action.resume(run)
    train_seconds = _train(run, run_setup, actions, start, resumed)
    if run.stop_requested:
        return None
    results = {
        "model": config.model.name,
        "k": run.plan.k,
        "seed": run.plan.seed,
        "steps": run.plan.num_steps,
        "branch": _branch_summary(config, point, run.state),
        **_evaluate(run),
        "train_seconds_this_session": train_seconds - run.record_seconds,
        "record_seconds_this_session": run.record_seconds,
    }
    ood_line = {} if results["ood_accuracy"] is None else {"ood_accuracy": results["ood_accuracy"]}
    final_solution = results["final_solution"] or {}
    pruned = results["branch"] is not None and results["branch"]["layer_density"] is not None
    density = {"density": results["branch"]["density"]} if pruned else {}
    run.log.write(
        run.plan.num_steps,
        FINAL_KIND,
        id_accuracy=results["id_accuracy"],
        **ood_line,
        **density,
        **final_solution,
    )
    if is_writer:
        path = os.path.join(workdir, RESULTS_FILE)
        write_atomically(path, json.dumps(results, indent=2).encode())
    return results


def load_run_state(
    workdir: str, step: str | int = "end", task: Task | None = None, with_ood: bool = False
) -> tuple[Setup, TrainState]:
    """The setup of the run in `workdir` (from its config.json; on `task` when given, one built
    from the same data and model fields; without its OOD splits unless `with_ood`) and its
    train state at `step` (a kept checkpoint's step, or "end"); ConfigError when the run or the
    checkpoint is not there. For branches, telemetry, ensembles and analysis of saved runs."""
    config = branch.read_run_config(workdir, "workdir")
    if task is None and not with_ood:  # the state's structure needs the model, not the splits
        config.data.ood_source = "none"
    run_setup, like = setup(config, task=task)
    number = branch.resolve_step(workdir, str(step), "workdir")
    checkpoints = Checkpointer(os.path.join(workdir, branch.CHECKPOINT_DIR))
    with contextlib.closing(checkpoints):
        state, _ = checkpoints.restore(number, like)
    return run_setup, state


def branch_initial_state(
    config: ml_collections.ConfigDict, run_setup: Setup, fresh: TrainState, point
) -> TrainState:
    """The first state of a branch (earlyjax.branch): the source's checkpoint at the branch
    step, pruned by `branch.prune_from`'s final weights, transformed."""

    def state_of(workdir: str, step) -> TrainState:
        # A branch that continues the source's step trains on its data: its task (built once,
        # shared) restores the source's checkpoints when the configs build the same one.
        source_config = branch.read_run_config(workdir, "workdir")
        same_task = config.branch.continue_step and branch.builds_same_task(source_config, config)
        return load_run_state(workdir, step, run_setup.task if same_task else None)[1]

    source = state_of(point.source, point.step)
    pruned_run = None if point.prune_from is None else state_of(point.prune_from, "end")
    fresh_key = jax.random.fold_in(jax.random.key(config.seed), branch.FRESH_INIT_KEY)
    fresh_params, _ = run_setup.task.init(fresh_key)
    return branch.branch_state(config, point, fresh, source, pruned_run, fresh_params)


def _branch_summary(config, point, state: TrainState) -> dict | None:
    """results.json's account of a branch: where it started, how, and the density it trained
    at (the fraction of prunable weights remaining, overall and per layer)."""
    if point is None:
        return None
    b = config.branch
    summary = {
        "source": point.source,
        "step": point.step,
        "continue_step": b.continue_step,
        "transform": b.transform,
        "prune_from": point.prune_from,
        "density": 1.0,
        "layer_density": None,
    }
    if state.mask is not None:
        mask = jax.device_get(state.mask)
        prunable = branch.prunable_leaves(config, state.params)
        summary["density"] = density(mask, prunable)
        summary["layer_density"] = layer_densities(mask, prunable)
    return summary


def _finished_results(config, workdir: str) -> dict | None:
    """The results of a finished run in `workdir` (None if unfinished): it is not trained
    again, and a different config is refused."""
    path = os.path.join(workdir, RESULTS_FILE)
    if not os.path.exists(path):
        return None
    _prepare_workdir(config, workdir, write=False)  # refuses a different config
    fix = "delete it and rerun to evaluate the run again from its last checkpoint"
    results = read_json(path, "the finished run's results", fix)
    missing = [key for key in ("ood_set", "final_solution") if key not in results]
    if missing:
        raise RunFileError(f"{path} (the finished run's results) has no {missing[0]}; {fix}")
    print(f"{workdir} already holds a finished run; not training again ({path})")
    return results


def _open_run(run_setup: Setup, first_state: Callable[[], TrainState], workdir, mesh, cleanup):
    """(Run, the step it starts from, whether it resumed): the newest intact checkpoint restored
    (else `first_state()`, placed on the mesh), the metric log set straight from it, the
    progress bar; each closed by `cleanup`."""
    plan = run_setup.plan
    is_writer = jax.process_index() == 0
    checkpoints = Checkpointer(
        os.path.join(workdir, "checkpoints"), plan.keep_checkpoints, plan.checkpoint_steps
    )
    checkpointer = cleanup.enter_context(contextlib.closing(checkpoints))
    pending = []
    state = parallel.put_replicated(first_state(), mesh)
    start = int(state.step)
    restored = checkpointer.restore_latest(state)
    if restored is not None:
        start, state, meta = restored
        # Train stats of the steps since the last report, so that a resumed run writes
        # exactly the lines an uninterrupted run writes.
        if "pending_stats" not in meta:
            raise CheckpointError(
                f"the checkpoint at step {start} in {workdir} has no "
                "pending_stats: not written by a released version; use a fresh --workdir"
            )
        pending = list(meta["pending_stats"])
        print(f"resumed from the checkpoint at step {start} in {workdir}")
    # Without a checkpoint, lines of an earlier attempt (even at step 0) are set aside.
    log = MetricLog(workdir, resume_step=start if restored else -1, enabled=is_writer)
    cleanup.callback(log.close)
    bar = cleanup.enter_context(
        tqdm(
            total=plan.num_steps,
            initial=start,
            desc="train",
            unit="step",
            disable=not (plan.progress_bar and is_writer),
            dynamic_ncols=True,
        )
    )
    run = Run(run_setup.task, plan, workdir, state, log, checkpointer, mesh, pending, bar=bar)
    return run, start, restored is not None


def _evaluate(run: Run) -> dict:
    """The task's final evaluation and what the run's schedules ended as."""
    plan = run.plan
    state = run.state
    results = run.task.final_results(
        state.params, state.model_state, plan.eval_batch_size, run.mesh
    )
    # Algorithm 2's parameters, for a run whose schedule they chose (adaptive removal).
    results["stabilization"] = dataclasses.asdict(plan.stabilization) if plan.adaptive else None
    # Step at which each block (then the head) became trainable; NEVER = 2**31 - 1.
    results["release_steps"] = run.schedule(plan.gradual_unfreezing).tolist()
    if plan.lr_switch is not None:
        results["lr_switch_step"] = int(run.schedule(plan.lr_switch)[0])
    results["final_solution"] = None
    if plan.final is not None:  # §6.3: the trained model's sharpness, λ_max, feature λ_max
        recorder = make_recorder(run.task, plan.final, plan.gradual_unfreezing, run.mesh)
        results["final_solution"] = recorder(state)
    return results


def _train(run: Run, run_setup: Setup, actions, start: int, resumed: bool) -> float:
    """The loop: a train step, then the due actions (a fresh run's also at its first step: 0,
    or a branch's); a stop (a signal or an action) saves a checkpoint and ends it. Returns the
    seconds it took."""
    plan = run.plan
    t0 = time.time()
    if not resumed:
        for action in actions:
            if action.due(start, plan.num_steps):
                action(run, start)
    step_fn = make_train_step(run_setup, run.state, run.mesh)
    batches = run.task.train_batches(plan.seed, plan.batch_size, start, plan.num_steps, run.mesh)
    signals = _StopSignals()
    try:
        signals.install()
        for index, batch in batches:
            run.state, stats = step_fn(run.state, batch)
            run.pending.append(stats)
            step = index + 1  # updates done: the host's mirror of run.state.step
            run.bar.update(1)
            for action in actions:
                if action.due(step, plan.num_steps):
                    action(run, step)
            if run.stop_requested or signals.signum is not None:
                run.save_checkpoint(step)
                if signals.signum is None:
                    break
                run.bar.close()
                name = signal.Signals(signals.signum).name
                print(
                    f"{name}: stopped at step {step} with a checkpoint in {run.workdir}; rerun "
                    "the same command to resume",
                    file=sys.stderr,
                )
                raise Interrupted(signals.signum, step)
    finally:
        signals.restore()
    return time.time() - t0


def _prepare_workdir(config: ml_collections.ConfigDict, workdir: str, write: bool) -> None:
    """Writes config.json on first use (if `write`: process 0 of a multi-host run); refuses a
    workdir that holds a different config."""
    if write:
        os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, CONFIG_FILE)
    current = json.loads(config.to_json())
    if os.path.exists(path):
        saved = read_json(
            path,
            "the config this run was started with",
            "restore it (the run's --config and overrides) or use a fresh --workdir",
        )
        diff = differing_fields(saved, current)
        if diff:
            raise ConfigError(
                f"{workdir} holds a run with a different config, so it cannot be resumed:\n  "
                + "\n  ".join(diff)
                + "\nUse a fresh --workdir, or the saved config ("
                + path
                + ")."
            )
        return
    if not write:
        return
    write_atomically(path, json.dumps(current, indent=2, sort_keys=True).encode())


GLOB_CHARACTERS = "*?["


def check_workdir_path(workdir: str) -> None:
    """Refuses a workdir path with glob characters: orbax and etils expand checkpoint paths as
    glob patterns (a `**` fails mid-save; a `*` can match another run's folder)."""
    found = sorted({c for c in workdir if c in GLOB_CHARACTERS})
    if found:
        raise ConfigError(
            f"--workdir={workdir} contains the glob character(s) {' '.join(found)}, which "
            "checkpoint paths cannot hold (orbax expands them as patterns): choose a path "
            "without *, ? or ["
        )


def format_results(results: dict) -> str:
    """A short human-readable summary: ID, mean OOD, and OOD accuracy (or F1, for QA: the
    results' `score`) per corruption or language."""
    score = results.get("score", "accuracy")
    label = {"accuracy": "accuracy:", "f1": "F1:      "}[score]
    id_line = f"ID {label}  {results['id_accuracy']:.2f}"
    id_line += "%" if score == "accuracy" else f"  (EM {results['id_exact_match']:.2f})"
    lines = [f"{id_line}  ({results['dataset']}, {results.get('id_set', 'clean test set')})"]
    if results["ood_accuracy"] is None:
        lines.append(f"OOD {label} n/a (no OOD splits)")
    else:
        cells = sum(len(r) if isinstance(r, dict) else 1 for r in results["ood_table"].values())
        ood_set = results["ood_set"]  # None for a Dataset built by hand
        what = (
            f"the {cells} splits of {ood_set}"
            if ood_set
            else f"{cells} corruption x severity splits"
        )
        unit = "%" if score == "accuracy" else ""
        lines.append(f"OOD {label} {results['ood_accuracy']:.2f}{unit}  (mean over {what})")
    for name, row in sorted(results["ood_table"].items()):  # corruption x severity, or language
        if isinstance(row, dict):
            row = "  ".join(f"s{s}:{acc:5.1f}" for s, acc in sorted(row.items()))
        else:
            row = f"{row:5.1f}"
        lines.append(f"  {name:<18} {row}")
    final = results["final_solution"]
    if final:
        values = ", ".join(f"{name} {value:.4g}" for name, value in sorted(final.items()))
        lines.append(f"Final solution (metric set): {values}")
    return "\n".join(lines)
