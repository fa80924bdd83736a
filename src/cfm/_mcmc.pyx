"""Coordinate-wise kernels of the ALS and MCMC (Gibbs sampling) FM solvers.

Both solvers visit the model parameters one at a time -- w0, then every w_j,
then for each factor f every v_jf -- and set each to a draw from (MCMC) or
the mean of (ALS) its conditional posterior given everything else
(Rendle 2012, "Factorization Machines with libFM", ACM TIST 3(3)).  The
conditional of a parameter theta is Gaussian because the FM is linear in
theta: y_i = g_i + theta * h_i with h_i = d y_i / d theta, so with residuals
e_i = y_hat_i - target_i, noise precision alpha and prior N(mu, 1/lambda):

    precision = lambda + alpha * sum_i h_i^2
    mean      = (alpha * sum_i h_i (theta h_i - e_i) + lambda * mu) / precision

For w_j, h_i = x_ij; for v_jf, h_i = x_ij (q_if - v_jf x_ij) with the cache
q_if = sum_l v_lf x_il.  After each update the residuals (and q for a factor)
of the rows in column j are corrected, so a sweep costs O(k * nnz).

Design
------
* Column access uses a CSC copy of X (row indices int32, values double, row
  scaling of ``normalize`` already applied); row passes use the CSR input.
* ``cache`` is (n_rows, 1 + k): [e_i, q_i0 .. q_i,k-1] per row, so a column
  pass touches one cache line per non-zero.
* The full prediction (and so e and q) is recomputed from scratch after every
  sweep by a row pass (OpenMP over rows), as libFM does for stability; the
  same pass draws the probit latent targets for classification.
* Parallelism inside a sweep: features are cut into "exclusive blocks" --
  contiguous runs of columns no two of which share a row (e.g. all users of a
  one-hot user block).  The conditionals of the features of such a block do
  not depend on each other and their updates touch disjoint rows, so they are
  drawn in parallel and the result is exactly that of the sequential sweep.
* Randomness is counter based: every draw has its own splitmix64 stream keyed
  by (seed, sweep, kind, index) (kind 0 = w0, 1 = w, 2 + f = factor f,
  LATENT = latent targets), so results never depend on the number of
  threads or on the order of the work.  tests/reference_mcmc.py reproduces
  these streams in Python.
* Sums over all rows are taken per fixed chunk of CHUNK rows and the chunk
  sums added in order: identical for any number of threads.
* Hyper-parameters (alpha, mu, lambda) are drawn in Python (cfm/_bayes.py):
  they only need O(n_features * k) sums.
"""
import numpy as np

from cython.parallel cimport prange, parallel, threadid
from libc.math cimport sqrt, log, exp, cos, erfc, isfinite, fabs
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport malloc, free

from cfm._common cimport floating, data_t, index_t, splitmix64, rand_uniform, row_scale

cdef double TWO_PI = 6.283185307179586
cdef double INV_SQRT2 = 0.7071067811865476
cdef double LOG_SQRT_2PI = 0.9189385332046727

cdef enum:
    CHUNK = 4096
    KIND_W0 = 0
    KIND_W = 1
    KIND_V0 = 2
    LATENT = 1048576
    TASK_REGRESSION = 0
    TASK_PROBIT = 1

# Python-visible constants (tests and cfm/_bayes.py)
KIND_LATENT = LATENT
ROW_CHUNK = CHUNK


# ------------------------------------------------------------ random numbers
cdef inline uint64_t mix64(uint64_t z) noexcept nogil:
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline uint64_t stream_key(uint64_t seed, uint64_t sweep, uint64_t kind,
                                uint64_t index) noexcept nogil:
    """Initial state of the stream of draw (sweep, kind, index)."""
    cdef uint64_t s = mix64(seed ^ (sweep * <uint64_t>0x9E3779B97F4A7C15ULL))
    s = mix64(s ^ (kind * <uint64_t>0xC2B2AE3D27D4EB4FULL))
    return mix64(s ^ (index * <uint64_t>0x165667B19E3779F9ULL))


cdef inline double std_normal(uint64_t* st) noexcept nogil:
    """Box-Muller from two uniforms (the cosine half only)."""
    cdef double u1 = 1.0 - rand_uniform(st)   # (0, 1]
    cdef double u2 = rand_uniform(st)
    return sqrt(-2.0 * log(u1)) * cos(TWO_PI * u2)


