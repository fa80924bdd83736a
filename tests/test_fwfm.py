"""FwFM (field-weighted FM): kernels against the NumPy reference
(tests/reference_fwfm.py), the default fields, options and front ends.
What every estimator promises is in tests/test_contract.py."""
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

import cfm
import reference as ref
import reference_fwfm as rfw
from cfm._state.base import ADAGRAD_INIT, Hyper
from cfm._state.fwfm import FwFMTable
from cfm._state.fm import new_table
from conftest import random_params, random_sparse

N, K, NF = 14, 3, 4
FIELDS = (np.arange(N) % NF).astype(np.int32)


def _sym(rng, nf=NF):
    A = rng.normal(1.0, 0.4, (nf, nf))
    return np.triu(A) + np.triu(A, 1).T


def _state(rng, solver="adagrad", dtype=np.float64, normalize=False):
    """A FwFMTable with random parameters (and optimizer state), and its
    reference copy (RefState, R, R_acc)."""
    w0, w, V = random_params(N, K, rng, scale=0.3)
    opt, w0s = None, [w0, 0.0, 0.0]
    if solver == "adagrad":
        w0s = [w0, ADAGRAD_INIT + rng.uniform(0, 1), 0.0]
        opt = {"Gw": ADAGRAD_INIT + rng.uniform(0, 1, N), "GV": ADAGRAD_INIT + rng.uniform(0, 1, N)}
    elif solver == "ftrl":
        w0s = [w0, rng.normal(), rng.uniform(0, 2)]
        opt = {"z": rng.normal(0, 1, N), "nw": rng.uniform(0, 2, N),
               "GV": ADAGRAD_INIT + rng.uniform(0, 1, N)}
    st = ref.RefState(w0s, w, V, solver, opt)
    table = new_table(N, K, solver, dtype)
    st.to_table(table)
    R = _sym(rng)
    R_acc = np.full((NF, NF), 0.0 if solver == "sgd" else 1.0) + \
        (0 if solver == "sgd" else _sym(rng) ** 2)
    state = FwFMTable(table, np.array(w0s, dtype=np.float64), K, solver, normalize,
                      FIELDS.copy(), R.copy(), R_acc.copy())
    return state, st, R, R_acc


def _X(rng, n_rows=40, nnz=5):
    return random_sparse(n_rows, N, nnz, rng, empty_rows=(2, 9))


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decision_matches_double_sum(rng, normalize, dtype):
    state, st, R, _ = _state(rng, dtype=dtype, normalize=normalize)
    X = _X(rng)
    V = np.asarray(state.V, dtype=np.float64)
    want = rfw.predict(X, state.w0, np.asarray(state.w, np.float64), V, R, FIELDS, normalize)
    Xc = cfm._validation.check_X(X.astype(dtype))
    got = state.decision(Xc, n_threads=1)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    np.testing.assert_array_equal(state.decision(Xc, n_threads=3), got)


def test_all_ones_field_weights_is_an_fm(rng):
    w0, w, V = random_params(N, K, rng)
    X = _X(rng)
    np.testing.assert_allclose(rfw.predict(X, w0, w, V, np.ones((NF, NF)), FIELDS),
                               ref.fm_predict(X, w0, w, V), rtol=1e-12)


