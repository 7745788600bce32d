"""`--config.x=v` overrides: typed parsing, `none` on nullable fields only, last one wins,
one-line errors for typos, and values that survive the trip to a child process."""

import os
import subprocess
import sys

import pytest
from absl import flags
from helpers import ROOT

from experiments import cli
from experiments.configs import quickstart

QUICKSTART = os.path.join(ROOT, "experiments", "configs", "quickstart.py")


@pytest.fixture
def parse(monkeypatch):
    """cli.parse_flags on `prog --config=quickstart.py *args`, as the drivers call it.

    sys.argv holds the same list (absl and config_flags may read it); the flags are unparsed
    afterwards, so that other tests see them as before.
    """

    def run(*args):
        argv = ["prog", f"--config={QUICKSTART}", *args]
        monkeypatch.setattr(sys, "argv", list(argv))
        rest = cli.parse_flags(argv)
        assert rest == ["prog"]
        return flags.FLAGS.config

    yield run
    flags.FLAGS.unparse_flags()


def locked_quickstart():
    config = quickstart.get_config()
    config.lock()
    return config


def test_none_sets_nullable_fields_and_is_a_plain_string_elsewhere(parse):
    config = parse("--config.unfreeze.k=none", "--config.data.ood_source=none")
    assert config.unfreeze.k is None
    assert config.data.ood_source == "none"  # the documented value of a string field

    config = locked_quickstart()
    assert cli.parse_value(config, "optimizer.lr_switch", "None") is None  # nullable string
    assert cli.parse_value(config, "data.name", "none") == "none"
    with pytest.raises(SystemExit, match="config field batch_size cannot be None; give a value"):
        cli.parse_value(config, "batch_size", "none")


def test_the_last_value_of_a_repeated_flag_wins_tuples_included(parse):
    config = parse(
        "--config.data.ood_severities=(2,)",
        "--config.seed=1",
        "--config.data.ood_severities=(3,)",
        "--config.seed=2",
    )
    assert config.data.ood_severities == (3,)
    assert config.seed == 2
    config = parse("--config.data.ood_severities=(2,)", "--config.data.ood_severities=(6,)")
    assert config.data.ood_severities == (6,)


def test_other_spellings_of_an_override(parse):
    config = parse(
        "--config.seed",
        "3",
        "--noconfig.progress_bar",
        "--config.unfreeze.freeze_bn_stats",
        "--config.data.ood_severities=2,4",
        "--config.record.metrics=fisher,avg_sharpness",
    )
    assert config.seed == 3
    assert config.progress_bar is False and config.unfreeze.freeze_bn_stats is True
    assert config.data.ood_severities == (2, 4)
    assert config.record.metrics == ("fisher", "avg_sharpness")


def test_parse_flags_leaves_sys_argv_alone_and_keeps_the_overrides(parse):
    parse("--config.unfreeze.k=none", "--config.optimizer.lr=0.3")
    assert sys.argv == [
        "prog",
        f"--config={QUICKSTART}",
        "--config.unfreeze.k=none",
        "--config.optimizer.lr=0.3",
    ]
    assert cli.config_overrides() == [("unfreeze.k", None), ("optimizer.lr", 0.3)]


@pytest.mark.parametrize(
    "arg, message",
    [
        (
            "--config.unfreeze.k=1.5",
            "--config.unfreeze.k=1.5: config field unfreeze.k takes an int or none, not '1.5', "
            "e.g. --config.unfreeze.k=10",
        ),
        (
            "--config.unfreeze.k=abc",
            "config field unfreeze.k takes an int or none, not 'abc', e.g. --config.unfreeze.k=",
        ),
        ("--config.seed=abc", "config field seed takes an int, not 'abc', e.g. --config.seed=0"),
        ("--config.optimizer.lr=fast", "field optimizer.lr takes a number, not 'fast', e.g."),
        ("--config.progress_bar=maybe", "field progress_bar takes true or false, not 'maybe'"),
        ("--config.data.ood_severities=none", "takes a tuple of ints, not 'none', e.g."),
        ("--config.data=x", "data is a group of fields, not a value; set one of them"),
        ("--config.optimizer.lrr=1", "unknown config field: --config.optimizer.lrr (did you mean"),
    ],
)
def test_a_value_that_does_not_parse_exits_with_one_line_naming_the_fix(parse, arg, message):
    with pytest.raises(SystemExit) as e:
        parse("--config.seed=1", arg)
    assert message in str(e.value.code) and "\n" not in str(e.value.code)


