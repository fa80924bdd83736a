"""Field-aware factorization machines: :class:`FFMClassifier`, :class:`FFMRegressor`.

    y(x) = w0 + sum_i w_i x_i + sum_{i<j} <v_{i,f(j)}, v_{j,f(i)}> x_i x_j

Every column j belongs to a field f(j) (``fields``, one id per column, given
to ``fit`` or read from a libffm file), and every feature keeps one factor
vector per field.  Same solvers, options, validation, reproducibility
contract and model files as the FM estimators (see :mod:`cfm.models`).
"""
import numpy as np

from . import _ffm, _utils
from ._base import (ADAGRAD_INIT, LOSSES, MAX_FACTORS, SOLVERS, _aligned_table, _as_array,
                    _check_width, _copy_rows, _each_block, _Tables)
from ._validation import effective_n_threads
from .models import FMClassifier, FMRegressor


def _lin_width(solver):
    return {"sgd": 1, "adagrad": 2, "ftrl": 3}[solver]


def _padded_k(k, dtype="float32"):
    """Stored coordinates per vector: k rounded up to 4 (to 8 for float16)."""
    step = 8 if np.dtype(dtype) == np.float16 else 4
    return max(step, -(-k // step) * step)


def _record_size(kp, solver, dtype):
    """Table entries per (feature, field) vector: kp, plus the AdaGrad slot
    (one entry; two float16 entries holding a float32 for dtype float16)."""
    if solver == "sgd":
        return kp
    return kp + (2 if np.dtype(dtype) == np.float16 else 1)


def _lin_table(n_features, solver, dtype):
    """Zeroed linear table (n_features, lw) = [w, optimizer state], rows not
    padded: a row touches one record per feature, so a compact table (8 bytes
    per feature with AdaGrad) keeps more of them in cache than 64-byte rows."""
    return np.zeros((n_features, _lin_width(solver)), dtype=_lin_dtype(dtype))


_PER_LINE = 3  # packed float16 AdaGrad records per 64-byte line (see _layout)


def _layout(n_fields, ks, dtype):
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


def _row_width(n_fields, ks, dtype):
    """The row width _layout gives, without building its arrays."""
    dt = np.dtype(dtype)
    if dt == np.float16 and ks * dt.itemsize == 20:
        return -(-n_fields // _PER_LINE) * (64 // dt.itemsize)
    return n_fields * ks


def _contiguous(rec_off, ks):
    """True when field q's record is at q * ks (no packing)."""
    return np.array_equal(rec_off, np.arange(len(rec_off)) * ks)


def _record_views(V, rec_off, n_fields, ks):
    """[(view of V of shape (n, c, ks), fields it holds)] covering every record:
    one view for a contiguous layout, one per slot of a cache line for a
    packed one (field q in slot q % _PER_LINE of line q // _PER_LINE)."""
    n = V.shape[0]
    if n_fields == 0:
        return []
    if _contiguous(rec_off, ks):
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


def _get_records(V, rec_off, n_fields, ks, width=None):
    """The records as a contiguous (n, n_fields, width) copy (width <= ks:
    the first entries of each record)."""
    width = ks if width is None else width
    out = np.empty((V.shape[0], n_fields, width), dtype=V.dtype)
    for view, qs in _record_views(V, rec_off, n_fields, ks):
        _copy_rows(out[:, qs, :], view[:, :, :width])
    return out


def _set_records(V, rec_off, n_fields, ks, src):
    """Write (n, n_fields, ks) records ``src`` into the table V."""
    for view, qs in _record_views(V, rec_off, n_fields, ks):
        _copy_rows(view, src[:, qs, :])


def _lin_dtype(dtype):
    """The linear table is float32 when the factors are stored as float16."""
    return np.dtype(np.float32) if np.dtype(dtype) == np.float16 else np.dtype(dtype)


class _FFMMixin:
    """FFM state and kernel hooks on top of the FM estimators' machinery.

    State: ``_lin`` (n_features, lw) = [w, optimizer state]; ``_V`` of shape
    (n_features, row width), per (feature, field q) a record of ks entries
    [v (kp coordinates, k used), AdaGrad accumulator] at ``_rec_off[q]`` of
    the feature's row (see _layout); ``_w0_state``.  The kernels take
    ``_foff`` (the record offset of each column's field) with ks = 1.
    """

    _model_kind = "ffm"
    _table_dtypes = ("float32", "float64", "float16")

    def fit(self, X, y=None, fields=None, sample_weight=None, eval_set=None,
            block_rows=100_000):
        """Fit the model.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        fields : array-like of int, shape (n_features,)
            Field id of each column (0 .. n_fields-1; -1, as cfm.load_libffm
            reports for a column that never occurs, counts as 0). Required unless the
            model is warm-started (then it must equal ``fields_``) or X is a
            libffm file / cache (then they come from the file).
        sample_weight, eval_set
            As for :meth:`cfm.FMClassifier.fit` (eval_set uses ``fields``).
        """
        return self._fit(X, y, sample_weight, eval_set, fields=fields, block_rows=block_rows)

    # ------------------------------------------------------------ fields
    def _check_fields(self, fields, n_features, reset):
        if fields is None:
            if not reset and hasattr(self, "fields_"):
                return self.fields_
            raise ValueError(
                f"{type(self).__name__}.fit needs fields: one field id per column "
                "(e.g. from cfm.load_libffm)")
        arr = np.asarray(fields)
        if arr.ndim != 1 or arr.shape[0] != n_features:
            raise ValueError(f"fields must have one entry per column: expected shape "
                             f"({n_features},), got {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            if not (np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr))
                    and np.all(arr == np.round(arr))):
                raise ValueError(f"fields must be finite integers, got dtype {arr.dtype}")
            if np.abs(arr).max() >= 2**31 - 1:
                raise ValueError("field ids must be >= 0 and < 2**31 - 1")
        arr = arr.astype(np.int64)
        if arr.size and arr.min() < -1:
            j = int(np.argmin(arr))
            raise ValueError(f"fields[{j}] = {int(arr[j])}: field ids must be >= 0 (or -1 "
                             "for a column that never occurs)")
        # -1 marks a column absent from the data (cfm.load_libffm reports such
        # columns so); it takes field 0, which only matters if it ever occurs.
        arr = np.maximum(arr, 0)
        if arr.size and arr.max() >= 2**31 - 1:
            raise ValueError("field ids must be < 2**31 - 1")
        arr = np.ascontiguousarray(arr, dtype=np.int32)
        if not reset and hasattr(self, "fields_") and not np.array_equal(arr, self.fields_):
            raise ValueError("fields differ from the fields the model was fitted with "
                             "(fields_); refit with warm_start=False")
        return arr

    # ------------------------------------------------------------ state
    def _init_state(self, n_features, y, sample_weight, dtype, fields=None):
        init_seed = self._seed()
        self._scoring_only = False  # a fresh fit of a model loaded for scoring
        k = int(self.n_factors)
        if k < 1:
            raise ValueError(f"{type(self).__name__} needs n_factors >= 1 (got {k}); for a "
                             "linear model use FMClassifier/FMRegressor with n_factors=0")
        n_fields = int(fields.max()) + 1 if fields.size else 1
        # before any array of n_fields entries (_layout) is built
        self._check_model_size(n_features, n_fields, dtype)
        self.fields_ = fields
        self.n_fields_ = n_fields
        self._k, self._kp = k, _padded_k(k, dtype)
        self._solver = self.solver
        self._ks = _record_size(self._kp, self.solver, dtype)
        self._set_layout(*_layout(self.n_fields_, self._ks, dtype))
        nbytes = n_features * self._row_width * np.dtype(dtype).itemsize
        try:
            # zeroed (free for a large table: fresh pages are zero), so that the
            # padding between packed records is 0; ffm_init_factors writes the records
            self._V = _aligned_table(n_features, self._row_width, dtype)
        except MemoryError as exc:
            raise MemoryError(f"cannot allocate the FFM factor table ({nbytes / 2**30:.1f} GiB "
                              f"for {n_features} features x {self.n_fields_} fields x {k} "
                              "factors)") from exc
        _ffm.ffm_init_factors(self._kernel_V, self.n_fields_, k, self._kp, self._ks, self._init_std(),
                              ADAGRAD_INIT, init_seed, effective_n_threads(self.n_jobs),
                              self._rec_off)
        self._lin = _lin_table(n_features, self.solver, dtype)
        if self.solver == "adagrad":
            self._lin[:, 1] = ADAGRAD_INIT
        self._init_common(n_features, y, sample_weight)
        self._publish()

    def _publish(self):
        """Publish the tables for prediction (see cfm._base._Tables), after
        checking what the scoring kernel relies on: one record offset per
        column, every record inside a row of the factor table."""
        V, lin, foff, kp = self._V, self._lin, self._foff, self._kp
        n = V.shape[0]
        if V.ndim != 2 or lin.ndim != 2 or lin.shape[0] != n or lin.shape[1] < 1 \
                or foff.shape != (n,) or foff.dtype != np.int32 or self._w0_state.shape != (3,) \
                or not 1 <= kp <= MAX_FACTORS + 8 \
                or (n and (int(foff.min()) < 0 or int(foff.max()) + kp > V.shape[1])):
            raise RuntimeError("inconsistent FFM tables")  # a bug, never bad input
        self._tables = _Tables(n_features=n, foff=foff, lin=lin, V=V, w0_state=self._w0_state,
                               kp=kp, normalize=bool(self._normalize), samples=None)
        return self._tables

    def _model_bytes(self, n_features, n_fields, dtype):
        """Bytes of the factor and linear tables."""
        k = max(1, int(self.n_factors))
        dtype = np.dtype(dtype)
        ks = _record_size(_padded_k(k, dtype), self.solver, dtype)
        lw = _lin_width(self.solver) if self.solver in ("sgd", "adagrad", "ftrl") else 1
        return n_features * (_row_width(max(1, n_fields or 1), ks, dtype) * dtype.itemsize
                             + lw * _lin_dtype(dtype).itemsize)

    def _set_layout(self, rec_off, width):
        self._rec_off, self._row_width = rec_off, int(width)
        self._foff = np.ascontiguousarray(rec_off[self.fields_], dtype=np.int32)

    def _ensure_layout(self, dtype):
        self._check_trainable()
        k = int(self.n_factors)
        if k != self._k:
            raise ValueError(f"warm start with n_factors={k} but the model has {self._k} "
                             "factors; refit with warm_start=False")
        if self.solver != self._solver or self._V.dtype != dtype:
            raise ValueError(f"warm start must keep solver and dtype ({self._solver!r}, "
                             f"{self._V.dtype}); refit with warm_start=False")

    def _default_dtype(self):
        if self.warm_start and hasattr(self, "_V"):
            return self._V.dtype.name  # keep the fitted table's precision
        return "float16" if _ffm.half_simd_available() else "float32"

    @property
    def _half(self):
        return self._V.dtype == np.float16

    @property
    def _kernel_V(self):
        """The factor table as the kernels take it (float16 as its uint16 bits)."""
        return self._V.view(np.uint16) if self._V.dtype == np.float16 else self._V

    @property
    def w_(self):
        """Linear weights, shape (n_features,) (a view)."""
        self._check_fitted()
        return self._lin[:, 0]

    @property
    def V_(self):
        """Factors, shape (n_features, n_fields, n_factors): a view, or a
        read-only copy for float16 AdaGrad tables (whose records are packed
        per cache line, see ``_layout``)."""
        self._check_fitted()
        V = self._V
        item = V.itemsize
        if not _contiguous(self._rec_off, self._ks):
            out = _get_records(V, self._rec_off, self.n_fields_, self._ks, self._k)
            out.flags.writeable = False
            return out
        return np.lib.stride_tricks.as_strided(
            V, shape=(V.shape[0], self.n_fields_, self._k),
            strides=(V.strides[0], self._ks * item, item), writeable=V.flags.writeable)

    # ------------------------------------------------------------ kernels
    def _max_nnz(self, Xc):
        return int(np.diff(Xc.indptr).max()) if Xc.n_rows else 0

    def _train_epoch(self, Xc, y, sw_arr, order, lr, n_threads):
        args = (
            Xc.data, Xc.indices, Xc.indptr, y, sw_arr, order, self._foff, self._lin,
            self._kernel_V, self._w0_state, self._k, self._kp, 1, LOSSES[self._loss],
            SOLVERS[self._solver], bool(self.fit_intercept), self._normalize, lr,
            float(self.l2_w0), self._hp("l2_w"), self._hp("l2_v"), float(self.l1),
            float(self.ftrl_beta), n_threads, self._max_nnz(Xc),
        )
        # float16: seeds the stochastic rounding of the updates (drawn only then,
        # so that float32/float64 fits keep their row-order stream)
        seed = int(self._rng.integers(2**63)) if self._half else 0
        return _ffm.ffm_train_epoch(*args, seed)

    def _decision(self, Xc, n_threads=None, tables=None):
        t = self._current_tables() if tables is None else tables  # one consistent set
        _check_width(Xc, t)
        if n_threads is None:
            n_threads = effective_n_threads(self.n_jobs)
        out = np.empty(Xc.n_rows, dtype=np.float64)
        V = t.V.view(np.uint16) if t.V.dtype == np.float16 else t.V
        _ffm.ffm_predict(Xc.data, Xc.indices, Xc.indptr, t.foff, t.lin, V,
                float(t.w0_state[0]), t.kp, 1, t.normalize, out,
                n_threads, self._max_nnz(Xc))
        return out

    def _params_finite(self):
        nt = effective_n_threads(self.n_jobs)
        if self._half:
            V_ok = _ffm.ffm_half_finite(self._kernel_V, self.n_fields_, self._kp, self._ks,
                                        self._rec_off, nt)
        else:
            V_ok = _utils.all_finite(self._V, self._row_width, nt)
        return _utils.all_finite(self._lin, 1, nt) and V_ok

    def _snapshot(self):
        return self._lin.copy(), self._V.copy(), self._w0_state.copy()

    def _restore(self, state):
        self._lin[...] = state[0]
        self._V[...] = state[1]
        self._w0_state[...] = state[2]

    # ------------------------------------------------------------ model files
    def _export_state(self):
        self._check_trainable()
        from ._io import RowBlocks

        nf, ks = self.n_fields_, self._ks
        # the file holds records contiguously (n_features, n_fields * ks), written a
        # block of rows at a time
        V = RowBlocks((self._V.shape[0], nf * ks), self._V.dtype,
                      lambda i, j: _get_records(self._V[i:j], self._rec_off, nf,
                                                ks).reshape(j - i, nf * ks))
        arrays = {"lin": self._lin[:, :_lin_width(self._solver)],
                  "V": V, "w0_state": self._w0_state, "fields": self.fields_}
        header = self._common_header()
        header.update({
            "dtype": self._V.dtype.name,
            "n_features": int(self._V.shape[0]),
            "n_factors": int(self._k),
            "n_fields": int(self.n_fields_),
        })
        return arrays, header

    def _import_state(self, header, arrays):
        dtype = self._import_params(header)
        n, k, nf = int(header["n_features"]), int(header["n_factors"]), int(header["n_fields"])
        solver = header["solver"]
        if solver not in ("sgd", "adagrad", "ftrl") or n < 1 or not 1 <= k <= MAX_FACTORS \
                or nf < 1:
            raise ValueError(f"bad solver/shape in header: {solver!r}, {n}, {k}, {nf}")
        kp = _padded_k(k, dtype)
        ks = _record_size(kp, solver, dtype)
        expect = {"lin": ((n, _lin_width(solver)), _lin_dtype(dtype)), "V": ((n, nf * ks), dtype),
                  "w0_state": ((3,), np.float64), "fields": ((n,), np.int32)}
        for name, (shape, dt) in expect.items():
            if name not in arrays:
                raise ValueError(f"array {name!r} is missing")
            if arrays[name].shape != shape or arrays[name].dtype != dt:
                raise ValueError(f"array {name!r} has shape {arrays[name].shape} and dtype "
                                 f"{arrays[name].dtype}, expected {shape} and {np.dtype(dt)}")
        fields = np.ascontiguousarray(_as_array(arrays["fields"]), dtype=np.int32)
        if fields.min() < 0 or fields.max() >= nf:
            raise ValueError("field ids in the file are out of range")
        self._lin = _lin_table(n, solver, dtype)
        _copy_rows(self._lin[:, :_lin_width(solver)], arrays["lin"])
        self.fields_ = fields
        self.n_fields_ = nf
        ks_file = ks
        if getattr(self, "_scoring_only", False):
            # scoring only: the vectors without their AdaGrad slots (ks = kp)
            ks = kp
        self._set_layout(*_layout(nf, ks, dtype))
        # zeroed (free for a large table), so that any padding is 0
        self._V = _aligned_table(n, self._row_width, dtype)
        # the file's records, a block of rows at a time as they are read
        V, rec_off = self._V, self._rec_off
        _each_block(arrays["V"], lambda i, j, rows: _set_records(
            V[i:j], rec_off, nf, ks, rows.reshape(j - i, nf, ks_file)[:, :, :ks]))
        self._k, self._kp, self._ks, self._solver = k, kp, ks, solver
        self._import_common(header, arrays, n)
        self._publish()


_DTYPE_DOC = """
    dtype : {"float32", "float64", "float16"} or None, default=None
        None means "float16" on CPUs with AVX2, FMA and F16C (x86-64 since
        about 2013), where the float16 kernels are fast, and "float32"
        elsewhere. "float16": the factor table (by far the
        largest part of an FFM: n_features x n_fields x k) is stored in IEEE
        half precision, with float32 arithmetic, float32 AdaGrad accumulators
        and linear weights. It halves the table's memory and model files;
        on a Criteo-shaped set (benchmarks/RESULTS_ffm.md) scoring is about
        1.7x faster and training a few percent faster (training is bound by
        arithmetic, scoring by memory), at equal accuracy on every data set
        we measured. Updates are stored with stochastic
        rounding, so steps smaller than float16's resolution are kept on
        average instead of being rounded away; with ``n_jobs=1`` and a fixed
        ``random_state`` training is still bit-for-bit reproducible. Values
        beyond float16's range (65504) saturate.
"""


class FFMRegressor(_FFMMixin, FMRegressor):
    __doc__ = ("Field-aware factorization machine for regression (squared loss).\n\n"
               "    fit(X, y, fields=...) with one field id per column; otherwise the "
               "parameters,\n    attributes and contracts of :class:`cfm.FMRegressor`. "
               "``V_`` has shape\n    (n_features, n_fields, n_factors); ``fields_`` and "
               "``n_fields_`` are set by fit.\n" + _DTYPE_DOC)

    def partial_fit(self, X, y, sample_weight=None, fields=None):
        """One epoch over (X, y); ``fields`` is needed on the first call only."""
        return self._partial_fit(X, y, sample_weight, fields=fields)


class FFMClassifier(_FFMMixin, FMClassifier):
    __doc__ = ("Field-aware factorization machine for binary classification (logistic "
               "loss).\n\n    fit(X, y, fields=...) with one field id per column; otherwise "
               "the parameters,\n    attributes and contracts of :class:`cfm.FMClassifier`. "
               "``V_`` has shape\n    (n_features, n_fields, n_factors); ``fields_`` and "
               "``n_fields_`` are set by fit.\n" + _DTYPE_DOC)

    def partial_fit(self, X, y, classes=None, sample_weight=None, fields=None):
        """One epoch over (X, y); ``fields`` is needed on the first call only."""
        return self._partial_fit(X, y, sample_weight, classes=classes, fields=fields)


MODEL_CLASSES = {"FFMRegressor": FFMRegressor, "FFMClassifier": FFMClassifier}
