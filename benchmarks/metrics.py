"""Cost of the metrics on ResNet-18 with the paper's metric set, as ratios measured in one run.

The metric set is B batches of n random 32x32x3 inputs (default 8 x 256 = the paper's 2048
points) with random labels; the model is `build_model("resnet18", num_classes=10, width=W)` in
eval mode (BatchNorm running statistics closed over). Every function is compiled once before
it is timed (compile time printed separately), then timed `--repeats` times (best kept).
Printed, each against references measured in the same process:

* tr(F) (Eq. 2, sampled ŷ), per-example norms from the per-layer identities (the default,
  `per_example="layers"`) and from vmap of per-example gradients (`"vmap"`), vs one batched
  forward+backward over the same points (the floor; goal <= 3x), a per-example Python loop of
  a jitted single-example gradient (timed on `--loop-examples` points and extrapolated), and,
  when torch is installed, PyTorch's `torch.func` (vmap of grad) on a PyTorch ResNet-18 of the
  same width and points (`benchmarks/torch_baseline.py`; goal: ours >= 2x faster); the forward
  and forward+backward references take all points as one batch (no loop: on XLA:CPU a
  convolution's weight gradient inside a `lax.scan`/`lax.map` body runs ~20x slower than
  outside a loop, which would flatter every looped computation);
* average sharpness (n_samples perturbations) vs n_samples batched forward passes over the
  points (goal <= 1.3x), with the samples vmapped and one at a time (`samples_per_pass=1`; the
  default `None` picks one at a time on a CPU, vmapped elsewhere);
* worst-case sharpness, per Auto-PGD iteration (total time / (n_iters + 1): the initial
  gradient counts as one), vs one batched forward+backward (goal <= 1.5x), called as a user
  calls it (on a CPU its iterations then run from Python, see `worst_sharpness`); with
  `--worst-in-jit` also inside a caller's `jit` (one `lax.scan`, as the recorder runs it);
* with `--sharpness-repo DIR` (a checkout of tml-epfl/sharpness-vs-generalization) and torch
  installed: Andriushchenko et al.'s own `eval_average_sharpness` and `eval_APGD_sharpness` on
  a PyTorch ResNet-18 of the same width and the same points (goal: ours at least as fast).
  Their weights and noise are not ours, so only the times compare, not the values;
* mixed precision: the forward and forward+backward in bfloat16 against float32, and how far
  bfloat16 moves the loss, against |S_avg| (the loss differences S_avg and S_worst measure);
* memory: XLA's compiled temp + argument + output bytes of each program (reported on every
  backend), and the device's peak bytes in use where JAX reports it (`n/a` on CPU).

    python benchmarks/metrics.py                    # width 8 (CPU-sized), 8 x 256 points
    python benchmarks/metrics.py --width 64         # the paper's ResNet-18, on a GPU
    python benchmarks/metrics.py --width 4 --batches 2 --batch-size 64 --apgd-iters 5
    git clone https://github.com/tml-epfl/sharpness-vs-generalization /tmp/svg
    python benchmarks/metrics.py --sharpness-repo /tmp/svg    # + their S_avg and S_worst

`--apgd-variants mlp|resnet18` instead prints S_worst of each Auto-PGD variant of
`worst_sharpness` against the default (Andriushchenko et al.'s algorithm), the numbers quoted in
its docstring:

    python benchmarks/metrics.py --apgd-variants mlp --rho 0.01 0.05    # ~2 min on 2 CPU cores
    python benchmarks/metrics.py --apgd-variants resnet18 --width 4 --seeds 2   # ~5 min

`--apgd-warm-start mlp|resnet18` compares S_worst warm-started from the previous recording's δ
(`worst_sharpness(init=...)`) with fewer iterations against the cold start, every
`--record-every` steps of training:

    python benchmarks/metrics.py --apgd-warm-start resnet18 --width 4 --seeds 2
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from earlyjax.metrics import average_sharpness, fisher_trace, worst_sharpness
from earlyjax.models import build_model


def compile_and_time(fn: Callable, args: tuple, repeats: int) -> tuple[float, float, object, str]:
    """(best seconds per call, compile seconds, last output, memory text) of jit(fn)(*args)."""
    t = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t
    out = jax.block_until_ready(compiled(*args))  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - t)
    return best, compile_s, out, memory_text(compiled)


def time_calls(fn: Callable, args: tuple, repeats: int) -> tuple[float, float, object]:
    """(best seconds per call, first call's seconds, last output) of fn(*args) called as is."""
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))  # compiles
    first = time.perf_counter() - t
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    return best, first, out


