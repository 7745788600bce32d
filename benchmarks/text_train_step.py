"""XLM-R + LoRA: train-step throughput with gradual unfreezing vs plain `optax.adamw`, and
the cost of recording the early-period metrics as a share of training.

The NLI task of `experiments/configs/quickstart_nli.py` (a random XLM-R with LoRA on query and
value, the backbone frozen, on `earlyjax.data.synthetic_nli`), built by `earlyjax.train.setup`:

1. Train steps. All are the same jitted `earlyjax.train.train_step` on the same params, batch
   and backbone; only the optimizer differs: ours is the gated per-layer PyTorch AdamW of
   `earlyjax.interventions.build_optimizer` (name "adamw", the config's linear schedule), the
   baseline `optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=wd)` with the same linear
   schedule (the same arithmetic, no gates). Ours is timed mid-schedule (about half of the
   LoRA layers released) and after the last release (every gate open). Tokens/s counts
   batch * max_length tokens per step, padding included (the synthetic pairs hold 13 real
   tokens; longer --max-length pads them).
2. Recording. One recording of tr(F), S_avg and S_worst by the recorder the trainer builds
   (`earlyjax.recording.make_recorder` on the run plan's `RecordPlan`), timed warm, and each
   metric alone; from those, the share of a run's time spent recording while it records,
   record / (record + 10 * step) with ours mid-schedule as the step, under the quickstart's
   protocol (every 10 steps, at the measured settings) and the paper's for MNLI (every 10
   steps on 2048 points in batches of 256, S_avg 15 samples, S_worst 20 Auto-PGD iterations),
   the latter extrapolated linearly in points and iterations from the per-metric times unless
   the measured settings are the paper's (as with --paper-size).

Timed rounds alternate between the steps so that machine noise hits them alike, and each
step's fastest round is reported (the least disturbed by other processes on a shared machine).
The model sizes that `TextClassification.build` does not take from the config (attention
heads, intermediate size, sequence length: it builds 4 heads, 2 * width and the data's 16
tokens) are set here by rebuilding the task's model and padding its data. The vocabulary
stays the synthetic one (127 tokens), also with --paper-size: the frozen embedding table is
only gathered from, so XLM-R's 250002 rows would add memory, not work.

    python benchmarks/text_train_step.py              # width 32, 4 layers, batch 64, 16 tokens
    python benchmarks/text_train_step.py --width 64 --layers 6 --rounds 3
    python benchmarks/text_train_step.py --paper-size  # XLM-R base sizes: for a GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from train_step import fastest_rounds  # benchmarks/train_step.py, beside this file

from earlyjax import freezing
from earlyjax.data import synthetic_nli
from earlyjax.recording import make_recorder
from earlyjax.train import make_train_step, setup
from experiments.configs import quickstart_nli

# The paper's recording protocol for MNLI (§4, App. A), and XLM-R base's sizes.
PAPER_RECORD = {"every": 10, "set_size": 2048, "batch_size": 256, "avg_samples": 15,
                "worst_iters": 20}  # fmt: skip
PAPER_SIZE = {"width": 768, "layers": 12, "heads": 12, "intermediate": 3072, "max_length": 128,
              "batch": 128}  # fmt: skip
DEFAULTS = {"width": 32, "layers": 4, "heads": 4, "intermediate": None, "max_length": 16,
            "batch": 64, "record_set_size": 256, "record_batch_size": 128, "avg_samples": 5,
            "worst_iters": 5}  # fmt: skip
METRICS = ("fisher", "avg_sharpness", "worst_sharpness")


def time_recorder(recorder, state, rounds: int) -> float:
    """Fastest of `rounds` warm recordings, in seconds (after one compiling call)."""
    recorder(state)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        recorder(state)  # returns Python floats: the work is done
        times.append(time.perf_counter() - t)
    return min(times)


def pad_split(split: dict, length: int, pad_id: int) -> dict:
    """The split's token arrays padded on the right to `length` (mask 0, the pad token)."""
    extra = length - split["input_ids"].shape[1]
    out = dict(split)
    out["input_ids"] = np.pad(split["input_ids"], ((0, 0), (0, extra)), constant_values=pad_id)
    out["attention_mask"] = np.pad(split["attention_mask"], ((0, 0), (0, extra)))
    return out


