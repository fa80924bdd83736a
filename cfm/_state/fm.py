"""FMTable: the parameters of a factorization machine (and of a linear model, k = 0).

One record per feature in a table of shape (n_features, stride):
``[w, v_0..v_{k-1}, optimizer state, padding]``, rows padded to 64 bytes
(see src/cfm/_fm.pyx for why), and ``w0_state = [w0, a, b]`` (the bias and
its optimizer state).  The optimizer state is AdaGrad's [G_w, G_v], FTRL's
[z, n, G_v], nothing for sgd / als / mcmc.
"""
import numpy as np

from .. import _fm, _utils
from .base import (ADAGRAD_INIT, LOSSES, MAX_FACTORS, OPTIMIZERS, SOLVERS, ModelState,
                   TableShape, TableViews, aligned_table, as_array, bias_state, check_arrays,
                   copy_rows, table_row_bytes)

_STATE_WIDTH = {"sgd": 0, "adagrad": 2, "ftrl": 3, "als": 0, "mcmc": 0}


def state_width(solver):
    """Optimizer state columns after [w, v(k)]: adagrad [G_w, G_v], ftrl [z, n, G_v]."""
    return _STATE_WIDTH[solver]


def new_table(n_features, k, solver, dtype):
    """Zeroed parameter table [w, v(k), optimizer state], rows padded to 64 bytes."""
    return aligned_table(n_features, 1 + k + state_width(solver), dtype)


def _init_optimizer_state(table, k, solver):
    if solver == "adagrad":
        table[:, 1 + k:3 + k] = ADAGRAD_INIT
    elif solver == "ftrl":
        # z, n of the linear terms start at 0 (w = 0); AdaGrad state of V
        table[:, 1 + k:3 + k] = 0.0
        table[:, 3 + k] = ADAGRAD_INIT


