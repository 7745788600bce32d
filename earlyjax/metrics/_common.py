"""Private helpers shared by the metric modules: `trainable` masks, leaf selection, checks.

Nothing here (or anywhere in `earlyjax.metrics`) imports the rest of earlyjax: the metrics take
plain callables and pytrees so that they can be reused on any Flax model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

PyTree = Any


def _static_bool(value: Any) -> bool | None:
    """The Python bool of a concrete scalar mask leaf, or None for a traced one."""
    try:
        return bool(value)
    except (jax.errors.TracerBoolConversionError, jax.errors.ConcretizationTypeError):
        return None


def _short(treedef: Any, limit: int = 200) -> str:
    text = str(treedef)
    return text if len(text) <= limit else text[:limit] + "..."


def resolve_trainable(
    params: PyTree, trainable: PyTree | None
) -> tuple[tuple[bool, ...], tuple[jax.Array, ...]]:
    """Splits a `trainable` mask into a static part and a traced part.

    Returns `(active, weights)`: `active[i]` is False only for leaf i of `params` (in
    `jax.tree.leaves` order) that is *statically* frozen (a Python/numpy bool or a concrete
    array); such leaves are left out of differentiation altogether. `weights` holds one float32
    scalar per active leaf: 1.0 for a statically trainable leaf, the 0/1 value of a traced mask
    leaf otherwise (a mask computed inside a compiled training step stays data).
    """
    leaves, treedef = jax.tree.flatten(params)
    if not leaves:
        raise ValueError("params has no array leaves; pass the model's parameter pytree")
    for leaf in leaves:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(
                f"every params leaf must be a floating-point array, got dtype "
                f"{jnp.result_type(leaf)}; pass only the parameters (e.g. variables['params'])"
            )
    if trainable is None:
        ones = tuple(jnp.ones((), jnp.float32) for _ in leaves)
        return (True,) * len(leaves), ones
    mask_leaves, mask_def = jax.tree.flatten(trainable)
    if mask_def != treedef:
        raise ValueError(
            "trainable must be a pytree of bools with exactly the structure of params (one bool "
            f"per parameter leaf); got {mask_def.num_leaves} leaves in structure "
            f"{_short(mask_def)} for params with {treedef.num_leaves} leaves in structure "
            f"{_short(treedef)}. Build it with jax.tree.map(lambda _: True, params) and set the "
            "frozen leaves to False."
        )
    active, weights = [], []
    for m in mask_leaves:
        shape = jnp.shape(m)
        dtype = jnp.result_type(m)
        if shape != () or dtype != jnp.bool_:
            raise ValueError(
                f"each trainable leaf must be a scalar bool (one per parameter leaf), got shape "
                f"{shape} and dtype {dtype}"
            )
        static = _static_bool(m)
        if static is False:
            active.append(False)
            continue
        active.append(True)
        weights.append(jnp.ones((), jnp.float32) if static else jnp.asarray(m, jnp.float32))
    if not any(active):
        raise ValueError("trainable marks every parameter leaf as frozen; nothing to measure")
    return tuple(active), tuple(weights)


def select_active(params: PyTree, active: Sequence[bool]) -> list[jax.Array]:
    """The active leaves of `params`, in `jax.tree.leaves` order."""
    return [leaf for leaf, a in zip(jax.tree.leaves(params), active, strict=True) if a]


def merge_active(params: PyTree, active: Sequence[bool], new_active: Sequence[jax.Array]) -> PyTree:
    """`params` with its active leaves replaced by `new_active` (same order)."""
    leaves, treedef = jax.tree.flatten(params)
    it = iter(new_active)
    out = [next(it) if a else leaf for leaf, a in zip(leaves, active, strict=True)]
    return treedef.unflatten(out)


def active_indices(active: Sequence[bool]) -> list[int]:
    """Global leaf indices of the active leaves (used to derive per-leaf random keys)."""
    return [i for i, a in enumerate(active) if a]


def weighted_sq_norm(tree_leaves: Sequence[jax.Array], weights: Sequence[jax.Array]) -> jax.Array:
    """Σ_j w_j ||leaf_j||² in float32."""
    total = jnp.zeros((), jnp.float32)
    for leaf, w in zip(tree_leaves, weights, strict=True):
        total = total + w * jnp.sum(jnp.square(leaf.astype(jnp.float32)))
    return total


def param_count(active_leaves: Sequence[jax.Array], weights: Sequence[jax.Array]) -> jax.Array:
    """Number of trainable parameters (float32 scalar; traced when the mask is)."""
    total = jnp.zeros((), jnp.float32)
    for leaf, w in zip(active_leaves, weights, strict=True):
        total = total + w * float(math.prod(jnp.shape(leaf)))
    return total


def check_positive_int(name: str, value: Any, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}; {fix}")


def check_rho(rho: Any) -> None:
    """rho must be a non-negative number (checked when concrete; a traced rho is trusted)."""
    try:
        r = float(rho)
    except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError):
        if jnp.shape(rho) != ():
            raise ValueError(f"rho must be a scalar, got shape {jnp.shape(rho)}") from None
        return
    if not math.isfinite(r) or r < 0:
        raise ValueError(f"rho must be a finite number >= 0, got {rho!r}; the paper uses 0.01")


def check_key(key: Any) -> jax.Array:
    """Accepts a new-style typed key or a legacy uint32[2] key."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"key must be a single PRNG key, got a key array of shape {key.shape}")
        return key
    if key.shape != (2,) or key.dtype != jnp.uint32:
        raise ValueError(
            f"key must be a jax.random.key(...) or jax.random.PRNGKey(...), got an array of "
            f"shape {key.shape} and dtype {key.dtype}"
        )
    return key


