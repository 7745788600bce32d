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

Layout: `average_sharpness` is in `average`, Auto-PGD's start and step in `apgd`, the scales,
noise and projection both share in `perturbation`; this module holds `worst_sharpness`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh

from earlyjax.metrics._common import (
    call_fitting_inputs,
    check_finite,
    check_mesh,
    check_positive_int,
    device_map,
    place_on_mesh,
    resolve_trainable,
    select_active,
)
from earlyjax.metrics.apgd import APGD_MIN_UPDATE_RATIO as APGD_MIN_UPDATE_RATIO
from earlyjax.metrics.apgd import APGD_MOMENTUM as APGD_MOMENTUM
from earlyjax.metrics.apgd import (
    GEOMETRIES,
    VARIANTS,
    _apgd_finish,
    _apgd_one_batch,
    _apgd_parts,
    _full_tree,
    apgd_checkpoints,
)
from earlyjax.metrics.apgd import STARTS as STARTS
from earlyjax.metrics.apgd import _apgd_trajectory as _apgd_trajectory
from earlyjax.metrics.average import average_sharpness as average_sharpness
from earlyjax.metrics.perturbation import N_BISECT as N_BISECT
from earlyjax.metrics.perturbation import PROJECTION_METRICS as PROJECTION_METRICS
from earlyjax.metrics.perturbation import LossFn, PyTree, _common_checks
from earlyjax.metrics.perturbation import project_ellipsoid as project_ellipsoid

# (`X as X`: names this module held before `average`, `apgd` and `perturbation` were split
# off, kept importable from here.)


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
      `their_apgd(..., tol=1e-5)` vs `tol=1e-12` (tests/metrics/test_worst_sharpness.py) on 10
      random softmax regressions (20 features, 10 classes, 64 points, 20 iterations): S_worst
      within ±0.08% at ρ = 0.01, ±0.02% at ρ = 0.05.
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
