"""Field-aware FMs: kernels vs the NumPy reference, estimator contracts, model files."""
import copy
import json
import pickle
import struct
import zlib

import numpy as np
import pytest
import scipy.sparse as sp

import cfm
from cfm import _ffm
from cfm._state.base import ADAGRAD_INIT, LOSSES, OPTIMIZERS as SOLVERS
import reference_ffm as ref
from conftest import random_sparse

SOLVER_LR = {"sgd": 0.05, "adagrad": 0.1, "ftrl": 0.2}
HP = dict(l2_w0=0.01, l2_w=0.02, l2_v=0.03, ftrl_beta=0.7)


# ------------------------------------------------------------------ helpers
def ffm_data(rng, n=40, n_features=20, n_fields=4, nnz=5, dtype=np.float64, empty_rows=(3, 17)):
    """CSR X with distinct columns per row (so fields repeat within rows), plus a row
    whose columns all share one field and a row with a single non-zero; fields."""
    fields = rng.integers(0, n_fields, n_features).astype(np.int32)
    fields[:n_fields] = np.arange(n_fields)  # every field used
    X = random_sparse(n - 2, n_features, nnz, rng, dtype=dtype, empty_rows=empty_rows)
    same = np.flatnonzero(fields == fields[0])[:3]
    extra = np.zeros((2, n_features), dtype=dtype)
    extra[0, same] = [1.5, -0.7, 0.9][:len(same)]
    extra[1, n_features - 1] = 2.0
    X = sp.vstack([X, sp.csr_matrix(extra)]).tocsr()
    X.sort_indices()
    return X, fields


def random_ref_state(n, n_fields, k, solver, rng, scale=0.3):
    """Random parameters and plausible optimizer state."""
    w0 = float(rng.normal())
    w = rng.normal(0, scale, n)
    V = rng.normal(0, scale, (n, n_fields, k))
    kw = {}
    if solver == "adagrad":
        w0s = [w0, ADAGRAD_INIT + rng.uniform(0, 1), 0.0]
        kw["Gw"] = ADAGRAD_INIT + rng.uniform(0, 1, n)
    elif solver == "ftrl":
        w0s = [w0, rng.normal(), rng.uniform(0, 2)]
        kw["z"], kw["nw"] = rng.normal(0, 1, n), rng.uniform(0, 2, n)
    else:
        w0s = [w0, 0.0, 0.0]
    if solver != "sgd":
        kw["GV"] = ADAGRAD_INIT + rng.uniform(0, 1, (n, n_fields))
    return ref.RefFFMState(w0s, w, V, solver, **kw)


def fitted_model(cls, X, y, fields, **kw):
    """A model fitted for one epoch with a negligible learning rate: initialised
    tables of the right layout, to be overwritten by the tests."""
    params = dict(n_factors=3, n_epochs=1, learning_rate=1e-12, n_jobs=1, random_state=0,
                  dtype="float64")
    params.update(kw)
    return cls(**params).fit(X, y, fields=fields)


def with_random_state(m, rng, scale=0.3):
    """Overwrite m's parameters with random values; returns the (rounded) RefFFMState."""
    st = random_ref_state(m.n_features_in_, m.n_fields_, m._k, m._solver, rng, scale)
    st.to_model(m)
    return ref.RefFFMState.from_model(m)  # same values as the model (float32: rounded)


def kernel_epoch(m, X, y, sw, order, *, loss, fit_intercept, normalize, lr, l1=0.0,
                 n_threads=1, **hp):
    """Call cfm._ffm.ffm_train_epoch directly on the model's tables."""
    X = sp.csr_matrix(X)
    max_nnz = int(np.diff(X.indptr).max())
    return _ffm.ffm_train_epoch(
        X.data, X.indices, X.indptr.astype(np.int64), np.asarray(y, dtype=np.float64),
        np.empty(0) if sw is None else np.asarray(sw, dtype=np.float64),
        np.asarray(order, dtype=np.int64), m._foff, m._lin, m._V, m._w0_state,
        k=m._k, kp=m._kp, ks=1, loss=LOSSES[loss], optimizer=SOLVERS[m._solver],
        fit_intercept=fit_intercept, normalize=normalize, learning_rate=lr,
        l2_w0=hp["l2_w0"], l2_w=hp["l2_w"], l2_v=hp["l2_v"], l1=l1, ftrl_beta=hp["ftrl_beta"],
        n_threads=n_threads, max_nnz=max_nnz)


