"""earlyjax.ensembles: the ensemble of saved runs on the ID test set and each OOD split equals
the hand computation from the members' own logits; one member is the run itself. Paths: the
barrier of a model with itself is 0 and of two independently trained models positive; BatchNorm
statistics are recomputed at every point; a soup of one model is the model."""

import json
import os
import shutil

import helpers
import jax
import numpy as np
import pytest

from earlyjax.config import ConfigError
from earlyjax.ensembles import (
    ID_SET,
    evaluate_ensemble,
    interpolation_path,
    loss_and_error,
    member_logits,
    soup_outputs,
)
from earlyjax.train import load_run_state, train_and_evaluate


def lenet_run(tmp_path, seed: int, name: str) -> str:
    config = helpers.tiny_config()
    config.model.name = "lenet300_100"
    config.unfreeze.k = None
    config.seed = seed
    config.data.ood_source = "generated"
    config.data.ood_corruptions = "fog"
    config.data.ood_severities = (3,)
    config.data.ood_max_examples = 40
    workdir = str(tmp_path / name)
    train_and_evaluate(config, workdir)
    return workdir


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ensemble")
    return [lenet_run(tmp, seed, f"seed={seed}") for seed in (0, 1)]


def test_one_member_is_the_run_itself(two_runs):
    curves = evaluate_ensemble([(two_runs[0], "end")])
    with open(os.path.join(two_runs[0], "results.json")) as f:
        results = json.load(f)
    assert curves[ID_SET]["accuracy"][0] == pytest.approx(results["id_accuracy"], abs=1e-4)
    assert curves["ood_mean"]["accuracy"][0] == pytest.approx(results["ood_accuracy"], abs=1e-4)
    assert curves[ID_SET]["disagreement"] == [0.0]


def test_two_members_average_their_softmax_on_every_set(two_runs):
    curves = evaluate_ensemble([(w, "end") for w in two_runs])
    run_setup, _ = load_run_state(two_runs[0], with_ood=True)
    outputs = []
    for workdir in two_runs:
        _, state = load_run_state(workdir, "end", run_setup.task)
        outputs.append(member_logits(run_setup.task, state.params, state.model_state))
    assert set(curves) == {ID_SET, "fog/3", "ood_mean"}
    for name in (ID_SET, "fog/3"):
        labels = outputs[0][name][1]
        probs = np.mean([jax.nn.softmax(o[name][0]) for o in outputs], axis=0)
        accuracy = 100 * np.mean(probs.argmax(-1) == labels)
        nll = -np.mean(np.log(probs[np.arange(len(labels)), labels]))
        disagree = np.mean(outputs[0][name][0].argmax(-1) != outputs[1][name][0].argmax(-1))
        assert curves[name]["accuracy"][1] == pytest.approx(accuracy, abs=1e-4)
        assert curves[name]["nll"][1] == pytest.approx(nll, rel=1e-4)
        assert curves[name]["disagreement"][1] == pytest.approx(disagree, abs=1e-6)


def test_members_of_different_tasks_are_refused(two_runs, tmp_path):
    other = str(tmp_path / "wider")
    shutil.copytree(two_runs[1], other)
    with open(os.path.join(other, "config.json")) as f:
        config = json.load(f)
    config["model"]["width"] = 8
    with open(os.path.join(other, "config.json"), "w") as f:
        json.dump(config, f)
    with pytest.raises(ConfigError, match="builds another task"):
        evaluate_ensemble([(two_runs[0], "end"), (other, "end")])


def test_the_barrier_of_a_model_with_itself_is_zero_and_of_two_trained_models_positive(two_runs):
    same = interpolation_path((two_runs[0], "end"), (two_runs[0], "end"), num_points=5)
    assert same["alpha"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert same[ID_SET]["loss_barrier"] == 0.0 and same[ID_SET]["error_barrier"] == 0.0
    assert len(set(same[ID_SET]["loss"])) == 1  # every point is the model itself
    apart = interpolation_path((two_runs[0], "end"), (two_runs[1], "end"), num_points=5)
    assert apart[ID_SET]["loss_barrier"] > 0.05  # two seeds from init: two basins
    run_setup, state = load_run_state(two_runs[1], "end")
    logits, labels = member_logits(run_setup.task, state.params, state.model_state)[ID_SET]
    assert apart[ID_SET]["loss"][-1] == pytest.approx(loss_and_error(logits, labels)[0], rel=1e-5)
    assert set(apart) == {"alpha", ID_SET}  # the ID test set unless with_ood


def test_a_soup_of_one_model_is_the_model(two_runs):
    soup = soup_outputs([(two_runs[0], "end")])
    run_setup, state = load_run_state(two_runs[0], "end", with_ood=True)
    own = member_logits(run_setup.task, state.params, state.model_state)
    assert set(soup) == set(own) == {ID_SET, "fog/3"}
    for name in own:
        np.testing.assert_allclose(soup[name][0], own[name][0], rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # ~20 s: a ResNet run; the path's machinery has the fast tests above
def test_path_points_get_their_own_batchnorm_statistics(tmp_path):
    """On a BatchNorm model the path's end point is the model with statistics recomputed on the
    training images, not its running ones: both evaluated here by hand."""
    from earlyjax.ensembles import training_batches
    from earlyjax.interpolation import recompute_batch_stats

    config = helpers.tiny_config()  # ResNet-18 at width 4: the suite's most compiled model
    workdir = str(tmp_path / "resnet18")
    train_and_evaluate(config, workdir)
    path = interpolation_path((workdir, "end"), (workdir, "end"), num_points=3, bn_examples=64)
    assert path[ID_SET]["loss_barrier"] == 0.0
    run_setup, state = load_run_state(workdir, "end")
    task = run_setup.task

    def apply_fn(variables, images):
        logits, stats = task.logits(
            variables["params"], variables["batch_stats"], {"image": images}, None, True
        )
        return logits, {"batch_stats": stats}

    stats = recompute_batch_stats(
        apply_fn, state.params, state.model_state, training_batches(task, 64, 500)
    )
    recomputed = member_logits(task, state.params, stats)[ID_SET]
    running = member_logits(task, state.params, state.model_state)[ID_SET]
    assert path[ID_SET]["loss"][0] == pytest.approx(loss_and_error(*recomputed)[0], rel=1e-4)
    assert loss_and_error(*recomputed)[0] != pytest.approx(loss_and_error(*running)[0], rel=1e-4)
