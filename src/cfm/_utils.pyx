"""Input validation kernels and build information.

``check_csr`` verifies in one nogil pass everything the kernels trust:
row offsets start at 0, never decrease and end at nnz; every column index is
in [0, n_features); every value is finite.  It returns a status code and the
position of the first problem so that Python can raise a precise error.
"""
import numpy as np

from libc.math cimport isfinite
from libc.stdint cimport int32_t, int64_t

from cfm._common cimport (data_t, index_t, cfm_openmp_enabled, cfm_omp_max_threads,
                          cfm_omp_num_procs, chunk_rows)
from cfm._pool cimport parallel_for, team

cdef enum:
    CHUNK_NNZ = 65536   # non-zeros per chunk of check_csr (~50 us)
    CHUNK_VALUES = 65536  # values per chunk of all_finite

# Status codes of check_csr: cpdef enum in src/cfm/_utils.pxd


cdef inline int check_row(const data_t* data, const index_t* indices, Py_ssize_t start,
                          Py_ssize_t end, int64_t n_features, Py_ssize_t* bad_pos,
                          bint* increasing) noexcept nogil:
    """Status of one row; bad_pos gets the offending position; increasing is
    cleared when the row's indices are not strictly increasing or it stores a
    zero."""
    cdef Py_ssize_t jj
    cdef int64_t j, prev = -1
    for jj in range(start, end):
        j = indices[jj]
        if j < 0 or j >= n_features:
            bad_pos[0] = jj
            return CSR_INDEX_OUT_OF_RANGE
        if not isfinite(data[jj]):
            bad_pos[0] = jj
            return CSR_NONFINITE
        if j <= prev or data[jj] == 0:
            increasing[0] = False
        prev = j
    return CSR_OK


cdef struct CheckCSR:
    const void* X
    const void* ind
    const int64_t* indptr
    int64_t n_rows, n_features
    Py_ssize_t* first     # per slot, 8 apart: first bad row seen (n_rows: none)
    Py_ssize_t* unsorted  # per slot, 8 apart: 1 when a row is not canonical
    int types


cdef inline void check_rows(CheckCSR* c, const data_t* X, const index_t* ind, int64_t lo,
                            int64_t hi, int slot) noexcept nogil:
    cdef Py_ssize_t r, pos = -1
    cdef int st
    cdef bint inc
    cdef Py_ssize_t* first = c.first + 8 * slot
    for r in range(lo, hi):
        # a thread claims chunks in increasing order: rows after its first
        # problem need no scan (an earlier problem, if any, is another
        # chunk's, scanned by whoever claimed it)
        if first[0] != c.n_rows:
            return
        inc = True
        st = check_row(X, ind, c.indptr[r], c.indptr[r + 1], c.n_features, &pos, &inc)
        if st != CSR_OK:
            first[0] = r
        if not inc:
            c.unsorted[8 * slot] = 1


cdef void check_task(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef CheckCSR* c = <CheckCSR*>p
    if c.types == 0:
        check_rows(c, <const float*>c.X, <const int32_t*>c.ind, lo, hi, slot)
    elif c.types == 1:
        check_rows(c, <const double*>c.X, <const int32_t*>c.ind, lo, hi, slot)
    elif c.types == 2:
        check_rows(c, <const float*>c.X, <const int64_t*>c.ind, lo, hi, slot)
    else:
        check_rows(c, <const double*>c.X, <const int64_t*>c.ind, lo, hi, slot)


def check_csr(const data_t[::1] data, const index_t[::1] indices,
              const int64_t[::1] indptr, int64_t n_features, int n_threads=1):
    """Check column indices and values of a CSR matrix in one parallel pass.

    The row offsets must already be valid (start at 0, non-decreasing, end at
    nnz == len(indices) == len(data)); cfm/_validation.py checks them first.
    Returns (status, row, position, canonical): the first problem in row
    order, and whether the matrix can be used as is: every row has strictly
    increasing column indices (no duplicates) and no explicitly stored zeros
    (which would otherwise receive L2 and optimizer updates in training).
    """
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef Py_ssize_t pos = -1, first_bad
    cdef int nt = team(n_threads)
    cdef Py_ssize_t[:, ::1] first = np.full((nt, 8), n_rows, dtype=np.intp)
    cdef Py_ssize_t[:, ::1] unsorted = np.zeros((nt, 8), dtype=np.intp)
    cdef int st, tid
    cdef bint inc
    cdef CheckCSR c
    if n_rows <= 0:
        return CSR_OK, -1, -1, True
    c.X = &data[0] if data.shape[0] > 0 else NULL
    c.ind = &indices[0] if indices.shape[0] > 0 else NULL
    c.indptr = &indptr[0]
    c.n_rows = n_rows
    c.n_features = n_features
    c.first = &first[0, 0]
    c.unsorted = &unsorted[0, 0]
    c.types = (sizeof(data_t) == 8) + 2 * (sizeof(index_t) == 8)
    with nogil:
        parallel_for(check_task, &c, n_rows, chunk_rows(&indptr[0], n_rows, CHUNK_NNZ), nt)
    first_bad = n_rows
    canonical = True
    for tid in range(nt):
        first_bad = min(first_bad, first[tid, 0])
        if unsorted[tid, 0]:
            canonical = False
    if first_bad == n_rows:
        return CSR_OK, -1, -1, canonical
    inc = True
    st = check_row(<const data_t*>c.X, <const index_t*>c.ind, indptr[first_bad],
                   indptr[first_bad + 1], n_features, &pos, &inc)
    return st, first_bad, pos, False


ctypedef fused real_t:
    float
    double


cdef struct AllFinite:
    const void* a
    Py_ssize_t stride, n_cols
    int* bad              # per slot, 16 apart
    bint f64


cdef inline void finite_rows(AllFinite* c, const real_t* a, int64_t lo, int64_t hi,
                             int slot) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef const real_t* row
    for i in range(lo, hi):
        row = a + i * c.stride
        for j in range(c.n_cols):
            if not isfinite(row[j]):
                c.bad[16 * slot] = 1
                return


cdef void finite_task(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef AllFinite* c = <AllFinite*>p
    if c.f64:
        finite_rows(c, <const double*>c.a, lo, hi, slot)
    else:
        finite_rows(c, <const float*>c.a, lo, hi, slot)


def all_finite(const real_t[:, ::1] a, Py_ssize_t n_cols, int n_threads=1):
    """True when a[:, :n_cols] holds no NaN or infinity (parallel over rows)."""
    cdef Py_ssize_t n = a.shape[0]
    cdef int nt = team(n_threads)
    cdef int[:, ::1] bad = np.zeros((nt, 16), dtype=np.intc)
    cdef int t
    cdef AllFinite c
    if n <= 0:
        return True
    c.a = &a[0, 0]
    c.stride = a.shape[1]
    c.n_cols = n_cols
    c.bad = &bad[0, 0]
    c.f64 = real_t is double
    with nogil:
        parallel_for(finite_task, &c, n, max(1, CHUNK_VALUES // max(n_cols, 1)), nt)
    for t in range(nt):
        if bad[t, 0]:
            return False
    return True


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(cfm_openmp_enabled())


def omp_max_threads():
    """OpenMP's default team size (honours OMP_NUM_THREADS and threadpoolctl)."""
    return cfm_omp_max_threads()


def omp_num_procs():
    return cfm_omp_num_procs()
