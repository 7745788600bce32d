"""Worst-case sharpness (Auto-PGD) on tiny models (issue 4): its constraint, random feasible
points and gradient steps, the ellipsoid projection, and Croce and Hein's loop."""

import math

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    classification_batches,
    cnn_logits,
    cnn_params,
    mlp_loss,
    mlp_params,
)

from earlyjax.metrics import (
    apgd_checkpoints,
    average_sharpness,
    project_ellipsoid,
    worst_sharpness,
)
from earlyjax.metrics.sharpness import _apgd_trajectory


def weighted_norms(delta, params, adaptive=True):
    """||δ_b ⊙ c⁻¹||₂ for every batch b (float64), over entries with c > 0."""
    total = 0.0
    for d, w in zip(jax.tree.leaves(delta), jax.tree.leaves(params), strict=True):
        d = np.asarray(d, np.float64)
        c = np.abs(np.asarray(w, np.float64)) if adaptive else np.ones(w.shape)
        ratio = np.where(c > 0, d / np.where(c > 0, c, 1), 0)
        total = total + np.sum(ratio.reshape(d.shape[0], -1) ** 2, axis=1)
    return np.sqrt(total)


def per_batch_loss_gain(params, batches, deltas):
    """L_b(w + δ_b) - L_b(w) for perturbations δ[K, B, ...] -> [K, B]."""

    def gain(delta):
        def one(batch, d):
            moved = jax.tree.map(jnp.add, params, d)
            return mlp_loss(moved, batch) - mlp_loss(params, batch)

        return jax.vmap(one)(batches, delta)

    return np.asarray(jax.jit(jax.vmap(gain))(deltas))


@pytest.fixture(scope="module", params=["reference", "croce_hein"])
def worst_case(request):
    """The default (Andriushchenko et al.'s Auto-PGD) and the opt-in variant share these tests."""
    params, batches, rho, variant = mlp_params(), classification_batches(), 0.05, request.param
    value, delta = worst_sharpness(
        mlp_loss, params, batches, jax.random.key(0), rho=rho, variant=variant
    )
    return params, batches, rho, float(value), delta, variant


def test_worst_sharpness_delta_satisfies_the_constraint(worst_case):
    params, _, rho, value, delta, _ = worst_case
    assert jax.tree.structure(delta) == jax.tree.structure(params)
    norms = weighted_norms(delta, params)
    assert norms.shape == (2,)
    assert np.all(norms <= rho + 1e-6), norms
    assert np.all(norms >= 0.99 * rho)  # the ascent reaches the boundary
    assert value > 0


def test_worst_sharpness_beats_random_feasible_perturbations(worst_case):
    params, batches, rho, value, delta, _ = worst_case
    # The returned δ achieves the returned value.
    gain = per_batch_loss_gain(params, batches, jax.tree.map(lambda d: d[None], delta))
    np.testing.assert_allclose(gain.mean(), value, rtol=1e-4)
    # 2000 random points on the ellipsoid's surface, independently per batch.
    rng, n_random = np.random.default_rng(9), 2000
    raw = jax.tree.map(lambda w: rng.normal(size=(n_random, 2, *w.shape)) * np.abs(w), params)
    flat = jax.tree.map(lambda r: r.reshape(-1, *r.shape[2:]), raw)
    norms = weighted_norms(flat, params).reshape(n_random, 2)
    random = jax.tree.map(
        lambda r: jnp.asarray(r * (rho / norms).reshape(n_random, 2, *[1] * (r.ndim - 2))), raw
    )
    best_random = per_batch_loss_gain(params, batches, random).max(axis=0).mean()
    assert best_random > 0
    assert value >= best_random


def test_worst_sharpness_beats_one_normalised_gradient_step(worst_case):
    params, batches, rho, value, _, variant = worst_case
    grads = jax.vmap(lambda b: jax.grad(mlp_loss)(params, b))(batches)  # leading axis B
    c = jax.tree.map(jnp.abs, params)

    def unit_per_batch(tree, norm_of):
        norms = jnp.sqrt(sum(jnp.sum(t**2, axis=tuple(range(1, t.ndim))) for t in norm_of))
        return jax.tree.map(lambda t: rho * t / norms.reshape(-1, *[1] * (t.ndim - 1)), tree)

    def gain_of(delta):
        np.testing.assert_allclose(weighted_norms(delta, params), rho, rtol=1e-5)
        return per_batch_loss_gain(params, batches, jax.tree.map(lambda d: d[None], delta)).mean()

    cg = jax.tree.map(jnp.multiply, c, grads)
    # δ = ρ c ⊙ g / ||g||: one normalised-gradient step scaled by c (APGD's own direction).
    step = gain_of(unit_per_batch(cg, jax.tree.leaves(grads)))
    # δ = ρ c² ⊙ g / ||c ⊙ g||: the maximiser of the linearised loss on the ellipsoid.
    linear = gain_of(unit_per_batch(jax.tree.map(jnp.multiply, c, cg), jax.tree.leaves(cg)))
    assert 0 < step < linear
    assert value >= step
    # Auto-PGD in the rescaled coordinates also beats the linearised maximiser (the default
    # geometry, Andriushchenko et al.'s, can stop short of it: see worst_sharpness).
    scaled, delta = worst_sharpness(
        mlp_loss, params, batches, jax.random.key(0), rho=rho, geometry="scaled", variant=variant
    )
    assert np.all(weighted_norms(delta, params) <= rho + 1e-6)
    assert float(scaled) >= linear
    assert float(scaled) >= value


