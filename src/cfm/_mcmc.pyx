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
  scaling of ``normalize`` already applied); row passes use a CSR copy of the
  same values.  The working parameters are float64, (n_features, 1 + k).
* ``cache`` is (1 + k, n_rows): e, then q_f for each factor, so the pass of
  factor f touches two arrays of n_rows doubles (L2-resident for 100k rows).
* Every REFRESH_EVERY sweeps (cfm/_bayes.py) predictions, e and q are
  recomputed from X (libFM does it after every sweep, for stability); between
  those, the sweep keeps them exact up to rounding, and the pass after a
  sweep only draws the probit latent targets (pred = e + z).
* Parallelism inside a sweep: features are cut into "exclusive blocks" --
  contiguous runs of columns no two of which share a row (e.g. all users of a
  one-hot user block).  The conditionals of the features of such a block do
  not depend on each other and their updates touch disjoint rows.  A large
  block is swept in three phases -- partial sums over N_SEG fixed row
  segments, draws (features split between threads), residual / q updates
  per row segment -- so each thread works on its own rows of e and q; on one
  thread the same arithmetic runs feature by feature (fused), so results are
  bit-identical for any number of threads.
* Threads do not meet at OpenMP barriers: a job is a list of phases whose
  items any thread claims (the caller from the front, helpers from the
  back); a thread waits only for items already claimed, so a helper that a
  busy machine does not schedule costs nothing (see cfm_pool.h).
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

from libc.math cimport sqrt, log, exp, cos, erfc, isfinite, fabs
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport malloc, calloc, free

from cfm._common cimport floating, data_t, index_t, row_scale, chunk_rows
from cfm._random cimport splitmix64, rand_uniform, std_normal
from cfm._utils cimport TASK_REGRESSION, TASK_PROBIT
from cfm._pool cimport parallel_for, team

cdef double INV_SQRT2 = 0.7071067811865476
cdef double LOG_SQRT_2PI = 0.9189385332046727

cdef enum:
    CHUNK = 4096
    KIND_W0 = 0
    KIND_W = 1
    KIND_V0 = 2
    LATENT = 1048576

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


# std_normal: Box-Muller's cosine half (src/cfm/_random.pxd)


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


# ------------------------------------------------------------ parallel jobs
# A job is a sequence of phases, each a range of work items; any thread
# claims the next item from a shared counter, and starts it once every item of
# the earlier phases is done.  The calling thread works too and never waits
# for a helper to arrive, so a helper that the OS does not schedule (busy
# machine) costs nothing -- unlike an OpenMP barrier, which would stall the
# sweep for a time slice at each of its 2 (k + 1) phase boundaries.  Items
# write disjoint data, so the result does not depend on who runs what.
cdef extern from "cfm_pool.h" nogil:
    int64_t cfm_atomic_fetch_add(int64_t* p, int64_t v)
    int64_t cfm_atomic_load(const int64_t* p)
    bint cfm_atomic_cas(int64_t* p, int64_t expected, int64_t desired)
    void cfm_cpu_relax()
    void cfm_yield()
    int cfm_spawn_detached(void* (*fn)(void*) noexcept nogil, void* arg)

cdef enum:
    JOB_SWEEP = 0
    JOB_REFRESH = 1
    SPIN_BEFORE_YIELD = 4000
    # phase types of a sweep job
    PH_SERIAL = 0     # items = feature chunks, each drawn in full (one thread)
    PH_SUMS = 1       # exclusive block, items = row segments: partial sums
    PH_DRAW = 2       # exclusive block, items = feature chunks: combine and draw
    PH_UPDATE = 3     # exclusive block, items = row segments: residual / q updates
    PH_FUSED = 4      # exclusive block on one thread: the same arithmetic as
                      # PH_SUMS + PH_DRAW + PH_UPDATE, feature by feature
    # Row segments of the exclusive-block phases.  Fixed (not the thread
    # count) so that the partial sums, and so the results, never depend on
    # n_threads.  The calling thread claims segments from the front and the
    # helpers from the back, so each keeps "its" rows of e and q in its own
    # cache from phase to phase.
    N_SEG = 2


