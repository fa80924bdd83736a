"""Multiclass FFMClassifier (a softmax FFM): the kernels of src/cfm/_ffm.pyx
("Multiclass") against the NumPy reference (tests/reference_softmax_ffm.py):
gradients (finite differences), scores, one SGD-type epoch sample by sample;
then what the estimator adds beyond tests/test_contract.py (labels,
probabilities, dtype, model files, files, the CLI)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

import cfm
from cfm import _ffm
from cfm._model_file import read_model_file, write_model_file
from cfm._state.base import OPTIMIZERS
from cfm._state.softmax_ffm import SoftmaxFFMTable
from cfm._validation import check_X
import reference_ffm as rf
import reference_softmax_ffm as rsf
from test_ffm import ffm_data, random_ref_state
from test_train_kernel import SOLVER_LR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C = 3


# ------------------------------------------------------------------ kernels
def _tables(states, fields, solver, dtype=np.float64, normalize=False):
    """A SoftmaxFFMTable holding the reference states (one per class)."""
    n, nf, k = states[0].V.shape
    state = SoftmaxFFMTable.new(n, k=k, solver=solver, dtype=dtype, init_std=0.1, seed=1,
                                n_threads=1, w0_state=np.zeros(3), normalize=normalize,
                                n_classes=len(states), fields=fields)
    lw = state.lin.shape[1] // len(states)
    lin = state.lin.reshape(n, len(states), lw)
    recs = state.records()
    for c, st in enumerate(states):
        Vc = np.zeros((n, nf * state.ks), dtype=dtype)
        linc = np.zeros((n, lw), dtype=dtype)
        st.to_tables(linc, Vc, state.w0_state[c])
        lin[:, c, :] = linc
        recs[:, :, c, :] = Vc.reshape(n, nf, state.ks)
    return state


def _unpack(state, c):
    n, nf = state.V.shape[0], state.n_fields
    lin = state.lin.reshape(n, state.n_classes, -1)[:, c, :]
    Vc = np.ascontiguousarray(state.records()[:, :, c, :]).reshape(n, nf * state.ks)
    return rf.RefFFMState.from_tables(np.ascontiguousarray(lin), Vc, state.w0_state[c], nf,
                                      state.k, state.solver)


def _check_equal(state, states, rtol=1e-10, atol=1e-12):
    for c, st in enumerate(states):
        got = _unpack(state, c)
        np.testing.assert_allclose(state.w0_state[c], st.w0_state, rtol=rtol, atol=atol)
        np.testing.assert_allclose(got.w, st.w, rtol=rtol, atol=atol)
        np.testing.assert_allclose(got.V, st.V, rtol=rtol, atol=atol)
        for name in ("Gw", "z", "nw", "GV"):
            if getattr(st, name) is not None:
                np.testing.assert_allclose(getattr(got, name), getattr(st, name), rtol=rtol,
                                           atol=atol)


def _epoch(state, X, y, sw, order, hp, fit_intercept, n_threads=1):
    Xc = check_X(X)
    return state.train_epoch(
        Xc, np.asarray(y, dtype=np.float64),
        np.empty(0) if sw is None else np.asarray(sw, dtype=np.float64),
        np.asarray(order, dtype=np.int64),
        cfm._state.Hyper(loss="logistic", optimizer=state.solver, fit_intercept=fit_intercept,
                         **hp), n_threads, None)


def test_analytic_gradient_matches_finite_differences(rng):
    n, nf, k = 8, 3, 3
    fields = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    cols = np.array([0, 2, 3, 4, 7])  # field 0 and 1 twice: repeated fields
    x = rng.uniform(0.5, 2.0, len(cols))
    params = [(float(rng.normal()), rng.normal(0, 0.4, n), rng.normal(0, 0.4, (n, nf, k)))
              for _ in range(C)]
    y = 2
    loss, grads = rsf.loss_and_grad(cols, x, y, fields, params)
    eps = 1e-6

    def f(c, w0=None, w=None, V=None):
        ps = list(params)
        o = ps[c]
        ps[c] = (o[0] if w0 is None else w0, o[1] if w is None else w, o[2] if V is None else V)
        return rsf.loss_and_grad(cols, x, y, fields, ps)[0]

    for c in range(C):
        w0, w, V = params[c]
        assert grads[c][0] == pytest.approx((f(c, w0=w0 + eps) - f(c, w0=w0 - eps)) / (2 * eps),
                                            abs=1e-7)
        for j in range(n):
            wp, wm = w.copy(), w.copy()
            wp[j] += eps
            wm[j] -= eps
            assert grads[c][1][j] == pytest.approx((f(c, w=wp) - f(c, w=wm)) / (2 * eps),
                                                   abs=1e-7)
            for q in range(nf):
                for fct in range(k):
                    Vp, Vm = V.copy(), V.copy()
                    Vp[j, q, fct] += eps
                    Vm[j, q, fct] -= eps
                    num = (f(c, V=Vp) - f(c, V=Vm)) / (2 * eps)
                    assert grads[c][2][j, q, fct] == pytest.approx(num, abs=1e-7)
    s = np.array([rf.ffm_score_entries(cols, x, fields, *p) for p in params])
    assert loss == pytest.approx(-np.log(np.exp(s[y]) / np.exp(s).sum()), rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("normalize", [False, True])
def test_scores_match_reference(rng, dtype, normalize):
    X, fields = ffm_data(rng)
    nf = int(fields.max()) + 1
    states = [random_ref_state(X.shape[1], nf, 4, "adagrad", rng) for _ in range(C)]
    state = _tables(states, fields, "adagrad", dtype, normalize)
    want = rsf.predict(X, fields, states, normalize)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for nt in (1, 2):
        np.testing.assert_allclose(state.decision(check_X(X), nt), want, rtol=tol, atol=tol)
    # each class's scores are a binary FFM's
    for c in range(C):
        st = states[c]
        np.testing.assert_allclose(
            want[:, c], rf.ffm_predict(X, fields, st.w0_state[0], st.w, st.V, normalize),
            rtol=1e-12)


CASES = [
    # (solver, fit_intercept, weighted, normalize, l1)
    ("sgd", True, False, False, 0.0),
    ("sgd", False, True, True, 0.0),
    ("adagrad", True, True, False, 0.0),
    ("adagrad", True, False, True, 0.0),
    ("ftrl", True, True, True, 0.05),
    ("ftrl", False, False, False, 0.0),
]


@pytest.mark.parametrize("solver,fit_intercept,weighted,normalize,l1", CASES)
def test_epoch_matches_reference(rng, solver, fit_intercept, weighted, normalize, l1):
    X, fields = ffm_data(rng, n=30)
    n, nf, k = X.shape[0], int(fields.max()) + 1, 3
    y = rng.integers(0, C, n).astype(np.float64)
    sw = rng.uniform(0.2, 2.0, n) if weighted else None
    hp = dict(learning_rate=SOLVER_LR[solver], l2_w0=0.01, l2_w=0.02, l2_v=0.03, l1=l1,
              ftrl_beta=0.7)
    states = [random_ref_state(X.shape[1], nf, k, solver, rng) for _ in range(C)]
    state = _tables(states, fields, solver, normalize=normalize)
    order = rng.permutation(n)
    order = np.concatenate([order, order[:5]])  # a row may be visited twice
    whole = state.clone()
    lk, wk, bad = _epoch(whole, X, y, sw, order, hp, fit_intercept)
    init = [s.copy() for s in states]
    for i in order:  # one SGD-type step at a time: kernel vs reference
        _epoch(state, X, y, sw, [i], hp, fit_intercept)
        rsf.train_epoch(X, y, fields, [i], states, fit_intercept=fit_intercept,
                        normalize=normalize, sample_weight=sw, **hp)
        _check_equal(state, states)
    np.testing.assert_array_equal(whole.lin, state.lin)
    np.testing.assert_array_equal(whole.V, state.V)
    np.testing.assert_array_equal(whole.w0_state, state.w0_state)
    # the returned sums are the pre-update losses
    lr_, wr_, br_ = rsf.train_epoch(X, y, fields, order, init, fit_intercept=fit_intercept,
                                    normalize=normalize, sample_weight=sw, **hp)
    assert lk == pytest.approx(lr_, rel=1e-10)
    assert wk == pytest.approx(wr_, rel=1e-12)
    assert bad == 0 and br_ == 0


def test_layout_and_init():
    """Class c's record of (feature, field q) is at q * C * ks + c * ks; init
    draws differ per class and do not depend on threads."""
    kw = dict(k=5, solver="adagrad", dtype=np.float32, init_std=0.1, seed=7,
              w0_state=np.zeros(3), normalize=True, n_classes=4, fields=np.arange(30) % 3)
    a = SoftmaxFFMTable.new(30, n_threads=1, **kw)
    b = SoftmaxFFMTable.new(30, n_threads=2, **kw)
    np.testing.assert_array_equal(a.V, b.V)
    assert a.kp == 8 and a.ks == 9 and list(a.rec_off) == [0, 36, 72]
    V = a.factors()
    assert V.shape == (30, 4, 3, 5) and not np.array_equal(V[:, 0], V[:, 1])
    np.testing.assert_array_equal(V[:, 2, 1], a.V[:, 36 + 2 * 9:36 + 2 * 9 + 5])
    assert np.all(a.records()[..., 8] == 1.0) and np.all(a.records()[..., 5:8] == 0)
    assert a.w.shape == (30, 4) and np.all(a.w == 0) and np.all(a.lin[:, 1::2] == 1.0)
    # float16 (the FFM default on F16C CPUs) is stored as float32
    h = SoftmaxFFMTable.new(30, n_threads=1, **dict(kw, dtype=np.float16))
    assert h.V.dtype == np.float32
    with pytest.raises(ValueError, match="inconsistent"):
        _ffm.ffm_softmax_predict(np.ones(1), np.zeros(1, np.int32), np.array([0, 1]),
                                 a.foff, np.ascontiguousarray(a.lin[:, :3]), a.V, np.zeros(4),
                                 np.empty((1, 4)), kp=8, ks=9, normalize=False, n_threads=1,
                                 max_nnz=1)


# ------------------------------------------------------------------ estimator
def _data(n=1500, n_fields=3, per_field=8, n_classes=4, seed=0):
    """One-hot rows of ``n_fields`` categorical fields whose class depends on
    field interactions."""
    rng = np.random.default_rng(seed)
    cats = rng.integers(0, per_field, (n, n_fields))
    cols = cats + np.arange(n_fields) * per_field
    X = sp.csr_matrix((np.ones(n * n_fields), cols.ravel(), np.arange(0, n * n_fields + 1,
                                                                      n_fields)),
                      shape=(n, n_fields * per_field))
    T = rng.normal(size=(per_field, per_field, n_classes))
    s = T[cats[:, 0], cats[:, 1]] + 0.5 * rng.normal(size=(n, n_classes))
    return X, s.argmax(axis=1), np.repeat(np.arange(n_fields), per_field)


X, Y, F = _data()
LABELS = np.array(["ant", "bee", "cat", "dog"])


def test_labels_probabilities_and_early_stopping():
    y = LABELS[Y]
    m = cfm.FFMClassifier(n_factors=4, n_epochs=30, learning_rate=0.2, random_state=0,
                          n_jobs=1, n_iter_no_change=2, tol=0.0).fit(
        X[:1200], y[:1200], fields=F, eval_set=(X[1200:], y[1200:]))
    assert list(m.classes_) == list(LABELS) and m.V_.dtype == np.float32
    assert m.V_.shape == (X.shape[1], 4, 3, 4) and m.w_.shape == (X.shape[1], 4)
    assert m.w0_.shape == (4,)
    p = m.predict_proba(X[1200:])
    assert p.shape == (300, 4) and np.allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(np.exp(m.predict_log_proba(X[1200:])), p, rtol=1e-12)
    pred = m.predict(X[1200:])
    assert np.array_equal(pred, LABELS[p.argmax(axis=1)])
    assert np.mean(pred == y[1200:]) > 0.55  # 4 classes: chance is about 0.3
    losses = [h["eval_logloss"] for h in m.history_]
    assert m.best_epoch_ == int(np.argmin(losses)) + 1
    got = cfm._metrics.logloss(Y[1200:].astype(float), m.decision_function(X[1200:]))
    assert got == pytest.approx(min(losses), rel=1e-12)
    # the interaction is learnt: the FFM beats a linear softmax model
    lin = cfm.FMClassifier(n_factors=0, n_epochs=len(losses), learning_rate=0.2,
                           random_state=0, n_jobs=1).fit(X[:1200], y[:1200])
    assert m.score(X[1200:], y[1200:]) > lin.score(X[1200:], y[1200:])


def test_auto_tune_partial_fit_and_dtype():
    Xb, yb, Fb = _data(n=6000, n_classes=3, seed=1)
    m = cfm.FFMClassifier(n_factors=4, random_state=0, n_jobs=1).fit(Xb, yb, fields=Fb)
    assert m.best_params_["auto"] == "race" and m.race_["metric"] == "logloss"
    with pytest.raises(ValueError, match="dtype='float16' is for binary FFMs"):
        cfm.FFMClassifier(dtype="float16", n_epochs=1).fit(X, Y, fields=F)
    with pytest.raises(ValueError, match="eval_metric='auc' is binary"):
        cfm.FFMClassifier(eval_metric="auc").fit(X, Y, fields=F)
    m64 = cfm.FFMClassifier(n_factors=2, n_epochs=1, dtype="float64", random_state=0).fit(
        X, Y, fields=F)
    assert m64.V_.dtype == np.float64
    # partial_fit with classes= (the first batch lacks class 3)
    first = Y != 3
    pf = cfm.FFMClassifier(n_factors=3, random_state=0, n_jobs=1)
    pf.partial_fit(X[first], Y[first], classes=[0, 1, 2, 3], fields=F)
    before = pf.decision_function(X)
    pf.partial_fit(X, Y)
    assert pf.decision_function(X).shape == (X.shape[0], 4) and pf.n_epochs_ == 2
    assert not np.array_equal(before, pf.decision_function(X))
    # warm start keeps the layout; a binary refit of the same estimator works
    pf.set_params(warm_start=True, n_epochs=1).fit(X, Y)
    with pytest.raises(ValueError, match="keep solver and dtype"):
        pf.set_params(solver="sgd").fit(X, Y)
    b = pf.set_params(warm_start=False, solver="adagrad").fit(X, Y == 0, fields=F)
    assert b.decision_function(X).shape == (X.shape[0],)


def test_model_file(tmp_path):
    m = cfm.FFMClassifier(n_factors=3, n_epochs=2, random_state=0).fit(X, LABELS[Y], fields=F)
    m.save(tmp_path / "m.cfm")
    header, arrays = read_model_file(tmp_path / "m.cfm")
    assert header["kind"] == "ffm_softmax" and header["task"] == "multiclass"
    assert header["n_classes"] == 4 and header["n_fields"] == 3
    assert arrays["V"].shape == (X.shape[1], 3, 4, 5) and arrays["lin"].shape == (24, 4, 2)
    for scoring_only in (False, True):
        got = cfm.load(tmp_path / "m.cfm", scoring_only=scoring_only)
        assert type(got) is cfm.FFMClassifier and list(got.classes_) == list(LABELS)
        np.testing.assert_array_equal(got.predict_proba(X), m.predict_proba(X))
    # a header that contradicts itself is refused, naming the problem
    for change, msg in [({"n_classes": 3}, "does not fit kind"),
                        ({"kind": "ffm"}, "does not fit kind"),
                        ({"dtype": "float16"}, "dtype"),
                        ({"n_fields": 2}, "shape")]:
        bad = dict(header, **change)
        bad.pop("arrays")
        bad.pop("format")
        write_model_file(tmp_path / "bad.cfm", bad, arrays)
        with pytest.raises(cfm.ModelFileError, match=msg):
            cfm.load(tmp_path / "bad.cfm")


def test_entry_fields_equal_column_fields():
    kw = dict(n_factors=3, n_epochs=2, random_state=0, n_jobs=1)
    a = cfm.FFMClassifier(**kw).fit(X, Y, fields=F)
    ef = cfm.EntryFields(F[X.indices].astype(np.int32))
    b = cfm.FFMClassifier(**kw).fit(X, Y, fields=ef)
    np.testing.assert_array_equal(a.decision_function(X), b.decision_function(X, fields=ef))


def test_train_and_score_a_file(tmp_path):
    y = Y + 1
    cfm.dump_libffm(X[:1200], y[:1200], F, tmp_path / "tr.ffm")
    cfm.dump_libffm(X[1200:], y[1200:], F, tmp_path / "te.ffm")
    m = cfm.FFMClassifier(n_factors=4, n_epochs=3, random_state=0, n_jobs=1).fit(
        str(tmp_path / "tr.ffm"), block_rows=300)
    assert list(m.classes_) == [1.0, 2.0, 3.0, 4.0]
    stats = m.predict_file(tmp_path / "te.ffm", tmp_path / "p.txt", evaluate=True,
                           precision=17)
    p = np.loadtxt(tmp_path / "p.txt")
    Xte, _, _ = cfm.load_libffm(tmp_path / "te.ffm", n_features=m.n_features_in_)
    np.testing.assert_allclose(p, m.predict_proba(Xte), rtol=1e-15, atol=1e-300)
    assert stats["metrics"]["accuracy"] == pytest.approx(m.score(Xte, y[1200:]))


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "cfm", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_multiclass_ffm(tmp_path):
    y = Y + 1
    cfm.dump_libffm(X[:1200], y[:1200], F, tmp_path / "tr.ffm")
    cfm.dump_libffm(X[1200:], y[1200:], F, tmp_path / "te.ffm")
    r = _cli("train", tmp_path / "tr.ffm", "-o", tmp_path / "m.cfm", "--model", "ffm",
             "--task", "multiclass", "-e", "3", "--seed", "1", "--threads", "1",
             "--validate", tmp_path / "te.ffm", "--metric", "accuracy")
    assert r.returncode == 0, r.stderr
    m = cfm.load(tmp_path / "m.cfm")
    assert type(m) is cfm.FFMClassifier and len(m.classes_) == 4
    r = _cli("predict", tmp_path / "m.cfm", tmp_path / "te.ffm", "-o", tmp_path / "p.txt")
    assert r.returncode == 0, r.stderr
    p = np.loadtxt(tmp_path / "p.txt")
    Xte, _, _ = cfm.load_libffm(tmp_path / "te.ffm", n_features=m.n_features_in_)
    np.testing.assert_allclose(p, m.predict_proba(Xte), atol=1e-8)
    r = _cli("predict", tmp_path / "m.cfm", tmp_path / "te.ffm", "--labels", "-q")
    assert r.returncode == 0 and r.stdout.split() == [str(1 + i) for i in p.argmax(axis=1)]


def test_hogwild_threads_train_close_to_one_thread():
    Xb, yb, Fb = _data(n=30_000, n_classes=3, seed=2)
    kw = dict(n_factors=4, n_epochs=2, learning_rate=0.1, normalize=True, random_state=0)
    one = cfm.FFMClassifier(n_jobs=1, **kw).fit(Xb[:25_000], yb[:25_000], fields=Fb)
    two = cfm.FFMClassifier(n_jobs=2, **kw).fit(Xb[:25_000], yb[:25_000], fields=Fb)
    a1, a2 = one.score(Xb[25_000:], yb[25_000:]), two.score(Xb[25_000:], yb[25_000:])
    assert a1 > 0.5 and abs(a1 - a2) < 0.03
    assert two.history_[-1]["train_loss"] == pytest.approx(one.history_[-1]["train_loss"],
                                                           rel=0.05)


@pytest.mark.parametrize("cls", [cfm.FMClassifier, cfm.FFMClassifier])
def test_predict_csv_multiclass(tmp_path, cls):
    """Raw rows in (an encoder): one line of C probabilities a row, metrics
    accuracy and multi-class log loss."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.choice(list("xyz"), 600), "b": rng.choice(list("pqrs"), 600)})
    df["label"] = (df.a.map({"x": 0, "y": 1, "z": 2}) + (df.b == "p")) % 3
    df.to_csv(tmp_path / "t.csv", index=False)
    m = cls(n_epochs=3, random_state=0, n_jobs=1, encoder=cfm.FieldEncoder()).fit(
        df[["a", "b"]], df["label"])
    stats = m.predict_csv(tmp_path / "t.csv", tmp_path / "p.txt", label="label", evaluate=True)
    p = m.predict_proba(df[["a", "b"]])
    np.testing.assert_allclose(np.loadtxt(tmp_path / "p.txt"), p, atol=1e-8)
    assert set(stats["metrics"]) == {"accuracy", "logloss"}
    assert stats["metrics"]["accuracy"] == pytest.approx(m.score(df[["a", "b"]], df["label"]))


