"""Input validation kernels and build information.

``check_csr`` verifies in one nogil pass everything the kernels trust:
row offsets start at 0, never decrease and end at nnz; every column index is
in [0, n_features); every value is finite.  It returns a status code and the
position of the first problem so that Python can raise a precise error.
"""
import numpy as np

from cython.parallel cimport prange, parallel, threadid
from libc.math cimport isfinite
from libc.stdint cimport int64_t

from cfm._common cimport data_t, index_t, cfm_openmp_enabled, cfm_omp_max_threads, cfm_omp_num_procs

# Status codes of check_csr (keep in sync with cfm/_validation.py)
cpdef enum:
    CSR_OK = 0
    CSR_BAD_FIRST_OFFSET = 1
    CSR_DECREASING_OFFSET = 2
    CSR_BAD_LAST_OFFSET = 3
    CSR_INDEX_OUT_OF_RANGE = 4
    CSR_NONFINITE = 5


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
    cdef Py_ssize_t r, pos = -1, first_bad
    cdef int nt = max(1, n_threads)
    cdef Py_ssize_t[:, ::1] first = np.full((nt, 8), n_rows, dtype=np.intp)
    cdef Py_ssize_t[:, ::1] unsorted = np.zeros((nt, 8), dtype=np.intp)
    cdef int st, tid
    cdef bint inc
    cdef const data_t* X = &data[0] if data.shape[0] > 0 else NULL
    cdef const index_t* ind = &indices[0] if indices.shape[0] > 0 else NULL
    if n_rows <= 0:
        return CSR_OK, -1, -1, True
    with nogil, parallel(num_threads=nt):
        for r in prange(n_rows, schedule='static'):
            tid = threadid()
            if first[tid, 0] == n_rows:  # rows after a problem need no scan
                inc = True
                st = check_row(X, ind, indptr[r], indptr[r + 1], n_features, &pos, &inc)
                if st != CSR_OK:
                    first[tid, 0] = r
                if not inc:
                    unsorted[tid, 0] = 1
    first_bad = n_rows
    canonical = True
    for tid in range(nt):
        first_bad = min(first_bad, first[tid, 0])
        if unsorted[tid, 0]:
            canonical = False
    if first_bad == n_rows:
        return CSR_OK, -1, -1, canonical
    inc = True
    st = check_row(X, ind, indptr[first_bad], indptr[first_bad + 1], n_features, &pos, &inc)
    return st, first_bad, pos, False


ctypedef fused real_t:
    float
    double


def all_finite(const real_t[:, ::1] a, Py_ssize_t n_cols, int n_threads=1):
    """True when a[:, :n_cols] holds no NaN or infinity (parallel over rows)."""
    cdef Py_ssize_t n = a.shape[0]
    cdef Py_ssize_t i, j
    cdef int bad = 0
    with nogil:
        for i in prange(n, schedule='static', num_threads=max(1, n_threads)):
            for j in range(n_cols):
                if not isfinite(a[i, j]):
                    bad += 1
                    break
    return bad == 0


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(cfm_openmp_enabled())


def omp_max_threads():
    """OpenMP's default team size (honours OMP_NUM_THREADS and threadpoolctl)."""
    return cfm_omp_max_threads()


def omp_num_procs():
    return cfm_omp_num_procs()
