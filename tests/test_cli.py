"""The ``cfm`` command line (cfm/cli/): every command, error paths, exit codes."""
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

import cfm
from cfm import cli
from cfm.cli._options import Log
from cfm.cli.progress import Progress

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    """Small train / test files (libsvm, libffm, one-based libsvm, regression)."""
    d = tmp_path_factory.mktemp("cli")
    X, y = cfm.make_fm_classification(1500, n_features=80, random_state=1)
    X = sp.csr_matrix(X)
    fields = (np.arange(80) % 4).astype(np.int32)
    cfm.dump_libsvm(X[:1000], y[:1000], d / "train.svm")
    cfm.dump_libsvm(X[1000:], y[1000:], d / "test.svm")
    cfm.dump_libsvm(X[1000:], y[1000:], d / "test.svm.gz")
    cfm.dump_libffm(X[:1000], y[:1000], fields, d / "train.ffm")
    cfm.dump_libffm(X[1000:], y[1000:], fields, d / "test.ffm")
    cfm.dump_libsvm(X[:1000], y[:1000], d / "train1.svm", zero_based=False)
    cfm.dump_libsvm(X[1000:], y[1000:], d / "test1.svm", zero_based=False)
    yr = np.asarray(X[:1000].sum(axis=1)).ravel() * 0.3 + 1.0
    cfm.dump_libsvm(X[:1000], yr, d / "reg.svm")
    return d


def run(argv, capsys):
    """cli.main in-process; returns (exit status, stdout, stderr)."""
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def one_error_line(err, *needles):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "error:" in lines[0]
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def fm_model(d):
    path = d / "fm.cfm"
    assert cli.main(["train", str(d / "train.svm"), "-o", str(path), "-k", "4", "-e", "3",
                     "--seed", "0", "--threads", "1", "-q"]) == 0
    return path


# --------------------------------------------------------------------------- train

@pytest.mark.parametrize("model,train,kind,k", [("lr", "train.svm", "FMClassifier", 0),
                                                ("fm", "train.svm", "FMClassifier", 3),
                                                ("ffm", "train.ffm", "FFMClassifier", 3)])
def test_train_each_model(d, tmp_path, capsys, model, train, kind, k):
    out = tmp_path / f"{model}.cfm"
    argv = ["train", d / train, "-o", out, "--model", model, "-e", "2", "--seed", "1",
            "--threads", "1"] + ([] if model == "lr" else ["-k", "3"])
    rc, stdout, err = run(argv, capsys)
    assert rc == 0 and stdout == ""
    assert "epoch   1/2" in err and "epoch   2/2" in err and "saved" in err
    assert "task: binary" in err  # detected from the labels
    m = cfm.load(out)
    assert type(m).__name__ == kind and m._k == k and m.n_epochs_ == 2 and m.verbose == 0


def test_train_options_reach_the_estimator(d, tmp_path, capsys):
    out = tmp_path / "m.cfm"
    rc, _, err = run(["train", d / "train.svm", "-o", out, "--solver", "ftrl", "--l1", "0.01",
                      "-k", "2", "-e", "2", "-r", "0.05", "--l2", "0.001", "--l2-v", "0.002",
                      "--init-std", "0.01", "--no-norm", "--dtype", "float64",
                      "--block-rows", "300", "--seed", "3", "--quiet"], capsys)
    assert rc == 0 and err == ""
    p = cfm.load(out).get_params()
    assert (p["solver"], p["l1"], p["learning_rate"], p["l2_w"], p["l2_v"], p["init_std"],
            p["normalize"], p["dtype"], p["random_state"]) == (
        "ftrl", 0.01, 0.05, 0.001, 0.002, 0.01, False, "float64", 3)


