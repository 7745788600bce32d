"""Ensembles of trained runs (Sadrtdinov et al. 2023): the members' logits on the ID test set and
every OOD split, from their saved checkpoints, and the ensemble's quality on each
(`earlyjax.metrics.ensemble`: the averaged softmax's accuracy, mean per-class accuracy, NLL,
ECE, and the members' disagreement), for ensemble sizes 1..K.

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

from earlyjax import branch
from earlyjax.config import ConfigError
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


def evaluate_ensemble(
    members: Sequence[tuple[str, str | int]], batch_size: int = 500
) -> dict[str, dict[str, list[float]]]:
    """{set: {metric: [value of the first k members' ensemble for k = 1..K]}} over the ID test
    set, each OOD split and "ood_mean" (the mean over the OOD splits, as results.json's OOD
    accuracy); ConfigError for members whose configs build different tasks."""
    if not members:
        raise ValueError("evaluate_ensemble needs at least one (workdir, step) member")
    configs = [branch.read_run_config(w, "member") for w, _ in members]
    for (workdir, _), config in zip(members[1:], configs[1:], strict=True):
        if not _same_evaluation(config, configs[0]):
            raise ConfigError(
                f"ensemble member {workdir} builds another task than {members[0][0]} (data, OOD "
                "set or model differ): an ensemble's members are evaluated on one task"
            )
    run_setup, _ = load_run_state(*members[0], with_ood=True)
    task = run_setup.task
    per_set: dict[str, list] = {}
    for workdir, step in members:
        _, state = load_run_state(workdir, step, task)
        for name, (logits, labels) in member_logits(
            task, state.params, state.model_state, batch_size
        ).items():
            per_set.setdefault(name, [labels])
            per_set[name].append(logits)
    curves = {
        name: {m: np.asarray(v).tolist() for m, v in _curve(outputs[1:], outputs[0]).items()}
        for name, outputs in per_set.items()
    }
    ood = [c for name, c in curves.items() if name != ID_SET]
    if ood:
        curves["ood_mean"] = {
            m: np.mean([c[m] for c in ood], axis=0).tolist() for m in curves[ID_SET]
        }
    return curves


def _curve(logits: list, labels) -> dict:
    return ensemble_size_curve(jnp.stack([jnp.asarray(x) for x in logits]), jnp.asarray(labels))


def _same_evaluation(a, b) -> bool:
    """Whether two run configs build the same task (data, OOD set, model)."""
    return branch.builds_same_task(a, b)
