"""What the coordinate-wise solvers (als, mcmc) share: the training data in
the layouts their kernels need, prior groups, residual refreshes and the
thread-count tuner.  See als.py and gibbs.py; kernels in src/cfm/_mcmc.pyx.
"""
import numpy as np

from .. import _mcmc
from .._lazy import sparse as sp
from .._state.mcmc import TASK_PROBIT, TASK_REGRESSION  # noqa: F401 (re-exported)

# Blocks of independent features with fewer non-zeros than this are swept by
# one thread (thread start-up would cost more than it saves); results do not
# depend on it.
MIN_BLOCK_NNZ = 20_000
# Predictions (and so residuals and q caches) are recomputed from X after
# every REFRESH_EVERY-th sweep (libFM: every sweep) to stop rounding drift;
# in between, the sweeps keep them exact up to rounding.
REFRESH_EVERY = 10


class Data:
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
    return check_groups(np.repeat(ids, sizes), data.n_features)


def check_groups(groups, n_features):
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


def refresh(data, P, k, w0, y, task, do_sample, seed, sweep_idx, cache, z, n_threads):
    full = sweep_idx % REFRESH_EVERY == 0
    if not full and task == TASK_REGRESSION and data.n_rows < 1_000_000:
        n_threads = 1   # a trivial O(n_rows) pass: a helper would cost more than it saves
    return _mcmc.refresh(data.data, data.indices, data.indptr, P, k, w0, y, task, do_sample,
                         seed, sweep_idx, cache, z, full, data.sw, n_threads)




def sweep(data, group, cache, P, k, w0, *, alpha, reg0, mu_w, lam_w, mu_v, lam_v, fit_w0,
          do_sample, seed, sweep_idx, n_threads):
    """One kernel sweep over w0, w and V (draws if ``do_sample``, else one ALS
    step), the arguments named."""
    _mcmc.sweep(col_ptr=data.col_ptr, row_idx=data.row_idx, col_val=data.col_val,
                col_wval=data.col_wval, sw=data.sw, block_ptr=data.blocks, colseg=data.colseg,
                group=group, cache=cache, P=P, k=k, w0=w0, alpha=alpha, reg0=reg0, mu0=0.0,
                mu_w=mu_w, lam_w=lam_w, mu_v=mu_v, lam_v=lam_v, fit_w0=fit_w0,
                fit_linear=True, do_sample=do_sample, seed=seed, sweep_idx=sweep_idx,
                n_threads=n_threads, min_block_nnz=MIN_BLOCK_NNZ)
