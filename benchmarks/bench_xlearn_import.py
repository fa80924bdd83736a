"""xLearn model import: do imported models rank rows exactly as xLearn does?

For each xLearn model kind (LR, FM, FFM; binary task, xLearn's default
instance-wise normalisation unless ``--no-norm``) this script

1. trains xLearn on a Criteo-shaped synthetic training file
   (``bench_data.make_criteo_like``, 39 one-hot fields), saving the TXT model
   (``setTXTModel``);
2. scores a large test file (``--rows``, default 1M) with xLearn's
   ``predict`` (``setSigmoid``, file -> file);
3. imports the TXT model with ``cfm.load_xlearn`` and scores the same file
   with cfm (``cfm.load_libsvm``/``load_libffm`` + ``predict_proba``);
4. compares: max |p_cfm - p_xlearn|, and the ranking of the rows.

Ranking: xLearn prints probabilities with 6 significant digits, so its output
has ties and rounding that cfm's doubles do not have.  We report (a) the
largest *inversion* -- the largest xLearn-score gap between two rows that
cfm orders the other way round (0 means the orders agree wherever xLearn's
output distinguishes the rows; a value at or below xLearn's print resolution,
1e-6, means they agree up to xLearn's own precision); (b) the number of rows
involved in an inversion larger than 1e-6 (0 = identical ranking up to
xLearn's output precision); (c) the rows whose cfm probability rounded to 6
significant digits differs from xLearn's printed value; (d) the AUC from each
library's scores.

Timings here are informative only (xLearn reads a text file it converts to
its .bin cache; cfm parses the text file); the scoring benchmark proper is
bench_predict.py.

Example::

    python benchmarks/bench_xlearn_import.py                 # 1M test rows
    python benchmarks/bench_xlearn_import.py --rows 100000 --train-rows 50000
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("USER", "bench")  # xLearn aborts without $USER

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import bench_data as bds  # noqa: E402
from bench_fm import capture_fds, machine_info  # noqa: E402


def round_sig(x, digits=6):
    """Round to ``digits`` significant digits (as C++ streams print floats)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros_like(x)
    nz = x != 0
    mag = np.floor(np.log10(np.abs(x[nz])))
    scale = 10.0 ** (digits - 1 - mag)
    out[nz] = np.round(x[nz] * scale) / scale
    return out


# xLearn prints 6 significant digits: probabilities in [0.1, 1) to 1e-6, so
# two printed values less than ~1e-6 apart may be in either true order.
RESOLUTION = 1e-6


def inversions(order_by, other):
    """Per row, in ``order_by``'s order: how far ``other`` falls below the
    largest ``other`` of the rows ranked before it (0 where the two orders
    agree).  Its maximum is the largest ``other[a] - other[b]`` over pairs
    that ``order_by`` ranks a < b."""
    o = np.argsort(order_by, kind="stable")
    s = np.asarray(other, dtype=np.float64)[o]
    return np.maximum.accumulate(s) - s


def auc(y, s):
    return bds._auc(np.asarray(y), np.asarray(s, dtype=np.float64))


def run_kind(kind, args, tmp, train_svm, train_ffm, test_svm, test_ffm, y_test, n_features,
             fields, log):
    import xlearn as xl
    import cfm

    train, test = (train_ffm, test_ffm) if kind == "ffm" else (train_svm, test_svm)
    create = {"lr": xl.create_linear, "fm": xl.create_fm, "ffm": xl.create_ffm}[kind]
    txt = tmp / f"{kind}.txt"
    binm = tmp / f"{kind}.bin"
    pred = tmp / f"{kind}.pred"
    m = create()
    m.setTrain(str(train))
    m.setTXTModel(str(txt))
    if args.no_norm:
        m.disableNorm()
    param = {"task": "binary", "lr": 0.2, "k": args.k, "epoch": args.epochs,
             "nthread": args.threads, "metric": "none"}
    t0 = time.perf_counter()
    with capture_fds(log):
        m.fit(param, str(binm))
    fit_s = time.perf_counter() - t0
    m = create()
    m.setTest(str(test))
    # xLearn caches a parsed copy as <file>.bin: remove it so that every kind's
    # predict reads the text file, as cfm does
    Path(str(test) + ".bin").unlink(missing_ok=True)
    m.setSigmoid()
    if args.no_norm:
        m.disableNorm()
    m._set_Param({"nthread": args.threads})
    t0 = time.perf_counter()
    with capture_fds(log):
        m.predict(str(binm), str(pred))
    xl_pred_s = time.perf_counter() - t0
    p_xl = np.loadtxt(pred, dtype=np.float64, ndmin=1)

    t0 = time.perf_counter()
    if kind == "ffm":
        # default: the field of every column (as a user who knows the id ->
        # field map); test rows hold ids the training file lacks, whose field
        # --fields train gets wrong (see load_xlearn's fields)
        model = cfm.load_xlearn(txt, "binary", norm=not args.no_norm,
                                fields=fields if args.fields == "map" else train,
                                n_features=n_features)
    else:
        model = cfm.load_xlearn(txt, "binary", norm=not args.no_norm, n_features=n_features)
    import_s = time.perf_counter() - t0
    model.set_params(n_jobs=args.threads)
    t0 = time.perf_counter()
    if kind == "ffm":
        X, _, _ = cfm.load_libffm(test, n_features=n_features, n_jobs=args.threads)
    else:
        X, _ = cfm.load_libsvm(test, zero_based=True, n_features=n_features,
                               n_jobs=args.threads)
    parse_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    p_cfm = model.predict_proba(X)[:, 1]
    score_s = time.perf_counter() - t0
    del X

    diff = np.abs(p_cfm - p_xl)
    inv = inversions(p_cfm, p_xl)
    return {
        "kind": kind.upper(),
        "norm": not args.no_norm,
        "rows": int(p_xl.size),
        "n_features": int(n_features),
        "k": 0 if kind == "lr" else args.k,
        "cfm_class": type(model).__name__,
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "max_inversion": float(inv.max()) if inv.size else 0.0,
        "rows_inverted_beyond_1e-6": int(np.count_nonzero(inv > RESOLUTION * 1.001)),
        "rows_printed_differently": int(np.count_nonzero(round_sig(p_cfm) != p_xl)),
        "auc_cfm": auc(y_test, p_cfm),
        "auc_xlearn": auc(y_test, p_xl),
        "xlearn_fit_s": fit_s,
        "xlearn_predict_s": xl_pred_s,
        "cfm_import_s": import_s,
        "cfm_parse_s": parse_s,
        "cfm_score_s": score_s,
    }


