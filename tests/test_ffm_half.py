"""FFM with a float16 factor table (dtype="float16"): conversions, kernels vs
the NumPy reference, stochastic rounding, estimator contracts, model files."""
import numpy as np
import pytest
import scipy.sparse as sp

import cfm
from cfm import _ffm
import reference_ffm as ref
from test_ffm import HP, SOLVER_LR, ffm_data, fitted_model, targets, with_random_state
from cfm._state.base import LOSSES, OPTIMIZERS as SOLVERS


@pytest.fixture(params=["avx2", "sse2"])
def simd_path(request):
    """Run a test on the AVX2+F16C kernels (when the CPU has them) and the portable ones."""
    before = _ffm.simd_path()
    got = _ffm.set_simd(request.param)
    if got != request.param:
        pytest.skip("CPU without AVX2")
    yield got
    _ffm.set_simd(before)


# -------------------------------------------------------------- conversions
def test_half_to_float_matches_numpy_for_every_bit_pattern():
    h = np.arange(2**16, dtype=np.uint16)
    got = _ffm.half_to_float(h)
    want = h.view(np.float16).astype(np.float32)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    assert same.all()


def test_nearest_rounding_matches_numpy(rng):
    x = np.concatenate([rng.normal(0, 1, 20000), rng.normal(0, 1e-5, 2000),
                        rng.normal(0, 1e3, 2000), [0.0, -0.0, 65504.0, 6e-8, 3e-8, 1e-9,
                                                   np.inf, -np.inf]]).astype(np.float32)
    got = _ffm.float_to_half(x)
    np.testing.assert_array_equal(got, x.astype(np.float16).view(np.uint16))
    assert np.isnan(_ffm.half_to_float(_ffm.float_to_half(np.array([np.nan], np.float32))))


def test_overflow_saturates_to_the_largest_half():
    got = _ffm.half_to_float(_ffm.float_to_half(np.array([1e6, -1e6], np.float32)))
    np.testing.assert_array_equal(got, [65504.0, -65504.0])


def test_stochastic_rounding_is_unbiased_and_picks_a_neighbour():
    x = np.float32(0.05 + 3e-6)  # between two float16 values, closer to the lower
    lo = np.float32(np.float16(0.05))
    got = _ffm.half_to_float(_ffm.float_to_half(np.full(100_000, x), "stochastic", seed=7))
    assert set(np.unique(got)) <= {lo, np.float32(np.nextafter(np.float16(lo), np.float16(1)))}
    assert got.mean() == pytest.approx(float(x), abs=2e-7)
    assert got.mean() != pytest.approx(float(lo), abs=2e-7)  # round-to-nearest would give lo


# ------------------------------------------------------------------ kernels
def half_model(cls, X, y, fields, **kw):
    return fitted_model(cls, X, y, fields, dtype="float16", **kw)


@pytest.mark.parametrize("k", [1, 3, 8, 13])
@pytest.mark.parametrize("normalize", [False, True])
def test_predict_matches_reference(rng, simd_path, k, normalize):
    X, fields = ffm_data(rng)
    m = half_model(cfm.FFMRegressor, X, rng.normal(size=X.shape[0]), fields, n_factors=k,
                   normalize=normalize)
    st = with_random_state(m, rng, scale=0.5)  # rounded to float16 by the table
    assert m.V_.dtype == np.float16 and m.V_.shape == (X.shape[1], m.n_fields_, k)
    np.testing.assert_array_equal(m.V_, st.V)
    expected = ref.ffm_predict(X, fields, st.w0_state[0], st.w, st.V, normalize)
    for Xin in (X, X.astype(np.float32)):
        np.testing.assert_allclose(m.predict(Xin), expected, rtol=1e-5, atol=1e-5)


def kernel_epoch_half(m, X, y, sw, order, *, loss, fit_intercept, normalize, lr, seed=1,
                      l1=0.0, **hp):
    X = sp.csr_matrix(X)
    return _ffm.ffm_train_epoch(
        X.data, X.indices, X.indptr.astype(np.int64), np.asarray(y, dtype=np.float64),
        np.empty(0) if sw is None else np.asarray(sw, dtype=np.float64),
        np.asarray(order, dtype=np.int64), m._foff, m._lin, m._kernel_V, m._w0_state,
        k=m._k, kp=m._kp, ks=1, loss=LOSSES[loss], optimizer=SOLVERS[m._solver],
        fit_intercept=fit_intercept, normalize=normalize, learning_rate=lr,
        l2_w0=hp["l2_w0"], l2_w=hp["l2_w"], l2_v=hp["l2_v"], l1=l1, ftrl_beta=hp["ftrl_beta"],
        n_threads=1, max_nnz=int(np.diff(X.indptr).max()), seed=seed)


