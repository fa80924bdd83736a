"""Input validation at the Python boundary.

Everything the kernels trust is checked here, before any kernel runs: CSR
structure, column indices in range, finite values, shapes, labels, weights,
thread counts and random states.  Kernels then never check bounds.
"""
import numbers
import os
import warnings
from typing import NamedTuple

import numpy as np

from ._lazy import sparse as sp
from . import _utils
from ._compat import DataConversionWarning

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class CSRInput(NamedTuple):
    """A validated CSR matrix as the kernels take it."""

    data: np.ndarray      # float32 or float64, C-contiguous
    indices: np.ndarray   # int32 or int64, C-contiguous
    indptr: np.ndarray    # int64, C-contiguous, n_rows + 1
    shape: tuple
    # field-aware models: int32 field id of each stored entry (libffm's
    # per-entry fields; checked against the model by cfm._fields), or None
    fields: object = None

    @property
    def n_rows(self):
        return self.shape[0]


def _feature_names(X):
    cols = getattr(X, "columns", None)
    if cols is None or not hasattr(X, "dtypes"):
        return None
    names = np.asarray(cols, dtype=object)
    if len(names) and all(isinstance(c, str) for c in names):
        return names
    return None


def _to_matrix(X, name):
    """Convert X to a CSR matrix (no copy for CSR float32/float64)."""
    if X is None:
        raise ValueError(f"{name} is None; expected a 2-D array or sparse matrix")
    if sp.issparse(X):
        if X.ndim != 2:
            raise ValueError(f"Expected 2D input for {name}, got {X.ndim}D sparse array")
        X = X.tocsr() if X.format != "csr" else X
        if np.issubdtype(X.dtype, np.complexfloating):
            raise ValueError("Complex data not supported")
        if X.dtype not in _FLOAT_DTYPES:
            X = X.astype(np.float64)
        return X
    if hasattr(X, "sparse") and hasattr(X, "dtypes") and all(
        getattr(dt, "name", "").startswith("Sparse") for dt in X.dtypes
    ):  # pandas DataFrame of sparse columns
        return _to_matrix(sp.csr_matrix(X.sparse.to_coo()), name)
    if hasattr(X, "dtypes") and hasattr(X, "columns") and hasattr(X, "to_numpy"):
        X = _frame_to_numpy(X, name)  # pandas DataFrame
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"could not convert {name} to a numeric array: {exc}") from exc
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError("Complex data not supported")
    if arr.dtype not in _FLOAT_DTYPES:
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise type(exc)(
                f"{name} must be numeric; could not convert dtype {arr.dtype} to float: {exc}"
            ) from exc
    if arr.ndim != 2:
        raise ValueError(
            f"Expected 2D array for {name}, got {arr.ndim}D array instead. Reshape your data "
            "either using array.reshape(-1, 1) if your data has a single feature or "
            "array.reshape(1, -1) if it contains a single sample."
        )
    if arr.size and not np.isfinite(arr).all():
        what = "NaN" if np.isnan(arr).any() else "infinity"
        raise ValueError(f"Input {name} contains {what}.")
    return sp.csr_matrix(arr)


def _numeric_numpy_dtype(dt):
    """The NumPy dtype of a (pandas) column dtype if it is numeric or bool, else
    None (categorical, string, object, datetime, ... and extension dtypes
    NumPy does not know)."""
    try:
        npdt = np.dtype(getattr(dt, "numpy_dtype", dt))
    except TypeError:
        return None
    return npdt if npdt.kind in "biuf" else None