cdef struct Job:
    int64_t next          # next item to claim (atomic)
    int64_t done          # items finished (atomic)
    int64_t refs          # threads holding the job (atomic); the last frees it
    int64_t n_items
    int64_t n_phases
    int kind
    int64_t* phase_start  # (n_phases + 1) first item of each phase
    int64_t* phase_f      # sweep: -1 = linear weights, f = factor f
    int64_t* phase_lo     # sweep: feature range of the phase
    int64_t* phase_hi
    int64_t* phase_chunk  # sweep: features per item
    int64_t* phase_type   # sweep: PH_*
    int64_t* claim        # per phase: packed (hi << 32 | lo) of unclaimed items
    const int64_t* colseg # (n_features, N_SEG + 1) offsets of the row segments in a column
    double* spart         # (n_features, N_SEG, 2) partial sums
    double* delta         # (n_features,) change of the drawn parameter
    double* oldv          # (n_features,) its value before the draw
    # sweep
    const int64_t* col_ptr
    const int32_t* row_idx
    const double* col_val
    const double* col_wval   # sample weight * col_val (== col_val without weights)
    const int32_t* group
    int64_t n_groups
    double alpha
    const double* mu_w
    const double* lam_w
    const double* mu_v    # (k, n_groups)
    const double* lam_v
    bint do_sample
    uint64_t seed
    uint64_t sweep
    # both
    double* cache         # (1 + k, n_rows): e, q_0 .. q_{k-1}
    int64_t n_rows
    double* P             # (n_features, ps): [w, v_0 .. v_{k-1}, ...]
    int64_t ps
    int k
    # refresh
    const double* X
    const int32_t* ind
    const int64_t* indptr
    double w0
    const double* y
    int task
    double* part          # per-item loss sums
    double* z             # probit latent targets (n_rows)
    const double* sw      # sample weights (n_rows) or NULL
    bint full             # recompute predictions from X (else from e + z)


cdef Job* job_new(int64_t n_phases) noexcept nogil:
    cdef Job* job = <Job*>calloc(1, sizeof(Job))
    if job == NULL:
        return NULL
    job.refs = 1
    job.n_phases = n_phases
    job.phase_start = <int64_t*>calloc(n_phases + 1, sizeof(int64_t))
    job.phase_f = <int64_t*>calloc(n_phases + 1, sizeof(int64_t))
    job.phase_lo = <int64_t*>calloc(n_phases + 1, sizeof(int64_t))
    job.phase_hi = <int64_t*>calloc(n_phases + 1, sizeof(int64_t))
    job.phase_chunk = <int64_t*>calloc(n_phases + 1, sizeof(int64_t))
    job.phase_type = <int64_t*>calloc(n_phases + 1, sizeof(int64_t))
    job.claim = <int64_t*>calloc(n_phases + 1, sizeof(int64_t))
    if (job.phase_start == NULL or job.phase_f == NULL or job.phase_lo == NULL
            or job.phase_hi == NULL or job.phase_chunk == NULL or job.phase_type == NULL
            or job.claim == NULL):
        job_free(job)
        return NULL
    return job


cdef void job_free(Job* job) noexcept nogil:
    free(job.phase_start)
    free(job.phase_f)
    free(job.phase_lo)
    free(job.phase_hi)
    free(job.phase_chunk)
    free(job.phase_type)
    free(job.claim)
    free(job)


cdef void job_release(Job* job) noexcept nogil:
    if cfm_atomic_fetch_add(&job.refs, -1) == 1:
        job_free(job)


cdef inline double job_draw(Job* job, int64_t f, int64_t g, int64_t j, double s1, double s2,
                           double old) noexcept nogil:
    """The new value of coordinate f (-1: the linear weight) of column j in
    prior group g, from the sufficient statistics s1, s2 (posterior_draw)."""
    if f < 0:
        return posterior_draw(s1, s2, old, job.alpha, job.mu_w[g], job.lam_w[g],
                              job.do_sample, job.seed, job.sweep, KIND_W, j)
    return posterior_draw(s1, s2, old, job.alpha, job.mu_v[f * job.n_groups + g],
                          job.lam_v[f * job.n_groups + g], job.do_sample, job.seed,
                          job.sweep, KIND_V0 + f, j)


