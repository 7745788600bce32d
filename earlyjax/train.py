"""Training: the train state, jitted train/eval steps, and the resumable training loop.

`train_and_evaluate(config, workdir)` is the one entry point: it builds the model and the
gradual-unfreezing optimizer, resumes from the newest checkpoint in `workdir` if there is one,
trains, evaluates on the ID test set and every OOD split, and writes `results.json`.

Workdir layout: `config.json` (the config the run was started with), `metrics.jsonl`
(append-only records), `tb/` (TensorBoard events), `checkpoints/<step>/`, `results.json`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import Mesh
from tqdm import tqdm

from earlyjax import freezing, parallel
from earlyjax.adaptive import AdaptiveUnfreezing
from earlyjax.checkpoint import Checkpointer
from earlyjax.config import ConfigError, differing_fields, validate
from earlyjax.data import load_dataset
from earlyjax.data.base import Dataset, Split
from earlyjax.data.pipeline import (
    channel_stats,
    eval_batches,
    metric_set,
    normalize,
    random_crop_flip,
    steps_per_epoch,
    train_batches,
)
from earlyjax.metric_log import FINAL_KIND, MetricLog, read_json, read_records, write_atomically
from earlyjax.models import HEAD, build_model
from earlyjax.recording import make_recorder, record_steps
from earlyjax.workdir_lock import workdir_lock

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and what to change."""


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


class TrainState(NamedTuple):
    step: jax.Array  # int32 [], optimizer steps taken
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array  # uint32 key data; step s uses fold_in(rng, s)


class Experiment(NamedTuple):
    """The static pieces of a run, built once from the config and the data."""

    model: nn.Module
    blocks: tuple[str, ...]
    optimizer: optax.GradientTransformation
    param_groups: Any  # group index per parameter leaf (freezing.group_labels)
    stat_groups: Any  # group index per batch-statistics leaf
    mean: np.ndarray
    std: np.ndarray


def total_steps(config: ml_collections.ConfigDict, num_train: int) -> int:
    """The run length in optimizer steps: total_steps, or num_epochs full epochs."""
    per_epoch = steps_per_epoch(num_train, config.batch_size)
    return config.total_steps or config.num_epochs * per_epoch


