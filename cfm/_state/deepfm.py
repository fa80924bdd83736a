"""DeepFM model state: owns the parameter arrays and drives the kernels.

The model-state protocol of cfm/_state/base.py: allocation and
initialisation (``new``), one training epoch (one kernel call, no Python per
mini-batch), decision, finiteness, snapshot / restore, a change of optimizer
(``relayout``), export to / import from (arrays, header).  The estimators
``cfm.DeepFMClassifier`` / ``DeepFMRegressor`` (cfm/deepfm.py) hold one.

Arrays (plain NumPy, C-contiguous; see src/cfm/_deepfm.pyx for the math):

* ``table`` (n_features, stride): one record per feature
  [w, v_0..v_{k-1}, field, optimizer state], rows 64-byte aligned;
* ``fields`` (n_features,) int32: field of each feature (the table's field
  column is derived from it);
* ``mlp`` (n_mlp,): W_l, b_l of each hidden layer, then w_out;
  ``mlp_state``: Adam [m | s] (2 n_mlp) or AdaGrad [G] (n_mlp);
* ``bias`` [w0, m or G, s] float64 (``w0_state``); ``counters`` [dense step
  count] int64.

A state loaded with ``scoring_only`` keeps records [w, v, field] only (a
64-byte row for k <= 13 in float32, instead of 128 bytes with Adam's
moments) and no dense optimizer state: it scores but cannot train or be saved.

Threading: the kernels run BLAS from cfm's pool threads, so BLAS is
limited to one thread while any kernel call runs (threadpoolctl, when it is
installed; without it results are the same, only slower through
oversubscription; see _OneThreadBLAS).

Determinism: with a fixed ``rng``, ``train_epoch`` is reproducible for any
``n_threads``, and bit-identical across thread counts (every reduction runs
in a fixed order that does not depend on the thread count; see the kernel's
module docstring).  ``decision`` is identical for any ``n_threads``.
"""
from __future__ import annotations

import numbers
import threading
from dataclasses import dataclass

import numpy as np

from .. import _deepfm, _utils
from .base import ModelState, TableViews, as_array, check_arrays, copy_rows, each_block
from .base import aligned_table as _aligned_table

__all__ = ["DeepFMHyper", "DeepFMState", "MAX_LAYERS", "initial_bias"]

_LOSSES = {"squared": _deepfm.SQUARED, "logistic": _deepfm.LOGISTIC}
_OPTIMIZERS = {"adam": _deepfm.ADAM, "adagrad": _deepfm.ADAGRAD}
_FORMAT = 1          # layout version of the exported arrays
_MAX_FACTORS = 256
_MAX_WIDTH = 1 << 16  # widest layer accepted (also bounds sizes read from files)
MAX_LAYERS = 64       # most hidden layers (bounds a list read from a file)


@dataclass(frozen=True)
class DeepFMHyper:
    """Hyper-parameters of one training epoch.

    ``eps`` None: 1e-8 for Adam, 1e-10 for AdaGrad (torch's defaults).
    L2 (added to the gradient): ``l2_v`` on the embeddings and ``l2_w`` on
    the linear weights of the rows a batch touches, ``l2_dense`` on the
    dense weights (not their biases), ``l2_w0`` on the bias.
    """

    loss: str = "logistic"
    learning_rate: float = 1e-3
    batch_size: int = 256
    l2_w0: float = 0.0
    l2_w: float = 0.0
    l2_v: float = 0.0
    l2_dense: float = 0.0
    dropout: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float | None = None
    fit_intercept: bool = True

    def check(self):
        if self.loss not in _LOSSES:
            raise ValueError(f"loss must be one of {sorted(_LOSSES)}, got {self.loss!r}")
        for name in ("learning_rate", "l2_w0", "l2_w", "l2_v", "l2_dense", "beta1", "beta2"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Real) or not np.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError("beta1 and beta2 must be in [0, 1)")
        if not (isinstance(self.dropout, numbers.Real) and 0 <= self.dropout < 1):
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, numbers.Integral)
                or self.batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.eps is not None and not (np.isfinite(self.eps) and self.eps > 0):
            raise ValueError(f"eps must be > 0, got {self.eps!r}")
        return self


