"""FFMTable: the parameters of a field-aware FM, packed records included.

State: ``lin`` (n_features, lw) = [w, optimizer state]; ``V`` of shape
(n_features, row width), per (feature, field q) a record of ks entries
[v (kp coordinates, k used), AdaGrad accumulator] at ``rec_off[q]`` of the
feature's row (see ``layout``); ``w0_state``.  The kernels take ``foff``
(the record offset of each column's field) with ks = 1.  A float16 table is
passed to the kernels as its uint16 bits (``kernel_V``).

Fields: per column (``fields``, the fast path), or per stored entry when the
validated input carries them (``Xc.fields``: the kernels then take
``rec_off`` of each entry's field).  A state fitted on per-entry fields that
put a feature under several fields (or imported from xLearn without fields)
has ``entry`` set: its per-column ``fields`` do not describe it, so it scores
only input with per-entry fields.
"""
import numpy as np

from .. import _ffm, _utils
from .._fields import field_count
from .base import (ADAGRAD_INIT, LOSSES, MAX_FACTORS, OPTIMIZERS, ModelState, aligned_table,
                   LazyRows, TableShape, as_array, copy_rows, each_block, keep_layout)

_LIN_WIDTH = {"sgd": 1, "adagrad": 2, "ftrl": 3}
_PER_LINE = 3  # packed float16 AdaGrad records per 64-byte line (see layout)


def lin_width(solver):
    return _LIN_WIDTH[solver]


