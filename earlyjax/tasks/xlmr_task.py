"""What the transformer tasks (§4 "Complex Setup", App. A) share: XLM-R + LoRA, loaded from a
Hugging Face folder (`model.checkpoint`) or random at `model.width` x `model.layers` for the
generated data; the frozen backbone as the task's model state (never updated), so that the
parameters are the LoRA adapters and the head; App. A's blocks; training batches and the
metric set, whose inputs pack (input_ids, attention_mask) as one int array [N, 2, T].

`earlyjax.tasks.text_classification` (MNLI -> XNLI) and `earlyjax.tasks.question_answering`
(SQuAD -> XQuAD, MLQA) add their data, loss and evaluators.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from earlyjax.data.pipeline import metric_set, train_batches
from earlyjax.models.xlmr import XLMR, LoRAConfig, XLMRConfig
from earlyjax.models.xlmr_checkpoint import load_checkpoint, read_config

INPUTS = ("input_ids", "attention_mask")


def lora_blocks(num_layers: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """App. A's grouping: the head and the last layer's adapters train from step 0 (one group);
    Algorithm 1 releases the other layers' adapters top-down. (blocks bottom-up, head names)."""
    layers = tuple(f"layers_{i}" for i in range(num_layers))
    return layers[:-1], (layers[-1], "head")


def build_model(config, arrays, vocab_size: int, **head) -> XLMR:
    """XLM-R + LoRA for `arrays` (dicts with "input_ids"): the checkpoint's architecture, or a
    random one of `model.width` x `model.layers` over `vocab_size` tokens. ValueError if a
    token id lies outside the model's vocabulary (the data's tokenizer is not the model's)."""
    m = config.model
    if m.checkpoint:
        xlmr = read_config(m.checkpoint)
    else:
        xlmr = XLMRConfig(
            vocab_size=vocab_size,
            hidden_size=m.width,
            num_hidden_layers=m.layers,
            num_attention_heads=4,
            intermediate_size=2 * m.width,
            max_position_embeddings=arrays[0]["input_ids"].shape[1] + 2,
        )
    length = arrays[0]["input_ids"].shape[1]
    if length + 2 > xlmr.max_position_embeddings:  # RoBERTa's positions start at pad + 1 = 2
        raise ValueError(
            f"data.max_length={length} is longer than the model's {xlmr.max_position_embeddings}"
            f" positions allow ({xlmr.max_position_embeddings - 2} tokens): lower "
            "--config.data.max_length"
        )
    top = max(int(a["input_ids"].max()) for a in arrays)
    if top >= xlmr.vocab_size:
        raise ValueError(
            f"token id {top} of the {config.data.name} data is outside the model's vocabulary "
            f"of {xlmr.vocab_size}: the tokenizer does not belong to --config.model.checkpoint"
            f"={m.checkpoint}; use the checkpoint's data or no checkpoint"
        )
    lora = LoRAConfig(r=m.lora_r, alpha=m.lora_alpha, dropout=m.lora_dropout)
    return XLMR(xlmr, lora=lora, **head)


@dataclass(frozen=True, eq=False)
class XLMRTask:
    """The shared part of the transformer tasks; see the module docstring."""

    model: XLMR
    blocks: tuple[str, ...]
    head: tuple[str, ...]
    train: dict[str, np.ndarray]  # model inputs and labels, one row per training example
    dataset_name: str
    ood_set: str | None
    checkpoint: str | None
    HEAD: ClassVar[dict[str, Any]]  # the XLMR head of the task (head_type, num_labels)
    LABELS: ClassVar[tuple[str, ...]]  # the label fields of a training row

    @classmethod
    def random_like(cls, config, rows: int) -> XLMRTask:
        """The config's model (the checkpoint's architecture, random weights) on `rows` random
        token rows of `data.max_length`: the task's train step without reading any data
        (`experiments.paper`'s step timing). It has no evaluation sets."""
        from earlyjax.data import synthetic_nli

        m, length = config.model, config.data.max_length
        vocab = read_config(m.checkpoint).vocab_size if m.checkpoint else synthetic_nli.vocab_size()
        rng = np.random.default_rng(0)
        train = {
            "input_ids": rng.integers(4, vocab, (rows, length)).astype(np.int32),
            "attention_mask": np.ones((rows, length), np.int32),
            **{name: np.zeros(rows, np.int32) for name in cls.LABELS},
        }
        model = build_model(config, (train,), vocab, **cls.HEAD)
        blocks, head = lora_blocks(model.config.num_hidden_layers)
        return cls(model, blocks, head, train, config.data.name, None, None)

    @staticmethod
    def blocks_for(config) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(blocks, head) of the config's model, without building it or reading data."""
        m = config.model
        return lora_blocks(
            read_config(m.checkpoint).num_hidden_layers if m.checkpoint else m.layers
        )

    @property
    def num_train(self) -> int:
        return len(self.train["input_ids"])

    def init(self, key: jax.Array) -> tuple[Any, Any]:
        """(params: LoRA adapters and head, model_state: the frozen backbone)."""
        ids = jnp.asarray(self.train["input_ids"][:1])
        mask = jnp.asarray(self.train["attention_mask"][:1])
        variables = jax.jit(lambda k: self.model.init(k, ids, mask))(key)
        if self.checkpoint:
            variables = load_checkpoint(self.checkpoint, self.model, variables)
        return variables["params"], variables["backbone"]

    def apply(self, params, backbone, ids, mask, key=None):
        """The model's output; dropout on with a `key` (training), off without."""
        rngs = None if key is None else {"dropout": key}
        variables = {"params": params, "backbone": backbone}
        return self.model.apply(variables, ids, mask, deterministic=key is None, rngs=rngs)

    def train_batches(self, seed, batch_size, start_step, stop_step, mesh: Mesh | None):
        return train_batches(
            self.train, seed=seed, batch_size=batch_size, start_step=start_step,
            stop_step=stop_step, mesh=mesh,
        )  # fmt: skip

    # --- what the early-period metrics need ------------------------------------------------

    def metric_batches(self, set_size: int, batch_size: int) -> dict:
        """The metric set: the first `set_size` training rows, in batches."""
        return metric_set(self.train, set_size, batch_size)

    def metric_inputs(self, params, model_state, batches: dict, bn: str):
        """(fixed: the backbone, batches {"x": inputs [B, b, 2, T], and the labels}, flat
        inputs [N, 2, T]); no BatchNorm, so `bn` is moot."""
        del params, bn
        packed = jnp.stack([batches[k] for k in INPUTS], axis=-2)
        labels = {k: v for k, v in batches.items() if k not in INPUTS}
        flat_x = packed.reshape(-1, *packed.shape[2:])
        return {"backbone": model_state}, {"x": packed, **labels}, flat_x

    def metric_output(self, params, fixed, x: jax.Array):
        """The model's eval-mode output on packed inputs [n, 2, T]."""
        return self.apply(params, fixed["backbone"], x[:, 0], x[:, 1])