def assert_state_equal(m, st, rtol=1e-10, atol=1e-12):
    got = ref.RefFFMState.from_model(m)
    np.testing.assert_allclose(got.w0_state, st.w0_state, rtol=rtol, atol=atol)
    np.testing.assert_allclose(got.w, st.w, rtol=rtol, atol=atol)
    np.testing.assert_allclose(got.V, st.V, rtol=rtol, atol=atol)
    for name in ("Gw", "z", "nw", "GV"):
        if getattr(st, name) is not None:
            np.testing.assert_allclose(getattr(got, name), getattr(st, name), rtol=rtol,
                                       atol=atol, err_msg=name)


def assert_padding_zero(m):
    """Padding coordinates kp > f >= k of every vector stay exactly 0."""
    V = m._V[:, :m.n_fields_ * m._ks].reshape(m.n_features_in_, m.n_fields_, m._ks)
    assert np.all(V[:, :, m._k:m._kp] == 0)


def targets(rng, loss, n):
    return rng.choice([-1.0, 1.0], n) if loss == "logistic" else rng.normal(size=n)


# --------------------------------------------------------------- prediction
@pytest.mark.parametrize("k", [1, 3, 5, 8, 13, 17])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_predict_matches_reference(rng, k, normalize, dtype):
    X, fields = ffm_data(rng)
    m = fitted_model(cfm.FFMRegressor, X, rng.normal(size=X.shape[0]), fields, n_factors=k,
                     normalize=normalize, dtype=dtype)
    st = with_random_state(m, rng, scale=0.5)
    assert m.V_.shape == (X.shape[1], m.n_fields_, k)
    np.testing.assert_array_equal(m.V_, st.V)
    np.testing.assert_array_equal(m.w_, st.w)
    expected = ref.ffm_predict(X, fields, st.w0_state[0], st.w, st.V, normalize)
    rtol, atol = (1e-10, 1e-12) if dtype == "float64" else (1e-4, 1e-5)
    for Xin in (X, X.astype(np.float32), X.toarray()):
        got = m.predict(Xin)
        tol = (rtol, atol) if Xin.dtype == np.float64 else (max(rtol, 1e-5), max(atol, 1e-5))
        np.testing.assert_allclose(got, expected, rtol=tol[0], atol=tol[1])
    # empty rows score the bias
    assert m.predict(X[3])[0] == pytest.approx(st.w0_state[0], abs=1e-12)


def test_predict_same_for_one_and_two_threads(rng):
    X, fields = ffm_data(rng, n=600, n_features=50, n_fields=5, nnz=6, empty_rows=(0, 599))
    m = fitted_model(cfm.FFMClassifier, X, rng.choice([0, 1], X.shape[0]), fields,
                     n_factors=5, dtype="float32")
    with_random_state(m, rng)
    m.n_jobs = 1
    a = m.decision_function(X)
    m.n_jobs = 2
    b = m.decision_function(X)
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------ training epoch
@pytest.mark.parametrize("solver", ["sgd", "adagrad", "ftrl"])
@pytest.mark.parametrize("loss", ["squared", "logistic"])
@pytest.mark.parametrize("fit_intercept", [False, True])
def test_kernel_epoch_matches_reference(rng, solver, loss, fit_intercept):
    X, fields = ffm_data(rng, n=30, n_features=14, n_fields=3, nnz=4, empty_rows=(4,))
    n = X.shape[0]
    y = targets(rng, loss, n)
    sw = rng.uniform(0.2, 2.0, n)
    normalize = loss == "logistic"
    l1 = 0.05 if solver == "ftrl" else 0.0
    m = fitted_model(cfm.FFMRegressor, X, rng.normal(size=n), fields, n_factors=5,
                     solver=solver)
    st = with_random_state(m, rng)
    st0 = st.copy()
    order = rng.permutation(n)
    order = np.concatenate([order, order[:5]])  # a row may be visited twice
    lr = SOLVER_LR[solver]
    w0_before = m._w0_state[0]
    lk, wk, bad = kernel_epoch(m, X, y, sw, order, loss=loss, fit_intercept=fit_intercept,
                               normalize=normalize, lr=lr, l1=l1, **HP)
    lr_, wr_, br_ = ref.train_epoch(X, y, fields, order, st, loss=loss,
                                    fit_intercept=fit_intercept, normalize=normalize,
                                    learning_rate=lr, l1=l1, sample_weight=sw, **HP)
    assert_state_equal(m, st)
    assert_padding_zero(m)
    assert lk == pytest.approx(lr_, rel=1e-10)
    assert wk == pytest.approx(wr_, rel=1e-12)
    assert bad == 0 and br_ == 0
    if not fit_intercept:
        assert m._w0_state[0] == w0_before  # untouched bias
    # the state really moved (the test is not vacuous)
    assert np.abs(st.V - st0.V).max() > 1e-4


