"""ResNet-18 with the CIFAR stem (3x3 conv, no max-pool), as in the paper's PyTorch models.

Top-level parameter names are the paper's blocks (App. A): `stem` (conv + BN) is block 0,
`layer1`..`layer4` are blocks 1-4, and `head` is the classifier. At width 64 and 10 classes the
model has 11,173,962 parameters, the count of the usual PyTorch CIFAR ResNet-18.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from earlyjax.models.init import batch_norm, conv, dense

RESNET18_BLOCKS = ("stem", "layer1", "layer2", "layer3", "layer4")


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN and a projection shortcut when the shape changes."""

    features: int
    strides: int
    init_style: str

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = conv(
            x,
            self.features,
            3,
            strides=self.strides,
            use_bias=False,
            init=self.init_style,
            name="conv1",
        )
        y = nn.relu(batch_norm(y, train=train, name="bn1", init=self.init_style))
        y = conv(y, self.features, 3, use_bias=False, init=self.init_style, name="conv2")
        y = batch_norm(y, train=train, name="bn2", init=self.init_style)
        if self.strides != 1 or x.shape[-1] != self.features:
            x = conv(
                x,
                self.features,
                1,
                strides=self.strides,
                use_bias=False,
                init=self.init_style,
                name="shortcut_conv",
            )
            x = batch_norm(x, train=train, name="shortcut_bn", init=self.init_style)
        return nn.relu(y + x)


class Stem(nn.Module):
    """Block 0: the CIFAR stem, a 3x3 conv and BN (no max-pool)."""

    features: int
    init_style: str

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = conv(x, self.features, 3, use_bias=False, init=self.init_style, name="conv")
        return nn.relu(batch_norm(x, train=train, name="bn", init=self.init_style))


class ResLayer(nn.Module):
    """One of `layer1`..`layer4`: `num_blocks` BasicBlocks (two in ResNet-18, three in ResNet-20's
    stages), the first one strided."""

    features: int
    strides: int
    init_style: str
    num_blocks: int = 2

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for i in range(self.num_blocks):
            strides = self.strides if i == 0 else 1
            x = BasicBlock(self.features, strides, self.init_style, name=f"block{i}")(x, train)
        return x


class Head(nn.Module):
    """Global average pooling and one linear layer."""

    num_classes: int
    init_style: str

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        return dense(features, self.num_classes, init=self.init_style, name="fc")


class ResNet18(nn.Module):
    """ResNet-18 for small images (CIFAR stem).

    Input: float32 [N, H, W, C] (any C; 1 for MNIST). Output: logits [N, num_classes].
    `width` is the stem's channel count (64 in the paper); the stages use width x (1, 2, 4, 8).
    `features(...)` via `method=ResNet18.penultimate` gives the pooled features [N, 8*width].
    """

    num_classes: int = 10
    width: int = 64
    init_style: str = "pytorch"

    def setup(self):
        self.stem = Stem(self.width, self.init_style)
        self.layer1 = ResLayer(self.width, 1, self.init_style)
        self.layer2 = ResLayer(2 * self.width, 2, self.init_style)
        self.layer3 = ResLayer(4 * self.width, 2, self.init_style)
        self.layer4 = ResLayer(8 * self.width, 2, self.init_style)
        self.head = Head(self.num_classes, self.init_style)

    def penultimate(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = self.stem(x, train)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x, train)
        return jnp.mean(x, axis=(1, 2))

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.head(self.penultimate(x, train))
