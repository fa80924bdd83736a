"""Plain NumPy reference of cfm's field-weighted FM (FwFM).

Deliberately naive and independent of the kernel's per-field sums:

* the score is the explicit double sum over pairs of non-zeros i < j,
  ``r[F(i), F(j)] <v_i, v_j> x_i x_j``;
* gradients w.r.t. v_i and r_fg are explicit sums over those pairs;
* one epoch replays the kernel's per-sample rules (src/cfm/_fwfm.pyx): the
  bias, w and v as the FM reference does (tests/reference.py), and then
  every weight r_fg of a pair of fields present in the row (f <= g): one
  step with gradient g * d score / d r_fg + l2_v * r_fg (AdaGrad per entry
  for adagrad and ftrl), all from the parameters before the sample.
"""
import numpy as np

import reference as ref


def score_row(x, w0, w, V, R, fields):
    nz = np.flatnonzero(x)
    s = float(w0) + float(sum(w[i] * x[i] for i in nz))
    for a in range(len(nz)):
        i = nz[a]
        for b in range(a + 1, len(nz)):
            j = nz[b]
            s += R[fields[i], fields[j]] * float(np.dot(V[i], V[j])) * x[i] * x[j]
    return s


def predict(X, w0, w, V, R, fields, normalize=False):
    Xd = ref.to_dense(X)
    return np.array([score_row(ref.scaled_row(x, normalize), w0, w, V, R, fields)
                     for x in Xd])


def dscore(x, V, R, fields):
    """(d score / d V of shape (n, k), d score / d r as an (F, F) upper-triangular
    array: entry [f, g], f <= g, is the derivative by the one weight r_fg = r_gf)."""
    n, k = V.shape
    gV = np.zeros((n, k))
    gR = np.zeros_like(R)
    nz = np.flatnonzero(x)
    for i in nz:
        for j in nz:
            if j != i:
                gV[i] += R[fields[i], fields[j]] * V[j] * x[j] * x[i]
    for a in range(len(nz)):
        i = nz[a]
        for b in range(a + 1, len(nz)):
            j = nz[b]
            f, g = sorted((fields[i], fields[j]))
            gR[f, g] += float(np.dot(V[i], V[j])) * x[i] * x[j]
    return gV, gR


def loss_and_grad(x, y, w0, w, V, R, fields, loss, normalize=False):
    xs = ref.scaled_row(x, normalize)
    p = score_row(xs, w0, w, V, R, fields)
    d = ref.loss_dp(p, y, loss)
    gV, gR = dscore(xs, V, R, fields)
    return ref.loss_value(p, y, loss), d, d * xs, d * gV, d * gR


def train_epoch(X, y, order, st, R, R_acc, fields, *, loss, solver, fit_intercept=True,
                normalize=False, learning_rate=0.1, l2_w0=0.0, l2_w=0.0, l2_v=0.0, l1=0.0,
                ftrl_beta=1.0):
    """One sequential epoch; ``st`` a reference.RefState, R / R_acc (F, F)
    symmetric, all updated in place.  Returns (loss sum, weight sum, n_bad)."""
    Xd = ref.to_dense(X)
    total_loss = total_w = 0.0
    n_bad = 0
    lr = learning_rate
    for i in order:
        xs = ref.scaled_row(Xd[i], normalize)
        p = score_row(xs, st.w0_state[0], st.w, st.V, R, fields)
        if not np.isfinite(p):
            n_bad += 1
            continue
        total_loss += ref.loss_value(p, y[i], loss)
        total_w += 1.0
        g = ref.loss_dp(p, y[i], loss)
        gV, gR = dscore(xs, st.V, R, fields)
        if fit_intercept:
            ref._update_bias(st, g, lr, l2_w0, ftrl_beta)
        nz = np.flatnonzero(xs)
        for j in nz:
            ref._update_feature(st, j, xs[j], g, gV[j], lr, l2_w, l2_v, l1, ftrl_beta)
        present = sorted(set(int(fields[j]) for j in nz))
        for a, f in enumerate(present):
            for gf in present[a:]:
                grad = g * gR[f, gf] + l2_v * R[f, gf]
                if solver == "sgd":
                    r = R[f, gf] - lr * grad
                else:
                    R_acc[f, gf] += grad * grad
                    R_acc[gf, f] = R_acc[f, gf]
                    r = R[f, gf] - lr * grad / np.sqrt(R_acc[f, gf])
                R[f, gf] = R[gf, f] = r
    return total_loss, total_w, n_bad
