"""The metric log (earlyjax/metric_log.py): a crash mid-write (incomplete last line), a corrupt
line, unreadable config.json/results.json, TensorBoard event files (TFRecord CRCs), and a
failed event write."""

import errno
import os
import pathlib
import struct

import pytest
from helpers import assert_tensorboard_matches_log, copy_run

from earlyjax import metric_log
from earlyjax.checkpoint import CheckpointError
from earlyjax.metric_log import MetricLog, RunFileError, read_records
from earlyjax.train import train_and_evaluate
from experiments import cli

PARTIAL = b'{"step": 3, "kind": "train", "loss": 0.71, "accu'  # a write cut short by a crash


def write_log(workdir, steps):
    log = MetricLog(str(workdir), resume_step=-1)
    for step in steps:
        log.write(step, "train", loss=0.5)
    log.close()
    return os.path.join(str(workdir), "metrics.jsonl")


# ----------------------------------------------------------------------------------------------
# metrics.jsonl: an incomplete last line is set aside on resume; a corrupt line is an error
# ----------------------------------------------------------------------------------------------


def test_incomplete_last_line_is_kept_aside_and_the_resume_goes_on(tmp_path, capsys):
    path = write_log(tmp_path, [1, 2])
    with open(path, "ab") as f:
        f.write(PARTIAL)
    assert [r["step"] for r in read_records(path)] == [1, 2]  # readers skip it
    capsys.readouterr()
    log = MetricLog(str(tmp_path), resume_step=2)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "dropped an incomplete last line" in out[0]
    with open(path + ".incomplete-line", "rb") as f:
        assert f.read() == PARTIAL  # nothing lost
    log.write(3, "train", loss=0.25)
    log.close()
    assert [r["step"] for r in read_records(path)] == [1, 2, 3]


def test_a_complete_last_line_without_its_newline_is_kept(tmp_path, capsys):
    path = write_log(tmp_path, [1, 2])
    with open(path, "rb") as f:
        whole = f.read()
    with open(path, "wb") as f:
        f.write(whole[:-1])  # the crash came just before the newline
    log = MetricLog(str(tmp_path), resume_step=2)
    log.write(3, "train", loss=0.25)
    log.close()
    assert [r["step"] for r in read_records(path)] == [1, 2, 3]
    assert not os.path.exists(path + ".incomplete-line")
    assert capsys.readouterr().out == ""


def test_a_corrupt_line_before_the_last_names_the_file_and_line(tmp_path):
    path = write_log(tmp_path, [1, 2, 3])
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    lines[1] = lines[1][:20]
    with open(path, "wb") as f:
        f.write(b"\n".join(lines))
    for call in (lambda: read_records(path), lambda: MetricLog(str(tmp_path), resume_step=3)):
        with pytest.raises(RunFileError, match=rf"{path}, line 2: not valid JSON") as info:
            call()
        assert "\n" not in str(info.value)
    assert issubclass(RunFileError, cli.user_errors())


# ----------------------------------------------------------------------------------------------
# Through train_and_evaluate: a finished run whose results.json was never written
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["config.json", "results.json"])
def test_unreadable_config_or_results_json_is_one_clear_line(finished_run, tmp_path, name):
    config, workdir, _ = copy_run(finished_run, tmp_path)
    path = os.path.join(workdir, name)
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text[: len(text) // 2])
    with pytest.raises(RunFileError, match=rf"^{path} \(.*\) is not valid JSON") as info:
        train_and_evaluate(config, workdir)
    assert "\n" not in str(info.value) and isinstance(info.value, CheckpointError)


def test_event_files_are_tfrecords_of_tensorboard_events(tmp_path):
    """The CRC-32C is the standard one (check value of "123456789": 0xE3069283), masked as
    TFRecord masks it; a flipped byte fails its record's checksum."""
    x = 0xE3069283
    assert metric_log._masked_crc32c(b"123456789") == (((x >> 15) | (x << 17)) + 0xA282EAD8) % 2**32
    events = metric_log.EventFile(str(tmp_path))
    events.write({"step": 3, "kind": "train", "loss": 0.5, "ok": True, "note": "text"})
    events.close()
    assert metric_log.read_event_scalars(str(tmp_path)) == [("train/loss", 3, 0.5)]
    data = bytearray(pathlib.Path(events.path).read_bytes())
    (length,) = struct.unpack_from("<Q", data)
    first = metric_log._Event.FromString(bytes(data[12 : 12 + length]))
    assert first.file_version == "brain.Event:2"
    data[-6] ^= 0xFF
    pathlib.Path(events.path).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="fails its checksum"):
        metric_log.read_event_scalars(str(tmp_path))


# ----------------------------------------------------------------------------------------------
# checkpoints: bytes corrupted in place (size unchanged) are caught by the saved digest
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# OOD splits must fit the ID data
# ----------------------------------------------------------------------------------------------


def without_timings(results):
    return {k: v for k, v in results.items() if not k.endswith("_seconds_this_session")}


def test_a_failed_event_write_raises_at_once_naming_the_file_then_resumes(
    tiny_config, tiny_dataset, tmp_path, monkeypatch
):
    """The TensorBoard writer runs in the training thread: ENOSPC there is an OSError naming
    the event file (the old background writer died and the run blocked on its queue)."""
    reference = train_and_evaluate(tiny_config, str(tmp_path / "ref"), dataset=tiny_dataset)
    real_write = metric_log.EventFile.write
    calls = []

    def write(self, record):
        calls.append(record["step"])
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(self, record)

    monkeypatch.setattr(metric_log.EventFile, "write", write)
    workdir = tmp_path / "run"
    with pytest.raises(OSError, match="No space left on device") as info:
        train_and_evaluate(tiny_config, str(workdir), dataset=tiny_dataset)
    assert info.value.filename.startswith(str(workdir / "tb" / "events.out.tfevents."))
    with pytest.raises(SystemExit) as stop, cli.errors_as_one_line():
        raise info.value
    assert str(stop.value.code).startswith(f"error: cannot write or read {info.value.filename}")
    monkeypatch.setattr(metric_log.EventFile, "write", real_write)
    resumed = train_and_evaluate(tiny_config, str(workdir), dataset=tiny_dataset)
    assert without_timings(resumed) == without_timings(reference)
    assert_tensorboard_matches_log(workdir)
