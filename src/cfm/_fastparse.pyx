"""Fast path of the text parser for batch scoring (cfm/scoring.py, blocks
from cfm/data/blocks.py).

``parse_plain`` parses buffers of *plain* libsvm / libffm lines -- what
machine-written files contain -- straight into per-piece CSR arrays sized for
the model: ids shifted (one-based files), ids beyond the model dropped and
counted, values as float32.  Plain means:

* a line is ``label token token ...`` with tokens ``index:value`` (libsvm) or
  ``field:index:value`` (libffm; ids at most 2**31 - 2, as the general
  parser requires), separated by spaces or tabs (``\\r`` before the newline
  is fine);
* numbers are ``[-]digits[.digits]`` with at most 19 significant digits whose
  value is exact in Clinger's fast path (mantissa <= 2**53, decimal exponent
  in [-22, 22]); ids and fields are plain digits.

Values are then computed with exactly the same operations as cfm's general
parser (``cfm._parse``), so the results are bit-identical.  Anything else --
comments, blank lines, ``qid:``, exponents, ``inf`` / ``nan``, ``+`` signs,
underscores, long mantissas, malformed tokens -- makes the call return None,
and the caller parses that buffer with the general parser, which accepts the
full grammar and reports errors as ``file:line: token``.

The buffer is cut at newlines into pieces parsed in parallel (cfm._pool, no
GIL); each piece's arrays are returned as they are (no gather copy): the
caller scores them as consecutive blocks.
"""
import numpy as np
cimport numpy as cnp

from libc.stdint cimport int32_t, int64_t, uint64_t, INT32_MAX, INT64_MAX
from libc.string cimport memchr

from cfm._common cimport line_split
from cfm._pool cimport parallel_for, team
from cfm._textparse cimport cfm_pow10 as POW10

cnp.import_array()

# 2**53 as a module global, not the constant of cfm._textparse: the compare
# then reads memory instead of loading a 64-bit immediate first (one
# instruction per number less; benchmarks/parse_instructions.py)
cdef uint64_t TWO53 = (<uint64_t>1) << 53
# libffm ids above this are refused by the general parser (cfm._parse.MAX_ID_32);
# a compile-time constant (an enum), not a global the loop would reload
cdef enum:
    MAX_ID_32 = 2147483646


cdef inline bint is_sep(unsigned char c) noexcept nogil:
    # token separators of the fast path (the general parser also takes \v \f)
    return c == 32 or c == 9 or c == 13


cdef inline const char* parse_num(const char* p, const char* end, double* out) noexcept nogil:
    """[-]digits[.digits]; the same arithmetic as cfm._parse.parse_double's
    fast path.  NULL when the token needs the general parser.

    Written out rather than built from cfm._textparse's mantissa_run /
    fast_exact (which cfm._parse uses): those compile to 1.3-5% more
    instructions on this path (benchmarks/parse_instructions.py), which is
    the scoring hot loop; the arithmetic is the same."""
    cdef bint neg = False, any_digit = False
    cdef uint64_t m = 0
    cdef int nd = 0
    cdef int64_t dexp = 0
    cdef unsigned char c
    cdef double v
    if p < end and p[0] == 45:
        neg = True
        p += 1
    while p < end:
        c = <unsigned char>p[0]
        if c < 48 or c > 57:
            break
        any_digit = True
        if m == 0 and c == 48:
            pass
        elif nd < 19:
            m = m * 10 + (c - 48)
            nd += 1
        else:
            return NULL
        p += 1
    if p < end and p[0] == 46:
        p += 1
        while p < end:
            c = <unsigned char>p[0]
            if c < 48 or c > 57:
                break
            any_digit = True
            if m == 0 and c == 48:
                dexp -= 1
            elif nd < 19:
                m = m * 10 + (c - 48)
                nd += 1
                dexp -= 1
            else:
                return NULL
            p += 1
    if not any_digit:
        return NULL
    if m == 0:
        out[0] = -0.0 if neg else 0.0
        return p
    if m > TWO53 or dexp < -22 or dexp > 22:
        return NULL
    if dexp >= 0:
        v = (<double>m) * POW10[dexp]
    else:
        v = (<double>m) / POW10[-dexp]
    out[0] = -v if neg else v
    return p


