"""Every real data set in ``../shared/data`` as train/test splits for FM, FFM and LR.

Used by ``bench_defaults.py`` and ``studies/autotune_study.py``: both judge
accuracy *with the defaults*, so they must see every data set the project has,
not a hand-picked few.  :func:`load_all` returns one :class:`DataSet` per
task built from the files below, and :func:`unknown_files` lists the files of
the data folder that no loader here reads -- a data set added to the folder
after this module was written is reported loudly instead of being skipped in
silence (``bench_defaults.py --strict`` fails on it).

Splits and noise
----------------
A data set is a list of *repeats*; a repeat is a list of *folds*
(:class:`Split`); the metric of a repeat is computed on the test predictions of
all its folds pooled (cross-validated AUC / RMSE), and the figure reported is
the mean over repeats (with their standard deviation where there are several).

=====================  =======  ===============================================
data set               task     splits
=====================  =======  ===============================================
ml100k                 rating   official u1..u5 (one repeat of 5 folds, pooled)
ml100k-uaub            rating   official ua, ub (two repeats of one fold)
ml100k-side            rating   u1..u5 with user age/gender/occupation and item
                                genres (7 fields; multi-valued genres)
criteo-xlearn          binary   xLearn's small_train / small_test (200 / 200)
mushroom               binary   agaricus_train / agaricus_test as shipped
titanic                binary   3 repeats of seeded stratified 5-fold CV
house-price            rating   3 repeats of seeded 5-fold CV (log price)
w8a                    binary   one repeat of seeded stratified 5-fold CV
criteo1tb-day0         binary   one repeat of seeded stratified 5-fold CV
deepctr-criteo         binary   5 repeats of seeded stratified 5-fold CV
deepctr-avazu          binary   5 repeats of seeded stratified 5-fold CV
deepctr-movielens      rating   5 repeats of seeded 5-fold CV
synthetic-1000k        binary   1M / 200k rows from benchmarks/bench_data.py
                                (only with ``include_synthetic=True``)
=====================  =======  ===============================================

Raw CSV / TSV logs (criteo1tb, deepctr) are encoded here, on each training
fold only (no test information leaks into the vocabulary): one field per raw
column; a categorical value seen at least ``MIN_COUNT`` times in the training
fold gets its own one-hot column, rarer and unseen values share the field's
"other" column, and a missing cell is the value "" (its own column when
frequent enough).  Integer columns become categories by Criteo's usual log
bucketing (v <= 2 as is, otherwise ``int(log(v) ** 2)``).  Multi-valued cells
(MovieLens genres ``a|b``) give one column per value, each 1.0.
"""
from __future__ import annotations

import gzip
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
# a categorical value needs this many occurrences in the training fold to get
# its own column (rarer values share the field's "other" column)
MIN_COUNT = 2


def default_data_dir():
    """``$CFM_DATA_DIR``, else the first ``shared/data`` found above this file
    (a git worktree lives one level deeper than the main checkout)."""
    env = os.environ.get("CFM_DATA_DIR")
    if env:
        return Path(env)
    for parent in HERE.parents:
        cand = parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return HERE.parents[1].parent / "shared" / "data"


# --------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------

@dataclass
class Split:
    """One train/test fold.  ``fields``: field id per column (FFM), or None."""
    X_train: sp.csr_matrix
    y_train: np.ndarray
    X_test: sp.csr_matrix
    y_test: np.ndarray
    fields: np.ndarray | None = None


