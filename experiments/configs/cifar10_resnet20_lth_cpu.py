"""Frankle et al. 2020's CIFAR-10 setting at a CPU-feasible scale (docs/REPRODUCTION.md): the
paper's ResNet-20 recipe (`cifar10_resnet20_lth.py`: SGD lr 0.1, momentum 0.9, wd 1e-4, batch
128, flips and crops, open_lth's init) at width 4 (4/8/16 filters; the paper: 16) for 2 epochs
(782 steps; the paper: 160 epochs), the learning rate ÷10 at the same fractions of the run
(epochs 1 and 1.5; the paper: 80 and 120). The trunk records tr(F), S_avg and S_worst every 50
steps to step 500 on 256 training images. OOD: the CIFAR-10 test set under the 15 CIFAR-10-C
corruptions at severity 3, generated here, the first 1,000 images of each split.

    python -m experiments.paper --grid=lottery_cpu --out=runs/lottery_cpu --only=cifar10_resnet20
"""

from experiments.configs.cifar10_resnet20_lth import get_config as cifar10_resnet20_config


def get_config():
    c = cifar10_resnet20_config()
    c.data.source = "local"  # --config.data.data_dir: the folder holding cifar-10-batches-py
    c.data.ood_source = "generated"
    c.data.ood_severities = (3,)
    c.data.ood_max_examples = 1000
    c.model.width = 4
    c.num_epochs = 2
    c.optimizer.milestone_epochs = (1, 1.5)
    c.checkpoint_every = 0
    c.keep_checkpoints = 1
    c.checkpoint_steps = (0, 50, 100, 250, 500)
    c.progress_bar = False
    c.log_every = 100
    c.record.every = 50
    c.record.until = 500
    c.record.set_size = 256
    c.record.batch_size = 128
    c.record.samples_per_pass = 1
    return c