def _frame_to_numpy(X, name):
    """A pandas DataFrame as a 2-D float array; a ValueError listing every
    non-numeric column (and what to do) otherwise."""
    bad = [(col, dt) for col, dt in zip(X.columns, X.dtypes) if _numeric_numpy_dtype(dt) is None]
    if bad:
        shown = ", ".join(f"{col!r} ({dt})" for col, dt in bad[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise ValueError(
            f"{name} has {len(bad)} non-numeric column(s): {shown}{more}. Give the estimator "
            "an encoder for raw columns (e.g. cfm.FFMClassifier(encoder=cfm.FieldEncoder())), "
            "or one-hot encode categorical / string columns (e.g. pandas.get_dummies or "
            "sklearn.preprocessing.OneHotEncoder(sparse_output=True)) before fitting or "
            "predicting"
        )
    kinds = {_numeric_numpy_dtype(dt) for dt in X.dtypes}
    out = np.float32 if kinds and kinds <= {np.dtype(np.float32)} else np.float64
    # nullable columns (Int64, Float64, boolean) hold pd.NA: read as NaN, which
    # the finiteness check then reports
    return X.to_numpy(dtype=out, na_value=np.nan)


def _check_csr_offsets(M, name):
    """Row offsets must be valid before anything (even scipy) walks the rows."""
    indptr = np.asarray(M.indptr)
    nnz = min(len(M.indices), len(M.data))
    if indptr.ndim != 1 or len(indptr) != M.shape[0] + 1:
        raise ValueError(f"{name} is not a valid CSR matrix: indptr has length {len(indptr)}, "
                         f"expected {M.shape[0] + 1}")
    if len(M.indices) != len(M.data):
        raise ValueError(f"{name} is not a valid CSR matrix: {len(M.indices)} indices but "
                         f"{len(M.data)} values")
    if indptr[0] != 0 or indptr[-1] != nnz:
        raise ValueError(f"{name} is not a valid CSR matrix: indptr must start at 0 and end at "
                         f"nnz={nnz}, got {int(indptr[0])} and {int(indptr[-1])}")
    bad = np.flatnonzero(np.diff(indptr) < 0)
    if bad.size:
        raise ValueError(f"{name} is not a valid CSR matrix: row offsets decrease at row "
                         f"{int(bad[0])}")


def check_X(X, *, name="X", n_features=None, estimator=None, min_samples=1,
            keep_entries=False):
    """Validate X and return a :class:`CSRInput` the kernels can trust.

    CSR input of dtype float32/float64 with canonical structure is used
    without copying its data.  ``keep_entries``: the stored entries stay as
    they are, in their order, duplicates and zeros included (per-entry FFM
    fields are aligned with them); other sparse formats are refused then.
    """
    if keep_entries and sp.issparse(X) and X.format != "csr":
        raise ValueError(f"per-entry fields need {name} as a CSR matrix (its stored entries "
                         f"in order), got format {X.format!r}")
    M = _to_matrix(X, name)
    n_rows, n_cols = M.shape
    if n_rows < min_samples:
        raise ValueError(
            f"Found array with {n_rows} sample(s) (shape={M.shape}) while a minimum of "
            f"{min_samples} is required."
        )
    if n_features is None and n_cols < 1:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={M.shape}) while a minimum of 1 is required."
        )
    if n_features is not None and n_cols != n_features:
        est = type(estimator).__name__ if estimator is not None else "the model"
        raise ValueError(
            f"X has {n_cols} features, but {est} is expecting {n_features} features as input."
        )
    _check_csr_offsets(M, name)
    data = np.ascontiguousarray(M.data)
    indices = M.indices
    if indices.dtype not in (np.int32, np.int64):
        indices = indices.astype(np.int64)
    indices = np.ascontiguousarray(indices)
    indptr = np.ascontiguousarray(M.indptr, dtype=np.int64)
    status, row, pos, canonical = _utils.check_csr(data, indices, indptr, n_cols,
                                                   effective_n_threads(getattr(estimator, "n_jobs", None)))
    if status != _utils.CSR_OK:
        if status == _utils.CSR_NONFINITE:
            v = data[pos]
            what = "NaN" if np.isnan(v) else "infinity"
            raise ValueError(f"Input {name} contains {what} (row {row}, column {indices[pos]}).")
        if status == _utils.CSR_INDEX_OUT_OF_RANGE:
            raise ValueError(
                f"{name} has column index {int(indices[pos])} at row {row}, outside "
                f"[0, {n_cols})."
            )
        raise ValueError(f"{name} is not a valid CSR matrix: corrupt row offsets near row {row}")
    if not canonical and not keep_entries:
        # Unsorted or duplicate column indices within a row (duplicates would be
        # counted as distinct interacting features) or stored zeros: sum the
        # duplicates and drop the zeros, on a copy.
        M = M.copy()
        M.sum_duplicates()
        M.eliminate_zeros()
        return check_X(M, name=name, n_features=n_features, estimator=estimator,
                       min_samples=min_samples)
    return CSRInput(data, indices, indptr, (n_rows, n_cols))


