"""Ensembles, paths and soups of trained runs (Sadrtdinov et al. 2023), from their saved
checkpoints, on the ID test set and every OOD split:

- `evaluate_ensemble(members)`: the ensemble's quality (`earlyjax.metrics.ensemble`: the
  averaged softmax's accuracy, mean per-class accuracy, NLL, ECE, and the members'
  disagreement) for ensemble sizes 1..K; `evaluate_members` + `ensemble_curves` are its two
  halves, for callers that reuse a member in several ensembles;
- `interpolation_path(a, b)`: test loss and error along θ(α) = (1-α)·a + α·b and the barrier
  (`earlyjax.interpolation`), each point with BatchNorm statistics recomputed on training data;
- `soup_outputs(members)`: the uniform weight soup's logits, BatchNorm recomputed likewise.

The members are (workdir, step) pairs of image-classification runs that build the same task
(the same data, OOD set and model: seeds, fine-tuning sources and schedules may differ), so
one task serves them all.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from earlyjax import branch
from earlyjax.config import ConfigError
from earlyjax.interpolation import barrier, interpolate, recompute_batch_stats, uniform_soup
from earlyjax.metrics.ensemble import ensemble_size_curve
from earlyjax.train import load_run_state

ID_SET = "id"  # the key of the ID test set among the evaluated sets


def _set_name(task, name) -> str:
    return ID_SET if name == task.id_name else task.cell_name(name)


def member_logits(task, params, model_state, batch_size: int = 500) -> dict[str, tuple]:
    """{set: (logits [N, C], labels [N])} of one model in eval mode on every set the task
    evaluates (`ID_SET`, then each OOD split by its cell name)."""
    logits_of = _eval_logits(task)
    out = {}
    for name, split in task.eval_sets().items():
        chunks = [
            np.asarray(
                logits_of(params, model_state, jnp.asarray(split.images[i : i + batch_size]))
            )
            for i in range(0, len(split.images), batch_size)
        ]
        out[_set_name(task, name)] = (np.concatenate(chunks), np.asarray(split.labels))
    return out


@functools.cache
def _eval_logits(task):
    """The task's eval-mode logits, jitted once per task (not once per member)."""

    @jax.jit
    def logits_of(params, model_state, images):
        return task.logits(params, model_state, {"image": images}, None, False)[0]

    return logits_of


def member_task(members: Sequence[tuple[str, str | int]], with_ood: bool = True):
    """The task that evaluates every member (built from the first's config; its OOD splits
    unless not `with_ood`); ConfigError for members whose configs build different tasks."""
    if not members:
        raise ValueError("an ensemble needs at least one (workdir, step) member")
    configs = [branch.read_run_config(w, "member") for w, _ in members]
    for (workdir, _), config in zip(members[1:], configs[1:], strict=True):
        if not _same_evaluation(config, configs[0]):
            raise ConfigError(
                f"ensemble member {workdir} builds another task than {members[0][0]} (data, OOD "
                "set or model differ): an ensemble's members are evaluated on one task"
            )
    run_setup, _ = load_run_state(*members[0], with_ood=with_ood)
    return run_setup.task


def evaluate_members(
    members: Sequence[tuple[str, str | int]], batch_size: int = 500, task=None
) -> list[dict[str, tuple]]:
    """`member_logits` of each member, on `task` (default: `member_task(members)`)."""
    task = task if task is not None else member_task(members)
    outputs = []
    for workdir, step in members:
        _, state = load_run_state(workdir, step, task)
        outputs.append(member_logits(task, state.params, state.model_state, batch_size))
    return outputs


def ensemble_curves(outputs: Sequence[dict[str, tuple]]) -> dict[str, dict[str, list[float]]]:
    """{set: {metric: [value of the first k members' ensemble for k = 1..K]}} from each
    member's {set: (logits, labels)}, with "ood_mean" (the mean over the OOD splits, as
    results.json's OOD accuracy) when there are OOD splits."""
    curves = {
        name: {
            m: np.asarray(v).tolist()
            for m, v in _curve([o[name][0] for o in outputs], outputs[0][name][1]).items()
        }
        for name in outputs[0]
    }
    ood = [c for name, c in curves.items() if name != ID_SET]
    if ood:
        curves["ood_mean"] = {
            m: np.mean([c[m] for c in ood], axis=0).tolist() for m in curves[ID_SET]
        }
    return curves


def evaluate_ensemble(
    members: Sequence[tuple[str, str | int]], batch_size: int = 500
) -> dict[str, dict[str, list[float]]]:
    """`ensemble_curves` of the members (workdir, step): the ensemble of the first k members
    for k = 1..K on the ID test set, each OOD split and "ood_mean"; ConfigError for members
    whose configs build different tasks."""
    return ensemble_curves(evaluate_members(members, batch_size))


