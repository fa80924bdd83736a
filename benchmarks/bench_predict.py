"""Batch scoring benchmark: ``cfm predict`` (the CLI) vs xLearn's predict, file in, file out.

    python benchmarks/bench_predict.py [--rows 1000000] [--threads 2] [--repeats 3]
                                       [--workdir /tmp/cfm_bench/predict]
                                       [--out benchmarks/results/RESULTS_predict.md]

What it does, in one run:

1. Data (generated once, cached in ``--workdir``): Criteo-shaped synthetic
   click data (``bench_data.make_criteo_like``: 39 one-hot fields, Zipf ids,
   labels from a planted FM) written as text: a training sample
   (``--train-rows``) and a ``--rows`` test file, as libsvm (FM, LR: 1.95M
   columns) and as libffm (FFM: 5,000 ids per field, 195k columns, so that the
   FFM models -- n_features x 39 fields x k -- stay at ~0.3 GB instead of
   2.7 GB).  The 2x / 4x files for the memory rows are the 1x file repeated.
2. Models of the same kind trained by cfm (``cfm train``, the CLI) and by
   xLearn on the same training file: LR, FM k=8 and FFM k=8, ``--epochs``
   epochs, ``--threads`` threads.  Both libraries read libsvm ids as written
   (cfm: ``--zero-based true``).
3. Timings, each a separate process timed from the parent (interpreter
   start-up, imports, model loading, reading, parsing, scoring and writing
   the output text file all included), runs of the two libraries interleaved,
   median of ``--repeats``:

   * cfm:   ``python -m cfm predict MODEL TEST -o OUT --threads T -q``
   * xLearn: a Python process doing ``xl.create_fm()`` (``create_ffm`` /
     ``create_linear``), ``setTest(TEST)``, ``setSigmoid()``,
     ``_set_Param({"nthread": T})``, ``predict(MODEL, OUT)``.  xLearn converts
     a text file to its binary format (``TEST.bin``) before predicting and
     keeps that file: the "xLearn" column deletes it before every run (a new
     file to score, the batch-scoring case); the "xLearn, warm .bin" column
     keeps it from the previous run (only possible when the same file is
     scored again).

   Peak resident memory of each process comes from ``/usr/bin/time -v``
   (max RSS), for the 1x, 2x and 4x files.
4. Where cfm's time goes: ``model.predict_file`` in this process reports the
   busy time of its three pipeline stages (read + parse, score, format +
   write; they run concurrently), and a ``python -c 'import cfm;
   cfm.load(MODEL)'`` process measures start-up + model loading.
5. Sanity: test AUC of each output file (the models are comparable), and,
   when ``cfm.load_xlearn`` exists, ``cfm predict`` on xLearn's own model
   (TXT) compared with xLearn's predictions (max abs difference, same
   ranking).

Nothing is hard-coded: the Markdown table is produced from the measurements.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("USER", "bench")  # xLearn aborts without it

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

XL_PREDICT = r"""
import os, sys
os.environ.setdefault("USER", "bench")
import xlearn as xl
kind, model, test, out, threads, log = sys.argv[1:7]
m = {"lr": xl.create_linear, "fm": xl.create_fm, "ffm": xl.create_ffm}[kind]()
m.setTest(test)
m.setSigmoid()
m._set_Param({"nthread": int(threads), "log": log})
m.predict(model, out)
"""

XL_TRAIN = r"""
import os, sys
os.environ.setdefault("USER", "bench")
import xlearn as xl
kind, train, model, txt, k, epochs, threads, log = sys.argv[1:9]
m = {"lr": xl.create_linear, "fm": xl.create_fm, "ffm": xl.create_ffm}[kind]()
m.setTrain(train)
if txt != "-":
    m.setTXTModel(txt)
p = {"task": "binary", "epoch": int(epochs), "nthread": int(threads), "log": log}
if kind != "lr":
    p["k"] = int(k)
