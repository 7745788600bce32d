"""Helpers shared by more than one test file, each defined once.

Tiny models (an MLP and a CNN with their logits and losses, tiny classification batches), a tiny
tokenizer, small configs, reading a run's workdir (records, checkpoints, TensorBoard), float
drift tolerances for 1-vs-many-device runs, and reading back the analysis tables and figures.
tests/conftest.py puts tests/ on sys.path, so every test folder imports `from helpers import ...`.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import shutil
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]  # the repository
FIXTURES = ROOT / "tests" / "fixtures"

# ----------------------------------------------------------------------------------------------
# Tiny models: a tanh MLP and a one-conv CNN, 3 classes
# ----------------------------------------------------------------------------------------------

N_CLASSES = 3


def mlp_params(seed=0, d_in=4, hidden=6, scale=0.8, bias_scale=0.1):
    """{"dense1", "head"} of a d_in -> hidden -> N_CLASSES tanh MLP, kernels ~ N(0, scale²),
    dense1's bias ~ N(0, bias_scale²) (0: a zero-initialised bias)."""
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    return {
        "dense1": {
            "kernel": jax.random.normal(k1, (d_in, hidden)) * scale,
            "bias": jax.random.normal(k3, (hidden,)) * bias_scale,
        },
        "head": {
            "kernel": jax.random.normal(k2, (hidden, N_CLASSES)) * scale,
            "bias": jnp.array([0.1, -0.2, 0.05]),
        },
    }


def mlp_logits(params, x):
    h = jnp.tanh(x @ params["dense1"]["kernel"] + params["dense1"]["bias"])
    return h @ params["head"]["kernel"] + params["head"]["bias"]


def mean_cross_entropy(logits, y):
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))


def mlp_loss(params, batch):
    x, y = batch
    return mean_cross_entropy(mlp_logits(params, x), y)


class TinyCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(3, (3, 3), name="conv")(x)
        x = nn.relu(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(N_CLASSES, name="head")(x)


CNN = TinyCNN()


def cnn_params(seed=1, image_shape=(5, 5, 2)):
    return CNN.init(jax.random.key(seed), jnp.zeros((1, *image_shape)))["params"]


def cnn_logits(params, x):
    return CNN.apply({"params": params}, x)


def cnn_loss(params, batch):
    """Mean cross-entropy of an (images, labels) batch or an {"image", "label"} one."""
    x, y = (batch["image"], batch["label"]) if isinstance(batch, dict) else batch
    return mean_cross_entropy(cnn_logits(params, x), y)


def classification_batches(n_batches=2, batch_size=6, d_in=4, seed=2):
    """(x, y): x of shape (n_batches, batch_size, d_in) (or (..., *d_in) for a tuple), labels
    in [0, N_CLASSES)."""
    kx, ky = jax.random.split(jax.random.key(seed))
    shape = (n_batches, batch_size, *(d_in if isinstance(d_in, tuple) else (d_in,)))
    x = jax.random.normal(kx, shape)
    y = jax.random.randint(ky, (n_batches, batch_size), 0, N_CLASSES)
    return x, y


def mask_without_dense1_kernel(params):
    """A trainable mask of `mlp_params` with dense1's kernel frozen."""
    mask = jax.tree.map(lambda _: True, params)
    mask["dense1"]["kernel"] = False
    return mask


def smooth_resnet(monkeypatch=None) -> None:
    """GELU for ReLU in earlyjax's models (they call `flax.linen.relu` at trace time), so that a
    run's gradients are smooth in its inputs: ReLU's gate can flip on a pre-activation within
    rounding of 0 and move a gradient by far more than rounding (tests/multidevice/
    test_data_parallel.py has the measurements). With `monkeypatch`, for one test (undone
    afterwards); without, for the rest of the process (tests/multihost_worker.py)."""
    if monkeypatch is not None:
        monkeypatch.setattr(nn, "relu", jax.nn.gelu)
    else:
        nn.relu = jax.nn.gelu


# ----------------------------------------------------------------------------------------------
# Text and small configs
# ----------------------------------------------------------------------------------------------


def tiny_tokenizer(texts):
    """A tiny word-level tokenizer with XLM-R's special tokens and pair template."""
    from tokenizers import pre_tokenizers

    from earlyjax.data.text import word_level_tokenizer

    split = pre_tokenizers.Whitespace().pre_tokenize_str
    return word_level_tokenizer(word for text in texts for word, _ in split(text))


def tiny_config():
    """A tiny, fast image config (the `tiny_config` fixture of tests/conftest.py)."""
    from earlyjax.config import default_config

    c = default_config()
    c.model.width = 4
    c.batch_size = 32
    c.total_steps = 8
    c.log_every = 3
    c.checkpoint_every = 0
    c.eval_batch_size = 64
    c.progress_bar = False
    c.optimizer.lr = 0.05
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 0.01
    c.unfreeze.k = 2
    # 8 steps with k = 2 and L = 5 releases the stem after the end (k * L >= steps): these short
    # runs exercise the loop mid-schedule on purpose (test_train tests the refusal itself).
    c.unfreeze.allow_late_release = True
    c.data.ood_source = "none"
    return c


def small_nli_config():
    """A 2-layer XLM-R on the synthetic NLI set, 12 steps, recording twice."""
    from experiments.configs.quickstart_nli import get_config

    c = get_config()
    c.model.width = 16
    c.model.layers = 2
    c.total_steps = 12
    c.unfreeze.k = 4  # layers_1 trains with the head from step 0; layers_0 from step 3
    c.log_every = 2
    c.checkpoint_every = 0
    c.record.every = 6
    c.record.until = 6
    c.record.metrics = ("fisher", "worst_sharpness")
    c.record.set_size = 128
    c.record.batch_size = 64
    c.record.avg_samples = 2
    c.record.worst_iters = 2
    c.progress_bar = False
    return c


def small_qa_config():
    """`small_nli_config` on the synthetic QA set."""
    from earlyjax.data import synthetic_qa

    c = small_nli_config()
    c.task, c.data.name = "qa", "synthetic_qa"
    c.data.max_length, c.data.doc_stride = synthetic_qa.MAX_LENGTH, synthetic_qa.STRIDE
    return c


# ----------------------------------------------------------------------------------------------
# A run's workdir
# ----------------------------------------------------------------------------------------------


def read_text(path) -> str:
    with open(path) as f:
        return f.read()


def metric_records(workdir, kind=None) -> list[dict]:
    """The lines of workdir/metrics.jsonl (those of one `kind` if given), in order."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return [r for r in records if kind is None or r["kind"] == kind]


def restore_latest(workdir, like_state):
    """The state of the last checkpoint under workdir/checkpoints, shaped like `like_state`."""
    from earlyjax.checkpoint import Checkpointer

    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    state, _ = ckpt.restore(ckpt.latest_step(), like_state)
    ckpt.close()
    return state


def copy_run(finished_run, tmp_path):
    """(config, a copy of the `finished_run` fixture's workdir under tmp_path, results)."""
    config, workdir, results = finished_run
    copy = str(tmp_path / "copy")
    shutil.copytree(workdir, copy)
    return config, copy, results


def snapshot(workdir):
    """Every file under workdir with its bytes, to prove nothing was changed."""
    out = {}
    for root, _, files in os.walk(workdir):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, workdir)] = f.read()
    return out


