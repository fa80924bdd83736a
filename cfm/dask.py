"""Distributed training and scoring on Dask (optional extra ``cfm[dask]``).

:class:`DaskFMClassifier`, :class:`DaskFMRegressor`, :class:`DaskFFMClassifier`
and :class:`DaskFFMRegressor` take the parameters of the local estimators
plus ``client=`` (default: the current ``distributed`` client), as
``xgboost.dask`` and ``lightgbm.dask`` do.

``fit`` trains on

* a Dask array (chunks SciPy sparse or NumPy; row chunks, all columns in
  one chunk) with labels as a Dask array of the same row chunks;
* a Dask DataFrame with labels as a Dask Series of the same partitions;
* a list of data files or a glob pattern (libsvm / libFM / libffm text,
  plain or gzip, or ``.cfmdata`` caches) that the workers read themselves
  with cfm's parsers: no training data passes through the client or the
  scheduler (the files must be readable by the workers, e.g. on a shared
  file system).

Training is synchronous parameter mixing (cfm/_train/mix.py): the rows are
split into one shard per worker (chunks / files in order, contiguously),
built once on that worker and kept in its memory, cut into slices.  Each
round every worker runs a local pass (cfm's kernels, Hogwild over the
worker's threads) over one or more of its slices from the merged model and
returns the rows it touched; the client merges them (nogil kernels: the
workers' changes summed or averaged per row, AdaGrad / FTRL state summed).
A worker keeps its shard's model rows between rounds and is sent only
those that changed elsewhere.  Rounds can grow after the first epoch
(``ROUND_GROWTH``; off by default).  Deterministic given ``random_state``
and the number of workers (with one thread per worker).
ALS and MCMC stay local.  ``eval_set`` (arrays, paths or small Dask
collections, gathered to the client once) and early stopping work as
locally; ``history_`` also records each round's compute / merge / transfer
time and bytes.

``predict``, ``predict_proba`` and ``decision_function`` score Dask
collections chunk by chunk on the workers with the model sent once; other
input is scored locally.  ``predict_files(inputs, outputs)`` scores files
on the workers, each output byte-identical to ``cfm predict``.
``to_local()`` returns the plain cfm estimator; ``save`` writes the same
model file (``cfm.load`` returns the local class).

Settings are fixed, as in a local out-of-core fit: the explicit ones, else
the defaults (``learning_rate``, ``normalize``, ``n_epochs``); the data-driven
race of the local in-memory fit (``auto_tune``) does not run on a cluster.
"""
import copy
import inspect
import os
import time

import numpy as np

from . import _dask_tasks as tasks
from ._train import mix
from ._train.stream import read_eval_file
from ._validation import draw_seed, set_feature_names
from .ffm import FFMClassifier, FFMRegressor
from .models import FMClassifier, FMRegressor

try:  # the optional extra
    import dask
    import dask.array as da
    import distributed
except ImportError as _exc:  # pragma: no cover - exercised without the extra
    raise ImportError("cfm.dask needs dask and distributed: pip install 'cfm[dask]'") from _exc

from ._dask_rounds import RoundsMixin  # noqa: E402  (imports distributed)

# When rounds_per_epoch is None: rows of a shard per round in the first epoch,
# the most rounds an epoch is cut into, and how many times longer the rounds
# of each later epoch are (see docs/distributed.md: 4 cuts the rounds of the
# 1M-row set from 100 to 29 at the same AUC, but measured slower there on 2
# shared cores -- the long rounds' passes took twice the time per row in the
# workers -- so rounds stay uniform by default).
ROUND_ROWS = 50_000
MAX_ROUNDS = 32
ROUND_GROWTH = 1
__all__ = ["DaskFMClassifier", "DaskFMRegressor", "DaskFFMClassifier", "DaskFFMRegressor"]


def _is_dask(X):
    return dask.is_dask_collection(X)


def _is_dataframe(X):
    return _is_dask(X) and hasattr(X, "map_partitions") and hasattr(X, "columns")


