"""Input pipeline: epoch shuffles derived from (seed, epoch), batching, prefetch, and the
on-device parts (normalisation, CIFAR augmentation) used inside the jitted steps.

The order of training examples is a pure function of (seed, step): epoch e uses the
permutation `default_rng([seed, e])`, and an epoch has ceil(N / B) steps, the last one reading
the N mod B remaining examples, as PyTorch's default loader (`drop_last=False`) counts them:
469 steps per MNIST epoch and 391 per CIFAR epoch at batch 128, so k and every step number mean
what they mean in the paper. The smaller last batch costs one more compiled train step. The
pipeline's position is the train state's step, which the checkpoint holds, so a resumed run
reads exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from earlyjax.data.base import Split
from earlyjax.parallel import global_batch, put_replicated

CIFAR_PAD = 4


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Batches per epoch, the last one possibly smaller: ceil(N / B) (`drop_last=False`).

    Raises ValueError if the batch is larger than the data.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if batch_size > num_examples:
        raise ValueError(
            f"batch_size {batch_size} is larger than the training set ({num_examples} examples);"
            f" set --config.batch_size to at most {num_examples}"
        )
    return -(-num_examples // batch_size)


def batch_indices(seed: int, step: int, num_examples: int, batch_size: int) -> np.ndarray:
    """Indices int64 of the training examples read at optimizer step `step`: `batch_size` of
    them, or the N mod B left over at the last step of an epoch."""
    per_epoch = steps_per_epoch(num_examples, batch_size)
    epoch, within = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    return order[within * batch_size : (within + 1) * batch_size]


Arrays = dict[str, np.ndarray]


def batch_fields(split: Split | Arrays) -> Arrays:
    """The named arrays of a split, one row per example: an image `Split` gives {"image",
    "label"}; a text task's split is such a dict already (e.g. {"input_ids",
    "attention_mask", "label"})."""
    if isinstance(split, Split):
        return {"image": split.images, "label": split.labels}
    return dict(split)


def num_rows(fields: Arrays) -> int:
    """Examples in a dict of per-example arrays."""
    return len(next(iter(fields.values())))


def train_batches(
    split: Split | Arrays,
    *,
    seed: int,
    batch_size: int,
    start_step: int,
    stop_step: int,
    prefetch: int = 2,
    mesh: Mesh | None = None,
) -> Iterator[tuple[int, dict[str, jax.Array]]]:
    """Yields (step, {"image": uint8 [B,H,W,C], "label": int32 [B]}) on device, start..stop-1
    (for a dict split, its arrays' rows).

    With a `mesh`, each batch is a global array split over its devices, and each host gathers
    only its devices' rows (`earlyjax.parallel.global_batch`); an epoch's smaller last batch
    whose size the device count does not divide is replicated instead, so every device
    computes that one step on the whole batch (same result, no example dropped or padded).
    Without a mesh it goes to the default device. A background thread gathers and transfers
    the next `prefetch` batches while the device runs the current step, so the accelerator
    does not wait on the host.
    """
    fields = batch_fields(split)
    num_examples = num_rows(fields)
    steps_per_epoch(num_examples, batch_size)  # validates batch_size early

    def to_device(step: int) -> dict[str, jax.Array]:
        idx = batch_indices(seed, step, num_examples, batch_size)
        if mesh is not None and len(idx) % mesh.size:
            return put_replicated({k: v[idx] for k, v in fields.items()}, mesh)
        if mesh is not None:
            return global_batch(fields, mesh, rows=idx)
        return {k: jax.device_put(v[idx]) for k, v in fields.items()}

    if prefetch < 1:
        yield from ((s, to_device(s)) for s in range(start_step, stop_step))
        return
    buffer: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def producer():
        try:
            for s in range(start_step, stop_step):
                item = (s, to_device(s))
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as e:  # surfaced in the consumer
            buffer.put(e)
        buffer.put(None)

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    try:
        while (item := buffer.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def eval_batches(split: Split | Arrays, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Fixed-size batches over a whole split; the last one is zero-padded with `mask` = 0.

    Fixed shapes mean the jitted evaluation compiles once per input shape.
    """
    fields = batch_fields(split)
    n = num_rows(fields)
    for start in range(0, n, batch_size):
        batch = {k: v[start : start + batch_size] for k, v in fields.items()}
        pad = batch_size - num_rows(batch)
        batch["mask"] = np.concatenate([np.ones(batch_size - pad, np.float32),
                                        np.zeros(pad, np.float32)])  # fmt: skip
        if pad:
            batch = {
                k: v if k == "mask" else np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)])
                for k, v in batch.items()
            }
        yield batch


def evaluate(sums, params, model_state, split: Split | Arrays, batch_size: int, mesh=None) -> dict:
    """Accuracy (%) and mean loss over a whole split, from a jitted
    `sums(params, model_state, batch) -> (correct, summed loss, count)` per padded batch."""
    totals = []
    for batch in eval_batches(split, batch_size):
        if mesh is not None:
            batch = global_batch(batch, mesh)
        totals.append(sums(params, model_state, batch))
    correct, loss, count = (float(sum(x)) for x in zip(*totals, strict=True))
    return {"accuracy": 100.0 * correct / count, "loss": loss / count}


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std float32 [C] of uint8 images scaled to [0, 1]."""
    x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return x.mean(0).astype(np.float32), np.maximum(x.std(0), 1e-3).astype(np.float32)


def normalize(images: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """uint8 or float [N,H,W,C] pixels in 0..255 -> float32 standardised per channel."""
    return (images.astype(jnp.float32) / 255.0 - mean) / std


def random_crop_flip(key: jax.Array, images: jax.Array, pad: int = CIFAR_PAD) -> jax.Array:
    """CIFAR augmentation on device, vectorised over the batch.

    Zero-pads by `pad` pixels (PyTorch `RandomCrop(32, padding=4)` pads raw pixels with 0),
    crops a random window of the original size and flips horizontally with probability 1/2.
    images: [N, H, W, C] (any dtype); returns the same shape and dtype.
    """
    n, h, w, c = images.shape
    crop_key, flip_key = jax.random.split(key)
    offsets = jax.random.randint(crop_key, (n, 2), 0, 2 * pad + 1)
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))

    cropped = jax.vmap(crop)(padded, offsets)
    flip = jax.random.bernoulli(flip_key, 0.5, (n, 1, 1, 1))
    return jnp.where(flip, cropped[:, :, ::-1, :], cropped)


METRIC_SET_SIZE = 2048  # the paper's metric set (App. B), as Andriushchenko et al.
METRIC_BATCH_SIZE = 256


def metric_set(
    split: Split | Arrays, size: int = METRIC_SET_SIZE, batch_size: int = METRIC_BATCH_SIZE
) -> dict[str, np.ndarray]:
    """The first `size` training examples, un-augmented, as batches with a leading batch axis.

    Returns {"image": uint8 [size // batch_size, batch_size, H, W, C], "label": int32 [...]},
    the `batches` argument of the functions in `earlyjax.metrics`. The same examples for every
    step and run, so metric curves are comparable. Raises ValueError if the split is smaller.
    """
    fields = batch_fields(split)
    n = num_rows(fields)
    if size > n or size % batch_size:
        raise ValueError(
            f"metric set of {size} examples in batches of {batch_size}: needs a multiple of the "
            f"batch size and at most the {n} training examples; lower the metric set size"
        )
    shape = (size // batch_size, batch_size)
    return {k: v[:size].reshape(*shape, *v.shape[1:]) for k, v in fields.items()}
