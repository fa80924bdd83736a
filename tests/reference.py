"""Plain NumPy reference implementation of cfm's factorization machine.

Deliberately naive and independent of the kernels' tricks:

* prediction is the O(n^2 k) double sum over pairs i < j (not the O(kn)
  identity used by src/cfm/_fm.pyx);
* the gradient of the pairwise term w.r.t. v_if is sum_{j != i} v_jf x_j x_i,
  also written as an explicit sum;
* one training epoch replays the kernel's per-sample update rules
  (update_bias / update_features in src/cfm/_fm.pyx) row by row, in a given
  order, in float64.

Everything works on a dense float64 copy of X (tests keep data small).
"""
import numpy as np
import scipy.sparse as sp

SQUARED, LOGISTIC = "squared", "logistic"


def to_dense(X):
    if sp.issparse(X):
        X = X.toarray()
    return np.asarray(X, dtype=np.float64)


def scaled_row(x, normalize):
    """Row x (dense, float64), scaled to unit L2 norm when ``normalize`` (zero rows unchanged)."""
    x = np.asarray(x, dtype=np.float64)
    if normalize:
        nrm = np.sqrt(np.sum(x * x))
        if nrm > 0:
            return x / nrm
    return x


def fm_score_row(x, w0, w, V):
    """w0 + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j by the explicit double sum."""
    nz = np.flatnonzero(x)  # zero entries contribute nothing to any term
    lin = 0.0
    for i in nz:
        lin += w[i] * x[i]
    pair = 0.0
    for a in range(len(nz)):
        i = nz[a]
        for b in range(a + 1, len(nz)):
            j = nz[b]
            pair += float(np.dot(V[i], V[j])) * x[i] * x[j]
    return float(w0) + lin + pair


def fm_predict(X, w0, w, V, normalize=False):
    """Reference FM scores of every row of X."""
    Xd = to_dense(X)
    w = np.asarray(w, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64).reshape(len(w), -1)
    return np.array([fm_score_row(scaled_row(x, normalize), w0, w, V) for x in Xd])


# ----------------------------------------------------------------- losses
def loss_value(p, y, loss):
    """Squared 0.5 (p - y)^2, or logistic log(1 + exp(-y p)) with y in {-1, +1}."""
    if loss == SQUARED:
        return 0.5 * (p - y) ** 2
    return float(np.logaddexp(0.0, -y * p))


def loss_dp(p, y, loss):
    """d loss / d p (the logistic margin clamped at 35, as the kernels do; no
    difference at double precision)."""
    if loss == SQUARED:
        return p - y
    z = float(np.clip(y * p, -35.0, 35.0))
    return -y / (1.0 + np.exp(z))


def dscore_dV(x, V):
    """d score / d v_if = x_i sum_{j != i} v_jf x_j (explicit sum over j)."""
    n, k = V.shape
    G = np.zeros((n, k))
    nz = np.flatnonzero(x)
    for i in nz:
        acc = np.zeros(k)
        for j in nz:
            if j != i:
                acc += V[j] * x[j]
        G[i] = x[i] * acc
    return G


def loss_and_grad(x, y, w0, w, V, loss, normalize=False):
    """Loss of one sample and its analytic gradient w.r.t. (w0, w, V)."""
    xs = scaled_row(x, normalize)
    p = fm_score_row(xs, w0, w, V)
    d = loss_dp(p, y, loss)
    return loss_value(p, y, loss), d, d * xs, d * dscore_dV(xs, V)


# ------------------------------------------------------------ one epoch
class RefState:
    """Float64 copy of the model and optimizer state (kernel layout unpacked).

    sgd: no state; adagrad: Gw (n,), GV (n,); ftrl: z (n,), nw (n,), GV (n,).
    The factors use row-wise AdaGrad: GV[j] accumulates the mean over the k
    coordinates of the squared gradient of v_j.
    w0_state = [w0, a, b] exactly as the kernel's (adagrad: a = G_w0;
    ftrl: a = z_w0, b = n_w0).
    """

    def __init__(self, w0_state, w, V, solver, opt=None):
        self.w0_state = np.array(w0_state, dtype=np.float64)
        self.w = np.array(w, dtype=np.float64)
        self.V = np.array(V, dtype=np.float64).reshape(len(self.w), -1)
        self.solver = solver
        n, k = self.V.shape
        opt = {} if opt is None else opt
        if solver == "adagrad":
            self.Gw = np.array(opt["Gw"], dtype=np.float64)
            self.GV = np.array(opt["GV"], dtype=np.float64).reshape(n)
        elif solver == "ftrl":
            self.z = np.array(opt["z"], dtype=np.float64)
            self.nw = np.array(opt["nw"], dtype=np.float64)
            self.GV = np.array(opt["GV"], dtype=np.float64).reshape(n)

    @classmethod
    def from_table(cls, table, w0_state, k, solver):
        t = np.asarray(table, dtype=np.float64)
        opt = None
        if solver == "adagrad":
            opt = {"Gw": t[:, 1 + k], "GV": t[:, 2 + k]}
        elif solver == "ftrl":
            opt = {"z": t[:, 1 + k], "nw": t[:, 2 + k], "GV": t[:, 3 + k]}
        return cls(w0_state, t[:, 0], t[:, 1:1 + k], solver, opt)

    def to_table(self, table):
        """Write the state into a kernel table of the same layout (in place)."""
        k = self.V.shape[1]
        table[:, 0] = self.w
        table[:, 1:1 + k] = self.V
        if self.solver == "adagrad":
            table[:, 1 + k] = self.Gw
            table[:, 2 + k] = self.GV
        elif self.solver == "ftrl":
            table[:, 1 + k] = self.z
            table[:, 2 + k] = self.nw
            table[:, 3 + k] = self.GV


