"""Exceptions raised by cfm."""


from ._compat import HAVE_SKLEARN

if HAVE_SKLEARN:  # the same class as scikit-learn's when it is installed
    from sklearn.exceptions import NotFittedError as _SkNotFittedError
else:  # pragma: no cover
    _SkNotFittedError = None

if _SkNotFittedError is not None:

    class NotFittedError(_SkNotFittedError):
        """The estimator is used before ``fit`` (subclass of scikit-learn's)."""

else:  # pragma: no cover

    class NotFittedError(ValueError, AttributeError):
        """The estimator is used before ``fit`` (same bases as scikit-learn's)."""


class DivergenceError(FloatingPointError):
    """Training produced non-finite parameters or predictions."""


class ModelFileError(ValueError):
    """A model file is truncated, corrupted, foreign or of an unsupported version."""


class DataFormatError(ValueError):
    """A data file is malformed (the message names file, line and token)."""
