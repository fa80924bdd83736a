"""cfm's model file format ("cfm-model": versioned binary, no pickle) on the
binary container of cfm/_container.py: the format's constants, its header
schema, and the bytes-level API (write / open / read / describe a model
file).  It knows no estimator: cfm._persist turns an estimator into a header and
arrays and back.

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
* every byte read is checksummed; a file of up to 16 MiB (``cfm._container._WHOLE_BYTES``) is read
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
import hashlib

import numpy as np

from ._container import (FileArray, Format, SizeError, check_arrays, is_int, peek, read, short,
                         write)
from ._files import pread_into
from .exceptions import ModelFileError

__all__ = ["MAGIC", "FORMAT_VERSION", "RowBlocks", "write_model_file", "open_model_file",
           "read_model_file", "describe_model_file", "peek_header"]

MAGIC = b"\x89CFM\r\n\x1a\n"
FORMAT_VERSION = (1, 0)
ALLOWED_DTYPES = {"<f2", "<f4", "<f8", "<i8", "<i4", "<u8", "|u1"}  # |u1: text (encoder)
MODEL_FORMAT = Format(MAGIC, FORMAT_VERSION, kind="cfm-model", name="cfm model file",
                      version_name="cfm model format", upgrade="upgrade cfm to load it",
                      error=ModelFileError)


# --------------------------------------------------------------------------
# Header schema
# --------------------------------------------------------------------------

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
    return (isinstance(st, dict) and is_int(st.get("state"), 0, 2**128 - 1)
            and is_int(st.get("inc"), 0, 2**128 - 1)
            and is_int(v.get("has_uint32"), 0, 1) and is_int(v.get("uinteger"), 0, 2**32 - 1))


def _check_labels(spec, task):
    """None when a header's ``classes`` entry is valid for ``task``, else why not."""
    if task not in ("binary", "multiclass"):
        return "a regression model holds no class labels"
    if not (isinstance(spec, dict) and isinstance(spec.get("dtype"), str)
            and isinstance(spec.get("values"), list)):
        return "expected {'dtype': ..., 'values': [...]}"
    values = spec["values"]
    if task == "binary" and len(values) != 2:
        return f"a binary model has 2 class labels, not {len(values)}"
    if task == "multiclass" and not 3 <= len(values) <= MAX_CLASSES:
        return f"a multiclass model has 3 to {MAX_CLASSES} class labels, not {len(values)}"
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
    if len(values) == 2 and values[0] == values[1]:
        return f"the two class labels are equal ({short(values[0])})"
    if len(values) > 2 and len(set(values)) != len(values):
        return "class labels are not unique"
    if spec["dtype"] == "object":
        return None
    try:
        dt = np.dtype(spec["dtype"])
    except (TypeError, ValueError):
        return f"unknown label dtype {short(spec['dtype'])}"
    if dt.kind not in kinds or dt.kind not in "biufU" or (dt.kind != "U" and dt.itemsize > 8):
        return f"label dtype {short(spec['dtype'])} does not fit labels {short(values)}"
    if dt.kind == "U":
        return None
    try:
        arr = np.array(values, dtype=dt)
    except (OverflowError, ValueError, TypeError):
        return f"labels {short(values)} do not fit dtype {dt.str}"
    if arr.tolist() != values:
        return f"labels {short(values)} change when stored as {dt.str}"
    return None


# Model kinds; the ones with fields need "n_fields"
KINDS = ("fm", "ffm", "deepfm", "fm_softmax", "ffm_softmax", "fwfm", "rank")
# kinds of multiclass models (task "multiclass")
_MULTICLASS_KINDS = ("fm_softmax", "ffm_softmax")
# most class labels of a multiclass model (cfm._state.softmax.MAX_CLASSES)
MAX_CLASSES = 1 << 16
_FIELD_KINDS = ("ffm", "deepfm", "fwfm", "ffm_softmax")
# Tasks ("ranking": cfm.FMRanker, kind "rank")
TASKS = ("regression", "binary", "multiclass", "ranking")

