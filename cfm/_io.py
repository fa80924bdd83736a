"""Estimators <-> model files: ``save_model`` (an estimator's header and
arrays, written by cfm._model_file) and ``load`` (a model file back to an
estimator of the class it names).

The bytes-level format (layout, schema, checks) lives in cfm/_model_file.py
on the container of cfm/_container.py; this module keeps only what knows
estimators, and re-exports the bytes-level names its callers import from
here.  (Issue 12: ``load`` / ``_build`` and the class registry move to
cfm/_loader.py, above the estimators.)
"""
import os

import numpy as np

from ._container import SizeError  # noqa: F401
from ._readahead import FileArray as _FileArray, crc32_combine  # noqa: F401
from ._files import pread_into  # noqa: F401
from ._model_file import (FORMAT_VERSION, MAGIC, RowBlocks, _json_default,  # noqa: F401
                          describe_model_file, open_model_file, peek_header, read_model_file,
                          write_model_file)
from .exceptions import ModelFileError

# the open model file class (a context manager), as cfm._reader named it
_ModelFile = open_model_file

__all__ = ["FORMAT_VERSION", "MAGIC", "load", "save_model", "read_model_file",
           "describe_model_file", "peek_header", "crc32_combine", "write_model_file"]


def _jsonable_params(params):
    out = {}
    for k, v in params.items():
        if v is None or isinstance(v, (bool, int, float, str, np.integer, np.floating, np.bool_)):
            out[k] = v
        else:  # e.g. a RandomState instance: not reproducible from a file
            out[k] = None
    return out


def _encode_labels(classes):
    arr = np.asarray(classes)
    if arr.dtype == object:
        vals = [c.item() if isinstance(c, np.generic) else c for c in arr]
        if not all(isinstance(v, (str, int, float, bool)) for v in vals):
            raise ValueError("classes_ must be strings or numbers to be saved")
        return {"dtype": "object", "values": vals}
    return {"dtype": arr.dtype.str, "values": arr.tolist()}


def _decode_labels(spec):
    """Class labels from a header entry that cfm._model_file.check_header accepted."""
    values = spec["values"]
    if spec["dtype"] == "object":
        return np.array(values, dtype=object)
    dt = np.dtype(spec["dtype"])
    if dt.kind == "U":  # as wide as the labels, whatever width the file declares
        dt = np.dtype(f"<U{max([1] + [len(v) for v in values])}")
    return np.array(values, dtype=dt)


def save_model(model, path):
    """Write a fitted estimator to ``path`` (format: cfm/_model_file.py)."""
    model._check_fitted()
    arrays, header = model._export_state()
    write_model_file(path, header, arrays)


def load(path, scoring_only=False):
    """Load a model saved with ``model.save(path)``.

    Returns a fitted estimator of the class that was saved.  Raises
    :class:`cfm.ModelFileError` (a ValueError) when the file is truncated,
    corrupted, not a cfm model (or not a regular file), invalid, or written
    by a newer major format version; OSError for I/O errors (a missing file,
    a directory, an unreadable disk).  See the module docstring for what is
    checked.

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
    from . import models

    cls_name = header.get("estimator")
    registry = {c.__name__: c for c in (models.FMRegressor, models.FMClassifier)}
    try:
        from . import ffm  # noqa: F401  (registered when available)

        registry.update(getattr(ffm, "MODEL_CLASSES", {}))
    except ImportError:
        pass
    if cls_name not in registry:
        raise ModelFileError(f"{os.fspath(path)!r} holds an unknown model class {cls_name!r}")
    cls = registry[cls_name]
    model = cls.__new__(cls)
    if scoring_only:
        model._scoring_only = True  # read by _import_state; guards training/saving
    try:
        model._import_state(header, arrays)
    except ModelFileError:
        raise
    except (LookupError, TypeError, ValueError, ArithmeticError) as exc:
        raise ModelFileError(f"{os.fspath(path)!r} is inconsistent: {exc}") from exc
    return model
