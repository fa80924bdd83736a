"""cfm.FMRanker: the BPR / WARP kernel against the NumPy reference
(tests/reference_rank.py), top-k against brute-force scoring, and the
estimator's contract as it applies to a ranker (save / load, pickle,
determinism, n_jobs-invariant scoring, warm start, bad input,
scikit-learn conventions)."""
import copy
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

import cfm
from cfm import _rank
from cfm._state.fm import new_table
from cfm._state.rank import Pairs

import reference_rank as ref

N_USERS, N_ITEMS = 30, 25


def _interactions(seed=0, n_users=N_USERS, n_items=N_ITEMS, density=0.15):
    rng = np.random.default_rng(seed)
    R = (rng.random((n_users, n_items)) < density).astype(float)
    R[np.arange(n_users), rng.integers(0, n_items, n_users)] = 1.0  # every user has one
    return sp.csr_matrix(R)


def _features(n, p, seed, density=0.3):
    rng = np.random.default_rng(seed)
    M = sp.random(n, p, density=density, random_state=seed, format="csr",
                  data_rvs=lambda m: rng.uniform(0.5, 1.5, m))
    M = sp.hstack([M, sp.identity(n)]).tocsr()  # ids too: every row is distinct
    M.sort_indices()
    return M


@pytest.fixture(scope="module")
def data():
    R = _interactions()
    return R, _features(N_USERS, 4, 1), _features(N_ITEMS, 5, 2)


@pytest.fixture(scope="module", params=["float64", "float32"])
def fitted(request, data):
    R, U, I = data
    m = cfm.FMRanker(n_factors=4, n_epochs=3, dtype=request.param, n_jobs=1, random_state=0)
    return m.fit(R, U, I)


def _concat(U, I, users, items):
    """Concatenated rows [U[u] | I[i]] of every (user, item) pair, users major."""
    Ur = U[np.repeat(users, len(items))]
    Ir = I[np.tile(items, len(users))]
    return sp.hstack([Ur, Ir]).tocsr()


# --------------------------------------------------------------- kernel
def _kernel_setup(seed, k=3, warp=False, adagrad=True):
    R = _interactions(seed, 8, 9, 0.25)
    U, I = _features(8, 3, seed + 1), _features(9, 4, seed + 2)
    p = U.shape[1] + I.shape[1]
    rng = np.random.default_rng(seed)
    tab = new_table(p, k, "adagrad" if adagrad else "sgd", np.float64)
    tab[:, 0] = rng.normal(0, 0.1, p)
    tab[:, 1:1 + k] = rng.normal(0, 0.3, (p, k))
    if adagrad:
        tab[:, 1 + k:3 + k] = 1.0
    return R, U, I, tab


def _run_kernel(tab, R, U, I, order, seed, *, k, adagrad, warp, lr=0.1, l2_w=0.01, l2_v=0.02,
                cdf=None, max_sampled=5):
    pairs = Pairs(R)
    cdf = np.zeros(0) if cdf is None else cdf
    out = _rank.bpr_epoch(
        tab, order, pairs.user, pairs.item, pairs.pos_ptr, pairs.pos_item,
        U.indptr.astype(np.int64), U.indices.astype(np.int32), U.data.astype(np.float64),
        I.indptr.astype(np.int64), I.indices.astype(np.int32), I.data.astype(np.float64), cdf,
        n_factors=k, n_user_cols=U.shape[1], adagrad=adagrad, learning_rate=lr, l2_w=l2_w,
        l2_v=l2_v, seed=seed, n_threads=1, warp=warp, max_sampled=max_sampled)
    negs = _rank._negative_draws(order, pairs.user, pairs.item, pairs.pos_ptr, pairs.pos_item,
                                 cdf, R.shape[1], seed, max_sampled if warp else 1)
    return out, negs, pairs


