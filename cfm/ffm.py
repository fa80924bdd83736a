"""Field-aware factorization machines: :class:`FFMClassifier`, :class:`FFMRegressor`.

    y(x) = w0 + sum_i w_i x_i + sum_{i<j} <v_{i,f(j)}, v_{j,f(i)}> x_i x_j

Every stored value belongs to a field f: the field of its column (``fields``,
one id per column: the fast path), or its own (one id per stored entry, as a
libffm line names them: libffm's and xLearn's definition, where hashed data
may put one feature id under several fields; see cfm._fields).  Every
feature keeps one factor vector per field.  Same solvers, options,
validation, reproducibility contract and model files as the FM estimators
(see :mod:`cfm.models`).
"""
import os

import numpy as np

from . import _ffm
from ._fields import (EntryFields, ModelFields, check_entry_fields, entry_model_fields,
                      field_form, infer_fields)
from ._lazy import sparse as sp
from ._state import FFMTable, SoftmaxFFMTable
from ._validation import check_feature_names, check_X
from ._classifier import ClassifierMixin, sigmoid as _sigmoid, softmax as _softmax
from .models import FMClassifier, FMRegressor

_FIELDS_DOC = """
    fields : array-like of int of shape (n_features,), or None, default=None
        Field id of each column, used by every ``fit`` that is given no
        ``fields`` (so that the estimator works in scikit-learn's Pipeline,
        GridSearchCV and cross_val_score).  None: ``fit``'s ``fields``, else
        the fields of a libffm file / cache given as X, else fields inferred
        from X by :func:`cfm.infer_fields`: the columns are cut into the
        longest runs no two columns of which share a row, one field each --
        a one-hot encoded variable (``pandas.get_dummies``, ``OneHotEncoder``)
        is one field, each column of dense numeric data its own field (as
        xLearn reads CSV), at most 64 fields.  That is the structure FFM's
        fields describe, found in one pass over X; with no such structure
        (every column its own field) the table grows with n_features**2, so
        pass fields for wide data with other structure.
"""


# the ``fields`` parameter of the scoring methods, written once
_SCORING_FIELDS_DOC = """fields : array-like of int, default=None
            Per-entry field ids of X (one per stored entry of X as a CSR
            matrix, see :meth:`fit`), or per-column ones to use instead of
            ``fields_``; None: ``fields_`` (a model fitted on per-entry fields
            that put a feature under several fields needs them)."""


def _scoring_doc(method):
    """Put _SCORING_FIELDS_DOC where the docstring says {fields} (none under -OO)."""
    if method.__doc__:
        method.__doc__ = method.__doc__.replace("{fields}", _SCORING_FIELDS_DOC)
    return method