@pytest.mark.parametrize("solver", ["sgd", "adagrad", "ftrl"])
@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_kernel_epoch_close_to_reference(rng, simd_path, solver, loss):
    X, fields = ffm_data(rng, n=30, n_features=14, n_fields=3, nnz=4, empty_rows=(4,))
    n = X.shape[0]
    y = targets(rng, loss, n)
    sw = rng.uniform(0.5, 1.5, n)
    m = half_model(cfm.FFMRegressor, X, rng.normal(size=n), fields, n_factors=5,
                   solver=solver)
    st = with_random_state(m, rng)
    st0 = st.copy()
    order = rng.permutation(n)
    l1 = 0.05 if solver == "ftrl" else 0.0
    lk, wk, bad = kernel_epoch_half(m, X, y, sw, order, loss=loss, fit_intercept=True,
                                    normalize=loss == "logistic", lr=SOLVER_LR[solver],
                                    l1=l1, **HP)
    lr_, wr_, _ = ref.train_epoch(X, y, fields, order, st, loss=loss,
                                  normalize=loss == "logistic", learning_rate=SOLVER_LR[solver],
                                  l1=l1, sample_weight=sw, **HP)
    got = ref.RefFFMState.from_model(m)
    # float16 keeps ~3 significant digits: every stored update is off by <= 1 ulp
    np.testing.assert_allclose(got.V, st.V, rtol=0, atol=2e-3)
    np.testing.assert_allclose(got.w, st.w, rtol=0, atol=1e-3)  # gradients see rounded V
    if st.GV is not None:
        np.testing.assert_allclose(got.GV, st.GV, rtol=5e-3)
    assert lk == pytest.approx(lr_, rel=1e-3)
    assert wk == pytest.approx(wr_, rel=1e-6)
    assert bad == 0
    assert np.abs(st.V - st0.V).max() > 1e-2  # not vacuous
    # padding coordinates stay exactly 0
    kp, ks, _ = ref.layout(np.float16, m._k, solver)
    np.testing.assert_array_equal(m._rec_off, ref.record_offsets(np.float16, m._k, solver,
                                                                 m.n_fields_))
    V = np.stack([m._V[:, o:o + ks] for o in m._rec_off], axis=1)
    assert np.all(V[:, :, m._k:kp] == 0)


def test_updates_below_half_an_ulp_are_not_lost(rng, simd_path):
    """With round-to-nearest, SGD steps smaller than half a float16 ulp would
    vanish; stochastic rounding keeps their sum on average."""
    X, fields = ffm_data(rng, n=40, n_features=12, n_fields=3, nnz=4, empty_rows=())
    n = X.shape[0]
    y = targets(rng, "squared", n) + 5.0  # large residuals, same sign: steady drift
    m = half_model(cfm.FFMRegressor, X, y, fields, n_factors=8, solver="sgd")
    st = with_random_state(m, rng, scale=0.5)
    st0 = st.copy()
    order = np.tile(np.arange(n), 200)
    hp = dict(HP, l2_v=0.0)
    lr = 2e-6  # each step ~1e-6..1e-5: far below the float16 ulp (~2.4e-4 near 0.5)
    kernel_epoch_half(m, X, y, None, order, loss="squared", fit_intercept=False,
                      normalize=False, lr=lr, **hp)
    ref.train_epoch(X, y, fields, order, st, loss="squared", fit_intercept=False,
                    learning_rate=lr, **hp)
    want = (st.V - st0.V).ravel()
    got = (ref.RefFFMState.from_model(m).V - st0.V).ravel()
    big = np.abs(want) > 1e-3  # several float16 ulps of drift in total
    assert big.sum() > 50
    # the net drift is kept (round-to-nearest would leave most of these at 0)
    assert np.corrcoef(got[big], want[big])[0, 1] > 0.95
    assert np.sum(got[big] * want[big]) / np.sum(want[big] ** 2) == pytest.approx(1.0, abs=0.1)


