"""Text parsing benchmark: cfm.load_libsvm / load_libffm / convert_to_cache vs
scikit-learn's load_svmlight_file and xLearn's text-to-binary conversion.

Data: a Criteo-shaped file from ``bench_data.make_criteo_like`` (39 fields, one
id per field, ~1.95M columns); the first 13 fields carry real values (float32
written with '%.9g', like log-scaled counts) and the other 26 the value 1.
Written one-based (as most libsvm files are) in libsvm and in libffm format,
once, into ``--workdir`` (default /tmp/cfm_bench) and reused.

Timings (median of ``--repeats`` runs, same dtype float32, ``--threads``
threads for cfm and xLearn):

* ``cfm.load_libsvm`` vs ``sklearn.datasets.load_svmlight_file``; the outputs
  are checked to be identical (values bit for bit, indices, row offsets,
  shape, labels);
* ``cfm.load_libffm`` vs xLearn's conversion of the same libffm text to its
  ``.bin`` cache: the "Time cost for reading problem" that xLearn logs in an
  FFM fit (epoch=1) started without a .bin (xLearn's own timer around its
  parser and binary writer; the training epoch is not included);
* ``cfm.convert_to_cache`` (text -> .cfmdata) and ``cfm.load_cache``, with
  structure checks only and with the default checksum verification.

Usage::

    python benchmarks/bench_parse.py [--size-mb 520] [--threads 2] [--repeats 3]
"""
import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("USER", "bench")  # xLearn aborts at import time without $USER

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_data as bds  # noqa: E402
from bench_fm import capture_fds  # noqa: E402

import cfm  # noqa: E402


def timed(fn, *a, **k):
    t = time.perf_counter()
    out = fn(*a, **k)
    return time.perf_counter() - t, out


