"""Multiclass FM (issue 16 item 2): softmax FM vs one-vs-rest, and the parameter sharing.

Data: MovieLens 100K, the official ua split (ua.base 90,570 ratings / ua.test
9,430), the rating 1..5 as 5 classes.  Two encodings (benchmarks/real_data.py):
``ua`` one-hot user + item (2,625 columns); ``ua-side`` adds the user's age
bucket, gender, occupation and the item's genres (7 fields, 2,679 columns).

Part 1 -- cfm, side by side in one process, ``n_jobs=1`` (fit time = wall time
of ``fit``, median of ``--repeats`` fits run round-robin over the methods; the
accuracy / log loss of the first fit, identical in every repeat under the
fixed seed):

* ``softmax``: ``cfm.FMClassifier()`` with its defaults (the race of
  ``auto_tune`` chooses learning rate, normalize and epochs on a stratified
  15% holdout, then refits);
* ``ovr``: ``sklearn.multiclass.OneVsRestClassifier(cfm.FMClassifier())``,
  5 binary FMs with their defaults (each runs its own race); probabilities are
  the 5 sigmoids normalised to sum 1 (scikit-learn's rule);
* ``softmax-fixed`` / ``ovr-fixed``: the same with fixed settings
  (learning_rate 0.1, normalize False, 10 epochs, auto_tune off): the cost of
  one model of each kind without the race;
* ``ffm-softmax`` / ``ffm-ovr``: the same two with ``cfm.FFMClassifier(fields=
  the set's fields)`` (``ua``: user, item; ``ua-side``: 7 fields) and its
  defaults (a softmax FFM: per-class field-aware factors, float32 tables; the
  binary FFMs of one-vs-rest keep the binary default dtype, float16 on CPUs
  with F16C);
* context: ``softmax-linear`` (n_factors=0: multinomial logistic regression),
  ``regression-rounded`` (``cfm.FMRegressor()`` defaults, prediction rounded
  to the nearest rating in 1..5: accuracy only), ``majority`` (the most
  frequent training rating).

The machine is shared (other sessions' load; the load average is in the
report): the minimum of the round-robin repeats is the least disturbed
figure, the median shows the spread.

Part 2 -- parameter sharing (``--sharing``), in PyTorch so that every
variant has the same optimiser (Adagrad, lr 0.1, initial accumulator 1 as
cfm's, batches of 128 with the loss summed over the batch, seeded)
and only the model differs; no L2; 10 epochs on 85% of ua.base, the epoch
of the lowest log loss on the other 15% is the one whose ua.test accuracy and
log loss are reported):

* ``independent`` (cfm's choice): per-class w0, w and V (C x k factors per
  feature), score_c = w0_c + <w_c, x> + sum_{i<j} <v_ic, v_jc> x_i x_j;
* ``shared-V + projection``: one V (k factors per feature) and a per-class
  projection p_c of its per-factor pairwise sums q_f(x) = 1/2 [(sum_i v_if
  x_i)^2 - sum_i v_if^2 x_i^2]: score_c = w0_c + <w_c, x> + <p_c, q(x)>
  (k = 8, and k = 40: as many factor parameters as independent with k = 8);
* ``shared-V``: one V and no projection: the pairwise term is the same for
  every class and cancels in the softmax (multinomial logistic regression
  plus a term that cannot matter; shown to make the point).

Run: ``python benchmarks/bench_multiclass.py --out benchmarks/results/RESULTS_multiclass.md``
(``--sharing`` needs torch; ``--quick``: the ``ua`` set only, one repeat).
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import cfm  # noqa: E402
import real_data  # noqa: E402

CLASSES = np.arange(1, 6)


def load(side):
    d = real_data.default_data_dir()
    split = real_data.build_ml100k(d, ["ua"], side=side)[0]
    return (split.X_train.tocsr(), split.y_train.astype(int), split.X_test.tocsr(),
            split.y_test.astype(int), split.fields)


def mlogloss(y, proba):
    idx = np.searchsorted(CLASSES, y)
    p = np.clip(proba[np.arange(len(y)), idx], 1e-15, 1.0)
    return float(-np.mean(np.log(p)))


FIXED = dict(learning_rate=0.1, normalize=False, n_epochs=10, auto_tune=False)


def methods(fields):
    from sklearn.multiclass import OneVsRestClassifier

    def clf(**kw):
        return cfm.FMClassifier(random_state=0, n_jobs=1, **kw)

    def ffm(**kw):
        return cfm.FFMClassifier(random_state=0, n_jobs=1, fields=fields, **kw)

    return {
        "softmax": lambda: clf(),
        "ovr": lambda: OneVsRestClassifier(clf()),
        "softmax-fixed": lambda: clf(**FIXED),
        "ovr-fixed": lambda: OneVsRestClassifier(clf(**FIXED)),
        "softmax-linear": lambda: clf(n_factors=0),
        "ffm-softmax": lambda: ffm(),
        "ffm-ovr": lambda: OneVsRestClassifier(ffm()),
    }


def run_cfm(makers, data, repeats):
    """Fit every method ``repeats`` times, round-robin (so that a change of
    the machine's load hits every method alike); scores of the first fit."""
    Xtr, ytr, Xte, yte = data[:4]
    times = {name: [] for name in makers}
    models = {}
    for _ in range(repeats):
        for name, make in makers.items():
            m = make()
            t0 = time.perf_counter()
            m.fit(Xtr, ytr)
            times[name].append(time.perf_counter() - t0)
            models.setdefault(name, m)
    rows = []
    for name, model in models.items():
        proba = model.predict_proba(Xte)
        pred = CLASSES[proba.argmax(axis=1)]
        est = getattr(model, "estimators_", [model])
        how = "; ".join(sorted({str(e.best_params_.get("auto")) for e in est}))
        epochs = "/".join(str(e.best_params_["n_epochs"]) for e in est)
        rows.append({"method": name, "accuracy": float(np.mean(pred == yte)),
                     "logloss": mlogloss(yte, proba), "fit_s": float(np.median(times[name])),
                     "fit_s_min": float(np.min(times[name])), "fit_s_first": times[name][0],
                     "settings": f"{how}; epochs {epochs}"})
    return rows


def run_context(data):
    Xtr, ytr, Xte, yte = data[:4]
    out = []
    t0 = time.perf_counter()
    reg = cfm.FMRegressor(random_state=0, n_jobs=1).fit(Xtr, ytr.astype(float))
    t = time.perf_counter() - t0
    pred = np.clip(np.rint(reg.predict(Xte)), 1, 5)
    out.append({"method": "regression-rounded", "accuracy": float(np.mean(pred == yte)),
                "logloss": float("nan"), "fit_s": t, "fit_s_first": t, "fit_s_min": t,
                "settings": f"FMRegressor defaults ({reg.best_params_['auto']})"})
    counts = np.bincount(np.searchsorted(CLASSES, ytr), minlength=5)
    prior = counts / counts.sum()
    out.append({"method": "majority", "accuracy": float(np.mean(yte == CLASSES[counts.argmax()])),
                "logloss": mlogloss(yte, np.tile(prior, (len(yte), 1))), "fit_s": 0.0,
                "fit_s_first": 0.0, "fit_s_min": 0.0, "settings": "training class frequencies"})
    return out


# ------------------------------------------------------------ part 2: torch
def padded(X):
    """CSR rows as (index, value) arrays padded with value 0."""
    n = X.shape[0]
    nnz = np.diff(X.indptr)
    m = int(nnz.max())
    idx = np.zeros((n, m), np.int64)
    val = np.zeros((n, m), np.float32)
    for i in range(n):
        a, b = X.indptr[i], X.indptr[i + 1]
        idx[i, :b - a] = X.indices[a:b]
        val[i, :b - a] = X.data[a:b]
    return idx, val


def run_sharing(data, epochs=10, lr=0.1, batch=128, seed=0):
    import torch

    torch.set_num_threads(1)
    Xtr, ytr, Xte, yte = data[:4]
    n_feat, C = Xtr.shape[1], 5
    # a seeded 15% of the training rows chooses the epoch (test rows never do)
    rng = np.random.default_rng(seed)
    val = np.zeros(len(ytr), bool)
    val[rng.permutation(len(ytr))[:int(0.15 * len(ytr))]] = True
    itr, vtr = map(torch.from_numpy, padded(Xtr[~val]))
    iva, vva = map(torch.from_numpy, padded(Xtr[val]))
    ite, vte = map(torch.from_numpy, padded(Xte))
    ytr_t = torch.from_numpy(np.searchsorted(CLASSES, ytr[~val]))
    yva = ytr[val]

    class SoftmaxFM(torch.nn.Module):
        def __init__(self, mode, k):
            super().__init__()
            self.mode, self.k = mode, k
            self.w0 = torch.nn.Parameter(torch.zeros(C))
            self.w = torch.nn.Parameter(torch.zeros(n_feat, C))
            width = C * k if mode == "independent" else k
            self.V = torch.nn.Parameter(0.03 * torch.randn(n_feat, width))
            if mode == "shared-proj":
                self.P = torch.nn.Parameter(torch.randn(C, k))

        def forward(self, idx, val):
            x = val.unsqueeze(-1)
            lin = (self.w[idx] * x).sum(1)                       # (B, C)
            v = self.V[idx] * x                                  # (B, m, width)
            s, sq = v.sum(1), (v * v).sum(1)
            q = 0.5 * (s * s - sq)                               # (B, width)
            if self.mode == "independent":
                pair = q.view(-1, C, self.k).sum(-1)
            elif self.mode == "shared-proj":
                pair = q @ self.P.t()
            else:
                pair = q.sum(-1, keepdim=True).expand(-1, C)
            return self.w0 + lin + pair

    def proba(model, idx, val):
        with torch.no_grad():
            return torch.softmax(model(idx, val), -1).numpy().astype(np.float64)

    variants = [("independent", 8), ("shared-proj", 8), ("shared-proj", 40), ("shared", 8)]
    out = []
    for mode, k in variants:
        torch.manual_seed(seed)
        model = SoftmaxFM(mode, k)
        opt = torch.optim.Adagrad(model.parameters(), lr=lr, initial_accumulator_value=1.0)
        gen = torch.Generator().manual_seed(seed)
        n_params = sum(p.numel() for p in model.parameters())
        best, t_train = None, 0.0
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            perm = torch.randperm(len(ytr_t), generator=gen)
            for b in range(0, len(perm), batch):
                rows = perm[b:b + batch]
                # summed over the batch: each row's gradient as in a per-sample step
                loss = torch.nn.functional.cross_entropy(model(itr[rows], vtr[rows]),
                                                         ytr_t[rows], reduction="sum")
                opt.zero_grad()
                loss.backward()
                opt.step()
            t_train += time.perf_counter() - t0
            v_loss = mlogloss(yva, proba(model, iva, vva))
            if best is None or v_loss < best[0]:
                p = proba(model, ite, vte)
                best = (v_loss, epoch, float(np.mean(CLASSES[p.argmax(1)] == yte)),
                        mlogloss(yte, p))
        out.append({"method": f"{mode} k={k}", "accuracy": best[2], "logloss": best[3],
                    "fit_s": t_train, "params": n_params, "best_epoch": best[1],
                    "val_logloss": best[0]})
    return out


# ------------------------------------------------------------ report
def table(rows, cols):
    head = "| " + " | ".join(c for c, _ in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    lines = [head, sep]
    for r in rows:
        lines.append("| " + " | ".join(f(r) for _, f in cols) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="write the Markdown report here")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sharing", action="store_true", help="part 2 (needs torch)")
    args = ap.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    sets = [("ua", False)] if args.quick else [("ua", False), ("ua-side", True)]
    load0 = os.getloadavg()
    t_start = time.perf_counter()
    parts = []
    for name, side in sets:
        data = load(side)
        rows = run_cfm(methods(data[4]), data, repeats)
        rows += run_context(data)
        for r in rows:
            print(f"{name:8s} {r['method']:20s} acc {r['accuracy']:.4f} "
                  f"logloss {r['logloss']:.4f} fit {r['fit_s']:.2f}s", file=sys.stderr)
        soft = {r["method"]: r for r in rows}
        def ratio(a, b):
            return (f"{soft[a]['fit_s_min'] / soft[b]['fit_s_min']:.2f}x (min), "
                    f"{soft[a]['fit_s'] / soft[b]['fit_s']:.2f}x (median)")
        parts.append(f"### {name}: {data[0].shape[0]:,} training / {data[2].shape[0]:,} test "
                     f"ratings, {data[0].shape[1]:,} columns\n\n" + table(rows, [
                         ("method", lambda r: r["method"]),
                         ("accuracy", lambda r: f"{r['accuracy']:.4f}"),
                         ("multi-class log loss", lambda r: "-" if np.isnan(r["logloss"])
                          else f"{r['logloss']:.4f}"),
                         (f"fit s (min of {repeats})", lambda r: f"{r['fit_s_min']:.2f}"),
                         ("fit s (median)", lambda r: f"{r['fit_s']:.2f}"),
                         ("fit s (first)", lambda r: f"{r['fit_s_first']:.2f}"),
                         ("settings", lambda r: r["settings"])])
                     + f"\n\nFit time one-vs-rest / softmax: {ratio('ovr', 'softmax')} with "
                     f"the defaults (races included), {ratio('ovr-fixed', 'softmax-fixed')} "
                     f"with fixed settings; FFM: {ratio('ffm-ovr', 'ffm-softmax')} with the "
                     "defaults.\n")
    if args.sharing:
        data = load(False)
        rows = run_sharing(data)
        for r in rows:
            print(f"sharing  {r['method']:20s} acc {r['accuracy']:.4f} "
                  f"logloss {r['logloss']:.4f} fit {r['fit_s']:.2f}s", file=sys.stderr)
        parts.append("### Parameter sharing (PyTorch, same optimiser; ua)\n\n" + table(rows, [
            ("model", lambda r: r["method"]),
            ("parameters", lambda r: f"{r['params']:,}"),
            ("best epoch (validation)", lambda r: str(r["best_epoch"])),
            ("validation log loss", lambda r: f"{r['val_logloss']:.4f}"),
            ("accuracy", lambda r: f"{r['accuracy']:.4f}"),
            ("multi-class log loss", lambda r: f"{r['logloss']:.4f}"),
            (f"fit s ({10} epochs)", lambda r: f"{r['fit_s']:.1f}")]) + "\n")
    load1 = os.getloadavg()
    cmd = "python benchmarks/bench_multiclass.py " + " ".join(argv if argv is not None
                                                              else sys.argv[1:])
    report = (f"# Multiclass FM and FFM: softmax vs one-vs-rest (issue 16 item 2)\n\n"
              f"Produced by `{cmd.strip()}` ({time.perf_counter() - t_start:.0f} s; load "
              f"average {load0[0]:.2f} at the start, {load1[0]:.2f} at the end, on 2 cores; "
              f"n_jobs=1 everywhere). MovieLens 100K ua split, rating 1..5 as 5 classes. "
              f"See the script's docstring for the methods.\n\n" + "\n".join(parts))
    if args.out:
        Path(args.out).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
