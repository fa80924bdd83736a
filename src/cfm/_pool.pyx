"""cfm's worker threads: a process-wide pool of helper threads that sleep when
idle, and the "claim and help" parallel loop every kernel runs its parallel
work with (see src/cfm/cfm_workers.h for the design and why it replaces
OpenMP's parallel regions).

Kernels ``cimport parallel_for`` from here; this module holds the one pool of
the process.  The Python functions are for tests and diagnostics.
"""
import numpy as np

from libc.stdint cimport int64_t

cdef extern from "cfm_workers.h" nogil:
    ctypedef void (*cfm_range_fn)(void* ctx, int64_t lo, int64_t hi, int slot) noexcept nogil
    int cfm_parallel_for(cfm_range_fn fn, void* ctx, int64_t n, int64_t chunk, int n_threads)
    int cfm_pool_workers()
    int cfm_pool_spawn_failures()
    void cfm_pool_test_no_spawn(int on)
    void cfm_pool_stats(int64_t* out)
    int CFM_MAX_WORKERS

MAX_WORKERS = CFM_MAX_WORKERS


cdef int parallel_for(range_fn fn, void* ctx, int64_t n, int64_t chunk,
                      int n_threads) noexcept nogil:
    return cfm_parallel_for(<cfm_range_fn>fn, ctx, n, chunk, n_threads)


def workers():
    """Helper threads the pool has started (they sleep when idle)."""
    return cfm_pool_workers()


def spawn_failures():
    """How many times starting a helper thread failed (the work then ran on
    the threads there were)."""
    return cfm_pool_spawn_failures()


def stats():
    """Counters since the process started: parallel jobs run with helpers
    asked for, chunks helpers ran, and the times a calling thread waited for
    chunks helpers had claimed (count and seconds) -- how much a busy
    machine delayed the callers."""
    cdef int64_t[4] s
    cfm_pool_stats(s)
    return {"jobs": s[0], "helper_chunks": s[1], "waits": s[2], "wait_s": s[3] * 1e-9}


def _test_no_spawn(bint on):
    """Tests: behave as if no new thread can be created."""
    cfm_pool_test_no_spawn(on)


cdef struct _Probe:
    int64_t* slot_of
    double* spin


cdef void _probe_range(void* ctx, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef _Probe* p = <_Probe*>ctx
    cdef int64_t i
    cdef double acc = 0.0
    cdef int r
    for i in range(lo, hi):
        p.slot_of[i] = slot
        for r in range(<int>p.spin[0]):
            acc += r * 1e-9
    p.spin[1] += acc * 0.0


def _test_parallel_for(int64_t n, int64_t chunk, int n_threads, int work=0):
    """Run a probe job; returns the slot that handled each item (tests)."""
    out = np.full(max(n, 0), -1, dtype=np.int64)
    cdef int64_t[::1] o = out
    cdef double[2] spin
    cdef _Probe p
    spin[0] = work
    spin[1] = 0
    p.slot_of = &o[0] if n > 0 else NULL
    p.spin = spin
    with nogil:
        parallel_for(_probe_range, &p, n, chunk, n_threads)
    return out
