"""What is specific to cfm.DeepFMClassifier / DeepFMRegressor (the shared
promises are in test_contract.py, the kernels' math in test_deepfm_kernel.py):
fields (multi-hot, real-valued, -1, bad ones), the model against the NumPy
reference through the public attributes, dropout, optimizers, training that
does not depend on n_jobs, files and streaming, early stopping, model files
(scoring_only, corrupted or inconsistent files), the CLI."""
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import scipy.sparse as sp

import cfm
import reference_deepfm as R
from conftest import errors_in_threads

N_FIELDS = 4


def make_data(n=600, nf=24, seed=0, multi_hot=True):
    """Rows with one active column per field, plus (multi_hot) a second
    active column in field 0 with a real value on every third row."""
    rng = np.random.default_rng(seed)
    fields = np.arange(nf) % N_FIELDS
    per = nf // N_FIELDS
    rows, cols, vals = [], [], []
    for i in range(n):
        for f in range(N_FIELDS):
            rows.append(i)
            cols.append(f + N_FIELDS * rng.integers(per))
            vals.append(1.0)
        if multi_hot and i % 3 == 0:
            c = N_FIELDS * rng.integers(per)
            if c not in cols[-N_FIELDS:]:
                rows.append(i)
                cols.append(c)
                vals.append(0.5)
    X = sp.csr_matrix((vals, (rows, cols)), shape=(n, nf))
    w = rng.normal(size=nf)
    score = X @ w + 0.5 * (X[:, 0].toarray().ravel() * X[:, 1].toarray().ravel())
    y = (score > np.median(score)).astype(int)
    return X, y, fields


X, Y, FIELDS = make_data()
SMALL = dict(hidden_layer_sizes=(16, 8), batch_size=64, n_epochs=3, n_jobs=1, random_state=0)


def params_of(m):
    """The fitted model's parameters as reference_deepfm takes them (float64)."""
    return dict(w0=m.w0_, w=m.w_.astype(np.float64), V=m.V_.astype(np.float64),
                W=[W.astype(np.float64) for W in m.coefs_],
                b=[b.astype(np.float64) for b in m.intercepts_],
                wout=m.w_out_.astype(np.float64))


# ------------------------------------------------------------------- model
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("hidden", [(16, 8), ()])
def test_decision_matches_reference_with_multi_hot_fields(normalize, hidden):
    m = cfm.DeepFMClassifier(**dict(SMALL, hidden_layer_sizes=hidden, dtype="float64",
                                    normalize=normalize)).fit(X, Y, fields=FIELDS)
    assert m.n_fields_ == N_FIELDS and np.array_equal(m.fields_, FIELDS)
    assert [W.shape for W in m.coefs_] == [(a, b) for a, b in
                                            zip((N_FIELDS * 8,) + hidden, hidden)]
    want, _ = R.forward(X, params_of(m), FIELDS, N_FIELDS, normalize)
    np.testing.assert_allclose(m.decision_function(X), want, rtol=1e-10, atol=1e-10)
    assert X[0].nnz == N_FIELDS + 1  # a multi-hot row was scored


def test_regressor_learns_and_starts_at_the_mean():
    rng = np.random.default_rng(1)
    y = np.asarray(X @ rng.normal(size=X.shape[1])).ravel() + 3.0
    m = cfm.DeepFMRegressor(**dict(SMALL, n_epochs=1, learning_rate=1e-9)).fit(
        X, y, fields=FIELDS)
    assert m.w0_ == pytest.approx(y.mean(), rel=1e-6)
    m = cfm.DeepFMRegressor(**dict(SMALL, n_epochs=30, learning_rate=0.01)).fit(
        X, y, fields=FIELDS)
    assert np.mean((m.predict(X) - y) ** 2) < 0.1 * np.var(y)


def test_classifier_starts_at_the_log_odds_and_learns():
    yb = np.where(np.arange(len(Y)) % 10 == 0, 1, 0)  # 10% positive
    m = cfm.DeepFMClassifier(**dict(SMALL, n_epochs=1, learning_rate=1e-9)).fit(
        X, yb, fields=FIELDS)
    assert m.w0_ == pytest.approx(np.log(0.1 / 0.9), rel=1e-6)
    m = cfm.DeepFMClassifier(**dict(SMALL, n_epochs=20, learning_rate=0.01)).fit(
        X, Y, fields=FIELDS)
    assert np.mean(m.predict(X) == Y) > 0.9


