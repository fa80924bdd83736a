"""solver="als": one sweep against the NumPy reference, monotone objective,
n_jobs independence, classification (probit EM), early stopping."""
import numpy as np
import pytest
import reference_mcmc as ref
import scipy.sparse as sp
from conftest import make_table, random_params, random_sparse

import cfm
from cfm import _mcmc
from cfm._train import als, coordinate
from cfm._validation import check_X


def als_objective(m, X, y):
    """The regularised objective ALS minimises, of a fitted FMRegressor."""
    l2_w, l2_v = als.resolved_l2(m.l2_w, m.l2_v)
    r = m.predict(X) - np.asarray(y, dtype=np.float64)
    return als.objective(m.w0_, m.w_, m.V_, r, float(m.l2_w0), l2_w, l2_v)


def _ratings(rng, n_users=50, n_items=30, n=2000, k=2, noise=0.3):
    U = rng.normal(0, 0.8, (n_users, k))
    I = rng.normal(0, 0.8, (n_items, k))
    u = rng.integers(0, n_users, n)
    i = rng.integers(0, n_items, n)
    truth = 3.0 + (U[u] * I[i]).sum(1) + 0.3 * rng.normal(size=n_users)[u]
    X = sp.csr_matrix((np.ones(2 * n), np.column_stack([u, n_users + i]).ravel(),
                       np.arange(0, 2 * n + 1, 2)), shape=(n, n_users + n_items))
    return X, truth + rng.normal(0, noise, n), truth


@pytest.mark.parametrize("fit_w0", [True, False])
def test_one_als_sweep_matches_reference(rng, fit_w0):
    n, d, k = 35, 8, 3
    X = random_sparse(n, d, 3, rng)
    y = rng.normal(size=n) + 2
    w0, w, V = random_params(d, k, rng, scale=0.3)
    Xc = check_X(X)
    data = coordinate.Data(Xc, False)
    table = make_table(w, V, np.float64)
    cache = np.empty((1 + k, n))
    _mcmc.refresh(data.data, data.indices, data.indptr, table, k, w0, y, 0, False, 0, 0,
                  cache, np.array(y, dtype=float), True, np.empty(0), 1)
    w0a = np.array([w0])
    l2_w0, l2_w, l2_v = 0.1, 0.7, 1.3
    group = np.zeros(d, dtype=np.int32)
    _mcmc.sweep(data.col_ptr, data.row_idx, data.col_val, data.col_wval, data.sw,
                data.blocks, data.colseg, group, cache, table, k,
                w0a, 1.0, l2_w0, 0.0, np.zeros(1), np.full(1, l2_w), np.zeros((k, 1)),
                np.full((k, 1), l2_v), fit_w0, True, False, 0, 0, 1, 0)
    rw0, rw, rV = ref.sweep(X.toarray(), y, w0, w, V, group, 1.0, l2_w0, 0.0, np.zeros(1),
                            np.full(1, l2_w), np.zeros((k, 1)), np.full((k, 1), l2_v), fit_w0,
                            False, 0, 0)
    assert w0a[0] == pytest.approx(rw0, rel=1e-10)
    np.testing.assert_allclose(table[:, 0], rw, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(table[:, 1:1 + k], rV, rtol=1e-9, atol=1e-12)


def test_objective_decreases_monotonically():
    rng = np.random.default_rng(0)
    X, y, _ = _ratings(rng)
    objs = []
    for t in range(1, 9):
        m = cfm.FMRegressor(n_factors=3, solver="als", n_epochs=t, l2_w0=0.1, l2_w=2.0,
                            l2_v=3.0, dtype="float64", random_state=0, n_jobs=1).fit(X, y)
        objs.append(als_objective(m, X, y))
    assert np.all(np.diff(objs) <= 1e-9 * abs(objs[0])), objs
    assert objs[-1] < 0.5 * objs[0]


def test_als_fits_planted_data_and_history():
    rng = np.random.default_rng(1)
    X, y, truth = _ratings(rng, n=4000)
    m = cfm.FMRegressor(n_factors=2, solver="als", n_epochs=15, random_state=0, n_jobs=1)
    m.fit(X[:3000], y[:3000], eval_set=(X[3000:], y[3000:]))
    rmse = np.sqrt(np.mean((m.predict(X[3000:]) - truth[3000:]) ** 2))
    assert rmse < 0.5 * np.std(truth)
    assert "eval_rmse" in m.history_[0] and m.best_epoch_ >= 1
    losses = [r["train_loss"] for r in m.history_]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("cls", [cfm.FMRegressor, cfm.FMClassifier])
def test_als_n_jobs_identical(cls, monkeypatch):
    monkeypatch.setattr(coordinate, "MIN_BLOCK_NNZ", 0)
    rng = np.random.default_rng(2)
    X, y, _ = _ratings(rng, n=1500)
    if cls is cfm.FMClassifier:
        y = y > np.median(y)
    preds = []
    for nj in (1, 2):
        m = cls(n_factors=3, solver="als", n_epochs=6, random_state=1, n_jobs=nj).fit(X, y)
        preds.append((m.w_.copy(), m.V_.copy(), m.w0_))
    np.testing.assert_array_equal(preds[0][0], preds[1][0])
    np.testing.assert_array_equal(preds[0][1], preds[1][1])
    assert preds[0][2] == preds[1][2]


def test_als_classifier_probit_em():
    rng = np.random.default_rng(3)
    X, y, truth = _ratings(rng, n=3000)
    lab = (truth + rng.normal(0, 0.3, len(truth))) > 3.0
    m = cfm.FMClassifier(n_factors=2, solver="als", n_epochs=10, random_state=0, n_jobs=1)
    m.fit(X[:2500], lab[:2500])
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(lab[2500:], m.predict_proba(X[2500:])[:, 1]) > 0.8


def test_als_save_load(tmp_path):
    rng = np.random.default_rng(4)
    X, y, _ = _ratings(rng, n=500)
    m = cfm.FMRegressor(n_factors=2, solver="als", n_epochs=3, random_state=0).fit(X, y)
    m.save(tmp_path / "a.cfm")
    m2 = cfm.load(tmp_path / "a.cfm")
    np.testing.assert_array_equal(m.predict(X), m2.predict(X))
    assert m2.solver == "als"
