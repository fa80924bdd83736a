"""FMRanker: a factorization machine for implicit feedback, trained with BPR,
with fast top-k recommendation.

    import cfm
    model = cfm.FMRanker(n_factors=32, random_state=0).fit(train)   # users x items
    items, scores = model.recommend([0, 1, 2], k=10, exclude=train)
    model.evaluate(test, k=10, exclude=train)   # precision@10, recall@10, ndcg@10, map@10

The model is an FM over the concatenated row [user features | item features]
(src/cfm/_rank.pyx has the formulas); without side features a user and an
item are each a one-hot id (then it is matrix factorisation with item biases,
as implicit's and LightFM's BPR).  ``recommend`` splits the score into a user
block, an item block and their inner product (cfm._state.rank), so scoring
every item for a block of users is one matrix product and a partial sort.
"""
import time

import numpy as np

from ._compat import BaseEstimator
from ._lazy import sparse
from ._metrics import ranking_metrics
from ._model_file import write_model_file
from ._persist import _jsonable_params
from ._state.base import MAX_FACTORS
from ._rank import USERS_PER_BLOCK
from ._state.rank import FeatureRows, Pairs, RankState
from . import scoring
from ._validation import (MAX_COUNT, Boolean, Interval, Options, check_X, check_n_jobs,
                          check_params, draw_seed, effective_n_threads)
from .exceptions import DivergenceError, NotFittedError

# learning_rate=None (see the class docstring)
_DEFAULT_LR = {"bpr": 0.05, "warp": 0.02}

PARAMETER_RULES = {
    "n_factors": Interval(True, 1, MAX_FACTORS),
    "loss": Options(("bpr", "warp")),
    "max_sampled": Interval(True, 1, 100000),
    "eval_k": Interval(True, 1, 100000),
    "n_iter_no_change": Interval(True, 1, MAX_COUNT),
    "optimizer": Options(("adagrad", "sgd")),
    "learning_rate": Interval(False, 0, low_open=True, none=True),
    "n_epochs": Interval(True, 1, MAX_COUNT),
    "l2_w": Interval(False, 0),
    "l2_v": Interval(False, 0),
    "init_std": Interval(False, 0),
    "negative_sampling": Options(("uniform", "popularity")),
    "popularity_exponent": Interval(False, 0),
    "warm_start": Boolean(),
    "verbose": Interval(True, 0, MAX_COUNT),
}


def _ids(ids, n, name):
    """Row ids in [0, n) as int64 (None: all rows)."""
    if ids is None:
        return np.arange(n, dtype=np.int64)
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of ids, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        bad = arr[(arr < 0) | (arr >= n)][0]
        raise ValueError(f"{name} holds id {int(bad)}, outside [0, {n})")
    return arr


def _positives(R, name):
    """A canonical CSR matrix of the entries > 0 of a users x items matrix."""
    Rc = check_X(R, name=name)
    M = sparse.csr_matrix((Rc.data, Rc.indices, Rc.indptr), shape=Rc.shape)
    M.data = (M.data > 0).astype(np.float64)
    M.eliminate_zeros()
    M.sort_indices()
    return M


