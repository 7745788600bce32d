"""PyTorch reference points on a PyTorch CIFAR ResNet-18 of the same width, in eval mode, on the
same points as `benchmarks/metrics.py`:

* tr(F): per-example gradient norms with `torch.func` (vmap of grad);
* S_avg and S_worst: Andriushchenko et al.'s own `eval_average_sharpness` and
  `eval_APGD_sharpness` (m_apgd_l2), imported at run time from a checkout of
  tml-epfl/sharpness-vs-generalization that the user names (`--sharpness-repo`); none of that
  code is part of this repository.

Imported only when torch is installed (it is not a dependency: `pip install torch` to get these
baselines). The ResNet-18 here was written for this comparison from the standard CIFAR
definition (3x3 stem, no max-pool, BasicBlocks 2-2-2-2, projection shortcuts), not taken from
another code base.
"""

from __future__ import annotations

import contextlib
import io
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
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


def sharpness_paper_seconds(
    repo: str,
    images: np.ndarray,
    labels: np.ndarray,
    width: int,
    *,
    n_samples: int,
    apgd_iters: int,
    rho: float,
    repeats: int,
) -> dict[str, float | str]:
    """Best seconds of Andriushchenko et al.'s S_avg and S_worst on `images` [B, n, H, W, C].

    Their `eval_average_sharpness` (`avg_l2`, adaptive, `n_samples` Gaussian perturbations per
    batch) and `eval_APGD_sharpness` (`m_apgd_l2`, adaptive, zero start, one restart, their
    scripts' settings), imported from `repo` (a checkout of
    tml-epfl/sharpness-vs-generalization). Their code moves every tensor to CUDA; on a machine
    without a GPU `Tensor.cuda` is made the identity for the call, so it runs on the CPU
    unchanged. Returns {"avg": s, "worst": s, "avg_value", "worst_value", "what"}.
    """
    sys.path.insert(0, repo)
    try:
        import sharpness as their  # noqa: PLC0415  (their module, found through `repo`)
    finally:
        sys.path.remove(repo)
    torch.manual_seed(0)
    model = ResNet18(width, channels=images.shape[-1]).eval()
    if torch.cuda.is_available():  # their code moves the inputs to CUDA itself
        model = model.cuda()
    batches = [
        (torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), None,
         torch.from_numpy(np.asarray(y, np.int64)), None, None)
        for x, y in zip(images, labels, strict=True)
    ]  # fmt: skip

    def loss_f(logits, y):  # their eval_sharpness.py's loss
        return F.cross_entropy(logits, y, reduction="mean")

    def avg():
        return their.eval_average_sharpness(
            model, batches, loss_f, n_iters=n_samples, rho=rho, adaptive=True,
            return_output=False, norm="l2",
        )[0]  # fmt: skip

    def worst():
        return their.eval_APGD_sharpness(
            model, batches, loss_f, None, None, rho=rho, n_iters=apgd_iters,
            rand_init=False, adaptive=True, version="default", norm="l2",
        )[0]  # fmt: skip

    cuda = torch.Tensor.cuda
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *args, **kwargs: self
    out: dict[str, float | str] = {}
    try:
        for name, fn in (("avg", avg), ("worst", worst)):
            best = float("inf")
            for _ in range(repeats):
                with contextlib.redirect_stdout(io.StringIO()):  # their progress prints
                    t = time.perf_counter()
                    value = float(fn())
                    best = min(best, time.perf_counter() - t)
            out[name], out[f"{name}_value"] = best, value
    finally:
        torch.Tensor.cuda = cuda
    out["what"] = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    return out
