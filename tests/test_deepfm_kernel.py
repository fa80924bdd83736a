"""DeepFM kernels (src/cfm/_deepfm.pyx) and their driver cfm/_state/deepfm.py
against the NumPy reference tests/reference_deepfm.py."""
import numpy as np
import pytest
import scipy.sparse as sp

import reference_deepfm as R
from cfm import _deepfm
from cfm._state.deepfm import DeepFMHyper, DeepFMState
from cfm._validation import check_X

N_FIELDS = 3


def make_data(n=30, nf=14, seed=0, dtype=np.float64, empty_rows=(3, 7)):
    """Multi-hot, real-valued rows (values of either sign), a few empty rows;
    fields: column j in field j % N_FIELDS, so every field has several columns."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, nf, density=0.35, random_state=seed, format="lil", dtype=np.float64)
    for i in empty_rows:
        X.rows[i], X.data[i] = [], []
    X = X.tocsr()
    X.data = rng.uniform(0.3, 2.0, X.nnz) * rng.choice([-1.0, 1.0], X.nnz)
    X = X.astype(dtype)
    fields = np.arange(nf) % N_FIELDS
    y = rng.choice([-1.0, 1.0], n)
    return X, y, fields


def make_state(nf, fields, k=4, hidden=(5, 3), dtype=np.float64, optimizer="adam", seed=1,
               normalize=False):
    st = DeepFMState(nf, fields, k, hidden, dtype=dtype, optimizer=optimizer, seed=seed,
                     init_std=0.3, normalize=normalize)
    st.bias[0] = 0.3
    Ws, bs, _ = st.dense_params()
    rng = np.random.default_rng(seed + 10)
    for b in bs:                      # non-zero biases: exercised by the tests
        b[...] = rng.normal(0, 0.2, b.shape)
    st.table[:, 0] = rng.normal(0, 0.3, nf)
    return st


def ref_params(st):
    Ws, bs, wout = st.dense_params()
    return dict(w0=st.w0, w=st.w.astype(np.float64), V=st.V.astype(np.float64),
                W=[W.astype(np.float64) for W in Ws], b=[b.astype(np.float64) for b in bs],
                wout=wout.astype(np.float64))


def kernel_grads(st, Xc, y, order, l2, sw=None, normalize=False, dropout=0.0, seed=0, nt=1):
    return _deepfm.deepfm_gradients(
        data=Xc.data, indices=Xc.indices, indptr=Xc.indptr, y=y,
        sample_weight=np.zeros(0) if sw is None else sw, order=order, table=st.table,
        mlp=st.mlp, layer_sizes=st.layer_sizes, w0=st.w0, n_factors=st.k,
        loss=_deepfm.LOGISTIC, normalize=normalize, l2_w0=l2.get("w0", 0.0),
        l2_w=l2.get("w", 0.0), l2_v=l2.get("v", 0.0), l2_dense=l2.get("dense", 0.0),
        dropout=dropout, seed=seed, n_threads=nt)


def split_mlp(st, flat):
    w_off, b_off, out_off, _ = _deepfm.mlp_layout(st.layer_sizes)
    d = list(st.layer_sizes)
    W = [flat[w_off[l - 1]:w_off[l - 1] + d[l - 1] * d[l]].reshape(d[l - 1], d[l])
         for l in range(1, len(d))]
    b = [flat[b_off[l - 1]:b_off[l - 1] + d[l]] for l in range(1, len(d))]
    return W, b, flat[out_off:out_off + d[-1]]


def masks_for(seed, order, st, dropout):
    d = list(st.layer_sizes)
    return [np.stack([_deepfm.dropout_scale(seed, p, l, d[l], dropout) for p in range(len(order))])
            for l in range(1, len(d))]


@pytest.mark.parametrize("hidden", [(), (5,), (5, 3)])
@pytest.mark.parametrize("normalize", [False, True])
def test_forward_matches_reference(hidden, normalize):
    X, y, fields = make_data()
    st = make_state(X.shape[1], fields, hidden=hidden, normalize=normalize)
    Xc = check_X(X)
    got = st.decision(Xc, 1)
    want, _ = R.forward(X, ref_params(st), fields, N_FIELDS, normalize)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # empty rows score w0 + the MLP of zero input
    assert got[3] == pytest.approx(want[3])


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.4])
def test_gradients_match_reference(normalize, dropout):
    X, y, fields = make_data()
    st = make_state(X.shape[1], fields)
    Xc = check_X(X)
    l2 = dict(w0=0.02, w=0.05, v=0.1, dense=0.01)
    order = np.random.default_rng(3).permutation(X.shape[0])
    sw = np.random.default_rng(4).uniform(0, 2, X.shape[0])
    gtab, gmlp, gw0, loss_sum, w_sum = kernel_grads(st, Xc, y, order, l2, sw, normalize,
                                                    dropout, seed=7)
    masks = masks_for(7, order, st, dropout) if dropout else None
    Xo = X[order]
    g = R.gradients(Xo, y[order], sw[order], ref_params(st), fields, N_FIELDS, "logistic", l2,
                    normalize, masks)
    np.testing.assert_allclose(gtab[:, 0], g["w"], atol=1e-13)
    np.testing.assert_allclose(gtab[:, 1:], g["V"], atol=1e-13)
    W, b, wout = split_mlp(st, gmlp)
    for l in range(len(W)):
        np.testing.assert_allclose(W[l], g["W"][l], atol=1e-13)
        np.testing.assert_allclose(b[l], g["b"][l], atol=1e-13)
    np.testing.assert_allclose(wout, g["wout"], atol=1e-13)
    assert gw0 == pytest.approx(g["w0"], abs=1e-13)
    pred, _ = R.forward(Xo, ref_params(st), fields, N_FIELDS, normalize, masks)
    assert loss_sum == pytest.approx(np.sum(sw[order] * R.loss_value(pred, y[order], "logistic")))
    assert w_sum == pytest.approx(sw.sum())


def test_gradients_finite_differences():
    """The kernel's gradient is the derivative of the batch objective."""
    X, y, fields = make_data(n=12, nf=9)
    st = make_state(X.shape[1], fields, k=3, hidden=(4, 3))
    Xc = check_X(X)
    l2 = dict(w0=0.02, w=0.05, v=0.1, dense=0.01)
    order = np.arange(X.shape[0])
    gtab, gmlp, gw0, _, _ = kernel_grads(st, Xc, y, order, l2, dropout=0.3, seed=5)
    masks = masks_for(5, order, st, 0.3)
    base = ref_params(st)
    sw = np.ones(len(y))

    def J(p):
        return R.objective(X, y, sw, p, fields, N_FIELDS, "logistic", l2, masks=masks)

    h = 1e-6
    rng = np.random.default_rng(0)
    touched = R.touched(X)
    Wg, bg, og = split_mlp(st, gmlp)
    checks = [("w0", None, gw0)]
    for j in rng.choice(touched, 4, replace=False):
        c = int(rng.integers(3))
        checks.append(("w", (j,), gtab[j, 0]))
        checks.append(("V", (j, c), gtab[j, 1 + c]))
    for l in range(2):
        idx = tuple(int(rng.integers(s)) for s in base["W"][l].shape)
        checks.append((("W", l), idx, Wg[l][idx]))
        u = int(rng.integers(base["b"][l].shape[0]))
        checks.append((("b", l), (u,), bg[l][u]))
    checks.append(("wout", (1,), og[1]))
    for key, idx, g in checks:
        def bumped(delta):
            p = {kk: (vv.copy() if isinstance(vv, np.ndarray) else
                      ([a.copy() for a in vv] if isinstance(vv, list) else vv))
                 for kk, vv in base.items()}
            if key == "w0":
                p["w0"] += delta
            elif isinstance(key, tuple):
                p[key[0]][key[1]][idx] += delta
            else:
                p[key][idx] += delta
            return J(p)
        fd = (bumped(h) - bumped(-h)) / (2 * h)
        assert g == pytest.approx(fd, rel=1e-5, abs=1e-8), (key, idx)


