"""cfm.FieldEncoder (raw columns -> CSR + fields) and estimators with ``encoder=``.

Encoder behaviour against plain NumPy / Python references (vocabulary,
min_frequency, unseen and missing values, hashing, buckets, values), the
estimator integration (same model as fitting the encoded matrix by hand),
model files (round trip, tampered entries), the CLI (``--csv``) and bad input.
"""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import cfm
from cfm import FieldEncoder
from cfm._encoding import fnv1a
from cfm._model_file import read_model_file, write_model_file

pd = pytest.importorskip("pandas")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRITEO = "/work/shared/data/deepctr/criteo_sample.txt"


def _frame(n=400, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "city": rng.choice(["paris", "rome", "oslo", "lima", "x1", "x2"], n,
                           p=[.4, .3, .2, .08, .01, .01]),
        "item": rng.integers(0, 30, n),
        "price": rng.lognormal(0, 1, n),
        "flag": rng.random(n) < 0.3,
    })
    df.loc[rng.random(n) < 0.05, "city"] = None
    df.loc[rng.random(n) < 0.05, "price"] = np.nan
    logit = (df["city"] == "paris") * 1.5 - (df["item"] % 3 == 0) * 1.0 + np.log(
        df["price"].fillna(1.0)) * 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit.to_numpy()))).astype(int)
    return df, y


def _ids(X):
    """Per row, the column ids of a CSR matrix with one entry per input column."""
    X = X.tocsr()
    return X.indices.reshape(X.shape[0], -1), X.data.reshape(X.shape[0], -1)


# ---------------------------------------------------------------- the encoder
def test_vocabulary_min_frequency_missing_and_layout():
    df = pd.DataFrame({"c": ["b", "a", "b", "c", None, "a", "b", "z"]})
    enc = FieldEncoder(min_frequency=2).fit(df)
    assert enc.kinds_ == ["category"]
    assert list(enc.vocabularies_[0]) == ["a", "b"]  # c and z seen once: "other"
    ids, vals = _ids(enc.transform(df))
    # 0 missing, 1 other, 2 + position in the sorted vocabulary
    assert ids[:, 0].tolist() == [3, 2, 3, 1, 0, 2, 3, 1]
    assert np.all(vals == 1)
    assert enc.n_features_out_ == 4 and enc.fields_.tolist() == [0, 0, 0, 0]
    assert list(enc.get_feature_names_out()) == ["c=<missing>", "c=<other>", "c=a", "c=b"]
    # a fraction of the rows: 3/8 -> values seen at least 3 times
    assert list(FieldEncoder(min_frequency=0.3).fit(df).vocabularies_[0]) == ["b"]
    assert list(FieldEncoder(min_frequency=1).fit(df).vocabularies_[0]) == ["a", "b", "c", "z"]


def test_unseen_values_take_the_other_id_never_a_real_one():
    df = pd.DataFrame({"c": ["a", "b", "a", "b"], "n": [1, 2, 1, 2]})
    enc = FieldEncoder(min_frequency=1).fit(df)
    new = pd.DataFrame({"c": ["zzz", "a", None], "n": [7, 2, None]})
    ids, _ = _ids(enc.transform(new))
    other_c, other_n = enc.offsets_[0] + 1, enc.offsets_[1] + 1
    assert ids[0].tolist() == [other_c, other_n]
    assert ids[1].tolist() == [enc.offsets_[0] + 2, enc.offsets_[1] + 3]  # "a", 2
    assert ids[2].tolist() == [enc.offsets_[0], enc.offsets_[1]]  # missing ids


def test_values_are_matched_by_their_text():
    """An int column fitted; the same values as text or as floats score alike."""
    fit = pd.DataFrame({"id": [1005, 1002, 1005, 1002, 7]})
    enc = FieldEncoder(min_frequency=1).fit(fit)
    as_int = enc.transform(fit)
    as_text = enc.transform(pd.DataFrame({"id": ["1005", "1002", "1005", "1002", "7"]}))
    as_float = enc.transform(pd.DataFrame({"id": [1005.0, 1002.0, 1005.0, 1002.0, 7.0]}))
    assert (as_int != as_text).nnz == 0 and (as_int != as_float).nnz == 0
    assert list(enc.vocabularies_[0]) == ["1002", "1005", "7"]
    mixed = FieldEncoder(min_frequency=2, categorical=["id"]).fit(
        pd.DataFrame({"id": pd.Series([1, "1", 1.0, 2.5, True], dtype=object)}))
    assert list(mixed.vocabularies_[0]) == ["1"]  # 1, "1" and 1.0 are one value


