"""The transformer half's tfds readers (earlyjax.data.text_tfds) on `tfds.testing.mock_data`:
the real builders, configs and data source, random records of the real feature layout."""

from __future__ import annotations

import numpy as np
import pytest

from earlyjax.data import text_tfds
from earlyjax.data.tfds_source import TfdsNotPreparedError

pytestmark = pytest.mark.usefixtures("small_chunks")


class Records(list):
    """A data source of given records (tfds' mock then serves them)."""

    def __getitems__(self, keys):
        return [self[k] for k in keys]


def xnli_records(n=4):
    """XNLI's layout: a premise per language, the hypotheses with their language codes (in a
    shuffled order, as a check that they are matched by code), a label."""
    langs = text_tfds.XNLI_LANGUAGES
    order = list(reversed(langs))
    return Records(
        {
            "premise": {lang: f"premise {i} in {lang}" for lang in langs},
            "hypothesis": {
                "language": np.array(order),
                "translation": np.array([f"hypothesis {i} in {lang}" for lang in order]),
            },
            "label": np.int64(i % 3),
        }
        for i in range(n)
    )


def test_mnli_pairs_and_labels(mock_tfds):
    with mock_tfds(num_examples=5):
        mnli = text_tfds.load_nli("train")
    assert len(mnli.premise) == len(mnli.hypothesis) == len(mnli.label) == 5
    assert all(isinstance(t, str) and t for t in mnli.premise + mnli.hypothesis)
    assert set(np.unique(mnli.label)) <= {0, 1, 2} and mnli.label.dtype == np.int32


def test_xnli_pairs_each_language_with_its_own_translation(mock_tfds):
    with mock_tfds(as_data_source_fn=lambda *args, **kwargs: xnli_records()):
        xnli = text_tfds.load_xnli("test")
    assert tuple(xnli) == text_tfds.XNLI_LANGUAGES
    for lang, examples in xnli.items():
        assert examples.premise == [f"premise {i} in {lang}" for i in range(4)]
        assert examples.hypothesis == [f"hypothesis {i} in {lang}" for i in range(4)]
        np.testing.assert_array_equal(examples.label, [0, 1, 2, 0])
    with (
        mock_tfds(as_data_source_fn=lambda *args, **kwargs: xnli_records()),
        pytest.raises(ValueError, match="has no 'xx' hypothesis"),
    ):
        text_tfds.load_xnli("test", languages=("xx",))


@pytest.mark.parametrize(
    "name,split", [("squad/v1.1", "train"), ("xquad/de", "test"), ("mlqa/zh", "test")]
)
def test_squad_format_readers(mock_tfds, name, split):
    with mock_tfds(num_examples=3):
        qa = text_tfds.load_squad_format(name, split)
    assert len(qa.question) == len(qa.context) == len(qa.answer_starts) == 3
    # (The mock draws the lengths of answer_start and text independently; real data pairs them.)
    for starts, texts in zip(qa.answer_starts, qa.answer_texts, strict=True):
        assert starts and texts
        assert all(isinstance(s, int) for s in starts) and all(isinstance(t, str) for t in texts)


def test_unprepared_data_set_names_the_command(tmp_path):
    with pytest.raises(TfdsNotPreparedError, match="tfds build xnli"):
        text_tfds.load_xnli("test", data_dir=str(tmp_path))
