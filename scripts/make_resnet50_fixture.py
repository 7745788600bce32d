"""Writes the ResNet-50 parity fixture: a narrow random torchvision ResNet-50 and its outputs.

    pip install torch torchvision safetensors numpy   # this script only; the tests need no torch
    python scripts/make_resnet50_fixture.py           # -> tests/fixtures/tiny_resnet50/

(Run with torch 2.14.1, torchvision 0.29.1, safetensors 0.8.0.) torchvision's `resnet50()`
hard-codes 64 stem channels, so the fixture is a `torchvision.models.resnet.ResNet` whose
stem conv/BN, `layer1`..`layer4` and `fc` are replaced by narrow ones built from torchvision's
public `Bottleneck` (stages of 3, 4, 6, 3; inner planes 4 x (1, 2, 4, 8), the projection
shortcut as its `downsample = Sequential(conv 1x1, BatchNorm2d)`): the state-dict names are
those of `resnet50()`, the forward pass is torchvision's own, and the shapes are those of
`earlyjax.models.resnet50.ResNet50(width=4, num_classes=6)` (6 classes: not the 10 of the
test data, so a replaced head shows). Conv/Linear weights keep PyTorch's default init;
BatchNorm weights are 1 + N(0, 0.2²), biases N(0, 0.2²), and the running statistics those of
64 random images (cumulative average, train mode), each then perturbed (means + N(0, 0.05²),
variances x U(0.7, 1.3)), so eval-mode BatchNorm matters and the logits are far from
constant. `model.safetensors` holds the eval-mode state dict (`num_batches_tracked` included,
as torchvision saves it); `reference.npz` a batch of 2 images 45x45x3 (NHWC, float32,
odd-sized so that the stride-2 paddings show), the eval-mode logits and the penultimate
(pooled) features: `tests/models/test_resnet50.py` checks that
`earlyjax.models.resnet_checkpoint.load_resnet50` reproduces them.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from torchvision.models import resnet50
from torchvision.models.resnet import Bottleneck, ResNet

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "tests", "fixtures", "tiny_resnet50")
WIDTH, NUM_CLASSES, STAGES = 4, 6, (3, 4, 6, 3)


def narrow_resnet50(width: int, num_classes: int) -> ResNet:
    """torchvision's ResNet-50 with `width` stem channels (64 = `resnet50()`)."""
    model = ResNet(Bottleneck, list(STAGES), num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(width)
    inplanes = width
    for i, blocks in enumerate(STAGES):
        planes, stride = width * 2**i, 1 if i == 0 else 2
        layer = []
        for j in range(blocks):
            out = planes * Bottleneck.expansion
            downsample = None
            if j == 0 and (stride != 1 or inplanes != out):
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, out, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(out),
                )
            layer.append(Bottleneck(inplanes, planes, stride if j == 0 else 1, downsample))
            inplanes = out
        setattr(model, f"layer{i + 1}", nn.Sequential(*layer))
    model.fc = nn.Linear(inplanes, num_classes)
    assert list(model.state_dict()) == list(resnet50().state_dict()), "not resnet50's names"
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = narrow_resnet50(WIDTH, NUM_CLASSES)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.copy_(1 + 0.2 * torch.randn_like(bn.weight))
            bn.bias.copy_(0.2 * torch.randn_like(bn.bias))
            bn.reset_running_stats()
            bn.momentum = None  # a cumulative average over the batches
        model.train()
        for _ in range(4):
            model(torch.randn(16, 3, 45, 45))
        for bn in bns:
            bn.running_mean.add_(0.05 * torch.randn_like(bn.running_mean))
            bn.running_var.mul_(torch.empty_like(bn.running_var).uniform_(0.7, 1.3))
            bn.momentum = 0.1
    model.eval()
    features = []
    model.fc.register_forward_hook(lambda module, inputs, output: features.append(inputs[0]))
    images = torch.randn(2, 3, 45, 45)
    with torch.no_grad():
        logits = model(images)
    os.makedirs(args.out, exist_ok=True)
    state = {name: t.contiguous() for name, t in model.state_dict().items()}
    save_file(state, os.path.join(args.out, "model.safetensors"))
    np.savez(
        os.path.join(args.out, "reference.npz"),
        images=images.permute(0, 2, 3, 1).numpy(),
        logits=logits.numpy(),
        features=features[0].numpy(),
    )
    print(f"wrote {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
