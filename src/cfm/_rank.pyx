"""Ranking kernels: BPR epochs of an FM over [user features | item features],
and the top-k selection of ``FMRanker.recommend``.

Model: an FM on the concatenated row x = [u | i] (user features u, columns
0 .. p_u - 1 of the table; item features i, columns p_u .. p_u + p_i - 1)::

    s(u, i) = w0 + lin(u) + pair(u) + lin(i) + pair(i) + <P_u, Q_i>
    lin(x)  = sum_a w_a x_a,    pair(x) = 1/2 sum_f [(sum_a v_af x_a)^2 - sum_a v_af^2 x_a^2]
    P_u     = sum_{a in u} v_a u_a,    Q_i = sum_{a in i} v_a i_a

BPR (Rendle et al. 2009) on a positive pair (u, i) and a sampled negative j::

    d    = s(u, i) - s(u, j) = b_i - b_j + <P_u, Q_i - Q_j>,  b_i = lin(i) + pair(i)
    loss = -log sigmoid(d) = log(1 + exp(-d)),   g = d loss / d d = -1 / (1 + exp(d))
    d d / d v_af = u_a (Q_i,f - Q_j,f)                    a a user feature
                 = i_a (P_u,f + Q_i,f - v_af i_a)         a a feature of item i
                 = -j_a (P_u,f + Q_j,f - v_af j_a)        a a feature of item j
    d d / d w_a  = i_a  (item i),  -j_a  (item j)

WARP (Weston et al. 2011, as LightFM): negatives j are drawn until one has
d < 1 (at most ``max_sampled``); with n draws, loss = L (1 - d), g = -L,
L = log(floor((n_items - 1) / n)); no violating negative: no step.

w0, lin(u) and pair(u) cancel in d: BPR does not train w0 or the user-side
linear weights (they stay 0), only every factor and the item-side weights.
L2 (``l2_w``, ``l2_v``) applies to the features present in a sample, once per
occurrence.

Design
------
* Parameters live in cfm's FM table (cfm._state.fm): one record per feature
  [w, v_0 .. v_{k-1}, G_w, G_v] (G_* only for AdaGrad, row-wise on the
  factors as cfm's FM kernels do), so a ranker's parameters are an FM model
  that ``predict`` scores with the FM kernel.
* Per sample: P_u, Q_i, Q_j and the gradient factor g are computed from the
  parameters before the step; the updates are then applied in the order user
  features, item i's features, item j's features, each reading its current
  v_a for the self-interaction and L2 terms (the NumPy reference in
  tests/reference_rank.py does the same).
* Negatives: item j is drawn from the sample's own splitmix64 stream, seeded
  from (epoch seed, position in the epoch order), uniformly or from a
  cumulative distribution (popularity-weighted); a draw equal to i or to
  another positive of u (binary search in u's sorted positives) is redrawn,
  at most MAX_DRAWS times, after which the sample is skipped (counted).
  Draws therefore do not depend on the threads.
* Threads: cfm's worker pool (cfm._pool.parallel_for, not OpenMP regions:
  see src/cfm/cfm_workers.h) over chunks of samples; Hogwild (lock-free,
  racy) updates of the shared table.  With one thread the epoch is exactly
  sequential: ``n_jobs=1`` under a seed is bit-for-bit reproducible.
* Top-k (``recommend``): one nogil kernel, parallel over blocks of 4 users:
  the block's scores against every item, b + P Q^T, are a register-blocked
  dense product (src/cfm/cfm_rank_block.h: AVX2 + FMA chosen at run time,
  portable C otherwise) into a per-thread buffer; then each row skips its
  excluded items and keeps the k best in a bounded min-heap, scanning for
  the next score above the worst kept one 8 floats at a time (AVX2).
  Rows in parallel, identical results for any number of threads; ties go
  to the lower item position (as a stable argsort of -score).
* Inputs are validated in Python (cfm/ranking.py) before any kernel runs.
"""
import numpy as np

from libc.math cimport exp, floor, log, log1p, sqrt, isfinite, INFINITY
from libc.stdint cimport int32_t, int64_t, uint64_t, INT64_MAX

from cfm._common cimport floating, MAX_FACTORS
from cfm._pool cimport parallel_for, team
from cfm._random cimport splitmix64, rand_uniform

