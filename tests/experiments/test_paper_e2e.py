"""`python -m experiments.paper` then `python -m experiments.analysis all` for real, on the
embedded digits: a micro grid and the whole `digits` grid (every table and figure), both with
`-m slow` (the pieces have fast tests in test_paper.py, test_sweep.py and test_autok.py)."""

import os
import textwrap

import pytest
from helpers import markdown_rows, read_text

from experiments import analysis, paper

MICRO_CONFIG = """
from experiments.configs.digits_tiny import get_config as digits_tiny


def get_config():
    c = digits_tiny()
    c.total_steps = 12
    c.data.ood_corruptions = "fog"
    c.record.every = 4
    c.record.until = 8
    c.record.metrics = ("fisher", "feature_rank")
    c.final.metrics = ("feature_eigenvalue",)
    return c
"""

MICRO_GRID = """
from experiments.paper import Study


def get_grid():
    return [
        Study("k", {config!r}, ("table1", "fig1", "fig2", "fig7", "fig5"), seeds=(0, 1),
              k=(None, 2)),
    ]
"""


def outputs(lines):
    return {ln.split(":")[0]: ln for ln in lines}


@pytest.mark.slow  # ~30 s: 4 real runs; test_paper checks each piece on synthetic folders
def test_micro_grid_end_to_end(tmp_path, capsys):
    config = tmp_path / "micro_config.py"
    config.write_text(MICRO_CONFIG)
    grid = tmp_path / "micro_grid.py"
    grid.write_text(textwrap.dedent(MICRO_GRID.format(config=str(config))))
    out = str(tmp_path / "paper")
    paper.main([f"--grid={grid}", f"--out={out}"])
    paper.main([f"--grid={grid}", f"--out={out}"])  # again: everything is done
    assert capsys.readouterr().out.count("done, skipped") == 4

    lines = outputs(paper.write_all(out, os.path.join(out, "analysis")))
    for name in ("table1", "fig1", "fig2", "fig7", "fig5"):
        assert "not written" not in lines[name], lines[name]
    assert "no study of the grid feeds it" in lines["table2"]
    rows = markdown_rows(read_text(os.path.join(out, "analysis", "table1.md")))
    assert [(r["training"], r["n"]) for r in rows] == [("standard", "2"), ("GU k=2", "2")]
    runs = analysis.load_runs(os.path.join(out, "k"))
    assert {tuple(r["final_solution"]) for r in runs} == {("feature_eigenvalue",)}
    assert os.path.getsize(os.path.join(out, "analysis", "fig7.png")) > 1000


@pytest.mark.slow  # ~11 min on 2 CPU cores: up to 44 real runs
def test_digits_grid_writes_every_image_table_and_figure(tmp_path, capsys):
    out = str(tmp_path / "paper")
    paper.main(["--grid=digits", f"--out={out}"])
    lines = outputs(paper.write_all(out, os.path.join(out, "analysis")))
    assert list(lines) == list(paper.OUTPUTS)
    fed = {o for study in paper.load_grid("digits") for o in study.outputs}
    # The first paper's image outputs (the lottery ones: test_lottery.py's grids).
    lottery = {n for n in paper.OUTPUTS if n.startswith(("lth_", "sse_"))}  # other papers
    assert fed == set(paper.OUTPUTS) - {"table4", "table7", "fig4", "fig9"} - lottery
    for name, line in lines.items():
        assert ("not written" not in line) if name in fed else ("feeds it" in line), line
    table1 = markdown_rows(read_text(os.path.join(out, "analysis", "table1.md")))
    assert [(r["lr"], r["training"]) for r in table1] == [
        (lr, t) for lr in ("0.1*lr_d", "1*lr_d") for t in ("standard", "GU k=2", "GU k=6")
    ]
    assert all(r["n"] == "2" and " ± " in r["OOD"] for r in table1)
    table3 = markdown_rows(read_text(os.path.join(out, "analysis", "table3.md")))
    assert [r["schedule"] for r in table3] == [
        "constant lr_d", "constant 0.1·lr_d", "lr_h2l @ 6", "lr_l2h @ 6",
    ]  # fmt: skip
    extra = markdown_rows(read_text(os.path.join(out, "analysis", "table3_autok.md")))
    assert extra[0]["method"] == "standard" and extra[1]["method"] == "lr_l2h, random k"
    assert {r["method"] for r in extra[2:]} <= {
        "lr_l2h, k from tr(F)", "lr_l2h, k from S_avg", "lr_l2h, k from S_worst",
    }  # fmt: skip
    capsys.readouterr()
    paper.main(["--grid=digits", f"--out={out}", "--dry_run", "--step_seconds=0.1"])
    assert "total: at most 44 runs (0 to do)" in capsys.readouterr().out
