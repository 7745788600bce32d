"""Sadrtdinov et al. 2023 at the scale of a 2-core CPU (docs/REPRODUCTION.md), the fine-tuning:
ResNet-20 at width 4 pre-trained on CIFAR-10's classes 0-4 (airplane, automobile, bird, cat,
deer; `cifar10_basin_pretrain_cpu.py`) and fine-tuned with a new head on classes 5-9 (dog,
frog, horse, ship, truck), the paper's recipe in small: SGD momentum 0.9, lr 0.05, wd 1e-4,
batch 128, pad-4 crops and flips, 196 steps (one epoch; the paper: 25 epochs). The cosine is
stepped per step (`warmup_cosine` without warm-up), not per epoch as the paper's: over one or
two epochs a per-epoch cosine would not decay. tr(F) and S_avg are recorded at steps 0, 10
and 20 of every run (for a cycle: the start of the cycle). OOD: the 15 CIFAR-10-C
corruptions at severity 3, generated here from the first 1,000 test images (those of classes
5-9: 515 per split).

    CIFAR10_DIR=/work/data/cifar10 python -m experiments.paper --grid=basin_cpu --out=runs/basin_cpu
"""

from experiments.configs.cifar10_rn18 import get_config as cifar10_config


def get_config():
    c = cifar10_config()
    c.data.source = "local"  # --config.data.data_dir: the folder holding cifar-10-batches-py
    c.data.classes = (5, 6, 7, 8, 9)
    c.data.ood_source = "generated"
    c.data.ood_severities = (3,)
    c.data.ood_max_examples = 1000
    c.model.name = "resnet20"
    c.model.width = 4
    c.batch_size = 128
    c.total_steps = 196
    c.optimizer.lr = 0.05
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 1e-4
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_epochs = 0.0
    c.unfreeze.k = None
    c.checkpoint_every = 0
    c.keep_checkpoints = 1
    c.progress_bar = False
    c.log_every = 100
    c.record.every = 10
    c.record.until = 20
    c.record.set_size = 256
    c.record.batch_size = 128
    c.record.metrics = ("fisher", "avg_sharpness")
    c.record.samples_per_pass = 1
    c.final.metrics = ()
    return c
