"""FwFMTable: the parameters of a field-weighted FM (Pan et al., WWW 2018).

    y(x) = w0 + sum_i w_i x_i + sum_{i<j} r_{F(i)F(j)} <v_i, v_j> x_i x_j

One factor vector per feature, in the FM table layout (``table`` of shape
(n_features, stride): [w, v_0..v_{k-1}, optimizer state], see
cfm/_state/fm.py), ``w0_state``, the field of each column ``fields``, and
the symmetric field-pair weights ``R`` (n_fields, n_fields), float64, with
their AdaGrad accumulators ``R_acc`` (unused by sgd).  R starts at 1 (an
FM).  Kernels: src/cfm/_fwfm.pyx.
"""
import numpy as np

from .. import _fm, _fwfm, _utils
from .base import (ADAGRAD_INIT, LOSSES, MAX_FACTORS, OPTIMIZERS, ModelState, TableShape,
                   TableViews, aligned_table, as_array, check_arrays, copy_rows, keep_layout,
                   table_row_bytes)
from .fm import _init_optimizer_state, new_table, state_width

_SOLVERS = ("sgd", "adagrad", "ftrl")
# Most fields: R and its accumulators take 16 * n_fields^2 bytes, and a
# training thread keeps its own copy (src/cfm/_fwfm.pyx).
MAX_FIELDS = 1024


def _max_nnz(Xc):
    return int(np.diff(Xc.indptr).max()) if Xc.n_rows else 0


def new_pair_weights(n_fields, solver):
    """(R, R_acc) a fit starts from: R = 1 (an FM), accumulators at ADAGRAD_INIT."""
    R = np.ones((n_fields, n_fields))
    R_acc = np.full((n_fields, n_fields), ADAGRAD_INIT if solver != "sgd" else 0.0)
    return R, R_acc


