"""Flax models of the paper, with their block partitions (App. A)."""

from __future__ import annotations

from flax import linen as nn

from earlyjax.models.lenet import LENET_BLOCKS, LeNet300100
from earlyjax.models.resnet import RESNET18_BLOCKS, ResNet18
from earlyjax.models.resnet20 import RESNET20_BLOCKS, ResNet20
from earlyjax.models.resnet50 import RESNET50_BLOCKS, ResNet50
from earlyjax.models.vgg import VGG11, VGG11_BLOCKS

HEAD = "head"
# name -> (module class, block names bottom-up). resnet20 and lenet300_100 are open_lth's
# `cifar_resnet_20` (width 16) and `mnist_lenet_300_100` (width 64) of Frankle et al. 2020;
# resnet50 is torchvision's (ImageNet stem, width 64), fine-tuned from a checkpoint in
# Sadrtdinov et al. 2023 (earlyjax.models.resnet_checkpoint).
MODELS = {
    "resnet18": (ResNet18, RESNET18_BLOCKS),
    "vgg11": (VGG11, VGG11_BLOCKS),
    "resnet20": (ResNet20, RESNET20_BLOCKS),
    "lenet300_100": (LeNet300100, LENET_BLOCKS),
    "resnet50": (ResNet50, RESNET50_BLOCKS),
}


def build_model(
    name: str, *, num_classes: int, width: int = 64, init: str = "pytorch"
) -> tuple[nn.Module, tuple[str, ...]]:
    """Returns (module, block names bottom-up). The head's parameters live under `HEAD`."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    if width < 1:
        raise ValueError(f"model width must be a positive int, got {width}")
    module_cls, blocks = MODELS[name]
    return module_cls(num_classes=num_classes, width=width, init_style=init), blocks


__all__ = [
    "HEAD",
    "LENET_BLOCKS",
    "MODELS",
    "RESNET18_BLOCKS",
    "RESNET20_BLOCKS",
    "RESNET50_BLOCKS",
    "VGG11",
    "VGG11_BLOCKS",
    "LeNet300100",
    "ResNet18",
    "ResNet20",
    "ResNet50",
    "build_model",
]
