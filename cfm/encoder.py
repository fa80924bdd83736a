"""``cfm.FieldEncoder``: raw tabular columns -> a sparse matrix with one field per column.

    enc = cfm.FieldEncoder().fit(df)        # a pandas DataFrame of raw columns
    X = enc.transform(df)                   # CSR, n_features_out_ columns
    enc.fields_                             # the field (input column) of each output column

or let an estimator own it, so that it is saved inside the model file::

    model = cfm.FFMClassifier(encoder=cfm.FieldEncoder()).fit(df, y)
    model.predict_proba(df_new)             # raw rows in, unseen values handled
    cfm.load("model.cfm").predict(df_new)   # the encoder comes back with the model

Each input column becomes one field, and each row has exactly one entry per
column (the output is CSR with ``n_columns`` entries per row), laid out as a
block of ids per column in input order:

* categorical column (``categorical``): id 0 = missing, 1 = "other" (values
  seen fewer than ``min_frequency`` times in fit, and values never seen),
  2.. = the vocabulary, sorted; value 1.  With ``n_buckets``: id 0 =
  missing, 1 + FNV-1a(value) % n_buckets, no vocabulary kept (for unbounded
  vocabularies; distinct values may share a bucket, unseen ones included).
* numeric column, ``numeric="bucket"``: id 0 = missing, then one id per
  quantile bin of the training values (``n_quantiles`` bins, fewer when
  values repeat); value 1.
* numeric column, ``numeric="value"``: id 0 = missing (value 1), id 1 = the
  number, clipped to the training range and (``standardize``) standardized.

Values are matched by their canonical text (cfm/_encoding.py): ``1005``,
``1005.0`` and ``"1005"`` are one category, so rows read back from a CSV
file score as the DataFrame the model was trained on.  Nothing is random:
the same data gives the same encoder whatever its row order.
"""
import numbers

import numpy as np

from ._compat import BaseEstimator, TransformerMixin
from ._lazy import sparse
from .exceptions import NotFittedError

_NUMERIC = ("bucket", "value")
_KINDS = ("category", "hash", "value", "bucket")
MAX_COLUMNS = 1 << 20


def _pandas():
    try:
        import pandas
    except ImportError:  # pragma: no cover - pandas is in the test extras
        raise ImportError("cfm.FieldEncoder needs pandas (pip install pandas)") from None
    return pandas


def _name(c):
    if isinstance(c, (bool, np.bool_)) or not isinstance(c, (str, numbers.Integral)):
        raise TypeError(f"column names must be strings or integers, got {c!r}")
    return c if isinstance(c, str) else int(c)