@pytest.mark.parametrize(
    "text,message",
    [
        ("def get_config(\n", "has a syntax error at line 1: '(' was never closed; fix the file"),
        ("x = 1\n", "defines no get_config(); add `def get_config(): return ...`"),
        ("def get_config():\n    raise KeyError('lr')\n", "raised KeyError: 'lr'; fix the file"),
        ("import not_a_module_here\n", "raised ModuleNotFoundError: No module named"),
    ],
)
def test_a_config_file_that_does_not_load_is_one_line_naming_it(
    tmp_path, monkeypatch, text, message
):
    path = tmp_path / "broken.py"
    path.write_text(text)
    argv = ["prog", f"--config={path}"]
    monkeypatch.setattr(sys, "argv", list(argv))
    # config_flags loads every config as the module `config_config` with the deprecated
    # load_module(), which runs the file inside an earlier test's module (keeping its
    # get_config): start from none, as a fresh process does.
    monkeypatch.delitem(sys.modules, "config_config", raising=False)
    with pytest.raises(SystemExit) as e:
        try:
            cli.parse_flags(argv)
        finally:
            flags.FLAGS.unparse_flags()
    assert str(e.value.code).startswith(f"error: config file {path} ")
    assert message in str(e.value.code) and "\n" not in str(e.value.code)


def test_a_typo_stops_main_before_anything_is_written(tmp_path):
    workdir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "experiments.main",
        "--config=quickstart.py",
        f"--workdir={workdir}",
        "--config.unfreeze.k=1.5",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        "--config.unfreeze.k=1.5: config field unfreeze.k takes an int or none, not '1.5', "
        "e.g. --config.unfreeze.k=10"
    )
    assert not workdir.exists()


def test_written_overrides_parse_back_to_the_same_values():
    from earlyjax.config import flatten

    config = locked_quickstart()
    values = [
        (f, tuple(v) if isinstance(v, list) else v) for f, v in flatten(config.to_dict()).items()
    ]
    values += [
        ("unfreeze.k", None),
        ("optimizer.lr_switch", None),
        ("optimizer.lr", 0.1 + 0.2),
        ("optimizer.lr_scale", 1e-7),
        ("seed", -3),
        ("progress_bar", False),
        ("data.ood_source", "none"),
        ("data.ood_severities", (2,)),
        ("record.metrics", ("fisher", "hessian")),
        ("data.data_dir", "/data/a b,c"),
    ]
    args = cli.override_args(values)
    rest, raw = cli.split_config_args(["prog", *args])
    assert rest == ["prog"]
    assert cli.parse_overrides(config, raw) == values


def test_cli_rejects_unknown_config_field(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.main",
            "--config=quickstart.py",
            f"--workdir={tmp_path / 'run'}",
            "--config.optimizer.lrr=0.1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode != 0
    assert "unknown config field: --config.optimizer.lrr (did you mean optimizer.lr" in proc.stderr
    assert not os.path.exists(tmp_path / "run")


def test_cli_sets_a_nullable_field_to_none_and_refuses_others():
    script = (
        "import sys; from absl import flags; from experiments import cli; "
        "sys.argv = cli.rewrite_config_argument(sys.argv); cli.parse_flags(sys.argv); "
        "print('k =', flags.FLAGS.config.unfreeze.k)"
    )
    root = ROOT

    def parse(*args):
        cmd = [sys.executable, "-c", script, "--config=quickstart.py", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=root)

    assert "k = 10" in parse().stdout  # the quickstart's own k
    proc = parse("--config.unfreeze.k=None")
    assert proc.returncode == 0 and "k = None" in proc.stdout, proc.stderr
    proc = parse("--config.batch_size=none")
    assert proc.returncode != 0
    assert "config field batch_size cannot be None; give a value" in proc.stderr
