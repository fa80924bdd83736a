"""Text output: score columns for the batch scoring engine (cfm/scoring.py,
``format_scores``) and data rows as libsvm / libffm text (cfm.data's
writers, ``format_rows``).

``format_scores`` writes one number per line, exactly as C's
``'%.{precision}g'`` (glibc: correctly rounded), optionally after a logistic
sigmoid, in parallel over row ranges without the GIL; ``np.savetxt`` formats
one Python float at a time and is ~20x slower.

Fast path (most values): for 1e-4 <= |x| < 1e9 and precision <= 9 the
``precision`` significant digits are ``round(|x| * 10**s)`` for the power of
ten s that puts them before the point; that product is within half an ulp
(< 1.2e-7) of the exact one, so its rounding is the exact one unless the
fraction lies within 1e-6 of one half -- those values, and all others, go to
``snprintf``.  The output is byte-identical to ``snprintf`` either way.
"""
import numpy as np

from libc.math cimport exp, isfinite, signbit
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdio cimport snprintf
from libc.stdlib cimport malloc, free

from cfm._common cimport join_buffers
from cfm._pool cimport parallel_for, team
from cfm._textparse cimport free_buffers, new_buffers

# widest line: sign, 17 digits, '.', 'e-308', newline (< 32 bytes); 40 for safety
DEF LINE_MAX = 40
# rows per piece of format_scores handed to a thread
DEF PIECE_ROWS = 16384


cdef inline double sigmoid(double z) noexcept nogil:
    # same branch structure as cfm.models._sigmoid (no overflow for large |z|)
    cdef double e
    if z >= 0:
        return 1.0 / (1.0 + exp(-z))
    e = exp(z)
    return e / (1.0 + e)


cdef double[32] POW10
cdef int _i
for _i in range(32):
    POW10[_i] = 10.0 ** _i   # exact up to 1e22


cdef inline char* fast_g(char* q, double x, int precision) noexcept nogil:
    """'%.{precision}g' of x, or NULL when the fast path does not apply."""
    cdef bint neg = x < 0
    cdef double a = -x if neg else x
    cdef int e = 0, s, i, nd, last
    cdef double y, f
    cdef uint64_t m
    cdef char[24] dig
    if precision > 9 or not (a >= 1e-4 and a < 1e9):
        return NULL
    # decimal exponent e: 10**e <= a < 10**(e+1) (checked again on y below)
    if a >= 1.0:
        while e < 15 and a >= POW10[e + 1]:
            e += 1
    else:
        e = -1
        while e > -4 and a < 1.0 / POW10[-e]:
            e -= 1
    if e >= precision:
        return NULL  # %g writes an exponent
    s = precision - 1 - e          # in [0, 12]: POW10[s] is exact
    y = a * POW10[s]
    if y < POW10[precision - 1] or y >= POW10[precision]:
        return NULL
    m = <uint64_t>y
    f = y - <double>m
    if f > 0.5 - 1e-6 and f < 0.5 + 1e-6:
        return NULL
    if f > 0.5:
        m += 1
    if m >= <uint64_t>POW10[precision]:   # 9.999..95 -> 10.00..
        m = m // 10
        e += 1
        if e >= precision:
            return NULL  # %g switches to the exponent form
    # digits of m, most significant first
    for i in range(precision - 1, -1, -1):
        dig[i] = <char>(48 + m % 10)
        m = m // 10
    last = precision - 1          # strip trailing zeros (%g)
    while last > 0 and dig[last] == 48 and last > e:
        last -= 1
    if neg:
        q[0] = 45
        q += 1
    if e >= 0:
        for i in range(e + 1):
            q[0] = dig[i]
            q += 1
        if last > e:
            q[0] = 46
            q += 1
            for i in range(e + 1, last + 1):
                q[0] = dig[i]
                q += 1
    else:
        q[0] = 48
        q[1] = 46
        q += 2
        for i in range(-e - 1):
            q[0] = 48
            q += 1
        for i in range(last + 1):
            q[0] = dig[i]
            q += 1
    q[0] = 10
    return q + 1


cdef Py_ssize_t format_range(char* b, const double* v, Py_ssize_t r0, Py_ssize_t r1,
                             int precision, bint apply_sigmoid, bint fast) noexcept nogil:
    cdef char* q = b
    cdef char* r
    cdef Py_ssize_t i
    cdef double x
    for i in range(r0, r1):
        x = v[i]
        if apply_sigmoid:
            x = sigmoid(x)
        if x == 0.0:
            x = 0.0  # no '-0'
        r = fast_g(q, x, precision) if fast else NULL
        if r != NULL:
            q = r
        else:
            q += snprintf(q, LINE_MAX, "%.*g\n", precision, x)
    return q - b


