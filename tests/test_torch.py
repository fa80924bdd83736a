"""cfm.torch: converted models score as cfm does, layers, ONNX, datasets.

Parity: every model kind (LR, FM, FFM float32/float16/float64, MCMC, DeepFM
state, xLearn FM imports, model-file fixtures), both tasks, normalize on and
off, against ``decision_function`` within 1e-5 (measured: ~1e-6 float32,
~1e-15 float64).  Skipped as a whole without torch; the ONNX tests also need
onnx, onnxscript and onnxruntime; the real-data tests need /work/shared/data.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

torch = pytest.importorskip("torch")

import cfm  # noqa: E402
import cfm.torch as ct  # noqa: E402
from cfm._state.deepfm import DeepFMHyper, DeepFMState  # noqa: E402
from cfm._validation import check_X  # noqa: E402
from conftest import random_sparse  # noqa: E402
import reference_ffm  # noqa: E402

TOL = 1e-5
HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")


def _data_dir():
    """``$CFM_DATA_DIR``, else the first ``shared/data`` above the checkout
    (as benchmarks/real_data.py finds it; CI has shared/ beside its clone)."""
    if os.environ.get("CFM_DATA_DIR"):
        return os.environ["CFM_DATA_DIR"]
    parent = os.path.dirname(HERE)
    while True:
        cand = os.path.join(parent, "shared", "data")
        if os.path.isdir(cand) or os.path.dirname(parent) == parent:
            return cand
        parent = os.path.dirname(parent)


DATA = _data_dir()


# ------------------------------------------------------------------ helpers
def _data(n=120, n_features=30, nnz=6, seed=0):
    """Real-valued rows (values +-[0.5, 2]) with two empty rows, fields, and
    a target an FM can learn."""
    rng = np.random.default_rng(seed)
    X = random_sparse(n, n_features, nnz, rng, empty_rows=(5, 77))
    fields = rng.integers(0, 5, n_features)
    score = X @ rng.normal(0, 1, n_features)
    return X, (score > np.median(score)).astype(int), score, fields


def _scores(module, X):
    with torch.no_grad():
        return module(*ct.as_batch(X, dtype=module.w.dtype)).double().numpy()


def _reference(model, X):
    return model.decision_function(X) if hasattr(model, "decision_function") \
        else model.predict(X)


def _max_err(model, X):
    module = model.to_torch()
    return float(np.abs(_scores(module, X) - _reference(model, X)).max()), module


# ------------------------------------------------------------------ import
def test_cfm_works_without_torch_and_to_torch_says_what_to_install():
    """``import cfm``, fit and predict never import torch; without torch,
    ``to_torch()`` raises ImportError naming the install (one subprocess)."""
    code = ("import sys\nimport cfm\n"
            "m = cfm.FMRegressor(n_epochs=1).fit([[1., 0.], [0., 1.]], [0., 1.])\n"
            "m.predict([[1., 1.]])\nassert 'torch' not in sys.modules, 'torch imported'\n"
            "class NoTorch:\n    def find_spec(self, name, *args):\n"
            "        if name.split('.')[0] == 'torch':\n            raise ImportError(name)\n"
            "sys.meta_path.insert(0, NoTorch())\n"
            "try:\n    m.to_torch()\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, cwd=os.path.dirname(HERE),
                         env={**os.environ, "PYTHONPATH": os.path.dirname(HERE)}).stdout
    assert "pip install" in out and "torch" in out


# ------------------------------------------------------------------ parity
@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("kind,dtype", [("lr", "float32"), ("fm", "float32"), ("fm", "float64"),
                                        ("ffm", "float32"), ("ffm", "float16"),
                                        ("ffm", "float64")])
def test_to_torch_parity(kind, dtype, normalize, task):
    X, yc, yr, fields = _data()
    est = {("fm", "classification"): cfm.FMClassifier, ("fm", "regression"): cfm.FMRegressor,
           ("ffm", "classification"): cfm.FFMClassifier,
           ("ffm", "regression"): cfm.FFMRegressor}[("ffm" if kind == "ffm" else "fm", task)]
    params = dict(n_factors=0 if kind == "lr" else 4, n_epochs=3, dtype=dtype,
                  normalize=normalize, random_state=0, n_jobs=1)
    fit = {"fields": fields} if kind == "ffm" else {}
    model = est(**params).fit(X, yc if task == "classification" else yr, **fit)
    err, module = _max_err(model, X)
    assert err <= TOL, err
    assert module.task == task and module.normalize == normalize
    assert type(module) is (ct.FieldAwareFactorizationMachine if kind == "ffm"
                            else ct.FactorizationMachine)
    expect = torch.float64 if dtype == "float64" else torch.float32  # float16 -> float32
    assert all(p.dtype == expect for p in module.parameters())


def test_large_scores_keep_parity():
    """cfm's FM kernels sum in float64: so do converted modules (sum_dtype),
    so a float32 model with scores near 100 and 40 non-zeros a row stays
    within 1e-5 (float32 sums: ~1e-4); module.double() removes the float32
    rounding of the scores (what remains: cfm's w0 is float64, the module's
    a float32 parameter)."""
    X, _, score, _ = _data(n=200, n_features=300, nnz=40)
    model = cfm.FMRegressor(n_factors=8, n_epochs=5, normalize=False, random_state=0,
                            init_std=0.3).fit(X, 10 * score + 60)
    ref = model.decision_function(X) if hasattr(model, "decision_function") else model.predict(X)
    assert np.abs(ref).max() > 60
    err, module = _max_err(model, X)
    assert err <= TOL, err
    assert module.sum_dtype == torch.float64 and module.w.dtype == torch.float32
    assert np.abs(_scores(module.double(), X) - ref).max() < 2.5e-7


@pytest.mark.parametrize("est", [cfm.FMClassifier, cfm.FMRegressor])
def test_mcmc_exports_its_posterior_mean(est):
    """An MCMC fit predicts the mean over its kept samples, which no single
    FM does: the module keeps the samples (FMPosterior)."""
    X, yc, yr, _ = _data()
    model = est(solver="mcmc", n_epochs=30, n_factors=3, random_state=0,
                n_kept_samples=12).fit(X, yc if est is cfm.FMClassifier else yr)
    err, module = _max_err(model, X)
    assert isinstance(module, ct.FMPosterior) and module.n_samples == 12
    assert err <= TOL, err


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("normalize", [False, True])
def test_deepfm_state_parity(dtype, normalize):
    X, yc, _, fields = _data()
    state = DeepFMState(X.shape[1], fields, k=4, hidden=(16, 8), dtype=dtype,
                        normalize=normalize, seed=1)
    Xc = check_X(X)
    y = np.where(yc > 0, 1.0, -1.0)
    state.init_intercept(y)
    for epoch in range(2):
        state.train_epoch(Xc, y, None, np.arange(X.shape[0]),
                          DeepFMHyper(learning_rate=1e-2, batch_size=16), 1,
                          np.random.default_rng(epoch))
    module = ct.from_state(state, task="classification", dropout=0.25)
    assert isinstance(module, ct.DeepFM) and not module.training
    err = np.abs(_scores(module, X) - state.decision(Xc, 1)).max()
    assert err <= TOL, err


def _fixture_data(model, name):
    path = os.path.join(FIXTURES, name)
    if name.endswith(".ffm"):
        return cfm.load_libffm(path, n_features=model.n_features_in_)[0]
    zb = getattr(model, "_input_zero_based", None)
    return cfm.load_libsvm(path, n_features=model.n_features_in_,
                           zero_based="auto" if zb is None else zb)[0]


@pytest.mark.parametrize("name", sorted(json.load(open(os.path.join(
    FIXTURES, "MANIFEST.json")))["models"]))
def test_fixture_models_parity(name):
    """Model files of every kind written by an older cfm (incl. default
    float16 FFM, MCMC, ALS, xLearn FM), loaded fully and scoring-only."""
    info = json.load(open(os.path.join(FIXTURES, "MANIFEST.json")))["models"][name]
    for scoring_only in (False, True):
        model = cfm.load(os.path.join(FIXTURES, name + ".cfm"), scoring_only=scoring_only)
        X = _fixture_data(model, info["data"])
        err, _ = _max_err(model, X)
        assert err <= TOL, (scoring_only, err)


def test_input_forms_agree():
    """The triple, a torch sparse CSR tensor, a dense tensor and one-hot rows
    without values score alike; duplicate entries are summed by as_batch as
    the estimators sum them."""
    X, yc, _, _ = _data()
    model = cfm.FMClassifier(n_epochs=2, random_state=0).fit(X, yc)
    module = model.to_torch()
    ref = model.decision_function(X)
    i, o, v = ct.as_batch(X)
    csr = torch.sparse_csr_tensor(o, i, v, size=X.shape)
    with torch.no_grad():
        assert np.abs(module(csr).numpy() - ref).max() <= TOL
        assert np.abs(module(csr.to_dense()).numpy() - ref).max() <= TOL
        onehot = sp.csr_matrix((np.ones(X.nnz), X.indices, X.indptr), shape=X.shape)
        got = module(*ct.as_batch(onehot)[:2]).numpy()
    assert np.abs(got - model.decision_function(onehot)).max() <= TOL
    dup = sp.csr_matrix((np.r_[X.data[0], X.data], np.r_[X.indices[0], X.indices],
                         np.r_[0, X.indptr[1:] + 1]), shape=X.shape)  # row 0: a column twice
    assert np.abs(_scores(module, dup) - model.decision_function(dup)).max() <= TOL


def test_bad_batches_raise_clear_errors():
    module = ct.FactorizationMachine(10, 3)
    i = torch.tensor([0, 3, 9])
    with pytest.raises(ValueError, match="outside"):
        module(torch.tensor([0, 10]), torch.tensor([0, 2]), torch.ones(2))
    with pytest.raises(ValueError, match="end at len"):
        module(i, torch.tensor([0, 2]), torch.ones(3))
    with pytest.raises(ValueError, match="non-decreasing"):
        module(i, torch.tensor([0, 2, 1, 3]), torch.ones(3))
    with pytest.raises(ValueError, match="values has"):
        module(i, torch.tensor([0, 3]), torch.ones(2))
    with pytest.raises(TypeError, match="cannot convert"):
        ct.from_state(object())
    with pytest.raises(ValueError, match="X has 3 features"):
        ct.as_batch(np.ones((2, 3)), n_features=10)


def test_unknown_decision_is_refused():
    """A state subclass that scores differently is not silently converted."""
    from cfm._state import FMTable

    class Odd(FMTable):
        def decision(self, Xc, n_threads, shared=False):
            return super().decision(Xc, n_threads) * 2

    X, yc, _, _ = _data()
    s = cfm.FMClassifier(n_epochs=1).fit(X, yc)._state
    with pytest.raises(TypeError, match="decision"):
        ct.from_state(Odd(s.table, s.w0_state, s.k, s.solver, s.normalize))


# ------------------------------------------------------------------ layers
def test_ffm_layer_matches_pairwise_reference():
    """The O(k (nnz F + F^2)) FFM against the O(nnz^2) pair loop, with a field
    repeated within rows, and per-non-zero fields overriding the columns'."""
    rng = np.random.default_rng(3)
    X, _, _, fields = _data(n=25, n_features=12, nnz=5, seed=3)
    layer = ct.FieldAwareFactorizationMachine(12, fields, 3, dtype=torch.float64,
                                              init_std=0.5, normalize=True)
    with torch.no_grad():
        layer.w0.fill_(0.3)
        layer.w.copy_(torch.from_numpy(rng.normal(size=12)))
    ref = reference_ffm.ffm_predict(X, fields, 0.3, layer.w.detach().numpy(),
                                    layer.V.detach().numpy(), normalize=True)
    assert np.abs(_scores(layer, X) - ref).max() < 1e-12
    i, o, v = ct.as_batch(X, dtype=torch.float64)
    other = torch.from_numpy((fields[i.numpy()] + 1) % 5)
    relabeled = np.array(fields)
    with torch.no_grad():
        got = layer(i, o, v, fields=other).numpy()
    # the same rows with each column moved to the overriding field
    V2 = layer.V.detach().numpy()
    for col in range(12):
        relabeled[col] = (fields[col] + 1) % 5
    assert np.abs(got - reference_ffm.ffm_predict(X, relabeled, 0.3, layer.w.detach().numpy(),
                                                  V2, normalize=True)).max() < 1e-12