cdef enum:
    MAX_DRAWS = 64        # negative draws per sample before it is skipped
    CHUNK_SAMPLES = 256   # samples per chunk of a training epoch
    CHUNK_SCORES = 32768  # scores per chunk of top-k rows
    THR = 8               # per-thread statistics: loss, samples, bad, skipped


cdef struct BPR:
    void* tab
    Py_ssize_t stride
    int k
    bint adagrad, f64, warp
    int max_sampled
    double lr, l2_w, l2_v
    # positive pairs and each user's sorted positives (negative verification)
    const int64_t* order
    const int64_t* pair_user
    const int64_t* pair_item
    const int64_t* pos_ptr
    const int64_t* pos_item
    # feature rows (CSR), item columns offset by n_user_cols
    const int64_t* u_ptr
    const int32_t* u_ind
    const double* u_val
    const int64_t* i_ptr
    const int32_t* i_ind
    const double* i_val
    int64_t n_user_cols, n_items
    const double* cdf     # NULL: uniform negatives
    uint64_t seed
    double* thr           # (nt, THR)
    double* scratch       # (nt, 3 * k) P_u, Q_i, Q_j


cdef inline bint has_item(const int64_t* items, int64_t lo, int64_t hi, int64_t j) noexcept nogil:
    """j in the sorted items[lo:hi]."""
    cdef int64_t mid
    while lo < hi:
        mid = lo + (hi - lo) // 2
        if items[mid] < j:
            lo = mid + 1
        elif items[mid] > j:
            hi = mid
        else:
            return True
    return False


cdef inline int64_t draw_item(BPR* c, uint64_t* st) noexcept nogil:
    cdef double r = rand_uniform(st)
    cdef int64_t lo = 0, hi, mid
    if c.cdf == NULL:
        lo = <int64_t>(r * c.n_items)
        return lo if lo < c.n_items else c.n_items - 1
    hi = c.n_items - 1
    while lo < hi:   # first j with cdf[j] > r
        mid = lo + (hi - lo) // 2
        if c.cdf[mid] > r:
            hi = mid
        else:
            lo = mid + 1
    return lo


cdef inline double sum_sq(const floating* a, int k) noexcept nogil:
    """sum_f a_f^2 in double, four partial sums (in a fixed order): a serial
    sum of k terms would wait on the add latency at every term."""
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, v0, v1, v2, v3
    cdef int f = 0
    while f + 4 <= k:
        v0 = a[f]
        v1 = a[f + 1]
        v2 = a[f + 2]
        v3 = a[f + 3]
        s0 += v0 * v0
        s1 += v1 * v1
        s2 += v2 * v2
        s3 += v3 * v3
        f += 4
    while f < k:
        v0 = a[f]
        s0 += v0 * v0
        f += 1
    return (s0 + s1) + (s2 + s3)


cdef inline double dot(const double* a, const double* b, int k) noexcept nogil:
    """sum_f a_f b_f, four partial sums (see sum_sq)."""
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
    cdef int f = 0
    while f + 4 <= k:
        s0 += a[f] * b[f]
        s1 += a[f + 1] * b[f + 1]
        s2 += a[f + 2] * b[f + 2]
        s3 += a[f + 3] * b[f + 3]
        f += 4
    while f < k:
        s0 += a[f] * b[f]
        f += 1
    return (s0 + s1) + (s2 + s3)


cdef inline double side(BPR* c, const floating* tab, const int64_t* ptr, const int32_t* ind,
                        const double* val, int64_t row, int64_t off, bint with_bias,
                        double* q) noexcept nogil:
    """q = sum_a v_a x_a over the row's features (table rows ind + off);
    returns lin + pair of the row when ``with_bias`` (else 0)."""
    cdef int64_t jj
    cdef int f, k = c.k
    cdef const floating* rec
    cdef double x, lin = 0.0, sq = 0.0
    for f in range(k):
        q[f] = 0.0
    for jj in range(ptr[row], ptr[row + 1]):
        rec = tab + (ind[jj] + off) * c.stride
        x = val[jj]
        for f in range(k):
            q[f] += rec[1 + f] * x
        if with_bias:
            lin += rec[0] * x
            sq += sum_sq(rec + 1, k) * x * x
    if not with_bias:
        return 0.0
    return lin + 0.5 * (dot(q, q, k) - sq)


