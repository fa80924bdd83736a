"""cfm.dask on a LocalCluster of 2 worker processes x 1 thread (skipped
without the dask extra), and the parameter-mixing merge without Dask."""
import os
import pickle
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import scipy.sparse as sp

import cfm
from cfm._state.base import Hyper
from cfm._train import mix

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")
cdask = pytest.importorskip("cfm.dask")


def onehot_ctr(n, n_fields=12, ids=400, seed=0):
    """Click-log-shaped data: one Zipf-distributed id per field, labels from
    a planted FM (fixed; ``seed`` draws the rows)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, ids + 1) ** 1.1
    p /= p.sum()
    cols = rng.choice(ids, size=(n, n_fields), p=p) + np.arange(n_fields) * ids
    prng = np.random.default_rng(123)
    w = prng.normal(0, 0.6, n_fields * ids)
    V = prng.normal(0, 0.35, (n_fields * ids, 4))
    s = V[cols].sum(1)
    logit = w[cols].sum(1) + 0.5 * ((s ** 2).sum(1) - (V[cols] ** 2).sum((1, 2))) - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    X = sp.csr_matrix((np.ones(n * n_fields, np.float32), cols.ravel(),
                       np.arange(0, n * n_fields + 1, n_fields)), shape=(n, n_fields * ids))
    X.sort_indices()
    fields = np.repeat(np.arange(n_fields), ids)
    return X, y, fields


def auc(y, s):
    from cfm._metrics import METRICS

    return METRICS["auc"][0](y, s)


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def data():
    X, y, fields = onehot_ctr(25_000)
    return X[:20_000], y[:20_000], X[20_000:], y[20_000:], fields


def _dask(X, y, rows=5_000):
    return da.from_array(X, chunks=(rows, -1), asarray=False), da.from_array(y, chunks=rows)


# ---------------------------------------------------------------- merge (no Dask)
def _hyper(opt):
    return Hyper(loss="logistic", optimizer=opt, fit_intercept=True, learning_rate=0.1,
                 l2_w0=0.0, l2_w=1e-5, l2_v=1e-5, l1=0.0, ftrl_beta=1.0)


@pytest.mark.parametrize("opt", ["sgd", "adagrad", "ftrl"])
@pytest.mark.parametrize("mixing", ["sum", "average"])
def test_merge_of_one_worker_is_its_pass(opt, mixing):
    """One worker: the merged model is exactly the local pass's model."""
    X, y, _ = onehot_ctr(2_000, n_fields=5, ids=50)
    m = cfm.FMClassifier(solver=opt, n_epochs=1, random_state=0, n_jobs=1).fit(X, y)
    st = m._state
    base = st.clone()
    Xc = cfm._validation.check_X(X)
    yy = np.where(y > 0, 1.0, -1.0)
    rows, counts = mix.touched_rows(Xc.indices, X.shape[1])
    up = mix.local_pass(base, Xc, yy, None, _hyper(opt), 7, True, 1, rows, counts)
    ref = base.clone()
    from cfm._train.sgd import block_epoch
    block_epoch(ref, Xc, yy, None, _hyper(opt), np.random.default_rng(7), True, 1)
    mix.merge(base, [up], _hyper(opt), mixing)
    k = st.k
    cols = slice(1, 1 + k) if opt == "ftrl" else slice(0, None)  # FTRL w: recomputed
    np.testing.assert_array_equal(base.table[:, cols], ref.table[:, cols])
    np.testing.assert_allclose(base.table[:, 0], ref.table[:, 0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(base.w0_state, ref.w0_state, rtol=1e-12)


def test_merge_rules():
    """A row one worker touched keeps that worker's change (not shrunk);
    a row both touched: weighted average / sum of the changes; AdaGrad
    accumulators: summed increments."""
    X, y, _ = onehot_ctr(500, n_fields=3, ids=10)
    st = cfm.FMClassifier(n_epochs=1, random_state=0, n_jobs=1).fit(X, y)._state
    k, n = st.k, st.table.shape[0]
    cols = 1 + k + 2
    base = st.table[:, :cols].astype(np.float64)

    def update(rows, counts, delta):
        t = base[rows].copy()
        t[:, :1 + k] += delta
        t[:, 1 + k:] += 1.0  # accumulators
        return mix.Update(np.array(rows), np.array(counts, float), [t.astype(st.dtype)],
                          st.w0_state.copy(), 10, 0.0, 10.0, 0, 0.0)

    for mixing in ("average", "sum"):
        s = st.clone()
        a = update([0, 1], [3, 1], 0.5)
        b = update([1, 2], [1, 1], 0.25)
        mix.merge(s, [a, b], _hyper("adagrad"), mixing)
        got = s.table[:, :cols].astype(np.float64)
        np.testing.assert_allclose(got[0, :1 + k], base[0, :1 + k] + 0.5, rtol=1e-6)
        np.testing.assert_allclose(got[2, :1 + k], base[2, :1 + k] + 0.25, rtol=1e-6)
        both = 0.75 if mixing == "sum" else 0.375
        np.testing.assert_allclose(got[1, :1 + k], base[1, :1 + k] + both, rtol=1e-6)
        np.testing.assert_allclose(got[1, 1 + k:], base[1, 1 + k:] + 2.0, rtol=1e-6)
        np.testing.assert_array_equal(got[3:n], base[3:n])


def _reference_merge(state, updates, hyper, mixing):
    """The merge in plain NumPy (the reference of the cfm._mix kernels)."""
    updates = [u for u in updates if u.n_rows > 0]
    union, times = np.unique(np.concatenate([u.rows for u in updates]), return_counts=True)
    shared = union[times > 1]
    tables = state.mix_tables()
    for up in updates:
        alone = ~np.isin(up.rows, shared)
        for t, (_, arr, cols, *_) in enumerate(tables):
            arr[up.rows[alone], :cols] = up.tables[t][alone]
    for t, (_, arr, cols, avg, summed, ftrl) in enumerate(tables):
        if not len(shared):
            continue
        base = arr[shared, :cols].astype(np.float64)
        num, den, inc = (np.zeros_like(base) for _ in range(3))
        for up in updates:
            sel = np.flatnonzero(np.isin(up.rows, shared))
            pos = np.searchsorted(shared, up.rows[sel])
            R = up.tables[t][sel].astype(np.float64)
            B = base[pos]
            wgt = (R != B) * up.counts[sel, None]
            num[pos] += wgt * R
            den[pos] += wgt
            inc[pos] += R - B
        new = base
        if mixing == "sum":
            new[:, avg] += inc[:, avg]
        else:
            mean = (den > 0) & avg
            new[mean] = num[mean] / den[mean]
        new[:, summed] += inc[:, summed]
        if ftrl is not None:
            w, z, n = ftrl
            zz, nn = new[:, z], new[:, n]
            ww = -(zz - np.sign(zz) * hyper.l1) / ((hyper.ftrl_beta + np.sqrt(nn))
                                                  / hyper.learning_rate + hyper.l2_w)
            new[:, w] = np.where(np.abs(zz) <= hyper.l1, 0.0, ww)
        arr[shared, :cols] = new.astype(arr.dtype)
    mix._merge_bias(state.w0_state, updates, hyper)


@pytest.mark.parametrize("kind,opt", [("fm", "adagrad"), ("fm", "ftrl"), ("fm", "sgd"),
                                      ("ffm", "adagrad")])
@pytest.mark.parametrize("mixing", ["sum", "average"])
def test_merge_kernels_match_the_numpy_reference(kind, opt, mixing):
    """Three workers' passes over overlapping slices, merged by the kernels
    and by the NumPy reference: the same tables bit for bit."""
    X, y, fields = onehot_ctr(3_000, n_fields=5, ids=60)
    yy = np.where(y > 0, 1.0, -1.0)
    if kind == "fm":
        st = cfm.FMClassifier(solver=opt, n_epochs=1, random_state=0, n_jobs=1).fit(X, y)._state
    else:
        st = cfm.FFMClassifier(solver=opt, n_factors=4, n_epochs=1, random_state=0, n_jobs=1,
                               dtype="float32").fit(X, y, fields=fields)._state
    hyper = _hyper(opt)
    if opt == "ftrl":
        from dataclasses import replace

        hyper = replace(hyper, l1=0.01)
    ups = []
    for i, (a, b) in enumerate([(0, 1_000), (800, 2_000), (2_500, 3_000)]):
        Xc = cfm._validation.check_X(X[a:b], n_features=X.shape[1])
        rows, counts = mix.touched_rows(Xc.indices, X.shape[1])
        ups.append(mix.local_pass(st, Xc, yy[a:b], None, hyper, i, True, 1, rows, counts))
    got, want = st.clone(), st.clone()
    shared = mix.merge(got, ups, hyper, mixing)
    _reference_merge(want, ups, hyper, mixing)
    assert len(shared) and len(np.unique(shared)) == len(shared)
    for (_, a, *_), (_, b, *_) in zip(got.mix_tables(), want.mix_tables()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(got.w0_state, want.w0_state)
    with pytest.raises(ValueError, match="outside"):
        mix.merge(got, [mix.Update(np.array([X.shape[1]]), np.ones(1), ups[0].tables,
                                   ups[0].w0_state, 1, 0.0, 1.0, 0, 0.0)], hyper, mixing)


def test_resident_rows_give_the_model_of_sending_every_row():
    """Workers keeping their shard's rows between rounds and sent only the
    rows that changed elsewhere (mix.ResidentRows, tasks.run_round) end
    with the model of sending every row of each round's slice, with fewer
    bytes; a shard whose rows are not current refuses the round."""
    from cfm import _dask_tasks as tasks

    X, y, _ = onehot_ctr(4_000, n_fields=6, ids=80)
    m = cfm.FMClassifier(n_epochs=1, random_state=0, n_jobs=1).fit(X, y)
    hyper, nf = _hyper("adagrad"), X.shape[1]
    shards = [tasks.prepare(tasks.RawShard(X[a:a + 2_000], y[a:a + 2_000], None, None, 0,
                                           "arrays", None), m, nf, 0, 3, seed=a)
              for a in (0, 2_000)]
    ref, st = m._state.clone(), m._state.clone()
    sync = mix.ResidentRows(nf, [s.held for s in shards])
    sync.nonce = b"x"
    sent = every = 0
    for r, part in enumerate([0, 2, 1, 1, 0, 2]):
        ups_ref = [mix.local_pass(ref.take_rows(s.slices[part].rows), s.slices[part].Xc,
                                  s.slices[part].y, None, hyper, r, True, 1,
                                  s.slices[part].rows, s.slices[part].counts) for s in shards]
        mix.merge(ref, ups_ref, hyper)
        ups = []
        for k, s in enumerate(shards):
            sl = s.slices[part]
            full, idx, tabs = sync.message(k, st, sl.rows, sl.pos.astype(np.int32))
            msg = tasks.RowsMsg(full, idx, tabs, st.w0_state.copy(),
                                None if full is not None else (b"x", sync.round),
                                (b"x", sync.round + 1))
            sent += msg.nbytes if r else 0
            every += len(sl.rows) * st.table[0].nbytes if r else 0  # rows sent whole
            up = tasks.run_round(s, msg, hyper, r, True, 1, part)
            assert up.rows is None
            up.rows, up.counts = sl.rows, sl.counts
            ups.append(up)
        sync.merged([s.slices[part].rows for s in shards], [s.slices[part].pos for s in shards],
                    mix.merge(st, ups, hyper))
        np.testing.assert_array_equal(st.table, ref.table)
        np.testing.assert_array_equal(st.w0_state, ref.w0_state)
    assert 0 < sent < every
    stale = tasks.RowsMsg(None, np.zeros(0, np.int64), [st.table[:0, :11]], st.w0_state,
                          (b"x", 0), (b"x", 1))
    with pytest.raises(tasks.StaleShard):
        tasks.run_round(shards[0], stale, hyper, 0, True, 1, 0)


# ---------------------------------------------------------------- Dask
def test_fit_reaches_local_auc(client, data):
    Xtr, ytr, Xte, yte, _ = data
    Xd, yd = _dask(Xtr, ytr)
    # the same fixed settings as the distributed fit (which never races: cfm.dask)
    local = cfm.FMClassifier(n_epochs=6, random_state=0, n_jobs=1, auto_tune=False).fit(Xtr, ytr)
    model = cdask.DaskFMClassifier(n_epochs=6, random_state=0, client=client).fit(Xd, yd)
    a_local = auc(yte, local.decision_function(Xte))
    a_dask = auc(yte, model.decision_function(Xte))
    assert a_dask > a_local - 0.002, (a_dask, a_local)
    assert model.n_epochs_ == 6 and len(model.history_) == 6
    rec = model.history_[-1]
    assert rec["bytes_from_workers"] > 0 and rec["compute_s"] > 0


def test_default_rounds_grow_with_the_epochs(client, data, monkeypatch):
    """rounds_per_epoch=None with ROUND_GROWTH > 1: short rounds in the
    first epoch, ROUND_GROWTH times longer ones in each later epoch (a round
    then passes over several slices); deterministic, and as accurate as the
    local fit.  (ROUND_GROWTH = 1, the default: uniform rounds.)"""
    Xtr, ytr, Xte, yte, _ = data
    monkeypatch.setattr(cdask, "ROUND_ROWS", 2_000)  # 10k rows a worker: 5 slices
    monkeypatch.setattr(cdask, "ROUND_GROWTH", 4)
    Xd, yd = _dask(Xtr, ytr)
    model = cdask.DaskFMClassifier(n_epochs=4, random_state=0, client=client).fit(Xd, yd)
    assert [r["rounds"] for r in model.history_] == [5, 2, 1, 1]
    again = cdask.DaskFMClassifier(n_epochs=4, random_state=0, client=client).fit(Xd, yd)
    np.testing.assert_array_equal(again._state.table, model._state.table)
    local = cfm.FMClassifier(n_epochs=4, random_state=0, n_jobs=1, auto_tune=False).fit(Xtr, ytr)
    a_local = auc(yte, local.decision_function(Xte))
    assert auc(yte, model.decision_function(Xte)) > a_local - 0.002


def test_predict_is_local_predict_bit_for_bit(client, data):
    Xtr, ytr, Xte, yte, _ = data
    model = cdask.DaskFMClassifier(n_epochs=2, random_state=0, client=client).fit(
        *_dask(Xtr, ytr))
    local = model.to_local()
    assert type(local) is cfm.FMClassifier
    Xd = da.from_array(Xte, chunks=(1_500, -1), asarray=False)
    np.testing.assert_array_equal(model.predict_proba(Xd).compute(), local.predict_proba(Xte))
    np.testing.assert_array_equal(model.decision_function(Xd).compute(),
                                  local.decision_function(Xte))
    np.testing.assert_array_equal(model.predict(Xd).compute(), local.predict(Xte))
    dense = Xte[:600].toarray()
    np.testing.assert_array_equal(
        model.decision_function(da.from_array(dense, chunks=(250, -1))).compute(),
        local.decision_function(dense))
    # in-memory input is scored locally
    np.testing.assert_array_equal(model.predict_proba(Xte), local.predict_proba(Xte))


def test_dataframe_regressor(client):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3_000, 6))
    y = X @ rng.normal(size=6) + 0.1 * rng.normal(size=3_000)
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    ddf = dd.from_pandas(df, npartitions=4)
    dy = dd.from_pandas(pd.Series(y), npartitions=4)
    model = cdask.DaskFMRegressor(n_epochs=3, random_state=0, client=client).fit(ddf, dy)
    assert list(model.feature_names_in_) == list(df.columns)
    pred = model.predict(ddf).compute()
    np.testing.assert_array_equal(pred.to_numpy(), model.to_local().predict(df))
    assert np.isfinite(pred).all()


def test_files_each_read_on_one_worker_and_predict_files(client, tmp_path, data):
    Xtr, ytr, Xte, yte, _ = data
    paths = []
    for i in range(4):
        p = tmp_path / f"part{i}.svm"
        cfm.dump_libsvm(Xtr[i * 2_000:(i + 1) * 2_000], ytr[i * 2_000:(i + 1) * 2_000], p)
        paths.append(str(p))
    with distributed.get_task_stream(client=client) as ts:
        model = cdask.DaskFMClassifier(n_epochs=2, random_state=0, client=client).fit(
            str(tmp_path / "part*.svm"))
    reads = [t for t in ts.data if "read_files" in str(t["key"])]
    assert len(reads) == 2  # one task per worker (shard), each reading its own files
    assert len({t["worker"] for t in reads}) == 2
    assert model.n_features_in_ <= Xtr.shape[1] and model._input_zero_based
    # files -> files, byte-identical to `cfm predict`
    mpath = tmp_path / "model.cfm"
    model.save(mpath)
    assert type(cfm.load(mpath)) is cfm.FMClassifier
    outs = [str(tmp_path / f"out{i}.txt") for i in range(4)]
    stats = model.predict_files(paths, outs)
    assert [s["n_rows"] for s in stats] == [2_000] * 4
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(cfm.__file__)))]
        + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    for src, out in zip(paths[:2], outs[:2]):
        cli = out + ".cli"
        subprocess.run([sys.executable, "-m", "cfm", "predict", str(mpath), src, "-o", cli,
                        "-q"], check=True, env=env)
        assert open(out, "rb").read() == open(cli, "rb").read()


