"""MNIST, ResNet-18 at a CPU-feasible scale, from the MNIST IDX files (docs/REPRODUCTION.md).

Table 5's MNIST optimiser (SGD lr 0.01, momentum 0.9, wd 0.01, batch 128) on the real MNIST
training set, but ResNet-18 at width 4 (the paper: 64) for 1 epoch = 469 steps (the paper: 10
epochs = 4,690), recording tr(F) and S_avg every 5 steps to step 90 on 512 training points
(the paper: to step 2,000 on 2,048, and S_worst), so every k a metric can pick releases all five
blocks inside the run (90 * 5 < 469). OOD: the MNIST test set under the 15 MNIST-C corruptions
at severity 3, generated here (MNIST-C itself cannot be downloaded on this machine), the first
1,000 images of each split.

    python -m experiments.autok --config=mnist_cpu.py --config.data.data_dir=DIR \\
        --out=runs/mnist_cpu --seeds=0,1,2 --n_random=10
"""

from experiments.configs.mnist_rn18 import get_config as mnist_config


def get_config():
    c = mnist_config()
    c.data.source = "local"  # --config.data.data_dir: the folder of the four IDX .gz files
    c.data.ood_source = "generated"
    c.data.ood_severities = (3,)
    c.data.ood_max_examples = 1000
    c.model.width = 4
    c.num_epochs = 1
    c.checkpoint_every = 0
    c.record.every = 5  # 18 candidate k up to 90, so that 10 random k can be drawn
    c.record.until = 90
    c.record.set_size = 512
    c.record.batch_size = 256
    c.record.metrics = ("fisher", "avg_sharpness")
    c.record.samples_per_pass = 1  # sequential perturbations: faster on a CPU
    # Running statistics, as Andriushchenko et al.'s code evaluates; docs/REPRODUCTION.md shows
    # what record.bn="batch" (the default) changes.
    c.record.bn = "eval"
    return c
