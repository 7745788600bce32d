"""Metric records written as they are produced: append-only JSONL plus TensorBoard events.

Each record is one JSON object per line with at least `step` and `kind`. On resume from a
checkpoint at step m, lines with step > m (written after that checkpoint by the interrupted
run; every line when there is no checkpoint yet, `resume_step=-1`) are moved, not deleted, to
`metrics.jsonl.orphaned-after-<m>` so the log has no duplicates, and TensorBoard is told to
purge its events past m.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from tensorboardX import SummaryWriter

METRICS_FILE = "metrics.jsonl"


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to the metric log")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    return value


def read_records(path: str) -> list[dict]:
    """All records of a JSONL metric file (an empty list if it does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class MetricLog:
    """Appends records to `<workdir>/metrics.jsonl` and TensorBoard events under `tb/`."""

    def __init__(self, workdir: str, *, resume_step: int, enabled: bool = True):
        self.path = os.path.join(workdir, METRICS_FILE)
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        self._set_aside_after(resume_step)
        self._tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=resume_step + 1)

    def _set_aside_after(self, step: int) -> None:
        if not os.path.exists(self.path):
            return
        with open(self.path) as f:
            lines = [line for line in f if line.strip()]
        keep = [line for line in lines if json.loads(line)["step"] <= step]
        later = [line for line in lines if json.loads(line)["step"] > step]
        if not later:
            return
        suffix = f"after-{step}" if step >= 0 else "before-first-checkpoint"
        aside, n = f"{self.path}.orphaned-{suffix}", 1
        while os.path.exists(aside):
            aside, n = f"{self.path}.orphaned-{suffix}.{n}", n + 1
        with open(aside, "w") as f:
            f.writelines(later)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(keep)
        os.replace(tmp, self.path)
        print(f"resuming at step {max(step, 0)}: moved {len(later)} later metric lines to {aside}")

    def write(self, step: int, kind: str, **values: Any) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "kind": kind, **{k: _clean(v) for k, v in values.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=_json_default) + "\n")
        if self._tb is not None:
            for name, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(f"{kind}/{name}", value, int(step))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
