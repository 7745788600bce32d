"""Weight perturbations at the rewinding step k (Frankle, Schwab & Morcos 2020, Section 5).

`TRANSFORMS` maps a name to a function
`(params, mask, prunable, key, fresh_params=None, **kw) -> params` that changes the unpruned
entries of every prunable leaf, layer by layer, and returns the new params. The trees are those
of `earlyjax.pruning` (`prunable`: one bool per leaf; `mask`: one bool array per leaf). Every
transform returns the pruned entries of prunable leaves exactly 0 and leaves the mask as it is;
leaves that are not prunable (biases, BatchNorm scales and biases) are returned untouched.

The init distribution is given by example: `fresh_params` is a params tree freshly initialised by
the model's own init with a new key (`model.init(new_key, x)["params"]`). "reinit" takes its
values, "sign_preserving_reinit" its magnitudes with the signs of the weights at k (a weight that
is exactly 0 counts as positive), and sigma_init(layer), the std of a layer's init distribution,
is the empirical std of the whole fresh layer, unless an explicit `init_std` tree (one float per
leaf) is passed to "gaussian_noise".

Seeded: the same key gives the same result, and the leaf with index i in the flattened tree uses
`jax.random.fold_in(key, i)`, so different layers get different randomness. All functions are
jnp only and can run inside `jax.jit` with `mask` and `prunable` closed over.

* identity: the weights (pruned entries 0).
* reinit: the fresh weights.
* sign_preserving_reinit: |fresh| with the signs of the weights.
* shuffle: the unpruned values of each layer permuted among its unpruned positions.
* shuffle_magnitudes: the same for |w|; each position keeps its own sign.
* gaussian_noise(scale=c): w + c * sigma_init(layer) * N(0, 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def _per_layer(params, mask, prunable, key, fn, *others) -> Any:
    """Applies `fn(w, m, layer_key, *other_leaves)` to each prunable leaf and masks the result."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    masks = treedef.flatten_up_to(mask)
    flags = treedef.flatten_up_to(prunable)
    other_leaves = [treedef.flatten_up_to(tree) for tree in others]
    out = []
    for i, (w, m, ok) in enumerate(zip(leaves, masks, flags, strict=True)):
        if not ok:
            out.append(w)
            continue
        w = jnp.asarray(w)
        new = fn(w, m, jax.random.fold_in(key, i), *(tree[i] for tree in other_leaves))
        out.append(jnp.where(m, new, jnp.zeros_like(w)).astype(w.dtype))
    return treedef.unflatten(out)


def _needs_fresh(name: str, fresh_params: Any) -> None:
    if fresh_params is None:
        raise ValueError(
            f"{name} needs fresh_params: pass model.init(new_key, x)['params'] as fresh_params="
        )


def identity(params, mask, prunable, key, fresh_params=None) -> Any:
    """The weights at k, pruned entries 0."""
    return _per_layer(params, mask, prunable, key, lambda w, m, k: w)


def reinit(params, mask, prunable, key, fresh_params=None) -> Any:
    """New weights from the init distribution (the values of `fresh_params`)."""
    _needs_fresh("reinit", fresh_params)
    return _per_layer(params, mask, prunable, key, lambda w, m, k, f: f, fresh_params)


def _signed(sign_source: jax.Array, magnitude: jax.Array) -> jax.Array:
    return jnp.where(sign_source < 0, -jnp.abs(magnitude), jnp.abs(magnitude))


def sign_preserving_reinit(params, mask, prunable, key, fresh_params=None) -> Any:
    """Magnitudes from the init distribution (|fresh_params|), signs of the weights at k."""
    _needs_fresh("sign_preserving_reinit", fresh_params)
    return _per_layer(params, mask, prunable, key, lambda w, m, k, f: _signed(w, f), fresh_params)


def _shuffled(values: jax.Array, m: jax.Array, key: jax.Array) -> jax.Array:
    """`values` with its unpruned entries permuted at random among the unpruned positions."""
    flat, flat_mask = values.reshape(-1), jnp.asarray(m).reshape(-1)
    sources = jnp.argsort(jnp.where(flat_mask, jax.random.uniform(key, flat.shape), 2.0))
    # the unpruned positions first, in order; then the pruned ones (their values masked later)
    targets = jnp.argsort((~flat_mask).astype(jnp.int8), stable=True)
    return jnp.zeros_like(flat).at[targets].set(flat[sources]).reshape(values.shape)


def shuffle(params, mask, prunable, key, fresh_params=None) -> Any:
    """Each layer's unpruned values, permuted among its unpruned positions."""
    return _per_layer(params, mask, prunable, key, _shuffled)


def shuffle_magnitudes(params, mask, prunable, key, fresh_params=None) -> Any:
    """Each layer's unpruned magnitudes permuted; every position keeps its own sign."""
    return _per_layer(
        params, mask, prunable, key, lambda w, m, k: _signed(w, _shuffled(jnp.abs(w), m, k))
    )


def gaussian_noise(
    params, mask, prunable, key, fresh_params=None, scale: float = 1.0, init_std: Any = None
) -> Any:
    """w + scale * sigma_init(layer) * N(0, 1) on the unpruned entries (module docstring)."""
    if init_std is None:
        _needs_fresh("gaussian_noise without init_std", fresh_params)
        init_std = jax.tree_util.tree_map(lambda f: jnp.std(jnp.asarray(f)), fresh_params)

    def noisy(w, m, k, sigma):
        return w + scale * sigma * jax.random.normal(k, w.shape, w.dtype)

    return _per_layer(params, mask, prunable, key, noisy, init_std)


TRANSFORMS: dict[str, Callable[..., Any]] = {
    "identity": identity,
    "reinit": reinit,
    "sign_preserving_reinit": sign_preserving_reinit,
    "shuffle": shuffle,
    "shuffle_magnitudes": shuffle_magnitudes,
    "gaussian_noise": gaussian_noise,
}


def transform_weights(name: str, params, mask, prunable, key, fresh_params=None, **kw) -> Any:
    """`TRANSFORMS[name](...)`, with an unknown name refused by a one-line error."""
    if name not in TRANSFORMS:
        raise ValueError(f"unknown weight transform {name!r}; choose one of {sorted(TRANSFORMS)}")
    return TRANSFORMS[name](params, mask, prunable, key, fresh_params, **kw)
