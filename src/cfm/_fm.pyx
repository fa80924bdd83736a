"""Factorization machine kernels: scoring and one SGD-type training epoch.

Model (Rendle 2010), computed in O(k * nnz) per row:

    y(x) = w0 + sum_i w_i x_i + 1/2 sum_f [ (sum_i v_if x_i)^2 - sum_i v_if^2 x_i^2 ]

With ``normalize`` each row x is scaled by 1 / ||x||_2 on the fly (instance-wise
normalisation, as xLearn and libffm do by default); the input is never copied.

Design
------
* Parameters and optimizer state of a feature live in one record of a table of
  shape (n_features, stride):  [w, v_0 .. v_{k-1}, <optimizer state>, pad]
  with stride a multiple of 64 bytes, so that a non-zero costs one or two cache
  lines instead of one miss per array (see PERFORMANCE.md: training and
  scoring are bound by random memory access, not arithmetic).
  Optimizer state: sgd none; adagrad [G_w, G_v]; ftrl [z_w, n_w, G_v]
  (FTRL-proximal on the linear terms, AdaGrad on the factors).  The factors
  use row-wise AdaGrad -- one accumulator per feature's factor vector, fed
  with the mean squared gradient of its k coordinates, as recommendation
  systems do for embedding tables -- so that for k <= 13 (float32) a
  feature's whole record [w, v(k), G_w, G_v] is one 64-byte cache line.
* The parameter records of the rows a few steps ahead are prefetched in
  software, which hides most of the miss latency.
* Scoring: OpenMP ``prange`` over rows, static schedule; each row is computed
  independently in the same order, so results do not depend on ``n_threads``.
* Training: per-sample updates, Hogwild (lock-free, racy) across threads on
  the shared table.  The bias w0 is kept per thread during an epoch and merged
  afterwards (a single shared scalar would bounce one cache line between all
  cores on every sample).  With one thread the epoch is exactly sequential, so
  ``n_jobs=1`` with a fixed row order is bit-for-bit reproducible.
* Sums are accumulated in double whatever the parameter dtype.
* Inputs are validated in Python (cfm/_validation.py) before any kernel runs;
  kernels trust their inputs and never check bounds.
"""
import numpy as np

from cython.parallel cimport prange, parallel, threadid
from libc.math cimport sqrt, sqrtf, isfinite, fabs, log, cos, sin
from libc.stdint cimport int32_t, int64_t, uint64_t

from cfm._common cimport (
    floating, data_t, index_t, cfm_prefetch_r, cfm_prefetch_w,
    OPT_SGD, OPT_ADAGRAD, OPT_FTRL,
    splitmix64, rand_uniform, row_scale, prefetch_span, update_bias, ftrl_weight, fsqrt,
    THR_STRIDE, T_W0, T_A, T_B, T_LOSS, T_WSUM, T_COUNT, T_BAD, MAX_FACTORS,
    init_thread_states, merge_thread_states, linear_step, sample_grad,
)

cdef double TWO_PI = 6.283185307179586

# Rows ahead whose parameter records are prefetched (training and scoring),
# and rows ahead whose index arrays are prefetched (training: random order).
cdef enum:
    PF_ROWS = 2
    PF_IDX = 6


cdef inline double row_score(const data_t* data, const index_t* indices,
                             Py_ssize_t start, Py_ssize_t end,
                             const floating* tab, Py_ssize_t stride, int k,
                             double scale, double* s) noexcept nogil:
    """Linear + pairwise part of one row; leaves sum_i v_if x_i in s[f].

    The per-factor sums live in stack arrays (which cannot alias the table,
    so the factor loop vectorises); the sum of squares is kept per factor and
    reduced at the end for the same reason.
    """
    cdef Py_ssize_t jj, f
    cdef const floating* rec
    cdef double x, d, lin = 0.0, sq = 0.0, pair = 0.0
    cdef double acc[MAX_FACTORS]
    cdef double acc2[MAX_FACTORS]
    for f in range(k):
        acc[f] = 0.0
        acc2[f] = 0.0
    for jj in range(start, end):
        rec = tab + <Py_ssize_t>indices[jj] * stride
        x = <double>data[jj] * scale
        lin += <double>rec[0] * x
        rec = rec + 1
        for f in range(k):
            d = <double>rec[f] * x
            acc[f] += d
            acc2[f] += d * d
    for f in range(k):
        s[f] = acc[f]
        pair += acc[f] * acc[f]
        sq += acc2[f]
    return lin + 0.5 * (pair - sq)


cdef inline void prefetch_records(const index_t* indices, Py_ssize_t start, Py_ssize_t end,
                                  const floating* tab, Py_ssize_t stride,
                                  Py_ssize_t n_lines) noexcept nogil:
    cdef Py_ssize_t jj, l
    cdef const char* p
    for jj in range(start, end):
        p = <const char*>(tab + <Py_ssize_t>indices[jj] * stride)
        for l in range(n_lines):
            cfm_prefetch_r(p + 64 * l)