def wait_for(predicate, timeout: float, what: str) -> None:
    """Polls `predicate` every 50 ms; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def logged_scalars(workdir) -> dict[tuple[str, int], float]:
    """{(tag, step): value} of every numeric value in metrics.jsonl, as TensorBoard tags them."""
    from earlyjax.metric_log import METRICS_FILE, read_records

    out = {}
    for record in read_records(os.path.join(workdir, METRICS_FILE)):
        for name, value in record.items():
            if name in ("step", "kind") or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)):
                key = (f"{record['kind']}/{name}", record["step"])
                assert key not in out, f"{key} logged twice in {workdir}"
                out[key] = value
    return out


def assert_tensorboard_matches_log(workdir) -> None:
    """TensorBoard under tb/ holds every logged scalar of metrics.jsonl exactly once, with its
    value (as float32), and nothing else."""
    from earlyjax.metric_log import read_event_scalars

    events = read_event_scalars(os.path.join(workdir, "tb"))
    counts = collections.Counter((tag, step) for tag, step, _ in events)
    repeated = [key for key, n in counts.items() if n > 1]
    assert not repeated, f"steps written more than once to TensorBoard: {repeated[:5]}"
    logged = logged_scalars(workdir)
    assert set(counts) == set(logged)
    for tag, step, value in events:
        assert value == np.float32(logged[(tag, step)]), (tag, step)


# ----------------------------------------------------------------------------------------------
# Float drift: runs that differ only by float reassociation (1 vs several devices or hosts).
# tests/multidevice/test_data_parallel.py says why, with the measured gaps.
# ----------------------------------------------------------------------------------------------

EPS32 = float(np.finfo(np.float32).eps)  # 2**-23 ~ 1.19e-7


def assert_close_to_scale(actual, expected, tol, *, floor=None, what="leaf"):
    """Every float leaf: max |actual - expected| <= tol * max |expected| (+ floor[path], keyed by
    `jax.tree_util.keystr`); integer leaves (step counters, keys) equal. Reports every leaf that
    is off.

    Relative to the leaf's largest entry, not entry by entry: an entry near 0 (a running mean, a
    bias) makes a per-entry relative gap meaningless, and reassociation moves every entry of a
    leaf by about the same absolute amount.
    """
    flat, _ = jax.tree_util.tree_flatten_with_path(expected)
    others = jax.tree.leaves(actual)
    assert len(flat) == len(others), f"{what}: {len(others)} leaves, expected {len(flat)}"
    off = []
    for (path, b), a in zip(flat, others, strict=True):
        name = jax.tree_util.keystr(path)
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape, f"{what} {name}: shape {a.shape} != {b.shape}"
        if not np.issubdtype(b.dtype, np.floating):
            np.testing.assert_array_equal(a, b, err_msg=f"{what} {name}")
            continue
        scale = float(np.max(np.abs(b), initial=0.0))
        gap = float(np.max(np.abs(a.astype(np.float64) - b), initial=0.0))
        allowed = tol * scale + (floor[name] if floor else 0.0)
        if not gap <= allowed:
            ratio = f"{gap / scale:.3g}" if scale else "inf"
            off.append(
                f"{what} {name}: max gap {gap:.3g} = {ratio} of its scale {scale:.3g} "
                f"(allowed {allowed:.3g})"
            )
    assert not off, f"{len(off)} of {len(flat)} leaves differ:\n" + "\n".join(off)


# ----------------------------------------------------------------------------------------------
# Reading back the tables and figures `experiments.analysis` writes
# ----------------------------------------------------------------------------------------------


def markdown_rows(markdown: str) -> list[dict[str, str]]:
    """The rows of the first pipe table in `markdown`, as {column: cell text}."""
    lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]
    split = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    header, body = split[0], split[2:]  # split[1] is the |:---| rule
    return [dict(zip(header, cells, strict=True)) for cells in body]


def suptitle(fig) -> str:
    """A matplotlib figure's title, line breaks as spaces (long titles are wrapped)."""
    return " ".join(fig.get_suptitle().split())


def legend(ax) -> list[str]:
    """The texts of a matplotlib axis's legend."""
    return [t.get_text() for t in ax.get_legend().get_texts()]
