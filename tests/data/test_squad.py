"""SQuAD-format QA (earlyjax.data.squad): windows and labels, n-best decoding, official scores.

The tokenizer is a tiny word-level one built here, with XLM-R's special tokens and pair
template, so that the windows can be checked word by word."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import tiny_tokenizer

from earlyjax.data import squad

CONTEXT = " ".join(f"w{i}" for i in range(40)) + " the answer is here ."
QUESTION = "  where is it ?"
ANSWER = "answer is here"
START = CONTEXT.index(ANSWER)


def windows(max_length=16, stride=4):
    texts = [CONTEXT, QUESTION, "short context"]
    tok = tiny_tokenizer(texts)
    feats = squad.features(
        tok, [QUESTION, QUESTION], [CONTEXT, "short context"], [START, 0], [ANSWER, "short"],
        max_length=max_length, stride=stride,
    )  # fmt: skip
    return tok, feats


def test_windows_overlap_by_the_stride_cover_the_context_and_carry_the_answer():
    tok, f = windows()
    first = f.example == 0
    assert first.sum() > 3 and (f.example == 1).sum() == 1
    assert f.input_ids.shape[1] == 16 and np.all(f.input_ids[:, 0] == 0)
    assert np.all((f.input_ids == 1) == (f.attention_mask == 0))  # padding is masked
    covered = []
    for row in np.flatnonzero(first):
        spans = [tuple(o) for o in f.offsets[row] if o[0] >= 0]
        covered.append(spans)
        text = [CONTEXT[a:b] for a, b in spans]
        ids = [tok.token_to_id(t) for t in text]
        context_ids = [
            i for i, o in zip(f.input_ids[row], f.offsets[row], strict=True) if o[0] >= 0
        ]
        assert ids == context_ids  # the offsets point at the tokens' own text
    for a, b in zip(covered, covered[1:], strict=False):
        assert len(set(a) & set(b)) == 4  # consecutive windows share `stride` tokens
    words = {tuple(o) for spans in covered for o in spans}
    assert len(words) == len(CONTEXT.split())
    labelled = [row for row in np.flatnonzero(first) if f.start[row] > 0]
    assert labelled  # some window holds the whole answer, and its label points at it
    for row in labelled:
        a, b = f.offsets[row, f.start[row], 0], f.offsets[row, f.end[row], 1]
        assert CONTEXT[a:b] == ANSWER
    for row in np.flatnonzero(first):
        if row not in labelled:
            spans = f.offsets[row][f.offsets[row, :, 0] >= 0]
            assert not (spans[0, 0] <= START and spans[-1, 1] >= START + len(ANSWER))
            assert f.end[row] == 0


def test_a_question_that_leaves_no_room_for_the_stride_is_named_before_any_window():
    # QUESTION is 4 tokens: <s> q </s></s> c </s> leaves 16 - 4 - 4 = 8 context tokens.
    windows(max_length=16, stride=7)
    with pytest.raises(ValueError, match="leave 8 context tokens .* stride of 8: lower"):
        windows(max_length=16, stride=8)


def test_best_answers_decode_the_labelled_spans_and_skip_impossible_ones():
    _, f = windows()
    start_logits = np.zeros(f.input_ids.shape, np.float32)
    end_logits = np.zeros(f.input_ids.shape, np.float32)
    start_logits[np.arange(len(f.start)), f.start] = 5.0
    end_logits[np.arange(len(f.end)), f.end] = 5.0
    start_logits[:, 1] = 50.0  # a question token: never part of an answer
    end_logits[:, -1] = 50.0  # padding: never either
    answers = squad.best_answers(f, start_logits, end_logits, [CONTEXT, "short context"])
    assert answers == [ANSWER, "short"]
    # An end before its start, or a span longer than allowed, is not an answer.
    reversed_ = squad.best_answers(f, end_logits, start_logits, [CONTEXT, "short context"],
                                   max_answer_tokens=1)  # fmt: skip
    assert reversed_[0] != ANSWER and len(reversed_[0].split()) <= 1


def test_squad_scores_follow_the_official_normalisation():
    assert squad.normalize("The  Cat, sat!") == "cat sat"
    assert squad.exact_match("the cat", "Cat.") == 1.0
    assert squad.f1("the big cat", "a cat") == pytest.approx(2 / 3)
    assert squad.f1("dog", "cat") == 0.0
    got = squad.score(["cat", "dog"], [["a cat", "the kitten"], ["wolf"]])
    assert got == {"exact_match": 50.0, "f1": 50.0}
    with pytest.raises(ValueError, match="one prediction per example"):
        squad.score(["cat"], [["cat"], ["dog"]])


def test_mlqa_normalises_per_language():
    assert squad.normalize("Der Hund", "de") == "hund"
    assert squad.normalize("¿Dónde está la casa?", "es") == "dónde está casa"
    assert squad.normalize("北京大学", "zh") == "北 京 大 学"
    assert squad.f1("北京", "北京大学", "zh") == pytest.approx(2 / 3)
    assert squad.normalize("الكتاب", "ar") == "كتاب"
    assert squad.normalize("The «answer»", "hi") == "the answer"  # no articles in Hindi
    assert squad.normalize("«answer»") == "«answer»"  # SQuAD's punctuation is ASCII only
    with pytest.raises(ValueError, match="MLQA normalises"):
        squad.normalize("x", "fr")