# ---------------------------------------------------------------- estimators
@pytest.fixture(scope="module")
def ctr_problem():
    rng = np.random.default_rng(3)
    n, n_fields, per_field = 3000, 6, 20
    cols = rng.integers(0, per_field, (n, n_fields)) + per_field * np.arange(n_fields)
    X = sp.csr_matrix((np.ones(n * n_fields), cols.ravel(), np.arange(0, n * n_fields + 1,
                                                                       n_fields)),
                      shape=(n, n_fields * per_field))
    fields = np.repeat(np.arange(n_fields), per_field)
    logit = rng.normal(0, 1, X.shape[1])
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ logit)))).astype(int)
    return X, y, fields


def test_float16_fit_is_close_to_float32(ctr_problem):
    X, y, fields = ctr_problem
    kw = dict(n_factors=4, n_epochs=5, n_jobs=1, random_state=0)
    a = cfm.FFMClassifier(dtype="float32", **kw).fit(X, y, fields=fields)
    b = cfm.FFMClassifier(dtype="float16", **kw).fit(X, y, fields=fields)
    pa, pb = a.predict_proba(X)[:, 1], b.predict_proba(X)[:, 1]
    assert np.abs(pa - pb).max() < 0.02
    assert b.history_[-1]["train_loss"] == pytest.approx(a.history_[-1]["train_loss"], rel=2e-3)
    assert b._lin.dtype == np.float32 and b._V.dtype == np.float16


def test_float16_reproducible_with_one_thread(ctr_problem):
    X, y, fields = ctr_problem
    kw = dict(n_factors=4, n_epochs=2, n_jobs=1, random_state=5, dtype="float16")
    a = cfm.FFMClassifier(**kw).fit(X, y, fields=fields)
    b = cfm.FFMClassifier(**kw).fit(X, y, fields=fields)
    np.testing.assert_array_equal(a._V.view(np.uint16), b._V.view(np.uint16))
    np.testing.assert_array_equal(a.decision_function(X), b.decision_function(X))


def test_float16_two_threads_smoke(ctr_problem):
    X, y, fields = ctr_problem
    X = sp.vstack([X] * 8).tocsr()
    y = np.tile(y, 8)
    m = cfm.FFMClassifier(n_factors=8, n_epochs=2, n_jobs=2, random_state=0,
                          dtype="float16").fit(X, y, fields=fields)
    assert np.isfinite(m.decision_function(X)).all()
    np.testing.assert_array_equal(m.set_params(n_jobs=1).decision_function(X),
                                  m.set_params(n_jobs=2).decision_function(X))


@pytest.mark.parametrize("solver", ["sgd", "adagrad", "ftrl"])
def test_float16_save_load_and_warm_start(ctr_problem, tmp_path, solver):
    X, y, fields = ctr_problem
    kw = dict(n_factors=3, n_epochs=2, n_jobs=1, random_state=0, dtype="float16",
              solver=solver)
    m = cfm.FFMRegressor(**kw).fit(X, y.astype(float), fields=fields)
    m.save(tmp_path / "m.cfm")
    m2 = cfm.load(tmp_path / "m.cfm")
    assert m2.get_params()["dtype"] == "float16" and m2._V.dtype == np.float16
    np.testing.assert_array_equal(m2.predict(X), m.predict(X))
    # warm start after loading continues exactly as in memory
    m.set_params(warm_start=True, n_epochs=1).fit(X, y.astype(float))
    m2.set_params(warm_start=True, n_epochs=1).fit(X, y.astype(float))
    np.testing.assert_array_equal(m2.predict(X), m.predict(X))


def test_float16_divergence_is_detected(ctr_problem):
    X, y, fields = ctr_problem
    m = cfm.FFMRegressor(n_factors=4, n_epochs=3, solver="sgd", learning_rate=50.0,
                         init_std=1.0, normalize=False, n_jobs=1, random_state=0,
                         dtype="float16")
    with pytest.raises(cfm.DivergenceError):
        m.fit(X, 1e3 * (y - 0.5), fields=fields)


def test_fm_estimators_refuse_float16(ctr_problem):
    X, y, _ = ctr_problem
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        cfm.FMClassifier(dtype="float16").fit(X, y)


def test_default_dtype(ctr_problem):
    X, y, fields = ctr_problem
    m = cfm.FFMClassifier(n_factors=2, n_epochs=1, n_jobs=1, random_state=0)
    assert m.get_params()["dtype"] is None
    m.fit(X, y, fields=fields)
    want = np.float16 if _ffm.half_simd_available() else np.float32
    assert m._V.dtype == want
    assert cfm.FMClassifier(n_factors=2, n_epochs=1).fit(X, y)._table.dtype == np.float32
    # a warm start with dtype=None keeps the fitted table's precision
    m32 = cfm.FFMClassifier(n_factors=2, n_epochs=1, n_jobs=1, random_state=0,
                            dtype="float32").fit(X, y, fields=fields)
    m32.set_params(dtype=None, warm_start=True).fit(X, y)
    assert m32._V.dtype == np.float32


