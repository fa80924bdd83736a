"""Drivers of the coordinate-wise solvers: ``solver="als"`` and ``solver="mcmc"``.

Both follow libFM (Rendle 2012, "Factorization Machines with libFM", ACM
TIST 3(3)); the kernels are in src/cfm/_mcmc.pyx.

``solver="als"``
    Alternating least squares / coordinate descent: every parameter in turn
    (w0, each w_j, then each factor column v_.f) is set to the minimiser of

        1/2 sum_i (y_i - y_hat_i)^2 + 1/2 l2_w0 w0^2 + 1/2 l2_w |w|^2 + 1/2 l2_v |V|^2

    with the others fixed, so each sweep can only decrease this objective.
    The regularisation here is of the *total* loss (libFM's ALS convention),
    not per sample as for the SGD-type solvers, hence different defaults
    (``ALS_DEFAULTS``).  For FMClassifier, ALS fits the probit model by EM: the
    targets are the expectations of the latent Gaussian variables
    (libFM's classification ALS).

``solver="mcmc"``
    Bayesian FM by Gibbs sampling (Freudenthaler, Schmidt-Thieme & Rendle
    2011; libFM's MCMC): Gaussian likelihood with a Gamma prior on its
    precision alpha for regression, probit with truncated-normal latent targets
    for classification; w_j ~ N(mu_w[g], 1/lambda_w[g]), v_jf ~
    N(mu_v[g, f], 1/lambda_v[g, f]) with Normal-Gamma hyper-priors per prior
    group g (``groups``), libFM's defaults alpha_0 = beta_0 = gamma_0 = 1,
    mu_0 = 0; flat prior on w0 (libFM's reg0 = 0).  Without ``groups``, each one-hot field (see
    ``auto_groups``) gets its own prior group and the other columns share
    one.  ``n_epochs`` sweeps, the first ``n_burn_in``
    discarded; predictions are posterior means over the kept samples
    (regression: of the predictions clipped to the training target range, as
    libFM does; classification: of Phi(y_hat)).  The samples are kept on the
    model and saved in the model file, so new rows can be predicted any time.

``sample_weight`` multiplies a row's likelihood precision (ALS: its squared
error), which is the same as repeating the row; it is refused by the probit
sampler (a weighted probit likelihood has no exact latent-variable form).
"""
import sys
import time

import numpy as np

from ._lazy import sparse as sp
from . import _mcmc
from ._metrics import METRICS
from ._validation import check_sample_weight, check_X, draw_seed, effective_n_threads
from .exceptions import DivergenceError

# libFM's hyper-prior defaults
ALPHA_0 = 1.0
BETA_0 = 1.0
GAMMA_0 = 1.0
MU_0 = 0.0
# prior precision of w0 (N(0, 1 / REG_0)); 0 = flat, as libFM: a proper N(0, 1)
# prior (myFM's reg_0 = 1) pulls w0 towards 0 when the targets have a large
# offset and few rows
REG_0 = 0.0
# total-loss L2 defaults of ALS (used when l2_w / l2_v are None); tuned on
# MovieLens 100k u1 (see benchmarks/bench_mcmc.py)
ALS_DEFAULTS = {"l2_w": 5.0, "l2_v": 12.0}
# Blocks of independent features with fewer non-zeros than this are swept by
# one thread (thread start-up would cost more than it saves); results do not
# depend on it.
MIN_BLOCK_NNZ = 20_000
TASK_REGRESSION, TASK_PROBIT = 0, 1
# Predictions (and so residuals and q caches) are recomputed from X after
# every REFRESH_EVERY-th sweep (libFM: every sweep) to stop rounding drift;
# in between, the sweeps keep them exact up to rounding.
REFRESH_EVERY = 10


