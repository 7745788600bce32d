"""1 vs 4 devices: training and every metric give the same numbers (issue 6).

Runs only in a process with 4 CPU devices (`XLA_FLAGS=--xla_force_host_platform_device_count=4`),
which tests/test_multidevice.py starts, so the flag never leaks into the other tests.
"""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from earlyjax.checkpoint import Checkpointer
from earlyjax.config import ConfigError
from earlyjax.metric_log import read_records
from earlyjax.metrics import (
    average_sharpness,
    fisher_trace,
    hessian_top_eigenvalue,
    worst_sharpness,
)
from earlyjax.parallel import data_mesh
from earlyjax.train import build_experiment, train_and_evaluate

pytestmark = pytest.mark.skipif(
    jax.device_count() != 4, reason="needs 4 devices: run through tests/test_multidevice.py"
)


def final_state(workdir, like):
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    state, _ = ckpt.restore(ckpt.latest_step(), like)
    ckpt.close()
    return state


def test_training_on_1_and_4_devices_agrees(tiny_config, tiny_dataset, tmp_path):
    """(Recording over a mesh is checked by tests/test_multihost.py, the metrics below.)"""
    c = tiny_config
    one, four = str(tmp_path / "one"), str(tmp_path / "four")
    r1 = train_and_evaluate(c, one, dataset=tiny_dataset, mesh=data_mesh(1))
    r4 = train_and_evaluate(c, four, dataset=tiny_dataset, mesh=data_mesh(4))

    _, like = build_experiment(c, tiny_dataset)
    s1, s4 = final_state(one, like), final_state(four, like)
    assert int(s1.step) == int(s4.step) == c.total_steps
    for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s4), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    # Parameters moved (the comparison is not between two untouched initialisations).
    _, init = build_experiment(c, tiny_dataset)
    moved = [
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(init.params), strict=True)
    ]
    assert max(moved) > 1e-3
    assert r1["id_accuracy"] == pytest.approx(r4["id_accuracy"], abs=1.01)  # one digit of 100
    assert read_records(os.path.join(one, "metrics.jsonl"))[0]["loss"] == pytest.approx(
        read_records(os.path.join(four, "metrics.jsonl"))[0]["loss"], rel=1e-6
    )


def test_the_train_step_keeps_the_state_replicated(tiny_config, tiny_dataset, tmp_path):
    from earlyjax import parallel
    from earlyjax.data.pipeline import train_batches
    from earlyjax.train import make_train_step

    mesh = data_mesh(4)
    experiment, state = build_experiment(tiny_config, tiny_dataset)
    state = parallel.put_replicated(state, mesh)
    step = make_train_step(experiment, augment=False, freeze_bn_stats=False, mesh=mesh)
    _, batch = next(
        iter(train_batches(tiny_dataset.train, seed=0, batch_size=32, start_step=0, stop_step=1,
                           mesh=mesh))
    )  # fmt: skip
    assert len(batch["image"].sharding.device_set) == 4
    assert batch["image"].addressable_shards[0].data.shape[0] == 8  # 32 split over 4
    state, _ = step(state, batch)
    for leaf in jax.tree.leaves(state):
        assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 4


def test_augmentation_of_a_split_batch_is_bit_identical():
    """Random crop + flip inside the sharded step draws the same numbers as on one device
    (JAX's partitionable threefry), so 1 vs 4 devices differ only by float reassociation.

    (Training with augmentation is not compared parameter by parameter: zero-padded crops make
    some BatchNorm channels nearly constant, whose variance amplifies the reassociation of the
    batch mean beyond a useful tolerance within a few steps; without augmentation the two runs
    stay within 1e-7.)
    """
    from earlyjax import parallel
    from earlyjax.data.pipeline import random_crop_flip

    images = np.random.default_rng(0).integers(0, 256, (32, 12, 12, 3), dtype=np.uint8)
    augment = jax.jit(random_crop_flip)
    split = parallel.global_batch({"image": images}, data_mesh(4))["image"]
    for step in range(4):
        key = jax.random.fold_in(jax.random.key(0), step)
        np.testing.assert_array_equal(
            np.asarray(augment(key, images)), np.asarray(augment(key, split))
        )


def test_a_batch_that_does_not_split_is_refused(tiny_config, tiny_dataset, tmp_path):
    tiny_config.batch_size = 30
    with pytest.raises(ConfigError, match="batch_size=30 does not split evenly over 4 devices"):
        train_and_evaluate(tiny_config, str(tmp_path / "w"), dataset=tiny_dataset)
    assert not os.path.exists(tmp_path / "w")


# ----------------------------------------------------------------------------------------------
# Metrics: the same value with mesh=None and a 4-device mesh, and the work really split
# ----------------------------------------------------------------------------------------------