def build_experiment(
    config: ml_collections.ConfigDict, dataset: Dataset
) -> tuple[Experiment, TrainState]:
    """Builds the model, optimizer and the initial train state (deterministic in the seed)."""
    model, blocks = build_model(
        config.model.name,
        num_classes=dataset.num_classes,
        width=config.model.width,
        init=config.model.init,
    )
    init_key, rng = jax.random.split(jax.random.key(config.seed))
    dummy = jnp.zeros((1, *dataset.image_shape), jnp.float32)
    try:
        variables = jax.jit(lambda k: model.init(k, dummy, train=False))(init_key)
    except ValueError as e:
        raise ConfigError(
            f"model {config.model.name!r} cannot take {dataset.name} images: {e}"
        ) from None
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    o = config.optimizer
    schedule = freezing.lr_schedule(o.lr * o.lr_scale, o.lr_switch, o.lr_switch_step)
    if config.unfreeze.head_only or config.unfreeze.adaptive:
        release = freezing.head_only_release_steps(len(blocks))
    else:
        release = freezing.release_steps_for(config.unfreeze.k, len(blocks))
    optimizer, param_groups = freezing.make_optimizer(
        params,
        blocks,
        lr_schedule=schedule,
        momentum=o.momentum,
        weight_decay=o.weight_decay,
        release_steps=release,
        head=HEAD,
    )
    stat_groups = freezing.group_labels(batch_stats, blocks, HEAD)
    mean, std = channel_stats(dataset.train.images)
    experiment = Experiment(model, blocks, optimizer, param_groups, stat_groups, mean, std)
    state = TrainState(
        step=jnp.zeros([], jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=optimizer.init(params),
        rng=jax.random.key_data(rng),
    )
    return experiment, state


def make_train_step(
    experiment: Experiment, *, augment: bool, freeze_bn_stats: bool, mesh: Mesh | None = None
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """A jitted step: (state, {"image": uint8 [B,H,W,C], "label": int32 [B]}) -> (state, stats).

    stats holds the batch's mean loss and accuracy. BatchNorm uses batch statistics and updates
    its running statistics in every block (PyTorch `requires_grad=False` semantics), unless
    `freeze_bn_stats`, in which case blocks that are still frozen keep their running statistics.
    With a `mesh` (`earlyjax.parallel`), the batch comes split over its devices and the new
    state leaves replicated: data parallelism with global-batch BatchNorm statistics.
    """
    model, optimizer = experiment.model, experiment.optimizer
    mean, std = jnp.asarray(experiment.mean), jnp.asarray(experiment.std)

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        images = batch["image"]
        if augment:
            images = random_crop_flip(key, images)
        x = normalize(images, mean, std)

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                x,
                train=True,
                mutable=["batch_stats"],
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
            return loss, (logits, updates["batch_stats"])

        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if freeze_bn_stats:
            release = freezing.get_release_steps(state.opt_state)
            live = freezing.trainable_mask(experiment.stat_groups, release, state.step)
            batch_stats = jax.tree.map(jnp.where, live, batch_stats, state.batch_stats)
        accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
        new_state = TrainState(state.step + 1, params, batch_stats, opt_state, state.rng)
        return new_state, {"loss": loss, "accuracy": accuracy}

    if mesh is None:
        return jax.jit(train_step, donate_argnums=0)
    return jax.jit(train_step, donate_argnums=0, out_shardings=parallel.replicated(mesh))


def make_eval_step(experiment: Experiment, mesh: Mesh | None = None) -> Callable:
    """(params, batch_stats, host batch with mask) -> (correct, loss_sum, count), jitted; with a
    `mesh` the batch is split over its devices."""
    model = experiment.model
    mean, std = jnp.asarray(experiment.mean), jnp.asarray(experiment.std)

    @jax.jit
    def step(params, batch_stats, batch):
        x = normalize(batch["image"], mean, std)
        logits = model.apply({"params": params, "batch_stats": batch_stats}, x, train=False)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        correct = (jnp.argmax(logits, -1) == batch["label"]) * batch["mask"]
        return correct.sum(), (losses * batch["mask"]).sum(), batch["mask"].sum()

    def eval_step(params, batch_stats, batch):
        if mesh is not None:
            batch = parallel.global_batch(batch, mesh)
        return step(params, batch_stats, batch)

    return eval_step


def evaluate(eval_step: Callable, state: TrainState, split: Split, batch_size: int) -> dict:
    """Accuracy (%) and mean loss of the model in eval mode over a whole split."""
    sums = [eval_step(state.params, state.batch_stats, b) for b in eval_batches(split, batch_size)]
    correct, loss, count = (float(sum(x)) for x in zip(*sums, strict=True))
    return {"accuracy": 100.0 * correct / count, "loss": loss / count}


def evaluate_ood(
    eval_step: Callable, state: TrainState, ood: dict, batch_size: int
) -> tuple[float | None, dict[str, dict[str, float]]]:
    """Mean OOD accuracy (%) over every (corruption, severity) (None without OOD splits) and
    the per-cell table."""
    table: dict[str, dict[str, float]] = {}
    for (corruption, severity), split in sorted(ood.items()):
        acc = evaluate(eval_step, state, split, batch_size)["accuracy"]
        table.setdefault(corruption, {})[str(severity)] = acc
    cells = [acc for row in table.values() for acc in row.values()]
    return (float(np.mean(cells)) if cells else None), table


def trainable_blocks(experiment: Experiment, opt_state: Any, step: int) -> list[str]:
    """Names of the groups (blocks and head) that the update at `step` trains."""
    release = np.asarray(freezing.get_release_steps(opt_state))
    names = [*experiment.blocks, HEAD]
    return [name for name, r in zip(names, release, strict=True) if step >= r]


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


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    dataset: Dataset | None = None,
    stop_after: int | None = None,
    mesh: Mesh | None = None,
) -> dict | None:
    """Trains (resuming from `workdir`'s newest checkpoint), evaluates, writes results.json.

    `stop_after` ends the run after that many total steps, with a checkpoint, as if it had been
    interrupted (used to test resumption); the return value is then None. Otherwise returns the
    results: ID accuracy, mean OOD accuracy and the per-corruption, per-severity table.
    Training and metrics run data-parallel over `mesh` (default: every device of every host,
    `earlyjax.parallel.data_mesh()`).
    The workdir is locked for the run (`earlyjax.workdir_lock`; by process 0 of a multi-host
    run): a second run on it refuses at once. SIGTERM or SIGINT during training saves a
    checkpoint at the current step and raises `Interrupted` (a SystemExit with code 128 + signum).
    """
    with contextlib.ExitStack() as cleanup:
        return _train_and_evaluate(config, workdir, cleanup, dataset, stop_after, mesh)


def _train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    cleanup: contextlib.ExitStack,
    dataset: Dataset | None,
    stop_after: int | None,
    mesh: Mesh | None,
) -> dict | None:
    validate(config)
    check_workdir_path(workdir)
    is_writer = jax.process_index() == 0
    results_path = os.path.join(workdir, RESULTS_FILE)
    if os.path.exists(results_path):
        _prepare_workdir(config, workdir, write=False)  # refuses a different config
        results = read_json(
            results_path,
            "the finished run's results",
            "delete it and rerun to evaluate the run again from its last checkpoint",
        )
        print(f"{workdir} already holds a finished run; not training again ({results_path})")
        return results
    locked = is_writer and os.path.isdir(workdir)
    if locked:  # an existing workdir is locked first, so a second run on it refuses at once
        cleanup.enter_context(workdir_lock(workdir))
    dataset = dataset or load_dataset(config.data)
    try:
        num_steps = total_steps(config, dataset.train.images.shape[0])
    except ValueError as e:
        raise ConfigError(str(e)) from None
    mesh = mesh or parallel.data_mesh()
    for name in ("batch_size", "eval_batch_size"):
        try:
            parallel.check_divisible(name, config[name], mesh)
        except ValueError as e:
            raise ConfigError(f"--config.{e}") from None
    experiment, state = build_experiment(config, dataset)
    check_schedule_fits(config, len(experiment.blocks), num_steps)
    state = parallel.put_replicated(state, mesh)
    recorder, to_record = _make_recorder(config, experiment, dataset, num_steps, mesh)
    if is_writer and not locked:
        cleanup.enter_context(workdir_lock(workdir))
    _prepare_workdir(config, workdir, write=is_writer)  # a config that cannot run writes nothing

    checkpointer = cleanup.enter_context(
        contextlib.closing(
            Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
        )
    )
    # Train stats of the steps since the last log line; carried in the checkpoint so that a
    # resumed run writes exactly the lines an uninterrupted run writes.
    pending: list[dict] = []
    start = 0
    restored = checkpointer.restore_latest(state)
    if restored is not None:
        start, state, meta = restored
        pending = list(meta.get("pending_stats", []))
        print(f"resumed from the checkpoint at step {start} in {workdir}")
    # Without a checkpoint, lines of an earlier attempt (even at step 0) are set aside.
    log = MetricLog(workdir, resume_step=start if start else -1, enabled=is_writer)
    cleanup.callback(log.close)
    train_step = make_train_step(
        experiment,
        augment=config.data.augment,
        freeze_bn_stats=config.unfreeze.freeze_bn_stats,
        mesh=mesh,
    )
    eval_step = make_eval_step(experiment, mesh)
    stop = min(num_steps, stop_after or num_steps)
    record_seconds = 0.0

    adaptive = None
    if config.unfreeze.adaptive:
        adaptive = AdaptiveUnfreezing(
            config.unfreeze.adaptive, len(experiment.blocks), **config.stabilization
        )
        adaptive.restore(
            read_records(log.path), np.asarray(freezing.get_release_steps(state.opt_state))
        )

    def record(step: int) -> None:
        """Records the metrics at `step`; with adaptive unfreezing, maybe releases a block."""
        nonlocal record_seconds, state
        t = time.time()
        bar.set_description(f"record step {step}")
        values = recorder(state)
        bar.set_description("train")
        record_seconds += time.time() - t
        postfix["recorded"] = f"{step} ({record_seconds:.0f}s in metrics)"
        bar.set_postfix(postfix)
        trainable = trainable_blocks(experiment, state.opt_state, step)
        log.write(step, "record", trainable=trainable, **values)
        if adaptive is None:
            return
        release = np.asarray(freezing.get_release_steps(state.opt_state))
        new = adaptive.update(
            step, values[adaptive.metric], release, last_recording=step == max(to_record)
        )
        if new is not None:
            state = state._replace(opt_state=freezing.set_release_steps(state.opt_state, new))
            names = [*experiment.blocks, HEAD]
            released = [n for n, a, b in zip(names, release, new, strict=True) if a != b][::-1]
            log.write(step, "release", blocks=released, release_steps=new.tolist())

    bar = tqdm(
        total=num_steps,
        initial=start,
        desc="train",
        unit="step",
        disable=not (config.progress_bar and is_writer),
        dynamic_ncols=True,
    )

    postfix: dict[str, str] = {}  # shown after the bar: last loss, last recording

    def fetch_pending(step: int) -> list[dict]:
        """The pending stats on the host; raises TrainingDiverged on a non-finite loss."""
        stats = [{k: float(v) for k, v in s.items()} for s in jax.device_get(pending)]
        for i, s in enumerate(stats):
            if not np.isfinite(s["loss"]):
                raise TrainingDiverged(
                    f"the training loss became {s['loss']} at step {step - len(stats) + i + 1} "
                    f"(lr={config.optimizer.lr * config.optimizer.lr_scale}). Lower "
                    "--config.optimizer.lr (or lr_scale) and rerun with a fresh --workdir; the "
                    f"checkpoints and metric log in {workdir} up to the last good step are kept."
                )
        return stats

    def write_train_line(step: int) -> None:
        stats = fetch_pending(step)
        pending.clear()
        loss = float(np.mean([s["loss"] for s in stats]))
        log.write(
            step,
            "train",
            loss=loss,
            accuracy=100.0 * float(np.mean([s["accuracy"] for s in stats])),
            lr=experiment_lr(config, step - 1),
            trainable=trainable_blocks(experiment, state.opt_state, step - 1),
        )
        postfix["loss"] = f"{loss:.3f}"
        bar.set_postfix(postfix)

    t0 = time.time()
    if start == 0 and 0 in to_record:
        record(0)
    batches = train_batches(
        dataset.train,
        seed=config.seed,
        batch_size=config.batch_size,
        start_step=start,
        stop_step=stop,
        mesh=mesh,
    )
    signals = _StopSignals()
    try:
        signals.install()
        for step, batch in batches:
            state, stats = train_step(state, batch)
            pending.append(stats)
            done = step + 1
            bar.update(1)
            if done % config.log_every == 0 or done == num_steps:
                write_train_line(done)
            if done in to_record:
                record(done)
            if config.eval_every and done % config.eval_every == 0:
                id_metrics = evaluate(eval_step, state, dataset.test, config.eval_batch_size)
                log.write(done, "eval_id", **id_metrics)
            due = (config.checkpoint_every and done % config.checkpoint_every == 0) or done == stop
            if due or signals.signum is not None:
                meta = {"step": done, "pending_stats": fetch_pending(done)}
                checkpointer.save(done, state, meta)
            if signals.signum is not None:
                bar.close()
                name = signal.Signals(signals.signum).name
                print(
                    f"{name}: stopped at step {done} with a checkpoint in {workdir}; rerun the "
                    "same command to resume",
                    file=sys.stderr,
                )
                raise Interrupted(signals.signum, done)
    finally:
        signals.restore()
        bar.close()
    train_seconds = time.time() - t0
    if stop < num_steps:
        return None

    id_metrics = evaluate(eval_step, state, dataset.test, config.eval_batch_size)
    ood_mean, ood_table = evaluate_ood(eval_step, state, dataset.ood, config.eval_batch_size)
    results = {
        "dataset": dataset.name,
        "model": config.model.name,
        "k": config.unfreeze.k,
        "seed": config.seed,
        "steps": num_steps,
        "id_accuracy": id_metrics["accuracy"],
        "id_loss": id_metrics["loss"],
        "ood_accuracy": ood_mean,
        "ood_table": ood_table,
        # What ood_accuracy is the mean of: the OOD set's name (None for a hand-built Dataset;
        # a generated set says so) and every "corruption/severity" cell averaged.
        "ood_set": dataset.ood_set,
        "ood_cells": [f"{c}/{s}" for c, s in sorted(dataset.ood)],
        "train_seconds_this_session": train_seconds - record_seconds,
        "record_seconds_this_session": record_seconds,
        # Algorithm 2's parameters, for a run whose schedule they chose (adaptive unfreezing).
        "stabilization": dict(config.stabilization) if config.unfreeze.adaptive else None,
        # Step at which each block (then the head) became trainable; NEVER = 2**31 - 1.
        "release_steps": np.asarray(freezing.get_release_steps(state.opt_state)).tolist(),
    }
    ood_line = {} if ood_mean is None else {"ood_accuracy": ood_mean}
    log.write(num_steps, FINAL_KIND, id_accuracy=results["id_accuracy"], **ood_line)
    if is_writer:
        write_atomically(results_path, json.dumps(results, indent=2).encode())
    return results


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