class _Data:
    """Training data in the layouts the kernels need: CSR and CSC copies with
    float64 values (row scaling of ``normalize`` applied) and int32 indices."""

    def __init__(self, Xc, normalize, sample_weight=None):
        n_rows, n_features = Xc.shape
        if n_rows >= 2**31 - 1 or n_features >= 2**31 - 1:
            raise ValueError("solver='als'/'mcmc' supports at most 2**31 - 2 rows and "
                             f"columns, got {Xc.shape}")
        M = sp.csr_matrix((Xc.data, Xc.indices, Xc.indptr), shape=Xc.shape)
        vals = M.data.astype(np.float64)
        if normalize:  # same arithmetic, in the same order, as the kernels' row_scale
            counts = np.diff(Xc.indptr)
            rows = np.repeat(np.arange(n_rows), counts)
            sq = np.bincount(rows, vals * vals, minlength=n_rows)
            scale = np.ones(n_rows)
            pos = sq > 0
            scale[pos] = 1.0 / np.sqrt(sq[pos])
            vals = vals * scale[rows]
        self.data = np.ascontiguousarray(vals)
        self.indices = np.ascontiguousarray(Xc.indices, dtype=np.int32)
        self.indptr = np.ascontiguousarray(Xc.indptr, dtype=np.int64)
        M = sp.csr_matrix((vals, M.indices, M.indptr), shape=Xc.shape)
        C = M.tocsc()
        C.sort_indices()
        self.col_ptr = np.ascontiguousarray(C.indptr, dtype=np.int64)
        self.row_idx = np.ascontiguousarray(C.indices, dtype=np.int32)
        self.col_val = np.ascontiguousarray(C.data, dtype=np.float64)
        if sample_weight is None:
            self.sw = np.empty(0)
            self.col_wval = self.col_val     # the same array: unweighted sums
            self.n_eff = float(n_rows)
        else:
            self.sw = np.ascontiguousarray(sample_weight, dtype=np.float64)
            self.col_wval = self.col_val * self.sw[self.row_idx]
            self.n_eff = float(self.sw.sum())
        self.blocks = _mcmc.exclusive_blocks(self.col_ptr, self.row_idx, n_rows)
        self.colseg = _mcmc.column_segments(self.col_ptr, self.row_idx, self.indptr)
        self.n_rows, self.n_features = n_rows, n_features


def auto_groups(data):
    """Default prior groups: one per one-hot field -- an exclusive block (no
    two of its columns share a row) of at least 2 columns whose non-zeros
    cover at least half of the rows, e.g. the user ids or the item ids of
    rating data --, and one group for all other columns."""
    b = data.blocks
    sizes = np.diff(b)
    nnz = data.col_ptr[b[1:]] - data.col_ptr[b[:-1]]
    field = (sizes >= 2) & (2 * nnz >= data.n_rows)
    ids = np.cumsum(field) * field
    return _check_groups(np.repeat(ids, sizes), data.n_features)


def _check_groups(groups, n_features):
    """Validated prior groups as compact int32 ids, and their count."""
    g = np.asarray(groups)
    if g.ndim != 1 or g.shape[0] != n_features:
        raise ValueError(f"groups must be a 1-D array with one entry per feature "
                         f"({n_features}), got shape {g.shape}")
    if g.dtype == bool or not (np.issubdtype(g.dtype, np.integer) or (
            np.issubdtype(g.dtype, np.floating) and np.all(np.isfinite(g))
            and np.all(g == np.round(g)))):
        raise ValueError("groups must hold non-negative integers (one prior group id per "
                         "feature)")
    if g.size and g.min() < 0:
        raise ValueError(f"groups must be non-negative, got {int(g.min())}")
    uniq, inv = np.unique(g.astype(np.int64), return_inverse=True)
    return np.ascontiguousarray(inv, dtype=np.int32), max(len(uniq), 1)


def fit(est, X, y, sample_weight, eval_set, fields, groups):
    """``fit`` of an FM estimator with solver 'als' or 'mcmc'."""
    from ._base import _is_stream

    solver = est.solver
    dtype = est._validate_params()
    name = type(est).__name__
    if groups is not None and solver != "mcmc":
        raise ValueError(f"groups is only used by solver='mcmc' (got solver={solver!r})")
    if est._model_kind != "fm":
        raise ValueError(f"{name} does not support solver={solver!r}: ALS and MCMC are "
                         "implemented for FMRegressor and FMClassifier only")
    if _is_stream(X):
        raise ValueError(f"solver={solver!r} needs the training data in memory (it sweeps "
                         "over the columns); load the file first, e.g. with "
                         "cfm.load_libsvm")
    if sample_weight is not None and solver == "mcmc" and est._loss != "squared":
        raise ValueError("sample_weight is not supported by FMClassifier(solver='mcmc') (a "
                         "weighted probit likelihood has no exact latent-variable sampler); "
                         "it is by FMRegressor(solver='mcmc') and by solver='als'")
    if est.warm_start:
        raise ValueError(f"warm_start is not supported with solver={solver!r}")
    Xc = check_X(X, estimator=est)
    y_enc = est._prepare_y(y, Xc.n_rows, reset=True)
    sw = check_sample_weight(sample_weight, Xc.n_rows)
    est._check_fields(fields, Xc.shape[1], reset=True)
    if groups is not None:
        group, n_groups = _check_groups(groups, Xc.shape[1])
    evals = est._check_eval_set(eval_set, Xc.shape[1])
    for attr in ("_samples", "_sample_w0", "_clip", "alpha_", "n_prior_groups_"):
        if hasattr(est, attr):
            delattr(est, attr)
    est._init_state(Xc.shape[1], y_enc, sw, dtype)
    est._set_feature_names(X)
    data = _Data(Xc, est._normalize, sw)
    if solver == "als":
        _fit_als(est, data, y_enc, evals)
    else:
        if groups is None:
            group, n_groups = auto_groups(data)
        est.n_prior_groups_ = n_groups
        _fit_mcmc(est, data, y_enc, group, n_groups, evals)
    return est


