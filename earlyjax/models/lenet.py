"""LeNet-300-100, as open_lth's `mnist_lenet_300_100` (Frankle et al. 2020).

Flatten the image, then dense 300 -> ReLU -> dense 100 -> ReLU -> dense `num_classes`. Top-level
parameter names are the blocks, bottom-up: `fc1`, `fc2`, then `head`. On 28x28x1 MNIST with 10
classes the model has 266,610 parameters (235,500 + 30,100 + 1,010), open_lth's count; there is
no BatchNorm, so the model has no state. Any image shape is flattened (8x8 digits: 64 inputs).

`width` scales the hidden layers relative to `LENET_REFERENCE_WIDTH` = 64, the default of
`--config.model.width`: width 64 is exactly 300-100, width w is round(300 w / 64) -
round(100 w / 64) (at least 1 unit each), so a width sweep over the image models changes them all.
"""

from __future__ import annotations

import jax
from flax import linen as nn

from earlyjax.models.init import dense
from earlyjax.models.resnet import Head

LENET_BLOCKS = ("fc1", "fc2")
LENET_HIDDEN = (300, 100)
LENET_REFERENCE_WIDTH = 64


def lenet_hidden_sizes(width: int) -> tuple[int, ...]:
    """The hidden layers' units at `width` ((300, 100) at `LENET_REFERENCE_WIDTH`)."""
    return tuple(max(1, round(h * width / LENET_REFERENCE_WIDTH)) for h in LENET_HIDDEN)


class Hidden(nn.Module):
    """One hidden block: a linear layer (`dense`) and ReLU."""

    features: int
    init_style: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.relu(dense(x, self.features, init=self.init_style, name="dense"))


class LeNet300100(nn.Module):
    """LeNet-300-100. Input float32 [N, ...] (flattened); output logits [N, num_classes].

    `penultimate` gives the second hidden layer's ReLU output [N, 100] (at width 64).
    `train` is accepted for the common model interface and does nothing (no BatchNorm, no dropout).
    """

    num_classes: int = 10
    width: int = LENET_REFERENCE_WIDTH
    init_style: str = "pytorch"

    def setup(self):
        h1, h2 = lenet_hidden_sizes(self.width)
        self.fc1 = Hidden(h1, self.init_style)
        self.fc2 = Hidden(h2, self.init_style)
        self.head = Head(self.num_classes, self.init_style)

    def penultimate(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        return self.fc2(self.fc1(x.reshape(x.shape[0], -1)))

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.head(self.penultimate(x, train))
