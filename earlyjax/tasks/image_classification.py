"""Image classification (the paper's §4 "Simple Setup"): ResNet-18 / VGG-11 (or Frankle et
al. 2020's ResNet-20 / LeNet-300-100, or torchvision's ResNet-50) on MNIST, CIFAR-10/100 or the
embedded digits, evaluated on the clean test set (ID) and every corruption x severity split of
the OOD set (MNIST-C, CIFAR-10/100-C or generated ones).

Inputs are uint8 images normalised per channel with the training set's statistics; with
`augment`, the train step applies a pad-4 random crop and horizontal flip. The model's
BatchNorm running statistics are the task's model state (empty for a model without
BatchNorm, e.g. LeNet-300-100).

Fine-tuning (Sadrtdinov et al. 2023): with `checkpoint` (`--config.model.checkpoint`, a
torchvision / timm ResNet-50 state dict; model "resnet50"), the initial backbone, its params
and its BatchNorm running statistics, is the checkpoint's
(`earlyjax.models.resnet_checkpoint.load_resnet50`), and the head is a fresh one for the data
set's classes, drawn with `model.init` as without a checkpoint.

Pre-training ("pretext") tasks of Frankle, Schwab & Morcos 2020 (§6, data dependence), chosen
by `pretext` (`--config.data.pretext`), transform the data, so each composes with any image
model; the run then trains and reports on the pretext task (results.json's "pretext", and
"id_set" and "ood_set" say what was scored):
- "random_labels": every training example gets a fixed label drawn uniformly from
  [0, num_classes) once, by numpy's `default_rng([seed, RANDOM_LABELS_STREAM])` (the run's
  seed); the test and OOD sets keep their true labels, so the reported accuracy is near chance.
- "rotation": self-supervised rotation prediction with a 4-way head. Each step, every training
  image (after the augmentation) is rotated by k·90° (`np.rot90`'s sense: counter-clockwise, on
  H and W) with k drawn per image from the step's key (`rotation_key`: independent of the
  augmentation's key), and labelled k (0..3). The test, OOD and metric sets become rotation
  prediction with a FIXED rotation per image, drawn once at build by
  `default_rng([ROTATION_SEED, stream])`, independent of the run's seed (as the generated OOD
  sets are), so every run of a sweep is scored on the same images; an OOD split's image i
  gets the rotation of test image i. The stored training images stay upright, labelled 0.
  Images must be square.
- "blur": every image (train, test, OOD) is down-sampled by `blur_factor` (the mean of each
  factor x factor block) and up-sampled back to its size with `jax.image.resize`'s bilinear
  interpolation (half-pixel centres; at the border the nearest block's value), once at build,
  rounded back to uint8. Labels are unchanged.
open_lth's versions are not copied: its blur pre-training raises and its "rotation" rotates by
a random angle within ±90·label° (../shared/DESIGN.md, "Papers 2 and 3").
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import Mesh

from earlyjax.config import ConfigError
from earlyjax.data.base import Dataset, Split
from earlyjax.data.pipeline import (
    channel_stats,
    metric_set,
    normalize,
    random_crop_flip,
    train_batches,
)
from earlyjax.models import HEAD, MODELS, build_model
from earlyjax.models.init import BN_MOMENTUM
from earlyjax.models.resnet_checkpoint import load_resnet50
from earlyjax.tasks.base import ClassificationTask


class ModelDoesNotFit(ValueError):
    """The model cannot take the data set's images; the message names both."""


# --- pretext tasks (Frankle et al. 2020, §6; the module docstring) -----------------------------

PRETEXTS = ("none", "random_labels", "rotation", "blur")
ROTATIONS = 4  # the rotation task's classes: k·90° for k = 0..3
# numpy streams, default_rng([seed, stream]): above any epoch index, so never an epoch's shuffle
# (default_rng([seed, epoch]), earlyjax.data.pipeline).
RANDOM_LABELS_STREAM = 2**40 + 1
ROTATION_SEED = 0  # the fixed rotations do not depend on the run's seed
EVAL_ROTATION_STREAM = 2**40 + 2  # test and OOD sets (one rotation per test index)
METRIC_ROTATION_STREAM = 2**40 + 3  # the metric set (the first training examples)
# fold_in(step key, this) is the rotations' key; the augmentation uses split(step key), which
# is fold_in(step key, 0) and (.., 1) under JAX's partitionable threefry: a large constant keeps
# the two apart.
ROTATION_KEY_STREAM = 0x726F7461  # "rota"
# What the ID set of a pretext run is (results.json's "id_set"; format_results prints it).
PRETEXT_ID_SET = {
    "random_labels": "clean test set, true labels (trained on random labels)",
    "rotation": "clean test set, rotation prediction (a fixed multiple of 90° per image)",
    "blur": "clean test set, blurred: down-sampled x{factor}, bilinear up-sampled",
}
PRETEXT_OOD_SET = {
    "rotation": "rotation prediction (a fixed multiple of 90° per image)",
    "blur": "blurred: down-sampled x{factor}, bilinear up-sampled",
}


