"""Sadrtdinov et al. 2023's CIFAR-100 experiments as the paper ran them: a ResNet-50 from BYOL
or supervised ImageNet checkpoints (`experiments/configs/cifar100_resnet50_{byol,
supervised}.py`), ensembles of 5, SSE and StarSSE on the paper's grid of cycle learning rates
({0.25, 0.5, 1, 2, 4} × the fine-tuning lr) and lengths ({0.5, 1, 2, 4} × 25 epochs), local
and global DE, three seeds; paths at 21 points.

    BYOL_CHECKPOINTS=b1.pt,...,b5.pt SUPERVISED_CHECKPOINTS=s1.pt,...,s5.pt \\
        python -m experiments.paper --grid=basin --out=runs/basin
    python -m experiments.analysis all runs/basin

The checkpoints (torchvision-named ResNet-50 state dicts, .safetensors or .pt; five per kind
for the global DE: the paper pre-trained its own) cannot be downloaded here, and each study
needs a GPU or TPU: without either, the runner refuses it with one line naming what is
missing (`--dry_run` still prints its runs and device hours).
"""

import os

from experiments.grids.basin_digits import BASIN_OUTPUTS
from experiments.paper import Study

MEMBERS = 5
KINDS = (("byol", "BYOL_CHECKPOINTS"), ("supervised", "SUPERVISED_CHECKPOINTS"))


def checkpoints(variable: str) -> tuple[str, ...]:
    """The checkpoint files in $variable (comma-separated), or placeholders naming it."""
    given = [p for p in os.environ.get(variable, "").split(",") if p]
    return tuple(given) or tuple(f"${variable}[{i}]" for i in range(MEMBERS))


def get_grid() -> list[Study]:
    return [
        Study(
            f"cifar100_{kind}",
            f"cifar100_resnet50_{kind}.py",
            BASIN_OUTPUTS,
            kind="basin",
            seeds=(0, 1, 2),
            members=MEMBERS,
            methods=("sse", "starsse"),
            cycle_lrs=(0.25, 0.5, 1.0, 2.0, 4.0),
            cycle_epochs=(0.5, 1.0, 2.0, 4.0),
            global_de=True,
            pretrained=checkpoints(variable),
            needs_accelerator=True,
        )
        for kind, variable in (
            ("byol", "BYOL_CHECKPOINTS"),
            ("supervised", "SUPERVISED_CHECKPOINTS"),
        )
    ]
