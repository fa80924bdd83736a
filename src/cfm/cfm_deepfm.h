/* Element-wise loops of the DeepFM kernels (src/cfm/_deepfm.pyx), float and
 * double.  Written in C with restrict pointers and branch-free selects so that
 * the compiler vectorises them (as Cython emits them, the ReLU masks were
 * scalar compare-and-branch loops that mispredict on random signs).  No
 * reassociation: every result is the same as the plain loop's.
 */
#ifndef CFM_DEEPFM_H
#define CFM_DEEPFM_H

#include <stddef.h>

#define CFM_DFM_DEFINE(T, SUF)                                                        \
/* h[r, u] = max(h[r, u] + b[u], 0) for n rows of width d */                         \
static inline void cfm_bias_relu_##SUF(T *restrict h, const T *restrict b,            \
                                       ptrdiff_t n, ptrdiff_t d) {                    \
    ptrdiff_t r, u;                                                                   \
    for (r = 0; r < n; r++) {                                                         \
        T *restrict row = h + r * d;                                                  \
        for (u = 0; u < d; u++) {                                                     \
            T z = row[u] + b[u];                                                      \
            row[u] = z > (T)0 ? z : (T)0;                                             \
        }                                                                             \
    }                                                                                 \
}                                                                                     \
/* g[i] = h[i] > 0 ? g[i] * s : 0 (ReLU and inverted-dropout derivative) */          \
static inline void cfm_relu_back_##SUF(T *restrict g, const T *restrict h,            \
                                       ptrdiff_t n, T s) {                            \
    ptrdiff_t i;                                                                      \
    /* a multiply by a selected factor vectorises; a selected product does  \
       not (GCC keeps the branch: the product might trap).  g * 0 may give   \
       -0, which compares and adds as 0. */                                  \
    for (i = 0; i < n; i++) g[i] = g[i] * (h[i] > (T)0 ? s : (T)0);                   \
}                                                                                     \
/* g[u] = a * w[u], masked by h > 0 (scale s) when h is not NULL */                  \
static inline void cfm_out_back_##SUF(T *restrict g, const T *restrict w,             \
                                      const T *restrict h, ptrdiff_t d, T a, T s) {   \
    ptrdiff_t u;                                                                      \
    if (h == NULL) {                                                                  \
        for (u = 0; u < d; u++) g[u] = a * w[u];                                      \
    } else {                                                                          \
        for (u = 0; u < d; u++) g[u] = (a * w[u]) * (h[u] > (T)0 ? s : (T)0);         \
    }                                                                                 \
}                                                                                     \
/* sum_u h[u] w[u] in double, in 8 fixed lanes (vectorisable, fixed order) */         \
static inline double cfm_dot_##SUF(const T *restrict h, const T *restrict w,          \
                                   ptrdiff_t d) {                                     \
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                         \
    ptrdiff_t u, l;                                                                   \
    for (u = 0; u + 8 <= d; u += 8)                                                   \
        for (l = 0; l < 8; l++) acc[l] += (double)h[u + l] * (double)w[u + l];        \
    for (; u < d; u++) acc[0] += (double)h[u] * (double)w[u];                         \
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])); \
}                                                                                     \
/* acc[u] += a * row[u] */                                                           \
static inline void cfm_axpy_##SUF(T *restrict acc, const T *restrict row,             \
                                  ptrdiff_t d, T a) {                                 \
    ptrdiff_t u;                                                                      \
    for (u = 0; u < d; u++) acc[u] += a * row[u];                                     \
}                                                                                     \
/* acc[u] += row[u] */                                                               \
static inline void cfm_add_##SUF(T *restrict acc, const T *restrict row, ptrdiff_t d) { \
    ptrdiff_t u;                                                                      \
    for (u = 0; u < d; u++) acc[u] += row[u];                                         \
}                                                                                     \
/* Adam on n values: p -= step * m / (sqrt(s) * c2 + eps), L2 l2 on p */            \
static inline void cfm_adam_##SUF(T *restrict p, T *restrict m, T *restrict s,       \
                                  const T *restrict g, ptrdiff_t n, T l2, T b1, T b2, \
                                  T ob1, T ob2, T step, T c2, T eps) {                \
    ptrdiff_t e;                                                                      \
    for (e = 0; e < n; e++) {                                                         \
        T gg = g[e] + l2 * p[e];                                                      \
        T mm = b1 * m[e] + ob1 * gg;                                                  \
        T ss = b2 * s[e] + ob2 * gg * gg;                                             \
        m[e] = mm;                                                                    \
        s[e] = ss;                                                                    \
        p[e] = p[e] - step * mm / (CFM_SQRT_##SUF(ss) * c2 + eps);                    \
    }                                                                                 \
}                                                                                     \
/* AdaGrad on n values: G += g^2; p -= lr * g / (sqrt(G) + eps) */                   \
static inline void cfm_adagrad_##SUF(T *restrict p, T *restrict G, const T *restrict g, \
                                     ptrdiff_t n, T l2, T lr, T eps) {                \
    ptrdiff_t e;                                                                      \
    for (e = 0; e < n; e++) {                                                         \
        T gg = g[e] + l2 * p[e];                                                      \
        T ss = G[e] + gg * gg;                                                        \
        G[e] = ss;                                                                    \
        p[e] = p[e] - lr * gg / (CFM_SQRT_##SUF(ss) + eps);                           \
    }                                                                                 \
}

#include <math.h>
#define CFM_SQRT_f sqrtf
#define CFM_SQRT_d sqrt
CFM_DFM_DEFINE(float, f)
CFM_DFM_DEFINE(double, d)

#endif /* CFM_DEEPFM_H */
