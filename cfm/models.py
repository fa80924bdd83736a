"""Public FM estimators: :class:`FMRegressor` and :class:`FMClassifier`."""
import numpy as np

from ._compat import ClassifierMixin, RegressorMixin
from ._estimator import BaseFM
from ._state import FMTable, MCMCSamples
from ._to_torch import TorchMixin
from ._validation import check_y

_COMMON_DOC = """
    Parameters
    ----------
    n_factors : int, default=8
        Rank k of the pairwise interactions. ``0`` gives a plain linear model
        (logistic / linear regression, xLearn's "LR").
    solver : {"adagrad", "sgd", "ftrl", "als", "mcmc"}, default="adagrad"
        "adagrad", "sgd", "ftrl": per-sample optimizers. "ftrl" is
        FTRL-proximal on w0 and w (with ``l1`` giving exact zeros) and
        AdaGrad on the factors.
        "als": alternating least squares / coordinate descent (libFM's ALS):
        each sweep sets every parameter to the minimiser of the L2-regularised
        squared loss given the others (FMClassifier: probit model fitted by
        EM). ``l2_w0``, ``l2_w``, ``l2_v`` regularise the *total* loss; no
        learning rate.
        "mcmc": Bayesian FM by Gibbs sampling (libFM's MCMC): no learning
        rate or L2 to tune (hyper-priors instead), ``n_epochs`` sweeps of
        which the first ``n_burn_in`` are discarded; predictions are
        posterior means over the kept samples (regression: clipped to the
        training target range, as libFM; FMClassifier: probit). ``fit``
        takes ``groups`` (one prior per feature group, libFM's ``-meta``).
        See cfm/_train/als.py, gibbs.py. als / mcmc need in-memory data and support
        neither warm_start nor partial_fit; sample_weight (a per-row
        likelihood weight, equivalent to repeating rows) works except with
        FMClassifier(solver="mcmc").
    learning_rate : float or None, default=None
        Step size (FTRL's alpha for solver="ftrl"). None: chosen from the
        data among 0.05, 0.1, 0.2 by ``fit`` (see ``auto_tune``); where
        nothing is chosen, the previous fit's choice (``best_params_``) or
        0.15 for FMRegressor and 0.1 for FMClassifier.
    n_epochs : int or None, default=None
        Passes over the training data (per ``fit``; ``partial_fit`` does one);
        sweeps for solver="als"/"mcmc". None: chosen by early stopping on a
        validation split (see ``auto_tune``, at most 40); where nothing is
        chosen, 10, or 30 for "als" and 200 for "mcmc".
    l2_w0 : float, default=0
        L2 regularisation of the bias.
    l2_w, l2_v : float or None, default=None
        L2 regularisation of the linear weights and of the factors, applied
        to the features present in each sample (so frequent features are
        regularised more, as in libFM and xLearn). None means the estimator's
        default: 1e-3 and 3e-2 for FMRegressor (rating-style data overfits
        quickly), 1e-5 and 1e-5 for FMClassifier (click logs: frequent
        features carry the signal and must not be shrunk). With
        solver="als" they weight the squared norms in the total objective;
        None then means 5 and 12. Unused by solver="mcmc".
    l1 : float, default=0
        L1 regularisation of the linear weights (solver="ftrl" only).
    ftrl_beta : float, default=1.0
        FTRL-proximal's beta.
    init_std : float or None, default=None
        Standard deviation of the normal initialisation of the factors. None
        means 0.03, or 0.1 (libFM's default) for solver="als"/"mcmc".
    normalize : bool or None, default=None
        Scale each row to unit L2 norm on the fly (instance-wise
        normalisation, as xLearn and libffm do by default). The input is not
        copied. With m one-hot values a row's linear term is scaled by
        1/sqrt(m) and its pairwise term by 1/m: a strong shrinkage. True is
        the safe choice for dense numeric or variable-length rows; False is
        usually better for a fixed set of one-hot fields with many rows per
        value (recommendation data with side features, large logs). None:
        chosen from the data by ``fit`` (see ``auto_tune``); where nothing
        is chosen, the previous fit's choice or True, and False for
        solver="als"/"mcmc" (as libFM). A warm start keeps the model's.
    fit_intercept : bool, default=True
        Learn the bias w0 (FMRegressor starts it at the mean target,
        FMClassifier at 0 as libFM and xLearn do).
    shuffle : bool, default=True
        Visit the rows in a new random order each epoch.
    n_iter_no_change : int, default=3
        Early-stopping patience, in epochs, on ``eval_set`` or on the
        validation split of ``auto_tune``.
    tol : float, default=1e-4
        Minimum improvement of the eval metric that resets the patience of
        a fit with fixed settings (the race of ``auto_tune`` counts any
        improvement, as measured).
    eval_metric : str or None, default=None
        Metric of ``eval_set`` used for ``history_`` and early stopping
        (None: logloss / rmse), and of the race of ``auto_tune`` (None: AUC
        for classifiers, RMSE for regressors).
    dtype : {"float32", "float64"} or None, default=None
        Precision of the parameters; None means float32 (for the FFM
        estimators: float16 factor storage on CPUs with AVX2/F16C, see
        :class:`cfm.FFMClassifier`). Input X may be float32 or float64 either
        way (it is not converted).
    n_jobs : int or None, default=None
        Threads, with scikit-learn's meaning: None uses OpenMP's default (the
        usable cores unless limited by OMP_NUM_THREADS or threadpoolctl), -1
        all usable cores, -k all but k-1; 0 is an error.  "Usable cores" is
        the process's CPU affinity, not the machine's core count.  At most 4
        threads per usable core are used (``cfm._validation.max_threads()``);
        larger values are reduced to that.  Small inputs use fewer threads
        (work is handed out in chunks; an input of one chunk runs on the
        calling thread).  A loaded model keeps its saved ``n_jobs``, but
        ``cfm predict`` scores with ``--threads`` or the default.
    random_state : int, RandomState, Generator or None, default=None
        Seeds the initialisation and the row order.
    warm_start : bool, default=False
        When True, ``fit`` continues from the current parameters.
    verbose : int, default=0
        When > 0, print one line per epoch (train loss, eval metrics, time)
        to stderr.
    n_burn_in : int or None, default=None
        solver="mcmc": sweeps discarded before samples are kept. None means
        ``min(n_epochs // 10, 50)``.
    auto_tune : bool, default=True
        Choose the settings left at None (``learning_rate``, ``normalize``,
        ``n_epochs``) from the data in ``fit(X, y)`` (in memory, solver
        "adagrad", "sgd" or "ftrl"): hold out a seeded 15% of the rows
        (stratified for classifiers), race learning_rate {0.05, 0.1, 0.2} x
        normalize {True, False} by successive halving (6 -> 3 -> 2 -> 1
        candidates after 1, 2, 4 epochs) on the validation AUC / RMSE,
        continue the winner until 3 epochs without improvement (at most
        40), then refit it on all rows for its best epoch count with the
        same seed. Costs at most 25 epochs over the data (2.5 fixed
        10-epoch fits). Given an ``eval_set``, its first pair replaces the
        holdout and the winner, at its best epoch, is the model (no
        refit). Too small a validation split (fewer than 200 minority-class
        rows, or 1,000 rows for regression) skips the race: the fixed
        defaults are fitted on all rows. Explicit arguments are never
        overridden (``learning_rate=0.1`` races normalize only). Warm
        starts and ``partial_fit`` reuse the previous fit's choice
        (``best_params_``); out-of-core fits (a file or chunks) and
        solver="als"/"mcmc" use fixed settings. False: the fixed defaults
        (10 epochs, normalize=True, the default learning rate), as cfm
        before issue 13.
    n_kept_samples : int or None, default=None
        solver="mcmc": number of posterior samples kept on the model (and in
        its file) for prediction, evenly spaced over the sweeps after the
        burn-in (always including the last). None keeps every one; each
        sample costs n_features * (1 + n_factors) parameters of ``dtype``.
        ``eval_set`` metrics during fit average every post-burn-in sample.
    encoder : cfm.FieldEncoder or None, default=None
        Raw columns in: ``fit(df, y)`` fits a copy of the encoder on the
        DataFrame's columns (``encoder_``, one field per column: the FFM
        estimators take their ``fields`` from it) and trains on what it
        encodes; ``predict(df)`` encodes raw rows the same way (unseen values
        go to their column's "other" id). The fitted encoder is saved in the
        model file, so ``cfm.load(path).predict(df)`` and ``cfm predict
        --csv`` work on raw rows. Warm starts and ``partial_fit`` after the
        first call keep ``encoder_``; the first ``partial_fit`` uses the
        encoder as given if it is fitted, else fits it on that batch. None:
        X must be numeric (arrays, sparse matrices, files).

    Notes
    -----
    Reproducibility: with ``n_jobs=1`` and a fixed ``random_state`` training
    (the race of ``auto_tune`` included) is bit-for-bit reproducible (solver="als"/"mcmc": for any ``n_jobs``). With several threads training is Hogwild
    (lock-free updates of shared parameters), so results vary slightly from
    run to run. Predictions are identical for any ``n_jobs``.
"""


