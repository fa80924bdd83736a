"""cfm: fast factorization machines with Cython/OpenMP kernels.

Estimators follow scikit-learn conventions::

    import cfm
    model = cfm.FMClassifier(n_factors=8).fit(X_train, y_train)
    proba = model.predict_proba(X_test)[:, 1]
    model.save("model.cfm")
    model = cfm.load("model.cfm")
"""
from ._process import configure_cli_process

configure_cli_process()  # before NumPy's import

from . import _utils  # noqa: E402
from ._model_file import FORMAT_VERSION  # noqa: E402
from ._loader import load  # noqa: E402
from .data import (convert_to_cache, dump_libffm, dump_libsvm, iter_blocks,  # noqa: E402
                   load_cache, load_interactions, load_libffm, load_libfm, load_libsvm,
                   scan_file)
from .datasets import make_fm_classification, make_fm_regression  # noqa: E402
from .exceptions import DataFormatError, DivergenceError, ModelFileError, NotFittedError  # noqa: E402
from .models import FMClassifier, FMRegressor  # noqa: E402
from .ffm import FFMClassifier, FFMRegressor  # noqa: E402
from .deepfm import DeepFMClassifier, DeepFMRegressor  # noqa: E402
from .fwfm import FwFMClassifier, FwFMRegressor  # noqa: E402
from .encoder import FieldEncoder  # noqa: E402
from .xlearn import load_xlearn  # noqa: E402
from ._fields import EntryFields, infer_fields  # noqa: E402
from .ranking import FMRanker  # noqa: E402
from ._metrics import ranking_metrics  # noqa: E402

__version__ = "0.1.0"


def openmp_enabled():
    """True when cfm's kernels were built with OpenMP (multi-threaded)."""
    return _utils.openmp_enabled()


__all__ = [
    "DeepFMClassifier",
    "DeepFMRegressor",
    "FFMClassifier",
    "FFMRegressor",
    "FMClassifier",
    "FMRegressor",
    "FwFMClassifier",
    "FwFMRegressor",
    "FieldEncoder",
    "FMRanker",
    "ranking_metrics",
    "load",
    "load_xlearn",
    "EntryFields",
    "infer_fields",
    "make_fm_classification",
    "make_fm_regression",
    "openmp_enabled",
    "load_libsvm",
    "load_libfm",
    "load_libffm",
    "load_interactions",
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
