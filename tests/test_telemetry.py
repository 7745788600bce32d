"""earlyjax.telemetry: the weight statistics by hand, and a run's telemetry from its kept
checkpoints (from init to the end)."""

import helpers
import numpy as np
import pytest

from earlyjax.telemetry import run_telemetry, weight_statistics
from earlyjax.train import train_and_evaluate


def test_weight_statistics_by_hand():
    init = {"a": {"kernel": np.array([[1.0, -1.0], [2.0, 0.0]])}, "bias": np.array([5.0])}
    now = {"a": {"kernel": np.array([[1.0, 1.0], [-2.0, 0.0]])}, "bias": np.array([-9.0])}
    final = {"a": {"kernel": np.array([[2.0, 1.0], [-2.0, 1.0]])}, "bias": np.array([0.0])}
    prunable = {"a": {"kernel": True}, "bias": False}  # the bias is left out
    stats = weight_statistics(now, init, final, prunable)
    w, w0, wT = np.array([1.0, 1, -2, 0]), np.array([1.0, -1, 2, 0]), np.array([2.0, 1, -2, 1])
    assert stats["mean_magnitude"] == pytest.approx(1.0)
    assert stats["sign_changes"] == pytest.approx(0.5)  # -1 -> 1 and 2 -> -2; 0 stays "+"
    assert stats["distance_init"] == pytest.approx(np.linalg.norm(w - w0))
    assert stats["distance_final"] == pytest.approx(np.linalg.norm(w - wT))
    cos = w @ w0 / np.linalg.norm(w) / np.linalg.norm(w0)
    assert stats["cosine_init"] == pytest.approx(cos)
    assert stats["cosine_final"] == pytest.approx(w @ wT / np.linalg.norm(w) / np.linalg.norm(wT))


def test_a_runs_telemetry_goes_from_init_to_its_end(tiny_dataset, tmp_path):
    config = helpers.tiny_config()
    config.model.name = "lenet300_100"
    config.unfreeze.k = None
    config.checkpoint_steps = (0, 4)
    config.keep_checkpoints = 1
    config.record.set_size = 64
    config.record.batch_size = 32
    workdir = str(tmp_path / "run")
    train_and_evaluate(config, workdir, dataset=tiny_dataset)
    rows = run_telemetry(workdir)
    assert [r["step"] for r in rows] == [0, 4, 8]
    first, last = rows[0], rows[-1]
    assert first["distance_init"] == 0.0 and first["sign_changes"] == 0.0
    assert first["cosine_init"] == pytest.approx(1.0)
    assert last["distance_final"] == 0.0 and last["distance_init"] > 0
    assert all(r["gradient_norm"] > 0 for r in rows)


def test_telemetry_needs_the_checkpoint_at_init(tiny_dataset, tmp_path):
    config = helpers.tiny_config()
    config.unfreeze.k = None
    config.model.name = "lenet300_100"
    workdir = str(tmp_path / "run")
    train_and_evaluate(config, workdir, dataset=tiny_dataset)
    with pytest.raises(ValueError, match="kept no checkpoint at step 0"):
        run_telemetry(workdir)
