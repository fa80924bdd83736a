"""Field-weighted factorization machine kernels (FwFM, Pan et al., WWW 2018).

Model: every column j belongs to one field F(j); every feature has one factor
vector v_j (an FM's memory) and every pair of fields (f, g) one weight r_fg
(symmetric, the diagonal weighting pairs inside a field):

    y(x) = w0 + sum_i w_i x_i + sum_{i<j} r_{F(i)F(j)} <v_i, v_j> x_i x_j

Evaluated per row in O(nnz * k + P^2 * k), P the number of fields present in
the row, from the per-field sums s_f = sum_{i in f} x_i v_i:

    pair = sum_{f<g} r_fg <s_f, s_g> + 1/2 sum_f r_ff (|s_f|^2 - q_f),
    q_f  = sum_{i in f} x_i^2 |v_i|^2          (the i = j terms)

Gradients (t_f = sum_g r_fg s_g over the fields g of the row, f included):

    d pair / d v_i  = x_i (t_F(i) - r_F(i)F(i) x_i v_i)
    d pair / d r_fg = <s_f, s_g> (f < g),   1/2 (|s_f|^2 - q_f) (f = g)

Design
------
* The factor table has the FM layout (src/cfm/_fm.pyx): one record per feature
  [w, v_0..v_{k-1}, optimizer state], rows padded to 64 bytes; the same
  row-wise AdaGrad on the factors, the same linear steps (_common.pxd).
  Optimizers: sgd; adagrad (per-entry AdaGrad on R); ftrl (FTRL-proximal on
  the linear weights, AdaGrad on V and R).  L2 on R is l2_v (R weights the
  same interactions V does; without it V's shrinkage could move into R).
* R (F x F, float64, kept symmetric) and its AdaGrad accumulators are small
  and touched by every row: shared Hogwild updates would bounce their cache
  lines between the cores on every sample.  Each thread trains its own copy
  during an epoch and the copies are merged afterwards in a fixed order
  (count-weighted mean of R, summed accumulator increments) -- what the FM
  kernels do for the bias w0.  Exact with one thread.  V and w: Hogwild.
* Per thread: slot_of[F] (field -> position among the row's fields, -1 when
  absent, reset after each row), the row's field list and per-field sums
  S, T (P_max x kpad doubles, P_max = min(F, longest row)).
* Scoring computes each row independently in a fixed order: results do not
  depend on the number of threads.
* Inputs are validated in Python (cfm/_state/fwfm.py, cfm/_validation.py):
  column ids < n_features, fields[j] in [0, F); kernels trust them.
"""
import numpy as np

from libc.stdint cimport int32_t, int64_t

from cfm._common cimport (
    floating, data_t, index_t, cfm_prefetch_r,
    OPT_SGD, OPT_ADAGRAD, OPT_FTRL,
    row_scale, fsqrt, THR_STRIDE, T_W0, T_COUNT, T_BAD, MAX_FACTORS,
    init_thread_states, merge_thread_states, linear_step, sample_grad, update_bias,
    chunk_rows,
)
from cfm._pool cimport parallel_for, team
from libc.math cimport sqrt, isfinite

cdef extern from "cfm_fwfm.h" nogil:
    double cfm_fw_dot(const double* a, const double* b, Py_ssize_t k4)
    void cfm_fw_axpy(double* y, double r, const double* x, Py_ssize_t k4)
    void cfm_fw_axpy2(double* ta, double* tb, double r, const double* sa, const double* sb,
                      Py_ssize_t k4)
    double cfm_fw_upper(const double* S, Py_ssize_t kpad, const double* rrow,
                        const int32_t* plist, int a, int P, Py_ssize_t k8)
    void cfm_fw_step(double* r, double* acc, const double* d, Py_ssize_t n, double g,
                     double lr, double l2)
    void cfm_fw_tsum(const double* S, Py_ssize_t kpad, const double* rrow,
                     const int32_t* plist, int P, Py_ssize_t k8, double* t)

cdef enum:
    CHUNK_NNZ_PREDICT = 8192
    CHUNK_NNZ_TRAIN = 16384
    PF_ROWS = 2     # rows ahead whose parameter records are prefetched (as _fm.pyx)