class FMTable(TableViews, TableShape, ModelState):
    """Parameter table of an FM (see the module docstring)."""

    kind = "fm"
    dtypes = ("float32", "float64")
    uses_fields = False
    coordinate_solvers = True   # als / mcmc can train it

    def __init__(self, table, w0_state, k, solver, normalize, trainable=True):
        if table.ndim != 2 or not 0 <= k <= MAX_FACTORS or table.shape[1] < 1 + k \
                or w0_state.shape != (3,) or solver not in SOLVERS:
            raise RuntimeError("inconsistent FM tables")  # a bug, never bad input
        self._set(table=table, w0_state=w0_state, k=int(k), solver=solver,
                  normalize=bool(normalize), trainable=bool(trainable))

    # ------------------------------------------------------------ building
    @classmethod
    def new(cls, n_features, *, k, solver, dtype, init_std, seed, n_threads, w0_state,
            normalize, fields=None):
        """A freshly initialised table (``fields`` is not used by an FM)."""
        table = new_table(n_features, k, solver, dtype)
        _fm.fm_init_factors(table, k, init_std, seed, n_threads)
        _init_optimizer_state(table, k, solver)
        return cls(table, w0_state, k, solver, normalize)

    @staticmethod
    def model_bytes(n_features, n_fields, k, solver, dtype):
        """Bytes of the tables ``new`` allocates."""
        return n_features * table_row_bytes(1 + k + state_width(solver), dtype)

    def replica(self, w0_state, normalize, reuse=None):
        """A copy of these parameters with another bias record and normalize
        (the candidates of a race start from one initialisation: a copy is
        cheaper than drawing it again).  ``reuse``: a state of the same
        layout, no longer used, whose table is overwritten instead of
        allocating one."""
        if reuse is not None and reuse.table.shape == self.table.shape \
                and reuse.table.dtype == self.table.dtype:
            table = reuse.table
        else:
            table = aligned_table(*self.table.shape, self.table.dtype, zeros=False)
        copy_rows(table, self.table)
        return type(self)(table, w0_state, self.k, self.solver, normalize)

    def relayout(self, solver, dtype, *, ftrl_beta, learning_rate, l2_w, l2_w0):
        """This model with the optimizer state of ``solver`` in ``dtype``
        (warm start after a change of solver or dtype): self when unchanged."""
        if solver == self.solver and self.table.dtype == dtype and type(self) is FMTable:
            return self
        k = self.k
        new = new_table(self.table.shape[0], k, solver, dtype)
        new[:, :1 + k] = self.table[:, :1 + k]
        _init_optimizer_state(new, k, solver)
        if solver == "ftrl":  # z consistent with the current w (n = 0)
            new[:, 1 + k] = -new[:, 0] * (ftrl_beta / learning_rate + l2_w)
        w0 = bias_state(self.w0_state[0], solver, ftrl_beta=ftrl_beta,
                        learning_rate=learning_rate, l2_w0=l2_w0)
        return FMTable(new, w0, k, solver, self.normalize)

    # ------------------------------------------------------------ views
    # ------------------------------------------------------------ training
    def train_epoch(self, Xc, y, sw, order, hyper, n_threads, rng):
        return _fm.fm_train_epoch(
            Xc.data, Xc.indices, Xc.indptr, y, sw, order, self.table, self.w0_state,
            n_factors=self.k, loss=LOSSES[hyper.loss], optimizer=OPTIMIZERS[hyper.optimizer],
            fit_intercept=hyper.fit_intercept, normalize=self.normalize,
            learning_rate=hyper.learning_rate, l2_w0=hyper.l2_w0, l2_w=hyper.l2_w,
            l2_v=hyper.l2_v, l1=hyper.l1, ftrl_beta=hyper.ftrl_beta, n_threads=n_threads)

    def finite(self, n_threads):
        return _utils.all_finite(self.table, 1 + self.k, n_threads)

    def snapshot(self, into=None):
        """Copies of the parameters; ``into``: an earlier snapshot of this
        state whose arrays are overwritten (no allocation)."""
        if into is None:
            return self.table.copy(), self.w0_state.copy()
        copy_rows(into[0], self.table)
        into[1][...] = self.w0_state
        return into

    def clone(self):
        """An independent, trainable copy in fresh aligned tables (a worker of
        a distributed fit trains its own copy of the model it was sent)."""
        table = new_table(self.table.shape[0], self.k, self.solver, self.table.dtype)
        table[...] = self.table
        return FMTable(table, np.array(self.w0_state, dtype=np.float64), self.k, self.solver,
                       self.normalize)

    def take_rows(self, rows):
        """The model restricted to the features ``rows`` (a new state whose
        feature i is feature rows[i]): what a worker of a distributed fit
        needs of the model for its rows."""
        table = new_table(len(rows), self.k, self.solver, self.table.dtype)
        table[...] = self.table[rows]
        return FMTable(table, np.array(self.w0_state, dtype=np.float64), self.k, self.solver,
                       self.normalize)

    def mix_tables(self):
        """Per-row tables for parameter mixing (cfm._train.mix): [(name, array,
        columns used, averaged columns, summed columns, FTRL (w, z, n) columns
        or None)].  [w, v(k)] are averaged; AdaGrad accumulators and FTRL's z,
        n are summed increments; FTRL's w follows from z, n."""
        k, width = self.k, state_width(self.solver)
        cols = 1 + k + width
        avg = np.zeros(cols, bool)
        avg[:1 + k] = True
        ftrl = None
        if self.solver == "ftrl":
            avg[0] = False
            ftrl = (0, 1 + k, 2 + k)
        return [("table", self.table, cols, avg, ~avg if width else np.zeros(cols, bool),
                 ftrl)]

    def restore(self, snap):
        self.table[...] = snap[0]
        self.w0_state[...] = snap[1]

    # ------------------------------------------------------------ scoring
    def decision(self, Xc, n_threads, shared=False):
        """Raw scores of validated rows (float64)."""
        self.check_width(Xc)
        out = np.empty(Xc.n_rows, dtype=np.float64)
        _fm.fm_predict(Xc.data, Xc.indices, Xc.indptr, self.table, float(self.w0_state[0]),
                       self.k, self.normalize, out, n_threads)
        return out

    # ------------------------------------------------------------ model files
    def export(self):
        k, width = self.k, state_width(self.solver)
        arrays = {
            "w": self.table[:, 0],
            "V": self.table[:, 1:1 + k],
            "opt_state": self.table[:, 1 + k:1 + k + width],
            "w0_state": self.w0_state,
        }
        header = {"solver": self.solver, "normalize": self.normalize,
                  "dtype": self.table.dtype.name, "n_features": int(self.table.shape[0]),
                  "n_factors": k}
        return arrays, header

    @classmethod
    def from_file(cls, header, arrays, scoring_only=False):
        dtype = np.dtype(header["dtype"])
        n, k, solver = int(header["n_features"]), int(header["n_factors"]), header["solver"]
        if solver not in SOLVERS or n < 1 or not 0 <= k <= MAX_FACTORS:
            raise ValueError(f"bad solver/shape in header: {solver!r}, {n}, {k}")
        width = state_width(solver)
        check_arrays(arrays, {"w": ((n,), dtype), "V": ((n, k), dtype),
                              "opt_state": ((n, width), dtype),
                              "w0_state": ((3,), np.float64)})
        lean = scoring_only and solver != "mcmc"
        if lean:
            # scoring only: rows [w, v] without the optimizer state (k = 8,
            # float32: one cache line per feature instead of two)
            table = aligned_table(n, 1 + k, dtype)
        else:
            table = new_table(n, k, solver, dtype)
            copy_rows(table[:, 1 + k:1 + k + width], arrays["opt_state"])
        copy_rows(table[:, 0], arrays["w"])
        copy_rows(table[:, 1:1 + k], arrays["V"])
        w0_state = np.array(as_array(arrays["w0_state"]), dtype=np.float64)
        return cls(table, w0_state, k, solver, bool(header["normalize"]), trainable=not lean)
