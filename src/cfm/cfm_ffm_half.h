/* FFM kernels for a factor table stored in IEEE half precision (float16),
 * with float32 arithmetic: FFMClassifier/FFMRegressor(dtype="float16").
 *
 * Why: an FFM step reads and writes, for every feature of a row, the vectors
 * of all its fields (39 x 36 bytes per feature on Criteo-shaped rows), and
 * the epoch is bound by that traffic.  Half storage nearly halves it.
 *
 * Layout of one (feature, field) record, in uint16 units: kp halves (kp a
 * multiple of 8, coordinates >= k stay 0), then, unless the solver is plain
 * SGD, the row-wise AdaGrad accumulator G as a float32 in the next two
 * halves (4-byte aligned because kp is even and rows are 64-byte aligned).
 *
 * Updates are stored with stochastic rounding (the 13 mantissa bits that
 * float32 has and float16 lacks are replaced by random bits before
 * truncation), so that steps smaller than half a float16 ulp are not lost on
 * average: round-to-nearest would drop every one of them.  Random bits come
 * from a per-thread xorshift32 generator (8 lanes).
 *
 * Two implementations: AVX2+FMA+F16C, chosen at run time (the package is
 * built for the x86-64 baseline), and portable C.  They differ only in the
 * random bits and FMA rounding.
 */
#ifndef CFM_FFM_HALF_H
#define CFM_FFM_HALF_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <Python.h>  /* Py_ssize_t */
#include "cfm_ffm_simd.h"  /* cfm_hsum256 */

/* ---------------------------------------------------------------- portable */
static inline float cfm_h2f(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, mant = h & 0x3ffu, bits;
    float f;
    if (e == 0) {
        f = (float)mant * (1.0f / 16777216.0f);  /* subnormal: mant * 2^-24 */
        memcpy(&bits, &f, 4);
        bits |= sign;
    } else if (e == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((e + 112u) << 23) | (mant << 13);
    }
    memcpy(&f, &bits, 4);
    return f;
}

/* float32 bits -> float16, rounding toward zero (as _MM_FROUND_TO_ZERO):
 * overflow gives the largest finite half, NaN stays NaN. */
static inline uint16_t cfm_f2h_rz_bits(uint32_t x) {
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu, e;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (ax == 0x7f800000u) return (uint16_t)(sign | 0x7c00u);
    if (ax >= 0x47800000u) return (uint16_t)(sign | 0x7bffu);
    if (ax < 0x38800000u) {  /* below 2^-14: half subnormal or zero */
        e = ax >> 23;
        if (e < 102u) return (uint16_t)sign;
        return (uint16_t)(sign | (((ax & 0x7fffffu) | 0x800000u) >> (126u - e)));
    }
    return (uint16_t)(sign | ((ax - 0x38000000u) >> 13));
}

/* round to nearest, ties to even (the initial draws) */
static inline uint16_t cfm_f2h_rn(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) < 0x7f800000u && (x & 0x7fffffffu) >= 0x38800000u)
        x += 0x0fffu + ((x >> 13) & 1u);
    else if ((x & 0x7fffffffu) < 0x38800000u)
        return (uint16_t)(((x >> 16) & 0x8000u) |
                          (uint16_t)lrintf(fabsf(f) * 16777216.0f));  /* subnormal */
    return cfm_f2h_rz_bits(x);
}

static inline uint32_t cfm_xorshift32(uint32_t *s) {
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* stochastic rounding with 13 random bits r */
static inline uint16_t cfm_f2h_sr(float f, uint32_t r) {
    uint32_t x;
    memcpy(&x, &f, 4);
    return cfm_f2h_rz_bits(x + (r & 0x1fffu));
}

static inline float cfm_h_load_g(const uint16_t *p) {
    float g;
    memcpy(&g, p, 4);
    return g;
}

static inline void cfm_h_store_g(uint16_t *p, float g) {
    memcpy(p, &g, 4);
}

static double cfm_ffmh_pair_score_c(const uint16_t *V, Py_ssize_t m, const double *xs,
                                    const int *fl, const Py_ssize_t *off, Py_ssize_t ks,
                                    int kp) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    double total = 0.0;
    Py_ssize_t a, b;
    int f;
    for (a = 0; a < m; a++) {
        const uint16_t *va = V + off[a];
        for (b = a + 1; b < m; b++) {
            const uint16_t *p1 = va + (Py_ssize_t)fl[b] * ks;
            const uint16_t *p2 = V + off[b] + (Py_ssize_t)fl[a] * ks;
            const float xab = (float)(xs[a] * xs[b]);
            for (f = 0; f < kp; f++)
                acc[f & 7] += cfm_h2f(p1[f]) * cfm_h2f(p2[f]) * xab;
        }
    }
    for (f = 0; f < 8; f++) total += acc[f];
    return total;
}

