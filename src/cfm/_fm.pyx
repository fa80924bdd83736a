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
* Threads: cfm's worker pool (src/cfm/cfm_workers.h, cfm._pool), not OpenMP
  regions: rows are cut into chunks of about CHUNK_NNZ_* non-zeros that any
  thread claims, the calling thread works from the start and never waits for
  a helper to arrive, and idle helpers sleep -- so on a busy machine a
  descheduled helper costs nothing, and an input of one chunk runs on the
  calling thread alone.  Per-thread scratch is indexed by the pool's slot.
* Scoring: each row is computed independently in the same order, so results
  do not depend on ``n_threads``.
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

from libc.math cimport sqrt, sqrtf, isfinite, fabs, log, cos, sin, exp
from libc.stdint cimport int32_t, int64_t, uint64_t

from cfm._common cimport (
    floating, data_t, index_t, cfm_prefetch_r, cfm_prefetch_w,
    OPT_SGD, OPT_ADAGRAD, OPT_FTRL,
    row_scale, prefetch_span, update_bias, ftrl_weight, fsqrt,
    THR_STRIDE, T_W0, T_A, T_B, T_LOSS, T_WSUM, T_COUNT, T_BAD, MAX_FACTORS,
    init_thread_states, merge_thread_states, linear_step, sample_grad, chunk_rows,
    SM_THR_BASE, softmax_merge, softmax_sample, softmax_init_states, softmax_thread_stride,
)
from cfm._pool cimport parallel_for, team
from cfm._random cimport splitmix64, rand_uniform, bm_radius, bm_angle

# Rows ahead whose parameter records are prefetched (training and scoring),
# and rows ahead whose index arrays are prefetched (training: random order).
cdef enum:
    PF_ROWS = 2
    PF_IDX = 6
    # non-zeros per chunk of rows handed to a thread (scoring: ~50-100 us
    # of work; training, about three times the work per non-zero: ~0.5 ms)
    CHUNK_NNZ_PREDICT = 8192
    CHUNK_NNZ_TRAIN = 16384
    CHUNK_INIT = 4096    # features per chunk of fm_init_factors


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


cdef struct Predict:
    const void* X
    const void* ind
    const int64_t* indptr
    const void* tab
    double* out
    double* scratch
    Py_ssize_t n_rows, stride, kpad, n_lines
    double w0
    int k, types
    bint normalize


cdef inline void predict_rows(Predict* c, const floating* tab, const data_t* X,
                              const index_t* ind, int64_t lo, int64_t hi,
                              int slot) noexcept nogil:
    cdef Py_ssize_t i, r, start, end
    cdef double scale
    cdef double* s = c.scratch + slot * c.kpad
    cdef const int64_t* indptr = c.indptr
    # the rows this chunk starts with were not prefetched by the previous
    # chunk's pipeline (another thread may have run it)
    for i in range(lo, min(lo + PF_ROWS, hi)):
        prefetch_records(ind, indptr[i], indptr[i + 1], tab, c.stride, c.n_lines)
    for i in range(lo, hi):
        r = i + PF_ROWS
        if r < c.n_rows:
            prefetch_records(ind, indptr[r], indptr[r + 1], tab, c.stride, c.n_lines)
        start = indptr[i]
        end = indptr[i + 1]
        scale = row_scale(X, start, end, c.normalize)
        c.out[i] = c.w0 + row_score(X, ind, start, end, tab, c.stride, c.k, scale, s)