def test_layers_in_a_network_train_and_have_gradients():
    """FM and FFM layers inside a user's module: gradients reach their
    parameters and double-precision gradients pass gradcheck."""
    X, yc, _, fields = _data(n=20, n_features=10, nnz=4)
    i, o, v = ct.as_batch(X, dtype=torch.float64)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fm = ct.FactorizationMachine(10, 3, dtype=torch.float64)
            self.ffm = ct.FieldAwareFactorizationMachine(10, fields, 2, dtype=torch.float64)
            self.mix = torch.nn.Linear(2, 1, dtype=torch.float64)

        def forward(self, i, o, v):
            return self.mix(torch.stack([self.fm(i, o, v), self.ffm(i, o, v)], 1)).squeeze(1)

    net = Net()
    net(i, o, v).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    fm = ct.FactorizationMachine(10, 3, dtype=torch.float64, normalize=True)
    assert torch.autograd.gradcheck(lambda V: torch.func.functional_call(
        fm, {"V": V}, (i, o, v)), (fm.V.detach().clone().requires_grad_(),))
    assert torch.autograd.gradcheck(lambda V: torch.func.functional_call(
        net.ffm, {"V": V}, (i, o, v)), (net.ffm.V.detach().clone().requires_grad_(),))


def test_module_holds_copies_and_fine_tuning_lowers_the_loss(tmp_path):
    """One epoch of Adam on a converted FM, streamed from a .cfmdata cache by
    BlockDataset (the out-of-core path), lowers its training loss and leaves
    the cfm model untouched."""
    X, y = cfm.make_fm_classification(n_samples=2000, n_features=200, random_state=0)
    model = cfm.FMClassifier(n_epochs=1, random_state=0, n_jobs=1).fit(X, y)
    before_cfm = model.decision_function(X)
    module = model.to_torch().train()
    i, o, v = ct.as_batch(X)
    target = torch.from_numpy(y.astype(np.float32))
    lossf = torch.nn.BCEWithLogitsLoss()

    def full_loss():
        with torch.no_grad():
            return float(lossf(module(i, o, v), target))

    loss0 = full_loss()
    logloss = np.mean(np.logaddexp(0, -np.where(y > 0, 1, -1) * before_cfm))
    assert abs(loss0 - logloss) < 1e-5
    cfm.dump_libsvm(X, y, tmp_path / "train.svm")
    cache = cfm.convert_to_cache(tmp_path / "train.svm", tmp_path / "train.cfmdata",
                                 zero_based=True, n_features=X.shape[1])
    ds = ct.BlockDataset(cache, batch_size=64, block_rows=500, shuffle=True,
                         binary_labels=True)
    opt = torch.optim.Adam(module.parameters(), lr=0.01)
    n = 0
    for bi, bo, bv, by in torch.utils.data.DataLoader(ds, batch_size=None):
        opt.zero_grad()
        lossf(module(bi, bo, bv), by).backward()
        opt.step()
        n += len(by)
    assert n == X.shape[0]
    assert full_loss() < loss0 - 0.01, (loss0, full_loss())
    assert np.array_equal(model.decision_function(X), before_cfm)


