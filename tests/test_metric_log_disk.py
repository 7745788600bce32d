"""A full disk names the file: every writer of a run's or a study's files turns an OSError
raised without a file name (ENOSPC from write, flush or close) into one naming the file it
was writing, so `experiments.cli.errors_as_one_line` prints the path. The disk is "full"
through a stand-in `open` whose files refuse every write."""

from __future__ import annotations

import builtins
import errno
import json
import os

import numpy as np
import pytest

from earlyjax import metric_log
from earlyjax.data.corruptions import cache
from earlyjax.metric_log import MetricLog, write_atomically
from experiments import autok, cli, sweep
from experiments.analysis import render, studies

ENOSPC = os.strerror(errno.ENOSPC)


class FullFile:
    """A file opened for writing on a full disk: every write raises ENOSPC without a name."""

    def __init__(self, file):
        self._file = file

    def write(self, data):
        raise OSError(errno.ENOSPC, ENOSPC)

    def writelines(self, lines):
        raise OSError(errno.ENOSPC, ENOSPC)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()

    def __getattr__(self, name):
        return getattr(self._file, name)


@pytest.fixture
def full_disk(monkeypatch):
    """Call it to fill the disk: from then on no file opened for writing takes a byte."""
    real_open, real_fdopen = builtins.open, os.fdopen

    def full(opener):
        def open_(file, mode="r", *args, **kwargs):
            f = opener(file, mode, *args, **kwargs)
            return FullFile(f) if set(mode) & set("wax+") else f

        return open_

    def fill():
        monkeypatch.setattr(builtins, "open", full(real_open))
        monkeypatch.setattr(os, "fdopen", full(real_fdopen))

    return fill


def assert_names(error: OSError, path: str) -> None:
    """`error` names `path` (or its temporary file) and the one-line message shows it."""
    assert error.errno == errno.ENOSPC
    assert error.filename in (path, path + ".tmp") or os.path.dirname(error.filename) == (
        os.path.dirname(path)
    ), error.filename
    with pytest.raises(SystemExit) as stop, cli.errors_as_one_line():
        raise error
    line = str(stop.value.code)
    assert line.startswith(f"error: cannot write or read {error.filename}: {ENOSPC}."), line
    assert "rerun the same command" in line and "\n" not in line


def test_the_metric_log_and_results_json_name_their_file(tmp_path, monkeypatch, full_disk):
    monkeypatch.setattr(metric_log.MetricLog, "_rebuild_events", lambda self, d: None)
    log = MetricLog(str(tmp_path), resume_step=0)
    full_disk()
    with pytest.raises(OSError) as info:
        log.write(1, "train", loss=1.0)
    assert_names(info.value, os.path.join(tmp_path, "metrics.jsonl"))
    results = str(tmp_path / "results.json")
    with pytest.raises(OSError) as info:
        write_atomically(results, b"{}")
    assert_names(info.value, results)


def test_the_metric_lines_set_aside_on_resume_name_their_file(tmp_path, monkeypatch, full_disk):
    path = tmp_path / "metrics.jsonl"
    lines = [{"step": s, "kind": "train", "loss": 1.0} for s in (1, 2, 3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    monkeypatch.setattr(metric_log.MetricLog, "_rebuild_events", lambda self, d: None)
    full_disk()
    with pytest.raises(OSError) as info:
        MetricLog(str(tmp_path), resume_step=1)
    assert info.value.filename.startswith(f"{path}.orphaned-after-1")
    assert_names(info.value, str(path))


@pytest.mark.parametrize("writer", ["autok.json", "sweep.json", "paper.json", "table"])
def test_the_study_files_name_their_file(tmp_path, full_disk, writer):
    out = str(tmp_path)
    write, path = {
        "autok.json": (lambda: autok.write_summary({"a": 1}, out), "autok.json"),
        "sweep.json": (lambda: sweep.write_manifest(out, {"a": 1}), sweep.SWEEP_FILE),
        "paper.json": (lambda: studies.write_paper_file(out, "grid", []), studies.PAPER_FILE),
        "table": (lambda: render.write_table([{"a": 1}], out, "t"), "t.csv"),
    }[writer]
    full_disk()
    with pytest.raises(OSError) as info:
        write()
    assert_names(info.value, os.path.join(out, path))


def test_the_corruption_cache_names_its_file(tmp_path, full_disk):
    full_disk()
    with pytest.raises(OSError) as info:
        cache._save_no_clobber(str(tmp_path / "x.npy"), np.zeros(3))
    assert_names(info.value, str(tmp_path / "x.npy"))
