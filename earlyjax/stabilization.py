"""Algorithm 2 of Liu & Gurevych (App. D): when does a recorded metric signal stabilise?

The input is a metric (tr(F), S_avg, S_worst, ...) recorded every few steps of a head-only run;
the output is the training step k at which to unfreeze. Pure numpy, no other earlyjax import.

Definitions chosen here (the paper leaves them partly open):

* **Normalisation** (`normalize_signal`): min-max over the whole recorded signal to [0, 1],
  ``(s - min) / (max - min)``. App. D reads "ε is 0.02 (i.e. the percentage of change in the
  signal is within 2%)" and the pseudo-code compares ε directly with differences of the
  normalised signal Ŝ, with no division: so Ŝ must live on a unit scale, where 0.02 is 2% of the
  signal's full range. The paper's figures use the same min-max normalisation scaled to 0..1000
  ("normalized between 0 and 1000 for visualization"); that is display only (on that scale
  ε = 0.02 would be 0.002% of the range), and ``normalize_signal(x, scale=1000)`` reproduces it.
  A per-step relative change |Δμ|/|μ| was rejected: the pseudo-code divides by nothing and μ is
  0 at the minimum of a min-max-normalised signal. The signal is normalised once, before the
  slice at t_ΔS, as in the pseudo-code (Ŝ is already normalised when it is sliced). A constant
  signal normalises to zeros (stable from index 0).
* **Smoothing and change**: ``μ = moving_average(Ŝ, τ)`` is the mean of each full window
  (``np.convolve(Ŝ, ones(τ) / τ, "valid")``, length n - τ + 1; μ[i] averages Ŝ[i : i + τ]), and
  ``Δ[i] = |μ[i + 1] - μ[i]| = |Ŝ[i + τ] - Ŝ[i]| / τ``. Index i of Δ is reported as index i of
  the signal, exactly as the pseudo-code returns the loop index (plus t_ΔS). Deciding
  ``Δ[i] <= ε`` needs the samples up to i + τ, so a run monitoring itself online learns the
  answer at ``steps[index + tau]``.
* **End of the rapid-change phase t_ΔS** (`rapid_change_end`): App. D says t_ΔS is "the index
  marking the end of the rapid increase of the signal using a similar logic", and §6.4 calls the
  transient "rapid growth or drop" (so absolute change is used). Same logic with a larger
  threshold ``rapid_eps`` (default 0.05, i.e. 5% of the range per recording): the rapid phase
  starts at the first i with ``Δ[i] > rapid_eps`` and t_ΔS is the first later i with
  ``Δ[i] <= rapid_eps``. If no change ever exceeds ``rapid_eps`` there is no rapid phase and
  t_ΔS = 0 (the pseudo-code's "if t_ΔS > 0" branch is then skipped). If the rapid phase never
  ends the signal is reported as not stable. t_ΔS matters for signals that are flat *before* the
  transient (e.g. Fig. 2 (f), where sharpness rises only after ~100 steps): without it the flat
  start would be taken as the stabilisation point. It can also be given explicitly
  (``t_delta_s=...``), as in the paper, where it is an input of Algorithm 2.
* **Stabilisation**: on Ŝ[t_ΔS:], the first i with ``Δ[i] <= ε``; index = i + t_ΔS and
  step = steps[index].

Deviation from the printed pseudo-code: line 7 enumerates μ (the moving average) instead of
Δ_μ (its absolute difference, computed on line 6 and then unused), and the comment on line 9
says "smaller than τ" where ε is meant. Taken literally, any signal rising from its minimum
would "stabilise" at once (μ ≈ 0 ≤ ε) and one settling at its maximum never would. This module
implements the described intent: the first index where the *change* of the smoothed signal is at
most ε.

Known limitation (shared with the paper's heuristic): the threshold is per recording, so a
steady drift slower than ε of the range per recording (e.g. a linear ramp over more than
1/ε + 1 recordings) counts as stable; and one large outlier shrinks everything else through the
min-max normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_TAU = 3
DEFAULT_EPS = 0.02
DEFAULT_RAPID_EPS = 0.05


@dataclass(frozen=True)
class StabilizationPoint:
    """Result of `stabilization_point`.

    stable: whether a stabilisation point was found.
    step: the training step at the stabilisation point (``steps[index]``), None if not stable.
    index: its index into the recorded signal, None if not stable.
    t_delta_s_index: end of the rapid-change phase (0: none detected or given as 0), None if the
        rapid phase never ends.
    reason: a one-line explanation, for logs and tables.
    """

    stable: bool
    step: int | None
    index: int | None
    t_delta_s_index: int | None
    reason: str


def _check_tau(tau: int) -> int:
    if isinstance(tau, bool) or not isinstance(tau, (int, np.integer)) or tau < 1:
        raise ValueError(f"tau must be an integer >= 1 (the paper uses 3 or 8), got {tau!r}")
    return int(tau)


def _check_threshold(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(
            f"{name} must be a positive finite number (a fraction of the normalised range, "
            f"e.g. 0.02 for 2%), got {value!r}"
        )
    return value


def _as_signal(values: Sequence[float] | np.ndarray, name: str = "values") -> np.ndarray:
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a 1-D sequence of numbers: {err}") from None
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per recording), got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} is empty: record the metric at least tau + 1 times")
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ValueError(
            f"{name} has {bad.size} non-finite entries (first at index {bad[0]}: {x[bad[0]]}); "
            "drop or re-record those recordings (and their steps) before calling"
        )
    return x


def normalize_signal(values: Sequence[float] | np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Min-max normalises a 1-D signal to [0, scale]; a constant signal maps to zeros.

    scale=1 is what Algorithm 2 uses (ε is a fraction of the range); scale=1000 is the paper's
    figure normalisation.
    """
    x = _as_signal(values)
    lo, hi = float(x.min()), float(x.max())
    if hi == lo:
        return np.zeros_like(x)
    return (x - lo) / (hi - lo) * float(scale)


