"""Field-aware factorization machine kernels (Juan et al., RecSys 2016).

    y(x) = w0 + sum_i w_i x_i + sum_{i<j} <v_{i,f(j)}, v_{j,f(i)}> x_i x_j

where f(j) is the field of column j.  O(nnz^2 k) per row.

Design
------
* Linear terms live in ``lin`` (n_features, lw): [w, optimizer state], as in
  the FM kernels.  Factors live in ``V`` (n_features, n_fields * ks): the
  n_fields vectors of one feature are contiguous (one block per feature,
  n_fields * ks floats), so a row reads, for each of its features, vectors
  from a single block.  A vector is [v_0 .. v_{kp-1}, G]: kp is k rounded up
  to a multiple of 4 (padding coordinates stay exactly 0) so that the factor
  loops vectorise without remainders, and G is the row-wise AdaGrad
  accumulator of that vector (absent for SGD): one accumulator per vector
  keeps the table at (kp + 1) floats per (feature, field), which matters when
  it holds n_features * n_fields vectors.
* Training follows libffm: score the row, then update the bias and linear
  terms, then visit the pairs (a < b) in row order and step both vectors of
  each pair with gradients computed from their current values
  (g_{a,f(b)} = l2_v v_{a,f(b)} + g x_a x_b v_{b,f(a)}, and symmetrically).
  Hogwild across threads; exactly sequential with one thread.
* Dot products are accumulated per coordinate (vectorisable) and reduced at
  the end; sums of squares for AdaGrad likewise, in 4 lanes.
* The blocks of the features of the rows a few steps ahead are prefetched.
* Threads: cfm's worker pool (cfm._pool, see src/cfm/_fm.pyx): rows in
  chunks of about CHUNK_PAIRS pair products that any thread claims; per-thread
  buffers are indexed by the pool's slot.
* Inputs (CSR structure, column indices, field ids) are validated in Python.
"""
import numpy as np

from libc.math cimport sqrt, isfinite
from libc.stdint cimport int32_t, int64_t, uint16_t, uint32_t, uint64_t

from cfm._common cimport (
    floating, data_t, index_t, cfm_prefetch_r, cfm_prefetch_l2,
    OPT_SGD, OPT_ADAGRAD, OPT_FTRL,
    row_scale, prefetch_span, update_bias, ftrl_weight, fsqrt,
    THR_STRIDE, T_W0, T_A, T_B, T_LOSS, T_WSUM, T_COUNT, T_BAD, MAX_FACTORS,
    init_thread_states, merge_thread_states, linear_step, sample_grad,
    SM_THR_BASE, softmax_merge, softmax_sample, softmax_init_states, softmax_thread_stride,
)
from cfm._pool cimport parallel_for, team
from cfm._random cimport splitmix64

# Storage of the factor table V: float32, float64, or float16 bits (uint16_t,
# dtype="float16", see cfm_ffm_half.h; the linear table is then float32).
ctypedef fused vtab_t:
    float
    double
    uint16_t


# AVX2+FMA kernels for float32 (chosen at import from the CPU's features;
# cfm._ffm.set_simd("sse2") forces the baseline path, e.g. for tests).
cdef bint use_avx2 = cfm_ffm_have_avx2() != 0


def simd_path():
    """"avx2" or "sse2": which float32 FFM kernels are in use."""
    return "avx2" if use_avx2 else "sse2"


def set_simd(str path):
    """Select the float32 FFM kernels: "avx2" (if the CPU has it) or "sse2"."""
    global use_avx2
    if path not in ("avx2", "sse2"):
        raise ValueError(f"unknown SIMD path {path!r}")
    use_avx2 = path == "avx2" and cfm_ffm_have_avx2() != 0
    return simd_path()


cdef enum:
    PF_ROWS = 1
    PF_IDX = 4
    # pair products (a, b) per chunk of rows handed to a thread: ~50-100 us
    # of scoring (training costs about three times as much per pair)
    CHUNK_PAIRS_PREDICT = 16384
    CHUNK_PAIRS_TRAIN = 8192
    CHUNK_INIT = 256     # features per chunk of ffm_init_factors
    CHUNK_FINITE = 4096  # features per chunk of ffm_half_finite


