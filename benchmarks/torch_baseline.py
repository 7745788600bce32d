"""The PyTorch reference point for tr(F): per-example gradient norms with `torch.func` (vmap of
grad) on a PyTorch CIFAR ResNet-18 of the same width, in eval mode, on the same points.

Imported by `benchmarks/metrics.py` only when torch is installed (it is not a dependency:
`pip install torch` to get this baseline). Written for this comparison from the standard
CIFAR ResNet-18 definition (3x3 stem, no max-pool, BasicBlocks 2-2-2-2, projection
shortcuts), not taken from another code base.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, width: int, num_classes: int = 10, channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        layers, cin = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            cout = width * 2**i
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.layers(self.stem(x)).mean(dim=(2, 3)))


def fisher_seconds(points: np.ndarray, width: int, chunk: int, repeats: int) -> tuple[float, str]:
    """(best seconds, description) of Σ_i ||∇ log p(ŷ_i|x_i)||² over `points` [N, H, W, C]
    with ŷ_i sampled from the model, per-example gradients by vmap(grad) in chunks."""
    torch.manual_seed(0)
    model = ResNet18(width, channels=points.shape[-1]).eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    x = torch.from_numpy(np.ascontiguousarray(points.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        yhat = torch.distributions.Categorical(logits=model(x)).sample()

    def log_p(p, xi, yi):
        logits = functional_call(model, (p, buffers), (xi[None],))
        return torch.log_softmax(logits, dim=-1)[0].gather(0, yi[None])[0]  # vmap-safe index

    per_example = vmap(grad(log_p), in_dims=(None, 0, 0))

    def run() -> float:
        total = 0.0
        for s in range(0, len(x), chunk):
            g = per_example(params, x[s : s + chunk], yhat[s : s + chunk])
            total += float(sum(v.pow(2).sum() for v in g.values()))
        return total

    run()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return best, f"torch {torch.__version__} ({torch.get_num_threads()} threads), chunk {chunk}"
