"""Import of xLearn models saved as text (``setTXTModel`` in Python, ``-t`` on xlearn_train).

xLearn (https://github.com/aksnzhy/xlearn) writes, besides its binary model,
an optional text model::

    bias: 0.0757382              every kind
    i_0: 0.25995                 linear weight of feature 0, for all features
    ...
    v_0: 0.0164 0.0793 0.3191    FM: factor vector of feature 0 (k values)
    v_0_0: 0.0324 0.0770 0.2675  FFM: vector of feature 0 for field 0 (k values)
    v_0_1: ...                   ... for every (feature, field) pair

:func:`load_xlearn` turns such a file into a fitted cfm estimator whose
predictions equal xLearn's own ``predict`` on the same data (measured within
1e-5, see tests/test_xlearn_import.py).  How xLearn scores a row ``x``
(src/score/*_score.cc, checked against xLearn 0.40 output), with
``n2 = sum_i x_i^2`` over *all* entries of the row and ``norm`` xLearn's
instance-wise normalisation (on by default, off with ``disableNorm()`` /
``--no-norm``):

=====  ==========================  ==============================================
kind   norm on                     cfm estimator
=====  ==========================  ==============================================
LR     b + sum w_i x_i             FM*(n_factors=0, normalize=False) -- xLearn's
       (norm is *not* applied)     LR ignores ``norm`` when scoring
FM     b + sum w_i x_i / sqrt(n2)  XLearnFM* (FM* subclass): the pairwise term is
       + pair(x) / n2**2           divided by ``n2**2``, cfm's ``normalize`` divides
                                   it by ``n2`` (see below)
FFM    b + sum w_i x_i / sqrt(n2)  FFM*(normalize=True): exactly cfm's
       + pair(x) / n2              normalisation
=====  ==========================  ==============================================

With norm off every kind is ``b + sum w_i x_i + pair(x)``, i.e. cfm with
``normalize=False`` (FM: FM*, FFM: FFM*).

xLearn's FM normalisation cannot be expressed by cfm's kernels: xLearn
multiplies each value by ``1/sqrt(n2)`` in the linear term but by ``1/n2`` in
the factor sums, so the pairwise term is scaled by ``1/n2**2`` where cfm's
``normalize=True`` gives ``1/n2``.  :class:`XLearnFMClassifier` /
:class:`XLearnFMRegressor` compute it exactly from two calls of cfm's FM
kernel (``lin + (full - lin) / n2`` where ``full`` is cfm's normalised score
and ``lin`` the same with the factors left out).  They predict, save and
load like any cfm model, but cannot be trained further (xLearn's FM training
uses the same scaling).
"""
import os

import numpy as np

from . import _fm
from ._files import open_regular
from ._model_file import _decode_labels, _encode_labels
from ._state import FMTable
from ._state.base import ADAGRAD_INIT
from ._state.ffm import lin_width, padded_k
from .exceptions import ModelFileError
from ._xlearn_txt import _parse_txt
from .ffm import FFMClassifier, FFMRegressor
from .models import FMClassifier, FMRegressor

__all__ = ["load_xlearn", "is_xlearn_txt", "XLearnFMClassifier", "XLearnFMRegressor"]

_TASKS = {"binary": "binary", "reg": "reg", "regression": "reg", "classification": "binary"}
_KINDS = ("auto", "lr", "fm", "ffm")


# --------------------------------------------------------------------------
# FM with xLearn's normalisation
# --------------------------------------------------------------------------

