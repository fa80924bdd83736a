"""The PyTorch / ONNX bridge: parity and scoring speed.

Parity: on the first split of every real data set of ``../shared/data``
(benchmarks/real_data.py) and on a synthetic set, fits LR, FM, FM by MCMC,
FFM (data sets with fields; default float16 tables) and a DeepFM state
(idem), converts each with ``to_torch()`` / ``cfm.torch.from_state`` and
exports it with ``cfm.torch.export_onnx``, and reports the largest absolute
difference between cfm's ``decision_function`` on the test rows and the
torch module's / onnxruntime's scores (the issue asks for 1e-5).

Speed (context for serving): rows per second scoring the synthetic test set
with cfm, the torch module and onnxruntime, each with ``--threads`` threads
(default 2), in batches of ``--batch`` rows for torch / onnxruntime
(including the conversion of each batch by cfm.torch.as_batch; cfm scores
the whole set).  On a loaded machine torch's intra-op threads wait for each
other at every operation: compare with ``--threads 1`` there.

    PYTHONPATH=$PWD python benchmarks/bench_torch.py            # -> results/RESULTS_torch.md
    PYTHONPATH=$PWD python benchmarks/bench_torch.py --no-onnx --names mushroom w8a
    PYTHONPATH=$PWD python benchmarks/bench_torch.py --no-parity --threads 1
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import cfm  # noqa: E402
import cfm.torch as ct  # noqa: E402
from cfm._state.deepfm import DeepFMHyper, DeepFMState  # noqa: E402
from cfm._validation import check_X  # noqa: E402
import real_data  # noqa: E402


def _models(task, fields):
    """[(name, fit(X, y) -> (decision(X), module))] for one data set."""
    clf = task == "binary"
    FM = cfm.FMClassifier if clf else cfm.FMRegressor
    FFM = cfm.FFMClassifier if clf else cfm.FFMRegressor

    def est(make, **fit):
        def run(X, y):
            m = make().fit(X, y, **fit)
            return m.decision_function if clf else m.predict, m.to_torch()
        return run

    def deepfm(X, y):
        state = DeepFMState(X.shape[1], fields, k=4, hidden=(64, 32), seed=0)
        Xc = check_X(X)
        yy = np.where(y > np.median(y), 1.0, -1.0) if clf else np.asarray(y, float)
        loss = "logistic" if clf else "squared"
        state.init_intercept(yy, loss=loss)
        rng = np.random.default_rng(0)
        for _ in range(2):
            state.train_epoch(Xc, yy, None, rng.permutation(X.shape[0]),
                              DeepFMHyper(loss=loss, batch_size=256), 2, rng)
        return (lambda Z: state.decision(check_X(Z), 2)), ct.from_state(state)

    out = [("LR", est(lambda: FM(n_factors=0, random_state=0))),
           ("FM", est(lambda: FM(random_state=0))),
           ("FM mcmc", est(lambda: FM(solver="mcmc", n_epochs=30, random_state=0)))]
    if fields is not None:
        out += [("FFM", est(lambda: FFM(random_state=0), fields=fields)),
                ("DeepFM state", deepfm)]
    return out


def _torch_scores(module, X, batch):
    dtype = next(module.parameters()).dtype
    out = []
    with torch.no_grad():
        for s in range(0, X.shape[0], batch):
            out.append(module(*ct.as_batch(X[s:s + batch], dtype=dtype)).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def _onnx_session(module, tmp, threads=2):
    import onnxruntime as ort

    path = ct.export_onnx(module, os.path.join(tmp, "m.onnx"))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, opts)


def _onnx_scores(sess, X, batch, dtype):
    out = []
    for s in range(0, X.shape[0], batch):
        i, o, v = ct.as_batch(X[s:s + batch], dtype=dtype)
        out.append(sess.run(None, {"indices": i.numpy(), "offsets": o.numpy(),
                                   "values": v.numpy()})[0].astype(np.float64))
    return np.concatenate(out) if out else np.zeros(0)


def parity(datasets, onnx, batch, tmp):
    rows = []
    for name, task, split in datasets:
        for model, run in _models(task, split.fields):
            t = time.perf_counter()
            decide, module = run(split.X_train, split.y_train)
            ref = decide(split.X_test)
            err_t = float(np.abs(_torch_scores(module, split.X_test, batch) - ref).max())
            err_o = None
            if onnx:
                sess = _onnx_session(module, tmp)
                dtype = next(module.parameters()).dtype
                err_o = float(np.abs(_onnx_scores(sess, split.X_test, batch, dtype) - ref).max())
            rows.append((name, model, split.X_test.shape[0], float(np.abs(ref).max()), err_t,
                         err_o, type(module).__name__))
            print(f"{name:18s} {model:13s} test rows {split.X_test.shape[0]:7d}  max|score| "
                  f"{rows[-1][3]:8.3f}  torch {err_t:.2e}  onnx "
                  f"{'-' if err_o is None else f'{err_o:.2e}'}  "
                  f"({time.perf_counter() - t:.1f}s)", flush=True)
    return rows


def speed(n_rows, batch, onnx, tmp, threads, repeats=3):
    X, y = cfm.make_fm_classification(n_rows + n_rows // 4, n_features=100_000, n_fields=10,
                                      random_state=0)
    fields = np.arange(X.shape[1]) // (X.shape[1] // 10)
    Xtr, ytr, Xte = X[:n_rows], y[:n_rows], X[n_rows:]
    out = []
    for name, make, fit in [("FM k=8", lambda: cfm.FMClassifier(n_epochs=2, n_jobs=threads),
                             {}),
                            ("FFM k=4", lambda: cfm.FFMClassifier(n_epochs=2, n_jobs=threads),
                             {"fields": fields})]:
        m = make().fit(Xtr, ytr, **fit)
        module = m.to_torch()
        dtype = next(module.parameters()).dtype
        sess = _onnx_session(module, tmp, threads) if onnx else None
        times = {"cfm": [], "torch": [], "onnxruntime": []}
        for _ in range(repeats):  # alternating, so that load changes hit all three
            t = time.perf_counter()
            ref = m.decision_function(Xte)
            times["cfm"].append(time.perf_counter() - t)
            t = time.perf_counter()
            got = _torch_scores(module, Xte, batch)
            times["torch"].append(time.perf_counter() - t)
            if sess is not None:
                t = time.perf_counter()
                got_o = _onnx_scores(sess, Xte, batch, dtype)
                times["onnxruntime"].append(time.perf_counter() - t)
        err = float(np.abs(got - ref).max())
        err_o = float(np.abs(got_o - ref).max()) if sess is not None else None
        out.append((name, Xte.shape[0], {k: min(v) for k, v in times.items() if v},
                    {k: v[0] for k, v in times.items() if v}, err, err_o))
        print(name, out[-1], flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--names", nargs="*", help="real data sets (default: all)")
    ap.add_argument("--rows", type=int, default=100_000, help="synthetic training rows")
    ap.add_argument("--batch", type=int, default=16_384, help="rows per torch/onnx batch")
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--no-parity", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "RESULTS_torch.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    onnx = not args.no_onnx
    datasets = []
    for ds in ([] if args.no_parity else real_data.load_all(names=args.names)):
        try:
            split = ds.repeats()[0][0]
        except FileNotFoundError as exc:
            print(f"skip {ds.name}: {exc}")
            continue
        datasets.append((ds.name, ds.task, split))
    X, y = cfm.make_fm_classification(20_000, n_features=5_000, n_fields=10, random_state=1)
    if not args.no_parity:
        datasets.append(("synthetic-20k", "binary", real_data.Split(
            X[:16_000], y[:16_000], X[16_000:], y[16_000:], np.arange(5_000) // 500)))
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        rows = parity(datasets, onnx, args.batch, tmp)
        fast = [] if args.no_speed else speed(args.rows, args.batch, onnx, tmp, args.threads)
    load = os.getloadavg()[0]
    lines = ["# PyTorch / ONNX bridge: parity and scoring speed", "",
             f"`{' '.join(['python', 'benchmarks/bench_torch.py'] + (argv or sys.argv[1:]))}`, "
             f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}, load average (1 min) "
             f"at the end {load:.2f}, run time {time.time() - t0:.0f} s.", ""]
    if rows:
        lines += ["## Parity: max |cfm decision_function - score| on the test rows", "",
                  "| data set | model | module | test rows | max abs score | torch | onnxruntime |",
                  "|---|---|---|---:|---:|---:|---:|"]
    for name, model, n, mx, et, eo, mod in rows:
        lines.append(f"| {name} | {model} | {mod} | {n} | {mx:.3f} | {et:.1e} | "
                     f"{'-' if eo is None else f'{eo:.1e}'} |")
    worst_t = max((r[4] for r in rows), default=0.0)
    worst_o = max((r[5] for r in rows if r[5] is not None), default=None)
    if rows:
        lines += ["", f"Largest error: torch {worst_t:.1e}"
                  + ("" if worst_o is None else f", onnxruntime {worst_o:.1e}")
                  + " (limit 1e-5).", ""]
    if fast:
        lines += [f"## Scoring speed (synthetic, 100k features, 10 fields, {args.threads} "
                  f"thread(s), batches of {args.batch} rows for torch / onnxruntime)", "",
                  "| model | rows | engine | rows/s (best of 3) | rows/s (first call) |",
                  "|---|---:|---|---:|---:|"]
        for name, n, best, first, err, err_o in fast:
            for eng in best:
                lines.append(f"| {name} | {n} | {eng} | {n / best[eng]:,.0f} | "
                             f"{n / first[eng]:,.0f} |")
        lines.append("")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    if worst_t > 1e-5 or (worst_o is not None and worst_o > 1e-5):
        sys.exit("parity above 1e-5")


if __name__ == "__main__":
    main()
