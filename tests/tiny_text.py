"""A tiny word-level tokenizer with XLM-R's special tokens and pair template, for tests."""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers, processors


def tiny_tokenizer(texts):
    split = pre_tokenizers.Whitespace().pre_tokenize_str
    words = sorted({word for text in texts for word, _ in split(text)})
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    vocab |= {w: i + 4 for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return tok
