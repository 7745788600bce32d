"""ResNet-20 for CIFAR, as open_lth's `cifar_resnet_20[_W]` (Frankle et al. 2020).

A 3x3 conv stem of `width` filters with BN and ReLU, three stages of three BasicBlocks with
width x (1, 2, 4) filters (stride 2 at the first block of stages 2 and 3, whose shortcut is a
1x1 conv + BN; identity elsewhere), global average pooling and one linear layer. `width` is
open_lth's W (16 in `cifar_resnet_20`); note that `--config.model.width` defaults to 64 (the
first paper's ResNet-18), so the Frankle et al. ResNet-20 needs `--config.model.width=16`.

Top-level parameter names are the blocks, bottom-up for gradual unfreezing: `stem`, `stage1`,
`stage2`, `stage3`, then `head`. At width 16 with 3 input channels and 10 classes the model has
272,474 parameters (BatchNorm weights and biases included; running statistics are not
parameters), the count of open_lth's `cifar_resnet_20` (0.27M): 464 in the stem, 14,016 in
stage1, 51,648 in stage2, 205,696 in stage3 and 650 in the head.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from earlyjax.models.resnet import Head, ResLayer, Stem

RESNET20_BLOCKS = ("stem", "stage1", "stage2", "stage3")
RESNET20_BLOCKS_PER_STAGE = 3  # (20 - 2) / 6


class ResNet20(nn.Module):
    """ResNet-20 (open_lth's CIFAR ResNet). No max-pool, so it takes any image size (8x8 too).

    Input: float32 [N, H, W, C] (any C). Output: logits [N, num_classes].
    `penultimate` gives the pooled features [N, 4*width].
    """

    num_classes: int = 10
    width: int = 16
    init_style: str = "pytorch"

    def setup(self):
        self.stem = Stem(self.width, self.init_style)
        n = RESNET20_BLOCKS_PER_STAGE
        self.stage1 = ResLayer(self.width, 1, self.init_style, num_blocks=n)
        self.stage2 = ResLayer(2 * self.width, 2, self.init_style, num_blocks=n)
        self.stage3 = ResLayer(4 * self.width, 2, self.init_style, num_blocks=n)
        self.head = Head(self.num_classes, self.init_style)

    def penultimate(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = self.stem(x, train)
        for stage in (self.stage1, self.stage2, self.stage3):
            x = stage(x, train)
        return jnp.mean(x, axis=(1, 2))

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.head(self.penultimate(x, train))