def fm_predict(const data_t[::1] data,        # IN  CSR values
               const index_t[::1] indices,    # IN  CSR column indices
               const int64_t[::1] indptr,     # IN  CSR row offsets (n_rows + 1)
               const floating[:, ::1] table,  # IN  parameter table (n_features, stride)
               double w0,                     # IN  bias
               int n_factors,                 # IN  k (columns 1..k of the table)
               bint normalize,                # IN  instance-wise L2 normalisation
               double[::1] out,               # OUT scores (n_rows,)
               int n_threads):
    """Raw FM scores of the rows of a CSR matrix, OpenMP over rows."""
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef Py_ssize_t stride = table.shape[1]
    cdef int k = n_factors
    cdef Py_ssize_t kpad = (k // 8 + 2) * 8
    cdef double[:, ::1] scratch = np.zeros((max(n_threads, 1), kpad))
    cdef Py_ssize_t n_lines = (((1 + k) * sizeof(floating)) + 63) // 64
    cdef Py_ssize_t i, r, start, end
    cdef double scale
    cdef double* s
    cdef const data_t* X = &data[0] if data.shape[0] > 0 else NULL
    cdef const index_t* ind = &indices[0] if indices.shape[0] > 0 else NULL
    cdef const floating* tab = &table[0, 0]
    if n_rows <= 0:
        return
    with nogil, parallel(num_threads=n_threads):
        for i in prange(n_rows, schedule='static'):
            s = &scratch[threadid(), 0]
            r = i + PF_ROWS
            if r < n_rows:
                prefetch_records(ind, indptr[r], indptr[r + 1], tab, stride, n_lines)
            start = indptr[i]
            end = indptr[i + 1]
            scale = row_scale(X, start, end, normalize)
            out[i] = w0 + row_score(X, ind, start, end, tab, stride, k, scale, s)


cdef inline void update_features(const data_t* data, const index_t* indices,
                                 Py_ssize_t start, Py_ssize_t end,
                                 floating* tab, Py_ssize_t stride, int k,
                                 double scale, const double* s, double g,
                                 int optimizer, double lr, double l2_w,
                                 double l2_v, double l1,
                                 double ftrl_beta) noexcept nogil:
    """Per-sample updates of w_j and v_j for the features of one row.

    The factor loops run in the parameter precision (float32 models use
    single-precision sqrt/div, which the compiler vectorises over k).
    """
    cdef Py_ssize_t jj, f, goff
    cdef floating* rec
    cdef floating* vrec
    cdef floating* grec
    cdef double x, gx
    cdef floating xf, gxf, v, gv, accf, gsq, step
    cdef floating lrf = <floating>lr
    cdef floating l2vf = <floating>l2_v
    cdef floating inv_k = <floating>(1.0 / k) if k > 0 else 0
    # stack copies: cannot alias the table, so the factor loops vectorise
    cdef floating sf[MAX_FACTORS]
    cdef floating gbuf[MAX_FACTORS]
    goff = 1 + k + 1 if optimizer == OPT_ADAGRAD else 1 + k + 2
    for f in range(k):
        sf[f] = <floating>s[f]
    for jj in range(start, end):
        rec = tab + <Py_ssize_t>indices[jj] * stride
        x = <double>data[jj] * scale
        gx = g * x
        linear_step(rec, rec + 1 + k, gx, optimizer, lr, l2_w, l1, ftrl_beta)
        # factors: grad v_jf = g x_j (s_f - v_jf x_j) + l2_v v_jf
        xf = <floating>x
        gxf = <floating>gx
        vrec = rec + 1
        if optimizer == OPT_SGD:
            for f in range(k):
                v = vrec[f]
                gv = gxf * (sf[f] - v * xf) + l2vf * v
                vrec[f] = v - lrf * gv
        elif k > 0:
            # row-wise AdaGrad: one accumulator per factor vector, fed with
            # the mean squared gradient over its k coordinates
            for f in range(k):
                v = vrec[f]
                gbuf[f] = gxf * (sf[f] - v * xf) + l2vf * v
            gsq = 0
            for f in range(k):
                gsq = gsq + gbuf[f] * gbuf[f]
            accf = rec[goff] + gsq * inv_k
            rec[goff] = accf
            step = lrf / fsqrt(accf)
            for f in range(k):
                vrec[f] = vrec[f] - step * gbuf[f]


def fm_train_epoch(const data_t[::1] data,         # IN  CSR values
                   const index_t[::1] indices,     # IN  CSR column indices
                   const int64_t[::1] indptr,      # IN  CSR row offsets
                   const double[::1] y,            # IN  targets (logistic: -1/+1)
                   const double[::1] sample_weight,  # IN  per-row weights, or empty
                   const int64_t[::1] order,       # IN  rows to visit, in this order
                   floating[:, ::1] table,         # IN/OUT parameter table
                   double[::1] w0_state,           # IN/OUT [w0, a, b] bias and its state
                   int n_factors, int loss, int optimizer,
                   bint fit_intercept, bint normalize,
                   double learning_rate, double l2_w0, double l2_w, double l2_v,
                   double l1, double ftrl_beta, int n_threads):
    """One pass of per-sample updates over ``order``; Hogwild across threads.

    Returns (sum of weighted losses before each update, sum of weights,
    number of rows whose prediction was not finite).
    """
    cdef Py_ssize_t n = order.shape[0]
    cdef Py_ssize_t stride = table.shape[1]
    cdef int k = n_factors
    cdef int nt = max(n_threads, 1)
    cdef Py_ssize_t kpad = (k // 8 + 2) * 8
    cdef double[:, ::1] scratch = np.zeros((nt, kpad))
    cdef double[:, ::1] thr = np.zeros((nt, THR_STRIDE))
    cdef Py_ssize_t n_lines = (stride * sizeof(floating) + 63) // 64
    cdef bint has_sw = sample_weight.shape[0] > 0
    cdef Py_ssize_t p, i, r, start, end, t_id
    cdef double scale, pred, g
    cdef double* s
    cdef double* t
    cdef const data_t* X = &data[0] if data.shape[0] > 0 else NULL
    cdef const index_t* ind = &indices[0] if indices.shape[0] > 0 else NULL
    cdef floating* tab = &table[0, 0]
    cdef double total_loss = 0.0, total_w = 0.0
    cdef int n_bad

    init_thread_states(&thr[0, 0], nt, &w0_state[0])
    if n == 0:
        return 0.0, 0.0, 0

    with nogil, parallel(num_threads=nt):
        for p in prange(n, schedule='static'):
            t = &thr[threadid(), 0]
            s = &scratch[threadid(), 0]
            # Prefetch pipeline for a random row order: offsets of the row
            # PF_IDX ahead, then its index array, then parameter records.
            if p + PF_IDX < n:
                r = order[p + PF_IDX]
                cfm_prefetch_r(&indptr[r])
            if p + PF_ROWS + 1 < n:
                r = order[p + PF_ROWS + 1]
                prefetch_span(ind + indptr[r], (indptr[r + 1] - indptr[r]) * sizeof(index_t))
                prefetch_span(X + indptr[r], (indptr[r + 1] - indptr[r]) * sizeof(data_t))
                cfm_prefetch_r(&y[r])
            if p + PF_ROWS < n:
                r = order[p + PF_ROWS]
                prefetch_records(ind, indptr[r], indptr[r + 1], tab, stride, n_lines)
            i = order[p]
            start = indptr[i]
            end = indptr[i + 1]
            scale = row_scale(X, start, end, normalize)
            pred = t[T_W0] + row_score(X, ind, start, end, tab, stride, k, scale, s)
            if not isfinite(pred):
                t[T_BAD] += 1.0
            else:
                g = sample_grad(t, pred, y[i], sample_weight[i] if has_sw else 1.0, loss)
                if fit_intercept:
                    update_bias(t, g, optimizer, learning_rate, l2_w0, ftrl_beta)
                update_features(X, ind, start, end, tab, stride, k, scale, s, g,
                                optimizer, learning_rate, l2_w, l2_v, l1, ftrl_beta)

    # Merge per-thread bias states in a fixed order: count-weighted mean of
    # w0, summed increments of the accumulators.  Exact with one thread.
    n_bad = merge_thread_states(&thr[0, 0], nt, &w0_state[0], optimizer, fit_intercept,
                                learning_rate, l2_w0, ftrl_beta, &total_loss, &total_w)
    return total_loss, total_w, n_bad


def fm_init_factors(floating[:, ::1] table,   # IN/OUT parameter table
                    int n_factors, double std,
                    uint64_t seed, int n_threads):
    """Fill columns 1..k of the table with N(0, std^2) draws.

    Each feature's draws come from its own stream (splitmix64 seeded with
    seed and the feature index, Box-Muller), so the result is identical for
    any number of threads, and the work runs in parallel.
    """
    cdef Py_ssize_t n = table.shape[0]
    cdef Py_ssize_t j, f
    cdef int k = n_factors
    cdef uint64_t state
    cdef double u1, u2, r
    if k <= 0 or n <= 0:
        return
    with nogil:
        for j in prange(n, schedule='static', num_threads=max(n_threads, 1)):
            state = seed ^ (<uint64_t>j * <uint64_t>0xD1B54A32D192ED03ULL)
            splitmix64(&state)
            f = 0
            while f < k:
                u1 = 1.0 - rand_uniform(&state)      # (0, 1]
                u2 = rand_uniform(&state)
                r = std * sqrt(-2.0 * log(u1))
                table[j, 1 + f] = <floating>(r * cos(TWO_PI * u2))
                if f + 1 < k:
                    table[j, 2 + f] = <floating>(r * sin(TWO_PI * u2))
                f = f + 2
