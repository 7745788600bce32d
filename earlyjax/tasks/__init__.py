"""Tasks: what is specific to a problem (model, data and input pipeline, loss, evaluators,
parameter blocks). The training loop (`earlyjax.train`) sees only this interface:

  blocks, head                     the parameter blocks an intervention acts on (bottom-up)
  blocks_for(config)               -> (blocks, head) without building anything (sweeps)
  num_train                        training examples (the run length in epochs needs it)
  dataset_name, ood_set            what the data and the OOD mean are called
  without_ood()                    -> the same task without OOD sets (auto-k's signal runs)
  init(key)                        -> (params, model_state)
  loss(params, model_state, batch, key, train)
                                   -> (mean loss, ({"accuracy": ...}, new model_state))
  train_batches(seed, batch_size, start_step, stop_step, mesh)
                                   -> iterator of (step, device batch)
  evaluate_id(state-like params, model_state, batch_size, mesh)   -> {"accuracy", "loss"}
  final_results(params, model_state, batch_size, mesh)            -> results.json fields
  metric_batches(set_size, batch_size)                            -> the fixed metric set
  metric_inputs(params, model_state, batches, bn)  -> (fixed, batches, flat inputs) for them
  metric_logits(params, fixed, x), metric_loss(params, fixed, batch),
  metric_features(params, fixed, x)               -> what the metrics evaluate, `fixed` held

`ImageClassification` (earlyjax/tasks/image_classification.py), and XLM-R + LoRA
(earlyjax/tasks/xlmr_task.py) on sentence pairs, `TextClassification` (MNLI -> XNLI,
earlyjax/tasks/text_classification.py), or extractive QA, `QuestionAnswering` (SQuAD ->
XQuAD / MLQA, earlyjax/tasks/question_answering.py). `TASKS` maps `config.task` to each.
"""

from earlyjax.tasks.image_classification import ImageClassification
from earlyjax.tasks.question_answering import QuestionAnswering
from earlyjax.tasks.text_classification import TextClassification

TASKS = {
    "image_classification": ImageClassification,
    "nli": TextClassification,
    "qa": QuestionAnswering,
}

__all__ = ["TASKS", "ImageClassification", "QuestionAnswering", "TextClassification"]
