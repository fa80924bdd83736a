"""BaseFM: parameters and orchestration shared by the FM estimators.

An estimator holds its fitted model as ONE state object ``_state`` (see
cfm/_state: FMTable, FFMTable, MCMCSamples, ...; the estimator class names
its ``_state_class``) and replaces it, never edits it, when a fit, a warm
start that changes the layout, or a load needs other tables.  Predictions
take the state once (``_current_tables()``), so a refit on another thread
cannot change the tables under a running prediction.  Training is done by
the solvers of cfm/_train, looked up by name in ``cfm._train.SOLVERS``;
this module validates parameters and input, builds states, and records
``history_``, ``n_epochs_``, ``best_epoch_``; how a fit's settings are
chosen (the race of issue 13, ``best_params_``) is cfm/_tuning.py.  No
method here branches on the solver or the model kind.
"""
import os

import numpy as np

from . import _train, scoring
from ._compat import BaseEstimator
from ._encoded import EncoderMixin
from ._fields import FieldInput, field_count
from ._persist import ModelFileMixin
from ._state.base import MAX_FACTORS, bias_state
from ._train import autotune, sgd
from ._train.loop import LoopConfig, print_epoch
from ._tuning import STREAM, TuningMixin
from ._validation import (MAX_COUNT, Boolean, Interval, Options, check_feature_names,
                          check_model_size, check_params,
                          check_eval_set, check_X, draw_seed, effective_n_threads,
                          is_stream, set_feature_names)
from ._train.stream import StreamSource, read_eval_file
from .exceptions import DataFormatError, NotFittedError

# Parameter rules, checked in this order by _validate_params (cross-parameter
# rules and the ones that depend on the estimator class follow them there).
PARAMETER_RULES = {
    "n_factors": Interval(True, 0, MAX_FACTORS),
    "n_epochs": Interval(True, 1, MAX_COUNT, none=True),
    "solver": Options(tuple(_train.SOLVERS)),
    "learning_rate": Interval(False, 0, low_open=True, none=True),
    "l2_w0": Interval(False, 0),
    "l1": Interval(False, 0),
    "tol": Interval(False, 0),
    "init_std": Interval(False, 0, none=True),
    "n_burn_in": Interval(True, 0, MAX_COUNT, none=True),
    "n_kept_samples": Interval(True, 1, MAX_COUNT, none=True),
    "l2_w": Interval(False, 0, none=True),
    "l2_v": Interval(False, 0, none=True),
    "ftrl_beta": Interval(False, 0),
    "n_iter_no_change": Interval(True, 1, MAX_COUNT),
    "verbose": Interval(True, 0, MAX_COUNT),
    "normalize": Boolean(none=True),
    "fit_intercept": Boolean(),
    "shuffle": Boolean(),
    "warm_start": Boolean(),
    "auto_tune": Boolean(),
}

# Private names of state arrays that tests and tools read on the estimator
# (``model._table`` is ``model._state.table``): read-only aliases.
_STATE_ALIASES = {
    "_table": "table", "_w0_state": "w0_state", "_k": "k", "_solver": "solver",
    "_normalize": "normalize", "_lin": "lin", "_V": "V", "_rec_off": "rec_off",
    "_ks": "ks", "_kp": "kp", "_foff": "foff", "_kernel_V": "kernel_V",
    "_samples": "samples", "_sample_w0": "sample_w0", "_clip": "clip",
}


