"""Block sources of :mod:`cfm.data`: a data file (text or ``.cfmdata``
cache; for scoring also a binary stream) read as consecutive blocks of rows
in bounded memory -- :func:`iter_blocks` for training and out-of-core use,
:func:`score_blocks` for batch scoring (cfm.scoring), which sizes blocks to a
model (feature ids beyond it dropped and counted) and parses plain lines
with the fast path (``cfm._fastparse``).  Also :func:`scan_file`, the first
pass that sizes a file.
"""
import os

import numpy as np

from .._lazy import sparse as sp
from .. import _fastparse
from .._fields import EntryFields
from .._validation import effective_n_threads
from ..exceptions import DataFormatError
from ._source import (CACHE_MAGIC, _check_format, _fileobj_chunks, _is_fileobj, _name,
                      _read_chunks, _resolve_format, _sniff_format)
from .cache import _CacheFile, _check_block, _csr_around, _first_nonfinite
from .text import (_INT32_MAX, _Chunk, _build_csr, _check_dtype, _check_features_arg, _check_n,
                   _check_zero_based, _fields_out, _idx_dtype, _index_limit, _next_chunk,
                   _parse_stream,
                   _update_fields)


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
        nf = int(fields.max()) + 1 if fields is not None and len(fields) else 0
        ef = c.entry_fields()
        if ef is not None and len(ef):  # per-entry fields may name more fields
            nf = max(nf, int(ef.max()) + 1)
        return ({"n_rows": h["n_rows"], "n_features": h["n_features"], "nnz": h["nnz"],
                 "n_fields": nf, "format": "cache", "zero_based": h["zero_based"],
                 "min_index": -1, "max_index": -1, "label_values_sample": labels,
                 "has_entry_fields": h["has_entry_fields"]}, fields)
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
# Streaming
# --------------------------------------------------------------------------

