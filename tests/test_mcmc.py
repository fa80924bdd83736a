"""solver="mcmc": Gibbs kernels against the NumPy reference, the sampler on
planted data, n_jobs independence, model files, bad input."""
import numpy as np
import pytest
import reference_mcmc as ref
import scipy.sparse as sp
from conftest import make_table, random_params, random_sparse

import cfm
from cfm import _mcmc
from cfm._train import coordinate, gibbs
from cfm._validation import check_X


# ----------------------------------------------------------------- RNG
def test_normal_streams_match_reference():
    idx = np.arange(20, dtype=np.int64)
    got = _mcmc.normal_draws(12345, 7, 3, idx)
    want = [ref.Stream(12345, 7, 3, i).normal() for i in idx]
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=0)
    assert abs(got.mean()) < 1.0 and 0.3 < got.std() < 2.0


def test_tail_normal_matches_reference_and_truncates():
    a = np.array([-3.0, -0.2, 0.0, 0.4, 0.6, 2.0, 8.0, 40.0])
    got = _mcmc.latent_draws(99, 4, a)
    want = [ref.Stream(99, 4, ref.LATENT, i).tail_normal(ai) for i, ai in enumerate(a)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert np.all(got > a)
    # distribution check: E[x | x > 1] = phi(1) / Q(1) = 1.5251
    many = _mcmc.latent_draws(5, 1, np.full(20000, 1.0))
    assert many.mean() == pytest.approx(1.5251, abs=0.02)


# ----------------------------------------------------------------- one sweep
def _kernel_state(X, y, w0, w, V, normalize):
    Xc = check_X(sp.csr_matrix(X))
    data = coordinate.Data(Xc, normalize)
    k = V.shape[1]
    table = make_table(w, V, np.float64)
    cache = np.empty((1 + k, Xc.n_rows))
    _mcmc.refresh(data.data, data.indices, data.indptr, table, k, w0, y, 0, False, 0, 0,
                  cache, np.array(y, dtype=float), True, np.empty(0), 1)
    return Xc, data, table, cache


@pytest.mark.parametrize("do_sample", [True, False])
@pytest.mark.parametrize("normalize", [False, True])
def test_sweep_matches_reference(rng, do_sample, normalize):
    n, d, k = 40, 9, 3
    X = random_sparse(n, d, 3, rng)
    y = rng.normal(size=n) * 2 + 1
    w0, w, V = random_params(d, k, rng, scale=0.3)
    group = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2], dtype=np.int32)
    G = 3
    hyp = dict(alpha=1.7, reg0=0.5, mu0=0.2, mu_w=rng.normal(size=G), lam_w=rng.uniform(1, 3, G),
               mu_v=rng.normal(0, 0.1, (k, G)), lam_v=rng.uniform(1, 3, (k, G)))
    Xc, data, table, cache = _kernel_state(X, y, w0, w, V, normalize)
    w0a = np.array([w0])
    _mcmc.sweep(data.col_ptr, data.row_idx, data.col_val, data.col_wval, data.sw,
                data.blocks, data.colseg, group, cache, table, k,
                w0a, hyp["alpha"], hyp["reg0"], hyp["mu0"], hyp["mu_w"], hyp["lam_w"],
                hyp["mu_v"], hyp["lam_v"], True, True, do_sample, 777, 3, 1, 0)
    Xd = ref.scale_rows(X.toarray(), normalize)
    rw0, rw, rV = ref.sweep(Xd, y, w0, w, V, group, hyp["alpha"], hyp["reg0"], hyp["mu0"],
                            hyp["mu_w"], hyp["lam_w"], hyp["mu_v"], hyp["lam_v"], True,
                            do_sample, 777, 3)
    assert w0a[0] == pytest.approx(rw0, rel=1e-10)
    np.testing.assert_allclose(table[:, 0], rw, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(table[:, 1:1 + k], rV, rtol=1e-9, atol=1e-12)
    # the caches the kernel kept up to date equal a fresh computation
    np.testing.assert_allclose(cache[0], ref.predict(Xd, rw0, rw, rV) - y, rtol=1e-9,
                               atol=1e-10)
    np.testing.assert_allclose(cache[1:].T, Xd @ rV, rtol=1e-9, atol=1e-10)


def test_float32_model_close_to_float64():
    rng = np.random.default_rng(11)
    X, y, _ = _one_hot_ratings(rng, n=400)
    kw = dict(n_factors=2, solver="mcmc", n_epochs=3, n_burn_in=0, random_state=0, n_jobs=1)
    a = cfm.FMRegressor(dtype="float32", **kw).fit(X, y)
    b = cfm.FMRegressor(dtype="float64", **kw).fit(X, y)
    assert a._samples.dtype == np.float32 and b._samples.dtype == np.float64
    np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("do_sample", [True, False])
def test_refresh_probit_latent_targets(rng, do_sample):
    n, d, k = 50, 7, 2
    X = random_sparse(n, d, 3, rng)
    w0, w, V = random_params(d, k, rng, scale=0.8)
    y_pm = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    data = coordinate.Data(check_X(X), False)
    table = make_table(w, V, np.float64)
    cache = np.empty((1 + k, n))
    zbuf = np.zeros(n)
    loss = _mcmc.refresh(data.data, data.indices, data.indptr, table, k, w0, y_pm, 1,
                         do_sample, 31, 2, cache, zbuf, True, np.empty(0), 1)
    pred = ref.predict(X.toarray(), w0, w, V)
    z = ref.latent_targets(pred, y_pm, 31, 2, do_sample)
    np.testing.assert_allclose(cache[0], pred - z, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(zbuf, z, rtol=1e-9, atol=1e-10)
    assert np.all(np.sign(z) == y_pm)
    from scipy.stats import norm
    assert loss == pytest.approx(-norm.logcdf(y_pm * pred).sum(), rel=1e-9)
    # the light pass (no recomputation from X) takes pred = e + z
    loss2 = _mcmc.refresh(data.data, data.indices, data.indptr, table, k, w0, y_pm, 1,
                          do_sample, 31, 3, cache, zbuf, False, np.empty(0), 1)
    z3 = ref.latent_targets(pred, y_pm, 31, 3, do_sample)
    np.testing.assert_allclose(cache[0], pred - z3, rtol=1e-9, atol=1e-10)
    assert loss2 == pytest.approx(loss, rel=1e-9)


def test_hyper_sampler_matches_reference(rng):
    d, k, G = 12, 3, 2
    group = np.array([0] * 5 + [1] * 7, dtype=np.int32)
    table = make_table(rng.normal(size=d), rng.normal(size=(d, k)), np.float64)
    hs = gibbs.HyperSampler(np.random.default_rng(3), group, G, k)
    hs.mu_w = np.array([0.1, -0.2])
    hs.mu_v = rng.normal(size=(k, G))
    mu_w0, mu_v0 = hs.mu_w.copy(), hs.mu_v.copy()
    hs.draw(12.5, 100, table, k, coordinate.TASK_REGRESSION, True)
    alpha, lam_w, mu_w, lam_v, mu_v = ref.hyper_draw(
        np.random.default_rng(3), 12.5, 100, table[:, 0], table[:, 1:1 + k], group, G, mu_w0,
        mu_v0, True)
    assert hs.alpha == pytest.approx(alpha, rel=1e-12)
    np.testing.assert_allclose(hs.lam_w, lam_w, rtol=1e-12)
    np.testing.assert_allclose(hs.mu_w, mu_w, rtol=1e-12)
    np.testing.assert_allclose(hs.lam_v, lam_v, rtol=1e-12)
    np.testing.assert_allclose(hs.mu_v, mu_v, rtol=1e-12)


def test_exclusive_blocks():
    # columns 0-2 one-hot (one per row), 3-4 one-hot, 5 dense
    rows = np.arange(6)
    X = np.zeros((6, 6))
    X[rows, rows % 3] = 1
    X[rows, 3 + rows % 2] = 1
    X[:, 5] = 1
    data = coordinate.Data(check_X(X), False)
    np.testing.assert_array_equal(data.blocks, [0, 3, 5, 6])


# ----------------------------------------------------------------- estimators
def _one_hot_ratings(rng, n_users=60, n_items=40, n=3000, k=2, noise=0.5):
    U = rng.normal(0, 0.8, (n_users, k))
    I = rng.normal(0, 0.8, (n_items, k))
    bu = rng.normal(0, 0.3, n_users)
    bi = rng.normal(0, 0.3, n_items)
    u = rng.integers(0, n_users, n)
    i = rng.integers(0, n_items, n)
    truth = 3.0 + bu[u] + bi[i] + (U[u] * I[i]).sum(1)
    y = truth + rng.normal(0, noise, n)
    X = sp.csr_matrix((np.ones(2 * n), np.column_stack([u, n_users + i]).ravel(),
                       np.arange(0, 2 * n + 1, 2)), shape=(n, n_users + n_items))
    return X, y, truth


def test_recovers_noise_precision_and_truth():
    rng = np.random.default_rng(0)
    X, y, truth = _one_hot_ratings(rng, n=6000, noise=0.5)
    Xtr, ytr, Xte, tte = X[:5000], y[:5000], X[5000:], truth[5000:]
    m = cfm.FMRegressor(n_factors=2, solver="mcmc", n_epochs=150, random_state=0, n_jobs=1)
    m.fit(Xtr, ytr)
    assert m.alpha_ == pytest.approx(1 / 0.5 ** 2, rel=0.2)
    err = np.sqrt(np.mean((m.predict(Xte) - tte) ** 2))
    assert err < 0.25 * np.std(tte)
    # the linear model (no factors) cannot explain the interactions
    lin = cfm.FMRegressor(n_factors=0, solver="mcmc", n_epochs=60, random_state=0, n_jobs=1)
    lin.fit(Xtr, ytr)
    assert err < np.sqrt(np.mean((lin.predict(Xte) - tte) ** 2)) - 0.1


@pytest.mark.parametrize("cls", [cfm.FMRegressor, cfm.FMClassifier])
def test_n_jobs_identical(cls, monkeypatch):
    monkeypatch.setattr(coordinate, "MIN_BLOCK_NNZ", 0)  # exercise the parallel blocks
    rng = np.random.default_rng(1)
    X, y, _ = _one_hot_ratings(rng, n=1500)
    if cls is cfm.FMClassifier:
        y = y > np.median(y)
    out = []
    for nj in (1, 2):
        m = cls(n_factors=3, solver="mcmc", n_epochs=12, random_state=3, n_jobs=nj)
        m.fit(X, y, eval_set=(X[:200], y[:200]))
        out.append((m._samples.copy(), m._sample_w0.copy(), m.history_))
        s = m.predict(X) if cls is cfm.FMRegressor else m.predict_proba(X)
        out[-1] += (s,)
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])
    np.testing.assert_array_equal(out[0][3], out[1][3])
    for a, b in zip(out[0][2], out[1][2]):
        assert {k: v for k, v in a.items() if k != "time"} == \
            {k: v for k, v in b.items() if k != "time"}


