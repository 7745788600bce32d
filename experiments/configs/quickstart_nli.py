"""The transformer half offline: XLM-R + LoRA with gradual unfreezing on a generated NLI task.

    python -m experiments.main --config=quickstart_nli.py --workdir=runs/quickstart_nli

What it is: a random tiny XLM-R (width 32, 4 layers, LoRA r 8 on query and value, the backbone
frozen as in the paper), trained with AdamW and a linear schedule on 2048 English pairs of
`earlyjax.data.synthetic_nli` and evaluated on English (ID) and three made-up languages that
share 75%, 50% and 25% of their words with it (OOD); gradual unfreezing releases the four
LoRA layers top-down every k = 30 steps while tr(F), S_avg and S_worst of the trainable
adapters are recorded every 10 steps to 100. What it is not: a pre-trained model or natural
language. For the paper's setting use `mnli_xlmr.py` with a downloaded checkpoint.
"""

from earlyjax.config import default_config


def get_config():
    c = default_config()
    c.task = "nli"
    c.data.name = "synthetic_nli"
    c.data.source = "embedded"
    c.data.ood_source = "none"
    c.data.max_length = 16
    c.model.name = "xlmr"
    c.model.width = 32
    c.model.layers = 4
    c.optimizer.name = "adamw"
    c.optimizer.schedule = "linear"
    c.optimizer.lr = 5e-3
    c.optimizer.weight_decay = 0.01
    c.unfreeze.k = 30
    c.batch_size = 64
    c.num_epochs = 5  # 160 steps
    c.eval_batch_size = 512
    c.log_every = 20
    c.checkpoint_every = 80
    c.record.every = 10
    c.record.until = 100
    c.record.set_size = 256
    c.record.batch_size = 128
    c.record.avg_samples = 5
    c.record.worst_iters = 5
    return c
