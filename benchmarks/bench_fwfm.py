"""FwFM vs FM vs FFM (issue 16 item 4): accuracy and speed, side by side in one run.

Models: ``cfm.FMClassifier``, ``cfm.FFMClassifier`` and ``cfm.FwFMClassifier``
with their defaults (``auto_tune``: learning rate, normalize and epochs chosen
from the data where the data can resolve it; FFM's n_factors 4 and float16
storage, FM / FwFM n_factors 8), ``random_state=0``, the same threads.  FM is
given no fields (it has none); FFM and FwFM get the data's fields.

Data
----
* real CTR data from ``../shared/data`` (benchmarks/real_data.py: each raw
  column one field, categorical values one-hot per training fold):
  criteo1tb-day0 (10,000 rows, stratified 5-fold CV), deepctr-criteo (200
  rows, 5 x 5-fold CV), deepctr-avazu (100 rows, 5 x 5-fold CV),
  criteo-xlearn (xLearn's libffm sample, 200 / 200 rows as shipped).
  Metrics on the pooled test predictions of a repeat's folds, averaged over
  repeats.  These sets are small: an AUC difference below about 2 standard
  errors (reported) is noise.
* synthetic: ``bench_data.make_criteo_like_split`` with 39 one-hot fields of
  ``--ids-per-field`` ids (labels from a planted FM; oracle AUC ~0.78),
  ``--rows`` training and ``--test-rows`` test rows.
* planted FwFM (``planted_fwfm``): the same shape (39 one-hot fields, Zipf
  ids, ``--planted-ids`` per field), labels from a planted *field-weighted*
  FM in which only 20% of the pairs of fields interact (r_fg ~ N(0, 1) on
  those, 0 elsewhere): the structure FwFM is for.

Reported per model: test AUC and logloss, fit time (the whole ``fit``, the
race of auto_tune included, as users meet it; the chosen settings), scoring
rows/s on the test rows (cold: first call; warm: best of 3), the model's
parameter bytes; on the synthetic set also the speed of one fixed epoch
(learning_rate 0.1, normalize True: no race) with 1 and ``--threads``
threads.  Load averages are recorded: the machine is shared; compare ratios
within one run.

Example::

    python benchmarks/bench_fwfm.py --out benchmarks/results/RESULTS_fwfm.md
    python benchmarks/bench_fwfm.py --only synthetic --rows 50000
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import cfm  # noqa: E402
import real_data  # noqa: E402

MODELS = {"FM": cfm.FMClassifier, "FFM": cfm.FFMClassifier, "FwFM": cfm.FwFMClassifier}
REAL = ("criteo1tb-day0", "deepctr-criteo", "deepctr-avazu", "criteo-xlearn")


def _loadavg():
    try:
        return "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "n/a"


def _logloss(y, p):
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _auc(y, s):
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def _nbytes(model):
    st = model._state
    return int(sum(getattr(st, a).nbytes for a in ("table", "lin", "V", "R", "R_acc")
                   if isinstance(getattr(st, a, None), np.ndarray)))


def _fit(name, X, y, fields, threads, **params):
    cls = MODELS[name]
    m = cls(n_jobs=threads, random_state=0, **params)
    kw = {} if name == "FM" else {"fields": fields}
    t = time.perf_counter()
    m.fit(X, y, **kw)
    return m, time.perf_counter() - t


def _score(m, X):
    """(probabilities, cold seconds, warm seconds: best of 3)."""
    t = time.perf_counter()
    p = m.predict_proba(X)[:, 1]
    cold = time.perf_counter() - t
    warm = cold
    for _ in range(2):
        t = time.perf_counter()
        m.predict_proba(X)
        warm = min(warm, time.perf_counter() - t)
    return p, cold, warm


def _settings(m):
    bp = getattr(m, "best_params_", {}) or {}
    return (f"lr {bp.get('learning_rate')}, norm {bp.get('normalize')}, "
            f"{bp.get('n_epochs')} ep ({bp.get('auto', '')})")


def real(threads, names=REAL):
    rows = []
    for ds in real_data.load_all(names=list(names)):
        try:
            reps = ds.repeats()
        except FileNotFoundError as exc:
            print(f"skip {ds.name}: {exc}", file=sys.stderr)
            continue
        ys = np.concatenate([s.y_test for s in reps[0]])
        se = real_data.auc_standard_error(ys)
        for name in MODELS:
            aucs, lls, fit_s, score_s, n_test, n_fit, settings = [], [], 0.0, 0.0, 0, 0, ""
            for folds in reps:
                yt, pt = [], []
                for s in folds:
                    m, t = _fit(name, s.X_train, s.y_train, s.fields, threads)
                    p, _, warm = _score(m, s.X_test)
                    fit_s += t
                    score_s += warm
                    n_test += s.X_test.shape[0]
                    n_fit += 1
                    yt.append(s.y_test)
                    pt.append(p)
                    settings = _settings(m)
                yt, pt = np.concatenate(yt), np.concatenate(pt)
                aucs.append(_auc(yt, pt))
                lls.append(_logloss(yt, pt))
            rows.append(dict(data=ds.name, model=name, auc=np.mean(aucs),
                             auc_sd=np.std(aucs) if len(aucs) > 1 else 0.0, se=se,
                             logloss=np.mean(lls), fit=fit_s / n_fit,
                             rps=n_test / score_s, fits=n_fit, settings=settings))
            print(rows[-1], file=sys.stderr)
        ds.release()
    return rows


def planted_fwfm(n_rows, n_test, n_fields=39, ids_per_field=1000, k=8, density=0.2, seed=0):
    """(X, y, X_test, y_test, fields): one-hot rows (Zipf ids per field) and
    labels from a planted FwFM whose field pairs interact with probability
    ``density`` (see the module docstring); base rate about 0.25."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    V = rng.normal(0, 1, (n_fields * ids_per_field, k)) / np.sqrt(k)
    R = np.triu(rng.normal(0, 1, (n_fields, n_fields)) * (rng.random((n_fields, n_fields))
                                                          < density), 1)
    p = 1.0 / np.arange(1, ids_per_field + 1) ** 1.1
    p /= p.sum()
    n = n_rows + n_test
    cols = rng.choice(ids_per_field, (n, n_fields), p=p) + np.arange(n_fields) * ids_per_field
    raw = np.empty(n)
    for i in range(0, n, 20_000):
        S = V[cols[i:i + 20_000]]                      # (rows, fields, k)
        raw[i:i + 20_000] = np.einsum("nfk,ngk,fg->n", S, S, R)
    logit = 2.0 * (raw - raw.mean()) / raw.std() - 1.4
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    X = sp.csr_matrix((np.ones(cols.size, dtype=np.float32), cols.ravel(),
                       np.arange(0, cols.size + 1, n_fields)),
                      shape=(n, n_fields * ids_per_field))
    fields = np.repeat(np.arange(n_fields, dtype=np.int32), ids_per_field)
    return X[:n_rows], y[:n_rows], X[n_rows:], y[n_rows:], fields