def training_batches(task, examples: int | None, batch_size: int) -> list[jax.Array]:
    """The first `examples` training images (None: all), un-augmented, in batches of at most
    `batch_size`: the data BatchNorm statistics are recomputed on."""
    images = task.dataset.train.images[:examples]
    return [jnp.asarray(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]


def point_logits(task, params, model_state, bn_batches, batch_size: int = 500) -> dict:
    """`member_logits` of a point between models (an interpolation, a soup): its BatchNorm
    running statistics recomputed on `bn_batches` first (a model without BatchNorm as is)."""
    if jax.tree.leaves(model_state):
        model_state = _bn_recompute(task)(params, model_state, tuple(bn_batches))
    return member_logits(task, params, model_state, batch_size)


@functools.cache
def _bn_recompute(task):
    """`recompute_batch_stats` of the task's model in train mode, jitted once per task."""

    def apply_fn(variables, images):
        logits, stats = task.logits(
            variables["params"], variables["batch_stats"], {"image": images}, None, True
        )
        return logits, {"batch_stats": stats}

    @jax.jit
    def recompute(params, model_state, batches):
        return recompute_batch_stats(apply_fn, params, model_state, batches)

    return recompute


_interpolate = jax.jit(interpolate)


def loss_and_error(logits, labels) -> tuple[float, float]:
    """(mean cross-entropy in nats, error in %) of logits [N, C] and labels [N]."""
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    error = 100.0 * jnp.mean(jnp.argmax(logits, -1) != labels)
    return float(nll), float(error)


def interpolation_path(
    a: tuple[str, str | int],
    b: tuple[str, str | int],
    num_points: int = 21,
    bn_examples: int | None = None,
    batch_size: int = 500,
    with_ood: bool = False,
    task=None,
) -> dict:
    """Test loss (nats) and error (%) at `num_points` evenly spaced α in [0, 1] along
    θ(α) = (1-α)·θ_a + α·θ_b between two members (workdir, step), each point's BatchNorm
    statistics recomputed on the first `bn_examples` training images (None: all), and the
    barrier of each (`earlyjax.interpolation.barrier`): {"alpha": [...], set: {"loss": [...],
    "error": [...], "loss_barrier": float, "error_barrier": float}} for the ID test set (and
    every OOD split and "ood_mean" with `with_ood`), or the sets of `task` when given (one
    task for many paths: it compiles once)."""
    if num_points < 2:
        raise ValueError(f"num_points must be >= 2 (both end points), got {num_points}")
    task = task if task is not None else member_task([a, b], with_ood=with_ood)
    (_, start), (_, end) = load_run_state(*a, task), load_run_state(*b, task)
    bn_batches = training_batches(task, bn_examples, batch_size)
    alphas = np.linspace(0.0, 1.0, num_points)
    path: dict = {"alpha": alphas.tolist()}
    for alpha in alphas:
        params = _interpolate(start.params, end.params, float(alpha))
        logits = point_logits(task, params, start.model_state, bn_batches, batch_size)
        for name, (x, labels) in logits.items():
            loss, error = loss_and_error(x, labels)
            path.setdefault(name, {"loss": [], "error": []})
            path[name]["loss"].append(loss)
            path[name]["error"].append(error)
    sets = [name for name in path if name != "alpha"]
    ood = [name for name in sets if name != ID_SET]
    if ood:
        path["ood_mean"] = {
            m: np.mean([path[name][m] for name in ood], axis=0).tolist() for m in ("loss", "error")
        }
    for name, values in path.items():
        if name != "alpha":
            for m in ("loss", "error"):
                values[f"{m}_barrier"] = float(barrier(values[m], alphas))
    return path


def soup_outputs(
    members: Sequence[tuple[str, str | int]],
    bn_examples: int | None = None,
    batch_size: int = 500,
    task=None,
) -> dict[str, tuple]:
    """{set: (logits, labels)} of the uniform weight soup of the members (the mean of their
    params), BatchNorm statistics recomputed on the first `bn_examples` training images; on
    `task` when given (default: `member_task(members)`)."""
    task = task if task is not None else member_task(members)
    states = [load_run_state(workdir, step, task)[1] for workdir, step in members]
    soup = uniform_soup([state.params for state in states])
    bn_batches = training_batches(task, bn_examples, batch_size)
    return point_logits(task, soup, states[0].model_state, bn_batches, batch_size)


def _curve(logits: list, labels) -> dict:
    return ensemble_size_curve(jnp.stack([jnp.asarray(x) for x in logits]), jnp.asarray(labels))


def _same_evaluation(a, b) -> bool:
    """Whether two run configs build the same task (data, OOD set, model)."""
    return branch.builds_same_task(a, b)
