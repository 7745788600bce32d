"""The config's values checked against what earlyjax has: one place, one call per run.

`validate(config)` raises a `ConfigError` (earlyjax.config) naming the value and the fix for
any field that cannot work: the task, data and model fields first (`validate_task`: what
building the task reads, so a bad value is named before any data is read), then the
optimizer, the interventions and their removal, recording and the run's sizes. The names it
accepts come from the registries that define them: `earlyjax.tasks.TASKS` (and the image
task's `PRETEXTS`), the data sets of `earlyjax.data.NUM_CLASSES` and its sources,
`earlyjax.models.MODELS`, the optimizers and LR switches of `earlyjax.interventions`, and
`earlyjax.recording.RECORDABLE`.

`earlyjax.train.train_and_evaluate` calls it once per run, before the workdir is touched;
below it (building the task, loading the data, `earlyjax.plan.make_plan`) nothing checks a
value again: the plan checks only what needs the data and the devices (run length, batch
sizes the devices divide, a schedule that ends inside the run). `build_task` and `setup`,
called on their own, check what they read first. Auto-k checks its signal config here too.
"""

from __future__ import annotations

import os

import ml_collections

from earlyjax.config import ConfigError, Field
from earlyjax.data import (
    DATA_SOURCES,
    IMAGE_SHAPE,
    NUM_CLASSES,
    OOD_SOURCES,
    DataConfigError,
    check_data_config,
)
from earlyjax.interventions import LR_SCHEDULES, LR_SWITCH_DIRECTIONS, OPTIMIZERS
from earlyjax.models import MODELS
from earlyjax.models.init import INIT_STYLES
from earlyjax.models.resnet_checkpoint import CHECKPOINT_SUFFIXES
from earlyjax.models.xlmr_checkpoint import PREPARE as XLMR_PREPARE
from earlyjax.recording import RECORDABLE, check_record_config
from earlyjax.tasks import TASKS
from earlyjax.tasks.image_classification import PRETEXTS, blur_factor_problem
from earlyjax.weight_transforms import TRANSFORMS

# The data sets each transformer task trains on; those that need a pre-trained XLM-R (its
# tokenizer): the paper's data.
TEXT_DATASETS = {"nli": ("synthetic_nli", "mnli"), "qa": ("synthetic_qa", "squad")}
NEEDS_CHECKPOINT = ("mnli", "squad")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def check_task_name(config: ml_collections.ConfigDict) -> None:
    """ConfigError unless config.task names a task of `earlyjax.tasks.TASKS`."""
    names = tuple(TASKS)
    _check(config.task in TASKS, f"unknown task {config.task!r}: choose one of {names}")


