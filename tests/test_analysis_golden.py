"""`python -m experiments.analysis` writes and prints what it wrote when the golden record was
made (tests/analysis_golden.py): every table file byte for byte, every figure's data, and the
printed lines of `analysis all` and of each subcommand."""

import json

import pytest
from analysis_golden import read_golden, run_analysis


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    return run_analysis(tmp_path_factory.mktemp("golden")), read_golden()


def test_every_output_is_fed(outputs):
    _, golden = outputs
    assert not [ln for ln in golden["printed"]["all"] if "not written" in ln]


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
