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

from .sgd import block_epoch

# Rows of the union of touched rows merged at once (bounds the float64
# scratch of the merge to a few MB whatever the model's size).
MERGE_BLOCK_ROWS = 65_536


def touched_rows(indices, n_features):
    """(rows, counts): the table rows a pass over CSR column ``indices``
    touches, sorted, and how many non-zeros touch each."""
    counts = np.bincount(np.asarray(indices), minlength=n_features)
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
        return int(self.rows.nbytes + self.counts.nbytes + sum(t.nbytes for t in self.tables)
                   + self.w0_state.nbytes)


def compact(indices, rows, n_features):
    """Column ids renumbered onto the touched rows (rows[i] -> i), by a
    lookup table (a gather: ~50x faster than a binary search per id)."""
    lut = np.zeros(n_features, dtype=np.int32 if len(rows) < 2**31 else np.int64)
    lut[rows] = np.arange(len(rows), dtype=lut.dtype)
    return lut[indices]


def local_pass(state, Xc, y, sw, hyper, seed, shuffle, n_threads, rows, counts):
    """One pass of the per-sample solver over (Xc, y) on a private copy of
    ``state``; return its Update.  ``rows, counts``: touched_rows of Xc.
    ``state`` is either the whole model (Xc's ids are feature ids) or the
    model restricted to ``rows`` (``state.take_rows(rows)``, Xc's ids
    renumbered by :func:`compact`): then only those rows travel."""
    t0 = time.perf_counter()
    st = state.clone()
    rng = np.random.default_rng(seed)
    loss_sum, w_sum, n_bad = block_epoch(st, Xc, y, sw, hyper, rng, shuffle, n_threads)
    local = slice(None) if st.n_features == len(rows) else rows
    tables = [np.ascontiguousarray(arr[local, :cols]) for _, arr, cols, _, _, _ in
              st.mix_tables()]
    return Update(rows, counts, tables, st.w0_state.copy(), int(Xc.n_rows), float(loss_sum),
                  float(w_sum), int(n_bad), time.perf_counter() - t0)


def _ftrl_weight(z, n, lr, l1, l2, beta):
    """FTRL-proximal weight from z and n (the kernels' ftrl_weight, vectorised)."""
    w = -(z - np.sign(z) * l1) / ((beta + np.sqrt(n)) / lr + l2)
    return np.where(np.abs(z) <= l1, 0.0, w)


MIXINGS = ("sum", "average")


def merge(state, updates, hyper, mixing="sum", block_rows=MERGE_BLOCK_ROWS):
    """Combine the workers' Updates into ``state`` in place (see the module
    docstring); updates are taken in the order given (fixed: worker index).

    ``mixing="sum"`` adds the workers' parameter changes instead of averaging
    them (optimizer state as for "average"): a sequential pass's progress on
    features every worker touches, where the average makes 1/P of it; it
    overshoots where each worker's pass alone already reaches a parameter's
    optimum (frequent features, long rounds, many workers)."""
    if mixing not in MIXINGS:
        raise ValueError(f"mixing must be one of {MIXINGS}, got {mixing!r}")
    updates = [u for u in updates if u.n_rows > 0]
    if not updates:
        return
    every = np.concatenate([u.rows for u in updates])
    union, times = np.unique(every, return_counts=True)
    shared = union[times > 1]  # rows more than one worker touched
    tables = state.mix_tables()
    # a row only one worker touched becomes that worker's row (whatever the
    # rule: its average, sum and summed increments are the worker's values)
    for up in updates:
        alone = _missing(shared, up.rows)
        for t, (_, arr, cols, *_) in enumerate(tables):
            arr[up.rows[alone], :cols] = up.tables[t][alone]
    for t, (_, arr, cols, avg, summed, ftrl) in enumerate(tables):
        for a in range(0, len(shared), block_rows):
            u = shared[a:a + block_rows]
            lo, hi = u[0], u[-1]
            base = arr[u, :cols].astype(np.float64)
            num = np.zeros_like(base)
            den = np.zeros_like(base)
            inc = np.zeros_like(base)
            for up in updates:
                i0, i1 = np.searchsorted(up.rows, [lo, hi + 1])
                if i0 == i1:
                    continue
                sel = i0 + np.flatnonzero(~_missing(u, up.rows[i0:i1]))
                if not len(sel):
                    continue
                pos = np.searchsorted(u, up.rows[sel])
                R = up.tables[t][sel].astype(np.float64)
                B = base[pos]
                # weight of an entry: the worker's touch count where it
                # changed the entry (a record of a field a worker's rows never
                # met is left out of the average)
                wgt = (R != B) * up.counts[sel, None]
                num[pos] += wgt * R
                den[pos] += wgt
                inc[pos] += R - B
            new = base
            mean = (den > 0) & avg
            if mixing == "sum":
                new[:, avg] += inc[:, avg]
            else:
                new[mean] = num[mean] / den[mean]
            new[:, summed] += inc[:, summed]
            if ftrl is not None:
                w, z, n = ftrl
                new[:, w] = _ftrl_weight(new[:, z], new[:, n], hyper.learning_rate, hyper.l1,
                                         hyper.l2_w, hyper.ftrl_beta)
            arr[u, :cols] = new.astype(arr.dtype)
    _merge_bias(state.w0_state, updates, hyper)


def _missing(sorted_set, values):
    """Boolean mask: which ``values`` are not in the sorted array ``sorted_set``."""
    if not len(sorted_set):
        return np.ones(len(values), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[pos] != values


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
