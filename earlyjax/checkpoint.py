"""Checkpoints through orbax's CheckpointManager: periodic and final saves, resume, keep-N.

A checkpoint holds the whole train state (params, optimizer state with the unfreezing
schedule, BatchNorm statistics, step, RNG key) plus a small JSON record. Restoring checks the
stored tree against the state the current config builds, so a checkpoint written by another
model or config is refused with a clear error instead of being half-loaded.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be restored into this run; the message says what to do."""


class Checkpointer:
    """Saves and restores (state, meta) under `directory`, keeping the newest `keep`."""

    def __init__(self, directory: str, keep: int = 2):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(keep),
            enable_async_checkpointing=False,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        if step in self._manager.all_steps():
            return  # already saved (e.g. the final save right after a periodic one)
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        self._manager.save(step, args=args)
        self._manager.wait_until_finished()

    def restore(self, step: int, like: Any) -> tuple[Any, dict]:
        """Restores checkpoint `step` into the structure, shapes and dtypes of `like`."""
        path = os.path.join(self.directory, str(step))
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
        )
        try:
            restored = self._manager.restore(step, args=args)
        except Exception as e:  # orbax raises many types for unreadable or mismatched data
            raise CheckpointError(
                f"cannot restore the checkpoint at {path}: {type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}\nIt is unreadable or was written by "
                "a different model/config. Nothing was changed: move that directory away to "
                "start over from the previous checkpoint, or use a fresh --workdir."
            ) from e
        _check_shapes(restored.state, like, path)
        return restored.state, dict(restored.meta)

    def close(self) -> None:
        self._manager.close()


def _check_shapes(restored: Any, like: Any, path: str) -> None:
    for (p, a), b in zip(
        jax.tree_util.tree_leaves_with_path(restored), jax.tree.leaves(like), strict=True
    ):
        if a.shape != b.shape or a.dtype != b.dtype:
            raise CheckpointError(
                f"the checkpoint at {path} holds {jax.tree_util.keystr(p)} with shape "
                f"{a.shape} {a.dtype}, but this config needs {b.shape} {b.dtype}; it was written "
                "by a different model/config. Use a fresh --workdir."
            )