def check_batches(batches: PyTree) -> int:
    """Number of batches B: every leaf of `batches` must have the same leading axis B >= 1."""
    leaves = jax.tree.leaves(batches)
    if not leaves:
        raise ValueError("batches has no array leaves; pass e.g. (images[B, n, ...], labels[B, n])")
    for leaf in leaves:
        if jnp.ndim(leaf) < 1:
            raise ValueError(
                "every leaf of batches needs a leading batch-index axis; got a scalar leaf. "
                "Stack batches as e.g. images[B, n, 32, 32, 3]"
            )
    n_batches = jnp.shape(leaves[0])[0]
    try:
        chex.assert_tree_shape_prefix(batches, (n_batches,))
    except AssertionError as err:
        shapes = [jnp.shape(leaf) for leaf in leaves]
        raise ValueError(
            f"all leaves of batches must share the leading batch-index axis; got shapes {shapes}. "
            "Reshape every leaf to [num_batches, batch_size, ...]"
        ) from err
    if n_batches < 1:
        raise ValueError("batches is empty (leading axis 0); pass at least one batch")
    if any(jnp.ndim(leaf) >= 2 and jnp.shape(leaf)[1] == 0 for leaf in leaves):
        raise ValueError(
            f"batches holds empty batches (axis 1, the batch size, is 0: {_layout(batches)}); "
            "a mean loss over no examples is NaN: pass at least one example per batch"
        )
    return int(n_batches)


def check_inputs(fn_name: str, x: Any) -> jax.Array:
    """`x` as an array of inputs [N, ...] with N >= 1 (a pytree such as params is refused)."""
    try:
        x = jnp.asarray(x)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"x must be an array of inputs [N, ...], got a {type(x).__name__} "
            f"({_layout(x)}); the order is {fn_name}(logits_fn, params, x, key): are params and "
            "x swapped?"
        ) from err
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"x must be a batch [N, ...] with N >= 1, got shape {x.shape}")
    return x


