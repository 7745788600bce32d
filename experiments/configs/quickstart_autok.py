"""Auto-k end to end on the embedded digits (no download), for `experiments.autok`.

    python -m experiments.autok --config=quickstart_autok.py --out=runs/autok --seeds=0,1,2 \\
        --n_random=3

ResNet-18 at width 8, MNIST's Table 5 optimiser, 220 steps (20 epochs of 11 steps) per run.
The head-only signal runs (and the standard and metric-k runs) record tr(F) and S_avg every 4
steps up to step 40 on a 64-example metric set (the paper: every 10 steps to 2000 on 2048
examples, and S_worst too, whose Auto-PGD takes seconds per recording on a CPU). Any k a metric
can pick (at most 40) releases every block inside the run (40 * 5 < 220). OOD: 100 digits per
corruption x severity of the generated MNIST-C-style set. README shows the measured tables.
"""

from experiments.configs.quickstart import get_config as quickstart_config


def get_config():
    c = quickstart_config()
    c.model.width = 8
    c.unfreeze.k = None  # auto-k sets the schedule
    c.num_epochs = 20
    c.checkpoint_every = 0
    c.data.ood_max_examples = 100
    c.record.every = 4
    c.record.until = 40
    c.record.set_size = 64
    c.record.batch_size = 64
    c.record.metrics = ("fisher", "avg_sharpness")
    c.record.avg_samples = 5
    c.record.samples_per_pass = 1  # sequential perturbations: ~3x faster than vmapped on a CPU
    return c
