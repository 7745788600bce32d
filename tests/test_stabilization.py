"""Algorithm 2 (App. D) on synthetic signals whose answers are computed by hand."""

import dataclasses
import math

import numpy as np
import pytest

from earlyjax import stabilization as stab

RECORD_EVERY = 10


def steps_for(n):
    return np.arange(n) * RECORD_EVERY


def step_signal(n, m, low=0.0, high=1.0):
    return np.where(np.arange(n) < m, low, high)


def saturation(n, time_const, delay=0):
    """Flat at 0 for `delay` recordings, then 1 - exp(-(i - delay) / T)."""
    i = np.arange(n, dtype=np.float64)
    return np.where(i < delay, 0.0, 1.0 - np.exp(-(i - delay) / time_const))


def saturation_first_index(n, time_const, tau, threshold, delay=0):
    """First i >= delay where the smoothed change of the normalised saturation is <= threshold.

    For i >= delay, Δ[i] = (Ŝ[i + τ] - Ŝ[i]) / τ = c e^{-(i - delay)/T} (1 - e^{-τ/T}) / τ with
    c = 1 / (1 - e^{-(n - 1 - delay)/T}) the min-max factor, a decreasing geometric sequence, so
    Δ[i] <= θ  <=>  i - delay >= T ln(A / θ) with A = c (1 - e^{-τ/T}) / τ.
    """
    c = 1.0 / (1.0 - math.exp(-(n - 1 - delay) / time_const))
    a = c * (1.0 - math.exp(-tau / time_const)) / tau
    return delay + max(0, math.ceil(time_const * math.log(a / threshold)))


# --- helpers -------------------------------------------------------------------------------------


def test_normalize_signal_min_max_and_figure_scale():
    x = np.array([2.0, 4.0, 3.0, 6.0])
    np.testing.assert_allclose(stab.normalize_signal(x), [0.0, 0.5, 0.25, 1.0])
    np.testing.assert_allclose(stab.normalize_signal(x, scale=1000), [0, 500, 250, 1000])
    np.testing.assert_array_equal(stab.normalize_signal([5.0, 5.0, 5.0]), [0.0, 0.0, 0.0])


def test_moving_average_and_change():
    x = np.array([0.0, 3.0, 6.0, 0.0, 3.0])
    np.testing.assert_allclose(stab.moving_average(x, 3), [3.0, 3.0, 3.0])
    np.testing.assert_allclose(stab.moving_average(x, 1), x)
    # Δ[i] = |x[i + τ] - x[i]| / τ
    np.testing.assert_allclose(stab.smoothed_change(x, 2), [3.0, 1.5, 1.5])


# --- step function -------------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [3, 8])
def test_step_function_stabilises_at_the_jump(tau):
    # Flat 0 until index 40, then flat 1. Δ[i] = (s[i + τ] - s[i]) / τ = 1/τ > rapid_eps for
    # i in [40 - τ, 39] and 0 elsewhere: the rapid phase ends at 40, the change after it is 0.
    n, m = 100, 40
    res = stab.stabilization_point(step_signal(n, m), steps_for(n), tau=tau)
    assert res == stab.StabilizationPoint(True, m * RECORD_EVERY, m, m, res.reason)
    assert res.step == 400


def test_falling_step_gives_the_same_answer():
    n, m = 100, 40
    res = stab.stabilization_point(step_signal(n, m, 5.0, -3.0), steps_for(n), tau=3)
    assert (res.stable, res.index, res.t_delta_s_index) == (True, m, m)


def test_without_t_delta_s_the_flat_start_would_be_chosen():
    # Why t_ΔS exists: a signal flat before its transient has zero change at index 0.
    n, m = 100, 40
    res = stab.stabilization_point(step_signal(n, m), steps_for(n), tau=3, t_delta_s=0)
    assert (res.stable, res.index, res.step) == (True, 0, 0)


def test_literal_pseudo_code_would_differ():
    # Line 7 of the printed pseudo-code enumerates μ instead of Δ_μ. On a step from 0 to 1 at
    # index 40, read literally: after t_ΔS = 40 the normalised μ is 1 > ε everywhere (never
    # stable), and before it μ = 0 <= ε at once (index 0). The intent gives the jump, 40.
    n, m = 100, 40
    s = stab.normalize_signal(step_signal(n, m))
    mu_after = stab.moving_average(s[m:], 3)
    assert not np.any(mu_after <= 0.02)
    assert stab.moving_average(s, 3)[0] <= 0.02
    res = stab.stabilization_point(step_signal(n, m), steps_for(n), tau=3)
    assert (res.stable, res.index) == (True, m)


