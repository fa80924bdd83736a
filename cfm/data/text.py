"""libsvm / libFM / libffm text readers of :mod:`cfm.data`: chunks of lines
(cfm.data._source) parsed by the compiled parser (``cfm._parse``, OpenMP
threads without the GIL) into CSR arrays, with every error reported as
``file:line: token (reason)``.
"""
import os

import numpy as np

from .._lazy import sparse as sp
from .. import _parse
from .._fields import EntryFields
from .._validation import effective_n_threads, memory_limit
from ..exceptions import DataFormatError
from ._source import _MAX_ID_64, CHUNK_BYTES, MAX_ID_32, _LineTooLong, _read_chunks, _too_long

_INT32_MAX = 2**31 - 1

_REASONS = {
    _parse.ERR_LABEL: "invalid label",
    _parse.ERR_NO_COLON: "expected index:value",
    _parse.ERR_INDEX: "invalid feature index",
    _parse.ERR_NEG_INDEX: "negative feature index",
    _parse.ERR_ZERO_INDEX: "feature index 0 with zero_based=False",
    _parse.ERR_VALUE: "invalid value",
    _parse.ERR_UNSORTED: ("feature indices must be sorted and unique within a line (as in "
                          "scikit-learn); pass allow_unsorted=True to sort them and sum "
                          "duplicates"),
    _parse.ERR_FIELD: "invalid field id",
    _parse.ERR_QID: "qid token without ':'",
    _parse.ERR_LABEL_NONFINITE: "non-finite label: nan or inf",
}

def _ParseError(msg, line, code, value):
    """DataFormatError at a line, with what was wrong as attributes (for
    callers that rephrase it, e.g. a model-size check locating an id)."""
    exc = DataFormatError(msg)
    exc.line, exc.code, exc.value = line, code, value
    return exc



def _token_at(buf, pos):
    end = pos
    n = len(buf)
    while end < n and end - pos < 80 and buf[end] not in b" \t\n\r\x0b\x0c":
        end += 1
    tok = bytes(buf[pos:end]).decode("utf-8", errors="replace")
    return tok + ("..." if end - pos >= 80 else "")


def _check_dtype(dtype):
    dt = np.dtype(dtype)
    if dt.kind not in "fiub":
        raise ValueError(f"dtype must be a real numeric dtype, got {dt}")
    return dt


def _check_n(value, name, minimum=1):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be None or an integer >= {minimum}, got {value!r}")
    return int(value)


def _fmt_code(fmt):
    return _parse.FMT_LIBFFM if fmt == "libffm" else _parse.FMT_LIBSVM


def _next_chunk(it, name, lines):
    """The next buffer of lines of ``it`` (None at its end); a line longer
    than MAX_LINE_BYTES raises DataFormatError at ``name``:line (``lines``:
    the lines before the buffer)."""
    try:
        return next(it)
    except StopIteration:
        return None
    except _LineTooLong:
        raise _ParseError(f"{name}:{lines + 1}: {_too_long()}", lines + 1, None, None) \
            from None