def test_ffm_libffm_files_with_eval_set(client, tmp_path, data):
    Xtr, ytr, Xte, yte, fields = data
    paths = []
    for i in range(2):
        p = tmp_path / f"part{i}.ffm"
        cfm.dump_libffm(Xtr[i * 4_000:(i + 1) * 4_000], ytr[i * 4_000:(i + 1) * 4_000],
                        fields, p)
        paths.append(str(p))
    ev = tmp_path / "eval.ffm"
    cfm.dump_libffm(Xte, yte, fields, ev)
    model = cdask.DaskFFMClassifier(n_factors=4, n_epochs=8, random_state=0, client=client,
                                    eval_metric="auc", n_iter_no_change=2).fit(
        paths, eval_set=str(ev))
    assert model._state.dtype == np.float32  # default: float32 (float16 is not mixed)
    assert model.n_fields_ == int(fields.max()) + 1
    assert 1 <= model.best_epoch_ <= model.n_epochs_ <= 8
    assert model.history_[model.best_epoch_ - 1]["eval_auc"] > 0.6


def test_refusals_and_conventions(client, data):
    Xtr, ytr, *_ = data
    Xd, yd = _dask(Xtr[:2_000], ytr[:2_000], 1_000)
    for solver in ("als", "mcmc"):
        with pytest.raises(ValueError, match="stays local"):
            cdask.DaskFMClassifier(solver=solver, client=client).fit(Xd, yd)
    with pytest.raises(ValueError, match="float32"):
        cdask.DaskFFMClassifier(dtype="float16", client=client).fit(
            Xd, yd, fields=np.zeros(Xtr.shape[1], int))
    with pytest.raises(TypeError, match="Dask array"):
        cdask.DaskFMClassifier(client=client).fit(Xtr, ytr)
    with pytest.raises(ValueError, match="mixing"):
        cdask.DaskFMClassifier(mixing="median", client=client).fit(Xd, yd)
    est = cdask.DaskFMClassifier(n_factors=4, learning_rate=0.05, client=client)
    params = est.get_params()
    assert params["client"] is client and params["n_factors"] == 4 and "mixing" in params
    from sklearn.base import clone

    # (a client cannot be deep-copied: clone an estimator using the current client)
    assert clone(est.set_params(client=None)).get_params()["learning_rate"] == 0.05
    est.set_params(client=client)
    fitted = est.set_params(n_epochs=1).fit(Xd, yd)
    # sample weights partitioned as X: unit weights train as no weights
    ones = cdask.DaskFMClassifier(n_epochs=1, random_state=0, client=client).fit(
        Xd, yd, sample_weight=da.ones(2_000, chunks=1_000))
    plain = cdask.DaskFMClassifier(n_epochs=1, random_state=0, client=client).fit(Xd, yd)
    np.testing.assert_array_equal(ones._state.table, plain._state.table)
    sliced = cdask.DaskFMClassifier(n_epochs=2, rounds_per_epoch=3, mixing="average",
                                    client=client, random_state=0).fit(Xd, yd)
    assert sliced.history_[-1]["rounds"] == 3 and np.isfinite(sliced.w_).all()
    # deterministic given the seed and the partitioning
    again = cdask.DaskFMClassifier(n_epochs=2, rounds_per_epoch=3, mixing="average",
                                   client=client, random_state=0).fit(Xd, yd)
    np.testing.assert_array_equal(again._state.table, sliced._state.table)
    with pytest.raises(ValueError, match="rounds_per_epoch"):
        cdask.DaskFMClassifier(rounds_per_epoch=0, client=client).fit(Xd, yd)
    back = pickle.loads(pickle.dumps(fitted))
    assert back.client is None
    np.testing.assert_array_equal(back.predict_proba(Xtr[:50]), fitted.predict_proba(Xtr[:50]))


