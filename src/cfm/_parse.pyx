"""Text parsers for libsvm / libFM / libffm files (the writer of such files,
``format_rows``, is in cfm._format with the other text output).

``parse_chunk`` parses a buffer of complete lines (the caller cuts chunks at
the last newline) into CSR pieces.  The buffer is split at newlines into
pieces that threads (cfm._pool) parse in parallel without the GIL, each into its
own growing buffers; the pieces are then copied in order into NumPy arrays.

Grammar (chosen to accept exactly what scikit-learn's ``load_svmlight_file``
accepts, which relies on Python's ``float()`` and ``int()``):

* lines end at ``\\n``; tokens are separated by ASCII whitespace
  (space, ``\\t``, ``\\r``, ``\\v``, ``\\f``); ``#`` starts a comment running to
  the end of the line; blank and comment-only lines are skipped;
* numbers: ``[+-]`` then digits with an optional ``.`` fraction and
  ``e[+-]digits`` exponent, single underscores allowed between digits, or
  ``inf`` / ``infinity`` / ``nan`` (any case); indices are ``[+-]digits``
  (underscores between digits allowed, ``-0`` is 0);
* libsvm: ``label [qid:x] index:value ...``; libffm: ``label
  field:feature:value ...``.

Numbers are converted exactly as ``float()`` does (correctly rounded to a
double): mantissas of at most 19 significant digits that fit in 53 bits with
a decimal exponent in [-22, 22] use Clinger's fast path (one exact IEEE
multiplication or division); everything else goes to the C library's
``strtod``.  float32 values are rounded from that double, as scikit-learn
does.
"""
import numpy as np
cimport numpy as cnp

from libc.stdint cimport int32_t, int64_t, uint64_t, INT64_MAX, INT64_MIN, INT32_MAX
from libc.stdlib cimport malloc, realloc, free, strtod
from libc.string cimport memchr, memcpy
from libc.math cimport isfinite, NAN, INFINITY

from cfm._common cimport line_split
from cfm._pool cimport parallel_for, team
from cfm._textparse cimport (between_digits, fast_exact, is_digit, is_ws, mantissa_run,
                             read_sign, release_scratch, scratch, skip_ws, SCRATCH_BYTES)

cnp.import_array()

# Error codes (keep in sync with cfm/data.py)
cpdef enum:
    ERR_NONE = 0
    ERR_LABEL = 1
    ERR_NO_COLON = 2
    ERR_INDEX = 3
    ERR_NEG_INDEX = 4
    ERR_ZERO_INDEX = 5
    ERR_VALUE = 6
    ERR_UNSORTED = 7
    ERR_FIELD = 8
    ERR_FIELD_RANGE = 9
    ERR_NOMEM = 10
    ERR_INDEX_RANGE = 11
    ERR_QID = 12
    ERR_LABEL_NONFINITE = 13
    ERR_VALUE_NONFINITE = 14

# ``finite`` flags of parse_chunk: refuse nan / inf values, labels
cpdef enum:
    FINITE_VALUES = 1
    FINITE_LABELS = 2

cpdef enum:
    FMT_LIBSVM = 0
    FMT_LIBFFM = 1

# Largest libffm field / feature id: ids are 32-bit, as in libffm and xLearn,
# and a count of them (largest id + 1) must fit in int32.
cpdef enum:
    MAX_ID_32 = 2147483646


cdef struct Piece:
    const char* start
    const char* end
    # outputs
    double* labels
    int64_t* row_end          # local nnz after each row
    int64_t n_rows
    int64_t cap_rows
    int64_t* indices
    void* values
    int32_t* fields
    int64_t nnz
    int64_t cap_nnz
    int64_t n_lines           # newlines consumed
    int64_t min_idx
    int64_t max_idx
    int64_t max_field
    int unsorted
    int err
    int64_t err_line          # newlines before the error, within the piece
    const char* err_tok
    int64_t err_val


