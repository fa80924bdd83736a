"""Side-by-side speed of two builds of cfm (e.g. the previous main against a change), in one run.

    python benchmarks/bench_ab.py --old /path/to/previous/checkout            # this checkout = new
    python benchmarks/bench_ab.py --old A --new B --cases fit_fm,predict_fm --pairs 5

The figures that bench_fm.py (training) and bench_predict.py (batch scoring) quote, timed for two
builds in alternation on the same prepared data, so that a restructuring or a refactor can be
held to "no figure more than 3% slower" on this shared, noisy machine:

* ``fit_fm`` / ``fit_ffm``: ``FMClassifier`` / ``FFMClassifier(n_factors=8, n_epochs=5,
  n_jobs=2, random_state=0).fit`` on bench_fm.py's synthetic set (1M Criteo-shaped rows, 39
  one-hot fields; ``--rows``), in-process fit time;
* ``decision_fm`` / ``decision_ffm``: ``decision_function`` on 1M rows with a model trained on
  200k rows: the first (cold) call of a fresh process and the median of 3 warm calls;
* ``predict_lr`` / ``predict_fm`` / ``predict_ffm``: ``cfm predict MODEL TEST -o OUT --threads 2``
  on bench_predict.py's 1M-row libsvm / libffm files, whole process (start-up, loading, parsing,
  scoring, writing), as a shell sees it.

Every measurement runs in a fresh process whose ``PYTHONPATH`` is the build under test; each
round runs old and new back to back, the order alternating between rounds.  Prints (and writes
``--out``) the median per build, new/old ratios and every run, with the load average.  Model files
are written by the old build and loaded by both (which also checks that the new build reads the
old one's files).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CASES = ("fit_fm", "fit_ffm", "decision_fm", "decision_ffm", "predict_lr", "predict_fm",
         "predict_ffm")


def _env(repo):
    return dict(os.environ, PYTHONPATH=f"{repo}{os.pathsep}{HERE}", OMP_NUM_THREADS="2")


def _run(repo, code, *args):
    p = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                       text=True, env=_env(repo))
    if p.returncode != 0:
        raise RuntimeError(f"{repo}: worker failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


_DATASETS = """
try:
    import bench_data as bds
except ImportError:
    import datasets as bds
"""

PREPARE = _DATASETS + r"""
import sys, time
from pathlib import Path
import numpy as np, scipy.sparse as sp, cfm
w, rows = Path(sys.argv[1]), int(sys.argv[2])
w.mkdir(parents=True, exist_ok=True)
if not (w / "train.npz").exists():
    X, y, Xt, yt, fields = bds.make_criteo_like_split(rows, 200_000, n_factors=8, seed=0)
    sp.save_npz(w / "train.npz", X); np.save(w / "train_y.npy", y); np.save(w / "fields.npy", fields)
for ext, ids in (("svm", 50_000), ("ffm", 5_000)):
    if (w / f"test.{ext}").exists():
        continue
    X, y, fields = bds.make_criteo_like(200_000, seed=0, row_seed=1, ids_per_field=ids)
    if ext == "svm":
        for kind, k in (("lr", 0), ("fm", 8)):
            cfm.FMClassifier(n_factors=k, n_epochs=3, n_jobs=2, random_state=0).fit(X, y).save(
                w / f"{kind}.cfm")
        Xt, yt, _ = bds.make_criteo_like(1_000_000, seed=0, row_seed=2, ids_per_field=ids)
        sp.save_npz(w / "test_svm.npz", Xt)
        cfm.dump_libsvm(Xt, yt, w / "test.svm.part")
    else:
        cfm.FFMClassifier(n_factors=8, n_epochs=3, n_jobs=2, random_state=0).fit(
            X, y, fields=fields).save(w / "ffm.cfm")
        Xt, yt, ft = bds.make_criteo_like(1_000_000, seed=0, row_seed=2, ids_per_field=ids)
        sp.save_npz(w / "test_ffm.npz", Xt)
        cfm.dump_libffm(Xt, yt, ft, w / "test.ffm.part")
    (w / f"test.{ext}.part").rename(w / f"test.{ext}")
print("{}")
"""

FIT = r"""
import sys, time, json
from pathlib import Path
import numpy as np, scipy.sparse as sp, cfm
w, kind = Path(sys.argv[1]), sys.argv[2]
X = sp.load_npz(w / "train.npz").tocsr(); y = np.load(w / "train_y.npy")
# fixed settings (issue 13: a fit that leaves learning_rate / normalize unset
# otherwise chooses them by a race); builds without auto_tune ignore it
FIX = {"auto_tune": False} if "auto_tune" in cfm.FMClassifier().get_params() else {}
kw = dict(n_factors=8, n_epochs=5, n_jobs=2, random_state=0, **FIX)
t0 = time.perf_counter()
if kind == "fm":
    cfm.FMClassifier(**kw).fit(X, y)