def check_y(y, n_samples, *, numeric=True, name="y", estimator=None):
    """Return y as a 1-D array of length n_samples (float64 when numeric)."""
    if y is None:
        est = type(estimator).__name__ if estimator is not None else "this estimator"
        raise ValueError(f"{est} requires y to be passed, but the target y is None.")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn(
            "A column-vector y was passed when a 1d array was expected. Please change the "
            "shape of y to (n_samples,), for example using ravel().",
            DataConversionWarning,
            stacklevel=3,
        )
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(f"{name} should be a 1d array, got an array of shape {y.shape} instead.")
    if y.shape[0] != n_samples:
        raise ValueError(
            f"Found input variables with inconsistent numbers of samples: [{n_samples}, "
            f"{y.shape[0]}]"
        )
    if numeric:
        if np.issubdtype(y.dtype, np.complexfloating):
            raise ValueError("Complex data not supported")
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be numeric for regression: {exc}") from exc
        if not np.isfinite(y).all():
            what = "NaN" if np.isnan(y).any() else "infinity"
            raise ValueError(f"Input {name} contains {what}.")
    return y


def check_sample_weight(sample_weight, n_samples):
    """Return None (all ones) or a float64 array of non-negative finite weights."""
    if sample_weight is None:
        return None
    if isinstance(sample_weight, numbers.Number):
        sw = np.full(n_samples, float(sample_weight))
    else:
        sw = np.asarray(sample_weight, dtype=np.float64)
        if sw.ndim != 1 or sw.shape[0] != n_samples:
            raise ValueError(
                f"sample_weight.shape == {sw.shape}, expected ({n_samples},)!"
            )
    if not np.isfinite(sw).all():
        raise ValueError("sample_weight contains NaN or infinity.")
    if (sw < 0).any():
        raise ValueError("Negative values in data passed to sample_weight")
    if sw.sum() <= 0:
        raise ValueError("sample_weight sums to zero; at least one weight must be positive")
    return np.ascontiguousarray(sw)


# Most threads cfm runs per usable core: ``n_jobs`` (or ``--threads``, or
# OMP_NUM_THREADS) above MAX_THREADS_PER_CORE * usable_cores() is reduced to
# it.  More threads than cores never speeds up cfm's CPU-bound kernels; a few
# per core are allowed (e.g. to exercise Hogwild on a small machine), but an
# unbounded count would let a typo or a crafted model file start 10**5
# threads or allocate per-thread buffers for 10**9.
MAX_THREADS_PER_CORE = 4


