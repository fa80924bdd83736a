"""Plain NumPy reference of cfm.FMRanker's model and training step
(src/cfm/_rank.pyx): the FM score by its O(n^2 k) double sum on the
concatenated row [u | i], the BPR / WARP gradient, and an epoch of steps in
the kernel's order for given negatives."""
import numpy as np


def fm_score(w0, w, V, x):
    """w0 + sum_a w_a x_a + sum_{a<b} <v_a, v_b> x_a x_b (dense x)."""
    s = w0 + float(w @ x)
    nz = np.flatnonzero(x)
    for p, a in enumerate(nz):
        for b in nz[p + 1:]:
            s += float(V[a] @ V[b]) * x[a] * x[b]
    return s


def pair_difference(w, V, u, xi, xj):
    """d = s(u, i) - s(u, j) from the brute-force FM."""
    return fm_score(0.0, w, V, np.concatenate([u, xi])) - fm_score(0.0, w, V,
                                                                   np.concatenate([u, xj]))


def grad_difference(w, V, u, xi, xj):
    """Analytic gradient of d with respect to w and V (dense rows)."""
    pu = len(u)
    P, Qi, Qj = V[:pu].T @ u, V[pu:].T @ xi, V[pu:].T @ xj
    gw = np.zeros_like(w)
    gw[pu:] = xi - xj
    gV = np.zeros_like(V)
    gV[:pu] = np.outer(u, Qi - Qj)
    Vi = V[pu:]
    gV[pu:] += xi[:, None] * (P + Qi - Vi * xi[:, None])
    gV[pu:] -= xj[:, None] * (P + Qj - Vi * xj[:, None])
    return gw, gV


def _row(M, r):
    lo, hi = M.indptr[r], M.indptr[r + 1]
    return M.indices[lo:hi], M.data[lo:hi]


def _side(w, V, ind, val, off, bias):
    q = (V[ind + off] * val[:, None]).sum(axis=0) if len(ind) else np.zeros(V.shape[1])
    if not bias:
        return q, 0.0
    lin = float(w[ind + off] @ val)
    sq = float(((V[ind + off] ** 2) * (val ** 2)[:, None]).sum())
    return q, lin + 0.5 * (float(q @ q) - sq)


def epoch(tab, U, I, user, item, order, negatives, *, k, adagrad, lr, l2_w, l2_v,
          warp=False, n_items=None):
    """One epoch on the FM table ``tab`` (rows [w, v(k), G_w, G_v]; G only
    with ``adagrad``), in place, with negatives[p] the draws for position p
    of ``order`` (-1: none).  Returns (loss sum, counted, skipped)."""
    w, V = tab[:, 0], tab[:, 1:1 + k]
    pu = U.shape[1]
    loss_sum, counted, skipped = 0.0, 0, 0

    def step(a, gw, base, other, x, sign, g):
        if gw is not None:
            gw = gw + l2_w * tab[a, 0]
            if adagrad:
                tab[a, 1 + k] += gw * gw
                tab[a, 0] -= lr * gw / np.sqrt(tab[a, 1 + k])
            else:
                tab[a, 0] -= lr * gw
        v = tab[a, 1:1 + k].copy()
        if other is not None:
            gb = sign * g * x * (base + other - v * x) + l2_v * v
        else:
            gb = sign * g * x * base + l2_v * v
        if adagrad:
            tab[a, 2 + k] += float(gb @ gb) / k
            tab[a, 1:1 + k] -= lr / np.sqrt(tab[a, 2 + k]) * gb
        else:
            tab[a, 1:1 + k] -= lr * gb

    for p, s in enumerate(order):
        u, i = user[s], item[s]
        uind, uval = _row(U, u)
        iind, ival = _row(I, i)
        P, _ = _side(w, V, uind, uval, 0, False)
        Qi, bi = _side(w, V, iind, ival, pu, True)
        found, j, trial = False, -1, 0
        for trial in range(1, (negatives.shape[1] if warp else 1) + 1):
            j = negatives[p, trial - 1]
            if j < 0:
                break
            jind, jval = _row(I, j)
            Qj, bj = _side(w, V, jind, jval, pu, True)
            d = bi - bj + float(P @ (Qi - Qj))
            if not warp or d < 1.0:
                found = True
                break
        if not found:
            if j < 0:
                skipped += 1
            else:
                counted += 1
            continue
        if warp:
            weight = np.log(max(1.0, np.floor((n_items - 1) / trial)))
            loss_sum += weight * (1.0 - d)
            g = -weight
        else:
            loss_sum += np.logaddexp(0.0, -d)
            g = -1.0 / (1.0 + np.exp(d))
        counted += 1
        diff = Qi - Qj
        for a, x in zip(uind, uval):
            step(a, None, diff, None, x, 1.0, g)
        for a, x in zip(iind, ival):
            step(a + pu, g * x, P, Qi, x, 1.0, g)
        for a, x in zip(jind, jval):
            step(a + pu, -g * x, P, Qj, x, -1.0, g)
    return loss_sum, counted, skipped
