"""DeepFM estimators: :class:`DeepFMClassifier`, :class:`DeepFMRegressor`.

DeepFM (Guo et al., IJCAI 2017): an FM component and a deep component (an
MLP) share one embedding v_j of size k per feature.  For a row x whose
column j belongs to field f(j)::

    e_f  = sum_{j: f(j) = f} x_j v_j          (per-field pooling: multi-hot and
                                                real-valued fields work)
    y(x) = w0 + sum_j w_j x_j + sum_{i<j} <v_i, v_j> x_i x_j      (FM)
              + MLP([e_0, ..., e_{F-1}])                          (deep)

where the MLP has ReLU hidden layers (``hidden_layer_sizes``), optional
dropout after each, and a linear output without bias (w0 is the bias).

Training is by mini-batches (``batch_size``) with Adam (default) or AdaGrad,
in one compiled call per epoch (src/cfm/_deepfm.pyx, driven by
cfm/_state/deepfm.py): lazy (sparse) updates of the embedding rows a batch
touches, the dense layers through BLAS.  The estimators reuse the FM
estimators' machinery (cfm/_estimator.py: input checks, the training loop
with eval_set, early stopping, callbacks; streaming from files; save /
load; batch scoring); this module declares the DeepFM parameters and builds
the state.
"""
import numpy as np

from ._state.base import MAX_FACTORS
from ._state.deepfm import MAX_LAYERS, DeepFMHyper, DeepFMState, initial_bias
from ._train import Solver, sgd
from ._validation import (MAX_COUNT, Boolean, Interval, Options, Sizes, check_model_size,
                          check_params, check_X, effective_n_threads,
                          is_stream, set_feature_names)
from .ffm import _FFMMixin
from .models import FMClassifier, FMRegressor

# Widest hidden layer, and widest MLP input (n_fields * n_factors).
MAX_WIDTH = 1 << 16

# Parameter rules, checked in this order by _validate_params (cross-parameter
# rules follow them there).
PARAMETER_RULES = {
    "n_factors": Interval(True, 1, MAX_FACTORS),
    "hidden_layer_sizes": Sizes(MAX_LAYERS, MAX_WIDTH),
    "dropout": Interval(False, 0, 1),
    "optimizer": Options(("adam", "adagrad")),
    "learning_rate": Interval(False, 0, low_open=True, none=True),
    "batch_size": Interval(True, 1, MAX_COUNT),
    "n_epochs": Interval(True, 1, MAX_COUNT, none=True),
    "l2_w0": Interval(False, 0),
    "l2_w": Interval(False, 0),
    "l2_v": Interval(False, 0),
    "l2_dense": Interval(False, 0),
    "init_std": Interval(False, 0, none=True),
    "n_iter_no_change": Interval(True, 1, MAX_COUNT),
    "tol": Interval(False, 0),
    "verbose": Interval(True, 0, MAX_COUNT),
    "normalize": Boolean(),
    "fit_intercept": Boolean(),
    "shuffle": Boolean(),
    "warm_start": Boolean(),
}

# Per optimizer: defaults of n_epochs and init_std (the fields of the
# training layer's Solver spec that BaseFM reads) and of the learning rate.
OPTIMIZERS = {
    "adam": Solver("adam", n_epochs=10, init_std=0.01, normalize=False),
    "adagrad": Solver("adagrad", n_epochs=10, init_std=0.01, normalize=False),
}
DEFAULT_LEARNING_RATE = {"adam": 1e-3, "adagrad": 1e-2}
# n_epochs=None on an in-memory fit: at least this many optimizer steps
MIN_STEPS = 100
# best_params_["auto"] of DeepFM's in-memory fits (see cfm/_tuning.py)
FIXED = "off: DeepFM (settings are the parameters or their defaults)"