def test_kernel_epoch_float32_close_to_reference(rng):
    X, fields = ffm_data(rng, n=30, n_features=14, n_fields=3, nnz=4)
    y = targets(rng, "logistic", X.shape[0])
    sw = rng.uniform(0.5, 1.5, X.shape[0])
    m = fitted_model(cfm.FFMClassifier, X, y, fields, n_factors=3, dtype="float32")
    st = with_random_state(m, rng)
    order = np.arange(X.shape[0])
    kernel_epoch(m, X, y, sw, order, loss="logistic", fit_intercept=True, normalize=True,
                 lr=0.1, **HP)
    ref.train_epoch(X, y, fields, order, st, loss="logistic", normalize=True,
                    learning_rate=0.1, sample_weight=sw, **HP)
    assert_state_equal(m, st, rtol=1e-4, atol=1e-5)


def test_nonfinite_prediction_rows_are_skipped_and_counted(rng):
    X = sp.csr_matrix(np.array([[1e200, 1e200], [1.0, 0.0]]))
    fields = np.array([0, 1], dtype=np.int32)
    m = fitted_model(cfm.FFMRegressor, sp.csr_matrix(np.ones((2, 2))), [1.0, 1.0], fields,
                     n_factors=1, solver="sgd", normalize=False)
    m._lin[:, 0] = 1.0
    m._V[...] = 0.0
    m._V[:, 0] = m._V[:, m._ks] = 1e200
    before = (m._lin.copy(), m._V.copy())
    loss, wsum, bad = kernel_epoch(m, X, [1.0, 1.0], None, [0], loss="squared",
                                   fit_intercept=True, normalize=False, lr=0.1, **HP)
    assert bad == 1 and wsum == 0.0 and loss == 0.0
    np.testing.assert_array_equal(m._lin, before[0])
    np.testing.assert_array_equal(m._V, before[1])


@pytest.mark.parametrize("solver", ["sgd", "adagrad", "ftrl"])
@pytest.mark.parametrize("cls", [cfm.FFMRegressor, cfm.FFMClassifier])
def test_partial_fit_matches_reference(rng, solver, cls):
    """Through the estimator: partial_fit with shuffle=False == reference epoch."""
    X, fields = ffm_data(rng, n=40, n_features=15, n_fields=3, nnz=4)
    n = X.shape[0]
    if cls is cfm.FFMClassifier:
        y = rng.choice(["no", "yes"], n)
        y_ref = np.where(y == "yes", 1.0, -1.0)
        loss = "logistic"
    else:
        y = y_ref = rng.normal(size=n)
        loss = "squared"
    sw = rng.uniform(0.5, 1.5, n)
    l1 = 0.01 if solver == "ftrl" else 0.0
    params = dict(n_factors=3, solver=solver, learning_rate=SOLVER_LR[solver], l1=l1,
                  shuffle=False, dtype="float64", n_jobs=1, random_state=3,
                  fit_intercept=False, n_epochs=1, **HP)
    m = cls(**params).fit(X, y, fields=fields, sample_weight=sw)
    st = with_random_state(m, rng)
    w0 = m.w0_
    m.partial_fit(X, y, sample_weight=sw)
    ref.train_epoch(X, y_ref, fields, np.arange(n), st, loss=loss, fit_intercept=False,
                    normalize=True, learning_rate=SOLVER_LR[solver], l1=l1, sample_weight=sw,
                    **HP)
    assert_state_equal(m, st)
    assert m.w0_ == w0
    assert len(m.history_) == 2 and m.n_epochs_ == 2


# ----------------------------------------------------------------- gradients
@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_reference_gradient_finite_differences(rng, loss):
    n, nf, k = 8, 3, 3
    fields = np.array([0, 1, 2, 0, 1, 2, 0, 0])
    cols = np.array([0, 2, 3, 5, 6])  # fields 0, 2, 0, 2, 0: repeated fields
    x = rng.uniform(-1.5, 1.5, len(cols))
    y = 1.0 if loss == "logistic" else 0.3
    w0, w, V = 0.2, rng.normal(0, 0.5, n), rng.normal(0, 0.5, (n, nf, k))
    _, d, gw, gV = ref.loss_and_grad(cols, x, y, fields, w0, w, V, loss)

    def f(w0_, w_, V_):
        p = ref.ffm_score_entries(cols, x, fields, w0_, w_, V_)
        return ref.loss_value(p, y, loss)

    eps = 1e-6
    assert d == pytest.approx((f(w0 + eps, w, V) - f(w0 - eps, w, V)) / (2 * eps), rel=1e-6)
    num_w = np.zeros(n)
    for j in range(n):
        e = np.zeros(n)
        e[j] = eps
        num_w[j] = (f(w0, w + e, V) - f(w0, w - e, V)) / (2 * eps)
    np.testing.assert_allclose(gw, num_w, rtol=1e-6, atol=1e-9)
    num_V = np.zeros_like(V)
    for idx in np.ndindex(V.shape):
        E = np.zeros_like(V)
        E[idx] = eps
        num_V[idx] = (f(w0, w, V + E) - f(w0, w, V - E)) / (2 * eps)
    np.testing.assert_allclose(gV, num_V, rtol=1e-6, atol=1e-9)
    assert np.count_nonzero(gV) > 0


