"""Sadrtdinov et al. 2023's main setting (ens-for-transfer `configs/byol/`): a ResNet-50
pre-trained on ImageNet with BYOL (the checkpoint file: `model.checkpoint`, a
torchvision-named state dict, .safetensors or .pt; `experiments/grids/basin.py` passes it)
fine-tuned on CIFAR-100 with a new head (PyTorch's default init): SGD momentum 0.9, lr 0.05,
weight decay 1e-4, batch 256, 25 epochs, cosine stepped per epoch; SSE / StarSSE cycles
restart at multiples of that lr (the basin study). OOD: CIFAR-100-C from
`--config.data.ood_dir`. Needs a GPU.

Differs from the paper: the inputs stay CIFAR's 32 x 32 with pad-4 crops and flips; the
paper up-samples to 224 x 224 (RandomResizedCrop(224) for training, Resize(256) +
CenterCrop(224) for testing) and normalises with ImageNet's statistics, where earlyjax
normalises with the training set's.

    BYOL_CHECKPOINTS=a.pt,b.pt,... python -m experiments.paper --grid=basin --out=runs/basin
"""

from experiments.configs.cifar100_rn18 import get_config as cifar100_config


def get_config():
    c = cifar100_config()
    c.model.name = "resnet50"
    c.model.width = 64
    c.model.init = "pytorch"  # the new head's
    c.batch_size = 256
    c.num_epochs = 25
    c.optimizer.name = "sgd"
    c.optimizer.lr = 0.05
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 1e-4
    c.optimizer.schedule = "cosine"
    c.unfreeze.k = None
    c.checkpoint_every = 1000
    c.keep_checkpoints = 1
    # The first paper's early-period metrics at the start of each run (a cycle's start).
    c.record.every = 50
    c.record.until = 200
    c.record.metrics = ("fisher", "avg_sharpness", "worst_sharpness")
    c.final.metrics = ()
    return c
