"""Estimator behaviour: precision, warm start, reproducibility, learning, early stopping."""
import os

import numpy as np
import pytest

import cfm
from cfm._state.fm import state_width
from cfm._validation import effective_n_threads
from conftest import random_sparse


def _fitted_state(m):
    return m._table.copy(), m._w0_state.copy()


# ---------------------------------------------------------------- precision
@pytest.mark.parametrize("cls", [cfm.FMRegressor, cfm.FMClassifier])
@pytest.mark.parametrize("solver", ["sgd", "adagrad", "ftrl"])
def test_float32_agrees_with_float64(reg_data, clf_data, cls, solver):
    X, y = (reg_data if cls is cfm.FMRegressor else clf_data)
    X, y = X[:500], y[:500]
    kw = dict(n_factors=4, solver=solver, n_epochs=3, n_jobs=1, random_state=7,
              learning_rate=0.05)
    m64 = cls(dtype="float64", **kw).fit(X, y)
    m32 = cls(dtype="float32", **kw).fit(X, y)
    assert m32._table.dtype == np.float32 and m64._table.dtype == np.float64
    d64 = m64.predict(X) if cls is cfm.FMRegressor else m64.decision_function(X)
    d32 = m32.predict(X) if cls is cfm.FMRegressor else m32.decision_function(X)
    np.testing.assert_allclose(d32, d64, rtol=1e-3, atol=1e-3)


# -------------------------------------------------------------- warm start
@pytest.mark.parametrize("cls", [cfm.FMRegressor, cfm.FMClassifier])
@pytest.mark.parametrize("solver", ["sgd", "adagrad", "ftrl"])
def test_warm_start_equals_one_long_fit(clf_data, cls, solver):
    X, y = clf_data
    X, y = X[:300], y[:300]
    kw = dict(n_factors=3, solver=solver, n_jobs=1, random_state=11)
    one = cls(n_epochs=10, **kw).fit(X, y)
    two = cls(n_epochs=5, warm_start=True, **kw).fit(X, y)
    assert two.n_epochs_ == 5
    two.fit(X, y)
    assert two.n_epochs_ == 10 and len(two.history_) == 10
    np.testing.assert_array_equal(one._table, two._table)
    np.testing.assert_array_equal(one._w0_state, two._w0_state)
    assert [h["train_loss"] for h in one.history_] == [h["train_loss"] for h in two.history_]


def test_fit_without_warm_start_restarts(reg_data):
    X, y = reg_data
    X, y = X[:200], y[:200]
    m = cfm.FMRegressor(n_epochs=2, n_jobs=1, random_state=0)
    a = _fitted_state(m.fit(X, y))
    b = _fitted_state(m.fit(X, y))
    np.testing.assert_array_equal(a[0], b[0])
    assert m.n_epochs_ == 2


def test_partial_fit_continues(reg_data):
    X, y = reg_data
    X, y = X[:400], y[:400]
    m = cfm.FMRegressor(n_factors=4, n_jobs=1, random_state=0, learning_rate=0.1)
    m.partial_fit(X, y)
    assert m.n_epochs_ == 1
    losses = [m.history_[-1]["train_loss"]]
    for _ in range(4):
        before = m._table.copy()
        m.partial_fit(X, y)
        assert not np.array_equal(before, m._table)
        losses.append(m.history_[-1]["train_loss"])
    assert m.n_epochs_ == 5 and len(m.history_) == 5
    assert losses[-1] < losses[0]
    # partial_fit == fit with the same number of epochs (same seed, n_jobs=1)
    f = cfm.FMRegressor(n_factors=4, n_jobs=1, random_state=0, learning_rate=0.1,
                        n_epochs=5).fit(X, y)
    np.testing.assert_array_equal(f._table, m._table)


def test_partial_fit_classifier_classes(clf_data):
    X, y = clf_data
    lab = np.array(["neg", "pos"])[y]
    m = cfm.FMClassifier(n_jobs=1, random_state=0)
    first = lab == "neg"
    with pytest.raises(ValueError, match="only one class"):
        cfm.FMClassifier().partial_fit(X[first][:50], lab[first][:50])
    m.partial_fit(X[first][:50], lab[first][:50], classes=["pos", "neg"])
    assert list(m.classes_) == ["neg", "pos"]
    m.partial_fit(X[~first][:50], lab[~first][:50])
    with pytest.raises(ValueError, match="not in classes_"):
        m.partial_fit(X[:3], np.array(["neg", "pos", "maybe"]))
    with pytest.raises(ValueError, match="features"):
        m.partial_fit(X[:5, :10], lab[:5])