cdef void run_item(Job* job, int64_t item, int64_t p) noexcept nogil:
    cdef int64_t local = item - job.phase_start[p]
    cdef int64_t lo, hi, j, f, g, i, i_end, t, q0
    cdef int64_t typ = job.phase_type[p]
    cdef double acc, s1, s2, x, h, d, old, new, xw, hw, r0
    cdef double* e = job.cache
    cdef double* q
    cdef double* sp
    cdef const int64_t* cs
    if job.kind == JOB_REFRESH:
        i_end = min((item + 1) * CHUNK, job.n_rows)
        acc = 0.0
        for i in range(item * CHUNK, i_end):
            acc += refresh_row(job, i)
        job.part[item] = acc
        return
    f = job.phase_f[p]
    q = job.cache + (1 + f) * job.n_rows
    if typ == PH_SERIAL or typ == PH_DRAW or typ == PH_FUSED:
        lo = job.phase_lo[p] + local * job.phase_chunk[p]
        hi = min(job.phase_hi[p], lo + job.phase_chunk[p])
    else:
        lo = job.phase_lo[p]
        hi = job.phase_hi[p]
    if typ == PH_SERIAL:
        if f < 0:
            for j in range(lo, hi):
                g = job.group[j]
                draw_w(j, job.col_ptr, job.row_idx, job.col_val, job.col_wval, e, job.P, job.ps,
                       job.alpha, job.mu_w[g], job.lam_w[g], job.do_sample, job.seed,
                       job.sweep)
        else:
            for j in range(lo, hi):
                g = job.group[j]
                draw_v(j, <int>f, job.col_ptr, job.row_idx, job.col_val, job.col_wval, e, q,
                       job.P, job.ps,
                       job.alpha, job.mu_v[f * job.n_groups + g],
                       job.lam_v[f * job.n_groups + g], job.do_sample, job.seed, job.sweep)
    elif typ == PH_FUSED:
        for j in range(lo, hi):
            fused_draw(job, j, f, q)
    elif typ == PH_SUMS:
        for j in range(lo, hi):
            cs = job.colseg + j * (N_SEG + 1) + local
            s1 = 0.0
            s2 = 0.0
            if f < 0:
                for t in range(cs[0], cs[1]):
                    xw = job.col_wval[t]
                    s1 += xw * e[job.row_idx[t]]
                    s2 += xw * job.col_val[t]
            else:
                old = job.P[j * job.ps + 1 + f]
                for t in range(cs[0], cs[1]):
                    x = job.col_val[t]
                    i = job.row_idx[t]
                    r0 = q[i] - x * old
                    h = x * r0
                    hw = job.col_wval[t] * r0
                    s1 += hw * e[i]
                    s2 += hw * h
            sp = job.spart + (j * N_SEG + local) * 2
            sp[0] = s1
            sp[1] = s2
    elif typ == PH_DRAW:
        for j in range(lo, hi):
            s1 = 0.0
            s2 = 0.0
            sp = job.spart + j * N_SEG * 2
            for t in range(N_SEG):
                s1 += sp[2 * t]
                s2 += sp[2 * t + 1]
            g = job.group[j]
            q0 = j * job.ps + 1 + f      # f = -1: the linear weight
            old = job.P[q0]
            new = job_draw(job, f, g, j, s1, s2, old)
            if not isfinite(new):
                new = old
            job.P[q0] = new
            job.oldv[j] = old
            job.delta[j] = new - old
    else:  # PH_UPDATE
        for j in range(lo, hi):
            d = job.delta[j]
            if d == 0.0:
                continue
            cs = job.colseg + j * (N_SEG + 1) + local
            if f < 0:
                for t in range(cs[0], cs[1]):
                    e[job.row_idx[t]] += job.col_val[t] * d
            else:
                old = job.oldv[j]
                for t in range(cs[0], cs[1]):
                    x = job.col_val[t]
                    i = job.row_idx[t]
                    h = x * (q[i] - x * old)
                    q[i] += x * d
                    e[i] += h * d


cdef inline void fused_draw(Job* job, int64_t j, int64_t f, double* q) noexcept nogil:
    """One parameter of an exclusive block: per-segment partial sums combined
    in segment order, draw, update -- bit-identical to the phased path."""
    cdef const int64_t* cs = job.colseg + j * (N_SEG + 1)
    cdef double* e = job.cache
    cdef double s1 = 0.0, s2 = 0.0, p1, p2, x, h, old, new, d, xw, hw, r0
    cdef int64_t s, t, i, g = job.group[j]
    cdef int64_t q0 = j * job.ps + 1 + f
    old = job.P[q0]
    for s in range(N_SEG):
        p1 = 0.0
        p2 = 0.0
        if f < 0:
            for t in range(cs[s], cs[s + 1]):
                xw = job.col_wval[t]
                p1 += xw * e[job.row_idx[t]]
                p2 += xw * job.col_val[t]
        else:
            for t in range(cs[s], cs[s + 1]):
                x = job.col_val[t]
                i = job.row_idx[t]
                r0 = q[i] - x * old
                h = x * r0
                hw = job.col_wval[t] * r0
                p1 += hw * e[i]
                p2 += hw * h
        s1 += p1
        s2 += p2
    new = job_draw(job, f, g, j, s1, s2, old)
    if not isfinite(new):
        return
    job.P[q0] = new
    d = new - old
    if d == 0.0:
        return
    if f < 0:
        for t in range(cs[0], cs[N_SEG]):
            e[job.row_idx[t]] += job.col_val[t] * d
    else:
        for t in range(cs[0], cs[N_SEG]):
            x = job.col_val[t]
            i = job.row_idx[t]
            h = x * (q[i] - x * old)
            q[i] += x * d
            e[i] += h * d


