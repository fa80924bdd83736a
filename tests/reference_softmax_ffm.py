"""Plain NumPy reference of cfm's multiclass (softmax) field-aware FM.

C independent FFMs (one ``reference_ffm.RefFFMState`` per class) coupled by
the softmax loss:

    score_c(x) = w0_c + sum_a w_{j_a,c} x_a + sum_{a<b} <V_c[j_a, f(j_b)], V_c[j_b, f(j_a)]> x_a x_b
    loss(x, y) = log sum_c exp(score_c(x)) - score_y(x)
    d loss / d score_c = softmax(score)_c - [c == y]

One epoch replays the kernel's per-sample rule: every class's score from
the parameters before the sample, then for each class the binary FFM's
libffm-style step (bias, linear terms, pairs in row order) with
g_c = weight * d loss / d score_c (reference_ffm's update rules).
"""
import numpy as np

import reference_ffm as rf
from reference_softmax import sample_gradient, softmax_dscores, softmax_loss


def scores_row(cols, x, fields, states):
    return np.array([rf.ffm_score_entries(cols, x, fields, st.w0_state[0], st.w, st.V)
                     for st in states])


def predict(X, fields, states, normalize=False):
    """(n, C) reference scores."""
    X = rf._csr(X)
    return np.array([scores_row(*rf.row_entries(X, i, normalize), fields, states)
                     for i in range(X.shape[0])]).reshape(X.shape[0], len(states))


def dscore(cols, x, fields, w, V):
    """Gradient of one FFM score w.r.t. (w, V): d/d w_j = x_j, and
    d / d V[j_a, f(j_b)] = x_a x_b V[j_b, f(j_a)] summed over the pairs."""
    gw = np.zeros(len(w))
    gV = np.zeros(np.shape(V))
    for a in range(len(cols)):
        gw[cols[a]] += x[a]
        for b in range(a + 1, len(cols)):
            ja, jb = cols[a], cols[b]
            gV[ja, fields[jb]] += x[a] * x[b] * V[jb, fields[ja]]
            gV[jb, fields[ja]] += x[a] * x[b] * V[ja, fields[jb]]
    return gw, gV


def loss_and_grad(cols, x, y, fields, params):
    """Loss of one (scaled) sample and its analytic gradient w.r.t. every
    class's (w0, w, V); ``params``: [(w0, w, V)] per class, V of shape
    (n_features, n_fields, k).  Returns (loss, [(d w0, d w, d V)])."""
    s = np.array([rf.ffm_score_entries(cols, x, fields, *p) for p in params])
    g = softmax_dscores(s, y)
    grads = []
    for c, (w0, w, V) in enumerate(params):
        gw, gV = dscore(cols, x, fields, w, V)
        grads.append((g[c], g[c] * gw, g[c] * gV))
    return softmax_loss(s, y), grads


def train_epoch(X, y, fields, order, states, *, fit_intercept=True, normalize=False,
                learning_rate=0.1, l2_w0=0.0, l2_w=0.0, l2_v=0.0, l1=0.0, ftrl_beta=1.0,
                sample_weight=None):
    """One sequential epoch over rows ``order`` (y: class indices), updating
    ``states`` (one RefFFMState per class) in place; returns (sum of weighted
    losses before each update, sum of weights, n_bad) like the kernel."""
    X = rf._csr(X)
    fields = np.asarray(fields, dtype=np.int64)
    tally = [0.0, 0.0, 0]
    for i in order:
        cols, x = rf.row_entries(X, i, normalize)
        g = sample_gradient(scores_row(cols, x, fields, states), y, sample_weight, i, tally)
        if g is None:
            continue
        for c, st in enumerate(states):
            if fit_intercept:
                rf._update_bias(st, g[c], learning_rate, l2_w0, ftrl_beta)
            for a in range(len(cols)):
                rf._update_linear(st, cols[a], x[a], g[c], learning_rate, l2_w, l1, ftrl_beta)
            for a in range(len(cols)):
                for b in range(a + 1, len(cols)):
                    rf._update_pair(st, cols[a], fields[cols[a]], cols[b], fields[cols[b]],
                                    g[c] * x[a] * x[b], learning_rate, l2_v)
    return tuple(tally)
