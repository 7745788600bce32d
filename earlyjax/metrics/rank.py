"""Rank of penultimate features (Liu & Gurevych, App. E.1, Fig. 7).

The paper plots "feature ranks before the classification head" without defining the rank. We use
the definition of Andriushchenko et al. (NeurIPS 2023, "Sharpness-aware minimization leads to
low-rank features"), the group whose sharpness code the paper follows: the number of principal
components needed to explain `threshold` = 99% of the feature variance, i.e. the smallest k with
Σ_{i<=k} σ_i² >= 0.99 Σ_i σ_i² for the singular values σ of the [N, D] feature matrix. Why this
one: the exact matrix rank of float features is almost always full (min(N, D)) and says nothing;
a relative singular-value cut-off (e.g. σ_i > 1e-3 σ_1) depends on the noise floor; the
99%-variance count is scale-invariant, robust to tiny singular values and reads as "how many
directions the features really use", which is what Fig. 7 tracks.

Centring: by default each feature is centred over the N points (a PCA of the features).
Andriushchenko et al.'s code instead subtracts each example's mean over its D features before
the SVD; `center="examples"` reproduces that, `center="none"` uses the raw matrix. Their count,
`sum(cumsum(σ²) <= 0.99 Σσ²) + 1`, equals ours except when a partial sum hits the target
exactly.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from earlyjax.metrics._common import check_finite

CENTERINGS = ("features", "examples", "none")


def _checked_features(features: jax.Array) -> jax.Array:
    """`features` as an array [N, ...] of finite floats with N >= 1, else ValueError."""
    features = jnp.asarray(features)
    if features.ndim < 2 or features.shape[0] < 1:
        raise ValueError(
            f"features must be [N, D] (or [N, ...]) with N >= 1, got shape {features.shape}"
        )
    if not jnp.issubdtype(features.dtype, jnp.floating):
        raise ValueError(f"features must be floating point, got dtype {features.dtype}")
    check_finite("features", features)
    return features


def feature_rank(
    features: jax.Array, *, threshold: float = 0.99, center: str = "features"
) -> jax.Array:
    """Number of principal components explaining `threshold` of the variance (int32 scalar).

    Args:
      features: penultimate features [N, ...] of N points (trailing axes are flattened to D).
      threshold: fraction of Σ σ_i² to reach, in (0, 1]; the rank is the smallest k with
        Σ_{i<=k} σ_i² >= threshold Σ_i σ_i² (σ sorted descending). 0 for all-zero (after
        centring) features. With threshold = 1 it is the numerical rank of the matrix.
      center: "features" (default): subtract each feature's mean over the N points (PCA);
        "examples": subtract each example's mean over its features (Andriushchenko et al.'s
        code); "none".

    Cost: one SVD of an [N, D] matrix (singular values only), O(N D min(N, D)); no model passes.
    Jit-compatible; `threshold` may be traced.
    """
    features = _checked_features(features)
    if center not in CENTERINGS:
        raise ValueError(f"center must be one of {CENTERINGS}, got {center!r}")
    try:
        t = float(threshold)
    except (TypeError, jax.errors.ConcretizationTypeError):
        t = None
    if t is not None and not 0.0 < t <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}; the default is 0.99")
    return _feature_rank_jit(features, jnp.asarray(threshold, jnp.float32), center=center)


@functools.partial(jax.jit, static_argnames=("center",))
def _feature_rank_jit(features: jax.Array, threshold: jax.Array, *, center: str) -> jax.Array:
    phi = features.reshape(features.shape[0], -1).astype(jnp.float32)
    if center == "features":
        phi = phi - jnp.mean(phi, axis=0, keepdims=True)
    elif center == "examples":
        phi = phi - jnp.mean(phi, axis=1, keepdims=True)
    sq = jnp.square(jnp.linalg.svd(phi, compute_uv=False))
    total = jnp.sum(sq)
    # Components before the target is reached, plus the one that reaches it. The relative slack
    # absorbs the rounding of the cumulative sum (with threshold = 1 the last partial sum may
    # fall an ulp short of the total), and singular values at the float32 noise floor
    # (below ~1e-6 of the total energy) do not count at threshold = 1.
    target = threshold * total * (1 - 1e-6)
    k = jnp.sum(jnp.cumsum(sq) < target) + 1
    return jnp.where(total > 0, jnp.minimum(k, sq.shape[0]), 0).astype(jnp.int32)


def feature_top_eigenvalue(features: jax.Array) -> jax.Array:
    """Largest eigenvalue of the covariance of penultimate features (App. C, Fig. 5's "feature
    λ_max"): σ_max² / N for the singular values σ of the [N, D] features centred over the N
    points (the biased covariance, 1/N). Cost: one SVD of an [N, D] matrix; jit-compatible.
    """
    features = _checked_features(features)
    x = features.reshape(features.shape[0], -1)
    x = x - x.mean(axis=0, keepdims=True)
    return jnp.linalg.svd(x, compute_uv=False)[0] ** 2 / x.shape[0]
