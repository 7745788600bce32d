"""Runs that never lie and never lose work: a crash mid-write, a run killed before results.json,
unreadable workdir files and OOD splits that do not fit the ID data."""

import json
import os
import pathlib
import shutil
import struct

import numpy as np
import pytest
from helpers import assert_tensorboard_matches_log

from earlyjax import data as data_module
from earlyjax import metric_log
from earlyjax.checkpoint import Checkpointer, CheckpointError
from earlyjax.data.base import Dataset, Split
from earlyjax.data.local_files import DatasetFileError
from earlyjax.metric_log import MetricLog, RunFileError, read_records
from earlyjax.periodic import StopAt
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


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_dataset):
    from earlyjax.config import default_config

    c = default_config()
    c.model.width = 4
    c.batch_size = 32
    c.total_steps = 6
    c.log_every = 3
    c.checkpoint_every = 0
    c.eval_batch_size = 64
    c.progress_bar = False
    c.unfreeze.k = 2
    c.unfreeze.allow_late_release = True
    c.data.ood_source = "none"
    workdir = str(tmp_path_factory.mktemp("finished") / "run")
    results = train_and_evaluate(c, workdir, dataset=tiny_dataset)
    return c, workdir, results


def copy_run(finished_run, tmp_path):
    config, workdir, results = finished_run
    copy = str(tmp_path / "copy")
    shutil.copytree(workdir, copy)
    return config, copy, results


def test_run_killed_before_results_json_writes_one_final_line(finished_run, tmp_path, tiny_dataset):
    config, workdir, results = copy_run(finished_run, tmp_path)
    log = os.path.join(workdir, "metrics.jsonl")
    uninterrupted = read_records(log)
    assert [r["kind"] for r in uninterrupted][-1] == "final"
    os.remove(os.path.join(workdir, "results.json"))  # killed between the final line and it
    again = train_and_evaluate(config, workdir, dataset=tiny_dataset)
    assert again["id_accuracy"] == results["id_accuracy"]
    assert read_records(log) == uninterrupted  # exactly one final line
    assert [r["kind"] for r in read_records(log + ".orphaned-after-6")] == ["final"]
    assert_tensorboard_matches_log(workdir)  # and one final/* event


def test_run_killed_while_writing_the_final_line(finished_run, tmp_path, tiny_dataset, capsys):
    config, workdir, _ = copy_run(finished_run, tmp_path)
    log = os.path.join(workdir, "metrics.jsonl")
    uninterrupted = read_records(log)
    with open(log, "rb") as f:
        data = f.read()
    cut = len(data) - 12  # half of the final line
    with open(log, "wb") as f:
        f.write(data[:cut])
    os.remove(os.path.join(workdir, "results.json"))
    train_and_evaluate(config, workdir, dataset=tiny_dataset)
    assert read_records(log) == uninterrupted
    with open(log + ".incomplete-line", "rb") as f:
        assert f.read() == data[data.rindex(b"\n", 0, len(data) - 1) + 1 : cut]
    assert capsys.readouterr().out.count("incomplete last line") == 1


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


def flip_bytes_of_largest_file(directory):
    """Inverts 64 bytes in the middle of the largest array-data file under `directory` (orbax's
    OCDBT data files, in folders named `d`), leaving its size unchanged."""
    files = [
        os.path.join(r, f)
        for r, _, names in os.walk(directory)
        for f in names
        if os.path.basename(r) == "d"
    ]
    path = max(files, key=os.path.getsize)
    middle = os.path.getsize(path) // 2
    with open(path, "r+b") as f:
        f.seek(middle)
        data = f.read(64)
        f.seek(middle)
        f.write(bytes(b ^ 0xFF for b in data))


def test_a_checkpoint_with_corrupted_bytes_is_refused_naming_it(tmp_path):
    state = {"w": np.arange(50_000, dtype=np.float32), "step": np.array(7, np.int32)}
    ckpt = Checkpointer(str(tmp_path / "checkpoints"))
    ckpt.save(7, state, {"note": 1})
    assert ckpt.restore(7, state)[1] == {"note": 1}  # the digest is checked and not returned
    flip_bytes_of_largest_file(tmp_path / "checkpoints" / "7" / "state")
    with pytest.raises(CheckpointError, match=r"checkpoints/7 is corrupt: .* SHA-256 digest"):
        ckpt.restore(7, state)
    with pytest.raises(CheckpointError, match="SHA-256"):  # nothing older to fall back to
        ckpt.restore_latest(state)
    assert os.path.isdir(tmp_path / "checkpoints" / "7")  # and nothing moved
    ckpt.close()


def test_a_checkpoint_without_a_digest_is_refused_in_one_line(tmp_path):
    """Every released version records the digest: a checkpoint without one is refused."""
    state = {"w": np.arange(10, dtype=np.float32)}
    ckpt = Checkpointer(str(tmp_path / "checkpoints"))
    ckpt.save(3, state, {"note": 1})
    ckpt.close()
    paths = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path / "checkpoints" / "3") for f in fs]
    (meta,) = [p for p in paths if b"state_sha256" in pathlib.Path(p).read_bytes()]
    with open(meta) as f:
        saved = json.load(f)
    del saved["state_sha256"]
    with open(meta, "w") as f:
        json.dump(saved, f)
    ckpt = Checkpointer(str(tmp_path / "checkpoints"))
    with pytest.raises(CheckpointError, match=r"checkpoints/3 has no SHA-256 digest") as info:
        ckpt.restore(3, state)
    assert "\n" not in str(info.value)
    ckpt.close()


