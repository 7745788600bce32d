"""Shared fixtures: a tiny slice of the embedded digits and a tiny, fast config."""

import functools
import os

import helpers
import pytest

SHARED = helpers.ROOT.parent / "shared"

# tests/multidevice/ needs 4 devices, which must be configured before JAX starts: it runs in a
# subprocess of its own (tests/test_multidevice.py), which sets this variable.
collect_ignore = [] if os.environ.get("EARLYJAX_MULTIDEVICE") else ["multidevice"]


def pytest_configure(config):
    """Caches compiled programs on disk, so tests that rebuild the same model compile it once.

    Compilation dominates the tests' time on CPU (ResNet-18's threefry init alone takes ~15 s);
    the cache is keyed by the program and the JAX version, so it is never stale.
    """
    import jax

    jax.config.update("jax_compilation_cache_dir", str(config.cache.mkdir("jax-compilation")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(scope="session")
def tiny_dataset():
    """256 training and 100 test digits, with two small OOD splits (28x28x1 uint8)."""
    import numpy as np

    from earlyjax.data.base import Dataset, Split
    from earlyjax.data.digits import load_digits_splits

    train, test = load_digits_splits()
    train = Split(train.images[:256], train.labels[:256])
    test = Split(test.images[:100], test.labels[:100])
    dark = Split((test.images // 2).astype(np.uint8), test.labels)
    inverted = Split((255 - test.images).astype(np.uint8), test.labels)
    ood = {("darken", 1): dark, ("invert", 1): inverted}
    return Dataset("digits", 10, train, test, ood)


@pytest.fixture(name="tiny_config")
def _tiny_config():
    """A tiny, fast config (`helpers.tiny_config`), fresh for each test."""
    return helpers.tiny_config()


@pytest.fixture(name="smooth_resnet")
def _smooth_resnet(monkeypatch):
    """ResNet-18 with GELU for ReLU for the duration of one test (`helpers.smooth_resnet`)."""
    helpers.smooth_resnet(monkeypatch)


@pytest.fixture
def small_chunks(monkeypatch):
    """TFDS splits read 2 examples at a time: several batched reads per tiny mock split."""
    from earlyjax.data import tfds_source

    monkeypatch.setattr(tfds_source, "READ_CHUNK", 2)


@pytest.fixture
def shared_mnist_dir():
    """The real MNIST files in ../shared/datasets/mnist, or a clean skip where absent."""
    path = SHARED / "datasets" / "mnist"
    if not path.is_dir():
        pytest.skip(f"real MNIST files not present at {path} (../shared is absent)")
    return os.fspath(path)


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures experiments.analysis saves in a test, by file stem."""
    from experiments.analysis import render

    saved = {}
    original = render.save_figure

    def save(fig, stem):
        saved[os.path.basename(stem)] = fig
        return original(fig, stem)

    monkeypatch.setattr(render, "save_figure", save)
    return saved


@pytest.fixture
def apgd_step_calls(monkeypatch):
    """A list that grows by one at every call of Auto-PGD's compiled host-loop step
    (`earlyjax.metrics.sharpness._host_programs`): proof that the host loop ran, and how long."""
    from earlyjax.metrics import sharpness

    calls = []
    programs = sharpness._host_programs

    def counting(*args, **kwargs):
        start, step = programs(*args, **kwargs)
        return start, lambda *a: calls.append(1) or step(*a)

    monkeypatch.setattr(sharpness, "_host_programs", counting)
    return calls


def _unbound_getitems(*args, generator, serialized=False):
    # tfds 4.9.10's mock assigns its __getitems__ as a plain attribute of a MagicMock, so it
    # is called without `self` and fails; this stand-in accepts both forms.
    del serialized
    return [generator[k] for k in args[-1]]


@pytest.fixture
def mock_tfds(monkeypatch):
    """`tfds.testing.mock_data` (code-only policy) with `num_examples` examples per split:
    no TensorFlow and no network, deterministic random examples of the real feature shapes,
    and everything else (builder lookup, config names, the data source) the real code path."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.testing import mocking

    monkeypatch.setattr(mocking, "_getitems", _unbound_getitems)
    return functools.partial(tfds.testing.mock_data, policy=tfds.testing.MockPolicy.USE_CODE)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_dataset):
    """A finished 6-step run, once per module: (config, workdir, results)."""
    from earlyjax.config import default_config
    from earlyjax.train import train_and_evaluate

    c = default_config()
    c.model.width = 4
    c.batch_size = 32
    c.total_steps = 6
    c.log_every = 3
    c.checkpoint_every = 0
    c.eval_batch_size = 64
    c.progress_bar = False
    c.unfreeze.k = 2
    c.unfreeze.allow_late_release = True
    c.data.ood_source = "none"
    workdir = str(tmp_path_factory.mktemp("finished") / "run")
    results = train_and_evaluate(c, workdir, dataset=tiny_dataset)
    return c, workdir, results


@pytest.fixture
def recording_config(tiny_config):
    c = tiny_config
    c.total_steps = 6
    c.log_every = 3
    c.checkpoint_every = 3
    c.record.every = 2
    c.record.until = 4
    c.record.set_size = 64
    c.record.batch_size = 32
    c.record.metrics = ("fisher", "avg_sharpness")
    c.record.avg_samples = 2
    return c
