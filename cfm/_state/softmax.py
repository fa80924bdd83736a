"""SoftmaxFMTable: a multiclass (softmax) factorization machine.

Parameter sharing: **none between classes**.  Class c has its own bias
w0_c, linear weights w_c and factors V_c -- C independent FMs coupled only by
the softmax loss (the multinomial logistic regression of FM scores):

    score_c(x) = w0_c + sum_i w_ic x_i + sum_{i<j} <v_ic, v_jc> x_i x_j
    P(y = c | x) = softmax(score(x))_c

Why not share V: with one V for all classes and per-class w, the pairwise
term is the same for every class and cancels in the softmax (the model
degenerates to multinomial logistic regression); sharing V with a per-class
projection of the factor sums (score_c = ... + sum_f p_cf q_f(x)) keeps C
times fewer factors, and was measured against this layout in
benchmarks/bench_multiclass.py (benchmarks/results/RESULTS_multiclass.md).

Layout (see src/cfm/_fm.pyx, "Multiclass"): one record per feature holding
C blocks, each the binary FM's record ``[w, v(k), optimizer state]``, padded
to 64 bytes; ``w0_state`` is (C, 3): [w0, a, b] per class.
"""
import numpy as np

from .. import _fm, _utils
from .base import (MAX_FACTORS, OPTIMIZERS, ModelState, TableShape, aligned_table, as_array,
                   check_arrays, copy_rows, table_row_bytes)
from .fm import _init_optimizer_state, state_width

# per-sample solvers only (ALS / MCMC have no softmax likelihood here)
SOFTMAX_SOLVERS = ("sgd", "adagrad", "ftrl")
# most classes of a model (a record of C blocks; the kernels keep C scores per row)
MAX_CLASSES = 1 << 16