@dataclass
class DataSet:
    name: str
    task: str                     # "binary" (AUC) or "reg" (RMSE)
    build: Callable[[], list]     # -> list of repeats, each a list of Split
    note: str = ""
    has_fields: bool = False      # FFM is meaningful (natural fields)
    files: tuple = ()             # data files it reads (relative to the data dir)
    noisy: bool = False           # small test sets: AUC/RMSE has a large spread
    _repeats: list | None = field(default=None, repr=False)

    @property
    def metric(self):
        return "AUC" if self.task == "binary" else "RMSE"

    @property
    def greater_is_better(self):
        return self.task == "binary"

    def repeats(self):
        """The splits (built on first use and cached)."""
        if self._repeats is None:
            self._repeats = self.build()
        return self._repeats

    def n_rows(self):
        s = self.repeats()[0][0]
        return s.X_train.shape[0] + s.X_test.shape[0]

    def release(self):
        self._repeats = None


def metric_value(task, y, score):
    """Test AUC (binary, y in {0, 1}) or RMSE (regression) of raw scores."""
    score = np.asarray(score, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if task == "binary":
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(y, score))
    return float(np.sqrt(np.mean((y - score) ** 2)))


def auc_standard_error(y):
    """Hanley & McNeil (1982) standard error of an AUC near 0.75 on labels ``y``:
    what a test set of this size can resolve."""
    y = np.asarray(y)
    n1, n0 = int((y > 0).sum()), int((y <= 0).sum())
    a = 0.75
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / max(n1 * n0, 1)
    return math.sqrt(max(var, 0.0))


# --------------------------------------------------------------------------
# Splitting helpers
# --------------------------------------------------------------------------

