"""Issue 11 (hardening), data input: one regression test per reproducer.

Text files, gzip, caches, pandas, stdin and the CLI's argument errors may only
raise the documented exceptions (cfm.DataFormatError naming file and line,
ValueError / TypeError for API misuse) or exit with the documented status (1,
2 for usage errors), never allocate more than the input justifies, never
hang.  Memory blow-up reproducers run in a subprocess under RLIMIT_AS, so that
a regression fails the test instead of the machine.
"""
import gzip
import json
import os
import stat
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
import scipy.sparse as sp

import cfm
from cfm import cli
from conftest import errors_in_threads
from cfm import data as D
from cfm.exceptions import DataFormatError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           MALLOC_ARENA_MAX="2")
LIMIT = 2 << 30  # RLIMIT_AS of the subprocesses: the interpreter + cfm take ~0.5 GiB


def _limited(limit):
    def pre():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return pre


def run_limited(code, limit=LIMIT, timeout=120):
    """Python code (with outcome() defined) in a subprocess under RLIMIT_AS;
    returns the JSON it prints last."""
    code = _OUTCOME + textwrap.dedent(code)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       env=ENV, cwd=ROOT, timeout=timeout, preexec_fn=_limited(limit))
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    return json.loads(p.stdout.decode().strip().splitlines()[-1])


def cfm_cli(*args, stdin=None, limit=LIMIT, preexec=None, timeout=120):
    pre = _limited(limit)
    if preexec is not None:
        def both():
            pre()
            preexec()
        fn = both
    else:
        fn = pre
    p = subprocess.run([sys.executable, "-m", "cfm", *map(str, args)], input=stdin,
                       capture_output=True, env=ENV, cwd=ROOT, timeout=timeout, preexec_fn=fn)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def one_error(err, *needles):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# Outcome of a call in the subprocess: "ok", or the exception's class and message.
_OUTCOME = """
import json, cfm
def outcome(fn):
    try:
        fn()
        return ["ok", ""]
    except Exception as exc:
        return [type(exc).__name__, str(exc)]
"""


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    d = tmp_path_factory.mktemp("hard")
    X, y = cfm.make_fm_classification(400, n_features=30, random_state=3)
    cfm.dump_libsvm(X, y, d / "ok.svm")
    cfm.dump_libffm(X, y, np.arange(30) % 3, d / "ok.ffm")
    return d


@pytest.fixture(scope="module")
def model(d):
    X, y = cfm.load_libsvm(d / "ok.svm", zero_based=True)
    m = cfm.FMClassifier(n_factors=2, n_epochs=2, random_state=0).fit(X, y)
    m.save(d / "m.cfm")
    return m


# --------------------------------------------------------------------------- item 3

def test_item3_huge_ids_are_refused_before_allocating(tmp_path):
    """A libsvm id of 2**40 (cfm train: 64 TiB), a libffm feature id of 2**31
    (load_libffm: 8 GiB) or 2**31 - 2 (a field array beyond the memory left):
    DataFormatError at file:line, under a 2 GiB address-space limit."""
    (tmp_path / "big.svm").write_bytes(b"1 1099511627776:1\n0 3:1\n")
    (tmp_path / "big.ffm").write_bytes(b"1 0:2147483648:1\n0 1:3:1\n")
    (tmp_path / "big2.ffm").write_bytes(b"1 1:3:1\n0 0:2147483646:1\n")
    out = run_limited(f"""
    d = {str(tmp_path)!r}
    print(json.dumps({{
        "fit": outcome(lambda: cfm.FMClassifier(n_epochs=1).fit(d + "/big.svm")),
        "ffm": outcome(lambda: cfm.load_libffm(d + "/big.ffm")),
        "ffm2": outcome(lambda: cfm.load_libffm(d + "/big2.ffm")),
        "fit_ffm2": outcome(lambda: cfm.FFMClassifier(n_epochs=1).fit(d + "/big2.ffm")),
        "svm": outcome(lambda: cfm.load_libsvm(d + "/big.svm")),
    }}))
    """)
    assert out["fit"][0] == "DataFormatError"
    assert "big.svm:1: feature id 1099511627776" in out["fit"][1]
    assert "memory available" in out["fit"][1]
    assert out["ffm"][0] == "DataFormatError" and "big.ffm:1: " in out["ffm"][1]
    assert "2147483646" in out["ffm"][1]  # the documented limit
    for k in ("ffm2", "fit_ffm2"):
        assert out[k][0] == "DataFormatError" and "big2.ffm:2: feature id 2147483646" in out[k][1]
    assert out["svm"] == ["ok", ""]  # a CSR of 2**40 columns allocates nothing per column
    rc, _, err = cfm_cli("train", tmp_path / "big.svm", "-o", tmp_path / "m.cfm", "-q")
    assert rc == 1
    one_error(err, "big.svm:1: feature id 1099511627776")
    assert not (tmp_path / "m.cfm").exists()


