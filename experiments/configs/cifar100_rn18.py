"""CIFAR-100, ResNet-18 (Table 5): SGD lr 0.01, momentum 0.9, wd 5e-4, batch 128, 200 epochs.

Augmentation: pad-4 random crop + horizontal flip. OOD: CIFAR-100-C, which tfds does not have:
point --config.data.ood_dir at the official release (one .npy per corruption plus labels.npy).
The OOD mean covers the 15 benchmark corruptions x 5 severities by default;
--config.data.ood_corruptions=all for all 19 of the release.
"""

from earlyjax.config import default_config


def get_config():
    c = default_config()
    c.data.name = "cifar100"
    c.data.source = "tfds"
    c.data.ood_source = "local"
    c.data.augment = True
    c.model.name = "resnet18"
    c.optimizer.lr = 0.01
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 5e-4
    c.num_epochs = 200
    c.checkpoint_every = 5000
    # §6.3 / App. C: the trained model's λ_max, S_avg, S_worst and feature λ_max (Figure 5).
    c.final.metrics = ("hessian", "avg_sharpness", "worst_sharpness", "feature_eigenvalue")
    return c
