"""Column-level encoding for :class:`cfm.FieldEncoder` (vectorized with pandas / NumPy).

Every function here works on ONE column and on its distinct values: a column
is factorized once (pandas' hash table, in C), the few distinct values are
turned into their canonical text, and the per-row ids are a single take
through the table of the distinct values.  Nothing loops over rows in Python.

A categorical value is identified by its canonical text, as it would be
written in a CSV file: strings as they are, integers (and floats holding an
integer) in decimal without a fraction (``1005``, ``1005.0`` and ``"1005"``
are one value), other floats as Python's shortest round-trip repr, booleans
as ``True`` / ``False``.  So a model trained on a DataFrame whose column was
parsed as integers scores the same rows read back as text (``cfm predict
--csv``) or as floats (a chunk with a missing value), identically.

Hashing (``n_buckets``) uses 64-bit FNV-1a of the canonical text's UTF-8
bytes: defined here, not by a library whose algorithm could change, so that
a saved model hashes the same values to the same buckets in any cfm release.
"""
import numpy as np
import pandas as pd  # FieldEncoder imports this module only when it is used

MISSING, OTHER = 0, 1  # ids of a categorical column: missing, rare or unseen; values from 2
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def factorize(col):
    """``(codes, uniques)`` of one column (a pandas Series or 1-D array):
    codes in [0, len(uniques)) per row, -1 for a missing value (None, NaN,
    NA, NaT)."""
    if isinstance(col, pd.Series) and isinstance(col.dtype, pd.CategoricalDtype):
        return (np.asarray(col.cat.codes, dtype=np.intp),
                np.asarray(col.cat.categories, dtype=object))
    try:
        codes, uniques = pd.factorize(col, use_na_sentinel=True)
    except TypeError as exc:  # e.g. an unhashable dict in an object column
        name = getattr(col, "name", None)
        raise TypeError(f"column {name!r}: argument must be a string or a number ({exc})"
                        ) from None
    return np.asarray(codes, dtype=np.intp), np.asarray(uniques)


def _float_text(values):
    """Canonical text of float values (finite, integral ones without a fraction)."""
    out = np.empty(values.shape[0], dtype=object)
    integral = np.isfinite(values) & (values == np.round(values)) & (np.abs(values) < 2.0**63)
    out[integral] = values[integral].astype(np.int64).astype(str)
    rest = np.flatnonzero(~integral)
    out[rest] = [repr(float(v)) for v in values[rest]]
    return out


def canonical_text(uniques, column):
    """The canonical text (object array of str) of a column's distinct values;
    TypeError naming ``column`` for a value that is no string, number or bool."""
    u = np.asarray(uniques)
    if u.dtype.kind == "b":
        return np.where(u, "True", "False").astype(object)
    if u.dtype.kind in "iu":
        return u.astype(str).astype(object)
    if u.dtype.kind == "f":
        return _float_text(u.astype(np.float64))
    if u.dtype.kind == "U":
        return u.astype(object)
    if u.dtype.kind != "O":
        raise TypeError(f"column {column!r}: values of dtype {u.dtype} cannot be categories; "
                        "convert them to strings or numbers first")
    if pd.api.types.infer_dtype(u, skipna=False) == "string":
        return u
    out = np.empty(u.shape[0], dtype=object)
    for i, v in enumerate(u):
        if isinstance(v, str):
            out[i] = v
        elif isinstance(v, (bool, np.bool_)):
            out[i] = "True" if v else "False"
        elif isinstance(v, (int, np.integer)):
            out[i] = str(int(v))
        elif isinstance(v, (float, np.floating)):
            out[i] = _float_text(np.array([float(v)]))[0]
        elif isinstance(v, bytes):
            out[i] = v.decode("utf-8", errors="surrogateescape")
        else:
            raise TypeError(f"column {column!r}: value {v!r} of type {type(v).__name__} cannot "
                            "be a category (strings, numbers and booleans can)")
    return out


