/* SSE2 inner kernel of the FFM per-pair update (float32, row-wise AdaGrad or
 * SGD), with a portable scalar fallback.  SSE2 is part of the x86-64
 * baseline, so no -march flag is needed.
 *
 * For one pair (a, b) with p1 = v_{a,f(b)}, p2 = v_{b,f(a)} (kp coordinates,
 * kp a multiple of 4, the AdaGrad accumulator at index kp):
 *     g1 = l2 * p1 + kappa * p2,   g2 = l2 * p2 + kappa * p1
 *     AdaGrad: G_i += sum(g_i^2) / k;  p_i -= lr / sqrt(G_i) * g_i
 *     SGD:     p_i -= lr * g_i
 * g1, g2 are computed from the values before this pair's update.  p1 and p2
 * must not overlap (different features' blocks).  Vectors need not be
 * aligned (unaligned loads).
 */
#ifndef CFM_FFM_SIMD_H
#define CFM_FFM_SIMD_H

#include <math.h>
#include <Python.h>  /* Py_ssize_t */

#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>

static inline float cfm_hsum_ps(__m128 v) {
    __m128 s = _mm_add_ps(v, _mm_movehl_ps(v, v));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
    return _mm_cvtss_f32(s);
}

static inline void cfm_ffm_pair_update_f32(float *p1, float *p2, int kp, float kappa,
                                           float l2, float lr, float inv_k, int adagrad,
                                           float *g1, float *g2) {
    const __m128 K = _mm_set1_ps(kappa), L = _mm_set1_ps(l2);
    __m128 s1 = _mm_setzero_ps(), s2 = _mm_setzero_ps();
    int f;
    float r1 = lr, r2 = lr;
    for (f = 0; f < kp; f += 4) {
        __m128 a = _mm_loadu_ps(p1 + f), b = _mm_loadu_ps(p2 + f);
        __m128 x1 = _mm_add_ps(_mm_mul_ps(L, a), _mm_mul_ps(K, b));
        __m128 x2 = _mm_add_ps(_mm_mul_ps(L, b), _mm_mul_ps(K, a));
        _mm_storeu_ps(g1 + f, x1);
        _mm_storeu_ps(g2 + f, x2);
        s1 = _mm_add_ps(s1, _mm_mul_ps(x1, x1));
        s2 = _mm_add_ps(s2, _mm_mul_ps(x2, x2));
    }
    if (adagrad) {
        float G1 = p1[kp] + cfm_hsum_ps(s1) * inv_k;
        float G2 = p2[kp] + cfm_hsum_ps(s2) * inv_k;
        p1[kp] = G1;
        p2[kp] = G2;
        r1 = lr / sqrtf(G1);
        r2 = lr / sqrtf(G2);
    }
    {
        const __m128 R1 = _mm_set1_ps(r1), R2 = _mm_set1_ps(r2);
        for (f = 0; f < kp; f += 4) {
            _mm_storeu_ps(p1 + f, _mm_sub_ps(_mm_loadu_ps(p1 + f),
                                             _mm_mul_ps(R1, _mm_loadu_ps(g1 + f))));
            _mm_storeu_ps(p2 + f, _mm_sub_ps(_mm_loadu_ps(p2 + f),
                                             _mm_mul_ps(R2, _mm_loadu_ps(g2 + f))));
        }
    }
}

#else  /* portable fallback, same arithmetic order per lane group */

static inline void cfm_ffm_pair_update_f32(float *p1, float *p2, int kp, float kappa,
                                           float l2, float lr, float inv_k, int adagrad,
                                           float *g1, float *g2) {
    float s1[4] = {0, 0, 0, 0}, s2[4] = {0, 0, 0, 0};
    float r1 = lr, r2 = lr;
    int f, l;
    for (f = 0; f < kp; f += 4) {
        for (l = 0; l < 4; l++) {
            float x1 = l2 * p1[f + l] + kappa * p2[f + l];
            float x2 = l2 * p2[f + l] + kappa * p1[f + l];
            g1[f + l] = x1;
            g2[f + l] = x2;
            s1[l] += x1 * x1;
            s2[l] += x2 * x2;
        }
    }
    if (adagrad) {
        float G1 = p1[kp] + ((s1[0] + s1[2]) + (s1[1] + s1[3])) * inv_k;
        float G2 = p2[kp] + ((s2[0] + s2[2]) + (s2[1] + s2[3])) * inv_k;
        p1[kp] = G1;
        p2[kp] = G2;
        r1 = lr / sqrtf(G1);
        r2 = lr / sqrtf(G2);
    }
    for (f = 0; f < kp; f++) {
        p1[f] -= r1 * g1[f];
        p2[f] -= r2 * g2[f];
    }
}
#endif

