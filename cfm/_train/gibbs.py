"""``solver="mcmc"``: Bayesian FM by Gibbs sampling (libFM's MCMC).

Freudenthaler, Schmidt-Thieme & Rendle 2011; Rendle 2012, "Factorization
Machines with libFM", ACM TIST 3(3).  Gaussian likelihood with a Gamma prior
on its precision alpha for regression, probit with truncated-normal latent
targets for classification; w_j ~ N(mu_w[g], 1/lambda_w[g]), v_jf ~
N(mu_v[g, f], 1/lambda_v[g, f]) with Normal-Gamma hyper-priors per prior
group g (``groups``), libFM's defaults alpha_0 = beta_0 = gamma_0 = 1,
mu_0 = 0; flat prior on w0 (libFM's reg0 = 0).  Without ``groups``, for
regression each one-hot field (see ``coordinate.auto_groups``) gets its own
prior group and the other columns share one; classification uses a single
group (libFM's and myFM's default; see cfm._train.SOLVERS).  ``n_epochs`` sweeps, the first ``n_burn_in``
discarded; predictions are posterior means over the kept samples
(cfm._state.mcmc.MCMCSamples), kept on the model and in its file.

``sample_weight`` multiplies a row's likelihood precision (the same as
repeating the row); the probit sampler refuses it (a weighted probit
likelihood has no exact latent-variable form).
"""
import sys
import time

import numpy as np

from .. import _mcmc
from .._state.mcmc import MCMCSamples, to_score
from .._validation import draw_seed
from ..exceptions import DivergenceError
from .coordinate import TASK_REGRESSION, ThreadTuner, refresh, sweep
from .loop import run_epochs

# libFM's hyper-prior defaults
ALPHA_0 = 1.0
BETA_0 = 1.0
GAMMA_0 = 1.0
MU_0 = 0.0
# prior precision of w0 (N(0, 1 / REG_0)); 0 = flat, as libFM: a proper N(0, 1)
# prior (myFM's reg_0 = 1) pulls w0 towards 0 when the targets have a large
# offset and few rows
REG_0 = 0.0


class HyperSampler:
    """Draws of alpha and of the per-group Normal-Gamma hyper-parameters
    (libFM's draw_alpha, draw_w_lambda, draw_w_mu, draw_v_lambda, draw_v_mu, in
    that order), from a NumPy generator."""

    def __init__(self, rng, group, n_groups, k):
        self.rng = rng
        self.group = group
        self.n_groups = n_groups
        self.counts = np.bincount(group, minlength=n_groups).astype(np.float64)
        self.alpha = 1.0
        self.mu_w = np.zeros(n_groups)
        self.lam_w = np.zeros(n_groups)
        self.mu_v = np.zeros((k, n_groups))
        self.lam_v = np.zeros((k, n_groups))

    def _normal_gamma(self, values, mu):
        """Draw (lambda, mu) of one parameter vector given its current mu."""
        g, G, n = self.group, self.n_groups, self.counts
        dev = np.bincount(g, (values - mu[g]) ** 2, minlength=G)
        rate = 0.5 * (GAMMA_0 + BETA_0 * (mu - MU_0) ** 2 + dev)
        lam = self.rng.gamma(0.5 * (ALPHA_0 + n + 1.0), 1.0 / rate)
        mean = (np.bincount(g, values, minlength=G) + BETA_0 * MU_0) / (n + BETA_0)
        mu_new = mean + self.rng.standard_normal(G) / np.sqrt((n + BETA_0) * lam)
        return lam, mu_new

    def draw(self, sq_err, n, P, k, task, fit_linear):
        """sq_err: sum of squared residuals of the current parameters."""
        if task == TASK_REGRESSION:
            rate = 0.5 * (GAMMA_0 + sq_err)
            self.alpha = float(self.rng.gamma(0.5 * (ALPHA_0 + n), 1.0 / rate))
        else:
            self.alpha = 1.0
        if fit_linear:
            self.lam_w, self.mu_w = self._normal_gamma(P[:, 0].astype(np.float64), self.mu_w)
        for f in range(k):
            self.lam_v[f], self.mu_v[f] = self._normal_gamma(P[:, 1 + f].astype(np.float64),
                                                             self.mu_v[f])


def _kept_sweeps(n_epochs, n_burn_in, n_kept):
    """1-based sweeps whose samples are kept: evenly spaced over the sweeps
    after the burn-in, always including the last."""
    post = n_epochs - n_burn_in
    n_kept = post if n_kept is None else min(int(n_kept), post)
    idx = np.round(np.linspace(n_burn_in + 1, n_epochs, n_kept)).astype(np.int64)
    return np.unique(idx)