def test_entry_fields_with_collisions(tmp_path):
    """Per-entry fields that put a feature under two fields (libffm's
    definition): the model needs them at scoring, keeps them in its file, and
    a libffm file scores with them (cfm predict)."""
    ef = F[X.indices].astype(np.int32)
    col0 = X.indices == 0
    ef[np.flatnonzero(col0)[::2]] = 2  # feature 0 also under field 2
    ef = cfm.EntryFields(ef)
    m = cfm.FFMClassifier(n_factors=3, n_epochs=2, random_state=0, n_jobs=1).fit(
        X, Y, fields=ef)
    assert m._state.entry
    with pytest.raises(ValueError, match="per-entry fields"):
        m.predict_proba(X)
    p = m.predict_proba(X, fields=ef)
    m.save(tmp_path / "m.cfm")
    got = cfm.load(tmp_path / "m.cfm")
    np.testing.assert_array_equal(got.predict_proba(X, fields=ef), p)
    # the same rows as a libffm file, each entry with its own field
    lines = []
    for i in range(X.shape[0]):
        s, e = X.indptr[i], X.indptr[i + 1]
        lines.append(f"{Y[i]} " + " ".join(f"{ef[a]}:{X.indices[a]}:{X.data[a]:g}"
                                           for a in range(s, e)))
    (tmp_path / "t.ffm").write_text("\n".join(lines) + "\n")
    r = _cli("predict", tmp_path / "m.cfm", tmp_path / "t.ffm", "-o", tmp_path / "p.txt")
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.loadtxt(tmp_path / "p.txt"), p, atol=1e-8)
