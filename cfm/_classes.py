"""Class labels of the classifiers: encoding for the kernels, ``class_weight``.

Binary models train on labels encoded as -1 / +1 (classes_[0] / classes_[1]);
multiclass models on class indices 0 .. n_classes-1 (as float64, the
kernels' target array) in the order of the sorted ``classes_``.  Class
weights become per-sample weights of the loss, multiplied into
``sample_weight`` (scikit-learn's convention, e.g. LogisticRegression):
``"balanced"`` weighs class c by n_samples / (n_classes * n_c), counted on
the training labels of the fit (unweighted); a dict maps labels to weights
(classes it does not name weigh 1).
"""
import numbers

import numpy as np


def plain(v):
    """A NumPy scalar as the Python value it holds (for messages)."""
    return v.item() if isinstance(v, np.generic) else v


def class_index(y, classes, name):
    """Index of each label of ``y`` in the sorted ``classes``; a label not in
    it raises ValueError (with ``.row``: its row, so that a caller reading
    a file can name the line)."""
    classes = np.asarray(classes)
    try:
        idx = np.searchsorted(classes, y)
        idx = np.minimum(idx, len(classes) - 1)
        known = classes[idx] == y
    except TypeError:  # labels of a type the classes cannot be compared with
        known = np.zeros(len(y), dtype=bool)
        idx = None
    known = np.asarray(known, dtype=bool)
    if known.shape != (len(y),):  # e.g. an elementwise comparison NumPy refused
        known = np.zeros(len(y), dtype=bool)
    if not known.all():
        row = int(np.flatnonzero(~known)[0])
        exc = ValueError(f"{name} contains label {plain(y[row])!r} not in classes_ "
                         f"{[plain(c) for c in classes]}")
        exc.row = row
        raise exc
    return idx.astype(np.intp)


def check_class_weight(class_weight, estimator=None):
    """Validate the ``class_weight`` parameter's form (its labels are checked
    against the classes at fit time)."""
    if class_weight is None or (isinstance(class_weight, str) and class_weight == "balanced"):
        return
    if not isinstance(class_weight, dict):
        raise ValueError(f"class_weight must be None, 'balanced' or a dict {{label: weight}}, "
                         f"got {class_weight!r}")
    for label, w in class_weight.items():
        if not isinstance(w, numbers.Real) or isinstance(w, bool) or not np.isfinite(w) \
                or w < 0:
            raise ValueError(f"class_weight[{label!r}] must be a finite number >= 0, got "
                             f"{w!r}")


def class_weights(class_weight, classes, idx):
    """Weight of each class (array of len(classes)) for training labels with
    class indices ``idx``; None when ``class_weight`` is None."""
    if class_weight is None:
        return None
    n_classes = len(classes)
    if isinstance(class_weight, str):  # "balanced"
        counts = np.bincount(idx, minlength=n_classes).astype(np.float64)
        out = np.ones(n_classes)
        seen = counts > 0
        out[seen] = len(idx) / (n_classes * counts[seen])
        return out
    out = np.ones(n_classes)
    unknown = []
    lookup = {plain(c): i for i, c in enumerate(classes)}
    for label, w in class_weight.items():
        i = lookup.get(plain(label))
        if i is None:
            unknown.append(label)
        else:
            out[i] = float(w)
    if unknown:
        raise ValueError(f"class_weight has labels {[plain(u) for u in unknown]} that are not "
                         f"classes of y (classes_ = {[plain(c) for c in classes]})")
    return out


def weighted(sample_weight, per_class, idx):
    """``sample_weight`` (None: ones) times the weight of each row's class;
    ``sample_weight`` itself when ``per_class`` is None."""
    if per_class is None:
        return sample_weight
    w = per_class[idx]
    if sample_weight is not None:
        w = w * sample_weight
    if not w.sum() > 0:
        raise ValueError("class_weight and sample_weight give every row weight zero")
    return np.ascontiguousarray(w, dtype=np.float64)
