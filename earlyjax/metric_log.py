"""Metric records written as they are produced: append-only JSONL plus TensorBoard events.

Each record is one JSON object per line with at least `step` and `kind`. On resume from a
checkpoint at step m, lines with step > m (written after that checkpoint by the interrupted
run; every line when there is no checkpoint yet, `resume_step=-1`) and any `final` line (written
after the last checkpoint, so a run killed before its results.json would otherwise write it
twice) are moved, not deleted, to `metrics.jsonl.orphaned-after-<m>` so the log has no
duplicates.

`metrics.jsonl` is the source of truth; `tb/` is a view of it. Every open rebuilds the
TensorBoard events from the log (a new event file, then the older ones are removed), so after
any crash and resume TensorBoard holds every logged step exactly once. Events are written and
flushed in the calling thread: a failed write (a full disk) raises OSError there instead of
killing a background writer thread and blocking the run (as tensorboardX's SummaryWriter
would). So the files are written here, with public APIs only: TFRecords (a CRC-32C defined
here) of TensorBoard's Event messages (defined here through protobuf's descriptor API) holding
the Summary of tensorboardX's public `summary.scalar`.

A crash in the middle of a write leaves an incomplete last line: on resume it is moved to
`metrics.jsonl.incomplete-line` (its bytes as they were) with one printed line, and
`read_records` skips it. An unreadable line anywhere else is a `RunFileError` naming the file
and the line number, as is an unreadable `config.json` or `results.json` (`read_json`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, message_factory
from tensorboardX.summary import scalar

from earlyjax.checkpoint import CheckpointError

METRICS_FILE = "metrics.jsonl"
FINAL_KIND = "final"  # the record written after the last checkpoint, with the results


class RunFileError(CheckpointError):
    """A file of a run's workdir (metrics.jsonl, config.json, results.json) cannot be read; the
    message names the file (and line) and what to do. A CheckpointError: the run's saved state
    cannot be resumed as it is."""


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to the metric log")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    return value


def _parse_record(line: bytes) -> dict:
    """One metric record; ValueError saying what is wrong with the line."""
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not (isinstance(record, dict) and isinstance(record.get("step"), int) and "kind" in record):
        raise ValueError('not a metric record (a JSON object with an int "step" and a "kind")')
    return record


def _scan(path: str) -> tuple[list[tuple[bytes, dict]], int | None, bytes]:
    """(raw line, record) of every complete line of the metric file at `path`, the byte offset
    at which an incomplete last line starts (None if there is none) and the file's bytes.

    The last non-blank line is incomplete when it cannot be parsed (a write cut short by a
    crash, with or without its newline); an unparseable line before it is a RunFileError.
    """
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    nonblank = [i for i, line in enumerate(lines) if line.strip()]
    out, offset, tail = [], 0, None
    for i, line in enumerate(lines):
        if line.strip():
            try:
                out.append((line + b"\n", _parse_record(line)))
            except ValueError as e:
                if i != nonblank[-1]:
                    raise RunFileError(
                        f"{path}, line {i + 1}: {e}; the metric log is corrupt there. Repair or "
                        "delete that line (its records are lost), or start again with a fresh "
                        "--workdir"
                    ) from None
                tail = offset
        offset += len(line) + 1
    return out, tail, data


def read_records(path: str) -> list[dict]:
    """All records of a JSONL metric file (an empty list if it does not exist).

    An incomplete last line (a crash mid-write) is skipped; a corrupt line elsewhere raises
    RunFileError naming the file and line.
    """
    if not os.path.exists(path):
        return []
    return [record for _, record in _scan(path)[0]]


def read_json(path: str, what: str, fix: str) -> dict:
    """The JSON object in `path` (a workdir's config.json or results.json): RunFileError
    naming the file, `what` it is and the `fix` when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except json.JSONDecodeError as e:
        problem = f"is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})"
    except UnicodeDecodeError as e:
        problem = f"is not UTF-8 text ({e.reason} at byte {e.start})"
    else:
        if isinstance(value, dict):
            return value
        problem = f"holds a JSON {type(value).__name__}, not an object"
    raise RunFileError(f"{path} ({what}) {problem}; {fix}")


def _free_name(base: str) -> str:
    name, n = base, 1
    while os.path.exists(name):
        name, n = f"{base}.{n}", n + 1
    return name


@contextlib.contextmanager
def naming_the_file(path: str) -> Iterator[None]:
    """Adds `path` to an OSError raised without a file name (a failed write or flush)."""
    try:
        yield
    except OSError as e:
        if e.filename or e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, path) from e


