"""Data-parallel scaling: train-step images/s on 1, 2, 4, ... devices, in one process.

The step is `earlyjax.train.make_train_step` with a mesh of the first n devices
(`earlyjax.parallel.data_mesh(n)`): the same global batch split n ways, the state replicated.
Printed per device count: images/s, the speed-up over 1 device, and the scaling efficiency
(speed-up / n). Optionally the same for tr(F) on the metric set (`--fisher`).

On a CPU with one device the script re-runs itself with
`XLA_FLAGS=--xla_force_host_platform_device_count=4`: those "devices" share the host's cores,
so the figures there only show that the plumbing works, not real scaling.

    python benchmarks/scaling.py                       # every power of 2 up to all devices
    python benchmarks/scaling.py --width 8 --batch 64 --steps 3     # CPU-sized
    python benchmarks/scaling.py --width 64 --batch 512 --fisher    # on a multi-GPU box
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

FORCED = "--xla_force_host_platform_device_count=4"


def device_counts(total: int) -> list[int]:
    counts, n = [], 1
    while n <= total:
        counts.append(n)
        n *= 2
    return counts if counts[-1] == total else [*counts, total]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch", type=int, default=128, help="global batch, split over the devices")
    p.add_argument("--steps", type=int, default=5, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--fisher", action="store_true", help="also time tr(F) on 512 points")
    args = p.parse_args()

    import jax

    if (
        jax.default_backend() == "cpu"
        and jax.device_count() == 1
        and FORCED not in os.environ.get("XLA_FLAGS", "")
    ):
        env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + FORCED))
        sys.exit(subprocess.call([sys.executable, *sys.argv], env=env))

    import jax.numpy as jnp

    from earlyjax import parallel
    from earlyjax.config import default_config
    from earlyjax.data.base import synthetic_dataset
    from earlyjax.metrics import fisher_trace
    from earlyjax.train import make_train_step, setup

    config = default_config()
    config.model.width = args.width
    config.batch_size = args.batch
    config.optimizer.momentum = 0.9
    config.unfreeze.k = None
    config.data.augment = True
    data = synthetic_dataset((32, 32, 3), 10, max(args.batch, 512))
    run_setup, state0 = setup(config, data)
    host_batch = {
        "image": data.train.images[: args.batch],
        "label": data.train.labels[: args.batch],
    }
    print(
        f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}), "
        f"{jax.device_count()} device(s); ResNet-18 width {args.width}, global batch {args.batch}"
    )

    rows = []
    for n in device_counts(jax.device_count()):
        if args.batch % n:
            print(f"{n} devices: skipped, batch {args.batch} does not split {n} ways")
            continue
        mesh = parallel.data_mesh(n)
        step = make_train_step(run_setup, state0, mesh=mesh)
        state = parallel.put_replicated(state0, mesh)
        batch = parallel.global_batch(host_batch, mesh)
        state, _ = step(state, batch)  # compile
        best = float("inf")
        for _ in range(args.rounds):
            jax.block_until_ready(state)
            t = time.perf_counter()
            for _ in range(args.steps):
                state, stats = step(state, batch)
            jax.block_until_ready((state, stats))
            best = min(best, (time.perf_counter() - t) / args.steps)
        row = {"n": n, "train": args.batch / best}
        if args.fisher:
            x = jnp.asarray(data.train.images[:512], jnp.float32) / 255.0
            stats = state.model_state

            def logits_fn(p, xb, stats=stats):
                model = run_setup.task.model
                return model.apply({"params": p, "batch_stats": stats}, xb, train=False)

            def fisher(mesh=mesh, state=state, x=x, logits_fn=logits_fn):
                return fisher_trace(logits_fn, state.params, x, jax.random.key(0), mesh=mesh)

            jax.block_until_ready(fisher())  # compile
            t = time.perf_counter()
            jax.block_until_ready(fisher())
            row["fisher"] = 512 / (time.perf_counter() - t)
        rows.append(row)

    base = rows[0]
    for r in rows:
        line = f"{r['n']} device(s): train {r['train']:9.1f} images/s"
        speedup = r["train"] / base["train"]
        line += f"  speed-up {speedup:5.2f}  efficiency {speedup / r['n']:6.1%}"
        if "fisher" in r:
            fs = r["fisher"] / base["fisher"]
            line += f"  | tr(F) {r['fisher']:8.1f} points/s  speed-up {fs:5.2f}"
        print(line)
    if jax.default_backend() == "cpu":
        print("(CPU 'devices' share the host's cores: this checks the plumbing, not scaling)")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
