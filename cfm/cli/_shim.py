"""TEMPORARY bridge to interfaces added in parallel (issue 12, branch r-front).

THE LEAD DELETES THIS MODULE AT MERGE: every name below is one line of the
new interfaces (ROUND12.md, "Training progress" and "Scoring"), and the
command modules call them through here only.  Until r-core's estimators
accept ``fit(..., callback=, input_zero_based=)`` and expose the pre-training
checks, each function falls back to what the command line did before
(private estimator members), in this one place and nowhere else.

At merge, in cfm/cli/train.py and cfm/cli/predict.py drop the
"from ._shim import ..." lines and replace the calls:
  fit(model, X, callback=cb, input_zero_based=zb, **kw)   (train._fit, 3 calls)
      -> model.fit(X, callback=cb, input_zero_based=zb, **kw)
         (the fit(path) call passes no input_zero_based: the estimator records it)
  check_params(model)                                     (train.run)
      -> r-core's parameter check; proposed cfm._validation.check_params(estimator)
         -> np.dtype (ValueError naming the parameter)
  check_model_size(model, n_features, n_fields, source=, info=)   (train.run)
      -> r-core's size check; proposed check_model_size(estimator, n_features,
         n_fields=None, *, source=None, info=None) in the estimator layer
         (it needs the state's bytes per row and data's largest-id locator)
  predict_model_file(...)                                 (predict.run)
      -> cfm._loader.predict_model_file(...)
then delete this file.
"""
import inspect


def fit(model, X, *, callback, input_zero_based=None, **kwargs):
    """``model.fit(X, **kwargs)`` reporting each epoch to ``callback(record,
    n_epochs)``; ``input_zero_based``: the id base of a file the caller read
    itself (recorded in the model for ``cfm predict``), None to leave it to
    the estimator."""
    accepts = inspect.signature(model.fit).parameters
    if "callback" in accepts and "input_zero_based" in accepts:  # r-core's interface
        return model.fit(X, callback=callback, input_zero_based=input_zero_based, **kwargs)
    # before the merge: the estimator's private printer and id base
    model._print_epoch = callback
    try:
        model.fit(X, **kwargs)
    finally:
        model.__dict__.pop("_print_epoch", None)
    if input_zero_based is not None:
        model._input_zero_based = bool(input_zero_based)
    return model


def check_params(model):
    """Raise ValueError naming a bad parameter of ``model`` (nothing trained,
    nothing read); returns the parameter dtype."""
    try:
        from .._validation import check_params as check
    except ImportError:
        return model._validate_params()
    return check(model)


def check_model_size(model, n_features, n_fields=None, *, source=None, info=None):
    """Refuse, before anything is allocated or read, a model larger than the
    memory available: DataFormatError naming ``source``'s lines with the
    largest ids (``info``: its scan_file result), else MemoryError."""
    try:
        from .._validation import check_model_size as check
    except ImportError:
        return model._check_model_size(n_features, n_fields, model._validate_params(),
                                       source=source, info=info)
    return check(model, n_features, n_fields, source=source, info=info)


def predict_model_file(model_path, path, out_path, **kwargs):
    """Load a cfm model file and score a data file with it (see
    cfm.scoring.predict_model_file); returns ``(model, stats)``."""
    try:
        from .._loader import predict_model_file as run
    except ImportError:
        from ..scoring import predict_model_file as run
    return run(model_path, path, out_path, **kwargs)
