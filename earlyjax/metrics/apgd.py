"""Auto-PGD on one batch, the maximiser behind `worst_sharpness` (algorithm: its docstring).

`_apgd_parts` builds a start and a step; `_apgd_one_batch` runs them in a `lax.scan`, the
host loop of `sharpness._worst_host_loop` one compiled step at a time.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from earlyjax.metrics._common import merge_active, resolve_trainable, select_active
from earlyjax.metrics.perturbation import (
    LossFn,
    PyTree,
    _scalar_loss,
    _scales,
    _standard_normal_leaves,
    _weighted_norm,
    project_ellipsoid,
)

APGD_MOMENTUM = 0.75  # weight of the new point, Croce & Hein (2020) alpha
APGD_MIN_UPDATE_RATIO = 0.75  # condition 1 of APGD's step-size schedule
GEOMETRIES = ("ellipsoid", "scaled")
VARIANTS = ("reference", "croce_hein")
STARTS = ("zero", "random", "given")  # δ_0: zero, random on the surface, a given warm start


def apgd_checkpoints(n_iters: int) -> tuple[int, ...]:
    """Iterations (0-based, checked after that iteration's step) where APGD may halve its step.

    Croce & Hein (2020): p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06),
    checkpoint w_j = ceil(p_j n_iters), j >= 1, stopping once w_j >= n_iters or repeats; this is
    the schedule (and the float arithmetic) of Andriushchenko et al.'s code. For n_iters = 20:
    (5, 9, 12, 15, 16, 18, 19, 20) (0.7 * 20 rounds up to 15 in floats); 20 is never reached.
    """
    p = [0.0, 0.22]
    w = [0, math.ceil(p[1] * n_iters)]
    while w[-1] < n_iters and w[-1] != w[-2]:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
        w.append(math.ceil(p[-1] * n_iters))
    return tuple(w[1:])


def _full_tree(
    params: PyTree, active: Sequence[bool], act: Sequence[jax.Array], lead: tuple[int, ...]
) -> PyTree:
    """Pytree like `params` with leading axes `lead`: `act` on active leaves, zeros elsewhere."""
    it = iter(act)
    full = [
        next(it) if a else jnp.zeros((*lead, *jnp.shape(leaf)), jnp.result_type(leaf))
        for leaf, a in zip(jax.tree.leaves(params), active, strict=True)
    ]
    return jax.tree.unflatten(jax.tree.structure(params), full)


class _APGDState(NamedTuple):
    delta: list[jax.Array]  # current iterate δ_k
    prev: list[jax.Array]  # previous iterate δ_{k-1} (momentum)
    grad: list[jax.Array]  # ∇L at the gradient point (δ_k, or the best point after a restart)
    best: list[jax.Array]  # best iterate so far
    best_grad: list[jax.Array]
    best_loss: jax.Array
    eta: jax.Array  # step size
    n_improved: jax.Array  # steps that raised the best loss since the last checkpoint
    best_loss_at_cp: jax.Array  # best loss at the last checkpoint
    halved_at_cp: jax.Array  # whether η was halved at the last checkpoint
    last_cp: jax.Array  # iteration of the last checkpoint


class _APGDStep(NamedTuple):  # one iteration, for `_apgd_trajectory`
    delta: list[jax.Array]  # δ_{i+1}
    loss: jax.Array  # L(w + δ_{i+1})
    eta: jax.Array  # the step size this iteration used
    halved: jax.Array  # whether η was halved after this iteration


def _apgd_one_batch(
    loss_fn, params, rho, weights, batch, kb, init, *, active, n_iters, adaptive, variant,
    geometry, start, trace=False,
):  # fmt: skip
    """(max loss - loss at w, the best δ, the iterates if `trace` else None) on one batch."""
    parts = _apgd_parts(
        loss_fn,
        params,
        rho,
        weights,
        batch,
        active=active,
        adaptive=adaptive,
        variant=variant,
        geometry=geometry,
        start=start,
        trace=trace,
    )
    is_cp = jnp.zeros((n_iters,), bool)
    cps = [i for i in apgd_checkpoints(n_iters) if i < n_iters]
    if cps:
        is_cp = is_cp.at[jnp.asarray(cps)].set(True)
    state, base = parts.start(kb, init)
    final, steps = lax.scan(parts.step, state, (jnp.arange(n_iters), is_cp))
    value, best = _apgd_finish(final, base)
    return value, best, steps


def _apgd_finish(state: _APGDState, base: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    """(best loss - L(w), best δ), or (0, zeros) when no iterate beat δ = 0."""
    better = state.best_loss > base
    value = jnp.where(better, state.best_loss - base, 0.0)
    return value, [jnp.where(better, b, jnp.zeros_like(b)) for b in state.best]


class _APGDParts(NamedTuple):
    start: Callable  # (kb, init) -> (state at δ_0, L(w))
    step: Callable  # (state, (i, is_checkpoint)) -> (state, _APGDStep or None)


def _apgd_parts(
    loss_fn, params, rho, weights, batch, *, active, adaptive, variant, geometry, start,
    trace=False,
):  # fmt: skip
    """Auto-PGD on one batch as a start and a step (see `worst_sharpness` for the algorithm)."""
    act = select_active(params, active)
    c = _scales(act, weights, adaptive)
    reference = variant == "reference"
    exact_ellipsoid = adaptive and geometry == "ellipsoid"

    def proj(v):
        return project_ellipsoid(v, c, rho, metric="euclidean" if exact_ellipsoid else "scaled")

    def loss_at(delta):
        new = [a + d for a, d in zip(act, delta, strict=True)]
        return _scalar_loss(loss_fn, merge_active(params, active, new), batch)

    value_and_grad = jax.value_and_grad(loss_at)

    def start_state(kb, init):
        d0 = _initial_delta(kb, init, params, active, act, c, rho, proj, start)
        l0, g0 = value_and_grad(d0)
        state = _initial_state(d0, l0, g0, rho)
        base = l0 if start == "zero" else _scalar_loss(loss_fn, params, batch)
        return state, base

    def step(s: _APGDState, inp):
        i, cp = inp
        direction = _ascent_direction(s.grad, c, weights, geometry, reference)
        z = proj([(d + s.eta * u).astype(d.dtype) for d, u in zip(s.delta, direction, strict=True)])
        new = _momentum_step(s, z, i, proj, reference)
        loss, grad = value_and_grad(new)
        state, halve = _schedule(s, new, loss, grad, i, cp, reference)
        return state, (_APGDStep(new, loss, s.eta, halve) if trace else None)

    return _APGDParts(start_state, step)


def _where(cond, a, b):
    return [jnp.where(cond, x, y) for x, y in zip(a, b, strict=True)]


def _initial_delta(kb, init, params, active, act, c, rho, proj, start):
    """δ_0: zero, random on the constraint's surface, or the given warm start projected."""
    if start == "random":
        noise = _standard_normal_leaves(kb, params, active)
        z = [cj * x for cj, x in zip(c, noise, strict=True)]
        d0 = proj([x * (rho / jnp.maximum(_weighted_norm(z, c), 1e-30)) for x in z])
    elif start == "given":
        d0 = proj([d.astype(a.dtype) for d, a in zip(init, act, strict=True)])
    else:
        d0 = [jnp.zeros_like(a) for a in act]
    return d0