cdef inline void prefetch_records(const index_t* ind, Py_ssize_t start, Py_ssize_t end,
                                  const floating* tab, Py_ssize_t stride,
                                  Py_ssize_t n_lines, const int32_t* fields) noexcept nogil:
    """Prefetch the table records of a row's features (as src/cfm/_fm.pyx)
    and their field ids (a miss per non-zero too when there are many columns)."""
    cdef Py_ssize_t jj, l
    cdef const char* p
    for jj in range(start, end):
        p = <const char*>(tab + <Py_ssize_t>ind[jj] * stride)
        for l in range(n_lines):
            cfm_prefetch_r(p + 64 * l)
        cfm_prefetch_r(fields + ind[jj])


cdef struct Row:
    # per-thread scratch of one row
    int32_t* slot_of   # (F,) field -> slot, -1 when absent
    int32_t* plist     # (P_max,) field of each slot
    double* S          # (P_max, kpad) per-field sums
    double* T          # (P_max, kpad) sum_g r_fg s_g (training)
    double* q          # (P_max,) self terms
    double* rdiag      # (P_max,) r_ff used (training)
    int k4             # k rounded up to 4: the sums' padding is zero
    double* rt         # (P_max,) x 3: R, accumulators, derivatives of one field's pairs
    double* gt
    double* dt


cdef inline int gather(Row* w, const data_t* X, const index_t* ind, Py_ssize_t start,
                       Py_ssize_t end, const floating* tab, Py_ssize_t stride,
                       const int32_t* fields, int k, Py_ssize_t kpad, double scale,
                       double* lin) noexcept nogil:
    """Fill the per-field sums of one row; return the number of fields P."""
    cdef Py_ssize_t jj, c
    cdef int p, f, P = 0
    cdef const floating* rec
    cdef double x, d, sq, acc = 0.0
    cdef double* s
    for jj in range(start, end):
        rec = tab + <Py_ssize_t>ind[jj] * stride
        x = <double>X[jj] * scale
        acc += <double>rec[0] * x
        f = fields[ind[jj]]
        p = w.slot_of[f]
        if p < 0:
            p = P
            P += 1
            w.slot_of[f] = p
            w.plist[p] = f
            s = w.S + p * kpad
            for c in range(w.k4):
                s[c] = 0.0
            w.q[p] = 0.0
        s = w.S + p * kpad
        rec = rec + 1
        sq = 0.0
        for c in range(k):
            d = <double>rec[c] * x
            s[c] += d
            sq += d * d
        w.q[p] += sq
    lin[0] = acc
    return P


cdef inline void release(Row* w, int P) noexcept nogil:
    cdef int p
    for p in range(P):
        w.slot_of[w.plist[p]] = -1


cdef inline double dot(const double* a, const double* b, int k4) noexcept nogil:
    """<a, b> over k4 (a multiple of 4) entries, in 4 lanes (cfm_fwfm.h)."""
    return cfm_fw_dot(a, b, k4)


cdef inline double pair_score(Row* w, int P, const double* R, Py_ssize_t F, int k,
                              Py_ssize_t kpad) noexcept nogil:
    """sum_{a<b} r_ab <s_a, s_b> + 1/2 sum_a r_aa (|s_a|^2 - q_a), as
    sum_a <s_a, u_a> with u_a = sum_{b>a} r_ab s_b (cfm_fwfm.h)."""
    cdef int a, k4 = w.k4
    cdef Py_ssize_t fa, k8 = (k + 7) // 8 * 8
    cdef const double* sa
    cdef double pair = 0.0
    for a in range(P):
        fa = w.plist[a]
        sa = w.S + a * kpad
        pair += 0.5 * R[fa * F + fa] * (dot(sa, sa, k4) - w.q[a]) \
            + cfm_fw_upper(w.S, kpad, R + fa * F, w.plist, a, P, k8)
    return pair


cdef struct Predict:
    const void* X
    const void* ind
    const int64_t* indptr
    const void* tab
    const int32_t* fields
    const double* R
    double* out
    int32_t* slot_of   # (nt, F)
    int32_t* plist     # (nt, pmax)
    double* S          # (nt, pmax * kpad)
    double* q          # (nt, pmax)
    Py_ssize_t n_rows, stride, kpad, F, pmax   # pmax: scratch slots per thread
    double w0
    int k, types
    bint normalize