def test_sgd_step_follows_the_gradient(rng):
    """One kernel SGD step on one sample (no L2) is -lr * gradient up to O(lr^2)."""
    X, fields = ffm_data(rng, n=10, n_features=12, n_fields=3, nnz=5, empty_rows=())
    y = rng.normal(size=X.shape[0])
    m = fitted_model(cfm.FFMRegressor, X, y, fields, n_factors=3, solver="sgd",
                     normalize=False)
    st = with_random_state(m, rng)
    i = 2
    cols, x = ref.row_entries(sp.csr_matrix(X), i, False)
    _, d, gw, gV = ref.loss_and_grad(cols, x, y[i], fields, st.w0_state[0], st.w, st.V,
                                     "squared")
    lr = 1e-6
    hp0 = dict(l2_w0=0.0, l2_w=0.0, l2_v=0.0, ftrl_beta=1.0)
    kernel_epoch(m, X, y, None, [i], loss="squared", fit_intercept=True, normalize=False,
                 lr=lr, **hp0)
    got = ref.RefFFMState.from_model(m)
    np.testing.assert_allclose((got.w0_state[0] - st.w0_state[0]) / lr, -d, rtol=1e-6)
    np.testing.assert_allclose((got.w - st.w) / lr, -gw, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose((got.V - st.V) / lr, -gV, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------- estimator contracts
@pytest.fixture(scope="module")
def small_problem():
    rng = np.random.default_rng(7)
    X, fields = ffm_data(rng, n=120, n_features=30, n_fields=4, nnz=5)
    y = rng.normal(size=X.shape[0])
    return X, y, fields


def test_float32_and_float64_agree(small_problem):
    X, y, fields = small_problem
    kw = dict(n_factors=4, n_epochs=3, n_jobs=1, random_state=0, shuffle=True)
    a = cfm.FFMRegressor(dtype="float32", **kw).fit(X, y, fields=fields)
    b = cfm.FFMRegressor(dtype="float64", **kw).fit(X, y, fields=fields)
    assert a.V_.dtype == np.float32 and b.V_.dtype == np.float64
    np.testing.assert_allclose(a.V_, b.V_, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("solver", ["sgd", "adagrad", "ftrl"])
def test_warm_start_3_plus_3_equals_6(small_problem, solver):
    X, y, fields = small_problem
    kw = dict(n_factors=3, solver=solver, n_jobs=1, random_state=11, dtype="float64")
    six = cfm.FFMRegressor(n_epochs=6, **kw).fit(X, y, fields=fields)
    ws = cfm.FFMRegressor(n_epochs=3, warm_start=True, **kw).fit(X, y, fields=fields)
    ws.fit(X, y)  # fields taken from fields_
    assert ws.n_epochs_ == 6 and len(ws.history_) == 6
    np.testing.assert_array_equal(ws.V_, six.V_)
    np.testing.assert_array_equal(ws.w_, six.w_)
    assert ws.w0_ == six.w0_
    np.testing.assert_array_equal(ws.predict(X), six.predict(X))
    # passing the same fields again is accepted
    ws2 = cfm.FFMRegressor(n_epochs=3, warm_start=True, **kw).fit(X, y, fields=fields)
    ws2.fit(X, y, fields=fields.astype(np.int64))
    np.testing.assert_array_equal(ws2.V_, six.V_)


def test_reproducible_with_one_thread_and_small_data(small_problem):
    X, y, fields = small_problem
    kw = dict(n_factors=5, n_epochs=3, random_state=5)
    a = cfm.FFMRegressor(n_jobs=1, **kw).fit(X, y, fields=fields)
    b = cfm.FFMRegressor(n_jobs=1, **kw).fit(X, y, fields=fields)
    c = cfm.FFMRegressor(n_jobs=2, **kw).fit(X, y, fields=fields)  # < 1 thread per 10k rows
    for o in (b, c):
        np.testing.assert_array_equal(a.V_, o.V_)
        np.testing.assert_array_equal(a.w_, o.w_)
        np.testing.assert_array_equal(a.predict(X), o.predict(X))
    d = cfm.FFMRegressor(n_jobs=1, n_factors=5, n_epochs=3, random_state=6).fit(
        X, y, fields=fields)
    assert not np.array_equal(a.V_, d.V_)


def test_initial_state(small_problem):
    X, y, fields = small_problem
    m = fitted_model(cfm.FFMRegressor, X, y + 3.0, fields, n_factors=5, solver="adagrad",
                     init_std=0.05)
    assert m.fields_.dtype == np.int32 and m.n_fields_ == 4
    np.testing.assert_array_equal(m.fields_, fields)
    assert m.w0_ == pytest.approx(np.mean(y + 3.0), rel=1e-6)
    assert np.std(m.V_) == pytest.approx(0.05, rel=0.2)
    assert_padding_zero(m)
    st = ref.RefFFMState.from_model(m)
    assert np.all(st.GV >= ADAGRAD_INIT) and np.all(st.Gw >= ADAGRAD_INIT)


def test_fields_with_gaps(rng):
    X, fields = ffm_data(rng, n=30, n_features=10, n_fields=2, nnz=3)
    fields = np.where(fields == 1, 4, 0)  # ids 0 and 4 only
    m = fitted_model(cfm.FFMRegressor, X, rng.normal(size=30), fields, n_factors=3)
    assert m.n_fields_ == 5
    st = with_random_state(m, rng)
    np.testing.assert_allclose(m.predict(X),
                               ref.ffm_predict(X, fields, st.w0_state[0], st.w, st.V, True),
                               rtol=1e-10, atol=1e-12)


def test_input_formats_give_identical_fits(rng):
    """float32 / float64 values, int32 / int64 indices, dense: the same model."""
    X, fields = ffm_data(rng, n=50, n_features=12, n_fields=3, nnz=4)
    X.data = np.round(X.data * 4) / 4  # exactly representable in float32
    y = rng.normal(size=X.shape[0])
    kw = dict(n_factors=3, n_epochs=2, n_jobs=1, random_state=0, dtype="float64")
    base = cfm.FFMRegressor(**kw).fit(X, y, fields=fields)
    X64 = X.copy()
    X64.indices = X64.indices.astype(np.int64)
    X64.indptr = X64.indptr.astype(np.int64)
    for Xin in (X.astype(np.float32), X64, X.toarray()):
        m = cfm.FFMRegressor(**kw).fit(Xin, y, fields=fields)
        np.testing.assert_array_equal(m.V_, base.V_)
        np.testing.assert_array_equal(m.predict(Xin), base.predict(X))


def test_non_canonical_csr(rng):
    """Unsorted indices and duplicate entries are summed, as for a canonical matrix."""
    X, fields = ffm_data(rng, n=20, n_features=10, n_fields=3, nnz=4, empty_rows=())
    m = fitted_model(cfm.FFMRegressor, X, rng.normal(size=20), fields, n_factors=3)
    with_random_state(m, rng)
    coo = X.tocoo()
    half = 0.5 * coo.data
    rows = np.concatenate([coo.row, coo.row])[::-1]
    cols = np.concatenate([coo.col, coo.col])[::-1]
    vals = np.concatenate([half, half])[::-1]
    order = np.argsort(rows, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=20))])
    Xnc = sp.csr_matrix((vals[order], cols[order], indptr), shape=X.shape)
    assert not Xnc.has_canonical_format
    np.testing.assert_allclose(m.predict(Xnc), m.predict(X), rtol=1e-12, atol=1e-12)


