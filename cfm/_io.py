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

Loading checks magic, version, size, checksum, dtypes, shapes and offsets
before building anything, and never unpickles: an untrusted file can fail to
load but cannot run code.  Readers accept any minor version of their major
version (unknown header keys are ignored); a newer major version is refused.
"""
import json
import os
import struct
import zlib

import numpy as np

from .exceptions import ModelFileError

MAGIC = b"\x89CFM\r\n\x1a\n"
FORMAT_VERSION = (1, 0)
_PREFIX = struct.Struct("<8sHHI")
_ALLOWED_DTYPES = {"<f2", "<f4", "<f8", "<i8", "<i4", "<u8"}


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
    if spec["dtype"] == "object":
        return np.array(spec["values"], dtype=object)
    dt = np.dtype(spec["dtype"])
    if dt.kind not in "biufU":
        raise ModelFileError(f"unsupported label dtype {spec['dtype']!r} in model file")
    return np.array(spec["values"], dtype=dt)


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
    crc = 0
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
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
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _map_file(path):
    """The bytes of a file as a private (copy-on-write) memory map, or a
    bytes object when it cannot be mapped (empty file, special file).

    A map costs no read copy, no zeroed buffer and no page faults on fresh
    anonymous memory (which dominate loading a large model in a VM)."""
    import mmap

    with open(path, "rb") as f:
        try:
            size = os.fstat(f.fileno()).st_size
            if size > 0:
                return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        except (OSError, ValueError):
            pass
        return f.read()


def peek_header(path):
    """The JSON header of a cfm model file, read without the arrays and not
    yet verified (the checksum covers the whole file: :func:`load` checks it);
    None when the file does not look like a readable cfm model file (then
    :func:`load` says why)."""
    try:
        with open(os.fspath(path), "rb") as f:
            prefix = f.read(_PREFIX.size)
            if len(prefix) < _PREFIX.size:
                return None
            magic, major, _, hlen = _PREFIX.unpack(prefix)
            if magic != MAGIC or major != FORMAT_VERSION[0] or hlen > (64 << 20):
                return None
            header = json.loads(f.read(hlen).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return header if isinstance(header, dict) and header.get("format") == "cfm-model" else None


def read_model_file(path):
    """Parse and verify a model file; return (header, {name: array})."""
    header, arrays, _, verify = _read_model_file(path)
    verify()
    return header, arrays


class _Checksum:
    """CRC32 of a buffer computed in a background thread (zlib releases the
    GIL), so that loading a large model checks its file while it copies the
    tables."""

    def __init__(self, data):
        import threading

        self._data, self.value = data, None
        self._t = threading.Thread(target=self._run, daemon=True, name="cfm-crc")
        self._t.start()

    def _run(self):
        try:
            self.value = zlib.crc32(self._data)
        finally:
            self._data.release()

    def result(self):
        self._t.join()
        return self.value


def _read_model_file(path):
    """read_model_file, with the checksum still being computed: returns
    (header, arrays, buffer, verify), where ``buffer`` is what the large
    arrays are views of (a memory map that :func:`load` closes once the
    model holds its copies) and ``verify()`` raises ModelFileError on a
    checksum mismatch.  Nothing but sizes has been checked before verify():
    the arrays must only be copied and validated until then."""
    path = os.fspath(path)
    buf = _map_file(path)
    where = f"{path!r}"
    if len(buf) < _PREFIX.size + 4:
        if buf[:4] == MAGIC[:4] or not buf:
            raise ModelFileError(f"{where} is truncated ({len(buf)} bytes): not a complete "
                                 "cfm model file")
        raise ModelFileError(f"{where} is not a cfm model file (too short, bad magic)")
    magic, major, minor, hlen = _PREFIX.unpack_from(buf)
    if magic != MAGIC:
        raise ModelFileError(f"{where} is not a cfm model file (bad magic bytes "
                             f"{bytes(buf[:8])!r})")
    if major > FORMAT_VERSION[0]:
        raise ModelFileError(
            f"{where} uses cfm model format {major}.{minor}, newer than the {FORMAT_VERSION[0]}.x "
            "this version of cfm reads; upgrade cfm to load it")
    if major < 1:
        raise ModelFileError(f"{where} has unknown model format version {major}.{minor}")
    if _PREFIX.size + hlen + 4 > len(buf):
        raise ModelFileError(f"{where} is truncated: header needs {hlen} bytes but the file "
                             f"has {len(buf)}")
    (stored_crc,) = struct.unpack_from("<I", buf, len(buf) - 4)
    crc_job = _Checksum(memoryview(buf)[: len(buf) - 4])
    try:
        header = json.loads(buf[_PREFIX.size:_PREFIX.size + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        if crc_job.result() != stored_crc:
            raise ModelFileError(f"{where} is corrupted or truncated (checksum mismatch)") from exc
        raise ModelFileError(f"{where} has an unreadable header: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != "cfm-model":
        raise ModelFileError(f"{where} is not a cfm model file (bad header)")
    data_start = _PREFIX.size + hlen
    arrays = {}
    needed = data_start
    for e in header.get("arrays", []):
        try:
            name, dt, shape = e["name"], e["dtype"], tuple(int(s) for s in e["shape"])
            off, nbytes = int(e["offset"]), int(e["nbytes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{where} has a malformed array entry: {e!r}") from exc
        if dt not in _ALLOWED_DTYPES:
            raise ModelFileError(f"{where}: array {name!r} has unsupported dtype {dt!r}")
        if any(s < 0 for s in shape) or int(np.prod(shape)) * np.dtype(dt).itemsize != nbytes:
            raise ModelFileError(f"{where}: array {name!r} shape {shape} does not match its size")
        start = data_start + off
        needed = max(needed, start + nbytes)
        arrays[name] = (start, dt, shape, nbytes)
    if needed + 4 > len(buf):
        raise ModelFileError(f"{where} is truncated: {len(buf)} bytes, arrays need {needed + 4}")

    def verify():
        crc = crc_job.result()
        if crc != stored_crc:
            raise ModelFileError(f"{where} is corrupted (checksum mismatch: stored "
                                 f"{stored_crc:#010x}, computed {crc:#010x})")

    out = {}
    for name, (start, dt, shape, nbytes) in arrays.items():
        arr = np.frombuffer(buf, dtype=dt, count=int(np.prod(shape)), offset=start).reshape(shape)
        # Small arrays are copied (so that a kept small array does not pin the
        # whole file in memory); large ones are returned as writable
        # (copy-on-write) views of the map, which the estimators copy into
        # their tables anyway.
        out[name] = arr.copy() if nbytes < (1 << 20) else arr
    return header, out, buf, verify


def load(path, scoring_only=False):
    """Load a model saved with ``model.save(path)``.

    Returns a fitted estimator of the class that was saved.  Raises
    :class:`cfm.ModelFileError` (a ValueError) when the file is truncated,
    corrupted, not a cfm model, or written by a newer major format version.

    ``scoring_only=True`` (what ``cfm predict`` uses) leaves out what only
    training needs: an FFM's factor table is then kept without its AdaGrad
    accumulators, about 20% smaller, and scoring reads correspondingly less
    memory (same predictions).  Such a model predicts but cannot be trained
    further or saved; load it again without the option for that.
    """
    header, arrays, buf, verify = _read_model_file(path)
    try:
        try:
            model = _build(path, header, arrays, scoring_only)
        except BaseException:
            verify()  # a corrupted file is reported as such
            raise
        verify()
        return model
    finally:
        # The model holds copies: unmap the file now rather than at garbage
        # collection (a view still alive would keep the map open instead).
        arrays.clear()
        close = getattr(buf, "close", None)
        if close is not None:
            try:
                close()
            except BufferError:
                pass


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
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelFileError(f"{os.fspath(path)!r} is inconsistent: {exc}") from exc
    return model
