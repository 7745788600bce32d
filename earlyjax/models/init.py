"""Parameter initialisers, including PyTorch's defaults for Conv/Linear.

PyTorch initialises `nn.Conv2d`/`nn.Linear` weights with kaiming-uniform (a = sqrt(5)),
which is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and biases with the same bound. Flax defaults to
lecun-normal kernels and zero biases. Early-period dynamics depend on such details, so the paper
configs use `init="pytorch"`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

Initializer = Callable[..., jax.Array]
INIT_STYLES = ("pytorch", "flax")


def _uniform(bound: float) -> Initializer:
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def kernel_and_bias_init(style: str, fan_in: int) -> tuple[Initializer, Initializer]:
    """Returns (kernel_init, bias_init) for a layer with `fan_in` inputs per output."""
    if style == "pytorch":
        bound = 1.0 / math.sqrt(fan_in)
        return _uniform(bound), _uniform(bound)
    if style == "flax":
        return nn.initializers.lecun_normal(), nn.initializers.zeros
    raise ValueError(f"unknown init style {style!r}; choose one of {INIT_STYLES}")


def conv(
    x: jax.Array,
    features: int,
    kernel: int,
    *,
    strides: int = 1,
    use_bias: bool,
    init: str,
    name: str,
) -> jax.Array:
    """A PyTorch-style 2-D convolution (padding kernel // 2) created inline in a compact module."""
    kernel_init, bias_init = kernel_and_bias_init(init, x.shape[-1] * kernel * kernel)
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(strides, strides),
        padding=((pad, pad), (pad, pad)),
        use_bias=use_bias,
        kernel_init=kernel_init,
        bias_init=bias_init,
        name=name,
    )(x)


def dense(x: jax.Array, features: int, *, init: str, name: str) -> jax.Array:
    """A Linear layer created inline in a compact module, with the chosen init."""
    kernel_init, bias_init = kernel_and_bias_init(init, x.shape[-1])
    return nn.Dense(features, kernel_init=kernel_init, bias_init=bias_init, name=name)(x)


BN_MOMENTUM = 0.9  # PyTorch's BatchNorm momentum 0.1, in Flax's convention


def batch_norm(x: jax.Array, *, train: bool, name: str) -> jax.Array:
    """BatchNorm matching PyTorch's defaults: momentum 0.1 (Flax 0.9), eps 1e-5."""
    return nn.BatchNorm(
        use_running_average=not train, momentum=BN_MOMENTUM, epsilon=1e-5, name=name
    )(x)
