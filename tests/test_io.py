"""Model files (save / load), pickle and deepcopy; damaged and foreign files."""
import copy
import pickle
import struct
import zlib

import numpy as np
import pytest

import cfm
from conftest import random_sparse

ATTRS = ["n_features_in_", "n_epochs_", "best_epoch_", "w0_"]


@pytest.fixture(scope="module")
def models():
    rng = np.random.default_rng(0)
    X = random_sparse(80, 15, 3, rng)
    y = rng.normal(size=80)
    lab = np.where(y > 0, "spam", "ham")
    out = {
        "reg": (cfm.FMRegressor(n_factors=3, n_epochs=2, n_jobs=1, random_state=0)
                .fit(X, y), X),
        "reg64_ftrl": (cfm.FMRegressor(n_factors=2, n_epochs=2, solver="ftrl", l1=0.01,
                                       dtype="float64", n_jobs=1, random_state=0).fit(X, y), X),
        "clf_str": (cfm.FMClassifier(n_factors=3, n_epochs=2, n_jobs=1, random_state=0)
                    .fit(X, lab), X),
        "clf_int": (cfm.FMClassifier(n_factors=0, n_epochs=2, solver="sgd", n_jobs=1,
                                     random_state=0).fit(X, np.where(y > 0, 7, 3)), X),
        "clf_eval": (cfm.FMClassifier(n_factors=2, n_epochs=3, n_jobs=1, random_state=0)
                     .fit(X, lab, eval_set=(X, lab)), X),
    }
    return out


def _outputs(m, X):
    if isinstance(m, cfm.FMClassifier):
        return [m.decision_function(X), m.predict_proba(X), m.predict(X)]
    return [m.predict(X)]


def assert_same_model(a, b, X):
    assert type(a) is type(b)
    for x, y in zip(_outputs(a, X), _outputs(b, X)):
        np.testing.assert_array_equal(x, y)
    for name in ATTRS:
        assert getattr(a, name) == getattr(b, name)
    np.testing.assert_array_equal(a.w_, b.w_)
    np.testing.assert_array_equal(a.V_, b.V_)
    assert a.w_.dtype == b.w_.dtype
    assert a.get_params() == b.get_params()
    assert len(a.history_) == len(b.history_)
    if hasattr(a, "classes_"):
        np.testing.assert_array_equal(a.classes_, b.classes_)
        assert list(a.classes_) == list(b.classes_)


@pytest.mark.parametrize("name", ["reg", "reg64_ftrl", "clf_str", "clf_int", "clf_eval"])
def test_save_load_roundtrip(models, name, tmp_path):
    m, X = models[name]
    path = tmp_path / "model.cfm"
    m.save(path)
    loaded = cfm.load(path)
    assert_same_model(m, loaded, X)
    loaded.save(str(tmp_path / "again.cfm"))  # str paths too; re-save is byte-identical
    assert (tmp_path / "again.cfm").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("name", ["reg", "clf_str"])
def test_loaded_model_continues_training(models, name, tmp_path):
    m, X = models[name]
    path = tmp_path / "m.cfm"
    m.save(path)
    a, b = cfm.load(path), copy.deepcopy(m)
    y = m.predict(X)
    for est in (a, b):
        est.partial_fit(X, y)
    np.testing.assert_array_equal(a.w_, b.w_)
    np.testing.assert_array_equal(a.V_, b.V_)


@pytest.mark.parametrize("name", ["reg", "reg64_ftrl", "clf_str", "clf_int"])
def test_pickle_and_deepcopy(models, name):
    m, X = models[name]
    for clone in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert_same_model(m, clone, X)
        assert clone._table is not m._table


def test_file_has_no_pickle(models, tmp_path):
    m, _ = models["clf_str"]
    path = tmp_path / "m.cfm"
    m.save(path)
    raw = path.read_bytes()
    assert raw[:8] == b"\x89CFM\r\n\x1a\n"
    assert b"\x80\x04" not in raw[:64]  # not a pickle stream


@pytest.fixture
def saved(models, tmp_path):
    m, _ = models["clf_str"]
    path = tmp_path / "m.cfm"
    m.save(path)
    return path, path.read_bytes()


def _expect_model_file_error(path, *fragments):
    with pytest.raises(cfm.ModelFileError) as exc:
        cfm.load(path)
    assert isinstance(exc.value, ValueError)
    msg = str(exc.value)
    assert any(f in msg for f in fragments), msg
    assert str(path) in msg or repr(str(path)) in msg  # names the file
    return msg


@pytest.mark.parametrize("where", [0.5, 0.1, 0.9, -5])
def test_corrupted_byte(saved, tmp_path, where):
    path, raw = saved
    pos = int(len(raw) * where) if where > 0 else len(raw) + where
    bad = bytearray(raw)
    bad[pos] ^= 0x5A
    p = tmp_path / "bad.cfm"
    p.write_bytes(bytes(bad))
    _expect_model_file_error(p, "corrupt", "checksum", "header", "truncated")


@pytest.mark.parametrize("cut", [0, 4, 8, 15, 16, 40, 0.3, 0.5, 0.9, -4, -1])
def test_truncated(saved, tmp_path, cut):
    path, raw = saved
    n = int(len(raw) * cut) if isinstance(cut, float) else (cut if cut >= 0 else len(raw) + cut)
    p = tmp_path / "cut.cfm"
    p.write_bytes(raw[:n])
    _expect_model_file_error(p, "truncated", "corrupt", "checksum")


