"""Threads (issue 11, items 2 and 9): bounded thread counts, a model file that
does not choose the scoring threads, helper threads that cannot be created,
and cfm's worker pool (cfm._pool) that every kernel runs its parallel loops on.
No timing here: benchmarks/bench_under_load.py measures the speed."""
import hashlib
import json
import os
import platform
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import scipy.sparse as sp

import cfm
from cfm import _ffm, _pool
from cfm._validation import (MAX_THREADS_PER_CORE, effective_n_threads, max_threads,
                             usable_cores)
from conftest import errors_in_threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HUGE = (1000, 100_000, 10**9, 2**63, 10**400, np.int64(10**12))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run(code, timeout=120):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=_env(),
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def data():
    X, y = cfm.make_fm_regression(n_samples=6000, n_features=300, n_fields=6, n_factors=3,
                                  random_state=0)
    fields = (np.arange(300) % 6).astype(np.int32)
    return sp.csr_matrix(X), y, fields


# ------------------------------------------------------------------ n_jobs caps
def test_usable_cores_is_the_affinity():
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no sched_getaffinity")
    assert usable_cores() == len(os.sched_getaffinity(0))
    assert max_threads() == MAX_THREADS_PER_CORE * usable_cores()


@pytest.mark.parametrize("n_jobs", HUGE)
def test_huge_n_jobs_is_capped(n_jobs):
    if not cfm.openmp_enabled():
        pytest.skip("built without OpenMP: always 1 thread")
    assert effective_n_threads(n_jobs) == max_threads()


@pytest.mark.parametrize("n_jobs", [-1, -2, -10**9, -10**400])
def test_negative_n_jobs(n_jobs):
    n = effective_n_threads(n_jobs)
    assert 1 <= n <= max_threads()
    if n_jobs <= -10**9:
        assert n == 1


@pytest.mark.parametrize("bad", [0, 1.5, "4", True, [2]])
def test_invalid_n_jobs(bad):
    with pytest.raises(ValueError, match="n_jobs"):
        effective_n_threads(bad)


def test_default_is_capped_even_when_openmp_says_more(monkeypatch):
    from cfm import _utils

    monkeypatch.setattr(_utils, "omp_max_threads", lambda: 10**6)
    monkeypatch.setenv("OMP_NUM_THREADS", "1000000")
    assert effective_n_threads(None) <= max_threads()


@pytest.mark.parametrize("make", [
    lambda nj: cfm.FMClassifier(n_factors=3, n_epochs=2, n_jobs=nj, random_state=0),
    lambda nj: cfm.FMClassifier(n_factors=0, n_epochs=2, n_jobs=nj, random_state=0),
    lambda nj: cfm.FFMClassifier(n_factors=3, n_epochs=2, n_jobs=nj, random_state=0),
    lambda nj: cfm.FMClassifier(n_factors=3, n_epochs=10, solver="mcmc", n_jobs=nj,
                                random_state=0),
], ids=["fm", "lr", "ffm", "mcmc"])
def test_fit_and_predict_with_huge_n_jobs(data, make):
    """n_jobs=100000 used to segfault (libgomp); now it is max_threads()."""
    X, y, fields = data
    yb = (y > np.median(y)).astype(int)
    kw = {"fields": fields} if "FFM" in type(make(1)).__name__ else {}
    m1 = make(1).fit(X, yb, **kw)
    mh = make(100_000).fit(X, yb, **kw)
    p1 = m1.predict_proba(X)
    # training on 6,000 rows uses one thread (one per 10,000 rows): same model
    np.testing.assert_array_equal(mh.predict_proba(X), p1)
    m1.n_jobs = 100_000
    np.testing.assert_array_equal(m1.predict_proba(X), p1)


