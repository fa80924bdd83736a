/* Counter-based uniform draws for initialising large factor tables.
 *
 * draw(k1, k2, c) = (h >> 8) mapped to [-1, 1) * half_width, where
 * h = fmix32(fmix32(c * 0x9E3779B9 ^ k1) ^ k2) (murmur3's 32-bit finaliser,
 * twice, keyed by the two halves of a 64-bit per-feature key).  Each draw is
 * a pure function of (key, counter), so a table can be filled 8 draws at a
 * time (AVX2) or one at a time (portable C) with bit-identical results, by
 * any number of threads.  The caller picks the path (cfm/_ffm.pyx: the same
 * CPU check and switch as the other FFM kernels).  24-bit resolution is far finer than any
 * initialisation needs; the arithmetic is exact up to one final rounding.
 */
#ifndef CFM_RAND_H
#define CFM_RAND_H

#include <stdint.h>

static inline uint32_t cfm_fmix32(uint32_t h) {
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

static inline float cfm_init_draw(uint32_t k1, uint32_t k2, uint32_t c, float scale) {
    uint32_t h = cfm_fmix32(cfm_fmix32((c * 0x9E3779B9u) ^ k1) ^ k2);
    /* (h >> 8) is exact in float, so is the subtraction: one rounding, in the product */
    return ((float)(int32_t)(h >> 8) - 8388608.0f) * scale;
}

static void cfm_init_draws_c(float *out, int n, uint32_t k1, uint32_t k2, uint32_t c0,
                             float scale) {
    int i;
    for (i = 0; i < n; i++) out[i] = cfm_init_draw(k1, k2, c0 + (uint32_t)i, scale);
}

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

__attribute__((target("avx2")))
static inline __m256i cfm_fmix32x8(__m256i h) {
    h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
    h = _mm256_mullo_epi32(h, _mm256_set1_epi32((int)0x85EBCA6Bu));
    h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 13));
    h = _mm256_mullo_epi32(h, _mm256_set1_epi32((int)0xC2B2AE35u));
    return _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
}

__attribute__((target("avx2")))
static void cfm_init_draws_avx2(float *out, int n, uint32_t k1, uint32_t k2, uint32_t c0,
                                float scale) {
    const __m256i K1 = _mm256_set1_epi32((int)k1), K2 = _mm256_set1_epi32((int)k2);
    const __m256i PHI = _mm256_set1_epi32((int)0x9E3779B9u), STEP = _mm256_set1_epi32(8);
    const __m256 MID = _mm256_set1_ps(8388608.0f), S = _mm256_set1_ps(scale);
    __m256i c = _mm256_add_epi32(_mm256_set1_epi32((int)c0),
                                 _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    int i;
    for (i = 0; i + 8 <= n; i += 8) {
        __m256i h = cfm_fmix32x8(_mm256_xor_si256(_mm256_mullo_epi32(c, PHI), K1));
        h = cfm_fmix32x8(_mm256_xor_si256(h, K2));
        __m256 v = _mm256_cvtepi32_ps(_mm256_srli_epi32(h, 8));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_sub_ps(v, MID), S));
        c = _mm256_add_epi32(c, STEP);
    }
    for (; i < n; i++) out[i] = cfm_init_draw(k1, k2, c0 + (uint32_t)i, scale);
}

#else
/* no AVX2 build: the caller's CPU check (cfm_ffm_have_avx2) is false anyway */
static inline void cfm_init_draws_avx2(float *out, int n, uint32_t k1, uint32_t k2,
                                       uint32_t c0, float scale) {
    cfm_init_draws_c(out, n, k1, k2, c0, scale);
}
#endif

#endif /* CFM_RAND_H */
