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

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from earlyjax import freezing, metrics, parallel
from earlyjax.data.pipeline import normalize
from earlyjax.models.init import BN_MOMENTUM

RECORDABLE = ("fisher", "avg_sharpness", "worst_sharpness", "hessian", "feature_rank")
BN_MODES = ("eval", "batch")
RECORD_STREAM = 0x5EC0  # folded into the run's key, apart from the training steps' keys


def record_steps(every: int, until: int, num_steps: int) -> list[int]:
    """The steps (counted in updates done) at which a run records: 0, every, ..., <= until."""
    if not every:
        return []
    return list(range(0, min(until, num_steps) + 1, every))


def make_recorder(
    experiment, record_config, metric_batches: dict, mesh: Mesh | None = None
) -> Callable[[object], dict[str, float]]:
    """Returns recorder(state) -> {metric: value} for the metrics named in record_config.

    `experiment` is `earlyjax.train.Experiment`; `metric_batches` holds uint8 images
    [B, b, H, W, C] and labels [B, b] (`earlyjax.data.pipeline.metric_set`). With a `mesh`
    the metrics run data-parallel over its devices (the `mesh` argument of `earlyjax.metrics`).
    """
    names = tuple(record_config.metrics)
    unknown = sorted(set(names) - set(RECORDABLE))
    if unknown:
        raise ValueError(f"unknown record.metrics {unknown}; choose from {RECORDABLE}")
    model = experiment.model
    mean, std = jnp.asarray(experiment.mean), jnp.asarray(experiment.std)
    # An argument of the compiled recorder, not a constant baked into it.
    metric_batches = dict(metric_batches)
    if mesh is not None:
        metric_batches = parallel.put_replicated(metric_batches, mesh)

    @jax.jit
    def record(params, batch_stats, opt_state, step, rng, metric_batches):
        images = normalize(metric_batches["image"], mean, std)
        batches = {"image": images, "label": metric_batches["label"]}
        flat_x = images.reshape(-1, *images.shape[2:])
        if record_config.bn == "batch":
            batch_stats = metric_set_statistics(model, params, batch_stats, flat_x)
        variables = {"batch_stats": batch_stats}

        def logits_fn(p, x):
            return model.apply({"params": p, **variables}, x, train=False)

        def loss_fn(p, batch):
            logits = logits_fn(p, batch["image"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

        release = freezing.get_release_steps(opt_state)
        trainable = freezing.trainable_mask(experiment.param_groups, release, step)
        key = jax.random.fold_in(jax.random.fold_in(rng, RECORD_STREAM), step)
        keys = dict(zip(RECORDABLE, jax.random.split(key, len(RECORDABLE)), strict=True))
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
                rho=record_config.rho,
                n_samples=record_config.avg_samples,
                samples_per_pass=record_config.samples_per_pass,
                trainable=trainable,
                mesh=mesh,
            )
        if "worst_sharpness" in names:
            out["worst_sharpness"], _ = metrics.worst_sharpness(
                loss_fn,
                params,
                batches,
                keys["worst_sharpness"],
                rho=record_config.rho,
                n_iters=record_config.worst_iters,
                trainable=trainable,
                mesh=mesh,
            )
        if "hessian" in names:
            out["hessian"] = metrics.hessian_top_eigenvalue(
                loss_fn,
                params,
                batches,
                keys["hessian"],
                n_iters=record_config.hessian_iters,
                trainable=trainable,
                mesh=mesh,
            )
        if "feature_rank" in names:
            features = model.apply(
                {"params": params, **variables}, flat_x, method=type(model).penultimate
            )
            out["feature_rank"] = metrics.feature_rank(features)
        return out

    def recorder(state) -> dict[str, float]:
        rng = jax.random.wrap_key_data(state.rng)
        values = record(
            state.params, state.batch_stats, state.opt_state, state.step, rng, metric_batches
        )
        return {k: float(v) for k, v in jax.device_get(values).items()}

    return recorder


def metric_set_statistics(model, params, batch_stats, x: jax.Array):
    """BatchNorm statistics (mean, biased variance) of `x` at `params`, in `batch_stats` form.

    One train-mode forward pass from zeroed running statistics: Flax's update
    new = m * old + (1 - m) * batch gives the batch statistics as new / (1 - m).
    """
    zeros = jax.tree.map(jnp.zeros_like, batch_stats)
    _, updates = model.apply(
        {"params": params, "batch_stats": zeros}, x, train=True, mutable=["batch_stats"]
    )
    return jax.tree.map(lambda s: s / (1.0 - BN_MOMENTUM), updates["batch_stats"])


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