def resize_task(task, heads: int, intermediate: int, max_length: int):
    """The task with its model's heads, intermediate size and sequence length replaced (the
    data padded to `max_length`), or the task itself when they are what `build` made."""
    c = task.model.config
    length = task.train["input_ids"].shape[1]
    if (heads, intermediate, max_length) == (c.num_attention_heads, c.intermediate_size, length):
        return task
    config = dataclasses.replace(
        c,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max(c.max_position_embeddings, max_length + 2),
    )
    model = dataclasses.replace(task.model, config=config)
    pad = c.pad_token_id
    return dataclasses.replace(
        task,
        model=model,
        train=pad_split(task.train, max_length, pad),
        test=pad_split(task.test, max_length, pad),
        ood={lang: pad_split(s, max_length, pad) for lang, s in task.ood.items()},
    )


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--paper-size",
        action="store_true",
        help="XLM-R base sizes (hidden 768, 12 layers, 12 heads, intermediate 3072), "
        "128 tokens, batch 128, and the paper's recording settings: for a GPU",
    )
    p.add_argument("--width", type=int, help="hidden size (default 32)")
    p.add_argument("--layers", type=int, help="transformer layers (default 4)")
    p.add_argument("--heads", type=int, help="attention heads (default 4)")
    p.add_argument("--intermediate", type=int, help="feed-forward size (default 2 * width)")
    p.add_argument("--batch", type=int, help="sentence pairs per step (default 64)")
    p.add_argument(
        "--max-length",
        type=int,
        help=f"tokens per pair, >= {synthetic_nli.MAX_LENGTH} (the data's; default "
        f"{synthetic_nli.MAX_LENGTH}); longer pads",
    )
    p.add_argument("--record-set-size", type=int, help="metric set points (default 256)")
    p.add_argument("--record-batch-size", type=int, help="metric set batch (default 128)")
    p.add_argument("--avg-samples", type=int, help="S_avg perturbations (default 5)")
    p.add_argument("--worst-iters", type=int, help="S_worst Auto-PGD iterations (default 5)")
    p.add_argument("--steps", type=int, default=20, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--record-rounds", type=int, default=2, help="timed recordings (fastest)")
    args = p.parse_args()
    defaults = dict(DEFAULTS)
    if args.paper_size:
        defaults.update(PAPER_SIZE)
        defaults.update(
            record_set_size=PAPER_RECORD["set_size"],
            record_batch_size=PAPER_RECORD["batch_size"],
            avg_samples=PAPER_RECORD["avg_samples"],
            worst_iters=PAPER_RECORD["worst_iters"],
        )
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.intermediate is None:
        args.intermediate = 2 * args.width
    if args.width % args.heads:
        p.error(f"--width {args.width} must be a multiple of --heads {args.heads}")
    if args.max_length < synthetic_nli.MAX_LENGTH:
        p.error(f"--max-length must be >= {synthetic_nli.MAX_LENGTH}, the synthetic pairs' length")
    return args


def main() -> None:
    args = parse_args()
    config = quickstart_nli.get_config()
    config.model.width = args.width
    config.model.layers = args.layers
    config.data.max_length = args.max_length  # synthetic_nli ignores it: resize_task pads
    config.batch_size = args.batch
    config.record.set_size = args.record_set_size
    config.record.batch_size = args.record_batch_size
    config.record.avg_samples = args.avg_samples
    config.record.worst_iters = args.worst_iters
    config.record.metrics = METRICS
    num_blocks = args.layers - 1  # the last layer's adapters train with the head (App. A)
    k = 1000
    config.unfreeze.k = k
    config.total_steps = k * num_blocks + k  # the schedule ends inside the (notional) run
    config.record.until = config.total_steps

    run_setup, state = setup(config)
    task = resize_task(run_setup.task, args.heads, args.intermediate, args.max_length)
    if task is not run_setup.task:  # new shapes, the same trees: setup's optimizer still fits
        run_setup = run_setup._replace(task=task)
        init_key, _ = jax.random.split(jax.random.key(run_setup.plan.seed))
        params, backbone = task.init(init_key)
        state = state._replace(
            params=params, model_state=backbone, opt_state=run_setup.optimizer.init(params)
        )
    plan = run_setup.plan
    unfreezing = plan.gradual_unfreezing
    batch = {name: jnp.asarray(a[: args.batch]) for name, a in task.train.items()}
    tokens = args.batch * args.max_length
    real = float(np.mean(task.train["attention_mask"][: args.batch]))

    # Mid-schedule: block j is released at step k(L - j) - 1, so this step has L // 2 released.
    mid_step = k * (num_blocks // 2) + k // 2
    mid = state._replace(step=jnp.asarray(mid_step, jnp.int32))
    released = mid._replace(
        opt_state=freezing.set_release_steps(mid.opt_state, np.zeros(num_blocks + 1, np.int32))
    )
    schedule = np.asarray(freezing.get_release_steps(mid.opt_state))
    trainable = len(unfreezing.trainable(schedule, mid_step))
    record_state = jax.tree.map(jnp.copy, mid)  # the train steps donate theirs
    ours = make_train_step(run_setup, state)

    lr = plan.lr
    if plan.lr_schedule == "linear":
        lr = optax.linear_schedule(plan.lr, 0.0, plan.num_steps)
    plain_opt = optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=plan.weight_decay)
    plain_state = state._replace(opt_state=plain_opt.init(state.params))
    plain = make_train_step(run_setup._replace(optimizer=plain_opt), plain_state)

    c = task.model.config
    print(
        f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}), "
        f"{len(jax.devices())} device(s); XLM-R + LoRA r {config.model.lora_r}: hidden "
        f"{c.hidden_size}, {c.num_hidden_layers} layers, {c.num_attention_heads} heads, "
        f"intermediate {c.intermediate_size}, vocab {c.vocab_size} (synthetic); batch "
        f"{args.batch} x {args.max_length} tokens = {tokens} tokens/step, padding counted "
        f"({100 * real:.0f}% real tokens)"
    )
    print()
    groups = num_blocks + 1
    copies = {
        "plain optax.adamw": (plain, plain_state),
        f"ours, mid-schedule ({trainable} of {groups} groups trainable)": (ours, mid),
        "ours, all released (every gate open)": (ours, released),
    }
    fastest = fastest_rounds(copies, batch, args.steps, args.rounds)
    base = fastest["plain optax.adamw"]
    print("| step | tokens/s | ms/step | ratio to plain |")
    print("|---|---:|---:|---:|")
    for name, sec in fastest.items():
        print(f"| {name} | {tokens / sec:,.0f} | {1000 * sec:.2f} | {base / sec:.3f} |")
    print(
        f"(fastest of {args.rounds} rounds of {args.steps} steps; ratio = plain step time / "
        "this step time, 1.0 = the gates cost nothing)"
    )

    # Recording: the trainer's recorder (earlyjax.train.periodic_actions), then each metric.
    record = plan.record
    step_sec = fastest[next(n for n in copies if n.startswith("ours, mid"))]
    rec_sec = time_recorder(
        make_recorder(task, record, unfreezing, mesh=None), record_state, args.record_rounds
    )
    alone = {
        m: time_recorder(
            make_recorder(task, dataclasses.replace(record, metrics=(m,)), unfreezing, None),
            record_state,
            args.record_rounds,
        )
        for m in METRICS
    }
    every = config.record.every
    paper = PAPER_RECORD
    points = paper["set_size"] / record.set_size
    scale = {
        "fisher": points,
        "avg_sharpness": points * paper["avg_samples"] / record.avg_samples,
        "worst_sharpness": points * paper["worst_iters"] / record.worst_iters,
    }
    measured_is_paper = all(s == 1 for s in scale.values())
    paper_sec = rec_sec if measured_is_paper else sum(alone[m] * scale[m] for m in METRICS)

    def share(sec: float) -> float:
        return sec / (sec + every * step_sec)

    print()
    print(
        f"Recording tr(F), S_avg, S_worst on {record.set_size} points in batches of "
        f"{record.batch_size} (S_avg {record.avg_samples} samples, S_worst {record.worst_iters} "
        f"Auto-PGD iterations), warm, fastest of {args.record_rounds}:"
    )
    print(f"  seconds per recording   {rec_sec:.3f}")
    for m in METRICS:
        print(f"    {m + ' alone':<22}{alone[m]:.3f}")
    print(f"  seconds per train step  {step_sec:.4f} (ours, mid-schedule)")
    print("Share of a run's time spent recording, record / (record + 10 * step), while it records:")
    print(
        f"  (a) quickstart protocol (every {every} steps, the settings above): "
        f"{100 * share(rec_sec):.1f}%"
    )
    how = (
        "measured (these are the paper's settings)"
        if measured_is_paper
        else "EXTRAPOLATED linearly in points and iterations from the per-metric times above "
        f"(tr(F) x{scale['fisher']:g}, S_avg x{scale['avg_sharpness']:g}, "
        f"S_worst x{scale['worst_sharpness']:g}; per-point cost taken as independent of the "
        "metric batch size), at THIS model size and step time, not XLM-R base's "
        "(--paper-size measures that)"
    )
    print(
        f"  (b) paper's MNLI protocol (every {paper['every']} steps, {paper['set_size']} points in "
        f"batches of {paper['batch_size']}, S_avg {paper['avg_samples']}, S_worst "
        f"{paper['worst_iters']}): {paper_sec:.3f} s per recording, "
        f"{100 * share(paper_sec):.1f}% -- {how}"
    )


if __name__ == "__main__":
    main()
