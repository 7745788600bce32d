"""The run plan: a checked config, with the task and the mesh, turned into typed values.

`make_plan(config, task, mesh)` takes a config whose values `earlyjax.validation.validate`
has checked (once per run, before the task was built) and checks only what depends on the
data and the devices: the run length, batch sizes that the devices divide, a schedule that
ends inside the run, a metric set the training set holds. It derives every value the run
needs exactly once: the number of steps, the learning rate, each intervention with its
initial schedule, adaptive removal, Algorithm 2's parameters and the recording steps. Below
this, code trusts its inputs. A failed check is a ConfigError naming the value and the fix,
raised before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import ml_collections
import numpy as np
from jax.sharding import Mesh

from earlyjax import parallel
from earlyjax.config import ConfigError, Field
from earlyjax.data.pipeline import steps_per_epoch
from earlyjax.interventions import (
    GradualUnfreezing,
    Intervention,
    LRSwitch,
    learning_rate_schedule,
)

if TYPE_CHECKING:
    from earlyjax.task_protocol import HasBlocks, Task


@dataclass(frozen=True)
class Stabilization:
    """Algorithm 2's parameters (App. D; earlyjax.stabilization)."""

    tau: int
    eps: float
    rapid_eps: float


@dataclass(frozen=True)
class RecordPlan:
    """Early-period recording (earlyjax.recording): when, what, and on which metric set."""

    steps: tuple[int, ...]
    metrics: tuple[str, ...]
    set_size: int
    batch_size: int
    bn: str
    rho: float
    avg_samples: int
    samples_per_pass: int | None
    worst_iters: int
    hessian_iters: int


@dataclass(frozen=True)
class Adaptive:
    """Remove `intervention` part by part as `metric` stabilises (earlyjax.adaptive)."""

    intervention: Intervention
    metric: str


@dataclass(frozen=True, eq=False)
class RunPlan:
    seed: int
    num_steps: int
    batch_size: int
    eval_batch_size: int
    optimizer: str  # optimizer.name: sgd | adamw
    lr_schedule: str  # optimizer.schedule: constant | linear | multistep
    lr: float  # optimizer.lr * optimizer.lr_scale
    milestones: tuple[int, ...]  # multistep: the steps of optimizer.milestone_epochs
    gamma: float
    steps_per_epoch: int  # cosine: its epochs
    warmup_steps: int  # warmup_cosine: the steps of optimizer.warmup_epochs
    momentum: float
    weight_decay: float
    # Each intervention with its initial schedule; gradual unfreezing always comes first (all
    # zeros: standard training), so every run's recorder and log know the trainable blocks.
    schedules: tuple[tuple[Intervention, np.ndarray], ...]
    adaptive: Adaptive | None
    stabilization: Stabilization
    record: RecordPlan | None
    freeze_model_state: bool  # unfreeze.freeze_bn_stats: frozen blocks keep their BN stats
    log_every: int
    eval_every: int
    checkpoint_every: int
    keep_checkpoints: int
    checkpoint_steps: tuple[int, ...]  # named steps kept beside the newest keep_checkpoints
    progress_bar: bool
    k: int | None  # unfreeze.k, as results.json reports it
    # The final-solution analysis (config.final): metrics of the trained model, or None.
    final: RecordPlan | None = None

    def learning_rate(self, step: int) -> float:
        """The base learning rate of the update at `step` (before an LR switch)."""
        schedule = learning_rate_schedule(
            self.lr_schedule,
            self.lr,
            self.num_steps,
            self.milestones,
            self.gamma,
            self.steps_per_epoch,
            self.warmup_steps,
        )
        return float(schedule(step))

    @property
    def gradual_unfreezing(self) -> GradualUnfreezing:
        return self.schedules[0][0]

    @property
    def lr_switch(self) -> LRSwitch | None:
        found = [iv for iv, _ in self.schedules if isinstance(iv, LRSwitch)]
        return found[0] if found else None


def total_steps(config: ml_collections.ConfigDict, num_train: int) -> int:
    """The run length in optimizer steps: total_steps, or num_epochs full epochs."""
    per_epoch = steps_per_epoch(num_train, config.batch_size)
    return config.total_steps or config.num_epochs * per_epoch


def record_steps(every: int, until: int, num_steps: int) -> tuple[int, ...]:
    """The steps (counted in updates done) at which a run records: 0, every, ..., <= until."""
    if not every:
        return ()
    return tuple(range(0, min(until, num_steps) + 1, every))


def interventions_of(
    config: ml_collections.ConfigDict, blocks: tuple[str, ...], head: str
) -> tuple[tuple[tuple[Intervention, np.ndarray], ...], Adaptive | None]:
    """Each intervention the config asks for, with its initial schedule, and adaptive removal."""
    u, o = config.unfreeze, config.optimizer
    unfreezing = GradualUnfreezing(tuple(blocks), head)
    held = u.head_only or u.adaptive is not None
    schedules = [(unfreezing, unfreezing.held() if held else unfreezing.schedule_for_k(u.k))]
    adaptive = Adaptive(unfreezing, u.adaptive) if u.adaptive else None
    if o.lr_switch is not None:
        switch = LRSwitch(o.lr_switch)
        held = o.lr_switch_hold or o.lr_switch_adaptive is not None
        schedules.append(
            (switch, switch.held() if held else switch.schedule_for_k(o.lr_switch_step))
        )
        if o.lr_switch_adaptive:
            adaptive = Adaptive(switch, o.lr_switch_adaptive)
    return tuple(schedules), adaptive


