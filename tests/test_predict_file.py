"""Batch scoring of files: model.predict_file (cfm/scoring.py) and the formatter."""
import gzip
import io

import numpy as np
import pytest
import scipy.sparse as sp

import cfm
from cfm import _format


@pytest.fixture(scope="module")
def data():
    X, y = cfm.make_fm_classification(3000, n_features=120, random_state=0)
    return sp.csr_matrix(X), y


@pytest.fixture(scope="module")
def fields():
    return (np.arange(120) % 6).astype(np.int32)


@pytest.fixture(scope="module")
def files(tmp_path_factory, data, fields):
    X, y = data
    d = tmp_path_factory.mktemp("pf")
    cfm.dump_libsvm(X, y, d / "a.svm")
    cfm.dump_libsvm(X, y, d / "a.svm.gz")
    cfm.dump_libffm(X, y, fields, d / "a.ffm")
    cfm.convert_to_cache(d / "a.svm", d / "a.cfmdata", zero_based=True)
    return d


@pytest.fixture(scope="module")
def fm(data):
    X, y = data
    return cfm.FMClassifier(n_factors=4, n_epochs=3, random_state=0).fit(X, y)


@pytest.fixture(scope="module")
def ffm(data, fields):
    X, y = data
    return cfm.FFMClassifier(n_factors=4, n_epochs=3, random_state=0).fit(X, y, fields=fields)


def read_out(path):
    return np.loadtxt(path, ndmin=1)


@pytest.mark.parametrize("name", ["a.svm", "a.svm.gz", "a.cfmdata", "a.ffm"])
def test_equals_predict_in_memory(fm, data, files, tmp_path, name):
    X, _ = data
    out = tmp_path / "p.txt"
    stats = fm.predict_file(files / name, out, zero_based=True)
    assert stats["n_rows"] == X.shape[0] and stats["ignored_values"] == 0
    np.testing.assert_allclose(read_out(out), fm.predict_proba(X)[:, 1], rtol=1e-8, atol=1e-9)
    fm.predict_file(files / name, out, raw=True, zero_based=True, precision=17)
    np.testing.assert_allclose(read_out(out), fm.decision_function(X), rtol=1e-12, atol=1e-12)


def test_order_preserved_across_small_blocks_and_chunks(fm, data, files, tmp_path):
    X, _ = data
    out = tmp_path / "p.txt"
    # 7-row blocks from ~2 KB chunks: hundreds of blocks through the thread pipeline
    stats = fm.predict_file(files / "a.svm", out, raw=True, block_rows=7, chunk_bytes=2048,
                            zero_based=True, precision=17, n_jobs=2)
    assert stats["n_rows"] == X.shape[0]
    np.testing.assert_allclose(read_out(out), fm.decision_function(X), rtol=1e-12)
    fm.predict_file(files / "a.cfmdata", out, raw=True, block_rows=5, precision=17)
    np.testing.assert_allclose(read_out(out), fm.decision_function(X), rtol=1e-12)


def test_ffm_fields_from_the_model(ffm, data, files, tmp_path):
    X, _ = data
    expect = ffm.predict_proba(X)[:, 1]
    for name in ("a.ffm", "a.svm"):  # libsvm rows score with the model's fields too
        out = tmp_path / f"{name}.txt"
        ffm.predict_file(files / name, out, block_rows=100, chunk_bytes=4096, zero_based=True)
        np.testing.assert_allclose(read_out(out), expect, rtol=1e-8, atol=1e-9)


def test_regressor_and_evaluation(data, files, tmp_path):
    X, y = data
    reg = cfm.FMRegressor(n_factors=2, n_epochs=2, random_state=0).fit(X, y)
    out = tmp_path / "r.txt"
    stats = reg.predict_file(files / "a.svm", out, raw=False, evaluate=True, zero_based=True)
    pred = reg.predict(X)
    np.testing.assert_allclose(read_out(out), pred, rtol=1e-8, atol=1e-9)
    assert stats["metrics"]["rmse"] == pytest.approx(np.sqrt(np.mean((y - pred) ** 2)))


def test_classifier_evaluation(fm, data, files, tmp_path):
    from cfm._metrics import auc, logloss

    X, y = data
    stats = fm.predict_file(files / "a.svm", tmp_path / "p.txt", evaluate=True, zero_based=True)
    s = fm.decision_function(X)
    assert stats["metrics"]["auc"] == pytest.approx(auc(y, s))
    assert stats["metrics"]["logloss"] == pytest.approx(logloss(y, s))


