"""Branches (earlyjax/branch.py through train_and_evaluate): rewinding to a named step, masks
that keep pruned weights at 0 through training and resume, transforms at the branch point,
named checkpoints, and the one-line refusals."""

import json
import os
import re

import helpers
import jax
import numpy as np
import pytest

from earlyjax.config import ConfigError
from earlyjax.periodic import StopAt
from earlyjax.pruning import path_str
from earlyjax.train import load_run_state, train_and_evaluate

STEPS = 12


def lenet_config(base, **branch):
    """`base` (a tiny config) as a 12-step LeNet-300-100 run with plain SGD, keeping its
    checkpoints at steps 0 and 4; `branch` sets fields of its branch block."""
    c = base
    c.model.name = "lenet300_100"
    c.model.width = 16  # 75-25 hidden units
    c.unfreeze.k = None
    c.unfreeze.allow_late_release = False
    c.optimizer.momentum = 0.0
    c.optimizer.weight_decay = 0.0
    c.total_steps = STEPS
    c.checkpoint_steps = (0, 4)
    c.keep_checkpoints = 1
    for name, value in branch.items():
        c.branch[name] = value
    return c


@pytest.fixture(scope="module")
def trunk(tiny_dataset, tmp_path_factory):
    """A finished 12-step LeNet run that keeps its checkpoints at steps 0 and 4."""
    workdir = str(tmp_path_factory.mktemp("trunk"))
    results = train_and_evaluate(lenet_config(helpers.tiny_config()), workdir, dataset=tiny_dataset)
    return workdir, results