cdef inline double tail_normal(double a, uint64_t* st) noexcept nogil:
    """x ~ N(0, 1) conditioned on x > a: plain rejection for a <= 0.5,
    Robert's (1995) exponential proposal above."""
    cdef double x, astar, u1, u2
    cdef int tries
    if not isfinite(a):
        return 0.0 if a < 0 else a
    if a <= 0.5:
        for tries in range(10000):
            x = std_normal(st)
            if x > a:
                return x
        return a
    astar = 0.5 * (a + sqrt(a * a + 4.0))
    for tries in range(10000):
        u1 = 1.0 - rand_uniform(st)
        u2 = rand_uniform(st)
        x = a - log(u1) / astar
        if u2 <= exp(-0.5 * (x - astar) * (x - astar)):
            return x
    return a


cdef inline double upper_tail(double a) noexcept nogil:
    """Q(a) = P(N(0,1) > a)."""
    return 0.5 * erfc(a * INV_SQRT2)


cdef inline double mills(double a) noexcept nogil:
    """E[x | x > a] for x ~ N(0, 1) (inverse Mills ratio phi(a) / Q(a))."""
    cdef double q
    if a > 30.0:
        return a + 1.0 / a
    q = upper_tail(a)
    return exp(-0.5 * a * a - LOG_SQRT_2PI) / q


cdef inline double log_cdf(double t) noexcept nogil:
    """log Phi(t), accurate in the lower tail."""
    if t < -30.0:
        return -0.5 * t * t - log(-t) - LOG_SQRT_2PI
    return log(upper_tail(-t))


def normal_draws(uint64_t seed, uint64_t sweep, uint64_t kind, const int64_t[::1] index):
    """Standard normal draw of each stream (sweep, kind, index[i]) (for tests)."""
    out = np.empty(index.shape[0])
    cdef double[::1] o = out
    cdef Py_ssize_t i
    cdef uint64_t st
    for i in range(index.shape[0]):
        st = stream_key(seed, sweep, kind, <uint64_t>index[i])
        o[i] = std_normal(&st)
    return out


def latent_draws(uint64_t seed, uint64_t sweep, const double[::1] a):
    """tail_normal(a[i]) on stream (sweep, LATENT, i) (for tests)."""
    out = np.empty(a.shape[0])
    cdef double[::1] o = out
    cdef Py_ssize_t i
    cdef uint64_t st
    for i in range(a.shape[0]):
        st = stream_key(seed, sweep, LATENT, <uint64_t>i)
        o[i] = tail_normal(a[i], &st)
    return out


# ------------------------------------------------------------ exclusive blocks
def exclusive_blocks(const int64_t[::1] col_ptr, const int32_t[::1] row_idx, int64_t n_rows):
    """Cut the columns into contiguous runs no two columns of which share a
    row; returns the run boundaries (n_blocks + 1,) as int64."""
    cdef Py_ssize_t n_cols = col_ptr.shape[0] - 1
    cdef int64_t[::1] mark = np.full(max(n_rows, 1), -1, dtype=np.int64)
    cdef int64_t[::1] starts = np.empty(n_cols + 1, dtype=np.int64)
    cdef Py_ssize_t j, p, nb = 0
    cdef int64_t cur = 0
    cdef bint clash
    with nogil:
        if n_cols > 0:
            starts[0] = 0
            nb = 1
        for j in range(n_cols):
            clash = False
            for p in range(col_ptr[j], col_ptr[j + 1]):
                if mark[row_idx[p]] == cur:
                    clash = True
                    break
            if clash:
                cur += 1
                starts[nb] = j
                nb += 1
            for p in range(col_ptr[j], col_ptr[j + 1]):
                mark[row_idx[p]] = cur
        starts[nb] = n_cols
    return np.asarray(starts[:nb + 1]).copy()


# ------------------------------------------------------------ one sweep
cdef inline void draw_w(Py_ssize_t j, const int64_t* col_ptr, const int32_t* row_idx,
                        const double* col_val, double* e,
                        floating* P, Py_ssize_t ps, double alpha, double mu, double lam,
                        bint do_sample, uint64_t seed, uint64_t sweep) noexcept nogil:
    cdef Py_ssize_t p
    cdef double x, s1 = 0.0, s2 = 0.0, prec, mean, new, old, d
    cdef floating stored
    cdef uint64_t st
    old = <double>P[j * ps]
    for p in range(col_ptr[j], col_ptr[j + 1]):
        x = col_val[p]
        s1 += x * e[row_idx[p]]
        s2 += x * x
    prec = lam + alpha * s2
    if not (prec > 0.0) or not isfinite(prec):
        new = 0.0
    else:
        mean = (alpha * (old * s2 - s1) + lam * mu) / prec
        new = mean
        if do_sample:
            st = stream_key(seed, sweep, KIND_W, <uint64_t>j)
            new = mean + std_normal(&st) / sqrt(prec)
    if not isfinite(new):
        return
    stored = <floating>new
    P[j * ps] = stored
    d = <double>stored - old
    if d != 0.0:
        for p in range(col_ptr[j], col_ptr[j + 1]):
            e[row_idx[p]] += col_val[p] * d


