"""How a fit's settings are chosen (issue 13): explicit arguments, the data,
a previous fit, or the fixed defaults.

``fit(X, y)`` in memory with a per-sample solver (adagrad, sgd, ftrl) and
``auto_tune=True`` (the default) chooses ``learning_rate``, ``normalize`` and
``n_epochs`` -- those left at None -- from the data: a seeded race on a
validation split, then a refit on all rows (cfm/_train/autotune.py has the
algorithm; benchmarks/studies/AUTOTUNE_FINDINGS.md the measurements).  Every
other way of training uses fixed settings: the explicit ones, else those a
previous fit chose (``best_params_``: warm start, ``partial_fit``), else the
defaults.  ``best_params_`` records what each fit used and why; ``race_`` the
race (None when there was none).
"""
import numpy as np

from ._train import autotune, sgd
from ._fields import field_count
from ._state.base import Hyper
from ._validation import (check_sample_weight, draw_seed, effective_n_threads,
                          memory_limit, set_feature_names)

# best_params_["auto"]: why settings were (not) chosen from the data
OFF = "off: auto_tune=False"
GIVEN = "off: learning_rate, normalize and n_epochs given"
WARM = "off: warm start (settings of the previous fit)"
PARTIAL = "off: partial_fit (settings of the previous fit)"
STREAM = "off: out-of-core fit"
RACE = {(True, True): "race", (True, False): "race on eval_set",
        (False, True): "early stopping", (False, False): "early stopping on eval_set"}


