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

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from earlyjax import freezing, metrics, parallel
from earlyjax.interventions import GradualUnfreezing

if TYPE_CHECKING:
    from earlyjax.plan import RecordPlan
    from earlyjax.task_protocol import Task

BN_MODES = ("eval", "batch")
RECORD_STREAM = 0x5EC0  # folded into the run's key, apart from the training steps' keys


@dataclasses.dataclass(frozen=True)
class MetricContext:
    """What a metric evaluates: the parameters, what the task holds fixed, the metric set (in
    batches and as flat inputs), the metric's own random key (None for an unkeyed metric),
    the trainable mask, the record plan, the mesh and the task."""

    params: Any
    fixed: Any
    batches: Any
    flat_x: Any
    key: jax.Array | None
    trainable: Any
    record: RecordPlan
    mesh: Mesh | None
    task: Task
    shared: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def logits_fn(self, p, x):
        return self.task.metric_logits(p, self.fixed, x)

    def loss_fn(self, p, batch):
        return self.task.metric_loss(p, self.fixed, batch)

    def features(self) -> jax.Array:
        """The task's features, computed once for the metrics that read them."""
        if "features" not in self.shared:
            self.shared["features"] = self.task.metric_features(
                self.params, self.fixed, self.flat_x
            )
        return self.shared["features"]


@dataclasses.dataclass(frozen=True)
class _FullLoss:
    """The metric loss over {"params", "fixed"} (S_worst perturbs only the trainable params).
    Equal for equal tasks, so Auto-PGD's host programs, cached per loss, serve the whole run."""

    task: Task

    def __call__(self, full, batch):
        return self.task.metric_loss(full["params"], full["fixed"], batch)


def _fisher(c: MetricContext) -> jax.Array:
    return metrics.fisher_trace(
        c.logits_fn, c.params, c.flat_x, c.key, trainable=c.trainable, mesh=c.mesh
    )


def _avg_sharpness(c: MetricContext) -> jax.Array:
    r = c.record
    return metrics.average_sharpness(
        c.loss_fn, c.params, c.batches, c.key, rho=r.rho, n_samples=r.avg_samples,
        samples_per_pass=r.samples_per_pass, trainable=c.trainable, mesh=c.mesh,
    )  # fmt: skip


def _worst_sharpness(c: MetricContext) -> jax.Array:
    full = {"params": c.params, "fixed": c.fixed}
    mask = {"params": c.trainable, "fixed": jax.tree.map(lambda _: False, c.fixed)}
    value, _ = metrics.worst_sharpness(
        _FullLoss(c.task), full, c.batches, c.key, rho=c.record.rho,
        n_iters=c.record.worst_iters, trainable=mask, mesh=c.mesh,
    )  # fmt: skip
    return value


def _hessian(c: MetricContext) -> jax.Array:
    return metrics.hessian_top_eigenvalue(
        c.loss_fn, c.params, c.batches, c.key, n_iters=c.record.hessian_iters,
        trainable=c.trainable, mesh=c.mesh,
    )  # fmt: skip


class Metric(NamedTuple):
    """A recordable metric: its function of the context, whether it has a random stream, and
    whether its iterations can be driven from Python (Auto-PGD: where that is faster,
    `metrics.apgd_runs_on_host`, it is computed after the compiled recorder)."""

    compute: Callable[[MetricContext], jax.Array]
    keyed: bool = True
    host_loop: bool = False


# The recordable metrics. Those with a random stream come first, in the order their keys are
# split (fixed: adding a metric must not change the others' values; a new keyed metric goes
# after the keyed ones), then those without one. feature_rank holds a key it does not use.
METRICS: dict[str, Metric] = {
    "fisher": Metric(_fisher),
    "avg_sharpness": Metric(_avg_sharpness),
    "worst_sharpness": Metric(_worst_sharpness, host_loop=True),
    "hessian": Metric(_hessian),
    "feature_rank": Metric(lambda c: metrics.feature_rank(c.features())),
    "feature_eigenvalue": Metric(lambda c: metrics.feature_top_eigenvalue(c.features()), False),
}
KEYED = tuple(name for name, metric in METRICS.items() if metric.keyed)
RECORDABLE = tuple(METRICS)


def make_recorder(
    task: Task, record: RecordPlan, unfreezing: GradualUnfreezing, mesh: Mesh | None = None
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
    # On a CPU Auto-PGD runs fastest with its iterations driven from Python (XLA:CPU's slow
    # convolution gradients in loop bodies, `metrics.apgd_runs_on_host`), which cannot happen
    # inside the compiled recorder: S_worst is then computed after it, from its outputs.
    after = tuple(
        name
        for name in record.metrics
        if METRICS[name].host_loop and metrics.apgd_runs_on_host(mesh)
    )
    inside = tuple(name for name in METRICS if name in record.metrics and name not in after)
    # An argument of the compiled recorder, not a constant baked into it.
    metric_batches = dict(task.metric_batches(record.set_size, record.batch_size))
    if mesh is not None:
        metric_batches = parallel.put_replicated(metric_batches, mesh)
    param_groups = None  # group index per parameter leaf, from the first call's params

    @jax.jit
    def record_fn(params, model_state, opt_state, step, rng, metric_batches):
        fixed, batches, flat_x = task.metric_inputs(params, model_state, metric_batches, record.bn)
        release = unfreezing.get_schedule(opt_state)
        trainable = freezing.trainable_mask(param_groups, release, step)
        key = jax.random.fold_in(jax.random.fold_in(rng, RECORD_STREAM), step)
        keys = dict(zip(KEYED, jax.random.split(key, len(KEYED)), strict=True))
        context = MetricContext(params, fixed, batches, flat_x, None, trainable, record, mesh, task)
        out = {
            name: METRICS[name].compute(dataclasses.replace(context, key=keys.get(name)))
            for name in inside
        }
        if not after:
            return out, None
        # What the metrics computed after this need, and whether the weights are finite.
        leaves = jax.tree.leaves((params, fixed))
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
        return out, (finite, {name: (fixed, batches, keys[name], trainable) for name in after})

    def recorder(state) -> dict[str, float]:
        nonlocal param_groups
        if param_groups is None:
            param_groups = unfreezing.groups(state.params)
        rng = jax.random.wrap_key_data(state.rng)
        values, later = record_fn(
            state.params, state.model_state, state.opt_state, state.step, rng, metric_batches
        )
        finite, inputs = later if later is not None else (True, {})
        for name, (fixed, batches, key, trainable) in inputs.items():
            context = MetricContext(
                state.params, fixed, batches, None, key, trainable, record, mesh, task
            )
            # Non-finite weights give NaN, as inside the compiled recorder (the run's loss
            # check then stops it), rather than the eager call's refusal of its inputs.
            values[name] = METRICS[name].compute(context) if bool(finite) else jnp.nan
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
