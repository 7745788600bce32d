"""A generated NLI-style task in several made-up languages, for the offline transformer quickstart.

Not natural language and not a benchmark: a stand-in with MNLI -> XNLI's shape, so that the
whole transformer pipeline (tokenizer, XLM-R + LoRA, gradual unfreezing over its layers,
recording, per-language evaluation) runs in minutes on a CPU without downloads.

* Premise: 6 distinct words of a 48-word vocabulary. Hypothesis: 3 words. Labels as MNLI's:
  0 entailment (all 3 words in the premise), 1 neutral (2 in it, 1 not), 2 contradiction
  ("not" followed by 2 words of the premise).
* Languages: "en" (training and the ID test) and made-up ones for the OOD evaluation, each
  writing every word (and "not") with its own spelling except a fraction it shares with "en"
  (cognates): `LANGUAGES` maps each to that fraction. A model can transfer only through the
  shared words, so OOD accuracy falls with the shared fraction, as XNLI's does with distance
  from English, and a random-initialised model starts with no cross-lingual knowledge at all.
* The tokenizer is word-level with XLM-R's special tokens and pair template, over every
  language's words.
"""

from __future__ import annotations

import numpy as np

from earlyjax.data.text import encode_pairs, word_level_tokenizer

VOCABULARY = tuple(f"w{i}" for i in range(48))
NEGATION = "not"
LANGUAGES = {"en": 1.0, "xa": 0.75, "xb": 0.5, "xc": 0.25}  # language -> words shared with en
MAX_LENGTH = 16  # <s> 6 words </s></s> 3 words </s> = 13
TRAIN, TEST, OOD = 2048, 512, 512  # examples


def spelling(lang: str) -> dict[str, str]:
    """Each English word's form in `lang`: itself for the shared fraction, else its own."""
    words = (*VOCABULARY, NEGATION)
    rng = np.random.default_rng(sum(map(ord, lang)))
    shared = set(rng.permutation(len(words))[: round(LANGUAGES[lang] * len(words))])
    return {w: (w if i in shared else f"{lang}_{w}") for i, w in enumerate(words)}


def vocab_size() -> int:
    """Tokens of `tokenizer()`: the 4 special ones and every language's words."""
    return 4 + len({form for lang in LANGUAGES for form in spelling(lang).values()})


def examples(n: int, seed: int) -> tuple[list[list[str]], list[list[str]], np.ndarray]:
    """(premises, hypotheses, labels) in English words, labels balanced at random."""
    rng = np.random.default_rng(seed)
    premises, hypotheses = [], []
    labels = rng.integers(0, 3, n).astype(np.int32)
    for label in labels:
        words = [VOCABULARY[i] for i in rng.choice(len(VOCABULARY), 9, replace=False)]
        premise, outside = words[:6], words[6:]
        picked = [premise[i] for i in rng.choice(6, 3, replace=False)]
        if label == 0:
            hypothesis = picked
        elif label == 1:
            hypothesis = [*picked[:2], outside[0]]
            rng.shuffle(hypothesis)
        else:
            hypothesis = [NEGATION, *picked[:2]]
        premises.append(premise)
        hypotheses.append(hypothesis)
    return premises, hypotheses, labels


def tokenizer():
    """Word-level over every language's words, with XLM-R's special tokens and pair template."""
    return word_level_tokenizer(f for lang in LANGUAGES for f in spelling(lang).values())


def split(tok, lang: str, n: int, seed: int) -> dict[str, np.ndarray]:
    """{"input_ids", "attention_mask", "label"} of n examples written in `lang`."""
    forms = spelling(lang)
    premises, hypotheses, labels = examples(n, seed)
    first = [" ".join(forms[w] for w in p) for p in premises]
    second = [" ".join(forms[w] for w in h) for h in hypotheses]
    ids, mask = encode_pairs(tok, first, second, max_length=MAX_LENGTH)
    return {"input_ids": ids, "attention_mask": mask, "label": labels}


def load() -> tuple[dict, dict, dict[str, dict]]:
    """(train, ID test, {language: OOD test}) as arrays; the OOD sets are the same examples
    (seed 2) in each made-up language, as XNLI's are translations of the same pairs."""
    tok = tokenizer()
    train = split(tok, "en", TRAIN, seed=0)
    test = split(tok, "en", TEST, seed=1)
    ood = {lang: split(tok, lang, OOD, seed=2) for lang in LANGUAGES if lang != "en"}
    return train, test, ood
