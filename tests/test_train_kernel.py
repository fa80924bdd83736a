"""One training epoch of the kernel equals the NumPy reference, sample by sample."""
import numpy as np
import pytest
import scipy.sparse as sp

import cfm
from cfm._state.base import ADAGRAD_INIT
import reference as ref
from conftest import new_table, random_params, random_sparse, train_epoch_kernel

SOLVER_LR = {"sgd": 0.05, "adagrad": 0.1, "ftrl": 0.2}


def init_state(n, k, solver, rng):
    """Random parameters and plausible optimizer state, as a RefState."""
    w0, w, V = random_params(n, k, rng, scale=0.3)
    opt = None
    if solver == "adagrad":
        w0s = [w0, ADAGRAD_INIT + rng.uniform(0, 1), 0.0]
        opt = {"Gw": ADAGRAD_INIT + rng.uniform(0, 1, n),
               "GV": ADAGRAD_INIT + rng.uniform(0, 1, n)}
    elif solver == "ftrl":
        w0s = [w0, rng.normal(), rng.uniform(0, 2)]
        opt = {"z": rng.normal(0, 1, n), "nw": rng.uniform(0, 2, n),
               "GV": ADAGRAD_INIT + rng.uniform(0, 1, n)}
    else:
        w0s = [w0, 0.0, 0.0]
    return ref.RefState(w0s, w, V, solver, opt)


def to_kernel(st, dtype=np.float64):
    n, k = st.V.shape
    table = new_table(n, k, st.solver, dtype)
    st.to_table(table)
    return table, st.w0_state.copy()


run_kernel = train_epoch_kernel


def assert_state_equal(table, w0s, st, rtol=1e-10, atol=1e-12):
    k = st.V.shape[1]
    got = ref.RefState.from_table(table, w0s, k, st.solver)
    np.testing.assert_allclose(w0s, st.w0_state, rtol=rtol, atol=atol)
    np.testing.assert_allclose(got.w, st.w, rtol=rtol, atol=atol)
    np.testing.assert_allclose(got.V, st.V, rtol=rtol, atol=atol)
    if st.solver == "adagrad":
        np.testing.assert_allclose(got.Gw, st.Gw, rtol=rtol, atol=atol)
        np.testing.assert_allclose(got.GV, st.GV, rtol=rtol, atol=atol)
    elif st.solver == "ftrl":
        np.testing.assert_allclose(got.z, st.z, rtol=rtol, atol=atol)
        np.testing.assert_allclose(got.nw, st.nw, rtol=rtol, atol=atol)
        np.testing.assert_allclose(got.GV, st.GV, rtol=rtol, atol=atol)


CASES = [
    # (solver, loss, fit_intercept, weighted, normalize, l1)
    ("sgd", "squared", True, False, False, 0.0),
    ("sgd", "logistic", True, True, True, 0.0),
    ("sgd", "squared", False, True, True, 0.0),
    ("adagrad", "squared", True, False, True, 0.0),
    ("adagrad", "logistic", True, True, False, 0.0),
    ("adagrad", "logistic", False, False, True, 0.0),
    ("ftrl", "squared", True, False, False, 0.0),
    ("ftrl", "logistic", True, True, True, 0.05),
    ("ftrl", "squared", False, True, True, 0.3),
    ("ftrl", "logistic", True, False, False, 0.0),
]


def _problem(rng, loss, weighted, n=30, n_features=12, k=3):
    X = random_sparse(n, n_features, 4, rng, empty_rows=(4,))
    if loss == "logistic":
        y = rng.choice([-1.0, 1.0], n)
    else:
        y = rng.normal(size=n)
    sw = rng.uniform(0.2, 2.0, n) if weighted else None
    return X, y, sw, k


@pytest.mark.parametrize("solver,loss,fit_intercept,weighted,normalize,l1", CASES)
def test_epoch_matches_reference(rng, solver, loss, fit_intercept, weighted, normalize, l1):
    X, y, sw, k = _problem(rng, loss, weighted)
    hp = dict(learning_rate=SOLVER_LR[solver], l2_w0=0.01, l2_w=0.02, l2_v=0.03, l1=l1,
              ftrl_beta=0.7)
    st = init_state(X.shape[1], k, solver, rng)
    table, w0s = to_kernel(st)
    order = rng.permutation(X.shape[0])
    order = np.concatenate([order, order[:5]])  # a row may be visited twice
    # whole epoch in one kernel call
    tab_all, w0_all = table.copy(), w0s.copy()
    lk, wk, bad = run_kernel(X, y, sw, order, tab_all, w0_all, k, loss, solver,
                             fit_intercept, normalize, hp)
    # step by step: one kernel call per sample vs the reference
    for i in order:
        run_kernel(X, y, sw, [i], table, w0s, k, loss, solver, fit_intercept, normalize, hp)
        ref.train_epoch(X, y, [i], st, loss=loss, fit_intercept=fit_intercept,
                        normalize=normalize, sample_weight=sw, **hp)
        assert_state_equal(table, w0s, st)
    np.testing.assert_array_equal(tab_all, table)
    np.testing.assert_array_equal(w0_all, w0s)
    # the returned loss sums are the pre-update losses
    st0 = init_state(X.shape[1], k, solver, np.random.default_rng(1))
    t0, w00 = to_kernel(st0)
    lk0, wk0, _ = run_kernel(X, y, sw, order, t0, w00, k, loss, solver, fit_intercept,
                             normalize, hp)
    lr_, wr_, br_ = ref.train_epoch(X, y, order, st0, loss=loss, fit_intercept=fit_intercept,
                                    normalize=normalize, sample_weight=sw, **hp)
    assert lk0 == pytest.approx(lr_, rel=1e-10)
    assert wk0 == pytest.approx(wr_, rel=1e-12)
    assert bad == 0 and br_ == 0
    if not fit_intercept:
        assert w0_all[0] == st.w0_state[0]  # untouched bias