# ------------------------------------------------------------------ fields
def test_fields_checks():
    m = cfm.DeepFMClassifier(**SMALL)
    # no fields: inferred from X (cfm.infer_fields)
    np.testing.assert_array_equal(m.fit(X, Y).fields_, cfm.infer_fields(X))
    with pytest.raises(ValueError, match="one entry per column"):
        m.fit(X, Y, fields=FIELDS[:-1])
    with pytest.raises(ValueError, match="fields must be finite integers"):
        m.fit(X, Y, fields=FIELDS + 0.5)
    bad = FIELDS.copy()
    bad[3] = -2
    with pytest.raises(ValueError, match=r"fields\[3\] = -2"):
        m.fit(X, Y, fields=bad)
    # -1 (a column that never occurs, as cfm.load_libffm reports) is field 0
    unused = FIELDS.copy()
    unused[-1] = -1
    assert m.fit(X[:, :-1].tocsr(), Y, fields=unused[:-1]).n_fields_ == N_FIELDS
    Xu = X.tolil()
    Xu[:, -1] = 0
    Xu = Xu.tocsr()
    a = cfm.DeepFMClassifier(**SMALL).fit(Xu, Y, fields=unused)
    b = cfm.DeepFMClassifier(**SMALL).fit(Xu, Y, fields=np.where(unused < 0, 0, unused))
    np.testing.assert_array_equal(a.decision_function(Xu), b.decision_function(Xu))
    # warm start: the same fields or none
    a.set_params(warm_start=True).fit(Xu, Y)
    with pytest.raises(ValueError, match="fields differ"):
        a.fit(Xu, Y, fields=(FIELDS + 1) % N_FIELDS)


def test_too_many_fields_for_the_mlp_is_refused_before_allocating():
    many = np.arange(X.shape[1]) * 5000  # field ids up to 115,000
    with pytest.raises(ValueError, match="inputs to the MLP"):
        cfm.DeepFMClassifier(**SMALL).fit(X, Y, fields=many)


# ------------------------------------------------------------- parameters
@pytest.mark.parametrize("params, match", [
    ({"hidden_layer_sizes": (0, 8)}, "hidden_layer_sizes"),
    ({"hidden_layer_sizes": (8, -1)}, "hidden_layer_sizes"),
    ({"hidden_layer_sizes": ("8",)}, "hidden_layer_sizes"),
    ({"hidden_layer_sizes": 8}, "hidden_layer_sizes"),
    ({"hidden_layer_sizes": (4,) * 65}, "hidden_layer_sizes"),
    ({"hidden_layer_sizes": (1 << 17,)}, "hidden_layer_sizes"),
    ({"dropout": 1.0}, "dropout"),
    ({"dropout": -0.1}, "dropout"),
    ({"optimizer": "sgd"}, "optimizer"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 2.5}, "batch_size"),
    ({"l2_dense": -1.0}, "l2_dense"),
    ({"n_factors": 0}, "n_factors"),
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"normalize": None}, "normalize"),
    ({"eval_metric": "rmse"}, "eval_metric"),
    ({"dtype": "float16"}, "dtype"),
])
def test_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        cfm.DeepFMClassifier(**dict(SMALL, **params)).fit(X, Y, fields=FIELDS)


def test_hidden_layer_sizes_as_list_or_array():
    a = cfm.DeepFMClassifier(**dict(SMALL, hidden_layer_sizes=[16, 8])).fit(X, Y, fields=FIELDS)
    b = cfm.DeepFMClassifier(**dict(SMALL, hidden_layer_sizes=np.array([16, 8]))).fit(
        X, Y, fields=FIELDS)
    c = cfm.DeepFMClassifier(**SMALL).fit(X, Y, fields=FIELDS)
    for m in (a, b):
        np.testing.assert_array_equal(m.decision_function(X), c.decision_function(X))