def _is_files(X):
    return isinstance(X, (str, os.PathLike)) or (
        isinstance(X, (list, tuple)) and X and all(isinstance(p, (str, os.PathLike)) for p in X))


def _groups(sizes, n_groups):
    """Contiguous groups of items (indices) with about equal total size."""
    n_groups = max(1, min(n_groups, len(sizes)))
    cum = np.cumsum(np.asarray(sizes, dtype=np.float64))
    total = cum[-1] if len(cum) else 0.0
    cuts = [0]
    for g in range(1, n_groups):
        target = total * g / n_groups
        cut = int(np.searchsorted(cum, target, side="left")) + 1
        # the nearer of the two cuts around the target (the first past it can
        # give one worker a whole item more: 5 of 8 equal files instead of 4)
        if cut >= 2 and abs(cum[cut - 2] - target) <= abs(cum[min(cut, len(cum)) - 1] - target):
            cut -= 1
        cuts.append(min(max(cut, cuts[-1] + 1), len(sizes) - (n_groups - g)))
    cuts.append(len(sizes))
    return [list(range(a, b)) for a, b in zip(cuts[:-1], cuts[1:])]


class _DaskMixin(RoundsMixin):
    """Distributed fit / scoring around a local cfm estimator class."""

    _local_class = None

    # ------------------------------------------------------------ plumbing
    def _client(self):
        if self.client is not None:
            return self.client
        try:
            return distributed.default_client()
        except ValueError:
            raise ValueError(f"{type(self).__name__} needs a Dask client: pass client= or "
                             "create one first (distributed.Client(...))") from None

    def __getstate__(self):
        state = super().__getstate__() if hasattr(super(), "__getstate__") else \
            dict(self.__dict__)
        state = dict(state)
        state["client"] = None  # a client does not travel
        state.pop("_dask_model", None)
        state.pop("_dask_timing", None)
        return state

    def _default_dtype(self):
        # parameter mixing averages float32/float64 records (not float16's packed ones)
        if self._state_class.uses_fields and not (self.warm_start and "_state" in self.__dict__):
            return "float32"
        return super()._default_dtype()

    def _local_params(self):
        params = self.get_params(deep=False)
        params.pop("client", None)
        params.pop("mixing", None)
        params.pop("rounds_per_epoch", None)
        return params

    def to_local(self):
        """The fitted model as the plain cfm estimator (a copy)."""
        self._check_fitted()
        params = self._local_params()
        local = self._local_class(**params)
        for name, value in self.__dict__.items():
            if name not in params and name not in ("client", "mixing", "rounds_per_epoch",
                                                   "_dask_model", "_dask_timing"):
                local.__dict__[name] = copy.deepcopy(value)
        return local

    def save(self, path):
        """Save the model: the same file as the local estimator's (``cfm.load``
        returns a :attr:`_local_class` instance)."""
        self.to_local().save(path)

    def partial_fit(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no partial_fit: each round of "
                                  "fit is one pass; use to_local().partial_fit for local "
                                  "updates")

    def _model_future(self):
        """The fitted model on the workers, sent once (until the next fit)."""
        client = self._client()
        cached = self.__dict__.get("_dask_model")
        state = self._current_tables()
        if cached is not None and cached[0] is client and cached[1] is state:
            return cached[2]
        # to one worker; the others fetch it from there (once each)
        fut = client.scatter(self.to_local(), hash=False)
        self._dask_model = (client, state, fut)
        return fut

    # ------------------------------------------------------------ scoring
    def _dask_score(self, X, method):
        fut = self._model_future()
        if _is_dataframe(X):
            if method == "predict_proba":
                meta = {str(c): "f8" for c in self.classes_}
            elif method == "predict" and hasattr(self, "classes_"):
                meta = (None, self.classes_.dtype)
            else:
                meta = (None, "f8")
            return X.map_partitions(tasks.score_block, fut, method, meta=meta)
        if not isinstance(X, da.Array):
            raise TypeError(f"expected a Dask array or DataFrame, got {type(X).__name__}")
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D, got {X.ndim} dimensions")
        if X.numblocks[1] > 1:
            X = X.rechunk({1: -1})
        if method == "predict_proba":
            return X.map_blocks(tasks.score_block, fut, method, dtype=np.float64,
                                chunks=(X.chunks[0], (2,)), meta=np.empty((0, 2)))
        dtype = self.classes_.dtype if method == "predict" and hasattr(self, "classes_") \
            else np.float64
        return X.map_blocks(tasks.score_block, fut, method, dtype=dtype, drop_axis=1,
                            chunks=(X.chunks[0],), meta=np.empty((0,), dtype=dtype))

    def predict(self, X):
        """Predictions; for a Dask collection a lazy one of the same partitions."""
        if _is_dask(X):
            return self._dask_score(X, "predict")
        return super().predict(X)

    def predict_files(self, inputs, outputs, **kwargs):
        """Score data files on the workers, ``inputs[i]`` into ``outputs[i]``.

        Each output holds the same bytes as ``cfm predict MODEL inputs[i] -o
        outputs[i]`` with the same options (``raw``, ``precision``,
        ``zero_based``, ``block_rows``, ...; see :meth:`predict_file`); the
        model is sent to each worker once.  ``inputs`` may be a glob
        pattern (outputs then a list of the same length, in sorted order).
        Returns the per-file statistics of predict_file, in input order.
        """
        inputs = tasks.expand_paths(inputs)
        outputs = [os.fspath(p) for p in ([outputs] if isinstance(outputs, (str, os.PathLike))
                                           else outputs)]
        if len(outputs) != len(inputs):
            raise ValueError(f"{len(inputs)} inputs but {len(outputs)} outputs")
        if len(set(outputs)) != len(outputs):
            raise ValueError("outputs must be distinct files")
        client = self._client()
        fut = self._model_future()
        futs = [client.submit(tasks.score_file, fut, src, dst, kwargs, pure=False)
                for src, dst in zip(inputs, outputs)]
        return client.gather(futs)

    # ------------------------------------------------------------ fit
    def _dask_fit(self, X, y, sample_weight, eval_set, fields, callback):
        dtype = self._validate_params()
        name = type(self).__name__
        if self.mixing not in mix.MIXINGS:
            raise ValueError(f"mixing must be one of {mix.MIXINGS}, got {self.mixing!r}")
        r = self.rounds_per_epoch
        if r is not None and (isinstance(r, bool) or not isinstance(r, (int, np.integer))
                              or not 1 <= r <= 10_000):
            raise ValueError(f"rounds_per_epoch must be None or an integer in [1, 10000], "
                             f"got {r!r}")
        if self._solver_spec().coordinate:
            raise ValueError(f"{name} trains with the per-sample solvers ('adagrad', 'sgd', "
                             f"'ftrl'); solver={self.solver!r} sweeps over all the data column "
                             f"by column and stays local: use cfm.{self._local_class.__name__}")
        if np.dtype(dtype) == np.float16:
            raise ValueError(f"{name} supports dtype 'float32' and 'float64' (parameter mixing "
                             "averages records; float16 ones are packed)")
        client = self._client()
        workers = sorted(client.scheduler_info()["workers"])
        if not workers:
            raise ValueError("the Dask cluster has no workers")
        self._dask_model = None
        t0 = time.perf_counter()
        self._dask_timing = timing = {}
        raws, source, zero_based = self._read_shards(client, workers, X, y, sample_weight)
        try:
            metas = client.gather([client.submit(tasks.raw_meta, r, pure=False)
                                   for r in raws])
            timing["read_s"] = time.perf_counter() - t0
            self._fit_shards(client, raws, metas, source, X, fields, eval_set, dtype,
                             zero_based, callback)
        finally:
            for r in raws:
                r.release()
        return self

    def _read_shards(self, client, workers, X, y, sample_weight):
        """Futures of the raw shards, one per worker, each built on its worker."""
        if _is_files(X):
            if y is not None or sample_weight is not None:
                raise ValueError("when X is a list of files, labels come from them: pass "
                                 "y=None and sample_weight=None")
            paths = tasks.expand_paths(X)
            groups = _groups([max(1, os.path.getsize(p)) for p in paths], len(workers))
            raws = [client.submit(tasks.read_files, [paths[i] for i in g], pure=False,
                                  workers=[workers[k]], allow_other_workers=True)
                    for k, g in enumerate(groups)]
            return raws, "files", None
        if not _is_dask(X):
            raise TypeError(f"{type(self).__name__}.fit takes a Dask array, a Dask DataFrame "
                            f"or data files; got {type(X).__name__} (use the local "
                            f"cfm.{self._local_class.__name__} for in-memory data)")
        if y is None or not _is_dask(y):
            raise ValueError("y must be a Dask array or Series partitioned as X")
        if _is_dataframe(X):
            xs = list(X.to_delayed())
            ys = list(y.to_delayed()) if hasattr(y, "map_partitions") \
                else list(y.to_delayed().ravel())
            sws = None if sample_weight is None else (
                list(sample_weight.to_delayed()) if hasattr(sample_weight, "map_partitions")
                else list(sample_weight.to_delayed().ravel()))
            sizes = [1] * len(xs)
        else:
            if X.ndim != 2:
                raise ValueError(f"X must be 2-D, got {X.ndim} dimensions")
            if X.numblocks[1] > 1:
                X = X.rechunk({1: -1})
            y = y.rechunk((X.chunks[0],))
            xs = list(X.to_delayed().ravel())
            ys = list(y.to_delayed().ravel())
            sws = None if sample_weight is None else list(
                sample_weight.rechunk((X.chunks[0],)).to_delayed().ravel())
            sizes = list(X.chunks[0])
        if len(ys) != len(xs) or (sws is not None and len(sws) != len(xs)):
            raise ValueError(f"X has {len(xs)} partitions but y (or sample_weight) has "
                             f"{len(ys)}: partition them alike")
        groups = _groups(sizes, len(workers))
        raws = []
        for k, g in enumerate(groups):
            d = dask.delayed(tasks.read_blocks, pure=False)(
                [xs[i] for i in g], [ys[i] for i in g],
                None if sws is None else [sws[i] for i in g])
            raws.append(client.compute(d, workers=[workers[k]], allow_other_workers=True))
        return raws, "arrays", None

    def _fit_shards(self, client, raws, metas, source, X, fields, eval_set, dtype, _zb,
                    callback):
        warm = self.warm_start and "_state" in self.__dict__
        fmts = {m["fmt"] for m in metas}
        if len(fmts) > 1:
            raise ValueError(f"the training files mix formats {sorted(fmts)}")
        fmt = fmts.pop()
        shift = 0
        if fmt == "libsvm":  # scikit-learn's "auto" over all the files: one-based
            ids = [m["min_id"] for m in metas if m["min_id"] >= 0]  # unless an id 0 occurs
            shift = 1 if ids and min(ids) > 0 else 0
        n_features = max(m["n_cols"] for m in metas) - shift
        if source == "arrays":
            n_features = int(X.shape[1])
        if warm:
            if n_features > self.n_features_in_:
                raise ValueError(f"X has {n_features} features, but {type(self).__name__} "
                                 f"is expecting {self.n_features_in_} features as input.")
            n_features = self.n_features_in_
        # labels: classes from every shard's label values
        labels = np.unique(np.concatenate([m["labels"] for m in metas]))
        if not warm:
            self._prepare_y(labels, len(labels), reset=True)
        if len(getattr(self, "classes_", ())) > 2 or getattr(self, "class_weight", None):
            raise ValueError(f"{type(self).__name__} trains binary models without "
                             "class_weight; for more than two classes or class weights use "
                             "cfm.FMClassifier (in memory or from files)")
        if fields is None and any(m["fields"] is not None for m in metas):
            fields = np.full(n_features, -1, np.int64)
            for m in metas:  # the first file (in order) that has a feature names its field
                f = m["fields"]
                if f is not None:
                    f = np.asarray(f)[:n_features]
                    head = fields[:len(f)]
                    fields[:len(f)] = np.where(head >= 0, head, f)
        fields = self._check_fields(fields, n_features, reset=not warm)
        evals = self._dask_evals(eval_set, n_features, shift)
        encoder = self._local_class(**self._local_params())
        if hasattr(self, "classes_"):
            encoder.classes_ = self.classes_
        n_parts = self._n_rounds(max(m["n_rows"] for m in metas))
        seed = int(np.random.default_rng(draw_seed(self.random_state)).integers(2**62))
        shards = [client.submit(tasks.prepare, r, encoder, n_features, shift, n_parts, seed + i,
                                bool(self.shuffle), pure=False)
                  for i, r in enumerate(raws)]
        t0 = time.perf_counter()
        summ = client.gather([client.submit(tasks.shard_summary, s, pure=False)
                              for s in shards])
        timing = self._dask_timing
        timing["prepare_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if warm:
            state = self._ensure_layout(dtype, self._hyper().learning_rate)
        else:
            y_mean = np.array([s["y_sum"] / max(s["w_sum"], 1e-300) for s in summ])
            w = np.array([s["w_sum"] for s in summ])
            state = self._init_state(n_features, y_mean, w, dtype, fields)
            if _is_dataframe(X):
                set_feature_names(self, X._meta)
            self._input_zero_based = (shift == 0) if fmt == "libsvm" else True
        timing["init_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._run_rounds(client, shards, summ, state, evals, callback)
        timing["train_s"] = time.perf_counter() - t0
        # the settings used (fixed: a distributed fit never races, issue 13)
        self._record(self._settings(), "off: distributed fit")

    def _n_rounds(self, shard_rows):
        """Slices a shard is cut into: rounds_per_epoch, or one per ROUND_ROWS
        rows of the largest shard, at most MAX_ROUNDS (measured, 2 workers,
        mixing="sum", AUC against the local fit: 100k-125k rows a worker a
        round -0.005 to -0.010; 50k-62.5k rows -0.0016 to +0.0033 on 200k and
        1M rows; 25k rows the same at twice the rounds: docs/distributed.md)."""
        if self.rounds_per_epoch is not None:
            return int(self.rounds_per_epoch)
        return int(min(MAX_ROUNDS, max(1, -(-shard_rows // ROUND_ROWS))))

    def _slices_per_round(self, n_parts, epoch):
        """Slices of a round in the ``epoch``-th epoch of this fit (from 0):
        one with a fixed rounds_per_epoch; else ROUND_GROWTH ** epoch -- the
        rounds may grow as AdaGrad's steps shrink (measured on the 1M-row
        set, sum mixing: rounds of 25k rows per worker in the first epoch, 4x
        longer each epoch after: 29 rounds in 5 epochs at the AUC of 100
        uniform ones; 4 rounds in every epoch: 20 rounds, -0.006)."""
        if self.rounds_per_epoch is not None:
            return 1
        return int(min(n_parts, ROUND_GROWTH ** min(epoch, 30)))

    def _dask_evals(self, eval_set, n_features, shift):
        """eval_set validated on the client (Dask collections gathered once)."""
        if eval_set is None:
            return []
        if isinstance(eval_set, (str, os.PathLike)):
            Xv, yv = read_eval_file(eval_set, n_features, zero_based=(shift == 0))
            return self._check_eval_set((Xv, yv), n_features)
        pairs = [eval_set] if isinstance(eval_set, tuple) else list(eval_set)
        out = []
        for Xv, yv in pairs:
            Xv, yv = dask.compute(Xv, yv) if _is_dask(Xv) or _is_dask(yv) else (Xv, yv)
            out.append((Xv, np.asarray(yv)))
        return self._check_eval_set(out, n_features)


def _dask_class(name, local, fit_doc):
    """A Dask estimator class: the local class's parameters plus ``client``."""
    sig = inspect.signature(local.__init__)
    params = list(sig.parameters.values())
    params.append(inspect.Parameter("mixing", inspect.Parameter.KEYWORD_ONLY,
                                    default="sum"))
    params.append(inspect.Parameter("rounds_per_epoch", inspect.Parameter.KEYWORD_ONLY,
                                    default=None))
    params.append(inspect.Parameter("client", inspect.Parameter.KEYWORD_ONLY, default=None))

    def __init__(self, *args, mixing="sum", rounds_per_epoch=None, client=None, **kwargs):
        local.__init__(self, *args, **kwargs)
        self.mixing = mixing
        self.rounds_per_epoch = rounds_per_epoch
        self.client = client

    __init__.__signature__ = sig.replace(parameters=params)
    ns = {"__init__": __init__, "_local_class": local, "__module__": __name__,
          "__doc__": (f"{local.__name__} trained and scored on a Dask cluster (see "
                      f":mod:`cfm.dask`).\n\n    Parameters: those of :class:`cfm."
                      f"{local.__name__}`, plus\n\n    client : distributed.Client or None, "
                      "default=None\n        The client to use; None: the current one.\n    mixing : "
                      "{'sum', 'average'}, default='sum'\n        How the workers' "
                      "changes of a parameter row are combined each round: 'sum' adds\n"
                      "        them (a sequential pass's progress), 'average' averages them "
                      "weighted\n        by touch counts (safe with many workers, but "
                      "about 1/P of the progress\n        on features every worker "
                      "touches).  See docs/distributed.md.\n    rounds_per_epoch : int or None, "
                      "default=None\n        Synchronisations per pass over the data: each "
                      "round every worker\n        trains on a fixed 1/rounds_per_epoch of "
                      "its rows (in a new order each\n        epoch).  None: rounds that grow "
                      "with the epochs -- in the first\n        epoch one per ROUND_ROWS "
                      "(50,000) rows of the largest shard (at most\n        MAX_ROUNDS, 32), "
                      "each later epoch ROUND_GROWTH (default 1) times\n        fewer, longer "
                      "rounds (at least one).\n")}
    ns.update(fit_doc)
    return type(name, (_DaskMixin, local), ns)


def _fm_fit(self, X, y=None, sample_weight=None, eval_set=None, *, callback=None):
    """Fit on a Dask array / DataFrame (with y) or a list / glob of data files.

    sample_weight: a Dask array or Series partitioned as X.  eval_set:
    (X_val, y_val) pairs (arrays, or Dask collections gathered to the client
    once) or a data file.  See :mod:`cfm.dask`.
    """
    return self._dask_fit(X, y, sample_weight, eval_set, None, callback)


def _ffm_fit(self, X, y=None, fields=None, sample_weight=None, eval_set=None, *,
             callback=None):
    """Fit on a Dask array / DataFrame (with y and ``fields``, one field id per
    column) or a list / glob of libffm files (fields from the files).  See
    :meth:`DaskFMClassifier.fit`."""
    return self._dask_fit(X, y, sample_weight, eval_set, fields, callback)


def _classifier_methods():
    def predict_proba(self, X):
        """Class probabilities (n_samples, 2); lazy for a Dask collection."""
        if _is_dask(X):
            return self._dask_score(X, "predict_proba")
        return self._local_class.predict_proba(self, X)

    def decision_function(self, X):
        """Raw scores (log-odds of classes_[1]); lazy for a Dask collection."""
        if _is_dask(X):
            return self._dask_score(X, "decision_function")
        return self._local_class.decision_function(self, X)

    return {"predict_proba": predict_proba, "decision_function": decision_function}


DaskFMClassifier = _dask_class("DaskFMClassifier", FMClassifier,
                               dict(fit=_fm_fit, **_classifier_methods()))
DaskFMRegressor = _dask_class("DaskFMRegressor", FMRegressor, dict(fit=_fm_fit))
DaskFFMClassifier = _dask_class("DaskFFMClassifier", FFMClassifier,
                                dict(fit=_ffm_fit, **_classifier_methods()))
DaskFFMRegressor = _dask_class("DaskFFMRegressor", FFMRegressor, dict(fit=_ffm_fit))
