"""λ_max (hessian_top_eigenvalue) against a dense `jax.hessian` (issue 4)."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
from helpers import (
    classification_batches,
    mask_without_dense1_kernel,
    mlp_loss,
    mlp_params,
)

from earlyjax.metrics import (
    hessian_top_eigenvalue,
)


def dense_hessian(loss_fn, params, batches):
    """∇² of the mean over batches, from `jax.hessian` on the flattened parameters (float64)."""
    flat, unravel = jax.flatten_util.ravel_pytree(params)

    def mean_loss(vec):
        p = unravel(vec)
        return jnp.mean(jax.vmap(lambda b: loss_fn(p, b))(batches))

    return np.asarray(jax.jit(jax.hessian(mean_loss))(flat), np.float64)


def test_hessian_top_eigenvalue_matches_dense_hessian():
    params, batches = mlp_params(), classification_batches()
    h = dense_hessian(mlp_loss, params, batches)
    eigs = np.linalg.eigvalsh(h)
    assert eigs[0] < 0  # an indefinite Hessian: λ_max is the top one, not the top |λ|
    got = hessian_top_eigenvalue(mlp_loss, params, batches, jax.random.key(0), n_iters=20)
    np.testing.assert_allclose(float(got), eigs[-1], rtol=1e-4)
    # Restricted to trainable leaves: the top eigenvalue of that block of the Hessian.
    mask = mask_without_dense1_kernel(params)
    flags = jax.tree.map(lambda leaf, m: np.full(leaf.shape, m), params, mask)
    keep = np.flatnonzero(jax.flatten_util.ravel_pytree(flags)[0])
    sub = np.linalg.eigvalsh(h[np.ix_(keep, keep)])
    assert abs(sub[-1] - eigs[-1]) > 1e-3 * eigs[-1]  # the restriction matters here
    got = hessian_top_eigenvalue(
        mlp_loss, params, batches, jax.random.key(0), n_iters=20, trainable=mask
    )
    np.testing.assert_allclose(float(got), sub[-1], rtol=1e-4)


def test_hessian_lanczos_returns_the_algebraically_largest_eigenvalue():
    # L(w) = ½ wᵀ A w with eigenvalues -5, -1, 0.5, 2, 3: the largest |λ| is negative.
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    a = jnp.asarray(q @ np.diag([-5.0, -1.0, 0.5, 2.0, 3.0]) @ q.T, jnp.float32)

    def loss_fn(p, batch):
        return 0.5 * p["w"] @ a @ p["w"] + jnp.sum(batch) * 0.0

    params, batches = {"w": jnp.ones((5,))}, jnp.zeros((2, 1))
    got = hessian_top_eigenvalue(loss_fn, params, batches, jax.random.key(0), n_iters=8)
    np.testing.assert_allclose(float(got), 3.0, rtol=1e-5)
    power = hessian_top_eigenvalue(
        loss_fn, params, batches, jax.random.key(0), n_iters=200, method="power"
    )
    np.testing.assert_allclose(float(power), -5.0, rtol=1e-3)  # the documented limitation
