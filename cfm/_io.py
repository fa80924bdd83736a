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
* every byte read is checksummed; a file of up to 16 MiB (``_reader._WHOLE_BYTES``) is read
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
import zlib

import numpy as np

from ._files import atomic_output, pread_into
from ._header import FORMAT_VERSION, MAGIC, MAX_HEADER_BYTES, PREFIX as _PREFIX, SizeError
from ._reader import _FileArray, _ModelFile, crc32_combine, peek_header
from .exceptions import ModelFileError

__all__ = ["FORMAT_VERSION", "MAGIC", "save_model", "write_model_file", "read_model_file",
           "describe_model_file", "peek_header", "crc32_combine"]



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
    write_model_file(path, header, arrays)


def write_model_file(path, header, arrays):
    """Write a model file: ``header`` (the model's JSON entries; "format" and
    "arrays" are added here) and ``arrays`` {name: ndarray or RowBlocks}, in
    this order.  Atomic, CRC32 at the end; a header over MAX_HEADER_BYTES is
    refused."""
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
                         f"MiB; history_ has {len(header.get('history', []))} entries): "
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
                raise SizeError(f"{mf.where} is truncated (it changed while being read)")
            sha.update(buf[:got])
            pos += got
        prefix = bytearray(_PREFIX.size)
        pread_into(mf.fd, prefix, 0)
        major, minor = _PREFIX.unpack(bytes(prefix))[1:3]
        shapes = {k: (tuple(v.shape), np.dtype(v.dtype).name) for k, v in mf.arrays.items()}
        facts = {"format_version": f"{major}.{minor}", "file_bytes": mf.size,
                 "crc32": f"{mf.stored_crc:08x}", "sha256": sha.hexdigest()}
        return mf.header, shapes, facts
