/* Small portability layer for cfm's kernels: OpenMP queries that also work in
 * a build without OpenMP, and a software prefetch that compiles to nothing
 * where the compiler has no such builtin. */
#ifndef CFM_COMPAT_H
#define CFM_COMPAT_H

#ifdef _OPENMP
#include <omp.h>
static inline int cfm_openmp_enabled(void) { return 1; }
static inline int cfm_omp_max_threads(void) { return omp_get_max_threads(); }
static inline int cfm_omp_num_procs(void) { return omp_get_num_procs(); }
#else
static inline int cfm_openmp_enabled(void) { return 0; }
static inline int cfm_omp_max_threads(void) { return 1; }
static inline int cfm_omp_num_procs(void) { return 1; }
#endif

#if defined(__GNUC__) || defined(__clang__)
#define CFM_PREFETCH_R(p) __builtin_prefetch((const void *)(p), 0, 3)
#define CFM_PREFETCH_W(p) __builtin_prefetch((const void *)(p), 1, 3)
#define CFM_PREFETCH_L2(p) __builtin_prefetch((const void *)(p), 0, 2)
#else
#define CFM_PREFETCH_R(p) ((void)(p))
#define CFM_PREFETCH_W(p) ((void)(p))
#define CFM_PREFETCH_L2(p) ((void)(p))
#endif

static inline void cfm_prefetch_r(const void *p) { CFM_PREFETCH_R(p); }
static inline void cfm_prefetch_w(const void *p) { CFM_PREFETCH_W(p); }
/* into L2 but not L1 (large bursts of prefetches, see _ffm.prefetch_blocks) */
static inline void cfm_prefetch_l2(const void *p) { CFM_PREFETCH_L2(p); }

#endif