# --------------------------------------------------------------------------- table init

def _fmix32(h):
    h = np.asarray(h, dtype=np.uint64) & 0xFFFFFFFF
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & np.uint64(0xFFFFFFFF)
    return h ^ (h >> np.uint64(16))


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 100, 1003])
@pytest.mark.parametrize("key", [0, 1, 2**63 + 12345, 0xDEADBEEFCAFEBABE])
def test_init_draws_simd_and_portable_paths_agree_with_numpy(n, key):
    """cfm_rand.h: draw c = ((fmix32(fmix32(c*phi ^ k1) ^ k2) >> 8) - 2^23) * scale,
    bit for bit on the AVX2 and the C path."""
    c0, hw = 5, 0.3
    a = _ffm.init_draws(key, n, c0, hw, True)
    b = _ffm.init_draws(key, n, c0, hw, False)
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    c = (np.arange(n, dtype=np.uint64) + np.uint64(c0))
    k1, k2 = np.uint64(key & 0xFFFFFFFF), np.uint64(key >> 32)
    h = _fmix32(_fmix32(((c * np.uint64(0x9E3779B9)) & np.uint64(0xFFFFFFFF)) ^ k1) ^ k2)
    expect = ((h >> np.uint64(8)).astype(np.float32) - np.float32(8388608.0)) * np.float32(
        hw / 8388608.0)
    np.testing.assert_array_equal(a, expect.astype(np.float32))


def test_init_draws_are_uniform():
    x = _ffm.init_draws(7, 1 << 20, 0, 1.0)
    assert -1.0 <= x.min() and x.max() < 1.0
    assert abs(x.mean()) < 3e-3 and x.std() == pytest.approx(1 / np.sqrt(3), rel=3e-3)
    hist = np.histogram(x, bins=16, range=(-1, 1))[0]
    assert hist.min() > 0.97 * hist.mean()
    # neighbouring features' keys give unrelated draws
    y = _ffm.init_draws(8, 1 << 20, 0, 1.0)
    assert abs(np.corrcoef(x, y)[0, 1]) < 5e-3


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_init_table_does_not_depend_on_threads(dtype):
    rng = np.random.default_rng(0)
    X = sp.random(300, 40, density=0.2, format="csr", random_state=1, dtype=np.float32)
    y = (rng.random(300) > 0.5).astype(int)
    fields = np.arange(40) % 7
    kw = dict(n_factors=5, n_epochs=1, random_state=3, dtype=dtype, learning_rate=1e-12)
    V1 = cfm.FFMClassifier(n_jobs=1, **kw).fit(X, y, fields=fields).V_
    V2 = cfm.FFMClassifier(n_jobs=2, **kw).fit(X, y, fields=fields).V_
    np.testing.assert_allclose(V1, V2, atol=1e-6)
    assert np.std(V1) == pytest.approx(cfm.FFMClassifier(**kw)._init_std(), rel=0.2)


# --------------------------------------------------------------------------- packed records

