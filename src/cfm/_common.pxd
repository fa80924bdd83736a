# Shared declarations and inline helpers for cfm's kernels.
#
# Fused types:
#   floating  -- model parameters (float32 / float64)
#   data_t    -- values of the input matrix (float32 / float64), independent of
#                the parameter dtype so that CSR input is used without a copy
#   index_t   -- CSR column indices (int32 / int64); row offsets are int64
from libc.string cimport memchr, memcpy
from libc.math cimport exp, log, log1p, sqrt, sqrtf, fabs, isfinite
from libc.stdint cimport int32_t, int64_t, uint64_t, uint32_t

ctypedef fused floating:
    float
    double

ctypedef fused data_t:
    float
    double

ctypedef fused index_t:
    int32_t
    int64_t

cdef extern from "cfm_compat.h" nogil:
    int cfm_openmp_enabled()
    int cfm_omp_max_threads()
    int cfm_omp_num_procs()
    void cfm_prefetch_r(const void *p)
    void cfm_prefetch_w(const void *p)
    void cfm_prefetch_l2(const void *p)

# Loss and optimizer codes (cpdef enums, read from Python as cfm._utils.*)
from cfm._utils cimport LOSS_SQUARED, LOSS_LOGISTIC, OPT_SGD, OPT_ADAGRAD, OPT_FTRL
# The kernels' random numbers (src/cfm/_random.pxd)
from cfm._random cimport splitmix64, rand_uniform

# Bound on the margin used in the logistic gradient: sigmoid(-35) ~ 6e-16, so
# clamping changes nothing measurable but keeps exp() finite.
cdef enum:
    MARGIN_CLAMP = 35


cdef inline double loss_value(double pred, double y, int loss) noexcept nogil:
    """Loss of one sample. Logistic expects y in {-1, +1}; computed stably."""
    cdef double z, r
    if loss == LOSS_SQUARED:
        r = pred - y
        return 0.5 * r * r
    z = y * pred
    if z > 0:
        return log1p(exp(-z))
    return -z + log1p(exp(z))


cdef inline double loss_grad(double pred, double y, int loss) noexcept nogil:
    """d loss / d pred."""
    cdef double z
    if loss == LOSS_SQUARED:
        return pred - y
    z = y * pred
    if z > MARGIN_CLAMP:
        z = MARGIN_CLAMP
    elif z < -MARGIN_CLAMP:
        z = -MARGIN_CLAMP
    return -y / (1.0 + exp(z))


# Largest n_factors (the kernels keep per-factor sums in stack arrays).
cdef enum:
    MAX_FACTORS = 256

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



# --- helpers shared by the FM and FFM kernels ----------------------------
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


cdef inline void prefetch_span(const void* p, Py_ssize_t nbytes) noexcept nogil:
    """Prefetch every cache line of [p, p + nbytes)."""
    cdef const char* c = <const char*>p
    cdef Py_ssize_t off
    for off in range(0, nbytes + 63, 64):
        cfm_prefetch_r(c + off)


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


cdef inline double ftrl_weight(double z, double n, double lr, double l1, double l2,
                               double beta) noexcept nogil:
    """FTRL-proximal weight from its z and n state."""
    if fabs(z) <= l1:
        return 0
    if z > 0:
        return (-(z - l1) / ((beta + sqrt(n)) / lr + l2))
    return (-(z + l1) / ((beta + sqrt(n)) / lr + l2))


cdef inline floating fsqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)




cdef inline void init_thread_states(double* thr, int nt, const double* w0_state) noexcept nogil:
    """Every thread starts the epoch from the shared bias state [w0, a, b]."""
    cdef int t_id
    for t_id in range(nt):
        thr[t_id * THR_STRIDE + T_W0] = w0_state[0]
        thr[t_id * THR_STRIDE + T_A] = w0_state[1]
        thr[t_id * THR_STRIDE + T_B] = w0_state[2]