cdef inline int64_t pair_chunk(const int64_t* indptr, int64_t n_rows,
                               int64_t target) noexcept nogil:
    """Rows per chunk: about ``target`` pair products of an average row."""
    cdef int64_t m, cost
    if n_rows <= 0:
        return 1
    m = (indptr[n_rows] - indptr[0]) // n_rows
    cost = m * (m - 1) // 2 + m + 1
    return max(<int64_t>1, min(n_rows, target // cost))


cdef inline int table_types(int lin_size, int v_size) noexcept nogil:
    """0: float32 tables, 1: float64 tables, 2: float32 linear + float16 V;
    -1 for other pairs (never built by cfm/ffm.py)."""
    if lin_size == 4 and v_size == 4:
        return 0
    if lin_size == 8 and v_size == 8:
        return 1
    if lin_size == 4 and v_size == 2:
        return 2
    return -1


cdef inline void gather_row(const data_t* data, const index_t* indices,
                            Py_ssize_t start, Py_ssize_t end, const int32_t* field_offsets,
                            const int32_t* entry_fields, const int32_t* rec_off,
                            double scale, Py_ssize_t vstride,
                            double* xs, int32_t* fl, Py_ssize_t* off) noexcept nogil:
    """Per non-zero of the row: scaled value, record offset of its field, offset
    of the V block.  The field is the column's (``field_offsets[j]``, the
    per-column fast path) or, when ``entry_fields`` is not NULL, the entry's
    own (``rec_off[entry_fields[start + a]]``, libffm's per-entry fields)."""
    cdef Py_ssize_t a, j
    if entry_fields == NULL:
        for a in range(end - start):
            j = indices[start + a]
            xs[a] = <double>data[start + a] * scale
            fl[a] = field_offsets[j]
            off[a] = j * vstride
    else:
        for a in range(end - start):
            j = indices[start + a]
            xs[a] = <double>data[start + a] * scale
            fl[a] = rec_off[entry_fields[start + a]]
            off[a] = j * vstride


cdef inline double pair_score(const floating* V, Py_ssize_t m, const double* xs,
                              const int32_t* fl, const Py_ssize_t* off,
                              Py_ssize_t ks, int kp) noexcept nogil:
    """sum_{a<b} <v_{a,f(b)}, v_{b,f(a)}> x_a x_b, accumulated per coordinate."""
    cdef floating acc[MAX_FACTORS]
    cdef const floating* va
    cdef const floating* p1
    cdef const floating* p2
    cdef floating xab
    cdef Py_ssize_t a, b, f
    cdef double total = 0.0
    for f in range(kp):
        acc[f] = 0
    for a in range(m):
        va = V + off[a]
        for b in range(a + 1, m):
            p1 = va + fl[b] * ks
            p2 = V + off[b] + fl[a] * ks
            xab = <floating>(xs[a] * xs[b])
            for f in range(kp):
                acc[f] = acc[f] + p1[f] * p2[f] * xab
    for f in range(kp):
        total += acc[f]
    return total


cdef inline double pair_score_dispatch(const vtab_t* V, Py_ssize_t m, const double* xs,
                                       const int32_t* fl, const Py_ssize_t* off,
                                       Py_ssize_t ks, int kp) noexcept nogil:
    """pair_score with a literal kp for the common sizes: once inlined, the
    factor loops have constant trip counts and are fully unrolled/vectorised.
    float32 with kp % 8 == 0 on a CPU with AVX2+FMA: the AVX2 kernel; a
    float16 table: the kernels of cfm_ffm_half.h."""
    if vtab_t is uint16_t:
        if half_simd():
            return cfm_ffmh_pair_score_avx2(V, m, xs, fl, off, ks, kp)
        return cfm_ffmh_pair_score_c(V, m, xs, fl, off, ks, kp)
    else:
        if vtab_t is float:
            if kp % 8 == 0 and use_avx2:
                return cfm_ffm_pair_score_avx2(V, m, xs, fl, off, ks, kp)
        if kp == 8:
            return pair_score(V, m, xs, fl, off, ks, 8)
        if kp == 4:
            return pair_score(V, m, xs, fl, off, ks, 4)
        if kp == 16:
            return pair_score(V, m, xs, fl, off, ks, 16)
        return pair_score(V, m, xs, fl, off, ks, kp)


cdef inline double lin_score(const floating* lin, Py_ssize_t lw, const data_t* data,
                             const index_t* indices, Py_ssize_t start, Py_ssize_t end,
                             double scale) noexcept nogil:
    cdef Py_ssize_t jj
    cdef double s = 0.0
    for jj in range(start, end):
        s += <double>lin[<Py_ssize_t>indices[jj] * lw] * <double>data[jj] * scale
    return s


cdef inline void prefetch_lin(const index_t* indices, Py_ssize_t start, Py_ssize_t end,
                              const floating* lin, Py_ssize_t lw) noexcept nogil:
    """Prefetch the linear records [w, state] of a row's features."""
    cdef Py_ssize_t jj
    for jj in range(start, end):
        cfm_prefetch_r(lin + <Py_ssize_t>indices[jj] * lw)


cdef inline double predict_row(const data_t* X, const index_t* ind, const int64_t* indptr,
                               Py_ssize_t i, Py_ssize_t n_rows, const int32_t* F,
                               const int32_t* EF, const int32_t* RO, const floating* L, Py_ssize_t lw, const vtab_t* Vp,
                               Py_ssize_t vstride, bint normalize, double w0, int kp,
                               Py_ssize_t ks, double* xs, int32_t* fl,
                               Py_ssize_t* off) noexcept nogil:
    """Score of row i, after prefetching row i + PF_ROWS's blocks."""
    cdef Py_ssize_t r = i + PF_ROWS
    cdef Py_ssize_t start = indptr[i], end = indptr[i + 1]
    cdef double scale
    if r < n_rows:
        prefetch_blocks(ind, indptr[r], indptr[r + 1], Vp, vstride * sizeof(vtab_t))
        prefetch_lin(ind, indptr[r], indptr[r + 1], L, lw)
    scale = row_scale(X, start, end, normalize)
    gather_row(X, ind, start, end, F, EF, RO, scale, vstride, xs, fl, off)
    return (w0 + lin_score(L, lw, X, ind, start, end, scale)
            + pair_score_dispatch(Vp, end - start, xs, fl, off, ks, kp))


cdef check_entry_fields(const int32_t[::1] entry_fields, const int32_t[::1] rec_off,
                        Py_ssize_t nnz):
    """One field per stored entry, each with a record offset (the offsets
    themselves are the state's, inside its rows)."""
    cdef Py_ssize_t a, nf, bad = -1
    cdef int32_t f
    if rec_off is None or entry_fields.shape[0] != nnz:
        raise ValueError("entry_fields needs one field per stored entry, and rec_off")
    nf = rec_off.shape[0]
    with nogil:
        for a in range(nnz):
            f = entry_fields[a]
            if f < 0 or f >= nf:
                bad = a
                break
    if bad >= 0:
        raise ValueError(f"entry field {entry_fields[bad]} at entry {bad} is outside "
                         f"[0, {nf})")


cdef struct Predict:
    const void* X
    const void* ind
    const int64_t* P
    const int32_t* F
    const int32_t* EF     # per-entry field ids, or NULL (per-column: F)
    const int32_t* RO     # record offset of each field (with EF)
    const void* L
    const void* V
    double* out
    double* xs_buf        # (nt, width) per-thread row buffers
    int32_t* fl_buf
    Py_ssize_t* off_buf
    Py_ssize_t width, lw, vstride, ks, n_rows
    double w0
    int kp, types
    bint normalize


cdef inline void predict_rows(Predict* c, const floating* L, const vtab_t* Vp, const data_t* X,
                              const index_t* ind, int64_t lo, int64_t hi,
                              int slot) noexcept nogil:
    cdef Py_ssize_t i
    cdef double* xs = c.xs_buf + slot * c.width
    cdef int32_t* fl = c.fl_buf + slot * c.width
    cdef Py_ssize_t* off = c.off_buf + slot * c.width
    # the row this chunk starts with was not prefetched by the previous
    # chunk's pipeline (another thread may have run it)
    prefetch_blocks(ind, c.P[lo], c.P[lo + 1], Vp, c.vstride * sizeof(vtab_t))
    prefetch_lin(ind, c.P[lo], c.P[lo + 1], L, c.lw)
    for i in range(lo, hi):
        c.out[i] = predict_row(X, ind, c.P, i, c.n_rows, c.F, c.EF, c.RO, L, c.lw, Vp, c.vstride,
                               c.normalize, c.w0, c.kp, c.ks, xs, fl, off)


cdef inline void predict_tables(Predict* c, const data_t* X, const index_t* ind, int64_t lo,
                                int64_t hi, int slot) noexcept nogil:
    if (c.types & 3) == 0:
        predict_rows(c, <const float*>c.L, <const float*>c.V, X, ind, lo, hi, slot)
    elif (c.types & 3) == 1:
        predict_rows(c, <const double*>c.L, <const double*>c.V, X, ind, lo, hi, slot)
    else:
        predict_rows(c, <const float*>c.L, <const uint16_t*>c.V, X, ind, lo, hi, slot)


cdef void predict_task(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef Predict* c = <Predict*>p
    cdef bint x64 = c.types & 4, i64 = c.types & 8
    if not x64 and not i64:
        predict_tables(c, <const float*>c.X, <const int32_t*>c.ind, lo, hi, slot)
    elif x64 and not i64:
        predict_tables(c, <const double*>c.X, <const int32_t*>c.ind, lo, hi, slot)
    elif not x64:
        predict_tables(c, <const float*>c.X, <const int64_t*>c.ind, lo, hi, slot)
    else:
        predict_tables(c, <const double*>c.X, <const int64_t*>c.ind, lo, hi, slot)


def ffm_predict(const data_t[::1] data,          # IN  CSR values
                const index_t[::1] indices,      # IN  CSR column indices
                const int64_t[::1] indptr,       # IN  CSR row offsets
                const int32_t[::1] field_offsets,  # IN  per column: record offset of its field / ks
                const floating[:, ::1] lin,      # IN  linear table (n_features, lw)
                const vtab_t[:, ::1] V,          # IN  factor table (n_features, row width)
                *, double w0, int kp, Py_ssize_t ks, bint normalize,
                double[::1] out,                 # OUT scores
                int n_threads, Py_ssize_t max_nnz,
                const int32_t[::1] entry_fields=None,  # IN  per stored entry: field id, or None
                const int32_t[::1] rec_off=None):      # IN  per field: record offset / ks
    """Raw FFM scores of the rows of a CSR matrix, rows in parallel (in
    chunks that any thread claims: also right while other work shares the
    cores, e.g. the batch-scoring pipeline's parser).

    ``entry_fields`` (one field id per stored entry, each < len(rec_off),
    checked by the caller) replaces the column's field by the entry's own:
    libffm's per-entry fields."""
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef int nt = team(n_threads)
    # per-thread rows padded (>= 128 bytes apart) so threads never share a line
    cdef Py_ssize_t width = (max(max_nnz, 1) // 16 + 2) * 16
    cdef Predict c
    c.types = table_types(sizeof(floating), sizeof(vtab_t))
    if c.types < 0:
        raise ValueError("unsupported pair of table dtypes")
    if n_rows <= 0:
        return
    cdef double[:, ::1] xs_buf = np.empty((nt, width))
    cdef int32_t[:, ::1] fl_buf = np.empty((nt, width), dtype=np.int32)
    cdef Py_ssize_t[:, ::1] off_buf = np.empty((nt, width), dtype=np.intp)
    c.types += 4 * (sizeof(data_t) == 8) + 8 * (sizeof(index_t) == 8)
    c.X = &data[0] if data.shape[0] > 0 else NULL
    c.ind = &indices[0] if indices.shape[0] > 0 else NULL
    c.P = &indptr[0]
    c.F = &field_offsets[0]
    c.EF = NULL
    c.RO = NULL
    if entry_fields is not None:
        check_entry_fields(entry_fields, rec_off, data.shape[0])
        c.EF = &entry_fields[0] if entry_fields.shape[0] > 0 else NULL
        c.RO = &rec_off[0]
    c.L = &lin[0, 0]
    c.V = &V[0, 0]
    c.out = &out[0]
    c.xs_buf = &xs_buf[0, 0]
    c.fl_buf = &fl_buf[0, 0]
    c.off_buf = &off_buf[0, 0]
    c.width = width
    c.lw = lin.shape[1]
    c.vstride = V.shape[1]
    c.ks = ks
    c.n_rows = n_rows
    c.w0 = w0
    c.kp = kp
    c.normalize = normalize
    with nogil:
        parallel_for(predict_task, &c, n_rows,
                     pair_chunk(&indptr[0], n_rows, CHUNK_PAIRS_PREDICT), nt)


cdef inline void update_linear(floating* lin, Py_ssize_t lw, const data_t* data,
                               const index_t* indices, Py_ssize_t start, Py_ssize_t end,
                               double scale, double g, int optimizer, double lr,
                               double l2_w, double l1, double ftrl_beta) noexcept nogil:
    cdef Py_ssize_t jj
    cdef floating* rec
    for jj in range(start, end):
        rec = lin + <Py_ssize_t>indices[jj] * lw
        linear_step(rec, rec + 1, g * <double>data[jj] * scale, optimizer, lr, l2_w, l1,
                    ftrl_beta)


cdef inline floating sum_squares(const floating* g, int kp) noexcept nogil:
    """Sum of squares in 4 lanes (vectorisable without reassociation)."""
    cdef floating q[4]
    cdef Py_ssize_t f, l
    for l in range(4):
        q[l] = 0
    f = 0
    while f < kp:
        for l in range(4):
            q[l] = q[l] + g[f + l] * g[f + l]
        f = f + 4
    return (q[0] + q[1]) + (q[2] + q[3])


cdef extern from "cfm_ffm_simd.h" nogil:
    void cfm_ffm_pair_update_f32(float* p1, float* p2, int kp, float kappa, float l2,
                                 float lr, float inv_k, int adagrad, float* g1, float* g2)
    int cfm_ffm_have_avx2()
    double cfm_ffm_pair_score_avx2(const float* V, Py_ssize_t m, const double* xs,
                                   const int32_t* fl, const Py_ssize_t* off, Py_ssize_t ks,
                                   int kp)
    void cfm_ffm_update_pairs_avx2(float* V, Py_ssize_t m, const double* xs, const int32_t* fl,
                                   const Py_ssize_t* off, Py_ssize_t ks, int kp, double g,
                                   float l2, float lr, float inv_k, int adagrad)


cdef inline void update_pairs(floating* V, Py_ssize_t m, const double* xs,
                              const int32_t* fl, const Py_ssize_t* off,
                              Py_ssize_t ks, int kp, int k, double g, int optimizer,
                              double lr, double l2_v) noexcept nogil:
    """libffm-style per-pair steps on v_{a,f(b)} and v_{b,f(a)} for all a < b.

    float32: the SSE2 kernel of cfm_ffm_simd.h (the horizontal sums of the
    row-wise AdaGrad step do not vectorise from C loops without
    -ffast-math).  float64: the same arithmetic in plain loops.
    """
    cdef floating g1[MAX_FACTORS]
    cdef floating g2[MAX_FACTORS]
    cdef floating* va
    cdef floating* p1
    cdef floating* p2
    cdef floating kappa, G1, G2, s1, s2
    cdef floating lrf = <floating>lr
    cdef floating l2f = <floating>l2_v
    cdef floating inv_k = <floating>(1.0 / k)
    cdef int adagrad = optimizer != OPT_SGD
    cdef Py_ssize_t a, b, f
    for a in range(m):
        va = V + off[a]
        for b in range(a + 1, m):
            p1 = va + fl[b] * ks
            p2 = V + off[b] + fl[a] * ks
            kappa = <floating>(g * xs[a] * xs[b])
            if floating is float:
                cfm_ffm_pair_update_f32(p1, p2, kp, kappa, l2f, lrf, inv_k, adagrad, g1, g2)
            else:
                for f in range(kp):
                    g1[f] = l2f * p1[f] + kappa * p2[f]
                    g2[f] = l2f * p2[f] + kappa * p1[f]
                # one loop per vector: p1 and p2 may not be proven disjoint, so a
                # loop writing both would not vectorise
                if not adagrad:
                    s1 = lrf
                    s2 = lrf
                else:
                    G1 = p1[kp] + sum_squares(g1, kp) * inv_k
                    G2 = p2[kp] + sum_squares(g2, kp) * inv_k
                    p1[kp] = G1
                    p2[kp] = G2
                    s1 = lrf / fsqrt(G1)
                    s2 = lrf / fsqrt(G2)
                for f in range(kp):
                    p1[f] = p1[f] - s1 * g1[f]
                for f in range(kp):
                    p2[f] = p2[f] - s2 * g2[f]


cdef inline void update_pairs_dispatch(vtab_t* V, Py_ssize_t m, const double* xs,
                                       const int32_t* fl, const Py_ssize_t* off,
                                       Py_ssize_t ks, int kp, int k, double g, int optimizer,
                                       double lr, double l2_v, uint32_t* rng) noexcept nogil:
    """update_pairs with a literal kp for the common sizes (see pair_score_dispatch).
    rng: the thread's stochastic-rounding generator (float16 tables only)."""
    if vtab_t is uint16_t:
        if half_simd():
            cfm_ffmh_update_pairs_avx2(V, m, xs, fl, off, ks, kp, g, <float>l2_v, <float>lr,
                                       <float>(1.0 / k), optimizer != OPT_SGD, rng)
        else:
            cfm_ffmh_update_pairs_c(V, m, xs, fl, off, ks, kp, g, <float>l2_v, <float>lr,
                                    <float>(1.0 / k), optimizer != OPT_SGD, rng)
    else:
        if vtab_t is float:
            if kp % 8 == 0 and use_avx2:
                cfm_ffm_update_pairs_avx2(V, m, xs, fl, off, ks, kp, g, <float>l2_v, <float>lr,
                                          <float>(1.0 / k), optimizer != OPT_SGD)
                return
        if kp == 8:
            update_pairs(V, m, xs, fl, off, ks, 8, k, g, optimizer, lr, l2_v)
        elif kp == 4:
            update_pairs(V, m, xs, fl, off, ks, 4, k, g, optimizer, lr, l2_v)
        elif kp == 16:
            update_pairs(V, m, xs, fl, off, ks, 16, k, g, optimizer, lr, l2_v)
        else:
            update_pairs(V, m, xs, fl, off, ks, kp, k, g, optimizer, lr, l2_v)


cdef struct Train:
    const void* X
    const void* ind
    const int64_t* indptr
    const double* y
    const double* sw      # NULL: all weights 1
    const int64_t* order
    const int32_t* F
    const int32_t* EF     # per-entry field ids, or NULL (per-column: F)
    const int32_t* RO     # record offset of each field (with EF)
    void* L
    void* V
    double* thr           # (nt, THR_STRIDE)
    double* xs_buf        # (nt, width)
    int32_t* fl_buf
    Py_ssize_t* off_buf
    uint32_t* rng         # (nt, 32)
    Py_ssize_t n, width, lw, vstride, ks
    int k, kp, loss, optimizer, types
    bint fit_intercept, normalize
    double lr, l2_w0, l2_w, l2_v, l1, ftrl_beta


cdef inline void train_rows(Train* c, floating* L, vtab_t* Vp, const data_t* X,
                            const index_t* ind, int64_t lo, int64_t hi,
                            int slot) noexcept nogil:
    cdef Py_ssize_t p, i, r, start, end
    cdef Py_ssize_t n = c.n, lw = c.lw, vstride = c.vstride, ks = c.ks
    cdef int kp = c.kp
    cdef const int64_t* order = c.order
    cdef const int64_t* indptr = c.indptr
    cdef double scale, pred, g
    cdef double* t = c.thr + slot * THR_STRIDE
    cdef double* xs = c.xs_buf + slot * c.width
    cdef int32_t* fl = c.fl_buf + slot * c.width
    cdef Py_ssize_t* off = c.off_buf + slot * c.width
    cdef uint32_t* rng = c.rng + slot * 32
    r = order[lo]  # see predict_rows
    prefetch_blocks(ind, indptr[r], indptr[r + 1], Vp, vstride * sizeof(vtab_t))
    prefetch_lin(ind, indptr[r], indptr[r + 1], L, lw)
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
            prefetch_blocks(ind, indptr[r], indptr[r + 1], Vp, vstride * sizeof(vtab_t))
            prefetch_lin(ind, indptr[r], indptr[r + 1], L, lw)
        i = order[p]
        start = indptr[i]
        end = indptr[i + 1]
        scale = row_scale(X, start, end, c.normalize)
        gather_row(X, ind, start, end, c.F, c.EF, c.RO, scale, vstride, xs, fl, off)
        pred = (t[T_W0] + lin_score(L, lw, X, ind, start, end, scale)
                + pair_score_dispatch(Vp, end - start, xs, fl, off, ks, kp))
        if not isfinite(pred):
            t[T_BAD] += 1.0
        else:
            g = sample_grad(t, pred, c.y[i], c.sw[i] if c.sw != NULL else 1.0, c.loss)
            if c.fit_intercept:
                update_bias(t, g, c.optimizer, c.lr, c.l2_w0, c.ftrl_beta)
            update_linear(L, lw, X, ind, start, end, scale, g, c.optimizer,
                          c.lr, c.l2_w, c.l1, c.ftrl_beta)
            update_pairs_dispatch(Vp, end - start, xs, fl, off, ks, kp, c.k, g, c.optimizer,
                                  c.lr, c.l2_v, rng)


cdef inline void train_tables(Train* c, const data_t* X, const index_t* ind, int64_t lo,
                              int64_t hi, int slot) noexcept nogil:
    if (c.types & 3) == 0:
        train_rows(c, <float*>c.L, <float*>c.V, X, ind, lo, hi, slot)
    elif (c.types & 3) == 1:
        train_rows(c, <double*>c.L, <double*>c.V, X, ind, lo, hi, slot)
    else:
        train_rows(c, <float*>c.L, <uint16_t*>c.V, X, ind, lo, hi, slot)


cdef void train_task(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef Train* c = <Train*>p
    cdef int tt = c.types
    if (tt & 4) == 0 and (tt & 8) == 0:
        train_tables(c, <const float*>c.X, <const int32_t*>c.ind, lo, hi, slot)
    elif (tt & 8) == 0:
        train_tables(c, <const double*>c.X, <const int32_t*>c.ind, lo, hi, slot)
    elif (tt & 4) == 0:
        train_tables(c, <const float*>c.X, <const int64_t*>c.ind, lo, hi, slot)
    else:
        train_tables(c, <const double*>c.X, <const int64_t*>c.ind, lo, hi, slot)


def ffm_train_epoch(const data_t[::1] data,          # IN  CSR values
                    const index_t[::1] indices,      # IN  CSR column indices
                    const int64_t[::1] indptr,       # IN  CSR row offsets
                    const double[::1] y,             # IN  targets (logistic: -1/+1)
                    const double[::1] sample_weight,  # IN  per-row weights, or empty
                    const int64_t[::1] order,        # IN  rows to visit, in this order
                    const int32_t[::1] field_offsets,  # IN  per column: record offset of its field / ks
                    floating[:, ::1] lin,            # IN/OUT linear table
                    vtab_t[:, ::1] V,                # IN/OUT factor table
                    double[::1] w0_state,            # IN/OUT [w0, a, b]
                    *, int k, int kp, Py_ssize_t ks, int loss, int optimizer,
                    bint fit_intercept, bint normalize,
                    double learning_rate, double l2_w0, double l2_w, double l2_v,
                    double l1, double ftrl_beta, int n_threads, Py_ssize_t max_nnz,
                    uint64_t seed=0,
                    const int32_t[::1] entry_fields=None,  # IN  per stored entry: field id
                    const int32_t[::1] rec_off=None):      # IN  per field: record offset / ks
    """One libffm-style pass over ``order``; Hogwild across threads.

    ``entry_fields`` / ``rec_off``: per-entry fields, as in ffm_predict.

    ``seed`` (float16 tables) seeds the per-thread generators of the
    stochastic rounding of the updates (thread slot t: stream t).

    Returns (sum of weighted losses before each update, sum of weights,
    number of rows whose prediction was not finite).
    """
    cdef Py_ssize_t n = order.shape[0]
    cdef int nt = team(n_threads)
    # per-thread rows padded (>= 128 bytes apart) so threads never share a line
    cdef Py_ssize_t width = (max(max_nnz, 1) // 16 + 2) * 16
    cdef Train c
    c.types = table_types(sizeof(floating), sizeof(vtab_t))
    if c.types < 0:
        raise ValueError("unsupported pair of table dtypes")
    cdef double[:, ::1] xs_buf = np.empty((nt, width))
    cdef int32_t[:, ::1] fl_buf = np.empty((nt, width), dtype=np.int32)
    cdef Py_ssize_t[:, ::1] off_buf = np.empty((nt, width), dtype=np.intp)
    cdef double[:, ::1] thr = np.zeros((nt, THR_STRIDE))
    # 8 xorshift32 lanes per thread, rows 128 bytes apart; never 0
    cdef uint32_t[:, ::1] rng = np.empty((nt, 32), dtype=np.uint32)
    cdef uint64_t state = seed
    cdef Py_ssize_t i, q
    cdef double total_loss = 0.0, total_w = 0.0
    cdef int n_bad
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    for i in range(nt):
        for q in range(32):
            rng[i, q] = <uint32_t>(splitmix64(&state) >> 32) | 1u

    init_thread_states(&thr[0, 0], nt, &w0_state[0])
    if n == 0:
        return 0.0, 0.0, 0
    c.types += 4 * (sizeof(data_t) == 8) + 8 * (sizeof(index_t) == 8)
    c.X = &data[0] if data.shape[0] > 0 else NULL
    c.ind = &indices[0] if indices.shape[0] > 0 else NULL
    c.indptr = &indptr[0]
    c.y = &y[0]
    c.sw = &sample_weight[0] if sample_weight.shape[0] > 0 else NULL
    c.order = &order[0]
    c.F = &field_offsets[0]
    c.EF = NULL
    c.RO = NULL
    if entry_fields is not None:
        check_entry_fields(entry_fields, rec_off, data.shape[0])
        c.EF = &entry_fields[0] if entry_fields.shape[0] > 0 else NULL
        c.RO = &rec_off[0]
    c.L = &lin[0, 0]
    c.V = &V[0, 0]
    c.thr = &thr[0, 0]
    c.xs_buf = &xs_buf[0, 0]
    c.fl_buf = &fl_buf[0, 0]
    c.off_buf = &off_buf[0, 0]
    c.rng = &rng[0, 0]
    c.n = n
    c.width = width
    c.lw = lin.shape[1]
    c.vstride = V.shape[1]
    c.ks = ks
    c.k = k
    c.kp = kp
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
    with nogil:
        parallel_for(train_task, &c, n, pair_chunk(&indptr[0], n_rows, CHUNK_PAIRS_TRAIN), nt)

    n_bad = merge_thread_states(&thr[0, 0], nt, &w0_state[0], optimizer, fit_intercept,
                                learning_rate, l2_w0, ftrl_beta, &total_loss, &total_w)
    return total_loss, total_w, n_bad


cdef extern from "cfm_rand.h" nogil:
    void cfm_init_draws_c(float* out, int n, uint32_t k1, uint32_t k2, uint32_t c0, float scale)
    void cfm_init_draws_avx2(float* out, int n, uint32_t k1, uint32_t k2, uint32_t c0,
                             float scale)


cdef inline void init_draws_dispatch(float* out, int n, uint64_t key, uint32_t c0, float scale,
                                     bint simd) noexcept nogil:
    """Draws c0 .. c0+n-1 of a feature's 64-bit key (cfm_rand.h); both paths
    give the same bits."""
    if simd:
        cfm_init_draws_avx2(out, n, <uint32_t>key, <uint32_t>(key >> 32), c0, scale)
    else:
        cfm_init_draws_c(out, n, <uint32_t>key, <uint32_t>(key >> 32), c0, scale)


cdef check_rec_off(const int32_t[::1] rec_off, int n_fields, Py_ssize_t ks, Py_ssize_t width):
    """Every field's record (ks entries at rec_off[q]) lies inside a row."""
    cdef Py_ssize_t q
    if rec_off.shape[0] < n_fields:
        raise ValueError("rec_off needs one offset per field")
    for q in range(n_fields):
        if rec_off[q] < 0 or rec_off[q] + ks > width:
            raise ValueError("record offsets outside the table's rows")


def init_draws(uint64_t key, int n, uint32_t c0=0, double half_width=1.0, bint simd=True):
    """The draws ffm_init_factors makes (``key``: a feature's 64-bit key),
    by the SIMD path (when the CPU has AVX2) or the portable one; for tests."""
    out = np.zeros(max(n, 0), dtype=np.float32)
    cdef float[::1] o = out
    if n > 0:
        init_draws_dispatch(&o[0], n, key, c0, <float>(half_width / 8388608.0),
                            simd and use_avx2)
    return out


cdef struct Init:
    void* V
    const int32_t* rec_off
    float* stage          # (nt, swidth) per-thread draws
    Py_ssize_t swidth, vstride, ks
    int n_fields, k, kp, vsize
    float scale
    double g_init
    uint64_t seed
    bint simd


cdef inline void init_rows(Init* c, vtab_t* V, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef Py_ssize_t j, q, f
    cdef uint64_t state, key
    cdef int k = c.k, kp = c.kp, n_fields = c.n_fields
    cdef vtab_t* vec
    cdef float* src
    cdef float* buf = c.stage + slot * c.swidth
    cdef float* pad = buf + n_fields * k
    for j in range(lo, hi):
        state = c.seed ^ (<uint64_t>j * <uint64_t>0xD1B54A32D192ED03ULL)
        key = splitmix64(&state)
        init_draws_dispatch(buf, n_fields * k, key, 0, c.scale, c.simd)
        for q in range(n_fields):
            vec = V + j * c.vstride + c.rec_off[q]
            src = buf + q * k
            if k < kp:
                for f in range(k):
                    pad[f] = src[f]
                src = pad
            if vtab_t is uint16_t:
                cfm_f2h_rn_n(src, vec, kp)
                if c.ks > kp:
                    cfm_h_store_g(vec + kp, <float>c.g_init)
            else:
                for f in range(kp):
                    vec[f] = <vtab_t>src[f]
                if c.ks > kp:
                    vec[kp] = <vtab_t>c.g_init


cdef void init_task(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef Init* c = <Init*>p
    if c.vsize == 4:
        init_rows(c, <float*>c.V, lo, hi, slot)
    elif c.vsize == 8:
        init_rows(c, <double*>c.V, lo, hi, slot)
    else:
        init_rows(c, <uint16_t*>c.V, lo, hi, slot)


def ffm_init_factors(vtab_t[:, ::1] V,   # IN/OUT factor table (n_features, row width)
                     int n_fields, int k, int kp, Py_ssize_t ks, double std, double g_init,
                     uint64_t seed, int n_threads,
                     const int32_t[::1] rec_off):  # IN  field q's record at rec_off[q] of a row
    """Fill each vector with draws of mean 0 and standard deviation ``std``
    (uniform on [-sqrt(3) std, sqrt(3) std]: an FFM table holds hundreds of
    millions of coordinates, and a uniform draw costs a few integer
    operations, no log/cos) in its first k coordinates, 0 in the padding, and
    g_init in the AdaGrad slot (when ks > kp).  A float16 table gets the same
    draws rounded to nearest, and g_init as a float32.

    Draw (j, q, f) is a hash of feature j's key (splitmix64 of the seed and
    j) and the counter q*k + f (cfm_rand.h), 8 at a time with AVX2 (the
    float32 kernels' switch, set_simd), so the result depends neither on the
    number of threads nor on the CPU.
    """
    cdef Py_ssize_t n = V.shape[0]
    cdef int nt = team(n_threads)
    cdef Init c
    # per thread: a feature's n_fields*k draws, then a kp-vector whose padding
    # stays 0 (when k < kp); rows >= 256 B apart
    cdef Py_ssize_t width = n_fields * k + kp + 64
    check_rec_off(rec_off, n_fields, ks, V.shape[1])
    if n <= 0:
        return
    cdef float[:, ::1] stage = np.zeros((nt, width), dtype=np.float32)
    c.V = &V[0, 0]
    c.rec_off = &rec_off[0]
    c.stage = &stage[0, 0]
    c.swidth = width
    c.vstride = V.shape[1]
    c.ks = ks
    c.n_fields = n_fields
    c.k = k
    c.kp = kp
    c.vsize = sizeof(vtab_t)
    c.scale = <float>(std * sqrt(3.0) / 8388608.0)
    c.g_init = g_init
    c.seed = seed
    c.simd = use_avx2
    with nogil:
        parallel_for(init_task, &c, n, CHUNK_INIT, nt)


# ---------------------------------------------------------------------------
# Half-precision factor table (dtype="float16"): V holds float16 bits
# (uint16), records of ks halves = [v (kp halves, kp % 8 == 0), G as float32
# in 2 halves (not for SGD)]; the linear table stays float32.  The kernels
# above take such a table through vtab_t = uint16_t; see cfm_ffm_half.h.

cdef extern from "cfm_ffm_half.h" nogil:
    int cfm_ffmh_have_simd()
    float cfm_h2f(uint16_t h)
    uint16_t cfm_f2h_rn(float f)
    double cfm_ffmh_pair_score_c(const uint16_t* V, Py_ssize_t m, const double* xs,
                                 const int32_t* fl, const Py_ssize_t* off, Py_ssize_t ks, int kp)
    double cfm_ffmh_pair_score_avx2(const uint16_t* V, Py_ssize_t m, const double* xs,
                                    const int32_t* fl, const Py_ssize_t* off, Py_ssize_t ks,
                                    int kp)
    void cfm_ffmh_update_pairs_c(uint16_t* V, Py_ssize_t m, const double* xs, const int32_t* fl,
                                 const Py_ssize_t* off, Py_ssize_t ks, int kp, double g,
                                 float l2, float lr, float inv_k, int adagrad, uint32_t* rng)
    void cfm_ffmh_update_pairs_avx2(uint16_t* V, Py_ssize_t m, const double* xs,
                                    const int32_t* fl, const Py_ssize_t* off, Py_ssize_t ks,
                                    int kp, double g, float l2, float lr, float inv_k,
                                    int adagrad, uint32_t* rng)
    void cfm_h_store_g(uint16_t* p, float g)
    void cfm_f2h_rn_n(const float* src, uint16_t* dst, int n)
    uint16_t cfm_f2h_sr(float f, uint32_t r)
    uint32_t cfm_xorshift32(uint32_t* s)

cdef bint half_simd_ok = cfm_ffmh_have_simd() != 0


def half_simd_available():
    """True when the CPU runs the AVX2+F16C float16 FFM kernels."""
    return bool(half_simd_ok)


cdef inline bint half_simd() noexcept nogil:
    # set_simd("sse2") selects the portable half kernels too
    return use_avx2 and half_simd_ok


cdef inline void prefetch_blocks(const index_t* indices, Py_ssize_t start, Py_ssize_t end,
                                 const void* V, Py_ssize_t row_bytes) noexcept nogil:
    """Prefetch a row's factor blocks into L2 (the pair loops then find them
    there; an L1 prefetch of hundreds of lines at once stalls on the fill
    buffers and was slower)."""
    cdef Py_ssize_t jj, o
    cdef const char* b
    for jj in range(start, end):
        b = <const char*>V + <Py_ssize_t>indices[jj] * row_bytes
        for o in range(0, row_bytes, 64):
            cfm_prefetch_l2(b + o)


cdef struct HalfFinite:
    const uint16_t* V
    const uint16_t* am
    const uint16_t* cm
    Py_ssize_t width
    int* bad              # per slot, 16 apart


cdef void half_finite_task(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef HalfFinite* c = <HalfFinite*>p
    cdef Py_ssize_t i, u
    cdef uint16_t row_bad = 0
    cdef const uint16_t* vec
    for i in range(lo, hi):
        vec = c.V + i * c.width
        for u in range(c.width):  # no early exit: vectorises
            row_bad = row_bad | ((vec[u] & c.am[u]) == c.cm[u])
    if row_bad:
        c.bad[16 * slot] = 1


def ffm_half_finite(const uint16_t[:, ::1] V, int n_fields, int kp, Py_ssize_t ks,
                    const int32_t[::1] rec_off, int n_threads=1):
    """True when no factor (float16) or AdaGrad slot (float32) is NaN/inf;
    field q's record starts at rec_off[q] of a row."""
    cdef Py_ssize_t n = V.shape[0]
    cdef Py_ssize_t width = V.shape[1]
    cdef Py_ssize_t u, q, o
    cdef int nt = team(n_threads)
    cdef int t
    cdef HalfFinite c
    # per position of a block: exponent mask and the value meaning NaN/inf
    # (float16 coordinates; the high half of a float32 slot; its low half
    # never matches), so that the scan is one vectorisable loop
    cdef uint16_t[::1] am = np.zeros(max(width, 1), dtype=np.uint16)
    cdef uint16_t[::1] cm = np.full(max(width, 1), 0xffff, dtype=np.uint16)
    cdef int[:, ::1] bad = np.zeros((nt, 16), dtype=np.intc)
    check_rec_off(rec_off, n_fields, ks, width)
    for q in range(n_fields):
        o = rec_off[q]
        for u in range(kp):
            am[o + u] = 0x7c00
            cm[o + u] = 0x7c00
        if ks > kp:
            am[o + kp + 1] = 0x7f80  # little-endian: the float32's high half
            cm[o + kp + 1] = 0x7f80
    if n <= 0:
        return True
    c.V = &V[0, 0]
    c.am = &am[0]
    c.cm = &cm[0]
    c.width = width
    c.bad = &bad[0, 0]
    with nogil:
        parallel_for(half_finite_task, &c, n, CHUNK_FINITE, nt)
    for t in range(nt):
        if bad[t, 0]:
            return False
    return True


def half_to_float(const uint16_t[::1] h):
    """float16 bits -> float32 with the kernels' conversion (tests)."""
    out = np.empty(h.shape[0], dtype=np.float32)
    cdef float[::1] o = out
    cdef Py_ssize_t i
    for i in range(h.shape[0]):
        o[i] = cfm_h2f(h[i])
    return out


def float_to_half(const float[::1] x, str rounding="nearest", uint32_t seed=1):
    """float32 -> float16 bits with the kernels' conversion (tests):
    rounding "nearest" or "stochastic"."""
    out = np.empty(x.shape[0], dtype=np.uint16)
    cdef uint16_t[::1] o = out
    cdef Py_ssize_t i
    cdef uint32_t s = seed | 1u
    cdef bint sr = rounding == "stochastic"
    for i in range(x.shape[0]):
        if sr:
            o[i] = cfm_f2h_sr_py(x[i], &s)
        else:
            o[i] = cfm_f2h_rn(x[i])
    return out


# (the rest of cfm_ffm_half.h is declared above)


cdef inline uint16_t cfm_f2h_sr_py(float f, uint32_t* s) noexcept nogil:
    return cfm_f2h_sr(f, cfm_xorshift32(s))



# ==========================================================================
# Multiclass (softmax) FFM: C independent FFMs coupled by the softmax loss
# ==========================================================================
#
#   score_c(x) = w0_c + sum_i w_ic x_i + sum_{i<j} <v_{i,f(j),c}, v_{j,f(i),c}> x_i x_j
#   loss       = logsumexp(score) - score_y,   d loss / d score_c = p_c - [c == y]
#
# Layout (cfm/_state/softmax_ffm.py): ``lin`` (n_features, C * lw), class c's
# [w, optimizer state] at c * lw of a feature's row; ``V`` (n_features, row
# width): per (feature, field q) the C class records back to back, class c's
# record [v (kp), G] at q * C * ks + c * ks.  So ``field_offsets`` (per
# column, q * C * ks) and a table pointer moved by c * ks (c * lw for lin,
# with the row stride C * lw) are exactly a binary FFM table: the binary
# kernels' pair_score / update_pairs / lin_score / update_linear serve every
# class, and the C vectors one pair touches are adjacent in memory.  A row
# is gathered once; every class's score is computed before any update (the
# gradient at the sample's parameters); each class then takes the binary
# FFM's libffm-style step (bias, linear terms, pairs) with its own g_c.
# Class biases are kept per thread (SM_* slots) and merged as in _fm.pyx.
# float32 / float64 tables only (dtype float16 is binary-only).

cdef struct SoftFFM:
    const void* X
    const void* ind
    const int64_t* indptr
    const int32_t* F
    const int32_t* EF
    const int32_t* RO
    void* L
    void* V
    const double* w0      # predict: (C,)
    double* out           # predict: (n_rows, C)
    const double* y       # train: class index 0 .. C-1 (as double)
    const double* sw
    const int64_t* order
    double* thr           # train: (nt, tstride)
    double* sc_buf        # (nt, sstride) the C scores of a row
    double* xs_buf        # (nt, width)
    int32_t* fl_buf
    Py_ssize_t* off_buf
    Py_ssize_t n, n_rows, width, lw, vstride, cstep, tstride, sstride
    int k, kp, n_classes, optimizer, types
    bint fit_intercept, normalize
    double lr, l2_w0, l2_w, l2_v, l1, ftrl_beta


cdef inline void softmax_ffm_scores(SoftFFM* c, const floating* L, const floating* Vp,
                                    const data_t* X, const index_t* ind, Py_ssize_t start,
                                    Py_ssize_t end, double scale, const double* w0,
                                    Py_ssize_t w0_step, const double* xs, const int32_t* fl,
                                    const Py_ssize_t* off, double* sc) noexcept nogil:
    """sc[cl] = w0[cl * w0_step] + the class's linear and pair terms."""
    cdef Py_ssize_t cl
    cdef Py_ssize_t lstride = c.n_classes * c.lw
    for cl in range(c.n_classes):
        sc[cl] = (w0[cl * w0_step] + lin_score(L + cl * c.lw, lstride, X, ind, start, end, scale)
                  + pair_score_dispatch(Vp + cl * c.cstep, end - start, xs, fl, off, 1, c.kp))


cdef inline void softmax_ffm_predict_rows(SoftFFM* c, const floating* L, const floating* Vp,
                                          const data_t* X, const index_t* ind, int64_t lo,
                                          int64_t hi, int slot) noexcept nogil:
    cdef Py_ssize_t i, r, start, end
    cdef double scale
    cdef double* xs = c.xs_buf + slot * c.width
    cdef int32_t* fl = c.fl_buf + slot * c.width
    cdef Py_ssize_t* off = c.off_buf + slot * c.width
    cdef const int64_t* P = c.indptr
    cdef Py_ssize_t lstride = c.n_classes * c.lw
    prefetch_blocks(ind, P[lo], P[lo + 1], Vp, c.vstride * sizeof(floating))
    for i in range(lo, hi):
        r = i + PF_ROWS
        if r < c.n_rows:
            prefetch_blocks(ind, P[r], P[r + 1], Vp, c.vstride * sizeof(floating))
            prefetch_lin(ind, P[r], P[r + 1], L, lstride)
        start = P[i]
        end = P[i + 1]
        scale = row_scale(X, start, end, c.normalize)
        gather_row(X, ind, start, end, c.F, c.EF, c.RO, scale, c.vstride, xs, fl, off)
        softmax_ffm_scores(c, L, Vp, X, ind, start, end, scale, c.w0, 1, xs, fl, off,
                           c.out + i * c.n_classes)


cdef inline void softmax_ffm_train_rows(SoftFFM* c, floating* L, floating* Vp,
                                        const data_t* X, const index_t* ind, int64_t lo,
                                        int64_t hi, int slot) noexcept nogil:
    cdef Py_ssize_t p, i, r, start, end, cl
    cdef Py_ssize_t n = c.n, C = c.n_classes
    cdef Py_ssize_t lstride = C * c.lw
    cdef const int64_t* order = c.order
    cdef const int64_t* indptr = c.indptr
    cdef double scale, g
    cdef double* t = c.thr + slot * c.tstride
    cdef double* sc = c.sc_buf + slot * c.sstride
    cdef double* xs = c.xs_buf + slot * c.width
    cdef int32_t* fl = c.fl_buf + slot * c.width
    cdef Py_ssize_t* off = c.off_buf + slot * c.width
    r = order[lo]  # see predict_rows
    prefetch_blocks(ind, indptr[r], indptr[r + 1], Vp, c.vstride * sizeof(floating))
    prefetch_lin(ind, indptr[r], indptr[r + 1], L, lstride)
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
            prefetch_blocks(ind, indptr[r], indptr[r + 1], Vp, c.vstride * sizeof(floating))
            prefetch_lin(ind, indptr[r], indptr[r + 1], L, lstride)
        i = order[p]
        start = indptr[i]
        end = indptr[i + 1]
        scale = row_scale(X, start, end, c.normalize)
        gather_row(X, ind, start, end, c.F, c.EF, c.RO, scale, c.vstride, xs, fl, off)
        softmax_ffm_scores(c, L, Vp, X, ind, start, end, scale, t + SM_THR_BASE, 3, xs, fl,
                           off, sc)
        if not softmax_sample(t, sc, C, <int>c.y[i], c.sw[i] if c.sw != NULL else 1.0):
            continue
        for cl in range(C):
            g = sc[cl]  # the sample's gradient d loss / d score_cl
            if c.fit_intercept:
                update_bias(t + SM_THR_BASE + 3 * cl, g, c.optimizer, c.lr, c.l2_w0,
                            c.ftrl_beta)
            update_linear(L + cl * c.lw, lstride, X, ind, start, end, scale, g, c.optimizer,
                          c.lr, c.l2_w, c.l1, c.ftrl_beta)
            update_pairs_dispatch(Vp + cl * c.cstep, end - start, xs, fl, off, 1, c.kp, c.k,
                                  g, c.optimizer, c.lr, c.l2_v, NULL)


cdef inline void softmax_ffm_dispatch(SoftFFM* c, bint train, const data_t* X,
                                      const index_t* ind, int64_t lo, int64_t hi,
                                      int slot) noexcept nogil:
    if c.types & 1:
        if train:
            softmax_ffm_train_rows(c, <double*>c.L, <double*>c.V, X, ind, lo, hi, slot)
        else:
            softmax_ffm_predict_rows(c, <const double*>c.L, <const double*>c.V, X, ind, lo,
                                     hi, slot)
    else:
        if train:
            softmax_ffm_train_rows(c, <float*>c.L, <float*>c.V, X, ind, lo, hi, slot)
        else:
            softmax_ffm_predict_rows(c, <const float*>c.L, <const float*>c.V, X, ind, lo,
                                     hi, slot)


cdef inline void softmax_ffm_task(SoftFFM* c, bint train, int64_t lo, int64_t hi,
                                  int slot) noexcept nogil:
    cdef bint x64 = c.types & 4, i64 = c.types & 8
    if not x64 and not i64:
        softmax_ffm_dispatch(c, train, <const float*>c.X, <const int32_t*>c.ind, lo, hi, slot)
    elif x64 and not i64:
        softmax_ffm_dispatch(c, train, <const double*>c.X, <const int32_t*>c.ind, lo, hi, slot)
    elif not x64:
        softmax_ffm_dispatch(c, train, <const float*>c.X, <const int64_t*>c.ind, lo, hi, slot)
    else:
        softmax_ffm_dispatch(c, train, <const double*>c.X, <const int64_t*>c.ind, lo, hi, slot)


cdef void softmax_ffm_predict_task(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    softmax_ffm_task(<SoftFFM*>p, False, lo, hi, slot)


cdef void softmax_ffm_train_task(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    softmax_ffm_task(<SoftFFM*>p, True, lo, hi, slot)


cdef softmax_ffm_common(SoftFFM* c, const data_t[::1] data, const index_t[::1] indices,
                        const int64_t[::1] indptr, const int32_t[::1] field_offsets,
                        const floating[:, ::1] lin, const floating[:, ::1] V,
                        Py_ssize_t n_classes,
                        int kp, Py_ssize_t ks, const int32_t[::1] entry_fields,
                        const int32_t[::1] rec_off):
    """Fill the fields of ``c`` both entry points share; check the shapes
    the kernels rely on (the rest is validated by the caller)."""
    cdef Py_ssize_t n_features = V.shape[0]
    if n_classes < 1 or lin.shape[0] != n_features or lin.shape[1] % n_classes \
            or lin.shape[1] == 0 or field_offsets.shape[0] != n_features \
            or not 1 <= kp <= MAX_FACTORS or ks < kp:
        raise ValueError("inconsistent softmax FFM tables")
    c.types = (sizeof(floating) == 8) + 4 * (sizeof(data_t) == 8) + 8 * (sizeof(index_t) == 8)
    c.X = &data[0] if data.shape[0] > 0 else NULL
    c.ind = &indices[0] if indices.shape[0] > 0 else NULL
    c.indptr = &indptr[0]
    c.F = &field_offsets[0] if field_offsets.shape[0] > 0 else NULL
    c.EF = NULL
    c.RO = NULL
    if entry_fields is not None:
        check_entry_fields(entry_fields, rec_off, data.shape[0])
        c.EF = &entry_fields[0] if entry_fields.shape[0] > 0 else NULL
        c.RO = &rec_off[0]
    c.L = <void*>&lin[0, 0] if n_features > 0 else NULL  # written by training only
    c.V = <void*>&V[0, 0] if n_features > 0 else NULL
    c.n_rows = indptr.shape[0] - 1
    c.lw = lin.shape[1] // n_classes
    c.vstride = V.shape[1]
    c.cstep = ks
    c.kp = kp
    c.n_classes = <int>n_classes


def ffm_softmax_predict(const data_t[::1] data,          # IN  CSR values
                        const index_t[::1] indices,      # IN  CSR column indices
                        const int64_t[::1] indptr,       # IN  CSR row offsets
                        const int32_t[::1] field_offsets,  # IN  per column: q * C * ks
                        const floating[:, ::1] lin,      # IN  (n_features, C * lw)
                        const floating[:, ::1] V,        # IN  (n_features, row width)
                        const double[::1] w0,            # IN  per-class biases (C,)
                        double[:, ::1] out,              # OUT scores (n_rows, C)
                        *, int kp, Py_ssize_t ks, bint normalize, int n_threads,
                        Py_ssize_t max_nnz,
                        const int32_t[::1] entry_fields=None,  # IN  per stored entry: field id
                        const int32_t[::1] rec_off=None):      # IN  per field: q * C * ks
    """Raw per-class scores of the rows of a CSR matrix, rows in parallel
    (identical for any ``n_threads``); ``ks``: the distance between two
    classes' records of a (feature, field).  See the section comment."""
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef int nt = team(n_threads)
    cdef Py_ssize_t width = (max(max_nnz, 1) // 16 + 2) * 16
    cdef SoftFFM c
    softmax_ffm_common(&c, data, indices, indptr, field_offsets, lin, V, w0.shape[0], kp, ks,
                       entry_fields, rec_off)
    if out.shape[0] != n_rows or out.shape[1] != w0.shape[0]:
        raise ValueError("out must have shape (n_rows, n_classes)")
    if n_rows <= 0:
        return
    cdef double[:, ::1] xs_buf = np.empty((nt, width))
    cdef int32_t[:, ::1] fl_buf = np.empty((nt, width), dtype=np.int32)
    cdef Py_ssize_t[:, ::1] off_buf = np.empty((nt, width), dtype=np.intp)
    c.w0 = &w0[0]
    c.out = &out[0, 0]
    c.xs_buf = &xs_buf[0, 0]
    c.fl_buf = &fl_buf[0, 0]
    c.off_buf = &off_buf[0, 0]
    c.width = width
    c.normalize = normalize
    with nogil:
        parallel_for(softmax_ffm_predict_task, &c, n_rows,
                     max(<int64_t>1, pair_chunk(&indptr[0], n_rows, CHUNK_PAIRS_PREDICT)
                         // c.n_classes), nt)


def ffm_softmax_train_epoch(const data_t[::1] data,          # IN  CSR values
                            const index_t[::1] indices,      # IN  CSR column indices
                            const int64_t[::1] indptr,       # IN  CSR row offsets
                            const double[::1] y,             # IN  class index 0 .. C-1
                            const double[::1] sample_weight,  # IN  per-row weights, or empty
                            const int64_t[::1] order,        # IN  rows to visit, in this order
                            const int32_t[::1] field_offsets,  # IN  per column: q * C * ks
                            floating[:, ::1] lin,            # IN/OUT (n_features, C * lw)
                            floating[:, ::1] V,              # IN/OUT factor table
                            double[:, ::1] w0_state,         # IN/OUT (C, 3) [w0, a, b]
                            *, int k, int kp, Py_ssize_t ks, int optimizer,
                            bint fit_intercept, bint normalize,
                            double learning_rate, double l2_w0, double l2_w, double l2_v,
                            double l1, double ftrl_beta, int n_threads, Py_ssize_t max_nnz,
                            const int32_t[::1] entry_fields=None,
                            const int32_t[::1] rec_off=None):
    """One pass of per-sample softmax FFM updates over ``order``; Hogwild
    across threads, exactly sequential with one.  ``y`` must hold integers
    in [0, C) with C = w0_state.shape[0] (validated by the caller).

    Returns (sum of weighted losses before each update, sum of weights,
    number of rows whose scores were not finite).
    """
    cdef Py_ssize_t n = order.shape[0]
    cdef int C = <int>w0_state.shape[0]
    cdef int nt = team(n_threads)
    cdef Py_ssize_t width = (max(max_nnz, 1) // 16 + 2) * 16
    cdef SoftFFM c
    cdef double total_loss = 0.0, total_w = 0.0
    cdef int n_bad
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    softmax_ffm_common(&c, data, indices, indptr, field_offsets, lin, V, C, kp, ks,
                       entry_fields, rec_off)
    if w0_state.shape[1] != 3 or not 1 <= k <= kp:
        raise ValueError("inconsistent softmax FFM tables")
    c.tstride = softmax_thread_stride(C)
    c.sstride = (C // 16 + 1) * 16
    cdef double[:, ::1] thr = np.zeros((nt, c.tstride))
    cdef double[:, ::1] sc_buf = np.zeros((nt, c.sstride))
    cdef double[:, ::1] xs_buf = np.empty((nt, width))
    cdef int32_t[:, ::1] fl_buf = np.empty((nt, width), dtype=np.int32)
    cdef Py_ssize_t[:, ::1] off_buf = np.empty((nt, width), dtype=np.intp)
    softmax_init_states(&thr[0, 0], nt, c.tstride, &w0_state[0, 0], C)
    if n == 0:
        return 0.0, 0.0, 0
    c.y = &y[0]
    c.sw = &sample_weight[0] if sample_weight.shape[0] > 0 else NULL
    c.order = &order[0]
    c.thr = &thr[0, 0]
    c.sc_buf = &sc_buf[0, 0]
    c.xs_buf = &xs_buf[0, 0]
    c.fl_buf = &fl_buf[0, 0]
    c.off_buf = &off_buf[0, 0]
    c.n = n
    c.width = width
    c.k = k
    c.optimizer = optimizer
    c.fit_intercept = fit_intercept
    c.normalize = normalize
    c.lr = learning_rate
    c.l2_w0 = l2_w0
    c.l2_w = l2_w
    c.l2_v = l2_v
    c.l1 = l1
    c.ftrl_beta = ftrl_beta
    with nogil:
        parallel_for(softmax_ffm_train_task, &c, n,
                     max(<int64_t>1, pair_chunk(&indptr[0], n_rows, CHUNK_PAIRS_TRAIN) // C),
                     nt)
        n_bad = softmax_merge(&thr[0, 0], nt, c.tstride, &w0_state[0, 0], C, optimizer,
                              fit_intercept, learning_rate, l2_w0, ftrl_beta,
                              &total_loss, &total_w)
    return total_loss, total_w, n_bad
