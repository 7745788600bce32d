"""The NLI task (XLM-R + LoRA, earlyjax.tasks.text_classification) in the one trainer: gradual
unfreezing over the LoRA layers, a frozen backbone, recording and per-language evaluation, on
the generated data of the transformer quickstart."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import FIXTURES, small_nli_config

from earlyjax.config import ConfigError
from earlyjax.metric_log import read_records
from earlyjax.periodic import StopAt
from earlyjax.train import make_train_step, setup, train_and_evaluate

FIXTURE = os.path.join(FIXTURES, "tiny_xlmr", "classification")


def test_lora_layers_release_top_down_and_the_backbone_never_moves():
    # App. A: the head and the last layer's adapters train from step 0, the others wait.
    run_setup, state = setup(small_nli_config())
    task = run_setup.task
    assert task.blocks == ("layers_0",) and task.head == ("layers_1", "head")
    backbone = jax.tree.map(np.array, state.model_state)
    step = make_train_step(run_setup, state)
    batch = {k: jnp.asarray(v[:64]) for k, v in task.train.items()}

    def moved(params):
        return {
            layer: bool(np.any(np.asarray(params[layer]["value"]["lora_B"]) != 0))
            for layer in ("layers_0", "layers_1")
        }

    for _ in range(3):  # steps 0, 1, 2
        state, _ = step(state, batch)
    assert moved(state.params) == {"layers_0": False, "layers_1": True}
    for _ in range(2):  # steps 3, 4: layers_0 released at step 3
        state, _ = step(state, batch)
    assert moved(state.params) == {"layers_0": True, "layers_1": True}
    for a, b in zip(jax.tree.leaves(backbone), jax.tree.leaves(state.model_state), strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))


@pytest.mark.slow  # ~14 s; the LoRA release test trains NLI through the trainer by default
def test_quickstart_runs_end_to_end_with_recording_and_languages(tmp_path, apgd_step_calls):
    steps = apgd_step_calls
    c = small_nli_config()
    c.record.until = 0  # one recording: each trainable set compiles its own Auto-PGD step
    results = train_and_evaluate(c, str(tmp_path / "run"))
    assert sorted(results["ood_table"]) == ["xa", "xb", "xc"]
    assert results["ood_accuracy"] == pytest.approx(np.mean(list(results["ood_table"].values())))
    assert results["release_steps"] == [3, 0]
    log = read_records(str(tmp_path / "run" / "metrics.jsonl"))
    records = [r for r in log if r["kind"] == "record"]
    trains = [r for r in log if r["kind"] == "train"]
    assert trains[0]["trainable"] == ["layers_1+head"]  # the update at step 1
    assert trains[1]["trainable"] == ["layers_0", "layers_1+head"]  # at step 3: released
    assert [r["step"] for r in records] == [0]
    for r in records:
        for name in ("fisher", "worst_sharpness"):
            assert np.isfinite(r[name]), (r["step"], name)
        assert r["fisher"] > 0 and r["worst_sharpness"] >= 0
    # On a CPU the trainer's recorder runs Auto-PGD from Python (one step call per iteration).
    if jax.default_backend() == "cpu":
        assert len(steps) == 2 * 2  # metric batches x iterations


@pytest.mark.slow  # ~12 s: three runs; tests/test_train.py resumes image runs bit-identically
def test_an_interrupted_run_resumes_to_the_run_it_would_have_been(tmp_path, capsys):
    # Dropout keys, data order and the release gates all derive from the step, so the resumed
    # run logs the same losses and ends at the same accuracies as an uninterrupted one.
    c = small_nli_config()
    c.total_steps, c.record.every = 8, 0
    train_and_evaluate(c, str(tmp_path / "killed"), extra_actions=[StopAt(4)])
    assert not (tmp_path / "killed" / "results.json").exists()
    resumed = train_and_evaluate(c, str(tmp_path / "killed"))
    assert "resumed from the checkpoint at step 4" in capsys.readouterr().out
    whole = train_and_evaluate(c, str(tmp_path / "whole"))

    def train_lines(run):
        log = read_records(str(tmp_path / run / "metrics.jsonl"))
        return [(r["step"], r["loss"], r["trainable"]) for r in log if r["kind"] == "train"]

    assert train_lines("killed") == train_lines("whole")
    assert [r for r, _, _ in train_lines("whole")] == [2, 4, 6, 8]
    for key in ("id_accuracy", "id_loss", "ood_table", "release_steps"):
        assert resumed[key] == whole[key], key


def test_nli_configs_refuse_what_cannot_run(tmp_path):
    c = small_nli_config()
    c.model.name = "resnet18"
    with pytest.raises(ConfigError, match="task nli needs --config.model.name=xlmr"):
        train_and_evaluate(c, str(tmp_path / "a"))
    from experiments.configs.mnli_xlmr import get_config as mnli

    with pytest.raises(ConfigError, match="needs a pre-trained XLM-R: download"):
        train_and_evaluate(mnli(), str(tmp_path / "b"))
    c = small_nli_config()
    c.model.checkpoint = FIXTURE  # a 64-token vocabulary: not the generated data's tokenizer
    with pytest.raises(ValueError, match="outside the model's vocabulary of 64"):
        setup(c)
    assert not os.listdir(tmp_path)
