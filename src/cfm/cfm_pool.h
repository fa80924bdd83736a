/* Minimal helpers for cfm's "claim and help" parallel jobs (src/cfm/_mcmc.pyx):
 * atomics, a CPU pause, yield, and detached helper threads.
 *
 * Unlike an OpenMP region, a job never waits for a helper thread to arrive:
 * threads claim work items from a shared counter, so on a machine whose cores
 * are busy a descheduled helper costs nothing (the calling thread does the
 * work).  Where threads are unavailable (no pthreads) cfm_spawn_detached fails
 * and the caller does all the work itself, with the same results. */
#ifndef CFM_POOL_H
#define CFM_POOL_H

#include <stdint.h>

#if defined(_WIN32)
#define CFM_HAVE_THREADS 0
#else
#define CFM_HAVE_THREADS 1
#include <pthread.h>
#include <sched.h>
#endif

static inline int64_t cfm_atomic_fetch_add(int64_t *p, int64_t v) {
#if defined(__GNUC__) || defined(__clang__)
    return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL);
#else
    int64_t old = *p; *p += v; return old;   /* single-threaded fallback */
#endif
}

static inline int64_t cfm_atomic_load(const int64_t *p) {
#if defined(__GNUC__) || defined(__clang__)
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
#else
    return *(volatile const int64_t *)p;
#endif
}

static inline int cfm_atomic_cas(int64_t *p, int64_t expected, int64_t desired) {
#if defined(__GNUC__) || defined(__clang__)
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL,
                                       __ATOMIC_ACQUIRE);
#else
    if (*p != expected) return 0;
    *p = desired; return 1;
#endif
}

static inline void cfm_cpu_relax(void) {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __builtin_ia32_pause();
#endif
}

static inline void cfm_yield(void) {
#if CFM_HAVE_THREADS
    sched_yield();
#endif
}

/* Start fn(arg) on a detached thread; 0 on success. */
static inline int cfm_spawn_detached(void *(*fn)(void *), void *arg) {
#if CFM_HAVE_THREADS && (defined(__GNUC__) || defined(__clang__))
    pthread_t t;
    pthread_attr_t attr;
    int rc;
    if (pthread_attr_init(&attr) != 0) return -1;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    return rc;
#else
    (void)fn; (void)arg;
    return -1;
#endif
}

#endif