def test_seed_reproducible_and_groups_change_result():
    rng = np.random.default_rng(2)
    X, y, _ = _one_hot_ratings(rng, n=800)
    kw = dict(n_factors=2, solver="mcmc", n_epochs=8, random_state=5, n_jobs=1)
    a = cfm.FMRegressor(**kw).fit(X, y).predict(X)
    b = cfm.FMRegressor(**kw).fit(X, y).predict(X)
    np.testing.assert_array_equal(a, b)
    # default: one prior group per one-hot field (here users, items)
    groups = np.r_[np.zeros(60, int), np.ones(40, int)]
    m = cfm.FMRegressor(**kw).fit(X, y, groups=groups)
    np.testing.assert_array_equal(a, m.predict(X))
    assert m.n_prior_groups_ == 2
    c = cfm.FMRegressor(**kw).fit(X, y, groups=np.zeros(100, int)).predict(X)
    assert not np.array_equal(a, c)
    assert np.sqrt(np.mean((c - y) ** 2)) < np.std(y)


def test_auto_groups():
    rng = np.random.default_rng(3)
    X, y, _ = _one_hot_ratings(rng, n=300)
    dense = rng.normal(size=(300, 2))
    X2 = sp.hstack([sp.csr_matrix(dense[:, :1]), X, sp.csr_matrix(dense[:, 1:])]).tocsr()
    g, n = coordinate.auto_groups(coordinate.Data(check_X(X2), False))
    assert n == 3
    assert g[0] == g[-1] == 0 and len(set(g[1:61])) == 1 and len(set(g[61:101])) == 1
    assert g[1] != g[61] and 0 not in (g[1], g[61])
    # nothing one-hot: a single group
    g, n = coordinate.auto_groups(coordinate.Data(check_X(dense), False))
    assert n == 1


