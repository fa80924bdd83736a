/* Scores of a block of 4 users against every candidate item, for top-k
 * recommendation (src/cfm/_rank.pyx):
 *
 *     buf[b * n + j] = bias[j] + sum_f P[b * k + f] * QT[f * n + j],   b < 4
 *
 * P: the 4 users' summed factors (4 x k, row-major); QT: the candidates'
 * factors transposed (k x n, factor-major), so that each factor row is read
 * once per block of users; bias: the item block.
 *
 * A register-blocked product: 4 users x a tile of items of accumulators
 * held across the factor loop.  An AVX2 + FMA version (24 floats / 12
 * doubles per tile) is compiled with a function attribute and chosen at run
 * time (as cfm_ffm_simd.h does), so the package itself is still built for
 * the x86-64 baseline; the portable version runs everywhere else.  The two
 * differ only by FMA rounding.  (Measured on this machine for 943 users x
 * 1,682 items x 32 factors, float32, one thread: a Cython loop at -O3
 * without -march took 14 ms of CPU, OpenBLAS's sgemm 1.2 ms; calling BLAS
 * from Python per block instead costs its thread pool's spinning, which
 * competed with the selection's threads.)
 */
#ifndef CFM_RANK_BLOCK_H
#define CFM_RANK_BLOCK_H

#include <stdint.h>

#define CFM_RANK_UB 4   /* users per block */

#define CFM_RANK_TILE 8 /* items per tile of the portable version */

/* Columns j0 .. n - 1 of the block, one dot product each (the last items
 * after the tiles). */
#define CFM_RANK_TAIL(T, NAME)                                                          \
static void NAME(const T *P, const T *QT, const T *bias, T *buf, int64_t n, int k,     \
                 int64_t j0) {                                                          \
    int64_t j;                                                                          \
    int f, t;                                                                           \
    for (j = j0; j < n; j++) {                                                          \
        for (t = 0; t < CFM_RANK_UB; t++) {                                             \
            T a = bias[j];                                                              \
            for (f = 0; f < k; f++) a += P[t * k + f] * QT[(int64_t)f * n + j];         \
            buf[t * n + j] = a;                                                         \
        }                                                                               \
    }                                                                                   \
}

CFM_RANK_TAIL(float, cfm_rank_tail_f32)
CFM_RANK_TAIL(double, cfm_rank_tail_f64)

#define CFM_RANK_PORTABLE(T, NAME, TAIL)                                                \
static void NAME(const T *P, const T *QT, const T *bias, T *buf, int64_t n, int k) {    \
    int64_t j0 = 0;                                                                     \
    int f, t;                                                                           \
    for (; j0 + CFM_RANK_TILE <= n; j0 += CFM_RANK_TILE) {                              \
        T a0[CFM_RANK_TILE], a1[CFM_RANK_TILE], a2[CFM_RANK_TILE], a3[CFM_RANK_TILE];   \
        for (t = 0; t < CFM_RANK_TILE; t++)                                             \
            a0[t] = a1[t] = a2[t] = a3[t] = bias[j0 + t];                               \
        for (f = 0; f < k; f++) {                                                       \
            const T *q = QT + (int64_t)f * n + j0;                                      \
            const T p0 = P[f], p1 = P[k + f], p2 = P[2 * k + f], p3 = P[3 * k + f];     \
            for (t = 0; t < CFM_RANK_TILE; t++) {                                       \
                a0[t] += p0 * q[t]; a1[t] += p1 * q[t];                                 \
                a2[t] += p2 * q[t]; a3[t] += p3 * q[t];                                 \
            }                                                                           \
        }                                                                               \
        for (t = 0; t < CFM_RANK_TILE; t++) {                                           \
            buf[j0 + t] = a0[t]; buf[n + j0 + t] = a1[t];                               \
            buf[2 * n + j0 + t] = a2[t]; buf[3 * n + j0 + t] = a3[t];                   \
        }                                                                               \
    }                                                                                   \
    TAIL(P, QT, bias, buf, n, k, j0);                                                   \
}

