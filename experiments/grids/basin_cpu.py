"""Sadrtdinov et al. 2023's experiments at the scale of a 2-core CPU (docs/REPRODUCTION.md):
a ResNet-20 (width 4) pre-trained on one half of CIFAR-10's classes and fine-tuned on the
other half (`experiments/configs/cifar10_basin_cpu.py`), two seeds, ensembles of 3: local and
global DE, SSE and StarSSE at cycle learning rates 0.25, 1 and 4 × the fine-tuning lr and
cycle lengths 0.5 and 1 × its 196 steps; paths at 3 points (the barrier at the midpoint),
BatchNorm recomputed on 2,000 training images.

    python -m experiments.paper --grid=basin_cpu --out=runs/basin_cpu
    python -m experiments.analysis all runs/basin_cpu

`--config.data.data_dir` is read from CIFAR10_DIR (the folder holding cifar-10-batches-py,
built by ../shared/datasets/cifar10/build_cifar10.py; default /work/data/cifar10).
"""

import os

from experiments.grids.basin_digits import BASIN_OUTPUTS
from experiments.paper import Study


def get_grid() -> list[Study]:
    cifar10 = os.path.abspath(os.environ.get("CIFAR10_DIR", "/work/data/cifar10"))
    return [
        Study(
            "cifar10_halves",
            "cifar10_basin_cpu.py",
            BASIN_OUTPUTS,
            kind="basin",
            seeds=(0, 1),
            members=3,
            methods=("sse", "starsse"),
            cycle_lrs=(0.25, 1.0, 4.0),
            cycle_epochs=(0.5, 1.0),
            global_de=True,
            pretrain_config="cifar10_basin_pretrain_cpu.py",
            path_points=3,
            bn_examples=2000,
            overrides=(("data.data_dir", cifar10),),
        )
    ]
