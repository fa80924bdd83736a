"""Settings chosen from the data (issue 13): the race of ``auto_tune``.

Data are just large enough for the race to run (the guard needs 200
minority-class validation rows, i.e. ~1,350 per class; regressors 1,000
validation rows, i.e. ~6,700 rows); every fit is n_jobs=1 and seeded.
"""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import cfm
from cfm import _tuning
from cfm._state import FMTable
from cfm._train import autotune
from cfm._validation import check_X, draw_seed

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="module")
def clf():
    X, y = cfm.make_fm_classification(n_samples=3000, n_features=60, n_fields=6,
                                      random_state=0)
    return X, y


@pytest.fixture(scope="module")
def reg():
    X, y = cfm.make_fm_regression(n_samples=7000, n_features=60, n_fields=6, random_state=1)
    return X, y


FIELDS = np.repeat(np.arange(6), 10)


def _out(m, X):
    return m.decision_function(X) if hasattr(m, "decision_function") else m.predict(X)


def _fixed(m, **kw):
    """The fixed (auto_tune=False) fit that ``m``'s best_params_ describe."""
    bp = m.best_params_
    p = dict(m.get_params(), learning_rate=bp["learning_rate"], normalize=bp["normalize"],
             n_epochs=bp["n_epochs"], auto_tune=False)
    p.update(kw)
    return type(m)(**p)


# --------------------------------------------------------------- the race
def test_race_runs_and_refit_is_the_standalone_fit(clf):
    X, y = clf
    m = cfm.FMClassifier(n_jobs=1, random_state=0).fit(X, y)
    bp = m.best_params_
    assert bp["auto"] == "race" and bp["validation_fraction"] == 0.15
    assert bp["learning_rate"] in (0.05, 0.1, 0.2) and isinstance(bp["normalize"], bool)
    assert 1 <= bp["n_epochs"] <= autotune.MAX_EPOCHS
    race = m.race_
    assert race["metric"] == "auc" and race["rungs"] == [1, 2, 4]
    assert race["validation_rows"] == sum(autotune.holdout_counts(y, True))
    cands = race["candidates"]
    assert [(c["learning_rate"], c["normalize"]) for c in cands] == [
        (0.05, True), (0.1, True), (0.2, True), (0.05, False), (0.1, False), (0.2, False)]
    # successive halving 6 -> 3 -> 2 -> 1
    assert sorted(c["dropped_at"] for c in cands if c["dropped_at"]) == [1, 1, 1, 2, 4]
    w = cands[race["winner"]]
    assert w["dropped_at"] is None and (w["learning_rate"], w["normalize"]) == (
        bp["learning_rate"], bp["normalize"])
    assert race["best_epoch"] == bp["n_epochs"]
    assert max(w["curve"]) == race["best_score"] == w["curve"][bp["n_epochs"] - 1]
    assert race["row_epochs"] <= autotune.BUDGET + 1e-9
    # the returned model is the fit best_params_ describe, bit for bit
    assert len(m.history_) == m.n_epochs_ == m.best_epoch_ == bp["n_epochs"]
    ref = _fixed(m).fit(X, y)
    np.testing.assert_array_equal(m.decision_function(X), ref.decision_function(X))
    json.dumps(race)  # plain data


def test_same_seed_same_choice_and_bits(clf):
    X, y = clf
    a = cfm.FMClassifier(n_jobs=1, random_state=3).fit(X, y)
    b = cfm.FMClassifier(n_jobs=1, random_state=3).fit(X, y)
    assert a.best_params_ == b.best_params_ and a.race_ == b.race_
    np.testing.assert_array_equal(a.decision_function(X), b.decision_function(X))
    # a RandomState is drawn from once per fit: the refit uses the race's seed
    c = cfm.FMClassifier(n_jobs=1, random_state=np.random.RandomState(3)).fit(X, y)
    ref = _fixed(c, random_state=np.random.RandomState(3)).fit(X, y)
    np.testing.assert_array_equal(c.decision_function(X), ref.decision_function(X))


@pytest.mark.parametrize("kind", ["ffm_clf", "ffm16_clf", "fm_reg", "lr_clf", "ftrl_clf",
                                  "sgd_reg"])
