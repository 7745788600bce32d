"""earlyjax.ensembles: the ensemble of saved runs on the ID test set and each OOD split equals
the hand computation from the members' own logits; one member is the run itself."""

import json
import os
import shutil

import helpers
import jax
import numpy as np
import pytest

from earlyjax.config import ConfigError
from earlyjax.ensembles import ID_SET, evaluate_ensemble, member_logits
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
