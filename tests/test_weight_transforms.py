"""The perturbations at the rewinding step: what each keeps and what it changes, seeded."""

import jax
import numpy as np
import pytest

from earlyjax.pruning import apply_mask, magnitude_prune, ones_mask, prunable_mask
from earlyjax.weight_transforms import TRANSFORMS, transform_weights

KEY = jax.random.key(0)


def init(seed, scale=1.0):
    """A params tree with a uniform init of known std (bound / sqrt(3)) and a BatchNorm."""
    rng = np.random.default_rng(seed)
    return {
        "big": {
            "kernel": rng.uniform(-scale, scale, size=(64, 128)).astype(np.float32),
            "bias": rng.normal(size=128).astype(np.float32),
        },
        "bn": {"scale": np.ones(128, np.float32), "bias": rng.normal(size=128).astype(np.float32)},
        "small": {
            "kernel": rng.uniform(-2 * scale, 2 * scale, size=(3, 3, 2, 4)).astype(np.float32)
        },
    }


@pytest.fixture(scope="module")
def setup():
    at_k = init(0)
    prunable = prunable_mask(at_k)
    mask = magnitude_prune(at_k, ones_mask(at_k), prunable, 0.5)
    return apply_mask(at_k, mask), mask, prunable, init(1)


def run(name, setup, key=KEY, **kw):
    params, mask, prunable, fresh = setup
    return transform_weights(name, params, mask, prunable, key, fresh_params=fresh, **kw)


def unpruned(tree, mask, leaf):
    return np.asarray(tree[leaf]["kernel"])[mask[leaf]["kernel"]]


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_every_transform_keeps_mask_zeros_and_non_prunable_leaves(name, setup):
    params, mask, prunable, _ = setup
    kw = {"scale": 0.5} if name == "gaussian_noise" else {}
    out = run(name, setup, **kw)
    for leaf in ("big", "small"):
        kernel = np.asarray(out[leaf]["kernel"])
        assert np.all(kernel[~mask[leaf]["kernel"]] == 0.0)
        assert kernel.dtype == np.float32
    for path in (("big", "bias"), ("bn", "scale"), ("bn", "bias")):
        assert out[path[0]][path[1]] is params[path[0]][path[1]]  # untouched, same object
    jax.tree_util.tree_map(np.testing.assert_array_equal, out, run(name, setup, **kw))
    if name != "identity":
        moved = run(name, setup, jax.random.key(1), **kw)
        changed = name not in ("reinit", "sign_preserving_reinit")  # these use fresh_params only
        assert changed == bool(np.any(unpruned(moved, mask, "big") != unpruned(out, mask, "big")))


def test_layers_get_different_randomness():
    twins = {"a": {"kernel": np.arange(1.0, 65.0).reshape(8, 8)}}
    twins["b"] = {"kernel": twins["a"]["kernel"].copy()}
    mask, prunable = ones_mask(twins), prunable_mask(twins)
    for name in ("shuffle", "gaussian_noise"):
        kw = {"init_std": jax.tree_util.tree_map(lambda _: 1.0, twins)} if name != "shuffle" else {}
        out = transform_weights(name, twins, mask, prunable, KEY, **kw)
        assert np.any(np.asarray(out["a"]["kernel"]) != np.asarray(out["b"]["kernel"])), name


def test_identity_and_reinit(setup):
    params, mask, _, fresh = setup
    jax.tree_util.tree_map(np.testing.assert_array_equal, run("identity", setup), params)
    out = run("reinit", setup)
    np.testing.assert_array_equal(unpruned(out, mask, "big"), unpruned(fresh, mask, "big"))


def test_sign_preserving_reinit(setup):
    params, mask, _, fresh = setup
    out = run("sign_preserving_reinit", setup)
    for leaf in ("big", "small"):
        new, old = unpruned(out, mask, leaf), unpruned(params, mask, leaf)
        np.testing.assert_array_equal(np.sign(new), np.sign(old))
        np.testing.assert_array_equal(np.abs(new), np.abs(unpruned(fresh, mask, leaf)))


def test_shuffles_keep_each_layers_multiset(setup):
    params, mask, _, _ = setup
    values, magnitudes = run("shuffle", setup), run("shuffle_magnitudes", setup)
    for leaf in ("big", "small"):
        old = unpruned(params, mask, leaf)
        shuffled = unpruned(values, mask, leaf)
        np.testing.assert_array_equal(np.sort(shuffled), np.sort(old))
        assert np.mean(shuffled != old) > 0.5  # actually moved
        by_magnitude = unpruned(magnitudes, mask, leaf)
        np.testing.assert_array_equal(np.sign(by_magnitude), np.sign(old))
        np.testing.assert_array_equal(np.sort(np.abs(by_magnitude)), np.sort(np.abs(old)))
        assert np.mean(np.abs(by_magnitude) != np.abs(old)) > 0.5


@pytest.mark.parametrize("c", [0.1, 1.0])
def test_gaussian_noise_std_is_c_times_init_std(c, setup):
    params, mask, _, fresh = setup
    sigma = np.std(fresh["big"]["kernel"])  # about 1 / sqrt(3) for U(-1, 1)
    noise = unpruned(run("gaussian_noise", setup, scale=c), mask, "big") - unpruned(
        params, mask, "big"
    )
    assert abs(np.std(noise) / (c * sigma) - 1.0) < 0.05  # 4096 draws
    explicit = jax.tree_util.tree_map(lambda _: 0.25, params)
    noise = unpruned(run("gaussian_noise", setup, scale=c, init_std=explicit), mask, "big")
    assert abs(np.std(noise - unpruned(params, mask, "big")) / (c * 0.25) - 1.0) < 0.05


def test_runs_under_jit_and_refuses_unknown_or_missing_inputs(setup):
    params, mask, prunable, _ = setup
    jitted = jax.jit(lambda p, k: TRANSFORMS["shuffle"](p, mask, prunable, k))
    jax.tree_util.tree_map(
        np.testing.assert_array_equal, jitted(params, KEY), run("shuffle", setup)
    )
    with pytest.raises(ValueError, match="'shufle'"):
        transform_weights("shufle", params, mask, prunable, KEY)
    with pytest.raises(ValueError, match="reinit needs fresh_params"):
        transform_weights("reinit", params, mask, prunable, KEY)