def planted(threads, n_rows, n_test, ids_per_field):
    X, y, Xt, yt, fields = planted_fwfm(n_rows, n_test, ids_per_field=ids_per_field)
    return _with_defaults(threads, X, y, Xt, yt, fields), float(y.mean())


def _with_defaults(threads, X, y, Xt, yt, fields):
    """Each model fitted with its defaults: accuracy, fit time, scoring speed."""
    rows = []
    for name in MODELS:
        m, t = _fit(name, X, y, fields, threads)
        p, cold, warm = _score(m, Xt)
        rows.append(dict(model=name, auc=_auc(yt, p), logloss=_logloss(yt, p), fit=t,
                         cold=len(yt) / cold, warm=len(yt) / warm, bytes=_nbytes(m),
                         settings=_settings(m)))
        print(rows[-1], file=sys.stderr)
    return rows


def _warm_up(threads):
    """One tiny fit of each model first: the process's first fit starts the
    worker threads and loads the kernels (not what a fold of data costs)."""
    X = np.random.default_rng(0).random((300, 6))
    for name in MODELS:
        _fit(name, X, np.arange(300) % 2, np.arange(6), threads, n_epochs=1)


def synthetic(threads, n_rows, n_test, ids_per_field):
    import bench_data as bds

    X, y, Xt, yt, fields = bds.make_criteo_like_split(n_rows, n_test, ids_per_field=ids_per_field,
                                                      seed=0)
    rows, speed = _with_defaults(threads, X, y, Xt, yt, fields), []
    for nt in sorted({1, threads}):
        for name in MODELS:
            m, t = _fit(name, X, y, fields, nt, n_epochs=1, learning_rate=0.1, normalize=True,
                        auto_tune=False)
            _, _, warm = _score(m, Xt)
            speed.append(dict(model=name, threads=nt, train=n_rows / t, score=n_test / warm))
            print(speed[-1], file=sys.stderr)
    return rows, speed, (X.shape, int(X.nnz))


