"""Real MNIST from ../shared/datasets/mnist (IDX files): a short run learns and the generated
OOD set is named as generated. Slow (loading 60,000 images, a few hundred steps): `-m slow`."""

import pytest

from earlyjax.train import train_and_evaluate
from experiments.configs.mnist_cpu import get_config


@pytest.mark.slow
def test_a_short_gradual_unfreezing_run_on_real_mnist_learns(shared_mnist_dir, tmp_path):
    c = get_config()
    c.data.data_dir = shared_mnist_dir
    c.data.ood_max_examples = 200
    c.total_steps = 200
    c.unfreeze.k = 20  # every block released by step 99
    c.record.every = 0
    c.progress_bar = False
    results = train_and_evaluate(c, str(tmp_path))
    assert results["steps"] == 200
    assert max(results["release_steps"]) == 99
    assert results["id_accuracy"] > 80.0  # chance is 10%
    assert 10.0 < results["ood_accuracy"] < results["id_accuracy"]
    assert results["ood_set"].startswith("MNIST-C-style (generated")
    assert len(results["ood_cells"]) == 15
