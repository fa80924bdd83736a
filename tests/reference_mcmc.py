"""Plain NumPy reference of the ALS / MCMC kernels (src/cfm/_mcmc.pyx).

Dense, O(n * d * k) per parameter and written from the model definition:
every conditional is computed from predictions recomputed from scratch (no
residual or q caches), so it checks the kernels' cache bookkeeping too.  The
random draws reproduce the kernels' counter-based streams (splitmix64 keyed by
seed, sweep, kind, index; Box-Muller; Robert's tail sampler).
"""
import math

import numpy as np

MASK = (1 << 64) - 1
KIND_W0, KIND_W, KIND_V0 = 0, 1, 2
LATENT = 1 << 20


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


class Stream:
    """The kernel's per-draw stream: stream_key then splitmix64 steps."""

    def __init__(self, seed, sweep, kind, index):
        seed, sweep, kind, index = int(seed), int(sweep), int(kind), int(index)
        s = mix64((seed ^ ((sweep * 0x9E3779B97F4A7C15) & MASK)) & MASK)
        s = mix64(s ^ ((kind * 0xC2B2AE3D27D4EB4F) & MASK))
        self.state = mix64(s ^ ((index * 0x165667B19E3779F9) & MASK))

    def uniform(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        return (mix64(self.state) >> 11) * (1.0 / 9007199254740992.0)

    def normal(self):
        u1 = 1.0 - self.uniform()
        u2 = self.uniform()
        return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)

    def tail_normal(self, a):
        """x ~ N(0, 1) given x > a."""
        if a <= 0.5:
            for _ in range(10000):
                x = self.normal()
                if x > a:
                    return x
            return a
        astar = 0.5 * (a + math.sqrt(a * a + 4.0))
        for _ in range(10000):
            u1 = 1.0 - self.uniform()
            u2 = self.uniform()
            x = a - math.log(u1) / astar
            if u2 <= math.exp(-0.5 * (x - astar) ** 2):
                return x
        return a


def predict(X, w0, w, V):
    """Dense FM prediction (X already scaled)."""
    q = X @ V
    return w0 + X @ w + 0.5 * ((q ** 2).sum(1) - (X ** 2) @ (V ** 2).sum(1))


def scale_rows(X, normalize):
    X = np.asarray(X, dtype=np.float64)
    if not normalize:
        return X
    nrm = np.sqrt((X ** 2).sum(1))
    nrm[nrm == 0] = 1.0
    return X / nrm[:, None]


def sweep(X, target, w0, w, V, group, alpha, reg0, mu0, mu_w, lam_w, mu_v, lam_v,
          fit_w0, do_sample, seed, sweep_idx, cast=np.float64, sw=None):
    """One sequential sweep (w0, w_0..w_{d-1}, then v_.0, v_.1, ...) drawing
    each parameter from its conditional (or taking its mean).  ``target``:
    the regression targets or the latent probit targets.  Returns new
    (w0, w, V); ``cast`` rounds stored w / V like the kernel's table dtype;
    ``sw``: sample weights (each row's likelihood precision is alpha * sw)."""
    w = w.astype(np.float64).copy()
    V = V.astype(np.float64).copy()
    n, d = X.shape
    k = V.shape[1]
    sw = np.ones(n) if sw is None else np.asarray(sw, dtype=np.float64)

    def draw(h, theta, lam, mu, kind, idx):
        e = predict(X, w0, w, V) - target
        prec = lam + alpha * (sw * h @ h)
        if not prec > 0:
            return 0.0
        mean = (alpha * (sw * h @ (theta * h - e)) + lam * mu) / prec
        if do_sample:
            return mean + Stream(seed, sweep_idx, kind, idx).normal() / math.sqrt(prec)
        return mean

    if fit_w0:
        w0 = draw(np.ones(n), w0, reg0, mu0, KIND_W0, 0)
    for j in range(d):
        w[j] = cast(draw(X[:, j], w[j], lam_w[group[j]], mu_w[group[j]], KIND_W, j))
    for f in range(k):
        for j in range(d):
            q = X @ V[:, f]
            h = X[:, j] * (q - X[:, j] * V[j, f])
            V[j, f] = cast(draw(h, V[j, f], lam_v[f, group[j]], mu_v[f, group[j]],
                                KIND_V0 + f, j))
    return w0, w, V


def latent_targets(pred, y_pm, seed, sweep_idx, do_sample=True):
    """Probit latent targets: N(pred, 1) truncated to the label's side, or
    their expectations."""
    from scipy.stats import norm

    z = np.empty_like(pred)
    for i, (p, yi) in enumerate(zip(pred, y_pm)):
        if do_sample:
            st = Stream(seed, sweep_idx, LATENT, i)
            z[i] = p + st.tail_normal(-p) if yi > 0 else p - st.tail_normal(p)
        else:
            a = -p if yi > 0 else p
            mills = norm.pdf(a) / norm.sf(a)
            z[i] = p + mills if yi > 0 else p - mills
    return z


def hyper_draw(rng, e_sq, n, w, V, group, n_groups, mu_w, mu_v, regression,
               alpha_0=1.0, beta_0=1.0, gamma_0=1.0, mu_0=0.0):
    """libFM's draw_alpha, draw_w_lambda, draw_w_mu, draw_v_lambda, draw_v_mu
    (one group at a time, written out), consuming ``rng`` like the driver."""
    alpha = 1.0
    if regression:
        alpha = rng.gamma((alpha_0 + n) / 2.0, 1.0 / ((gamma_0 + e_sq) / 2.0))
    counts = np.array([(group == g).sum() for g in range(n_groups)], dtype=np.float64)

    def normal_gamma(values, mu):
        rate = np.array([(gamma_0 + beta_0 * (mu[g] - mu_0) ** 2
                          + ((values[group == g] - mu[g]) ** 2).sum()) / 2.0
                         for g in range(n_groups)])
        lam = rng.gamma((alpha_0 + counts + 1.0) / 2.0, 1.0 / rate)
        mean = np.array([(values[group == g].sum() + beta_0 * mu_0) / (counts[g] + beta_0)
                         for g in range(n_groups)])
        mu_new = mean + rng.standard_normal(n_groups) / np.sqrt((counts + beta_0) * lam)
        return lam, mu_new

    lam_w, mu_w = normal_gamma(w, mu_w)
    lam_v = np.zeros_like(mu_v)
    mu_v_new = np.zeros_like(mu_v)
    for f in range(V.shape[1]):
        lam_v[f], mu_v_new[f] = normal_gamma(V[:, f], mu_v[f])
    return alpha, lam_w, mu_w, lam_v, mu_v_new
