"""Gradual unfreezing (Algorithm 1 of Liu & Gurevych, App. A) as an optax transformation.

Parameters are partitioned into blocks by their namespaces: block j owns every leaf whose path
starts with `blocks[j]` (bottom-up, j = 0..L-1), and the head owns the leaves under `head`.
Each group is wrapped in a *release gate* and the gates are combined with `optax.partition`
(optax's `multi_transform`). A gate's state holds the whole release-step array
`release_steps[int32, L + 1]` (blocks 0..L-1, then the head); the gate of group g applies its
inner transformation only once `step >= release_steps[g]`, where `step` is the train state's
step counter, passed to the update (`optimizer.update(grads, opt_state, params, step=step)`),
and before that returns a zero update and leaves its inner state untouched (no momentum
accumulation, no weight decay). Because the schedule is data in the optimizer state, one
compiled update serves the whole run and `set_release_steps` can change the schedule mid-run
(adaptive unfreezing) without recompiling.

Step convention: optimizer steps are counted from 0 (the update applied by the i-th call of
Algorithm 1's loop, i = 1..N, is optimizer step i - 1). Algorithm 1 releases block L-1 at
i = k, block L-2 at i = 2k, ..., block 0 at i = kL, each *before* that iteration's update, so
block j is trainable from optimizer step k(L - j) - 1 on. The head is trainable from step 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

NEVER = np.iinfo(np.int32).max  # release step of a group that stays frozen for the whole run


def _path_str(path: tuple) -> str:
    parts = []
    for entry in path:
        key = getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", entry)))
        parts.append(str(key))
    return "/".join(parts)


def _belongs(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


Head = str | tuple[str, ...]  # the head group: one name, or several trained from step 0 too


def _prefixes(group: Head) -> tuple[str, ...]:
    return (group,) if isinstance(group, str) else tuple(group)


def group_name(group: Head) -> str:
    """A group's name in logs: the head of XLM-R + LoRA is "layers_11+head"."""
    return "+".join(_prefixes(group))


def group_labels(tree: Any, blocks: Sequence[str], head: Head = "head") -> Any:
    """Labels every leaf of `tree` with its group index: j for `blocks[j]`, L for the head.

    Works for any Flax parameter (or batch-statistics) tree: a leaf belongs to the block whose
    name is a prefix of its "/"-joined path (e.g. "layer1" owns "layer1/block0/conv1/kernel").
    The head may own several names (XLM-R + LoRA: the last layer's adapters and the head, both
    trainable from step 0, App. A). Raises ValueError for a leaf that belongs to no group or a
    group that owns no leaf of a parameter tree.
    """
    groups = [*blocks, head]
    owned = [(g, prefix) for g, group in enumerate(groups) for prefix in _prefixes(group)]
    if len({prefix for _, prefix in owned}) != len(owned):
        raise ValueError(f"block and head names must be distinct, got {groups}")

    def label(path, _leaf):
        name = _path_str(path)
        owners = [(g, prefix) for g, prefix in owned if _belongs(name, prefix)]
        if not owners:
            raise ValueError(
                f"parameter {name!r} belongs to no block; blocks are {list(blocks)} and the head "
                f"is {head!r}: add its top-level name to the block list"
            )
        return max(owners, key=lambda o: len(o[1]))[0]  # the most specific prefix wins

    return jax.tree_util.tree_map_with_path(label, tree)


def check_groups_cover(labels: Any, blocks: Sequence[str], head: Head = "head") -> None:
    """Raises ValueError if some block or the head owns no leaf of the labelled tree."""
    owned = set(jax.tree.leaves(labels))
    names = [*blocks, group_name(head)]
    empty = [name for g, name in enumerate(names) if g not in owned]
    if empty:
        raise ValueError(f"blocks {empty} match no parameter; check the block names")


def release_steps_for(k: int | None, num_blocks: int) -> np.ndarray:
    """Algorithm 1's schedule as release steps int32 [num_blocks + 1] (blocks, then head).

    `k=None` is standard training (everything trainable from step 0). With an interval k,
    block j is released at optimizer step k(L - j) - 1 and the head at step 0.
    """
    if k is None:
        return np.zeros(num_blocks + 1, np.int32)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"unfreezing interval k must be None or an int >= 1, got {k!r}")
    if k * num_blocks - 1 >= NEVER:
        raise ValueError(f"unfreezing interval k={k} is too large for int32 step counters")
    steps = [k * (num_blocks - j) - 1 for j in range(num_blocks)]
    return np.asarray([*steps, 0], np.int32)


