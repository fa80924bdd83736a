"""The model-state protocol and what every state class shares.

A *model state* owns a fitted model's parameters: their allocation and
memory layout, initialisation, one training epoch (one kernel call),
decision (raw scores), the finiteness check, snapshot / restore, and export
to / import from a model file (header entries and arrays).  An estimator
holds exactly one state object (``est._state``) and replaces it -- never
edits its attributes -- when a fit, a warm start that changes the layout, or
a load needs other tables.  A prediction takes the state once, so a refit on
another thread cannot change the tables under it (issue 11 item 4); training
updates the *values* of the state's arrays in place, whose shapes never
change.

States are plain NumPy data: they pickle and copy with the estimator.
Nothing here imports an estimator, a solver or a file format.
"""
from dataclasses import dataclass

import numpy as np

from .. import _utils

# Optimizer and loss codes of the per-sample kernels: the kernels' cpdef
# enums (src/cfm/_utils.pxd), read here, never copied.
OPTIMIZERS = {"sgd": _utils.OPT_SGD, "adagrad": _utils.OPT_ADAGRAD, "ftrl": _utils.OPT_FTRL}
LOSSES = {"squared": _utils.LOSS_SQUARED, "logistic": _utils.LOSS_LOGISTIC}
# Every solver a state may have been trained by (als / mcmc: cfm._train).
SOLVERS = ("sgd", "adagrad", "ftrl", "als", "mcmc")
# Initial value of AdaGrad accumulators (as libffm/xLearn): damps the first steps.
ADAGRAD_INIT = 1.0
# Largest n_factors (the kernels keep per-factor sums in stack arrays).
MAX_FACTORS = 256


@dataclass(frozen=True)
class Hyper:
    """Hyper-parameters of one per-sample training epoch (resolved values).

    Row normalisation is a property of the state (it changes the decision),
    not of an epoch."""

    loss: str
    optimizer: str
    fit_intercept: bool
    learning_rate: float
    l2_w0: float
    l2_w: float
    l2_v: float
    l1: float
    ftrl_beta: float


class ModelState:
    """Base of the state classes (see the module docstring).

    Subclasses define ``kind`` (the model file's "kind"), ``n_features`` and::

        decision(Xc, n_threads, shared=False) -> float64 raw scores
        finite(n_threads) -> bool
        snapshot(into=None) / restore(snap)   (into: FM / FFM tables reuse a snapshot)
        export() -> (arrays, header entries)
        from_file(header, arrays, scoring_only=False)   (classmethod)
        train_epoch(Xc, y, sw, order, hyper, n_threads, rng) -> (loss_sum, weight_sum, n_bad)

    Attributes are fixed once built (assigning one raises AttributeError), so
    a state taken by a prediction stays consistent.
    """

    kind = None
    # A model file's state: False when loaded with scoring_only (no optimizer
    # state: it predicts but cannot train or be saved).
    trainable = True

    def _set(self, **fields):
        self.__dict__.update(fields)

    def __setattr__(self, name, value):
        raise AttributeError("model state objects are immutable (build a new one)")

    def check_width(self, Xc):
        """The rows' column ids are below Xc.shape[1] (validated): the model
        must have at least that many features."""
        if Xc.shape[1] > self.n_features:
            raise ValueError(f"X has {Xc.shape[1]} features, but the model has "
                             f"{self.n_features} (it was refitted meanwhile?)")



class TableViews:
    """``w0``, ``w``, ``V`` and ``factors()`` of a state whose table rows
    start [w, v_0 .. v_{k-1}] (FMTable, DeepFMState) and whose ``w0_state``
    starts with w0: views, no copies."""

    @property
    def w0(self):
        return float(self.w0_state[0])

    @property
    def w(self):
        return self.table[:, 0]

    @property
    def V(self):
        return self.table[:, 1:1 + self.k]

    def factors(self):
        """Factors (embeddings), shape (n_features, k) (a view)."""
        return self.V

class TableShape:
    """``n_features`` and ``dtype`` of a state holding one row per feature in
    its array named ``_rows`` (``table``: FMTable, FwFMTable,
    SoftmaxFMTable; ``V``: FFMTable, SoftmaxFFMTable)."""

    _rows = "table"

    @property
    def n_features(self):
        return getattr(self, self._rows).shape[0]

    @property
    def dtype(self):
        return getattr(self, self._rows).dtype


