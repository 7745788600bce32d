"""Frankle et al. 2020's experiments at the scale of a 2-core CPU (docs/REPRODUCTION.md):
LeNet-300-100 on real MNIST (`experiments/configs/mnist_lenet_lth_cpu.py`, three seeds, all four
experiments) and ResNet-20 at width 4 for 2 epochs on real CIFAR-10
(`experiments/configs/cifar10_resnet20_lth_cpu.py`, two seeds: the trunk's telemetry and one IMP
level; a 2-epoch run takes about 7 minutes here, so deeper IMP did not fit: docs/REPRODUCTION.md).

    python -m experiments.paper --grid=lottery_cpu --out=runs/lottery_cpu
    python -m experiments.analysis all runs/lottery_cpu

IMP runs 8 levels of 20% (16.8% of the weights remain), rewound to steps 0, 100, 500 and
2,000; each of the five weight transforms and IMP after 0.25 and 1 epoch of each pre-training
task are measured at level 6 (26.2% remain). ResNet-20: one IMP level rewound to step 0.
`--config.data.data_dir` is read from MNIST_DIR (default ../shared/datasets/mnist) and
CIFAR10_DIR (the folder holding cifar-10-batches-py, built by
../shared/datasets/cifar10/build_cifar10.py; default /work/data/cifar10).
"""

import os

from experiments.grids.lottery import OUTPUTS, PRETEXTS, TRANSFORMS
from experiments.paper import Study


def get_grid() -> list[Study]:
    mnist = os.environ.get("MNIST_DIR", "../shared/datasets/mnist")
    cifar10 = os.environ.get("CIFAR10_DIR", "/work/data/cifar10")
    return [
        Study(
            "mnist_lenet",
            "mnist_lenet_lth_cpu.py",
            OUTPUTS,
            kind="lottery",
            seeds=(0, 1, 2),
            rewind=(0, 100, 500, 2000),
            levels=8,
            sparsity_level=6,
            transforms=TRANSFORMS,
            pretexts=PRETEXTS,
            pretrain_epochs=(0.25, 1),
            overrides=(("data.data_dir", os.path.abspath(mnist)),),
        ),
        Study(
            "cifar10_resnet20",
            "cifar10_resnet20_lth_cpu.py",
            ("lth_imp", "lth_rewind", "lth_telemetry"),
            kind="lottery",
            seeds=(0, 1),
            rewind=(0,),
            levels=1,
            sparsity_level=1,
            overrides=(("data.data_dir", os.path.abspath(cifar10)),),
        ),
    ]
