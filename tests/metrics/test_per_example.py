"""tr(F) from per-layer identities (earlyjax.metrics.per_example) against vmap of per-example
gradients, and the fallback for models whose layers it cannot see."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from earlyjax.metrics import fisher_trace
from earlyjax.metrics.per_example import find_layers


class ConvBNNet(nn.Module):
    """Every case the identities handle: strided SAME conv with bias, explicit padding, kernel
    dilation, a 1x1 conv, eval-mode BatchNorm, a Dense on [N, P, F] and a plain Dense."""

    @nn.compact
    def __call__(self, x):
        y = nn.Conv(5, (3, 3), strides=2, padding="SAME", name="c1")(x)
        y = nn.relu(nn.BatchNorm(use_running_average=True, name="bn")(y))
        y = nn.Conv(4, (3, 3), padding=((2, 2), (2, 2)), kernel_dilation=2, use_bias=False)(y)
        y = y + nn.Conv(4, (1, 1), use_bias=False, name="shortcut")(y)
        y = nn.Dense(3, name="per_position")(y.reshape(y.shape[0], -1, 4)).mean(axis=1)
        return nn.Dense(6, name="head")(nn.relu(y))


def conv_bn_net():
    model = ConvBNNet()
    x = jax.random.normal(jax.random.key(0), (10, 8, 8, 2))
    variables = model.init(jax.random.key(1), x[:1])
    stats = jax.tree.map(  # not (0, 1): the normalised input must enter the BN scale's norm
        lambda s: s + jax.random.uniform(jax.random.key(2), s.shape, minval=0.1, maxval=0.5),
        variables["batch_stats"],
    )

    def logits_fn(p, xb):
        return model.apply({"params": p, "batch_stats": stats}, xb)

    return logits_fn, variables["params"], x


def test_layers_equal_vmap_for_every_layer_kind_mask_and_chunking():
    logits_fn, params, x = conv_bn_net()
    key = jax.random.key(3)
    layers = find_layers(logits_fn, params, x, [True] * len(jax.tree.leaves(params)))
    assert [type(c.module).__name__ for c in layers] == [
        "Conv", "BatchNorm", "Conv", "Conv", "Dense", "Dense",
    ]  # fmt: skip
    mask = jax.tree_util.tree_map_with_path(lambda path, _: path[0].key != "c1", params)
    for kw in ({}, {"chunk_size": 4}, {"trainable": mask}):  # 10 = 4 + 4 + 2 padded
        vmap = fisher_trace(logits_fn, params, x, key, per_example="vmap", **kw)
        ours = fisher_trace(logits_fn, params, x, key, per_example="layers", **kw)
        np.testing.assert_allclose(float(ours), float(vmap), rtol=2e-5, err_msg=str(kw))
    # A traced mask (as in the training run's recorder) gives the same value.
    traced = jax.jit(lambda m: fisher_trace(logits_fn, params, x, key, trainable=m))(mask)
    vmap = fisher_trace(logits_fn, params, x, key, per_example="vmap", trainable=mask)
    np.testing.assert_allclose(float(traced), float(vmap), rtol=2e-5)


class SharedDense(nn.Module):
    @nn.compact
    def __call__(self, x):
        dense = nn.Dense(4, name="shared")
        return dense(nn.relu(dense(x)))


class OwnParam(nn.Module):
    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        return nn.Dense(3)(x * scale)


class TrainModeBN(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(nn.BatchNorm(use_running_average=False)(x))


@pytest.mark.parametrize(
    "model, reason",
    [
        (SharedDense(), "used by more than one layer call"),
        (OwnParam(), "OwnParam is not supported"),
        (TrainModeBN(), "batch statistics mixes the examples"),
    ],
)
def test_unseen_layers_fall_back_to_vmap_and_layers_names_why(model, reason):
    x = jax.random.normal(jax.random.key(0), (6, 4))
    variables = model.init(jax.random.key(1), x)
    params, rest = variables["params"], {k: v for k, v in variables.items() if k != "params"}

    def logits_fn(p, xb):
        if rest:  # train-mode BatchNorm updates its statistics: dropped here
            return model.apply({"params": p, **rest}, xb, mutable=list(rest))[0]
        return model.apply({"params": p}, xb)

    key = jax.random.key(2)
    auto = fisher_trace(logits_fn, params, x, key)
    vmap = fisher_trace(logits_fn, params, x, key, per_example="vmap")
    assert float(auto) == float(vmap)
    with pytest.raises(ValueError, match=reason):
        fisher_trace(logits_fn, params, x, key, per_example="layers")


def test_a_plain_function_of_params_falls_back():
    params = {"w": jnp.ones((4, 3))}
    x = jnp.ones((5, 4))
    reason = find_layers(lambda p, xb: xb @ p["w"], params, x, [True])
    assert reason == "active parameter leaves [0] belong to no supported layer"
    with pytest.raises(ValueError, match="per_example must be one of"):
        fisher_trace(lambda p, xb: xb @ p["w"], params, x, jax.random.key(0), per_example="x")


@pytest.mark.slow  # ~40 s: ResNet-18's vmapped per-example gradients compile slowly
def test_resnet18_layers_equal_vmap():
    from earlyjax.models import build_model

    model, _ = build_model("resnet18", num_classes=10, width=4)
    x = jax.random.uniform(jax.random.key(0), (6, 28, 28, 1))
    variables = model.init(jax.random.key(1), x[:1], train=False)
    stats = jax.tree.map(lambda s: s + 0.2, variables["batch_stats"])

    def logits_fn(p, xb):
        return model.apply({"params": p, "batch_stats": stats}, xb, train=False)

    params, key = variables["params"], jax.random.key(2)
    vmap = fisher_trace(logits_fn, params, x, key, per_example="vmap")
    ours = fisher_trace(logits_fn, params, x, key, per_example="layers")
    np.testing.assert_allclose(float(ours), float(vmap), rtol=2e-5)