def iter_blocks(path, block_rows=100_000, n_features=None, format="auto", dtype=np.float32,
                zero_based="auto", n_jobs=None, allow_unsorted=False, chunk_bytes=16 << 20,
                allow_nonfinite=True, verify_checksums=True, entry_fields=False):
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
    entry_fields : bool, default=False
        libffm files and caches made with ``entry_fields=True``: yield the
        field of each stored entry of the block (a :class:`cfm.EntryFields`),
        the entries kept as the file wrote them, as ``load_libffm(path,
        entry_fields=True)`` reads them.

    Yields
    ------
    X_block : scipy.sparse.csr_matrix, shape (<= block_rows, n_features)
    y_block : ndarray of float64
    fields : ndarray of int32 or None
        The whole file's field array (libffm / libffm caches), else None;
        with ``entry_fields=True`` the block's per-entry fields.

    Concatenating the blocks (``scipy.sparse.vstack``) gives exactly what
    :func:`load_libsvm` / :func:`load_libffm` / :func:`load_cache` return.
    """
    block_rows = _check_n(block_rows, "block_rows")
    if block_rows is None:
        raise ValueError("block_rows must be a positive integer")
    n_features = _check_n(n_features, "n_features")
    fmt = _resolve_format(path, format)
    if not isinstance(entry_fields, (bool, np.bool_)):
        raise ValueError(f"entry_fields must be True or False, got {entry_fields!r}")
    if entry_fields and fmt not in ("libffm", "cache"):
        raise ValueError(f"entry_fields=True needs a libffm file or cache, "
                         f"{os.fspath(path)!r} is {fmt}")
    if fmt == "cache":
        return _iter_cache(path, block_rows, n_features, allow_nonfinite, verify_checksums,
                           bool(entry_fields))
    n_features = _check_features_arg(n_features, fmt)
    return _iter_text(path, fmt, block_rows, n_features, dtype, zero_based, n_jobs,
                      allow_unsorted, chunk_bytes, allow_nonfinite, bool(entry_fields))


def _iter_cache(path, block_rows, n_features, allow_nonfinite=True, verify_checksums=True,
                entry=False):
    c = _CacheFile(path)
    h = c.header
    if entry and not h["has_entry_fields"]:
        raise ValueError(f"{c.path!r} has no per-entry fields: make it with "
                         "convert_to_cache(src, entry_fields=True) from a libffm file")
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
            if h["has_entry_fields"]:
                crc.update("entry_fields", c.array("entry_fields")[a:b])
        if not allow_nonfinite:
            err = _first_nonfinite(c, r0, ip, data[a:b], y[r0:r1])
            if err is not None:
                raise err
        X = _csr_around(data[a:b], ind, ip - a, (r1 - r0, h["n_features"]))
        yield X, y[r0:r1], (EntryFields(c.entry_fields(a, b)) if entry else fields)
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
               chunk_bytes, allow_nonfinite=True, entry=False):
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
        if fmt == "libffm" and len(fields) != n_features and not entry:
            fields = _fields_out(fields, n_features)
        if fmt == "libsvm":
            zero_based = info["zero_based"]
    shift = fmt == "libsvm" and zero_based is False
    f32 = dtype == np.float32
    strict = fmt == "libsvm" and not allow_unsorted
    idx = _idx_dtype(block_rows, n_features, 0)
    pend_X, pend_y, pend_f, pend_n = [], [], [], 0

    def emit(parts_X, parts_y, parts_f):
        X = parts_X[0] if len(parts_X) == 1 else sp.vstack(parts_X, format="csr")
        if X.indices.dtype != idx and X.nnz <= _INT32_MAX:
            X.indices = X.indices.astype(idx)
            X.indptr = X.indptr.astype(idx)
        y = parts_y[0] if len(parts_y) == 1 else np.concatenate(parts_y)
        if entry:  # the file's entries as written, with their fields
            return X, y, EntryFields(np.concatenate(parts_f))
        X.has_sorted_indices = True
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
        if entry:
            Xc = sp.csr_matrix((data, indices, ch.indptr), shape=(len(ch.y), n_features),
                               copy=False)
        else:
            Xc = _build_csr(data, indices, ch.indptr, (len(ch.y), n_features),
                            canonical=not ch.unsorted)
        yc = ch.y
        start = 0
        while start < len(yc):
            take = min(block_rows - pend_n, len(yc) - start)
            whole = not (start or take < len(yc))
            pend_X.append(Xc if whole else _rows(Xc, start, start + take) if entry
                          else Xc[start:start + take])
            pend_y.append(yc[start:start + take])
            if entry:
                pend_f.append(ch.fields[ch.indptr[start]:ch.indptr[start + take]])
            pend_n += take
            start += take
            if pend_n == block_rows:
                yield emit(pend_X, pend_y, pend_f)
                pend_X, pend_y, pend_f, pend_n = [], [], [], 0
    if pend_n:
        yield emit(pend_X, pend_y, pend_f)


def _rows(X, r0, r1):
    """Rows [r0, r1) of CSR X with their entries as stored (no canonicalisation)."""
    a, b = int(X.indptr[r0]), int(X.indptr[r1])
    return sp.csr_matrix((X.data[a:b], X.indices[a:b], X.indptr[r0:r1 + 1] - a),
                         shape=(r1 - r0, X.shape[1]), copy=False)


# --------------------------------------------------------------------------
# Block sources for batch scoring
# --------------------------------------------------------------------------

class _Block:
    """Rows of the input as CSR arrays the kernels take, plus their labels
    (and the field of each entry, for models that take per-entry fields)."""

    __slots__ = ("data", "indices", "indptr", "y", "ignored", "fields")

    def __init__(self, data, indices, indptr, y, ignored=0, fields=None):
        self.data, self.indices, self.indptr, self.y = data, indices, indptr, y
        self.ignored = ignored
        self.fields = fields

    @property
    def n_rows(self):
        return len(self.y)


def _fit_to_model(data, indices, indptr, n_features, unsorted):
    """Canonical rows with only the model's columns; returns (data, indices, indptr, n_dropped)."""
    dropped = 0
    if len(indices) and int(indices.max()) >= n_features:
        keep = indices < n_features
        dropped = int(len(keep) - np.count_nonzero(keep))
        c = np.empty(len(indices) + 1, dtype=np.int64)
        c[0] = 0
        np.cumsum(keep, out=c[1:])
        indptr = c[indptr]
        indices, data = indices[keep], data[keep]
    if unsorted:
        M = sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, n_features))
        M.sum_duplicates()
        data, indices = M.data, M.indices
        indptr = M.indptr.astype(np.int64, copy=False)
    return data, indices, indptr, dropped


