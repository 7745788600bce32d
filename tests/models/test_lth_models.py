"""Frankle et al. 2020's models (open_lth's cifar_resnet_20, mnist_lenet_300_100): counts,
blocks, shapes, open_lth's initialisation, and a tiny run of each through the trainer."""

import json
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from earlyjax.models import HEAD, MODELS, build_model
from earlyjax.models.init import batch_norm
from earlyjax.models.lenet import lenet_hidden_sizes
from earlyjax.train import train_and_evaluate


def abstract(name, shape, width, num_classes=10, init="pytorch"):
    model, blocks = build_model(name, num_classes=num_classes, width=width, init=init)
    x = jnp.zeros((1, *shape))
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False)), blocks


def count(tree):
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def test_resnet20_has_open_lth_count_blocks_and_stages():
    variables, blocks = abstract("resnet20", (32, 32, 3), width=16)
    params = variables["params"]
    # open_lth cifar_resnet_20: stem 432 + 32, stages 14,016 / 51,648 / 205,696, fc 650.
    assert count(params) == 272_474
    assert [count(params[b]) for b in (*blocks, HEAD)] == [464, 14_016, 51_648, 205_696, 650]
    assert blocks == ("stem", "stage1", "stage2", "stage3") == MODELS["resnet20"][1]
    assert set(params) == {*blocks, HEAD} and set(variables["batch_stats"]) == set(blocks)
    assert set(params["stage1"]) == {"block0", "block1", "block2"}
    assert "shortcut_conv" not in params["stage1"]["block0"]  # identity: 16 -> 16, stride 1
    assert params["stage2"]["block0"]["shortcut_conv"]["kernel"].shape == (1, 1, 16, 32)
    assert "shortcut_conv" not in params["stage2"]["block1"]


def test_lenet_has_open_lth_count_and_blocks():
    variables, blocks = abstract("lenet300_100", (28, 28, 1), width=64)
    params = variables["params"]
    assert count(params) == 266_610  # 784*300+300 + 300*100+100 + 100*10+10
    assert blocks == ("fc1", "fc2") and set(params) == {*blocks, HEAD}
    assert "batch_stats" not in variables
    assert lenet_hidden_sizes(64) == (300, 100) and lenet_hidden_sizes(4) == (19, 6)


@pytest.mark.parametrize(
    "name", [pytest.param("resnet20", marks=pytest.mark.slow), "lenet300_100"]
)  # ResNet-20's eager forward passes take ~13 s; its init runs in the init test below
def test_forward_in_train_and_eval_mode_on_8x8_images(name):
    model, _ = build_model(name, num_classes=7, width=4)
    x = jax.random.normal(jax.random.key(1), (3, 8, 8, 1))
    variables = model.init(jax.random.key(0), x, train=False)
    logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert logits.shape == (3, 7) and model.apply(variables, x).shape == (3, 7)
    assert set(updates) == ({"batch_stats"} if "batch_stats" in variables else set())
    features = model.apply(variables, x, method=type(model).penultimate)
    assert features.shape == (3, 16 if name == "resnet20" else 6)


def test_open_lth_init_is_kaiming_normal_with_uniform_bn_weights():
    model, _ = build_model("resnet20", num_classes=10, width=16, init="open_lth")
    params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)["params"]
    kernel = np.asarray(params["stage3"]["block1"]["conv1"]["kernel"])  # fan_in 64 * 9
    assert abs(kernel.std() / math.sqrt(2 / 576) - 1) < 0.05 and abs(kernel.mean()) < 0.005
    scale = np.asarray(params["stage3"]["block1"]["bn1"]["scale"])
    assert scale.min() >= 0 and scale.max() <= 1 and scale.std() > 0.1
    fc = params[HEAD]["fc"]
    assert np.abs(np.asarray(fc["bias"])).max() <= 1 / 8  # PyTorch's bias U(+-1/sqrt(64))

    class OneNorm(nn.Module):  # kaiming_normal differs from open_lth only in BN's weights: 1
        @nn.compact
        def __call__(self, x):
            return batch_norm(x, train=False, name="bn", init="kaiming_normal")

    p = OneNorm().init(jax.random.key(0), jnp.zeros((1, 4)))["params"]
    np.testing.assert_array_equal(p["bn"]["scale"], 1.0)


@pytest.mark.parametrize(
    "name", [pytest.param("resnet20", marks=pytest.mark.slow), "lenet300_100"]
)  # ResNet-20's run compiles for ~15 s; LeNet's covers a model without BatchNorm in the
# trainer, and the ResNet-18 tests its BatchNorm path
def test_tiny_run_through_the_trainer(name, tiny_config, tiny_dataset, tmp_path):
    tiny_config.model.name = name
    tiny_config.unfreeze.k = 2
    tiny_config.total_steps = 4
    # Recording with the metric set's BatchNorm statistics: none to compute for LeNet.
    tiny_config.record.every = 2
    tiny_config.record.metrics = ("fisher", "feature_rank")
    tiny_config.record.set_size = 64
    tiny_config.record.batch_size = 32
    workdir = str(tmp_path / name)
    train_and_evaluate(tiny_config, workdir, dataset=tiny_dataset)
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    accuracy = results["id_accuracy"]  # percent
    assert isinstance(accuracy, float) and 0.0 <= accuracy <= 100.0, results
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [r for r in map(json.loads, f) if r["kind"] == "record"]
    assert all({"fisher", "feature_rank"} <= set(r) for r in records)
    # Gradual unfreezing releases the blocks top-down: the head, then the last block.
    top = MODELS[name][1][-1]
    assert [r["trainable"] for r in records[:2]] == [[HEAD], [top, HEAD]]
