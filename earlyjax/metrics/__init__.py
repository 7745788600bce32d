"""The paper's instruments as jit-compatible functions of plain callables and pytrees.

- `fisher_trace`: tr(F) of Eq. 2 per trainable parameter (§3.1, §4); `exact=True` sums over the
  classes; `estimator="batch_argmax"` is the (non-Eq. 2) estimator of the FUN-with-Fisher code.
  Its per-example gradient norms come from per-layer identities for models of Flax Dense, Conv
  and eval-mode BatchNorm layers (`per_example.py`: one batched backward pass), else from vmap.
- `average_sharpness`, `worst_sharpness`: Eqs. 3-4 with adaptive L2 scaling, ρ = 0.01, 15 samples
  and Auto-PGD (§3.2, §4, App. B), following Andriushchenko et al. (ICML 2023);
  `worst_sharpness(..., geometry="scaled")` runs Auto-PGD in the rescaled coordinates, whose
  fixed points are the maximisers that the default (their) geometry can miss.
- `hessian_top_eigenvalue`: λ_max by Lanczos on Hessian-vector products (App. C).
- `feature_rank`: 99%-variance PCA rank of penultimate features (App. E.1);
  `feature_top_eigenvalue`: the largest eigenvalue of their covariance (App. C, Fig. 5).
- `ensemble_metrics`, `ensemble_size_curve`, `ensemble_probs`, `disagreement`: an ensemble of K
  members' outputs [K, N, C] (Sadrtdinov et al. 2023): accuracy, mean per-class accuracy, NLL,
  ECE and mean pairwise disagreement of the averaged softmax, for all K or for sizes 1..K.

`logits_fn(params, x) -> logits[N, C]`, `loss_fn(params, batch) -> scalar mean loss`; `batches`
is `batch` with a leading batch-index axis. Each docstring gives the cost in forward/backward
passes. Every function but the two feature ones and the ensemble ones (which take outputs, not
a model) takes `mesh=` (a `jax.sharding.Mesh`) to spread its work over several devices. Nothing
here depends on the rest of earlyjax.
"""

from earlyjax.metrics.apgd import apgd_checkpoints
from earlyjax.metrics.average import average_sharpness
from earlyjax.metrics.ensemble import (
    disagreement,
    ensemble_metrics,
    ensemble_probs,
    ensemble_size_curve,
)
from earlyjax.metrics.fisher import fisher_trace
from earlyjax.metrics.hessian import hessian_top_eigenvalue
from earlyjax.metrics.perturbation import project_ellipsoid
from earlyjax.metrics.rank import feature_rank, feature_top_eigenvalue
from earlyjax.metrics.sharpness import apgd_runs_on_host, worst_sharpness

__all__ = [
    "apgd_checkpoints",
    "apgd_runs_on_host",
    "average_sharpness",
    "disagreement",
    "ensemble_metrics",
    "ensemble_probs",
    "ensemble_size_curve",
    "feature_rank",
    "feature_top_eigenvalue",
    "fisher_trace",
    "hessian_top_eigenvalue",
    "project_ellipsoid",
    "worst_sharpness",
]
