"""Feature rank and the feature covariance's λ_max against matrices of known spectrum (issue 4)."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from earlyjax.metrics import (
    feature_rank,
    feature_top_eigenvalue,
)


def features_with_spectrum(sq_singular_values, n=200, d=40, seed=0):
    """F = U diag(σ) Vᵀ with orthonormal, centred U: PCA's squared singular values are σ²."""
    rng = np.random.default_rng(seed)
    r = len(sq_singular_values)
    m = rng.normal(size=(n, r))
    u, _ = np.linalg.qr(m - m.mean(axis=0))
    v, _ = np.linalg.qr(rng.normal(size=(d, r)))
    return jnp.asarray(u @ np.diag(np.sqrt(sq_singular_values)) @ v.T, jnp.float32)


def test_feature_rank_on_constructed_low_rank_features():
    # cumulative variance: 60, 85, 95, 98.5, 99.5, 99.8, 100 (%)
    feats = features_with_spectrum([60.0, 25.0, 10.0, 3.5, 1.0, 0.3, 0.2])
    assert int(feature_rank(feats)) == 5
    assert int(feature_rank(feats, threshold=0.9)) == 3
    assert int(feature_rank(feats, threshold=1.0)) == 7  # the numerical rank, not min(N, D)
    assert int(feature_rank(1e3 * feats + 5.0)) == 5  # scale- and offset-invariant (PCA)
    assert int(feature_rank(jnp.ones((10, 4)))) == 0
    assert int(jax.jit(lambda f, t: feature_rank(f, threshold=t))(feats, 0.9)) == 3
    # Andriushchenko et al.'s convention: centre each example, count cumsum <= 0.99 total, + 1.
    phi = np.asarray(feats, np.float64) + np.random.default_rng(1).normal(size=(1, 40))
    s2 = np.linalg.svd(phi - phi.mean(axis=1, keepdims=True), compute_uv=False) ** 2
    ref = int(np.sum(np.cumsum(s2) <= 0.99 * np.sum(s2)) + 1)
    assert int(feature_rank(jnp.asarray(phi, jnp.float32), center="examples")) == ref


def test_feature_top_eigenvalue_is_the_covariance_lambda_max():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 7)) * np.arange(1, 8) + 3.0  # a mean to remove
    want = np.linalg.eigvalsh(np.cov(x, rowvar=False, bias=True))[-1]
    got = float(feature_top_eigenvalue(jnp.asarray(x, jnp.float32)))
    assert got == pytest.approx(want, rel=1e-4)
    with pytest.raises(ValueError, match="features must be"):
        feature_top_eigenvalue(jnp.zeros(5))