static void cfm_ffmh_update_pairs_c(uint16_t *V, Py_ssize_t m, const double *xs, const int *fl,
                                    const Py_ssize_t *off, Py_ssize_t ks, int kp, double g,
                                    float l2, float lr, float inv_k, int adagrad,
                                    uint32_t *rng) {
    float x1[256], x2[256], g1[256], g2[256];
    uint32_t s = rng[0] ? rng[0] : 0x9e3779b9u;
    Py_ssize_t a, b;
    int f;
    for (a = 0; a < m; a++) {
        uint16_t *va = V + off[a];
        for (b = a + 1; b < m; b++) {
            uint16_t *p1 = va + (Py_ssize_t)fl[b] * ks;
            uint16_t *p2 = V + off[b] + (Py_ssize_t)fl[a] * ks;
            const float kappa = (float)(g * xs[a] * xs[b]);
            float s1 = 0.0f, s2 = 0.0f, r1 = lr, r2 = lr;
            for (f = 0; f < kp; f++) {
                x1[f] = cfm_h2f(p1[f]);
                x2[f] = cfm_h2f(p2[f]);
                g1[f] = l2 * x1[f] + kappa * x2[f];
                g2[f] = l2 * x2[f] + kappa * x1[f];
                s1 += g1[f] * g1[f];
                s2 += g2[f] * g2[f];
            }
            if (adagrad) {
                float G1 = cfm_h_load_g(p1 + kp) + s1 * inv_k;
                float G2 = cfm_h_load_g(p2 + kp) + s2 * inv_k;
                cfm_h_store_g(p1 + kp, G1);
                cfm_h_store_g(p2 + kp, G2);
                r1 = lr / sqrtf(G1);
                r2 = lr / sqrtf(G2);
            }
            for (f = 0; f < kp; f++) {
                uint32_t r = cfm_xorshift32(&s);
                p1[f] = cfm_f2h_sr(x1[f] - r1 * g1[f], r);
                p2[f] = cfm_f2h_sr(x2[f] - r2 * g2[f], r >> 19);
            }
        }
    }
    rng[0] = s;
}

/* ----------------------------------------------------- AVX2 + FMA + F16C */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#include <immintrin.h>

static int cfm_ffmh_simd_state = -1;

static inline int cfm_ffmh_have_simd(void) {
    if (cfm_ffmh_simd_state < 0) {
        __builtin_cpu_init();
        cfm_ffmh_simd_state = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                              && __builtin_cpu_supports("f16c");
    }
    return cfm_ffmh_simd_state;
}

#define CFM_H_LOAD(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(p)))
#define CFM_H_STORE_SR(p, v, r) \
    _mm_storeu_si128((__m128i *)(void *)(p), _mm256_cvtps_ph(_mm256_castsi256_ps( \
        _mm256_add_epi32(_mm256_castps_si256(v), (r))), _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC))

