"""DeepFM kernels (Guo et al., IJCAI 2017): scoring, one mini-batch training
epoch, and the gradients of one batch (for tests).

Model, for a row x with non-zeros x_j (column j, field f(j)):

    e_f    = sum_{j: f(j) = f} x_j v_j                  (per-field pooling, k each)
    h_0    = [e_0, ..., e_{F-1}]                         (F * k)
    h_l    = drop(relu(h_{l-1} W_l + b_l))               (l = 1..L, hidden_layer_sizes)
    y(x)   = w0 + sum_j w_j x_j
              + 1/2 sum_c [ (sum_j v_jc x_j)^2 - sum_j v_jc^2 x_j^2 ]     (FM)
              + h_L . w_out                              (deep; no output bias: w0 is it)

One embedding v_j per feature is shared by the FM and the deep component; the
values x_j are kept (scaled by 1/||x|| with ``normalize``), so multi-hot and
real-valued fields work.  Losses: squared (0.5 r^2) and logistic (y in -1/+1).
A batch minimises  sum_i sw_i loss_i / sum_i sw_i  +  L2 terms:
l2_v/2 ||v_j||^2 and l2_w/2 w_j^2 on the rows the batch touches, l2_dense/2
||W_l||^2 and ||w_out||^2 on the dense weights (not their biases), l2_w0/2 w0^2.

Design
------
* Embedding table ``table`` (n_features, stride), one record per feature,
  stride a multiple of 64 bytes (128 B for k = 8), so a non-zero costs one
  record (PERFORMANCE.md: bytes per feature touched dominate):
      [w, v_0..v_{k-1} | field | state]
  with the parameters p = [w, v] (k + 1 values) first, then the feature's field
  id (stored as a number, exact; written by the Python state from its
  validated ``fields``: the gather reads it from the line it loads anyway
  instead of missing in a separate array), then the optimizer state:
      adam    [m (k+1), s (k+1), t]   (t: this row's step count)
      adagrad [G (k+1)]
* Lazy (sparse) optimizer steps: a batch steps only the rows it touches, once
  per row with the gradient summed over the row's occurrences in the batch.
  Adam keeps a step count per row and bias-corrects with it (the moments of a
  row are averages over the steps at which it was touched), so the first
  update of a row has the same size whenever it happens -- unlike a global
  step count (TF LazyAdam, torch SparseAdam), with which a row first touched
  late gets moments bias-corrected for steps it never saw.  The dense layers
  and w0 use ordinary Adam with the global step count ``counters[0]``.
  Gradients follow torch: adam p -= lr/bc1 * m / (sqrt(s)/sqrt(bc2) + eps);
  adagrad p -= lr * g / (sqrt(G) + eps); L2 added to the gradient.
* One batch, all in one nogil call per epoch (no Python per batch):
    1. index (serial, ~6% of an epoch on Criteo-shaped data): each touched
       feature gets a slot in order of first occurrence (``slot_of``, zero
       outside a batch); a counting sort gives every occurrence its place in
       slot order (batch order within a slot);
    2. per chunk of rows (fixed by the batch size; chunks claimed by the threads
       of cfm's pool, src/cfm/cfm_workers.h):
       gather + pool + FM forward of its rows, then the MLP forward through
       BLAS gemm (cython_blas, float32 or float64) on contiguous buffers, the
       loss gradient, the MLP backward down to dH_0, and each occurrence's
       embedding-gradient terms [g x, g x^2, g x s + x dH_0[field]] written to
       its place in slot order (while the chunk's dH_0 rows are in cache);
    3. the pool's threads claim work items: dense weight gradients
       dW_l = h_{l-1}^T dZ_l over blocks of W's rows (one gemm each over the
       whole batch), each followed at once by its optimizer step; bias and
       output-vector tasks; and chunks of touched rows, whose gradient is the
       contiguous sum of their occurrences' terms (d/dw = sum g x,
       d/dv = sum (g x s + x dH_0) - v sum g x^2), stepped once, slot cleared.
  The bias w0 is stepped serially at the end of the batch.
* Determinism: every sum has a fixed order that does not depend on the thread
  count (chunks and blocks are fixed by the batch size and the layer widths,
  never by n_threads; a row is summed and stepped by exactly one thread;
  which thread runs a work item changes nothing).  Training is therefore
  reproducible under a seed for every n_threads, and bit-identical across
  n_threads: the BLAS calls are the same, only the thread running them
  changes (tested for 1, 2 and 3 threads, float32 and float64).  No Hogwild.
* BLAS must run single-threaded inside these kernels (the Python caller
  limits it, e.g. with threadpoolctl): the kernels run BLAS calls from their
  own (pool) threads.
* Dropout (inverted, after each hidden ReLU) draws from a counter-based
  stream per (seed, position in the epoch, layer): 4 units per 64-bit draw,
  p resolved to 1/65536.  Scoring never drops.
* Threads: cfm's worker pool (cfm._pool), as every other kernel, not OpenMP
  regions: the calling thread starts at once and never waits for a helper to
  arrive, idle helpers sleep, and a batch of one chunk runs on the calling
  thread alone (see README "Threads and reproducibility").
* Scoring: fixed blocks of PRED_ROWS rows, claimed by the pool's threads;
  identical for any n_threads.  float32 dense layers go through
  cfm_dense.h, which sums every value in one order, so a row scores the same
  alone or anywhere in a block (BLAS gemm's last bits depend on a row's
  position: ~1e-6 relative in float32); float64 keeps BLAS (~1e-16).
* Inputs are validated by the Python caller (cfm/_state/deepfm.py); these
  wrappers check only shapes, in O(1).  Kernels trust their inputs.
"""
import numpy as np

from libc.math cimport sqrt, pow, isfinite
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memset
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from scipy.linalg.cython_blas cimport sgemm, dgemm

from cfm._common cimport (
    floating, data_t, index_t, cfm_prefetch_r, cfm_prefetch_w,
    LOSS_SQUARED, LOSS_LOGISTIC, OPT_ADAGRAD, MAX_FACTORS,
    row_scale, loss_value, loss_grad, fsqrt,
)
from cfm._pool cimport parallel_for, team
from cfm._random cimport splitmix64

cdef extern from "cfm_dense.h" nogil:
    void cfm_dense_rows_f(const float* W, Py_ssize_t dout, Py_ssize_t din, const float* inp,
                          Py_ssize_t n, float* out)

cdef extern from "cfm_deepfm.h" nogil:
    void cfm_bias_relu_f(float* h, const float* b, Py_ssize_t n, Py_ssize_t d)
    void cfm_bias_relu_d(double* h, const double* b, Py_ssize_t n, Py_ssize_t d)
    void cfm_relu_back_f(float* g, const float* h, Py_ssize_t n, float s)
    void cfm_relu_back_d(double* g, const double* h, Py_ssize_t n, double s)
    void cfm_out_back_f(float* g, const float* w, const float* h, Py_ssize_t d, float a, float s)
    void cfm_out_back_d(double* g, const double* w, const double* h, Py_ssize_t d, double a,
                        double s)
    double cfm_dot_f(const float* h, const float* w, Py_ssize_t d)
    double cfm_dot_d(const double* h, const double* w, Py_ssize_t d)
    void cfm_axpy_f(float* acc, const float* row, Py_ssize_t d, float a)
    void cfm_axpy_d(double* acc, const double* row, Py_ssize_t d, double a)
    void cfm_add_f(float* acc, const float* row, Py_ssize_t d)
    void cfm_add_d(double* acc, const double* row, Py_ssize_t d)
    void cfm_adam_f(float* p, float* m, float* s, const float* g, Py_ssize_t n, float l2,
                    float b1, float b2, float ob1, float ob2, float step, float c2, float eps)
    void cfm_adam_d(double* p, double* m, double* s, const double* g, Py_ssize_t n, double l2,
                    double b1, double b2, double ob1, double ob2, double step, double c2,
                    double eps)
    void cfm_adagrad_f(float* p, float* G, const float* g, Py_ssize_t n, float l2, float lr,
                       float eps)
    void cfm_adagrad_d(double* p, double* G, const double* g, Py_ssize_t n, double l2,
                       double lr, double eps)