def test_item3_dev_zero_and_files_without_newline(tmp_path, model, d):
    """/dev/zero as a data path (or stdin), a 400 MB file without a newline:
    DataFormatError at file:1 after reading about MAX_LINE_BYTES, not a read
    until memory runs out."""
    flat = tmp_path / "flat.svm"
    with open(flat, "wb") as f:
        f.truncate(400 << 20)  # sparse: 400 MB of NUL bytes, no newline
    out = run_limited(f"""
    print(json.dumps({{
        "zero": outcome(lambda: cfm.load_libsvm("/dev/zero")),
        "flat": outcome(lambda: cfm.load_libffm({str(flat)!r})),
    }}))
    """)
    for k, name in (("zero", "/dev/zero"), ("flat", str(flat))):
        assert out[k][0] == "DataFormatError", out[k]
        assert out[k][1].startswith(f"{name}:1: line longer than"), out[k]
    rc, _, err = cfm_cli("train", "/dev/zero", "-o", tmp_path / "m2.cfm", "-q")
    assert rc == 1
    one_error(err, "/dev/zero:1: line longer than")
    with open("/dev/zero", "rb") as zero:
        p = subprocess.run([sys.executable, "-m", "cfm", "predict", d / "m.cfm", "-"],
                           stdin=zero, capture_output=True, env=ENV, cwd=ROOT, timeout=120,
                           preexec_fn=_limited(LIMIT))
    assert p.returncode == 1
    one_error(p.stderr.decode(), "<stdin>:1: line longer than")


def test_item3_long_lines_up_to_the_limit_are_read(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "MAX_LINE_BYTES", 4096)
    p = tmp_path / "long.svm"
    long_line = b"1 " + b" ".join(b"%d:1" % j for j in range(700))  # ~4 kB
    assert len(long_line) < 4096
    p.write_bytes(b"0 1:1\n" + long_line + b"\n0 2:1\n")
    blocks = list(cfm.iter_blocks(p, n_features=700, zero_based=True, chunk_bytes=1000))
    assert sum(b[0].shape[0] for b in blocks) == 3
    p.write_bytes(b"0 1:1\n0 2:1\n" + long_line + b" 9999:1 10000:1 10001:1\n")
    with pytest.raises(DataFormatError, match=r"long.svm:3: line longer than 4,096 bytes"):
        list(cfm.iter_blocks(p, n_features=20000, zero_based=True, chunk_bytes=1000))


def test_item3_huge_id_with_n_features_given(tmp_path, model, d):
    """With n_features (or a model) given, a huge id is an error at its line
    (loaders) or ignored and counted (scoring), never an allocation."""
    p = tmp_path / "h.svm"
    p.write_bytes(b"1 1:1\n0 2:1 1099511627776:1\n")
    with pytest.raises(DataFormatError, match=r"h.svm:2: .*1099511627776:1.*>= n_features"):
        cfm.load_libsvm(p, n_features=30, zero_based=True)
    stats = model.predict_file(p, tmp_path / "p.txt")
    assert stats["n_rows"] == 2 and stats["ignored_values"] == 1
    with pytest.raises(ValueError, match="n_features"):
        cfm.load_libffm(d / "ok.ffm", n_features=2**40)


# --------------------------------------------------------------------------- item 7