def test_worker_killed_mid_fit_retries_the_round(client, data):
    """A worker process killed after the first round: its shard is rebuilt
    on a live worker and the round retried -- the fit finishes, no hang."""
    Xtr, ytr, Xte, yte, _ = data
    Xd, yd = _dask(Xtr[:8_000], ytr[:8_000], 2_000)
    pids = client.run(os.getpid)
    killed = []

    def kill_one(rec, n_epochs):
        if not killed:
            victim = sorted(pids)[0]
            os.kill(pids[victim], signal.SIGKILL)
            killed.append(victim)

    result = {}

    def run():
        try:
            result["model"] = cdask.DaskFMClassifier(n_epochs=3, random_state=0,
                                                     client=client).fit(Xd, yd, callback=kill_one)
        except Exception as exc:  # a clean error is acceptable too
            result["error"] = exc

    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(120)
    assert not th.is_alive(), "fit hung after a worker was killed"
    assert killed
    if "error" in result:
        assert str(result["error"])  # an exception with a message, not a hang
    else:
        assert result["model"].n_epochs_ == 3
        client.wait_for_workers(2, timeout=60)
        # the retried round gives what the round would have given
        ref = cdask.DaskFMClassifier(n_epochs=3, random_state=0, client=client).fit(Xd, yd)
        np.testing.assert_array_equal(result["model"]._state.table, ref._state.table)
    client.wait_for_workers(2, timeout=60)