class _OneThreadBLAS:
    """BLAS limited to one thread while any DeepFM kernel runs (the kernels call
    it from cfm's pool threads), through threadpoolctl when it is installed
    (without it results are the same, only slower through oversubscription).

    The limit is process-wide, so it is counted: the first kernel call to
    start sets it, the last to end restores the original limits.  (Per-call
    limits would race between threads: a call ending while another still runs
    would restore the multi-threaded BLAS under it, or leave the process's
    BLAS at one thread for good.)"""

    def __init__(self):
        self._lock = threading.Lock()
        self._users = 0
        self._limiter = None
        self._controller = None

    def __enter__(self):
        with self._lock:
            if self._users == 0:
                if self._controller is None:
                    try:
                        from threadpoolctl import ThreadpoolController
                    except ImportError:  # pragma: no cover - only slower without it
                        self._controller = False
                    else:
                        self._controller = ThreadpoolController()
                if self._controller:
                    self._limiter = self._controller.limit(limits=1, user_api="blas")
            self._users += 1
        return self

    def __exit__(self, *exc):
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._limiter is not None:
                limiter, self._limiter = self._limiter, None
                limiter.restore_original_limits()
        return False


_ONE_THREAD_BLAS = _OneThreadBLAS()


def _blas_one_thread():
    """Context limiting BLAS to one thread (see _OneThreadBLAS)."""
    return _ONE_THREAD_BLAS


def _check_fields(fields, n_features, n_fields):
    f = np.asarray(fields)
    if f.ndim != 1 or f.shape[0] != n_features:
        raise ValueError(f"fields must be a 1-D array of length n_features={n_features}, "
                         f"got shape {f.shape}")
    if n_features and not np.issubdtype(f.dtype, np.integer):
        if not np.all(np.isfinite(f)) or not np.all(f == np.round(f)):
            raise ValueError("fields must hold integer field ids")
    f = f.astype(np.int64, copy=False)
    lo = int(f.min()) if n_features else 0
    hi = int(f.max()) if n_features else -1
    if n_fields is None:
        n_fields = hi + 1
    if lo < 0 or hi >= n_fields:
        bad = int(np.flatnonzero((f < 0) | (f >= n_fields))[0])
        raise ValueError(f"fields[{bad}] = {int(f[bad])} is outside [0, {n_fields})")
    if n_fields < 1:
        raise ValueError("at least one field is needed")
    return np.ascontiguousarray(f, dtype=np.int32), int(n_fields)


