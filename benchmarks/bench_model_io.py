"""Model file benchmark: save / load time and memory of a large FFM.

A Criteo-shaped FFM (``bench_data.make_criteo_like``: ~1.95M features x 39
fields, k=8, float16 table of ~1.5 GB) is fitted for one epoch on
``--rows`` rows (or read from ``--model``, a file saved by an earlier run),
then saved and loaded (full and ``scoring_only``). Reports wall times, the
peak of Python-traced memory (NumPy's allocations included) during the
save, the file size, the growth of the process's peak resident memory
during a load (``VmHWM``, reset before it: the model's tables plus whatever
the load needs besides), a load with the file evicted from the page cache
(``posix_fadvise(DONTNEED)`` on this file only: a cold read from disk), and
checks that the loaded tables are bit-identical.  The saved file is flushed
(``fsync``, not timed) before the loads, which would otherwise compete with
the writeback of the 1.5 GB just written.

    python benchmarks/bench_model_io.py [--rows 200000] [--workdir /tmp/cfm_bench]
    python benchmarks/bench_model_io.py --model /tmp/cfm_bench/keep.cfm --repeat 3

Run it under two versions of cfm (PYTHONPATH) alternately, on the same
``--model`` file, to compare them side by side.
"""
import argparse
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if "PYTHONPATH" not in os.environ:  # else the cfm PYTHONPATH names (to compare versions)
    sys.path.insert(0, str(HERE.parent))

import cfm  # noqa: E402


def _vm(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident size
        return True
    except OSError:
        return False


def _flush(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _evict(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _timed_load(path, **kw):
    base = _vm("VmRSS")
    peak_ok = _reset_peak()
    t = time.perf_counter()
    model = cfm.load(path, **kw)
    secs = time.perf_counter() - t
    grow = (_vm("VmHWM") - base) if peak_ok else float("nan")
    return model, secs, grow


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/cfm_bench"))
    ap.add_argument("--model", type=Path, default=None,
                    help="a model saved by an earlier run (skips the fit)")
    ap.add_argument("--repeat", type=int, default=1, help="rows of figures (same model)")
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.model is not None:
        m = cfm.load(args.model)
        X = None
    else:
        sys.path.insert(0, str(HERE))
        import bench_data as bds

        X, y, fields = bds.make_criteo_like(args.rows, seed=0)[:3]
        fields = np.maximum(fields, 0).astype(np.int32)
        fix = {"auto_tune": False} if "auto_tune" in cfm.FFMClassifier().get_params() else {}
        m = cfm.FFMClassifier(n_factors=8, n_epochs=1, n_jobs=args.threads, **fix,
                              random_state=0).fit(X, y, fields=fields)
    path = args.workdir / f"bench_model_io_{os.getpid()}.cfm"
    print(f"cfm from {os.path.dirname(cfm.__file__)}, load average "
          f"{os.getloadavg()[0]:.2f}")
    print("| FFM table | file | save | peak traced memory during save | load | load peak RSS "
          "growth | load, file not cached | load scoring_only | identical table / scores |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    try:
        for _ in range(args.repeat):
            tracemalloc.start()
            t = time.perf_counter()
            m.save(path)
            t_save = time.perf_counter() - t
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            size = os.path.getsize(path)
            _flush(path)  # not timed: a load must not compete with the save's writeback
            full, t_load, grow = _timed_load(path)
            same = np.array_equal(full._V.view(np.uint16), m._V.view(np.uint16))
            del full
            _evict(path)
            cold, t_cold, _ = _timed_load(path)
            del cold
            lean, t_lean, _ = _timed_load(path, scoring_only=True)
            if X is not None:
                Xs = X[:20000]
                same_scores = np.array_equal(lean.decision_function(Xs),
                                             m.decision_function(Xs))
            else:
                same_scores = "-"
            del lean
            print(f"| {m._V.nbytes / 2**20:,.0f} MiB | {size / 2**20:,.0f} MiB | {t_save:.2f} s "
                  f"| {peak / 2**20:,.0f} MiB | {t_load:.2f} s | {grow / 2**20:,.0f} MiB "
                  f"| {t_cold:.2f} s | {t_lean:.2f} s | {same} / {same_scores} |", flush=True)
    finally:
        if path.exists():
            path.unlink()


if __name__ == "__main__":
    main()