cdef extern from "cfm_swar.h" nogil:
    int cfm_digits8(const char* p, uint64_t* v)
    int cfm_ndigits8(const char* p)


cdef inline const char* parse_id(const char* p, const char* end, int64_t* out) noexcept nogil:
    """Plain digits (at most 18); NULL otherwise.  Up to 7 digits (with 8
    bytes readable) are read 8 bytes at a time (cfm_swar.h)."""
    cdef int64_t v = 0
    cdef int n = 0
    cdef unsigned char c
    cdef uint64_t v8
    cdef int n8
    if end - p >= 8:
        n8 = cfm_digits8(p, &v8)
        if n8 == 0:
            return NULL
        if 0 < n8 < 8:
            out[0] = <int64_t>v8
            return p + n8
    while p < end:
        c = <unsigned char>p[0]
        if c < 48 or c > 57:
            break
        v = v * 10 + (c - 48)
        n += 1
        p += 1
    if n == 0 or n > 18:
        return NULL
    out[0] = v
    return p


cdef inline const char* skip_field(const char* p, const char* end) noexcept nogil:
    """A libffm field id (plain digits, at most MAX_ID_32) whose value is not
    needed: up to 7 digits are only counted (8 bytes at a time); NULL when
    the token needs the general parser."""
    cdef int n
    cdef int64_t v
    if end - p >= 8:
        n = cfm_ndigits8(p)
        if n == 0:
            return NULL
        if 0 < n < 8:  # < 10**7
            return p + n
    p = parse_id(p, end, &v)
    if p == NULL or v > MAX_ID_32:
        return NULL
    return p


cdef Py_ssize_t count_lines(const char* p, const char* end) noexcept nogil:
    """Lines in [p, end): newlines, plus one for a last line without one."""
    cdef Py_ssize_t n = 0
    cdef const char* nl
    while p < end:
        nl = <const char*>memchr(p, 10, end - p)
        n += 1
        if nl == NULL:
            break
        p = nl + 1
    return n


cdef struct Piece:
    const char* start
    const char* end
    double* labels
    int64_t* indptr
    int32_t* indices
    float* values
    int64_t n_rows
    int64_t nnz
    int64_t dropped
    int unsorted
    int ok


cdef inline void parse_piece(Piece* pc, bint ffm, bint shift, int64_t n_features) noexcept nogil:
    cdef const char* p = pc.start
    cdef const char* end = pc.end
    cdef const char* q
    cdef double label, val
    cdef int64_t idx, prev
    cdef int64_t row = 0, k = 0, dropped = 0
    cdef bint unsorted = False
    cdef unsigned char c
    # largest id the general parser accepts (18-digit libsvm ids always fit)
    cdef int64_t max_id = MAX_ID_32 if ffm else INT64_MAX
    pc.indptr[0] = 0
    while p < end:
        q = parse_num(p, end, &label)
        if q == NULL:
            return
        p = q
        if p < end and not (is_sep(<unsigned char>p[0]) or p[0] == 10):
            return
        prev = -1
        while True:
            while p < end and is_sep(<unsigned char>p[0]):
                p += 1
            if p >= end:
                break
            if p[0] == 10:
                p += 1
                break
            if ffm:
                p = skip_field(p, end)
                if p == NULL or p >= end or p[0] != 58:
                    return
                p += 1
            p = parse_id(p, end, &idx)
            if p == NULL or p >= end or p[0] != 58:
                return
            if idx > max_id:
                return  # the general parser refuses it (libffm ids are 32-bit)
            p = parse_num(p + 1, end, &val)
            if p == NULL or (p < end and not (is_sep(<unsigned char>p[0]) or p[0] == 10)):
                return
            if shift:
                if idx == 0:
                    return  # the general parser reports it
                idx -= 1
            if idx <= prev:
                unsorted = True
            prev = idx
            if idx >= n_features:
                dropped += 1
                continue
            pc.indices[k] = <int32_t>idx
            pc.values[k] = <float>val
            k += 1
        pc.labels[row] = label
        row += 1
        pc.indptr[row] = k
    pc.n_rows = row
    pc.nnz = k
    pc.dropped = dropped
    pc.unsorted = unsorted
    pc.ok = 1


cdef struct PlainJob:
    Piece* pieces
    Py_ssize_t* n_lines
    bint ffm, shift
    int64_t n_features


