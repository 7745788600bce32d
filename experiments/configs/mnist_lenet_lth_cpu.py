"""Frankle et al. 2020's MNIST setting at a CPU-feasible scale (docs/REPRODUCTION.md): the
paper's LeNet-300-100 and optimiser (`mnist_lenet_lth.py`: SGD lr 0.1, batch 128) on the real
MNIST training set, 8 epochs (3,752 steps; the paper: 40). The trunk records tr(F), S_avg and
S_worst every 100 steps to step 2,000 on 512 training points. OOD: the MNIST test set under the
15 MNIST-C corruptions at severity 3, generated here (MNIST-C cannot be downloaded on this
machine), the first 1,000 images of each split.

    python -m experiments.paper --grid=lottery_cpu --out=runs/lottery_cpu
"""

from experiments.configs.mnist_lenet_lth import get_config as mnist_lenet_config


def get_config():
    c = mnist_lenet_config()
    c.data.source = "local"  # --config.data.data_dir: the folder of the four IDX .gz files
    c.data.data_dir = "../shared/datasets/mnist"
    c.data.ood_source = "generated"
    c.data.ood_severities = (3,)
    c.data.ood_max_examples = 1000
    c.num_epochs = 8
    c.checkpoint_every = 0
    c.keep_checkpoints = 1
    c.progress_bar = False
    c.log_every = 500
    c.record.every = 100
    c.record.until = 2000
    c.record.set_size = 512
    c.record.batch_size = 256
    c.record.metrics = ("fisher", "avg_sharpness", "worst_sharpness")
    c.record.samples_per_pass = 1  # sequential perturbations: faster on a CPU
    return c
