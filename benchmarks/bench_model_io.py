"""Model file benchmark: save / load time and temporary memory of a large FFM.

A Criteo-shaped FFM (``datasets.make_criteo_like``: ~1.95M features x 39
fields, k=8, float16 table of ~1.5 GB) is fitted for one epoch on
``--rows`` rows, then saved and loaded (full and ``scoring_only``). Reports
wall times, the peak of Python-traced memory (NumPy's allocations included)
during the save, the file size, and checks that the loaded tables are
bit-identical.

    python benchmarks/bench_model_io.py [--rows 200000] [--workdir /tmp/cfm_bench]
"""
import argparse
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import cfm  # noqa: E402
import datasets as bds  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/cfm_bench"))
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    X, y, fields = bds.make_criteo_like(args.rows, seed=0)[:3]
    fields = np.maximum(fields, 0).astype(np.int32)
    m = cfm.FFMClassifier(n_factors=8, n_epochs=1, n_jobs=args.threads, random_state=0).fit(
        X, y, fields=fields)
    path = args.workdir / "bench_model_io.cfm"
    tracemalloc.start()
    t = time.perf_counter()
    m.save(path)
    t_save = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    size = os.path.getsize(path)
    t = time.perf_counter()
    full = cfm.load(path)
    t_load = time.perf_counter() - t
    t = time.perf_counter()
    lean = cfm.load(path, scoring_only=True)
    t_lean = time.perf_counter() - t
    same = np.array_equal(full._V.view(np.uint16), m._V.view(np.uint16))
    Xs = X[:20000]
    same_scores = np.array_equal(lean.decision_function(Xs), m.decision_function(Xs))
    path.unlink()
    print(f"| FFM table | file | save | peak traced memory during save | load | load "
          f"scoring_only | identical table / scores |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    print(f"| {m._V.nbytes / 2**20:,.0f} MiB | {size / 2**20:,.0f} MiB | {t_save:.2f} s | "
          f"{peak / 2**20:,.0f} MiB | {t_load:.2f} s | {t_lean:.2f} s | {same} / {same_scores} |")


if __name__ == "__main__":
    main()