def _initial_state(d0, l0, g0, rho) -> _APGDState:
    """The state at δ_0 (loss l0, gradient g0): η = 2ρ, the best point δ_0, no checkpoint yet."""
    return _APGDState(
        delta=d0,
        prev=d0,
        grad=g0,
        best=d0,
        best_grad=g0,
        best_loss=l0,
        eta=2.0 * rho,
        n_improved=jnp.zeros((), jnp.int32),
        best_loss_at_cp=l0,
        halved_at_cp=jnp.zeros((), bool),
        last_cp=jnp.zeros((), jnp.int32),
    )


def _ascent_direction(g, c, weights, geometry, reference):
    # "ellipsoid": c ⊙ g / ||g||₂, the norm over the trainable entries ("reference", as
    # their code) or over the entries that can move, c > 0 ("croce_hein");
    # "scaled": c ⊙ (c ⊙ g) / ||c ⊙ g||₂, the normalised gradient in u = δ ⊙ c⁻¹, mapped back.
    if geometry == "scaled":
        h = [cj * gj for gj, cj in zip(g, c, strict=True)]
    elif reference:
        h = [jnp.where(wj > 0, gj, 0) for gj, wj in zip(g, weights, strict=True)]
    else:
        h = [jnp.where(cj > 0, gj, 0) for gj, cj in zip(g, c, strict=True)]
    norm = jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in h))
    return [cj * x / (norm + 1e-12) for cj, x in zip(c, h, strict=True)]


