"""Plain NumPy reference of cfm's multiclass (softmax) factorization machine.

C independent FMs (one ``reference.RefState`` per class) coupled by the
softmax loss:

    score_c(x) = w0_c + sum_i w_ic x_i + sum_{i<j} <v_ic, v_jc> x_i x_j
    loss(x, y) = log sum_c exp(score_c(x)) - score_y(x)
    d loss / d score_c = softmax(score)_c - [c == y]

Scores by reference.fm_score_row (the explicit double sum); one epoch
replays the kernel's per-sample rule: every class's score and factor sums
from the parameters before the sample, then for each class its bias and
the features of the row updated with g_c = weight * d loss / d score_c, by
the binary reference's update rules.
"""
import numpy as np

import reference as ref


def scores_row(xs, states):
    return np.array([ref.fm_score_row(xs, st.w0_state[0], st.w, st.V) for st in states])


def softmax_loss(scores, y):
    """-log softmax(scores)[y], computed stably."""
    m = np.max(scores)
    return float(m + np.log(np.sum(np.exp(scores - m))) - scores[y])


def softmax_dscores(scores, y):
    """d loss / d score_c = p_c - [c == y]."""
    p = np.exp(scores - np.max(scores))
    p /= p.sum()
    p[y] -= 1.0
    return p


def predict(X, states, normalize=False):
    """(n, C) reference scores."""
    Xd = ref.to_dense(X)
    return np.array([scores_row(ref.scaled_row(x, normalize), states) for x in Xd])


def loss_and_grad(x, y, params, normalize=False):
    """Loss of one sample and its analytic gradient w.r.t. every class's
    (w0, w, V); ``params``: [(w0, w, V)] per class.  Returns (loss,
    [(d w0, d w, d V)])."""
    xs = ref.scaled_row(x, normalize)
    s = np.array([ref.fm_score_row(xs, w0, w, V) for w0, w, V in params])
    g = softmax_dscores(s, y)
    grads = [(g[c], g[c] * xs, g[c] * ref.dscore_dV(xs, V)) for c, (w0, w, V) in
             enumerate(params)]
    return softmax_loss(s, y), grads


def sample_gradient(s, y, sample_weight, i, tally):
    """The kernels' per-sample softmax step (softmax_sample in _common.pxd):
    row i's class scores ``s`` not all finite -> tally[2] += 1 and None;
    else tally[0] += its weighted loss, tally[1] += its weight, and the
    weighted gradient of the loss wrt the C scores."""
    if not np.all(np.isfinite(s)):
        tally[2] += 1
        return None
    yi = int(y[i])
    sw = 1.0 if sample_weight is None else float(sample_weight[i])
    tally[0] += sw * softmax_loss(s, yi)
    tally[1] += sw
    return sw * softmax_dscores(s, yi)


def train_epoch(X, y, order, states, *, fit_intercept=True, normalize=False,
                learning_rate=0.1, l2_w0=0.0, l2_w=0.0, l2_v=0.0, l1=0.0, ftrl_beta=1.0,
                sample_weight=None):
    """One sequential epoch over rows ``order`` (y: class indices), updating
    ``states`` (one RefState per class) in place; returns (sum of weighted
    losses before each update, sum of weights, n_bad) like the kernel."""
    Xd = ref.to_dense(X)
    tally = [0.0, 0.0, 0]
    for i in order:
        xs = ref.scaled_row(Xd[i], normalize)
        g = sample_gradient(scores_row(xs, states), y, sample_weight, i, tally)
        if g is None:
            continue
        gVs = [ref.dscore_dV(xs, st.V) for st in states]  # all before any update
        for c, st in enumerate(states):
            if fit_intercept:
                ref._update_bias(st, g[c], learning_rate, l2_w0, ftrl_beta)
            for j in np.flatnonzero(xs):
                ref._update_feature(st, j, xs[j], g[c], gVs[c][j], learning_rate, l2_w, l2_v,
                                    l1, ftrl_beta)
    return tuple(tally)
