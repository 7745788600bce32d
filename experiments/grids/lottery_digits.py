"""The four experiments of Frankle, Schwab & Morcos 2020 at a toy scale on the embedded digits
(`experiments/configs/digits_lottery.py`): the pipeline's end-to-end check, not a result.

    python -m experiments.paper --grid=lottery_digits --out=runs/lottery_digits
    python -m experiments.analysis all runs/lottery_digits

Two seeds (the least that gives an interval), rewinding to steps 0 and 4, two IMP levels, two
transforms and one pre-training task.
"""

from experiments.paper import Study

LOTTERY_OUTPUTS = ("lth_imp", "lth_rewind", "lth_perturb", "lth_pretext", "lth_telemetry")


def get_grid() -> list[Study]:
    return [
        Study(
            "lottery",
            "digits_lottery.py",
            LOTTERY_OUTPUTS,
            kind="lottery",
            seeds=(0, 1),
            rewind=(0, 4),
            levels=2,
            sparsity_level=2,
            transforms=("reinit", "shuffle"),
            pretexts=("rotation",),
            pretrain_epochs=(0.1,),
        )
    ]
