"""``cfm.load``: model files back to estimators, through an explicit registry.

Above the estimators (it names their classes); below the front ends.  The
model-file layer (cfm._model_file) parses and verifies the bytes; the
estimator class named in the header rebuilds itself with
``cls._from_file(header, arrays, scoring_only)``.
"""
import os

from ._model_file import open_model_file, peek_header
from ._validation import effective_n_threads
from .exceptions import ModelFileError
from .deepfm import DeepFMClassifier, DeepFMRegressor
from .ffm import FFMClassifier, FFMRegressor
from .fwfm import FwFMClassifier, FwFMRegressor
from .models import FMClassifier, FMRegressor
from .ranking import FMRanker
from . import scoring
from .xlearn import XLearnFMClassifier, XLearnFMRegressor

# Every estimator class a model file may name (header "estimator").  A new
# model adds its line here.
REGISTRY = {cls.__name__: cls for cls in (
    FMRegressor, FMClassifier, FFMRegressor, FFMClassifier,
    XLearnFMRegressor, XLearnFMClassifier,
    DeepFMRegressor, DeepFMClassifier,
    FwFMRegressor, FwFMClassifier,
    FMRanker,
)}


def load(path, scoring_only=False):
    """Load a model saved with ``model.save(path)``.

    Returns a fitted estimator of the class that was saved.  Raises
    :class:`cfm.ModelFileError` (a ValueError) when the file is truncated,
    corrupted, not a cfm model (or not a regular file), invalid, or written
    by a newer major format version; OSError for I/O errors (a missing file,
    a directory, an unreadable disk).  See cfm/_model_file.py for what is checked.

    ``scoring_only=True`` (what ``cfm predict`` uses) leaves out what only
    training needs: an FFM's factor table is then kept without its AdaGrad
    accumulators, about 20% smaller, and scoring reads correspondingly less
    memory (same predictions).  Such a model predicts but cannot be trained
    further or saved; load it again without the option for that.
    """
    with open_model_file(path) as mf:
        try:
            model = _build(path, mf.header, mf.arrays, scoring_only)
            mf.verify()
        except ModelFileError as exc:
            err = mf.corruption(exc)  # a corrupted file is reported as such
            if err is not None:
                raise err from exc
            raise
        finally:
            mf.arrays.clear()
        return model


def _build(path, header, arrays, scoring_only):
    cls_name = header.get("estimator")
    if cls_name not in REGISTRY:
        raise ModelFileError(f"{os.fspath(path)!r} holds an unknown model class {cls_name!r}")
    try:
        return REGISTRY[cls_name]._from_file(header, arrays, scoring_only)
    except ModelFileError:
        raise
    except (LookupError, TypeError, ValueError, ArithmeticError) as exc:
        raise ModelFileError(f"{os.fspath(path)!r} is inconsistent: {exc}") from exc


def predict_model_file(model_path, path, out_path, *, scoring_only=True, **kwargs):
    """Load a cfm model file and score a data file with it (``cfm predict``).

    Same as ``cfm.load(model_path, scoring_only=scoring_only).predict_file(
    path, out_path, **kwargs)``, except that the data is read and parsed
    while the model loads (what the model's header says -- its number of
    features, how it read libsvm ids -- is all the parser needs), and that
    ``n_jobs=None`` means the default threads, not the ``n_jobs`` saved in
    the file.

    Returns ``(model, stats)``.
    """
    header = peek_header(model_path)
    info = scoring.Scorer.from_header(header) if header is not None else None
    if info is None:  # not a readable model file: load() raises the precise error
        model = load(model_path, scoring_only=scoring_only)
        kwargs["n_jobs"] = effective_n_threads(kwargs.get("n_jobs"))  # not the file's
        return model, model.predict_file(path, out_path, **kwargs)
    loaded = []

    def get_scorer():
        model = load(model_path, scoring_only=scoring_only)
        scorer = scoring._scorer_from_model(model)
        if not scorer.describes_same_model(info):  # the file changed between the two reads
            raise ValueError(f"{os.fspath(model_path)}: the model file changed while loading")
        loaded.append(model)
        return scorer

    stats = scoring._predict_file(get_scorer, info, path, out_path, **kwargs)
    return loaded[0], stats
