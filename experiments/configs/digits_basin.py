"""The fine-tuning of the toy basin study (`experiments/grids/basin_digits.py`; Sadrtdinov et
al. 2023 at a toy scale on the embedded digits, no download): a ResNet-20 at width 4
pre-trained on classes 0-4 (`digits_basin_pretrain.py`) fine-tuned with a new head on classes
5-9, the paper's recipe in small: SGD momentum 0.9, lr 0.05, wd 1e-4, cosine stepped per
epoch, 3 epochs of batch 64 (11 steps each). tr(F) and S_avg are recorded at steps 0, 2 and 4
of every run (for the cycles: the start of the cycle). OOD: 2 corruptions at severity 3 of the
first 100 test digits (those of classes 5-9). Not a result.
"""

from experiments.configs.quickstart import get_config as quickstart_config


def get_config():
    c = quickstart_config()
    c.data.classes = (5, 6, 7, 8, 9)
    c.data.ood_corruptions = "shot_noise,fog"
    c.data.ood_severities = (3,)
    c.data.ood_max_examples = 100
    c.model.name = "resnet20"
    c.model.width = 4
    c.batch_size = 64
    c.num_epochs = 3
    c.optimizer.lr = 0.05
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 1e-4
    c.optimizer.schedule = "cosine"
    c.unfreeze.k = None
    c.checkpoint_every = 0
    c.keep_checkpoints = 1
    c.progress_bar = False
    c.log_every = 100
    c.eval_batch_size = 250
    c.record.every = 2
    c.record.until = 4
    c.record.set_size = 64
    c.record.batch_size = 64
    c.record.metrics = ("fisher", "avg_sharpness")
    c.record.avg_samples = 3
    c.record.samples_per_pass = 1
    c.final.metrics = ()
    return c
