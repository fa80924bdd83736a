"""Fast readers and writers for libsvm / libFM / libffm text files and cfm's
binary data cache (``.cfmdata``).

Text parsing runs in a Cython kernel without the GIL (``cfm._parse``): the
file is read in large chunks (64 MB, cut at the last newline; gzip is
detected by its magic bytes and decompressed in a background thread while
the previous chunk is parsed), each chunk is split at newlines into pieces
that OpenMP threads parse in parallel, and the pieces are concatenated in
order.  Numbers are converted exactly as Python's ``float()`` does, so the
output is bit-identical to :func:`sklearn.datasets.load_svmlight_file`.

Cache layout (all integers little-endian)::

    offset 0   8 bytes   magic  b"\\x89CFMDAT\\n"
    offset 8   uint16    format major version
    offset 10  uint16    format minor version
    offset 12  uint32    header length H
    offset 16  uint32    CRC32 of the H header bytes
    offset 20  H bytes   header: UTF-8 JSON (n_rows, n_features, nnz,
                         has_fields, file_size, and for each array its name,
                         dtype, shape, offset, nbytes and CRC32), padded with
                         spaces so that the arrays start 64-byte aligned
    ...        raw little-endian arrays at 64-byte aligned offsets:
               indptr (int64, n_rows + 1), indices (int32 or int64, nnz),
               data (float32 / float64, nnz), y (float64, n_rows) and
               fields (int32, n_features; libffm only)

A reader accepts any minor version of its major version and refuses newer
major versions.
"""
import gzip
import json
import mmap
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ._lazy import sparse as sp
from . import _parse
from ._validation import effective_n_threads
from .exceptions import DataFormatError

__all__ = ["load_libsvm", "load_libfm", "load_libffm", "dump_libsvm", "dump_libffm",
           "convert_to_cache", "load_cache", "iter_blocks", "scan_file"]

CHUNK_BYTES = 64 << 20
CACHE_MAGIC = b"\x89CFMDAT\n"
CACHE_VERSION = (1, 0)
_CACHE_PREFIX = struct.Struct("<8sHHII")
_GZIP_MAGIC = b"\x1f\x8b"
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
}


# --------------------------------------------------------------------------
# Reading text in chunks
# --------------------------------------------------------------------------

def _open_binary(path):
    """Open ``path`` for reading bytes, transparently decompressing gzip."""
    path = os.fspath(path)
    f = open(path, "rb")
    try:
        magic = f.read(2)
        f.seek(0)
    except Exception:
        f.close()
        raise
    if magic == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=f, mode="rb"), f
    return f, f


def _is_cache(path):
    try:
        with open(os.fspath(path), "rb") as f:
            return f.read(8) == CACHE_MAGIC
    except IsADirectoryError:
        return False


def _read_chunks(path, chunk_bytes=CHUNK_BYTES):
    """Yield buffers of complete lines (the last one may lack its newline).

    The next buffer is read (and decompressed) in a background thread while
    the caller works on the current one.
    """
    fh, raw = _open_binary(path)
    if fh is raw:
        try:
            small = os.fstat(raw.fileno()).st_size < chunk_bytes
        except (OSError, AttributeError):
            small = False
        if small:  # no read-ahead thread for small files
            try:
                buf = raw.read()
            finally:
                raw.close()
            if buf:
                yield buf
            return
    state = {"rest": b"", "eof": False}

    def read_next():
        rest = state["rest"]
        while True:
            if state["eof"]:
                state["rest"] = b""
                return bytes(rest) if rest else None
            buf = bytearray(len(rest) + chunk_bytes)
            buf[:len(rest)] = rest
            mv = memoryview(buf)
            n = len(rest)
            while n < len(buf):
                k = fh.readinto(mv[n:])
                if not k:
                    state["eof"] = True
                    break
                n += k
            del mv
            if n < len(buf):
                del buf[n:]
            cut = buf.rfind(b"\n") + 1
            if cut == 0:  # no complete line yet: keep reading
                rest = buf
                continue
            state["rest"] = bytes(buf[cut:])
            del buf[cut:]
            return buf

    with ThreadPoolExecutor(max_workers=1) as ex:
        try:
            fut = ex.submit(read_next)
            while True:
                buf = fut.result()
                if buf is None:
                    return
                fut = ex.submit(read_next)
                yield buf
        finally:
            try:
                fut.result()
            except Exception:  # noqa: BLE001 - already failing or closing
                pass
            fh.close()
            raw.close()


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


