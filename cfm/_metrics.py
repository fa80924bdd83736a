"""Evaluation metrics used for verbose output, history and early stopping.

Plain NumPy so that scikit-learn stays optional.  All take float64 arrays.
"""
import numpy as np


def _weights(w, n):
    return np.ones(n) if w is None else np.asarray(w, dtype=np.float64)


def rmse(y, pred, sample_weight=None):
    w = _weights(sample_weight, len(y))
    return float(np.sqrt(np.sum(w * (y - pred) ** 2) / np.sum(w)))


def mae(y, pred, sample_weight=None):
    w = _weights(sample_weight, len(y))
    return float(np.sum(w * np.abs(y - pred)) / np.sum(w))


def logloss(y01, score, sample_weight=None):
    """Mean logistic loss of raw scores against labels in {0, 1}; with scores
    of shape (n, n_classes), the multi-class log loss (cross-entropy of the
    softmax) against class indices 0 .. n_classes-1."""
    w = _weights(sample_weight, len(y01))
    if np.ndim(score) == 2:
        return float(np.sum(w * _softmax_nll(y01, score)) / np.sum(w))
    z = np.where(y01 > 0, score, -score)
    loss = np.logaddexp(0.0, -z)
    return float(np.sum(w * loss) / np.sum(w))


def _softmax_nll(y, score):
    """-log softmax(score)[y] per row, computed from the largest score."""
    score = np.asarray(score, dtype=np.float64)
    m = score.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(score - m).sum(axis=1))
    return lse - score[np.arange(len(score)), np.asarray(y).astype(np.intp)]


def accuracy(y, score, sample_weight=None):
    """Share of rows whose predicted class is right: raw binary scores (> 0
    is class 1) against labels in {0, 1}, or scores of shape (n, n_classes)
    (the largest wins, the first on ties) against class indices."""
    w = _weights(sample_weight, len(y))
    score = np.asarray(score)
    pred = score.argmax(axis=1) if score.ndim == 2 else (score > 0).astype(np.intp)
    return float(np.sum(w * (pred == np.asarray(y).astype(np.intp))) / np.sum(w))


def auc(y01, score, sample_weight=None):
    """Area under the ROC curve (ties counted as one half), weighted."""
    if np.ndim(score) == 2:
        raise ValueError("AUC is a binary metric; with more than two classes use "
                         "'logloss' or 'accuracy'")
    y01 = np.asarray(y01) > 0
    w = _weights(sample_weight, len(y01))
    order = np.argsort(score, kind="mergesort")
    s = np.asarray(score)[order]
    pos = np.where(y01[order], w[order], 0.0)
    neg = np.where(y01[order], 0.0, w[order])
    P, N = pos.sum(), neg.sum()
    if P == 0 or N == 0:
        return float("nan")
    # group tied scores
    boundaries = np.flatnonzero(np.diff(s)) + 1
    starts = np.concatenate(([0], boundaries))
    pos_g = np.add.reduceat(pos, starts)
    neg_g = np.add.reduceat(neg, starts)
    neg_before = np.concatenate(([0.0], np.cumsum(neg_g)[:-1]))
    return float(np.sum(pos_g * (neg_before + 0.5 * neg_g)) / (P * N))


# name -> (function, greater_is_better)
METRICS = {
    "rmse": (rmse, False),
    "mae": (mae, False),
    "logloss": (logloss, False),
    "auc": (auc, True),
    "accuracy": (accuracy, True),
}


# --------------------------------------------------------------------------
# Ranking (top-k lists against held-out relevant items)
# --------------------------------------------------------------------------

def ranking_metrics(top, relevant_ptr, relevant_items, k):
    """Mean precision@k, recall@k, NDCG@k and MAP@k of top-k lists.

    ``top``: (n_users, >= k) item ids, best first (-1: no item); user r's
    relevant items are ``relevant_items[relevant_ptr[r]:relevant_ptr[r + 1]]``
    (users without any are skipped).  Definitions (binary relevance):
    precision@k = hits / k; recall@k = hits / |rel|; NDCG@k = DCG / ideal DCG
    with gains 1 / log2(rank + 1); AP@k = sum over hit ranks r of
    precision@r, divided by min(k, |rel|) (as implicit's
    ``mean_average_precision_at_k``).  Returns a dict with the four means and
    ``users`` (how many users were counted).
    """
    top = np.asarray(top)[:, :k]
    ptr = np.asarray(relevant_ptr, dtype=np.int64)
    items = np.asarray(relevant_items)
    n = top.shape[0]
    if len(ptr) != n + 1:
        raise ValueError(f"relevant_ptr has {len(ptr)} offsets for {n} users")
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    prec, rec, ndcg, ap = [], [], [], []
    for r in range(n):
        rel = items[ptr[r]:ptr[r + 1]]
        if len(rel) == 0:
            continue
        hit = np.isin(top[r], rel) & (top[r] >= 0)
        h = int(hit.sum())
        prec.append(h / k)
        rec.append(h / len(rel))
        ndcg.append(float(discount[:len(hit)][hit].sum() / discount[:min(k, len(rel))].sum()))
        ranks = np.flatnonzero(hit) + 1
        ap.append(float(np.sum(np.arange(1, h + 1) / ranks)) / min(k, len(rel)))
    if not prec:
        return {"precision": float("nan"), "recall": float("nan"), "ndcg": float("nan"),
                "map": float("nan"), "users": 0}
    return {"precision": float(np.mean(prec)), "recall": float(np.mean(rec)),
            "ndcg": float(np.mean(ndcg)), "map": float(np.mean(ap)), "users": len(prec)}
