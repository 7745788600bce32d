"""Global magnitude pruning against open_lth's sparse_global, and masked training."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from earlyjax import pruning
from earlyjax.pruning import apply_mask, magnitude_prune, masked_updates, ones_mask, prunable_mask


def tree(seed=0, scale_b=1.0):
    rng = np.random.default_rng(seed)
    return {
        "conv": {"kernel": rng.normal(size=(3, 3, 2, 4)).astype(np.float32)},
        "bn": {"scale": rng.normal(size=4).astype(np.float32), "bias": np.ones(4, np.float32)},
        "b": {
            "kernel": (scale_b * rng.normal(size=(4, 8))).astype(np.float32),
            "bias": rng.normal(size=8).astype(np.float32),
        },
        "head": {"kernel": rng.normal(size=(8, 3)).astype(np.float32)},
    }


def open_lth_sparse_global(weights: dict, masks: dict, fraction: float) -> dict:
    """open_lth's pruning/sparse_global.py, transcribed on dicts of numpy arrays."""
    remaining = np.sum([np.sum(v) for v in masks.values()])
    n = np.ceil(fraction * remaining).astype(int)
    vector = np.concatenate([v[masks[k] == 1] for k, v in weights.items()])
    threshold = np.sort(np.abs(vector))[n]
    return {
        k: np.where(np.abs(v) > threshold, masks[k], np.zeros_like(v)) for k, v in weights.items()
    }


def test_prunable_is_kernels_only_and_exclusions_are_checked():
    params = tree()
    prunable = prunable_mask(params)
    assert prunable == {
        "conv": {"kernel": True},
        "bn": {"scale": False, "bias": False},
        "b": {"kernel": True, "bias": False},
        "head": {"kernel": True},
    }
    assert prunable_mask(params, exclude=("head",))["head"]["kernel"] is False
    with pytest.raises(ValueError, match="'haed'"):
        prunable_mask(params, exclude=("haed",))
    assert pruning.default_exclusions("resnet18") == ()
    assert pruning.default_exclusions("vgg11") == ("head/fc3",)
    with pytest.raises(ValueError, match="'alexnet'"):
        pruning.default_exclusions("alexnet")


def test_hand_example_distinct_values_and_ties():
    # 10 distinct magnitudes: n = ceil(0.2 * 10) = 2, threshold = sorted[2] = 3: 1, 2, 3 go.
    params = {"a": {"kernel": np.array([[1.0, -2.0, 3.0, 4.0, 5.0], [6, 7, 8, 9, -10]])}}
    mask = magnitude_prune(params, ones_mask(params), prunable_mask(params), 0.2)
    assert (~mask["a"]["kernel"]).sum() == 3
    assert not mask["a"]["kernel"][0, :3].any() and mask["a"]["kernel"][0, 3:].all()
    # Ties at the threshold: |w| = 3 four times, so 1, 2 and all four 3s go (6, not 3).
    params = {"a": {"kernel": np.array([[1.0, -2.0, 3.0, -3.0, 3.0], [3, 7, 8, 9, 10]])}}
    mask = magnitude_prune(params, ones_mask(params), prunable_mask(params), 0.2)
    assert (~mask["a"]["kernel"]).sum() == 6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_open_lth_over_levels_and_masks_only_shrink(seed):
    params = tree(seed)
    prunable = prunable_mask(params, exclude=("head",))
    mask = ones_mask(params)
    keys = ["conv", "b"]
    ref = {k: np.ones_like(params[k]["kernel"]) for k in keys}
    for level in range(1, 6):
        # Perturb the weights each level (as training would), so earlier masks matter.
        factor = np.float32(1.1 - 0.1 * level)
        params = jax.tree_util.tree_map(lambda p, f=factor: p * f, params)
        params["b"]["kernel"] = params["b"]["kernel"][:, ::-1].copy()
        new = magnitude_prune(params, mask, prunable, 0.2)
        ref = open_lth_sparse_global({k: params[k]["kernel"] for k in keys}, ref, 0.2)
        for k in keys:
            np.testing.assert_array_equal(new[k]["kernel"], ref[k].astype(bool))
            assert not (new[k]["kernel"] & ~mask[k]["kernel"]).any()  # only shrinks
        assert new["head"]["kernel"].all() and new["bn"]["scale"].all() and new["b"]["bias"].all()
        mask = new
        # density 0.8 ** level, up to ceil's and the threshold's extra weight each level
        total = 72 + 32
        assert abs(pruning.density(mask, prunable) - 0.8**level) <= 2 * level / total + 1e-9


