"""Plain NumPy reference implementation of cfm's field-aware factorization machine.

Deliberately naive and independent of the kernels' layout tricks:

* prediction is the explicit double sum over pairs a < b of the non-zeros of
  a row of <V[j_a, f(j_b)], V[j_b, f(j_a)]> x_a x_b (+ w0 + w.x);
* the gradient w.r.t. V is also an explicit sum over pairs;
* one training epoch replays the kernel's libffm-style per-sample update
  rules (src/cfm/_ffm.pyx: update_bias, update_linear, update_pairs) row by
  row, in a given order, in float64.

Rows are read from the CSR structure (entries in stored order, a = position in
the row), exactly as the kernel reads them; this matters because an update
visits the pairs in that order and a vector may be stepped several times per
row (repeated fields).  V is unpacked as (n_features, n_fields, k).
"""
import numpy as np
import scipy.sparse as sp

# the bias and linear steps are the FM kernel's, shared with the FM reference
from reference import _update_bias, _update_linear, loss_dp, loss_value  # noqa: E402,F401

from reference import LOGISTIC, SQUARED  # noqa: E402,F401


def _csr(X):
    X = sp.csr_matrix(X)
    X.sum_duplicates()  # what cfm's input validation does (also sorts indices)
    return X


def row_entries(X, i, normalize):
    """(columns, scaled float64 values) of row i of CSR X, in stored order."""
    s, e = X.indptr[i], X.indptr[i + 1]
    cols = np.asarray(X.indices[s:e], dtype=np.int64)
    x = np.asarray(X.data[s:e], dtype=np.float64)
    if normalize:
        nrm = np.sqrt(np.sum(x * x))
        if nrm > 0:
            x = x / nrm
    return cols, x


def ffm_score_entries(cols, x, fields, w0, w, V):
    """w0 + sum_a w_{j_a} x_a + sum_{a<b} <V[j_a, f(j_b)], V[j_b, f(j_a)]> x_a x_b."""
    lin = 0.0
    for a in range(len(cols)):
        lin += float(w[cols[a]]) * x[a]
    pair = 0.0
    for a in range(len(cols)):
        for b in range(a + 1, len(cols)):
            ja, jb = cols[a], cols[b]
            pair += float(np.dot(V[ja, fields[jb]], V[jb, fields[ja]])) * x[a] * x[b]
    return float(w0) + lin + pair