class XLearnFMTable(FMTable):
    """An FM table scored with xLearn's instance-wise normalisation.

    xLearn's FM score is ``w0 + sum w_i x_i / sqrt(n2) + pair(x) / n2**2``
    with ``n2 = sum x_i^2``; cfm's kernel with ``normalize=True`` gives
    ``full = w0 + lin / sqrt(n2) + pair(x) / n2``.  Two kernel calls (with and
    without the factors) recover xLearn's score as
    ``lin_part + (full - lin_part) / n2``.
    """

    torch_normalize = "xlearn"  # how cfm.torch reproduces this decision (FM layer option)

    def decision(self, Xc, n_threads, shared=False):
        full = super().decision(Xc, n_threads)  # normalize=True (checked at import)
        if self.k == 0 or Xc.n_rows == 0:
            return full
        lin = np.empty(Xc.n_rows, dtype=np.float64)
        _fm.fm_predict(Xc.data, Xc.indices, Xc.indptr, self.table, float(self.w0_state[0]),
                       0, True, lin, n_threads)
        sq = np.square(Xc.data, dtype=np.float64)
        starts = Xc.indptr[:-1]
        nonempty = Xc.indptr[1:] > starts
        n2 = np.ones(Xc.n_rows)  # a row of norm 0 is not scaled (as cfm's row_scale)
        if sq.size:
            # segments between consecutive non-empty row starts are exactly those rows
            n2[nonempty] = np.add.reduceat(sq, starts[nonempty])
        n2[n2 <= 0.0] = 1.0
        return lin + (full - lin) / n2

    def export(self):
        arrays, header = super().export()
        header["xlearn_fm_norm"] = True
        return arrays, header

    @classmethod
    def from_file(cls, header, arrays, scoring_only=False):
        state = super().from_file(header, arrays, scoring_only)
        if not header.get("xlearn_fm_norm") or not state.normalize:
            raise ValueError(f"{header.get('estimator')} model file lacks xLearn's FM "
                             "normalisation flag")
        return state


class _XLearnFMNorm:
    """Estimators of xLearn FM models scored with xLearn's normalisation."""

    _state_class = XLearnFMTable
    _multiclass_state = None  # xLearn's models are binary or regression
    _file_state_classes = {}

    def _refuse_training(self, *args, **kwargs):
        raise ValueError(
            f"{type(self).__name__} scores an xLearn FM model with xLearn's instance-wise "
            "normalisation, which cfm's FM training does not use; it cannot be trained "
            "further. Import with norm=False, or train a cfm FMClassifier/FMRegressor.")

    fit = _refuse_training
    partial_fit = _refuse_training


class XLearnFMClassifier(_XLearnFMNorm, FMClassifier):
    __doc__ = ("xLearn FM binary model scored with xLearn's instance-wise normalisation.\n\n"
               "    Made by :func:`cfm.load_xlearn` (FM, task='binary', norm=True); predicts, "
               "saves and\n    loads as :class:`cfm.FMClassifier`, but cannot be trained "
               "(see :mod:`cfm.xlearn`).\n")


class XLearnFMRegressor(_XLearnFMNorm, FMRegressor):
    __doc__ = ("xLearn FM regression model scored with xLearn's instance-wise normalisation."
               "\n\n    Made by :func:`cfm.load_xlearn` (FM, task='reg', norm=True); predicts, "
               "saves and\n    loads as :class:`cfm.FMRegressor`, but cannot be trained "
               "(see :mod:`cfm.xlearn`).\n")


def _fields_from_files(paths, n_features):
    """First field of each feature over libffm files (in order); -1 if absent."""
    from .data import _scan

    out = np.full(n_features, -1, dtype=np.int64)
    for p in paths:
        info, arr = _scan(p, "libffm", want_fields=True)
        if info["format"] != "libffm":
            raise ValueError(f"fields file {os.fspath(p)!r} is not a libffm file")
        if len(arr) > n_features:
            used = np.flatnonzero(arr[n_features:] >= 0)
            if used.size:
                raise ValueError(
                    f"fields file {os.fspath(p)!r} has feature {n_features + int(used[0])} "
                    f"but the model has {n_features} features (pass n_features= to pad)")
            arr = arr[:n_features]
        todo = out[:len(arr)] < 0
        out[:len(arr)][todo] = arr[todo]
    return out


