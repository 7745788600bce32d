"""The experiment configuration: defaults, and validation with messages that name the fix.

Configs are `ml_collections.ConfigDict`s built by Python files in `experiments/configs/`
(big_vision style). Every field is listed in `default_config`, so an unknown key passed as
`--config.some.key=v` is rejected by `config_flags` before anything runs.
"""

from __future__ import annotations

from typing import Any

import ml_collections
from ml_collections import config_dict

from earlyjax.data import DataConfigError, check_data_config
from earlyjax.interventions import LR_SCHEDULES, LR_SWITCH_DIRECTIONS, OPTIMIZERS
from earlyjax.models import MODELS
from earlyjax.models.init import INIT_STYLES
from earlyjax.models.xlmr_checkpoint import PREPARE as XLMR_PREPARE
from earlyjax.recording import RECORDABLE, check_record_config

DATASETS = ("digits", "mnist", "cifar10", "cifar100")
TASKS = ("image_classification", "nli", "qa")
TEXT_DATASETS = {"nli": ("synthetic_nli", "mnli"), "qa": ("synthetic_qa", "squad")}
NEEDS_CHECKPOINT = ("mnli", "squad")  # the paper's data: a pre-trained model's tokenizer
DATA_SOURCES = ("embedded", "tfds", "local")
OOD_SOURCES = ("generated", "tfds", "local", "none")
# Fields that may change between a run and its resumption without changing its results.
RESUMABLE_CHANGES = frozenset(
    {"checkpoint_every", "keep_checkpoints", "progress_bar", "eval_batch_size", "data.cache_dir"}
)


