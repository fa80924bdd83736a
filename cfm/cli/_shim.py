"""TEMPORARY bridge to interfaces added in parallel (issue 12, branch r-front).

THE LEAD DELETES THIS MODULE AT MERGE.  The command modules reach the
estimator interfaces of ROUND12.md ("Training progress", "Scoring") through
here only, so that private estimator members appear in this one place:
``fit`` uses ``fit(..., callback=, input_zero_based=)`` when the estimator
accepts them, else today's ``_print_epoch`` / ``_input_zero_based``;
``predict_model_file`` comes from ``cfm._loader`` once it exists; the two
pre-training checks have no interface yet and call today's private methods.

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
    nothing read); returns the parameter dtype.  No interface for it exists
    yet (see the module docstring for the proposed one): today's private
    method."""
    return model._validate_params()


def check_model_size(model, n_features, n_fields=None, *, source=None, info=None):
    """Refuse, before anything is allocated or read, a model larger than the
    memory available: DataFormatError naming ``source``'s lines with the
    largest ids (``info``: its scan_file result), else MemoryError.  No
    interface for it exists yet: today's private methods."""
    return model._check_model_size(n_features, n_fields, model._validate_params(),
                                   source=source, info=info)


def predict_model_file(model_path, path, out_path, **kwargs):
    """Load a cfm model file and score a data file with it (see
    cfm.scoring.predict_model_file); returns ``(model, stats)``."""
    try:
        from .._loader import predict_model_file as run
    except ImportError:
        from ..scoring import predict_model_file as run
    return run(model_path, path, out_path, **kwargs)
