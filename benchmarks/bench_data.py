"""Datasets for the ``cfm`` benchmarks.

What is here
------------
* :func:`make_criteo_like` -- a synthetic, Criteo-shaped click data set: one
  categorical id per field (39 fields by default), Zipf-distributed ids,
  one-hot encoded into a CSR matrix (float32, exactly one nonzero of value 1.0
  per field, ~1.95M columns with the defaults).  Labels are drawn from a
  *planted* factorization machine (bias + linear + pairwise term, plus
  unlearnable logit noise), calibrated so that the base CTR is ~22% and an
  oracle that knows the planted model reaches a test AUC of roughly 0.78.
  Training and test sets drawn with the same ``seed`` but different
  ``row_seed`` come from the same planted model.
* Loaders for the real data in ``<repo>/../shared/data`` (see its README.md):
  MovieLens 100K folds (one-hot user + item), the mushroom (agaricus) libsvm
  files and the small Criteo libffm sample shipped with xLearn.
* Writers to libsvm / libffm text, used to feed xLearn (which only reads
  files).

Run ``python benchmarks/bench_data.py`` for a quick self-check that generates
1M synthetic rows, times it, and prints the oracle AUC and the shapes of the
real data sets.
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

__all__ = [
    "DEFAULT_DATA_DIR",
    "make_criteo_like",
    "make_criteo_like_split",
    "load_movielens_fold",
    "load_mushroom",
    "load_libffm",
    "load_criteo_small",
    "write_libsvm",
    "write_libffm",
]

#: ``<repo root>/../shared/data``
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"

ML100K_N_USERS = 943
ML100K_N_ITEMS = 1682


# --------------------------------------------------------------------------
# Synthetic Criteo-like data with a planted FM
# --------------------------------------------------------------------------

def _truncated_zipf_cdf(n_ids: int, a: float) -> np.ndarray:
    """CDF of P(id = r) ~ r**-a for ranks r = 1..n_ids (float64)."""
    p = np.arange(1, n_ids + 1, dtype=np.float64) ** (-a)
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    return cdf


class _PlantedFM:
    """The planted model: column layout, id sampler and FM parameters.

    Everything here depends only on ``seed`` (and the shape arguments), never
    on the rows drawn, so train and test sets share it.
    """

    # Target statistics of the labels (see make_criteo_like docstring).
    target_ctr = 0.22
    signal_scale = 1.25  # std of the (standardised) planted FM logit
    noise_scale = 0.6    # std of the unlearnable logit noise

    def __init__(self, n_fields, n_factors, seed, zipf_a, ids_per_field, shuffle_ids):
        self.n_fields = int(n_fields)
        self.n_factors = int(n_factors)
        self.ids_per_field = int(ids_per_field)
        self.n_features = self.n_fields * self.ids_per_field
        rng = np.random.default_rng([seed, 0xFA17])
        self.cdf = _truncated_zipf_cdf(self.ids_per_field, zipf_a)
        # Hashed ids: popular ids are scattered over the field's column range,
        # as they are after feature hashing in real CTR data.
        if shuffle_ids:
            self.perm = np.stack(
                [rng.permutation(self.ids_per_field).astype(np.int32)
                 for _ in range(self.n_fields)]
            )
        else:
            self.perm = None
        # Planted parameters; the overall scale is fixed by the calibration
        # below, so only the ratio linear : pairwise matters here.
        self.w = rng.normal(0.0, 1.0, self.n_features).astype(np.float32)
        self.V = rng.normal(0.0, 0.5, (self.n_features, self.n_factors)).astype(np.float32)
        # Calibrate on a pilot sample drawn from a separate stream.
        pilot_rng = np.random.default_rng([seed, 0xCA1B])
        ids = self.sample_ids(20_000, pilot_rng)
        raw = self.raw_score(ids)
        self.mu = float(raw.mean())
        self.sd = float(raw.std()) or 1.0
        z = self.signal_scale * (raw - self.mu) / self.sd
        noise = self.noise_scale * pilot_rng.standard_normal(z.shape[0])
        self.w0 = self._solve_bias(z + noise, self.target_ctr)

    @staticmethod
    def _solve_bias(logit, target):
        lo, hi = -20.0, 20.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            ctr = np.mean(1.0 / (1.0 + np.exp(-(logit + mid))))
            if ctr < target:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    def sample_ids(self, n_rows, rng):
        """(n_rows, n_fields) int32 global column indices."""
        cols = np.empty((n_rows, self.n_fields), dtype=np.int32)
        for f in range(self.n_fields):
            r = np.searchsorted(self.cdf, rng.random(n_rows))
            np.minimum(r, self.ids_per_field - 1, out=r)  # clip (fp round-off)
            if self.perm is not None:
                r = self.perm[f][r]
            cols[:, f] = r + f * self.ids_per_field
        return cols

    def raw_score(self, cols, chunk=65_536):
        """Unscaled planted FM score sum_i w_i + sum_{i<j} <v_i, v_j> (float64).

        O(k nnz) formula, vectorised over row chunks and looped over fields so
        the temporaries stay at (chunk, k).
        """
        n, n_f = cols.shape
        k = self.V.shape[1]
        out = np.empty(n, dtype=np.float64)
        for s in range(0, n, chunk):
            c = cols[s:s + chunk]
            m = c.shape[0]
            lin = np.zeros(m, dtype=np.float64)
            sv = np.zeros((m, k), dtype=np.float32)
            sq = np.zeros(m, dtype=np.float32)
            for f in range(n_f):
                cf = c[:, f]
                lin += self.w[cf]
                v = self.V[cf]
                sv += v
                sq += np.einsum("mk,mk->m", v, v)
            out[s:s + m] = lin + 0.5 * (np.einsum("mk,mk->m", sv, sv).astype(np.float64) - sq)
        return out

    def logit(self, cols):
        """Noise-free planted logit (what an oracle would predict)."""
        raw = self.raw_score(cols)
        return self.w0 + self.signal_scale * (raw - self.mu) / self.sd


_MODEL_CACHE: dict = {}


def _planted(n_fields, n_factors, seed, zipf_a, ids_per_field, shuffle_ids):
    key = (n_fields, n_factors, seed, zipf_a, ids_per_field, shuffle_ids)
    m = _MODEL_CACHE.get(key)
    if m is None:
        _MODEL_CACHE.clear()  # keep at most one (V is ~60 MB)
        m = _MODEL_CACHE[key] = _PlantedFM(*key)
    return m


def make_criteo_like(n_rows, n_fields=39, n_factors=8, seed=0, zipf_a=1.2,
                     ids_per_field=50_000, *, row_seed=None, shuffle_ids=True,
                     return_info=False):
    """Criteo-shaped one-hot data with labels from a planted FM.

    Parameters
    ----------
    n_rows : int
    n_fields : int
        Number of categorical fields; every row has exactly one id per field.
    n_factors : int
        Rank of the planted pairwise term.
    seed : int
        Seed of the planted model (column permutation, w, V, calibration).
    zipf_a : float
        Exponent of the (truncated) Zipf law of the ids within a field:
        P(rank r) ~ r**-zipf_a for r = 1..ids_per_field.
    ids_per_field : int
        Ids per field; columns are ``field * ids_per_field + id`` so the
        matrix has ``n_fields * ids_per_field`` columns (1.95M by default).
    row_seed : int, optional
        Seed of the rows and labels; defaults to ``seed``.  Use the same
        ``seed`` and a different ``row_seed`` for a test set from the same
        planted model.
    shuffle_ids : bool
        Scatter the popular ids over each field's column range (as feature
        hashing does) instead of putting them at the start.
    return_info : bool
        Also return a dict with the oracle logit, base CTR and oracle AUC.

    Returns
    -------
    X : scipy.sparse.csr_matrix, float32, shape (n_rows, n_fields*ids_per_field)
    y : ndarray of float32 in {0, 1}
    fields : ndarray of int32, field id of every column
    info : dict (only if ``return_info``)

    Labels: ``logit = w0 + s * standardise(FM(x)) + noise`` with
    ``s = 1.25`` and ``noise ~ N(0, 0.6^2)``; ``w0`` is solved so the mean CTR
    is 0.22.  The oracle AUC (ranking by the noise-free logit) is ~0.78.
    Generating 1M rows takes a few seconds and ~0.5 GB peak.
    """
    model = _planted(n_fields, n_factors, seed, zipf_a, ids_per_field, shuffle_ids)
    rng = np.random.default_rng([seed if row_seed is None else row_seed, 0x5EED])
    cols = model.sample_ids(int(n_rows), rng)
    oracle = model.logit(cols)
    logit = oracle + model.noise_scale * rng.standard_normal(oracle.shape[0])
    p = 1.0 / (1.0 + np.exp(-logit))
    y = (rng.random(p.shape[0]) < p).astype(np.float32)
    del p
    nnz = cols.size
    idx_dtype = np.int32 if nnz < 2**31 - 1 else np.int64
    indptr = np.arange(0, nnz + 1, model.n_fields, dtype=idx_dtype)
    X = sp.csr_matrix(
        (np.ones(nnz, dtype=np.float32), cols.reshape(-1).astype(idx_dtype, copy=False), indptr),
        shape=(int(n_rows), model.n_features),
        copy=False,
    )
    X.has_sorted_indices = True  # fields are laid out in increasing column order
    fields = np.repeat(np.arange(model.n_fields, dtype=np.int32), model.ids_per_field)
    if not return_info:
        return X, y, fields
    info = {
        "base_ctr": float(y.mean()),
        "oracle_auc": _auc(y, oracle),
        "oracle_logit": oracle,
        "w0": model.w0,
    }
    return X, y, fields, info


def make_criteo_like_split(n_train, n_test, **kwargs):
    """Train and test sets from the same planted model (disjoint row streams).

    Returns ``(X_train, y_train, X_test, y_test, fields)``; ``kwargs`` are
    passed to :func:`make_criteo_like` (except ``row_seed``).
    """
    seed = kwargs.pop("seed", 0)
    X_tr, y_tr, fields = make_criteo_like(n_train, seed=seed, row_seed=2 * seed + 1, **kwargs)
    X_te, y_te, _ = make_criteo_like(n_test, seed=seed, row_seed=2 * seed + 2, **kwargs)
    return X_tr, y_tr, X_te, y_te, fields


def _auc(y, score):
    """ROC AUC with average ranks for ties (no sklearn dependency)."""
    y = np.asarray(y).astype(bool)
    order = np.argsort(score, kind="mergesort")
    s = np.asarray(score)[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # average ranks over ties
    bounds = np.flatnonzero(np.diff(s)) + 1
    starts = np.r_[0, bounds]
    ends = np.r_[bounds, len(s)]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    n_pos = y.sum()
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


# --------------------------------------------------------------------------
# Real data loaders
# --------------------------------------------------------------------------

def _open_text(path: Path):
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt")
    if not path.exists() and path.with_name(path.name + ".gz").exists():
        return gzip.open(path.with_name(path.name + ".gz"), "rt")
    return open(path, "rt")


def _read_ml_ratings(path):
    with _open_text(path) as fh:
        a = np.loadtxt(fh, dtype=np.int64, ndmin=2)
    return a[:, 0], a[:, 1], a[:, 2].astype(np.float32)


def _ml_onehot(users, items):
    n = len(users)
    indices = np.empty(2 * n, dtype=np.int32)
    indices[0::2] = users - 1
    indices[1::2] = ML100K_N_USERS + items - 1
    indptr = np.arange(0, 2 * n + 1, 2, dtype=np.int32)
    X = sp.csr_matrix((np.ones(2 * n, dtype=np.float32), indices, indptr),
                      shape=(n, ML100K_N_USERS + ML100K_N_ITEMS))
    X.has_sorted_indices = True
    return X


def load_movielens_fold(fold="u1", data_dir=None):
    """MovieLens 100K official fold ``u1``..``u5`` / ``ua`` / ``ub``.

    Returns ``(X_train, y_train, X_test, y_test)``: CSR float32 one-hot of
    user (columns 0..942) and item (columns 943..2624), so 2 nonzeros per row
    and 943 + 1682 = 2625 columns for both train and test; y is the rating
    (float32, 1..5).
    """
    d = Path(data_dir or DEFAULT_DATA_DIR) / "ml-100k"
    u, i, r = _read_ml_ratings(d / f"{fold}.base.gz")
    ut, it, rt = _read_ml_ratings(d / f"{fold}.test")
    return _ml_onehot(u, i), r, _ml_onehot(ut, it), rt


def load_mushroom(data_dir=None):
    """UCI mushroom (agaricus) libsvm files shipped with xLearn.

    Returns ``(X_train, y_train, X_test, y_test)``: CSR float32 with a common
    column space (sklearn's ``load_svmlight_files``; 1-based ids are detected
    and shifted to 0-based), labels float32 in {0, 1}.
    """
    from sklearn.datasets import load_svmlight_files

    d = Path(data_dir or DEFAULT_DATA_DIR) / "xlearn" / "mushroom"
    X_tr, y_tr, X_te, y_te = load_svmlight_files(
        [str(d / "agaricus_train.txt"), str(d / "agaricus_test.txt")], dtype=np.float32
    )
    y_tr = (y_tr > 0).astype(np.float32)
    y_te = (y_te > 0).astype(np.float32)
    return X_tr.tocsr(), y_tr, X_te.tocsr(), y_te


def load_libffm(path, n_features=None, n_fields=None):
    """Read a libffm text file ``label field:feature:value ...``.

    Returns ``(X, y, fields)``: X is CSR float32 with column = feature id
    (duplicate features in a row are summed), y float32, and ``fields`` an
    int32 array of length ``X.shape[1]`` giving the field of each column
    (the first field a feature was seen with; -1 for unseen columns).  Pass
    ``n_features`` to force a common column space for train and test.
    """
    labels, rows, feats, flds, vals = [], [], [], [], []
    with _open_text(path) as fh:
        for r, line in enumerate(fh):
            parts = line.split()
            if not parts:
                continue
            labels.append(float(parts[0]))
            for tok in parts[1:]:
                f, j, v = tok.split(":")
                rows.append(len(labels) - 1)
                flds.append(int(f))
                feats.append(int(j))
                vals.append(float(v))
    feats = np.asarray(feats, dtype=np.int64)
    flds = np.asarray(flds, dtype=np.int32)
    n_cols = int(feats.max()) + 1 if feats.size else 0
    if n_features is not None:
        if n_cols > n_features:
            raise ValueError(f"{path}: feature id {n_cols - 1} >= n_features={n_features}")
        n_cols = int(n_features)
    X = sp.csr_matrix(
        (np.asarray(vals, dtype=np.float32), (np.asarray(rows, dtype=np.int64), feats)),
        shape=(len(labels), n_cols),
    )
    X.sum_duplicates()
    fields = np.full(n_cols, -1, dtype=np.int32)
    uniq, first = np.unique(feats, return_index=True)  # first occurrence wins
    fields[uniq] = flds[first]
    y = np.asarray(labels, dtype=np.float32)
    if set(np.unique(y)) <= {-1.0, 1.0}:
        y = (y > 0).astype(np.float32)
    return X, y, fields


def load_criteo_small(data_dir=None):
    """xLearn's small Criteo libffm sample (200 train / 200 test rows).

    Returns ``(X_train, y_train, X_test, y_test, fields)`` with a common column
    space (max feature id over both files + 1); ``fields`` merges both files.
    """
    d = Path(data_dir or DEFAULT_DATA_DIR) / "xlearn" / "criteo_ctr"
    tr, te = d / "small_train.txt", d / "small_test.txt"
    n = 1 + max(_max_libffm_feature(tr), _max_libffm_feature(te))
    X_tr, y_tr, f_tr = load_libffm(tr, n_features=n)
    X_te, y_te, f_te = load_libffm(te, n_features=n)
    fields = np.where(f_tr >= 0, f_tr, f_te)
    return X_tr, y_tr, X_te, y_te, fields


def _max_libffm_feature(path):
    m = -1
    with _open_text(path) as fh:
        for line in fh:
            for tok in line.split()[1:]:
                m = max(m, int(tok.split(":")[1]))
    return m


# --------------------------------------------------------------------------
# Writers (xLearn reads files only)
# --------------------------------------------------------------------------

def _fmt_label(y):
    y = np.asarray(y)
    if np.all(y == np.round(y)):
        return [str(int(v)) for v in y]
    return [repr(float(v)) for v in y]


def _write_sparse(path, X, y, prefix_of_col, chunk_rows=100_000):
    """Shared writer: ``prefix_of_col(cols) -> array of str 'f:j:' or 'j:'``.

    Binary data (all values 1.0) uses a per-column token table, which writes
    1M x 39 nonzeros in a few seconds; other values are formatted with %.7g.
    """
    X = sp.csr_matrix(X)
    X.sort_indices()
    labels = _fmt_label(y)
    binary = X.nnz == 0 or bool(np.all(X.data == 1.0))
    indptr, indices, data = X.indptr, X.indices, X.data
    with open(path, "w", buffering=1 << 22) as out:
        if binary:
            used = np.unique(indices)
            table = np.empty(X.shape[1], dtype=object)
            table[used] = [p + "1" for p in prefix_of_col(used)]
            for s in range(0, X.shape[0], chunk_rows):
                e = min(X.shape[0], s + chunk_rows)
                toks = table[indices[indptr[s]:indptr[e]]]
                base = indptr[s]
                buf = io.StringIO()
                for r in range(s, e):
                    a, b = indptr[r] - base, indptr[r + 1] - base
                    buf.write(labels[r])
                    if b > a:
                        buf.write(" ")
                        buf.write(" ".join(toks[a:b]))
                    buf.write("\n")
                out.write(buf.getvalue())
        else:
            for r in range(X.shape[0]):
                a, b = indptr[r], indptr[r + 1]
                cols = indices[a:b]
                pre = prefix_of_col(cols)
                out.write(labels[r])
                for p, v in zip(pre, data[a:b]):
                    out.write(f" {p}{float(v):.7g}")
                out.write("\n")
    return path


def write_libsvm(path, X, y):
    """Write ``label j:v ...`` (0-based column ids j) and return ``path``."""
    return _write_sparse(path, X, y, lambda cols: [f"{j}:" for j in cols.tolist()])


def write_libffm(path, X, y, fields):
    """Write ``label field:j:v ...`` (0-based ids) and return ``path``.

    ``fields[j]`` is the field of column j (e.g. from :func:`make_criteo_like`
    or :func:`load_libffm`); negative fields are written as 0.
    """
    fields = np.maximum(np.asarray(fields), 0)
    return _write_sparse(
        path, X, y, lambda cols: [f"{f}:{j}:" for f, j in zip(fields[cols].tolist(), cols.tolist())]
    )


# --------------------------------------------------------------------------

def _main():
    import argparse
    import time

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--write", type=Path, default=None,
                    help="also write the synthetic set as libsvm to this path and time it")
    args = ap.parse_args()

    t = time.perf_counter()
    X, y, fields, info = make_criteo_like(args.rows, return_info=True)
    dt = time.perf_counter() - t
    print(f"make_criteo_like({args.rows:,}): {dt:.2f}s  shape={X.shape} nnz={X.nnz:,} "
          f"CTR={info['base_ctr']:.3f} oracle AUC={info['oracle_auc']:.4f}")
    try:
        import resource
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    except Exception:
        pass
    if args.write:
        t = time.perf_counter()
        write_libsvm(args.write, X, y)
        print(f"write_libsvm: {time.perf_counter() - t:.2f}s, {os.path.getsize(args.write) / 1e6:.0f} MB")
    for name, loader in [("ml-100k u1", lambda: load_movielens_fold("u1", args.data_dir)),
                         ("mushroom", lambda: load_mushroom(args.data_dir)),
                         ("criteo small", lambda: load_criteo_small(args.data_dir)[:4])]:
        Xtr, ytr, Xte, yte = loader()
        print(f"{name}: train {Xtr.shape} nnz={Xtr.nnz} y_mean={ytr.mean():.3f}; "
              f"test {Xte.shape} y_mean={yte.mean():.3f}")


if __name__ == "__main__":
    _main()