INTERVENTION_NAMES = (GradualUnfreezing.name, LRSwitch.name)


def intervention_named(
    name: str, config: ml_collections.ConfigDict, task: HasBlocks
) -> Intervention:
    """The intervention `name` as the config and the task define it (its blocks, its LR
    switch direction); ConfigError naming the fix when the config cannot say."""
    if name == GradualUnfreezing.name:
        return GradualUnfreezing(tuple(task.blocks), task.head)
    if name == LRSwitch.name:
        if config.optimizer.lr_switch is None:
            raise ConfigError(
                "the LR switch needs its direction: set --config.optimizer.lr_switch=l2h (or h2l)"
            )
        return LRSwitch(config.optimizer.lr_switch)
    raise ConfigError(f"unknown intervention {name!r}: choose one of {INTERVENTION_NAMES}")


def make_plan(config: ml_collections.ConfigDict, task: Task, mesh: Mesh | None = None) -> RunPlan:
    """Checks a validated `config` against the task's data and the mesh; see the module
    docstring."""
    try:
        num_steps = total_steps(config, task.num_train)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if mesh is not None:
        for name in ("batch_size", "eval_batch_size"):
            try:
                parallel.check_divisible(name, config[name], mesh)
            except ValueError as e:
                raise ConfigError(f"--config.{e}") from None
    schedules, adaptive = interventions_of(config, task.blocks, task.head)
    check_schedule_fits(config, schedules[0][0], num_steps)
    r = config.record
    steps = record_steps(r.every, r.until, num_steps)
    if (steps or config.final.metrics) and r.set_size > task.num_train:
        raise ConfigError(
            f"record.set_size={r.set_size}: the metric set must be at most the "
            f"{task.num_train} training examples; lower --config.record.set_size"
        )
    record = _record_plan(r, steps, tuple(r.metrics)) if steps else None
    final = _record_plan(r, (num_steps,), tuple(config.final.metrics))
    o = config.optimizer
    per_epoch = steps_per_epoch(task.num_train, config.batch_size)
    milestones = tuple(round(e * per_epoch) for e in o.milestone_epochs)
    return RunPlan(
        seed=config.seed,
        num_steps=num_steps,
        batch_size=config.batch_size,
        eval_batch_size=config.eval_batch_size,
        optimizer=o.name,
        lr_schedule=o.schedule,
        lr=o.lr * o.lr_scale,
        milestones=milestones,
        gamma=o.gamma,
        steps_per_epoch=per_epoch,
        warmup_steps=round(o.warmup_epochs * per_epoch),
        momentum=o.momentum,
        weight_decay=o.weight_decay,
        schedules=schedules,
        adaptive=adaptive,
        stabilization=Stabilization(**config.stabilization),
        record=record,
        freeze_model_state=config.unfreeze.freeze_bn_stats,
        log_every=config.log_every,
        eval_every=config.eval_every,
        checkpoint_every=config.checkpoint_every,
        keep_checkpoints=config.keep_checkpoints,
        checkpoint_steps=tuple(s for s in config.checkpoint_steps if s <= num_steps),
        progress_bar=config.progress_bar,
        k=config.unfreeze.k,
        final=final if final.metrics else None,
    )


def _record_plan(r: ml_collections.ConfigDict, steps, metrics) -> RecordPlan:
    """The metrics `metrics` at `steps`, on the metric set and settings of the record block."""
    return RecordPlan(
        steps,
        metrics,
        r.set_size,
        r.batch_size,
        r.bn,
        r.rho,
        r.avg_samples,
        r.samples_per_pass,
        r.worst_iters,
        r.hessian_iters,
    )


def check_schedule_fits(
    config: ml_collections.ConfigDict, unfreezing: GradualUnfreezing, num_steps: int
):
    """Refuses a schedule that removes an intervention after the run ends, unless
    `unfreeze.allow_late_release`: a gradual-unfreezing k with k * L >= total steps, an LR
    switch at or after the last step, or adaptive removal whose recording (its last chance to
    remove) reaches the end of the run."""
    if config.unfreeze.allow_late_release:
        return
    k, fix = config.unfreeze.k, "or set --config.unfreeze.allow_late_release=True"
    num_blocks = len(unfreezing.blocks)
    if k is not None and k * num_blocks >= num_steps:
        raise ConfigError(
            f"unfreeze.k={k} with {num_blocks} blocks releases the last block at step "
            f"{k * num_blocks - 1} of a {num_steps}-step run (k * L >= total steps), so part of "
            f"the network would hardly train: use k <= {unfreezing.max_fitting_k(num_steps)}, "
            f"more steps, {fix}"
        )
    step = config.optimizer.lr_switch_step
    if config.optimizer.lr_switch and step is not None and step >= num_steps:
        raise ConfigError(
            f"optimizer.lr_switch_step={step} comes after the last step of the {num_steps}-step "
            f"run: use a step below {num_steps}, more steps, {fix}"
        )
    adaptive = config.unfreeze.adaptive or config.optimizer.lr_switch_adaptive
    if adaptive and config.record.until >= num_steps:
        field = Field.UNFREEZE_ADAPTIVE if config.unfreeze.adaptive else Field.LR_SWITCH_ADAPTIVE
        raise ConfigError(
            f"{field} removes the intervention at recordings up to record.until="
            f"{config.record.until}, which reaches the end of the {num_steps}-step run: set "
            f"--config.record.until below {num_steps}, {fix}"
        )