def test_global_not_per_layer():
    params = tree(0, scale_b=100.0)  # layer "b" has much larger weights
    prunable = prunable_mask(params)
    mask = magnitude_prune(params, ones_mask(params), prunable, 0.5)
    per_layer = pruning.layer_densities(mask, prunable)
    assert per_layer["b/kernel"] == 1.0 and per_layer["conv/kernel"] < 0.5
    assert set(per_layer) == {"conv/kernel", "b/kernel", "head/kernel"}


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 20])
def test_bad_fraction_is_refused_by_name(fraction):
    params = tree()
    with pytest.raises(ValueError, match=f"got {fraction!r}; pass e.g. fraction=0.2"):
        magnitude_prune(params, ones_mask(params), prunable_mask(params), fraction)


def _train(params, mask, opt, opt_state, steps, x, y):
    def loss(p):
        p = apply_mask(p, mask)  # masked before every forward pass
        h = jnp.tanh(x @ p["w"]["kernel"] + p["w"]["bias"])
        return jnp.mean((h @ p["out"]["kernel"] - y) ** 2)

    @jax.jit
    def step(p, s):
        updates, s = opt.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, updates), s

    for _ in range(steps):
        params, opt_state = step(params, opt_state)
    return params, opt_state


def test_pruned_weights_stay_exactly_zero_with_momentum_and_weight_decay():
    rng = np.random.default_rng(0)
    params = {
        "w": {"kernel": rng.normal(size=(5, 6)), "bias": rng.normal(size=6)},
        "out": {"kernel": rng.normal(size=(6, 2))},
    }
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)
    x, y = jnp.asarray(rng.normal(size=(16, 5)), jnp.float32), jnp.ones((16, 2))
    dense = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9))
    # A few dense steps build momentum, then prune and go on with the same optimizer state.
    params, state = _train(params, ones_mask(params), dense, dense.init(params), 3, x, y)
    prunable = prunable_mask(params)
    mask = magnitude_prune(params, ones_mask(params), prunable, 0.5)
    pruned = {k: ~mask[k]["kernel"] for k in ("w", "out")}
    masked = optax.chain(dense, masked_updates(mask))
    trained, _ = _train(
        apply_mask(params, mask), mask, masked, (state, pruning.MaskedUpdatesState()), 5, x, y
    )
    for k, off in pruned.items():
        assert off.any() and np.all(np.asarray(trained[k]["kernel"])[off] == 0.0)
        assert np.any(
            np.asarray(trained[k]["kernel"])[~off] != np.asarray(params[k]["kernel"])[~off]
        )
    # Without masked_updates the momentum left from the dense steps moves the pruned weights.
    moved, _ = _train(apply_mask(params, mask), mask, dense, state, 5, x, y)
    assert np.any(np.asarray(moved["w"]["kernel"])[pruned["w"]] != 0.0)


@pytest.mark.parametrize("name", ["resnet18", "vgg11"])
def test_default_exclusions_on_the_real_models(name):
    from earlyjax.models import build_model

    model, _ = build_model(name, num_classes=10, width=4)
    params = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.ones((1, 32, 32, 3)), train=False)
    )["params"]
    flat = jax.tree_util.tree_flatten_with_path(
        prunable_mask(params, pruning.default_exclusions(name))
    )[0]
    kept = {
        pruning.path_str(p) for p, ok in flat if not ok and pruning.path_str(p).endswith("kernel")
    }
    pruned = {pruning.path_str(p) for p, ok in flat if ok}
    assert all(p.endswith("/kernel") for p in pruned)  # never a bias or a BatchNorm leaf
    if name == "resnet18":  # everything, the first conv, the shortcuts and the output layer too
        assert not kept and {"stem/conv/kernel", "head/fc/kernel"} <= pruned
        assert "layer2/block0/shortcut_conv/kernel" in pruned
    else:
        assert kept == {"head/fc3/kernel"} and "head/fc1/kernel" in pruned
