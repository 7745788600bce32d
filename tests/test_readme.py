"""The README's metrics example runs as written, on a tiny model with BatchNorm."""

import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


class TinyNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        return nn.Dense(10)(jnp.mean(nn.relu(x), axis=(1, 2)))


def test_metrics_example_in_readme_runs():
    text = README.read_text()
    section = text.split("## The metrics on your own model", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    model = TinyNet()
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2048, 6, 6, 1)).astype(np.float32)
    variables = model.init(jax.random.key(0), images[:2], train=False)
    namespace = {
        "model": model,
        "params": variables["params"],
        "stats": variables["batch_stats"],
        "images": images,
        "labels": rng.integers(0, 10, 2048),
        "penultimate_features": rng.normal(size=(2048, 16)).astype(np.float32),
    }
    exec(compile(code, str(README), "exec"), namespace)
    for name in ("tr_f", "s_avg", "s_worst", "lam"):
        assert np.isfinite(float(namespace[name])), name
    assert float(namespace["tr_f"]) > 0 and float(namespace["s_worst"]) >= 0
    assert 1 <= int(namespace["rank"]) <= 16


class TinyMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(16)(x.reshape(x.shape[0], -1)))
        return nn.Dense(10)(x)


def test_lottery_example_in_readme_runs():
    """One IMP level, a perturbation at k and a masked step, as the README shows them."""
    from earlyjax import pruning

    text = README.read_text()
    section = text.split("## Lottery tickets and the early phase", 1)[1]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    model = TinyMLP()
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8, 4, 4, 1)).astype(np.float32)
    params_at_k = model.init(jax.random.key(0), images)["params"]
    params_at_end = jax.tree.map(lambda p: p + 0.1, params_at_k)
    namespace = {
        "model": model,
        "params_at_k": params_at_k,
        "params_at_end": params_at_end,
        "images": images,
        "labels": rng.integers(0, 10, 8),
    }
    exec(compile(code, str(README), "exec"), namespace)
    mask, params = namespace["mask"], namespace["params"]
    assert pruning.density(mask, namespace["prunable"]) < 0.81
    for m, p in zip(jax.tree.leaves(mask), jax.tree.leaves(params), strict=True):
        assert np.all(np.asarray(p)[~np.asarray(m)] == 0)


def test_ensembles_example_in_readme_runs():
    """The ensemble metrics, a barrier with recomputed BatchNorm statistics and a soup."""
    text = README.read_text()
    section = text.split("## Ensembles and basins (Sadrtdinov et al. 2023)", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    model = TinyNet()
    rng = np.random.default_rng(0)
    images = rng.normal(size=(48, 6, 6, 1)).astype(np.float32)
    first = model.init(jax.random.key(0), images[:2], train=False)  # one init: threefry is slow
    members = [
        {**first, "params": jax.tree.map(lambda w, i=i: w * (1 - 0.3 * i), first["params"])}
        for i in range(3)
    ]
    namespace = {
        "model": model,
        "members": members,
        "test_x": images[:16],
        "test_y": rng.integers(0, 10, 16),
        "train_batches": images[16:].reshape(2, 16, 6, 6, 1),
    }
    exec(compile(code, str(README), "exec"), namespace)
    assert namespace["accuracy_by_size"].shape == (3,)
    barrier = namespace["barrier"](namespace["path"], namespace["alphas"])
    assert float(barrier) >= 0 and np.isfinite(float(namespace["soup_loss"]))