def test_race_for_every_per_sample_estimator(kind, clf, reg):
    X, y = reg if kind.endswith("reg") else clf
    fit = {}
    if kind == "ffm_clf":
        m, fit = cfm.FFMClassifier(4, dtype="float32"), {"fields": FIELDS}
    elif kind == "ffm16_clf":   # float16 tables: stochastic rounding seeded from the rng
        if not cfm._ffm.half_simd_available():
            pytest.skip("float16 FFM kernels need AVX2/F16C")
        m, fit = cfm.FFMClassifier(4, dtype="float16"), {"fields": FIELDS}
    elif kind == "fm_reg":
        m = cfm.FMRegressor(4)
    elif kind == "lr_clf":
        m = cfm.FMClassifier(0)
    elif kind == "ftrl_clf":
        m = cfm.FMClassifier(4, solver="ftrl")
    else:
        m = cfm.FMRegressor(4, solver="sgd", learning_rate=0.02)
    m.set_params(n_jobs=1, random_state=0)
    m.fit(X, y, **fit)
    assert m.best_params_["auto"] in ("race", "early stopping")
    assert m.race_["metric"] == ("rmse" if kind.endswith("reg") else "auc")
    ref = _fixed(m).fit(X, y, **fit)
    np.testing.assert_array_equal(_out(m, X), _out(ref, X))


def test_explicit_arguments_are_never_overridden(clf):
    X, y = clf
    kw = dict(n_jobs=1, random_state=0)
    m = cfm.FMClassifier(learning_rate=0.07, **kw).fit(X, y)
    assert {c["learning_rate"] for c in m.race_["candidates"]} == {0.07}
    assert len(m.race_["candidates"]) == 2 and m.best_params_["learning_rate"] == 0.07
    m = cfm.FMClassifier(normalize=False, **kw).fit(X, y)
    assert {c["normalize"] for c in m.race_["candidates"]} == {False}
    assert m.best_params_["normalize"] is False and m._state.normalize is False
    m = cfm.FMClassifier(n_epochs=3, **kw).fit(X, y)
    assert m.best_params_["n_epochs"] == 3 and len(m.history_) == 3
    assert all(len(c["curve"]) <= 3 for c in m.race_["candidates"])
    # learning rate and normalize given: early stopping only, then the refit
    m = cfm.FMClassifier(learning_rate=0.2, normalize=True, **kw).fit(X, y)
    assert m.best_params_["auto"] == "early stopping" and len(m.race_["candidates"]) == 1
    assert (m.best_params_["learning_rate"], m.best_params_["normalize"]) == (0.2, True)
    # all three given: no race, no holdout
    m = cfm.FMClassifier(learning_rate=0.2, normalize=False, n_epochs=4, **kw).fit(X, y)
    assert m.race_ is None and m.best_params_["auto"] == _tuning.GIVEN
    ref = cfm.FMClassifier(learning_rate=0.2, normalize=False, n_epochs=4, auto_tune=False,
                           **kw).fit(X, y)
    np.testing.assert_array_equal(m.decision_function(X), ref.decision_function(X))


def test_held_out_rows_are_never_trained_before_the_choice(clf, monkeypatch):
    X, y = clf
    orders = []
    real = FMTable.train_epoch

    def spy(self, Xc, yy, sw, order, *a, **k):
        orders.append(np.array(order))
        return real(self, Xc, yy, sw, order, *a, **k)

    monkeypatch.setattr(FMTable, "train_epoch", spy)
    m = cfm.FMClassifier(n_jobs=1, random_state=4).fit(X, y)
    n_refit = m.best_params_["n_epochs"]
    race, refit = orders[:-n_refit], orders[-n_refit:]
    assert all(len(o) == X.shape[0] and len(np.unique(o)) == X.shape[0] for o in refit)
    seen = np.unique(np.concatenate(race))
    y_pm = np.where(y == m.classes_[1], 1.0, -1.0)
    tr, va = autotune.holdout(y_pm, draw_seed(4), True)
    np.testing.assert_array_equal(seen, tr)
    assert len(va) == m.race_["validation_rows"] and not np.isin(va, seen).any()
    # stratified: 15% of each class
    pos = int((y_pm[va] > 0).sum())
    assert pos == round(0.15 * (y_pm > 0).sum())


def test_held_out_labels_do_not_reach_the_bias(reg, monkeypatch):
    """A regressor's bias starts at the mean target: of the training rows only."""
    X, y = reg
    seen = []
    real = FMTable.replica

    def spy(self, w0_state, *a, **k):   # candidates and the refit copy one init
        seen.append(w0_state[0])
        return real(self, w0_state, *a, **k)

    monkeypatch.setattr(FMTable, "replica", spy)
    m = cfm.FMRegressor(4, n_jobs=1, random_state=0).fit(X, y)
    tr, _ = autotune.holdout(y, draw_seed(0), False)
    assert seen[0] == pytest.approx(np.mean(y[tr]), rel=1e-12)
    assert seen[-1] == pytest.approx(np.mean(y), rel=1e-12)  # the refit
    assert m.best_params_["auto"] == "race"