def test_bpr_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    pu, pi, k = 3, 4, 3
    w, V = rng.normal(0, 0.3, pu + pi), rng.normal(0, 0.5, (pu + pi, k))
    u = np.array([1.0, 0.0, 0.7])
    xi, xj = np.array([0.0, 1.2, 0.5, 0.0]), np.array([0.9, 0.0, 0.0, 1.1])
    gw, gV = ref.grad_difference(w, V, u, xi, xj)
    eps = 1e-6
    for a in range(pu + pi):
        e = np.zeros_like(w)
        e[a] = eps
        num = (ref.pair_difference(w + e, V, u, xi, xj)
               - ref.pair_difference(w - e, V, u, xi, xj)) / (2 * eps)
        assert num == pytest.approx(gw[a], abs=1e-7)
        for f in range(k):
            E = np.zeros_like(V)
            E[a, f] = eps
            num = (ref.pair_difference(w, V + E, u, xi, xj)
                   - ref.pair_difference(w, V - E, u, xi, xj)) / (2 * eps)
            assert num == pytest.approx(gV[a, f], abs=1e-7)
    # BPR: d loss / d theta = -sigmoid(-d) * d d / d theta
    d = ref.pair_difference(w, V, u, xi, xj)
    loss = lambda dd: np.logaddexp(0.0, -dd)  # noqa: E731
    assert (loss(d + eps) - loss(d - eps)) / (2 * eps) == pytest.approx(-1 / (1 + np.exp(d)))


@pytest.mark.parametrize("warp", [False, True], ids=["bpr", "warp"])
@pytest.mark.parametrize("adagrad", [True, False], ids=["adagrad", "sgd"])
@pytest.mark.parametrize("n_samples", [1, None], ids=["one-step", "epoch"])
def test_kernel_matches_reference(warp, adagrad, n_samples):
    k = 3
    R, U, I, tab = _kernel_setup(5, k=k, adagrad=adagrad)
    n = R.nnz if n_samples is None else n_samples
    order = np.random.default_rng(1).permutation(R.nnz)[:n].astype(np.int64)
    expect = tab.copy()
    (loss, counted, bad, skipped), negs, pairs = _run_kernel(
        tab, R, U, I, order, 12345, k=k, adagrad=adagrad, warp=warp)
    rloss, rcounted, rskipped = ref.epoch(
        expect, U, I, pairs.user, pairs.item, order, negs, k=k, adagrad=adagrad, lr=0.1,
        l2_w=0.01, l2_v=0.02, warp=warp, n_items=R.shape[1])
    assert bad == 0
    assert (counted, skipped) == (rcounted, rskipped)
    assert loss == pytest.approx(rloss, rel=1e-10)
    width = 3 + k if adagrad else 1 + k
    np.testing.assert_allclose(tab[:, :width], expect[:, :width], rtol=1e-10, atol=1e-12)
    assert not np.array_equal(tab[:, :1 + k], _kernel_setup(5, k=k, adagrad=adagrad)[3][:, :1 + k])


def test_bpr_does_not_train_the_user_linear_weights():
    k = 3
    R, U, I, tab = _kernel_setup(7, k=k)
    before = tab[:U.shape[1], 0].copy()
    _run_kernel(tab, R, U, I, np.arange(R.nnz, dtype=np.int64), 9, k=k, adagrad=True,
                warp=False)
    np.testing.assert_array_equal(tab[:U.shape[1], 0], before)


def test_negatives_skip_positives_and_follow_popularity():
    R = _interactions(4, 20, 12, 0.3)
    pairs = Pairs(R)
    order = np.repeat(np.arange(R.nnz, dtype=np.int64), 400)
    for cdf in (np.zeros(0), pairs.popularity_cdf(0.75)):
        negs = _rank._negative_draws(order, pairs.user, pairs.item, pairs.pos_ptr,
                                     pairs.pos_item, cdf, 12, 77, 1)[:, 0]
        users = pairs.user[order]
        ok = negs >= 0
        assert ok.mean() > 0.99
        assert not R[users[ok], negs[ok]].any()  # never a positive of the user
        # per user, the negatives' frequencies follow the sampling weights
        u = np.bincount(users).argmax()
        sel = ok & (users == u)
        got = np.bincount(negs[sel], minlength=12) / sel.sum()
        p = np.ones(12) if len(cdf) == 0 else np.diff(np.concatenate(([0.0], cdf)))
        p[R[u].indices] = 0
        p /= p.sum()
        assert np.abs(got - p).max() < 0.05


def test_a_user_who_likes_everything_is_skipped():
    R = sp.csr_matrix(np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]))
    m = cfm.FMRanker(n_factors=2, n_epochs=1, n_jobs=1, random_state=0).fit(R)
    assert m.history_[0]["skipped"] == 3