# (key, required, test, what it must be); "n_fields" is required for _FIELD_KINDS
_HEADER_SCHEMA = (
    ("format", True, lambda v: v == "cfm-model", "'cfm-model'"),
    ("kind", True, lambda v: v in KINDS, "one of " + ", ".join(map(repr, KINDS))),
    ("estimator", True, lambda v: isinstance(v, str) and 0 < len(v) <= 200, "a class name"),
    ("task", True, lambda v: v in TASKS, "one of " + ", ".join(map(repr, TASKS))),
    ("solver", True, lambda v: isinstance(v, str) and len(v) <= 64, "a solver name"),
    ("dtype", True, lambda v: v in ("float16", "float32", "float64"), "a float dtype"),
    ("normalize", True, lambda v: isinstance(v, bool), "true or false"),
    ("n_features", True, lambda v: is_int(v, 1, 2**62), "an integer >= 1"),
    ("n_factors", True, lambda v: is_int(v, 0, 4096), "an integer in [0, 4096]"),
    ("n_fields", False, lambda v: is_int(v, 1, 2**31 - 1), "an integer >= 1"),
    ("n_classes", False, lambda v: is_int(v, 3, MAX_CLASSES), "an integer in [3, 65536]"),
    ("class_weight", False, lambda v: isinstance(v, list) and len(v) <= MAX_CLASSES and all(
        _is_num(w) and 0 <= w < float("inf") for w in v),
     "a list of finite numbers >= 0 (one per class)"),
    ("params", False, _flat_dict, "an object of numbers, strings, booleans and nulls"),
    ("history", False, lambda v: isinstance(v, list) and all(_flat_dict(e) for e in v),
     "a list of objects of numbers"),
    ("n_epochs_", False, is_int, "an integer >= 0"),
    ("best_params", False, lambda v: _check_best_params(v),
     "an object with learning_rate (> 0 or null), normalize (true or false), n_epochs"),
    ("best_epoch_", False, is_int, "an integer >= 0"),
    ("input_zero_based", False, lambda v: isinstance(v, bool), "true or false"),
    ("xlearn_fm_norm", False, lambda v: isinstance(v, bool), "true or false"),
    ("entry_fields", False, lambda v: isinstance(v, bool), "true or false"),
    ("cfm_version", False, lambda v: isinstance(v, str) and len(v) <= 200, "a version string"),
    ("rng_state", False, _check_rng_state, "a PCG64 generator state"),
    ("mcmc", False, lambda v: isinstance(v, dict) and isinstance(v.get("clip"), list)
     and len(v["clip"]) == 2 and all(_is_num(c) for c in v["clip"])
     and _is_num(v.get("alpha", 1.0)), "{'clip': [low, high], 'alpha': number}"),
    ("encoder", False, lambda v: isinstance(v, dict), "an object (cfm/_encoder_file.py)"),
    ("arrays", True, lambda v: isinstance(v, list) and len(v) <= 1000, "a list of arrays"),
)



def _check_best_params(v):
    """The settings a fit used (estimator.best_params_): what a warm start or
    partial_fit of the loaded model trains with, so checked like parameters."""
    if not _flat_dict(v):
        return False
    lr = v.get("learning_rate")
    return ((lr is None or (_is_num(lr) and 0 < lr < float("inf")))
            and isinstance(v.get("normalize", False), bool)
            and is_int(v.get("n_epochs", 0), 0, 2**31 - 1))


# class labels in a header: {"dtype": numpy str or "object", "values": [...]}
def _encode_labels(classes):
    arr = np.asarray(classes)
    if arr.dtype == object:
        vals = [c.item() if isinstance(c, np.generic) else c for c in arr]
        if not all(isinstance(v, (str, int, float, bool)) for v in vals):
            raise ValueError("classes_ must be strings or numbers to be saved")
        return {"dtype": "object", "values": vals}
    return {"dtype": arr.dtype.str, "values": arr.tolist()}


def _decode_labels(spec):
    """Class labels from a header entry that cfm._model_file.check_header accepted."""
    values = spec["values"]
    if spec["dtype"] == "object":
        return np.array(values, dtype=object)
    dt = np.dtype(spec["dtype"])
    if dt.kind == "U":  # as wide as the labels, whatever width the file declares
        dt = np.dtype(f"<U{max([1] + [len(v) for v in values])}")
    return np.array(values, dtype=dt)


