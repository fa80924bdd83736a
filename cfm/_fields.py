"""Fields of field-aware models: checks, per-entry fields, and fields inferred from X.

A field-aware model (FFM, DeepFM, FwFM) needs the field of each input value.
cfm takes it in one of two forms:

* **per column** (``fields[j]`` is the field of column j): a fixed table, the
  fast path, what ``cfm.load_libffm`` returns by default;
* **per entry** (``fields[p]`` is the field of stored entry p of X as a CSR
  matrix, in its stored order): libffm's and xLearn's definition, where each
  ``field:feature:value`` token names its own field, so that hashed data may
  put one feature id under several fields.  ``cfm.load_libffm(path,
  entry_fields=True)`` returns X with the file's entries as written
  (duplicates kept) and such an array.

:func:`field_form` tells them apart (:class:`EntryFields` marks the per-entry
form explicitly, for the rare X whose number of columns equals its number of
stored entries).  :func:`infer_fields` is the documented rule the field-aware
estimators use when no fields are given at all.
"""
import numpy as np

from ._lazy import sparse as sp
from ._validation import check_X

__all__ = ["EntryFields", "infer_fields", "MAX_INFERRED_FIELDS", "ModelFields", "field_count"]

#: Most fields :func:`infer_fields` makes (a factor table holds
#: n_features x n_fields vectors).
MAX_INFERRED_FIELDS = 64

_LIMIT = 2**31 - 1


class EntryFields(np.ndarray):
    """An int32 array marked as one field id per stored entry of X.

    ``cfm.EntryFields(f)`` views ``f`` so; needed only when X has as many
    columns as stored entries (a plain array of that length is read as one
    field per column).  ``cfm.load_libffm(..., entry_fields=True)`` returns
    one.
    """

    def __new__(cls, fields):
        return np.ascontiguousarray(_as_ids(fields, "fields"), dtype=np.int32).view(cls)


def _as_ids(fields, name):
    """``fields`` as a 1-D int64 array of integers (ValueError otherwise)."""
    arr = np.asarray(fields)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of field ids, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not (np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr))
                and np.all(arr == np.round(arr))):
            raise ValueError(f"{name} must be finite integers, got dtype {arr.dtype}")
        if np.abs(arr).max() >= _LIMIT:
            raise ValueError(f"{name}: field ids must be >= 0 and < 2**31 - 1")
    return arr.astype(np.int64)


def field_form(fields, n_features, nnz):
    """"column" or "entry": how ``fields`` maps to X (n_features columns,
    nnz stored entries), by its length (an :class:`EntryFields` is always
    "entry"); a ValueError saying both lengths otherwise."""
    if isinstance(fields, EntryFields):
        if len(fields) != nnz:
            raise ValueError(f"per-entry fields must have one id per stored entry of X "
                             f"({nnz}), got {len(fields)}")
        return "entry"
    n = len(fields) if np.ndim(fields) == 1 else -1
    if n == n_features:
        return "column"
    if n == nnz:
        return "entry"
    shape = np.shape(fields)
    raise ValueError(f"fields must have one entry per column: expected shape ({n_features},), "
                     f"or one per stored entry of X: ({nnz},); got shape {shape}")


def check_entry_fields(fields, nnz, n_fields=None):
    """Per-entry field ids as int32 (>= 0; < ``n_fields`` when given)."""
    arr = _as_ids(fields, "fields")
    if arr.shape[0] != nnz:
        raise ValueError(f"per-entry fields must have one id per stored entry of X ({nnz}), "
                         f"got {arr.shape[0]}")
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0:
            p = int(np.argmin(arr))
            raise ValueError(f"fields[{p}] = {lo}: field ids must be >= 0")
        if hi >= _LIMIT:
            raise ValueError("field ids must be < 2**31 - 1")
        if n_fields is not None and hi >= n_fields:
            p = int(np.argmax(arr))
            raise ValueError(f"fields[{p}] = {hi}, but the model has {n_fields} fields "
                             f"(0..{n_fields - 1})")
    return np.ascontiguousarray(arr, dtype=np.int32)


def column_fields_of_entries(indices, entry_fields, n_features):
    """The first field each column has among the entries (0 where a column
    has none): the per-column fields of a model fitted on per-entry fields."""
    out = np.zeros(n_features, dtype=np.int32)
    if len(indices):
        cols = np.asarray(indices, dtype=np.int64)
        # the first occurrence of each column wins: write in reverse order
        out[cols[::-1]] = np.asarray(entry_fields)[::-1]
    return out