# ----------------------------------------------------------------- dropout
def test_dropout_trains_differently_and_never_drops_in_scoring():
    plain = cfm.DeepFMClassifier(**SMALL).fit(X, Y, fields=FIELDS)
    drop = cfm.DeepFMClassifier(**dict(SMALL, dropout=0.5)).fit(X, Y, fields=FIELDS)
    assert not np.array_equal(plain.decision_function(X), drop.decision_function(X))
    again = cfm.DeepFMClassifier(**dict(SMALL, dropout=0.5)).fit(X, Y, fields=FIELDS)
    np.testing.assert_array_equal(drop.decision_function(X), again.decision_function(X))
    np.testing.assert_array_equal(drop.decision_function(X), drop.decision_function(X))
    other_seed = cfm.DeepFMClassifier(**dict(SMALL, dropout=0.5, random_state=1))
    assert not np.array_equal(other_seed.fit(X, Y, fields=FIELDS).decision_function(X),
                              drop.decision_function(X))


# ---------------------------------------------------------- optimizers
def test_warm_start_can_change_the_optimizer():
    m = cfm.DeepFMClassifier(**SMALL).fit(X, Y, fields=FIELDS)
    before = m.decision_function(X)
    m.set_params(optimizer="adagrad", learning_rate=0.01, warm_start=True).fit(X, Y)
    assert m.n_epochs_ == 6
    assert not np.array_equal(m.decision_function(X), before)
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        m.set_params(hidden_layer_sizes=(8,)).fit(X, Y)


# ---------------------------------------------------------------- threads
def test_training_does_not_depend_on_n_jobs():
    """No Hogwild: every reduction has a fixed order (a documented promise)."""
    Xb, yb, fb = make_data(n=3000, seed=4)
    fits = [cfm.DeepFMClassifier(**dict(SMALL, n_jobs=nj, dropout=0.2)).fit(
        Xb, yb, fields=fb) for nj in (1, 2, None)]
    for m in fits[1:]:
        np.testing.assert_array_equal(m.V_, fits[0].V_)
        for a, b in zip(m.coefs_, fits[0].coefs_):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(m.decision_function(Xb), fits[0].decision_function(Xb))


def test_kernels_run_on_cfms_pool():
    """Training and scoring hand their chunks to cfm's worker pool (as every
    kernel does), not to OpenMP regions."""
    from cfm import _pool

    Xb, yb, fb = make_data(n=3000, seed=5)
    before = _pool.stats()["jobs"]
    m = cfm.DeepFMClassifier(**dict(SMALL, n_jobs=2, n_epochs=1)).fit(Xb, yb, fields=fb)
    trained = _pool.stats()["jobs"]
    assert trained > before
    m.decision_function(Xb)  # 12 blocks of 256 rows
    assert _pool.stats()["jobs"] > trained


# ------------------------------------------------------ eval_set, callbacks
def test_early_stopping_restores_the_best_epoch():
    Xv, yv, _ = make_data(n=300, seed=9)
    m = cfm.DeepFMClassifier(**dict(SMALL, n_epochs=40, learning_rate=0.05,
                                    n_iter_no_change=2))
    seen = []
    m.fit(X, Y, fields=FIELDS, eval_set=(Xv, yv), callback=lambda rec, n: seen.append(rec))
    assert len(seen) == len(m.history_) == m.n_epochs_ < 40
    losses = [r["eval_logloss"] for r in m.history_]
    assert m.best_epoch_ == 1 + int(np.argmin(losses))
    from cfm._metrics import METRICS

    got = METRICS["logloss"][0]((yv == m.classes_[1]).astype(float), m.decision_function(Xv))
    assert got == pytest.approx(min(losses), rel=1e-9)


def test_verbose_prints_one_line_per_epoch(capsys):
    cfm.DeepFMRegressor(**dict(SMALL, verbose=1)).fit(X, Y.astype(float), fields=FIELDS)
    assert capsys.readouterr().err.count("train_loss") == 3


