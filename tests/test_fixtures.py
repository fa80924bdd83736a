"""Files written by an older cfm load and score bit-identically.

tests/fixtures/ holds model files and ``.cfmdata`` caches written by the cfm
named in tests/fixtures/MANIFEST.json (see make_fixtures.py), with the scores
that cfm gave.  Never regenerate them to make this file pass.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import cfm
from cfm import cli

HERE = Path(__file__).resolve().parent / "fixtures"
MANIFEST = json.loads((HERE / "MANIFEST.json").read_text())
MODELS = sorted(MANIFEST["models"])
CACHES = sorted(MANIFEST["caches"])


@pytest.fixture(scope="module")
def expected():
    with np.load(HERE / "expected.npz", allow_pickle=False) as z:
        return dict(z)


@pytest.fixture(scope="module")
def Xt(expected):
    indptr = expected["Xt_indptr"]
    return sp.csr_matrix((expected["Xt_data"], expected["Xt_indices"], indptr),
                         shape=(len(indptr) - 1, 24))


# Deliberate scoring changes since a fixture was written, each bounded: the
# file still loads and scores, within this relative tolerance instead of bit
# for bit.  deepfm_clf_adam (float32, written at 52ff01f): the float32 MLP
# forward moved from BLAS sgemm, whose rounding of a row depended on its
# position in the block, to a fixed-order kernel (cfm_dense.h, h16-fields) so
# that a row scores the same in any block; measured change 4.0e-9.
CHANGED = {"deepfm_clf_adam": 1e-7}


def _same(name, got, want):
    if name in CHANGED:
        return np.allclose(got, want, rtol=CHANGED[name], atol=CHANGED[name])
    return np.array_equal(got, want)


def _same_text(name, got, want):
    if name not in CHANGED:
        return got == want
    a = np.array([float(x) for x in got.split()])
    b = np.array([float(x) for x in want.split()])
    return a.shape == b.shape and np.allclose(a, b, rtol=CHANGED[name], atol=1e-8)


def _scores(m, Xt):
    out = {"decision": m.decision_function(Xt) if hasattr(m, "decision_function")
           else m.predict(Xt), "predict": m.predict(Xt)}
    if hasattr(m, "predict_proba"):
        out["proba"] = m.predict_proba(Xt)
    return out


def test_manifest_lists_every_file():
    on_disk = {p.stem for p in HERE.glob("*.cfm")}
    assert on_disk == set(MODELS)
    assert {p.stem for p in HERE.glob("*.cfmdata")} == set(CACHES)
    assert len(MANIFEST["commit"]) == 40


@pytest.mark.parametrize("scoring_only", [False, True])
@pytest.mark.parametrize("name", MODELS)
def test_old_model_file_scores_bit_identically(name, scoring_only, expected, Xt):
    m = cfm.load(HERE / f"{name}.cfm", scoring_only=scoring_only)
    assert type(m).__name__ == MANIFEST["models"][name]["class"]
    # solver (FM, FFM) or optimizer (DeepFM)
    assert (getattr(m, "solver", None) or m.optimizer) == MANIFEST["models"][name]["solver"]
    got = _scores(m, Xt)
    assert set(got) == {k.split(".", 1)[1] for k in expected if k.startswith(name + ".")}
    for what, value in got.items():
        want = expected[f"{name}.{what}"]
        assert value.dtype == want.dtype or (what == "predict"
                                             and value.dtype.kind == want.dtype.kind)
        assert _same(name, value, want), (name, what)
    assert np.isfinite(got["decision"]).all()  # row 3 is empty


@pytest.mark.parametrize("name", [n for n in MODELS if MANIFEST["models"][n]["class"]
                                  in ("FMRegressor", "FMClassifier", "FFMRegressor",
                                      "FFMClassifier")])
def test_old_model_file_resaves_to_a_file_that_scores_the_same(name, expected, Xt, tmp_path):
    m = cfm.load(HERE / f"{name}.cfm")
    m.save(tmp_path / "again.cfm")
    again = cfm.load(tmp_path / "again.cfm")
    assert np.array_equal(_scores(again, Xt)["decision"], expected[f"{name}.decision"])


def _cli_predict(model, data, out, *extra):
    rc = cli.main(["predict", str(model), str(data), "-o", str(out), "-q", *extra])
    assert rc == 0
    return Path(out).read_bytes()


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("name", MODELS)
def test_cfm_predict_on_old_model_writes_identical_bytes(name, threads, tmp_path):
    data = HERE / MANIFEST["models"][name]["data"]
    want = (HERE / f"{name}.pred.txt").read_bytes()
    got = _cli_predict(HERE / f"{name}.cfm", data, tmp_path / "p.txt", "--threads", threads)
    assert _same_text(name, got, want)
    raw = HERE / f"{name}.raw.txt"
    if raw.exists():
        got = _cli_predict(HERE / f"{name}.cfm", data, tmp_path / "r.txt", "--threads", threads,
                           "--raw")
        assert _same_text(name, got, raw.read_bytes())


def test_cfm_predict_as_a_command(tmp_path):
    """The real ``python -m cfm predict`` process, once."""
    import os
    import subprocess
    import sys

    name = "ffm_clf_default"
    env = dict(os.environ, PYTHONPATH=str(HERE.parents[1]))
    subprocess.run([sys.executable, "-m", "cfm", "predict", str(HERE / f"{name}.cfm"),
                    str(HERE / "test.ffm"), "-o", str(tmp_path / "p.txt"), "-q"],
                   check=True, env=env, timeout=120)
    assert (tmp_path / "p.txt").read_bytes() == (HERE / f"{name}.pred.txt").read_bytes()


@pytest.mark.parametrize("name", CACHES)
def test_old_cache_loads_identically(name, expected, tmp_path):
    X, y, fields = cfm.load_cache(HERE / f"{name}.cfmdata")
    assert X.shape == tuple(expected[f"{name}.shape"])
    for part in ("data", "indices", "indptr"):
        a, b = np.asarray(getattr(X, part)), expected[f"{name}.{part}"]
        assert a.dtype == b.dtype and np.array_equal(a, b), part
    assert np.array_equal(y, expected[f"{name}.y"])
    if f"{name}.fields" in expected:
        assert np.array_equal(fields, expected[f"{name}.fields"])
    else:
        assert fields is None
    # the text it was made from still parses to the same arrays
    src = HERE / MANIFEST["caches"][name]["source"]
    load = cfm.load_libffm if src.suffix == ".ffm" else cfm.load_libsvm
    parsed = load(src, n_features=X.shape[1])
    assert np.array_equal(parsed[0].toarray(), X.toarray())
    # and cfm predict on the old cache writes the old bytes (a copy: the
    # reader must not need to write next to the cache)
    model = MANIFEST["caches"][name]["scored_by"]
    shutil.copy(HERE / f"{name}.cfmdata", tmp_path / "c.cfmdata")
    got = _cli_predict(HERE / f"{model}.cfm", tmp_path / "c.cfmdata", tmp_path / "p.txt")
    assert got == (HERE / f"{name}.{model}.pred.txt").read_bytes()


def test_old_xlearn_text_imports_to_the_same_scores(expected, Xt):
    m = cfm.load_xlearn(HERE / "xlearn_fm.txt", "binary", norm=True)
    assert np.array_equal(m.decision_function(Xt), expected["xlearn_fm_clf.decision"])
