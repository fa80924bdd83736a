"""Tests of cfm's data readers / writers (cfm/data.py, src/cfm/_parse.pyx)."""
import gzip
import os
import struct

import numpy as np
import pytest
import scipy.sparse as sp

import cfm
from cfm import data as D
from cfm.exceptions import DataFormatError

sk_datasets = pytest.importorskip("sklearn.datasets")


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def write(tmp_path, content, name="data.txt"):
    p = tmp_path / name
    p.write_bytes(content)
    return p


def same_csr(A, B):
    assert A.shape == B.shape
    assert np.array_equal(A.indptr, B.indptr)
    assert np.array_equal(A.indices, B.indices)
    assert A.data.dtype == B.data.dtype
    w = A.data.dtype.itemsize
    view = {4: np.uint32, 8: np.uint64}[w]
    assert np.array_equal(A.data.view(view), B.data.view(view))  # bit for bit (nan, -0.0)


def same_y(a, b):
    assert np.array_equal(np.asarray(a, dtype=np.float64).view(np.uint64),
                          np.asarray(b, dtype=np.float64).view(np.uint64))


def sk_load(path, **kw):
    return sk_datasets.load_svmlight_file(str(path), **kw)


def both(path, **kw):
    """(cfm result or exception, sklearn result or exception)."""
    kw.setdefault("dtype", np.float32)
    out = []
    for fn in (cfm.load_libsvm, sk_load):
        try:
            out.append(fn(path, **kw) if fn is cfm.load_libsvm else
                       fn(path, **{k: v for k, v in kw.items() if k != "n_jobs"}))
        except Exception as exc:  # noqa: BLE001
            out.append(exc)
    return out


def assert_same_as_sklearn(path, **kw):
    a, b = both(path, **kw)
    if isinstance(b, Exception):
        raise AssertionError(f"sklearn failed: {b!r}")
    if isinstance(a, Exception):
        raise a
    same_csr(a[0], b[0])
    same_y(a[1], b[1])
    assert isinstance(a[0], sp.csr_matrix)
    assert a[0].has_sorted_indices
    return a


NUMBERS = ["1", "0", "-0", "+2", "3.", "-.5", ".25", "1e-3", "1E+3", "2.5e-7", "-1.5E2",
           "0.1", "0.3333333333333333", "3.14159265358979323846264338327950288", "1e22",
           "1e23", "9007199254740993", "123456789012345678901", "4.9e-324", "1e-400", "1e400",
           "1.7976931348623157e308", "nan", "-nan", "inf", "-Infinity", "NaN", "1_000",
           "1_0.5_5e1_0", "0.000000000000000000000000001234", "00012", "7e-10", "-0.0"]


def random_libsvm(rng, n_rows=60, one_based=True, weird=True, crlf=False, max_idx=50):
    lines = []
    for _ in range(n_rows):
        k = int(rng.integers(0, 8))
        idx = np.sort(rng.choice(np.arange(1 if one_based else 0, max_idx), k, replace=False))
        lab = rng.choice(["1", "-1", "0", "2.5", "+1", "3e0"])
        toks = [str(lab)]
        if weird and rng.random() < 0.1:
            toks.append(f"qid:{int(rng.integers(0, 9))}")
        for j in idx:
            v = rng.choice(NUMBERS) if weird else f"{rng.normal():.6g}"
            toks.append(f"{j}:{v}")
        sep = " \t" if weird and rng.random() < 0.2 else " "
        line = sep.join(toks)
        if weird and rng.random() < 0.15:
            line += "   # comment: 1:2 ##"
        if weird and rng.random() < 0.1:
            line += "  "
        lines.append(line)
        if weird and rng.random() < 0.08:
            lines.append(rng.choice(["", "   ", "# only a comment", "\t"]))
    nl = "\r\n" if crlf else "\n"
    return nl.join(lines).encode()


# --------------------------------------------------------------------------
# libsvm vs scikit-learn
# --------------------------------------------------------------------------

