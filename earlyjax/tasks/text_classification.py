"""Sentence-pair classification with XLM-R + LoRA (the paper's MNLI -> XNLI setting, §4, App. A).

Trained on English pairs, evaluated on English (ID) and on every other language (OOD): the
OOD mean is the cross-lingual mean of Tables 4 and 7. Data:
* `data.name="mnli"`: MNLI's train split, XNLI's test split per language (English is the ID
  test), tokenised with the checkpoint's `tokenizer.json` to `data.max_length` tokens;
  `model.checkpoint` names the Hugging Face folder (required);
* `data.name="synthetic_nli"`: `earlyjax.data.synthetic_nli`, generated offline, with a random
  XLM-R of `model.width` hidden units and `model.layers` layers unless a checkpoint is given.

The frozen backbone is the task's model state (never updated); the parameters are the LoRA
adapters and the head. Gradual unfreezing's blocks are `layers_0` .. `layers_{L-2}`; the last
layer's adapters train from step 0 with the head (App. A), as one group `layers_{L-1}+head`.
The metrics' inputs pack (input_ids, attention_mask) as one int array [N, 2, T].
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from earlyjax.data import synthetic_nli, text_tfds
from earlyjax.data.pipeline import evaluate, metric_set, train_batches
from earlyjax.data.text import encode_pairs, load_tokenizer
from earlyjax.models.xlmr import XLMR, LoRAConfig, XLMRConfig
from earlyjax.models.xlmr_checkpoint import load_checkpoint, read_config

NLI_DATASETS = ("synthetic_nli", "mnli")
NUM_LABELS = 3


@dataclass(frozen=True, eq=False)
class TextClassification:
    """See the module docstring."""

    model: XLMR
    blocks: tuple[str, ...]
    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    ood: dict[str, dict[str, np.ndarray]]
    dataset_name: str
    ood_set: str | None
    checkpoint: str | None = None
    head: tuple[str, ...] = ("head",)  # with the last layer's adapters (`build`)
    name: ClassVar[str] = "nli"

    @classmethod
    def build(cls, config) -> TextClassification:
        d, m = config.data, config.model
        lora = LoRAConfig(r=m.lora_r, alpha=m.lora_alpha, dropout=m.lora_dropout)
        if d.name == "mnli":
            tok = load_tokenizer(m.checkpoint)
            mnli = text_tfds.load_nli("train", d.data_dir)
            xnli = text_tfds.load_xnli("test", d.data_dir)

            def encode(ex):
                ids, mask = encode_pairs(tok, ex.premise, ex.hypothesis, max_length=d.max_length)
                return {"input_ids": ids, "attention_mask": mask, "label": ex.label}

            train, test = encode(mnli), encode(xnli["en"])
            ood = {lang: encode(ex) for lang, ex in xnli.items() if lang != "en"}
            ood_set = "XNLI test, 14 languages other than English"
        else:
            train, test, ood = synthetic_nli.load()
            ood_set = f"synthetic NLI in {len(ood)} made-up languages ({', '.join(ood)})"
        if m.checkpoint:
            xlmr = read_config(m.checkpoint)
        else:
            xlmr = XLMRConfig(
                vocab_size=synthetic_nli.vocab_size(),  # mnli always has a checkpoint
                hidden_size=m.width,
                num_hidden_layers=m.layers,
                num_attention_heads=4,
                intermediate_size=2 * m.width,
                max_position_embeddings=train["input_ids"].shape[1] + 2,
            )
        top = max(int(a["input_ids"].max()) for a in (train, test, *ood.values()))
        if top >= xlmr.vocab_size:
            raise ValueError(
                f"token id {top} of the {d.name} data is outside the model's vocabulary of "
                f"{xlmr.vocab_size}: the tokenizer does not belong to --config.model.checkpoint"
                f"={m.checkpoint}; use the checkpoint's data (data.name=mnli) or no checkpoint"
            )
        model = XLMR(xlmr, lora=lora, head_type="classification", num_labels=NUM_LABELS)
        blocks, head = lora_blocks(xlmr.num_hidden_layers)
        return cls(model, blocks, train, test, ood, d.name, ood_set, m.checkpoint, head)

    @staticmethod
    def blocks_for(config) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(blocks, head) of the config's model, without building it or reading data."""
        m = config.model
        return lora_blocks(
            read_config(m.checkpoint).num_hidden_layers if m.checkpoint else m.layers
        )

    @property
    def num_train(self) -> int:
        return len(self.train["label"])

    def without_ood(self) -> TextClassification:
        """The same task with no OOD languages (a run that only needs its metrics)."""
        return dataclasses.replace(self, ood={}, ood_set=None)

    def init(self, key: jax.Array) -> tuple[Any, Any]:
        """(params: LoRA adapters and head, model_state: the frozen backbone)."""
        ids = jnp.asarray(self.train["input_ids"][:1])
        mask = jnp.asarray(self.train["attention_mask"][:1])
        variables = jax.jit(lambda k: self.model.init(k, ids, mask))(key)
        if self.checkpoint:
            variables = load_checkpoint(self.checkpoint, self.model, variables)
        return variables["params"], variables["backbone"]

    def _logits(self, params, backbone, ids, mask, key=None):
        rngs = None if key is None else {"dropout": key}
        variables = {"params": params, "backbone": backbone}
        return self.model.apply(variables, ids, mask, deterministic=key is None, rngs=rngs)

    def loss(self, params, model_state, batch: dict, key: jax.Array, train: bool):
        """Mean cross-entropy; aux ({"accuracy"}, the backbone unchanged). Dropout in training."""
        logits = self._logits(params, model_state, batch["input_ids"], batch["attention_mask"],
                              key if train else None)  # fmt: skip
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
        return loss, ({"accuracy": accuracy}, model_state)

    def train_batches(self, seed, batch_size, start_step, stop_step, mesh: Mesh | None):
        return train_batches(
            self.train, seed=seed, batch_size=batch_size, start_step=start_step,
            stop_step=stop_step, mesh=mesh,
        )  # fmt: skip

    # --- evaluators ---------------------------------------------------------------------

    @functools.cached_property
    def _eval_sums(self):
        @jax.jit
        def sums(params, backbone, batch):
            logits = self._logits(params, backbone, batch["input_ids"], batch["attention_mask"])
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
            correct = (jnp.argmax(logits, -1) == batch["label"]) * batch["mask"]
            return correct.sum(), (losses * batch["mask"]).sum(), batch["mask"].sum()

        return sums

    def evaluate_split(self, params, model_state, split, batch_size, mesh=None) -> dict:
        return evaluate(self._eval_sums, params, model_state, split, batch_size, mesh)

    def evaluate_id(self, params, model_state, batch_size, mesh=None) -> dict:
        """English (the training language's test set): {"accuracy", "loss"}."""
        return self.evaluate_split(params, model_state, self.test, batch_size, mesh)

    def final_results(self, params, model_state, batch_size, mesh=None) -> dict:
        """ID (English) accuracy and loss, accuracy per other language and their mean."""
        id_metrics = self.evaluate_id(params, model_state, batch_size, mesh)
        table = {
            lang: self.evaluate_split(params, model_state, split, batch_size, mesh)["accuracy"]
            for lang, split in sorted(self.ood.items())
        }
        return {
            "dataset": self.dataset_name,
            "id_accuracy": id_metrics["accuracy"],
            "id_loss": id_metrics["loss"],
            "ood_accuracy": float(np.mean(list(table.values()))) if table else None,
            "ood_table": table,
            "ood_set": self.ood_set,
            "ood_cells": sorted(table),
        }

    # --- what the early-period metrics need ------------------------------------------------

    def metric_batches(self, set_size: int, batch_size: int) -> dict:
        """The metric set: the first `set_size` training pairs, in batches."""
        return metric_set(self.train, set_size, batch_size)

    def metric_inputs(self, params, model_state, batches: dict, bn: str):
        """(fixed: the backbone, batches, flat inputs [N, 2, T]); no BatchNorm, so `bn` is moot."""
        del params, bn
        packed = jnp.stack([batches["input_ids"], batches["attention_mask"]], axis=-2)
        flat_x = packed.reshape(-1, *packed.shape[2:])
        return {"backbone": model_state}, {"x": packed, "label": batches["label"]}, flat_x

    def metric_logits(self, params, fixed, x: jax.Array) -> jax.Array:
        return self._logits(params, fixed["backbone"], x[:, 0], x[:, 1])

    def metric_loss(self, params, fixed, batch: dict) -> jax.Array:
        logits = self.metric_logits(params, fixed, batch["x"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    def metric_features(self, params, fixed, x: jax.Array) -> jax.Array:
        """The head's pooled features (tanh of its dense layer on <s>), before the projection."""
        variables = {"params": params, "backbone": fixed["backbone"]}
        return self.model.apply(variables, x[:, 0], x[:, 1], method=XLMR.features)


def lora_blocks(num_layers: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """App. A's grouping: the head and the last layer's adapters train from step 0 (one group);
    Algorithm 1 releases the other layers' adapters top-down. (blocks bottom-up, head names)."""
    layers = tuple(f"layers_{i}" for i in range(num_layers))
    return layers[:-1], (layers[-1], "head")
