/* cfm's worker threads: a process-wide pool of helper threads that sleep when
 * idle, and a "claim and help" parallel loop on top of it.  Included by
 * src/cfm/_pool.pyx only (one pool per process); the other kernels reach it
 * through cfm._pool's cimported functions.
 *
 * Why not OpenMP's parallel regions: a region ends with a barrier at which the
 * calling thread waits for every team thread to arrive, including one the OS
 * has not scheduled yet; and libgomp's idle threads spin (GOMP_SPINCOUNT)
 * before they sleep, which takes CPU time from the process's own caller and
 * from everything else on the machine.  On a busy machine many small calls
 * then run several times slower with two threads than with one (issue 11,
 * item 9).  Here:
 *
 *   - the calling thread starts working at once and never waits for a helper
 *     to arrive: the work is cut into chunks that any thread claims from a
 *     shared counter, so chunks a late helper did not take are done by the
 *     caller; the caller waits only for chunks a helper has already claimed;
 *   - idle helpers sleep on a condition variable (no spinning), and a waiting
 *     caller spins for at most WAIT_SPIN_NS before it sleeps too;
 *   - a helper that cannot be created (thread limit, memory limit) is simply
 *     missing: the work is done by the threads there are, never an error or
 *     a process exit (libgomp calls exit(1) when pthread_create fails);
 *   - the pool never holds more than CFM_MAX_WORKERS threads, and no more than
 *     the largest team asked for minus one (the caller works too).
 *
 * Results never depend on which thread runs a chunk: kernels write per-chunk
 * outputs, or per-slot partial results merged in slot order.
 *
 * After fork() the child starts with an empty pool (pthread_atfork). */
#ifndef CFM_WORKERS_H
#define CFM_WORKERS_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cfm_pool.h"

/* Most helper threads the pool ever starts (the Python layer caps n_jobs at
 * a few threads per usable core, see cfm/_validation.py; this is a backstop). */
#define CFM_MAX_WORKERS 1024
/* Stack of a helper thread: the kernels keep at most a few kB on the stack. */
#define CFM_WORKER_STACK (4u << 20)
/* A caller whose helpers still hold claimed chunks spins this long before it
 * sleeps (a claimed chunk is short; sleeping costs a wake-up). */
#define CFM_WAIT_SPIN_NS 20000

typedef void (*cfm_range_fn)(void *ctx, int64_t lo, int64_t hi, int slot);

#if CFM_HAVE_THREADS

typedef struct cfm_job cfm_job;
struct cfm_job {
    /* set by the caller, read-only afterwards */
    cfm_range_fn fn;
    void *ctx;
    int64_t n, chunk;
    /* pool bookkeeping (pool lock) */
    int want;          /* helpers still wanted */
    int next_slot;     /* slot of the next helper (caller: 0) */
    int queued;        /* on the open list */
    cfm_job *next_open;
    int64_t refs;      /* atomic: caller + helpers holding the job */
    char pad0[64];
    int64_t claim;     /* atomic: first unclaimed item */
    char pad1[64];
    int64_t done;      /* atomic: items finished */
    char pad2[64];
    pthread_mutex_t m; /* caller's sleep until done == n */
    pthread_cond_t c;
    int waiting;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    cfm_job *head, *tail; /* jobs wanting helpers, oldest first */
    int n_workers, n_idle;
    int spawn_failed;     /* pthread_create failed (counted, for tests) */
    int test_no_spawn;    /* tests: behave as if no thread can be created */
    int atfork_done;
    /* diagnostics (atomic): jobs run with helpers asked for, chunks run by
     * helpers, and callers' waits for claimed chunks (count, nanoseconds) */
    int64_t jobs, helper_chunks, waits, wait_ns;
} cfm_pool_s = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, 0, 0, 0, 0, 0,
                0, 0, 0, 0};

static void cfm_job_release(cfm_job *j) {
    if (cfm_atomic_fetch_add(&j->refs, -1) == 1) {
        pthread_mutex_destroy(&j->m);
        pthread_cond_destroy(&j->c);
        free(j);
    }
}