def test_worst_sharpness_is_monotone_in_n_iters(worst_case):
    params, batches, rho, value, _, variant = worst_case  # n_iters = 20
    key, kw = jax.random.key(0), {"rho": rho, "variant": variant}
    values = [
        float(worst_sharpness(mlp_loss, params, batches, key, n_iters=n, **kw)[0]) for n in (1, 5)
    ]
    values.append(value)
    assert all(b >= a for a, b in zip(values, values[1:], strict=False)), values
    assert values[-1] > values[0]  # later iterations find more


@pytest.mark.parametrize("variant", ["reference", "croce_hein"])
def test_worst_sharpness_guards_parameters_that_are_exactly_zero(variant):
    params = mlp_params()
    params["dense1"]["bias"] = jnp.zeros_like(params["dense1"]["bias"])  # zero-initialised bias
    params["head"]["kernel"] = params["head"]["kernel"].at[0, :].set(0.0)  # zeros inside a leaf
    batches, rho, key = classification_batches(), 0.05, jax.random.key(0)
    value, delta = worst_sharpness(mlp_loss, params, batches, key, rho=rho, variant=variant)
    assert np.isfinite(float(value)) and float(value) > 0
    norms = weighted_norms(delta, params)
    assert np.all(norms <= rho + 1e-6) and np.all(norms >= 0.99 * rho), norms
    assert np.all(np.asarray(delta["dense1"]["bias"]) == 0)
    assert np.all(np.asarray(delta["head"]["kernel"])[:, 0, :] == 0)
    mask = jax.tree.map(lambda _: True, params)
    mask["dense1"]["bias"] = False
    frozen_value, frozen_delta = worst_sharpness(
        mlp_loss, params, batches, key, rho=rho, trainable=mask, variant=variant
    )
    if variant == "croce_hein":  # a zero parameter cannot move, exactly like a frozen one
        np.testing.assert_allclose(float(frozen_value), float(value), rtol=1e-5)
    else:  # their code: its gradient still enters the step's normaliser ||g||, a frozen one's not
        assert abs(float(frozen_value) - float(value)) > 1e-4 * float(value)
    avg = average_sharpness(mlp_loss, params, batches, key, rho=rho)
    assert np.isfinite(float(avg))


def test_worst_sharpness_frozen_leaves_are_not_perturbed():
    params, batches, rho = mlp_params(), classification_batches(), 0.05
    mask = jax.tree.map(lambda _: True, params)
    mask["dense1"]["bias"] = False  # a nonzero leaf this time
    value, delta = worst_sharpness(
        mlp_loss, params, batches, jax.random.key(0), rho=rho, trainable=mask
    )
    assert float(value) > 0
    assert np.all(np.asarray(delta["dense1"]["bias"]) == 0)
    assert np.any(np.asarray(delta["dense1"]["kernel"]) != 0)
    assert np.all(weighted_norms(delta, params) <= rho + 1e-6)


