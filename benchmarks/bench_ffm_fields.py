"""FFM fields per column and per entry (issue 16 item 1): parity and speed.

1. **xLearn parity.**  xLearn trains an FFM on (a) its own Criteo demo files
   (``/work/shared/data/xlearn/criteo_ctr/small_{train,test}.txt``: hashed
   data, a feature id under several fields) and (b) a synthetic libffm set with
   deliberate cross-field collisions (every line puts some feature ids under
   two fields, some twice in one line); its TXT model is imported with
   ``cfm.load_xlearn`` and cfm's probabilities on the test file are compared
   with xLearn's ``predict`` (``setSigmoid``): per-entry fields (the default
   of ``load_xlearn`` now: ``predict_proba(X, fields=F)`` and ``predict_file``)
   and, for reference, one field per column taken from the files (what cfm
   did before).  xLearn prints 6 significant digits, so ~1e-6 is exact.
2. **Speed of the per-column fast path**, before/after: the kernels of this
   build against those of a baseline build of ``cfm._ffm`` (``--baseline-so``,
   e.g. the .so built from the commit before per-entry fields), called on the
   same tables and data, alternately in one process (median of ``--repeats``):
   ``ffm_predict`` and one ``ffm_train_epoch`` (n_threads=1 and 2).  Also the
   per-entry path of this build on the same data (every entry's field = its
   column's), i.e. what reading the field per entry costs.
3. **DeepFM scoring** (issue 16 item 7, optional ``--baseline-deepfm-so``):
   float32 dense layers summed in one fixed order (src/cfm/cfm_dense.h, so a
   row scores the same in any block, as scikit-learn's sample-order check
   asks) against the baseline's BLAS sgemm: time, and the largest change of a
   row's score when the rows are permuted.

Run::

    python benchmarks/bench_ffm_fields.py \
        --baseline-so /tmp/h16-fields-old/_ffm.cpython-311-x86_64-linux-gnu.so \
        --baseline-deepfm-so /tmp/h16-fields-old/_deepfm.cpython-311-x86_64-linux-gnu.so

(results: benchmarks/results/RESULTS_ffm_fields.md; ``--out`` to change).
The committed results used as baselines the extension modules built from
commit 7344d6a (``cfm._ffm`` before per-entry fields) and from 67f99fa
(``cfm._deepfm`` scoring through BLAS sgemm), e.g.::

    git worktree add /tmp/base 7344d6a && (cd /tmp/base && python setup.py build_ext --inplace)
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("USER", "bench")  # xLearn aborts without $USER

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import cfm  # noqa: E402
from cfm import _ffm  # noqa: E402
from cfm._state.base import LOSSES, OPTIMIZERS  # noqa: E402

CRITEO = Path("/work/shared/data/xlearn/criteo_ctr")


# ----------------------------------------------------------------- parity
def collision_set(path, n_rows, rng, n_fields=8, ids=400, nnz=10):
    """libffm lines with cross-field collisions: ids drawn from one pool for
    every field, and in each line one id repeated under another field."""
    with open(path, "w") as f:
        for _ in range(n_rows):
            fl = rng.integers(0, n_fields, nnz)
            js = rng.integers(0, ids, nnz)
            js[-1] = js[0]
            fl[-1] = (fl[0] + 1 + rng.integers(0, n_fields - 1)) % n_fields
            vals = rng.uniform(0.2, 1.5, nnz)
            y = int(rng.random() < 0.3 + 0.2 * (js[0] % 3 == 0))
            f.write(f"{y} " + " ".join(f"{a}:{b}:{v:.4f}" for a, b, v in zip(fl, js, vals))
                    + "\n")


def xlearn_parity(name, train, test, work):
    import xlearn as xl

    model_txt, model_bin, pred = work / f"{name}.txt", work / f"{name}.bin", work / f"{name}.pred"
    m = xl.create_ffm()
    m.setTrain(str(train))
    m.setTXTModel(str(model_txt))
    m.setQuiet()
    m.fit({"task": "binary", "lr": 0.2, "lambda": 0.002, "k": 4, "epoch": 5, "metric": "none",
           "nthread": 1}, str(model_bin))
    m.setTest(str(test))
    m.setSigmoid()
    m.predict(str(model_bin), str(pred))
    expect = np.loadtxt(pred)
    n = max(cfm.scan_file(train)["n_features"], cfm.scan_file(test)["n_features"])
    X, _, F = cfm.load_libffm(test, entry_fields=True, n_features=n)
    entry = cfm.load_xlearn(model_txt, "binary", n_features=n)  # float32, as xLearn
    got = entry.predict_proba(X, fields=F)[:, 1]
    out = work / f"{name}.cfm.pred"
    entry.predict_file(test, out)
    via_file = np.loadtxt(out)
    col = cfm.load_xlearn(model_txt, "binary", n_features=n, fields=[train, test])
    Xc, _, _ = cfm.load_libffm(test, n_features=n)
    old = col.predict_proba(Xc)[:, 1]
    Xs, _, Fs = cfm.load_libffm(test, n_features=n)
    n_coll = int(np.count_nonzero(np.maximum(Fs, 0)[X.indices] != F))
    return {"set": name, "rows": X.shape[0], "entries": X.nnz, "collisions": n_coll,
            "entry": float(np.abs(got - expect).max()),
            "entry_file": float(np.abs(via_file - expect).max()),
            "column": float(np.abs(old - expect).max())}


# ----------------------------------------------------------------- speed
def load_baseline(path):
    spec = importlib.util.spec_from_file_location("cfm_baseline._ffm", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def speed(baseline, rows, repeats, threads):
    X, y = cfm.make_fm_classification(rows, 39 * 2000, n_fields=39, n_factors=4,
                                      random_state=0)
    X = X.tocsr().astype(np.float32)
    fields = np.arange(X.shape[1]) // 2000
    m = cfm.FFMClassifier(n_factors=4, n_epochs=1, auto_tune=False, n_jobs=1,
                          random_state=0).fit(X[:100], y[:100], fields=fields)
    st = m._state
    indptr = X.indptr.astype(np.int64)
    ef = np.ascontiguousarray(fields[X.indices], dtype=np.int32)
    yy = np.where(y > 0, 1.0, -1.0)
    order = np.arange(rows, dtype=np.int64)
    max_nnz = int(np.diff(indptr).max())
    out = np.empty(rows)

    def predict(mod, nt, entry=False):
        kw = dict(entry_fields=ef, rec_off=st.rec_off) if entry else {}
        t = time.perf_counter()
        mod.ffm_predict(X.data, X.indices, indptr, st.foff, st.lin, st.kernel_V, w0=0.0,
                        kp=st.kp, ks=1, normalize=True, out=out, n_threads=nt,
                        max_nnz=max_nnz, **kw)
        return time.perf_counter() - t

    snap = st.snapshot()

    def train(mod, nt, entry=False):
        kw = dict(entry_fields=ef, rec_off=st.rec_off) if entry else {}
        st.restore(snap)
        t = time.perf_counter()
        mod.ffm_train_epoch(X.data, X.indices, indptr, yy, np.empty(0), order, st.foff,
                            st.lin, st.kernel_V, st.w0_state, k=st.k, kp=st.kp, ks=1,
                            loss=LOSSES["logistic"], optimizer=OPTIMIZERS["adagrad"],
                            fit_intercept=True, normalize=True, learning_rate=0.1,
                            l2_w0=0.0, l2_w=1e-5, l2_v=1e-5, l1=0.0, ftrl_beta=1.0,
                            n_threads=nt, max_nnz=max_nnz, seed=1, **kw)
        return time.perf_counter() - t

    variants = [("this build, per column", _ffm, False), ("this build, per entry", _ffm, True)]
    if baseline is not None:
        variants.insert(0, ("baseline, per column", baseline, False))
    res = []
    for what, fn in (("predict", predict), ("train epoch", train)):
        for nt in threads:
            times = {v[0]: [] for v in variants}
            fn(variants[0][1], nt, variants[0][2])  # warm the tables
            for _ in range(repeats):
                for name, mod, entry in variants:  # alternately, same data and tables
                    times[name].append(fn(mod, nt, entry))
            res.append((what, nt, {k: float(np.median(v)) for k, v in times.items()},
                        {k: float(np.min(v)) for k, v in times.items()}))
    return res, X, st


def deepfm_speed(baseline_so, rows, repeats, threads):
    """DeepFM scoring: this build (float32 dense layers in one fixed order,
    src/cfm/cfm_dense.h) against a baseline build of cfm._deepfm (BLAS sgemm),
    same model and rows, alternately; and whether a row's score depends on
    its block (max |score(row in permuted rows) - score(row)|)."""
    from cfm import _deepfm
    from cfm._state.deepfm import _blas_one_thread

    spec = importlib.util.spec_from_file_location("cfm_baseline._deepfm", baseline_so)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    X, y = cfm.make_fm_classification(rows, 39 * 2000, n_fields=39, random_state=0)
    X = X.tocsr().astype(np.float32)
    fields = np.arange(X.shape[1]) // 2000
    m = cfm.DeepFMClassifier(n_epochs=1, random_state=0).fit(X[:5000], y[:5000],
                                                              fields=fields)
    st = m._state
    indptr = X.indptr.astype(np.int64)

    def run(mod, nt, Xr=X, ip=indptr):
        out = np.empty(Xr.shape[0])
        t = time.perf_counter()
        with _blas_one_thread():
            mod.deepfm_predict(data=Xr.data, indices=Xr.indices, indptr=ip, table=st.table,
                               mlp=st.mlp, layer_sizes=st.layer_sizes, w0=float(st.bias[0]),
                               n_factors=st.k, normalize=st.normalize, out=out, n_threads=nt)
        return time.perf_counter() - t, out

    perm = np.random.default_rng(0).permutation(min(rows, 5000))
    Xp = X[perm]
    order = {}
    for name, mod in (("baseline (BLAS)", old), ("this build", _deepfm)):
        _, a = run(mod, 1, X[:len(perm)], X[:len(perm)].indptr.astype(np.int64))
        _, b = run(mod, 1, Xp, Xp.indptr.astype(np.int64))
        order[name] = float(np.abs(a[perm] - b).max())
    res = []
    for nt in threads:
        t_old, t_new = [], []
        run(old, nt)
        for _ in range(repeats):
            t_old.append(run(old, nt)[0])
            t_new.append(run(_deepfm, nt)[0])
        res.append((nt, float(np.median(t_old)), float(np.median(t_new))))
    return res, order, st


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline-so", default=None,
                    help="cfm._ffm extension module built before per-entry fields")
    ap.add_argument("--baseline-deepfm-so", default=None,
                    help="cfm._deepfm built before the fixed-order dense layers (optional)")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--out", default=str(HERE / "results" / "RESULTS_ffm_fields.md"))
    args = ap.parse_args(argv)
    lines = ["# FFM fields per column and per entry (issue 16 item 1)", "",
             "Command: `python benchmarks/bench_ffm_fields.py"
             + (f" --baseline-so {args.baseline_so}" if args.baseline_so else "")
             + (f" --baseline-deepfm-so {args.baseline_deepfm_so}"
                if args.baseline_deepfm_so else "")
             + f" --rows {args.rows} --repeats {args.repeats}`", "",
             f"Load average at start: {os.getloadavg()[0]:.2f} (2 cores, shared)", ""]

    lines += ["## xLearn FFM import parity", "",
              "max |p_cfm - p_xLearn| over the test file (xLearn prints 6 significant "
              "digits). entry: `load_xlearn(txt)` (per-entry fields) + "
              "`predict_proba(X, fields=F)`; entry, file: the same model's `predict_file`; "
              "column: `load_xlearn(txt, fields=[train, test])`, one field per column "
              "(cfm before issue 16).", "",
              "| set | rows | entries | entries whose field differs from the column's | "
              "entry | entry, file | column |", "|---|---|---|---|---|---|---|"]
    try:
        import xlearn  # noqa: F401
        have_xl = True
    except ImportError:
        have_xl = False
    if have_xl:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            sets = []
            if (CRITEO / "small_train.txt").exists():
                sets.append(("xLearn Criteo demo", CRITEO / "small_train.txt",
                             CRITEO / "small_test.txt"))
            rng = np.random.default_rng(16)
            collision_set(work / "coll_train.ffm", 2000, rng)
            collision_set(work / "coll_test.ffm", 1000, rng)
            sets.append(("synthetic collisions", work / "coll_train.ffm",
                         work / "coll_test.ffm"))
            for name, tr, te in sets:
                r = xlearn_parity(name.replace(" ", "_"), tr, te, work)
                print(r, flush=True)
                lines.append(f"| {name} | {r['rows']} | {r['entries']} | {r['collisions']} | "
                             f"{r['entry']:.2e} | {r['entry_file']:.2e} | {r['column']:.2e} |")
    else:
        lines.append("| (xlearn not installed: skipped) | | | | | | |")

    baseline = load_baseline(args.baseline_so) if args.baseline_so else None
    threads = [int(t) for t in args.threads.split(",")]
    res, X, st = speed(baseline, args.rows, args.repeats, threads)
    lines += ["", "## Kernel time, per-column fast path before/after and the per-entry path",
              "", f"make_fm_classification: {X.shape[0]:,} rows x {X.shape[1]:,} columns, "
              f"39 fields, {X.nnz / X.shape[0]:.0f} values per row; FFM k=4, "
              f"dtype {st.dtype}, AdaGrad; kernels called directly on the same tables, "
              f"alternately, median (min) of {args.repeats}.", ""]
    names = list(res[0][2])
    lines += ["| kernel | threads | " + " | ".join(names) + " | after / before |",
              "|---|---|" + "---|" * len(names) + "---|"]
    for what, nt, med, mn in res:
        cells = " | ".join(f"{med[n] * 1e3:.1f} ms ({mn[n] * 1e3:.1f})" for n in names)
        ratio = (f"{med['this build, per column'] / med['baseline, per column']:.3f}"
                 if "baseline, per column" in med else "-")
        lines.append(f"| {what} | {nt} | {cells} | {ratio} |")
        print(what, nt, med, flush=True)
    if args.baseline_deepfm_so:
        dres, order, dst = deepfm_speed(args.baseline_deepfm_so, args.rows // 2, args.repeats,
                                        threads)
        lines += ["", "## DeepFM scoring: fixed-order float32 dense layers vs BLAS sgemm", "",
                  f"DeepFMClassifier, 39 fields, k={dst.k}, hidden {list(dst.hidden)}, "
                  f"float32; {args.rows // 2:,} rows; deepfm_predict of this build and of "
                  f"`{os.path.basename(args.baseline_deepfm_so)}` (baseline), alternately, "
                  f"median of {args.repeats}.", "",
                  "| threads | baseline (BLAS) | this build | this / baseline |",
                  "|---|---|---|---|"]
        for nt, a, b in dres:
            lines.append(f"| {nt} | {a * 1e3:.1f} ms | {b * 1e3:.1f} ms | {b / a:.2f} |")
        lines += ["", "A row's score against the same row scored among permuted rows (max abs "
                  "difference): " + ", ".join(f"{k}: {v:.2e}" for k, v in order.items())]
    lines += ["", f"Load average at end: {os.getloadavg()[0]:.2f}", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
