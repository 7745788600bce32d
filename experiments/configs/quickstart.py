"""Quickstart on the embedded digits (no download): ResNet-18 at width 16 with gradual
unfreezing, Table 5's MNIST settings (SGD, lr 0.01, momentum 0.9, wd 0.01), OOD = the digits
test set under 15 MNIST-C corruptions x 5 severities. About 4 minutes on 2 CPU cores.
"""

from earlyjax.config import default_config


def get_config():
    c = default_config()
    c.data.name = "digits"
    c.data.source = "embedded"
    c.model.name = "resnet18"
    c.model.width = 16
    c.optimizer.lr = 0.01
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 0.01
    c.unfreeze.k = 10
    c.num_epochs = 20
    c.checkpoint_every = 100
    return c
