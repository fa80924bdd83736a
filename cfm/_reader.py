"""Reading a cfm model file: only regular files, with ``pread`` (never a
memory map, so a file truncated meanwhile gives an error, not SIGBUS), every
piece checksummed (CRC32s combined in file order), large arrays read a block
at a time by a helper thread while worker threads checksum the blocks read
and copy them into the model's tables (see cfm/_io.py).

Design: mapping the file saved one copy (the kernel's, from the page cache),
but a mapped file that shrinks kills the process; reading costs that copy
(about 0.2 s of CPU per 1.5 GB here) into a few cache-sized buffers, which
the checksum and the copy into the tables then read from the cache.  Peak
memory is the tables plus a few blocks, no longer the tables plus the
mapped file."""
import os
import queue
import struct
import threading
import zlib

import numpy as np

from ._files import open_regular, pread_into
from ._header import (FORMAT_VERSION, MAGIC, MAX_HEADER_BYTES, PREFIX as _PREFIX, ChecksumError,
                      SizeError, check_header, parse_header)
from .exceptions import ModelFileError

# Files up to this size are read whole and verified before the header is parsed.
_WHOLE_BYTES = 16 << 20
# Arrays up to this size are read whole; larger ones a block at a time.
_EAGER_BYTES = 16 << 20
# Block of a large array read ahead while the blocks already read are checksummed
# and copied: small enough that the few buffers stay in the CPU's cache.
_BLOCK_BYTES = 4 << 20


# CRC32 of concatenated pieces (zlib's crc32_combine, which Python's zlib
# does not expose): the pieces of a file are checksummed as they are read,
# in any order and in several threads, and combined in file order.

_CRC_POLY = 0xEDB88320


def _multmodp(a, b):
    """a * b modulo the CRC-32 polynomial (bit-reflected)."""
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if (a & (m - 1)) == 0:
                return p
        m >>= 1
        b = (b >> 1) ^ _CRC_POLY if b & 1 else b >> 1


def _x2n_table():
    p, table = 1 << 30, []  # x^1
    for _ in range(32):
        table.append(p)
        p = _multmodp(p, p)
    return table


_X2N = _x2n_table()