def test_features_beyond_the_model_are_ignored(fm, tmp_path):
    path = tmp_path / "wide.svm"
    path.write_text("1 0:1 5:1 500:2\n0 3:1 119:0.5 120:1 7000:1\n1 999:1\n")
    out = tmp_path / "p.txt"
    stats = fm.predict_file(path, out, raw=True, zero_based=True, precision=17)
    assert stats["ignored_values"] == 4
    X = sp.csr_matrix((np.array([1, 1, 1, 0.5], dtype=np.float32), [0, 5, 3, 119],
                       [0, 2, 4, 4]), shape=(3, 120))
    np.testing.assert_allclose(read_out(out), fm.decision_function(X), rtol=1e-12)


def test_unsorted_and_duplicate_ids_are_summed(fm, tmp_path):
    path = tmp_path / "u.svm"
    path.write_text("1 7:1 3:2 7:1\n")
    out = tmp_path / "p.txt"
    fm.predict_file(path, out, raw=True, zero_based=True, precision=17)
    X = sp.csr_matrix((np.array([2, 2], dtype=np.float32), [3, 7], [0, 2]), shape=(1, 120))
    np.testing.assert_allclose(read_out(out), fm.decision_function(X), rtol=1e-12)


def test_zero_based_rules(data, tmp_path):
    X, y = data
    one = tmp_path / "one.svm"
    cfm.dump_libsvm(X, y, one, zero_based=False)  # ids 1..n: "auto" reads them shifted
    m = cfm.FMClassifier(n_factors=2, n_epochs=2, random_state=0).fit(str(one))
    assert m._input_zero_based is False
    out = tmp_path / "p.txt"
    m.predict_file(one, out, raw=True, precision=17)  # the model's rule: one-based
    Xl, _ = cfm.load_libsvm(one)
    np.testing.assert_allclose(read_out(out), m.decision_function(Xl), rtol=1e-12)
    m2 = cfm.load(_saved(m, tmp_path))  # recorded in the model file
    assert m2._input_zero_based is False
    # a model fitted in memory reads ids as its columns (zero-based), never a
    # per-file guess; explicit zero_based / "auto" override it
    m3 = cfm.FMClassifier(n_factors=2, n_epochs=2, random_state=0).fit(Xl, y)
    assert m3._input_zero_based is True
    for zb in (False, "auto"):
        m3.predict_file(one, out, raw=True, precision=17, zero_based=zb)
        np.testing.assert_allclose(read_out(out), m3.decision_function(Xl), rtol=1e-12)
    zero = tmp_path / "zero_based.svm"
    cfm.dump_libsvm(Xl, y, zero, zero_based=True)
    m3.predict_file(zero, out, raw=True, precision=17)
    np.testing.assert_allclose(read_out(out), m3.decision_function(Xl), rtol=1e-12)
    with pytest.raises(cfm.DataFormatError, match=r"zero.svm:1: .*index 0"):
        zero = tmp_path / "zero.svm"
        zero.write_text("1 0:1\n")
        m.predict_file(zero, out)  # id 0 in a file read one-based
    with pytest.raises(ValueError, match="zero_based"):
        m.predict_file(one, out, zero_based="maybe")


def _saved(m, tmp_path):
    p = tmp_path / "m.cfm"
    m.save(p)
    return p


def test_streams_in_and_out(fm, data, files):
    X, _ = data
    src = io.BufferedReader(io.BytesIO((files / "a.svm").read_bytes()))
    out = io.BytesIO()
    fm.predict_file(src, out, raw=True, zero_based=True, precision=17, chunk_bytes=1000)
    got = np.loadtxt(io.StringIO(out.getvalue().decode()))
    np.testing.assert_allclose(got, fm.decision_function(X), rtol=1e-12)
    gz = io.BufferedReader(io.BytesIO(gzip.compress((files / "a.ffm").read_bytes())))
    out = io.BytesIO()
    fm.predict_file(gz, out, raw=True, precision=17)
    got = np.loadtxt(io.StringIO(out.getvalue().decode()))
    np.testing.assert_allclose(got, fm.decision_function(X), rtol=1e-12)
    with pytest.raises(ValueError, match="zero_based"):
        fm.predict_file(io.BufferedReader(io.BytesIO(b"1 1:1\n")), io.BytesIO(),
                        zero_based="auto")


