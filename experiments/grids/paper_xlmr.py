"""The paper's transformer half (§4 "Complex Setup", §7.2, App. A, D, E.3): auto-k for gradual
unfreezing of XLM-R + LoRA, trained on MNLI and on SQuAD: Tables 4, 6 and 7, Figures 4, 6 and
9 (Table 6 and Figure 6 beside the image grid's, for these two settings).

    XLMR_DIR=/path/to/xlm-roberta-base python -m experiments.paper --grid=paper_xlmr \\
        --out=runs/paper_xlmr --dry_run
    XLMR_DIR=... python -m experiments.paper --grid=paper_xlmr --out=runs/paper_xlmr
    python -m experiments.analysis all runs/paper_xlmr

`XLMR_DIR` is a Hugging Face XLM-R folder (`huggingface-cli download FacebookAI/xlm-roberta-base
--local-dir DIR`); it becomes part of the grid (`OUT/paper.json`), so keep it where it is. The
tfds data sets (`tfds build multi_nli xnli squad xquad mlqa --file_format=array_record`) are
read from tfds' default folder or `TFDS_DATA_DIR`.

Per task (`mnli_xlmr.py`, `squad_xlmr.py`: Table 5's settings), 4 seeds (§4): the head-only
signal runs record tr(F), S_avg and S_worst every 10 steps to 2000, each metric's k (Algorithm
2 on the seed mean) and 10 random k are trained on every seed with standard training. The
random k are drawn from k <= 800 as §6.4 does for the images (the paper does not say which
range it drew from for XLM-R; its Table 6 picks 210-1310).
"""

import os

from earlyjax.config import Field
from experiments.paper import Study

RECORD = ((Field.RECORD_EVERY, 10), (Field.RECORD_UNTIL, 2000), (Field.FINAL_METRICS, ()))


def get_grid() -> list[Study]:
    checkpoint = os.environ.get("XLMR_DIR")
    if not checkpoint:
        raise ValueError(
            "set XLMR_DIR to a downloaded XLM-R folder (huggingface-cli download "
            "FacebookAI/xlm-roberta-base --local-dir DIR)"
        )
    overrides = ((Field.MODEL_CHECKPOINT, os.path.abspath(checkpoint)), *RECORD)
    seeds = (0, 1, 2, 3)
    return [
        Study("mnli_xlmr/autok", "mnli_xlmr.py", ("table4", "table7", "table6", "fig6", "fig4"),
              kind="autok", seeds=seeds, max_random_k=800, overrides=overrides),
        Study("squad_xlmr/autok", "squad_xlmr.py", ("table4", "table7", "table6", "fig6", "fig9"),
              kind="autok", seeds=seeds, max_random_k=800, overrides=overrides),
    ]  # fmt: skip