def head_only_release_steps(num_blocks: int) -> np.ndarray:
    """Release steps that keep every block frozen and train only the head (App. D's signal)."""
    return np.asarray([NEVER] * num_blocks + [0], np.int32)


class ReleaseGateState(NamedTuple):
    """State of one group's gate: the shared schedule and the group's inner optimizer state."""

    release_steps: jax.Array  # int32 [L + 1], the step at which each group becomes trainable
    inner_state: Any


def release_gate(
    inner: optax.GradientTransformation, group: int, release_steps: np.ndarray
) -> optax.GradientTransformationExtraArgs:
    """Applies `inner` to the group's updates once `step >= release_steps[group]`, else zero.

    `step` (int32 [], the train state's step) is an extra argument of the update. While closed
    the inner state is passed through unchanged, so a frozen parameter accumulates no momentum
    and gets no weight decay. `release_steps` is only the initial value: the live schedule is
    read from the state.
    """
    initial = jnp.asarray(release_steps, jnp.int32)

    def init_fn(params):
        return ReleaseGateState(initial, inner.init(params))

    def update_fn(updates, state, params=None, *, step, **extra_args):
        del extra_args
        # A select, not a lax.cond: the inner update is elementwise and cheap, and a select lets
        # XLA fuse it with the rest of the step (a cond is a fusion barrier per group).
        is_open = step >= state.release_steps[group]
        opened, opened_state = inner.update(updates, state.inner_state, params)
        updates = jax.tree.map(lambda u: jnp.where(is_open, u, jnp.zeros_like(u)), opened)
        inner_state = jax.tree.map(
            lambda new, old: jnp.where(is_open, new, old), opened_state, state.inner_state
        )
        return updates, ReleaseGateState(state.release_steps, inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def gradual_unfreezing(
    inner: optax.GradientTransformation,
    labels: Any,
    release_steps: np.ndarray,
) -> optax.GradientTransformation:
    """Gates `inner` per group with `optax.partition`; `labels` comes from `group_labels`.

    Each group gets its own copy of `inner`'s state. Put step-dependent learning-rate schedules
    *outside* this transformation (chain them after it): inside, a schedule's count would only
    start at the group's release.
    """
    release_steps = np.asarray(release_steps, np.int32)
    if release_steps.ndim != 1:
        raise ValueError(f"release_steps must be a 1-D int array, got shape {release_steps.shape}")
    groups = sorted(set(jax.tree.leaves(labels)))
    if groups and (groups[0] < 0 or groups[-1] >= release_steps.size):
        raise ValueError(
            f"labels name groups {groups} but release_steps has {release_steps.size} entries"
        )
    transforms = {g: release_gate(inner, g, release_steps) for g in groups}
    return optax.partition(transforms, labels)


def _is_gate(x: Any) -> bool:
    return isinstance(x, ReleaseGateState)


def _gates(opt_state: Any) -> list[ReleaseGateState]:
    return [s for s in jax.tree.leaves(opt_state, is_leaf=_is_gate) if _is_gate(s)]


def get_release_steps(opt_state: Any) -> jax.Array:
    """The live release-step array int32 [L + 1] held in an optimizer state."""
    gates = _gates(opt_state)
    if not gates:
        raise ValueError("this optimizer state holds no gradual-unfreezing gate")
    return gates[0].release_steps


def set_release_steps(opt_state: Any, release_steps: Any) -> Any:
    """Returns `opt_state` with every gate's schedule replaced; jit-compatible, no recompile."""
    new = jnp.asarray(release_steps, jnp.int32)
    old = get_release_steps(opt_state)
    if new.shape != old.shape:
        raise ValueError(f"release_steps must have shape {old.shape}, got {new.shape}")

    def replace(x):  # a copy per gate: the train step donates the state, buffer by buffer
        return x._replace(release_steps=jnp.array(new)) if _is_gate(x) else x

    return jax.tree.map(replace, opt_state, is_leaf=_is_gate)


def trainable_mask(labels: Any, release_steps: jax.Array, step: jax.Array) -> Any:
    """Pytree of bools: which leaves are trainable at optimizer step `step`."""
    released = jnp.asarray(step) >= jnp.asarray(release_steps)
    return jax.tree.map(lambda g: released[g], labels)
