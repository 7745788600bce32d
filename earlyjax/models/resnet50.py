"""ResNet-50 as torchvision builds it (v1.5), for fine-tuning from ImageNet checkpoints.

torchvision's `resnet50()`: the ImageNet stem (7x7 stride-2 conv padded 3, BN, ReLU, 3x3
stride-2 max-pool padded 1), stages of (3, 4, 6, 3) Bottlenecks (1x1, 3x3, 1x1 convs with BN,
expansion 4; the stride on the 3x3 conv, "v1.5"), a projection shortcut (1x1 conv + BN,
torchvision's `downsample`) where the stride or the channel count changes, global average
pooling and a linear classifier. Top-level parameter names are the blocks: `stem` (block 0),
`layer1`..`layer4` (blocks 1-4) and `head`. At width 64 and 1000 classes the model has
25,557,032 parameters, as torchvision's. `earlyjax.models.resnet_checkpoint` loads
torchvision / timm weights onto it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from earlyjax.models.init import batch_norm, conv
from earlyjax.models.resnet import Head

RESNET50_BLOCKS = ("stem", "layer1", "layer2", "layer3", "layer4")
RESNET50_STAGES = (3, 4, 6, 3)  # Bottlenecks per stage
EXPANSION = 4  # a Bottleneck's output channels / its inner channels


class Bottleneck(nn.Module):
    """1x1 (planes), 3x3 (planes, strided), 1x1 (EXPANSION x planes) convs with BN, and a
    projection shortcut (`shortcut_conv`, `shortcut_bn`) when the shape changes."""

    planes: int
    strides: int
    init_style: str

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out = EXPANSION * self.planes
        y = conv(x, self.planes, 1, use_bias=False, init=self.init_style, name="conv1")
        y = nn.relu(batch_norm(y, train=train, name="bn1", init=self.init_style))
        y = conv(
            y,
            self.planes,
            3,
            strides=self.strides,
            use_bias=False,
            init=self.init_style,
            name="conv2",
        )
        y = nn.relu(batch_norm(y, train=train, name="bn2", init=self.init_style))
        y = conv(y, out, 1, use_bias=False, init=self.init_style, name="conv3")
        y = batch_norm(y, train=train, name="bn3", init=self.init_style)
        if self.strides != 1 or x.shape[-1] != out:
            x = conv(
                x,
                out,
                1,
                strides=self.strides,
                use_bias=False,
                init=self.init_style,
                name="shortcut_conv",
            )
            x = batch_norm(x, train=train, name="shortcut_bn", init=self.init_style)
        return nn.relu(y + x)


class ImageNetStem(nn.Module):
    """Block 0: 7x7 stride-2 conv (padding 3), BN, ReLU, 3x3 stride-2 max-pool (padding 1,
    padded with -inf as PyTorch's)."""

    features: int
    init_style: str

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = conv(x, self.features, 7, strides=2, use_bias=False, init=self.init_style, name="conv")
        x = nn.relu(batch_norm(x, train=train, name="bn", init=self.init_style))
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class BottleneckLayer(nn.Module):
    """One of `layer1`..`layer4`: `num_blocks` Bottlenecks (`block0`, ...), the first strided."""

    planes: int
    strides: int
    num_blocks: int
    init_style: str

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for i in range(self.num_blocks):
            strides = self.strides if i == 0 else 1
            x = Bottleneck(self.planes, strides, self.init_style, name=f"block{i}")(x, train)
        return x


class ResNet50(nn.Module):
    """torchvision's ResNet-50 (ImageNet stem).

    Input: float32 [N, H, W, C] (C = 3 for ImageNet checkpoints). Output: logits
    [N, num_classes]. `width` is the stem's channel count (64 in torchvision); the stages'
    Bottlenecks have width x (1, 2, 4, 8) inner and 4 x that many output channels.
    `method=ResNet50.penultimate` gives the pooled features [N, 32*width].
    """

    num_classes: int = 1000
    width: int = 64
    init_style: str = "pytorch"

    def setup(self):
        self.stem = ImageNetStem(self.width, self.init_style)
        w, n, style = self.width, RESNET50_STAGES, self.init_style
        self.layer1 = BottleneckLayer(w, 1, n[0], style)
        self.layer2 = BottleneckLayer(2 * w, 2, n[1], style)
        self.layer3 = BottleneckLayer(4 * w, 2, n[2], style)
        self.layer4 = BottleneckLayer(8 * w, 2, n[3], style)
        self.head = Head(self.num_classes, self.init_style)

    def penultimate(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = self.stem(x, train)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x, train)
        return jnp.mean(x, axis=(1, 2))

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.head(self.penultimate(x, train))
