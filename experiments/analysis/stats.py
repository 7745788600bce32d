"""The statistics of the tables: mean ± sample std (ddof 1), paired Student-t intervals, seed
bands of recorded curves, and the winning rate with its paired bootstrap over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from experiments.analysis.summary import metric_run, run_for_k, seed_mean, seed_values


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1); the std of a single value is NaN (shown as no "± ...", not
    as a misleading ± 0.00)."""
    a = np.asarray(values, float)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else math.nan


def paired_difference_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> str:
    """Mean of a - b over paired seeds with its `level` Student-t confidence interval, as text
    ("+3.10 [+1.02, +5.18]"); without two pairs the interval is "n/a"."""
    from scipy import stats

    d = np.asarray(a, float) - np.asarray(b, float)
    if d.size < 2:
        return f"{d.mean():+.2f} [n/a]" if d.size else "n/a"
    half = stats.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    return f"{d.mean():+.2f} [{d.mean() - half:+.2f}, {d.mean() + half:+.2f}]"


def normalize_0_1000(curves: list[np.ndarray]) -> list[np.ndarray]:
    """The paper's display normalisation: min-max over all curves of a panel, to 0..1000.

    Shifted by 1 before a log axis (so the minimum is drawn at 1, not at log 0).
    """
    scale = display_scale(curves, normalise=True)
    return [scale(c) for c in curves]


def display_scale(values: list[np.ndarray], normalise: bool):
    """The map from recorded values to the plotted ones (`normalize_0_1000` over `values`)."""
    if not normalise:
        return lambda v: v
    lo = min(v.min() for v in values)
    span = (max(v.max() for v in values) - lo) or 1.0
    return lambda v: 1.0 + 1000.0 * (v - lo) / span


def seed_band(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """(steps, mean, sample std) over seeds at the steps every seed recorded (std 0 for one)."""
    steps = curves[0][0]
    for s, _ in curves[1:]:
        steps = np.intersect1d(steps, s)
    if steps.size == 0:
        raise ValueError("the seeds' runs share no recorded step")
    values = np.array([v[np.searchsorted(s, steps)] for s, v in curves])
    std = values.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(steps.size)
    return steps, values.mean(axis=0), std


def winning_rate(summary: dict, metric: str) -> dict:
    """The winning rate (Table 2, §6.4) of the k `metric` picked against the random k.

    Compares seed means: the metric's k run's OOD accuracy averaged over the seeds against each
    random k run's OOD accuracy averaged over the same seeds. A win is a strictly higher seed
    mean; a tie (equal seed means, e.g. when a random k equals the metric's k, so the very same
    runs are compared) counts one half. Returns {wins, ties, losses, n (random k), percent}
    with percent = 100 * (wins + ties / 2) / n. Errors (never NaN): a metric without a k, no
    random k, or a run missing a seed (named).
    """
    run = metric_run(summary, metric)
    if run is None:
        reason = summary["picked"][metric].get("reason") or "no reason given"
        raise ValueError(f"{metric} picked no k ({reason}): it has no winning rate")
    if not summary["random_k"]:
        raise ValueError("autok.json has no random k to compare against")
    ours = seed_mean(summary, run, "ood")
    wins = ties = losses = 0
    for k in summary["random_k"]:
        theirs = seed_mean(summary, run_for_k(summary, k), "ood")
        if math.isclose(ours, theirs, rel_tol=1e-12, abs_tol=1e-12):
            ties += 1
        elif ours > theirs:
            wins += 1
        else:
            losses += 1
    n = wins + ties + losses
    return {
        "wins": wins,
        "ties": ties,
        "losses": losses,
        "n": n,
        "percent": 100.0 * (wins + 0.5 * ties) / n,
    }


def winning_rate_bootstrap(summary: dict, metric: str, resamples: int = 2000) -> np.ndarray:
    """`resamples` winning rates of `metric` (percent) under a paired bootstrap over seeds.

    Each resample draws the seeds with replacement (the same draw for every run, so the runs
    stay paired by seed), recomputes every run's seed mean and the winning rate as
    `winning_rate` does (ties count one half). The random k are held fixed: the spread is the
    seeds' only, not that of which k were drawn. Fixed random stream: reproducible."""
    names = [metric_run(summary, metric)] + [run_for_k(summary, k) for k in summary["random_k"]]
    ood = np.array([seed_values(summary, name, "ood") for name in names])  # runs x seeds
    draws = np.random.default_rng(0xB007).integers(0, ood.shape[1], (resamples, ood.shape[1]))
    means = ood[:, draws].mean(axis=2)  # runs x resamples
    ours, theirs = means[0], means[1:]
    tie = np.isclose(ours, theirs, rtol=1e-12, atol=1e-12)
    wins = (ours > theirs) & ~tie
    return 100.0 * (wins + 0.5 * tie).mean(axis=0)


def winning_rate_interval(
    summary: dict, metric: str, level: float = 0.95
) -> tuple[float, float] | None:
    """The `level` percentile interval of `winning_rate_bootstrap`; None with fewer than two
    seeds (one seed has no spread to resample)."""
    if len(summary["seeds"]) < 2:
        return None
    rates = winning_rate_bootstrap(summary, metric)
    low, high = np.percentile(rates, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, int]:
    """(mean, half-width of the Student-t `level` interval, n); the half-width is NaN for one
    value (no interval, not a misleading ± 0)."""
    from scipy import stats

    a = np.asarray([v for v in values if v is not None], float)
    if a.size == 0:
        return math.nan, math.nan, 0
    if a.size < 2:
        return float(a.mean()), math.nan, 1
    half = stats.t.ppf(0.5 + level / 2, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size)
    return float(a.mean()), float(half), int(a.size)


def mean_ci_cell(values) -> str:
    """`mean_ci` as text: "mean ± half-width", the mean alone for one value, "n/a" for none."""
    mean, half, n = mean_ci(values)
    if n == 0:
        return "n/a"
    return f"{mean:.2f}" if math.isnan(half) else f"{mean:.2f} ± {half:.2f}"
