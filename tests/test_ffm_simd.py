"""The float32 FFM kernels have an SSE2 baseline path and an AVX2+FMA path
chosen at run time; both must agree with the reference and with each other."""
import numpy as np
import pytest
import scipy.sparse as sp

import cfm
from cfm import _ffm


@pytest.fixture
def restore_simd():
    before = _ffm.simd_path()
    yield
    _ffm.set_simd(before)


def _data(rng, n=300, d=60, n_fields=5):
    X = sp.random(n, d, density=0.15, format="csr", random_state=rng, dtype=np.float64)
    X.data = rng.uniform(0.5, 2.0, X.nnz)
    return X, (rng.random(n) < 0.4).astype(int), rng.integers(0, n_fields, d)


@pytest.mark.parametrize("k", [3, 8, 13, 16])
def test_simd_paths_agree(restore_simd, k):
    rng = np.random.default_rng(k)
    X, y, fields = _data(rng)
    out = {}
    for path in ("sse2", "avx2"):
        _ffm.set_simd(path)
        m = cfm.FFMClassifier(n_factors=k, n_epochs=3, n_jobs=1, random_state=0,
                              dtype="float32").fit(X, y, fields=fields)
        out[path] = (m.decision_function(X), m.V_.copy())
    np.testing.assert_allclose(out["avx2"][0], out["sse2"][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["avx2"][1], out["sse2"][1], rtol=1e-3, atol=1e-5)
    ref = cfm.FFMClassifier(n_factors=k, n_epochs=3, n_jobs=1, random_state=0,
                            dtype="float64").fit(X, y, fields=fields)
    np.testing.assert_allclose(out[_ffm.simd_path()][0], ref.decision_function(X),
                               rtol=1e-3, atol=1e-4)


def test_set_simd_rejects_unknown(restore_simd):
    with pytest.raises(ValueError, match="SIMD"):
        _ffm.set_simd("avx512")
    assert _ffm.set_simd("sse2") == "sse2"
