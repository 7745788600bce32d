"""Where QA's labels and answers differ from Hugging Face's `run_qa.py`, as documented in
`earlyjax.data.squad` and `earlyjax.tasks.question_answering`:

* an answer that starts at a window's last context token: our label is that token, so the
  window decodes to the answer; run_qa's start loop runs past the context (the special and
  padding tokens' offsets (0, 0) are <= any start) and labels the window's last token;
* no valid span in any window: our answer is "", scored as SQuAD's scorer scores it (0 against
  any answer), where run_qa's post-processing answers the string "empty"."""

from __future__ import annotations

import numpy as np
from helpers import tiny_tokenizer

from earlyjax.data import squad

CONTEXT = " ".join(f"w{i}" for i in range(30))
QUESTION = "where is it ?"  # 4 tokens: a 16-token window holds 8 context tokens


def run_qa_start(offsets: np.ndarray, start_char: int) -> int:
    """run_qa's `prepare_train_features` start label of a window whose context holds the
    answer: offsets as the tokenizer gives them, (0, 0) for special and padding tokens."""
    index = int(np.flatnonzero(offsets[:, 0] >= 0)[0])  # the first context token
    raw = np.where(offsets >= 0, offsets, 0)
    while index < len(raw) and raw[index, 0] <= start_char:
        index += 1
    return index - 1


def test_an_answer_at_the_last_context_token_is_labelled_there_unlike_run_qa():
    feats = squad.features(
        tiny_tokenizer([CONTEXT, QUESTION]), [QUESTION], [CONTEXT], max_length=16, stride=4
    )
    row = 0  # the first window's context is w0 … w7
    context = np.flatnonzero(feats.offsets[row, :, 0] >= 0)
    last = int(context[-1])
    answer = CONTEXT[feats.offsets[row, last, 0] : feats.offsets[row, last, 1]]
    assert answer == "w7"
    answer_start = CONTEXT.index(answer)
    feats = squad.features(
        tiny_tokenizer([CONTEXT, QUESTION]), [QUESTION], [CONTEXT], [answer_start], [answer],
        max_length=16, stride=4,
    )  # fmt: skip
    assert feats.start[row] == feats.end[row] == last  # ours: the answer's own token
    start_logits = np.zeros(feats.input_ids.shape, np.float32)
    end_logits = np.zeros(feats.input_ids.shape, np.float32)
    start_logits[row, feats.start[row]] = end_logits[row, feats.end[row]] = 10.0
    assert squad.best_answers(feats, start_logits, end_logits, [CONTEXT]) == [answer]
    theirs = run_qa_start(feats.offsets[row], answer_start)
    assert theirs == feats.input_ids.shape[1] - 1  # run_qa: the window's last token
    assert feats.offsets[row, theirs, 0] < 0  # outside the context: it decodes to no answer


def test_no_valid_span_answers_empty_text_scored_as_squads_scorer_does():
    feats = squad.features(
        tiny_tokenizer([CONTEXT, QUESTION]), [QUESTION], [CONTEXT], max_length=16, stride=4
    )
    start_logits = np.zeros(feats.input_ids.shape, np.float32)
    end_logits = np.zeros(feats.input_ids.shape, np.float32)
    start_logits[:, 1] = 50.0  # every best start is a question token
    end_logits[:, 1] = 50.0
    answers = squad.best_answers(feats, start_logits, end_logits, [CONTEXT], n_best=1)
    assert answers == [""]  # not run_qa's "empty"
    assert squad.score(answers, [["w3"]]) == {"exact_match": 0.0, "f1": 0.0}
    # run_qa's "empty" would score its words against a reference that holds them.
    assert squad.score(["empty"], [["empty box"]])["f1"] > 0
    assert squad.score([""], [["empty box"]])["f1"] == 0.0


def test_both_differences_are_documented():
    assert "last context token" in squad.features.__doc__
    assert '"empty"' in squad.best_answers.__doc__
    from earlyjax.tasks import question_answering

    assert "last context" in question_answering.__doc__ and '"empty"' in question_answering.__doc__
