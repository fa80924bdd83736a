"""``model.to_torch()``: the estimators' bridge to cfm.torch.

A mixin of the estimator classes (cfm/models.py), so that cfm/_estimator.py
needs no line for it.  cfm.torch (and so torch) is imported when
``to_torch`` is called, never by ``import cfm``.
"""


class TorchMixin:
    """``to_torch()`` for an estimator holding a model state ``_state`` and a
    loss ``_loss`` ("logistic" or "squared")."""

    def to_torch(self, **kwargs):
        """This fitted model as a ``torch.nn.Module`` (needs PyTorch).

        The module holds copies of the parameters as ``nn.Parameter`` and its
        forward, on a batch ``(indices, offsets, values)`` (SciPy CSR's
        ``indices``, ``indptr``, ``data``; :func:`cfm.torch.as_batch` builds
        it from X) or a torch sparse CSR tensor, returns what
        ``decision_function`` / ``predict`` returns within 1e-5: raw scores,
        so for a classifier ``torch.sigmoid(module(...))`` is
        ``predict_proba(X)[:, 1]``.  Training the module (any torch
        optimizer) leaves this model unchanged.  See :mod:`cfm.torch`;
        keyword arguments go to :func:`cfm.torch.from_state`.
        """
        from .torch import from_state  # imports torch: only when asked for

        task = "classification" if self._loss == "logistic" else "regression"
        return from_state(self._current_tables(), task=task, **kwargs)