class DeepFMState(TableViews, ModelState):
    """Parameters and optimizer state of a DeepFM model (see module doc).

    Parameters
    ----------
    n_features : int
    fields : array of int, shape (n_features,)
        Field of every feature, in [0, n_fields).
    k : int
        Embedding size (shared by the FM and the deep component).
    hidden : tuple of int
        Hidden layer sizes of the MLP (ReLU); () for none.
    n_fields : int or None
        Number of fields (default: max(fields) + 1).
    dtype : float32 or float64
    optimizer : "adam" or "adagrad"
        Fixed at construction (it decides the record layout).
    seed : int
        Seeds the initialisation.
    init_std : float
        Standard deviation of the N(0, init_std^2) embedding draws.
    normalize : bool
        Scale every row to unit L2 norm (in training and scoring): a property
        of the model, saved with it.
    """

    kind = "deepfm"
    dtypes = ("float32", "float64")
    uses_fields = True
    coordinate_solvers = False
    # The epoch is deterministic for any thread count and a row costs the MLP's
    # arithmetic (~1e5 flops for 256-128): threads pay from a few hundred rows
    # (cfm._train.sgd caps the per-sample solvers at one thread per 10,000).
    rows_per_thread = 256

    def __init__(self, n_features, fields, k=8, hidden=(256, 128), *, n_fields=None,
                 dtype=np.float32, optimizer="adam", seed=0, init_std=0.01, normalize=False,
                 _init=True):
        n_features = int(n_features)
        if n_features < 0:
            raise ValueError("n_features must be >= 0")
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= _MAX_FACTORS:
            raise ValueError(f"k must be an integer in [1, {_MAX_FACTORS}], got {k!r}")
        hidden = tuple(hidden)
        if len(hidden) > MAX_LAYERS:
            raise ValueError(f"at most {MAX_LAYERS} hidden layers, got {len(hidden)}")
        for h in hidden:
            if isinstance(h, bool) or not isinstance(h, numbers.Integral) or not 1 <= h <= _MAX_WIDTH:
                raise ValueError(f"hidden layer sizes must be integers in [1, {_MAX_WIDTH}], "
                                 f"got {hidden!r}")
        if optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(_OPTIMIZERS)}, got {optimizer!r}")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        fields, n_fields = _check_fields(fields, n_features, n_fields)
        if n_fields * int(k) > _MAX_WIDTH:
            raise ValueError(f"n_fields * k = {n_fields * int(k)} exceeds {_MAX_WIDTH} (the "
                             "width of the MLP's input): use fewer fields or factors")
        k = int(k)
        hidden = tuple(int(h) for h in hidden)
        layer_sizes = np.array([n_fields * k, *hidden], dtype=np.int64)
        _, _, _, n_mlp = _deepfm.mlp_layout(layer_sizes)
        self._set(n_features=n_features, fields=fields, n_fields=n_fields, k=k, hidden=hidden,
                  optimizer=optimizer, dtype=dtype, normalize=bool(normalize),
                  layer_sizes=layer_sizes, n_mlp=n_mlp, trainable=True,
                  layout=_deepfm.record_layout(k, _OPTIMIZERS[optimizer], dtype.itemsize),
                  last_phase_times=None)
        if not _init:
            return
        table = _aligned_table(n_features, self.layout["stride"], dtype)
        table[:, self.layout["field"]] = fields
        rng = np.random.default_rng(np.random.SeedSequence(int(seed)))
        for i in range(0, n_features, 1 << 17):  # in blocks: no n_features x k temporary
            j = min(n_features, i + (1 << 17))
            table[i:j, 1:1 + k] = rng.normal(0.0, init_std, (j - i, k))
        n_state = 2 * n_mlp if optimizer == "adam" else n_mlp
        self._set(table=table, mlp=self._init_mlp(rng), mlp_state=np.zeros(n_state, dtype=dtype),
                  bias=np.zeros(3), counters=np.zeros(1, dtype=np.int64))

    @classmethod
    def new(cls, n_features, *, k, optimizer, dtype, init_std, seed, w0, normalize, fields,
            hidden):
        """A freshly initialised state (the estimators' entry point), bias ``w0``."""
        state = cls(n_features, fields, k, hidden, dtype=dtype, optimizer=optimizer,
                    seed=seed, init_std=init_std, normalize=normalize)
        state.bias[0] = w0
        return state

    @staticmethod
    def model_bytes(n_features, n_fields, k, hidden, optimizer, dtype):
        """Bytes of the arrays ``new`` allocates (the table dominates)."""
        dtype = np.dtype(dtype)
        lay = _deepfm.record_layout(int(k), _OPTIMIZERS[optimizer], dtype.itemsize)
        _, _, _, n_mlp = _deepfm.mlp_layout([int(n_fields) * int(k), *hidden])
        per_mlp = 3 if optimizer == "adam" else 2
        return n_features * lay["stride"] * dtype.itemsize + per_mlp * n_mlp * dtype.itemsize

    def relayout(self, optimizer, dtype):
        """This model with ``optimizer``'s state in ``dtype`` (warm start after
        a change of optimizer or dtype; the optimizer state starts afresh):
        self when unchanged."""
        dtype = np.dtype(dtype)
        if optimizer == self.optimizer and dtype == self.dtype:
            return self
        new = DeepFMState(self.n_features, self.fields, self.k, self.hidden,
                          n_fields=self.n_fields, dtype=dtype, optimizer=optimizer,
                          normalize=self.normalize)
        new.table[:, :1 + self.k] = self.table[:, :1 + self.k]
        new.mlp[...] = self.mlp
        new.bias[0] = self.bias[0]
        return new

    def _init_mlp(self, rng):
        """He-uniform hidden layers (ReLU), zero biases, Glorot-uniform w_out."""
        w_off, b_off, out_off, size = _deepfm.mlp_layout(self.layer_sizes)
        mlp = np.zeros(size, dtype=self.dtype)
        sizes = list(self.layer_sizes)
        for l in range(1, len(sizes)):
            din, dout = sizes[l - 1], sizes[l]
            lim = np.sqrt(6.0 / din)
            mlp[w_off[l - 1]:w_off[l - 1] + din * dout] = rng.uniform(-lim, lim, din * dout)
        dl = sizes[-1]
        lim = np.sqrt(6.0 / (dl + 1))
        mlp[out_off:out_off + dl] = rng.uniform(-lim, lim, dl)
        return mlp

    # ---------------------------------------------------------------- views
    @property
    def w0_state(self):
        """[w0, optimizer state (2)] (what the training loop checks; w0, w, V
        and factors() come from TableViews)."""
        return self.bias

    def dense_params(self):
        """(W list, b list, w_out) as views into ``mlp``."""
        w_off, b_off, out_off, _ = _deepfm.mlp_layout(self.layer_sizes)
        sizes = list(self.layer_sizes)
        Ws = [self.mlp[w_off[l - 1]:w_off[l - 1] + sizes[l - 1] * sizes[l]].reshape(sizes[l - 1], sizes[l])
              for l in range(1, len(sizes))]
        bs = [self.mlp[b_off[l - 1]:b_off[l - 1] + sizes[l]] for l in range(1, len(sizes))]
        return Ws, bs, self.mlp[out_off:out_off + sizes[-1]]

    # ------------------------------------------------------------- training
    def init_intercept(self, y, sw=None, loss="logistic"):
        """Start w0 at the (weighted) mean target: the log-odds for logistic
        (y in -1/+1), the mean for squared; clipped to [-10, 10]."""
        self.bias[0] = initial_bias(y, sw, loss)

    def _check_X(self, Xc):
        if Xc.shape[1] != self.n_features:
            raise ValueError(f"X has {Xc.shape[1]} features, the model expects {self.n_features}")

    def train_epoch(self, Xc, y, sw, order, hyper, n_threads, rng):
        """One epoch of mini-batches over ``order`` (rows of Xc, a validated
        cfm._validation.CSRInput).  ``y``: float64, -1/+1 for logistic;
        ``sw``: float64 weights or None; ``rng``: seeds dropout.

        Returns (sum of sw * loss before each update, sum of sw, number of
        rows whose prediction was not finite)."""
        if not self.trainable:
            raise ValueError("this DeepFM state was loaded for scoring only")
        hyper.check()
        self._check_X(Xc)
        n = Xc.shape[0]
        y = np.ascontiguousarray(y, dtype=np.float64)
        if y.shape != (n,):
            raise ValueError(f"y has shape {y.shape}, expected ({n},)")
        if hyper.loss == "logistic" and not np.all(np.abs(y) == 1):
            raise ValueError("logistic loss needs y in {-1, +1}")
        sw = np.zeros(0) if sw is None else np.ascontiguousarray(sw, dtype=np.float64)
        if sw.shape not in ((0,), (n,)):
            raise ValueError(f"sample_weight has shape {sw.shape}, expected ({n},)")
        order = np.ascontiguousarray(order, dtype=np.int64)
        if order.ndim != 1 or (order.size and (order.min() < 0 or order.max() >= n)):
            raise ValueError("order must be a 1-D array of row indices in [0, n_rows)")
        seed = _draw_seed(rng)
        eps = hyper.eps if hyper.eps is not None else (1e-8 if self.optimizer == "adam" else 1e-10)
        times = np.zeros(len(_deepfm.PHASES))
        with _blas_one_thread():
            res = _deepfm.deepfm_train_epoch(
                data=Xc.data, indices=Xc.indices, indptr=Xc.indptr, y=y, sample_weight=sw,
                order=order, table=self.table, mlp=self.mlp, mlp_state=self.mlp_state,
                bias_state=self.bias, counters=self.counters, layer_sizes=self.layer_sizes,
                n_factors=self.k, loss=_LOSSES[hyper.loss], optimizer=_OPTIMIZERS[self.optimizer],
                fit_intercept=hyper.fit_intercept, normalize=self.normalize,
                learning_rate=hyper.learning_rate, beta1=hyper.beta1, beta2=hyper.beta2, eps=eps,
                l2_w0=hyper.l2_w0, l2_w=hyper.l2_w, l2_v=hyper.l2_v, l2_dense=hyper.l2_dense,
                dropout=hyper.dropout, batch_size=int(hyper.batch_size), seed=seed,
                n_threads=max(int(n_threads), 1), phase_times=times)
        # diagnostics of the last epoch (a new dict each time), not model state
        self._set(last_phase_times=dict(zip(_deepfm.PHASES, times.tolist())))
        return res

    # -------------------------------------------------------------- scoring
    def decision(self, Xc, n_threads, shared=False):
        """Raw scores (float64) of the rows of Xc; identical for any n_threads
        (``shared`` changes nothing: the pool's threads always claim blocks)."""
        self.check_width(Xc)
        out = np.empty(Xc.shape[0])
        with _blas_one_thread():
            _deepfm.deepfm_predict(
                data=Xc.data, indices=Xc.indices, indptr=Xc.indptr, table=self.table,
                mlp=self.mlp, layer_sizes=self.layer_sizes, w0=float(self.bias[0]),
                n_factors=self.k, normalize=self.normalize, out=out,
                n_threads=max(int(n_threads), 1))
        return out

    def finite(self, n_threads=1):
        return bool(np.isfinite(self.bias[0])
                    and _utils.all_finite(self.table, 1 + self.k, max(int(n_threads), 1))
                    and np.isfinite(self.mlp).all())

    # ------------------------------------------------------ snapshot / files
    def snapshot(self):
        return (self.table.copy(), self.mlp.copy(), self.mlp_state.copy(), self.bias.copy(),
                self.counters.copy())

    def restore(self, snap):
        table, mlp, mlp_state, bias, counters = snap
        self.table[...] = table
        self.mlp[...] = mlp
        self.mlp_state[...] = mlp_state
        self.bias[...] = bias
        self.counters[...] = counters

    def export(self):
        """(arrays, header entries) for a model file; the table is written as
        its records' used columns ([w, v, field, optimizer state]).  The
        header keys ``solver`` (the optimizer) and ``n_factors`` are those of
        every cfm model file."""
        header = {"kind": self.kind, "deepfm_format": _FORMAT, "n_features": self.n_features,
                  "n_fields": self.n_fields, "n_factors": self.k, "hidden": list(self.hidden),
                  "solver": self.optimizer, "dtype": self.dtype.name,
                  "normalize": self.normalize}
        arrays = {"table": self.table[:, :self.layout["used"]], "fields": self.fields,
                  "mlp": self.mlp, "mlp_state": self.mlp_state, "bias": self.bias,
                  "counters": self.counters}
        return arrays, header

    @classmethod
    def from_file(cls, header, arrays, scoring_only=False):
        """Rebuild a state from :meth:`export`'s output read back from a file:
        nothing is trusted; every size is checked against the arrays (which
        may be arrays of a model file, cfm._readahead.FileArray, copied a
        block at a time).  ``scoring_only``: records [w, v, field] only and
        no optimizer state (see the module docstring)."""
        def need(name, types):
            if name not in header or not isinstance(header[name], types) or isinstance(header[name], bool):
                raise ValueError(f"DeepFM model header: missing or invalid {name!r}")
            return header[name]

        if header.get("kind") != cls.kind:
            raise ValueError(f"not a DeepFM model (kind {header.get('kind')!r})")
        fmt = need("deepfm_format", int)
        if fmt > _FORMAT or fmt < 1:
            raise ValueError(f"DeepFM layout version {fmt} is not supported (newest {_FORMAT})")
        n_features = need("n_features", int)
        n_fields = need("n_fields", int)
        k = need("n_factors", int)
        hidden = need("hidden", list)
        optimizer = need("solver", str)
        dtype = need("dtype", str)
        normalize = header.get("normalize", False)
        if not isinstance(normalize, bool):
            raise ValueError("DeepFM model header: invalid 'normalize'")
        if dtype not in ("float32", "float64"):
            raise ValueError(f"DeepFM model header: unknown dtype {dtype!r}")
        for name in ("table", "fields", "mlp", "mlp_state", "bias", "counters"):
            if name not in arrays:
                raise ValueError(f"DeepFM model file: array {name!r} is missing")
        if arrays["fields"].dtype != np.int32 or arrays["fields"].shape != (n_features,):
            raise ValueError("DeepFM model file: fields array does not match the header")
        fields = as_array(arrays["fields"])
        state = cls(n_features, fields, k, hidden, n_fields=n_fields, dtype=dtype,
                    optimizer=optimizer, normalize=normalize, _init=False)
        lay = state.layout
        used = lay["used"]
        n_state = 2 * state.n_mlp if optimizer == "adam" else state.n_mlp
        check_arrays(arrays, {"table": ((n_features, used), state.dtype),
                              "mlp": ((state.n_mlp,), state.dtype),
                              "mlp_state": ((n_state,), state.dtype),
                              "bias": ((3,), np.float64), "counters": ((1,), np.int64)})
        if scoring_only:
            # [w, v, field]: the records the scoring kernel reads
            table = _aligned_table(n_features, lay["field"] + 1, state.dtype)
            copy_rows(table[:, :lay["field"] + 1], _Columns(arrays["table"], lay["field"] + 1))
            mlp_state = np.zeros(0, dtype=state.dtype)
        else:
            table = _aligned_table(n_features, lay["stride"], state.dtype)
            copy_rows(table[:, :used], arrays["table"])
            mlp_state = np.array(as_array(arrays["mlp_state"]), dtype=state.dtype, copy=True)
        if not np.array_equal(table[:, lay["field"]], fields.astype(state.dtype)):
            raise ValueError("DeepFM model file: the table's field column disagrees with fields")
        state._set(table=table, mlp=np.array(as_array(arrays["mlp"]), dtype=state.dtype),
                   mlp_state=mlp_state,
                   bias=np.array(as_array(arrays["bias"]), dtype=np.float64),
                   counters=np.array(as_array(arrays["counters"]), dtype=np.int64),
                   trainable=not scoring_only)
        if state.counters[0] < 0:
            raise ValueError("DeepFM model file: negative step count")
        if optimizer == "adam" and n_features and not scoring_only:
            t = table[:, lay["t"]]
            if not (np.all(t >= 0) and np.all(t == np.floor(t))):
                raise ValueError("DeepFM model file: invalid per-row step counts")
        return state