cdef inline void draw_v(Py_ssize_t j, int f, const int64_t* col_ptr, const int32_t* row_idx,
                        const double* col_val, double* e, double* q,
                        floating* P, Py_ssize_t ps, double alpha, double mu, double lam,
                        bint do_sample, uint64_t seed, uint64_t sweep) noexcept nogil:
    cdef Py_ssize_t p, r
    cdef double x, h, s1 = 0.0, s2 = 0.0, prec, mean, new, old, d
    cdef floating stored
    cdef uint64_t st
    old = <double>P[j * ps + 1 + f]
    for p in range(col_ptr[j], col_ptr[j + 1]):
        x = col_val[p]
        r = row_idx[p]
        h = x * (q[r] - x * old)
        s1 += h * e[r]
        s2 += h * h
    prec = lam + alpha * s2
    if not (prec > 0.0) or not isfinite(prec):
        new = 0.0
    else:
        mean = (alpha * (old * s2 - s1) + lam * mu) / prec
        new = mean
        if do_sample:
            st = stream_key(seed, sweep, KIND_V0 + f, <uint64_t>j)
            new = mean + std_normal(&st) / sqrt(prec)
    if not isfinite(new):
        return
    stored = <floating>new
    P[j * ps + 1 + f] = stored
    d = <double>stored - old
    if d != 0.0:
        for p in range(col_ptr[j], col_ptr[j + 1]):
            x = col_val[p]
            r = row_idx[p]
            h = x * (q[r] - x * old)
            q[r] += x * d
            e[r] += h * d


