"""XLM-RoBERTa in Flax, with LoRA on the attention's query and value (the paper's §4, App. A).

The encoder is Hugging Face's `XLMRobertaModel` (post-LayerNorm BERT layers, RoBERTa's position
ids counted from `pad_token_id + 1` over the non-padding tokens, exact-erf GELU), written here
because `transformers` no longer ships Flax models. Its pre-trained weights are frozen
throughout the paper's fine-tuning, so they live in the variable collection "backbone" (like
BatchNorm statistics, not in "params"); the trainable parameters are the LoRA adapters and the
head only, with the layout the paper's gradual unfreezing needs:

    params = {"layers_0": {"query": {"lora_A", "lora_B"}, "value": {...}}, ...,
              "layers_{L-1}": ..., "head": {...}}

so block i of Algorithm 1 is `layers_i` (12 for base), released top-down, and `head` is
trainable from step 0. LoRA follows PEFT's conventions: the adapted projection is
W x + b + (α / r) B A dropout(x), A from Kaiming-uniform(a = √5) (bound 1 / √fan_in), B = 0,
so the initial model equals the backbone. Heads: "classification" is RoBERTa's (dense on the
first token, tanh, dropout, projection; dropout also before the dense), "span" is a dense to
(start, end) logits per token (`XLMRobertaForQuestionAnswering`).

`earlyjax.models.xlmr_checkpoint` loads a Hugging Face checkpoint folder into these trees.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

BACKBONE = "backbone"
HEADS = ("classification", "span")


# The fields of a config.json that fix the shapes of the checkpoint's tensors: one without
# any of them is refused, not filled in with a guess.
SHAPE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
)
# transformers' `XLMRobertaConfig` class defaults of the other fields: what its `from_pretrained`
# gives a config.json that leaves one out (xlm-roberta-base's own config.json sets
# layer_norm_eps 1e-5, the dataclass default below, but the class default is 1e-12).
HF_DEFAULTS = {
    "layer_norm_eps": 1e-12,
    "pad_token_id": 1,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
}


@dataclasses.dataclass(frozen=True)
class XLMRConfig:
    """The fields of a Hugging Face `XLMRobertaConfig` this encoder uses.

    The defaults are xlm-roberta-base's config.json (for models built in code, e.g. tests);
    `from_json` instead fills a field its config.json lacks with transformers' class default.
    """

    vocab_size: int = 250002
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1

    @classmethod
    def from_json(cls, path: str) -> XLMRConfig:
        """The config of a checkpoint folder's `config.json`; refuses what this encoder lacks."""
        with open(path) as f:
            raw = json.load(f)
        missing = [field for field in SHAPE_FIELDS if field not in raw]
        if missing:
            raise ValueError(
                f"{path}: no {', '.join(missing)}; a checkpoint's config.json gives the shape "
                "of its tensors, so it must set every one of " + ", ".join(SHAPE_FIELDS)
            )
        unsupported = {
            "hidden_act": (raw.get("hidden_act", "gelu"), "gelu"),
            "position_embedding_type": (raw.get("position_embedding_type", "absolute"), "absolute"),
        }
        for field, (got, want) in unsupported.items():
            if got != want:
                raise ValueError(
                    f"{path}: {field} is {got!r}; this XLM-R encoder supports {want!r}"
                )
        if raw["hidden_size"] % raw["num_attention_heads"]:
            raise ValueError(
                f"{path}: hidden_size {raw['hidden_size']} is not a multiple of "
                f"num_attention_heads {raw['num_attention_heads']}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**HF_DEFAULTS, **{k: v for k, v in raw.items() if k in names}})


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """LoRA adapters (Table 5: r 8, alpha 8, dropout 0.2, on query and value)."""

    r: int = 8
    alpha: float = 8.0
    dropout: float = 0.2
    targets: tuple[str, ...] = ("query", "value")

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


def _backbone(module: nn.Module, name: str, shape: tuple[int, ...], init) -> jax.Array:
    """A frozen weight: a variable of the "backbone" collection (random only in tests)."""
    return module.variable(BACKBONE, name, lambda: init(module.make_rng("params"), shape)).value


class FrozenDense(nn.Module):
    """x W + b with W [in, out] and b in the backbone (a torch Linear's weight transposed)."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = _backbone(
            self, "kernel", (x.shape[-1], self.features), nn.initializers.normal(0.02)
        )
        bias = _backbone(self, "bias", (self.features,), nn.initializers.zeros)
        return x @ kernel + bias


class LoRADense(nn.Module):
    """FrozenDense plus PEFT's LoRA: + (α / r) dropout(x) A B, with A [in, r] and B [r, out]."""

    features: int
    lora: LoRAConfig

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        y = FrozenDense(self.features, name="frozen")(x)
        fan_in = x.shape[-1]
        bound = 1 / math.sqrt(fan_in)  # Kaiming-uniform with a = √5, as PEFT (torch's Linear)
        a = self.param("lora_A", _uniform(bound), (fan_in, self.lora.r))
        b = self.param("lora_B", nn.initializers.zeros, (self.lora.r, self.features))
        h = nn.Dropout(self.lora.dropout)(x, deterministic=deterministic)
        return y + (h @ a @ b) * self.lora.scaling


def _uniform(bound: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class LayerNorm(nn.Module):
    eps: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = _backbone(self, "scale", (x.shape[-1],), nn.initializers.ones)
        bias = _backbone(self, "bias", (x.shape[-1],), nn.initializers.zeros)
        mean = jnp.mean(x, -1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), -1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias


class Embeddings(nn.Module):
    config: XLMRConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask, deterministic: bool):
        c = self.config
        normal = nn.initializers.normal(0.02)
        word = _backbone(self, "word", (c.vocab_size, c.hidden_size), normal)
        position = _backbone(self, "position", (c.max_position_embeddings, c.hidden_size), normal)
        token_type = _backbone(self, "token_type", (c.type_vocab_size, c.hidden_size), normal)
        # RoBERTa: positions count the non-padding tokens from pad_token_id + 1; padding gets
        # pad_token_id. (HF derives the mask from input_ids != pad; the attention mask agrees
        # for every input our tokenisation makes.)
        mask = (input_ids != c.pad_token_id).astype(jnp.int32)
        positions = jnp.cumsum(mask, axis=-1) * mask + c.pad_token_id
        x = word[input_ids] + position[positions] + token_type[0]
        x = LayerNorm(c.layer_norm_eps, name="ln")(x)
        return nn.Dropout(c.hidden_dropout_prob)(x, deterministic=deterministic)


class Layer(nn.Module):
    """One post-LayerNorm transformer layer; query and value carry LoRA adapters."""

    config: XLMRConfig
    lora: LoRAConfig

    @nn.compact
    def __call__(self, x, attention_mask, deterministic: bool):
        c = self.config
        heads, dim = c.num_attention_heads, c.hidden_size // c.num_attention_heads

        def projection(name):
            if name in self.lora.targets:
                return LoRADense(c.hidden_size, self.lora, name=name)(x, deterministic)
            return FrozenDense(c.hidden_size, name=name)(x)

        def split(t):
            return t.reshape(*t.shape[:-1], heads, dim)

        q, k, v = (split(projection(n)) for n in ("query", "key", "value"))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dim)
        bias = jnp.where(attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(scores.dtype).min)
        probs = jax.nn.softmax(scores + bias, axis=-1)
        probs = nn.Dropout(c.attention_probs_dropout_prob)(probs, deterministic=deterministic)
        context = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(x.shape)
        attended = FrozenDense(c.hidden_size, name="attention_out")(context)
        attended = nn.Dropout(c.hidden_dropout_prob)(attended, deterministic=deterministic)
        x = LayerNorm(c.layer_norm_eps, name="attention_ln")(x + attended)
        h = jax.nn.gelu(FrozenDense(c.intermediate_size, name="intermediate")(x), approximate=False)
        h = FrozenDense(c.hidden_size, name="output")(h)
        h = nn.Dropout(c.hidden_dropout_prob)(h, deterministic=deterministic)
        return LayerNorm(c.layer_norm_eps, name="output_ln")(x + h)


