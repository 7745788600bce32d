"""Parameter initialisers, including PyTorch's defaults for Conv/Linear.

PyTorch initialises `nn.Conv2d`/`nn.Linear` weights with kaiming-uniform (a = sqrt(5)),
which is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and biases with the same bound. Flax defaults to
lecun-normal kernels and zero biases. Early-period dynamics depend on such details, so the paper
configs use `init="pytorch"`.

open_lth (Frankle et al. 2020, facebookresearch/open_lth) builds its models with PyTorch's
defaults, then re-initialises every Conv2d/Linear weight with `kaiming_normal_` (fan_in, gain
sqrt(2): N(0, 2/fan_in), not truncated), leaving the biases at PyTorch's U(+-1/sqrt(fan_in));
its default `batchnorm_init="uniform"` draws BatchNorm weights from U(0, 1), biases 0.
`init="kaiming_normal"` is those kernels and biases with BatchNorm weights 1, biases 0;
`init="open_lth"` adds the U(0, 1) BatchNorm weights, open_lth's default for all its models.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

Initializer = Callable[..., jax.Array]
INIT_STYLES = ("pytorch", "flax", "kaiming_normal", "open_lth")
KAIMING_STYLES = ("kaiming_normal", "open_lth")


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
    if style in KAIMING_STYLES:
        bound = 1.0 / math.sqrt(fan_in)
        return nn.initializers.variance_scaling(2.0, "fan_in", "normal"), _uniform(bound)
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


def batch_norm(x: jax.Array, *, train: bool, name: str, init: str = "pytorch") -> jax.Array:
    """BatchNorm matching PyTorch's defaults: momentum 0.1 (Flax 0.9), eps 1e-5; weights 1,
    biases 0, except with `init="open_lth"`: weights U(0, 1) (open_lth's batchnorm_init)."""
    scale_init = _unit_uniform if init == "open_lth" else nn.initializers.ones
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=1e-5,
        scale_init=scale_init,
        name=name,
    )(x)


def _unit_uniform(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, 0.0, 1.0)