def test_item7_models_fitted_on_arrays_read_ids_zero_based(tmp_path, model, d):
    """The same rows score the same from test.svm and test.svm without its 0:
    entries (the old per-file guess shifted every id by one), in Python and
    with cfm predict; a model file without the key reads ids zero-based."""
    X, y = cfm.load_libsvm(d / "ok.svm", zero_based=True)
    X0 = X.tolil()
    X0[:, 0] = 0
    X0 = sp.csr_matrix(X0)
    X0.eliminate_zeros()
    no0 = tmp_path / "no0.svm"
    cfm.dump_libsvm(X0, y, no0)
    assert b" 0:" not in no0.read_bytes()
    assert model._input_zero_based is True
    out = tmp_path / "p.txt"
    model.predict_file(no0, out, raw=True, precision=17)
    np.testing.assert_allclose(np.loadtxt(out), model.decision_function(X0), rtol=1e-12)
    rc, so, err = cfm_cli("predict", d / "m.cfm", no0, "--raw", "--precision", "17", "-q")
    assert rc == 0, err
    np.testing.assert_allclose(np.loadtxt(so.splitlines()), model.decision_function(X0),
                               rtol=1e-12)
    # stdin: no per-file guess needed any more
    rc, so, err = cfm_cli("predict", d / "m.cfm", "-", "--raw", "--precision", "17", "-q",
                          stdin=no0.read_bytes())
    assert rc == 0, err
    np.testing.assert_allclose(np.loadtxt(so.splitlines()), model.decision_function(X0),
                               rtol=1e-12)
    # a model file written before the key existed: zero-based
    from cfm import _estimator as _base

    orig = _base.BaseFM._common_header

    def old_header(self):
        h = orig(self)
        h.pop("input_zero_based", None)
        return h

    old = tmp_path / "old.cfm"
    try:
        _base.BaseFM._common_header = old_header
        model.save(old)
    finally:
        _base.BaseFM._common_header = orig
    m2 = cfm.load(old)
    assert m2._input_zero_based is True
    from cfm._loader import predict_model_file

    _, stats = predict_model_file(old, no0, out, raw=True, precision=17)
    np.testing.assert_allclose(np.loadtxt(out), model.decision_function(X0), rtol=1e-12)


def test_item7_stdin_auto_message_names_the_cli_flag(d, model):
    rc, _, err = cfm_cli("predict", d / "m.cfm", "-", "--zero-based", "auto",
                         stdin=(d / "ok.svm").read_bytes())
    assert rc == 2
    line = one_error(err, "--zero-based")
    assert "zero_based=" not in line


def test_item7_eval_file_read_with_the_training_files_id_base(tmp_path, d):
    """A validation file without id 0 is read like the (zero-based) training
    file, not shifted by its own "auto" guess."""
    X, y = cfm.load_libsvm(d / "ok.svm", zero_based=True)
    Xv = X[:100].tolil()
    Xv[:, 0] = 0
    Xv = sp.csr_matrix(Xv)
    Xv.eliminate_zeros()
    cfm.dump_libsvm(Xv, y[:100], tmp_path / "v.svm")
    m = cfm.FMClassifier(n_factors=2, n_epochs=1, random_state=0, n_jobs=1)
    m.fit(str(d / "ok.svm"), eval_set=str(tmp_path / "v.svm"))
    from cfm._metrics import METRICS

    ref = METRICS["logloss"][0](np.where(y[:100] > 0, 1.0, 0.0), m.decision_function(Xv))
    assert m.history_[-1]["eval_logloss"] == pytest.approx(ref, rel=1e-9)


# --------------------------------------------------------------------------- item 8

@pytest.mark.parametrize("tok", [b"4294967299:1:1", b"2147483648:1:1", b"2147483647:1:1",
                                 b"99999999999999999999:1:1", b"1:2147483647:1",
                                 b"1:4294967299:1"])
def test_item8_libffm_ids_out_of_range_refused_at_file_line(tmp_path, tok):
    p = tmp_path / "f.ffm"
    p.write_bytes(b"0 1:3:1\n# comment\n1 " + tok + b"\n")
    with pytest.raises(DataFormatError, match=r"f.ffm:3: cannot parse .*out of range"):
        cfm.load_libffm(p)
    with pytest.raises(DataFormatError, match=r"f.ffm:3: "):
        cfm.FFMClassifier(n_epochs=1).fit(str(p))


