"""Average-case sharpness S_avg of Eq. 3 (definitions and conventions: `sharpness`)."""

from __future__ import annotations

import functools

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
    merge_active,
    place_on_mesh,
    resolve_trainable,
    select_active,
)
from earlyjax.metrics.perturbation import (
    LossFn,
    PyTree,
    _common_checks,
    _scalar_loss,
    _scales,
    _standard_normal_leaves,
)


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