def max_fitting_k(num_blocks: int, num_steps: int) -> int:
    """The largest interval k whose last release (block 0 at step kL - 1) comes with kL < T."""
    return (num_steps - 1) // num_blocks


def check_schedule_fits(config: ml_collections.ConfigDict, num_blocks: int, num_steps: int):
    """Refuses a schedule that releases a block after the run ends, unless
    `unfreeze.allow_late_release`: a gradual-unfreezing k with k * L >= total steps, or adaptive
    unfreezing whose recording (its last chance to release) reaches the end of the run."""
    if config.unfreeze.allow_late_release:
        return
    k, fix = config.unfreeze.k, "or set --config.unfreeze.allow_late_release=True"
    if k is not None and k * num_blocks >= num_steps:
        raise ConfigError(
            f"unfreeze.k={k} with {num_blocks} blocks releases the last block at step "
            f"{k * num_blocks - 1} of a {num_steps}-step run (k * L >= total steps), so part of "
            f"the network would hardly train: use k <= {max_fitting_k(num_blocks, num_steps)}, "
            f"more steps, {fix}"
        )
    if config.unfreeze.adaptive and config.record.until >= num_steps:
        raise ConfigError(
            f"unfreeze.adaptive releases blocks at recordings up to record.until="
            f"{config.record.until}, which reaches the end of the {num_steps}-step run: set "
            f"--config.record.until below {num_steps}, {fix}"
        )


