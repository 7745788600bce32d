"""1 vs 4 devices: the train step and every metric compute the same numbers (issue 6).

Runs only in a process with 4 CPU devices (`XLA_FLAGS=--xla_force_host_platform_device_count=4`),
which tests/test_multidevice.py starts, so the flag never leaks into the other tests.

"The same numbers" means: equal up to float reassociation. Splitting the batch over devices
turns each batch mean (loss, gradients, BatchNorm statistics) into a sum of per-device partial
sums, which float32 rounds differently. So the training tests assert agreement relative to each
leaf's scale (`assert_close_to_scale`), with tolerances derived from that rounding and from the
gap measured between two ONE-device runs that differ only in the order of the batch's rows (the
same reassociation without any device in play), never from one machine's trajectory.

Why the train-step tests run ResNet-18 with GELU in place of ReLU (the `smooth_resnet`
fixture): ReLU's derivative jumps at 0, and a width-4 step evaluates ~0.9M pre-activations, a few
of which lie within float32 rounding of 0 (on the first batch, one within 1e-6). Reassociation
can flip such a gate and move a gradient entry by one example-pixel's share of it. Measured on ONE
device, the first batch with its rows permuted: a layer1 conv-kernel gradient moved by 5.9e-2 of
its scale (one of 3 permutations; the others by <= 6e-6); with augmentation, 1 vs 4 devices
differed by 6.7e-3 after one step, and by 0.88 of a leaf's scale after 8 steps (a flip at step 5).
That jump is how the ReLU model's gradient behaves in float32 on any hardware, not a property of
data parallelism, and whether a run meets one depends on the machine's rounding: the likely cause
of this file's earlier failure on another x86-64 machine (a 4-entry leaf off after 8 steps, where
this machine stayed within 2.4e-6). With a smooth activation the step is a smooth function of its
inputs and the gaps are those of rounding alone. The ReLU model's forward pass (loss, BatchNorm
statistics) is continuous, and is compared as it is.

A broken data parallelism is caught. Checked by running this file against two deliberately
broken train steps (a per-device `shard_map` of the step that returns device 0's state, in a
scratch copy of the repository): per-device BatchNorm statistics with all-reduced gradients, and
global BatchNorm statistics (`axis_name`) with no gradient all-reduce. Every training test below
failed for both; the largest gaps, relative to the leaf's scale (tolerances: 1e-4 and 2e-4):

  broken step                one-step gradients   ReLU model, one step          8-step state
  per-device BN statistics   2.4  (1.25)          BN statistics 0.47 (0.6)      1.54
  no gradient all-reduce     10.5 (6.6)           BN statistics 0.12 (loss      5.88
                                                  2.56 instead of 2.38)

In parentheses: the one-step tests without augmentation, where the broken step's per-device
crops (each device drawing offsets for its own 8 rows) do not add to the gap.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import (
    EPS32,
    assert_close_to_scale,
    classification_batches,
    cnn_logits,
    cnn_loss,
    cnn_params,
    mlp_logits,
    mlp_loss,
    mlp_params,
)

from earlyjax import parallel
from earlyjax.checkpoint import Checkpointer
from earlyjax.config import ConfigError
from earlyjax.data.pipeline import random_crop_flip, train_batches
from earlyjax.metric_log import read_records
from earlyjax.metrics import (
    average_sharpness,
    fisher_trace,
    hessian_top_eigenvalue,
    worst_sharpness,
)
from earlyjax.parallel import data_mesh
from earlyjax.train import make_train_step, setup, train_and_evaluate

pytestmark = pytest.mark.skipif(
    jax.device_count() != 4, reason="needs 4 devices: run through tests/test_multidevice.py"
)

# One step, gradients and BatchNorm statistics, relative to each leaf's largest entry. A gradient
# entry is a sum over up to B*H*W = 32*28*28 = 25,088 terms of both signs that largely cancel;
# reassociating it moves it by about EPS32 * sum|terms|, which relative to the leaf's largest
# entry measured up to 1.15e-5 for 1 vs 4 devices and 8.7e-6 for a row permutation on one
# device (a 4-entry BatchNorm scale of layer1); BatchNorm statistics moved by <= 7.8e-7.
# 1e-4 (~840 EPS32) is 9x the largest gap measured; a broken data parallelism moved gradients by
# more than their scale (the module docstring).
ONE_STEP_TOL = 1e-4

# 8 steps (lr 0.05, momentum 0.9, k = 2), the final train state relative to each leaf's largest
# entry. Measured with GELU: 1 vs 4 devices 8.2e-6 (1.0e-5 with augmentation), two row
# permutations on one device 7.4e-6 and 9.0e-6; the gap grows about linearly (~1e-6 after one
# step), the trajectory does not amplify it. 2e-4 is 20x the largest; a broken data parallelism
# moved the state by more than its scale (the module docstring).
EIGHT_STEP_TOL = 2e-4


def step_gradients(opt_state):
    """The momentum buffers keyed by parameter path. After the first step with weight decay 0,
    PyTorch SGD's buffer is the gradient itself (buf = 0.9 * 0 + g, `freezing.pytorch_sgd`)."""
    grads = {}
    for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, optax.TraceState)):
        if isinstance(s, optax.TraceState):
            for path, g in jax.tree_util.tree_flatten_with_path(s.trace)[0]:
                grads[jax.tree_util.keystr(path)] = np.asarray(g)
    return grads