/* Claim and run chunks until none is left. */
static void cfm_job_work(cfm_job *j, int slot) {
    int64_t lo, hi, n = j->n, chunk = j->chunk, ran = 0;
    for (;;) {
        lo = cfm_atomic_fetch_add(&j->claim, chunk);
        if (lo >= n) {
            if (slot > 0 && ran > 0) cfm_atomic_fetch_add(&cfm_pool_s.helper_chunks, ran);
            return;
        }
        ran++;
        hi = lo + chunk < n ? lo + chunk : n;
        j->fn(j->ctx, lo, hi, slot);
        if (cfm_atomic_fetch_add(&j->done, hi - lo) + (hi - lo) == n) {
            pthread_mutex_lock(&j->m);
            if (j->waiting) pthread_cond_signal(&j->c);
            pthread_mutex_unlock(&j->m);
        }
    }
}

static void *cfm_worker_main(void *arg) {
    cfm_job *j;
    int slot;
    (void)arg;
#if defined(__linux__) && defined(__GLIBC__)
    pthread_setname_np(pthread_self(), "cfm-worker");  /* for top -H, gdb, py-spy */
#endif
    pthread_mutex_lock(&cfm_pool_s.lock);
    for (;;) {
        while (cfm_pool_s.head == NULL) {
            cfm_pool_s.n_idle++;
            pthread_cond_wait(&cfm_pool_s.wake, &cfm_pool_s.lock);
            cfm_pool_s.n_idle--;
        }
        j = cfm_pool_s.head;
        slot = j->next_slot++;
        cfm_atomic_fetch_add(&j->refs, 1);
        if (--j->want <= 0) {
            cfm_pool_s.head = j->next_open;
            if (cfm_pool_s.head == NULL) cfm_pool_s.tail = NULL;
            j->queued = 0;
        }
        pthread_mutex_unlock(&cfm_pool_s.lock);
        cfm_job_work(j, slot);
        cfm_job_release(j);
        pthread_mutex_lock(&cfm_pool_s.lock);
    }
    return NULL;
}

static void cfm_pool_atfork_prepare(void) { pthread_mutex_lock(&cfm_pool_s.lock); }
static void cfm_pool_atfork_parent(void) { pthread_mutex_unlock(&cfm_pool_s.lock); }
static void cfm_pool_atfork_child(void) {
    /* only the forking thread exists in the child: forget the workers and
     * the jobs of other threads (their callers are gone too) */
    pthread_mutex_init(&cfm_pool_s.lock, NULL);
    pthread_cond_init(&cfm_pool_s.wake, NULL);
    cfm_pool_s.head = cfm_pool_s.tail = NULL;
    cfm_pool_s.n_workers = cfm_pool_s.n_idle = 0;
}

/* Start workers until there are `target` (pool lock held). */
static void cfm_pool_grow(int target) {
    pthread_t t;
    pthread_attr_t attr;
    if (target > CFM_MAX_WORKERS) target = CFM_MAX_WORKERS;
    if (cfm_pool_s.n_workers >= target) return;
    if (!cfm_pool_s.atfork_done) {
        if (pthread_atfork(cfm_pool_atfork_prepare, cfm_pool_atfork_parent,
                           cfm_pool_atfork_child) != 0)
            return;  /* no helpers rather than a pool that breaks in a child */
        cfm_pool_s.atfork_done = 1;
    }
    if (pthread_attr_init(&attr) != 0) return;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, CFM_WORKER_STACK);
    while (cfm_pool_s.n_workers < target) {
        if (cfm_pool_s.test_no_spawn || pthread_create(&t, &attr, cfm_worker_main, NULL) != 0) {
            cfm_pool_s.spawn_failed++;
            break;
        }
        cfm_pool_s.n_workers++;
    }
    pthread_attr_destroy(&attr);
}

static int64_t cfm_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* fn(ctx, lo, hi, slot) over [0, n) in chunks of `chunk` items, by the
 * calling thread (slot 0) and up to n_threads - 1 helpers (slots 1, 2, ...).
 * Returns 0, or -1 when the job could not be allocated (the caller then did
 * all the work itself: the result is the same). */
