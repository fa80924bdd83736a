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
major versions.  Minor version 1 adds ``zero_based`` to the header (how the
libsvm ids of the source were read; caches without it count as zero-based).

Limits (what a data file can make cfm allocate is bounded by them; input
beyond them raises :class:`cfm.DataFormatError` naming file and line):

* a line is at most :data:`MAX_LINE_BYTES` (64 MiB) long;
* libffm field and feature ids are at most :data:`MAX_ID_32` (2**31 - 2):
  ids are 32-bit, as in libffm and xLearn, and their counts fit in int32;
* libsvm / libFM ids are at most 2**63 - 2 (the column count fits in
  int64); a model trained on a file has one parameter row per id up to the
  largest, and a model that would not fit in this machine's memory is
  refused before anything is allocated, naming the line of the id.

Every read of a file is checked: a truncated or corrupted gzip stream and a
cache whose checksums or structure do not match raise DataFormatError too.
"""
import contextlib
import gzip
import json
import mmap
import os
import shutil
import stat
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ._lazy import sparse as sp
from . import _parse
from ._files import atomic_output, same_file, scratch_dir, scratch_file
from ._validation import effective_n_threads, memory_limit
from .exceptions import DataFormatError

__all__ = ["load_libsvm", "load_libfm", "load_libffm", "dump_libsvm", "dump_libffm",
           "convert_to_cache", "load_cache", "iter_blocks", "scan_file"]

CHUNK_BYTES = 64 << 20
#: Longest line the text readers accept (bytes): a longer one -- or a file or
#: stream without newlines, such as /dev/zero -- raises DataFormatError
#: instead of being buffered until memory runs out.
MAX_LINE_BYTES = 64 << 20
#: Largest libffm field / feature id (ids are 32-bit, as in libffm / xLearn).
MAX_ID_32 = int(_parse.MAX_ID_32)
# Largest libsvm id: the column count (id + 1) must fit in int64.
_MAX_ID_64 = 2**63 - 2
CACHE_MAGIC = b"\x89CFMDAT\n"
CACHE_VERSION = (1, 1)
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
    _parse.ERR_LABEL_NONFINITE: "non-finite label: nan or inf",
}
_GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


def _ParseError(msg, line, code, value):
    """DataFormatError at a line, with what was wrong as attributes (for
    callers that rephrase it, e.g. a model-size check locating an id)."""
    exc = DataFormatError(msg)
    exc.line, exc.code, exc.value = line, code, value
    return exc


class _LineTooLong(DataFormatError):
    """Raised by the chunk readers; callers that count lines add the line."""


def _too_long():
    """Why a line is refused (for messages)."""
    return (f"line longer than {MAX_LINE_BYTES:,} bytes (cfm.data.MAX_LINE_BYTES); is this a "
            "text data file?")


def _gzip_error(name, exc):
    return DataFormatError(f"{name}: corrupted or truncated gzip data "
                           f"({exc or type(exc).__name__})")


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
    the caller works on the current one.  A line longer than MAX_LINE_BYTES
    raises _LineTooLong; corrupted gzip data raises DataFormatError.
    """
    name = os.fspath(path)
    fh, raw = _open_binary(path)
    if fh is raw:
        try:
            st = os.fstat(raw.fileno())
            # only a regular file's size is known: /dev/zero says 0
            small = stat.S_ISREG(st.st_mode) and st.st_size < chunk_bytes
        except (OSError, AttributeError):
            small = False
        if small:  # no read-ahead thread for small files
            try:
                buf = raw.read(chunk_bytes + 1)
            finally:
                raw.close()
            if len(buf) <= chunk_bytes:  # else it grew meanwhile: read it in chunks
                if buf:
                    yield buf
                return
            fh, raw = _open_binary(path)
    state = {"rest": b"", "eof": False}

    def read_next():
        rest = state["rest"]
        while True:
            if state["eof"]:
                state["rest"] = b""
                return bytes(rest) if rest else None
            if len(rest) > MAX_LINE_BYTES:
                raise _LineTooLong(f"{name}: {_too_long()}")
            buf = bytearray(len(rest) + chunk_bytes)
            buf[:len(rest)] = rest
            mv = memoryview(buf)
            n = len(rest)
            try:
                while n < len(buf):
                    k = fh.readinto(mv[n:])
                    if not k:
                        state["eof"] = True
                        break
                    n += k
            except _GZIP_ERRORS as exc:
                raise _gzip_error(name, exc) from None
            finally:
                del mv
            if n < len(buf):
                del buf[n:]
            cut = buf.rfind(b"\n") + 1
            if cut == 0:  # no complete line yet: keep reading
                rest = buf
                continue
            if rest and buf.find(b"\n", len(rest)) > MAX_LINE_BYTES:
                raise _LineTooLong(f"{name}: {_too_long()}")
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
        try:
            buf = next(it)
        except StopIteration:
            return
        except _LineTooLong:
            raise _ParseError(f"{name}:{lines + 1}: {_too_long()}", lines + 1, None,
                              None) from None
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


