"""RankState: a ranking FM -- an FM table over [user features | item features]
trained by BPR (src/cfm/_rank.pyx) -- and the split of its score into a user
block, an item block and their inner product, which top-k uses.

For a user row u and an item row i (see src/cfm/_rank.pyx for the model)::

    s(u, i) = [w0 + lin(u) + pair(u)] + [lin(i) + pair(i)] + <P_u, Q_i>
            =        c_u              +        b_i         + <P_u, Q_i>

so the scores of a block of users against every item are ``c 1^T + 1 b^T +
P Q^T``: one dense matrix product and a partial sort (``_rank.recommend``),
instead of an FM evaluation per pair.
"""
import numpy as np

from .. import _rank
from .base import MAX_FACTORS, ModelState, as_array, bias_state
from .fm import FMTable


class FeatureRows:
    """Validated feature rows as the kernels take them: CSR with float64
    values, int32 column ids, int64 offsets."""

    __slots__ = ("indptr", "indices", "data", "n_cols")

    def __init__(self, indptr, indices, data, n_cols):
        self.indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        self.indices = np.ascontiguousarray(indices, dtype=np.int32)
        self.data = np.ascontiguousarray(data, dtype=np.float64)
        self.n_cols = int(n_cols)

    @property
    def n_rows(self):
        return len(self.indptr) - 1

    @classmethod
    def identity(cls, n):
        return cls(np.arange(n + 1), np.arange(n), np.ones(n), n)

    def export(self, prefix):
        return {f"{prefix}_ptr": self.indptr, f"{prefix}_ind": self.indices,
                f"{prefix}_val": self.data}

    @classmethod
    def from_file(cls, arrays, prefix, n_cols, what):
        """Rows of a model file, checked: offsets from 0 to nnz, never
        decreasing; column ids in [0, n_cols); finite values."""
        ptr, ind, val = (np.asarray(arrays[f"{prefix}_{s}"]) for s in ("ptr", "ind", "val"))
        if ptr.dtype != np.int64 or ind.dtype != np.int32 or val.dtype != np.float64 \
                or ptr.ndim != 1 or ind.ndim != 1 or val.ndim != 1 or len(ptr) < 2:
            raise ValueError(f"{what}: bad array dtypes or shapes")
        if ptr[0] != 0 or ptr[-1] != len(ind) or len(ind) != len(val) \
                or np.any(np.diff(ptr) < 0):
            raise ValueError(f"{what}: corrupt row offsets")
        if len(ind) and (ind.min() < 0 or ind.max() >= n_cols):
            raise ValueError(f"{what}: a column id outside [0, {n_cols})")
        if not np.all(np.isfinite(val)):
            raise ValueError(f"{what}: non-finite values")
        return cls(ptr, ind, val, n_cols)