static int cfm_parallel_for(cfm_range_fn fn, void *ctx, int64_t n, int64_t chunk,
                            int n_threads) {
    cfm_job *j;
    int64_t n_chunks, t0;
    int want;
    if (n <= 0) return 0;
    if (chunk < 1) chunk = 1;
    n_chunks = (n + chunk - 1) / chunk;
    want = n_threads - 1;
    if (want > CFM_MAX_WORKERS) want = CFM_MAX_WORKERS;
    if (want > n_chunks - 1) want = (int)(n_chunks - 1);
    if (want <= 0) {
        fn(ctx, 0, n, 0);
        return 0;
    }
    j = (cfm_job *)calloc(1, sizeof(cfm_job));
    if (j == NULL) {
        fn(ctx, 0, n, 0);
        return -1;
    }
    j->fn = fn;
    j->ctx = ctx;
    j->n = n;
    j->chunk = chunk;
    j->refs = 1;
    j->next_slot = 1;
    pthread_mutex_init(&j->m, NULL);
    pthread_cond_init(&j->c, NULL);

    pthread_mutex_lock(&cfm_pool_s.lock);
    cfm_pool_grow(want);
    if (cfm_pool_s.n_workers > 0) {
        j->want = want;
        j->queued = 1;
        if (cfm_pool_s.tail) cfm_pool_s.tail->next_open = j;
        else cfm_pool_s.head = j;
        cfm_pool_s.tail = j;
        if (want >= cfm_pool_s.n_idle) pthread_cond_broadcast(&cfm_pool_s.wake);
        else for (int i = 0; i < want; i++) pthread_cond_signal(&cfm_pool_s.wake);
    }
    pthread_mutex_unlock(&cfm_pool_s.lock);

    cfm_job_work(j, 0);

    /* nothing left to claim: no more helpers may join */
    pthread_mutex_lock(&cfm_pool_s.lock);
    if (j->queued) {
        cfm_job **p = &cfm_pool_s.head;
        cfm_job *prev = NULL;
        while (*p != j) { prev = *p; p = &(*p)->next_open; }
        *p = j->next_open;
        if (cfm_pool_s.tail == j) cfm_pool_s.tail = prev;
        j->queued = 0;
    }
    pthread_mutex_unlock(&cfm_pool_s.lock);

    /* wait for the chunks helpers have claimed */
    cfm_atomic_fetch_add(&cfm_pool_s.jobs, 1);
    if (cfm_atomic_load(&j->done) < n) {
        t0 = cfm_now_ns();
        cfm_atomic_fetch_add(&cfm_pool_s.waits, 1);
        while (cfm_atomic_load(&j->done) < n && cfm_now_ns() - t0 < CFM_WAIT_SPIN_NS)
            cfm_cpu_relax();
        if (cfm_atomic_load(&j->done) < n) {
            pthread_mutex_lock(&j->m);
            j->waiting = 1;
            while (cfm_atomic_load(&j->done) < n) pthread_cond_wait(&j->c, &j->m);
            pthread_mutex_unlock(&j->m);
        }
        cfm_atomic_fetch_add(&cfm_pool_s.wait_ns, cfm_now_ns() - t0);
    }
    cfm_job_release(j);
    return 0;
}

static int cfm_pool_workers(void) {
    int n;
    pthread_mutex_lock(&cfm_pool_s.lock);
    n = cfm_pool_s.n_workers;
    pthread_mutex_unlock(&cfm_pool_s.lock);
    return n;
}

static int cfm_pool_spawn_failures(void) { return cfm_pool_s.spawn_failed; }
static void cfm_pool_stats(int64_t *out) {
    out[0] = cfm_atomic_load(&cfm_pool_s.jobs);
    out[1] = cfm_atomic_load(&cfm_pool_s.helper_chunks);
    out[2] = cfm_atomic_load(&cfm_pool_s.waits);
    out[3] = cfm_atomic_load(&cfm_pool_s.wait_ns);
}
static void cfm_pool_test_no_spawn(int on) {
    pthread_mutex_lock(&cfm_pool_s.lock);
    cfm_pool_s.test_no_spawn = on;
    pthread_mutex_unlock(&cfm_pool_s.lock);
}

#else  /* no threads: the caller does everything */

static int cfm_parallel_for(cfm_range_fn fn, void *ctx, int64_t n, int64_t chunk,
                            int n_threads) {
    (void)chunk; (void)n_threads;
    if (n > 0) fn(ctx, 0, n, 0);
    return 0;
}
static int cfm_pool_workers(void) { return 0; }
static int cfm_pool_spawn_failures(void) { return 0; }
static void cfm_pool_stats(int64_t *out) { out[0] = out[1] = out[2] = out[3] = 0; }
static void cfm_pool_test_no_spawn(int on) { (void)on; }

#endif
#endif
