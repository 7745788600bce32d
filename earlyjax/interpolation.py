"""Paths, planes and soups between trained models; BatchNorm statistics recomputed for a point.

The building blocks of Sadrtdinov et al. (2023)'s basin analysis, as pure functions of params
pytrees (any Flax or JAX model; nothing else of earlyjax is imported):
- `interpolate(a, b, alpha)`: θ(α) = (1 - α)·a + α·b, leaf by leaf;
- `barrier(values, alphas)`: the largest excess of a path's loss (or error) over the straight
  line between its end points;
- `plane_axes`, `plane_point`, `plane_coordinates`: the plane through three models, with
  orthonormal axes (Garipov et al. 2018);
- `uniform_soup(models)`: the leafwise mean of K models (Wortsman et al. 2022);
- `recompute_batch_stats(apply_fn, params, batch_stats, batches)`: the BatchNorm running
  statistics of a new point (an interpolation, a soup, a plane point) as the mean of the
  per-batch statistics over training batches, as PyTorch's `update_bn` with momentum=None.

A point between models needs its own BatchNorm statistics: the interpolated running statistics
of the end points are not the statistics of the interpolated network (Garipov et al. 2018;
Sadrtdinov et al. recompute them on training data).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any

# Running statistics the momentum is probed with (see recompute_batch_stats): a power of two far
# above any batch statistic, so that m = (new(S) - new(0)) / S holds to float32 rounding.
_PROBE = 2.0**20


def _short(tree: PyTree, limit: int = 160) -> str:
    text = str(jax.tree.structure(tree))
    return text if len(text) <= limit else text[:limit] + "..."


def _check_same_trees(names: Sequence[str], trees: Sequence[PyTree]) -> None:
    """One-line ValueError unless all trees share the first one's structure and leaf shapes."""
    first_def = jax.tree.structure(trees[0])
    if first_def.num_leaves == 0:
        raise ValueError(f"{names[0]} has no array leaves; pass a params pytree")
    first_shapes = [jnp.shape(x) for x in jax.tree.leaves(trees[0])]
    for name, tree in zip(names[1:], trees[1:], strict=True):
        treedef = jax.tree.structure(tree)
        if treedef != first_def:
            raise ValueError(
                f"{name} must have the structure of {names[0]}; got {_short(tree)} for "
                f"{_short(trees[0])}: pass params of the same model (e.g. both variables['params'])"
            )
        for (path, leaf), shape in zip(
            jax.tree_util.tree_flatten_with_path(tree)[0], first_shapes, strict=True
        ):
            if jnp.shape(leaf) != shape:
                raise ValueError(
                    f"{name}{jax.tree_util.keystr(path)} has shape {jnp.shape(leaf)}, "
                    f"{names[0]} has {shape} there: pass params of the same architecture"
                )
    for path, leaf in jax.tree_util.tree_flatten_with_path(trees[0])[0]:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(
                f"{names[0]}{jax.tree_util.keystr(path)} has dtype {jnp.result_type(leaf)}; only "
                "floating-point leaves can be averaged: pass the parameters (variables['params'])"
            )


def interpolate(params_a: PyTree, params_b: PyTree, alpha: float | jax.Array) -> PyTree:
    """θ(α) = (1 - α)·params_a + α·params_b, leaf by leaf (each leaf keeps its dtype).

    α = 0 is params_a, α = 1 is params_b; α outside [0, 1] extrapolates. `alpha` may be a traced
    scalar (vmap it over a grid of α). Works on any pytree of floating arrays, e.g. the params
    and the batch_stats of two checkpoints.
    """
    _check_same_trees(("params_a", "params_b"), (params_a, params_b))
    if jnp.ndim(alpha) != 0:
        raise ValueError(
            f"alpha must be a scalar, got shape {jnp.shape(alpha)}; for a grid of alphas use "
            "jax.vmap(interpolate, in_axes=(None, None, 0))"
        )

    def mix(a, b):
        return ((1 - alpha) * a + alpha * b).astype(jnp.result_type(a))

    return jax.tree.map(mix, params_a, params_b)


