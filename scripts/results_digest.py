"""Tiny image / NLI / QA runs (every recordable metric between them, final metrics too) whose
results.json and metrics.jsonl records are written to OUT, for a refactor that must not change
a number: run it before and after, then compare the folders.

    PYTHONPATH=$PWD python scripts/results_digest.py /tmp/before   # on the old code
    PYTHONPATH=$PWD python scripts/results_digest.py /tmp/after --compare /tmp/before

The session timings of results.json (`*_seconds_this_session`) are left out. About 5 minutes
on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np

from earlyjax.config import default_config
from earlyjax.data import synthetic_qa
from earlyjax.data.base import Dataset, Split
from earlyjax.data.digits import load_digits_splits
from earlyjax.metric_log import read_records
from earlyjax.train import train_and_evaluate
from experiments.configs.quickstart_nli import get_config as nli_config


def image():
    train, test = load_digits_splits()
    train = Split(train.images[:256], train.labels[:256])
    test = Split(test.images[:100], test.labels[:100])
    ood = {
        ("darken", 1): Split((test.images // 2).astype(np.uint8), test.labels),
        ("invert", 1): Split((255 - test.images).astype(np.uint8), test.labels),
    }
    c = default_config()
    c.model.width, c.batch_size, c.total_steps, c.log_every = 4, 32, 8, 3
    c.checkpoint_every, c.eval_batch_size, c.progress_bar = 0, 64, False
    c.optimizer.lr, c.optimizer.momentum, c.unfreeze.k = 0.05, 0.9, 2
    c.unfreeze.allow_late_release, c.data.ood_source = True, "none"
    c.record.every, c.record.until = 4, 4
    c.record.metrics = (
        "fisher", "avg_sharpness", "worst_sharpness", "hessian", "feature_rank",
        "feature_eigenvalue",
    )  # fmt: skip
    c.record.set_size, c.record.batch_size = 64, 32
    c.record.avg_samples, c.record.worst_iters, c.record.hessian_iters = 2, 2, 3
    c.final.metrics = ("hessian", "feature_eigenvalue", "worst_sharpness")
    return c, Dataset("digits", 10, train, test, ood, ood_set="two test ones")


def nli():
    c = nli_config()
    c.model.width, c.model.layers, c.total_steps, c.unfreeze.k = 16, 2, 12, 4
    c.log_every, c.checkpoint_every, c.progress_bar = 2, 0, False
    c.record.every, c.record.until = 6, 6
    c.record.metrics = ("fisher", "worst_sharpness", "feature_rank")
    c.record.set_size, c.record.batch_size = 128, 64
    c.record.avg_samples, c.record.worst_iters = 2, 2
    return c, None


def qa():
    c, _ = nli()
    c.task, c.data.name = "qa", "synthetic_qa"
    c.data.max_length, c.data.doc_stride = synthetic_qa.MAX_LENGTH, synthetic_qa.STRIDE
    c.record.metrics = ("fisher", "avg_sharpness")
    return c, None


def digest(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    for name, make in (("image", image), ("nli", nli), ("qa", qa)):
        config, dataset = make()
        with tempfile.TemporaryDirectory() as workdir:
            train_and_evaluate(config, workdir, dataset=dataset)
            with open(os.path.join(workdir, "results.json")) as f:
                lines = [x for x in f.read().splitlines() if "_seconds_this_session" not in x]
            records = [  # without wall-clock fields
                {k: v for k, v in r.items() if "time" not in k and "sec" not in k}
                for r in read_records(os.path.join(workdir, "metrics.jsonl"))
                if r["kind"] in ("record", "final", "eval")
            ]
        with open(os.path.join(out, f"{name}_results.json"), "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(os.path.join(out, f"{name}_records.json"), "w") as f:
            json.dump(records, f, indent=1, sort_keys=True)


def compare(a: str, b: str) -> bool:
    same = True
    for name in sorted(os.listdir(a)):
        with open(os.path.join(a, name)) as fa, open(os.path.join(b, name)) as fb:
            equal = fa.read() == fb.read()
        print(f"{name}: {'identical' if equal else 'DIFFERENT'}")
        same &= equal
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--compare", help="a folder an earlier run wrote")
    args = parser.parse_args()
    digest(args.out)
    if args.compare and not compare(args.compare, args.out):
        raise SystemExit("results differ")


if __name__ == "__main__":
    main()
