"""Synthetic data with a planted factorization machine.

Rows look like one-hot encoded categorical data (CTR logs, user/item
ratings): ``n_fields`` fields, one active feature per field, ids within a
field drawn from a Zipf-like distribution.  Targets come from a random FM, so
that an FM can learn them and a linear model cannot fully.

Three "data" names, three jobs: this module *makes synthetic data* in memory
(``cfm.make_fm_classification``, ``cfm.make_fm_regression``);
:mod:`cfm.data` *reads and writes data files* (libsvm / libFM / libffm text,
``.cfmdata`` caches, blocks of rows); ``benchmarks/datasets.py`` *fetches the
real benchmark data sets* (not part of the package).
"""
import numpy as np

from ._lazy import sparse as sp
from ._validation import check_random_state


def _planted(n_samples, n_features, n_fields, n_factors, zipf_a, random_state):
    rs = check_random_state(random_state)
    rng = np.random.default_rng(rs.randint(0, 2**31 - 1) if hasattr(rs, "randint")
                                else rs.integers(0, 2**31 - 1))
    if n_fields < 1 or n_features < n_fields:
        raise ValueError("need n_features >= n_fields >= 1")
    per_field = n_features // n_fields
    ranks = np.arange(1, per_field + 1, dtype=np.float64)
    p = ranks ** -zipf_a
    p /= p.sum()
    ids = rng.choice(per_field, size=(n_samples, n_fields), p=p)
    cols = ids + np.arange(n_fields) * per_field
    indptr = np.arange(0, n_samples * n_fields + 1, n_fields, dtype=np.int64)
    X = sp.csr_matrix((np.ones(n_samples * n_fields, dtype=np.float64), cols.ravel(), indptr),
                      shape=(n_samples, n_features))
    w = rng.normal(0.0, 0.3, n_features)
    V = rng.normal(0.0, 0.5, (n_features, n_factors))
    lin = w[cols].sum(axis=1)
    Vs = V[cols]                                   # (n, fields, k)
    pair = 0.5 * ((Vs.sum(axis=1) ** 2).sum(axis=1) - (Vs ** 2).sum(axis=(1, 2)))
    score = lin + pair
    score = (score - score.mean()) / (score.std() + 1e-12)
    return X, score, rng


def make_fm_regression(n_samples=10_000, n_features=1_000, n_fields=10, n_factors=4,
                       noise=0.3, zipf_a=1.1, random_state=None):
    """Regression data: y = standardized planted FM score + Gaussian noise.

    Returns X (CSR float64, one non-zero per field) and y (float64).
    """
    X, score, rng = _planted(n_samples, n_features, n_fields, n_factors, zipf_a, random_state)
    return X, score + noise * rng.normal(size=n_samples)


def make_fm_classification(n_samples=10_000, n_features=1_000, n_fields=10, n_factors=4,
                           sharpness=2.0, zipf_a=1.1, random_state=None):
    """Binary data: P(y=1) = sigmoid(sharpness * planted FM score).

    Returns X (CSR float64, one non-zero per field) and y in {0, 1}.
    """
    X, score, rng = _planted(n_samples, n_features, n_fields, n_factors, zipf_a, random_state)
    p = 1.0 / (1.0 + np.exp(-sharpness * score))
    return X, (rng.random(n_samples) < p).astype(np.int64)
