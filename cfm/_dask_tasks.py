"""What the workers of a Dask cluster run for cfm.dask (no Dask import here).

Shards: the training rows of one worker, read there (chunks of a Dask
collection, or data files parsed with cfm's readers) and kept in the
worker's memory for the whole fit.  Rounds: a local pass of the per-sample
solver over a shard (cfm._train.mix).  Scoring: blocks of a collection and
whole files with a model sent once.  Functions are module level, so that
Dask pickles them by reference.
"""
import glob as _glob
import os
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from . import data as cfm_data
from ._train.mix import Update, compact, group_positions, local_pass, touched_rows
from ._validation import check_sample_weight, check_X, effective_n_threads


@dataclass
class RawShard:
    """Rows of one shard as read, before the model's facts are known."""

    X: object            # scipy CSR, ids as read
    y: np.ndarray
    sw: object           # float64 weights or None
    fields: object       # libffm: field of each column (-1: absent), else None
    min_id: int          # smallest column id (-1: no non-zero); libsvm "auto"
    fmt: str             # "arrays", "libsvm", "libffm" or "cache"
    zero_based: object   # a cache's recorded rule, else None


@dataclass
class Slice:
    """The rows of one round of a shard: validated rows whose ids are
    renumbered onto the model rows they touch (``rows``, with ``counts``;
    ``pos``: their positions in the shard's ``held``), encoded labels,
    weights."""

    Xc: object
    y: np.ndarray
    sw: object
    rows: np.ndarray
    counts: np.ndarray
    pos: np.ndarray = None


@dataclass
class Shard:
    """A prepared shard: its rows cut into the slices of the rounds of an
    epoch (one slice: a round is a pass).  Between rounds it keeps the model
    rows of all its slices (``local``: the model restricted to ``held``,
    sent in full on the first round, then only the rows that changed
    elsewhere: cfm._train.mix.ResidentRows); ``token`` names the round after
    which ``local`` is current (None: not current)."""

    slices: list
    y_sum: float         # sum of weight * encoded label (the initial bias)
    w_sum: float
    held: np.ndarray = None
    local: object = None
    token: object = None


@dataclass
class RowsMsg:
    """What a worker is sent before a round (cfm._train.mix.ResidentRows):
    either ``full``, the model restricted to the shard's held rows, or the
    rows at positions ``idx`` of held with their per-table values; the bias
    state; the token the shard must hold (``expect``) and the one it holds
    after the round."""

    full: object
    idx: object
    tables: object
    w0_state: np.ndarray
    expect: object
    token: object

    @property
    def nbytes(self):
        if self.full is not None:
            return int(sum(a.nbytes for _, a, *_ in self.full.mix_tables()))
        return int(self.idx.nbytes + sum(t.nbytes for t in self.tables))


class StaleShard(RuntimeError):
    """A shard's resident model rows are not those the client assumes (the
    shard was rebuilt or copied after a failure): the round is retried with
    every worker sent all its rows."""


def _as_csr(block):
    """A chunk or partition (scipy sparse, NumPy, pandas) as CSR."""
    if sp.issparse(block):
        return sp.csr_matrix(block)
    if hasattr(block, "to_numpy"):  # pandas
        block = block.to_numpy(dtype=np.float64)
    arr = np.asarray(block)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    return sp.csr_matrix(arr)


def _vector(block):
    if block is None:
        return None
    if hasattr(block, "to_numpy"):
        block = block.to_numpy()
    return np.asarray(block).reshape(-1)


def stack_csr(mats):
    """Row-stack CSR matrices of possibly different widths (the widest wins)."""
    mats = [sp.csr_matrix(m) for m in mats]
    if len(mats) == 1:
        return mats[0]
    n_cols = max(m.shape[1] for m in mats)
    dtype = np.result_type(*[m.dtype for m in mats])
    data = np.concatenate([m.data.astype(dtype, copy=False) for m in mats])
    indices = np.concatenate([m.indices.astype(np.int64, copy=False) for m in mats])
    offs = np.cumsum([0] + [m.nnz for m in mats[:-1]])
    indptr = np.concatenate([mats[0].indptr[:1].astype(np.int64)] +
                            [m.indptr[1:].astype(np.int64) + o for m, o in zip(mats, offs)])
    return sp.csr_matrix((data, indices, indptr), shape=(sum(m.shape[0] for m in mats),
                                                         n_cols))


def read_blocks(xs, ys, sws):
    """A raw shard from chunks / partitions of Dask collections."""
    X = stack_csr([_as_csr(b) for b in xs])
    y = np.concatenate([_vector(b) for b in ys])
    sw = None if sws is None else np.concatenate([_vector(b).astype(np.float64) for b in sws])
    return RawShard(X, y, sw, None, int(X.indices.min()) if X.nnz else -1, "arrays", None)