class SoftmaxFMTable(TableShape, ModelState):
    """Per-class FM tables of a softmax FM (see the module docstring)."""

    kind = "fm_softmax"
    dtypes = ("float32", "float64")
    uses_fields = False
    coordinate_solvers = False
    max_classes = MAX_CLASSES

    @classmethod
    def for_classes(cls, n_classes):
        """The class-level interface (``new``, ``model_bytes``, ``kind``, ...)
        bound to ``n_classes``: what an estimator names as its state class."""
        return _Bound(cls, n_classes)

    def __init__(self, table, w0_state, k, n_classes, solver, normalize, trainable=True):
        block = 1 + k + (state_width(solver) if trainable else 0)
        if table.ndim != 2 or not 0 <= k <= MAX_FACTORS or not 3 <= n_classes <= MAX_CLASSES \
                or table.shape[1] < n_classes * block or w0_state.shape != (n_classes, 3) \
                or solver not in SOFTMAX_SOLVERS:
            raise RuntimeError("inconsistent softmax FM tables")  # a bug, never bad input
        self._set(table=table, w0_state=w0_state, k=int(k), n_classes=int(n_classes),
                  block=block, solver=solver, normalize=bool(normalize),
                  trainable=bool(trainable))

    # ------------------------------------------------------------ building
    @staticmethod
    def _new_table(n_features, k, n_classes, solver, dtype):
        return aligned_table(n_features, n_classes * (1 + k + state_width(solver)), dtype)

    @classmethod
    def new(cls, n_features, *, k, solver, dtype, init_std, seed, n_threads, w0_state,
            normalize, n_classes, fields=None):
        """A freshly initialised model (``w0_state``: one bias record, given to
        every class)."""
        if solver not in SOFTMAX_SOLVERS:
            raise ValueError(f"multiclass classification needs solver 'adagrad', 'sgd' or "
                             f"'ftrl', got {solver!r}")
        table = cls._new_table(n_features, k, n_classes, solver, dtype)
        block = 1 + k + state_width(solver)
        _fm.fm_softmax_init_factors(table, k, block, n_classes, init_std, seed, n_threads)
        _init_blocks(table, k, n_classes, solver)
        w0 = np.tile(np.asarray(w0_state, dtype=np.float64).reshape(-1, 3)[:1], (n_classes, 1))
        return cls(table, np.ascontiguousarray(w0), k, n_classes, solver, normalize)

    @staticmethod
    def model_bytes(n_features, n_fields, k, solver, dtype, n_classes=3):
        """Bytes of the tables ``new`` allocates."""
        return n_features * table_row_bytes(n_classes * (1 + k + state_width(solver)), dtype)

    def blocks(self):
        """The table as (n_features, C, block) (a view)."""
        n = self.table.shape[0]
        return self.table[:, :self.n_classes * self.block].reshape(n, self.n_classes,
                                                                    self.block)

    def replica(self, w0_state, normalize, reuse=None):
        """A copy of these parameters with another bias and normalize (the
        candidates of a race, see FMTable.replica)."""
        if reuse is not None and reuse.table.shape == self.table.shape \
                and reuse.table.dtype == self.table.dtype:
            table = reuse.table
        else:
            table = aligned_table(*self.table.shape, self.table.dtype, zeros=False)
        copy_rows(table, self.table)
        w0 = np.tile(np.asarray(w0_state, dtype=np.float64).reshape(-1, 3)[:1],
                     (self.n_classes, 1))
        return type(self)(table, np.ascontiguousarray(w0), self.k, self.n_classes,
                          self.solver, normalize)

    def relayout(self, solver, dtype, *, ftrl_beta, learning_rate, l2_w, l2_w0):
        """This model with the optimizer state of ``solver`` in ``dtype`` (warm
        start after a change of solver or dtype): self when unchanged."""
        if solver == self.solver and self.table.dtype == dtype:
            return self
        if solver not in SOFTMAX_SOLVERS:
            raise ValueError(f"multiclass classification needs solver 'adagrad', 'sgd' or "
                             f"'ftrl', got {solver!r}")
        k, C = self.k, self.n_classes
        new = self._new_table(self.table.shape[0], k, C, solver, dtype)
        nb = new[:, :C * (1 + k + state_width(solver))].reshape(len(new), C, -1)
        nb[:, :, :1 + k] = self.blocks()[:, :, :1 + k]
        _init_blocks(new, k, C, solver)
        if solver == "ftrl":  # z consistent with the current w (n = 0)
            nb[:, :, 1 + k] = -nb[:, :, 0] * (ftrl_beta / learning_rate + l2_w)
        w0 = np.zeros((C, 3))
        w0[:, 0] = self.w0_state[:, 0]
        if solver == "adagrad":
            w0[:, 1] = 1.0
        elif solver == "ftrl":
            w0[:, 1] = -w0[:, 0] * (ftrl_beta / learning_rate + l2_w0)
        return SoftmaxFMTable(new, w0, k, C, solver, self.normalize)

    # ------------------------------------------------------------ views
    @property
    def w0(self):
        """Per-class biases, shape (n_classes,) (a view)."""
        return self.w0_state[:, 0]

    @property
    def w(self):
        """Linear weights, shape (n_features, n_classes) (a view)."""
        return self.blocks()[:, :, 0]

    def factors(self):
        """Factors, shape (n_features, n_classes, k) (a view)."""
        return self.blocks()[:, :, 1:1 + self.k]

    # ------------------------------------------------------------ training
    def train_epoch(self, Xc, y, sw, order, hyper, n_threads, rng):
        return _fm.fm_softmax_train_epoch(
            Xc.data, Xc.indices, Xc.indptr, y, sw, order, self.table, self.w0_state,
            n_factors=self.k, block=self.block, optimizer=OPTIMIZERS[hyper.optimizer],
            fit_intercept=hyper.fit_intercept, normalize=self.normalize,
            learning_rate=hyper.learning_rate, l2_w0=hyper.l2_w0, l2_w=hyper.l2_w,
            l2_v=hyper.l2_v, l1=hyper.l1, ftrl_beta=hyper.ftrl_beta, n_threads=n_threads)

    def finite(self, n_threads):
        return _utils.all_finite(self.table, self.n_classes * self.block, n_threads)

    def snapshot(self, into=None):
        if into is None:
            return self.table.copy(), self.w0_state.copy()
        copy_rows(into[0], self.table)
        into[1][...] = self.w0_state
        return into

    def restore(self, snap):
        self.table[...] = snap[0]
        self.w0_state[...] = snap[1]

    def clone(self):
        return SoftmaxFMTable(self.table.copy(), self.w0_state.copy(), self.k, self.n_classes,
                              self.solver, self.normalize, self.trainable)

    # ------------------------------------------------------------ scoring
    def decision(self, Xc, n_threads, shared=False):
        """Raw per-class scores of validated rows, shape (n_rows, n_classes)."""
        self.check_width(Xc)
        out = np.empty((Xc.n_rows, self.n_classes), dtype=np.float64)
        _fm.fm_softmax_predict(Xc.data, Xc.indices, Xc.indptr, self.table,
                               np.ascontiguousarray(self.w0_state[:, 0]), out,
                               n_factors=self.k, block=self.block, normalize=self.normalize,
                               n_threads=n_threads)
        return out

    # ------------------------------------------------------------ model files
    def export(self):
        k, width = self.k, state_width(self.solver)
        b = self.blocks()
        arrays = {
            "w": b[:, :, 0],
            "V": b[:, :, 1:1 + k],
            "opt_state": b[:, :, 1 + k:1 + k + width],
            "w0_state": self.w0_state,
        }
        header = {"solver": self.solver, "normalize": self.normalize,
                  "dtype": self.table.dtype.name, "n_features": int(self.table.shape[0]),
                  "n_factors": k, "n_classes": self.n_classes}
        return arrays, header

    @classmethod
    def from_file(cls, header, arrays, scoring_only=False):
        dtype = np.dtype(header["dtype"])
        n, k, solver = int(header["n_features"]), int(header["n_factors"]), header["solver"]
        C = header.get("n_classes")
        if solver not in SOFTMAX_SOLVERS or n < 1 or not 0 <= k <= MAX_FACTORS \
                or not isinstance(C, int) or not 3 <= C <= MAX_CLASSES:
            raise ValueError(f"bad solver/shape in header: {solver!r}, {n}, {k}, "
                             f"n_classes {C!r}")
        width = state_width(solver)
        check_arrays(arrays, {"w": ((n, C), dtype), "V": ((n, C, k), dtype),
                              "opt_state": ((n, C, width), dtype),
                              "w0_state": ((C, 3), np.float64)})
        lean = scoring_only and width > 0
        bw = 1 + k + (0 if lean else width)
        table = aligned_table(n, C * bw, dtype)
        blocks = table[:, :C * bw].reshape(n, C, bw)
        if not lean:
            _copy3(blocks[:, :, 1 + k:], arrays["opt_state"])
        _copy3(blocks[:, :, 0], arrays["w"])
        _copy3(blocks[:, :, 1:1 + k], arrays["V"])
        w0_state = np.array(as_array(arrays["w0_state"]), dtype=np.float64)
        return cls(table, w0_state, k, C, solver, bool(header["normalize"]),
                   trainable=not lean)