cdef inline void scratch_of(Row* w, int32_t* slot_of, int32_t* plist, double* S, double* T,
                            double* q, double* rdiag, Py_ssize_t F, Py_ssize_t pmax,
                            Py_ssize_t kpad, int k, int slot) noexcept nogil:
    w.slot_of = slot_of + slot * F
    w.plist = plist + slot * pmax
    w.S = S + slot * pmax * kpad
    w.T = T + slot * pmax * kpad if T != NULL else NULL
    w.q = q + slot * pmax
    w.rdiag = rdiag + slot * pmax if rdiag != NULL else NULL
    w.k4 = (k + 3) // 4 * 4


cdef inline void predict_rows(Predict* c, const floating* tab, const data_t* X,
                              const index_t* ind, int64_t lo, int64_t hi,
                              int slot) noexcept nogil:
    cdef Py_ssize_t i
    cdef int P
    cdef double scale, lin
    cdef Row w
    cdef Py_ssize_t n_lines = ((1 + c.k) * sizeof(floating) + 63) // 64
    scratch_of(&w, c.slot_of, c.plist, c.S, NULL, c.q, NULL, c.F, c.pmax, c.kpad, c.k, slot)
    for i in range(lo, min(lo + PF_ROWS, hi)):
        prefetch_records(ind, c.indptr[i], c.indptr[i + 1], tab, c.stride, n_lines, c.fields)
    for i in range(lo, hi):
        if i + PF_ROWS < c.n_rows:
            prefetch_records(ind, c.indptr[i + PF_ROWS], c.indptr[i + PF_ROWS + 1], tab,
                             c.stride, n_lines, c.fields)
        scale = row_scale(X, c.indptr[i], c.indptr[i + 1], c.normalize)
        P = gather(&w, X, ind, c.indptr[i], c.indptr[i + 1], tab, c.stride, c.fields, c.k,
                   c.kpad, scale, &lin)
        c.out[i] = c.w0 + lin + pair_score(&w, P, c.R, c.F, c.k, c.kpad)
        release(&w, P)


