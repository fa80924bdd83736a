"""Synchronous parameter mixing: the training algorithm of distributed fits.

A round: every worker starts from the same model, runs a local pass of a
per-sample solver over its own rows (:func:`local_pass`, the kernels with
the worker's threads), and returns the rows of the tables it touched with
the number of times it touched them (:class:`Update`).  :func:`merge`
combines the updates into the model the next round starts from:

* parameters ([w, v] of an FM row; w and every factor record of an FFM row):
  ``mixing="average"`` averages them over the workers that changed them,
  each weighted by how often it touched the row (a plain average over all
  workers would shrink a rare feature's update by the number of workers P);
  ``mixing="sum"`` adds the workers' changes.  The two agree on a row only
  one worker touched; on a row every worker touches, the average makes
  about 1/P of a sequential pass's progress (measured: 2 workers trail the
  local fit by 0.025 AUC after the same epochs on one-hot click data) and
  the sum about all of it (within 0.003 AUC), but the sum overshoots where
  each worker's pass alone reaches the parameter's optimum (very frequent
  features, long rounds, many workers) -- see docs/distributed.md;
* optimizer state is combined as a sequential pass would have built it:
  AdaGrad accumulators and FTRL's z and n get the *sum* of the workers'
  increments, and FTRL's w is recomputed from the merged z and n;
* the bias: count-weighted mean of w0, summed increments of its optimizer
  state (FTRL: w0 from the merged z, n) -- what the kernels do with their
  per-thread bias states at the end of an epoch.

Workers restart from the merged model every round: FM factors are defined
only up to a rotation, so averaging models trained apart from different
starting points (one-shot averaging) would mix unrelated coordinates.

Nothing here knows Dask: the engine (cfm.dask) ships states and updates.
Deterministic given the model, the rows of each worker and the seeds.
"""
import time
from dataclasses import dataclass

import numpy as np

from .. import _mix
from .sgd import block_epoch

def touched_rows(indices, n_features, scratch=None):
    """(rows, counts): the table rows a pass over CSR column ``indices``
    touches, sorted, and how many non-zeros touch each.  ``scratch``: a
    zeroed int32 array of length n_features, reused across calls (no count
    array allocated per call; int32 ids below n_features)."""
    indices = np.asarray(indices)
    if scratch is not None and indices.dtype == np.int32 and len(scratch) == n_features:
        return _mix.touched(np.ascontiguousarray(indices), scratch)
    counts = np.bincount(indices, minlength=n_features)
    rows = np.flatnonzero(counts)
    return rows.astype(np.int64), counts[rows].astype(np.float64)


@dataclass
class Update:
    """What a worker returns after a local pass."""

    rows: np.ndarray          # touched table rows (sorted, int64)
    counts: np.ndarray        # times each was touched (float64)
    tables: list              # per mixing table: its rows ``rows`` (used columns)
    w0_state: np.ndarray      # the bias state [w0, a, b] after the pass
    n_rows: int               # training rows of the pass
    loss_sum: float
    weight_sum: float
    n_bad: int
    seconds: float            # compute time of the pass (kernel + row extraction)

    @property
    def nbytes(self):
        ids = sum(a.nbytes for a in (self.rows, self.counts) if a is not None)
        return int(ids + sum(t.nbytes for t in self.tables) + self.w0_state.nbytes)


def compact(indices, rows, n_features):
    """Column ids renumbered onto the touched rows (rows[i] -> i), by a
    lookup table (a gather: ~50x faster than a binary search per id)."""
    lut = np.zeros(n_features, dtype=np.int32 if len(rows) < 2**31 else np.int64)
    lut[rows] = np.arange(len(rows), dtype=lut.dtype)
    return lut[indices]


