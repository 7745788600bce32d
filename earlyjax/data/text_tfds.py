"""The transformer half's data sets through ``tfds.data_source`` (ArrayRecord; no TensorFlow).

* NLI: ``multi_nli`` (English MNLI: train, validation_matched) for training, ``xnli`` (test,
  validation; 15 languages, the same premise/hypothesis pairs translated) for the cross-lingual
  evaluation: :func:`load_nli`, :func:`load_xnli`. Labels are tfds' (0 entailment, 1 neutral,
  2 contradiction) in both.
* Extractive QA: ``squad/v1.1`` (train, validation) for training, ``xquad/LANG`` (test; 12
  languages, the paper's 11 without ``ro``) and ``mlqa/LANG`` (test, validation; 7 languages)
  for the evaluation: :func:`load_squad_format`, all in SQuAD's format.

These builders are not in tfds' registry of this version until their modules are imported
(done here). Preparing them needs TensorFlow once (`tfds build multi_nli xnli squad xquad
mlqa --file_format=array_record`); a data set that is not prepared raises
`TfdsNotPreparedError` with that command.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import numpy as np

from earlyjax.data import tfds_source

NLI_LABELS = ("entailment", "neutral", "contradiction")
XNLI_LANGUAGES = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur",
                  "vi", "zh")  # fmt: skip
XQUAD_LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")  # + ro
MLQA_LANGUAGES = ("ar", "de", "en", "es", "hi", "vi", "zh")
_MODULES = {"multi_nli": "text.multi_nli", "xnli": "text.xnli"}


@dataclasses.dataclass(frozen=True)
class NLIExamples:
    premise: list[str]
    hypothesis: list[str]
    label: np.ndarray  # int32 [N]


@dataclasses.dataclass(frozen=True)
class QAExamples:
    question: list[str]
    context: list[str]
    answer_starts: list[list[int]]  # per example, every reference answer's character offset
    answer_texts: list[list[str]]


def _records(name: str, split: str, data_dir: str | None) -> list[dict[str, Any]]:
    """Every record of a prepared split, read in batched ArrayRecord reads."""
    import tensorflow_datasets as tfds

    base = name.split("/")[0]
    if base in _MODULES:  # registers the builder
        importlib.import_module(f"tensorflow_datasets.{_MODULES[base]}")
    try:
        ds = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        n = len(ds)
    except (NotImplementedError, FileNotFoundError, AssertionError, OSError, KeyError) as e:
        raise tfds_source._not_prepared(name, split, data_dir, e) from e
    out = []
    chunk = tfds_source.READ_CHUNK
    for start in range(0, n, chunk):
        out.extend(ds.__getitems__(list(range(start, min(start + chunk, n)))))
    return out


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_nli(split: str = "train", data_dir: str | None = None) -> NLIExamples:
    """English MNLI (``multi_nli``)."""
    records = _records("multi_nli", split, data_dir)
    return NLIExamples(
        premise=[_text(r["premise"]) for r in records],
        hypothesis=[_text(r["hypothesis"]) for r in records],
        label=np.asarray([r["label"] for r in records], np.int32),
    )


def load_xnli(
    split: str = "test", data_dir: str | None = None, languages: tuple[str, ...] = XNLI_LANGUAGES
) -> dict[str, NLIExamples]:
    """XNLI per language: each record holds a premise in every language and the hypotheses
    with their language codes; the pair of one language is taken from both."""
    records = _records("xnli", split, data_dir)
    out = {}
    for lang in languages:
        premises, hypotheses = [], []
        for r in records:
            codes = [_text(c) for c in r["hypothesis"]["language"]]
            if lang not in codes:
                raise ValueError(f"xnli {split}: a record has no {lang!r} hypothesis ({codes})")
            premises.append(_text(r["premise"][lang]))
            hypotheses.append(_text(r["hypothesis"]["translation"][codes.index(lang)]))
        labels = np.asarray([r["label"] for r in records], np.int32)
        out[lang] = NLIExamples(premises, hypotheses, labels)
    return out


def load_squad_format(name: str, split: str, data_dir: str | None = None) -> QAExamples:
    """``squad/v1.1``, ``xquad/LANG`` or ``mlqa/LANG``: questions, contexts, reference answers."""
    records = _records(name, split, data_dir)
    return QAExamples(
        question=[_text(r["question"]) for r in records],
        context=[_text(r["context"]) for r in records],
        answer_starts=[[int(s) for s in r["answers"]["answer_start"]] for r in records],
        answer_texts=[[_text(t) for t in r["answers"]["text"]] for r in records],
    )
