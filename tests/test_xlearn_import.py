"""cfm.load_xlearn: xLearn TXT models (LR, FM, FFM) as fitted cfm estimators.

Two parts:
* xLearn-free tests on hand-written TXT models, checked against a plain
  NumPy transcription of xLearn's scoring (src/score/{linear,fm,ffm}_score.cc),
  and the error paths;
* tests that train tiny xLearn models in tmp_path, have xLearn write its TXT
  model and predictions, and compare (skipped when xLearn is not installed).
"""
import os

import numpy as np
import pytest
import scipy.sparse as sp

import cfm
from cfm.xlearn import XLearnFMClassifier, XLearnFMRegressor

# ---------------------------------------------------------------- helpers


def xlearn_reference(kind, bias, w, V, X, fields, norm):
    """xLearn's score of each row of CSR X (column = feature id), per its source:
    LR never normalises; FM scales the linear term by 1/||x|| and the factor
    sums by 1/||x||^2; FFM scales x_i x_j by 1/||x||^2."""
    out = np.empty(X.shape[0])
    for r in range(X.shape[0]):
        lo, hi = X.indptr[r], X.indptr[r + 1]
        idx, val = X.indices[lo:hi], X.data[lo:hi].astype(np.float64)
        n2 = float(val @ val) if norm and val.size else 1.0
        if kind == "lr":
            out[r] = bias + w[idx] @ val
            continue
        s = bias + (w[idx] @ val) / np.sqrt(n2)
        pair = 0.0
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                if kind == "fm":
                    dot = V[idx[a]] @ V[idx[b]]
                else:
                    dot = V[idx[a], fields[idx[b]]] @ V[idx[b], fields[idx[a]]]
                pair += dot * val[a] * val[b]
        out[r] = s + pair / (n2 * n2 if kind == "fm" else n2)
    return out


def write_txt(path, bias, w, V=None):
    lines = [f"bias: {float(bias)!r}"]
    lines += [f"i_{j}: {float(x)!r}" for j, x in enumerate(w)]
    if V is not None and V.ndim == 2:
        lines += [f"v_{j}: " + " ".join(repr(float(x)) for x in V[j]) for j in range(len(V))]
    elif V is not None:
        lines += [f"v_{j}_{f}: " + " ".join(repr(float(x)) for x in V[j, f])
                  for j in range(V.shape[0]) for f in range(V.shape[1])]
    path.write_text("\n".join(lines) + "\n")
    return path


def random_rows(n_rows, n_features, rng, nnz=4):
    rows, cols, vals = [], [], []
    for i in range(n_rows):
        c = rng.choice(n_features, size=nnz, replace=False)
        rows += [i] * nnz
        cols += list(c)
        vals += list(rng.uniform(0.2, 2.0, nnz))
    X = sp.csr_matrix((np.array(vals), (rows, cols)), shape=(n_rows, n_features))
    X.sort_indices()
    return X


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# ------------------------------------------------------- hand-written models


