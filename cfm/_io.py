"""cfm's model file format (versioned binary, no pickle).

Layout (all integers little-endian)::

    offset 0   8 bytes   magic  b"\\x89CFM\\r\\n\\x1a\\n"
    offset 8   uint16    format major version
    offset 10  uint16    format minor version
    offset 12  uint32    header length H
    offset 16  H bytes   header: UTF-8 JSON (model kind, task, estimator class,
                         dtype, shapes, hyper-parameters, labels, and for each
                         array its name, dtype, shape, offset and size)
    ...        raw little-endian arrays, each at a 64-byte aligned offset
    last 4     uint32    CRC32 of every byte before it

Loading never unpickles and trusts nothing in the file: an untrusted file can
fail to load but cannot run code, crash the process or make it allocate more
than the file can justify.  Precisely:

* only a regular file is read (a FIFO or a device such as ``/dev/zero`` is
  refused before reading), with ``read`` calls, never a memory map: a file
  truncated or rewritten by another process while it loads gives an error,
  never a crash (SIGBUS);
* every byte read is checksummed; a file of up to ``_WHOLE_BYTES`` is read
  and its checksum verified before its header is parsed; a larger one has
  its header validated first and its tables are copied a block at a time
  while the next block is read and checksummed, and ``load`` returns only
  once the whole file's checksum matched;
* the header is validated against a schema before use (types, ranges, sizes
  of at most 64 MiB, JSON nesting, array offsets inside the data area and not
  overlapping, sizes matching shapes, class labels unique and of the task's
  kind); every size is bounded by what the file holds;
* every failure is :class:`cfm.ModelFileError` (a ValueError), or an OSError
  for a real I/O error; a damaged file is reported as corrupted (checksum
  mismatch) whenever its checksum does not match.

Readers accept any minor version of their major version (unknown header keys
are ignored); a newer major version is refused.

Saving writes through :func:`cfm._files.atomic_output`: a temporary file next
to the target, renamed onto it when complete (symbolic links are followed; a
device or FIFO is written in place, never replaced).
"""
import json
import os
import struct
import threading
import zlib

import numpy as np

from ._files import atomic_output, open_regular, pread_into
from .exceptions import ModelFileError

MAGIC = b"\x89CFM\r\n\x1a\n"
FORMAT_VERSION = (1, 0)
_PREFIX = struct.Struct("<8sHHI")
_ALLOWED_DTYPES = {"<f2", "<f4", "<f8", "<i8", "<i4", "<u8"}
# Largest header read (and written): JSON objects take up to ~20x their text.
MAX_HEADER_BYTES = 64 << 20
# Files up to this size are read whole and verified before the header is parsed.
_WHOLE_BYTES = 16 << 20
# Arrays up to this size are read whole; larger ones a block at a time.
_EAGER_BYTES = 16 << 20
# Block of a large array read (and checksummed) while the previous one is copied.
_BLOCK_BYTES = 32 << 20
_MAX_INT = 2**63 - 1


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    raise TypeError(f"not serialisable: {type(obj).__name__}")


def _jsonable_params(params):
    out = {}
    for k, v in params.items():
        if v is None or isinstance(v, (bool, int, float, str, np.integer, np.floating, np.bool_)):
            out[k] = v
        else:  # e.g. a RandomState instance: not reproducible from a file
            out[k] = None
    return out


def _encode_labels(classes):
    arr = np.asarray(classes)
    if arr.dtype == object:
        vals = [c.item() if isinstance(c, np.generic) else c for c in arr]
        if not all(isinstance(v, (str, int, float, bool)) for v in vals):
            raise ValueError("classes_ must be strings or numbers to be saved")
        return {"dtype": "object", "values": vals}
    return {"dtype": arr.dtype.str, "values": arr.tolist()}


def _decode_labels(spec):
    """Class labels from a header entry that :func:`_check_header` accepted."""
    values = spec["values"]
    if spec["dtype"] == "object":
        return np.array(values, dtype=object)
    dt = np.dtype(spec["dtype"])
    if dt.kind == "U":  # as wide as the labels, whatever width the file declares
        dt = np.dtype(f"<U{max([1] + [len(v) for v in values])}")
    return np.array(values, dtype=dt)


