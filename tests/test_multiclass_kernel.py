"""The softmax FM kernels (src/cfm/_fm.pyx, "Multiclass") against the NumPy
reference (tests/reference_softmax.py): loss, gradients (finite differences),
scores, and one SGD-type epoch sample by sample."""
import numpy as np
import pytest
import scipy.sparse as sp

from cfm import _fm
from cfm._metrics import accuracy, logloss
from cfm._state.base import OPTIMIZERS
from cfm._state.fm import state_width
from cfm._state.softmax import SoftmaxFMTable
import reference as ref
import reference_softmax as rsm
from conftest import random_params, random_sparse
from test_train_kernel import SOLVER_LR, init_state

C = 3


def _tables(states, solver, dtype=np.float64):
    """Kernel table and (C, 3) biases holding the reference states."""
    n, k = states[0].V.shape
    state = SoftmaxFMTable.new(n, k=k, solver=solver, dtype=dtype, init_std=0.1, seed=1,
                               n_threads=1, w0_state=np.zeros(3), normalize=False,
                               n_classes=len(states))
    for c, st in enumerate(states):
        st.to_table(state.blocks()[:, c, :])
        state.w0_state[c] = st.w0_state
    return state


def _check_equal(state, states, rtol=1e-10, atol=1e-12):
    k = states[0].V.shape[1]
    for c, st in enumerate(states):
        got = ref.RefState.from_table(state.blocks()[:, c, :], state.w0_state[c], k, st.solver)
        np.testing.assert_allclose(state.w0_state[c], st.w0_state, rtol=rtol, atol=atol)
        np.testing.assert_allclose(got.w, st.w, rtol=rtol, atol=atol)
        np.testing.assert_allclose(got.V, st.V, rtol=rtol, atol=atol)
        if st.solver == "adagrad":
            np.testing.assert_allclose(got.Gw, st.Gw, rtol=rtol, atol=atol)
            np.testing.assert_allclose(got.GV, st.GV, rtol=rtol, atol=atol)
        elif st.solver == "ftrl":
            np.testing.assert_allclose(got.z, st.z, rtol=rtol, atol=atol)
            np.testing.assert_allclose(got.nw, st.nw, rtol=rtol, atol=atol)


def _epoch(state, X, y, sw, order, hp, fit_intercept, normalize, n_threads=1):
    X = sp.csr_matrix(X)
    return _fm.fm_softmax_train_epoch(
        X.data, X.indices, X.indptr.astype(np.int64), np.asarray(y, dtype=np.float64),
        np.empty(0) if sw is None else np.asarray(sw, dtype=np.float64),
        np.asarray(order, dtype=np.int64), state.table, state.w0_state, n_factors=state.k,
        block=state.block, optimizer=OPTIMIZERS[state.solver], fit_intercept=fit_intercept,
        normalize=normalize, learning_rate=hp["learning_rate"], l2_w0=hp["l2_w0"],
        l2_w=hp["l2_w"], l2_v=hp["l2_v"], l1=hp["l1"], ftrl_beta=hp["ftrl_beta"],
        n_threads=n_threads)


@pytest.mark.parametrize("normalize", [False, True])
def test_analytic_gradient_matches_finite_differences(rng, normalize):
    n, k = 7, 3
    x = np.zeros(n)
    x[[0, 2, 3, 6]] = rng.uniform(0.5, 2.0, 4)
    params = [random_params(n, k, rng, scale=0.4) for _ in range(C)]
    y = 1
    loss, grads = rsm.loss_and_grad(x, y, params, normalize)
    eps = 1e-6

    def f(ps):
        return rsm.loss_and_grad(x, y, ps, normalize)[0]

    for c in range(C):
        w0, w, V = params[c]
        # bias
        up = [p if d != c else (w0 + eps, w, V) for d, p in enumerate(params)]
        dn = [p if d != c else (w0 - eps, w, V) for d, p in enumerate(params)]
        assert grads[c][0] == pytest.approx((f(up) - f(dn)) / (2 * eps), abs=1e-7)
        for j in range(n):
            wp, wm = w.copy(), w.copy()
            wp[j] += eps
            wm[j] -= eps
            num = (f([p if d != c else (w0, wp, V) for d, p in enumerate(params)])
                   - f([p if d != c else (w0, wm, V) for d, p in enumerate(params)])) / (2 * eps)
            assert grads[c][1][j] == pytest.approx(num, abs=1e-7)
            for fct in range(k):
                Vp, Vm = V.copy(), V.copy()
                Vp[j, fct] += eps
                Vm[j, fct] -= eps
                num = (f([p if d != c else (w0, w, Vp) for d, p in enumerate(params)])
                       - f([p if d != c else (w0, w, Vm) for d, p in enumerate(params)])) \
                    / (2 * eps)
                assert grads[c][2][j, fct] == pytest.approx(num, abs=1e-7)
    # the loss is the cross-entropy of the softmax (and the metric agrees)
    s = np.array([ref.fm_score_row(ref.scaled_row(x, normalize), *p) for p in params])
    p = np.exp(s) / np.exp(s).sum()
    assert loss == pytest.approx(-np.log(p[y]), rel=1e-12)
    assert logloss(np.array([y]), s[None, :]) == pytest.approx(loss, rel=1e-12)