class ThreadTuner:
    """Picks the faster of n_threads and 1 thread for the sweeps.

    A parallel sweep synchronises at every phase (three per exclusive block
    and parameter column) and splits the rows of a block in halves between
    the threads; on a machine whose cores are busy with other work a helper
    preempted in the middle of its half delays the phase, and a parallel
    sweep can be slower than a serial one.  Results do not depend on the
    thread count, so the driver may time both: the
    first TRIALS sweeps of every RECHECK alternate between them and the
    faster (by the median of its trials; threads only if MARGIN faster) is
    used until the next check.  (Row passes -- residual refresh, prediction --
    always use every thread: they need no synchronisation inside.)
    """

    MARGIN = 0.9

    TRIALS = 6
    RECHECK = 50

    def __init__(self, n_threads):
        self.n = n_threads
        self.choice = n_threads
        self.times = {}

    def threads(self, t):
        if self.n == 1:
            return 1
        phase = (t - 1) % self.RECHECK
        if phase < self.TRIALS:
            return self.n if phase % 2 == 0 else 1
        return self.choice

    def record(self, t, nt, seconds):
        if self.n == 1:
            return
        phase = (t - 1) % self.RECHECK
        if phase < self.TRIALS:
            self.times.setdefault(nt, []).append(seconds)
            if phase == self.TRIALS - 1:
                par = float(np.median(self.times.get(self.n, [np.inf])))
                seq = float(np.median(self.times.get(1, [np.inf])))
                self.choice = self.n if par < self.MARGIN * seq else 1
                self.times = {}


def _task(est):
    return TASK_REGRESSION if est._loss == "squared" else TASK_PROBIT


def _refresh(data, P, k, w0, y, task, do_sample, seed, sweep_idx, cache, z, n_threads):
    full = sweep_idx % REFRESH_EVERY == 0
    if not full and task == TASK_REGRESSION and data.n_rows < 1_000_000:
        n_threads = 1   # a trivial O(n_rows) pass: a helper would cost more than it saves
    return _mcmc.refresh(data.data, data.indices, data.indptr, P, k, w0, y, task, do_sample,
                         seed, sweep_idx, cache, z, full, data.sw, n_threads)


# ---------------------------------------------------------------------- ALS
def _fit_als(est, data, y, evals):
    k = est._k
    task = _task(est)
    n_threads = effective_n_threads(est.n_jobs)
    l2_w = float(ALS_DEFAULTS["l2_w"] if est.l2_w is None else est.l2_w)
    l2_v = float(ALS_DEFAULTS["l2_v"] if est.l2_v is None else est.l2_v)
    group = np.zeros(data.n_features, dtype=np.int32)
    mu_w, lam_w = np.zeros(1), np.full(1, l2_w)
    mu_v, lam_v = np.zeros((k, 1)), np.full((k, 1), l2_v)
    cache = np.empty((1 + k, data.n_rows))
    w0 = np.array([est._w0_state[0]])
    P = np.ascontiguousarray(est._table[:, :1 + k], dtype=np.float64)  # working copy
    # initial residuals; probit: the labels +-1 stand for the latent targets
    z = np.array(y, dtype=np.float64)
    _refresh(data, P, k, w0[0], y, TASK_REGRESSION, False, 0, 0, cache, z, n_threads)

    tuner = ThreadTuner(n_threads)
    sweeps = [0]

    def epoch(lr):
        sweeps[0] += 1
        t0 = time.perf_counter()
        nt = tuner.threads(sweeps[0])
        _mcmc.sweep(data.col_ptr, data.row_idx, data.col_val, data.col_wval, data.sw,
                    data.blocks, data.colseg, group,
                    cache, P, k, w0, 1.0, float(est.l2_w0), 0.0, mu_w, lam_w, mu_v, lam_v,
                    bool(est.fit_intercept), True, False, 0, 0, nt, MIN_BLOCK_NNZ)
        est._w0_state[0] = w0[0]
        est._table[:, :1 + k] = P
        loss = _refresh(data, P, k, w0[0], y, task, False, 0, sweeps[0], cache, z, n_threads)
        tuner.record(sweeps[0], nt, time.perf_counter() - t0)
        return loss, data.n_eff, 0 if np.isfinite(loss) else 1

    est._run_epoch_loop(epoch, evals, est._n_epochs(), early_stopping=True)