# --------------------------------------------------------------- the guard
@pytest.mark.parametrize("est,fit", [
    (cfm.FMClassifier, {}), (cfm.FMRegressor, {}),
    (cfm.FFMClassifier, {"fields": np.arange(4) % 2})])
def test_tiny_data_fits_through_the_guard(est, fit):
    rng = np.random.default_rng(0)
    X = rng.random((10, 4))
    y = np.array([0, 1] * 5) if est is not cfm.FMRegressor else rng.normal(size=10)
    m = est(n_jobs=1, random_state=0).fit(X, y, **fit)
    assert m.best_params_["auto"] == autotune.TOO_SMALL and m.race_ is None
    assert m.best_params_["validation_fraction"] == 0.0 and m.n_epochs_ == 10
    ref = est(n_jobs=1, random_state=0, auto_tune=False).fit(X, y, **fit)
    np.testing.assert_array_equal(_out(m, X), _out(ref, X))


def test_guard_counts_the_minority_class(clf):
    X, y = clf
    rare = np.flatnonzero(y == 1)[:1000]   # 1,000 positives: 150 in validation
    keep = np.sort(np.r_[np.flatnonzero(y == 0), rare])
    m = cfm.FMClassifier(n_jobs=1, random_state=0).fit(X[keep], y[keep])
    assert m.best_params_["auto"] == autotune.TOO_SMALL
    assert autotune.too_small([100000, 199], True) and not autotune.too_small([200, 200], True)
    assert autotune.too_small([999], False) and not autotune.too_small([1000], False)


def test_auto_tune_false_reproduces_the_old_fixed_fits():
    """Retrained with auto_tune=False (and with the defaults, which the guard
    turns into the same fit on 60 rows), the per-sample fixture models score
    as the old cfm's files do (tests/fixtures: written before issue 13)."""
    spec = importlib.util.spec_from_file_location("make_fixtures",
                                                  FIXTURES / "make_fixtures.py")
    mf = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_fixtures", mf)
    spec.loader.exec_module(mf)
    X, y_reg, y_bin = mf._data(60, seed=1)
    Xt, _, _ = mf._data(17, seed=2)
    with np.load(FIXTURES / "expected.npz") as z:
        expected = dict(z)
    labels = np.array(["no", "yes"])[y_bin]
    models = mf._models(X, y_reg, y_bin)
    for name, m in models.items():
        if m.solver in ("als", "mcmc") or name == "ffm_clf_default":
            continue
        assert m.best_params_["auto"] == autotune.TOO_SMALL
        np.testing.assert_array_equal(_out(m, Xt), expected[f"{name}.decision"], err_msg=name)
        off = type(m)(**dict(m.get_params(), auto_tune=False))
        yy = y_reg if "reg" in name else labels if "strlabels" in name else y_bin
        off.fit(X, yy, **({"fields": mf.FIELDS} if "ffm" in name else {}))
        assert off.best_params_["auto"] == _tuning.OFF
        np.testing.assert_array_equal(_out(off, Xt), _out(m, Xt), err_msg=name)


# ------------------------------------------------- partial_fit, warm start
def test_partial_fit_uses_the_previous_choice_or_the_defaults(clf):
    X, y = clf
    p = cfm.FMClassifier(n_jobs=1, random_state=0).partial_fit(X, y)
    assert p.best_params_["auto"] == _tuning.PARTIAL and p.race_ is None
    assert (p.best_params_["learning_rate"], p.best_params_["normalize"]) == (0.1, True)
    m = cfm.FMClassifier(n_jobs=1, random_state=0).fit(X, y)
    ref = _fixed(m).fit(X, y)
    m.best_params_["learning_rate"] = 0.2   # what partial_fit must use
    ref.set_params(learning_rate=0.2)
    m.partial_fit(X[:500], y[:500])
    ref.partial_fit(X[:500], y[:500])
    np.testing.assert_array_equal(m.decision_function(X), ref.decision_function(X))
    m.set_params(learning_rate=0.05)        # explicit wins
    ref.set_params(learning_rate=0.05)
    m.partial_fit(X[:500], y[:500])
    ref.partial_fit(X[:500], y[:500])
    np.testing.assert_array_equal(m.decision_function(X), ref.decision_function(X))


