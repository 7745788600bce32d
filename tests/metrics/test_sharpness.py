"""Average sharpness S_avg against the closed form of a quadratic loss (issue 4)."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    classification_batches,
    mlp_loss,
    mlp_params,
)

from earlyjax.metrics import (
    average_sharpness,
)


def quadratic_problem(n_batches=4):
    """L_b(w) = ½ Σ_j a_j (w_j - m_bj)², diagonal curvature a, a different centre per batch."""
    rng = np.random.default_rng(0)
    params = {
        "u": jnp.asarray(rng.normal(size=(5,)) + 2.0, jnp.float32),
        "v": jnp.asarray(rng.normal(size=(2, 3)), jnp.float32),
    }
    curv = {
        "u": jnp.asarray(rng.uniform(0.5, 3.0, size=(5,)), jnp.float32),
        "v": jnp.asarray(rng.uniform(0.5, 3.0, size=(2, 3)), jnp.float32),
    }
    centres = jax.tree.map(  # near w, so that the curvature term dominates the noise
        lambda w: w + jnp.asarray(0.05 * rng.normal(size=(n_batches, *w.shape)), jnp.float32),
        params,
    )

    def loss_fn(p, m):
        terms = jax.tree.map(lambda w, a, mb: 0.5 * jnp.sum(a * (w - mb) ** 2), p, curv, m)
        return sum(jax.tree.leaves(terms))

    return params, curv, centres, loss_fn


def quadratic_mean_and_se(params, curv, centres, rho, n_samples, adaptive, keep=("u", "v")):
    """Closed form of E_δ L(w+δ) - L(w) and the standard error of the estimator.

    With δ_j ~ N(0, σ_j²), σ_j = ρ c_j: the difference is Σ_j g_bj δ_j + ½ a_j δ_j², of mean
    ½ Σ a_j σ_j² and variance Σ g_bj² σ_j² + ½ Σ a_j² σ_j⁴ per batch b, averaged over
    n_samples draws per batch and over the batches.
    """
    n_batches = centres["u"].shape[0]
    mean, var = 0.0, 0.0
    for name in keep:
        w = np.asarray(params[name], np.float64)
        a = np.asarray(curv[name], np.float64)
        m = np.asarray(centres[name], np.float64)
        sigma2 = (rho * (np.abs(w) if adaptive else 1.0)) ** 2
        mean += 0.5 * np.sum(a * sigma2)
        grads = a * (w - m)  # [B, ...]
        var += np.mean(np.sum((grads**2 * sigma2).reshape(n_batches, -1), axis=1))
        var += 0.5 * np.sum(a**2 * sigma2**2)
    return mean, np.sqrt(var / (n_samples * n_batches))


def test_average_sharpness_zero_rho_is_zero():
    params, batches = mlp_params(), classification_batches()
    value = average_sharpness(mlp_loss, params, batches, jax.random.key(0), rho=0.0)
    loss = float(mlp_loss(params, (batches[0][0], batches[1][0])))
    assert abs(float(value)) <= 1e-6 * loss  # float rounding only


@pytest.mark.parametrize("adaptive", [True, False])
def test_average_sharpness_matches_quadratic_closed_form(adaptive):
    params, curv, centres, loss_fn = quadratic_problem()
    rho, n_samples = 0.3, 64
    mean, se = quadratic_mean_and_se(params, curv, centres, rho, n_samples, adaptive)
    value = average_sharpness(
        loss_fn, params, centres, jax.random.key(1), rho=rho, n_samples=n_samples,
        adaptive=adaptive,
    )  # fmt: skip
    assert se < 0.2 * mean
    assert abs(float(value) - mean) < 4 * se, (float(value), mean, se)


def test_average_sharpness_frozen_leaves_and_passes():
    params, curv, centres, loss_fn = quadratic_problem()
    rho, n_samples = 0.3, 64
    mask = {"u": True, "v": False}
    mean, se = quadratic_mean_and_se(params, curv, centres, rho, n_samples, True, keep=("u",))
    key = jax.random.key(2)
    kw = dict(rho=rho, n_samples=n_samples, trainable=mask)
    value = average_sharpness(loss_fn, params, centres, key, **kw)
    assert abs(float(value) - mean) < 4 * se, (float(value), mean, se)
    # Chunking the samples into passes (the default: one at a time on a CPU, all at once
    # elsewhere) changes nothing but memory and speed.
    for per_pass in (10, n_samples):
        chunked = average_sharpness(loss_fn, params, centres, key, samples_per_pass=per_pass, **kw)
        np.testing.assert_allclose(float(chunked), float(value), rtol=1e-5)


def test_average_sharpness_shared_noise_uses_one_set_of_perturbations():
    params, (x, y) = mlp_params(), classification_batches()
    swapped = (x[::-1], y[::-1])
    key, kw = jax.random.key(3), dict(rho=0.1, n_samples=4)
    # One set of perturbations for every batch: the order of the batches does not matter.
    shared = average_sharpness(mlp_loss, params, (x, y), key, shared_noise=True, **kw)
    shared_swapped = average_sharpness(mlp_loss, params, swapped, key, shared_noise=True, **kw)
    np.testing.assert_allclose(float(shared_swapped), float(shared), rtol=1e-6)
    # Fresh noise per batch (the default): it does.
    fresh = average_sharpness(mlp_loss, params, (x, y), key, **kw)
    fresh_swapped = average_sharpness(mlp_loss, params, swapped, key, **kw)
    assert abs(float(fresh) - float(fresh_swapped)) > 1e-6
