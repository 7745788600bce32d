"""torchvision's ResNet-50 (earlyjax.models.resnet50) and its checkpoint loader
(earlyjax.models.resnet_checkpoint): torchvision's parameter count, parity with torchvision on
a narrow random checkpoint (`scripts/make_resnet50_fixture.py` wrote
tests/fixtures/tiny_resnet50/ and the reference outputs once; these tests need no torch), the
loader's errors, and fine-tuning through the image task (backbone and BatchNorm statistics
from the file, a fresh head). Where torch and torchvision are installed, a full-size
`resnet50()` saved with `torch.save` is read through torch's weights-only loader too."""

from __future__ import annotations

import os
import pickle
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import FIXTURES
from safetensors.numpy import load_file, save_file

from earlyjax.config import ConfigError
from earlyjax.data.base import Dataset, Split
from earlyjax.data.digits import load_digits_splits
from earlyjax.models import HEAD, RESNET50_BLOCKS, build_model
from earlyjax.models.resnet50 import ResNet50
from earlyjax.models.resnet_checkpoint import load_resnet50, read_state_dict, torchvision_names
from earlyjax.train import setup

FIXTURE = os.path.join(FIXTURES, "tiny_resnet50")
WEIGHTS = os.path.join(FIXTURE, "model.safetensors")
REFERENCE = np.load(os.path.join(FIXTURE, "reference.npz"))
WIDTH, CLASSES = 4, 6  # the fixture's


def count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def zeros_like_init(model: ResNet50, shape=(45, 45, 3)) -> dict:
    """The model's variables, all zero (the structure `model.init` gives, without its cost)."""
    abstract = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape)), train=False)
    )
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract)


def test_torchvision_count_blocks_and_shapes():
    model, blocks = build_model("resnet50", num_classes=1000, width=64)
    variables = zeros_like_init(model, (32, 32, 3))
    assert count(variables["params"]) == 25_557_032  # torchvision's resnet50()
    assert blocks == RESNET50_BLOCKS == ("stem", "layer1", "layer2", "layer3", "layer4")
    assert set(variables["params"]) == {*blocks, HEAD}
    assert set(variables["batch_stats"]) == set(blocks)
    assert variables["params"]["stem"]["conv"]["kernel"].shape == (7, 7, 3, 64)
    assert [len(variables["params"][f"layer{i}"]) for i in range(1, 5)] == [3, 4, 6, 3]
    first = variables["params"]["layer2"]["block0"]  # v1.5: the 3x3 conv is the strided one
    assert first["conv2"]["kernel"].shape == (3, 3, 128, 128)
    assert first["shortcut_conv"]["kernel"].shape == (1, 1, 256, 512)
    assert "shortcut_conv" not in variables["params"]["layer2"]["block1"]
    small = ResNet50(num_classes=10, width=WIDTH)
    x = jnp.zeros((2, 32, 32, 3))
    logits = jax.eval_shape(lambda: small.init_with_output(jax.random.key(0), x)[0])
    features = jax.eval_shape(
        lambda: small.init_with_output(jax.random.key(0), x, method=ResNet50.penultimate)[0]
    )
    assert logits.shape == (2, 10) and features.shape == (2, 32 * WIDTH)


@pytest.fixture(scope="module")
def fixture_model():
    """(model, variables): the fixture's checkpoint loaded with its head."""
    model = ResNet50(num_classes=CLASSES, width=WIDTH)
    return model, load_resnet50(WEIGHTS, model, zeros_like_init(model), load_head=True)


