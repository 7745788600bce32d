"""Sentence-pair tokenisation (earlyjax.data.text) with a tiny tokenizer of XLM-R's layout."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import tiny_tokenizer

from earlyjax.data.text import encode_pairs, load_tokenizer

PREMISES = ["a man plays a guitar on the stage tonight", "it rains", "it rains"]
HYPOTHESES = [
    "someone plays music",
    "the sun shines over the quiet town today",
    "someone plays music",
]


def test_pairs_follow_the_template_truncate_the_longer_and_pad():
    tok = tiny_tokenizer(PREMISES + HYPOTHESES)
    ids, mask = encode_pairs(tok, PREMISES, HYPOTHESES, max_length=12)
    assert ids.shape == mask.shape == (3, 12) and ids.dtype == np.int32
    s, pad, e = (tok.token_to_id(t) for t in ("<s>", "<pad>", "</s>"))
    for row in range(3):
        n = int(mask[row].sum())
        assert ids[row, 0] == s and ids[row, n - 1] == e
        assert np.all(ids[row, n:] == pad)
        seps = np.flatnonzero(ids[row, :n] == e)
        assert len(seps) == 3 and seps[1] == seps[0] + 1  # <s> A </s></s> B </s>

    # Cut to 12 tokens (8 of text) from the longer sequence: the shorter one stays whole.
    def words(text, n=None):
        return tok.encode(text, add_special_tokens=False).ids[:n]

    assert ids[0].tolist() == [s, *words(PREMISES[0], 5), e, e, *words(HYPOTHESES[0]), e]
    assert ids[1].tolist() == [s, *words(PREMISES[1]), e, e, *words(HYPOTHESES[1], 6), e]
    assert mask.sum(1).tolist() == [12, 12, 9]  # the short pair is padded


def test_missing_tokenizer_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no tokenizer.json: download"):
        load_tokenizer(str(tmp_path))
    with pytest.raises(ValueError, match="2 first sequences for 1 second"):
        encode_pairs(tiny_tokenizer(PREMISES), PREMISES[:2], HYPOTHESES[:1])
