"""Extractive QA offline: XLM-R + LoRA with gradual unfreezing on a generated SQuAD-style task.

    python -m experiments.main --config=quickstart_qa.py --workdir=runs/quickstart_qa

What it is: `quickstart_nli.py`'s random tiny XLM-R (width 32, 4 layers, LoRA r 8 on query and
value, the backbone frozen) with a span head, trained with AdamW (lr 2e-2) and a linear schedule on
2048 English examples of `earlyjax.data.synthetic_qa` (find the question's word in a 20-word
context and answer it with the word after it), in windows of 20 tokens with stride 8, and
scored with F1 and exact match on English (ID) and three made-up languages sharing 75%, 50%
and 25% of its words (OOD). Gradual unfreezing releases the LoRA layers top-down every
k = 30 steps while tr(F), S_avg and S_worst of the trainable adapters are recorded every 10
steps to 100. What it is not: a pre-trained model or natural language; for the paper's setting
use `squad_xlmr.py` with a downloaded checkpoint.
"""

from earlyjax.data import synthetic_qa
from experiments.configs import quickstart_nli


def get_config():
    c = quickstart_nli.get_config()
    c.task = "qa"
    c.data.name = "synthetic_qa"
    c.data.max_length = synthetic_qa.MAX_LENGTH
    c.data.doc_stride = synthetic_qa.STRIDE
    c.optimizer.lr = 2e-2  # the span head learns slower than the NLI head at 5e-3
    return c
