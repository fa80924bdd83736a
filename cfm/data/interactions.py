"""``load_interactions``: a users x items matrix from a text file of
interactions, one ``user item [value ...]`` line each (MovieLens' ``u.data``,
implicit-feedback logs), for :class:`cfm.FMRanker` and ``cfm train --task
rank`` / ``cfm recommend``.

Columns are separated by whitespace or commas; ids are integers >= 0 and
are kept as written (a file of one-based ids leaves row / column 0 empty);
the value (third column) defaults to 1; later columns (a timestamp) are
ignored; empty lines and lines starting with ``#`` are skipped.  Plain or
gzip (detected by its magic bytes).
"""
import os
import re

import numpy as np

from ..exceptions import DataFormatError
from ._source import _GZIP_ERRORS, _gzip_error, _open_binary

__all__ = ["load_interactions"]

_SPLIT = re.compile(r"[\s,]+")
# Largest id: the matrix has a row (column) per id up to the largest, and its
# row offsets are int64; a bigger id is more likely a wrong column.
MAX_ID = 2**31 - 2


def load_interactions(path, *, min_value=None, shape=None):
    """Read an interactions file into a SciPy CSR matrix (float64).

    ``min_value``: keep only the lines whose value is >= it (e.g. 4 to take
    ratings of 4 and 5 as positives); None keeps every line.  Kept entries
    are 1 (repeated pairs count once).  ``shape``: (n_users, n_items) at
    least; by default one row / column past the largest id of any line (also
    of lines below ``min_value``: every user and item of the file is in the
    matrix).  A bad line raises :class:`cfm.DataFormatError` naming file and
    line.
    """
    from scipy import sparse

    name = os.fspath(path)
    users, items = [], []
    max_u = max_i = -1
    f, raw = _open_binary(path)
    try:
        try:
            for lineno, line in enumerate(f, 1):
                text = line.strip()
                if not text or text.startswith(b"#"):
                    continue
                parts = _SPLIT.split(text.decode("utf-8", "replace"))
                if len(parts) < 2:
                    raise DataFormatError(f"{name}, line {lineno}: expected 'user item "
                                          f"[value]', got {text[:80]!r}")
                try:
                    u, i = int(parts[0]), int(parts[1])
                    v = float(parts[2]) if len(parts) > 2 else 1.0
                except ValueError:
                    raise DataFormatError(f"{name}, line {lineno}: ids must be integers and "
                                          f"the value a number, got {text[:80]!r}") from None
                if not (0 <= u <= MAX_ID and 0 <= i <= MAX_ID):
                    raise DataFormatError(f"{name}, line {lineno}: ids must be in [0, {MAX_ID}]"
                                          f", got {u} {i}")
                if v != v or v in (float("inf"), float("-inf")):
                    raise DataFormatError(f"{name}, line {lineno}: non-finite value")
                max_u, max_i = max(max_u, u), max(max_i, i)
                if min_value is None or v >= min_value:
                    users.append(u)
                    items.append(i)
        except _GZIP_ERRORS as exc:
            raise _gzip_error(name, exc) from None
    finally:
        f.close()
        if raw is not f:
            raw.close()
    u = np.asarray(users, dtype=np.int64)
    i = np.asarray(items, dtype=np.int64)
    n_u, n_i = max_u + 1, max_i + 1
    if shape is not None:
        if n_u > shape[0] or n_i > shape[1]:
            raise DataFormatError(f"{name}: ids up to user {n_u - 1}, item {n_i - 1} do not "
                                  f"fit shape {tuple(shape)}")
        n_u, n_i = int(shape[0]), int(shape[1])
    M = sparse.csr_matrix((np.ones(len(u)), (u, i)), shape=(n_u, n_i))
    M.sum_duplicates()
    M.data[:] = 1.0
    return M