def memory_text(compiled) -> str:
    analysis = compiled.memory_analysis()
    if analysis is None:
        compiled_mb = "n/a"
    else:
        total = (
            analysis.temp_size_in_bytes
            + analysis.argument_size_in_bytes
            + analysis.output_size_in_bytes
        )
        compiled_mb = f"{total / 2**20:.0f} MiB"
    stats = jax.devices()[0].memory_stats()
    peak = "n/a" if not stats or "peak_bytes_in_use" not in stats else stats["peak_bytes_in_use"]
    peak = peak if peak == "n/a" else f"{peak / 2**20:.0f} MiB"
    return f"compiled program {compiled_mb}, device peak so far {peak}"


APGD_COMBOS = (
    ("reference", "ellipsoid"),  # the default: Andriushchenko et al.'s code
    ("croce_hein", "ellipsoid"),
    ("reference", "scaled"),
    ("croce_hein", "scaled"),
)


class BNMLP(nn.Module):
    """20 -> 32 -> 32 -> 10 with BatchNorm after each hidden layer."""

    @nn.compact
    def __call__(self, x, train: bool):
        for _ in range(2):
            x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Dense(32)(x)))
        return nn.Dense(10)(x)


def trained_states(kind: str, width: int, seed: int, steps: set[int]):
    """Yields (step, loss_fn, full, metric batches, trainable mask) at each of `steps`.

    Learnable synthetic data (10 class templates + N(0, 1.5²) noise; 20-dim for the BN-MLP,
    28x28x1 images for ResNet-18 at `width`), trained by SGD (lr 0.05, momentum 0.9, batch
    128, train-mode BN); the metric set is 4 x 64 (MLP) / 2 x 32 (ResNet) held-out points,
    evaluated with eval-mode BN (the running statistics ride along as frozen leaves).
    """
    if kind == "mlp":
        model, shape, n_b, bs = BNMLP(), (20,), 4, 64
    else:
        model, _ = build_model("resnet18", num_classes=10, width=width)
        shape, n_b, bs = (28, 28, 1), 2, 32
    tx = optax.sgd(0.05, momentum=0.9)

    def ce(logits, y):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=-1))

    def loss_fn(full, batch):
        x, y = batch
        return ce(model.apply({"params": full["p"], "batch_stats": full["bs"]}, x, train=False), y)

    @jax.jit
    def train_step(p, bs_, opt_state, x, y):
        def f(q):
            v = {"params": q, "batch_stats": bs_}
            logits, upd = model.apply(v, x, train=True, mutable=["batch_stats"])
            return ce(logits, y), upd["batch_stats"]

        (_, bs_), g = jax.value_and_grad(f, has_aux=True)(p)
        updates, opt_state = tx.update(g, opt_state, p)
        return optax.apply_updates(p, updates), bs_, opt_state

    kt, kx, ky, ki = jax.random.split(jax.random.key(seed), 4)
    n_metric = n_b * bs
    y = jax.random.randint(ky, (n_metric + 16 * 128,), 0, 10)
    x = jax.random.normal(kt, (10, *shape))[y] + 1.5 * jax.random.normal(kx, (*y.shape, *shape))
    metric = (x[:n_metric].reshape(n_b, bs, *shape), y[:n_metric].reshape(n_b, bs))
    v = model.init(ki, x[:2], train=False)
    p, bs_ = v["params"], v["batch_stats"]
    opt_state = tx.init(p)
    for step in range(max(steps) + 1):
        if step in steps:
            full = {"p": p, "bs": bs_}
            mask = {"p": jax.tree.map(lambda _: True, p), "bs": jax.tree.map(lambda _: False, bs_)}
            yield step, loss_fn, full, metric, mask
        i = n_metric + (step % 16) * 128
        p, bs_, opt_state = train_step(p, bs_, opt_state, x[i : i + 128], y[i : i + 128])