class FMRanker(BaseEstimator):
    """Factorization machine ranker for implicit feedback (BPR).

    Scores s(u, i) = FM([user features of u | item features of i]); trained
    with the Bayesian personalised ranking loss -log sigmoid(s(u, i) - s(u, j))
    over the positive pairs (u, i) of an interactions matrix and negatives j
    sampled per pair.  Only differences between items of one user are
    learnt: the bias and the user-side linear weights stay 0.

    Parameters
    ----------
    n_factors : int, default=32
        Dimension of the factors (embeddings), 1 to 256.
    loss : {"bpr", "warp"}, default="bpr"
        "bpr": -log sigmoid(s(u, i) - s(u, j)) with one sampled negative j
        per positive pair (Rendle et al. 2009).  "warp": negatives are drawn
        until one scores within a margin of 1 of the positive (at most
        ``max_sampled`` draws), and the hinge 1 - s(u, i) + s(u, j) is
        weighted by log(floor((n_items - 1) / draws)) (Weston et al. 2011,
        as LightFM's WARP): it concentrates on the top of the ranking.
    max_sampled : int, default=10
        Most negatives WARP draws per positive pair.
    optimizer : {"adagrad", "sgd"}, default="adagrad"
        Per-sample step: AdaGrad (per linear weight, row-wise on a feature's
        factor vector, as cfm's FM solvers) or plain SGD.
    learning_rate : float or None, default=None
        Step size; None: 0.05 for BPR, 0.02 for WARP (whose rank-weighted
        steps are up to log(n_items) times larger).
    n_epochs : int, default=50
        Passes over the positive pairs.  The defaults were chosen on a
        validation split of MovieLens 100K's training set
        (benchmarks/studies/rank_defaults.py,
        results/RESULTS_ranking_defaults.md): NDCG@10 0.143 for BPR (0.05,
        50 epochs; 0.140 after 100) and 0.143 for WARP (0.02, 50 epochs;
        0.146 after 100; with 0.05 it peaked at 0.138 after 20).  With
        held-out interactions, ``fit(..., eval_set=)`` stops early.
    l2_w, l2_v : float, default=1e-3
        L2 regularisation of the item-side linear weights and of the factors,
        applied to the features present in each sample (1e-3 was as good as
        or better than 1e-4 and 0 on that split).
    init_std : float, default=0.1
        Standard deviation of the normal initialisation of the factors.
    negative_sampling : {"uniform", "popularity"}, default="uniform"
        How a negative item is drawn for a positive pair: uniformly over the
        items, or with probability proportional to (1 + its positives) **
        ``popularity_exponent``.  A draw that is a positive of the user is
        redrawn (at most 64 times; then the pair is skipped and counted in
        ``history_``).
    popularity_exponent : float, default=0.75
    eval_k : int, default=10
        k of the NDCG@k that ``fit(..., eval_set=)`` tracks.
    n_iter_no_change : int, default=5
        Early stopping on ``eval_set``: epochs without improvement of its
        NDCG@k before training stops (the best epoch is kept).
    dtype : {"float32", "float64"} or None, default=None
        Precision of the parameters (None: float32).
    warm_start : bool, default=False
        ``fit`` continues from the current parameters when the feature widths
        and ``n_factors`` are unchanged.
    n_jobs : int or None, default=None
        Threads (scikit-learn's meaning).  Training is Hogwild (lock-free)
        across threads; ``recommend`` and ``predict`` give the same results
        for any number of threads.
    random_state : int, RandomState, Generator or None, default=None
        Seeds the initialisation, the order of the pairs and the negatives:
        with ``n_jobs=1`` a fit is bit-for-bit reproducible.
    verbose : int, default=0
        When > 0, print one line per epoch.

    Attributes
    ----------
    n_users_, n_items_ : int
        Rows of the training users' and items' features.
    n_user_features_, n_item_features_ : int
        Widths of the user and item features (the model has their sum).
    n_features_in_ : int
        ``n_user_features_ + n_item_features_``: the width of the
        concatenated rows ``predict`` scores.
    history_ : list of dict
        Per epoch: mean BPR (WARP) loss, pairs skipped, seconds, and with
        ``eval_set`` its NDCG@k.
    best_epoch_ : int
        The epoch whose parameters the model holds (the last one, or the
        best on ``eval_set``).
    """

    def __init__(self, n_factors=32, *, loss="bpr", max_sampled=10, optimizer="adagrad",
                 learning_rate=None, n_epochs=50, l2_w=1e-3, l2_v=1e-3, init_std=0.1,
                 negative_sampling="uniform", popularity_exponent=0.75, eval_k=10,
                 n_iter_no_change=5, dtype=None,
                 warm_start=False, n_jobs=None, random_state=None, verbose=0):
        self.n_factors = n_factors
        self.loss = loss
        self.max_sampled = max_sampled
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.n_epochs = n_epochs
        self.l2_w = l2_w
        self.l2_v = l2_v
        self.init_std = init_std
        self.negative_sampling = negative_sampling
        self.popularity_exponent = popularity_exponent
        self.eval_k = eval_k
        self.n_iter_no_change = n_iter_no_change
        self.dtype = dtype
        self.warm_start = warm_start
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------ input
    def _check_params(self):
        check_params(self, PARAMETER_RULES)
        if self.dtype not in (None, "float32", "float64"):
            raise ValueError(f"dtype must be None, 'float32' or 'float64', got {self.dtype!r}")
        check_n_jobs(self.n_jobs)

    @staticmethod
    def _feature_rows(X, n_rows, n_cols, name):
        """Validated feature rows (None: one-hot ids of ``n_rows`` rows)."""
        if X is None:
            if n_cols is not None and n_cols != n_rows:
                raise ValueError(f"{name} is needed: the model was fitted with "
                                 f"{n_cols} {name.split('_')[0]} features, not one-hot ids")
            return FeatureRows.identity(n_rows)
        Xc = check_X(X, name=name, n_features=n_cols)
        if n_rows is not None and Xc.shape[0] != n_rows:
            raise ValueError(f"{name} has {Xc.shape[0]} rows, expected {n_rows} (one per "
                             f"{name.split('_')[0]} of the interactions)")
        if Xc.shape[1] >= 2**31 - 1:
            raise ValueError(f"{name} has {Xc.shape[1]} columns; at most 2**31 - 2 are supported")
        return FeatureRows(Xc.indptr, Xc.indices, Xc.data, Xc.shape[1])

    def _check_fitted(self):
        state = getattr(self, "_state", None)
        if state is None:
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet. "
                                 "Call 'fit' with appropriate arguments before using it.")
        return state

    # ------------------------------------------------------------ fit
    def fit(self, interactions, user_features=None, item_features=None, *, eval_set=None,
            callback=None):
        """Fit on a users x items interactions matrix (SciPy sparse or 2-D
        array; every stored entry > 0 is a positive pair, the rest is
        unobserved).

        ``user_features`` (n_users, p_u) and ``item_features`` (n_items, p_i):
        side features, one row per user / item (SciPy sparse or arrays); None
        means one-hot ids (identity).  Include the id columns in them yourself
        when you also want per-user / per-item factors.  The fitted model
        keeps these rows: ``recommend`` scores them unless given others.
        ``eval_set``: held-out positives (a users x items matrix of the same
        shape): after each epoch its NDCG@``eval_k`` (every item ranked minus
        the training positives) is recorded in ``history_``; training stops
        after ``n_iter_no_change`` epochs without improvement and the best
        epoch's parameters are kept (``best_epoch_``).
        ``callback(record)``: called after each epoch with its ``history_``
        entry.
        """
        self._check_params()
        R = _positives(interactions, "interactions")
        n_users, n_items = R.shape
        if n_items < 2:
            raise ValueError(f"interactions has {n_items} item(s); ranking needs at least 2")
        if R.nnz == 0:
            raise ValueError("interactions holds no positive entry (every value is <= 0)")
        users = self._feature_rows(user_features, n_users, None, "user_features")
        items = self._feature_rows(item_features, n_items, None, "item_features")
        n_threads = effective_n_threads(self.n_jobs)
        dtype = np.dtype(self.dtype or "float32")
        state = getattr(self, "_state", None)
        if not (self.warm_start and state is not None and state.trainable
                and state.n_user_cols == users.n_cols
                and state.n_features == users.n_cols + items.n_cols
                and state.k == self.n_factors and state.dtype == dtype
                and state.fm.solver == self.optimizer):
            seed = draw_seed(self.random_state)
            init_seed, order_seed = np.random.SeedSequence(seed).generate_state(2, np.uint64)
            self._rng = np.random.default_rng(int(order_seed))
            state = RankState.new(users, items, k=self.n_factors, optimizer=self.optimizer,
                                  dtype=dtype, init_std=self.init_std,
                                  seed=int(init_seed) & (2**63 - 1), n_threads=n_threads)
            self.history_ = []
            self.n_epochs_ = 0
        else:
            state = RankState(state.fm, users.n_cols, users, items)
        E = None
        if eval_set is not None:
            E = _positives(eval_set, "eval_set")
            if E.shape != R.shape:
                raise ValueError(f"eval_set has shape {E.shape}, expected {R.shape} (the "
                                 "interactions' users x items)")
            e_users = np.flatnonzero(np.diff(E.indptr) > 0)
            E = E[e_users]
        pairs = Pairs(R)
        cdf = (pairs.popularity_cdf(self.popularity_exponent)
               if self.negative_sampling == "popularity" else np.zeros(0))
        self._state = state
        self.n_users_, self.n_items_ = n_users, n_items
        self.n_user_features_, self.n_item_features_ = users.n_cols, items.n_cols
        self.n_features_in_ = users.n_cols + items.n_cols
        lr = self.learning_rate or _DEFAULT_LR[self.loss]
        self.best_epoch_ = self.n_epochs_
        best, best_snap, waited, metric = -np.inf, None, 0, f"ndcg@{self.eval_k}"
        for _ in range(self.n_epochs):
            t0 = time.perf_counter()
            order = self._rng.permutation(len(pairs)).astype(np.int64)
            seed = int(self._rng.integers(0, 2**63 - 1))
            loss, n_done, n_bad, n_skip = state.train_epoch(
                pairs, order, cdf, learning_rate=lr, l2_w=self.l2_w,
                l2_v=self.l2_v, seed=seed, n_threads=n_threads, warp=self.loss == "warp",
                max_sampled=self.max_sampled)
            self.n_epochs_ += 1
            if n_bad or not state.finite(n_threads):
                raise DivergenceError(
                    f"training diverged at epoch {self.n_epochs_} (non-finite scores or "
                    f"parameters); lower learning_rate (now {lr})")
            rec = {"epoch": self.n_epochs_, f"train_{self.loss}": loss / max(n_done, 1),
                   "skipped": n_skip, "time": time.perf_counter() - t0}
            if E is not None:
                top, _ = self.recommend(e_users, self.eval_k, exclude=R)
                rec[metric] = ranking_metrics(top, E.indptr, E.indices, self.eval_k)["ndcg"]
                if rec[metric] > best:
                    best, waited, self.best_epoch_ = rec[metric], 0, self.n_epochs_
                    best_snap = state.snapshot(best_snap)
                else:
                    waited += 1
            else:
                self.best_epoch_ = self.n_epochs_
            self.history_.append(rec)
            if callback is not None:
                callback(dict(rec))
            if self.verbose:
                shown = f"  {metric} {rec[metric]:.5f}" if E is not None else ""
                print(f"epoch {rec['epoch']:4d}  {self.loss} loss {loss / max(n_done, 1):.5f}"
                      f"{shown}  skipped {n_skip}  {rec['time']:.2f}s", flush=True)
            if E is not None and waited >= self.n_iter_no_change:
                break
        if best_snap is not None and self.best_epoch_ != self.n_epochs_:
            state.restore(best_snap)  # the best epoch's parameters
        return self

    # ------------------------------------------------------------ scoring
    def predict(self, X):
        """FM scores of concatenated rows [user features | item features]
        (n_samples, n_features_in_) -- what ``recommend`` ranks by."""
        state = self._check_fitted()
        Xc = check_X(X, n_features=self.n_features_in_, estimator=self)
        return state.decision(Xc, effective_n_threads(self.n_jobs))

    def recommend(self, users=None, k=10, *, items=None, exclude=None, user_features=None,
                  item_features=None, n_jobs=None):
        """The k best items of each user: ``(item_ids, scores)``, both of
        shape (n_users, k), best first.

        users : ids of user rows (None: every row).  Rows of the training
            users' features, or of ``user_features`` when given (new users:
            rows of the model's user-feature width).
        items : candidate item ids (None: every item row); rows of the
            training items' features, or of ``item_features`` when given.
        exclude : optional users x items matrix (all user rows by all item
            rows, e.g. the training interactions); its entries > 0 are never
            recommended to that user.
        At most one column per candidate item (k is capped at their number);
        when fewer than k candidates remain for a user (exclusions), the
        rest of the row is padded with id -1 and score -inf.  Scores equal
        ``predict`` on the concatenated rows; ties go to the lower item id.
        Same results for any ``n_jobs``.
        """
        state = self._check_fitted()
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        U = self._feature_rows(user_features, None, state.n_user_cols, "user_features") \
            if user_features is not None else state.users
        I = self._feature_rows(item_features, None, state.n_features - state.n_user_cols,
                               "item_features") if item_features is not None else state.items
        u_ids = _ids(users, U.n_rows, "users")
        i_ids = _ids(items, I.n_rows, "items")
        ex = None
        if exclude is not None:
            ex = self._exclusions(exclude, U.n_rows, I.n_rows, u_ids, i_ids)
        n_threads = effective_n_threads(self.n_jobs if n_jobs is None else n_jobs)
        c_u, P = state.blocks(U, u_ids, "user", n_threads, pad=USERS_PER_BLOCK)
        b, Q = state.blocks(I, i_ids, "item", n_threads)
        pos, score = state.top_k(c_u, P, b, Q, max(1, min(int(k), len(i_ids))), ex, n_threads)
        ids = np.where(pos >= 0, i_ids[np.maximum(pos, 0)] if len(i_ids) else -1, -1)
        return ids.astype(np.int64), score

    @staticmethod
    def _exclusions(exclude, n_users, n_items, u_ids, i_ids):
        """(ptr, positions) of the excluded candidates of each requested user."""
        E = _positives(exclude, "exclude")
        if E.shape != (n_users, n_items):
            raise ValueError(f"exclude has shape {E.shape}, expected ({n_users}, {n_items}) "
                             "(all user rows by all item rows)")
        if len(u_ids) != n_users or np.any(u_ids != np.arange(n_users)):
            E = E[u_ids]
        ind = E.indices.astype(np.int64)
        if len(i_ids) != n_items or np.any(i_ids != np.arange(n_items)):
            pos_of = np.full(n_items, -1, dtype=np.int64)
            pos_of[i_ids] = np.arange(len(i_ids))
            mapped = pos_of[ind]
            keep = mapped >= 0
            row = np.repeat(np.arange(len(u_ids)), np.diff(E.indptr))
            counts = np.bincount(row[keep], minlength=len(u_ids))
            ptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
            return ptr, np.ascontiguousarray(mapped[keep])
        return np.ascontiguousarray(E.indptr, dtype=np.int64), np.ascontiguousarray(ind)

    def evaluate(self, test, k=10, *, exclude=None, user_features=None, item_features=None,
                 n_jobs=None):
        """Ranking metrics of held-out interactions ``test`` (users x items,
        entries > 0 relevant): mean precision@k, recall@k, NDCG@k and MAP@k
        over the users with at least one relevant item, ranking every item
        (minus ``exclude``, e.g. the training interactions).  Returns a dict
        {"precision@k": ..., "recall@k": ..., "ndcg@k": ..., "map@k": ...,
        "users": n}."""
        T = _positives(test, "test")
        users = np.flatnonzero(np.diff(T.indptr) > 0)
        top, _ = self.recommend(users, k, exclude=exclude, user_features=user_features,
                                item_features=item_features, n_jobs=n_jobs)
        T = T[users]
        m = ranking_metrics(top, T.indptr, T.indices, k)
        return {f"{name}@{k}" if name != "users" else name: v for name, v in m.items()}

    # ------------------------------------------------------------ model files
    def save(self, path):
        """Save the fitted model (cfm's versioned binary format, no pickle;
        load with :func:`cfm.load`).  The training feature rows are saved
        with it, so the loaded model recommends for the same users and items."""
        from . import __version__

        state = self._check_fitted()
        if not state.trainable:
            raise ValueError("a model loaded with scoring_only=True cannot be saved")
        arrays, entries = state.export()
        header = {"kind": state.kind, "estimator": type(self).__name__, "task": "ranking",
                  "params": _jsonable_params(self.get_params()), "history": self.history_,
                  "n_epochs_": int(self.n_epochs_),
                  "best_epoch_": int(getattr(self, "best_epoch_", self.n_epochs_)),
                  "rng_state": self._rng.bit_generator.state,
                  "cfm_version": __version__, "input_zero_based": True,
                  "n_users": int(self.n_users_), "n_items": int(self.n_items_)}
        header.update(entries)
        write_model_file(path, header, arrays)

    @classmethod
    def _from_file(cls, header, arrays, scoring_only=False):
        """A fitted ranker from a model file's (validated) header and arrays."""
        params = header.get("params", {})
        valid = cls._get_param_names()
        model = cls(**{k: v for k, v in params.items() if k in valid})
        model._check_params()
        if header.get("kind") != RankState.kind or header.get("task") != "ranking":
            raise ValueError(f"a {header.get('kind')!r} model cannot be an {cls.__name__}")
        if header["dtype"] not in RankState.dtypes:
            raise ValueError(f"unsupported parameter dtype {header['dtype']!r}")
        state = RankState.from_file(header, arrays, scoring_only)
        model._state = state
        model.n_users_, model.n_items_ = state.users.n_rows, state.items.n_rows
        model.n_user_features_ = state.n_user_cols
        model.n_item_features_ = state.n_features - state.n_user_cols
        model.n_features_in_ = state.n_features
        model.history_ = [dict(e) for e in header.get("history", [])]
        model.n_epochs_ = int(header.get("n_epochs_", len(model.history_)))
        model.best_epoch_ = int(header.get("best_epoch_", model.n_epochs_))
        model._rng = np.random.default_rng()
        if "rng_state" in header:
            model._rng.bit_generator.state = header["rng_state"]
        return model

    def _scorer(self):
        """What batch scoring (``cfm predict``) needs: FM scores of
        concatenated rows."""
        state = self._check_fitted()
        return scoring.Scorer(n_features=int(self.n_features_in_), zero_based=True,
                              logistic=False, decision=state.decision, n_jobs=self.n_jobs)