class FwFMTable(TableViews, TableShape, ModelState):
    """Parameters of a field-weighted FM (see the module docstring)."""

    kind = "fwfm"
    dtypes = ("float32", "float64")
    uses_fields = True
    coordinate_solvers = False  # als / mcmc are implemented for FM tables only

    def __init__(self, table, w0_state, k, solver, normalize, fields, R, R_acc,
                 trainable=True):
        n = table.shape[0]
        nf = R.shape[0] if R.ndim == 2 else -1
        if table.ndim != 2 or not 1 <= k <= MAX_FACTORS or table.shape[1] < 1 + k \
                or w0_state.shape != (3,) or solver not in _SOLVERS \
                or fields.shape != (n,) or fields.dtype != np.int32 \
                or R.shape != (nf, nf) or R_acc.shape != R.shape or nf < 1 \
                or R.dtype != np.float64 or R_acc.dtype != np.float64 \
                or (n and (int(fields.min()) < 0 or int(fields.max()) >= nf)):
            raise RuntimeError("inconsistent FwFM tables")  # a bug, never bad input
        self._set(table=table, w0_state=w0_state, k=int(k), solver=solver,
                  normalize=bool(normalize), fields=fields, n_fields=int(nf), R=R,
                  R_acc=R_acc, trainable=bool(trainable))

    # ------------------------------------------------------------ building
    @classmethod
    def new(cls, n_features, *, k, solver, dtype, init_std, seed, n_threads, w0_state,
            normalize, fields):
        """A freshly initialised model (the factors drawn as an FM's)."""
        n_fields = int(fields.max()) + 1 if fields.size else 1
        table = new_table(n_features, k, solver, dtype)
        _fm.fm_init_factors(table, k, init_std, seed, n_threads)
        _init_optimizer_state(table, k, solver)
        R, R_acc = new_pair_weights(n_fields, solver)
        return cls(table, w0_state, k, solver, normalize,
                   np.ascontiguousarray(fields, dtype=np.int32), R, R_acc)

    @staticmethod
    def model_bytes(n_features, n_fields, k, solver, dtype):
        """Bytes of the tables ``new`` allocates."""
        width = state_width(solver) if solver in _SOLVERS else 0
        nf = max(1, int(n_fields or 1))
        return n_features * (table_row_bytes(1 + k + width, dtype) + 4) + 16 * nf * nf

    def _like(self, table, w0_state, normalize, R=None, R_acc=None):
        return FwFMTable(table, w0_state, self.k, self.solver, normalize, self.fields,
                         self.R.copy() if R is None else R,
                         self.R_acc.copy() if R_acc is None else R_acc)

    def replica(self, w0_state, normalize, reuse=None):
        """A copy of these parameters with another bias record and normalize
        (see FMTable.replica); ``reuse``: a state of the same layout whose
        table is overwritten instead of allocating one."""
        if reuse is not None and reuse.table.shape == self.table.shape \
                and reuse.table.dtype == self.table.dtype:
            table = reuse.table
        else:
            table = aligned_table(*self.table.shape, self.table.dtype, zeros=False)
        copy_rows(table, self.table)
        return self._like(table, w0_state, normalize)

    def relayout(self, solver, dtype, **hyper):
        """Warm start: an FwFM keeps its solver and dtype (self), else an error."""
        return keep_layout(self, solver, dtype)

    # ------------------------------------------------------------ views
    # ------------------------------------------------------------ training
    def train_epoch(self, Xc, y, sw, order, hyper, n_threads, rng):
        return _fwfm.fwfm_train_epoch(
            Xc.data, Xc.indices, Xc.indptr, self.fields, y, sw, order, self.table, self.R,
            self.R_acc, self.w0_state, n_factors=self.k, loss=LOSSES[hyper.loss],
            optimizer=OPTIMIZERS[hyper.optimizer], fit_intercept=hyper.fit_intercept,
            normalize=self.normalize, learning_rate=hyper.learning_rate, l2_w0=hyper.l2_w0,
            l2_w=hyper.l2_w, l2_v=hyper.l2_v, l1=hyper.l1, ftrl_beta=hyper.ftrl_beta,
            n_threads=n_threads, max_nnz=_max_nnz(Xc))

    def finite(self, n_threads):
        return _utils.all_finite(self.table, 1 + self.k, n_threads) \
            and bool(np.isfinite(self.R).all())

    def snapshot(self, into=None):
        """Copies of the parameters; ``into``: an earlier snapshot of this
        state whose arrays are overwritten (no allocation)."""
        if into is None:
            return (self.table.copy(), self.w0_state.copy(), self.R.copy(),
                    self.R_acc.copy())
        copy_rows(into[0], self.table)
        into[1][...] = self.w0_state
        into[2][...] = self.R
        into[3][...] = self.R_acc
        return into

    def restore(self, snap):
        self.table[...] = snap[0]
        self.w0_state[...] = snap[1]
        self.R[...] = snap[2]
        self.R_acc[...] = snap[3]

    def clone(self):
        """An independent, trainable copy in fresh aligned tables."""
        table = new_table(self.table.shape[0], self.k, self.solver, self.table.dtype)
        table[...] = self.table
        return self._like(table, np.array(self.w0_state, dtype=np.float64), self.normalize)

    def mix_tables(self):
        raise ValueError("parameter mixing (distributed fits) is not implemented for FwFM")

    # ------------------------------------------------------------ scoring
    def decision(self, Xc, n_threads, shared=False):
        """Raw scores of validated rows (float64)."""
        self.check_width(Xc)
        out = np.empty(Xc.n_rows, dtype=np.float64)
        _fwfm.fwfm_predict(Xc.data, Xc.indices, Xc.indptr, self.fields, self.table, self.R,
                           w0=float(self.w0_state[0]), n_factors=self.k,
                           normalize=self.normalize, out=out, n_threads=n_threads,
                           max_nnz=_max_nnz(Xc))
        return out

    # ------------------------------------------------------------ model files
    def export(self):
        k, width = self.k, state_width(self.solver)
        arrays = {
            "w": self.table[:, 0],
            "V": self.table[:, 1:1 + k],
            "opt_state": self.table[:, 1 + k:1 + k + width],
            "w0_state": self.w0_state,
            "fields": self.fields,
            "R": self.R,
            "R_acc": self.R_acc,
        }
        header = {"solver": self.solver, "normalize": self.normalize,
                  "dtype": self.table.dtype.name, "n_features": int(self.table.shape[0]),
                  "n_factors": k, "n_fields": self.n_fields}
        return arrays, header

    @classmethod
    def from_file(cls, header, arrays, scoring_only=False):
        dtype = np.dtype(header["dtype"])
        n, k, solver = int(header["n_features"]), int(header["n_factors"]), header["solver"]
        nf = int(header["n_fields"])
        if solver not in _SOLVERS or n < 1 or not 1 <= k <= MAX_FACTORS \
                or not 1 <= nf <= MAX_FIELDS:
            raise ValueError(f"bad solver/shape in header: {solver!r}, {n}, {k}, {nf}")
        width = state_width(solver)
        check_arrays(arrays, {"w": ((n,), dtype), "V": ((n, k), dtype),
                              "opt_state": ((n, width), dtype),
                              "w0_state": ((3,), np.float64), "fields": ((n,), np.int32),
                              "R": ((nf, nf), np.float64), "R_acc": ((nf, nf), np.float64)})
        fields = np.ascontiguousarray(as_array(arrays["fields"]), dtype=np.int32)
        if fields.min() < 0 or fields.max() >= nf:
            raise ValueError("field ids in the file are out of range")
        R = np.array(as_array(arrays["R"]), dtype=np.float64, order="C")
        R_acc = np.array(as_array(arrays["R_acc"]), dtype=np.float64, order="C")
        if not np.array_equal(R, R.T):
            raise ValueError("the field-pair weights R are not symmetric")
        if scoring_only:  # rows [w, v] without the optimizer state
            table = aligned_table(n, 1 + k, dtype)
        else:
            table = new_table(n, k, solver, dtype)
            copy_rows(table[:, 1 + k:1 + k + width], arrays["opt_state"])
        copy_rows(table[:, 0], arrays["w"])
        copy_rows(table[:, 1:1 + k], arrays["V"])
        w0_state = np.array(as_array(arrays["w0_state"]), dtype=np.float64)
        return cls(table, w0_state, k, solver, bool(header["normalize"]), fields, R, R_acc,
                   trainable=not scoring_only)