@pytest.mark.parametrize("kind", ["lr", "fm", "ffm"])
@pytest.mark.parametrize("norm", [True, False])
@pytest.mark.parametrize("task", ["binary", "reg"])
def test_handwritten_model_matches_xlearn_formula(tmp_path, kind, norm, task):
    rng = np.random.default_rng(3)
    n, k, nf = 7, 3, 3
    bias, w = 0.25, rng.normal(0, 0.5, n)
    V = {"lr": None, "fm": rng.normal(0, 0.5, (n, k)),
         "ffm": rng.normal(0, 0.5, (n, nf, k))}[kind]
    fields = rng.integers(0, nf, n) if kind == "ffm" else None
    path = write_txt(tmp_path / "m.txt", bias, w, V)
    model = cfm.load_xlearn(path, task, norm=norm, fields=fields, dtype="float64")
    X = random_rows(30, n, rng)
    ref = xlearn_reference(kind, bias, w, V, X, fields, norm)
    if task == "binary":
        np.testing.assert_allclose(model.decision_function(X), ref, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(model.predict_proba(X)[:, 1], sigmoid(ref), atol=1e-10)
        np.testing.assert_array_equal(model.predict(X), (ref > 0).astype(int))
    else:
        np.testing.assert_allclose(model.predict(X), ref, rtol=1e-10, atol=1e-10)
    assert model.n_features_in_ == n
    expected = {
        ("lr", "binary"): cfm.FMClassifier, ("lr", "reg"): cfm.FMRegressor,
        ("fm", "binary"): XLearnFMClassifier if norm else cfm.FMClassifier,
        ("fm", "reg"): XLearnFMRegressor if norm else cfm.FMRegressor,
        ("ffm", "binary"): cfm.FFMClassifier, ("ffm", "reg"): cfm.FFMRegressor,
    }[kind, task]
    assert type(model) is expected
    # save / cfm.load keep the exact scores (also xLearn's FM normalisation)
    model.save(tmp_path / "m.cfm")
    back = cfm.load(tmp_path / "m.cfm")
    assert type(back) is type(model)
    score = back.decision_function if task == "binary" else back.predict
    np.testing.assert_allclose(score(X), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["lr", "fm", "ffm"])
def test_fast_parser_equals_line_parser(tmp_path, kind):
    from cfm._xlearn_txt import _parse_fast, _parse_lines

    rng = np.random.default_rng(5)
    n, nf, k = 50, 4, 3
    V = {"lr": None, "fm": rng.normal(size=(n, k)), "ffm": rng.normal(size=(n, nf, k))}[kind]
    path = write_txt(tmp_path / "m.txt", -0.25, rng.normal(size=n), V)
    raw = path.read_bytes()
    fast = _parse_fast(raw)
    assert fast is not None  # xLearn's own order: the vectorised path
    slow = _parse_lines(raw.decode(), str(path))
    assert fast[0] == slow[0] and fast[3] == slow[3] == kind
    np.testing.assert_array_equal(fast[1], slow[1])
    if V is not None:
        np.testing.assert_array_equal(fast[2], slow[2])
        np.testing.assert_array_equal(fast[2], V)
    # another line order: the line parser reads it all the same
    lines = raw.decode().splitlines()
    shuffled = [lines[0]] + list(rng.permutation(lines[1:]))
    other = tmp_path / "shuffled.txt"
    other.write_text("\n".join(shuffled) + "\n")
    assert _parse_fast(other.read_bytes()) is None
    m1, m2 = cfm.load_xlearn(path, fields=[0] * n if kind == "ffm" else None), \
        cfm.load_xlearn(other, fields=[0] * n if kind == "ffm" else None)
    X = random_rows(20, n, rng)
    np.testing.assert_array_equal(m1.decision_function(X), m2.decision_function(X))


def test_parameters_land_in_the_estimator(tmp_path):
    path = tmp_path / "fm.txt"
    path.write_text("bias: -0.5\ni_0: 1.5\ni_1: -2\nv_0: 0.1 0.2\nv_1: 0.3 0.4\n")
    m = cfm.load_xlearn(path, "reg", norm=False)
    assert m.w0_ == -0.5
    np.testing.assert_allclose(m.w_, [1.5, -2.0])
    np.testing.assert_allclose(m.V_, [[0.1, 0.2], [0.3, 0.4]], rtol=1e-6)
    assert m.V_.shape == (2, 2)
    # row [1, 1]: -0.5 + 1.5 - 2 + (0.03 + 0.08)
    np.testing.assert_allclose(m.predict(sp.csr_matrix([[1.0, 1.0]])), [-0.89], atol=1e-6)


@pytest.mark.parametrize("kind", ["lr", "fm", "ffm"])
def test_empty_rows_score_the_bias(tmp_path, kind):
    rng = np.random.default_rng(4)
    V = {"lr": None, "fm": rng.normal(size=(3, 2)), "ffm": rng.normal(size=(3, 2, 2))}[kind]
    path = write_txt(tmp_path / "m.txt", 0.5, rng.normal(size=3), V)
    m = cfm.load_xlearn(path, "reg", fields=[0, 1, 1] if kind == "ffm" else None)
    X = sp.csr_matrix(np.array([[0, 0, 0], [1.0, 2.0, 0], [0, 0, 0], [0, 0, 3.0], [0, 0, 0]]))
    got = m.predict(X)
    ref = xlearn_reference(kind, 0.5, m.w_.astype(np.float64),
                           None if V is None else np.asarray(m.V_, dtype=np.float64), X,
                           [0, 1, 1], True)
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    np.testing.assert_allclose(got[[0, 2, 4]], 0.5)


def test_lr_ignores_norm_and_has_no_factors(tmp_path):
    path = write_txt(tmp_path / "lr.txt", 0.1, np.array([1.0, 2.0, 3.0]))
    X = sp.csr_matrix([[1.0, 2.0, 0.0], [0.0, 0.0, 4.0]])
    a = cfm.load_xlearn(path, norm=True).decision_function(X)
    b = cfm.load_xlearn(path, norm=False).decision_function(X)
    np.testing.assert_allclose(a, [5.1, 12.1], atol=1e-6)
    np.testing.assert_allclose(b, a)
    assert cfm.load_xlearn(path).V_.shape == (3, 0)


def test_n_features_pads_with_zero_parameters_counted_in_the_norm(tmp_path):
    # xLearn skips feature ids beyond its model when scoring but counts their
    # values in the row norm: zero-padded columns do the same.
    rng = np.random.default_rng(0)
    w, V = rng.normal(size=4), rng.normal(size=(4, 2))
    path = write_txt(tmp_path / "fm.txt", 0.3, w, V)
    m = cfm.load_xlearn(path, "reg", n_features=6)
    assert m.n_features_in_ == 6
    X = sp.csr_matrix([[1.0, 0.5, 0, 0, 2.0, 0], [0, 1.0, 1.0, 1.0, 0, 3.0]])
    wp = np.r_[w, 0, 0]
    Vp = np.r_[V, np.zeros((2, 2))]
    np.testing.assert_allclose(m.predict(X), xlearn_reference("fm", 0.3, wp, Vp, X, None, True),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="smaller than the 4 features"):
        cfm.load_xlearn(path, n_features=3)


def test_ffm_fields_from_a_libffm_file(tmp_path):
    rng = np.random.default_rng(1)
    n, nf, k = 5, 2, 2
    V = rng.normal(size=(n, nf, k))
    path = write_txt(tmp_path / "ffm.txt", 0.0, rng.normal(size=n), V)
    data = tmp_path / "d.ffm"
    # feature 4 never occurs: field 0
    data.write_text("1 0:0:1 1:1:0.5 0:2:1\n0 1:3:2\n")
    m = cfm.load_xlearn(path, fields=data)
    np.testing.assert_array_equal(m.fields_, [0, 1, 0, 1, 0])
    assert m.n_fields_ == nf
    m2 = cfm.load_xlearn(path, fields=[0, 1, 0, 1, 0])
    # several files: the first one that has a feature decides its field
    more = tmp_path / "e.ffm"
    more.write_text("1 0:0:1 0:1:1 1:4:1\n")
    m3 = cfm.load_xlearn(path, fields=[data, more])
    np.testing.assert_array_equal(m3.fields_, [0, 1, 0, 1, 1])
    X = random_rows(10, n, rng, nnz=3)
    np.testing.assert_allclose(m.decision_function(X), m2.decision_function(X))


def test_ffm_fields_errors(tmp_path):
    V = np.zeros((3, 2, 2))
    path = write_txt(tmp_path / "ffm.txt", 0.0, np.zeros(3), V)
    # no fields: xLearn's per-entry fields, so scoring needs them
    m = cfm.load_xlearn(path)
    with pytest.raises(ValueError, match="per-entry fields"):
        m.predict(np.eye(3))
    assert m.decision_function(sp.csr_matrix(np.eye(3)), fields=[0, 1, 1]).shape == (3,)
    with pytest.raises(ValueError, match="one entry per feature"):
        cfm.load_xlearn(path, fields=[0, 1])
    with pytest.raises(ValueError, match="has field 2 but the xLearn model has 2 fields"):
        cfm.load_xlearn(path, fields=[0, 1, 2])
    data = tmp_path / "d.ffm"
    data.write_text("1 0:0:1 1:5:1\n")
    with pytest.raises(ValueError, match="feature 5 but the model has 3 features"):
        cfm.load_xlearn(path, fields=data)
    lr = write_txt(tmp_path / "lr.txt", 0.0, np.zeros(3))
    with pytest.raises(ValueError, match="fields= is for FFM"):
        cfm.load_xlearn(lr, fields=[0, 0, 0])


def test_imported_models_keep_training_except_xlearn_normalised_fm(tmp_path):
    rng = np.random.default_rng(2)
    X = random_rows(200, 6, rng)
    y = (rng.random(200) < 0.5).astype(int)
    path = write_txt(tmp_path / "fm.txt", 0.0, rng.normal(0, 0.1, 6), rng.normal(0, 0.1, (6, 2)))
    m = cfm.load_xlearn(path, norm=False)
    m.set_params(warm_start=True, n_epochs=1, random_state=0)
    m.fit(X, y)
    assert m.n_epochs_ == 1
    xm = cfm.load_xlearn(path, norm=True)
    with pytest.raises(ValueError, match="cannot be trained"):
        xm.fit(X, y)
    with pytest.raises(ValueError, match="cannot be trained"):
        xm.partial_fit(X, y)


def test_classes_argument(tmp_path):
    path = write_txt(tmp_path / "lr.txt", 0.0, np.array([1.0, -1.0]))
    m = cfm.load_xlearn(path, classes=("no", "yes"))
    np.testing.assert_array_equal(m.predict(sp.csr_matrix([[1.0, 0], [0, 1.0]])), ["yes", "no"])
    with pytest.raises(ValueError, match="two distinct labels"):
        cfm.load_xlearn(path, classes=(1, 1))


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("content, match", [
    ("bias: 0.1\ni_0: 1\ni_1 2\n", r"m\.txt:3: malformed line"),
    ("bias: 0.1\ni_0: 1\ni_1: x\n", r"m\.txt:3: malformed number"),
    ("bias: 0.1\ni_0: 1 2\n", r"m\.txt:2: 'i_0' needs one value"),
    ("bias: 0.1\ni_0: 1\nv_0: 1 2\nv_1: 1\n", r"m\.txt:4: 'v_1' has 1 values, earlier"),
    ("bias: 0.1\ni_0: 1\ni_0: 2\n", r"m\.txt:3: duplicate line"),
    ("bias: 0.1\nbias: 0.2\n", r"m\.txt:2: duplicate 'bias'"),
    ("bias: 0.1\ni_0: nan\n", r"m\.txt:2: non-finite"),
    ("bias: 0.1\ni_0: 1\nv_0: 1\nv_0_0: 1\n", r"m\.txt:4: FFM vector 'v_0_0' in an FM model"),
    ("bias: 0.1\ni_0: 1\nv_0_0: 1\nv_0: 1\n", r"m\.txt:4: FM vector 'v_0' in an FFM model"),
    ("bias: 0.1\ni_0: 1\ni_2: 1\n", r"incomplete model, no line for 'i_1'"),
    ("bias: 0.1\ni_0: 1\ni_1: 1\nv_0: 1\n", r"factor vectors do not match"),
    ("bias: 0.1\ni_0: 1\nv_0_0: 1\nv_0_2: 1\n", r"incomplete FFM model .*'v_0_1'"),
    ("bias: 0.1\n", r"no linear weights"),
    ("i_0: 1\n", r"not an xLearn TXT model .*first line must be 'bias"),
    ("label,feature\n1,2\n", r"not an xLearn TXT model"),
    ("", r"empty"),
])
def test_malformed_files(tmp_path, content, match):
    path = tmp_path / "m.txt"
    path.write_text(content)
    with pytest.raises(cfm.ModelFileError, match=match):
        cfm.load_xlearn(path)


def test_not_an_xlearn_file(tmp_path):
    bin_path = tmp_path / "model.bin"
    bin_path.write_bytes(b"\x00\x01\x02\xff\xfe" * 20)
    with pytest.raises(cfm.ModelFileError, match="binary content.*setTXTModel"):
        cfm.load_xlearn(bin_path)
    m = cfm.load_xlearn(write_txt(tmp_path / "lr.txt", 0.0, np.ones(2)))
    m.save(tmp_path / "m.cfm")
    with pytest.raises(cfm.ModelFileError, match="cfm model file.*cfm.load"):
        cfm.load_xlearn(tmp_path / "m.cfm")
    with pytest.raises(FileNotFoundError, match="not found"):
        cfm.load_xlearn(tmp_path / "missing.txt")
    with pytest.raises(cfm.ModelFileError, match="directory"):
        cfm.load_xlearn(tmp_path)


def test_is_xlearn_txt(tmp_path):
    from cfm.xlearn import is_xlearn_txt

    txt = write_txt(tmp_path / "lr.txt", 0.5, np.ones(2))
    assert is_xlearn_txt(txt)
    cfm.load_xlearn(txt).save(tmp_path / "m.cfm")
    assert not is_xlearn_txt(tmp_path / "m.cfm")
    (tmp_path / "d.svm").write_text("1 0:1\n")
    assert not is_xlearn_txt(tmp_path / "d.svm")
    assert not is_xlearn_txt(tmp_path / "missing")


def test_wrong_kind(tmp_path):
    fm = write_txt(tmp_path / "fm.txt", 0.0, np.ones(2), np.ones((2, 2)))
    with pytest.raises(cfm.ModelFileError, match="xLearn FM model, not FFM"):
        cfm.load_xlearn(fm, kind="ffm")
    with pytest.raises(cfm.ModelFileError, match="xLearn FM model, not LR"):
        cfm.load_xlearn(fm, kind="lr")
    assert cfm.load_xlearn(fm, kind="fm").V_.shape == (2, 2)


@pytest.mark.parametrize("kwargs, match", [
    ({"task": "multiclass"}, "task must be"),
    ({"norm": 1}, "norm must be"),
    ({"kind": "gbdt"}, "kind must be"),
    ({"dtype": "int8"}, "dtype must be"),
    ({"n_features": 2.5}, "n_features must be an integer"),
])
def test_bad_arguments(tmp_path, kwargs, match):
    path = write_txt(tmp_path / "lr.txt", 0.0, np.ones(2))
    with pytest.raises(ValueError, match=match):
        cfm.load_xlearn(path, **kwargs)


# ------------------------------------------------- against xLearn itself


def _xlearn():
    os.environ.setdefault("USER", "root")  # xLearn aborts without $USER
    return pytest.importorskip("xlearn")


def _write_data(path, kind, rng, n_rows=150, n_features=12, n_fields=3, nnz=5):
    with open(path, "w") as f:
        for _ in range(n_rows):
            idx = np.sort(rng.choice(n_features, size=nnz, replace=False))
            vals = rng.uniform(0.2, 2.0, nnz)
            y = int(rng.random() < 0.5)
            if kind == "ffm":
                toks = [f"{j % n_fields}:{j}:{v:.4f}" for j, v in zip(idx, vals)]
            else:
                toks = [f"{j}:{v:.4f}" for j, v in zip(idx, vals)]
            f.write(f"{y} " + " ".join(toks) + "\n")


@pytest.mark.parametrize("kind", ["lr", "fm", "ffm"])
@pytest.mark.parametrize("norm", [True, False])
@pytest.mark.parametrize("task", ["binary", "reg"])
def test_matches_xlearn_predictions(tmp_path, kind, norm, task):
    xl = _xlearn()
    rng = np.random.default_rng({"lr": 0, "fm": 1, "ffm": 2}[kind])
    train, test = tmp_path / f"train.{kind}", tmp_path / f"test.{kind}"
    _write_data(train, kind, rng)
    _write_data(test, kind, rng, n_rows=60)
    create = {"lr": xl.create_linear, "fm": xl.create_fm, "ffm": xl.create_ffm}[kind]
    model = create()
    model.setTrain(str(train))
    model.setTXTModel(str(tmp_path / "model.txt"))
    model.setQuiet()
    if not norm:
        model.disableNorm()
    model.fit({"task": task, "lr": 0.2, "k": 4, "epoch": 3, "metric": "none",
               "nthread": 1}, str(tmp_path / "model.bin"))
    model.setTest(str(test))
    if task == "binary":
        model.setSigmoid()
    model.predict(str(tmp_path / "model.bin"), str(tmp_path / "pred.txt"))
    expected = np.loadtxt(tmp_path / "pred.txt")
    from cfm._xlearn_txt import _parse_fast
    assert _parse_fast((tmp_path / "model.txt").read_bytes()) is not None

    if kind == "ffm":
        X, _, _ = cfm.load_libffm(test, n_features=12)
        m = cfm.load_xlearn(tmp_path / "model.txt", task, norm=norm, fields=train,
                            n_features=12)
    else:
        X, _ = cfm.load_libsvm(test, zero_based=True, n_features=12)
        m = cfm.load_xlearn(tmp_path / "model.txt", task, norm=norm, n_features=12)
    got = m.predict_proba(X)[:, 1] if task == "binary" else m.predict(X)
    # xLearn prints parameters and predictions with 6 significant digits
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    m.save(tmp_path / "m.cfm")
    back = cfm.load(tmp_path / "m.cfm")
    again = back.predict_proba(X)[:, 1] if task == "binary" else back.predict(X)
    np.testing.assert_array_equal(again, got)


# ------------------------------------------------------------ via the CLI
@pytest.mark.parametrize("kind", ["fm", "ffm"])
@pytest.mark.parametrize("norm", [True, False])
def test_cli_predict_takes_xlearn_txt_models(tmp_path, kind, norm):
    from cfm import cli

    rng = np.random.default_rng(11)
    n, k, nf = 12, 3, 3
    fields = np.arange(n) % nf
    V = rng.normal(0, 0.5, (n, k)) if kind == "fm" else rng.normal(0, 0.5, (n, nf, k))
    model = write_txt(tmp_path / "m.txt", 0.3, rng.normal(size=n), V)
    X = random_rows(50, n, rng)
    y = rng.normal(size=50)
    data = tmp_path / ("d.ffm" if kind == "ffm" else "d.svm")
    if kind == "ffm":
        cfm.dump_libffm(X, y, fields, data)
    else:
        cfm.dump_libsvm(X, y, data, zero_based=True)
    out = tmp_path / "p.txt"
    argv = ["predict", str(model), str(data), "-o", str(out), "-q", "--xlearn-task", "reg"]
    if not norm:
        argv.append("--xlearn-no-norm")
    if kind == "ffm":
        argv += ["--xlearn-fields", str(data)]
    assert cli.main(argv) == 0
    want = cfm.load_xlearn(model, task="reg", norm=norm,
                           fields=fields if kind == "ffm" else None).predict(X)
    np.testing.assert_allclose(np.loadtxt(out), want, rtol=1e-6, atol=1e-7)


# ------------------------------------- per-entry fields (issue 16 item 1)
CRITEO_DEMO = "/work/shared/data/xlearn/criteo_ctr"


def _collision_file(path, rng, n_rows, n_fields=6, ids=60, nnz=8):
    """libffm lines whose feature ids occur under several fields (also twice in a line)."""
    with open(path, "w") as f:
        for _ in range(n_rows):
            fl = rng.integers(0, n_fields, nnz)
            js = rng.integers(0, ids, nnz)
            js[-1] = js[0]
            fl[-1] = (fl[0] + 1) % n_fields
            vals = rng.uniform(0.2, 1.5, nnz)
            toks = " ".join(f"{a}:{b}:{v:.4f}" for a, b, v in zip(fl, js, vals))
            f.write(f"{int(rng.random() < 0.4)} {toks}\n")


def _xlearn_ffm(xl, train, test, tmp_path):
    model = xl.create_ffm()
    model.setTrain(str(train))
    model.setTXTModel(str(tmp_path / "model.txt"))
    model.setQuiet()
    model.fit({"task": "binary", "lr": 0.2, "lambda": 0.002, "k": 4, "epoch": 5,
               "metric": "none", "nthread": 1}, str(tmp_path / "model.bin"))
    model.setTest(str(test))
    model.setSigmoid()
    model.predict(str(tmp_path / "model.bin"), str(tmp_path / "pred.txt"))
    return np.loadtxt(tmp_path / "pred.txt")


@pytest.mark.parametrize("data", ["criteo_demo", "collisions"])
def test_ffm_per_entry_fields_match_xlearn(tmp_path, data):
    """xLearn uses each entry's field: an imported FFM (fields=None) reproduces
    its predictions within 1e-5 on hashed data with cross-field collisions."""
    xl = _xlearn()
    if data == "criteo_demo":
        train = os.path.join(CRITEO_DEMO, "small_train.txt")
        test = os.path.join(CRITEO_DEMO, "small_test.txt")
        if not (os.path.exists(train) and os.path.exists(test)):
            pytest.skip("xLearn's Criteo demo files are not in /work/shared/data")
    else:
        rng = np.random.default_rng(16)
        train, test = tmp_path / "train.ffm", tmp_path / "test.ffm"
        _collision_file(train, rng, 300)
        _collision_file(test, rng, 120)
    expected = _xlearn_ffm(xl, train, test, tmp_path)
    n = max(cfm.scan_file(train)["n_features"], cfm.scan_file(test)["n_features"])
    X, _, F = cfm.load_libffm(test, entry_fields=True, n_features=n)
    _, _, col = cfm.load_libffm(test, n_features=n)
    assert np.count_nonzero(np.maximum(col, 0)[X.indices] != F) > 0  # collisions present
    m = cfm.load_xlearn(tmp_path / "model.txt", n_features=n)
    np.testing.assert_allclose(m.predict_proba(X, fields=F)[:, 1], expected, rtol=0, atol=1e-5)
    m.predict_file(test, tmp_path / "cfm.txt")
    np.testing.assert_allclose(np.loadtxt(tmp_path / "cfm.txt"), expected, rtol=0, atol=1e-5)
    m.save(tmp_path / "m.cfm")
    back = cfm.load(tmp_path / "m.cfm")
    np.testing.assert_array_equal(back.predict_proba(X, fields=F), m.predict_proba(X, fields=F))
