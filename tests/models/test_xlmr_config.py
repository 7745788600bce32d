"""XLMRConfig.from_json: a Hugging Face config.json without a non-shape field gets
transformers' `XLMRobertaConfig` class default (as `from_pretrained` does), one without a
shape field is refused with one line naming the field and the file."""

from __future__ import annotations

import json
import os

import pytest

from earlyjax.models.xlmr_checkpoint import read_config

SHAPES = {
    "vocab_size": 64,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "max_position_embeddings": 40,
    "type_vocab_size": 1,
}


def write_config(folder, raw: dict) -> str:
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(raw, f)
    return str(folder)


def test_missing_non_shape_fields_take_transformers_class_defaults(tmp_path):
    config = read_config(write_config(tmp_path, SHAPES))
    assert config.layer_norm_eps == 1e-12  # not xlm-roberta-base's 1e-5
    assert config.pad_token_id == 1
    assert config.hidden_dropout_prob == 0.1
    assert config.attention_probs_dropout_prob == 0.1
    assert {k: getattr(config, k) for k in SHAPES} == SHAPES


def test_a_set_non_shape_field_is_kept(tmp_path):
    config = read_config(write_config(tmp_path, {**SHAPES, "layer_norm_eps": 1e-5}))
    assert config.layer_norm_eps == 1e-5


@pytest.mark.parametrize("field", sorted(SHAPES))
def test_a_missing_shape_field_is_refused_naming_it_and_the_file(tmp_path, field):
    raw = {k: v for k, v in SHAPES.items() if k != field}
    with pytest.raises(ValueError) as e:
        read_config(write_config(tmp_path, raw))
    message = str(e.value)
    assert field in message.split(";")[0]
    assert os.path.join(str(tmp_path), "config.json") in message
    assert "\n" not in message
