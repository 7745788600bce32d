"""Checks on a run's workdir shared by the crash, resume and failure tests."""

import collections
import os

import numpy as np

from earlyjax.metric_log import METRICS_FILE, read_event_scalars, read_records


def logged_scalars(workdir) -> dict[tuple[str, int], float]:
    """{(tag, step): value} of every numeric value in metrics.jsonl, as TensorBoard tags them."""
    out = {}
    for record in read_records(os.path.join(workdir, METRICS_FILE)):
        for name, value in record.items():
            if name in ("step", "kind") or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)):
                key = (f"{record['kind']}/{name}", record["step"])
                assert key not in out, f"{key} logged twice in {workdir}"
                out[key] = value
    return out


def assert_tensorboard_matches_log(workdir) -> None:
    """TensorBoard under tb/ holds every logged scalar of metrics.jsonl exactly once, with its
    value (as float32), and nothing else."""
    events = read_event_scalars(os.path.join(workdir, "tb"))
    counts = collections.Counter((tag, step) for tag, step, _ in events)
    repeated = [key for key, n in counts.items() if n > 1]
    assert not repeated, f"steps written more than once to TensorBoard: {repeated[:5]}"
    logged = logged_scalars(workdir)
    assert set(counts) == set(logged)
    for tag, step, value in events:
        assert value == np.float32(logged[(tag, step)]), (tag, step)