class _FFMMixin:
    """What the FFM estimators add to the FM ones: their state class
    (cfm._state.FFMTable), ``fields`` (per column or per entry, see
    cfm._fields) and the float16 default."""

    _state_class = FFMTable
    _file_state_classes = {}
    _multiclass_state = None  # regressors (FFMClassifier: SoftmaxFFMTable)

    def __init__(self, n_factors=8, *, solver="adagrad", learning_rate=None, n_epochs=None,
                 l2_w0=0.0, l2_w=None, l2_v=None, l1=0.0, ftrl_beta=1.0, init_std=None,
                 normalize=None, fit_intercept=True, shuffle=True, n_iter_no_change=3,
                 tol=1e-4, eval_metric=None, dtype=None, n_jobs=None, random_state=None,
                 warm_start=False, verbose=0, n_burn_in=None, n_kept_samples=None,
                 auto_tune=True, encoder=None, fields=None):
        super().__init__(
            n_factors, solver=solver, learning_rate=learning_rate, n_epochs=n_epochs,
            l2_w0=l2_w0, l2_w=l2_w, l2_v=l2_v, l1=l1, ftrl_beta=ftrl_beta, init_std=init_std,
            normalize=normalize, fit_intercept=fit_intercept, shuffle=shuffle,
            n_iter_no_change=n_iter_no_change, tol=tol, eval_metric=eval_metric, dtype=dtype,
            n_jobs=n_jobs, random_state=random_state, warm_start=warm_start, verbose=verbose,
            n_burn_in=n_burn_in, n_kept_samples=n_kept_samples, auto_tune=auto_tune,
            encoder=encoder)
        self.fields = fields

    def fit(self, X, y=None, fields=None, sample_weight=None, eval_set=None,
            block_rows=100_000, *, callback=None, input_zero_based=None):
        """Fit the model.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        fields : array-like of int, default=None
            Either one field id per column, shape (n_features,) (0 ..
            n_fields-1; -1, as cfm.load_libffm reports for a column that
            never occurs, counts as 0): the fast path; or one field id per
            stored entry of X as a CSR matrix, in its stored order (X's
            entries are then used as they are: a feature may occur twice in
            a row under two fields), as ``cfm.load_libffm(path,
            entry_fields=True)`` returns them -- libffm's and xLearn's
            definition.  The length tells them apart (:class:`cfm.EntryFields`
            marks per-entry fields when X has as many columns as entries).
            None: the estimator's ``fields`` parameter, else the fields of a
            libffm file / cache given as X, else inferred from X (see the
            class's ``fields`` parameter).  A warm start keeps ``fields_``.
            "entry" with X a libffm file (or a cache made with
            ``convert_to_cache(..., entry_fields=True)``): train on the field
            of each entry of the file, out of core.
            A model fitted on per-entry fields that put some feature under
            several fields scores only input with per-entry fields.
        sample_weight, eval_set, block_rows, callback, input_zero_based
            As for :meth:`cfm.FMClassifier.fit`; eval_set items may be
            triples (X_val, y_val, fields_val) with per-entry fields.
        """
        if fields is None:
            fields = self.fields
        if isinstance(fields, str) and (fields != "entry"
                                        or not isinstance(X, (str, os.PathLike))):
            raise ValueError(f"fields={fields!r}: the only string is 'entry', for X a libffm "
                             "file or cache (train on the field of each entry)")
        return self._fit(X, y, sample_weight, eval_set, fields=fields, block_rows=block_rows,
                         callback=callback, input_zero_based=input_zero_based)

    @property
    def fields_(self):
        """Field id of each column (set by fit; after a fit on per-entry
        fields, the first field each column had)."""
        state = self.__dict__.get("_state")
        if state is None:
            raise AttributeError("fields_")
        return state.fields

    @property
    def n_fields_(self):
        """Number of fields (set by fit)."""
        state = self.__dict__.get("_state")
        if state is None:
            raise AttributeError("n_fields_")
        return state.n_fields

    # ------------------------------------------------------------ input checks
    def _check_fields(self, fields, n_features, reset, Xc=None):
        """Per-column fields of a fit (see fit): given, kept (warm start), or
        inferred from the validated data ``Xc``."""
        if fields is None:
            if not reset and hasattr(self, "fields_"):
                return self.fields_
            if Xc is not None:
                return infer_fields(sp.csr_matrix((Xc.data, Xc.indices, Xc.indptr),
                                                  shape=Xc.shape))
            raise ValueError(
                f"{type(self).__name__}.fit needs fields here: one field id per column "
                "(e.g. from cfm.load_libffm)")
        arr = np.asarray(fields)
        if arr.ndim != 1 or arr.shape[0] != n_features:
            raise ValueError(f"fields must have one entry per column: expected shape "
                             f"({n_features},), got {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            if not (np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr))
                    and np.all(arr == np.round(arr))):
                raise ValueError(f"fields must be finite integers, got dtype {arr.dtype}")
            if np.abs(arr).max() >= 2**31 - 1:
                raise ValueError("field ids must be >= 0 and < 2**31 - 1")
        arr = arr.astype(np.int64)
        if arr.size and arr.min() < -1:
            j = int(np.argmin(arr))
            raise ValueError(f"fields[{j}] = {int(arr[j])}: field ids must be >= 0 (or -1 "
                             "for a column that never occurs)")
        # -1 marks a column absent from the data (cfm.load_libffm reports such
        # columns so); it takes field 0, which only matters if it ever occurs.
        arr = np.maximum(arr, 0)
        if arr.size and arr.max() >= 2**31 - 1:
            raise ValueError("field ids must be < 2**31 - 1")
        arr = np.ascontiguousarray(arr, dtype=np.int32)
        if not reset and hasattr(self, "fields_") and not np.array_equal(arr, self.fields_):
            raise ValueError("fields differ from the fields the model was fitted with "
                             "(fields_); refit with warm_start=False")
        return arr

    def _entry_input(self, X, fields, n_features, n_fields, name="X", expand=True):
        """X validated with its entries kept, carrying per-entry field ids
        (``fields``: per entry, or per column -- then expanded to its
        entries), each < n_fields when given; None when ``fields`` is per
        column and not ``expand``."""
        entry = isinstance(fields, EntryFields)
        if not entry:
            shape = getattr(X, "shape", None)
            if shape is None:
                shape = np.shape(X)
            entry = np.ndim(fields) != 1 or len(shape) != 2 or len(fields) != shape[1]
        if not entry and not expand:
            return None
        Xc = check_X(X, name=name, estimator=self, n_features=n_features, keep_entries=entry)
        if field_form(fields, Xc.shape[1], len(Xc.data)) == "column":
            col = np.asarray(fields)  # -1: a column that never occurs (load_libffm), field 0
            col = check_entry_fields(np.where(col == -1, 0, col), Xc.shape[1], n_fields)
            return Xc._replace(fields=np.ascontiguousarray(col[Xc.indices]))
        return Xc._replace(fields=check_entry_fields(fields, len(Xc.data), n_fields))

    def _check_X_fields(self, X, fields, n_features, reset):
        if fields is not None and not isinstance(fields, str):
            fitted = not reset and "_state" in self.__dict__
            Xc = self._entry_input(X, fields, n_features, self.n_fields_ if fitted else None,
                                   expand=False)
            if Xc is not None:
                if fitted:
                    return Xc, self.fields_
                return Xc, entry_model_fields(Xc.indices, Xc.fields, Xc.shape[1])
        Xc = check_X(X, estimator=self, n_features=n_features)
        return Xc, self._check_fields(fields, Xc.shape[1], reset, Xc)

    def _check_block(self, Xb, fb, fields, src, reset):
        """A block of a stream; fields="entry": with the file's per-entry
        fields (the model takes per-entry fields from then on)."""
        if not src.entry_fields:
            return super()._check_block(Xb, fb, fields, src, reset)
        n_fields = max(int(src.info["n_fields"]), 1) if reset else self.n_fields_
        Xc = check_X(Xb, estimator=self, n_features=src.n_features, keep_entries=True)
        Xc = Xc._replace(fields=check_entry_fields(fb, len(Xc.data), n_fields))
        if not reset:
            return Xc, None
        col = src.column_fields
        col = np.zeros(src.n_features, np.int32) if col is None else np.maximum(col, 0)
        return Xc, ModelFields(col, n_fields, entry=True)

    def _check_eval_set(self, eval_set, n_features):
        """Pairs as for the FM estimators; triples (X, y, per-entry fields)."""
        if eval_set is None:
            return []
        items = [eval_set] if isinstance(eval_set, tuple) and len(eval_set) in (2, 3) \
            and not isinstance(eval_set[0], tuple) else list(eval_set)
        pairs, out = [], []
        for i, item in enumerate(items):
            if isinstance(item, (tuple, list)) and len(item) == 3:
                if pairs:
                    out.extend(super()._check_eval_set(pairs, n_features))
                    pairs = []
                # a fresh fit's field count is not known yet: the kernel refuses
                # an eval field beyond the model's
                state = self.__dict__.get("_state")
                Xv = self._entry_input(item[0], item[2], n_features,
                                       None if state is None else state.n_fields,
                                       name=f"eval_set[{i}] X")
                out.append((Xv, self._encode_eval_y(item[1], Xv.n_rows)))
            else:
                pairs.append(item)
        if pairs:
            out.extend(super()._check_eval_set(pairs, n_features))
        return out

    # ------------------------------------------------------------ prediction
    def _raw_predict(self, X, fields=None):
        state = self._current_tables()
        X = self._encode_rows(X)
        check_feature_names(self, X)
        Xc = None
        if fields is not None:
            Xc = self._entry_input(X, fields, state.n_features, state.n_fields)
        if Xc is None:
            Xc = check_X(X, estimator=self, n_features=state.n_features)
        return self._decision(Xc, tables=state)

    def _default_dtype(self):
        state = self.__dict__.get("_state")
        if self.warm_start and state is not None:
            return state.dtype.name  # keep the fitted table's precision
        return "float16" if _ffm.half_simd_available() else "float32"


