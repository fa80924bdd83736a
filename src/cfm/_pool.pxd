# cfm's worker threads (src/cfm/cfm_workers.h): the parallel loop every
# kernel uses instead of OpenMP regions.  ``parallel_for(fn, ctx, n, chunk,
# n_threads)`` runs fn(ctx, lo, hi, slot) over [0, n) in chunks of ``chunk``
# items, by the calling thread (slot 0) and up to n_threads - 1 helpers
# (slots 1 .. n_threads - 1); chunks are claimed by whichever thread is free,
# so a helper the OS does not schedule delays nothing.
from libc.stdint cimport int64_t

ctypedef void (*range_fn)(void* ctx, int64_t lo, int64_t hi, int slot) noexcept nogil

cdef int parallel_for(range_fn fn, void* ctx, int64_t n, int64_t chunk,
                      int n_threads) noexcept nogil

cdef enum:
    # most threads of one parallel loop (the caller + CFM_MAX_WORKERS helpers
    # of cfm_workers.h); kernels size per-thread buffers with team(n_threads)
    MAX_TEAM = 1025


cdef inline int team(int n_threads) noexcept nogil:
    """Threads a kernel prepares per-thread buffers for: n_threads in
    [1, MAX_TEAM] (the Python layer already caps n_jobs far below)."""
    if n_threads < 1:
        return 1
    return n_threads if n_threads < MAX_TEAM else MAX_TEAM
