"""experiments.basin and the sse_* outputs: the runs of a basin study (Sadrtdinov et al. 2023)
in dependency order; a StarSSE cycle starts from the first fine-tuned model with a fresh
optimizer, an SSE cycle from the previous cycle's end; the four experiments end to end at a
toy scale through `python -m experiments.paper` and `python -m experiments.analysis all`; the
paper's settings refused with one line where they cannot run. (The toy `basin_digits` grid,
ResNet-20 with BatchNorm, takes about 8 minutes: it is documented in docs/REPRODUCTION.md, not
run by the tests; the micro grid here takes its every path.)"""

import os
import textwrap

import jax
import numpy as np
import pytest
from helpers import markdown_rows, read_text

from earlyjax import branch
from earlyjax.train import branch_initial_state, load_run_state, setup
from experiments import analysis, basin, branched, paper
from experiments.paper import Study

OUTPUTS = ("sse_cycles", "sse_size", "sse_barrier", "sse_soups", "sse_early")

MICRO_CONFIG = """
from experiments.configs.digits_basin import get_config as digits_basin


def get_config():
    c = digits_basin()
    c.model.name = "lenet300_100"
    c.model.width = 8
    c.num_epochs = 1
    c.data.ood_corruptions = "fog"
    c.data.ood_max_examples = 60
    c.record.until = 2
    c.record.set_size = 32
    c.record.batch_size = 32
    c.record.metrics = ("fisher",)
    return c
"""

MICRO_PRETRAIN = """
from micro_basin_config import get_config as finetune


def get_config():
    c = finetune()
    c.data.classes = (0, 1, 2, 3, 4)
    c.data.ood_source = "none"
    c.optimizer.lr = 0.1
    c.record.every = 0
    return c
"""

MICRO_GRID = """
from experiments.paper import Study


def get_grid():
    return [
        Study("basin", {config!r}, {outputs!r}, kind="basin", seeds=(0, 1), members=2,
              methods=("sse", "starsse"), cycle_lrs=(2.0,), cycle_epochs=(1.0,),
              global_de=True, pretrain_config={pretrain!r}, path_points=3),
    ]
"""


def micro_grid(tmp_path, monkeypatch) -> str:
    config = tmp_path / "micro_basin_config.py"
    config.write_text(textwrap.dedent(MICRO_CONFIG))
    pretrain = tmp_path / "micro_basin_pretrain.py"
    pretrain.write_text(textwrap.dedent(MICRO_PRETRAIN))
    monkeypatch.syspath_prepend(str(tmp_path))  # the pre-training config imports the other
    grid = tmp_path / "micro_basin_grid.py"
    text = MICRO_GRID.format(config=str(config), outputs=OUTPUTS, pretrain=str(pretrain))
    grid.write_text(textwrap.dedent(text))
    return str(grid)


def study(**fields) -> Study:
    design = dict(
        seeds=(0, 1),
        members=3,
        methods=("sse", "starsse"),
        cycle_lrs=(0.5, 4.0),
        cycle_epochs=(0.5, 1.0),
        global_de=True,
        pretrain_config="digits_basin_pretrain.py",
    )
    return Study("basin", "digits_basin.py", OUTPUTS, kind="basin", **{**design, **fields})