def first_step(config, dataset, num_devices):
    """One train step on the first batch over `num_devices` devices, from the same initial
    state: (state before, state after on the devices, stats, batch on the devices)."""
    mesh = data_mesh(num_devices)
    run_setup, state = setup(config, dataset)
    before = jax.device_get(state)
    step = make_train_step(run_setup, state, mesh=mesh)
    batches = train_batches(
        dataset.train, seed=config.seed, batch_size=config.batch_size, start_step=0,
        stop_step=1, prefetch=0, mesh=mesh,
    )  # fmt: skip
    _, batch = next(iter(batches))
    after, stats = step(parallel.put_replicated(state, mesh), batch)
    return before, after, stats, batch


def one_step_config(config):
    """Every group trains from step 0 (k=None) and no weight decay: the first step's momentum
    buffers are then the gradients of every parameter. With augmentation (crop + flip of the
    split batch inside the step)."""
    config.unfreeze.k = None
    config.optimizer.weight_decay = 0.0
    config.data.augment = True
    return config


def test_one_step_gradients_and_updates_agree_on_1_and_4_devices(
    smooth_resnet, tiny_config, tiny_dataset
):
    c = one_step_config(tiny_config)
    before, after1, stats1, _ = first_step(c, tiny_dataset, 1)
    _, after4, stats4, batch4 = first_step(c, tiny_dataset, 4)

    # The 4-device step really is split: 8 rows per device in, a state replicated on all 4 out.
    assert len(batch4["image"].sharding.device_set) == 4
    assert batch4["image"].addressable_shards[0].data.shape[0] == 8
    for leaf in jax.tree.leaves(after4):
        assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 4
    after1, after4 = jax.device_get((after1, after4))

    grads1, grads4 = step_gradients(after1.opt_state), step_gradients(after4.opt_state)
    assert len(grads1) == len(jax.tree.leaves(before.params))  # every parameter's gradient
    assert min(float(np.max(np.abs(g))) for g in grads1.values()) > 0
    assert_close_to_scale(grads4, grads1, ONE_STEP_TOL, what="gradient")

    # The update p1 - p0 = -lr * g. Storing p1 rounds it by up to half a float32 ulp of p, so two
    # runs' updates may differ by an ulp of p on top (allowed: 2 EPS32 max|p|); for BatchNorm
    # scales (~1) moved by ~1e-3 that alone is 2.4e-4 of the update's scale (measured).
    def update(after):
        return jax.tree.map(lambda a, b: a - b, after.params, before.params)

    ulp = {
        jax.tree_util.keystr(path): 2 * EPS32 * float(np.max(np.abs(p)))
        for path, p in jax.tree_util.tree_flatten_with_path(before.params)[0]
    }
    assert_close_to_scale(update(after4), update(after1), ONE_STEP_TOL, floor=ulp, what="update")

    def stats_change(after):  # running = 0.9 running + 0.1 batch: the batch statistics' share
        return jax.tree.map(lambda a, b: a - b, after.model_state, before.model_state)

    assert_close_to_scale(stats_change(after4), stats_change(after1), ONE_STEP_TOL, what="BN")
    assert float(stats4["loss"]) == pytest.approx(float(stats1["loss"]), rel=1e-6)
    assert int(after1.step) == int(after4.step) == 1


def test_one_step_forward_of_the_relu_model_agrees_on_1_and_4_devices(tiny_config, tiny_dataset):
    """The unmodified (ReLU) ResNet-18: the loss and the BatchNorm statistics, continuous in the
    inputs, agree to rounding (measured 1e-7 and 7.6e-7 of their scale); its gradients are not
    compared (see the module docstring)."""
    c = one_step_config(tiny_config)
    before, after1, stats1, _ = first_step(c, tiny_dataset, 1)
    _, after4, stats4, _ = first_step(c, tiny_dataset, 4)
    after1, after4 = jax.device_get((after1, after4))

    def stats_change(after):
        return jax.tree.map(lambda a, b: a - b, after.model_state, before.model_state)

    assert_close_to_scale(stats_change(after4), stats_change(after1), ONE_STEP_TOL, what="BN")
    assert float(stats4["loss"]) == pytest.approx(float(stats1["loss"]), rel=1e-6)


