"""Runs one experiment: `python -m experiments.main --config=cifar10_rn18.py --workdir=DIR`.

A bare config name resolves to `experiments/configs/`; a path works too. Override any field
with `--config.a.b=value` (e.g. `--config.unfreeze.k=100`; `--config.unfreeze.k=none` for a field
that may be None; a tuple as `--config.data.ood_severities=(2,3)`); when a field is given twice,
the last value wins. Re-running with the same --workdir resumes from its newest checkpoint; a
finished workdir just prints its results. One run at a time per workdir (a second one refuses).
SIGTERM (SLURM, preemption) or Ctrl-C saves a checkpoint at the current step and exits with
128 + the signal number; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from experiments import cli

flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, logs and results; re-use it to resume."
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS.config or not flags.FLAGS.workdir:
        raise app.UsageError("--config and --workdir are required")
    cli.initialize_distributed()
    cli.enable_compilation_cache()
    from earlyjax.train import format_results, train_and_evaluate

    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    config = flags.FLAGS.config
    try:
        with cli.errors_as_one_line():
            results = train_and_evaluate(config, flags.FLAGS.workdir)
    except KeyboardInterrupt:  # before or after the train loop, which handles Ctrl-C itself
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        raise SystemExit(130) from None
    print(format_results(results))
    print(f"results: {os.path.join(flags.FLAGS.workdir, 'results.json')}")


def run() -> None:
    sys.argv = cli.rewrite_config_argument(sys.argv)
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