def barrier(values: Any, alphas: Any = None) -> jax.Array:
    """The barrier of a path: max_i (values_i - ((1 - α_i)·v(0) + α_i·v(1))), a float32 scalar.

    `values`: [n] a loss or an error (lower is better; for an accuracy pass 100 - accuracy)
    along a path at `alphas` ([n], default `linspace(0, 1, n)`: a uniform grid with both end
    points), which must lie in [0, 1] and include 0 and 1 (v(0), v(1): the end points' values).
    The line through the end points is what the path would be if it were linear in α: the barrier
    is the largest excess over it (Frankle et al. 2020; Entezari et al. 2022; the issue's
    "largest excess of the path over the straight line"). It is reported as is, with no clipping:
    the end points themselves have excess exactly 0, so it is >= 0 by construction, and 0 means
    the path never rises above the line (e.g. a model with itself, or a convex path).
    """
    values = jnp.asarray(values, jnp.float32)
    if values.ndim != 1 or values.shape[0] < 2:
        raise ValueError(
            f"values must be [n] with n >= 2 (a loss along the path, end points included), got "
            f"shape {values.shape}"
        )
    n = values.shape[0]
    alphas = jnp.linspace(0.0, 1.0, n) if alphas is None else jnp.asarray(alphas, jnp.float32)
    if alphas.shape != (n,):
        raise ValueError(
            f"alphas must be [n] = [{n}] like values, got shape {alphas.shape}; pass one alpha "
            "per value (or none for linspace(0, 1, n))"
        )
    if not isinstance(alphas, jax.core.Tracer):
        with jax.ensure_compile_time_eval():
            low, high = float(alphas.min()), float(alphas.max())
        if low != 0.0 or high != 1.0:
            raise ValueError(
                f"alphas must lie in [0, 1] and include both 0 and 1 (the end points), got "
                f"values in [{low:.4g}, {high:.4g}]; evaluate the path at alpha 0 and 1 too"
            )
    return _barrier(values, alphas)


@jax.jit
def _barrier(values: jax.Array, alphas: jax.Array) -> jax.Array:
    start = values[jnp.argmin(alphas)]
    end = values[jnp.argmax(alphas)]
    return jnp.max(values - ((1 - alphas) * start + alphas * end))


def _dot(a: PyTree, b: PyTree) -> jax.Array:
    """<a, b> of two pytrees as flat vectors, in float32."""
    leaves = [
        jnp.vdot(x.astype(jnp.float32), y.astype(jnp.float32))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    ]
    return functools.reduce(jnp.add, leaves)