def final_state(workdir, like):
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    state, _ = ckpt.restore(ckpt.latest_step(), like)
    ckpt.close()
    return state


@pytest.mark.slow  # ~20 s; the one-step tests above check the same arithmetic in the default run
def test_eight_steps_on_1_and_4_devices_stay_within_float_drift(
    smooth_resnet, tiny_config, tiny_dataset, tmp_path
):
    """The whole run (pipeline, replicated state, checkpoint, evaluation) on 1 and 4 devices.
    (Recording over a mesh is checked by tests/test_multihost.py, the metrics below.)"""
    c = tiny_config
    one, four = str(tmp_path / "one"), str(tmp_path / "four")
    r1 = train_and_evaluate(c, one, dataset=tiny_dataset, mesh=data_mesh(1))
    r4 = train_and_evaluate(c, four, dataset=tiny_dataset, mesh=data_mesh(4))

    _, init = setup(c, tiny_dataset)
    s1, s4 = final_state(one, init), final_state(four, init)
    assert int(s1.step) == int(s4.step) == c.total_steps
    assert_close_to_scale(s4, s1, EIGHT_STEP_TOL, what="state")
    # Parameters moved (the comparison is not between two untouched initialisations).
    moved = [
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(init.params), strict=True)
    ]
    assert max(moved) > 1e-3
    # A prediction flips only for a test digit whose top two logits are within the drift.
    assert r1["id_accuracy"] == pytest.approx(r4["id_accuracy"], abs=1.01)  # one digit of 100
    loss1 = [r["loss"] for r in read_records(os.path.join(one, "metrics.jsonl")) if "loss" in r]
    loss4 = [r["loss"] for r in read_records(os.path.join(four, "metrics.jsonl")) if "loss" in r]
    assert len(loss1) == len(loss4) > 0
    np.testing.assert_allclose(loss4, loss1, rtol=EIGHT_STEP_TOL)


def test_augmentation_of_a_split_batch_is_bit_identical():
    """Random crop + flip of a batch split over 4 devices draws the same numbers as on one
    device (JAX's partitionable threefry), and moves integers only: equal bit for bit, on any
    machine. (Inside the train step: `test_one_step_gradients_and_updates_agree_...`.)"""
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


# helpers.py's tiny models, with batches of 12 that split over 4 devices.
MLP = functools.partial(mlp_params, d_in=5, hidden=7, scale=0.7, bias_scale=0.0)
MLP_DATA = functools.partial(classification_batches, batch_size=12, d_in=5, seed=3)
CNN = functools.partial(cnn_params, seed=2, image_shape=(6, 6, 2))
CNN_DATA = functools.partial(classification_batches, batch_size=12, d_in=(6, 6, 2), seed=4)