def _update_bias(st, g, lr, l2_w0, beta):
    t = st.w0_state
    if st.solver == "sgd":
        t[0] -= lr * (g + l2_w0 * t[0])
    elif st.solver == "adagrad":
        gw = g + l2_w0 * t[0]
        t[1] += gw * gw
        t[0] -= lr * gw / np.sqrt(t[1])
    else:  # FTRL-proximal, no L1 on the bias
        n_new = t[2] + g * g
        sigma = (np.sqrt(n_new) - np.sqrt(t[2])) / lr
        t[1] += g - sigma * t[0]
        t[2] = n_new
        t[0] = -t[1] / ((beta + np.sqrt(n_new)) / lr + l2_w0)


def _update_linear(st, j, xj, g, lr, l2_w, l1, beta):
    """Update w_j (and its optimizer state in ``st``) with loss gradient g * x_j."""
    gx = g * xj
    w = st.w[j]
    if st.solver == "sgd":
        st.w[j] = w - lr * (gx + l2_w * w)
    elif st.solver == "adagrad":
        gw = gx + l2_w * w
        st.Gw[j] += gw * gw
        st.w[j] = w - lr * gw / np.sqrt(st.Gw[j])
    else:
        n_new = st.nw[j] + gx * gx
        sigma = (np.sqrt(n_new) - np.sqrt(st.nw[j])) / lr
        st.z[j] += gx - sigma * w
        st.nw[j] = n_new
        z = st.z[j]
        if abs(z) <= l1:
            st.w[j] = 0.0
        else:
            st.w[j] = -(z - np.sign(z) * l1) / ((beta + np.sqrt(n_new)) / lr + l2_w)


def _update_feature(st, j, xj, g, gV_j, lr, l2_w, l2_v, l1, beta):
    """Update w_j and v_j; gV_j = d score / d v_j (from pre-update sums)."""
    _update_linear(st, j, xj, g, lr, l2_w, l1, beta)
    v = st.V[j].copy()
    gv = g * gV_j + l2_v * v
    if st.solver == "sgd":
        st.V[j] = v - lr * gv
    elif len(v):  # row-wise AdaGrad
        st.GV[j] += np.mean(gv * gv)
        st.V[j] = v - lr * gv / np.sqrt(st.GV[j])


def train_epoch(X, y, order, st, *, loss, fit_intercept=True, normalize=False,
                learning_rate=0.1, l2_w0=0.0, l2_w=0.0, l2_v=0.0, l1=0.0,
                ftrl_beta=1.0, sample_weight=None):
    """One sequential epoch over rows ``order``, updating ``st`` in place.

    Per sample: prediction and all gradients from the parameters before this
    sample's updates; the bias (if fit_intercept) and then the linear and
    factor parameters of the features present in the row are updated; L2 is
    applied only to those features.  Rows with a non-finite prediction are
    skipped.  ``y`` is real (squared) or in {-1, +1} (logistic).

    Returns (sum of weighted losses before each update, sum of weights, n_bad),
    like the kernel.
    """
    Xd = to_dense(X)
    total_loss = total_w = 0.0
    n_bad = 0
    for i in order:
        xs = scaled_row(Xd[i], normalize)
        p = fm_score_row(xs, st.w0_state[0], st.w, st.V)
        if not np.isfinite(p):
            n_bad += 1
            continue
        sw = 1.0 if sample_weight is None else float(sample_weight[i])
        total_loss += sw * loss_value(p, y[i], loss)
        total_w += sw
        g = sw * loss_dp(p, y[i], loss)
        gV = dscore_dV(xs, st.V)  # pre-update sums, for every feature of the row
        if fit_intercept:
            _update_bias(st, g, learning_rate, l2_w0, ftrl_beta)
        for j in np.flatnonzero(xs):
            _update_feature(st, j, xs[j], g, gV[j], learning_rate, l2_w, l2_v, l1, ftrl_beta)
    return total_loss, total_w, n_bad