def _split(data, indices, indptr, y, block_rows, ignored, fields=None):
    n = len(y)
    if n <= block_rows:
        yield _Block(data, indices, indptr, y, ignored, fields)
        return
    for r0 in range(0, n, block_rows):
        r1 = min(n, r0 + block_rows)
        a, b = int(indptr[r0]), int(indptr[r1])
        yield _Block(data[a:b], indices[a:b], indptr[r0:r1 + 1] - a, y[r0:r1],
                     ignored if r0 == 0 else 0, None if fields is None else fields[a:b])


def _entries_for_model(data, indices, indptr, fields, n_features, n_fields):
    """Rows with their entries as written (per-entry fields), without the
    entries of a feature or field beyond the model; returns (data, indices,
    indptr, fields, n_dropped)."""
    keep = (indices < n_features) & (fields < n_fields)
    dropped = int(len(keep) - np.count_nonzero(keep))
    if dropped:
        c = np.empty(len(indices) + 1, dtype=np.int64)
        c[0] = 0
        np.cumsum(keep, out=c[1:])
        indptr = c[indptr]
        indices, data, fields = indices[keep], data[keep], fields[keep]
    return (data, indices, np.ascontiguousarray(indptr, dtype=np.int64),
            np.ascontiguousarray(fields, dtype=np.int32), dropped)


def _resolve_zero_based(src, fmt, zero_based, n_threads):
    if fmt != "libsvm":
        return True
    if zero_based is None:
        zero_based = "auto"
    if zero_based not in (True, False, "auto"):
        raise ValueError(f"zero_based must be None, True, False or 'auto', got {zero_based!r}")
    if zero_based == "auto":
        if _is_fileobj(src):
            raise ValueError("zero_based='auto' needs two passes over the input and cannot "
                             "read a stream twice; pass zero_based=True or False")
        zero_based = bool(scan_file(src, format="libsvm", n_jobs=n_threads)["zero_based"])
    return zero_based


def _text_blocks(src, fmt, n_features, zero_based, block_rows, chunk_bytes, n_threads,
                 chunks=None, labels=False, n_fields=None):
    """Blocks of a text input: each chunk of lines goes through the fast parser
    (cfm._fastparse: plain machine-written lines, bit-identical results), and
    through cfm's general parser when it holds anything else (comments,
    exponents, ...) -- which also reports malformed lines as file:line
    (``labels``: nan / inf labels too; the fast path reads only finite ones)."""
    name = _name(src)
    shift = fmt == "libsvm" and not zero_based
    if chunks is None:
        chunks = _read_chunks(src, chunk_bytes)
    lines = 0
    it = iter(chunks)
    while True:
        buf = _next_chunk(it, name, lines)
        if buf is None:
            return
        if n_fields is not None:  # per-entry fields: the general parser reads them
            yield from _general_blocks(name, buf, fmt, n_features, shift, block_rows, n_threads,
                                       lines, labels, n_fields)
            lines += buf.count(b"\n")
            continue
        pieces = _fastparse.parse_plain(buf, fmt == "libffm", shift, n_features, n_threads)
        if pieces is None:
            yield from _general_blocks(name, buf, fmt, n_features, shift, block_rows, n_threads,
                                       lines, labels)
            lines += buf.count(b"\n")
        else:
            # the fast path takes only data lines: a row per line
            lines += sum(len(p[0]) for p in pieces)
            for y, indptr, indices, data, dropped, unsorted in pieces:
                if unsorted:
                    data, indices, indptr, _ = _fit_to_model(data, indices, indptr, n_features,
                                                             True)
                yield from _split(data, indices, indptr, y, block_rows, dropped)


