"""A toy-scale setting on the embedded digits (no download) for `experiments/grids/digits.py`:
every table and figure of the paper's image half in minutes on 2 CPU cores. Not a result.

ResNet-18 at width 4, 60 steps of batch 32 (Table 5's MNIST optimiser); recording of tr(F),
S_avg (3 samples), S_worst (3 Auto-PGD iterations) and the feature rank every 3 steps to step
12 on 64 training examples; the final-solution analysis at the end; OOD: 2 corruptions at
severity 3, 100 digits each. Every k a metric can pick (at most 12) releases all five blocks
inside the run (12 * 5 < 60).
"""

from experiments.configs.quickstart import get_config as quickstart_config


def get_config():
    c = quickstart_config()
    c.model.width = 4
    c.batch_size = 32
    c.total_steps = 60
    c.unfreeze.k = None
    c.checkpoint_every = 0
    c.progress_bar = False
    c.log_every = 20
    c.eval_batch_size = 250
    c.data.ood_corruptions = "shot_noise,fog"
    c.data.ood_severities = (3,)
    c.data.ood_max_examples = 100
    c.record.every = 3
    c.record.until = 12
    c.record.set_size = 64
    c.record.batch_size = 64
    c.record.metrics = ("fisher", "avg_sharpness", "worst_sharpness", "feature_rank")
    c.record.avg_samples = 3
    c.record.samples_per_pass = 1
    c.record.worst_iters = 3
    c.record.hessian_iters = 5
    c.final.metrics = ("hessian", "avg_sharpness", "worst_sharpness", "feature_eigenvalue")
    return c