def _parse_stream(path, fmt, *, f32=True, zero_ok=True, strict_order=True,
                  max_index=_MAX_ID_64, n_fields=None, n_threads=1, chunk_bytes=CHUNK_BYTES,
                  chunks=None, first_line=0, finite=False, n_features=None):
    """Parse a text file chunk by chunk; yield the kernel's dicts.

    ``chunks``: an iterable of buffers of complete lines to parse instead of
    reading ``path`` (e.g. read from a pipe); ``path`` then only names the
    input in error messages, whose line numbers start after ``first_line``.
    ``finite``: nan / inf values and labels are errors (True), or only
    values ("values").  ``n_features`` only words the message of an id
    above ``max_index``.

    Raises DataFormatError (file:line: token) on the first malformed line.
    """
    name = os.fspath(path)
    lines = first_line
    code = _fmt_code(fmt)
    flags = 0 if not finite else (_parse.FINITE_VALUES if finite == "values" else
                                  _parse.FINITE_VALUES | _parse.FINITE_LABELS)
    it = iter(_read_chunks(path, chunk_bytes) if chunks is None else chunks)
    while True:
        buf = _next_chunk(it, name, lines)
        if buf is None:
            return
        r = _parse.parse_chunk(buf, code, f32, zero_ok, strict_order,
                               min(max_index, _MAX_ID_64),
                               -1 if n_fields is None else n_fields, n_threads, flags)
        if r["error"] is not None:
            err, nl, pos, val = r["error"]
            if err == _parse.ERR_NOMEM:
                raise MemoryError(f"{name}: out of memory while parsing")
            tok = _token_at(buf, pos)
            if err == _parse.ERR_INDEX_RANGE:
                reason = _index_range_reason(fmt, val, max_index, n_features)
            elif err == _parse.ERR_FIELD_RANGE:
                reason = (f"field id {val} >= n_fields={n_fields}" if n_fields is not None
                          and val <= MAX_ID_32 else
                          f"field id out of range: libffm ids are 0 .. {MAX_ID_32}")
            elif err == _parse.ERR_VALUE_NONFINITE:
                reason = (f"non-finite value: nan, inf or beyond the "
                          f"{'float32' if f32 else 'float64'} range")
            elif err == _parse.ERR_NO_COLON and fmt == "libffm":
                reason = "expected field:feature:value"
            else:
                reason = _REASONS.get(err, "malformed token")
            line = lines + nl + 1
            raise _ParseError(f"{name}:{line}: cannot parse {tok!r} ({reason})", line, err,
                              val)
        lines += r["n_lines"]
        yield r


def _index_range_reason(fmt, val, max_index, n_features):
    # val: the id, 2**63 - 1 when it overflowed int64
    if fmt == "libffm" and val > MAX_ID_32:
        return f"feature id out of range: libffm ids are 0 .. {MAX_ID_32}"
    if val > _MAX_ID_64:
        return f"feature index out of range: ids are 0 .. {_MAX_ID_64}"
    if n_features is not None:
        return f"feature index {val} >= n_features"
    return f"feature index {val} above the limit {max_index}"



def _first_line_above(path, fmt, max_index=_MAX_ID_64, n_fields=None):
    """Line number of the first id above ``max_index`` (raw file id) or field
    id >= ``n_fields`` in a text file, or None."""
    try:
        for _ in _parse_stream(path, fmt, strict_order=False, max_index=max_index,
                               n_fields=n_fields):
            pass
    except DataFormatError as exc:
        if getattr(exc, "code", None) in (_parse.ERR_INDEX_RANGE, _parse.ERR_FIELD_RANGE):
            return exc.line
        raise
    return None


def _locate_largest_ids(path, info, fields=False):
    """Where a scanned file (``info`` from scan_file) holds its largest
    feature id (and field id, ``fields``): text for an error message, to
    follow the file name (':LINE: feature id N' or ': n_features=N')."""
    if info.get("format") not in ("libsvm", "libffm") or info.get("max_index", -1) < 0:
        return f": n_features={info.get('n_features')}" + (
            f", n_fields={info.get('n_fields')}" if fields else "")
    fmt = info["format"]
    mx = info["max_index"]
    line = _first_line_above(path, fmt, max_index=mx - 1)
    out = f":{line}: feature id {mx}" if line is not None else f": feature id {mx}"
    if fields and fmt == "libffm" and info.get("n_fields", 0) > 1:
        mf = info["n_fields"] - 1
        fline = _first_line_above(path, fmt, n_fields=mf)
        out += f" (and field id {mf}" + (f" at line {fline})" if fline is not None else ")")
    return out


def _line_of_row(path, fmt, row):
    """1-based line of data row ``row`` (0-based) of a text file, or None
    (for error messages: reads the file up to it again)."""
    code = _fmt_code(fmt)
    rows = lines = 0
    for buf in _read_chunks(path):
        r = _parse.parse_chunk(buf, code, True, True, False, _MAX_ID_64, -1, 1, 0)
        if r["error"] is not None:
            return None
        n = len(r["labels"])
        if row < rows + n:
            for i, line in enumerate(bytes(buf).split(b"\n")):
                if line.split(b"#", 1)[0].strip():
                    if rows == row:
                        return lines + i + 1
                    rows += 1
            return None
        rows += n
        lines += r["n_lines"]
    return None