def test_errors_leave_no_output(fm, tmp_path):
    bad = tmp_path / "bad.svm"
    bad.write_text("1 1:1\n0 2:1\n1 3:x\n")
    out = tmp_path / "p.txt"
    with pytest.raises(cfm.DataFormatError, match=r"bad.svm:3: cannot parse '3:x'"):
        fm.predict_file(bad, out, zero_based=True)
    assert not out.exists() and not list(tmp_path.glob("p.txt.tmp*"))
    nan = tmp_path / "nan.svm"
    nan.write_text("1 1:1\n0 2:nan\n")
    with pytest.raises(cfm.DataFormatError, match="non-finite"):
        fm.predict_file(nan, out, zero_based=True)
    with pytest.raises(FileNotFoundError):
        fm.predict_file(tmp_path / "missing.svm", out)
    with pytest.raises(cfm.NotFittedError):
        cfm.FMClassifier().predict_file(bad, out)
    for kw in ({"block_rows": 0}, {"precision": 0}, {"precision": 18}, {"format": "csv"}):
        with pytest.raises(ValueError):
            fm.predict_file(bad, out, zero_based=True, **kw)


def test_empty_file(fm, tmp_path):
    empty = tmp_path / "e.svm"
    empty.write_text("# only a comment\n\n")
    out = tmp_path / "p.txt"
    assert fm.predict_file(empty, out, zero_based=True)["n_rows"] == 0
    assert out.read_bytes() == b""


def test_format_scores():
    v = np.array([0.0, -0.0, 1.5, -2.25e-7, 1e300, 123456789.0])
    assert bytes(_format.format_scores(v, 6)) == b"0\n0\n1.5\n-2.25e-07\n1e+300\n1.23457e+08\n"
    big = np.random.default_rng(0).normal(size=50_000)
    txt = bytes(_format.format_scores(big, 17, False, 2))
    np.testing.assert_array_equal(np.loadtxt(io.BytesIO(txt)), big)
    p = np.loadtxt(io.BytesIO(bytes(_format.format_scores(np.array([-800.0, 0.0, 800.0]),
                                                          9, True))))
    np.testing.assert_array_equal(p, [0.0, 0.5, 1.0])
    assert _format.format_scores(np.zeros(0)) == bytearray()
    with pytest.raises(ValueError):
        _format.format_scores(v, 0)


# --------------------------------------------------------------------------- fast parser

def _general(buf, ffm, shift):
    from cfm import _parse

    r = _parse.parse_chunk(buf, _parse.FMT_LIBFFM if ffm else _parse.FMT_LIBSVM, True,
                           not shift, False, 2**63 - 1, -1, 1)
    assert r["error"] is None
    return r


def _fast(buf, ffm, shift, n_features=10**9, n_pieces=0):
    from cfm import _fastparse

    return _fastparse.parse_plain(buf, ffm, shift, n_features, 2, n_pieces)


@pytest.mark.parametrize("ffm", [False, True])
@pytest.mark.parametrize("shift", [False, True])
def test_fast_parser_is_bit_identical_to_the_general_one(ffm, shift):
    rng = np.random.default_rng(7)
    lines = []
    for i in range(3000):
        label = rng.choice(["0", "1", "-1", "0.25", "-3.5", "12.000", ".5", "-0", "7."])
        ids = np.unique(rng.integers(1, 500, rng.integers(0, 12)))
        vals = rng.choice(["1", "0.5", "-2.25", "0.1", "3.14159265358979", "100", "0", "0.000001",
                           "123456.789", "-0.0", "9007199254740992", "0.123456789012345"],
                          len(ids))
        toks = [(f"{j % 7}:" if ffm else "") + f"{j}:{v}" for j, v in zip(ids, vals)]
        sep = rng.choice([" ", "  ", "\t"])
        lines.append(label + (sep + sep.join(toks) if toks else "") + rng.choice(["", " ", "\r"]))
    buf = ("\n".join(lines) + "\n").encode()
    g = _general(buf, ffm, shift)
    for n_pieces in (1, 5):
        pieces = _fast(buf, ffm, shift, n_pieces=n_pieces)
        assert pieces is not None and len(pieces) == n_pieces
        y = np.concatenate([p[0] for p in pieces])
        ind = np.concatenate([p[2] for p in pieces]).astype(np.int64)
        val = np.concatenate([p[3] for p in pieces])
        np.testing.assert_array_equal(y, g["labels"])  # bitwise, incl. -0.0
        assert np.array_equal(np.signbit(y), np.signbit(g["labels"]))
        np.testing.assert_array_equal(ind, g["indices"].astype(np.int64) - shift)
        np.testing.assert_array_equal(val.view(np.int32), g["values"].view(np.int32))
        ends = np.concatenate([p[1][1:] + off for p, off in
                               zip(pieces, np.cumsum([0] + [len(p[2]) for p in pieces[:-1]]))])
        np.testing.assert_array_equal(ends, g["row_end"])


