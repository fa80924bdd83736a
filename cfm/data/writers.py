"""libsvm / libffm text writers of :mod:`cfm.data` (the compiled formatter
``cfm._format.format_rows``, numbers that read back exactly)."""
import gzip
import os

import numpy as np

from .._lazy import sparse as sp
from .. import _format
from .._validation import effective_n_threads

_INT32_MAX = 2**31 - 1


def _prepare_xy(X, y):
    if sp.issparse(X):
        X = sp.csr_matrix(X)
    else:
        arr = np.asarray(X)
        if arr.ndim != 2:
            raise ValueError(f"X must be 2-D, got shape {arr.shape}")
        X = sp.csr_matrix(arr)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    y = np.ascontiguousarray(np.asarray(y, dtype=np.float64).ravel())
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]} values")
    indices = X.indices
    if indices.dtype not in (np.int32, np.int64):
        indices = indices.astype(np.int64)
    return (X, np.ascontiguousarray(X.indptr, dtype=np.int64), np.ascontiguousarray(indices),
            np.ascontiguousarray(X.data), y)


def _write(path, X, y, fields, offset, n_jobs, block_rows=200_000):
    X, indptr, indices, data, y = _prepare_xy(X, y)
    nt = effective_n_threads(n_jobs)
    with_fields = fields is not None
    if fields is None:
        fields = np.zeros(0, dtype=np.int32)
    path = os.fspath(path)
    opener = (lambda p: gzip.open(p, "wb", compresslevel=6)) if path.endswith(".gz") else \
        (lambda p: open(p, "wb"))
    with opener(path) as f:
        for s in range(0, X.shape[0], block_rows):
            e = min(X.shape[0], s + block_rows)
            f.write(_format.format_rows(indptr, indices, data, y, fields, with_fields, offset,
                                       s, e, nt))


def dump_libsvm(X, y, path, zero_based=True, n_jobs=None):
    """Write ``X, y`` as libsvm text ``label index:value ...``.

    Parameters
    ----------
    X : array-like or sparse matrix, shape (n_rows, n_features)
        Stored entries are written (dense input: the nonzeros), sorted by
        column; duplicate entries of a sparse matrix are summed first.
    y : array-like, shape (n_rows,)
    path : str or path-like
        A name ending in ``.gz`` is written gzip-compressed.
    zero_based : bool, default=True
        Write column j as ``j`` (True) or ``j + 1`` (False).

    Labels are written with ``'%.17g'``, values with ``'%.9g'`` (float32 X)
    or ``'%.17g'`` (float64, other dtypes are converted to float64), so that
    :func:`load_libsvm` reads back exactly the same numbers.
    """
    _write(path, X, y, None, 0 if zero_based else 1, n_jobs)


def dump_libffm(X, y, fields, path, n_jobs=None):
    """Write ``X, y`` as libffm text ``label field:feature:value ...``.

    ``fields[j]`` (length ``X.shape[1]``, integers) is the field of column j;
    every column with a stored entry needs a field >= 0.  Ids are zero-based;
    numbers are formatted as in :func:`dump_libsvm`.
    """
    fields = np.asarray(fields)
    n_cols = X.shape[1]
    if fields.ndim != 1 or fields.shape[0] != n_cols:
        raise ValueError(f"fields must have one entry per column ({n_cols}), got shape "
                         f"{fields.shape}")
    if fields.size and (fields.max() > _INT32_MAX):
        raise ValueError("field ids must fit in int32")
    fields = np.ascontiguousarray(fields, dtype=np.int32)
    Xc = sp.csr_matrix(X) if sp.issparse(X) else sp.csr_matrix(np.asarray(X))
    used = np.unique(Xc.indices)
    if used.size and (fields[used] < 0).any():
        bad = int(used[np.flatnonzero(fields[used] < 0)[0]])
        raise ValueError(f"column {bad} has stored values but no field (fields[{bad}] < 0)")
    _write(path, Xc, y, fields, 0, n_jobs)
