"""Input validation kernels and build information.

``check_csr`` verifies in one nogil pass everything the kernels trust:
row offsets start at 0, never decrease and end at nnz; every column index is
in [0, n_features); every value is finite.  It returns a status code and the
position of the first problem so that Python can raise a precise error.
"""
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


def check_csr(const data_t[::1] data, const index_t[::1] indices,
              const int64_t[::1] indptr, int64_t n_features):
    """Return (status, row, position) of the first problem, or (0, -1, -1)."""
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef Py_ssize_t nnz = indices.shape[0]
    cdef Py_ssize_t r, jj
    cdef int64_t j
    cdef int status = 0
    cdef Py_ssize_t bad_row = -1, bad_pos = -1
    if data.shape[0] != nnz:
        return CSR_BAD_LAST_OFFSET, -1, -1
    if n_rows < 0 or indptr[0] != 0:
        return CSR_BAD_FIRST_OFFSET, 0, -1
    if indptr[n_rows] != nnz:
        return CSR_BAD_LAST_OFFSET, n_rows, -1
    with nogil:
        for r in range(n_rows):
            if indptr[r + 1] < indptr[r] or indptr[r + 1] > nnz:
                status = CSR_DECREASING_OFFSET
                bad_row = r
                break
            for jj in range(indptr[r], indptr[r + 1]):
                j = indices[jj]
                if j < 0 or j >= n_features:
                    status = CSR_INDEX_OUT_OF_RANGE
                    break
                if not isfinite(data[jj]):
                    status = CSR_NONFINITE
                    break
            if status != 0:
                bad_row = r
                bad_pos = jj
                break
    return status, bad_row, bad_pos


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(cfm_openmp_enabled())


def omp_max_threads():
    """OpenMP's default team size (honours OMP_NUM_THREADS and threadpoolctl)."""
    return cfm_omp_max_threads()


def omp_num_procs():
    return cfm_omp_num_procs()
