"""Field-aware factorization machines: :class:`FFMClassifier`, :class:`FFMRegressor`.

    y(x) = w0 + sum_i w_i x_i + sum_{i<j} <v_{i,f(j)}, v_{j,f(i)}> x_i x_j

Every column j belongs to a field f(j) (``fields``, one id per column, given
to ``fit`` or read from a libffm file), and every feature keeps one factor
vector per field.  Same solvers, options, validation, reproducibility
contract and model files as the FM estimators (see :mod:`cfm.models`).
"""
import numpy as np

from . import _ffm
from ._state import FFMTable
from .models import FMClassifier, FMRegressor


class _FFMMixin:
    """What the FFM estimators add to the FM ones: their state class
    (cfm._state.FFMTable), ``fields`` and the float16 default."""

    _state_class = FFMTable
    _file_state_classes = {}
    _multiclass_state = None  # binary only (a softmax FFM is not implemented)

    def fit(self, X, y=None, fields=None, sample_weight=None, eval_set=None,
            block_rows=100_000, *, callback=None, input_zero_based=None):
        """Fit the model.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        fields : array-like of int, shape (n_features,)
            Field id of each column (0 .. n_fields-1; -1, as cfm.load_libffm
            reports for a column that never occurs, counts as 0). Required unless the
            model is warm-started (then it must equal ``fields_``) or X is a
            libffm file / cache (then they come from the file).
        sample_weight, eval_set, block_rows, callback, input_zero_based
            As for :meth:`cfm.FMClassifier.fit` (eval_set uses ``fields``).
        """
        return self._fit(X, y, sample_weight, eval_set, fields=fields, block_rows=block_rows,
                         callback=callback, input_zero_based=input_zero_based)

    @property
    def fields_(self):
        """Field id of each column (set by fit)."""
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

    def _check_fields(self, fields, n_features, reset):
        if fields is None:
            if not reset and hasattr(self, "fields_"):
                return self.fields_
            raise ValueError(
                f"{type(self).__name__}.fit needs fields: one field id per column "
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
               "    fit(X, y, fields=...) with one field id per column; otherwise the "
               "parameters,\n    attributes and contracts of :class:`cfm.FMRegressor`. "
               "``V_`` has shape\n    (n_features, n_fields, n_factors); ``fields_`` and "
               "``n_fields_`` are set by fit.\n" + _DTYPE_DOC)

    def partial_fit(self, X, y, sample_weight=None, fields=None):
        """One epoch over (X, y); ``fields`` is needed on the first call only."""
        return self._partial_fit(X, y, sample_weight, fields=fields)


class FFMClassifier(_FFMMixin, FMClassifier):
    __doc__ = ("Field-aware factorization machine for binary classification (logistic "
               "loss).\n\n    fit(X, y, fields=...) with one field id per column; otherwise "
               "the parameters,\n    attributes and contracts of :class:`cfm.FMClassifier`. "
               "``V_`` has shape\n    (n_features, n_fields, n_factors); ``fields_`` and "
               "``n_fields_`` are set by fit.\n" + _DTYPE_DOC)

    def partial_fit(self, X, y, classes=None, sample_weight=None, fields=None):
        """One epoch over (X, y); ``fields`` is needed on the first call only."""
        return self._partial_fit(X, y, sample_weight, classes=classes, fields=fields)