# ------------------------------------------------------------- determinism
def _models(data):
    X, y, fields = data
    yb = (y > np.median(y)).astype(int)
    yield "fm", cfm.FMRegressor(n_factors=4, n_epochs=2, n_jobs=1, random_state=0).fit(X, y)
    yield "lr", cfm.FMClassifier(n_factors=0, n_epochs=2, n_jobs=1, random_state=0).fit(X, yb)
    yield "fm64", cfm.FMRegressor(n_factors=3, n_epochs=2, n_jobs=1, random_state=0,
                                  dtype="float64").fit(X, y)
    for dt in ("float32", "float16"):
        if dt == "float16" and not _ffm.half_simd_available():
            continue
        yield f"ffm-{dt}", cfm.FFMRegressor(n_factors=4, n_epochs=1, n_jobs=1, dtype=dt,
                                            random_state=0).fit(X, y, fields=fields)
    yield "mcmc", cfm.FMClassifier(n_factors=3, n_epochs=8, solver="mcmc", n_jobs=1,
                                   random_state=0).fit(X, yb)


def test_predictions_identical_for_any_n_jobs(data):
    X, _, _ = data
    Xs = [X.astype(np.float32), X.astype(np.float64),
          sp.csr_matrix((X.data, X.indices.astype(np.int64), X.indptr), shape=X.shape)]
    for name, m in _models(data):
        for Xv in Xs:
            ref = m._raw_predict(Xv)
            for nj in (2, 3, 7, -1, None, 100_000):
                m.n_jobs = nj
                np.testing.assert_array_equal(m._raw_predict(Xv), ref, err_msg=name)
            m.n_jobs = 1


def _digest(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:24]


# Recorded with the OpenMP build that preceded cfm's worker pool (commit
# 9da6f73), x86-64 with AVX2/F16C: n_jobs=1 training must stay bit for bit.
GOLDEN = {"fm_adagrad_f32": "e7485701364c4975a56e369b",
          "fmc_ftrl_f64": "3fe49cff999af9145e354ba6",
          "ffm_adagrad_f32": "a84d58d66cbf5e26b8d1773a",
          "ffmc_adagrad_f16": "3ce3b698e7a8dbf30a4f8cfd"}


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="recorded on x86-64")
def test_single_thread_training_bit_identical_to_before_the_pool():
    if _ffm.simd_path() != "avx2" or not _ffm.half_simd_available():
        pytest.skip("recorded with the AVX2/F16C FFM kernels")
    # the fixed fits (auto_tune=False): the race of issue 13 came later
    X, y = cfm.make_fm_regression(n_samples=3000, n_features=200, n_fields=5, n_factors=3,
                                  random_state=0)
    fields = (np.arange(200) % 5).astype(np.int32)
    yb = (y > np.median(y)).astype(int)
    got = {}
    m = cfm.FMRegressor(n_factors=4, n_epochs=3, n_jobs=1, random_state=0,
                        auto_tune=False).fit(X, y)
    got["fm_adagrad_f32"] = _digest(m._table, m._w0_state, m.predict(X))
    m = cfm.FMClassifier(n_factors=4, n_epochs=3, n_jobs=1, random_state=0, auto_tune=False,
                         solver="ftrl", dtype="float64").fit(X, yb)
    got["fmc_ftrl_f64"] = _digest(m._table, m._w0_state, m.decision_function(X))
    m = cfm.FFMRegressor(n_factors=4, n_epochs=2, n_jobs=1, random_state=0, auto_tune=False,
                         dtype="float32").fit(X, y, fields=fields)
    got["ffm_adagrad_f32"] = _digest(m._lin, m._V, m._w0_state, m.predict(X))
    m = cfm.FFMClassifier(n_factors=4, n_epochs=2, n_jobs=1, random_state=0, auto_tune=False,
                          dtype="float16").fit(X, yb, fields=fields)
    got["ffmc_adagrad_f16"] = _digest(m._lin, m._V, m._w0_state, m.decision_function(X))
    assert got == GOLDEN