def sweep(const int64_t[::1] col_ptr,       # IN  CSC column offsets (n_features + 1)
          const int32_t[::1] row_idx,       # IN  CSC row indices
          const double[::1] col_val,        # IN  CSC values (row scaling applied)
          const int64_t[::1] block_ptr,     # IN  exclusive blocks (n_blocks + 1)
          const int32_t[::1] group,         # IN  prior group of each feature
          double[:, ::1] cache,             # IN/OUT (1 + k, n_rows): e, q_0 .. q_{k-1}
          floating[:, ::1] P,               # IN/OUT (n_features, >= 1 + k): [w, v_0..]
          int k,
          double[::1] w0,                   # IN/OUT (1,) bias
          double alpha,                     # noise precision (1 for probit)
          double reg0, double mu0,          # prior of w0: N(mu0, 1 / reg0)
          const double[::1] mu_w, const double[::1] lam_w,        # (n_groups,)
          const double[:, ::1] mu_v, const double[:, ::1] lam_v,  # (k, n_groups)
          bint fit_w0, bint fit_linear, bint do_sample,
          uint64_t seed, uint64_t sweep_idx, int n_threads, int64_t min_block_nnz):
    """One sweep over w0, w and V (draws if ``do_sample`` else conditional
    means, i.e. one ALS step), keeping the residuals and q caches exact."""
    cdef Py_ssize_t n_rows = cache.shape[1]
    cdef Py_ssize_t ps = P.shape[1]
    cdef Py_ssize_t n_blocks = block_ptr.shape[0] - 1
    cdef Py_ssize_t n_chunks = (n_rows + CHUNK - 1) // CHUNK
    cdef Py_ssize_t b, j, c, i, lo, hi, i_end
    cdef int f, nt = max(n_threads, 1)
    cdef double s, prec, mean, new, d, acc
    cdef uint64_t st
    cdef double* cp = &cache[0, 0]
    cdef floating* pp = &P[0, 0]
    cdef const int64_t* colp = &col_ptr[0]
    cdef const int32_t* rows = &row_idx[0] if row_idx.shape[0] > 0 else NULL
    cdef const double* vals = &col_val[0] if col_val.shape[0] > 0 else NULL
    cdef const int32_t* grp = &group[0] if group.shape[0] > 0 else NULL
    cdef double* part
    if n_rows <= 0:
        return
    if cache.shape[0] < 1 + k or ps < 1 + k:
        raise ValueError("cache / parameter table too narrow for k")
    part = <double*>malloc(n_chunks * sizeof(double))
    if part == NULL:
        raise MemoryError()
    try:
        with nogil:
            # ---- w0
            if fit_w0:
                for c in prange(n_chunks, schedule='static', num_threads=nt):
                    acc = 0.0
                    i_end = min((c + 1) * CHUNK, n_rows)
                    for i in range(c * CHUNK, i_end):
                        acc = acc + cp[i]
                    part[c] = acc
                s = 0.0
                for c in range(n_chunks):
                    s += part[c]
                prec = reg0 + alpha * n_rows
                mean = (alpha * (w0[0] * n_rows - s) + reg0 * mu0) / prec
                new = mean
                if do_sample:
                    st = stream_key(seed, sweep_idx, KIND_W0, 0)
                    new = mean + std_normal(&st) / sqrt(prec)
                if isfinite(new):
                    d = new - w0[0]
                    w0[0] = new
                    for i in prange(n_rows, schedule='static', num_threads=nt):
                        cp[i] += d
            # ---- w
            if fit_linear:
                for b in range(n_blocks):
                    lo = block_ptr[b]
                    hi = block_ptr[b + 1]
                    if nt > 1 and hi - lo > 1 and colp[hi] - colp[lo] >= min_block_nnz:
                        for j in prange(lo, hi, schedule='dynamic', chunksize=16, num_threads=nt):
                            draw_w(j, colp, rows, vals, cp, pp, ps, alpha,
                                   mu_w[grp[j]], lam_w[grp[j]], do_sample, seed, sweep_idx)
                    else:
                        for j in range(lo, hi):
                            draw_w(j, colp, rows, vals, cp, pp, ps, alpha,
                                   mu_w[grp[j]], lam_w[grp[j]], do_sample, seed, sweep_idx)
            # ---- V, one factor at a time
            for f in range(k):
                for b in range(n_blocks):
                    lo = block_ptr[b]
                    hi = block_ptr[b + 1]
                    if nt > 1 and hi - lo > 1 and colp[hi] - colp[lo] >= min_block_nnz:
                        for j in prange(lo, hi, schedule='dynamic', chunksize=16, num_threads=nt):
                            draw_v(j, f, colp, rows, vals, cp, cp + (1 + f) * n_rows, pp, ps, alpha,
                                   mu_v[f, grp[j]], lam_v[f, grp[j]], do_sample, seed,
                                   sweep_idx)
                    else:
                        for j in range(lo, hi):
                            draw_v(j, f, colp, rows, vals, cp, cp + (1 + f) * n_rows, pp, ps, alpha,
                                   mu_v[f, grp[j]], lam_v[f, grp[j]], do_sample, seed,
                                   sweep_idx)
    finally:
        free(part)


# ------------------------------------------------------------ row passes
cdef inline double row_pred(const data_t* X, const index_t* ind, Py_ssize_t start,
                            Py_ssize_t end, const floating* P, Py_ssize_t ps, int k,
                            double scale, double w0, double* q, Py_ssize_t qs) noexcept nogil:
    """w0 + linear + pairwise of one row; leaves q_f = sum_j v_jf x_j in q[f * qs]."""
    cdef Py_ssize_t jj, f
    cdef const floating* rec
    cdef double x, v, lin = 0.0, sq = 0.0, pair = 0.0
    cdef double acc[256]
    for f in range(k):
        acc[f] = 0.0
    for jj in range(start, end):
        rec = P + <Py_ssize_t>ind[jj] * ps
        x = <double>X[jj] * scale
        lin += <double>rec[0] * x
        for f in range(k):
            v = <double>rec[1 + f] * x
            acc[f] += v
            sq += v * v
    for f in range(k):
        pair += acc[f] * acc[f]
        if q != NULL:
            q[f * qs] = acc[f]
    return w0 + lin + 0.5 * (pair - sq)


