"""Sadrtdinov, Pozdeev, Vetrov & Lobacheva 2023's experiments ("To Stay or Not to Stay in the
Pre-train Basin") as the runs of one study (`Study(kind="basin")` of `experiments.paper`),
each an `earlyjax.train` run. K is the study's `members` (the ensemble size, 5 in the paper):

  pretrain=P                          pre-training from init with the study's
                                      `pretrain_config` (seed P); P = 0..K-1 with `global_de`,
                                      else P = 0. With `pretrained` (checkpoint files, e.g.
                                      torchvision ResNet-50s) there is none: file P stands in
  seed=S/finetune=J                   fine-tuning of pretrain=0 with a new head (a branch at its
                                      end with `continue_step=False`: step 0, a fresh optimizer,
                                      the study config's data, schedule and length E); J =
                                      0..K-1 are the local deep ensemble (local DE), J = 0 is
                                      "the first fine-tuned model" every cycle starts from
  seed=S/global=P                     fine-tuning of pretrain=P, P = 1..K-1: with finetune=0,
                                      the global DE (one member per pre-trained checkpoint)
  seed=S/METHOD/lr=X/epochs=Y/cycle=C cycle C = 1..K-1 of SSE or StarSSE: a branch with a
                                      fresh optimizer (moments and step count reset), the
                                      learning rate restarting at X × the fine-tuning lr and
                                      decaying by the study config's schedule over int(Y × E)
                                      epochs (the paper's int(): its 0.5 × 25 is 12); SSE from
                                      cycle C-1's end (cycle 0: finetune=0), StarSSE from
                                      finetune=0 (its cycles are independent branches)

The ensembles, each of K members: local DE, global DE, and per method, X and Y the first
fine-tuned model and its K-1 cycles (the paper's `num_fge` checkpoints, the first included).
S indexes the study's `seeds`, the replicates the intervals are over; the pre-trained
checkpoints are shared by the replicates (the paper's too: its runs reuse its few
pre-trained checkpoints). The seed of a run is 1000·S plus its offset: J for finetune=J, 100+C
and 200+C for SSE's and StarSSE's cycle C, 300+P for global=P; the cycles of every X and Y
thus see the same data orders (common random numbers). The paper's code continues one random
stream through the cycles instead. `basin.json` in the study folder records the design for
the analysis (`experiments.analysis.basin_outputs`); `experiments.branched` runs the runs.
"""

from __future__ import annotations

import os

from earlyjax.config import Field
from experiments.branched import BranchedRun

BASIN_FILE = "basin.json"
METHODS = ("sse", "starsse")
SSE_OFFSET, STARSSE_OFFSET, GLOBAL_OFFSET = 100, 200, 300
QUIET = ((Field.RECORD_EVERY, 0), (Field.FINAL_METRICS, ()))  # runs that need no recording


def pretrain_run(p: int) -> str:
    return f"pretrain={p}"


def finetune_run(seed: int, j: int) -> str:
    return f"seed={seed}/finetune={j}"


def global_run(seed: int, p: int) -> str:
    return finetune_run(seed, 0) if p == 0 else f"seed={seed}/global={p}"


def cycle_run(seed: int, method: str, lr: float, epochs: float, cycle: int) -> str:
    if cycle == 0:
        return finetune_run(seed, 0)
    return f"seed={seed}/{method}/lr={lr:g}/epochs={epochs:g}/cycle={cycle}"


def ensembles(design: dict, seed: int) -> dict[tuple, list[str]]:
    """{(method, X, Y): member runs} of one replicate: ("local", None, None), ("global", None,
    None) with `global_de`, and each SSE / StarSSE setting."""
    k = design["members"]
    out = {("local", None, None): [finetune_run(seed, j) for j in range(k)]}
    if design["global_de"]:
        out[("global", None, None)] = [global_run(seed, p) for p in range(k)]
    for method in design["methods"]:
        for lr in design["cycle_lrs"]:
            for epochs in design["cycle_epochs"]:
                members = [cycle_run(seed, method, lr, epochs, c) for c in range(k)]
                out[(method, lr, epochs)] = members
    return out


def design(study) -> dict:
    """What the analysis needs to know of the study (basin.json)."""
    return {
        "seeds": list(study.seeds),
        "members": study.members,
        "methods": list(study.methods),
        "cycle_lrs": list(study.cycle_lrs),
        "cycle_epochs": list(study.cycle_epochs),
        "global_de": study.global_de,
        "pretrained": list(study.pretrained),
        "path_points": study.path_points,
        "bn_examples": study.bn_examples,
    }


