"""Gradual unfreezing and the LR switch as interventions: Algorithm 1's schedule, true
freezing, one compilation, schedules changed live."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from earlyjax import freezing
from earlyjax.interventions import (
    GradualUnfreezing,
    build_optimizer,
    learning_rate_schedule,
)

BLOCKS = ("stem", "layer1", "layer2")


def gu_optimizer(params, release_steps, lr=0.1, momentum=0.0, wd=0.0, blocks=BLOCKS):
    """(the paper's optimizer with gradual unfreezing on `release_steps`, the leaf groups)."""
    unfreezing = GradualUnfreezing(blocks)
    opt = build_optimizer(
        params, [(unfreezing, release_steps)], lr=lr, momentum=momentum, weight_decay=wd
    )
    return opt, unfreezing.groups(params)


def algorithm1_trainable_sets(k, num_blocks, num_steps):
    """A literal transcription of Algorithm 1: the set S used by iteration i = 1..N."""
    trainable = {"head"}
    j = num_blocks - 1
    sets = []
    for i in range(1, num_steps + 1):
        if i % k == 0 and i <= k * num_blocks:
            trainable = trainable | {BLOCKS[j]}
            j -= 1
        sets.append(frozenset(trainable))
    return sets


def flat_leaves(tree, dtype=None):
    """{"block/.../leaf": numpy array} of a parameter tree."""
    return {
        "/".join(str(p.key) for p in path): np.asarray(v, dtype)
        for path, v in jax.tree_util.tree_leaves_with_path(tree)
    }


def toy_params():
    rng = np.random.default_rng(0)
    return {
        "stem": {"conv": {"kernel": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)}},
        "layer1": {"w": jnp.asarray(rng.normal(size=(4,)), jnp.float32)},
        "layer2": {
            "a": jnp.asarray(rng.normal(size=(2, 2)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=(3,)), jnp.float32),
        },
        "head": {"fc": {"kernel": jnp.asarray(rng.normal(size=(2,)), jnp.float32)}},
    }


def toy_grads(params, step):
    """A deterministic, step-dependent gradient so momentum matters."""
    return jax.tree.map(lambda p: jnp.sin(p * (step + 1.0)) + 0.1 * step, params)


def toy_step(opt):
    """One jitted update of `opt` on `toy_grads`: (params, state, step) -> (params, state)."""

    @jax.jit
    def step_fn(params, state, step):
        updates, state = opt.update(toy_grads(params, step), state, params, step=step)
        return optax.apply_updates(params, updates), state

    return step_fn


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_release_steps_match_algorithm1(k):
    num_steps = k * len(BLOCKS) + 4
    sets = algorithm1_trainable_sets(k, len(BLOCKS), num_steps)
    release = freezing.release_steps_for(k, len(BLOCKS))
    for step in range(num_steps):  # optimizer step `step` is Algorithm 1's iteration step + 1
        ours = {name for g, name in enumerate([*BLOCKS, "head"]) if step >= release[g]}
        assert ours == sets[step], f"step {step}"


def test_standard_training_and_bad_k():
    np.testing.assert_array_equal(freezing.release_steps_for(None, 3), [0, 0, 0, 0])
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="unfreezing interval k"):
            freezing.release_steps_for(bad, 3)


def run_reference_sgd(params, k, lr, momentum, wd, num_steps):
    """NumPy PyTorch SGD over Algorithm 1's sets; frozen leaves have no buffer and no decay."""
    sets = algorithm1_trainable_sets(k, len(BLOCKS), num_steps)
    flat = flat_leaves(params, np.float64)
    bufs = {}
    for step in range(num_steps):
        tree = jax.tree_util.tree_unflatten(
            jax.tree.structure(params), [jnp.asarray(v, jnp.float32) for v in flat.values()]
        )
        grads = flat_leaves(toy_grads(tree, step), np.float64)
        for name in flat:
            if name.split("/")[0] not in sets[step]:
                continue
            d = grads[name] + wd * flat[name]
            bufs[name] = momentum * bufs[name] + d if name in bufs else d
            flat[name] = flat[name] - lr * bufs[name]
    return flat


@pytest.mark.parametrize("momentum,wd", [(0.9, 0.01), (0.0, 0.0), (0.9, 0.0)])
def test_matches_hand_computed_pytorch_sgd(momentum, wd):
    k, lr, num_steps = 2, 0.1, 9
    params = toy_params()
    opt, _ = gu_optimizer(
        params, freezing.release_steps_for(k, len(BLOCKS)), lr=lr, momentum=momentum, wd=wd
    )
    state = opt.init(params)
    step_fn = toy_step(opt)

    p = params
    for step in range(num_steps):
        before = p
        p, state = step_fn(p, state, step)
        moved = {
            path[0].key
            for path, a, b in zip(
                [x[0] for x in jax.tree_util.tree_leaves_with_path(p)],
                jax.tree.leaves(before),
                jax.tree.leaves(p),
                strict=True,
            )
            if not np.array_equal(a, b)
        }
        expected = algorithm1_trainable_sets(k, len(BLOCKS), num_steps)[step]
        assert moved == set(expected), f"step {step}: moved {moved}, Algorithm 1 trains {expected}"
    ref = run_reference_sgd(params, k, lr, momentum, wd, num_steps)
    ours = flat_leaves(p)
    for name in ref:
        np.testing.assert_allclose(ours[name], ref[name], rtol=1e-5, atol=1e-6, err_msg=name)