class TuningMixin:
    """Settings of BaseFM's fits (see the module docstring)."""

    _TUNED = ("learning_rate", "normalize", "n_epochs")

    # ------------------------------------------------------------ defaults
    def _n_epochs(self):
        """n_epochs, or the solver's default (10 per-sample, 30 als, 200 mcmc)."""
        return int(self.n_epochs) if self.n_epochs is not None else self._solver_spec().n_epochs

    def _init_std(self):
        """init_std, or the solver's default (0.03 per-sample, 0.1 als / mcmc)."""
        return float(self.init_std) if self.init_std is not None \
            else self._solver_spec().init_std

    def _hp(self, name):
        """A hyper-parameter's value, or the estimator's default when it is None."""
        value = getattr(self, name)
        return float(self._defaults[name] if value is None else value)

    def _settings(self, previous=None):
        """{learning_rate, normalize, n_epochs} of a fit that chooses nothing:
        the explicit values, else ``previous`` (an earlier fit's best_params_)
        for the learning rate and normalize, else the defaults."""
        previous = previous or {}
        lr = self.learning_rate
        if lr is None:
            lr = previous.get("learning_rate")
        norm = self.normalize
        if norm is None:
            norm = previous.get("normalize")
        return {"learning_rate": self._hp("learning_rate") if lr is None else float(lr),
                "normalize": self._solver_spec().normalize if norm is None else bool(norm),
                "n_epochs": self._n_epochs()}

    def _hyper(self, learning_rate=None):
        lr = self._hp("learning_rate") if learning_rate is None else float(learning_rate)
        return Hyper(loss=self._loss, optimizer=self.solver,
                     fit_intercept=bool(self.fit_intercept), learning_rate=lr,
                     l2_w0=float(self.l2_w0), l2_w=self._hp("l2_w"), l2_v=self._hp("l2_v"),
                     l1=float(self.l1), ftrl_beta=float(self.ftrl_beta))

    def _record(self, settings, status, validation_fraction=0.0, race=None):
        self.best_params_ = {"learning_rate": settings["learning_rate"],
                             "normalize": bool(settings["normalize"]),
                             "n_epochs": int(settings["n_epochs"]),
                             "validation_fraction": float(validation_fraction),
                             "auto": status}
        self.race_ = race

    # ------------------------------------------------------------ fits
    def _sample_weight(self, sample_weight, y_enc, n):
        """Per-sample weights of the loss (classifiers: times class_weight)."""
        return check_sample_weight(sample_weight, n)

    def _block_weights(self, y_enc):
        """Weights of a block of an out-of-core fit (class_weight), or None."""
        return None

    def _count_labels(self, blocks):
        """Before an out-of-core fit: count what class weights need (classifiers)."""

    def _fit_arrays(self, X, y, sample_weight, eval_set, fields, callback):
        dtype = self._validate_params()
        warm = self.warm_start and "_state" in self.__dict__
        Xc, fields = self._check_X_fields(X, fields, self.n_features_in_ if warm else None,
                                          reset=not warm)
        y_enc = self._prepare_y(y, Xc.n_rows, reset=not warm)
        sw = self._sample_weight(sample_weight, y_enc, Xc.n_rows)
        evals = self._check_eval_set(eval_set, Xc.shape[1])
        race = None
        if warm:
            s, status, frac = self._settings(self.__dict__.get("best_params_")), WARM, 0.0
            state = self._ensure_layout(dtype, s["learning_rate"])
            s["normalize"] = state.normalize  # a model's normalisation is part of it
        else:
            seed = draw_seed(self.random_state)
            s, status, frac, race, build = self._tune(Xc, y_enc, sw, evals, fields, dtype,
                                                      seed, callback)
            if s is None:  # raced on eval_set: the winner is the model
                set_feature_names(self, X)
                return
            state = self._init_state(Xc.shape[1], y_enc, sw, dtype, fields, seed=seed,
                                     learning_rate=s["learning_rate"],
                                     normalize=s["normalize"], **build)
            del build
            set_feature_names(self, X)
        res = sgd.fit_arrays(state, Xc, y_enc, sw, evals,
                             hyper=self._hyper(s["learning_rate"]), rng=self._rng,
                             shuffle=self.shuffle, n_epochs=s["n_epochs"],
                             config=self._loop_config(callback))
        self.best_epoch_ = res.best_epoch
        if race is not None:
            race["row_epochs"] += res.n_epochs  # the refit
        # n_epochs: the epochs the returned parameters were trained for
        self._record(dict(s, n_epochs=res.best_epoch), status, frac, race)

    def _partial_fit(self, X, y, sample_weight, classes=None, fields=None):
        dtype = self._validate_params()
        if self._solver_spec().coordinate:
            raise ValueError(f"partial_fit is not available with solver={self.solver!r} "
                             "(it sweeps over all the data); use fit")
        X, _, fields, encoder = self._encode_fit(X, None, fields, partial=True)
        fitted = "_state" in self.__dict__
        Xc, fields = self._check_X_fields(X, fields, self.n_features_in_ if fitted else None,
                                          reset=not fitted)
        y_enc = self._prepare_y(y, Xc.n_rows, reset=not fitted, classes=classes)
        sw = self._sample_weight(sample_weight, y_enc, Xc.n_rows)
        s = self._settings(self.__dict__.get("best_params_") if fitted else None)
        if fitted:
            state = self._ensure_layout(dtype, s["learning_rate"])
        else:
            state = self._init_state(Xc.shape[1], y_enc, sw, dtype, fields,
                                     learning_rate=s["learning_rate"],
                                     normalize=s["normalize"])
            set_feature_names(self, X)
            self._record(dict(s, n_epochs=1), PARTIAL)
        res = sgd.fit_arrays(state, Xc, y_enc, sw, [], hyper=self._hyper(s["learning_rate"]),
                             rng=self._rng, shuffle=self.shuffle, n_epochs=1,
                             config=self._loop_config(None), early_stopping=False)
        self.best_epoch_ = res.best_epoch
        self._keep_encoder(encoder)
        return self

    # ------------------------------------------------------------ the race
    def _tune(self, Xc, y, sw, evals, fields, dtype, seed, callback):
        """(settings of the fit that follows, best_params_["auto"], validation
        fraction, race record, _init_state arguments of the refit), or
        settings None when the race on an eval_set produced the model itself."""
        s = self._settings()
        if not self.auto_tune:
            return s, OFF, 0.0, None, {}
        if all(getattr(self, k) is not None for k in self._TUNED):
            return s, GIVEN, 0.0, None, {}
        classifier = self._loss == "logistic"
        # multiclass (a softmax FM): y holds class indices; stratified by class,
        # raced on the multi-class log loss (AUC is binary)
        n_classes = len(self.classes_) if classifier else 0
        counts = autotune.class_counts(evals[0][1], classifier, n_classes) if evals \
            else autotune.holdout_counts(y, classifier, n_classes=n_classes)
        if autotune.too_small(counts, classifier):
            return s, autotune.TOO_SMALL, 0.0, None, {}
        self._check_factors()
        cands = autotune.candidates(self.learning_rate, self.normalize)
        n_fields = field_count(fields)
        self._check_model_size(Xc.shape[1], n_fields, dtype)
        per_model = self._state_class.model_bytes(Xc.shape[1], n_fields, int(self.n_factors),
                                                  self.solver, dtype)
        limited = len(cands) > 2 and autotune.peak_models(len(cands), bool(evals)) \
            * per_model > autotune.MEMORY_SHARE * memory_limit()
        if limited:  # too large to hold every candidate: race normalize only
            cands = autotune.candidates(s["learning_rate"], self.normalize)
        init_seed, order_seed = autotune.streams(seed)
        if evals:
            rows, race_evals = None, evals
        else:
            rows, val = autotune.holdout(y, seed, classifier, n_classes=n_classes)
            yv = (y[val] > 0).astype(np.float64) if classifier and n_classes == 2 else y[val]
            race_evals = [(autotune.take_rows(Xc, val), yv)]
        # the bias starts from the training rows' targets (never the held-out ones)
        y_bias = y if rows is None else y[rows]
        sw_bias = sw if sw is None or rows is None else sw[rows]
        w0 = self._initial_bias(y_bias, sw_bias) if self.fit_intercept else 0.0

        template = []  # every candidate (and the refit) starts from copies of one init

        def make_state(lr, normalize, reuse=None):
            if not template:
                template.append(self._build_state(Xc.shape[1], w0, dtype, fields, init_seed,
                                                  lr, normalize))
            return self._build_state(Xc.shape[1], w0, dtype, fields, init_seed, lr, normalize,
                                     template[0], reuse)

        race = autotune.Race(
            make_state=make_state, Xc=Xc, y=y, sw=sw, rows=rows, evals=race_evals,
            hyper=self._hyper(), order_seed=order_seed, shuffle=self.shuffle,
            metric=self.eval_metric or ("rmse" if not classifier else
                                        "auc" if n_classes == 2 else "logloss"),
            n_threads=effective_n_threads(self.n_jobs), name=type(self).__name__,
            n_rows=Xc.n_rows, n_epochs=self.n_epochs, patience=int(self.n_iter_no_change),
            refit=not evals, verbose=self.verbose,
            callback=callback if callback is not None or not self.verbose
            else self._print_epoch)
        res = race.run(cands)
        res.record["memory_limited"] = limited
        w = res.winner
        status = RACE[(len(cands) > 1, not evals)]
        if not evals:
            n_epochs = self._n_epochs() if self.n_epochs is not None else res.best_epoch
            settings = {"learning_rate": w.learning_rate, "normalize": w.normalize,
                        "n_epochs": n_epochs}
            return settings, status, autotune.VALIDATION_FRACTION, res.record, {
                "template": template[0], "reuse": res.spare}
        # eval_set: the winner, restored to its best epoch, is the model
        self._adopt(w.state)
        self._rng = w.rng
        self.history_ = w.records
        self.n_epochs_ = len(w.records)
        self.best_epoch_ = res.best_epoch
        self._record({"learning_rate": w.learning_rate, "normalize": w.normalize,
                      "n_epochs": res.best_epoch}, status, 0.0, res.record)
        return None, status, 0.0, res.record, {}