cdef inline void step_row(BPR* c, floating* rec, double gw, bint linear, const double* gv_base,
                          const double* other, double x, double sign, double g) noexcept nogil:
    """Update one feature's record: w by gw (when ``linear``), v_f by
    sign * g * x * (gv_base_f [+ other_f - v_f x]) + l2_v v_f."""
    cdef int f, k = c.k
    cdef double v, gsq = 0.0, acc, step
    cdef double gb[MAX_FACTORS]
    if linear:
        gw += c.l2_w * rec[0]
        if c.adagrad:
            acc = rec[1 + k] + gw * gw
            rec[1 + k] = <floating>acc
            rec[0] = <floating>(rec[0] - c.lr * gw / sqrt(acc))
        else:
            rec[0] = <floating>(rec[0] - c.lr * gw)
    for f in range(k):
        v = rec[1 + f]
        if other != NULL:
            gb[f] = sign * g * x * (gv_base[f] + other[f] - v * x) + c.l2_v * v
        else:
            gb[f] = sign * g * x * gv_base[f] + c.l2_v * v
    if c.adagrad:
        if k == 0:
            return
        gsq = dot(gb, gb, k)
        acc = rec[2 + k] + gsq / k
        rec[2 + k] = <floating>acc
        step = c.lr / sqrt(<double>rec[2 + k])
    else:
        step = c.lr
    for f in range(k):
        rec[1 + f] = <floating>(rec[1 + f] - step * gb[f])


cdef inline int64_t draw_negative(BPR* c, int64_t u, int64_t i, uint64_t* st) noexcept nogil:
    """A negative item for (u, i): not i, not a positive of u; -1 after
    MAX_DRAWS failed draws."""
    cdef int tries
    cdef int64_t j
    for tries in range(MAX_DRAWS):
        j = draw_item(c, st)
        if j != i and not has_item(c.pos_item, c.pos_ptr[u], c.pos_ptr[u + 1], j):
            return j
    return -1


