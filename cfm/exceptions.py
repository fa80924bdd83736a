"""Exceptions raised by cfm."""


class NotFittedError(ValueError, AttributeError):
    """The estimator is used before ``fit`` (same bases as scikit-learn's)."""


class DivergenceError(FloatingPointError):
    """Training produced non-finite parameters or predictions."""


class ModelFileError(ValueError):
    """A model file is truncated, corrupted, foreign or of an unsupported version."""


class DataFormatError(ValueError):
    """A data file is malformed (the message names file, line and token)."""