# Optimizer codes of this module (OPT_ADAGRAD is shared with _common.pxd).
cdef enum:
    OPT_ADAM = 3
    OPT_GRAD = -1       # internal (tests): write the gradients, step nothing

ADAGRAD = OPT_ADAGRAD
ADAM = OPT_ADAM
SQUARED = LOSS_SQUARED
LOGISTIC = LOSS_LOGISTIC

cdef enum:
    PF_ROWS = 2         # rows ahead whose records are prefetched
    PRED_ROWS = 256     # rows per scoring block
    W_BLOCK = 128       # rows of W_l per dense-gradient task
    SLOT_CHUNK = 64     # touched rows per sparse-update work item
    N_CORR = 4096       # sparse Adam bias corrections tabulated for t <= N_CORR
    N_PHASES = 5

# phase timers (seconds; CPU seconds with one thread), returned by
# deepfm_train_epoch.  With several threads, gather + MLP run as one loop (timed
# as "mlp"), and the dense and sparse updates share one dynamically scheduled
# loop (timed as "dense_update").
PHASES = ("index", "gather", "mlp", "dense_update", "sparse_update")


cdef extern from "<time.h>" nogil:
    int CLOCK_THREAD_CPUTIME_ID


cdef inline double now(int nt) noexcept nogil:
    """Phase clock: the calling thread's CPU time with one thread (robust on a
    shared machine), wall time with several."""
    cdef timespec ts
    clock_gettime(CLOCK_THREAD_CPUTIME_ID if nt == 1 else CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + 1e-9 * ts.tv_nsec


def record_layout(int k, int optimizer, int itemsize):
    """Offsets of a feature record (in elements) and its stride.

    Returns a dict: ``field``, ``state`` (first optimizer-state element),
    ``s`` and ``t`` (Adam), ``used`` (elements in use) and ``stride`` (used,
    rounded up to 64 bytes)."""
    cdef int k1 = k + 1
    lay = {"field": k1, "state": k1 + 1}
    if optimizer == OPT_ADAM:
        lay["s"] = 2 * k1 + 1
        lay["t"] = 3 * k1 + 1
        used = 3 * k1 + 2
    elif optimizer == OPT_ADAGRAD:
        used = 2 * k1 + 1
    else:
        raise ValueError(f"unknown optimizer code {optimizer}")
    per_line = 64 // itemsize
    lay["used"] = used
    lay["stride"] = -(-used // per_line) * per_line
    return lay


def mlp_layout(layer_sizes):
    """Offsets in the flat dense-parameter vector for layer sizes
    [d_0, d_1, ..., d_L]: W_l (d_{l-1} x d_l, row-major) then b_l for each
    hidden layer, then w_out (d_L).  Returns (w_off, b_off, out_off, size)."""
    sizes = [int(d) for d in layer_sizes]
    w_off, b_off = [], []
    pos = 0
    for l in range(1, len(sizes)):
        w_off.append(pos)
        pos += sizes[l - 1] * sizes[l]
        b_off.append(pos)
        pos += sizes[l]
    out_off = pos
    pos += sizes[len(sizes) - 1]
    return w_off, b_off, out_off, pos


# --- BLAS ------------------------------------------------------------------
cdef inline void gemm(char ta, char tb, int m, int n, int k, const floating* A, int lda,
                      const floating* B, int ldb, floating beta, floating* C,
                      int ldc) noexcept nogil:
    """Column-major C = op(A) op(B) + beta C (alpha = 1)."""
    cdef floating one = 1
    if m <= 0 or n <= 0:
        return
    if floating is float:
        sgemm(&ta, &tb, &m, &n, &k, &one, <float*>A, &lda, <float*>B, &ldb, &beta, C, &ldc)
    else:
        dgemm(&ta, &tb, &m, &n, &k, &one, <double*>A, &lda, <double*>B, &ldb, &beta, C, &ldc)


# --- shared context of one epoch -------------------------------------------
cdef struct Ctx:
    # data (X and indices are passed typed; see the fused functions)
    const int64_t* indptr
    const double* y
    const double* sw            # NULL: all weights 1
    const int64_t* order
    # model
    Py_ssize_t stride
    int k
    int L
    const int64_t* dims         # d_0 .. d_L
    const int64_t* woff         # W_l offset, l = 1..L at [l - 1]
    const int64_t* boff
    Py_ssize_t ooff             # w_out offset
    Py_ssize_t n_mlp
    void* mlp                   # floating (n_mlp)
    void* mst                   # floating: adam [m | s] (2 n_mlp), adagrad [G] (n_mlp)
    double* bias                # [w0, m or G, s]
    # hyper-parameters
    int loss
    int optimizer
    bint normalize
    bint fit_intercept
    double lr, b1, b2, eps
    double l2_w0, l2_w, l2_v, l2_dense
    uint32_t drop16             # dropout threshold out of 65536 (0: none)
    double inv_keep
    uint64_t seed
    # dense Adam bias corrections of the current step
    int64_t step                # dense step count (Adam), counters[0]
    double dc1, dc2
    const double* corr1         # sparse Adam: 1/(1 - b1^t), 1/sqrt(1 - b2^t), t < N_CORR + 1
    const double* corr2
    # scratch
    const int64_t* hoff         # offset of H_l (and of G_l) in hbuf (gbuf), l = 0..L
    void* hbuf                  # floating: H_l, B_max x d_l each
    void* gbuf                  # floating: dH_0, then dZ_l
    void* srow                  # floating (B_max, k): sum_j v_j x_j per row
    double* fm                  # (B_max) FM part (without w0)
    double* gi                  # (B_max) d batch loss / d pred
    double* lossv               # (B_max) sw * loss, NaN where the prediction is not finite
    double* scale               # (B_max) row scale
    void* gmlp                  # floating (n_mlp): dense gradients
    int32_t* slot_of            # (n_features) slot + 1 of a feature in the batch, else 0
    int64_t* uniq               # (nnz_max) feature of each slot
    int32_t* start              # (nnz_max + 1) first occurrence of each slot, slot order
    int32_t* occ_dst            # (nnz_max) position of each occurrence (batch order) in slot order
    int32_t* occ_f              # (nnz_max) field of each occurrence
    void* occ_x                 # floating (nnz_max) scaled value of each occurrence
    int64_t* row_o              # (B_max + 1) first occurrence of each batch row
    void* gocc                  # floating (nnz_max, k + 2): per occurrence, slot order:
                                #   [g x, g x^2, g x s + x dH_0[field]]
    const int64_t* tasks        # (n_tasks, 3): kind (0 W block, 1 bias, 2 w_out), layer, first row
    Py_ssize_t chunk_rows
    void* gtab                  # OPT_GRAD: floating (n_features, k + 1) gradients out


# --- 1. index the batch ----------------------------------------------------
cdef Py_ssize_t index_batch(Ctx* c, const index_t* ind, Py_ssize_t b0,
                            Py_ssize_t nb) noexcept nogil:
    """Give every feature of the batch a slot (first-occurrence order); lay
    the occurrences out by slot (counting sort, batch order within a slot):
    start[u] .. start[u + 1] are slot u's, occ_dst[o] is occurrence o's
    place.  Returns the number of slots."""
    cdef Py_ssize_t rr, p, i, r, U = 0, o = 0
    cdef Py_ssize_t j
    cdef int32_t u, acc, cnt
    cdef const int64_t* P = c.indptr
    cdef int32_t* start = c.start
    for rr in range(nb):
        if rr + 8 < nb:
            cfm_prefetch_r(&P[c.order[b0 + rr + 8]])
        if rr + 4 < nb:
            r = c.order[b0 + rr + 4]
            for p in range(P[r], P[r + 1]):
                cfm_prefetch_w(&c.slot_of[ind[p]])
        i = c.order[b0 + rr]
        c.row_o[rr] = o
        for p in range(P[i], P[i + 1]):
            j = ind[p]
            u = c.slot_of[j] - 1
            if u < 0:
                u = <int32_t>U
                U += 1
                c.slot_of[j] = u + 1
                c.uniq[u] = j
                start[u] = 0
            start[u] += 1                 # count, for now
            c.occ_dst[o] = u              # slot, for now
            o += 1
    c.row_o[nb] = o
    # counts -> starts; then each occurrence takes the next place of its slot
    acc = 0
    for u in range(U):
        cnt = start[u]
        start[u] = acc
        acc += cnt
    start[U] = acc
    for p in range(o):
        u = c.occ_dst[p]
        c.occ_dst[p] = start[u]
        start[u] += 1
    # start[u] now ends slot u: shift back
    for u in range(U, 0, -1):
        start[u] = start[u - 1]
    start[0] = 0
    return U


# --- 2. gather, pool, FM ---------------------------------------------------
cdef inline void prefetch_records(const index_t* ind, Py_ssize_t start, Py_ssize_t end,
                                  const floating* tab, Py_ssize_t stride) noexcept nogil:
    cdef Py_ssize_t p
    for p in range(start, end):
        cfm_prefetch_r(tab + <Py_ssize_t>ind[p] * stride)


cdef inline double gather_row(const data_t* X, const index_t* ind, Py_ssize_t start,
                              Py_ssize_t end, const floating* tab, Py_ssize_t stride, int k,
                              double scale, floating* h0, Py_ssize_t d0,
                              floating* s, int32_t* fo, floating* xo) noexcept nogil:
    """Pool the row's embeddings by field into h0 (zeroed here) and return the
    FM part (linear + pairwise, without w0); s[c] = sum_j v_jc x_j; fo and xo
    (if not NULL) receive the field and the scaled value of each non-zero."""
    cdef Py_ssize_t p, cc, f
    cdef const floating* rec
    cdef floating* hp
    cdef floating xf
    cdef double x, d, lin = 0.0, pair = 0.0, sq = 0.0
    cdef double acc[MAX_FACTORS]
    cdef double acc2[MAX_FACTORS]
    memset(h0, 0, d0 * sizeof(floating))
    for cc in range(k):
        acc[cc] = 0.0
        acc2[cc] = 0.0
    for p in range(start, end):
        rec = tab + <Py_ssize_t>ind[p] * stride
        x = <double>X[p] * scale
        xf = <floating>x
        lin += <double>rec[0] * x
        f = <Py_ssize_t>rec[k + 1]
        if fo != NULL:
            fo[p - start] = <int32_t>f
            xo[p - start] = xf
        hp = h0 + f * k
        for cc in range(k):
            d = <double>rec[1 + cc] * x
            acc[cc] += d
            acc2[cc] += d * d
            hp[cc] = hp[cc] + rec[1 + cc] * xf
    for cc in range(k):
        s[cc] = <floating>acc[cc]
        pair += acc[cc] * acc[cc]
        sq += acc2[cc]
    return lin + 0.5 * (pair - sq)


cdef inline void forward_row(Ctx* c, const data_t* X, const index_t* ind, const floating* tab,
                             Py_ssize_t b0, Py_ssize_t nb, Py_ssize_t rr) noexcept nogil:
    cdef Py_ssize_t i, r, start, end
    cdef Py_ssize_t d0 = c.dims[0]
    cdef double sc
    if rr + PF_ROWS < nb:
        r = c.order[b0 + rr + PF_ROWS]
        prefetch_records(ind, c.indptr[r], c.indptr[r + 1], tab, c.stride)
    i = c.order[b0 + rr]
    start = c.indptr[i]
    end = c.indptr[i + 1]
    sc = row_scale(X, start, end, c.normalize)
    c.scale[rr] = sc
    c.fm[rr] = gather_row(X, ind, start, end, tab, c.stride, c.k, sc,
                          <floating*>c.hbuf + rr * d0, d0, <floating*>c.srow + rr * c.k,
                          c.occ_f + c.row_o[rr], <floating*>c.occ_x + c.row_o[rr])


# --- 3. MLP forward / backward over a chunk of rows ------------------------
cdef inline void dropout_row(floating* h, Py_ssize_t n, uint64_t seed, Py_ssize_t pos, int layer,
                             uint32_t drop16, floating inv_keep) noexcept nogil:
    """Inverted dropout of one row of a hidden layer (counter-based stream)."""
    cdef uint64_t state = seed ^ (<uint64_t>pos * <uint64_t>0x9E3779B97F4A7C15ULL) \
        ^ (<uint64_t>(layer + 1) * <uint64_t>0xD1B54A32D192ED03ULL)
    cdef uint64_t r = 0
    cdef Py_ssize_t u
    splitmix64(&state)
    for u in range(n):
        if u % 4 == 0:
            r = splitmix64(&state)
        if <uint32_t>(r & 0xFFFF) < drop16:
            h[u] = 0
        else:
            h[u] = h[u] * inv_keep
        r = r >> 16


cdef void mlp_forward(Ctx* c, const floating* mlp, floating* H, const int64_t* hoff,
                      Py_ssize_t r0, Py_ssize_t n, bint train, Py_ssize_t pos0) noexcept nogil:
    """H_l rows r0..r0+n for l = 1..L (H_l at H + hoff[l], h_0 given);
    dropout when ``train`` (row r has epoch position pos0 + r)."""
    cdef int l
    cdef Py_ssize_t r, u, din, dout
    cdef floating* Hl
    cdef const floating* b
    cdef floating inv_keep = <floating>c.inv_keep
    for l in range(1, c.L + 1):
        din = c.dims[l - 1]
        dout = c.dims[l]
        Hl = H + hoff[l] + r0 * dout
        if floating is float and not train:
            # scoring: a row's value must not depend on its place in the block,
            # which float32 BLAS gemm does not promise (see cfm_dense.h)
            cfm_dense_rows_f(mlp + c.woff[l - 1], dout, din, H + hoff[l - 1] + r0 * din, n, Hl)
        else:
            gemm(c'N', c'N', <int>dout, <int>n, <int>din, mlp + c.woff[l - 1], <int>dout,
                 H + hoff[l - 1] + r0 * din, <int>din, 0, Hl, <int>dout)
        b = mlp + c.boff[l - 1]
        if floating is float:
            cfm_bias_relu_f(Hl, b, n, dout)
        else:
            cfm_bias_relu_d(Hl, b, n, dout)
        if train and c.drop16 > 0:
            for r in range(n):
                dropout_row(Hl + r * dout, dout, c.seed, pos0 + r0 + r, l, c.drop16, inv_keep)


cdef inline double out_dot(const floating* h, const floating* w, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return cfm_dot_f(h, w, n)
    else:
        return cfm_dot_d(h, w, n)


cdef inline void occ_grads(Ctx* c, const floating* dH0, Py_ssize_t rr) noexcept nogil:
    """Row rr's contribution to the gradient of each of its features, written
    to the feature's place in slot order: [g x, g x^2, g x s + x dH_0[f]]
    (then d/dw_j = sum g x and d/dv_j = sum (g x s + x dH_0[f]) - v_j sum g x^2)."""
    cdef Py_ssize_t o, cc, k = c.k, kw = c.k + 2
    cdef floating* G
    cdef const floating* sr = <const floating*>c.srow + rr * k
    cdef const floating* xs = <const floating*>c.occ_x
    cdef const floating* dh
    cdef floating x, gx
    cdef floating gf = <floating>c.gi[rr]
    for o in range(c.row_o[rr], c.row_o[rr + 1]):
        G = <floating*>c.gocc + <Py_ssize_t>c.occ_dst[o] * kw
        x = xs[o]
        gx = gf * x
        dh = dH0 + c.occ_f[o] * k
        G[0] = gx
        G[1] = gx * x
        for cc in range(k):
            G[2 + cc] = gx * sr[cc] + x * dh[cc]


cdef void chunk_fb(Ctx* c, const data_t* X, const floating* mlp, Py_ssize_t b0, Py_ssize_t nb,
                   Py_ssize_t ch, double w0, double inv_wsum) noexcept nogil:
    """Rows of chunk ch: MLP forward, prediction, loss and its gradient gi,
    MLP backward down to dH_0, and the rows' per-occurrence embedding
    gradients (all row-local: no reduction over rows)."""
    cdef Py_ssize_t r0 = ch * c.chunk_rows
    cdef Py_ssize_t n = min(c.chunk_rows, nb - r0)
    cdef Py_ssize_t r, rr, dl, din, d0 = c.dims[0]
    cdef int l, L = c.L
    cdef floating* H = <floating*>c.hbuf
    cdef floating* G = <floating*>c.gbuf
    cdef const floating* wout = mlp + c.ooff
    cdef const floating* HL
    cdef floating* GL
    cdef floating* Gp
    cdef floating inv_keep = <floating>c.inv_keep
    cdef double pred, sw, yi
    cdef Py_ssize_t i
    if n <= 0:
        return
    mlp_forward(c, mlp, H, c.hoff, r0, n, True, b0)
    dl = c.dims[L]
    HL = H + c.hoff[L] + r0 * dl
    GL = G + c.hoff[L] + r0 * dl
    for r in range(n):
        rr = r0 + r
        i = c.order[b0 + rr]
        pred = w0 + c.fm[rr] + out_dot(HL + r * dl, wout, dl)
        sw = c.sw[i] if c.sw != NULL else 1.0
        yi = c.y[i]
        if isfinite(pred):
            c.lossv[rr] = sw * loss_value(pred, yi, c.loss)
            c.gi[rr] = sw * loss_grad(pred, yi, c.loss) * inv_wsum
        else:
            c.lossv[rr] = pred - pred      # NaN: counted as a bad row
            c.gi[rr] = 0.0
        # d loss / d h_L, then through the last ReLU / dropout (if hidden)
        if floating is float:
            cfm_out_back_f(GL + r * dl, wout, HL + r * dl if L >= 1 else NULL, dl,
                           <float>c.gi[rr], inv_keep)
        else:
            cfm_out_back_d(GL + r * dl, wout, HL + r * dl if L >= 1 else NULL, dl,
                           c.gi[rr], inv_keep)
    for l in range(L, 0, -1):
        dl = c.dims[l]
        din = c.dims[l - 1]
        Gp = G + c.hoff[l - 1] + r0 * din
        gemm(c'T', c'N', <int>din, <int>n, <int>dl, mlp + c.woff[l - 1], <int>dl,
             G + c.hoff[l] + r0 * dl, <int>dl, 0, Gp, <int>din)
        if l - 1 >= 1:
            if floating is float:
                cfm_relu_back_f(Gp, H + c.hoff[l - 1] + r0 * din, n * din, inv_keep)
            else:
                cfm_relu_back_d(Gp, H + c.hoff[l - 1] + r0 * din, n * din, inv_keep)
    for r in range(n):
        occ_grads(c, G + (r0 + r) * d0, r0 + r)


cdef void chunk_rows_fb(Ctx* c, const data_t* X, const index_t* ind, floating* tab,
                        Py_ssize_t b0, Py_ssize_t nb, Py_ssize_t ch, double w0,
                        double inv_wsum) noexcept nogil:
    """Gather / pool / FM of the rows of chunk ch, then chunk_fb on them."""
    cdef Py_ssize_t rr
    for rr in range(ch * c.chunk_rows, min((ch + 1) * c.chunk_rows, nb)):
        forward_row(c, X, ind, tab, b0, nb, rr)
    chunk_fb(c, X, <const floating*>c.mlp, b0, nb, ch, w0, inv_wsum)


# --- 4. dense gradients and steps ------------------------------------------
cdef inline void dense_step(Ctx* c, floating* mlp, Py_ssize_t a, Py_ssize_t n,
                            double l2) noexcept nogil:
    """Optimizer step on mlp[a:a+n] with gradient gmlp[a:a+n] (+ l2 * param)."""
    cdef floating* p = mlp + a
    cdef floating* g = <floating*>c.gmlp + a
    cdef floating* m = <floating*>c.mst + a if c.mst != NULL else NULL
    cdef floating* s = <floating*>c.mst + c.n_mlp + a if c.mst != NULL else NULL
    cdef Py_ssize_t e
    if c.optimizer == OPT_GRAD:
        for e in range(n):
            g[e] = g[e] + <floating>l2 * p[e]
    elif c.optimizer == OPT_ADAM:
        if floating is float:
            cfm_adam_f(p, m, s, g, n, <float>l2, <float>c.b1, <float>c.b2, <float>(1.0 - c.b1),
                       <float>(1.0 - c.b2), <float>(c.lr * c.dc1), <float>c.dc2, <float>c.eps)
        else:
            cfm_adam_d(p, m, s, g, n, l2, c.b1, c.b2, 1.0 - c.b1, 1.0 - c.b2, c.lr * c.dc1,
                       c.dc2, c.eps)
    else:
        if floating is float:
            cfm_adagrad_f(p, m, g, n, <float>l2, <float>c.lr, <float>c.eps)
        else:
            cfm_adagrad_d(p, m, g, n, l2, c.lr, c.eps)


cdef void dense_task(Ctx* c, floating* mlp, Py_ssize_t nb, Py_ssize_t t) noexcept nogil:
    cdef int64_t kind = c.tasks[3 * t], l = c.tasks[3 * t + 1]
    cdef Py_ssize_t n0 = c.tasks[3 * t + 2]
    cdef floating* H = <floating*>c.hbuf
    cdef floating* G = <floating*>c.gbuf
    cdef floating* gm = <floating*>c.gmlp
    cdef floating* acc
    cdef const floating* row
    cdef Py_ssize_t din, dl, n1, r, u
    cdef floating gf
    if kind == 0:
        # rows n0..n1 of dW_l = H_{l-1}^T dZ_l (column-major: dW^T = dZ^T H)
        din = c.dims[l - 1]
        dl = c.dims[l]
        n1 = min(n0 + W_BLOCK, din)
        gemm(c'N', c'T', <int>dl, <int>(n1 - n0), <int>nb, G + c.hoff[l], <int>dl,
             H + c.hoff[l - 1] + n0, <int>din, 0, gm + c.woff[l - 1] + n0 * dl, <int>dl)
        dense_step(c, mlp, c.woff[l - 1] + n0 * dl, (n1 - n0) * dl, c.l2_dense)
    elif kind == 1:
        # db_l = column sums of dZ_l, in row order
        dl = c.dims[l]
        acc = gm + c.boff[l - 1]
        for u in range(dl):
            acc[u] = 0
        for r in range(nb):
            row = G + c.hoff[l] + r * dl
            if floating is float:
                cfm_add_f(acc, row, dl)
            else:
                cfm_add_d(acc, row, dl)
        dense_step(c, mlp, c.boff[l - 1], dl, 0.0)
    else:
        # d w_out = H_L^T gi, in row order
        dl = c.dims[c.L]
        acc = gm + c.ooff
        for u in range(dl):
            acc[u] = 0
        for r in range(nb):
            gf = <floating>c.gi[r]
            row = H + c.hoff[c.L] + r * dl
            if floating is float:
                cfm_axpy_f(acc, row, dl, gf)
            else:
                cfm_axpy_d(acc, row, dl, gf)
        dense_step(c, mlp, c.ooff, dl, c.l2_dense)


# --- 5. sparse gradients and steps -----------------------------------------
cdef void sparse_slot(Ctx* c, floating* tab, Py_ssize_t u, Py_ssize_t U) noexcept nogil:
    """Sum the gradient of one touched row over its occurrences (contiguous,
    batch order) and step it once; clear its slot."""
    cdef Py_ssize_t j = c.uniq[u]
    cdef floating* rec = tab + j * c.stride
    cdef int k = c.k
    cdef Py_ssize_t kw = k + 2
    cdef const floating* G = <const floating*>c.gocc + <Py_ssize_t>c.start[u] * kw
    cdef Py_ssize_t n_occ = c.start[u + 1] - c.start[u]
    cdef floating g[MAX_FACTORS + 2]
    cdef floating b, t
    cdef double corr1, corr2
    cdef Py_ssize_t cc, q, ti
    cdef const char* pf
    if u + 4 < U:
        pf = <const char*>(tab + c.uniq[u + 4] * c.stride)
        for q in range(0, c.stride * sizeof(floating), 64):
            cfm_prefetch_w(pf + q)
    for cc in range(kw):
        g[cc] = G[cc]
    for q in range(1, n_occ):
        if floating is float:
            cfm_add_f(g, G + q * kw, kw)
        else:
            cfm_add_d(g, G + q * kw, kw)
    # g = [sum g x, sum g x^2, sum (g x s + x dH_0)]: d/dv_j = the last - v_j sum g x^2
    b = g[1]
    g[1] = g[0] + <floating>c.l2_w * rec[0]
    for cc in range(k):
        g[2 + cc] = g[2 + cc] - b * rec[1 + cc] + <floating>c.l2_v * rec[1 + cc]
    if c.optimizer == OPT_ADAM:
        t = rec[3 * k + 4] + 1
        rec[3 * k + 4] = t
        ti = <Py_ssize_t>t
        if ti <= N_CORR:
            corr1 = c.corr1[ti]
            corr2 = c.corr2[ti]
        else:
            corr1 = 1.0 / (1.0 - pow(c.b1, <double>ti))
            corr2 = 1.0 / sqrt(1.0 - pow(c.b2, <double>ti))
        if floating is float:
            cfm_adam_f(rec, rec + k + 2, rec + 2 * k + 3, g + 1, k + 1, 0, <float>c.b1,
                       <float>c.b2, <float>(1.0 - c.b1), <float>(1.0 - c.b2),
                       <float>(c.lr * corr1), <float>corr2, <float>c.eps)
        else:
            cfm_adam_d(rec, rec + k + 2, rec + 2 * k + 3, g + 1, k + 1, 0, c.b1, c.b2,
                       1.0 - c.b1, 1.0 - c.b2, c.lr * corr1, corr2, c.eps)
    elif c.optimizer == OPT_ADAGRAD:
        if floating is float:
            cfm_adagrad_f(rec, rec + k + 2, g + 1, k + 1, 0, <float>c.lr, <float>c.eps)
        else:
            cfm_adagrad_d(rec, rec + k + 2, g + 1, k + 1, 0, c.lr, c.eps)
    else:
        for cc in range(k + 1):
            (<floating*>c.gtab)[j * (k + 1) + cc] = g[1 + cc]
    c.slot_of[j] = 0


cdef void update_item(Ctx* c, floating* tab, Py_ssize_t nb, Py_ssize_t it, Py_ssize_t n_tasks,
                      Py_ssize_t U) noexcept nogil:
    """Work item it of the update loop: a dense task, or SLOT_CHUNK touched rows."""
    cdef Py_ssize_t u, u0
    if it < n_tasks:
        dense_task(c, <floating*>c.mlp, nb, it)
        return
    u0 = (it - n_tasks) * SLOT_CHUNK
    for u in range(u0, min(u0 + SLOT_CHUNK, U)):
        sparse_slot(c, tab, u, U)


cdef inline void bias_step(Ctx* c, double g) noexcept nogil:
    cdef double* b = c.bias
    g += c.l2_w0 * b[0]
    if c.optimizer == OPT_ADAM:
        b[1] = c.b1 * b[1] + (1.0 - c.b1) * g
        b[2] = c.b2 * b[2] + (1.0 - c.b2) * g * g
        b[0] -= c.lr * c.dc1 * b[1] / (sqrt(b[2]) * c.dc2 + c.eps)
    elif c.optimizer == OPT_ADAGRAD:
        b[1] += g * g
        b[0] -= c.lr * g / (sqrt(b[1]) + c.eps)
    else:
        b[1] = g


# --- parallel jobs on cfm's pool ---------------------------------------------
cdef struct Job:
    Ctx* c
    const void* X
    const void* ind
    void* tab
    Py_ssize_t b0, nb, n_tasks, U
    double w0, inv_wsum
    int types           # (floating is double) + 2 (data_t is double) + 4 (index_t is int64)


cdef inline int _types(const data_t* X, const index_t* ind, const floating* tab) noexcept nogil:
    return (floating is double) + 2 * (data_t is double) + 4 * (index_t is int64_t)


cdef inline void fb_chunks(Job* j, const data_t* X, const index_t* ind, floating* tab,
                           int64_t lo, int64_t hi) noexcept nogil:
    cdef int64_t ch
    for ch in range(lo, hi):
        chunk_rows_fb(j.c, X, ind, tab, j.b0, j.nb, ch, j.w0, j.inv_wsum)


cdef void fb_range(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    """Chunks lo..hi of rows of a batch: gather, pool, FM, MLP forward and backward."""
    cdef Job* j = <Job*>p
    # one branch per (parameters, values, indices) dtype, as the fused entry point
    if j.types == 0:
        fb_chunks(j, <const float*>j.X, <const int32_t*>j.ind, <float*>j.tab, lo, hi)
    elif j.types == 1:
        fb_chunks(j, <const float*>j.X, <const int32_t*>j.ind, <double*>j.tab, lo, hi)
    elif j.types == 2:
        fb_chunks(j, <const double*>j.X, <const int32_t*>j.ind, <float*>j.tab, lo, hi)
    elif j.types == 3:
        fb_chunks(j, <const double*>j.X, <const int32_t*>j.ind, <double*>j.tab, lo, hi)
    elif j.types == 4:
        fb_chunks(j, <const float*>j.X, <const int64_t*>j.ind, <float*>j.tab, lo, hi)
    elif j.types == 5:
        fb_chunks(j, <const float*>j.X, <const int64_t*>j.ind, <double*>j.tab, lo, hi)
    elif j.types == 6:
        fb_chunks(j, <const double*>j.X, <const int64_t*>j.ind, <float*>j.tab, lo, hi)
    else:
        fb_chunks(j, <const double*>j.X, <const int64_t*>j.ind, <double*>j.tab, lo, hi)


cdef void update_range(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    """Work items lo..hi of a batch's update loop (dense tasks, chunks of touched rows)."""
    cdef Job* j = <Job*>p
    cdef int64_t it
    for it in range(lo, hi):
        if j.types & 1:
            update_item(j.c, <double*>j.tab, j.nb, it, j.n_tasks, j.U)
        else:
            update_item(j.c, <float*>j.tab, j.nb, it, j.n_tasks, j.U)


# --- one batch -------------------------------------------------------------
cdef void run_batch(Ctx* c, const data_t* X, const index_t* ind, floating* tab,
                    Py_ssize_t b0, Py_ssize_t nb, int nt, int64_t n_tasks,
                    double* stats, double* times) noexcept nogil:
    """stats += [loss sum, weight sum, bad rows]; times += phase seconds."""
    cdef Py_ssize_t U, rr, ch, t, u, n_chunks, n_items
    cdef double wsum = 0.0, gsum = 0.0, w0, t0, t1, sw
    cdef Job job
    t0 = now(nt)
    U = index_batch(c, ind, b0, nb)
    for rr in range(nb):
        wsum += c.sw[c.order[b0 + rr]] if c.sw != NULL else 1.0
    t1 = now(nt)
    times[0] += t1 - t0
    if wsum <= 0:
        # every weight is zero: nothing to learn from this batch
        for u in range(U):
            c.slot_of[c.uniq[u]] = 0
        return
    w0 = c.bias[0]
    c.step += 1
    if c.optimizer == OPT_ADAM:
        c.dc1 = 1.0 / (1.0 - pow(c.b1, <double>c.step))
        c.dc2 = 1.0 / sqrt(1.0 - pow(c.b2, <double>c.step))
    n_chunks = (nb + c.chunk_rows - 1) // c.chunk_rows
    if nt == 1:
        for rr in range(nb):
            forward_row(c, X, ind, tab, b0, nb, rr)
        t0 = now(nt)
        times[1] += t0 - t1
        for ch in range(n_chunks):
            chunk_fb(c, X, <const floating*>c.mlp, b0, nb, ch, w0, 1.0 / wsum)
    else:
        # gather and MLP of a chunk of rows by one thread: no barrier between;
        # chunks are claimed by whichever thread of cfm's pool is free: a
        # chunk's result does not depend on the thread that runs it, and a
        # thread the OS sets aside does not hold the others up
        t0 = t1
        job.c = c
        job.X = X
        job.ind = ind
        job.tab = tab
        job.b0 = b0
        job.nb = nb
        job.w0 = w0
        job.inv_wsum = 1.0 / wsum
        job.types = _types(X, ind, tab)
        parallel_for(fb_range, &job, n_chunks, 1, nt)
    t1 = now(nt)
    times[2] += t1 - t0
    if nt == 1:
        for t in range(n_tasks):
            dense_task(c, <floating*>c.mlp, nb, t)
        t0 = now(nt)
        times[3] += t0 - t1
        for u in range(U):
            sparse_slot(c, tab, u, U)
        t1 = now(nt)
        times[4] += t1 - t0
    else:
        # dense tasks (largest first) and chunks of touched rows in one
        # dynamically scheduled loop: they balance each other
        n_items = n_tasks + (U + SLOT_CHUNK - 1) // SLOT_CHUNK
        job.c = c
        job.tab = tab
        job.nb = nb
        job.n_tasks = n_tasks
        job.U = U
        job.types = _types(X, ind, tab)
        parallel_for(update_range, &job, n_items, 1, nt)
        t0 = now(nt)
        times[3] += t0 - t1
    for rr in range(nb):
        if isfinite(c.lossv[rr]):
            sw = c.sw[c.order[b0 + rr]] if c.sw != NULL else 1.0
            stats[0] += c.lossv[rr]
            stats[1] += sw
            gsum += c.gi[rr]
        else:
            stats[2] += 1
    if c.fit_intercept:
        bias_step(c, gsum)


# --- Python-callable entry points ------------------------------------------
def _chunk_rows(Py_ssize_t batch_size):
    """Rows per MLP chunk: a function of the batch size only (never of the
    thread count), so that results do not depend on n_threads."""
    cdef Py_ssize_t c = 16 * ((batch_size + 127) // 128)
    return max(32, min(256, c))


def _dense_tasks(layer_sizes):
    """(n_tasks, 3) int64: [kind, layer, first row]; W blocks first (largest)."""
    sizes = [int(d) for d in layer_sizes]
    L = len(sizes) - 1
    tasks = []
    for l in range(1, L + 1):
        for n0 in range(0, sizes[l - 1], W_BLOCK):
            tasks.append((0, l, n0))
    for l in range(1, L + 1):
        tasks.append((1, l, 0))
    tasks.append((2, L, 0))
    return np.ascontiguousarray(np.array(tasks, dtype=np.int64).reshape(-1, 3))


cdef Py_ssize_t _setup_model(Ctx* c, const floating[:, ::1] table, const floating[::1] mlp,
                             const int64_t[::1] layer_sizes, int k, list keep) except -1:
    """Fill the model part of the context; ``keep`` holds the arrays it points to.
    (const: scoring takes read-only tables, e.g. memory-mapped ones; the
    training entry points pass writable arrays and write through ``c.mlp``.)"""
    cdef int64_t[::1] woff, boff, dims
    w_off, b_off, out_off, size = mlp_layout(layer_sizes)
    if mlp.shape[0] != size:
        raise ValueError(f"mlp has {mlp.shape[0]} values, layer sizes {list(layer_sizes)} "
                         f"need {size}")
    if k < 1 or k > MAX_FACTORS:
        raise ValueError(f"n_factors must be in [1, {MAX_FACTORS}], got {k}")
    if table.shape[1] < k + 2:
        raise ValueError(f"table has {table.shape[1]} columns, fewer than k + 2 = {k + 2}")
    dims_a = np.array(layer_sizes, dtype=np.int64)  # a copy: layer_sizes may be read-only
    woff_a = np.array(w_off + [0], dtype=np.int64)
    boff_a = np.array(b_off + [0], dtype=np.int64)
    keep += [dims_a, woff_a, boff_a]
    dims = dims_a
    woff = woff_a
    boff = boff_a
    c.stride = table.shape[1]
    c.k = k
    c.L = <int>(layer_sizes.shape[0] - 1)
    c.dims = &dims[0]
    c.woff = &woff[0]
    c.boff = &boff[0]
    c.ooff = out_off
    c.n_mlp = size
    c.mlp = <void*>&mlp[0]
    return size


def _run(const data_t[::1] data, const index_t[::1] indices, const int64_t[::1] indptr,
         const double[::1] y, const double[::1] sample_weight, const int64_t[::1] order,
         floating[:, ::1] table, floating[::1] mlp, floating[::1] mlp_state,
         double[::1] bias_state, int64_t[::1] counters, const int64_t[::1] layer_sizes,
         int n_factors, int loss, int optimizer, bint fit_intercept, bint normalize,
         double learning_rate, double beta1, double beta2, double eps,
         double l2_w0, double l2_w, double l2_v, double l2_dense, double dropout,
         Py_ssize_t batch_size, uint64_t seed, int n_threads,
         floating[:, ::1] grad_table, floating[::1] grad_mlp, double[::1] phase_times,
         Py_ssize_t chunk_rows=0):
    cdef Ctx c
    cdef list keep = []
    cdef Py_ssize_t n = order.shape[0]
    cdef Py_ssize_t n_feat = table.shape[0]
    cdef int k = n_factors
    cdef int nt = max(n_threads, 1)
    cdef Py_ssize_t B, nnz_max, b0, nb, rr, tot, l, hsum, n_mlp, i
    cdef int64_t[::1] hoff
    cdef floating[::1] hbuf, gbuf, srow, gmlp
    cdef double[::1] fm, gi, lossv, scale, corr1, corr2
    cdef int32_t[::1] slot_of, start, occ_dst, occ_f
    cdef int64_t[::1] uniq, row_o, tasks
    cdef floating[::1] gocc, occ_x
    cdef double stats[3]
    cdef double times[N_PHASES]
    cdef const data_t* X = &data[0] if data.shape[0] > 0 else NULL
    cdef const index_t* ind = &indices[0] if indices.shape[0] > 0 else NULL
    cdef floating* tab = &table[0, 0] if n_feat > 0 else NULL
    cdef int64_t n_tasks

    n_mlp = _setup_model(&c, table, mlp, layer_sizes, k, keep)
    if optimizer == OPT_ADAM and mlp_state.shape[0] != 2 * n_mlp:
        raise ValueError("mlp_state must hold 2 * n_mlp values for adam")
    if optimizer == OPT_ADAGRAD and mlp_state.shape[0] != n_mlp:
        raise ValueError("mlp_state must hold n_mlp values for adagrad")
    if optimizer not in (OPT_ADAM, OPT_ADAGRAD, OPT_GRAD):
        raise ValueError(f"unknown optimizer code {optimizer}")
    if optimizer != OPT_GRAD:
        lay = record_layout(k, optimizer, table.itemsize)
        if table.shape[1] < lay["used"]:
            raise ValueError(f"table has {table.shape[1]} columns, the {optimizer} layout "
                             f"needs {lay['used']}")
    if y.shape[0] != indptr.shape[0] - 1 or (sample_weight.shape[0] not in (0, y.shape[0])):
        raise ValueError("y / sample_weight do not match the number of rows")
    if bias_state.shape[0] < 3 or counters.shape[0] < 1:
        raise ValueError("bias_state needs 3 values and counters 1")
    if not (0.0 <= dropout < 1.0):
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if loss not in (LOSS_SQUARED, LOSS_LOGISTIC):
        raise ValueError(f"unknown loss code {loss}")
    for i in range(N_PHASES):
        times[i] = 0.0
    stats[0] = stats[1] = stats[2] = 0.0
    if n == 0:
        return 0.0, 0.0, 0

    B = min(batch_size, n)
    # largest number of non-zeros of a batch
    nnz_max = 0
    b0 = 0
    while b0 < n:
        nb = min(B, n - b0)
        tot = 0
        for rr in range(b0, b0 + nb):
            tot += indptr[order[rr] + 1] - indptr[order[rr]]
        nnz_max = max(nnz_max, tot)
        b0 += nb
    if nnz_max >= 2**31 - 1:
        raise ValueError("a batch holds 2^31 or more non-zeros; use a smaller batch_size")
    hsum = 0
    hoff_a = np.zeros(c.L + 1, dtype=np.int64)
    hoff = hoff_a
    for l in range(c.L + 1):
        hoff[l] = hsum
        hsum += B * layer_sizes[l]
    dt = np.float32 if floating is float else np.float64
    hbuf = np.zeros(hsum, dtype=dt)
    gbuf = np.zeros(hsum, dtype=dt)
    srow = np.zeros(B * k, dtype=dt)
    gmlp = grad_mlp if grad_mlp is not None else np.zeros(n_mlp, dtype=dt)
    fm = np.zeros(B)
    gi = np.zeros(B)
    lossv = np.zeros(B)
    scale = np.ones(B)
    slot_of = np.zeros(max(n_feat, 1), dtype=np.int32)
    cap = max(nnz_max, 1)
    uniq = np.empty(cap, dtype=np.int64)
    start = np.zeros(cap + 1, dtype=np.int32)
    occ_dst = np.empty(cap, dtype=np.int32)
    occ_f = np.empty(cap, dtype=np.int32)
    occ_x = np.empty(cap, dtype=dt)
    row_o = np.zeros(B + 1, dtype=np.int64)
    gocc = np.empty(cap * (k + 2), dtype=dt)
    tasks_a = _dense_tasks(layer_sizes)
    tasks = tasks_a.reshape(-1)
    n_tasks = tasks_a.shape[0]
    ts = np.arange(N_CORR + 1, dtype=np.float64)
    with np.errstate(divide="ignore"):
        corr1_a = 1.0 / (1.0 - beta1 ** ts)
        corr2_a = 1.0 / np.sqrt(1.0 - beta2 ** ts)
    corr1 = corr1_a
    corr2 = corr2_a

    c.indptr = &indptr[0]
    c.y = &y[0]
    c.sw = &sample_weight[0] if sample_weight.shape[0] > 0 else NULL
    c.order = &order[0]
    c.mst = &mlp_state[0] if mlp_state.shape[0] > 0 else NULL
    c.bias = &bias_state[0]
    c.loss = loss
    c.optimizer = optimizer
    c.normalize = normalize
    c.fit_intercept = fit_intercept
    c.lr = learning_rate
    c.b1 = beta1
    c.b2 = beta2
    c.eps = eps
    c.l2_w0 = l2_w0
    c.l2_w = l2_w
    c.l2_v = l2_v
    c.l2_dense = l2_dense
    c.drop16 = <uint32_t>(dropout * 65536.0 + 0.5)
    if c.drop16 >= 65536:
        c.drop16 = 65535
    c.inv_keep = 65536.0 / (65536.0 - c.drop16)
    c.seed = seed
    c.step = counters[0]
    c.dc1 = c.dc2 = 1.0
    c.corr1 = &corr1[0]
    c.corr2 = &corr2[0]
    c.hoff = &hoff[0]
    c.hbuf = &hbuf[0]
    c.gbuf = &gbuf[0]
    c.srow = &srow[0]
    c.fm = &fm[0]
    c.gi = &gi[0]
    c.lossv = &lossv[0]
    c.scale = &scale[0]
    c.gmlp = &gmlp[0]
    c.slot_of = &slot_of[0]
    c.uniq = &uniq[0]
    c.start = &start[0]
    c.occ_dst = &occ_dst[0]
    c.occ_f = &occ_f[0]
    c.occ_x = &occ_x[0]
    c.row_o = &row_o[0]
    c.gocc = &gocc[0]
    c.tasks = &tasks[0]
    c.chunk_rows = chunk_rows if chunk_rows > 0 else _chunk_rows(batch_size)
    c.gtab = &grad_table[0, 0] if grad_table is not None else NULL

    with nogil:
        b0 = 0
        while b0 < n:
            nb = min(B, n - b0)
            run_batch(&c, X, ind, tab, b0, nb, nt, n_tasks, stats, times)
            b0 += nb
    counters[0] = c.step
    if phase_times is not None:
        for i in range(min(N_PHASES, phase_times.shape[0])):
            phase_times[i] += times[i]
    return stats[0], stats[1], <Py_ssize_t>stats[2]


def deepfm_train_epoch(*, data, indices, indptr, y, sample_weight, order,
                       table, mlp, mlp_state, bias_state, counters, layer_sizes,
                       int n_factors, int loss, int optimizer,
                       bint fit_intercept=True, bint normalize=False,
                       double learning_rate=1e-3, double beta1=0.9, double beta2=0.999,
                       double eps=1e-8, double l2_w0=0.0, double l2_w=0.0, double l2_v=0.0,
                       double l2_dense=0.0, double dropout=0.0, Py_ssize_t batch_size=256,
                       uint64_t seed=0, int n_threads=1, phase_times=None,
                       Py_ssize_t chunk_rows=0):
    """One epoch of mini-batch training over ``order`` (consecutive batches of
    ``batch_size`` rows).

    IN    data, indices, indptr   CSR rows (validated by the caller)
    IN    y (float64; logistic: -1/+1), sample_weight (float64 or empty), order (int64)
    INOUT table (n_features, stride)  records [w, v, field, optimizer state]
    INOUT mlp (n_mlp), mlp_state (adam 2 n_mlp, adagrad n_mlp)
    INOUT bias_state [w0, m or G, s], counters [dense step count]
    IN    layer_sizes int64 [n_fields * k, hidden...]
    OUT   phase_times (optional, 5 float64): seconds per phase, added to
    chunk_rows: rows per MLP chunk (0: chosen from batch_size; a tuning knob)

    Returns (sum of sw * loss before the updates, sum of sw, rows whose
    prediction was not finite).  BLAS must be single-threaded (see module doc).
    """
    if optimizer not in (OPT_ADAM, OPT_ADAGRAD):
        raise ValueError(f"unknown optimizer code {optimizer}")
    return _run(data, indices, indptr, y, sample_weight, order, table, mlp, mlp_state,
                bias_state, counters, layer_sizes, n_factors, loss, optimizer, fit_intercept,
                normalize, learning_rate, beta1, beta2, eps, l2_w0, l2_w, l2_v, l2_dense,
                dropout, batch_size, seed, n_threads, None, None, phase_times, chunk_rows)


def deepfm_gradients(*, data, indices, indptr, y, sample_weight, order,
                     table, mlp, layer_sizes, double w0, int n_factors, int loss,
                     bint normalize=False, double l2_w0=0.0, double l2_w=0.0,
                     double l2_v=0.0, double l2_dense=0.0, double dropout=0.0,
                     uint64_t seed=0, int n_threads=1, Py_ssize_t chunk_batch=0):
    """Gradients of one batch (all rows of ``order``) without any step: the
    kernel's own forward/backward, for tests.

    Returns (grad_table (n_features, k + 1): d/d[w_j, v_j], zero for rows the
    batch does not touch; grad_mlp (n_mlp); grad_w0; loss sum; weight sum).
    ``chunk_batch`` (if > 0) is the batch size used to choose the MLP chunks.
    """
    dt = np.asarray(table).dtype
    w_off, b_off, out_off, size = mlp_layout(layer_sizes)
    gtab = np.zeros((np.asarray(table).shape[0], n_factors + 1), dtype=dt)
    gmlp = np.zeros(size, dtype=dt)
    bias = np.array([w0, 0.0, 0.0])
    counters = np.zeros(1, dtype=np.int64)
    n = max(len(order), 1)
    res = _run(data, indices, indptr, y, sample_weight, order, table, mlp, np.zeros(0, dt),
               bias, counters, layer_sizes, n_factors, loss, OPT_GRAD, True, normalize,
               0.0, 0.9, 0.999, 1e-8, l2_w0, l2_w, l2_v, l2_dense, dropout,
               n, seed, n_threads, gtab, gmlp, None)
    return gtab, gmlp, float(bias[1]), res[0], res[1]


def dropout_scale(uint64_t seed, Py_ssize_t pos, int layer, Py_ssize_t n_units, double dropout):
    """Multipliers (0 or 1 / keep) that training applies to hidden layer
    ``layer`` (1-based) of the row at epoch position ``pos`` (for tests)."""
    cdef double[::1] h = np.ones(n_units)
    cdef uint32_t drop16 = <uint32_t>(dropout * 65536.0 + 0.5)
    if drop16 >= 65536:
        drop16 = 65535
    if drop16 > 0 and n_units > 0:
        dropout_row(&h[0], n_units, seed, pos, layer, drop16, 65536.0 / (65536.0 - drop16))
    return np.asarray(h)


# --- scoring -----------------------------------------------------------------
cdef void predict_block(Ctx* c, const data_t* X, const index_t* ind, const floating* tab,
                        const floating* mlp, Py_ssize_t blk, Py_ssize_t n_rows, double w0,
                        floating* H, const int64_t* hoff, double* out) noexcept nogil:
    cdef Py_ssize_t r0 = blk * PRED_ROWS
    cdef Py_ssize_t n = min(<Py_ssize_t>PRED_ROWS, n_rows - r0)
    cdef Py_ssize_t r, i, q, start, end
    cdef Py_ssize_t d0 = c.dims[0], dl = c.dims[c.L]
    cdef floating s[MAX_FACTORS]
    cdef double sc
    for r in range(n):
        i = r0 + r
        q = i + PF_ROWS
        if q < n_rows:
            prefetch_records(ind, c.indptr[q], c.indptr[q + 1], tab, c.stride)
        start = c.indptr[i]
        end = c.indptr[i + 1]
        sc = row_scale(X, start, end, c.normalize)
        out[i] = w0 + gather_row(X, ind, start, end, tab, c.stride, c.k, sc, H + r * d0, d0, s,
                                 NULL, NULL)
    mlp_forward(c, mlp, H, hoff, 0, n, False, 0)
    for r in range(n):
        out[r0 + r] += out_dot(H + hoff[c.L] + r * dl, mlp + c.ooff, dl)


cdef struct PredJob:
    Ctx* c
    const void* X
    const void* ind
    const void* tab
    const void* mlp
    void* hbuf          # floating: per-slot block buffers of hsum elements
    Py_ssize_t hsum
    Py_ssize_t n_rows
    double w0
    const int64_t* hoff
    double* out
    int types


cdef inline void pred_blocks(PredJob* j, const data_t* X, const index_t* ind,
                             const floating* tab, int64_t lo, int64_t hi,
                             int slot) noexcept nogil:
    cdef int64_t blk
    cdef floating* H = <floating*>j.hbuf + slot * j.hsum
    for blk in range(lo, hi):
        predict_block(j.c, X, ind, tab, <const floating*>j.mlp, blk, j.n_rows, j.w0, H,
                      j.hoff, j.out)


cdef void pred_range(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef PredJob* j = <PredJob*>p
    if j.types == 0:
        pred_blocks(j, <const float*>j.X, <const int32_t*>j.ind, <const float*>j.tab, lo, hi, slot)
    elif j.types == 1:
        pred_blocks(j, <const float*>j.X, <const int32_t*>j.ind, <const double*>j.tab, lo, hi, slot)
    elif j.types == 2:
        pred_blocks(j, <const double*>j.X, <const int32_t*>j.ind, <const float*>j.tab, lo, hi, slot)
    elif j.types == 3:
        pred_blocks(j, <const double*>j.X, <const int32_t*>j.ind, <const double*>j.tab, lo, hi, slot)
    elif j.types == 4:
        pred_blocks(j, <const float*>j.X, <const int64_t*>j.ind, <const float*>j.tab, lo, hi, slot)
    elif j.types == 5:
        pred_blocks(j, <const float*>j.X, <const int64_t*>j.ind, <const double*>j.tab, lo, hi, slot)
    elif j.types == 6:
        pred_blocks(j, <const double*>j.X, <const int64_t*>j.ind, <const float*>j.tab, lo, hi, slot)
    else:
        pred_blocks(j, <const double*>j.X, <const int64_t*>j.ind, <const double*>j.tab, lo, hi, slot)


def _predict(const data_t[::1] data, const index_t[::1] indices, const int64_t[::1] indptr,
             const floating[:, ::1] table, const floating[::1] mlp,
             const int64_t[::1] layer_sizes,
             double w0, int n_factors, bint normalize, double[::1] out, int n_threads):
    cdef Ctx c
    cdef PredJob job
    cdef list keep = []
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef Py_ssize_t n_blocks, hsum, l, rows
    cdef int nt
    cdef int64_t[::1] hoff
    cdef floating[:, ::1] hbuf
    cdef const data_t* X = &data[0] if data.shape[0] > 0 else NULL
    cdef const index_t* ind = &indices[0] if indices.shape[0] > 0 else NULL
    cdef const floating* tab = &table[0, 0] if table.shape[0] > 0 else NULL
    _setup_model(&c, table, mlp, layer_sizes, n_factors, keep)
    if out.shape[0] != n_rows:
        raise ValueError(f"out has {out.shape[0]} values for {n_rows} rows")
    if n_rows <= 0:
        return
    c.indptr = &indptr[0]
    c.normalize = normalize
    c.drop16 = 0
    c.inv_keep = 1.0
    n_blocks = (n_rows + PRED_ROWS - 1) // PRED_ROWS
    # one buffer per thread that can get a block, of a block's rows
    nt = <int>min(<Py_ssize_t>team(n_threads), n_blocks)
    rows = min(<Py_ssize_t>PRED_ROWS, n_rows)
    hoff_a = np.zeros(c.L + 1, dtype=np.int64)
    hoff = hoff_a
    hsum = 0
    for l in range(c.L + 1):
        hoff[l] = hsum
        hsum += rows * layer_sizes[l]
    hsum = (hsum + 31) // 32 * 32   # whole cache lines per thread
    dt = np.float32 if floating is float else np.float64
    hbuf = np.empty((nt, hsum), dtype=dt)
    job.c = &c
    job.X = X
    job.ind = ind
    job.tab = tab
    job.mlp = &mlp[0]
    job.hbuf = &hbuf[0, 0]
    job.hsum = hsum
    job.n_rows = n_rows
    job.w0 = w0
    job.hoff = &hoff[0]
    job.out = &out[0]
    job.types = _types(X, ind, tab)
    with nogil:
        parallel_for(pred_range, &job, n_blocks, 1, nt)


def deepfm_predict(*, data, indices, indptr, table, mlp, layer_sizes, double w0,
                   int n_factors, bint normalize, out, int n_threads=1):
    """Raw DeepFM scores (float64) of the CSR rows into ``out``: fixed blocks
    of PRED_ROWS rows claimed by the threads of cfm's pool (identical for any
    n_threads).  BLAS must be single-threaded (see module doc)."""
    _predict(data, indices, indptr, table, mlp, layer_sizes, w0, n_factors, normalize, out,
             n_threads)
