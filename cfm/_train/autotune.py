"""Settings chosen from the data (issue 13): holdout, guard, race, early stopping.

The policy measured as "race6-refit-guard" in
``benchmarks/studies/AUTOTUNE_FINDINGS.md`` (section 4, the spec; every
constant below is one of its parameters):

1. *Holdout*: ``VALIDATION_FRACTION`` of the rows, stratified by class for
   classifiers (multiclass: ``n_classes`` > 2, y holds class indices, every
   class stratified; raced on the multi-class log loss), drawn from a stream of ``SeedSequence(seed)`` of its own (a
   spawned child), so that the initialisation and row-order streams of
   training (``streams(seed)``) are those of a fit without a holdout.
2. *Guard*: fewer than ``GUARD_MINORITY`` validation rows of the smallest
   class (classifiers) or ``GUARD_ROWS`` validation rows (regressors): no
   race and no holdout (the caller fits the fixed defaults on all rows).
3. *Candidates*: learning rate x normalize (``candidates``), each a model
   initialised as a standalone fit with this seed would be.
4. *Successive halving*: every alive candidate trains to ``RUNGS`` cumulative
   epochs on the training rows, scored on the validation rows after every
   epoch; its score is its best so far; after each rung the best ceil(half)
   survive (ties: candidate order).  A race of fewer candidates (a setting
   given, or the memory limit) skips the first rungs (``race_rungs``): the
   last two are always compared after epoch ``RUNGS[-1]``.
5. *Early stopping* of the winner: one epoch at a time until ``patience``
   epochs without improvement (tol 0), ``MAX_EPOCHS`` or the budget; its
   best epoch E is the result.
6. (caller) *Refit* on all rows for E epochs with the same seed.
7. *Budget*: ``BUDGET`` row-epochs (rows trained / rows of the fit; a fixed
   10-epoch fit is 10) including the refit -- 22, not the spec's 25: with the
   race's own work (table copies, validation scoring) 25 row-epochs measured
   2.55x the wall time of a fixed fit on the 1M-row set, 22 measured 2.45x
   (benchmarks/results/RESULTS_autotune_cost.md), at the same choices on every
   real data set: step 5 stops when one more epoch
   and a refit one epoch longer would exceed it.

With an ``eval_set`` the user's rows replace the holdout: nothing is held
out, no refit; the winner, restored to its best epoch, is the model.

Efficiency: training visits the training rows through the kernels' row
``order`` (no copy of X); the validation rows are copied once
(``take_rows``) and scored with the state's prediction kernel; candidates
start from copies of one initialisation (the caller's ``make_state``), and
the first rung keeps at most ceil(half) + 1 candidate states alive, a
dropped candidate's arrays being reused by the next one (and, after the
race, by the refit: ``RaceResult.spare``); a candidate's parameters are
snapshotted (into one buffer per candidate) only when the winner must be
restored (eval_set), and only on improvement.

Inputs are explicit (a state factory, validated data, a Hyper, seeds, a
thread budget); nothing here knows an estimator.
"""
import math
import sys
from dataclasses import dataclass, field, replace

import numpy as np

from .._lazy import sparse as sp
from .._metrics import METRICS
from .._validation import CSRInput
from ..exceptions import DivergenceError
from .loop import LoopConfig, run_epochs
from .sgd import block_epoch

VALIDATION_FRACTION = 0.15
LEARNING_RATES = (0.05, 0.1, 0.2)
NORMALIZE = (True, False)
RUNGS = (1, 2, 4)
MAX_EPOCHS = 40
BUDGET = 22.0
GUARD_MINORITY = 200
GUARD_ROWS = 1000
# a race holds every candidate's tables at once: above this share of memory
# only normalize is raced (2 candidates at the default learning rate)
MEMORY_SHARE = 0.25

TOO_SMALL = "skipped: validation split too small"


def streams(seed):
    """(initialisation seed, row-order seed) of a fit with this 63-bit seed."""
    init_seed, order_seed = np.random.SeedSequence(seed).generate_state(2, np.uint64)
    return int(init_seed), int(order_seed)