def _where_row(path, fmt, row):
    """'path:line' (text) or 'path: row N (0-based)' (cache) for a data row, or
    'path' when ``row`` is None or its line cannot be found."""
    name = os.fspath(path)
    if row is None:
        return name
    if fmt in ("libsvm", "libffm"):
        line = _line_of_row(path, fmt, row)
        return name if line is None else f"{name}:{line}"
    return f"{name}: row {row} (0-based)"



def _check_zero_based(zero_based):
    if zero_based not in (True, False, "auto"):
        raise ValueError(f"zero_based must be True, False or 'auto', got {zero_based!r}")
    return zero_based


def _index_limit(n_features, zero_based):
    if n_features is None:
        return 2**63 - 1
    return n_features - 1 if zero_based is True else n_features


class _Chunk:
    """One parsed chunk as CSR parts (row offsets local to the chunk)."""

    __slots__ = ("y", "indptr", "indices", "data", "fields", "min_idx", "max_idx", "max_field",
                 "unsorted")

    def __init__(self, r):
        self.y = r["labels"]
        self.indptr = np.empty(len(self.y) + 1, dtype=np.int64)
        self.indptr[0] = 0
        self.indptr[1:] = r["row_end"]
        self.indices = r["indices"]
        self.data = r["values"]
        self.fields = r["fields"]
        self.min_idx, self.max_idx = r["min_idx"], r["max_idx"]
        self.max_field = r["max_field"]
        self.unsorted = r["unsorted"]


def _update_fields(fields, ch, path):
    """Grow ``fields`` (the field of each column of a libffm file) to cover
    the chunk and record first-seen fields.  A column count whose array would
    not fit in the memory available is refused, naming the line of the id."""
    if ch.fields is None or not len(ch.indices):
        return fields
    need = int(ch.max_idx) + 1
    if need > len(fields):
        room = memory_limit() // 4 - len(fields)  # int32 entries (the old array stays)
        if need > room:
            line = _first_line_above(path, "libffm", max_index=max(0, room - 1))
            raise DataFormatError(
                f"{os.fspath(path)}{'' if line is None else f':{line}'}: feature id "
                f"{need - 1}: the field of each of {need:,} columns needs "
                f"{4 * need / 2**30:,.1f} GiB, more than the memory available; use smaller "
                "ids (remap or hash them)")
        new = np.full(min(max(need, 2 * len(fields)), room), -1, dtype=np.int32)
        new[:len(fields)] = fields
        fields = new
    _parse.first_fields(fields, ch.indices, ch.fields)
    return fields


def _fields_out(fields, n_cols):
    """The field array of ``n_cols`` columns (-1: never seen) from the grown
    ``fields`` (a view when it is long enough: no second copy)."""
    if len(fields) >= n_cols:
        return fields[:n_cols]
    if 4 * n_cols > memory_limit():
        raise MemoryError(f"n_features={n_cols:,}: the field of each column needs "
                          f"{4 * n_cols / 2**30:,.1f} GiB, more than the memory available")
    out = np.full(n_cols, -1, dtype=np.int32)
    out[:len(fields)] = fields
    return out


def _idx_dtype(n_rows, n_cols, nnz):
    return np.int32 if max(n_rows, n_cols, nnz) <= _INT32_MAX else np.int64


def _build_csr(data, indices, indptr, shape, canonical):
    idx = _idx_dtype(shape[0], shape[1], len(indices))
    X = sp.csr_matrix((data, indices.astype(idx, copy=False), indptr.astype(idx, copy=False)),
                      shape=shape, copy=False)
    if canonical:
        X.has_sorted_indices = True
    else:
        X.sum_duplicates()
    return X


def _check_features_arg(n_features, fmt):
    """n_features as given by a caller: None or 1 .. the format's column limit."""
    n_features = _check_n(n_features, "n_features")
    top = MAX_ID_32 + 1 if fmt == "libffm" else _MAX_ID_64 + 1
    if n_features is not None and n_features > top:
        raise ValueError(f"n_features={n_features} is above the largest column count of "
                         f"{fmt} data ({top})")
    return n_features