class BaseFM(EncoderMixin, FieldInput, TuningMixin, ModelFileMixin, BaseEstimator):
    """Common base of the FM and FFM estimators (not for direct use)."""

    _loss = None            # "squared" or "logistic"
    _default_metric = None  # metric for eval_set / early stopping
    _state_class = None     # the model state a fit builds (cfm._state)
    _file_state_classes = {}  # {solver: state class} of model files, else _state_class
    # values used when these parameters are None (tuned per task, see the estimators)
    _defaults = {"learning_rate": 0.1, "l2_w": 1e-5, "l2_v": 1e-5}

    def __init__(self, n_factors=8, *, solver="adagrad", learning_rate=None, n_epochs=None,
                 l2_w0=0.0, l2_w=None, l2_v=None, l1=0.0, ftrl_beta=1.0, init_std=None,
                 normalize=None, fit_intercept=True, shuffle=True, n_iter_no_change=3,
                 tol=1e-4, eval_metric=None, dtype=None, n_jobs=None, random_state=None,
                 warm_start=False, verbose=0, n_burn_in=None, n_kept_samples=None,
                 auto_tune=True, encoder=None):
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
        self.auto_tune = auto_tune
        self.encoder = encoder

    # ------------------------------------------------------------------ params
    def _validate_params(self):
        """Check every parameter; return the parameter dtype."""
        check_params(self, PARAMETER_RULES)
        if self.n_burn_in is not None and self.n_burn_in >= self._n_epochs():
            raise ValueError(f"n_burn_in ({self.n_burn_in}) must be smaller than n_epochs "
                             f"({self._n_epochs()}): no posterior sample would be kept")
        if self.l1 > 0 and not self._solver_spec().l1:
            raise ValueError("l1 > 0 requires solver='ftrl' (the only solver with L1 "
                             f"regularisation); got solver={self.solver!r}")
        if self.eval_metric is not None and self.eval_metric not in self._metrics_allowed():
            raise ValueError(f"eval_metric must be one of {self._metrics_allowed()}, "
                             f"got {self.eval_metric!r}")
        try:
            dt = np.dtype(self._default_dtype() if self.dtype is None else self.dtype)
        except TypeError:
            dt = None
        if dt is None or dt.name not in self._state_class.dtypes:
            allowed = " or ".join(repr(d) for d in self._state_class.dtypes)
            raise ValueError(f"dtype must be {allowed}, got {self.dtype!r}")
        effective_n_threads(self.n_jobs)  # raises on invalid n_jobs
        return dt

    def _default_dtype(self):
        """Parameter dtype used when ``dtype`` is None."""
        return "float32"

    def _solver_spec(self):
        return _train.SOLVERS[self.solver]

    def _metrics_allowed(self):
        return ("rmse", "mae") if self._loss == "squared" else ("logloss", "auc")

    def _loop_config(self, callback):
        """The training loop's settings; the progress callback defaults to
        printing one line per epoch when verbose."""
        if callback is None and self.verbose:
            callback = self._print_epoch

        def count():
            self.n_epochs_ = getattr(self, "n_epochs_", 0) + 1

        return LoopConfig(name=type(self).__name__,
                          metric=self.eval_metric or self._default_metric,
                          n_threads=effective_n_threads(self.n_jobs),
                          history=lambda: self.history_, tol=self.tol,
                          n_iter_no_change=self.n_iter_no_change, on_epoch=count,
                          callback=callback, verbose=self.verbose)

    def _print_epoch(self, rec, n_epochs):
        print_epoch(rec, n_epochs)

    # ------------------------------------------------------------ fitted state
    def __sklearn_is_fitted__(self):
        return "_state" in self.__dict__

    def __getattr__(self, name):
        # (a property of the class that raised NotFittedError ends up here too)
        if "_state" not in self.__dict__ and isinstance(getattr(type(self), name, None),
                                                        property):
            self._check_fitted()
        attr = _STATE_ALIASES.get(name)
        state = self.__dict__.get("_state") if attr is not None else None
        if state is None or not hasattr(state, attr):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(state, attr)

    def _check_fitted(self):
        if "_state" not in self.__dict__:
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator.")

    def _current_tables(self):
        """The model state, taken once per prediction."""
        state = self.__dict__.get("_state")
        if state is None:
            self._check_fitted()
        return state

    @property
    def _scoring_only(self):
        """Loaded with cfm.load(..., scoring_only=True) (no optimizer state)."""
        state = self.__dict__.get("_state")
        return state is not None and not state.trainable

    @property
    def w0_(self):
        """Bias (intercept) w0."""
        return self._current_tables().w0

    @property
    def w_(self):
        """Linear weights, shape (n_features,) (a view onto the parameter table)."""
        return self._current_tables().w

    @property
    def V_(self):
        """Factors (a view onto the parameter table, see the estimator's docs)."""
        return self._current_tables().factors()

    def _seed(self, seed=None):
        """Set the row-order generator from ``seed`` (None: drawn from
        random_state); return the seed of the factor initialisation (an
        independent stream)."""
        init_seed, order_seed = autotune.streams(
            draw_seed(self.random_state) if seed is None else seed)
        self._rng = np.random.default_rng(order_seed)
        return init_seed

    def _check_model_size(self, n_features, n_fields, dtype, source=None, info=None):
        """Refuse, before allocating, a model larger than memory_limit() (see
        cfm._validation.check_model_size)."""
        cls = self._state_class
        need = cls.model_bytes(n_features, n_fields, int(self.n_factors), self.solver, dtype)
        shape = f"{n_features:,} features" + (
            f" x {n_fields:,} fields" if cls.uses_fields else "")

        def locate():
            from . import data as cfm_data

            return cfm_data._locate_largest_ids(source, info, fields=cls.uses_fields)

        check_model_size(need, shape, f"{type(self).__name__}, n_factors={int(self.n_factors)}",
                         source, locate)

    def _check_factors(self):
        k = int(self.n_factors)
        if k < 1 and self._state_class.uses_fields:
            raise ValueError(f"{type(self).__name__} needs n_factors >= 1 (got {k}); for a "
                             "linear model use FMClassifier/FMRegressor with n_factors=0")

    def _build_state(self, n_features, w0, dtype, fields, init_seed, learning_rate,
                     normalize, template=None, reuse=None):
        """A freshly initialised state (nothing on the estimator changes);
        ``template``: an untrained state of this seed whose parameters are
        copied (into the arrays of ``reuse``, a state no longer used)."""
        w0_state = bias_state(w0, self.solver, ftrl_beta=self.ftrl_beta,
                              learning_rate=learning_rate, l2_w0=self.l2_w0)
        if template is not None:
            return template.replica(w0_state, normalize, reuse)
        return self._state_class.new(
            n_features, k=int(self.n_factors), solver=self.solver, dtype=dtype,
            init_std=self._init_std(), seed=init_seed,
            n_threads=effective_n_threads(self.n_jobs), w0_state=w0_state,
            normalize=normalize, fields=fields)

    def _init_state(self, n_features, y, sample_weight, dtype, fields=None, *, seed=None,
                    learning_rate=None, normalize=None, template=None, reuse=None):
        """Build a fresh state (and reset what a fresh fit starts from);
        ``seed`` (None: drawn from random_state), ``learning_rate`` and
        ``normalize`` (None: the defaults) as resolved by the caller;
        ``template`` / ``reuse``: see _build_state."""
        self._check_factors()
        n_fields = field_count(fields)
        # before any array is built
        self._check_model_size(n_features, n_fields, dtype)
        init_seed = self._seed(seed)
        s = self._settings()
        w0 = self._initial_bias(y, sample_weight) if self.fit_intercept else 0.0
        self._state = self._build_state(
            n_features, w0, dtype, fields, init_seed,
            s["learning_rate"] if learning_rate is None else learning_rate,
            s["normalize"] if normalize is None else normalize, template, reuse)
        self.n_features_in_ = n_features
        self.history_ = []
        self.n_epochs_ = 0
        # How libsvm ids of files scored by the model are read: column j of
        # an array is id j (zero-based); fit(path) records its file's rule.
        self._input_zero_based = True
        return self._state

    def _check_trainable(self):
        """Refuse training/saving a model loaded with cfm.load(..., scoring_only=True)."""
        state = self.__dict__.get("_state")
        if state is not None and not state.trainable:
            raise ValueError(f"this {type(self).__name__} was loaded with "
                             "cfm.load(..., scoring_only=True), without the optimizer state "
                             "that training needs; load it without scoring_only to train or "
                             "save it")

    def _ensure_layout(self, dtype, learning_rate):
        """Warm start: the state with the current solver's layout (a new state
        if solver or dtype changed and the model kind allows it)."""
        self._check_trainable()
        state = self._state
        k = int(self.n_factors)
        if k != state.k:
            raise ValueError(f"warm start with n_factors={k} but the model has {state.k} "
                             "factors; refit with warm_start=False")
        self._state = state.relayout(self.solver, dtype, ftrl_beta=self.ftrl_beta,
                                     learning_rate=learning_rate,
                                     l2_w=self._hp("l2_w"), l2_w0=self.l2_w0)
        return self._state

    # -------------------------------------------------------------- training
    def fit(self, X, y=None, sample_weight=None, eval_set=None, block_rows=100_000,
            groups=None, *, callback=None, input_zero_based=None):
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
            Targets (real values for regression, class labels for
            classification: two, or more for FMClassifier); None for a path or chunks.
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
            their linear weights and factors. None: for regressors, one
            group per detected one-hot field (runs of columns no two of
            which share a row, with at least 2 columns and non-zeros in at
            least half of the rows, e.g. user ids, item ids) and one for all
            other columns; for classifiers a single group (libFM's / myFM's
            default, ``np.zeros(n_features)``), which measured up to 0.07
            AUC better on one-hot data with many fields.
        callback : callable or None, keyword-only
            ``callback(record, n_epochs)``, called after each epoch with the
            dict just appended to ``history_`` and the number of epochs of
            this fit (progress reporting).  None: one line per epoch on stderr
            when ``verbose > 0``.
        input_zero_based : bool or None, keyword-only
            For front ends that read a libsvm file themselves and pass arrays:
            whether that file's ids were zero-based, recorded so that
            :meth:`predict_file` reads other files the same way.  None: ids of
            a file given as X are recorded from it; arrays count as zero-based.

        Returns
        -------
        self

        Notes
        -----
        Settings chosen from the data (``auto_tune=True``, the default): an
        in-memory fit with solver "adagrad", "sgd" or "ftrl" and at least one
        of ``learning_rate``, ``normalize``, ``n_epochs`` left at None holds
        out a seeded, stratified 15% of the rows, races learning_rate {0.05,
        0.1, 0.2} x normalize {True, False} (those left at None) by
        successive halving on the validation AUC (RMSE; or ``eval_metric``),
        early-stops the winner, then refits it on all rows for its best
        epoch count (or ``n_epochs``) with the same seed: the returned model
        is the fit ``best_params_`` describes.  Cost: at most 2.5 fixed
        10-epoch fits.  With ``eval_set`` its first pair replaces the
        holdout (no refit: the winner at its best epoch is the model).  A
        validation split with fewer than 200 rows of the minority class
        (regressors: 1,000 rows) cannot resolve the race: the fixed
        defaults are fitted instead (``best_params_["auto"]`` says so).
        Explicit arguments are never overridden.  Warm starts,
        ``partial_fit``, out-of-core data and solver "als" / "mcmc" do not
        race (see ``auto_tune``).
        """
        return self._fit(X, y, sample_weight, eval_set, block_rows=block_rows, groups=groups,
                         callback=callback, input_zero_based=input_zero_based)

    def _fit(self, X, y, sample_weight, eval_set, fields=None, block_rows=100_000,
             groups=None, callback=None, input_zero_based=None):
        if input_zero_based is not None and not isinstance(input_zero_based, (bool, np.bool_)):
            raise ValueError(f"input_zero_based must be True, False or None, got "
                             f"{input_zero_based!r}")
        X, eval_set, fields, encoder = self._encode_fit(X, eval_set, fields)
        if self.solver in _train.SOLVERS and self._solver_spec().coordinate \
                or groups is not None:
            self._fit_coordinate(X, y, sample_weight, eval_set, fields, groups, callback)
        elif is_stream(X):
            self._fit_stream(X, y, sample_weight, eval_set, fields, block_rows, callback)
        else:
            self._fit_arrays(X, y, sample_weight, eval_set, fields, callback)
        if input_zero_based is not None:
            self._input_zero_based = bool(input_zero_based)
        self._keep_encoder(encoder)
        return self

    def _fit_stream(self, source, y, sample_weight, eval_set, fields, block_rows, callback):
        """Train by streaming ``source`` (a data file or re-iterable chunks)."""
        dtype = self._validate_params()
        if y is not None or sample_weight is not None:
            raise ValueError("when X is a file or chunks, labels come from it: pass y=None "
                             "and sample_weight=None")
        warm = self.warm_start and "_state" in self.__dict__
        src = StreamSource(source, block_rows, self.n_features_in_ if warm else None,
                           type(self).__name__,
                           lambda nf, info: self._check_model_size(
                               nf, info.get("n_fields"), dtype, source, info),
                           entry_fields=isinstance(fields, str) and fields == "entry")
        n_features = src.n_features
        # filled once the model (and so classes_) exists: after the first block
        evals = []
        started = [warm]
        settings = self._settings(self.__dict__.get("best_params_") if warm else None)

        def prepare_evals():
            if eval_set is None or evals:
                return
            if isinstance(eval_set, (str, os.PathLike)):
                item = read_eval_file(eval_set, n_features, src.zero_based, src.entry_fields)
                try:
                    evals.extend(self._check_eval_set(item, n_features))
                except ValueError as exc:  # e.g. nan in a cache: name the file
                    raise DataFormatError(f"{os.fspath(eval_set)}: {exc}") from None
            else:
                evals.extend(self._check_eval_set(eval_set, n_features))

        def encode(yb, n, row0):
            """Labels of a block; a file's bad label is reported at its line."""
            try:
                if started[0]:
                    return self._prepare_y(yb, n, reset=False)
                if self._loss == "logistic" and src.labels is not None and len(src.labels):
                    if len(src.labels) >= 100:  # (a file's sample: maybe not all)
                        raise ValueError("more than 99 distinct labels: too many classes "
                                         "to train from a file")
                    return self._prepare_y(yb, n, reset=True, classes=src.labels)
                return self._prepare_y(yb, n, reset=True)
            except ValueError as exc:
                if src.info is None:
                    raise
                row = getattr(exc, "row", None)
                where = src.where(None if row is None else row0 + row)
                raise DataFormatError(f"{where}: {exc}") from None

        def prepare(Xb, yb, fb, row0):
            Xc, flds = self._check_block(Xb, fb, fields, src, reset=not started[0])
            y_enc = encode(yb, Xc.n_rows, row0)
            if not started[0]:
                self._init_state(n_features, y_enc, None, dtype, flds,
                                 learning_rate=settings["learning_rate"],
                                 normalize=settings["normalize"])
                started[0] = True
            prepare_evals()
            sw = self._block_weights(y_enc)  # (class_weight)
            return (Xc, y_enc) if sw is None else (Xc, y_enc, sw)

        if warm:
            settings["normalize"] = self._ensure_layout(dtype,
                                                        settings["learning_rate"]).normalize
        self._count_labels(src.blocks)  # (class_weight="balanced": a pass over the labels)
        res = sgd.fit_stream(src.blocks, prepare, lambda: self.__dict__.get("_state"), evals,
                             hyper=self._hyper(settings["learning_rate"]),
                             rng=lambda: self._rng, shuffle=self.shuffle,
                             n_epochs=settings["n_epochs"], config=self._loop_config(callback))
        self.best_epoch_ = res.best_epoch
        self._record(dict(settings, n_epochs=res.best_epoch), STREAM)
        # how the training file's column ids were read ("auto" decided on that
        # file; a cache records it; chunks: as their columns), so that
        # predict_file reads every other file the same way
        self._input_zero_based = src.zero_based

    def _fit_coordinate(self, X, y, sample_weight, eval_set, fields, groups, callback):
        """Fit with a coordinate-wise solver (als, mcmc): in-memory data only."""
        dtype = self._validate_params()
        spec, solver, name = self._solver_spec(), self.solver, type(self).__name__
        if groups is not None and not spec.takes_groups:
            raise ValueError(f"groups is only used by solver='mcmc' (got solver={solver!r})")
        if not self._state_class.coordinate_solvers:
            raise ValueError(f"{name} does not support solver={solver!r}: ALS and MCMC are "
                             "implemented for FMRegressor and FMClassifier only")
        if is_stream(X):
            raise ValueError(f"solver={solver!r} needs the training data in memory (it sweeps "
                             "over the columns); load the file first, e.g. with "
                             "cfm.load_libsvm")
        if sample_weight is not None and not spec.weighted_probit and self._loss != "squared":
            raise ValueError("sample_weight is not supported by FMClassifier(solver='mcmc') (a "
                             "weighted probit likelihood has no exact latent-variable sampler); "
                             "it is by FMRegressor(solver='mcmc') and by solver='als'")
        if self.warm_start:
            raise ValueError(f"warm_start is not supported with solver={solver!r}")
        Xc = check_X(X, estimator=self)
        y_enc = self._prepare_y(y, Xc.n_rows, reset=True)
        sw = self._sample_weight(sample_weight, y_enc, Xc.n_rows)
        self._check_fields(fields, Xc.shape[1], reset=True)
        if groups is not None:
            groups = _train.check_groups(groups, Xc.shape[1])
        evals = self._check_eval_set(eval_set, Xc.shape[1])
        state = self._init_state(Xc.shape[1], y_enc, sw, dtype)
        set_feature_names(self, X)
        data = _train.Data(Xc, state.normalize, sw)
        params = _train.CoordinateParams(
            task=int(self._loss != "squared"), fit_intercept=bool(self.fit_intercept),
            n_epochs=self._n_epochs(), l2_w0=float(self.l2_w0), l2_w=self.l2_w,
            l2_v=self.l2_v, learning_rate=self._hp("learning_rate"), rng=self._rng,
            n_burn_in=self.n_burn_in, n_kept_samples=self.n_kept_samples)
        config = self._loop_config(callback)
        self._state, res = spec.run(state, data, y_enc, evals, groups, params, config)
        self.best_epoch_ = res.best_epoch
        self._record({"learning_rate": None, "normalize": state.normalize,
                      "n_epochs": res.best_epoch}, f"off: solver={solver!r}")

    # ------------------------------------------------------------ input checks
    def _check_eval_set(self, eval_set, n_features):
        return check_eval_set(eval_set, n_features, self._encode_eval_y, self)

    # ------------------------------------------------------------ prediction
    def _decision(self, Xc, n_threads=None, tables=None):
        """Raw scores of validated rows.  ``tables``: the state to use
        (default: the current one), which Xc was validated against."""
        state = self._current_tables() if tables is None else tables
        if n_threads is None:
            n_threads = effective_n_threads(self.n_jobs)
        return state.decision(Xc, n_threads)

    def _raw_predict(self, X):
        state = self._current_tables()
        X = self._encode_rows(X)
        check_feature_names(self, X)
        Xc = check_X(X, estimator=self, n_features=state.n_features)
        return self._decision(Xc, tables=state)

    def _scorer(self):
        """What batch scoring needs, bound to the current state (one snapshot)."""
        state = self._current_tables()
        zb = getattr(self, "_input_zero_based", None)

        def encode_y(y):
            return self._encode_eval_y(y, len(y))

        return scoring.Scorer(n_features=int(self.n_features_in_),
                              zero_based=None if zb is None else bool(zb),
                              logistic=self._loss == "logistic", decision=state.decision,
                              encode_y=encode_y if self._loss == "logistic" else None,
                              n_jobs=self.n_jobs,
                              entry_fields=bool(getattr(state, "entry", False)),
                              n_fields=getattr(state, "n_fields", None))

    def predict_file(self, path, out_path, *, raw=False, block_rows=65_536, n_jobs=None,
                     zero_based=None, precision=9, evaluate=False, format="auto",
                     chunk_bytes=8 << 20, labels=False):
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
            Multiclass: n_classes numbers per line (see cfm.scoring).
        labels : bool, default=False
            Classifiers: write the predicted label of each row instead.
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
        return scoring.predict_file(self, path, out_path, raw=raw, block_rows=block_rows,
                                    n_jobs=n_jobs, zero_based=zero_based, precision=precision,
                                    evaluate=evaluate, format=format, chunk_bytes=chunk_bytes,
                                    labels=labels)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"_xfail_checks": {}}

