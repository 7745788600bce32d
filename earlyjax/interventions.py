"""Early-period interventions: what each one is, and the schedule on which it is removed.

An intervention changes training early on and is removed at a step k (the paper's §6, §7.1):

  GradualUnfreezing  blocks frozen, then released top-down (Algorithm 1); its schedule is the
                     release step of every block (then the head), int32 [L + 1]
  LRSwitch           a learning rate 10x lower (l2h) or higher (h2l) until the switch; its
                     schedule is the switch step, int32 [1]

Every intervention answers the same questions, so that sweeps, auto-k (the random-k baseline
and the winning rate included) and adaptive removal in one run (`earlyjax.adaptive`) handle any
of them through one code path:
  schedule_for_k(k)        removal at interval k (k=None: no intervention at all)
  held()                   never removed: the signal run whose metrics pick k (App. D)
  remove_next(s, step)     the next part removed at `step` (adaptive removal)
  parts_left(s), last_removal(s), max_fitting_k(T)
  overrides_for_k(k), held_overrides()   the config fields that express a schedule

The schedule is data in the optimizer state (`transform` builds the optax piece, `get_schedule`
and `set_schedule` read and replace it): one compiled update serves the whole run and the
schedule can change mid-run without recompiling. Updates take the train state's step as an
extra argument (`optimizer.update(grads, opt_state, params, step=step)`), the one step counter.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from earlyjax import freezing
from earlyjax.config import Field
from earlyjax.freezing import NEVER

LR_SWITCH_DIRECTIONS = ("l2h", "h2l")
OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("constant", "linear", "multistep", "cosine", "warmup_cosine")


class Intervention(abc.ABC):
    """One early-period intervention; see the module docstring."""

    name: ClassVar[str]

    @property
    @abc.abstractmethod
    def label(self) -> str:
        """The short name tables give it: "GU", "lr_l2h"."""

    @abc.abstractmethod
    def schedule_for_k(self, k: int | None) -> np.ndarray: ...

    @abc.abstractmethod
    def held(self) -> np.ndarray: ...

    @abc.abstractmethod
    def remove_next(self, schedule: np.ndarray, step: int) -> np.ndarray: ...

    def remove_all(self, schedule: np.ndarray, step: int) -> np.ndarray:
        """Every part still in place removed at `step`."""
        out = np.asarray(schedule).copy()
        out[out == NEVER] = step
        return out

    def parts_left(self, schedule: np.ndarray) -> int:
        """How many parts are still in place (never removed so far)."""
        return int(np.sum(np.asarray(schedule) == NEVER))

    def last_removal(self, schedule: np.ndarray) -> int:
        """The step of the newest removal so far (0 when none)."""
        s = np.asarray(schedule)
        removed = s[s != NEVER]
        return int(removed.max()) if removed.size else 0

    @abc.abstractmethod
    def max_fitting_k(self, num_steps: int) -> int:
        """The largest k whose whole schedule ends inside a `num_steps`-step run."""

    @abc.abstractmethod
    def overrides_for_k(self, k: int | None) -> tuple[tuple[str, object], ...]: ...

    @abc.abstractmethod
    def held_overrides(self) -> tuple[tuple[str, object], ...]: ...

    @abc.abstractmethod
    def removal_record(self, old: np.ndarray, new: np.ndarray) -> dict:
        """The fields of the metric log's `release` line for a change of schedule."""

    @abc.abstractmethod
    def transform(self, inner: optax.GradientTransformation, params: Any, schedule: np.ndarray):
        """`inner` (the update direction) with this intervention applied on `schedule`."""

    @abc.abstractmethod
    def get_schedule(self, opt_state: Any) -> jax.Array: ...

    @abc.abstractmethod
    def set_schedule(self, opt_state: Any, schedule: Any) -> Any: ...


@dataclass(frozen=True)
class GradualUnfreezing(Intervention):
    """Algorithm 1: `blocks` (bottom-up) frozen, released top-down every k steps; the head
    trains from step 0. Block j is released at optimizer step k(L - j) - 1 (earlyjax.freezing)."""

    blocks: tuple[str, ...]
    head: freezing.Head = "head"
    name: ClassVar[str] = "gradual_unfreezing"
    label: ClassVar[str] = "GU"

    def schedule_for_k(self, k):
        return freezing.release_steps_for(k, len(self.blocks))

    def held(self):
        return freezing.head_only_release_steps(len(self.blocks))

    def remove_next(self, schedule, step):
        out = np.asarray(schedule).copy()
        frozen = [j for j in range(len(self.blocks)) if out[j] == NEVER]
        if frozen:
            out[max(frozen)] = step  # the next block top-down
        return out

    def max_fitting_k(self, num_steps):
        return (num_steps - 1) // len(self.blocks)

    def overrides_for_k(self, k):
        return ((Field.UNFREEZE_K, k),)

    def held_overrides(self):
        return ((Field.UNFREEZE_HEAD_ONLY, True),)

    def removal_record(self, old, new):
        names = [*self.blocks, freezing.group_name(self.head)]
        changed = [n for n, a, b in zip(names, old, new, strict=True) if a != b][::-1]
        return {"intervention": self.name, "blocks": changed, "release_steps": new.tolist()}

    def groups(self, tree: Any) -> Any:
        """Group index of every leaf of a parameter (or model-state) tree: j, or L for the head."""
        return freezing.group_labels(tree, self.blocks, self.head)

    def transform(self, inner, params, schedule):
        labels = self.groups(params)
        freezing.check_groups_cover(labels, self.blocks, self.head)
        return freezing.gradual_unfreezing(inner, labels, schedule)

    def get_schedule(self, opt_state):
        return freezing.get_release_steps(opt_state)

    def set_schedule(self, opt_state, schedule):
        return freezing.set_release_steps(opt_state, schedule)

    def trainable(self, schedule: np.ndarray, step: int) -> list[str]:
        """Names of the groups (blocks, then the head) the update at `step` trains."""
        names = [*self.blocks, freezing.group_name(self.head)]
        return [n for n, r in zip(names, np.asarray(schedule), strict=True) if step >= r]