def test_burn_in_and_thinning():
    rng = np.random.default_rng(4)
    X, y, _ = _one_hot_ratings(rng, n=500)
    m = cfm.FMRegressor(n_factors=2, solver="mcmc", n_epochs=20, n_burn_in=5, n_kept_samples=4,
                        random_state=0, n_jobs=1).fit(X, y)
    assert m._samples.shape == (4, X.shape[1], 3)
    assert len(m.history_) == 20 and m.n_epochs_ == 20
    # the last kept sample is the final state
    np.testing.assert_array_equal(m._samples[-1][:, 0], m.w_)
    m2 = cfm.FMRegressor(n_factors=2, solver="mcmc", n_epochs=20, n_burn_in=5,
                         random_state=0, n_jobs=1).fit(X, y)
    assert m2._samples.shape[0] == 15
    # regression predictions are clipped to the training range
    p = m2.predict(X * 10)
    assert p.min() >= y.min() - 1e-12 and p.max() <= y.max() + 1e-12


def test_eval_set_history_and_verbose(capsys):
    rng = np.random.default_rng(5)
    X, y, _ = _one_hot_ratings(rng, n=1200)
    m = cfm.FMRegressor(n_factors=2, solver="mcmc", n_epochs=10, n_burn_in=2, random_state=0,
                        n_jobs=1, verbose=1)
    m.fit(X[:1000], y[:1000], eval_set=(X[1000:], y[1000:]))
    err = capsys.readouterr().err
    assert err.count("epoch") >= 10 and "eval_rmse" in err
    h = m.history_
    assert all("eval_rmse" in r and "alpha" in r for r in h)
    # the last eval metric is that of the kept samples' posterior mean
    final = np.sqrt(np.mean((m.predict(X[1000:]) - y[1000:]) ** 2))
    assert h[-1]["eval_rmse"] == pytest.approx(final, rel=1e-9)


