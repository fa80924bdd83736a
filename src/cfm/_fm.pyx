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
from libc.math cimport sqrt, sqrtf, isfinite, fabs
from libc.stdint cimport int32_t, int64_t

from cfm._common cimport (
    floating, data_t, index_t, cfm_prefetch_r, cfm_prefetch_w,
    loss_value, loss_grad, OPT_SGD, OPT_ADAGRAD, OPT_FTRL,
)

# Rows ahead whose parameter records are prefetched (training and scoring),
# and rows ahead whose index arrays are prefetched (training: random order).
cdef enum:
    PF_ROWS = 2
    PF_IDX = 6
# Per-thread slots in the ``thr`` array (padded to 128 bytes per thread).
cdef enum:
    THR_STRIDE = 16
    T_W0 = 0
    T_A = 1
    T_B = 2
    T_LOSS = 3
    T_WSUM = 4
    T_COUNT = 5
    T_BAD = 6


cdef inline double row_scale(const data_t* data, Py_ssize_t start, Py_ssize_t end,
                             bint normalize) noexcept nogil:
    cdef double nrm = 0.0
    cdef Py_ssize_t jj
    if not normalize:
        return 1.0
    for jj in range(start, end):
        nrm += <double>data[jj] * <double>data[jj]
    if nrm > 0.0:
        return 1.0 / sqrt(nrm)
    return 1.0


cdef inline double row_score(const data_t* data, const index_t* indices,
                             Py_ssize_t start, Py_ssize_t end,
                             const floating* tab, Py_ssize_t stride, int k,
                             double scale, double* s) noexcept nogil:
    """Linear + pairwise part of one row; leaves sum_i v_if x_i in s[f]."""
    cdef Py_ssize_t jj, f
    cdef const floating* rec
    cdef double x, d, lin = 0.0, sq = 0.0, pair = 0.0
    for f in range(k):
        s[f] = 0.0
    for jj in range(start, end):
        rec = tab + <Py_ssize_t>indices[jj] * stride
        x = <double>data[jj] * scale
        lin += <double>rec[0] * x
        for f in range(k):
            d = <double>rec[1 + f] * x
            s[f] += d
            sq += d * d
    for f in range(k):
        pair += s[f] * s[f]
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


cdef inline void update_bias(double* t, double g, int optimizer, double lr,
                             double l2_w0, double ftrl_beta) noexcept nogil:
    """One step on the (thread-local) bias state t = [w0, a, b]."""
    cdef double gw, sigma, n_new
    if optimizer == OPT_SGD:
        t[T_W0] -= lr * (g + l2_w0 * t[T_W0])
    elif optimizer == OPT_ADAGRAD:
        gw = g + l2_w0 * t[T_W0]
        t[T_A] += gw * gw
        t[T_W0] -= lr * gw / sqrt(t[T_A])
    else:
        n_new = t[T_B] + g * g
        sigma = (sqrt(n_new) - sqrt(t[T_B])) / lr
        t[T_A] += g - sigma * t[T_W0]
        t[T_B] = n_new
        t[T_W0] = -t[T_A] / ((ftrl_beta + sqrt(n_new)) / lr + l2_w0)


