"""The contract every cfm estimator keeps, run over estimator x solver x dtype.

One table (CASES) lists what the public API offers; each test below checks one
promise for every entry: save/load and pickle/deepcopy round trips are
bit-identical, scoring does not depend on n_jobs, n_jobs=1 training is
deterministic under random_state (als/mcmc: for any n_jobs), warm start and
partial_fit continue training exactly (or are refused with a clear error
where a solver does not support them), bad input gets the documented
ValueError, an empty row scores as the bias, and scikit-learn's
get_params/clone/tags work.

Public API only (``cfm.*`` and documented estimator methods/attributes), so
that the suite holds across internal restructuring.  To add a model: add its
rows to CASES (and, if it needs extra fit arguments, to ``_fit_kwargs``).
Each model's own test file keeps only what is specific to it.
"""
import copy
import pickle
from dataclasses import dataclass, field

import numpy as np
import pytest
import scipy.sparse as sp

import cfm

N_ROWS, N_FEATURES, N_FIELDS = 120, 10, 3
EMPTY_ROWS = (5, 77)


@dataclass(frozen=True)
class Case:
    cls: type
    solver: str
    dtype: str
    n_factors: int = 3
    extra: dict = field(default_factory=dict)
    n_classes: int = 2    # classifiers: > 2 trains a multiclass (softmax) model

    @property
    def id(self):
        k = "" if self.n_factors == 3 else f"-k{self.n_factors}"
        c = "" if self.n_classes == 2 else f"-{self.n_classes}classes"
        return f"{self.cls.__name__}-{self.solver}-{self.dtype}{k}{c}"

    @property
    def multiclass(self):
        return self.n_classes > 2

    @property
    def labels(self):
        return ["neg", "pos"] if not self.multiclass else LABELS3

    @property
    def classifier(self):
        return self.cls in (cfm.FMClassifier, cfm.FFMClassifier, cfm.DeepFMClassifier,
                            cfm.FwFMClassifier)

    @property
    def ffm(self):
        return self.cls in (cfm.FFMRegressor, cfm.FFMClassifier)

    @property
    def deepfm(self):
        return self.cls in (cfm.DeepFMRegressor, cfm.DeepFMClassifier)

    @property
    def fwfm(self):
        return self.cls in (cfm.FwFMRegressor, cfm.FwFMClassifier)

    @property
    def fields(self):
        """fit takes fields (one field id per column)."""
        return self.ffm or self.deepfm or self.fwfm

    @property
    def solver_param(self):
        """The parameter that names the solver (DeepFM: its optimizer)."""
        return "optimizer" if self.deepfm else "solver"

    @property
    def sweeps(self):
        """Whole-data solvers (no partial_fit / warm_start; training is
        identical for any n_jobs)."""
        return self.solver in ("als", "mcmc")

    def make(self, **params):
        p = dict(n_factors=self.n_factors, dtype=self.dtype,
                 n_epochs=6 if self.solver == "mcmc" else 3, n_jobs=1, random_state=0)
        p[self.solver_param] = self.solver
        p.update(self.extra)
        p.update(params)
        return self.cls(**p)


