"""A toy lottery setting on the embedded digits (no download) for
`experiments/grids/lottery_digits.py`: the four experiments of Frankle et al. 2020 end to end
in about a minute on 2 CPU cores. Not a result.

LeNet-300-100 at width 16 (75-25 units), 24 steps of batch 32, SGD lr 0.1; the trunk keeps its
checkpoints at steps 0, 2, 4 and 8 and records tr(F) and S_avg there; OOD: 2 corruptions at
severity 3, 100 digits each.
"""

from experiments.configs.quickstart import get_config as quickstart_config


def get_config():
    c = quickstart_config()
    c.model.name = "lenet300_100"
    c.model.width = 16
    c.model.init = "open_lth"
    c.batch_size = 32
    c.total_steps = 24
    c.optimizer.lr = 0.1
    c.optimizer.momentum = 0.0
    c.optimizer.weight_decay = 0.0
    c.unfreeze.k = None
    c.checkpoint_every = 0
    c.keep_checkpoints = 1
    c.checkpoint_steps = (0, 2, 4, 8)
    c.progress_bar = False
    c.log_every = 12
    c.eval_batch_size = 250
    c.data.ood_corruptions = "shot_noise,fog"
    c.data.ood_severities = (3,)
    c.data.ood_max_examples = 100
    c.record.every = 2
    c.record.until = 8
    c.record.set_size = 64
    c.record.batch_size = 64
    c.record.metrics = ("fisher", "avg_sharpness")
    c.record.avg_samples = 3
    c.record.samples_per_pass = 1
    return c