cdef void predict_task(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    # one branch per (table, values, indices) dtype: the row loop is compiled
    # for each, as the fused def entry point is
    cdef Predict* c = <Predict*>p
    if c.types == 0:
        predict_rows(c, <const float*>c.tab, <const float*>c.X, <const int32_t*>c.ind, lo, hi, slot)
    elif c.types == 1:
        predict_rows(c, <const double*>c.tab, <const float*>c.X, <const int32_t*>c.ind, lo, hi, slot)
    elif c.types == 2:
        predict_rows(c, <const float*>c.tab, <const double*>c.X, <const int32_t*>c.ind, lo, hi, slot)
    elif c.types == 3:
        predict_rows(c, <const double*>c.tab, <const double*>c.X, <const int32_t*>c.ind, lo, hi, slot)
    elif c.types == 4:
        predict_rows(c, <const float*>c.tab, <const float*>c.X, <const int64_t*>c.ind, lo, hi, slot)
    elif c.types == 5:
        predict_rows(c, <const double*>c.tab, <const float*>c.X, <const int64_t*>c.ind, lo, hi, slot)
    elif c.types == 6:
        predict_rows(c, <const float*>c.tab, <const double*>c.X, <const int64_t*>c.ind, lo, hi, slot)
    else:
        predict_rows(c, <const double*>c.tab, <const double*>c.X, <const int64_t*>c.ind, lo, hi, slot)


def fm_predict(const data_t[::1] data,        # IN  CSR values
               const index_t[::1] indices,    # IN  CSR column indices
               const int64_t[::1] indptr,     # IN  CSR row offsets (n_rows + 1)
               const floating[:, ::1] table,  # IN  parameter table (n_features, stride)
               double w0,                     # IN  bias
               int n_factors,                 # IN  k (columns 1..k of the table)
               bint normalize,                # IN  instance-wise L2 normalisation
               double[::1] out,               # OUT scores (n_rows,)
               int n_threads):
    """Raw FM scores of the rows of a CSR matrix, rows in parallel."""
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef int k = n_factors
    cdef int nt = team(n_threads)
    cdef Predict c
    if n_rows <= 0:
        return
    c.kpad = (k // 8 + 2) * 8
    cdef double[:, ::1] scratch = np.zeros((nt, c.kpad))
    c.X = &data[0] if data.shape[0] > 0 else NULL
    c.ind = &indices[0] if indices.shape[0] > 0 else NULL
    c.indptr = &indptr[0]
    c.tab = &table[0, 0]
    c.out = &out[0]
    c.scratch = &scratch[0, 0]
    c.n_rows = n_rows
    c.stride = table.shape[1]
    c.n_lines = (((1 + k) * sizeof(floating)) + 63) // 64
    c.w0 = w0
    c.k = k
    c.normalize = normalize
    c.types = (sizeof(floating) == 8) + 2 * (sizeof(data_t) == 8) + 4 * (sizeof(index_t) == 8)
    with nogil:
        parallel_for(predict_task, &c, n_rows,
                     chunk_rows(&indptr[0], n_rows, CHUNK_NNZ_PREDICT), nt)


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


cdef struct Train:
    const void* X
    const void* ind
    const int64_t* indptr
    void* tab
    const double* y
    const double* sw      # NULL: all weights 1
    const int64_t* order
    double* thr           # (nt, THR_STRIDE) per-thread bias states and sums
    double* scratch       # (nt, kpad)
    Py_ssize_t n, stride, kpad, n_lines
    int k, loss, optimizer, types
    bint fit_intercept, normalize
    double lr, l2_w0, l2_w, l2_v, l1, ftrl_beta


cdef inline void train_rows(Train* c, floating* tab, const data_t* X, const index_t* ind,
                            int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef Py_ssize_t p, i, r, start, end
    cdef Py_ssize_t n = c.n, stride = c.stride
    cdef const int64_t* order = c.order
    cdef const int64_t* indptr = c.indptr
    cdef double scale, pred, g
    cdef double* t = c.thr + slot * THR_STRIDE
    cdef double* s = c.scratch + slot * c.kpad
    for p in range(lo, min(lo + PF_ROWS, hi)):  # see predict_rows
        r = order[p]
        prefetch_records(ind, indptr[r], indptr[r + 1], tab, stride, c.n_lines)
    for p in range(lo, hi):
        # Prefetch pipeline for a random row order: offsets of the row
        # PF_IDX ahead, then its index array, then parameter records.
        if p + PF_IDX < n:
            r = order[p + PF_IDX]
            cfm_prefetch_r(&indptr[r])
        if p + PF_ROWS + 1 < n:
            r = order[p + PF_ROWS + 1]
            prefetch_span(ind + indptr[r], (indptr[r + 1] - indptr[r]) * sizeof(index_t))
            prefetch_span(X + indptr[r], (indptr[r + 1] - indptr[r]) * sizeof(data_t))
            cfm_prefetch_r(&c.y[r])
        if p + PF_ROWS < n:
            r = order[p + PF_ROWS]
            prefetch_records(ind, indptr[r], indptr[r + 1], tab, stride, c.n_lines)
        i = order[p]
        start = indptr[i]
        end = indptr[i + 1]
        scale = row_scale(X, start, end, c.normalize)
        pred = t[T_W0] + row_score(X, ind, start, end, tab, stride, c.k, scale, s)
        if not isfinite(pred):
            t[T_BAD] += 1.0
        else:
            g = sample_grad(t, pred, c.y[i], c.sw[i] if c.sw != NULL else 1.0, c.loss)
            if c.fit_intercept:
                update_bias(t, g, c.optimizer, c.lr, c.l2_w0, c.ftrl_beta)
            update_features(X, ind, start, end, tab, stride, c.k, scale, s, g,
                            c.optimizer, c.lr, c.l2_w, c.l2_v, c.l1, c.ftrl_beta)


cdef void train_task(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef Train* c = <Train*>p
    if c.types == 0:
        train_rows(c, <float*>c.tab, <const float*>c.X, <const int32_t*>c.ind, lo, hi, slot)
    elif c.types == 1:
        train_rows(c, <double*>c.tab, <const float*>c.X, <const int32_t*>c.ind, lo, hi, slot)
    elif c.types == 2:
        train_rows(c, <float*>c.tab, <const double*>c.X, <const int32_t*>c.ind, lo, hi, slot)
    elif c.types == 3:
        train_rows(c, <double*>c.tab, <const double*>c.X, <const int32_t*>c.ind, lo, hi, slot)
    elif c.types == 4:
        train_rows(c, <float*>c.tab, <const float*>c.X, <const int64_t*>c.ind, lo, hi, slot)
    elif c.types == 5:
        train_rows(c, <double*>c.tab, <const float*>c.X, <const int64_t*>c.ind, lo, hi, slot)
    elif c.types == 6:
        train_rows(c, <float*>c.tab, <const double*>c.X, <const int64_t*>c.ind, lo, hi, slot)
    else:
        train_rows(c, <double*>c.tab, <const double*>c.X, <const int64_t*>c.ind, lo, hi, slot)


def fm_train_epoch(const data_t[::1] data,         # IN  CSR values
                   const index_t[::1] indices,     # IN  CSR column indices
                   const int64_t[::1] indptr,      # IN  CSR row offsets
                   const double[::1] y,            # IN  targets (logistic: -1/+1)
                   const double[::1] sample_weight,  # IN  per-row weights, or empty
                   const int64_t[::1] order,       # IN  rows to visit, in this order
                   floating[:, ::1] table,         # IN/OUT parameter table
                   double[::1] w0_state,           # IN/OUT [w0, a, b] bias and its state
                   *, int n_factors, int loss, int optimizer,
                   bint fit_intercept, bint normalize,
                   double learning_rate, double l2_w0, double l2_w, double l2_v,
                   double l1, double ftrl_beta, int n_threads):
    """One pass of per-sample updates over ``order``; Hogwild across threads.

    Returns (sum of weighted losses before each update, sum of weights,
    number of rows whose prediction was not finite).
    """
    cdef Py_ssize_t n = order.shape[0]
    cdef int k = n_factors
    cdef int nt = team(n_threads)
    cdef Train c
    c.kpad = (k // 8 + 2) * 8
    cdef double[:, ::1] scratch = np.zeros((nt, c.kpad))
    cdef double[:, ::1] thr = np.zeros((nt, THR_STRIDE))
    cdef double total_loss = 0.0, total_w = 0.0
    cdef int n_bad
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1

    init_thread_states(&thr[0, 0], nt, &w0_state[0])
    if n == 0:
        return 0.0, 0.0, 0
    c.X = &data[0] if data.shape[0] > 0 else NULL
    c.ind = &indices[0] if indices.shape[0] > 0 else NULL
    c.indptr = &indptr[0]
    c.tab = &table[0, 0]
    c.y = &y[0]
    c.sw = &sample_weight[0] if sample_weight.shape[0] > 0 else NULL
    c.order = &order[0]
    c.thr = &thr[0, 0]
    c.scratch = &scratch[0, 0]
    c.n = n
    c.stride = table.shape[1]
    c.n_lines = (c.stride * sizeof(floating) + 63) // 64
    c.k = k
    c.loss = loss
    c.optimizer = optimizer
    c.fit_intercept = fit_intercept
    c.normalize = normalize
    c.lr = learning_rate
    c.l2_w0 = l2_w0
    c.l2_w = l2_w
    c.l2_v = l2_v
    c.l1 = l1
    c.ftrl_beta = ftrl_beta
    c.types = (sizeof(floating) == 8) + 2 * (sizeof(data_t) == 8) + 4 * (sizeof(index_t) == 8)
    with nogil:
        # chunk from the average row (``order`` may visit a subset of rows)
        parallel_for(train_task, &c, n,
                     chunk_rows(&indptr[0], n_rows, CHUNK_NNZ_TRAIN), nt)

    # Merge per-thread bias states in a fixed order: count-weighted mean of
    # w0, summed increments of the accumulators.  Exact with one thread.
    n_bad = merge_thread_states(&thr[0, 0], nt, &w0_state[0], optimizer, fit_intercept,
                                learning_rate, l2_w0, ftrl_beta, &total_loss, &total_w)
    return total_loss, total_w, n_bad


cdef struct Init:
    void* tab
    Py_ssize_t stride
    int k
    bint f64
    double std
    uint64_t seed


cdef inline void init_rows(Init* c, floating* tab, int64_t lo, int64_t hi) noexcept nogil:
    cdef Py_ssize_t j, f
    cdef uint64_t state
    cdef double u1, u2, r
    cdef floating* row
    for j in range(lo, hi):
        row = tab + j * c.stride
        state = c.seed ^ (<uint64_t>j * <uint64_t>0xD1B54A32D192ED03ULL)
        splitmix64(&state)
        f = 0
        while f < c.k:
            u1 = 1.0 - rand_uniform(&state)      # (0, 1]
            u2 = rand_uniform(&state)
            r = c.std * bm_radius(u1)            # Box-Muller (src/cfm/_random.pxd)
            row[1 + f] = <floating>(r * cos(bm_angle(u2)))
            if f + 1 < c.k:
                row[2 + f] = <floating>(r * sin(bm_angle(u2)))
            f = f + 2


cdef void init_task(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef Init* c = <Init*>p
    if c.f64:
        init_rows(c, <double*>c.tab, lo, hi)
    else:
        init_rows(c, <float*>c.tab, lo, hi)


def fm_init_factors(floating[:, ::1] table,   # IN/OUT parameter table
                    int n_factors, double std,
                    uint64_t seed, int n_threads):
    """Fill columns 1..k of the table with N(0, std^2) draws.

    Each feature's draws come from its own stream (splitmix64 seeded with
    seed and the feature index, Box-Muller), so the result is identical for
    any number of threads, and the work runs in parallel.
    """
    cdef Py_ssize_t n = table.shape[0]
    cdef Init c
    if n_factors <= 0 or n <= 0:
        return
    c.tab = &table[0, 0]
    c.stride = table.shape[1]
    c.k = n_factors
    c.f64 = floating is double
    c.std = std
    c.seed = seed
    with nogil:
        parallel_for(init_task, &c, n, CHUNK_INIT, team(n_threads))


# ==========================================================================
# Multiclass (softmax) FM: C independent FMs coupled by the softmax loss
# ==========================================================================
#
#   score_c(x) = w0_c + sum_i w_ic x_i + 1/2 sum_f [(sum_i v_icf x_i)^2 - sum_i v_icf^2 x_i^2]
#   p_c(x)     = exp(score_c) / sum_d exp(score_d)
#   loss       = -log p_y = logsumexp(score) - score_y
#   d loss / d score_c = p_c - [c == y]
#
# Layout: a feature's record holds one block per class, each laid out as the
# binary FM's record ``[w, v_0 .. v_{k-1}, <optimizer state>]`` (``block`` =
# 1 + k + state width values), the C blocks back to back, the record padded
# to 64 bytes.  A block offset by c * block is exactly a binary FM table, so
# the binary kernels' row_score / update_features serve every class, and a
# feature's C blocks are read in one pass over consecutive cache lines.
# The per-class biases [w0, a, b] are kept per thread during an epoch (as the
# binary kernel's bias) and merged afterwards in a fixed order.
#
# Per-thread slots: SM_* and softmax_merge (src/cfm/_common.pxd, shared with
# the FFM softmax kernels).


cdef struct SoftPredict:
    const void* X
    const void* ind
    const int64_t* indptr
    const void* tab
    const double* w0      # (C,)
    double* out           # (n_rows, C)
    double* scratch       # (nt, kpad)
    Py_ssize_t n_rows, stride, kpad, n_lines, block
    int k, n_classes, types
    bint normalize


cdef inline void softmax_predict_rows(SoftPredict* c, const floating* tab, const data_t* X,
                                      const index_t* ind, int64_t lo, int64_t hi,
                                      int slot) noexcept nogil:
    cdef Py_ssize_t i, r, start, end, cl
    cdef double scale
    cdef double* s = c.scratch + slot * c.kpad
    cdef const int64_t* indptr = c.indptr
    for i in range(lo, min(lo + PF_ROWS, hi)):
        prefetch_records(ind, indptr[i], indptr[i + 1], tab, c.stride, c.n_lines)
    for i in range(lo, hi):
        r = i + PF_ROWS
        if r < c.n_rows:
            prefetch_records(ind, indptr[r], indptr[r + 1], tab, c.stride, c.n_lines)
        start = indptr[i]
        end = indptr[i + 1]
        scale = row_scale(X, start, end, c.normalize)
        for cl in range(c.n_classes):
            c.out[i * c.n_classes + cl] = c.w0[cl] + row_score(
                X, ind, start, end, tab + cl * c.block, c.stride, c.k, scale, s)


cdef void softmax_predict_task(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef SoftPredict* c = <SoftPredict*>p
    if c.types == 0:
        softmax_predict_rows(c, <const float*>c.tab, <const float*>c.X, <const int32_t*>c.ind, lo, hi, slot)
    elif c.types == 1:
        softmax_predict_rows(c, <const double*>c.tab, <const float*>c.X, <const int32_t*>c.ind, lo, hi, slot)
    elif c.types == 2:
        softmax_predict_rows(c, <const float*>c.tab, <const double*>c.X, <const int32_t*>c.ind, lo, hi, slot)
    elif c.types == 3:
        softmax_predict_rows(c, <const double*>c.tab, <const double*>c.X, <const int32_t*>c.ind, lo, hi, slot)
    elif c.types == 4:
        softmax_predict_rows(c, <const float*>c.tab, <const float*>c.X, <const int64_t*>c.ind, lo, hi, slot)
    elif c.types == 5:
        softmax_predict_rows(c, <const double*>c.tab, <const float*>c.X, <const int64_t*>c.ind, lo, hi, slot)
    elif c.types == 6:
        softmax_predict_rows(c, <const float*>c.tab, <const double*>c.X, <const int64_t*>c.ind, lo, hi, slot)
    else:
        softmax_predict_rows(c, <const double*>c.tab, <const double*>c.X, <const int64_t*>c.ind, lo, hi, slot)


def fm_softmax_predict(const data_t[::1] data,        # IN  CSR values
                       const index_t[::1] indices,    # IN  CSR column indices
                       const int64_t[::1] indptr,     # IN  CSR row offsets (n_rows + 1)
                       const floating[:, ::1] table,  # IN  parameter table (n_features, stride)
                       const double[::1] w0,          # IN  per-class biases (C,)
                       double[:, ::1] out,            # OUT scores (n_rows, C)
                       *, int n_factors, Py_ssize_t block, bint normalize, int n_threads):
    """Raw per-class scores of the rows of a CSR matrix, rows in parallel
    (identical for any ``n_threads``)."""
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef int k = n_factors
    cdef int nt = team(n_threads)
    cdef SoftPredict c
    if n_rows <= 0:
        return
    c.kpad = (k // 8 + 2) * 8
    cdef double[:, ::1] scratch = np.zeros((nt, c.kpad))
    c.X = &data[0] if data.shape[0] > 0 else NULL
    c.ind = &indices[0] if indices.shape[0] > 0 else NULL
    c.indptr = &indptr[0]
    c.tab = &table[0, 0]
    c.w0 = &w0[0]
    c.out = &out[0, 0]
    c.scratch = &scratch[0, 0]
    c.n_rows = n_rows
    c.stride = table.shape[1]
    c.block = block
    c.n_classes = <int>w0.shape[0]
    c.n_lines = (c.n_classes * block * sizeof(floating) + 63) // 64
    c.k = k
    c.normalize = normalize
    c.types = (sizeof(floating) == 8) + 2 * (sizeof(data_t) == 8) + 4 * (sizeof(index_t) == 8)
    with nogil:
        parallel_for(softmax_predict_task, &c, n_rows,
                     chunk_rows(&indptr[0], n_rows, CHUNK_NNZ_PREDICT), nt)


cdef struct SoftTrain:
    const void* X
    const void* ind
    const int64_t* indptr
    void* tab
    const double* y       # class index 0 .. C-1 (as double)
    const double* sw      # NULL: all weights 1
    const int64_t* order
    double* thr           # (nt, tstride) per-thread sums and class biases
    double* scratch       # (nt, C * kpad + C)
    Py_ssize_t n, stride, kpad, n_lines, block, tstride, sstride
    int k, n_classes, optimizer, types
    bint fit_intercept, normalize
    double lr, l2_w0, l2_w, l2_v, l1, ftrl_beta


cdef inline void softmax_train_rows(SoftTrain* c, floating* tab, const data_t* X,
                                    const index_t* ind, int64_t lo, int64_t hi,
                                    int slot) noexcept nogil:
    cdef Py_ssize_t p, i, r, start, end, cl
    cdef Py_ssize_t n = c.n, stride = c.stride, C = c.n_classes
    cdef const int64_t* order = c.order
    cdef const int64_t* indptr = c.indptr
    cdef double scale, g
    cdef double* t = c.thr + slot * c.tstride
    cdef double* s = c.scratch + slot * c.sstride
    cdef double* sc = s + C * c.kpad          # the C scores of the row
    for p in range(lo, min(lo + PF_ROWS, hi)):  # see predict_rows
        r = order[p]
        prefetch_records(ind, indptr[r], indptr[r + 1], tab, stride, c.n_lines)
    for p in range(lo, hi):
        if p + PF_IDX < n:
            r = order[p + PF_IDX]
            cfm_prefetch_r(&indptr[r])
        if p + PF_ROWS + 1 < n:
            r = order[p + PF_ROWS + 1]
            prefetch_span(ind + indptr[r], (indptr[r + 1] - indptr[r]) * sizeof(index_t))
            prefetch_span(X + indptr[r], (indptr[r + 1] - indptr[r]) * sizeof(data_t))
            cfm_prefetch_r(&c.y[r])
        if p + PF_ROWS < n:
            r = order[p + PF_ROWS]
            prefetch_records(ind, indptr[r], indptr[r + 1], tab, stride, c.n_lines)
        i = order[p]
        start = indptr[i]
        end = indptr[i + 1]
        scale = row_scale(X, start, end, c.normalize)
        for cl in range(C):
            sc[cl] = t[SM_THR_BASE + 3 * cl] + row_score(
                X, ind, start, end, tab + cl * c.block, stride, c.k, scale, s + cl * c.kpad)
        # every class's scores were computed before any update: the gradient
        # of the loss at this sample's parameters, as the binary kernel
        if not softmax_sample(t, sc, C, <int>c.y[i], c.sw[i] if c.sw != NULL else 1.0):
            continue
        for cl in range(C):
            g = sc[cl]
            if c.fit_intercept:
                update_bias(t + SM_THR_BASE + 3 * cl, g, c.optimizer, c.lr, c.l2_w0,
                            c.ftrl_beta)
            update_features(X, ind, start, end, tab + cl * c.block, stride, c.k, scale,
                            s + cl * c.kpad, g, c.optimizer, c.lr, c.l2_w, c.l2_v, c.l1,
                            c.ftrl_beta)


cdef void softmax_train_task(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef SoftTrain* c = <SoftTrain*>p
    if c.types == 0:
        softmax_train_rows(c, <float*>c.tab, <const float*>c.X, <const int32_t*>c.ind, lo, hi, slot)
    elif c.types == 1:
        softmax_train_rows(c, <double*>c.tab, <const float*>c.X, <const int32_t*>c.ind, lo, hi, slot)
    elif c.types == 2:
        softmax_train_rows(c, <float*>c.tab, <const double*>c.X, <const int32_t*>c.ind, lo, hi, slot)
    elif c.types == 3:
        softmax_train_rows(c, <double*>c.tab, <const double*>c.X, <const int32_t*>c.ind, lo, hi, slot)
    elif c.types == 4:
        softmax_train_rows(c, <float*>c.tab, <const float*>c.X, <const int64_t*>c.ind, lo, hi, slot)
    elif c.types == 5:
        softmax_train_rows(c, <double*>c.tab, <const float*>c.X, <const int64_t*>c.ind, lo, hi, slot)
    elif c.types == 6:
        softmax_train_rows(c, <float*>c.tab, <const double*>c.X, <const int64_t*>c.ind, lo, hi, slot)
    else:
        softmax_train_rows(c, <double*>c.tab, <const double*>c.X, <const int64_t*>c.ind, lo, hi, slot)


def fm_softmax_train_epoch(const data_t[::1] data,         # IN  CSR values
                           const index_t[::1] indices,     # IN  CSR column indices
                           const int64_t[::1] indptr,      # IN  CSR row offsets
                           const double[::1] y,            # IN  class index 0 .. C-1
                           const double[::1] sample_weight,  # IN  per-row weights, or empty
                           const int64_t[::1] order,       # IN  rows to visit, in this order
                           floating[:, ::1] table,         # IN/OUT parameter table
                           double[:, ::1] w0_state,        # IN/OUT (C, 3) [w0, a, b] per class
                           *, int n_factors, Py_ssize_t block, int optimizer,
                           bint fit_intercept, bint normalize,
                           double learning_rate, double l2_w0, double l2_w, double l2_v,
                           double l1, double ftrl_beta, int n_threads):
    """One pass of per-sample softmax updates over ``order``; Hogwild across
    threads.  ``y`` must hold integers in [0, C) with C = w0_state.shape[0]
    (validated by the caller).

    Returns (sum of weighted losses before each update, sum of weights,
    number of rows whose scores were not finite).
    """
    cdef Py_ssize_t n = order.shape[0]
    cdef int k = n_factors
    cdef int C = <int>w0_state.shape[0]
    cdef int nt = team(n_threads)
    cdef SoftTrain c
    c.kpad = (k // 8 + 2) * 8
    c.sstride = ((C * c.kpad + C) // 8 + 1) * 8
    c.tstride = softmax_thread_stride(C)
    cdef double[:, ::1] scratch = np.zeros((nt, c.sstride))
    cdef double[:, ::1] thr = np.zeros((nt, c.tstride))
    cdef double total_loss = 0.0, total_w = 0.0
    cdef int n_bad
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1

    softmax_init_states(&thr[0, 0], nt, c.tstride, &w0_state[0, 0], C)
    if n == 0:
        return 0.0, 0.0, 0
    c.X = &data[0] if data.shape[0] > 0 else NULL
    c.ind = &indices[0] if indices.shape[0] > 0 else NULL
    c.indptr = &indptr[0]
    c.tab = &table[0, 0]
    c.y = &y[0]
    c.sw = &sample_weight[0] if sample_weight.shape[0] > 0 else NULL
    c.order = &order[0]
    c.thr = &thr[0, 0]
    c.scratch = &scratch[0, 0]
    c.n = n
    c.stride = table.shape[1]
    c.block = block
    c.n_lines = (C * block * sizeof(floating) + 63) // 64
    c.k = k
    c.n_classes = C
    c.optimizer = optimizer
    c.fit_intercept = fit_intercept
    c.normalize = normalize
    c.lr = learning_rate
    c.l2_w0 = l2_w0
    c.l2_w = l2_w
    c.l2_v = l2_v
    c.l1 = l1
    c.ftrl_beta = ftrl_beta
    c.types = (sizeof(floating) == 8) + 2 * (sizeof(data_t) == 8) + 4 * (sizeof(index_t) == 8)
    with nogil:
        parallel_for(softmax_train_task, &c, n,
                     chunk_rows(&indptr[0], n_rows, CHUNK_NNZ_TRAIN // C + 1), nt)
        n_bad = softmax_merge(&thr[0, 0], nt, c.tstride, &w0_state[0, 0], C, optimizer,
                              fit_intercept, learning_rate, l2_w0, ftrl_beta,
                              &total_loss, &total_w)
    return total_loss, total_w, n_bad


cdef struct SoftInit:
    void* tab
    Py_ssize_t stride, block
    int k, n_classes
    bint f64
    double std
    uint64_t seed


cdef inline void softmax_init_rows(SoftInit* c, floating* tab, int64_t lo,
                                   int64_t hi) noexcept nogil:
    cdef Py_ssize_t j, f, cl
    cdef uint64_t state
    cdef double u1, u2, r
    cdef floating* row
    for j in range(lo, hi):
        for cl in range(c.n_classes):
            row = tab + j * c.stride + cl * c.block
            state = c.seed ^ (<uint64_t>j * <uint64_t>0xD1B54A32D192ED03ULL) \
                ^ (<uint64_t>(cl + 1) * <uint64_t>0x9E3779B97F4A7C15ULL)
            splitmix64(&state)
            f = 0
            while f < c.k:
                u1 = 1.0 - rand_uniform(&state)
                u2 = rand_uniform(&state)
                r = c.std * bm_radius(u1)
                row[1 + f] = <floating>(r * cos(bm_angle(u2)))
                if f + 1 < c.k:
                    row[2 + f] = <floating>(r * sin(bm_angle(u2)))
                f = f + 2


cdef void softmax_init_task(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef SoftInit* c = <SoftInit*>p
    if c.f64:
        softmax_init_rows(c, <double*>c.tab, lo, hi)
    else:
        softmax_init_rows(c, <float*>c.tab, lo, hi)


def fm_softmax_init_factors(floating[:, ::1] table,   # IN/OUT parameter table
                            int n_factors, Py_ssize_t block, int n_classes, double std,
                            uint64_t seed, int n_threads):
    """Fill the factors of every class block with N(0, std^2) draws, one
    stream per (feature, class): identical for any number of threads."""
    cdef Py_ssize_t n = table.shape[0]
    cdef SoftInit c
    if n_factors <= 0 or n <= 0:
        return
    c.tab = &table[0, 0]
    c.stride = table.shape[1]
    c.block = block
    c.k = n_factors
    c.n_classes = n_classes
    c.f64 = floating is double
    c.std = std
    c.seed = seed
    with nogil:
        parallel_for(softmax_init_task, &c, n, max(1, CHUNK_INIT // max(n_classes, 1)),
                     team(n_threads))
