"""Ensembles of K members evaluated on one set: the averaged softmax and its quality.

`member_outputs` is `[K, N, C]`: K members' logits (`outputs="logits"`, the default) or
softmax probabilities (`outputs="probs"`, e.g. the test-set softmax outputs that
ens-for-transfer saves per checkpoint) on N examples of C classes; `labels` is `[N]` integer
class indices. The ensemble predicts the mean of the members' softmax outputs (Sadrtdinov et
al. 2023, as in deep ensembles), not the softmax of the mean logits.

Units: accuracy and mean per-class accuracy in percent; NLL in nats per example; ECE and
disagreement as fractions in [0, 1]. Everything is jit-compatible (the argument checks read only
shapes, and values only when they are concrete).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

OUTPUTS = ("logits", "probs")
ECE_BINS = 15  # Guo et al. (ICML 2017)
_TINY = float(jnp.finfo(jnp.float32).tiny)


def _check(member_outputs: Any, labels: Any, outputs: str, n_bins: int = ECE_BINS):
    """(member_outputs, labels) as arrays, or a one-line ValueError naming shapes and the fix."""
    if outputs not in OUTPUTS:
        raise ValueError(f"outputs must be one of {OUTPUTS}, got {outputs!r}")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}; Guo et al. use 15")
    member_outputs = jnp.asarray(member_outputs)
    labels = jnp.asarray(labels)
    shape = member_outputs.shape
    if member_outputs.ndim != 3 or min(shape) < 1:
        fix = (
            "add the member axis with outputs[None] for a single model"
            if member_outputs.ndim == 2
            else "stack the members' [N, C] outputs with jnp.stack(...)"
        )
        raise ValueError(
            f"member_outputs must be [K, N, C] (K >= 1 members, N >= 1 examples, C classes), "
            f"got shape {shape}; {fix}"
        )
    if not jnp.issubdtype(member_outputs.dtype, jnp.floating):
        raise ValueError(
            f"member_outputs must be floating-point logits or probabilities [K, N, C], got dtype "
            f"{member_outputs.dtype} and shape {shape}; pass the members' outputs, not predictions"
        )
    if labels.shape != (shape[1],) or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(
            f"labels must be integer class indices [N] = [{shape[1]}] for member_outputs of shape "
            f"{shape} (K, N, C), got shape {labels.shape} and dtype {labels.dtype}; pass one "
            "label per example (one-hot labels: labels.argmax(-1))"
        )
    if not isinstance(labels, jax.core.Tracer):
        with jax.ensure_compile_time_eval():
            low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= shape[2]:
            raise ValueError(
                f"labels must lie in [0, C) = [0, {shape[2]}) for member_outputs of shape {shape} "
                f"(K, N, C), got values in [{low}, {high}]; is the class axis last?"
            )
    if outputs == "probs" and not isinstance(member_outputs, jax.core.Tracer):
        with jax.ensure_compile_time_eval():
            low = float(member_outputs.min())
            worst = float(jnp.max(jnp.abs(member_outputs.sum(-1) - 1.0)))
        if low < 0 or not worst <= 1e-3:
            raise ValueError(
                f"member_outputs with outputs='probs' must be probabilities (>= 0, each row "
                f"summing to 1), got a minimum of {low:.4g} and rows off 1 by up to {worst:.4g} "
                f"(shape {shape}); for logits pass outputs='logits'"
            )
    return member_outputs, labels


def _member_log_probs(member_outputs: jax.Array, outputs: str) -> jax.Array:
    """log softmax [K, N, C] in float32 (probabilities floored at the float32 tiny)."""
    x = member_outputs.astype(jnp.float32)
    if outputs == "logits":
        return jax.nn.log_softmax(x, axis=-1)
    return jnp.log(jnp.maximum(x, _TINY))


def _summary(log_p: jax.Array, labels: jax.Array, n_bins: int) -> dict[str, jax.Array]:
    """Accuracy, mean per-class accuracy, NLL and ECE of ensemble log-probabilities [N, C]."""
    n, c = log_p.shape
    probs = jnp.exp(log_p)
    pred = jnp.argmax(log_p, axis=-1)
    correct = (pred == labels).astype(jnp.float32)
    # Mean per-class accuracy: over the classes that occur in labels.
    onehot = jax.nn.one_hot(labels, c, dtype=jnp.float32)
    per_class_n = onehot.sum(0)
    per_class_correct = correct @ onehot
    present = per_class_n > 0
    class_acc = jnp.where(present, per_class_correct / jnp.maximum(per_class_n, 1.0), 0.0)
    mean_class = class_acc.sum() / present.sum()
    nll = -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], axis=-1))
    # ECE: bin b holds the confidences in (b/n_bins, (b+1)/n_bins]; sum_b |acc_b - conf_b| n_b/N
    # = sum_b |sum_{i in b} (correct_i - conf_i)| / N.
    conf = jnp.max(probs, axis=-1)
    inner_edges = jnp.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    bins = jnp.sum(conf[:, None] > inner_edges, axis=-1)  # edges below conf: its bin
    gap = (correct - conf) @ jax.nn.one_hot(bins, n_bins, dtype=jnp.float32)
    ece = jnp.abs(gap).sum() / n
    return {
        "accuracy": 100.0 * correct.mean(),
        "mean_class_accuracy": 100.0 * mean_class,
        "nll": nll,
        "ece": ece,
    }


def _pair_disagreement(counts: jax.Array, k: jax.Array) -> jax.Array:
    """Mean over member pairs i<j of the fraction of examples where their argmax differs, from
    the per-example vote counts [N, C] of k members: an example with counts n_c has
    (k² - Σ n_c²) / 2 disagreeing pairs of k(k-1)/2. 0 for k = 1."""
    k = jnp.asarray(k, jnp.float32)
    per_example = (k * k - jnp.sum(counts * counts, axis=-1)) / jnp.maximum(k * (k - 1.0), 1.0)
    return jnp.mean(per_example)


def _votes(member_outputs: jax.Array) -> jax.Array:
    """One-hot argmax predictions [K, N, C] (argmax of logits = argmax of probabilities)."""
    c = member_outputs.shape[-1]
    return jax.nn.one_hot(jnp.argmax(member_outputs, axis=-1), c, dtype=jnp.float32)


def ensemble_probs(member_outputs: Any, *, outputs: str = "logits") -> jax.Array:
    """The ensemble's prediction: the mean of the K members' softmax outputs, [N, C] float32.

    `member_outputs`: [K, N, C] logits (`outputs="logits"`) or probabilities (`"probs"`).
    """
    if outputs not in OUTPUTS:
        raise ValueError(f"outputs must be one of {OUTPUTS}, got {outputs!r}")
    member_outputs = jnp.asarray(member_outputs)
    if member_outputs.ndim != 3 or min(member_outputs.shape) < 1:
        raise ValueError(
            f"member_outputs must be [K, N, C] (K >= 1 members, N >= 1 examples, C classes), got "
            f"shape {member_outputs.shape}; stack the members' [N, C] outputs with jnp.stack(...)"
        )
    return _ensemble_probs(member_outputs, outputs)


@functools.partial(jax.jit, static_argnames=("outputs",))
def _ensemble_probs(member_outputs: jax.Array, outputs: str) -> jax.Array:
    x = member_outputs.astype(jnp.float32)
    probs = jax.nn.softmax(x, axis=-1) if outputs == "logits" else x
    return probs.mean(0)


def disagreement(member_outputs: Any) -> jax.Array:
    """Mean pairwise disagreement of K members: the average over pairs i < j of the fraction of
    the N examples on which their argmax predictions differ (a fraction in [0, 1]; 0 for K = 1).

    `member_outputs`: [K, N, C] logits or probabilities (only their argmax is used).
    """
    member_outputs = jnp.asarray(member_outputs)
    if member_outputs.ndim != 3 or min(member_outputs.shape) < 1:
        raise ValueError(
            f"member_outputs must be [K, N, C] (K >= 1 members, N >= 1 examples, C classes), got "
            f"shape {member_outputs.shape}; stack the members' [N, C] outputs with jnp.stack(...)"
        )
    return _disagreement(member_outputs)


@jax.jit
def _disagreement(member_outputs: jax.Array) -> jax.Array:
    return _pair_disagreement(_votes(member_outputs).sum(0), member_outputs.shape[0])


def ensemble_metrics(
    member_outputs: Any, labels: Any, *, outputs: str = "logits", n_bins: int = ECE_BINS
) -> dict[str, jax.Array]:
    """The quality of the ensemble of all K members, as float32 scalars.

    `member_outputs`: [K, N, C] logits (`outputs="logits"`) or softmax probabilities
    (`"probs"`); `labels`: [N] integer classes. Returns
    - `accuracy`: % of examples whose argmax of the averaged softmax is the label;
    - `mean_class_accuracy`: the mean over the classes present in `labels` of each class's
      accuracy, in %;
    - `nll`: -mean log p̄(label | x) of the averaged probabilities p̄, in nats (from logits it is
      computed as a log-mean-exp of the log-softmax, exact; probabilities are floored at the
      float32 tiny, so an exact 0 costs ~87.3 nats rather than inf);
    - `ece`: expected calibration error (Guo et al. 2017) of p̄ with `n_bins` equal-width bins
      of the confidence max_c p̄_c, bin b = (b/n_bins, (b+1)/n_bins]:
      Σ_b |acc_b - conf_b| · n_b / N, a fraction in [0, 1];
    - `disagreement`: the members' mean pairwise disagreement (see `disagreement`), in [0, 1].
    """
    member_outputs, labels = _check(member_outputs, labels, outputs, n_bins)
    return _ensemble_metrics(member_outputs, labels, outputs, n_bins)


@functools.partial(jax.jit, static_argnames=("outputs", "n_bins"))
def _ensemble_metrics(member_outputs, labels, outputs: str, n_bins: int) -> dict[str, jax.Array]:
    k = member_outputs.shape[0]
    log_p = jax.nn.logsumexp(_member_log_probs(member_outputs, outputs), axis=0) - jnp.log(k)
    result = _summary(log_p, labels, n_bins)
    result["disagreement"] = _pair_disagreement(_votes(member_outputs).sum(0), k)
    return result


def ensemble_size_curve(
    member_outputs: Any, labels: Any, *, outputs: str = "logits", n_bins: int = ECE_BINS
) -> dict[str, jax.Array]:
    """`ensemble_metrics` of the first k members for k = 1..K: each value is a [K] array whose
    entry k-1 is the ensemble of members 0..k-1 (entry 0 is member 0 alone, with disagreement
    0). Order the members as they should join (e.g. cycle order for SSE); same arguments and
    units as `ensemble_metrics`. One pass over the members (cumulative sums), no K² work.
    """
    member_outputs, labels = _check(member_outputs, labels, outputs, n_bins)
    return _ensemble_size_curve(member_outputs, labels, outputs, n_bins)


@functools.partial(jax.jit, static_argnames=("outputs", "n_bins"))
def _ensemble_size_curve(member_outputs, labels, outputs: str, n_bins: int):
    k_max = member_outputs.shape[0]
    sizes = jnp.arange(1, k_max + 1, dtype=jnp.float32)
    log_p = jax.lax.cumlogsumexp(_member_log_probs(member_outputs, outputs), axis=0)
    log_p = log_p - jnp.log(sizes)[:, None, None]
    counts = jnp.cumsum(_votes(member_outputs), axis=0)
    result = jax.vmap(lambda lp: _summary(lp, labels, n_bins))(log_p)
    result["disagreement"] = jax.vmap(_pair_disagreement)(counts, sizes)
    return result
