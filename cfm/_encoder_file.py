"""A fitted :class:`cfm.FieldEncoder` in a model file, and back.

Header entry ``encoder`` (JSON)::

    {"version": 1, "params": {...FieldEncoder parameters...},
     "columns": [{"name": "C1", "kind": "category", "size": 1234, "n_values": 1232},
                 {"name": "I1", "kind": "bucket", "size": 14, "n_edges": 12},
                 {"name": "I2", "kind": "value", "size": 2,
                  "lo": 0.0, "hi": 9.0, "mean": 1.5, "scale": 2.0},
                 {"name": "C2", "kind": "hash", "size": 1025}, ...]}

and three arrays: ``<prefix>_text`` (uint8: the vocabularies' UTF-8 text,
concatenated in column order), ``<prefix>_text_offsets`` (int64, one more
than the number of vocabulary values: value i is text[off[i]:off[i+1]]) and
``<prefix>_edges`` (float64: the bucket edges, in column order).  Nothing
read is trusted: counts must add up to the arrays' lengths, offsets must be
non-decreasing inside the text (UTF-8; bytes that are not UTF-8 come back
through surrogateescape, as they were written), each vocabulary strictly
sorted (so unique), edges finite and strictly increasing, sizes consistent
with kinds; a violation raises ValueError (``cfm.load`` reports the file as
inconsistent).
"""
import numbers

import numpy as np

VERSION = 1
_PARAMS = ("categorical", "numeric", "n_quantiles", "standardize", "min_frequency",
           "n_buckets", "dtype")


def to_file(enc, prefix):
    columns, text, offsets, edges = [], [], [0], []
    for j, name in enumerate(enc.feature_names_in_):
        kind = enc.kinds_[j]
        size = int(enc.offsets_[j + 1] - enc.offsets_[j])
        col = {"name": name if isinstance(name, str) else int(name), "kind": kind, "size": size}
        if kind == "category":
            vocab = enc.vocabularies_[j]
            col["n_values"] = len(vocab)
            for v in vocab:
                b = v.encode("utf-8", errors="surrogateescape")
                text.append(b)
                offsets.append(offsets[-1] + len(b))
        elif kind == "bucket":
            e = np.asarray(enc._stats[j]["edges"], dtype=np.float64)
            col["n_edges"] = int(e.size)
            edges.append(e)
        elif kind == "value":
            col.update({k: float(enc._stats[j][k]) for k in ("lo", "hi", "mean", "scale")})
        columns.append(col)
    params = {k: getattr(enc, k) for k in _PARAMS}
    if params["categorical"] != "auto":
        params["categorical"] = [c if isinstance(c, str) else int(c)
                                 for c in params["categorical"]]
    params["dtype"] = np.dtype(params["dtype"]).name
    entry = {"version": VERSION, "params": params, "columns": columns}
    arrays = {
        f"{prefix}_text": np.frombuffer(b"".join(text), dtype=np.uint8),
        f"{prefix}_text_offsets": np.asarray(offsets, dtype=np.int64),
        f"{prefix}_edges": np.concatenate(edges) if edges else np.empty(0, dtype=np.float64),
    }
    return entry, arrays


def _read(arrays, name, dtype):
    a = arrays.get(name)
    if a is None:
        raise ValueError(f"the encoder's array {name!r} is missing")
    if hasattr(a, "read") and not isinstance(a, np.ndarray):  # a lazy array of a large file
        a = a.read()
    a = np.asarray(a)
    if a.ndim != 1 or a.dtype != np.dtype(dtype):
        raise ValueError(f"the encoder's array {name!r} must be 1-D {np.dtype(dtype).name}, "
                         f"got {a.dtype} of shape {a.shape}")
    return a


def _int(v, low, high, what):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not low <= v <= high:
        raise ValueError(f"encoder: {what} must be an integer in [{low}, {high}], got {v!r}")
    return int(v)


def _finite(v, what):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        raise ValueError(f"encoder: {what} must be a finite number, got {v!r}")
    return float(v)