class RankState(ModelState):
    """Parameters of a ranking FM (an :class:`FMTable` whose first
    ``n_user_cols`` features are the user side) and the training feature rows."""

    kind = "rank"
    dtypes = ("float32", "float64")
    uses_fields = False

    def __init__(self, fm, n_user_cols, users, items):
        if not 0 < n_user_cols < fm.n_features or fm.normalize \
                or users.n_cols != n_user_cols or items.n_cols != fm.n_features - n_user_cols:
            raise RuntimeError("inconsistent ranking tables")  # a bug, never bad input
        self._set(fm=fm, n_user_cols=int(n_user_cols), users=users, items=items)

    @classmethod
    def new(cls, users, items, *, k, optimizer, dtype, init_std, seed, n_threads):
        fm = FMTable.new(users.n_cols + items.n_cols, k=k, solver=optimizer, dtype=dtype,
                         init_std=init_std, seed=seed, n_threads=n_threads,
                         w0_state=bias_state(0.0, optimizer), normalize=False)
        return cls(fm, users.n_cols, users, items)

    # ------------------------------------------------------------ views
    @property
    def n_features(self):
        return self.fm.n_features

    @property
    def k(self):
        return self.fm.k

    @property
    def dtype(self):
        return self.fm.dtype

    @property
    def trainable(self):
        return self.fm.trainable

    # ------------------------------------------------------------ training
    def train_epoch(self, pairs, order, cdf, *, learning_rate, l2_w, l2_v, seed, n_threads,
                    warp=False, max_sampled=10):
        """One BPR (``warp``: WARP) pass over ``order`` (positions into ``pairs``, a
        :class:`cfm._state.rank.Pairs`); returns the kernel's statistics."""
        return _rank.bpr_epoch(
            self.fm.table, order, pairs.user, pairs.item, pairs.pos_ptr, pairs.pos_item,
            self.users.indptr, self.users.indices, self.users.data,
            self.items.indptr, self.items.indices, self.items.data, cdf,
            n_factors=self.k, n_user_cols=self.n_user_cols,
            adagrad=self.fm.solver == "adagrad", learning_rate=learning_rate, l2_w=l2_w,
            l2_v=l2_v, seed=seed, n_threads=n_threads, warp=warp, max_sampled=max_sampled)

    def finite(self, n_threads):
        return self.fm.finite(n_threads)

    def snapshot(self, into=None):
        return self.fm.snapshot(into)

    def restore(self, snap):
        self.fm.restore(snap)

    # ------------------------------------------------------------ scoring
    def decision(self, Xc, n_threads, shared=False):
        """FM scores of concatenated rows [user features | item features]."""
        return self.fm.decision(Xc, n_threads, shared)

    def blocks(self, rows, ids, side, n_threads, pad=1):
        """(c, E) of the feature rows ``rows`` (:class:`FeatureRows`) at
        ``ids`` on one side ("user" or "item"): c = lin + pair of each row
        (float64; w0 added on the user side) and E = the rows' summed
        factors, shape (len(ids) rounded up to ``pad``, k) in the
        parameters' dtype (padding rows are 0)."""
        off = 0 if side == "user" else self.n_user_cols
        n = len(ids)
        c = np.empty(n, dtype=np.float64)
        E = np.zeros((-(-n // pad) * pad, self.k), dtype=self.fm.dtype)
        _rank.side_blocks(self.fm.table, np.ascontiguousarray(ids, dtype=np.int64),
                          rows.indptr, rows.indices, rows.data, off, c, E, n_threads)
        if side == "user":
            c += self.fm.w0
        return c, E

    def top_k(self, c_u, P, b, Q, k, exclude, n_threads):
        """The k best of ``c_u + b + P Q^T`` per row: (positions, scores),
        best first; ``exclude`` (ptr, pos) CSR of positions per row, or None.
        ``P`` from ``blocks(..., pad=_rank.USERS_PER_BLOCK)``.  One nogil
        kernel (``_rank.recommend``): the product block by block of users,
        each followed by its partial sort."""
        dt = self.fm.dtype
        n = len(c_u)
        QT = np.ascontiguousarray(Q.T)
        idx = np.empty((n, k), dtype=np.int64)
        score = np.empty((n, k), dtype=np.float64)
        empty = np.zeros(0, dtype=np.int64)
        ex_ptr, ex_pos = exclude if exclude is not None else (empty, empty)
        _rank.recommend(P, QT, np.ascontiguousarray(b, dtype=dt), c_u, ex_ptr, ex_pos, idx,
                        score, n_threads)
        return idx, score

    # ------------------------------------------------------------ model files
    def export(self):
        arrays, header = self.fm.export()
        arrays.update(self.users.export("user"))
        arrays.update(self.items.export("item"))
        header["n_user_features"] = self.n_user_cols
        return arrays, header

    @classmethod
    def from_file(cls, header, arrays, scoring_only=False):
        fm = FMTable.from_file(header, arrays, scoring_only)
        n_user = header.get("n_user_features")
        if not isinstance(n_user, int) or isinstance(n_user, bool) \
                or not 0 < n_user < fm.n_features:
            raise ValueError(f"bad 'n_user_features' {n_user!r} for {fm.n_features} features")
        if fm.normalize or fm.solver not in ("sgd", "adagrad") or fm.k > MAX_FACTORS:
            raise ValueError("not a ranking model's table (normalize or solver)")
        for name in ("user_ptr", "user_ind", "user_val", "item_ptr", "item_ind", "item_val"):
            if name not in arrays:
                raise ValueError(f"array {name!r} is missing")
        read = {n: as_array(a) for n, a in arrays.items() if n.startswith(("user_", "item_"))}
        users = FeatureRows.from_file(read, "user", n_user, "user feature rows")
        items = FeatureRows.from_file(read, "item", fm.n_features - n_user, "item feature rows")
        return cls(fm, n_user, users, items)


class Pairs:
    """Positive (user, item) pairs of a training set, and each user's sorted
    positive items (negative sampling skips them)."""

    __slots__ = ("user", "item", "pos_ptr", "pos_item", "n_users", "n_items")

    def __init__(self, R):
        """``R``: a canonical CSR matrix (sorted ids, no duplicates) whose
        stored entries are the positives."""
        self.n_users, self.n_items = R.shape
        self.pos_ptr = np.ascontiguousarray(R.indptr, dtype=np.int64)
        self.pos_item = np.ascontiguousarray(R.indices, dtype=np.int64)
        self.user = np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(self.pos_ptr))
        self.item = self.pos_item

    def __len__(self):
        return len(self.item)

    def popularity_cdf(self, exponent):
        """Cumulative distribution of negatives with P(j) proportional to
        (1 + positives of j) ** exponent."""
        counts = np.bincount(self.item, minlength=self.n_items).astype(np.float64)
        p = (counts + 1.0) ** exponent
        cdf = np.cumsum(p)
        cdf /= cdf[-1]
        cdf[-1] = 1.0
        return cdf
