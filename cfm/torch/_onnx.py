"""ONNX export of cfm models through ``torch.onnx.export``.

The exported graph has three inputs -- ``indices`` (nnz,) int64,
``offsets`` (n_rows + 1,) int64 and ``values`` (nnz,) in the model's dtype
(float32, or float64 for float64 models) -- and one output ``score``
(n_rows,): the raw scores cfm's ``decision_function`` gives (classifiers:
log-odds; apply a sigmoid for probabilities).  Both lengths are dynamic.
The segment sums become ScatterElements with reduction "add" (opset 16+;
not ScatterND, whose onnxruntime kernel loses updates to a shared row, see
cfm/torch/_batch.py), which onnxruntime runs.  It needs torch's ONNX exporter (``pip install onnx
onnxscript``, and torch >= 2.5: its exporter built on torch.export;
the older TorchScript exporter, ``dynamo=False``, turns ``index_add``
into a ScatterND without reduction and gives wrong scores for any row
with more than one non-zero).
"""
import warnings

import torch
from torch import nn

__all__ = ["export_onnx", "example_inputs"]

INPUT_NAMES = ("indices", "offsets", "values")


def example_inputs(module, n_rows=2, nnz=5):
    """A small valid batch for ``module`` (n_rows rows, nnz non-zeros): the
    example torch.export traces (sizes other than 0 and 1, and different,
    so that neither is taken for a constant)."""
    n = max(int(getattr(module, "n_features", 1)), 1)
    dtype = next(module.parameters()).dtype
    indices = torch.arange(nnz, dtype=torch.int64) % n
    offsets = torch.linspace(0, nnz, n_rows + 1).round().to(torch.int64)
    values = torch.linspace(0.5, 1.5, nnz, dtype=dtype)
    return indices, offsets, values


def export_onnx(model, path, *, opset_version=18, **kwargs):
    """Write ``model`` as an ONNX file scoring like ``decision_function``.

    Parameters
    ----------
    model : fitted cfm estimator or torch module
        An estimator is converted by its ``to_torch()``; a module (one of
        cfm.torch's layers, or a module of yours with the same inputs) is
        exported as it is, in eval mode (its mode is restored afterwards).
    path : str or path-like
        The ``.onnx`` file to write.
    opset_version : int, default=18
        ONNX opset (16 or later: ScatterElements' "add" reduction).
    **kwargs
        Passed on to :func:`torch.onnx.export` (e.g. ``external_data``;
        ``dynamo=False`` is refused, see the module docstring).

    Returns
    -------
    str
        ``path``.  Score it with onnxruntime::

            sess = onnxruntime.InferenceSession(path)
            indices, offsets, values = cfm.torch.as_batch(X)
            score = sess.run(None, {"indices": indices.numpy(),
                                    "offsets": offsets.numpy(),
                                    "values": values.numpy()})[0]
    """
    if kwargs.get("dynamo", True) is not True:
        raise ValueError("export_onnx needs torch's torch.export-based exporter (dynamo=True): "
                         "the TorchScript exporter turns the layers' segment sums into "
                         "wrong ScatterND nodes")
    module = model if isinstance(model, nn.Module) else model.to_torch()
    was_training = module.training
    module.eval()
    try:
        nnz = torch.export.Dim("nnz")
        rows = torch.export.Dim("n_rows_plus_1")
        kwargs.setdefault("dynamo", True)
        kwargs.setdefault("verbose", False)
        with warnings.catch_warnings():
            # noise of torch's exporter about its own internals, and about the
            # shared "nnz" axis of indices and values (one axis, as intended)
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*axis name.*", category=UserWarning)
            torch.onnx.export(module, example_inputs(module), str(path),
                              input_names=list(INPUT_NAMES), output_names=["score"],
                              dynamic_shapes=({0: nnz}, {0: rows}, {0: nnz}),
                              opset_version=opset_version, **kwargs)
    finally:
        module.train(was_training)
    return str(path)
