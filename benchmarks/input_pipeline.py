"""Input pipeline throughput with CIFAR augmentation vs the train step that consumes it.

Measures, on CIFAR-shaped data (uint8 [N, 32, 32, 3], synthetic), in one process:
  host     the host side of `train_batches`: shuffled-index gather + transfer to the device,
  augment  pad-4 random crop + flip + normalisation on the device (jitted, vectorised),
  pipeline both together, as the training loop feeds a step,
  step     the ResNet-18 train step (`earlyjax.train.train_step`, augmentation inside).
The pipeline keeps the device fed when its images/s is well above the step's (ratio > 1);
`train_batches` prefetches in a background thread, so host time overlaps device time.

    python benchmarks/input_pipeline.py                # ResNet-18 width 16 on CPU
    python benchmarks/input_pipeline.py --width 64     # the paper's width, e.g. on a GPU
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from earlyjax.config import default_config
from earlyjax.data.base import Dataset, Split
from earlyjax.data.pipeline import normalize, random_crop_flip, train_batches
from earlyjax.train import make_train_step, setup


def seconds_per_batch(fn, n: int) -> float:
    fn(0)  # warm-up / compile
    t = time.perf_counter()
    out = None
    for i in range(1, n + 1):
        out = fn(i)
    jax.block_until_ready(out)
    return (time.perf_counter() - t) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--examples", type=int, default=20000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batches", type=int, default=50, help="timed batches (pipeline parts)")
    p.add_argument("--steps", type=int, default=10, help="timed train steps")
    args = p.parse_args()

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.examples, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.examples, dtype=np.int32)
    split = Split(images, labels)
    b, n = args.batch, args.batches
    mean = jnp.asarray(images[:1000].reshape(-1, 3).mean(0) / 255, jnp.float32)
    std = jnp.asarray(images[:1000].reshape(-1, 3).std(0) / 255, jnp.float32)

    def host(i):
        batches = train_batches(
            split, seed=0, batch_size=b, start_step=i, stop_step=i + 1, prefetch=0
        )
        return next(batches)[1]

    augment = jax.jit(lambda key, x: normalize(random_crop_flip(key, x), mean, std))
    fixed = host(0)
    key = jax.random.key(0)

    def device(i):
        return augment(jax.random.fold_in(key, i), fixed["image"])

    def both(i):
        return augment(jax.random.fold_in(key, i), host(i)["image"])

    t_host = seconds_per_batch(host, n)
    t_aug = seconds_per_batch(device, n)
    t_both = seconds_per_batch(both, n)

    config = default_config()
    config.model.width = args.width
    config.batch_size = b
    config.unfreeze.k = 100
    config.total_steps = 10_000  # the schedule ends inside the (notional) run
    config.data.augment = True
    dataset = Dataset("synthetic-cifar", 10, split, split, {})
    run_setup, state = setup(config, dataset)
    step = make_train_step(run_setup, state)
    holder = {"state": state}

    def train(i):
        holder["state"], stats = step(holder["state"], fixed)
        return stats

    t_step = seconds_per_batch(train, args.steps)

    print(
        f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}); batch {b} of "
        f"32x32x3 uint8; ResNet-18 width {args.width}"
    )
    rows = [
        ("host: gather + transfer", t_host),
        ("device: crop + flip + normalise", t_aug),
        ("pipeline: host + device", t_both),
        ("train step (with augmentation)", t_step),
    ]
    for name, sec in rows:
        print(f"{name:<34} {b / sec:12.0f} images/s  {1000 * sec:9.3f} ms/batch")
    print(
        f"pipeline / train step throughput ratio: {t_step / t_both:.1f}x "
        "(> 1: the step, not the input, limits training)"
    )


if __name__ == "__main__":
    main()