@pytest.mark.parametrize(
    "variant, random_init, traced_mask",
    [("croce_hein", True, False), ("reference", False, True)],
)
def test_worst_sharpness_host_driven_loop_equals_the_compiled_scan(
    variant, random_init, traced_mask, apgd_step_calls
):
    # On a CPU a call with concrete inputs drives Auto-PGD's iterations from Python (XLA:CPU
    # runs a convolution's weight gradient slowly inside a loop body); inside the caller's jit
    # they are one lax.scan. Same algorithm, same value and δ to float rounding.
    params = cnn_params()
    kx, ky = jax.random.split(jax.random.key(4))
    batches = (jax.random.normal(kx, (3, 6, 5, 5, 2)), jax.random.randint(ky, (3, 6), 0, 3))

    def loss_fn(p, batch):
        x, y = batch
        logp = jax.nn.log_softmax(cnn_logits(p, x))
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))

    def run(p, mask):
        return worst_sharpness(
            loss_fn, p, batches, jax.random.key(5), rho=0.05, n_iters=7, variant=variant,
            random_init=random_init, trainable=mask,
        )  # fmt: skip

    steps = apgd_step_calls
    mask = jax.tree.map(lambda _: True, params)
    mask["head"]["bias"] = False
    host = run(params, mask)
    on_cpu = jax.default_backend() == "cpu"
    assert len(steps) == (3 * 7 if on_cpu else 0)  # one call per batch and iteration
    if traced_mask:  # a traced mask stays data in the scan; the host loop sees it concrete
        scan = jax.jit(run)(params, jax.tree.map(jnp.asarray, mask))
    else:
        scan = jax.jit(lambda p: run(p, mask))(params)
    assert len(steps) == (3 * 7 if on_cpu else 0)  # the jitted call did not add any
    np.testing.assert_allclose(float(host[0]), float(scan[0]), rtol=1e-5)
    assert float(host[0]) > 0
    for h, s in zip(jax.tree.leaves(host[1]), jax.tree.leaves(scan[1]), strict=True):
        np.testing.assert_allclose(np.asarray(h), np.asarray(s), rtol=1e-4, atol=1e-7)
    assert np.all(np.asarray(host[1]["head"]["bias"]) == 0)


def test_worst_sharpness_warm_start_keeps_the_best_point_and_the_constraint():
    params, batches, rho = mlp_params(), classification_batches(), 0.05
    key = jax.random.key(0)
    cold, delta = worst_sharpness(mlp_loss, params, batches, key, rho=rho)
    # Started from its own best point, one iteration cannot end lower than 20 cold ones.
    warm, warm_delta = worst_sharpness(mlp_loss, params, batches, key, rho=rho, n_iters=1,
                                       init=delta)  # fmt: skip
    assert float(warm) >= float(cold) * (1 - 1e-5)
    assert np.all(weighted_norms(warm_delta, params) <= rho + 1e-6)
    # A start outside the ellipsoid is projected onto it first; the value still counts δ = 0.
    far = jax.tree.map(lambda d: 10 * d, delta)
    value, far_delta = worst_sharpness(mlp_loss, params, batches, key, rho=rho, n_iters=2, init=far)
    assert float(value) >= 0
    assert np.all(weighted_norms(far_delta, params) <= rho + 1e-6)
    # The scan inside a caller's jit takes the same start.
    jitted = jax.jit(lambda p, d: worst_sharpness(mlp_loss, p, batches, key, rho=rho, n_iters=1,
                                                  init=d)[0])(params, delta)  # fmt: skip
    np.testing.assert_allclose(float(jitted), float(warm), rtol=1e-5)
    with pytest.raises(ValueError, match="init must be a pytree like params with a leading axis"):
        worst_sharpness(mlp_loss, params, batches, key, init=params)
    with pytest.raises(ValueError, match="not both"):
        worst_sharpness(mlp_loss, params, batches, key, init=delta, random_init=True)


def test_project_ellipsoid_is_the_euclidean_projection():
    rng = np.random.default_rng(0)
    c = [jnp.asarray(rng.uniform(0.01, 2.0, size=(6,)), jnp.float32), jnp.zeros((2,))]
    c[0] = c[0].at[1].set(0.0)  # one zero entry inside a leaf, one all-zero leaf
    rho = 0.3
    for scale in (0.01, 1.0, 30.0):  # inside, near, far outside
        v = [jnp.asarray(rng.normal(size=(6,)) * scale, jnp.float32), jnp.ones((2,))]
        p = project_ellipsoid(v, c, rho)
        c0, v0, p0 = (np.asarray(a[0], np.float64) for a in (c, v, p))
        assert np.all(np.asarray(p[1]) == 0) and p0[1] == 0
        inside = c0 > 0
        norm = np.sqrt(np.sum((p0[inside] / c0[inside]) ** 2))
        assert norm <= rho * (1 + 1e-6)
        v_norm = np.sqrt(np.sum((v0[inside] / c0[inside]) ** 2))
        if v_norm <= rho:
            np.testing.assert_allclose(p0[inside], v0[inside], rtol=1e-6)
            continue
        # float64 reference: δ = v c² / (c² + μ) with ||v c / (c² + μ)|| = ρ, by bisection.
        lo, hi = 0.0, 1e6
        for _ in range(200):
            mu = 0.5 * (lo + hi)
            too_big = np.sqrt(np.sum((v0 * c0 / (c0**2 + mu)) ** 2)) > rho
            lo, hi = (mu, hi) if too_big else (lo, mu)
        ref = np.where(inside, v0 * c0**2 / (c0**2 + hi), 0)
        np.testing.assert_allclose(p0, ref, rtol=1e-4, atol=1e-7)
        # and no random feasible point is closer to v.
        q = rng.normal(size=(5000, 6)) * c0
        q *= (
            rho
            * rng.uniform(0, 1, size=(5000, 1))
            / np.sqrt(np.sum((q[:, inside] / c0[inside]) ** 2, axis=1, keepdims=True))
        )
        assert np.linalg.norm(v0 - p0) <= np.min(np.linalg.norm(v0 - q, axis=1))
        # metric="scaled" is the rescale onto the surface, zero where c = 0.
        s = project_ellipsoid(v, c, rho, metric="scaled")
        np.testing.assert_allclose(
            np.asarray(s[0]), np.where(inside, v0, 0) * rho / v_norm, rtol=1e-5
        )
        assert np.all(np.asarray(s[1]) == 0)


