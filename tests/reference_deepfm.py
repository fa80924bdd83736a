"""Plain NumPy reference of cfm's DeepFM (src/cfm/_deepfm.pyx), in float64.

Independent of the kernel's tricks: dense X, the FM pairwise term by the
explicit double sum over pairs, field pooling by masked matrix products, the
MLP by full matrix products, gradients written out by hand (and checked by
finite differences in the tests), and the optimizer steps of one batch
(lazy: only the embedding rows the batch touches, Adam with a step count per
row; dense layers and w0 with the global step count).

Parameters are a dict:
    w0 (float), w (n_features,), V (n_features, k),
    W: list of (d_{l-1}, d_l), b: list of (d_l,), wout (d_L,)
"""
import numpy as np

SQUARED, LOGISTIC = "squared", "logistic"


def to_dense(X):
    if hasattr(X, "toarray"):
        X = X.toarray()
    return np.asarray(X, dtype=np.float64)


def scaled(X, normalize):
    X = to_dense(X)
    if not normalize:
        return X
    n = np.sqrt((X * X).sum(axis=1))
    n[n == 0] = 1.0
    return X / n[:, None]


def loss_value(p, y, loss):
    if loss == SQUARED:
        return 0.5 * (p - y) ** 2
    return np.logaddexp(0.0, -y * p)


def loss_dp(p, y, loss):
    if loss == SQUARED:
        return p - y
    z = np.clip(y * p, -35.0, 35.0)
    return -y / (1.0 + np.exp(z))


def fm_part(x, w, V):
    """sum_j w_j x_j + sum_{a<b} <v_a, v_b> x_a x_b by the double sum."""
    nz = np.flatnonzero(x)
    lin = float(np.dot(w[nz], x[nz]))
    pair = 0.0
    for a in range(len(nz)):
        for b in range(a + 1, len(nz)):
            i, j = nz[a], nz[b]
            pair += float(np.dot(V[i], V[j])) * x[i] * x[j]
    return lin + pair


def pooled(Xs, V, fields, n_fields):
    """(n, n_fields * k): per field, sum_j x_j v_j."""
    k = V.shape[1]
    H0 = np.zeros((Xs.shape[0], n_fields * k))
    for f in range(n_fields):
        cols = fields == f
        H0[:, f * k:(f + 1) * k] = Xs[:, cols] @ V[cols]
    return H0


def forward(X, params, fields, n_fields, normalize=False, masks=None):
    """Predictions and the intermediate values backward needs.

    ``masks``: per hidden layer, (n, d_l) multipliers (dropout), or None."""
    Xs = scaled(X, normalize)
    V, w = params["V"], params["w"]
    fm = np.array([fm_part(x, w, V) for x in Xs])
    H = [pooled(Xs, V, fields, n_fields)]
    for l, (W, b) in enumerate(zip(params["W"], params["b"])):
        h = np.maximum(H[-1] @ W + b, 0.0)
        if masks is not None:
            h = h * masks[l]
        H.append(h)
    deep = H[-1] @ params["wout"]
    pred = params["w0"] + fm + deep
    return pred, {"Xs": Xs, "H": H, "fm": fm, "deep": deep}


def touched(X):
    return np.flatnonzero((to_dense(X) != 0).any(axis=0))


def objective(X, y, sw, params, fields, n_fields, loss, l2, normalize=False, masks=None):
    """Batch objective: sum sw loss / sum sw + L2 terms (rows the batch touches)."""
    pred, _ = forward(X, params, fields, n_fields, normalize, masks)
    J = float(np.sum(sw * loss_value(pred, y, loss)) / np.sum(sw))
    t = touched(X)
    J += 0.5 * l2.get("w0", 0.0) * params["w0"] ** 2
    J += 0.5 * l2.get("w", 0.0) * float(np.sum(params["w"][t] ** 2))
    J += 0.5 * l2.get("v", 0.0) * float(np.sum(params["V"][t] ** 2))
    dense = sum(float(np.sum(W ** 2)) for W in params["W"]) + float(np.sum(params["wout"] ** 2))
    J += 0.5 * l2.get("dense", 0.0) * dense
    return J


