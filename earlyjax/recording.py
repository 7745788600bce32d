"""Early-period recording: the paper's metrics every few steps on the fixed metric set.

Every `record.every` steps up to `record.until` (paper: 10 and 2000) the training loop calls a
recorder built here. It evaluates, with BatchNorm as `record.bn` says, on the metric set
(the first `record.set_size` training examples, un-augmented, in batches of
`record.batch_size`; paper: 2048 in batches of 256), over the parameters that are trainable
at that step:

  fisher            tr(F) of Eq. 2 per trainable parameter (one sampled ŷ per example)
  avg_sharpness     S_avg of Eq. 3 (ρ = record.rho, record.avg_samples perturbations, adaptive)
  worst_sharpness   S_worst of Eq. 4 (Auto-PGD, record.worst_iters iterations, adaptive)
  hessian           λ_max of the loss Hessian (Lanczos, record.hessian_iters iterations)
  feature_rank      99%-variance rank of the penultimate features (App. E.1)
  feature_eigenvalue  the largest eigenvalue of their covariance (App. C's "feature λ_max")

BatchNorm (`record.bn`): "eval" normalises with the running statistics, as a model in eval
mode does (and as Andriushchenko et al.'s sharpness code evaluates). Early in training those
lag: they start at (0, 1) and, at PyTorch's momentum 0.1, need tens of steps to follow the
weights, which is exactly Algorithm 2's transient window. "batch" normalises with the
statistics of the whole metric set at the current weights (one train-mode forward pass over
it; the running statistics are untouched), held fixed inside each metric, so per-example
gradients (tr(F)) stay well defined and every metric sees the same normalisation.

The trainable mask is traced data (from the release-step array in the optimizer state), so one
compiled recorder serves the whole run, whatever the schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from earlyjax import freezing, metrics, parallel
from earlyjax.interventions import GradualUnfreezing

if TYPE_CHECKING:
    from earlyjax.plan import RecordPlan

# The metrics with a random stream, in the order their keys are split (fixed: adding a metric
# must not change the others' values), then those without one.
KEYED = ("fisher", "avg_sharpness", "worst_sharpness", "hessian", "feature_rank")
RECORDABLE = (*KEYED, "feature_eigenvalue")
BN_MODES = ("eval", "batch")
RECORD_STREAM = 0x5EC0  # folded into the run's key, apart from the training steps' keys


def make_recorder(
    task, record: RecordPlan, unfreezing: GradualUnfreezing, mesh: Mesh | None = None
) -> Callable[[object], dict[str, float]]:
    """Returns recorder(train_state) -> {metric: value} for the metrics `record` names.

    The task gives the metric set and what the metrics evaluate (`task.metric_batches`,
    `metric_inputs`, `metric_logits`, `metric_loss`, `metric_features`); the trainable mask
    comes from the gradual-unfreezing schedule in the optimizer state. With a `mesh` of
    several devices the metrics run data-parallel over them (the `mesh` argument of
    `earlyjax.metrics`); a one-device mesh is dropped: there is nothing to split, and without
    one the metrics need no `shard_map` and Auto-PGD can run from Python on a CPU.
    """
    if mesh is not None and mesh.size == 1:
        mesh = None
    names = record.metrics
    # An argument of the compiled recorder, not a constant baked into it.
    metric_batches = dict(task.metric_batches(record.set_size, record.batch_size))
    if mesh is not None:
        metric_batches = parallel.put_replicated(metric_batches, mesh)
    param_groups = None  # group index per parameter leaf, from the first call's params
    # On a CPU Auto-PGD runs fastest with its iterations driven from Python (XLA:CPU's slow
    # convolution gradients in loop bodies, `metrics.apgd_runs_on_host`), which cannot happen
    # inside the compiled recorder: S_worst is then computed after it, from its outputs.
    worst_after = "worst_sharpness" in names and metrics.apgd_runs_on_host(mesh)

    def worst_loss(full, batch):  # one function for the run, so its compiled step is reused
        return task.metric_loss(full["params"], full["fixed"], batch)

    def worst_sharpness(params, fixed, batches, key, trainable):
        full = {"params": params, "fixed": fixed}
        mask = {"params": trainable, "fixed": jax.tree.map(lambda _: False, fixed)}
        value, _ = metrics.worst_sharpness(
            worst_loss,
            full,
            batches,
            key,
            rho=record.rho,
            n_iters=record.worst_iters,
            trainable=mask,
            mesh=mesh,
        )
        return value

    @jax.jit
    def record_fn(params, model_state, opt_state, step, rng, metric_batches):
        fixed, batches, flat_x = task.metric_inputs(params, model_state, metric_batches, record.bn)

        def logits_fn(p, x):
            return task.metric_logits(p, fixed, x)

        def loss_fn(p, batch):
            return task.metric_loss(p, fixed, batch)

        release = unfreezing.get_schedule(opt_state)
        trainable = freezing.trainable_mask(param_groups, release, step)
        key = jax.random.fold_in(jax.random.fold_in(rng, RECORD_STREAM), step)
        keys = dict(zip(KEYED, jax.random.split(key, len(KEYED)), strict=True))
        out = {}
        if "fisher" in names:
            out["fisher"] = metrics.fisher_trace(
                logits_fn, params, flat_x, keys["fisher"], trainable=trainable, mesh=mesh
            )
        if "avg_sharpness" in names:
            out["avg_sharpness"] = metrics.average_sharpness(
                loss_fn,
                params,
                batches,
                keys["avg_sharpness"],
                rho=record.rho,
                n_samples=record.avg_samples,
                samples_per_pass=record.samples_per_pass,
                trainable=trainable,
                mesh=mesh,
            )
        if "worst_sharpness" in names and not worst_after:
            out["worst_sharpness"] = worst_sharpness(
                params, fixed, batches, keys["worst_sharpness"], trainable
            )
        if "hessian" in names:
            out["hessian"] = metrics.hessian_top_eigenvalue(
                loss_fn,
                params,
                batches,
                keys["hessian"],
                n_iters=record.hessian_iters,
                trainable=trainable,
                mesh=mesh,
            )
        if "feature_rank" in names or "feature_eigenvalue" in names:
            features = task.metric_features(params, fixed, flat_x)
            if "feature_rank" in names:
                out["feature_rank"] = metrics.feature_rank(features)
            if "feature_eigenvalue" in names:
                out["feature_eigenvalue"] = metrics.feature_top_eigenvalue(features)
        worst_inputs = None
        if worst_after:
            leaves = jax.tree.leaves((params, fixed))
            finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
            worst_inputs = (finite, (fixed, batches, keys["worst_sharpness"], trainable))
        return out, worst_inputs

    def recorder(state) -> dict[str, float]:
        nonlocal param_groups
        if param_groups is None:
            param_groups = unfreezing.groups(state.params)
        rng = jax.random.wrap_key_data(state.rng)
        values, worst_inputs = record_fn(
            state.params, state.model_state, state.opt_state, state.step, rng, metric_batches
        )
        if worst_inputs is not None:
            finite, inputs = worst_inputs
            # Non-finite weights give NaN, as inside the compiled recorder (the run's loss
            # check then stops it), rather than the eager call's refusal of its inputs.
            values["worst_sharpness"] = (
                worst_sharpness(state.params, *inputs) if bool(finite) else jnp.nan
            )
        return {k: float(v) for k, v in sorted(jax.device_get(values).items())}

    return recorder


def check_record_config(record_config, names: Sequence[str] = RECORDABLE) -> list[str]:
    """Messages for impossible record.* values (empty when fine)."""
    r = record_config
    problems = []
    unknown = sorted(set(r.metrics) - set(names))
    if unknown:
        problems.append(f"unknown record.metrics {unknown}: choose from {names}")
    for field in ("every", "until"):
        if r[field] < 0:
            problems.append(f"record.{field} must be >= 0, got {r[field]}")
    for field in ("set_size", "batch_size", "avg_samples", "worst_iters", "hessian_iters"):
        if r[field] < 1:
            problems.append(f"record.{field} must be >= 1, got {r[field]}")
    if r.samples_per_pass is not None and r.samples_per_pass < 1:
        problems.append(f"record.samples_per_pass must be None or >= 1, got {r.samples_per_pass}")
    if r.bn not in BN_MODES:
        problems.append(f"record.bn must be one of {BN_MODES}, got {r.bn!r}")
    if r.set_size % r.batch_size:
        problems.append(
            f"record.set_size {r.set_size} must be a multiple of record.batch_size {r.batch_size}"
        )
    if not r.rho > 0:
        problems.append(f"record.rho must be > 0, got {r.rho}")
    return problems
