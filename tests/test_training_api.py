"""The training interfaces front ends use: fit(callback=, input_zero_based=),
_scorer(), the one training loop with every solver, run-k-more-epochs."""
import numpy as np
import pytest
import scipy.sparse as sp

import cfm
from cfm._state import FMTable
from cfm._validation import check_X


def _data(n=400, d=30):
    X = sp.random(n, d, density=0.2, random_state=0, format="csr")
    y = np.asarray(X.sum(1)).ravel()
    return X, y


@pytest.mark.parametrize("solver", ["adagrad", "sgd", "ftrl", "als", "mcmc"])
def test_callback_sees_every_history_record(solver):
    X, y = _data()
    seen = []
    m = cfm.FMRegressor(n_factors=2, n_epochs=4, solver=solver, random_state=0)
    m.fit(X, y, eval_set=(X, y), callback=lambda rec, n: seen.append((rec, n)))
    assert [r for r, _ in seen] == m.history_ and {n for _, n in seen} == {4}
    assert m.n_epochs_ == len(m.history_)


def test_callback_replaces_verbose_printing(capsys):
    X, y = _data()
    cfm.FMRegressor(n_epochs=2, verbose=1, random_state=0).fit(X, y, callback=lambda r, n: None)
    assert "epoch" not in capsys.readouterr().err
    cfm.FMRegressor(n_epochs=2, verbose=1, random_state=0).fit(X, y)
    assert "epoch   1" in capsys.readouterr().err


def test_input_zero_based_is_recorded_and_saved(tmp_path):
    X, y = _data()
    m = cfm.FMRegressor(n_epochs=1, random_state=0).fit(X, y, input_zero_based=False)
    assert m._input_zero_based is False and m._scorer().zero_based is False
    m.save(tmp_path / "m.cfm")
    assert cfm.load(tmp_path / "m.cfm")._input_zero_based is False
    with pytest.raises(ValueError, match="input_zero_based"):
        m.fit(X, y, input_zero_based="yes")


def test_scorer_is_bound_to_one_state():
    X, y = _data()
    m = cfm.FMClassifier(n_epochs=1, random_state=0).fit(X, y > np.median(y))
    s = m._scorer()
    Xc = check_X(X)
    before = s.decision(Xc, 1)
    np.testing.assert_array_equal(before, m.decision_function(X))
    assert s.logistic and s.n_features == 30 and s.encode_y is not None
    m.set_params(n_factors=3).fit(X, y > np.median(y))   # a new state
    np.testing.assert_array_equal(s.decision(Xc, 1), before)


def test_snapshot_restore_and_more_epochs_of_a_state():
    X, y = _data()
    m = cfm.FMRegressor(n_epochs=2, random_state=0, n_jobs=1).fit(X, y)
    st = m._state
    assert isinstance(st, FMTable)
    snap = st.snapshot()
    w = m.w_.copy()
    m.set_params(warm_start=True).fit(X, y)
    assert m._state is st and not np.array_equal(m.w_, w)
    st.restore(snap)
    np.testing.assert_array_equal(m.w_, w)
    with pytest.raises(AttributeError):
        st.table = None