def test_item8_fast_and_general_parsers_agree_on_ranges(tmp_path, model, d):
    """Scoring (the fast parser for plain lines) refuses what the loaders refuse."""
    p = tmp_path / "f.ffm"
    p.write_bytes(b"0 1:3:1\n1 4294967299:1:1\n")
    with pytest.raises(DataFormatError, match=r"f.ffm:2: "):
        model.predict_file(p, tmp_path / "p.txt")
    assert not (tmp_path / "p.txt").exists()
    rc, _, err = cfm_cli("train", p, "--model", "ffm", "-o", tmp_path / "m.cfm", "-q")
    assert rc == 1
    one_error(err, "f.ffm:2: ", "4294967299")


@pytest.mark.parametrize("tok", [b"18446744073709551616:1", b"9223372036854775807:1",
                                 b"-9223372036854775809:1"])
def test_item8_libsvm_ids_out_of_range(tmp_path, tok):
    p = tmp_path / "s.svm"
    p.write_bytes(b"0 1:1\n1 " + tok + b"\n")
    with pytest.raises(DataFormatError, match=r"s.svm:2: cannot parse"):
        cfm.load_libsvm(p, zero_based=True)
    p.write_bytes(b"1 9223372036854775806:1\n")  # the largest id: 2**63 - 1 columns
    X, _ = cfm.load_libsvm(p, zero_based=True)
    assert X.shape[1] == 2**63 - 1


# --------------------------------------------------------------------------- item 10

