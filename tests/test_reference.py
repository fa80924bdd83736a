"""The NumPy reference itself: double-sum prediction vs the textbook identity and
analytic gradients vs finite differences (validates tests/reference.py)."""
import numpy as np
import pytest

import reference as ref
from conftest import random_params, random_sparse


def test_double_sum_matches_identity(rng):
    X = random_sparse(20, 10, 5, rng).toarray()
    w0, w, V = random_params(10, 3, rng)
    p = ref.fm_predict(X, w0, w, V)
    s = X @ V
    ident = w0 + X @ w + 0.5 * ((s ** 2).sum(1) - ((X ** 2) @ (V ** 2)).sum(1))
    np.testing.assert_allclose(p, ident, rtol=1e-12, atol=1e-12)


def test_normalize_scales_rows(rng):
    X = random_sparse(5, 8, 3, rng).toarray()
    w0, w, V = random_params(8, 2, rng)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    np.testing.assert_allclose(ref.fm_predict(X, w0, w, V, normalize=True),
                               ref.fm_predict(Xn, w0, w, V), rtol=1e-13)
    z = np.zeros((1, 8))
    assert ref.fm_predict(z, w0, w, V, normalize=True)[0] == w0


@pytest.mark.parametrize("loss", ["squared", "logistic"])
@pytest.mark.parametrize("normalize", [False, True])
def test_gradient_matches_finite_differences(rng, loss, normalize):
    n, k = 7, 3
    x = np.zeros(n)
    x[[0, 2, 3, 6]] = rng.uniform(0.5, 2.0, 4) * np.array([1, -1, 1, -1])
    y = 1.0 if loss == "logistic" else 0.7
    w0, w, V = random_params(n, k, rng)
    _, g0, gw, gV = ref.loss_and_grad(x, y, w0, w, V, loss, normalize)
    eps = 1e-6

    def L(w0_, w_, V_):
        return ref.loss_and_grad(x, y, w0_, w_, V_, loss, normalize)[0]

    fd0 = (L(w0 + eps, w, V) - L(w0 - eps, w, V)) / (2 * eps)
    assert fd0 == pytest.approx(g0, rel=1e-6, abs=1e-9)
    for i in range(n):
        e = np.zeros(n)
        e[i] = eps
        fd = (L(w0, w + e, V) - L(w0, w - e, V)) / (2 * eps)
        assert fd == pytest.approx(gw[i], rel=1e-6, abs=1e-9)
        for f in range(k):
            E = np.zeros((n, k))
            E[i, f] = eps
            fd = (L(w0, w, V + E) - L(w0, w, V - E)) / (2 * eps)
            assert fd == pytest.approx(gV[i, f], rel=1e-6, abs=1e-9)
    # features absent from x get no gradient
    assert np.all(gw[[1, 4, 5]] == 0) and np.all(gV[[1, 4, 5]] == 0)


def test_logistic_loss_values():
    assert ref.loss_value(0.0, 1.0, "logistic") == pytest.approx(np.log(2))
    assert ref.loss_value(3.0, -1.0, "logistic") == pytest.approx(np.log1p(np.exp(3.0)))
    assert ref.loss_value(800.0, 1.0, "logistic") == 0.0
    assert ref.loss_value(2.0, 0.5, "squared") == pytest.approx(1.125)
