"""Image classification (the paper's §4 "Simple Setup"): ResNet-18 / VGG-11 (or Frankle et
al. 2020's ResNet-20 / LeNet-300-100) on MNIST, CIFAR-10/100 or the embedded digits, evaluated
on the clean test set (ID) and every corruption x severity split of the OOD set (MNIST-C,
CIFAR-10/100-C or generated ones).

Inputs are uint8 images normalised per channel with the training set's statistics; with
`augment`, the train step applies a pad-4 random crop and horizontal flip. The model's
BatchNorm running statistics are the task's model state (empty for a model without
BatchNorm, e.g. LeNet-300-100).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import Mesh

from earlyjax.data.base import Dataset
from earlyjax.data.pipeline import (
    channel_stats,
    metric_set,
    normalize,
    random_crop_flip,
    train_batches,
)
from earlyjax.models import HEAD, MODELS, build_model
from earlyjax.models.init import BN_MOMENTUM
from earlyjax.tasks.base import ClassificationTask


class ModelDoesNotFit(ValueError):
    """The model cannot take the data set's images; the message names both."""


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
    name: ClassVar[str] = "image_classification"

    @classmethod
    def build(
        cls, dataset: Dataset, *, model: str, width: int, init: str, augment: bool
    ) -> ImageClassification:
        module, blocks = build_model(model, num_classes=dataset.num_classes, width=width, init=init)
        mean, std = channel_stats(dataset.train.images)
        return cls(dataset, module, blocks, mean, std, augment)

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
        """(params, model_state) of a fresh model; ModelDoesNotFit if the images do not fit."""
        dummy = jnp.zeros((1, *self.dataset.image_shape), jnp.float32)
        try:
            variables = jax.jit(lambda k: self.model.init(k, dummy, train=False))(key)
        except ValueError as e:
            raise ModelDoesNotFit(
                f"model {type(self.model).__name__} cannot take {self.dataset.name} images: {e}"
            ) from None
        return variables["params"], variables.get("batch_stats", {})

    def _inputs(self, images: jax.Array) -> jax.Array:
        return normalize(images, jnp.asarray(self.mean), jnp.asarray(self.std))

    def logits(self, params, model_state, batch: dict, key: jax.Array | None, train: bool):
        """(logits, BatchNorm statistics: updated in train mode); augmented with `augment`."""
        images = batch["image"]
        if train and self.augment:
            images = random_crop_flip(key, images)
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

    def ood_table(self, scores: dict) -> dict[str, dict[str, float]]:
        """{corruption: {severity: accuracy}}."""
        table: dict[str, dict[str, float]] = {}
        for (corruption, severity), accuracy in scores.items():
            table.setdefault(corruption, {})[str(severity)] = accuracy
        return table

    # --- what the early-period metrics need ------------------------------------------------

    def metric_batches(self, set_size: int, batch_size: int) -> dict:
        """The metric set: the first `set_size` training examples, un-augmented, in batches."""
        return metric_set(self.dataset.train, set_size, batch_size)

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
