"""xLearn TXT model files: bounded reading and parsing (see cfm/xlearn.py).

Returns the bias, linear weights and factors of an xLearn LR / FM / FFM
model as written by xLearn's ``setTXTModel``; trusts nothing in the file.
"""
import os
import re

import numpy as np

from ._files import open_regular
from ._model_file import MAGIC
from ._state.base import MAX_FACTORS
from .exceptions import ModelFileError

# ids of at most 18 digits (int64); longer ones are malformed lines
_KEY = re.compile(r"(bias|i_(\d{1,18})|v_(\d{1,18})(?:_(\d{1,18}))?)\Z")


# Largest xLearn TXT model read (bytes): about 10**8 parameters.
MAX_TXT_BYTES = 4 << 30

_CHUNK = 32 << 20
# bytes.translate table: the key characters of "i_<j>:", "v_<j>:" and
# "v_<j>_<f>:" become blanks, leaving the ids as numbers
_KEY_BLANKS = bytes.maketrans(b"iv_:", b"    ")


def _numbers(buf):
    """All whitespace-separated numbers of ``buf`` (bytes) with the key
    characters blanked, parsed in C block by block; None if any token is not a
    number."""
    import warnings

    parts = []
    pos = 0
    n = len(buf)
    while pos < n:
        end = min(n, pos + _CHUNK)
        if end < n:
            nl = buf.rfind(b"\n", pos, end)
            end = nl + 1 if nl >= pos else buf.find(b"\n", end) + 1 or n
        chunk = buf[pos:end].translate(_KEY_BLANKS)
        pos = end
        if not chunk.strip():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                parts.append(np.fromstring(chunk, sep=" "))
            except (ValueError, DeprecationWarning):
                return None
    return np.concatenate(parts) if parts else np.zeros(0)


def _n_lines(buf):
    return buf.count(b"\n") + (not buf.endswith(b"\n"))


def _parse_fast(raw):
    """Vectorised parse of a well-formed TXT model in xLearn's own order
    (bias, i_0..i_{n-1}, then v_ lines by feature and field).  Returns None
    on anything unexpected: the line-by-line parser then finds and reports
    the problem, or reads an unusual but valid file."""
    first_nl = raw.find(b"\n")
    first = raw[:first_nl if first_nl >= 0 else len(raw)].strip()
    if not first.startswith(b"bias:"):
        return None
    try:
        bias = float(first[5:])
    except ValueError:
        return None
    if first_nl < 0:
        return None
    body = raw[first_nl + 1:]
    vpos = body.find(b"v_")
    if vpos > 0 and body[vpos - 1:vpos] != b"\n":
        return None
    lin_part = body if vpos < 0 else body[:vpos]
    vec_part = b"" if vpos < 0 else body[vpos:]
    if b"bias" in lin_part or b"v" in lin_part:
        return None
    lin = _numbers(lin_part)
    if lin is None or lin.size == 0 or lin.size % 2:
        return None
    lin = lin.reshape(-1, 2)
    n = lin.shape[0]
    if not np.array_equal(lin[:, 0], np.arange(n)) or not all(
            lin_part.count(t) == n for t in (b"i_", b":")) or _n_lines(lin_part) != n:
        return None
    w = lin[:, 1]
    if not (np.isfinite(w).all() and np.isfinite(bias)):
        return None
    if not vec_part:
        return bias, w, None, "lr"
    line_end = vec_part.find(b"\n")
    first_v = vec_part[:line_end if line_end >= 0 else len(vec_part)]
    key, sep, vals = first_v.partition(b":")
    if not sep or not _KEY.match(key.decode("ascii", "replace")):
        return None
    is_ffm = key.count(b"_") == 2
    k = len(vals.split())
    if not 1 <= k <= MAX_FACTORS:
        return None
    cols = (2 if is_ffm else 1) + k
    arr = _numbers(vec_part)
    if arr is None or arr.size % cols:
        return None
    arr = arr.reshape(-1, cols)
    m = arr.shape[0]
    if not all(vec_part.count(t) == m for t in (b"v_", b":")) or _n_lines(vec_part) != m \
            or b"i_" in vec_part or b"bias" in vec_part:
        return None
    if not np.isfinite(arr).all():
        return None
    if is_ffm:
        if arr.shape[0] % n:
            return None
        nf = arr.shape[0] // n
        if not (np.array_equal(arr[:, 0], np.repeat(np.arange(n), nf))
                and np.array_equal(arr[:, 1], np.tile(np.arange(nf), n))):
            return None
        return bias, w, arr[:, 2:].reshape(n, nf, k), "ffm"
    if arr.shape[0] != n or not np.array_equal(arr[:, 0], np.arange(n)):
        return None
    return bias, w, arr[:, 1:], "fm"