/* ------------------------------------------------------------------------
 * Whole-row loops for float32 with kp % 8 == 0, compiled for AVX2+FMA via a
 * function attribute and chosen at run time (cfm_ffm_have_avx2), so the
 * package itself is still built for the x86-64 baseline.  One 8-wide register
 * holds a k=8 vector.  The results differ from the SSE2 path only by FMA
 * rounding.
 */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#include <immintrin.h>
#define CFM_HAVE_AVX2_PATH 1

static int cfm_ffm_avx2_state = -1;

static inline int cfm_ffm_have_avx2(void) {
    if (cfm_ffm_avx2_state < 0) {
        __builtin_cpu_init();
        cfm_ffm_avx2_state = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cfm_ffm_avx2_state;
}

__attribute__((target("avx2,fma")))
static inline float cfm_hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    __m128 s = _mm_add_ps(lo, hi);
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
    return _mm_cvtss_f32(s);
}

/* Sum of the 8 lanes in the order ((0+1)+(2+3)) + ((4+5)+(6+7)): the same
 * order on every path that uses it. */
__attribute__((target("avx2,fma")))
static inline __m128 cfm_hsum256_tree(__m256 q) {
    __m256 h = _mm256_hadd_ps(q, q);
    h = _mm256_hadd_ps(h, h);
    return _mm_add_ss(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* sum_{a<b} <v_{a,f(b)}, v_{b,f(a)}> x_a x_b; four accumulators per 8 lanes
 * so that the FMA latency does not serialise the pairs. */
__attribute__((target("avx2,fma")))
static double cfm_ffm_pair_score_avx2(const float *V, Py_ssize_t m, const double *xs,
                                      const int *fl, const Py_ssize_t *off, Py_ssize_t ks,
                                      int kp) {
    double total = 0.0;
    Py_ssize_t a, b;
    int f;
    for (f = 0; f < kp; f += 8) {
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
        for (a = 0; a < m; a++) {
            const float *va = V + off[a] + f;
            const Py_ssize_t fa = (Py_ssize_t)fl[a] * ks + f;
            const double xa = xs[a];
            for (b = a + 1; b + 4 <= m; b += 4) {
                acc0 = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(va + (Py_ssize_t)fl[b] * ks),
                                                     _mm256_loadu_ps(V + off[b] + fa)),
                                       _mm256_set1_ps((float)(xa * xs[b])), acc0);
                acc1 = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(va + (Py_ssize_t)fl[b + 1] * ks),
                                                     _mm256_loadu_ps(V + off[b + 1] + fa)),
                                       _mm256_set1_ps((float)(xa * xs[b + 1])), acc1);
                acc2 = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(va + (Py_ssize_t)fl[b + 2] * ks),
                                                     _mm256_loadu_ps(V + off[b + 2] + fa)),
                                       _mm256_set1_ps((float)(xa * xs[b + 2])), acc2);
                acc3 = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(va + (Py_ssize_t)fl[b + 3] * ks),
                                                     _mm256_loadu_ps(V + off[b + 3] + fa)),
                                       _mm256_set1_ps((float)(xa * xs[b + 3])), acc3);
            }
            for (; b < m; b++) {
                acc0 = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(va + (Py_ssize_t)fl[b] * ks),
                                                     _mm256_loadu_ps(V + off[b] + fa)),
                                       _mm256_set1_ps((float)(xa * xs[b])), acc0);
            }
        }
        total += _mm_cvtss_f32(cfm_hsum256_tree(
            _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3))));
    }
    return total;
}

/* One k=8 pair step (see cfm_ffm_pair_update_f32). */
__attribute__((target("avx2,fma")))
static inline void cfm_ffm_pair_k8(float *p1, float *p2, float kappa, __m256 L, __m128 LR,
                                   __m128 INVK, int adagrad) {
    const __m256 K = _mm256_set1_ps(kappa);
    __m256 x = _mm256_loadu_ps(p1), y = _mm256_loadu_ps(p2);
    __m256 g1 = _mm256_fmadd_ps(K, y, _mm256_mul_ps(L, x));
    __m256 g2 = _mm256_fmadd_ps(K, x, _mm256_mul_ps(L, y));
    __m128 r1 = LR, r2 = LR;
    if (adagrad) {
        __m128 G1 = _mm_fmadd_ss(cfm_hsum256_tree(_mm256_mul_ps(g1, g1)), INVK, _mm_load_ss(p1 + 8));
        __m128 G2 = _mm_fmadd_ss(cfm_hsum256_tree(_mm256_mul_ps(g2, g2)), INVK, _mm_load_ss(p2 + 8));
        _mm_store_ss(p1 + 8, G1);
        _mm_store_ss(p2 + 8, G2);
        r1 = _mm_div_ss(LR, _mm_sqrt_ss(G1));
        r2 = _mm_div_ss(LR, _mm_sqrt_ss(G2));
    }
    _mm256_storeu_ps(p1, _mm256_fnmadd_ps(_mm256_broadcastss_ps(r1), g1, x));
    _mm256_storeu_ps(p2, _mm256_fnmadd_ps(_mm256_broadcastss_ps(r2), g2, y));
}

