"""What the defaults cost: a default fit (``auto_tune``: race + refit) vs a fixed 10-epoch fit.

    python benchmarks/bench_autotune_cost.py                      # 1M-row synthetic FM, 2 threads
    python benchmarks/bench_autotune_cost.py --models fm,ffm --repeats 2
    python benchmarks/bench_autotune_cost.py --dataset w8a        # a real set of real_data.py
    python benchmarks/bench_autotune_cost.py --rows 100000 --quick  # smoke test

Issue 13's target: a default fit costs at most 2.5x the wall time of a fixed
10-epoch fit (``auto_tune=False``: default learning rate, normalize=True,
10 epochs) on the same data and threads.  The two fits alternate in one
process (fixed, default, fixed, default, ...), so that load on this shared
machine hits both alike; the first pair is reported apart (a cold first
call) from the median of the others (with one pair, the same); the CPU
time of the process (all threads) is less sensitive to other work on the
machine than the wall time and is reported beside it.  Also reported: the row-epochs the
race spent (``race_["row_epochs"]``: rows trained / rows, the refit
included; the budget is 25), the choice (``best_params_``), the test metric
of both fits and the load average before and after.  Results go to
``results/RESULTS_autotune_cost.md`` (and ``.json``; a real set:
``RESULTS_autotune_cost_<name>.md``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _dataset(name, rows):
    """(task, X_train, y_train, X_test, y_test, fields) of the data set."""
    if name == "synthetic":
        import bench_data as bds

        X, y, Xt, yt, fields = bds.make_criteo_like_split(rows, min(200_000, rows // 5),
                                                          n_factors=8, seed=0)
        return "binary", X, y, Xt, yt, np.maximum(fields, 0).astype(np.int32)
    import real_data as rd

    (ds,) = rd.load_all(names=[name])
    split = ds.repeats()[0][0]
    return ds.task, split.X_train, split.y_train, split.X_test, split.y_test, split.fields


def _estimator(task, model, threads, **params):
    import cfm

    if model == "ffm":
        cls = cfm.FFMClassifier if task == "binary" else cfm.FFMRegressor
    else:
        cls = cfm.FMClassifier if task == "binary" else cfm.FMRegressor
    return cls(n_factors=0 if model == "lr" else 8, n_jobs=threads, random_state=0, **params)


def _metric(task, y, score):
    from cfm._metrics import auc, rmse

    if task == "binary":
        return "AUC", auc((np.asarray(y) > 0).astype(float), score)
    return "RMSE", rmse(np.asarray(y, dtype=float), score)


def _fit(est, X, y, fields, model):
    """(wall seconds, CPU seconds of the process, every thread)."""
    t, c = time.perf_counter(), time.process_time()
    if model == "ffm":
        est.fit(X, y, fields=fields)
    else:
        est.fit(X, y)
    return time.perf_counter() - t, time.process_time() - c


def run(args):
    task, X, y, Xt, yt, fields = _dataset(args.dataset, args.rows)
    print(f"{args.dataset}: {X.shape[0]:,} train rows, {X.shape[1]:,} columns, "
          f"{Xt.shape[0]:,} test rows; threads {args.threads}", flush=True)
    out = []
    for model in args.models:
        if model == "ffm" and fields is None:
            continue
        load0 = os.getloadavg()
        fixed_s, auto_s, fixed_cpu, auto_cpu, rec = [], [], [], [], {}
        for r in range(args.repeats):
            for kind in ("fixed", "default"):
                est = _estimator(task, model, args.threads,
                                 **({"auto_tune": False} if kind == "fixed" else {}))
                secs, cpu = _fit(est, X, y, fields, model)
                (fixed_s if kind == "fixed" else auto_s).append(secs)
                (fixed_cpu if kind == "fixed" else auto_cpu).append(cpu)
                score = est.decision_function(Xt) if task == "binary" else est.predict(Xt)
                name, value = _metric(task, yt, score)
                if r == 0:
                    rec[kind] = {"metric": name, "value": value,
                                 "best_params": dict(est.best_params_),
                                 "row_epochs": (est.race_ or {}).get("row_epochs",
                                                                     float(est.n_epochs_))}
                print(f"  {model} {kind:>7s} fit {secs:7.2f}s (cpu {cpu:6.2f}s)  test {name} "
                      f"{value:.4f}  "
                      f"{est.best_params_}", flush=True)
        load1 = os.getloadavg()
        warm = slice(1, None) if args.repeats > 1 else slice(0, None)
        row = {
            "model": model, "rows": X.shape[0], "threads": args.threads,
            "fixed_s": fixed_s, "default_s": auto_s,
            "cold_ratio": auto_s[0] / fixed_s[0],
            "median_ratio": statistics.median(auto_s[warm]) / statistics.median(fixed_s[warm]),
            "fixed_cpu": fixed_cpu, "default_cpu": auto_cpu,
            "cpu_ratio": statistics.median(auto_cpu) / statistics.median(fixed_cpu),
            "row_epochs": rec["default"]["row_epochs"], "choice": rec["default"]["best_params"],
            "metric": rec["fixed"]["metric"], "fixed_metric": rec["fixed"]["value"],
            "default_metric": rec["default"]["value"], "load": [load0, load1],
        }
        print(f"  {model}: default / fixed wall time {row['cold_ratio']:.2f}x (first pair), "
              f"{row['median_ratio']:.2f}x (median of the others), CPU time "
              f"{row['cpu_ratio']:.2f}x (median); {row['row_epochs']:.1f} row-epochs; "
              f"load {load0[0]:.1f} -> {load1[0]:.1f}", flush=True)
        out.append(row)
    return {"dataset": args.dataset, "rows": out}


def render(res):
    lines = [f"# Cost of the defaults (`auto_tune`) on {res['dataset']}", "",
             "Produced by `python benchmarks/bench_autotune_cost.py "
             + " ".join(res.get("argv", [])) + "`. A default fit (race + refit) and a fixed",
             "10-epoch fit (`auto_tune=False`) alternate in one process; target (issue 13): the",
             "default fit at most 2.5x the fixed one.", "",
             "| model | rows | threads | fixed fit (s) | default fit (s) | ratio (first pair) "
             "| ratio (median) | CPU ratio (median) | row-epochs | choice | fixed test "
             "| default test | load avg |",
             "|---|---:|---:|---|---|---:|---:|---:|---:|---|---:|---:|---|"]
    for r in res["rows"]:
        c = r["choice"]
        lines.append(
            f"| {r['model']} | {r['rows']:,} | {r['threads']} | "
            + ", ".join(f"{s:.1f}" for s in r["fixed_s"]) + " | "
            + ", ".join(f"{s:.1f}" for s in r["default_s"])
            + f" | {r['cold_ratio']:.2f} | {r['median_ratio']:.2f} | {r['cpu_ratio']:.2f} | "
            f"{r['row_epochs']:.1f} | "
            f"lr {c['learning_rate']}, normalize {c['normalize']}, {c['n_epochs']} ep "
            f"({c['auto']}) | {r['metric']} {r['fixed_metric']:.4f} | "
            f"{r['metric']} {r['default_metric']:.4f} | "
            f"{r['load'][0][0]:.1f} -> {r['load'][1][0]:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="synthetic",
                    help="'synthetic' (benchmarks/bench_data.py, Criteo-shaped) or a data set "
                    "name of benchmarks/real_data.py")
    ap.add_argument("--rows", type=int, default=1_000_000, help="synthetic training rows")
    ap.add_argument("--models", default="fm", type=lambda s: s.split(","),
                    help="comma-separated: fm, ffm, lr (default fm)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="pairs of fits (default 1)")
    ap.add_argument("--quick", action="store_true", help="do not write the results files")
    ap.add_argument("--out", default=None,
                    help="default: results/RESULTS_autotune_cost.md (synthetic), "
                    "results/RESULTS_autotune_cost_<dataset>.md (a real set)")
    args = ap.parse_args(argv)
    if args.out is None:
        suffix = "" if args.dataset == "synthetic" else f"_{args.dataset}"
        args.out = str(HERE / "results" / f"RESULTS_autotune_cost{suffix}.md")
    res = run(args)
    res["argv"] = sys.argv[1:] if argv is None else list(argv)
    text = render(res)
    print(text)
    if not args.quick:
        Path(args.out).write_text(text)
        Path(args.out).with_suffix(".json").write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
