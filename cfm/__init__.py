"""cfm: fast factorization machines with Cython/OpenMP kernels.

Estimators follow scikit-learn conventions::

    import cfm
    model = cfm.FMClassifier(n_factors=8).fit(X_train, y_train)
    proba = model.predict_proba(X_test)[:, 1]
    model.save("model.cfm")
    model = cfm.load("model.cfm")
"""
from . import _utils
from ._io import FORMAT_VERSION, load
from .data import (convert_to_cache, dump_libffm, dump_libsvm, iter_blocks, load_cache, load_libffm,
                   load_libfm, load_libsvm, scan_file)
from .datasets import make_fm_classification, make_fm_regression
from .exceptions import DataFormatError, DivergenceError, ModelFileError, NotFittedError
from .models import FMClassifier, FMRegressor
from .ffm import FFMClassifier, FFMRegressor
from .xlearn import load_xlearn

__version__ = "0.1.0"


def openmp_enabled():
    """True when cfm's kernels were built with OpenMP (multi-threaded)."""
    return _utils.openmp_enabled()


__all__ = [
    "FFMClassifier",
    "FFMRegressor",
    "FMClassifier",
    "FMRegressor",
    "load",
    "load_xlearn",
    "make_fm_classification",
    "make_fm_regression",
    "openmp_enabled",
    "load_libsvm",
    "load_libfm",
    "load_libffm",
    "dump_libsvm",
    "dump_libffm",
    "convert_to_cache",
    "load_cache",
    "iter_blocks",
    "scan_file",
    "DataFormatError",
    "DivergenceError",
    "ModelFileError",
    "NotFittedError",
    "FORMAT_VERSION",
    "__version__",
]
