"""Writes the XLM-R parity fixture: tiny random Hugging Face checkpoints and their logits.

    pip install torch transformers safetensors   # this script only; the tests need neither torch
    python scripts/make_xlmr_fixture.py           # -> tests/fixtures/tiny_xlmr/

A tiny random `XLMRobertaConfig` (vocab 64, hidden 32, 2 layers, 4 heads, intermediate 37,
40 positions), every weight drawn N(0, 0.2²) (LayerNorm scales 1 + N(0, 0.1²)) so that
attention and the heads are far from uniform, shared by `XLMRobertaForSequenceClassification`
(3 labels; folder `classification/`) and `XLMRobertaForQuestionAnswering` (folder `span/`),
each saved with `save_pretrained` (config.json + model.safetensors). `reference.npz` holds a
batch of token ids with padding, its attention mask, and both models' eval-mode outputs:
`tests/models/test_xlmr.py` checks that `earlyjax.models.xlmr.XLMR` reproduces them.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from transformers import (
    XLMRobertaConfig,
    XLMRobertaForQuestionAnswering,
    XLMRobertaForSequenceClassification,
)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "tests", "fixtures", "tiny_xlmr")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = XLMRobertaConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=40,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=3,
    )
    classifier = XLMRobertaForSequenceClassification(config).eval()
    with torch.no_grad():
        for name, p in classifier.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    span_config = XLMRobertaConfig.from_dict(config.to_dict())
    span_config.num_labels = 2  # start and end
    span = XLMRobertaForQuestionAnswering(span_config).eval()
    span.roberta.load_state_dict(classifier.roberta.state_dict())
    with torch.no_grad():
        for p in span.qa_outputs.parameters():
            p.copy_(0.2 * torch.randn_like(p))

    # <s> tokens </s> then padding (id 1); lengths 12, 9, 5 and 12.
    rng = np.random.default_rng(0)
    lengths = [12, 9, 5, 12]
    ids = np.full((len(lengths), 12), config.pad_token_id, np.int64)
    for row, n in enumerate(lengths):
        ids[row, :n] = [0, *rng.integers(3, config.vocab_size, n - 2), 2]
    mask = (ids != config.pad_token_id).astype(np.int64)
    with torch.no_grad():
        logits = classifier(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits
        qa = span(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    classifier.save_pretrained(os.path.join(args.out, "classification"), safe_serialization=True)
    span.save_pretrained(os.path.join(args.out, "span"), safe_serialization=True)
    np.savez(
        os.path.join(args.out, "reference.npz"),
        input_ids=ids,
        attention_mask=mask,
        logits=logits.numpy(),
        start_logits=qa.start_logits.numpy(),
        end_logits=qa.end_logits.numpy(),
    )
    print(f"wrote {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
