"""The paper's SQuAD -> XQuAD / MLQA setting (§4 "Complex Setup", App. A, Table 5): XLM-R base
+ LoRA with a span head.

    python -m experiments.main --config=squad_xlmr.py --workdir=DIR \\
        --config.model.checkpoint=XLMR_DIR --config.data.data_dir=TFDS_DIR

Needs a Hugging Face XLM-R folder (`huggingface-cli download FacebookAI/xlm-roberta-base
--local-dir XLMR_DIR`) and tfds' squad/v1.1, xquad and mlqa prepared in the ArrayRecord format
(`tfds build squad xquad mlqa --file_format=array_record`, which needs TensorFlow once).
Table 5: LoRA r 8, alpha 8, dropout 0.2 on query and value; AdamW, lr 5e-4, weight decay
0.01, linear schedule, batch 32, 15 epochs; windows of 384 tokens with stride 128; metrics on
2048 training windows in batches of 32. The head and the last layer's LoRA train from step 0;
`--config.unfreeze.k` releases the rest top-down.
"""

from experiments.configs import mnli_xlmr


def get_config():
    c = mnli_xlmr.get_config()  # Table 5's XLM-R settings; SQuAD's differences below
    c.task = "qa"
    c.data.name = "squad"
    c.data.max_length = 384
    c.data.doc_stride = 128
    c.batch_size = 32
    c.eval_batch_size = 64
    c.record.batch_size = 32
    return c