# --- exponential saturation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tau", "time_const", "expected"),
    [
        # A = (1 - e^{-0.3}) / 3 = 0.086394; 10 ln(A / 0.02) = 14.63 -> 15
        (3, 10.0, 15),
        # A = (1 - e^{-0.8}) / 8 = 0.068834; 10 ln(A / 0.02) = 12.36 -> 13
        (8, 10.0, 13),
        # A = (1 - e^{-0.15}) / 3 = 0.046431; 20 ln(A / 0.02) = 16.85 -> 17
        (3, 20.0, 17),
    ],
)
def test_exponential_saturation_matches_closed_form(tau, time_const, expected):
    n = 200
    assert saturation_first_index(n, time_const, tau, 0.02) == expected
    res = stab.stabilization_point(saturation(n, time_const), steps_for(n), tau=tau)
    assert res.stable
    assert res.index == expected
    assert res.step == expected * RECORD_EVERY


def test_delayed_saturation_detects_the_end_of_the_rapid_phase():
    # Flat for 30 recordings, then 1 - exp(-(i - 30)/10), tau=3. Before the rise,
    # Δ[28] = (1 - e^{-0.1}) / 3 = 0.032 <= 0.05 and Δ[29] = (1 - e^{-0.2}) / 3 = 0.060 > 0.05,
    # so the rapid phase starts at 29; after 30, Δ = A e^{-(i-30)/10} with A = 0.086394 drops to
    # <= 0.05 at i = 30 + ceil(10 ln(A / 0.05)) = 36 (t_ΔS) and to <= 0.02 at 30 + 15 = 45.
    n, delay, time_const = 200, 30, 10.0
    expected_t = saturation_first_index(n, time_const, 3, 0.05, delay=delay)
    expected = saturation_first_index(n, time_const, 3, 0.02, delay=delay)
    assert (expected_t, expected) == (36, 45)
    signal = saturation(n, time_const, delay=delay)
    assert stab.rapid_change_end(stab.normalize_signal(signal), 3, 0.05) == 36
    res = stab.stabilization_point(signal, steps_for(n), tau=3)
    assert (res.stable, res.t_delta_s_index, res.index, res.step) == (True, 36, 45, 450)


def test_scale_and_offset_do_not_matter():
    n = 200
    base = saturation(n, 10.0)
    a = stab.stabilization_point(base, steps_for(n))
    b = stab.stabilization_point(1e-6 * base + 3.0, steps_for(n))
    c = stab.stabilization_point(-250.0 * base, steps_for(n))
    assert a == b == c


def test_steps_need_not_be_uniform():
    n = 200
    steps = np.cumsum(np.arange(1, n + 1))  # 1, 3, 6, 10, ...
    res = stab.stabilization_point(saturation(n, 10.0), steps)
    assert res.index == 15 and res.step == int(steps[15])


# --- noisy plateau -------------------------------------------------------------------------------


def test_noisy_step_plateau_still_stabilises_at_the_jump():
    # Noise sd 0.002 of the jump: its smoothed change (sd ~ 0.002 * sqrt(2) / 3 ~ 0.001, max over
    # 100 draws ~ 0.004) stays far below both thresholds, so the noise-free answer holds.
    n, m = 120, 40
    rng = np.random.default_rng(0)
    signal = step_signal(n, m) + rng.normal(0.0, 0.002, n)
    res = stab.stabilization_point(signal, steps_for(n), tau=3)
    assert (res.stable, res.t_delta_s_index, res.index) == (True, m, m)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noisy_saturation_close_to_the_noise_free_answer(seed):
    # Near the answer (15) Δ changes by ~0.002 per recording; noise sd 0.003 adds ~0.0014 sd to
    # Δ, so the first crossing moves by at most a few recordings.
    n = 200
    rng = np.random.default_rng(seed)
    signal = saturation(n, 10.0) + rng.normal(0.0, 0.003, n)
    res = stab.stabilization_point(signal, steps_for(n), tau=3)
    assert res.stable
    assert 12 <= res.index <= 18


def test_wider_window_smooths_noise_that_defeats_a_narrow_one():
    # Plateau alternating ±0.1 after the jump to 1: with τ=3 the smoothed change of the
    # alternation is 2 * 0.1 / 3 / 1.1 (range 1.1) = 0.061 > rapid_eps, so it never calms down;
    # with τ=8 (even) the alternation averages out exactly and the jump is found.
    n, m = 100, 40
    i = np.arange(n)
    signal = step_signal(n, m) + np.where(i >= m, 0.1 * (-1.0) ** i, 0.0)
    assert not stab.stabilization_point(signal, steps_for(n), tau=3).stable
    res8 = stab.stabilization_point(signal, steps_for(n), tau=8)
    assert (res8.stable, res8.index) == (True, m)


# --- never stabilises ----------------------------------------------------------------------------