def test_every_run_comes_after_the_runs_it_branches_from():
    s = study()
    config = paper.study_config(s)
    runs = basin.basin_runs(s, config)
    names = [r.name for r in runs]
    assert len(names) == len(set(names))
    # 3 pre-trainings; per seed: 3 fine-tunings, 2 global, 2 methods x 2 lr x 2 len x 2 cycles
    assert len(runs) == 3 + 2 * (3 + 2 + 16)
    for i, run in enumerate(runs):
        assert run.source is None or run.source in names[:i], (run.name, run.source)
    by_name = {r.name: r for r in runs}
    assert by_name["pretrain=2"].config == "digits_basin_pretrain.py"
    first = by_name["seed=1/finetune=0"]
    assert (first.source, first.step) == ("pretrain=0", "end")
    assert {("branch.continue_step", False), ("branch.reinit", "head")} <= set(first.overrides)
    assert by_name["seed=1/global=2"].source == "pretrain=2"
    sse = by_name["seed=1/sse/lr=4/epochs=0.5/cycle=2"]
    assert sse.source == "seed=1/sse/lr=4/epochs=0.5/cycle=1"
    assert by_name["seed=1/sse/lr=4/epochs=0.5/cycle=1"].source == "seed=1/finetune=0"
    star = by_name["seed=1/starsse/lr=4/epochs=0.5/cycle=2"]
    assert star.source == "seed=1/finetune=0"
    fields = dict(star.overrides)
    assert fields["optimizer.lr"] == pytest.approx(4 * config.optimizer.lr)
    assert fields["num_epochs"] == max(1, int(0.5 * config.num_epochs))
    assert fields["branch.continue_step"] is False
    seeds = [dict(r.overrides)["seed"] for r in runs if r.name.startswith("seed=1/")]
    assert len(set(seeds)) == len({r.name.split("/lr=")[0] + r.name[-1] for r in runs[3:]}) / 2
    ensembles = basin.ensembles(basin.design(s), 0)
    assert ensembles[("starsse", 4.0, 1.0)] == [
        "seed=0/finetune=0",
        "seed=0/starsse/lr=4/epochs=1/cycle=1",
        "seed=0/starsse/lr=4/epochs=1/cycle=2",
    ]
    assert ensembles[("global", None, None)][0] == "seed=0/finetune=0"


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"members": 1}, "members .* must be >= 2"),
        ({"methods": ("swa",)}, "unknown methods"),
        ({"cycle_lrs": ()}, "methods need cycle_lrs and cycle_epochs"),
        ({"cycle_epochs": (0.0,)}, "must be > 0"),
        ({"pretrained": ("a.safetensors",)}, "not both or neither"),
        ({"pretrain_config": None}, "not both or neither"),
        ({"pretrain_config": None, "pretrained": ("/nowhere/byol.pt",)}, "needs 3 pre-trained"),
        ({"path_points": 2}, "path_points must be >= 3"),
    ],
)
def test_a_basin_study_that_cannot_run_is_one_line(fields, message):
    s = study(**fields)
    with pytest.raises(ValueError, match=message) as e:
        basin.basin_runs(s, paper.study_config(s))
    assert "\n" not in str(e.value)


def test_the_paper_settings_are_refused_with_one_line_where_they_cannot_run(tmp_path, capsys):
    paper.main(["--grid=basin", f"--out={tmp_path / 'dry'}", "--dry_run", "--step_seconds=1"])
    printed = capsys.readouterr().out
    assert "cifar100_byol" in printed and "device hours" in printed  # no checkpoint needed
    with pytest.raises(SystemExit) as e:
        paper.main(["--grid=basin", f"--out={tmp_path / 'paper'}", "--only=cifar100_byol"])
    message = str(e.value)
    assert "\n" not in message and "pre-trained checkpoint" in message and "not found" in message
    assert not os.path.exists(tmp_path / "paper" / "cifar100_byol")
    if jax.default_backend() == "cpu":  # with the checkpoints present, the device is missing
        checkpoint = tmp_path / "byol.safetensors"
        checkpoint.write_bytes(b"")
        s = Study(
            "cifar100_byol",
            "cifar100_resnet50_byol.py",
            OUTPUTS,
            kind="basin",
            members=2,
            pretrained=(str(checkpoint),),
            needs_accelerator=True,
        )
        with pytest.raises(ValueError, match="needs a GPU or TPU") as e:
            paper.run_study(s, str(tmp_path / "paper"))
        assert "\n" not in str(e.value)
        assert not os.path.exists(tmp_path / "paper" / "cifar100_byol")


