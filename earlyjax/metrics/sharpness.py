"""Average-case and worst-case (Auto-PGD) sharpness (Liu & Gurevych, §3.2 Eqs. 3-4; §4; App. B).

    S_avg = E_{δ ~ N(0, ρ² diag(c²))} L(w + δ) - L(w),
    S_worst = max_{||δ ⊙ c⁻¹||₂ <= ρ} L(w + δ) - L(w).

The paper writes L(w - δ); both the Gaussian and the L2 ellipsoid are symmetric, so the sign is
immaterial. The paper points to Andriushchenko et al. (ICML 2023, "A modern look at the
relationship between sharpness and generalization") for the implementation, and where the paper is
silent their choices are followed:

* adaptive scaling c = |w| for *every* parameter, BatchNorm scale and bias included, with no √d
  normalisation; `adaptive=False` uses c = 1;
* BatchNorm in eval mode (the caller closes its running statistics into `loss_fn`);
* the metric set is the first 2048 training points, un-augmented, in batches of 256 (the paper's
  App. B), passed here as `batches` with a leading batch-index axis;
* each batch is treated independently and the metric is the mean over batches of the per-batch
  sharpness (fresh noise / its own worst-case δ per batch).

One pitfall of the reference code is avoided: a parameter that is exactly 0 (zero-initialised
bias, frozen BN bias) has c = 0, which made their weighted norm 0/0 = NaN and silently skipped the
projection. Here entries with c = 0 are never perturbed and are left out of the weighted norm.
With `trainable`, only trainable leaves are perturbed (frozen leaves get c = 0).

`worst_sharpness` runs Auto-PGD as Andriushchenko et al.'s code does by default (their update,
step-size schedule and restart; its docstring lists the departures: float rounding, their
projection's 1e-5 stopping tolerance, and the c = 0 guard). That algorithm can stop short of the
maximum of Eq. 4; `variant="croce_hein"` and `geometry="scaled"` are better maximisers, opt-in, with
their measured differences stated there.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh

from earlyjax.metrics._common import (
    call_fitting_inputs,
    check_batches,
    check_finite,
    check_key,
    check_mesh,
    check_positive_int,
    check_rho,
    device_map,
    merge_active,
    place_on_mesh,
    resolve_trainable,
    select_active,
)

PyTree = Any
LossFn = Callable[[PyTree, PyTree], jax.Array]

APGD_MOMENTUM = 0.75  # weight of the new point, Croce & Hein (2020) alpha
APGD_MIN_UPDATE_RATIO = 0.75  # condition 1 of APGD's step-size schedule
N_BISECT = 48  # bisection steps on the Lagrange multiplier of the ellipsoid projection
PROJECTION_METRICS = ("euclidean", "scaled")
GEOMETRIES = ("ellipsoid", "scaled")
VARIANTS = ("reference", "croce_hein")


def _scalar_loss(loss_fn: LossFn, params: PyTree, batch: PyTree) -> jax.Array:
    loss = loss_fn(params, batch)
    if jnp.shape(loss) != ():
        raise ValueError(
            f"loss_fn must return the scalar mean loss of one batch, got shape {jnp.shape(loss)}"
        )
    return jnp.asarray(loss, jnp.float32)


def _scales(
    act: Sequence[jax.Array], weights: Sequence[jax.Array], adaptive: bool
) -> list[jax.Array]:
    """c per active leaf: w_j * |leaf| (adaptive) or the scalar w_j (0 for a traced frozen leaf)."""
    if adaptive:
        return [w.astype(a.dtype) * jnp.abs(a) for a, w in zip(act, weights, strict=True)]
    return [w.astype(a.dtype) for a, w in zip(act, weights, strict=True)]


def _standard_normal_leaves(
    key: jax.Array, params: PyTree, active: Sequence[bool]
) -> list[jax.Array]:
    """N(0, 1) noise shaped like the active leaves, from ONE draw over all of `params`.

    One draw of P normals (every leaf, frozen ones included, in `jax.tree.leaves` order) split
    into leaves: a frozen leaf does not change the noise of the others, and the compiled program
    holds one random-number generator instead of one per leaf (per-leaf draws compiled 5x slower
    for a 4-leaf MLP on CPU, and ResNet-18 has 62 leaves).
    """
    leaves = jax.tree.leaves(params)
    sizes = [math.prod(jnp.shape(leaf)) for leaf in leaves]
    flat = jax.random.normal(key, (sum(sizes),), jnp.float32)
    offsets = [0, *itertools.accumulate(sizes)]
    return [
        flat[offsets[i] : offsets[i + 1]].reshape(jnp.shape(leaf)).astype(jnp.result_type(leaf))
        for i, (leaf, a) in enumerate(zip(leaves, active, strict=True))
        if a
    ]


def _common_checks(loss_fn: Any, batches: PyTree, key: Any, rho: Any) -> jax.Array:
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable as loss_fn(params, batch), got {loss_fn!r}")
    check_batches(batches)
    check_rho(rho)
    return check_key(key)


# ----------------------------------------------------------------------------------------------
# Average-case sharpness
# ----------------------------------------------------------------------------------------------


def average_sharpness(
    loss_fn: LossFn,
    params: PyTree,
    batches: PyTree,
    key: jax.Array,
    *,
    rho: float = 0.01,
    n_samples: int = 15,
    adaptive: bool = True,
    trainable: PyTree | None = None,
    shared_noise: bool = False,
    samples_per_pass: int | None = None,
    mesh: Mesh | None = None,
) -> jax.Array:
    """Average-case sharpness of Eq. 3, a float32 scalar in the units of the loss (may be < 0).

    Args:
      loss_fn: `loss_fn(params, batch) -> scalar mean loss` of one batch (eval mode).
      params: the parameter pytree w.
      batches: the pytree `batch` with an extra leading axis B indexing batches, e.g.
        (images[8, 256, 32, 32, 3], labels[8, 256]) for the paper's 2048 points.
      key: PRNG key. Perturbation s of batch b uses `split(split(key, B)[b], n_samples)[s]`
        (with `shared_noise`, `split(key, n_samples)[s]` for every batch) for one draw of P
        normals over all leaves of `params`, so a frozen leaf does not change the noise of the
        others.
      rho: noise scale ρ >= 0 (the paper: 0.01). ρ = 0 gives 0 up to float rounding (the
        vmapped perturbed forward and the plain one may differ in the last bits).
      n_samples: perturbations per batch (the paper: 15).
      adaptive: c = |w| (default, as Andriushchenko et al.); False: c = 1.
      trainable: optional pytree of scalar bools; frozen leaves are not perturbed.
      shared_noise: False (default, as Andriushchenko et al.'s code): fresh noise for every batch
        and the mean over batches of (mean_s L_b(w + δ_bs) - L_b(w)). True: one set of
        `n_samples` perturbations shared by all batches (the metric set as a whole).
      samples_per_pass: perturbations evaluated together in one vmapped pass. None: by
        backend, one at a time on a CPU (there 7.8x faster than all at once: 1.19 vs 9.34 s
        for 15 samples of ResNet-18 at width 8 on 256 points, `benchmarks/metrics.py`), else
        all `n_samples` (or a device's share of them with a mesh). Lower it to bound memory: a
        pass holds that many copies of the perturbed parameters and of the activations, and
        the noise of two passes (the next one is drawn ahead).
      mesh: optional device mesh (e.g. `earlyjax.parallel.data_mesh()`): the perturbation
        samples of each batch are split over its devices; the value equals the single-device
        one up to float reassociation.

    Cost: B x (n_samples + 1) forward passes (no backward; the n_samples perturbed ones vmapped)
    and B x n_samples x P normal draws.
    """
    key = _common_checks(loss_fn, batches, key, rho)
    check_positive_int("n_samples", n_samples, "the paper uses 15")
    if samples_per_pass is not None:
        check_positive_int("samples_per_pass", samples_per_pass, "or None for all at once")
    mesh = check_mesh(mesh)
    active, weights = resolve_trainable(params, trainable)
    check_finite("params", params)
    check_finite("batches", batches)
    params, batches = place_on_mesh((params, batches), mesh)
    return call_fitting_inputs(
        lambda: _average_jit(
            loss_fn,
            params,
            batches,
            key,
            jnp.asarray(rho, jnp.float32),
            weights,
            active=active,
            n_samples=n_samples,
            adaptive=bool(adaptive),
            shared_noise=bool(shared_noise),
            samples_per_pass=samples_per_pass,
            mesh=mesh,
        ),
        "average_sharpness",
        loss_fn,
        params,
        batches=batches,
    )


@functools.partial(
    jax.jit,
    static_argnames=(
        "loss_fn",
        "active",
        "n_samples",
        "adaptive",
        "shared_noise",
        "samples_per_pass",
        "mesh",
    ),
)
def _average_jit(
    loss_fn, params, batches, key, rho, weights, *, active, n_samples, adaptive, shared_noise,
    samples_per_pass, mesh,
):  # fmt: skip
    n_batches = jax.tree.leaves(batches)[0].shape[0]
    losses = functools.partial(
        _perturbed_losses,
        loss_fn,
        active=active,
        adaptive=adaptive,
        samples_per_pass=samples_per_pass,
    )

    def per_batch(batch, kb):
        base = _scalar_loss(loss_fn, params, batch)
        ks = jax.random.split(kb, n_samples)
        shared = (params, rho, weights, batch)
        return jnp.mean(device_map(lambda sh, k: losses(*sh, k), shared, ks, mesh) - base)

    if shared_noise:
        vals = lax.map(lambda b: per_batch(b, key), batches)
    else:
        vals = lax.map(lambda inp: per_batch(*inp), (batches, jax.random.split(key, n_batches)))
    return jnp.mean(vals)


def _perturbed_losses(
    loss_fn, params, rho, weights, batch, keys, *, active, adaptive, samples_per_pass
):  # fmt: skip
    """L(w + ρ c ⊙ z_k) on `batch` for the noise z_k of each key, `samples_per_pass` at a time.

    Each pass's noise is drawn one pass ahead and carried into the loop iteration that uses
    it. Noise drawn in the same computation as the forward pass gets fused into its
    activation-sized loops: XLA:CPU recomputed each BatchNorm parameter's normal draw for
    every activation it scales, which made S_avg 2.1x slower (ResNet-18 width 8, 2 x 256
    points); carried in, the noise is read from memory.
    """
    act = select_active(params, active)
    c = _scales(act, weights, adaptive)

    def draw(pass_keys):
        return jax.vmap(lambda k: _standard_normal_leaves(k, params, active))(pass_keys)

    def losses(noise):
        def perturbed_loss(z):
            new = [(a + rho * cj * zj).astype(a.dtype) for a, cj, zj in zip(act, c, z, strict=True)]
            return _scalar_loss(loss_fn, merge_active(params, active, new), batch)

        return jax.vmap(perturbed_loss)(noise)

    n_samples = keys.shape[0]
    if samples_per_pass is None and jax.default_backend() == "cpu":
        samples_per_pass = 1  # XLA:CPU runs a vmapped pass of perturbed weights slowly
    per_pass = min(samples_per_pass or n_samples, n_samples)
    n_passes = -(-n_samples // per_pass)
    padded = jnp.concatenate([keys, keys[: n_passes * per_pass - n_samples]])  # cut below
    passes = padded.reshape(n_passes, per_pass, *keys.shape[1:])

    def one_pass(noise, next_keys):
        return draw(next_keys), losses(noise)

    # The last iteration draws (and drops) the first pass's noise again: one extra draw,
    # negligible beside the passes' forwards.
    _, out = lax.scan(one_pass, draw(passes[0]), jnp.roll(passes, -1, axis=0))
    return out.reshape(-1)[:n_samples]


# ----------------------------------------------------------------------------------------------
# Worst-case sharpness with Auto-PGD
# ----------------------------------------------------------------------------------------------


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


def _weighted_norm(delta: Sequence[jax.Array], c: Sequence[jax.Array]) -> jax.Array:
    """||δ ⊙ c⁻¹||₂ over the entries with c > 0 (float32); entries with c = 0 are ignored."""
    total = jnp.zeros((), jnp.float32)
    for d, cj in zip(delta, c, strict=True):
        cj = jnp.broadcast_to(cj, d.shape)
        ratio = d / jnp.where(cj > 0, cj, 1)
        total = total + jnp.sum(jnp.square(jnp.where(cj > 0, ratio, 0).astype(jnp.float32)))
    return jnp.sqrt(total)


def project_ellipsoid(
    v: Sequence[jax.Array],
    c: Sequence[jax.Array],
    rho: jax.Array,
    *,
    metric: str = "euclidean",
) -> list[jax.Array]:
    """Projection of v onto the ellipsoid {δ : ||δ ⊙ c⁻¹||₂ <= ρ, δ = 0 where c = 0}.

    Lists of arrays (one per leaf) in and out; `c` entries broadcast against `v`.
    metric="euclidean": the nearest point in ||δ - v||₂. The minimiser is δ = v c² / (c² + μ),
    with the Lagrange multiplier μ = 0 when v is inside and otherwise the root of
    ||v c / (c² + μ)||₂ = ρ. That root lies in [||v c||₂/ρ - max c², ||v c||₂/ρ] (bound c² + μ
    by μ and by max c² + μ), which N_BISECT bisection steps shrink far below float32
    resolution, ending on the feasible side; a final rescale guards the constraint against
    rounding. metric="scaled": the nearest point in ||(δ - v) ⊙ c⁻¹||₂, i.e. the projection
    onto the ball ||u||₂ <= ρ in the coordinates u = δ ⊙ c⁻¹: a plain rescale of v. The two
    agree when c takes one nonzero value. Entries with c = 0 come out exactly 0: a parameter
    that is exactly zero never produces 0/0 (the pitfall of the reference code, which then
    skipped the projection silently).
    """
    if metric not in PROJECTION_METRICS:
        raise ValueError(f"metric must be one of {PROJECTION_METRICS}, got {metric!r}")
    c = [jnp.broadcast_to(cj, vj.shape) for vj, cj in zip(v, c, strict=True)]
    v = [jnp.where(cj > 0, vj, 0) for vj, cj in zip(v, c, strict=True)]
    tiny = jnp.finfo(jnp.float32).tiny
    if metric == "euclidean":
        c2 = [jnp.square(cj.astype(jnp.float32)) for cj in c]
        vc = [vj.astype(jnp.float32) * cj for vj, cj in zip(v, c, strict=True)]

        def sq_norm_at(mu):  # ||δ(μ) ⊙ c⁻¹||² with δ(μ)/c = v c / (c² + μ)
            return sum(
                jnp.sum(jnp.square(vcj / jnp.where(c2j > 0, c2j + mu, 1)))
                for vcj, c2j in zip(vc, c2, strict=True)
            )

        def bisect(_, bounds):
            lo, hi = bounds
            mid = 0.5 * (lo + hi)
            feasible = sq_norm_at(mid) <= jnp.square(rho)
            return jnp.where(feasible, lo, mid), jnp.where(feasible, mid, hi)

        vc_norm = jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in vc))
        hi = vc_norm / jnp.maximum(rho, tiny)
        max_c2 = functools.reduce(jnp.maximum, [jnp.max(x, initial=0.0) for x in c2])
        lo = jnp.maximum(hi - max_c2, 0.0)
        _, mu = lax.fori_loop(0, N_BISECT, bisect, (lo, hi))
        mu = jnp.where(_weighted_norm(v, c) > rho, mu, 0.0)
        v = [
            (vj * (c2j / jnp.where(c2j > 0, c2j + mu, 1))).astype(vj.dtype)
            for vj, c2j in zip(v, c2, strict=True)
        ]
    norm = _weighted_norm(v, c)
    scale = jnp.where(norm > rho, rho / jnp.maximum(norm, tiny), 1.0)
    return [vj * scale.astype(vj.dtype) for vj in v]


def worst_sharpness(
    loss_fn: LossFn,
    params: PyTree,
    batches: PyTree,
    key: jax.Array,
    *,
    rho: float = 0.01,
    n_iters: int = 20,
    adaptive: bool = True,
    trainable: PyTree | None = None,
    variant: str = "reference",
    geometry: str = "ellipsoid",
    random_init: bool = False,
    init: PyTree | None = None,
    mesh: Mesh | None = None,
) -> tuple[jax.Array, PyTree]:
    """Worst-case sharpness of Eq. 4 (L2, ||δ ⊙ c⁻¹||₂ <= ρ) by Auto-PGD; returns (value, delta).

    value: float32 scalar, mean over batches of max_k L_b(w + δ_k) - L_b(w) over the iterates δ_k
    of batch b (δ = 0 included, so value >= 0). delta: pytree like `params`, each leaf with a
    leading axis B: the best perturbation found for each batch (zeros on frozen leaves), which
    satisfies the constraint and can be reused.

    Default (`variant="reference"`, `geometry="ellipsoid"`): Auto-PGD as Andriushchenko et al.
    implement it (`eval_APGD_sharpness` / `weight_ascent_step_momentum` in
    tml-epfl/sharpness-vs-generalization, `--algorithm m_apgd_l2`, their scripts' defaults:
    zero start, one restart, `step_size_mult` 1), per batch:

    1. δ_0 = δ_{-1} = 0; the gradient point is w; η = 2ρ; best loss = L(w), best point w.
    2. Iteration i = 0 .. n_iters-1: g = ∇L at the gradient point;
       z = P(δ_i + η c ⊙ g / (||g||₂ + 1e-12)), the norm over all entries of the trainable
       leaves and P the Euclidean projection onto the ellipsoid (for `adaptive=False`, c = 1
       and P rescales δ to norm ρ when it is longer); then
       δ_{i+1} = 0.75 z + 0.25 δ_{i-1} (not projected again: a convex combination of feasible
       points is feasible), and the gradient point becomes w + δ_{i+1}.
    3. If L(w + δ_{i+1}) > best loss (strictly), it becomes the best point and loss and counts
       as an improvement.
    4. At a checkpoint i of `apgd_checkpoints(n_iters)` halve η if (1) fewer than
       0.75 (i - i_prev) improvements happened since the previous checkpoint i_prev (0 at
       first), or (2) η was not halved at i_prev and the best loss equals the one at i_prev
       (L(w) at first). On halving the gradient point moves to the best point; δ_{i+1} and
       δ_i, which the next update uses, stay. Then the count restarts at 0 and i_prev = i.
    5. Return best loss - L(w) (their value is the mean of that over the batches).

    Departures from their code; none changes the result beyond float rounding except where
    their code misbehaves (c = 0) or within the stated tolerance:

    * c = 0 entries (a parameter exactly 0, e.g. a zero-initialised bias at step 0): their
      weighted norm divides 0/0 = NaN, `NaN > ρ` is False and the projection is silently
      skipped, so δ is unconstrained. Here such entries are left out of the norm (they never
      move: their step is c ⊙ g = 0) and the projection applies. Their gradients still enter
      ||g||₂, as in their code.
    * P is solved to float32 resolution (`project_ellipsoid`); their bisection on the Lagrange
      multiplier stops once | ||δ ⊙ c⁻¹||₂ - ρ | <= 1e-5 (absolute), which can leave δ up to
      1e-5 outside or inside the surface, a relative 1e-3 at ρ = 0.01. Measured with
      `their_apgd(..., tol=1e-5)` vs `tol=1e-12` (tests/test_metrics.py) on 10 random softmax
      regressions (20 features, 10 classes, 64 points, 20 iterations): S_worst within ±0.08%
      at ρ = 0.01, ±0.02% at ρ = 0.05.
    * Frozen leaves (`trainable`; their code has none) are not parameters at all: not
      perturbed and not in ||g||₂.
    * `random_init` is an extension: their random start (`rand_init=True`) fails
      (`init_fn` is bound to a 1-tuple) and their scripts leave it off.
    * Reductions run in float32 in XLA's order rather than PyTorch's.

    Opt-in variants (`variant` and `geometry` combine freely; the two geometries coincide for
    `adaptive=False`):

      variant="croce_hein" (this module's default before; closer to Croce & Hein's paper):
        δ_{i+1} = P(δ_i + α(z - δ_i) + (1 - α)(δ_i - δ_{i-1})), α = 0.75, with α = 1 at the
        first step (δ_1 = z); on halving the iterate itself restarts from the best point
        (δ, its gradient, no momentum); ||g||₂ only over entries with c > 0, so a zero
        parameter behaves exactly like a frozen one.
      geometry="scaled": Auto-PGD in the coordinates u = δ ⊙ c⁻¹, where the constraint is the
        ball ||u||₂ <= ρ: dir = c² ⊙ g / ||c ⊙ g||₂ in δ (the normalised gradient in u, mapped
        back) and P a rescale (`project_ellipsoid(..., metric="scaled")`). The default
        ("ellipsoid") pairs dir = c ⊙ g / ||g||₂ with the Euclidean projection, which is
        inconsistent: a fixed point of P(δ + η c ⊙ g) has c ⊙ g parallel to δ ⊙ c⁻² (the
        ellipsoid's normal), while a maximiser of Eq. 4 has g parallel to δ ⊙ c⁻², so the
        iterates can settle short of the maximum (on a tiny MLP below the single step
        ρ c² ⊙ g / ||c ⊙ g||₂, the linearised maximiser). "scaled" has the maximisers of Eq. 4
        as fixed points; use it (with "croce_hein") when the maximum itself matters.

    Measured: S_worst of each variant relative to the default's, (variant - default) / default,
    range over seeds and states; 20 iterations, adaptive, eval-mode BN; CPU, jax 0.10.2; from
    `python benchmarks/metrics.py --apgd-variants mlp --rho 0.01 0.05` and
    `python benchmarks/metrics.py --apgd-variants resnet18 --width 4 --seeds 2`:

      model, states (seeds x {init, trained})  ρ     croce_hein    +scaled       croce_hein+scaled
      BN-MLP 20-32-32-10, 5 x {0, 200 steps}   0.01  +4.1..+5.4%   +6.7..+7.6%   +6.7..+7.6%
      BN-MLP 20-32-32-10, 5 x {0, 200 steps}   0.05  +4.1..+5.5%   +6.8..+7.7%   +6.8..+7.7%
      ResNet-18 width 4, 28x28x1, 2 x {0, 100} 0.01  -0.8..+0.2%   +3.5..+7.7%   +3.6..+7.7%

    ("+scaled": `variant="reference", geometry="scaled"`.) "scaled" finds a larger loss than
    the default in every case; "croce_hein" does on the BN-MLP and is within ±0.8% of it on
    ResNet-18. The gaps are similar across seeds and training states: the default is a
    consistent underestimate of the maximum of Eq. 4, not a noisy one.

    Args:
      loss_fn, params, batches: as in `average_sharpness`.
      key: PRNG key, used only by `random_init` (batch b uses `split(key, B)[b]`).
      rho: radius ρ >= 0 (the paper: 0.01). n_iters: APGD iterations (their scripts: 20).
      adaptive: c = |w| (default) or c = 1. trainable: frozen leaves are not perturbed.
      variant: "reference" (default) or "croce_hein", see above.
      geometry: "ellipsoid" (default) or "scaled", see above.
      random_init: start from a random point on the ellipsoid's surface (from `key`) instead of
        δ = 0; the value still counts δ = 0.
      init: start batch b from `init[b]` (a pytree like the returned δ) instead of δ = 0,
        projected onto the constraint set at `params`; the value still counts δ = 0. To
        continue a search at the same weights (more iterations from its best δ, which it
        cannot end below). Not a cheaper substitute for the cold start at new weights:
        started from the previous recording's δ (10 training steps earlier), S_worst came out
        below the cold start at every one of 40 recordings, median -11.9% (range -14.1% ..
        -4.8%) with the same 20 iterations and -14.2% with 5 (ResNet-18 width 4, 2 seeds,
        every 10 steps to 200, `python benchmarks/metrics.py --apgd-warm-start resnet18
        --width 4 --seeds 2`), so the recorder does not use it.
      mesh: optional device mesh (e.g. `earlyjax.parallel.data_mesh()`): the batches are split
        over its devices, each running Auto-PGD on its own batches; the value equals the
        single-device one up to float reassociation.

    Cost: per batch n_iters + 1 forward+backward passes (+1 forward with `random_init`) and
    n_iters ("reference") or 2 n_iters ("croce_hein") projections over the parameters; with
    "ellipsoid" and `adaptive` each projection makes N_BISECT passes over the parameters,
    otherwise one. On a CPU, called with concrete inputs (not inside a `jit`) and without a
    mesh, the iterations run as calls of one compiled step (`apgd_runs_on_host`: XLA:CPU runs a
    convolution's weight gradient ~20x slower inside a loop body); elsewhere as a `lax.scan`.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
    key = _common_checks(loss_fn, batches, key, rho)
    check_positive_int("n_iters", n_iters, "their scripts use 20")
    mesh = check_mesh(mesh)
    active, weights = resolve_trainable(params, trainable)
    check_finite("params", params)
    check_finite("batches", batches)
    n_batches = jax.tree.leaves(batches)[0].shape[0]
    init_act = _check_init(init, params, active, n_batches, random_init)
    params, batches, init_act = place_on_mesh((params, batches, init_act), mesh)
    host = apgd_runs_on_host(mesh, params, batches, key, rho, trainable, init)
    start = "given" if init is not None else "random" if random_init else "zero"
    run = _worst_host_loop if host else _worst_jit
    value, best = call_fitting_inputs(
        lambda: run(
            loss_fn,
            params,
            batches,
            key,
            init_act,
            jnp.asarray(rho, jnp.float32),
            weights,
            active=active,
            n_iters=n_iters,
            adaptive=bool(adaptive),
            variant=variant,
            geometry=geometry,
            start=start,
            mesh=mesh,
        ),
        "worst_sharpness",
        loss_fn,
        params,
        batches=batches,
    )
    return value, _full_tree(params, active, best, (n_batches,))


def _check_init(
    init: PyTree | None, params: PyTree, active: Sequence[bool], n_batches: int, random_init: bool
) -> list[jax.Array]:
    """The active leaves of a warm start `init` (empty without one), checked against params."""
    if init is None:
        return []
    if random_init:
        raise ValueError("worst_sharpness: pass init (a warm start) or random_init=True, not both")
    want = [(n_batches, *jnp.shape(leaf)) for leaf in jax.tree.leaves(params)]
    got = [jnp.shape(leaf) for leaf in jax.tree.leaves(init)]
    if jax.tree.structure(init) != jax.tree.structure(params) or got != want:
        raise ValueError(
            "worst_sharpness: init must be a pytree like params with a leading axis of "
            f"{n_batches} (one δ per batch), as worst_sharpness returns it; got leaf shapes "
            f"{got[:3]}... for {want[:3]}..."
        )
    check_finite("init", init)
    return select_active(init, active)


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


def apgd_runs_on_host(mesh: Mesh | None = None, *inputs: PyTree) -> bool:
    """Whether `worst_sharpness(..., mesh=mesh)` on these inputs drives Auto-PGD from Python.

    On XLA:CPU a convolution's weight gradient inside a loop body is not rewritten into the
    layout its fast convolution kernels take and runs as a naive loop (jax-ml/jax#12868): one
    Auto-PGD iteration of ResNet-18 (width 8, 2 x 64 points) took 17.8x a forward+backward
    inside `lax.scan` against 0.9x driven from Python, with the same value. So on a CPU, with
    concrete inputs (not inside the caller's `jit`) and no mesh, each batch's iterations are
    calls of one compiled step; everywhere else they stay one `lax.scan` program.
    """
    if mesh is not None or jax.default_backend() != "cpu":
        return False
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(inputs))


_APGD_STATIC = ("loss_fn", "active", "adaptive", "variant", "geometry", "start")
STARTS = ("zero", "random", "given")  # δ_0: zero, random on the surface, a given warm start


@functools.partial(jax.jit, static_argnames=(*_APGD_STATIC, "n_iters", "mesh"))
def _worst_jit(
    loss_fn, params, batches, key, init, rho, weights, *, active, n_iters, adaptive, variant,
    geometry, start, mesh,
):  # fmt: skip
    n_batches = jax.tree.leaves(batches)[0].shape[0]
    run = functools.partial(
        _apgd_one_batch,
        loss_fn,
        active=active,
        n_iters=n_iters,
        adaptive=adaptive,
        variant=variant,
        geometry=geometry,
        start=start,
    )

    def run_batches(sh, b_k):
        def one(inp):
            value, best, _ = run(*sh, *inp)
            return value, best

        return lax.map(one, b_k)

    shared = (params, rho, weights)
    xs = (batches, jax.random.split(key, n_batches), init)
    vals, best = device_map(run_batches, shared, xs, mesh)
    return jnp.mean(vals), best


def _worst_host_loop(
    loss_fn, params, batches, key, init, rho, weights, *, active, n_iters, adaptive, variant,
    geometry, start, mesh,
):  # fmt: skip
    """`_worst_jit` with the loops over batches and iterations driven from Python."""
    del mesh  # `apgd_runs_on_host` only picks this path without one
    static = {
        "active": active,
        "adaptive": adaptive,
        "variant": variant,
        "geometry": geometry,
        "start": start,
    }
    start_fn, step_fn = _host_programs(loss_fn, **static)
    checkpoints = set(apgd_checkpoints(n_iters))
    n_batches = jax.tree.leaves(batches)[0].shape[0]
    keys = jax.random.split(key, n_batches)
    values, bests = [], []
    for b in range(n_batches):
        batch = jax.tree.map(lambda x, b=b: x[b], batches)
        shared = (params, rho, weights, batch)
        state, base = start_fn(*shared, keys[b], [leaf[b] for leaf in init])
        for i in range(n_iters):
            cp = jnp.asarray(i in checkpoints)
            state = step_fn(*shared, state, jnp.asarray(i, jnp.int32), cp)
        value, best = _apgd_finish_jit(state, base)
        values.append(value)
        bests.append(best)
    best = [jnp.stack(leaves) for leaves in zip(*bests, strict=True)]
    return jnp.mean(jnp.stack(values)), best


@functools.lru_cache(maxsize=4)
def _host_programs(loss_fn, **static) -> tuple[Callable, Callable]:
    """The jitted start and step of `_worst_host_loop` for one loss function and setting.

    A bounded cache rather than module-level jits keyed on `loss_fn`: each training run builds
    its own loss functions, and a module-level jit would keep every run's compiled programs
    alive (a 44-run grid in one process exhausted the memory the CPU compiler maps for code).
    """

    def parts(params, rho, weights, batch):
        return _apgd_parts(loss_fn, params, rho, weights, batch, **static)

    @jax.jit
    def start(params, rho, weights, batch, kb, init):
        return parts(params, rho, weights, batch).start(kb, init)

    @jax.jit
    def step(params, rho, weights, batch, state, i, cp):
        return parts(params, rho, weights, batch).step(state, (i, cp))[0]

    return start, step


@jax.jit
def _apgd_finish_jit(state, base):
    return _apgd_finish(state, base)


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

    def where(cond, a, b):
        return [jnp.where(cond, x, y) for x, y in zip(a, b, strict=True)]

    def ascent_direction(g):
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

    def loss_at(delta):
        new = [a + d for a, d in zip(act, delta, strict=True)]
        return _scalar_loss(loss_fn, merge_active(params, active, new), batch)

    value_and_grad = jax.value_and_grad(loss_at)

    def start_state(kb, init):
        if start == "random":
            noise = _standard_normal_leaves(kb, params, active)
            z = [cj * x for cj, x in zip(c, noise, strict=True)]
            d0 = proj([x * (rho / jnp.maximum(_weighted_norm(z, c), 1e-30)) for x in z])
        elif start == "given":
            d0 = proj([d.astype(a.dtype) for d, a in zip(init, act, strict=True)])
        else:
            d0 = [jnp.zeros_like(a) for a in act]
        l0, g0 = value_and_grad(d0)
        state = _APGDState(
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
        base = l0 if start == "zero" else _scalar_loss(loss_fn, params, batch)
        return state, base

    def step(s: _APGDState, inp):
        i, cp = inp
        direction = ascent_direction(s.grad)
        z = proj([(d + s.eta * u).astype(d.dtype) for d, u in zip(s.delta, direction, strict=True)])
        if reference:  # their mix of z with δ_{k-1}, unprojected (a convex combination)
            new = [
                (APGD_MOMENTUM * zj + (1 - APGD_MOMENTUM) * p).astype(zj.dtype)
                for zj, p in zip(z, s.prev, strict=True)
            ]
        else:  # Croce & Hein's momentum step, α = 1 at the first step
            alpha = jnp.where(i == 0, 1.0, APGD_MOMENTUM)
            new = proj(
                [
                    (d + alpha * (zj - d) + (1 - alpha) * (d - p)).astype(d.dtype)
                    for d, zj, p in zip(s.delta, z, s.prev, strict=True)
                ]
            )
        loss, grad = value_and_grad(new)
        improved = loss > s.best_loss
        best_loss = jnp.where(improved, loss, s.best_loss)
        n_improved = s.n_improved + improved.astype(jnp.int32)
        # APGD step-size schedule: at a checkpoint, halve η and restart from the best point
        # if (1) too few steps improved since the last checkpoint or (2) η was not halved
        # there and the best loss has not moved since.
        too_few = n_improved < APGD_MIN_UPDATE_RATIO * (i - s.last_cp)
        stalled = jnp.logical_not(s.halved_at_cp) & (best_loss == s.best_loss_at_cp)
        halve = cp & (too_few | stalled)
        best = where(improved, new, s.best)
        best_grad = where(improved, grad, s.best_grad)
        state = _APGDState(
            # "reference" restarts only the gradient point; "croce_hein" the iterate itself.
            delta=new if reference else where(halve, best, new),
            prev=s.delta if reference else where(halve, best, s.delta),
            grad=where(halve, best_grad, grad),
            best=best,
            best_grad=best_grad,
            best_loss=best_loss,
            eta=jnp.where(halve, 0.5 * s.eta, s.eta),
            n_improved=jnp.where(cp, 0, n_improved),
            best_loss_at_cp=jnp.where(cp, best_loss, s.best_loss_at_cp),
            halved_at_cp=jnp.where(cp, halve, s.halved_at_cp),
            last_cp=jnp.where(cp, i, s.last_cp),
        )
        return state, (_APGDStep(new, loss, s.eta, halve) if trace else None)

    return _APGDParts(start_state, step)


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