def usable_cores():
    """CPUs this process may run on: its CPU affinity (what taskset, cgroup
    cpusets and container CPU sets allow), not the machine's core count."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = _utils.omp_num_procs() if _utils.openmp_enabled() else (os.cpu_count() or 1)
    return max(1, int(n))


def max_threads():
    """The most threads cfm uses: MAX_THREADS_PER_CORE per usable core."""
    return MAX_THREADS_PER_CORE * usable_cores()


def check_n_jobs(n_jobs, name="n_jobs"):
    """Raise ValueError unless n_jobs is None or a non-zero integer."""
    if n_jobs is not None and (
        isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral)
    ):
        raise ValueError(f"{name} must be None or a non-zero integer, got {n_jobs!r}")
    if n_jobs == 0:
        raise ValueError(f"{name} == 0 has no meaning; use None, a positive or a negative int")


def effective_n_threads(n_jobs):
    """Number of threads for ``n_jobs`` with scikit-learn's meaning.

    None -> OpenMP's default (honours OMP_NUM_THREADS and threadpoolctl limits;
    without them, the usable cores), -1 -> all usable cores, -k -> all + 1 - k,
    k > 0 -> k; 0 is an error.  The result is at most :func:`max_threads`
    (MAX_THREADS_PER_CORE threads per usable core): larger requests are
    reduced to it.  "Usable cores" is the process's CPU affinity
    (``os.sched_getaffinity``), not ``os.cpu_count()``.  Always 1 when cfm was
    built without OpenMP.
    """
    check_n_jobs(n_jobs)
    if not _utils.openmp_enabled():
        return 1
    cap = max_threads()
    default = _utils.omp_max_threads()
    if os.environ.get("OMP_NUM_THREADS") is None:
        default = min(default, usable_cores())
    if n_jobs is None:
        n = default
    elif n_jobs < 0:
        n = default + int(n_jobs) + 1
    else:
        n = int(n_jobs)
    return max(1, min(n, cap))


def memory_limit():
    """Bytes one array sized by input data may take: this machine's physical
    memory, or what is left of the process's address-space limit (RLIMIT_AS)
    when that is lower.  Model tables and a libffm file's field array above
    it are refused before anything is allocated (they could not be used
    anyway): a small file with a huge id gets an error, not an allocation."""
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        limit = page * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 1 << 40
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/statm") as f:
                used = int(f.read().split()[0]) * page
            limit = min(limit, max(0, soft - used))
    except (ImportError, ValueError, OSError):  # pragma: no cover - not Linux
        pass
    return limit


def check_random_state(seed):
    """Turn seed into a ``np.random.RandomState`` or ``np.random.Generator``."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return np.random.RandomState(int(seed))
    if isinstance(seed, (np.random.RandomState, np.random.Generator)):
        return seed
    raise ValueError(f"{seed!r} cannot be used to seed a random number generator")


def draw_seed(random_state):
    """A 63-bit integer seed drawn from any accepted random_state."""
    rs = check_random_state(random_state)
    if isinstance(rs, np.random.Generator):
        return int(rs.integers(0, 2**63 - 1))
    return int(rs.randint(0, 2**31 - 1)) * (2**31) + int(rs.randint(0, 2**31 - 1))


# ---------------------------------------------------------------- parameters
# Largest n_epochs, n_burn_in, n_kept_samples, n_iter_no_change, verbose (counts
# the kernels take as C ints).
MAX_COUNT = 2**31 - 1


def check_number(name, value, *, low=None, high=None, integer=False, low_open=False,
                 allow_none=False):
    """A real (or integer) scalar parameter within [low, high] (low excluded
    with ``low_open``), finite, never a bool."""
    if value is None and allow_none:
        return
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        what = "an integer" if integer else "a real number"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    if not isinstance(value, numbers.Integral) and not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        op = ">" if low_open else ">="
        raise ValueError(f"{name} must be {op} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")


class Interval(NamedTuple):
    """Rule: a number in [low, high] (``low_open``: low excluded); None allowed
    when ``none``."""
    integer: bool
    low: object = None
    high: object = None
    low_open: bool = False
    none: bool = False

    def check(self, name, value):
        check_number(name, value, low=self.low, high=self.high, integer=self.integer,
                     low_open=self.low_open, allow_none=self.none)


class Options(NamedTuple):
    """Rule: one of ``values``."""
    values: tuple

    def check(self, name, value):
        if value not in self.values:
            raise ValueError(f"{name} must be one of {sorted(self.values)}, got {value!r}")


class Boolean(NamedTuple):
    """Rule: True or False (or None when ``none``)."""
    none: bool = False

    def check(self, name, value):
        if value is None and self.none:
            return
        if not isinstance(value, (bool, np.bool_)):
            allowed = "True, False or None" if self.none else "True or False"
            raise ValueError(f"{name} must be {allowed}, got {value!r}")


class Sizes(NamedTuple):
    """Rule: a tuple or list (or 1-D array) of at most ``max_len`` integers in
    [1, high] (e.g. hidden layer sizes)."""
    max_len: int
    high: int

    def check(self, name, value):
        if isinstance(value, np.ndarray) and value.ndim == 1:
            value = value.tolist()
        if not isinstance(value, (tuple, list)):
            raise ValueError(f"{name} must be a tuple of positive integers, got {value!r}")
        if len(value) > self.max_len:
            raise ValueError(f"{name} may hold at most {self.max_len} entries, got "
                             f"{len(value)}")
        for v in value:
            check_number(f"every entry of {name}", v, low=1, high=self.high, integer=True)