def test_train_dtype_float16_is_for_ffm(d, tmp_path, capsys):
    """--dtype float16 (documented for ffm) trains an FFM; an FM refuses it (usage error)."""
    out = tmp_path / "h.cfm"
    rc, _, err = run(["train", d / "train.ffm", "-o", out, "--model", "ffm", "--dtype",
                      "float16", "-k", "2", "-e", "1", "-q"], capsys)
    assert rc == 0 and err == ""
    assert cfm.load(out).get_params()["dtype"] == "float16"
    rc, _, err = run(["train", d / "train.svm", "-o", out, "--dtype", "float16", "-q"], capsys)
    assert rc == 2
    one_error_line(err, "dtype must be 'float32' or 'float64'")


def test_train_is_reproducible_with_one_thread(d, tmp_path, capsys):
    a, b = tmp_path / "a.cfm", tmp_path / "b.cfm"
    for p in (a, b):
        assert run(["train", d / "train.svm", "-o", p, "-e", "2", "--seed", "5",
                    "--threads", "1", "-q"], capsys)[0] == 0
    np.testing.assert_array_equal(cfm.load(a).V_, cfm.load(b).V_)


def test_train_regression_detected_and_validate(d, tmp_path, capsys):
    out = tmp_path / "r.cfm"
    rc, _, err = run(["train", d / "reg.svm", "-o", out, "-e", "2", "--validate",
                      d / "reg.svm"], capsys)
    assert rc == 0 and "task: reg" in err and "eval_rmse" in err
    assert type(cfm.load(out)).__name__ == "FMRegressor"
    # how the settings were chosen (issue 13: a file is never raced)
    assert "settings: learning_rate 0.15, normalize True, 2 epochs (off: out-of-core fit)" \
        in err


def test_train_validate_early_stopping(d, tmp_path, capsys):
    out = tmp_path / "m.cfm"
    rc, _, err = run(["train", d / "train.svm", "-o", out, "-e", "30", "--validate",
                      d / "test.svm", "--metric", "auc", "--patience", "1", "-r", "0.5",
                      "--seed", "0", "--threads", "1"],
                     capsys)
    assert rc == 0 and "eval_auc" in err
    m = cfm.load(out)
    assert "eval_auc" in m.history_[0]
    assert m.n_epochs_ < 30 and "early stopping" in err


def test_train_one_based_file_and_explicit_zero_based(d, tmp_path, capsys):
    m1 = tmp_path / "one.cfm"
    assert run(["train", d / "train1.svm", "-o", m1, "-e", "2", "-q"], capsys)[0] == 0
    assert cfm.load(m1)._input_zero_based is False
    m0 = tmp_path / "zero.cfm"
    assert run(["train", d / "train1.svm", "-o", m0, "-e", "2", "-q", "--zero-based", "true"],
               capsys)[0] == 0
    m = cfm.load(m0)
    assert m._input_zero_based is True and m.n_features_in_ == cfm.load(m1).n_features_in_ + 1
    # predict reads test files the way the model's training file was read
    out = tmp_path / "p.txt"
    assert run(["predict", m1, d / "test1.svm", "-o", out, "-q"], capsys)[0] == 0
    X, _ = cfm.load_libsvm(d / "test1.svm", n_features=80)
    np.testing.assert_allclose(np.loadtxt(out), cfm.load(m1).predict_proba(X)[:, 1],
                               rtol=1e-7)


def test_train_from_cache_and_convert(d, tmp_path, capsys):
    cache = tmp_path / "train.cfmdata"
    rc, _, err = run(["convert", d / "train.svm", "-o", cache], capsys)
    assert rc == 0 and "1,000 rows" in err and cache.exists()
    X, y = cfm.load_libsvm(d / "train.svm")
    Xc, yc, _ = cfm.load_cache(cache)
    assert (Xc != X).nnz == 0 and np.array_equal(yc, y)
    rc, _, _ = run(["convert", d / "train.ffm", "-q"], capsys)  # default: TEXT.cfmdata
    assert rc == 0 and (d / "train.ffm.cfmdata").exists()
    out = tmp_path / "m.cfm"
    assert run(["train", cache, "-o", out, "-e", "1", "-q"], capsys)[0] == 0
    out = tmp_path / "f.cfm"
    assert run(["train", d / "train.ffm.cfmdata", "-o", out, "--model", "ffm", "-e", "1", "-q"],
               capsys)[0] == 0