# ------------------------------------------------------------------ datasets
def _concat(batches):
    ind, off, val, ys = [], [0], [], []
    for i, o, v, y in batches:
        ind.append(i.numpy())
        off += list(o.numpy()[1:] + off[-1])
        val.append(v.numpy())
        ys.append(y.numpy())
    return np.concatenate(ind), np.array(off), np.concatenate(val), np.concatenate(ys)


@pytest.mark.parametrize("name", ["train.svm", "train_ffm.cfmdata", "train.ffm"])
def test_block_dataset_streams_the_file(name):
    path = os.path.join(FIXTURES, name)
    ds = ct.BlockDataset(path, batch_size=7, block_rows=16, binary_labels=True)
    info = ds.scan()
    loader = torch.utils.data.DataLoader(ds, batch_size=None)
    ind, off, val, y = _concat(loader)
    X, y_ref = cfm.load_cache(path)[:2] if name.endswith("cfmdata") else (
        cfm.load_libffm(path)[:2] if name.endswith("ffm") else cfm.load_libsvm(path))
    Xc = check_X(X)
    assert len(off) - 1 == info["n_rows"] == X.shape[0]
    assert np.array_equal(off, Xc.indptr) and np.array_equal(ind, Xc.indices)
    assert np.allclose(val, Xc.data) and np.array_equal(y, (y_ref > 0).astype(np.float32))
    if name != "train.svm":
        assert np.array_equal(ds.fields(), cfm.load_libffm(os.path.join(FIXTURES, "train.ffm"))[2])
    else:
        assert ds.fields() is None