PER_SAMPLE = ("sgd", "adagrad", "ftrl")
FM_DTYPES = ("float32", "float64")
FFM_DTYPES = ("float32", "float64", "float16")
CASES = (
    [Case(cls, s, d) for cls in (cfm.FMRegressor, cfm.FMClassifier)
     for s in PER_SAMPLE + ("als", "mcmc") for d in FM_DTYPES]
    # linear models (xLearn's "LR"): n_factors=0
    + [Case(cls, s, "float64", n_factors=0) for cls in (cfm.FMRegressor, cfm.FMClassifier)
       for s in ("adagrad", "ftrl")]
    + [Case(cls, s, d) for cls in (cfm.FFMRegressor, cfm.FFMClassifier)
       for s in PER_SAMPLE for d in FFM_DTYPES]
    # DeepFM: mini-batch optimizers; small MLPs with dropout (batches of 32:
    # several per epoch), and the default MLP once per task
    + [Case(cls, s, d, extra={"hidden_layer_sizes": (7, 5), "dropout": 0.2, "batch_size": 32})
       for cls in (cfm.DeepFMRegressor, cfm.DeepFMClassifier)
       for s in ("adam", "adagrad") for d in FM_DTYPES]
    + [Case(cls, "adam", "float32", n_factors=8)
       for cls in (cfm.DeepFMRegressor, cfm.DeepFMClassifier)]
    # multiclass FMClassifier: a softmax FM (per-sample solvers; a linear one too)
    + [Case(cfm.FMClassifier, s, d, n_classes=3) for s in PER_SAMPLE for d in FM_DTYPES]
    + [Case(cfm.FMClassifier, "adagrad", "float64", n_factors=0, n_classes=3)]
    # multiclass FFMClassifier: a softmax FFM (float32 / float64 tables)
    + [Case(cfm.FFMClassifier, s, d, n_classes=3) for s in PER_SAMPLE for d in FM_DTYPES]
    + [Case(cls, s, d) for cls in (cfm.FwFMRegressor, cfm.FwFMClassifier)
       for s in PER_SAMPLE for d in FM_DTYPES]
)
IDS = [c.id for c in CASES]
PER_SAMPLE_CASES = [c for c in CASES if not c.sweeps]
SWEEP_CASES = [c for c in CASES if c.sweeps]


def _data(seed=0, n_rows=N_ROWS):
    X = sp.random(n_rows, N_FEATURES, density=0.35, random_state=seed, format="csr",
                  dtype=np.float64).tolil()
    for r in EMPTY_ROWS:
        if r < n_rows:
            X[r, :] = 0
    X = X.tocsr()
    X.eliminate_zeros()
    # values exact in float32 and in short decimals: text files hold the same X
    X.data = np.round(X.data * 8 + 1) / 8
    rng = np.random.default_rng(seed)
    y = np.asarray(X @ rng.normal(size=N_FEATURES)).ravel() + 0.1 * rng.normal(size=n_rows)
    return X, y


X, Y_REG = _data()
Y_CLF = np.where(Y_REG > np.median(Y_REG), "pos", "neg")  # string labels
LABELS3 = ["a", "b", "c"]
Y_CLF3 = np.array(LABELS3)[np.searchsorted(np.quantile(Y_REG, [1 / 3, 2 / 3]), Y_REG)]
FIELDS = np.arange(N_FEATURES) % N_FIELDS
X_BIG, _ = _data(seed=3, n_rows=20_000)  # several scoring chunks, so threads are used


def _y(case):
    return (Y_CLF3 if case.multiclass else Y_CLF) if case.classifier else Y_REG


def _fit_kwargs(case):
    return {"fields": FIELDS} if case.fields else {}


def _fit(case, X_=X, **params):
    return case.make(**params).fit(X_, _y(case), **_fit_kwargs(case))


def _scores(m, X_=X):
    """Every public scoring output of a fitted estimator."""
    out = {"predict": m.predict(X_)}
    if hasattr(m, "decision_function"):
        out["decision"] = m.decision_function(X_)
        out["proba"] = m.predict_proba(X_)
    return out


def _decision(m, X_=X):
    return m.decision_function(X_) if hasattr(m, "decision_function") else m.predict(X_)


def _assert_same_model(a, b, X_=X):
    sa, sb = _scores(a, X_), _scores(b, X_)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert np.array_equal(sa[k], sb[k]), k
    assert np.array_equal(a.w0_, b.w0_)
    for name in ("w_", "V_"):
        va, vb = getattr(a, name), getattr(b, name)
        assert va.dtype == vb.dtype and va.shape == vb.shape
        assert np.array_equal(va, vb), name
    assert a.n_features_in_ == b.n_features_in_
    if hasattr(a, "classes_"):
        assert np.array_equal(a.classes_, b.classes_)


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def fitted(request):
    """(case, estimator fitted once per case)."""
    return request.param, _fit(request.param)


