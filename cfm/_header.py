"""The header of a cfm model file: format constants and the schema every
header is validated against before anything in it is used (see cfm/_io.py
for the file layout).  Pure Python over the parsed JSON: no size taken from
a header is trusted until :func:`check_header` has bounded it by the file's
size."""
import json
import reprlib
import struct

import numpy as np

from .exceptions import ModelFileError

MAGIC = b"\x89CFM\r\n\x1a\n"
FORMAT_VERSION = (1, 0)
PREFIX = struct.Struct("<8sHHI")
ALLOWED_DTYPES = {"<f2", "<f4", "<f8", "<i8", "<i4", "<u8"}
# Largest header read (and written): JSON objects take up to ~20x their text.
MAX_HEADER_BYTES = 64 << 20
_MAX_INT = 2**63 - 1


class SizeError(ModelFileError):
    """The file is shorter than its header says (reported as truncated, not
    as a checksum mismatch)."""


class ChecksumError(ModelFileError):
    """The file's CRC32 does not match its content."""


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, 40, 40, 40
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = 6


def _short(v):
    """A short repr for messages, whatever the size or nesting of ``v``."""
    r = _REPR.repr(v)
    return r if len(r) <= 80 else r[:77] + "..."


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


def parse_header(hbytes, where):
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


def check_header(header, where, data_start, size):
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
    # any non-zero integer, as the estimator accepts (capped to the usable
    # cores when used; scoring from a file never uses it)
    if n_jobs is not None and not (_is_int(n_jobs, -2**200, 2**200) and n_jobs != 0):
        raise bad(f"'params': n_jobs must be null or a non-zero integer, got "
                  f"{_short(n_jobs)}")
    names = header.get("feature_names")
    if names is not None and not (isinstance(names, list) and len(names) == header["n_features"]
                                  and all(isinstance(c, str) for c in names)):
        raise bad(f"'feature_names' must be {header['n_features']} strings")
    out, seen = [], set()
    for e in header["arrays"]:
        if not (isinstance(e, dict) and isinstance(e.get("name"), str) and len(e["name"]) <= 100
                and isinstance(e.get("dtype"), str) and e["dtype"] in ALLOWED_DTYPES
                and isinstance(e.get("shape"), list)
                and len(e["shape"]) <= 8 and all(_is_int(s, 0, 2**62) for s in e["shape"])
                and _is_int(e.get("offset")) and _is_int(e.get("nbytes"))):
            raise bad(f"malformed array entry {_short(e)}")
        name, shape = e["name"], tuple(e["shape"])
        if name in seen:
            raise bad(f"array {name!r} is listed twice")
        seen.add(name)
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
        start = data_start + e["offset"]
        if start + e["nbytes"] + 4 > size:
            raise SizeError(f"{where} is truncated: {size} bytes, array {name!r} needs "
                            f"{start + e['nbytes'] + 4}")
        out.append((name, e["dtype"], shape, start, e["nbytes"]))
    end = data_start
    for name, _, _, start, nbytes in sorted(out, key=lambda a: (a[3], a[4])):
        if nbytes and start < end:
            raise bad(f"array {name!r} overlaps another array")
        end = max(end, start + nbytes)
    return out
