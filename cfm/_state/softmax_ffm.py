"""SoftmaxFFMTable: a multiclass (softmax) field-aware factorization machine.

Parameter sharing: **none between classes**, as the softmax FM
(cfm._state.softmax): class c has its own bias w0_c, linear weights w_c and
field-aware factors V_c -- C independent FFMs coupled only by the softmax
loss::

    score_c(x) = w0_c + sum_i w_ic x_i + sum_{i<j} <v_{i,f(j),c}, v_{j,f(i),c}> x_i x_j
    P(y = c | x) = softmax(score(x))_c

Layout (see src/cfm/_ffm.pyx, "Multiclass"): ``lin`` (n_features, C * lw),
class c's [w, optimizer state] at c * lw of a feature's row; ``V``
(n_features, n_fields * C * ks): per (feature, field q) the C class records
[v (kp coordinates, k used), AdaGrad accumulator] back to back, class c's at
q * C * ks + c * ks -- the C vectors one pair of a row touches are adjacent.
``w0_state`` is (C, 3): [w0, a, b] per class.  Fields per column (``fields``)
or per stored entry (``Xc.fields``), as FFMTable.

dtype float32 or float64.  float16 (the binary FFM's default on CPUs with
F16C) is accepted as the *default* and stored as float32: the binary FFM's
float16 records and stochastic-rounding kernels are not shared by the
softmax kernels; an explicit ``dtype="float16"`` with more than two classes
is refused by the estimator.
"""
import numpy as np

from .. import _ffm, _utils
from .._fields import field_count
from .base import (ADAGRAD_INIT, MAX_FACTORS, OPTIMIZERS, ModelState, aligned_table, as_array,
                   TableShape, check_arrays, copy_rows, each_block, keep_layout,
                   table_row_bytes)
from .ffm import _max_nnz, lin_width, padded_k, record_size
from .softmax import MAX_CLASSES, SOFTMAX_SOLVERS, _Bound


def stored_dtype(dtype):
    """The dtype a softmax FFM stores for ``dtype`` (float16 -> float32)."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def _rec_off(n_fields, n_classes, ks):
    """Offset of field q's first (class 0) record in a row: q * C * ks."""
    return (np.arange(n_fields, dtype=np.int64) * n_classes * ks).astype(np.int32)


