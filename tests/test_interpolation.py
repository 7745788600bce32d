"""Paths, barriers, planes, soups and recomputed BatchNorm statistics (earlyjax.interpolation)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import mlp_params

from earlyjax.interpolation import (
    barrier,
    interpolate,
    plane_axes,
    plane_coordinates,
    plane_point,
    recompute_batch_stats,
    uniform_soup,
)

A, B, C = mlp_params(seed=0), mlp_params(seed=1), mlp_params(seed=2)


def assert_trees_close(actual, expected, **tol):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), **tol)


def test_interpolate_at_0_and_1_gives_the_end_points_and_at_half_the_midpoint():
    assert_trees_close(interpolate(A, B, 0.0), A, rtol=0, atol=0)
    assert_trees_close(interpolate(A, B, 1.0), B, rtol=0, atol=0)
    assert_trees_close(interpolate(A, B, 0.5), jax.tree.map(lambda a, b: (a + b) / 2, A, B))


def test_interpolate_refuses_params_of_another_architecture():
    with pytest.raises(ValueError, match="same architecture") as info:
        interpolate(A, mlp_params(seed=1, hidden=7), 0.5)
    assert "\n" not in str(info.value)


def test_barrier_is_the_largest_excess_over_the_line_between_the_end_points():
    assert float(barrier([0.0, 2.0, 1.0])) == pytest.approx(1.5)  # line 0, .5, 1
    assert float(barrier([1.0, 0.2, 0.1, 1.0])) == 0.0  # below the line: 0, not negative
    alphas = [0.0, 0.75, 0.25, 1.0]  # any order; the line is read at alpha 0 and 1
    assert float(barrier([2.0, 3.0, 1.0, 0.0], alphas)) == pytest.approx(3.0 - 0.5)
    with pytest.raises(ValueError, match="include both 0 and 1"):
        barrier([0.0, 1.0, 2.0], [0.0, 0.5, 0.9])


# Two concentric rings in 2-D: a small tanh MLP solves it in many ways that are not
# linearly connected (hidden units can be permuted, among others).
def rings(n=128):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    angle = rng.uniform(0, 2 * np.pi, n)
    x = (1.0 + y)[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
    return (x + 0.1 * rng.normal(size=(n, 2))).astype(np.float32), y


def ring_loss(p, x, y):
    logits = jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))


def train_rings(key, x, y, hidden=16, steps=300, lr=0.5):
    """`steps` steps of full-batch gradient descent from an init drawn from `key`."""
    k1, k2 = jax.random.split(key)
    p = {
        "w1": jax.random.normal(k1, (2, hidden)),
        "b1": jnp.zeros(hidden),
        "w2": jax.random.normal(k2, (hidden, 2)) / jnp.sqrt(hidden),
        "b2": jnp.zeros(2),
    }

    def step(p, _):
        g = jax.grad(ring_loss)(p, x, y)
        return jax.tree.map(lambda w, d: w - lr * d, p, g), None

    return jax.lax.scan(step, p, None, length=steps)[0]


@jax.jit
def two_runs_and_their_paths(x, y, alphas):
    """Two models trained from different seeds; the loss along the path from the first to
    itself and to the second (one compilation)."""
    pa, pb = (train_rings(jax.random.key(seed), x, y) for seed in (1, 2))

    def path(p, q):
        return jax.vmap(lambda a: ring_loss(interpolate(p, q, a), x, y))(alphas)

    return path(pa, pa), path(pa, pb)


def test_barrier_of_a_model_with_itself_is_zero_and_of_two_trained_models_positive():
    x, y = rings()
    alphas = np.linspace(0, 1, 11)
    itself, other = two_runs_and_their_paths(x, y, alphas)
    assert float(other[0]) < 0.1 and float(other[-1]) < 0.1  # both solve the task
    assert float(barrier(itself, alphas)) == pytest.approx(0.0, abs=1e-6)
    # 1.37 for this pair (0.35-1.8 for six others): the middle of the path is far worse.
    assert float(barrier(other, alphas)) > 0.2


def test_soup_of_identical_models_is_the_model_and_of_two_their_midpoint():
    assert_trees_close(uniform_soup([A, A, A]), A, rtol=1e-6, atol=0)
    assert_trees_close(uniform_soup([A, B]), interpolate(A, B, 0.5), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="empty"):
        uniform_soup([])


def test_plane_point_at_origin_is_p1_and_the_axes_are_orthonormal():
    assert_trees_close(plane_point(A, B, C, 0.0, 0.0), A, rtol=0, atol=0)
    e1, e2 = plane_axes(A, B, C)

    def dot(a, b):
        pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        return sum(float(jnp.vdot(x, y)) for x, y in pairs)

    np.testing.assert_allclose([dot(e1, e1), dot(e2, e2), dot(e1, e2)], [1, 1, 0], atol=1e-5)
    # p2 sits on the first axis at its distance from p1; p3 is in the plane, so its coordinates
    # take plane_point back to it.
    u2, v2 = np.asarray(plane_coordinates(A, B, C, B))
    d = jax.tree.map(lambda b, a: b - a, B, A)
    np.testing.assert_allclose([u2, v2], [np.sqrt(dot(d, d)), 0.0], rtol=1e-5, atol=1e-5)
    u3, v3 = plane_coordinates(A, B, C, C)
    assert_trees_close(plane_point(A, B, C, u3, v3), C, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="one line"):
        plane_axes(A, B, interpolate(A, B, 2.0))


class TwoBN(nn.Module):
    """Dense -> BatchNorm (momentum 0.9) -> Dense -> BatchNorm (Flax's default 0.99)."""

    @nn.compact
    def __call__(self, x, train: bool):
        h = nn.Dense(3, name="dense1")(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn1")(h)
        h = nn.Dense(2, name="dense2")(nn.relu(h))
        return nn.BatchNorm(use_running_average=not train, name="bn2")(h)


MODEL = TwoBN()
TRAIN_MODE = functools.partial(MODEL.apply, train=True, mutable=["batch_stats"])
X = jax.random.normal(jax.random.key(3), (2, 8, 4)) * 3.0 + 1.0  # two batches of 8
VARIABLES = MODEL.init(jax.random.key(4), X[0], train=False)


def statistics(params, x):
    """Mean and biased variance of both BatchNorm inputs on x, by hand."""
    h1 = x @ params["dense1"]["kernel"] + params["dense1"]["bias"]
    bn = params["bn1"]
    n1 = (h1 - h1.mean(0)) / jnp.sqrt(h1.var(0) + 1e-5) * bn["scale"] + bn["bias"]
    h2 = jax.nn.relu(n1) @ params["dense2"]["kernel"] + params["dense2"]["bias"]
    return {
        "bn1": {"mean": h1.mean(0), "var": h1.var(0)},
        "bn2": {"mean": h2.mean(0), "var": h2.var(0)},
    }


def test_recompute_batch_stats_on_one_batch_are_its_statistics():
    params, stats = VARIABLES["params"], VARIABLES["batch_stats"]
    expected = statistics(params, X[0])
    recomputed = recompute_batch_stats(TRAIN_MODE, params, stats, [X[0]])
    assert_trees_close(recomputed, expected, rtol=1e-5, atol=1e-6)
    # the momenta (0.9 and 0.99) are read off the model; a given momentum is used as is
    bn1_only = recompute_batch_stats(TRAIN_MODE, params, stats, [X[0]], momentum=0.9)["bn1"]
    assert_trees_close(bn1_only, expected["bn1"], rtol=1e-5, atol=1e-6)


def test_recompute_batch_stats_on_two_batches_are_their_mean():
    params, stats = VARIABLES["params"], VARIABLES["batch_stats"]
    one, two = statistics(params, X[0]), statistics(params, X[1])
    expected = jax.tree.map(lambda a, b: (a + b) / 2, one, two)
    recomputed = recompute_batch_stats(TRAIN_MODE, params, stats, X)  # X: [2 batches, 8, 4]
    assert_trees_close(recomputed, expected, rtol=1e-5, atol=1e-6)


def test_recompute_batch_stats_refuses_an_eval_mode_apply_fn():
    eval_mode = functools.partial(MODEL.apply, train=False, mutable=["batch_stats"])
    params, stats = VARIABLES["params"], VARIABLES["batch_stats"]
    with pytest.raises(ValueError, match="train=True") as info:
        recompute_batch_stats(eval_mode, params, stats, [X[0]])
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="mutable"):
        recompute_batch_stats(functools.partial(MODEL.apply, train=True), params, stats, [X[0]])
