"""Extractive QA with XLM-R + LoRA (the paper's SQuAD -> XQuAD / MLQA setting, §4, App. A).

Trained on English SQuAD v1.1, evaluated per language with F1 and exact match (Tables 4 and 7):
* `data.name="squad"`: windows of `data.max_length` tokens (paper: 384) overlapping by
  `data.doc_stride` (128) of SQuAD v1.1's train split (`earlyjax.data.squad.features`),
  tokenised with the checkpoint's `tokenizer.json`. Evaluation: XQuAD's test split in its 11
  languages and MLQA's in its 7 (question and context in the same language), scored with
  SQuAD v1.1's answer normalisation for XQuAD and MLQA's per-language one for MLQA. The ID
  score is XQuAD's English (the paper's "En" column); the OOD mean is over the 10 + 6
  non-English splits of both (the paper reports their two cross-lingual means: Table 4 /
  `experiments.analysis table7`); MLQA's English is scored too, outside both means.
* `data.name="synthetic_qa"`: `earlyjax.data.synthetic_qa`, generated offline, with a random
  XLM-R unless a checkpoint is given; ID English, OOD the made-up languages.

The model is XLM-R with a span head (start and end logits over the window's tokens); the loss
is the mean of the start and end cross-entropies (Hugging Face's). A window whose context
does not hold the whole answer is labelled with <s> (token 0) at both ends, as Hugging
Face's `run_qa` labels it (one difference: an answer that starts at a window's last context
token is labelled there, where run_qa's label runs past the context; `squad.features`).
Predictions take the best span over all windows of an example (`squad.best_answers`: n-best
20, at most 30 tokens; "" where no span is valid, where run_qa's answer is "empty"). Training
"accuracy" is the share of windows whose argmax start and end both equal the labels;
evaluation logs F1 and EM.

For tr(F) the model's predictive distribution is over (start, end) pairs, start and end
independent given the window: its logits over the T x T grid are start_s + end_e
(`metric_logits`), so Eq. 2 samples both ends and differentiates log p(start) + log p(end).
S_avg and S_worst perturb the training loss. Feature rank and feature λ_max are the
classification head's and are refused here (`earlyjax.validation`).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from earlyjax.data import squad, synthetic_nli, synthetic_qa, text_tfds
from earlyjax.data.pipeline import eval_batches
from earlyjax.data.text import load_tokenizer
from earlyjax.parallel import global_batch, replicated
from earlyjax.tasks.base import ClassificationTask
from earlyjax.tasks.xlmr_task import XLMRTask, build_model, lora_blocks

ID_SPLIT = "xquad/en"


@dataclass(frozen=True)
class EvalSplit:
    """One evaluation set: its windows, its examples (contexts, reference answers) and the
    answer normalisation of its scores (None: SQuAD v1.1's; a language: MLQA's)."""

    features: squad.Features
    examples: text_tfds.QAExamples
    normalization: str | None = None

    @property
    def inputs(self) -> dict[str, np.ndarray]:
        f = self.features
        return {"input_ids": f.input_ids, "attention_mask": f.attention_mask,
                "start": f.start, "end": f.end}  # fmt: skip


def _features(tok, examples: text_tfds.QAExamples, max_length: int, stride: int):
    """Windows of every example, labelled with its first reference answer."""
    return squad.features(
        tok,
        examples.question,
        examples.context,
        [s[0] for s in examples.answer_starts],
        [t[0] for t in examples.answer_texts],
        max_length=max_length,
        stride=stride,
    )


@dataclass(frozen=True, eq=False)
class QuestionAnswering(XLMRTask, ClassificationTask):
    """See the module docstring."""

    evals: dict[str, EvalSplit] = dataclasses.field(default_factory=dict)
    id_split: str = ID_SPLIT
    ood_splits: tuple[str, ...] = ()
    name: ClassVar[str] = "qa"
    HEAD: ClassVar[dict] = {"head_type": "span"}
    LABELS: ClassVar[tuple[str, ...]] = ("start", "end")
    SCORE: ClassVar[str] = "f1"  # the headline score, in results' id/ood "accuracy" fields
    ID_EXTRA: ClassVar[tuple[str, ...]] = ("exact_match",)

    @classmethod
    def build(cls, config) -> QuestionAnswering:
        d, m = config.data, config.model
        if d.name == "squad":
            tok = load_tokenizer(m.checkpoint)
            train = text_tfds.load_squad_format("squad/v1.1", "train", d.data_dir)
            sets = {
                f"xquad/{lang}": (text_tfds.load_squad_format(f"xquad/{lang}", "test", d.data_dir),
                                  None)
                for lang in text_tfds.XQUAD_LANGUAGES
            }  # fmt: skip
            for lang in text_tfds.MLQA_LANGUAGES:
                examples = text_tfds.load_squad_format(f"mlqa/{lang}", "test", d.data_dir)
                sets[f"mlqa/{lang}"] = (examples, lang)
            id_split = ID_SPLIT
            ood = tuple(name for name in sets if not name.endswith("/en"))
            ood_set = "XQuAD (10 languages) and MLQA (6 languages) other than English"
        else:
            tok = synthetic_qa.tokenizer()
            train, test, by_lang = synthetic_qa.load()
            sets = {"en": (test, None), **{lang: (ex, None) for lang, ex in by_lang.items()}}
            id_split, ood = "en", tuple(by_lang)
            ood_set = f"synthetic QA in {len(ood)} made-up languages ({', '.join(ood)})"
        length = d.max_length
        stride = d.max_length // 3 if d.doc_stride is None else d.doc_stride
        train_windows = _features(tok, train, length, stride)
        evals = {
            name: EvalSplit(_features(tok, examples, length, stride), examples, normalization)
            for name, (examples, normalization) in sets.items()
        }
        train_inputs = EvalSplit(train_windows, train).inputs
        arrays = (train_inputs, *(e.inputs for e in evals.values()))
        model = build_model(config, arrays, synthetic_nli.vocab_size(), **cls.HEAD)
        blocks, head = lora_blocks(model.config.num_hidden_layers)
        return cls(model, blocks, head, train_inputs, d.name, ood_set, m.checkpoint, evals,
                   id_split, ood)  # fmt: skip

    def without_ood(self) -> QuestionAnswering:
        """The same task evaluated on its ID split only (a run that only needs its metrics)."""
        evals = {self.id_split: self.evals[self.id_split]}
        return dataclasses.replace(self, evals=evals, ood_splits=(), ood_set=None)

    def loss(self, params, model_state, batch: dict, key: jax.Array, train: bool):
        """Mean of the start and end cross-entropies; aux ({"accuracy": both ends right})."""
        start, end = self.apply(params, model_state, batch["input_ids"], batch["attention_mask"],
                                key if train else None)  # fmt: skip
        loss = _span_loss(start, end, batch)
        right = (jnp.argmax(start, -1) == batch["start"]) & (jnp.argmax(end, -1) == batch["end"])
        return loss, ({"accuracy": jnp.mean(right)}, model_state)

    # --- evaluators ---------------------------------------------------------------------

    @functools.cached_property
    def _eval_logits(self):
        @jax.jit
        def logits(params, backbone, batch):
            start, end = self.apply(params, backbone, batch["input_ids"], batch["attention_mask"])
            losses = optax.softmax_cross_entropy_with_integer_labels
            window_loss = (losses(start, batch["start"]) + losses(end, batch["end"])) / 2
            return start, end, (window_loss * batch["mask"]).sum()

        return logits

    def evaluate_split(
        self, params, model_state, split: str | EvalSplit, batch_size, mesh=None
    ) -> dict:
        """{"f1", "exact_match"} (percent, per example the best over its references) and the
        mean span loss per window, of one evaluation set (or its name)."""
        if isinstance(split, str):
            split = self.evals[split]
        starts, ends, loss = [], [], 0.0
        for batch in eval_batches(split.inputs, batch_size):
            valid = int(batch["mask"].sum())
            if mesh is not None:
                batch = global_batch(batch, mesh)
            start, end, summed = self._eval_logits(params, model_state, batch)
            if mesh is not None:  # a batch split over hosts: every host reads it whole
                start, end = _gather(start, end, replicated(mesh))
            starts.append(np.asarray(start)[:valid])
            ends.append(np.asarray(end)[:valid])
            loss += float(summed)
        answers = squad.best_answers(
            split.features, np.concatenate(starts), np.concatenate(ends), split.examples.context
        )
        scores = squad.score(answers, split.examples.answer_texts, split.normalization)
        return {**scores, "loss": loss / len(split.features.input_ids)}

    # --- the evaluation sets and results' layout (the rest: ClassificationTask) ------------

    @property
    def id_name(self) -> str:
        return self.id_split

    def eval_sets(self) -> dict[str, EvalSplit]:
        """Every set, by name (MLQA's English too: scored, outside the ID and OOD means)."""
        return {name: self.evals[name] for name in sorted(self.evals)}

    def ood_names(self) -> list[str]:
        return sorted(self.ood_splits)

    def header(self) -> dict:
        """F1 is the headline score, in the id/ood "accuracy" fields."""
        english = f"{self.id_split}, English" if "/" in self.id_split else "English test set"
        return {"score": self.SCORE, "id_set": english}

    def footer(self, scores: dict) -> dict:
        """F1, exact match and loss of every evaluation set."""
        return {"scores": scores}

    # --- what the early-period metrics need (the rest: XLMRTask) ---------------------------

    def metric_logits(self, params, fixed, x: jax.Array) -> jax.Array:
        """Logits [n, T*T] of the (start, end) distribution: start_s + end_e."""
        start, end = self.metric_output(params, fixed, x)
        return (start[:, :, None] + end[:, None, :]).reshape(start.shape[0], -1)

    def metric_loss(self, params, fixed, batch: dict) -> jax.Array:
        start, end = self.metric_output(params, fixed, batch["x"])
        return _span_loss(start, end, batch)

    def metric_features(self, params, fixed, x: jax.Array) -> jax.Array:
        raise ValueError("feature metrics are the classification head's; task qa has a span head")


@functools.partial(jax.jit, static_argnums=2)
def _gather(start, end, sharding):
    return jax.lax.with_sharding_constraint((start, end), sharding)


def _span_loss(start, end, labels) -> jax.Array:
    ce = optax.softmax_cross_entropy_with_integer_labels
    return (ce(start, labels["start"]).mean() + ce(end, labels["end"]).mean()) / 2