def _gz_cases(raw):
    gz = gzip.compress(raw)
    return {"truncated": gz[:len(gz) // 2], "crc": gz[:-8] + bytes([gz[-8] ^ 1]) + gz[-7:],
            "trailing": gz + b"garbage!", "deflate": gz[:40] + bytes([gz[40] ^ 0xFF]) + gz[41:]}


def test_item10_gzip_errors_are_data_format_errors(tmp_path, model, d):
    raw = (d / "ok.svm").read_bytes()
    every = (lambda q: cfm.scan_file(q), lambda q: list(cfm.iter_blocks(q)),
             lambda q: model.predict_file(q, tmp_path / "p.txt"),
             lambda q: cfm.FMClassifier(n_epochs=1).fit(q),
             lambda q: cfm.convert_to_cache(q, tmp_path / "c.cfmdata"))
    for kind, content in _gz_cases(raw).items():
        p = tmp_path / f"{kind}.svm.gz"
        p.write_bytes(content)
        for fn in (cfm.load_libsvm,) + (every if kind == "truncated" else ()):
            with pytest.raises(DataFormatError, match=f"{kind}.svm.gz: corrupted or truncated "
                                                      "gzip data"):
                fn(p)
        assert not (tmp_path / "p.txt").exists() and not (tmp_path / "c.cfmdata").exists()
    rc, _, err = cfm_cli("predict", d / "m.cfm", tmp_path / "truncated.svm.gz", "-q")
    assert rc == 1
    one_error(err, "truncated.svm.gz: corrupted or truncated gzip data")
    rc, _, err = cfm_cli("predict", d / "m.cfm", "-", "-q",
                         stdin=(tmp_path / "crc.svm.gz").read_bytes())
    assert rc == 1
    one_error(err, "<stdin>: corrupted or truncated gzip data", "CRC")


# --------------------------------------------------------------------------- item 12

def _cache_parts(path):
    b = bytearray(open(path, "rb").read())
    magic, major, minor, hlen, hcrc = D._CACHE_PREFIX.unpack_from(b)
    return b, json.loads(bytes(b[20:20 + hlen])), hlen


def _write_cache(path, b, h, hlen):
    """Write a cache with header ``h`` and valid checksums for every array."""
    b = bytearray(b)
    for a in h["arrays"]:
        a["crc32"] = zlib.crc32(bytes(b[a["offset"]:a["offset"] + a["nbytes"]]))
    hb = json.dumps(h, sort_keys=True).encode()
    assert len(hb) <= hlen
    hb = hb.ljust(hlen, b" ")
    b[20:20 + hlen] = hb
    struct.pack_into("<8sHHII", b, 0, D.CACHE_MAGIC, 1, 1, hlen, zlib.crc32(hb))
    open(path, "wb").write(bytes(b))


def test_item12_cache_checksums_are_verified_by_default(tmp_path, model, d):
    good = D.convert_to_cache(d / "ok.svm", tmp_path / "good.cfmdata")
    b, h, hlen = _cache_parts(good)
    arr = {a["name"]: a for a in h["arrays"]}
    bad = tmp_path / "bad.cfmdata"
    flipped = bytearray(b)
    flipped[arr["data"]["offset"] + 5] ^= 0x10  # a value changes, structure intact
    bad.write_bytes(bytes(flipped))
    with pytest.raises(DataFormatError, match="bad.cfmdata.*checksum mismatch in array 'data'"):
        cfm.load_cache(bad)
    cfm.load_cache(bad, verify_checksums=False)  # the opt-out
    with pytest.raises(DataFormatError, match="checksum mismatch"):
        list(cfm.iter_blocks(bad, block_rows=50))
    assert len(list(cfm.iter_blocks(bad, block_rows=50, verify_checksums=False))) == 8
    with pytest.raises(DataFormatError, match="checksum mismatch"):
        cfm.FMClassifier(n_epochs=1).fit(str(bad))
    with pytest.raises(DataFormatError, match="checksum mismatch"):
        model.predict_file(bad, tmp_path / "p.txt")
    assert not (tmp_path / "p.txt").exists()
    rc, _, err = cfm_cli("predict", d / "m.cfm", bad)
    assert rc == 1
    one_error(err, "checksum mismatch")
    # padding bytes are checked too
    pad = bytearray(b)
    g0, g1 = D._CacheFile(good).header["_gaps"][0]
    pad[g1 - 1] = 1
    bad.write_bytes(bytes(pad))
    with pytest.raises(DataFormatError, match="padding"):
        cfm.load_cache(bad)
    # verified once per process while the file is unchanged
    D._VERIFIED.clear()
    list(cfm.iter_blocks(good, block_rows=50))
    assert D._CacheFile(good).verified


def test_item12_crafted_cache_with_valid_checksums(tmp_path):
    """Structure is validated whatever the checksums say: no kernel can read
    out of bounds, nothing is allocated from header counts."""
    good = D.convert_to_cache(_small_libffm(tmp_path), tmp_path / "g.cfmdata")
    b, h, hlen = _cache_parts(good)
    arr = {a["name"]: a for a in h["arrays"]}
    bad = tmp_path / "bad.cfmdata"

    def expect(mutate, match):
        bb, hh = bytearray(b), json.loads(json.dumps(h))
        mutate(bb, hh)
        _write_cache(bad, bb, hh, hlen)
        for fn in (lambda: cfm.load_cache(bad), lambda: list(cfm.iter_blocks(bad)),
                   lambda: cfm.FFMClassifier(n_epochs=1).fit(str(bad))):
            with pytest.raises(DataFormatError, match=match):
                fn()

    def put(bb, name, i, value, fmt):
        struct.pack_into(fmt, bb, arr[name]["offset"] + i * struct.calcsize(fmt), value)

    expect(lambda bb, hh: put(bb, "indices", 0, 10**6, "<i"), "column index out of range")
    expect(lambda bb, hh: put(bb, "indices", 1, -1, "<i"), "column index out of range")
    expect(lambda bb, hh: put(bb, "indptr", 2, 0, "<q"), "row offsets")
    expect(lambda bb, hh: put(bb, "indptr", 5, 2**40, "<q"), "row offsets")
    expect(lambda bb, hh: put(bb, "fields", 0, 2**31 - 1, "<i"), "field ids out of range")
    expect(lambda bb, hh: put(bb, "fields", 0, -7, "<i"), "field ids out of range")
    expect(lambda bb, hh: hh.update(n_rows=2**62), "invalid header")
    expect(lambda bb, hh: hh.update(nnz=10**30), "invalid header")
    expect(lambda bb, hh: hh.update(n_features=2**40), "invalid header")
    expect(lambda bb, hh: hh["arrays"][0].update(name={}), "invalid header")
    expect(lambda bb, hh: hh["arrays"][1].update(offset=-64), "invalid header")
    expect(lambda bb, hh: hh.update(zero_based="yes"), "invalid header")


def _small_libffm(tmp_path):
    p = tmp_path / "small.ffm"
    X, y = cfm.make_fm_classification(50, n_features=12, random_state=0)
    cfm.dump_libffm(X, y, np.arange(12) % 3, p)
    return p


def test_item12_cache_records_the_id_base(tmp_path, d):
    one = tmp_path / "one.svm"
    X, y = cfm.load_libsvm(d / "ok.svm", zero_based=True)
    cfm.dump_libsvm(X, y, one, zero_based=False)
    c = cfm.convert_to_cache(one, tmp_path / "one.cfmdata")
    assert cfm.scan_file(c)["zero_based"] is False
    m = cfm.FMClassifier(n_factors=2, n_epochs=1).fit(c)
    assert m._input_zero_based is False


# --------------------------------------------------------------------------- item 13

def test_item13_nan_reported_with_file_and_line(tmp_path):
    """A NaN at line 150,000 of a training file is reported at that line (not
    as a row of a block), with the file name; so are NaN labels, labels the
    classifier does not know and NaNs of caches (by row)."""
    X, y = cfm.make_fm_classification(150_001, n_features=20, random_state=0)
    p = tmp_path / "t.svm"
    cfm.dump_libsvm(X, y, p)
    lines = p.read_bytes().split(b"\n")
    lines.insert(10, b"# a comment line")  # lines are not rows
    row = lines[150_000 - 1].split(b" ")
    row[1] = row[1].split(b":")[0] + b":nan"
    lines[150_000 - 1] = b" ".join(row)
    p.write_bytes(b"\n".join(lines))
    with pytest.raises(DataFormatError, match=r"t.svm:150000: cannot parse '\d+:nan' "
                                              r"\(non-finite value"):
        cfm.FMClassifier(n_epochs=1).fit(str(p))
    # a NaN label
    small = tmp_path / "s.svm"
    small.write_bytes(b"1 1:1\n0 2:1\n\nnan 3:1\n")
    with pytest.raises(DataFormatError, match=r"s.svm:4: cannot parse 'nan' \(non-finite label"):
        cfm.FMClassifier(n_epochs=1).fit(str(small))
    # a value that overflows float32 is as bad as inf
    small.write_bytes(b"1 1:1\n0 2:1e39\n")
    with pytest.raises(DataFormatError, match=r"s.svm:2: .*float32 range"):
        cfm.FMClassifier(n_epochs=1).fit(str(small))
    # a third label: FM / FFMClassifier train a multiclass model; a binary-only
    # classifier names the file
    small.write_bytes(b"1 1:1\n0 2:1\n" * 60 + b"# c\n7 3:1\n")
    assert list(cfm.FMClassifier(n_epochs=1).fit(str(small), block_rows=50).classes_) == \
        [0, 1, 7]
    ffm = tmp_path / "s.ffm"
    ffm.write_bytes(b"1 0:1:1\n0 0:2:1\n" * 60 + b"7 0:3:1\n")
    assert list(cfm.FFMClassifier(n_epochs=1).fit(str(ffm), block_rows=50).classes_) == \
        [0, 1, 7]
    with pytest.raises(DataFormatError, match=r"s.ffm: .*exactly 2 labels, got 3"):
        cfm.FwFMClassifier(n_epochs=1).fit(str(ffm), block_rows=50)
    # caches have no lines: file and row
    c = cfm.convert_to_cache(p, tmp_path / "t.cfmdata")
    with pytest.raises(DataFormatError, match=r"t.cfmdata.*row 149998 \(0-based\): non-finite "
                                              "value nan"):
        cfm.FMClassifier(n_epochs=1).fit(c)
    # validation files (cfm train --validate reads them through the scoring path)
    v = tmp_path / "v.svm"
    v.write_bytes(b"1 1:1\n0 2:1\ninf 3:1\n")
    small.write_bytes(b"1 1:1\n0 2:1\n")
    rc, _, err = cfm_cli("train", small, "--validate", v, "-o", tmp_path / "m.cfm", "-q")
    assert rc == 1
    one_error(err, "v.svm:3: ", "non-finite label")


def test_item13_unknown_labels_when_evaluating(tmp_path, model, d):
    p = tmp_path / "e.svm"
    p.write_bytes(b"1 1:1\n0 2:1\n# x\n5 3:1\n")
    with pytest.raises(DataFormatError,
                       match=r"e.svm:4: .*label 5\.0 not in classes_ \[0\.0, 1\.0\]"):
        model.predict_file(p, tmp_path / "p.txt", evaluate=True)
    p.write_bytes(b"1 1:1\nnan 2:1\n")
    with pytest.raises(DataFormatError, match=r"e.svm:2: .*non-finite label"):
        model.predict_file(p, tmp_path / "p.txt", evaluate=True)
    model.predict_file(p, tmp_path / "p.txt")  # without evaluating, labels are not used


# --------------------------------------------------------------------------- item 14

def test_item14_pandas_categorical_and_string_columns():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": [1.0, 2, 3, 4], "c": pd.Categorical(["x", "y", "x", "y"]),
                       "s": pd.array(["p", "q", "r", "s"], dtype="string")})
    y = [0, 1, 0, 1]
    with pytest.raises(ValueError, match=r"2 non-numeric column\(s\): 'c' \(category\), "
                                         r"'s' \(string\).*one-hot encode"):
        cfm.FMClassifier(n_epochs=1).fit(df, y)
    m = cfm.FMClassifier(n_epochs=1).fit(df[["a"]], y)
    with pytest.raises(ValueError, match="'a' \\(category\\)"):
        m.predict(pd.DataFrame({"a": pd.Categorical(["x", "y", "x", "y"])}))
    with pytest.raises(ValueError, match="contains NaN"):  # nullable ints holding NA
        cfm.FMClassifier(n_epochs=1).fit(pd.DataFrame({"a": pd.array([1, None, 3, 4],
                                                                      dtype="Int64")}), y)