def test_explicit_zeros_do_not_change_the_fit(rng):
    """A stored 0 is the same matrix as an absent entry (and as a dense 0): the fit
    must not depend on it."""
    X, fields = ffm_data(rng, n=50, n_features=10, n_fields=3, nnz=4)
    y = rng.normal(size=X.shape[0])
    Xz = X.copy()
    Xz.data[::3] = 0.0  # explicit zeros
    Xe = Xz.copy()
    Xe.eliminate_zeros()
    kw = dict(n_factors=3, n_epochs=2, n_jobs=1, random_state=0, dtype="float64")
    a = cfm.FFMRegressor(**kw).fit(Xz, y, fields=fields)
    b = cfm.FFMRegressor(**kw).fit(Xe, y, fields=fields)
    c = cfm.FFMRegressor(**kw).fit(Xz.toarray(), y, fields=fields)
    np.testing.assert_array_equal(b.V_, c.V_)
    np.testing.assert_array_equal(a.V_, c.V_)


def test_eval_set_uses_fields(small_problem):
    X, y, fields = small_problem
    Xv, yv = X[:40], y[:40]
    m = cfm.FFMRegressor(n_factors=3, n_epochs=3, n_jobs=1, random_state=0,
                         n_iter_no_change=10).fit(X, y, fields=fields, eval_set=(Xv, yv))
    assert len(m.history_) == 3 and m.best_epoch_ == 3
    rmse = np.sqrt(np.mean((m.predict(Xv) - yv) ** 2))
    assert m.history_[-1]["eval_rmse"] == pytest.approx(rmse, rel=1e-12)