def make_files(workdir, size_mb, threads):
    svm = workdir / f"criteo_{size_mb}mb.svm"
    ffm = workdir / f"criteo_{size_mb}mb.ffm"
    if svm.exists() and ffm.exists():
        return svm, ffm
    rows_per_mb = 2_300  # ~430 bytes per row
    n_rows = int(size_mb * rows_per_mb)
    print(f"generating {n_rows:,} rows ...", flush=True)
    tmp_svm, tmp_ffm = svm.with_suffix(".tmp1"), ffm.with_suffix(".tmp2")
    block = 500_000
    with open(tmp_svm, "wb") as fs, open(tmp_ffm, "wb") as ff:
        for s in range(0, n_rows, block):
            n = min(block, n_rows - s)
            X, y, fields = bds.make_criteo_like(n, row_seed=1000 + s // block)
            rng = np.random.default_rng(s)
            numeric = fields[X.indices] < 13
            X.data[numeric] = np.log1p(rng.exponential(20.0, numeric.sum())).astype(np.float32)
            part = workdir / "part.tmp"
            cfm.dump_libsvm(X, y, part, zero_based=False, n_jobs=threads)
            fs.write(part.read_bytes())
            cfm.dump_libffm(X, y, fields, part, n_jobs=threads)
            ff.write(part.read_bytes())
            part.unlink()
    tmp_svm.rename(svm)
    tmp_ffm.rename(ffm)
    return svm, ffm


def identical(a, b):
    (X1, y1), (X2, y2) = a, b
    return (X1.shape == X2.shape and np.array_equal(X1.indptr, X2.indptr)
            and np.array_equal(X1.indices, X2.indices)
            and np.array_equal(X1.data.view(np.uint32), X2.data.view(np.uint32))
            and np.array_equal(y1.view(np.uint64), y2.view(np.uint64)))


def median(xs):
    return statistics.median(xs)


def xlearn_convert(ffm, threads, repeats, workdir):
    try:
        import xlearn as xl
    except Exception as exc:  # noqa: BLE001
        return None, f"xlearn not importable ({exc})"
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(dir=workdir) as d:
            src = Path(d) / "train.ffm"
            os.link(ffm, src) if hasattr(os, "link") else shutil.copy(ffm, src)
            log = Path(d) / "out.txt"
            m = xl.create_ffm()
            m.setTrain(str(src))
            with capture_fds(log):
                m.fit({"task": "binary", "epoch": 1, "k": 4, "nthread": threads,
                       "log": str(Path(d) / "xl")}, str(Path(d) / "model.out"))
            text = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace"))
            if "NOT found" not in text:
                return None, "xLearn found an existing .bin"
            v = re.findall(r"Time cost for reading problem: ([0-9.]+)", text)
            if not v:
                return None, "could not read xLearn's timing"
            times.append(float(v[-1]))
    return median(times), ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/cfm_bench"))
    ap.add_argument("--size-mb", type=int, default=520)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-sklearn", action="store_true")
    ap.add_argument("--skip-xlearn", action="store_true")
    ap.add_argument("--json", type=Path, default=None,
                    help="also write the result rows as JSON (used by run_all.py)")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    svm, ffm = make_files(args.workdir, args.size_mb, args.threads)
    mb_svm = svm.stat().st_size / 1e6
    mb_ffm = ffm.stat().st_size / 1e6
    nt, rep = args.threads, args.repeats
    rows = []

    t_cfm = []
    for _ in range(rep):
        dt, res = timed(cfm.load_libsvm, svm, dtype=np.float32, n_jobs=nt)
        t_cfm.append(dt)
    X, y = res
    print(f"cfm.load_libsvm: {median(t_cfm):.2f}s  shape={X.shape} nnz={X.nnz:,}", flush=True)
    rows.append(("cfm.load_libsvm", mb_svm, median(t_cfm), ""))
    if not args.skip_sklearn:
        from sklearn.datasets import load_svmlight_file
        t_sk = []
        for _ in range(rep):
            dt, res_sk = timed(load_svmlight_file, str(svm), dtype=np.float32)
            t_sk.append(dt)
            print(f"  sklearn run: {dt:.2f}s", flush=True)
        same = identical((X, y), res_sk)
        del res_sk
        rows.append(("sklearn.load_svmlight_file", mb_svm, median(t_sk),
                     f"cfm speed-up {median(t_sk) / median(t_cfm):.1f}x; output identical: "
                     f"{same}"))
    del X, y, res

    t_ffm = []
    for _ in range(rep):
        dt, res = timed(cfm.load_libffm, ffm, dtype=np.float32, n_jobs=nt)
        t_ffm.append(dt)
    del res
    rows.append(("cfm.load_libffm", mb_ffm, median(t_ffm), ""))
    if not args.skip_xlearn:
        t_xl, note = xlearn_convert(ffm, nt, rep, args.workdir)
        if t_xl is not None:
            note = f"cfm.load_libffm speed-up {t_xl / median(t_ffm):.1f}x"
            rows.append(("xLearn text -> .bin (FFM fit, 'reading problem')", mb_ffm, t_xl, note))
        else:
            rows.append(("xLearn", mb_ffm, float("nan"), note))

    dst = args.workdir / "bench.cfmdata"
    t_conv = []
    for _ in range(rep):
        dt, _ = timed(cfm.convert_to_cache, svm, dst, n_jobs=nt)
        t_conv.append(dt)
    rows.append(("cfm.convert_to_cache (libsvm)", mb_svm, median(t_conv),
                 f"cache {dst.stat().st_size / 1e6:.0f} MB"))
    dt, (Xc, yc, _) = timed(cfm.load_cache, dst, verify_checksums=False)
    rows.append(("cfm.load_cache (memmap, structure checks)", dst.stat().st_size / 1e6, dt, ""))
    del Xc, yc
    cfm.data._VERIFIED.clear()  # checksums are verified once per process and file
    dt, (Xc, yc, _) = timed(cfm.load_cache, dst)
    rows.append(("cfm.load_cache (default: + checksums)", dst.stat().st_size / 1e6, dt, ""))
    del Xc, yc
    dst.unlink()

    print()
    print(f"# Parsing benchmark ({nt} threads, median of {rep}; {os.cpu_count()} CPUs)")
    print()
    print("| task | input MB | seconds | MB/s | notes |")
    print("|---|---:|---:|---:|---|")
    for name, mb, sec, note in rows:
        rate = mb / sec if sec == sec and sec > 0 else float("nan")
        print(f"| {name} | {mb:.0f} | {sec:.2f} | {rate:.0f} | {note} |")
    if args.json:
        import json
        doc = {"benchmark": "bench_parse", "threads": nt, "repeats": rep,
               "rows": [{"task": name, "input_mb": mb, "seconds": sec,
                         "mb_s": mb / sec if sec == sec and sec > 0 else float("nan"),
                         "notes": note} for name, mb, sec, note in rows]}
        args.json.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