def mlp_params():
    k1, k2 = jax.random.split(jax.random.key(0))
    return {
        "hidden": {"kernel": jax.random.normal(k1, (5, 7)) * 0.7, "bias": jnp.zeros((7,))},
        "head": {"kernel": jax.random.normal(k2, (7, 3)) * 0.7, "bias": jnp.full((3,), 0.1)},
    }


def mlp_logits(params, x):
    h = jnp.tanh(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    return h @ params["head"]["kernel"] + params["head"]["bias"]


def mlp_loss(params, batch):
    x, y = batch
    logp = jax.nn.log_softmax(mlp_logits(params, x))
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))


class TinyCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), name="conv")(x))
        return nn.Dense(3, name="head")(jnp.mean(x, axis=(1, 2)))


def cnn_params():
    return TinyCNN().init(jax.random.key(2), jnp.zeros((1, 6, 6, 2)))["params"]


def cnn_logits(params, x):
    return TinyCNN().apply({"params": params}, x)


def cnn_loss(params, batch):
    x, y = batch
    logp = jax.nn.log_softmax(cnn_logits(params, x))
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))


def images(n_batches=4, size=12):
    kx, ky = jax.random.split(jax.random.key(4))
    return (
        jax.random.normal(kx, (n_batches, size, 6, 6, 2)),
        jax.random.randint(ky, (n_batches, size), 0, 3),
    )


def batches(n_batches=4, size=12):
    kx, ky = jax.random.split(jax.random.key(3))
    return (
        jax.random.normal(kx, (n_batches, size, 5)),
        jax.random.randint(ky, (n_batches, size), 0, 3),
    )


METRICS = {
    "fisher": lambda mesh: fisher_trace(
        mlp_logits, mlp_params(), batches()[0].reshape(-1, 5), jax.random.key(1),
        chunk_size=8, mesh=mesh,
    ),
    "fisher_exact": lambda mesh: fisher_trace(
        mlp_logits, mlp_params(), batches()[0].reshape(-1, 5), jax.random.key(1),
        exact=True, mesh=mesh,
    ),
    # Per-example gradients of a convolution: where XLA's automatic partitioning went wrong.
    "fisher_cnn": lambda mesh: fisher_trace(
        cnn_logits, cnn_params(), images()[0].reshape(-1, 6, 6, 2), jax.random.key(1),
        chunk_size=8, mesh=mesh,
    ),
    "avg_sharpness_cnn": lambda mesh: average_sharpness(
        cnn_loss, cnn_params(), images(), jax.random.key(1), rho=0.05, n_samples=15, mesh=mesh
    ),
    "worst_sharpness_cnn": lambda mesh: worst_sharpness(
        cnn_loss, cnn_params(), images(n_batches=6), jax.random.key(1), rho=0.05, n_iters=4,
        mesh=mesh,
    )[0],
    "hessian_cnn": lambda mesh: hessian_top_eigenvalue(
        cnn_loss, cnn_params(), images(), jax.random.key(1), n_iters=10, mesh=mesh
    ),
    "avg_sharpness": lambda mesh: average_sharpness(
        mlp_loss, mlp_params(), batches(), jax.random.key(1), rho=0.05, n_samples=15, mesh=mesh
    ),
    "worst_sharpness": lambda mesh: worst_sharpness(
        mlp_loss, mlp_params(), batches(n_batches=6), jax.random.key(1), rho=0.05, n_iters=6,
        mesh=mesh,
    )[0],
    "hessian": lambda mesh: hessian_top_eigenvalue(
        mlp_loss, mlp_params(), batches(), jax.random.key(1), n_iters=10, mesh=mesh
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(METRICS))
def test_metric_on_1_and_4_devices_agree(name):
    single = float(METRICS[name](None))
    split = float(METRICS[name](data_mesh(4)))
    assert single != 0.0
    assert split == pytest.approx(single, rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("name", ["fisher", "avg_sharpness", "worst_sharpness"])
def test_metric_work_is_split_across_devices(name):
    """The compiled program is partitioned: per-device pieces combined by an all-reduce."""
    mesh = data_mesh(4)
    text = jax.jit(lambda: METRICS[name](mesh)).lower().compile().as_text()
    assert "num_partitions=4" in text
    assert any(op in text for op in ("all-reduce", "all-gather", "reduce-scatter"))


def test_worst_sharpness_delta_comes_back_per_batch_on_4_devices():
    value, delta = worst_sharpness(
        mlp_loss, mlp_params(), batches(n_batches=6), jax.random.key(1), rho=0.05, n_iters=4,
        mesh=data_mesh(4),
    )  # fmt: skip
    ref_value, ref_delta = worst_sharpness(
        mlp_loss, mlp_params(), batches(n_batches=6), jax.random.key(1), rho=0.05, n_iters=4
    )
    for a, b in zip(jax.tree.leaves(delta), jax.tree.leaves(ref_delta), strict=True):
        assert a.shape == b.shape and a.shape[0] == 6
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)