# --------------------------------------------------------------------------- predict

def test_predict_to_file_and_stdout(d, fm_model, tmp_path, capsys):
    m = cfm.load(fm_model)
    X, y = cfm.load_libsvm(d / "test.svm", n_features=80)
    expect = m.predict_proba(X)[:, 1]
    out = tmp_path / "p.txt"
    rc, stdout, err = run(["predict", fm_model, d / "test.svm", "-o", out], capsys)
    assert rc == 0 and stdout == "" and "scored 500 rows" in err
    np.testing.assert_allclose(np.loadtxt(out), expect, rtol=1e-7)
    rc, stdout, err = run(["predict", fm_model, d / "test.svm.gz", "--raw", "-q"], capsys)
    assert rc == 0 and err == ""
    np.testing.assert_allclose(np.loadtxt(io.StringIO(stdout)), m.decision_function(X),
                               rtol=1e-7, atol=1e-8)


def test_predict_eval(d, fm_model, capsys):
    from cfm._metrics import auc

    m = cfm.load(fm_model)
    X, y = cfm.load_libsvm(d / "test.svm", n_features=80)
    rc, stdout, err = run(["predict", fm_model, d / "test.svm", "--eval", "-q",
                           "--precision", "4"], capsys)
    assert rc == 0 and len(stdout.splitlines()) == 500
    assert all(len(v.replace("0.", "")) <= 4 for v in stdout.split())
    line = err.strip()
    assert line.startswith("rows 500") and "logloss" in line
    got = float(line.split("auc ")[1].split()[0])
    assert got == pytest.approx(auc(y, m.decision_function(X)), abs=1e-6)


def test_predict_ffm_model(d, tmp_path, capsys):
    model = tmp_path / "f.cfm"
    assert run(["train", d / "train.ffm", "-o", model, "--model", "ffm", "-k", "2", "-e", "2",
                "-q"], capsys)[0] == 0
    m = cfm.load(model)
    X, _, _ = cfm.load_libffm(d / "test.ffm", n_features=80)
    rc, stdout, _ = run(["predict", model, d / "test.ffm", "-q"], capsys)
    assert rc == 0
    np.testing.assert_allclose(np.loadtxt(io.StringIO(stdout)), m.predict_proba(X)[:, 1],
                               rtol=1e-7)


def test_info(fm_model, d, capsys):
    rc, stdout, err = run(["info", fm_model], capsys)
    assert rc == 0 and err == ""
    for needle in ("FMClassifier", "binary", "n_features=80", "n_factors=4", "adagrad",
                   "crc32", "sha256", "3 epochs"):
        assert needle in stdout
    rc, stdout, _ = run(["info", fm_model, "--json"], capsys)
    info = json.loads(stdout)
    assert info["model"] == "fm" and info["task"] == "binary" and info["n_factors"] == 4
    assert info["params"]["n_epochs"] == 3 and len(info["history"]) == 3
    rc, stdout, _ = run(["info", d / "train.ffm.cfmdata"] if (d / "train.ffm.cfmdata").exists()
                        else ["info", fm_model], capsys)
    assert rc == 0


def test_info_of_a_cache(d, tmp_path, capsys):
    cache = tmp_path / "c.cfmdata"
    cfm.convert_to_cache(d / "test.svm", cache)
    rc, stdout, _ = run(["info", cache, "--json"], capsys)
    info = json.loads(stdout)
    assert rc == 0 and info["kind"] == "cfmdata cache" and info["n_rows"] == 500


# --------------------------------------------------------------------------- errors

