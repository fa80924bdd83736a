/* Dense layer of DeepFM's scoring, one fixed order of operations per value.
 *
 *   out[r * dout + u] = sum_{i < din} W[u + i * dout] * in[r * din + i]   (r < n)
 *
 * (W column-major with leading dimension dout, as the BLAS gemm of training
 * takes it).  Every value is accumulated from 0 in the order i = 0, 1, ...,
 * din - 1, whatever the number of rows n, the row's position r among them or
 * the unit's position u: a row scores the same in any block of rows.  BLAS
 * gemm does not promise that (OpenBLAS handles a block's columns with kernels
 * of different widths, so a float32 row rounds differently with its position,
 * ~1e-6 relative after training).  The AVX2+FMA path (chosen at run time, the
 * package being built for the x86-64 baseline) keeps 4 rows x 16 units in
 * registers and fuses each multiply-add (scalar tails use fmaf: the same
 * rounding); the portable path multiplies and adds.  Results differ between
 * the two paths only by FMA rounding.
 */
#ifndef CFM_DENSE_H
#define CFM_DENSE_H

#include <math.h>
#include <stddef.h>

static void cfm_dense_rows_c(const float *W, ptrdiff_t dout, ptrdiff_t din, const float *in,
                             ptrdiff_t n, float *out) {
    ptrdiff_t r, u, i;
    for (r = 0; r < n; r++) {
        float *o = out + r * dout;
        const float *h = in + r * din;
        for (u = 0; u < dout; u++)
            o[u] = 0.0f;
        for (i = 0; i < din; i++) {
            const float *w = W + i * dout;
            float hi = h[i];
            for (u = 0; u < dout; u++)
                o[u] = o[u] + w[u] * hi;
        }
    }
}

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#include <immintrin.h>

static int cfm_dense_avx2_state = -1;

static inline int cfm_dense_have_avx2(void) {
    if (cfm_dense_avx2_state < 0) {
        __builtin_cpu_init();
        cfm_dense_avx2_state = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cfm_dense_avx2_state;
}

/* rows [r, r + R) (R = 4 or 1), units [u, u + 8 * V) (V = 2 or 1) */
#define CFM_DENSE_TILE(R, V)                                                             \
    do {                                                                                 \
        __m256 acc[4][2];                                                                \
        int a, b;                                                                        \
        for (a = 0; a < (R); a++)                                                        \
            for (b = 0; b < (V); b++)                                                    \
                acc[a][b] = _mm256_setzero_ps();                                         \
        for (i = 0; i < din; i++) {                                                      \
            const float *w = W + i * dout + u;                                           \
            __m256 wv[2];                                                                \
            for (b = 0; b < (V); b++)                                                    \
                wv[b] = _mm256_loadu_ps(w + 8 * b);                                      \
            for (a = 0; a < (R); a++) {                                                  \
                __m256 hb = _mm256_broadcast_ss(in + (r + a) * din + i);                 \
                for (b = 0; b < (V); b++)                                                \
                    acc[a][b] = _mm256_fmadd_ps(wv[b], hb, acc[a][b]);                   \
            }                                                                            \
        }                                                                                \
        for (a = 0; a < (R); a++)                                                        \
            for (b = 0; b < (V); b++)                                                    \
                _mm256_storeu_ps(out + (r + a) * dout + u + 8 * b, acc[a][b]);           \
    } while (0)

__attribute__((target("avx2,fma")))
static void cfm_dense_rows_avx2(const float *W, ptrdiff_t dout, ptrdiff_t din, const float *in,
                                ptrdiff_t n, float *out) {
    ptrdiff_t r, u, i;
    for (r = 0; r < n; r += 4) {
        if (r + 4 <= n) {
            for (u = 0; u + 16 <= dout; u += 16)
                CFM_DENSE_TILE(4, 2);
            for (; u + 8 <= dout; u += 8)
                CFM_DENSE_TILE(4, 1);
        } else {
            ptrdiff_t r1 = r, rn = n;
            for (r = r1; r < rn; r++) {
                for (u = 0; u + 16 <= dout; u += 16)
                    CFM_DENSE_TILE(1, 2);
                for (; u + 8 <= dout; u += 8)
                    CFM_DENSE_TILE(1, 1);
            }
            r = r1;
        }
        /* units beyond the last multiple of 8, one value at a time */
        {
            ptrdiff_t u0 = dout - dout % 8, r2, re = r + 4 <= n ? r + 4 : n;
            for (r2 = r; r2 < re; r2++) {
                for (u = u0; u < dout; u++) {
                    float s = 0.0f;
                    for (i = 0; i < din; i++)
                        s = fmaf(W[u + i * dout], in[r2 * din + i], s);
                    out[r2 * dout + u] = s;
                }
            }
        }
    }
}
#undef CFM_DENSE_TILE

static inline void cfm_dense_rows_f(const float *W, ptrdiff_t dout, ptrdiff_t din,
                                    const float *in, ptrdiff_t n, float *out) {
    if (cfm_dense_have_avx2())
        cfm_dense_rows_avx2(W, dout, din, in, n, out);
    else
        cfm_dense_rows_c(W, dout, din, in, n, out);
}
#else
static inline void cfm_dense_rows_f(const float *W, ptrdiff_t dout, ptrdiff_t din,
                                    const float *in, ptrdiff_t n, float *out) {
    cfm_dense_rows_c(W, dout, din, in, n, out);
}
#endif

#endif /* CFM_DENSE_H */