def write_atomically(path: str, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file and a rename: a crash or a full disk
    leaves the old file (or none), never half a file. OSErrors name the file."""
    tmp = path + ".tmp"
    with naming_the_file(tmp), open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _replace_contents(path: str, lines: list[bytes]) -> None:
    write_atomically(path, b"".join(lines))


EVENT_FILE_PREFIX = "events.out.tfevents."


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C (Castagnoli) of `data`, as TFRecord files check their records."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _tfrecord(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC-32C, the data, the data's masked CRC-32C."""
    header = struct.pack("<Q", len(data))
    return (
        header
        + struct.pack("<I", _masked_crc32c(header))
        + data
        + struct.pack("<I", _masked_crc32c(data))
    )


def _event_messages() -> tuple[type, type]:
    """The protobuf classes of TensorBoard's `Event` and `Summary` messages, with the fields
    that metric logs use (tensorboard/compat/proto/event.proto and summary.proto): an Event's
    wall_time (1), step (2), file_version (3) and summary (5, here its serialized bytes: the
    same wire format); a Summary's values (1), each a tag (1) and a simple_value (2)."""
    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="earlyjax/tensorboard_event.proto", package="earlyjax.tb", syntax="proto3"
    )
    fields = {
        "Event": [
            ("wall_time", 1, F.TYPE_DOUBLE),
            ("step", 2, F.TYPE_INT64),
            ("file_version", 3, F.TYPE_STRING),
            ("summary", 5, F.TYPE_BYTES),
        ],
        "Value": [("tag", 1, F.TYPE_STRING), ("simple_value", 2, F.TYPE_FLOAT)],
        "Summary": [("value", 1, F.TYPE_MESSAGE)],
    }
    for name, message_fields in fields.items():
        message = proto.message_type.add(name=name)
        for field, number, kind in message_fields:
            message.field.add(name=field, number=number, type=kind, label=F.LABEL_OPTIONAL)
    value = proto.message_type[2].field[0]  # Summary.value: repeated Value
    value.label, value.type_name = F.LABEL_REPEATED, ".earlyjax.tb.Value"
    classes = message_factory.GetMessages([proto])  # in a pool of their own
    return classes["earlyjax.tb.Event"], classes["earlyjax.tb.Summary"]


_Event, _Summary = _event_messages()


class EventFile:
    """A TensorBoard event file in `directory`, written synchronously: `write(record)` adds the
    record's numeric values as scalars `<kind>/<name>` at its step and flushes."""

    def __init__(self, directory: str):
        os.makedirs(directory, exist_ok=True)
        name = f"{EVENT_FILE_PREFIX}{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self.path = _free_name(os.path.join(directory, name))
        self._file = open(self.path, "wb")  # noqa: SIM115 (open for the run; closed in close)
        with naming_the_file(self.path):
            self._put(_Event(wall_time=time.time(), file_version="brain.Event:2"))
            self._file.flush()

    def _put(self, event) -> None:
        self._file.write(_tfrecord(event.SerializeToString()))

    def write(self, record: dict) -> None:
        now = time.time()
        for name, value in record.items():
            if name in ("step", "kind") or isinstance(value, bool):
                continue
            if isinstance(value, (int, float, np.integer, np.floating)):
                summary = scalar(f"{record['kind']}/{name}", float(value)).SerializeToString()
                self._put(_Event(wall_time=now, step=record["step"], summary=summary))
        self._file.flush()

    def close(self) -> None:
        with naming_the_file(self.path):
            self._file.close()