_DTYPE_DOC = """
    dtype : {"float32", "float64", "float16"} or None, default=None
        None means "float16" on CPUs with AVX2, FMA and F16C (x86-64 since
        about 2013), where the float16 kernels are fast, and "float32"
        elsewhere. "float16": the factor table (by far the
        largest part of an FFM: n_features x n_fields x k) is stored in IEEE
        half precision, with float32 arithmetic, float32 AdaGrad accumulators
        and linear weights. It halves the table's memory and model files;
        on a Criteo-shaped set (benchmarks/RESULTS_ffm.md) scoring is about
        1.7x faster and training a few percent faster (training is bound by
        arithmetic, scoring by memory), at equal accuracy on every data set
        we measured. Updates are stored with stochastic
        rounding, so steps smaller than float16's resolution are kept on
        average instead of being rounded away; with ``n_jobs=1`` and a fixed
        ``random_state`` training is still bit-for-bit reproducible. Values
        beyond float16's range (65504) saturate.
"""


class FFMRegressor(_FFMMixin, FMRegressor):
    __doc__ = ("Field-aware factorization machine for regression (squared loss).\n\n"
               "    fit(X, y, fields=...) with one field id per column or per stored entry; "
               "otherwise\n    the parameters, attributes and contracts of "
               ":class:`cfm.FMRegressor`. ``V_`` has\n    shape (n_features, n_fields, "
               "n_factors); ``fields_`` and ``n_fields_`` are set by fit.\n"
               + _FIELDS_DOC + _DTYPE_DOC)

    def partial_fit(self, X, y, sample_weight=None, fields=None):
        """One epoch over (X, y); per-column ``fields`` are needed on the first
        call only (default: the ``fields`` parameter, else inferred from X),
        per-entry ones on every call."""
        return self._partial_fit(X, y, sample_weight,
                                 fields=self.fields if fields is None else fields)

    @_scoring_doc
    def predict(self, X, fields=None):
        """Predicted values, shape (n_samples,).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        {fields}
        """
        return self._raw_predict(X, fields)


