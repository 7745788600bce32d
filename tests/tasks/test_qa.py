"""The QA task (XLM-R + LoRA with a span head, earlyjax.tasks.question_answering) in the one
trainer: SQuAD windows, gradual unfreezing over the LoRA layers, recording, F1 and exact
match per language; and the paper's SQuAD -> XQuAD / MLQA wiring on tfds' mock data."""

from __future__ import annotations

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import FIXTURES, small_qa_config, tiny_tokenizer

from earlyjax.config import ConfigError
from earlyjax.data import text_tfds
from earlyjax.metric_log import read_records
from earlyjax.tasks import QuestionAnswering
from earlyjax.train import format_results, train_and_evaluate
from earlyjax.validation import validate
from experiments.configs.squad_xlmr import get_config as squad_config

SPAN_FIXTURE = os.path.join(FIXTURES, "tiny_xlmr", "span")


def test_qa_runs_end_to_end_with_recording_and_scores_per_language(tmp_path):
    c = small_qa_config()
    c.record.metrics = ("fisher", "avg_sharpness")  # the span grid and the span loss
    results = train_and_evaluate(c, str(tmp_path / "run"))
    assert results["score"] == "f1" and results["release_steps"] == [3, 0]
    assert sorted(results["scores"]) == ["en", "xa", "xb", "xc"]
    assert sorted(results["ood_table"]) == ["xa", "xb", "xc"]
    for name, s in results["scores"].items():
        assert 0 <= s["exact_match"] <= s["f1"] <= 100 and np.isfinite(s["loss"]), name
    assert results["id_accuracy"] == results["scores"]["en"]["f1"]
    assert results["ood_accuracy"] == pytest.approx(np.mean(list(results["ood_table"].values())))
    assert format_results(results).startswith("ID F1:")
    log = read_records(str(tmp_path / "run" / "metrics.jsonl"))
    records = [r for r in log if r["kind"] == "record"]
    assert [r["step"] for r in records] == [0, 6]
    for r in records:
        assert r["fisher"] > 0 and np.isfinite(r["avg_sharpness"]), r


def test_every_context_spans_two_windows_and_each_answer_is_labelled_once():
    task = QuestionAnswering.build(small_qa_config())
    windows = task.evals["en"].features
    assert np.all(np.bincount(windows.example) == 2)  # a 20-word context in 15-token windows
    labelled = np.bincount(windows.example, weights=windows.start > 0)
    assert np.all(labelled >= 1)  # the answer lies wholly inside at least one window
    # An answer read back from its labelled span is the reference answer.
    examples = task.evals["en"].examples
    for row in np.flatnonzero(windows.start > 0)[:20]:
        s, e = windows.start[row], windows.end[row]
        i = windows.example[row]
        span = examples.context[i][windows.offsets[row, s, 0] : windows.offsets[row, e, 1]]
        assert span == examples.answer_texts[i][0]


def test_the_fisher_distribution_is_the_product_of_start_and_end():
    # tr(F) samples (start, end) from logits start_s + end_e: the grid's log-probabilities are
    # log p(start) + log p(end), the span model's own distribution.
    task = QuestionAnswering.build(small_qa_config())
    params, backbone = task.init(jax.random.key(0))
    x = jnp.stack([jnp.asarray(task.train[k][:4]) for k in ("input_ids", "attention_mask")], 1)
    grid = task.metric_logits(params, {"backbone": backbone}, x)
    start, end = task.metric_output(params, {"backbone": backbone}, x)
    t = start.shape[1]
    expected = jax.nn.log_softmax(start)[:, :, None] + jax.nn.log_softmax(end)[:, None, :]
    np.testing.assert_allclose(
        jax.nn.log_softmax(grid).reshape(4, t, t), expected, rtol=1e-5, atol=1e-5
    )


def test_the_paper_setting_reads_squad_xquad_and_mlqa(mock_tfds, tmp_path):
    checkpoint = tmp_path / "xlmr"
    checkpoint.mkdir()
    shutil.copy(os.path.join(SPAN_FIXTURE, "config.json"), checkpoint)
    tiny_tokenizer([]).save(str(checkpoint / "tokenizer.json"))  # mock text: all <unk>
    c = squad_config()
    c.model.checkpoint = str(checkpoint)
    c.data.max_length, c.data.doc_stride = 32, 8  # the fixture has 40 positions
    with mock_tfds(num_examples=3):
        task = QuestionAnswering.build(c)
    xquad = [f"xquad/{lang}" for lang in text_tfds.XQUAD_LANGUAGES]
    mlqa = [f"mlqa/{lang}" for lang in text_tfds.MLQA_LANGUAGES]
    assert sorted(task.evals) == sorted(xquad + mlqa) and task.id_split == "xquad/en"
    assert sorted(task.ood_splits) == sorted(n for n in xquad + mlqa if not n.endswith("/en"))
    assert task.evals["xquad/de"].normalization is None  # SQuAD v1.1's
    assert task.evals["mlqa/de"].normalization == "de"  # MLQA's, per language
    assert task.train["input_ids"].shape[1] == 32 and task.blocks == ("layers_0",)
    assert task.without_ood().evals.keys() == {"xquad/en"}


def test_qa_configs_refuse_what_cannot_run(tmp_path):
    with pytest.raises(ConfigError, match="needs a pre-trained XLM-R: download"):
        train_and_evaluate(squad_config(), str(tmp_path / "a"))
    c = small_qa_config()
    c.record.metrics = ("fisher", "feature_rank")
    with pytest.raises(ConfigError, match="feature_rank: feature metrics are the classification"):
        validate(c)
    c = small_qa_config()
    c.data.doc_stride = c.data.max_length
    with pytest.raises(ConfigError, match="data.doc_stride=20 must be in"):
        validate(c)
    assert not os.listdir(tmp_path)