def test_block_dataset_shuffles_reproducibly_and_splits_between_workers():
    path = os.path.join(FIXTURES, "train_svm.cfmdata")
    ds = ct.BlockDataset(path, batch_size=5, block_rows=8, shuffle=True, seed=1)
    first = [b[3].numpy() for b in ds]
    assert all(np.array_equal(a, b) for a, b in zip(first, [b[3].numpy() for b in ds]))
    ds.set_epoch(1)
    second = np.concatenate([b[3].numpy() for b in ds])
    assert not np.array_equal(np.concatenate(first), second)
    assert np.array_equal(np.sort(np.concatenate(first)), np.sort(second))
    plain = ct.BlockDataset(path, batch_size=5, block_rows=8)
    loader = torch.utils.data.DataLoader(plain, batch_size=None, num_workers=2)
    n = sum(len(b[1]) - 1 for b in loader)
    assert n == cfm.scan_file(path)["n_rows"]


# ------------------------------------------------------------------ ONNX
def _onnx_scores(path, X, dtype):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(path)
    i, o, v = ct.as_batch(X, dtype=dtype)
    return sess.run(None, {"indices": i.numpy(), "offsets": o.numpy(), "values": v.numpy()})[0]


@pytest.fixture(scope="module")
def onnx_ready():
    for mod in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(mod)


