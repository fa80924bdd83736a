"""Read-ahead of the container reader (cfm/_container.py): large arrays
read a block at a time by a helper thread while worker threads checksum and
copy the blocks read (:class:`FileArray`); the CRC32s of pieces read in any
order and in several threads, combined in file order; every helper thread
registered with its open file, which joins it on close (:class:`Job`)."""
import queue
import threading

import numpy as np

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


class Job(threading.Thread):
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


class FileArray:
    """A large array of a container file, read a block of rows at a time.

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
        for a in range(0, self.nbytes, self._mf.block_bytes):
            b = min(self.nbytes, a + self._mf.block_bytes)
            self._mf.read(self._start + a, b - a, out=flat[a:b])
        return out

    def for_each_block(self, fn, n_workers=2):
        n = self.shape[0] if self.shape else 1
        row = self.nbytes // n if n else 0
        if row == 0:
            fn(0, n, np.empty(self.shape, dtype=self.dtype))
            return
        per = max(1, self._mf.block_bytes // row)
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

        reading = Job(reader, mf)
        if not reading.started:  # no helper thread: read each block here
            for t, (i, j) in enumerate(spans):
                read(t, 0)
                fn(i, j, block(t, 0))
            return
        helpers = [Job(work, mf) for _ in range(n_workers - 1)]
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