def _load_text(path, fmt, n_features, dtype, zero_based, n_jobs, allow_unsorted, n_fields,
               allow_nonfinite=True, entry_fields=False):
    dtype = _check_dtype(dtype)
    n_features = _check_features_arg(n_features, fmt)
    n_fields = _check_n(n_fields, "n_fields")
    zero_based = _check_zero_based(zero_based) if fmt == "libsvm" else True
    nt = effective_n_threads(n_jobs)
    f32 = dtype == np.float32
    strict = fmt == "libsvm" and not allow_unsorted
    chunks = []
    fields = np.full(0, -1, dtype=np.int32)
    for r in _parse_stream(path, fmt, f32=f32, zero_ok=zero_based is not False,
                           strict_order=strict, max_index=_index_limit(n_features, zero_based),
                           n_fields=n_fields, n_threads=nt, finite=not allow_nonfinite,
                           n_features=n_features):
        ch = _Chunk(r)
        fields = _update_fields(fields, ch, path)
        chunks.append(ch)
    n_rows = sum(len(c.y) for c in chunks)
    nnz = sum(len(c.indices) for c in chunks)
    mins = [c.min_idx for c in chunks if len(c.indices)]
    max_idx = max([c.max_idx for c in chunks if len(c.indices)], default=-1)
    shift = fmt == "libsvm" and (zero_based is False or (
        zero_based == "auto" and nnz > 0 and min(mins) > 0))
    n_cols = (max_idx - shift + 1) if nnz else (1 if fmt == "libsvm" else 0)
    if n_features is not None:
        if n_cols > n_features:
            # only possible for zero_based="auto" on a zero-based file: re-parse
            # with the exact limit to name the line
            for _ in _parse_stream(path, fmt, f32=f32, strict_order=strict,
                                   max_index=n_features - 1, n_threads=nt,
                                   n_features=n_features):
                pass
            raise DataFormatError(f"{os.fspath(path)}: n_features={n_features} but the file "
                                  f"has {n_cols} features")
        n_cols = n_features
    y = np.concatenate([c.y for c in chunks]) if chunks else np.zeros(0)
    data = (np.concatenate([c.data for c in chunks]) if chunks
            else np.zeros(0, dtype=np.float32 if f32 else np.float64))
    idx = _idx_dtype(n_rows, n_cols, nnz)
    indices = (np.concatenate([c.indices for c in chunks]).astype(idx, copy=False) if chunks
               else np.zeros(0, dtype=idx))
    if shift:
        indices -= 1
    indptr = np.empty(n_rows + 1, dtype=np.int64)
    indptr[0] = 0
    r0 = k0 = 0
    for c in chunks:
        m = len(c.y)
        np.add(c.indptr[1:], k0, out=indptr[r0 + 1:r0 + m + 1])
        r0 += m
        k0 += len(c.indices)
    unsorted = any(c.unsorted for c in chunks)
    efields = None
    if entry_fields:
        efields = (np.concatenate([c.fields for c in chunks]).astype(np.int32, copy=False)
                   if chunks else np.zeros(0, dtype=np.int32))
    del chunks
    if data.dtype != dtype:
        data = data.astype(dtype)
    if entry_fields:  # the file's entries as written: per-entry fields align with them
        idx = _idx_dtype(n_rows, n_cols, nnz)
        X = sp.csr_matrix((data, indices.astype(idx, copy=False),
                           indptr.astype(idx, copy=False)), shape=(n_rows, n_cols), copy=False)
        return X, y, EntryFields(efields)
    X = _build_csr(data, indices, indptr, (n_rows, n_cols), canonical=not unsorted)
    if fmt == "libffm":
        return X, y, _fields_out(fields, n_cols)
    return X, y