def test_onnx_parity_synthetic(tmp_path, onnx_ready):
    """FM (normalised, classifier) and a float64 DeepFM state exported, scored
    by onnxruntime: decision_function within 1e-5, for any batch size
    (dynamic axes: all rows, one row, no row).

    Row sums in the graph are ScatterElements, never ScatterND: onnxruntime's
    ScatterND "add" runs its updates in parallel without atomics and lost
    updates to shared rows (a flaky parity failure here before), so rows of
    thousands of non-zeros are scored repeatedly too."""
    import onnx

    rng = np.random.default_rng(5)
    X = sp.vstack([random_sparse(60, 20_000, 6, rng, empty_rows=(5,)),
                   sp.random(4, 20_000, density=0.5, format="csr", random_state=rng)]).tocsr()
    model = cfm.FMClassifier(n_epochs=2, random_state=0).fit(X, np.arange(64) % 2)
    path = ct.export_onnx(model, tmp_path / "fm.onnx")
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert "ScatterElements" in ops and "ScatterND" not in ops
    ref = model.decision_function(X)
    for _ in range(4):
        assert np.abs(_onnx_scores(path, X, torch.float32) - ref).max() <= TOL
    assert np.abs(_onnx_scores(path, X[7:8], torch.float32) - ref[7:8]).max() <= TOL
    assert _onnx_scores(path, X[:0], torch.float32).shape == (0,)

    X, _, _, fields = _data()
    state = DeepFMState(X.shape[1], fields, k=4, hidden=(8,), dtype=np.float64, seed=2,
                        normalize=True)
    module = ct.from_state(state).train()
    path = ct.export_onnx(module, tmp_path / "deepfm.onnx")
    assert module.training  # its mode is restored
    ref = state.decision(check_X(X), 1)
    assert np.abs(_onnx_scores(path, X, torch.float64) - ref).max() <= TOL