def test_the_four_experiments_end_to_end(tmp_path, monkeypatch, figures, capsys):
    """A micro grid through the paper runner and `analysis all`: every sse_* output is written
    from real runs, with intervals over the two seeds; a rerun trains nothing; the cycles
    start where the paper starts them."""
    out = str(tmp_path / "paper")
    grid = micro_grid(tmp_path, monkeypatch)
    paper.main([f"--grid={grid}", f"--out={out}"])
    paper.main([f"--grid={grid}", f"--out={out}"])
    second = capsys.readouterr().out.split("== basin")[-1]
    assert second.count("done, skipped") == 2 + 2 * (2 + 1 + 2)

    folder = os.path.join(out, "basin")
    s = paper.load_grid(grid)[0]
    runs = {r.name: r for r in basin.basin_runs(s, paper.study_config(s))}
    first = load_run_state(os.path.join(folder, "seed=0/finetune=0"))[1]
    for method in ("starsse", "sse"):  # both start cycle 1 from the first fine-tuned model
        config = branched.run_config(
            paper.study_config(s), runs[f"seed=0/{method}/lr=2/epochs=1/cycle=1"], folder
        )
        run_setup, fresh = setup(config)
        point = branch.check_sources(config, run_setup.plan.num_steps)
        start = branch_initial_state(config, run_setup, fresh, point)
        assert int(start.step) == 0  # the step count and the schedule restart
        for a, b in zip(jax.tree.leaves(start.params), jax.tree.leaves(first.params), strict=True):
            np.testing.assert_array_equal(a, b)
        for leaf in jax.tree.leaves(start.opt_state):  # SGD momentum: a fresh trace of zeros
            np.testing.assert_array_equal(leaf, np.zeros_like(leaf))
        assert config.optimizer.lr == pytest.approx(2 * paper.study_config(s).optimizer.lr)

    analysis.main(["all", out])
    lines = capsys.readouterr().out.splitlines()
    written = {line.split(":")[0] for line in lines if ": sse_" in line}
    assert written == set(OUTPUTS), lines
    folder = os.path.join(out, "analysis")
    cycles = markdown_rows(read_text(os.path.join(folder, "sse_cycles.md")))
    assert [r["ensemble"] for r in cycles] == [
        "global DE",
        "local DE",
        "SSE lr×2 len×1",
        "StarSSE lr×2 len×1",
    ]
    assert all(r["n"] == "2" and "±" in r["OOD ensemble acc. (%)"] for r in cycles)
    size = markdown_rows(read_text(os.path.join(folder, "sse_size.md")))
    assert {r["size"] for r in size} == {"1", "2"}
    barrier = markdown_rows(read_text(os.path.join(folder, "sse_barrier.md")))
    assert len(barrier) == 4 and all("±" in r["loss barrier (nats)"] for r in barrier)
    soups = markdown_rows(read_text(os.path.join(folder, "sse_soups.md")))
    assert len(soups) == 4
    early = markdown_rows(read_text(os.path.join(folder, "sse_early.md")))
    assert early[-1]["cycles of"].startswith("Spearman ρ(tr(F) @2")
    assert "n = 4 cycles" in early[-1]["tr(F) @2"]
    assert set(OUTPUTS) <= set(figures)  # each drew its figure


def test_the_basin_grid_is_the_papers_setting():
    studies = {s.name: s for s in paper.load_grid("basin")}
    assert set(studies) == {"cifar100_byol", "cifar100_supervised"}
    for name, (lr, wd) in {
        "cifar100_byol": (0.05, 1e-4),
        "cifar100_supervised": (5e-3, 5e-4),
    }.items():
        s = studies[name]
        assert (s.members, s.cycle_lrs, s.cycle_epochs) == (5, (0.25, 0.5, 1, 2, 4), (0.5, 1, 2, 4))
        assert s.global_de and s.needs_accelerator and s.methods == ("sse", "starsse")
        c = paper.study_config(s)
        assert (c.model.name, c.data.name, c.batch_size, c.num_epochs) == (
            "resnet50",
            "cifar100",
            256,
            25,
        )
        assert (c.optimizer.lr, c.optimizer.weight_decay, c.optimizer.momentum) == (lr, wd, 0.9)
        assert c.optimizer.schedule == "cosine"  # stepped per epoch
