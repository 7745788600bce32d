"""Sadrtdinov et al. 2023's four experiments at a toy scale on the embedded digits
(`experiments/configs/digits_basin.py`): the pipeline end to end with ResNet-20 and its
BatchNorm, not a result. 29 runs in about 8 minutes on one core, `analysis all` in about 4
(the tests run a smaller grid of LeNets: tests/experiments/test_basin.py).

    python -m experiments.paper --grid=basin_digits --out=runs/basin_digits
    python -m experiments.analysis all runs/basin_digits

Two seeds (the least that gives an interval), ensembles of 3, SSE and StarSSE at cycle
learning rates 0.5 and 4 × the fine-tuning lr and cycle lengths 1 × E, local and global DE.
"""

from experiments.paper import Study

BASIN_OUTPUTS = ("sse_cycles", "sse_size", "sse_barrier", "sse_soups", "sse_early")


def get_grid() -> list[Study]:
    return [
        Study(
            "basin",
            "digits_basin.py",
            BASIN_OUTPUTS,
            kind="basin",
            seeds=(0, 1),
            members=3,
            methods=("sse", "starsse"),
            cycle_lrs=(0.5, 4.0),
            cycle_epochs=(1.0,),
            global_de=True,
            pretrain_config="digits_basin_pretrain.py",
            path_points=5,
        )
    ]