def als_objective(est, X, y):
    """The regularised objective ALS minimises (for tests and diagnostics):
    1/2 sum (y - y_hat)^2 + 1/2 (l2_w0 w0^2 + l2_w |w|^2 + l2_v |V|^2)."""
    l2_w = float(ALS_DEFAULTS["l2_w"] if est.l2_w is None else est.l2_w)
    l2_v = float(ALS_DEFAULTS["l2_v"] if est.l2_v is None else est.l2_v)
    r = est.predict(X) - np.asarray(y, dtype=np.float64)
    w = est.w_.astype(np.float64)
    V = est.V_.astype(np.float64)
    return 0.5 * (r @ r + float(est.l2_w0) * est.w0_ ** 2 + l2_w * (w @ w)
                  + l2_v * np.sum(V * V))


# --------------------------------------------------------------------- MCMC
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


def _fit_mcmc(est, data, y, group, n_groups, evals):
    k = est._k
    task = _task(est)
    n_threads = effective_n_threads(est.n_jobs)
    n_epochs = est._n_epochs()
    n_burn_in = default_burn_in(n_epochs) if est.n_burn_in is None else int(est.n_burn_in)
    kept = _kept_sweeps(n_epochs, n_burn_in, est.n_kept_samples)
    kept_set = {int(s): i for i, s in enumerate(kept)}
    # three independent streams: factor init (used by _init_state), the
    # kernel's counter-based draws, the hyper-parameter generator
    ss = np.random.SeedSequence(draw_seed(est._rng))
    kseed, hseed = (int(s) for s in ss.generate_state(2, np.uint64))
    hyper = HyperSampler(np.random.default_rng(hseed), group, n_groups, k)
    est._w0_state[0] = 0.0            # libFM starts w0 at 0
    est._table[:, 0] = 0.0
    dtype = est._table.dtype
    samples = np.empty((len(kept), data.n_features, 1 + k), dtype=dtype)
    sample_w0 = np.empty(len(kept))
    if task == TASK_REGRESSION:
        clip = (float(np.min(y)), float(np.max(y)))
    else:
        clip = (1.0, 0.0)
    cache = np.empty((1 + k, data.n_rows))
    w0 = np.zeros(1)
    P = np.ascontiguousarray(est._table[:, :1 + k], dtype=np.float64)  # working copy
    z = np.array(y, dtype=np.float64)   # probit: latent targets start at the labels
    sq_err = 2.0 * _refresh(data, P, k, 0.0, y, TASK_REGRESSION, False, kseed, 0, cache, z,
                            n_threads)
    metric = est.eval_metric or est._default_metric
    metric_fn = METRICS[metric][0]
    acc = [(np.zeros(Xv.n_rows), np.zeros(Xv.n_rows)) for Xv, _ in evals]
    n_acc = 0
    alphas = []
    tuner = ThreadTuner(n_threads)
    for t in range(1, n_epochs + 1):
        t0 = time.perf_counter()
        nt = tuner.threads(t)
        hyper.draw(sq_err, data.n_eff, P, k, task, True)
        _mcmc.sweep(data.col_ptr, data.row_idx, data.col_val, data.col_wval, data.sw,
                    data.blocks, data.colseg, group,
                    cache, P, k, w0, hyper.alpha, REG_0, 0.0, hyper.mu_w, hyper.lam_w,
                    hyper.mu_v, hyper.lam_v, bool(est.fit_intercept), True, True, kseed, t,
                    nt, MIN_BLOCK_NNZ)
        loss = _refresh(data, P, k, w0[0], y, task, True, kseed, t, cache, z, n_threads)
        tuner.record(t, nt, time.perf_counter() - t0)
        sq_err = 2.0 * loss
        if not np.isfinite(loss) or not np.isfinite(w0[0]):
            raise DivergenceError(f"{type(est).__name__}: the sampler produced non-finite "
                                  f"values at sweep {t}; check the scale of X and y")
        if t > n_burn_in:
            alphas.append(hyper.alpha)
        if t in kept_set:
            samples[kept_set[t]] = P
            sample_w0[kept_set[t]] = w0[0]
        rec = {"epoch": t, "train_loss": loss / data.n_eff}
        if task == TASK_REGRESSION:
            rec["alpha"] = hyper.alpha
        if evals:
            if t <= n_burn_in + 1:  # burn-in: the current sample alone
                for a in acc:
                    a[0][:] = 0.0
                    a[1][:] = 0.0
            if t > n_burn_in:
                n_acc += 1
            for i, ((Xv, yv), (sp_, sq_)) in enumerate(zip(evals, acc)):
                _predict_sum(est, Xv, P[None], w0, task, clip, sp_, sq_, n_threads)
                score = _to_score(sp_, sq_, max(n_acc, 1) if t > n_burn_in else 1, task)
                rec[f"eval{i}_{metric}" if i else f"eval_{metric}"] = metric_fn(yv, score)
        rec["time"] = time.perf_counter() - t0
        est.history_.append(rec)
        est.n_epochs_ = t
        if est.verbose:
            est._print_epoch(rec, n_epochs)
    est.best_epoch_ = n_epochs
    est._table[:, :1 + k] = P
    est._w0_state[0] = w0[0]
    est._samples = samples
    est._sample_w0 = sample_w0
    est._clip = clip
    est.alpha_ = float(np.mean(alphas)) if task == TASK_REGRESSION else 1.0
    est._publish()
    if est.verbose:
        print(f"mcmc: {n_epochs} sweeps, burn-in {n_burn_in}, {len(kept)} samples kept",
              file=sys.stderr, flush=True)