def read_files(paths, fmt="auto"):
    """A raw shard from data files, read on this worker with cfm's readers.
    libsvm ids are read as written (zero_based=True): whether they are
    shifted is decided over every file of the fit (see cfm.dask)."""
    Xs, ys, fields, fmts, zb = [], [], None, set(), None
    for path in paths:
        f = cfm_data._resolve_format(path, fmt)
        fmts.add("libsvm" if f == "libfm" else f)
        ff = None
        if f == "libffm":
            X, y, ff = cfm_data.load_libffm(path, allow_nonfinite=False)
        elif f == "cache":
            X, y, ff = cfm_data.load_cache(path)
            X = sp.csr_matrix((np.array(X.data), np.array(X.indices), np.array(X.indptr)),
                              shape=X.shape)
            y = np.array(y)
            zb = True
        else:
            X, y = cfm_data.load_libsvm(path, zero_based=True, allow_nonfinite=False)
        if ff is not None:
            ff = np.asarray(ff)
            if fields is None:
                fields = ff
            else:  # a feature keeps the field of its first appearance
                n = max(len(fields), len(ff))
                a = np.full(n, -1, np.int64)
                a[:len(fields)] = fields
                b = np.full(n, -1, np.int64)
                b[:len(ff)] = ff
                fields = np.where(a >= 0, a, b)
        Xs.append(X)
        ys.append(np.asarray(y))
    if len(fmts) > 1:
        raise ValueError(f"the training files mix formats {sorted(fmts)}: {list(paths)}")
    X = stack_csr(Xs)
    return RawShard(X, np.concatenate(ys), None, fields,
                    int(X.indices.min()) if X.nnz else -1, fmts.pop(), zb)


def raw_meta(raw):
    """What the client needs from a raw shard to build the model (small)."""
    y = raw.y
    labels = np.unique(y) if y.dtype.kind in "biufcUSOb" and y.size else y[:0]
    return {"n_rows": int(raw.X.shape[0]), "n_cols": int(raw.X.shape[1]),
            "labels": labels[:64], "n_labels": int(len(labels)), "fields": raw.fields,
            "min_id": raw.min_id, "fmt": raw.fmt, "zero_based": raw.zero_based}