def moving_average(x: Sequence[float] | np.ndarray, tau: int) -> np.ndarray:
    """Mean of each full window of length tau: out[i] = mean(x[i : i + tau]), len n - tau + 1."""
    tau = _check_tau(tau)
    x = _as_signal(x, "x")
    if x.size < tau:
        raise ValueError(f"x has {x.size} entries, fewer than the window tau={tau}")
    return np.convolve(x, np.full(tau, 1.0 / tau), mode="valid")


def smoothed_change(x: Sequence[float] | np.ndarray, tau: int) -> np.ndarray:
    """Absolute first difference of the moving average: |μ[i + 1] - μ[i]|, length n - tau."""
    return np.abs(np.diff(moving_average(x, tau)))


def rapid_change_end(
    normalized: Sequence[float] | np.ndarray, tau: int, rapid_eps: float = DEFAULT_RAPID_EPS
) -> int | None:
    """t_ΔS: the first index after the rapid-change phase (change > rapid_eps) ends.

    Returns 0 when the change never exceeds rapid_eps (no rapid phase), None when the rapid
    phase lasts until the end of the signal.
    """
    rapid_eps = _check_threshold("rapid_eps", rapid_eps)
    delta = smoothed_change(normalized, tau)
    rapid = delta > rapid_eps
    if not rapid.any():
        return 0
    onset = int(np.argmax(rapid))
    calm = np.flatnonzero(~rapid[onset:])
    if calm.size == 0:
        return None
    return onset + int(calm[0])


def find_stabilization(
    normalized: Sequence[float] | np.ndarray,
    t_delta_s: int,
    tau: int,
    eps: float = DEFAULT_EPS,
) -> int | None:
    """Algorithm 2's procedure on an already normalised signal (with the intent fixed).

    Returns the first index >= t_delta_s where the smoothed change is <= eps, or None if there
    is none (including when fewer than tau + 1 samples remain after t_delta_s).
    """
    tau = _check_tau(tau)
    eps = _check_threshold("eps", eps)
    s = _as_signal(normalized, "normalized")
    if t_delta_s > 0:
        s = s[t_delta_s:]
    if s.size < tau + 1:
        return None
    hits = np.flatnonzero(smoothed_change(s, tau) <= eps)
    if hits.size == 0:
        return None
    return int(hits[0]) + max(t_delta_s, 0)