def _parse_stream(path, fmt, *, f32=True, zero_ok=True, strict_order=True,
                  max_index=2**63 - 1, n_fields=None, n_threads=1, chunk_bytes=CHUNK_BYTES,
                  chunks=None, first_line=0):
    """Parse a text file chunk by chunk; yield the kernel's dicts.

    ``chunks``: an iterable of buffers of complete lines to parse instead of
    reading ``path`` (e.g. read from a pipe); ``path`` then only names the
    input in error messages, whose line numbers start after ``first_line``.

    Raises DataFormatError (file:line: token) on the first malformed line.
    """
    name = os.fspath(path)
    lines = first_line
    code = _fmt_code(fmt)
    for buf in (_read_chunks(path, chunk_bytes) if chunks is None else chunks):
        r = _parse.parse_chunk(buf, code, f32, zero_ok, strict_order, max_index,
                               -1 if n_fields is None else n_fields, n_threads)
        if r["error"] is not None:
            err, nl, pos, val = r["error"]
            if err == _parse.ERR_NOMEM:
                raise MemoryError(f"{name}: out of memory while parsing")
            tok = _token_at(buf, pos)
            if err == _parse.ERR_INDEX_RANGE:
                reason = f"feature index {val} >= n_features"
            elif err == _parse.ERR_FIELD_RANGE:
                reason = f"field {val} >= n_fields={n_fields}"
            elif err == _parse.ERR_NO_COLON and fmt == "libffm":
                reason = "expected field:feature:value"
            else:
                reason = _REASONS.get(err, "malformed token")
            raise DataFormatError(f"{name}:{lines + nl + 1}: cannot parse {tok!r} ({reason})")
        lines += r["n_lines"]
        yield r


def _detect_format(path):
    """'cache', 'libffm' or 'libsvm' from the magic bytes / first data line."""
    if _is_cache(path):
        return "cache"
    fh, raw = _open_binary(path)
    try:
        for _, line in zip(range(10_000), fh):
            line = line.split(b"#", 1)[0].split()
            feats = [t for t in line[1:] if not t.startswith(b"qid")]
            if feats:
                return "libffm" if feats[0].count(b":") >= 2 else "libsvm"
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFormatError(f"{os.fspath(path)}: cannot read: {exc}") from exc
    finally:
        fh.close()
        raw.close()
    return "libsvm"


def _resolve_format(path, format, allow_cache=True):
    if format not in ("auto", "libsvm", "libfm", "libffm", "cache"):
        raise ValueError(f"format must be 'auto', 'libsvm', 'libfm', 'libffm' or 'cache', "
                         f"got {format!r}")
    if format == "libfm":
        format = "libsvm"
    if format == "auto":
        format = _detect_format(path)
    if format == "cache" and not allow_cache:
        raise ValueError("expected a text file, got a .cfmdata cache")
    return format


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


def _update_fields(fields, ch):
    """Grow ``fields`` to cover the chunk and record first-seen fields."""
    if ch.fields is None or not len(ch.indices):
        return fields
    need = int(ch.max_idx) + 1
    if need > len(fields):
        new = np.full(max(need, 2 * len(fields)), -1, dtype=np.int32)
        new[:len(fields)] = fields
        fields = new
    _parse.first_fields(fields, ch.indices, ch.fields)
    return fields


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


def _load_text(path, fmt, n_features, dtype, zero_based, n_jobs, allow_unsorted, n_fields):
    dtype = _check_dtype(dtype)
    n_features = _check_n(n_features, "n_features")
    n_fields = _check_n(n_fields, "n_fields")
    zero_based = _check_zero_based(zero_based) if fmt == "libsvm" else True
    nt = effective_n_threads(n_jobs)
    f32 = dtype == np.float32
    strict = fmt == "libsvm" and not allow_unsorted
    chunks = []
    fields = np.full(0, -1, dtype=np.int32)
    for r in _parse_stream(path, fmt, f32=f32, zero_ok=zero_based is not False,
                           strict_order=strict, max_index=_index_limit(n_features, zero_based),
                           n_fields=n_fields, n_threads=nt):
        ch = _Chunk(r)
        fields = _update_fields(fields, ch)
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
                                   max_index=n_features - 1, n_threads=nt):
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
    del chunks
    if data.dtype != dtype:
        data = data.astype(dtype)
    X = _build_csr(data, indices, indptr, (n_rows, n_cols), canonical=not unsorted)
    if fmt == "libffm":
        out = np.full(n_cols, -1, dtype=np.int32)
        k = min(n_cols, len(fields))
        out[:k] = fields[:k]
        return X, y, out
    return X, y


# --------------------------------------------------------------------------
# Public text readers
# --------------------------------------------------------------------------

