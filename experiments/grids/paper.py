"""The paper's image experiments (§5-§7.1, App. C-E): every run of Tables 1, 2, 3 and 6 and
Figures 1, 2, 3, 5, 6, 7, 8 and 10, on the four settings of Table 1.

    python -m experiments.paper --grid=paper --out=runs/paper --dry_run
    python -m experiments.paper --grid=paper --out=runs/paper
    python -m experiments.analysis all runs/paper

Per setting (§4: 6 seeds for MNIST, 4 for CIFAR):
  <setting>/k         standard and GU at 10 log-spaced k from 1 to the largest k whose schedule
                      fits the run (Figure 1's x axis), at lr_d and 0.1·lr_d, with the
                      final-solution analysis: Table 1, Figure 1, Figure 5;
  <setting>/dynamics  standard and GU at k = 250, 750 (VGG: 250, 5000), lr_d and 0.1·lr_d,
                      recording tr(F), S_avg, S_worst and the feature rank every 10 steps to
                      2000: Figures 2, 10 and 7;
  <setting>/autok     Algorithm 2's k per metric (recorded to step 2000) vs 10 random k <= 800
                      (§6.4): Tables 2 and 6, Figure 6.
CIFAR-10 / ResNet-18 only (§7.1): LR switches l2h and h2l at switch steps drawn once at random
(Table 3; its constant lr_d and 0.1·lr_d rows are the standard runs of cifar10_rn18/k), l2h at
200 recorded (Figures 3 and 8, against the recorded constant lr_d of cifar10_rn18/dynamics),
and the switch step picked by each metric vs random steps (Table 3's extra rows).
"""

from earlyjax.config import Field
from experiments.paper import Study

SETTINGS = {  # name: (config, seeds, Figure 2's k)
    "mnist_rn18": ("mnist_rn18.py", (0, 1, 2, 3, 4, 5), (250, 750)),
    "cifar10_rn18": ("cifar10_rn18.py", (0, 1, 2, 3), (250, 750)),
    "cifar10_vgg11": ("cifar10_vgg11.py", (0, 1, 2, 3), (250, 5000)),
    "cifar100_rn18": ("cifar100_rn18.py", (0, 1, 2, 3), (250, 750)),
}
LR_SCALES = (1.0, 0.1)
RECORD = (
    (Field.RECORD_EVERY, 10),
    (Field.RECORD_UNTIL, 2000),
    (Field.RECORD_METRICS, ("fisher", "avg_sharpness", "worst_sharpness", "feature_rank")),
    (Field.FINAL_METRICS, ()),
)
# Table 3's switch steps: "determined using random hyperparameter search" (§7.1); drawn once,
# uniformly from 10..2000 in steps of 10 (sorted(np.random.default_rng(0).choice(np.arange(
# 10, 2001, 10), 5, replace=False))), and fixed here.
SWITCH_STEPS = (540, 620, 1020, 1260, 1670)


def figure1_ks(config_file: str) -> tuple[int, ...]:
    """10 log-spaced k from 1 to the largest k whose GU schedule ends inside the run."""
    from earlyjax.data import TRAIN_EXAMPLES
    from experiments import sweep
    from experiments.paper import Study, study_config

    config = study_config(Study("k", config_file, ()))
    gu = sweep.intervention_for("gradual_unfreezing", config)
    largest = sweep.max_removal_step(config, gu, TRAIN_EXAMPLES[config.data.name])
    return tuple(sweep.log_spaced_ks(10, largest))


def get_grid() -> list[Study]:
    studies = []
    for name, (config, seeds, dynamics_ks) in SETTINGS.items():
        studies += [
            Study(
                f"{name}/k",
                config,
                ("table1", "fig1", "fig5") + (("table3",) if name == "cifar10_rn18" else ()),
                seeds=seeds,
                k=(None, *figure1_ks(config)),
                lr_scale=LR_SCALES,
            ),
            Study(
                f"{name}/dynamics",
                config,
                ("fig2", "fig10", "fig7") + (("fig3", "fig8") if name == "cifar10_rn18" else ()),
                seeds=seeds,
                k=(None, *dynamics_ks),
                lr_scale=LR_SCALES,
                overrides=RECORD,
            ),
            Study(
                f"{name}/autok",
                config,
                ("table2", "table6", "fig6"),
                kind="autok",
                seeds=seeds,
                max_random_k=800,
                overrides=(
                    (Field.RECORD_EVERY, 10),
                    (Field.RECORD_UNTIL, 2000),
                    (Field.FINAL_METRICS, ()),
                ),
            ),
        ]
    config, seeds, _ = SETTINGS["cifar10_rn18"]
    studies += [
        Study(
            "cifar10_rn18/lr_switch",
            config,
            ("table3",),
            seeds=seeds,
            lr_switch=tuple((d, k) for d in ("l2h", "h2l") for k in SWITCH_STEPS),
            overrides=((Field.FINAL_METRICS, ()),),
        ),
        Study(
            "cifar10_rn18/lr_switch_dynamics",
            config,
            ("fig3", "fig8"),
            seeds=seeds,
            lr_switch=(("l2h", 200),),
            overrides=RECORD,
        ),
        Study(
            "cifar10_rn18/autok_lr",
            config,
            ("table3_autok",),
            kind="autok",
            seeds=seeds,
            max_random_k=800,
            intervention="lr_switch",
            overrides=(
                (Field.LR_SWITCH, "l2h"),
                (Field.RECORD_EVERY, 10),
                (Field.RECORD_UNTIL, 2000),
                (Field.FINAL_METRICS, ()),
            ),
        ),
    ]
    return studies