def _infer_fields(fields, n_features, n_fields):
    """Field id of each column: an array-like, or the first field each
    feature has in one or more libffm data files."""
    if isinstance(fields, (str, os.PathLike)):
        arr = _fields_from_files([fields], n_features)
    elif isinstance(fields, (list, tuple)) and fields and all(
            isinstance(p, (str, os.PathLike)) for p in fields):
        arr = _fields_from_files(fields, n_features)
    else:
        arr = np.asarray(fields)
        if arr.ndim != 1 or arr.shape[0] != n_features:
            raise ValueError(f"fields must have one entry per feature: expected shape "
                             f"({n_features},), got {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"fields must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
    if arr.size and arr.min() < -1:
        j = int(np.argmin(arr))
        raise ValueError(f"fields[{j}] = {int(arr[j])}: field ids must be >= 0")
    if arr.size and arr.max() >= n_fields:
        j = int(np.argmax(arr))
        raise ValueError(f"feature {j} has field {int(arr[j])} but the xLearn model has "
                         f"{n_fields} fields (0..{n_fields - 1})")
    return np.ascontiguousarray(np.maximum(arr, 0), dtype=np.int32)


# --------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------

def is_xlearn_txt(path):
    """True if ``path`` looks like an xLearn TXT model (its first line is
    ``bias: <number>``); reads only the start of the file.  For callers that
    accept several model formats (e.g. a command line), before
    :func:`load_xlearn`."""
    try:
        fd, _ = open_regular(os.fspath(path), "an xLearn TXT model")  # a FIFO: not read
    except (OSError, ModelFileError):
        return False
    with os.fdopen(fd, "rb") as f:
        head = f.read(256)
    first = head.split(b"\n", 1)[0].strip()
    if not first.startswith(b"bias:"):
        return False
    try:
        float(first[5:])
    except ValueError:
        return False
    return True


def load_xlearn(path, task="binary", *, norm=True, fields=None, n_features=None,
                kind="auto", dtype="float32", classes=(0, 1)):
    """Load a model that xLearn saved as text into a fitted cfm estimator.

    In xLearn, save the text model with ``model.setTXTModel("model.txt")``
    before ``fit`` (Python) or ``xlearn_train ... -t model.txt`` (command
    line).  The returned estimator's ``predict`` / ``predict_proba`` /
    ``decision_function`` equal xLearn's ``predict`` output on the same data
    (``setSigmoid()`` for probabilities), and it saves with ``save`` and
    loads back with :func:`cfm.load`.

    Parameters
    ----------
    path : str or path-like
        xLearn TXT model (LR, FM or FFM).
    task : {"binary", "reg"}, default="binary"
        xLearn's task; the TXT file does not record it.  "binary" gives a
        classifier (``predict_proba`` = xLearn's ``setSigmoid()`` output,
        ``decision_function`` = xLearn's raw output), "reg" a regressor.
    norm : bool, default=True
        Whether xLearn scored with instance-wise normalisation (xLearn's
        default; False if you called ``disableNorm()`` / passed ``--no-norm``
        to xLearn's predict).  The file does not record it.  xLearn's LR never
        normalises its scores, so it does not matter for LR.
    fields : array-like of int, path, list of paths, or None
        FFM only.  None (default): xLearn's own rule -- every entry of the
        data scored has its own field (a libffm line names it), so that a
        feature seen under several fields (hashed data) scores as in xLearn.
        The model then scores libffm files (``predict_file``, ``cfm
        predict``) and arrays given with per-entry fields
        (``predict(X, fields=F)``, ``X, y, F = cfm.load_libffm(path,
        entry_fields=True)``).  Else one field per column, cfm's fast path:
        an array of ``n_features`` field ids, or the path(s) of libffm data
        file(s) (e.g. the training file), whose first field for each feature
        is taken (earlier files first; features in none of them get field
        0); that equals xLearn only where every feature keeps one field.
    n_features : int, optional
        Number of columns of the model, at least the number of features in
        the file (largest ``i_<j>`` + 1).  Extra columns get zero parameters:
        like xLearn, which skips feature ids beyond its model when scoring,
        they add nothing to the score but still count in the row norm.  Use it
        when the data to score has larger feature ids than the training data.
    kind : {"auto", "lr", "fm", "ffm"}, default="auto"
        The kind of model expected; "auto" detects it from the file
        (``v_<j>`` lines: FM, ``v_<j>_<f>``: FFM, neither: LR).  A file of
        another kind raises :class:`cfm.ModelFileError`.
    dtype : {"float32", "float64"}, default="float32"
        Parameter precision (xLearn uses float32).
    classes : pair of labels, default=(0, 1)
        ``classes_`` of a classifier (negative, positive): what ``predict``
        returns.

    Returns
    -------
    estimator
        LR: :class:`cfm.FMClassifier` / :class:`cfm.FMRegressor` with
        ``n_factors=0, normalize=False``.  FM: the same with ``n_factors=k``
        and ``normalize=False`` when ``norm=False``, else
        :class:`cfm.xlearn.XLearnFMClassifier` / ``XLearnFMRegressor``
        (xLearn's FM normalisation, see :mod:`cfm.xlearn`).  FFM:
        :class:`cfm.FFMClassifier` / :class:`cfm.FFMRegressor` with
        ``normalize=norm``.  The optimizer state is fresh (AdaGrad), so the
        plain cfm estimators can continue training with ``warm_start=True``.

    Notes
    -----
    xLearn reads feature ids as written in the data file (libsvm ids are not
    shifted): column ``j`` of the cfm model is xLearn's feature ``j``.  Load
    libsvm data for it with ``cfm.load_libsvm(path, zero_based=True,
    n_features=model.n_features_in_)``.

    Raises
    ------
    cfm.ModelFileError
        Not an xLearn TXT model, a malformed line (``file:line`` in the
        message), an incomplete model, or a model of another ``kind`` (also:
        ``fields`` given for a file that holds no FFM model).
    ValueError
        Bad arguments (task, fields, n_features, ...).
    """
    if task not in _TASKS:
        raise ValueError(f"task must be 'binary' or 'reg', got {task!r}")
    task = _TASKS[task]
    if not isinstance(norm, (bool, np.bool_)):
        raise ValueError(f"norm must be True or False, got {norm!r}")
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    classes = np.asarray(classes)
    if task == "binary" and (classes.ndim != 1 or len(classes) != 2 or classes[0] == classes[1]):
        raise ValueError(f"classes must be two distinct labels, got {classes!r}")
    if not os.path.exists(os.fspath(path)):
        raise FileNotFoundError(f"xLearn model file not found: {os.fspath(path)!r}")

    bias, w, V, found = _parse_txt(path)
    if kind != "auto" and kind != found:
        raise ModelFileError(f"{os.fspath(path)!r} holds an xLearn {found.upper()} model, "
                             f"not {kind.upper()}")
    n = w.shape[0]
    if n_features is not None:
        if isinstance(n_features, bool) or not isinstance(n_features, (int, np.integer)):
            raise ValueError(f"n_features must be an integer, got {n_features!r}")
        if n_features < n:
            raise ValueError(f"n_features={n_features} is smaller than the {n} features of "
                             f"the xLearn model {os.fspath(path)!r}")
        pad = int(n_features) - n
        w = np.concatenate([w, np.zeros(pad)])
        if V is not None:
            V = np.concatenate([V, np.zeros((pad,) + V.shape[1:])])
        n = int(n_features)

    w0_state = np.array([bias, ADAGRAD_INIT, 0.0])
    if found == "ffm":
        nf, k = V.shape[1], V.shape[2]
        # fields None: xLearn's per-entry fields (no per-column table describes
        # the model; it scores input whose entries carry their fields)
        flds = np.zeros(n, np.int32) if fields is None else _infer_fields(fields, n, nf)
        cls = FFMClassifier if task == "binary" else FFMRegressor
        kp = padded_k(k)
        ks = kp + 1  # adagrad: one accumulator per (feature, field) vector
        Vt = np.zeros((n, nf, ks), dtype=dt)
        Vt[:, :, :k] = V
        Vt[:, :, kp] = ADAGRAD_INIT
        lin = np.empty((n, lin_width("adagrad")), dtype=dt)
        lin[:, 0] = w
        lin[:, 1] = ADAGRAD_INIT
        arrays = {"lin": lin, "V": Vt.reshape(n, nf * ks), "w0_state": w0_state,
                  "fields": flds}
        entries = dict(n_factors=k, n_fields=nf, normalize=bool(norm))
        if fields is None:
            entries["entry_fields"] = True
    else:
        if fields is not None:
            # the caller expects an FFM: a model of another kind, as for kind=
            # (e.g. an FFM file cut after its linear weights reads as LR)
            raise ModelFileError(f"fields= is for FFM models; {os.fspath(path)!r} is an "
                                 f"xLearn {found.upper()} model (is the file complete?)")
        k = 0 if V is None else V.shape[1]
        xl_norm = found == "fm" and bool(norm) and k > 0
        if xl_norm:
            cls = XLearnFMClassifier if task == "binary" else XLearnFMRegressor
        else:
            cls = FMClassifier if task == "binary" else FMRegressor
        arrays = {"w": w.astype(dt), "V": (V if V is not None else np.zeros((n, 0))).astype(dt),
                  "opt_state": np.full((n, 2), ADAGRAD_INIT, dtype=dt), "w0_state": w0_state}
        entries = dict(n_factors=k, normalize=xl_norm, xlearn_fm_norm=xl_norm)
    # the estimator through its constructor, its tables through its state class
    model = cls(n_factors=entries["n_factors"], normalize=entries["normalize"],
                dtype=dt.name, solver="adagrad")
    entries.update(solver="adagrad", dtype=dt.name, n_features=n)
    state = model._state_class.from_file(entries, arrays)
    labels = _decode_labels(_encode_labels(classes)) if task == "binary" else None
    return model._adopt(state, classes=labels)