cdef inline bint is_delim(const char* p, const char* end, bint comments) noexcept nogil:
    cdef unsigned char c
    if p >= end:
        return True
    c = <unsigned char>p[0]
    return is_ws(c) or c == 10 or (comments and c == 35)


cdef inline bint match_word(const char* p, const char* end, const char* word, int n) noexcept nogil:
    cdef int i
    if end - p < n:
        return False
    for i in range(n):
        if ((<unsigned char>p[i]) | 0x20) != <unsigned char>word[i]:
            return False
    return True


cdef inline bint is_punct(unsigned char c) noexcept nogil:
    return c == 95 or c == 46 or c == 101 or c == 69   # _ . e E


cdef const char* parse_double_us(const char* s, const char* end, double* out,
                                 bint comments) noexcept nogil:
    """A number token containing underscores (rare): accepted when Python's
    float() accepts it (each '_' between two digits) or when Cython's bytes
    -> double fast path (which scikit-learn's parser runs) does: no two
    adjacent characters among '_', '.', 'e', 'E' and none of them first or
    last; the underscores are then removed and the rest parsed as usual."""
    cdef const char* e = s
    cdef const char* r
    cdef bint ok_py = True, ok_cy = True, prev_p = True, cur
    cdef char[SCRATCH_BYTES] sbuf
    cdef char* buf
    cdef char* q
    cdef const char* stop
    cdef Py_ssize_t n
    while not is_delim(e, end, comments):
        e += 1
    n = e - s
    r = s
    while r < e:
        if r[0] == 95 and not between_digits(r, s, e):
            ok_py = False
        cur = is_punct(<unsigned char>r[0])
        if cur and prev_p:
            ok_cy = False
        prev_p = cur
        r += 1
    if prev_p:
        ok_cy = False
    if not (ok_py or ok_cy):
        return NULL
    buf = scratch(sbuf, n)
    if buf == NULL:
        return NULL
    q = buf
    r = s
    while r < e:
        if r[0] != 95:
            q[0] = r[0]
            q += 1
        r += 1
    stop = parse_double(buf, q, out, comments)
    if stop != q:
        e = NULL
    release_scratch(buf, sbuf)
    return e


cdef const char* parse_double(const char* p, const char* end, double* out,
                              bint comments) noexcept nogil:
    """Parse a number with Python float() grammar starting at p.

    Returns the position after it, or NULL when no valid number starts at p.
    The caller checks that a delimiter follows.
    """
    cdef const char* s = p
    cdef const char* t
    cdef bint neg = False, any_digit = False, trunc = False
    cdef bint eneg = False, edig = False
    cdef uint64_t m = 0
    cdef int nd = 0
    cdef int64_t dexp = 0, ex = 0, e10
    cdef unsigned char c
    cdef char[SCRATCH_BYTES] sbuf
    cdef char* buf
    cdef char* q
    cdef const char* r
    cdef Py_ssize_t n
    neg = read_sign(&p, end)
    if p < end and ((<unsigned char>p[0]) | 0x20) in (105, 110):  # i n
        if match_word(p, end, b"infinity", 8):
            out[0] = -INFINITY if neg else INFINITY
            return p + 8
        if match_word(p, end, b"inf", 3):
            out[0] = -INFINITY if neg else INFINITY
            return p + 3
        if match_word(p, end, b"nan", 3):
            out[0] = -NAN if neg else NAN
            return p + 3
        return NULL
    # integer part, then the fraction (a digit beyond 19 sets trunc)
    t = mantissa_run(p, end, &m, &nd, &dexp, False, &trunc)
    any_digit = t != p
    p = t
    if p < end and p[0] == 95:  # underscore
        return parse_double_us(s, end, out, comments)
    if p < end and p[0] == 46:  # .
        t = mantissa_run(p + 1, end, &m, &nd, &dexp, True, &trunc)
        any_digit = any_digit or t != p + 1
        p = t
        if p < end and p[0] == 95:
            return parse_double_us(s, end, out, comments)
    if not any_digit:
        return NULL
    if p < end and (p[0] == 101 or p[0] == 69):  # e E
        p += 1
        eneg = read_sign(&p, end)
        while p < end:
            c = <unsigned char>p[0]
            if is_digit(c):
                edig = True
                if ex < 100000000:
                    ex = ex * 10 + (c - 48)
                p += 1
            elif c == 95:
                return parse_double_us(s, end, out, comments)
            else:
                break
        if not edig:
            return NULL
    e10 = dexp - ex if eneg else dexp + ex
    if m == 0:
        out[0] = -0.0 if neg else 0.0
        return p
    if not trunc and fast_exact(m, e10, neg, out):
        return p
    # slow path: strtod on a copy without underscores
    n = p - s
    buf = scratch(sbuf, n)
    if buf == NULL:
        return NULL
    memcpy(buf, s, n)
    buf[n] = 0
    out[0] = strtod(buf, NULL)
    release_scratch(buf, sbuf)
    return p


