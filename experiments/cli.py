"""Command-line plumbing shared by experiments.main, .sweep and .autok.

Defines the `--config` flag (ml_collections config_flags, locked: unknown fields are refused),
resolves a bare config name to `experiments/configs/`, parses the `--config.x=v` overrides itself
(typed by each field, `none` for nullable fields, last one wins; see parse_flags) and explains
unknown fields, and turns on JAX's persistent compilation cache.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import os
import re
from collections.abc import Iterator, Sequence
from typing import NoReturn

import ml_collections
from absl import flags
from ml_collections import config_flags
from ml_collections.config_flags import config_path

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")

config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file (a name in experiments/configs/ or a path), optionally with a ':arg' suffix.",
    lock_config=True,
    # config_flags would read the `--config.x` overrides from sys.argv itself: parse_flags
    # takes them out of argv and parses them instead (see there), so it is given none.
    sys_argv=[],
)
# Shared by the drivers that run several seeds (experiments.sweep, experiments.autok).
flags.DEFINE_list("seeds", ["0"], "Seeds.")
# Shared by the drivers that set a removal step k (experiments.sweep, experiments.autok).
flags.DEFINE_enum(
    "intervention",
    "gradual_unfreezing",
    ["gradual_unfreezing", "lr_switch"],
    "The intervention whose removal step k is set (sweep --k) or picked (autok): the "
    "unfreezing interval, or the step of the LR switch the config names "
    "(--config.optimizer.lr_switch=l2h or h2l).",
)
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


# The `--config.x=v` overrides of the last parse_flags, in command order: parsed, (field,
# value), and as the user wrote them, ("field", "text").
_OVERRIDES: list[tuple[str, object]] = []
_OVERRIDE_TEXTS: list[tuple[str, str]] = []
_OVERRIDE_ARG = re.compile(r"^--?(no)?config\.(.+)$")


def config_overrides() -> list[tuple[str, object]]:
    """The `--config.x=v` overrides of the command line, as (field, value) pairs in order.

    Set by parse_flags (the values typed by each field, as set in the config)."""
    return list(_OVERRIDES)


def config_override_args() -> list[str]:
    """The `--config.x=v` overrides of the command line as the user wrote them, for a child
    process: `--config.field=text` with the text unchanged (`1e-3` stays `1e-3`), in command
    order. `--config.x v` becomes `--config.x=v`; a bare `--config.x` / `--noconfig.x` (a bool)
    becomes `--config.x=true` / `false`. Set by parse_flags, which has checked that they parse.
    """
    return [f"--config.{field}={text}" for field, text in _OVERRIDE_TEXTS]


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with `--config.x=v` overrides parsed here (absl's flags_parser).

    The overrides are taken out of argv before absl sees it, then parsed against the type of
    each field of the loaded config and set in command order, so the last one wins (tuples
    included). `none` (any case) sets a nullable field (None by default, such as `unfreeze.k`)
    to None; other fields parse it like any value (`data.ood_source=none` is the string).
    Unknown fields and values that do not parse exit with a message that names the fix.
    sys.argv is left as it is; `config_overrides()` returns what was parsed and
    `config_override_args()` the overrides as given (for a child process).
    """
    argv = [argv[0], *flags.FLAGS.read_flags_from_files(argv[1:], force_gnu=False)]
    rest, raw = split_config_args(argv)
    try:
        unparsed = flags.FLAGS(rest)
    except flags.Error:
        raise
    except Exception as e:  # raised while loading the --config file (ml_collections)
        raise SystemExit(config_file_error(_config_value(rest), e)) from None
    config = flags.FLAGS.config
    if raw and config is None:
        raise SystemExit(f"--config.{raw[0][0]} needs a config to override: add --config=FILE")
    _OVERRIDES[:] = parse_overrides(config, raw) if raw else []
    _OVERRIDE_TEXTS[:] = raw
    if _OVERRIDES:
        apply_overrides(config, _OVERRIDES)
    return unparsed


def _config_value(argv: Sequence[str]) -> str:
    """The value of --config in argv ('' if absent)."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return ""


def config_file_error(config_arg: str, error: Exception) -> str:
    """One line for a --config file that cannot be loaded: a syntax error, no get_config, or a
    get_config (or the module itself) that raised."""
    path = config_arg.partition(":")[0]
    if isinstance(error, SyntaxError):
        problem = f"has a syntax error at line {error.lineno}: {error.msg}"
        fix = "fix the file"
    elif isinstance(error, AttributeError) and "get_config" in str(error):
        problem = "defines no get_config()"
        fix = "add `def get_config(): return ...` returning an ml_collections.ConfigDict"
    else:
        detail = str(error).splitlines()[0] if str(error) else ""
        problem = f"raised {type(error).__name__}: {detail}"
        fix = "fix the file (experiments/configs/quickstart.py is a working example)"
    return f"error: config file {path} {problem}; {fix}"


def split_config_args(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Splits argv into the other arguments and the `--config.x` overrides ("field", "text").

    Takes `--config.x=v`, `--config.x v` (a field that is not a bool), `--config.x` and
    `--noconfig.x` (a bool field: true / false). Stops at `--`.
    """
    rest, raw = [argv[0]], []
    i = 1
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            rest += argv[i - 1 :]
            break
        match = _OVERRIDE_ARG.match(arg)
        if not match:
            rest.append(arg)
            continue
        negated, body = match.groups()
        field, eq, text = body.partition("=")
        if negated:
            if eq:
                raise SystemExit(f"{arg}: --noconfig.{field} takes no value")
            raw.append((field, "false"))
        elif eq:
            raw.append((field, text))
        elif _default_type(field) in (bool, None) or i == len(argv):
            raw.append((field, "true"))  # a bool; any other field refuses the text 'true'
        else:
            raw.append((field, argv[i]))
            i += 1
    return rest, raw


