"""A run branched from another run's checkpoint (Frankle, Schwab & Morcos 2020; open_lth's
branches): rewinding to step k, IMP levels, perturbations at k, and training after a
pre-training phase.

A branch (`config.branch.source` set) starts from the source run's checkpoint at
`branch.step` ("500", or "end": its last step) instead of from init:

  params       the source's at that step; leaves under `branch.reinit` (e.g. "head", the
               4-way rotation head that the main task's replaces) from the branch's own init
  mask         with `branch.prune_from`: that run's final weights pruned by global magnitude
               (`earlyjax.pruning.magnitude_prune`, `prune_fraction` of what its mask keeps;
               the previous IMP level); else none
  transform    `branch.transform` (earlyjax.weight_transforms) on the unpruned weights, seeded
               by the branch's seed; then pruned entries are set to exactly 0
  model state  the source's at that step (BatchNorm running statistics)
  optimizer    a fresh state (momentum 0, the branch's own intervention schedules)
  step         the source's step: the learning-rate schedule, the data order (with the
               source's seed) and the recording steps continue from there, as in open_lth,
               where a run rewound to k trains from step k; so pre-training steps count
               toward the run. With `branch.continue_step=False`, step 0 instead: fine-tuning
               (Sadrtdinov et al. 2023), on the source's data or another data set

Branches are deterministic: the same config and sources give bit-identical states. The
branch is built when its workdir holds no checkpoint; afterwards it resumes like any run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from earlyjax.config import ConfigError, Field, default_config
from earlyjax.periodic import TrainState
from earlyjax.pruning import (
    apply_mask,
    default_exclusions,
    magnitude_prune,
    ones_mask,
    path_str,
    prunable_mask,
)
from earlyjax.weight_transforms import transform_weights

# The config and results files of a run's workdir (earlyjax.train writes them).
CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
CHECKPOINT_DIR = "checkpoints"

# fold_in constants of the branch's randomness (from its seed): the transform and the fresh
# init that "reinit" and "sign_preserving_reinit" draw from.
TRANSFORM_KEY, FRESH_INIT_KEY = 1, 2


@dataclass(frozen=True)
class BranchPoint:
    """Where a branch starts: the source workdir and step, and the run it prunes (or None)."""

    source: str
    step: int
    prune_from: str | None


def is_pruned(config: ml_collections.ConfigDict) -> bool:
    """Whether the config's train state carries a mask."""
    return config.branch.prune_from is not None


def _run_file(workdir: str, name: str, role: str, missing: str) -> dict:
    """The JSON file `name` of the run in `workdir`; ConfigError saying `missing` without it."""
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
        raise ConfigError(f"{role}={workdir} {missing} ({path} not found)")
    with open(path) as f:
        return json.load(f)


def read_run_config(workdir: str, role: str) -> ml_collections.ConfigDict:
    """The config a run in `workdir` was started with, over today's defaults (a field added
    since keeps its default, which reproduces the old behaviour); ConfigError when there is
    none."""
    missing = "holds no run: train that run first, or fix the path"
    config = default_config()
    config.update(_run_file(workdir, CONFIG_FILE, role, missing))
    return config


def builds_same_task(a: ml_collections.ConfigDict, b: ml_collections.ConfigDict) -> bool:
    """Whether two configs build the same task (data and model fields alike), so that one's
    task can restore the other's checkpoints. An image model's `checkpoint` is only where its
    initial weights come from (a global deep ensemble fine-tunes one per member), not part of
    the task; XLM-R's is its architecture and tokenizer."""

    def fields(c: ml_collections.ConfigDict) -> tuple:
        model = json.loads(c.model.to_json())
        if c.task == "image_classification":
            model.pop("checkpoint", None)
        return c.task, json.loads(c.data.to_json()), model

    return fields(a) == fields(b)


def final_step(workdir: str, role: str) -> int:
    """The last step of the finished run in `workdir`; ConfigError when it has not finished."""
    missing = "has not finished: its end is not there yet; finish that run first"
    return int(_run_file(workdir, RESULTS_FILE, role, missing)["steps"])


def checkpoint_steps(workdir: str) -> list[int]:
    """The steps of the checkpoints kept in `workdir`."""
    folder = os.path.join(workdir, CHECKPOINT_DIR)
    if not os.path.isdir(folder):
        return []
    return sorted(int(name) for name in os.listdir(folder) if name.isdigit())


def resolve_step(workdir: str, step: str, role: str) -> int:
    """`step` ("500" or "end") of the run in `workdir`, whose checkpoint must be kept."""
    number = final_step(workdir, role) if step == "end" else int(step)
    kept = checkpoint_steps(workdir)
    if number not in kept:
        raise ConfigError(
            f"{role}={workdir} has no checkpoint at step {number} (it keeps {kept}): rerun it "
            f"with that step in --config.checkpoint_steps, or branch from a kept step"
        )
    return number


