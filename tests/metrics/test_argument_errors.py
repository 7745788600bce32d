"""Misuses of the metric API that used to give NaN or a raw IndexError / structure error are
one-line ValueErrors naming the argument: an empty batch for average_sharpness, a logits_fn
that returns [N] (not [N, C]) or takes (x, params), and params and x swapped in the call."""

import jax
import jax.numpy as jnp
import pytest
from helpers import mlp_logits, mlp_loss, mlp_params

from earlyjax.metrics import average_sharpness, fisher_trace

KEY = jax.random.key(0)


X = jax.random.normal(jax.random.key(1), (6, 4))
PARAMS = mlp_params()
logits_fn = mlp_logits
loss_fn = mlp_loss


def one_line_error(call, *names):
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for name in names:
        assert name in message, message
    return message


def test_average_sharpness_refuses_empty_batches_naming_batches():
    empty = (jnp.zeros((2, 0, 4)), jnp.zeros((2, 0), jnp.int32))
    message = one_line_error(lambda: average_sharpness(loss_fn, PARAMS, empty, KEY), "batches")
    assert message.startswith("batches holds empty batches")


@pytest.mark.parametrize(
    "options",
    [{}, {"per_example": "vmap"}, {"per_example": "layers"}, {"exact": True}],
    ids=["auto", "vmap", "layers", "exact"],
)
def test_fisher_trace_refuses_logits_of_shape_n_naming_logits_fn(options):
    def scores(params, x):  # [N]: the class axis summed away
        return logits_fn(params, x).sum(-1)

    message = one_line_error(lambda: fisher_trace(scores, PARAMS, X, KEY, **options), "logits_fn")
    assert "[N, C]" in message and "shape (1,)" in message


def test_fisher_trace_refuses_a_logits_fn_taking_x_first_naming_logits_fn():
    def swapped(x, params):
        return logits_fn(params, x)

    message = one_line_error(lambda: fisher_trace(swapped, PARAMS, X, KEY), "logits_fn")
    assert "must take params first" in message


def test_fisher_trace_refuses_params_and_x_swapped_naming_x():
    message = one_line_error(lambda: fisher_trace(logits_fn, X, PARAMS, KEY), "x must be")
    assert "swapped" in message


def test_a_fitting_logits_fn_still_gives_a_value():
    assert jnp.isfinite(fisher_trace(logits_fn, PARAMS, X, KEY))