def kfold_indices(y, n_folds, seed, stratify):
    """Seeded (stratified) k-fold: list of (train_idx, test_idx)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    cls = StratifiedKFold if stratify else KFold
    cv = cls(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(cv.split(np.zeros(len(y)), y))


def _cv_repeats(X, y, n_repeats, n_folds, stratify, fields=None, seed0=0):
    reps = []
    for r in range(n_repeats):
        folds = []
        for tr, te in kfold_indices(y, n_folds, seed0 + r, stratify):
            folds.append(Split(X[tr], y[tr], X[te], y[te], fields))
        reps.append(folds)
    return reps


def _csr(X):
    X = sp.csr_matrix(X, dtype=np.float32)
    X.sort_indices()
    X.eliminate_zeros()
    return X


# --------------------------------------------------------------------------
# Raw categorical encoding (one field per column)
# --------------------------------------------------------------------------

def log_bucket(values):
    """Criteo's integer bucketing: missing -> "", v <= 2 -> str(v), else
    "L" + int(log(v) ** 2)."""
    out = []
    for v in values:
        if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
            out.append("")
            continue
        x = float(v)
        out.append(str(int(x)) if x <= 2 else f"L{int(math.log(x) ** 2)}")
    return out


class FieldEncoder:
    """One-hot encoding of raw columns, one field per column, vocabulary from
    the training rows only (see the module docstring)."""

    def __init__(self, min_count=MIN_COUNT, multi_sep=None):
        self.min_count = min_count
        self.multi_sep = multi_sep or {}  # column index -> separator of multi-valued cells

    def _tokens(self, j, cell):
        sep = self.multi_sep.get(j)
        if sep is None:
            return [cell]
        return [t for t in cell.split(sep) if t] or [""]

    def fit(self, rows):
        """``rows``: list of lists of strings (one string per raw column)."""
        n_cols = len(rows[0])
        self.vocab = []
        col = 0
        fields = []
        for j in range(n_cols):
            counts = {}
            for r in rows:
                for t in self._tokens(j, r[j]):
                    counts[t] = counts.get(t, 0) + 1
            keep = sorted(t for t, c in counts.items() if c >= self.min_count)
            voc = {t: col + 1 + i for i, t in enumerate(keep)}  # col: "other"
            self.vocab.append((col, voc))
            fields += [j] * (1 + len(keep))
            col += 1 + len(keep)
        self.n_features = col
        self.fields = np.asarray(fields, dtype=np.int32)
        return self

    def transform(self, rows):
        indptr, indices = [0], []
        for r in rows:
            cols = set()
            for j, (other, voc) in enumerate(self.vocab):
                for t in self._tokens(j, r[j]):
                    cols.add(voc.get(t, other))
            indices.extend(sorted(cols))
            indptr.append(len(indices))
        data = np.ones(len(indices), dtype=np.float32)
        X = sp.csr_matrix((data, np.asarray(indices, dtype=np.int32),
                           np.asarray(indptr, dtype=np.int64)),
                          shape=(len(rows), self.n_features))
        X.has_sorted_indices = True
        return X


def _encoded_cv(rows, y, n_repeats, n_folds, stratify, multi_sep=None):
    """CV repeats of raw rows, each fold encoded on its training rows."""
    reps = []
    for r in range(n_repeats):
        folds = []
        for tr, te in kfold_indices(y, n_folds, r, stratify):
            enc = FieldEncoder(multi_sep=multi_sep).fit([rows[i] for i in tr])
            folds.append(Split(enc.transform([rows[i] for i in tr]), y[tr],
                               enc.transform([rows[i] for i in te]), y[te], enc.fields))
        reps.append(folds)
    return reps


# --------------------------------------------------------------------------
# Loaders, one per data set
# --------------------------------------------------------------------------

def _open(path):
    path = Path(path)
    return gzip.open(path, "rt", encoding="latin-1") if path.suffix == ".gz" else \
        open(path, "rt", encoding="latin-1")


ML_USERS, ML_ITEMS = 943, 1682


def _ml_ratings(d, name):
    p = d / "ml-100k" / name
    if not p.exists():
        p = p.with_name(p.name + ".gz")
    with _open(p) as fh:
        a = np.loadtxt(fh, dtype=np.int64, ndmin=2)
    return a[:, 0] - 1, a[:, 1] - 1, a[:, 2].astype(np.float32)


def _ml_side(d):
    """User (age bucket, gender, occupation) and item (genre flags) side columns."""
    users = {}
    with _open(d / "ml-100k" / "u.user") as fh:
        for line in fh:
            uid, age, gender, occ, _zip = line.rstrip("\n").split("|")
            users[int(uid) - 1] = (min(int(age) // 10, 6), gender, occ)
    occs = sorted({u[2] for u in users.values()})
    genres = np.zeros((ML_ITEMS, 19), dtype=np.float32)
    with _open(d / "ml-100k" / "u.item") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("|")
            genres[int(parts[0]) - 1] = np.asarray(parts[5:24], dtype=np.float32)
    u_age = np.array([users[u][0] for u in range(ML_USERS)])
    u_gender = np.array([users[u][1] == "M" for u in range(ML_USERS)], dtype=np.int64)
    u_occ = np.array([occs.index(users[u][2]) for u in range(ML_USERS)])
    return u_age, u_gender, u_occ, len(occs), genres


def ml_onehot(users, items, side=None):
    """One-hot user + item (fields 0, 1); with ``side``, also age bucket,
    gender, occupation (fields 2-4) and the item's genres (field 5, one
    column per genre)."""
    n = len(users)
    cols = [users, ML_USERS + items]
    n_cols = ML_USERS + ML_ITEMS
    fields = [np.zeros(ML_USERS, np.int32), np.ones(ML_ITEMS, np.int32)]
    rows = [np.arange(n), np.arange(n)]
    vals = [np.ones(n, np.float32), np.ones(n, np.float32)]
    if side is not None:
        u_age, u_gender, u_occ, n_occ, genres = side
        for f, (code, width) in enumerate([(u_age[users], 7), (u_gender[users], 2),
                                           (u_occ[users], n_occ)], start=2):
            cols.append(n_cols + code)
            rows.append(np.arange(n))
            vals.append(np.ones(n, np.float32))
            fields.append(np.full(width, f, np.int32))
            n_cols += width
        g = genres[items]
        r, c = np.nonzero(g)
        rows.append(r)
        cols.append(n_cols + c)
        vals.append(np.ones(len(r), np.float32))
        fields.append(np.full(19, 5, np.int32))
        n_cols += 19
    X = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(n, n_cols))
    X.sort_indices()
    return X, np.concatenate(fields)


def build_ml100k(d, folds, side=False):
    s = _ml_side(d) if side else None
    splits = []
    for f in folds:
        u, i, r = _ml_ratings(d, f"{f}.base")
        ut, it, rt = _ml_ratings(d, f"{f}.test")
        Xtr, fields = ml_onehot(u, i, s)
        Xte, _ = ml_onehot(ut, it, s)
        splits.append(Split(Xtr, r, Xte, rt, fields))
    return splits


def build_criteo_xlearn(d):
    import bench_data as bds  # benchmarks/bench_data.py

    Xtr, ytr, Xte, yte, fields = bds.load_criteo_small(d)
    return [[Split(_csr(Xtr), ytr, _csr(Xte), yte, np.maximum(fields, 0).astype(np.int32))]]


def build_mushroom(d):
    import bench_data as bds

    Xtr, ytr, Xte, yte = bds.load_mushroom(d)
    return [[Split(_csr(Xtr), ytr, _csr(Xte), yte)]]


def _dense_tsv(path):
    with _open(path) as fh:
        a = np.loadtxt(fh, dtype=np.float64, delimiter="\t", ndmin=2)
    return a[:, 1:], a[:, 0]


def build_titanic(d, n_repeats=3):
    X, y = _dense_tsv(d / "xlearn" / "titanic" / "titanic_train.txt")
    X = _csr(X)
    return _cv_repeats(X, y.astype(np.float32), n_repeats, 5, True,
                       fields=np.arange(X.shape[1], dtype=np.int32))


def build_house_price(d, n_repeats=3):
    X, y = _dense_tsv(d / "xlearn" / "house_price" / "house_price_train.txt.gz")
    return _cv_repeats(_csr(X), y.astype(np.float32), n_repeats, 5, False)


def build_w8a(d):
    from sklearn.datasets import load_svmlight_file

    with gzip.open(d / "w8a" / "w8a.gz", "rb") as fh:
        X, y = load_svmlight_file(fh, n_features=300, dtype=np.float32, zero_based=False)
    return _cv_repeats(_csr(X), (y > 0).astype(np.float32), 1, 5, True)


def _criteo_rows(lines, label_col, int_cols, cat_cols):
    rows, y = [], []
    for parts in lines:
        y.append(float(parts[label_col]))
        ints = log_bucket([parts[j] if parts[j] != "" else None for j in int_cols])
        rows.append(ints + [parts[j] for j in cat_cols])
    return rows, np.asarray(y, dtype=np.float32)


def build_criteo_1tb(d, n_repeats=1):
    with _open(d / "criteo_1tb" / "day_0.part.txt.gz") as fh:
        lines = [line.rstrip("\n").split("\t") for line in fh if line.strip()]
    rows, y = _criteo_rows(lines, 0, range(1, 14), range(14, 40))
    return _encoded_cv(rows, y, n_repeats, 5, True)


def _csv(path):
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        r = csv.reader(fh)
        header = next(r)
        return header, [row for row in r if row]


def build_deepctr_criteo(d, n_repeats=5):
    header, lines = _csv(d / "deepctr" / "criteo_sample.txt")
    ints = [header.index(f"I{i}") for i in range(1, 14)]
    cats = [header.index(f"C{i}") for i in range(1, 27)]
    rows, y = _criteo_rows(lines, header.index("label"), ints, cats)
    return _encoded_cv(rows, y, n_repeats, 5, True)


def build_deepctr_avazu(d, n_repeats=5):
    header, lines = _csv(d / "deepctr" / "avazu_sample.txt")
    feats = [j for j, h in enumerate(header) if h not in ("id", "click")]
    rows = [[line[j] for j in feats] for line in lines]
    y = np.asarray([float(line[header.index("click")]) for line in lines], dtype=np.float32)
    return _encoded_cv(rows, y, n_repeats, 5, True)


def build_deepctr_movielens(d, n_repeats=5):
    header, lines = _csv(d / "deepctr" / "movielens_sample.txt")
    names = ["user_id", "movie_id", "title", "genres", "gender", "age", "occupation", "zip"]
    cols = [header.index(n) for n in names]
    rows = [[line[j] for j in cols] for line in lines]
    y = np.asarray([float(line[header.index("rating")]) for line in lines], dtype=np.float32)
    return _encoded_cv(rows, y, n_repeats, 5, False, multi_sep={names.index("genres"): "|"})


def build_synthetic(rows=1_000_000, test_rows=200_000):
    import bench_data as bds

    X, y, Xt, yt, fields = bds.make_criteo_like_split(rows, test_rows, n_factors=8, seed=0)
    return [[Split(X, y, Xt, yt, np.maximum(fields, 0).astype(np.int32))]]


_ML_FILES = tuple(f"ml-100k/{f}" for f in
                  [f"u{i}.base.gz" for i in range(1, 6)] + [f"u{i}.test" for i in range(1, 6)])


def catalogue(data_dir=None, include_synthetic=False, synthetic_rows=1_000_000):
    """Every data set this module knows, in a fixed order (lazily built)."""
    d = Path(data_dir or default_data_dir())
    sets = [
        DataSet("ml100k", "reg", lambda: [build_ml100k(d, [f"u{i}" for i in range(1, 6)])],
                "MovieLens 100k ratings, official u1..u5 folds pooled (80k/20k each); one-hot "
                "user + item, 2,625 columns; FFM fields user, item", True, _ML_FILES),
        DataSet("ml100k-uaub", "reg",
                lambda: [[s] for s in build_ml100k(d, ["ua", "ub"])],
                "MovieLens 100k, official ua / ub splits (10 test ratings per user), "
                "mean of the two", True,
                ("ml-100k/ua.base.gz", "ml-100k/ua.test", "ml-100k/ub.base.gz",
                 "ml-100k/ub.test")),
        DataSet("ml100k-side", "reg",
                lambda: [build_ml100k(d, [f"u{i}" for i in range(1, 6)], side=True)],
                "u1..u5 with user age bucket / gender / occupation and item genres: 6 fields, "
                "4-9 non-zeros per row", True,
                _ML_FILES + ("ml-100k/u.user", "ml-100k/u.item")),
        DataSet("criteo-xlearn", "binary", lambda: build_criteo_xlearn(d),
                "xLearn's Criteo libffm sample, 200 train / 200 test rows as shipped, 18 fields; "
                "values pre-normalised (0.3651 = 1/sqrt(7.5))", True,
                ("xlearn/criteo_ctr/small_train.txt", "xlearn/criteo_ctr/small_test.txt"),
                noisy=True),
        DataSet("mushroom", "binary", lambda: build_mushroom(d),
                "UCI mushroom one-hot (agaricus), 6,513 / 1,611 rows as shipped, 22 nnz/row",
                False, ("xlearn/mushroom/agaricus_train.txt", "xlearn/mushroom/agaricus_test.txt")),
        DataSet("titanic", "binary", lambda: build_titanic(d),
                "Kaggle Titanic (xLearn's preprocessing), 891 rows x 14 dense columns "
                "(binary, counts, 2 standardised); 3 x stratified 5-fold CV; FFM: one field per "
                "column", True, ("xlearn/titanic/titanic_train.txt",), noisy=True),
        DataSet("house-price", "reg", lambda: build_house_price(d),
                "Ames house prices, 1,456 rows x 403 standardised columns, target log price; "
                "3 x 5-fold CV", False, ("xlearn/house_price/house_price_train.txt.gz",)),
        DataSet("w8a", "binary", lambda: build_w8a(d),
                "LIBSVM w8a, 49,749 rows, 300 binary columns, 11.7 nnz/row, 3% positive; "
                "stratified 5-fold CV", False, ("w8a/w8a.gz",)),
        DataSet("criteo1tb-day0", "binary", lambda: build_criteo_1tb(d),
                "Criteo 1TB day 0, 10,000 raw rows (2.65% positive), 13 log-bucketed integer + "
                "26 categorical fields, encoded per training fold; stratified 5-fold CV", True,
                ("criteo_1tb/day_0.part.txt.gz",), noisy=True),
        DataSet("deepctr-criteo", "binary", lambda: build_deepctr_criteo(d),
                "DeepCTR raw Criteo sample, 200 rows (49 positive), 39 fields; 5 x stratified "
                "5-fold CV", True, ("deepctr/criteo_sample.txt",), noisy=True),
        DataSet("deepctr-avazu", "binary", lambda: build_deepctr_avazu(d),
                "DeepCTR raw Avazu sample, 100 rows (20 positive), 22 fields; 5 x stratified "
                "5-fold CV", True, ("deepctr/avazu_sample.txt",), noisy=True),
        DataSet("deepctr-movielens", "reg", lambda: build_deepctr_movielens(d),
                "DeepCTR MovieLens-1M sample, 200 ratings, 8 fields (genres multi-valued); "
                "5 x 5-fold CV", True, ("deepctr/movielens_sample.txt",), noisy=True),
    ]
    if include_synthetic:
        sets.append(DataSet(
            f"synthetic-{synthetic_rows // 1000}k", "binary",
            lambda: build_synthetic(synthetic_rows),
            f"benchmarks/bench_data.py make_criteo_like: {synthetic_rows:,} train / 200,000 test "
            "rows, 39 one-hot fields, ~1.95M columns, planted FM (oracle AUC ~0.78)", True))
    return sets


# files read by no data set, on purpose
_IGNORED = {
    "README.md",
    "ml-100k/README", "ml-100k/u.info", "ml-100k/u.genre", "ml-100k/u.occupation",
    "ml-100k/u.data.gz",  # the union of u1..u5.test: covered by the folds
}


def unknown_files(data_dir=None):
    """Files of the data folder that no data set here reads (new data to add)."""
    d = Path(data_dir or default_data_dir())
    if not d.is_dir():
        return []
    known = set(_IGNORED)
    for ds in catalogue(d):
        known.update(ds.files)
    out = []
    for p in sorted(d.rglob("*")):
        if p.is_file():
            rel = p.relative_to(d).as_posix()
            if rel not in known:
                out.append(rel)
    return out


def load_all(data_dir=None, names=None, include_synthetic=False, synthetic_rows=1_000_000):
    """The data sets (lazy), optionally only those named in ``names``."""
    sets = catalogue(data_dir, include_synthetic, synthetic_rows)
    if names:
        known = {s.name for s in sets}
        bad = [n for n in names if n not in known]
        if bad:
            raise SystemExit(f"unknown data set(s) {bad}; known: {sorted(known)}")
        sets = [s for s in sets if s.name in names]
    return sets


if __name__ == "__main__":
    import sys
    import time

    sys.path.insert(0, str(HERE))
    for ds in load_all(include_synthetic=False):
        t = time.perf_counter()
        reps = ds.repeats()
        s = reps[0][0]
        nnz = s.X_train.nnz / max(s.X_train.shape[0], 1)
        print(f"{ds.name:18s} {ds.task:6s} repeats={len(reps)} folds={len(reps[0])} "
              f"train={s.X_train.shape} test={s.X_test.shape[0]} nnz/row={nnz:.1f} "
              f"fields={'-' if s.fields is None else int(s.fields.max()) + 1} "
              f"y_mean={s.y_train.mean():.3f} ({time.perf_counter() - t:.1f}s)")
    print("unknown files:", unknown_files() or "none")