def apgd_variants(args) -> None:
    """S_worst (rho, 20 iterations, adaptive, eval-mode BN) of every variant vs the default,
    per seed at initialisation (step 0: BN and dense biases exactly 0) and after 200 (MLP) /
    100 (ResNet) training steps (`trained_states`)."""
    train_steps = 200 if args.apgd_variants == "mlp" else 100
    key = jax.random.key(0)  # unused: zero start
    for rho in args.rho:
        for seed in range(args.seeds):
            states = trained_states(args.apgd_variants, args.width, seed, {0, train_steps})
            for step, loss_fn, full, metric, mask in states:
                vals = [
                    float(
                        worst_sharpness(
                            loss_fn, full, metric, key, rho=rho, n_iters=args.apgd_iters,
                            trainable=mask, variant=variant, geometry=geometry,
                        )[0]
                    )
                    for variant, geometry in APGD_COMBOS
                ]  # fmt: skip
                rel = "  ".join(
                    f"{var}/{geo} {val:.5g} ({(val - vals[0]) / vals[0]:+.1%})"
                    for (var, geo), val in zip(APGD_COMBOS[1:], vals[1:], strict=True)
                )
                print(
                    f"rho={rho} seed={seed} step={step}: default {vals[0]:.5g}  {rel}", flush=True
                )


WARM_ITERS = (2, 5, 10, 20)