def load_libsvm(path, n_features=None, dtype=np.float32, zero_based="auto", n_jobs=None,
                allow_unsorted=False, allow_nonfinite=True):
    """Load a libsvm / svmlight / libFM text file (plain or gzip).

    The output is identical (values, indices, row offsets, shape, labels) to
    ``sklearn.datasets.load_svmlight_file(path, n_features=n_features,
    dtype=dtype, zero_based=zero_based)``, only much faster: the file is
    parsed in parallel chunks by a compiled kernel.

    Parameters
    ----------
    path : str or path-like
        Text file ``label [qid:q] index:value ...`` per line.  gzip files are
        recognised by their magic bytes (any extension).  ``#`` starts a
        comment to the end of the line; blank lines are skipped; a ``qid:``
        token right after the label is ignored; CRLF line ends are fine.
    n_features : int, optional
        Number of columns; use the same value for train and test files.  A
        file index that does not fit raises :class:`cfm.DataFormatError`.
        Default: largest index + 1 (after the one-based shift).
    dtype : numpy dtype, default=np.float32
        dtype of ``X``.  Values are parsed to float64 (as ``float()`` does)
        and then cast, as scikit-learn does.
    zero_based : bool or "auto", default="auto"
        scikit-learn's meaning: False shifts indices down by one (index 0 is
        an error); "auto" shifts them when no index 0 appears in the file.
    n_jobs : int, optional
        Parser threads, scikit-learn's meaning (None: OpenMP default).
    allow_unsorted : bool, default=False
        scikit-learn (and so this function by default) rejects lines whose
        indices are not strictly increasing.  True accepts them; such rows
        are sorted and duplicate indices summed.
    allow_nonfinite : bool, default=True
        ``nan`` / ``inf`` labels and values are read as ``float()`` reads
        them (as scikit-learn does).  False refuses them (and, for float32,
        values beyond its range) with DataFormatError naming file and line,
        as training from a file does.

    Returns
    -------
    X : scipy.sparse.csr_matrix of shape (n_rows, n_features)
        Canonical CSR (sorted indices).  Index arrays are int32 when the
        matrix fits in 32-bit indices, else int64.  Explicit zeros in the
        file are kept, as scikit-learn does.
    y : ndarray of float64, shape (n_rows,)
        Labels as written (any real values; ``nan`` / ``inf`` accepted like
        ``float()`` does).

    Raises
    ------
    cfm.DataFormatError
        A malformed line; the message reads ``path:line: cannot parse
        'token' (reason)``.  Unlike scikit-learn, indices >= 2**31 are
        accepted (int64 indices, up to 2**63 - 2).  Also a line longer than
        :data:`MAX_LINE_BYTES` and corrupted gzip data.
    """
    return _load_text(path, "libsvm", n_features, dtype, zero_based, n_jobs, allow_unsorted,
                      None, allow_nonfinite)


#: libFM's text format is the libsvm format (``label index:value ...``).
load_libfm = load_libsvm


def load_libffm(path, n_features=None, dtype=np.float32, n_jobs=None, n_fields=None,
                allow_nonfinite=True, entry_fields=False):
    """Load a libffm text file ``label field:feature:value ...`` (plain or gzip).

    Parameters
    ----------
    path : str or path-like
        Same comment / blank line / gzip / CRLF rules as :func:`load_libsvm`
        (no ``qid``).  Field and feature ids are zero-based 32-bit integers,
        as in libffm and xLearn: at most :data:`MAX_ID_32` (2**31 - 2); a
        larger id raises DataFormatError naming file and line.
    n_features : int, optional
        Number of columns (largest feature id + 1 by default; 0 for a file
        without features).  A larger feature id raises DataFormatError.
    dtype : numpy dtype, default=np.float32
    n_jobs : int, optional
        Parser threads, scikit-learn's meaning.
    n_fields : int, optional
        When given, a field id >= n_fields raises DataFormatError.
    allow_nonfinite : bool, default=True
        As in :func:`load_libsvm`.
    entry_fields : bool, default=False
        True: return the field of every entry, as libffm and xLearn read the
        file (a feature may appear under several fields, e.g. in hashed
        data), with X holding the file's entries as written.

    Returns
    -------
    X : scipy.sparse.csr_matrix, column = feature id
        Canonical: a feature repeated within a line is summed (as scipy's
        ``sum_duplicates`` does) and indices are sorted.  With
        ``entry_fields=True``: each line's entries in file order, repeats
        kept (not canonical).
    y : ndarray of float64
    fields : ndarray of int32, shape (n_features,)
        Field of each column: the field the feature appears with *first in
        the file* (a feature seen under several fields keeps its first one);
        -1 for columns that never appear.  With ``entry_fields=True``: a
        :class:`cfm.EntryFields` of shape (X.nnz,), the field of each stored
        entry of X, which the FFM estimators take as ``fields``.
    """
    if not isinstance(entry_fields, (bool, np.bool_)):
        raise ValueError(f"entry_fields must be True or False, got {entry_fields!r}")
    return _load_text(path, "libffm", n_features, dtype, True, n_jobs, True, n_fields,
                      allow_nonfinite, bool(entry_fields))