def check_study(study) -> None:
    """ValueError for a basin study that cannot run (one line, naming the field and the fix)."""
    name = f"basin study {study.name}"
    if study.members < 2:
        raise ValueError(f"{name}: members (the ensemble size K) must be >= 2, got {study.members}")
    unknown = sorted(set(study.methods) - set(METHODS))
    if unknown:
        raise ValueError(f"{name}: unknown methods {unknown}; choose from {METHODS}")
    if study.methods and not (study.cycle_lrs and study.cycle_epochs):
        raise ValueError(f"{name}: methods need cycle_lrs and cycle_epochs, e.g. (0.5, 1, 2)")
    if any(x <= 0 for x in (*study.cycle_lrs, *study.cycle_epochs)):
        raise ValueError(
            f"{name}: cycle_lrs and cycle_epochs are multiples of the fine-tuning lr and length "
            f"and must be > 0, got {study.cycle_lrs} and {study.cycle_epochs}"
        )
    if study.path_points < 3:
        raise ValueError(f"{name}: path_points must be >= 3 (the end points and one between)")
    if bool(study.pretrain_config) == bool(study.pretrained):
        raise ValueError(
            f"{name}: give the pre-trained models either as runs (pretrain_config, a config "
            "file) or as checkpoint files (pretrained), not both or neither"
        )
    needed = study.members if study.global_de else 1
    if study.pretrained and len(study.pretrained) < needed:
        raise ValueError(
            f"{name}: global_de needs {needed} pre-trained checkpoints (one per member), "
            f"pretrained has {len(study.pretrained)}"
        )


def check_pretrained(study) -> None:
    """ValueError (one line) naming a pre-trained checkpoint file of the study that is not
    there: checked before a study runs (its dry run needs none)."""
    missing = [p for p in study.pretrained if not os.path.isfile(p)]
    if missing:
        raise ValueError(
            f"basin study {study.name}: pre-trained checkpoint {missing[0]} not found: download "
            "it (a torchvision-named ResNet-50 state dict, .safetensors or .pt) and pass its path"
        )


def cycle_length(config, multiple: float) -> tuple[tuple[str, object], ...]:
    """The overrides that make a cycle `multiple` × the fine-tuning's length: int(multiple ×
    num_epochs) epochs (at least 1), or round(multiple × total_steps) steps when the config
    counts steps."""
    if config.total_steps:
        return (("total_steps", max(1, round(multiple * config.total_steps))),)
    return (("num_epochs", max(1, int(multiple * config.num_epochs))),)


def basin_runs(study, config) -> list[BranchedRun]:
    """Every run of the study, each after the runs it branches from."""
    check_study(study)
    runs = []
    num_pretrained = study.members if study.global_de else 1
    if study.pretrain_config:
        for p in range(num_pretrained):
            overrides = (*study.overrides, ("seed", p), *QUIET)  # the study's, then its own
            runs.append(BranchedRun(pretrain_run(p), overrides, config=study.pretrain_config))

    def finetune(name: str, seed: int, p: int) -> BranchedRun:
        if study.pretrained:  # the loader replaces the file's head
            checkpoint = (Field.MODEL_CHECKPOINT, study.pretrained[p])
            return BranchedRun(name, (("seed", seed), checkpoint))
        new_head = ((Field.BRANCH_CONTINUE_STEP, False), (Field.BRANCH_REINIT, "head"))
        return BranchedRun(name, (("seed", seed), *new_head), pretrain_run(p), "end")

    lr = config.optimizer.lr
    for s in study.seeds:
        for j in range(study.members):
            runs.append(finetune(finetune_run(s, j), 1000 * s + j, 0))
        if study.global_de:
            for p in range(1, study.members):
                runs.append(finetune(global_run(s, p), 1000 * s + GLOBAL_OFFSET + p, p))
        for method in study.methods:
            offset = SSE_OFFSET if method == "sse" else STARSSE_OFFSET
            for x in study.cycle_lrs:
                for y in study.cycle_epochs:
                    for c in range(1, study.members):
                        source = cycle_run(s, method, x, y, c - 1 if method == "sse" else 0)
                        overrides = (
                            ("seed", 1000 * s + offset + c),
                            (Field.OPTIMIZER_LR, x * lr),
                            *cycle_length(config, y),
                            (Field.BRANCH_CONTINUE_STEP, False),
                        )
                        runs.append(BranchedRun(cycle_run(s, method, x, y, c), overrides, source))
    return runs


def write_design(folder: str, study) -> None:
    """`folder/basin.json`; a folder that holds another design is refused."""
    from experiments import branched

    branched.write_design(folder, BASIN_FILE, design(study))
