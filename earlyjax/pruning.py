"""Global magnitude pruning for lottery tickets (Frankle et al. 2020; open_lth's `sparse_global`).

Works on any Flax params pytree. Three trees of the same structure are involved:

* `params`: the weights.
* `prunable`: one Python bool per leaf (`prunable_mask`): True for the conv and dense kernels
  (leaves named `kernel` with ndim >= 2: the first conv, the 1x1 shortcuts and, unless excluded,
  the output layer included), False for biases, BatchNorm/LayerNorm scales and biases and
  embeddings (leaves named `embedding`), and for every leaf under an excluded path prefix.
* `mask`: one numpy bool array per leaf, of the leaf's shape (`ones_mask` to start): False marks
  a pruned weight. Only prunable leaves are ever pruned; the others stay all True.

`magnitude_prune` is open_lth's rule exactly: with R the unpruned prunable weights (global, over
all prunable leaves together), n = ceil(fraction * R) and threshold = sort(|w| of the R)[n]
(0-based); a weight is kept only if it was unpruned and |w| > threshold, so n + 1 weights go when
the magnitudes are distinct, and every weight tied at the threshold goes too. Masks only shrink.
It runs on the host in numpy (once per pruning level; not meant to be jitted).

Training a pruned network: multiply the weights by the mask before every forward pass
(`apply_mask`, jittable) and end the optimizer chain with `masked_updates(mask)`, which zeroes the
updates of pruned entries, so momentum or weight decay cannot move them:
`optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr, momentum), masked_updates(mask))`.
With the stored params masked once (`apply_mask`) the pruned entries then stay exactly 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

# The output layer's path prefix per model family: VGG and LeNet never prune it (open_lth's
# exclusion lists); ResNets prune it like every other kernel. VGG-11 here has three dense layers
# in its head, and only the last (the output layer) is excluded. LeNet-300-100 is assumed to keep
# its output layer under "head" (the repo's convention: a model's head lives under `HEAD`).
DEFAULT_EXCLUSIONS: dict[str, tuple[str, ...]] = {
    "resnet18": (),
    "resnet20": (),
    "resnet50": (),
    "vgg11": ("head/fc3",),
    "lenet300_100": ("head",),
}


def default_exclusions(model_name: str) -> tuple[str, ...]:
    """Path prefixes never pruned for a model family (see `DEFAULT_EXCLUSIONS`)."""
    if model_name not in DEFAULT_EXCLUSIONS:
        raise ValueError(
            f"no default pruning exclusions for model {model_name!r}; choose one of "
            f"{sorted(DEFAULT_EXCLUSIONS)} or pass exclude= to prunable_mask yourself"
        )
    return DEFAULT_EXCLUSIONS[model_name]


def path_str(path: tuple) -> str:
    """A leaf's path as "a/b/kernel"."""
    parts = []
    for entry in path:
        key = getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", entry)))
        parts.append(str(key))
    return "/".join(parts)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def prunable_mask(params: Any, exclude: str | Sequence[str] = ()) -> Any:
    """One bool per leaf: True for conv/dense kernels not under a prefix of `exclude`.

    A prefix that matches no leaf is refused (a typo would otherwise prune the output layer).
    """
    prefixes = (exclude,) if isinstance(exclude, str) else tuple(exclude)
    paths = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    for prefix in prefixes:
        if not any(_under(path, prefix) for path in paths):
            raise ValueError(
                f"exclude prefix {prefix!r} matches no parameter; use a path such as "
                f"{paths[0]!r} or a prefix of one"
            )

    def is_prunable(path, leaf) -> bool:
        name = path_str(path)
        is_kernel = name.rsplit("/", 1)[-1] == "kernel" and np.ndim(leaf) >= 2
        return bool(is_kernel and not any(_under(name, p) for p in prefixes))

    return jax.tree_util.tree_map_with_path(is_prunable, params)


def ones_mask(params: Any) -> Any:
    """The mask of the unpruned network: all True, one numpy array per leaf."""
    return jax.tree_util.tree_map(lambda p: np.ones(np.shape(p), dtype=bool), params)


def _prunable_pairs(mask: Any, prunable: Any) -> list[tuple[str, np.ndarray]]:
    flat_mask = jax.tree_util.tree_flatten_with_path(mask)[0]
    flat_prunable = jax.tree_util.tree_leaves(prunable)
    if len(flat_mask) != len(flat_prunable):
        raise ValueError(
            f"mask has {len(flat_mask)} leaves but prunable has {len(flat_prunable)}; build both "
            "from the same params (ones_mask(params), prunable_mask(params))"
        )
    pairs = zip(flat_mask, flat_prunable, strict=True)
    return [(path_str(p), np.asarray(m)) for (p, m), ok in pairs if ok]


def density(mask: Any, prunable: Any) -> float:
    """The fraction of prunable weights remaining (1.0 before any pruning)."""
    pairs = _prunable_pairs(mask, prunable)
    total = sum(m.size for _, m in pairs)
    return float(sum(int(m.sum()) for _, m in pairs) / max(total, 1))


def layer_densities(mask: Any, prunable: Any) -> dict[str, float]:
    """The fraction remaining of each prunable leaf, by path ("layer1/block0/conv1/kernel")."""
    return {path: float(m.mean()) for path, m in _prunable_pairs(mask, prunable)}


def magnitude_prune(params: Any, mask: Any, prunable: Any, fraction: float = 0.2) -> Any:
    """The next level's mask: open_lth's global magnitude pruning (module docstring)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(
            f"pruning fraction must be in (0, 1), got {fraction!r}; pass e.g. fraction=0.2"
        )
    leaves, treedef = jax.tree_util.tree_flatten(params)
    masks = [np.asarray(m, dtype=bool) for m in treedef.flatten_up_to(mask)]
    flags = treedef.flatten_up_to(prunable)
    weights = [np.abs(np.asarray(p)) for p in leaves]
    for w, m in zip(weights, masks, strict=True):
        if w.shape != m.shape:
            raise ValueError(f"mask shape {m.shape} differs from its weight's {w.shape}")
    remaining = [w[m] for w, m, ok in zip(weights, masks, flags, strict=True) if ok]
    vector = np.concatenate(remaining) if remaining else np.zeros(0)
    n = np.ceil(fraction * vector.size).astype(int)
    if n >= vector.size:
        raise ValueError(
            f"cannot prune: {vector.size} prunable weights remain and ceil({fraction} * "
            f"{vector.size}) = {n} leaves none above the threshold; stop pruning earlier"
        )
    threshold = np.sort(vector)[n]
    new = [
        np.where(w > threshold, m, False) if ok else m
        for w, m, ok in zip(weights, masks, flags, strict=True)
    ]
    return treedef.unflatten(new)


def apply_mask(params: Any, mask: Any) -> Any:
    """The weights with every pruned entry exactly 0 (jittable; use before each forward pass)."""
    return jax.tree_util.tree_map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, mask)


class MaskedUpdatesState(NamedTuple):
    """`masked_updates` keeps no state."""


def masked_updates(mask: Any) -> optax.GradientTransformation:
    """Zeroes the updates of pruned entries: put it last in the optimizer chain.

    Whatever comes before it (momentum, weight decay, Adam) may still track a pruned entry in its
    own state, but no update reaches the weight, so a pruned weight stored as 0 stays exactly 0.
    """

    def init_fn(params):
        del params
        return MaskedUpdatesState()

    def update_fn(updates, state, params=None):
        del params
        return apply_mask(updates, mask), state

    return optax.GradientTransformation(init_fn, update_fn)