def test_ftrl_l1_gives_exact_zeros(rng):
    X, y, sw, k = _problem(rng, "squared", False)
    hp = dict(learning_rate=0.1, l2_w0=0.0, l2_w=0.0, l2_v=0.0, l1=10.0, ftrl_beta=1.0)
    st = init_state(X.shape[1], k, "ftrl", rng)
    table, w0s = to_kernel(st)
    run_kernel(X, y, sw, np.arange(30), table, w0s, k, "squared", "ftrl", True, True, hp)
    touched = np.unique(X.indices)
    assert np.all(table[touched, 0] == 0.0)


def test_float32_table_close_to_reference(rng):
    X, y, sw, k = _problem(rng, "logistic", True)
    hp = dict(learning_rate=0.1, l2_w0=0.0, l2_w=1e-3, l2_v=1e-3, l1=0.0, ftrl_beta=1.0)
    st = init_state(X.shape[1], k, "adagrad", rng)
    table, w0s = to_kernel(st, np.float32)
    st = ref.RefState.from_table(table, w0s, k, "adagrad")  # same (rounded) start
    order = np.arange(30)
    run_kernel(X, y, sw, order, table, w0s, k, "logistic", "adagrad", True, True, hp)
    ref.train_epoch(X, y, order, st, loss="logistic", normalize=True, sample_weight=sw, **hp)
    assert_state_equal(table, w0s, st, rtol=1e-4, atol=1e-5)


def test_nonfinite_prediction_rows_are_skipped_and_counted():
    X = sp.csr_matrix(np.array([[1e200, 1e200], [1.0, 0.0]]))
    table = new_table(2, 1, "sgd", np.float64)
    table[:, 0] = 1.0
    table[:, 1] = 1e200
    w0s = np.zeros(3)
    hp = dict(learning_rate=0.1, l2_w0=0.0, l2_w=0.0, l2_v=0.0, l1=0.0, ftrl_beta=1.0)
    before = table.copy()
    loss, wsum, bad = run_kernel(X, [1.0, 1.0], None, [0], table, w0s, 1, "squared", "sgd",
                                 True, False, hp)
    assert bad == 1 and wsum == 0.0 and loss == 0.0
    np.testing.assert_array_equal(table, before)


@pytest.mark.parametrize("solver", ["sgd", "adagrad", "ftrl"])
@pytest.mark.parametrize("cls", [cfm.FMRegressor, cfm.FMClassifier])
def test_estimator_epoch_matches_reference(rng, solver, cls):
    """Through the estimator: partial_fit with shuffle=False == reference epoch."""
    X = random_sparse(40, 15, 3, rng)
    if cls is cfm.FMClassifier:
        y = rng.choice(["no", "yes"], 40)
        y_ref = np.where(y == "yes", 1.0, -1.0)
        loss = "logistic"
    else:
        y = y_ref = rng.normal(size=40)
        loss = "squared"
    sw = rng.uniform(0.5, 1.5, 40)
    params = dict(n_factors=3, solver=solver, learning_rate=SOLVER_LR[solver], l2_w0=0.01,
                  l2_w=0.01, l2_v=0.01, l1=0.01 if solver == "ftrl" else 0.0, ftrl_beta=0.5,
                  shuffle=False, dtype="float64", n_jobs=1, random_state=3,
                  fit_intercept=solver != "sgd")
    m = cls(n_epochs=1, **params).fit(X, y, sample_weight=sw)
    st = ref.RefState.from_table(m._table, m._w0_state, 3, solver)
    m.partial_fit(X, y, sample_weight=sw)
    ref.train_epoch(X, y_ref, np.arange(40), st, loss=loss, fit_intercept=params["fit_intercept"],
                    normalize=True, sample_weight=sw, learning_rate=params["learning_rate"],
                    l2_w0=0.01, l2_w=0.01, l2_v=0.01, l1=params["l1"], ftrl_beta=0.5)
    assert_state_equal(m._table, m._w0_state, st)
    assert len(m.history_) == 2 and m.n_epochs_ == 2


@pytest.mark.parametrize("solver", ["sgd", "adagrad", "ftrl"])
def test_initial_state(rng, solver):
    X = random_sparse(30, 10, 3, rng)
    y = rng.normal(size=30) + 3.0
    m = cfm.FMRegressor(n_factors=2, solver=solver, n_epochs=1, dtype="float64", n_jobs=1,
                        random_state=0, learning_rate=1e-12)
    m.fit(X, y)  # a negligible step: state ~ initial state
    assert m.w0_ == pytest.approx(np.mean(y), rel=1e-6)
    k = 2
    if solver == "adagrad":
        assert np.all(m._table[:, 1 + k:3 + k] >= ADAGRAD_INIT)
    if solver == "ftrl":
        assert np.all(m._table[:, 3 + k] >= ADAGRAD_INIT)
    assert np.std(m.V_) == pytest.approx(m._init_std(), rel=0.3)
