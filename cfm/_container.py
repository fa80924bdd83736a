"""cfm's one binary container, shared by model files (cfm/_model_file.py,
format "cfm-model") and the data cache (cfm/data/cache.py, ``.cfmdata``).

Layout (all integers little-endian)::

    offset 0   8 bytes   magic (one per format)
    offset 8   uint16    format major version
    offset 10  uint16    format minor version
    offset 12  uint32    header length H
   [offset 16  uint32    CRC32 of the H header bytes   (formats with header_crc)]
    ...        H bytes   header: UTF-8 JSON, a "format" entry naming the format and
                         an "arrays" table (name, dtype, shape, offset, nbytes per
                         array), padded with spaces so that the arrays start
                         64-byte aligned
    ...        raw little-endian arrays, each at a 64-byte aligned offset
   [last 4     uint32    CRC32 of every byte before it  (formats with a trailer)]

What one format differs in is a :class:`Format` value: its magic, version,
names for messages, error class, and whether the prefix carries a header
CRC (the cache, whose arrays carry their own CRC32s in the table and are
memory-mapped) or the file ends with a CRC32 of everything (model files).

This module owns what every container needs: the prefix (packing, magic and
version checks: a reader accepts any minor version of its major version and
refuses a newer major), the JSON header (parsing, padding), the array table
(validated: dtypes, shapes matching sizes, offsets inside the data area, no
overlap -- nothing in a header is trusted before it is bounded by the file's
size), the atomic write of a file with a trailing CRC, and the bounded,
``pread``-based reader (:class:`Container`, never a memory map: a file
truncated meanwhile gives an error, not SIGBUS) that checksums every piece
it reads in helper threads it always joins.  (Design: a mapped file that
shrinks kills the process; reading costs one copy, ~0.2 s of CPU per 1.5 GB,
into a few cache-sized buffers; peak memory is the tables plus a few blocks.)
"""
import json
import os
import reprlib
import struct
import threading
import zlib

import numpy as np

from ._readahead import FileArray, crc32_combine
from ._files import atomic_output, open_regular, pread_into
from .exceptions import ModelFileError

__all__ = ["ALIGN", "Format", "Container", "SizeError", "ChecksumError", "align", "check_arrays",
           "pad_header", "write", "read", "peek", "crc32_combine"]

ALIGN = 64
# Largest header read (and written): JSON objects take up to ~20x their text.
MAX_HEADER_BYTES = 64 << 20
# Files up to this size are read whole and verified before the header is parsed.
_WHOLE_BYTES = 16 << 20
# Arrays up to this size are read whole; larger ones a block at a time.
_EAGER_BYTES = 16 << 20
# Block of a large array read ahead while the blocks already read are checksummed
# and copied: small enough that the few buffers stay in the CPU's cache.
_BLOCK_BYTES = 4 << 20
_MAX_INT = 2**63 - 1


class SizeError(ModelFileError):
    """The file is shorter than its header says (reported as truncated, not
    as a checksum mismatch)."""


class ChecksumError(ModelFileError):
    """The file's CRC32 does not match its content."""