class _Columns:
    """The first ``n`` columns of a 2-D array of a model file, block by block
    (what cfm._state.base.copy_rows copies from)."""

    def __init__(self, src, n):
        self.src, self.n = src, n

    def for_each_block(self, fn):
        each_block(self.src, lambda i, j, block: fn(i, j, block[:, :self.n]))


def initial_bias(y, sw=None, loss="logistic"):
    """The bias a fit starts from: the (weighted) log-odds of the labels for
    logistic (y in -1/+1), the mean for squared; clipped to [-10, 10]."""
    y = np.asarray(y, dtype=np.float64)
    if y.size == 0:
        return 0.0
    sw = np.ones_like(y) if sw is None else np.asarray(sw, dtype=np.float64)
    if sw.sum() <= 0:
        return 0.0
    if loss == "logistic":
        p = float(np.sum(sw * (y > 0)) / np.sum(sw))
        p = min(max(p, 1e-6), 1 - 1e-6)
        w0 = np.log(p / (1 - p))
    else:
        w0 = float(np.sum(sw * y) / np.sum(sw))
    return float(np.clip(w0, -10.0, 10.0))


def _draw_seed(rng):
    if rng is None:
        return 0
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        return int(rng) & (2**64 - 1)
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(0, 2**63 - 1))
    if isinstance(rng, np.random.RandomState):
        return int(rng.randint(0, 2**31 - 1)) * (2**31) + int(rng.randint(0, 2**31 - 1))
    raise ValueError(f"{rng!r} cannot seed dropout")