cdef inline int64_t claim_item(Job* job, int64_t p, bint from_back) noexcept nogil:
    """Claim an unclaimed item of phase p (the lowest, or the highest when
    ``from_back``); -1 when none is left."""
    cdef int64_t old, lo, hi
    while True:
        old = cfm_atomic_load(&job.claim[p])
        lo = old & <int64_t>0xFFFFFFFF
        hi = old >> 32
        if lo >= hi:
            return -1
        if from_back:
            if cfm_atomic_cas(&job.claim[p], old, ((hi - 1) << 32) | lo):
                return job.phase_start[p] + hi - 1
        elif cfm_atomic_cas(&job.claim[p], old, (hi << 32) | (lo + 1)):
            return job.phase_start[p] + lo


cdef void job_work(Job* job, bint from_back) noexcept nogil:
    """Go through the phases in order, running claimed items of each once
    every item of the earlier phases is done."""
    cdef int64_t i, p, spins
    for p in range(job.n_phases):
        while True:
            i = claim_item(job, p, from_back)
            if i < 0:
                break
            spins = 0
            while cfm_atomic_load(&job.done) < job.phase_start[p]:
                spins += 1
                if spins < SPIN_BEFORE_YIELD:
                    cfm_cpu_relax()
                else:
                    cfm_yield()
            run_item(job, i, p)
            cfm_atomic_fetch_add(&job.done, 1)


cdef void* helper_main(void* arg) noexcept nogil:
    cdef Job* job = <Job*>arg
    job_work(job, True)
    job_release(job)
    return NULL


cdef void job_run(Job* job, int n_threads) noexcept nogil:
    """Run every item with up to n_threads threads (this one included), then
    release the caller's reference."""
    cdef int t
    cdef int64_t spins = 0, p
    job.phase_start[job.n_phases] = job.n_items
    for p in range(job.n_phases):
        job.claim[p] = (job.phase_start[p + 1] - job.phase_start[p]) << 32
    for t in range(n_threads - 1):
        if job.n_items <= 1:
            break
        cfm_atomic_fetch_add(&job.refs, 1)
        if cfm_spawn_detached(helper_main, job) != 0:
            cfm_atomic_fetch_add(&job.refs, -1)
            break
    job_work(job, False)
    while cfm_atomic_load(&job.done) < job.n_items:
        spins += 1
        if spins < SPIN_BEFORE_YIELD:
            cfm_cpu_relax()
        else:
            cfm_yield()
    job_release(job)


cdef inline double posterior_draw(double s1, double s2, double old, double alpha, double mu,
                                  double lam, bint do_sample, uint64_t seed, uint64_t sweep,
                                  uint64_t kind, int64_t j) noexcept nogil:
    """Draw (or mean) of a parameter from its Gaussian conditional, given
    s1 = sum h e and s2 = sum h^2 over its rows (e including its current
    value old); 0 when the conditional is improper."""
    cdef double prec = lam + alpha * s2, mean, new
    cdef uint64_t st
    if not (prec > 0.0) or not isfinite(prec):
        return 0.0
    mean = (alpha * (old * s2 - s1) + lam * mu) / prec
    new = mean
    if do_sample:
        st = stream_key(seed, sweep, kind, <uint64_t>j)
        new = mean + std_normal(&st) / sqrt(prec)
    return new


# ------------------------------------------------------------ one sweep
cdef inline void draw_w(int64_t j, const int64_t* col_ptr, const int32_t* row_idx,
                        const double* col_val, const double* col_wval, double* e, double* P,
                        int64_t ps,
                        double alpha, double mu, double lam,
                        bint do_sample, uint64_t seed, uint64_t sweep) noexcept nogil:
    cdef int64_t p
    cdef double x, s1 = 0.0, s2 = 0.0, prec, mean, new, old, d
    cdef uint64_t st
    old = P[j * ps]
    for p in range(col_ptr[j], col_ptr[j + 1]):
        s1 += col_wval[p] * e[row_idx[p]]
        s2 += col_wval[p] * col_val[p]
    new = posterior_draw(s1, s2, old, alpha, mu, lam, do_sample, seed, sweep, KIND_W, j)
    if not isfinite(new):
        return
    P[j * ps] = new
    d = new - old
    if d != 0.0:
        for p in range(col_ptr[j], col_ptr[j + 1]):
            e[row_idx[p]] += col_val[p] * d


