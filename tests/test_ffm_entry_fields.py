"""FFM with per-entry fields (libffm's / xLearn's definition, issue 16 item 1).

The kernels' per-entry path against the NumPy reference (decision and one
epoch of per-sample steps) on rows where one feature occurs under several
fields, the per-column fast path as a special case, the data paths
(load_libffm / caches / iter_blocks / predict_file / fit from a file) and bad
input.  xLearn parity: tests/test_xlearn_import.py.
"""
import numpy as np
import pytest
import scipy.sparse as sp

import cfm
from cfm import _ffm
from cfm._state.base import LOSSES, OPTIMIZERS as SOLVERS

import reference_ffm as ref

N_FEATURES, N_FIELDS = 9, 4


def collision_data(rng, n_rows=40, nnz=5):
    """CSR rows (entries unsorted) whose features occur under several fields,
    also twice in one row under two fields; per-entry field ids."""
    indptr, idx, val, fl = [0], [], [], []
    for i in range(n_rows):
        m = int(rng.integers(0, nnz + 1)) if i % 7 else nnz
        # distinct features, then one repeated under another field: a
        # (feature, field) pair twice in a row would step one vector twice per
        # pair, which the reference does not model (see reference_ffm)
        cols = list(rng.choice(N_FEATURES, m, replace=False))
        if i % 5 == 0 and m:
            cols[-1] = cols[0]  # the same feature twice in the row
        idx += cols
        val += list(rng.uniform(0.3, 1.5, m))
        fl += list(rng.integers(0, N_FIELDS, m))
        if i % 5 == 0 and m > 1:
            fl[-1] = (fl[-m] + 1) % N_FIELDS  # ... under another field
        indptr.append(len(idx))
    X = sp.csr_matrix((np.array(val), np.array(idx, dtype=np.int32), np.array(indptr)),
                      shape=(n_rows, N_FEATURES))
    return X, cfm.EntryFields(np.array(fl, dtype=np.int32))


def ref_predict(X, F, w0, w, V, normalize=False):
    """Reference scores with the field of each entry (X as stored)."""
    out = np.empty(X.shape[0])
    for i in range(X.shape[0]):
        s, e = X.indptr[i], X.indptr[i + 1]
        cols, x = ref.row_entries(X, i, normalize)
        out[i] = ref.ffm_score_fl(cols, np.asarray(F[s:e]), x, w0, w, V)
    return out


def model_with_state(rng, X, F, cls=cfm.FFMRegressor, **kw):
    y = rng.normal(size=X.shape[0]) if cls is cfm.FFMRegressor else rng.integers(0, 2, X.shape[0])
    params = dict(n_factors=3, n_epochs=1, learning_rate=1e-12, n_jobs=1, random_state=0,
                  dtype="float64", auto_tune=False)
    params.update(kw)
    m = cls(**params).fit(X, y, fields=F)
    from test_ffm import random_ref_state
    st = random_ref_state(m.n_features_in_, m.n_fields_, m._k, m._solver, rng, 0.4)
    st.to_model(m)
    return m, ref.RefFFMState.from_model(m), y