m.fit(p, model)
"""


def log(msg):
    print(f"[bench_predict] {msg}", file=sys.stderr, flush=True)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------

def make_data(work, train_rows, rows):
    import cfm
    import bench_data as bds

    work.mkdir(parents=True, exist_ok=True)
    specs = {"svm": dict(ids_per_field=50_000), "ffm": dict(ids_per_field=5_000)}
    paths = {}
    for ext, kw in specs.items():
        for name, n, seed in (("train", train_rows, 1), ("test", rows, 2)):
            path = work / f"{name}_{n}.{ext}"
            paths[(name, ext)] = path
            if path.exists():
                continue
            t0 = time.perf_counter()
            part = Path(str(path) + ".part")
            tmp = work / f"block.{ext}"
            with open(part, "wb") as out:
                for s in range(0, n, 250_000):
                    X, y, fields = bds.make_criteo_like(min(250_000, n - s), seed=0,
                                                        row_seed=1000 * seed + s // 250_000, **kw)
                    if ext == "svm":
                        cfm.dump_libsvm(X, y, tmp)
                    else:
                        cfm.dump_libffm(X, y, fields, tmp)
                    out.write(tmp.read_bytes())
            tmp.unlink()
            part.rename(path)
            log(f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB, "
                f"{time.perf_counter() - t0:.0f}s)")
    return paths


def scaled(path, factor):
    """``path`` repeated ``factor`` times (cached)."""
    if factor == 1:
        return path
    out = path.with_name(f"{path.stem}_x{factor}{path.suffix}")
    if not out.exists():
        part = Path(str(out) + ".part")
        with open(part, "wb") as f:
            for _ in range(factor):
                with open(path, "rb") as g:
                    shutil.copyfileobj(g, f, 64 << 20)
        part.rename(out)
    return out


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------

def timed_process(cmd, env=None):
    """Run ``cmd`` under /usr/bin/time -v; return (wall seconds, max RSS MB, CPU seconds
    (user + system), stderr)."""
    full = ["/usr/bin/time", "-v"] + cmd if os.path.exists("/usr/bin/time") else cmd
    t0 = time.perf_counter()
    p = subprocess.run(full, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"command failed ({p.returncode}): {' '.join(map(str, cmd))}\n"
                           f"{p.stderr[-3000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    cpu = sum(float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)",
                                           p.stderr)) or float("nan")
    return dt, (int(m.group(1)) / 1024 if m else float("nan")), cpu, p.stderr


def cfm_env():
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def cfm_train(kind, train, model, args):
    cmd = [sys.executable, "-m", "cfm", "train", str(train), "-o", str(model), "--model", kind,
           "-e", str(args.epochs), "--threads", str(args.threads), "--seed", "0", "-q",
           "--zero-based", "true"]
    if kind != "lr":
        cmd += ["-k", str(args.k)]
    return timed_process(cmd, cfm_env())[0]


def cfm_predict(model, test, out, args):
    cmd = [sys.executable, "-m", "cfm", "predict", str(model), str(test), "-o", str(out),
           "--threads", str(args.threads), "-q"]
    return timed_process(cmd, cfm_env())[:3]


def xl_log(work):
    """xLearn writes 3 log files per run: keep them in one folder, emptied per run."""
    d = work / "xl_logs"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    return str(d / "xl")


def xl_train(kind, train, model, txt, args, work):
    cmd = [sys.executable, "-c", XL_TRAIN, kind, str(train), str(model), str(txt or "-"),
           str(args.k), str(args.epochs), str(args.threads), xl_log(work)]
    return timed_process(cmd)[0]


def xl_predict(kind, model, test, out, args, work, warm):
    bin_path = Path(str(test) + ".bin")
    if not warm and bin_path.exists():
        bin_path.unlink()
    cmd = [sys.executable, "-c", XL_PREDICT, kind, str(model), str(test), str(out),
           str(args.threads), xl_log(work)]
    return timed_process(cmd)[:3]


def load_time(model, repeats):
    """Start-up (+ model loading) of a process configured as `cfm predict` is
    (no scikit-learn import, see cfm/_compat.py); medians."""
    env = dict(cfm_env(), CFM_SKLEARN="0")
    code = ("import cfm, cfm.cli, cfm.scoring, sys; "
            "cfm.load(sys.argv[1], scoring_only=True)")  # as cfm predict loads it
    t_import = median([timed_process([sys.executable, "-c", "import cfm, cfm.cli, cfm.scoring"],
                                     env)[0] for _ in range(repeats)])
    t_load = median([timed_process([sys.executable, "-c", code, str(model)], env)[0]
                     for _ in range(repeats)])
    return t_import, t_load


def stage_times(model, test, out, threads):
    import cfm

    m = cfm.load(model, scoring_only=True)  # as cfm predict loads it
    st = m.predict_file(test, out, n_jobs=threads)
    return st


def auc_of(path, labels):
    from cfm._metrics import auc

    p = np.loadtxt(path, dtype=np.float64, ndmin=1)
    return auc(labels, p), p


def labels_of(test):
    import cfm

    return np.concatenate([y for _, y, _ in cfm.iter_blocks(test, block_rows=1 << 20,
                                                             zero_based=True,
                                                             n_features=None)])


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--train-rows", type=int, default=200_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--models", default="lr,fm,ffm")
    ap.add_argument("--scales", default="1,2,4",
                    help="file sizes (multiples of --rows) for the FM memory rows")
    ap.add_argument("--no-warm-bin", action="store_true", help="skip the xLearn warm .bin runs")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/cfm_bench/predict"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "RESULTS_predict.md")
    args = ap.parse_args(argv)

    from bench_fm import machine_info

    work = args.workdir
    paths = make_data(work, args.train_rows, args.rows)
    kinds = [k for k in args.models.split(",") if k]
    scales = [int(s) for s in args.scales.split(",")]
    try:
        from cfm.xlearn import load_xlearn  # noqa: F401  (issue 5, item 3)
        have_import = True
    except ImportError:
        have_import = False

    header = machine_info(args.threads)
    rows, breakdown, mem_rows, interop = [], [], [], []
    for kind in kinds:
        ext = "ffm" if kind == "ffm" else "svm"
        train, test = paths[("train", ext)], paths[("test", ext)]
        cm, xm, xtxt = work / f"cfm_{kind}.cfm", work / f"xl_{kind}.model", work / f"xl_{kind}.txt"
        t_cfm_fit = cfm_train(kind, train, cm, args)
        t_xl_fit = xl_train(kind, train, xm, xtxt if have_import else None, args, work)
        log(f"{kind}: trained cfm in {t_cfm_fit:.1f}s, xLearn in {t_xl_fit:.1f}s")
        y = labels_of(test)
        for scale in (scales if kind == "fm" else [1]):
            tf = scaled(test, scale)
            n_rows = args.rows * scale
            c_t, c_m, x_t, x_m, w_t, w_m, c_c, x_c = [], [], [], [], [], [], [], []
            for r in range(args.repeats):
                dt, rss, cpu = cfm_predict(cm, tf, work / "out_cfm.txt", args)
                c_t.append(dt)
                c_m.append(rss)
                c_c.append(cpu)
                dt, rss, cpu = xl_predict(kind, xm, tf, work / "out_xl.txt", args, work,
                                          warm=False)
                x_t.append(dt)
                x_m.append(rss)
                x_c.append(cpu)
                if not args.no_warm_bin and scale == 1:
                    dt, rss, _ = xl_predict(kind, xm, tf, work / "out_xl.txt", args, work,
                                            warm=True)
                    w_t.append(dt)
                    w_m.append(rss)
                log(f"{kind} x{scale} run {r + 1}: cfm {c_t[-1]:.2f}s {c_m[-1]:.0f} MB, "
                    f"xLearn {x_t[-1]:.2f}s {x_m[-1]:.0f} MB"
                    + (f", warm .bin {w_t[-1]:.2f}s" if w_t else ""))
            bin_path = Path(str(tf) + ".bin")
            if bin_path.exists():
                bin_path.unlink()
            mem_rows.append((kind, scale, n_rows, tf.stat().st_size, median(c_t), max(c_m),
                             median(x_t), max(x_m)))
            if scale != 1:
                continue
            auc_c, p_c = auc_of(work / "out_cfm.txt", y)
            auc_x, p_x = auc_of(work / "out_xl.txt", y)
            rows.append({"kind": kind, "file": tf.name, "mb": tf.stat().st_size / 1e6,
                         "rows": n_rows, "cfm": median(c_t), "cfm_all": c_t,
                         "xl": median(x_t), "xl_all": x_t,
                         "xl_warm": median(w_t) if w_t else float("nan"),
                         "cfm_rss": max(c_m), "xl_rss": max(x_m),
                         "cfm_cpu": median(c_c), "xl_cpu": median(x_c),
                         "auc_cfm": auc_c, "auc_xl": auc_x,
                         "cfm_model_mb": cm.stat().st_size / 1e6,
                         "xl_model_mb": xm.stat().st_size / 1e6})
            t_import, t_load = load_time(cm, args.repeats)
            st = stage_times(cm, tf, work / "out_stage.txt", args.threads)
            breakdown.append((kind, t_import, t_load, st))
            if have_import and xtxt.exists():
                out = work / "out_cfm_xlmodel.txt"
                cmd = [sys.executable, "-m", "cfm", "predict", str(xtxt), str(tf), "-o",
                       str(out), "--threads", str(args.threads), "-q", "--zero-based", "true"]
                if kind == "ffm":
                    # the TXT model does not record fields: take them from the scored file
                    # (the time includes reading them)
                    cmd += ["--xlearn-fields", str(tf)]
                dt = timed_process(cmd, cfm_env())[0]
                p_i = np.loadtxt(out, ndmin=1)
                from bench_xlearn_import import inversions
                from scipy.stats import spearmanr
                inv = inversions(p_i, p_x)
                interop.append((kind, dt, float(np.abs(p_i - p_x).max()),
                                float(spearmanr(p_i, p_x)[0]), float(inv.max()),
                                int((inv > 1.5e-6).sum())))
    md = render(rows, mem_rows, breakdown, interop, header, args, have_import)
    args.out.write_text(md)
    print(md)


def render(rows, mem_rows, breakdown, interop, header, args, have_import):
    cmd = "python benchmarks/bench_predict.py" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in (("rows", args.rows), ("threads", args.threads),
                                                     ("repeats", args.repeats))
    )
    out = ["# Batch scoring benchmark: `cfm predict` vs xLearn predict (file in, file out)", "",
           f"Produced by `{cmd}`.", ""] + header + [
        f"- Models trained on {args.train_rows:,} rows, k={args.k}, {args.epochs} epochs, "
        f"{args.threads} threads; every timing is a fresh process (start-up, imports, model "
        f"loading, parsing, scoring, writing the text output), median of {args.repeats}, the "
        "libraries' runs interleaved.", ""]
    out += ["| model | test file | rows | cfm predict (s) | xLearn predict (s) | speed-up | "
            "xLearn, warm .bin (s) | cfm peak RSS (MB) | xLearn peak RSS (MB) | AUC cfm / xLearn |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        out.append(
            f"| {r['kind'].upper()} | {r['file']} ({r['mb']:.0f} MB) | {r['rows']:,} | "
            f"**{r['cfm']:.2f}** | {r['xl']:.2f} | **{r['xl'] / r['cfm']:.1f}x** | "
            f"{r['xl_warm']:.2f} | {r['cfm_rss']:.0f} | {r['xl_rss']:.0f} | "
            f"{r['auc_cfm']:.4f} / {r['auc_xl']:.4f} |")
    out += ["", "CPU time (user + system, median) of the same processes -- less sensitive than "
            "wall time to the other processes sharing the machine: " + "; ".join(
                f"{r['kind'].upper()} cfm {r['cfm_cpu']:.2f} s vs xLearn {r['xl_cpu']:.2f} s "
                f"({r['xl_cpu'] / r['cfm_cpu']:.1f}x)" for r in rows) + "."]
    out += ["", "All runs (s): " + "; ".join(
        f"{r['kind']}: cfm {', '.join(f'{t:.2f}' for t in r['cfm_all'])} / xLearn "
        f"{', '.join(f'{t:.2f}' for t in r['xl_all'])}" for r in rows), ""]
    out += ["Model files: " + ", ".join(
        f"{r['kind']} cfm {r['cfm_model_mb']:.0f} MB / xLearn {r['xl_model_mb']:.0f} MB"
        for r in rows) + ".", ""]
    out += ["## Peak memory vs file size", "",
            "| model | rows | file MB | cfm predict (s) | cfm peak RSS (MB) | xLearn predict (s) | "
            "xLearn peak RSS (MB) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for kind, scale, n, size, ct, cm, xt, xm in mem_rows:
        out.append(f"| {kind.upper()} | {n:,} | {size / 1e6:.0f} | {ct:.2f} | {cm:.0f} | "
                   f"{xt:.2f} | {xm:.0f} |")
    out += ["", "## Where cfm's time goes", "",
            "`model.predict_file` in-process (the engine behind `cfm predict`): busy time of "
            "each pipeline stage -- they overlap, so the wall time is less than their sum -- "
            "plus the start-up of a process importing what `cfm predict` imports, and the same "
            "followed by `cfm.load(MODEL)`.", "",
            "| model | wall (s) | read + parse busy (s) | score busy (s) | format + write busy "
            "(s) | rows/s | start-up: python + import (s) | start-up + load model (s) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for kind, ti, tl, st in breakdown:
        out.append(f"| {kind.upper()} | {st['seconds']:.2f} | {st['read_parse_s']:.2f} | "
                   f"{st['score_s']:.2f} | {st['write_s']:.2f} | "
                   f"{st['n_rows'] / st['seconds']:,.0f} | {ti:.2f} | {tl:.2f} |")
    out += [""]
    if interop:
        out += ["## xLearn models scored by cfm (`cfm.load_xlearn`)", "",
                "| model | cfm predict on xLearn's TXT model (s) | max abs diff vs xLearn output | "
                "Spearman | max inversion | rows inverted beyond xLearn's precision |",
                "|---|---:|---:|---:|---:|---:|"]
        for kind, dt, diff, rho, inv, n_inv in interop:
            out.append(f"| {kind.upper()} | {dt:.2f} | {diff:.2e} | {rho:.6f} | {inv:.1e} | "
                       f"{n_inv} |")
        out += ["", "*Max inversion*: the largest gap between xLearn's printed probabilities "
                "of two rows that cfm orders the other way round (0: cfm's order agrees with "
                "xLearn's wherever xLearn's output tells the rows apart). xLearn prints 6 "
                "decimals, so a gap of 1e-6 is one step of its output; *rows inverted beyond "
                "xLearn's precision* counts rows, in cfm's order, more than 1.5e-6 below a row "
                "cfm ranks lower (0 = identical ranking up to xLearn's output precision).", ""]
    elif not have_import:
        out += ["(`cfm.load_xlearn` not available in this build: the xLearn-model interop "
                "rows are skipped.)", ""]
    if hasattr(os, "getloadavg"):
        out += [f"Load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}.", ""]
    out += ["Notes:",
            "- xLearn writes probabilities with 6 decimals; cfm with 9 significant digits "
            "(`--precision`).",
            "- 'xLearn' deletes `TEST.bin` before each run: xLearn first converts the text "
            "file to its binary format (and writes it next to the input), then predicts. "
            "'warm .bin' reuses that file, which exists only if the same file was scored "
            "before; cfm never writes next to its input (`cfm convert` makes a reusable "
            "binary cache explicitly).",
            "- The 2x / 4x files repeat the 1x file; peak RSS of `cfm predict` stays flat "
            "(blocks of a few MB in flight + the model), xLearn's grows with the file.",
            ""]
    return "\n".join(out)


if __name__ == "__main__":
    main()