cdef const char* parse_int(const char* p, const char* end, int64_t* out, bint* overflow) noexcept nogil:
    """Parse [+-]digits (underscores between digits) like Python int().  A
    value beyond int64 sets ``overflow`` and saturates (INT64_MAX / INT64_MIN),
    so that callers' range checks refuse it without a test of their own."""
    cdef const char* s = p
    cdef bint neg = False, any_digit = False
    cdef uint64_t v = 0
    cdef unsigned char c
    overflow[0] = False
    neg = read_sign(&p, end)
    while p < end:
        c = <unsigned char>p[0]
        if is_digit(c):
            any_digit = True
            if v > <uint64_t>((INT64_MAX - (c - 48)) // 10):
                overflow[0] = True
            else:
                v = v * 10 + (c - 48)
            p += 1
        elif c == 95:
            if not between_digits(p, s, end):
                return NULL
            p += 1
        else:
            break
    if not any_digit:
        return NULL
    if overflow[0]:
        out[0] = INT64_MIN if neg else INT64_MAX
    else:
        out[0] = -<int64_t>v if neg else <int64_t>v
    return p


cdef inline bint grow_rows(Piece* pc) noexcept nogil:
    cdef int64_t cap = pc.cap_rows * 2 + 1024
    cdef double* a = <double*>realloc(pc.labels, cap * sizeof(double))
    if a == NULL:
        return False
    pc.labels = a
    cdef int64_t* b = <int64_t*>realloc(pc.row_end, cap * sizeof(int64_t))
    if b == NULL:
        return False
    pc.row_end = b
    pc.cap_rows = cap
    return True


cdef inline bint grow_nnz(Piece* pc, int vsize, bint ffm) noexcept nogil:
    cdef int64_t cap = pc.cap_nnz * 2 + 4096
    cdef int64_t* a = <int64_t*>realloc(pc.indices, cap * sizeof(int64_t))
    if a == NULL:
        return False
    pc.indices = a
    cdef void* b = realloc(pc.values, cap * vsize)
    if b == NULL:
        return False
    pc.values = b
    cdef int32_t* f
    if ffm:
        f = <int32_t*>realloc(pc.fields, cap * sizeof(int32_t))
        if f == NULL:
            return False
        pc.fields = f
    pc.cap_nnz = cap
    return True


# parse_piece is compiled twice: without finiteness tests (char, the default)
# and with them (short), so that the default loop pays nothing for them
ctypedef fused checks_t:
    char
    short


cdef inline void fail(Piece* pc, int err, const char* tok, int64_t val) noexcept nogil:
    """Record the first error of a piece: its code, token and value (an id)."""
    pc.err = err
    pc.err_tok = tok
    pc.err_val = val


cdef void parse_piece(Piece* pc, int fmt, bint f32, bint zero_ok, bint strict_order,
                      int64_t max_index, int64_t max_field, int finite,
                      checks_t checks) noexcept nogil:
    """Parse the lines in [pc.start, pc.end) into the piece's buffers.

    Every integer read is range-checked before use: ids above ``max_index``
    (< INT64_MAX) and field ids above ``max_field`` (< INT64_MAX) are
    ERR_INDEX_RANGE / ERR_FIELD_RANGE with ``err_val`` the id (INT64_MAX: it
    overflowed int64, see parse_int).
    """
    cdef const char* p = pc.start
    cdef const char* end = pc.end
    cdef const char* tok
    cdef const char* q
    cdef const char* nl
    cdef double label, val
    cdef float fval
    cdef int64_t idx, fld, prev
    cdef bint ovf, first, comments
    cdef bint ffm = fmt == FMT_LIBFFM
    cdef int vsize = 4 if f32 else 8
    cdef unsigned char c
    while p < end:
        p = skip_ws(p, end)  # start of a line
        if p >= end:
            break
        c = <unsigned char>p[0]
        if c == 10:
            p += 1
            pc.n_lines += 1
            continue
        if c == 35:
            nl = <const char*>memchr(p, 10, end - p)
            if nl == NULL:
                p = end
                break
            p = nl + 1
            pc.n_lines += 1
            continue
        tok = p
        p = parse_double(p, end, &label, True)
        if p == NULL or not is_delim(p, end, True):
            fail(pc, ERR_LABEL, tok, 0)
            return
        if checks_t is short and (finite & FINITE_LABELS) and not isfinite(label):
            fail(pc, ERR_LABEL_NONFINITE, tok, 0)
            return
        if pc.n_rows == pc.cap_rows and not grow_rows(pc):
            fail(pc, ERR_NOMEM, tok, 0)
            return
        pc.labels[pc.n_rows] = label
        prev = -1
        first = True
        comments = True
        while True:
            p = skip_ws(p, end)
            if p >= end:
                break
            c = <unsigned char>p[0]
            if c == 10:
                break
            if c == 35 and comments:
                nl = <const char*>memchr(p, 10, end - p)
                p = end if nl == NULL else nl
                break
            tok = p
            if first and not ffm and end - p >= 3 and p[0] == 113 and p[1] == 105 and p[2] == 100:
                # qid:... as first feature token: skipped (value not checked).
                # A NUL byte in it hides any later '#' from scikit-learn's
                # strchr-based comment detection: mirror that.
                ovf = False  # reused: "colon seen"
                while p < end:
                    c = <unsigned char>p[0]
                    if is_ws(c) or c == 10 or (comments and c == 35):
                        break
                    if c == 58:
                        ovf = True
                    elif c == 0:
                        comments = False
                    p += 1
                if not ovf:
                    fail(pc, ERR_QID, tok, 0)
                    return
                first = False
                continue
            first = False
            if ffm:
                p = parse_int(p, end, &fld, &ovf)  # saturates on overflow
                if p == NULL or fld < 0:
                    fail(pc, ERR_FIELD, tok, 0)
                    return
                if p >= end or p[0] != 58:
                    fail(pc, ERR_NO_COLON, tok, 0)
                    return
                if fld > max_field:
                    fail(pc, ERR_FIELD_RANGE, tok, fld)
                    return
                p += 1
            q = parse_int(p, end, &idx, &ovf)  # saturates: > max_index on overflow
            if q == NULL:
                fail(pc, ERR_INDEX, tok, 0)
                return
            p = q
            if p >= end or p[0] != 58:
                fail(pc, ERR_NO_COLON, tok, 0)
                return
            if idx < 0:
                fail(pc, ERR_NEG_INDEX, tok, idx)
                return
            if idx == 0 and not zero_ok:
                fail(pc, ERR_ZERO_INDEX, tok, 0)
                return
            if idx > max_index:
                fail(pc, ERR_INDEX_RANGE, tok, idx)
                return
            p += 1
            q = parse_double(p, end, &val, comments)
            if q == NULL or not is_delim(q, end, comments):
                fail(pc, ERR_VALUE, tok, 0)
                return
            p = q
            if idx <= prev:
                if strict_order:
                    fail(pc, ERR_UNSORTED, tok, 0)
                    return
                pc.unsorted = True
            prev = idx
            if pc.nnz == pc.cap_nnz and not grow_nnz(pc, vsize, ffm):
                fail(pc, ERR_NOMEM, tok, 0)
                return
            pc.indices[pc.nnz] = idx
            if f32:
                fval = <float>val
                (<float*>pc.values)[pc.nnz] = fval
                if checks_t is short and (finite & FINITE_VALUES) and not isfinite(fval):
                    # (also a value that overflows float32, e.g. 1e39)
                    fail(pc, ERR_VALUE_NONFINITE, tok, 0)
                    return
            else:
                (<double*>pc.values)[pc.nnz] = val
                if checks_t is short and (finite & FINITE_VALUES) and not isfinite(val):
                    fail(pc, ERR_VALUE_NONFINITE, tok, 0)
                    return
            if ffm:
                pc.fields[pc.nnz] = <int32_t>fld
                if fld > pc.max_field:
                    pc.max_field = fld
            if idx < pc.min_idx:
                pc.min_idx = idx
            if idx > pc.max_idx:
                pc.max_idx = idx
            pc.nnz += 1
        pc.row_end[pc.n_rows] = pc.nnz
        pc.n_rows += 1
        if p < end:  # at the newline
            p += 1
            pc.n_lines += 1


cdef void split_pieces(const char* buf, Py_ssize_t n, Piece* pieces, int n_pieces) noexcept nogil:
    cdef Py_ssize_t i, pos, prev = 0
    for i in range(n_pieces):
        pos = line_split(buf, n, i, n_pieces, prev)
        pieces[i].start = buf + prev
        pieces[i].end = buf + pos
        prev = pos


cdef struct ParseJob:
    Piece* pieces
    int fmt
    bint f32, zero_ok, strict_order
    int64_t max_index, max_field
    int finite


cdef void parse_task(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef ParseJob* job = <ParseJob*>p
    cdef Piece* pieces = job.pieces
    cdef char no_checks = 0  # parse_piece compiled without / with the finiteness tests
    cdef short checks = 1
    cdef bint f32 = job.f32, ffm = job.fmt == FMT_LIBFFM
    cdef int64_t i, est
    for i in range(lo, hi):
        # initial capacity from the piece size (grown on demand)
        est = (pieces[i].end - pieces[i].start) // 8 + 16
        pieces[i].cap_nnz = est
        pieces[i].indices = <int64_t*>malloc(est * sizeof(int64_t))
        pieces[i].values = malloc(est * (4 if f32 else 8))
        if ffm:
            pieces[i].fields = <int32_t*>malloc(est * sizeof(int32_t))
        est = (pieces[i].end - pieces[i].start) // 64 + 16
        pieces[i].cap_rows = est
        pieces[i].labels = <double*>malloc(est * sizeof(double))
        pieces[i].row_end = <int64_t*>malloc(est * sizeof(int64_t))
        if (pieces[i].indices == NULL or pieces[i].values == NULL or pieces[i].labels == NULL
                or pieces[i].row_end == NULL or (ffm and pieces[i].fields == NULL)):
            pieces[i].err = ERR_NOMEM
            pieces[i].err_tok = pieces[i].start
        elif job.finite:
            parse_piece(&pieces[i], job.fmt, f32, job.zero_ok, job.strict_order, job.max_index,
                        job.max_field, job.finite, checks)
        else:
            parse_piece(&pieces[i], job.fmt, f32, job.zero_ok, job.strict_order, job.max_index,
                        job.max_field, 0, no_checks)


def parse_chunk(const unsigned char[::1] buf, int fmt=FMT_LIBSVM, bint f32=True,
                bint zero_ok=True, bint strict_order=True, int64_t max_index=INT64_MAX,
                int64_t n_fields=-1, int n_threads=1, int finite=0):
    """Parse a buffer of complete lines.

    Ids above ``max_index`` (at most 2**63 - 2) and (libffm) field ids >=
    ``n_fields`` (-1: above MAX_ID_32, so that a count of them fits in int32)
    are errors (ERR_INDEX_RANGE / ERR_FIELD_RANGE, extra value the id,
    2**63 - 1 when it does not even fit in int64); ``finite`` (FINITE_VALUES |
    FINITE_LABELS) refuses nan / inf values (after the float32 rounding) /
    labels.

    Returns a dict with ``labels`` (float64), ``row_end`` (int64 cumulative
    nnz per row), ``indices`` (int32 when the largest index fits, else int64),
    ``values`` (float32 / float64), ``fields`` (int32 per nonzero, libffm
    only), ``n_lines``, ``min_idx``, ``max_idx``, ``max_field``, ``unsorted``
    and ``error``: None or (code, newline count before the error, token start
    offset, extra value).
    """
    cdef Py_ssize_t n = buf.shape[0]
    cdef const char* base = <const char*>&buf[0] if n > 0 else NULL
    cdef int nt = team(n_threads)
    cdef int n_pieces = 1
    cdef int i
    cdef bint ffm = fmt == FMT_LIBFFM
    if n > (1 << 20):
        n_pieces = min(nt * 4, <int>(n >> 18))
    if nt > n_pieces:
        nt = n_pieces
    cdef Piece* pieces = <Piece*>malloc(n_pieces * sizeof(Piece))
    if pieces == NULL:
        raise MemoryError()
    for i in range(n_pieces):
        pieces[i].labels = NULL
        pieces[i].row_end = NULL
        pieces[i].indices = NULL
        pieces[i].values = NULL
        pieces[i].fields = NULL
        pieces[i].n_rows = 0
        pieces[i].nnz = 0
        pieces[i].cap_rows = 0
        pieces[i].cap_nnz = 0
        pieces[i].n_lines = 0
        pieces[i].min_idx = INT64_MAX
        pieces[i].max_idx = -1
        pieces[i].max_field = -1
        pieces[i].unsorted = 0
        pieces[i].err = ERR_NONE
        pieces[i].err_tok = NULL
        pieces[i].err_val = 0
    cdef int64_t max_field = n_fields - 1 if n_fields >= 0 else MAX_ID_32
    if ffm and max_index > MAX_ID_32:
        max_index = MAX_ID_32
    if max_index > INT64_MAX - 1:  # an id that overflowed reads as INT64_MAX
        max_index = INT64_MAX - 1
    cdef ParseJob job
    job.pieces = pieces
    job.fmt = fmt
    job.f32 = f32
    job.zero_ok = zero_ok
    job.strict_order = strict_order
    job.max_index = max_index
    job.max_field = max_field
    job.finite = finite
    try:
        with nogil:
            split_pieces(base, n, pieces, n_pieces)
            parallel_for(parse_task, &job, n_pieces, 1, nt)
        return _gather(pieces, n_pieces, base, f32, ffm, nt)
    finally:
        for i in range(n_pieces):
            free(pieces[i].labels)
            free(pieces[i].row_end)
            free(pieces[i].indices)
            free(pieces[i].values)
            free(pieces[i].fields)
        free(pieces)


cdef struct GatherJob:
    Piece* pieces
    const int64_t* roff
    const int64_t* noff
    char* lab
    int64_t* rend
    char* ind
    char* val
    char* fld
    int vsize
    bint ffm, idx32


cdef void gather_task(void* p, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef GatherJob* job = <GatherJob*>p
    cdef Piece* pieces = job.pieces
    cdef int vsize = job.vsize
    cdef int64_t i, j, r0, k0
    cdef int32_t* ind32
    for i in range(lo, hi):
        r0 = job.roff[i]
        k0 = job.noff[i]
        if pieces[i].n_rows:
            memcpy(job.lab + r0 * 8, pieces[i].labels, pieces[i].n_rows * 8)
            for j in range(pieces[i].n_rows):
                job.rend[r0 + j] = pieces[i].row_end[j] + k0
        if pieces[i].nnz:
            memcpy(job.val + k0 * vsize, pieces[i].values, pieces[i].nnz * vsize)
            if job.ffm:
                memcpy(job.fld + k0 * 4, pieces[i].fields, pieces[i].nnz * 4)
            if job.idx32:
                ind32 = (<int32_t*>job.ind) + k0
                for j in range(pieces[i].nnz):
                    ind32[j] = <int32_t>pieces[i].indices[j]
            else:
                memcpy(job.ind + k0 * 8, pieces[i].indices, pieces[i].nnz * 8)


cdef object _gather(Piece* pieces, int n_pieces, const char* base, bint f32, bint ffm, int nt):
    cdef int i
    cdef int64_t lines = 0
    for i in range(n_pieces):
        if pieces[i].err != ERR_NONE:
            return {"error": (pieces[i].err, lines + pieces[i].n_lines,
                              <Py_ssize_t>(pieces[i].err_tok - base), pieces[i].err_val)}
        lines += pieces[i].n_lines
    cdef int64_t n_rows = 0, nnz = 0, mn = INT64_MAX, mx = -1, mf = -1
    cdef bint unsorted = False
    cdef int64_t[::1] roff = np.zeros(n_pieces + 1, dtype=np.int64)
    cdef int64_t[::1] noff = np.zeros(n_pieces + 1, dtype=np.int64)
    for i in range(n_pieces):
        roff[i + 1] = roff[i] + pieces[i].n_rows
        noff[i + 1] = noff[i] + pieces[i].nnz
        mn = min(mn, pieces[i].min_idx)
        mx = max(mx, pieces[i].max_idx)
        mf = max(mf, pieces[i].max_field)
        unsorted = unsorted or pieces[i].unsorted
    n_rows = roff[n_pieces]
    nnz = noff[n_pieces]
    cdef bint idx32 = mx <= INT32_MAX
    labels_a = np.empty(n_rows, dtype=np.float64)
    row_end_a = np.empty(n_rows, dtype=np.int64)
    indices_a = np.empty(nnz, dtype=np.int32 if idx32 else np.int64)
    values_a = np.empty(nnz, dtype=np.float32 if f32 else np.float64)
    fields_a = np.empty(nnz if ffm else 0, dtype=np.int32)
    cdef char* lab = cnp.PyArray_BYTES(labels_a)
    cdef int64_t* rend = <int64_t*>cnp.PyArray_DATA(row_end_a)
    cdef char* ind = cnp.PyArray_BYTES(indices_a)
    cdef char* val = cnp.PyArray_BYTES(values_a)
    cdef char* fld = cnp.PyArray_BYTES(fields_a)
    cdef int vsize = 4 if f32 else 8
    cdef int64_t j, o, r0, k0
    cdef int32_t* ind32
    cdef int64_t* ind64
    cdef GatherJob job
    job.pieces = pieces
    job.roff = &roff[0]
    job.noff = &noff[0]
    job.lab = lab
    job.rend = rend
    job.ind = ind
    job.val = val
    job.fld = fld
    job.vsize = vsize
    job.ffm = ffm
    job.idx32 = idx32
    with nogil:
        parallel_for(gather_task, &job, n_pieces, 1, nt)
    return {"error": None, "labels": labels_a, "row_end": row_end_a, "indices": indices_a,
            "values": values_a, "fields": fields_a if ffm else None, "n_lines": lines,
            "min_idx": mn if nnz else -1, "max_idx": mx, "max_field": mf,
            "unsorted": bool(unsorted)}


ctypedef fused idx_t:
    int32_t
    int64_t


def first_fields(int32_t[::1] out, const idx_t[::1] indices, const int32_t[::1] fields):
    """out[j] = field of the first occurrence of feature j (where out[j] < 0)."""
    cdef Py_ssize_t k, n = indices.shape[0]
    cdef int64_t j
    with nogil:
        for k in range(n):
            j = indices[k]
            if out[j] < 0:
                out[j] = fields[k]
