"""experiments.lottery and the lth_* outputs: the runs of a lottery study (Frankle et al. 2020)
in dependency order, and the four experiments end to end at a toy scale through
`python -m experiments.paper` and `python -m experiments.analysis all` (the whole
`lottery_digits` grid: -m slow)."""

import os
import textwrap

import pytest
from helpers import markdown_rows, read_text

from earlyjax.data.pipeline import steps_per_epoch
from experiments import analysis, lottery, paper
from experiments.paper import Study

OUTPUTS = ("lth_imp", "lth_rewind", "lth_perturb", "lth_pretext", "lth_telemetry")

MICRO_CONFIG = """
from experiments.configs.digits_lottery import get_config as digits_lottery


def get_config():
    c = digits_lottery()
    c.total_steps = 8
    c.checkpoint_steps = (0, 2)
    c.data.ood_corruptions = "fog"
    c.data.ood_max_examples = 50
    c.record.until = 4
    c.record.set_size = 32
    c.record.batch_size = 32
    c.record.metrics = ("fisher",)
    return c
"""

MICRO_GRID = """
from experiments.paper import Study


def get_grid():
    return [
        Study("lottery", {config!r}, {outputs!r}, kind="lottery", seeds=(0, 1), rewind=(0, 2),
              levels=1, sparsity_level=1, transforms=("shuffle",), pretexts=("rotation",),
              pretrain_epochs=(0.05,)),
    ]
"""


def micro_grid(tmp_path) -> str:
    config = tmp_path / "micro_lottery_config.py"
    config.write_text(textwrap.dedent(MICRO_CONFIG))
    grid = tmp_path / "micro_lottery_grid.py"
    grid.write_text(textwrap.dedent(MICRO_GRID.format(config=str(config), outputs=OUTPUTS)))
    return str(grid)


def study(**fields) -> Study:
    design = dict(seeds=(0,), rewind=(0, 4), levels=2, sparsity_level=2)
    return Study("lottery", "digits_lottery.py", OUTPUTS, kind="lottery", **{**design, **fields})


def test_every_run_comes_after_the_runs_it_branches_from_and_prunes():
    s = study(transforms=("reinit",), pretexts=("rotation",), pretrain_epochs=(1,), seeds=(0, 1))
    runs = lottery.lottery_runs(s, paper.study_config(s), num_train=1437)
    names = [r.name for r in runs]
    assert len(names) == len(set(names))
    # per seed: the trunk, 2 k x 2 levels, 1 transform x 2 k, pre-training + levels 0..2
    assert len(runs) == 2 * (1 + 4 + 2 + 4)
    for i, run in enumerate(runs):
        for needed in (run.source, run.prune_from):
            assert needed is None or needed in names[:i], (run.name, needed)
    by_name = {r.name: r for r in runs}
    level_2 = by_name["seed=1/k=4/level=2"]
    assert (level_2.source, level_2.step, level_2.prune_from) == (
        "seed=1/trunk",
        "4",
        "seed=1/k=4/level=1",
    )
    assert by_name["seed=0/k=0/level=1"].prune_from == "seed=0/trunk"  # level 0 is the trunk
    perturbed = by_name["seed=0/k=4/level=2/reinit"]
    assert perturbed.prune_from == "seed=0/k=4/level=1"
    assert ("branch.transform", "reinit") in perturbed.overrides
    after_rotation = by_name["seed=0/pretext=rotation/epochs=1/level=0"]
    assert after_rotation.source == "seed=0/pretext=rotation/epochs=1/pretrain"
    assert after_rotation.step == "end" and ("branch.reinit", "head") in after_rotation.overrides
    pretrain = dict(by_name["seed=0/pretext=rotation/epochs=1/pretrain"].overrides)
    one_epoch = steps_per_epoch(1437, paper.study_config(s).batch_size)
    assert pretrain["total_steps"] == one_epoch and pretrain["data.pretext"] == "rotation"
    trunk = dict(by_name["seed=0/trunk"].overrides)
    assert set(trunk["checkpoint_steps"]) >= {0, 4}


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"rewind": ()}, "rewind needs steps"),
        ({"levels": 0}, "levels must be >= 1"),
        ({"sparsity_level": 3}, "sparsity_level must be in 1..levels=2"),
        ({"pretexts": ("jigsaw",), "pretrain_epochs": (1,)}, "unknown pretexts"),
        ({"pretexts": ("blur",)}, "pretexts need pretrain_epochs"),
    ],
)
def test_a_lottery_study_that_cannot_run_is_one_line(fields, message):
    s = study(**fields)
    with pytest.raises(ValueError, match=message) as e:
        lottery.lottery_runs(s, paper.study_config(s), num_train=1437)
    assert "\n" not in str(e.value)


def test_the_four_experiments_end_to_end(tmp_path, figures, capsys):
    """A micro grid through the paper runner and `analysis all`: every lth_* output is written
    from real runs, with intervals over the two seeds; a rerun trains nothing."""
    out = str(tmp_path / "paper")
    grid = micro_grid(tmp_path)
    paper.main([f"--grid={grid}", f"--out={out}"])
    paper.main([f"--grid={grid}", f"--out={out}"])
    second = capsys.readouterr().out.split("== lottery")[-1]
    assert second.count("done, skipped") == 16 and "level=1\n" not in second

    analysis.main(["all", out])
    lines = capsys.readouterr().out.splitlines()
    written = {line.split(":")[0] for line in lines if ": lth_" in line}
    assert written == set(OUTPUTS), lines
    folder = os.path.join(out, "analysis")
    imp = markdown_rows(read_text(os.path.join(folder, "lth_imp.md")))
    assert [(r["k"], r["level"], r["weights remaining (%)"]) for r in imp] == [
        ("0", "0", "100.0"),
        ("0", "1", "80.0"),
        ("2", "0", "100.0"),
        ("2", "1", "80.0"),
    ]
    assert all(r["n"] == "2" and "±" in r["OOD accuracy (%)"] for r in imp)
    perturb = markdown_rows(read_text(os.path.join(folder, "lth_perturb.md")))
    assert {r["transform"] for r in perturb} == {"identity (IMP)", "shuffle"}
    pretext = markdown_rows(read_text(os.path.join(folder, "lth_pretext.md")))
    assert {r["pretext"] for r in pretext} == {"rotation", "none (IMP)"}
    telemetry = markdown_rows(read_text(os.path.join(folder, "lth_telemetry.md")))
    assert [r["step"] for r in telemetry] == ["0", "2", "8"]
    assert telemetry[0]["L2 distance to init"] == "0 ± 0" and telemetry[0]["tr(F)"]
    assert telemetry[-1]["tr(F)"] == "—"  # the trunk records to step 4 only
    assert set(OUTPUTS) <= set(figures)  # each drew its figure


def test_analysis_all_names_the_missing_lottery_runs(tmp_path):
    out = tmp_path / "paper"
    paper.write_paper_file(str(out), "synthetic", [study()])
    lines = analysis.write_all(str(out), str(tmp_path / "analysis"))
    line = next(line for line in lines if line.startswith("lth_imp"))
    assert "runs missing: lottery/seed=0/trunk, lottery/seed=0/k=0/level=1" in line


@pytest.mark.slow  # ~1 min: the whole lottery_digits grid
def test_the_lottery_digits_grid_end_to_end(tmp_path, capsys):
    out = str(tmp_path / "paper")
    paper.main(["--grid=lottery_digits", f"--out={out}"])
    analysis.main(["all", out])
    lines = capsys.readouterr().out.splitlines()
    assert {line.split(":")[0] for line in lines if ": lth_" in line} == set(OUTPUTS)