def test_missing_files(d, fm_model, tmp_path, capsys):
    rc, _, err = run(["predict", tmp_path / "nope.cfm", d / "test.svm"], capsys)
    assert rc == 1
    one_error_line(err, "nope.cfm", "no such")
    rc, _, err = run(["predict", fm_model, tmp_path / "nope.svm"], capsys)
    assert rc == 1
    one_error_line(err, "nope.svm", "no such")
    rc, _, err = run(["train", tmp_path / "nope.svm", "-o", tmp_path / "m.cfm"], capsys)
    assert rc == 1
    one_error_line(err, "nope.svm")
    rc, _, err = run(["info", tmp_path / "nope.cfm"], capsys)
    assert rc == 1
    rc, _, err = run(["predict", fm_model, d / "test.svm", "-o", tmp_path / "no/dir/p.txt"],
                     capsys)
    assert rc == 1
    one_error_line(err, "cannot write")


def test_malformed_line_names_file_and_line(fm_model, tmp_path, capsys):
    bad = tmp_path / "bad.svm"
    bad.write_text("1 1:1 2:1\n0 3:1\n1 4:1 5:oops\n")
    for argv in (["predict", fm_model, bad, "-o", tmp_path / "p.txt"],
                 ["train", bad, "-o", tmp_path / "m.cfm"],
                 ["convert", bad]):
        rc, _, err = run(argv, capsys)
        assert rc == 1
        one_error_line(err, f"{bad}:3:", "5:oops")
    assert not (tmp_path / "p.txt").exists()


def test_wrong_kind_of_file(d, fm_model, tmp_path, capsys):
    rc, _, err = run(["predict", d / "test.svm", d / "test.svm"], capsys)  # data as model
    assert rc == 1
    # predict also accepts xLearn TXT models: the message names both formats
    one_error_line(err, "neither a cfm model file nor an xLearn TXT model", "line 1")
    rc, _, err = run(["predict", fm_model, fm_model], capsys)  # model as data
    assert rc == 1
    one_error_line(err, "is a cfm model file, not a data file")
    rc, _, err = run(["info", d / "test.svm"], capsys)
    assert rc == 1
    one_error_line(err, "not a cfm model file")
    rc, _, err = run(["train", d / "train.svm", "-o", tmp_path / "f.cfm", "--model", "ffm"],
                     capsys)
    assert rc == 1
    one_error_line(err, "libffm")
    trunc = tmp_path / "trunc.cfm"
    trunc.write_bytes(fm_model.read_bytes()[:500])
    rc, _, err = run(["predict", trunc, d / "test.svm"], capsys)
    assert rc == 1
    one_error_line(err, "truncated")


@pytest.mark.parametrize("argv,needle", [
    (["train", "{train}", "-o", "{out}", "--epochs", "0"], "--epochs"),
    (["train", "{train}", "-o", "{out}", "--lr", "abc"], "--lr"),
    (["train", "{train}", "-o", "{out}", "--lr", "-1"], "--lr"),
    (["train", "{train}", "-o", "{out}", "--threads", "0"], "--threads"),
    (["train", "{train}", "-o", "{out}", "--model", "svm"], "--model"),
    (["train", "{train}", "-o", "{out}", "--l1", "0.1"], "--solver ftrl"),
    (["train", "{train}", "-o", "{out}", "--model", "lr", "-k", "4"], "lr"),
    (["train", "{train}", "-o", "{out}", "--task", "reg", "--metric", "auc"], "--metric"),
    (["train", "{train}", "-o", "{out}", "-k", "100000"], "-k"),
    (["train", "{train}", "-o", "{out}", "--tol", "nan"], "--tol"),
    (["train", "{train}"], "-o"),
    (["predict", "{train}", "{train}", "--precision", "30"], "--precision"),
    (["predict", "{train}", "{train}", "--zero-based", "perhaps"], "--zero-based"),
    (["frobnicate"], "frobnicate"),
    (["train", "{train}", "-o", "{out}", "--bogus"], "--bogus"),
])
def test_bad_options_exit_2(d, tmp_path, capsys, argv, needle):
    argv = [a.format(train=d / "train.svm", out=tmp_path / "m.cfm") for a in argv]
    rc, _, err = run(argv, capsys)
    assert rc == 2
    one_error_line(err, needle)
    assert not (tmp_path / "m.cfm").exists()


