"""The final-solution analysis (§6.3, App. C): the trained model's metrics in results.json."""

import math
import os

from earlyjax.metric_log import read_records
from earlyjax.train import format_results, train_and_evaluate


def test_final_solution_metrics_land_in_results_and_the_final_line(
    tiny_config, tiny_dataset, tmp_path
):
    c = tiny_config
    c.final.metrics = ("hessian", "feature_eigenvalue")
    c.record.set_size, c.record.batch_size = 64, 32
    c.record.hessian_iters = 3
    results = train_and_evaluate(c, str(tmp_path), dataset=tiny_dataset)
    final = results["final_solution"]
    assert set(final) == {"hessian", "feature_eigenvalue"}
    assert all(math.isfinite(v) and v > 0 for v in final.values())
    (line,) = [
        r for r in read_records(os.path.join(tmp_path, "metrics.jsonl")) if r["kind"] == "final"
    ]
    assert {k: line[k] for k in final} == final
    summary = format_results(results).splitlines()[-1]
    assert summary.startswith("Final solution (metric set): feature_eigenvalue ")
