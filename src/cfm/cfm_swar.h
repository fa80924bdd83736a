/* Leading decimal digits of 8 bytes at once (SWAR), for the text parsers.
 *
 * cfm_digits8(p, &v): the number n (0..8) of leading ASCII digits in the 8
 * bytes at p -- all 8 must be readable -- and, when n >= 1, their value in
 * *v.  After subtracting '0' from every byte, a byte is a digit iff it is
 * < 10; borrows and carries only run towards later bytes, so they cannot
 * disturb the first non-digit or the digits before it.  The digits are then
 * shifted to the top (leading zeros below) and combined pairwise: 8 digits
 * take three multiplications instead of eight dependent steps.  Portable C
 * (little-endian; elsewhere the callers' byte loop is used: n = -1).
 */
#ifndef CFM_SWAR_H
#define CFM_SWAR_H

#include <stdint.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && \
    (defined(__GNUC__) || defined(__clang__))
static inline int cfm_digits8(const char *p, uint64_t *v) {
    uint64_t x, nd;
    int n;
    memcpy(&x, p, 8);
    x -= 0x3030303030303030ULL;
    nd = (x | (x + 0x7676767676767676ULL)) & 0x8080808080808080ULL;
    n = nd ? (__builtin_ctzll(nd) >> 3) : 8;
    if (n == 0)
        return 0;
    x <<= (8 - n) * 8;  /* n digits on top, zeros (leading zeros) below */
    x = (x * 10 + (x >> 8)) & 0x00FF00FF00FF00FFULL;
    x = (x * 100 + (x >> 16)) & 0x0000FFFF0000FFFFULL;
    x = (x * 10000 + (x >> 32)) & 0xFFFFFFFFULL;
    *v = x;
    return n;
}
/* cfm_ndigits8(p): only the number n (0..8) of leading ASCII digits of the 8
 * bytes at p (a token whose value is not needed when it is short). */
static inline int cfm_ndigits8(const char *p) {
    uint64_t x, nd;
    memcpy(&x, p, 8);
    x -= 0x3030303030303030ULL;
    nd = (x | (x + 0x7676767676767676ULL)) & 0x8080808080808080ULL;
    return nd ? (__builtin_ctzll(nd) >> 3) : 8;
}
#else
static inline int cfm_digits8(const char *p, uint64_t *v) {
    (void)p; (void)v;
    return -1;
}
static inline int cfm_ndigits8(const char *p) {
    (void)p;
    return -1;
}
#endif

#endif /* CFM_SWAR_H */