# --------------------------------------------------------------- fitted state
def test_fitted_attributes(fitted):
    case, m = fitted
    assert m.n_features_in_ == N_FEATURES
    assert len(m.history_) == m.n_epochs_ >= 1
    if case.multiclass:
        C = case.n_classes
        assert m.w_.shape == (N_FEATURES, C) and m.V_.shape == (
            (N_FEATURES, C, N_FIELDS, case.n_factors) if case.ffm
            else (N_FEATURES, C, case.n_factors))
        assert m.w0_.shape == (C,)
        assert list(m.classes_) == case.labels and set(m.predict(X)) <= set(case.labels)
        p = m.predict_proba(X)
        assert p.shape == (N_ROWS, C) and np.allclose(p.sum(axis=1), 1.0)
        assert m.decision_function(X).shape == (N_ROWS, C)
        assert np.array_equal(m.predict(X), m.classes_[p.argmax(axis=1)])
        return
    assert m.w_.shape == (N_FEATURES,)
    assert m.V_.shape == (N_FEATURES, N_FIELDS, case.n_factors) if case.ffm \
        else m.V_.shape == (N_FEATURES, case.n_factors)
    assert isinstance(m.w0_, float)
    if case.classifier:
        assert list(m.classes_) == ["neg", "pos"]
        assert set(m.predict(X)) <= {"neg", "pos"}
        p = m.predict_proba(X)
        assert p.shape == (N_ROWS, 2) and np.allclose(p.sum(axis=1), 1.0)
        assert np.array_equal(m.predict(X), m.classes_[(m.decision_function(X) > 0).astype(int)])
    for v in _scores(m).values():
        assert v.shape[0] == N_ROWS
        if v.dtype.kind == "f":
            assert np.isfinite(v).all()


def test_empty_rows_score_as_the_bias(fitted):
    case, m = fitted
    d = _decision(m)
    assert np.array_equal(d[EMPTY_ROWS[0]], d[EMPTY_ROWS[1]])
    alone = _decision(m, sp.csr_matrix((3, N_FEATURES)))
    if case.deepfm:
        # the MLP runs through BLAS, whose last bits depend on how many rows
        # are scored together and where (identical for any n_jobs, though)
        np.testing.assert_allclose(alone, d[EMPTY_ROWS[0]], rtol=1e-5, atol=1e-6)
    else:
        assert np.array_equal(alone, np.broadcast_to(d[EMPTY_ROWS[0]], alone.shape))
    # mcmc: the posterior mean of the sampled biases; DeepFM: w0 + the MLP of
    # a zero input (its hidden biases)
    if case.solver != "mcmc" and not case.deepfm:
        assert np.array_equal(d[EMPTY_ROWS[0]], m.w0_)


# ------------------------------------------------------------- round trips
@pytest.mark.parametrize("scoring_only", [False, True])
def test_save_load_round_trip_is_bit_identical(fitted, tmp_path, scoring_only):
    case, m = fitted
    path = tmp_path / "m.cfm"
    m.save(path)
    loaded = cfm.load(path, scoring_only=scoring_only)
    assert type(loaded) is type(m)
    assert loaded.get_params() == m.get_params()
    _assert_same_model(m, loaded)
    # scored through a file too (the batch-scoring path)
    data = tmp_path / ("x.ffm" if case.fields else "x.svm")
    if case.fields:
        cfm.dump_libffm(X, np.zeros(N_ROWS), FIELDS, data)
    else:
        cfm.dump_libsvm(X, np.zeros(N_ROWS), data, zero_based=True)
    loaded.predict_file(data, tmp_path / "p.txt", raw=True, precision=17)
    from_file = np.loadtxt(tmp_path / "p.txt")
    assert np.array_equal(from_file, _decision(m))
    if scoring_only:
        return
    # a loaded model saves to the same bytes, and continues training exactly
    # as the original does
    loaded.save(tmp_path / "again.cfm")
    assert (tmp_path / "again.cfm").read_bytes() == path.read_bytes()
    if not case.sweeps:
        original = copy.deepcopy(m)
        for est in (loaded, original):
            est.partial_fit(X, _y(case), **_fit_kwargs(case))
        _assert_same_model(original, loaded)


def test_pickle_round_trip_is_bit_identical(fitted):
    _, m = fitted
    _assert_same_model(m, pickle.loads(pickle.dumps(m)))