class RowBlocks:
    """An array to save that is written a block of rows at a time, so that
    saving a large table that is not stored as the file lays it out (padded
    rows, packed records) needs a block of temporary memory, not a copy of
    the table: ``block(i, j)`` returns rows i:j as an array."""

    def __init__(self, shape, dtype, block, block_bytes=64 << 20):
        self.shape, self.dtype, self._block = tuple(shape), np.dtype(dtype), block
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        row = max(1, self.nbytes // max(1, self.shape[0])) if self.shape else 1
        self.rows_per_block = max(1, block_bytes // row)

    @classmethod
    def of(cls, arr, **kw):
        return cls(arr.shape, arr.dtype, lambda i, j: arr[i:j], **kw)

    def blocks(self):
        """Contiguous little-endian blocks, in order."""
        n = self.shape[0] if self.shape else 0
        le = self.dtype.newbyteorder("<")
        for i in range(0, n, self.rows_per_block):
            b = np.ascontiguousarray(self._block(i, min(n, i + self.rows_per_block)))
            yield b.astype(le, copy=False)


def save_model(model, path):
    """Write a fitted estimator to ``path`` (see module docstring for the format)."""
    model._check_fitted()
    arrays, header = model._export_state()
    header = dict(header)
    header["format"] = "cfm-model"
    entries = []
    offset = 0
    blobs = []
    for name, arr in arrays.items():
        if not isinstance(arr, RowBlocks):
            arr = np.asarray(arr)
            if arr.ndim >= 2 and not arr.flags.c_contiguous:
                arr = RowBlocks.of(arr)  # e.g. a table with padded rows: no full copy
            else:
                arr = np.ascontiguousarray(arr)
                arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        entries.append({"name": name, "dtype": arr.dtype.newbyteorder("<").str,
                        "shape": list(arr.shape), "offset": offset, "nbytes": arr.nbytes})
        blobs.append(arr)
        offset += -(-arr.nbytes // 64) * 64
    header["arrays"] = entries
    hbytes = json.dumps(header, default=_json_default, sort_keys=True).encode("utf-8")
    data_start = -(-(_PREFIX.size + len(hbytes)) // 64) * 64
    hbytes += b" " * (data_start - _PREFIX.size - len(hbytes))
    if len(hbytes) > MAX_HEADER_BYTES:
        raise ValueError(f"cannot save to {os.fspath(path)}: the model's header would take "
                         f"{len(hbytes) / 2**20:.0f} MiB (more than {MAX_HEADER_BYTES >> 20} "
                         f"MiB; history_ has {len(getattr(model, 'history_', []))} entries): "
                         "clear history_ before saving")
    crc = 0
    with atomic_output(path) as f:
        def put(b):
            nonlocal crc
            crc = zlib.crc32(b, crc)
            f.write(b)

        put(_PREFIX.pack(MAGIC, FORMAT_VERSION[0], FORMAT_VERSION[1], len(hbytes)))
        put(hbytes)
        for entry, arr in zip(entries, blobs):
            if isinstance(arr, RowBlocks):
                for block in arr.blocks():
                    put(memoryview(block).cast("B"))
            elif arr.nbytes:
                put(memoryview(arr).cast("B"))
            pad = -(-arr.nbytes // 64) * 64 - arr.nbytes
            if pad:
                put(b"\0" * pad)
        f.write(struct.pack("<I", crc))


# --------------------------------------------------------------------------
# CRC32 of concatenated pieces (zlib's crc32_combine, which Python's zlib
# does not expose): the pieces of a file are checksummed as they are read,
# in any order and in several threads, and combined in file order.
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# Header validation
# --------------------------------------------------------------------------

def _short(v):
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _is_int(v, lo=0, hi=_MAX_INT):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_scalar(v):
    return v is None or isinstance(v, (bool, int, float, str))


def _flat_dict(v):
    return isinstance(v, dict) and all(isinstance(k, str) and _is_scalar(x) for k, x in v.items())


def _check_rng_state(v):
    if not (isinstance(v, dict) and v.get("bit_generator") == "PCG64"):
        return False
    st = v.get("state")
    return (isinstance(st, dict) and _is_int(st.get("state"), 0, 2**128 - 1)
            and _is_int(st.get("inc"), 0, 2**128 - 1)
            and _is_int(v.get("has_uint32"), 0, 1) and _is_int(v.get("uinteger"), 0, 2**32 - 1))


def _check_labels(spec, task):
    """None when a header's ``classes`` entry is valid for ``task``, else why not."""
    if task != "binary":
        return "a regression model holds no class labels"
    if not (isinstance(spec, dict) and isinstance(spec.get("dtype"), str)
            and isinstance(spec.get("values"), list)):
        return "expected {'dtype': ..., 'values': [...]}"
    values = spec["values"]
    if len(values) != 2:
        return f"a binary model has 2 class labels, not {len(values)}"
    if all(isinstance(v, str) for v in values):
        kinds = "U"
        if any(len(v) > 4096 for v in values):
            return "class labels longer than 4096 characters"
    elif all(_is_num(v) or isinstance(v, bool) for v in values):
        kinds = "biuf"
        if any(isinstance(v, float) and not np.isfinite(v) for v in values):
            return "non-finite class label"
    else:
        return "class labels must be all strings or all numbers"
    if values[0] == values[1]:
        return f"the two class labels are equal ({_short(values[0])})"
    if spec["dtype"] == "object":
        return None
    try:
        dt = np.dtype(spec["dtype"])
    except (TypeError, ValueError):
        return f"unknown label dtype {_short(spec['dtype'])}"
    if dt.kind not in kinds or dt.kind not in "biufU" or (dt.kind != "U" and dt.itemsize > 8):
        return f"label dtype {_short(spec['dtype'])} does not fit labels {_short(values)}"
    if dt.kind == "U":
        return None
    try:
        arr = np.array(values, dtype=dt)
    except (OverflowError, ValueError, TypeError):
        return f"labels {_short(values)} do not fit dtype {dt.str}"
    if arr.tolist() != values:
        return f"labels {_short(values)} change when stored as {dt.str}"
    return None


# (key, required, test, what it must be); "n_fields" is required for FFM models
_HEADER_SCHEMA = (
    ("format", True, lambda v: v == "cfm-model", "'cfm-model'"),
    ("kind", True, lambda v: v in ("fm", "ffm"), "'fm' or 'ffm'"),
    ("estimator", True, lambda v: isinstance(v, str) and 0 < len(v) <= 200, "a class name"),
    ("task", True, lambda v: v in ("regression", "binary"), "'regression' or 'binary'"),
    ("solver", True, lambda v: isinstance(v, str) and len(v) <= 64, "a solver name"),
    ("dtype", True, lambda v: v in ("float16", "float32", "float64"), "a float dtype"),
    ("normalize", True, lambda v: isinstance(v, bool), "true or false"),
    ("n_features", True, lambda v: _is_int(v, 1, 2**62), "an integer >= 1"),
    ("n_factors", True, lambda v: _is_int(v, 0, 4096), "an integer in [0, 4096]"),
    ("n_fields", False, lambda v: _is_int(v, 1, 2**31 - 1), "an integer >= 1"),
    ("params", False, _flat_dict, "an object of numbers, strings, booleans and nulls"),
    ("history", False, lambda v: isinstance(v, list) and all(_flat_dict(e) for e in v),
     "a list of objects of numbers"),
    ("n_epochs_", False, _is_int, "an integer >= 0"),
    ("best_epoch_", False, _is_int, "an integer >= 0"),
    ("input_zero_based", False, lambda v: isinstance(v, bool), "true or false"),
    ("xlearn_fm_norm", False, lambda v: isinstance(v, bool), "true or false"),
    ("cfm_version", False, lambda v: isinstance(v, str) and len(v) <= 200, "a version string"),
    ("rng_state", False, _check_rng_state, "a PCG64 generator state"),
    ("mcmc", False, lambda v: isinstance(v, dict) and isinstance(v.get("clip"), list)
     and len(v["clip"]) == 2 and all(_is_num(c) for c in v["clip"])
     and _is_num(v.get("alpha", 1.0)), "{'clip': [low, high], 'alpha': number}"),
    ("arrays", True, lambda v: isinstance(v, list) and len(v) <= 1000, "a list of arrays"),
)


def _parse_header(hbytes, where):
    """The header's JSON object (any JSON failure is a ModelFileError)."""
    try:
        header = json.loads(bytes(hbytes).decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ModelFileError(f"{where} has an unreadable header (not UTF-8: {exc})") from None
    except RecursionError:
        raise ModelFileError(f"{where} has an unreadable header (JSON nested too deeply)") \
            from None
    except ValueError as exc:  # JSONDecodeError, integers of too many digits
        raise ModelFileError(f"{where} has an unreadable header ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != "cfm-model":
        raise ModelFileError(f"{where} is not a cfm model file (bad header)")
    return header


def _check_header(header, where, data_start, size):
    """Validate a parsed header; return its arrays as
    [(name, dtype, shape, start, nbytes)] (start: offset in the file)."""
    def bad(msg):
        return ModelFileError(f"{where} has an invalid header: {msg}")

    for key, required, test, what in _HEADER_SCHEMA:
        if key not in header:
            if required or (key == "n_fields" and header.get("kind") == "ffm"):
                raise bad(f"no {key!r} entry")
            continue
        if not test(header[key]):
            raise bad(f"{key!r} must be {what}, got {_short(header[key])}")
    task = header["task"]
    if "classes" in header:
        why = _check_labels(header["classes"], task)
        if why is not None:
            raise bad(f"'classes': {why}")
    elif task == "binary":
        raise bad("a binary model needs its 'classes' (labels)")
    n_jobs = header.get("params", {}).get("n_jobs")
    if n_jobs is not None and not (_is_int(n_jobs, -2**31, 2**31 - 1) and n_jobs != 0):
        raise bad(f"'params': n_jobs must be null or a non-zero 32-bit integer, got "
                  f"{_short(n_jobs)}")
    names = header.get("feature_names")
    if names is not None and not (isinstance(names, list) and len(names) == header["n_features"]
                                  and all(isinstance(c, str) for c in names)):
        raise bad(f"'feature_names' must be {header['n_features']} strings")
    out, seen = [], set()
    for e in header["arrays"]:
        if not (isinstance(e, dict) and isinstance(e.get("name"), str) and len(e["name"]) <= 100
                and isinstance(e.get("dtype"), str) and e["dtype"] in _ALLOWED_DTYPES
                and isinstance(e.get("shape"), list)
                and len(e["shape"]) <= 8 and all(_is_int(s, 0, 2**62) for s in e["shape"])
                and _is_int(e.get("offset")) and _is_int(e.get("nbytes"))):
            raise bad(f"malformed array entry {_short(e)}")
        name, shape = e["name"], tuple(e["shape"])
        if name in seen:
            raise bad(f"array {name!r} is listed twice")
        seen.add(name)
        itemsize = np.dtype(e["dtype"]).itemsize
        count = 1
        for s in shape:
            count *= s
        if count * itemsize != e["nbytes"]:
            raise bad(f"array {name!r} of shape {list(shape)} does not hold {e['nbytes']} bytes")
        start = data_start + e["offset"]
        if start + e["nbytes"] + 4 > size:
            raise _SizeError(f"{where} is truncated: {size} bytes, array {name!r} needs "
                             f"{start + e['nbytes'] + 4}")
        out.append((name, e["dtype"], shape, start, e["nbytes"]))
    end = data_start
    for name, _, _, start, nbytes in sorted(out, key=lambda a: (a[3], a[4])):
        if nbytes and start < end:
            raise bad(f"array {name!r} overlaps another array")
        end = max(end, start + nbytes)
    return out


class _SizeError(ModelFileError):
    """The file is shorter than its header says (reported as truncated, not
    as a checksum mismatch)."""


class _ChecksumError(ModelFileError):
    """The file's CRC32 does not match its content."""


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------

class _Job(threading.Thread):
    """A helper thread running ``fn()`` once; ``result()`` joins it and
    re-raises what it raised."""

    def __init__(self, fn, owner):
        super().__init__(daemon=True, name="cfm-read")
        self._fn, self._owner, self.error = fn, owner, None
        with owner._lock:
            owner._jobs.add(self)
        self.start()

    def run(self):
        try:
            self._fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            self.error = exc

    def result(self):
        self.join()
        with self._owner._lock:
            self._owner._jobs.discard(self)
        if self.error is not None:
            raise self.error


class _FileArray:
    """A large array of a model file, read a block of rows at a time.

    ``row_blocks()`` yields ``(i, j, rows i:j)``: each block is read (and
    checksummed) by a helper thread while the caller copies the previous one
    into its tables, so that loading needs two blocks of memory besides the
    model, not a second copy of the table.  ``read()`` returns the whole
    array.  Shapes and dtypes are those of the validated header."""

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

    def row_blocks(self, block_bytes=None):
        block_bytes = _BLOCK_BYTES if block_bytes is None else block_bytes
        n = self.shape[0] if self.shape else 1
        row = self.nbytes // n if n else 0
        if row == 0:
            yield 0, n, np.empty(self.shape, dtype=self.dtype)
            return
        per = max(1, block_bytes // row)
        spans = [(i, min(n, i + per)) for i in range(0, n, per)]
        bufs = [np.empty(per * row, dtype=np.uint8) for _ in range(min(2, len(spans)))]
        mf = self._mf

        def fetch(t):
            i, j = spans[t]
            mf.read(self._start + i * row, (j - i) * row, out=bufs[t % 2][:(j - i) * row])

        job = _Job(lambda: fetch(0), mf)
        try:
            for t, (i, j) in enumerate(spans):
                job.result()
                # read the next block into the other buffer while this one is used
                job = _Job(lambda t=t: fetch(t + 1), mf) if t + 1 < len(spans) else None
                yield i, j, bufs[t % 2][:(j - i) * row].view(self.dtype).reshape(
                    (j - i,) + self.shape[1:])
        finally:
            if job is not None:
                try:
                    job.result()
                except BaseException:  # noqa: BLE001 - the consumer's error wins
                    pass


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
        with self._lock:
            jobs = list(self._jobs)
        for job in jobs:  # at most one block read each: bounded
            job.join()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    # ---------------------------------------------------------- reading
    def read(self, start, n, out=None):
        """``n`` bytes at ``start`` (into ``out`` when given, else a new
        bytearray); the file ending early raises ModelFileError."""
        buf = bytearray(n) if out is None else out
        got = pread_into(self.fd, buf, start) if n else 0
        if got < n:
            raise _SizeError(f"{self.where} is truncated: it ended at byte {start + got} while "
                             f"{start + n} bytes were expected (was it changed while loading?)")
        crc = zlib.crc32(buf)
        with self._lock:
            if self._crcs.get(start, (start + n, crc)) != (start + n, crc) \
                    and self._crcs[start][0] == start + n:
                raise ModelFileError(f"{self.where} changed while it was being read")
            self._crcs[start] = (start + n, crc)
        return buf

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
            raise _SizeError(f"{where} is truncated (it changed while loading)")
        (self.stored_crc,) = struct.unpack("<I", tail)
        if _PREFIX.size + hlen + 4 > size:
            raise _SizeError(f"{where} is truncated: header needs {hlen} bytes but the file "
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
        self.header = _parse_header(hbytes, where)
        entries = _check_header(self.header, where, data_start, size)
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
                    raise _SizeError(f"{self.where} is truncated (it changed while loading)")
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
            raise _ChecksumError(f"{self.where} is corrupted (checksum mismatch: stored "
                                 f"{self.stored_crc:#010x}, computed {crc:#010x})")
        self._verified = True

    def corruption(self, exc):
        """The checksum error to report instead of ``exc`` (an error found
        while reading the header or building the model) when the file's
        checksum does not match, else None."""
        if not self._check_crc or self._verified or self.fd is None \
                or isinstance(exc, (_SizeError, _ChecksumError)):
            return None
        try:
            self.verify()
        except ModelFileError as err:
            return None if isinstance(err, _SizeError) else err
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
        header = _parse_header(hbytes, where)
        _check_header(header, where, _PREFIX.size + hlen, size)
        return header
    except (OSError, ModelFileError):
        return None
    finally:
        os.close(fd)


def read_model_file(path):
    """Parse and verify a model file; return (header, {name: array})."""
    with _ModelFile(path) as mf:
        try:
            arrays = {k: v.read() if isinstance(v, _FileArray) else v
                      for k, v in mf.arrays.items()}
            mf.verify()
        except ModelFileError as exc:
            err = mf.corruption(exc)
            if err is not None:
                raise err from exc
            raise
        return mf.header, arrays


def describe_model_file(path):
    """What ``cfm info`` shows of a model file, read in bounded memory and
    verified: ``(header, {name: (shape, dtype)}, facts)`` with ``facts`` the
    format version, file size, stored CRC32 and SHA-256."""
    import hashlib

    with _ModelFile(path, eager_bytes=0, whole_bytes=0) as mf:
        mf.verify()
        sha = hashlib.sha256()
        buf = np.empty(min(8 << 20, max(1, mf.size)), dtype=np.uint8)
        pos = 0
        while pos < mf.size:
            got = pread_into(mf.fd, buf, pos)
            if got == 0:
                raise _SizeError(f"{mf.where} is truncated (it changed while being read)")
            sha.update(buf[:got])
            pos += got
        prefix = bytearray(_PREFIX.size)
        pread_into(mf.fd, prefix, 0)
        major, minor = _PREFIX.unpack(bytes(prefix))[1:3]
        shapes = {k: (tuple(v.shape), np.dtype(v.dtype).name) for k, v in mf.arrays.items()}
        facts = {"format_version": f"{major}.{minor}", "file_bytes": mf.size,
                 "crc32": f"{mf.stored_crc:08x}", "sha256": sha.hexdigest()}
        return mf.header, shapes, facts


def load(path, scoring_only=False):
    """Load a model saved with ``model.save(path)``.

    Returns a fitted estimator of the class that was saved.  Raises
    :class:`cfm.ModelFileError` (a ValueError) when the file is truncated,
    corrupted, not a cfm model (or not a regular file), invalid, or written
    by a newer major format version; OSError for I/O errors (a missing file,
    a directory, an unreadable disk).  See the module docstring for what is
    checked.

    ``scoring_only=True`` (what ``cfm predict`` uses) leaves out what only
    training needs: an FFM's factor table is then kept without its AdaGrad
    accumulators, about 20% smaller, and scoring reads correspondingly less
    memory (same predictions).  Such a model predicts but cannot be trained
    further or saved; load it again without the option for that.
    """
    with _ModelFile(path) as mf:
        try:
            model = _build(path, mf.header, mf.arrays, scoring_only)
            mf.verify()
        except ModelFileError as exc:
            err = mf.corruption(exc)  # a corrupted file is reported as such
            if err is not None:
                raise err from exc
            raise
        finally:
            mf.arrays.clear()
        return model


def _build(path, header, arrays, scoring_only):
    from . import models

    cls_name = header.get("estimator")
    registry = {c.__name__: c for c in (models.FMRegressor, models.FMClassifier)}
    try:
        from . import ffm  # noqa: F401  (registered when available)

        registry.update(getattr(ffm, "MODEL_CLASSES", {}))
    except ImportError:
        pass
    if cls_name not in registry:
        raise ModelFileError(f"{os.fspath(path)!r} holds an unknown model class {cls_name!r}")
    cls = registry[cls_name]
    model = cls.__new__(cls)
    if scoring_only:
        model._scoring_only = True  # read by _import_state; guards training/saving
    try:
        model._import_state(header, arrays)
    except ModelFileError:
        raise
    except (LookupError, TypeError, ValueError, ArithmeticError) as exc:
        raise ModelFileError(f"{os.fspath(path)!r} is inconsistent: {exc}") from exc
    return model
