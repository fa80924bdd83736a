"""Kernel predictions equal the reference double sum, for every input format."""
import numpy as np
import pytest
import scipy.sparse as sp

import cfm
from cfm import _fm
import reference as ref
from conftest import make_table, random_params, random_sparse, set_params

TOL = {np.float64: 1e-10, np.float32: 1e-4}


def kernel_predict(X, w0, table, k, normalize, n_threads=1):
    X = sp.csr_matrix(X)
    out = np.empty(X.shape[0])
    _fm.fm_predict(X.data, X.indices, X.indptr.astype(np.int64), table, w0, k, normalize,
                   out, n_threads)
    return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("k", [0, 1, 5])
def test_fm_predict_kernel_equals_double_sum(rng, dtype, normalize, k):
    X = random_sparse(40, 30, 4, rng, empty_rows=(0, 7, 39))
    w0, w, V = random_params(30, k, rng, dtype=dtype)
    table = make_table(w, V, dtype, extra=3)
    got = kernel_predict(X, w0, table, k, normalize)
    want = ref.fm_predict(X, w0, w, V, normalize)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype])
    assert got[0] == w0 and got[7] == w0  # empty rows score the bias


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fm_predict_kernel_dense_rows(rng, dtype):
    X = rng.normal(size=(15, 9))
    w0, w, V = random_params(9, 4, rng, dtype=dtype)
    table = make_table(w, V, dtype)
    for normalize in (False, True):
        np.testing.assert_allclose(kernel_predict(X, w0, table, 4, normalize),
                                   ref.fm_predict(X, w0, w, V, normalize),
                                   rtol=TOL[dtype], atol=TOL[dtype])


def _model(dtype, n_factors, normalize, X, y):
    m = cfm.FMRegressor(n_factors=n_factors, n_epochs=1, dtype=dtype, normalize=normalize,
                        random_state=0, n_jobs=1)
    return m.fit(X, y)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("k", [0, 3])
def test_estimator_predict_equals_double_sum(rng, dtype, normalize, k):
    X = random_sparse(50, 20, 3, rng, empty_rows=(5,))
    y = rng.normal(size=50)
    m = _model(dtype, k, normalize, X, y)
    w0, w, V = random_params(20, k, rng, dtype=np.dtype(dtype).type)
    set_params(m, w0, w, V)
    assert m.w0_ == w0
    np.testing.assert_array_equal(m.w_, w)
    np.testing.assert_array_equal(m.V_, V)
    tol = TOL[np.dtype(dtype).type]
    np.testing.assert_allclose(m.predict(X), ref.fm_predict(X, w0, w, V, normalize),
                               rtol=tol, atol=tol)


def _formats(X):
    Xd = X.toarray()
    out = {
        "csr64": X.astype(np.float64).tocsr(),
        "csr32": X.astype(np.float32).tocsr(),
        "csc": X.tocsc(),
        "coo": X.tocoo(),
        "dense": Xd,
        "dense32": Xd.astype(np.float32),
        "dense_fortran": np.asfortranarray(Xd),
        "list": Xd.tolist(),
        "csr_array": sp.csr_array(X),
    }
    Xi = X.astype(np.float64).tocsr()
    Xi.indices = Xi.indices.astype(np.int64)  # scipy's constructor would downcast
    Xi.indptr = Xi.indptr.astype(np.int64)
    assert Xi.indices.dtype == np.int64
    out["csr_int64_idx"] = Xi
    return out


@pytest.mark.parametrize("fmt", ["csr64", "csr32", "csc", "coo", "dense", "dense32",
                                 "dense_fortran", "list", "csr_array", "csr_int64_idx"])
@pytest.mark.parametrize("normalize", [False, True])
def test_input_formats(rng, fmt, normalize):
    X = random_sparse(30, 12, 4, rng, empty_rows=(2,))
    # values exactly representable in float32 so every format sees the same numbers
    X.data = np.round(X.data * 8) / 8
    y = rng.normal(size=30)
    m = _model("float64", 3, normalize, X, y)
    w0, w, V = random_params(12, 3, rng)
    set_params(m, w0, w, V)
    want = ref.fm_predict(X, w0, w, V, normalize)
    Xf = _formats(X)[fmt]
    np.testing.assert_allclose(m.predict(Xf), want, rtol=1e-10, atol=1e-10)
    # fitting on that format works too
    m2 = _model("float64", 3, normalize, Xf, y)
    assert np.isfinite(m2.predict(X)).all()


def test_pandas_dataframe(rng):
    pd = pytest.importorskip("pandas")
    X = rng.normal(size=(25, 5))
    y = rng.normal(size=25)
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)])
    m = _model("float64", 2, False, df, y)
    w0, w, V = random_params(5, 2, rng)
    set_params(m, w0, w, V)
    want = ref.fm_predict(X, w0, w, V)
    np.testing.assert_allclose(m.predict(df), want, rtol=1e-10)
    assert list(m.feature_names_in_) == list(df.columns)
    # DataFrame of sparse columns
    sdf = pd.DataFrame.sparse.from_spmatrix(sp.csr_matrix(X), columns=df.columns)
    np.testing.assert_allclose(m.predict(sdf), want, rtol=1e-10)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_predictions_independent_of_n_jobs(rng, dtype):
    X = random_sparse(3000, 200, 5, rng)
    y = rng.normal(size=3000)
    m = _model(dtype, 4, True, X, y)
    p1 = m.set_params(n_jobs=1).predict(X)
    p2 = m.set_params(n_jobs=2).predict(X)
    pn = m.set_params(n_jobs=None).predict(X)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(p1, pn)
    # and a direct kernel call with more threads than rows
    table = m._table
    out = kernel_predict(X[:3], m.w0_, table, 4, True, n_threads=8)
    np.testing.assert_array_equal(out, p1[:3])


def test_n_factors_zero_is_linear(rng):
    X = random_sparse(20, 10, 3, rng)
    m = _model("float64", 0, False, X, rng.normal(size=20))
    assert m.V_.shape == (10, 0)
    np.testing.assert_allclose(m.predict(X), m.w0_ + X @ m.w_, rtol=1e-12)


def test_predict_does_not_modify_input(rng):
    X = random_sparse(20, 10, 3, rng)
    X0 = X.copy()
    m = _model("float32", 2, True, X, rng.normal(size=20))
    m.predict(X)
    assert (X != X0).nnz == 0