def _read_bounded(where):
    """The bytes of a regular file, read up to the size it had when opened
    (a FIFO or a device is refused before reading)."""
    try:
        fd, size = open_regular(where, "an xLearn TXT model")
    except IsADirectoryError:
        raise ModelFileError(f"{where!r} is a directory, not an xLearn TXT model") from None
    with os.fdopen(fd, "rb") as f:
        if size > MAX_TXT_BYTES:
            raise ModelFileError(f"{where!r}: {size} bytes is larger than any xLearn TXT model "
                                 f"cfm reads ({MAX_TXT_BYTES >> 30} GiB)")
        return f.read(size)  # at most the size it had when opened


def _parse_txt(path):
    """Parse an xLearn TXT model; return (bias, w, V, kind) with V of shape
    (n, k) for FM, (n, n_fields, k) for FFM, None for LR."""
    where = os.fspath(path)
    raw = _read_bounded(where)
    if raw.startswith(MAGIC):
        raise ModelFileError(f"{where!r} is a cfm model file, not an xLearn TXT model: "
                             "load it with cfm.load")
    if b"\0" not in raw[:4096]:
        fast = _parse_fast(raw)
        if fast is not None:
            return fast
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        text = None
    if text is None or "\0" in text:
        raise ModelFileError(
            f"{where!r} is not an xLearn TXT model (binary content; xLearn's binary model "
            "cannot be read: save a text model with setTXTModel(path) in Python or -t "
            "<file> on xlearn_train's command line)")
    if not text.strip():
        raise ModelFileError(f"{where!r} is empty: not an xLearn TXT model")
    return _parse_lines(text, where)