class _Bound:
    """SoftmaxFMTable's class interface with ``n_classes`` filled in."""

    def __init__(self, cls, n_classes):
        self._cls, self.n_classes = cls, int(n_classes)
        for name in ("kind", "dtypes", "uses_fields", "coordinate_solvers", "max_classes",
                     "from_file"):
            setattr(self, name, getattr(cls, name))

    def new(self, n_features, **kw):
        return self._cls.new(n_features, n_classes=self.n_classes, **kw)

    def model_bytes(self, n_features, n_fields, k, solver, dtype):
        return self._cls.model_bytes(n_features, n_fields, k, solver, dtype,
                                     n_classes=self.n_classes)


def _copy3(dst, src):
    """``dst[...] = src`` for an array of a model file (read a block of rows
    at a time) or an in-memory array."""
    if hasattr(src, "for_each_block"):
        def put(i, j, block):
            dst[i:j] = block
        src.for_each_block(put)
    else:
        dst[...] = src


def _init_blocks(table, k, n_classes, solver):
    """Optimizer state of every class block (as FMTable's)."""
    width = state_width(solver)
    if not width:
        return
    b = table[:, :n_classes * (1 + k + width)].reshape(len(table), n_classes, -1)
    for c in range(n_classes):
        _init_optimizer_state(b[:, c, :], k, solver)
