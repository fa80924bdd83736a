"""Public FM estimators: :class:`FMRegressor` and :class:`FMClassifier`."""
import numpy as np

from ._classifier import ClassifierMixin
from ._compat import ClassifierMixin as SkClassifierMixin, RegressorMixin
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


class FMClassifier(ClassifierMixin, SkClassifierMixin, _FMModel):
    __doc__ = ("""Factorization machine for classification: binary (logistic loss) or
    multiclass (softmax loss).

    Two classes: P(y = classes_[1] | x) = sigmoid(w0 + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j)

    More than two classes (a softmax FM): every class c has its own bias,
    linear weights and factors -- C independent FMs coupled by the softmax
    loss -- and P(y = c | x) = softmax_c(score_1(x), ..., score_C(x)) with
    score_c(x) = w0_c + sum_i w_ic x_i + sum_{i<j} <v_ic, v_jc> x_i x_j.
    A shared V with per-class projections of its factor sums was measured
    as the alternative (benchmarks/results/RESULTS_multiclass.md).
    Multiclass models train with solver "adagrad", "sgd" or "ftrl" (not
    "als" / "mcmc"), in memory, from files or chunks, with partial_fit and
    warm starts; ``eval_metric`` is "logloss" (the multi-class log loss, the
    default) or "accuracy"; the race of ``auto_tune`` stratifies its holdout
    by class and races on the validation log loss.  They cost C times the
    binary model's memory and time per row.

    Any labels are accepted (``classes_`` holds them sorted).
""" + _COMMON_DOC + """
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes in the loss, as in scikit-learn: multiplied
        into ``sample_weight``.  "balanced" weighs class c by
        n_samples / (n_classes * n_c), counted on the labels of the fit
        (a file or chunks: in one pass over their labels before training;
        not with partial_fit); a dict maps labels to weights (labels it
        does not name weigh 1; a label that is not a class of y is an
        error).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    w0_, w_, V_, n_features_in_, history_, n_epochs_, best_epoch_, best_params_, race_
        As for FMRegressor; history_ train_loss is the mean log loss
        (multi-class log loss for more than two classes).  With more than
        two classes ``w0_`` has shape (n_classes,), ``w_`` (n_features,
        n_classes) and ``V_`` (n_features, n_classes, n_factors) (views).
    """)

    _loss = "logistic"
    _default_metric = "logloss"

    def __init__(self, n_factors=8, *, solver="adagrad", learning_rate=None, n_epochs=None,
                 l2_w0=0.0, l2_w=None, l2_v=None, l1=0.0, ftrl_beta=1.0, init_std=None,
                 normalize=None, fit_intercept=True, shuffle=True, n_iter_no_change=3,
                 tol=1e-4, eval_metric=None, dtype=None, n_jobs=None, random_state=None,
                 warm_start=False, verbose=0, n_burn_in=None, n_kept_samples=None,
                 auto_tune=True, encoder=None, class_weight=None):
        super().__init__(
            n_factors, solver=solver, learning_rate=learning_rate, n_epochs=n_epochs,
            l2_w0=l2_w0, l2_w=l2_w, l2_v=l2_v, l1=l1, ftrl_beta=ftrl_beta, init_std=init_std,
            normalize=normalize, fit_intercept=fit_intercept, shuffle=shuffle,
            n_iter_no_change=n_iter_no_change, tol=tol, eval_metric=eval_metric, dtype=dtype,
            n_jobs=n_jobs, random_state=random_state, warm_start=warm_start, verbose=verbose,
            n_burn_in=n_burn_in, n_kept_samples=n_kept_samples, auto_tune=auto_tune,
            encoder=encoder)
        self.class_weight = class_weight

    @staticmethod
    def _initial_bias(y_pm, sw):
        # 0 rather than the log-odds of the base rate: measured better on the
        # small Criteo sample (AUC 0.578 -> 0.61) and neutral on the others.
        return 0.0

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y), starting from the current model if fitted.

        ``classes`` (every label) is needed on the first call only when that
        batch does not contain them all.
        """
        if isinstance(self.class_weight, str):
            raise ValueError("class_weight='balanced' is not supported by partial_fit (a "
                             "batch's class counts are not the data's); pass a dict")
        return self._partial_fit(X, y, sample_weight, classes=classes)

