"""Flax models of the paper, with their block partitions (App. A)."""

from __future__ import annotations

from flax import linen as nn

from earlyjax.models.resnet import RESNET18_BLOCKS, ResNet18
from earlyjax.models.vgg import VGG11, VGG11_BLOCKS

HEAD = "head"
MODELS = {"resnet18": (ResNet18, RESNET18_BLOCKS), "vgg11": (VGG11, VGG11_BLOCKS)}


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


__all__ = ["HEAD", "MODELS", "RESNET18_BLOCKS", "VGG11", "VGG11_BLOCKS", "ResNet18", "build_model"]