def test_two_thread_training_smoke():
    """Hogwild with 2 threads (>= 2 * 10k rows): finite, and it learns."""
    rng = np.random.default_rng(1)
    X, y, fields = planted_ffm(20000, rng)
    m = cfm.FFMClassifier(n_factors=4, n_epochs=3, n_jobs=2, random_state=0)
    m.fit(X, y, fields=fields)
    assert np.all(np.isfinite(m.V_)) and np.isfinite(m.w0_)
    assert m.history_[-1]["train_loss"] < m.history_[0]["train_loss"]


# ------------------------------------------------------------- model files
@pytest.fixture(scope="module")
def ffm_models():
    rng = np.random.default_rng(0)
    X, fields = ffm_data(rng, n=80, n_features=15, n_fields=3, nnz=4)
    y = rng.normal(size=X.shape[0])
    lab = np.where(y > 0, "spam", "ham")
    return {
        "reg": (cfm.FFMRegressor(n_factors=3, n_epochs=2, n_jobs=1, random_state=0)
                .fit(X, y, fields=fields), X),
        "reg64_ftrl": (cfm.FFMRegressor(n_factors=5, n_epochs=2, solver="ftrl", l1=0.01,
                                        dtype="float64", n_jobs=1, random_state=0)
                       .fit(X, y, fields=fields), X),
        "reg_sgd": (cfm.FFMRegressor(n_factors=4, n_epochs=2, solver="sgd", n_jobs=1,
                                     random_state=0).fit(X, y, fields=fields), X),
        "clf_str": (cfm.FFMClassifier(n_factors=3, n_epochs=2, n_jobs=1, random_state=0)
                    .fit(X, lab, fields=fields), X),
    }


def _outputs(m, X):
    if isinstance(m, cfm.FFMClassifier):
        return [m.decision_function(X), m.predict_proba(X), m.predict(X)]
    return [m.predict(X)]


def assert_same_ffm(a, b, X):
    assert type(a) is type(b)
    for p, q in zip(_outputs(a, X), _outputs(b, X)):
        np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(a.w_, b.w_)
    np.testing.assert_array_equal(a.V_, b.V_)
    assert a.V_.dtype == b.V_.dtype and a.V_.shape == b.V_.shape
    np.testing.assert_array_equal(a.fields_, b.fields_)
    assert a.n_fields_ == b.n_fields_
    for name in ("n_features_in_", "n_epochs_", "best_epoch_", "w0_"):
        assert getattr(a, name) == getattr(b, name)
    assert a.get_params() == b.get_params()
    if hasattr(a, "classes_"):
        assert list(a.classes_) == list(b.classes_)


@pytest.mark.parametrize("name", ["reg", "reg64_ftrl", "reg_sgd", "clf_str"])
def test_save_load_roundtrip(ffm_models, name, tmp_path):
    m, X = ffm_models[name]
    path = tmp_path / "model.cfm"
    m.save(path)
    loaded = cfm.load(path)
    assert isinstance(loaded, type(m))
    assert loaded.fields_.dtype == np.int32 and loaded.n_fields_ == 3
    assert_same_ffm(m, loaded, X)
    loaded.save(tmp_path / "again.cfm")
    assert (tmp_path / "again.cfm").read_bytes() == path.read_bytes()
    # the loaded model continues training exactly like the original
    a, b = loaded, copy.deepcopy(m)
    y = m.predict(X)
    for est in (a, b):
        est.partial_fit(X, y)
    np.testing.assert_array_equal(a.V_, b.V_)
    np.testing.assert_array_equal(a.w_, b.w_)


@pytest.mark.parametrize("name", ["reg", "reg64_ftrl", "clf_str"])
def test_pickle_and_deepcopy(ffm_models, name):
    m, X = ffm_models[name]
    for clone in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert_same_ffm(m, clone, X)
        assert clone._V is not m._V


