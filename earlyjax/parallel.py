"""Data parallelism over every device of every host: `jax.jit` over a one-axis device mesh.

Why `jit` with a mesh and not `pmap`: the installed JAX documents `pmap` as the old way (it is
now built on `jit` + `shard_map`), and with `jit` the train step stays the single-device code.
The batch is a global array sharded along its first axis over the mesh axis `"data"`; the
train state is replicated. XLA then partitions the step: each device runs its slice of the batch,
the gradient and the BatchNorm batch statistics are means over the *global* batch (cross-replica
BatchNorm for free), and the updated state comes out replicated. Results therefore do not depend
on the device count beyond float reassociation (tests/multidevice/ checks 1 vs 4 devices).

Multi-host: after `jax.distributed.initialize()` (`--distributed` on the command line),
`jax.devices()` lists the devices of all hosts and the same code runs on each host. Every host
derives the same global batch indices from (seed, step) and gathers only the rows its own devices
hold (`global_batch`), so no host ever moves another host's data; only process 0 writes logs
and results, and all hosts take part in orbax's checkpoint saves.

Metrics take the mesh as `mesh=` (see `earlyjax.metrics`): chunks of examples (tr(F)),
perturbation samples (S_avg) and Auto-PGD batches (S_worst) are split over its devices with
`shard_map` (`earlyjax.metrics._common.device_map`, which says why not by sharding alone).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def data_mesh(num_devices: int | None = None) -> Mesh:
    """A one-axis mesh ("data") over the first `num_devices` devices (None: all of them)."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(devices):
        raise ValueError(
            f"num_devices={num_devices!r}: JAX sees {len(devices)} device(s) "
            f"({devices[0].platform}); pass a number from 1 to {len(devices)}, or None for all"
        )
    if n < len(devices) and jax.process_count() > 1:
        raise ValueError(
            f"num_devices={n} with {jax.process_count()} processes: a multi-host run uses every "
            "device; leave num_devices unset"
        )
    return Mesh(np.asarray(devices[:n]), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimizer state)."""
    return NamedSharding(mesh, P())


def sharded(mesh: Mesh) -> NamedSharding:
    """The first axis is split over the mesh's devices (batches)."""
    return NamedSharding(mesh, P(DATA_AXIS))


def check_divisible(name: str, size: int, mesh: Mesh) -> None:
    """A batch of `size` must split evenly over the mesh; raises ValueError naming the fix."""
    n = mesh.size
    if size % n:
        raise ValueError(
            f"{name}={size} does not split evenly over {n} devices: use a multiple of {n} "
            f"(e.g. {max(n, size // n * n)}), or fewer devices (CUDA_VISIBLE_DEVICES)"
        )


def put_replicated(tree: Any, mesh: Mesh) -> Any:
    """A copy of `tree` (host or device arrays, the same on every host) on every mesh device."""
    sharding = replicated(mesh)

    def put(x):
        x = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, tree)


def global_batch(batch: Mapping[str, np.ndarray], mesh: Mesh, rows: np.ndarray | None = None):
    """Global arrays sharded along the first axis from host arrays every host can index.

    With `rows`, the batch is `{k: v[rows]}`, but each host gathers only the rows of its own
    devices (the gather of a training batch from the in-memory data set happens per shard).
    """
    sharding = sharded(mesh)
    n = len(rows) if rows is not None else len(next(iter(batch.values())))
    check_divisible("batch size", n, mesh)

    def make(v):
        shape = (n, *v.shape[1:])
        if rows is None:
            return jax.make_array_from_callback(shape, sharding, lambda index: v[index])
        return jax.make_array_from_callback(shape, sharding, lambda index: v[rows[index[0]]])

    return {k: make(v) for k, v in batch.items()}