CASES = {
    "basic": b"1 1:2 3:4.5\n0 2:1\n",
    "zero_based": b"1 0:2 3:4.5\n-1 2:1e-3\n",
    "formats": ("1 " + " ".join(f"{i + 1}:{v}" for i, v in enumerate(NUMBERS)) + "\n").encode(),
    "blank_comments": b"\n# header\n1 1:2 # tail 5:5\n\n   \n-1 2:3#x\n#\n",
    "crlf": b"1 1:2 3:4\r\n0 2:1\r\n",
    "trailing_spaces": b"1 1:2 3:4   \t\n0 2:1 \n",
    "no_final_newline": b"1 1:2\n0 2:1",
    "empty": b"",
    "only_comments": b"# nothing\n\n",
    "labels_only": b"1\n-1\n0.5\n",
    "qid": b"1 qid:3 1:2\n2 qid:x 2:1\n3 qid 4:1\n".replace(b"3 qid 4:1\n", b""),
    "explicit_zero": b"1 1:0 2:0.0 3:-0\n",
    "real_labels": b"0.25 1:1\n-7e3 2:1\nnan 3:1\ninf 1:1\n",
    "underscores": b"1_0 1_0:2_5\n",
    "tabs_vt_ff": b"1\t1:2\x0b2:3\x0c3:4\n",
    "big_numbers": b"1 1:1e308 2:1e-320 3:123456789012345678901234567890\n",
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_sklearn_cases(tmp_path, case, dtype):
    p = write(tmp_path, CASES[case])
    assert_same_as_sklearn(p, dtype=dtype)
    if case not in ("empty", "only_comments", "labels_only"):
        assert_same_as_sklearn(p, dtype=dtype, zero_based=True)
        assert_same_as_sklearn(p, dtype=dtype, n_features=4000)


@pytest.mark.parametrize("seed", range(6))
def test_matches_sklearn_random(tmp_path, seed):
    rng = np.random.default_rng(seed)
    one_based = seed % 2 == 0
    text = random_libsvm(rng, one_based=one_based, crlf=seed % 3 == 0)
    p = write(tmp_path, text)
    for dtype in (np.float32, np.float64):
        assert_same_as_sklearn(p, dtype=dtype)
    assert_same_as_sklearn(p, zero_based=one_based is False)
    if one_based:
        assert_same_as_sklearn(p, zero_based=False)


def test_large_file_pieces_and_threads(tmp_path):
    """Buffers above 1 MB are split into pieces parsed by several threads."""
    rng = np.random.default_rng(1)
    text = random_libsvm(rng, n_rows=40_000, weird=False, max_idx=5000)
    assert len(text) > 1 << 20
    p = write(tmp_path, text)
    ref = assert_same_as_sklearn(p, n_jobs=1)
    for n_jobs in (2, 3, -1):
        X, y = cfm.load_libsvm(p, n_jobs=n_jobs)
        same_csr(X, ref[0])
        same_y(y, ref[1])
    # chunk boundaries: parse with tiny chunks
    chunks = list(D._parse_stream(p, "libsvm", chunk_bytes=10_007, n_threads=2))
    assert len(chunks) > 100
    assert sum(len(c["labels"]) for c in chunks) == ref[0].shape[0]


def test_gzip_detected_by_magic(tmp_path):
    text = random_libsvm(np.random.default_rng(3))
    plain = write(tmp_path, text)
    gz = tmp_path / "data.bin"  # no .gz extension
    gz.write_bytes(gzip.compress(text))
    X1, y1 = cfm.load_libsvm(plain)
    X2, y2 = cfm.load_libsvm(gz)
    same_csr(X1, X2)
    same_y(y1, y2)


def test_n_features(tmp_path):
    p = write(tmp_path, b"1 1:2 3:4\n0 2:1\n")
    X, _ = cfm.load_libsvm(p, n_features=10)
    assert X.shape == (2, 10)
    X, _ = cfm.load_libsvm(p, n_features=3)  # one-based: 3 columns
    assert X.shape == (2, 3)
    with pytest.raises(DataFormatError, match=r"data.txt:1: cannot parse '3:4'"):
        cfm.load_libsvm(p, n_features=3, zero_based=True)
    p2 = write(tmp_path, b"1 0:2 3:4\n0 2:1\n", "z.txt")
    with pytest.raises(DataFormatError, match=r"z.txt:1: cannot parse '3:4'"):
        cfm.load_libsvm(p2, n_features=3)
    with pytest.raises(ValueError):
        cfm.load_libsvm(p, n_features=0)


def test_dtypes_and_types(tmp_path):
    p = write(tmp_path, b"1 1:2 3:4\n0 2:1\n")
    X, y = cfm.load_libsvm(p)
    assert X.dtype == np.float32 and y.dtype == np.float64
    assert X.indices.dtype == np.int32
    X, _ = cfm.load_libsvm(p, dtype=np.float64)
    assert X.dtype == np.float64
    assert cfm.load_libfm is cfm.load_libsvm


def test_large_indices_int64(tmp_path):
    p = write(tmp_path, b"1 5:1 3000000000:2\n")
    X, _ = cfm.load_libsvm(p, zero_based=True, n_features=3_000_000_001)
    assert X.indices.dtype == np.int64
    assert X.shape == (1, 3_000_000_001)
    assert X.indices.tolist() == [5, 3_000_000_000]


def test_unsorted(tmp_path):
    p = write(tmp_path, b"1 1:1\n1 3:2 1:1 3:4\n")
    a, b = both(p)
    assert isinstance(a, DataFormatError) and isinstance(b, ValueError)
    assert "data.txt:2: cannot parse '1:1'" in str(a)
    X, y = cfm.load_libsvm(p, allow_unsorted=True)
    assert X.has_canonical_format
    assert X.toarray().tolist() == [[1, 0, 0], [1, 0, 6]]


BAD = [
    (b"1 a:b", "a:b"), (b"1 3:", "3:"), (b"1 :3", ":3"), (b"x 1:2", "x"),
    (b"1 -1:2", "-1:2"), (b"1 2:3:4", "2:3:4"), (b"1 2:x", "2:x"), (b"1 2", "2"),
    (b"1 2:1e", "2:1e"), (b"1 2:0x10", "2:0x10"), (b"1 2:1__0", "2:1__0"),
    (b"1:2 3:4", "1:2"), (b"1 qid 2:3", "qid"), (b"1 2:3 qid:1", "qid:1"),
    (b"1 2:3\x00", "2:3\x00"), (b"1 2:nan(1)", "2:nan(1)"), (b"1 2.0:1", "2.0:1"),
    (b"1 99999999999999999999999:1", "99999999999999999999999:1"), (b"- 1:1", "-"),
]


@pytest.mark.parametrize("line,token", BAD)
def test_malformed(tmp_path, line, token):
    p = write(tmp_path, b"1 1:1\n\n# c\n" + line + b"\n1 1:1\n", "train.txt")
    a, b = both(p)
    assert isinstance(b, (ValueError, OverflowError)), b  # sklearn rejects it too
    assert isinstance(a, DataFormatError) and isinstance(a, ValueError)
    assert str(a).startswith(f"{p}:4: cannot parse {token!r}"), str(a)


def test_error_line_numbers_in_later_chunks(tmp_path):
    lines = [b"1 1:1 2:2"] * 30_000
    lines[25_000] = b"1 1:1 2:zz"
    p = write(tmp_path, b"\n".join(lines))
    with pytest.raises(DataFormatError, match=r":25001: cannot parse '2:zz'"):
        for _ in D._parse_stream(p, "libsvm", chunk_bytes=50_000, n_threads=2):
            pass
    with pytest.raises(DataFormatError, match=r":25001: cannot parse '2:zz'"):
        cfm.load_libsvm(p, n_jobs=2)


def test_zero_based_false_rejects_zero(tmp_path):
    p = write(tmp_path, b"1 0:1\n")
    with pytest.raises(DataFormatError, match="index 0"):
        cfm.load_libsvm(p, zero_based=False)


ALPHABET = b"0123456789:.-+eE #\n\t\r_xqidnaif\x00\xff"


@pytest.mark.parametrize("seed", range(4))
def test_fuzz_agrees_with_sklearn(tmp_path, seed):
    """Random corruptions: never crash; parse identically to sklearn or both raise."""
    rng = np.random.default_rng(100 + seed)
    base = random_libsvm(rng, n_rows=12)
    p = tmp_path / "fuzz.txt"
    n_ok = n_err = 0
    for _ in range(100):
        b = bytearray(base)
        for _ in range(int(rng.integers(1, 4))):
            op = rng.integers(0, 3)
            pos = int(rng.integers(0, len(b) + 1))
            ch = ALPHABET[int(rng.integers(0, len(ALPHABET)))]
            if op == 0:
                b.insert(pos, ch)
            elif op == 1 and pos < len(b):
                del b[pos]
            elif pos < len(b):
                b[pos] = ch
        p.write_bytes(bytes(b))
        a, s = both(p)
        if isinstance(s, OverflowError):  # sklearn: index >= 2**31; cfm accepts int64
            continue
        if isinstance(s, Exception):
            assert isinstance(a, DataFormatError), (bytes(b), s, a)
            assert str(a).startswith(f"{p}:")
            n_err += 1
        else:
            assert not isinstance(a, Exception), (bytes(b), a)
            same_csr(a[0], s[0])
            same_y(a[1], s[1])
            n_ok += 1
    assert n_ok > 5 and n_err > 5


@pytest.mark.parametrize("seed", range(3))
def test_fuzz_random_bytes_never_crash(tmp_path, seed):
    rng = np.random.default_rng(seed)
    p = tmp_path / "junk"
    for _ in range(60):
        n = int(rng.integers(0, 300))
        p.write_bytes(bytes(rng.choice(list(ALPHABET), n).astype(np.uint8)))
        for fn in (cfm.load_libsvm, cfm.load_libffm):
            try:
                fn(p)
            except DataFormatError:
                pass
        try:
            cfm.load_cache(p)
        except DataFormatError:
            pass


# --------------------------------------------------------------------------
# libffm
# --------------------------------------------------------------------------

def ffm_reference(text, n_features=None):
    labels, rows, cols, vals, flds = [], [], [], [], []
    for line in text.split(b"\n"):
        line = line.split(b"#", 1)[0].split()
        if not line:
            continue
        labels.append(float(line[0]))
        for tok in line[1:]:
            f, j, v = tok.split(b":")
            rows.append(len(labels) - 1)
            flds.append(int(f))
            cols.append(int(j))
            vals.append(float(v))
    n = max(cols) + 1 if cols else 0
    n = n if n_features is None else n_features
    X = sp.csr_matrix((np.array(vals, dtype=np.float32), (rows, cols)), shape=(len(labels), n))
    X.sum_duplicates()
    fields = np.full(n, -1, dtype=np.int32)
    for j, f in zip(reversed(cols), reversed(flds)):
        fields[j] = f
    return X, np.array(labels), fields


def random_libffm(rng, n_rows=80):
    lines = []
    for _ in range(n_rows):
        k = int(rng.integers(0, 7))
        toks = [rng.choice(["1", "0", "-1", "0.5"])]
        for _ in range(k):
            j = int(rng.integers(0, 30))
            f = j % 4 if rng.random() < 0.9 else int(rng.integers(0, 4))
            toks.append(f"{f}:{j}:{rng.choice(NUMBERS[:20])}")
        line = " ".join(toks)
        if rng.random() < 0.1:
            line += " # c"
        lines.append(line)
        if rng.random() < 0.05:
            lines.append("")
    return "\n".join(lines).encode()


@pytest.mark.parametrize("seed", range(4))
def test_libffm_matches_reference(tmp_path, seed):
    rng = np.random.default_rng(seed)
    text = random_libffm(rng)
    p = write(tmp_path, text, "t.ffm")
    X, y, fields = cfm.load_libffm(p, n_jobs=2)
    Xr, yr, fr = ffm_reference(text)
    assert X.has_canonical_format
    Xr.data = Xr.data.astype(np.float32)
    assert X.shape == Xr.shape
    assert np.array_equal(X.indptr, Xr.indptr) and np.array_equal(X.indices, Xr.indices)
    np.testing.assert_array_equal(X.data, Xr.data)
    same_y(y, yr)
    assert np.array_equal(fields, fr) and fields.dtype == np.int32
    X2, _, f2 = cfm.load_libffm(p, n_features=40)
    assert X2.shape[1] == 40 and len(f2) == 40 and (f2[30:] == -1).all()


def test_libffm_duplicates_and_first_field(tmp_path):
    p = write(tmp_path, b"1 0:3:1 1:3:2 2:1:5\n0 1:1:1 0:0:1\n", "d.ffm")
    X, y, fields = cfm.load_libffm(p)
    assert X.toarray().tolist() == [[0, 5, 0, 3], [1, 1, 0, 0]]
    assert fields.tolist() == [0, 2, -1, 0]


@pytest.mark.parametrize("line,token", [(b"1 1:2", "1:2"), (b"1 a:1:1", "a:1:1"),
                                        (b"1 1:a:1", "1:a:1"), (b"1 1:1:a", "1:1:a"),
                                        (b"1 -1:1:1", "-1:1:1"), (b"1 1:-1:1", "1:-1:1"),
                                        (b"1 1:1:1:1", "1:1:1:1"), (b"1 5:1:1", "5:1:1")])
def test_libffm_malformed(tmp_path, line, token):
    p = write(tmp_path, b"1 0:1:1\n" + line + b"\n", "bad.ffm")
    with pytest.raises(DataFormatError) as ei:
        cfm.load_libffm(p, n_fields=5)
    assert str(ei.value).startswith(f"{p}:2: cannot parse {token!r}")


def test_libffm_gzip_and_n_features_error(tmp_path):
    text = random_libffm(np.random.default_rng(9))
    gz = write(tmp_path, gzip.compress(text), "t.ffm.gz")
    X, y, f = cfm.load_libffm(gz)
    Xr, yr, fr = ffm_reference(text)
    np.testing.assert_array_equal(X.toarray(), Xr.toarray().astype(np.float32))
    with pytest.raises(DataFormatError, match="n_features"):
        cfm.load_libffm(gz, n_features=5)


# --------------------------------------------------------------------------
# writers
# --------------------------------------------------------------------------

def random_values(rng, n, dtype):
    v = rng.normal(size=n) * 10.0 ** rng.integers(-30, 30, size=n)
    v[::7] = np.round(v[::7])
    v[::11] = 1.0
    if dtype == np.float64:
        v[::13] = 5e-324
        v[::17] = np.nextafter(1.0, 2.0)
    return v.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("zero_based", [True, False])
def test_dump_libsvm_round_trip(tmp_path, dtype, zero_based):
    rng = np.random.default_rng(0)
    X = sp.random(300, 50, density=0.1, format="csr", random_state=0, dtype=dtype)
    X.data = random_values(rng, X.nnz, dtype)
    X = X.tolil()
    X[0, 0] = 1.0  # index 0 present (so "auto" does not shift zero-based files)
    X = X.tocsr()
    y = rng.normal(size=300)
    y[::3] = np.round(y[::3])
    p = tmp_path / "rt.svm"
    cfm.dump_libsvm(X, y, p, zero_based=zero_based)
    X2, y2 = cfm.load_libsvm(p, dtype=dtype, zero_based=zero_based, n_features=50)
    same_csr(X2, sp.csr_matrix(X))
    same_y(y2, y)
    Xs, ys = sk_load(p, dtype=dtype, zero_based=zero_based, n_features=50)
    same_csr(X2, Xs)


def test_dump_dense_and_gzip(tmp_path):
    A = np.array([[0, 1.5, 0], [2, 0, -3]], dtype=np.float64)
    p = tmp_path / "d.svm.gz"
    cfm.dump_libsvm(A, [1, 0], p)
    assert p.read_bytes()[:2] == b"\x1f\x8b"
    assert gzip.decompress(p.read_bytes()) == b"1 1:1.5\n0 0:2 2:-3\n"
    X, y = cfm.load_libsvm(p, dtype=np.float64)
    np.testing.assert_array_equal(X.toarray(), A)


def test_dump_libffm_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    X = sp.random(200, 40, density=0.1, format="csr", random_state=1, dtype=np.float32)
    X.data = random_values(rng, X.nnz, np.float32)
    fields = (np.arange(40) // 10).astype(np.int32)
    y = rng.integers(0, 2, 200).astype(float)
    p = tmp_path / "rt.ffm"
    cfm.dump_libffm(X, y, fields, p)
    X2, y2, f2 = cfm.load_libffm(p, n_features=40)
    same_csr(X2, X)
    same_y(y2, y)
    used = np.unique(X.indices)
    assert np.array_equal(f2[used], fields[used])
    with pytest.raises(ValueError):
        cfm.dump_libffm(X, y, fields[:5], p)
    with pytest.raises(ValueError, match="no field"):
        cfm.dump_libffm(X, y, np.full(40, -1), p)


# --------------------------------------------------------------------------
# cache, streaming, scan
# --------------------------------------------------------------------------

@pytest.fixture
def svm_file(tmp_path):
    rng = np.random.default_rng(5)
    return write(tmp_path, random_libsvm(rng, n_rows=500, weird=True), "s.svm")


@pytest.fixture
def ffm_file(tmp_path):
    return write(tmp_path, random_libffm(np.random.default_rng(6), n_rows=500), "s.ffm")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cache_round_trip_libsvm(tmp_path, svm_file, dtype):
    X, y = cfm.load_libsvm(svm_file, dtype=dtype)
    dst = cfm.convert_to_cache(svm_file, dtype=dtype, chunk_bytes=1000)
    assert dst == str(svm_file) + ".cfmdata"
    Xc, yc, fc = cfm.load_cache(dst, verify_checksums=True)
    assert fc is None
    same_csr(Xc, X)
    same_y(yc, y)
    assert Xc.indptr.dtype == np.int64
    assert isinstance(Xc.data, np.memmap) or isinstance(Xc.data.base, np.memmap)
    # usable by scipy and by cfm's validation
    np.testing.assert_allclose(Xc[3:17].toarray(), X[3:17].toarray())
    np.testing.assert_allclose(Xc @ np.ones(X.shape[1]), X @ np.ones(X.shape[1]), rtol=1e-6)
    from cfm._validation import check_X
    clean = write(tmp_path, b"1 1:2 3:4\n0 2:1 5:1e-3\n", "clean.svm")
    Xk, _, _ = cfm.load_cache(cfm.convert_to_cache(clean, dtype=dtype))
    chk = check_X(Xk)
    assert chk.data is Xk.data or np.shares_memory(chk.data, Xk.data)  # no copy
    info = cfm.scan_file(dst)
    assert (info["n_rows"], info["n_features"], info["nnz"]) == (X.shape[0], X.shape[1], X.nnz)


def test_cache_round_trip_libffm_and_gzip(tmp_path, ffm_file):
    X, y, f = cfm.load_libffm(ffm_file)
    gz = write(tmp_path, gzip.compress(ffm_file.read_bytes()), "s.ffm.gz")
    dst = cfm.convert_to_cache(gz, tmp_path / "c.cfmdata", chunk_bytes=777)
    Xc, yc, fc = cfm.load_cache(dst)
    same_csr(Xc, X)
    same_y(yc, y)
    assert np.array_equal(fc, f)


def test_cache_corruption(tmp_path, svm_file):
    dst = cfm.convert_to_cache(svm_file)
    good = open(dst, "rb").read()
    bad = tmp_path / "bad.cfmdata"

    def expect(content, match):
        bad.write_bytes(content)
        with pytest.raises(DataFormatError, match=match):
            cfm.load_cache(bad, verify_checksums=True)

    expect(good[:len(good) // 2], "truncated")
    expect(good[:10], "truncated")
    expect(b"", "not a cfm data cache")
    expect(b"hello world, this is not a cache" * 3, "not a cfm data cache")
    newer = bytearray(good)
    newer[8:10] = struct.pack("<H", 2)
    expect(bytes(newer), "newer")
    hdr = bytearray(good)
    hdr[30] ^= 0x01
    expect(bytes(hdr), "checksum")
    body = bytearray(good)
    body[-70] ^= 0xFF
    expect(bytes(body), "corrupted")
    expect(good + b"\0" * 64, "truncated or padded")
    # corrupted column index is caught by the structural check (without CRC)
    c = D._CacheFile(dst)
    off = c.header["_table"]["indices"]["offset"]
    del c
    idx = bytearray(good)
    idx[off:off + 4] = struct.pack("<i", 10**9)
    bad.write_bytes(bytes(idx))
    with pytest.raises(DataFormatError, match="out of range"):
        cfm.load_cache(bad)


def test_iter_blocks_text_gzip_cache(tmp_path, svm_file):
    X, y = cfm.load_libsvm(svm_file)
    gz = write(tmp_path, gzip.compress(svm_file.read_bytes()), "s.gz")
    cache = cfm.convert_to_cache(svm_file)
    for src in (svm_file, gz, cache):
        for block_rows in (1, 37, 10_000):
            if block_rows == 1 and src != cache:
                continue
            blocks = list(cfm.iter_blocks(src, block_rows=block_rows, chunk_bytes=2000))
            assert all(b[0].shape[0] == block_rows for b in blocks[:-1])
            assert all(b[0].shape[1] == X.shape[1] for b in blocks)
            Xb = sp.vstack([b[0] for b in blocks], format="csr")
            yb = np.concatenate([b[1] for b in blocks])
            assert np.array_equal(Xb.indptr, X.indptr)
            assert np.array_equal(Xb.indices, X.indices)
            same_csr(Xb, X)
            same_y(yb, y)
    # single pass with explicit n_features / zero_based
    blocks = list(cfm.iter_blocks(svm_file, block_rows=50, n_features=X.shape[1] + 5,
                                  zero_based=not (X.shape[1] < 50)))
    assert blocks[0][0].shape[1] == X.shape[1] + 5


def test_iter_blocks_libffm(tmp_path, ffm_file):
    X, y, f = cfm.load_libffm(ffm_file)
    blocks = list(cfm.iter_blocks(ffm_file, block_rows=64, chunk_bytes=3000))
    Xb = sp.vstack([b[0] for b in blocks], format="csr")
    assert np.array_equal(Xb.toarray(), X.toarray())
    assert all(np.array_equal(b[2], f) for b in blocks)
    cache = cfm.convert_to_cache(ffm_file)
    blocks = list(cfm.iter_blocks(cache, block_rows=100))
    assert np.array_equal(blocks[0][2], f)


def test_scan_file(svm_file, ffm_file):
    X, y = cfm.load_libsvm(svm_file)
    info = cfm.scan_file(svm_file)
    assert info["format"] == "libsvm"
    assert (info["n_rows"], info["n_features"], info["nnz"]) == (X.shape[0], X.shape[1], X.nnz)
    assert set(info["label_values_sample"]) == set(np.unique(y))
    Xf, yf, ff = cfm.load_libffm(ffm_file)
    info = cfm.scan_file(ffm_file)
    assert info["format"] == "libffm"
    assert (info["n_rows"], info["n_features"], info["nnz"]) == (Xf.shape[0], Xf.shape[1],
                                                                 # nnz before summing
                                                                 info["nnz"])
    assert info["n_fields"] == ff.max() + 1


def test_convert_n_features_and_format(tmp_path, svm_file):
    X, y = cfm.load_libsvm(svm_file, n_features=1000)
    dst = cfm.convert_to_cache(svm_file, tmp_path / "x.cfmdata", format="libsvm",
                               n_features=1000)
    Xc, yc, _ = cfm.load_cache(dst)
    same_csr(Xc, X)
    with pytest.raises(ValueError):
        cfm.convert_to_cache(svm_file, format="csv")
    assert not os.path.exists(str(tmp_path / "x.cfmdata") + ".tmp")