def _parse(raw):
    (hlen,) = struct.unpack_from("<I", raw, 12)
    return json.loads(raw[16:16 + hlen]), 16 + hlen


def _with_crc(b):
    b = bytearray(b)
    b[-4:] = struct.pack("<I", zlib.crc32(bytes(b[:-4])))
    return bytes(b)


@pytest.fixture
def saved_ffm(ffm_models, tmp_path):
    m, _ = ffm_models["clf_str"]
    path = tmp_path / "m.cfm"
    m.save(path)
    return path.read_bytes()


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9, -5])
def test_corrupted_file(saved_ffm, tmp_path, where):
    raw = saved_ffm
    pos = int(len(raw) * where) if where > 0 else len(raw) + where
    bad = bytearray(raw)
    bad[pos] ^= 0x5A
    p = tmp_path / "bad.cfm"
    p.write_bytes(bytes(bad))
    with pytest.raises(cfm.ModelFileError):
        cfm.load(p)
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(cfm.ModelFileError, match="truncated|corrupt"):
        cfm.load(p)


@pytest.mark.parametrize("value", [-1, 3, 1000])
def test_out_of_range_fields_in_file(saved_ffm, tmp_path, value):
    """A file with a valid checksum but field ids outside [0, n_fields) is refused."""
    header, data_start = _parse(saved_ffm)
    entry = next(e for e in header["arrays"] if e["name"] == "fields")
    assert entry["dtype"] == "<i4"
    b = bytearray(saved_ffm)
    struct.pack_into("<i", b, data_start + entry["offset"] + 4 * 2, value)
    p = tmp_path / "fields.cfm"
    p.write_bytes(_with_crc(b))
    with pytest.raises(cfm.ModelFileError, match="field"):
        cfm.load(p)


def test_ffm_file_as_fm_class_refused(saved_ffm, tmp_path):
    raw = saved_ffm
    assert raw.count(b'"FFMClassifier"') == 1
    p = tmp_path / "kind.cfm"
    p.write_bytes(_with_crc(raw.replace(b'"FFMClassifier"', b'"FMClassifier" ')))
    with pytest.raises(cfm.ModelFileError, match="kind"):
        cfm.load(p)


# ---------------------------------------------------------------- validation
@pytest.fixture
def vdata(rng):
    X, fields = ffm_data(rng, n=20, n_features=6, n_fields=2, nnz=3, empty_rows=())
    return X, rng.normal(size=X.shape[0]), fields


@pytest.mark.parametrize("cls", [cfm.FFMRegressor, cfm.FFMClassifier])
def test_fit_without_fields(vdata, cls):
    """No fields anywhere: inferred from X (cfm.infer_fields), documented."""
    X, y, _ = vdata
    yy = y if cls is cfm.FFMRegressor else (y > 0)
    expect = cfm.infer_fields(X)
    m = cls(n_epochs=1).fit(X, yy)
    np.testing.assert_array_equal(m.fields_, expect)
    m = cls(n_epochs=1).partial_fit(X, yy, **({"classes": [False, True]}
                                              if cls is cfm.FFMClassifier else {}))
    np.testing.assert_array_equal(m.fields_, expect)
    # the constructor's fields are used when fit is given none
    f = np.arange(X.shape[1]) % 2
    np.testing.assert_array_equal(cls(n_epochs=1, fields=f).fit(X, yy).fields_, f)


@pytest.mark.parametrize("bad,match", [
    (np.zeros(5, dtype=int), "one entry per column"),
    (np.zeros(7, dtype=int), "one entry per column"),
    (np.zeros((6, 1), dtype=int), "one entry per column"),
    (np.array([0, 1, -2, 0, 1, 0]), ">= 0"),
    (np.array([0, 1, 0.5, 0, 1, 0]), "integer"),
    (np.array([0, 1, np.nan, 0, 1, 0]), "integer"),
    (np.array(["a", "b", "a", "a", "b", "a"]), "integer"),
    (np.array([0, 1, 2**31, 0, 1, 0], dtype=np.int64), "2\\*\\*31"),
])
def test_bad_fields(vdata, bad, match):
    X, y, _ = vdata
    with pytest.raises(ValueError, match=match):
        cfm.FFMRegressor(n_epochs=1).fit(X, y, fields=bad)