class FieldEncoder(TransformerMixin, BaseEstimator):
    """Encode raw columns (categorical, string, integer, float) for FM / FFM.

    Parameters
    ----------
    categorical : "auto" or list of column names, default="auto"
        Which columns are categorical.  "auto": string, object, category,
        bool and integer columns (ids, codes, hashed values); float columns
        are numeric (pandas reads an integer column with missing cells as
        float).  A list: exactly those columns (any dtype) are categorical,
        the others must be numeric.
    numeric : {"bucket", "value"}, default="bucket"
        How numeric columns are encoded: "bucket" (one id per quantile bin of
        the training values: learns any shape, robust to heavy tails and
        outliers) or "value" (the number itself, clipped to the training
        range).
    n_quantiles : int or "auto", default="auto"
        Bins per numeric column with ``numeric="bucket"`` (fewer when values
        repeat). "auto": one bin per 1,000 training values of the column,
        at least 4 and at most 32 (finer bins need more rows to learn their
        weights and factors: benchmarks/results/RESULTS_encoder_defaults.md).
    standardize : bool, default=True
        ``numeric="value"``: subtract the training mean and divide by the
        standard deviation.
    min_frequency : int or float, default=2
        Categorical values seen fewer times than this in ``fit`` (a fraction
        of the rows when a float in (0, 1)) share the column's "other" id
        with values never seen, which is then trained rather than left at its
        initial value.  1 keeps every value seen.
    n_buckets : int or None, default=None
        Hash the categorical columns into this many buckets each instead of
        keeping a vocabulary (64-bit FNV-1a of the value's text, stable
        across releases and processes).
    dtype : {"float32", "float64"}, default="float32"
        Dtype of the output values.

    Attributes
    ----------
    feature_names_in_ : ndarray of object
        The input columns, in order (integers for an array's positions).
    n_features_in_ : int
    kinds_ : list of str
        Per column: "category", "hash", "bucket" or "value".
    vocabularies_ : list
        Per column: the kept values' canonical text (sorted) for a
        "category" column, else None.
    offsets_ : ndarray of shape (n_features_in_ + 1,)
        Column j owns output columns ``offsets_[j]:offsets_[j + 1]``.
    n_features_out_ : int
    fields_ : ndarray of int32, shape (n_features_out_,)
        Field (input column) of each output column: FFM's ``fields``.
    n_fields_ : int
    """

    def __init__(self, *, categorical="auto", numeric="bucket", n_quantiles="auto",
                 standardize=True, min_frequency=2, n_buckets=None, dtype="float32"):
        self.categorical = categorical
        self.numeric = numeric
        self.n_quantiles = n_quantiles
        self.standardize = standardize
        self.min_frequency = min_frequency
        self.n_buckets = n_buckets
        self.dtype = dtype

    # ------------------------------------------------------------ parameters
    def _check_params(self):
        def integer(name, low, high=2**31 - 1, none=False):
            v = getattr(self, name)
            if v is None and none:
                return
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) \
                    or not low <= v <= high:
                raise ValueError(f"{name} must be an integer in [{low}, {high}]"
                                 + (" or None" if none else "") + f", got {v!r}")

        if not (self.categorical == "auto" or isinstance(self.categorical, (list, tuple))):
            raise ValueError(f"categorical must be 'auto' or a list of column names, got "
                             f"{self.categorical!r}")
        if self.numeric not in _NUMERIC:
            raise ValueError(f"numeric must be 'bucket' or 'value', got {self.numeric!r}")
        if self.n_quantiles != "auto":
            integer("n_quantiles", 2, 1 << 16)
        integer("n_buckets", 1, 2**31 - 3, none=True)
        if not isinstance(self.standardize, (bool, np.bool_)):
            raise ValueError(f"standardize must be True or False, got {self.standardize!r}")
        mf = self.min_frequency
        if isinstance(mf, (bool, np.bool_)) or not isinstance(mf, numbers.Real) or not (
                (isinstance(mf, numbers.Integral) and mf >= 1)
                or (not isinstance(mf, numbers.Integral) and 0 < mf < 1)):
            raise ValueError("min_frequency must be an integer >= 1 or a fraction in (0, 1), "
                             f"got {mf!r}")
        if self.dtype not in ("float32", "float64", np.float32, np.float64):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")

    # ------------------------------------------------------------------ input
    def _frame(self, X, fitted):
        """X as a DataFrame whose columns are the fitted ones, in order."""
        pd = _pandas()
        if sparse.issparse(X):
            raise TypeError("FieldEncoder encodes raw columns (a pandas DataFrame); X is a "
                            "sparse matrix, which FM / FFM estimators take as it is")
        if isinstance(X, (str, bytes)) or not any(hasattr(X, a) for a in ("__len__", "shape",
                                                                          "__array__")):
            raise TypeError(f"FieldEncoder needs a pandas DataFrame (or a 2-D array / dict of "
                            f"columns), got {type(X).__name__}")
        if not isinstance(X, pd.DataFrame):
            if isinstance(X, dict):
                X = pd.DataFrame(X)
            else:
                arr = np.asarray(X)
                if arr.dtype.kind not in "biufcUSO":
                    arr = np.asarray(X, dtype=object)
                if arr.ndim != 2:
                    raise ValueError(f"FieldEncoder needs 2-D input (rows x columns), got "
                                     f"{arr.ndim}-D. Reshape your data, e.g. with "
                                     "array.reshape(-1, 1) for a single column")
                if fitted and arr.shape[1] != self.n_features_in_:
                    raise ValueError(f"X has {arr.shape[1]} features, but FieldEncoder is "
                                     f"expecting {self.n_features_in_} features as input")
                X = pd.DataFrame(arr)
        names = [_name(c) for c in X.columns]
        if len(set(names)) != len(names):
            dup = sorted({str(c) for c in names if names.count(c) > 1})
            raise ValueError(f"X has duplicate column names: {dup}")
        if not fitted:
            return X, names
        want = list(self.feature_names_in_)
        missing = [c for c in want if c not in set(names)]
        if missing:
            raise ValueError(f"X lacks columns the encoder was fitted with: {missing[:10]}"
                             + (f" and {len(missing) - 10} more" if len(missing) > 10 else ""))
        extra = [c for c in names if c not in set(want)]
        if extra:
            raise ValueError(f"X has columns the encoder was not fitted with: {extra[:10]}"
                             + (f" and {len(extra) - 10} more" if len(extra) > 10 else "")
                             + "; drop them (e.g. the label column)")
        return X, want

    def _kind_of(self, col, name, listed):
        pd = _pandas()
        dt = col.dtype
        if pd.api.types.is_complex_dtype(dt):
            raise ValueError(f"Complex data not supported (column {name!r})")
        if pd.api.types.is_datetime64_any_dtype(dt) or pd.api.types.is_timedelta64_dtype(dt):
            raise TypeError(f"column {name!r} has dtype {dt}, which FieldEncoder does not "
                            "encode: convert it to numbers or strings first")
        numeric = (pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt)
                   and not isinstance(dt, pd.CategoricalDtype))
        if listed is not None:
            if name in listed:
                return "hash" if self.n_buckets is not None else "category"
            if not numeric:
                raise TypeError(f"column {name!r} (dtype {dt}) is not numeric and not listed "
                                "in categorical")
            return self.numeric
        if numeric and pd.api.types.is_float_dtype(dt):
            return self.numeric
        return "hash" if self.n_buckets is not None else "category"

    # -------------------------------------------------------------------- fit
    def fit(self, X, y=None):
        """Learn each column's kind, vocabulary or bins from ``X`` (a pandas
        DataFrame, a dict of columns or a 2-D array; ``y`` is ignored)."""
        from . import _encoding as E

        self._check_params()
        X, names = self._frame(X, fitted=False)
        n = X.shape[0]
        if not names:
            raise ValueError(f"0 feature(s) (shape={X.shape}) while a minimum of 1 is "
                             "required by FieldEncoder")
        if n == 0:
            raise ValueError(f"0 sample(s) (shape={X.shape}) while a minimum of 1 is "
                             "required by FieldEncoder")
        if len(names) > MAX_COLUMNS:
            raise ValueError(f"X has {len(names):,} columns; FieldEncoder takes at most "
                             f"{MAX_COLUMNS:,} (one field each)")
        listed = None
        if self.categorical != "auto":
            listed = {_name(c) for c in self.categorical}
            unknown = sorted(str(c) for c in listed - set(names))
            if unknown:
                raise ValueError(f"categorical names columns not in X: {unknown}")
        mf = self.min_frequency
        threshold = int(mf) if isinstance(mf, numbers.Integral) else max(1, int(np.ceil(mf * n)))
        kinds, vocabs, stats = [], [], []
        for j, name in enumerate(names):
            col = X.iloc[:, j]
            kind = self._kind_of(col, name, listed)
            vocab, st = None, None
            if kind == "category":
                codes, uniques = E.factorize(col)
                vocab = E.fit_vocabulary(codes, uniques, name, threshold)
            elif kind == "hash":
                E.canonical_text(E.factorize(col)[1], name)  # refuse what cannot be hashed
            else:
                x = E.to_float(col, name)
                st = _numeric_stats(x[np.isfinite(x)], kind, self.n_quantiles, self.standardize)
            kinds.append(kind)
            vocabs.append(vocab)
            stats.append(st)
        self._set_fitted(names, kinds, vocabs, stats)
        return self

    def _set_fitted(self, names, kinds, vocabs, stats):
        sizes = []
        for kind, vocab, st in zip(kinds, vocabs, stats):
            sizes.append(2 + len(vocab) if kind == "category" else
                         1 + int(self.n_buckets) if kind == "hash" else
                         2 + len(st["edges"]) if kind == "bucket" else 2)
        self.feature_names_in_ = np.array(names, dtype=object)
        self.n_features_in_ = len(names)
        self.kinds_ = list(kinds)
        self.vocabularies_ = list(vocabs)
        self._stats = list(stats)
        self.offsets_ = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self.n_features_out_ = int(self.offsets_[-1])
        self.fields_ = np.repeat(np.arange(len(names), dtype=np.int32), sizes)
        self.n_fields_ = len(names)
        self._index = [None] * len(names)

    def _check_is_fitted(self):
        if "offsets_" not in self.__dict__:
            raise NotFittedError("This FieldEncoder instance is not fitted yet. Call 'fit' "
                                 "with appropriate arguments before using this encoder.")

    def __sklearn_is_fitted__(self):
        return "offsets_" in self.__dict__

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # a missing value has its own id
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        tags.transformer_tags.preserves_dtype = []  # the output's dtype is ``dtype``
        return tags

    def __getstate__(self):
        state = dict(super().__getstate__() or {})  # scikit-learn adds its version
        if "_index" in state:  # rebuilt on first use
            state["_index"] = [None] * len(state["_index"])
        return state

    # -------------------------------------------------------------- transform
    def transform(self, X):
        """Encode ``X`` (the fitted columns, by name, in any order) as a CSR
        matrix of shape (n_rows, n_features_out_), one entry per column per row.
        Unseen categorical values take their column's "other" id; missing
        values (None, NaN, NA) their column's missing id."""
        from . import _encoding as E

        self._check_is_fitted()
        X, names = self._frame(X, fitted=True)
        pd = _pandas()
        n, m = X.shape[0], len(names)
        index_dtype = np.int32 if self.n_features_out_ < 2**31 else np.int64
        # one contiguous row per column (filled column by column), transposed once;
        # values are 1 except in "value" columns
        ids = np.empty((m, n), dtype=index_dtype)
        vals = np.ones((n, m), dtype=np.dtype(self.dtype)) if "value" in self.kinds_ else None
        for j, name in enumerate(names):
            col = X[name]
            if isinstance(col, pd.DataFrame):  # pragma: no cover - duplicates refused above
                raise ValueError(f"X has several columns named {name!r}")
            kind, off = self.kinds_[j], int(self.offsets_[j])
            if kind in ("category", "hash"):
                if kind == "category" and self._index[j] is None:
                    self._index[j] = pd.Index(self.vocabularies_[j], dtype=object)
                codes, uniques = E.factorize(col)
                local = E.category_ids(codes, uniques, name, index=self._index[j],
                                       n_buckets=self.n_buckets if kind == "hash" else None)
                np.add(local, off, out=ids[j], casting="unsafe")
                continue
            x = E.to_float(col, name)
            miss = np.isnan(x)
            st = self._stats[j]
            if kind == "bucket":
                local = 1 + np.searchsorted(st["edges"], x, side="right")
                local[miss] = 0
                np.add(local, off, out=ids[j], casting="unsafe")
            else:
                v = (np.clip(x, st["lo"], st["hi"]) - st["mean"]) / st["scale"]
                ids[j] = off + 1
                ids[j][miss] = off
                v[miss] = 1.0
                vals[:, j] = v
        indptr = np.arange(0, n * m + 1, m, dtype=np.int64 if n * m >= 2**31 else index_dtype)
        data = vals.ravel() if vals is not None else np.ones(n * m, dtype=np.dtype(self.dtype))
        return sparse.csr_matrix((data, ids.T.ravel(), indptr),
                                 shape=(n, self.n_features_out_))

    def fit_transform(self, X, y=None):
        """``fit(X).transform(X)``."""
        return self.fit(X, y).transform(X)

    def get_feature_names_out(self, input_features=None):
        """Names of the output columns: ``col=value``, ``col=<missing>``,
        ``col=<other>``, ``col#bucket``, ``col[low,high)``, ``col``."""
        self._check_is_fitted()
        out = []
        for j, name in enumerate(self.feature_names_in_):
            kind, st = self.kinds_[j], self._stats[j]
            out.append(f"{name}=<missing>")
            if kind == "category":
                out.append(f"{name}=<other>")
                out.extend(f"{name}={v}" for v in self.vocabularies_[j])
            elif kind == "hash":
                out.extend(f"{name}#{b}" for b in range(int(self.n_buckets)))
            elif kind == "bucket":
                e = [-np.inf] + [float(v) for v in st["edges"]] + [np.inf]
                out.extend(f"{name}[{a:g},{b:g})" for a, b in zip(e[:-1], e[1:]))
            else:
                out.append(str(name))
        return np.array(out, dtype=object)

    # ------------------------------------------------------------ model files
    def _to_file(self, prefix="encoder"):
        """(header entry, {array name: array}) for a model file."""
        from ._encoder_file import to_file

        self._check_is_fitted()
        return to_file(self, prefix)

    @classmethod
    def _from_file(cls, entry, arrays, prefix="encoder"):
        """A fitted encoder from a model file's entry and arrays; ValueError
        when they are inconsistent (everything is checked, nothing trusted)."""
        from ._encoder_file import from_file

        return from_file(cls, entry, arrays, prefix)


def _numeric_stats(finite, kind, n_quantiles, standardize):
    if kind == "bucket":
        if finite.size == 0:
            return {"edges": np.empty(0)}
        if n_quantiles == "auto":
            n_quantiles = int(np.clip(finite.size // 1000, 4, 32))
        qs = np.quantile(finite, np.linspace(0.0, 1.0, n_quantiles + 1)[1:-1])
        return {"edges": np.unique(qs)}
    if finite.size == 0:
        return {"lo": 0.0, "hi": 0.0, "mean": 0.0, "scale": 1.0}
    lo, hi = float(finite.min()), float(finite.max())
    mean, std = float(finite.mean()), float(finite.std())
    if not standardize:
        mean, std = 0.0, 1.0
    elif not (np.isfinite(mean) and np.isfinite(std)):  # values near the float64 limit
        mean, std = lo / 2 + hi / 2, hi / 2 - lo / 2
    return {"lo": lo, "hi": hi, "mean": mean,
            "scale": std if np.isfinite(std) and std > 0 else 1.0}
