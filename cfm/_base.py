"""Shared machinery of the FM estimators: parameters, state, the epoch loop.

Model state is plain NumPy: a parameter table ``_table`` of shape
(n_features, stride) holding, per feature, ``[w, v_0..v_{k-1}, optimizer
state, padding]`` (one record per feature, see src/cfm/_fm.pyx for why), and
``_w0_state = [w0, a, b]``.  ``w_``, ``V_`` and ``w0_`` are views onto it.
Estimators pickle and copy as plain data.
"""
import numbers
import os
import sys
import time

import numpy as np

from . import _fm, _utils
from ._compat import BaseEstimator
from ._metrics import METRICS
from ._validation import (
    memory_limit,
    check_sample_weight,
    check_n_jobs,
    check_X,
    draw_seed,
    effective_n_threads,
    _feature_names,
)
from .exceptions import DataFormatError, DivergenceError, NotFittedError

SOLVERS = {"sgd": 0, "adagrad": 1, "ftrl": 2, "als": 3, "mcmc": 4}
# Solvers that visit the parameters coordinate-wise (cfm/_bayes.py), not per sample.
COORDINATE_SOLVERS = ("als", "mcmc")


def _input_zero_based(model):
    """How ``model`` reads libsvm ids of the files it scores: True (zero-based,
    column j is id j), False (one-based).  Estimators fitted or unpickled
    before every model recorded it count as zero-based (fitted from arrays)."""
    zb = getattr(model, "_input_zero_based", None)
    return bool(zb) if zb is not None else True


def _is_stream(X):
    """A path (train out of core) or a non-array iterable of (X, y) chunks."""
    if isinstance(X, (str, os.PathLike)):
        return True
    if callable(X):
        return True
    if isinstance(X, (list, tuple)) and X and isinstance(X[0], tuple) and len(X[0]) >= 2 \
            and hasattr(X[0][0], "shape"):
        return True
    return hasattr(X, "__next__")  # a generator / iterator of chunks


def _peek_chunk(source):
    if hasattr(source, "__next__"):
        raise ValueError("X is a one-shot iterator; pass a list of (X, y) chunks or a function "
                         "returning a fresh iterator, so that every epoch can re-read them")
    it = source() if callable(source) else iter(source)
    try:
        first = next(iter(it))
    except StopIteration:
        raise ValueError("the training data stream is empty") from None
    if not (isinstance(first, (tuple, list)) and len(first) == 2 and hasattr(first[0], "shape")):
        raise ValueError("chunks must be (X, y) pairs with a 2-D X")
    return first
LOSSES = {"squared": 0, "logistic": 1}
# Initial value of AdaGrad accumulators (as libffm/xLearn): damps the first steps.
ADAGRAD_INIT = 1.0
# Largest n_factors (the kernels keep per-factor sums in stack arrays).
MAX_FACTORS = 256
# Largest n_epochs, n_burn_in, n_kept_samples, n_iter_no_change, verbose (counts
# the kernels take as C ints).
MAX_COUNT = 2**31 - 1
# Training uses at most one thread per this many rows (see _run_epochs).
MIN_ROWS_PER_THREAD = 10_000


def _state_width(solver, k):
    """Optimizer state columns after [w, v(k)]: adagrad [G_w, G_v], ftrl [z, n, G_v]."""
    return {"sgd": 0, "adagrad": 2, "ftrl": 3, "als": 0, "mcmc": 0}[solver]


def _new_table(n_features, k, solver, dtype):
    """Parameter table: [w, v(k), optimizer state], rows padded to 64 bytes."""
    return _aligned_table(n_features, 1 + k + _state_width(solver, k), dtype)


