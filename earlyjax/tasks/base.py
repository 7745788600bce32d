"""The evaluation the tasks share (`ClassificationTask`); the interface they implement is
`earlyjax.task_protocol.Task`.

`ClassificationTask` owns what the evaluation of every task has in common: the loss and
accuracy sums over the batches of a set, and the fields of results.json (ID score and loss,
the OOD mean over the cells, their table, the OOD set's name and cells). A task says which
sets it evaluates (`eval_sets`, `id_name`, `ood_names`) and, where it differs, how a set is
scored (`evaluate_split`: QA's F1 and exact match) and laid out (`ood_table`, `cell_name`,
`header`, `footer`).
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from earlyjax.data.pipeline import evaluate
from earlyjax.task_protocol import Batch, ModelState, Params


class ClassificationTask(abc.ABC):
    """The evaluation and results.json fields of a task scored per evaluation set.

    A subclass gives its sets (`eval_sets`, `id_name`, `ood_names`) and its
    `logits(params, model_state, batch, key, train)` (train and eval mode), from which the base
    builds the cross-entropy `loss` and the accuracy/loss sums of `evaluate_split`; a task
    scored otherwise (QA: a span loss, F1 and exact match) overrides `loss` and
    `evaluate_split` instead. The layout hooks (`cell_name`, `ood_table`, `header`, `footer`)
    have defaults. The headline score (`SCORE`, "accuracy" by default) fills the results'
    `id_accuracy`, `ood_accuracy` and `ood_table`; `ID_EXTRA` names further ID scores
    (`id_<name>`)."""

    SCORE: ClassVar[str] = "accuracy"
    ID_EXTRA: ClassVar[tuple[str, ...]] = ()
    id_name: ClassVar[Hashable] = None  # the ID set's key in `eval_sets()`

    # Members of `Task` that the results read.
    dataset_name: str
    ood_set: str | None

    # --- hooks ----------------------------------------------------------------------------

    @abc.abstractmethod
    def eval_sets(self) -> Mapping[Hashable, Any]:
        """Every set `final_results` evaluates, by name (the ID set under `id_name`)."""

    @abc.abstractmethod
    def ood_names(self) -> Sequence[Hashable]:
        """The names of the OOD sets, in the order of the results' cells (sorted)."""

    def logits(
        self, params: Params, model_state: ModelState, batch: Batch, key: jax.Array | None,
        train: bool,
    ) -> tuple[jax.Array, ModelState]:  # fmt: skip
        """(logits, new model_state) of a batch, in train mode with `train`, from which the
        base builds `loss` and `evaluate_split`; a task that overrides both (QA) needs none."""
        raise TypeError(
            f"{type(self).__name__} gives no logits: override `logits`, or `loss` and "
            "`evaluate_split`"
        )

    def cell_name(self, name: Hashable) -> str:
        """An OOD set's name in the results' `ood_cells`."""
        return str(name)

    def ood_table(self, scores: dict[Hashable, float]) -> dict:
        """The results' `ood_table` from the OOD sets' scores: {cell: score}."""
        return {self.cell_name(name): score for name, score in scores.items()}

    def header(self) -> dict[str, Any]:
        """Fields of results.json between "dataset" and "id_accuracy" (what is scored how)."""
        return {}

    def footer(self, scores: dict[Hashable, dict[str, float]]) -> dict[str, Any]:
        """Fields of results.json after the OOD ones, from every set's scores."""
        return {}

    # --- what the base owns ---------------------------------------------------------------

    def loss(self, params, model_state, batch: Batch, key: jax.Array, train: bool):
        """Mean cross-entropy of a batch; aux ({"accuracy"}, the updated model state)."""
        logits, model_state = self.logits(params, model_state, batch, key, train)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
        return loss, ({"accuracy": accuracy}, model_state)

    @functools.cached_property
    def _eval_sums(self):
        @jax.jit
        def sums(params, model_state, batch):
            logits, _ = self.logits(params, model_state, batch, None, False)
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
            correct = (jnp.argmax(logits, -1) == batch["label"]) * batch["mask"]
            return correct.sum(), (losses * batch["mask"]).sum(), batch["mask"].sum()

        return sums

    def evaluate_split(
        self, params, model_state, split, batch_size: int, mesh: Mesh | None = None
    ) -> dict[str, float]:
        """Accuracy (%) and mean loss of the model in eval mode over a whole set."""
        return evaluate(self._eval_sums, params, model_state, split, batch_size, mesh)

    def evaluate_id(self, params, model_state, batch_size: int, mesh: Mesh | None = None):
        """The ID test set's scores."""
        split = self.eval_sets()[self.id_name]
        return self.evaluate_split(params, model_state, split, batch_size, mesh)

    def final_results(self, params, model_state, batch_size: int, mesh: Mesh | None = None):
        """The task's fields of results.json: the ID score and loss, the OOD mean over the
        cells, their table, and what that mean covers (the OOD set's name and its cells)."""
        scores = {
            name: self.evaluate_split(params, model_state, split, batch_size, mesh)
            for name, split in self.eval_sets().items()
        }
        id_scores = scores[self.id_name]
        ood = {name: scores[name][self.SCORE] for name in self.ood_names()}
        return {
            "dataset": self.dataset_name,
            **self.header(),
            "id_accuracy": id_scores[self.SCORE],
            **{f"id_{name}": id_scores[name] for name in self.ID_EXTRA},
            "id_loss": id_scores["loss"],
            "ood_accuracy": float(np.mean(list(ood.values()))) if ood else None,
            "ood_table": self.ood_table(ood),
            "ood_set": self.ood_set,
            "ood_cells": [self.cell_name(name) for name in ood],
            **self.footer(scores),
        }
