"""XLM-R + LoRA (earlyjax.models.xlmr): parity with Hugging Face's PyTorch model on a tiny
random checkpoint (`scripts/make_xlmr_fixture.py` wrote tests/fixtures/tiny_xlmr/ and the
reference outputs once; these tests need neither torch nor transformers), PEFT's LoRA
convention, and the checkpoint loader's errors."""

from __future__ import annotations

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import FIXTURES
from safetensors.numpy import load_file, save_file

from earlyjax.models.xlmr import XLMR, LoRAConfig
from earlyjax.models.xlmr_checkpoint import load_checkpoint, read_config

FIXTURE = os.path.join(FIXTURES, "tiny_xlmr")
REFERENCE = np.load(os.path.join(FIXTURE, "reference.npz"))


def loaded_model(head_type: str, checkpoint: str | None = None, lora: LoRAConfig | None = None):
    checkpoint = checkpoint or os.path.join(FIXTURE, head_type)
    config = read_config(checkpoint)
    model = XLMR(config, lora=lora or LoRAConfig(), head_type=head_type, num_labels=3)
    ids, mask = jnp.asarray(REFERENCE["input_ids"]), jnp.asarray(REFERENCE["attention_mask"])
    variables = model.init(jax.random.key(0), ids, mask)
    return model, load_checkpoint(checkpoint, model, variables, load_head=True), (ids, mask)


def test_classification_logits_match_hugging_face():
    model, variables, inputs = loaded_model("classification")
    logits = model.apply(variables, *inputs)
    np.testing.assert_allclose(logits, REFERENCE["logits"], rtol=1e-4, atol=2e-5)
    assert np.ptp(REFERENCE["logits"]) > 0.1  # the fixture's outputs are far from constant
    # The LoRA adapters start at B = 0: the fine-tuned model starts as the backbone.
    lora = [leaf for key, leaf in _flat(variables["params"]) if "lora_B" in key]
    assert len(lora) == 2 * 2 and all(np.all(np.asarray(b) == 0) for b in lora)


def test_span_logits_match_hugging_face():
    model, variables, inputs = loaded_model("span")
    start, end = model.apply(variables, *inputs)
    np.testing.assert_allclose(start, REFERENCE["start_logits"], rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(end, REFERENCE["end_logits"], rtol=1e-4, atol=2e-5)


def test_lora_is_peft_scaled_low_rank_update_of_query_and_value():
    # PEFT: W x + b + (alpha / r) B A x; merged, that is the kernel W + (alpha / r) A B here.
    lora = LoRAConfig(r=4, alpha=8.0, dropout=0.2)
    model, variables, inputs = loaded_model("classification", lora=lora)
    params = jax.tree.map(np.array, variables["params"])
    backbone = jax.tree.map(np.array, variables["backbone"])
    rng = np.random.default_rng(0)
    for layer in ("layers_0", "layers_1"):
        for target in ("query", "value"):
            adapter = params[layer][target]
            adapter["lora_B"] = rng.normal(0, 0.3, adapter["lora_B"].shape).astype(np.float32)
            frozen = backbone[layer][target]["frozen"]
            frozen["kernel"] = (
                frozen["kernel"] + lora.scaling * adapter["lora_A"] @ adapter["lora_B"]
            )
    adapted = model.apply(variables | {"params": jax.tree.map(jnp.asarray, params)}, *inputs)
    merged_params = jax.tree_util.tree_map_with_path(
        lambda path, p: np.zeros_like(p) if "lora_B" in jax.tree_util.keystr(path) else p, params
    )
    merged = model.apply({"params": merged_params, "backbone": backbone}, *inputs)
    np.testing.assert_allclose(adapted, merged, rtol=1e-4, atol=1e-5)
    assert np.max(np.abs(adapted - REFERENCE["logits"])) > 1e-2  # the adapters do act
    # Dropout applies to the adapter's input only, in training mode.
    key = jax.random.key(1)
    train = model.apply(variables | {"params": jax.tree.map(jnp.asarray, params)}, *inputs,
                        deterministic=False, rngs={"dropout": key})  # fmt: skip
    assert np.max(np.abs(train - adapted)) > 1e-3


def test_trainable_parameters_are_the_adapters_and_the_head_in_blocks():
    _, variables, _ = loaded_model("classification")
    assert sorted(variables["params"]) == ["head", "layers_0", "layers_1"]
    for layer in ("layers_0", "layers_1"):
        assert sorted(variables["params"][layer]) == ["query", "value"]
    assert sorted(variables["backbone"]) == ["embeddings", "layers_0", "layers_1"]


def test_checkpoint_errors_name_the_tensor_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json: download a Hugging Face"):
        read_config(str(tmp_path / "nowhere"))
    source = os.path.join(FIXTURE, "classification")
    tensors = load_file(os.path.join(source, "model.safetensors"))

    def folder(name, edit):
        path = tmp_path / name
        shutil.copytree(source, path)
        save_file(edit(dict(tensors)), str(path / "model.safetensors"))
        return str(path)

    def without_key(t):
        t.pop("roberta.encoder.layer.1.attention.self.key.weight")
        return t

    with pytest.raises(ValueError, match=r"missing backbone tensors \['layers_1/key/kernel'\]"):
        loaded_model("classification", folder("missing", without_key))
    with pytest.raises(
        ValueError, match=r"unexpected tensors \['roberta.encoder.adapter.weight'\]"
    ):
        loaded_model(
            "classification",
            folder("unexpected", lambda t: t | {"roberta.encoder.adapter.weight": t[
                "classifier.dense.bias"]}),
        )  # fmt: skip
    name = "roberta.encoder.layer.0.intermediate.dense.weight"
    with pytest.raises(ValueError, match=r"shape mismatches \['roberta.encoder.layer.0"):
        loaded_model("classification", folder("shape", lambda t: t | {name: t[name][:, :-1]}))
    os.remove(tmp_path / "shape" / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        loaded_model("classification", str(tmp_path / "shape"))


def _flat(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", value
