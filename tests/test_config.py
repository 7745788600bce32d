"""The config: a leaf module (loading a config file imports no JAX), its field-name constants,
and its values checked once per run (`earlyjax.validation.validate`)."""

import collections
import importlib
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from earlyjax.config import Field, default_config, flatten
from earlyjax.train import total_steps

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_loading_every_config_file_imports_no_jax():
    script = textwrap.dedent(
        """
        import importlib.util, pathlib, sys

        import earlyjax
        assert [m for m in sys.modules if m.startswith("earlyjax")] == ["earlyjax"], sys.modules
        files = sorted(pathlib.Path("experiments/configs").glob("*.py"))
        assert len(files) > 5, files
        for path in files:
            spec = importlib.util.spec_from_file_location(f"config_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            if hasattr(module, "get_config"):
                module.get_config()
        heavy = ("jax", "flax", "optax", "earlyjax.validation")
        heavy = sorted(m for m in heavy if m in sys.modules)
        assert not heavy, f"loading the config files imported {heavy}"
        print("ok", len(files))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_field_names_are_fields_of_the_default_config():
    fields = flatten(default_config().to_dict())
    names = {k: v for k, v in vars(Field).items() if k.isupper()}
    assert len(names) >= 10
    assert sorted(v for v in names.values() if v not in fields) == []


def test_the_checks_name_the_registries_lists():
    from earlyjax import data, recording, tasks
    from earlyjax.config import ConfigError
    from earlyjax.validation import validate

    def message(**fields):
        c = default_config()
        for name, value in fields.items():
            group, _, field = name.rpartition("__")
            (c[group] if group else c)[field] = value
        with pytest.raises(ConfigError) as e:
            validate(c)
        return str(e.value)

    assert str(tuple(tasks.TASKS)) in message(task="image")
    assert str(tuple(data.NUM_CLASSES)) in message(data__name="svhn")
    assert str(recording.RECORDABLE) in message(final__metrics=("nope",))


CHECKS = ("validate", "validate_task", "check_data_config", "check_record_config")


def _count_calls(monkeypatch, names) -> collections.Counter:
    """Wraps each function called `names` wherever an earlyjax module holds it; counts calls."""
    import earlyjax.data.base
    import earlyjax.train  # noqa: F401  (every module that holds a check)

    calls = collections.Counter()
    wrappers = {}
    for module in [m for n, m in sys.modules.items() if n.startswith("earlyjax") and m]:
        for name in names:
            f = getattr(module, name, None)
            if f is None or not getattr(f, "__module__", "").startswith("earlyjax"):
                continue
            if f not in wrappers:

                def counted(*args, _f=f, _name=name, **kwargs):
                    calls[_name] += 1
                    return _f(*args, **kwargs)

                wrappers[f] = counted
            monkeypatch.setattr(module, name, wrappers[f])
    return calls


def test_one_run_checks_its_config_once(monkeypatch, tiny_config, tmp_path):
    from earlyjax.train import train_and_evaluate

    calls = _count_calls(monkeypatch, (*CHECKS, "check_ood_splits"))
    c = tiny_config
    c.total_steps = 2
    c.data.ood_source = "generated"  # read from the config: load_dataset and its OOD splits
    c.data.ood_corruptions = "fog"
    c.data.ood_severities = (1,)
    c.data.ood_max_examples = 20
    c.data.cache_dir = str(tmp_path / "cache")
    results = train_and_evaluate(c, str(tmp_path / "run"))
    assert results["ood_accuracy"] is not None
    assert calls == {name: 1 for name in (*CHECKS, "check_ood_splits")}
    calls.clear()
    train_and_evaluate(c, str(tmp_path / "run"))  # finished: the results are read back
    assert calls == {"validate": 1, "validate_task": 1, "check_data_config": 1,
                     "check_record_config": 1}  # fmt: skip


def test_setup_and_build_task_on_their_own_check_once(monkeypatch, tiny_config, tiny_dataset):
    from earlyjax.train import build_task, setup

    calls = _count_calls(monkeypatch, CHECKS)
    setup(tiny_config, tiny_dataset)
    assert calls == {name: 1 for name in CHECKS}
    calls.clear()
    build_task(tiny_config, tiny_dataset)
    assert calls == {"validate_task": 1, "check_data_config": 1}


# Table 5 of the paper (SGD, constant learning rate, batch 128), per config file.
TABLE_5 = {
    "mnist_rn18": dict(
        dataset="mnist", model="resnet18", lr=0.01, momentum=0.9, wd=0.01, epochs=10,
        augment=False, num_train=60000, steps=10 * 469,
    ),
    "cifar10_rn18": dict(
        dataset="cifar10", model="resnet18", lr=0.1, momentum=0.0, wd=0.0, epochs=200,
        augment=True, num_train=50000, steps=200 * 391,
    ),
    "cifar10_vgg11": dict(
        dataset="cifar10", model="vgg11", lr=0.15, momentum=0.0, wd=0.0, epochs=200,
        augment=True, num_train=50000, steps=200 * 391,
    ),
    "cifar100_rn18": dict(
        dataset="cifar100", model="resnet18", lr=0.01, momentum=0.9, wd=5e-4, epochs=200,
        augment=True, num_train=50000, steps=200 * 391,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TABLE_5))
def test_paper_configs_are_table_5(name):
    row = TABLE_5[name]
    c = importlib.import_module(f"experiments.configs.{name}").get_config()
    assert c.data.name == row["dataset"]
    assert c.model.name == row["model"]
    assert c.model.width == 64
    assert c.model.init == "pytorch"
    o = c.optimizer
    assert (o.lr, o.momentum, o.weight_decay) == (row["lr"], row["momentum"], row["wd"])
    assert o.lr_scale == 1.0
    assert o.lr_switch is None  # constant learning rate
    assert c.batch_size == 128
    assert c.data.augment is row["augment"]
    assert c.unfreeze.k is None  # standard training unless --config.unfreeze.k is given
    assert not c.unfreeze.head_only and c.unfreeze.adaptive is None
    assert c.num_epochs == row["epochs"]
    assert c.total_steps is None  # the run length comes from the epochs
    # ceil(N / 128) steps per epoch (drop_last=False): 469 for MNIST, 391 for CIFAR.
    steps = total_steps(c, row["num_train"])
    assert steps == row["steps"]
    assert c.optimizer.lr * c.optimizer.lr_scale == pytest.approx(row["lr"])  # all run
