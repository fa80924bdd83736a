"""Issue 11, model files, saving and output files: one regression test per
reproducer (named after the item), plus the invariants they rely on.

Reproducers that could crash the interpreter or exhaust memory run in a
subprocess, under ``RLIMIT_AS`` where memory is the point, so that a
regression fails the test instead of the test run (or the machine).
"""
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib

import numpy as np
import pytest

import cfm
from cfm import _model_file, _container as _reader, cli
from conftest import errors_in_threads, random_sparse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run_py(code, timeout=120, mem_limit=None, args=()):
    """Run Python ``code`` in a fresh interpreter (with cfm from this tree);
    ``mem_limit``: bytes of address space (RLIMIT_AS) allowed on top of what
    the interpreter has after importing cfm and NumPy."""
    code = textwrap.dedent(code)
    if mem_limit is not None:
        code = textwrap.dedent(f"""
            import resource, numpy, cfm, cfm.cli, cfm.xlearn
            vm = [int(l.split()[1]) * 1024 for l in open('/proc/self/status')
                  if l.startswith('VmSize')][0]
            resource.setrlimit(resource.RLIMIT_AS, (vm + {int(mem_limit)}, vm + {int(mem_limit)}))
        """) + code
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def fix_crc(raw):
    raw = bytes(raw)
    return raw[:-4] + struct.pack("<I", zlib.crc32(raw[:-4]))


def with_header(raw, header):
    """The model file ``raw`` with its JSON header replaced (arrays kept at
    their offsets when the new header fits in the old one's space), checksum
    recomputed."""
    hlen = struct.unpack_from("<I", raw, 12)[0]
    text = header if isinstance(header, bytes) else json.dumps(header, sort_keys=True).encode()
    if len(text) <= hlen:
        text += b" " * (hlen - len(text))
    return fix_crc(raw[:12] + struct.pack("<I", len(text)) + text + raw[16 + hlen:])


def header_of(raw):
    hlen = struct.unpack_from("<I", raw, 12)[0]
    return json.loads(raw[16:16 + hlen])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = random_sparse(120, 12, 4, rng)
    y = rng.normal(size=120)
    return X, y, np.arange(12) % 3


@pytest.fixture(scope="module")
def models(data):
    X, y, fields = data
    lab = np.where(y > 0, "spam", "ham")
    return {
        "fm": cfm.FMClassifier(n_factors=3, n_epochs=2, n_jobs=1, random_state=0).fit(X, lab),
        "fm_ftrl": cfm.FMRegressor(n_factors=2, n_epochs=2, solver="ftrl", n_jobs=1,
                                   random_state=0).fit(X, y),
        "ffm16": cfm.FFMClassifier(n_factors=4, n_epochs=2, n_jobs=1, random_state=0,
                                   dtype="float16").fit(X, y > 0, fields=fields),
        "ffm32": cfm.FFMRegressor(n_factors=3, n_epochs=2, n_jobs=1, random_state=0,
                                  dtype="float32").fit(X, y, fields=fields),
        "mcmc": cfm.FMRegressor(solver="mcmc", n_factors=2, n_epochs=10, n_jobs=1,
                                random_state=0).fit(X, y),
    }


@pytest.fixture
def saved(models, tmp_path):
    path = tmp_path / "m.cfm"
    models["fm"].save(path)
    return path, path.read_bytes()


def expect_model_file_error(path, *fragments, **kw):
    with pytest.raises(cfm.ModelFileError) as exc:
        cfm.load(path, **kw)
    msg = str(exc.value)
    assert str(path) in msg, msg
    assert not fragments or any(f in msg for f in fragments), msg
    return msg


# --------------------------------------------------------------------------
# item 1: no SIGBUS, helper threads joined, only regular files
# --------------------------------------------------------------------------