def check_finite(name: str, tree: PyTree) -> None:
    """ValueError naming `name` and the leaf path when a concrete floating-point leaf of `tree`
    holds NaN or inf: every metric of such values is NaN or meaningless (Auto-PGD, for one,
    returns 0). Traced leaves (a call inside jit, e.g. the training run's recorder) and
    integer leaves are not checked."""
    found = [
        (path, leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
        if not isinstance(leaf, jax.core.Tracer)
        and jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    if not found:
        return
    # Concrete values closed over by a function being compiled are checked too, eagerly.
    with jax.ensure_compile_time_eval():
        finite = jax.device_get(_all_finite([jnp.asarray(leaf) for _, leaf in found]))
        for (path, leaf), ok in zip(found, finite, strict=True):
            if ok:
                continue
            nan = int(jnp.sum(jnp.isnan(leaf)))
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)} holds non-finite values ({nan} NaN, "
                f"{int(jnp.size(leaf)) - int(jnp.sum(jnp.isfinite(leaf))) - nan} inf of "
                f"{int(jnp.size(leaf))}, shape {jnp.shape(leaf)}); a metric of it would be NaN "
                f"or meaningless: pass finite {name}"
            )


@jax.jit
def _all_finite(leaves: list[jax.Array]) -> list[jax.Array]:
    return [jnp.all(jnp.isfinite(leaf)) for leaf in leaves]


def _layout(tree: PyTree) -> str:
    """A pytree's leaves' shapes and dtypes: "[0]: float32[2, 6, 4], [1]: int32[2, 6]"."""
    parts = [
        f"{jax.tree_util.keystr(path) or 'array'}: {jnp.result_type(leaf)}{list(jnp.shape(leaf))}"
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    ]
    text = ", ".join(parts)
    return text if len(text) <= 300 else text[:300] + "..."


def _abstract(tree: PyTree, drop_leading: bool = False) -> PyTree:
    def spec(leaf):
        shape = jnp.shape(leaf)[1:] if drop_leading else jnp.shape(leaf)
        return jax.ShapeDtypeStruct(shape, jnp.result_type(leaf))

    return jax.tree.map(spec, tree)


def _probe(user_fn, params: PyTree, x: Any, batches: PyTree) -> tuple[Exception | None, Any]:
    """(the error, None) of one abstract call of the user's function, or (None, its output's
    shapes) if it succeeds."""
    try:
        if x is not None:
            one = jax.ShapeDtypeStruct((1, *jnp.shape(x)[1:]), jnp.result_type(x))
            return None, jax.eval_shape(user_fn, _abstract(params), one)
        return None, jax.eval_shape(
            user_fn, _abstract(params), _abstract(batches, drop_leading=True)
        )
    except Exception as e:
        return e, None


def call_fitting_inputs(
    run, fn_name: str, user_fn, params: PyTree, *, x: Any = None, batches: PyTree = None
) -> Any:
    """`run()`, where a failure caused by inputs that do not fit the model becomes one line.

    When `run()` raises, `user_fn` is called once abstractly (`jax.eval_shape`, no
    computation) the way the metric calls it: `logits_fn(params, x[:1])` (`x` given) or
    `loss_fn(params, batch)` on batch 0. If that fails too, the inputs do not fit the model
    (images of another size, batches without the leading batch-index axis, a label count that
    differs from the image count, or a function taking (x, params) / (batch, params)):
    ValueError naming the argument, its shapes and the expected layout, chained to the original
    error. A `logits_fn` that runs but returns no [1, C] logits is named too. Otherwise the
    original error is raised unchanged.
    """
    try:
        return run()
    except Exception as err:
        problem, out = _probe(user_fn, params, x, batches)
        fn, data = ("logits_fn", "x[:1]") if x is not None else ("loss_fn", "batch")
        if problem is None and x is not None and len(getattr(out, "shape", ())) != 2:
            raise ValueError(
                f"{fn_name}: logits_fn must return logits [N, C] (one row of class scores per "
                f"example); logits_fn(params, x[:1]) returned "
                f"{jax.tree.map(lambda o: f'shape {o.shape}', out)}"
            ) from err
        if problem is None or isinstance(problem, jax.errors.JAXTypeError):
            raise
        if _probe(lambda p, d: user_fn(d, p), params, x, batches)[0] is None:
            raise ValueError(
                f"{fn_name}: {fn}({data}, params) works but {fn}(params, {data}) does not: "
                f"{fn} must take params first, as {fn}(params, {data.removesuffix('[:1]')})"
            ) from err
        lines = [line for line in str(problem).splitlines() if line.strip()]
        cause = f"{type(problem).__name__}: {lines[0][:300] if lines else ''}"
        if x is not None:
            raise ValueError(
                f"{fn_name}: logits_fn(params, x[:1]) fails for x of shape {jnp.shape(x)} "
                f"({cause}); x must be inputs [N, ...] that the model of params takes, "
                "e.g. images [N, H, W, C] of the model's input size"
            ) from err
        raise ValueError(
            f"{fn_name}: loss_fn(params, batch) fails on batch 0 of batches "
            f"({_layout(batches)}) ({cause}); batches must be the model's batch with a "
            "leading batch-index axis on every leaf, e.g. (images[B, n, H, W, C] of the "
            "model's input size, labels[B, n])"
        ) from err