def check_header(header, where, data_start, size):
    """Validate a parsed model header; return its arrays as
    [(name, dtype, shape, start, nbytes, entry)] (start: offset in the file)."""
    def bad(msg):
        return ModelFileError(f"{where} has an invalid header: {msg}")

    for key, required, test, what in _HEADER_SCHEMA:
        if key not in header:
            if required or (key == "n_fields" and header.get("kind") in _FIELD_KINDS):
                raise bad(f"no {key!r} entry")
            continue
        if not test(header[key]):
            raise bad(f"{key!r} must be {what}, got {short(header[key])}")
    task = header["task"]
    if "classes" in header:
        why = _check_labels(header["classes"], task)
        if why is not None:
            raise bad(f"'classes': {why}")
    elif task in ("binary", "multiclass"):
        raise bad(f"a {task} model needs its 'classes' (labels)")
    if (task == "multiclass") != (header["kind"] in _MULTICLASS_KINDS) or (
            task == "multiclass" and header.get("n_classes") != len(header["classes"]["values"])):
        raise bad(f"task {short(task)} does not fit kind {short(header['kind'])} with "
                  f"n_classes {short(header.get('n_classes'))}")
    if "class_weight" in header and len(header["class_weight"]) != len(
            header.get("classes", {}).get("values", ())):
        raise bad("'class_weight' needs one weight per class")
    n_jobs = header.get("params", {}).get("n_jobs")
    # any non-zero integer, as the estimator accepts (capped to the usable
    # cores when used; scoring from a file never uses it)
    if n_jobs is not None and not (is_int(n_jobs, -2**200, 2**200) and n_jobs != 0):
        raise bad(f"'params': n_jobs must be null or a non-zero integer, got "
                  f"{short(n_jobs)}")
    names = header.get("feature_names")
    if names is not None and not (isinstance(names, list) and len(names) == header["n_features"]
                                  and all(isinstance(c, str) for c in names)):
        raise bad(f"'feature_names' must be {header['n_features']} strings")
    return check_arrays(header["arrays"], where, error=ModelFileError, base=data_start,
                        data_start=data_start, size=size, trailer=4, dtypes=ALLOWED_DTYPES,
                        truncated=lambda name, need: SizeError(
                            f"{where} is truncated: {size} bytes, array {name!r} needs {need}"))


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------

def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    raise TypeError(f"not serialisable: {type(obj).__name__}")


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


def write_model_file(path, header, arrays):
    """Write a model file: ``header`` (the model's entries; "format" and
    "arrays" are added here) and ``arrays`` ({name: ndarray or RowBlocks}),
    atomically, with its CRC32 (see the module docstring for the layout).
    A header above 64 MiB raises ValueError."""
    out = {}
    for name, arr in arrays.items():
        if not isinstance(arr, RowBlocks):
            arr = np.asarray(arr)
            if arr.ndim >= 2 and not arr.flags.c_contiguous:
                arr = RowBlocks.of(arr)  # e.g. a table with padded rows: no full copy
            else:
                arr = np.ascontiguousarray(arr)
                arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        out[name] = arr
    write(path, header, out, fmt=MODEL_FORMAT, json_default=_json_default,
          too_large=f"history_ has {len(header.get('history') or [])} entries; clear history_ "
                    "before saving")


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------

def open_model_file(path, eager_bytes=None, whole_bytes=None):
    """An open model file (cfm._container.Container; a context manager):
    ``.header`` (schema-checked), ``.arrays`` ({name: ndarray or a lazy
    FileArray}), ``.verify()``, ``.corruption(exc)``, ``.path``."""
    return read(path, fmt=MODEL_FORMAT, validate=check_header, eager_bytes=eager_bytes,
                whole_bytes=whole_bytes)


def read_model_file(path):
    """Parse and verify a model file; return (header, {name: array})."""
    with open_model_file(path) as mf:
        try:
            arrays = {k: v.read() if isinstance(v, FileArray) else v
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
    with open_model_file(path, eager_bytes=0, whole_bytes=0) as mf:
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
        major, minor = mf.version
        shapes = {k: (tuple(v.shape), np.dtype(v.dtype).name) for k, v in mf.arrays.items()}
        facts = {"format_version": f"{major}.{minor}", "file_bytes": mf.size,
                 "crc32": f"{mf.stored_crc:08x}", "sha256": sha.hexdigest()}
        return mf.header, shapes, facts


def peek_header(path):
    """The JSON header of a cfm model file, validated but read without the
    arrays (the checksum, which covers the whole file, is checked by
    ``load``); None when the file is not a readable cfm model file (then
    ``load`` says why)."""
    return peek(path, fmt=MODEL_FORMAT, validate=check_header)