def test_linear_ramp_never_stabilises():
    # 30 recordings: Δ = 1/29 = 0.034 everywhere, between eps (0.02) and rapid_eps (0.05):
    # no rapid phase (t_ΔS = 0) and no change ever <= eps.
    n = 30
    res = stab.stabilization_point(np.linspace(0.0, 7.0, n), steps_for(n), tau=3)
    assert res == stab.StabilizationPoint(False, None, None, 0, res.reason)
    assert "never stabilises" in res.reason and "eps=0.02" in res.reason


def test_sustained_oscillation_never_stabilises():
    # sin(2π i / 8) with τ=3: Δ[i] = 0.5 * 0.805 * 2 sin(π/8) |cos(2π(i + 1.5)/8)|
    # >= 0.805 * 0.383 * 0.383 = 0.118 > rapid_eps for every i: the rapid phase never ends.
    n = 200
    signal = np.sin(2 * np.pi * np.arange(n) / 8)
    delta = stab.smoothed_change(stab.normalize_signal(signal), 3)
    assert delta.min() > 0.11
    res = stab.stabilization_point(signal, steps_for(n), tau=3)
    assert res == stab.StabilizationPoint(False, None, None, None, res.reason)
    assert "rapid-change phase never ends" in res.reason


def test_too_few_recordings_after_given_t_delta_s():
    n = 20
    res = stab.stabilization_point(step_signal(n, 5), steps_for(n), tau=3, t_delta_s=17)
    assert not res.stable and res.t_delta_s_index == 17 and "only 3 recordings" in res.reason


def test_threshold_is_inclusive():
    # The paper's test is δ <= ε. With τ=1 (no smoothing) the normalised signal [0, .5, 1, 1, 1]
    # changes by exactly 0.5, 0.5, 0, 0: with ε = rapid_eps = 0.5 there is no rapid phase and
    # index 0 already satisfies Δ <= ε; a strict test would give 2.
    res = stab.stabilization_point([0, 2, 4, 4, 4], steps_for(5), tau=1, eps=0.5, rapid_eps=0.5)
    assert (res.stable, res.index, res.t_delta_s_index) == (True, 0, 0)
    res = stab.stabilization_point([0, 2, 4, 4, 4], steps_for(5), tau=1, eps=0.25, rapid_eps=0.25)
    assert (res.stable, res.index, res.t_delta_s_index) == (True, 2, 2)


def test_constant_signal_is_stable_from_the_start():
    res = stab.stabilization_point(np.full(10, 4.2), steps_for(10))
    assert (res.stable, res.index, res.step, res.t_delta_s_index) == (True, 0, 0, 0)


def test_result_is_frozen():
    res = stab.stabilization_point(step_signal(50, 10), steps_for(50))
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.step = 0


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "steps", "kwargs", "match"),
    [
        ([], [], {}, "values is empty"),
        ([0.0, 1.0, np.nan, 1.0, 1.0], list(range(5)), {}, "non-finite.*index 2"),
        ([0.0, 1.0, np.inf, 1.0, 1.0], list(range(5)), {}, "non-finite"),
        ([[0.0, 1.0], [1.0, 1.0]], [0, 1], {}, "1-D"),
        ([0.0, 1.0, 1.0, 1.0, 1.0], [0, 10, 20], {}, "steps has 3 entries but values has 5"),
        ([0.0, 1.0, 1.0, 1.0, 1.0], [0, 10, 10, 20, 30], {}, "strictly increasing"),
        ([0.0, 1.0, 1.0, 1.0, 1.0], [0, 10, 20.5, 30, 40], {}, "integer steps"),
        ([0.0, 1.0, 1.0], [0, 10, 20], {"tau": 3}, "at least tau \\+ 1 = 4"),
        ([0.0, 1.0, 1.0, 1.0, 1.0], list(range(5)), {"tau": 0}, "tau must be an integer >= 1"),
        ([0.0, 1.0, 1.0, 1.0, 1.0], list(range(5)), {"tau": 2.5}, "tau must be an integer"),
        ([0.0, 1.0, 1.0, 1.0, 1.0], list(range(5)), {"eps": 0.0}, "eps must be a positive"),
        ([0.0, 1.0, 1.0, 1.0, 1.0], list(range(5)), {"eps": -0.1}, "eps must be a positive"),
        ([0.0, 1.0, 1.0, 1.0, 1.0], list(range(5)), {"eps": np.nan}, "eps must be a positive"),
        ([0.0, 1.0, 1.0, 1.0, 1.0], list(range(5)), {"rapid_eps": 0.01}, "rapid_eps=0.01 is below"),
        ([0.0, 1.0, 1.0, 1.0, 1.0], list(range(5)), {"t_delta_s": 5}, "t_delta_s must be"),
        ([0.0, 1.0, 1.0, 1.0, 1.0], list(range(5)), {"t_delta_s": -1}, "t_delta_s must be"),
    ],
)
def test_bad_input_raises_value_error(values, steps, kwargs, match):
    with pytest.raises(ValueError, match=match):
        stab.stabilization_point(values, steps, **kwargs)