def apgd_warm_start(args) -> None:
    """S_worst warm-started from the previous recording's δ (`worst_sharpness(init=...)`) with
    fewer iterations, against the cold start with `--apgd-iters`, at every recording of the
    paper's protocol scaled down: every `--record-every` steps from 0 to `--record-until`,
    per seed; each warm chain starts cold at step 0 and then starts from its own last δ."""
    key = jax.random.key(0)
    steps = set(range(0, args.record_until + 1, args.record_every))
    rel = {k: [] for k in WARM_ITERS}
    for seed in range(args.seeds):
        warm_delta = dict.fromkeys(WARM_ITERS)
        for step, loss_fn, full, metric, mask in trained_states(
            args.apgd_warm_start, args.width, seed, steps
        ):
            kw = {"rho": args.rho[0], "trainable": mask}
            cold = float(worst_sharpness(loss_fn, full, metric, key, n_iters=args.apgd_iters,
                                         **kw)[0])  # fmt: skip
            line = []
            for k in WARM_ITERS:
                init = warm_delta[k]
                n = args.apgd_iters if init is None else k
                value, warm_delta[k] = worst_sharpness(
                    loss_fn, full, metric, key, n_iters=n, init=init, **kw
                )
                if init is not None and cold > 0:
                    rel[k].append((float(value) - cold) / cold)
                    line.append(f"warm {k}: {float(value):.5g} ({rel[k][-1]:+.1%})")
            print(f"seed={seed} step={step}: cold {cold:.5g}  " + "  ".join(line), flush=True)
    print(f"(warm - cold) / cold over {len(rel[WARM_ITERS[0]])} recordings (step 0 excluded):")
    for k, r in rel.items():
        if not r:
            print("  no recording after the first (raise --record-until)")
            break
        r = np.asarray(r)
        print(
            f"  warm start, {k:2d} iterations ({(k + 1) / (args.apgd_iters + 1):.2f}x the "
            "cold forward+backward passes, + 1 forward): "
            f"median {np.median(r):+.2%}, range {r.min():+.2%} .. {r.max():+.2%}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--width", type=int, default=8, help="ResNet-18 width (64 = the paper's)")
    p.add_argument("--batches", type=int, default=8, help="metric batches B")
    p.add_argument("--batch-size", type=int, default=256, help="points per metric batch")
    p.add_argument("--n-samples", type=int, default=15, help="average-sharpness perturbations")
    p.add_argument("--apgd-iters", type=int, default=20, help="Auto-PGD iterations")
    p.add_argument("--chunk-size", type=int, default=None, help="fisher_trace chunk_size")
    p.add_argument("--loop-examples", type=int, default=16, help="points timed in the loop")
    p.add_argument("--torch-chunk", type=int, default=64, help="torch.func points per vmap")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--worst-in-jit",
        action="store_true",
        help="also time worst_sharpness inside jit (lax.scan; slow on a CPU)",
    )
    p.add_argument(
        "--sharpness-repo",
        default=None,
        help="checkout of tml-epfl/sharpness-vs-generalization: time their code too",
    )
    p.add_argument("--apgd-variants", choices=("mlp", "resnet18"), default=None,
                   help="compare the Auto-PGD variants' S_worst instead of timing")  # fmt: skip
    p.add_argument("--seeds", type=int, default=5, help="seeds (--apgd-variants)")
    p.add_argument("--rho", type=float, nargs="+", default=[0.01], help="radii (--apgd-variants)")
    p.add_argument("--apgd-warm-start", choices=("mlp", "resnet18"), default=None,
                   help="compare S_worst warm-started from the previous recording's delta with "
                        "the cold start instead of timing")  # fmt: skip
    p.add_argument("--record-every", type=int, default=10, help="(--apgd-warm-start)")
    p.add_argument("--record-until", type=int, default=200, help="(--apgd-warm-start)")
    args = p.parse_args()
    if args.apgd_variants or args.apgd_warm_start:
        print(f"backend: {jax.default_backend()}; {args.apgd_iters} APGD iterations")
        (apgd_variants if args.apgd_variants else apgd_warm_start)(args)
        return

    b, n = args.batches, args.batch_size
    model, _ = build_model("resnet18", num_classes=10, width=args.width)
    kx, ky, kinit = jax.random.split(jax.random.key(0), 3)
    images = jax.random.uniform(kx, (b, n, 32, 32, 3), jnp.float32)
    labels = jax.random.randint(ky, (b, n), 0, 10)
    variables = model.init(kinit, images[0, :2], train=False)
    params, batch_stats = variables["params"], variables["batch_stats"]
    n_params = sum(leaf.size for leaf in jax.tree.leaves(params))
    points = images.reshape(b * n, 32, 32, 3)
    batches = (images, labels)

    def logits_fn(p, x):
        return model.apply({"params": p, "batch_stats": batch_stats}, x, train=False)

    def loss_fn(p, batch):
        x, y = batch
        logp = jax.nn.log_softmax(logits_fn(p, x))
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))

    def forward_all(p, batches):  # one forward pass over all points, as one batch
        x, y = batches
        return loss_fn(p, (x.reshape(-1, *x.shape[2:]), y.reshape(-1)))

    def forward_backward_all(p, batches):  # one forward+backward over all points, as one batch
        return jax.grad(forward_all)(p, batches)

    def forward_bf16(p, batches):  # the same in bfloat16 (logits back to float32 for the loss)
        x, y = batches
        half = functools.partial(jax.tree.map, lambda a: a.astype(jnp.bfloat16))
        variables = {"params": half(p), "batch_stats": half(batch_stats)}
        logits = model.apply(variables, half(x.reshape(-1, *x.shape[2:])), train=False)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32))
        return -jnp.mean(jnp.take_along_axis(logp, y.reshape(-1)[:, None], axis=-1))

    print(
        f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}); ResNet-18 width "
        f"{args.width} ({n_params:,} parameters), {b} x {n} = {b * n} points of 32x32x3, "
        f"eval mode; best of {args.repeats} timed calls after compilation"
    )

    def report(name, seconds, compile_s, memory):
        print(f"  {name:<44} {seconds:9.3f} s   (compile {compile_s:6.1f} s; {memory})")

    key = jax.random.key(1)
    t_fwd, c, _, mem = compile_and_time(forward_all, (params, batches), args.repeats)
    report("batched forward, all points", t_fwd, c, mem)
    t_fb, c, _, mem = compile_and_time(forward_backward_all, (params, batches), args.repeats)
    report("batched forward+backward, all points", t_fb, c, mem)
    t_fwd16, c, loss16, mem = compile_and_time(forward_bf16, (params, batches), args.repeats)
    report("  bfloat16 forward", t_fwd16, c, mem)
    t_fb16, c, _, mem = compile_and_time(jax.grad(forward_bf16), (params, batches), args.repeats)
    report("  bfloat16 forward+backward", t_fb16, c, mem)
    bf16_error = abs(float(loss16) - float(forward_all(params, batches)))

    def fisher(p, x, k, per_example="layers"):
        return fisher_trace(logits_fn, p, x, k, chunk_size=args.chunk_size, per_example=per_example)

    t_fisher, c, tr_f, mem = compile_and_time(fisher, (params, points, key), args.repeats)
    report("fisher_trace (Eq. 2, sampled; layers)", t_fisher, c, mem)
    fisher_vmap = functools.partial(fisher, per_example="vmap")
    t_fisher_vmap, c, tr_f_vmap, mem = compile_and_time(
        fisher_vmap, (params, points, key), args.repeats
    )
    report("  the same, per_example='vmap'", t_fisher_vmap, c, mem)
    assert abs(float(tr_f) - float(tr_f_vmap)) <= 1e-4 * abs(float(tr_f_vmap))

    # The per-example Python loop: a jitted single-example gradient, one call per point.
    @jax.jit
    def one_example(p, xi, ki):
        def log_p_yhat(q):
            logp = jax.nn.log_softmax(logits_fn(q, xi[None])[0])
            return logp[jax.random.categorical(ki, jax.lax.stop_gradient(logp))]

        g = jax.grad(log_p_yhat)(p)
        return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(g))

    keys = jax.random.split(key, b * n)
    m = min(args.loop_examples, b * n)
    jax.block_until_ready(one_example(params, points[0], keys[0]))  # compile
    t = time.perf_counter()
    total = sum(one_example(params, points[i], keys[i]) for i in range(m))
    jax.block_until_ready(total)
    t_loop = (time.perf_counter() - t) * (b * n) / m
    print(
        f"  {'per-example Python loop (extrapolated)':<44} {t_loop:9.3f} s   "
        f"(timed on {m} of {b * n} points, x {b * n / m:.0f})"
    )

    try:
        from torch_baseline import fisher_seconds
    except ImportError:
        t_torch = None
        print(f"  {'torch.func vmap(grad)':<44}  not run: torch is not installed")
    else:
        t_torch, what = fisher_seconds(
            np.asarray(points), args.width, args.torch_chunk, args.repeats
        )
        print(f"  {'torch.func vmap(grad)':<44} {t_torch:9.3f} s   ({what})")

    def avg(p, batches, k, samples_per_pass=None):
        return average_sharpness(
            loss_fn, p, batches, k, n_samples=args.n_samples, samples_per_pass=samples_per_pass
        )

    avg_all = functools.partial(avg, samples_per_pass=args.n_samples)
    t_avg, c, s_avg, mem = compile_and_time(avg_all, (params, batches, key), args.repeats)
    report(f"average_sharpness ({args.n_samples} samples, vmapped)", t_avg, c, mem)
    avg_seq = functools.partial(avg, samples_per_pass=1)
    t_avg_seq, c, s_avg_seq, mem = compile_and_time(avg_seq, (params, batches, key), args.repeats)
    report("  the same, samples_per_pass=1 (sequential)", t_avg_seq, c, mem)
    assert abs(float(s_avg_seq) - float(s_avg)) <= 1e-3 * abs(float(s_avg)) + 1e-6
    t_avg_default = t_avg_seq if jax.default_backend() == "cpu" else t_avg  # samples_per_pass=None

    def worst(p, batches, k):
        return worst_sharpness(loss_fn, p, batches, k, n_iters=args.apgd_iters)

    t_worst, first, (s_worst, _) = time_calls(worst, (params, batches, key), args.repeats)
    print(
        f"  {f'worst_sharpness ({args.apgd_iters} APGD iterations)':<44} {t_worst:9.3f} s   "
        f"(first call {first:6.1f} s, compilation included; called as is)"
    )
    t_worst_jit = None
    if args.worst_in_jit:
        t_worst_jit, c, (s_worst_jit, _), mem = compile_and_time(
            worst, (params, batches, key), args.repeats
        )
        report("  the same inside jit (lax.scan)", t_worst_jit, c, mem)
        assert abs(float(s_worst_jit) - float(s_worst)) <= 1e-3 * abs(float(s_worst)) + 1e-7

    theirs = None
    if args.sharpness_repo:
        try:
            from torch_baseline import sharpness_paper_seconds
        except ImportError:
            print(f"  {'their S_avg / S_worst (PyTorch)':<44}  not run: torch is not installed")
        else:
            theirs = sharpness_paper_seconds(
                args.sharpness_repo, np.asarray(images), np.asarray(labels), args.width,
                n_samples=args.n_samples, apgd_iters=args.apgd_iters, rho=0.01,
                repeats=args.repeats,
            )  # fmt: skip
            for name, what in (("avg", "eval_average_sharpness"), ("worst", "eval_APGD_sharpness")):
                print(f"  {'their ' + what:<44} {theirs[name]:9.3f} s   ({theirs['what']})")

    print(
        f"values: tr(F)/P = {float(tr_f):.4g}, S_avg = {float(s_avg):.4g}, "
        f"S_worst = {float(s_worst):.4g}; bfloat16 moves the loss by {bf16_error:.2g} "
        f"({bf16_error / abs(float(s_avg)):.2g}x |S_avg|)"
    )
    per_iter = t_worst / (args.apgd_iters + 1)
    ratios = [
        ("bfloat16 / float32 forward, forward+backward", t_fwd16 / t_fwd, f"{t_fb16 / t_fb:.2f}x"),
        ("tr(F): ours / batched forward+backward", t_fisher / t_fb, "goal <= 3"),
        ("tr(F): per_example='vmap' / ours", t_fisher_vmap / t_fisher, "the identities' gain"),
        ("tr(F): Python loop / ours", t_loop / t_fisher, "per-example loop"),
        (f"S_avg: ours / {args.n_samples} batched forwards", t_avg / (args.n_samples * t_fwd),
         "goal <= 1.3"),
        ("S_avg, samples_per_pass=1: ours / forwards", t_avg_seq / (args.n_samples * t_fwd),
         "goal <= 1.3; the default on a CPU"),
        ("S_worst: per APGD iteration / fwd+bwd", per_iter / t_fb,
         "goal <= 1.5; total / (n_iters + 1): the initial gradient counts as one"),
    ]  # fmt: skip
    if t_worst_jit is not None:
        ratios.append(("S_worst inside jit: per iteration / fwd+bwd",
                       t_worst_jit / (args.apgd_iters + 1) / t_fb, "lax.scan"))  # fmt: skip
    if theirs is not None:
        ratios.append(("S_avg: theirs / ours (default)", theirs["avg"] / t_avg_default,
                       "goal >= 1"))  # fmt: skip
        ratios.append(("S_worst: theirs / ours", theirs["worst"] / t_worst, "goal >= 1"))
    if t_torch is not None:
        ratios.insert(1, ("tr(F): torch.func / ours", t_torch / t_fisher, "goal >= 2"))
    # The paper's protocol: tr(F), S_avg and S_worst on 2048 points every 10 steps to 2000,
    # against 2000 training steps of batch 128, each taken as one forward+backward over 128
    # points; every time scaled linearly in the number of points from the ones above.
    points_scale = 2048 / (b * n)
    recording = 200 * (t_fisher + t_avg_default + t_worst) * points_scale
    training = 2000 * t_fb * 128 / (b * n)
    print(
        f"paper's protocol, estimated from the times above: recording {recording:.0f} s "
        f"against training {training:.0f} s ({recording / training:.2f}x; metric functions "
        "as called here, train step as one forward+backward over 128 points)"
    )
    print("ratios (same process):")
    for name, ratio, note in ratios:
        print(f"  {name:<44} {ratio:8.2f}x  ({note})")


if __name__ == "__main__":
    main()