cdef inline void draw_v(int64_t j, int f, const int64_t* col_ptr, const int32_t* row_idx,
                        const double* col_val, const double* col_wval, double* e, double* q,
                        double* P, int64_t ps,
                        double alpha, double mu, double lam,
                        bint do_sample, uint64_t seed, uint64_t sweep) noexcept nogil:
    cdef int64_t p, r
    cdef double x, h, hw, r0, s1 = 0.0, s2 = 0.0, prec, mean, new, old, d
    cdef uint64_t st
    old = P[j * ps + 1 + f]
    for p in range(col_ptr[j], col_ptr[j + 1]):
        x = col_val[p]
        r = row_idx[p]
        r0 = q[r] - x * old
        h = x * r0
        hw = col_wval[p] * r0
        s1 += hw * e[r]
        s2 += hw * h
    new = posterior_draw(s1, s2, old, alpha, mu, lam, do_sample, seed, sweep, KIND_V0 + f, j)
    if not isfinite(new):
        return
    P[j * ps + 1 + f] = new
    d = new - old
    if d != 0.0:
        for p in range(col_ptr[j], col_ptr[j + 1]):
            x = col_val[p]
            r = row_idx[p]
            h = x * (q[r] - x * old)
            q[r] += x * d
            e[r] += h * d