cdef struct Format:
    const double* v
    const Py_ssize_t* bounds   # piece t: rows bounds[t] .. bounds[t + 1]
    char** bufs
    Py_ssize_t* sizes
    int precision
    bint apply_sigmoid, fast, fail


cdef void format_task(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef Format* c = <Format*>p
    cdef int64_t t
    for t in range(lo, hi):
        c.bufs[t] = <char*>malloc((c.bounds[t + 1] - c.bounds[t]) * LINE_MAX + 1)
        if c.bufs[t] == NULL:
            c.fail = True
        else:
            c.sizes[t] = format_range(c.bufs[t], c.v, c.bounds[t], c.bounds[t + 1],
                                      c.precision, c.apply_sigmoid, c.fast)


def format_scores(const double[::1] values, int precision=9, bint apply_sigmoid=False,
                  int n_threads=1, bint fast=True):
    """Format ``values`` as text, one ``'%.{precision}g'`` number per line.

    Parameters
    ----------
    values : float64 array
    precision : int in [1, 17]
        Significant digits (9 round-trips any float32, 17 any float64).
    apply_sigmoid : bool
        Write ``1 / (1 + exp(-v))`` instead of ``v`` (probabilities).
    n_threads : int
        Threads (pieces of PIECE_ROWS rows formatted in parallel by cfm's
        worker pool, joined in order).
    fast : bool
        Use the fast path where it applies (False: ``snprintf`` only; same bytes).

    Returns
    -------
    bytearray
    """
    if precision < 1 or precision > 17:
        raise ValueError(f"precision must be in [1, 17], got {precision}")
    cdef Py_ssize_t n = values.shape[0]
    if n == 0:
        return bytearray()
    # pieces of about PIECE_ROWS rows (~0.5-1 ms each), which any thread claims
    cdef int n_pieces = <int>min((n + PIECE_ROWS - 1) // PIECE_ROWS, 4096)
    cdef Py_ssize_t[::1] bounds = np.linspace(0, n, n_pieces + 1).astype(np.intp)
    cdef Py_ssize_t[::1] sizes = np.zeros(n_pieces, dtype=np.intp)
    cdef char** bufs = new_buffers(n_pieces)
    cdef Format c
    c.v = &values[0]
    c.bounds = &bounds[0]
    c.bufs = bufs
    c.sizes = &sizes[0]
    c.precision = precision
    c.apply_sigmoid = apply_sigmoid
    c.fast = fast
    c.fail = False
    try:
        with nogil:
            parallel_for(format_task, &c, n_pieces, 1, team(n_threads))
        if c.fail:
            raise MemoryError()
        return join_buffers(bufs, sizes, n_pieces)
    finally:
        free_buffers(bufs, n_pieces)


ctypedef fused idx_t:
    int32_t
    int64_t


# --------------------------------------------------------------------------
# Data rows as libsvm / libffm text (cfm.data.dump_libsvm / dump_libffm)
# --------------------------------------------------------------------------

cdef inline char* put_uint(char* q, uint64_t v) noexcept nogil:
    cdef char[24] tmp
    cdef int n = 0
    if v == 0:
        q[0] = 48
        return q + 1
    while v:
        tmp[n] = <char>(48 + v % 10)
        v //= 10
        n += 1
    while n:
        n -= 1
        q[0] = tmp[n]
        q += 1
    return q


cdef inline char* put_double(char* q, double v, bint f32) noexcept nogil:
    """'%.9g' (float32) or '%.17g' (float64), with a fast path for small integers."""
    cdef double lim = 1e9 if f32 else 1e17
    if isfinite(v) and v == <double>(<int64_t>v) and v > -lim and v < lim and not (v == 0 and signbit(v)):
        if v < 0:
            q[0] = 45
            q += 1
            return put_uint(q, <uint64_t>(-<int64_t>v))
        return put_uint(q, <uint64_t>(<int64_t>v))
    if f32:
        return q + snprintf(q, 40, "%.9g", v)
    return q + snprintf(q, 40, "%.17g", v)


ctypedef fused val_t:
    float
    double


cdef Py_ssize_t rows_range(char* b, const int64_t* indptr, const idx_t* indices,
                             const val_t* data, const double* labels, const int32_t* fields,
                             bint with_fields, int64_t index_offset, Py_ssize_t r0,
                             Py_ssize_t r1) noexcept nogil:
    cdef bint f32 = val_t is float
    cdef char* q = b
    cdef Py_ssize_t r, k
    for r in range(r0, r1):
        q = put_double(q, labels[r], False)
        for k in range(indptr[r], indptr[r + 1]):
            q[0] = 32
            q += 1
            if with_fields:
                q = put_uint(q, <uint64_t>fields[indices[k]])
                q[0] = 58
                q += 1
            q = put_uint(q, <uint64_t>(indices[k] + index_offset))
            q[0] = 58
            q += 1
            q = put_double(q, data[k], f32)
        q[0] = 10
        q += 1
    return q - b


cdef struct RowsJob:
    const int64_t* indptr
    const void* indices
    const void* data
    const double* labels
    const int32_t* fields
    bint with_fields, fail
    int64_t index_offset
    const Py_ssize_t* bounds
    char** bufs
    Py_ssize_t* sizes
    int types


cdef inline void rows_piece(RowsJob* job, const idx_t* indices, const val_t* data,
                              int64_t t) noexcept nogil:
    cdef const Py_ssize_t* bounds = job.bounds
    # upper bound: label 32 + per nonzero (2 ints <= 21 each + value <= 32 + 3)
    cdef Py_ssize_t cap = (bounds[t + 1] - bounds[t]) * 34 + (
        job.indptr[bounds[t + 1]] - job.indptr[bounds[t]]) * 80 + 64
    cdef char* b = <char*>malloc(cap)
    job.bufs[t] = b
    if b == NULL:
        job.fail = True
    else:
        job.sizes[t] = rows_range(b, job.indptr, indices, data, job.labels, job.fields,
                                    job.with_fields, job.index_offset, bounds[t], bounds[t + 1])


cdef void rows_task(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef RowsJob* job = <RowsJob*>p
    cdef int64_t t
    for t in range(lo, hi):
        if job.types == 0:
            rows_piece(job, <const int32_t*>job.indices, <const float*>job.data, t)
        elif job.types == 1:
            rows_piece(job, <const int64_t*>job.indices, <const float*>job.data, t)
        elif job.types == 2:
            rows_piece(job, <const int32_t*>job.indices, <const double*>job.data, t)
        else:
            rows_piece(job, <const int64_t*>job.indices, <const double*>job.data, t)


def format_rows(const int64_t[::1] indptr, const idx_t[::1] indices, const val_t[::1] data,
                const double[::1] labels, const int32_t[::1] fields, bint with_fields,
                int64_t index_offset, Py_ssize_t row_start, Py_ssize_t row_end, int n_threads=1):
    """Format rows [row_start, row_end) as libsvm / libffm text; returns bytes.

    Labels are written with '%.17g', values with '%.9g' (float32) or '%.17g'
    (float64), so that parsing the text gives back the same numbers.
    """
    cdef bint f32 = val_t is float
    cdef int nt = team(n_threads)
    cdef Py_ssize_t n_rows = row_end - row_start
    if n_rows <= 0:
        return b""
    # pieces that any thread claims (4 per thread: a thread the OS sets aside
    # leaves little for the others to wait for)
    cdef int n_pieces = <int>min(n_rows, 4 * nt if nt > 1 else 1)
    cdef Py_ssize_t[::1] bounds = np.linspace(row_start, row_end, n_pieces + 1).astype(np.intp)
    cdef Py_ssize_t[::1] sizes = np.zeros(n_pieces, dtype=np.intp)
    cdef char** bufs = new_buffers(n_pieces)
    cdef RowsJob job
    job.indptr = &indptr[0]
    job.indices = &indices[0] if indices.shape[0] else NULL
    job.data = &data[0] if data.shape[0] else NULL
    job.labels = &labels[0]
    job.fields = &fields[0] if fields.shape[0] else NULL
    job.with_fields = with_fields
    job.index_offset = index_offset
    job.bounds = &bounds[0]
    job.bufs = bufs
    job.sizes = &sizes[0]
    job.fail = False
    job.types = (sizeof(idx_t) == 8) + 2 * (sizeof(val_t) == 8)
    try:
        with nogil:
            parallel_for(rows_task, &job, n_pieces, 1, nt)
        if job.fail:
            raise MemoryError()
        return join_buffers(bufs, sizes, n_pieces)
    finally:
        free_buffers(bufs, n_pieces)