CFM_RANK_PORTABLE(float, cfm_rank_block_f32_portable, cfm_rank_tail_f32)
CFM_RANK_PORTABLE(double, cfm_rank_block_f64_portable, cfm_rank_tail_f64)

/* The first j' >= j with row[j'] > thr, or n: the scan of the top-k
 * selection, which enters a candidate only above the worst kept score
 * (NaN never compares above). */
#define CFM_RANK_NEXT_PORTABLE(T, NAME)                                                 \
static inline int64_t NAME(const T *row, int64_t j, int64_t n, T thr) {                 \
    for (; j < n; j++)                                                                  \
        if (row[j] > thr) return j;                                                     \
    return n;                                                                           \
}

CFM_RANK_NEXT_PORTABLE(float, cfm_rank_next_f32_portable)
CFM_RANK_NEXT_PORTABLE(double, cfm_rank_next_f64_portable)

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#include <immintrin.h>

static int cfm_rank_avx2_state = -1;

static inline int cfm_rank_have_avx2(void) {
    if (cfm_rank_avx2_state < 0) {
        __builtin_cpu_init();
        cfm_rank_avx2_state = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cfm_rank_avx2_state;
}

/* W: lanes per register; 3 registers per user row (a tile of 3 W items):
 * 12 accumulators, 3 loads of Q^T and 4 broadcasts per 12 FMAs */
#define CFM_RANK_AVX2(T, NAME, TAIL, V, W, LOAD, STORE, BCAST, FMA)                     \
__attribute__((target("avx2,fma")))                                                     \
static void NAME(const T *P, const T *QT, const T *bias, T *buf, int64_t n, int k) {    \
    int64_t j0 = 0;                                                                     \
    int f;                                                                              \
    for (; j0 + 3 * W <= n; j0 += 3 * W) {                                              \
        const V b0 = LOAD(bias + j0), b1 = LOAD(bias + j0 + W), b2 = LOAD(bias + j0 + 2 * W); \
        V a00 = b0, a01 = b1, a02 = b2, a10 = b0, a11 = b1, a12 = b2;                   \
        V a20 = b0, a21 = b1, a22 = b2, a30 = b0, a31 = b1, a32 = b2;                   \
        for (f = 0; f < k; f++) {                                                       \
            const T *q = QT + (int64_t)f * n + j0;                                      \
            const V q0 = LOAD(q), q1 = LOAD(q + W), q2 = LOAD(q + 2 * W);               \
            V p = BCAST(P + f);                                                         \
            a00 = FMA(p, q0, a00); a01 = FMA(p, q1, a01); a02 = FMA(p, q2, a02);        \
            p = BCAST(P + k + f);                                                       \
            a10 = FMA(p, q0, a10); a11 = FMA(p, q1, a11); a12 = FMA(p, q2, a12);        \
            p = BCAST(P + 2 * k + f);                                                   \
            a20 = FMA(p, q0, a20); a21 = FMA(p, q1, a21); a22 = FMA(p, q2, a22);        \
            p = BCAST(P + 3 * k + f);                                                   \
            a30 = FMA(p, q0, a30); a31 = FMA(p, q1, a31); a32 = FMA(p, q2, a32);        \
        }                                                                               \
        STORE(buf + j0, a00); STORE(buf + j0 + W, a01); STORE(buf + j0 + 2 * W, a02);   \
        STORE(buf + n + j0, a10); STORE(buf + n + j0 + W, a11);                         \
        STORE(buf + n + j0 + 2 * W, a12);                                               \
        STORE(buf + 2 * n + j0, a20); STORE(buf + 2 * n + j0 + W, a21);                 \
        STORE(buf + 2 * n + j0 + 2 * W, a22);                                           \
        STORE(buf + 3 * n + j0, a30); STORE(buf + 3 * n + j0 + W, a31);                 \
        STORE(buf + 3 * n + j0 + 2 * W, a32);                                           \
    }                                                                                   \
    TAIL(P, QT, bias, buf, n, k, j0);                                                   \
}

CFM_RANK_AVX2(float, cfm_rank_block_f32_avx2, cfm_rank_tail_f32, __m256, 8,
              _mm256_loadu_ps, _mm256_storeu_ps, _mm256_broadcast_ss, _mm256_fmadd_ps)
CFM_RANK_AVX2(double, cfm_rank_block_f64_avx2, cfm_rank_tail_f64, __m256d, 4,
              _mm256_loadu_pd, _mm256_storeu_pd, _mm256_broadcast_sd, _mm256_fmadd_pd)

/* the scan 8 floats / 4 doubles at a time (one compare and movemask) */
#define CFM_RANK_NEXT_AVX2(T, NAME, PORTABLE, V, W, LOAD, SET1, CMP, MASK)              \
__attribute__((target("avx2")))                                                         \
static int64_t NAME(const T *row, int64_t j, int64_t n, T thr) {                        \
    const V t = SET1(thr);                                                              \
    for (; j + W <= n; j += W) {                                                        \
        int m = MASK(CMP(LOAD(row + j), t, _CMP_GT_OQ));                                \
        if (m) return j + __builtin_ctz((unsigned)m);                                   \
    }                                                                                   \
    return PORTABLE(row, j, n, thr);                                                    \
}

CFM_RANK_NEXT_AVX2(float, cfm_rank_next_f32_avx2, cfm_rank_next_f32_portable, __m256, 8,
                   _mm256_loadu_ps, _mm256_set1_ps, _mm256_cmp_ps, _mm256_movemask_ps)
CFM_RANK_NEXT_AVX2(double, cfm_rank_next_f64_avx2, cfm_rank_next_f64_portable, __m256d, 4,
                   _mm256_loadu_pd, _mm256_set1_pd, _mm256_cmp_pd, _mm256_movemask_pd)

static inline int64_t cfm_rank_next_f32(const float *row, int64_t j, int64_t n, float thr,
                                        int avx2) {
    return avx2 ? cfm_rank_next_f32_avx2(row, j, n, thr)
                : cfm_rank_next_f32_portable(row, j, n, thr);
}

static inline int64_t cfm_rank_next_f64(const double *row, int64_t j, int64_t n, double thr,
                                        int avx2) {
    return avx2 ? cfm_rank_next_f64_avx2(row, j, n, thr)
                : cfm_rank_next_f64_portable(row, j, n, thr);
}

static inline void cfm_rank_block_f32(const float *P, const float *QT, const float *bias,
                                      float *buf, int64_t n, int k, int avx2) {
    if (avx2) cfm_rank_block_f32_avx2(P, QT, bias, buf, n, k);
    else cfm_rank_block_f32_portable(P, QT, bias, buf, n, k);
}

static inline void cfm_rank_block_f64(const double *P, const double *QT, const double *bias,
                                      double *buf, int64_t n, int k, int avx2) {
    if (avx2) cfm_rank_block_f64_avx2(P, QT, bias, buf, n, k);
    else cfm_rank_block_f64_portable(P, QT, bias, buf, n, k);
}

#else
static inline int cfm_rank_have_avx2(void) { return 0; }

static inline int64_t cfm_rank_next_f32(const float *row, int64_t j, int64_t n, float thr,
                                        int avx2) {
    (void)avx2;
    return cfm_rank_next_f32_portable(row, j, n, thr);
}

static inline int64_t cfm_rank_next_f64(const double *row, int64_t j, int64_t n, double thr,
                                        int avx2) {
    (void)avx2;
    return cfm_rank_next_f64_portable(row, j, n, thr);
}

static inline void cfm_rank_block_f32(const float *P, const float *QT, const float *bias,
                                      float *buf, int64_t n, int k, int avx2) {
    (void)avx2;
    cfm_rank_block_f32_portable(P, QT, bias, buf, n, k);
}

static inline void cfm_rank_block_f64(const double *P, const double *QT, const double *bias,
                                      double *buf, int64_t n, int k, int avx2) {
    (void)avx2;
    cfm_rank_block_f64_portable(P, QT, bias, buf, n, k);
}
#endif

#endif /* CFM_RANK_BLOCK_H */