def leaves(tree):
    return {path_str(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_named_checkpoints_are_kept_beside_the_newest(trunk):
    workdir, _ = trunk
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["0", "12", "4"]


def test_a_branch_at_k_starts_from_the_trunk_state_at_k_and_continues_it(
    trunk, tiny_dataset, tmp_path
):
    """Identity at k with plain SGD (no optimizer state to lose): the branch is the trunk's
    state at k, then takes the same steps (data order, learning rate), ending where it ended."""
    from earlyjax.branch import check_sources
    from earlyjax.train import branch_initial_state, setup

    source, _ = trunk
    config = lenet_config(helpers.tiny_config(), source=source, step="4")
    run_setup, fresh = setup(config, tiny_dataset)
    point = check_sources(config, run_setup.plan.num_steps)
    first = branch_initial_state(config, run_setup, fresh, point)
    _, at_4 = load_run_state(source, 4)
    assert int(first.step) == 4 and first.mask is None
    for tree in ("params", "model_state"):
        for name, value in leaves(getattr(at_4, tree)).items():
            np.testing.assert_array_equal(leaves(getattr(first, tree))[name], value, err_msg=name)

    workdir = str(tmp_path / "branch")
    results = train_and_evaluate(config, workdir, dataset=tiny_dataset)
    assert results["branch"]["step"] == 4 and results["branch"]["density"] == 1.0
    _, trunk_end = load_run_state(source, "end")
    _, branch_end = load_run_state(workdir, "end")
    for name, value in leaves(trunk_end.params).items():
        np.testing.assert_allclose(leaves(branch_end.params)[name], value, rtol=1e-6, atol=1e-7)


def imp_level_1(source, **extra):
    return lenet_config(helpers.tiny_config(), source=source, step="0", prune_from=source, **extra)


def test_pruned_weights_and_their_gradients_stay_zero_through_training_and_resume(
    trunk, tiny_dataset, tmp_path
):
    source, _ = trunk
    config = imp_level_1(source)
    whole = str(tmp_path / "whole")
    results = train_and_evaluate(config, whole, dataset=tiny_dataset)
    # LeNet: every kernel but the head's is pruned, 20% of the prunable weights globally.
    assert results["branch"]["density"] == pytest.approx(0.8, abs=1e-3)
    assert set(results["branch"]["layer_density"]) == {"fc1/dense/kernel", "fc2/dense/kernel"}
    final = helpers.metric_records(whole, "final")
    assert [r["density"] for r in final] == [results["branch"]["density"]]  # logged, once

    interrupted = str(tmp_path / "interrupted")
    assert (
        train_and_evaluate(config, interrupted, dataset=tiny_dataset, extra_actions=[StopAt(7)])
        is None
    )
    resumed = train_and_evaluate(config, interrupted, dataset=tiny_dataset)
    assert resumed["id_accuracy"] == results["id_accuracy"]

    _, start = load_run_state(source, 0)
    for workdir in (whole, interrupted):
        _, end = load_run_state(workdir, "end")
        mask, params, init = leaves(end.mask), leaves(end.params), leaves(start.params)
        assert not mask["fc1/dense/kernel"].all() and mask["head/fc/kernel"].all()
        for name, m in mask.items():
            assert np.all(params[name][~m] == 0.0), name
            # Unpruned weights trained; pruned ones never moved off 0.
            assert not np.array_equal(params[name][m], init[name][m]), name
    np.testing.assert_array_equal(
        leaves(load_run_state(whole, "end")[1].params)["fc1/dense/kernel"],
        leaves(load_run_state(interrupted, "end")[1].params)["fc1/dense/kernel"],
    )


@pytest.mark.slow
def test_the_same_branch_twice_is_bit_identical(trunk, tiny_dataset, tmp_path):
    source, _ = trunk
    config = imp_level_1(source, transform="gaussian_noise", transform_scale=0.5)
    ends = []
    for name in ("a", "b"):
        train_and_evaluate(config, str(tmp_path / name), dataset=tiny_dataset)
        ends.append(leaves(load_run_state(str(tmp_path / name), "end")[1].params))
    for name, value in ends[0].items():
        np.testing.assert_array_equal(ends[1][name], value, err_msg=name)


def test_a_transform_acts_at_the_branch_point(trunk, tiny_dataset):
    from earlyjax.branch import check_sources
    from earlyjax.train import branch_initial_state, setup

    source, _ = trunk
    config = imp_level_1(source, transform="sign_preserving_reinit")
    run_setup, fresh = setup(config, tiny_dataset)
    first = branch_initial_state(config, run_setup, fresh, check_sources(config, STEPS))
    _, at_0 = load_run_state(source, 0)
    new, old, mask = leaves(first.params), leaves(at_0.params), leaves(first.mask)
    kept = mask["fc1/dense/kernel"]
    w_new, w_old = new["fc1/dense/kernel"][kept], old["fc1/dense/kernel"][kept]
    assert np.all(np.sign(w_new) == np.where(w_old >= 0, 1, -1))
    assert not np.allclose(np.abs(w_new), np.abs(w_old))
    np.testing.assert_array_equal(new["fc1/dense/bias"], old["fc1/dense/bias"])  # never transformed


def test_reinit_takes_the_branchs_own_init(trunk, tiny_dataset):
    from earlyjax.branch import check_sources
    from earlyjax.train import branch_initial_state, setup

    source, _ = trunk
    config = lenet_config(helpers.tiny_config(), source=source, step="end", reinit="head")
    config.total_steps = 20
    run_setup, fresh = setup(config, tiny_dataset)
    first = branch_initial_state(config, run_setup, fresh, check_sources(config, 20))
    _, end = load_run_state(source, "end")
    np.testing.assert_array_equal(
        leaves(first.params)["head/fc/kernel"], leaves(fresh.params)["head/fc/kernel"]
    )
    np.testing.assert_array_equal(
        leaves(first.params)["fc1/dense/kernel"], leaves(end.params)["fc1/dense/kernel"]
    )
    assert int(first.step) == STEPS


def test_fine_tuning_starts_at_step_0_on_other_data_with_a_fresh_head(
    trunk, tiny_dataset, tmp_path
):
    """Sadrtdinov et al.'s fine-tuning: the source's end weights and BatchNorm statistics, a
    head for the new classes, the branch's own step 0, schedule and data order."""
    from earlyjax.branch import check_sources
    from earlyjax.data.base import Dataset, Split
    from earlyjax.train import branch_initial_state, setup

    train, test = tiny_dataset.train, tiny_dataset.test
    five = Dataset(
        "digits", 5, Split(train.images, train.labels % 5), Split(test.images, test.labels % 5), {}
    )
    source, _ = trunk
    config = lenet_config(helpers.tiny_config(), source=source, continue_step=False)
    with pytest.raises(ConfigError, match="branch.reinit=head") as e:  # a 10-way head
        train_and_evaluate(config, str(tmp_path / "refused"), dataset=five)
    assert "\n" not in str(e.value)

    config.branch.reinit = "head"
    run_setup, fresh = setup(config, five)
    first = branch_initial_state(config, run_setup, fresh, check_sources(config, STEPS))
    _, end = load_run_state(source, "end")
    assert int(first.step) == 0 and leaves(first.params)["head/fc/kernel"].shape[-1] == 5
    np.testing.assert_array_equal(
        leaves(first.params)["fc1/dense/kernel"], leaves(end.params)["fc1/dense/kernel"]
    )
    results = train_and_evaluate(config, str(tmp_path / "tuned"), dataset=five)
    assert results["branch"]["continue_step"] is False and results["steps"] == STEPS


@pytest.mark.parametrize(
    "branch,message",
    [
        ({"source": "/nonexistent/run"}, "holds no run"),
        ({"step": "7"}, "has no checkpoint at step 7 (it keeps [0, 4, 12])"),
        ({"step": "end"}, "at or after the end of this 12-step run"),
        ({"step": "0", "prune_from": "/nonexistent/run"}, "holds no run"),
    ],
)
def test_a_missing_source_is_one_line_before_anything_is_written(
    trunk, tiny_dataset, tmp_path, branch, message
):
    source, _ = trunk
    config = lenet_config(helpers.tiny_config(), **{"source": source, **branch})
    workdir = tmp_path / "never"
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        train_and_evaluate(config, str(workdir), dataset=tiny_dataset)
    assert "\n" not in str(e.value)
    assert not workdir.exists()


def test_branch_fields_without_a_source_are_refused(tiny_config):
    from earlyjax.validation import validate

    tiny_config.branch.transform = "shuffle"
    with pytest.raises(ConfigError, match="branch.transform act at a branch point"):
        validate(tiny_config)


def test_a_run_from_init_has_no_branch_in_its_results(trunk):
    workdir, results = trunk
    with open(os.path.join(workdir, "results.json")) as f:
        assert results["branch"] is None and json.load(f)["branch"] is None


def test_a_source_saved_before_a_field_existed_reads_with_its_default(trunk, tmp_path):
    """config.json of an older run lacks fields added since: they take today's defaults."""
    import shutil

    from earlyjax.branch import read_run_config

    old = str(tmp_path / "old")
    shutil.copytree(trunk[0], old)
    path = os.path.join(old, "config.json")
    with open(path) as f:
        saved = json.load(f)
    del saved["optimizer"]["warmup_epochs"], saved["branch"]["continue_step"]
    with open(path, "w") as f:
        json.dump(saved, f)
    config = read_run_config(old, "source")
    assert config.optimizer.warmup_epochs == 0.0 and config.branch.continue_step is True
    assert config.checkpoint_steps == (0, 4)


def test_an_image_models_checkpoint_is_its_init_not_its_task():
    """A global deep ensemble fine-tunes one ResNet-50 file per member: one task evaluates them
    all. XLM-R's checkpoint is its architecture and tokenizer: another task."""
    from earlyjax import branch
    from earlyjax.config import default_config

    a, b = default_config(), default_config()
    a.model.checkpoint, b.model.checkpoint = "byol-1.safetensors", "byol-2.safetensors"
    assert branch.builds_same_task(a, b)
    a.task = b.task = "nli"
    assert not branch.builds_same_task(a, b)