def fnv1a(text):
    """64-bit FNV-1a of the UTF-8 bytes of each string (object array of str),
    as uint64: one vectorized step per byte position j over the strings
    longer than j (sorted by length), never a loop over strings: O(total bytes) work,
    O(longest string) Python steps."""
    n = len(text)
    out = np.empty(n, dtype=np.uint64)
    if n == 0:
        return out
    joined = "".join(text)
    if joined.isascii():  # one encode; byte lengths are character lengths
        lengths = np.fromiter(map(len, text), dtype=np.int64, count=n)
        data = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
    else:
        raw = [t.encode("utf-8", errors="surrogateescape") for t in text]
        lengths = np.fromiter(map(len, raw), dtype=np.int64, count=n)
        data = np.frombuffer(b"".join(raw), dtype=np.uint8)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    order = np.argsort(lengths, kind="stable")
    lens, pos = lengths[order], starts[order]
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    k = 0
    with np.errstate(over="ignore"):
        for j in range(int(lens[-1])):  # byte j of every string longer than j
            if lens[k] <= j:
                k = int(np.searchsorted(lens, j, side="right"))
            h[k:] = (h[k:] ^ data[pos[k:] + j].astype(np.uint64)) * _FNV_PRIME
    out[order] = h
    return out


def fit_vocabulary(codes, uniques, column, threshold):
    """Sorted canonical texts (object array) of the values of a column that
    occur at least ``threshold`` times (distinct values with the same
    canonical text are counted together)."""
    counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
    text = canonical_text(uniques, column)
    if len(text) == 0:
        return np.empty(0, dtype=object)
    tcodes, tuniq = pd.factorize(text)
    tcounts = np.bincount(tcodes, weights=counts, minlength=len(tuniq))
    vocab = np.asarray(tuniq, dtype=object)[tcounts >= threshold]
    return np.sort(vocab)


def category_ids(codes, uniques, column, *, index=None, n_buckets=None):
    """Per-row ids of a categorical column: MISSING, OTHER (rare or unseen)
    or 2 + position in the vocabulary ``index`` (a pandas Index); with
    ``n_buckets``: 1 + FNV-1a(text) % n_buckets."""
    text = canonical_text(uniques, column)
    if n_buckets is not None:
        uid = (fnv1a(text) % np.uint64(n_buckets)).astype(np.int64) + 1
    else:
        pos = index.get_indexer(text) if len(text) else np.empty(0, dtype=np.intp)
        uid = np.where(pos >= 0, pos + 2, OTHER).astype(np.int64)
    lut = np.append(uid, MISSING)  # code -1 (missing) takes the last entry
    return lut[codes]


def to_float(col, column):
    """A numeric column as float64 (NaN for a missing value); ValueError
    naming ``column`` and the first value that is not a number."""
    if isinstance(col, pd.Series):
        dt = col.dtype
        if pd.api.types.is_bool_dtype(dt) or pd.api.types.is_numeric_dtype(dt):
            if isinstance(dt, pd.CategoricalDtype):
                col = col.astype(object)
            else:
                return col.to_numpy(dtype=np.float64, na_value=np.nan)
        if pd.api.types.is_datetime64_any_dtype(dt) or pd.api.types.is_timedelta64_dtype(dt):
            raise TypeError(f"column {column!r} has dtype {dt}: convert it to numbers first")
    else:
        arr = np.asarray(col)
        if arr.dtype.kind in "biuf":
            return arr.astype(np.float64)
        col = pd.Series(arr, dtype=object)
    num = pd.to_numeric(col, errors="coerce")
    out = np.asarray(num, dtype=np.float64)
    bad = np.isnan(out) & ~np.asarray(pd.isna(col))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        value = np.asarray(col, dtype=object)[row]
        exc = ValueError(f"column {column!r} is numeric (as fitted) but row {row} holds "
                         f"{value!r}, which is not a number")
        exc.row = row  # cfm predict --csv reports the line
        exc.detail = f"column {column!r} is numeric (as fitted) but holds {value!r}"
        raise exc
    return out