def keep_layout(state, solver, dtype):
    """Warm start of a state that cannot change its layout: ``state`` itself
    when ``solver`` and ``dtype`` (as the state stores it) are its own, else
    the error (FFM, softmax FFM and FwFM tables)."""
    if solver != state.solver or state.dtype != dtype:
        raise ValueError(f"warm start must keep solver and dtype ({state.solver!r}, "
                         f"{state.dtype}); refit with warm_start=False")
    return state


def bias_state(w0, optimizer, *, ftrl_beta=1.0, learning_rate=0.1, l2_w0=0.0):
    """The bias record [w0, optimizer state (2)] a fit starts from."""
    if optimizer == "adagrad":
        return np.array([w0, ADAGRAD_INIT, 0.0])
    if optimizer == "ftrl":
        return np.array([w0, -w0 * (ftrl_beta / learning_rate + l2_w0), 0.0])
    return np.array([w0, 0.0, 0.0])


class LazyRows:
    """An exported array produced a block of rows at a time (``block(i, j)``
    returns rows i:j), so that exporting a table that is not stored as the
    file lays it out needs a block of memory, not a copy of the table.  The
    model-file layer writes it (cfm._model_file.RowBlocks)."""

    def __init__(self, shape, dtype, block):
        self.shape, self.dtype, self.block = tuple(shape), np.dtype(dtype), block


# ------------------------------------------------------------ table helpers
def table_row_bytes(n_cols, dtype):
    """Bytes of a row of aligned_table(., n_cols, dtype) (padded to 64 bytes)."""
    dtype = np.dtype(dtype)
    per_line = 64 // dtype.itemsize
    return -(-n_cols // per_line) * 64


def aligned_table(n_rows, n_cols, dtype, zeros=True):
    """(n_rows, stride) table, rows padded to 64 bytes, base 64-byte aligned;
    zeroed unless ``zeros=False``."""
    dtype = np.dtype(dtype)
    per_line = 64 // dtype.itemsize
    stride = -(-n_cols // per_line) * per_line
    buf = (np.zeros if zeros else np.empty)(n_rows * stride + per_line, dtype=dtype)
    off = (-buf.ctypes.data % 64) // dtype.itemsize
    return buf[off:off + n_rows * stride].reshape(n_rows, stride)


def each_block(src, fn):
    """``fn(i, j, rows i:j)`` over blocks covering ``src``: an array in one
    block, or an array of a model file (cfm._readahead.FileArray) a block at a
    time as it is read, in two threads."""
    each = getattr(src, "for_each_block", None)
    if each is not None:
        each(fn)
    else:
        fn(0, len(src), src)


def as_array(src):
    """``src`` as an in-memory array (an array of a model file is read)."""
    return src.read() if hasattr(src, "for_each_block") else src


def _assign(dst, i, j, src):
    dst[i:j] = src


def copy_rows(dst, src, n_threads=2, min_bytes=32 << 20):
    """``dst[...] = src`` split by rows over threads when large (NumPy copies
    without the GIL): loading a model copies hundreds of MB into fresh memory,
    and in a VM first touches of fresh pages cost as much as the copy.  An
    array of a model file is copied a block at a time as it is read."""
    if hasattr(src, "for_each_block"):
        src.for_each_block(lambda i, j, block: _assign(dst, i, j, block))
        return
    n = dst.shape[0]
    if n_threads < 2 or dst.nbytes < min_bytes or n < n_threads:
        dst[...] = src
        return
    import threading

    cuts = [n * t // n_threads for t in range(n_threads + 1)]
    errors = []

    def work(a, b):
        try:
            dst[a:b] = src[a:b]
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    started = []
    for t in range(1, n_threads):
        th = threading.Thread(target=work, args=(cuts[t], cuts[t + 1]))
        try:
            th.start()
            started.append(th)
        except RuntimeError:  # no thread can be created: copy that part here
            work(cuts[t], cuts[t + 1])
    work(cuts[0], cuts[1])
    for th in started:
        th.join()
    if errors:
        raise errors[0]


def check_arrays(arrays, expect):
    """Every array of ``expect`` {name: (shape, dtype)} is present with that
    shape and dtype (arrays of a model file)."""
    for name, (shape, dt) in expect.items():
        if name not in arrays:
            raise ValueError(f"array {name!r} is missing")
        if arrays[name].shape != shape:
            raise ValueError(f"array {name!r} has shape {arrays[name].shape}, expected {shape}")
        if arrays[name].dtype != dt:
            raise ValueError(f"array {name!r} has dtype {arrays[name].dtype}, expected "
                             f"{np.dtype(dt)}")