cdef inline int merge_thread_states(const double* thr, int nt, double* w0_state,
                                    int optimizer, bint fit_intercept, double lr,
                                    double l2_w0, double ftrl_beta,
                                    double* total_loss, double* total_w) noexcept nogil:
    """Merge the per-thread bias states and epoch statistics in a fixed order:
    count-weighted mean of w0, summed increments of the accumulators (FTRL's
    w0 follows from the merged z and n).  Exact with one thread.  Returns the
    number of rows whose prediction was not finite."""
    cdef int t_id
    cdef double bad = 0.0, n_done = 0.0, w0_avg = 0.0, a0, b0
    total_loss[0] = 0.0
    total_w[0] = 0.0
    for t_id in range(nt):
        total_loss[0] += thr[t_id * THR_STRIDE + T_LOSS]
        total_w[0] += thr[t_id * THR_STRIDE + T_WSUM]
        bad += thr[t_id * THR_STRIDE + T_BAD]
        n_done += thr[t_id * THR_STRIDE + T_COUNT]
    if nt == 1:
        w0_state[0] = thr[T_W0]
        w0_state[1] = thr[T_A]
        w0_state[2] = thr[T_B]
    elif n_done > 0:
        a0 = w0_state[1]
        b0 = w0_state[2]
        for t_id in range(nt):
            w0_avg += thr[t_id * THR_STRIDE + T_COUNT] * thr[t_id * THR_STRIDE + T_W0]
            w0_state[1] += thr[t_id * THR_STRIDE + T_A] - a0
            w0_state[2] += thr[t_id * THR_STRIDE + T_B] - b0
        if optimizer == OPT_FTRL and fit_intercept:
            w0_state[0] = -w0_state[1] / ((ftrl_beta + sqrt(w0_state[2])) / lr + l2_w0)
        else:
            w0_state[0] = w0_avg / n_done
    return <int>bad


cdef inline void linear_step(floating* w, floating* st, double gx, int optimizer, double lr,
                             double l2_w, double l1, double ftrl_beta) noexcept nogil:
    """One step on a linear weight w with loss gradient gx, and its optimizer
    state st (adagrad: [G]; ftrl: [z, n]; sgd: unused).  L2 as in the
    gradient for sgd/adagrad, inside the proximal step for ftrl (with L1)."""
    cdef double wd = w[0], n_new, sigma, z
    cdef floating gwf, accf
    if optimizer == OPT_SGD:
        w[0] = <floating>(wd - lr * (gx + l2_w * wd))
    elif optimizer == OPT_ADAGRAD:
        # in the parameter precision (single-precision sqrt/div for float32)
        gwf = <floating>(gx + l2_w * wd)
        accf = st[0] + gwf * gwf
        st[0] = accf
        w[0] = w[0] - <floating>lr * gwf / fsqrt(accf)
    else:
        n_new = <double>st[1] + gx * gx
        sigma = (sqrt(n_new) - sqrt(<double>st[1])) / lr
        z = <double>st[0] + gx - sigma * wd
        st[0] = <floating>z
        st[1] = <floating>n_new
        w[0] = <floating>ftrl_weight(z, n_new, lr, l1, l2_w, ftrl_beta)


cdef inline double sample_grad(double* t, double pred, double yi, double sw,
                               int loss) noexcept nogil:
    """Record one sample's weighted loss in its thread's slots and return the
    weighted gradient d loss / d pred (pred must be finite)."""
    t[T_LOSS] += sw * loss_value(pred, yi, loss)
    t[T_WSUM] += sw
    t[T_COUNT] += 1.0
    return sw * loss_grad(pred, yi, loss)


cdef inline Py_ssize_t line_split(const char* buf, Py_ssize_t n, Py_ssize_t i, Py_ssize_t n_pieces,
                                  Py_ssize_t prev) noexcept nogil:
    """End (exclusive) of piece i when buf[:n] is cut into n_pieces of about
    equal size at line starts; ``prev`` is the end of piece i-1 (0 for i=0).
    The last piece ends at n."""
    cdef Py_ssize_t pos
    cdef const char* nl
    if i == n_pieces - 1:
        return n
    pos = (n * (i + 1)) // n_pieces
    if pos < prev:
        pos = prev
    nl = <const char*>memchr(buf + pos, 10, n - pos) if pos < n else NULL
    return n if nl == NULL else (nl - buf) + 1


cdef inline bytearray join_buffers(char** bufs, const Py_ssize_t[::1] sizes, int nt):
    """The nt text buffers bufs[t][:sizes[t]] (filled by threads), in order,
    as one bytearray; the caller frees them."""
    cdef Py_ssize_t total = 0
    cdef int t
    cdef char* q
    for t in range(nt):
        total += sizes[t]
    out = bytearray(total)
    q = out
    for t in range(nt):
        memcpy(q, bufs[t], sizes[t])
        q += sizes[t]
    return out


