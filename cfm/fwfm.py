"""Field-weighted factorization machines: :class:`FwFMClassifier`, :class:`FwFMRegressor`.

    y(x) = w0 + sum_i w_i x_i + sum_{i<j} r_{F(i)F(j)} <v_i, v_j> x_i x_j

(Pan et al., "Field-weighted Factorization Machines for Click-Through Rate
Prediction in Display Advertising", WWW 2018.)  Every column j belongs to a
field F(j) (``fields``, one id per column, as for the FFM estimators); every
feature keeps ONE factor vector, as in an FM, and every pair of fields one
learned weight r (``R_``, symmetric; the diagonal weighs pairs of features of
the same field).  Memory is an FM's plus n_fields^2 weights; scoring costs
O(nnz * k + P^2 * k) per row for P fields present in the row.

Without ``fields`` (documented default, also what scikit-learn's tools use):
the fields the FFM and DeepFM estimators infer, :func:`cfm.infer_fields` --
one field per run of columns no two of which share a row (a one-hot encoded
variable is one field, each dense column its own), at most 64 fields (at most
64 * 65 / 2 pair weights).  Same solvers (sgd, adagrad, ftrl), options, validation,
reproducibility contract and model files as the FM estimators.
"""
import numpy as np

from ._state.fwfm import MAX_FIELDS, FwFMTable
from .ffm import _FFMMixin
from .models import FMClassifier, FMRegressor



class _FwFMMixin:
    """What the FwFM estimators add to the FM ones: their state class,
    ``fields`` (optional) and ``R_``."""

    _state_class = FwFMTable
    _file_state_classes = {}
    _multiclass_state = None  # binary only (a softmax FwFM is not implemented)

    def fit(self, X, y=None, fields=None, sample_weight=None, eval_set=None,
            block_rows=100_000, *, callback=None, input_zero_based=None):
        """Fit the model.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features), path, or chunks
        y : array-like of shape (n_samples,)
        fields : array-like of int, shape (n_features,), default=None
            Field id of each column (0 .. n_fields-1, at most 1024 fields;
            -1, as cfm.load_libffm reports for a column that never occurs,
            counts as 0).  None: the fields of a libffm file / cache given as
            X, those of the fitted model on a warm start, else
            inferred from X by :func:`cfm.infer_fields` (as the FFM
            estimators do; streams: from the first block).
        sample_weight, eval_set, block_rows, callback, input_zero_based
            As for :meth:`cfm.FMClassifier.fit`.
        """
        return self._fit(X, y, sample_weight, eval_set, fields=fields, block_rows=block_rows,
                         callback=callback, input_zero_based=input_zero_based)

    fields_ = _FFMMixin.fields_
    n_fields_ = _FFMMixin.n_fields_

    @property
    def R_(self):
        """Field-pair weights, shape (n_fields_, n_fields_), symmetric (a copy)."""
        return self._current_tables().R.copy()

    def _check_fields(self, fields, n_features, reset, Xc=None):
        if fields is None:
            return _FFMMixin._check_fields(self, fields, n_features, reset, Xc)
        shape = np.shape(fields)
        if shape != (n_features,):
            raise ValueError(f"fields must have one entry per column: expected shape "
                             f"({n_features},), got {shape}")
        arr = _FFMMixin._check_fields(self, fields, n_features, reset)
        if arr.size and int(arr.max()) >= MAX_FIELDS:
            raise ValueError(f"{type(self).__name__} supports at most {MAX_FIELDS} fields "
                             f"(field ids 0 .. {MAX_FIELDS - 1}), got field id "
                             f"{int(arr.max())}: its n_fields^2 pair weights would not be "
                             "small; use FMClassifier/FMRegressor or fewer fields")
        return arr


_DOC = """
    fit(X, y, fields=...) with one field id per column (optional: see
    :mod:`cfm.fwfm` for the default); otherwise the parameters, attributes
    and contracts of :class:`cfm.{base}` with solver "adagrad", "sgd" or
    "ftrl" (not "als" / "mcmc").  ``V_`` has shape (n_features, n_factors)
    as an FM's; ``R_`` (n_fields_, n_fields_) holds the field-pair weights
    (they start at 1, an FM, and are trained by the solver: AdaGrad per
    entry for "adagrad" and "ftrl", with L2 ``l2_v``); ``fields_`` and
    ``n_fields_`` are set by fit.  ``dtype``: "float32" (default) or
    "float64" for the factor table; R is float64.  With several threads each
    thread trains its own copy of R during an epoch and the copies are
    averaged after it (w and V are updated Hogwild, as FM's).
"""


class FwFMRegressor(_FwFMMixin, FMRegressor):
    __doc__ = ("Field-weighted factorization machine for regression (squared loss).\n"
               + _DOC.format(base="FMRegressor"))

    def partial_fit(self, X, y, sample_weight=None, fields=None):
        """One epoch over (X, y); ``fields`` is used on the first call only
        (None: the default of ``fit``)."""
        return self._partial_fit(X, y, sample_weight, fields=fields)


class FwFMClassifier(_FwFMMixin, FMClassifier):
    __doc__ = ("Field-weighted factorization machine for binary classification "
               "(logistic loss).\n" + _DOC.format(base="FMClassifier"))

    def partial_fit(self, X, y, classes=None, sample_weight=None, fields=None):
        """One epoch over (X, y); ``fields`` is used on the first call only
        (None: the default of ``fit``)."""
        return self._partial_fit(X, y, sample_weight, classes=classes, fields=fields)