def align(n):
    """``n`` rounded up to the container's alignment (64 bytes)."""
    return -(-n // ALIGN) * ALIGN


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong, _REPR.maxlist, _REPR.maxdict, \
    _REPR.maxtuple = 3, 40, 40, 40, 6, 6, 6


def short(v):
    """A short repr for messages, whatever the size or nesting of ``v``."""
    r = _REPR.repr(v)
    return r if len(r) <= 80 else r[:77] + "..."


def is_int(v, lo=0, hi=_MAX_INT):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


class Format:
    """One file format on the container (see the module docstring).

    ``kind``: the header's "format" entry; ``name``: what a file of it is
    called in messages ("cfm model file"); ``version_name``: its versions
    ("cfm model format"); ``upgrade``: what to do with a newer major version;
    ``error``: the exception class (ModelFileError, DataFormatError);
    ``header_crc``: the prefix carries the header's CRC32 (else the file ends
    with a CRC32 of everything before it)."""

    def __init__(self, magic, version, *, kind, name, version_name, upgrade, error,
                 header_crc=False):
        self.magic, self.version, self.kind, self.name = magic, tuple(version), kind, name
        self.version_name, self.upgrade, self.error = version_name, upgrade, error
        self.header_crc = header_crc
        self.prefix = struct.Struct("<8sHHII" if header_crc else "<8sHHI")
        self.trailer = 0 if header_crc else 4

    def pack_prefix(self, hbytes):
        """The prefix of a file whose (padded) header is ``hbytes``."""
        extra = (zlib.crc32(hbytes),) if self.header_crc else ()
        return self.prefix.pack(self.magic, self.version[0], self.version[1], len(hbytes),
                                *extra)

    def check_prefix(self, magic, major, minor, where):
        """Refuse another format's file, a newer major version and version 0."""
        if magic != self.magic:
            raise self.error(f"{where} is not a {self.name} (bad magic bytes {magic!r})")
        if major > self.version[0]:
            raise self.error(
                f"{where} uses {self.version_name} {major}.{minor}, newer than the "
                f"{self.version[0]}.x this version of cfm reads; {self.upgrade}")
        if major < 1:
            raise self.error(f"{where} has unknown {self.version_name} version "
                             f"{major}.{minor}")

    def parse_header(self, hbytes, where):
        """The header's JSON object (any JSON failure is ``error``), which must
        name this format."""
        err = self.error
        try:
            header = json.loads(bytes(hbytes).decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise err(f"{where} has an unreadable header (not UTF-8: {exc})") from None
        except RecursionError:
            raise err(f"{where} has an unreadable header (JSON nested too deeply)") from None
        except ValueError as exc:  # JSONDecodeError, integers of too many digits
            raise err(f"{where} has an unreadable header ({exc})") from None
        if not isinstance(header, dict) or header.get("format") != self.kind:
            raise err(f"{where} is not a {self.name} (bad header)")
        return header


def pad_header(hbytes, fmt, data_start=None):
    """``hbytes`` padded with spaces so that the data area starts at
    ``data_start`` (default: the next aligned offset after the header)."""
    if data_start is None:
        data_start = align(fmt.prefix.size + len(hbytes))
    return hbytes + b" " * (data_start - fmt.prefix.size - len(hbytes))


def check_arrays(entries, where, *, error, base, data_start, size, trailer, dtypes,
                 expect=None, crc=False, aligned=False, truncated=None):
    """Validate a header's array table; returns ``[(name, dtype, shape,
    start, nbytes, entry)]`` (start: offset in the file = ``base`` + the
    entry's offset).

    Every entry needs a name, a dtype among ``dtypes``, a shape of at most 8
    dimensions whose size is ``nbytes``, an offset (``aligned``: a multiple
    of 64) and, with ``crc``, a CRC32.  ``expect`` ({name: (shape, dtypes)}):
    exactly these arrays.  Each array lies in ``[data_start, size -
    trailer)`` (``truncated(name, need)`` makes the error of one that does
    not fit; default ``error``) and no two arrays overlap."""
    def bad(msg):
        return error(f"{where} has an invalid header: {msg}")

    if not isinstance(entries, list) or len(entries) > 1000:
        raise bad("no array table")
    out, seen = [], set()
    for e in entries:
        if not (isinstance(e, dict) and isinstance(e.get("name"), str) and len(e["name"]) <= 100
                and isinstance(e.get("dtype"), str) and e["dtype"] in dtypes
                and isinstance(e.get("shape"), list)
                and len(e["shape"]) <= 8 and all(is_int(s, 0, 2**62) for s in e["shape"])
                and is_int(e.get("offset")) and is_int(e.get("nbytes"))
                and (not aligned or e["offset"] % ALIGN == 0)
                and (not crc or is_int(e.get("crc32"), 0, 0xFFFFFFFF))):
            raise bad(f"malformed array entry {short(e)}")
        name, shape = e["name"], tuple(e["shape"])
        if name in seen:
            raise bad(f"array {name!r} is listed twice")
        seen.add(name)
        if expect is not None:
            if name not in expect:
                raise bad(f"unexpected array entry {short(e)}")
            want, dts = expect[name]
            if e["dtype"] not in dts or shape != tuple(want):
                raise bad(f"array {name}: dtype {e['dtype']!r} / shape {short(e['shape'])}, "
                          f"expected {dts} / {list(want)}")
        itemsize = np.dtype(e["dtype"]).itemsize
        count, span = 1, itemsize
        for s in shape:
            count *= s
            span *= max(s, 1)
        # NumPy refuses a shape whose non-zero dimensions overflow its index
        # type even when a zero dimension makes the array empty
        if span > _MAX_INT:
            raise bad(f"array {name!r} of shape {list(shape)} is too large")
        if count * itemsize != e["nbytes"]:
            raise bad(f"array {name!r} of shape {list(shape)} does not hold {e['nbytes']} bytes")
        start = base + e["offset"]
        if start < data_start:
            raise bad(f"array {name!r} starts inside the header")
        if start + e["nbytes"] + trailer > size:
            need = start + e["nbytes"] + trailer
            raise (truncated(name, need) if truncated is not None else
                   error(f"{where} is truncated: {size} bytes, array {name!r} needs {need}"))
        out.append((name, e["dtype"], shape, start, e["nbytes"], e))
    if expect is not None and seen != set(expect):
        raise bad(f"missing arrays {sorted(set(expect) - seen)}")
    end = data_start
    for name, _, _, start, nbytes, _ in sorted(out, key=lambda a: (a[3], a[4])):
        if nbytes and start < end:
            raise bad(f"array {name!r} overlaps another array")
        end = max(end, start + nbytes)
    return out


def gaps(entries, data_start, size):
    """The byte ranges of the data area that no array of ``entries`` (from
    :func:`check_arrays`) covers: a writer's zero padding."""
    out, end = [], data_start
    for _, _, _, start, nbytes, _ in sorted(entries, key=lambda a: (a[3], a[4])):
        if nbytes:
            if start > end:
                out.append((end, start))
            end = max(end, start + nbytes)
    if size > end:
        out.append((end, size))
    return out


# --------------------------------------------------------------------------
# Writing (formats with a trailing CRC32)
# --------------------------------------------------------------------------

def write(path, header, arrays, *, fmt, json_default=None, too_large=None):
    """Write ``header`` (without "format" / "arrays": added here) and
    ``arrays`` ({name: ndarray or an object with ``shape``, ``dtype``,
    ``nbytes`` and ``blocks()`` yielding contiguous little-endian blocks})
    to ``path`` atomically (cfm._files.atomic_output), the CRC32 of every
    byte at the end.  A header above MAX_HEADER_BYTES raises ValueError
    (``too_large``: what the message suggests)."""
    header = dict(header)
    header["format"] = fmt.kind
    entries, blobs, offset = [], [], 0
    for name, arr in arrays.items():
        entries.append({"name": name, "dtype": arr.dtype.newbyteorder("<").str,
                        "shape": list(arr.shape), "offset": offset, "nbytes": arr.nbytes})
        blobs.append(arr)
        offset += align(arr.nbytes)
    header["arrays"] = entries
    hbytes = pad_header(json.dumps(header, default=json_default, sort_keys=True).encode("utf-8"),
                        fmt)
    if len(hbytes) > MAX_HEADER_BYTES:
        raise ValueError(f"cannot save to {os.fspath(path)}: the model's header would take "
                         f"{len(hbytes) / 2**20:.0f} MiB (more than {MAX_HEADER_BYTES >> 20} "
                         f"MiB){'' if too_large is None else ': ' + too_large}")
    crc = 0
    with atomic_output(path) as f:
        def put(b):
            nonlocal crc
            crc = zlib.crc32(b, crc)
            f.write(b)

        put(fmt.pack_prefix(hbytes))
        put(hbytes)
        for arr in blobs:
            if isinstance(arr, np.ndarray):
                if arr.nbytes:
                    put(memoryview(arr).cast("B"))
            else:
                for block in arr.blocks():
                    put(memoryview(block).cast("B"))
            pad = align(arr.nbytes) - arr.nbytes
            if pad:
                put(b"\0" * pad)
        f.write(struct.pack("<I", crc))


# --------------------------------------------------------------------------
# Reading (formats with a trailing CRC32)
# --------------------------------------------------------------------------

def read(path, *, fmt, validate, eager_bytes=None, whole_bytes=None):
    """Open a container file: see :class:`Container`."""
    return Container(path, fmt=fmt, validate=validate, eager_bytes=eager_bytes,
                     whole_bytes=whole_bytes)


class Container:
    """An open container file (with a trailing CRC32): prefix and header read
    and validated (``validate(header, where, data_start, size)`` returns the
    array table as :func:`check_arrays` does), small arrays read, large ones
    (:class:`FileArray`) read on demand; the CRC of every piece
    read is kept so that :meth:`verify` reads only what nobody read.  Use as
    a context manager (``close`` joins helper threads, closes the file)."""

    def __init__(self, path, *, fmt, validate, eager_bytes=None, whole_bytes=None):
        if fmt.header_crc:
            raise ValueError("Container reads formats with a trailing CRC32")
        eager_bytes = _EAGER_BYTES if eager_bytes is None else eager_bytes
        whole_bytes = _WHOLE_BYTES if whole_bytes is None else whole_bytes
        self.fmt = fmt
        self.path = os.fspath(path)
        self.where = repr(self.path)
        self._lock = threading.Lock()
        self._jobs = set()
        self._crcs = {}  # start -> (end, crc32) of the pieces read so far
        self._verified = False
        self._closing = False  # tells helper threads to stop
        self._check_crc = False  # errors before the header is read are not checksum errors
        self.stored_crc = None
        self.version = None
        self.block_bytes = _BLOCK_BYTES  # read ahead by FileArray
        self.fd, self.size = open_regular(self.path, f"a {fmt.name}", fmt.error)
        try:
            self._open(validate, eager_bytes, whole_bytes)
        except ModelFileError as exc:
            err = self.corruption(exc)
            self.close()
            if err is not None:
                raise err from exc
            raise
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._closing = True
        with self._lock:
            jobs = list(self._jobs)
        for job in jobs:  # each stops after at most one block read
            job.join()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    # ---------------------------------------------------------- reading
    def read(self, start, n, out=None, checksum=True):
        """``n`` bytes at ``start`` (into ``out`` when given, else a new
        bytearray); the file ending early raises SizeError.  Their CRC32 is
        recorded (unless ``checksum=False``: then the caller must
        :meth:`checksum` exactly the bytes it uses)."""
        buf = bytearray(n) if out is None else out
        got = pread_into(self.fd, buf, start) if n else 0
        if got < n:
            raise SizeError(f"{self.where} is truncated: it ended at byte {start + got} while "
                            f"{start + n} bytes were expected (was it changed while loading?)")
        if checksum:
            self.checksum(start, buf)
        return buf

    def checksum(self, start, buf):
        """Record the CRC32 of ``buf``, the bytes read at ``start``."""
        n, crc = len(memoryview(buf).cast("B")), zlib.crc32(buf)
        with self._lock:
            if self._crcs.get(start, (start + n, crc)) != (start + n, crc) \
                    and self._crcs[start][0] == start + n:
                raise ModelFileError(f"{self.where} changed while it was being read")
            self._crcs[start] = (start + n, crc)

    def _open(self, validate, eager_bytes, whole_bytes):
        fmt, where, size = self.fmt, self.where, self.size
        psize = fmt.prefix.size
        if size < psize + 4:
            head = bytearray(size)
            head = head[:pread_into(self.fd, head, 0)]
            if head[:4] == fmt.magic[:4] or not head:
                raise fmt.error(f"{where} is truncated ({size} bytes): not a complete "
                                f"{fmt.name}")
            raise fmt.error(f"{where} is not a {fmt.name} (too short, bad magic)")
        magic, major, minor, hlen = fmt.prefix.unpack(bytes(self.read(0, psize)))
        fmt.check_prefix(magic, major, minor, where)
        self.version = (major, minor)
        tail = bytearray(4)
        if pread_into(self.fd, tail, size - 4) < 4:
            raise SizeError(f"{where} is truncated (it changed while loading)")
        (self.stored_crc,) = struct.unpack("<I", tail)
        if psize + hlen + 4 > size:
            raise SizeError(f"{where} is truncated: header needs {hlen} bytes but the file "
                            f"has {size}")
        self._check_crc = True
        if hlen > MAX_HEADER_BYTES:
            raise fmt.error(f"{where}: header of {hlen} bytes (cfm reads at most "
                            f"{MAX_HEADER_BYTES >> 20} MiB)")
        whole = None
        if size <= whole_bytes:
            # small file: verified before anything in it is parsed
            whole = self.read(psize, size - 4 - psize)
            self.verify()
            hbytes = memoryview(whole)[:hlen]
        else:
            hbytes = self.read(psize, hlen)
        self.header = fmt.parse_header(hbytes, where)
        self.arrays = {}
        for name, dt, shape, start, nbytes, _ in validate(self.header, where, psize + hlen, size):
            if nbytes == 0:
                arr = np.zeros(shape, dtype=dt)
            elif whole is not None:  # copied: small arrays do not pin the file's bytes
                arr = np.frombuffer(whole, dtype=np.uint8, count=nbytes,
                                    offset=start - psize).view(dt).reshape(shape).copy()
            elif nbytes <= eager_bytes:
                buf = self.read(start, nbytes, out=np.empty(nbytes, dtype=np.uint8))
                arr = buf.view(dt).reshape(shape)
            else:
                arr = FileArray(self, start, dt, shape)
            self.arrays[name] = arr

    # ---------------------------------------------------------- checksum
    def _crc_total(self):
        """CRC32 of bytes [0, size - 4): the pieces already read, combined in
        file order, and the gaps between them read now (in chunks)."""
        end = self.size - 4
        with self._lock:
            pieces = sorted((s, e, c) for s, (e, c) in self._crcs.items())
        crc, pos = 0, 0
        scratch = None
        for s, e, c in pieces + [(end, end, 0)]:
            if s < pos or e > end:
                continue  # overlaps what is already counted: its bytes are read again below
            while pos < s:
                if scratch is None:
                    scratch = np.empty(min(8 << 20, max(1, end)), dtype=np.uint8)
                k = min(len(scratch), s - pos)
                buf = scratch[:k]
                if pread_into(self.fd, buf, pos) < k:
                    raise SizeError(f"{self.where} is truncated (it changed while loading)")
                crc = zlib.crc32(buf, crc)
                pos += k
            crc = crc32_combine(crc, c, e - s)
            pos = e
        return crc

    def verify(self):
        """Raise ChecksumError unless the file's checksum matches."""
        if self._verified:
            return
        crc = self._crc_total()
        if crc != self.stored_crc:
            raise ChecksumError(f"{self.where} is corrupted (checksum mismatch: stored "
                                f"{self.stored_crc:#010x}, computed {crc:#010x})")
        self._verified = True

    def corruption(self, exc):
        """The checksum error to report instead of ``exc`` (an error found
        while reading the header or building from the arrays) when the file's
        checksum does not match, else None."""
        if not self._check_crc or self._verified or self.fd is None \
                or isinstance(exc, (SizeError, ChecksumError)):
            return None
        try:
            self.verify()
        except ModelFileError as err:
            return None if isinstance(err, SizeError) else err
        except OSError:
            return None
        return None

def peek(path, *, fmt, validate):
    """The validated header of a container file, read without the arrays
    (the checksum, which covers the whole file, is not checked); None when
    the file is not a readable file of ``fmt``."""
    if fmt.header_crc:
        raise ValueError("peek reads formats with a trailing CRC32")
    try:
        fd, size = open_regular(path, f"a {fmt.name}", fmt.error)
    except (OSError, ModelFileError):
        return None
    psize = fmt.prefix.size
    try:
        prefix = bytearray(psize)
        if pread_into(fd, prefix, 0) < psize:
            return None
        magic, major, _, hlen = fmt.prefix.unpack(bytes(prefix))
        if magic != fmt.magic or major != fmt.version[0] or hlen > MAX_HEADER_BYTES \
                or psize + hlen + 4 > size:
            return None
        hbytes = bytearray(hlen)
        if pread_into(fd, hbytes, psize) < hlen:
            return None
        where = repr(os.fspath(path))
        header = fmt.parse_header(hbytes, where)
        validate(header, where, psize + hlen, size)
        return header
    except (OSError, ModelFileError):
        return None
    finally:
        os.close(fd)
