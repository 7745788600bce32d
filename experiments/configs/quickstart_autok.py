"""Small end-to-end auto-k on the embedded digits (no download), for `experiments.autok`.

ResNet-18 at width 8, MNIST's Table 5 optimiser, 150 steps per run. The head-only signal run
(and the standard and metric-k runs) record tr(F) and S_avg every 5 steps up to step 100 on a
128-example metric set (the paper: every 10 steps to 2000 on 2048 examples, and S_worst too,
whose Auto-PGD takes tens of seconds per recording on a CPU); OOD: 200 digits per corruption
x severity.

    python -m experiments.autok --config=quickstart_autok.py --out=runs/autok \\
        --n_random=3 --max_random_k=30
"""

from experiments.configs.quickstart import get_config as quickstart_config


def get_config():
    c = quickstart_config()
    c.model.width = 8
    c.num_epochs = 1
    c.total_steps = 150
    c.checkpoint_every = 0
    c.data.ood_max_examples = 200
    c.record.every = 5
    c.record.until = 100
    c.record.set_size = 128
    c.record.batch_size = 64
    c.record.metrics = ("fisher", "avg_sharpness")
    c.record.avg_samples = 5
    c.record.samples_per_pass = 1  # sequential perturbations: ~3x faster than vmapped on a CPU
    return c