def test_metrics_multiclass():
    s = np.array([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    y = np.array([1, 1, 2])
    p = np.exp(s) / np.exp(s).sum(1, keepdims=True)
    assert logloss(y, s) == pytest.approx(-np.mean(np.log(p[np.arange(3), y])), rel=1e-12)
    assert accuracy(y, s) == pytest.approx(1 / 3)  # ties: the first class
    assert accuracy(np.array([1.0, 0.0]), np.array([0.3, -2.0])) == 1.0  # binary


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("normalize", [False, True])
def test_scores_match_reference(rng, dtype, normalize):
    X = random_sparse(25, 11, 4, rng, empty_rows=(3,))
    states = [init_state(11, 4, "adagrad", rng) for _ in range(C)]
    state = _tables(states, "adagrad", dtype)
    state = SoftmaxFMTable(state.table, state.w0_state, state.k, C, "adagrad", normalize)
    want = rsm.predict(X, states, normalize)
    for nt in (1, 2):
        got = state.decision(_csr(X), nt)
        tol = 1e-12 if dtype == np.float64 else 2e-5
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    np.testing.assert_allclose(got[3], [st.w0_state[0] for st in states])  # empty row


def _csr(X):
    from cfm._validation import check_X

    return check_X(X)


CASES = [
    # (solver, fit_intercept, weighted, normalize, l1)
    ("sgd", True, False, False, 0.0),
    ("sgd", False, True, True, 0.0),
    ("adagrad", True, True, False, 0.0),
    ("adagrad", True, False, True, 0.0),
    ("ftrl", True, True, True, 0.05),
    ("ftrl", False, False, False, 0.0),
]


@pytest.mark.parametrize("solver,fit_intercept,weighted,normalize,l1", CASES)
def test_epoch_matches_reference(rng, solver, fit_intercept, weighted, normalize, l1):
    n, nf, k = 24, 10, 3
    X = random_sparse(n, nf, 4, rng, empty_rows=(4,))
    y = rng.integers(0, C, n).astype(np.float64)
    sw = rng.uniform(0.2, 2.0, n) if weighted else None
    hp = dict(learning_rate=SOLVER_LR[solver], l2_w0=0.01, l2_w=0.02, l2_v=0.03, l1=l1,
              ftrl_beta=0.7)
    states = [init_state(nf, k, solver, rng) for _ in range(C)]
    state = _tables(states, solver)
    order = rng.permutation(n)
    order = np.concatenate([order, order[:5]])  # a row may be visited twice
    whole = state.clone()
    lk, wk, bad = _epoch(whole, X, y, sw, order, hp, fit_intercept, normalize)
    # one SGD-type step at a time: kernel vs reference
    for i in order:
        _epoch(state, X, y, sw, [i], hp, fit_intercept, normalize)
        rsm.train_epoch(X, y, [i], states, fit_intercept=fit_intercept, normalize=normalize,
                        sample_weight=sw, **hp)
        _check_equal(state, states)
    np.testing.assert_array_equal(whole.table, state.table)
    np.testing.assert_array_equal(whole.w0_state, state.w0_state)
    # the returned sums are the pre-update losses
    states0 = [init_state(nf, k, solver, np.random.default_rng(c)) for c in range(C)]
    s0 = _tables(states0, solver)
    lk0, wk0, _ = _epoch(s0, X, y, sw, order, hp, fit_intercept, normalize)
    lr_, wr_, br_ = rsm.train_epoch(X, y, order, states0, fit_intercept=fit_intercept,
                                    normalize=normalize, sample_weight=sw, **hp)
    assert lk0 == pytest.approx(lr_, rel=1e-10)
    assert wk0 == pytest.approx(wr_, rel=1e-12)
    assert bad == 0 and br_ == 0


def test_layout_is_binary_blocks():
    """Each class block is a binary FM record; init draws differ per class,
    do not depend on threads, and the state width follows the solver."""
    a = SoftmaxFMTable.new(50, k=5, solver="ftrl", dtype=np.float32, init_std=0.1, seed=7,
                           n_threads=1, w0_state=np.zeros(3), normalize=True, n_classes=4)
    b = SoftmaxFMTable.new(50, k=5, solver="ftrl", dtype=np.float32, init_std=0.1, seed=7,
                           n_threads=2, w0_state=np.zeros(3), normalize=True, n_classes=4)
    np.testing.assert_array_equal(a.table, b.table)
    assert a.block == 1 + 5 + state_width("ftrl")
    assert a.table.shape[1] * 4 % 64 == 0 and a.table.shape[1] >= 4 * a.block
    V = a.factors()
    assert V.shape == (50, 4, 5) and not np.array_equal(V[:, 0], V[:, 1])
    assert np.all(a.blocks()[:, :, 1 + 5 + 2] == 1.0)  # AdaGrad accumulators of V
    assert a.w.shape == (50, 4) and np.all(a.w == 0)