def _line_prefixes(fh, max_lines=10_000, head=1 << 16, budget=16 << 20):
    """The first ``head`` bytes of each of the first lines of a binary file
    object, reading at most about ``budget`` bytes (a file without newlines
    is not read to its end)."""
    used = 0
    for _ in range(max_lines):
        line = fh.readline(head)
        if not line:
            return
        used += len(line)
        yield line
        while not line.endswith(b"\n"):  # skip the rest of a long line
            if used > budget:
                return
            line = fh.readline(head)
            if not line:
                return
            used += len(line)
        if used > budget:
            return


def _detect_format(path):
    """'cache', 'libffm' or 'libsvm' from the magic bytes / first data line."""
    if _is_cache(path):
        return "cache"
    fh, raw = _open_binary(path)
    try:
        for line in _line_prefixes(fh):
            line = line.split(b"#", 1)[0].split()
            feats = [t for t in line[1:] if not t.startswith(b"qid")]
            if feats:
                return "libffm" if feats[0].count(b":") >= 2 else "libsvm"
    except _GZIP_ERRORS as exc:
        raise _gzip_error(os.fspath(path), exc) from None
    finally:
        fh.close()
        raw.close()
    return "libsvm"


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
               allow_nonfinite=True):
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
    del chunks
    if data.dtype != dtype:
        data = data.astype(dtype)
    X = _build_csr(data, indices, indptr, (n_rows, n_cols), canonical=not unsorted)
    if fmt == "libffm":
        return X, y, _fields_out(fields, n_cols)
    return X, y


# --------------------------------------------------------------------------
# Public text readers
# --------------------------------------------------------------------------

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
                allow_nonfinite=True):
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
    return _load_text(path, "libffm", n_features, dtype, True, n_jobs, True, n_fields,
                      allow_nonfinite)