def prepare(raw, encoder, n_features, shift, n_parts=1, seed=0, shuffle=True):
    """The shard a fit trains on: ids shifted (one-based libsvm), validated
    against the model's width, labels encoded by ``encoder`` (a local
    estimator holding the fit's classes_), rows cut into ``n_parts`` slices
    (a seeded random split when ``shuffle``), each with its ids renumbered
    onto the model rows it touches: a round sends a worker those rows only."""
    X = raw.X
    indices = X.indices - shift if shift else X.indices
    if X.nnz and int(indices.max()) >= n_features:  # cannot happen: n_features is the max
        raise ValueError("a shard has a feature id beyond the model")
    X = sp.csr_matrix((X.data, indices, X.indptr), shape=(X.shape[0], n_features))
    Xc = check_X(X, estimator=encoder, n_features=n_features)
    y = encoder._prepare_y(raw.y, Xc.n_rows, reset=False)
    sw = check_sample_weight(raw.sw, Xc.n_rows)
    w = np.ones(Xc.n_rows) if sw is None else sw
    y_sum, w_sum = float(np.dot(w, y)), float(w.sum())
    n = Xc.n_rows
    # the shard's held rows (every feature it touches), its ids renumbered onto
    # them once; then each slice's rows are positions in held (bincounts over
    # held, not over the whole model: the model may be much wider)
    held, _ = touched_rows(Xc.indices, n_features)
    X = sp.csr_matrix((Xc.data, compact(Xc.indices, held, n_features), Xc.indptr),
                      shape=(n, max(1, len(held))))
    order = np.random.default_rng(seed).permutation(n) if shuffle and n_parts > 1 \
        else np.arange(n)
    scratch = np.zeros(X.shape[1], np.int32)
    slices = []
    for p in range(n_parts):
        sel = np.sort(order[n * p // n_parts:n * (p + 1) // n_parts])
        Xp = X[sel] if n_parts > 1 else X
        pos, counts = touched_rows(Xp.indices, X.shape[1], scratch)
        Xp = sp.csr_matrix((Xp.data, compact(Xp.indices, pos, X.shape[1]), Xp.indptr),
                           shape=(Xp.shape[0], max(1, len(pos))))
        Xpc = check_X(Xp, estimator=encoder, n_features=max(1, len(pos)), min_samples=0)
        slices.append(Slice(Xpc, y[sel], None if sw is None else sw[sel], held[pos], counts,
                            pos))
    return Shard(slices, y_sum, w_sum, held)


def shard_summary(shard):
    """What the client keeps of a shard: its rows, each slice's touched rows,
    touch counts (int32) and positions in ``held`` (int32)."""
    return {"n_rows": int(sum(s.Xc.n_rows for s in shard.slices)), "y_sum": shard.y_sum,
            "w_sum": shard.w_sum, "held": shard.held, "rows": [s.rows for s in shard.slices],
            "counts": [s.counts.astype(np.int32) for s in shard.slices],
            "pos": [s.pos.astype(np.int32) for s in shard.slices]}


def _threads(n_jobs):
    """Threads of a task: n_jobs, or (None) the worker's thread count."""
    if n_jobs is None:
        try:
            from distributed import get_worker

            return max(1, int(get_worker().state.nthreads))
        except (ImportError, ValueError, AttributeError):
            pass
    return effective_n_threads(n_jobs)


def run_round(shard, msg, hyper, seed, shuffle, n_jobs, parts=(0,)):
    """One round on a worker: bring the shard's resident model rows up to
    date from ``msg`` (a RowsMsg), run local passes over the slices
    ``parts`` of the shard from them (one after the other, the first with
    ``seed``), keep the result and return it as one Update without rows and
    counts (the client has them: cfm._train.mix.group_positions)."""
    if msg.full is not None:
        shard.local = msg.full
    elif shard.local is None or shard.token != msg.expect:
        raise StaleShard("the shard's model rows are not the ones the client assumes "
                         "(rebuilt or copied after a failure)")
    else:
        for t, (_, arr, cols, *_) in enumerate(shard.local.mix_tables()):
            arr[msg.idx, :cols] = msg.tables[t]
    shard.token = None  # not current while the passes run (a failure leaves it so)
    local = shard.local
    local.w0_state[...] = msg.w0_state
    parts = [int(p) for p in np.atleast_1d(parts)]
    t0 = time.perf_counter()
    up = Update(None, None, [], msg.w0_state.copy(), 0, 0.0, 0.0, 0, 0.0)
    threads = _threads(n_jobs)
    for j, part in enumerate(parts):
        sl = shard.slices[part]
        if sl.Xc.n_rows == 0:  # a shard with fewer rows than slices
            continue
        s = int(seed) if j == 0 else int(np.random.SeedSequence([int(seed), j]).generate_state(
            1, np.uint64)[0])
        sub = local.take_rows(sl.pos)
        one = local_pass(sub, sl.Xc, sl.y, sl.sw, hyper, s, shuffle, threads, sl.rows,
                         sl.counts, copy=False)
        for t, (_, arr, cols, *_) in enumerate(local.mix_tables()):
            arr[sl.pos, :cols] = one.tables[t]
        local.w0_state[...] = one.w0_state
        up.tables = one.tables
        up.n_rows += one.n_rows
        up.loss_sum += one.loss_sum
        up.weight_sum += one.weight_sum
        up.n_bad += one.n_bad
    if len(parts) > 1 and up.n_rows:
        at, _ = group_positions([shard.slices[p].pos for p in parts],
                                [shard.slices[p].counts for p in parts], len(shard.held))
        up.tables = [np.ascontiguousarray(arr[at, :cols])
                     for _, arr, cols, *_ in local.mix_tables()]
    up.w0_state = local.w0_state.copy()
    up.seconds = time.perf_counter() - t0
    shard.token = msg.token
    return up


def score_block(X, model, method):
    """``model.<method>(X)`` for one chunk / partition (``model``: a local estimator)."""
    index = getattr(X, "index", None)
    if hasattr(X, "to_numpy"):
        X = X.to_numpy()
    if X.shape[0] == 0:  # an empty chunk: the model refuses empty input
        if method == "predict_proba":
            out = np.zeros((0, 2))
        elif method == "predict" and hasattr(model, "classes_"):
            out = model.classes_[:0]
        else:
            out = np.zeros(0)
    else:
        out = getattr(model, method)(X)
    if index is not None:
        import pandas as pd

        if out.ndim == 2:
            return pd.DataFrame(out, index=index, columns=[str(c) for c in model.classes_])
        return pd.Series(out, index=index)
    return out


def score_file(model, src, dst, kwargs):
    """``model.predict_file(src, dst)`` on a worker, with its threads."""
    kw = dict(kwargs)
    if kw.get("n_jobs") is None:
        kw["n_jobs"] = _threads(None)
    stats = model.predict_file(src, dst, **kw)
    stats["path"] = os.fspath(src)
    return stats


def expand_paths(spec):
    """A glob pattern, a path, or a list of them -> sorted list of paths."""
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    out = []
    for item in items:
        item = os.fspath(item)
        if any(ch in item for ch in "*?["):
            found = sorted(_glob.glob(item))
            if not found:
                raise FileNotFoundError(f"no file matches {item!r}")
            out.extend(found)
        else:
            if not os.path.exists(item):
                raise FileNotFoundError(f"{item}: no such file")
            out.append(item)
    if not out:
        raise ValueError("no training files given")
    return out
