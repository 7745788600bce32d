"""The experiment configuration: its fields, their defaults, and the names code uses for them.

Configs are `ml_collections.ConfigDict`s built by Python files in `experiments/configs/`
(big_vision style). Every field is listed in `default_config`, so an unknown key passed as
`--config.some.key=v` is rejected by `config_flags` before anything runs.

This module is a leaf: it imports nothing of earlyjax (nor JAX), so loading a config file is
cheap. The values are checked against the registries (tasks, data sets, models, optimizers,
recordable metrics) by `earlyjax.validation.validate`, once per run, before anything is read
or written; a failed check is a `ConfigError`.
"""

from __future__ import annotations

from typing import Any

import ml_collections
from ml_collections import config_dict


class Field:
    """Dotted names of the fields that code refers to as strings (overrides, messages' keys,
    `RESUMABLE_CHANGES`): one spelling, checked against `default_config` by the tests."""

    DATA_CACHE_DIR = "data.cache_dir"
    DATA_OOD_SOURCE = "data.ood_source"
    DATA_PRETEXT = "data.pretext"
    MODEL_CHECKPOINT = "model.checkpoint"
    OPTIMIZER_LR = "optimizer.lr"
    LR_SCALE = "optimizer.lr_scale"
    LR_SWITCH = "optimizer.lr_switch"
    LR_SWITCH_STEP = "optimizer.lr_switch_step"
    LR_SWITCH_ADAPTIVE = "optimizer.lr_switch_adaptive"
    LR_SWITCH_HOLD = "optimizer.lr_switch_hold"
    UNFREEZE_K = "unfreeze.k"
    UNFREEZE_HEAD_ONLY = "unfreeze.head_only"
    UNFREEZE_ADAPTIVE = "unfreeze.adaptive"
    RECORD_EVERY = "record.every"
    RECORD_UNTIL = "record.until"
    RECORD_METRICS = "record.metrics"
    FINAL_METRICS = "final.metrics"
    BRANCH_SOURCE = "branch.source"
    BRANCH_STEP = "branch.step"
    BRANCH_TRANSFORM = "branch.transform"
    BRANCH_REINIT = "branch.reinit"
    BRANCH_PRUNE_FROM = "branch.prune_from"
    BRANCH_CONTINUE_STEP = "branch.continue_step"


# Fields that may change between a run and its resumption without changing its results.
RESUMABLE_CHANGES = frozenset(
    {
        "checkpoint_every",
        "keep_checkpoints",
        "progress_bar",
        "eval_batch_size",
        "checkpoint_steps",
        Field.DATA_CACHE_DIR,
    }
)


