"""``solver="als"``: alternating least squares / coordinate descent (libFM's ALS).

Every parameter in turn (w0, each w_j, then each factor column v_.f) is set
to the minimiser of

    1/2 sum_i (y_i - y_hat_i)^2 + 1/2 l2_w0 w0^2 + 1/2 l2_w |w|^2 + 1/2 l2_v |V|^2

with the others fixed, so each sweep can only decrease this objective.  The
regularisation here is of the *total* loss (libFM's ALS convention), not per
sample as for the SGD-type solvers, hence different defaults
(``ALS_DEFAULTS``).  For classification, ALS fits the probit model by EM: the
targets are the expectations of the latent Gaussian variables (libFM's
classification ALS).  ``sample_weight`` multiplies a row's squared error.
"""
import time

import numpy as np

from .coordinate import TASK_REGRESSION, ThreadTuner, refresh, sweep
from .loop import run_epochs

# total-loss L2 defaults of ALS (used when l2_w / l2_v are None); tuned on
# MovieLens 100k u1 (see benchmarks/bench_mcmc.py)
ALS_DEFAULTS = {"l2_w": 5.0, "l2_v": 12.0}


def resolved_l2(l2_w, l2_v):
    """l2_w, l2_v with ALS's defaults for None."""
    return (float(ALS_DEFAULTS["l2_w"] if l2_w is None else l2_w),
            float(ALS_DEFAULTS["l2_v"] if l2_v is None else l2_v))


def fit(state, data, y, evals, *, task, l2_w0, l2_w, l2_v, fit_intercept, n_epochs, config,
        lr=0.0):
    """ALS sweeps on ``state`` (an FMTable) through the training loop; ``lr``: only named in a divergence error (ALS has no learning rate)."""
    k = state.k
    n_threads = config.n_threads
    group = np.zeros(data.n_features, dtype=np.int32)
    mu_w, lam_w = np.zeros(1), np.full(1, l2_w)
    mu_v, lam_v = np.zeros((k, 1)), np.full((k, 1), l2_v)
    cache = np.empty((1 + k, data.n_rows))
    w0 = np.array([state.w0_state[0]])
    P = np.ascontiguousarray(state.table[:, :1 + k], dtype=np.float64)  # working copy
    # initial residuals; probit: the labels +-1 stand for the latent targets
    z = np.array(y, dtype=np.float64)
    refresh(data, P, k, w0[0], y, TASK_REGRESSION, False, 0, 0, cache, z, n_threads)

    tuner = ThreadTuner(n_threads)
    sweeps = [0]

    def epoch(lr):
        sweeps[0] += 1
        t0 = time.perf_counter()
        nt = tuner.threads(sweeps[0])
        sweep(data, group, cache, P, k, w0, alpha=1.0, reg0=l2_w0, mu_w=mu_w, lam_w=lam_w,
              mu_v=mu_v, lam_v=lam_v, fit_w0=fit_intercept, do_sample=False, seed=0,
              sweep_idx=0, n_threads=nt)
        state.w0_state[0] = w0[0]
        state.table[:, :1 + k] = P
        loss = refresh(data, P, k, w0[0], y, task, False, 0, sweeps[0], cache, z, n_threads)
        tuner.record(sweeps[0], nt, time.perf_counter() - t0)
        return loss, data.n_eff, 0 if np.isfinite(loss) else 1

    return run_epochs(epoch, state=state, n_epochs=n_epochs, evals=evals, config=config,
                      lr=lr, early_stopping=True)


def objective(w0, w, V, residuals, l2_w0, l2_w, l2_v):
    """The regularised objective ALS minimises:
    1/2 sum r^2 + 1/2 (l2_w0 w0^2 + l2_w |w|^2 + l2_v |V|^2)."""
    r = residuals
    w = w.astype(np.float64)
    V = V.astype(np.float64)
    return 0.5 * (r @ r + l2_w0 * w0 ** 2 + l2_w * (w @ w) + l2_v * np.sum(V * V))