cdef void count_task(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef PlainJob* job = <PlainJob*>p
    cdef int64_t i
    for i in range(lo, hi):
        job.n_lines[i] = count_lines(job.pieces[i].start, job.pieces[i].end)


cdef void parse_task(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef PlainJob* job = <PlainJob*>p
    cdef int64_t i
    # constant ffm at each (inlined) call: a loop per format, without the
    # other format's branches
    if job.ffm:
        for i in range(lo, hi):
            parse_piece(&job.pieces[i], True, job.shift, job.n_features)
    else:
        for i in range(lo, hi):
            parse_piece(&job.pieces[i], False, job.shift, job.n_features)


def parse_plain(const unsigned char[::1] buf, bint ffm, bint shift, int64_t n_features,
                int n_threads=1, int n_pieces=0):
    """Parse a buffer of complete plain lines; None if the general parser is needed.

    Parameters
    ----------
    buf : bytes-like, complete lines (the last one may lack its newline)
    ffm : bool
        libffm tokens (``field:index:value``; fields are validated, not returned).
    shift : bool
        One-based ids: id 0 makes the call return None, others are shifted down.
    n_features : int
        Ids >= n_features (after the shift) are dropped and counted.
    n_threads, n_pieces : int
        Threads, and pieces the buffer is cut into (0: two per thread).

    Returns
    -------
    list of (labels float64, indptr int64, indices int32, values float32,
    n_dropped, unsorted) per piece, in order; or None.
    """
    cdef Py_ssize_t n = buf.shape[0]
    cdef int nt = team(n_threads)
    cdef int np_, i
    cdef Py_ssize_t pos, prev = 0, size
    cdef const char* base
    if n_features > INT32_MAX or n_features < 1:
        return None
    if n == 0:
        return []
    base = <const char*>&buf[0]
    np_ = n_pieces if n_pieces > 0 else 2 * nt
    if n < (256 << 10) and n_pieces <= 0:
        np_ = 1
    if np_ > n // 64 + 1:
        np_ = <int>(n // 64 + 1)
    if np_ > 64:
        np_ = 64
    arrays = []
    starts = []
    for i in range(np_):
        pos = line_split(base, n, i, np_, prev)
        starts.append((prev, pos))
        prev = pos
    cdef Piece[64] local
    cdef Py_ssize_t[64] n_lines
    cdef Py_ssize_t a, b
    for i in range(np_):
        a, b = starts[i]
        local[i].start = base + a
        local[i].end = base + b
    cdef PlainJob job
    job.pieces = local
    job.n_lines = n_lines
    job.ffm = ffm
    job.shift = shift
    job.n_features = n_features
    with nogil:
        parallel_for(count_task, &job, np_, 1, nt)
    for i in range(np_):
        a, b = starts[i]
        size = b - a
        # Upper bounds: a row per line; a token takes >= 4 bytes ("1:1 ").
        # Exact row bounds keep the label / row-offset arrays small: sized
        # for 2-byte rows they would be large enough for NumPy to back them
        # with huge pages, each first touch zeroing 2 MB for a few kB used.
        lab = np.empty(n_lines[i] + 1, dtype=np.float64)
        ptr = np.empty(n_lines[i] + 2, dtype=np.int64)
        ind = np.empty(size // 4 + 1, dtype=np.int32)
        val = np.empty(size // 4 + 1, dtype=np.float32)
        arrays.append((lab, ptr, ind, val))
        local[i].labels = <double*>cnp.PyArray_DATA(lab)
        local[i].indptr = <int64_t*>cnp.PyArray_DATA(ptr)
        local[i].indices = <int32_t*>cnp.PyArray_DATA(ind)
        local[i].values = <float*>cnp.PyArray_DATA(val)
        local[i].n_rows = 0
        local[i].nnz = 0
        local[i].dropped = 0
        local[i].unsorted = 0
        local[i].ok = 0
    with nogil:
        parallel_for(parse_task, &job, np_, 1, nt)
    out = []
    for i in range(np_):
        if not local[i].ok:
            return None
        lab, ptr, ind, val = arrays[i]
        r, k = local[i].n_rows, local[i].nnz
        out.append((lab[:r], ptr[:r + 1], ind[:k], val[:k], local[i].dropped,
                    bool(local[i].unsorted)))
    return out