def run_reference_adamw(params, k, lr, wd, num_steps, linear):
    """NumPy PyTorch AdamW (default betas, eps) over Algorithm 1's sets, with HF's linear
    schedule when `linear`: a frozen leaf has no state, and its step count starts at its
    first update (PyTorch's per-parameter `step`); decay is p *= 1 - lr_t * wd."""
    sets = algorithm1_trainable_sets(k, len(BLOCKS), num_steps)
    flat = flat_leaves(params, np.float64)
    state = {}
    for step in range(num_steps):
        lr_t = lr * (1 - step / num_steps) if linear else lr
        tree = jax.tree_util.tree_unflatten(
            jax.tree.structure(params), [jnp.asarray(v, jnp.float32) for v in flat.values()]
        )
        grads = flat_leaves(toy_grads(tree, step), np.float64)
        for name in flat:
            if name.split("/")[0] not in sets[step]:
                continue
            n, m, v = state.get(name, (0, 0.0, 0.0))
            n, g = n + 1, grads[name]
            m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
            state[name] = (n, m, v)
            flat[name] = flat[name] * (1 - lr_t * wd)
            flat[name] -= lr_t * (m / (1 - 0.9**n)) / (np.sqrt(v / (1 - 0.999**n)) + 1e-8)
    return flat


@pytest.mark.parametrize("lr_schedule", ["constant", "linear"])
def test_matches_hand_computed_pytorch_adamw(lr_schedule):
    k, lr, wd, num_steps = 2, 0.01, 0.01, 9
    params = toy_params()
    opt = build_optimizer(
        params, [(GradualUnfreezing(BLOCKS), freezing.release_steps_for(k, len(BLOCKS)))],
        lr=lr, weight_decay=wd, name="adamw", lr_schedule=lr_schedule, num_steps=num_steps,
    )  # fmt: skip
    state = opt.init(params)
    step_fn = toy_step(opt)

    p = params
    for step in range(num_steps):
        p, state = step_fn(p, state, step)
    ref = run_reference_adamw(params, k, lr, wd, num_steps, lr_schedule == "linear")
    ours = flat_leaves(p)
    for name in ref:
        np.testing.assert_allclose(ours[name], ref[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert not np.allclose(ours["stem/conv/kernel"], np.asarray(params["stem"]["conv"]["kernel"]))
    for step in (0, 4, 8):
        want = 1 - step / num_steps if lr_schedule == "linear" else 1.0
        got = learning_rate_schedule(lr_schedule, lr, num_steps)(step)
        assert float(got) == pytest.approx(lr * want)


def test_frozen_group_keeps_zero_momentum_until_release():
    params = toy_params()
    opt, _ = gu_optimizer(params, freezing.release_steps_for(4, len(BLOCKS)), momentum=0.9)
    state = opt.init(params)
    for step in range(3):  # stem releases at step 4*3-1 = 11
        _, state = opt.update(toy_grads(params, step), state, params, step=step)
    stem_gate = state[0].inner_states[0].inner_state
    trace = jax.tree.leaves(stem_gate.inner_state)
    assert trace and all(not np.any(np.asarray(t)) for t in trace)


def test_one_compilation_for_a_whole_run_and_live_schedule_change():
    params = toy_params()
    opt, labels = gu_optimizer(params, freezing.head_only_release_steps(len(BLOCKS)), momentum=0.9)
    traces = []

    @jax.jit
    def step_fn(params, state, step):
        traces.append(step)  # runs only while tracing
        updates, state = opt.update(toy_grads(params, step), state, params, step=step)
        return optax.apply_updates(params, updates), state

    state = opt.init(params)
    p = params
    for step in range(4):
        p, state = step_fn(p, state, jnp.int32(step))
    assert np.array_equal(p["layer2"]["a"], params["layer2"]["a"])  # head-only so far
    # Adaptive unfreezing: release layer2 now, without rebuilding the optimizer.
    new_steps = np.asarray(freezing.get_release_steps(state)).copy()
    new_steps[BLOCKS.index("layer2")] = 4
    state = freezing.set_release_steps(state, new_steps)
    before = p
    p, state = step_fn(p, state, jnp.int32(4))
    assert not np.array_equal(p["layer2"]["a"], before["layer2"]["a"])
    assert np.array_equal(p["layer1"]["w"], before["layer1"]["w"])
    assert len(traces) == 1, "the update recompiled"
    mask = freezing.trainable_mask(labels, freezing.get_release_steps(state), 5)
    assert bool(mask["layer2"]["b"]) and not bool(mask["layer1"]["w"])


def test_labels_follow_namespaces_and_reject_strays():
    params = toy_params()
    labels = freezing.group_labels(params, BLOCKS)
    assert labels["layer2"]["b"] == 2 and labels["head"]["fc"]["kernel"] == 3
    with pytest.raises(ValueError, match="'extra/w' belongs to no block"):
        freezing.group_labels({**params, "extra": {"w": jnp.zeros(1)}}, BLOCKS)
    with pytest.raises(ValueError, match=r"\['layer9'\] match no parameter"):
        gu_optimizer(params, freezing.release_steps_for(None, 4), blocks=(*BLOCKS, "layer9"))
