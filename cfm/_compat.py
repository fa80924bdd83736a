"""Optional scikit-learn integration.

cfm depends only on NumPy and SciPy.  When scikit-learn is installed the
estimators derive from its ``BaseEstimator`` and mixins, so that they take part
in ``Pipeline``, ``GridSearchCV``, ``clone`` and ``check_estimator`` exactly as
native estimators do.  Without it, a small stand-in provides ``get_params``,
``set_params``, ``__repr__`` and ``score``.
"""
import inspect
import os

import numpy as np


def _want_sklearn():
    """False in a ``cfm`` command-line process (console script or ``python -m
    cfm``): the CLI uses no scikit-learn integration, and importing
    scikit-learn would be ~0.7 s of its ~1 s start-up.  ``CFM_SKLEARN=1`` /
    ``CFM_SKLEARN=0`` forces either way."""
    from ._process import is_cli_process

    env = os.environ.get("CFM_SKLEARN", "").strip()
    if env in ("0", "1"):
        return env == "1"
    return not is_cli_process()


try:  # pragma: no cover - exercised in both configurations by CI/users
    if not _want_sklearn():
        raise ImportError("scikit-learn integration not needed by the cfm command line")
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin
    from sklearn.exceptions import DataConversionWarning

    HAVE_SKLEARN = True
except ImportError:  # pragma: no cover
    HAVE_SKLEARN = False

    class DataConversionWarning(UserWarning):
        """A column vector y was passed when a 1d array was expected."""

    class BaseEstimator:
        """Minimal stand-in for ``sklearn.base.BaseEstimator``."""

        @classmethod
        def _get_param_names(cls):
            init = cls.__init__
            if init is object.__init__:
                return []
            sig = inspect.signature(init)
            return sorted(p.name for p in sig.parameters.values()
                          if p.name != "self" and p.kind != p.VAR_KEYWORD)

        def get_params(self, deep=True):
            return {name: getattr(self, name) for name in self._get_param_names()}

        def set_params(self, **params):
            valid = self._get_param_names()
            for key, value in params.items():
                if key not in valid:
                    raise ValueError(
                        f"Invalid parameter {key!r} for estimator {type(self).__name__}. "
                        f"Valid parameters are: {valid!r}."
                    )
                setattr(self, key, value)
            return self

        def __repr__(self):
            defaults = {
                name: p.default
                for name, p in inspect.signature(type(self).__init__).parameters.items()
            }
            changed = []
            for name, value in self.get_params().items():
                default = defaults.get(name, inspect.Parameter.empty)
                if value is default or (isinstance(value, (int, float, str)) and value == default):
                    continue
                changed.append(f"{name}={value!r}")
            return f"{type(self).__name__}({', '.join(changed)})"

    class ClassifierMixin:
        _estimator_type = "classifier"

        def score(self, X, y, sample_weight=None):
            """Mean accuracy of ``predict(X)`` against ``y``."""
            y = np.asarray(y)
            correct = (self.predict(X) == y).astype(float)
            return float(np.average(correct, weights=sample_weight))

    class TransformerMixin:
        """Stand-in for ``sklearn.base.TransformerMixin`` (fit_transform is the class's own)."""

    class RegressorMixin:
        _estimator_type = "regressor"

        def score(self, X, y, sample_weight=None):
            """Coefficient of determination R^2 of ``predict(X)``."""
            y = np.asarray(y, dtype=np.float64)
            pred = self.predict(X)
            w = np.ones_like(y) if sample_weight is None else np.asarray(sample_weight, float)
            ss_res = np.sum(w * (y - pred) ** 2)
            ss_tot = np.sum(w * (y - np.average(y, weights=w)) ** 2)
            return float(1.0 - ss_res / ss_tot) if ss_tot > 0 else 0.0
