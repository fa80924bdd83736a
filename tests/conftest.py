"""Shared fixtures and helpers of cfm's test suite (keep data small: fast suite)."""
import os
import sys
import threading

import numpy as np
import pytest
import scipy.sparse as sp

sys.path.insert(0, os.path.dirname(__file__))  # make tests/reference.py importable

import cfm  # noqa: E402
from cfm._state.base import aligned_table as _aligned_table  # noqa: E402


def errors_in_threads(work, args=((),)):
    """Run ``work(*a)`` for every ``a`` in ``args``, each in its own thread,
    all at once; return the exceptions they raised (empty: none failed)."""
    errors = []

    def run(*a):
        try:
            work(*a)
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=a) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def random_sparse(n_rows, n_features, nnz_per_row, rng, dtype=np.float64, empty_rows=()):
    """CSR with ``nnz_per_row`` distinct random columns per row, values in ±[0.5, 2]."""
    rows, cols, vals = [], [], []
    for i in range(n_rows):
        if i in empty_rows:
            continue
        c = rng.choice(n_features, size=nnz_per_row, replace=False)
        rows += [i] * nnz_per_row
        cols += list(c)
        vals += list(rng.uniform(0.5, 2.0, nnz_per_row) * rng.choice([-1, 1], nnz_per_row))
    X = sp.csr_matrix((np.array(vals, dtype=dtype), (rows, cols)), shape=(n_rows, n_features))
    X.sort_indices()
    return X


def random_params(n_features, k, rng, dtype=np.float64, scale=0.5):
    w0 = float(rng.normal())
    w = rng.normal(0, scale, n_features).astype(dtype)
    V = rng.normal(0, scale, (n_features, k)).astype(dtype)
    return w0, w, V


def make_table(w, V, dtype, extra=0):
    """Kernel parameter table holding w and V (and ``extra`` zeroed state columns)."""
    n, k = V.shape
    t = _aligned_table(n, 1 + k + extra, dtype)
    t[:, 0] = w
    t[:, 1:1 + k] = V
    return t


def new_table(n_features, k, solver, dtype):
    """Zeroed kernel table for (k, solver)."""
    from cfm._state.fm import new_table

    return new_table(n_features, k, solver, dtype)


def train_epoch_kernel(X, y, sw, order, table, w0_state, k, loss, solver, fit_intercept,
                       normalize, hp, n_threads=1):
    """Call cfm._fm.fm_train_epoch directly."""
    import cfm._state.base as base
    from cfm import _fm

    X = sp.csr_matrix(X)
    return _fm.fm_train_epoch(
        X.data, X.indices, X.indptr.astype(np.int64), np.asarray(y, dtype=np.float64),
        np.empty(0) if sw is None else np.asarray(sw, dtype=np.float64),
        np.asarray(order, dtype=np.int64), table, w0_state, n_factors=k,
        loss=base.LOSSES[loss], optimizer=base.OPTIMIZERS[solver], fit_intercept=fit_intercept,
        normalize=normalize, learning_rate=hp["learning_rate"], l2_w0=hp["l2_w0"],
        l2_w=hp["l2_w"], l2_v=hp["l2_v"], l1=hp["l1"], ftrl_beta=hp["ftrl_beta"],
        n_threads=n_threads)


def set_params(model, w0, w, V):
    """Overwrite a fitted model's parameters in place."""
    k = model._k
    assert V.shape[1] == k
    model._table[:, 0] = w
    model._table[:, 1:1 + k] = V
    model._w0_state[0] = w0
    return model


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def sparse_data(rng):
    X = random_sparse(60, 25, 4, rng, empty_rows=(3, 17))
    y = rng.normal(size=60)
    return X, y


@pytest.fixture(scope="session")
def reg_data():
    X, y = cfm.make_fm_regression(n_samples=1500, n_features=120, n_fields=6, n_factors=4,
                                  noise=0.1, random_state=0)
    return X, y


@pytest.fixture(scope="session")
def clf_data():
    X, y = cfm.make_fm_classification(n_samples=2000, n_features=60, n_fields=5, n_factors=4,
                                      sharpness=4.0, random_state=0)
    return X, y
