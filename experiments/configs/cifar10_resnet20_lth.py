"""Frankle, Schwab & Morcos 2020's CIFAR-10 setting (open_lth's `cifar_resnet_20`): ResNet-20
(16/32/64 filters), SGD lr 0.1, momentum 0.9, weight decay 1e-4, batch 128, 160 epochs with the
learning rate ÷10 at epochs 80 and 120, pad-4 crops and horizontal flips; open_lth's init
(Kaiming normal, BatchNorm weights U(0, 1)). The trunk keeps the paper's rewinding points and
records tr(F), S_avg and S_worst to step 2,000 (the first paper's early period). OOD:
CIFAR-10-C from `--config.data.ood_dir`.

    python -m experiments.paper --grid=lottery --out=runs/lottery --only=cifar10_resnet20
"""

from experiments.configs.cifar10_rn18 import get_config as cifar10_config

REWIND_STEPS = (0, 50, 100, 250, 500, 1000, 2000)


def get_config():
    c = cifar10_config()
    c.model.name = "resnet20"
    c.model.width = 16
    c.model.init = "open_lth"
    c.data.augment = True
    c.batch_size = 128
    c.num_epochs = 160
    c.optimizer.name = "sgd"
    c.optimizer.lr = 0.1
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 1e-4
    c.optimizer.schedule = "multistep"
    c.optimizer.milestone_epochs = (80, 120)
    c.optimizer.gamma = 0.1
    c.unfreeze.k = None
    c.checkpoint_steps = REWIND_STEPS
    c.record.every = 10
    c.record.until = 2000
    return c