def ffm_predict(X, fields, w0, w, V, normalize=False):
    """Reference FFM scores of every row of X; V has shape (n_features, n_fields, k)."""
    X = _csr(X)
    w = np.asarray(w, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    fields = np.asarray(fields, dtype=np.int64)
    out = np.empty(X.shape[0])
    for i in range(X.shape[0]):
        cols, x = row_entries(X, i, normalize)
        out[i] = ffm_score_entries(cols, x, fields, w0, w, V)
    return out


def loss_and_grad(cols, x, y, fields, w0, w, V, loss):
    """Loss of one (already scaled) sample and its analytic gradient w.r.t. (w0, w, V).

    d score / d V[j_a, f(j_b)] = x_a x_b V[j_b, f(j_a)], summed over the pairs.
    """
    p = ffm_score_entries(cols, x, fields, w0, w, V)
    d = loss_dp(p, y, loss)
    gw = np.zeros(len(w))
    gV = np.zeros_like(np.asarray(V, dtype=np.float64))
    for a in range(len(cols)):
        gw[cols[a]] += d * x[a]
        for b in range(a + 1, len(cols)):
            ja, jb = cols[a], cols[b]
            gV[ja, fields[jb]] += d * x[a] * x[b] * V[jb, fields[ja]]
            gV[jb, fields[ja]] += d * x[a] * x[b] * V[ja, fields[jb]]
    return loss_value(p, y, loss), d, gw, gV


# ------------------------------------------------------------ state
def layout(dtype, k, solver):
    """(kp, ks, half) of the kernel's V table for this dtype (see cfm/ffm.py)."""
    half = np.dtype(dtype) == np.float16
    step = 8 if half else 4
    kp = max(step, -(-k // step) * step)
    ks = kp + (0 if solver == "sgd" else (2 if half else 1))
    return kp, ks, half


def record_offsets(dtype, k, solver, n_fields):
    """Offset (in table entries) of field q's record in a row: contiguous
    (q * ks), except 20-byte float16 records [8 halves, float32 G], packed
    three per 64-byte line (32 halves) so that none straddles two lines."""
    kp, ks, half = layout(dtype, k, solver)
    if half and ks == 10:
        return np.array([32 * (q // 3) + 10 * (q % 3) for q in range(n_fields)])
    return np.array([q * ks for q in range(n_fields)])


def _offsets(rec_off, n_fields, ks):
    return np.arange(n_fields) * ks if rec_off is None else np.asarray(rec_off)


class RefFFMState:
    """Float64 copy of an FFM model and its optimizer state.

    w (n,); V (n, n_fields, k); sgd: no state; adagrad: Gw (n,), GV (n, n_fields);
    ftrl: z (n,), nw (n,), GV (n, n_fields).  GV is the row-wise AdaGrad
    accumulator of each (feature, field) vector.  w0_state = [w0, a, b] exactly
    as the kernel's (adagrad: a = G_w0; ftrl: a = z_w0, b = n_w0).
    """

    def __init__(self, w0_state, w, V, solver, Gw=None, z=None, nw=None, GV=None):
        self.w0_state = np.array(w0_state, dtype=np.float64)
        self.w = np.array(w, dtype=np.float64)
        self.V = np.array(V, dtype=np.float64)
        self.solver = solver
        self.Gw = None if Gw is None else np.array(Gw, dtype=np.float64)
        self.z = None if z is None else np.array(z, dtype=np.float64)
        self.nw = None if nw is None else np.array(nw, dtype=np.float64)
        self.GV = None if GV is None else np.array(GV, dtype=np.float64)

    def copy(self):
        return RefFFMState(self.w0_state, self.w, self.V, self.solver, self.Gw, self.z,
                           self.nw, self.GV)

    @classmethod
    def from_tables(cls, lin, V, w0_state, n_fields, k, solver, rec_off=None):
        """Unpack the kernel tables: lin = [w, opt state]; V = per (feature, field)
        [v (kp coordinates, k used), G (adagrad/ftrl only)] at rec_off[field]
        of the feature's row (default: contiguous).  A float16 V has kp = k
        rounded up to 8 and G as a float32 in two float16 slots."""
        kp, ks, half = layout(V.dtype, k, solver)
        lin = np.asarray(np.asarray(lin)[:, :3], dtype=np.float64)
        V = np.asarray(V)
        raw = np.ascontiguousarray(np.stack(
            [V[:, o:o + ks] for o in _offsets(rec_off, n_fields, ks)], axis=1)).reshape(
            len(lin), n_fields, ks)
        Vt = raw.astype(np.float64)
        kw = {}
        if solver == "adagrad":
            kw["Gw"] = lin[:, 1]
        elif solver == "ftrl":
            kw["z"], kw["nw"] = lin[:, 1], lin[:, 2]
        if solver != "sgd":
            if half:
                kw["GV"] = raw[:, :, kp:kp + 2].copy().view(np.float32)[..., 0]
            else:
                kw["GV"] = Vt[:, :, kp]
        return cls(w0_state, lin[:, 0], Vt[:, :, :k], solver, **kw)

    @classmethod
    def from_model(cls, m):
        return cls.from_tables(m._lin, m._V, m._w0_state, m.n_fields_, m._k, m._solver,
                               m._rec_off)

    def to_tables(self, lin, V, w0_state, rec_off=None):
        """Write the state into kernel tables of the matching layout (in place);
        padding coordinates are set to 0."""
        n, nf, k = self.V.shape
        kp, ks, half = layout(V.dtype, k, self.solver)
        offs = _offsets(rec_off, nf, ks)
        lin[:, 0] = self.w
        if self.solver == "adagrad":
            lin[:, 1] = self.Gw
        elif self.solver == "ftrl":
            lin[:, 1] = self.z
            lin[:, 2] = self.nw
        for q in range(nf):
            o = int(offs[q])
            V[:, o:o + k] = self.V[:, q]
            V[:, o + k:o + kp] = 0.0
            if self.solver != "sgd":
                if half:
                    V[:, o + kp:o + kp + 2] = (
                        self.GV[:, q].astype(np.float32).view(np.float16).reshape(n, 2))
                else:
                    V[:, o + kp] = self.GV[:, q]
        w0_state[:] = self.w0_state

    def to_model(self, m):
        self.to_tables(m._lin, m._V, m._w0_state, m._rec_off)


# ------------------------------------------------------------ one epoch
def _update_pair(st, ja, fa, jb, fb, kappa, lr, l2_v):
    """libffm step on p1 = V[ja, fb] and p2 = V[jb, fa], gradients from current values."""
    p1 = st.V[ja, fb].copy()
    p2 = st.V[jb, fa].copy()
    g1 = l2_v * p1 + kappa * p2
    g2 = l2_v * p2 + kappa * p1
    k = len(p1)
    if st.solver == "sgd":
        st.V[ja, fb] = p1 - lr * g1
        st.V[jb, fa] = p2 - lr * g2
    else:  # row-wise AdaGrad (also the factors' optimizer under ftrl)
        st.GV[ja, fb] += np.sum(g1 * g1) / k
        st.GV[jb, fa] += np.sum(g2 * g2) / k
        st.V[ja, fb] = p1 - lr * g1 / np.sqrt(st.GV[ja, fb])
        st.V[jb, fa] = p2 - lr * g2 / np.sqrt(st.GV[jb, fa])


def train_epoch(X, y, fields, order, st, *, loss, fit_intercept=True, normalize=False,
                learning_rate=0.1, l2_w0=0.0, l2_w=0.0, l2_v=0.0, l1=0.0, ftrl_beta=1.0,
                sample_weight=None):
    """One sequential epoch over rows ``order``, updating ``st`` in place.

    Per sample: prediction from the current parameters; g = dloss/dpred * sw;
    the bias (if fit_intercept), then the linear terms of the row's entries,
    then the pairs (a < b) in row order.  Rows with a non-finite prediction are
    skipped.  ``y`` is real (squared) or in {-1, +1} (logistic).

    Returns (sum of weighted losses before each update, sum of weights, n_bad).
    """
    X = _csr(X)
    fields = np.asarray(fields, dtype=np.int64)
    total_loss = total_w = 0.0
    n_bad = 0
    for i in order:
        cols, x = row_entries(X, i, normalize)
        p = ffm_score_entries(cols, x, fields, st.w0_state[0], st.w, st.V)
        if not np.isfinite(p):
            n_bad += 1
            continue
        sw = 1.0 if sample_weight is None else float(sample_weight[i])
        total_loss += sw * loss_value(p, y[i], loss)
        total_w += sw
        g = sw * loss_dp(p, y[i], loss)
        if fit_intercept:
            _update_bias(st, g, learning_rate, l2_w0, ftrl_beta)
        for a in range(len(cols)):
            _update_linear(st, cols[a], x[a], g, learning_rate, l2_w, l1, ftrl_beta)
        for a in range(len(cols)):
            for b in range(a + 1, len(cols)):
                _update_pair(st, cols[a], fields[cols[a]], cols[b], fields[cols[b]],
                             g * x[a] * x[b], learning_rate, l2_v)
    return total_loss, total_w, n_bad


# ------------------------------------------------------------ per-entry fields
# libffm's / xLearn's definition: each stored entry names its own field, so a
# feature may occur under several fields (even twice in one row).  Rows are
# read as stored (no canonicalisation); fl[a] is the field of entry a.  A row
# holding one (feature, field) pair twice makes a pair of entries step one
# vector twice (the kernel applies both steps in turn); the reference's pair
# step assumes two distinct vectors, so its tests avoid such rows.
def ffm_score_fl(cols, fl, x, w0, w, V):
    """w0 + sum_a w_{j_a} x_a + sum_{a<b} <V[j_a, fl_b], V[j_b, fl_a]> x_a x_b."""
    lin = 0.0
    for a in range(len(cols)):
        lin += float(w[cols[a]]) * x[a]
    pair = 0.0
    for a in range(len(cols)):
        for b in range(a + 1, len(cols)):
            pair += float(np.dot(V[cols[a], fl[b]], V[cols[b], fl[a]])) * x[a] * x[b]
    return float(w0) + lin + pair


def train_epoch_fl(X, y, entry_fields, order, st, *, loss, fit_intercept=True,
                   normalize=False, learning_rate=0.1, l2_w0=0.0, l2_w=0.0, l2_v=0.0, l1=0.0,
                   ftrl_beta=1.0, sample_weight=None):
    """train_epoch with the field of each stored entry of CSR X (as stored)."""
    F = np.asarray(entry_fields, dtype=np.int64)
    total_loss = total_w = 0.0
    n_bad = 0
    for i in order:
        s = X.indptr[i]
        cols, x = row_entries(X, i, normalize)
        fl = F[s:s + len(cols)]
        p = ffm_score_fl(cols, fl, x, st.w0_state[0], st.w, st.V)
        if not np.isfinite(p):
            n_bad += 1
            continue
        sw = 1.0 if sample_weight is None else float(sample_weight[i])
        total_loss += sw * loss_value(p, y[i], loss)
        total_w += sw
        g = sw * loss_dp(p, y[i], loss)
        if fit_intercept:
            _update_bias(st, g, learning_rate, l2_w0, ftrl_beta)
        for a in range(len(cols)):
            _update_linear(st, cols[a], x[a], g, learning_rate, l2_w, l1, ftrl_beta)
        for a in range(len(cols)):
            for b in range(a + 1, len(cols)):
                _update_pair(st, cols[a], fl[a], cols[b], fl[b], g * x[a] * x[b],
                             learning_rate, l2_v)
    return total_loss, total_w, n_bad