@pytest.mark.parametrize("content,fragment", [
    (b"", "truncated"),
    (b"hello world, this is a text file\n" * 10, "not a cfm model file"),
    (bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)),
     "not a cfm model file"),
    (pickle.dumps({"a": 1}), "not a cfm model file"),
    (b"PK\x03\x04" + b"\0" * 100, "not a cfm model file"),
], ids=["empty", "text", "random", "pickle", "zip"])
def test_foreign_files(tmp_path, content, fragment):
    p = tmp_path / "foreign.bin"
    p.write_bytes(content)
    _expect_model_file_error(p, fragment)


def _patch_version(raw, major, fix_crc=True):
    b = bytearray(raw)
    b[8:10] = struct.pack("<H", major)
    if fix_crc:
        b[-4:] = struct.pack("<I", zlib.crc32(bytes(b[:-4])))
    return bytes(b)


@pytest.mark.parametrize("fix_crc", [True, False])
def test_newer_major_version(saved, tmp_path, fix_crc):
    _, raw = saved
    p = tmp_path / "v2.cfm"
    p.write_bytes(_patch_version(raw, 2, fix_crc))
    msg = _expect_model_file_error(p, "newer", "upgrade")
    assert "2." in msg


def test_newer_minor_version_accepted(saved, models, tmp_path):
    _, raw = saved
    b = bytearray(raw)
    b[10:12] = struct.pack("<H", 7)
    b[-4:] = struct.pack("<I", zlib.crc32(bytes(b[:-4])))
    p = tmp_path / "v1_7.cfm"
    p.write_bytes(bytes(b))
    m, X = models["clf_str"]
    assert_same_model(m, cfm.load(p), X)


def test_version_zero_rejected(saved, tmp_path):
    _, raw = saved
    p = tmp_path / "v0.cfm"
    p.write_bytes(_patch_version(raw, 0))
    _expect_model_file_error(p, "version")


def test_missing_file_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        cfm.load(tmp_path / "nope.cfm")


def test_save_unfitted_raises(tmp_path):
    with pytest.raises(cfm.NotFittedError):
        cfm.FMRegressor().save(tmp_path / "x.cfm")
    assert not (tmp_path / "x.cfm").exists()


def test_model_file_with_too_many_factors_is_refused(tmp_path):
    """A crafted file must not drive the kernels past their stack buffers."""
    import json
    import struct
    import zlib

    from cfm._model_file import MAGIC

    X = np.eye(4)
    m = cfm.FMRegressor(n_factors=2, n_epochs=1).fit(X, np.arange(4.0))
    path = tmp_path / "m.cfm"
    m.save(path)
    buf = bytearray(path.read_bytes())
    hlen = struct.unpack_from("<I", buf, 12)[0]
    header = json.loads(bytes(buf[16:16 + hlen]))
    header["n_factors"] = 100_000
    new = json.dumps(header, sort_keys=True).encode()
    assert len(new) <= hlen
    buf[16:16 + hlen] = new + b" " * (hlen - len(new))
    body = bytes(buf[:-4])
    path.write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    assert bytes(buf[:8]) == MAGIC
    with pytest.raises(cfm.ModelFileError):
        cfm.load(path)


# ----------------------------------------------------------------------------
# Loading maps the file: nothing of the map may outlive load()

@pytest.mark.parametrize("scoring_only", [False, True])
def test_loaded_model_does_not_keep_the_file(models, tmp_path, scoring_only):
    """The file is memory-mapped while loading; the model must own copies,
    so rewriting the file in place afterwards cannot change (or crash) it."""
    m, X = models["clf_str"]
    path = tmp_path / "m.cfm"
    m.save(path)
    loaded = cfm.load(path, scoring_only=scoring_only)
    before = loaded.decision_function(X)
    with open(path, "r+b") as f:  # in place: same inode, shorter
        f.truncate(100)
    np.testing.assert_array_equal(loaded.decision_function(X), before)
    path.unlink()
    np.testing.assert_array_equal(loaded.decision_function(X), before)


def test_ffm_loaded_model_does_not_keep_the_file(tmp_path):
    rng = np.random.default_rng(1)
    X = random_sparse(200, 12, 4, rng)
    y = (rng.random(200) > 0.5).astype(int)
    fields = np.arange(12) % 3
    m = cfm.FFMClassifier(n_factors=4, n_epochs=2, n_jobs=1, random_state=0).fit(
        X, y, fields=fields)
    path = tmp_path / "f.cfm"
    m.save(path)
    for scoring_only in (False, True):
        loaded = cfm.load(path, scoring_only=scoring_only)
        np.testing.assert_array_equal(loaded.decision_function(X), m.decision_function(X))
    with open(path, "r+b") as f:
        f.truncate(64)
    np.testing.assert_array_equal(loaded.decision_function(X), m.decision_function(X))


def test_corrupted_table_reported_after_the_copy(saved, tmp_path):
    """The checksum is verified while the tables are copied: a flipped byte
    inside an array still fails the load with a checksum error."""
    path, raw = saved
    bad = bytearray(raw)
    bad[len(raw) - 200] ^= 0x01  # inside the last array, not the header
    p = tmp_path / "bad.cfm"
    p.write_bytes(bytes(bad))
    msg = _expect_model_file_error(p, "checksum")
    assert "corrupt" in msg
    with pytest.raises(cfm.ModelFileError, match="checksum"):
        cfm.load(p, scoring_only=True)


def test_copy_rows_threads_match_plain_copy():
    from cfm._state.base import copy_rows as _copy_rows

    rng = np.random.default_rng(0)
    src = rng.normal(size=(1001, 7, 5)).astype(np.float32)
    for n_threads in (1, 2, 3):
        dst = np.zeros((1001, 7, 4), dtype=np.float32)
        _copy_rows(dst, src[:, :, :4], n_threads=n_threads, min_bytes=0)
        np.testing.assert_array_equal(dst, src[:, :, :4])