def test_hashing_is_fnv1a_of_the_text():
    # FNV-1a 64 test vectors (Fowler/Noll/Vo): "" and "a", "foobar"
    assert fnv1a(np.array(["", "a", "foobar"], dtype=object)).tolist() == [
        0xCBF29CE484222325, 0xAF63DC4C8601EC8C, 0x85944171F73967E8]
    df = pd.DataFrame({"u": ["a", "foobar", None, "a"]})
    enc = FieldEncoder(n_buckets=1000).fit(df)
    assert enc.kinds_ == ["hash"] and enc.vocabularies_ == [None]
    assert enc.n_features_out_ == 1001
    ids, _ = _ids(enc.transform(pd.DataFrame({"u": ["a", "foobar", None, "never seen"]})))
    want = [1 + 0xAF63DC4C8601EC8C % 1000, 1 + 0x85944171F73967E8 % 1000, 0,
            1 + int(fnv1a(np.array(["never seen"], dtype=object))[0]) % 1000]
    assert ids[:, 0].tolist() == want
    # long and non-ASCII strings: the vectorized hash equals a plain-Python one
    words = np.array(["é" * 300, "k" * 5000, "日本", "a\x00b"], dtype=object)

    def ref(s):
        h = 0xCBF29CE484222325
        for b in s.encode("utf-8"):
            h = ((h ^ b) * 0x100000001B3) % 2**64
        return h
    assert fnv1a(words).tolist() == [ref(w) for w in words]


def test_numeric_buckets_and_values_against_numpy():
    rng = np.random.default_rng(1)
    x = rng.lognormal(size=500)
    x[::17] = np.nan
    df = pd.DataFrame({"x": x})
    enc = FieldEncoder(numeric="bucket", n_quantiles=8).fit(df)
    finite = x[np.isfinite(x)]
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, 9)[1:-1]))
    ids, vals = _ids(enc.transform(df))
    want = np.where(np.isnan(x), 0, 1 + np.searchsorted(edges, x, side="right"))
    assert np.array_equal(ids[:, 0], want) and np.all(vals == 1)
    assert enc.n_features_out_ == 2 + len(edges)
    # "auto": one bin per 1,000 values, at least 4, at most 32
    for size, bins in ((470, 4), (9_000, 9), (100_000, 32)):
        v = np.random.default_rng(2).normal(size=size)
        auto = FieldEncoder().fit(pd.DataFrame({"x": v}))
        assert np.array_equal(auto._stats[0]["edges"],
                              np.quantile(v, np.linspace(0, 1, bins + 1)[1:-1]))
    # values: standardized, clipped to the training range, missing -> id 0 with value 1
    enc = FieldEncoder(numeric="value").fit(df)
    new = pd.DataFrame({"x": [np.nan, finite.max() * 10, -5.0, 1.0, np.inf]})
    ids, vals = _ids(enc.transform(new))
    mu, sd = finite.mean(), finite.std()
    clipped = np.clip(new["x"].to_numpy(), finite.min(), finite.max())
    assert ids[:, 0].tolist() == [0, 1, 1, 1, 1]
    np.testing.assert_allclose(vals[1:, 0], ((clipped - mu) / sd)[1:], rtol=1e-6)
    assert vals[0, 0] == 1.0
    raw = FieldEncoder(numeric="value", standardize=False).fit(df)
    np.testing.assert_allclose(_ids(raw.transform(new))[1][3, 0], 1.0)


def test_auto_kinds_columns_by_name_and_determinism():
    df, _ = _frame()
    enc = FieldEncoder().fit(df)
    assert enc.kinds_ == ["category", "category", "bucket", "category"]
    X = enc.transform(df)
    assert X.shape == (len(df), enc.n_features_out_) and X.nnz == 4 * len(df)
    assert X.has_canonical_format and X.dtype == np.float32
    assert enc.fields_.tolist() == np.repeat(np.arange(4), np.diff(enc.offsets_)).tolist()
    # columns in another order: the same matrix
    assert (enc.transform(df[df.columns[::-1]]) != X).nnz == 0
    # rows in another order: the same encoder (vocabularies, edges), rows permuted
    perm = np.random.default_rng(3).permutation(len(df))
    enc2 = FieldEncoder().fit(df.iloc[perm])
    assert pickle.dumps(enc2._to_file()) == pickle.dumps(enc._to_file())
    assert (enc2.transform(df.iloc[perm]) != X[perm]).nnz == 0
    # categorical= forces the listed columns, the others numeric
    enc3 = FieldEncoder(categorical=["city"], numeric="value").fit(df[["city", "item", "price"]])
    assert enc3.kinds_ == ["category", "value", "value"]
    # arrays: columns by position
    arr = FieldEncoder().fit(np.array([["a", 1], ["b", 2]], dtype=object))
    assert list(arr.feature_names_in_) == [0, 1]


