"""The task interface: what the loop (`earlyjax.train`, `earlyjax.periodic`), the recorder
(`earlyjax.recording`), the plan (`earlyjax.plan`) and the experiments use of a task. It lives
below all of them, so that each depends on the interface and not on the tasks
(`earlyjax.tasks` implements it).

A task is what is specific to a problem: the model, the data and input pipeline, the loss,
the evaluators and the parameter blocks. Each task owns its model state (BatchNorm
statistics, a frozen backbone) next to the trainable `params`; what it holds fixed while the
metrics move the parameters comes from `metric_inputs` and is passed back, as `fixed`, to
`metric_logits`, `metric_loss` and `metric_features`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

import jax
from jax.sharding import Mesh

if TYPE_CHECKING:
    import ml_collections

Params = Any  # a pytree of trainable arrays
ModelState = Any  # a pytree the loss carries along (BatchNorm statistics, a frozen backbone)
Fixed = Any  # what the metrics hold fixed (from `metric_inputs`)
Batch = dict[str, jax.Array]
Head = str | tuple[str, ...]  # the head's parameter block(s), trainable from step 0


class HasBlocks(Protocol):
    """The parameter blocks of a task: all that an intervention needs to be built
    (`earlyjax.plan.intervention_named`; sweeps pass just these, from `Task.blocks_for`)."""

    @property
    def blocks(self) -> tuple[str, ...]:
        """The parameter blocks an intervention acts on, bottom-up (top-level params keys)."""
        ...

    @property
    def head(self) -> Head:
        """The head's block name(s), trainable from step 0."""
        ...


class Task(HasBlocks, Protocol):
    """What the loop, the recorder, the plan and the experiments use of a task: `blocks` and
    `head` (`HasBlocks`) and the members below."""

    @staticmethod
    def blocks_for(config: ml_collections.ConfigDict) -> tuple[tuple[str, ...], Head]:
        """(blocks, head) of the config's model, without building anything (sweeps, grids)."""
        ...

    @property
    def num_train(self) -> int:
        """Training examples (the run length in epochs needs it)."""
        ...

    @property
    def dataset_name(self) -> str:
        """What the training data is called (results.json's "dataset")."""
        ...

    @property
    def ood_set(self) -> str | None:
        """What the OOD mean is over (None without OOD sets)."""
        ...

    def without_ood(self) -> Task:
        """The same task without OOD sets (auto-k's signal runs: only their metrics count)."""
        ...

    def init(self, key: jax.Array) -> tuple[Params, ModelState]:
        """(params, model_state) of a fresh model."""
        ...

    def loss(
        self, params: Params, model_state: ModelState, batch: Batch, key: jax.Array, train: bool
    ) -> tuple[jax.Array, tuple[dict[str, jax.Array], ModelState]]:
        """(mean loss, ({"accuracy": ...}, new model_state)) of a batch; `key` for the train
        mode's randomness (augmentation, dropout)."""
        ...

    def train_batches(
        self, seed: int, batch_size: int, start_step: int, stop_step: int, mesh: Mesh | None
    ) -> Iterator[tuple[int, Batch]]:
        """(step, device batch) for the steps [start_step, stop_step) of the run's order."""
        ...

    def evaluate_id(
        self, params: Params, model_state: ModelState, batch_size: int, mesh: Mesh | None = None
    ) -> dict[str, float]:
        """The ID test set's scores: {"accuracy", "loss"} (QA: {"f1", "exact_match", "loss"})."""
        ...

    def final_results(
        self, params: Params, model_state: ModelState, batch_size: int, mesh: Mesh | None = None
    ) -> dict[str, Any]:
        """The task's fields of results.json (ID and OOD scores, the OOD table and cells)."""
        ...

    def metric_batches(self, set_size: int, batch_size: int) -> Batch:
        """The fixed metric set: the first `set_size` training examples, in batches [B, b, ...]."""
        ...

    def metric_inputs(
        self, params: Params, model_state: ModelState, batches: Batch, bn: str
    ) -> tuple[Fixed, Batch, jax.Array]:
        """(fixed, batches, flat inputs) on the metric set; `bn` ("eval" or "batch") says which
        BatchNorm statistics `fixed` holds (`earlyjax.recording`)."""
        ...

    def metric_logits(self, params: Params, fixed: Fixed, x: jax.Array) -> jax.Array:
        """Logits [n, classes] of the predictive distribution on flat inputs (tr(F))."""
        ...

    def metric_loss(self, params: Params, fixed: Fixed, batch: Batch) -> jax.Array:
        """Mean loss of one metric batch (S_avg, S_worst, λ_max)."""
        ...

    def metric_features(self, params: Params, fixed: Fixed, x: jax.Array) -> jax.Array:
        """Penultimate features [n, d] on flat inputs (feature rank, feature λ_max)."""
        ...
