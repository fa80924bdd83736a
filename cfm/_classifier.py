"""What the classifiers share: labels, binary or multiclass, and ``class_weight``.

Two labels train the binary FM (logistic loss on -1 / +1, as always); more
than two train a softmax FM (cfm._state.softmax.SoftmaxFMTable: per-class
w0, w and V coupled by the softmax loss) where the estimator allows it
(``_multiclass_state`` is not None: FMClassifier; FFMClassifier names
cfm._state.softmax_ffm.SoftmaxFFMTable, per-class field-aware factors).  ``class_weight``
becomes per-sample weights of the loss (cfm._classes).
"""
from dataclasses import replace

import numpy as np

from . import scoring
from ._classes import (check_class_weight, class_index, class_weights, plain,
                       weighted)
from ._state import FMTable
from ._state.softmax import SoftmaxFMTable
from ._validation import check_sample_weight, check_y


def _continuous(y):
    return np.issubdtype(y.dtype, np.floating) and np.any(y != np.round(y))


def sigmoid(z):
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def softmax(z):
    """Row-wise softmax of (n, C) raw scores."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class ClassifierMixin:
    """Labels, multiclass and class_weight of BaseFM classifiers (see the
    module docstring).  Placed before the estimator base in the MRO."""

    _binary_state = FMTable
    # the state of models of more than two classes; None: binary only
    _multiclass_state = SoftmaxFMTable

    # ------------------------------------------------------------ the model kind
    @property
    def _state_class(self):
        """The binary state class, or the multiclass one bound to the number
        of classes once ``classes_`` holds more than two labels."""
        classes = self.__dict__.get("classes_")
        if classes is not None and len(classes) > 2 and self._multiclass_state is not None:
            return self._multiclass_state.for_classes(len(classes))
        return self._binary_state

    @property
    def _multiclass(self):
        classes = self.__dict__.get("classes_")
        return classes is not None and len(classes) > 2

    def _file_task(self):
        return "multiclass" if self._multiclass else "binary"

    def _file_tasks(self):
        return ("binary", "multiclass") if self._multiclass_state is not None else ("binary",)

    def _metrics_allowed(self):
        return ("logloss", "auc", "accuracy")

    # ------------------------------------------------------------ labels
    def _refuse_classes(self, n):
        name = type(self).__name__
        return ValueError(f"Only binary classification is supported by {name}; got {n} "
                          "classes (FMClassifier and FFMClassifier train multiclass softmax "
                          "models)")

    def _prepare_y(self, y, n, reset, classes=None):
        y = check_y(y, n, numeric=False, estimator=self)
        if not reset:
            return self._encode(y, "y")
        name = type(self).__name__
        if classes is not None:
            classes = np.unique(np.asarray(classes))
            if len(classes) > 2 and _continuous(classes):
                raise ValueError(f"Unknown label type: continuous. {name} needs class "
                                 "labels; use FMRegressor for real-valued targets.")
            if len(classes) < 2 or (len(classes) > 2 and self._multiclass_state is None):
                what = "exactly 2" if self._multiclass_state is None else "at least 2"
                raise ValueError(f"{name} is a{' binary' if what == 'exactly 2' else ''} "
                                 f"classifier: classes must hold {what} labels, got "
                                 f"{len(classes)}")
        else:
            classes = np.unique(y)
            if len(classes) < 2:
                raise ValueError("Classifier can't train when only one class is present "
                                 f"(class {classes[0]!r} only); pass data of two classes"
                                 + (" or classes= to partial_fit" if len(classes) else ""))
            if len(classes) > 2:
                if _continuous(y):
                    raise ValueError(f"Unknown label type: continuous. {name} needs class "
                                     "labels; use FMRegressor for real-valued targets.")
                if self._multiclass_state is None:
                    raise self._refuse_classes(len(classes))
        if len(classes) > 2:
            self._check_multiclass(len(classes))
        self.classes_ = classes
        return self._encode(y, "y")

    def _check_multiclass(self, n_classes):
        """Settings a softmax FM cannot train with: a clear error before any work."""
        spec = self._solver_spec()
        if spec.coordinate:
            raise ValueError(f"solver={self.solver!r} trains binary models only; a "
                             f"{n_classes}-class model needs solver 'adagrad', 'sgd' or 'ftrl'")
        if self.eval_metric == "auc":
            raise ValueError(f"eval_metric='auc' is binary; a {n_classes}-class model uses "
                             "'logloss' (multi-class log loss) or 'accuracy'")
        limit = self._multiclass_state.max_classes
        if n_classes > limit:
            raise ValueError(f"{n_classes} classes: at most {limit} are supported")

    def _encode(self, y, name):
        """Binary: -1 / +1 (classes_[0] / classes_[1]); multiclass: class
        indices as float64."""
        classes = self.classes_
        if len(classes) > 2:
            return class_index(y, classes, name).astype(np.float64)
        pos = y == classes[1]
        known = pos | (y == classes[0])
        if not known.all():
            row = int(np.flatnonzero(~known)[0])
            exc = ValueError(f"{name} contains label {plain(y[row])!r} not in classes_ "
                             f"{[plain(c) for c in classes]}")
            exc.row = row  # callers reading a file turn it into a line
            raise exc
        return np.where(pos, 1.0, -1.0)

    def _encode_eval_y(self, y, n):
        """Labels as the metrics take them: 0 / 1, or class indices."""
        y = check_y(y, n, numeric=False, name="eval_set y")
        enc = self._encode(y, "eval_set y")
        return enc if self._multiclass else (enc > 0).astype(np.float64)

    def _sample_weight(self, sample_weight, y_enc, n):
        """Per-sample weights of the loss: ``sample_weight`` times the weight
        of each row's class (``class_weight``)."""
        check_class_weight(getattr(self, "class_weight", None))
        sw = check_sample_weight(sample_weight, n)
        cw = getattr(self, "class_weight", None)
        if cw is None:
            return sw
        idx = y_enc.astype(np.intp) if self._multiclass else (y_enc > 0).astype(np.intp)
        return weighted(sw, class_weights(cw, self.classes_, idx), idx)

    def _count_labels(self, blocks):
        """class_weight="balanced" out of core: one pass over the stream's labels
        before training (the counts of every class are needed from the first
        block on); the weights, {label: weight}, are kept in
        ``_stream_class_weight`` for the blocks."""
        cw = getattr(self, "class_weight", None)
        check_class_weight(cw)
        if not isinstance(cw, str):
            return
        counts = {}
        for _, yb, _ in blocks():
            labels, n = np.unique(np.asarray(yb), return_counts=True)
            for label, c in zip(labels.tolist(), n.tolist()):
                counts[label] = counts.get(label, 0) + c
        total = sum(counts.values())
        self._stream_class_weight = {label: total / (len(counts) * c)
                                     for label, c in counts.items()}

    def _block_weights(self, y_enc):
        """Weights of a block of an out-of-core fit: its rows' class weights
        ("balanced": from the counts of ``_count_labels``)."""
        cw = getattr(self, "class_weight", None)
        if cw is None:
            return None
        if isinstance(cw, str):
            cw = self._stream_class_weight
        idx = y_enc.astype(np.intp) if self._multiclass else (y_enc > 0).astype(np.intp)
        return np.ascontiguousarray(class_weights(cw, self.classes_, idx)[idx])

    # ------------------------------------------------------------ prediction
    def decision_function(self, X):
        """Raw scores: log-odds of classes_[1], shape (n_samples,); for more
        than two classes, the per-class scores (softmax logits), shape
        (n_samples, n_classes)."""
        return self._raw_predict(X)

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), columns in
        classes_ order."""
        z = self._raw_predict(X)
        if z.ndim == 2:
            return softmax(z)
        p = sigmoid(z)
        return np.column_stack([1.0 - p, p])

    def predict(self, X):
        """Predicted labels (binary: classes_[1] where the score is > 0; else
        the class of the largest score, the first on ties)."""
        z = self._raw_predict(X)
        if z.ndim == 2:
            return self.classes_[z.argmax(axis=1)]
        return self.classes_[(z > 0).astype(np.intp)]

    def predict_log_proba(self, X):
        """Log of predict_proba, shape (n_samples, n_classes)."""
        z = self._raw_predict(X)
        if z.ndim == 2:
            m = z.max(axis=1, keepdims=True)
            return z - (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))
        return np.column_stack([-np.logaddexp(0.0, z), -np.logaddexp(0.0, -z)])

    def _scorer(self):
        if not self._multiclass:  # binary: knows its labels (predict_file(labels=True))
            return replace(super()._scorer(), classes=self.classes_)
        state = self._current_tables()
        zb = getattr(self, "_input_zero_based", None)

        def encode_y(y):
            return self._encode_eval_y(y, len(y))

        return scoring.Scorer(n_features=int(self.n_features_in_),
                              zero_based=None if zb is None else bool(zb), logistic=False,
                              decision=state.decision, encode_y=encode_y,
                              n_jobs=self.n_jobs, classes=self.classes_,
                              entry_fields=bool(getattr(state, "entry", False)),
                              n_fields=getattr(state, "n_fields", None))

    def to_torch(self, *args, **kwargs):
        """See cfm.torch; binary models only (a softmax model is not converted)."""
        if self._multiclass:
            raise ValueError(f"to_torch() converts binary and regression models; this "
                             f"{len(self.classes_)}-class (softmax) model is not supported")
        return super().to_torch(*args, **kwargs)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = self._multiclass_state is not None
        return tags


__all__ = ["ClassifierMixin", "sigmoid", "softmax"]
