"""The interventions on their own: the LR switch and gradual unfreezing (top-down release)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from earlyjax.freezing import NEVER
from earlyjax.interventions import (
    GradualUnfreezing,
    LRSwitch,
    build_optimizer,
    learning_rate_schedule,
)


@pytest.mark.parametrize("direction,before,after", [("l2h", 0.01, 0.1), ("h2l", 0.1, 0.01)])
def test_lr_switch_is_data_in_the_optimizer_state(direction, before, after):
    """Plain SGD steps of size lr * factor: 0.1x before the switch for l2h, after it for h2l;
    the switch step is read from the state, so moving it recompiles nothing."""
    params = {"head": {"w": jnp.ones(3)}}
    grads = {"head": {"w": jnp.ones(3)}}
    unfreezing, switch = GradualUnfreezing(()), LRSwitch(direction)
    schedules = [(unfreezing, unfreezing.schedule_for_k(None)), (switch, switch.schedule_for_k(5))]
    opt = build_optimizer(params, schedules, lr=0.1)
    traces = []

    @jax.jit
    def size(state, step):
        traces.append(step)
        updates, _ = opt.update(grads, state, params, step=step)
        return -updates["head"]["w"][0]

    state = opt.init(params)
    got = [float(size(state, jnp.int32(s))) for s in (0, 4, 5, 50)]
    np.testing.assert_allclose(got, [before, before, after, after], rtol=1e-6)
    assert int(switch.get_schedule(state)[0]) == 5
    held = switch.set_schedule(state, switch.held())  # the signal run: never switched
    assert float(size(held, jnp.int32(10**6))) == pytest.approx(before)
    assert len(traces) == 1
    assert switch.remove_next(switch.held(), 7).tolist() == [7]
    assert switch.removal_record(switch.held(), np.array([7])) == {
        "intervention": "lr_switch",
        "switch_step": 7,
    }
    with pytest.raises(ValueError, match="unknown LR switch 'up'"):
        LRSwitch("up")
    with pytest.raises(ValueError, match="needs a step k"):
        switch.schedule_for_k(0)


def test_gradual_unfreezing_removes_blocks_top_down():
    unfreezing = GradualUnfreezing(("stem", "layer1", "layer2"))
    held = unfreezing.held()
    assert held.tolist() == [NEVER, NEVER, NEVER, 0] and unfreezing.parts_left(held) == 3
    once = unfreezing.remove_next(held, 12)
    assert once.tolist() == [NEVER, NEVER, 12, 0] and unfreezing.last_removal(once) == 12
    assert unfreezing.remove_all(once, 20).tolist() == [20, 20, 12, 0]
    assert unfreezing.removal_record(held, once)["blocks"] == ["layer2"]
    assert unfreezing.max_fitting_k(100) == 33  # 33 * 3 = 99 < 100


def test_multistep_schedule_divides_at_each_milestone():
    schedule = learning_rate_schedule("multistep", 0.1, milestones=(80, 120), gamma=0.1)
    got = [float(schedule(s)) for s in (0, 79, 80, 119, 120, 10_000)]
    np.testing.assert_allclose(got, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)


def test_a_fresh_optimizer_state_continues_the_schedule_at_the_train_step():
    """The LR comes from the train state's step, not a count in the optimizer state: a branch
    from step k with a fresh state (earlyjax.branch) takes the step-k learning rate."""
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.ones(3)}
    opt = build_optimizer(params, [], lr=0.1, lr_schedule="multistep", milestones=(5,))
    fresh = opt.init(params)
    before, _ = opt.update(grads, fresh, params, step=4)
    after, _ = opt.update(grads, fresh, params, step=5)
    np.testing.assert_allclose(before["w"], -0.1, rtol=1e-6)
    np.testing.assert_allclose(after["w"], -0.01, rtol=1e-6)


def test_cosine_is_stepped_once_per_epoch_as_pytorchs_cosine_annealing():
    schedule = learning_rate_schedule("cosine", 0.1, num_steps=40, steps_per_epoch=10)
    epochs = 4
    for step in (0, 9, 10, 25, 39):
        e = step // 10
        want = 0.5 * 0.1 * (1 + np.cos(np.pi * e / epochs))
        np.testing.assert_allclose(float(schedule(step)), want, rtol=1e-6, err_msg=str(step))


def test_warmup_cosine_rises_linearly_then_decays_to_zero():
    schedule = learning_rate_schedule("warmup_cosine", 0.2, num_steps=100, warmup_steps=10)
    np.testing.assert_allclose(
        [float(schedule(s)) for s in (0, 5, 10, 100)], [0.0, 0.1, 0.2, 0.0], atol=1e-7
    )
    assert float(schedule(50)) < 0.2