def to_markdown(rows, args, machine):
    out = ["# xLearn model import: cfm vs xLearn predictions", "",
           f"Command: `python benchmarks/bench_xlearn_import.py --rows {args.rows} "
           f"--train-rows {args.train_rows} --ids-per-field {args.ids_per_field} --k {args.k} "
           f"--epochs {args.epochs} --threads {args.threads}"
           + (" --no-norm" if args.no_norm else "")
           + (" --fields train" if args.fields == "train" else "") + "`", "",
           *machine, "",
           "xLearn trains on a Criteo-shaped file (39 one-hot fields) and writes its TXT model; "
           "xLearn's predict (setSigmoid) and cfm (cfm.load_xlearn + predict_proba) score the "
           "same test file.  *Max inversion*: largest xLearn-probability gap between two rows "
           "that cfm orders the other way (0 = same order wherever xLearn's 6-digit output "
           "distinguishes the rows; xLearn's print resolution is 1e-6).  *Rows inverted > 1e-6*: "
           "rows, in cfm's order, whose xLearn probability is more than 1e-6 below that of a "
           "row cfm ranks lower (0 = identical ranking up to xLearn's output precision).  "
           "*Printed differently*: rows whose cfm probability, rounded to 6 significant "
           "digits, differs from xLearn's printed value.", "",
           "| model | norm | rows | cfm estimator | max abs diff | max inversion | rows inverted "
           "> 1e-6 | printed differently | AUC cfm | AUC xLearn | xLearn predict s "
           "| cfm parse + score s |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['kind']} | | | ERROR: {r['error']} | | | | | | | | |")
            continue
        out.append(
            f"| {r['kind']} | {'on' if r['norm'] else 'off'} | {r['rows']:,} | {r['cfm_class']} | "
            f"{r['max_abs_diff']:.2e} | {r['max_inversion']:.2e} | {r['rows_inverted_beyond_1e-6']} | "
            f"{r['rows_printed_differently']} | "
            f"{r['auc_cfm']:.6f} | {r['auc_xlearn']:.6f} | {r['xlearn_predict_s']:.2f} | "
            f"{r['cfm_parse_s']:.2f} + {r['cfm_score_s']:.2f} |")
    out.append("")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="test rows (default 1M)")
    ap.add_argument("--train-rows", type=int, default=200_000)
    ap.add_argument("--ids-per-field", type=int, default=2000,
                    help="ids per field (columns = 39 x this; keeps FFM's TXT model small)")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kinds", default="lr,fm,ffm")
    ap.add_argument("--no-norm", action="store_true", help="train/predict with disableNorm()")
    ap.add_argument("--fields", choices=("map", "train"), default="map",
                    help="FFM fields for load_xlearn: the full column -> field map (default), "
                         "or those seen in the training file (unseen ids get field 0)")
    ap.add_argument("--out", default=str(HERE / "results" / "RESULTS_xlearn_import.md"))
    ap.add_argument("--json", default=None, help="also write the result rows as JSON")
    args = ap.parse_args(argv)
    try:
        import xlearn  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        print(f"xLearn is not available ({exc}); nothing to compare", file=sys.stderr)
        return 2
    machine = machine_info(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_xlimport_") as d:
        tmp = Path(d)
        log = tmp / "xlearn.log"
        t0 = time.perf_counter()
        X_tr, y_tr, X_te, y_te, fields = bds.make_criteo_like_split(
            args.train_rows, args.rows, ids_per_field=args.ids_per_field)
        n_features = X_tr.shape[1]
        kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
        paths = {}
        if set(kinds) & {"lr", "fm"}:
            paths["train_svm"] = bds.write_libsvm(tmp / "train.svm", X_tr, y_tr)
            paths["test_svm"] = bds.write_libsvm(tmp / "test.svm", X_te, y_te)
        if "ffm" in kinds:
            paths["train_ffm"] = bds.write_libffm(tmp / "train.ffm", X_tr, y_tr, fields)
            paths["test_ffm"] = bds.write_libffm(tmp / "test.ffm", X_te, y_te, fields)
        del X_tr, X_te
        print(f"data: {args.train_rows:,} train / {args.rows:,} test rows, {n_features:,} "
              f"features, written in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        for kind in kinds:
            try:
                r = run_kind(kind, args, tmp, paths.get("train_svm"), paths.get("train_ffm"),
                             paths.get("test_svm"), paths.get("test_ffm"), y_te, n_features,
                             fields, log)
            except Exception as exc:  # noqa: BLE001
                r = {"kind": kind.upper(), "error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(r), file=sys.stderr)
            rows.append(r)
    md = to_markdown(rows, args, machine)
    Path(args.out).write_text(md)
    print(md)
    if args.json:
        Path(args.json).write_text(json.dumps({"benchmark": "xlearn_import", "rows": rows,
                                               "machine": machine}, indent=1))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
