"""CRC32 arithmetic and helper threads of the container reader
(cfm/_container.py): CRCs of pieces read in any order and in several threads
are combined in file order, and every helper thread is registered with its
open file, which joins it on close."""
import threading

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