def validate_task(config: ml_collections.ConfigDict) -> None:
    """ConfigError for impossible task, data and model fields: what building the task reads
    (`earlyjax.train.build_task`), checked before any data is."""
    check_task_name(config)
    if config.task in TEXT_DATASETS:
        _check_text(config)
    else:
        _check_images(config.data, config.model)
    _check_pretext(config)
    _check(config.model.width >= 1, f"model.width must be >= 1, got {config.model.width}")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for impossible values (data-dependent checks: `plan.make_plan`)."""
    validate_task(config)
    _check_optimizer(config.optimizer)
    _check_removal(config)
    _check_run(config)
    _check_branch(config)


def _check_images(d, m) -> None:
    """The data and model fields of the image task."""
    datasets = tuple(NUM_CLASSES)
    _check(
        d.name in NUM_CLASSES,
        f"unknown dataset {d.name!r}: set --config.data.name to one of {datasets}",
    )
    _check(
        d.source in DATA_SOURCES,
        f"unknown data source {d.source!r}: set --config.data.source to one of {DATA_SOURCES}",
    )
    _check(
        (d.name == "digits") == (d.source == "embedded"),
        f"data.source={d.source!r} does not fit data.name={d.name!r}: the embedded source "
        "holds only 'digits'; use tfds or local for the others",
    )
    _check(
        d.ood_source in OOD_SOURCES,
        f"unknown OOD source {d.ood_source!r}: set "
        f"--config.data.ood_source to one of {OOD_SOURCES}",
    )
    _check(
        len(d.ood_severities) > 0 and all(s in (1, 2, 3, 4, 5) for s in d.ood_severities),
        f"data.ood_severities must be a non-empty subset of 1..5, got {d.ood_severities}",
    )
    _check(
        d.ood_max_examples is None or d.ood_max_examples >= 1,
        f"data.ood_max_examples must be None or >= 1, got {d.ood_max_examples}",
    )
    try:
        check_data_config(d)
    except DataConfigError as e:
        raise ConfigError(str(e)) from None
    classes, total = tuple(d.classes), NUM_CLASSES[d.name]
    _check(
        all(isinstance(c, int) and 0 <= c < total for c in classes)
        and len(set(classes)) == len(classes)
        and len(classes) != 1,
        f"data.classes must be () (all) or >= 2 distinct class indices in [0, {total}) of "
        f"{d.name}, got {classes}: e.g. --config.data.classes='(0, 1, 2, 3, 4)'",
    )
    _check(
        m.name in MODELS,
        f"unknown model {m.name!r}: set --config.model.name to one of {sorted(MODELS)}",
    )
    _check(m.init in INIT_STYLES, f"unknown model.init {m.init!r}; choose one of {INIT_STYLES}")
    if m.checkpoint:
        _check_image_checkpoint(m)


def _check_image_checkpoint(m) -> None:
    """model.checkpoint of the image task: a ResNet-50 checkpoint file with a known suffix
    (earlyjax.models.resnet_checkpoint), for model.name "resnet50"."""
    _check(
        m.name == "resnet50",
        f"model.checkpoint={m.checkpoint!r} is a torchvision / timm ResNet-50 checkpoint, for "
        f"--config.model.name=resnet50, not {m.name!r}: set the model or unset model.checkpoint",
    )
    suffix = os.path.splitext(m.checkpoint)[1].lower()
    _check(
        suffix in CHECKPOINT_SUFFIXES,
        f"model.checkpoint={m.checkpoint!r} has suffix {suffix!r}: give a file ending in one of "
        f"{CHECKPOINT_SUFFIXES}",
    )
    _check(
        os.path.isfile(m.checkpoint),
        f"model.checkpoint={m.checkpoint!r} is not a file: check the path (e.g. a torchvision "
        "resnet50 state dict saved with torch.save, or a timm model.safetensors)",
    )


def _check_pretext(config) -> None:
    """data.pretext and data.blur_factor (earlyjax.tasks.image_classification): a known name,
    the image task only, square images for rotation, a blur factor that divides the images."""
    d = config.data
    _check(
        d.pretext in PRETEXTS,
        f"unknown data.pretext {d.pretext!r}: set --config.data.pretext to one of {PRETEXTS}",
    )
    if d.pretext == "none":
        return
    _check(
        config.task == "image_classification",
        f"data.pretext={d.pretext!r} transforms images: it is for task image_classification, "
        f"not {config.task!r}; set --config.data.pretext=none",
    )
    h, w, _ = IMAGE_SHAPE[d.name]
    _check(
        d.pretext != "rotation" or h == w,
        f"data.pretext='rotation' needs square images; {d.name} images are {h}x{w}: choose "
        "another pretext",
    )
    if d.pretext == "blur":
        problem = blur_factor_problem(d.blur_factor, h, w, f"{d.name} images")
        _check(problem is None, str(problem))


def _check_text(config) -> None:
    """The data and model fields of the transformer tasks (XLM-R + LoRA: nli, qa)."""
    d, m, task = config.data, config.model, config.task
    _check(
        d.name in TEXT_DATASETS[task],
        f"task {task} trains on data.name in {TEXT_DATASETS[task]}, got {d.name!r}",
    )
    _check(m.name == "xlmr", f"task {task} needs --config.model.name=xlmr, got {m.name!r}")
    _check(
        d.name not in NEEDS_CHECKPOINT or bool(m.checkpoint),
        f"data.name={d.name!r} needs a pre-trained XLM-R: " + XLMR_PREPARE,
    )
    _check(m.layers >= 2, f"model.layers must be >= 2 (one trains with the head), got {m.layers}")
    _check(
        m.width % 4 == 0, f"model.width must be a multiple of 4 (attention heads), got {m.width}"
    )
    _check(m.lora_r >= 1, f"model.lora_r must be >= 1, got {m.lora_r}")
    _check(0 <= m.lora_dropout < 1, f"model.lora_dropout must be in [0, 1), got {m.lora_dropout}")
    _check(d.max_length >= 8, f"data.max_length must be >= 8, got {d.max_length}")
    _check(
        not config.unfreeze.freeze_bn_stats,
        "unfreeze.freeze_bn_stats is for BatchNorm; XLM-R has none: leave it False",
    )
    if task == "qa":
        _check(
            d.doc_stride is None or 0 <= d.doc_stride < d.max_length,
            f"data.doc_stride={d.doc_stride} must be in [0, data.max_length={d.max_length})",
        )
        features = sorted(
            {"feature_rank", "feature_eigenvalue"} & {*config.record.metrics, *config.final.metrics}
        )
        _check(
            not features,
            f"{', '.join(features)}: feature metrics are the classification head's pooled "
            "features, and task qa has a span head; leave them out of record.metrics and "
            "final.metrics",
        )


def _check_optimizer(o: ml_collections.ConfigDict) -> None:
    """The optimizer block, the LR switch included."""
    _check(o.lr > 0, f"optimizer.lr must be > 0, got {o.lr}")
    _check(o.lr_scale > 0, f"optimizer.lr_scale must be > 0 (paper: 1.0 or 0.1), got {o.lr_scale}")
    _check(0 <= o.momentum < 1, f"optimizer.momentum must be in [0, 1), got {o.momentum}")
    _check(o.name in OPTIMIZERS, f"unknown optimizer.name {o.name!r}: choose one of {OPTIMIZERS}")
    _check(
        o.schedule in LR_SCHEDULES,
        f"unknown optimizer.schedule {o.schedule!r}: choose one of {LR_SCHEDULES}",
    )
    milestones = tuple(o.milestone_epochs)
    _check(
        all(isinstance(e, int | float) and e > 0 for e in milestones)
        and list(milestones) == sorted(set(milestones)),
        f"optimizer.milestone_epochs must be increasing epochs > 0, got {milestones}: e.g. "
        "--config.optimizer.milestone_epochs='(80, 120)'",
    )
    _check(
        o.schedule == "multistep" or not milestones,
        f"optimizer.milestone_epochs={milestones} needs --config.optimizer.schedule=multistep",
    )
    _check(0 < o.gamma <= 1, f"optimizer.gamma must be in (0, 1], got {o.gamma}")
    _check(o.warmup_epochs >= 0, f"optimizer.warmup_epochs must be >= 0, got {o.warmup_epochs}")
    _check(
        o.schedule == "warmup_cosine" or not o.warmup_epochs,
        f"optimizer.warmup_epochs={o.warmup_epochs} needs "
        "--config.optimizer.schedule=warmup_cosine",
    )
    _check(
        o.name != "adamw" or o.momentum == 0,
        f"optimizer.momentum={o.momentum} is SGD's; AdamW uses PyTorch's default betas "
        "(0.9, 0.999): leave --config.optimizer.momentum at 0",
    )
    _check(o.weight_decay >= 0, f"optimizer.weight_decay must be >= 0, got {o.weight_decay}")
    _check(
        o.lr_switch in (None, *LR_SWITCH_DIRECTIONS),
        f"unknown optimizer.lr_switch "
        f"{o.lr_switch!r}; choose None or one of {LR_SWITCH_DIRECTIONS}",
    )
    if o.lr_switch is None:
        _check(
            o.lr_switch_step is None and o.lr_switch_adaptive is None and not o.lr_switch_hold,
            "optimizer.lr_switch_step, lr_switch_adaptive and lr_switch_hold need "
            "--config.optimizer.lr_switch=l2h (or h2l)",
        )
        return
    ways = [o.lr_switch_step is not None, o.lr_switch_adaptive is not None, o.lr_switch_hold]
    _check(
        sum(ways) == 1,
        f"optimizer.lr_switch={o.lr_switch!r} needs exactly one of "
        "--config.optimizer.lr_switch_step (>= 1), lr_switch_adaptive (a recorded metric) "
        f"and lr_switch_hold=True; got step={o.lr_switch_step}, "
        f"adaptive={o.lr_switch_adaptive}, hold={o.lr_switch_hold}",
    )
    _check(
        o.lr_switch_step is None or o.lr_switch_step >= 1,
        f"optimizer.lr_switch={o.lr_switch!r} needs --config.optimizer.lr_switch_step >= 1, "
        f"got {o.lr_switch_step}",
    )


def _check_removal(config: ml_collections.ConfigDict) -> None:
    """Gradual unfreezing, recording (`earlyjax.recording.check_record_config`), the final
    metrics and adaptive removal, which needs its metric recorded."""
    k, u = config.unfreeze.k, config.unfreeze
    _check(
        k is None or k >= 1,
        f"unfreeze.k must be None (standard training) or an int >= 1, "
        f"got {k}: set --config.unfreeze.k=100, say",
    )
    problems = check_record_config(config.record)
    _check(not problems, "; ".join(problems))
    unknown = sorted(set(config.final.metrics) - set(RECORDABLE))
    _check(not unknown, f"unknown final.metrics {unknown}: choose from {RECORDABLE}")
    _check(
        not (u.head_only and k is not None),
        f"unfreeze.head_only=True trains only the head and ignores k; unset one (k={k})",
    )
    if u.adaptive is not None:
        _check(
            k is None and not u.head_only,
            f"unfreeze.adaptive={u.adaptive!r} sets the schedule itself: unset unfreeze.k ({k}) "
            "and unfreeze.head_only",
        )
    adaptive = {
        Field.UNFREEZE_ADAPTIVE: u.adaptive,
        Field.LR_SWITCH_ADAPTIVE: config.optimizer.lr_switch_adaptive,
    }
    adaptive = {field: metric for field, metric in adaptive.items() if metric is not None}
    _check(
        len(adaptive) <= 1,
        f"{' and '.join(adaptive)} are both set: adaptive removal drives one intervention "
        "per run; unset one",
    )
    for field, metric in adaptive.items():
        _check(
            config.record.every > 0 and metric in config.record.metrics,
            f"{field}={metric!r} needs that metric recorded: set --config.record.every=10 "
            f"and include {metric!r} in record.metrics (now {tuple(config.record.metrics)})",
        )


def _check_run(config: ml_collections.ConfigDict) -> None:
    """Algorithm 2's parameters, the seed, the run length, the sizes and the periods."""
    st = config.stabilization
    _check(
        isinstance(st.tau, int) and st.tau >= 1,
        f"stabilization.tau must be an int >= 1 (paper: 3 or 8), got {st.tau}",
    )
    _check(st.eps > 0, f"stabilization.eps must be > 0 (paper: 0.02), got {st.eps}")
    _check(
        st.rapid_eps >= st.eps,
        f"stabilization.rapid_eps ({st.rapid_eps}) must be >= stabilization.eps ({st.eps})",
    )
    _check(
        isinstance(config.seed, int) and 0 <= config.seed < 2**31,
        f"seed must be an int in [0, 2**31), got {config.seed!r}: set --config.seed=0, say",
    )
    _check(config.batch_size >= 1, f"batch_size must be >= 1, got {config.batch_size}")
    _check(config.num_epochs >= 1, f"num_epochs must be >= 1, got {config.num_epochs}")
    _check(
        config.total_steps is None or config.total_steps >= 1,
        f"total_steps must be None or >= 1, got {config.total_steps}",
    )
    for name in ("eval_every", "log_every", "checkpoint_every"):
        _check(config[name] >= 0, f"{name} must be >= 0, got {config[name]}")
    _check(config.log_every >= 1, f"log_every must be >= 1, got {config.log_every}")
    _check(
        config.keep_checkpoints >= 1,
        f"keep_checkpoints must be >= 1, got {config.keep_checkpoints}",
    )
    _check(
        config.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {config.eval_batch_size}"
    )


