"""The Colab notebook (launch/colab/earlyjax_colab.ipynb) runs top to bottom in its TINY mode.

The notebook is executed as stored, in a fresh `python3` kernel on the CPU: its parameters cell
reads EARLYJAX_NOTEBOOK_* from the kernel's environment, which is how the test shrinks the run
and points it at a temporary sweep folder. jupyter_client starts the `python3` kernel with this
interpreter (`sys.executable`), so it imports the same earlyjax.
"""

import json
import os
import pathlib
import re

import nbclient
import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "launch" / "colab" / "earlyjax_colab.ipynb"
K = 3  # not the notebook's default (10), so the test sees that the parameter is used


def _cell(nb, tag: str):
    tagged = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"expected one cell tagged {tag!r}, found {len(tagged)}"
    return tagged[0]


def _cell_by_id(nb, cell_id: str):
    return next(c for c in nb.cells if c.get("id") == cell_id)


def test_notebook_is_stored_clean_with_parameters_first():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0] is _cell(nb, "parameters")
    for c in code:
        assert c.outputs == [] and c.execution_count is None, f"cell {c.id} has outputs"


@pytest.mark.slow  # ~40 s on 2 cores: a Jupyter kernel running the whole notebook
def test_notebook_runs_tiny(tmp_path, request):
    sweep = tmp_path / "runs"
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        EARLYJAX_NOTEBOOK_TINY="1",
        EARLYJAX_NOTEBOOK_WORKDIR=str(sweep),
        EARLYJAX_NOTEBOOK_K=str(K),
        EARLYJAX_NOTEBOOK_CACHE_DIR=str(tmp_path / "corruptions"),
        # The compiled programs the other tests cache (tests/conftest.py), kept across runs.
        JAX_COMPILATION_CACHE_DIR=str(request.config.cache.mkdir("jax-compilation")),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    client.execute(env=env)  # raises CellExecutionError, with the traceback, if a cell fails

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]

    install_text = "".join(o.get("text", "") for o in _cell_by_id(nb, "install").outputs)
    assert "already importable" in install_text  # the install step was skipped

    runs = ["k=none_seed=0", f"k={K}_seed=0"]
    for run in runs:
        with open(sweep / run / "results.json") as f:
            results = json.load(f)
        assert results["k"] == (None if run.startswith("k=none") else K)
        assert results["steps"] == 20

    assert (sweep / "analysis" / "fig2.png").stat().st_size > 0
    figure_outputs = _cell(nb, "figure2").outputs
    assert any("image/png" in o.get("data", {}) for o in figure_outputs)

    table_outputs = _cell(nb, "results-table").outputs
    table = "".join(o.get("data", {}).get("text/markdown", "") for o in table_outputs)
    for label in ("standard", f"GU k={K}"):  # a row label, padded to its column's width
        assert re.search(rf"\| {re.escape(label)} +\|", table), table