/* libffm-style per-pair steps for all a < b (see cfm_ffm_pair_update_f32) */
__attribute__((target("avx2,fma")))
static void cfm_ffm_update_pairs_avx2(float *V, Py_ssize_t m, const double *xs, const int *fl,
                                      const Py_ssize_t *off, Py_ssize_t ks, int kp,
                                      double g, float l2, float lr, float inv_k, int adagrad) {
    Py_ssize_t a, b;
    int f;
    const __m256 L = _mm256_set1_ps(l2);
    if (kp == 8) {  /* the common case: one register per vector */
        const __m128 LR = _mm_set_ss(lr), INVK = _mm_set_ss(inv_k);
        for (a = 0; a < m; a++) {
            float *va = V + off[a];
            const Py_ssize_t fa = (Py_ssize_t)fl[a] * ks;
            const double ga = g * xs[a];
            for (b = a + 1; b < m; b++) {
                cfm_ffm_pair_k8(va + (Py_ssize_t)fl[b] * ks, V + off[b] + fa,
                                (float)(ga * xs[b]), L, LR, INVK, adagrad);
            }
        }
        return;
    }
    for (a = 0; a < m; a++) {
        float *va = V + off[a];
        for (b = a + 1; b < m; b++) {
            float *p1 = va + (Py_ssize_t)fl[b] * ks;
            float *p2 = V + off[b] + (Py_ssize_t)fl[a] * ks;
            const __m256 K = _mm256_set1_ps((float)(g * xs[a] * xs[b]));
            float r1 = lr, r2 = lr;
            float g1b[256], g2b[256];
            __m256 s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps();
            for (f = 0; f < kp; f += 8) {
                __m256 x = _mm256_loadu_ps(p1 + f), y = _mm256_loadu_ps(p2 + f);
                __m256 g1 = _mm256_fmadd_ps(K, y, _mm256_mul_ps(L, x));
                __m256 g2 = _mm256_fmadd_ps(K, x, _mm256_mul_ps(L, y));
                _mm256_storeu_ps(g1b + f, g1);
                _mm256_storeu_ps(g2b + f, g2);
                s1 = _mm256_fmadd_ps(g1, g1, s1);
                s2 = _mm256_fmadd_ps(g2, g2, s2);
            }
            if (adagrad) {
                float G1 = p1[kp] + cfm_hsum256(s1) * inv_k;
                float G2 = p2[kp] + cfm_hsum256(s2) * inv_k;
                p1[kp] = G1;
                p2[kp] = G2;
                r1 = lr / sqrtf(G1);
                r2 = lr / sqrtf(G2);
            }
            for (f = 0; f < kp; f += 8) {
                _mm256_storeu_ps(p1 + f, _mm256_fnmadd_ps(_mm256_set1_ps(r1),
                                 _mm256_loadu_ps(g1b + f), _mm256_loadu_ps(p1 + f)));
            }
            for (f = 0; f < kp; f += 8) {
                _mm256_storeu_ps(p2 + f, _mm256_fnmadd_ps(_mm256_set1_ps(r2),
                                 _mm256_loadu_ps(g2b + f), _mm256_loadu_ps(p2 + f)));
            }
        }
    }
}

#else
#define CFM_HAVE_AVX2_PATH 0
static inline int cfm_ffm_have_avx2(void) { return 0; }
static inline double cfm_ffm_pair_score_avx2(const float *V, Py_ssize_t m, const double *xs,
                                             const int *fl, const Py_ssize_t *off,
                                             Py_ssize_t ks, int kp) { return 0.0; }
static inline void cfm_ffm_update_pairs_avx2(float *V, Py_ssize_t m, const double *xs,
                                             const int *fl, const Py_ssize_t *off,
                                             Py_ssize_t ks, int kp, double g, float l2,
                                             float lr, float inv_k, int adagrad) {}
#endif

#endif