@pytest.fixture
def rng():
    return np.random.default_rng(16)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_decision_matches_reference(rng, normalize, dtype):
    X, F = collision_data(rng)
    m, st, _ = model_with_state(rng, X, F, normalize=normalize, dtype=dtype)
    assert m._state.entry  # features under several fields: scores need per-entry fields
    expect = ref_predict(X, F, st.w0_state[0], st.w, st.V, normalize)
    tol = {"float64": 1e-10, "float32": 1e-5, "float16": 1e-4}[dtype]
    for n_jobs in (1, 2):
        m.set_params(n_jobs=n_jobs)
        np.testing.assert_allclose(m.predict(X, fields=F), expect, rtol=tol, atol=tol)
    # per-column fields given to predict are expanded to the entries
    col = rng.integers(0, N_FIELDS, N_FEATURES)
    Xs = X.copy()
    Xs.sum_duplicates()
    np.testing.assert_allclose(m.predict(Xs, fields=col),
                               ref.ffm_predict(Xs, col, st.w0_state[0], st.w, st.V, normalize),
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("solver", ["sgd", "adagrad", "ftrl"])
@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_one_epoch_matches_reference(rng, solver, loss):
    """The kernel's per-sample steps with per-entry fields (n_threads=1: exact)."""
    X, F = collision_data(rng, n_rows=25)
    m, st, _ = model_with_state(rng, X, F, solver=solver)
    y = rng.choice([-1.0, 1.0], X.shape[0]) if loss == "logistic" else rng.normal(size=X.shape[0])
    order = rng.permutation(X.shape[0]).astype(np.int64)
    hp = dict(learning_rate=0.05, l2_w0=0.01, l2_w=0.02, l2_v=0.03, ftrl_beta=1.0,
              l1=0.01 if solver == "ftrl" else 0.0)
    want = ref.train_epoch_fl(X, y, F, order, st, loss=loss, normalize=True, **hp)
    got = _ffm.ffm_train_epoch(
        X.data, X.indices, X.indptr.astype(np.int64), y, np.empty(0), order, m._foff, m._lin,
        m._V, m._w0_state, k=m._k, kp=m._kp, ks=1, loss=LOSSES[loss],
        optimizer=SOLVERS[solver], fit_intercept=True, normalize=True,
        learning_rate=hp["learning_rate"], l2_w0=hp["l2_w0"], l2_w=hp["l2_w"], l2_v=hp["l2_v"],
        l1=hp["l1"], ftrl_beta=1.0, n_threads=1, max_nnz=int(np.diff(X.indptr).max()),
        entry_fields=np.asarray(F), rec_off=m._rec_off)
    np.testing.assert_allclose(got[:2], want[:2], rtol=1e-10)
    from test_ffm import assert_state_equal
    assert_state_equal(m, st, rtol=1e-9, atol=1e-11)


def test_consistent_entry_fields_are_the_per_column_fit(rng):
    """Per-entry fields that give every column one field: the same model,
    bit for bit, as the per-column fast path, and scored without fields."""
    X, y = cfm.make_fm_classification(600, 40, n_fields=4, random_state=1)
    X = sp.csr_matrix(X)
    col = np.arange(40) // 10
    kw = dict(n_jobs=1, random_state=0, n_epochs=2, auto_tune=False)
    a = cfm.FFMClassifier(**kw).fit(X, y, fields=col)
    b = cfm.FFMClassifier(**kw).fit(X, y, fields=col[X.indices])
    assert not b._state.entry
    np.testing.assert_array_equal(a.V_, b.V_)
    np.testing.assert_array_equal(a.decision_function(X), b.decision_function(X))
    np.testing.assert_array_equal(b.fields_, col)


def test_entry_model_needs_entry_fields_and_round_trips(rng, tmp_path):
    X, F = collision_data(rng)
    m, _, y = model_with_state(rng, X, F)
    with pytest.raises(ValueError, match="per-entry fields"):
        m.predict(X)
    m.save(tmp_path / "m.cfm")
    back = cfm.load(tmp_path / "m.cfm")
    assert back._state.entry
    np.testing.assert_array_equal(back.predict(X, fields=F), m.predict(X, fields=F))
    with pytest.raises(ValueError, match="per-entry fields"):
        back.predict(X)
    # warm start and partial_fit take per-entry fields too
    m.set_params(warm_start=True)
    m.fit(X, y, fields=F)
    m.partial_fit(X, y, fields=F)
    # eval_set triples
    cfm.FFMRegressor(n_epochs=2, auto_tune=False).fit(X, y, fields=F, eval_set=(X, y, F))


@pytest.mark.parametrize("bad,match", [
    (np.zeros(3, dtype=np.int32), "one entry per column"),
    (np.array([[0, 1]]), "one entry per column"),
    ("fields", "only string is 'entry'"),
])
def test_bad_entry_fields(rng, bad, match):
    X, F = collision_data(rng)
    with pytest.raises(ValueError, match=match):
        cfm.FFMRegressor(n_epochs=1).fit(X, np.zeros(X.shape[0]), fields=bad)


def test_bad_entry_field_values(rng):
    X, F = collision_data(rng)
    y = np.zeros(X.shape[0])
    neg = np.array(F)
    neg[3] = -1
    with pytest.raises(ValueError, match=r"fields\[3\] = -1: field ids must be >= 0"):
        cfm.FFMRegressor(n_epochs=1).fit(X, y, fields=cfm.EntryFields(neg))
    big = np.array(F, dtype=np.int64)
    big[2] = 2**31
    with pytest.raises(ValueError, match="2\\*\\*31"):
        cfm.FFMRegressor(n_epochs=1).fit(X, y, fields=big)
    with pytest.raises(ValueError, match="integers"):
        cfm.FFMRegressor(n_epochs=1).fit(X, y, fields=np.asarray(F) + 0.5)
    m = cfm.FFMRegressor(n_epochs=1).fit(X, y, fields=F)
    over = np.array(F)
    over[0] = m.n_fields_
    with pytest.raises(ValueError, match=f"the model has {m.n_fields_} fields"):
        m.predict(X, fields=cfm.EntryFields(over))
    with pytest.raises(ValueError, match="CSR"):
        m.predict(X.tocoo(), fields=F)
    # the kernel refuses what the boundary would have: no out-of-bounds read
    with pytest.raises(ValueError, match="outside"):
        _ffm.ffm_predict(X.data, X.indices, X.indptr.astype(np.int64), m._foff, m._lin,
                         m._kernel_V, w0=0.0, kp=m._kp, ks=1, normalize=False,
                         out=np.empty(X.shape[0]), n_threads=1, max_nnz=10,
                         entry_fields=over.astype(np.int32), rec_off=m._rec_off)
    with pytest.raises(ValueError, match="one field per stored entry"):
        _ffm.ffm_predict(X.data, X.indices, X.indptr.astype(np.int64), m._foff, m._lin,
                         m._kernel_V, w0=0.0, kp=m._kp, ks=1, normalize=False,
                         out=np.empty(X.shape[0]), n_threads=1, max_nnz=10,
                         entry_fields=over[:-1].astype(np.int32), rec_off=m._rec_off)


def write_libffm(path, X, y, F):
    with open(path, "w") as f:
        for i in range(X.shape[0]):
            s, e = X.indptr[i], X.indptr[i + 1]
            toks = [f"{F[p]}:{X.indices[p]}:{X.data[p]:.6g}" for p in range(s, e)]
            f.write(" ".join([f"{y[i]:g}"] + toks) + "\n")


def test_files_caches_blocks_and_predict_file(rng, tmp_path):
    X, F = collision_data(rng, n_rows=60)
    y = rng.integers(0, 2, X.shape[0]).astype(float)
    path = tmp_path / "d.ffm"
    write_libffm(path, X, y, F)
    Xl, yl, Fl = cfm.load_libffm(path, entry_fields=True, n_features=N_FEATURES)
    assert isinstance(Fl, cfm.EntryFields)
    np.testing.assert_array_equal(Fl, F)
    np.testing.assert_array_equal(Xl.indices, X.indices)
    np.testing.assert_allclose(Xl.data, X.data, rtol=1e-5)
    cache = cfm.convert_to_cache(path, tmp_path / "d.cfmdata", entry_fields=True)
    Xc, _, Fc = cfm.load_cache(cache, entry_fields=True)
    np.testing.assert_array_equal(Fc, F)
    np.testing.assert_array_equal(Xc.indices, X.indices)
    for src in (path, cache):
        blocks = list(cfm.iter_blocks(src, block_rows=7, entry_fields=True))
        np.testing.assert_array_equal(np.concatenate([b[2] for b in blocks]), F)
    plain = cfm.convert_to_cache(path, tmp_path / "p.cfmdata")
    with pytest.raises(ValueError, match="no per-entry fields"):
        cfm.load_cache(plain, entry_fields=True)

    # fit from the file with the field of each entry, as from the arrays
    kw = dict(n_jobs=1, random_state=0, n_epochs=2, auto_tune=False, dtype="float64",
              shuffle=False)
    a = cfm.FFMClassifier(**kw).fit(Xl, yl, fields=Fl)
    for src in (path, cache):
        b = cfm.FFMClassifier(**kw).fit(src, fields="entry", block_rows=1000)
        a2 = a
        assert b._state.entry
        np.testing.assert_allclose(b.decision_function(Xl, fields=Fl),
                                   a2.decision_function(Xl, fields=Fl), rtol=1e-12)
        out = tmp_path / "o.txt"
        b.predict_file(src, out, raw=True, precision=17)
        np.testing.assert_allclose(np.loadtxt(out), b.decision_function(Xl, fields=Fl),
                                   rtol=1e-12, atol=1e-12)
    # a per-entry model cannot score libsvm data or a cache without entry fields
    svm = tmp_path / "d.svm"
    cfm.dump_libsvm(Xl, yl, svm, zero_based=True)
    with pytest.raises(ValueError, match="libffm"):
        a.predict_file(svm, tmp_path / "o2.txt")
    with pytest.raises(ValueError, match="entry_fields=True"):
        a.predict_file(plain, tmp_path / "o2.txt")
    with pytest.raises(ValueError, match="libffm"):
        cfm.FFMClassifier(n_epochs=1).fit(svm, fields="entry")


def test_cli_train_and_predict_with_entry_fields(rng, tmp_path):
    from cfm import cli

    X, F = collision_data(rng, n_rows=80)
    y = rng.integers(0, 2, X.shape[0]).astype(float)
    path = tmp_path / "d.ffm"
    write_libffm(path, X, y, F)
    model, out = tmp_path / "m.cfm", tmp_path / "p.txt"
    assert cli.main(["train", str(path), "-o", str(model), "--model", "ffm", "--entry-fields",
                     "-e", "2", "--validate", str(path), "-q", "--seed", "1"]) == 0
    assert cli.main(["predict", str(model), str(path), "-o", str(out), "-q"]) == 0
    m = cfm.load(model)
    Xl, _, Fl = cfm.load_libffm(path, entry_fields=True, n_features=m.n_features_in_)
    np.testing.assert_allclose(np.loadtxt(out), m.predict_proba(Xl, fields=Fl)[:, 1],
                               rtol=1e-6, atol=1e-8)
    assert cli.main(["train", str(path), "-o", str(model), "--model", "fm",
                     "--entry-fields", "-q"]) != 0


def test_infer_fields():
    # one-hot blocks (pandas.get_dummies order): one field each; a dense column its own
    X = np.array([[1, 0, 0, 1, 0, 0.5],
                  [0, 1, 0, 0, 1, 1.5],
                  [0, 0, 1, 1, 0, 2.0]])
    np.testing.assert_array_equal(cfm.infer_fields(X), [0, 0, 0, 1, 1, 2])
    np.testing.assert_array_equal(cfm.infer_fields(np.ones((3, 4))), [0, 1, 2, 3])
    np.testing.assert_array_equal(cfm.infer_fields(np.ones((2, 8)), max_fields=3),
                                  [0, 0, 0, 1, 1, 1, 2, 2])
    assert cfm.infer_fields(sp.csr_matrix((3, 0))).shape == (0,)
    with pytest.raises(ValueError, match="max_fields"):
        cfm.infer_fields(X, max_fields=0)


def test_torch_refuses_a_per_entry_model(rng):
    pytest.importorskip("torch")
    X, F = collision_data(rng)
    m, _, _ = model_with_state(rng, X, F, dtype="float32")
    with pytest.raises(TypeError, match="per-entry fields"):
        m.to_torch()


def test_entry_fields_race_and_eval_file(rng, tmp_path):
    """The in-memory race holds out rows with their entries' fields; an
    eval_set file of a fields='entry' fit is read per entry."""
    X, F = collision_data(rng, n_rows=3000)
    s = np.asarray(X.sum(axis=1)).ravel() + rng.normal(0, 0.5, X.shape[0])
    y = (s > np.median(s)).astype(int)
    m = cfm.FFMClassifier(n_jobs=1, random_state=0, n_epochs=3).fit(X, y, fields=F)
    assert m.best_params_["auto"].startswith("race"), m.best_params_
    path = tmp_path / "d.ffm"
    write_libffm(path, X[:500], y[:500], F[:X.indptr[500]])
    m = cfm.FFMClassifier(n_jobs=1, random_state=0, n_epochs=2).fit(
        path, fields="entry", eval_set=path)
    assert len(m.history_) == 2 and "eval_logloss" in m.history_[-1]