def test_logits_and_features_match_torchvision(fixture_model):
    model, variables = fixture_model
    images = jnp.asarray(REFERENCE["images"])

    @jax.jit
    def outputs(variables):  # (features, logits): one compilation for both applies below
        return model.apply(
            variables, images, method=lambda m, x: (f := m.penultimate(x), m.head(f))
        )

    features, logits = outputs(variables)
    # float32 noise of a 50-layer network; in float64 the two agree to 1e-13.
    np.testing.assert_allclose(logits, REFERENCE["logits"], rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(features, REFERENCE["features"], rtol=2e-4, atol=2e-4)
    assert np.ptp(REFERENCE["logits"]) > 1.0  # far from constant
    # The running statistics travel with the weights, and they matter.
    for leaf in jax.tree.leaves(variables):
        assert leaf.dtype == jnp.float32
    unit = jax.tree_util.tree_map_with_path(
        lambda p, s: jnp.ones_like(s) if p[-1].key == "var" else jnp.zeros_like(s),
        variables["batch_stats"],
    )
    _, other = outputs({**variables, "batch_stats": unit})
    assert np.max(np.abs(other - REFERENCE["logits"])) > 0.1


def test_names_map_onto_every_variable_once():
    tensors = load_file(WEIGHTS)
    names = torchvision_names(zeros_like_init(ResNet50(num_classes=CLASSES, width=WIDTH)))
    counters = {n for n in tensors if n.endswith("num_batches_tracked")}
    assert set(names) == set(tensors) - counters
    assert names["layer3.0.downsample.1.running_var"] == (
        "batch_stats",
        ("layer3", "block0", "shortcut_bn", "var"),
    )
    assert names["fc.weight"] == ("params", (HEAD, "fc", "kernel"))


def test_without_the_head_the_fresh_head_stays():
    model = ResNet50(num_classes=10, width=WIDTH)  # the file's head has 6 classes
    fresh = zeros_like_init(model)
    fresh["params"][HEAD]["fc"]["kernel"] += 0.5
    loaded = load_resnet50(WEIGHTS, model, fresh, load_head=False)
    np.testing.assert_array_equal(loaded["params"][HEAD]["fc"]["kernel"], 0.5)
    tensors = load_file(WEIGHTS)
    np.testing.assert_array_equal(
        loaded["params"]["layer4"]["block2"]["conv3"]["kernel"],
        tensors["layer4.2.conv3.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        loaded["batch_stats"]["stem"]["bn"]["mean"], tensors["bn1.running_mean"]
    )


def test_errors_name_the_tensor_and_what_the_model_expects(tmp_path):
    tensors = load_file(WEIGHTS)
    model = ResNet50(num_classes=CLASSES, width=WIDTH)
    fresh = zeros_like_init(model)

    def load(edit):
        return load_resnet50(edit(dict(tensors)), model, fresh, load_head=True)

    with pytest.raises(ConfigError, match=r"unexpected tensors \['projector.0.weight'\]"):
        load(lambda t: t | {"projector.0.weight": t["fc.weight"]})
    with pytest.raises(ConfigError, match=r"missing tensors \['layer3.2.bn2.running_var'\]"):
        load(lambda t: {k: v for k, v in t.items() if k != "layer3.2.bn2.running_var"})
    with pytest.raises(
        ConfigError,
        match=r"shape mismatches \['conv1.weight \(8, 3, 7, 7\), expected \(4, 3, 7, 7\)'\]"
        r".*set --config.model.width=8",
    ):
        load(lambda t: t | {"conv1.weight": np.concatenate([t["conv1.weight"]] * 2)})
    ten = ResNet50(num_classes=10, width=WIDTH)
    with pytest.raises(ConfigError, match=r"fc.weight \(6, 128\), expected \(10, 128\)"):
        load_resnet50(WEIGHTS, ten, zeros_like_init(ten), load_head=True)
    # A grayscale model cannot take an RGB checkpoint's stem.
    gray = zeros_like_init(model, (45, 45, 1))
    with pytest.raises(ConfigError, match=r"conv1.weight \(4, 3, 7, 7\), expected \(4, 1, 7, 7\)"):
        load_resnet50(WEIGHTS, model, gray)
    with pytest.raises(ConfigError, match="has suffix '.npz': give a .safetensors file"):
        read_state_dict(os.path.join(FIXTURE, "reference.npz"))
    with pytest.raises(ConfigError, match="is not a file: check the path"):
        read_state_dict(str(tmp_path / "nowhere.safetensors"))
    (tmp_path / "corrupt.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="cannot read .* as safetensors"):
        read_state_dict(str(tmp_path / "corrupt.safetensors"))


def test_data_parallel_prefix_is_dropped(tmp_path):
    path = str(tmp_path / "ddp.safetensors")
    save_file({f"module.{k}": v for k, v in load_file(WEIGHTS).items()}, path)
    assert read_state_dict(path).keys() == load_file(WEIGHTS).keys()


def test_pytorch_file_without_torch_says_how_to_convert(tmp_path, monkeypatch):
    path = tmp_path / "resnet50.pth"
    path.write_bytes(pickle.dumps({"conv1.weight": 0}))  # never unpickled here
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails
    with pytest.raises(ConfigError) as error:
        read_state_dict(str(path))
    message = str(error.value)
    assert "\n" not in message and "torch is not installed" in message
    assert "weights_only=True" in message and "from safetensors.torch import save_file" in message
    assert repr(str(tmp_path / "resnet50.safetensors")) in message


class Payload:
    """An arbitrary object in a checkpoint: torch's weights-only unpickler refuses it."""


def digits_rgb() -> Dataset:
    """64 training and 32 test digits as 28x28x3 images (the fixture's stem takes RGB)."""
    train, test = load_digits_splits()
    rgb = lambda s, n: Split(np.repeat(s.images[:n], 3, axis=-1), s.labels[:n])
    return Dataset("digits", 10, rgb(train, 64), rgb(test, 32), {})


def test_fine_tuning_starts_from_the_checkpoint_with_a_fresh_head(tiny_config):
    tiny_config.model.name = "resnet50"
    tiny_config.model.checkpoint = WEIGHTS
    run_setup, state = setup(tiny_config, digits_rgb())
    params, stats = jax.device_get((state.params, state.model_state))
    tensors = load_file(WEIGHTS)
    names = torchvision_names({"params": params, "batch_stats": stats})
    for name, (collection, path) in names.items():
        leaf = {"params": params, "batch_stats": stats}[collection]
        for key in path:
            leaf = leaf[key]
        if name.startswith("fc."):
            continue
        value = tensors[name]
        value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
        np.testing.assert_array_equal(leaf, value, err_msg=name)
    assert params[HEAD]["fc"]["kernel"].shape == (32 * WIDTH, 10)  # the digits' 10 classes
    # The head is the one a run without the checkpoint draws: model.init's at the run's init
    # key (only the head is returned, so the jitted init compiles fast).
    init_key, _ = jax.random.split(jax.random.key(tiny_config.seed))
    model, x = run_setup.task.model, jnp.zeros((1, 28, 28, 3))
    fresh = jax.jit(lambda k: model.init(k, x, train=False)["params"][HEAD])(init_key)
    np.testing.assert_array_equal(params[HEAD]["fc"]["kernel"], fresh["fc"]["kernel"])
    np.testing.assert_array_equal(params[HEAD]["fc"]["bias"], fresh["fc"]["bias"])


def test_full_size_torchvision_state_dict_through_weights_only_loading(tmp_path):
    torch = pytest.importorskip("torch", reason="the full-size parity test needs torch")
    torchvision = pytest.importorskip("torchvision", reason="and torchvision")
    torch.manual_seed(0)
    reference = torchvision.models.resnet50()
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    reference.eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference(images).numpy()
    path = str(tmp_path / "resnet50.pth")
    torch.save({"epoch": 3, "state_dict": reference.state_dict()}, path)
    model = ResNet50(num_classes=1000, width=64)
    variables = load_resnet50(path, model, zeros_like_init(model, (64, 64, 3)), load_head=True)
    logits = model.apply(variables, jnp.asarray(images.permute(0, 2, 3, 1).numpy()))
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-3)
    assert np.ptp(expected) > 0.1
    torch.save({"state_dict": reference.state_dict(), "extra": Payload()}, path)
    with pytest.raises(ConfigError, match=r"cannot read .* with torch.load\(weights_only=True\)"):
        read_state_dict(path)