def refresh(const data_t[::1] data, const index_t[::1] indices, const int64_t[::1] indptr,
            bint normalize, const floating[:, ::1] P, int k, double w0,
            const double[::1] y,          # targets (regression) or +-1 labels (probit)
            int task, bint do_sample, uint64_t seed, uint64_t sweep_idx,
            double[:, ::1] cache,         # OUT (1 + k, n_rows): e, q_0 .. q_{k-1}
            int n_threads):
    """Recompute every prediction from scratch; set cache = [pred - target, q].
    For probit the target is a latent draw from N(pred, 1) truncated to the
    label's side (or its expectation when not ``do_sample``).  Returns the
    training loss sum (half squared error, or probit negative log-likelihood)
    of the parameters before the latent draw, chunk-wise in fixed order."""
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef Py_ssize_t ps = P.shape[1]
    cdef Py_ssize_t n_chunks = (n_rows + CHUNK - 1) // CHUNK
    cdef Py_ssize_t c, i, i_end, f
    cdef int nt = max(n_threads, 1)
    cdef double pred, t, z, scale, acc
    cdef uint64_t st
    cdef const data_t* X = &data[0] if data.shape[0] > 0 else NULL
    cdef const index_t* ind = &indices[0] if indices.shape[0] > 0 else NULL
    cdef const floating* pp = &P[0, 0]
    cdef double* cp = &cache[0, 0] if n_rows > 0 else NULL
    cdef double[::1] part = np.zeros(max(n_chunks, 1))
    if n_rows <= 0:
        return 0.0
    if cache.shape[0] < 1 + k or cache.shape[1] != n_rows:
        raise ValueError("cache has the wrong shape")
    with nogil:
        for c in prange(n_chunks, schedule='static', num_threads=nt):
            acc = 0.0
            i_end = min((c + 1) * CHUNK, n_rows)
            for i in range(c * CHUNK, i_end):
                scale = row_scale(X, indptr[i], indptr[i + 1], normalize)
                pred = row_pred(X, ind, indptr[i], indptr[i + 1], pp, ps, k, scale, w0,
                                cp + n_rows + i, n_rows)
                if task == TASK_REGRESSION:
                    t = pred - y[i]
                    acc = acc + 0.5 * t * t
                    cp[i] = t
                else:
                    acc = acc - log_cdf(pred if y[i] > 0 else -pred)
                    if do_sample:
                        st = stream_key(seed, sweep_idx, LATENT, <uint64_t>i)
                        if y[i] > 0:
                            z = pred + tail_normal(-pred, &st)
                        else:
                            z = pred - tail_normal(pred, &st)
                    elif y[i] > 0:
                        z = pred + mills(-pred)
                    else:
                        z = pred - mills(pred)
                    cp[i] = pred - z
            part[c] = acc
    acc = 0.0
    for c in range(n_chunks):
        acc += part[c]
    return acc


def predict_sum(const data_t[::1] data, const index_t[::1] indices, const int64_t[::1] indptr,
                bint normalize,
                const floating[:, :, ::1] S,   # IN  samples (n_samples, n_features, >= 1 + k)
                const double[::1] w0s,         # IN  bias of each sample
                int k, int task, double lo, double hi,
                double[::1] out_p,             # IN/OUT sum over samples (added to)
                double[::1] out_q,             # IN/OUT probit: sum of 1 - p (added to)
                int n_threads):
    """Add each sample's prediction to out_p: clipped to [lo, hi] for
    regression (no clipping when lo > hi); for probit Phi(pred) to out_p and
    Phi(-pred) to out_q.  Rows in parallel, samples in order."""
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef Py_ssize_t n_s = S.shape[0]
    cdef Py_ssize_t ps = S.shape[2]
    cdef Py_ssize_t sstride = S.shape[1] * S.shape[2]
    cdef Py_ssize_t i, s
    cdef int nt = max(n_threads, 1)
    cdef double pred, scale, sp, sq
    cdef const data_t* X = &data[0] if data.shape[0] > 0 else NULL
    cdef const index_t* ind = &indices[0] if indices.shape[0] > 0 else NULL
    cdef const floating* base
    if n_rows <= 0 or n_s <= 0:
        return
    if k > 256 or ps < 1 + k:
        raise ValueError("bad sample table shape")
    base = &S[0, 0, 0]
    with nogil:
        for i in prange(n_rows, schedule='static', num_threads=nt):
            scale = row_scale(X, indptr[i], indptr[i + 1], normalize)
            sp = 0.0
            sq = 0.0
            for s in range(n_s):
                pred = row_pred(X, ind, indptr[i], indptr[i + 1], base + s * sstride, ps, k,
                                scale, w0s[s], NULL, 0)
                if task == TASK_REGRESSION:
                    if lo <= hi:
                        if pred < lo:
                            pred = lo
                        elif pred > hi:
                            pred = hi
                    sp = sp + pred
                else:
                    sp = sp + upper_tail(-pred)
                    sq = sq + upper_tail(pred)
            out_p[i] += sp
            if task != TASK_REGRESSION:
                out_q[i] += sq