def _parse_lines(text, where):
    """Line-by-line parse with precise errors (file:line)."""
    bias = None
    lin = {}
    fm = {}
    ffm = {}
    k = None

    def bad(lineno, msg):
        return ModelFileError(f"{where}:{lineno}: {msg}")

    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        key, sep, rest = line.partition(":")
        m = _KEY.match(key.strip())
        if not sep or m is None:
            if bias is None:
                raise ModelFileError(
                    f"{where!r} is not an xLearn TXT model (line {lineno} is {line[:40]!r}; "
                    "expected 'bias: <value>', 'i_<feature>: <value>', 'v_<feature>: ...' or "
                    "'v_<feature>_<field>: ...')")
            raise bad(lineno, f"malformed line {line[:60]!r} (expected 'bias: <value>', "
                              "'i_<feature>: <value>', 'v_<feature>: <k values>' or "
                              "'v_<feature>_<field>: <k values>')")
        try:
            vals = [float(t) for t in rest.split()]
        except ValueError:
            raise bad(lineno, f"malformed number in {line[:60]!r}") from None
        if not all(np.isfinite(vals)):
            raise bad(lineno, f"non-finite parameter in {line[:60]!r}")
        name = m.group(1)
        if name == "bias":
            if len(vals) != 1:
                raise bad(lineno, f"'bias' needs one value, got {len(vals)}")
            if bias is not None:
                raise bad(lineno, "duplicate 'bias' line")
            bias = vals[0]
            continue
        if bias is None:
            raise ModelFileError(f"{where!r} is not an xLearn TXT model (line {lineno}: "
                                 "the first line must be 'bias: <value>')")
        if m.group(2) is not None:  # i_j
            if len(vals) != 1:
                raise bad(lineno, f"{name!r} needs one value, got {len(vals)}")
            j = int(m.group(2))
            if j in lin:
                raise bad(lineno, f"duplicate line for {name!r}")
            lin[j] = vals[0]
            continue
        if not vals:
            raise bad(lineno, f"{name!r} has no values")
        if k is None:
            k = len(vals)
            if k > MAX_FACTORS:
                raise bad(lineno, f"{k} factors: cfm supports at most {MAX_FACTORS}")
        elif len(vals) != k:
            raise bad(lineno, f"{name!r} has {len(vals)} values, earlier vectors have {k}")
        j = int(m.group(3))
        if m.group(4) is None:
            if ffm:
                raise bad(lineno, f"FM vector {name!r} in an FFM model (v_<feature>_<field> "
                                  "lines before)")
            if j in fm:
                raise bad(lineno, f"duplicate line for {name!r}")
            fm[j] = vals
        else:
            if fm:
                raise bad(lineno, f"FFM vector {name!r} in an FM model (v_<feature> lines "
                                  "before)")
            key2 = (j, int(m.group(4)))
            if key2 in ffm:
                raise bad(lineno, f"duplicate line for {name!r}")
            ffm[key2] = vals
    if bias is None:
        raise ModelFileError(f"{where!r} is not an xLearn TXT model (no 'bias:' line)")
    if not lin:
        raise ModelFileError(f"{where!r}: no linear weights ('i_<feature>:' lines)")
    # every id below the largest needs its own line: sizes are bounded by the
    # number of lines, and the first missing id is found without a range of ids
    n = max(lin) + 1
    if len(lin) != n:
        raise ModelFileError(f"{where!r}: incomplete model, no line for "
                             f"'i_{_first_missing(lin)}' ({len(lin)} linear weights, but "
                             f"feature ids up to {n - 1})")
    w = np.array([lin[j] for j in range(n)], dtype=np.float64)
    if fm:
        if max(fm) >= n or len(fm) != n:
            bad_j = max(fm) if max(fm) >= n else _first_missing(fm)
            raise ModelFileError(f"{where!r}: factor vectors do not match the {n} linear "
                                 f"weights (feature {bad_j})")
        V = np.array([fm[j] for j in range(n)], dtype=np.float64).reshape(n, k)
        return bias, w, V, "fm"
    if ffm:
        nf = max(f for _, f in ffm) + 1
        if max(j for j, _ in ffm) >= n or len(ffm) != n * nf:
            if max(j for j, _ in ffm) >= n:
                what = "vectors for features without a linear weight"
            else:
                j, f = _first_missing(ffm, nf)
                what = f"no line for 'v_{j}_{f}'"
            raise ModelFileError(f"{where!r}: incomplete FFM model ({n} features, {nf} "
                                 f"fields): {what}")
        V = np.array([ffm[(j, f)] for j in range(n) for f in range(nf)],
                     dtype=np.float64).reshape(n, nf, k)
        return bias, w, V, "ffm"
    return bias, w, None, "lr"


def _first_missing(keys, n_fields=None):
    """The smallest id (or (feature, field) pair, in row-major order over
    ``n_fields`` fields) absent from ``keys``; time and memory in
    O(len(keys)), whatever the ids' values."""
    if n_fields is None:
        ids = sorted(keys)
    else:
        ids = sorted(j * n_fields + f for j, f in keys)
    expect = 0
    for i in ids:
        if i != expect:
            break
        expect += 1
    return expect if n_fields is None else divmod(expect, n_fields)