def random_labels(n: int, num_classes: int, seed: int) -> np.ndarray:
    """int32 [n]: one label per example, uniform in [0, num_classes), fixed by `seed` (numpy
    `default_rng([seed, RANDOM_LABELS_STREAM])`)."""
    rng = np.random.default_rng([seed, RANDOM_LABELS_STREAM])
    return rng.integers(0, num_classes, n, dtype=np.int32)


def rotation_key(key: jax.Array) -> jax.Array:
    """The key of a train step's rotations, from the step's key (which the augmentation
    splits): `fold_in(key, ROTATION_KEY_STREAM)`."""
    return jax.random.fold_in(key, ROTATION_KEY_STREAM)


def rotate(images: jax.Array, k: jax.Array) -> jax.Array:
    """Image i of [N, H, H, C] rotated by k[i]·90° counter-clockwise (`np.rot90(image, k[i])`
    on H, W); k: int [N] in 0..3. Same shape and dtype (square images)."""
    chex.assert_rank(images, 4)
    chex.assert_shape(k, (images.shape[0],))
    k = k.reshape(-1, 1, 1, 1)
    rotated = images
    for r in range(1, ROTATIONS):  # an elementwise select: a batch split over devices stays so
        rotated = jnp.where(k == r, jnp.rot90(images, r, axes=(1, 2)), rotated)
    return rotated