def padded_k(k, dtype="float32"):
    """Stored coordinates per vector: k rounded up to 4 (to 8 for float16)."""
    step = 8 if np.dtype(dtype) == np.float16 else 4
    return max(step, -(-k // step) * step)


def record_size(kp, solver, dtype):
    """Table entries per (feature, field) vector: kp, plus the AdaGrad slot
    (one entry; two float16 entries holding a float32 for dtype float16)."""
    if solver == "sgd":
        return kp
    return kp + (2 if np.dtype(dtype) == np.float16 else 1)


def lin_dtype(dtype):
    """The linear table is float32 when the factors are stored as float16."""
    return np.dtype(np.float32) if np.dtype(dtype) == np.float16 else np.dtype(dtype)


def lin_table(n_features, solver, dtype):
    """Zeroed linear table (n_features, lw) = [w, optimizer state], rows not
    padded: a row touches one record per feature, so a compact table (8 bytes
    per feature with AdaGrad) keeps more of them in cache than 64-byte rows."""
    return np.zeros((n_features, lin_width(solver)), dtype=lin_dtype(dtype))


def layout(n_fields, ks, dtype):
    """Where the records of a factor-table row are: (offset of field q's
    record, in table entries, for each q; row width).

    Records are contiguous, except the 20-byte records of a float16 AdaGrad
    table (8 halves + a float32 accumulator), which are packed 3 per 64-byte
    cache line (4 bytes of padding each) so that no record straddles two
    lines: a straddling vector costs split loads and stores in every update
    (about 5% of a Criteo-shaped epoch), for the same number of lines a row.
    """
    dt = np.dtype(dtype)
    q = np.arange(n_fields, dtype=np.int64)
    if dt == np.float16 and ks * dt.itemsize == 20:
        line, per = 64 // dt.itemsize, _PER_LINE
        return (q // per * line + q % per * ks).astype(np.int32), -(-n_fields // per) * line
    return (q * ks).astype(np.int32), n_fields * ks


def row_width(n_fields, ks, dtype):
    """The row width layout gives, without building its arrays."""
    dt = np.dtype(dtype)
    if dt == np.float16 and ks * dt.itemsize == 20:
        return -(-n_fields // _PER_LINE) * (64 // dt.itemsize)
    return n_fields * ks


def contiguous(rec_off, ks):
    """True when field q's record is at q * ks (no packing)."""
    return np.array_equal(rec_off, np.arange(len(rec_off)) * ks)


def _record_views(V, rec_off, n_fields, ks):
    """[(view of V of shape (n, c, ks), fields it holds)] covering every record:
    one view for a contiguous layout, one per slot of a cache line for a
    packed one (field q in slot q % _PER_LINE of line q // _PER_LINE)."""
    n = V.shape[0]
    if n_fields == 0:
        return []
    if contiguous(rec_off, ks):
        return [(V[:, :n_fields * ks].reshape(n, n_fields, ks), slice(None))]
    line, per = 64 // V.itemsize, _PER_LINE
    lines = V.view()
    lines.shape = (n, V.shape[1] // line, line)  # raises rather than copy
    out = []
    for r in range(per):
        c = len(range(r, n_fields, per))
        if c:
            out.append((lines[:, :c, r * ks:(r + 1) * ks], slice(r, None, per)))
    return out


def get_records(V, rec_off, n_fields, ks, width=None):
    """The records as a contiguous (n, n_fields, width) copy (width <= ks:
    the first entries of each record)."""
    width = ks if width is None else width
    out = np.empty((V.shape[0], n_fields, width), dtype=V.dtype)
    for view, qs in _record_views(V, rec_off, n_fields, ks):
        copy_rows(out[:, qs, :], view[:, :, :width])
    return out


def set_records(V, rec_off, n_fields, ks, src):
    """Write (n, n_fields, ks) records ``src`` into the table V."""
    for view, qs in _record_views(V, rec_off, n_fields, ks):
        copy_rows(view, src[:, qs, :])


def _max_nnz(Xc):
    return int(np.diff(Xc.indptr).max()) if Xc.n_rows else 0


class FFMTable(TableShape, ModelState):
    """Tables of a field-aware FM (see the module docstring)."""
    _rows = "V"  # TableShape: one V row per feature

    kind = "ffm"
    dtypes = ("float32", "float64", "float16")
    uses_fields = True
    coordinate_solvers = False  # als / mcmc are implemented for FM tables only

    def __init__(self, lin, V, w0_state, fields, n_fields, k, ks, solver, normalize,
                 trainable=True, entry=False):
        kp = padded_k(k, V.dtype)
        rec_off, width = layout(n_fields, ks, V.dtype)
        foff = np.ascontiguousarray(rec_off[fields], dtype=np.int32)
        n = V.shape[0]
        # what the scoring kernel relies on: one record offset per column,
        # every record inside a row of the factor table
        if V.ndim != 2 or lin.ndim != 2 or lin.shape[0] != n or lin.shape[1] < 1 \
                or V.shape[1] < width or foff.shape != (n,) or w0_state.shape != (3,) \
                or not 1 <= kp <= MAX_FACTORS + 8 \
                or (n and (int(foff.min()) < 0 or int(foff.max()) + kp > V.shape[1])):
            raise RuntimeError("inconsistent FFM tables")  # a bug, never bad input
        self._set(lin=lin, V=V, w0_state=w0_state, fields=fields, n_fields=int(n_fields),
                  k=int(k), kp=kp, ks=int(ks), rec_off=rec_off, row_width=int(width),
                  foff=foff, solver=solver, normalize=bool(normalize),
                  trainable=bool(trainable), entry=bool(entry))

    # ------------------------------------------------------------ building
    @classmethod
    def new(cls, n_features, *, k, solver, dtype, init_std, seed, n_threads, w0_state,
            normalize, fields):
        n_fields = field_count(fields)
        entry = bool(getattr(fields, "entry", False))
        fields = np.ascontiguousarray(fields, dtype=np.int32).view(np.ndarray)
        kp = padded_k(k, dtype)
        ks = record_size(kp, solver, dtype)
        rec_off, width = layout(n_fields, ks, dtype)
        nbytes = n_features * width * np.dtype(dtype).itemsize
        try:
            # zeroed (free for a large table: fresh pages are zero), so that the
            # padding between packed records is 0; ffm_init_factors writes the records
            V = aligned_table(n_features, width, dtype)
        except MemoryError as exc:
            raise MemoryError(f"cannot allocate the FFM factor table ({nbytes / 2**30:.1f} GiB "
                              f"for {n_features} features x {n_fields} fields x {k} "
                              "factors)") from exc
        _ffm.ffm_init_factors(V.view(np.uint16) if V.dtype == np.float16 else V, n_fields, k,
                              kp, ks, init_std, ADAGRAD_INIT, seed, n_threads, rec_off)
        lin = lin_table(n_features, solver, dtype)
        if solver == "adagrad":
            lin[:, 1] = ADAGRAD_INIT
        return cls(lin, V, w0_state, fields, n_fields, k, ks, solver, normalize, entry=entry)

    @staticmethod
    def model_bytes(n_features, n_fields, k, solver, dtype):
        """Bytes of the factor and linear tables ``new`` allocates."""
        k = max(1, k)
        dtype = np.dtype(dtype)
        ks = record_size(padded_k(k, dtype), solver, dtype)
        lw = lin_width(solver) if solver in _LIN_WIDTH else 1
        return n_features * (row_width(max(1, n_fields or 1), ks, dtype) * dtype.itemsize
                             + lw * lin_dtype(dtype).itemsize)

    def replica(self, w0_state, normalize, reuse=None):
        """A copy of these parameters with another bias record and normalize
        (see FMTable.replica); ``reuse``: a state of the same layout whose
        tables are overwritten instead of allocating them."""
        if reuse is not None and reuse.V.shape == self.V.shape \
                and reuse.V.dtype == self.V.dtype and reuse.lin.shape == self.lin.shape:
            lin, V = reuse.lin, reuse.V
        else:
            lin = np.empty_like(self.lin)
            V = aligned_table(*self.V.shape, self.V.dtype, zeros=False)
        lin[...] = self.lin
        copy_rows(V, self.V)
        return FFMTable(lin, V, w0_state, self.fields, self.n_fields, self.k, self.ks,
                        self.solver, normalize, entry=self.entry)

    def relayout(self, solver, dtype, **hyper):
        """Warm start: an FFM keeps its solver and dtype (self), else an error."""
        return keep_layout(self, solver, dtype)

    # ------------------------------------------------------------ views
    @property
    def half(self):
        return self.V.dtype == np.float16

    @property
    def kernel_V(self):
        """The factor table as the kernels take it (float16 as its uint16 bits)."""
        return self.V.view(np.uint16) if self.V.dtype == np.float16 else self.V

    @property
    def w0(self):
        return float(self.w0_state[0])

    @property
    def w(self):
        return self.lin[:, 0]

    def factors(self):
        """Factors, shape (n_features, n_fields, k): a view, or a read-only
        copy for packed (float16 AdaGrad) records."""
        V = self.V
        item = V.itemsize
        if not contiguous(self.rec_off, self.ks):
            out = get_records(V, self.rec_off, self.n_fields, self.ks, self.k)
            out.flags.writeable = False
            return out
        return np.lib.stride_tricks.as_strided(
            V, shape=(V.shape[0], self.n_fields, self.k),
            strides=(V.strides[0], self.ks * item, item), writeable=V.flags.writeable)

    # ------------------------------------------------------------ training
    def train_epoch(self, Xc, y, sw, order, hyper, n_threads, rng):
        # float16: seeds the stochastic rounding of the updates (drawn only then,
        # so that float32/float64 fits keep their row-order stream)
        seed = int(rng.integers(2**63)) if self.half else 0
        ef = self._entry_fields(Xc)
        return _ffm.ffm_train_epoch(
            Xc.data, Xc.indices, Xc.indptr, y, sw, order, self.foff, self.lin,
            self.kernel_V, self.w0_state, k=self.k, kp=self.kp, ks=1,
            loss=LOSSES[hyper.loss], optimizer=OPTIMIZERS[hyper.optimizer],
            fit_intercept=hyper.fit_intercept, normalize=self.normalize,
            learning_rate=hyper.learning_rate, l2_w0=hyper.l2_w0, l2_w=hyper.l2_w,
            l2_v=hyper.l2_v, l1=hyper.l1, ftrl_beta=hyper.ftrl_beta, n_threads=n_threads,
            max_nnz=_max_nnz(Xc), seed=seed, entry_fields=ef,
            rec_off=None if ef is None else self.rec_off)

    def finite(self, n_threads):
        if self.half:
            V_ok = _ffm.ffm_half_finite(self.kernel_V, self.n_fields, self.kp, self.ks,
                                        self.rec_off, n_threads)
        else:
            V_ok = _utils.all_finite(self.V, self.row_width, n_threads)
        return _utils.all_finite(self.lin, 1, n_threads) and V_ok

    def snapshot(self, into=None):
        """Copies of the parameters; ``into``: an earlier snapshot of this
        state whose arrays are overwritten (no allocation)."""
        if into is None:
            return self.lin.copy(), self.V.copy(), self.w0_state.copy()
        into[0][...] = self.lin
        copy_rows(into[1], self.V)
        into[2][...] = self.w0_state
        return into

    def clone(self):
        """An independent, trainable copy in fresh aligned tables (see FMTable.clone)."""
        V = aligned_table(self.V.shape[0], self.V.shape[1], self.V.dtype, zeros=False)
        V[...] = self.V
        return FFMTable(self.lin.copy(), V, np.array(self.w0_state, dtype=np.float64),
                        self.fields, self.n_fields, self.k, self.ks, self.solver,
                        self.normalize, entry=self.entry)

    def take_rows(self, rows):
        """The model restricted to the features ``rows`` (see FMTable.take_rows)."""
        V = aligned_table(len(rows), self.V.shape[1], self.V.dtype, zeros=False)
        V[...] = self.V[rows]
        return FFMTable(self.lin[rows], V, np.array(self.w0_state, dtype=np.float64),
                        self.fields[rows], self.n_fields, self.k, self.ks, self.solver,
                        self.normalize, entry=self.entry)

    def mix_tables(self):
        """Per-row tables for parameter mixing (see FMTable.mix_tables): lin
        [w, G] or [w, z, n]; V's records [v (kp), G].  float16 records (with
        their float32 accumulators packed in two halves) are not mixed."""
        if self.half:
            raise ValueError("parameter mixing needs dtype float32 or float64 (float16 "
                             "factor records are not supported)")
        lw = lin_width(self.solver)
        avg = np.zeros(lw, bool)
        avg[0] = True
        ftrl = None
        if self.solver == "ftrl":
            avg[0] = False
            ftrl = (0, 1, 2)
        vcols = self.row_width
        vavg = np.ones(vcols, bool)
        if self.solver != "sgd":
            vavg[self.rec_off + self.kp] = False  # the AdaGrad slot of each record
        return [("lin", self.lin, lw, avg, ~avg, ftrl),
                ("V", self.V, vcols, vavg, ~vavg, None)]

    def restore(self, snap):
        self.lin[...] = snap[0]
        self.V[...] = snap[1]
        self.w0_state[...] = snap[2]

    # ------------------------------------------------------------ scoring
    def decision(self, Xc, n_threads, shared=False):
        self.check_width(Xc)
        ef = self._entry_fields(Xc)
        out = np.empty(Xc.n_rows, dtype=np.float64)
        _ffm.ffm_predict(Xc.data, Xc.indices, Xc.indptr, self.foff, self.lin, self.kernel_V,
                         w0=float(self.w0_state[0]), kp=self.kp, ks=1,
                         normalize=self.normalize, out=out, n_threads=n_threads,
                         max_nnz=_max_nnz(Xc), entry_fields=ef,
                         rec_off=None if ef is None else self.rec_off)
        return out

    def _entry_fields(self, Xc):
        """The per-entry field ids of Xc (None: the per-column fast path); an
        ``entry`` state refuses input without them."""
        ef = getattr(Xc, "fields", None)
        if ef is None:
            if self.entry:
                raise ValueError(
                    "this FFM model was fitted (or imported from xLearn) with per-entry "
                    "fields, where a feature may belong to several fields: score it with "
                    "fields= (one field id per stored entry of X, e.g. from "
                    "cfm.load_libffm(path, entry_fields=True)) or on a libffm file")
            return None
        return ef

    # ------------------------------------------------------------ model files
    def export(self):
        """The file holds records contiguously, (n_features, n_fields * ks),
        written a block of rows at a time (LazyRows)."""
        nf, ks, V, rec_off = self.n_fields, self.ks, self.V, self.rec_off
        Vout = LazyRows((V.shape[0], nf * ks), V.dtype,
                          lambda i, j: get_records(V[i:j], rec_off, nf, ks).reshape(j - i, nf * ks))
        arrays = {"lin": self.lin[:, :lin_width(self.solver)],
                  "V": Vout, "w0_state": self.w0_state, "fields": self.fields}
        header = {"solver": self.solver, "normalize": self.normalize,
                  "dtype": V.dtype.name, "n_features": int(V.shape[0]),
                  "n_factors": int(self.k), "n_fields": int(nf)}
        if self.entry:
            header["entry_fields"] = True
        return arrays, header

    @classmethod
    def from_file(cls, header, arrays, scoring_only=False):
        dtype = np.dtype(header["dtype"])
        n, k, nf = int(header["n_features"]), int(header["n_factors"]), int(header["n_fields"])
        solver = header["solver"]
        if solver not in _LIN_WIDTH or n < 1 or not 1 <= k <= MAX_FACTORS or nf < 1:
            raise ValueError(f"bad solver/shape in header: {solver!r}, {n}, {k}, {nf}")
        kp = padded_k(k, dtype)
        ks = record_size(kp, solver, dtype)
        expect = {"lin": ((n, lin_width(solver)), lin_dtype(dtype)), "V": ((n, nf * ks), dtype),
                  "w0_state": ((3,), np.float64), "fields": ((n,), np.int32)}
        for name, (shape, dt) in expect.items():
            if name not in arrays:
                raise ValueError(f"array {name!r} is missing")
            if arrays[name].shape != shape or arrays[name].dtype != dt:
                raise ValueError(f"array {name!r} has shape {arrays[name].shape} and dtype "
                                 f"{arrays[name].dtype}, expected {shape} and {np.dtype(dt)}")
        fields = np.ascontiguousarray(as_array(arrays["fields"]), dtype=np.int32)
        if fields.min() < 0 or fields.max() >= nf:
            raise ValueError("field ids in the file are out of range")
        lin = lin_table(n, solver, dtype)
        copy_rows(lin[:, :lin_width(solver)], arrays["lin"])
        ks_file = ks
        if scoring_only:
            ks = kp  # scoring only: the vectors without their AdaGrad slots
        rec_off, width = layout(nf, ks, dtype)
        # zeroed (free for a large table), so that any padding is 0
        V = aligned_table(n, width, dtype)
        # the file's records, a block of rows at a time as they are read
        each_block(arrays["V"], lambda i, j, rows: set_records(
            V[i:j], rec_off, nf, ks, rows.reshape(j - i, nf, ks_file)[:, :, :ks]))
        w0_state = np.array(as_array(arrays["w0_state"]), dtype=np.float64)
        return cls(lin, V, w0_state, fields, nf, k, ks, solver, bool(header["normalize"]),
                   trainable=not scoring_only, entry=header.get("entry_fields") is True)