class SoftmaxFFMTable(TableShape, ModelState):
    """Per-class FFM tables of a softmax FFM (see the module docstring)."""
    _rows = "V"  # TableShape: one V row per feature

    kind = "ffm_softmax"
    # float16: the default dtype of FFM estimators, stored as float32 (see above)
    dtypes = ("float32", "float64", "float16")
    uses_fields = True
    coordinate_solvers = False
    max_classes = MAX_CLASSES

    @classmethod
    def for_classes(cls, n_classes):
        """The class-level interface bound to ``n_classes`` (see SoftmaxFMTable)."""
        return _Bound(cls, n_classes)

    def __init__(self, lin, V, w0_state, fields, n_fields, k, ks, n_classes, solver,
                 normalize, trainable=True, entry=False):
        kp = padded_k(k, V.dtype)
        C = int(n_classes)
        n = V.shape[0]
        rec_off = _rec_off(n_fields, C, ks)
        width = int(n_fields) * C * int(ks)
        foff = np.ascontiguousarray(rec_off[fields], dtype=np.int32)
        if V.ndim != 2 or lin.ndim != 2 or V.dtype not in (np.float32, np.float64) \
                or lin.dtype != V.dtype or solver not in SOFTMAX_SOLVERS \
                or not 3 <= C <= MAX_CLASSES or not 1 <= k <= MAX_FACTORS \
                or lin.shape != (n, C * lin_width(solver)) or V.shape[1] < width \
                or ks < kp or w0_state.shape != (C, 3) or foff.shape != (n,):
            raise RuntimeError("inconsistent softmax FFM tables")  # a bug, never bad input
        self._set(lin=lin, V=V, w0_state=w0_state, fields=fields, n_fields=int(n_fields),
                  k=int(k), kp=kp, ks=int(ks), n_classes=C, rec_off=rec_off,
                  row_width=width, foff=foff, solver=solver, normalize=bool(normalize),
                  trainable=bool(trainable), entry=bool(entry))

    # ------------------------------------------------------------ building
    @classmethod
    def new(cls, n_features, *, k, solver, dtype, init_std, seed, n_threads, w0_state,
            normalize, n_classes, fields):
        """A freshly initialised model (``w0_state``: one bias record, given to
        every class)."""
        if solver not in SOFTMAX_SOLVERS:
            raise ValueError(f"multiclass classification needs solver 'adagrad', 'sgd' or "
                             f"'ftrl', got {solver!r}")
        dtype = stored_dtype(dtype)
        n_fields = field_count(fields)
        entry = bool(getattr(fields, "entry", False))
        fields = np.ascontiguousarray(fields, dtype=np.int32).view(np.ndarray)
        kp = padded_k(k, dtype)
        ks = record_size(kp, solver, dtype)
        C = int(n_classes)
        V = aligned_table(n_features, n_fields * C * ks, dtype)
        # every (field, class) record is a record of a binary FFM of n_fields * C
        # fields: its init draws (independent of the thread count) serve as they are
        _ffm.ffm_init_factors(V, n_fields * C, k, kp, ks, init_std, ADAGRAD_INIT, seed,
                              n_threads, _rec_off(n_fields * C, 1, ks))
        lw = lin_width(solver)
        lin = np.zeros((n_features, C * lw), dtype=dtype)
        if solver == "adagrad":
            lin[:, 1::lw] = ADAGRAD_INIT
        w0 = np.tile(np.asarray(w0_state, dtype=np.float64).reshape(-1, 3)[:1], (C, 1))
        return cls(lin, V, np.ascontiguousarray(w0), fields, n_fields, k, ks, C, solver,
                   normalize, entry=entry)

    @staticmethod
    def model_bytes(n_features, n_fields, k, solver, dtype, n_classes=3):
        """Bytes of the tables ``new`` allocates."""
        dtype = stored_dtype(dtype)
        k = max(1, k)
        ks = record_size(padded_k(k, dtype), solver, dtype)
        lw = lin_width(solver) if solver in SOFTMAX_SOLVERS else 1
        nf = max(1, n_fields or 1)
        return n_features * (table_row_bytes(nf * n_classes * ks, dtype)
                             + n_classes * lw * dtype.itemsize)

    def replica(self, w0_state, normalize, reuse=None):
        """A copy of these parameters with another bias and normalize (the
        candidates of a race, see FMTable.replica)."""
        if reuse is not None and reuse.V.shape == self.V.shape \
                and reuse.V.dtype == self.V.dtype and reuse.lin.shape == self.lin.shape:
            lin, V = reuse.lin, reuse.V
        else:
            lin = np.empty_like(self.lin)
            V = aligned_table(*self.V.shape, self.V.dtype, zeros=False)
        lin[...] = self.lin
        copy_rows(V, self.V)
        w0 = np.tile(np.asarray(w0_state, dtype=np.float64).reshape(-1, 3)[:1],
                     (self.n_classes, 1))
        return type(self)(lin, V, np.ascontiguousarray(w0), self.fields, self.n_fields,
                          self.k, self.ks, self.n_classes, self.solver, normalize,
                          entry=self.entry)

    def relayout(self, solver, dtype, **hyper):
        """Warm start: an FFM keeps its solver and dtype (self), else an error."""
        return keep_layout(self, solver, stored_dtype(dtype))

    # ------------------------------------------------------------ views
    @property
    def w0(self):
        """Per-class biases, shape (n_classes,) (a view)."""
        return self.w0_state[:, 0]

    @property
    def w(self):
        """Linear weights, shape (n_features, n_classes) (a view)."""
        n = self.lin.shape[0]
        return self.lin.reshape(n, self.n_classes, -1)[:, :, 0]

    def records(self):
        """The factor records as (n_features, n_fields, n_classes, ks) (a view)."""
        n = self.V.shape[0]
        return self.V[:, :self.row_width].reshape(n, self.n_fields, self.n_classes, self.ks)

    def factors(self):
        """Factors, shape (n_features, n_classes, n_fields, k) (a view)."""
        V, item = self.V, self.V.itemsize
        return np.lib.stride_tricks.as_strided(
            V, shape=(V.shape[0], self.n_classes, self.n_fields, self.k),
            strides=(V.strides[0], self.ks * item, self.n_classes * self.ks * item, item),
            writeable=V.flags.writeable)

    # ------------------------------------------------------------ training
    def train_epoch(self, Xc, y, sw, order, hyper, n_threads, rng):
        ef = self._entry_fields(Xc)
        return _ffm.ffm_softmax_train_epoch(
            Xc.data, Xc.indices, Xc.indptr, y, sw, order, self.foff, self.lin, self.V,
            self.w0_state, k=self.k, kp=self.kp, ks=self.ks,
            optimizer=OPTIMIZERS[hyper.optimizer], fit_intercept=hyper.fit_intercept,
            normalize=self.normalize, learning_rate=hyper.learning_rate, l2_w0=hyper.l2_w0,
            l2_w=hyper.l2_w, l2_v=hyper.l2_v, l1=hyper.l1, ftrl_beta=hyper.ftrl_beta,
            n_threads=n_threads, max_nnz=_max_nnz(Xc), entry_fields=ef,
            rec_off=None if ef is None else self.rec_off)

    def finite(self, n_threads):
        return (_utils.all_finite(self.lin, self.lin.shape[1], n_threads)
                and _utils.all_finite(self.V, self.row_width, n_threads)
                and bool(np.isfinite(self.w0_state).all()))

    def snapshot(self, into=None):
        if into is None:
            return self.lin.copy(), self.V.copy(), self.w0_state.copy()
        into[0][...] = self.lin
        copy_rows(into[1], self.V)
        into[2][...] = self.w0_state
        return into

    def restore(self, snap):
        self.lin[...] = snap[0]
        self.V[...] = snap[1]
        self.w0_state[...] = snap[2]

    def clone(self):
        V = aligned_table(self.V.shape[0], self.V.shape[1], self.V.dtype, zeros=False)
        V[...] = self.V
        return SoftmaxFFMTable(self.lin.copy(), V, self.w0_state.copy(), self.fields,
                               self.n_fields, self.k, self.ks, self.n_classes, self.solver,
                               self.normalize, self.trainable, self.entry)

    # ------------------------------------------------------------ scoring
    def decision(self, Xc, n_threads, shared=False):
        """Raw per-class scores of validated rows, shape (n_rows, n_classes)."""
        self.check_width(Xc)
        ef = self._entry_fields(Xc)
        out = np.empty((Xc.n_rows, self.n_classes), dtype=np.float64)
        _ffm.ffm_softmax_predict(Xc.data, Xc.indices, Xc.indptr, self.foff, self.lin, self.V,
                                 np.ascontiguousarray(self.w0_state[:, 0]), out, kp=self.kp,
                                 ks=self.ks, normalize=self.normalize, n_threads=n_threads,
                                 max_nnz=_max_nnz(Xc), entry_fields=ef,
                                 rec_off=None if ef is None else self.rec_off)
        return out

    def _entry_fields(self, Xc):
        """As FFMTable._entry_fields: per-entry field ids of Xc, or None."""
        ef = getattr(Xc, "fields", None)
        if ef is None and self.entry:
            raise ValueError(
                "this FFM model was fitted with per-entry fields, where a feature may belong "
                "to several fields: score it with fields= (one field id per stored entry of "
                "X) or on a libffm file")
        return ef

    # ------------------------------------------------------------ model files
    def export(self):
        n, C = self.V.shape[0], self.n_classes
        arrays = {"lin": self.lin.reshape(n, C, -1), "V": self.records(),
                  "w0_state": self.w0_state, "fields": self.fields}
        header = {"solver": self.solver, "normalize": self.normalize,
                  "dtype": self.V.dtype.name, "n_features": int(n), "n_factors": self.k,
                  "n_fields": self.n_fields, "n_classes": C}
        if self.entry:
            header["entry_fields"] = True
        return arrays, header

    @classmethod
    def from_file(cls, header, arrays, scoring_only=False):
        dtype = np.dtype(header["dtype"])
        n, k, nf = int(header["n_features"]), int(header["n_factors"]), int(header["n_fields"])
        solver, C = header["solver"], header.get("n_classes")
        if solver not in SOFTMAX_SOLVERS or dtype not in (np.float32, np.float64) or n < 1 \
                or not 1 <= k <= MAX_FACTORS or nf < 1 or not isinstance(C, int) \
                or not 3 <= C <= MAX_CLASSES:
            raise ValueError(f"bad solver/dtype/shape in header: {solver!r}, {dtype}, {n}, "
                             f"{k}, {nf}, n_classes {C!r}")
        kp = padded_k(k, dtype)
        ks_file = record_size(kp, solver, dtype)
        lw = lin_width(solver)
        check_arrays(arrays, {"lin": ((n, C, lw), dtype), "V": ((n, nf, C, ks_file), dtype),
                              "w0_state": ((C, 3), np.float64), "fields": ((n,), np.int32)})
        fields = np.ascontiguousarray(as_array(arrays["fields"]), dtype=np.int32)
        if fields.min() < 0 or fields.max() >= nf:
            raise ValueError("field ids in the file are out of range")
        lin = np.empty((n, C * lw), dtype=dtype)
        copy_rows(lin.reshape(n, C, lw), arrays["lin"])
        ks = kp if scoring_only else ks_file  # scoring only: no AdaGrad slots
        V = aligned_table(n, nf * C * ks, dtype)
        recs = V[:, :nf * C * ks].reshape(n, nf, C, ks)

        def put(i, j, rows):
            recs[i:j] = rows[..., :ks]

        each_block(arrays["V"], put)
        w0_state = np.array(as_array(arrays["w0_state"]), dtype=np.float64)
        return cls(lin, V, w0_state, fields, nf, k, ks, C, solver, bool(header["normalize"]),
                   trainable=not scoring_only, entry=header.get("entry_fields") is True)