def test_item14_predict_with_stdin_or_stdout_closed(d, model):
    rc, _, err = cfm_cli("predict", d / "m.cfm", "-", preexec=lambda: os.close(0))
    assert rc == 1
    one_error(err, "stdin is closed")
    rc, _, err = cfm_cli("predict", d / "m.cfm", d / "ok.svm", preexec=lambda: os.close(1))
    assert rc == 1
    one_error(err, "stdout is closed")


@pytest.mark.parametrize("args", [["--seed", "1e20"], ["--seed", str(10**20)],
                                  ["--seed", str(2**32)], ["--epochs", str(10**20)],
                                  ["--patience", str(10**20)],
                                  ["--solver", "mcmc", "--burn-in", str(10**20)]])
def test_item14_cli_numeric_arguments_are_usage_errors(d, tmp_path, capsys, args):
    rc = cli.main(["train", str(d / "ok.svm"), "-o", str(tmp_path / "m.cfm"), "-q", *args])
    err = capsys.readouterr().err
    assert rc == 2, err
    one_error(err, args[-2])
    assert not (tmp_path / "m.cfm").exists()


def test_item14_estimator_counts_are_bounded():
    for kw in ({"n_epochs": 10**20}, {"n_iter_no_change": 2**40}, {"n_burn_in": 10**30}):
        with pytest.raises(ValueError, match=f"{next(iter(kw))} must be <="):
            cfm.FMClassifier(**kw).fit([[1.0, 0], [0, 1]], [0, 1])