@pytest.mark.parametrize("n_fields", [1, 2, 3, 4, 5, 7])
def test_packed_records_predict_train_save_load(rng, tmp_path, n_fields):
    """float16 AdaGrad records (20 bytes) sit 3 per 64-byte line; every way
    in and out of the table sees the same records."""
    X, fields = ffm_data(rng, n_features=24, n_fields=n_fields)
    y = rng.normal(size=X.shape[0])
    m = half_model(cfm.FFMRegressor, X, y, fields, n_factors=5)
    expect_off = ref.record_offsets(np.float16, 5, "adagrad", n_fields)
    np.testing.assert_array_equal(m._rec_off, expect_off)
    assert m._V.shape[1] == -(-n_fields // 3) * 32  # ceil(n_fields / 3) lines
    st = with_random_state(m, rng, scale=0.5)
    np.testing.assert_array_equal(m.V_, st.V)
    if n_fields > 3:  # (up to 3 fields, packed and contiguous records coincide)
        assert not m.V_.flags.writeable  # a copy: writing to it would change nothing
    expected = ref.ffm_predict(X, fields, st.w0_state[0], st.w, st.V, True)
    np.testing.assert_allclose(m.predict(X), expected, rtol=1e-5, atol=1e-5)
    # padding between records stays 0 through training
    m.set_params(learning_rate=0.1, warm_start=True).fit(X, y, fields=fields)
    used = np.zeros(m._V.shape[1], dtype=bool)
    for o in m._rec_off:
        used[o:o + m._ks] = True
    assert np.all(m._V[:, ~used].view(np.uint16) == 0)
    # the file holds the records contiguously; loading restores the packed table
    path = tmp_path / "m.cfm"
    m.save(path)
    from cfm._model_file import read_model_file

    _, arrays = read_model_file(path)
    recs = np.stack([m._V[:, o:o + m._ks] for o in m._rec_off], axis=1)
    np.testing.assert_array_equal(arrays["V"].view(np.uint16),
                                  recs.reshape(len(recs), -1).view(np.uint16))
    m2 = cfm.load(path)
    np.testing.assert_array_equal(m2._V.view(np.uint16), m._V.view(np.uint16))
    np.testing.assert_array_equal(m2.predict(X), m.predict(X))
    lean = cfm.load(path, scoring_only=True)
    np.testing.assert_array_equal(lean.predict(X), m.predict(X))
    np.testing.assert_array_equal(lean.V_, m.V_)


def test_packed_and_contiguous_layouts_train_identically(rng):
    """The record layout moves vectors, not arithmetic: with one thread, a
    float16 AdaGrad fit equals the same fit on a contiguous table."""
    from cfm._state import ffm as ffm_mod

    X, fields = ffm_data(rng, n=60, n_features=30, n_fields=5)
    y = (rng.random(60) > 0.5).astype(int)
    kw = dict(n_factors=8, n_epochs=3, n_jobs=1, random_state=0, dtype="float16")
    a = cfm.FFMClassifier(**kw).fit(X, y, fields=fields)
    contiguous = lambda nf, ks, dtype: ((np.arange(nf) * ks).astype(np.int32), nf * ks)
    orig = ffm_mod.layout
    try:
        ffm_mod.layout = contiguous
        b = cfm.FFMClassifier(**kw).fit(X, y, fields=fields)
    finally:
        ffm_mod.layout = orig
    assert not np.array_equal(a._rec_off, b._rec_off)
    np.testing.assert_array_equal(a.V_.view(np.uint16), b.V_.view(np.uint16))
    np.testing.assert_array_equal(a.decision_function(X), b.decision_function(X))


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_chunked_schedule_scores_identically(rng, dtype):
    """Rows handed out in chunks to 2 threads give the same bits as one
    thread (every row is scored on its own)."""
    X, fields = ffm_data(rng, n=2000, n_features=50, n_fields=7, nnz=8)
    y = (rng.random(X.shape[0]) > 0.5).astype(int)
    m = cfm.FFMClassifier(n_factors=4, n_epochs=2, n_jobs=2, random_state=0, dtype=dtype).fit(
        X, y, fields=fields)
    from cfm._validation import CSRInput

    Xs = sp.csr_matrix(X, dtype=np.float64)
    Xc = CSRInput(Xs.data, Xs.indices, Xs.indptr.astype(np.int64), Xs.shape)
    a = m._decision(Xc, 2)
    b = m._decision(Xc, 1)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, m.decision_function(X))


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_save_writes_tables_in_row_blocks(rng, tmp_path, monkeypatch, dtype):
    """The factor table is saved a block of rows at a time (no copy of the
    whole table): tiny blocks give the same file, which loads back."""
    from cfm import _model_file as _io

    X, fields = ffm_data(rng, n=300, n_features=40, n_fields=7, nnz=6)
    y = (rng.random(X.shape[0]) > 0.5).astype(int)
    m = cfm.FFMClassifier(n_factors=4, n_epochs=2, n_jobs=1, random_state=0, dtype=dtype).fit(
        X, y, fields=fields)
    m.save(tmp_path / "a.cfm")
    seen = []
    orig = _io.RowBlocks.blocks

    def small_blocks(self):
        self.rows_per_block = 7
        for b in orig(self):
            seen.append(len(b))
            yield b

    monkeypatch.setattr(_io.RowBlocks, "blocks", small_blocks)
    m.save(tmp_path / "b.cfm")
    assert len(seen) > 1 and sum(seen) == m.n_features_in_
    assert (tmp_path / "a.cfm").read_bytes() == (tmp_path / "b.cfm").read_bytes()
    np.testing.assert_array_equal(cfm.load(tmp_path / "b.cfm").decision_function(X),
                                  m.decision_function(X))
