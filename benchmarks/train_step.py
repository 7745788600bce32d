"""Throughput of our train step with gradual unfreezing vs a plain `optax.sgd` step.

Both steps are the same jitted function (`earlyjax.train.train_step`) on the same ResNet-18,
batch and state; only the optimizer differs: ours is the gated per-block PyTorch SGD of
`earlyjax.interventions.build_optimizer`, the baseline `optax.sgd(lr, momentum)` after
`optax.add_decayed_weights` (the same arithmetic, no gates). Ours is timed at two points of the
schedule: mid-way (head, layer4 and layer3 trainable; the gates skip the optimizer's work for
the frozen blocks) and after the last release (every gate open: the machinery's full cost).
Timed rounds alternate between the steps so that machine noise hits them alike, and each
step's fastest round is reported (the least disturbed by other processes).

    python benchmarks/train_step.py                 # ResNet-18 width 64, batch 128, 32x32x3
    python benchmarks/train_step.py --width 16 --rounds 3
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from earlyjax import freezing
from earlyjax.config import default_config
from earlyjax.data.base import synthetic_dataset
from earlyjax.train import make_train_step, setup


def time_steps(step, state, batch, n: int):
    """Seconds per step over n steps (after the state is ready), and the final state."""
    jax.block_until_ready(state)
    t = time.perf_counter()
    for _ in range(n):
        state, stats = step(state, batch)
    jax.block_until_ready((state, stats))
    return (time.perf_counter() - t) / n, state


def fastest_rounds(copies: dict, batch, steps: int, rounds: int) -> dict[str, float]:
    """{name: seconds per step of the fastest of `rounds` rounds of `steps` steps} for each
    (jitted step, state) in `copies`. Each is compiled and warmed up first on a copy of its
    state (the steps donate theirs); the rounds alternate between them."""
    states = {}
    for name, (step, state) in copies.items():
        _, states[name] = time_steps(step, jax.tree.map(jnp.copy, state), batch, 2)
    times: dict[str, list[float]] = {name: [] for name in copies}
    for _ in range(rounds):
        for name, (step, _) in copies.items():
            sec, states[name] = time_steps(step, states[name], batch, steps)
            times[name].append(sec)
    return {name: min(ts) for name, ts in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--steps", type=int, default=5, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()

    config = default_config()
    config.model.width = args.width
    config.batch_size = args.batch
    config.optimizer.lr = 0.01
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-4
    config.unfreeze.k = 1000
    config.total_steps = 10_000  # the schedule ends inside the (notional) run
    data = synthetic_dataset((args.image_size, args.image_size, args.channels), 10, args.batch)
    batch = {"image": jnp.asarray(data.train.images), "label": jnp.asarray(data.train.labels)}

    run_setup, state = setup(config, data)
    num_blocks = len(run_setup.task.blocks)
    # Mid-schedule: release steps k(L-j)-1 put us past layer3's release at step 2000.
    mid = state._replace(step=jnp.asarray(2500, jnp.int32))
    released = mid._replace(
        opt_state=freezing.set_release_steps(mid.opt_state, np.zeros(num_blocks + 1, np.int32))
    )
    ours = make_train_step(run_setup, state)

    plain_opt = optax.chain(
        optax.add_decayed_weights(config.optimizer.weight_decay),
        optax.sgd(config.optimizer.lr, momentum=config.optimizer.momentum),
    )
    plain_state = state._replace(opt_state=plain_opt.init(state.params))
    plain = make_train_step(run_setup._replace(optimizer=plain_opt), plain_state)

    print(
        f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}), "
        f"{len(jax.devices())} device(s); ResNet-18 width {args.width}, batch {args.batch}, "
        f"{args.image_size}x{args.image_size}x{args.channels}"
    )
    copies = {
        "plain optax.sgd": (plain, plain_state),
        "ours, mid-schedule (3 of 6 groups trainable)": (ours, mid),
        "ours, all released (every gate open)": (ours, released),
    }
    fastest = fastest_rounds(copies, batch, args.steps, args.rounds)
    base = fastest["plain optax.sgd"]
    for name, sec in fastest.items():
        print(
            f"{name:<46} {args.batch / sec:10.1f} images/s   "
            f"{1000 * sec:8.1f} ms/step   ratio to plain {base / sec:.3f}"
        )
    print("(ratio = plain step time / this step time; 1.0 = no cost, > 0.95 meets the goal)")


if __name__ == "__main__":
    main()
