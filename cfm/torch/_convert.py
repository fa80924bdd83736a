"""cfm model states -> torch modules holding the same parameters.

:func:`from_state` is what ``model.to_torch()`` calls on every estimator
(cfm/_to_torch.py), and what an estimator built on another state calls with
its state.  The module gets copies of the parameters (training it never
changes the cfm model) as ``nn.Parameter``; float16 FFM factors become
float32 tensors.  FM, LR, FFM and MCMC modules sum in float64 as cfm's
kernels do (``sum_dtype``, see cfm/torch/layers.py).  A state whose scoring this module does not know (a
subclass that overrides ``decision`` without saying how to reproduce it) is
refused rather than converted into a module that scores differently.
"""
import numpy as np
import torch

from .._state import FFMTable, FMTable, FwFMTable, MCMCSamples
from .._state.deepfm import DeepFMState
from .._state.mcmc import TASK_REGRESSION
from .layers import (DeepFM, FactorizationMachine, FieldAwareFactorizationMachine,
                     FieldWeightedFactorizationMachine, FMPosterior)

__all__ = ["from_state"]

_TASKS = ("classification", "regression", None)


def _tensor(a, dtype=None):
    """A torch copy of a NumPy array (float16 -> float32)."""
    a = np.asarray(a)
    if dtype is None:
        dtype = np.float32 if a.dtype == np.float16 else a.dtype
    return torch.from_numpy(np.array(a, dtype=dtype, order="C", copy=True))


def _set(param, value):
    with torch.no_grad():
        param.copy_(value)


def _normalize(state, known):
    """The layers' ``normalize`` reproducing ``state``'s decision."""
    special = getattr(type(state), "torch_normalize", None)  # e.g. xLearn's FM scaling
    if special is not None:
        return special
    if type(state).decision not in known:
        raise TypeError(f"cannot convert a {type(state).__name__} to torch: its decision "
                        "function is not one cfm.torch reproduces")
    return bool(state.normalize)


def _fm(state):
    normalize = _normalize(state, (FMTable.decision,))
    w = _tensor(state.w)
    m = FactorizationMachine(state.n_features, state.k, normalize=normalize, dtype=w.dtype,
                             sum_dtype=torch.float64)
    _set(m.w0, torch.tensor(state.w0, dtype=w.dtype))
    _set(m.w, w)
    _set(m.V, _tensor(state.V))
    return m


def _ffm(state):
    normalize = _normalize(state, (FFMTable.decision,))
    if getattr(state, "entry", False):
        # the layer's per-column fields buffer does not describe such a model:
        # a forward without fields= would score it wrongly
        raise TypeError("cannot convert an FFM fitted (or imported from xLearn) with "
                        "per-entry fields to torch: its layer keeps one field per column")
    w = _tensor(state.w)
    m = FieldAwareFactorizationMachine(state.n_features, _tensor(state.fields, np.int64),
                                       state.k, n_fields=state.n_fields, normalize=normalize,
                                       dtype=w.dtype, sum_dtype=torch.float64)
    _set(m.w0, torch.tensor(state.w0, dtype=w.dtype))
    _set(m.w, w)
    _set(m.V, _tensor(state.factors()))
    return m


def _fwfm(state):
    normalize = _normalize(state, (FwFMTable.decision,))
    w = _tensor(state.w)
    m = FieldWeightedFactorizationMachine(state.n_features, _tensor(state.fields, np.int64),
                                          state.k, n_fields=state.n_fields,
                                          normalize=normalize, dtype=w.dtype,
                                          sum_dtype=torch.float64)
    _set(m.w0, torch.tensor(state.w0, dtype=w.dtype))
    _set(m.w, w)
    _set(m.V, _tensor(state.V))
    _set(m.R, _tensor(state.R, state.dtype))
    return m


def _mcmc(state):
    _normalize(state, (MCMCSamples.decision,))
    k = state.k
    S = np.asarray(state.samples)  # (n_samples, n_features, >= 1 + k)
    task = "regression" if state.task == TASK_REGRESSION else "classification"
    return FMPosterior(_tensor(state.sample_w0, S.dtype), _tensor(S[:, :, 0].T),
                       _tensor(S[:, :, 1:1 + k].transpose(1, 0, 2)), task=task,
                       clip=state.clip, normalize=bool(state.normalize),
                       sum_dtype=torch.float64)


def _deepfm(state, dropout):
    normalize = _normalize(state, (DeepFMState.decision,))
    dtype = torch.float64 if state.dtype == np.float64 else torch.float32
    m = DeepFM(state.n_features, _tensor(state.fields, np.int64), state.k, state.hidden,
               n_fields=state.n_fields, dropout=dropout, normalize=normalize, dtype=dtype)
    _set(m.w0, torch.tensor(state.w0, dtype=dtype))
    _set(m.w, _tensor(state.w))
    _set(m.V, _tensor(state.V))
    Ws, bs, w_out = state.dense_params()
    for layer, W, b in zip(m.hidden, Ws, bs):
        _set(layer.weight, _tensor(np.asarray(W).T))
        _set(layer.bias, _tensor(b))
    _set(m.w_out, _tensor(w_out))
    return m


def from_state(state, *, task=None, dropout=0.0):
    """A torch module scoring as ``state.decision`` does.

    Parameters
    ----------
    state : cfm model state
        ``est._state`` of a fitted estimator (FMTable: FM and LR, FFMTable,
        FwFMTable, MCMCSamples, DeepFMState, or an xLearn import).
    task : {"classification", "regression"} or None
        Recorded on the module as ``module.task`` (raw scores either way:
        apply ``torch.sigmoid`` for a classifier's probabilities).
        MCMC states know their own task.
    dropout : float
        DeepFM only: the dropout the module applies in training mode (it is a
        training setting, not stored in the state).

    Returns
    -------
    torch.nn.Module
        :class:`~cfm.torch.FactorizationMachine` (FM, LR = 0 factors),
        :class:`~cfm.torch.FieldAwareFactorizationMachine`,
        :class:`~cfm.torch.FieldWeightedFactorizationMachine`,
        :class:`~cfm.torch.FMPosterior` (MCMC) or :class:`~cfm.torch.DeepFM`,
        in eval mode, with copies of the parameters.
    """
    if task not in _TASKS:
        raise ValueError(f"task must be 'classification', 'regression' or None, got {task!r}")
    if isinstance(state, MCMCSamples):
        module = _mcmc(state)
    elif isinstance(state, FFMTable):
        module = _ffm(state)
    elif isinstance(state, FMTable):
        module = _fm(state)
    elif isinstance(state, FwFMTable):
        module = _fwfm(state)
    elif isinstance(state, DeepFMState):
        module = _deepfm(state, dropout)
    else:
        raise TypeError(f"cannot convert {type(state).__name__!r} to torch (expected a cfm "
                        "model state: FMTable, FFMTable, FwFMTable, MCMCSamples or DeepFMState)")
    if module.task is None:
        module.task = task
    return module.eval()