def test_encoder_bad_input():
    df = pd.DataFrame({"c": ["a", "b"], "x": [1.5, 2.5]})
    enc = FieldEncoder().fit(df)
    with pytest.raises(ValueError, match=r"lacks columns .*'x'"):
        enc.transform(df[["c"]])
    with pytest.raises(ValueError, match=r"not fitted with: \['label'\].*drop them"):
        enc.transform(df.assign(label=1))
    with pytest.raises(ValueError, match=r"column 'x' is numeric .* row 1 holds 'abc'"):
        enc.transform(pd.DataFrame({"c": ["a", "b"], "x": ["1.0", "abc"]}))
    with pytest.raises(TypeError, match="datetime"):
        FieldEncoder().fit(pd.DataFrame({"t": pd.to_datetime(["2020-01-01", "2021-01-01"])}))
    with pytest.raises(TypeError, match=r"'c' \(dtype .*\) is not numeric and not listed"):
        FieldEncoder(categorical=[]).fit(df)
    with pytest.raises(ValueError, match="categorical names columns not in X"):
        FieldEncoder(categorical=["nope"]).fit(df)
    with pytest.raises(ValueError, match="duplicate column names"):
        FieldEncoder().fit(pd.DataFrame([[1, 2]], columns=["a", "a"]))
    with pytest.raises(TypeError, match="sparse matrix"):
        FieldEncoder().fit(enc.transform(df))
    with pytest.raises(ValueError, match=r"0 sample\(s\)"):
        FieldEncoder().fit(df.iloc[:0])
    for bad in (dict(min_frequency=0), dict(min_frequency=1.5), dict(n_buckets=0),
                dict(numeric="log"), dict(n_quantiles=1), dict(categorical="all"),
                dict(dtype="int8")):
        with pytest.raises(ValueError):
            FieldEncoder(**bad).fit(df)
    with pytest.raises(cfm.NotFittedError):
        FieldEncoder().transform(df)


# ------------------------------------------------------------ the estimators
@pytest.mark.parametrize("cls", [cfm.FFMClassifier, cfm.FMClassifier, cfm.DeepFMClassifier])
def test_estimator_with_encoder_is_the_encoded_fit(cls, tmp_path):
    df, y = _frame()
    kw = dict(n_factors=4, random_state=0, n_jobs=1, n_epochs=5)
    if cls is not cfm.DeepFMClassifier:
        kw["auto_tune"] = False
    model = cls(encoder=FieldEncoder(), **kw).fit(df, y)
    enc = FieldEncoder().fit(df)
    X = enc.transform(df)
    extra = {"fields": enc.fields_} if cls is not cfm.FMClassifier else {}
    ref = cls(**kw).fit(X, y, **extra)
    np.testing.assert_array_equal(model.predict_proba(df), ref.predict_proba(X))
    assert model.encoder_.n_features_out_ == model.n_features_in_
    if cls is cfm.FFMClassifier:
        assert np.array_equal(model.fields_, enc.fields_) and model.n_fields_ == 4
    if cls is cfm.DeepFMClassifier:  # and through its model file
        path = tmp_path / "d.cfm"
        model.save(path)
        np.testing.assert_array_equal(cfm.load(path).predict_proba(df), ref.predict_proba(X))
    assert not hasattr(model.encoder, "offsets_")  # the parameter is not fitted in place


