/* Inner loops of the FwFM kernels (src/cfm/_fwfm.pyx) over the k4 (a
 * multiple of 4) coordinates of per-field sums.  Written in C with restrict
 * pointers so that the compiler vectorises them: as Cython emits them the
 * pointers may alias, and the loops ran scalar with a runtime overlap check.
 * Dot products use 4 fixed lanes (a fixed summation order, no reassociation).
 */
#ifndef CFM_FWFM_H
#define CFM_FWFM_H

#include <stddef.h>
#include <stdint.h>
#include <math.h>

/* sum_c a[c] b[c] in 4 lanes */
static inline double cfm_fw_dot(const double *restrict a, const double *restrict b,
                                ptrdiff_t k4) {
    double q0 = 0, q1 = 0, q2 = 0, q3 = 0;
    ptrdiff_t c;
    for (c = 0; c < k4; c += 4) {
        q0 += a[c] * b[c];
        q1 += a[c + 1] * b[c + 1];
        q2 += a[c + 2] * b[c + 2];
        q3 += a[c + 3] * b[c + 3];
    }
    return (q0 + q1) + (q2 + q3);
}

/* y[c] += r x[c] */
static inline void cfm_fw_axpy(double *restrict y, double r, const double *restrict x,
                               ptrdiff_t k4) {
    ptrdiff_t c;
    for (c = 0; c < k4; c++) y[c] += r * x[c];
}

/* ta[c] += r sb[c]; tb[c] += r sa[c] (one pair of fields of T = R S) */
static inline void cfm_fw_axpy2(double *restrict ta, double *restrict tb, double r,
                                const double *restrict sa, const double *restrict sb,
                                ptrdiff_t k4) {
    ptrdiff_t c;
    for (c = 0; c < k4; c++) {
        ta[c] += r * sb[c];
        tb[c] += r * sa[c];
    }
}

/* The sums of a row's fields are rows of S (P x kpad, zero beyond k; kpad a
 * multiple of 8 >= k8).  The loops below run over the factors in blocks of 8
 * held in local accumulators (registers), over the fields b in the inner
 * loop: accumulating into memory (T, u) made every step wait for the
 * previous one's store (measured ~10 ns per pair of fields, whatever k). */

/* <s_a, sum_{b > a} rrow[plist[b]] s_b> */
static inline double cfm_fw_upper(const double *restrict S, ptrdiff_t kpad,
                                  const double *restrict rrow, const int32_t *restrict plist,
                                  int a, int P, ptrdiff_t k8) {
    double total = 0.0;
    ptrdiff_t c0, l;
    int b;
    const double *sa = S + a * kpad;
    for (c0 = 0; c0 < k8; c0 += 8) {
        double u[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        double q[4];
        for (b = a + 1; b < P; b++) {
            const double *sb = S + b * kpad + c0;
            double r = rrow[plist[b]];
            for (l = 0; l < 8; l++) u[l] += r * sb[l];
        }
        for (l = 0; l < 4; l++) q[l] = sa[c0 + l] * u[l] + sa[c0 + 4 + l] * u[4 + l];
        total += (q[0] + q[1]) + (q[2] + q[3]);
    }
    return total;
}

/* t[c] = sum_b rrow[plist[b]] s_b[c] over every field b of the row, c < k8 */
static inline void cfm_fw_tsum(const double *restrict S, ptrdiff_t kpad,
                               const double *restrict rrow, const int32_t *restrict plist,
                               int P, ptrdiff_t k8, double *restrict t) {
    ptrdiff_t c0, l;
    int b;
    for (c0 = 0; c0 < k8; c0 += 8) {
        double u[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (b = 0; b < P; b++) {
            const double *sb = S + b * kpad + c0;
            double r = rrow[plist[b]];
            for (l = 0; l < 8; l++) u[l] += r * sb[l];
        }
        for (l = 0; l < 8; l++) t[c0 + l] = u[l];
    }
}

/* One step on n field-pair weights r (gathered into a contiguous buffer)
 * with score derivatives d: grad = g d + l2 r; AdaGrad (acc != NULL):
 * acc += grad^2, r -= lr grad / sqrt(acc); else r -= lr grad.  Contiguous,
 * so the square roots and divisions vectorise (they dominated an epoch). */
static inline void cfm_fw_step(double *restrict r, double *restrict acc,
                               const double *restrict d, ptrdiff_t n, double g,
                               double lr, double l2) {
    ptrdiff_t i;
    if (acc == NULL) {
        for (i = 0; i < n; i++) r[i] = r[i] - lr * (g * d[i] + l2 * r[i]);
        return;
    }
    for (i = 0; i < n; i++) {
        double gr = g * d[i] + l2 * r[i];
        double a = acc[i] + gr * gr;
        acc[i] = a;
        r[i] = r[i] - lr * gr / sqrt(a);
    }
}

#endif
