"""Frankle, Schwab & Morcos 2020's experiments as the runs of one study (`Study(kind="lottery")`
of `experiments.paper`), each an `earlyjax.train` run, most of them branches
(`earlyjax.branch`) of one trunk per seed:

  seed=S/trunk                          the dense run from init; keeps its checkpoints at the
                                        rewinding steps (and the config's checkpoint_steps)
  seed=S/k=K/level=L                    IMP with rewinding to K: level L prunes level L-1's
                                        final weights by 20% and rewinds to the trunk at K
                                        (level 0 is the trunk itself)
  seed=S/k=K/level=P/TRANSFORM          level P's mask, the trunk's weights at K perturbed by
                                        TRANSFORM (earlyjax.weight_transforms)
  seed=S/pretext=X/epochs=E/pretrain    E epochs of pre-training task X (random_labels,
                                        rotation, blur) from init
  seed=S/pretext=X/epochs=E/level=L     IMP rewound to the end of that pre-training: level 0
                                        continues it on the real task (rotation's 4-way head
                                        replaced), level L prunes level L-1

P is the study's `sparsity_level`: the fixed sparsity (0.8^P of the weights) of the
perturbation and data-dependence experiments. `lottery.json` in the study folder records the
design for the analysis (`experiments.analysis.lottery_outputs`); `experiments.branched`
runs the runs.
"""

from __future__ import annotations

from earlyjax.config import Field
from experiments.branched import BranchedRun

LOTTERY_FILE = "lottery.json"
PRETEXTS = ("random_labels", "rotation", "blur")


def trunk(seed: int) -> str:
    return f"seed={seed}/trunk"


def imp_level(seed: int, k: int, level: int) -> str:
    return trunk(seed) if level == 0 else f"seed={seed}/k={k}/level={level}"


def pretext_run(seed: int, pretext: str, epochs: float, level: int | None) -> str:
    last = "pretrain" if level is None else f"level={level}"
    return f"seed={seed}/pretext={pretext}/epochs={epochs:g}/{last}"


def design(study) -> dict:
    """What the analysis needs to know of the study (lottery.json)."""
    return {
        "seeds": list(study.seeds),
        "rewind": list(study.rewind),
        "levels": study.levels,
        "sparsity_level": study.sparsity_level,
        "transforms": list(study.transforms),
        "pretexts": list(study.pretexts),
        "pretrain_epochs": list(study.pretrain_epochs),
    }


def check_study(study) -> None:
    """ValueError for a lottery study that cannot run (one line, naming the field)."""
    name = f"lottery study {study.name}"
    if not study.rewind or any(k < 0 for k in study.rewind):
        raise ValueError(f"{name}: rewind needs steps >= 0, got {study.rewind}")
    if study.levels < 1:
        raise ValueError(f"{name}: levels must be >= 1, got {study.levels}")
    if not 1 <= study.sparsity_level <= study.levels:
        raise ValueError(
            f"{name}: sparsity_level must be in 1..levels={study.levels}, got "
            f"{study.sparsity_level}"
        )
    unknown = sorted(set(study.pretexts) - set(PRETEXTS))
    if unknown:
        raise ValueError(f"{name}: unknown pretexts {unknown}; choose from {PRETEXTS}")
    if study.pretexts and not all(e > 0 for e in study.pretrain_epochs):
        raise ValueError(f"{name}: pretrain_epochs must be > 0, got {study.pretrain_epochs}")
    if study.pretexts and not study.pretrain_epochs:
        raise ValueError(f"{name}: pretexts need pretrain_epochs, e.g. (0.5, 1, 2)")


def lottery_runs(study, config, num_train: int) -> list[BranchedRun]:
    """Every run of the study, each after the runs it branches from or prunes."""
    from earlyjax.data.pipeline import steps_per_epoch

    check_study(study)
    per_epoch = steps_per_epoch(num_train, config.batch_size)
    named = tuple(sorted({*study.rewind, *config.checkpoint_steps}))
    quiet = ((Field.RECORD_EVERY, 0), (Field.FINAL_METRICS, ()))  # branches do not record
    runs = []
    for seed in study.seeds:
        runs.append(BranchedRun(trunk(seed), (("seed", seed), ("checkpoint_steps", named))))
        branch = (("seed", seed), *quiet)
        for k in study.rewind:
            for level in range(1, study.levels + 1):
                previous = imp_level(seed, k, level - 1)
                runs.append(
                    BranchedRun(imp_level(seed, k, level), branch, trunk(seed), str(k), previous)
                )
        level = study.sparsity_level
        for transform in study.transforms:
            for k in study.rewind:
                previous = imp_level(seed, k, level - 1)
                overrides = (*branch, (Field.BRANCH_TRANSFORM, transform))
                name = f"{imp_level(seed, k, level)}/{transform}"
                runs.append(BranchedRun(name, overrides, trunk(seed), str(k), previous))
        for pretext in study.pretexts:
            for epochs in study.pretrain_epochs:
                pretrain = pretext_run(seed, pretext, epochs, None)
                steps = max(1, round(epochs * per_epoch))
                pre = ((Field.DATA_PRETEXT, pretext), ("total_steps", steps))
                runs.append(BranchedRun(pretrain, (*branch, *pre)))
                reinit = ((Field.BRANCH_REINIT, "head"),) if pretext == "rotation" else ()
                for level in range(0, study.sparsity_level + 1):
                    previous = pretext_run(seed, pretext, epochs, level - 1) if level else None
                    name = pretext_run(seed, pretext, epochs, level)
                    runs.append(BranchedRun(name, (*branch, *reinit), pretrain, "end", previous))
    return runs


def write_design(folder: str, study) -> None:
    """`folder/lottery.json`; a folder that holds another design is refused."""
    from experiments import branched

    branched.write_design(folder, LOTTERY_FILE, design(study))