def test_classifier_probit():
    rng = np.random.default_rng(6)
    X, y, truth = _one_hot_ratings(rng, n=3000, noise=0.3)
    lab = np.where(truth[:3000] + rng.normal(0, 0.3, 3000) > 3.0, "yes", "no")
    m = cfm.FMClassifier(n_factors=2, solver="mcmc", n_epochs=40, random_state=0, n_jobs=1,
                         eval_metric="auc")
    m.fit(X[:2500], lab[:2500], eval_set=(X[2500:], lab[2500:]))
    proba = m.predict_proba(X[2500:])
    np.testing.assert_allclose(proba.sum(1), 1.0)
    from sklearn.metrics import roc_auc_score
    auc = roc_auc_score(lab[2500:] == "yes", proba[:, 1])
    assert auc > 0.8
    assert m.history_[-1]["eval_auc"] == pytest.approx(auc, abs=1e-9)
    assert set(m.predict(X[2500:])) <= {"yes", "no"}
    np.testing.assert_array_equal(m.predict(X[2500:]) == "yes", proba[:, 1] > 0.5)


@pytest.mark.parametrize("cls", [cfm.FMRegressor, cfm.FMClassifier])
def test_save_load_predicts_identically(cls, tmp_path):
    rng = np.random.default_rng(7)
    X, y, _ = _one_hot_ratings(rng, n=600)
    if cls is cfm.FMClassifier:
        y = np.where(y > np.median(y), 1, 0)
    m = cls(n_factors=3, solver="mcmc", n_epochs=10, random_state=0, n_jobs=1).fit(X, y)
    path = tmp_path / "m.cfm"
    m.save(path)
    m2 = cfm.load(path)
    assert type(m2) is cls and m2.solver == "mcmc"
    Xn = X[::7]
    if cls is cfm.FMRegressor:
        np.testing.assert_array_equal(m.predict(Xn), m2.predict(Xn))
    else:
        np.testing.assert_array_equal(m.predict_proba(Xn), m2.predict_proba(Xn))
        np.testing.assert_array_equal(m.decision_function(Xn), m2.decision_function(Xn))
    np.testing.assert_array_equal(m._samples, m2._samples)
    assert m2.alpha_ == m.alpha_
    # a file whose samples are missing is refused clearly
    from cfm._model_file import read_model_file
    arrays, header = m._export_state()
    del arrays["mcmc_samples"]
    m._export_state = lambda: (arrays, header)
    bad = tmp_path / "bad.cfm"
    m.save(bad)
    with pytest.raises(cfm.ModelFileError, match="samples"):
        cfm.load(bad)
    assert read_model_file(path)[0]["solver"] == "mcmc"