def test_pandas_input_keeps_feature_names():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(X.toarray(), columns=[f"c{j}" for j in range(X.shape[1])])
    m = cfm.DeepFMClassifier(**SMALL).fit(df, Y, fields=FIELDS)
    assert list(m.feature_names_in_) == list(df.columns)
    ref = cfm.DeepFMClassifier(**SMALL).fit(X, Y, fields=FIELDS)
    np.testing.assert_array_equal(m.decision_function(df), ref.decision_function(X))


# ------------------------------------------------------ files and streaming
@pytest.fixture
def libffm_file(tmp_path):
    path = tmp_path / "train.ffm"
    cfm.dump_libffm(X, Y, FIELDS, path)
    return path


def test_fit_from_a_libffm_file_its_cache_and_chunks(libffm_file, tmp_path):
    kw = dict(SMALL, shuffle=False)
    from_file = cfm.DeepFMClassifier(**kw).fit(libffm_file, block_rows=250)
    Xf, yf, ff = cfm.load_libffm(libffm_file)
    assert np.array_equal(from_file.fields_, np.maximum(ff, 0))
    cache = tmp_path / "train.cfmdata"
    cfm.convert_to_cache(libffm_file, cache)
    from_cache = cfm.DeepFMClassifier(**kw).fit(cache, block_rows=250)
    np.testing.assert_array_equal(from_cache.decision_function(Xf),
                                  from_file.decision_function(Xf))
    chunks = [(Xf[i:i + 250], yf[i:i + 250]) for i in range(0, Xf.shape[0], 250)]
    from_chunks = cfm.DeepFMClassifier(**kw).fit(chunks, fields=ff)
    np.testing.assert_array_equal(from_chunks.decision_function(Xf),
                                  from_file.decision_function(Xf))
    # unshuffled blocks of 250 rows: the same batches as in memory, block by block
    # (a block's last batch is short), so a fit on each block in turn agrees
    mem = cfm.DeepFMClassifier(**dict(kw, n_epochs=1))
    for Xb, yb in chunks:
        mem.partial_fit(Xb, yb, fields=ff)
    one = cfm.DeepFMClassifier(**dict(kw, n_epochs=1)).fit(chunks, fields=ff)
    np.testing.assert_array_equal(mem.decision_function(Xf), one.decision_function(Xf))


def test_best_params_record_the_fixed_settings(libffm_file):
    """DeepFM chooses no setting from the data (issue 13's race is the FM
    estimators'): best_params_ records the parameters and defaults used."""
    m = cfm.DeepFMClassifier(**SMALL).fit(X, Y, fields=FIELDS)
    assert m.best_params_["learning_rate"] == 1e-3 and m.best_params_["n_epochs"] == 3
    assert m.best_params_["normalize"] is False and m.best_params_["auto"].startswith("off")
    s = cfm.DeepFMClassifier(**dict(SMALL, optimizer="adagrad")).fit(libffm_file)
    assert s.best_params_["learning_rate"] == 1e-2 and s.best_params_["auto"].startswith("off")


def test_fit_from_a_libsvm_file_infers_fields(tmp_path):
    path = tmp_path / "train.svm"
    cfm.dump_libsvm(X, Y, path)
    # no fields anywhere: inferred from the first block (cfm.infer_fields)
    m = cfm.DeepFMClassifier(**SMALL).fit(path, block_rows=len(Y))
    first = next(iter(cfm.iter_blocks(path, block_rows=len(Y), zero_based=True,
                                      n_features=X.shape[1])))[0]
    np.testing.assert_array_equal(m.fields_, cfm.infer_fields(first))
    # with fields given, a libsvm file trains with them
    m = cfm.DeepFMClassifier(**SMALL).fit(path, fields=FIELDS)
    np.testing.assert_array_equal(m.fields_, FIELDS)


def test_predict_file_equals_predict(libffm_file, tmp_path):
    m = cfm.DeepFMClassifier(**SMALL).fit(X, Y, fields=FIELDS)
    out = tmp_path / "p.txt"
    stats = m.predict_file(libffm_file, out, raw=True, precision=17, evaluate=True)
    np.testing.assert_array_equal(np.loadtxt(out), m.decision_function(X))
    assert stats["n_rows"] == X.shape[0] and 0.5 < stats["metrics"]["auc"] <= 1