class SwitchState(NamedTuple):
    """The LR switch's state: the step from which the switched learning rate applies."""

    switch_step: jax.Array  # int32 [1]


@dataclass(frozen=True)
class LRSwitch(Intervention):
    """§7.1: the learning rate is 0.1x (`l2h`, a warm-up) or stays 1x and drops to 0.1x (`h2l`)
    at the switch step; the intervention is the first phase, removed at the switch."""

    direction: str
    name: ClassVar[str] = "lr_switch"

    @property
    def label(self) -> str:
        return f"lr_{self.direction}"

    def __post_init__(self):
        if self.direction not in LR_SWITCH_DIRECTIONS:
            raise ValueError(
                f"unknown LR switch {self.direction!r}; choose one of {LR_SWITCH_DIRECTIONS}"
            )

    @property
    def factors(self) -> tuple[float, float]:
        """The learning-rate factor before and after the switch."""
        return (0.1, 1.0) if self.direction == "l2h" else (1.0, 0.1)

    def schedule_for_k(self, k):
        if k is not None and (isinstance(k, bool) or k < 1):
            raise ValueError(f"the LR switch needs a step k >= 1, got {k!r}")
        return np.asarray([0 if k is None else k], np.int32)

    def held(self):
        return np.asarray([NEVER], np.int32)

    def remove_next(self, schedule, step):
        return self.remove_all(schedule, step)

    def max_fitting_k(self, num_steps):
        return num_steps - 1

    def overrides_for_k(self, k):
        if k is None:
            return ((Field.LR_SWITCH, None), (Field.LR_SWITCH_STEP, None))
        return ((Field.LR_SWITCH_STEP, k),)

    def held_overrides(self):
        return ((Field.LR_SWITCH_STEP, None), (Field.LR_SWITCH_HOLD, True))

    def removal_record(self, old, new):
        return {"intervention": self.name, "switch_step": int(np.asarray(new)[0])}

    def factor(self, schedule: Any, step: Any) -> jax.Array:
        """The learning-rate factor at `step` under `schedule` (traced)."""
        before, after = self.factors
        return jnp.where(step < jnp.asarray(schedule)[0], before, after)

    def host_factor(self, schedule: np.ndarray, step: int) -> float:
        """The same factor on the host, in Python floats (for the metric log)."""
        before, after = self.factors
        return before if step < int(np.asarray(schedule)[0]) else after

    def transform(self, inner, params, schedule):
        initial = jnp.asarray(schedule, jnp.int32)

        def init_fn(params):
            return (inner.init(params), SwitchState(initial))

        def update_fn(updates, state, params=None, *, step, **extra_args):
            inner_state, switch = state
            updates, inner_state = inner.update(updates, inner_state, params, step=step)
            factor = self.factor(switch.switch_step, step)
            updates = jax.tree.map(lambda u: (u * factor).astype(u.dtype), updates)
            return updates, (inner_state, switch)

        return optax.GradientTransformationExtraArgs(init_fn, update_fn)

    def get_schedule(self, opt_state):
        return _switch_state(opt_state).switch_step

    def set_schedule(self, opt_state, schedule):
        new = jnp.asarray(schedule, jnp.int32)

        def replace(x):
            return SwitchState(jnp.array(new)) if isinstance(x, SwitchState) else x

        return jax.tree.map(replace, opt_state, is_leaf=lambda x: isinstance(x, SwitchState))


def _switch_state(opt_state: Any) -> SwitchState:
    found = [
        s
        for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, SwitchState))
        if isinstance(s, SwitchState)
    ]
    if not found:
        raise ValueError("this optimizer state holds no LR switch")
    return found[0]


def pytorch_sgd(momentum: float = 0.0, weight_decay: float = 0.0) -> optax.GradientTransformation:
    """PyTorch SGD's direction without the learning rate: d = g + wd*p; buf = mu*buf + d.

    Scaled by `-lr` afterwards (`build_optimizer`) it is p -= lr * buf, PyTorch's order.
    """
    if momentum < 0 or weight_decay < 0:
        raise ValueError(f"momentum and weight_decay must be >= 0, got {momentum}, {weight_decay}")
    parts = []
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))
    if momentum:
        parts.append(optax.trace(decay=momentum, nesterov=False))
    return optax.chain(*parts) if parts else optax.identity()