def _predict_sum(est, Xc, S, w0s, task, clip, out_p, out_q, n_threads):
    _mcmc.predict_sum(Xc.data, Xc.indices, Xc.indptr, est._normalize, S, w0s, est._k, task,
                      clip[0], clip[1], out_p, out_q, n_threads)


def _to_score(sum_p, sum_q, n, task):
    """Posterior-mean prediction (regression) or its log-odds (probit)."""
    if task == TASK_REGRESSION:
        return sum_p / n
    with np.errstate(divide="ignore"):
        return np.log(sum_p) - np.log(sum_q)


def mcmc_decision(est, Xc, n_threads, tables):
    """Posterior mean over the kept samples of the published ``tables``
    (log-odds of the posterior mean probability for classification)."""
    task = _task(est)
    p = np.zeros(Xc.n_rows)
    q = np.zeros(Xc.n_rows)
    t = tables
    _mcmc.predict_sum(Xc.data, Xc.indices, Xc.indptr, t.normalize, t.samples, t.sample_w0, t.k,
                      task, t.clip[0], t.clip[1], p, q, n_threads)
    return _to_score(p, q, t.samples.shape[0], task)


# ------------------------------------------------------------- model files
def export_samples(est, arrays, header):
    arrays["mcmc_samples"] = est._samples
    arrays["mcmc_w0"] = est._sample_w0
    header["mcmc"] = {"clip": [float(c) for c in est._clip], "alpha": float(est.alpha_)}


def import_samples(est, header, arrays, dtype):
    info = header.get("mcmc")
    if not isinstance(info, dict) or "mcmc_samples" not in arrays or "mcmc_w0" not in arrays:
        raise ValueError("MCMC model file without its posterior samples")
    S, w0s = arrays["mcmc_samples"], arrays["mcmc_w0"]
    n, k = est._table.shape[0], est._k
    if S.ndim != 3 or S.shape[1:] != (n, 1 + k) or S.shape[0] < 1 or S.dtype != dtype:
        raise ValueError(f"array 'mcmc_samples' has shape {S.shape} / dtype {S.dtype}, "
                         f"expected (n_samples, {n}, {1 + k}) of {np.dtype(dtype)}")
    if w0s.shape != (S.shape[0],) or w0s.dtype != np.float64:
        raise ValueError("array 'mcmc_w0' does not match the samples")
    clip = info.get("clip")
    if not (isinstance(clip, list) and len(clip) == 2):
        raise ValueError("bad MCMC clip range in header")
    from ._base import _as_array

    # the arrays cfm._io hands over are fresh copies (or read now): no second copy
    est._samples = np.ascontiguousarray(_as_array(S))
    est._sample_w0 = np.ascontiguousarray(_as_array(w0s))
    est._clip = (float(clip[0]), float(clip[1]))
    est.alpha_ = float(info.get("alpha", 1.0))
