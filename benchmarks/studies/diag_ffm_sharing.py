"""Diagnostic: how much of FFM's 2-thread training time goes to sharing hot features.

Hogwild training writes each row's feature blocks in place; frequent (Zipf-head) features
appear in both threads' rows, so their cache lines bounce between the cores. This script
times one epoch (static schedule: thread 0 takes the first half of the rows, thread 1 the
second half) on a Criteo-shaped set twice:

* shared:   the data as generated (both halves use the same features);
* disjoint: the second half's feature ids are moved to a copy of the feature space, so the
            two threads never touch the same parameters (same work, no sharing).

The gap between the two 2-thread times is the cost of the shared lines.

    python benchmarks/studies/diag_ffm_sharing.py [--rows 400000]
"""
import argparse
import sys
import time
import types
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: bench_data
import bench_data as bds  # noqa: E402

import cfm  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    X, y, fields = bds.make_criteo_like(args.rows, seed=0)
    fields = np.maximum(fields, 0).astype(np.int32)
    n, nf = X.shape
    yy = np.where(y > 0, 1.0, -1.0)
    print("| data | n_jobs=1 epoch (s) | n_jobs=2 epoch (s) | speed-up |\n|---|---:|---:|---:|")
    for mode in ("shared", "disjoint"):
        X2 = X.copy()
        if mode == "disjoint":
            X2.indices = X2.indices.astype(np.int64)
            X2.indices[X2.indptr[n // 2]:] += nf
        X2 = sp.csr_matrix((X2.data, X2.indices, X2.indptr), shape=(n, 2 * nf))
        m = cfm.FFMClassifier(n_factors=8, n_epochs=1, n_jobs=2, random_state=0,
                              shuffle=False).fit(X2, y, fields=np.concatenate([fields, fields]))
        Xc = types.SimpleNamespace(data=X2.data, indices=X2.indices,
                                   indptr=X2.indptr.astype(np.int64), n_rows=n)
        order = np.arange(n, dtype=np.int64)
        med = {}
        for nj in (1, 2):
            ts = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                m._train_epoch(Xc, yy, np.empty(0), order, 0.05, nj)
                ts.append(time.perf_counter() - t)
            med[nj] = float(np.median(ts))
        print(f"| {mode} | {med[1]:.2f} | {med[2]:.2f} | {med[1] / med[2]:.2f}x |")


if __name__ == "__main__":
    main()