cdef int64_t add_phases(Job* job, int64_t n_ph, int64_t f, const int64_t* block_ptr,
                        int64_t n_blocks, const int64_t* colp, int64_t min_block_nnz,
                        int64_t chunk, bint phased, bint count_only) noexcept nogil:
    """Append the phases of one parameter column (f = -1: w): per large
    exclusive block three phases (sums, draws, updates) when ``phased``
    (several threads), else one fused phase with the same arithmetic;
    consecutive other blocks merged into one sequential phase.  Which blocks
    are "large" depends on the data only, so the results never depend on the
    thread count.  Returns the new phase count."""
    cdef int64_t b, lo, hi, run_lo = -1
    for b in range(n_blocks):
        lo = block_ptr[b]
        hi = block_ptr[b + 1]
        if hi - lo > 1 and colp[hi] - colp[lo] >= min_block_nnz:
            if run_lo >= 0:
                if not count_only:
                    set_phase(job, n_ph, PH_SERIAL, f, run_lo, lo, lo - run_lo, 1)
                n_ph += 1
                run_lo = -1
            if not phased:
                if not count_only:
                    set_phase(job, n_ph, PH_FUSED, f, lo, hi, hi - lo, 1)
                n_ph += 1
                continue
            if not count_only:
                set_phase(job, n_ph, PH_SUMS, f, lo, hi, 1, N_SEG)
                set_phase(job, n_ph + 1, PH_DRAW, f, lo, hi, chunk, (hi - lo + chunk - 1) // chunk)
                set_phase(job, n_ph + 2, PH_UPDATE, f, lo, hi, 1, N_SEG)
            n_ph += 3
        elif run_lo < 0:
            run_lo = lo
    if run_lo >= 0:
        if not count_only:
            set_phase(job, n_ph, PH_SERIAL, f, run_lo, block_ptr[n_blocks],
                      block_ptr[n_blocks] - run_lo, 1)
        n_ph += 1
    return n_ph


cdef inline void set_phase(Job* job, int64_t p, int64_t typ, int64_t f, int64_t lo, int64_t hi,
                           int64_t chunk, int64_t n_items) noexcept nogil:
    job.phase_type[p] = typ
    job.phase_f[p] = f
    job.phase_lo[p] = lo
    job.phase_hi[p] = hi
    job.phase_chunk[p] = chunk
    job.phase_start[p] = job.n_items
    job.n_items += n_items


N_SEG_PY = N_SEG


def column_segments(const int64_t[::1] col_ptr, const int32_t[::1] row_idx,
                    const int64_t[::1] indptr):
    """(n_features, N_SEG + 1) offsets of N_SEG row segments (about equal
    numbers of non-zeros) inside each CSC column (row indices sorted)."""
    cdef int64_t n_rows = indptr.shape[0] - 1
    cdef int64_t n_features = col_ptr.shape[0] - 1
    cdef int64_t nnz = indptr[n_rows] if n_rows > 0 else 0
    out = np.empty((max(n_features, 0), N_SEG + 1), dtype=np.int64)
    cdef int64_t[:, ::1] o = out
    cdef int64_t[N_SEG + 1] bound
    cdef int64_t s, r = 0, j, t
    for s in range(N_SEG + 1):   # first row of each segment
        while r < n_rows and indptr[r] * N_SEG < s * nnz:
            r += 1
        bound[s] = r
    bound[N_SEG] = n_rows
    with nogil:
        for j in range(n_features):
            t = col_ptr[j]
            for s in range(N_SEG):
                while t < col_ptr[j + 1] and row_idx[t] < bound[s]:
                    t += 1
                o[j, s] = t
            o[j, N_SEG] = col_ptr[j + 1]
    return out


def sweep(const int64_t[::1] col_ptr,       # IN  CSC column offsets (n_features + 1)
          const int32_t[::1] row_idx,       # IN  CSC row indices
          const double[::1] col_val,        # IN  CSC values (row scaling applied)
          const double[::1] col_wval,       # IN  col_val * sample weight of the row
                                            #     (pass col_val itself without weights)
          const double[::1] sw,             # IN  sample weights (n_rows) or empty
          const int64_t[::1] block_ptr,     # IN  exclusive blocks (n_blocks + 1)
          const int64_t[:, ::1] colseg,     # IN  column_segments(...)
          const int32_t[::1] group,         # IN  prior group of each feature
          double[:, ::1] cache,             # IN/OUT (1 + k, n_rows): e, q_0 .. q_{k-1}
          double[:, ::1] P,                 # IN/OUT (n_features, >= 1 + k): [w, v_0..]
          int k,
          double[::1] w0,                   # IN/OUT (1,) bias
          double alpha,                     # noise precision (1 for probit)
          double reg0, double mu0,          # prior of w0: N(mu0, 1 / reg0)
          const double[::1] mu_w, const double[::1] lam_w,        # (n_groups,)
          const double[:, ::1] mu_v, const double[:, ::1] lam_v,  # (k, n_groups)
          bint fit_w0, bint fit_linear, bint do_sample,
          uint64_t seed, uint64_t sweep_idx, int n_threads, int64_t min_block_nnz,
          int64_t chunk=8):
    """One sweep over w0, w and V (draws if ``do_sample`` else conditional
    means, i.e. one ALS step), keeping the residuals and q caches exact."""
    cdef int64_t n_rows = cache.shape[1]
    cdef int64_t n_features = P.shape[0]
    cdef int64_t n_blocks = block_ptr.shape[0] - 1
    cdef int64_t n_groups = mu_w.shape[0]
    cdef int64_t i, n_ph, f
    cdef int nt = team(n_threads)
    cdef double s, prec, mean, new, d, n_eff
    cdef uint64_t st
    cdef double* e = &cache[0, 0]
    cdef bint has_sw = sw.shape[0] > 0
    cdef Job* job
    if n_rows <= 0 or n_features <= 0:
        return
    if (cache.shape[0] < 1 + k or P.shape[1] < 1 + k or col_ptr.shape[0] != n_features + 1
            or group.shape[0] != n_features or block_ptr[n_blocks] != n_features
            or lam_w.shape[0] != n_groups or mu_v.shape[0] < k or lam_v.shape[0] < k
            or (k > 0 and (mu_v.shape[1] != n_groups or lam_v.shape[1] != n_groups))
            or chunk < 1 or colseg.shape[0] != n_features or colseg.shape[1] != N_SEG + 1
            or col_wval.shape[0] != col_val.shape[0] or (has_sw and sw.shape[0] != n_rows)):
        raise ValueError("inconsistent arguments")
    with nogil:
        # ---- w0 (all rows; fixed-order sum)
        if fit_w0:
            s = 0.0
            n_eff = 0.0
            if has_sw:
                for i in range(n_rows):
                    s += sw[i] * e[i]
                    n_eff += sw[i]
            else:
                for i in range(n_rows):
                    s += e[i]
                n_eff = <double>n_rows
            prec = reg0 + alpha * n_eff
            mean = (alpha * (w0[0] * n_eff - s) + reg0 * mu0) / prec
            new = mean
            if do_sample:
                st = stream_key(seed, sweep_idx, KIND_W0, 0)
                new = mean + std_normal(&st) / sqrt(prec)
            if isfinite(new):
                d = new - w0[0]
                w0[0] = new
                for i in range(n_rows):
                    e[i] += d
        # ---- phases: w, then each factor column
        n_ph = 0
        if fit_linear:
            n_ph = add_phases(NULL, n_ph, -1, &block_ptr[0], n_blocks, &col_ptr[0],
                              min_block_nnz, chunk, nt > 1, True)
        for f in range(k):
            n_ph = add_phases(NULL, n_ph, f, &block_ptr[0], n_blocks, &col_ptr[0],
                              min_block_nnz, chunk, nt > 1, True)
        job = job_new(n_ph) if n_ph > 0 else NULL
    if n_ph == 0:
        return
    if job == NULL:
        raise MemoryError()
    work = np.zeros(n_features * (2 * N_SEG + 2))
    cdef double[::1] wk = work
    job.spart = &wk[0]
    job.delta = &wk[2 * N_SEG * n_features]
    job.oldv = &wk[(2 * N_SEG + 1) * n_features]
    job.colseg = &colseg[0, 0]
    with nogil:
        job.kind = JOB_SWEEP
        n_ph = 0
        if fit_linear:
            n_ph = add_phases(job, n_ph, -1, &block_ptr[0], n_blocks, &col_ptr[0],
                              min_block_nnz, chunk, nt > 1, False)
        for f in range(k):
            n_ph = add_phases(job, n_ph, f, &block_ptr[0], n_blocks, &col_ptr[0],
                              min_block_nnz, chunk, nt > 1, False)
        job.col_ptr = &col_ptr[0]
        job.row_idx = &row_idx[0] if row_idx.shape[0] > 0 else NULL
        job.col_val = &col_val[0] if col_val.shape[0] > 0 else NULL
        job.col_wval = &col_wval[0] if col_wval.shape[0] > 0 else NULL
        job.group = &group[0]
        job.n_groups = n_groups
        job.alpha = alpha
        job.mu_w = &mu_w[0]
        job.lam_w = &lam_w[0]
        job.mu_v = &mu_v[0, 0] if k > 0 else NULL
        job.lam_v = &lam_v[0, 0] if k > 0 else NULL
        job.do_sample = do_sample
        job.seed = seed
        job.sweep = sweep_idx
        job.cache = e
        job.n_rows = n_rows
        job.P = &P[0, 0]
        job.ps = P.shape[1]
        job.k = k
        job_run(job, nt)


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


cdef inline double refresh_row(Job* job, int64_t i) noexcept nogil:
    """Row i's prediction -- recomputed with q when ``full``, else e + target
    (the sweep keeps e exact) --; set e (drawing the probit latent target);
    return the row's loss."""
    cdef double pred, t, z, loss, yi = job.y[i]
    cdef uint64_t st
    cdef int64_t start, end
    if job.full:
        start = job.indptr[i]
        end = job.indptr[i + 1]
        pred = row_pred(job.X, job.ind, start, end, <const double*>job.P, job.ps, job.k, 1.0,
                        job.w0, job.cache + job.n_rows + i, job.n_rows)
    elif job.task == TASK_REGRESSION:
        t = job.cache[i]
        return 0.5 * t * t * (job.sw[i] if job.sw != NULL else 1.0)
    else:
        pred = job.cache[i] + job.z[i]
    if job.task == TASK_REGRESSION:
        t = pred - yi
        job.cache[i] = t
        return 0.5 * t * t * (job.sw[i] if job.sw != NULL else 1.0)
    loss = -log_cdf(pred if yi > 0 else -pred) * (job.sw[i] if job.sw != NULL else 1.0)
    if job.do_sample:
        st = stream_key(job.seed, job.sweep, LATENT, <uint64_t>i)
        if yi > 0:
            z = pred + tail_normal(-pred, &st)
        else:
            z = pred - tail_normal(pred, &st)
    elif yi > 0:
        z = pred + mills(-pred)
    else:
        z = pred - mills(pred)
    job.cache[i] = pred - z
    job.z[i] = z
    return loss


def refresh(const double[::1] data,         # IN  CSR values, row scaling applied
            const int32_t[::1] indices,     # IN  CSR column indices
            const int64_t[::1] indptr,      # IN  CSR row offsets
            const double[:, ::1] P, int k, double w0,
            const double[::1] y,          # targets (regression) or +-1 labels (probit)
            int task, bint do_sample, uint64_t seed, uint64_t sweep_idx,
            double[:, ::1] cache,         # IN/OUT (1 + k, n_rows): e, q_0 .. q_{k-1}
            double[::1] z,                # IN/OUT probit latent targets (n_rows; else unused)
            bint full,
            const double[::1] sw,         # sample weights (n_rows) or empty: weight the loss
            int n_threads):
    """Set e = pred - target for every row.  ``full``: recompute every
    prediction (and q) from X, as libFM does after each sweep; otherwise the
    predictions are taken as e + target (exact after a sweep, up to rounding).
    For probit the target is a new latent draw from N(pred, 1) truncated to
    the label's side (or its expectation when not ``do_sample``), stored in z.
    Returns the training loss sum (half squared error, or probit negative
    log-likelihood) of the current parameters, chunk-wise in fixed order."""
    cdef int64_t n_rows = indptr.shape[0] - 1
    cdef int64_t n_chunks = (n_rows + CHUNK - 1) // CHUNK
    cdef int64_t c
    cdef double acc
    cdef double[::1] part = np.zeros(max(n_chunks, 1))
    cdef Job* job
    if n_rows <= 0:
        return 0.0
    if cache.shape[0] < 1 + k or cache.shape[1] != n_rows or y.shape[0] != n_rows \
            or P.shape[1] < 1 + k or (task != TASK_REGRESSION and z.shape[0] != n_rows) \
            or sw.shape[0] not in (0, n_rows):
        raise ValueError("inconsistent arguments")
    job = job_new(1)
    if job == NULL:
        raise MemoryError()
    job.kind = JOB_REFRESH
    job.n_items = n_chunks
    job.X = &data[0] if data.shape[0] > 0 else NULL
    job.ind = &indices[0] if indices.shape[0] > 0 else NULL
    job.indptr = &indptr[0]
    job.P = <double*>&P[0, 0]
    job.ps = P.shape[1]
    job.k = k
    job.w0 = w0
    job.y = &y[0]
    job.task = task
    job.do_sample = do_sample
    job.seed = seed
    job.sweep = sweep_idx
    job.cache = &cache[0, 0]
    job.n_rows = n_rows
    job.part = &part[0]
    job.z = &z[0] if z.shape[0] > 0 else NULL
    job.sw = &sw[0] if sw.shape[0] > 0 else NULL
    job.full = full
    with nogil:
        job_run(job, team(n_threads))
    acc = 0.0
    for c in range(n_chunks):
        acc += part[c]
    return acc


cdef struct PredictSum:
    const void* X
    const void* ind
    const int64_t* indptr
    const void* S
    const double* w0s
    double* out_p
    double* out_q
    Py_ssize_t n_s, ps, sstride
    double lo, hi
    int k, task, types
    bint normalize


cdef inline void predict_sum_rows(PredictSum* c, const floating* base, const data_t* X,
                                  const index_t* ind, int64_t r0, int64_t r1) noexcept nogil:
    cdef Py_ssize_t i, s
    cdef double pred, scale, sp, sq
    cdef const int64_t* indptr = c.indptr
    for i in range(r0, r1):
        scale = row_scale(X, indptr[i], indptr[i + 1], c.normalize)
        sp = 0.0
        sq = 0.0
        for s in range(c.n_s):
            pred = row_pred(X, ind, indptr[i], indptr[i + 1], base + s * c.sstride, c.ps, c.k,
                            scale, c.w0s[s], NULL, 0)
            if c.task == TASK_REGRESSION:
                if c.lo <= c.hi:
                    if pred < c.lo:
                        pred = c.lo
                    elif pred > c.hi:
                        pred = c.hi
                sp = sp + pred
            else:
                sp = sp + upper_tail(-pred)
                sq = sq + upper_tail(pred)
        c.out_p[i] += sp
        if c.task != TASK_REGRESSION:
            c.out_q[i] += sq


cdef void predict_sum_task(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef PredictSum* c = <PredictSum*>p
    if c.types == 0:
        predict_sum_rows(c, <const float*>c.S, <const float*>c.X, <const int32_t*>c.ind, lo, hi)
    elif c.types == 1:
        predict_sum_rows(c, <const double*>c.S, <const float*>c.X, <const int32_t*>c.ind, lo, hi)
    elif c.types == 2:
        predict_sum_rows(c, <const float*>c.S, <const double*>c.X, <const int32_t*>c.ind, lo, hi)
    elif c.types == 3:
        predict_sum_rows(c, <const double*>c.S, <const double*>c.X, <const int32_t*>c.ind, lo, hi)
    elif c.types == 4:
        predict_sum_rows(c, <const float*>c.S, <const float*>c.X, <const int64_t*>c.ind, lo, hi)
    elif c.types == 5:
        predict_sum_rows(c, <const double*>c.S, <const float*>c.X, <const int64_t*>c.ind, lo, hi)
    elif c.types == 6:
        predict_sum_rows(c, <const float*>c.S, <const double*>c.X, <const int64_t*>c.ind, lo, hi)
    else:
        predict_sum_rows(c, <const double*>c.S, <const double*>c.X, <const int64_t*>c.ind, lo, hi)


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
    Phi(-pred) to out_q.  Rows in parallel (cfm._pool), samples in order."""
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef Py_ssize_t n_s = S.shape[0]
    cdef PredictSum c
    if n_rows <= 0 or n_s <= 0:
        return
    if k > 256 or S.shape[2] < 1 + k:
        raise ValueError("bad sample table shape")
    if out_p.shape[0] < n_rows or (task != TASK_REGRESSION and out_q.shape[0] < n_rows):
        raise ValueError("output arrays shorter than the rows")
    c.X = &data[0] if data.shape[0] > 0 else NULL
    c.ind = &indices[0] if indices.shape[0] > 0 else NULL
    c.indptr = &indptr[0]
    c.S = &S[0, 0, 0]
    c.w0s = &w0s[0]
    c.out_p = &out_p[0]
    c.out_q = &out_q[0] if out_q.shape[0] > 0 else NULL
    c.n_s = n_s
    c.ps = S.shape[2]
    c.sstride = S.shape[1] * S.shape[2]
    c.lo = lo
    c.hi = hi
    c.k = k
    c.task = task
    c.normalize = normalize
    c.types = (sizeof(floating) == 8) + 2 * (sizeof(data_t) == 8) + 4 * (sizeof(index_t) == 8)
    with nogil:
        # a row costs n_samples passes over its non-zeros
        parallel_for(predict_sum_task, &c, n_rows,
                     max(<int64_t>1, chunk_rows(&indptr[0], n_rows, 8192) // n_s),
                     team(n_threads))
