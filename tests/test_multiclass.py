"""Multiclass FMClassifier (a softmax FM) and ``class_weight`` of the classifiers:
what is specific to them beyond tests/test_contract.py (which runs the
multiclass cases through every estimator promise) and the kernel tests
(tests/test_multiclass_kernel.py)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

import cfm
from cfm._model_file import read_model_file, write_model_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _data(n=1500, n_features=30, n_classes=4, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(n, n_features, density=0.2, random_state=seed, format="csr")
    X.data = np.round(X.data * 8 + 1) / 8
    s = np.asarray(X @ rng.normal(size=(n_features, n_classes))) + 0.3 * rng.normal(
        size=(n, n_classes))
    return X, s.argmax(axis=1)


X, Y = _data()
LABELS = np.array(["ant", "bee", "cat", "dog"])


def test_labels_probabilities_and_metrics():
    y = LABELS[Y]
    m = cfm.FMClassifier(n_factors=4, n_epochs=8, random_state=0, n_jobs=1,
                         eval_metric="accuracy").fit(X[:1200], y[:1200],
                                                     eval_set=(X[1200:], y[1200:]))
    assert list(m.classes_) == list(LABELS)
    p = m.predict_proba(X[1200:])
    assert p.shape == (300, 4) and np.allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(np.exp(m.predict_log_proba(X[1200:])), p, rtol=1e-12)
    pred = m.predict(X[1200:])
    assert pred.dtype == y.dtype and np.array_equal(pred, LABELS[p.argmax(axis=1)])
    acc = np.mean(pred == y[1200:])
    assert acc > 0.6  # 4 classes: chance is about 0.25
    # history: the train loss is the multi-class log loss, eval_accuracy its metric
    assert m.history_[-1]["eval_accuracy"] == pytest.approx(
        max(h["eval_accuracy"] for h in m.history_)) or m.best_epoch_ < len(m.history_)
    assert m.score(X[1200:], y[1200:]) == pytest.approx(acc)
    # the log loss of the returned model, from its probabilities
    m2 = cfm.FMClassifier(n_factors=4, n_epochs=3, random_state=0, n_jobs=1).fit(
        X[:1200], y[:1200], eval_set=(X[1200:], y[1200:]))
    want = -np.mean(np.log(m2.predict_proba(X[1200:])[np.arange(300), Y[1200:]]))
    assert m2.history_[-1]["eval_logloss"] == pytest.approx(want, rel=1e-9)


def test_early_stopping_restores_the_best_epoch():
    m = cfm.FMClassifier(n_factors=4, n_epochs=40, learning_rate=0.5, random_state=0,
                         n_jobs=1, n_iter_no_change=2, tol=0.0).fit(
        X[:1200], Y[:1200], eval_set=(X[1200:], Y[1200:]))
    losses = [h["eval_logloss"] for h in m.history_]
    assert len(losses) < 40 and m.best_epoch_ == int(np.argmin(losses)) + 1
    got = cfm._metrics.logloss(Y[1200:].astype(float), m.decision_function(X[1200:]))
    assert got == pytest.approx(min(losses), rel=1e-12)


def test_auto_tune_races_multiclass_on_a_stratified_holdout():
    Xb, yb = _data(n=6000, n_classes=3, seed=1)
    m = cfm.FMClassifier(n_factors=4, random_state=0, n_jobs=1).fit(Xb, yb)
    assert m.best_params_["auto"] == "race" and m.race_["metric"] == "logloss"
    # too few rows of a class for the validation split: the fixed defaults
    m = cfm.FMClassifier(n_factors=4, random_state=0, n_jobs=1).fit(X, Y)
    assert m.best_params_["auto"].startswith("skipped")


def test_errors_are_clear():
    with pytest.raises(ValueError, match="eval_metric='auc' is binary"):
        cfm.FMClassifier(eval_metric="auc").fit(X, Y)
    with pytest.raises(ValueError, match="solver='mcmc' trains binary models only"):
        cfm.FMClassifier(solver="mcmc").fit(X, Y)
    with pytest.raises(ValueError, match="binary.*4 classes"):
        cfm.DeepFMClassifier(n_epochs=1).fit(X, Y, fields=np.arange(X.shape[1]) % 3)
    with pytest.raises(ValueError, match="continuous"):
        cfm.FMClassifier(n_epochs=1).fit(X, Y + 0.5)
    m = cfm.FMClassifier(n_epochs=1).fit(X, Y)
    with pytest.raises(ValueError, match="label 7 not in classes_"):
        m.partial_fit(X, np.where(np.arange(len(Y)) == 3, 7, Y))
    with pytest.raises(ValueError, match="AUC is a binary metric"):
        cfm._metrics.auc(Y, m.decision_function(X))
    with pytest.raises(ValueError, match="4-class .softmax. model is not supported"):
        m.to_torch()


def test_model_file_records_the_task(tmp_path):
    m = cfm.FMClassifier(n_factors=3, n_epochs=2, random_state=0).fit(X, LABELS[Y])
    m.save(tmp_path / "m.cfm")
    header, arrays = read_model_file(tmp_path / "m.cfm")
    assert header["kind"] == "fm_softmax" and header["task"] == "multiclass"
    assert header["n_classes"] == 4 and header["classes"]["values"] == list(LABELS)
    assert arrays["V"].shape == (X.shape[1], 4, 3) and arrays["w0_state"].shape == (4, 3)
    # a header that contradicts itself is refused, naming the problem
    for change, msg in [({"n_classes": 3}, "does not fit kind"),
                        ({"task": "binary"}, "binary model has 2 class labels"),
                        ({"kind": "fm"}, "does not fit kind"),
                        ({"classes": {"dtype": "<U3", "values": ["a", "a", "b", "c"]}},
                         "not unique")]:
        bad = dict(header, **change)
        bad.pop("arrays")
        bad.pop("format")
        write_model_file(tmp_path / "bad.cfm", bad, arrays)
        with pytest.raises(cfm.ModelFileError, match=msg):
            cfm.load(tmp_path / "bad.cfm")


def test_train_and_score_a_file(tmp_path):
    y = Y + 1  # libsvm labels 1..4
    cfm.dump_libsvm(X[:1200], y[:1200], tmp_path / "tr.svm")
    cfm.dump_libsvm(X[1200:], y[1200:], tmp_path / "te.svm")
    m = cfm.FMClassifier(n_factors=4, n_epochs=3, random_state=0, n_jobs=1).fit(
        str(tmp_path / "tr.svm"), block_rows=300)
    assert list(m.classes_) == [1.0, 2.0, 3.0, 4.0]
    stats = m.predict_file(tmp_path / "te.svm", tmp_path / "p.txt", evaluate=True,
                           precision=17)
    p = np.loadtxt(tmp_path / "p.txt")
    Xte, _ = cfm.load_libsvm(tmp_path / "te.svm", n_features=m.n_features_in_)
    np.testing.assert_allclose(p, m.predict_proba(Xte), rtol=1e-15, atol=1e-300)
    assert set(stats["metrics"]) == {"accuracy", "logloss"}
    assert stats["metrics"]["accuracy"] == pytest.approx(m.score(Xte, y[1200:]))
    m.predict_file(tmp_path / "te.svm", tmp_path / "l.txt", labels=True)
    want = [str(int(v)) for v in m.predict(Xte)]
    assert (tmp_path / "l.txt").read_text().split("\n")[:-1] == want
    with pytest.raises(ValueError, match="exclude each other"):
        m.predict_file(tmp_path / "te.svm", tmp_path / "l.txt", labels=True, raw=True)


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "cfm", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_multiclass(tmp_path):
    y = Y + 1
    cfm.dump_libsvm(X[:1200], y[:1200], tmp_path / "tr.svm", zero_based=True)
    cfm.dump_libsvm(X[1200:], y[1200:], tmp_path / "te.svm", zero_based=True)
    r = _cli("train", tmp_path / "tr.svm", "-o", tmp_path / "m.cfm", "--task", "multiclass",
             "-e", "3", "--seed", "1", "--threads", "1", "--validate", tmp_path / "te.svm",
             "--metric", "accuracy")
    assert r.returncode == 0, r.stderr
    assert "eval_accuracy" in r.stderr
    r = _cli("predict", tmp_path / "m.cfm", tmp_path / "te.svm", "-o", tmp_path / "p.txt",
             "--eval")
    assert r.returncode == 0, r.stderr and "accuracy" in r.stderr
    p = np.loadtxt(tmp_path / "p.txt")
    assert p.shape == (300, 4) and np.allclose(p.sum(axis=1), 1.0, atol=1e-6)
    r = _cli("predict", tmp_path / "m.cfm", tmp_path / "te.svm", "--labels", "-q")
    assert r.returncode == 0 and set(r.stdout.split()) <= {"1", "2", "3", "4"}
    assert r.stdout.split() == [str(1 + i) for i in p.argmax(axis=1)]
    r = _cli("train", tmp_path / "tr.svm", "-o", tmp_path / "x.cfm", "--task", "multiclass",
             "--metric", "auc")
    assert r.returncode == 2 and "does not apply to --task multiclass" in r.stderr
    r = _cli("train", tmp_path / "tr.svm", "-o", tmp_path / "x.cfm", "--task", "multiclass",
             "--solver", "als")
    assert r.returncode == 2 and "--task multiclass needs --solver" in r.stderr
    # class weights: the model is the Python API's with the same class_weight
    for cw, want in [("balanced", "balanced"), ("2:3,4:0.5", {2: 3.0, 4: 0.5})]:
        r = _cli("train", tmp_path / "tr.svm", "-o", tmp_path / "w.cfm", "--task",
                 "multiclass", "-e", "2", "--seed", "1", "--threads", "1", "--class-weight", cw,
                 "--no-shuffle", "-q")
        assert r.returncode == 0, r.stderr
        got = cfm.load(tmp_path / "w.cfm")
        py = cfm.FMClassifier(n_epochs=2, random_state=1, n_jobs=1, class_weight=want,
                              shuffle=False).fit(str(tmp_path / "tr.svm"))
        assert np.array_equal(got.decision_function(X), py.decision_function(X))
    r = _cli("train", tmp_path / "tr.svm", "-o", tmp_path / "x.cfm", "--class-weight", "2:x")
    assert r.returncode == 2 and "LABEL:WEIGHT" in r.stderr


# ------------------------------------------------------------- class_weight
def _balanced(y):
    classes, idx = np.unique(y, return_inverse=True)
    counts = np.bincount(idx)
    return (len(y) / (len(classes) * counts))[idx]


CW_CASES = [
    (cfm.FMClassifier, {}, "binary"),
    (cfm.FMClassifier, {}, "multiclass"),
    (cfm.FFMClassifier, {"fields": np.arange(30) % 3}, "binary"),
    (cfm.DeepFMClassifier, {"fields": np.arange(30) % 3}, "binary"),
]


@pytest.mark.parametrize("cls,kw,task", CW_CASES, ids=lambda v: getattr(v, "__name__", None))
def test_balanced_equals_explicit_sample_weights(cls, kw, task):
    y = Y if task == "multiclass" else (Y == 0).astype(int)  # unbalanced: 1 in 4
    sw = np.random.default_rng(3).uniform(0.5, 2.0, len(y))
    params = dict(n_factors=3, n_epochs=2, random_state=0, n_jobs=1)
    a = cls(class_weight="balanced", **params).fit(X, y, sample_weight=sw, **kw)
    b = cls(**params).fit(X, y, sample_weight=sw * _balanced(y), **kw)
    assert np.array_equal(a.decision_function(X), b.decision_function(X))
    c = cls(**params).fit(X, y, sample_weight=sw, **kw)
    assert not np.array_equal(a.decision_function(X), c.decision_function(X))


def test_class_weight_dict():
    y = LABELS[Y]
    params = dict(n_factors=3, n_epochs=2, random_state=0, n_jobs=1)
    a = cfm.FMClassifier(class_weight={"bee": 3.0, "dog": 0.5}, **params).fit(X, y)
    w = np.select([y == "bee", y == "dog"], [3.0, 0.5], 1.0)
    b = cfm.FMClassifier(**params).fit(X, y, sample_weight=w)
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))
    with pytest.raises(ValueError, match=r"class_weight has labels \['eel'\] that are not "
                                         r"classes of y"):
        cfm.FMClassifier(class_weight={"eel": 2.0}, **params).fit(X, y)
    with pytest.raises(ValueError, match=r"class_weight\['bee'\] must be a finite number"):
        cfm.FMClassifier(class_weight={"bee": -1}, **params).fit(X, y)
    with pytest.raises(ValueError, match="class_weight must be None, 'balanced' or a dict"):
        cfm.FMClassifier(class_weight="auto", **params).fit(X, y)
    with pytest.raises(ValueError, match="not supported by partial_fit"):
        cfm.FMClassifier(class_weight="balanced").partial_fit(X, y)


def test_class_weight_in_files_and_streams(tmp_path):
    params = dict(n_factors=3, n_epochs=2, random_state=0, n_jobs=1)
    m = cfm.FMClassifier(class_weight={1: 2.5}, **params).fit(X, Y)
    m.save(tmp_path / "m.cfm")
    loaded = cfm.load(tmp_path / "m.cfm")
    assert loaded.class_weight == {0: 1.0, 1: 2.5, 2: 1.0, 3: 1.0}
    # a stream: a dict weighs each block's rows; "balanced" needs the counts
    chunks = [(X[:700], Y[:700]), (X[700:], Y[700:])]
    s = cfm.FMClassifier(class_weight={1: 2.5}, shuffle=False, **params).fit(chunks)
    u = cfm.FMClassifier(shuffle=False, **params).fit(chunks)
    assert not np.array_equal(s.decision_function(X), u.decision_function(X))
    # "balanced": the counts come from a pass over the stream's labels
    bal = cfm.FMClassifier(class_weight="balanced", shuffle=False, **params).fit(chunks)
    counts = np.bincount(Y)
    as_dict = {c: len(Y) / (4 * counts[c]) for c in range(4)}
    d = cfm.FMClassifier(class_weight=as_dict, shuffle=False, **params).fit(chunks)
    assert np.array_equal(bal.decision_function(X), d.decision_function(X))
    # and from a file
    cfm.dump_libsvm(X, Y, tmp_path / "t.svm", zero_based=True)
    f = cfm.FMClassifier(class_weight="balanced", shuffle=False, **params).fit(
        str(tmp_path / "t.svm"), block_rows=700)
    assert np.array_equal(f.decision_function(X), bal.decision_function(X))


def test_warm_start_changes_solver_and_dtype():
    m = cfm.FMClassifier(n_factors=3, n_epochs=2, random_state=0, n_jobs=1).fit(X, Y)
    before = m.decision_function(X)
    w, V = m.w_.copy(), m.V_.copy()
    m.set_params(warm_start=True, n_epochs=1, solver="ftrl", dtype="float64",
                 learning_rate=0.05).fit(X, Y)
    assert m.V_.dtype == np.float64 and m.w_.shape == w.shape and m.n_epochs_ == 3
    assert np.isfinite(m.decision_function(X)).all()
    assert not np.array_equal(m.decision_function(X), before)
    # one more epoch from the converted model: it continued, not restarted
    assert np.mean(np.abs(m.V_ - V)) < np.mean(np.abs(V))


def test_hogwild_threads_train_close_to_one_thread():
    Xb, yb = _data(n=40_000, n_features=60, n_classes=3, seed=2)
    kw = dict(n_factors=4, n_epochs=3, learning_rate=0.1, normalize=True, random_state=0)
    one = cfm.FMClassifier(n_jobs=1, **kw).fit(Xb[:30_000], yb[:30_000])
    two = cfm.FMClassifier(n_jobs=2, **kw).fit(Xb[:30_000], yb[:30_000])
    a1, a2 = one.score(Xb[30_000:], yb[30_000:]), two.score(Xb[30_000:], yb[30_000:])
    assert a1 > 0.6 and abs(a1 - a2) < 0.02
    assert two.history_[-1]["train_loss"] == pytest.approx(one.history_[-1]["train_loss"],
                                                           rel=0.05)
