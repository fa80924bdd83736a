"""Number and text helpers shared by cfm's text parsers and writers
(``cfm._parse``: the full grammar; ``cfm._format`` and ``cfm._parse``'s
writer: text buffers; ``cfm._fastparse``, the scoring fast path: the powers
of ten only -- its digit loops stay written out there, because the shared
ones retire up to 5% more instructions on that path, measured with
benchmarks/parse_instructions.py).  Everything here is ``cdef inline``.

Numbers are converted as Python's ``float()`` does.  A mantissa of at most
19 significant digits that fits in 53 bits, with a decimal exponent in
[-22, 22], is exact by Clinger's fast path: one IEEE multiplication or
division by an exact power of ten (:func:`fast_exact`); every other number
goes to the full parser (``strtod`` in cfm._parse; the fast path of
cfm._fastparse hands the whole buffer back to cfm._parse).
"""
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport malloc, free

cdef extern from *:
    """
    /* 10**k, k = 0..22: exactly representable doubles (Clinger's fast path) */
    static double cfm_pow10[23] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    """
    double cfm_pow10[23]

cdef extern from *:
    """
    /* mantissas up to 2**53 are exact doubles (Clinger's fast path) */
    #define CFM_TWO53 (((uint64_t)1) << 53)
    """
    const uint64_t TWO53 "CFM_TWO53"

cdef enum:
    # significant digits a uint64 mantissa holds without overflow
    MANTISSA_DIGITS = 19
    # what mantissa_digit() did with a digit
    DIGIT_SKIPPED = 0    # a leading zero
    DIGIT_KEPT = 1
    DIGIT_DROPPED = 2    # the mantissa holds MANTISSA_DIGITS digits already


cdef inline bint is_digit(unsigned char c) noexcept nogil:
    return c >= 48 and c <= 57


cdef inline bint is_ws(unsigned char c) noexcept nogil:
    # ASCII whitespace except newline: space, \t, \v, \f, \r
    return c == 32 or c == 9 or c == 11 or c == 12 or c == 13


cdef inline const char* skip_ws(const char* p, const char* end) noexcept nogil:
    """The first position at or after ``p`` that is not whitespace (newlines
    are not skipped: they end a line)."""
    while p < end and is_ws(<unsigned char>p[0]):
        p += 1
    return p


cdef inline bint read_sign(const char** p, const char* end) noexcept nogil:
    """Consume an optional '+' or '-' at ``p[0]``; True for '-'."""
    cdef const char* q = p[0]
    if q < end and (q[0] == 43 or q[0] == 45):
        p[0] = q + 1
        return q[0] == 45
    return False


cdef inline bint between_digits(const char* r, const char* s, const char* e) noexcept nogil:
    """The character at ``r`` (an '_' of the token [s, e)) stands between two
    digits, as Python's int() and float() require of an underscore."""
    return (r > s and is_digit(<unsigned char>(r - 1)[0]) and r + 1 < e
            and is_digit(<unsigned char>r[1]))


cdef enum:
    # tokens up to this long are copied to the stack for strtod (no malloc)
    SCRATCH_BYTES = 512


cdef inline char* scratch(char* stack, Py_ssize_t n) noexcept nogil:
    """A buffer of ``n + 1`` bytes: ``stack`` (SCRATCH_BYTES) when it fits,
    else malloc'd (NULL when out of memory); release with
    :func:`release_scratch`."""
    if n < SCRATCH_BYTES - 1:
        return stack
    return <char*>malloc(n + 1)


cdef inline void release_scratch(char* buf, char* stack) noexcept nogil:
    if buf != stack:
        free(buf)


cdef inline int mantissa_digit(uint64_t* m, int* nd, unsigned char c) noexcept nogil:
    """Append the decimal digit ``c`` to the mantissa ``m`` of ``nd``
    significant digits: leading zeros are skipped, digits beyond
    MANTISSA_DIGITS dropped (the caller decides what that means)."""
    if m[0] == 0 and c == 48:
        return DIGIT_SKIPPED
    if nd[0] < MANTISSA_DIGITS:
        m[0] = m[0] * 10 + (c - 48)
        nd[0] += 1
        return DIGIT_KEPT
    return DIGIT_DROPPED


cdef inline const char* mantissa_run(const char* p, const char* end, uint64_t* m, int* nd,
                                     int64_t* dexp, bint fraction, bint* dropped) noexcept nogil:
    """Read the digits at ``p`` -- an integer part, or with ``fraction`` the
    digits after the point -- into the mantissa ``m`` (``nd`` significant
    digits) and the decimal exponent ``dexp``; returns the first non-digit.
    A digit beyond MANTISSA_DIGITS sets ``dropped`` (an integer digit
    dropped still scales the value: dexp + 1)."""
    cdef unsigned char c
    while p < end:
        c = <unsigned char>p[0]
        if not is_digit(c):
            break
        if mantissa_digit(m, nd, c) == DIGIT_DROPPED:
            dropped[0] = True
            if not fraction:
                dexp[0] += 1
        elif fraction:
            dexp[0] -= 1
        p += 1
    return p


cdef inline bint fast_exact(uint64_t m, int64_t e10, bint neg, double* out) noexcept nogil:
    """``out = (-1)**neg * m * 10**e10`` correctly rounded when Clinger's fast
    path applies (m <= 2**53, -22 <= e10 <= 22; m > 0); False otherwise."""
    cdef double v
    if m > TWO53 or e10 < -22 or e10 > 22:
        return False
    if e10 >= 0:
        v = (<double>m) * cfm_pow10[e10]
    else:
        v = (<double>m) / cfm_pow10[-e10]
    out[0] = -v if neg else v
    return True


cdef inline char** new_buffers(int n) except NULL:
    """``n`` NULL text buffers (one per piece of output formatted in
    parallel, joined in order by cfm._common.join_buffers); free with
    :func:`free_buffers`."""
    cdef char** bufs = <char**>malloc(n * sizeof(char*))
    cdef int t
    if bufs == NULL:
        raise MemoryError()
    for t in range(n):
        bufs[t] = NULL
    return bufs


cdef inline void free_buffers(char** bufs, int n) noexcept nogil:
    cdef int t
    for t in range(n):
        free(bufs[t])
    free(bufs)
