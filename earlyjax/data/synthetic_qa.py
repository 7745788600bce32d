"""A generated extractive-QA task in the made-up languages of `synthetic_nli`, for tests and the
offline QA configuration.

Not natural language and not a benchmark: a stand-in with SQuAD -> XQuAD's shape, so that the
QA pipeline (SQuAD windows with a stride, the span head, n-best decoding back to text, F1 and
exact match per language) runs in minutes on a CPU without downloads.

* Context: 19 distinct words of the first 40 of `synthetic_nli.VOCABULARY` and, at a random
  place but not last, one of the other 8 (the answer words). Question: that answer word.
  Answer: it and the word after it (a two-word span). A model can find the start by the
  word's identity or by matching the question, and must stop one word later.
* Languages as `synthetic_nli.LANGUAGES`: "en" for training and the ID test, made-up ones
  sharing 75/50/25% of the words for the OOD tests (the same examples, translated).
* `MAX_LENGTH` 20 tokens with `STRIDE` 8: <s> question </s></s> leaves 15 context tokens, so
  every context spans two windows, as SQuAD's long paragraphs do at 384 / 128.
"""

from __future__ import annotations

import numpy as np

from earlyjax.data.synthetic_nli import LANGUAGES, VOCABULARY, spelling, tokenizer
from earlyjax.data.text_tfds import QAExamples

CONTEXT_WORDS = 20
ANSWER_WORDS = VOCABULARY[40:]
MAX_LENGTH, STRIDE = 20, 8
TRAIN, TEST, OOD = 2048, 256, 256  # examples

__all__ = ["LANGUAGES", "MAX_LENGTH", "STRIDE", "load", "tokenizer"]


def split(lang: str, n: int, seed: int) -> QAExamples:
    """n examples written in `lang` (the same examples for every language at one seed)."""
    forms = spelling(lang)
    rng = np.random.default_rng(seed)
    questions, contexts, starts, answers = [], [], [], []
    for _ in range(n):
        others = rng.choice(len(VOCABULARY) - len(ANSWER_WORDS), CONTEXT_WORDS - 1, False)
        words = [forms[VOCABULARY[i]] for i in others]
        at = int(rng.integers(0, CONTEXT_WORDS - 1))
        words.insert(at, forms[ANSWER_WORDS[rng.integers(len(ANSWER_WORDS))]])
        questions.append(words[at])
        contexts.append(" ".join(words))
        starts.append([len(" ".join(words[:at])) + (1 if at else 0)])
        answers.append([f"{words[at]} {words[at + 1]}"])
    return QAExamples(questions, contexts, starts, answers)


def load() -> tuple[QAExamples, QAExamples, dict[str, QAExamples]]:
    """(train, ID test, {language: OOD test}) in English and the made-up languages."""
    ood = {lang: split(lang, OOD, seed=2) for lang in LANGUAGES if lang != "en"}
    return split("en", TRAIN, seed=0), split("en", TEST, seed=1), ood
