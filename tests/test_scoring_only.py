"""cfm.load(path, scoring_only=True) (what `cfm predict` uses) and the lean
command-line start-up (no SciPy import when scoring text files)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import cfm
from test_ffm import ffm_data


@pytest.fixture(params=["float16", "float32", "float64"])
def saved_ffm(request, rng, tmp_path):
    X, fields = ffm_data(rng, n=60, n_features=25, n_fields=5)
    y = (rng.random(X.shape[0]) < 0.4).astype(int)
    m = cfm.FFMClassifier(n_factors=5, n_epochs=3, n_jobs=1, random_state=0,
                          dtype=request.param).fit(X, y, fields=fields)
    path = tmp_path / "m.cfm"
    m.save(path)
    return m, path, X, y, fields


def test_scoring_only_predicts_identically(saved_ffm):
    m, path, X, _, _ = saved_ffm
    full = cfm.load(path)
    lean = cfm.load(path, scoring_only=True)
    np.testing.assert_array_equal(lean.predict_proba(X), m.predict_proba(X))
    np.testing.assert_array_equal(lean.predict_proba(X), full.predict_proba(X))
    np.testing.assert_array_equal(lean.V_, m.V_)
    assert lean._ks == lean._kp < full._ks  # the AdaGrad slots are left out


def test_scoring_only_model_refuses_training_and_saving(saved_ffm, tmp_path):
    _, path, X, y, fields = saved_ffm
    lean = cfm.load(path, scoring_only=True)
    with pytest.raises(ValueError, match="scoring_only"):
        lean.partial_fit(X, y)
    with pytest.raises(ValueError, match="scoring_only"):
        lean.set_params(warm_start=True).fit(X, y, fields=fields)
    with pytest.raises(ValueError, match="scoring_only"):
        lean.save(tmp_path / "again.cfm")
    # a fresh fit makes it an ordinary model again
    lean.set_params(warm_start=False).fit(X, y, fields=fields)
    lean.save(tmp_path / "again.cfm")
    assert cfm.load(tmp_path / "again.cfm").n_fields_ == lean.n_fields_


def test_scoring_only_fm_loads_normally(rng, tmp_path):
    X, _ = ffm_data(rng)
    y = rng.normal(size=X.shape[0])
    m = cfm.FMRegressor(n_factors=4, n_epochs=2, random_state=0).fit(X, y)
    m.save(tmp_path / "fm.cfm")
    np.testing.assert_array_equal(cfm.load(tmp_path / "fm.cfm", scoring_only=True).predict(X),
                                  m.predict(X))


def test_command_line_path_does_not_import_scipy():
    code = ("import sys, cfm.cli, cfm.scoring; "
            "print('scipy.sparse' in sys.modules, 'sklearn' in sys.modules)")
    env = dict(os.environ, CFM_SKLEARN="0")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    assert out == ["False", "False"]


def test_lazy_sparse_proxy():
    from cfm._lazy import sparse
    import scipy.sparse as sp

    assert sparse.csr_matrix is sp.csr_matrix
    assert sparse.issparse(sp.eye(3, format="csr")) and not sparse.issparse(np.eye(3))


@pytest.mark.parametrize("solver", ["sgd", "adagrad", "ftrl"])
def test_scoring_only_fm_drops_optimizer_state(rng, tmp_path, solver):
    X, _ = ffm_data(rng)
    y = (rng.random(X.shape[0]) < 0.5).astype(int)
    m = cfm.FMClassifier(n_factors=8, n_epochs=2, random_state=0, solver=solver).fit(X, y)
    m.save(tmp_path / "fm.cfm")
    lean = cfm.load(tmp_path / "fm.cfm", scoring_only=True)
    np.testing.assert_array_equal(lean.predict_proba(X), m.predict_proba(X))
    np.testing.assert_array_equal(lean.w_, m.w_)
    np.testing.assert_array_equal(lean.V_, m.V_)
    assert lean._table.shape[1] <= m._table.shape[1]
    with pytest.raises(ValueError, match="scoring_only"):
        lean.partial_fit(X, y)
    with pytest.raises(ValueError, match="scoring_only"):
        lean.save(tmp_path / "again.cfm")


def test_scoring_only_mcmc_model_keeps_its_samples(rng, tmp_path):
    X, _ = ffm_data(rng)
    y = rng.normal(size=X.shape[0])
    m = cfm.FMRegressor(n_factors=3, solver="mcmc", n_epochs=20, random_state=0).fit(X, y)
    m.save(tmp_path / "mc.cfm")
    np.testing.assert_array_equal(cfm.load(tmp_path / "mc.cfm", scoring_only=True).predict(X),
                                  m.predict(X))
