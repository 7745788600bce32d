"""Runs one experiment: `python -m experiments.main --config=cifar10_rn18.py --workdir=DIR`.

A bare config name resolves to `experiments/configs/`; a path works too. Override any field
with `--config.a.b=value` (e.g. `--config.unfreeze.k=100`). Re-running with the same --workdir
resumes from its newest checkpoint; a finished workdir just prints its results.
"""

from __future__ import annotations

import difflib
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")

config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file (a name in experiments/configs/ or a path), optionally with a ':arg' suffix.",
    lock_config=True,
)
flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, logs and results; re-use it to resume."
)
flags.mark_flags_as_required(["config", "workdir"])


def resolve_config_path(value: str) -> str:
    """`name.py[:arg]` -> the file in experiments/configs/ when `name.py` is not a path."""
    path, sep, arg = value.partition(":")
    if not os.path.exists(path):
        candidate = os.path.join(CONFIG_DIR, path if path.endswith(".py") else path + ".py")
        if os.path.exists(candidate):
            path = candidate
        else:
            known = sorted(
                f for f in os.listdir(CONFIG_DIR) if f.endswith(".py") and not f.startswith("_")
            )
            raise SystemExit(
                f"config {value!r} not found, neither as a path nor in {CONFIG_DIR};"
                f" known configs: {', '.join(known)}"
            )
    return path + sep + arg


def rewrite_config_argument(argv: list[str]) -> list[str]:
    """Resolves the value of --config (as `--config=X` or `--config X`) in an argv list."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg.startswith("--config="):
            out[i] = "--config=" + resolve_config_path(arg.split("=", 1)[1])
        elif arg == "--config" and i + 1 < len(out):
            out[i + 1] = resolve_config_path(out[i + 1])
    return out


def _config_fields(tree, prefix=""):
    for key, value in tree.items():
        name = f"{prefix}{key}"
        yield name
        if isinstance(value, dict):
            yield from _config_fields(value, name + ".")


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a clear message for an unknown `--config.x=v` field."""
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError) as e:
        from earlyjax.config import default_config

        known = list(_config_fields(default_config().to_dict()))
        unknown = []
        for arg in argv[1:]:
            if arg.startswith("--config."):
                field = arg[len("--config.") :].split("=", 1)[0]
                if field not in known:
                    close = difflib.get_close_matches(field, known, n=3)
                    hint = f" (did you mean {', '.join(close)}?)" if close else ""
                    unknown.append(f"--config.{field}{hint}")
        if not unknown:
            raise
        raise SystemExit(
            f"unknown config field: {'; '.join(unknown)}. Valid fields: {', '.join(known)}"
        ) from e


def enable_compilation_cache() -> None:
    """Keeps compiled programs on disk, so a resumed or repeated run skips compilation.

    Uses $JAX_COMPILATION_CACHE_DIR when set, else ~/.cache/earlyjax/jax (or $XDG_CACHE_HOME).
    """
    import jax

    from earlyjax.data import default_cache_dir

    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", os.path.join(default_cache_dir(), "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    enable_compilation_cache()
    from earlyjax.checkpoint import CheckpointError
    from earlyjax.config import ConfigError
    from earlyjax.data.local_files import DatasetFileError
    from earlyjax.train import TrainingDiverged, format_results, train_and_evaluate

    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    config = flags.FLAGS.config
    try:
        results = train_and_evaluate(config, flags.FLAGS.workdir)
    except ConfigError as e:
        raise SystemExit(f"config error: {e}") from None
    except (CheckpointError, TrainingDiverged, FileNotFoundError, DatasetFileError) as e:
        raise SystemExit(f"error: {e}") from None
    print(format_results(results))
    print(f"results: {os.path.join(flags.FLAGS.workdir, 'results.json')}")


def run() -> None:
    sys.argv = rewrite_config_argument(sys.argv)
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
