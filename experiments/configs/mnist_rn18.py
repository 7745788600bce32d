"""MNIST, ResNet-18 (Table 5): SGD lr 0.01, momentum 0.9, wd 0.01, batch 128, 10 epochs.

No augmentation. OOD: MNIST-C (tfds `mnist_corrupted`): its 15 corruptions at its single
severity (keyed 3). Gradual unfreezing: --config.unfreeze.k=K.
"""

from earlyjax.config import default_config


def get_config():
    c = default_config()
    c.data.name = "mnist"
    c.data.source = "tfds"
    c.data.ood_source = "tfds"
    c.data.ood_severities = (3,)  # MNIST-C has one severity per corruption, keyed 3
    c.model.name = "resnet18"
    c.optimizer.lr = 0.01
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 0.01
    c.num_epochs = 10
    c.checkpoint_every = 1000
    # §6.3 / App. C: the trained model's λ_max, S_avg, S_worst and feature λ_max (Figure 5).
    c.final.metrics = ("hessian", "avg_sharpness", "worst_sharpness", "feature_eigenvalue")
    return c
