"""Hugging Face XLM-R checkpoint folders -> the variables of `earlyjax.models.xlmr.XLMR`.

A folder holds `config.json` and `model.safetensors` (and `tokenizer.json`, read by the data
side), as `huggingface-cli download FacebookAI/xlm-roberta-base --local-dir DIR` leaves them.
The tensors are read with `safetensors.numpy` (no torch). Every tensor name is mapped onto our
trees: the encoder's onto the "backbone" collection (torch Linear weights transposed), a
`classifier.*` or `qa_outputs.*` head onto params["head"] (the other task's head is skipped).
The masked-LM head, the pooler and the `position_ids` buffer are not part of this model and
are skipped; anything else unknown,
any backbone tensor the folder lacks and any shape that differs is an error naming it.
"""

from __future__ import annotations

import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.core import unfreeze

from earlyjax.models.xlmr import BACKBONE, XLMR, XLMRConfig

PREPARE = (
    "download a Hugging Face XLM-R checkpoint folder (config.json, model.safetensors, "
    "tokenizer.json), e.g. `huggingface-cli download FacebookAI/xlm-roberta-base --local-dir DIR`"
    ", and pass --config.model.checkpoint=DIR"
)
SKIPPED = re.compile(r"^(lm_head\.|pooler\.|embeddings\.position_ids$)")
_LINEAR = {"weight": "kernel", "bias": "bias"}
_NORM = {"weight": "scale", "bias": "bias", "gamma": "scale", "beta": "bias"}
_LAYER_PARTS = {
    "attention.self.query": "query",
    "attention.self.key": "key",
    "attention.self.value": "value",
    "attention.output.dense": "attention_out",
    "attention.output.LayerNorm": "attention_ln",
    "intermediate.dense": "intermediate",
    "output.dense": "output",
    "output.LayerNorm": "output_ln",
}
_EMBEDDINGS = {
    "word_embeddings.weight": ("word",),
    "position_embeddings.weight": ("position",),
    "token_type_embeddings.weight": ("token_type",),
}


def fit_problems(*kinds: tuple[str, list[str]]) -> list[str]:
    """ "missing tensors ['a', 'b']..." per (what, names) with names: the parts of a one-line
    error for a checkpoint that does not fit its model (the first five names of each)."""
    return [
        f"{what} {names[:5]}{'...' if len(names) > 5 else ''}" for what, names in kinds if names
    ]


def read_config(checkpoint: str) -> XLMRConfig:
    """The encoder config of a checkpoint folder, or a one-line error saying how to get one."""
    path = os.path.join(checkpoint, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"XLM-R checkpoint {checkpoint!r} has no config.json: {PREPARE}")
    return XLMRConfig.from_json(path)


def target(name: str, model: XLMR) -> tuple[str, tuple[str, ...], bool] | None:
    """(collection, path, transpose) of a Hugging Face tensor name, None for a skipped one.

    Raises KeyError for a name this model has no place for.
    """
    name = name.removeprefix("roberta.")
    if SKIPPED.match(name):
        return None
    if name.startswith("embeddings."):
        rest = name.removeprefix("embeddings.")
        if rest in _EMBEDDINGS:
            return BACKBONE, ("embeddings", *_EMBEDDINGS[rest]), False
        norm = re.fullmatch(r"LayerNorm\.(\w+)", rest)
        if norm and norm[1] in _NORM:
            return BACKBONE, ("embeddings", "ln", _NORM[norm[1]]), False
    layer = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)\.(\w+)", name)
    if layer and layer[2] in _LAYER_PARTS and int(layer[1]) < model.config.num_hidden_layers:
        part, leaf = _LAYER_PARTS[layer[2]], layer[3]
        if part.endswith("_ln") and leaf in _NORM:
            return BACKBONE, (f"layers_{layer[1]}", part, _NORM[leaf]), False
        if leaf in _LINEAR:
            lora = ("frozen",) if part in model.lora.targets else ()
            return BACKBONE, (f"layers_{layer[1]}", part, *lora, _LINEAR[leaf]), leaf == "weight"
    head = re.fullmatch(r"classifier\.(dense|out_proj)\.(weight|bias)", name)
    qa = re.fullmatch(r"qa_outputs\.(weight|bias)", name)
    if (head and model.head_type == "span") or (qa and model.head_type == "classification"):
        return None  # the other task's head: a fine-tuned checkpoint can seed either task
    if head:
        return "params", ("head", head[1], _LINEAR[head[2]]), head[2] == "weight"
    if qa:
        return "params", ("head", _LINEAR[qa[1]]), qa[1] == "weight"
    raise KeyError(name)


def load_checkpoint(checkpoint: str, model: XLMR, variables: Any, *, load_head: bool = False):
    """`variables` (from `model.init`) with the backbone (and with `load_head` the head) read
    from `checkpoint`'s model.safetensors. The LoRA adapters keep their initialisation."""
    from safetensors.numpy import load_file  # noqa: PLC0415  (only the transformer tasks need it)

    path = os.path.join(checkpoint, "model.safetensors")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"XLM-R checkpoint {checkpoint!r} has no model.safetensors: {PREPARE}"
        )
    tensors = load_file(path)
    out = jax.tree.map(np.array, unfreeze(variables))  # nested dicts of writable copies
    unexpected, mismatched, loaded = [], [], set()
    for name, value in tensors.items():
        try:
            where = target(name, model)
        except KeyError:
            unexpected.append(name)
            continue
        if where is None or (where[0] == "params" and not load_head):
            continue
        collection, path_, transpose = where
        value = value.T if transpose else value
        parent = out[collection]
        for key in path_[:-1]:
            parent = parent[key]
        want = parent[path_[-1]].shape
        if value.shape != want:
            mismatched.append(f"{name} {value.shape} (ours {want})")
            continue
        parent[path_[-1]] = value.astype(parent[path_[-1]].dtype)
        loaded.add((collection, path_))
    missing = ["/".join(p) for p in _leaf_paths(out[BACKBONE]) if (BACKBONE, p) not in loaded]
    problems = fit_problems(
        ("missing backbone tensors", missing),
        ("unexpected tensors", unexpected),
        ("shape mismatches", mismatched),
    )
    if problems:
        raise ValueError(
            f"XLM-R checkpoint {path} does not fit the model of its config.json: "
            + "; ".join(problems)
        )
    return jax.tree.map(jnp.asarray, out)


def _leaf_paths(tree: dict, prefix: tuple[str, ...] = ()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaf_paths(value, (*prefix, key))
        else:
            yield (*prefix, key)