def infer_fields(X, max_fields=MAX_INFERRED_FIELDS):
    """Fields for X when none are given: one field per one-hot block.

    Columns are cut, left to right, into the longest runs no two columns of
    which share a row (the blocks a one-hot encoder writes, e.g.
    ``pandas.get_dummies`` or ``OneHotEncoder``); each run is a field.  So a
    one-hot encoded categorical variable is one field, and every column of
    dense numeric data is its own field (xLearn's convention for CSV input).
    More than ``max_fields`` runs are merged, consecutive ones evenly, into
    ``max_fields`` fields: the factor table holds n_features x n_fields
    vectors.  Cost: one pass over X's entries.

    Parameters
    ----------
    X : {array-like, sparse matrix} of shape (n_samples, n_features)
    max_fields : int, default=64

    Returns
    -------
    fields : ndarray of int32, shape (n_features,)
        Field of each column, 0 .. n_fields - 1, non-decreasing.
    """
    from . import _mcmc

    if isinstance(max_fields, bool) or not isinstance(max_fields, (int, np.integer)) \
            or max_fields < 1:
        raise ValueError(f"max_fields must be an integer >= 1, got {max_fields!r}")
    M = X if sp.issparse(X) else sp.csr_matrix(np.asarray(X))
    C = sp.csc_matrix(M)
    n_rows, n_cols = C.shape
    if n_cols == 0:
        return np.zeros(0, dtype=np.int32)
    col_ptr = np.ascontiguousarray(C.indptr, dtype=np.int64)
    row_idx = np.ascontiguousarray(C.indices, dtype=np.int32)
    starts = _mcmc.exclusive_blocks(col_ptr, row_idx, n_rows)
    n_blocks = len(starts) - 1
    block = np.repeat(np.arange(n_blocks, dtype=np.int64), np.diff(starts))
    if n_blocks > max_fields:
        block = block * max_fields // n_blocks
    return np.ascontiguousarray(block, dtype=np.int32)


class ModelFields(np.ndarray):
    """Per-column field ids (int32) of a model to build, with its field count
    ``n_fields`` and ``entry`` (it was fitted on per-entry fields that put
    some feature under several fields; see cfm._state.ffm)."""

    def __new__(cls, fields, n_fields, entry):
        out = np.ascontiguousarray(fields, dtype=np.int32).view(cls)
        out.n_fields = int(n_fields)
        out.entry = bool(entry)
        return out

    def __array_finalize__(self, obj):
        self.n_fields = getattr(obj, "n_fields", None)
        self.entry = getattr(obj, "entry", False)


def field_count(fields):
    """Number of fields of a model built from ``fields`` (per-column ids or
    :class:`ModelFields`); None without fields."""
    if fields is None:
        return None
    n = getattr(fields, "n_fields", None)
    if n is not None:
        return int(n)
    return int(np.max(fields)) + 1 if np.size(fields) else 1


def entry_model_fields(indices, entry_fields, n_features):
    """ModelFields of a fit on per-entry fields: each column's first field,
    n_fields = largest id + 1, ``entry`` when some entry's field differs
    from its column's (a feature under several fields)."""
    col = column_fields_of_entries(indices, entry_fields, n_features)
    ef = np.asarray(entry_fields)
    n_fields = int(ef.max()) + 1 if ef.size else 1
    entry = bool(ef.size) and not np.array_equal(col[np.asarray(indices)], ef)
    return ModelFields(col, max(n_fields, 1), entry)


class FieldInput:
    """The input hooks of an estimator about fields (cfm._estimator.BaseFM):
    FM models take none (those of a libffm file are ignored); the
    field-aware estimators override them (cfm/ffm.py, cfm/deepfm.py)."""

    def _check_fields(self, fields, n_features, reset, Xc=None):
        """The model's per-column fields (``Xc``: the validated data, to
        infer them from); None for a model without fields."""
        return None

    def _check_block(self, Xb, fb, fields, src, reset):
        """(validated block of a stream, fields of the model when ``reset``)
        (``fb``: the file's fields; FFM overrides this for per-entry fields)."""
        Xc = check_X(Xb, estimator=self, n_features=src.n_features)
        if reset:
            return Xc, self._check_fields(fields if fields is not None else fb,
                                          src.n_features, reset=True, Xc=Xc)
        if fb is not None:
            self._check_fields(fb, src.n_features, reset=False)
        return Xc, None

    def _check_X_fields(self, X, fields, n_features, reset):
        """(validated X, fields of the model) of an in-memory fit; FFM
        overrides this for per-entry fields."""
        Xc = check_X(X, estimator=self, n_features=n_features)
        return Xc, self._check_fields(fields, Xc.shape[1], reset, Xc)
