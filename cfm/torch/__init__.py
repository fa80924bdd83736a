"""cfm.torch: cfm models in PyTorch and ONNX (the optional ``torch`` extra).

``pip install cfm[torch]`` (``cfm[onnx]`` adds onnx, onnxscript and
onnxruntime).  ``import cfm`` never imports torch; this package does.

* ``model.to_torch()`` on any fitted cfm estimator -- or
  :func:`from_state` on a model state -- returns a plain ``nn.Module``
  holding copies of the parameters as ``nn.Parameter``, whose forward
  reproduces ``decision_function`` (raw scores; for classifiers
  ``torch.sigmoid`` gives ``predict_proba[:, 1]``); it trains with any torch
  optimizer.
* Layers with cfm's formulas for your own networks:
  :class:`FactorizationMachine` (LR with ``n_factors=0``),
  :class:`FieldAwareFactorizationMachine`,
  :class:`FieldWeightedFactorizationMachine`, :class:`DeepFM`, and
  :class:`FMPosterior` (an MCMC fit's posterior mean).
* :func:`export_onnx`: an ONNX file scoring like ``decision_function``.
* :class:`BlockDataset`: mini-batches streamed from data files and
  ``.cfmdata`` caches larger than memory; :func:`as_batch` turns in-memory
  input (SciPy, NumPy, pandas) into a batch.

Batches are ``(indices, offsets, values)`` -- SciPy's CSR ``indices``,
``indptr`` and ``data`` as tensors, ``nn.EmbeddingBag`` with
``include_last_offset=True`` -- or a torch sparse CSR tensor.
"""
try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without torch only
    raise ImportError("cfm.torch needs PyTorch: pip install 'cfm[torch]' (or pip install "
                      "torch)") from exc

from ._batch import as_batch
from ._convert import from_state
from ._onnx import export_onnx
from .data import BlockDataset
from .layers import (DeepFM, FactorizationMachine, FieldAwareFactorizationMachine,
                     FieldWeightedFactorizationMachine, FMPosterior)

__all__ = ["BlockDataset", "DeepFM", "FMPosterior", "FactorizationMachine",
           "FieldAwareFactorizationMachine", "FieldWeightedFactorizationMachine", "as_batch",
           "export_onnx", "from_state"]
