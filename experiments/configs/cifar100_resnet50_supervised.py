"""Sadrtdinov et al. 2023's second setting (ens-for-transfer `configs/resnet/`): a ResNet-50
pre-trained on ImageNet with labels (torchvision's weights as `model.checkpoint`) fine-tuned
on CIFAR-100: `cifar100_resnet50_byol.py` with lr 0.005 and weight decay 5e-4. The same
differences from the paper (32-pixel inputs). Needs a GPU.

    SUPERVISED_CHECKPOINTS=a.pt,... python -m experiments.paper --grid=basin --out=runs/basin
"""

from experiments.configs.cifar100_resnet50_byol import get_config as byol_config


def get_config():
    c = byol_config()
    c.optimizer.lr = 0.005
    c.optimizer.weight_decay = 5e-4
    return c