def _momentum_step(s: _APGDState, z, i, proj, reference):
    """δ_{i+1} from the projected step z, δ_i and δ_{i-1}."""
    if reference:  # their mix of z with δ_{k-1}, unprojected (a convex combination)
        return [
            (APGD_MOMENTUM * zj + (1 - APGD_MOMENTUM) * p).astype(zj.dtype)
            for zj, p in zip(z, s.prev, strict=True)
        ]
    # Croce & Hein's momentum step, α = 1 at the first step
    alpha = jnp.where(i == 0, 1.0, APGD_MOMENTUM)
    return proj(
        [
            (d + alpha * (zj - d) + (1 - alpha) * (d - p)).astype(d.dtype)
            for d, zj, p in zip(s.delta, z, s.prev, strict=True)
        ]
    )


def _schedule(s: _APGDState, new, loss, grad, i, cp, reference) -> tuple[_APGDState, jax.Array]:
    """(the state after iterate `new`, whether η was halved): best point and step-size schedule."""
    improved = loss > s.best_loss
    best_loss = jnp.where(improved, loss, s.best_loss)
    n_improved = s.n_improved + improved.astype(jnp.int32)
    # APGD step-size schedule: at a checkpoint, halve η and restart from the best point
    # if (1) too few steps improved since the last checkpoint or (2) η was not halved
    # there and the best loss has not moved since.
    too_few = n_improved < APGD_MIN_UPDATE_RATIO * (i - s.last_cp)
    stalled = jnp.logical_not(s.halved_at_cp) & (best_loss == s.best_loss_at_cp)
    halve = cp & (too_few | stalled)
    best = _where(improved, new, s.best)
    best_grad = _where(improved, grad, s.best_grad)
    state = _APGDState(
        # "reference" restarts only the gradient point; "croce_hein" the iterate itself.
        delta=new if reference else _where(halve, best, new),
        prev=s.delta if reference else _where(halve, best, s.delta),
        grad=_where(halve, best_grad, grad),
        best=best,
        best_grad=best_grad,
        best_loss=best_loss,
        eta=jnp.where(halve, 0.5 * s.eta, s.eta),
        n_improved=jnp.where(cp, 0, n_improved),
        best_loss_at_cp=jnp.where(cp, best_loss, s.best_loss_at_cp),
        halved_at_cp=jnp.where(cp, halve, s.halved_at_cp),
        last_cp=jnp.where(cp, i, s.last_cp),
    )
    return state, halve


def _apgd_trajectory(
    loss_fn: LossFn,
    params: PyTree,
    batch: PyTree,
    *,
    rho: float,
    n_iters: int,
    adaptive: bool = True,
    variant: str = "reference",
    geometry: str = "ellipsoid",
) -> dict[str, Any]:
    """Auto-PGD on one batch with every iterate kept (tests and diagnostics; zero start).

    Returns {"delta": pytree like `params` with a leading axis n_iters holding δ_1 .. δ_n,
    "loss": L(w + δ_i), "eta": the step size iteration i used, "halved": whether η was halved
    after it, "value", "best"} as `worst_sharpness` computes them for this batch alone.
    """
    if variant not in VARIANTS or geometry not in GEOMETRIES:
        raise ValueError(f"variant in {VARIANTS}, geometry in {GEOMETRIES}")
    active, weights = resolve_trainable(params, None)
    run = jax.jit(
        functools.partial(
            _apgd_one_batch,
            loss_fn,
            active=active,
            n_iters=n_iters,
            adaptive=adaptive,
            variant=variant,
            geometry=geometry,
            start="zero",
            trace=True,
        )
    )
    value, best, steps = run(params, jnp.asarray(rho, jnp.float32), weights, batch, None, [])
    return {
        "delta": _full_tree(params, active, steps.delta, (n_iters,)),
        "loss": steps.loss,
        "eta": steps.eta,
        "halved": steps.halved,
        "value": value,
        "best": _full_tree(params, active, best, ()),
    }