def test_warm_start_continues_without_a_race(clf):
    X, y = clf
    m = cfm.FMClassifier(n_jobs=1, random_state=0).fit(X, y)
    ref = _fixed(m).fit(X, y)
    e = m.n_epochs_
    m.set_params(warm_start=True).fit(X, y)
    ref.set_params(warm_start=True, n_epochs=None).fit(X, y)
    assert m.race_ is None and m.best_params_["auto"] == _tuning.WARM
    assert m.n_epochs_ == e + 10 and m.best_params_["n_epochs"] == e + 10
    np.testing.assert_array_equal(m.decision_function(X), ref.decision_function(X))


# --------------------------------------------------------------- eval_set
def test_eval_set_replaces_the_holdout(clf):
    X, y = clf
    Xtr, ytr, Xv, yv = X[:1600], y[:1600], X[1600:], y[1600:]
    kw = dict(n_jobs=1, random_state=0)
    seen = []
    m = cfm.FMClassifier(**kw).fit(Xtr, ytr, eval_set=(Xv, yv),
                                   callback=lambda rec, n: seen.append((rec["epoch"], n)))
    bp = m.best_params_
    # progress: the winner's epochs after the race, out of at most 40
    assert seen == [(e, 40) for e in range(5, len(m.history_) + 1)]
    assert bp["auto"] == "race on eval_set" and bp["validation_fraction"] == 0.0
    assert m.race_["validation_rows"] == Xv.shape[0]
    assert all("eval_auc" in h for h in m.history_)
    assert m.best_epoch_ == bp["n_epochs"] and m.n_epochs_ == len(m.history_)
    # no refit: the winner at its best epoch, as a fixed fit with the same
    # settings and early stopping on the same rows gives it
    scores = [h["eval_auc"] for h in m.history_]
    assert max(scores) == scores[m.best_epoch_ - 1] == m.race_["best_score"]
    ref = cfm.FMClassifier(learning_rate=bp["learning_rate"], normalize=bp["normalize"],
                           n_epochs=len(m.history_), eval_metric="auc", tol=0,
                           auto_tune=False, **kw).fit(Xtr, ytr, eval_set=(Xv, yv))
    np.testing.assert_array_equal(m.decision_function(X), ref.decision_function(X))
    # a small eval_set cannot resolve the race: the fixed fit with early stopping
    s = cfm.FMClassifier(**kw).fit(Xtr, ytr, eval_set=(Xv[:300], yv[:300]))
    assert s.best_params_["auto"] == autotune.TOO_SMALL and "eval_logloss" in s.history_[0]


# --------------------------------------------------------------- the rest
def test_out_of_core_fit_uses_fixed_settings(clf):
    X, y = clf
    chunks = [(X[:1500], y[:1500]), (X[1500:], y[1500:])]
    m = cfm.FMClassifier(n_jobs=1, random_state=0).fit(chunks)
    assert m.best_params_["auto"] == _tuning.STREAM and m.race_ is None
    assert m.n_epochs_ == 10 and m.best_params_["learning_rate"] == 0.1


def test_memory_bound_races_normalize_only(clf, monkeypatch):
    X, y = clf
    monkeypatch.setattr(autotune, "MEMORY_SHARE", 0.0)
    m = cfm.FMClassifier(n_jobs=1, random_state=0).fit(X, y)
    assert [(c["learning_rate"], c["normalize"]) for c in m.race_["candidates"]] == [
        (0.1, True), (0.1, False)]
    assert m.race_["memory_limited"] is True
    # a race of two is decided after the last rung's epoch, not after one
    assert m.race_["rungs"] == [4]
    assert [c["dropped_at"] for c in m.race_["candidates"]].count(4) == 1


@pytest.mark.parametrize("n, rungs", [(1, (4,)), (2, (4,)), (3, (2, 4)), (4, (2, 4)),
                                      (5, (1, 2, 4)), (6, (1, 2, 4)), (9, (1, 2, 4))])
def test_race_rungs_end_at_the_same_epoch(n, rungs):
    assert autotune.race_rungs(n) == rungs
    assert autotune.race_rungs(n, n_epochs=3) == tuple(sorted({min(r, 3) for r in rungs}))


def test_given_normalize_races_three_learning_rates_at_epochs_2_and_4(clf):
    X, y = clf
    m = cfm.FMClassifier(n_jobs=1, random_state=0, normalize=True).fit(X, y)
    assert m.race_["rungs"] == [2, 4]
    assert sorted(c["dropped_at"] for c in m.race_["candidates"] if c["dropped_at"]) == [2, 4]