# --------------------------------------------------------------------------
# convert_to_cache writes like model saving (cfm._files.atomic_output)
# --------------------------------------------------------------------------

def _cache_equal(path, ref):
    X, y, f = cfm.load_cache(path)
    X0, y0, f0 = cfm.load_cache(ref)
    return (X != X0).nnz == 0 and np.array_equal(y, y0) and (
        f is None if f0 is None else np.array_equal(f, f0))


def test_convert_to_cache_error_leaves_target_and_folder_untouched(d, tmp_path):
    bad = tmp_path / "bad.svm"
    bad.write_bytes((d / "ok.svm").read_bytes() + b"1 3:x\n")
    dst = tmp_path / "c.cfmdata"
    dst.write_bytes(b"old content")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(DataFormatError, match="bad.svm"):
        cfm.convert_to_cache(bad, dst, chunk_bytes=1000)
    assert dst.read_bytes() == b"old content"
    assert sorted(os.listdir(tmp_path)) == before  # no temporary file left


def test_convert_to_cache_follows_links_and_writes_devices_in_place(d, tmp_path):
    ref = cfm.convert_to_cache(d / "ok.ffm", tmp_path / "ref.cfmdata")
    real = tmp_path / "real.cfmdata"
    real.write_bytes(b"x")
    link = tmp_path / "link.cfmdata"
    link.symlink_to(real)
    assert cfm.convert_to_cache(d / "ok.ffm", link) == str(link)
    assert link.is_symlink() and _cache_equal(real, ref)
    # a device is written in place (its bytes assembled aside), never replaced
    cfm.convert_to_cache(d / "ok.ffm", "/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert sorted(os.listdir(tmp_path)) == ["link.cfmdata", "real.cfmdata", "ref.cfmdata"]
    rc = cli.main(["convert", str(d / "ok.svm"), "-o", "/dev/null", "-q"])
    assert rc == 0 and stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_convert_to_cache_refuses_its_source_and_bad_targets_before_parsing(d, tmp_path):
    src = tmp_path / "s.svm"
    src.write_bytes((d / "ok.svm").read_bytes())
    with pytest.raises(ValueError, match="over its source"):
        cfm.convert_to_cache(src, src)
    assert src.read_bytes() == (d / "ok.svm").read_bytes()
    assert cli.main(["convert", str(src), "-o", str(src), "-q"]) == 2  # usage, as cfm train
    assert src.read_bytes() == (d / "ok.svm").read_bytes()
    with pytest.raises(OSError, match="nowhere"):
        cfm.convert_to_cache(src, tmp_path / "nowhere" / "c.cfmdata")
    with pytest.raises(IsADirectoryError):
        cfm.convert_to_cache(src, tmp_path)


def test_convert_to_cache_concurrent_writers_leave_one_complete_file(d, tmp_path):
    ref = cfm.convert_to_cache(d / "ok.svm", tmp_path / "ref.cfmdata")
    dst = tmp_path / "c.cfmdata"

    def work():
        for _ in range(3):
            cfm.convert_to_cache(d / "ok.svm", dst, chunk_bytes=4000, n_jobs=1)

    errors = errors_in_threads(work, [()] * 4)
    assert not errors
    assert _cache_equal(dst, ref)
    assert sorted(os.listdir(tmp_path)) == ["c.cfmdata", "ref.cfmdata"]


def test_convert_to_cache_sigterm_removes_its_temporary_files(d, tmp_path):
    """Killed (SIGTERM) while parsing: no temporary or section file is left,
    the target is untouched."""
    import signal
    import time

    fifo = tmp_path / "in.svm"
    os.mkfifo(fifo)
    dst = tmp_path / "c.cfmdata"
    dst.write_bytes(b"old")
    code = ("import sys, cfm; cfm.convert_to_cache(sys.argv[1], sys.argv[2], format='libsvm', "
            "n_jobs=1)")
    p = subprocess.Popen([sys.executable, "-c", code, str(fifo), str(dst)], env=ENV,
                         stderr=subprocess.PIPE)
    try:
        with open(fifo, "wb") as w:
            w.write((d / "ok.svm").read_bytes()[:2000])
            w.flush()
            deadline = time.monotonic() + 180  # a loaded 2-core machine: the child imports cfm first
            while len(os.listdir(tmp_path)) < 7 and time.monotonic() < deadline:
                time.sleep(0.05)  # the output's temporary file and 4 sections
            assert len(os.listdir(tmp_path)) == 7, os.listdir(tmp_path)
            p.send_signal(signal.SIGTERM)
            assert p.wait(timeout=60) == -signal.SIGTERM, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert sorted(os.listdir(tmp_path)) == ["c.cfmdata", "in.svm"]
    assert dst.read_bytes() == b"old"
