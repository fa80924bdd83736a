"""Train and score a factorization machine on synthetic data, end to end.

    python -m cfm.demo [--rows 200000] [--k 8] [--epochs 10] [--threads N]

Generates CTR-like data with a planted FM (one-hot categorical fields,
Zipf-distributed ids), trains a linear model and an FM, and prints test AUC,
log loss, training time and scoring speed; then saves the FM, loads it back
and checks that the loaded model scores identically.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

import cfm
from cfm._metrics import auc, logloss


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000, help="training rows (test: 25%% more)")
    ap.add_argument("--features", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=8, help="number of factors")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="n_jobs (default: all cores)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    n_test = args.rows // 4
    t = time.perf_counter()
    X, y = cfm.make_fm_classification(args.rows + n_test, n_features=args.features,
                                      n_fields=20, n_factors=4, random_state=args.seed)
    X = X.astype(np.float32)
    Xtr, ytr, Xte, yte = X[:args.rows], y[:args.rows], X[args.rows:], y[args.rows:]
    print(f"cfm {cfm.__version__} (OpenMP: {cfm.openmp_enabled()}); data: {args.rows:,} train / "
          f"{n_test:,} test rows, {X.shape[1]:,} features, {X.nnz // X.shape[0]} non-zeros/row, "
          f"made in {time.perf_counter() - t:.1f}s")
    print(f"{'model':<8} {'fit s':>7} {'rows/s scored':>14} {'test AUC':>9} {'logloss':>8}")
    for name, k in (("linear", 0), (f"FM k={args.k}", args.k)):
        model = cfm.FMClassifier(n_factors=k, n_epochs=args.epochs, n_jobs=args.threads,
                                 random_state=args.seed)
        t = time.perf_counter()
        model.fit(Xtr, ytr)
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        score = model.decision_function(Xte)
        rate = Xte.shape[0] / (time.perf_counter() - t)
        print(f"{name:<8} {fit_s:7.2f} {rate:14,.0f} {auc(yte, score):9.4f} "
              f"{logloss(yte, score):8.4f}")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fm.cfm")
        model.save(path)
        same = np.array_equal(cfm.load(path).decision_function(Xte), score)
        print(f"saved {os.path.getsize(path):,} bytes; reloaded model scores identically: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
