"""Tokenisation with a Hugging Face checkpoint's `tokenizer.json` (the `tokenizers` library).

The tokenizer of an XLM-R folder is SentencePiece's unigram model with XLM-R's special tokens
and its pair template (<s> A </s></s> B </s>); `encode_pairs` turns sentence pairs (NLI's
premise and hypothesis) into fixed-length model inputs, truncating the longer sequence first
and padding with <pad>, as Hugging Face's `run_glue` does (`max_length` 128 by default).
SQuAD's windows are in `earlyjax.data.squad`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

MAX_PAIR_LENGTH = 128


def load_tokenizer(checkpoint: str):
    """The `tokenizers.Tokenizer` of a checkpoint folder, or an error saying how to get one."""
    from tokenizers import Tokenizer  # noqa: PLC0415  (only the transformer tasks need it)

    # Here, not at the top: a config file that imports earlyjax.data must not import JAX.
    from earlyjax.models.xlmr_checkpoint import PREPARE  # noqa: PLC0415

    path = os.path.join(checkpoint, "tokenizer.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"XLM-R checkpoint {checkpoint!r} has no tokenizer.json: {PREPARE}")
    return Tokenizer.from_file(path)


def word_level_tokenizer(words):
    """A word-level `tokenizers.Tokenizer` over `words` with XLM-R's special tokens (<s> 0,
    <pad> 1, </s> 2, <unk> 3) and pair template: the generated data's, and the tests'."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors  # noqa: PLC0415

    specials = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    vocab = specials | {w: i + len(specials) for i, w in enumerate(sorted(set(words)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return tok


def padded_copy(tokenizer, max_length: int):
    """A copy of `tokenizer` padding to `max_length` with its <pad> token (the original stays)."""
    tok = tokenizer.__class__.from_str(tokenizer.to_str())
    pad_id = tok.token_to_id("<pad>")
    if pad_id is None:
        raise ValueError("the tokenizer has no <pad> token; use the checkpoint's tokenizer.json")
    tok.enable_padding(length=max_length, pad_id=pad_id, pad_token="<pad>")
    return tok


def encode_pairs(
    tokenizer, first: Sequence[str], second: Sequence[str], *, max_length: int = MAX_PAIR_LENGTH
) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask), int32 [N, max_length], of the pairs (first[i], second[i])."""
    if len(first) != len(second):
        raise ValueError(f"encode_pairs: {len(first)} first sequences for {len(second)} second")
    tok = padded_copy(tokenizer, max_length)
    tok.enable_truncation(max_length, strategy="longest_first")
    encodings = tok.encode_batch(list(zip(first, second, strict=True)))
    ids = np.asarray([e.ids for e in encodings], np.int32).reshape(len(first), max_length)
    mask = np.asarray([e.attention_mask for e in encodings], np.int32).reshape(ids.shape)
    return ids, mask