def read_event_scalars(directory: str) -> list[tuple[str, int, float]]:
    """(tag, step, value) of every scalar in the event files of `directory`, in file order.

    Each record's checksums are checked (ValueError naming the file if one does not match)."""
    out = []
    for name in sorted(os.listdir(directory)):
        if not name.startswith(EVENT_FILE_PREFIX):
            continue
        path = os.path.join(directory, name)
        with open(path, "rb") as f:
            data = f.read()
        offset = 0
        while offset + 12 <= len(data):
            header, (length,) = data[offset : offset + 8], struct.unpack_from("<Q", data, offset)
            body = data[offset + 12 : offset + 12 + length]
            crcs = struct.unpack_from("<I", data, offset + 8) + struct.unpack_from(
                "<I", data, offset + 12 + length
            )
            if crcs != (_masked_crc32c(header), _masked_crc32c(body)):
                raise ValueError(f"{path}: the record at byte {offset} fails its checksum")
            event = _Event.FromString(body)
            offset += 12 + length + 4
            values = _Summary.FromString(event.summary).value
            out += [(v.tag, event.step, v.simple_value) for v in values]
    return out


class MetricLog:
    """Appends records to `<workdir>/metrics.jsonl` and TensorBoard events under `tb/`."""

    def __init__(self, workdir: str, *, resume_step: int, enabled: bool = True):
        self.path = os.path.join(workdir, METRICS_FILE)
        self.enabled = enabled
        self._events: EventFile | None = None
        if not enabled:
            return
        self._set_aside_after(resume_step)
        self._events = self._rebuild_events(os.path.join(workdir, "tb"))

    def _rebuild_events(self, directory: str) -> EventFile:
        """A new event file holding every record of the log; older event files are removed
        (every scalar they held that the log keeps is in the new one)."""
        older = os.listdir(directory) if os.path.isdir(directory) else []
        events = EventFile(directory)
        with naming_the_file(events.path):
            for record in read_records(self.path):
                events.write(record)
        for name in older:
            if name.startswith(EVENT_FILE_PREFIX):
                os.remove(os.path.join(directory, name))
        return events

    def _set_aside_after(self, step: int) -> None:
        if not os.path.exists(self.path):
            return
        lines, tail, data = _scan(self.path)
        if tail is not None:
            # Kept byte for byte before the log is rewritten without it: nothing is lost.
            aside = _free_name(f"{self.path}.incomplete-line")
            with naming_the_file(aside), open(aside, "wb") as f:
                f.write(data[tail:])
            print(
                f"{self.path}: dropped an incomplete last line ({len(data) - tail} bytes, left "
                f"by an interrupted write) and kept it in {aside}"
            )
        elif data and not data.endswith(b"\n"):
            tail = len(data)  # a complete last line without its newline: the next would join it
        keep = [raw for raw, r in lines if r["step"] <= step and r["kind"] != FINAL_KIND]
        later = [raw for raw, r in lines if r["step"] > step or r["kind"] == FINAL_KIND]
        if later:
            suffix = f"after-{step}" if step >= 0 else "before-first-checkpoint"
            aside = _free_name(f"{self.path}.orphaned-{suffix}")
            with naming_the_file(aside), open(aside, "wb") as f:
                f.writelines(later)
        if later or tail is not None:
            _replace_contents(self.path, keep)
        if later:
            when = f"at step {step}" if step >= 0 else "at step 0 (no checkpoint yet)"
            print(
                f"resuming {when}: moved {len(later)} metric lines written after that point "
                f"to {aside}"
            )

    def write(self, step: int, kind: str, **values: Any) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "kind": kind, **{k: _clean(v) for k, v in values.items()}}
        with naming_the_file(self.path), open(self.path, "a") as f:
            f.write(json.dumps(record, default=_json_default) + "\n")
        if self._events is not None:
            with naming_the_file(self._events.path):
                self._events.write(record)

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