# --------------------------------------------------------------- top-k
def _brute_force(m, U, I, users, items, k, exclude=None):
    scores = m.predict(_concat(U, I, users, items)).reshape(len(users), len(items))
    if exclude is not None:
        E = exclude[users][:, items].toarray() > 0
        scores = np.where(E, -np.inf, scores)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return items[order], np.take_along_axis(scores, order, axis=1)


@pytest.mark.parametrize("subset", [False, True], ids=["all-items", "item-subset"])
@pytest.mark.parametrize("excl", [False, True], ids=["", "exclude"])
def test_recommend_equals_brute_force(fitted, data, subset, excl):
    R, U, I = data
    users = np.array([0, 3, 7, 29, 3])
    items = np.array([2, 5, 6, 9, 11, 12, 20, 24, 0]) if subset else np.arange(N_ITEMS)
    k = 6
    ids, scores = fitted.recommend(users, k, items=items if subset else None,
                                   exclude=R if excl else None)
    eids, escores = _brute_force(fitted, U, I, users, items, k, R if excl else None)
    tol = 1e-12 if fitted.dtype == "float64" else 1e-5
    np.testing.assert_allclose(scores, escores, rtol=tol, atol=tol)
    if fitted.dtype == "float64":
        np.testing.assert_array_equal(ids, eids)
    else:  # float32: the same items up to near-ties
        same = ids == eids
        assert same.mean() > 0.9
        assert np.allclose(scores[~same], escores[~same], atol=1e-5)


def test_recommend_new_users_and_items(fitted, data):
    R, U, I = data
    # new rows of the model's widths: other side features, ids of known users / items
    U2 = sp.hstack([_features(5, 4, 11)[:, :4], sp.eye(5, N_USERS)]).tocsr()
    I2 = sp.hstack([_features(7, 5, 12)[:, :5], sp.eye(7, N_ITEMS, k=3)]).tocsr()
    ids, scores = fitted.recommend(None, 3, user_features=U2, item_features=I2)
    eids, escores = _brute_force(fitted, U2, I2, np.arange(5), np.arange(7), 3)
    np.testing.assert_allclose(scores, escores, rtol=1e-5, atol=1e-5)
    assert ids.shape == (5, 3) and set(ids.ravel()) <= set(range(7))


def test_recommend_pads_when_fewer_candidates_than_k(fitted, data):
    R = data[0]
    ids, scores = fitted.recommend([0, 1], 30, exclude=R)
    for r, u in enumerate([0, 1]):
        n_left = N_ITEMS - R[u].nnz
        assert (ids[r, :n_left] >= 0).all() and (ids[r, n_left:] == -1).all()
        assert np.isneginf(scores[r, n_left:]).all() and np.isfinite(scores[r, :n_left]).all()
        assert not set(ids[r, :n_left]) & set(R[u].indices)
        assert np.all(np.diff(scores[r, :n_left]) <= 0)


def test_recommend_caps_k_and_takes_empty_candidate_lists(fitted):
    ids, scores = fitted.recommend([0, 1], 10**9)
    assert ids.shape == (2, N_ITEMS) and (ids >= 0).all()
    ids, scores = fitted.recommend([0, 1], 3, items=np.array([], dtype=np.int64))
    assert ids.shape == (2, 1) and (ids == -1).all() and np.isneginf(scores).all()
    ids, scores = fitted.recommend(np.array([], dtype=np.int64), 3)
    assert ids.shape == (0, 3)


