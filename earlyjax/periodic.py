"""Periodic actions of the training loop, each a small unit with its own period.

After every train step the loop (`earlyjax.train`) runs each action whose `due(step)` holds,
in order: report the training loss, record the early-period metrics, remove an intervention
adaptively, evaluate on the ID test set, save a checkpoint. An action works on `Run`, which
holds the train state and the run's writers; `step` always counts the updates done (the train
state's step counter, mirrored on the host). The same idea as clu's `periodic_actions`,
written out here (a few lines each) because these also run at explicit steps (recordings)
and at step 0, and must resume exactly.

Users add their own with `train_and_evaluate(..., extra_actions=[...])`; `StopAt` ends a run
early with a checkpoint, as an interruption would.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import numpy as np

from earlyjax.adaptive import AdaptiveRemoval
from earlyjax.checkpoint import Checkpointer
from earlyjax.metric_log import MetricLog, read_records
from earlyjax.plan import RunPlan

if TYPE_CHECKING:
    from earlyjax.task_protocol import Task


class TrainState(NamedTuple):
    step: jax.Array  # int32 [], optimizer steps taken: the one step counter
    params: Any
    model_state: Any  # e.g. BatchNorm running statistics
    opt_state: Any  # holds every intervention's schedule (earlyjax.interventions)
    rng: jax.Array  # uint32 key data; step s uses fold_in(rng, s)
    # One bool array per params leaf (earlyjax.pruning): pruned weights, and their gradients,
    # stay exactly 0. None: a dense run (its checkpoints hold no mask).
    mask: Any = None


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and what to change."""