METRICS = {
    "fisher": lambda mesh: fisher_trace(
        mlp_logits, MLP(), MLP_DATA(4)[0].reshape(-1, 5), jax.random.key(1),
        chunk_size=8, mesh=mesh,
    ),
    "fisher_exact": lambda mesh: fisher_trace(
        mlp_logits, MLP(), MLP_DATA(4)[0].reshape(-1, 5), jax.random.key(1),
        exact=True, mesh=mesh,
    ),
    # Per-example gradients of a convolution: where XLA's automatic partitioning went wrong.
    "fisher_cnn": lambda mesh: fisher_trace(
        cnn_logits, CNN(), CNN_DATA(4)[0].reshape(-1, 6, 6, 2), jax.random.key(1),
        chunk_size=8, mesh=mesh,
    ),
    "avg_sharpness_cnn": lambda mesh: average_sharpness(
        cnn_loss, CNN(), CNN_DATA(4), jax.random.key(1), rho=0.05, n_samples=15, mesh=mesh
    ),
    "worst_sharpness_cnn": lambda mesh: worst_sharpness(
        cnn_loss, CNN(), CNN_DATA(6), jax.random.key(1), rho=0.05, n_iters=4,
        mesh=mesh,
    )[0],
    "hessian_cnn": lambda mesh: hessian_top_eigenvalue(
        cnn_loss, CNN(), CNN_DATA(4), jax.random.key(1), n_iters=10, mesh=mesh
    ),
    "avg_sharpness": lambda mesh: average_sharpness(
        mlp_loss, MLP(), MLP_DATA(4), jax.random.key(1), rho=0.05, n_samples=15, mesh=mesh
    ),
    "worst_sharpness": lambda mesh: worst_sharpness(
        mlp_loss, MLP(), MLP_DATA(6), jax.random.key(1), rho=0.05, n_iters=6,
        mesh=mesh,
    )[0],
    "hessian": lambda mesh: hessian_top_eigenvalue(
        mlp_loss, MLP(), MLP_DATA(4), jax.random.key(1), n_iters=10, mesh=mesh
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(METRICS))
def test_metric_on_1_and_4_devices_agree(name):
    """Measured gaps on 4 devices: <= 4.1e-7 of the value (0 for Auto-PGD, whose batches each run
    whole on one device). rel=1e-5 is 25x that. Sharpness is a difference of losses,
    L(w + delta) - L(w) with L ~ 1.1 here, so its rounding is the loss's (EPS32 * 1.1 ~ 1.3e-7 per
    evaluation), not the difference's, which can be far smaller (avg_sharpness_cnn is -2.1e-4):
    hence an absolute 1e-6 (~8 float32 ulps of the loss) for the sharpness metrics."""
    single = float(METRICS[name](None))
    split = float(METRICS[name](data_mesh(4)))
    assert single != 0.0
    assert split == pytest.approx(single, rel=1e-5, abs=1e-6 if "sharpness" in name else 1e-8)


@pytest.mark.parametrize("name", ["fisher", "avg_sharpness", "worst_sharpness"])
def test_metric_work_is_split_across_devices(name):
    """The compiled program is partitioned: per-device pieces combined by an all-reduce."""
    mesh = data_mesh(4)
    text = jax.jit(lambda: METRICS[name](mesh)).lower().compile().as_text()
    assert "num_partitions=4" in text
    assert any(op in text for op in ("all-reduce", "all-gather", "reduce-scatter"))


def test_worst_sharpness_delta_comes_back_per_batch_on_4_devices():
    value, delta = worst_sharpness(
        mlp_loss, MLP(), MLP_DATA(6), jax.random.key(1), rho=0.05, n_iters=4,
        mesh=data_mesh(4),
    )  # fmt: skip
    ref_value, ref_delta = worst_sharpness(
        mlp_loss,
        MLP(),
        MLP_DATA(6),
        jax.random.key(1),
        rho=0.05,
        n_iters=4,
    )
    for a, b in zip(jax.tree.leaves(delta), jax.tree.leaves(ref_delta), strict=True):
        assert a.shape == b.shape and a.shape[0] == 6
    # Relative to each leaf's scale (measured gap <= 6e-8 of it), not entry by entry: entries
    # near 0 make per-entry relative gaps meaningless. A zero-initialised bias stays exactly 0.
    assert_close_to_scale(delta, ref_delta, 1e-5, what="delta")
    assert float(value) == pytest.approx(float(ref_value), rel=1e-5, abs=1e-6)


@pytest.mark.slow  # ~30 s of XLM-R compilations; the tests above check the same machinery
def test_the_transformer_tasks_agree_on_1_and_4_devices():
    """XLM-R + LoRA split over 4 devices: the training loss and gradients with dropout on (its
    masks come from the step's key, however the batch is split) and the QA task's F1 / EM,
    whose evaluation gathers each batch's span logits from the devices."""
    from helpers import small_nli_config, small_qa_config

    from earlyjax.tasks import QuestionAnswering, TextClassification

    task = TextClassification.build(small_nli_config())
    params, backbone = task.init(jax.random.key(0))
    key = jax.random.key(1)
    rows = {k: v[:64] for k, v in task.train.items()}

    @jax.jit
    def loss_and_grads(batch):
        return jax.value_and_grad(lambda p: task.loss(p, backbone, batch, key, True)[0])(params)

    loss1, grads1 = loss_and_grads(jax.device_put(rows))
    split = parallel.global_batch(rows, data_mesh(4))
    assert len(split["input_ids"].sharding.device_set) == 4
    loss4, grads4 = loss_and_grads(split)
    assert float(loss4) == pytest.approx(float(loss1), rel=1e-6)
    assert_close_to_scale(grads4, grads1, ONE_STEP_TOL, what="gradient")

    qa = QuestionAnswering.build(small_qa_config())
    params, backbone = qa.init(jax.random.key(0))
    one = qa.evaluate_split(params, backbone, "xa", 64)
    four = qa.evaluate_split(params, backbone, "xa", 64, mesh=data_mesh(4))
    # A prediction can flip only where two spans' logits tie to float rounding: one example.
    for name in ("f1", "exact_match"):
        assert four[name] == pytest.approx(one[name], abs=100 / 256), name
    assert four["loss"] == pytest.approx(one["loss"], rel=1e-5)