def _general_blocks(name, buf, fmt, n_features, shift, block_rows, n_threads, first_line,
                    labels=False, n_fields=None):
    # non-finite values (labels: when evaluating) cannot be scored: file:line
    for r in _parse_stream(name, fmt, f32=True, zero_ok=not shift, strict_order=False,
                                    n_threads=n_threads, chunks=[buf], first_line=first_line,
                                    finite=True if labels else "values"):
        y = r["labels"]
        indptr = np.empty(len(y) + 1, dtype=np.int64)
        indptr[0] = 0
        indptr[1:] = r["row_end"]
        indices, data = r["indices"], r["values"]
        if shift and len(indices):
            indices = indices - 1
        if n_fields is not None:
            data, indices, indptr, fields, dropped = _entries_for_model(
                data, indices, indptr, r["fields"], n_features, n_fields)
            yield from _split(data, indices, indptr, y, block_rows, dropped, fields)
            continue
        data, indices, indptr, dropped = _fit_to_model(data, indices, indptr, n_features,
                                                       r["unsorted"])
        yield from _split(data, indices, indptr, y, block_rows, dropped)


def _cache_blocks(src, n_features, block_rows, labels=False, n_fields=None):
    c = _CacheFile(src)
    width = c.header["n_features"]
    if n_fields is not None and not c.header["has_entry_fields"]:
        raise ValueError(f"{c.path!r}: this FFM model takes the field of each entry from the "
                         "data (per-entry fields), which the cache does not hold: make it with "
                         "convert_to_cache(src, entry_fields=True)")
    r0 = k0 = 0
    for X, y, _ in iter_blocks(src, block_rows=block_rows, format="cache"):
        indptr = np.ascontiguousarray(X.indptr, dtype=np.int64)
        data, indices = X.data, X.indices
        if not np.isfinite(data).all() or (labels and not np.isfinite(y).all()):
            raise _first_nonfinite(c, r0, indptr, data, y if labels else y[:0])
        r0 += len(y)
        if n_fields is not None:
            ef = c.entry_fields(k0, k0 + len(indices))
            k0 += len(indices)
            data, indices, indptr, ef, dropped = _entries_for_model(
                data, indices, indptr, ef, n_features, n_fields)
            yield _Block(data, indices, indptr, y, dropped, ef)
            continue
        if width > n_features:
            data, indices, indptr, dropped = _fit_to_model(data, indices, indptr, n_features,
                                                           False)
        else:
            dropped = 0
        yield _Block(data, indices, indptr, y, dropped)


def score_blocks(src, n_features, block_rows, chunk_bytes, n_threads, zero_based, format,
                 labels=False, n_fields=None):
    """Iterator of _Block over ``src`` (path or binary file object) sized for
    a model of ``n_features`` (batch scoring; see cfm.scoring for the input
    rules); ``labels``: nan / inf labels are errors too.  ``n_fields``: the
    blocks carry the field of each entry (libffm only), entries of a field
    >= n_fields are ignored."""
    fmt = _check_format(format)

    def need_libffm(fmt):
        if n_fields is not None and fmt not in ("libffm", "cache"):
            raise ValueError(f"{_name(src)}: this FFM model takes the field of each entry "
                             f"from the data (per-entry fields), so it scores libffm data, "
                             f"not {fmt}")
    if _is_fileobj(src):
        name = _name(src)
        chunks = _fileobj_chunks(src, chunk_bytes, name)
        first = _next_chunk(chunks, name, 0) or b""
        if first[:8] == CACHE_MAGIC:
            raise ValueError("a .cfmdata cache cannot be read from a stream; pass its path")
        if fmt == "auto":
            fmt = _sniff_format(first)
        if fmt == "cache":
            raise ValueError("a .cfmdata cache cannot be read from a stream; pass its path")
        need_libffm(fmt)

        def all_chunks():
            if first:
                yield first
            yield from chunks

        zb = _resolve_zero_based(src, fmt, zero_based, n_threads)
        return _text_blocks(src, fmt, n_features, zb, block_rows, chunk_bytes, n_threads,
                            chunks=all_chunks(), labels=labels, n_fields=n_fields)
    if not os.path.exists(os.fspath(src)):
        raise FileNotFoundError(f"{os.fspath(src)}: no such file")
    if os.path.isdir(os.fspath(src)):
        raise IsADirectoryError(f"{os.fspath(src)}: is a directory")
    fmt = _resolve_format(src, fmt)
    need_libffm(fmt)
    if fmt == "cache":
        return _cache_blocks(src, n_features, block_rows, labels, n_fields)
    zb = _resolve_zero_based(src, fmt, zero_based, n_threads)
    return _text_blocks(src, fmt, n_features, zb, block_rows, chunk_bytes, n_threads,
                        labels=labels, n_fields=n_fields)
