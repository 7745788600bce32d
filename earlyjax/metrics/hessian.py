"""Top eigenvalue λ_max of the loss Hessian by Lanczos on Hessian-vector products (no dense H).

The loss is the mean over batches of `loss_fn(params, batch)`. A Hessian-vector product is
forward-over-reverse, `jvp(grad(L), (w,), (v,))`, accumulated over the batches with `lax.scan`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh

from earlyjax.metrics._common import (
    call_fitting_inputs,
    check_batches,
    check_finite,
    check_key,
    check_mesh,
    check_positive_int,
    merge_active,
    place_on_mesh,
    resolve_trainable,
    select_active,
    split_over_devices,
)

PyTree = Any
LossFn = Callable[[PyTree, PyTree], jax.Array]
METHODS = ("lanczos", "power")


def hessian_top_eigenvalue(
    loss_fn: LossFn,
    params: PyTree,
    batches: PyTree,
    key: jax.Array,
    *,
    n_iters: int = 20,
    method: str = "lanczos",
    trainable: PyTree | None = None,
    mesh: Mesh | None = None,
) -> jax.Array:
    """λ_max of ∇²_w (1/B) Σ_b loss_fn(w, batch_b), a float32 scalar (loss units per param²).

    Args:
      loss_fn: `loss_fn(params, batch) -> scalar mean loss` of one batch (eval mode), twice
        differentiable.
      params: the parameter pytree w.
      batches: `batch` with an extra leading batch-index axis B.
      key: PRNG key for the start vector (and Lanczos restarts).
      n_iters: Krylov dimension (Lanczos) or number of iterations (power); Lanczos is capped at
        the number of trainable parameters, where it is exact up to rounding.
      method: "lanczos" (default): Lanczos with full reorthogonalisation, returning the largest
        eigenvalue of the tridiagonal matrix, i.e. the *algebraically* largest Ritz value (early in
        training the Hessian has large negative eigenvalues; λ_max is the top one, not the top
        |λ|). It converges much faster than power iteration for the same number of
        products. When the Krylov space is exhausted (β ≈ 0) it restarts with a random vector
        orthogonal to the basis, which keeps every Ritz value a true eigenvalue estimate.
        Memory: (n_iters + 1) x P floats for the basis. "power": power iteration, memory 2 x P;
        returns the Rayleigh quotient of the dominant eigenvector, which is λ_max only when the
        top eigenvalue also has the largest magnitude.
      trainable: optional pytree of scalar bools: the Hessian restricted to trainable leaves.
      mesh: optional device mesh: the examples of each batch are split over its devices (data
        parallel Hessian-vector products).

    Cost: n_iters Hessian-vector products, each one forward-over-reverse pass per batch
    (about 2-3 forward+backward passes).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable as loss_fn(params, batch), got {loss_fn!r}")
    check_batches(batches)
    check_positive_int("n_iters", n_iters, "e.g. 20")
    key = check_key(key)
    mesh = check_mesh(mesh)
    active, weights = resolve_trainable(params, trainable)
    check_finite("params", params)
    check_finite("batches", batches)
    params, batches = place_on_mesh((params, batches), mesh)
    return call_fitting_inputs(
        lambda: _hessian_jit(
            loss_fn,
            params,
            batches,
            key,
            weights,
            active=active,
            n_iters=n_iters,
            method=method,
            mesh=mesh,
        ),
        "hessian_top_eigenvalue",
        loss_fn,
        params,
        batches=batches,
    )


@functools.partial(jax.jit, static_argnames=("loss_fn", "active", "n_iters", "method", "mesh"))
def _hessian_jit(loss_fn, params, batches, key, weights, *, active, n_iters, method, mesh):
    act = select_active(params, active)
    w0, unravel = ravel_pytree(act)
    w0 = w0.astype(jnp.float32)
    dim = w0.shape[0]
    mask = jnp.concatenate(
        [jnp.full((a.size,), wj, jnp.float32) for a, wj in zip(act, weights, strict=True)]
    )
    n_batches = jax.tree.leaves(batches)[0].shape[0]
    batches = split_over_devices(batches, mesh, axis=1)

    def loss_flat(vec, batch):
        loss = loss_fn(merge_active(params, active, unravel(vec)), batch)
        if jnp.shape(loss) != ():
            raise ValueError(f"loss_fn must return a scalar mean loss, got shape {loss.shape}")
        return loss.astype(jnp.float32)

    def hvp(v):
        def body(acc, batch):
            grad_fn = jax.grad(lambda u: loss_flat(u, batch))
            return acc + jax.jvp(grad_fn, (w0,), (v,))[1], None

        total, _ = lax.scan(body, jnp.zeros_like(w0), batches)
        return mask * total / n_batches

    def random_unit(k):
        r = mask * jax.random.normal(k, (dim,), jnp.float32)
        return r / jnp.maximum(jnp.linalg.norm(r), 1e-30)

    if method == "power":
        return _power_iteration(hvp, random_unit, key, n_iters)
    return _lanczos(hvp, random_unit, key, min(n_iters, dim), dim)


