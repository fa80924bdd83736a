"""``cfm train --task rank`` and ``cfm recommend`` (in-process, through
cfm.cli.main), and cfm.load_interactions."""
import numpy as np
import pytest
import scipy.sparse as sp

import cfm
from cfm import cli


def run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("rank")
    rng = np.random.default_rng(0)
    lines_train, lines_test = [], []
    for u in range(1, 41):
        liked = [i for i in range(1, 31) if (i + u) % 2 == 0]
        for i in rng.permutation(liked)[:8]:
            lines_train.append(f"{u}\t{i}\t5\t881250949")
        for i in rng.permutation([i for i in range(1, 31) if (i + u) % 2])[:4]:
            lines_train.append(f"{u}\t{i}\t1\t881250950")  # below --min-value
        test = [i for i in liked if f"{u}\t{i}\t5\t881250949" not in lines_train]
        lines_test += [f"{u} {i} 5" for i in test[:3]]
    (d / "train.tsv").write_text("\n".join(lines_train) + "\n")
    (d / "test.txt").write_text("# held out\n" + "\n".join(lines_test) + "\n")
    return d


def test_load_interactions(files, tmp_path):
    R = cfm.load_interactions(files / "train.tsv", min_value=4)
    assert R.shape == (41, 31) and R.nnz == 40 * 8
    assert set(np.unique(R.data)) == {1.0}
    assert cfm.load_interactions(files / "train.tsv").nnz == 40 * 12
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2\n3 x\n")
    with pytest.raises(cfm.DataFormatError, match="line 2"):
        cfm.load_interactions(bad)
    bad.write_text("1 2 nan\n")
    with pytest.raises(cfm.DataFormatError, match="line 1: non-finite"):
        cfm.load_interactions(bad)
    bad.write_text("-1 2\n")
    with pytest.raises(cfm.DataFormatError, match="ids must be"):
        cfm.load_interactions(bad)


def test_train_recommend_and_eval(files, tmp_path, capsys):
    model = tmp_path / "r.cfm"
    rc, out, err = run(["train", "--task", "rank", files / "train.tsv", "-o", model,
                        "--min-value", "4", "-k", "4", "-e", "15", "--seed", "0",
                        "--threads", "1", "--loss", "warp", "-r", "0.05"], capsys)
    assert rc == 0, err
    assert "FMRanker" in err and "epoch   15" in err
    m = cfm.load(model)
    assert isinstance(m, cfm.FMRanker) and m.loss == "warp" and m.n_epochs_ == 15
    assert m.learning_rate == 0.05
    rc, out, err = run(["recommend", model, "--users", "1,2", "-k", "3", "--exclude",
                        files / "train.tsv"], capsys)
    assert rc == 0, err
    rows = [ln.split("\t") for ln in out.splitlines()]
    assert [r[0] for r in rows] == ["1"] * 3 + ["2"] * 3
    ids, scores = m.recommend([1, 2], 3, exclude=cfm.load_interactions(files / "train.tsv"))
    assert [int(r[1]) for r in rows] == ids.ravel().tolist()
    np.testing.assert_allclose([float(r[2]) for r in rows], scores.ravel(), rtol=1e-6)
    out_file = tmp_path / "metrics.tsv"
    rc, out, err = run(["recommend", model, "--eval", files / "test.txt", "--exclude",
                        files / "train.tsv", "-k", "3", "-o", out_file], capsys)
    assert rc == 0, err
    metrics = dict(ln.split("\t") for ln in out_file.read_text().splitlines())
    assert float(metrics["precision@3"]) > 0.5  # the planted parity preference


def test_cli_errors(files, tmp_path, capsys):
    rc, _, err = run(["train", files / "train.tsv", "-o", tmp_path / "m.cfm", "--loss", "bpr"],
                     capsys)
    assert rc == 2 and "--loss applies to --task rank only" in err
    rc, _, err = run(["train", "--task", "rank", files / "train.tsv", "-o", tmp_path / "m.cfm",
                      "--solver", "sgd"], capsys)
    assert rc == 2 and "--solver does not apply" in err
    fm = cfm.FMRegressor(n_epochs=1).fit(sp.random(20, 5, density=0.5, random_state=0),
                                          np.arange(20.0))
    fm.save(tmp_path / "fm.cfm")
    rc, _, err = run(["recommend", tmp_path / "fm.cfm"], capsys)
    assert rc == 1 and "not a ranking model" in err
    model = tmp_path / "r.cfm"
    assert run(["train", "--task", "rank", files / "train.tsv", "-o", model, "-e", "1", "-q"],
               capsys)[0] == 0
    rc, _, err = run(["train", "--task", "rank", files / "train.tsv", "-o", model, "-e", "30",
                      "--validate", files / "test.txt", "--patience", "2", "--min-value", "4"],
                     capsys)
    assert rc == 0 and "ndcg@10" in err and "best epoch" in err
    rc, _, err = run(["recommend", model, "--users", "99"], capsys)
    assert rc == 1 and "user 99 is not in the model" in err
