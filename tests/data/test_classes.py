"""`data.classes` (earlyjax.data.select_classes): one data set split into several tasks, every
split (OOD included) filtered and relabelled, and bad values refused in one line."""

import numpy as np
import pytest

from earlyjax.config import ConfigError, default_config
from earlyjax.data import load_dataset, select_classes
from earlyjax.data.base import Split
from earlyjax.train import task_num_train
from earlyjax.validation import validate


def test_select_classes_keeps_their_examples_in_order_relabelled_by_position():
    images = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1)
    split = Split(images, np.array([3, 0, 7, 3, 9, 7], np.int32))
    kept = select_classes(split, (7, 3))
    np.testing.assert_array_equal(kept.images.ravel(), [0, 2, 3, 5])
    np.testing.assert_array_equal(kept.labels, [1, 0, 1, 0])


def test_every_split_of_a_loaded_dataset_holds_only_the_selected_classes(tmp_path):
    c = default_config()
    c.data.classes = (5, 6, 7, 8, 9)
    c.data.ood_corruptions = "fog"
    c.data.ood_severities = (3,)
    c.data.ood_max_examples = 100
    c.data.cache_dir = str(tmp_path)
    validate(c)
    whole = default_config().data
    whole.ood_source = "none"
    full, part = load_dataset(whole), load_dataset(c.data)
    assert part.num_classes == 5
    for split, source in ((part.train, full.train), (part.test, full.test)):
        assert set(np.unique(split.labels)) == {0, 1, 2, 3, 4}
        assert len(split.labels) == int(np.sum(source.labels >= 5))
        np.testing.assert_array_equal(split.images, source.images[source.labels >= 5])
    fog = part.ood[("fog", 3)]
    first = full.test.labels[:100]
    np.testing.assert_array_equal(fog.labels, first[first >= 5] - 5)
    assert task_num_train(c) == len(part.train.labels)


@pytest.mark.parametrize("classes", [(3, 3), (10,), (4,), (-1, 2), ("a", "b")])
def test_bad_classes_are_refused_in_one_line(classes):
    c = default_config()
    c.data.classes = classes
    with pytest.raises(ConfigError, match="data.classes must be") as e:
        validate(c)
    assert "\n" not in str(e.value)
