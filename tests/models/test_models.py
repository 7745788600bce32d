"""Models: parameter counts, block names, PyTorch-style initialisation, input checks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from earlyjax.models import HEAD, build_model
from earlyjax.models.init import conv, dense


def abstract_params(name, shape, num_classes=10, width=64):
    model, blocks = build_model(name, num_classes=num_classes, width=width)
    variables = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape)), train=False)
    )
    return variables, blocks


def count(tree):
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def test_resnet18_matches_pytorch_cifar_count_and_blocks():
    variables, blocks = abstract_params("resnet18", (32, 32, 3))
    assert count(variables["params"]) == 11_173_962  # the usual PyTorch CIFAR ResNet-18
    assert blocks == ("stem", "layer1", "layer2", "layer3", "layer4")
    assert set(variables["params"]) == {*blocks, HEAD}
    assert set(variables["batch_stats"]) == set(blocks)
    assert variables["params"]["stem"]["conv"]["kernel"].shape == (3, 3, 3, 64)  # CIFAR stem


def test_resnet18_on_mnist_has_one_input_channel_and_100_classes_head():
    variables, _ = abstract_params("resnet18", (28, 28, 1), num_classes=100, width=16)
    assert variables["params"]["stem"]["conv"]["kernel"].shape == (3, 3, 1, 16)
    assert variables["params"][HEAD]["fc"]["kernel"].shape[-1] == 100


def test_vgg11_count_and_blocks():
    variables, blocks = abstract_params("vgg11", (32, 32, 3))
    params = variables["params"]
    assert blocks == tuple(f"block{i}" for i in range(8))
    assert set(params) == {*blocks, HEAD}
    assert count(params) == 9_756_426  # documented in README.md
    assert count(params[HEAD]) == 530_442  # 512-512-512-10: three linear layers
    assert len(params[HEAD]) == 3


def test_vgg11_rejects_inputs_it_cannot_take():
    with pytest.raises(ValueError, match="at least 32x32"):
        abstract_params("vgg11", (28, 28, 1))


@pytest.mark.parametrize("bad", [{"name": "resnet152"}, {"width": 0}])
def test_build_model_rejects_bad_values(bad):
    kwargs = {"name": "resnet18", "num_classes": 10, **bad}
    with pytest.raises(ValueError, match="resnet152|width"):
        build_model(kwargs.pop("name"), **kwargs)


class _Layers(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = conv(x, 64, 3, use_bias=True, init="pytorch", name="conv")
        return dense(y.reshape(y.shape[0], -1), 10, init="pytorch", name="dense")


def test_pytorch_init_is_uniform_within_one_over_sqrt_fan_in():
    params = _Layers().init(jax.random.key(0), jnp.zeros((1, 4, 4, 32)))["params"]
    for layer, fan_in in [("conv", 32 * 9), ("dense", 4 * 4 * 64)]:
        for leaf in params[layer].values():
            w = np.asarray(leaf)
            bound = 1 / math.sqrt(fan_in)
            assert np.abs(w).max() <= bound
            assert np.abs(w).max() > 0.9 * bound  # uniform, filling the interval
            assert abs(w.std() - bound / math.sqrt(3)) < 0.1 * bound