def test_recommend_does_not_depend_on_n_jobs(fitted):
    a = fitted.recommend(None, 7, n_jobs=1)
    b = fitted.recommend(None, 7, n_jobs=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_ranking_metrics_hand_example():
    top = np.array([[3, 1, 7], [5, 6, -1], [0, 0, 0]])
    ptr = np.array([0, 2, 3, 3])
    rel = np.array([1, 9, 6])
    m = cfm.ranking_metrics(top, ptr, rel, 3)
    assert m["users"] == 2  # the third has no relevant item
    assert m["precision"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert m["recall"] == pytest.approx((1 / 2 + 1) / 2)
    d = 1 / np.log2([2, 3, 4])
    assert m["ndcg"] == pytest.approx((d[1] / (d[0] + d[1]) + d[1] / d[0]) / 2)
    assert m["map"] == pytest.approx(((1 / 2) / 2 + (1 / 2) / 1) / 2)


@pytest.mark.parametrize("loss", ["bpr", "warp"])
@pytest.mark.parametrize("sampling", ["uniform", "popularity"])
def test_learns_planted_preferences(loss, sampling):
    # two user groups, each liking one half of the items
    rng = np.random.default_rng(0)
    n_u, n_i = 80, 40
    group = np.arange(n_u) % 2
    like = (np.arange(n_i)[None, :] % 2) == group[:, None]
    R = sp.csr_matrix((like & (rng.random((n_u, n_i)) < 0.5)).astype(float))
    test = sp.csr_matrix((like & (R.toarray() == 0)).astype(float))
    m = cfm.FMRanker(n_factors=4, n_epochs=15, loss=loss, negative_sampling=sampling,
                     random_state=0).fit(R)
    assert m.evaluate(test, 5, exclude=R)["precision@5"] > 0.9


# --------------------------------------------------------------- the contract
def test_fitted_attributes(fitted, data):
    R, U, I = data
    assert (fitted.n_users_, fitted.n_items_) == R.shape
    assert fitted.n_features_in_ == U.shape[1] + I.shape[1]
    assert len(fitted.history_) == fitted.n_epochs_ == 3


def test_n_jobs_1_training_is_deterministic(data):
    R, U, I = data
    fit = lambda seed: cfm.FMRanker(n_factors=4, n_epochs=2, n_jobs=1,  # noqa: E731
                                    random_state=seed).fit(R, U, I)
    a, b, c = fit(0), fit(0), fit(1)
    np.testing.assert_array_equal(a.recommend()[1], b.recommend()[1])
    assert not np.array_equal(a.recommend()[1], c.recommend()[1])


def test_hogwild_threads_train_a_model(data):
    R, U, I = data
    m = cfm.FMRanker(n_factors=4, n_epochs=2, n_jobs=2, random_state=0).fit(R, U, I)
    assert np.isfinite(m.recommend()[1]).all()


def test_warm_start_continues_exactly(data):
    R, U, I = data
    full = cfm.FMRanker(n_factors=4, n_epochs=5, n_jobs=1, random_state=0).fit(R, U, I)
    part = cfm.FMRanker(n_factors=4, n_epochs=3, n_jobs=1, random_state=0,
                        warm_start=True).fit(R, U, I)
    part.set_params(n_epochs=2).fit(R, U, I)
    assert part.n_epochs_ == 5
    np.testing.assert_array_equal(full.recommend()[1], part.recommend()[1])


@pytest.mark.parametrize("scoring_only", [False, True])
def test_save_load_round_trip_is_bit_identical(fitted, tmp_path, scoring_only):
    path = tmp_path / "r.cfm"
    fitted.save(path)
    back = cfm.load(path, scoring_only=scoring_only)
    assert type(back) is cfm.FMRanker and back.get_params() == fitted.get_params()
    for a, b in zip(fitted.recommend(None, 5), back.recommend(None, 5)):
        np.testing.assert_array_equal(a, b)
    assert back.history_ == fitted.history_
    if scoring_only:
        with pytest.raises(ValueError, match="scoring_only"):
            back.save(tmp_path / "again.cfm")
    else:
        back.save(tmp_path / "again.cfm")


def test_pickle_and_deepcopy_are_bit_identical(fitted):
    for back in (pickle.loads(pickle.dumps(fitted)), copy.deepcopy(fitted)):
        for a, b in zip(fitted.recommend(None, 5), back.recommend(None, 5)):
            np.testing.assert_array_equal(a, b)


def test_tampered_model_file_is_refused(fitted, tmp_path):
    from cfm._model_file import read_model_file, write_model_file

    path = tmp_path / "r.cfm"
    fitted.save(path)
    header, arrays = read_model_file(path)
    bad = dict(arrays)
    bad["item_ind"] = arrays["item_ind"].copy()
    bad["item_ind"][0] = 10**6
    write_model_file(tmp_path / "bad.cfm", header, bad)
    with pytest.raises(cfm.ModelFileError, match="item feature rows"):
        cfm.load(tmp_path / "bad.cfm")
    h2 = dict(header, n_user_features=10**9)
    write_model_file(tmp_path / "bad2.cfm", h2, arrays)
    with pytest.raises(cfm.ModelFileError, match="n_user_features"):
        cfm.load(tmp_path / "bad2.cfm")


def test_bad_input_gets_clear_errors(fitted, data):
    R, U, I = data
    m = cfm.FMRanker(n_factors=2, n_epochs=1)
    with pytest.raises(cfm.NotFittedError):
        m.recommend([0])
    Rn = R.copy().astype(float)
    Rn.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        m.fit(Rn)
    with pytest.raises(ValueError, match="no positive"):
        m.fit(sp.csr_matrix((3, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        m.fit(np.ones((3, 1)))
    with pytest.raises(ValueError, match="rows"):
        m.fit(R, U[:5])
    with pytest.raises(ValueError, match="n_factors"):
        cfm.FMRanker(n_factors=0).fit(R)
    with pytest.raises(ValueError, match="loss"):
        cfm.FMRanker(loss="hinge").fit(R)
    with pytest.raises(ValueError, match="users holds id"):
        fitted.recommend([N_USERS])
    with pytest.raises(ValueError, match="items holds id"):
        fitted.recommend([0], items=[-1])
    with pytest.raises(ValueError, match="k must be"):
        fitted.recommend([0], 0)
    with pytest.raises(ValueError, match="exclude has shape"):
        fitted.recommend([0], exclude=R[:, :3])
    with pytest.raises(ValueError, match="features"):
        fitted.recommend([0], user_features=np.ones((2, 3)))
    with pytest.raises(ValueError, match="features"):
        fitted.predict(np.ones((2, 3)))
    # one-hot model: features cannot be swapped for other widths
    onehot = cfm.FMRanker(n_factors=2, n_epochs=1).fit(R)
    with pytest.raises(ValueError, match="features"):
        onehot.recommend([0], item_features=np.ones((2, 3)))


def test_empty_feature_rows_and_users_without_positives(data):
    R, U, I = data
    R = R.tolil()
    R[4, :] = 0
    U = U.tolil()
    U[2, :] = 0
    m = cfm.FMRanker(n_factors=3, n_epochs=2, random_state=0).fit(R.tocsr(), U.tocsr(), I)
    ids, scores = m.recommend([2, 4], 3)
    assert np.isfinite(scores).all()


def test_sklearn_conventions():
    sklearn = pytest.importorskip("sklearn")
    m = cfm.FMRanker(n_factors=5, loss="warp")
    c = sklearn.base.clone(m)
    assert c.get_params() == m.get_params()
    assert "n_factors=5" in repr(m)


@pytest.mark.parametrize("path", ["avx2", "portable"])
def test_both_product_paths_equal_brute_force(fitted, data, path):
    R, U, I = data
    got = _rank._set_block_path(path)
    try:
        if path == "avx2" and got != "avx2":
            pytest.skip("no AVX2 + FMA on this CPU")
        users, items = np.arange(N_USERS), np.arange(N_ITEMS)
        ids, scores = fitted.recommend(None, 9, exclude=R)
        eids, escores = _brute_force(fitted, U, I, users, items, 9, R)
        tol = 1e-12 if fitted.dtype == "float64" else 1e-5
        np.testing.assert_allclose(scores, escores, rtol=tol, atol=tol)
    finally:
        _rank._set_block_path("avx2")


def test_early_stopping_keeps_the_best_epoch():
    rng = np.random.default_rng(0)
    R = sp.csr_matrix((rng.random((60, 40)) < 0.2).astype(float))
    held = sp.csr_matrix((rng.random((60, 40)) < 0.05).astype(float) * (R.toarray() == 0))
    m = cfm.FMRanker(n_factors=4, n_epochs=40, learning_rate=0.3, n_iter_no_change=2,
                     n_jobs=1, random_state=0).fit(R, eval_set=held)
    scores = [h["ndcg@10"] for h in m.history_]
    assert m.n_epochs_ == len(scores) < 40  # noise: stops early
    assert scores[m.best_epoch_ - 1] == max(scores)
    assert m.evaluate(held, exclude=R)["ndcg@10"] == pytest.approx(max(scores))
    with pytest.raises(ValueError, match="eval_set has shape"):
        m.fit(R, eval_set=held[:, :5])
