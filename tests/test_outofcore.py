"""Out-of-core training: fit on a file path, a .cfmdata cache or (X, y) chunks."""
import gzip
import shutil

import numpy as np
import pytest
import scipy.sparse as sp

import cfm

KW = dict(n_factors=4, n_epochs=3, n_jobs=1, random_state=0, dtype="float64")


@pytest.fixture(scope="module")
def all_data():
    X, y = cfm.make_fm_classification(4000, n_features=400, n_fields=8, random_state=1)
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def clf_data(all_data):
    X, y = all_data
    return X[:3000], y[:3000]


@pytest.fixture(scope="module")
def heldout(all_data):
    X, y = all_data
    return X[3000:], y[3000:]


@pytest.fixture
def svm_file(tmp_path, clf_data):
    X, y = clf_data
    path = tmp_path / "train.svm"
    cfm.dump_libsvm(X, y, path)
    return path


def _same_model(a, b):
    np.testing.assert_array_equal(a._table, b._table)
    np.testing.assert_array_equal(a._w0_state, b._w0_state)


def test_one_block_file_fit_equals_in_memory(svm_file, clf_data):
    """With one block holding every row, streaming is the in-memory epoch exactly."""
    X, y = clf_data
    # (an in-memory fit would choose its settings from the data; a file never does)
    mem = cfm.FMClassifier(auto_tune=False, **KW).fit(X, y)
    streamed = cfm.FMClassifier(**KW).fit(svm_file, block_rows=10_000)
    _same_model(mem, streamed)
    np.testing.assert_array_equal(streamed.classes_, [0, 1])
    assert streamed.n_features_in_ == X.shape[1]


def test_blocks_cache_gzip_and_chunks_agree(tmp_path, svm_file, clf_data):
    X, y = clf_data
    by_file = cfm.FMClassifier(**KW).fit(svm_file, block_rows=700)
    cache = cfm.convert_to_cache(svm_file)
    by_cache = cfm.FMClassifier(**KW).fit(cache, block_rows=700)
    gz = tmp_path / "train.svm.gz"
    with open(svm_file, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    by_gzip = cfm.FMClassifier(**KW).fit(gz, block_rows=700)
    chunks = [(X[i:i + 700], y[i:i + 700]) for i in range(0, X.shape[0], 700)]
    by_list = cfm.FMClassifier(**KW).fit(chunks)
    by_callable = cfm.FMClassifier(**KW).fit(lambda: iter(chunks))
    for m in (by_cache, by_gzip, by_list, by_callable):
        np.testing.assert_allclose(m._table, by_file._table, rtol=1e-6, atol=1e-7)
    assert by_file.n_epochs_ == 3 and len(by_file.history_) == 3


def test_streaming_learns_like_in_memory(svm_file, clf_data, heldout):
    X, y = clf_data
    Xt, yt = heldout
    from cfm._metrics import auc

    mem = cfm.FMClassifier(n_epochs=5, random_state=0).fit(X, y)
    streamed = cfm.FMClassifier(n_epochs=5, random_state=0).fit(svm_file, block_rows=500)
    a_mem = auc(yt, mem.decision_function(Xt))
    a_str = auc(yt, streamed.decision_function(Xt))
    assert abs(a_mem - a_str) < 0.03, (a_mem, a_str)


def test_eval_set_and_early_stopping_while_streaming(tmp_path, svm_file, clf_data, heldout):
    X, y = clf_data
    val = tmp_path / "val.svm"
    cfm.dump_libsvm(X[:500], y[:500], val)
    m = cfm.FMClassifier(n_epochs=4, random_state=0).fit(svm_file, eval_set=val, block_rows=1000)
    assert all("eval_logloss" in h for h in m.history_)
    Xv, yv = heldout
    m2 = cfm.FMClassifier(n_epochs=30, learning_rate=0.5, n_iter_no_change=2,
                          random_state=0).fit(svm_file, eval_set=(Xv, yv))
    assert m2.n_epochs_ < 30
    assert m2.best_epoch_ <= m2.n_epochs_


def test_regressor_and_ffm_from_files(tmp_path):
    X, y = cfm.make_fm_regression(2000, n_features=300, n_fields=6, random_state=3)
    path = tmp_path / "reg.svm"
    cfm.dump_libsvm(X, y, path)
    reg = cfm.FMRegressor(n_epochs=3, random_state=0).fit(path, block_rows=400)
    assert reg.score(X, y) > 0.2
    fields = np.arange(300) // 50
    ffm_path = tmp_path / "reg.ffm"
    cfm.dump_libffm(X, y, fields, ffm_path)
    ffm = cfm.FFMRegressor(n_epochs=3, random_state=0).fit(ffm_path, block_rows=400)
    np.testing.assert_array_equal(ffm.fields_, fields)
    assert ffm.n_fields_ == 6
    assert np.isfinite(ffm.predict(X)).all()


def test_stream_input_errors(svm_file, clf_data):
    X, y = clf_data
    with pytest.raises(ValueError, match="labels come from it"):
        cfm.FMClassifier().fit(svm_file, y)
    with pytest.raises(ValueError, match="block_rows"):
        cfm.FMClassifier().fit(svm_file, block_rows=0)
    with pytest.raises(ValueError, match="one-shot iterator"):
        cfm.FMClassifier().fit(iter([(X, y)]))
    with pytest.raises(ValueError, match="empty"):
        cfm.FMClassifier().fit(lambda: iter([]))
    with pytest.raises(ValueError, match=r"\(X, y\) pairs"):
        cfm.FMClassifier().fit([(X, y, y)])
    with pytest.raises((FileNotFoundError, OSError)):
        cfm.FMClassifier().fit(str(svm_file) + ".missing")
    with pytest.raises(ValueError, match="features"):
        cfm.FMClassifier(n_epochs=1).fit([(X, y), (sp.csr_matrix((5, 3)), np.zeros(5))])


def test_warm_start_on_a_file_checks_width(tmp_path, svm_file, clf_data):
    X, y = clf_data
    m = cfm.FMClassifier(n_epochs=1, warm_start=True, random_state=0).fit(svm_file)
    m.fit(svm_file)
    assert m.n_epochs_ == 2
    narrow = tmp_path / "narrow.svm"
    cfm.dump_libsvm(X[:, :100], y, narrow)
    with pytest.raises(ValueError, match="features"):
        m.fit(narrow)


def test_fm_trains_on_a_libffm_file_ignoring_fields(tmp_path):
    X, y = cfm.make_fm_classification(1000, n_features=200, n_fields=4, random_state=4)
    path = tmp_path / "train.ffm"
    cfm.dump_libffm(X, y, np.arange(200) // 50, path)
    m = cfm.FMClassifier(n_epochs=2, random_state=0).fit(path)
    assert m.n_features_in_ == 200
    assert not hasattr(m, "fields_")