class ClassificationHead(nn.Module):
    """RoBERTa's: dropout, dense, tanh, dropout, projection, on the first (<s>) token."""

    hidden_size: int
    num_labels: int
    dropout: float

    def setup(self):
        self.dense = nn.Dense(self.hidden_size, kernel_init=nn.initializers.normal(0.02))
        self.out_proj = nn.Dense(self.num_labels, kernel_init=nn.initializers.normal(0.02))
        self.drop = nn.Dropout(self.dropout)

    def __call__(self, x, deterministic: bool):
        x = self.drop(x[:, 0], deterministic=deterministic)
        x = jnp.tanh(self.dense(x))
        return self.out_proj(self.drop(x, deterministic=deterministic))


class XLMR(nn.Module):
    """XLM-R encoder + LoRA + a head. `__call__` returns logits [B, num_labels] ("classification")
    or (start, end) logits [B, T] each ("span"); `encode` the last hidden states [B, T, H]."""

    config: XLMRConfig
    lora: LoRAConfig = LoRAConfig()
    head_type: str = "classification"
    num_labels: int = 3

    def setup(self):
        c = self.config
        if self.head_type not in HEADS:
            raise ValueError(f"head_type must be one of {HEADS}, got {self.head_type!r}")
        self.embeddings = Embeddings(c)
        self.layers = [Layer(c, self.lora) for _ in range(c.num_hidden_layers)]
        if self.head_type == "classification":
            self.head = ClassificationHead(c.hidden_size, self.num_labels, c.hidden_dropout_prob)
        else:
            self.head = nn.Dense(2, kernel_init=nn.initializers.normal(0.02))

    def encode(self, input_ids, attention_mask, deterministic: bool = True) -> jax.Array:
        x = self.embeddings(input_ids, attention_mask, deterministic)
        for layer in self.layers:
            x = layer(x, attention_mask, deterministic)
        return x

    def features(self, input_ids, attention_mask) -> jax.Array:
        """Eval-mode pooled features [B, H]: the classification head's tanh(dense(<s>))."""
        if self.head_type != "classification":
            raise ValueError("features are the classification head's; this model has a span head")
        x = self.encode(input_ids, attention_mask, deterministic=True)
        return jnp.tanh(self.head.dense(x[:, 0]))

    def __call__(self, input_ids, attention_mask, deterministic: bool = True) -> Any:
        x = self.encode(input_ids, attention_mask, deterministic)
        if self.head_type == "classification":
            return self.head(x, deterministic)
        logits = self.head(x)
        return logits[..., 0], logits[..., 1]