def test_apgd_checkpoints_follow_croce_and_hein():
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 times 20, rounded up
    assert apgd_checkpoints(20) == (5, 9, 12, 15, 16, 18, 19, 20)
    assert apgd_checkpoints(1) == (1,)


def softmax_regression(params, batch):
    """(mean cross-entropy, its gradient) of the logits x W + b, by hand in float64 NumPy."""
    x, y = batch
    z = x @ params["W"] + params["b"]
    logp = z - z.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    r = np.exp(logp)
    r[np.arange(len(y)), y] -= 1
    r /= len(y)
    return -logp[np.arange(len(y)), y].mean(), {"W": x.T @ r, "b": r.sum(0)}


def softmax_regression_jax(params, batch):
    x, y = batch
    logp = jax.nn.log_softmax(x @ params["W"] + params["b"])
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))


def their_apgd(
    params, batch, rho, n_iters, grad_norm_over_all=True, restart_moves_iterate=False, tol=1e-12
):
    """Andriushchenko et al.'s Auto-PGD loop (`eval_APGD_sharpness` with
    `weight_ascent_step_momentum`, tml-epfl/sharpness-vs-generalization; L2, adaptive, zero
    start, one restart), re-written in float64 NumPy for `softmax_regression`. One line departs
    from their code, as `worst_sharpness` does: the weighted norm skips c = 0 entries (theirs
    gives 0/0 = NaN there and skips the projection). The two flags switch to what "croce_hein"
    does instead, to show that this reference tells them apart. Their bisection stops at
    | ||δ ⊙ c⁻¹|| - ρ | <= 1e-5; `tol` defaults to float64 precision instead.
    """
    names = list(params)
    w = {k: np.asarray(v, np.float64) for k, v in params.items()}
    c = {k: np.abs(v) for k, v in w.items()}

    def weighted_norm(d):
        return math.sqrt(
            sum(
                np.sum(np.where(c[k] > 0, d[k] / np.where(c[k] > 0, c[k], 1), 0) ** 2)
                for k in names
            )
        )

    def project(v):  # their bisection on λ for δ = v / (1 + 2λ / c²), stopped at `tol`
        lmbd, lo, hi, limit = 0.1, 0.0, 10.0, 10.0
        out, norm = v, weighted_norm(v)
        if norm > rho:
            while abs(norm - rho) > tol:
                out = {
                    k: np.where(c[k] > 0, v[k] * c[k] ** 2 / (c[k] ** 2 + 2 * lmbd), 0)
                    for k in names
                }
                norm = weighted_norm(out)
                if norm > rho:
                    lmbd, lo = (lmbd + hi) / 2, lmbd
                else:
                    lmbd, hi = (lo + lmbd) / 2, lmbd
                if limit - hi < 1e-2:
                    limit, hi = 2 * limit, 2 * hi
        return out

    p, cps = [0, 0.22], [0, math.ceil(n_iters * 0.22)]  # their checkpoint schedule
    while cps[-1] < n_iters and cps[-1] != cps[-2]:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
        cps.append(math.ceil(p[-1] * n_iters))
    cps = cps[1:]
    zero = {k: np.zeros_like(v) for k, v in w.items()}
    loss0, _ = softmax_regression(w, batch)
    delta = prev = grad_at = best_delta = zero
    best = prev_best = loss0
    step = prev_step = 2 * rho
    prev_cp = n_updates = 0
    out = {"delta": [], "loss": [], "eta": [], "halved": [], "restart_moves": [], "margin": []}
    for i in range(n_iters):
        _, g = softmax_regression({k: w[k] + grad_at[k] for k in names}, batch)
        counted = {k: g[k] if grad_norm_over_all else np.where(c[k] > 0, g[k], 0) for k in names}
        g_norm = math.sqrt(sum(np.sum(counted[k] ** 2) for k in names))
        z = project({k: delta[k] + step / (g_norm + 1e-12) * g[k] * c[k] for k in names})
        delta, prev = {k: 0.75 * z[k] + 0.25 * prev[k] for k in names}, delta
        grad_at = delta
        loss, _ = softmax_regression({k: w[k] + delta[k] for k in names}, batch)
        out["delta"].append(delta)
        out["loss"].append(loss)
        out["eta"].append(step)
        out["margin"].append(abs(loss - best) / best)
        if loss > best:
            best, best_delta, n_updates = loss, delta, n_updates + 1
        halved = False
        if i in cps:
            cond1 = n_updates < 0.75 * (i - prev_cp)
            cond2 = prev_step == step and prev_best == best
            prev_step, prev_best, prev_cp, n_updates = step, best, i, 0
            if cond1 or cond2:  # their restart: model.load_state_dict(worst_model_dict)
                halved, step, grad_at = True, step * 0.5, best_delta
                if restart_moves_iterate:
                    delta = best_delta
        out["halved"].append(halved)
        out["restart_moves"].append(halved and best_delta is not out["delta"][-1])
    out["value"], out["best"] = best - loss0, best_delta
    return out


