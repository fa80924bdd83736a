"""cfm's binary data cache (``.cfmdata``) of :mod:`cfm.data`: written by
:func:`convert_to_cache` from a text file in bounded memory, read back as
memory-mapped CSR arrays, its checksums verified once per process and file.

Layout (all integers little-endian; the container of cfm/_container.py with
a header CRC in the prefix, per-array CRC32s and no trailing CRC)::

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
               data (float32 / float64, nnz), y (float64, n_rows),
               fields (int32, n_features; libffm only) and entry_fields
               (int32, nnz; caches made with ``entry_fields=True``, whose
               header says ``has_entry_fields``: the field of each stored
               entry, the entries kept as the text file wrote them)

A reader accepts any minor version of its major version and refuses newer
major versions.  Minor version 1 adds ``zero_based`` to the header (how the
libsvm ids of the source were read; caches without it count as zero-based).
"""
import contextlib
import json
import mmap
import os
import shutil
import stat
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._container import Format, align, check_arrays, gaps, is_int, pad_header, short
from .._files import (atomic_output, open_regular, pread_into, same_file, scratch_dir,
                      scratch_file)
from .._lazy import sparse as sp
from .._validation import effective_n_threads
from .._fields import EntryFields
from ..exceptions import DataFormatError
from ._source import _MAX_ID_64, CACHE_MAGIC, CHUNK_BYTES, MAX_ID_32, _resolve_format
from .text import (_INT32_MAX, _Chunk, _check_features_arg, _check_zero_based, _fields_out,
                   _index_limit, _parse_stream, _update_fields)

CACHE_VERSION = (1, 1)
CACHE_FORMAT = Format(CACHE_MAGIC, CACHE_VERSION, kind="cfm-data", name="cfm data cache",
                      version_name="cfm data cache format",
                      upgrade="upgrade cfm or rebuild the cache with convert_to_cache",
                      error=DataFormatError, header_crc=True)
_CACHE_PREFIX = CACHE_FORMAT.prefix

# Caches whose checksums were verified in this process, keyed by what would
# change if the file did (see _CacheFile.identity): training streams a cache
# once per epoch, and only the first pass needs to compute them.
_VERIFIED = {}
_VERIFIED_MAX = 64
# Largest count (rows, columns, values) a cache header may declare.
_MAX_COUNT = 2**62


class _CacheFile:
    """A validated, memory-mapped ``.cfmdata`` file."""

    _NAMES = ("indptr", "indices", "data", "y", "fields", "entry_fields")

    def __init__(self, path):
        self.path = os.fspath(path)
        where = repr(self.path)
        psize = CACHE_FORMAT.prefix.size
        # a regular file only (a FIFO or device is refused before reading)
        fd, size = open_regular(self.path, "a cfm data cache", DataFormatError)
        try:
            st = os.fstat(fd)
            prefix = bytearray(psize)
            prefix = prefix[:pread_into(fd, prefix, 0)]
            if len(prefix) < psize:
                if CACHE_MAGIC.startswith(prefix[:8]) and prefix:
                    raise DataFormatError(f"{where} is a truncated cfm data cache "
                                          f"({size} bytes)")
                raise DataFormatError(f"{where} is not a cfm data cache (too short)")
            magic, major, minor, hlen, hcrc = CACHE_FORMAT.prefix.unpack(bytes(prefix))
            CACHE_FORMAT.check_prefix(magic, major, minor, where)
            if psize + hlen > size:
                raise DataFormatError(f"{where} is truncated: its header needs {hlen} bytes "
                                      f"but the file has {size}")
            hbytes = bytearray(hlen)
            if pread_into(fd, hbytes, psize) != hlen:
                raise DataFormatError(f"{where} is truncated: its header needs {hlen} bytes")
        finally:
            os.close(fd)
        if zlib.crc32(hbytes) != hcrc:
            raise DataFormatError(f"{where} is corrupted: header checksum mismatch")
        h = CACHE_FORMAT.parse_header(hbytes, where)
        self.header = h = self._check_header(h, where, size, psize + hlen)
        self.identity = (os.path.realpath(self.path), st.st_dev, st.st_ino, size,
                         st.st_mtime_ns, hcrc)
        self._mm = np.memmap(self.path, dtype=np.uint8, mode="r") if size else None
        self.size = size

    @staticmethod
    def _check_header(h, where, size, data_start):
        def bad(msg):
            return DataFormatError(f"{where} has an invalid header: {msg}")

        def count(v):
            return is_int(v, 0, _MAX_COUNT)

        for k in ("n_rows", "n_features", "nnz", "file_size"):
            if not count(h.get(k)):
                raise bad(f"{k}={short(h.get(k))}")
        if not isinstance(h.get("has_fields"), bool):
            raise bad("has_fields missing")
        zb = h.get("zero_based", True)  # format 1.0 did not record it
        if not isinstance(zb, bool):
            raise bad(f"zero_based={short(zb)}")
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
        if not isinstance(h.get("has_entry_fields", False), bool) \
                or (h.get("has_entry_fields") and not h["has_fields"]):
            raise bad(f"has_entry_fields={short(h.get('has_entry_fields'))}")
        h["has_entry_fields"] = h.get("has_entry_fields", False)
        if h["has_entry_fields"]:
            expect["entry_fields"] = ((nnz,), ("<i4",))
        entries = check_arrays(
            h.get("arrays"), where, error=DataFormatError, base=0, data_start=data_start,
            size=size, trailer=0, dtypes={"<i4", "<i8", "<f4", "<f8"}, expect=expect, crc=True,
            aligned=True, truncated=lambda name, need: DataFormatError(
                f"{where} is truncated: array {name} ends at {need} but the file has {size} "
                "bytes"))
        h["_table"] = {e[0]: e[5] for e in entries}
        h["_gaps"] = gaps(entries, data_start, size)
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

    def entry_fields(self, lo=0, hi=None):
        """The field of stored entries [lo, hi) (caches with per-entry fields;
        None otherwise), checked (ids 0 .. MAX_ID_32)."""
        if not self.header["has_entry_fields"]:
            return None
        f = self.array("entry_fields")[lo:hi]
        if len(f) and (f.min() < 0 or f.max() > MAX_ID_32):
            raise DataFormatError(f"{self.path!r} is corrupted: entry field ids out of range")
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