/* sum_{a<b} <v_{a,f(b)}, v_{b,f(a)}> x_a x_b, 8 coordinates at a time: per a,
 * sum_b x_b (v_{a,f(b)} * v_{b,f(a)}) in two accumulators, then times x_a.
 * The weights x_b come as floats from xf, one broadcast load per pair (rows
 * up to 512 non-zeros), or, with xf == NULL, converted from xs. */
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline double cfm_ffmh_pair_score_core(const uint16_t *V, Py_ssize_t m,
                                              const float *xf, const double *xs, const int *fl,
                                              const Py_ssize_t *off, Py_ssize_t ks, int kp) {
#define CFM_XB(i) (xf ? _mm256_broadcast_ss(xf + (i)) : _mm256_set1_ps((float)xs[i]))
    double total = 0.0;
    Py_ssize_t a, b;
    int f;
    for (f = 0; f < kp; f += 8) {
        __m256 acc = _mm256_setzero_ps();
        for (a = 0; a + 1 < m; a++) {
            const uint16_t *va = V + off[a] + f;
            const Py_ssize_t fa = (Py_ssize_t)fl[a] * ks + f;
            __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
            for (b = a + 1; b + 2 <= m; b += 2) {
                s0 = _mm256_fmadd_ps(_mm256_mul_ps(CFM_H_LOAD(va + (Py_ssize_t)fl[b] * ks),
                                                   CFM_H_LOAD(V + off[b] + fa)),
                                     CFM_XB(b), s0);
                s1 = _mm256_fmadd_ps(_mm256_mul_ps(CFM_H_LOAD(va + (Py_ssize_t)fl[b + 1] * ks),
                                                   CFM_H_LOAD(V + off[b + 1] + fa)),
                                     CFM_XB(b + 1), s1);
            }
            if (b < m)
                s0 = _mm256_fmadd_ps(_mm256_mul_ps(CFM_H_LOAD(va + (Py_ssize_t)fl[b] * ks),
                                                   CFM_H_LOAD(V + off[b] + fa)),
                                     CFM_XB(b), s0);
            acc = _mm256_fmadd_ps(_mm256_add_ps(s0, s1), CFM_XB(a), acc);
        }
        total += cfm_hsum256(acc);
    }
    return total;
#undef CFM_XB
}

__attribute__((target("avx2,fma,f16c")))
static double cfm_ffmh_pair_score_avx2(const uint16_t *V, Py_ssize_t m, const double *xs,
                                       const int *fl, const Py_ssize_t *off, Py_ssize_t ks,
                                       int kp) {
    float xf[512];
    Py_ssize_t b;
    if (m > 512)
        return cfm_ffmh_pair_score_core(V, m, NULL, xs, fl, off, ks, kp);
    for (b = 0; b < m; b++) xf[b] = (float)xs[b];
    return cfm_ffmh_pair_score_core(V, m, xf, xs, fl, off, ks, kp);
}

__attribute__((target("avx2,fma,f16c")))
static inline __m256i cfm_xorshift32x8(__m256i s) {
    s = _mm256_xor_si256(s, _mm256_slli_epi32(s, 13));
    s = _mm256_xor_si256(s, _mm256_srli_epi32(s, 17));
    return _mm256_xor_si256(s, _mm256_slli_epi32(s, 5));
}

/* libffm-style per-pair steps for all a < b (see cfm_ffm_pair_update_f32 in
 * cfm_ffm_simd.h), half storage, stochastic rounding.  rng: 8 lanes. */