# ------------------------------------------------------------ model files
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    m = cfm.DeepFMClassifier(**dict(SMALL, dropout=0.1)).fit(X, np.where(Y, "yes", "no"),
                                                             fields=FIELDS)
    path = tmp_path_factory.mktemp("deepfm") / "m.cfm"
    m.save(path)
    return m, path


def test_scoring_only_load_is_lean_and_refuses_training(saved):
    m, path = saved
    lean = cfm.load(path, scoring_only=True)
    np.testing.assert_array_equal(lean.predict_proba(X), m.predict_proba(X))
    assert lean._state.table.nbytes < m._state.table.nbytes
    assert lean.hidden_layer_sizes == (16, 8)
    with pytest.raises(ValueError, match="scoring_only"):
        lean.partial_fit(X, np.where(Y, "yes", "no"))
    with pytest.raises(ValueError, match="scoring_only"):
        lean.save(path.parent / "again.cfm")


def _header(raw):
    (hlen,) = struct.unpack_from("<I", raw, 12)
    return json.loads(raw[16:16 + hlen]), hlen


def _rewrite(raw, header, hlen):
    """``raw`` with its header replaced (same length, padded) and a valid checksum."""
    new = json.dumps(header).encode()
    assert len(new) <= hlen
    b = bytearray(raw)
    b[16:16 + hlen] = new + b" " * (hlen - len(new))
    b[-4:] = struct.pack("<I", zlib.crc32(bytes(b[:-4])))
    return bytes(b)