def from_file(cls, entry, arrays, prefix):
    if not isinstance(entry, dict) or entry.get("version") != VERSION:
        raise ValueError(f"encoder entry of an unknown version ({type(entry).__name__})")
    params, columns = entry.get("params"), entry.get("columns")
    if not isinstance(params, dict) or set(params) - set(_PARAMS):
        raise ValueError("encoder: malformed parameters")
    if isinstance(params.get("categorical"), list):
        if not all(isinstance(c, (str, int)) and not isinstance(c, bool)
                   for c in params["categorical"]):
            raise ValueError("encoder: categorical must list column names")
    enc = cls(**params)
    enc._check_params()  # ValueError on a bad value
    if not isinstance(columns, list) or not 1 <= len(columns) <= 1 << 20:
        raise ValueError("encoder: 'columns' must be a non-empty list")
    text = _read(arrays, f"{prefix}_text", np.uint8)
    offsets = _read(arrays, f"{prefix}_text_offsets", np.int64)
    edges_all = _read(arrays, f"{prefix}_edges", np.float64)
    if offsets.size < 1 or offsets[0] != 0 or offsets[-1] != text.size \
            or np.any(np.diff(offsets) < 0):
        raise ValueError("encoder: vocabulary offsets do not describe its text")
    if not np.all(np.isfinite(edges_all)):
        raise ValueError("encoder: non-finite bucket edges")
    blob = text.tobytes()
    names, kinds, vocabs, stats = [], [], [], []
    n_values = n_edges = 0
    for col in columns:
        if not isinstance(col, dict) or col.get("kind") not in ("category", "hash", "value",
                                                                 "bucket"):
            raise ValueError(f"encoder: malformed column entry {str(col)[:80]}")
        name, kind = col.get("name"), col["kind"]
        if isinstance(name, bool) or not isinstance(name, (str, int)):
            raise ValueError(f"encoder: column name {name!r} is not a string or integer")
        size = _int(col.get("size"), 1, 2**62, f"size of column {name!r}")
        vocab, st = None, None
        if kind == "category":
            k = _int(col.get("n_values"), 0, offsets.size - 1 - n_values,
                     f"n_values of column {name!r}")
            try:
                vocab = np.array([blob[offsets[i]:offsets[i + 1]].decode("utf-8",
                                                                         "surrogateescape")
                                  for i in range(n_values, n_values + k)], dtype=object)
            except UnicodeDecodeError:
                raise ValueError(f"encoder: the vocabulary of column {name!r} is not "
                                 "UTF-8") from None
            if k > 1 and not np.all(vocab[1:] > vocab[:-1]):
                raise ValueError(f"encoder: the vocabulary of column {name!r} is not sorted "
                                 "and unique")
            n_values += k
            want = 2 + k
        elif kind == "hash":
            if enc.n_buckets is None:
                raise ValueError(f"encoder: column {name!r} is hashed but n_buckets is None")
            want = 1 + int(enc.n_buckets)
        elif kind == "bucket":
            k = _int(col.get("n_edges"), 0, edges_all.size - n_edges,
                     f"n_edges of column {name!r}")
            e = edges_all[n_edges:n_edges + k].copy()
            if k > 1 and not np.all(np.diff(e) > 0):
                raise ValueError(f"encoder: the bucket edges of column {name!r} do not "
                                 "increase")
            n_edges += k
            st, want = {"edges": e}, 2 + k
        else:
            st = {key: _finite(col.get(key), f"{key} of column {name!r}")
                  for key in ("lo", "hi", "mean", "scale")}
            if not (st["lo"] <= st["hi"] and st["scale"] > 0):
                raise ValueError(f"encoder: column {name!r} needs lo <= hi and scale > 0")
            want = 2
        if size != want:
            raise ValueError(f"encoder: column {name!r} ({kind}) has size {size}, expected "
                             f"{want}")
        names.append(name)
        kinds.append(kind)
        vocabs.append(vocab)
        stats.append(st)
    if n_values != offsets.size - 1 or n_edges != edges_all.size:
        raise ValueError("encoder: the arrays hold values no column claims")
    if len(set(names)) != len(names):
        raise ValueError("encoder: duplicate column names")
    enc._set_fitted(names, kinds, vocabs, stats)
    return enc