def load_libsvm(path, n_features=None, dtype=np.float32, zero_based="auto", n_jobs=None,
                allow_unsorted=False):
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
        accepted (int64 indices).
    """
    return _load_text(path, "libsvm", n_features, dtype, zero_based, n_jobs, allow_unsorted,
                      None)


#: libFM's text format is the libsvm format (``label index:value ...``).
load_libfm = load_libsvm


def load_libffm(path, n_features=None, dtype=np.float32, n_jobs=None, n_fields=None):
    """Load a libffm text file ``label field:feature:value ...`` (plain or gzip).

    Parameters
    ----------
    path : str or path-like
        Same comment / blank line / gzip / CRLF rules as :func:`load_libsvm`
        (no ``qid``).  Field and feature ids are zero-based.
    n_features : int, optional
        Number of columns (largest feature id + 1 by default; 0 for a file
        without features).  A larger feature id raises DataFormatError.
    dtype : numpy dtype, default=np.float32
    n_jobs : int, optional
        Parser threads, scikit-learn's meaning.
    n_fields : int, optional
        When given, a field id >= n_fields raises DataFormatError.

    Returns
    -------
    X : scipy.sparse.csr_matrix, column = feature id
        Canonical: a feature repeated within a line is summed (as scipy's
        ``sum_duplicates`` does) and indices are sorted.
    y : ndarray of float64
    fields : ndarray of int32, shape (n_features,)
        Field of each column: the field the feature appears with *first in
        the file* (a feature seen under several fields keeps its first one);
        -1 for columns that never appear.
    """
    return _load_text(path, "libffm", n_features, dtype, True, n_jobs, True, n_fields)


def scan_file(path, format="auto", zero_based="auto", n_jobs=None):
    """Sizes of a data file from one fast parsing pass (or a cache's header).

    Parameters
    ----------
    path : str or path-like
        libsvm / libFM / libffm text (plain or gzip) or ``.cfmdata`` cache.
    format : {"auto", "libsvm", "libfm", "libffm", "cache"}
        "auto" detects a cache by its magic bytes, else libffm when the first
        feature token of the first data line has two colons, else libsvm.
    zero_based : bool or "auto"
        For libsvm, as in :func:`load_libsvm` (decides ``n_features``).

    Returns
    -------
    dict
        ``n_rows``, ``n_features`` (as :func:`load_libsvm` would give),
        ``nnz``, ``n_fields`` (max field id + 1; 0 for libsvm), ``format``,
        ``zero_based`` (resolved), ``min_index`` / ``max_index`` (raw file ids,
        -1 when empty) and ``label_values_sample`` (sorted distinct labels,
        at most 100 of them).
    """
    info, _ = _scan(path, format, zero_based, n_jobs)
    return info


def _scan(path, format, zero_based="auto", n_jobs=None, want_fields=False):
    fmt = _resolve_format(path, format)
    if fmt == "cache":
        c = _CacheFile(path)
        h = c.header
        y = c.array("y")
        labels = np.unique(y[: min(len(y), 1_000_000)])[:100]
        fields = c.array("fields") if h["has_fields"] else None
        return ({"n_rows": h["n_rows"], "n_features": h["n_features"], "nnz": h["nnz"],
                 "n_fields": int(fields.max()) + 1 if fields is not None and len(fields) else 0,
                 "format": "cache", "zero_based": True, "min_index": -1, "max_index": -1,
                 "label_values_sample": labels}, fields)
    zero_based = _check_zero_based(zero_based) if fmt == "libsvm" else True
    nt = effective_n_threads(n_jobs)
    n_rows = nnz = 0
    mn, mx, mf = None, -1, -1
    labels = np.zeros(0)
    fields = np.full(0, -1, dtype=np.int32)
    for r in _parse_stream(path, fmt, zero_ok=zero_based is not False,
                           strict_order=False, n_threads=nt):
        n_rows += len(r["labels"])
        k = len(r["indices"])
        nnz += k
        if k:
            mn = r["min_idx"] if mn is None else min(mn, r["min_idx"])
            mx = max(mx, r["max_idx"])
        mf = max(mf, r["max_field"])
        if len(labels) < 100:
            labels = np.union1d(labels, np.unique(r["labels"]))[:100]
        if want_fields:
            fields = _update_fields(fields, _Chunk(r))
    shift = fmt == "libsvm" and (zero_based is False or (
        zero_based == "auto" and nnz > 0 and mn > 0))
    n_features = (mx - shift + 1) if nnz else (1 if fmt == "libsvm" else 0)
    info = {"n_rows": n_rows, "n_features": int(n_features), "nnz": nnz,
            "n_fields": int(mf) + 1, "format": fmt, "zero_based": not shift,
            "min_index": -1 if mn is None else int(mn), "max_index": int(mx),
            "label_values_sample": labels}
    if want_fields:
        out = np.full(n_features, -1, dtype=np.int32)
        k = min(n_features, len(fields))
        out[:k] = fields[:k]
        fields = out
    return info, (fields if want_fields else None)


# --------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------

def _prepare_xy(X, y):
    if sp.issparse(X):
        X = sp.csr_matrix(X)
    else:
        arr = np.asarray(X)
        if arr.ndim != 2:
            raise ValueError(f"X must be 2-D, got shape {arr.shape}")
        X = sp.csr_matrix(arr)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    y = np.ascontiguousarray(np.asarray(y, dtype=np.float64).ravel())
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]} values")
    indices = X.indices
    if indices.dtype not in (np.int32, np.int64):
        indices = indices.astype(np.int64)
    return (X, np.ascontiguousarray(X.indptr, dtype=np.int64), np.ascontiguousarray(indices),
            np.ascontiguousarray(X.data), y)


def _write(path, X, y, fields, offset, n_jobs, block_rows=200_000):
    X, indptr, indices, data, y = _prepare_xy(X, y)
    nt = effective_n_threads(n_jobs)
    with_fields = fields is not None
    if fields is None:
        fields = np.zeros(0, dtype=np.int32)
    path = os.fspath(path)
    opener = (lambda p: gzip.open(p, "wb", compresslevel=6)) if path.endswith(".gz") else \
        (lambda p: open(p, "wb"))
    with opener(path) as f:
        for s in range(0, X.shape[0], block_rows):
            e = min(X.shape[0], s + block_rows)
            f.write(_parse.format_rows(indptr, indices, data, y, fields, with_fields, offset,
                                       s, e, nt))


def dump_libsvm(X, y, path, zero_based=True, n_jobs=None):
    """Write ``X, y`` as libsvm text ``label index:value ...``.

    Parameters
    ----------
    X : array-like or sparse matrix, shape (n_rows, n_features)
        Stored entries are written (dense input: the nonzeros), sorted by
        column; duplicate entries of a sparse matrix are summed first.
    y : array-like, shape (n_rows,)
    path : str or path-like
        A name ending in ``.gz`` is written gzip-compressed.
    zero_based : bool, default=True
        Write column j as ``j`` (True) or ``j + 1`` (False).

    Labels are written with ``'%.17g'``, values with ``'%.9g'`` (float32 X)
    or ``'%.17g'`` (float64, other dtypes are converted to float64), so that
    :func:`load_libsvm` reads back exactly the same numbers.
    """
    _write(path, X, y, None, 0 if zero_based else 1, n_jobs)


def dump_libffm(X, y, fields, path, n_jobs=None):
    """Write ``X, y`` as libffm text ``label field:feature:value ...``.

    ``fields[j]`` (length ``X.shape[1]``, integers) is the field of column j;
    every column with a stored entry needs a field >= 0.  Ids are zero-based;
    numbers are formatted as in :func:`dump_libsvm`.
    """
    fields = np.asarray(fields)
    n_cols = X.shape[1]
    if fields.ndim != 1 or fields.shape[0] != n_cols:
        raise ValueError(f"fields must have one entry per column ({n_cols}), got shape "
                         f"{fields.shape}")
    if fields.size and (fields.max() > _INT32_MAX):
        raise ValueError("field ids must fit in int32")
    fields = np.ascontiguousarray(fields, dtype=np.int32)
    Xc = sp.csr_matrix(X) if sp.issparse(X) else sp.csr_matrix(np.asarray(X))
    used = np.unique(Xc.indices)
    if used.size and (fields[used] < 0).any():
        bad = int(used[np.flatnonzero(fields[used] < 0)[0]])
        raise ValueError(f"column {bad} has stored values but no field (fields[{bad}] < 0)")
    _write(path, Xc, y, fields, 0, n_jobs)


# --------------------------------------------------------------------------
# Binary cache
# --------------------------------------------------------------------------

def _align(n):
    return -(-n // 64) * 64


class _CacheFile:
    """A validated, memory-mapped ``.cfmdata`` file."""

    _NAMES = ("indptr", "indices", "data", "y", "fields")

    def __init__(self, path):
        self.path = os.fspath(path)
        where = repr(self.path)
        size = os.path.getsize(self.path)
        with open(self.path, "rb") as f:
            prefix = f.read(_CACHE_PREFIX.size)
            if len(prefix) < _CACHE_PREFIX.size:
                if CACHE_MAGIC.startswith(prefix[:8]) and prefix:
                    raise DataFormatError(f"{where} is a truncated cfm data cache "
                                          f"({size} bytes)")
                raise DataFormatError(f"{where} is not a cfm data cache (too short)")
            magic, major, minor, hlen, hcrc = _CACHE_PREFIX.unpack(prefix)
            if magic != CACHE_MAGIC:
                raise DataFormatError(f"{where} is not a cfm data cache (bad magic bytes "
                                      f"{magic!r})")
            if major > CACHE_VERSION[0]:
                raise DataFormatError(
                    f"{where} uses cfm data cache format {major}.{minor}, newer than the "
                    f"{CACHE_VERSION[0]}.x this version of cfm reads; upgrade cfm or "
                    "rebuild the cache with convert_to_cache")
            if major < 1:
                raise DataFormatError(f"{where} has unknown cache format version "
                                      f"{major}.{minor}")
            if _CACHE_PREFIX.size + hlen > size:
                raise DataFormatError(f"{where} is truncated: its header needs {hlen} bytes "
                                      f"but the file has {size}")
            hbytes = f.read(hlen)
        if zlib.crc32(hbytes) != hcrc:
            raise DataFormatError(f"{where} is corrupted: header checksum mismatch")
        try:
            h = json.loads(hbytes.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataFormatError(f"{where} has an unreadable header: {exc}") from exc
        self.header = h = self._check_header(h, where, size, _CACHE_PREFIX.size + hlen)
        self._mm = np.memmap(self.path, dtype=np.uint8, mode="r") if size else None
        self.size = size

    @staticmethod
    def _check_header(h, where, size, data_start):
        def bad(msg):
            return DataFormatError(f"{where} has an invalid header: {msg}")

        if not isinstance(h, dict) or h.get("format") != "cfm-data":
            raise bad("not a cfm-data header")
        for k in ("n_rows", "n_features", "nnz", "file_size"):
            v = h.get(k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise bad(f"{k}={v!r}")
        if not isinstance(h.get("has_fields"), bool):
            raise bad("has_fields missing")
        if h["file_size"] != size:
            raise DataFormatError(f"{where} is truncated or padded: the header says "
                                  f"{h['file_size']} bytes, the file has {size}")
        n, m, nnz = h["n_rows"], h["n_features"], h["nnz"]
        expect = {"indptr": ((n + 1,), ("<i8",)), "indices": ((nnz,), ("<i4", "<i8")),
                  "data": ((nnz,), ("<f4", "<f8")), "y": ((n,), ("<f8",))}
        if h["has_fields"]:
            expect["fields"] = ((m,), ("<i4",))
        arrays = h.get("arrays")
        if not isinstance(arrays, list):
            raise bad("no array table")
        table = {}
        end = data_start
        for a in arrays:
            if not isinstance(a, dict) or a.get("name") not in expect or a["name"] in table:
                raise bad(f"unexpected array entry {a!r}")
            shape, dts = expect[a["name"]]
            if a.get("dtype") not in dts or a.get("shape") != list(shape):
                raise bad(f"array {a['name']}: dtype {a.get('dtype')!r} / shape "
                          f"{a.get('shape')!r}, expected {dts} / {list(shape)}")
            nbytes = int(np.prod(shape)) * np.dtype(a["dtype"]).itemsize
            off = a.get("offset")
            if (a.get("nbytes") != nbytes or isinstance(off, bool) or not isinstance(off, int)
                    or off % 64 or off < end):
                raise bad(f"array {a['name']}: bad offset / size")
            if off + nbytes > size:
                raise DataFormatError(f"{where} is truncated: array {a['name']} ends at "
                                      f"{off + nbytes} but the file has {size} bytes")
            end = off + nbytes
            table[a["name"]] = a
        if set(table) != set(expect):
            raise bad(f"missing arrays {sorted(set(expect) - set(table))}")
        h["_table"] = table
        return h

    def array(self, name):
        a = self.header["_table"][name]
        dt = np.dtype(a["dtype"])
        if a["nbytes"] == 0:
            return np.zeros(0, dtype=dt)
        return self._mm[a["offset"]:a["offset"] + a["nbytes"]].view(dt)

    def release(self, name, lo, hi):
        """madvise(DONTNEED) the whole pages inside elements [lo, hi) of an array."""
        mm = getattr(self._mm, "_mmap", None)
        if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        a = self.header["_table"][name]
        item = np.dtype(a["dtype"]).itemsize
        start = a["offset"] + lo * item
        end = a["offset"] + hi * item
        start = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
        end = end // mmap.PAGESIZE * mmap.PAGESIZE
        if end > start:
            try:
                mm.madvise(mmap.MADV_DONTNEED, start, end - start)
            except (OSError, ValueError):  # advisory only
                pass

    def verify_checksums(self):
        for name, a in self.header["_table"].items():
            arr = self.array(name)
            crc = 0
            step = 1 << 24
            raw = arr.view(np.uint8)
            for s in range(0, len(raw), step):
                crc = zlib.crc32(raw[s:s + step], crc)
            if crc != a.get("crc32"):
                raise DataFormatError(f"{self.path!r} is corrupted: checksum mismatch in "
                                      f"array {name!r}")


def _csr_around(data, indices, indptr, shape):
    """CSR matrix around existing arrays (no copy, no scipy content checks)."""
    X = sp.csr_matrix(shape, dtype=data.dtype)
    X.data, X.indices, X.indptr = data, indices, indptr
    X.has_sorted_indices = True
    X.has_canonical_format = True
    return X


def _check_block(c, r0, r1, indptr, indices):
    """Structural checks on rows [r0, r1) of a cache (row offsets, index range)."""
    where = repr(c.path)
    d = np.diff(indptr)
    if indptr[0] < 0 or indptr[-1] > c.header["nnz"] or (d.size and d.min() < 0):
        raise DataFormatError(f"{where} is corrupted: invalid row offsets in rows "
                              f"[{r0}, {r1})")
    if indices.size and (indices.min() < 0 or indices.max() >= c.header["n_features"]):
        raise DataFormatError(f"{where} is corrupted: column index out of range in rows "
                              f"[{r0}, {r1})")


def load_cache(path, check=True, verify_checksums=False):
    """Open a ``.cfmdata`` cache written by :func:`convert_to_cache`.

    The arrays are memory-mapped (read-only): nothing is parsed or copied,
    and pages are read from disk only when used.

    Parameters
    ----------
    path : str or path-like
    check : bool, default=True
        Check row offsets (O(n_rows)) and the column index range (one pass
        over the indices) so that scipy can safely use the matrix.  The
        header, sizes and offsets are always checked.
    verify_checksums : bool, default=False
        Also verify the CRC32 of every array (reads the whole file).

    Returns
    -------
    X : scipy.sparse.csr_matrix (memory-mapped data / indices / indptr)
        indptr is int64; indices int32 or int64 as stored.
    y : ndarray of float64
    fields : ndarray of int32 or None
        Present for caches made from libffm files.

    Raises
    ------
    cfm.DataFormatError
        Truncated, corrupted, foreign or newer-major-version files.
    """
    c = _CacheFile(path)
    h = c.header
    if verify_checksums:
        c.verify_checksums()
    indptr, indices = c.array("indptr"), c.array("indices")
    if indptr[0] != 0 or indptr[-1] != h["nnz"]:
        raise DataFormatError(f"{c.path!r} is corrupted: row offsets do not span the "
                              f"{h['nnz']} stored values")
    if check:
        _check_block(c, 0, h["n_rows"], indptr, indices)
    X = _csr_around(c.array("data"), indices, indptr, (h["n_rows"], h["n_features"]))
    return X, c.array("y"), (c.array("fields") if h["has_fields"] else None)


class _Section:
    """An array written to a temporary file in appended pieces."""

    def __init__(self, path, dtype):
        self.path = path
        self.dtype = np.dtype(dtype)
        self.f = open(path, "wb")
        self.n = 0

    def append(self, arr):
        arr = np.ascontiguousarray(arr, dtype=self.dtype)
        self.f.write(memoryview(arr).cast("B") if arr.nbytes else b"")
        self.n += len(arr)

    def widen(self, dtype):
        """Rewrite the section with a wider dtype (int32 -> int64)."""
        self.f.close()
        old = np.fromfile(self.path, dtype=self.dtype)
        self.dtype = np.dtype(dtype)
        self.f = open(self.path, "wb")
        self.n = 0
        self.append(old)

    def close(self):
        if not self.f.closed:
            self.f.close()


def convert_to_cache(src, dst=None, format="auto", n_features=None, dtype=np.float32,
                     zero_based="auto", n_jobs=None, allow_unsorted=False,
                     chunk_bytes=CHUNK_BYTES):
    """Convert a libsvm / libFM / libffm text file to a ``.cfmdata`` cache.

    The text is parsed in chunks of ``chunk_bytes`` and streamed to
    temporary section files next to ``dst``, which are then assembled: the
    whole file is never held in memory (peak ~ a few chunks), but the disk
    needs room for about twice the cache.

    Parameters
    ----------
    src : str or path-like
        Text file (plain or gzip).
    dst : str or path-like, optional
        Output path; default ``<src>.cfmdata``.
    format : {"auto", "libsvm", "libfm", "libffm"}
    n_features, dtype, zero_based, n_jobs, allow_unsorted
        As in :func:`load_libsvm` / :func:`load_libffm` (``zero_based`` is
        ignored for libffm).  ``dtype`` must be float32 or float64.

    Returns
    -------
    str
        The path of the cache.  :func:`load_cache` of it gives the same
        ``X, y`` (and ``fields``) as parsing ``src`` directly.
    """
    fmt = _resolve_format(src, format, allow_cache=False)
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"cache dtype must be float32 or float64, got {dtype}")
    n_features = _check_n(n_features, "n_features")
    zero_based = _check_zero_based(zero_based) if fmt == "libsvm" else True
    dst = os.fspath(dst) if dst is not None else os.fspath(src) + ".cfmdata"
    nt = effective_n_threads(n_jobs)
    f32 = dtype == np.float32
    strict = fmt == "libsvm" and not allow_unsorted
    tmp = f"{dst}.tmp{os.getpid()}"
    secs = {"indptr": _Section(tmp + ".indptr", np.int64),
            "indices": _Section(tmp + ".indices", np.int32),
            "data": _Section(tmp + ".data", dtype), "y": _Section(tmp + ".y", np.float64)}
    try:
        secs["indptr"].append(np.zeros(1, dtype=np.int64))
        fields = np.full(0, -1, dtype=np.int32)
        nnz = 0
        mn, mx = None, -1
        for r in _parse_stream(src, fmt, f32=f32, zero_ok=zero_based is not False,
                               strict_order=strict, max_index=_index_limit(n_features, zero_based),
                               n_threads=nt, chunk_bytes=chunk_bytes):
            ch = _Chunk(r)
            fields = _update_fields(fields, ch)
            indptr, indices, data = ch.indptr, ch.indices, ch.data
            if ch.unsorted:
                M = sp.csr_matrix((data, indices, indptr),
                                  shape=(len(ch.y), int(ch.max_idx) + 1))
                M.sum_duplicates()
                indptr, indices, data = M.indptr.astype(np.int64), M.indices, M.data
            if len(indices):
                mn = ch.min_idx if mn is None else min(mn, ch.min_idx)
                mx = max(mx, ch.max_idx)
            if indices.dtype == np.int64 and secs["indices"].dtype == np.int32:
                secs["indices"].widen(np.int64)
            secs["indptr"].append(indptr[1:] + nnz)
            secs["indices"].append(indices)
            secs["data"].append(data)
            secs["y"].append(ch.y)
            nnz += len(indices)
        for s in secs.values():
            s.close()
        shift = fmt == "libsvm" and (zero_based is False or (
            zero_based == "auto" and nnz > 0 and mn > 0))
        n_cols = (mx - shift + 1) if nnz else (1 if fmt == "libsvm" else 0)
        if n_features is not None:
            if n_cols > n_features:
                raise DataFormatError(f"{os.fspath(src)}: n_features={n_features} but the file "
                                      f"has {n_cols} features")
            n_cols = n_features
        n_rows = secs["y"].n
        idx_dt = np.int32 if n_cols - 1 <= _INT32_MAX else np.int64
        order = ["indptr", "indices", "data", "y"]
        extra = {}
        if fmt == "libffm":
            out = np.full(n_cols, -1, dtype=np.int32)
            k = min(n_cols, len(fields))
            out[:k] = fields[:k]
            extra["fields"] = out
            order.append("fields")
        specs = {"indptr": (np.int64, n_rows + 1), "indices": (idx_dt, nnz),
                 "data": (dtype, nnz), "y": (np.float64, n_rows), "fields": (np.int32, n_cols)}
        header = {"format": "cfm-data", "n_rows": n_rows, "n_features": int(n_cols),
                  "nnz": nnz, "has_fields": fmt == "libffm", "source_format": fmt,
                  "source": os.path.basename(os.fspath(src)), "file_size": 0, "arrays": []}

        def make_header(crcs, offsets, file_size):
            h = dict(header, file_size=file_size)
            h["arrays"] = [{"name": n, "dtype": np.dtype(specs[n][0]).newbyteorder("<").str,
                            "shape": [specs[n][1]], "offset": offsets[n],
                            "nbytes": specs[n][1] * np.dtype(specs[n][0]).itemsize,
                            "crc32": crcs[n]} for n in order]
            return json.dumps(h, sort_keys=True).encode("utf-8")

        # reserve the header with the widest possible numbers, then fix it up
        big = 10**19
        hlen = len(make_header({n: 2**32 - 1 for n in order}, {n: big for n in order}, big))
        data_start = _align(_CACHE_PREFIX.size + hlen)
        offsets, pos = {}, data_start
        for n in order:
            offsets[n] = pos
            pos = _align(pos + specs[n][1] * np.dtype(specs[n][0]).itemsize)
        file_size = pos
        crcs = {}
        with open(tmp, "wb") as f:
            for n in order:
                f.seek(offsets[n])
                crc = 0
                if n == "fields":
                    b = memoryview(extra["fields"]).cast("B") if n_cols else b""
                    f.write(b)
                    crc = zlib.crc32(b)
                else:
                    src_dt = secs[n].dtype
                    step = 1 << 22
                    with open(secs[n].path, "rb") as g:
                        while True:
                            a = np.fromfile(g, dtype=src_dt, count=step)
                            if not a.size:
                                break
                            if n == "indices":
                                a = a.astype(idx_dt, copy=False)
                                if shift:
                                    a -= 1
                            b = memoryview(np.ascontiguousarray(a)).cast("B")
                            f.write(b)
                            crc = zlib.crc32(b, crc)
                crcs[n] = crc
            f.truncate(file_size)
            hb = make_header(crcs, offsets, file_size)
            hb += b" " * (data_start - _CACHE_PREFIX.size - len(hb))
            f.seek(0)
            f.write(_CACHE_PREFIX.pack(CACHE_MAGIC, CACHE_VERSION[0], CACHE_VERSION[1], len(hb),
                                       zlib.crc32(hb)))
            f.write(hb)
        os.replace(tmp, dst)
        return dst
    finally:
        for s in secs.values():
            s.close()
            if os.path.exists(s.path):
                os.remove(s.path)
        if os.path.exists(tmp):
            os.remove(tmp)


# --------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------

def iter_blocks(path, block_rows=100_000, n_features=None, format="auto", dtype=np.float32,
                zero_based="auto", n_jobs=None, allow_unsorted=False, chunk_bytes=16 << 20):
    """Iterate over a data file in blocks of rows, with bounded memory.

    Parameters
    ----------
    path : str or path-like
        libsvm / libFM / libffm text (plain or gzip) or a ``.cfmdata`` cache
        (then blocks are slices of the memory map: no parsing, no copy of
        data / indices).
    block_rows : int, default=100_000
        Rows per block (the last block may be shorter).
    n_features : int, optional
        Column count of every block.  Text files: every block must have the
        same width, so when ``n_features`` is None (or ``zero_based="auto"``
        for libsvm, or for any libffm file, whose ``fields`` are the first
        field of each feature over the whole file) a first fast pass over
        the file (:func:`scan_file`) sizes the data before streaming.  Pass
        ``n_features`` and ``zero_based=True``/``False`` to stream libsvm in
        a single pass.  Caches: must equal the stored width if given.
    format, dtype, zero_based, n_jobs, allow_unsorted
        As in :func:`load_libsvm` / :func:`load_libffm`.
    chunk_bytes : int
        Text read size; memory is about that plus one block.

    Yields
    ------
    X_block : scipy.sparse.csr_matrix, shape (<= block_rows, n_features)
    y_block : ndarray of float64
    fields : ndarray of int32 or None
        The whole file's field array (libffm / libffm caches), else None.

    Concatenating the blocks (``scipy.sparse.vstack``) gives exactly what
    :func:`load_libsvm` / :func:`load_libffm` / :func:`load_cache` return.
    """
    block_rows = _check_n(block_rows, "block_rows")
    if block_rows is None:
        raise ValueError("block_rows must be a positive integer")
    n_features = _check_n(n_features, "n_features")
    fmt = _resolve_format(path, format)
    if fmt == "cache":
        return _iter_cache(path, block_rows, n_features)
    return _iter_text(path, fmt, block_rows, n_features, dtype, zero_based, n_jobs,
                      allow_unsorted, chunk_bytes)


def _iter_cache(path, block_rows, n_features):
    c = _CacheFile(path)
    h = c.header
    if n_features is not None and n_features != h["n_features"]:
        raise ValueError(f"n_features={n_features} but the cache has {h['n_features']}")
    indptr, indices, data, y = (c.array(n) for n in ("indptr", "indices", "data", "y"))
    fields = c.array("fields") if h["has_fields"] else None
    if indptr[0] != 0 or indptr[-1] != h["nnz"]:
        raise DataFormatError(f"{c.path!r} is corrupted: row offsets do not span the "
                              f"{h['nnz']} stored values")
    for r0 in range(0, h["n_rows"], block_rows):
        r1 = min(h["n_rows"], r0 + block_rows)
        ip = indptr[r0:r1 + 1]
        a, b = int(ip[0]), int(ip[-1])
        if a < 0 or b > h["nnz"] or a > b:
            raise DataFormatError(f"{c.path!r} is corrupted: invalid row offsets in rows "
                                  f"[{r0}, {r1})")
        ind = indices[a:b]
        _check_block(c, r0, r1, ip, ind)
        X = _csr_around(data[a:b], ind, ip - a, (r1 - r0, h["n_features"]))
        yield X, y[r0:r1], fields
        # The consumer is done with this block: drop its pages from this
        # process's mapping, so that resident memory stays about one block
        # rather than growing to the whole file (they are re-read from the
        # page cache or disk if touched again).
        c.release("indices", a, b)
        c.release("data", a, b)
        c.release("indptr", r0, r1)
        c.release("y", r0, r1)


def _iter_text(path, fmt, block_rows, n_features, dtype, zero_based, n_jobs, allow_unsorted,
               chunk_bytes):
    dtype = _check_dtype(dtype)
    zero_based = _check_zero_based(zero_based) if fmt == "libsvm" else True
    nt = effective_n_threads(n_jobs)
    fields = None
    if n_features is None or fmt == "libffm" or zero_based == "auto":
        info, fields = _scan(path, fmt, zero_based, n_jobs, want_fields=fmt == "libffm")
        if n_features is None:
            n_features = info["n_features"]
        elif info["n_features"] > n_features:
            raise DataFormatError(f"{os.fspath(path)}: n_features={n_features} but the file "
                                  f"has {info['n_features']} features")
        if fmt == "libffm" and len(fields) != n_features:
            out = np.full(n_features, -1, dtype=np.int32)
            k = min(n_features, len(fields))
            out[:k] = fields[:k]
            fields = out
        if fmt == "libsvm":
            zero_based = info["zero_based"]
    shift = fmt == "libsvm" and zero_based is False
    f32 = dtype == np.float32
    strict = fmt == "libsvm" and not allow_unsorted
    idx = _idx_dtype(block_rows, n_features, 0)
    pend_X, pend_y, pend_n = [], [], 0

    def emit(parts_X, parts_y):
        X = parts_X[0] if len(parts_X) == 1 else sp.vstack(parts_X, format="csr")
        if X.indices.dtype != idx and X.nnz <= _INT32_MAX:
            X.indices = X.indices.astype(idx)
            X.indptr = X.indptr.astype(idx)
        X.has_sorted_indices = True
        y = parts_y[0] if len(parts_y) == 1 else np.concatenate(parts_y)
        return X, y, fields

    for r in _parse_stream(path, fmt, f32=f32, zero_ok=zero_based is not False,
                           strict_order=strict,
                           max_index=_index_limit(n_features, True if not shift else False),
                           n_threads=nt, chunk_bytes=chunk_bytes):
        ch = _Chunk(r)
        indices = ch.indices
        if shift:
            indices = indices - 1
        data = ch.data if ch.data.dtype == dtype else ch.data.astype(dtype)
        Xc = _build_csr(data, indices, ch.indptr, (len(ch.y), n_features),
                        canonical=not ch.unsorted)
        yc = ch.y
        start = 0
        while start < len(yc):
            take = min(block_rows - pend_n, len(yc) - start)
            pend_X.append(Xc[start:start + take] if (start or take < len(yc)) else Xc)
            pend_y.append(yc[start:start + take])
            pend_n += take
            start += take
            if pend_n == block_rows:
                yield emit(pend_X, pend_y)
                pend_X, pend_y, pend_n = [], [], 0
    if pend_n:
        yield emit(pend_X, pend_y)
