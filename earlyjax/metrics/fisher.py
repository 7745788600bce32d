"""Trace of the Fisher information matrix (Liu & Gurevych, §3.1, Eq. 2; §4).

    tr(F) = E_{x ~ Q̂(x)} E_{ŷ ~ p_w(·|x)} ||∇_w log p_w(ŷ|x)||²,

normalised by the number of trainable parameters (§4). The per-example squared gradient norms
come, for models built of `nn.Dense`, `nn.Conv` and eval-mode `nn.BatchNorm` layers, from one
batched backward pass per chunk and the per-layer identities of `earlyjax.metrics.per_example`
(no per-example gradient is formed); for any other model from `vmap` of per-example gradients,
`chunk_size` examples at a time, so that those held in memory are `chunk_size x P` floats.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh

from earlyjax.metrics._common import (
    active_indices,
    call_fitting_inputs,
    check_finite,
    check_inputs,
    check_key,
    check_mesh,
    check_positive_int,
    device_map,
    merge_active,
    param_count,
    place_on_mesh,
    resolve_trainable,
    select_active,
    weighted_sq_norm,
)
from earlyjax.metrics.per_example import find_layers, sampled_sq_norms

PyTree = Any
LogitsFn = Callable[[PyTree, jax.Array], jax.Array]

ESTIMATORS = ("eq2", "batch_argmax")
PER_EXAMPLE = ("auto", "layers", "vmap")
DEFAULT_CHUNK = 32  # examples whose per-example gradients are held at once (vmap)
LAYERS_CHUNK = 128  # examples per batched forward+backward pass (layers)


def fisher_trace(
    logits_fn: LogitsFn,
    params: PyTree,
    x: jax.Array,
    key: jax.Array,
    *,
    trainable: PyTree | None = None,
    exact: bool = False,
    chunk_size: int | None = None,
    estimator: str = "eq2",
    mesh: Mesh | None = None,
    per_example: str = "auto",
) -> jax.Array:
    """tr(F) of Eq. 2 divided by the number of trainable parameters (float32 scalar).

    Args:
      logits_fn: `logits_fn(params, x) -> logits[N, C]` for a batch `x[N, ...]` (eval mode;
        close over BatchNorm statistics). For "eq2" it is called on one example at a time
        (`x[i][None]`) under `vmap`, so it must not mix examples (BatchNorm in eval mode is fine).
        Pass the same function object on every call: it is a static argument of the compiled
        function, and a new lambda each time recompiles.
      params: the parameter pytree w.
      x: inputs [N, ...] (the empirical distribution Q̂(x); labels are not used).
      key: PRNG key for ŷ ~ p_w(·|x); example i uses `split(key, N)[i]`, so the value does not
        depend on `chunk_size`. Unused by `exact=True` and `estimator="batch_argmax"`.
      trainable: optional pytree of scalar bools with the structure of `params`. Frozen leaves
        are excluded from the squared gradient norm *and* from the parameter count. Concrete
        bools skip the frozen leaves' gradients entirely; a traced mask (e.g. computed in a
        jitted training step) is applied as 0/1 weights.
      exact: take the expectation over ŷ exactly, Σ_c p_c ||∇ log p_c||², instead of sampling
        one ŷ per example. Reference / low-variance option; cost grows with C.
      chunk_size: examples per chunk. None: min(N, 128) for "layers" (memory: a forward+backward
        pass of the chunk plus its convolutions' unfolded inputs); for "vmap" min(N, 32), or
        min(N, max(1, 32 // C)) with `exact` (memory: the chunk's per-example gradients,
        chunk_size x P floats, x C for `exact`). N need not be a multiple (the last chunk is
        padded and masked).
      estimator: "eq2" (default) is Eq. 2. "batch_argmax" is the estimator of the authors'
        earlier FUN-with-Fisher code (Liu et al., NAACL 2024): ŷ = the argmax prediction and the
        squared norm of the gradient of the *batch-mean* loss over all of `x`,
        ||∇ (1/N) Σ_i -log p(ŷ_i|x_i)||², normalised by the same parameter count. That is NOT
        Eq. 2: it estimates ||E g||², which shrinks as N grows, not E||g||². It is offered only
        to compare with numbers produced that way; to reproduce per-batch numbers (e.g. batches
        of 32), call it once per batch and average.
      mesh: optional device mesh (e.g. `earlyjax.parallel.data_mesh()`): the chunks of examples
        are split over its devices, each computing the per-example gradients of its own chunks
        (memory per device as above); the value equals the single-device one up to float
        reassociation. "batch_argmax" ignores it.
      per_example: how the sampled Eq. 2 gets per-example squared gradient norms. "layers":
        one batched forward+backward per chunk and the per-layer identities of
        `earlyjax.metrics.per_example` (models of nn.Dense, nn.Conv and eval-mode
        nn.BatchNorm; ValueError naming what it cannot see otherwise). "vmap": vmap of
        per-example gradients, any model. "auto" (default): "layers" where it applies, else
        "vmap". Both give the same value up to float reassociation. `exact` uses "vmap".

    Cost: "eq2" sampled, "layers": ceil(N/chunk) batched forward+backward passes plus, per
    layer, a batched matmul of its inputs and output gradients; "vmap": ceil(N/chunk) vmapped
    passes of width chunk (a batched forward+backward that also forms per-example weight
    gradients). `exact`: N forwards and N*C backward passes. "batch_argmax": one batched
    forward+backward over N (in chunks of `chunk_size`).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if per_example not in PER_EXAMPLE:
        raise ValueError(f"per_example must be one of {PER_EXAMPLE}, got {per_example!r}")
    if exact and estimator != "eq2":
        raise ValueError("exact=True applies to estimator='eq2' only; drop one of the two")
    if not callable(logits_fn):
        raise ValueError(f"logits_fn must be callable as logits_fn(params, x), got {logits_fn!r}")
    x = check_inputs("fisher_trace", x)
    if chunk_size is not None:
        check_positive_int("chunk_size", chunk_size, "e.g. 32 (or None for the default)")
    key = check_key(key)
    mesh = check_mesh(mesh)
    active, weights = resolve_trainable(params, trainable)
    check_finite("params", params)
    check_finite("x", x)
    params, x = place_on_mesh((params, x), mesh)
    return call_fitting_inputs(
        lambda: _fisher_trace_jit(
            logits_fn,
            params,
            x,
            key,
            weights,
            active=active,
            exact=bool(exact),
            chunk_size=chunk_size,
            estimator=estimator,
            mesh=mesh,
            per_example=per_example,
        ),
        "fisher_trace",
        logits_fn,
        params,
        x=x,
    )


def _chunked(x: jax.Array, chunk: int) -> tuple[jax.Array, jax.Array]:
    """x[N, ...] -> (x[n_chunks, chunk, ...] padded with x[0], mask[n_chunks, chunk])."""
    n = x.shape[0]
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    mask = jnp.concatenate([jnp.ones((n,), jnp.float32), jnp.zeros((pad,), jnp.float32)])
    if pad:
        x = jnp.concatenate([x, jnp.broadcast_to(x[:1], (pad, *x.shape[1:]))], axis=0)
    return x.reshape(n_chunks, chunk, *x.shape[1:]), mask.reshape(n_chunks, chunk)


def _check_logits(logits: jax.Array, n: int) -> None:
    if logits.ndim != 2 or logits.shape[0] != n:
        raise ValueError(
            f"logits_fn must return logits [N, C] for a batch of N inputs; for {n} input(s) it "
            f"returned shape {logits.shape}"
        )


@functools.partial(
    jax.jit,
    static_argnames=(
        "logits_fn", "active", "exact", "chunk_size", "estimator", "mesh", "per_example"
    ),
)  # fmt: skip
def _fisher_trace_jit(
    logits_fn, params, x, key, weights, *, active, exact, chunk_size, estimator, mesh, per_example
):
    n = x.shape[0]
    act = select_active(params, active)
    count = param_count(act, weights)

    if estimator == "batch_argmax":  # one batched pass; not split over a mesh
        xs, mask = _chunked(x, min(n, chunk_size or DEFAULT_CHUNK))

        def add_chunk_grad(gsum, chunk):
            xc, mc = chunk

            def summed_nll(al):
                logits = _logits(logits_fn, params, active, al, xc)
                logp = jax.nn.log_softmax(logits)
                yhat = jnp.argmax(lax.stop_gradient(logp), axis=-1)
                return -jnp.sum(mc * jnp.take_along_axis(logp, yhat[:, None], axis=-1)[:, 0])

            return jax.tree.map(jnp.add, gsum, jax.grad(summed_nll)(act)), None

        gsum, _ = lax.scan(add_chunk_grad, [jnp.zeros_like(a) for a in act], (xs, mask))
        return weighted_sq_norm([g / n for g in gsum], weights) / count

    if exact:
        n_classes = jax.eval_shape(lambda: _logits(logits_fn, params, active, act, x[:1])).shape[1]
        xs, mask = _chunked(x, min(n, chunk_size or max(1, DEFAULT_CHUNK // n_classes)))
        chunks = (xs,)
    else:
        layers = None
        if per_example != "vmap":
            chunk = min(n, chunk_size or LAYERS_CHUNK)
            layers = find_layers(logits_fn, params, x[:chunk], active)
            if isinstance(layers, str):
                if per_example == "layers":
                    raise ValueError(
                        f"fisher_trace(per_example='layers'): {layers}; use per_example='vmap' "
                        "(or 'auto') for this model"
                    )
                layers = None
        xs, mask = _chunked(x, min(n, chunk_size or (LAYERS_CHUNK if layers else DEFAULT_CHUNK)))
        ks, _ = _chunked(jax.random.split(key, n), xs.shape[1])
        chunks = (xs, ks)
        if layers is not None:
            sq = device_map(
                lambda sh, ch: _layers_sq_norms(logits_fn, *sh, ch, layers, active),
                (params, weights),
                chunks,
                mesh,
            )
            return jnp.sum(sq * mask) / n / count
    sq_norms = functools.partial(_chunk_sq_norms, logits_fn, active=active, exact=exact)
    sq = device_map(lambda sh, ch: sq_norms(*sh, ch), (params, weights), chunks, mesh)
    return jnp.sum(sq * mask) / n / count


def _layers_sq_norms(logits_fn, params, weights, chunks, layers, active):
    """[n_chunks, chunk] per-example squared norms by `sampled_sq_norms`, one batched pass per
    chunk (`lax.map`: on XLA:CPU as fast as an unrolled loop here, 1.31 vs 1.30 s for 512
    points of ResNet-18 at width 8 in chunks of 64)."""
    leaf_weights = dict(zip(active_indices(active), weights, strict=True))

    def chunk_norms(chunk):
        x, keys = chunk
        return sampled_sq_norms(logits_fn, params, x, keys, layers, leaf_weights)

    return lax.map(chunk_norms, chunks)


def _logits(logits_fn, params, active, act, xb):
    """logits [n, C] in float32 of a batch xb[n, ...] with the active leaves set to `act`."""
    logits = logits_fn(merge_active(params, active, act), xb)
    _check_logits(logits, xb.shape[0])
    return logits.astype(jnp.float32)


def _chunk_sq_norms(logits_fn, params, weights, chunks, *, active, exact):
    """[n_chunks, chunk] per-example squared gradient norms, one vmapped chunk at a time.

    chunks: (x[n_chunks, chunk, ...],) with `exact`, else (x, keys[n_chunks, chunk]).
    """
    act = select_active(params, active)

    def example_logits(al, xi):  # logits [C] of one example
        return _logits(logits_fn, params, active, al, xi[None])[0]

    def expected_sq_norm(xi):  # Σ_c p_c ||∇ log p_c(xi)||²
        logits, vjp = jax.vjp(lambda al: example_logits(al, xi), act)
        p = jax.nn.softmax(lax.stop_gradient(logits))
        # ∇ log p_c = J^T (e_c - p), so Σ_c p_c ||∇ log p_c||² is the summed squared norm of
        # the vector-Jacobian products with the cotangents sqrt(p_c) (e_c - p), c = 1..C.
        cots = jnp.sqrt(p)[:, None] * (jnp.eye(p.shape[0], dtype=p.dtype) - p[None, :])
        return weighted_sq_norm(jax.vmap(lambda ct: vjp(ct)[0])(cots), weights)

    def sampled_sq_norm(xi, ki):  # ||∇ log p(ŷ|xi)||² with ŷ ~ p(·|xi) drawn from ki
        def log_p_yhat(al):
            logp = jax.nn.log_softmax(example_logits(al, xi))
            return logp[jax.random.categorical(ki, lax.stop_gradient(logp))]

        return weighted_sq_norm(jax.grad(log_p_yhat)(act), weights)

    sq_norm = expected_sq_norm if exact else sampled_sq_norm
    return lax.map(lambda chunk: jax.vmap(sq_norm)(*chunk), chunks)