@pytest.mark.parametrize("where", [0.05, 0.3, 0.6, 0.95, -3])
def test_corrupted_files_are_refused(saved, tmp_path, where):
    _, path = saved
    raw = path.read_bytes()
    pos = int(len(raw) * where) if where > 0 else len(raw) + where
    bad = bytearray(raw)
    bad[pos] ^= 0x41
    p = tmp_path / "bad.cfm"
    p.write_bytes(bytes(bad))
    with pytest.raises(cfm.ModelFileError):
        cfm.load(p)
    p.write_bytes(raw[:len(raw) // 2])
    with pytest.raises(cfm.ModelFileError, match="truncated|corrupt"):
        cfm.load(p)


@pytest.mark.parametrize("change, match", [
    ({"hidden": [16, 9]}, "mlp"),
    ({"hidden": [16]}, "mlp"),
    ({"hidden": [16, 8, 4]}, "mlp"),
    ({"n_fields": 5}, "mlp|field"),
    ({"n_factors": 7}, "table|mlp"),
    ({"solver": "adagrad"}, "table|mlp_state"),
    ({"solver": "sgd"}, "optimizer"),
    ({"deepfm_format": 2}, "version"),
    ({"hidden": "16,8"}, "hidden"),
    ({"n_fields": None}, "n_fields"),
    ({"kind": "ffm"}, "kind"),
])
def test_inconsistent_headers_are_refused(saved, tmp_path, change, match):
    """Files with a valid checksum whose header disagrees with the arrays."""
    _, path = saved
    raw = path.read_bytes()
    header, hlen = _header(raw)
    header.update(change)
    header = {k: v for k, v in header.items() if v is not None}
    p = tmp_path / "h.cfm"
    p.write_bytes(_rewrite(raw, header, hlen))
    with pytest.raises(cfm.ModelFileError, match=match):
        cfm.load(p)


def test_field_column_out_of_range_is_refused(saved, tmp_path):
    """The kernels index the MLP input by the table's field column: a file
    whose column disagrees with ``fields`` (checksum fixed) is refused."""
    m, path = saved
    raw = bytearray(path.read_bytes())
    header, hlen = _header(bytes(raw))
    entry = next(e for e in header["arrays"] if e["name"] == "table")
    width = entry["shape"][1]
    field_col = 8 + 1  # [w, v(8), field, ...]
    off = 16 + hlen + entry["offset"] + 4 * (width * 5 + field_col)
    struct.pack_into("<f", raw, off, 1000.0)
    raw[-4:] = struct.pack("<I", zlib.crc32(bytes(raw[:-4])))
    p = tmp_path / "f.cfm"
    p.write_bytes(bytes(raw))
    for scoring_only in (False, True):
        with pytest.raises(cfm.ModelFileError, match="field"):
            cfm.load(p, scoring_only=scoring_only)


# ------------------------------------------------------------------- CLI
def _cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(cfm.__file__)))]
        + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    return subprocess.run([sys.executable, "-m", "cfm", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_train_predict_info(libffm_file, tmp_path):
    model = tmp_path / "m.cfm"
    r = _cli("train", libffm_file, "-o", model, "--model", "deepfm", "--hidden", "16,8",
             "--batch-size", "64", "--optimizer", "adagrad", "--dropout", "0.1", "-e", "2",
             "--threads", "1", "--seed", "3", "--validate", libffm_file, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    m = cfm.load(model)
    assert isinstance(m, cfm.DeepFMClassifier)
    assert m.get_params()["hidden_layer_sizes"] == (16, 8)
    assert (m.optimizer, m.batch_size, m.dropout, m.n_epochs) == ("adagrad", 64, 0.1, 2)
    out = tmp_path / "p.txt"
    r = _cli("predict", model, libffm_file, "-o", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    Xf, _, _ = cfm.load_libffm(libffm_file)
    np.testing.assert_allclose(np.loadtxt(out), m.predict_proba(Xf)[:, 1], rtol=1e-6)
    r = _cli("info", model, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "deepfm (DeepFMClassifier)" in r.stdout and "MLP hidden 16-8" in r.stdout
    r = _cli("info", model, "--json", cwd=tmp_path)
    assert json.loads(r.stdout)["hidden_layer_sizes"] == [16, 8]


@pytest.mark.parametrize("args, match", [
    (["--model", "fm", "--hidden", "8"], "--hidden"),
    (["--model", "deepfm", "--hidden", "8,x"], "--hidden"),
    (["--model", "deepfm", "--hidden", "0"], "hidden"),
    (["--model", "deepfm", "--solver", "als"], "--solver"),
    (["--model", "deepfm", "--dropout", "1"], "dropout"),
    (["--model", "ffm", "--optimizer", "adam"], "--optimizer"),
])
def test_cli_usage_errors(libffm_file, tmp_path, args, match, capsys):
    from cfm import cli

    assert cli.main(["train", str(libffm_file), "-o", str(tmp_path / "m.cfm"), *args]) == 2
    assert match in capsys.readouterr().err


def test_cli_deepfm_needs_fields(tmp_path, capsys):
    from cfm import cli

    path = tmp_path / "t.svm"
    cfm.dump_libsvm(X, Y, path)
    assert cli.main(["train", str(path), "-o", str(tmp_path / "m.cfm"), "--model", "deepfm",
                     "-q"]) == 1
    assert "libffm" in capsys.readouterr().err


def test_blas_limits_are_restored_after_concurrent_calls():
    """The kernels limit BLAS to one thread while they run (a process-wide
    setting): calls from several threads must leave the limits as found."""
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def limits():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info()
                if i["user_api"] == "blas"]

    m = cfm.DeepFMClassifier(**SMALL).fit(X, Y, fields=FIELDS)
    ref = m.decision_function(X)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = limits()

        def work():
            for _ in range(20):
                assert np.array_equal(m.decision_function(X), ref)

        errors = errors_in_threads(work, [()] * 4)
        assert not errors
        assert limits() == before


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_row_scores_the_same_in_any_block(dtype):
    """float32 scoring's dense layers sum every value in one order
    (src/cfm/cfm_dense.h), so a row's score does not depend on the rows scored
    with it (float32 BLAS gemm rounds a row differently with its position in
    the block, ~1e-6 relative); float64 keeps BLAS, whose differences are ~1e-16."""
    m = cfm.DeepFMRegressor(**dict(SMALL, dtype=dtype)).fit(X, Y.astype(float), fields=FIELDS)
    perm = np.random.default_rng(3).permutation(X.shape[0])
    full = m.predict(X)
    check = np.testing.assert_array_equal if dtype == "float32" else \
        (lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13))
    check(m.predict(X[perm]), full[perm])
    check(np.concatenate([m.predict(X[i:i + 1]) for i in range(7)]), full[:7])