cdef inline int64_t chunk_rows(const int64_t* indptr, Py_ssize_t n_rows,
                               int64_t target) noexcept nogil:
    """Rows per chunk of parallel work (cfm._pool.parallel_for) so that a
    chunk holds about ``target`` non-zeros of an average row (a row counts
    as at least one)."""
    cdef int64_t units
    if n_rows <= 0:
        return 1
    units = indptr[n_rows] - indptr[0] + n_rows
    return max(<int64_t>1, min(<int64_t>n_rows, target * <int64_t>n_rows // units))


# --- multiclass (softmax) kernels of _fm.pyx and _ffm.pyx -------------------
# Per-thread slots (``thr`` rows of SM_THR_BASE + 3 C values, padded):
cdef enum:
    SM_LOSS = 0
    SM_WSUM = 1
    SM_COUNT = 2
    SM_BAD = 3
    SM_THR_BASE = 8     # then [w0, a, b] of class 0, of class 1, ...


cdef inline Py_ssize_t softmax_thread_stride(int C) noexcept nogil:
    """Doubles per thread in a softmax epoch's per-thread array (the SM_*
    slots, then C bias states [w0, a, b]), padded to a multiple of 128 bytes."""
    return ((SM_THR_BASE + 3 * C) // 16 + 1) * 16


cdef inline void softmax_init_states(double* thr, int nt, Py_ssize_t tstride,
                                     const double* w0_state, int C) noexcept nogil:
    """init_thread_states (above) for C class biases: every thread starts the
    epoch from the shared states w0_state (C, 3)."""
    cdef int t_id, cl, j
    for t_id in range(nt):
        for cl in range(C):
            for j in range(3):
                thr[t_id * tstride + SM_THR_BASE + 3 * cl + j] = w0_state[3 * cl + j]


cdef inline int softmax_merge(const double* thr, int nt, Py_ssize_t tstride,
                              double* w0_state, int C, int optimizer, bint fit_intercept,
                              double lr, double l2_w0, double ftrl_beta, double* total_loss,
                              double* total_w) noexcept nogil:
    """merge_thread_states (above) for C class biases: fixed
    order, count-weighted mean of each w0, summed accumulator increments;
    exact with one thread.  Returns the rows whose scores were not finite."""
    cdef int t_id, cl
    cdef double bad = 0.0, n_done = 0.0, w0_avg, a0, b0
    cdef const double* tb
    cdef double* ws
    total_loss[0] = 0.0
    total_w[0] = 0.0
    for t_id in range(nt):
        total_loss[0] += thr[t_id * tstride + SM_LOSS]
        total_w[0] += thr[t_id * tstride + SM_WSUM]
        bad += thr[t_id * tstride + SM_BAD]
        n_done += thr[t_id * tstride + SM_COUNT]
    for cl in range(C):
        ws = w0_state + 3 * cl
        if nt == 1:
            tb = thr + SM_THR_BASE + 3 * cl
            ws[0] = tb[0]
            ws[1] = tb[1]
            ws[2] = tb[2]
        elif n_done > 0:
            a0 = ws[1]
            b0 = ws[2]
            w0_avg = 0.0
            for t_id in range(nt):
                tb = thr + t_id * tstride + SM_THR_BASE + 3 * cl
                w0_avg += thr[t_id * tstride + SM_COUNT] * tb[0]
                ws[1] += tb[1] - a0
                ws[2] += tb[2] - b0
            if optimizer == OPT_FTRL and fit_intercept:
                ws[0] = -ws[1] / ((ftrl_beta + sqrt(ws[2])) / lr + l2_w0)
            else:
                ws[0] = w0_avg / n_done
    return <int>bad


cdef inline bint softmax_sample(double* t, double* sc, int C, int yi,
                                double wi) noexcept nogil:
    """One sample of a softmax epoch: False (and the row counted in SM_BAD)
    when a score is not finite; else its weighted loss -log softmax(sc)[yi]
    is recorded in the thread's slots ``t`` and ``sc`` is overwritten by the
    weighted gradient d loss / d score_c = wi (softmax(sc)_c - [c == yi])."""
    cdef int cl
    cdef double m, z, lse, g
    for cl in range(C):
        if not isfinite(sc[cl]):
            t[SM_BAD] += 1.0
            return False
    # log-sum-exp from the largest score: exp() never overflows
    m = sc[0]
    for cl in range(1, C):
        if sc[cl] > m:
            m = sc[cl]
    z = 0.0
    for cl in range(C):
        z += exp(sc[cl] - m)
    lse = m + log(z)
    t[SM_LOSS] += wi * (lse - sc[yi])
    t[SM_WSUM] += wi
    t[SM_COUNT] += 1.0
    for cl in range(C):
        g = exp(sc[cl] - lse)
        if cl == yi:
            g -= 1.0
        sc[cl] = g * wi
    return True