class _FMModel(TorchMixin, BaseFM):
    """What the FM estimators share beyond BaseFM: their state classes and the
    attributes of solver="mcmc" fits."""

    _state_class = FMTable
    _file_state_classes = {"mcmc": MCMCSamples}


    @property
    def alpha_(self):
        """solver="mcmc": posterior mean of the noise precision."""
        alpha = getattr(self.__dict__.get("_state"), "alpha", None)
        if alpha is None:
            raise AttributeError("alpha_ (solver='mcmc' only)")
        return alpha

    @property
    def n_prior_groups_(self):
        """solver="mcmc": number of prior groups used by fit."""
        n = getattr(self.__dict__.get("_state"), "n_prior_groups", None)
        if n is None:
            raise AttributeError("n_prior_groups_ (set by fit with solver='mcmc')")
        return n


class FMRegressor(RegressorMixin, _FMModel):
    __doc__ = ("""Factorization machine for regression (squared loss).

    y(x) = w0 + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j
""" + _COMMON_DOC + """
    Attributes
    ----------
    w0_ : float
    w_ : ndarray of shape (n_features,)
    V_ : ndarray of shape (n_features, n_factors)
    n_features_in_ : int
    history_ : list of dict
        Per epoch: train_loss (mean half squared error), eval metrics, time
        (solver="mcmc": also the sampled noise precision ``alpha``). After a
        race (``auto_tune``), the epochs of the refit on all rows (with an
        eval_set: the winner's epochs); the race's curves are in ``race_``.
    alpha_ : float
        solver="mcmc" only: posterior mean of the noise precision.
    n_prior_groups_ : int
        solver="mcmc" only: number of prior groups used (see ``fit``).
    n_epochs_ : int
    best_epoch_ : int
    best_params_ : dict
        The settings of the returned model: ``learning_rate`` (None for
        solver="als"/"mcmc"), ``normalize``, ``n_epochs`` (the epochs it was
        trained for), ``validation_fraction`` (0 when no row was held out)
        and ``auto`` (how they were set: "race", "early stopping", "race on
        eval_set", "skipped: validation split too small", "off: ..."). Saved
        in model files.
    race_ : dict or None
        The race of ``auto_tune`` (None when there was none): ``metric``,
        ``rungs``, ``validation_rows``, per candidate its settings,
        validation ``curve`` (one score per epoch), ``dropped_at`` (the rung
        that dropped it) and ``diverged``; the ``winner``'s index, its
        ``best_epoch`` and ``best_score``, ``row_epochs`` (rows trained /
        rows, the refit included) and ``memory_limited`` (True when the
        candidates' tables would not fit in a quarter of the memory, so
        that only normalize was raced). Not saved in model files.
    """)

    _loss = "squared"
    _default_metric = "rmse"
    _defaults = {"learning_rate": 0.15, "l2_w": 1e-3, "l2_v": 3e-2}

    def _prepare_y(self, y, n, reset, classes=None):
        return check_y(y, n, estimator=self)

    def _encode_eval_y(self, y, n):
        return check_y(y, n, name="eval_set y")

    @staticmethod
    def _initial_bias(y, sw):
        return float(np.average(y, weights=sw))

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), starting from the current model if fitted."""
        return self._partial_fit(X, y, sample_weight)

    def predict(self, X):
        """Predicted values, shape (n_samples,)."""
        return self._raw_predict(X)


def _continuous(y):
    return np.issubdtype(y.dtype, np.floating) and np.any(y != np.round(y))


def _plain(v):
    """A NumPy scalar as the Python value it holds (for messages)."""
    return v.item() if isinstance(v, np.generic) else v


class FMClassifier(ClassifierMixin, _FMModel):
    __doc__ = ("""Factorization machine for binary classification (logistic loss).

    P(y = classes_[1] | x) = sigmoid(w0 + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j)

    Any two labels are accepted (``classes_`` holds them sorted).
