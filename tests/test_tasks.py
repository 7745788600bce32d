"""The task interface: every task provides every member of `Task`, and `ClassificationTask`
lays out results.json as each task did before it owned that (the end-to-end runs in
test_train, test_nli and test_qa score the sets themselves)."""

from __future__ import annotations

import dataclasses

import pytest

from earlyjax import recording
from earlyjax.task_protocol import HasBlocks
from earlyjax.tasks import TASKS, ClassificationTask, Task


def protocol_members(protocol) -> set[str]:
    return {name for name in vars(protocol) if not name.startswith("_")}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_provides_every_member_of_the_protocol(name):
    cls = TASKS[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    members = protocol_members(Task) | protocol_members(HasBlocks)
    assert members >= {"blocks", "head", "init", "loss", "final_results", "metric_inputs"}
    missing = sorted(m for m in members if not hasattr(cls, m) and m not in fields)
    assert not missing, f"{cls.__name__} lacks {missing}"


@dataclasses.dataclass(frozen=True, eq=False)
class Canned(ClassificationTask):
    """Scores from a table instead of a model: one evaluation per set, counted."""

    scores: dict
    ood: tuple
    dataset_name: str = "toy"
    ood_set: str | None = "toy shifts"
    evaluated: list = dataclasses.field(default_factory=list)

    def eval_sets(self):
        return {name: name for name in self.scores}

    def ood_names(self):
        return sorted(self.ood)

    def evaluate_split(self, params, model_state, split, batch_size, mesh=None):
        self.evaluated.append(split)
        return self.scores[split]


def test_results_fields_in_the_order_results_json_had():
    task = Canned({None: {"accuracy": 50.0, "loss": 1.0}, "b": {"accuracy": 20.0, "loss": 2.0},
                   "a": {"accuracy": 30.0, "loss": 3.0}}, ("b", "a"))  # fmt: skip
    results = task.final_results(None, None, 8)
    assert list(results) == ["dataset", "id_accuracy", "id_loss", "ood_accuracy", "ood_table",
                             "ood_set", "ood_cells"]  # fmt: skip
    assert results["ood_table"] == {"a": 30.0, "b": 20.0} and results["ood_cells"] == ["a", "b"]
    assert results["ood_accuracy"] == 25.0 and results["id_accuracy"] == 50.0
    assert sorted(task.evaluated, key=str) == sorted([None, "a", "b"], key=str)  # each once


def test_the_qa_layout_adds_its_header_id_extras_and_every_sets_scores():
    from earlyjax.tasks import QuestionAnswering

    scores = {
        "en": {"f1": 60.0, "exact_match": 40.0, "loss": 1.0},
        "xa": {"f1": 30.0, "exact_match": 20.0, "loss": 2.0},
    }

    class CannedQA(Canned):
        SCORE, ID_EXTRA, id_name = "f1", ("exact_match",), "en"
        header = QuestionAnswering.header
        footer = QuestionAnswering.footer
        id_split = "en"

    results = CannedQA(scores, ("xa",)).final_results(None, None, 8)
    assert list(results) == ["dataset", "score", "id_set", "id_accuracy", "id_exact_match",
                             "id_loss", "ood_accuracy", "ood_table", "ood_set", "ood_cells",
                             "scores"]  # fmt: skip
    assert results["score"] == "f1" and results["id_set"] == "English test set"
    assert results["id_accuracy"] == 60.0 and results["id_exact_match"] == 40.0
    assert results["ood_table"] == {"xa": 30.0} and results["scores"] == scores


def test_the_metric_registry_defines_the_recordable_names_and_the_key_order():
    assert tuple(recording.METRICS) == recording.RECORDABLE
    # The keys are split in this order: changing it changes every recorded value.
    assert recording.KEYED == (
        "fisher", "avg_sharpness", "worst_sharpness", "hessian", "feature_rank"
    )  # fmt: skip
    assert recording.RECORDABLE[len(recording.KEYED) :] == ("feature_eigenvalue",)
