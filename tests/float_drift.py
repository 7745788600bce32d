"""Comparing runs that differ only by float reassociation (1 vs several devices or hosts).

Used by tests/multidevice/ and tests/test_multihost.py; tests/multidevice/test_data_parallel.py
says why, with the measured gaps.
"""

import jax
import numpy as np

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


def smooth_resnet() -> None:
    """GELU for ReLU in earlyjax's models (they call `flax.linen.relu` at trace time), so that a
    run's gradients are smooth in its inputs: ReLU's gate can flip on a pre-activation within
    rounding of 0 and move a gradient by far more than rounding (tests/multidevice/
    test_data_parallel.py has the measurements). For a process of its own; tests use
    monkeypatch to undo it."""
    import flax.linen

    flax.linen.relu = jax.nn.gelu
