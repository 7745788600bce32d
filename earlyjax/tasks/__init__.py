"""Tasks: what is specific to a problem (model, data and input pipeline, loss, evaluators,
parameter blocks). The training loop (`earlyjax.train`) sees only the `Task` protocol
(earlyjax/task_protocol.py, where each member is described); `ClassificationTask`
(earlyjax/tasks/base.py) owns the evaluation the tasks share (loss/accuracy sums over a set,
the results.json fields).

`ImageClassification` (earlyjax/tasks/image_classification.py), and XLM-R + LoRA
(earlyjax/tasks/xlmr_task.py) on sentence pairs, `TextClassification` (MNLI -> XNLI,
earlyjax/tasks/text_classification.py), or extractive QA, `QuestionAnswering` (SQuAD ->
XQuAD / MLQA, earlyjax/tasks/question_answering.py). `TASKS` maps `config.task` to each.
"""

from earlyjax.task_protocol import Task
from earlyjax.tasks.base import ClassificationTask
from earlyjax.tasks.image_classification import ImageClassification
from earlyjax.tasks.question_answering import QuestionAnswering
from earlyjax.tasks.text_classification import TextClassification

TASKS = {
    "image_classification": ImageClassification,
    "nli": TextClassification,
    "qa": QuestionAnswering,
}

__all__ = [
    "TASKS",
    "ClassificationTask",
    "ImageClassification",
    "QuestionAnswering",
    "Task",
    "TextClassification",
]