def test_sklearn_clone_and_params():
    from sklearn.base import clone
    m = cfm.FMRegressor(solver="mcmc", n_epochs=30, n_burn_in=5, n_kept_samples=10)
    c = clone(m)
    assert c.get_params() == m.get_params()
    assert c.get_params()["n_burn_in"] == 5


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize("groups, match", [
    (np.zeros(5, int), "one entry per feature"),
    (np.r_[np.zeros(99, int), -1], "non-negative"),
    (np.full(100, 0.5), "integers"),
    (np.zeros((100, 1), int), "1-D"),
])
def test_bad_groups(groups, match):
    rng = np.random.default_rng(8)
    X, y, _ = _one_hot_ratings(rng, n=200)
    with pytest.raises(ValueError, match=match):
        cfm.FMRegressor(solver="mcmc", n_epochs=3).fit(X, y, groups=groups)


def test_bad_usage():
    rng = np.random.default_rng(9)
    X, y, _ = _one_hot_ratings(rng, n=200)
    groups = np.zeros(X.shape[1], int)
    with pytest.raises(ValueError, match="groups is only used by solver='mcmc'"):
        cfm.FMRegressor(solver="adagrad").fit(X, y, groups=groups)
    with pytest.raises(ValueError, match="groups is only used"):
        cfm.FMRegressor(solver="als").fit(X, y, groups=groups)
    with pytest.raises(ValueError, match="sample_weight"):
        cfm.FMClassifier(solver="mcmc").fit(X, y > 3, sample_weight=np.ones(200))
    with pytest.raises(ValueError, match="sample_weight"):
        cfm.FMRegressor(solver="mcmc").fit(X, y, sample_weight=-np.ones(200))
    with pytest.raises(ValueError, match="partial_fit"):
        cfm.FMRegressor(solver="mcmc").partial_fit(X, y)
    with pytest.raises(ValueError, match="warm_start"):
        cfm.FMRegressor(solver="mcmc", warm_start=True).fit(X, y)
    with pytest.raises(ValueError, match="n_burn_in"):
        cfm.FMRegressor(solver="mcmc", n_epochs=5, n_burn_in=5).fit(X, y)
    with pytest.raises(ValueError, match="n_kept_samples"):
        cfm.FMRegressor(solver="mcmc", n_kept_samples=0).fit(X, y)
    with pytest.raises(ValueError, match="in memory"):
        cfm.FMRegressor(solver="mcmc").fit([(X, y)])
    for solver in ("als", "mcmc"):
        with pytest.raises(ValueError, match="does not support solver"):
            cfm.FFMRegressor(solver=solver).fit(X, y, fields=np.zeros(X.shape[1], int))
    with pytest.raises(ValueError, match="X has 3 features"):
        cfm.FMRegressor(solver="mcmc", n_epochs=3).fit(X, y).predict(np.ones((2, 3)))