def _check_branch(config: ml_collections.ConfigDict) -> None:
    """The branch block (earlyjax.branch) and the named checkpoint steps; whether the source
    runs exist is checked when the run opens (`earlyjax.branch.check_sources`)."""
    steps = tuple(config.checkpoint_steps)
    _check(
        all(isinstance(s, int) and s >= 0 for s in steps),
        f"checkpoint_steps must be steps >= 0, got {steps}: e.g. "
        "--config.checkpoint_steps='(0, 100, 500)'",
    )
    b = config.branch
    step_ok = b.step == "end" or (isinstance(b.step, str) and b.step.isdigit())
    _check(step_ok, f"branch.step must be a step number or 'end', got {b.step!r}")
    _check(
        b.transform in TRANSFORMS,
        f"unknown branch.transform {b.transform!r}: choose one of {sorted(TRANSFORMS)}",
    )
    _check(b.transform_scale >= 0, f"branch.transform_scale must be >= 0, got {b.transform_scale}")
    _check(
        0 < b.prune_fraction < 1,
        f"branch.prune_fraction must be in (0, 1) (open_lth: 0.2), got {b.prune_fraction}",
    )
    if b.source is None:
        changed = [
            name
            for name, value in (
                (Field.BRANCH_PRUNE_FROM, b.prune_from),
                (Field.BRANCH_REINIT, b.reinit or None),
            )
            if value is not None
        ]
        if b.transform != "identity":
            changed.append(Field.BRANCH_TRANSFORM)
        _check(
            not changed,
            f"{', '.join(changed)} act at a branch point: set --config.{Field.BRANCH_SOURCE} "
            "to the workdir of the run to branch from",
        )
    _check(
        config.task == "image_classification" or (b.source is None),
        f"branch.source needs task image_classification, got task {config.task!r}",
    )
