"""Fisher trace against a brute-force per-example, per-class loop on tiny models (issue 4)."""

import math

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
from helpers import (
    cnn_logits,
    cnn_params,
    mask_without_dense1_kernel,
    mlp_logits,
    mlp_params,
)

from earlyjax.metrics import (
    fisher_trace,
)


def n_params(tree):
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def brute_force_fisher(logits_fn, params, x, keep=lambda path: True):
    """Σ_x Σ_c p_c ||∇ log p_c(x)||² / N / P over the kept leaves, one (x, c) at a time."""

    def log_p(p, xi, c):
        return jax.nn.log_softmax(logits_fn(p, xi[None])[0])[c]

    grad_fn = jax.jit(jax.grad(log_p))
    prob_fn = jax.jit(lambda p, xi: jax.nn.softmax(logits_fn(p, xi[None])[0]))
    paths = [path for path, _ in jax.tree_util.tree_leaves_with_path(params)]
    kept = [keep(path) for path in paths]
    count = sum(
        math.prod(leaf.shape) for leaf, k in zip(jax.tree.leaves(params), kept, strict=True) if k
    )
    total = 0.0
    for i in range(x.shape[0]):
        probs = np.asarray(prob_fn(params, x[i]), np.float64)
        for c in range(probs.shape[0]):
            leaves = jax.tree.leaves(grad_fn(params, x[i], c))
            sq = sum(
                np.sum(np.asarray(g, np.float64) ** 2)
                for g, k in zip(leaves, kept, strict=True)
                if k
            )
            total += probs[c] * sq
    return total / x.shape[0] / count


def not_dense1_kernel(path):
    return jax.tree_util.keystr(path) != "['dense1']['kernel']"


def test_fisher_exact_matches_brute_force_mlp_and_chunking_is_invisible():
    params = mlp_params()
    x = jax.random.normal(jax.random.key(3), (5, 4))
    ref = brute_force_fisher(mlp_logits, params, x)
    key = jax.random.key(0)
    for chunk in (None, 2):  # 2 pads the last chunk
        got = fisher_trace(mlp_logits, params, x, key, exact=True, chunk_size=chunk)
        np.testing.assert_allclose(float(got), ref, rtol=1e-5)


def test_fisher_exact_matches_brute_force_cnn():
    params = cnn_params()
    x = jax.random.normal(jax.random.key(4), (4, 5, 5, 2))
    ref = brute_force_fisher(cnn_logits, params, x)
    got = fisher_trace(cnn_logits, params, x, jax.random.key(0), exact=True)
    np.testing.assert_allclose(float(got), ref, rtol=1e-5)


def test_fisher_sampled_estimator_converges_to_exact():
    params = mlp_params()
    x = jax.random.normal(jax.random.key(5), (8, 4))
    exact = float(fisher_trace(mlp_logits, params, x, jax.random.key(0), exact=True))
    keys = jax.random.split(jax.random.key(6), 512)
    samples = np.asarray(jax.vmap(lambda k: fisher_trace(mlp_logits, params, x, k))(keys))
    mean, se = samples.mean(), samples.std(ddof=1) / np.sqrt(len(samples))
    assert se < 0.05 * exact  # the comparison below is tight enough to mean something
    assert abs(mean - exact) < 4 * se
    assert samples.std() > 0  # the keys do change ŷ
    # The sampled value is deterministic given the key and does not depend on the chunking.
    one = fisher_trace(mlp_logits, params, x, keys[0], chunk_size=3)
    np.testing.assert_allclose(float(one), samples[0], rtol=1e-6)


def test_fisher_frozen_leaves_change_numerator_and_normaliser():
    params = mlp_params()
    x = jax.random.normal(jax.random.key(7), (5, 4))
    mask = mask_without_dense1_kernel(params)
    ref = brute_force_fisher(mlp_logits, params, x, keep=not_dense1_kernel)
    full = brute_force_fisher(mlp_logits, params, x)
    assert abs(ref - full) > 1e-3 * full  # freezing must make a difference here
    key = jax.random.key(0)
    got = fisher_trace(mlp_logits, params, x, key, exact=True, trainable=mask)
    np.testing.assert_allclose(float(got), ref, rtol=1e-5)
    # A traced mask (built inside a compiled step) gives the same number.
    traced = jax.jit(lambda m: fisher_trace(mlp_logits, params, x, key, exact=True, trainable=m))(
        jax.tree.map(jnp.asarray, mask)
    )
    np.testing.assert_allclose(float(traced), ref, rtol=1e-5)


def test_fisher_batch_argmax_estimator_is_the_squared_mean_gradient():
    params = mlp_params()
    x = jax.random.normal(jax.random.key(8), (7, 4))

    def mean_nll_of_argmax(p):
        logp = jax.nn.log_softmax(mlp_logits(p, x))
        yhat = jnp.argmax(jax.lax.stop_gradient(logp), axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, yhat[:, None], axis=-1))

    g = jax.grad(mean_nll_of_argmax)(params)
    ref = sum(float(jnp.sum(leaf**2)) for leaf in jax.tree.leaves(g)) / n_params(params)
    got = fisher_trace(
        mlp_logits, params, x, jax.random.key(0), estimator="batch_argmax", chunk_size=3
    )
    np.testing.assert_allclose(float(got), ref, rtol=1e-5)
    exact = fisher_trace(mlp_logits, params, x, jax.random.key(0), exact=True)
    assert float(got) < float(exact)  # ||E g||² is not E||g||²
