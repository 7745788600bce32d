"""Frankle, Schwab & Morcos 2020 as the paper ran it: ResNet-20 on CIFAR-10 and LeNet-300-100 on
MNIST (`experiments/configs/cifar10_resnet20_lth.py`, `mnist_lenet_lth.py`), every experiment
on the ID test set and the OOD set (CIFAR-10-C, MNIST-C). Needs the data sets and a GPU:
`--dry_run` prints the runs and device hours.

    python -m experiments.paper --grid=lottery --out=runs/lottery --dry_run
    python -m experiments.paper --grid=lottery --out=runs/lottery
    python -m experiments.analysis all runs/lottery

The rewinding steps are the paper's (0 to 2,000); IMP runs 8 levels of 20% (16.8% of the weights
remain) and the perturbations and pre-training are measured there; pre-training runs 1 to 40
epochs on each task.
"""

from experiments.paper import Study

OUTPUTS = ("lth_imp", "lth_rewind", "lth_perturb", "lth_pretext", "lth_telemetry")
REWIND = (0, 50, 100, 250, 500, 1000, 2000)
TRANSFORMS = ("reinit", "sign_preserving_reinit", "shuffle", "shuffle_magnitudes", "gaussian_noise")
PRETEXTS = ("random_labels", "rotation", "blur")


def get_grid() -> list[Study]:
    design = dict(
        kind="lottery",
        seeds=(0, 1, 2),
        rewind=REWIND,
        levels=8,
        sparsity_level=8,
        transforms=TRANSFORMS,
    )
    return [
        Study(
            "cifar10_resnet20",
            "cifar10_resnet20_lth.py",
            OUTPUTS,
            pretexts=PRETEXTS,
            pretrain_epochs=(1, 2, 5, 10, 20, 40),
            **design,
        ),
        Study("mnist_lenet", "mnist_lenet_lth.py", OUTPUTS[:3] + OUTPUTS[4:], **design),
    ]
