"""One writer per workdir (earlyjax/workdir_lock.py)."""

import os

import pytest

from earlyjax.workdir_lock import WorkdirBusy, workdir_lock


def test_lock_refuses_a_second_holder_and_is_released(tmp_path):
    workdir = str(tmp_path / "run")
    busy = pytest.raises(WorkdirBusy, match=f"pid {os.getpid()} ")
    with workdir_lock(workdir), busy, workdir_lock(workdir):
        pass
    with workdir_lock(workdir):  # released on exit
        pass
    with pytest.raises(RuntimeError), workdir_lock(workdir):
        raise RuntimeError
    with workdir_lock(workdir):  # and on an exception
        pass


def test_train_refuses_a_locked_workdir_before_writing(tmp_path, tiny_config, tiny_dataset):
    from earlyjax.train import train_and_evaluate

    workdir = str(tmp_path / "run")
    with workdir_lock(workdir), pytest.raises(WorkdirBusy, match="in use by another run"):
        train_and_evaluate(tiny_config, workdir, dataset=tiny_dataset)
    assert sorted(os.listdir(workdir)) == [".lock"]
    assert train_and_evaluate(tiny_config, workdir, dataset=tiny_dataset) is not None