def test_auto_tune_must_be_a_boolean(clf):
    X, y = clf
    with pytest.raises(ValueError, match="auto_tune must be True or False"):
        cfm.FMClassifier(auto_tune="yes").fit(X, y)


def test_verbose_prints_the_rungs_and_the_choice(clf, capsys):
    X, y = clf
    cfm.FMClassifier(n_jobs=1, random_state=0, verbose=1).fit(X, y)
    err = capsys.readouterr().err.splitlines()
    rungs = [ln for ln in err if ln.startswith("auto: rung")]
    assert len(rungs) == 3 and "kept 1" in rungs[-1]
    assert sum(ln.startswith("auto: chose") for ln in err) == 1
    assert sum(ln.startswith("epoch") for ln in err) >= 1   # the refit's epochs


def test_best_params_saved_and_loaded(clf, tmp_path):
    X, y = clf
    m = cfm.FMClassifier(n_jobs=1, random_state=0).fit(X, y)
    m.save(tmp_path / "m.cfm")
    m2 = cfm.load(tmp_path / "m.cfm")
    assert m2.best_params_ == m.best_params_ and m2.auto_tune is True
    np.testing.assert_array_equal(m2.decision_function(X), m.decision_function(X))


def test_a_diverging_candidate_loses_the_race():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(7000, 40)) * 30   # dense, large values: normalize=False diverges
    y = X[:, 0] * 0.1 + rng.normal(size=7000)
    m = cfm.FMRegressor(4, n_jobs=1, random_state=0, solver="sgd").fit(X, y)
    cands = m.race_["candidates"]
    assert any(c["diverged"] for c in cands)
    assert not cands[m.race_["winner"]]["diverged"] and m.best_params_["normalize"] is True
    assert np.isfinite(m.predict(X)).all()


def test_take_rows_and_holdout():
    rng = np.random.default_rng(0)
    X = sp.random(50, 7, density=0.3, random_state=1, format="csr")
    Xc = check_X(X)
    rows = np.array([0, 3, 4, 49, 10], dtype=np.int64)
    got = autotune.take_rows(Xc, rows)
    ref = X[rows]
    np.testing.assert_array_equal(got.indptr, ref.indptr)
    np.testing.assert_array_equal(got.indices, ref.indices)
    np.testing.assert_array_equal(got.data, ref.data)
    y = np.where(rng.random(1000) < 0.3, 1.0, -1.0)
    tr, va = autotune.holdout(y, 5, True)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 1000
    assert int((y[va] > 0).sum()) == autotune.holdout_counts(y, True)[1]
    tr2, va2 = autotune.holdout(y, 5, True)
    np.testing.assert_array_equal(va, va2)


def test_mcmc_classifier_defaults_to_one_prior_group(clf):
    X, y = clf
    m = cfm.FMClassifier(2, solver="mcmc", n_epochs=4, random_state=0).fit(X[:400], y[:400])
    assert m.n_prior_groups_ == 1
    assert m.best_params_["auto"] == "off: solver='mcmc'"
    ref = cfm.FMClassifier(2, solver="mcmc", n_epochs=4, random_state=0).fit(
        X[:400], y[:400], groups=np.zeros(X.shape[1], int))
    np.testing.assert_array_equal(m.predict_proba(X), ref.predict_proba(X))
    r = cfm.FMRegressor(2, solver="mcmc", n_epochs=4, random_state=0).fit(X[:400], y[:400])
    assert r.n_prior_groups_ > 1   # one-hot fields detected


def test_race_reuses_arrays_of_dropped_candidates(clf, monkeypatch):
    """One initialisation is copied; the first rung keeps at most 4 of the 6
    candidate states alive, later ones (and the refit) reuse dropped arrays."""
    X, y = clf
    reused, news = [], []
    real_replica, real_new = FMTable.replica, FMTable.new.__func__

    def replica(self, w0_state, normalize, reuse=None):
        reused.append(reuse is not None)
        return real_replica(self, w0_state, normalize, reuse)

    def new(cls, *a, **k):
        news.append(1)
        return real_new(cls, *a, **k)

    monkeypatch.setattr(FMTable, "replica", replica)
    monkeypatch.setattr(FMTable, "new", classmethod(new))
    m = cfm.FMClassifier(n_jobs=1, random_state=0).fit(X, y)
    assert m.best_params_["auto"] == "race" and len(news) == 1
    assert reused == [False] * 4 + [True] * 3
    assert autotune.peak_models(6, False) == 5 and autotune.peak_models(2, True) == 5