def _table_row_bytes(n_cols, dtype):
    """Bytes of a row of _aligned_table(., n_cols, dtype) (padded to 64 bytes)."""
    dtype = np.dtype(dtype)
    per_line = 64 // dtype.itemsize
    return -(-n_cols // per_line) * 64


def _aligned_table(n_rows, n_cols, dtype, zeros=True):
    """(n_rows, stride) table, rows padded to 64 bytes, base 64-byte aligned;
    zeroed unless ``zeros=False``."""
    dtype = np.dtype(dtype)
    per_line = 64 // dtype.itemsize
    stride = -(-n_cols // per_line) * per_line
    buf = (np.zeros if zeros else np.empty)(n_rows * stride + per_line, dtype=dtype)
    off = (-buf.ctypes.data % 64) // dtype.itemsize
    return buf[off:off + n_rows * stride].reshape(n_rows, stride)


def _each_block(src, fn):
    """``fn(i, j, rows i:j)`` over blocks covering ``src``: an array in one
    block, or an array of a model file (cfm._reader._FileArray) a block at a
    time as it is read, in two threads."""
    each = getattr(src, "for_each_block", None)
    if each is not None:
        each(fn)
    else:
        fn(0, len(src), src)


def _as_array(src):
    """``src`` as an in-memory array (an array of a model file is read)."""
    return src.read() if hasattr(src, "for_each_block") else src


def _assign(dst, i, j, src):
    dst[i:j] = src


def _copy_rows(dst, src, n_threads=2, min_bytes=32 << 20):
    """``dst[...] = src`` split by rows over threads when large (NumPy copies
    without the GIL): loading a model copies hundreds of MB into fresh memory,
    and in a VM first touches of fresh pages cost as much as the copy.  An
    array of a model file is copied a block at a time as it is read."""
    if hasattr(src, "for_each_block"):
        src.for_each_block(lambda i, j, block: _assign(dst, i, j, block))
        return
    n = dst.shape[0]
    if n_threads < 2 or dst.nbytes < min_bytes or n < n_threads:
        dst[...] = src
        return
    import threading

    cuts = [n * t // n_threads for t in range(n_threads + 1)]
    errors = []

    def work(a, b):
        try:
            dst[a:b] = src[a:b]
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    started = []
    for t in range(1, n_threads):
        th = threading.Thread(target=work, args=(cuts[t], cuts[t + 1]))
        try:
            th.start()
            started.append(th)
        except RuntimeError:  # no thread can be created: copy that part here
            work(cuts[t], cuts[t + 1])
    work(cuts[0], cuts[1])
    for th in started:
        th.join()
    if errors:
        raise errors[0]


def _check_number(name, value, *, low=None, high=None, integer=False, low_open=False,
                  allow_none=False):
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


class _Tables:
    """What prediction needs of a fitted model, as one immutable object.

    An estimator publishes a new one (one attribute assignment, after the
    consistency checks the kernels rely on) whenever its tables are replaced
    -- a fresh fit, a warm start that changes the layout, a load -- and every
    prediction takes it once.  So a predict call that runs while another
    thread refits the estimator scores with one consistent set of tables and
    shapes (the previous model's, or the new one's), never a mix, and cannot
    read out of bounds.  Training updates the values of the published arrays
    in place (their shapes never change): a call during training sees
    parameters mid-update."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def __setattr__(self, name, value):
        raise AttributeError("published model tables are immutable")


def _check_width(Xc, tables):
    """The rows' column ids are below Xc.shape[1] (validated): the model
    must have at least that many features."""
    if Xc.shape[1] > tables.n_features:
        raise ValueError(f"X has {Xc.shape[1]} features, but the model has "
                         f"{tables.n_features} (it was refitted meanwhile?)")


class BaseFM(BaseEstimator):
    """Common base of FMRegressor and FMClassifier (not for direct use)."""

    _loss = None            # "squared" or "logistic"
    _default_metric = None  # metric for eval_set / early stopping
    _model_kind = "fm"
    _table_dtypes = ("float32", "float64")  # accepted values of ``dtype``
    # values used when these parameters are None (tuned per task, see the estimators)
    _defaults = {"learning_rate": 0.1, "l2_w": 1e-5, "l2_v": 1e-5}

    def __init__(
        self,
        n_factors=8,
        *,
        solver="adagrad",
        learning_rate=None,
        n_epochs=None,
        l2_w0=0.0,
        l2_w=None,
        l2_v=None,
        l1=0.0,
        ftrl_beta=1.0,
        init_std=None,
        normalize=None,
        fit_intercept=True,
        shuffle=True,
        n_iter_no_change=3,
        tol=1e-4,
        eval_metric=None,
        dtype=None,
        n_jobs=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        n_burn_in=None,
        n_kept_samples=None,
    ):
        self.n_factors = n_factors
        self.solver = solver
        self.learning_rate = learning_rate
        self.n_epochs = n_epochs
        self.l2_w0 = l2_w0
        self.l2_w = l2_w
        self.l2_v = l2_v
        self.l1 = l1
        self.ftrl_beta = ftrl_beta
        self.init_std = init_std
        self.normalize = normalize
        self.fit_intercept = fit_intercept
        self.shuffle = shuffle
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.eval_metric = eval_metric
        self.dtype = dtype
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.n_burn_in = n_burn_in
        self.n_kept_samples = n_kept_samples

    # ------------------------------------------------------------------ params
    def _validate_params(self):
        _check_number("n_factors", self.n_factors, low=0, high=MAX_FACTORS, integer=True)
        _check_number("n_epochs", self.n_epochs, low=1, high=MAX_COUNT, integer=True,
                      allow_none=True)
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {self.solver!r}")
        _check_number("learning_rate", self.learning_rate, low=0, low_open=True,
                      allow_none=True)
        for name in ("l2_w0", "l1", "tol"):
            _check_number(name, getattr(self, name), low=0)
        _check_number("init_std", self.init_std, low=0, allow_none=True)
        _check_number("n_burn_in", self.n_burn_in, low=0, high=MAX_COUNT, integer=True,
                      allow_none=True)
        _check_number("n_kept_samples", self.n_kept_samples, low=1, high=MAX_COUNT,
                      integer=True, allow_none=True)
        if self.n_burn_in is not None and self.n_burn_in >= self._n_epochs():
            raise ValueError(f"n_burn_in ({self.n_burn_in}) must be smaller than n_epochs "
                             f"({self._n_epochs()}): no posterior sample would be kept")
        for name in ("l2_w", "l2_v"):
            _check_number(name, getattr(self, name), low=0, allow_none=True)
        _check_number("ftrl_beta", self.ftrl_beta, low=0)
        if self.l1 > 0 and self.solver != "ftrl":
            raise ValueError("l1 > 0 requires solver='ftrl' (the only solver with L1 "
                             f"regularisation); got solver={self.solver!r}")
        _check_number("n_iter_no_change", self.n_iter_no_change, low=1, high=MAX_COUNT,
                      integer=True)
        _check_number("verbose", self.verbose, low=0, high=MAX_COUNT, integer=True)
        if self.normalize is not None and not isinstance(self.normalize, (bool, np.bool_)):
            raise ValueError(f"normalize must be True, False or None, got {self.normalize!r}")
        for name in ("fit_intercept", "shuffle", "warm_start"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.eval_metric is not None and self.eval_metric not in self._metrics_allowed():
            raise ValueError(f"eval_metric must be one of {self._metrics_allowed()}, "
                             f"got {self.eval_metric!r}")
        try:
            dt = np.dtype(self._default_dtype() if self.dtype is None else self.dtype)
        except TypeError:
            dt = None
        if dt is None or dt.name not in self._table_dtypes:
            allowed = " or ".join(repr(d) for d in self._table_dtypes)
            raise ValueError(f"dtype must be {allowed}, got {self.dtype!r}")
        effective_n_threads(self.n_jobs)  # raises on invalid n_jobs
        return dt

    def _default_dtype(self):
        """Parameter dtype used when ``dtype`` is None."""
        return "float32"

    def _n_epochs(self):
        """n_epochs, or its default: 10 for the per-sample solvers, 30 sweeps for
        als, 200 for mcmc."""
        if self.n_epochs is not None:
            return int(self.n_epochs)
        return {"als": 30, "mcmc": 200}.get(self.solver, 10)

    def _init_std(self):
        """init_std, or its default: 0.03 for the per-sample solvers, 0.1 (libFM's
        init_stdev) for als / mcmc."""
        if self.init_std is not None:
            return float(self.init_std)
        return 0.1 if self.solver in COORDINATE_SOLVERS else 0.03

    def _resolved_normalize(self):
        """normalize, or its default: True for the per-sample solvers, False
        for als / mcmc (libFM's solvers use the raw feature values)."""
        if self.normalize is not None:
            return bool(self.normalize)
        return self.solver not in COORDINATE_SOLVERS

    def _hp(self, name):
        """A hyper-parameter's value, or the estimator's default when it is None."""
        value = getattr(self, name)
        return float(self._defaults[name] if value is None else value)

    def _metrics_allowed(self):
        return ("rmse", "mae") if self._loss == "squared" else ("logloss", "auc")

    # ------------------------------------------------------------ fitted state
    def __sklearn_is_fitted__(self):
        return "_tables" in self.__dict__

    def __setstate__(self, state):
        parent = getattr(super(), "__setstate__", None)
        if parent is not None:
            parent(state)
        else:  # scikit-learn not installed
            self.__dict__.update(state)
        if "_tables" not in self.__dict__ and "_w0_state" in self.__dict__:
            self._publish()  # pickled by a cfm without published tables

    def _publish(self):
        """Publish the current tables for prediction (see _Tables)."""
        table, k, n = self._table, self._k, self._table.shape[0]
        samples = getattr(self, "_samples", None) if self._solver == "mcmc" else None
        if table.ndim != 2 or not 0 <= k <= MAX_FACTORS or table.shape[1] < 1 + k \
                or self._w0_state.shape != (3,):
            raise RuntimeError("inconsistent FM tables")  # a bug, never bad input
        if samples is not None and (samples.ndim != 3 or samples.shape[1:] != (n, 1 + k)
                                    or self._sample_w0.shape != (samples.shape[0],)):
            raise RuntimeError("inconsistent MCMC samples")
        self._tables = _Tables(
            n_features=n, table=table, w0_state=self._w0_state, k=k,
            normalize=bool(self._normalize), samples=samples,
            sample_w0=self._sample_w0 if samples is not None else None,
            clip=self._clip if samples is not None else None)
        return self._tables

    def _check_fitted(self):
        if "_tables" not in self.__dict__:
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator."
            )

    @property
    def w0_(self):
        """Bias (intercept) w0."""
        self._check_fitted()
        return float(self._w0_state[0])

    @property
    def w_(self):
        """Linear weights, shape (n_features,) (a view onto the parameter table)."""
        self._check_fitted()
        return self._table[:, 0]

    @property
    def V_(self):
        """Factor matrix, shape (n_features, n_factors) (a view onto the parameter table)."""
        self._check_fitted()
        return self._table[:, 1:1 + self._k]

    def _seed(self):
        """Set the row-order generator from random_state; return the seed of
        the factor initialisation (an independent stream)."""
        seed = draw_seed(self.random_state)
        init_seed, order_seed = np.random.SeedSequence(seed).generate_state(2, np.uint64)
        self._rng = np.random.default_rng(int(order_seed))
        return int(init_seed)

    def _init_common(self, n_features, y, sample_weight):
        """State every estimator kind starts a fresh fit with, besides its tables."""
        w0 = self._initial_bias(y, sample_weight) if self.fit_intercept else 0.0
        self._w0_state = self._bias_state(w0, self.solver)
        self._normalize = self._resolved_normalize()
        self.n_features_in_ = n_features
        self.history_ = []
        self.n_epochs_ = 0
        # How libsvm ids of files scored by the model are read: column j of
        # an array is id j (zero-based); fit(path) records its file's rule.
        self._input_zero_based = True

    def _model_bytes(self, n_features, n_fields, dtype):
        """Bytes of the parameter tables a fit allocates (FFM overrides)."""
        k = int(self.n_factors)
        return n_features * _table_row_bytes(1 + k + _state_width(self.solver, k), dtype)

    def _check_model_size(self, n_features, n_fields, dtype, source=None, info=None):
        """Refuse, before allocating, a model larger than memory_limit(): a
        MemoryError, or for a model sized by a data file (``source``, scanned
        as ``info``) a DataFormatError naming the file and the lines of its
        largest ids."""
        need = self._model_bytes(n_features, n_fields, dtype)
        limit = memory_limit()
        if need <= limit:
            return
        shape = f"{n_features:,} features" + (
            f" x {n_fields:,} fields" if self._model_kind == "ffm" else "")
        what = (f"a model of {shape} ({type(self).__name__}, n_factors={int(self.n_factors)}) "
                f"needs {need / 2**30:,.1f} GiB of parameters, more than the "
                f"{limit / 2**30:,.1f} GiB of memory available")
        if source is None:
            raise MemoryError(what + "; use fewer features, fields or factors")
        from . import data as cfm_data

        name = os.fspath(source)
        ids = cfm_data._locate_largest_ids(source, info, fields=self._model_kind == "ffm")
        raise DataFormatError(
            f"{name}{ids}: {what}; a model has a row of parameters per id up to the "
            "largest, so use smaller ids (remap or hash them)")

    def _init_state(self, n_features, y, sample_weight, dtype, fields=None):
        self._check_model_size(n_features, None, dtype)
        init_seed = self._seed()
        self._scoring_only = False  # a fresh fit of a model loaded for scoring
        k = int(self.n_factors)
        self._k = k
        self._solver = self.solver
        table = _new_table(n_features, k, self.solver, dtype)
        _fm.fm_init_factors(table, k, self._init_std(), init_seed,
                            effective_n_threads(self.n_jobs))
        self._init_optimizer_state(table, k, self.solver)
        self._table = table
        self._init_common(n_features, y, sample_weight)
        self._publish()

    @staticmethod
    def _init_optimizer_state(table, k, solver):
        if solver == "adagrad":
            table[:, 1 + k:3 + k] = ADAGRAD_INIT
        elif solver == "ftrl":
            # z, n of the linear terms start at 0 (w = 0); AdaGrad state of V
            table[:, 1 + k:3 + k] = 0.0
            table[:, 3 + k] = ADAGRAD_INIT

    def _bias_state(self, w0, solver):
        if solver == "adagrad":
            return np.array([w0, ADAGRAD_INIT, 0.0])
        if solver == "ftrl":
            z = -w0 * (self.ftrl_beta / self._hp("learning_rate") + self.l2_w0)
            return np.array([w0, z, 0.0])
        return np.array([w0, 0.0, 0.0])

    def _check_trainable(self):
        """Refuse training/saving a model loaded with cfm.load(..., scoring_only=True)."""
        if getattr(self, "_scoring_only", False):
            raise ValueError(f"this {type(self).__name__} was loaded with "
                             "cfm.load(..., scoring_only=True), without the optimizer state "
                             "that training needs; load it without scoring_only to train or "
                             "save it")

    def _ensure_layout(self, dtype):
        """Rebuild the table if solver, k or dtype changed between warm starts."""
        self._check_trainable()
        k = int(self.n_factors)
        if k != self._k:
            raise ValueError(f"warm start with n_factors={k} but the model has {self._k} "
                             "factors; refit with warm_start=False")
        if self.solver == self._solver and self._table.dtype == dtype:
            return
        n_features = self._table.shape[0]
        new = _new_table(n_features, k, self.solver, dtype)
        new[:, :1 + k] = self._table[:, :1 + k]
        self._init_optimizer_state(new, k, self.solver)
        if self.solver == "ftrl":  # z consistent with the current w (n = 0)
            new[:, 1 + k] = -new[:, 0] * (self.ftrl_beta / self._hp("learning_rate")
                                          + self._hp("l2_w"))
        self._table = new
        self._w0_state = self._bias_state(self._w0_state[0], self.solver)
        self._solver = self.solver
        self._publish()

    # -------------------------------------------------------------- training
    def fit(self, X, y=None, sample_weight=None, eval_set=None, block_rows=100_000,
            groups=None):
        """Fit the model.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features), path, or chunks
            Training data. CSR float32/float64 input is used without copying.
            A path to a libsvm / libFM / libffm text file (plain or gzip) or a
            ``.cfmdata`` cache trains out of core: the file is streamed in
            blocks of ``block_rows`` rows (shuffled within each block), so
            memory is bounded by a block plus the model.  A re-iterable of
            ``(X_chunk, y_chunk)`` pairs (e.g. a list, or a function
            returning a fresh iterator) is streamed the same way.
        y : array-like of shape (n_samples,) or None
            Targets (real values for regression, two classes for
            classification); None when X is a path or chunks.
        sample_weight : array-like of shape (n_samples,), default=None
            Per-sample weights (non-negative).
        eval_set : (X_val, y_val) or list of such pairs, default=None
            Data evaluated after each epoch (``history_``, verbose output).  The
            first pair drives early stopping: training stops after
            ``n_iter_no_change`` epochs without an improvement of more than
            ``tol`` and the parameters of the best epoch are restored.  A
            path to a data file is accepted too.
        block_rows : int, default=100_000
            Rows per block when X is a file (out-of-core training).
        groups : array-like of int, shape (n_features,), default=None
            solver="mcmc" only: prior group of each column (as libFM's
            ``-meta``); the features of a group share the hyper-priors of
            their linear weights and factors. None detects one-hot fields
            (runs of columns no two of which share a row, with at least 2
            columns and non-zeros in at least half of the rows, e.g. user
            ids, item ids): one group per field, one for all other columns.
            ``np.zeros(n_features)`` gives libFM's / myFM's default of a
            single group.

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight, eval_set, block_rows=block_rows, groups=groups)

    def _fit(self, X, y, sample_weight, eval_set, fields=None, block_rows=100_000,
             groups=None):
        if self.solver in COORDINATE_SOLVERS or groups is not None:
            from . import _bayes

            return _bayes.fit(self, X, y, sample_weight, eval_set, fields, groups)
        if _is_stream(X):
            return self._fit_stream(X, y, sample_weight, eval_set, fields, block_rows)
        dtype = self._validate_params()
        warm = self.warm_start and hasattr(self, "_w0_state")
        Xc = check_X(X, estimator=self, n_features=self.n_features_in_ if warm else None)
        y_enc = self._prepare_y(y, Xc.n_rows, reset=not warm)
        sw = check_sample_weight(sample_weight, Xc.n_rows)
        fields = self._check_fields(fields, Xc.shape[1], reset=not warm)
        evals = self._check_eval_set(eval_set, Xc.shape[1])
        if warm:
            self._ensure_layout(dtype)
        else:
            self._init_state(Xc.shape[1], y_enc, sw, dtype, fields)
            self._set_feature_names(X)
        self._run_epochs(Xc, y_enc, sw, evals, self._n_epochs(), early_stopping=True)
        return self

    def _partial_fit(self, X, y, sample_weight, classes=None, fields=None):
        dtype = self._validate_params()
        if self.solver in COORDINATE_SOLVERS:
            raise ValueError(f"partial_fit is not available with solver={self.solver!r} "
                             "(it sweeps over all the data); use fit")
        fitted = hasattr(self, "_w0_state")
        Xc = check_X(X, estimator=self, n_features=self.n_features_in_ if fitted else None)
        y_enc = self._prepare_y(y, Xc.n_rows, reset=not fitted, classes=classes)
        sw = check_sample_weight(sample_weight, Xc.n_rows)
        fields = self._check_fields(fields, Xc.shape[1], reset=not fitted)
        if fitted:
            self._ensure_layout(dtype)
        else:
            self._init_state(Xc.shape[1], y_enc, sw, dtype, fields)
            self._set_feature_names(X)
        self._run_epochs(Xc, y_enc, sw, [], 1, early_stopping=False)
        return self

    # ------------------------------------------------------- out-of-core fit
    def _fit_stream(self, source, y, sample_weight, eval_set, fields, block_rows):
        """Train by streaming ``source`` (a data file or re-iterable chunks)."""
        from . import data as cfm_data

        dtype = self._validate_params()
        if y is not None or sample_weight is not None:
            raise ValueError("when X is a file or chunks, labels come from it: pass y=None "
                             "and sample_weight=None")
        if isinstance(block_rows, bool) or not isinstance(block_rows, numbers.Integral) or \
                block_rows < 1:
            raise ValueError(f"block_rows must be a positive integer, got {block_rows!r}")
        warm = self.warm_start and hasattr(self, "_w0_state")
        zero_based = True  # chunks: ids are their columns
        info = None
        if isinstance(source, (str, os.PathLike)):
            # nan / inf are refused at file:line before anything is trained
            info = cfm_data.scan_file(source, allow_nonfinite=False)
            n_features = info["n_features"]
            if info["n_rows"] == 0 or n_features < 1:
                raise DataFormatError(f"{os.fspath(source)}: no data to train on ("
                                      f"{info['n_rows']} rows, {n_features} features)")
            zero_based = bool(info.get("zero_based", True))
            if not warm:
                self._check_model_size(n_features, info.get("n_fields"), dtype, source, info)
            if warm and n_features != self.n_features_in_:
                raise ValueError(f"{os.fspath(source)!r} has {n_features} features, but "
                                 f"{type(self).__name__} is expecting {self.n_features_in_} "
                                 "features as input.")
            if warm:
                n_features = self.n_features_in_
            labels = np.asarray(info.get("label_values_sample", []))

            def blocks():
                kw = {} if info.get("format") in ("cache", "libffm") else \
                    {"zero_based": info.get("zero_based", "auto")}
                for Xb, yb, fb in cfm_data.iter_blocks(source, block_rows=block_rows,
                                                       n_features=n_features,
                                                       allow_nonfinite=False, **kw):
                    yield Xb, yb, fb
        else:
            first = _peek_chunk(source)
            n_features = first[0].shape[1]
            labels = None

            def blocks():
                it = source() if callable(source) else iter(source)
                for pair in it:
                    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                        raise ValueError("chunks must be (X, y) pairs")
                    yield pair[0], pair[1], None
        # filled once the model (and so classes_) exists: after the first block
        evals = []
        state = {"started": warm}

        def prepare_evals():
            if eval_set is None or evals:
                return
            if isinstance(eval_set, (str, os.PathLike)):
                evals.extend(self._eval_from_file(eval_set, n_features, zero_based))
            else:
                evals.extend(self._check_eval_set(eval_set, n_features))

        def encode(yb, n, row0):
            """Labels of a block; a file's bad label is reported at its line."""
            try:
                if state["started"]:
                    return self._prepare_y(yb, n, reset=False)
                if self._loss == "logistic" and labels is not None and len(labels):
                    return self._prepare_y(yb, n, reset=True, classes=labels)
                return self._prepare_y(yb, n, reset=True)
            except ValueError as exc:
                if info is None:
                    raise
                row = getattr(exc, "row", None)
                where = cfm_data._where_row(source, info["format"],
                                            None if row is None else row0 + row)
                raise DataFormatError(f"{where}: {exc}") from None

        def epoch(lr):
            loss_sum = w_sum = 0.0
            n_bad = n_blocks = row0 = 0
            for Xb, yb, fb in blocks():
                Xc = check_X(Xb, estimator=self, n_features=n_features)
                y_enc = encode(yb, Xc.n_rows, row0)
                row0 += Xc.n_rows
                if not state["started"]:
                    flds = self._check_fields(fields if fields is not None else fb,
                                              n_features, reset=True)
                    self._init_state(n_features, y_enc, None, dtype, flds)
                    state["started"] = True
                elif self._model_kind == "ffm" and fb is not None:
                    self._check_fields(fb, n_features, reset=False)
                prepare_evals()
                ls, ws, nb = self._block_epoch(Xc, y_enc, None, lr)
                loss_sum, w_sum, n_bad, n_blocks = loss_sum + ls, w_sum + ws, n_bad + nb, \
                    n_blocks + 1
            if n_blocks == 0:
                raise ValueError("the training data stream is empty (a one-shot iterator "
                                 "can only be used for one epoch: pass a list or a function "
                                 "returning a fresh iterator)")
            return loss_sum, w_sum, n_bad

        if warm:
            self._ensure_layout(dtype)
        self._run_epoch_loop(epoch, evals, self._n_epochs(), early_stopping=True)
        # how the training file's column ids were read ("auto" decided on that
        # file; a cache records it; chunks: as their columns), so that
        # predict_file reads every other file the same way
        self._input_zero_based = zero_based
        return self

    def _eval_from_file(self, path, n_features, zero_based=True):
        """An eval_set file, its libsvm ids read as the training data's were."""
        from . import data as cfm_data

        info = cfm_data.scan_file(path)
        if info.get("format") == "libffm":
            Xv, yv, _ = cfm_data.load_libffm(path, n_features=n_features,
                                             allow_nonfinite=False)
        elif info.get("format") == "cache":
            Xv, yv, _ = cfm_data.load_cache(path)
        else:
            Xv, yv = cfm_data.load_libsvm(path, n_features=n_features, zero_based=zero_based,
                                          allow_nonfinite=False)
        try:
            return self._check_eval_set((Xv, yv), n_features)
        except ValueError as exc:  # e.g. nan in a cache: name the file
            raise DataFormatError(f"{os.fspath(path)}: {exc}") from None

    def _check_fields(self, fields, n_features, reset):
        """FM models do not use fields (those of a libffm file are ignored);
        FFM overrides this."""
        return None

    def _set_feature_names(self, X):
        names = _feature_names(X)
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

    def _check_feature_names(self, X):
        import warnings

        names = _feature_names(X)
        fitted = getattr(self, "feature_names_in_", None)
        if names is None and fitted is None:
            return
        if names is not None and fitted is None:
            warnings.warn(f"X has feature names, but {type(self).__name__} was fitted "
                          "without feature names", UserWarning, stacklevel=3)
            return
        if names is None:
            warnings.warn("X does not have valid feature names, but "
                          f"{type(self).__name__} was fitted with feature names",
                          UserWarning, stacklevel=3)
            return
        if len(names) != len(fitted) or np.any(names != fitted):
            raise ValueError("The feature names should match those that were passed during "
                             "fit.")

    def _check_eval_set(self, eval_set, n_features):
        if eval_set is None:
            return []
        if isinstance(eval_set, tuple) and len(eval_set) == 2 and not isinstance(
            eval_set[0], tuple
        ):
            eval_set = [eval_set]
        out = []
        for i, pair in enumerate(eval_set):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError("eval_set must be a pair (X_val, y_val) or a list of pairs")
            Xv = check_X(pair[0], name=f"eval_set[{i}] X", n_features=n_features,
                         estimator=self)
            yv = self._encode_eval_y(pair[1], Xv.n_rows)
            out.append((Xv, yv))
        return out

    def _train_threads(self, n_rows):
        """Hogwild gains nothing on small data (thread start-up and conflicts on
        shared parameters dominate): at most one training thread per
        MIN_ROWS_PER_THREAD rows, so small fits are also deterministic."""
        return max(1, min(effective_n_threads(self.n_jobs), n_rows // MIN_ROWS_PER_THREAD))

    def _block_epoch(self, Xc, y, sw, lr):
        """One pass over an in-memory block, rows in a fresh random order."""
        n = Xc.n_rows
        order = (self._rng.permutation(n) if self.shuffle else np.arange(n)).astype(np.int64)
        sw_arr = sw if sw is not None else np.empty(0)
        return self._train_epoch(Xc, y, sw_arr, order, lr, self._train_threads(n))

    def _run_epochs(self, Xc, y, sw, evals, n_epochs, early_stopping):
        self._run_epoch_loop(lambda lr: self._block_epoch(Xc, y, sw, lr), evals, n_epochs,
                             early_stopping)

    def _run_epoch_loop(self, epoch_fn, evals, n_epochs, early_stopping):
        """Epochs, history, verbose output and early stopping around
        ``epoch_fn(lr) -> (loss_sum, weight_sum, n_bad)``."""
        n_threads = effective_n_threads(self.n_jobs)
        metric = self.eval_metric or self._default_metric
        metric_fn, greater_better = METRICS[metric]
        best_score, best_epoch, best_state, since_best = None, None, None, 0
        lr = self._hp("learning_rate")
        for _ in range(n_epochs):
            t0 = time.perf_counter()
            loss_sum, w_sum, n_bad = epoch_fn(lr)
            epoch = len(self.history_) + 1
            # A non-finite parameter makes later predictions non-finite, which
            # the kernel counts; the table itself is checked after the loop.
            if n_bad or not np.isfinite(self._w0_state).all():
                raise DivergenceError(
                    f"{type(self).__name__}: training diverged at epoch {epoch} (non-finite "
                    f"parameters or predictions). Try a smaller learning_rate (currently "
                    f"{lr:g}), stronger regularisation, or normalize=True."
                )
            self.n_epochs_ = getattr(self, "n_epochs_", 0) + 1
            rec = {"epoch": epoch, "train_loss": loss_sum / w_sum if w_sum > 0 else float("nan")}
            # metrics take raw scores: values for RMSE/MAE, log-odds for logloss/AUC
            for i, (Xv, yv) in enumerate(evals):
                rec[f"eval{i}_{metric}" if i else f"eval_{metric}"] = metric_fn(
                    yv, self._decision(Xv, n_threads))
            rec["time"] = time.perf_counter() - t0
            self.history_.append(rec)
            if self.verbose:
                self._print_epoch(rec, n_epochs)
            if early_stopping and evals:
                score = rec[f"eval_{metric}"]
                improved = best_score is None or (
                    score > best_score + self.tol if greater_better else score < best_score - self.tol
                )
                if improved:
                    best_score, best_epoch, since_best = score, epoch, 0
                    best_state = self._snapshot()
                else:
                    since_best += 1
                    if since_best >= self.n_iter_no_change:
                        if self.verbose:
                            print(f"early stopping: best epoch {best_epoch} "
                                  f"({metric} {best_score:.6g})", file=sys.stderr)
                        break
        if not self._params_finite():
            raise DivergenceError(
                f"{type(self).__name__}: training diverged (non-finite parameters). Try a "
                f"smaller learning_rate (currently {lr:g}), stronger regularisation, or "
                "normalize=True."
            )
        if best_state is not None and best_epoch != len(self.history_):
            self._restore(best_state)
        self.best_epoch_ = best_epoch if best_epoch is not None else len(self.history_)

    def _print_epoch(self, rec, n_epochs):
        parts = [f"epoch {rec['epoch']:>3d}", f"train_loss {rec['train_loss']:.6f}"]
        parts += [f"{k} {v:.6f}" for k, v in rec.items() if k.startswith("eval")]
        parts.append(f"{rec['time']:.2f}s")
        print("  ".join(parts), file=sys.stderr, flush=True)

    # ---------------------------------------------- kernel hooks (FM; FFM overrides)
    def _train_epoch(self, Xc, y, sw_arr, order, lr, n_threads):
        return _fm.fm_train_epoch(
            Xc.data, Xc.indices, Xc.indptr, y, sw_arr, order, self._table, self._w0_state,
            self._k, LOSSES[self._loss], SOLVERS[self._solver], bool(self.fit_intercept),
            self._normalize, lr, float(self.l2_w0), self._hp("l2_w"), self._hp("l2_v"),
            float(self.l1), float(self.ftrl_beta), n_threads,
        )

    def _params_finite(self):
        return _utils.all_finite(self._table, 1 + self._k, effective_n_threads(self.n_jobs))

    def _snapshot(self):
        return self._table.copy(), self._w0_state.copy()

    def _restore(self, state):
        self._table[...] = state[0]
        self._w0_state[...] = state[1]

    # ------------------------------------------------------------ prediction
    def _decision(self, Xc, n_threads=None, tables=None):
        """Raw scores of validated rows.  ``tables``:
        the published tables to use (default: the current ones), which Xc was
        validated against."""
        t = self._current_tables() if tables is None else tables
        _check_width(Xc, t)
        if n_threads is None:
            n_threads = effective_n_threads(self.n_jobs)
        if t.samples is not None:
            from . import _bayes

            return _bayes.mcmc_decision(self, Xc, n_threads, t)
        out = np.empty(Xc.n_rows, dtype=np.float64)
        _fm.fm_predict(Xc.data, Xc.indices, Xc.indptr, t.table, float(t.w0_state[0]),
                       t.k, t.normalize, out, n_threads)
        return out

    def _current_tables(self):
        """The published tables (see _Tables), taken once per prediction."""
        t = self.__dict__.get("_tables")
        if t is None:
            self._check_fitted()
        return t

    def _raw_predict(self, X):
        t = self._current_tables()
        self._check_feature_names(X)
        Xc = check_X(X, estimator=self, n_features=t.n_features)
        return self._decision(Xc, tables=t)

    def predict_file(self, path, out_path, *, raw=False, block_rows=65_536, n_jobs=None,
                     zero_based=None, precision=9, evaluate=False, format="auto",
                     chunk_bytes=8 << 20):
        """Score a data file into a text file, one prediction per line, in bounded memory.

        Reading, parsing, scoring and writing run as a pipeline of threads over
        blocks of rows (output in input order); memory is a few blocks plus the
        model, whatever the file size.  See :func:`cfm.scoring.predict_file` for
        the details (feature ids beyond the model are ignored, FFM fields come
        from the model, output precision, ``zero_based``).

        Parameters
        ----------
        path : str, path-like or binary file object
            libsvm / libFM / libffm text (plain or gzip) or a ``.cfmdata`` cache.
        out_path : str, path-like or binary file object
        raw : bool, default=False
            Classifiers: write raw scores (log-odds) instead of probabilities of
            ``classes_[1]``.  Regressors always write predicted values.
        block_rows : int, default=65536
            Most rows scored at once.
        n_jobs : int or None
            Threads (None: the estimator's ``n_jobs``).
        zero_based, precision, evaluate, format, chunk_bytes
            See :func:`cfm.scoring.predict_file`.

        Returns
        -------
        dict
            ``n_rows``, ``seconds``, ``ignored_values`` and per-stage times; with
            ``evaluate=True`` also ``metrics``.
        """
        from .scoring import predict_file

        return predict_file(self, path, out_path, raw=raw, block_rows=block_rows, n_jobs=n_jobs,
                            zero_based=zero_based, precision=precision, evaluate=evaluate,
                            format=format, chunk_bytes=chunk_bytes)

    # -------------------------------------------------------- serialization
    def save(self, path):
        """Save the fitted model to ``path`` in cfm's versioned binary format.

        The file holds no pickle: loading an untrusted file cannot run code.
        Load it with :func:`cfm.load`.
        """
        from ._io import save_model

        save_model(self, path)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"_xfail_checks": {}}

    # ------------------------------------------------------ model file state
    def _export_state(self):
        """Arrays and JSON header describing the fitted model (see cfm/_io.py)."""
        self._check_trainable()
        k = self._k
        width = _state_width(self._solver, k)
        arrays = {
            "w": self._table[:, 0],
            "V": self._table[:, 1:1 + k],
            "opt_state": self._table[:, 1 + k:1 + k + width],
            "w0_state": self._w0_state,
        }
        header = self._common_header()
        header.update({
            "dtype": self._table.dtype.name,
            "n_features": int(self._table.shape[0]),
            "n_factors": k,
        })
        if self._solver == "mcmc":
            from . import _bayes

            _bayes.export_samples(self, arrays, header)
        return arrays, header

    def _common_header(self):
        """Model-file header entries shared by every estimator kind."""
        from . import __version__
        from ._io import _encode_labels, _jsonable_params

        header = {
            "kind": self._model_kind,
            "estimator": type(self).__name__,
            "task": "regression" if self._loss == "squared" else "binary",
            "solver": self._solver,
            "normalize": bool(self._normalize),
            "params": _jsonable_params(self.get_params()),
            "history": self.history_,
            "n_epochs_": int(self.n_epochs_),
            "best_epoch_": int(getattr(self, "best_epoch_", self.n_epochs_)),
            "rng_state": self._rng.bit_generator.state,
            "cfm_version": __version__,
        }
        header["input_zero_based"] = _input_zero_based(self)
        if hasattr(self, "classes_"):
            header["classes"] = _encode_labels(self.classes_)
        if hasattr(self, "feature_names_in_"):
            header["feature_names"] = [str(c) for c in self.feature_names_in_]
        return header

    def _import_params(self, header):
        """Re-initialise from the saved hyper-parameters; return the table dtype."""
        params = header.get("params", {})
        valid = self._get_param_names()
        self.__init__(**{k: v for k, v in params.items() if k in valid})
        # kept as a parameter (capped by effective_n_threads when used; cfm
        # predict never uses it), but it must be one
        check_n_jobs(self.n_jobs, "the saved n_jobs")
        if header.get("kind") != self._model_kind:
            raise ValueError(f"model kind {header.get('kind')!r} does not match "
                             f"{type(self).__name__}")
        try:
            dtype = np.dtype(header["dtype"])
        except TypeError:
            dtype = None
        if dtype is None or dtype.name not in self._table_dtypes:
            raise ValueError(f"unsupported parameter dtype {header['dtype']!r}")
        return dtype

    def _import_common(self, header, arrays, n_features):
        """Restore what every estimator kind keeps besides its parameter tables."""
        from ._io import _decode_labels

        task = "binary" if self._loss == "logistic" else "regression"
        if header["task"] != task:
            raise ValueError(f"a {header['task']} model cannot be a {type(self).__name__}")
        self._w0_state = np.array(_as_array(arrays["w0_state"]), dtype=np.float64)
        self._normalize = bool(header["normalize"])
        self.n_features_in_ = n_features
        self.history_ = [dict(e) for e in header.get("history", [])]
        self.n_epochs_ = int(header.get("n_epochs_", len(self.history_)))
        self.best_epoch_ = int(header.get("best_epoch_", self.n_epochs_))
        # Files written before every model recorded it hold no key: such models
        # were fitted from arrays (fit(path) always recorded it), whose column j
        # is id j.
        zb = header.get("input_zero_based", True)
        self._input_zero_based = bool(zb) if isinstance(zb, bool) else True
        self._rng = np.random.default_rng()
        if "rng_state" in header:  # validated by cfm._io (a PCG64 state)
            self._rng.bit_generator.state = header["rng_state"]
        if "classes" in header:
            self.classes_ = _decode_labels(header["classes"])
        if header.get("feature_names") is not None:
            self.feature_names_in_ = np.asarray(header["feature_names"], dtype=object)

    def _import_state(self, header, arrays):
        dtype = self._import_params(header)
        n, k, solver = int(header["n_features"]), int(header["n_factors"]), header["solver"]
        if solver not in SOLVERS or n < 1 or not 0 <= k <= MAX_FACTORS:
            raise ValueError(f"bad solver/shape in header: {solver!r}, {n}, {k}")
        width = _state_width(solver, k)
        expect = {"w": (n,), "V": (n, k), "opt_state": (n, width), "w0_state": (3,)}
        for name, shape in expect.items():
            if name not in arrays:
                raise ValueError(f"array {name!r} is missing")
            if arrays[name].shape != shape:
                raise ValueError(f"array {name!r} has shape {arrays[name].shape}, expected {shape}")
            want = np.float64 if name == "w0_state" else dtype
            if arrays[name].dtype != want:
                raise ValueError(f"array {name!r} has dtype {arrays[name].dtype}, expected "
                                 f"{np.dtype(want)}")
        if getattr(self, "_scoring_only", False) and solver != "mcmc":
            # scoring only: rows [w, v] without the optimizer state (k = 8,
            # float32: one cache line per feature instead of two)
            table = _aligned_table(n, 1 + k, dtype)
        else:
            self._scoring_only = False
            table = _new_table(n, k, solver, dtype)
            _copy_rows(table[:, 1 + k:1 + k + width], arrays["opt_state"])
        _copy_rows(table[:, 0], arrays["w"])
        _copy_rows(table[:, 1:1 + k], arrays["V"])
        self._table, self._k, self._solver = table, k, solver
        self._import_common(header, arrays, n)
        if solver == "mcmc":
            from . import _bayes

            _bayes.import_samples(self, header, arrays, dtype)
        self._publish()