def test_save_load_pickle_round_trip(tmp_path):
    df, y = _frame()
    model = cfm.FFMClassifier(encoder=FieldEncoder(n_buckets=64), n_factors=4, random_state=0,
                              n_jobs=1).fit(df, y)
    new = _frame(50, seed=9)[0]
    new.loc[0, "city"] = "never-seen"
    p = model.predict_proba(new)
    path = tmp_path / "m.cfm"
    model.save(path)
    for loaded in (cfm.load(path), cfm.load(path, scoring_only=True),
                   pickle.loads(pickle.dumps(model))):
        np.testing.assert_array_equal(loaded.predict_proba(new), p)
        assert loaded.encoder.get_params() == model.encoder.get_params()
    reg = cfm.FMRegressor(encoder=FieldEncoder(numeric="value", min_frequency=3),
                          random_state=0).fit(df, y.astype(float))
    reg.save(path)
    np.testing.assert_array_equal(cfm.load(path).predict(new), reg.predict(new))
    # a model without an encoder has none after a load, and refitting without one drops it
    plain = cfm.FMClassifier(random_state=0).fit(reg.encoder_.transform(df), y)
    plain.save(path)
    assert not hasattr(cfm.load(path), "encoder_")
    enc = model.encoder_
    model.set_params(encoder=None).fit(enc.transform(df), y, fields=enc.fields_)
    assert not hasattr(model, "encoder_")


def test_warm_start_partial_fit_and_eval_set():
    df, y = _frame()
    model = cfm.FFMClassifier(encoder=FieldEncoder(), n_factors=4, random_state=0, n_jobs=1,
                              n_epochs=3, auto_tune=False, warm_start=True)
    model.fit(df, y, eval_set=(df.iloc[:100], y[:100]))
    assert "eval_logloss" in model.history_[-1]
    enc = model.encoder_
    model.fit(df.iloc[:50], y[:50])  # a warm start keeps the encoder (and its width)
    assert model.encoder_ is enc
    pf = cfm.FMClassifier(encoder=FieldEncoder(), random_state=0)
    pf.partial_fit(df.iloc[:200], y[:200], classes=[0, 1])
    first = pf.encoder_
    pf.partial_fit(df.iloc[200:], y[200:])
    assert pf.encoder_ is first
    fitted = FieldEncoder().fit(df)  # partial_fit uses an encoder fitted beforehand as is
    pf2 = cfm.FMClassifier(encoder=fitted, random_state=0).partial_fit(df.iloc[:10], y[:10],
                                                                      classes=[0, 1])
    assert pf2.encoder_ is fitted


def test_estimator_bad_input(tmp_path):
    df, y = _frame()
    model = cfm.FFMClassifier(encoder=FieldEncoder(), random_state=0).fit(df, y)
    with pytest.raises(ValueError, match=r"lacks columns .*'price'"):
        model.predict(df.drop(columns="price"))
    with pytest.raises(ValueError, match=r"column 'price' is numeric"):
        model.predict(df.assign(price="cheap"))
    with pytest.raises(ValueError, match="encoder must be a cfm.FieldEncoder"):
        cfm.FMClassifier(encoder="auto").fit(df, y)
    with pytest.raises(ValueError, match="raw rows in memory"):
        cfm.FMClassifier(encoder=FieldEncoder()).fit(str(tmp_path / "x.svm"))
    with pytest.raises(ValueError, match=r"non-numeric column.*encoder=cfm.FieldEncoder"):
        cfm.FMClassifier().fit(df, y)
    plain = cfm.FMClassifier(random_state=0).fit(model.encoder_.transform(df), y)
    with pytest.raises(ValueError, match="no encoder"):
        plain.predict_csv(CRITEO, tmp_path / "o.txt")


def test_field_encoder_passes_check_estimator():
    pytest.importorskip("sklearn")
    from sklearn.utils.estimator_checks import check_estimator

    check_estimator(FieldEncoder())


def _tamper(path, out, edit):
    header, arrays = read_model_file(path)
    edit(header, arrays)
    header.pop("arrays")
    header.pop("format")
    write_model_file(out, header, arrays)


@pytest.mark.parametrize("edit, match", [
    (lambda h, a: h["encoder"]["columns"][0].update(size=3), "has size 3"),
    (lambda h, a: h["encoder"]["columns"][0].update(n_values=10**9), "n_values"),
    (lambda h, a: a.update(encoder_text_offsets=a["encoder_text_offsets"][::-1].copy()),
     "offsets"),
    (lambda h, a: a.update(encoder_edges=np.full_like(a["encoder_edges"], np.inf)),
     "non-finite"),
    (lambda h, a: a.update(encoder_text=np.full_like(a["encoder_text"], 0xFF)), "not sorted"),
    (lambda h, a: a.pop("encoder_edges"), "missing"),
    (lambda h, a: h["encoder"]["params"].update(min_frequency=-1), "min_frequency"),
    (lambda h, a: h["encoder"].update(columns=h["encoder"]["columns"][:1]),
     "no column claims|features"),
    (lambda h, a: h.update(encoder=[1]), "encoder"),
])
def test_tampered_encoder_entries_are_refused(tmp_path, edit, match):
    df, y = _frame(120)
    model = cfm.FMClassifier(encoder=FieldEncoder(min_frequency=1), random_state=0).fit(df, y)
    model.save(tmp_path / "m.cfm")
    _tamper(tmp_path / "m.cfm", tmp_path / "bad.cfm", edit)
    with pytest.raises(cfm.ModelFileError, match=match):
        cfm.load(tmp_path / "bad.cfm")