@dataclass
class Run:
    """What the periodic actions act on."""

    task: Task
    plan: RunPlan
    workdir: str
    state: TrainState
    log: MetricLog
    checkpointer: Checkpointer
    mesh: Any = None
    pending: list = field(default_factory=list)  # device stats of the steps since the last report
    bar: Any = None  # the progress bar (tqdm)
    recorded: dict = field(default_factory=dict)  # the last recording's values
    record_seconds: float = 0.0
    stop_requested: bool = False
    _postfix: dict = field(default_factory=dict)

    def show(self, key: str, text: str) -> None:
        """Shows `text` after the progress bar, under `key` (e.g. the last loss)."""
        self._postfix[key] = text
        if self.bar is not None:
            self.bar.set_postfix(self._postfix)

    def describe(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description(text)

    def schedule(self, intervention) -> np.ndarray:
        return np.asarray(intervention.get_schedule(self.state.opt_state))

    def trainable(self, step: int) -> list[str]:
        """The blocks (and head) that the update at `step` trains."""
        unfreezing = self.plan.gradual_unfreezing
        return unfreezing.trainable(self.schedule(unfreezing), step)

    def lr(self, step: int) -> float:
        """The learning rate of the update at `step`."""
        switch = self.plan.lr_switch
        factor = 1.0 if switch is None else switch.host_factor(self.schedule(switch), step)
        return self.plan.learning_rate(step) * factor

    def fetch_pending(self, step: int) -> list[dict]:
        """The pending train stats on the host; TrainingDiverged on a non-finite loss."""
        stats = [{k: float(v) for k, v in s.items()} for s in jax.device_get(self.pending)]
        for i, s in enumerate(stats):
            if not np.isfinite(s["loss"]):
                raise TrainingDiverged(
                    f"the training loss became {s['loss']} at step {step - len(stats) + i + 1} "
                    f"(lr={self.plan.lr}). Lower --config.optimizer.lr (or lr_scale) and rerun "
                    f"with a fresh --workdir; the checkpoints and metric log in {self.workdir} "
                    "up to the last good step are kept."
                )
        return stats

    def save_checkpoint(self, step: int) -> None:
        meta = {"step": step, "pending_stats": self.fetch_pending(step)}
        self.checkpointer.save(step, self.state, meta)


class PeriodicAction(abc.ABC):
    """Runs after the train steps `every` divides (step > 0), at the listed `steps`, and (with
    `at_end`) after the last step."""

    def __init__(self, *, every: int = 0, steps: Iterable[int] = (), at_end: bool = False):
        self.every, self.steps, self.at_end = every, frozenset(steps), at_end

    def due(self, step: int, num_steps: int) -> bool:
        periodic = self.every and step > 0 and step % self.every == 0
        return bool(periodic or step in self.steps or (self.at_end and step == num_steps))

    @abc.abstractmethod
    def __call__(self, run: Run, step: int) -> None: ...

    def resume(self, run: Run) -> None:  # noqa: B027 (optional hook, no-op by default)
        """Called once before training, on a fresh or a resumed run (the log is set straight)."""


class ReportTrain(PeriodicAction):
    """A `train` line: mean loss and accuracy since the last one, learning rate, trainable
    blocks."""

    def __call__(self, run, step):
        stats = run.fetch_pending(step)
        run.pending.clear()
        loss = float(np.mean([s["loss"] for s in stats]))
        run.log.write(
            step,
            "train",
            loss=loss,
            accuracy=100.0 * float(np.mean([s["accuracy"] for s in stats])),
            lr=run.lr(step - 1),
            trainable=run.trainable(step - 1),
        )
        run.show("loss", f"{loss:.3f}")


class Record(PeriodicAction):
    """A `record` line: the early-period metrics on the metric set (earlyjax.recording)."""

    def __init__(self, recorder: Callable, steps: Iterable[int]):
        super().__init__(steps=steps)
        self.recorder = recorder

    def __call__(self, run, step):
        t = time.time()
        run.describe(f"record step {step}")
        values = self.recorder(run.state)
        run.describe("train")
        run.record_seconds += time.time() - t
        run.recorded = {"step": step, **values}
        run.show("recorded", f"{step} ({run.record_seconds:.0f}s in metrics)")
        run.log.write(step, "record", trainable=run.trainable(step), **values)


class RemoveAdaptively(PeriodicAction):
    """At each recording, Algorithm 2 on the metric since the last removal may remove the next
    part of the intervention (earlyjax.adaptive); a `release` line says what changed."""

    def __init__(self, adaptive: AdaptiveRemoval, steps: Iterable[int]):
        super().__init__(steps=steps)
        self.adaptive, self.last = adaptive, max(steps)

    def resume(self, run):
        """Rebuilds the segment since the last removal from the metric log."""
        intervention = self.adaptive.intervention
        self.adaptive.restore(read_records(run.log.path), run.schedule(intervention))

    def __call__(self, run, step):
        intervention = self.adaptive.intervention
        schedule = run.schedule(intervention)
        value = run.recorded[self.adaptive.metric]
        new = self.adaptive.update(step, value, schedule, last_recording=step == self.last)
        if new is None:
            return
        opt_state = intervention.set_schedule(run.state.opt_state, new)
        run.state = run.state._replace(opt_state=opt_state)
        run.log.write(step, "release", **intervention.removal_record(schedule, new))


class EvaluateID(PeriodicAction):
    """An `eval_id` line: accuracy and loss on the ID test set, in eval mode."""

    def __call__(self, run, step):
        metrics = run.task.evaluate_id(
            run.state.params, run.state.model_state, run.plan.eval_batch_size, run.mesh
        )
        run.log.write(step, "eval_id", **metrics)


class Checkpoint(PeriodicAction):
    """Saves the train state (with the pending train stats, so that a resumed run logs what
    an uninterrupted one does)."""

    def __call__(self, run, step):
        run.save_checkpoint(step)


class StopAt(PeriodicAction):
    """Ends the run after `step` with a checkpoint, as an interruption would
    (`train_and_evaluate` then returns None)."""

    def __init__(self, step: int):
        super().__init__(steps=(step,))

    def __call__(self, run, step):
        run.stop_requested = True
