"""The metrics' input checks: non-finite values and inputs that do not fit the model are one-line
ValueErrors naming the argument, at the public functions, and checked only when concrete."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    classification_batches,
    cnn_logits,
    cnn_loss,
    cnn_params,
    mlp_logits,
    mlp_loss,
    mlp_params,
)

from earlyjax.metrics import (
    average_sharpness,
    feature_rank,
    fisher_trace,
    hessian_top_eigenvalue,
    worst_sharpness,
)

CNN_PARAMS = cnn_params(seed=2, image_shape=(5, 5, 1))  # 5x5x1 images


def with_nan(params):
    p = jax.tree.map(lambda x: x, params)
    p["dense1"]["kernel"] = p["dense1"]["kernel"].at[1, 2].set(jnp.nan)
    return p


def loss_metric_calls(loss_fn, params, data):
    key = jax.random.key(0)
    return {
        "average_sharpness": lambda: average_sharpness(loss_fn, params, data, key, n_samples=2),
        "worst_sharpness": lambda: worst_sharpness(loss_fn, params, data, key, n_iters=2),
        "hessian_top_eigenvalue": lambda: hessian_top_eigenvalue(
            loss_fn, params, data, key, n_iters=2
        ),
    }


def one_line_error(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("name", ["average_sharpness", "worst_sharpness", "hessian_top_eigenvalue"])
def test_non_finite_params_and_batches_are_errors_naming_the_leaf(name):
    # worst_sharpness returned 0.0 for NaN parameters, the others NaN, without a word.
    call = loss_metric_calls(mlp_loss, with_nan(mlp_params()), classification_batches())[name]
    one_line_error(call, r"params\['dense1'\]\['kernel'\] holds non-finite values \(1 NaN")
    x, y = classification_batches()
    call = loss_metric_calls(mlp_loss, mlp_params(), (x.at[1, 0, 0].set(jnp.inf), y))[name]
    one_line_error(call, r"batches\[0\] holds non-finite values \(0 NaN, 1 inf")


def test_fisher_and_feature_rank_refuse_non_finite_inputs():
    key, x = jax.random.key(0), classification_batches()[0][0]
    one_line_error(
        lambda: fisher_trace(mlp_logits, with_nan(mlp_params()), x, key),
        r"params\['dense1'\]\['kernel'\]",
    )
    one_line_error(
        lambda: fisher_trace(mlp_logits, mlp_params(), x.at[0, 0].set(jnp.nan), key),
        r"^x holds non-finite values",
    )
    one_line_error(
        lambda: feature_rank(np.full((4, 3), np.nan, np.float32)), "features holds non-finite"
    )


def test_traced_values_are_not_checked():
    """Inside jit (the training run's recorder) the values are tracers: no check, no error."""
    params, data = with_nan(mlp_params()), classification_batches()

    @jax.jit
    def inside(params, data):
        return average_sharpness(mlp_loss, params, data, jax.random.key(0), n_samples=2)

    assert np.isnan(inside(params, data))
    finite = jax.jit(lambda p, d: average_sharpness(mlp_loss, p, d, jax.random.key(0)))
    assert np.isfinite(finite(mlp_params(), data))
    # Concrete parameters closed over by a compiled function are checked (at tracing).
    closed = jax.jit(lambda d: average_sharpness(mlp_loss, params, d, jax.random.key(0)))
    one_line_error(lambda: closed(data), r"params\['dense1'\]\['kernel'\]")


def test_images_of_another_size_name_the_argument_and_the_layout():
    key = jax.random.key(0)
    wrong = jnp.zeros((4, 6, 6, 3))  # a 5x5x1 model
    msg = one_line_error(
        lambda: fisher_trace(cnn_logits, CNN_PARAMS, wrong, key),
        r"fisher_trace: logits_fn\(params, x\[:1\]\) fails for x of shape \(4, 6, 6, 3\)",
    )
    assert "model's input size" in msg
    data = {"image": jnp.zeros((2, 4, 6, 6, 3)), "label": jnp.zeros((2, 4), jnp.int32)}
    for name, call in loss_metric_calls(cnn_loss, CNN_PARAMS, data).items():
        msg = one_line_error(call, rf"^{name}: loss_fn\(params, batch\) fails on batch 0")
        assert "['image']: float32[2, 4, 6, 6, 3]" in msg and "leading batch-index axis" in msg


@pytest.mark.parametrize("name", ["average_sharpness", "worst_sharpness", "hessian_top_eigenvalue"])
def test_batches_without_the_batch_axis_or_with_other_label_counts(name):
    x, y = classification_batches()
    # One batch passed as `batches`: each "batch" is then one example (x[4], y[]).
    call = loss_metric_calls(mlp_loss, mlp_params(), (x[0], y[0]))[name]
    one_line_error(call, rf"^{name}: .*\[0\]: float32\[6, 4\], \[1\]: int32\[6\].*leading batch")
    call = loss_metric_calls(mlp_loss, mlp_params(), (x, y[:, :5]))[name]  # 6 images, 5 labels
    one_line_error(call, rf"^{name}: .*int32\[2, 5\]")


def test_errors_of_the_metric_itself_are_not_relabelled():
    """A loss_fn that fits the inputs but returns a vector keeps its own message."""
    with pytest.raises(ValueError, match="scalar mean loss"):
        average_sharpness(
            lambda p, b: mlp_logits(p, b[0])[:, 0],
            mlp_params(),
            classification_batches(),
            jax.random.key(0),
        )


def test_user_errors_name_the_value_and_the_fix():
    params, batches, key = mlp_params(), classification_batches(), jax.random.key(0)
    x = batches[0][0]
    with pytest.raises(ValueError, match="structure of params"):
        fisher_trace(mlp_logits, params, x, key, trainable={"dense1": True, "head": True})
    with pytest.raises(ValueError, match="estimator"):
        fisher_trace(mlp_logits, params, x, key, estimator="empirical")
    with pytest.raises(ValueError, match="n_iters"):
        worst_sharpness(mlp_loss, params, batches, key, n_iters=0)
    with pytest.raises(ValueError, match="rho"):
        average_sharpness(mlp_loss, params, batches, key, rho=-0.01)
    with pytest.raises(ValueError, match="leading batch-index axis"):
        average_sharpness(mlp_loss, params, (x, jnp.zeros((3,), jnp.int32)), key)
    with pytest.raises(ValueError, match="threshold"):
        feature_rank(jnp.ones((4, 3)), threshold=1.5)