# One subprocess runs every reproducer that could crash the interpreter or
# exhaust memory (under RLIMIT_AS: the interpreter's size after its imports
# + 512 MiB), each case printing one JSON line; the tests below check them.
SANDBOX = r"""
import contextlib, io, json, os, sys, threading, time
import numpy as np, scipy.sparse as sp
import cfm, cfm._model_file as cio, cfm._container as crd
from cfm import cli
from cfm.xlearn import load_xlearn

tmp = sys.argv[1]


def case(fn):
    t0 = time.perf_counter()
    try:
        out = fn()
    except BaseException as e:  # reported, the other cases still run
        out = f"{type(e).__name__}: {e}"
    print(json.dumps({fn.__name__: out, "_s_" + fn.__name__: time.perf_counter() - t0}),
          flush=True)


def cli_run(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main([str(a) for a in argv])
    return rc, err.getvalue()


@case
def sigbus():
    # the issue's reproducer: load, truncate to half, load, rewrite with a
    # byte flipped, load (it used to die of SIGBUS in the CRC thread)
    # (a 1.5 MB model: its checksum takes long enough for the old CRC thread
    # to outlive the failed load; the old code died in 3 of 3 runs)
    X = sp.random(500, 20000, density=0.001, format="csr", random_state=0)
    m = cfm.FMRegressor(n_factors=16, n_epochs=1, n_jobs=1, random_state=0).fit(
        X, np.arange(500.0))
    p = os.path.join(tmp, "sigbus.cfm")
    m.save(p)
    raw = open(p, "rb").read()
    errors = 0
    for i in range(10):
        cfm.load(p)
        open(p, "wb").write(raw[:len(raw) // 2])
        for content in (raw[:len(raw) // 2], raw[:len(raw) // 3 + i] + b"x" + raw[len(raw) // 3 + i + 1:]):
            open(p, "wb").write(content)
            try:
                cfm.load(p)
            except cfm.ModelFileError:
                errors += 1
        open(p, "wb").write(raw)
    return errors


@case
def shrinking():
    # the file truncated in place while its tables are read a block at a time
    saved = crd._WHOLE_BYTES, crd._EAGER_BYTES, crd._BLOCK_BYTES
    crd._WHOLE_BYTES = crd._EAGER_BYTES = 0
    crd._BLOCK_BYTES = 512
    try:
        X = np.random.default_rng(0).normal(size=(300, 400))
        m = cfm.FMRegressor(n_factors=16, n_epochs=1, n_jobs=1, random_state=0).fit(X, X[:, 0])
        p = os.path.join(tmp, "shrink.cfm")
        m.save(p)
        raw = open(p, "rb").read()
        seen = set()
        for i in range(30):
            with open(p, "wb") as f:
                f.write(raw)
            cut = len(raw) * (i + 1) // 32
            t = threading.Timer(0.0005 * (i % 8), lambda: os.truncate(p, cut))
            t.start()
            try:
                cfm.load(p)
                seen.add("ok")
            except cfm.ModelFileError as e:
                seen.add("error" if p in str(e) else "error without the file name")
            t.join()
            if [th for th in threading.enumerate() if th.name == "cfm-read"]:
                seen.add("helper thread left running")
        return sorted(seen)
    finally:
        crd._WHOLE_BYTES, crd._EAGER_BYTES, crd._BLOCK_BYTES = saved


@case
def special_files():
    fifo = os.path.join(tmp, "fifo")
    os.mkfifo(fifo)
    out = []
    for p in ("/dev/zero", fifo):
        for f in (cfm.load, load_xlearn):
            try:
                f(p)
                out.append("loaded")
            except cfm.ModelFileError as e:
                out.append(p in str(e) and "regular file" in str(e))
        out.append(cio.peek_header(p) is None)
    for argv in (["info", fifo], ["info", "/dev/zero"], ["predict", fifo, fifo],
                 ["predict", "/dev/zero", "/dev/null"]):
        rc, err = cli_run(argv)
        out.append(rc == 1 and "regular file" in err and "internal error" not in err)
    return out


@case
def wide_labels():
    m = cfm.load(os.path.join(tmp, "wide.cfm"))
    return [str(c) for c in m.classes_] + [m.classes_.dtype.str]


XL = {
    "linear": "bias: 0\ni_100000000: 1\n",
    "ffm_field": "bias: 0\ni_0: 1\nv_0_100000000: 0.1 0.2\n",
    "id_1e17": "bias: 0\ni_0: 1\ni_100000000000000000: 1\n",
    "id_40_digits": "bias: 0\ni_0: 1\ni_" + "9" * 40 + ": 1\n",
    "fm_vector": "bias: 0\ni_0: 1\nv_100000000: 0.1 0.2\n",
}


@case
def xlearn_huge_ids():
    data = os.path.join(tmp, "d.svm")
    open(data, "w").write("1 0:1\n")
    out = {}
    for name, text in XL.items():
        p = os.path.join(tmp, name + ".txt")
        open(p, "w").write(text)
        try:
            load_xlearn(p, fields=[0])
            api = "loaded"
        except cfm.ModelFileError as e:
            api = str(e)
        rc, err = cli_run(["predict", p, data, "-q"])
        out[name] = [api, rc, err]
    return out


@case
def cli_dev_null():
    # cfm train -o /dev/null with renaming made impossible: even a regression
    # cannot replace the real /dev/null
    def refuse(*a, **k):
        raise AssertionError("a rename was attempted")

    X = sp.random(200, 10, density=0.3, format="csr", random_state=0)
    train = os.path.join(tmp, "t.svm")
    cfm.dump_libsvm(X, np.arange(200) % 2, train)
    saved = os.replace, os.rename
    os.replace = os.rename = refuse
    try:
        rc, err = cli_run(["train", train, "-o", os.devnull, "-e", "1", "-q"])
    finally:
        os.replace, os.rename = saved
    import stat
    return [rc, stat.S_ISCHR(os.stat(os.devnull).st_mode)]


@case
def refit_while_predicting():
    out = {}
    rng = np.random.default_rng(0)

    def data(n, d):
        X = sp.random(n, d, density=0.3, format="csr", random_state=int(rng.integers(99)),
                      dtype=np.float32)
        return X, (rng.random(n) > 0.5).astype(int)

    Xa, ya = data(300, 50)
    Xb, yb = data(300, 5)
    for kind in ("ffm", "fm", "mcmc"):
        if kind == "ffm":
            m = cfm.FFMClassifier(n_factors=4, n_epochs=1, n_jobs=1, random_state=0)
            fa, fb = np.arange(50) % 10, np.zeros(5, int)
            fit = lambda X, y, f, k: m.set_params(n_factors=k).fit(X, y, fields=f)
        else:
            m = cfm.FMClassifier(n_factors=4, n_epochs=2, n_jobs=1, random_state=0,
                                 solver="mcmc" if kind == "mcmc" else "adagrad")
            fa = fb = None
            fit = lambda X, y, f, k: m.set_params(n_factors=k).fit(X, y)
        fit(Xa, ya, fa, 4)
        stop, errors, calls = [False], set(), [0]

        def predict():
            while not stop[0]:
                try:
                    m.decision_function(Xa)
                    calls[0] += 1
                except ValueError as e:
                    errors.add(str(e).split(",")[0])

        threads = [threading.Thread(target=predict) for _ in range(3)]
        for t in threads:
            t.start()
        t0 = time.time()
        while time.time() - t0 < (0.8 if kind == "ffm" else 0.3):  # the old FFM: 3 in 4 died
            fit(Xb, yb, fb, 32)
            fit(Xa, ya, fa, 4)
        stop[0] = True
        for t in threads:
            t.join()
        out[kind] = [calls[0] > 0, sorted(errors)]
    return out
"""


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, models):
    tmp = tmp_path_factory.mktemp("sandbox")
    raw = _saved_bytes(models["fm"], tmp)
    h = header_of(raw)
    h["classes"]["dtype"] = "<U536870911"  # 4 GiB for two labels if trusted
    (tmp / "wide.cfm").write_bytes(with_header(raw, h))
    r = run_py(SANDBOX, args=[tmp], mem_limit=512 << 20, timeout=300)
    out = {}
    for line in r.stdout.splitlines():
        out.update(json.loads(line))
    out["_stderr"] = r.stderr[-3000:]
    out["_returncode"] = r.returncode
    return out