def test_multithreaded_training_runs_and_stays_close(data):
    """Hogwild with 2 threads on 24,000 rows (2 threads really train)."""
    X, y, fields = data
    X = sp.vstack([X] * 4, format="csr")
    y = np.concatenate([y] * 4)
    for cls, kw in ((cfm.FMRegressor, {}), (cfm.FFMRegressor, {"fields": fields})):
        m1 = cls(n_factors=3, n_epochs=2, n_jobs=1, random_state=0).fit(X, y, **kw)
        m2 = cls(n_factors=3, n_epochs=2, n_jobs=2, random_state=0).fit(X, y, **kw)
        assert abs(m1.score(X, y) - m2.score(X, y)) < 0.05


def test_concurrent_callers_share_the_pool(data):
    """Python threads scoring at once (each call a pool job): same results."""
    X, y, _ = data
    m = cfm.FMRegressor(n_factors=4, n_epochs=1, n_jobs=2, random_state=0).fit(X, y)
    ref = m.predict(X)

    def work():
        for _ in range(20):
            np.testing.assert_array_equal(m.predict(X), ref)

    errors = errors_in_threads(work, [()] * 6)
    assert not errors
    assert _pool.workers() <= max_threads()


# ------------------------------------------------------------------ the pool
@pytest.mark.parametrize("n,chunk,nt", [(0, 4, 2), (1, 4, 8), (5, 1, 8), (1000, 7, 2),
                                        (10_000, 100, 3), (999, 1000, 4), (64, 1, 64)])
def test_parallel_for_covers_every_item_once(n, chunk, nt):
    slots = _pool._test_parallel_for(n, chunk, nt, 50)
    assert len(slots) == n
    assert (slots >= 0).all() and (slots < max(nt, 1)).all()
    # each chunk is run by one thread
    for lo in range(0, n, chunk):
        assert len(set(slots[lo:lo + chunk].tolist())) == 1


def test_no_helper_when_threads_cannot_be_created():
    """pthread_create failing (thread or memory limit) means fewer helpers:
    the calling thread does the work; libgomp used to exit(1) here."""
    r = _run("""
        import numpy as np, cfm
        from cfm import _pool
        _pool._test_no_spawn(True)
        X, y = cfm.make_fm_regression(n_samples=20000, n_features=20, random_state=0)
        m1 = cfm.FMRegressor(n_factors=3, n_epochs=1, n_jobs=1, random_state=0).fit(X, y)
        m8 = cfm.FMRegressor(n_factors=3, n_epochs=1, n_jobs=8, random_state=0).fit(X, y)
        assert _pool.workers() == 0 and _pool.spawn_failures() > 0
        # rows visited in order by the one thread there is (only the merge of
        # the per-thread bias states is a team-of-8 merge)
        np.testing.assert_allclose(m8.predict(X), m1.predict(X), rtol=1e-5, atol=1e-6)
        ref = m1.predict(X)
        m1.n_jobs = 8
        np.testing.assert_array_equal(m1.predict(X), ref)
        slots = _pool._test_parallel_for(1000, 10, 8)
        assert (slots == 0).all()
        print("ok")
    """)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS / /proc are Linux")
