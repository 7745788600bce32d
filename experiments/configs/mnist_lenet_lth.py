"""Frankle, Schwab & Morcos 2020's MNIST setting (open_lth's `mnist_lenet_300_100`):
LeNet-300-100, SGD lr 0.1 without momentum or weight decay, batch 128, 40 epochs; open_lth's
pruning keeps the output layer dense. OOD: MNIST-C (tfds) or its corruptions generated here.

    python -m experiments.paper --grid=lottery --out=runs/lottery --only=mnist_lenet
"""

from experiments.configs.mnist_rn18 import get_config as mnist_config

REWIND_STEPS = (0, 50, 100, 250, 500, 1000, 2000)


def get_config():
    c = mnist_config()
    c.model.name = "lenet300_100"
    c.model.width = 64  # 300-100
    c.model.init = "open_lth"
    c.batch_size = 128
    c.num_epochs = 40
    c.optimizer.name = "sgd"
    c.optimizer.lr = 0.1
    c.optimizer.momentum = 0.0
    c.optimizer.weight_decay = 0.0
    c.unfreeze.k = None
    c.checkpoint_steps = REWIND_STEPS
    c.record.every = 10
    c.record.until = 2000
    return c