def check_mesh(mesh: Any) -> Mesh | None:
    if mesh is not None and not isinstance(mesh, Mesh):
        raise ValueError(
            f"mesh must be a jax.sharding.Mesh (e.g. earlyjax.parallel.data_mesh()) or None, "
            f"got {type(mesh).__name__}"
        )
    return mesh


def place_on_mesh(tree: PyTree, mesh: Mesh | None) -> PyTree:
    """Concrete arrays of `tree` replicated over `mesh` (traced leaves and mesh=None: as is).

    Arrays already on the mesh (e.g. a training run's replicated parameters, or global arrays
    of a multi-host run) are left where they are.
    """
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, P())

    def place(x):
        if isinstance(x, jax.core.Tracer):
            return x
        if isinstance(x, jax.Array) and x.sharding.device_set == sharding.device_set:
            return x
        return jax.device_put(x, sharding)

    return jax.tree.map(place, tree)


def split_over_devices(tree: PyTree, mesh: Mesh | None, axis: int = 0) -> PyTree:
    """Inside a compiled function: lay `axis` of every leaf out across the mesh's devices and
    let XLA partition the work (ordinary batched data parallelism; no-op without a mesh)."""
    if mesh is None:
        return tree
    spec = P(*([None] * axis), mesh.axis_names[0])
    return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, spec))


def device_map(fn, shared: PyTree, xs: PyTree, mesh: Mesh | None) -> PyTree:
    """`fn(shared, xs)` with the leading axis of `xs` split over the mesh's devices.

    The one mechanism behind the metrics' data parallelism: each device runs `fn` on its own
    slice of `xs` (chunks of examples, perturbation samples or batches) as one `shard_map`ped
    program, with `shared` (parameters, a batch) replicated. `fn` must take every array it uses
    from its arguments (a closed-over array keeps its outer sharding, which shard_map refuses),
    treat the elements of `xs` independently, and return outputs whose leading axis matches
    them; those are put back together. The axis is padded to a multiple of the device count
    with copies of element 0, cut from the outputs again. Without a mesh: `fn(shared, xs)`.

    Why shard_map and not a sharding constraint: XLA's automatic partitioning of vmapped
    per-example gradients of a convolution (`vmap(grad(...))` with the example axis split)
    returned per-example gradient norms off by up to 0.8% on 4 CPU devices (jax 0.10.2),
    while each device running the single-device program is exact. `check_vma=False`: with the
    check on, the gradient with respect to a replicated value would be summed over devices.
    """
    if mesh is None:
        return fn(shared, xs)
    d = mesh.size
    n = jax.tree.leaves(xs)[0].shape[0]
    pad = -n % d
    if pad:
        xs = jax.tree.map(
            lambda x: jnp.concatenate([x, jnp.broadcast_to(x[:1], (pad, *x.shape[1:]))]), xs
        )
    split = P(mesh.axis_names[0])
    out = jax.shard_map(fn, mesh=mesh, in_specs=(P(), split), out_specs=split, check_vma=False)(
        shared, xs
    )
    return jax.tree.map(lambda y: y[:n], out)