def scan_file(path, format="auto", zero_based="auto", n_jobs=None, allow_nonfinite=True):
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
    allow_nonfinite : bool, default=True
        False: a nan / inf label or value of a text file raises
        DataFormatError naming file and line (what training from a file
        checks first).

    Returns
    -------
    dict
        ``n_rows``, ``n_features`` (as :func:`load_libsvm` would give),
        ``nnz``, ``n_fields`` (max field id + 1; 0 for libsvm), ``format``,
        ``zero_based`` (resolved; for a cache, how its source's ids were
        read), ``min_index`` / ``max_index`` (raw file ids, -1 when empty) and
        ``label_values_sample`` (sorted distinct labels, at most 100 of them).
    """
    info, _ = _scan(path, format, zero_based, n_jobs, finite=not allow_nonfinite)
    return info


def _scan(path, format, zero_based="auto", n_jobs=None, want_fields=False, finite=False):
    fmt = _resolve_format(path, format)
    if fmt == "cache":
        c = _CacheFile(path)
        h = c.header
        y = c.array("y")
        labels = np.unique(y[: min(len(y), 1_000_000)])[:100]
        fields = c.fields()
        return ({"n_rows": h["n_rows"], "n_features": h["n_features"], "nnz": h["nnz"],
                 "n_fields": int(fields.max()) + 1 if fields is not None and len(fields) else 0,
                 "format": "cache", "zero_based": h["zero_based"], "min_index": -1,
                 "max_index": -1, "label_values_sample": labels}, fields)
    zero_based = _check_zero_based(zero_based) if fmt == "libsvm" else True
    nt = effective_n_threads(n_jobs)
    n_rows = nnz = 0
    mn, mx, mf = None, -1, -1
    labels = np.zeros(0)
    fields = np.full(0, -1, dtype=np.int32)
    for r in _parse_stream(path, fmt, zero_ok=zero_based is not False,
                           strict_order=False, n_threads=nt, finite=finite):
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
            fields = _update_fields(fields, _Chunk(r), path)
    shift = fmt == "libsvm" and (zero_based is False or (
        zero_based == "auto" and nnz > 0 and mn > 0))
    n_features = (mx - shift + 1) if nnz else (1 if fmt == "libsvm" else 0)
    info = {"n_rows": n_rows, "n_features": int(n_features), "nnz": nnz,
            "n_fields": int(mf) + 1, "format": fmt, "zero_based": not shift,
            "min_index": -1 if mn is None else int(mn), "max_index": int(mx),
            "label_values_sample": labels}
    if want_fields:
        fields = _fields_out(fields, n_features)
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


# Caches whose checksums were verified in this process, keyed by what would
# change if the file did (see _CacheFile.identity): training streams a cache
# once per epoch, and only the first pass needs to compute them.
_VERIFIED = {}
_VERIFIED_MAX = 64
# Largest count (rows, columns, values) a cache header may declare.
_MAX_COUNT = 2**62


class _CacheFile:
    """A validated, memory-mapped ``.cfmdata`` file."""

    _NAMES = ("indptr", "indices", "data", "y", "fields")

    def __init__(self, path):
        self.path = os.fspath(path)
        where = repr(self.path)
        with open(self.path, "rb") as f:
            st = os.fstat(f.fileno())
            size = st.st_size
            if not stat.S_ISREG(st.st_mode):
                raise DataFormatError(f"{where} is not a cfm data cache (not a regular file)")
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
        if len(hbytes) != hlen:
            raise DataFormatError(f"{where} is truncated: its header needs {hlen} bytes")
        if zlib.crc32(hbytes) != hcrc:
            raise DataFormatError(f"{where} is corrupted: header checksum mismatch")
        try:
            h = json.loads(hbytes.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise DataFormatError(f"{where} has an unreadable header: "
                                  f"{type(exc).__name__}: {exc}") from None
        self.header = h = self._check_header(h, where, size, _CACHE_PREFIX.size + hlen)
        self.identity = (os.path.realpath(self.path), st.st_dev, st.st_ino, size,
                         st.st_mtime_ns, hcrc)
        self._mm = np.memmap(self.path, dtype=np.uint8, mode="r") if size else None
        self.size = size

    @staticmethod
    def _check_header(h, where, size, data_start):
        def bad(msg):
            return DataFormatError(f"{where} has an invalid header: {msg}")

        def count(v):
            return not isinstance(v, bool) and isinstance(v, int) and 0 <= v <= _MAX_COUNT

        if not isinstance(h, dict) or h.get("format") != "cfm-data":
            raise bad("not a cfm-data header")
        for k in ("n_rows", "n_features", "nnz", "file_size"):
            if not count(h.get(k)):
                raise bad(f"{k}={h.get(k)!r}")
        if not isinstance(h.get("has_fields"), bool):
            raise bad("has_fields missing")
        zb = h.get("zero_based", True)  # format 1.0 did not record it
        if not isinstance(zb, bool):
            raise bad(f"zero_based={zb!r}")
        h["zero_based"] = zb
        if h["file_size"] != size:
            raise DataFormatError(f"{where} is truncated or padded: the header says "
                                  f"{h['file_size']} bytes, the file has {size}")
        n, m, nnz = h["n_rows"], h["n_features"], h["nnz"]
        if m > _MAX_ID_64 + 1 or (h["has_fields"] and m > MAX_ID_32 + 1):
            raise bad(f"n_features={m}")
        expect = {"indptr": ((n + 1,), ("<i8",)), "indices": ((nnz,), ("<i4", "<i8")),
                  "data": ((nnz,), ("<f4", "<f8")), "y": ((n,), ("<f8",))}
        if h["has_fields"]:
            expect["fields"] = ((m,), ("<i4",))
        arrays = h.get("arrays")
        if not isinstance(arrays, list):
            raise bad("no array table")
        table = {}
        end = data_start
        gaps = []
        for a in arrays:
            if not isinstance(a, dict) or not isinstance(a.get("name"), str) or \
                    a["name"] not in expect or a["name"] in table:
                raise bad(f"unexpected array entry {str(a)[:200]}")
            shape, dts = expect[a["name"]]
            if a.get("dtype") not in dts or a.get("shape") != list(shape):
                raise bad(f"array {a['name']}: dtype {str(a.get('dtype'))[:40]!r} / shape "
                          f"{str(a.get('shape'))[:80]}, expected {dts} / {list(shape)}")
            nbytes = shape[0] * np.dtype(a["dtype"]).itemsize
            off = a.get("offset")
            if (a.get("nbytes") != nbytes or isinstance(off, bool) or not isinstance(off, int)
                    or off % 64 or off < end or not count(a.get("crc32"))
                    or a["crc32"] > 0xFFFFFFFF):
                raise bad(f"array {a['name']}: bad offset / size / checksum entry")
            if off + nbytes > size:
                raise DataFormatError(f"{where} is truncated: array {a['name']} ends at "
                                      f"{off + nbytes} but the file has {size} bytes")
            gaps.append((end, off))
            end = off + nbytes
            table[a["name"]] = a
        if set(table) != set(expect):
            raise bad(f"missing arrays {sorted(set(expect) - set(table))}")
        gaps.append((end, size))
        h["_table"] = table
        h["_gaps"] = [(g0, g1) for g0, g1 in gaps if g1 > g0]
        return h

    def array(self, name):
        a = self.header["_table"][name]
        dt = np.dtype(a["dtype"])
        if a["nbytes"] == 0:
            return np.zeros(0, dtype=dt)
        return self._mm[a["offset"]:a["offset"] + a["nbytes"]].view(dt)

    def fields(self):
        """The field array (libffm caches; None otherwise), its values checked."""
        if not self.header["has_fields"]:
            return None
        f = self.array("fields")
        if len(f) and (f.min() < -1 or f.max() > MAX_ID_32):
            raise DataFormatError(f"{self.path!r} is corrupted: field ids out of range")
        return f

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

    @property
    def verified(self):
        return _VERIFIED.get(self.identity, False)

    def _mark_verified(self):
        if len(_VERIFIED) >= _VERIFIED_MAX:
            _VERIFIED.pop(next(iter(_VERIFIED)))
        _VERIFIED[self.identity] = True

    def _check_gaps(self):
        """The bytes between and after the arrays are zero (the writer's padding)."""
        for g0, g1 in self.header["_gaps"]:
            if np.any(self._mm[g0:g1]):
                raise DataFormatError(f"{self.path!r} is corrupted: non-zero padding at bytes "
                                      f"[{g0}, {g1})")

    def _mismatch(self, name):
        return DataFormatError(f"{self.path!r} is corrupted: checksum mismatch in array "
                               f"{name!r}")

    def verify_checksums(self):
        """CRC32 of every array and zero padding (reads the whole file; two
        threads: zlib computes checksums without the GIL)."""
        if self.verified:
            return

        def crc_of(name):
            raw = self.array(name).view(np.uint8)
            crc = 0
            step = 1 << 24
            for s in range(0, len(raw), step):
                crc = zlib.crc32(raw[s:s + step], crc)
            return name, crc

        names = list(self.header["_table"])
        with ThreadPoolExecutor(max_workers=2) as ex:
            results = list(ex.map(crc_of, names))
        for name, crc in results:
            if crc != self.header["_table"][name]["crc32"]:
                raise self._mismatch(name)
        self._check_gaps()
        self._mark_verified()

    def tracker(self):
        """A _CrcTracker checking the arrays as they are streamed in order
        (None when this file was verified already)."""
        return None if self.verified else _CrcTracker(self)


class _CrcTracker:
    """Checksums of a cache's arrays accumulated over consecutive slices."""

    def __init__(self, c):
        self.c = c
        self.crc = {n: 0 for n in c.header["_table"]}
        self.seen = {n: 0 for n in c.header["_table"]}

    def update(self, name, arr):
        b = np.ascontiguousarray(arr).view(np.uint8)
        if b.size:
            self.crc[name] = zlib.crc32(b, self.crc[name])
            self.seen[name] += b.size

    def finish(self):
        for name, a in self.c.header["_table"].items():
            if self.seen[name] != a["nbytes"]:  # pragma: no cover - a caller's bug
                raise RuntimeError(f"checksum of {name!r} over {self.seen[name]} of "
                                   f"{a['nbytes']} bytes")
            if self.crc[name] != a["crc32"]:
                raise self.c._mismatch(name)
        self.c._check_gaps()
        self.c._mark_verified()


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


def load_cache(path, check=True, verify_checksums=True):
    """Open a ``.cfmdata`` cache written by :func:`convert_to_cache`.

    The arrays are memory-mapped (read-only): nothing is parsed or copied.

    Parameters
    ----------
    path : str or path-like
    check : bool, default=True
        Check row offsets (O(n_rows)) and the column index range (one pass
        over the indices) so that scipy can safely use the matrix.  The
        header, sizes and offsets are always checked (and cfm's estimators
        validate any matrix they are given).
    verify_checksums : bool, default=True
        Also verify the CRC32 of every array and that the padding between
        them is zero (reads the whole file once per process: a file already
        verified and unchanged since is not read again).  False skips it.

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
    indptr, indices = c.array("indptr"), c.array("indices")
    if indptr[0] != 0 or indptr[-1] != h["nnz"]:
        raise DataFormatError(f"{c.path!r} is corrupted: row offsets do not span the "
                              f"{h['nnz']} stored values")
    if check:
        _check_block(c, 0, h["n_rows"], indptr, indices)
    fields = c.fields()
    if verify_checksums:
        c.verify_checksums()
    X = _csr_around(c.array("data"), indices, indptr, (h["n_rows"], h["n_features"]))
    return X, c.array("y"), fields


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
    n_features = _check_features_arg(n_features, fmt)
    zero_based = _check_zero_based(zero_based) if fmt == "libsvm" else True
    dst = os.fspath(dst) if dst is not None else os.fspath(src) + ".cfmdata"
    nt = effective_n_threads(n_jobs)
    f32 = dtype == np.float32
    strict = fmt == "libsvm" and not allow_unsorted
    if same_file(src, dst):
        raise ValueError(f"cannot write the cache {dst!r} over its source file "
                         f"{os.fspath(src)!r}")
    with contextlib.ExitStack() as stack:
        # the target is checked (and its temporary file made) before parsing;
        # the sections go to unique scratch files next to it
        out = stack.enter_context(atomic_output(dst))
        scratch, base = scratch_dir(dst), os.path.basename(dst)
        secs = {n: _Section(stack.enter_context(scratch_file(scratch, f"{base}.{n}")), dt)
                for n, dt in (("indptr", np.int64), ("indices", np.int32), ("data", dtype),
                              ("y", np.float64))}
        stack.callback(lambda: [s.close() for s in secs.values()])
        secs["indptr"].append(np.zeros(1, dtype=np.int64))
        fields = np.full(0, -1, dtype=np.int32)
        nnz = 0
        mn, mx = None, -1
        for r in _parse_stream(src, fmt, f32=f32, zero_ok=zero_based is not False,
                               strict_order=strict, max_index=_index_limit(n_features, zero_based),
                               n_threads=nt, chunk_bytes=chunk_bytes, n_features=n_features):
            ch = _Chunk(r)
            fields = _update_fields(fields, ch, src)
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
            extra["fields"] = np.ascontiguousarray(_fields_out(fields, n_cols))
            order.append("fields")
        specs = {"indptr": (np.int64, n_rows + 1), "indices": (idx_dt, nnz),
                 "data": (dtype, nnz), "y": (np.float64, n_rows), "fields": (np.int32, n_cols)}
        header = {"format": "cfm-data", "n_rows": n_rows, "n_features": int(n_cols),
                  "nnz": nnz, "has_fields": fmt == "libffm", "source_format": fmt,
                  "zero_based": not shift,
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
        with _assembled(out, scratch, base) as f:
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
        return dst


@contextlib.contextmanager
def _assembled(out, scratch, base):
    """The file a cache is assembled in: ``out`` itself when it is a regular
    file (the assembly seeks and truncates), else (``/dev/null``, a FIFO) a
    scratch file copied into ``out`` at the end."""
    if stat.S_ISREG(os.fstat(out.fileno()).st_mode):
        yield out
        return
    with scratch_file(scratch, f"{base}.all") as path, open(path, "w+b") as f:
        yield f
        f.seek(0)
        shutil.copyfileobj(f, out, 1 << 20)


# --------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------

def iter_blocks(path, block_rows=100_000, n_features=None, format="auto", dtype=np.float32,
                zero_based="auto", n_jobs=None, allow_unsorted=False, chunk_bytes=16 << 20,
                allow_nonfinite=True, verify_checksums=True):
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
    allow_nonfinite : bool, default=True
        False: a nan / inf label or value raises DataFormatError naming the
        file and line (text) or row (cache) before its block is yielded.
    verify_checksums : bool, default=True
        Caches: compute the CRC32 of the arrays as the blocks are read and
        compare them at the end (a mismatch raises DataFormatError after the
        last block; once a file has been verified in this process, it is not
        checked again while unchanged).  The structure of every block (row
        offsets, column range) is checked before it is yielded either way.

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
        return _iter_cache(path, block_rows, n_features, allow_nonfinite, verify_checksums)
    n_features = _check_features_arg(n_features, fmt)
    return _iter_text(path, fmt, block_rows, n_features, dtype, zero_based, n_jobs,
                      allow_unsorted, chunk_bytes, allow_nonfinite)


def _first_nonfinite(c, r0, ip, data, y):
    """DataFormatError for the first nan / inf of a cache block, or None."""
    bad_y = np.flatnonzero(~np.isfinite(y))
    bad_x = np.flatnonzero(~np.isfinite(data))
    rows = []
    if bad_y.size:
        rows.append((int(bad_y[0]), "label", float(y[bad_y[0]])))
    if bad_x.size:
        k = int(bad_x[0])
        rows.append((int(np.searchsorted(ip, ip[0] + k, side="right")) - 1, "value",
                     float(data[k])))
    if not rows:
        return None
    row, what, v = min(rows)
    return DataFormatError(f"{c.path!r}: row {r0 + row} (0-based): non-finite {what} {v!r}")


def _iter_cache(path, block_rows, n_features, allow_nonfinite=True, verify_checksums=True):
    c = _CacheFile(path)
    h = c.header
    if n_features is not None and n_features != h["n_features"]:
        raise ValueError(f"n_features={n_features} but the cache has {h['n_features']}")
    indptr, indices, data, y = (c.array(n) for n in ("indptr", "indices", "data", "y"))
    fields = c.fields()
    if indptr[0] != 0 or indptr[-1] != h["nnz"]:
        raise DataFormatError(f"{c.path!r} is corrupted: row offsets do not span the "
                              f"{h['nnz']} stored values")
    crc = c.tracker() if verify_checksums else None
    if crc is not None and fields is not None:
        crc.update("fields", fields)
    for r0 in range(0, h["n_rows"], block_rows):
        r1 = min(h["n_rows"], r0 + block_rows)
        ip = indptr[r0:r1 + 1]
        a, b = int(ip[0]), int(ip[-1])
        if a < 0 or b > h["nnz"] or a > b:
            raise DataFormatError(f"{c.path!r} is corrupted: invalid row offsets in rows "
                                  f"[{r0}, {r1})")
        ind = indices[a:b]
        _check_block(c, r0, r1, ip, ind)
        if crc is not None:  # pages read now are the ones the consumer uses next
            crc.update("indptr", indptr[r0:r1])
            crc.update("indices", ind)
            crc.update("data", data[a:b])
            crc.update("y", y[r0:r1])
        if not allow_nonfinite:
            err = _first_nonfinite(c, r0, ip, data[a:b], y[r0:r1])
            if err is not None:
                raise err
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
    if crc is not None:
        crc.update("indptr", indptr[h["n_rows"]:])
        crc.finish()


def _iter_text(path, fmt, block_rows, n_features, dtype, zero_based, n_jobs, allow_unsorted,
               chunk_bytes, allow_nonfinite=True):
    dtype = _check_dtype(dtype)
    zero_based = _check_zero_based(zero_based) if fmt == "libsvm" else True
    nt = effective_n_threads(n_jobs)
    fields = None
    if n_features is None or fmt == "libffm" or zero_based == "auto":
        info, fields = _scan(path, fmt, zero_based, n_jobs, want_fields=fmt == "libffm",
                             finite=not allow_nonfinite)
        if n_features is None:
            n_features = info["n_features"]
        elif info["n_features"] > n_features:
            raise DataFormatError(f"{os.fspath(path)}: n_features={n_features} but the file "
                                  f"has {info['n_features']} features")
        if fmt == "libffm" and len(fields) != n_features:
            fields = _fields_out(fields, n_features)
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
                           n_threads=nt, chunk_bytes=chunk_bytes, finite=not allow_nonfinite,
                           n_features=n_features):
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