def test_deepcopy_is_bit_identical_and_independent(fitted):
    case, m = fitted
    before = _decision(m).copy()
    c = copy.deepcopy(m)
    _assert_same_model(m, c)
    c.set_params(random_state=1, warm_start=False).fit(X, _y(case), **_fit_kwargs(case))
    assert np.array_equal(_decision(m), before)


# ------------------------------------------------------------------ threads
def test_scoring_does_not_depend_on_n_jobs(fitted):
    _, m = fitted
    m = copy.deepcopy(m)
    ref = _scores(m.set_params(n_jobs=1), X_BIG)
    for n_jobs in (2, 3, -1, None):
        got = _scores(m.set_params(n_jobs=n_jobs), X_BIG)
        for k in ref:
            assert np.array_equal(ref[k], got[k]), (n_jobs, k)


def test_scoring_does_not_depend_on_the_input_format(fitted):
    """CSR float64 / float32 / int64 indices, CSC, dense arrays: the same scores
    (X's values are exact in float32)."""
    _, m = fitted
    ref = _scores(m, X)
    X64i = sp.csr_matrix((X.data, X.indices.astype(np.int64), X.indptr), shape=X.shape)
    for Xv in (X.astype(np.float32), X64i, X.tocsc(), X.toarray(),
               X.toarray().astype(np.float32)):
        got = _scores(m, Xv)
        for k in ref:
            assert np.array_equal(ref[k], got[k]), (type(Xv).__name__, k)


def test_n_jobs_1_training_is_deterministic(fitted):
    case, m = fitted
    _assert_same_model(m, _fit(case))
    assert not np.array_equal(_decision(_fit(case, random_state=1)), _decision(m))


@pytest.mark.parametrize("case", SWEEP_CASES, ids=[c.id for c in SWEEP_CASES])
def test_sweep_solvers_train_identically_for_any_n_jobs(case):
    _assert_same_model(_fit(case), _fit(case, n_jobs=2))


# ------------------------------------------------------ continued training
@pytest.mark.parametrize("case", PER_SAMPLE_CASES, ids=[c.id for c in PER_SAMPLE_CASES])
def test_warm_start_continues_exactly(case):
    full = _fit(case, n_epochs=4)
    part = _fit(case, n_epochs=2)
    part.set_params(warm_start=True).fit(X, _y(case), **_fit_kwargs(case))
    _assert_same_model(full, part)
    assert part.n_epochs_ == 4 and len(part.history_) == 4


@pytest.mark.parametrize("case", PER_SAMPLE_CASES, ids=[c.id for c in PER_SAMPLE_CASES])
def test_partial_fit_is_one_epoch(case):
    m = case.make()
    kw = _fit_kwargs(case)
    if case.classifier:  # first batch of one class: the labels come from classes=
        y = _y(case)
        neg = np.flatnonzero(y == case.labels[0])
        m.partial_fit(X[neg], y[neg], classes=case.labels[::-1], **kw)
        assert list(m.classes_) == case.labels
        m = case.make()
    m.partial_fit(X, _y(case), **kw)
    _assert_same_model(m, _fit(case, n_epochs=1))
    assert m.n_epochs_ == 1
    m.partial_fit(X, _y(case), **kw)
    assert len(m.history_) == 2
    with pytest.raises(ValueError, match="features"):
        m.partial_fit(X[:, :-1], _y(case), **kw)


@pytest.mark.parametrize("case", SWEEP_CASES, ids=[c.id for c in SWEEP_CASES])
def test_sweep_solvers_refuse_warm_start_and_partial_fit(case):
    with pytest.raises(ValueError, match="warm_start"):
        _fit(case, warm_start=True)
    with pytest.raises(ValueError, match="partial_fit"):
        case.make().partial_fit(X, _y(case))