def local_pass(state, Xc, y, sw, hyper, seed, shuffle, n_threads, rows, counts, copy=True):
    """One pass of the per-sample solver over (Xc, y) on a private copy of
    ``state`` (``copy=False``: on ``state`` itself); return its Update.
    ``rows, counts``: touched_rows of Xc.  ``state`` is either the whole
    model (Xc's ids are feature ids) or the model restricted to ``rows``
    (``state.take_rows(rows)``, Xc's ids renumbered by :func:`compact`)."""
    t0 = time.perf_counter()
    st = state.clone() if copy else state
    rng = np.random.default_rng(seed)
    loss_sum, w_sum, n_bad = block_epoch(st, Xc, y, sw, hyper, rng, shuffle, n_threads)
    local = slice(None) if st.n_features == len(rows) else rows
    tables = [np.ascontiguousarray(arr[local, :cols]) for _, arr, cols, _, _, _ in
              st.mix_tables()]
    return Update(rows, counts, tables, st.w0_state.copy(), int(Xc.n_rows), float(loss_sum),
                  float(w_sum), int(n_bad), time.perf_counter() - t0)


MIXINGS = ("sum", "average")


def group_positions(pos, counts, n_held):
    """A round over several slices of a shard: the positions (in the shard's
    held rows, sorted) of the rows any of them touches, and the summed
    touch counts (float64).  ``pos``, ``counts``: per slice."""
    if len(pos) == 1:
        return np.asarray(pos[0], np.int64), np.asarray(counts[0], np.float64)
    acc = np.zeros(n_held, np.float64)
    for p, c in zip(pos, counts):
        acc[p] += c  # (positions are distinct within a slice)
    at = np.flatnonzero(acc)
    return at, acc[at]


class ResidentRows:
    """Which model rows each worker must be sent before a round.

    A worker keeps the model rows of its whole shard (``held[k]``, sorted
    feature ids) between rounds and is sent, before a round, only the rows
    of that round's slice whose merged value changed since its copy was last
    current: rows another worker changed, and rows it shared with others in
    a round (their merged value is not its own).  A row only it touched
    never travels back.  The result is the same model as sending every row
    of the slice every round.

    ``changed[f]``: the round that last changed feature f (0: the initial
    model); ``seen[k][i]``: the round after which worker k's copy of
    ``held[k][i]`` was last equal to the merged one (None: the worker holds
    nothing yet, or lost what it held: it is sent all of ``held[k]``)."""

    def __init__(self, n_features, held):
        self.held = held
        self.changed = np.zeros(n_features, np.int32)
        self.seen = [None] * len(held)
        self.round = 0  # rounds merged so far

    def reset(self):
        """Every worker is sent all its rows again (after a failure)."""
        self.seen = [None] * len(self.held)

    def message(self, k, state, rows, pos):
        """What worker k is sent before the next round, whose slice touches
        the features ``rows`` (positions ``pos`` in held[k]): (full, idx,
        tables) -- ``full`` the state restricted to held[k] (first round or
        after reset), else None and ``tables`` the per-table values
        [:, :cols] of the rows at positions ``idx`` of held[k]."""
        if self.seen[k] is None:
            self.seen[k] = np.full(len(self.held[k]), self.round, np.int32)
            return state.take_rows(self.held[k]), None, None
        need = self.changed[rows] > self.seen[k][pos]
        self.seen[k][pos] = self.round
        sel = rows[need]
        return None, pos[need], [arr[sel, :cols] for _, arr, cols, *_ in state.mix_tables()]

    def merged(self, rows, pos, shared):
        """Record a merged round: ``rows[k]`` / ``pos[k]`` what worker k's
        slice touched, ``shared`` the rows several workers touched (merge's
        return value)."""
        r = self.round = self.round + 1
        is_shared = np.zeros(len(self.changed), bool)
        is_shared[shared] = True
        for k, (rk, pk) in enumerate(zip(rows, pos)):
            self.changed[rk] = r
            if self.seen[k] is not None:
                self.seen[k][pk] = np.where(is_shared[rk], r - 1, r)