def _make_recorder(config, experiment: Experiment, dataset: Dataset, num_steps: int, mesh: Mesh):
    """(recorder or None, the steps to record) for the config's `record` block."""
    steps = set(record_steps(config.record.every, config.record.until, num_steps))
    if not steps:
        return None, steps
    try:
        batches = metric_set(dataset.train, config.record.set_size, config.record.batch_size)
    except ValueError as e:
        raise ConfigError(f"record.set_size: {e}") from None
    return make_recorder(experiment, config.record, batches, mesh), steps


def experiment_lr(config: ml_collections.ConfigDict, step: int) -> float:
    o = config.optimizer
    return float(freezing.lr_schedule(o.lr * o.lr_scale, o.lr_switch, o.lr_switch_step)(step))


def format_results(results: dict) -> str:
    """A short human-readable summary: ID, mean OOD, and OOD accuracy per corruption."""
    lines = [f"ID accuracy:  {results['id_accuracy']:.2f}%  ({results['dataset']}, clean test set)"]
    if results["ood_accuracy"] is None:
        lines.append("OOD accuracy: n/a (no OOD splits: data.ood_source='none')")
    else:
        cells = sum(len(r) for r in results["ood_table"].values())
        ood_set = results.get("ood_set")  # absent from results.json files of older versions
        what = (
            f"the {cells} splits of {ood_set}"
            if ood_set
            else f"{cells} corruption x severity splits"
        )
        lines.append(f"OOD accuracy: {results['ood_accuracy']:.2f}%  (mean over {what})")
    for corruption, row in sorted(results["ood_table"].items()):
        cells = "  ".join(f"s{s}:{acc:5.1f}" for s, acc in sorted(row.items()))
        lines.append(f"  {corruption:<18} {cells}")
    return "\n".join(lines)
