"""Small end-to-end auto-k on the embedded digits (no download), for `experiments.autok`.

ResNet-18 at width 8, MNIST's Table 5 optimiser, 150 steps per run. The head-only signal run
records tr(F), S_avg and S_worst every 5 steps up to step 100 on a 256-example metric set
(the paper: every 10 steps to 2000 on 2048 examples); OOD: 200 digits per corruption x severity.

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
    c.record.set_size = 256
    c.record.batch_size = 128
    c.record.avg_samples = 5
    c.record.worst_iters = 5
    return c
