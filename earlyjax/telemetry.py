"""Telemetry of the early phase (Frankle, Schwab & Morcos 2020, Section 3): how the weights
move between init and the end of training, read from a run's kept checkpoints.

At each kept step t of a run (its `checkpoint_steps`: earlyjax.branch's rewinding points), over
the prunable weights (conv and dense kernels, `earlyjax.pruning.prunable_mask` with the model's
default exclusions):

  mean_magnitude        mean |w_t|
  sign_changes          share of weights whose sign differs from init's (0 counts as +)
  distance_init         ||w_t - w_0||_2       cosine_init   cos(w_t, w_0)
  distance_final        ||w_t - w_T||_2       cosine_final  cos(w_t, w_T)
  gradient_norm         ||grad of the mean training loss over the metric set|| (all params,
                        the recorder's metric set and BatchNorm mode: record.set_size, .bn)

The recorder's metrics (tr(F), S_avg, S_worst) at the same steps come from the run's metric log
(`earlyjax.recording`), so one figure can hold both papers' views of the early period.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from earlyjax import branch
from earlyjax.checkpoint import Checkpointer
from earlyjax.pruning import default_exclusions, prunable_mask
from earlyjax.train import setup

WEIGHT_STATISTICS = (
    "mean_magnitude",
    "sign_changes",
    "distance_init",
    "cosine_init",
    "distance_final",
    "cosine_final",
)


def _flat(params: Any, prunable: Any) -> np.ndarray:
    leaves = jax.tree.leaves(params)
    flags = jax.tree.leaves(prunable)
    kept = [np.ravel(np.asarray(w)) for w, ok in zip(leaves, flags, strict=True) if ok]
    return np.concatenate(kept)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    denominator = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denominator) if denominator else float("nan")


def weight_statistics(params: Any, init: Any, final: Any, prunable: Any) -> dict[str, float]:
    """The weight statistics of the module docstring for `params` against `init` and `final`
    (trees alike; `prunable` one bool per leaf selects the weights)."""
    w, w0, wT = (_flat(p, prunable).astype(np.float64) for p in (params, init, final))
    return {
        "mean_magnitude": float(np.mean(np.abs(w))),
        "sign_changes": float(np.mean((w >= 0) != (w0 >= 0))),
        "distance_init": float(np.linalg.norm(w - w0)),
        "cosine_init": _cosine(w, w0),
        "distance_final": float(np.linalg.norm(w - wT)),
        "cosine_final": _cosine(w, wT),
    }


def gradient_norm_fn(task, batches: dict, bn: str):
    """A jitted `(params, model_state) -> ||grad||`: the norm of the gradient of the mean loss
    over `batches` (the metric set), with what the task holds fixed (BatchNorm statistics)
    taken at `params` and held constant, as the recorder's metrics hold it."""

    @jax.jit
    def norm(params, model_state):
        fixed, inputs, _ = task.metric_inputs(params, model_state, batches, bn)

        def mean_loss(p):
            return jnp.mean(jax.lax.map(lambda b: task.metric_loss(p, fixed, b), inputs))

        return optax.tree.norm(jax.grad(mean_loss)(params))

    return norm


def run_telemetry(workdir: str, steps: tuple[int, ...] | None = None) -> list[dict]:
    """One row per kept step (or `steps`) of the finished run in `workdir`: {"step", the
    weight statistics, "gradient_norm"}. Needs the run's checkpoint at step 0 (init)."""
    config = branch.read_run_config(workdir, "workdir")
    config.data.ood_source = "none"  # the weights and the metric set need no OOD splits
    run_setup, like = setup(config)
    kept = branch.checkpoint_steps(workdir)
    if 0 not in kept:
        raise ValueError(
            f"{workdir} kept no checkpoint at step 0 (it keeps {kept}): telemetry measures from "
            "init; rerun it with 0 in --config.checkpoint_steps"
        )
    end = branch.final_step(workdir, "workdir")
    steps = tuple(kept) if steps is None else steps
    task = run_setup.task
    r = config.record
    batches = task.metric_batches(min(r.set_size, task.num_train), r.batch_size)
    gradient_norm = gradient_norm_fn(task, batches, r.bn)
    checkpoints = Checkpointer(os.path.join(workdir, branch.CHECKPOINT_DIR))
    with contextlib.closing(checkpoints):

        def params_at(step):
            return checkpoints.restore(step, like)[0]

        init, final = params_at(0).params, params_at(end).params
        prunable = prunable_mask(init, default_exclusions(config.model.name))
        rows = []
        for step in steps:
            state = params_at(step)
            row = {"step": step, **weight_statistics(state.params, init, final, prunable)}
            row["gradient_norm"] = float(gradient_norm(state.params, state.model_state))
            rows.append(row)
    return rows
