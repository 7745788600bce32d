"""A tiny word-level tokenizer with XLM-R's special tokens and pair template, for tests."""

from __future__ import annotations

from tokenizers import pre_tokenizers

from earlyjax.data.text import word_level_tokenizer


def tiny_tokenizer(texts):
    split = pre_tokenizers.Whitespace().pre_tokenize_str
    return word_level_tokenizer(word for text in texts for word, _ in split(text))