def _power_iteration(hvp: Callable, random_unit: Callable, key: jax.Array, n_iters: int):
    """Rayleigh quotient after `n_iters` power steps from a random unit vector."""

    def power_step(_, state):
        v, _lam = state
        hv = hvp(v)
        lam = jnp.vdot(v, hv)
        return hv / jnp.maximum(jnp.linalg.norm(hv), 1e-30), lam

    v0 = random_unit(jax.random.fold_in(key, 0))
    _, lam = lax.fori_loop(0, n_iters, power_step, (v0, jnp.zeros((), jnp.float32)))
    return lam


def _lanczos(hvp: Callable, random_unit: Callable, key: jax.Array, m: int, dim: int):
    """Largest Ritz value of m Lanczos steps with full reorthogonalisation and restarts."""
    rows = jnp.arange(m + 1)

    def orthogonalise(w, basis, n_rows):  # against basis[:n_rows]
        for _ in range(2):  # twice is enough (Kahan-Parlett)
            coef = jnp.where(rows < n_rows, basis @ w, 0.0)
            w = w - coef @ basis
        return w

    def lanczos_step(j, state):
        basis, alphas, betas, beta_prev, scale = state
        # basis[j] is zero at j = 0 and after a breakdown (the Krylov space is exhausted): start
        # or restart from a random vector orthogonal to basis[:j], which keeps the tridiagonal
        # matrix block-diagonal and every Ritz value a true eigenvalue estimate. One random
        # draw per step (not one before the loop as well) keeps a single generator in the
        # compiled program.
        r = orthogonalise(random_unit(jax.random.fold_in(key, j)), basis, j)
        r_norm = jnp.linalg.norm(r)
        r = jnp.where(r_norm > 1e-3, r / jnp.maximum(r_norm, 1e-30), 0.0)
        restart = jnp.linalg.norm(basis[j]) < 0.5
        v = jnp.where(restart, r, basis[j])
        basis = basis.at[j].set(v)
        beta_prev = jnp.where(restart, 0.0, beta_prev)
        valid = jnp.linalg.norm(v) > 0.5  # False once the trainable space is exhausted
        w = hvp(v)
        alpha = jnp.vdot(v, w)
        v_prev = jnp.where(j > 0, basis[jnp.maximum(j - 1, 0)], 0.0)
        w = orthogonalise(w - alpha * v - beta_prev * v_prev, basis, j + 1)
        beta = jnp.linalg.norm(w)
        scale = jnp.maximum(scale, jnp.maximum(jnp.abs(alpha), beta))
        breakdown = beta <= 1e-5 * scale
        nxt = jnp.where(breakdown, 0.0, w / jnp.maximum(beta, 1e-30))
        beta = jnp.where(breakdown, 0.0, beta)
        # A zero basis vector must not add a spurious Ritz value: give it alpha_0, which never
        # exceeds λ_max.
        alphas = alphas.at[j].set(jnp.where(valid, alpha, alphas[0]))
        betas = betas.at[j].set(beta)
        return basis.at[j + 1].set(nxt), alphas, betas, beta, scale

    zero = jnp.zeros((), jnp.float32)
    basis = jnp.zeros((m + 1, dim), jnp.float32)
    state = (basis, jnp.zeros((m,), jnp.float32), jnp.zeros((m,), jnp.float32), zero, zero)
    _, alphas, betas, _, _ = lax.fori_loop(0, m, lanczos_step, state)
    tri = jnp.diag(alphas) + jnp.diag(betas[: m - 1], 1) + jnp.diag(betas[: m - 1], -1)
    return jnp.max(jnp.linalg.eigvalsh(tri))