def test_memory_limit_on_thread_stacks_is_not_fatal():
    """n_jobs=1000 under a memory limit: libgomp ended the process with
    status 1 ("Thread creation failed"); now the threads that fit run."""
    r = _run("""
        import resource, numpy as np, cfm
        from cfm import _pool
        X, y = cfm.make_fm_regression(n_samples=8000, n_features=20, random_state=0)
        m = cfm.FMRegressor(n_factors=3, n_epochs=1, n_jobs=1, random_state=0).fit(X, y)
        ref = m.predict(X)
        out = np.empty_like(ref)
        vm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status")
              if l.startswith("VmSize")][0]
        # room for scoring, not for the 4 MiB stacks of many helper threads
        resource.setrlimit(resource.RLIMIT_AS, (vm + (6 << 20), resource.RLIM_INFINITY))
        m.n_jobs = 1000
        for _ in range(3):
            np.testing.assert_array_equal(m.predict(X), ref)
        print("ok", _pool.spawn_failures() > 0)
    """)
    assert r.returncode == 0 and r.stdout.startswith("ok"), (r.returncode, r.stderr)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_pool_works_in_a_forked_child():
    _pool._test_parallel_for(1000, 10, 2, 100)  # the parent has helpers
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            slots = _pool._test_parallel_for(5000, 10, 2, 100)
            ok = len(slots) == 5000 and (slots >= 0).all()
            os._exit(0 if ok else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


# ------------------------------------------------------- model files and CLI
def _fitted(data):
    X, y, _ = data
    yb = (y > np.median(y)).astype(int)
    return cfm.FMClassifier(n_factors=3, n_epochs=1, n_jobs=1, random_state=0).fit(X, yb)


@pytest.mark.parametrize("saved", [10**9, 2**70])
def test_cli_predict_ignores_the_saved_n_jobs(tmp_path, data, saved):
    """A model file (valid checksum) saying n_jobs=10**9 scores with the
    default threads; it crashed `cfm predict` before."""
    X, y, _ = data
    m = _fitted(data)
    ref = m.predict_proba(X)[:, 1]
    m.n_jobs = saved
    path = tmp_path / "m.cfm"
    m.save(path)
    svm = tmp_path / "d.svm"
    cfm.dump_libsvm(X, y, str(svm))
    out = tmp_path / "out.txt"
    r = subprocess.run([sys.executable, "-m", "cfm", "predict", str(path), str(svm), "-o",
                        str(out), "--zero-based", "true"], env=_env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.loadtxt(out), ref, rtol=1e-8)
    # the Python entry point too: n_jobs=None is the default, not the file's
    from cfm._loader import predict_model_file

    model, stats = predict_model_file(path, str(svm), str(tmp_path / "o2.txt"), zero_based=True)
    assert stats["threads"] == effective_n_threads(None)
    assert model.n_jobs == saved  # kept as a parameter; capped when used
    np.testing.assert_array_equal(model.predict_proba(X)[:, 1], ref)


def test_load_refuses_a_saved_n_jobs_that_is_not_one(tmp_path, data):
    m = _fitted(data)
    path = tmp_path / "m.cfm"
    for bad in ("many", 1.5, True, 0):
        m.n_jobs = bad
        m.save(path)
        with pytest.raises(cfm.ModelFileError, match="n_jobs"):
            cfm.load(path)
    (tmp_path / "d.svm").write_text("0 1:1\n")
    r = subprocess.run([sys.executable, "-m", "cfm", "predict", str(path), str(tmp_path / "d.svm"),
                        "--zero-based", "true"], env=_env(), capture_output=True, timeout=120)
    assert r.returncode == 1 and b"n_jobs" in r.stderr, r.stderr


def test_cli_threads_option_is_capped(tmp_path, data):
    X, y, _ = data
    m = _fitted(data)
    path = tmp_path / "m.cfm"
    m.save(path)
    svm = tmp_path / "d.svm"
    cfm.dump_libsvm(X[:500], y[:500], str(svm))
    r = subprocess.run([sys.executable, "-m", "cfm", "predict", str(path), str(svm), "-o",
                        str(tmp_path / "o.txt"), "--zero-based", "true", "--threads",
                        str(10**9)], env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.loadtxt(tmp_path / "o.txt"), m.predict_proba(X[:500])[:, 1],
                               rtol=1e-8)
    # cfm train --threads 100000 segfaulted (libgomp)
    r = subprocess.run([sys.executable, "-m", "cfm", "train", str(svm), "-o",
                        str(tmp_path / "t.cfm"), "-e", "1", "-q", "--threads", "100000"],
                       env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert cfm.load(tmp_path / "t.cfm").n_jobs == 100_000


def test_model_copy_without_threads(monkeypatch):
    """Loading copies large tables with a helper thread; when none can be
    started the copy runs on the calling thread."""
    from cfm._state.base import copy_rows as _copy_rows

    def refuse(self):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    src = np.arange(4000, dtype=np.float32).reshape(1000, 4)
    dst = np.zeros_like(src)
    _copy_rows(dst, src, n_threads=3, min_bytes=0)
    np.testing.assert_array_equal(dst, src)
