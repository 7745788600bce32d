"""Checkpoints through orbax's CheckpointManager: periodic and final saves, resume, keep-N.

A checkpoint holds the whole train state (params, optimizer state with the unfreezing
schedule, BatchNorm statistics, step, RNG key) plus a small JSON record, which includes a
SHA-256 digest of the state taken at save time. Restoring checks the stored tree against the
state the current config builds (a checkpoint written by another model or config is refused
with a clear error instead of being half-loaded) and the restored bytes against the digest.
`restore_latest` falls back from a checkpoint that does not read back intact to the newest one
that does, and moves the bad ones aside (never deletes them).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

DIGEST_KEY = "state_sha256"  # in the JSON record of every checkpoint


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be restored into this run; the message says what to do, and
    `problem` (when given) is the short reason without the advice."""

    def __init__(self, message: str, problem: str | None = None):
        super().__init__(message)
        self.problem = problem or message.splitlines()[0]


class ForeignCheckpoint(CheckpointError):
    """A checkpoint of another model or config: every checkpoint of the workdir is, so there is
    nothing to fall back to."""


def state_digest(state: Any) -> str:
    """SHA-256 over every leaf's path, dtype, shape and bytes, in tree order (host values; a
    replicated multi-host array is read from its first local shard)."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            leaf = leaf.addressable_data(0)
        value = np.ascontiguousarray(jax.device_get(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{value.dtype}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


class Checkpointer:
    """Saves and restores (state, meta) under `directory`, keeping the newest `keep` and those
    at `named_steps` (rewinding points: earlyjax.branch)."""

    def __init__(self, directory: str, keep: int = 2, named_steps: Sequence[int] = ()):
        self.directory = os.path.abspath(directory)
        policies = ocp.checkpoint_managers
        keep_policy = policies.LatestN(keep)
        if named_steps:
            named = policies.CustomSteps(tuple(named_steps))
            keep_policy = policies.AnyPreservationPolicy([keep_policy, named])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=keep_policy,
            enable_async_checkpointing=False,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self._save_failed = False

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, meta: dict) -> None:
        if step in self._manager.all_steps():
            return  # already saved (e.g. the final save right after a periodic one)
        meta = {**meta, DIGEST_KEY: state_digest(state)}
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        try:
            with _orbax_logs_silenced(), _stderr_kept_unless_failed():
                self._manager.save(step, args=args)
                self._manager.wait_until_finished()
        except Exception as e:  # orbax reports a full disk as ValueError('RESOURCE_EXHAUSTED...')
            self._save_failed = True
            detail = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(
                f"cannot save the checkpoint at step {step} in {self.directory}: {detail}. "
                "Free disk space (or fix the permissions) and rerun the same command: it resumes "
                f"from the newest complete checkpoint (step {self.latest_step() or 0})."
            ) from e

    def restore(self, step: int, like: Any) -> tuple[Any, dict]:
        """Restores checkpoint `step` into the structure, shapes and dtypes of `like` and checks
        it against the digest taken when it was saved."""
        path = os.path.join(self.directory, str(step))
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
        )
        try:
            restored = self._manager.restore(step, args=args)
        except Exception as e:  # orbax raises many types for unreadable or mismatched data
            problem = (
                f"cannot restore the checkpoint at {path}: {type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}"
            )
            raise CheckpointError(
                f"{problem}\nIt is unreadable or was written by a different model/config. "
                "Nothing was changed: move that directory away to start over from the previous "
                "checkpoint, or use a fresh --workdir.",
                problem,
            ) from e
        _check_shapes(restored.state, like, path)
        meta = dict(restored.meta)
        saved = meta.pop(DIGEST_KEY, None)
        if saved is None:
            problem = f"the checkpoint at {path} has no SHA-256 digest of its contents"
            raise CheckpointError(
                f"{problem}: it was not written by a released version. Nothing was changed: use "
                "a fresh --workdir.",
                problem,
            )
        if saved != state_digest(restored.state):
            problem = (
                f"the checkpoint at {path} is corrupt: its contents do not match the SHA-256 "
                "digest recorded when it was saved"
            )
            raise CheckpointError(
                f"{problem}. Nothing was changed: move that directory away to resume from the "
                "previous checkpoint, or use a fresh --workdir.",
                problem,
            )
        return restored.state, meta

    def restore_latest(self, like: Any) -> tuple[int, Any, dict] | None:
        """(step, state, meta) of the newest checkpoint that restores intact; None without any.

        A newer checkpoint that is unreadable or corrupt is moved to `<directory>.corrupt/`, with
        a printed line, once an older one has restored; when none restores, the newest one's
        CheckpointError is raised and nothing is moved. Only in a single-process run: with
        several processes the error is raised at once (moving files would race).
        """
        failed: list[tuple[int, CheckpointError]] = []
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                state, meta = self.restore(step, like)
            except ForeignCheckpoint:
                raise
            except CheckpointError as e:
                if jax.process_count() > 1:
                    raise
                failed.append((step, e))
                continue
            if failed:
                self._set_aside([s for s, _ in failed], step, failed[0][1])
            return step, state, meta
        if failed:
            raise failed[0][1]
        return None

    def _set_aside(self, steps: list[int], good_step: int, error: CheckpointError) -> None:
        aside = self.directory + ".corrupt"
        os.makedirs(aside, exist_ok=True)
        for step in steps:
            target, n = os.path.join(aside, str(step)), 1
            while os.path.exists(target):
                target, n = os.path.join(aside, f"{step}.{n}"), n + 1
            shutil.move(os.path.join(self.directory, str(step)), target)
        self._manager.reload()
        print(
            f"{error.problem}; moved the checkpoint(s) at step {', '.join(map(str, steps))} to "
            f"{aside} and resuming from the intact checkpoint at step {good_step}"
        )

    def close(self) -> None:
        """Closes the manager; after a failed save, orbax re-raises that failure here, which
        is already reported (as the CheckpointError of `save`), so it is not raised again."""
        if self._save_failed:
            with _orbax_logs_silenced(), contextlib.suppress(Exception):
                self._manager.close()
            return
        self._manager.close()


@contextlib.contextmanager
def _orbax_logs_silenced() -> Iterator[None]:
    """Orbax logs a failed save's traceback from each of its writer threads (absl logging,
    ERROR) before the save raises; the CheckpointError says it once, in one line."""
    level = logging.get_verbosity()
    logging.set_verbosity(logging.FATAL)
    try:
        yield
    finally:
        logging.set_verbosity(level)


@contextlib.contextmanager
def _stderr_kept_unless_failed() -> Iterator[None]:
    """Captures file descriptor 2 (where orbax's and TensorStore's threads print) and writes it
    back when the block succeeds; after a failure it is dropped: the writer threads' dozens of
    tracebacks of one full disk, which the CheckpointError reports in one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            raise
        else:
            os.dup2(saved, 2)
            captured.seek(0)
            text = captured.read()
            if text:
                os.write(2, text)
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _check_shapes(restored: Any, like: Any, path: str) -> None:
    for (p, a), b in zip(
        jax.tree_util.tree_leaves_with_path(restored), jax.tree.leaves(like), strict=True
    ):
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ForeignCheckpoint(
                f"the checkpoint at {path} holds {jax.tree_util.keystr(p)} with shape "
                f"{a.shape} {a.dtype}, but this config needs {b.shape} {b.dtype}; it was written "
                "by a different model/config. Use a fresh --workdir."
            )