cdef inline void bpr_rows(BPR* c, floating* tab, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef int64_t p, s, u, i, j, jj, off = c.n_user_cols
    cdef int f, k = c.k, trial
    cdef uint64_t st
    cdef double bi, bj = 0.0, d = 0.0, g, x, weight
    cdef bint found
    cdef double* t = c.thr + slot * THR
    cdef double* P = c.scratch + slot * 3 * k
    cdef double* Qi = P + k
    cdef double* Qj = P + 2 * k
    cdef double diff[MAX_FACTORS]
    for p in range(lo, hi):
        s = c.order[p]
        u = c.pair_user[s]
        i = c.pair_item[s]
        st = c.seed ^ (<uint64_t>p * <uint64_t>0xD1B54A32D192ED03ULL)
        splitmix64(&st)
        side(c, tab, c.u_ptr, c.u_ind, c.u_val, u, 0, False, P)
        bi = side(c, tab, c.i_ptr, c.i_ind, c.i_val, i, off, True, Qi)
        found = False
        # BPR: one negative.  WARP: negatives until one scores within the
        # margin 1 of i (at most max_sampled), weighted by the rank estimate
        # log(floor((n_items - 1) / trials)) (Weston et al. 2011, as LightFM).
        for trial in range(1, (c.max_sampled if c.warp else 1) + 1):
            j = draw_negative(c, u, i, &st)
            if j < 0:
                break
            bj = side(c, tab, c.i_ptr, c.i_ind, c.i_val, j, off, True, Qj)
            for f in range(k):
                diff[f] = Qi[f] - Qj[f]
            d = bi - bj + dot(P, diff, k)
            if not c.warp or d < 1.0 or not isfinite(d):
                found = True
                break
        if not found:
            if j < 0:
                t[3] += 1.0     # no negative could be drawn: skipped
            else:
                t[1] += 1.0     # WARP: no violating negative, loss 0, no step
            continue
        if not isfinite(d):
            t[2] += 1.0
            continue
        if c.warp:
            weight = log(max(1.0, floor((c.n_items - 1) / <double>trial)))
            t[0] += weight * (1.0 - d)
            g = -weight
        elif d > 35.0:
            t[0] += exp(-d)
            g = -exp(-d)
        elif d < -35.0:
            t[0] += -d
            g = -1.0
        else:
            t[0] += log1p(exp(-d))
            g = -1.0 / (1.0 + exp(d))
        t[1] += 1.0
        for jj in range(c.u_ptr[u], c.u_ptr[u + 1]):
            step_row(c, tab + c.u_ind[jj] * c.stride, 0.0, False, diff, NULL,
                     c.u_val[jj], 1.0, g)
        for jj in range(c.i_ptr[i], c.i_ptr[i + 1]):
            x = c.i_val[jj]
            step_row(c, tab + (c.i_ind[jj] + off) * c.stride, g * x, True, P, Qi, x, 1.0, g)
        for jj in range(c.i_ptr[j], c.i_ptr[j + 1]):
            x = c.i_val[jj]
            step_row(c, tab + (c.i_ind[jj] + off) * c.stride, -g * x, True, P, Qj, x, -1.0, g)


cdef void bpr_task(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef BPR* c = <BPR*>p
    if c.f64:
        bpr_rows(c, <double*>c.tab, lo, hi, slot)
    else:
        bpr_rows(c, <float*>c.tab, lo, hi, slot)


def bpr_epoch(floating[:, ::1] table,         # IN/OUT FM table [w, v(k), (G_w, G_v)]
              const int64_t[::1] order,       # IN  pairs to visit, in this order
              const int64_t[::1] pair_user,   # IN  user row of each positive pair
              const int64_t[::1] pair_item,   # IN  item row of each positive pair
              const int64_t[::1] pos_ptr,     # IN  (n_users + 1) offsets into pos_item
              const int64_t[::1] pos_item,    # IN  each user's positive items, sorted
              const int64_t[::1] u_ptr, const int32_t[::1] u_ind, const double[::1] u_val,
              const int64_t[::1] i_ptr, const int32_t[::1] i_ind, const double[::1] i_val,
              const double[::1] cdf,          # IN  negative-sampling cdf, or empty: uniform
              *, int n_factors, int64_t n_user_cols, bint adagrad, double learning_rate,
              double l2_w, double l2_v, uint64_t seed, int n_threads, bint warp=False,
              int max_sampled=10):
    """One BPR (or WARP) pass over ``order``; Hogwild across threads.

    Returns (sum of losses before each step, samples counted, samples with
    a non-finite score, samples skipped for want of a negative).
    """
    cdef int k = n_factors
    cdef int nt = team(n_threads)
    cdef int64_t n = order.shape[0]
    cdef double[:, ::1] thr = np.zeros((nt, THR))
    cdef double[:, ::1] scratch = np.zeros((nt, 3 * k + 1))
    cdef BPR c
    cdef int t_id, f
    cdef double tot[4]
    if n == 0:
        return 0.0, 0, 0, 0
    c.tab = &table[0, 0]
    c.stride = table.shape[1]
    c.k = k
    c.adagrad = adagrad
    c.warp = warp
    c.max_sampled = max(1, max_sampled)
    c.f64 = sizeof(floating) == 8
    c.lr = learning_rate
    c.l2_w = l2_w
    c.l2_v = l2_v
    c.order = &order[0]
    c.pair_user = &pair_user[0]
    c.pair_item = &pair_item[0]
    c.pos_ptr = &pos_ptr[0]
    c.pos_item = &pos_item[0] if pos_item.shape[0] > 0 else NULL
    c.u_ptr = &u_ptr[0]
    c.u_ind = &u_ind[0] if u_ind.shape[0] > 0 else NULL
    c.u_val = &u_val[0] if u_val.shape[0] > 0 else NULL
    c.i_ptr = &i_ptr[0]
    c.i_ind = &i_ind[0] if i_ind.shape[0] > 0 else NULL
    c.i_val = &i_val[0] if i_val.shape[0] > 0 else NULL
    c.n_user_cols = n_user_cols
    c.n_items = i_ptr.shape[0] - 1
    c.cdf = &cdf[0] if cdf.shape[0] > 0 else NULL
    c.seed = seed
    c.thr = &thr[0, 0]
    c.scratch = &scratch[0, 0]
    with nogil:
        parallel_for(bpr_task, &c, n, CHUNK_SAMPLES, nt)
    for f in range(4):
        tot[f] = 0.0
    for t_id in range(nt):   # fixed order
        for f in range(4):
            tot[f] += thr[t_id, f]
    return tot[0], int(tot[1]), int(tot[2]), int(tot[3])


# ---------------------------------------------------------------- top-k
cdef extern from "cfm_rank_block.h" nogil:
    int CFM_RANK_UB
    int cfm_rank_have_avx2()
    void cfm_rank_block_f32(const float* P, const float* QT, const float* bias, float* buf,
                            int64_t n, int k, int avx2)
    void cfm_rank_block_f64(const double* P, const double* QT, const double* bias,
                            double* buf, int64_t n, int k, int avx2)
    int64_t cfm_rank_next_f32(const float* row, int64_t j, int64_t n, float thr, int avx2)
    int64_t cfm_rank_next_f64(const double* row, int64_t j, int64_t n, double thr, int avx2)


cdef struct TopK:
    bint f64
    int avx2
    const double* row_add  # (n_rows,) user block, added to the returned scores
    const int64_t* ex_ptr  # (n_rows + 1) or NULL
    const int64_t* ex_pos  # excluded candidate positions
    int64_t n_cand
    int k
    int64_t* out_idx       # (n_rows, k)
    double* out_score      # (n_rows, k)


cdef inline bint worse(double a, int64_t ia, double b, int64_t ib) noexcept nogil:
    """(a, ia) ranks after (b, ib): lower score, or equal score and a higher position."""
    return a < b or (a == b and ia > ib)


cdef inline void sift_down(double* hs, int64_t* hi, int n, int pos) noexcept nogil:
    """Min-heap (root = the worst kept) sift of position ``pos``."""
    cdef int child
    cdef double s
    cdef int64_t ix
    while True:
        child = 2 * pos + 1
        if child >= n:
            return
        if child + 1 < n and worse(hs[child + 1], hi[child + 1], hs[child], hi[child]):
            child += 1
        if not worse(hs[child], hi[child], hs[pos], hi[pos]):
            return
        s = hs[pos]; hs[pos] = hs[child]; hs[child] = s
        ix = hi[pos]; hi[pos] = hi[child]; hi[child] = ix
        pos = child


cdef inline void topk_row(TopK* c, floating* row, int64_t r) noexcept nogil:
    """The k best of ``row`` (scores of every candidate; modified: excluded
    positions are set to -inf), best first."""
    cdef int64_t j, e, n = c.n_cand
    cdef int k = c.k, q
    cdef double* hs = c.out_score + r * k
    cdef int64_t* hx = c.out_idx + r * k
    cdef double thr, ts
    cdef int64_t tx
    if c.ex_ptr != NULL:
        for e in range(c.ex_ptr[r], c.ex_ptr[r + 1]):
            row[c.ex_pos[e]] = -INFINITY
    # Min-heap of the k best so far, started with k sentinels (-inf, past
    # the last position) that rank after everything.  Positions come in
    # increasing order, so a candidate enters only when strictly above the
    # worst kept score (a tie has a higher position: it ranks after).  NaN
    # and -inf (excluded) never enter.
    for q in range(k):
        hs[q] = -INFINITY
        hx[q] = INT64_MAX
    thr = -INFINITY
    j = 0
    while True:
        # thr is -inf or a kept score, a value of ``row``: exact in its dtype
        if floating is float:
            j = cfm_rank_next_f32(row, j, n, <float>thr, c.avx2)
        else:
            j = cfm_rank_next_f64(row, j, n, thr, c.avx2)
        if j >= n:
            break
        hs[0] = <double>row[j]
        hx[0] = j
        sift_down(hs, hx, k, 0)
        thr = hs[0]
        j += 1
    # pop the worst to the end: best first
    for q in range(k - 1, 0, -1):
        ts = hs[0]; hs[0] = hs[q]; hs[q] = ts
        tx = hx[0]; hx[0] = hx[q]; hx[q] = tx
        sift_down(hs, hx, q, 0)
    for q in range(k):
        if hx[q] == INT64_MAX:
            hx[q] = -1
            hs[q] = -INFINITY
        else:
            hs[q] += c.row_add[r]



USERS_PER_BLOCK = CFM_RANK_UB
cdef int use_avx2 = cfm_rank_have_avx2()


def _set_block_path(str path):
    """Tests: "avx2" (when the CPU has it) or "portable" product."""
    global use_avx2
    use_avx2 = cfm_rank_have_avx2() if path == "avx2" else 0
    return "avx2" if use_avx2 else "portable"


cdef struct Recommend:
    TopK t
    const void* P          # (n_rows rounded up to UB, k) user blocks
    const void* QT         # (k, n_cand) item factors, factor-major
    const void* bias       # (n_cand,) item block, in the parameter dtype
    void* buf              # (nt, UB, n_cand) scores of a block of users
    int kf, avx2


cdef inline void recommend_rows(Recommend* c, const floating* P, const floating* QT,
                                const floating* bias, floating* buf, int64_t lo, int64_t hi,
                                int slot) noexcept nogil:
    """Rows lo..hi (lo a multiple of UB): the scores of UB rows at a time
    against every candidate, then each row's top-k."""
    cdef int64_t n = c.t.n_cand, r0 = lo
    cdef int b, nb, k = c.kf, ub = CFM_RANK_UB
    buf = buf + slot * ub * n
    while r0 < hi:
        nb = <int>min(<int64_t>ub, hi - r0)
        if floating is float:
            cfm_rank_block_f32(P + r0 * k, QT, bias, buf, n, k, c.avx2)
        else:
            cfm_rank_block_f64(P + r0 * k, QT, bias, buf, n, k, c.avx2)
        for b in range(nb):
            topk_row(&c.t, buf + b * n, r0 + b)
        r0 += ub


cdef void recommend_task(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef Recommend* c = <Recommend*>p
    if c.t.f64:
        recommend_rows(c, <const double*>c.P, <const double*>c.QT, <const double*>c.bias,
                       <double*>c.buf, lo, hi, slot)
    else:
        recommend_rows(c, <const float*>c.P, <const float*>c.QT, <const float*>c.bias,
                       <float*>c.buf, lo, hi, slot)


def recommend(const floating[:, ::1] P,     # IN  (n_rows rounded up to UB, k) user blocks
              const floating[:, ::1] QT,    # IN  (k, n_cand) item factors, transposed
              const floating[::1] bias,     # IN  (n_cand,) item block
              const double[::1] row_add,    # IN  (n_rows,) user block
              const int64_t[::1] ex_ptr,    # IN  (n_rows + 1) or empty: nothing excluded
              const int64_t[::1] ex_pos,    # IN  excluded positions, in [0, n_cand)
              int64_t[:, ::1] out_idx,      # OUT (n_rows, k) positions, best first; -1 pads
              double[:, ::1] out_score,     # OUT (n_rows, k) scores; -inf pads
              int n_threads):
    """Top-k of ``row_add + bias + P Q^T`` per row (excluded positions
    skipped), best first, ties to the lower position.  The scores of UB rows
    against every candidate are computed in the parameter precision into a
    per-thread buffer (cfm_rank_block.h), then selected; rows in parallel,
    results independent of ``n_threads``.  Non-finite (NaN, -inf) scores
    are never returned."""
    cdef int64_t n_rows = out_idx.shape[0], n_cand = QT.shape[1]
    cdef int nt = team(n_threads), ub = CFM_RANK_UB
    cdef Recommend c
    if n_rows == 0 or out_idx.shape[1] == 0:
        return
    if P.shape[0] < (n_rows + ub - 1) // ub * ub or QT.shape[0] != P.shape[1] \
            or out_score.shape[0] != n_rows or out_score.shape[1] != out_idx.shape[1] \
            or row_add.shape[0] != n_rows or bias.shape[0] != n_cand \
            or (ex_ptr.shape[0] not in (0, n_rows + 1)):
        raise ValueError("recommend: inconsistent shapes")
    dt = np.float64 if floating is double else np.float32
    buf = np.zeros((nt, ub, max(n_cand, 1)), dtype=dt)
    cdef floating[:, :, ::1] bv = buf
    c.P = &P[0, 0] if P.shape[1] > 0 else NULL
    c.QT = &QT[0, 0] if QT.shape[0] > 0 and n_cand > 0 else NULL
    c.bias = &bias[0] if n_cand > 0 else NULL
    c.buf = &bv[0, 0, 0]
    c.kf = P.shape[1]
    c.avx2 = use_avx2
    c.t.f64 = floating is double
    c.t.avx2 = use_avx2
    c.t.row_add = &row_add[0]
    c.t.ex_ptr = &ex_ptr[0] if ex_ptr.shape[0] > 0 else NULL
    c.t.ex_pos = &ex_pos[0] if ex_pos.shape[0] > 0 else NULL
    c.t.n_cand = n_cand
    c.t.k = out_idx.shape[1]
    c.t.out_idx = &out_idx[0, 0]
    c.t.out_score = &out_score[0, 0]
    with nogil:
        parallel_for(recommend_task, &c, n_rows,
                     max(<int64_t>ub, CHUNK_SCORES // max(n_cand, 1) // ub * ub), nt)


cdef struct Blocks:
    BPR b                  # only tab, stride and k are used
    const int64_t* rows
    const int64_t* ptr
    const int32_t* ind
    const double* val
    int64_t off
    double* c_out
    void* E_out
    double* scratch        # (nt, k)


cdef inline void blocks_rows(Blocks* c, const floating* tab, floating* E, int64_t lo,
                             int64_t hi, int slot) noexcept nogil:
    cdef int64_t r
    cdef int f, k = c.b.k
    cdef double* q = c.scratch + slot * k
    for r in range(lo, hi):
        c.c_out[r] = side(&c.b, tab, c.ptr, c.ind, c.val, c.rows[r], c.off, True, q)
        for f in range(k):
            E[r * k + f] = <floating>q[f]


cdef void blocks_task(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef Blocks* c = <Blocks*>p
    if c.b.f64:
        blocks_rows(c, <const double*>c.b.tab, <double*>c.E_out, lo, hi, slot)
    else:
        blocks_rows(c, <const float*>c.b.tab, <float*>c.E_out, lo, hi, slot)


def side_blocks(const floating[:, ::1] table,   # IN  FM table [w, v(k), ...]
                const int64_t[::1] rows,        # IN  feature rows to use, in [0, n_rows)
                const int64_t[::1] ptr, const int32_t[::1] ind, const double[::1] val,
                int64_t col_offset,             # IN  table row of column 0 of these features
                double[::1] c_out,              # OUT (len(rows),) lin + pair of each row
                floating[:, ::1] E_out,         # OUT (>= len(rows), k) summed factors
                int n_threads):
    """The user or item block of feature rows: c = lin + pair and E = sum
    v_a x_a of each row (FM terms over that side's columns only); rows in
    parallel, identical results for any ``n_threads``."""
    cdef int64_t n = rows.shape[0]
    cdef int k = E_out.shape[1]
    cdef int nt = team(n_threads)
    cdef Blocks c
    if n == 0:
        return
    if c_out.shape[0] < n or E_out.shape[0] < n or table.shape[1] < 1 + k:
        raise ValueError("side_blocks: inconsistent shapes")
    scratch = np.zeros((nt, max(k, 1)))
    cdef double[:, ::1] sv = scratch
    c.b.tab = <void*>&table[0, 0]
    c.b.stride = table.shape[1]
    c.b.k = k
    c.b.f64 = floating is double
    c.rows = &rows[0]
    c.ptr = &ptr[0]
    c.ind = &ind[0] if ind.shape[0] > 0 else NULL
    c.val = &val[0] if val.shape[0] > 0 else NULL
    c.off = col_offset
    c.c_out = &c_out[0]
    c.E_out = &E_out[0, 0] if k > 0 else NULL
    c.scratch = &sv[0, 0]
    with nogil:
        parallel_for(blocks_task, &c, n, 1024, nt)


def _negative_draws(const int64_t[::1] order, const int64_t[::1] pair_user,
                    const int64_t[::1] pair_item, const int64_t[::1] pos_ptr,
                    const int64_t[::1] pos_item, const double[::1] cdf, int64_t n_items,
                    uint64_t seed, int n_draws):
    """Tests: the first ``n_draws`` negatives ``bpr_epoch`` draws for each
    position of ``order`` (-1 once no negative could be drawn)."""
    cdef BPR c
    cdef int64_t p, s, u, i
    cdef int t
    cdef uint64_t st
    out = np.full((order.shape[0], n_draws), -1, dtype=np.int64)
    cdef int64_t[:, ::1] o = out
    c.pos_ptr = &pos_ptr[0]
    c.pos_item = &pos_item[0] if pos_item.shape[0] > 0 else NULL
    c.cdf = &cdf[0] if cdf.shape[0] > 0 else NULL
    c.n_items = n_items
    for p in range(order.shape[0]):
        s = order[p]
        u = pair_user[s]
        i = pair_item[s]
        st = seed ^ (<uint64_t>p * <uint64_t>0xD1B54A32D192ED03ULL)
        splitmix64(&st)
        for t in range(n_draws):
            o[p, t] = draw_negative(&c, u, i, &st)
            if o[p, t] < 0:
                break
    return out