def check_sources(config: ml_collections.ConfigDict, num_steps: int) -> BranchPoint | None:
    """The branch point of the config (None for a run from init), after checking that the
    source checkpoint and the run to prune exist and fit this run; ConfigError otherwise.
    Reads only small files: called before the branch's workdir is written."""
    b = config.branch
    if b.source is None:
        return None
    source = os.path.abspath(b.source)
    source_config = read_run_config(source, Field.BRANCH_SOURCE)
    fields = ("model.name", "model.width") + (("data.name",) if b.continue_step else ())
    for field in fields:
        mine, theirs = config[field], source_config[field]
        if mine != theirs:
            raise ConfigError(
                f"branch.source={b.source} was trained with {field}={theirs!r}, this run has "
                f"{mine!r}: a branch trains the same model, and one that continues the source's "
                "step (branch.continue_step) its data too"
            )
    step = resolve_step(source, b.step, Field.BRANCH_SOURCE)
    if b.continue_step and step >= num_steps:
        raise ConfigError(
            f"branch.step={b.step} is step {step}, at or after the end of this {num_steps}-step "
            "run: branch earlier or train longer (total_steps / num_epochs)"
        )
    if source_config.branch.prune_from is not None and b.prune_from is None:
        raise ConfigError(
            f"branch.source={b.source} is a pruned run: set --config.{Field.BRANCH_PRUNE_FROM} "
            "to the run whose weights give this branch's mask"
        )
    prune_from = None
    if b.prune_from is not None:
        prune_from = os.path.abspath(b.prune_from)
        prune_config = read_run_config(prune_from, Field.BRANCH_PRUNE_FROM)
        if prune_config.model.name != config.model.name:
            raise ConfigError(
                f"branch.prune_from={b.prune_from} is a {prune_config.model.name}, this run a "
                f"{config.model.name}: prune the same model"
            )
        resolve_step(prune_from, "end", Field.BRANCH_PRUNE_FROM)
    return BranchPoint(source, step, prune_from)


def prune_exclusions(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The path prefixes never pruned: `branch.prune_exclude` ("default": open_lth's)."""
    exclude = config.branch.prune_exclude
    if exclude == "default":
        return default_exclusions(config.model.name)
    return tuple(p.strip() for p in exclude.split(",") if p.strip())


def prunable_leaves(config: ml_collections.ConfigDict, params: Any) -> Any:
    """One bool per leaf: the conv and dense kernels this config prunes."""
    try:
        return prunable_mask(params, prune_exclusions(config))
    except ValueError as e:
        raise ConfigError(f"branch.prune_exclude={config.branch.prune_exclude!r}: {e}") from None


def with_reinit(params: Any, fresh: Any, prefixes: tuple[str, ...]) -> Any:
    """`params` with every leaf under one of `prefixes` taken from `fresh`; ConfigError for a
    leaf whose shape differs from the fresh one's and is not re-initialised (the source is
    another architecture)."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(fresh)
    source = dict(
        (path_str(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
    )
    leaves = []
    for path, fresh_leaf in flat:
        name = path_str(path)
        if any(name == p or name.startswith(p + "/") for p in prefixes):
            leaves.append(fresh_leaf)
            continue
        if name not in source or np.shape(source[name]) != np.shape(fresh_leaf):
            found = "missing" if name not in source else f"shape {np.shape(source[name])}"
            raise ConfigError(
                f"branch.source's {name} is {found}, this run needs {np.shape(fresh_leaf)}: "
                f"re-initialise it with --config.{Field.BRANCH_REINIT}={name.split('/')[0]}"
            )
        leaves.append(source[name])
    return jax.tree_util.tree_unflatten(treedef, leaves)


def branch_state(
    config: ml_collections.ConfigDict,
    point: BranchPoint,
    fresh: TrainState,
    source: TrainState,
    pruned_run: TrainState | None,
    fresh_params: Any,
) -> TrainState:
    """The branch's first train state (module docstring): from `source` (the source's state at
    the branch step), `pruned_run` (the final state of `branch.prune_from`, or None), `fresh`
    (this config's initial state: its optimizer state, RNG and reinit leaves) and
    `fresh_params` (a second, independent draw of the init, for the reinit transforms)."""
    b = config.branch
    prefixes = tuple(p.strip() for p in b.reinit.split(",") if p.strip())
    params = with_reinit(source.params, fresh.params, prefixes)
    prunable = prunable_leaves(config, params)
    mask = None
    if pruned_run is not None:
        previous = pruned_run.mask if pruned_run.mask is not None else ones_mask(params)
        mask = magnitude_prune(pruned_run.params, previous, prunable, b.prune_fraction)
        mask = jax.tree.map(jnp.asarray, mask)
    if b.transform != "identity":
        key = jax.random.fold_in(jax.random.key(config.seed), TRANSFORM_KEY)
        kw = {"scale": b.transform_scale} if b.transform == "gaussian_noise" else {}
        params = transform_weights(
            b.transform,
            params,
            mask if mask is not None else ones_mask(params),
            prunable,
            key,
            fresh_params=fresh_params,
            **kw,
        )
    if mask is not None:
        params = apply_mask(params, mask)
    return TrainState(
        step=jnp.asarray(point.step if config.branch.continue_step else 0, jnp.int32),
        params=params,
        model_state=source.model_state,
        opt_state=fresh.opt_state,
        rng=fresh.rng,
        mask=mask,
    )