def default_burn_in(n_epochs):
    """None means n_epochs // 10 (at most 50)."""
    return min(n_epochs // 10, 50)


def fit(state, data, y, group, n_groups, evals, *, task, rng, n_epochs, n_burn_in,
        n_kept_samples, fit_intercept, config):
    """Gibbs sampling from ``state`` (an FMTable with solver "mcmc", its
    factors initialised); returns the fitted MCMCSamples state and the
    loop's LoopResult.  ``rng``: the
    estimator's generator, from which the sampler's seeds are drawn."""
    k = state.k
    n_threads = config.n_threads
    n_burn_in = default_burn_in(n_epochs) if n_burn_in is None else int(n_burn_in)
    kept = _kept_sweeps(n_epochs, n_burn_in, n_kept_samples)
    kept_set = {int(s): i for i, s in enumerate(kept)}
    # three independent streams: factor init (drawn before), the kernel's
    # counter-based draws, the hyper-parameter generator
    ss = np.random.SeedSequence(draw_seed(rng))
    kseed, hseed = (int(s) for s in ss.generate_state(2, np.uint64))
    hyper = HyperSampler(np.random.default_rng(hseed), group, n_groups, k)
    state.w0_state[0] = 0.0            # libFM starts w0 at 0
    state.table[:, 0] = 0.0
    dtype = state.table.dtype
    samples = np.empty((len(kept), data.n_features, 1 + k), dtype=dtype)
    sample_w0 = np.empty(len(kept))
    if task == TASK_REGRESSION:
        clip = (float(np.min(y)), float(np.max(y)))
    else:
        clip = (1.0, 0.0)
    cache = np.empty((1 + k, data.n_rows))
    w0 = np.zeros(1)
    P = np.ascontiguousarray(state.table[:, :1 + k], dtype=np.float64)  # working copy
    z = np.array(y, dtype=np.float64)   # probit: latent targets start at the labels
    sq_err = [2.0 * refresh(data, P, k, 0.0, y, TASK_REGRESSION, False, kseed, 0, cache, z,
                            n_threads)]
    acc = [(np.zeros(Xv.n_rows), np.zeros(Xv.n_rows)) for Xv, _ in evals]
    n_acc = [0]
    alphas = []
    tuner = ThreadTuner(n_threads)
    sweeps = [0]

    def epoch(lr):
        t = sweeps[0] = sweeps[0] + 1
        nt = tuner.threads(t)
        t0 = time.perf_counter()
        hyper.draw(sq_err[0], data.n_eff, P, k, task, True)
        sweep(data, group, cache, P, k, w0, alpha=hyper.alpha, reg0=REG_0, mu_w=hyper.mu_w,
              lam_w=hyper.lam_w, mu_v=hyper.mu_v, lam_v=hyper.lam_v, fit_w0=fit_intercept,
              do_sample=True, seed=kseed, sweep_idx=t, n_threads=nt)
        loss = refresh(data, P, k, w0[0], y, task, True, kseed, t, cache, z, n_threads)
        tuner.record(t, nt, time.perf_counter() - t0)
        sq_err[0] = 2.0 * loss
        if not np.isfinite(loss) or not np.isfinite(w0[0]):
            raise DivergenceError(f"{config.name}: the sampler produced non-finite "
                                  f"values at sweep {t}; check the scale of X and y")
        if t > n_burn_in:
            alphas.append(hyper.alpha)
        if t in kept_set:
            samples[kept_set[t]] = P
            sample_w0[kept_set[t]] = w0[0]
        if evals:
            if t <= n_burn_in + 1:  # burn-in: the current sample alone
                for a in acc:
                    a[0][:] = 0.0
                    a[1][:] = 0.0
            if t > n_burn_in:
                n_acc[0] += 1
        extra = {"alpha": hyper.alpha} if task == TASK_REGRESSION else {}
        return loss, data.n_eff, 0, extra

    def score(i, Xv, nt):
        """Posterior mean of the samples so far (the current one in burn-in)."""
        t = sweeps[0]
        sp_, sq_ = acc[i]
        _mcmc.predict_sum(Xv.data, Xv.indices, Xv.indptr, state.normalize, P[None], w0, k,
                          task, clip[0], clip[1], sp_, sq_, nt)
        return to_score(sp_, sq_, max(n_acc[0], 1) if t > n_burn_in else 1, task)

    res = run_epochs(epoch, state=state, n_epochs=n_epochs, evals=evals, config=config, lr=0.0,
               early_stopping=False, score=score)
    state.table[:, :1 + k] = P
    state.w0_state[0] = w0[0]
    alpha = float(np.mean(alphas)) if task == TASK_REGRESSION else 1.0
    fitted = MCMCSamples(state.table, state.w0_state, k, state.normalize, samples=samples,
                         sample_w0=sample_w0, clip=clip, alpha=alpha, task=task,
                         n_prior_groups=n_groups)
    if config.verbose:
        print(f"mcmc: {n_epochs} sweeps, burn-in {n_burn_in}, {len(kept)} samples kept",
              file=sys.stderr, flush=True)
    return fitted, res