@pytest.mark.parametrize("ffm", [False, True])
def test_fast_parser_ids_of_every_length(ffm):
    """Ids and fields of 1 to 18 digits (8 bytes at a time below 8 digits),
    with leading zeros, at the very end of the buffer (fewer than 8 bytes
    left, no newline) and before every separator, match the general parser.
    libffm ids are 32-bit (at most 2**31 - 2): up to 9 digits, zero-padded
    to up to 18; larger ones go to the general parser, which refuses them."""
    rng = np.random.default_rng(3)
    lines = []
    for i in range(2000):
        toks = []
        for _ in range(rng.integers(1, 6)):
            nd = int(rng.integers(1, 10 if ffm else 19))
            j = int(rng.integers(10 ** (nd - 1) if nd > 1 else 0, 10 ** nd))
            js = str(j).zfill(min(18, nd + int(rng.integers(0, 10))) if rng.random() < 0.2 else nd)
            fld = str(int(rng.integers(0, 10 ** int(rng.integers(1, 9)))))
            toks.append((fld + ":" if ffm else "") + js + ":" + rng.choice(["1", "0.5", "7"]))
        lines.append("1 " + rng.choice([" ", "\t"]).join(toks) + rng.choice(["", "\r"]))
    for tail in ("", "\n"):
        buf = ("\n".join(lines) + tail).encode()
        g = _general(buf, ffm, False)
        pieces = _fast(buf, ffm, False, n_features=2**31 - 1, n_pieces=3)
        assert pieces is not None
        keep = g["indices"] < 2**31 - 1
        ind = np.concatenate([p[2] for p in pieces]).astype(np.int64)
        np.testing.assert_array_equal(ind, g["indices"][keep])
        assert sum(p[4] for p in pieces) == int((~keep).sum())
    if ffm:
        for tok in (b"2147483647:1:1", b"1:2147483647:1", b"1:000000000002147483647:1"):
            assert _fast(b"1 " + tok + b"\n", True, False, n_pieces=1) is None
        assert _fast(b"1 2147483646:2147483646:1\n", True, False, n_pieces=1)[0][4] == 1
        for tok in (b"00000000005:7:1", b"1234567:7:1", b"12345678:7:1", b"0:7:1"):  # fields
            assert _fast(b"1 " + tok + b"\n", True, False, n_pieces=1)[0][2].tolist() == [7]
    for short in (b"1 5:1", b"1 12:1", b"0 1234567:1", b"0 12345678:1", b"1 3:1 7"):
        assert (_fast(short, False, False, n_pieces=1) is None) == short.endswith(b" 7")
        if not short.endswith(b" 7"):
            assert _fast(short, False, False, n_pieces=1)[0][2][-1] == int(
                short.split(b" ")[-1].split(b":")[0])


def test_fast_parser_drops_ids_beyond_the_model_and_flags_unsorted():
    pieces = _fast(b"1 3:1 9:2 12:1\n0 5:1 2:1\n", False, False, n_features=10, n_pieces=1)
    y, indptr, ind, val, dropped, unsorted = pieces[0]
    assert list(ind) == [3, 9, 5, 2] and list(indptr) == [0, 2, 4] and dropped == 1 and unsorted


@pytest.mark.parametrize("text", [
    b"# comment\n1 1:1\n", b"1 1:1\n\n0 2:1\n", b"1 qid:3 1:1\n", b"1 1:1e-3\n", b"+1 1:1\n",
    b"1 1:inf\n", b"1 1:nan\n", b"1 1_0:1\n", b"1 1:1 # c\n", b"1 1:12345678901234567890\n",
    b"1 1:x\n", b"1 1\n", b"1 :1\n", b"x 1:1\n", b"1 -1:1\n", b" 1 1:1\n", b"1 1:1\x0b2:1\n",
    b"1 1:0.00000000000000000000001\n", b"1 1:1234567890123456789\n",
])
def test_fast_parser_hands_other_syntax_to_the_general_parser(text):
    assert _fast(text, False, False) is None