def test_no_command_and_help(capsys):
    assert cli.main([]) == 2
    assert "train" in capsys.readouterr().err
    assert cli.main(["predict", "--help"]) == 0
    assert "--raw" in capsys.readouterr().out
    assert cli.main(["--version"]) == 0
    assert cfm.__version__ in capsys.readouterr().out


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        cli.main(["info", str(tmp_path / "nope.cfm"), "--debug"])


def test_interrupt_exits_130(monkeypatch, fm_model, d, capsys):
    def boom(*a, **k):
        raise KeyboardInterrupt

    import cfm.scoring

    monkeypatch.setattr(cfm.scoring, "_predict_file", boom)  # behind both predict paths
    rc, _, err = run(["predict", fm_model, d / "test.svm"], capsys)
    assert rc == 130 and "interrupted" in err


# --------------------------------------------------------------------------- subprocesses

def _cfm(*args, stdin=None):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "cfm", *map(str, args)], input=stdin,
                          capture_output=True, env=env, cwd=ROOT, timeout=120)


def test_subprocess_stdin_pipeline(d, fm_model):
    m = cfm.load(fm_model)
    X, _ = cfm.load_libsvm(d / "test.svm", n_features=80)
    p = _cfm("predict", fm_model, "-", "--raw", "-q", stdin=(d / "test.svm").read_bytes())
    assert p.returncode == 0 and p.stderr == b""
    np.testing.assert_allclose(np.loadtxt(io.BytesIO(p.stdout)), m.decision_function(X),
                               rtol=1e-7, atol=1e-8)
    p = _cfm("predict", fm_model, d / "missing.svm")
    assert p.returncode == 1 and b"Traceback" not in p.stderr
    assert p.stderr.decode().strip().startswith("cfm predict: error:")


def test_subprocess_broken_pipe_is_quiet(d, fm_model, tmp_path):
    big = tmp_path / "big.svm"
    text = (d / "test.svm").read_bytes()
    big.write_bytes(text * 200)  # 100k rows, ~2 MB of output
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "cfm", "predict", str(fm_model), str(big)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    first = proc.stdout.readline()
    proc.stdout.close()  # the reader goes away, as `| head -1` does
    err = proc.stderr.read()
    rc = proc.wait(timeout=120)
    assert float(first) > 0
    assert b"Traceback" not in err and b"error" not in err
    assert rc == 141  # as a tool killed by SIGPIPE


def test_progress_bar_on_a_terminal(capsys):
    log = Log(False)
    bar = Progress(3, log, tty=True)
    for e in (1, 2, 3):
        bar.epoch({"epoch": e, "train_loss": 0.5, "eval_auc": 0.7, "time": 0.01}, 3)
    bar.clear()
    err = capsys.readouterr().err
    assert "epoch   2/3" in err and "[" in err and "epochs" in err and "\r" in err
    quiet = Progress(3, Log(True), tty=True)
    quiet.epoch({"epoch": 1, "train_loss": 0.5, "time": 0.01}, 3)
    assert capsys.readouterr().err == ""


def test_cli_process_gives_openblas_one_thread():
    """In a cfm command-line process OpenBLAS gets one thread (its idle
    threads would compete with cfm's kernels); a user's setting wins, and
    importing cfm as a library changes nothing."""
    code = ("import sys; sys.argv[0] = {argv0!r}; import cfm, os; "
            "print(os.environ.get('OPENBLAS_NUM_THREADS'))")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("OPENBLAS_NUM_THREADS", None)

    def run_py(argv0, **extra):
        p = subprocess.run([sys.executable, "-c", code.format(argv0=argv0)],
                           capture_output=True, text=True, env=dict(env, **extra), timeout=120)
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()

    assert run_py("/usr/local/bin/cfm") == "1"
    assert run_py("/usr/local/bin/cfm", OPENBLAS_NUM_THREADS="2") == "2"
    assert run_py("-c") == "None"
