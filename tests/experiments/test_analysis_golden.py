"""`python -m experiments.analysis` writes and prints what it wrote when the golden record was
made (tests/analysis_golden.py): every table file byte for byte, every figure's data, and the
printed lines of `analysis all` and of each subcommand."""

import json
import os
import subprocess
import sys

import pytest
from analysis_golden import read_golden, run_analysis


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    return run_analysis(tmp_path_factory.mktemp("golden")), read_golden()


def test_every_output_of_the_first_paper_is_fed(outputs):
    """The record covers Liu & Gurevych's outputs; the lottery (lth_*) and basin (sse_*) ones
    have their own end-to-end tests (test_lottery.py, test_basin.py)."""
    _, golden = outputs
    printed = [ln for ln in golden["printed"]["all"] if not ln.startswith(("lth_", "sse_"))]
    assert not [ln for ln in printed if "not written" in ln]


def test_tables_are_byte_for_byte_the_same(outputs):
    now, golden = outputs
    assert sorted(now["tables"]) == sorted(golden["tables"])
    for name, text in golden["tables"].items():
        assert now["tables"][name] == text, name


def test_figures_draw_the_same_data(outputs):
    now, golden = outputs
    assert sorted(now["figures"]) == sorted(golden["figures"])
    for stem, data in golden["figures"].items():
        # through JSON, as stored: NaN compares equal to NaN as text
        assert json.dumps(now["figures"][stem], sort_keys=True) == json.dumps(
            data, sort_keys=True
        ), stem


def test_printed_lines_are_the_same(outputs):
    now, golden = outputs
    assert now["printed"] == golden["printed"]


def test_every_output_of_the_registry_is_in_the_record():
    from experiments import analysis, paper

    assert paper.OUTPUTS is analysis.OUTPUTS  # one registry
    golden = read_golden()
    written = {ln.split(":")[0] for ln in golden["printed"]["all"][:-1]}
    assert written == set(analysis.OUTPUTS)


def test_analysis_imports_neither_paper_nor_autok():
    """paper and autok import analysis, never the reverse: a fresh interpreter that imports the
    package (whose __init__ imports every module of it, as importing any one of them does)
    has loaded neither."""
    code = (
        "import sys, experiments.analysis.cli\n"
        "bad = {'experiments.paper', 'experiments.autok'} & set(sys.modules)\n"
        "sys.exit(f'experiments.analysis imports {sorted(bad)}' if bad else 0)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # this copy
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