def crc32_combine(crc1, crc2, len2):
    """CRC32 of A + B from crc1 = crc32(A), crc2 = crc32(B) and len(B)."""
    p, k, n = 1 << 31, 3, len2  # x^(8 * len2)
    while n:
        if n & 1:
            p = _multmodp(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return _multmodp(p, crc1) ^ crc2


class _Job(threading.Thread):
    """A helper thread running ``fn()``, registered with its model file (which
    joins it on close); ``started`` is False when no thread could be created.
    ``result()`` joins it and re-raises what it raised."""

    def __init__(self, fn, owner):
        super().__init__(daemon=True, name="cfm-read")
        self._fn, self._owner, self.error = fn, owner, None
        with owner._lock:
            owner._jobs.add(self)
        try:
            self.start()
            self.started = True
        except RuntimeError:  # no thread can be created
            self.started = False
            with owner._lock:
                owner._jobs.discard(self)

    def run(self):
        try:
            self._fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            self.error = exc

    def result(self):
        if self.started:
            self.join()
        with self._owner._lock:
            self._owner._jobs.discard(self)
        if self.error is not None:
            raise self.error


class _FileArray:
    """A large array of a model file, read a block of rows at a time.

    ``for_each_block(fn)`` calls ``fn(i, j, rows i:j)`` for every block as
    it is read: a helper thread reads (and checksums) the blocks ahead into a
    few cache-sized buffers while worker threads (the caller and helpers)
    copy the blocks read into the model's tables, so loading needs a few
    blocks of memory besides the model, never a second copy of a table.
    ``read()`` returns the whole array.  Shapes and dtypes are those of the
    validated header."""

    def __init__(self, mf, start, dtype, shape):
        self._mf, self._start = mf, start
        self.dtype, self.shape = np.dtype(dtype), tuple(shape)
        self.ndim, self.size = len(self.shape), int(np.prod(self.shape, dtype=object))
        self.nbytes = self.size * self.dtype.itemsize

    def __len__(self):
        return self.shape[0]

    def read(self):
        out = np.empty(self.shape, dtype=self.dtype)
        flat = out.reshape(-1).view(np.uint8)
        for a in range(0, self.nbytes, _BLOCK_BYTES):
            b = min(self.nbytes, a + _BLOCK_BYTES)
            self._mf.read(self._start + a, b - a, out=flat[a:b])
        return out

    def for_each_block(self, fn, n_workers=2):
        n = self.shape[0] if self.shape else 1
        row = self.nbytes // n if n else 0
        if row == 0:
            fn(0, n, np.empty(self.shape, dtype=self.dtype))
            return
        per = max(1, _BLOCK_BYTES // row)
        spans = [(i, min(n, i + per)) for i in range(0, n, per)]
        n_workers = max(1, min(n_workers, len(spans)))
        bufs = [np.empty(per * row, dtype=np.uint8)
                for _ in range(min(n_workers + 2, len(spans)))]
        mf, shape = self._mf, self.shape

        def block(t, b):
            i, j = spans[t]
            return bufs[b][:(j - i) * row].view(self.dtype).reshape((j - i,) + shape[1:])

        def read(t, b, checksum=True):
            i, j = spans[t]
            mf.read(self._start + i * row, (j - i) * row, out=bufs[b][:(j - i) * row],
                    checksum=checksum)

        free, ready, stop, failed = queue.Queue(), queue.Queue(), threading.Event(), []
        for b in range(len(bufs)):
            free.put(b)

        def fail(exc):
            failed.append(exc)
            stop.set()
            for _ in range(n_workers):
                ready.put(None)  # wakes the workers

        def reader():  # reads the blocks ahead, in file order (the workers checksum them)
            for t in range(len(spans)):
                while True:
                    if stop.is_set() or mf._closing:
                        return
                    try:
                        b = free.get(timeout=0.1)
                        break
                    except queue.Empty:
                        pass
                try:
                    read(t, b, checksum=False)
                except BaseException as exc:  # noqa: BLE001 - raised by the caller
                    fail(exc)
                    return
                ready.put((t, b))
            for _ in range(n_workers):
                ready.put(None)

        def work():  # copies the blocks read, in any order
            while True:
                item = ready.get()
                if item is None or stop.is_set():
                    return
                t, b = item
                i, j = spans[t]
                try:
                    mf.checksum(self._start + i * row, bufs[b][:(j - i) * row])
                    fn(i, j, block(t, b))
                except BaseException as exc:  # noqa: BLE001 - raised by the caller
                    fail(exc)
                    return
                free.put(b)

        reading = _Job(reader, mf)
        if not reading.started:  # no helper thread: read each block here
            for t, (i, j) in enumerate(spans):
                read(t, 0)
                fn(i, j, block(t, 0))
            return
        helpers = [_Job(work, mf) for _ in range(n_workers - 1)]
        try:
            work()
        finally:
            stop.set()
            for _ in helpers:
                ready.put(None)  # e.g. after Ctrl-C in the caller's wait
            for job in helpers + [reading]:
                job.result()
        if failed:
            raise failed[0]


class _ModelFile:
    """An open model file: prefix and header read and validated, small arrays
    read, large ones (:class:`_FileArray`) read on demand; the CRC of every
    piece read is kept so that :meth:`verify` reads only what nobody read.
    Use as a context manager (``close`` joins helper threads, closes the file)."""

    def __init__(self, path, eager_bytes=None, whole_bytes=None):
        eager_bytes = _EAGER_BYTES if eager_bytes is None else eager_bytes
        whole_bytes = _WHOLE_BYTES if whole_bytes is None else whole_bytes
        self.path = os.fspath(path)
        self.where = repr(self.path)
        self._lock = threading.Lock()
        self._jobs = set()
        self._crcs = {}  # start -> (end, crc32) of the pieces read so far
        self._verified = False
        self._closing = False  # tells helper threads to stop
        self._check_crc = False  # errors before the header is read are not checksum errors
        self.stored_crc = None
        self.fd, self.size = open_regular(self.path)
        try:
            self._open(eager_bytes, whole_bytes)
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
        bytearray); the file ending early raises ModelFileError.  Their
        CRC32 is recorded (unless ``checksum=False``: then the caller must
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

    def _open(self, eager_bytes, whole_bytes):
        where, size = self.where, self.size
        if size < _PREFIX.size + 4:
            head = bytearray(size)
            head = head[:pread_into(self.fd, head, 0)]
            if head[:4] == MAGIC[:4] or not head:
                raise ModelFileError(f"{where} is truncated ({size} bytes): not a complete "
                                     "cfm model file")
            raise ModelFileError(f"{where} is not a cfm model file (too short, bad magic)")
        magic, major, minor, hlen = _PREFIX.unpack(bytes(self.read(0, _PREFIX.size)))
        if magic != MAGIC:
            raise ModelFileError(f"{where} is not a cfm model file (bad magic bytes "
                                 f"{magic!r})")
        if major > FORMAT_VERSION[0]:
            raise ModelFileError(
                f"{where} uses cfm model format {major}.{minor}, newer than the "
                f"{FORMAT_VERSION[0]}.x this version of cfm reads; upgrade cfm to load it")
        if major < 1:
            raise ModelFileError(f"{where} has unknown model format version {major}.{minor}")
        tail = bytearray(4)
        if pread_into(self.fd, tail, size - 4) < 4:
            raise SizeError(f"{where} is truncated (it changed while loading)")
        (self.stored_crc,) = struct.unpack("<I", tail)
        if _PREFIX.size + hlen + 4 > size:
            raise SizeError(f"{where} is truncated: header needs {hlen} bytes but the file "
                             f"has {size}")
        self._check_crc = True
        if hlen > MAX_HEADER_BYTES:
            raise ModelFileError(f"{where}: header of {hlen} bytes (cfm reads at most "
                                 f"{MAX_HEADER_BYTES >> 20} MiB)")
        whole = None
        if size <= whole_bytes:
            # small file: verified before anything in it is parsed
            whole = self.read(_PREFIX.size, size - 4 - _PREFIX.size)
            self.verify()
            hbytes = memoryview(whole)[:hlen]
        else:
            hbytes = self.read(_PREFIX.size, hlen)
        data_start = _PREFIX.size + hlen
        self.header = parse_header(hbytes, where)
        entries = check_header(self.header, where, data_start, size)
        self.arrays = {}
        for name, dt, shape, start, nbytes in entries:
            if nbytes == 0:
                arr = np.zeros(shape, dtype=dt)
            elif whole is not None:  # copied: small arrays do not pin the file's bytes
                arr = np.frombuffer(whole, dtype=np.uint8, count=nbytes,
                                    offset=start - _PREFIX.size).view(dt).reshape(shape).copy()
            elif nbytes <= eager_bytes:
                buf = self.read(start, nbytes, out=np.empty(nbytes, dtype=np.uint8))
                arr = buf.view(dt).reshape(shape)
            else:
                arr = _FileArray(self, start, dt, shape)
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
        """Raise ModelFileError unless the file's checksum matches."""
        if self._verified:
            return
        crc = self._crc_total()
        if crc != self.stored_crc:
            raise ChecksumError(f"{self.where} is corrupted (checksum mismatch: stored "
                                 f"{self.stored_crc:#010x}, computed {crc:#010x})")
        self._verified = True

    def corruption(self, exc):
        """The checksum error to report instead of ``exc`` (an error found
        while reading the header or building the model) when the file's
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


def peek_header(path):
    """The JSON header of a cfm model file, validated but read without the
    arrays (the checksum, which covers the whole file, is checked by
    :func:`load`); None when the file is not a readable cfm model file (then
    :func:`load` says why)."""
    try:
        fd, size = open_regular(path)
    except (OSError, ModelFileError):
        return None
    try:
        prefix = bytearray(_PREFIX.size)
        if pread_into(fd, prefix, 0) < _PREFIX.size:
            return None
        magic, major, _, hlen = _PREFIX.unpack(bytes(prefix))
        if magic != MAGIC or major != FORMAT_VERSION[0] or hlen > MAX_HEADER_BYTES \
                or _PREFIX.size + hlen + 4 > size:
            return None
        hbytes = bytearray(hlen)
        if pread_into(fd, hbytes, _PREFIX.size) < hlen:
            return None
        where = repr(os.fspath(path))
        header = parse_header(hbytes, where)
        check_header(header, where, _PREFIX.size + hlen, size)
        return header
    except (OSError, ModelFileError):
        return None
    finally:
        os.close(fd)