def load_cache(path, check=True, verify_checksums=True, entry_fields=False):
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
    entry_fields : bool, default=False
        Return the field of each stored entry (a :class:`cfm.EntryFields`)
        instead of the per-column fields: caches made with
        ``convert_to_cache(..., entry_fields=True)`` only.

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
    if entry_fields:
        if not h["has_entry_fields"]:
            raise ValueError(f"{c.path!r} has no per-entry fields: make it with "
                             "convert_to_cache(src, entry_fields=True) from a libffm file")
        fields = EntryFields(c.entry_fields())
    if verify_checksums:
        c.verify_checksums()
    X = _csr_around(c.array("data"), indices, indptr, (h["n_rows"], h["n_features"]))
    return X, c.array("y"), fields


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
                     chunk_bytes=CHUNK_BYTES, entry_fields=False):
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
    entry_fields : bool, default=False
        libffm only: also store the field of each entry, with the entries as
        the file writes them (repeats kept), as ``load_libffm(src,
        entry_fields=True)`` reads them (for FFM models with per-entry
        fields; ``load_cache(dst, entry_fields=True)``).

    Returns
    -------
    str
        The path of the cache.  :func:`load_cache` of it gives the same
        ``X, y`` (and ``fields``) as parsing ``src`` directly.
    """
    fmt = _resolve_format(src, format, allow_cache=False)
    if not isinstance(entry_fields, (bool, np.bool_)):
        raise ValueError(f"entry_fields must be True or False, got {entry_fields!r}")
    if entry_fields and fmt != "libffm":
        raise ValueError(f"entry_fields=True needs a libffm file, {os.fspath(src)!r} is {fmt}")
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
        # the sections go to unique scratch files next to it (or, for a
        # target like /dev/null, in the system's temporary folder)
        out = stack.enter_context(atomic_output(dst))
        scratch, base = scratch_dir(dst), os.path.basename(dst)
        secs = {n: _Section(stack.enter_context(scratch_file(scratch, f"{base}.{n}")), dt)
                for n, dt in (("indptr", np.int64), ("indices", np.int32), ("data", dtype),
                              ("y", np.float64))
                + ((("entry_fields", np.int32),) if entry_fields else ())}
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
            if entry_fields:
                secs["entry_fields"].append(ch.fields)
            elif ch.unsorted:
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
        if entry_fields:
            order.append("entry_fields")
        specs = {"indptr": (np.int64, n_rows + 1), "indices": (idx_dt, nnz),
                 "data": (dtype, nnz), "y": (np.float64, n_rows), "fields": (np.int32, n_cols),
                 "entry_fields": (np.int32, nnz)}
        header = {"format": "cfm-data", "n_rows": n_rows, "n_features": int(n_cols),
                  "nnz": nnz, "has_fields": fmt == "libffm", "source_format": fmt,
                  "zero_based": not shift,
                  "source": os.path.basename(os.fspath(src)), "file_size": 0, "arrays": []}
        if entry_fields:
            header["has_entry_fields"] = True

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
        data_start = align(_CACHE_PREFIX.size + hlen)
        offsets, pos = {}, data_start
        for n in order:
            offsets[n] = pos
            pos = align(pos + specs[n][1] * np.dtype(specs[n][0]).itemsize)
        file_size = pos
        crcs = {}
        # the cache itself: written atomically (cfm._files.atomic_output, as a
        # model file is), then renamed onto dst
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
            hb = pad_header(make_header(crcs, offsets, file_size), CACHE_FORMAT, data_start)
            f.seek(0)
            f.write(CACHE_FORMAT.pack_prefix(hb))
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