class _DeepFMMixin:
    """What the DeepFM estimators put in place of the FM ones' parameters,
    state and training set-up (cfm._state.deepfm.DeepFMState, mini-batch
    epochs through the same loop and drivers as the per-sample solvers)."""

    _state_class = DeepFMState
    _multiclass_state = None  # binary only
    _file_state_classes = {}

    def __init__(self, n_factors=8, *, hidden_layer_sizes=(256, 128), dropout=0.0,
                 optimizer="adam", learning_rate=None, batch_size=256, n_epochs=None,
                 l2_w0=0.0, l2_w=1e-2, l2_v=1e-2, l2_dense=0.0, init_std=None,
                 normalize=False, fit_intercept=True, shuffle=True, n_iter_no_change=3,
                 tol=1e-4, eval_metric=None, dtype=None, n_jobs=None, random_state=None,
                 warm_start=False, verbose=0, encoder=None, fields=None):
        self.n_factors = n_factors
        self.hidden_layer_sizes = hidden_layer_sizes
        self.dropout = dropout
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.l2_w0 = l2_w0
        self.l2_w = l2_w
        self.l2_v = l2_v
        self.l2_dense = l2_dense
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
        self.encoder = encoder
        self.fields = fields

    def fit(self, X, y=None, fields=None, sample_weight=None, eval_set=None,
            block_rows=100_000, *, callback=None, input_zero_based=None):
        """Fit the model.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features), path, or chunks
            Training data, as for :meth:`cfm.FMClassifier.fit`: CSR / dense /
            pandas, a libffm file or ``.cfmdata`` cache (streamed in blocks of
            ``block_rows`` rows, shuffled within each block; mini-batches do
            not cross blocks), or re-iterable (X, y) chunks.
        y : array-like of shape (n_samples,)
        fields : array-like of int, shape (n_features,), default=None
            Field id of each column (0 .. n_fields-1; -1, as cfm.load_libffm
            reports for a column that never occurs, counts as 0).  None: the
            ``fields`` parameter, else a libffm file's / cache's, else
            inferred from X (see the ``fields`` parameter); a warm start
            keeps ``fields_``.
            Several columns of a field may be non-zero in one row (their
            embeddings are summed, weighted by the values).
        sample_weight, eval_set, block_rows, callback, input_zero_based
            As for :meth:`cfm.FMClassifier.fit` (eval_set uses ``fields``).
        """
        return self._fit(X, y, sample_weight, eval_set,
                         fields=self.fields if fields is None else fields,
                         block_rows=block_rows, callback=callback,
                         input_zero_based=input_zero_based)

    fields_ = _FFMMixin.fields_
    n_fields_ = _FFMMixin.n_fields_
    _check_fields = _FFMMixin._check_fields

    @property
    def coefs_(self):
        """Weights of the hidden layers: W_l of shape (d_{l-1}, d_l), d_0 =
        n_fields * n_factors (views onto the model's parameters)."""
        return self._current_tables().dense_params()[0]

    @property
    def intercepts_(self):
        """Biases b_l of the hidden layers, shape (d_l,)."""
        return self._current_tables().dense_params()[1]

    @property
    def w_out_(self):
        """Output weights of the MLP, shape (d_L,) (d_0 without hidden layers)."""
        return self._current_tables().dense_params()[2]

    # ------------------------------------------------------------ parameters
    def _validate_params(self):
        """Check every parameter; return the parameter dtype."""
        check_params(self, PARAMETER_RULES)
        if self.dropout >= 1:
            raise ValueError(f"dropout must be < 1 (the fraction of hidden units dropped), "
                             f"got {self.dropout!r}")
        if self.eval_metric is not None and self.eval_metric not in self._metrics_allowed():
            raise ValueError(f"eval_metric must be one of {self._metrics_allowed()}, "
                             f"got {self.eval_metric!r}")
        try:
            dt = np.dtype(self._default_dtype() if self.dtype is None else self.dtype)
        except TypeError:
            dt = None
        if dt is None or dt.name not in DeepFMState.dtypes:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        effective_n_threads(self.n_jobs)  # raises on invalid n_jobs
        return dt

    def _default_dtype(self):
        state = self.__dict__.get("_state")
        if self.warm_start and state is not None:
            return state.dtype.name  # keep the fitted model's precision
        return "float32"

    def _solver_spec(self):
        return OPTIMIZERS[self.optimizer]

    def _hidden(self):
        return tuple(int(h) for h in self.hidden_layer_sizes)

    def _learning_rate(self):
        lr = self.learning_rate
        return float(DEFAULT_LEARNING_RATE[self.optimizer] if lr is None else lr)

    def _settings(self, previous=None):
        """The settings of a fit (BaseFM's hook; its streaming fit uses them):
        always the parameters and DeepFM's defaults -- DeepFM chooses none of
        them from the data (issue 13's race is the FM estimators')."""
        return {"learning_rate": self._learning_rate(), "normalize": bool(self.normalize),
                "n_epochs": self._n_epochs()}

    def _hyper(self, learning_rate=None):
        return DeepFMHyper(
            loss=self._loss,
            learning_rate=self._learning_rate() if learning_rate is None
            else float(learning_rate),
            batch_size=int(self.batch_size), l2_w0=float(self.l2_w0), l2_w=float(self.l2_w),
            l2_v=float(self.l2_v), l2_dense=float(self.l2_dense), dropout=float(self.dropout),
            fit_intercept=bool(self.fit_intercept))

    def _initial_bias(self, y, sw):
        # the labels' log-odds (mean for regression): Adam moves w0 by about
        # learning_rate per batch, so starting at 0 on a 3% CTR set would take
        # thousands of batches to reach it
        return initial_bias(y, sw, self._loss)

    # ------------------------------------------------------------ state
    def _check_model_size(self, n_features, n_fields, dtype, source=None, info=None):
        """Refuse, before allocating, an MLP input wider than MAX_WIDTH or a
        model larger than memory (see cfm._validation.check_model_size)."""
        k, n_fields = int(self.n_factors), int(n_fields or 1)
        if n_fields * k > MAX_WIDTH:
            where = f"{source}: " if source is not None else ""
            raise ValueError(f"{where}{n_fields:,} fields x n_factors={k} = {n_fields * k:,} "
                             f"inputs to the MLP, more than {MAX_WIDTH:,}: use fewer fields "
                             "(field ids are 0 .. n_fields-1) or fewer factors")
        need = DeepFMState.model_bytes(n_features, n_fields, k, self._hidden(), self.optimizer,
                                       dtype)

        def locate():
            from . import data as cfm_data

            return cfm_data._locate_largest_ids(source, info, fields=True)

        check_model_size(need, f"{n_features:,} features x {n_fields:,} fields",
                         f"{type(self).__name__}, n_factors={k}, hidden_layer_sizes="
                         f"{self._hidden()}", source, locate)

    def _init_state(self, n_features, y, sample_weight, dtype, fields=None, *, seed=None,
                    learning_rate=None, normalize=None):
        """Build a fresh state (and reset what a fresh fit starts from);
        ``seed`` (None: drawn from random_state) and ``normalize`` (None: the
        parameter) as BaseFM's streaming fit passes them; the learning rate
        is not part of a DeepFM state."""
        n_fields = int(fields.max()) + 1 if fields.size else 1
        self._check_model_size(n_features, n_fields, dtype)
        init_seed = self._seed(seed)
        w0 = self._initial_bias(y, sample_weight) if self.fit_intercept else 0.0
        self._state = DeepFMState.new(
            n_features, k=int(self.n_factors), optimizer=self.optimizer, dtype=dtype,
            init_std=self._init_std(), seed=init_seed, w0=w0,
            normalize=bool(self.normalize) if normalize is None else bool(normalize),
            fields=fields, hidden=self._hidden())
        self.n_features_in_ = n_features
        self.history_ = []
        self.n_epochs_ = 0
        self._input_zero_based = True
        return self._state

    def _ensure_layout(self, dtype, learning_rate=None):
        """Warm start / partial_fit: the state with the current optimizer's
        layout (a new state, with fresh optimizer state, if the optimizer or
        dtype changed)."""
        self._check_trainable()
        state = self._state
        if int(self.n_factors) != state.k or self._hidden() != state.hidden:
            raise ValueError(f"warm start with n_factors={int(self.n_factors)}, "
                             f"hidden_layer_sizes={self._hidden()} but the model has "
                             f"{state.k} factors and hidden layers {state.hidden}; refit with "
                             "warm_start=False")
        self._state = state.relayout(self.optimizer, dtype)
        return self._state

    # ------------------------------------------------------------ training
    # In-memory fits and partial_fit are driven here rather than by BaseFM's
    # methods of the same names (cfm/_tuning.py): those choose the per-sample
    # solvers' settings from the data by a race (issue 13), which DeepFM does
    # not do.  Streaming (BaseFM._fit_stream) is shared, through the hooks
    # _settings, _init_state, _ensure_layout and _hyper.
    def _arrays(self, X, y, sample_weight, fields, reset, classes=None):
        """Validated (Xc, encoded y, weights, fields) of an in-memory fit."""
        Xc = check_X(X, estimator=self, n_features=None if reset else self.n_features_in_)
        y_enc = self._prepare_y(y, Xc.n_rows, reset=reset, classes=classes)
        sw = self._sample_weight(sample_weight, y_enc, Xc.n_rows)  # (class_weight)
        return Xc, y_enc, sw, self._check_fields(fields, Xc.shape[1], reset=reset, Xc=Xc)

    def _start(self, X, Xc, y_enc, sw, fields, dtype, reset):
        """The state to train: a fresh one, or the current one in the layout asked for."""
        if not reset:
            return self._ensure_layout(dtype)
        state = self._init_state(Xc.shape[1], y_enc, sw, dtype, fields)
        set_feature_names(self, X)
        return state

    def _fit_arrays(self, X, y, sample_weight, eval_set, fields, callback):
        dtype = self._validate_params()
        reset = not (self.warm_start and "_state" in self.__dict__)
        Xc, y_enc, sw, fields = self._arrays(X, y, sample_weight, fields, reset)
        evals = self._check_eval_set(eval_set, Xc.shape[1])
        state = self._start(X, Xc, y_enc, sw, fields, dtype, reset)
        n_epochs = self._n_epochs()
        if self.n_epochs is None:  # at least MIN_STEPS optimizer steps (small data)
            per_epoch = -(-Xc.n_rows // max(int(self.batch_size), 1))
            n_epochs = max(n_epochs, -(-MIN_STEPS // max(per_epoch, 1)))
        res = sgd.fit_arrays(state, Xc, y_enc, sw, evals, hyper=self._hyper(), rng=self._rng,
                             shuffle=self.shuffle, n_epochs=n_epochs,
                             config=self._loop_config(callback))
        self.best_epoch_ = res.best_epoch
        self._record(dict(self._settings(), n_epochs=res.best_epoch), FIXED)

    def _partial_fit(self, X, y, sample_weight, classes=None, fields=None):
        dtype = self._validate_params()
        X, _, fields, encoder = self._encode_fit(X, None, fields, partial=True)
        reset = "_state" not in self.__dict__
        Xc, y_enc, sw, fields = self._arrays(X, y, sample_weight, fields, reset, classes)
        state = self._start(X, Xc, y_enc, sw, fields, dtype, reset)
        res = sgd.fit_arrays(state, Xc, y_enc, sw, [], hyper=self._hyper(), rng=self._rng,
                             shuffle=self.shuffle, n_epochs=1, config=self._loop_config(None),
                             early_stopping=False)
        self.best_epoch_ = res.best_epoch
        if reset:
            self._record(dict(self._settings(), n_epochs=1), FIXED)
        self._keep_encoder(encoder)
        return self

    def _fit(self, X, y, sample_weight, eval_set, fields=None, block_rows=100_000,
             groups=None, callback=None, input_zero_based=None):
        if input_zero_based is not None and not isinstance(input_zero_based, (bool, np.bool_)):
            raise ValueError(f"input_zero_based must be True, False or None, got "
                             f"{input_zero_based!r}")
        X, eval_set, fields, encoder = self._encode_fit(X, eval_set, fields)
        if is_stream(X):
            self._fit_stream(X, y, sample_weight, eval_set, fields, block_rows, callback)
        else:
            self._fit_arrays(X, y, sample_weight, eval_set, fields, callback)
        if input_zero_based is not None:
            self._input_zero_based = bool(input_zero_based)
        self._keep_encoder(encoder)
        return self

    # ------------------------------------------------------------ model files
    def _import_params(self, header):
        dtype = super()._import_params(header)
        # a tuple is not a flat header value: the file's params hold None and
        # the state's "hidden" entry holds the sizes (checked by from_file)
        hidden = header.get("hidden")
        if isinstance(hidden, list):
            self.hidden_layer_sizes = tuple(hidden)
        return dtype


_PARAMS_DOC = """
    Parameters
    ----------
    n_factors : int, default=8
        Size k of the embeddings (one per feature, shared by the FM and the
        deep component).
    hidden_layer_sizes : tuple of int, default=(256, 128)
        Widths of the MLP's hidden layers (ReLU); ``()`` for none (the deep
        component is then linear in the pooled embeddings).  Its input has
        n_fields * n_factors units (at most 65536).
    dropout : float in [0, 1), default=0
        Fraction of each hidden layer's units dropped in training (inverted
        dropout, seeded by ``random_state``; scoring never drops).
    optimizer : {"adam", "adagrad"}, default="adam"
        Mini-batch optimizer.  The embedding rows (and linear weights) are
        updated lazily: a batch steps only the rows it touches, once, with
        Adam's bias correction counted per row; the dense layers and w0 are
        stepped every batch.
    learning_rate : float or None, default=None
        Step size; None means 1e-3 for Adam and 1e-2 for AdaGrad.
    batch_size : int, default=256
        Rows per mini-batch (the gradient is the weighted mean over a batch).
        On a few thousand rows or fewer, a smaller batch (e.g. 64) gives the
        optimizer more steps per epoch.
    n_epochs : int or None, default=None
        Passes over the training data (per ``fit``; ``partial_fit`` does one).
        None means 10, or more on an in-memory fit of fewer than 25,600
        rows (batch_size=256): enough for at least 100 optimizer steps
        (MIN_STEPS), since 10 epochs of one batch each leave Adam far from a
        fit (R^2 0.28 vs 0.94 with 100 steps on scikit-learn's 200-row
        regression check).  The best number depends on the data (2 on a 10k-row
        Criteo sample, which DeepFM then overfits; 8-9 on MovieLens 100k;
        benchmarks/results/RESULTS_deepfm_defaults.md): pass an ``eval_set``
        to stop early and keep the best epoch.
    l2_w0 : float, default=0
        L2 of the bias.
    l2_w, l2_v : float, default=1e-2
        L2 of the linear weights and of the embeddings, added to the
        gradient of the rows a batch touches (lazy, as the updates).  1e-2
        was better than no L2 on the real data sets of
        benchmarks/results/RESULTS_deepfm_defaults.md, and overfits later.
    l2_dense : float, default=0
        L2 of the hidden layers' weights and the output weights (not their
        biases).
    init_std : float or None, default=None
        Standard deviation of the normal initialisation of the embeddings;
        None means 0.01.  Hidden layers are He-uniform, the output layer
        Glorot-uniform, biases zero.
    normalize : bool, default=False
        Scale each row to unit L2 norm (instance-wise normalisation, as the FM
        estimators do by default): set it for rows of real values of widely
        varying scale.  Off by default: on one-hot fields it only shrinks the
        MLP's input.
    fit_intercept : bool, default=True
        Learn the bias w0, started at the log-odds of the training labels
        (the mean target for regression).
    shuffle : bool, default=True
        Visit the rows in a new random order each epoch (within each block
        when streaming a file).
    n_iter_no_change, tol, eval_metric
        Early stopping with ``eval_set``, as for :class:`cfm.FMClassifier`.
    dtype : {"float32", "float64"} or None, default=None
        Precision of the parameters and of the MLP's arithmetic; None means
        float32.
    n_jobs : int or None, default=None
        Threads, as for :class:`cfm.FMClassifier`.
    random_state : int, RandomState, Generator or None, default=None
        Seeds the initialisation, the row order and dropout.
    warm_start : bool, default=False
        When True, ``fit`` continues from the current parameters (and the
        optimizer's state).
    verbose : int, default=0
        When > 0, print one line per epoch to stderr.
    encoder : cfm.FieldEncoder or None, default=None
        Raw columns in, one field per column (``fields`` from the encoder),
        saved in the model file: as for :class:`cfm.FMClassifier`.
    fields : array-like of int of shape (n_features,), or None, default=None
        Field id of each column for every ``fit`` given no ``fields`` (so
        that the estimator works in scikit-learn's Pipeline, GridSearchCV and
        cross_val_score).  None: ``fit``'s ``fields``, else those of a libffm
        file / cache given as X, else inferred from X by
        :func:`cfm.infer_fields` (streams: from the first block): one field
        per run of columns no two of which share a row -- a one-hot encoded
        variable is one field, each column of dense numeric data its own --,
        at most 64 (the MLP's input is n_fields * n_factors wide).

    Notes
    -----
    Reproducibility: with a fixed ``random_state`` training is bit-for-bit
    reproducible for **any** ``n_jobs`` (the kernels reduce every sum in an
    order that does not depend on the thread count, and there are no Hogwild
    updates), and predictions are identical for any ``n_jobs``.  Rows of a
    file are shuffled within blocks of ``block_rows``, so ``fit(path)`` and
    ``fit(X)`` visit rows in different orders.

    The dense layers run through BLAS single-threaded inside cfm's own
    threads (BLAS is limited to one thread around each kernel call with
    threadpoolctl when it is installed).

    Attributes
    ----------
    w0_ : float
    w_ : ndarray of shape (n_features,)
    V_ : ndarray of shape (n_features, n_factors)
        The embeddings.
    coefs_, intercepts_ : lists of ndarray
        Weights (d_{l-1}, d_l) and biases (d_l,) of the hidden layers.
    w_out_ : ndarray of shape (d_L,)
        Output weights of the MLP.
    fields_ : ndarray of shape (n_features,)
    n_fields_ : int
    n_features_in_, history_, n_epochs_, best_epoch_
        As for :class:`cfm.FMClassifier`.
    best_params_ : dict
        The learning rate, normalize and epochs the fit used (DeepFM chooses
        none of them from the data: they are the parameters or their
        defaults), as for :class:`cfm.FMClassifier`.
"""


class DeepFMRegressor(_DeepFMMixin, FMRegressor):
    __doc__ = ("DeepFM for regression (squared loss).\n\n    fit(X, y, fields=...) with one "
               "field id per column (or the ``fields`` parameter, or fields\n    inferred from "
               "X); see the module cfm.deepfm for the model.\n"
               + _PARAMS_DOC)

    def partial_fit(self, X, y, sample_weight=None, fields=None):
        """One epoch over (X, y); ``fields`` is used on the first call only
        (default: the ``fields`` parameter, else inferred from X)."""
        return self._partial_fit(X, y, sample_weight,
                                 fields=self.fields if fields is None else fields)


class DeepFMClassifier(_DeepFMMixin, FMClassifier):
    __doc__ = ("DeepFM for binary classification (logistic loss).\n\n    fit(X, y, fields=...) "
               "with one field id per column; any two labels are\n    accepted (``classes_`` "
               "holds them sorted); see the module cfm.deepfm for the model.\n" + _PARAMS_DOC
               + """    class_weight : dict, "balanced" or None, default=None
        Weights of the classes in the loss, as for :class:`cfm.FMClassifier`.
    classes_ : ndarray of shape (2,)
""")

    def __init__(self, n_factors=8, *, hidden_layer_sizes=(256, 128), dropout=0.0,
                 optimizer="adam", learning_rate=None, batch_size=256, n_epochs=None,
                 l2_w0=0.0, l2_w=1e-2, l2_v=1e-2, l2_dense=0.0, init_std=None,
                 normalize=False, fit_intercept=True, shuffle=True, n_iter_no_change=3,
                 tol=1e-4, eval_metric=None, dtype=None, n_jobs=None, random_state=None,
                 warm_start=False, verbose=0, encoder=None, fields=None, class_weight=None):
        _DeepFMMixin.__init__(
            self, n_factors, hidden_layer_sizes=hidden_layer_sizes, dropout=dropout,
            optimizer=optimizer, learning_rate=learning_rate, batch_size=batch_size,
            n_epochs=n_epochs, l2_w0=l2_w0, l2_w=l2_w, l2_v=l2_v, l2_dense=l2_dense,
            init_std=init_std, normalize=normalize, fit_intercept=fit_intercept,
            shuffle=shuffle, n_iter_no_change=n_iter_no_change, tol=tol,
            eval_metric=eval_metric, dtype=dtype, n_jobs=n_jobs, random_state=random_state,
            warm_start=warm_start, verbose=verbose, encoder=encoder, fields=fields)
        self.class_weight = class_weight

    def partial_fit(self, X, y, classes=None, sample_weight=None, fields=None):
        """One epoch over (X, y); ``fields`` is used on the first call only
        (default: the ``fields`` parameter, else inferred from X), ``classes``
        needed on the first call when that batch lacks a label."""
        if isinstance(self.class_weight, str):
            raise ValueError("class_weight='balanced' is not supported by partial_fit (a "
                             "batch's class counts are not the data's); pass a dict")
        return self._partial_fit(X, y, sample_weight, classes=classes,
                                 fields=self.fields if fields is None else fields)