def test_resume_falls_back_from_a_corrupt_checkpoint_to_the_previous_one(
    tiny_config, tiny_dataset, tmp_path, capsys
):
    tiny_config.checkpoint_every = 2
    full, hit = str(tmp_path / "full"), str(tmp_path / "hit")
    reference = train_and_evaluate(tiny_config, full, dataset=tiny_dataset)
    train_and_evaluate(tiny_config, hit, dataset=tiny_dataset, extra_actions=[StopAt(6)])
    flip_bytes_of_largest_file(os.path.join(hit, "checkpoints", "6", "state"))
    resumed = train_and_evaluate(tiny_config, hit, dataset=tiny_dataset)
    out = capsys.readouterr().out
    # Flipped bytes fail the digest, or, when they land in a compressed chunk, the read itself
    # (orbax's file layout varies run to run); either way the run falls back. The digest path
    # alone is tested above.
    assert "checkpoints/6 is corrupt" in out or "cannot restore the checkpoint at" in out
    assert "intact checkpoint at step 4" in out
    assert resumed["id_accuracy"] == reference["id_accuracy"]
    log = os.path.join(hit, "metrics.jsonl")
    assert read_records(log) == read_records(os.path.join(full, "metrics.jsonl"))
    assert os.listdir(os.path.join(hit, "checkpoints.corrupt")) == ["6"]  # kept, not deleted
    assert_tensorboard_matches_log(hit)


# ----------------------------------------------------------------------------------------------
# OOD splits must fit the ID data
# ----------------------------------------------------------------------------------------------


def cifar_like(n, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return Split(images, rng.integers(0, 10, n).astype(np.int32))


@pytest.fixture
def cifar10_local_ood(tmp_path, monkeypatch):
    """A CIFAR-10 config reading OOD .npy files from tmp_path/c (ID data: 12 fake images)."""
    from experiments.configs.cifar10_rn18 import get_config

    monkeypatch.setattr(data_module, "_load_id", lambda data: (cifar_like(12), cifar_like(4, 1)))
    config = get_config()
    config.data.ood_source = "local"
    config.data.ood_dir = str(tmp_path / "c")
    config.data.ood_corruptions = "fog"
    (tmp_path / "c").mkdir()
    return config


def write_c(directory, shape, labels):
    n = len(labels)
    np.save(directory / "labels.npy", np.tile(labels, 5).astype(np.int64))
    np.save(directory / "fog.npy", np.zeros((5 * n, *shape), np.uint8))


def test_ood_files_of_another_data_set_are_refused_before_anything_is_written(
    cifar10_local_ood, tmp_path
):
    c_dir = tmp_path / "c"
    write_c(c_dir, (28, 28, 1), np.arange(4))  # MNIST-C-sized images for a CIFAR-10 run
    with pytest.raises(DatasetFileError) as info:
        data_module.load_dataset(cifar10_local_ood.data)
    msg = str(info.value)
    assert "OOD split fog/severity 1" in msg and "(4, 28, 28, 1)" in msg and "32, 32, 3" in msg
    assert f"--config.data.ood_dir={c_dir} must hold the CIFAR-10-C release" in msg
    assert "\n" not in msg and issubclass(DatasetFileError, cli.user_errors())
    workdir = tmp_path / "run"
    with pytest.raises(DatasetFileError, match="fog/severity 1"):
        train_and_evaluate(cifar10_local_ood, str(workdir))
    assert not workdir.exists()
    write_c(c_dir, (32, 32, 3), np.arange(4))
    assert data_module.load_dataset(cifar10_local_ood.data).ood[("fog", 1)].images.shape == (
        4,
        32,
        32,
        3,
    )


def test_every_ood_split_is_checked_against_the_id_data():
    """Whatever the source (a Dataset built by hand too): dtype, shape, label count and range."""
    train, test = cifar_like(8), cifar_like(4, 1)

    def build(images, labels, num_classes=10):
        return Dataset("cifar10", num_classes, train, test, {("fog", 2): Split(images, labels)})

    good = test.images
    build(good, test.labels)
    cases = [
        (good.astype(np.float32), test.labels, r"images are float32 \(4, 32, 32, 3\)"),
        (good[:, :28, :28], test.labels, r"images are uint8 \(4, 28, 28, 3\)"),
        (good[:0], test.labels[:0], r"images are uint8 \(0, 32, 32, 3\).*n >= 1"),
        (good, test.labels[:3], r"labels are int32 \(3,\), expected 4 integer labels"),
        (good, test.labels.astype(np.float32), "labels are float32"),
        (good, np.full(4, 10, np.int32), r"labels range over \[10, 10\].*10 classes"),
    ]
    for images, labels, match in cases:
        with pytest.raises(DatasetFileError, match=r"cifar10 OOD split fog/severity 2: " + match):
            build(images, labels)