def merge(state, updates, hyper, mixing="sum"):
    """Combine the workers' Updates into ``state`` in place (see the module
    docstring); updates are taken in the order given (fixed: worker index).
    Returns the rows more than one update touched (int64, in order of first
    appearance): the rows whose merged value may differ from a worker's.

    ``mixing="sum"`` adds the workers' parameter changes instead of averaging
    them (optimizer state as for "average"): a sequential pass's progress on
    features every worker touches, where the average makes 1/P of it; it
    overshoots where each worker's pass alone already reaches a parameter's
    optimum (frequent features, long rounds, many workers).

    The passes are nogil kernels (cfm._mix), memory-bound: each update is
    read once, a row one worker touched is copied, a shared row is merged in
    float64 in worker order (FTRL's w recomputed from the merged z, n)."""
    if mixing not in MIXINGS:
        raise ValueError(f"mixing must be one of {MIXINGS}, got {mixing!r}")
    updates = [u for u in updates if u.n_rows > 0]
    if not updates:
        return np.zeros(0, np.int64)
    tables = state.mix_tables()
    n = tables[0][1].shape[0]
    rows = []
    for u in updates:  # validate at the boundary: the kernels trust these
        r = np.ascontiguousarray(u.rows, dtype=np.int64)
        if len(r) and (int(r.min()) < 0 or int(r.max()) >= n):
            raise ValueError(f"an update has rows outside the model's {n} rows")
        if len(u.counts) != len(r) or len(u.tables) != len(tables) or any(
                t.ndim != 2 or t.shape[0] != len(r) or t.shape[1] < cols or t.dtype != arr.dtype
                for t, (_, arr, cols, *_) in zip(u.tables, tables)):
            raise ValueError("an update does not match the model's tables")
        rows.append(r)
    cnt = np.zeros(n, np.int32)
    slot = np.zeros(n, np.int32)
    n_shared = int(sum(_mix.mark(cnt, r) for r in rows))
    shared = np.empty(n_shared, np.int64)
    counts = [np.ascontiguousarray(u.counts, dtype=np.float64) for u in updates]
    for t, (_, arr, cols, avg, summed, ftrl) in enumerate(tables):
        base = np.empty((n_shared, cols))
        num, den, inc = (np.zeros((n_shared, cols)) for _ in range(3))
        used = 0
        for u, r, c in zip(updates, rows, counts):
            used = _mix.accumulate(arr, cols, r, np.ascontiguousarray(u.tables[t][:, :cols]),
                                   c, cnt, slot, shared, base, num, den, inc, used)
        w, z, nn = ftrl if ftrl is not None else (-1, -1, -1)
        _mix.finish(arr, cols, shared, used, base, num, den, inc,
                    np.ascontiguousarray(avg, dtype=np.uint8),
                    np.ascontiguousarray(summed, dtype=np.uint8), mixing == "sum", w, z, nn,
                    hyper.learning_rate, hyper.l1, hyper.l2_w, hyper.ftrl_beta)
        slot[shared] = 0  # slots are assigned afresh for the next table
    for r in rows:
        _mix.unmark(cnt, slot, r)
    _merge_bias(state.w0_state, updates, hyper)
    return shared


def _merge_bias(w0_state, updates, hyper):
    """The bias record as the kernels merge their per-thread bias states."""
    n = np.array([u.n_rows for u in updates], dtype=np.float64)
    w0s = np.array([u.w0_state for u in updates])
    a0, b0 = w0_state[1], w0_state[2]
    a = a0 + float(np.sum(w0s[:, 1] - a0))
    b = b0 + float(np.sum(w0s[:, 2] - b0))
    if hyper.optimizer == "ftrl" and hyper.fit_intercept:
        w0 = -a / ((hyper.ftrl_beta + np.sqrt(b)) / hyper.learning_rate + hyper.l2_w0)
    else:
        w0 = float(np.dot(n, w0s[:, 0]) / n.sum())
    w0_state[...] = (w0, a, b)
