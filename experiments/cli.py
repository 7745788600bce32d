"""Command-line plumbing shared by experiments.main, .sweep and .autok.

Defines the `--config` flag (ml_collections config_flags, locked: unknown fields are refused),
resolves a bare config name to `experiments/configs/`, explains unknown `--config.x` fields, and
turns on JAX's persistent compilation cache.
"""

from __future__ import annotations

import difflib
import os
import sys

from absl import flags
from ml_collections import config_flags

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")

config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file (a name in experiments/configs/ or a path), optionally with a ':arg' suffix.",
    lock_config=True,
)
# Shared by the drivers that run several seeds (experiments.sweep, experiments.autok).
flags.DEFINE_list("seeds", ["0"], "Seeds.")
flags.DEFINE_bool(
    "distributed",
    False,
    "Start with jax.distributed.initialize(), for one run over several hosts (TPU pod slice, "
    "multi-node GPU): every host runs the same command. See initialize_distributed().",
)


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
    """absl's flag parsing, with a clear message for an unknown `--config.x=v` field.

    `--config.x=none` (any case) sets a field that may be None, such as `unfreeze.k` (standard
    training), which absl's typed parsing of `--config.x` cannot.
    """
    nulls = [a for a in argv[1:] if a.startswith("--config.") and a.lower().endswith("=none")]
    argv = [a for a in argv if a not in nulls]
    sys.argv = [a for a in sys.argv if a not in nulls]  # config_flags reads sys.argv too
    try:
        rest = flags.FLAGS(argv)
    except (AttributeError, KeyError) as e:
        _refuse_unknown_fields(argv, e)
        raise
    for arg in nulls:
        field = arg[len("--config.") : -len("=none")]
        try:
            apply_overrides(flags.FLAGS.config, [(field, None)])
        except (AttributeError, KeyError) as e:
            _refuse_unknown_fields([argv[0], arg], e)
            raise
        if not _nullable(field):
            raise SystemExit(f"{arg}: config field {field} cannot be None; give a value")
    return rest


def _nullable(field: str) -> bool:
    """Whether a config field may be None: its default (earlyjax.config) is None."""
    from earlyjax.config import default_config

    node = default_config()
    for part in field.split("."):
        node = node[part]
    return node is None


def _refuse_unknown_fields(argv: list[str], e: Exception) -> None:
    """Exits naming the unknown `--config.x` fields of argv and the closest valid ones."""
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
    if unknown:
        raise SystemExit(
            f"unknown config field: {'; '.join(unknown)}. Valid fields: {', '.join(known)}"
        ) from e


def initialize_distributed() -> None:
    """With --distributed: `jax.distributed.initialize()`, so that JAX sees every host's devices.

    On Cloud TPU, SLURM and Open MPI, JAX finds the coordinator, the process count and this
    process's id by itself. Elsewhere set JAX_COORDINATOR_ADDRESS (host:port of process 0),
    JAX_NUM_PROCESSES and JAX_PROCESS_ID on every host (launch/multigpu.py does): JAX reads the
    first itself, the other two are passed on from here (jax 0.10 does not read them).
    """
    if not flags.FLAGS.distributed:
        return
    import jax

    kwargs = {}
    for var, arg in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
        if os.environ.get(var):
            try:
                kwargs[arg] = int(os.environ[var])
            except ValueError:
                raise SystemExit(f"{var}={os.environ[var]!r} must be an integer") from None
    jax.distributed.initialize(**kwargs)
    print(
        f"distributed: process {jax.process_index()} of {jax.process_count()}, "
        f"{jax.local_device_count()} local of {jax.device_count()} devices"
    )


def enable_compilation_cache() -> None:
    """Keeps compiled programs on disk, so a resumed or repeated run skips compilation.

    Uses $JAX_COMPILATION_CACHE_DIR when set, else ~/.cache/earlyjax/jax (or $XDG_CACHE_HOME).
    """
    import jax

    from earlyjax.data import default_cache_dir

    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", os.path.join(default_cache_dir(), "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def user_errors() -> tuple[type[Exception], ...]:
    """Errors a user can cause (bad config, data, checkpoint, divergence): print, don't trace."""
    from earlyjax.checkpoint import CheckpointError
    from earlyjax.config import ConfigError
    from earlyjax.data.local_files import DatasetFileError
    from earlyjax.train import TrainingDiverged

    return (ConfigError, CheckpointError, TrainingDiverged, FileNotFoundError, DatasetFileError)


def apply_overrides(config, overrides) -> None:
    """Sets dotted fields of an (unlocked or locked) ConfigDict."""
    for field, value in overrides:
        *path, last = field.split(".")
        node = config
        for part in path:
            node = node[part]
        node[last] = value
