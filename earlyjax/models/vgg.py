"""VGG-11 with BatchNorm for 32x32 inputs, partitioned as in the paper (App. A).

Eight conv blocks `block0`..`block7` (3x3 conv with bias, BN, ReLU, and a 2x2 max-pool after
blocks 0, 1, 3, 5, 7 as in VGG's "A" configuration), then `head`: three linear layers with ReLU
between them. The paper does not give the head's hidden width; we use 8*width (512 at width 64,
the last conv's channel count) and no dropout. At width 64 and 10 classes the model has
9,756,426 parameters (9,225,984 in the conv blocks, 530,442 in the head).
"""

from __future__ import annotations

import jax
from flax import linen as nn

from earlyjax.models.init import batch_norm, conv, dense

# (channel multiple of `width`, max-pool after the block)
VGG11_LAYOUT = (
    (1, True),
    (2, True),
    (4, False),
    (4, True),
    (8, False),
    (8, True),
    (8, False),
    (8, True),
)
VGG11_BLOCKS = tuple(f"block{i}" for i in range(len(VGG11_LAYOUT)))
MIN_VGG_INPUT = 32  # five 2x2 max-pools need at least 32 pixels per side


class ConvBlock(nn.Module):
    features: int
    pool: bool
    init_style: str

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = conv(x, self.features, 3, use_bias=True, init=self.init_style, name="conv")
        x = nn.relu(batch_norm(x, train=train, name="bn", init=self.init_style))
        if self.pool:
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return x


class VGGHead(nn.Module):
    hidden: int
    num_classes: int
    init_style: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(dense(x, self.hidden, init=self.init_style, name="fc1"))
        x = nn.relu(dense(x, self.hidden, init=self.init_style, name="fc2"))
        return dense(x, self.num_classes, init=self.init_style, name="fc3")


class VGG11(nn.Module):
    """VGG-11-BN. Input float32 [N, H, W, C] with H, W >= 32; output logits [N, num_classes]."""

    num_classes: int = 10
    width: int = 64
    init_style: str = "pytorch"

    def setup(self):
        self.blocks = [
            ConvBlock(mult * self.width, pool, self.init_style, name=name)
            for (mult, pool), name in zip(VGG11_LAYOUT, VGG11_BLOCKS, strict=True)
        ]
        self.head = VGGHead(8 * self.width, self.num_classes, self.init_style)

    def penultimate(self, x: jax.Array, train: bool = False) -> jax.Array:
        if min(x.shape[1:3]) < MIN_VGG_INPUT:
            raise ValueError(
                f"VGG-11 needs inputs of at least {MIN_VGG_INPUT}x{MIN_VGG_INPUT} pixels, got "
                f"{x.shape[1]}x{x.shape[2]}; use ResNet-18 for 28x28 data or resize the images"
            )
        for block in self.blocks:
            x = block(x, train)
        return x.reshape(x.shape[0], -1)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.head(self.penultimate(x, train))
