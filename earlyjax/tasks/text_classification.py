"""Sentence-pair classification with XLM-R + LoRA (the paper's MNLI -> XNLI setting, §4, App. A).

Trained on English pairs, evaluated on English (ID) and on every other language (OOD): the
OOD mean is the cross-lingual mean of Tables 4 and 7. Data:
* `data.name="mnli"`: MNLI's train split, XNLI's test split per language (English is the ID
  test), tokenised with the checkpoint's `tokenizer.json` to `data.max_length` tokens;
  `model.checkpoint` names the Hugging Face folder (required);
* `data.name="synthetic_nli"`: `earlyjax.data.synthetic_nli`, generated offline, with a random
  XLM-R of `model.width` hidden units and `model.layers` layers unless a checkpoint is given.

What it shares with the QA task (the model, the frozen backbone as model state, App. A's
blocks `layers_0` .. `layers_{L-2}` with `layers_{L-1}+head` training from step 0, the metric
set): `earlyjax.tasks.xlmr_task`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import jax
import numpy as np
import optax

from earlyjax.data import synthetic_nli, text_tfds
from earlyjax.data.text import encode_pairs, load_tokenizer
from earlyjax.models.xlmr import XLMR
from earlyjax.tasks.base import ClassificationTask
from earlyjax.tasks.xlmr_task import XLMRTask, build_model, lora_blocks

NUM_LABELS = 3


@dataclass(frozen=True, eq=False)
class TextClassification(XLMRTask, ClassificationTask):
    """See the module docstring."""

    test: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    ood: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)
    name: ClassVar[str] = "nli"
    HEAD: ClassVar[dict] = {"head_type": "classification", "num_labels": NUM_LABELS}
    LABELS: ClassVar[tuple[str, ...]] = ("label",)

    @classmethod
    def build(cls, config) -> TextClassification:
        d, m = config.data, config.model
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
        vocab = synthetic_nli.vocab_size()  # mnli always has a checkpoint
        arrays = (train, test, *ood.values())
        model = build_model(
            config, arrays, vocab, head_type="classification", num_labels=NUM_LABELS
        )
        blocks, head = lora_blocks(model.config.num_hidden_layers)
        return cls(model, blocks, head, train, d.name, ood_set, m.checkpoint, test, ood)

    def without_ood(self) -> TextClassification:
        """The same task with no OOD languages (a run that only needs its metrics)."""
        return dataclasses.replace(self, ood={}, ood_set=None)

    def logits(self, params, model_state, batch: dict, key: jax.Array | None, train: bool):
        """(logits, the backbone unchanged); dropout in training."""
        logits = self.apply(params, model_state, batch["input_ids"], batch["attention_mask"],
                            key if train else None)  # fmt: skip
        return logits, model_state

    # --- the evaluation sets (the evaluation itself: ClassificationTask) -------------------

    def header(self) -> dict:
        return {"id_set": "English test set"}

    def eval_sets(self) -> dict:
        """English (the training language's test set, under None), then every other language."""
        return {None: self.test, **{lang: self.ood[lang] for lang in self.ood_names()}}

    def ood_names(self) -> list[str]:
        return sorted(self.ood)

    # --- what the early-period metrics need (the rest: XLMRTask) ---------------------------

    def metric_logits(self, params, fixed, x: jax.Array) -> jax.Array:
        return self.metric_output(params, fixed, x)

    def metric_loss(self, params, fixed, batch: dict) -> jax.Array:
        logits = self.metric_logits(params, fixed, batch["x"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    def metric_features(self, params, fixed, x: jax.Array) -> jax.Array:
        """The head's pooled features (tanh of its dense layer on <s>), before the projection."""
        variables = {"params": params, "backbone": fixed["backbone"]}
        return self.model.apply(variables, x[:, 0], x[:, 1], method=XLMR.features)