def _sub(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(lambda x, y: x.astype(jnp.float32) - y.astype(jnp.float32), a, b)


def plane_axes(p1: PyTree, p2: PyTree, p3: PyTree) -> tuple[PyTree, PyTree]:
    """(e1, e2): an orthonormal basis of the plane through three models (float32 pytrees).

    Gram-Schmidt on (p2 - p1, p3 - p1), in the Euclidean inner product of all parameters
    flattened into one vector: e1 = (p2 - p1) / ||p2 - p1||, e2 = r / ||r|| with
    r = (p3 - p1) - <p3 - p1, e1> e1 (Garipov et al. 2018's plane plots).
    """
    _check_same_trees(("p1", "p2", "p3"), (p1, p2, p3))
    d2, d3 = _sub(p2, p1), _sub(p3, p1)
    n2 = jnp.sqrt(_dot(d2, d2))
    e1 = jax.tree.map(lambda x: x / n2, d2)
    along = _dot(d3, e1)
    r = jax.tree.map(lambda x, y: x - along * y, d3, e1)
    nr = jnp.sqrt(_dot(r, r))
    if not isinstance(nr, jax.core.Tracer):
        scale = float(jnp.sqrt(_dot(d3, d3)))
        if float(n2) == 0.0:
            raise ValueError("p2 equals p1: the plane needs three distinct models")
        if float(nr) <= 1e-6 * max(scale, float(n2)):
            raise ValueError(
                "p3 lies on the line through p1 and p2 (its component off that line is "
                f"{float(nr):.3g} of ||p3 - p1|| = {scale:.3g}): the plane needs three models not "
                "on one line"
            )
    e2 = jax.tree.map(lambda x: x / nr, r)
    return e1, e2


def plane_point(
    p1: PyTree, p2: PyTree, p3: PyTree, u: float | jax.Array, v: float | jax.Array
) -> PyTree:
    """The point p1 + u·e1 + v·e2 of the plane through p1, p2, p3 (each leaf keeps its dtype).

    (e1, e2) = `plane_axes(p1, p2, p3)` are orthonormal, so (u, v) are Euclidean coordinates in
    parameter space, in the units of the parameters' L2 norm: p1 is at (0, 0), p2 at
    (||p2 - p1||, 0) and p3 at (<p3 - p1, e1>, ||r||) (`plane_coordinates` gives them), so a grid
    over u, v spanning those three points draws Garipov et al.'s plane.
    """
    e1, e2 = plane_axes(p1, p2, p3)
    return jax.tree.map(
        lambda p, a, b: (p.astype(jnp.float32) + u * a + v * b).astype(jnp.result_type(p)),
        p1,
        e1,
        e2,
    )


def plane_coordinates(p1: PyTree, p2: PyTree, p3: PyTree, point: PyTree) -> jax.Array:
    """(u, v) [2] float32: the coordinates of `point`'s orthogonal projection onto the plane
    through p1, p2, p3 (`plane_point`'s coordinates: p2 is at (||p2 - p1||, 0))."""
    e1, e2 = plane_axes(p1, p2, p3)
    _check_same_trees(("p1", "point"), (p1, point))
    d = _sub(point, p1)
    return jnp.stack([_dot(d, e1), _dot(d, e2)])


def uniform_soup(models: Sequence[PyTree]) -> PyTree:
    """The uniform weight soup of K models: their leafwise mean (each leaf keeps its dtype).

    `models`: a sequence of K >= 1 params pytrees of the same architecture. The soup needs its
    own BatchNorm statistics (`recompute_batch_stats`).
    """
    models = list(models)
    if not models:
        raise ValueError("models is empty; pass a list of K >= 1 params pytrees")
    _check_same_trees([f"models[{i}]" for i in range(len(models))], models)

    def mean(*leaves):
        total = functools.reduce(jnp.add, [x.astype(jnp.float32) for x in leaves])
        return (total / len(leaves)).astype(jnp.result_type(leaves[0]))

    return jax.tree.map(mean, *models)


@functools.partial(jax.jit, static_argnums=0)
def _train_mode_stats(apply_fn: Callable, params: PyTree, stats: PyTree, batch: PyTree) -> PyTree:
    _, mutated = apply_fn({"params": params, "batch_stats": stats}, batch)
    return mutated["batch_stats"]


def _stats_after(apply_fn, params, stats, batch, batch_stats) -> PyTree:
    """The batch_stats after one train-mode call, or a one-line error on a misfitting apply_fn."""
    try:
        out = jax.eval_shape(
            lambda p, s, b: apply_fn({"params": p, "batch_stats": s}, b), params, stats, batch
        )
    except Exception as err:
        lines = [line for line in str(err).splitlines() if line.strip()]
        raise ValueError(
            f"apply_fn(variables, batch) fails on the first batch ({type(err).__name__}: "
            f"{lines[0][:200] if lines else ''}); apply_fn must run the model in training mode "
            "with batch_stats mutable, e.g. functools.partial(model.apply, train=True, "
            "mutable=['batch_stats'])"
        ) from err
    if not (
        isinstance(out, tuple)
        and len(out) == 2
        and hasattr(out[1], "keys")
        and "batch_stats" in out[1]
    ):
        raise ValueError(
            "apply_fn(variables, batch) must return (outputs, {'batch_stats': ...}) as "
            "model.apply(variables, x, train=True, mutable=['batch_stats']) does; got "
            f"{type(out).__name__}: pass functools.partial(model.apply, train=True, "
            "mutable=['batch_stats'])"
        )
    if jax.tree.structure(out[1]["batch_stats"]) != jax.tree.structure(batch_stats):
        raise ValueError(
            f"apply_fn returns batch_stats of structure {_short(out[1]['batch_stats'])}, not "
            f"that of the batch_stats passed ({_short(batch_stats)}): pass the model's "
            "variables['batch_stats']"
        )
    return _train_mode_stats(apply_fn, params, stats, batch)


def recompute_batch_stats(
    apply_fn: Callable,
    params: PyTree,
    batch_stats: PyTree,
    batches: Iterable[PyTree],
    *,
    momentum: float | None = None,
) -> PyTree:
    """BatchNorm running statistics of `params`: the mean over `batches` of each batch's
    statistics, in the structure of `batch_stats` (whose values are not used).

    `apply_fn(variables, batch) -> (outputs, {"batch_stats": updated})` runs the model in
    training mode with `batch_stats` mutable, e.g.
    `functools.partial(model.apply, train=True, mutable=["batch_stats"])` for a Flax model
    (any other keyword it needs, such as dropout rngs, goes into that partial); `batch` is
    whatever it takes (e.g. images [n, H, W, C]). `batches`: an iterable of B >= 1 batches (a
    list, a generator, or an array [B, n, ...] whose leading axis indexes the batches).

    Every statistic s (a BatchNorm mean, or its biased variance as Flax keeps it) becomes
    (1/B) Σ_b s_b: each batch weighs the same, as PyTorch's `update_bn` with momentum=None (a
    cumulative average); ens-for-transfer's update_bn weighs batches by their size, the same for
    equal-size batches. Batch b's statistics s_b come from one train-mode forward pass from zeroed
    running statistics: the running-average update new = m·old + (1 - m)·s_b gives
    s_b = new / (1 - m). The momentum m of each statistic is `momentum` if given (Flax's default
    0.99; earlyjax's models 0.9), else read off the model with one more forward pass on the first
    batch from running statistics S = 2^20: m = (new(S) - new(0)) / S. Cost: B + 1 forward passes
    (B with `momentum`), one compilation per apply_fn and batch shape. It can run inside
    `jax.jit` (params traced); the check that apply_fn updates each statistic as a running
    average (0 <= m < 1, i.e. it is in training mode) needs concrete params and runs only then.
    """
    if not callable(apply_fn):
        raise ValueError(
            f"apply_fn must be callable as apply_fn(variables, batch), got {apply_fn!r}; pass "
            "functools.partial(model.apply, train=True, mutable=['batch_stats'])"
        )
    if not jax.tree.leaves(batch_stats):
        raise ValueError(
            "batch_stats has no array leaves; pass the model's variables['batch_stats'] (a model "
            "without BatchNorm needs no recomputation)"
        )
    if momentum is not None and not 0.0 <= float(momentum) < 1.0:
        raise ValueError(
            f"momentum must be in [0, 1) (the BatchNorm's momentum, Flax's default 0.99) or None "
            f"to read it off the model, got {momentum!r}"
        )
    zeros = jax.tree.map(jnp.zeros_like, batch_stats)
    total, count, scale = None, 0, None
    for batch in batches:
        if scale is None:
            fresh = _stats_after(apply_fn, params, zeros, batch, batch_stats)
            if momentum is None:
                probe = jax.tree.map(lambda z: jnp.full_like(z, _PROBE), zeros)
                probed = _train_mode_stats(apply_fn, params, probe, batch)
                scale = jax.tree.map(lambda a, b: 1.0 - (a - b) / _PROBE, probed, fresh)
                _check_scale(scale)
            else:
                scale = jax.tree.map(lambda z: jnp.full_like(z, 1.0 - float(momentum)), zeros)
        else:
            fresh = _train_mode_stats(apply_fn, params, zeros, batch)
        total = fresh if total is None else jax.tree.map(jnp.add, total, fresh)
        count += 1
    if count == 0:
        raise ValueError("batches is empty; pass at least one training batch")
    return jax.tree.map(
        lambda s, k, like: (s / (count * k)).astype(jnp.result_type(like)),
        total,
        scale,
        batch_stats,
    )


def _check_scale(scale: PyTree) -> None:
    """One-line ValueError naming a statistic that a train-mode call leaves unchanged (1 - m
    = 0) or updates in a way that is no running average (1 - m outside (0, 1])."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(scale)[0]:
        if isinstance(leaf, jax.core.Tracer):
            continue
        values = np.asarray(leaf)
        if values.size and not (np.all(values > 1e-6) and np.all(values <= 1.0 + 1e-3)):
            raise ValueError(
                f"batch_stats{jax.tree_util.keystr(path)} does not follow the running-average "
                f"update new = m*old + (1-m)*batch with 0 <= m < 1 in a train-mode apply_fn "
                f"(1 - m read as {float(values.min()):.3g}..{float(values.max()):.3g}): is "
                "apply_fn in training mode (train=True)? Or pass momentum= explicitly"
            )
