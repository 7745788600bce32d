"""The pre-training of the toy basin study (`experiments/grids/basin_digits.py`): ResNet-20 at
width 4 on the embedded digits' classes 0-4, 6 epochs of batch 64 (11 steps each), SGD lr 0.1,
momentum 0.9, cosine per epoch. No OOD set, no recording. Not a result.
"""

from experiments.configs.digits_basin import get_config as finetune_config


def get_config():
    c = finetune_config()
    c.data.classes = (0, 1, 2, 3, 4)
    c.data.ood_source = "none"
    c.num_epochs = 6
    c.optimizer.lr = 0.1
    c.record.every = 0
    c.final.metrics = ()
    return c