def default_config() -> ml_collections.ConfigDict:
    """All fields with their defaults; the paper configs override a few of them."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    # image_classification (ResNet/VGG on images) | nli (XLM-R + LoRA on sentence pairs) | qa
    # (XLM-R + LoRA with a span head): the names of earlyjax.tasks.TASKS
    c.task = "image_classification"

    c.data = _data_defaults()
    c.model = _model_defaults()

    c.optimizer = _optimizer_defaults()

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
    # Names of earlyjax.recording.RECORDABLE (also hessian, feature_rank, ...).
    c.record.metrics = ("fisher", "avg_sharpness", "worst_sharpness")
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

    c.branch = _branch_defaults()

    c.batch_size = 128
    c.num_epochs = 1
    c.total_steps = config_dict.placeholder(int)  # overrides num_epochs when set
    c.eval_every = 0  # steps between ID evaluations during training; 0 = only at the end
    c.eval_batch_size = 500
    c.log_every = 10
    c.checkpoint_every = 500
    c.keep_checkpoints = 2
    # Named steps whose checkpoints are kept beside the newest `keep_checkpoints` (rewinding
    # points and early-phase telemetry: e.g. (0, 50, 100, 250, 500, 1000, 2000)).
    c.checkpoint_steps = ()
    c.progress_bar = True
    return c


def _data_defaults() -> ml_collections.ConfigDict:
    """The `data` block of `default_config`."""
    g = ml_collections.ConfigDict()
    g.name = "digits"  # images: a name of earlyjax.data.NUM_CLASSES
    g.source = "embedded"  # embedded (digits only) | tfds | local
    g.data_dir = config_dict.placeholder(str)  # tfds data_dir, or the local files' folder
    # generated | tfds | local (CIFAR-10/100-C .npy) | none; images only: the text tasks
    # always evaluate their other languages (auto-k's signal runs drop them).
    g.ood_source = "generated"
    g.ood_dir = config_dict.placeholder(str)  # folder of CIFAR-10-C / CIFAR-100-C .npy
    g.ood_severities = (1, 2, 3, 4, 5)
    # Corruptions the OOD mean covers: "benchmark" (CIFAR-10/100-C: Hendrycks & Dietterich's 15;
    # MNIST-C: its 15) | "all" (CIFAR: the 19, + speckle_noise, gaussian_blur, spatter,
    # saturate) | comma-separated names, e.g. "fog,snow" (earlyjax.data.ood_corruptions).
    g.ood_corruptions = "benchmark"
    g.ood_max_examples = config_dict.placeholder(int)  # per OOD split; None = all
    g.cache_dir = config_dict.placeholder(str)  # generated corruptions; default ~/.cache
    g.augment = False  # pad-4 random crop + horizontal flip (the paper's CIFAR setting)
    # Keep only these classes (every split, OOD included), class classes[i] relabelled i;
    # (): all. E.g. (0, 1, 2, 3, 4) and (5, 6, 7, 8, 9): two tasks for transfer learning.
    g.classes = ()
    # Frankle et al. 2020 §6 pre-training task, on the image task's data (image_classification.py):
    # none | random_labels (fixed, seeded) | rotation (predict k·90°, 4-way head) | blur
    g.pretext = "none"
    g.blur_factor = 4  # blur: down-sample by this factor (block mean), then up-sample back
    g.max_length = 128  # nli: tokens per sentence pair; qa: per window (paper: 384)
    # qa: tokens shared by consecutive windows of a context; None: max_length // 3 (the
    # paper's 128 of 384)
    g.doc_stride = config_dict.placeholder(int)
    return g


def _optimizer_defaults() -> ml_collections.ConfigDict:
    """The `optimizer` block of `default_config`."""
    g = ml_collections.ConfigDict()
    g.name = "sgd"  # sgd (PyTorch's; the image settings) | adamw (the XLM-R settings)
    # constant | linear (to 0 at the last step, no warm-up) | multistep (x gamma at milestones)
    # | cosine (to 0, stepped per epoch) | warmup_cosine (linear warm-up, then per-step cosine)
    g.schedule = "constant"
    g.milestone_epochs = ()  # multistep: epochs (fractions allowed) of each x gamma
    g.gamma = 0.1
    g.warmup_epochs = 0.0  # warmup_cosine: epochs (fractions allowed) of warm-up
    g.lr = 0.1  # lr_d of Table 5
    g.lr_scale = 1.0  # 1.0 (lr_d) or 0.1 (0.1*lr_d)
    g.momentum = 0.0
    g.weight_decay = 0.0
    g.lr_switch = config_dict.placeholder(str)  # None | l2h | h2l (§7.1)
    g.lr_switch_step = config_dict.placeholder(int)
    # Instead of a step: switch when this recorded metric stabilises (earlyjax/adaptive.py) ...
    g.lr_switch_adaptive = config_dict.placeholder(str)
    # ... or never: the first learning rate all run (auto-k's signal run for the LR switch).
    g.lr_switch_hold = False
    return g


def _branch_defaults() -> ml_collections.ConfigDict:
    """The `branch` block of `default_config`: a run that starts from another run's checkpoint
    (earlyjax/branch.py; Frankle et al. 2020's rewinding, perturbations and IMP levels)."""
    g = ml_collections.ConfigDict()
    g.source = config_dict.placeholder(str)  # the workdir branched from; None: a run from init
    g.step = "end"  # the source's checkpoint: a step number ("500") or "end"
    # True: the branch continues the source's step, schedule and data order (rewinding, IMP);
    # False: it starts at step 0 with its own (fine-tuning, possibly on other data: a head of
    # another size is re-initialised with branch.reinit).
    g.continue_step = True
    # A weight transform of earlyjax.weight_transforms.TRANSFORMS, applied at the branch point.
    g.transform = "identity"
    g.transform_scale = 1.0  # gaussian_noise: the noise std in units of sigma_init(layer)
    # Parameter path prefixes initialised afresh at the branch (e.g. "head" after rotation
    # pre-training, whose 4-way head the main task's replaces): comma-separated.
    g.reinit = ""
    # IMP: the workdir of the run whose final weights (and mask) are pruned for this branch's
    # mask (the previous level); None: no mask.
    g.prune_from = config_dict.placeholder(str)
    g.prune_fraction = 0.2  # of the weights that remain, globally (open_lth: 0.2)
    # Path prefixes never pruned: "default" (open_lth's for the model), "" (none) or
    # comma-separated prefixes, e.g. "head".
    g.prune_exclude = "default"
    return g


def _model_defaults() -> ml_collections.ConfigDict:
    """The `model` block of `default_config`."""
    g = ml_collections.ConfigDict()
    g.name = "resnet18"
    g.width = 64
    g.init = "pytorch"  # pytorch | flax | kaiming_normal | open_lth (earlyjax/models/init.py)
    # nli/qa (model.name "xlmr"): a Hugging Face XLM-R folder; None: random, `width` x
    # `layers`. image_classification (model.name "resnet50"): a torchvision / timm ResNet-50
    # state dict (.safetensors, or .pt/.pth/.bin/.ckpt read with torch's weights-only loader)
    # whose backbone and BatchNorm statistics start the run, with a fresh head; None: random.
    g.checkpoint = config_dict.placeholder(str)
    g.layers = 4
    g.lora_r = 8
    g.lora_alpha = 8.0
    g.lora_dropout = 0.2
    return g


class ConfigError(ValueError):
    """A config value that cannot work; the message names the value and the fix."""


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
