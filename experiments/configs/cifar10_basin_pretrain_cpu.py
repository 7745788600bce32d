"""The pre-training of `cifar10_basin_cpu.py` (docs/REPRODUCTION.md): ResNet-20 at width 4 on
CIFAR-10's classes 0-4 from init, SGD lr 0.1, momentum 0.9, wd 1e-4, batch 128, a per-step
cosine, crops and flips, 2 epochs (392 steps). No OOD set, no recording.
"""

from experiments.configs.cifar10_basin_cpu import get_config as finetune_config


def get_config():
    c = finetune_config()
    c.data.classes = (0, 1, 2, 3, 4)
    c.data.ood_source = "none"
    c.total_steps = 392
    c.optimizer.lr = 0.1
    c.record.every = 0
    return c
