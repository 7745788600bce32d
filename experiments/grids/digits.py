"""Every table and figure of the paper's image half at a toy scale on the embedded digits
(`experiments/configs/digits_tiny.py`): the pipeline's end-to-end check, not a result.

    python -m experiments.paper --grid=digits --out=runs/paper_digits
    python -m experiments.analysis all runs/paper_digits

Two seeds everywhere (the least that gives a spread); k and switch steps scaled to a 60-step run.
"""

from earlyjax.config import Field
from experiments.paper import Study

CONFIG = "digits_tiny.py"
SEEDS = (0, 1)


def get_grid() -> list[Study]:
    return [
        # Standard vs GU at lr_d and 0.1·lr_d; these runs record and analyse the final solution,
        # so they also give the dynamics figures and Figure 5.
        Study(
            "k",
            CONFIG,
            ("table1", "fig1", "fig5", "fig2", "fig10", "fig7", "table3", "fig3", "fig8"),
            seeds=SEEDS,
            k=(None, 2, 6),
            lr_scale=(1.0, 0.1),
        ),
        Study(
            "lr_switch",
            CONFIG,
            ("table3", "fig3", "fig8"),
            seeds=SEEDS,
            lr_switch=(("l2h", 6), ("h2l", 6)),
        ),
        Study("autok", CONFIG, ("table2", "table6", "fig6"), kind="autok", seeds=SEEDS, n_random=2),
        Study(
            "autok_lr",
            CONFIG,
            ("table3_autok",),
            kind="autok",
            seeds=SEEDS,
            n_random=2,
            intervention="lr_switch",
            overrides=((Field.LR_SWITCH, "l2h"),),
        ),
    ]