def test_warm_start_changing_n_factors_raises(reg_data):
    X, y = reg_data
    m = cfm.FMRegressor(n_factors=2, n_epochs=1, warm_start=True, n_jobs=1).fit(X[:50], y[:50])
    with pytest.raises(ValueError, match="n_factors"):
        m.set_params(n_factors=3).fit(X[:50], y[:50])


def test_warm_start_switch_solver_and_dtype(reg_data):
    X, y = reg_data
    X, y = X[:200], y[:200]
    m = cfm.FMRegressor(n_factors=2, n_epochs=3, warm_start=True, n_jobs=1, random_state=0,
                        solver="adagrad").fit(X, y)
    p = m.predict(X)
    m.set_params(solver="ftrl", dtype="float64", n_epochs=1, learning_rate=1e-9)
    m.fit(X, y)
    assert m._table.dtype == np.float64
    np.testing.assert_allclose(m.predict(X), p, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------- reproducibility
@pytest.mark.parametrize("cls", [cfm.FMRegressor, cfm.FMClassifier])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_reproducible_with_one_thread(clf_data, cls, dtype):
    X, y = clf_data
    X, y = X[:500], y[:500]
    kw = dict(n_factors=4, n_epochs=3, n_jobs=1, random_state=42, dtype=dtype)
    a, b = cls(**kw).fit(X, y), cls(**kw).fit(X, y)
    np.testing.assert_array_equal(a._table, b._table)
    np.testing.assert_array_equal(a._w0_state, b._w0_state)
    c = cls(**{**kw, "random_state": 43}).fit(X, y)
    assert not np.array_equal(a._table, c._table)


@pytest.mark.parametrize("make_rs", [
    lambda: 0, lambda: np.int64(5), lambda: None, lambda: np.random.RandomState(0),
    lambda: np.random.default_rng(0)], ids=["int", "np_int", "None", "RandomState", "Generator"])
def test_random_state_types(reg_data, make_rs):
    X, y = reg_data
    X, y = X[:100], y[:100]
    m = cfm.FMRegressor(n_epochs=2, n_jobs=1, random_state=make_rs()).fit(X, y)
    assert np.isfinite(m.predict(X)).all()
    rs = make_rs()
    if rs is not None:  # same seed object state -> same model
        m2 = cfm.FMRegressor(n_epochs=2, n_jobs=1, random_state=make_rs()).fit(X, y)
        np.testing.assert_array_equal(m._table, m2._table)


@pytest.mark.parametrize("bad", ["seed", 1.5, True, [1, 2]])
def test_bad_random_state(reg_data, bad):
    X, y = reg_data
    with pytest.raises(ValueError):
        cfm.FMRegressor(n_epochs=1, random_state=bad).fit(X[:20], y[:20])


@pytest.fixture(scope="module")
def big_reg():
    # enough rows for cfm to really train with 2 threads (it uses one per
    # MIN_ROWS_PER_THREAD rows) and a few very frequent ("hot") features
    return cfm.make_fm_regression(n_samples=24000, n_features=300, n_fields=5, n_factors=4,
                                  noise=0.1, zipf_a=1.5, random_state=1)


@pytest.mark.parametrize("solver", ["sgd", "adagrad", "ftrl"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_multithreaded_training_close_to_single_thread(big_reg, solver, dtype):
    X, y = big_reg
    kw = dict(n_factors=4, n_epochs=3, random_state=0, dtype=dtype, solver=solver,
              learning_rate=0.05 if solver == "sgd" else 0.2)
    m2 = cfm.FMRegressor(n_jobs=2, **kw).fit(X, y)
    m1 = cfm.FMRegressor(n_jobs=1, **kw).fit(X, y)
    r2_1, r2_2 = m1.score(X, y), m2.score(X, y)
    assert r2_1 > 0.3
    assert abs(r2_1 - r2_2) < 0.05, (r2_1, r2_2)
    # padding columns stay clean: parameters only differ by Hogwild noise
    assert np.isfinite(m2._table).all()
    np.testing.assert_array_equal(m2._table[:, 1 + 4 + state_width(solver):], 0)


def test_multithreaded_kernel_epoch_close_to_single_thread(rng):
    """Direct kernel call: a Hogwild epoch with 2 threads vs 1 thread, on data
    with a few very frequent features (the ones the threads contend for)."""
    import reference as ref
    from conftest import new_table, train_epoch_kernel

    X = random_sparse(4000, 40, 4, rng)
    y = rng.normal(size=4000)
    hp = dict(learning_rate=0.05, l2_w0=0.0, l2_w=1e-3, l2_v=1e-3, l1=0.0, ftrl_beta=1.0)
    out = []
    for nt in (1, 2):
        table = new_table(40, 3, "adagrad", np.float64)
        table[:, 1:4] = np.random.default_rng(0).normal(0, 0.1, (40, 3))
        table[:, 4:6] = 1.0  # AdaGrad accumulators [G_w, G_v]
        w0s = np.array([0.0, 1.0, 0.0])
        for _ in range(3):
            train_epoch_kernel(X, y, None, np.arange(4000), table, w0s, 3, "squared", "adagrad",
                               True, False, hp, n_threads=nt)
        assert np.isfinite(table).all()
        np.testing.assert_array_equal(table[:, 6:], 0)  # padding columns untouched
        out.append(ref.fm_predict(X[:300], w0s[0], table[:, 0], table[:, 1:4]))
    mse1, mse2 = [np.mean((p - y[:300]) ** 2) for p in out]
    assert mse2 < 1.1 * mse1 + 0.05


# ------------------------------------------------------------------ openmp
def test_openmp_enabled():
    if os.environ.get("CFM_NO_OPENMP"):
        pytest.skip("CFM_NO_OPENMP set: built without OpenMP")
    assert cfm.openmp_enabled() is True
    assert effective_n_threads(2) == 2
    assert effective_n_threads(1) == 1
    assert effective_n_threads(-1) >= 1
    assert effective_n_threads(None) >= 1


def test_n_jobs_two_uses_two_openmp_threads():
    if os.environ.get("CFM_NO_OPENMP"):
        pytest.skip("CFM_NO_OPENMP set")
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from cfm import _utils
    with threadpoolctl.threadpool_limits(limits=2, user_api="openmp"):
        assert _utils.omp_max_threads() == 2
        assert effective_n_threads(None) <= 2
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert effective_n_threads(None) == 1
        assert effective_n_threads(2) == 2  # explicit n_jobs wins


# ------------------------------------------------------------- divergence
def test_divergence_raises_with_learning_rate_hint(rng):
    X = rng.uniform(100, 1000, size=(50, 5))
    y = rng.uniform(-1000, 1000, size=50)
    m = cfm.FMRegressor(solver="sgd", learning_rate=1e6, normalize=False, n_epochs=5,
                        n_jobs=1, random_state=0)
    with pytest.raises(cfm.DivergenceError, match="learning_rate") as exc:
        m.fit(X, y)
    assert "1e+06" in str(exc.value)
    assert issubclass(cfm.DivergenceError, FloatingPointError)


# --------------------------------------------------------------- classifier
@pytest.mark.parametrize("labels", [("a", "b"), ("yes", "no"), (-1, 1), (3, 7), (0.5, 2.5),
                                    (True, False)])
def test_classifier_any_two_labels(clf_data, labels):
    X, y01 = clf_data
    X, y01 = X[:400], y01[:400]
    lab = np.array(labels, dtype=object if isinstance(labels[0], str) else None)
    y = lab[y01]
    m = cfm.FMClassifier(n_epochs=5, n_jobs=1, random_state=0).fit(X, y)
    assert list(m.classes_) == sorted(set(labels))
    proba = m.predict_proba(X)
    assert proba.shape == (400, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert np.all((proba >= 0) & (proba <= 1))
    d = m.decision_function(X)
    pred = m.predict(X)
    np.testing.assert_array_equal(pred, np.where(d > 0, m.classes_[1], m.classes_[0]))
    np.testing.assert_array_equal(proba[:, 1] > 0.5, d > 0)
    assert set(np.unique(pred)) <= set(labels)
    assert np.mean(pred == y) > 0.7


def test_classifier_learns(clf_data):
    X, y = clf_data
    Xtr, ytr, Xte, yte = X[:1600], y[:1600], X[1600:], y[1600:]
    m = cfm.FMClassifier(n_factors=4, n_epochs=20, n_jobs=1, random_state=0,
                         learning_rate=0.3).fit(Xtr, ytr)
    assert m.score(Xtr, ytr) > 0.85
    assert m.score(Xte, yte) > 0.8


def test_regressor_learns_interactions(reg_data):
    X, y = reg_data
    Xtr, ytr, Xte, yte = X[:1200], y[:1200], X[1200:], y[1200:]
    kw = dict(n_epochs=20, n_jobs=1, random_state=0, learning_rate=0.2, normalize=False)
    fm = cfm.FMRegressor(n_factors=4, **kw).fit(Xtr, ytr)
    lin = cfm.FMRegressor(n_factors=0, **kw).fit(Xtr, ytr)
    r2_fm, r2_lin = fm.score(Xte, yte), lin.score(Xte, yte)
    assert r2_fm > 0.6
    assert r2_fm > r2_lin + 0.15


# --------------------------------------------------------- early stopping
def test_early_stopping_regressor(reg_data):
    X, y = reg_data
    Xtr, ytr, Xv, yv = X[:300], y[:300], X[1200:], y[1200:]
    m = cfm.FMRegressor(n_factors=8, solver="adagrad", learning_rate=1.0, n_epochs=60,
                        n_iter_no_change=3, l2_w=0, l2_v=0, n_jobs=1, random_state=0,
                        init_std=0.3)
    m.fit(Xtr, ytr, eval_set=(Xv, yv))
    assert len(m.history_) < 60
    assert m.n_epochs_ == len(m.history_)
    best = m.best_epoch_
    assert 1 <= best <= len(m.history_) - 3
    scores = [h["eval_rmse"] for h in m.history_]
    assert scores[best - 1] == min(scores)
    for h in m.history_:
        assert {"epoch", "train_loss", "eval_rmse", "time"} <= set(h)
    # best parameters restored
    rmse = np.sqrt(np.mean((m.predict(Xv) - yv) ** 2))
    assert rmse == pytest.approx(scores[best - 1], rel=1e-6)


def test_early_stopping_classifier_and_second_eval_set(clf_data):
    X, y = clf_data
    m = cfm.FMClassifier(n_factors=8, solver="adagrad", learning_rate=1.0, n_epochs=60,
                         n_iter_no_change=2, l2_w=0, l2_v=0, n_jobs=1, random_state=0,
                         init_std=0.3)
    m.fit(X[:300], y[:300], eval_set=[(X[1600:], y[1600:]), (X[300:400], y[300:400])])
    assert 1 <= m.best_epoch_ <= len(m.history_) - 2
    assert len(m.history_) < 60
    assert all("eval_logloss" in h and "eval1_logloss" in h for h in m.history_)
    m.set_params(eval_metric="auc", n_epochs=3)
    m.fit(X[:300], y[:300], eval_set=(X[1600:], y[1600:]))
    assert all(0 <= h["eval_auc"] <= 1 for h in m.history_)


def test_no_eval_set_runs_all_epochs(reg_data):
    X, y = reg_data
    m = cfm.FMRegressor(n_epochs=4, n_jobs=1, random_state=0).fit(X[:100], y[:100])
    assert len(m.history_) == 4 and m.best_epoch_ == 4
    assert all(set(h) >= {"epoch", "train_loss"} for h in m.history_)


def test_verbose_prints_one_line_per_epoch(reg_data, capsys):
    X, y = reg_data
    cfm.FMRegressor(n_epochs=3, verbose=1, n_jobs=1, random_state=0).fit(
        X[:100], y[:100], eval_set=(X[100:150], y[100:150]))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("epoch")]
    assert len(lines) == 3
    assert "train_loss" in lines[0] and "eval_rmse" in lines[0]
    out = capsys.readouterr().out
    assert out == ""


def test_silent_by_default(reg_data, capsys):
    X, y = reg_data
    cfm.FMRegressor(n_epochs=2, n_jobs=1).fit(X[:100], y[:100])
    cap = capsys.readouterr()
    assert cap.err == "" and cap.out == ""


def test_sample_weight_zero_rows_ignored(rng):
    X = random_sparse(40, 10, 3, rng)
    y = rng.normal(size=40)
    sw = np.ones(40)
    sw[20:] = 0.0
    kw = dict(n_epochs=3, n_jobs=1, random_state=0, shuffle=False, dtype="float64",
              solver="sgd", l2_w=0, l2_v=0, fit_intercept=False)
    a = cfm.FMRegressor(**kw).fit(X, y, sample_weight=sw)
    b = cfm.FMRegressor(**kw).fit(X, y, sample_weight=np.ones(40) * 2)
    assert not np.allclose(a.predict(X), b.predict(X))
    assert np.isfinite(a.predict(X)).all()


def test_not_fitted_raises():
    m = cfm.FMRegressor()
    with pytest.raises(cfm.NotFittedError):
        m.predict(np.ones((2, 2)))
    with pytest.raises(cfm.NotFittedError):
        m.save("/nonexistent/x.cfm")
    with pytest.raises(cfm.NotFittedError):
        cfm.FMClassifier().predict_proba(np.ones((2, 2)))
