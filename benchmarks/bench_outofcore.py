"""Out-of-core training: peak memory and accuracy of ``fit(path)`` on a large file.

    python benchmarks/bench_outofcore.py [--rows 6500000] [--workdir /tmp/cfm_bench]

Writes (once, reused afterwards) a Criteo-shaped libsvm file of at least 2 GB
(39 one-hot fields, Zipf ids, labels from a planted FM: benchmarks/bench_data.py)
plus a separate in-memory test set from the same planted model, then runs, each
in its own process under ``/usr/bin/time -v`` so that the peak resident memory
(max RSS) of the whole process is measured:

* stream:    ``FMClassifier().fit(path)`` -- the file streamed in blocks;
* cache:     the same from the ``.cfmdata`` binary cache (memory-mapped);
* in-memory: ``load_libsvm(path)`` then ``fit(X, y)`` on the same rows.

and prints a Markdown table: file size, fit time, peak RSS, test AUC.
"""
import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CHILD = r"""
import json, sys, time, numpy as np, scipy.sparse as sp, cfm
from cfm._metrics import auc
mode, path, test, k, epochs, threads, block = sys.argv[1:8]
t = sp.load_npz(test + ".X.npz"); yt = np.load(test + ".y.npy")
# fixed settings (issue 13: a fit that leaves learning_rate / normalize unset
# otherwise chooses them by a race); builds without auto_tune ignore it
FIX = {"auto_tune": False} if "auto_tune" in cfm.FMClassifier().get_params() else {}
m = cfm.FMClassifier(n_factors=int(k), n_epochs=int(epochs), n_jobs=int(threads), random_state=0,
                     **FIX)
t0 = time.perf_counter()
if mode == "in-memory":
    X, y = cfm.load_libsvm(path, n_features=t.shape[1], zero_based=True)
    t1 = time.perf_counter()
    m.fit(X, y)
    load = t1 - t0
else:
    m.fit(path, block_rows=int(block))
    load = 0.0
fit = time.perf_counter() - t0
if t.shape[1] > m.n_features_in_:  # small --rows: the file lacks the largest ids
    t = t[:, :m.n_features_in_]
print(json.dumps({"fit_s": fit, "load_s": load, "auc": auc(yt, m.decision_function(t))}))
"""


def make_data(workdir, rows, test_rows):
    import bench_data as bds
    import cfm

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"criteo_like_{rows}.svm"
    test = workdir / f"criteo_like_{rows}_test"
    if path.exists() and Path(str(test) + ".y.npy").exists():
        return path, test
    import scipy.sparse as sp

    t0 = time.perf_counter()
    tmp = Path(str(path) + ".part")
    block = 500_000
    with open(tmp, "wb") as out:
        for start in range(0, rows, block):
            n = min(block, rows - start)
            X, y, _ = bds.make_criteo_like(n, seed=0, row_seed=1000 + start // block)
            part = workdir / "block.svm"
            cfm.dump_libsvm(X, y, part)
            out.write(part.read_bytes())
            part.unlink()
            print(f"[outofcore] wrote {start + n:,} rows", file=sys.stderr, flush=True)
    tmp.rename(path)
    Xt, yt, _ = bds.make_criteo_like(test_rows, seed=0, row_seed=99)
    sp.save_npz(str(test) + ".X.npz", Xt.tocsr())
    np.save(str(test) + ".y.npy", yt)
    print(f"[outofcore] data written in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    return path, test


def run_child(mode, path, test, args):
    cmd = ["/usr/bin/time", "-v", sys.executable, "-c", CHILD, mode, str(path), str(test),
           str(args.k), str(args.epochs), str(args.threads), str(args.block_rows)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{p.stderr[-3000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    res["max_rss_mb"] = int(rss.group(1)) / 1024 if rss else float("nan")
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=6_500_000, help="rows in the training file")
    ap.add_argument("--test-rows", type=int, default=200_000)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--block-rows", type=int, default=100_000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/cfm_bench"))
    ap.add_argument("--skip-in-memory", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None,
                    help="also write the result rows as JSON (used by run_all.py)")
    args = ap.parse_args(argv)
    if not Path("/usr/bin/time").exists():
        sys.exit("needs /usr/bin/time (Debian package 'time') to measure peak memory")

    path, test = make_data(args.workdir, args.rows, args.test_rows)
    import cfm

    size_gb = path.stat().st_size / 1e9
    t0 = time.perf_counter()
    cache = cfm.convert_to_cache(path)
    conv = time.perf_counter() - t0
    modes = [("stream", path), ("cache", cache)]
    if not args.skip_in_memory:
        modes.append(("in-memory", path))
    rows = []
    for mode, src in modes:
        r = run_child(mode, src, test, args)
        print(f"[outofcore] {mode}: {r}", file=sys.stderr, flush=True)
        rows.append((mode, r))
    lines = [
        "# Out-of-core training (cfm.FMClassifier.fit on a file)",
        "",
        f"- file: {path.name}, {size_gb:.2f} GB libsvm, {args.rows:,} rows x 39 non-zeros; "
        f"cache written in {conv:.1f}s ({Path(cache).stat().st_size / 1e9:.2f} GB)",
        f"- k={args.k}, epochs={args.epochs}, threads={args.threads}, block_rows="
        f"{args.block_rows:,}; test: {args.test_rows:,} rows from the same planted model",
        "- peak memory = max RSS of the whole Python process (/usr/bin/time -v)",
        "",
        "| mode | fit time (s) | of which loading (s) | peak RSS (MB) | test AUC |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode, r in rows:
        lines.append(f"| {mode} | {r['fit_s']:.1f} | {r['load_s']:.1f} | {r['max_rss_mb']:,.0f} | "
                     f"{r['auc']:.4f} |")
    md = "\n".join(lines)
    print(md)
    if args.out:
        args.out.write_text(md + "\n")
    if args.json:
        args.json.write_text(json.dumps({
            "benchmark": "bench_outofcore", "file_gb": size_gb, "rows": args.rows,
            "k": args.k, "epochs": args.epochs, "threads": args.threads,
            "results": [dict(r, mode=mode) for mode, r in rows]}, indent=1))


if __name__ == "__main__":
    main()