def test_onnx_mcmc_classifier(tmp_path, onnx_ready):
    """The exported graph's normal CDF (no float64 Erf in onnxruntime)."""
    from cfm.torch.layers import _ndtr, _ndtr_graph

    x = torch.linspace(-35, 12, 20001, dtype=torch.float64)
    assert float(((_ndtr_graph(x) - _ndtr(x)).abs() / _ndtr(x)).max()) < 2e-7
    X, yc, _, _ = _data()
    model = cfm.FMClassifier(solver="mcmc", n_epochs=20, n_factors=3, random_state=0,
                             n_kept_samples=5).fit(X, yc)
    path = ct.export_onnx(model, tmp_path / "mcmc.onnx")
    err = np.abs(_onnx_scores(path, X, torch.float32) - model.decision_function(X)).max()
    assert err <= TOL, err


def _real(*parts):
    path = os.path.join(DATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"real data not available ({path})")
    return path


def test_onnx_parity_real_ctr_rows(tmp_path, onnx_ready):
    """An FFM (default float16 tables) fitted on the Criteo sample of
    xLearn's demo, exported to ONNX, scores the held-out rows as cfm does."""
    tr, te = _real("xlearn", "criteo_ctr", "small_train.txt"), \
        _real("xlearn", "criteo_ctr", "small_test.txt")
    model = cfm.FFMClassifier(n_epochs=3, random_state=0).fit(tr)
    X = cfm.load_libffm(te, n_features=model.n_features_in_)[0]
    err_torch, _ = _max_err(model, X)
    path = ct.export_onnx(model, tmp_path / "ffm.onnx")
    err = np.abs(_onnx_scores(path, X, torch.float32) - model.decision_function(X)).max()
    assert err_torch <= TOL and err <= TOL, (err_torch, err)


def test_onnx_parity_real_libsvm_rows(tmp_path, onnx_ready):
    """FM on the mushroom (agaricus) data, scored by onnxruntime."""
    tr, te = _real("xlearn", "mushroom", "agaricus_train.txt"), \
        _real("xlearn", "mushroom", "agaricus_test.txt")
    model = cfm.FMClassifier(n_epochs=2, random_state=0).fit(tr)
    X = cfm.load_libsvm(te, n_features=model.n_features_in_, zero_based=model._input_zero_based)[0]
    path = ct.export_onnx(model, tmp_path / "fm.onnx")
    err = np.abs(_onnx_scores(path, X, torch.float32) - model.decision_function(X)).max()
    assert err <= TOL, err


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("cls", [cfm.FwFMClassifier, cfm.FwFMRegressor])
def test_fwfm_to_torch_parity(cls, normalize, dtype):
    X, yc, yr, fields = _data()
    model = cls(4, n_epochs=3, dtype=dtype, normalize=normalize, random_state=0,
                n_jobs=1).fit(X, yc if cls is cfm.FwFMClassifier else yr, fields=fields)
    err, module = _max_err(model, X)
    assert err <= TOL, err
    assert type(module) is ct.FieldWeightedFactorizationMachine
    np.testing.assert_allclose(module.R.detach().double().numpy(), model.R_, rtol=1e-6)


def test_fwfm_onnx_parity(tmp_path, onnx_ready):
    X, yc, _, fields = _data()
    model = cfm.FwFMClassifier(4, n_epochs=2, random_state=0, n_jobs=1).fit(X, yc,
                                                                           fields=fields)
    path = ct.export_onnx(model, tmp_path / "fwfm.onnx")
    ref = model.decision_function(X)
    assert np.abs(_onnx_scores(path, X, torch.float32) - ref).max() <= TOL
    assert _onnx_scores(path, X[:0], torch.float32).shape == (0,)