cdef void predict_task(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
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


def _pmax(Py_ssize_t F, Py_ssize_t max_nnz):
    return max(1, min(F, max_nnz))


def fwfm_predict(const data_t[::1] data,        # IN  CSR values
                 const index_t[::1] indices,    # IN  CSR column indices (< n_features)
                 const int64_t[::1] indptr,     # IN  CSR row offsets
                 const int32_t[::1] fields,     # IN  field of each column, in [0, F)
                 const floating[:, ::1] table,  # IN  [w, v(k), ...] per feature
                 const double[:, ::1] R,        # IN  field-pair weights (F, F), symmetric
                 *, double w0, int n_factors, bint normalize,
                 double[::1] out,               # OUT scores (n_rows,)
                 int n_threads, Py_ssize_t max_nnz):
    """Raw FwFM scores of the rows of a CSR matrix, rows in parallel."""
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef int nt = team(n_threads)
    cdef Predict c
    if n_rows <= 0:
        return
    c.F = R.shape[0]
    # slots per thread (rows of the scratch, padded so threads never share a line)
    c.pmax = _pmax(c.F, max_nnz) + 16
    c.kpad = (n_factors // 8 + 1) * 8
    cdef int32_t[:, ::1] slot_of = np.full((nt, c.F), -1, dtype=np.int32)
    cdef int32_t[:, ::1] plist = np.zeros((nt, c.pmax), dtype=np.int32)
    cdef double[:, ::1] S = np.zeros((nt, c.pmax * c.kpad))
    cdef double[:, ::1] q = np.zeros((nt, c.pmax))
    c.X = &data[0] if data.shape[0] > 0 else NULL
    c.ind = &indices[0] if indices.shape[0] > 0 else NULL
    c.indptr = &indptr[0]
    c.tab = &table[0, 0]
    c.fields = &fields[0]
    c.R = &R[0, 0]
    c.out = &out[0]
    c.slot_of = &slot_of[0, 0]
    c.plist = &plist[0, 0]
    c.S = &S[0, 0]
    c.q = &q[0, 0]
    c.n_rows = n_rows
    c.stride = table.shape[1]
    c.w0 = w0
    c.k = n_factors
    c.normalize = normalize
    c.types = (sizeof(floating) == 8) + 2 * (sizeof(data_t) == 8) + 4 * (sizeof(index_t) == 8)
    with nogil:
        parallel_for(predict_task, &c, n_rows,
                     chunk_rows(&indptr[0], n_rows, CHUNK_NNZ_PREDICT), nt)


cdef struct Train:
    const void* X
    const void* ind
    const int64_t* indptr
    void* tab
    const int32_t* fields
    const double* y
    const double* sw
    const int64_t* order
    double* thr        # (nt, THR_STRIDE)
    double* Rt         # (nt, F * F) per-thread R
    double* Gt         # (nt, F * F) per-thread AdaGrad accumulators of R
    int32_t* slot_of
    int32_t* plist
    double* S
    double* T
    double* q
    double* rdiag
    double* tmp        # (nt, 3 * pmax)
    Py_ssize_t n, stride, kpad, F, pmax
    int k, loss, optimizer, types
    bint fit_intercept, normalize
    double lr, l2_w0, l2_w, l2_v, l1, ftrl_beta


cdef inline void update_pairs(Row* w, int P, double* R, double* G, Py_ssize_t F, int k,
                              Py_ssize_t kpad, double g, int optimizer, double lr,
                              double l2) noexcept nogil:
    """One step on the field-pair weights of the row (this thread's copy):
    per field a, the weights r_ab (b >= a) are gathered into w.rt / w.gt with
    their derivatives w.dt, stepped together (cfm_fw_step), written back to
    both halves of R."""
    cdef int a, b, j, n, k4 = w.k4
    cdef Py_ssize_t fa, fb
    cdef const double* sa
    cdef bint ada = optimizer != OPT_SGD
    for a in range(P):
        fa = w.plist[a]
        sa = w.S + a * kpad
        n = P - a
        for j in range(n):
            b = a + j
            fb = w.plist[b]
            w.rt[j] = R[fa * F + fb]
            if ada:
                w.gt[j] = G[fa * F + fb]
            if j == 0:
                w.dt[0] = 0.5 * (dot(sa, sa, k4) - w.q[a])
            else:
                w.dt[j] = dot(sa, w.S + b * kpad, k4)
        cfm_fw_step(w.rt, w.gt if ada else NULL, w.dt, n, g, lr, l2)
        for j in range(n):
            fb = w.plist[a + j]
            R[fa * F + fb] = w.rt[j]
            R[fb * F + fa] = w.rt[j]
            if ada:
                G[fa * F + fb] = w.gt[j]
                G[fb * F + fa] = w.gt[j]


cdef inline double row_T(Row* w, int P, const double* R, Py_ssize_t F, int k,
                         Py_ssize_t kpad) noexcept nogil:
    """t_a = sum_b r_ab s_b for every field of the row (and r_aa saved); returns
    the pairwise part of the score, 1/2 sum_a (<s_a, t_a> - r_aa q_a)."""
    cdef int a, k4 = w.k4
    cdef Py_ssize_t fa, k8 = (k + 7) // 8 * 8
    cdef double pair = 0.0
    for a in range(P):
        fa = w.plist[a]
        w.rdiag[a] = R[fa * F + fa]
        cfm_fw_tsum(w.S, kpad, R + fa * F, w.plist, P, k8, w.T + a * kpad)
        pair += 0.5 * (dot(w.S + a * kpad, w.T + a * kpad, k4) - w.rdiag[a] * w.q[a])
    return pair


cdef inline void update_features(Row* w, const data_t* X, const index_t* ind,
                                 Py_ssize_t start, Py_ssize_t end, floating* tab,
                                 Py_ssize_t stride, const int32_t* fields, int k,
                                 Py_ssize_t kpad, double scale, double g, int optimizer,
                                 double lr, double l2_w, double l2_v, double l1,
                                 double ftrl_beta) noexcept nogil:
    """w_j and v_j of the row's features: grad v_j = g x_j (t_F(j) - r_FF x_j v_j) + l2_v v_j."""
    cdef Py_ssize_t jj, c, goff
    cdef int p
    cdef floating* rec
    cdef floating* vrec
    cdef const double* t
    cdef double x, gx, rd
    cdef floating v, gsq, accf, step
    cdef floating lrf = <floating>lr
    cdef floating l2vf = <floating>l2_v
    cdef floating inv_k = <floating>(1.0 / k)
    cdef floating gbuf[MAX_FACTORS]
    goff = 1 + k + 1 if optimizer == OPT_ADAGRAD else 1 + k + 2
    for jj in range(start, end):
        rec = tab + <Py_ssize_t>ind[jj] * stride
        x = <double>X[jj] * scale
        gx = g * x
        linear_step(rec, rec + 1 + k, gx, optimizer, lr, l2_w, l1, ftrl_beta)
        p = w.slot_of[fields[ind[jj]]]
        t = w.T + p * kpad
        rd = w.rdiag[p] * x
        vrec = rec + 1
        for c in range(k):
            v = vrec[c]
            gbuf[c] = <floating>(gx * (t[c] - rd * <double>v)) + l2vf * v
        if optimizer == OPT_SGD:
            for c in range(k):
                vrec[c] = vrec[c] - lrf * gbuf[c]
        else:
            # row-wise AdaGrad, as the FM kernels
            gsq = 0
            for c in range(k):
                gsq = gsq + gbuf[c] * gbuf[c]
            accf = rec[goff] + gsq * inv_k
            rec[goff] = accf
            step = lrf / fsqrt(accf)
            for c in range(k):
                vrec[c] = vrec[c] - step * gbuf[c]


cdef inline void train_rows(Train* c, floating* tab, const data_t* X, const index_t* ind,
                            int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef Py_ssize_t p, i, start, end, FF = c.F * c.F
    cdef int P
    cdef double scale, lin, pred, g
    cdef double* t = c.thr + slot * THR_STRIDE
    cdef double* R = c.Rt + slot * FF
    cdef double* G = c.Gt + slot * FF
    cdef Row w
    cdef Py_ssize_t n_lines = (c.stride * sizeof(floating) + 63) // 64
    scratch_of(&w, c.slot_of, c.plist, c.S, c.T, c.q, c.rdiag, c.F, c.pmax, c.kpad, c.k,
               slot)
    w.rt = c.tmp + slot * 3 * c.pmax
    w.gt = w.rt + c.pmax
    w.dt = w.gt + c.pmax
    for p in range(lo, min(lo + PF_ROWS, hi)):
        i = c.order[p]
        prefetch_records(ind, c.indptr[i], c.indptr[i + 1], tab, c.stride, n_lines, c.fields)
    for p in range(lo, hi):
        if p + PF_ROWS < c.n:
            i = c.order[p + PF_ROWS]
            prefetch_records(ind, c.indptr[i], c.indptr[i + 1], tab, c.stride, n_lines, c.fields)
        i = c.order[p]
        start = c.indptr[i]
        end = c.indptr[i + 1]
        scale = row_scale(X, start, end, c.normalize)
        P = gather(&w, X, ind, start, end, tab, c.stride, c.fields, c.k, c.kpad, scale, &lin)
        pred = t[T_W0] + lin + row_T(&w, P, R, c.F, c.k, c.kpad)
        if not isfinite(pred):
            t[T_BAD] += 1.0
        else:
            g = sample_grad(t, pred, c.y[i], c.sw[i] if c.sw != NULL else 1.0, c.loss)
            if c.fit_intercept:
                update_bias(t, g, c.optimizer, c.lr, c.l2_w0, c.ftrl_beta)
            update_features(&w, X, ind, start, end, tab, c.stride, c.fields, c.k, c.kpad,
                            scale, g, c.optimizer, c.lr, c.l2_w, c.l2_v, c.l1, c.ftrl_beta)
            update_pairs(&w, P, R, G, c.F, c.k, c.kpad, g, c.optimizer, c.lr, c.l2_v)
        release(&w, P)


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


def fwfm_train_epoch(const data_t[::1] data,         # IN  CSR values
                     const index_t[::1] indices,     # IN  CSR column indices
                     const int64_t[::1] indptr,      # IN  CSR row offsets
                     const int32_t[::1] fields,      # IN  field of each column
                     const double[::1] y,            # IN  targets (logistic: -1/+1)
                     const double[::1] sample_weight,  # IN  per-row weights, or empty
                     const int64_t[::1] order,       # IN  rows to visit, in this order
                     floating[:, ::1] table,         # IN/OUT [w, v(k), optimizer state]
                     double[:, ::1] R,               # IN/OUT field-pair weights (F, F)
                     double[:, ::1] R_acc,           # IN/OUT their AdaGrad accumulators
                     double[::1] w0_state,           # IN/OUT [w0, a, b]
                     *, int n_factors, int loss, int optimizer,
                     bint fit_intercept, bint normalize,
                     double learning_rate, double l2_w0, double l2_w, double l2_v,
                     double l1, double ftrl_beta, int n_threads, Py_ssize_t max_nnz):
    """One pass of per-sample updates over ``order`` (see the module notes on
    threads).  Returns (sum of weighted losses before each update, sum of
    weights, number of rows whose prediction was not finite)."""
    cdef Py_ssize_t n = order.shape[0]
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef int nt = team(n_threads)
    cdef Train c
    cdef double total_loss = 0.0, total_w = 0.0
    cdef int n_bad
    c.F = R.shape[0]
    c.pmax = _pmax(c.F, max_nnz) + 16  # slots per thread, padded
    c.kpad = (n_factors // 8 + 1) * 8
    cdef Py_ssize_t FF = c.F * c.F
    cdef double[:, ::1] thr = np.zeros((nt, THR_STRIDE))
    init_thread_states(&thr[0, 0], nt, &w0_state[0])
    if n == 0:
        return 0.0, 0.0, 0
    R0 = np.asarray(R).ravel()
    G0 = np.asarray(R_acc).ravel()
    cdef double[:, ::1] Rt = np.tile(R0, (nt, 1))
    cdef double[:, ::1] Gt = np.tile(G0, (nt, 1))
    cdef int32_t[:, ::1] slot_of = np.full((nt, c.F), -1, dtype=np.int32)
    cdef int32_t[:, ::1] plist = np.zeros((nt, c.pmax), dtype=np.int32)
    cdef double[:, ::1] S = np.zeros((nt, c.pmax * c.kpad))
    cdef double[:, ::1] T = np.zeros((nt, c.pmax * c.kpad))
    cdef double[:, ::1] q = np.zeros((nt, c.pmax))
    cdef double[:, ::1] rdiag = np.zeros((nt, c.pmax))
    cdef double[:, ::1] tmp = np.zeros((nt, 3 * c.pmax))
    c.X = &data[0] if data.shape[0] > 0 else NULL
    c.ind = &indices[0] if indices.shape[0] > 0 else NULL
    c.indptr = &indptr[0]
    c.tab = &table[0, 0]
    c.fields = &fields[0]
    c.y = &y[0]
    c.sw = &sample_weight[0] if sample_weight.shape[0] > 0 else NULL
    c.order = &order[0]
    c.thr = &thr[0, 0]
    c.Rt = &Rt[0, 0]
    c.Gt = &Gt[0, 0]
    c.slot_of = &slot_of[0, 0]
    c.plist = &plist[0, 0]
    c.S = &S[0, 0]
    c.T = &T[0, 0]
    c.q = &q[0, 0]
    c.rdiag = &rdiag[0, 0]
    c.tmp = &tmp[0, 0]
    c.n = n
    c.stride = table.shape[1]
    c.k = n_factors
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
        parallel_for(train_task, &c, n, chunk_rows(&indptr[0], n_rows, CHUNK_NNZ_TRAIN), nt)

    # Merge the per-thread R copies in a fixed order: the count-weighted
    # mean of the copies (model averaging, stable for any number of threads;
    # summing their increments, as Hogwild on a shared R would, moved R 1.35x
    # as far as one thread did with 2 threads, and would scale with the
    # threads), summed increments of the accumulators.  Exact with one thread.
    if nt == 1:
        R0[:] = Rt[0]
        G0[:] = Gt[0]
    else:
        counts = np.asarray(thr)[:, T_COUNT].copy()
        if counts.sum() > 0:
            R0[:] = (counts[:, None] * np.asarray(Rt)).sum(axis=0) / counts.sum()
            G0[:] = G0 + (np.asarray(Gt) - G0[None, :]).sum(axis=0)
    n_bad = merge_thread_states(&thr[0, 0], nt, &w0_state[0], optimizer, fit_intercept,
                                learning_rate, l2_w0, ftrl_beta, &total_loss, &total_w)
    return total_loss, total_w, n_bad