def random_rotations(key: jax.Array, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(images [N, H, H, C] each rotated by k·90°, labels k: int32 [N]), k uniform in 0..3
    from `key`: the rotation task's train batch."""
    k = jax.random.randint(key, (images.shape[0],), 0, ROTATIONS, dtype=jnp.int32)
    return rotate(images, k), k


def fixed_rotations(split: Split, stream: int, num: int | None = None) -> Split:
    """The split as rotation prediction: image i rotated by k_i·90° (`np.rot90`, on H, W) and
    labelled k_i, with k = default_rng([ROTATION_SEED, stream]).integers(0, 4, num)[:N] (`num`
    >= N draws for a longer set, so that splits of one set agree index by index)."""
    images = np.asarray(split.images)
    n = images.shape[0]
    rng = np.random.default_rng([ROTATION_SEED, stream])
    k = rng.integers(0, ROTATIONS, max(n, num or 0), dtype=np.int32)[:n]
    rotated = images.copy()
    for r in range(1, ROTATIONS):  # four vectorised rotations, not a loop over examples
        rotated[k == r] = np.rot90(images[k == r], r, axes=(1, 2))
    return Split(rotated, k)


BLUR_CHUNK = 4096  # images blurred at a time (bounds the float32 copy)


def blur_factor_problem(factor: Any, height: int, width: int, what: str = "images") -> str | None:
    """Why `factor` cannot blur height x width images (an int >= 2 dividing both), or None."""
    is_int = isinstance(factor, int) and not isinstance(factor, bool)
    if is_int and factor >= 2 and height % factor == 0 and width % factor == 0:
        return None
    common = math.gcd(height, width)
    fits = tuple(f for f in range(2, common + 1) if common % f == 0)
    return (
        f"data.blur_factor must be an int >= 2 that divides the {height}x{width} {what}, got "
        f"{factor!r}: set --config.data.blur_factor to one of {fits}"
    )


def upsample_matrix(size: int, small: int) -> np.ndarray:
    """float32 [size, small]: `jax.image.resize`'s bilinear up-sampling of a length-`small`
    signal to `size` as a matrix (the resize is linear; its columns are the resized unit
    vectors)."""
    eye = jnp.eye(small, dtype=jnp.float32)
    return np.asarray(jax.image.resize(eye, (size, small), "bilinear"))


def blur(images: np.ndarray, factor: int) -> np.ndarray:
    """uint8 [N, H, W, C] -> uint8 [N, H, W, C]: the mean of each factor x factor block
    (area down-sampling to H/factor x W/factor), up-sampled back with `jax.image.resize`'s
    bilinear interpolation, rounded to the nearest integer. ConfigError unless `factor` is an
    int >= 2 that divides H and W."""
    n, h, w, c = images.shape
    problem = blur_factor_problem(factor, h, w)
    if problem:
        raise ConfigError(problem)
    up_h, up_w = upsample_matrix(h, h // factor), upsample_matrix(w, w // factor)
    out = np.empty_like(images)
    for start in range(0, n, BLUR_CHUNK):  # chunks of images, not a loop over examples
        chunk = images[start : start + BLUR_CHUNK]
        blocks = chunk.reshape(-1, h // factor, factor, w // factor, factor, c)
        small = blocks.mean(axis=(2, 4), dtype=np.float32)
        big = np.einsum("hi,nijc,wj->nhwc", up_h, small, up_w, optimize=True)
        out[start : start + BLUR_CHUNK] = np.clip(np.rint(big), 0, 255).astype(np.uint8)
    return out


def pretext_dataset(dataset: Dataset, pretext: str, *, blur_factor: int, seed: int) -> Dataset:
    """The data set of a pretext task (the module docstring); "none": `dataset` itself.
    ConfigError for an unknown name, a blur_factor that does not divide the images, or
    non-square images for rotation."""
    if pretext not in PRETEXTS:
        raise ConfigError(
            f"unknown data.pretext {pretext!r}: set --config.data.pretext to one of {PRETEXTS}"
        )
    if pretext == "none":
        return dataset
    train, test, ood = dataset.train, dataset.test, dataset.ood
    num_classes, ood_set = dataset.num_classes, dataset.ood_set
    if pretext == "random_labels":
        labels = random_labels(train.labels.shape[0], num_classes, seed)
        return dataclasses.replace(dataset, train=Split(train.images, labels))
    if pretext == "rotation":
        h, w = dataset.image_shape[:2]
        if h != w:
            raise ConfigError(
                f"data.pretext='rotation' rotates by multiples of 90° and needs square images; "
                f"{dataset.name} images are {h}x{w}: choose another pretext"
            )
        num = max([test.images.shape[0], *(s.images.shape[0] for s in ood.values())])
        ood = {cell: fixed_rotations(s, EVAL_ROTATION_STREAM, num) for cell, s in ood.items()}
        test = fixed_rotations(test, EVAL_ROTATION_STREAM, num)
        # Upright training images are rotation 0; the train step rotates them (`train_batch`).
        train = Split(train.images, np.zeros_like(train.labels))
        num_classes = ROTATIONS
    else:  # blur
        ood = {cell: Split(blur(s.images, blur_factor), s.labels) for cell, s in ood.items()}
        test = Split(blur(test.images, blur_factor), test.labels)
        train = Split(blur(train.images, blur_factor), train.labels)
    if ood_set is not None:
        ood_set = f"{ood_set}; {PRETEXT_OOD_SET[pretext].format(factor=blur_factor)}"
    return Dataset(dataset.name, num_classes, train, test, ood, ood_set)


@dataclass(frozen=True, eq=False)
class ImageClassification(ClassificationTask):
    """A classifier trained with cross-entropy on `dataset`; see the module docstring."""

    dataset: Dataset
    model: nn.Module
    blocks: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    augment: bool = False
    head: str = HEAD
    pretext: str = "none"  # a name of PRETEXTS; `dataset` is already the pretext's
    blur_factor: int = 4  # the blur pretext's (for the results' description)
    checkpoint: str | None = None  # a ResNet-50 checkpoint file: the initial backbone
    name: ClassVar[str] = "image_classification"

    @classmethod
    def build(
        cls,
        dataset: Dataset,
        *,
        model: str,
        width: int,
        init: str,
        augment: bool,
        pretext: str = "none",
        blur_factor: int = 4,
        seed: int = 0,
        checkpoint: str | None = None,
    ) -> ImageClassification:
        """The task on `dataset`, or on its `pretext` task (`pretext_dataset`: random labels
        from `seed`, rotation prediction with a 4-way head, or images blurred by
        `blur_factor`); the normalisation statistics are those of the (pretext's) training
        images; `checkpoint`: the file `init` reads the backbone from. ConfigError for a
        pretext that cannot take these images."""
        dataset = pretext_dataset(dataset, pretext, blur_factor=blur_factor, seed=seed)
        module, blocks = build_model(model, num_classes=dataset.num_classes, width=width, init=init)
        mean, std = channel_stats(dataset.train.images)
        return cls(
            dataset, module, blocks, mean, std, augment, HEAD, pretext, blur_factor, checkpoint
        )

    @staticmethod
    def blocks_for(config) -> tuple[tuple[str, ...], str]:
        """(blocks, head) of the config's model, without building it or reading data."""
        if config.model.name not in MODELS:
            raise ValueError(
                f"unknown model {config.model.name!r}: set --config.model.name to one of "
                f"{sorted(MODELS)}"
            )
        return MODELS[config.model.name][1], HEAD

    @property
    def num_train(self) -> int:
        return int(self.dataset.train.images.shape[0])

    @property
    def dataset_name(self) -> str:
        return self.dataset.name

    @property
    def ood_set(self) -> str | None:
        return self.dataset.ood_set

    def without_ood(self) -> ImageClassification:
        """The same task with no OOD splits (a run that only needs its metrics)."""
        return dataclasses.replace(
            self, dataset=dataclasses.replace(self.dataset, ood={}, ood_set=None)
        )

    def init(self, key: jax.Array) -> tuple[Any, Any]:
        """(params, model_state) of a fresh model, its backbone (params and BatchNorm
        statistics) read from `checkpoint` if given, the head fresh; ModelDoesNotFit if the
        images do not fit, ConfigError if the checkpoint does not fit the model."""
        shape = tuple(self.dataset.image_shape)
        try:
            if self.checkpoint:
                variables = _fresh_head(self.model, shape, key, self.head)
            else:
                variables = _init_variables(self.model, shape, key)
        except ValueError as e:
            raise ModelDoesNotFit(
                f"model {type(self.model).__name__} cannot take {self.dataset.name} images: {e}"
            ) from None
        if self.checkpoint:
            variables = load_resnet50(self.checkpoint, self.model, variables, load_head=False)
        return variables["params"], variables.get("batch_stats", {})

    def _inputs(self, images: jax.Array) -> jax.Array:
        return normalize(images, jnp.asarray(self.mean), jnp.asarray(self.std))

    def train_batch(self, batch: dict, key: jax.Array) -> dict:
        """The batch a train step fits, from a batch of the training order and the step's
        key: with `augment`, a pad-4 random crop and flip (from `key`); then, for the rotation
        pretext, each image rotated by k·90° and labelled k (from `rotation_key(key)`)."""
        images, labels = batch["image"], batch["label"]
        if self.augment:
            images = random_crop_flip(key, images)
        if self.pretext == "rotation":
            images, labels = random_rotations(rotation_key(key), images)
        return {**batch, "image": images, "label": labels}

    def loss(self, params, model_state, batch: dict, key: jax.Array, train: bool):
        """Mean cross-entropy of the batch (in train mode: of `train_batch(batch, key)`)."""
        if train:
            batch = self.train_batch(batch, key)
        return super().loss(params, model_state, batch, key, train)

    def logits(self, params, model_state, batch: dict, key: jax.Array | None, train: bool):
        """(logits, BatchNorm statistics: updated in train mode) of the batch's images as
        given: `loss` applies the train step's augmentation and rotation (`train_batch`)."""
        images = batch["image"]
        variables = {"params": params, "batch_stats": model_state}
        if train:
            logits, updates = self.model.apply(
                variables, self._inputs(images), train=True, mutable=["batch_stats"]
            )
            return logits, updates.get("batch_stats", {})
        return self.model.apply(variables, self._inputs(images), train=False), model_state

    def train_batches(self, seed, batch_size, start_step, stop_step, mesh: Mesh | None):
        return train_batches(
            self.dataset.train,
            seed=seed,
            batch_size=batch_size,
            start_step=start_step,
            stop_step=stop_step,
            mesh=mesh,
        )

    # --- the evaluation sets (the evaluation itself: ClassificationTask) -------------------

    def eval_sets(self) -> dict:
        """The clean test set (under None), then every (corruption, severity) split."""
        return {
            None: self.dataset.test,
            **{cell: self.dataset.ood[cell] for cell in self.ood_names()},
        }

    def ood_names(self) -> list[tuple[str, int]]:
        return sorted(self.dataset.ood)

    def cell_name(self, name: tuple[str, int]) -> str:
        corruption, severity = name
        return f"{corruption}/{severity}"

    def header(self) -> dict[str, str]:
        """A pretext run's results name the pretext and what its ID set is ("id_set")."""
        if self.pretext == "none":
            return {}
        id_set = PRETEXT_ID_SET[self.pretext].format(factor=self.blur_factor)
        return {"pretext": self.pretext, "id_set": id_set}

    def ood_table(self, scores: dict) -> dict[str, dict[str, float]]:
        """{corruption: {severity: accuracy}}."""
        table: dict[str, dict[str, float]] = {}
        for (corruption, severity), accuracy in scores.items():
            table.setdefault(corruption, {})[str(severity)] = accuracy
        return table

    # --- what the early-period metrics need ------------------------------------------------

    def metric_batches(self, set_size: int, batch_size: int) -> dict:
        """The metric set: the first `set_size` training examples, un-augmented, in batches
        (rotation pretext: each with a fixed rotation and its label, as the test set)."""
        train = self.dataset.train
        if self.pretext == "rotation":
            first = Split(train.images[:set_size], train.labels[:set_size])
            train = fixed_rotations(first, METRIC_ROTATION_STREAM)
        return metric_set(train, set_size, batch_size)

    def metric_inputs(self, params, model_state, batches: dict, bn: str):
        """(fixed, batches, flat inputs) on the metric set. `fixed` is what stays fixed while the
        metrics move the parameters: the BatchNorm statistics, the metric set's own at `params`
        with `bn="batch"`, the running ones with `"eval"` (earlyjax.recording)."""
        images = self._inputs(batches["image"])
        batches = {"image": images, "label": batches["label"]}
        flat_x = images.reshape(-1, *images.shape[2:])
        if bn == "batch":
            model_state = metric_set_statistics(self.model, params, model_state, flat_x)
        return {"batch_stats": model_state}, batches, flat_x

    def metric_logits(self, params, fixed, x: jax.Array) -> jax.Array:
        return self.model.apply({"params": params, **fixed}, x, train=False)

    def metric_loss(self, params, fixed, batch: dict) -> jax.Array:
        logits = self.metric_logits(params, fixed, batch["image"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    def metric_features(self, params, fixed, x: jax.Array) -> jax.Array:
        """Penultimate features (feature rank, feature λ_max)."""
        return self.model.apply({"params": params, **fixed}, x, method=type(self.model).penultimate)


@functools.partial(jax.jit, static_argnames=("model", "image_shape"))
def _init_variables(model: nn.Module, image_shape: tuple[int, ...], key: jax.Array):
    """The model's variables from `key`: compiled once per model and image shape (a run and
    its branches, sources and telemetry build the same model many times)."""
    return model.init(key, jnp.zeros((1, *image_shape), jnp.float32), train=False)


@functools.partial(jax.jit, static_argnames=("model", "image_shape", "head"))
def _init_head(model: nn.Module, image_shape: tuple[int, ...], key: jax.Array, head: str):
    """The `head` params of `_init_variables(model, image_shape, key)`: XLA prunes the rest of
    the init, so this compiles in a fraction of its time."""
    return model.init(key, jnp.zeros((1, *image_shape), jnp.float32), train=False)["params"][head]


def _fresh_head(model: nn.Module, image_shape: tuple[int, ...], key: jax.Array, head: str):
    """The model's variables with the fresh head of `_init_variables` and zeros elsewhere (a
    checkpoint fills them)."""
    abstract = jax.eval_shape(
        lambda k: model.init(k, jnp.zeros((1, *image_shape), jnp.float32), train=False), key
    )
    variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract)
    variables["params"][head] = _init_head(model, image_shape, key, head)
    return variables


def metric_set_statistics(model, params, batch_stats, x: jax.Array):
    """BatchNorm statistics (mean, biased variance) of `x` at `params`, in `batch_stats` form.

    One train-mode forward pass from zeroed running statistics: Flax's update
    new = m * old + (1 - m) * batch gives the batch statistics as new / (1 - m).
    """
    zeros = jax.tree.map(jnp.zeros_like, batch_stats)
    _, updates = model.apply(
        {"params": params, "batch_stats": zeros}, x, train=True, mutable=["batch_stats"]
    )
    return jax.tree.map(lambda s: s / (1.0 - BN_MOMENTUM), updates.get("batch_stats", {}))
