"""Bad inputs and parameters raise ValueError before any kernel runs (never crash)."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp

import cfm
from conftest import random_sparse


@pytest.fixture
def data(rng):
    X = random_sparse(20, 6, 3, rng)
    return X, rng.normal(size=20), rng.choice([0, 1], 20)


@pytest.fixture
def fitted(data):
    X, y, _ = data
    return cfm.FMRegressor(n_epochs=1, n_jobs=1, random_state=0).fit(X, y)


@pytest.mark.parametrize("value,what", [(np.nan, "NaN"), (np.inf, "infinity"),
                                        (-np.inf, "infinity")])
@pytest.mark.parametrize("kind", ["dense", "csr", "csr32", "csc"])
def test_nonfinite_X(data, value, what, kind):
    X, y, _ = data
    Xd = X.toarray()
    Xd[3, 2] = value
    Xb = {"dense": Xd, "csr": sp.csr_matrix(Xd), "csr32": sp.csr_matrix(Xd, dtype=np.float32),
          "csc": sp.csc_matrix(Xd)}[kind]
    with pytest.raises(ValueError, match=what):
        cfm.FMRegressor(n_epochs=1).fit(Xb, y)
    m = cfm.FMRegressor(n_epochs=1, n_jobs=1).fit(X, y)
    with pytest.raises(ValueError, match=what):
        m.predict(Xb)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_y_and_weights(data, value):
    X, y, y01 = data
    yb = y.copy()
    yb[0] = value
    with pytest.raises(ValueError, match="NaN|infinity"):
        cfm.FMRegressor(n_epochs=1).fit(X, yb)
    sw = np.ones(20)
    sw[5] = value
    with pytest.raises(ValueError, match="sample_weight"):
        cfm.FMRegressor(n_epochs=1).fit(X, y, sample_weight=sw)
    with pytest.raises(ValueError, match="sample_weight"):
        cfm.FMClassifier(n_epochs=1).fit(X, y01, sample_weight=sw)


def test_bad_sample_weight(data):
    X, y, _ = data
    for sw, msg in [(-np.ones(20), "Negative"), (np.zeros(20), "sums to zero"),
                    (np.ones(19), "shape"), (np.ones((20, 2)), "shape")]:
        with pytest.raises(ValueError, match=msg):
            cfm.FMRegressor(n_epochs=1).fit(X, y, sample_weight=sw)


def test_wrong_n_features_at_predict(fitted, data):
    X, _, _ = data
    with pytest.raises(ValueError, match="6 features"):
        fitted.predict(X[:, :5])
    with pytest.raises(ValueError, match="expecting 6"):
        fitted.predict(sp.hstack([X, X]).tocsr())


def test_classifier_target_checks(data):
    X, y, y01 = data
    y3 = np.arange(20) % 3
    assert cfm.FMClassifier(n_epochs=1).fit(X, y3).predict_proba(X).shape == (20, 3)
    assert cfm.FFMClassifier(n_epochs=1).fit(X, y3, fields=np.zeros(6, dtype=int)).predict_proba(
        X).shape == (20, 3)
    with pytest.raises(ValueError, match="binary.*3 classes"):
        cfm.FwFMClassifier(n_epochs=1).fit(X, y3, fields=np.zeros(6, dtype=int))
    with pytest.raises(ValueError, match="solver='als' trains binary models only"):
        cfm.FMClassifier(n_epochs=1, solver="als").fit(X, y3)
    with pytest.raises(ValueError, match="continuous"):
        cfm.FMClassifier(n_epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="one class"):
        cfm.FMClassifier(n_epochs=1).fit(X, np.ones(20))
    with pytest.raises(ValueError, match="one class"):
        cfm.FMClassifier(n_epochs=1).fit(X, np.array(["a"] * 20))


def test_y_shape_checks(data):
    X, y, _ = data
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        cfm.FMRegressor(n_epochs=1).fit(X, y[:10])
    with pytest.raises(ValueError, match="1d"):
        cfm.FMRegressor(n_epochs=1).fit(X, np.ones((20, 2)))
    with pytest.raises(ValueError, match="requires y"):
        cfm.FMRegressor(n_epochs=1).fit(X, None)
    with pytest.raises(ValueError, match="numeric"):
        cfm.FMRegressor(n_epochs=1).fit(X, np.array(["a"] * 20))


def test_empty_and_1d_X(data):
    _, y, _ = data
    with pytest.raises(ValueError, match="0 sample"):
        cfm.FMRegressor(n_epochs=1).fit(np.empty((0, 3)), [])
    with pytest.raises(ValueError, match="0 sample"):
        cfm.FMRegressor(n_epochs=1).fit(sp.csr_matrix((0, 3)), [])
    with pytest.raises(ValueError, match="0 feature"):
        cfm.FMRegressor(n_epochs=1).fit(np.empty((5, 0)), np.ones(5))
    with pytest.raises(ValueError, match="2D"):
        cfm.FMRegressor(n_epochs=1).fit(np.ones(20), y)
    with pytest.raises(ValueError, match="2D"):
        cfm.FMRegressor(n_epochs=1).fit(np.ones((2, 2, 5)), y[:2])
    with pytest.raises(ValueError):
        cfm.FMRegressor(n_epochs=1).fit(None, y)


def test_non_numeric_X(data):
    _, y, _ = data
    with pytest.raises(ValueError):
        cfm.FMRegressor(n_epochs=1).fit(np.array([["a", "b"]] * 20), y)
    with pytest.raises(ValueError, match="Complex"):
        cfm.FMRegressor(n_epochs=1).fit(np.ones((20, 2)) * 1j, y)


@pytest.mark.parametrize("params,match", [
    (dict(n_jobs=0), "n_jobs"),
    (dict(n_jobs=1.5), "n_jobs"),
    (dict(n_jobs="2"), "n_jobs"),
    (dict(learning_rate=-0.1), "learning_rate"),
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(learning_rate=np.nan), "learning_rate"),
    (dict(solver="adam"), "solver"),
    (dict(l1=0.1), "l1"),
    (dict(l1=0.1, solver="sgd"), "l1"),
    (dict(n_factors=-1), "n_factors"),
    (dict(n_factors=2.5), "n_factors"),
    (dict(n_epochs=0), "n_epochs"),
    (dict(dtype="int8"), "dtype"),
    (dict(dtype="float16"), "dtype"),
    (dict(dtype="nonsense"), "dtype"),
    (dict(l2_w=-1.0), "l2_w"),
    (dict(init_std=-1.0), "init_std"),
    (dict(normalize="yes"), "normalize"),
    (dict(eval_metric="accuracy"), "eval_metric"),
    (dict(n_iter_no_change=0), "n_iter_no_change"),
], ids=lambda v: "-".join(f"{k}={v[k]!r}" for k in v) if isinstance(v, dict) else None)
def test_invalid_params(data, params, match):
    X, y, _ = data
    m = cfm.FMRegressor(n_epochs=1, **{k: v for k, v in params.items() if k != "n_epochs"})
    if "n_epochs" in params:
        m.set_params(n_epochs=params["n_epochs"])
    with pytest.raises(ValueError, match=match):
        m.fit(X, y)
    assert not hasattr(m, "_table")  # raised before any training


def test_invalid_params_partial_fit(data):
    X, y, _ = data
    with pytest.raises(ValueError, match="solver"):
        cfm.FMRegressor(solver="x").partial_fit(X, y)


def test_l1_with_ftrl_ok(data):
    X, y, _ = data
    cfm.FMRegressor(n_epochs=1, solver="ftrl", l1=0.1).fit(X, y)


def test_classifier_eval_metric_for_regressor_rejected(data):
    X, y, y01 = data
    with pytest.raises(ValueError, match="eval_metric"):
        cfm.FMClassifier(n_epochs=1, eval_metric="rmse").fit(X, y01)


def test_bad_eval_set(data):
    X, y, _ = data
    with pytest.raises(ValueError, match="features"):
        cfm.FMRegressor(n_epochs=1).fit(X, y, eval_set=(X[:, :3], y))
    with pytest.raises(ValueError, match="eval_set"):
        cfm.FMRegressor(n_epochs=1).fit(X, y, eval_set=[(X, y, y)])


def _corrupt_csr(X, **kw):
    """CSR with structure mutated after construction (scipy's checks bypassed)."""
    M = sp.csr_matrix((X.data.copy(), X.indices.copy(), X.indptr.copy()), shape=X.shape)
    for name, (pos, val) in kw.items():
        getattr(M, name)[pos] = val
    return M


@pytest.mark.parametrize("col", [6, 7, 10**6, -1, -(10**6)])
def test_out_of_range_column_index(data, fitted, col):
    X, y, _ = data
    M = _corrupt_csr(X, indices=(5, col))
    with pytest.raises(ValueError, match="column index"):
        cfm.FMRegressor(n_epochs=1).fit(M, y)
    with pytest.raises(ValueError, match="column index"):
        fitted.predict(M)


def test_out_of_range_column_index_int64(data, fitted):
    X, y, _ = data
    M = _corrupt_csr(X)
    M.indices = M.indices.astype(np.int64)
    M.indptr = M.indptr.astype(np.int64)
    M.indices[-1] = 2**40
    with pytest.raises(ValueError, match="column index"):
        fitted.predict(M)


def test_unsorted_and_duplicate_indices_are_summed(data, rng):
    X, y, _ = data
    d = np.array([1.0, 2.0, 3.0])
    M = sp.csr_matrix((d, np.array([2, 0, 2]), np.array([0, 3])), shape=(1, 6))
    Mc = sp.csr_matrix(M.toarray())
    m = cfm.FMRegressor(n_epochs=1, dtype="float64", n_jobs=1).fit(X, y)
    assert m.predict(M)[0] == pytest.approx(m.predict(Mc)[0], rel=1e-12)


CRASH_SCRIPT = textwrap.dedent("""
    import numpy as np, scipy.sparse as sp, cfm
    X = sp.csr_matrix((np.ones(4), np.array([0, 1, 2, 3]), np.array([0, 2, 4])), shape=(2, 5))
    X.indptr[{pos}] = {val}
    try:
        cfm.FMRegressor(n_epochs=1, n_jobs=1).fit(X, [1.0, 2.0])
    except ValueError as e:
        print("VALUEERROR", e)
""")


@pytest.mark.parametrize("pos,val", [(1, 10**7), (1, 5), (1, -5), (0, 1), (2, 3)],
                         ids=["overshoot_far", "overshoot_1", "negative", "first", "last"])
def test_corrupt_indptr_raises_not_crashes(pos, val):
    """Run in a subprocess: a bad indptr must give ValueError, never a segfault."""
    r = subprocess.run([sys.executable, "-c", CRASH_SCRIPT.format(pos=pos, val=val)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"crashed with return code {r.returncode}: {r.stderr[-500:]}"
    assert "VALUEERROR" in r.stdout