else:
    cfm.FFMClassifier(**kw).fit(X, y, fields=np.load(w / "fields.npy"))
print(json.dumps({"s": time.perf_counter() - t0}))
"""

DECISION = r"""
import sys, time, json, statistics
from pathlib import Path
import scipy.sparse as sp, cfm
w, kind = Path(sys.argv[1]), sys.argv[2]
m = cfm.load(w / f"{kind}.cfm")
X = sp.load_npz(w / ("test_ffm.npz" if kind == "ffm" else "test_svm.npz")).tocsr()
t0 = time.perf_counter(); m.decision_function(X); cold = time.perf_counter() - t0
warm = []
for _ in range(3):
    t0 = time.perf_counter(); m.decision_function(X); warm.append(time.perf_counter() - t0)
print(json.dumps({"s": statistics.median(warm), "cold": cold}))
"""


def _predict(repo, w, kind):
    test = w / ("test.ffm" if kind == "ffm" else "test.svm")
    cmd = [sys.executable, "-m", "cfm", "predict", str(w / f"{kind}.cfm"), str(test), "-o",
           str(w / f"out_{kind}.txt"), "--threads", "2", "-q"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(repo))
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{repo}: cfm predict failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return {"s": dt}


def measure(case, repo, w):
    kind = case.split("_", 1)[1]
    if case.startswith("fit_"):
        return _run(repo, FIT, w, kind)
    if case.startswith("decision_"):
        return _run(repo, DECISION, w, kind)
    return _predict(repo, w, kind)


def _med(xs):
    return statistics.median(xs) if xs else float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", required=True, type=Path, help="checkout of the previous build")
    ap.add_argument("--new", type=Path, default=REPO, help="checkout of the new build (default: this)")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--pairs", type=int, default=3, help="rounds (each runs old and new once)")
    ap.add_argument("--rows", type=int, default=1_000_000, help="training rows of fit_*")
    ap.add_argument("--work", type=Path, default=Path("/tmp/cfm_bench/ab"))
    ap.add_argument("--out", type=Path, default=None, help="also write the Markdown report here")
    args = ap.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            ap.error(f"unknown case {c!r} (one of {', '.join(CASES)})")
    w = args.work / f"rows{args.rows}"
    t0 = time.perf_counter()
    _run(args.old, PREPARE, w, args.rows)
    print(f"data ready in {w} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    load0 = os.getloadavg()[0]
    res = {c: {"old": [], "new": [], "old_cold": [], "new_cold": []} for c in cases}
    for r in range(args.pairs):
        for c in cases:
            order = ("old", "new") if (r % 2 == 0) else ("new", "old")
            for which in order:
                m = measure(c, getattr(args, which), w)
                res[c][which].append(m["s"])
                if "cold" in m:
                    res[c][which + "_cold"].append(m["cold"])
                print(f"round {r + 1} {c} {which}: {m['s']:.3f} s"
                      + (f" (cold {m['cold']:.3f} s)" if "cold" in m else ""), file=sys.stderr)
    load1 = os.getloadavg()[0]
    lines = ["# A/B: new build against the old one, side by side", "",
             f"old: `{args.old}`  new: `{args.new}`  ({args.pairs} rounds, order alternating; "
             f"{platform.node()}, {os.cpu_count()} CPUs, load average {load0:.2f} at the start, "
             f"{load1:.2f} at the end; {time.strftime('%Y-%m-%d %H:%M')})", "",
             "| case | old median (s) | new median (s) | new/old | old runs | new runs |",
             "|---|---:|---:|---:|---|---|"]
    for c in cases:
        o, n = _med(res[c]["old"]), _med(res[c]["new"])
        lines.append(f"| {c} | {o:.3f} | {n:.3f} | {n / o:.3f} | "
                     f"{', '.join(f'{x:.3f}' for x in res[c]['old'])} | "
                     f"{', '.join(f'{x:.3f}' for x in res[c]['new'])} |")
        if res[c]["old_cold"]:
            oc, nc = _med(res[c]["old_cold"]), _med(res[c]["new_cold"])
            lines.append(f"| {c} (cold first call) | {oc:.3f} | {nc:.3f} | {nc / oc:.3f} | "
                         f"{', '.join(f'{x:.3f}' for x in res[c]['old_cold'])} | "
                         f"{', '.join(f'{x:.3f}' for x in res[c]['new_cold'])} |")
    lines += ["", f"Command: `python benchmarks/bench_ab.py --old {args.old} --pairs {args.pairs}"
              + (f" --cases {args.cases}" if args.cases != ",".join(CASES) else "") + "`", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