# ---------------------------------------------------------------- bad input
def test_bad_input_gets_the_documented_errors(fitted):
    case, m = fitted
    kw, y = _fit_kwargs(case), _y(case)
    Xnan = X.copy()
    Xnan.data[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        case.make().fit(Xnan, y, **kw)
    with pytest.raises(ValueError, match="NaN"):
        m.predict(Xnan)
    with pytest.raises(ValueError, match="expecting 10 features"):
        m.predict(X[:, :-1])
    with pytest.raises(ValueError, match="0 sample"):
        case.make().fit(X[:0], y[:0], **kw)
    with pytest.raises(ValueError, match="0 sample"):
        m.predict(X[:0])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        case.make().fit(X, y[:-1], **kw)
    with pytest.raises(ValueError, match="requires y"):
        case.make().fit(X, None, **kw)
    with pytest.raises(ValueError, match="sample_weight"):
        case.make().fit(X, y, sample_weight=np.ones(3), **kw)
    if case.classifier:
        with pytest.raises(ValueError, match="only one class"):
            case.make().fit(X, np.full(N_ROWS, "pos"), **kw)
        if case.multiclass:  # a label the model does not know
            with pytest.raises(ValueError, match="label 'd' not in classes_"):
                m.partial_fit(X, np.where(np.arange(N_ROWS) == 4, "d", y), **kw)
        elif case.cls is cfm.FMClassifier and case.sweeps:  # softmax: per-sample solvers
            with pytest.raises(ValueError, match="trains binary models only"):
                case.make().fit(X, np.arange(N_ROWS) % 3, **kw)
        elif case.cls is cfm.FFMClassifier and case.dtype == "float16":
            with pytest.raises(ValueError, match="dtype='float16' is for binary FFMs"):
                case.make().fit(X, np.arange(N_ROWS) % 3, **kw)
        elif case.cls in (cfm.FMClassifier, cfm.FFMClassifier):  # a third class: multiclass
            assert len(case.make().fit(X, np.arange(N_ROWS) % 3, **kw).classes_) == 3
        else:
            with pytest.raises(ValueError, match="binary"):
                case.make().fit(X, np.arange(N_ROWS) % 3, **kw)
    else:
        with pytest.raises(ValueError, match="NaN"):
            case.make().fit(X, np.where(np.arange(N_ROWS) == 7, np.nan, y), **kw)
    with pytest.raises(cfm.NotFittedError):
        case.make().predict(X)
    with pytest.raises(ValueError, match=case.solver_param):
        case.make(**{case.solver_param: "newton"}).fit(X, y, **kw)
    with pytest.raises(ValueError, match="dtype"):
        case.make(dtype="int8").fit(X, y, **kw)
    with pytest.raises(ValueError, match="n_jobs"):
        case.make(n_jobs=0).fit(X, y, **kw)
    if case.fields:
        # no fields: inferred from X (issue 16 item 7), as documented
        np.testing.assert_array_equal(case.make().fit(X, y).fields_, cfm.infer_fields(X))
        with pytest.raises(ValueError, match="fields"):
            case.make().fit(X, y, fields=FIELDS[:-1])


@pytest.mark.parametrize("cls", [cfm.FFMRegressor, cfm.FFMClassifier])
@pytest.mark.parametrize("solver", ["als", "mcmc"])
def test_ffm_refuses_sweep_solvers(cls, solver):
    y = Y_CLF if cls is cfm.FFMClassifier else Y_REG
    with pytest.raises(ValueError, match="does not support solver"):
        cls(3, solver=solver).fit(X, y, fields=FIELDS)


# ------------------------------------------------------------- scikit-learn
def test_sklearn_conventions(fitted):
    sklearn = pytest.importorskip("sklearn")
    from sklearn.base import clone, is_classifier, is_regressor
    from sklearn.utils.validation import check_is_fitted

    case, m = fitted
    params = m.get_params()
    assert params[case.solver_param] == case.solver and params["dtype"] == case.dtype
    c = clone(m)
    assert type(c) is type(m) and c.get_params() == params
    with pytest.raises(cfm.NotFittedError):
        c.predict(X)
    check_is_fitted(m)
    assert is_classifier(m) == case.classifier and is_regressor(m) == (not case.classifier)
    assert c.set_params(n_epochs=2).get_params()["n_epochs"] == 2
    if hasattr(m, "__sklearn_tags__"):
        tags = m.__sklearn_tags__()
        assert tags.estimator_type == ("classifier" if case.classifier else "regressor")
        assert tags.input_tags.sparse
    assert sklearn  # imported
