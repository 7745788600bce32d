"""SQuAD-format extractive QA, in and out: features for the model, answers back, and scores.

* `features`: question + context tokenised as a pair with a checkpoint's `tokenizer.json`
  (the `tokenizers` library), the context cut into windows of `max_length` tokens (the
  paper: 384) that overlap by `stride` tokens (128), each labelled with the answer's start and
  end token, or with the first token (<s>) when the answer is not wholly inside the window
  (as Hugging Face's `run_qa.py`, but for one case: see `features`);
* `best_answers`: the n-best span decoding of start/end logits over every window of an
  example, back to a substring of the context ("" where no span is valid: see there);
* `exact_match`, `f1` and `score`: the official answer normalisation and scores. SQuAD v1.1's
  (lower case, no punctuation, no English articles, single spaces) for SQuAD and XQuAD; MLQA's
  per language (`lang`): Unicode punctuation, the language's articles (en, es, de, vi, ar),
  and Chinese segmented into characters. A prediction scores its best match over the example's
  reference answers, and a data set scores the mean over examples, in percent.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import string
import sys
import unicodedata
from collections.abc import Sequence

import numpy as np

from earlyjax.data.text import padded_copy

MAX_LENGTH = 384
STRIDE = 128
N_BEST = 20
MAX_ANSWER_TOKENS = 30

# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Features:
    """Model inputs, one row per window: `example` indexes the example each row came from;
    `offsets` [N, T, 2] are character spans of the context for context tokens, -1 elsewhere."""

    input_ids: np.ndarray  # [N, T] int32
    attention_mask: np.ndarray  # [N, T] int32
    start: np.ndarray  # [N] int32 answer start token (0: not in this window)
    end: np.ndarray  # [N] int32
    example: np.ndarray  # [N] int32
    offsets: np.ndarray  # [N, T, 2] int32


def features(
    tokenizer,
    questions: Sequence[str],
    contexts: Sequence[str],
    answer_starts: Sequence[int] | None = None,
    answer_texts: Sequence[str] | None = None,
    *,
    max_length: int = MAX_LENGTH,
    stride: int = STRIDE,
) -> Features:
    """Windows of every (question, context) pair; labels from the first answer when given.

    `tokenizer` is a `tokenizers.Tokenizer` whose post-processor adds the special tokens of a
    pair (XLM-R: <s> q </s></s> c </s>); it is copied, not changed.

    The labels are Hugging Face `run_qa.py`'s (`prepare_train_features`) but for an answer that
    starts at a window's last context token: ours label that token, so the window decodes to
    the answer; run_qa's start loop runs past the context (the special and padding tokens'
    offsets (0, 0) are <= any start) and labels the window's last token, outside the context,
    which decodes to no answer. Ours is the span the window holds, so it is kept.
    """
    _check_room(tokenizer, questions, max_length, stride)
    tok = padded_copy(tokenizer, max_length)
    tok.enable_truncation(max_length, stride=stride, strategy="only_second")
    rows = collections.defaultdict(list)
    for i, (question, context) in enumerate(zip(questions, contexts, strict=True)):
        first = tok.encode(question.lstrip(), context)
        for window in [first, *first.overflowing]:
            sequence = np.array([-1 if s is None else s for s in window.sequence_ids])
            offsets = np.where((sequence == 1)[:, None], np.array(window.offsets), -1)
            start = end = 0
            if answer_starts is not None:
                char_start = answer_starts[i]
                char_end = char_start + len(answer_texts[i])
                inside = np.flatnonzero(sequence == 1)
                if (
                    inside.size
                    and offsets[inside[0], 0] <= char_start
                    and offsets[inside[-1], 1] >= char_end
                ):
                    start = int(inside[offsets[inside, 0] <= char_start][-1])
                    end = int(inside[offsets[inside, 1] >= char_end][0])
            rows["input_ids"].append(window.ids)
            rows["attention_mask"].append(window.attention_mask)
            rows["start"].append(start)
            rows["end"].append(end)
            rows["example"].append(i)
            rows["offsets"].append(offsets)
    return Features(**{k: np.asarray(v, np.int32) for k, v in rows.items()})


def _check_room(tokenizer, questions: Sequence[str], max_length: int, stride: int) -> None:
    """ValueError, before any window is made, for a question that leaves a window no more
    context tokens than the stride (the tokenizers library would abort the process)."""
    plain = tokenizer.__class__.from_str(tokenizer.to_str())
    plain.no_padding()
    plain.no_truncation()
    specials = plain.post_processor.num_special_tokens_to_add(True) if plain.post_processor else 0
    encoded = plain.encode_batch([q.lstrip() for q in questions], add_special_tokens=False)
    for i, e in enumerate(encoded):
        room = max_length - specials - len(e.ids)
        if room <= stride:
            raise ValueError(
                f"question {i} ({questions[i][:40]!r}) has {len(e.ids)} tokens, which leave "
                f"{room} context tokens of a {max_length}-token window, not more than the "
                f"stride of {stride}: lower --config.data.doc_stride or raise "
                "--config.data.max_length"
            )


# --------------------------------------------------------------------------------------------
# Answers back
# --------------------------------------------------------------------------------------------


def best_answers(
    feats: Features,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    contexts: Sequence[str],
    *,
    n_best: int = N_BEST,
    max_answer_tokens: int = MAX_ANSWER_TOKENS,
) -> list[str]:
    """The answer text of every example: over all its windows, the `n_best` highest start and
    end logits are paired into spans inside the context with start <= end and at most
    `max_answer_tokens` tokens; the span of highest start + end logit wins.

    With no valid span in any window the answer is "", where Hugging Face's
    `postprocess_qa_predictions` answers the string "empty". Kept on purpose: SQuAD's scorer
    gives "" 0 F1 and 0 EM against any answer (EM 1 only for one that normalises to ""),
    while "empty" would earn F1 from a reference that holds the word "empty"."""
    rows = np.arange(len(feats.example))[:, None]
    starts = np.argsort(start_logits, axis=1)[:, ::-1][:, :n_best]  # [R, n]
    ends = np.argsort(end_logits, axis=1)[:, ::-1][:, :n_best]
    in_context = feats.offsets[..., 0] >= 0  # [R, T]
    length = ends[:, None, :] - starts[:, :, None]  # [R, n starts, n ends]
    valid = in_context[rows, starts][:, :, None] & in_context[rows, ends][:, None, :]
    valid &= (length >= 0) & (length < max_answer_tokens)
    value = start_logits[rows, starts][:, :, None] + end_logits[rows, ends][:, None, :]
    value = np.where(valid, value, -np.inf).reshape(len(rows), -1)
    pick = np.argmax(value, axis=1)  # the first best pair, starts before ends, per window
    best: dict[int, tuple[float, str]] = {}
    for row, example in enumerate(feats.example):
        v = value[row, pick[row]]
        if v == -np.inf or (example in best and v <= best[example][0]):
            continue  # no span in this window, or an earlier window's is at least as good
        s, e = np.unravel_index(pick[row], length.shape[1:])
        s, e = starts[row, s], ends[row, e]
        offsets = feats.offsets[row]
        best[example] = (float(v), contexts[example][offsets[s, 0] : offsets[e, 1]])
    return [best.get(i, (0.0, ""))[1] for i in range(len(contexts))]


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------

_PUNCTUATION = frozenset(
    chr(i) for i in range(sys.maxunicode + 1) if unicodedata.category(chr(i)).startswith("P")
) | frozenset(string.punctuation)
_ARTICLES = {
    "en": r"\b(a|an|the)\b",
    "es": r"\b(un|una|unos|unas|el|la|los|las)\b",
    "de": r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b",
    "vi": r"\b(của|là|cái|chiếc|những)\b",
    "ar": r"\sال^|ال",
}
MLQA_LANGUAGES = ("en", "es", "de", "vi", "ar", "hi", "zh")
_HAN = re.compile(r"[\u4e00-\u9fa5]")


def normalize(text: str, lang: str | None = None) -> str:
    """SQuAD v1.1's answer normalisation (`lang=None`) or MLQA's for `lang`."""
    text = text.lower()
    if lang is None:
        text = "".join(ch for ch in text if ch not in set(string.punctuation))
        return " ".join(re.sub(_ARTICLES["en"], " ", text).split())
    if lang not in MLQA_LANGUAGES:
        raise ValueError(f"MLQA normalises {MLQA_LANGUAGES}, not {lang!r}")
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    if lang in _ARTICLES:
        text = re.sub(_ARTICLES[lang], " ", text)
    tokens = _mixed_segmentation(text) if lang == "zh" else text.split()
    return " ".join(t for t in tokens if t.strip())


def _mixed_segmentation(text: str) -> list[str]:
    """MLQA's Chinese tokens: each Han character (and punctuation) alone, the rest by spaces."""
    out, run = [], ""
    for ch in text:
        if _HAN.match(ch) or ch in _PUNCTUATION:
            out.extend(run.split())
            run = ""
            out.append(ch)
        else:
            run += ch
    return out + run.split()


def exact_match(prediction: str, truth: str, lang: str | None = None) -> float:
    return float(normalize(prediction, lang) == normalize(truth, lang))


def f1(prediction: str, truth: str, lang: str | None = None) -> float:
    pred, gold = normalize(prediction, lang).split(), normalize(truth, lang).split()
    common = sum((collections.Counter(pred) & collections.Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def score(
    predictions: Sequence[str], references: Sequence[Sequence[str]], lang: str | None = None
) -> dict[str, float]:
    """{"exact_match", "f1"} in percent: per example the best over its reference answers,
    then the mean over examples (the official scripts' aggregation)."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError(
            f"score needs one prediction per example, got {len(predictions)} predictions for "
            f"{len(references)} examples"
        )
    pairs = list(zip(predictions, references, strict=True))
    em = [max(exact_match(p, t, lang) for t in refs) for p, refs in pairs]
    f = [max(f1(p, t, lang) for t in refs) for p, refs in pairs]
    return {"exact_match": 100.0 * float(np.mean(em)), "f1": 100.0 * float(np.mean(f))}