@pytest.mark.parametrize("loss", ["squared", "logistic"])
@pytest.mark.parametrize("normalize", [False, True])
def test_reference_gradients_match_finite_differences(rng, loss, normalize):
    w0, w, V = random_params(N, K, rng)
    R = _sym(rng)
    x = np.zeros(N)
    x[[0, 1, 4, 5, 7, 12]] = rng.uniform(0.5, 2.0, 6)  # fields 0, 1, 0, 1, 3, 0
    y = 1.0 if loss == "logistic" else 0.3
    _, _, _, gV, gR = rfw.loss_and_grad(x, y, w0, w, V, R, FIELDS, loss, normalize)
    eps = 1e-6

    def L(V_, R_):
        return rfw.loss_and_grad(x, y, w0, w, V_, R_, FIELDS, loss, normalize)[0]

    for i in range(N):
        for f in range(K):
            E = np.zeros_like(V)
            E[i, f] = eps
            fd = (L(V + E, R) - L(V - E, R)) / (2 * eps)
            assert fd == pytest.approx(gV[i, f], rel=1e-6, abs=1e-9)
    for f in range(NF):
        for g in range(f, NF):
            E = np.zeros_like(R)
            E[f, g] = E[g, f] = eps  # the one symmetric weight r_fg
            fd = (L(V, R + E) - L(V, R - E)) / (2 * eps)
            assert fd == pytest.approx(gR[f, g], rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("solver", ["sgd", "adagrad", "ftrl"])
@pytest.mark.parametrize("loss,normalize,fit_intercept", [
    ("squared", False, True), ("logistic", True, True), ("logistic", False, False)])
def test_one_epoch_matches_reference(rng, solver, loss, normalize, fit_intercept):
    state, st, R, R_acc = _state(rng, solver, normalize=normalize)
    X = _X(rng, n_rows=25)
    y = rng.normal(size=25) if loss == "squared" else rng.choice([-1.0, 1.0], 25)
    order = rng.permutation(25).astype(np.int64)
    hp = dict(learning_rate={"sgd": 0.05, "adagrad": 0.1, "ftrl": 0.2}[solver], l2_w0=0.01,
              l2_w=0.02, l2_v=0.03, l1=0.01 if solver == "ftrl" else 0.0, ftrl_beta=1.0)
    want = rfw.train_epoch(X, y, order, st, R, R_acc, FIELDS, loss=loss, solver=solver,
                           fit_intercept=fit_intercept, normalize=normalize, **hp)
    Xc = cfm._validation.check_X(X)
    got = state.train_epoch(Xc, y, np.empty(0), order,
                            Hyper(loss=loss, optimizer=solver, fit_intercept=fit_intercept,
                                  **hp), 1, None)
    np.testing.assert_allclose(got[:2], want[:2], rtol=1e-10)
    assert got[2] == want[2] == 0
    k = K
    t = state.table
    np.testing.assert_allclose(state.w0_state, st.w0_state, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(t[:, 0], st.w, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(t[:, 1:1 + k], st.V, rtol=1e-10, atol=1e-12)
    if solver != "sgd":
        np.testing.assert_allclose(t[:, 1 + k + (1 if solver == "adagrad" else 2)], st.GV,
                                   rtol=1e-10)
    np.testing.assert_allclose(state.R, R, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(state.R_acc, R_acc, rtol=1e-10, atol=1e-12)
    assert np.array_equal(state.R, state.R.T)


def test_threaded_epoch_merges_field_weights(rng):
    """Several threads: each trains a copy of R, averaged after the epoch
    (symmetric, finite, close to the one-thread epoch on easy data)."""
    X, y = cfm.make_fm_classification(n_samples=30_000, n_features=40, n_fields=4,
                                      random_state=0)
    fields = (np.arange(40) // 10).astype(np.int32)
    ms = [cfm.FwFMClassifier(n_epochs=2, n_jobs=nj, random_state=0, auto_tune=False)
          .fit(X, y, fields=fields) for nj in (1, 2)]
    for m in ms:
        assert np.array_equal(m.R_, m.R_.T) and np.isfinite(m.R_).all()
    # averaged copies move R in the same direction as one thread, less far
    # (how much less depends on how the rows were shared between the threads)
    d1, d2 = (ms[0].R_ - 1).ravel(), (ms[1].R_ - 1).ravel()
    assert np.corrcoef(d1, d2)[0, 1] > 0.9
    assert 0.3 < np.linalg.norm(d2) / np.linalg.norm(d1) < 1.1
    p = [m.predict_proba(X)[:, 1] for m in ms]
    assert np.corrcoef(p[0], p[1])[0, 1] > 0.95


# ----------------------------------------------------------------- fields
def test_default_fields():
    # no fields: cfm.infer_fields, as for FFM / DeepFM (dense columns: one each;
    # one-hot blocks: one per block)
    X = sp.random(300, 10, density=0.5, random_state=0, format="csr")
    y = np.arange(300) % 2
    m = cfm.FwFMClassifier(n_epochs=1, n_jobs=1, random_state=0).fit(X, y)
    assert np.array_equal(m.fields_, cfm.infer_fields(X))
    assert m.R_.shape == (m.n_fields_, m.n_fields_)
    onehot = sp.csr_matrix((np.ones(600), np.column_stack(
        [np.arange(300) % 4, 4 + np.arange(300) % 3]).ravel(), np.arange(0, 601, 2)),
        shape=(300, 7))
    m = cfm.FwFMRegressor(n_epochs=1, n_jobs=1, random_state=0).fit(onehot, y.astype(float))
    assert np.array_equal(m.fields_, [0, 0, 0, 0, 1, 1, 1]) and m.n_fields_ == 2
    # warm start and partial_fit keep the model's fields
    f = np.arange(10) % 3
    m = cfm.FwFMClassifier(n_epochs=1, n_jobs=1, random_state=0).fit(X, y, fields=f)
    m.set_params(warm_start=True).fit(X, y)
    m.partial_fit(X, y)
    assert np.array_equal(m.fields_, f) and m.n_fields_ == 3


def test_fields_are_validated():
    X = sp.random(50, 6, density=0.5, random_state=0, format="csr")
    y = np.arange(50) % 2
    m = cfm.FwFMClassifier(n_epochs=1, n_jobs=1)
    with pytest.raises(ValueError, match="one entry per column"):
        m.fit(X, y, fields=[0, 1])
    with pytest.raises(ValueError, match="at most 1024 fields"):
        m.fit(X, y, fields=[0, 1, 2, 3, 4, 5000])
    with pytest.raises(ValueError, match=">= 0"):
        m.fit(X, y, fields=[0, 1, 2, 3, 4, -3])
    with pytest.raises(ValueError, match="does not support solver"):
        cfm.FwFMRegressor(solver="als").fit(X, y.astype(float))
    with pytest.raises(ValueError, match="n_factors"):
        cfm.FwFMRegressor(n_factors=0).fit(X, y.astype(float))
    m.fit(X, y, fields=np.arange(6))
    with pytest.raises(ValueError, match="differ"):
        m.set_params(warm_start=True).fit(X, y, fields=np.zeros(6))


def test_learns_field_pair_weights():
    """Data whose label depends on fields 0 x 1 only: their weight grows
    relative to the pairs with the noise field 2."""
    rng = np.random.default_rng(0)
    n, per = 20_000, 20
    ids = rng.integers(0, per, (n, 3)) + np.arange(3) * per
    X = sp.csr_matrix((np.ones(3 * n), ids.ravel(), np.arange(0, 3 * n + 1, 3)),
                      shape=(n, 3 * per))
    a, b = rng.normal(size=per), rng.normal(size=per)
    y = (a[ids[:, 0]] * b[ids[:, 1] - per] + 0.1 * rng.normal(size=n) > 0).astype(int)
    m = cfm.FwFMClassifier(n_factors=4, n_epochs=8, learning_rate=0.1, normalize=False,
                           n_jobs=1, random_state=0).fit(X, y, fields=np.arange(3 * per) // per)
    R = np.abs(m.R_)
    assert R[0, 1] > 2 * max(R[0, 2], R[1, 2])


# ------------------------------------------------------------- front ends
def test_libffm_file_fit_predict_file_and_cli(tmp_path):
    X, y = cfm.make_fm_classification(n_samples=600, n_features=30, n_fields=3,
                                      random_state=1)
    fields = np.arange(30) // 10
    path = tmp_path / "train.ffm"
    cfm.dump_libffm(X, y, fields, path)
    m = cfm.FwFMClassifier(n_epochs=2, n_jobs=1, random_state=0).fit(path)
    assert np.array_equal(m.fields_, fields)
    mem = cfm.FwFMClassifier(n_epochs=2, n_jobs=1, random_state=0, auto_tune=False) \
        .fit(X, y, fields=fields)
    m.predict_file(path, tmp_path / "p.txt", raw=True, precision=17)
    np.testing.assert_array_equal(np.loadtxt(tmp_path / "p.txt"), m.decision_function(X))
    assert mem.n_fields_ == 3
    model = tmp_path / "m.cfm"
    run = [sys.executable, "-m", "cfm"]
    r = subprocess.run(run + ["train", str(path), "-o", str(model), "--model", "fwfm",
                              "--epochs", "2", "--threads", "1", "--seed", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    loaded = cfm.load(model)
    assert type(loaded) is cfm.FwFMClassifier and loaded.n_fields_ == 3
    r = subprocess.run(run + ["predict", str(model), str(path), "-o", str(tmp_path / "q.txt")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.loadtxt(tmp_path / "q.txt"), loaded.predict_proba(X)[:, 1],
                               rtol=1e-6)


def test_model_file_rejects_asymmetric_weights(tmp_path):
    X = sp.random(200, 5, density=0.6, random_state=0, format="csr")
    m = cfm.FwFMRegressor(n_epochs=1, n_jobs=1, random_state=0).fit(X, np.arange(200.0))
    arrays, header = m._export_state()
    arrays["R"] = arrays["R"].copy()
    arrays["R"][0, 1] += 1.0
    from cfm._model_file import write_model_file
    write_model_file(tmp_path / "bad.cfm", header, arrays)
    with pytest.raises(cfm.ModelFileError, match="symmetric"):
        cfm.load(tmp_path / "bad.cfm")


def test_scikit_learn_tools_without_fields(clf_data):
    """No fields: Pipeline, GridSearchCV and cross_val_score work as for FM."""
    pytest.importorskip("sklearn")
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = clf_data
    X, y = X[:400], y[:400]
    pipe = make_pipeline(StandardScaler(with_mean=False),
                         cfm.FwFMClassifier(n_epochs=3, n_jobs=1, random_state=0))
    assert cross_val_score(pipe, X, y, cv=2, scoring="roc_auc").mean() > 0.5
    gs = GridSearchCV(cfm.FwFMClassifier(n_epochs=2, n_jobs=1, random_state=0),
                      {"n_factors": [2, 4]}, cv=2, scoring="roc_auc").fit(X, y)
    # no fields: inferred as for FFM (here the 5 planted one-hot blocks)
    assert np.array_equal(gs.best_estimator_.fields_, cfm.infer_fields(X))


def test_auto_tune_races_fwfm():
    """The race of auto_tune (replica / snapshot / restore of FwFMTable), with
    the holdout and with an eval_set (the winner restored to its best epoch)."""
    X, y = cfm.make_fm_classification(n_samples=6000, n_features=60, n_fields=5,
                                      random_state=0)
    fields = np.arange(60) // 12
    m = cfm.FwFMClassifier(n_jobs=1, random_state=0).fit(X, y, fields=fields)
    assert m.best_params_["auto"] == "race" and len(m.race_["candidates"]) == 6
    e = cfm.FwFMClassifier(n_jobs=1, random_state=0).fit(X[:5000], y[:5000], fields=fields,
                                                         eval_set=(X[5000:], y[5000:]))
    assert e.best_params_["auto"] == "race on eval_set"
    assert len(e.history_) >= e.best_epoch_ >= 1


def test_cli_trains_fwfm_on_a_libsvm_file_with_default_fields(tmp_path):
    X = sp.random(400, 12, density=0.4, random_state=0, format="csr")
    y = (X.sum(axis=1).A.ravel() > np.median(X.sum(axis=1).A.ravel())).astype(int)
    path, model = tmp_path / "t.svm", tmp_path / "m.cfm"
    cfm.dump_libsvm(X, y, path, zero_based=True)
    r = subprocess.run([sys.executable, "-m", "cfm", "train", str(path), "-o", str(model),
                        "--model", "fwfm", "--epochs", "2", "--threads", "1", "--seed", "0",
                        "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = cfm.load(model)
    assert type(m) is cfm.FwFMClassifier and np.array_equal(m.fields_, np.arange(12))