def _saved_bytes(model, folder):
    p = folder / "model.cfm"
    model.save(p)
    return p.read_bytes()


def sandboxed(sandbox, name):
    done = [k for k in sandbox if not k.startswith("_")]
    assert sandbox["_returncode"] == 0, (f"the sandbox exited with {sandbox['_returncode']} "
                                         f"after the cases {done}", sandbox["_stderr"])
    assert name in sandbox, sandbox["_stderr"]
    return sandbox[name]


def test_item1_rewritten_file_after_failed_load_no_sigbus(sandbox):
    """The issue's reproducer used to die of SIGBUS (about 2 runs in 3): the
    CRC thread of a failed load still read the memory map of a file
    rewritten meanwhile.  Files are now read, never mapped."""
    assert sandboxed(sandbox, "sigbus") == 20


def test_item1_file_shrinking_while_loading_gives_an_error(sandbox):
    """Another process truncating the file while it loads: an error naming
    the file (or a complete load when it came first), no helper thread left."""
    seen = sandboxed(sandbox, "shrinking")
    assert "error" in seen and set(seen) <= {"ok", "error"}, seen


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "blocks"])
def test_item1_helper_threads_joined_on_every_error(models, tmp_path, monkeypatch, stream):
    if stream:
        monkeypatch.setattr(_reader, "_WHOLE_BYTES", 0)
        monkeypatch.setattr(_reader, "_EAGER_BYTES", 0)
        monkeypatch.setattr(_reader, "_BLOCK_BYTES", 64)
    path = tmp_path / "m.cfm"
    models["ffm32"].save(path)
    raw = path.read_bytes()
    bad = bytearray(raw)
    bad[len(raw) - 100] ^= 0x10  # inside the last array
    cases = [raw[:len(raw) // 2], raw[:-3], bytes(bad), with_header(raw, b"[1, 2]")]
    for content in cases:
        path.write_bytes(content)
        with pytest.raises(cfm.ModelFileError):
            cfm.load(path)
        assert not [t for t in threading.enumerate() if t.name in ("cfm-read", "cfm-crc")]


@pytest.mark.parametrize("name", ["fm", "fm_ftrl", "ffm16", "ffm32", "mcmc"])
def test_item1_block_reading_gives_identical_models(models, data, tmp_path, monkeypatch, name):
    """Tables read a block at a time (what large files do) are bit-identical
    to tables read whole; a flipped byte in a block is a checksum error."""
    X = data[0]
    path = tmp_path / "m.cfm"
    models[name].save(path)
    whole = cfm.load(path)
    monkeypatch.setattr(_reader, "_WHOLE_BYTES", 0)
    monkeypatch.setattr(_reader, "_EAGER_BYTES", 0)
    monkeypatch.setattr(_reader, "_BLOCK_BYTES", 100)
    for scoring_only in (False, True):
        blocks = cfm.load(path, scoring_only=scoring_only)
        np.testing.assert_array_equal(blocks.predict(X), whole.predict(X))
    blocks = cfm.load(path)
    for attr in ("_table", "_V", "_lin", "_samples"):
        if hasattr(whole, attr):
            a, b = getattr(whole, attr), getattr(blocks, attr)
            np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
    raw = path.read_bytes()
    bad = bytearray(raw)
    bad[len(raw) - 70] ^= 0x01
    path.write_bytes(bytes(bad))
    expect_model_file_error(path, "checksum")


def test_item1_load_without_helper_threads(models, data, tmp_path, monkeypatch):
    """When no thread can be created, loading reads in the calling thread."""
    monkeypatch.setattr(_reader, "_WHOLE_BYTES", 0)
    monkeypatch.setattr(_reader, "_EAGER_BYTES", 0)
    monkeypatch.setattr(_reader, "_BLOCK_BYTES", 100)
    path = tmp_path / "m.cfm"
    models["ffm32"].save(path)
    start = threading.Thread.start

    def refuse(self):
        if self.name == "cfm-read":
            raise RuntimeError("can't start new thread")
        return start(self)

    monkeypatch.setattr(threading.Thread, "start", refuse)
    np.testing.assert_array_equal(cfm.load(path).predict(data[0]),
                                  models["ffm32"].predict(data[0]))


def test_item1_crc32_combine_matches_zlib():
    rng = np.random.default_rng(0)
    for la, lb in [(0, 0), (0, 5), (7, 0), (1, 1), (100, 4097), (65536, 3)]:
        a, b = rng.bytes(la), rng.bytes(lb)
        assert _reader.crc32_combine(zlib.crc32(a), zlib.crc32(b), lb) == zlib.crc32(a + b)


def test_item1_dev_zero_and_fifo_are_refused(sandbox):
    """/dev/zero or a FIFO as a model path (API, peek_header, cfm info, cfm
    predict): a clear ModelFileError at once, not a read until memory runs
    out (or forever)."""
    assert sandboxed(sandbox, "special_files") == [True] * 10


def test_item3_label_dtype_width_is_not_trusted(sandbox):
    """A model file declaring labels of dtype <U536870911 (4 GiB for 2 labels)
    loads within the memory limit: the width comes from the labels."""
    assert sandboxed(sandbox, "wide_labels") == ["ham", "spam", "<U4"]


@pytest.mark.parametrize("name,fragment", [
    ("linear", "i_0"), ("ffm_field", "v_0_0"), ("id_1e17", "i_1"), ("id_40_digits", ":3"),
    ("fm_vector", "feature 100000000")])
def test_item3_xlearn_huge_ids_no_huge_allocation(sandbox, name, fragment):
    """A 23-byte xLearn text model naming feature 10**8 used to build a set of
    every missing id (1.1 GB for 10**7); now a clear error naming the file
    and what is missing, within the memory limit, through load_xlearn and
    `cfm predict`."""
    api, rc, err = sandboxed(sandbox, "xlearn_huge_ids")[name]
    assert f"{name}.txt" in api and fragment in api, api
    assert rc == 1 and f"{name}.txt" in err and "out of memory" not in err, err


def test_item3_sizes_bounded_by_the_file(saved, tmp_path):
    """Shapes, counts and offsets in a header with a valid checksum cannot
    ask for more than the file holds."""
    _, raw = saved
    for change in ({"n_features": 2**40}, {"n_factors": 4096}):
        h = header_of(raw)
        h.update(change)
        p = tmp_path / "big.cfm"
        p.write_bytes(with_header(raw, h))
        expect_model_file_error(p)
    h = header_of(raw)
    h["arrays"][1]["shape"] = [2**20, 2**20]
    h["arrays"][1]["nbytes"] = 2**42
    p = tmp_path / "big.cfm"
    p.write_bytes(with_header(raw, h))
    expect_model_file_error(p, "truncated")


# --------------------------------------------------------------------------
# item 4: refit while other threads predict
# --------------------------------------------------------------------------

def test_item4_refit_while_predicting(sandbox):
    """Refitting with other shapes (features, fields, factors) while three
    threads predict used to segfault for FFM (3 of 3 runs).  Predictions take
    one published set of tables: a call scores, or says the feature count
    does not match the model of that moment."""
    out = sandboxed(sandbox, "refit_while_predicting")
    for kind in ("ffm", "fm", "mcmc"):
        calls, errors = out[kind]
        assert calls and set(errors) <= {"X has 50 features"}, (kind, errors)


def test_item4_published_tables_are_immutable(models):
    t = models["ffm16"]._current_tables()
    with pytest.raises(AttributeError):
        t.V = None
    assert t.n_features == models["ffm16"].n_features_in_


def test_item4_pickle_and_unfitted(models, data):
    import copy
    import pickle

    X = data[0]
    for name in ("fm", "ffm16", "mcmc"):
        m = models[name]
        for m2 in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
            np.testing.assert_array_equal(m2.predict(X), m.predict(X))
            # the published tables are the estimator's own (training updates them)
            t = m2._current_tables()
            assert (t.table is m2._table) if hasattr(m2, "_table") else (t.V is m2._V)
    with pytest.raises(cfm.NotFittedError):
        cfm.FFMClassifier().predict(X)


# --------------------------------------------------------------------------
# item 5: save and -o never replace devices or symlinks
# --------------------------------------------------------------------------

def _read_fifo(path, out):
    with open(path, "rb") as f:
        out.append(f.read())


def test_item5_save_writes_through_fifo_and_follows_symlinks(models, tmp_path):
    m = models["fm"]
    target = tmp_path / "real.cfm"
    link = tmp_path / "link.cfm"
    link.symlink_to(target)  # dangling: the save creates the target
    m.save(link)
    assert link.is_symlink() and target.is_file()
    first = target.read_bytes()
    models["fm_ftrl"].save(link)  # an existing target: replaced, the link stays
    assert link.is_symlink() and target.read_bytes() != first
    assert isinstance(cfm.load(link), cfm.FMRegressor)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.cfm", "real.cfm"]
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for dest in (fifo, tmp_path / "fifo_link"):
        if dest != fifo:
            dest.symlink_to(fifo)
        got = []
        t = threading.Thread(target=_read_fifo, args=(fifo, got))
        t.start()
        m.save(dest)
        t.join(30)
        assert stat.S_ISFIFO(os.stat(fifo).st_mode)
        assert got and got[0][:8] == _model_file.MAGIC
        assert len(got[0]) == len(first)


def test_item5_save_to_dev_null_never_renames(models, monkeypatch):
    """/dev/null is written in place.  os.replace / os.rename are disabled
    first, so that even a regression cannot replace the real /dev/null."""
    def refuse(*a, **k):
        raise AssertionError("a rename was attempted")

    monkeypatch.setattr(os, "replace", refuse)
    monkeypatch.setattr(os, "rename", refuse)
    models["fm"].save(os.devnull)
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_item5_cli_output_to_symlink_fifo_and_dev_null(tmp_path, sandbox):
    train = tmp_path / "t.svm"
    rng = np.random.default_rng(0)
    cfm.dump_libsvm(random_sparse(200, 10, 3, rng), rng.integers(0, 2, 200), train)
    target = tmp_path / "real.cfm"
    link = tmp_path / "link.cfm"
    link.symlink_to(target)
    assert cli.main(["train", str(train), "-o", str(link), "-e", "1", "-q"]) == 0
    assert link.is_symlink() and target.is_file()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    t = threading.Thread(target=_read_fifo, args=(fifo, got))
    t.start()
    assert cli.main(["train", str(train), "-o", str(fifo), "-e", "1", "-q"]) == 0
    t.join(30)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and got[0][:8] == _model_file.MAGIC
    # -o /dev/null: in the sandbox, where renaming is impossible
    assert sandboxed(sandbox, "cli_dev_null") == [0, True]


# --------------------------------------------------------------------------
# item 6: concurrent saves, temporary files, early output checks
# --------------------------------------------------------------------------

def test_item6_concurrent_saves_to_one_path(models, tmp_path):
    """4 threads saving 2 models to one path: every final file is complete
    (one of the two models) and no temporary file is left."""
    path = tmp_path / "m.cfm"
    a, b = models["fm"], models["ffm32"]
    a.save(tmp_path / "a.ref")
    b.save(tmp_path / "b.ref")
    refs = {(tmp_path / "a.ref").read_bytes(), (tmp_path / "b.ref").read_bytes()}

    def work(m):
        for _ in range(8):
            m.save(path)

    for _ in range(3):
        errors = errors_in_threads(work, [(m,) for m in (a, b, a, b)])
        assert not errors, errors
        assert path.read_bytes() in refs
        cfm.load(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ref", "b.ref", "m.cfm"]


def test_item6_concurrent_predict_file_to_one_output(models, data, tmp_path):
    X, y, _ = data
    src = tmp_path / "d.svm"
    cfm.dump_libsvm(X, (y > 0).astype(int), src, zero_based=True)
    out = tmp_path / "pred.txt"
    a, b = models["fm"], models["ffm16"]
    a.predict_file(src, tmp_path / "a.ref", zero_based=True)
    b.predict_file(src, tmp_path / "b.ref", zero_based=True)
    refs = {(tmp_path / "a.ref").read_bytes(), (tmp_path / "b.ref").read_bytes()}

    def work(m):
        for _ in range(5):
            m.predict_file(src, out, zero_based=True, block_rows=16)

    errors = errors_in_threads(work, [(m,) for m in (a, b, a, b)])
    assert not errors, errors
    assert out.read_bytes() in refs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ref", "b.ref", "d.svm", "pred.txt"]


def test_item6_temporary_file_removed_on_sigterm(tmp_path):
    """A process killed by SIGTERM while writing leaves neither a temporary
    file nor a partial target, and still dies of SIGTERM."""
    target = tmp_path / "out.cfm"
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        from cfm._files import atomic_output
        with atomic_output(sys.argv[1]) as f:
            f.write(b'partial')
            f.flush()
            print('writing', flush=True)
            time.sleep(60)
    """), str(target)], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "writing"
        assert len(list(tmp_path.iterdir())) == 1  # the temporary file
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == -signal.SIGTERM
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert list(tmp_path.iterdir()) == []


def test_item6_cli_train_checks_output_before_training(tmp_path, capsys):
    """cfm train -o <unwritable> used to train every epoch first and then
    name 'm.cfm.tmp<pid>'; -o "" reported '.tmp<pid>'; -o could name an
    input file."""
    def run(argv):
        rc = cli.main([str(a) for a in argv])
        return rc, capsys.readouterr().err

    train = tmp_path / "t.svm"
    rng = np.random.default_rng(0)
    cfm.dump_libsvm(random_sparse(200, 10, 3, rng), rng.integers(0, 2, 200), train)
    before = train.read_bytes()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (tmp_path / "nodir" / "m.cfm", blocker / "m.cfm", tmp_path):
        rc, err = run(["train", train, "-o", out, "-e", "1"])
        assert rc == 1, err
        assert "epoch" not in err and ".tmp" not in err and str(out) in err, err
    for argv in (["train", train], ["predict", "m.cfm", train]):
        rc, err = run([*argv, "-o", "", "-e", "1"] if argv[0] == "train" else [*argv, "-o", ""])
        assert rc == 2 and "-o" in err and ".tmp" not in err, err
    valid = tmp_path / "v.svm"
    valid.write_bytes(before)
    for out, extra in ((train, []), (valid, ["--validate", valid])):
        rc, err = run(["train", train, "-o", out, "-e", "1", *extra])
        assert rc == 2 and "input" in err, err
    assert train.read_bytes() == before and valid.read_bytes() == before
    model = tmp_path / "m.cfm"
    assert run(["train", train, "-o", model, "-e", "1", "-q"])[0] == 0
    for out in (train, model):
        rc, err = run(["predict", model, train, "-o", out])
        assert rc == 2 and "input" in err, err
    assert train.read_bytes() == before
    if os.geteuid() != 0:  # permission bits do not stop root
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        rc, err = run(["train", train, "-o", ro / "m.cfm", "-e", "1"])
        assert rc == 1 and "epoch" not in err, err


def test_item6_save_keeps_permissions_and_names_target(models, tmp_path):
    path = tmp_path / "m.cfm"
    models["fm"].save(path)
    path.chmod(0o640)
    models["fm"].save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    with pytest.raises(OSError) as exc:
        models["fm"].save(tmp_path / "nodir" / "m.cfm")
    assert "m.cfm" in str(exc.value) and ".tmp" not in str(exc.value)


# --------------------------------------------------------------------------
# item 11: crafted headers, cfm info
# --------------------------------------------------------------------------

def _crafted(raw):
    """The issue's crafted headers (checksums recomputed)."""
    h = header_of(raw)
    out = {}
    out["number_1e400"] = json.dumps(h).replace(f'"n_epochs_": {h["n_epochs_"]}',
                                                '"n_epochs_": 1e400').encode()
    g = dict(h, rng_state=dict(h["rng_state"], state={"state": 2**200, "inc": 1}))
    out["random_state_2_200"] = g
    out["nested_200000"] = b'{"format": "cfm-model", "x": ' + b"[" * 200_000 + b"]" * 200_000 \
        + b"}"
    out["arrays_123"] = dict(h, arrays=123)
    out["params_list"] = dict(h, params=[1, 2])
    arrays = [dict(a) for a in h["arrays"]]
    arrays[0]["offset"] = -64
    out["negative_offset"] = dict(h, arrays=arrays)
    arrays = [dict(a) for a in h["arrays"]]
    arrays[1].update(shape=[2**32, 2**32], nbytes=2**64 * 4)
    out["shape_2_32"] = dict(h, arrays=arrays)
    arrays = [dict(a) for a in h["arrays"]]
    arrays[1]["offset"] = arrays[0]["offset"]
    out["overlapping_arrays"] = dict(h, arrays=arrays)
    for name, shape in (("empty_shape_2_62_0", [2**62, 0]), ("empty_shape_0_2_40_2_40",
                                                              [0, 2**40, 2**40])):
        # empty, but NumPy cannot make it (found by tests/test_fuzz.py)
        arrays = [dict(a) for a in h["arrays"]]
        arrays[1].update(shape=shape, nbytes=0)
        out[name] = dict(h, arrays=arrays)
    out["labels_equal"] = dict(h, classes={"dtype": "<U4", "values": ["ham", "ham"]})
    out["labels_for_regression"] = dict(h, task="regression")
    out["labels_mixed"] = dict(h, classes={"dtype": "object", "values": ["ham", 1]})
    out["n_jobs_zero"] = dict(h, params=dict(h["params"], n_jobs=0))  # huge ones load: test_threads
    out["history_nested"] = dict(h, history=[{"epoch": [[1]]}])
    out["feature_names_short"] = dict(h, feature_names=["a"])
    return out


CRAFTED = ["number_1e400", "random_state_2_200", "nested_200000", "arrays_123", "params_list",
           "negative_offset", "shape_2_32", "empty_shape_2_62_0", "empty_shape_0_2_40_2_40",
           "overlapping_arrays", "labels_equal",
           "labels_for_regression", "labels_mixed", "n_jobs_zero", "history_nested",
           "feature_names_short"]


@pytest.mark.parametrize("case", CRAFTED)
def test_item11_crafted_headers_raise_model_file_error(saved, tmp_path, capsys, case):
    _, raw = saved
    p = tmp_path / f"{case}.cfm"
    p.write_bytes(with_header(raw, _crafted(raw)[case]))
    expect_model_file_error(p)
    assert _model_file.peek_header(p) is None
    rc = cli.main(["info", str(p)])
    err = capsys.readouterr().err
    assert rc == 1 and str(p) in err and "internal error" not in err, err


def test_item11_checksum_checked_before_the_header(saved, tmp_path):
    """A header changed without its checksum is reported as corrupted (the
    whole of a small file is verified before its header is parsed)."""
    _, raw = saved
    h = header_of(raw)
    h["params"] = [1, 2]
    text = json.dumps(h, sort_keys=True).encode()
    hlen = struct.unpack_from("<I", raw, 12)[0]
    assert len(text) <= hlen
    body = raw[:16] + text + b" " * (hlen - len(text)) + raw[16 + hlen:]
    p = tmp_path / "stale.cfm"
    p.write_bytes(body)
    expect_model_file_error(p, "checksum")


def test_item11_cfm_info_reads_in_bounded_memory(models, tmp_path, capsys):
    path = tmp_path / "m.cfm"
    models["ffm16"].save(path)
    assert cli.main(["info", str(path), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["arrays"]["V"]["dtype"] == "float16" and s["file_bytes"] == path.stat().st_size
    import hashlib

    assert s["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_item11_mutations_only_raise_model_file_error(models, tmp_path):
    """A small sample of what the fuzz suite does: truncations, flips, flips
    with the checksum recomputed, header values replaced by extremes of
    every JSON type -- only ModelFileError (or a load that works)."""
    rng = np.random.default_rng(1)
    extremes = ["null", "true", "-1", str(2**64), "1e400", "NaN", '""', "[]", "{}", '[[["x"]]]']
    n_cases = 0
    for name in ("fm", "ffm16"):
        path = tmp_path / f"{name}.cfm"
        models[name].save(path)
        raw = path.read_bytes()
        h = header_of(raw)
        muts = [raw[:int(c)] for c in rng.integers(0, len(raw), 6)]
        for pos in rng.integers(0, len(raw) - 4, 8):
            b = bytearray(raw)
            b[pos] ^= 0x41
            muts += [bytes(b), fix_crc(b)]
        text = json.dumps(h, sort_keys=True)
        for key in ("n_features", "n_factors", "solver", "dtype", "task", "classes",
                    "history", "arrays", "params", "normalize", "mcmc", "n_fields"):
            if key not in h:
                continue
            old = f'"{key}": {json.dumps(h[key], sort_keys=True)}'
            assert old in text
            for e in extremes:
                muts.append(with_header(raw, text.replace(old, f'"{key}": {e}').encode()))
        for content in muts:
            p = tmp_path / "mut.cfm"
            p.write_bytes(content)
            n_cases += 1
            try:
                cfm.load(p)
            except cfm.ModelFileError as exc:
                assert str(p) in str(exc)
    assert n_cases > 200


@pytest.mark.parametrize("text,fragment", [
    ("bias: 0\ni_0: 1\ni_0: 2\n", ":3"),
    ("bias: 0\ni_0: 1\nv_0: 1 2\nv_0_0: 1 2\n", ":4"),
    ("bias: 0\ni_0: 1\nv_0: 1 nan\n", ":3"),
    ("bias: 0\ni_0: 1\nv_0: " + "1 " * 300 + "\n", ":3"),
    ("bias: 0\ni_0: 1\nv_0: 1 2\nv_1: 1\n", ":4"),
    ("bias: 0\ni_0: 1e400\n", ":2"),
    ("bias: 0\n\x00\x01\x02", "binary"),
], ids=["duplicate", "fm_and_ffm", "nan", "too_many_factors", "ragged", "inf", "binary"])
def test_item11_malformed_xlearn_models(tmp_path, text, fragment):
    from cfm.xlearn import load_xlearn

    p = tmp_path / "x.txt"
    p.write_bytes(text.encode("latin-1"))
    with pytest.raises(cfm.ModelFileError) as exc:
        load_xlearn(p)
    assert str(p) in str(exc.value) and fragment in str(exc.value), str(exc.value)


def test_item11_truncated_xlearn_ffm_with_fields_is_a_model_file_error(tmp_path):
    """An FFM text model cut after its linear weights reads as an LR model:
    with fields= (the caller expects an FFM) that is a model of another
    kind, ModelFileError as for kind= (was a plain ValueError; found by
    tests/test_fuzz.py)."""
    from cfm.xlearn import load_xlearn

    p = tmp_path / "ffm.txt"
    p.write_text("bias: 0\ni_0: 1\ni_1: 1\nv_0_0: 1 2\nv_0_1: 1 2\n"[:22])
    with pytest.raises(cfm.ModelFileError, match="fields= is for FFM") as exc:
        load_xlearn(p, fields=[0, 1])
    assert str(p) in str(exc.value) and "LR" in str(exc.value)


# --------------------------------------------------------------------------
# item 14 (part): the xLearn FFM message names the CLI flag
# --------------------------------------------------------------------------

def test_item14_xlearn_ffm_without_fields_names_the_cli_flag(tmp_path, capsys):
    model = tmp_path / "ffm.txt"
    model.write_text("bias: 0\ni_0: 1\ni_1: 1\nv_0_0: 1 2\nv_0_1: 1 2\nv_1_0: 1 2\n"
                     "v_1_1: 1 2\n")
    data = tmp_path / "d.ffm"
    data.write_text("1 0:0:1 1:1:1\n")
    # without --xlearn-fields: each entry's field, as xLearn scores (issue 16)
    rc = cli.main(["predict", str(model), str(data), "-q"])
    assert rc == 0
    capsys.readouterr()
    svm = tmp_path / "d.svm"
    svm.write_text("1 0:1 1:1\n")
    rc = cli.main(["predict", str(model), str(svm)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "libffm" in err and "fields=" not in err and "n_features" not in err, err
    assert "neither" not in err  # it is an xLearn model: say so
    rc = cli.main(["predict", str(model), str(data), "--xlearn-fields", str(data), "-q"])
    assert rc == 0