def _share(n, fraction):
    return int(math.floor(n * fraction + 0.5))


def class_counts(y, classifier, n_classes=2):
    """[negatives, positives] (classifiers: y > 0 is positive) or [rows];
    ``n_classes`` > 2: rows per class (y: class indices)."""
    if not classifier:
        return [len(y)]
    if n_classes > 2:
        return np.bincount(np.asarray(y).astype(np.intp), minlength=n_classes).tolist()
    pos = int(np.count_nonzero(np.asarray(y) > 0))
    return [len(y) - pos, pos]


def holdout_counts(y, classifier, fraction=VALIDATION_FRACTION, n_classes=2):
    """What ``holdout`` would take: rows per class (classifiers) or in all."""
    return [_share(c, fraction) for c in class_counts(y, classifier, n_classes)]


def too_small(counts, classifier):
    """The guard: can a validation split with these counts resolve the race?"""
    return min(counts) < GUARD_MINORITY if classifier else counts[0] < GUARD_ROWS


def holdout(y, seed, classifier, fraction=VALIDATION_FRACTION, n_classes=2):
    """(training rows, validation rows) of a fit with this seed: sorted int64
    row ids; ``fraction`` of each class (classifiers; ``n_classes`` > 2: y
    holds class indices) or of all rows."""
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    y = np.asarray(y)
    if classifier and n_classes > 2:
        groups = [np.flatnonzero(y == c) for c in range(n_classes)]
    else:
        groups = [np.flatnonzero(y <= 0), np.flatnonzero(y > 0)] if classifier \
            else [np.arange(len(y))]
    val = np.sort(np.concatenate(
        [g[rng.permutation(len(g))[:_share(len(g), fraction)]] for g in groups]))
    keep = np.ones(len(y), dtype=bool)
    keep[val] = False
    return np.flatnonzero(keep).astype(np.int64), val.astype(np.int64)


def take_rows(Xc, rows):
    """The validated CSR rows ``rows`` of Xc as a new CSRInput (a copy of
    those rows only, by SciPy's row indexing; still canonical, so not
    validated again).  Per-entry fields (``Xc.fields``) are taken along:
    the rows' entries are copied as stored, in order."""
    if Xc.fields is not None:
        starts = Xc.indptr[rows]
        lens = Xc.indptr[np.asarray(rows) + 1] - starts
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lens, out=indptr[1:])
        pos = np.repeat(starts - indptr[:-1], lens) + np.arange(indptr[-1], dtype=np.int64)
        return CSRInput(Xc.data[pos], Xc.indices[pos], indptr, (len(rows), Xc.shape[1]),
                        Xc.fields[pos])
    M = sp.csr_matrix((Xc.data, Xc.indices, Xc.indptr), shape=Xc.shape, copy=False)[rows]
    indices = M.indices if M.indices.dtype in (np.int32, np.int64) else \
        M.indices.astype(np.int64)
    return CSRInput(np.ascontiguousarray(M.data), np.ascontiguousarray(indices),
                    np.ascontiguousarray(M.indptr, dtype=np.int64), (len(rows), Xc.shape[1]))


def peak_models(n_candidates, snapshots):
    """Most parameter tables a race of ``n_candidates`` holds at once: the
    initialisation they are copied from, ceil(half) + 1 candidates during the
    first rung, and with ``snapshots`` (eval_set) a snapshot of each."""
    alive = min(n_candidates, math.ceil(n_candidates / 2) + 1)
    return 1 + alive * (2 if snapshots else 1)


def race_rungs(n_candidates, n_epochs=None):
    """The rungs (cumulative epochs) of a race of ``n_candidates``: the last
    ceil(log2 n) of ``RUNGS``, so that whatever the number of candidates the
    last two are compared after the same epoch (``RUNGS[-1]``): 6 or more
    candidates race at every rung, 3 or 4 at epochs 2 and 4, 2 at epoch 4
    (a race of two decided after one epoch picked by noise: measured in
    benchmarks/results/RESULTS_race_rungs.md).  ``n_epochs`` given caps
    every rung."""
    halvings = max(1, math.ceil(math.log2(max(n_candidates, 2))))
    rungs = RUNGS[max(0, len(RUNGS) - halvings):]
    if n_epochs is not None:
        rungs = tuple(sorted({min(r, n_epochs) for r in rungs}))
    return rungs