def gradients(X, y, sw, params, fields, n_fields, loss, l2, normalize=False, masks=None):
    """Analytic gradient of :func:`objective` (dict like params; rows not
    touched by the batch have zero gradient)."""
    pred, cache = forward(X, params, fields, n_fields, normalize, masks)
    Xs, H = cache["Xs"], cache["H"]
    n, nf = Xs.shape
    V, w = params["V"], params["w"]
    k = V.shape[1]
    gp = sw * loss_dp(pred, y, loss) / np.sum(sw)          # d J / d pred
    g = {"w0": float(np.sum(gp)) + l2.get("w0", 0.0) * params["w0"]}
    g["wout"] = H[-1].T @ gp + l2.get("dense", 0.0) * params["wout"]
    dh = np.outer(gp, params["wout"])                       # d J / d h_L
    gW, gb = [], []
    for l in range(len(params["W"]) - 1, -1, -1):
        # h_{l+1} = relu(h_l W + b) * mask: its derivative is mask where h > 0
        if masks is not None:
            dz = dh * masks[l] * (H[l + 1] > 0)
        else:
            dz = dh * (H[l + 1] > 0)
        gW.insert(0, H[l].T @ dz + l2.get("dense", 0.0) * params["W"][l])
        gb.insert(0, dz.sum(axis=0))
        dh = dz @ params["W"][l].T
    g["W"], g["b"] = gW, gb
    dh0 = dh                                                # (n, n_fields * k)
    gw = np.zeros(nf)
    gV = np.zeros((nf, k))
    for i in range(n):
        x = Xs[i]
        nz = np.flatnonzero(x)
        s = V[nz].T @ x[nz]                                 # sum_j v_j x_j
        for j in nz:
            f = fields[j]
            gw[j] += gp[i] * x[j]
            # d fm / d v_j = x_j (s - v_j x_j);  d deep / d v_j = x_j dh0[f]
            gV[j] += gp[i] * x[j] * (s - V[j] * x[j]) + x[j] * dh0[i, f * k:(f + 1) * k]
    t = touched(X)
    gw[t] += l2.get("w", 0.0) * w[t]
    gV[t] += l2.get("v", 0.0) * V[t]
    g["w"], g["V"] = gw, gV
    return g


# --------------------------------------------------------------- optimizers
def adam(p, g, m, s, t, lr, b1=0.9, b2=0.999, eps=1e-8):
    """torch.optim.Adam's step (in place on p, m, s); t is the new step count."""
    m[...] = b1 * m + (1 - b1) * g
    s[...] = b2 * s + (1 - b2) * g * g
    bc1 = 1 - b1 ** t
    bc2 = 1 - b2 ** t
    p[...] = p - (lr / bc1) * m / (np.sqrt(s) / np.sqrt(bc2) + eps)


def adagrad(p, g, G, lr, eps=1e-10):
    """torch.optim.Adagrad's step (in place)."""
    G[...] = G + g * g
    p[...] = p - lr * g / (np.sqrt(G) + eps)


def new_state(params, optimizer):
    """Optimizer state matching the kernel: per-row step counts for the rows."""
    z = {key: (np.zeros_like(v) if not isinstance(v, list) else [np.zeros_like(a) for a in v])
         for key, v in params.items() if key != "w0"}
    st = {"m": z, "w0_m": 0.0, "w0_s": 0.0, "step": 0,
          "row_t": np.zeros(params["w"].shape[0], dtype=np.int64)}
    if optimizer == "adam":
        st["s"] = {key: (np.zeros_like(v) if not isinstance(v, list) else [np.zeros_like(a) for a in v])
                   for key, v in params.items() if key != "w0"}
    return st


def step(X, y, sw, params, state, fields, n_fields, loss, l2, optimizer, lr,
         normalize=False, masks=None, eps=None, fit_intercept=True):
    """One lazy optimizer step on one batch (in place on params and state)."""
    g = gradients(X, y, sw, params, fields, n_fields, loss, l2, normalize, masks)
    eps = (1e-8 if optimizer == "adam" else 1e-10) if eps is None else eps
    t = touched(X)
    state["step"] += 1
    T = state["step"]
    m, s = state["m"], state.get("s")
    # embedding rows: [w_j, v_j] as one record, stepped only where touched
    for j in t:
        pj = np.concatenate([[params["w"][j]], params["V"][j]])
        gj = np.concatenate([[g["w"][j]], g["V"][j]])
        mj = np.concatenate([[m["w"][j]], m["V"][j]])
        if optimizer == "adam":
            state["row_t"][j] += 1
            sj = np.concatenate([[s["w"][j]], s["V"][j]])
            adam(pj, gj, mj, sj, state["row_t"][j], lr, eps=eps)
            s["w"][j], s["V"][j] = sj[0], sj[1:]
        else:
            adagrad(pj, gj, mj, lr, eps=eps)
        params["w"][j], params["V"][j] = pj[0], pj[1:]
        m["w"][j], m["V"][j] = mj[0], mj[1:]
    dense = [("W", i) for i in range(len(params["W"]))] + [("b", i) for i in range(len(params["b"]))]
    for key, i in dense + [("wout", None)]:
        p = params[key] if i is None else params[key][i]
        gg = g[key] if i is None else g[key][i]
        mm = m[key] if i is None else m[key][i]
        if optimizer == "adam":
            ss = s[key] if i is None else s[key][i]
            adam(p, gg, mm, ss, T, lr, eps=eps)
        else:
            adagrad(p, gg, mm, lr, eps=eps)
    if fit_intercept:
        p = np.array([params["w0"]])
        mm = np.array([state["w0_m"]])
        if optimizer == "adam":
            ss = np.array([state["w0_s"]])
            adam(p, np.array([g["w0"]]), mm, ss, T, lr, eps=eps)
            state["w0_s"] = float(ss[0])
        else:
            adagrad(p, np.array([g["w0"]]), mm, lr, eps=eps)
        params["w0"], state["w0_m"] = float(p[0]), float(mm[0])
    return g