cdef inline floating fsqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline void update_features(const data_t* data, const index_t* indices,
                                 Py_ssize_t start, Py_ssize_t end,
                                 floating* tab, Py_ssize_t stride, int k,
                                 double scale, const double* s, floating* sf, double g,
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
    cdef double x, gx, w, gw, acc, sigma, n_new, z
    cdef floating xf, gxf, v, gv, accf, gsq, step
    cdef floating lrf = <floating>lr
    cdef floating l2vf = <floating>l2_v
    cdef floating inv_k = <floating>(1.0 / k) if k > 0 else 0
    cdef floating* gbuf = sf + k
    goff = 1 + k + 1 if optimizer == OPT_ADAGRAD else 1 + k + 2
    for f in range(k):
        sf[f] = <floating>s[f]
    for jj in range(start, end):
        rec = tab + <Py_ssize_t>indices[jj] * stride
        x = <double>data[jj] * scale
        gx = g * x
        w = rec[0]
        # linear term
        if optimizer == OPT_SGD:
            rec[0] = <floating>(w - lr * (gx + l2_w * w))
        elif optimizer == OPT_ADAGRAD:
            gw = gx + l2_w * w
            acc = <double>rec[1 + k] + gw * gw
            rec[1 + k] = <floating>acc
            rec[0] = <floating>(w - lr * gw / sqrt(acc))
        else:
            n_new = <double>rec[2 + k] + gx * gx
            sigma = (sqrt(n_new) - sqrt(<double>rec[2 + k])) / lr
            z = <double>rec[1 + k] + gx - sigma * w
            rec[1 + k] = <floating>z
            rec[2 + k] = <floating>n_new
            if fabs(z) <= l1:
                rec[0] = 0
            elif z > 0:
                rec[0] = <floating>(-(z - l1) / ((ftrl_beta + sqrt(n_new)) / lr + l2_w))
            else:
                rec[0] = <floating>(-(z + l1) / ((ftrl_beta + sqrt(n_new)) / lr + l2_w))
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
            gsq = 0
            for f in range(k):
                v = vrec[f]
                gv = gxf * (sf[f] - v * xf) + l2vf * v
                gbuf[f] = gv
                gsq = gsq + gv * gv
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
    cdef floating[:, ::1] fscratch = np.zeros((nt, 2 * kpad), dtype=np.float32 if floating is float else np.float64)
    cdef double[:, ::1] thr = np.zeros((nt, THR_STRIDE))
    cdef Py_ssize_t n_lines = (stride * sizeof(floating) + 63) // 64
    cdef bint has_sw = sample_weight.shape[0] > 0
    cdef Py_ssize_t p, i, r, start, end, t_id
    cdef double scale, pred, g, sw, yi
    cdef double* s
    cdef floating* sf
    cdef double* t
    cdef const data_t* X = &data[0] if data.shape[0] > 0 else NULL
    cdef const index_t* ind = &indices[0] if indices.shape[0] > 0 else NULL
    cdef floating* tab = &table[0, 0]
    cdef double total_loss = 0.0, total_w = 0.0, bad = 0.0, n_done = 0.0, w0_avg = 0.0
    cdef double a0, b0

    for t_id in range(nt):
        thr[t_id, T_W0] = w0_state[0]
        thr[t_id, T_A] = w0_state[1]
        thr[t_id, T_B] = w0_state[2]
    if n == 0:
        return 0.0, 0.0, 0

    with nogil, parallel(num_threads=nt):
        for p in prange(n, schedule='static'):
            t = &thr[threadid(), 0]
            s = &scratch[threadid(), 0]
            sf = &fscratch[threadid(), 0]
            # Prefetch pipeline for a random row order: offsets of the row
            # PF_IDX ahead, then its index array, then parameter records.
            if p + PF_IDX < n:
                r = order[p + PF_IDX]
                cfm_prefetch_r(&indptr[r])
            if p + PF_ROWS + 1 < n:
                r = order[p + PF_ROWS + 1]
                cfm_prefetch_r(ind + indptr[r])
                cfm_prefetch_r(X + indptr[r])
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
                sw = sample_weight[i] if has_sw else 1.0
                yi = y[i]
                t[T_LOSS] += sw * loss_value(pred, yi, loss)
                t[T_WSUM] += sw
                t[T_COUNT] += 1.0
                g = sw * loss_grad(pred, yi, loss)
                if fit_intercept:
                    update_bias(t, g, optimizer, learning_rate, l2_w0, ftrl_beta)
                update_features(X, ind, start, end, tab, stride, k, scale, s, sf, g,
                                optimizer, learning_rate, l2_w, l2_v, l1, ftrl_beta)

    # Merge per-thread bias states in a fixed order: count-weighted mean of
    # w0, summed increments of the accumulators.  Exact with one thread.
    for t_id in range(nt):
        total_loss += thr[t_id, T_LOSS]
        total_w += thr[t_id, T_WSUM]
        bad += thr[t_id, T_BAD]
        n_done += thr[t_id, T_COUNT]
    if nt == 1:
        w0_state[0] = thr[0, T_W0]
        w0_state[1] = thr[0, T_A]
        w0_state[2] = thr[0, T_B]
    elif n_done > 0:
        for t_id in range(nt):
            w0_avg += thr[t_id, T_COUNT] * thr[t_id, T_W0]
        a0 = w0_state[1]
        b0 = w0_state[2]
        for t_id in range(nt):
            w0_state[1] += thr[t_id, T_A] - a0
            w0_state[2] += thr[t_id, T_B] - b0
        if optimizer == OPT_FTRL and fit_intercept:
            w0_state[0] = -w0_state[1] / ((ftrl_beta + sqrt(w0_state[2])) / learning_rate + l2_w0)
        else:
            w0_state[0] = w0_avg / n_done
    return total_loss, total_w, int(bad)