def learning_rate_schedule(
    lr_schedule: str,
    lr: float,
    num_steps: int | None = None,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    steps_per_epoch: int = 1,
    warmup_steps: int = 0,
) -> optax.Schedule:
    """The learning rate of the update at a step: "constant"; "linear" from `lr` to 0 at step
    `num_steps` (Hugging Face's linear schedule without warm-up); "multistep": `lr` times
    `gamma` for each milestone step passed (PyTorch's MultiStepLR; open_lth's milestone_steps,
    Frankle et al.'s ResNet-20: ÷10 at epochs 80 and 120); "cosine": PyTorch's
    CosineAnnealingLR to 0 stepped once per epoch, lr/2 (1 + cos(pi e / E)) in epoch e of E
    (Sadrtdinov et al.'s ResNet-50); "warmup_cosine": linear from 0 to `lr` over
    `warmup_steps`, then a per-step cosine to 0 at `num_steps` (their Swin)."""
    if lr <= 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    if lr_schedule == "constant":
        return optax.constant_schedule(lr)
    if lr_schedule != "multistep" and (not num_steps or num_steps < 1):
        raise ValueError(f"a {lr_schedule} schedule needs num_steps >= 1, got {num_steps}")
    if lr_schedule == "linear":
        return optax.linear_schedule(lr, 0.0, num_steps)
    if lr_schedule == "multistep":
        return optax.piecewise_constant_schedule(lr, {int(m): gamma for m in milestones})
    if lr_schedule == "cosine":
        epochs = -(-num_steps // steps_per_epoch)
        per_epoch = optax.cosine_decay_schedule(lr, epochs)
        return lambda step: per_epoch(step // steps_per_epoch)
    if lr_schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps, num_steps, 0.0)
    raise ValueError(f"unknown schedule {lr_schedule!r}: choose one of {LR_SCHEDULES}")


class ScaleByScheduleAtStepState(NamedTuple):
    """`scale_by_learning_rate_at_step` counts nothing: the step comes with each update."""


def scale_by_learning_rate_at_step(
    schedule: optax.Schedule,
) -> optax.GradientTransformationExtraArgs:
    """optax.scale_by_learning_rate(schedule), evaluated at the train state's step (the
    `step=` extra argument) instead of a count of its own: a run branched from step k with a
    fresh optimizer state (earlyjax.branch) continues the schedule at k."""

    def init_fn(params):
        del params
        return ScaleByScheduleAtStepState()

    def update_fn(updates, state, params=None, *, step, **extra):
        del params, extra
        lr = schedule(step)
        return jax.tree.map(lambda g: jnp.array(-lr, dtype=g.dtype) * g, updates), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def pytorch_adamw(weight_decay: float = 0.0) -> optax.GradientTransformation:
    """PyTorch AdamW's direction without the learning rate (default betas and eps): the Adam
    step plus wd*p, so that -lr times it is p(1 - lr wd) - lr adam, PyTorch's decoupled decay.

    Inside the release gates each group keeps its own step count, so a block's bias
    correction counts from its release, as PyTorch's per-parameter `step` does for a
    parameter that had no gradient before. The decay applies to every trainable leaf, as
    PyTorch's AdamW with one parameter group; Hugging Face's Trainer exempts biases and
    LayerNorm weights (with LoRA, of the trainable leaves only the head's biases).
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    adam = optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)
    return optax.chain(adam, optax.add_decayed_weights(weight_decay)) if weight_decay else adam


def build_optimizer(
    params: Any,
    schedules: Sequence[tuple[Intervention, np.ndarray]],
    *,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    name: str = "sgd",
    lr_schedule: str = "constant",
    num_steps: int | None = None,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    steps_per_epoch: int = 1,
    warmup_steps: int = 0,
) -> optax.GradientTransformationExtraArgs:
    """The paper's optimizer: PyTorch SGD (`name="sgd"`, the image settings) or AdamW
    ("adamw", the XLM-R settings), with each (intervention, schedule) applied in order, then
    the learning rate of `learning_rate_schedule` at the train state's step. Updates need
    `step=` (the train state's step)."""
    if name not in OPTIMIZERS or lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"optimizer in {OPTIMIZERS} and schedule in {LR_SCHEDULES}")
    schedule = learning_rate_schedule(
        lr_schedule, lr, num_steps, milestones, gamma, steps_per_epoch, warmup_steps
    )
    tx = pytorch_sgd(momentum, weight_decay) if name == "sgd" else pytorch_adamw(weight_decay)
    for intervention, intervention_schedule in schedules:
        tx = intervention.transform(tx, params, intervention_schedule)
    if lr_schedule == "constant":
        return optax.chain(tx, optax.scale_by_learning_rate(lr))
    return optax.chain(tx, scale_by_learning_rate_at_step(schedule))