__attribute__((target("avx2,fma,f16c")))
static void cfm_ffmh_update_pairs_avx2(uint16_t *V, Py_ssize_t m, const double *xs,
                                       const int *fl, const Py_ssize_t *off, Py_ssize_t ks,
                                       int kp, double g, float l2, float lr, float inv_k,
                                       int adagrad, uint32_t *rng) {
    const __m256 L = _mm256_set1_ps(l2);
    const __m256i M13 = _mm256_set1_epi32(0x1fff);
    __m256i S = _mm256_loadu_si256((const __m256i *)(const void *)rng);
    float g1b[256], g2b[256];
    Py_ssize_t a, b;
    int f;
    for (a = 0; a < m; a++) {
        uint16_t *va = V + off[a];
        const Py_ssize_t fa = (Py_ssize_t)fl[a] * ks;
        const double ga = g * xs[a];
        for (b = a + 1; b < m; b++) {
            uint16_t *p1 = va + (Py_ssize_t)fl[b] * ks;
            uint16_t *p2 = V + off[b] + fa;
            const __m256 K = _mm256_set1_ps((float)(ga * xs[b]));
            float r1 = lr, r2 = lr;
            if (kp == 8) {  /* the common case: one register per vector */
                __m256 x = CFM_H_LOAD(p1), y = CFM_H_LOAD(p2);
                __m256 g1 = _mm256_fmadd_ps(K, y, _mm256_mul_ps(L, x));
                __m256 g2 = _mm256_fmadd_ps(K, x, _mm256_mul_ps(L, y));
                if (adagrad) {
                    float G1 = cfm_h_load_g(p1 + 8) + cfm_hsum256(_mm256_mul_ps(g1, g1)) * inv_k;
                    float G2 = cfm_h_load_g(p2 + 8) + cfm_hsum256(_mm256_mul_ps(g2, g2)) * inv_k;
                    cfm_h_store_g(p1 + 8, G1);
                    cfm_h_store_g(p2 + 8, G2);
                    r1 = lr / sqrtf(G1);
                    r2 = lr / sqrtf(G2);
                }
                S = cfm_xorshift32x8(S);
                CFM_H_STORE_SR(p1, _mm256_fnmadd_ps(_mm256_set1_ps(r1), g1, x),
                               _mm256_and_si256(S, M13));
                CFM_H_STORE_SR(p2, _mm256_fnmadd_ps(_mm256_set1_ps(r2), g2, y),
                               _mm256_srli_epi32(S, 19));
                continue;
            }
            {
                __m256 s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps();
                for (f = 0; f < kp; f += 8) {
                    __m256 x = CFM_H_LOAD(p1 + f), y = CFM_H_LOAD(p2 + f);
                    __m256 g1 = _mm256_fmadd_ps(K, y, _mm256_mul_ps(L, x));
                    __m256 g2 = _mm256_fmadd_ps(K, x, _mm256_mul_ps(L, y));
                    _mm256_storeu_ps(g1b + f, g1);
                    _mm256_storeu_ps(g2b + f, g2);
                    s1 = _mm256_fmadd_ps(g1, g1, s1);
                    s2 = _mm256_fmadd_ps(g2, g2, s2);
                }
                if (adagrad) {
                    float G1 = cfm_h_load_g(p1 + kp) + cfm_hsum256(s1) * inv_k;
                    float G2 = cfm_h_load_g(p2 + kp) + cfm_hsum256(s2) * inv_k;
                    cfm_h_store_g(p1 + kp, G1);
                    cfm_h_store_g(p2 + kp, G2);
                    r1 = lr / sqrtf(G1);
                    r2 = lr / sqrtf(G2);
                }
                for (f = 0; f < kp; f += 8) {
                    __m256 x = CFM_H_LOAD(p1 + f), y = CFM_H_LOAD(p2 + f);
                    S = cfm_xorshift32x8(S);
                    CFM_H_STORE_SR(p1 + f, _mm256_fnmadd_ps(_mm256_set1_ps(r1),
                                   _mm256_loadu_ps(g1b + f), x), _mm256_and_si256(S, M13));
                    CFM_H_STORE_SR(p2 + f, _mm256_fnmadd_ps(_mm256_set1_ps(r2),
                                   _mm256_loadu_ps(g2b + f), y), _mm256_srli_epi32(S, 19));
                }
            }
        }
    }
    _mm256_storeu_si256((__m256i *)(void *)rng, S);
}

/* dst[i] = float16(src[i]), round to nearest even; n a multiple of 8 */
__attribute__((target("avx2,fma,f16c")))
static void cfm_f2h_rn_n_f16c(const float *src, uint16_t *dst, int n) {
    int i;
    for (i = 0; i < n; i += 8)
        _mm_storeu_si128((__m128i *)(void *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

static inline void cfm_f2h_rn_n(const float *src, uint16_t *dst, int n) {
    int i;
    if (cfm_ffmh_have_simd()) {
        cfm_f2h_rn_n_f16c(src, dst, n);
        return;
    }
    for (i = 0; i < n; i++) dst[i] = cfm_f2h_rn(src[i]);
}

#else
static inline int cfm_ffmh_have_simd(void) { return 0; }
static inline void cfm_f2h_rn_n(const float *src, uint16_t *dst, int n) {
    int i;
    for (i = 0; i < n; i++) dst[i] = cfm_f2h_rn(src[i]);
}
static inline double cfm_ffmh_pair_score_avx2(const uint16_t *V, Py_ssize_t m,
                                              const double *xs, const int *fl,
                                              const Py_ssize_t *off, Py_ssize_t ks, int kp) {
    return 0.0;
}
static inline void cfm_ffmh_update_pairs_avx2(uint16_t *V, Py_ssize_t m, const double *xs,
                                              const int *fl, const Py_ssize_t *off,
                                              Py_ssize_t ks, int kp, double g, float l2,
                                              float lr, float inv_k, int adagrad,
                                              uint32_t *rng) {}
#endif

#endif