def test_fast_parser_one_based_id_zero_goes_to_the_general_parser():
    assert _fast(b"1 0:1\n", False, True) is None
    assert _fast(b"1 0:1\n", False, False) is not None


def test_mixed_chunks_and_error_lines(fm, tmp_path):
    # plain chunks, a chunk with comments (general parser), then an error: the
    # line number counts the lines of all previous chunks
    plain = "".join(f"1 {i % 100}:1 {100 + i % 20}:0.5\n" for i in range(300))
    path = tmp_path / "mixed.svm"
    path.write_text(plain + "# a comment\n0 3:1e0\n" + plain)
    out = tmp_path / "p.txt"
    fm.predict_file(path, out, raw=True, zero_based=True, precision=17, chunk_bytes=1500)
    X, _ = cfm.load_libsvm(path, n_features=120, zero_based=True)
    np.testing.assert_allclose(read_out(out), fm.decision_function(X), rtol=1e-12)
    path.write_text(plain + plain + "1 3:1 4:bad\n")
    with pytest.raises(cfm.DataFormatError, match=r"mixed.svm:601: cannot parse '4:bad'"):
        fm.predict_file(path, out, zero_based=True, chunk_bytes=1000)


def test_format_fast_path_is_byte_identical_to_snprintf():
    rng = np.random.default_rng(3)
    v = np.concatenate([rng.random(100_000), rng.normal(0, 3, 50_000),
                        10 ** rng.uniform(-6, 12, 50_000) * rng.choice([-1, 1], 50_000),
                        np.round(rng.random(20_000), 9), np.round(rng.random(20_000) * 1e3, 5),
                        [0.99999999996, 9.9999999995, 1e-4, 0.1, 1.0, 10.0, 1e8, 999999999.6,
                         123456789.5, 0.5, 1e9, -0.0, np.nan, np.inf, -np.inf]])
    for precision in (1, 4, 6, 9, 10):
        for sig in (False, True):
            fast = _format.format_scores(v, precision, sig, 2, True)
            assert fast == _format.format_scores(v, precision, sig, 2, False)


# --------------------------------------------------------------------------- model files

@pytest.mark.parametrize("kind", ["fm", "ffm"])
@pytest.mark.parametrize("scoring_only", [True, False])
def test_predict_model_file_equals_load_then_predict(fm, ffm, files, tmp_path, kind,
                                                    scoring_only):
    """predict_model_file parses while the model loads: same bytes as
    load() followed by predict_file."""
    from cfm._loader import predict_model_file

    model = fm if kind == "fm" else ffm
    mpath = tmp_path / "m.cfm"
    model.save(mpath)
    src = files / ("a.svm" if kind == "fm" else "a.ffm")
    m2, stats = predict_model_file(mpath, src, tmp_path / "a.txt", scoring_only=scoring_only,
                                   zero_based=True, block_rows=500, chunk_bytes=20_000)
    cfm.load(mpath).predict_file(src, tmp_path / "b.txt", zero_based=True)
    assert (tmp_path / "a.txt").read_bytes() == (tmp_path / "b.txt").read_bytes()
    assert stats["n_rows"] == 3000 and type(m2) is type(model)
    assert getattr(m2, "_scoring_only", False) == scoring_only


def test_predict_model_file_errors_leave_no_output(fm, files, tmp_path):
    from cfm._loader import predict_model_file

    mpath = tmp_path / "m.cfm"
    fm.save(mpath)
    raw = bytearray(mpath.read_bytes())
    raw[len(raw) - 100] ^= 0x10  # inside the arrays: only the checksum tells
    bad = tmp_path / "bad.cfm"
    bad.write_bytes(bytes(raw))
    out = tmp_path / "out.txt"
    with pytest.raises(cfm.ModelFileError, match="checksum"):
        predict_model_file(bad, files / "a.svm", out, zero_based=True)
    assert not out.exists() and list(tmp_path.glob("out.txt*")) == []
    bad.write_bytes(b"not a model at all, not a model at all")
    with pytest.raises(cfm.ModelFileError, match="not a cfm model"):
        predict_model_file(bad, files / "a.svm", out, zero_based=True)
    with pytest.raises(FileNotFoundError):
        predict_model_file(mpath, tmp_path / "missing.svm", out)
    assert not out.exists()