def run_epoch(st, X, y, order, optimizer, batch_size, nt=1, sw=None, l2=None, seed=0, **kw):
    l2 = l2 or {}
    hyper = DeepFMHyper(learning_rate=0.05, batch_size=batch_size, l2_w0=l2.get("w0", 0.0),
                        l2_w=l2.get("w", 0.0), l2_v=l2.get("v", 0.0),
                        l2_dense=l2.get("dense", 0.0), **kw)
    return st.train_epoch(check_X(X), y, sw, order, hyper, nt, seed)


@pytest.mark.parametrize("optimizer,normalize", [("adam", False), ("adagrad", False),
                                                ("adam", True)])
def test_epoch_matches_reference_steps(optimizer, normalize):
    """An epoch of lazy steps over mini-batches equals the reference's steps
    batch by batch (two epochs: per-row Adam step counts carry over)."""
    X, y, fields = make_data(n=40)
    st = make_state(X.shape[1], fields, optimizer=optimizer, normalize=normalize)
    params = ref_params(st)
    rstate = R.new_state(params, optimizer)
    l2 = dict(w0=0.01, w=0.02, v=0.03, dense=0.01)
    rng = np.random.default_rng(0)
    for epoch in range(2):
        order = rng.permutation(X.shape[0])
        run_epoch(st, X, y, order, optimizer, batch_size=16, l2=l2)
        for b0 in range(0, len(order), 16):
            rows = order[b0:b0 + 16]
            R.step(X[rows], y[rows], np.ones(len(rows)), params, rstate, fields, N_FIELDS,
                   "logistic", l2, optimizer, 0.05, normalize=normalize)
    got = ref_params(st)
    np.testing.assert_allclose(got["w"], params["w"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["V"], params["V"], rtol=1e-10, atol=1e-12)
    for l in range(2):
        np.testing.assert_allclose(got["W"][l], params["W"][l], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got["b"][l], params["b"][l], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["wout"], params["wout"], rtol=1e-10, atol=1e-12)
    assert got["w0"] == pytest.approx(params["w0"], rel=1e-10)
    if optimizer == "adam":
        t = st.table[:, st.layout["t"]]
        np.testing.assert_array_equal(t, rstate["row_t"])
        assert st.counters[0] == rstate["step"]


def test_sparse_update_touches_only_batch_rows():
    X, y, fields = make_data(n=30, nf=40)
    st = make_state(X.shape[1], fields)
    rows = np.array([0, 5, 9, 11])
    before = st.table.copy()
    run_epoch(st, X, y, rows, "adam", batch_size=2)
    touched = np.zeros(X.shape[1], bool)
    touched[np.unique(X[rows].indices)] = True
    assert touched.sum() < X.shape[1]
    np.testing.assert_array_equal(st.table[~touched], before[~touched])
    assert np.all(np.any(st.table[touched] != before[touched], axis=1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_deterministic_and_thread_count_invariant(dtype):
    """n_jobs=1 is bit-identical under a seed, and so is every n_jobs (fixed
    chunking, fixed-order reductions)."""
    X, y, fields = make_data(n=300, nf=60, dtype=dtype, empty_rows=())
    order = np.random.default_rng(2).permutation(300)
    tables = []
    for nt in (1, 1, 2, 3):
        st = make_state(X.shape[1], fields, k=8, hidden=(70, 9), dtype=dtype)
        for _ in range(2):
            run_epoch(st, X, y, order, "adam", batch_size=64, nt=nt, dropout=0.2, seed=11)
        tables.append((st.table.copy(), st.mlp.copy(), st.bias.copy()))
    for t in tables[1:]:
        for a, b in zip(tables[0], t):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predict_identical_across_n_jobs(dtype):
    X, y, fields = make_data(n=700, nf=50, dtype=dtype)   # several scoring blocks
    st = make_state(X.shape[1], fields, k=5, hidden=(16,), dtype=dtype)
    Xc = check_X(X)
    ref = st.decision(Xc, 1)
    for nt, shared in [(2, False), (3, False), (2, True)]:
        np.testing.assert_array_equal(st.decision(Xc, nt, shared=shared), ref)


def test_float32_agrees_with_float64():
    X, y, fields = make_data(n=200, nf=30)
    order = np.random.default_rng(0).permutation(200)
    out = []
    for dt in (np.float64, np.float32):
        st = make_state(X.shape[1], fields, dtype=dt)
        run_epoch(st, X.astype(dt), y, order, "adam", batch_size=32)
        out.append(st.decision(check_X(X), 1))
    np.testing.assert_allclose(out[1], out[0], rtol=1e-4, atol=1e-4)


def test_empty_rows_and_empty_batches():
    X, y, fields = make_data(n=10, nf=9, empty_rows=range(10))   # all rows empty
    st = make_state(X.shape[1], fields)
    before = st.table.copy()
    loss, wsum, bad = run_epoch(st, X, y, np.arange(10), "adam", batch_size=4)
    assert bad == 0 and wsum == 10 and np.isfinite(loss)
    np.testing.assert_array_equal(st.table, before)         # no row touched
    d = st.decision(check_X(X), 2)
    assert np.all(d == d[0])
    assert run_epoch(st, X, y, np.zeros(0, np.int64), "adam", batch_size=4) == (0.0, 0.0, 0)


def test_sample_weights_zero_batch_and_scaling():
    X, y, fields = make_data(n=24)
    order = np.arange(24)
    a = make_state(X.shape[1], fields)
    b = make_state(X.shape[1], fields)
    sw = np.ones(24)
    sw[:8] = 0.0                                          # first batch of 8 weighs nothing
    run_epoch(a, X, y, order, "adam", batch_size=8, sw=sw)
    run_epoch(b, X[8:], y[8:], np.arange(16), "adam", batch_size=8)
    np.testing.assert_allclose(a.mlp, b.mlp, rtol=1e-12)
    # the batch loss is a weighted mean: scaling all weights changes nothing
    c = make_state(X.shape[1], fields)
    d = make_state(X.shape[1], fields)
    run_epoch(c, X, y, order, "adam", batch_size=8, sw=np.full(24, 3.0))
    run_epoch(d, X, y, order, "adam", batch_size=8)
    np.testing.assert_allclose(c.table, d.table, rtol=1e-12)


def test_squared_loss_learns():
    X, _, fields = make_data(n=400, nf=20, empty_rows=())
    rng = np.random.default_rng(0)
    target = X @ rng.normal(size=20) + 0.5
    st = make_state(X.shape[1], fields, k=4, hidden=(8,))
    Xc = check_X(X)
    mse0 = np.mean((st.decision(Xc, 1) - target) ** 2)
    hyper = DeepFMHyper(loss="squared", learning_rate=0.02, batch_size=32)
    for e in range(30):
        st.train_epoch(Xc, target, None, rng.permutation(400), hyper, 1, e)
    assert np.mean((st.decision(Xc, 1) - target) ** 2) < 0.1 * mse0


def test_warm_start_snapshot_restore_and_export_roundtrip():
    X, y, fields = make_data(n=60)
    Xc = check_X(X)
    order = np.arange(60)
    a = make_state(X.shape[1], fields, dtype=np.float32)
    b = make_state(X.shape[1], fields, dtype=np.float32)
    hyper = DeepFMHyper(batch_size=16, learning_rate=0.01)
    a.train_epoch(Xc, y, None, order, hyper, 1, 0)
    snap = a.snapshot()
    a.train_epoch(Xc, y, None, order, hyper, 1, 1)
    after2 = a.decision(Xc, 1)
    a.restore(snap)
    a.train_epoch(Xc, y, None, order, hyper, 1, 1)
    np.testing.assert_array_equal(a.decision(Xc, 1), after2)
    b.train_epoch(Xc, y, None, order, hyper, 1, 0)
    b.train_epoch(Xc, y, None, order, hyper, 1, 1)
    np.testing.assert_array_equal(b.decision(Xc, 1), after2)    # 1 + 1 epochs == 2
    arrays, header = a.export()
    c = DeepFMState.from_file(dict(header), {k: np.array(v) for k, v in arrays.items()})
    arrays2, header2 = c.export()
    assert header2 == header
    for k in arrays:
        assert arrays[k].dtype == arrays2[k].dtype
        assert arrays[k].tobytes() == arrays2[k].tobytes()
    np.testing.assert_array_equal(c.decision(Xc, 2), after2)
    # training goes on identically from the loaded state
    a.train_epoch(Xc, y, None, order, hyper, 1, 5)
    c.train_epoch(Xc, y, None, order, hyper, 1, 5)
    np.testing.assert_array_equal(c.table, a.table)


def test_from_file_rejects_inconsistent_arrays():
    X, y, fields = make_data(n=10)
    arrays, header = make_state(X.shape[1], fields).export()

    def load(h=None, **changes):
        arr = {k: np.array(v) for k, v in arrays.items()}
        arr.update(changes)
        return DeepFMState.from_file(dict(header, **(h or {})), arr)

    with pytest.raises(ValueError, match="table"):
        load(table=np.array(arrays["table"])[:-1])
    bad_fields = np.array(arrays["fields"])
    bad_fields[0] = 1 - bad_fields[0] if bad_fields[0] < 2 else 0
    with pytest.raises(ValueError, match="field"):
        load(fields=bad_fields)
    out_of_range = np.array(arrays["fields"])
    out_of_range[0] = 99
    with pytest.raises(ValueError, match="fields"):
        load(fields=out_of_range)
    with pytest.raises(ValueError, match="mlp"):
        load(mlp=np.array(arrays["mlp"])[:-1])
    with pytest.raises(ValueError, match="hidden"):
        load({"hidden": [5, 10**9]})
    with pytest.raises(ValueError, match="version"):
        load({"deepfm_format": 99})
    with pytest.raises(ValueError, match="n_factors"):
        load({"n_factors": "8"})


def test_validation_errors():
    X, y, fields = make_data(n=10)
    nf = X.shape[1]
    with pytest.raises(ValueError, match="fields"):
        DeepFMState(nf, fields[:-1])
    with pytest.raises(ValueError, match="outside"):
        DeepFMState(nf, fields, n_fields=2)
    with pytest.raises(ValueError, match="optimizer"):
        DeepFMState(nf, fields, optimizer="sgd")
    with pytest.raises(ValueError, match="k must"):
        DeepFMState(nf, fields, k=0)
    st = make_state(nf, fields)
    Xc = check_X(X)
    with pytest.raises(ValueError, match="dropout"):
        st.train_epoch(Xc, y, None, np.arange(10), DeepFMHyper(dropout=1.0), 1, 0)
    with pytest.raises(ValueError, match="order"):
        st.train_epoch(Xc, y, None, np.array([0, 10]), DeepFMHyper(), 1, 0)
    with pytest.raises(ValueError, match="-1, \\+1"):
        st.train_epoch(Xc, np.zeros(10), None, np.arange(10), DeepFMHyper(), 1, 0)
    with pytest.raises(ValueError, match="features"):
        st.decision(check_X(sp.csr_matrix((2, nf + 1))), 1)