def test_sweep_block_phases_thread_independent_and_match_serial():
    """Exclusive-block phases (segment sums, draws, updates): bit-identical for
    any thread count, and equal (up to summation order) to the serial path."""
    rng = np.random.default_rng(12)
    X, y, _ = _one_hot_ratings(rng, n=700)
    k = 3
    Xc = check_X(X)
    data = coordinate.Data(Xc, False)
    assert len(data.blocks) == 3
    w0, w, V = random_params(X.shape[1], k, rng, scale=0.2)
    group = np.zeros(X.shape[1], dtype=np.int32)
    outs = []
    for nt, min_nnz in [(1, 0), (3, 0), (2, 0), (1, 10**9)]:
        table = make_table(w, V, np.float64)
        cache = np.empty((1 + k, Xc.n_rows))
        _mcmc.refresh(data.data, data.indices, data.indptr, table, k, w0, y, 0, False, 0, 0,
                      cache, np.zeros(0), True, np.empty(0), 1)
        w0a = np.array([w0])
        for t in range(3):
            _mcmc.sweep(data.col_ptr, data.row_idx, data.col_val, data.col_wval, data.sw,
                data.blocks, data.colseg,
                        group, cache, table, k, w0a, 2.0, 1.0, 0.0, np.zeros(1), np.ones(1),
                        np.zeros((k, 1)), np.ones((k, 1)), True, True, True, 9, t, nt, min_nnz,
                        1)
        outs.append((table.copy(), cache.copy(), w0a[0]))
    for o in outs[1:3]:
        np.testing.assert_array_equal(outs[0][0], o[0])
        np.testing.assert_array_equal(outs[0][1], o[1])
    np.testing.assert_allclose(outs[0][0], outs[3][0], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(outs[0][1], outs[3][1], rtol=1e-8, atol=1e-9)


def test_column_segments():
    rng = np.random.default_rng(13)
    X = random_sparse(100, 12, 3, rng)
    data = coordinate.Data(check_X(X), False)
    cs = data.colseg
    assert cs.shape == (12, _mcmc.N_SEG_PY + 1)
    np.testing.assert_array_equal(cs[:, 0], data.col_ptr[:-1])
    np.testing.assert_array_equal(cs[:, -1], data.col_ptr[1:])
    assert np.all(np.diff(cs, axis=1) >= 0)
    # segment s of every column holds rows of the same row range [b_s, b_{s+1})
    S = cs.shape[1] - 1
    lo_hi = []
    for s in range(S):
        rows = np.concatenate([data.row_idx[cs[j, s]:cs[j, s + 1]] for j in range(12)])
        lo_hi.append((rows.min(), rows.max()) if rows.size else None)
    filled = [r for r in lo_hi if r is not None]
    assert all(a[1] < b[0] for a, b in zip(filled, filled[1:]))
    assert sum(int(cs[j, s + 1] - cs[j, s]) for j in range(12) for s in range(S)) == X.nnz


@pytest.mark.parametrize("do_sample", [True, False])
def test_weighted_sweep_matches_reference(rng, do_sample):
    n, d, k = 40, 8, 2
    X = random_sparse(n, d, 3, rng)
    y = rng.normal(size=n)
    sw = rng.uniform(0, 3, n)
    w0, w, V = random_params(d, k, rng, scale=0.3)
    group = np.zeros(d, dtype=np.int32)
    Xc = check_X(X)
    data = coordinate.Data(Xc, False, sw)
    table = make_table(w, V, np.float64)
    cache = np.empty((1 + k, n))
    loss = _mcmc.refresh(data.data, data.indices, data.indptr, table, k, w0, y, 0, False, 0, 0,
                         cache, np.empty(0), True, data.sw, 1)
    assert loss == pytest.approx(0.5 * np.sum(sw * (ref.predict(X.toarray(), w0, w, V) - y) ** 2))
    w0a = np.array([w0])
    _mcmc.sweep(data.col_ptr, data.row_idx, data.col_val, data.col_wval, data.sw, data.blocks,
                data.colseg, group, cache, table, k, w0a, 1.5, 0.0, 0.0, np.zeros(1), np.ones(1),
                np.zeros((k, 1)), np.ones((k, 1)), True, True, do_sample, 4, 2, 1, 0)
    rw0, rw, rV = ref.sweep(X.toarray(), y, w0, w, V, group, 1.5, 0.0, 0.0, np.zeros(1),
                            np.ones(1), np.zeros((k, 1)), np.ones((k, 1)), True, do_sample, 4, 2,
                            sw=sw)
    assert w0a[0] == pytest.approx(rw0, rel=1e-10)
    np.testing.assert_allclose(table[:, 0], rw, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(table[:, 1:1 + k], rV, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("solver", ["mcmc", "als"])
def test_integer_weights_equal_repeated_rows(solver):
    rng = np.random.default_rng(14)
    X, y, _ = _one_hot_ratings(rng, n=400)
    reps = rng.integers(1, 4, 400)
    Xr = X[np.repeat(np.arange(400), reps)]
    yr = np.repeat(y, reps)
    kw = dict(n_factors=2, solver=solver, n_epochs=4, random_state=0, n_jobs=1,
              dtype="float64")
    a = cfm.FMRegressor(**kw).fit(X, y, sample_weight=reps)
    b = cfm.FMRegressor(**kw).fit(Xr, yr)
    np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=1e-6, atol=1e-6)