def test_sklearn_clone_and_grid_search():
    sklearn = pytest.importorskip("sklearn")
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV

    df, y = _frame()
    est = cfm.FMClassifier(encoder=FieldEncoder(min_frequency=2), random_state=0, n_epochs=2,
                           auto_tune=False)
    assert clone(est).get_params()["encoder__min_frequency"] == 2
    gs = GridSearchCV(est, {"encoder__min_frequency": [1, 5]}, cv=2, scoring="roc_auc")
    gs.fit(df, y)
    assert gs.best_params_["encoder__min_frequency"] in (1, 5)
    assert sklearn is not None


# ------------------------------------------------------------------ the CLI
def _cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "cfm", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_train_and_predict_csv(tmp_path):
    df, y = _frame(300)
    data = df.assign(label=y)
    data.to_csv(tmp_path / "d.csv", index=False)
    r = _cli("train", "--csv", "d.csv", "--label", "label", "--model", "ffm", "-o", "m.cfm",
             "--seed", "1", "--threads", "1", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # in blocks of 7 rows, to stdout, with metrics against the label column
    r = _cli("predict", "--csv", "d.csv", "m.cfm", "--label", "label", "--eval",
             "--block-rows", "7", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "auc" in r.stderr
    model = cfm.load(tmp_path / "m.cfm")
    got = np.array(r.stdout.split(), dtype=float)
    np.testing.assert_allclose(got, model.predict_proba(df)[:, 1], rtol=2e-8, atol=1e-9)
    # headerless TSV: columns by position, the label a position
    data.to_csv(tmp_path / "d.tsv", sep="\t", index=False, header=False)
    r = _cli("train", "--csv", "d.tsv", "--sep", "tab", "--no-header", "--label", "4",
             "--model", "deepfm", "--epochs", "2", "-o", "t.cfm", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = _cli("predict", "--csv", "d.tsv", "--sep", "tab", "--no-header", "--label", "4",
             "t.cfm", "-o", "q.txt", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(np.loadtxt(tmp_path / "q.txt")) == 300
    r = _cli("info", "t.cfm", cwd=tmp_path)
    assert r.returncode == 0 and "encoder       4 columns (1 bucket, 3 category): 0, 1, 2, 3" \
        in r.stdout, r.stdout
    # errors: one line, exit 1 (data) or 2 (usage)
    df.drop(columns="price").to_csv(tmp_path / "bad.csv", index=False)
    r = _cli("predict", "--csv", "bad.csv", "m.cfm", cwd=tmp_path)
    assert r.returncode == 1 and "bad.csv" in r.stderr and "price" in r.stderr
    bad = df.astype({"price": object})
    bad.loc[40, "price"] = "x"
    bad.to_csv(tmp_path / "bad2.csv", index=False)
    r = _cli("predict", "--csv", "bad2.csv", "m.cfm", "--block-rows", "16", cwd=tmp_path)
    assert r.returncode == 1 and "bad2.csv: line 42: column 'price'" in r.stderr, r.stderr
    r = _cli("train", "--csv", "d.csv", "-o", "x.cfm", cwd=tmp_path)
    assert r.returncode == 2 and "--label" in r.stderr


@pytest.mark.skipif(not os.path.exists(CRITEO), reason="real data not available")
def test_raw_criteo_sample_two_lines(tmp_path):
    """The README's two lines on the raw Criteo sample."""
    df = pd.read_csv(CRITEO)
    model = cfm.FFMClassifier(encoder=cfm.FieldEncoder(), random_state=0).fit(
        df.drop(columns="label"), df["label"])
    assert model.n_fields_ == 39
    p = model.predict_proba(df.drop(columns="label"))[:, 1]
    assert cfm._metrics.auc(df["label"].to_numpy(), p) > 0.7  # on its training rows