def stabilization_point(
    values: Sequence[float] | np.ndarray,
    steps: Sequence[int] | np.ndarray,
    *,
    tau: int = DEFAULT_TAU,
    eps: float = DEFAULT_EPS,
    rapid_eps: float = DEFAULT_RAPID_EPS,
    t_delta_s: int | None = None,
    normalize: bool = True,
) -> StabilizationPoint:
    """Finds the step at which a recorded metric signal stabilises (Algorithm 2, App. D).

    values: the metric at each recording; steps: the training step of each recording
    (strictly increasing, e.g. [0, 10, 20, ...]). tau: moving-average window (paper: 3 or 8).
    eps: stabilisation threshold on the smoothed change, as a fraction of the signal's range
    (paper: 0.02). rapid_eps: threshold that delimits the rapid-change phase (must be >= eps).
    t_delta_s: end of the rapid-change phase as an index; None detects it. normalize: min-max
    normalise first (turn off only for a signal already on a 0..1 scale).

    A signal that never stabilises gives ``stable=False`` with the reason; invalid input raises
    ValueError.
    """
    tau, eps, rapid_eps = _check_settings(tau, eps, rapid_eps)
    x, step_arr = _check_recordings(values, steps, tau, t_delta_s)

    s = normalize_signal(x) if normalize else x
    if t_delta_s is None:
        t = rapid_change_end(s, tau, rapid_eps)
        if t is None:
            return StabilizationPoint(
                stable=False,
                step=None,
                index=None,
                t_delta_s_index=None,
                reason=(
                    f"the rapid-change phase never ends: the smoothed change stays above "
                    f"rapid_eps={rapid_eps} through the last recording (step {int(step_arr[-1])})"
                ),
            )
    else:
        t = int(t_delta_s)

    remaining = x.size - t
    if remaining < tau + 1:
        return StabilizationPoint(
            stable=False,
            step=None,
            index=None,
            t_delta_s_index=t,
            reason=(
                f"only {remaining} recordings after t_delta_s={t}; tau={tau} needs {tau + 1} "
                "to measure a change"
            ),
        )
    index = find_stabilization(s, t, tau, eps)
    if index is None:
        return StabilizationPoint(
            stable=False,
            step=None,
            index=None,
            t_delta_s_index=t,
            reason=(
                f"never stabilises: the smoothed change stays above eps={eps} from t_delta_s={t} "
                f"(step {int(step_arr[t])}) to the last recording (step {int(step_arr[-1])})"
            ),
        )
    return StabilizationPoint(
        stable=True,
        step=int(step_arr[index]),
        index=index,
        t_delta_s_index=t,
        reason=f"smoothed change <= eps={eps} at index {index} (t_delta_s={t}, tau={tau})",
    )


def _check_settings(tau: int, eps: float, rapid_eps: float) -> tuple[int, float, float]:
    """`stabilization_point`'s tau, eps and rapid_eps, checked (rapid_eps >= eps)."""
    tau = _check_tau(tau)
    eps = _check_threshold("eps", eps)
    rapid_eps = _check_threshold("rapid_eps", rapid_eps)
    if rapid_eps < eps:
        raise ValueError(
            f"rapid_eps={rapid_eps} is below eps={eps}: the rapid-change threshold must be at "
            "least the stabilisation threshold; raise rapid_eps or lower eps"
        )
    return tau, eps, rapid_eps


def _check_recordings(
    values: Sequence[float] | np.ndarray,
    steps: Sequence[int] | np.ndarray,
    tau: int,
    t_delta_s: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(values as float64, steps as int64), checked against each other, tau and t_delta_s."""
    x = _as_signal(values)
    try:
        step_arr = np.asarray(steps)
        if step_arr.ndim != 1 or not np.all(np.equal(np.mod(step_arr, 1), 0)):
            raise TypeError
        step_arr = step_arr.astype(np.int64)
    except (TypeError, ValueError):
        raise ValueError(f"steps must be a 1-D sequence of integer steps, got {steps!r}") from None
    if step_arr.size != x.size:
        raise ValueError(
            f"steps has {step_arr.size} entries but values has {x.size}: pass the training step "
            "of each recording (one per value)"
        )
    if np.any(np.diff(step_arr) <= 0):
        raise ValueError("steps must be strictly increasing (one recording per training step)")
    if x.size < tau + 1:
        raise ValueError(
            f"values has {x.size} recordings, but tau={tau} needs at least tau + 1 = {tau + 1}: "
            "record more steps or lower tau"
        )
    if t_delta_s is not None and (
        isinstance(t_delta_s, bool)
        or not isinstance(t_delta_s, (int, np.integer))
        or not 0 <= t_delta_s < x.size
    ):
        raise ValueError(
            f"t_delta_s must be None (detect it) or an index in [0, {x.size - 1}], "
            f"got {t_delta_s!r}"
        )
    return x, step_arr