@pytest.mark.parametrize("value", [np.inf, 1e20, -1e20])
def test_non_finite_or_huge_float_fields(vdata, value):
    """Clear message, no RuntimeWarning from a float -> int cast, no invented value."""
    import warnings

    X, y, _ = vdata
    bad = np.array([0, 1, value, 0, 1, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError) as exc:
            cfm.FFMRegressor(n_epochs=1).fit(X, y, fields=bad)
    assert "9223372036854775808" not in str(exc.value), str(exc.value)


def test_integral_float_fields_accepted(vdata):
    X, y, fields = vdata
    a = cfm.FFMRegressor(n_epochs=1, n_jobs=1, random_state=0).fit(X, y, fields=fields)
    b = cfm.FFMRegressor(n_epochs=1, n_jobs=1, random_state=0).fit(
        X, y, fields=fields.astype(float).tolist())
    np.testing.assert_array_equal(a.fields_, b.fields_)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))


def test_n_factors_zero(vdata):
    X, y, fields = vdata
    with pytest.raises(ValueError, match="n_factors"):
        cfm.FFMRegressor(n_factors=0, n_epochs=1).fit(X, y, fields=fields)
    with pytest.raises(ValueError, match="n_factors"):
        cfm.FFMClassifier(n_factors=-1, n_epochs=1).fit(X, y > 0, fields=fields)


def test_predict_wrong_n_features(vdata):
    X, y, fields = vdata
    m = cfm.FFMRegressor(n_epochs=1, n_jobs=1).fit(X, y, fields=fields)
    with pytest.raises(ValueError, match="expecting 6"):
        m.predict(X[:, :5])
    with pytest.raises(ValueError, match="expecting 6"):
        m.predict(sp.hstack([X, X]).tocsr())


def test_warm_start_with_different_fields(vdata):
    X, y, fields = vdata
    m = cfm.FFMRegressor(n_epochs=1, n_jobs=1, warm_start=True).fit(X, y, fields=fields)
    other = fields.copy()
    other[0] = 1 - other[0]
    with pytest.raises(ValueError, match="fields differ"):
        m.fit(X, y, fields=other)
    with pytest.raises(ValueError, match="fields differ"):
        m.partial_fit(X, y, fields=other)
    m.solver = "sgd"
    with pytest.raises(ValueError, match="warm start"):
        m.fit(X, y)
    m.solver, m.n_factors = "adagrad", 5
    with pytest.raises(ValueError, match="n_factors"):
        m.fit(X, y)


def test_unfitted(vdata):
    X, _, _ = vdata
    with pytest.raises(cfm.NotFittedError):
        cfm.FFMRegressor().predict(X)
    with pytest.raises(cfm.NotFittedError):
        cfm.FFMClassifier().V_


# ------------------------------------------------------------------ learning
def planted_ffm(n, rng, n_fields=3, per_field=8, k=4):
    """One-hot per field; label = sign of a planted field-aware interaction score."""
    n_features = n_fields * per_field
    fields = np.repeat(np.arange(n_fields), per_field).astype(np.int32)
    ids = rng.integers(0, per_field, (n, n_fields)) + np.arange(n_fields) * per_field
    X = sp.csr_matrix((np.ones(n * n_fields), ids.ravel(),
                       np.arange(0, n * n_fields + 1, n_fields)), shape=(n, n_features))
    V = rng.normal(0, 1, (n_features, n_fields, k))
    score = ref.ffm_predict(X, fields, 0.0, np.zeros(n_features), V)
    return X, (score > np.median(score)).astype(int), fields


def test_learns_planted_field_aware_signal():
    rng = np.random.default_rng(3)
    X, y, fields = planted_ffm(4000, rng)
    Xtr, ytr, Xte, yte = X[:3000], y[:3000], X[3000:], y[3000:]
    m = cfm.FFMClassifier(n_factors=4, n_epochs=15, learning_rate=0.2, l2_v=1e-4, n_jobs=1,
                          random_state=0).fit(Xtr, ytr, fields=fields)
    auc = cfm._metrics.auc(yte, m.decision_function(Xte))
    assert auc > 0.7, auc
    assert m.history_[-1]["train_loss"] < m.history_[0]["train_loss"]


def test_minus_one_field_means_absent_column():
    """cfm.load_libffm reports -1 for columns that never occur; fit accepts it."""
    rng = np.random.default_rng(0)
    X = sp.hstack([sp.random(200, 5, density=0.5, random_state=rng),
                   sp.csr_matrix((200, 1))]).tocsr()  # column 5 never occurs
    y = (rng.random(200) < 0.5).astype(int)
    m = cfm.FFMClassifier(n_factors=2, n_epochs=2, random_state=0)
    m.fit(X, y, fields=np.array([0, 1, 2, 0, 1, -1]))
    assert m.fields_[5] == 0 and m.n_fields_ == 3