def candidates(learning_rate=None, normalize=None, learning_rates=LEARNING_RATES):
    """[(learning_rate, normalize)] in race order (which breaks ties): every
    learning rate with normalize=True, then with False, as measured; a given
    value removes its dimension."""
    lrs = learning_rates if learning_rate is None else (learning_rate,)
    norms = NORMALIZE if normalize is None else (bool(normalize),)
    return [(float(lr), nm) for nm in norms for lr in lrs]


@dataclass
class Candidate:
    learning_rate: float
    normalize: bool
    state: object = None
    rng: object = None
    records: list = field(default_factory=list)   # its epochs' history records
    curve: list = field(default_factory=list)     # validation score per epoch
    best: object = None
    best_epoch: int = 0
    since_best: int = 0
    dropped_at: object = None                     # the rung that dropped it
    diverged: bool = False
    snap: object = None

    @property
    def epochs(self):
        return len(self.curve)

    def free(self):
        self.state = self.snap = None

    def describe(self):
        return f"lr={self.learning_rate:g} normalize={'T' if self.normalize else 'F'}"


@dataclass
class RaceResult:
    winner: Candidate
    best_epoch: int
    row_epochs: float
    record: dict
    spare: object = None    # a state no longer used (refit: its arrays can be reused)


@dataclass
class Race:
    """One race (see the module docstring).

    ``make_state(learning_rate, normalize, reuse)`` builds a candidate's
    fresh state (in the arrays of ``reuse``, a dropped candidate's state, when
    not None);
    ``rows``: the training rows (None: all, with an eval_set); ``evals``:
    [(validated X, y for the metric)], the first scores the race;
    ``n_rows``: rows of the fit (the row-epoch unit); ``n_epochs``: given by
    the user (None: chosen); ``refit``: the caller refits on all rows (budget
    counts it; no snapshot needed) -- else the winner is restored to its best
    epoch; ``callback``: progress of the winner's epochs after the race."""

    make_state: object
    Xc: object
    y: object
    sw: object
    rows: object
    evals: list
    hyper: object
    order_seed: int
    shuffle: bool
    metric: str
    n_threads: int
    name: str
    n_rows: int
    n_epochs: object = None
    patience: int = 3
    refit: bool = True
    verbose: int = 0
    callback: object = None
    spent: float = 0.0
    spare: object = None

    def __post_init__(self):
        self.greater = METRICS[self.metric][1]
        n_train = self.Xc.n_rows if self.rows is None else len(self.rows)
        self.share = n_train / self.n_rows

    # ------------------------------------------------------------ one epoch
    def _key(self, c):
        if c.best is None:
            return (1, 0.0)
        return (0, -c.best if self.greater else c.best)

    def _improves(self, s, best):
        if not np.isfinite(s):
            return False
        return best is None or (s > best if self.greater else s < best)

    def step(self, c, callback=None):
        """One epoch of candidate ``c`` on the training rows, then its score."""
        if c.state is None:
            c.state = self.make_state(c.learning_rate, c.normalize, self.spare)
            c.rng = np.random.default_rng(self.order_seed)
            self.spare = None
        h = replace(self.hyper, learning_rate=c.learning_rate)

        def epoch(lr):
            return block_epoch(c.state, self.Xc, self.y, self.sw, h, c.rng, self.shuffle,
                               self.n_threads, rows=self.rows)

        config = LoopConfig(name=self.name, metric=self.metric, n_threads=self.n_threads,
                            history=c.records, callback=callback)
        self.spent += self.share
        try:
            run_epochs(epoch, state=c.state, n_epochs=1, evals=self.evals, config=config,
                       lr=c.learning_rate, early_stopping=False)
        except DivergenceError:
            # a diverging candidate loses (its best epoch so far still counts)
            c.diverged = True
            c.curve.append(float("nan"))
            if self.refit:
                self._drop(c)
            return
        s = c.records[-1][f"eval_{self.metric}"]
        c.curve.append(s)
        if self._improves(s, c.best):
            c.best, c.best_epoch, c.since_best = s, c.epochs, 0
            if not self.refit:
                c.snap = c.state.snapshot(**({"into": c.snap} if c.snap is not None else {}))
        else:
            c.since_best += 1

    def _drop(self, c):
        """Free a candidate's state (kept as the spare, whose arrays the next
        new state reuses)."""
        if c.state is not None:
            self.spare = c.state
        c.free()

    def _log(self, msg):
        if self.verbose:
            print(f"auto: {msg}", file=sys.stderr, flush=True)

    def _score(self, c):
        return "diverged" if c.best is None else f"{self.metric} {c.best:.6g}"

    # ------------------------------------------------------------ the race
    def run(self, cands):
        cands = [Candidate(lr, nm) for lr, nm in cands]
        rungs = race_rungs(len(cands), self.n_epochs)
        alive = list(cands)
        for r in rungs:
            if len(alive) == 1:
                break
            keep = math.ceil(len(alive) / 2)
            # (score, place in the previous ranking): a stable sort, applied
            # as each candidate finishes the rung, so that at most keep + 1
            # states are alive
            rank = {id(c): i for i, c in enumerate(alive)}

            def key(c):
                return self._key(c) + (rank[id(c)],)

            kept, dropped = [], []
            for c in alive:
                while not c.diverged and c.epochs < r:
                    self.step(c)
                kept.append(c)
                kept.sort(key=key)
                if len(kept) > keep:
                    d = kept.pop()
                    d.dropped_at = r
                    self._drop(d)
                    dropped.append(d)
            alive = kept
            self._log(f"rung {r} epoch{'s' if r > 1 else ''}: " + ", ".join(
                f"{c.describe()} {self._score(c)}" for c in sorted(kept + dropped, key=key))
                + f"; kept {len(alive)}")
        # rungs capped by a small n_epochs may leave several: the best, first
        w = min(alive, key=self._key)
        self._continue(w)
        if w.best is None:
            raise DivergenceError(
                f"{self.name}: training diverged with every setting tried ("
                + ", ".join(c.describe() for c in cands) + "). Try a smaller learning_rate, "
                "stronger regularisation, or normalize=True.")
        if not self.refit and w.best_epoch != w.epochs:
            w.state.restore(w.snap)  # also after a divergence: the arrays are valid
        w.snap = None
        if self.refit:  # the winner's state is not needed any more
            self._drop(w)
        record = {
            "metric": self.metric, "rungs": list(rungs),
            "validation": "holdout" if self.refit else "eval_set",
            "validation_rows": int(self.evals[0][0].n_rows),
            "candidates": [{"learning_rate": c.learning_rate, "normalize": c.normalize,
                            "curve": list(c.curve), "dropped_at": c.dropped_at,
                            "diverged": c.diverged} for c in cands],
            "winner": cands.index(w), "best_epoch": w.best_epoch,
            "best_score": w.best, "row_epochs": self.spent,
        }
        spare, self.spare = self.spare, None
        return RaceResult(w, w.best_epoch, self.spent, record, spare)

    def _continue(self, w):
        """Early stopping of the winner (see the module docstring)."""
        if self.refit and self.n_epochs is not None:
            return  # the refit trains the n_epochs asked for
        target = MAX_EPOCHS if self.n_epochs is None else self.n_epochs
        def progress(rec, _n):  # the most epochs the winner may run
            self.callback(rec, target)
        while not w.diverged and w.epochs < target and w.since_best < self.patience:
            if self.n_epochs is None:
                refit = (w.epochs + 1) if self.refit else 0
                if self.spent + self.share + refit > BUDGET:
                    break
            self.step(w, callback=progress if self.callback is not None and not self.refit
                      else None)
        self._log(f"chose {w.describe()}, best epoch {w.best_epoch} of {w.epochs} "
                  f"({self._score(w)}), {self.spent:.1f} row-epochs"
                  + ("; refit on all rows" if self.refit else ""))