def parse_overrides(config, raw: Sequence[tuple[str, str]]) -> list[tuple[str, object]]:
    """Parses ("field", "text") overrides against the config's fields: [(field, value), ...].

    Exits with a one-line message for an unknown field, a group of fields, or a value that does
    not parse as the field's type; nothing is set.
    """
    _refuse_unknown_fields(config, [field for field, _ in raw])
    return [(field, parse_value(config, field, text)) for field, text in raw]


def parse_value(config, field: str, text: str) -> object:
    """The value of `--config.<field>=<text>`, parsed as the type of that field of config."""
    kind = config_path.get_type(field, config)
    current = config_path.get_value(field, config)
    arg = f"--config.{field}={text}"
    if isinstance(current, ml_collections.ConfigDict):
        first = next(iter(current.keys()), "name")
        raise SystemExit(
            f"{arg}: {field} is a group of fields, not a value; set one of them, "
            f"e.g. --config.{field}.{first}=..."
        )
    nullable = _nullable(field, config)
    if nullable and text.lower() == "none":
        return None
    if kind is bool:
        value = _BOOLS.get(text.lower())
        if value is None:
            _bad_value(arg, field, text, "true or false", nullable, current)
        return value
    if kind is int:
        try:
            return int(text)
        except ValueError:
            _bad_value(arg, field, text, "an int", nullable, current)
    if kind is float:
        try:
            return float(text)
        except ValueError:
            _bad_value(arg, field, text, "a number", nullable, current)
    if kind in (tuple, list):
        return _parse_tuple(arg, field, text, current)
    if kind is str or current is None:
        return text
    raise SystemExit(f"{arg}: config field {field} of type {kind.__name__} cannot be set here")


_BOOLS = {"true": True, "t": True, "1": True, "yes": True}
_BOOLS.update({"false": False, "f": False, "0": False, "no": False})


def _bad_value(arg: str, field: str, text: str, kind: str, nullable: bool, current) -> NoReturn:
    example = current if current is not None and not isinstance(current, bool) else 1
    if kind == "true or false":
        example = "true"
    if text.lower() == "none":
        problem = f"config field {field} cannot be None; give a value"
    else:
        problem = f"config field {field} takes {kind}{' or none' if nullable else ''}, not {text!r}"
    raise SystemExit(f"{arg}: {problem}, e.g. --config.{field}={format_value(example)}")


def _parse_tuple(arg: str, field: str, text: str, current) -> tuple:
    """A tuple field's value: a Python literal (`(2,)`, `2,3`, `('fisher',)`) or `a,b` words."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = tuple(part.strip() for part in text.split(",") if part.strip())
    value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    kinds = {type(x) for x in current or ()}
    if len(kinds) == 1:
        (kind,) = kinds
        ok = all(type(x) is kind or (kind is float and type(x) is int) for x in value)
        if not ok:
            example = format_value(tuple(current[:2]))
            raise SystemExit(
                f"{arg}: config field {field} takes a tuple of {kind.__name__}s, not {text!r}, "
                f"e.g. --config.{field}={example}"
            )
    return value


def format_value(value: object) -> str:
    """`value` as the text of `--config.x=<text>` that parse_value turns back into it.

    None is `none` (on a nullable field), floats keep every digit, tuples are Python literals.
    """
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return repr(tuple(value))
    return str(value)


def override_args(overrides: Sequence[tuple[str, object]]) -> list[str]:
    """[(field, value), ...] -> the `--config.field=value` arguments that set them (for values
    made by a program, such as a sweep's grid points; a user's own overrides are passed on as
    given, `config_override_args`)."""
    return [f"--config.{field}={format_value(value)}" for field, value in overrides]


def _default_type(field: str):
    """The type of a field of earlyjax.config.default_config (None: not a field, or a group)."""
    from earlyjax.config import default_config

    try:
        kind = config_path.get_type(field, default_config())
    except (AttributeError, KeyError, TypeError):
        return None
    return None if issubclass(kind, ml_collections.ConfigDict) else kind


def _nullable(field: str, config=None) -> bool:
    """Whether a config field may be None: its default (earlyjax.config) is None.

    A field that default_config lacks is nullable when its value in `config` is None.
    """
    from earlyjax.config import default_config

    node = default_config()
    try:
        for part in field.split("."):
            node = node[part]
    except (KeyError, TypeError):
        if config is None:
            return False
        return config_path.get_value(field, config) is None
    return node is None


def _has_field(config, field: str) -> bool:
    node = config
    for part in field.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return False
        node = node[part]
    return True


def _refuse_unknown_fields(config, fields: Sequence[str]) -> None:
    """Exits naming the fields that config lacks, each with the closest valid ones."""
    unknown = []
    known = list(_config_fields(config.to_dict()))
    for field in fields:
        if not _has_field(config, field):
            close = difflib.get_close_matches(field, known, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            unknown.append(f"--config.{field}{hint}")
    if unknown:
        raise SystemExit(
            f"unknown config field: {'; '.join(unknown)}. Valid fields: {', '.join(known)}"
        )


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


@contextlib.contextmanager
def errors_as_one_line() -> Iterator[None]:
    """Turns user errors (`user_errors()`) and failed reads or writes (OSError: a full disk, a
    read-only workdir) into SystemExit with one line naming the problem and the fix."""
    try:
        yield
    except user_errors() as e:
        raise SystemExit(f"error: {e}") from None
    except OSError as e:
        where = f" {e.filename}" if e.filename else ""
        raise SystemExit(
            f"error: cannot write or read{where}: {e.strerror or e}. What was written before is "
            "kept: free disk space or fix the permissions, then rerun the same command to resume."
        ) from None


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