_MULTICLASS_DOC = """
    More than two classes (a softmax FFM): every class c has its own bias,
    linear weights and field-aware factors -- C independent FFMs coupled by
    the softmax loss, as FMClassifier's softmax FM -- and P(y = c | x) =
    softmax_c(score_1(x), ..., score_C(x)).  Solvers "adagrad", "sgd" or
    "ftrl"; ``predict_proba`` has shape (n_samples, n_classes); ``w0_`` has
    shape (n_classes,), ``w_`` (n_features, n_classes) and ``V_``
    (n_features, n_classes, n_fields, n_factors).  The tables are float32
    (or float64): the float16 default of binary FFMs becomes float32, and
    ``dtype="float16"`` is refused.  Memory and time per row are C times
    the binary model's.
"""


class FFMClassifier(_FFMMixin, FMClassifier):
    __doc__ = ("Field-aware factorization machine for classification: binary (logistic "
               "loss) or multiclass (softmax loss).\n\n    fit(X, y, fields=...) with one "
               "field id per column or per stored entry; otherwise\n    the parameters, "
               "attributes and contracts of :class:`cfm.FMClassifier`. ``V_`` has\n    shape "
               "(n_features, n_fields, n_factors); ``fields_`` and ``n_fields_`` are set by "
               "fit.\n" + _MULTICLASS_DOC + _FIELDS_DOC + _DTYPE_DOC)

    # the binary FFM, or the softmax FFM bound to the number of classes
    _state_class = ClassifierMixin._state_class
    _binary_state = FFMTable
    _multiclass_state = SoftmaxFFMTable

    def __init__(self, n_factors=8, *, solver="adagrad", learning_rate=None, n_epochs=None,
                 l2_w0=0.0, l2_w=None, l2_v=None, l1=0.0, ftrl_beta=1.0, init_std=None,
                 normalize=None, fit_intercept=True, shuffle=True, n_iter_no_change=3,
                 tol=1e-4, eval_metric=None, dtype=None, n_jobs=None, random_state=None,
                 warm_start=False, verbose=0, n_burn_in=None, n_kept_samples=None,
                 auto_tune=True, encoder=None, fields=None, class_weight=None):
        _FFMMixin.__init__(
            self, n_factors, solver=solver, learning_rate=learning_rate, n_epochs=n_epochs,
            l2_w0=l2_w0, l2_w=l2_w, l2_v=l2_v, l1=l1, ftrl_beta=ftrl_beta, init_std=init_std,
            normalize=normalize, fit_intercept=fit_intercept, shuffle=shuffle,
            n_iter_no_change=n_iter_no_change, tol=tol, eval_metric=eval_metric, dtype=dtype,
            n_jobs=n_jobs, random_state=random_state, warm_start=warm_start, verbose=verbose,
            n_burn_in=n_burn_in, n_kept_samples=n_kept_samples, auto_tune=auto_tune,
            encoder=encoder, fields=fields)
        self.class_weight = class_weight

    def partial_fit(self, X, y, classes=None, sample_weight=None, fields=None):
        """One epoch over (X, y); per-column ``fields`` are needed on the first
        call only (default: the ``fields`` parameter, else inferred from X),
        per-entry ones on every call."""
        return self._partial_fit(X, y, sample_weight, classes=classes,
                                 fields=self.fields if fields is None else fields)

    def _check_multiclass(self, n_classes):
        super()._check_multiclass(n_classes)
        if self.dtype is not None and np.dtype(self.dtype) == np.float16:
            raise ValueError(f"dtype='float16' is for binary FFMs; a {n_classes}-class "
                             "(softmax) FFM stores float32 or float64 (dtype=None: float32)")

    def _ensure_layout(self, dtype, learning_rate):
        if self._multiclass and self.dtype is not None and np.dtype(self.dtype) == np.float16:
            self._check_multiclass(len(self.classes_))
        return super()._ensure_layout(dtype, learning_rate)

    @_scoring_doc
    def decision_function(self, X, fields=None):
        """Raw scores (log-odds of classes_[1]), shape (n_samples,); for more
        than two classes the per-class scores, shape (n_samples, n_classes).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        {fields}
        """
        return self._raw_predict(X, fields)

    def predict_proba(self, X, fields=None):
        """Class probabilities, shape (n_samples, n_classes), columns in
        classes_ order (``fields``: as for :meth:`decision_function`)."""
        z = self._raw_predict(X, fields)
        if z.ndim == 2:
            return _softmax(z)
        p = _sigmoid(z)
        return np.column_stack([1.0 - p, p])

    def predict(self, X, fields=None):
        """Predicted labels (binary: classes_[1] where the score is > 0; else
        the class of the largest score; ``fields``: as for
        :meth:`decision_function`)."""
        z = self._raw_predict(X, fields)
        if z.ndim == 2:
            return self.classes_[z.argmax(axis=1)]
        return self.classes_[(z > 0).astype(np.intp)]
