"""A tiny tanh MLP shared by the metric tests: logits and mean cross-entropy of one batch."""

import jax
import jax.numpy as jnp


def mlp_logits(params, x):
    h = jnp.tanh(x @ params["dense1"]["kernel"] + params["dense1"]["bias"])
    return h @ params["head"]["kernel"] + params["head"]["bias"]


def mlp_loss(params, batch):
    x, y = batch
    logp = jax.nn.log_softmax(mlp_logits(params, x))
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))