def default_config() -> ml_collections.ConfigDict:
    """All fields with their defaults; the paper configs override a few of them."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    # image_classification (ResNet/VGG on images) | nli (XLM-R + LoRA on sentence pairs)
    c.task = "image_classification"

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"  # one of DATASETS
    c.data.source = "embedded"  # embedded (digits only) | tfds | local
    c.data.data_dir = config_dict.placeholder(str)  # tfds data_dir, or the local files' folder
    # generated | tfds | local (CIFAR-10/100-C .npy) | none; images only: the text tasks
    # always evaluate their other languages (auto-k's signal runs drop them).
    c.data.ood_source = "generated"
    c.data.ood_dir = config_dict.placeholder(str)  # folder of CIFAR-10-C / CIFAR-100-C .npy
    c.data.ood_severities = (1, 2, 3, 4, 5)
    # Corruptions the OOD mean covers: "benchmark" (CIFAR-10/100-C: Hendrycks & Dietterich's 15;
    # MNIST-C: its 15) | "all" (CIFAR: the 19, + speckle_noise, gaussian_blur, spatter,
    # saturate) | comma-separated names, e.g. "fog,snow" (earlyjax.data.ood_corruptions).
    c.data.ood_corruptions = "benchmark"
    c.data.ood_max_examples = config_dict.placeholder(int)  # per OOD split; None = all
    c.data.cache_dir = config_dict.placeholder(str)  # generated corruptions; default ~/.cache
    c.data.augment = False  # pad-4 random crop + horizontal flip (the paper's CIFAR setting)
    c.data.max_length = 128  # nli: tokens per sentence pair; qa: per window (paper: 384)
    # qa: tokens shared by consecutive windows of a context; None: max_length // 3 (the
    # paper's 128 of 384)
    c.data.doc_stride = config_dict.placeholder(int)

    c.model = ml_collections.ConfigDict()
    c.model.name = "resnet18"
    c.model.width = 64
    c.model.init = "pytorch"  # pytorch | flax
    # nli (model.name "xlmr"): a Hugging Face XLM-R folder; None: random, `width` x `layers`.
    c.model.checkpoint = config_dict.placeholder(str)
    c.model.layers = 4
    c.model.lora_r = 8
    c.model.lora_alpha = 8.0
    c.model.lora_dropout = 0.2

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "sgd"  # sgd (PyTorch's; the image settings) | adamw (the XLM-R settings)
    c.optimizer.schedule = "constant"  # constant | linear (to 0 at the last step, no warm-up)
    c.optimizer.lr = 0.1  # lr_d of Table 5
    c.optimizer.lr_scale = 1.0  # 1.0 (lr_d) or 0.1 (0.1*lr_d)
    c.optimizer.momentum = 0.0
    c.optimizer.weight_decay = 0.0
    c.optimizer.lr_switch = config_dict.placeholder(str)  # None | l2h | h2l (§7.1)
    c.optimizer.lr_switch_step = config_dict.placeholder(int)
    # Instead of a step: switch when this recorded metric stabilises (earlyjax/adaptive.py) ...
    c.optimizer.lr_switch_adaptive = config_dict.placeholder(str)
    # ... or never: the first learning rate all run (auto-k's signal run for the LR switch).
    c.optimizer.lr_switch_hold = False

    c.unfreeze = ml_collections.ConfigDict()
    c.unfreeze.k = config_dict.placeholder(int)  # None: standard training
    c.unfreeze.freeze_bn_stats = False  # True: frozen blocks keep their BN running statistics
    c.unfreeze.head_only = False  # True: only the head trains, all run (auto-k's signal run)
    # A recorded metric (e.g. "fisher"): release each block when it stabilises (adaptive.py).
    c.unfreeze.adaptive = config_dict.placeholder(str)
    # True: allow a schedule that releases a block after the run ends (k * L >= total steps).
    c.unfreeze.allow_late_release = False

    # Algorithm 2 (App. D, earlyjax/stabilization.py), for auto-k and adaptive unfreezing alike.
    c.stabilization = ml_collections.ConfigDict()
    c.stabilization.tau = 3  # moving-average window (paper: 3 or 8)
    c.stabilization.eps = 0.02  # stable: smoothed change <= 2% of the signal's range (paper)
    c.stabilization.rapid_eps = 0.05  # end of the rapid-change phase t_ΔS (ours; see the module)

    c.record = ml_collections.ConfigDict()  # early-period recording (earlyjax/recording.py)
    c.record.every = 0  # steps between recordings; 0 = off (paper: 10)
    c.record.until = 2000  # last step recorded (paper: 2000)
    c.record.metrics = ("fisher", "avg_sharpness", "worst_sharpness")  # + hessian, feature_rank
    c.record.set_size = 2048  # the metric set: the first set_size training examples
    c.record.batch_size = 256
    c.record.rho = 0.01
    c.record.avg_samples = 15
    # S_avg perturbations per vmapped pass (None: one at a time on a CPU, all at once elsewhere).
    c.record.samples_per_pass = config_dict.placeholder(int)
    c.record.worst_iters = 20
    c.record.hessian_iters = 20
    # BatchNorm while recording: "batch" (statistics of the metric set at the current weights;
    # running ones untouched) or "eval" (running statistics, which lag the weights for the first
    # ~50 steps: README, "BatchNorm while recording").
    c.record.bn = "batch"

    # Final-solution analysis (§6.3, App. C, Fig. 5): these metrics of the trained model on the
    # metric set (record.set_size / batch_size / bn / rho / iters), in results.json's
    # "final_solution"; e.g. ("hessian", "avg_sharpness", "worst_sharpness",
    # "feature_eigenvalue"). Empty: off.
    c.final = ml_collections.ConfigDict()
    c.final.metrics = ()

    c.batch_size = 128
    c.num_epochs = 1
    c.total_steps = config_dict.placeholder(int)  # overrides num_epochs when set
    c.eval_every = 0  # steps between ID evaluations during training; 0 = only at the end
    c.eval_batch_size = 500
    c.log_every = 10
    c.checkpoint_every = 500
    c.keep_checkpoints = 2
    c.progress_bar = True
    return c


class ConfigError(ValueError):
    """A config value that cannot work; the message names the value and the fix."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_images(d, m) -> None:
    """The data and model fields of the image task."""
    _check(
        d.name in DATASETS,
        f"unknown dataset {d.name!r}: set --config.data.name to one of {DATASETS}",
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
    _check(
        m.name in MODELS,
        f"unknown model {m.name!r}: set --config.model.name to one of {sorted(MODELS)}",
    )
    _check(m.init in INIT_STYLES, f"unknown model.init {m.init!r}; choose one of {INIT_STYLES}")


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


def check_task_name(config: ml_collections.ConfigDict) -> None:
    _check(config.task in TASKS, f"unknown task {config.task!r}: choose one of {TASKS}")


def validate_task(config: ml_collections.ConfigDict) -> None:
    """ConfigError for impossible task, data and model fields: what building the task reads
    (`earlyjax.train.build_task`), checked before any data is."""
    check_task_name(config)
    if config.task in TEXT_DATASETS:
        _check_text(config)
    else:
        _check_images(config.data, config.model)
    _check(config.model.width >= 1, f"model.width must be >= 1, got {config.model.width}")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for impossible values (data-dependent checks happen at load time)."""
    o = config.optimizer
    validate_task(config)
    _check(o.lr > 0, f"optimizer.lr must be > 0, got {o.lr}")
    _check(o.lr_scale > 0, f"optimizer.lr_scale must be > 0 (paper: 1.0 or 0.1), got {o.lr_scale}")
    _check(0 <= o.momentum < 1, f"optimizer.momentum must be in [0, 1), got {o.momentum}")
    _check(o.name in OPTIMIZERS, f"unknown optimizer.name {o.name!r}: choose one of {OPTIMIZERS}")
    _check(
        o.schedule in LR_SCHEDULES,
        f"unknown optimizer.schedule {o.schedule!r}: choose one of {LR_SCHEDULES}",
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
    else:
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
    k = config.unfreeze.k
    _check(
        k is None or k >= 1,
        f"unfreeze.k must be None (standard training) or an int >= 1, "
        f"got {k}: set --config.unfreeze.k=100, say",
    )
    problems = check_record_config(config.record)
    _check(not problems, "; ".join(problems))
    unknown = sorted(set(config.final.metrics) - set(RECORDABLE))
    _check(
        not unknown,
        f"unknown final.metrics {unknown}: choose from {RECORDABLE}",
    )
    _check(
        not (config.unfreeze.head_only and k is not None),
        f"unfreeze.head_only=True trains only the head and ignores k; unset one (k={k})",
    )
    a = config.unfreeze.adaptive
    if a is not None:
        _check(
            k is None and not config.unfreeze.head_only,
            f"unfreeze.adaptive={a!r} sets the schedule itself: unset unfreeze.k ({k}) and "
            "unfreeze.head_only",
        )
    adaptive = {"unfreeze.adaptive": a, "optimizer.lr_switch_adaptive": o.lr_switch_adaptive}
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


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b": v} for a nested dict (or ConfigDict.to_dict()); tuples become lists."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def differing_fields(saved: dict, current: dict) -> list[str]:
    """Fields (dotted) whose values differ between two configs, ignoring RESUMABLE_CHANGES
    (a field that one of them lacks differs: `<missing>`)."""
    a = flatten(saved)
    b = flatten(current)
    names = sorted(set(a) | set(b))
    return [
        f"{n}: {a.get(n, '<missing>')!r} -> {b.get(n, '<missing>')!r}"
        for n in names
        if n not in RESUMABLE_CHANGES and a.get(n, "<missing>") != b.get(n, "<missing>")
    ]