def test_ffm_arrays_and_warm_start(client, data):
    Xtr, ytr, Xte, yte, fields = data
    Xd, yd = _dask(Xtr[:6_000], ytr[:6_000], 3_000)
    model = cdask.DaskFFMRegressor(n_factors=4, n_epochs=2, random_state=0, client=client,
                                   warm_start=True).fit(Xd, yd, fields=fields)
    assert model.n_fields_ == int(fields.max()) + 1 and model.n_epochs_ == 2
    before = model._state.lin.copy()
    ev = _dask(Xte[:2_000], yte[:2_000], 1_000)  # a Dask eval_set (gathered once)
    model.set_params(n_epochs=1).fit(Xd, yd, fields=fields, eval_set=ev)  # continues
    assert model.n_epochs_ == 3 and len(model.history_) == 3
    assert np.isfinite(model.history_[-1]["eval_rmse"])
    assert not np.array_equal(before, model._state.lin)
    pred = model.predict(da.from_array(Xte, chunks=(2_000, -1), asarray=False)).compute()
    np.testing.assert_array_equal(pred, model.to_local().predict(Xte))


def test_best_params_say_the_fit_was_fixed(client, data):
    Xtr, ytr, _, _, _ = data
    model = cdask.DaskFMClassifier(n_epochs=2, random_state=0, client=client).fit(
        *_dask(Xtr, ytr))
    bp = model.best_params_
    assert bp["auto"].startswith("off") and bp["n_epochs"] == 2 and bp["normalize"] is True


def test_multiclass_and_class_weight_are_refused(client, data):
    X, y, _, _, _ = data
    Xd, yd = _dask(X, np.asarray(y) + (np.arange(len(y)) % 7 == 0))  # labels 0, 1, 2
    with pytest.raises(ValueError, match="binary models without class_weight"):
        cfm.dask.DaskFMClassifier(n_epochs=1, client=client).fit(Xd, yd)
    Xd, yd = _dask(X, y)
    with pytest.raises(ValueError, match="binary models without class_weight"):
        cfm.dask.DaskFMClassifier(n_epochs=1, class_weight="balanced", client=client).fit(Xd, yd)