def check_params(obj, rules):
    """Check every attribute of ``obj`` named in ``rules`` {name: rule}, in order."""
    for name, rule in rules.items():
        rule.check(name, getattr(obj, name))


def check_model_size(need, shape, what, source=None, locate=None):
    """Refuse, before allocating, parameter tables of ``need`` bytes larger
    than memory_limit(): a MemoryError, or for a model sized by a data file
    (``source``) a DataFormatError naming the file and, through
    ``locate()``, the lines of its largest ids.  ``shape`` / ``what`` describe
    the model in the message."""
    from .exceptions import DataFormatError

    limit = memory_limit()
    if need <= limit:
        return
    msg = (f"a model of {shape} ({what}) needs {need / 2**30:,.1f} GiB of parameters, more "
           f"than the {limit / 2**30:,.1f} GiB of memory available")
    if source is None:
        raise MemoryError(msg + "; use fewer features, fields or factors")
    ids = locate() if locate is not None else ""
    raise DataFormatError(
        f"{os.fspath(source)}{ids}: {msg}; a model has a row of parameters per id up to the "
        "largest, so use smaller ids (remap or hash them)")


def set_feature_names(est, X):
    """Record X's column names on ``est`` (feature_names_in_), or forget them."""
    names = _feature_names(X)
    if names is not None:
        est.feature_names_in_ = names
    elif hasattr(est, "feature_names_in_"):
        del est.feature_names_in_


def check_feature_names(est, X):
    """X's column names against those ``est`` was fitted with (scikit-learn's rules)."""
    names = _feature_names(X)
    fitted = getattr(est, "feature_names_in_", None)
    if names is None and fitted is None:
        return
    if names is not None and fitted is None:
        warnings.warn(f"X has feature names, but {type(est).__name__} was fitted "
                      "without feature names", UserWarning, stacklevel=4)
        return
    if names is None:
        warnings.warn("X does not have valid feature names, but "
                      f"{type(est).__name__} was fitted with feature names",
                      UserWarning, stacklevel=4)
        return
    if len(names) != len(fitted) or np.any(names != fitted):
        raise ValueError("The feature names should match those that were passed during "
                         "fit.")


def is_stream(X):
    """A path (train out of core) or a non-array iterable of (X, y) chunks."""
    if isinstance(X, (str, os.PathLike)):
        return True
    if callable(X):
        return True
    if isinstance(X, (list, tuple)) and X and isinstance(X[0], tuple) and len(X[0]) >= 2 \
            and hasattr(X[0][0], "shape"):
        return True
    return hasattr(X, "__next__")  # a generator / iterator of chunks


def check_eval_set(eval_set, n_features, encode_y, estimator=None):
    """eval_set -- a pair (X_val, y_val) or a list of pairs -- as
    [(validated X, encode_y(y, n_rows))]."""
    if eval_set is None:
        return []
    if isinstance(eval_set, tuple) and len(eval_set) == 2 and not isinstance(eval_set[0], tuple):
        eval_set = [eval_set]
    out = []
    for i, pair in enumerate(eval_set):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError("eval_set must be a pair (X_val, y_val) or a list of pairs")
        Xv = check_X(pair[0], name=f"eval_set[{i}] X", n_features=n_features,
                     estimator=estimator)
        out.append((Xv, encode_y(pair[1], Xv.n_rows)))
    return out


def check_estimator_params(est):
    """For front ends, before reading anything: raise ValueError naming a bad
    parameter of estimator ``est``; return its parameter dtype."""
    return est._validate_params()


def check_fit_size(est, n_features, n_fields=None, *, source=None, info=None):
    """For front ends, before reading training data: validate estimator
    ``est``'s parameters and refuse a model of ``n_features`` (x ``n_fields``)
    larger than memory (MemoryError; a DataFormatError naming ``source``'s
    lines, ``info`` being its cfm.scan_file result)."""
    est._check_model_size(n_features, n_fields, est._validate_params(), source, info)