def test_worst_sharpness_default_reproduces_their_loop():
    rng = np.random.default_rng(0)
    params = {"W": rng.normal(size=(5, 3)), "b": rng.normal(size=(3,)) * 0.5}
    params["W"][0, :], params["b"][0] = 0.0, 0.0  # c = 0: never move, but their gradient
    # enters ||g|| in their code
    params = {k: v.astype(np.float32).astype(np.float64) for k, v in params.items()}
    x = rng.normal(size=(2, 16, 5)).astype(np.float32).astype(np.float64)
    y = rng.integers(0, 3, size=(2, 16))
    rho, n_iters = 0.1, 10
    refs = [their_apgd(params, (x[b], y[b]), rho, n_iters) for b in range(2)]
    ref = refs[0]
    # The problem exercises the schedule: a halving whose restart moves the gradient point away
    # from the current iterate before the last iteration, and no near-tie of losses that float32
    # rounding could flip.
    assert any(ref["restart_moves"][:-1]), ref["halved"]
    assert min(ref["margin"]) > 1e-4
    ref_delta = {k: np.stack([d[k] for d in ref["delta"]]) for k in params}
    atol = 1e-5 * max(np.abs(v).max() for v in ref_delta.values())
    # ... and tells the variant's choices apart from theirs, far beyond the tolerance used below.
    for flags in ({"grad_norm_over_all": False}, {"restart_moves_iterate": True}):
        other = their_apgd(params, (x[0], y[0]), rho, n_iters, **flags)["delta"]
        other = {k: np.stack([d[k] for d in other]) for k in params}
        assert max(np.abs(other[k] - ref_delta[k]).max() for k in params) > 100 * atol, flags

    jparams = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), params)
    jx, jy = jnp.asarray(x, jnp.float32), jnp.asarray(y)
    traj = _apgd_trajectory(
        softmax_regression_jax, jparams, (jx[0], jy[0]), rho=rho, n_iters=n_iters
    )
    np.testing.assert_array_equal(np.asarray(traj["halved"]), ref["halved"])
    np.testing.assert_allclose(np.asarray(traj["eta"]), ref["eta"], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(traj["loss"]), ref["loss"], rtol=1e-5)
    for k in params:
        np.testing.assert_allclose(np.asarray(traj["delta"][k]), ref_delta[k], rtol=1e-4, atol=atol)
    # All batches through the public function, with its defaults: the mean of the per-batch
    # values and each batch's best δ.
    value, delta = worst_sharpness(
        softmax_regression_jax, jparams, (jx, jy), jax.random.key(0), rho=rho, n_iters=n_iters
    )
    np.testing.assert_allclose(float(value), np.mean([r["value"] for r in refs]), rtol=1e-4)
    for k in params:
        best = np.stack([r["best"][k] for r in refs])
        np.testing.assert_allclose(np.asarray(delta[k]), best, rtol=1e-4, atol=atol)
    assert np.all(np.asarray(delta["b"])[:, 0] == 0) and np.all(np.asarray(delta["W"])[:, 0] == 0)
    with pytest.raises(ValueError, match="variant"):
        worst_sharpness(softmax_regression_jax, jparams, (jx, jy), jax.random.key(0), variant="x")