""" + _COMMON_DOC + """
    Attributes
    ----------
    classes_ : ndarray of shape (2,)
    w0_, w_, V_, n_features_in_, history_, n_epochs_, best_epoch_, best_params_, race_
        As for FMRegressor; history_ train_loss is the mean log loss.
    """)

    _loss = "logistic"
    _default_metric = "logloss"

    def _prepare_y(self, y, n, reset, classes=None):
        y = check_y(y, n, numeric=False, estimator=self)
        if not reset:
            return self._encode(y, "y")
        if classes is not None:
            classes = np.unique(np.asarray(classes))
            if len(classes) != 2:
                raise ValueError(f"{type(self).__name__} is a binary classifier: classes must "
                                 f"hold exactly 2 labels, got {len(classes)}")
        else:
            classes = np.unique(y)
            if len(classes) < 2:
                raise ValueError("Classifier can't train when only one class is present "
                                 f"(class {classes[0]!r} only); pass data of two classes"
                                 + (" or classes= to partial_fit" if len(classes) else ""))
            if len(classes) > 2:
                if _continuous(y):
                    raise ValueError("Unknown label type: continuous. FMClassifier needs two "
                                     "class labels; use FMRegressor for real-valued targets.")
                raise ValueError("Only binary classification is supported. "
                                 f"{type(self).__name__} got {len(classes)} classes.")
        self.classes_ = classes
        return self._encode(y, "y")

    def _encode(self, y, name):
        pos = y == self.classes_[1]
        known = pos | (y == self.classes_[0])
        if not known.all():
            row = int(np.flatnonzero(~known)[0])
            exc = ValueError(f"{name} contains label {_plain(y[row])!r} not in classes_ "
                             f"{[_plain(c) for c in self.classes_]}")
            exc.row = row  # callers reading a file turn it into a line
            raise exc
        return np.where(pos, 1.0, -1.0)

    def _encode_eval_y(self, y, n):
        y = check_y(y, n, numeric=False, name="eval_set y")
        return (self._encode(y, "eval_set y") > 0).astype(np.float64)

    @staticmethod
    def _initial_bias(y_pm, sw):
        # 0 rather than the log-odds of the base rate: measured better on the
        # small Criteo sample (AUC 0.578 -> 0.61) and neutral on the others.
        return 0.0

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y), starting from the current model if fitted.

        ``classes`` (the two labels) is needed on the first call only when
        that batch does not contain both labels.
        """
        return self._partial_fit(X, y, sample_weight, classes=classes)

    def decision_function(self, X):
        """Raw scores (log-odds of classes_[1]), shape (n_samples,)."""
        return self._raw_predict(X)

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, 2), columns in classes_ order."""
        p = _sigmoid(self._raw_predict(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X):
        """Predicted labels (classes_[1] where the score is > 0)."""
        positive = self._raw_predict(X) > 0
        return self.classes_[positive.astype(np.intp)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags


def _sigmoid(z):
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out