def _md(real_rows, syn, plant, args, load0, load1):
    out = ["# FwFM vs FM vs FFM (issue 16 item 4)", "",
           f"Command: `python benchmarks/bench_fwfm.py {' '.join(sys.argv[1:])}`  ",
           f"Threads: {args.threads}; load average before {load0}, after {load1} "
           "(2-core machine shared with other work: timings are indicative, compare "
           "ratios within this run).", "",
           "Defaults everywhere (auto_tune; FM/FwFM n_factors 8, FFM 4 with float16 "
           "storage), random_state 0.  FwFM: one factor vector per feature (FM's table) "
           "and a learned weight per pair of fields.", ""]
    if real_rows:
        out += ["## Real CTR data (../shared/data)", "",
                "| data | model | test AUC | AUC sd over repeats | AUC s.e. (test size) | "
                "logloss | fit s (mean per fold) | scoring rows/s | settings (last fold) |",
                "|---|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in real_rows:
            out.append(f"| {r['data']} | {r['model']} | {r['auc']:.4f} | {r['auc_sd']:.4f} | "
                       f"{r['se']:.3f} | {r['logloss']:.4f} | {r['fit']:.3f} | "
                       f"{r['rps']:,.0f} | {r['settings']} |")
        out.append("")
    if syn is not None:
        rows, speed, (shape, nnz) = syn
        out += [f"## Synthetic Criteo-shaped set ({args.rows:,} train / {args.test_rows:,} "
                f"test rows, {shape[1]:,} columns, 39 fields, {nnz / shape[0]:.0f} nnz/row)", "",
                "| model | test AUC | logloss | fit s (defaults, race included) | "
                "scoring rows/s cold | warm | parameter MB | settings |",
                "|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in rows:
            out.append(f"| {r['model']} | {r['auc']:.4f} | {r['logloss']:.4f} | {r['fit']:.1f} | "
                       f"{r['cold']:,.0f} | {r['warm']:,.0f} | {r['bytes'] / 2**20:.1f} | "
                       f"{r['settings']} |")
        out += ["", "One fixed epoch (learning_rate 0.1, normalize True, no race):", "",
                "| model | threads | train rows/s | scoring rows/s (warm) |",
                "|---|---:|---:|---:|"]
        for r in speed:
            out.append(f"| {r['model']} | {r['threads']} | {r['train']:,.0f} | "
                       f"{r['score']:,.0f} |")
        out.append("")
    if plant is not None:
        prow, base = plant
        out += [f"## Planted FwFM ({args.rows:,} train / {args.test_rows:,} test rows, 39 "
                f"one-hot fields of {args.planted_ids:,} ids, 20% of field pairs interacting, "
                f"base rate {base:.2f})", "",
                "| model | test AUC | logloss | fit s (defaults, race included) | "
                "scoring rows/s warm | parameter MB | settings |",
                "|---|---:|---:|---:|---:|---:|---|"]
        for r in prow:
            out.append(f"| {r['model']} | {r['auc']:.4f} | {r['logloss']:.4f} | {r['fit']:.1f} | "
                       f"{r['warm']:,.0f} | {r['bytes'] / 2**20:.1f} | {r['settings']} |")
        out.append("")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--test-rows", type=int, default=50_000)
    ap.add_argument("--ids-per-field", type=int, default=10_000)
    ap.add_argument("--planted-ids", type=int, default=1000)
    ap.add_argument("--only", choices=("real", "synthetic", "planted"), default=None)
    ap.add_argument("--out", default=None, help="markdown file to write")
    args = ap.parse_args()
    load0 = _loadavg()
    _warm_up(args.threads)
    real_rows = real(args.threads) if args.only in (None, "real") else []
    syn = synthetic(args.threads, args.rows, args.test_rows, args.ids_per_field) \
        if args.only in (None, "synthetic") else None
    plant = planted(args.threads, args.rows, args.test_rows, args.planted_ids) \
        if args.only in (None, "planted") else None
    text = _md(real_rows, syn, plant, args, load0, _loadavg())
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
