"""CIFAR-10, VGG-11 (Table 5): SGD lr 0.15, no momentum, no wd, batch 128, 200 epochs.

Augmentation: pad-4 random crop + horizontal flip. OOD: CIFAR-10-C (tfds `cifar10_corrupted`):
the OOD mean covers the 15 benchmark corruptions x 5 severities by default;
--config.data.ood_corruptions=all for all 19.
"""

from earlyjax.config import default_config


def get_config():
    c = default_config()
    c.data.name = "cifar10"
    c.data.source = "tfds"
    c.data.ood_source = "tfds"
    c.data.augment = True
    c.model.name = "vgg11"
    c.optimizer.lr = 0.15
    c.num_epochs = 200
    c.checkpoint_every = 5000
    # §6.3 / App. C: the trained model's λ_max, S_avg, S_worst and feature λ_max (Figure 5).
    c.final.metrics = ("hessian", "avg_sharpness", "worst_sharpness", "feature_eigenvalue")
    return c
