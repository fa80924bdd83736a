"""Distributed training on Dask against one process (issue 15).

On the Criteo-shaped synthetic set (bench_data.make_criteo_like_split), the
same epochs and settings:

* local: ``cfm.FMClassifier(n_jobs=T)`` in one process with T threads
  (default 2), data in memory;
* dask: ``cfm.dask.DaskFMClassifier`` on a LocalCluster of W worker
  processes x 1 thread (default 2), trained from libsvm part files that the
  workers read themselves (written once before timing), for each mixing rule.

Printed (and written to results/RESULTS_dask.md / .json with --out): fit
time (dask: reading the shards + rounds), test AUC, bytes sent per round
(model to the workers, updates back), time per round split into scatter /
compute / transfer / merge (medians over the rounds), and the load average.

    PYTHONPATH=$PWD python benchmarks/bench_dask.py --rows 50000      # quick check
    PYTHONPATH=$PWD python benchmarks/bench_dask.py                   # 1M rows (minutes)

The full-size run takes the machine's 2 cores: do not run it next to other
timing work.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_data import _auc, make_criteo_like_split  # noqa: E402


def _median(history, key):
    return float(np.median([r[key] for r in history]))


def _warm():
    import cfm._dask_tasks  # noqa: F401  (and cfm, NumPy, SciPy)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="training rows (1M)")
    ap.add_argument("--test-rows", type=int, default=None, help="test rows (rows / 5)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="threads of the local fit")
    ap.add_argument("--parts", type=int, default=8, help="training files")
    ap.add_argument("--mixing", default="sum,average")
    ap.add_argument("--rounds", default="1", help="rounds per epoch to try, e.g. 1,4 (auto: the estimator's default)")
    ap.add_argument("--out", default=None,
                    help="write RESULTS_dask.md/.json here (e.g. benchmarks/results)")
    args = ap.parse_args(argv)

    import cfm
    import distributed
    from cfm.dask import DaskFMClassifier

    n_test = args.test_rows or max(10_000, args.rows // 5)
    t = time.perf_counter()
    Xtr, ytr, Xte, yte, _ = make_criteo_like_split(args.rows, n_test)
    print(f"data: {args.rows:,} train / {n_test:,} test rows, {Xtr.shape[1]:,} columns "
          f"({time.perf_counter() - t:.1f}s)", flush=True)
    # fixed settings on both sides (the local fit would otherwise choose them by a race,
    # issue 13, which a distributed fit never runs)
    common = dict(n_epochs=args.epochs, random_state=0, auto_tune=False)
    out = {"rows": args.rows, "test_rows": n_test, "epochs": args.epochs,
           "workers": args.workers, "threads": args.threads, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        cut = np.linspace(0, args.rows, args.parts + 1).astype(int)
        for i in range(args.parts):
            p = os.path.join(tmp, f"part{i:03d}.svm")
            cfm.dump_libsvm(Xtr[cut[i]:cut[i + 1]], ytr[cut[i]:cut[i + 1]], p, zero_based=False)
            paths.append(p)

        t = time.perf_counter()
        local = cfm.FMClassifier(n_jobs=args.threads, **common).fit(Xtr, ytr)
        t_local = time.perf_counter() - t
        auc_local = _auc(yte, local.decision_function(Xte))
        t = time.perf_counter()
        cfm.load_libsvm(paths[0])
        t_read1 = time.perf_counter() - t
        run = {"name": f"local {args.threads} threads", "fit_s": t_local, "auc": auc_local,
               "read_one_file_s": t_read1}
        out["runs"].append(run)
        print(f"local  {args.threads} threads: fit {t_local:.2f}s  AUC {auc_local:.4f}  "
              f"(reading one of {args.parts} files: {t_read1:.2f}s)", flush=True)
        del local

        with distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                      processes=True, dashboard_address=None) as cluster, \
                distributed.Client(cluster) as client:
            # the workers import cfm before timing, as the local process did (a cold
            # worker's first task pays for it: reported, not counted in the fit)
            t = time.perf_counter()
            client.run(_warm)
            out["worker_import_s"] = time.perf_counter() - t
            print(f"workers import cfm: {out['worker_import_s']:.2f}s (before the fits, "
                  "like the local process's import)", flush=True)
            for mixing, rounds in [(m, None if r == "auto" else int(r)) for r in args.rounds.split(",")
                                   for m in args.mixing.split(",")]:
                t = time.perf_counter()
                model = DaskFMClassifier(mixing=mixing, rounds_per_epoch=rounds, client=client,
                                         **common).fit(paths)
                t_fit = time.perf_counter() - t
                h = model.history_
                rounds_s = sum(r["round_s"] * r["rounds"] for r in h)
                # (a model fitted on files has as many features as their largest id)
                a = _auc(yte, model.decision_function(Xte[:, :model.n_features_in_]))
                mixing = f"{mixing} r={rounds}"
                run = {"name": f"dask {args.workers}x1 {mixing}", "fit_s": t_fit,
                       "rounds_s": rounds_s, "setup_s": t_fit - rounds_s, "auc": a,
                       "bytes_to_workers": h[-1]["bytes_to_workers"],
                       "bytes_from_workers": h[-1]["bytes_from_workers"]}
                for k in ("round_s", "scatter_s", "compute_s", "transfer_s", "merge_s"):
                    run[k] = _median(h, k)
                run["rounds"] = int(h[-1]["rounds"])
                run.update({f"setup_{k}": v for k, v in model._dask_timing.items()})
                out["runs"].append(run)
                print(f"dask {args.workers}x1 {mixing:11s}: fit {t_fit:.2f}s (setup {t_fit - rounds_s:.2f}s + "
                      f"rounds {rounds_s:.2f}s)  AUC {a:.4f} ({a - auc_local:+.4f})  "
                      f"x{t_fit / t_local:.2f} of local", flush=True)
                print(f"    per round (median over epochs): {run['round_s']:.3f}s = scatter "
                      f"{run['scatter_s']:.3f} + compute {run['compute_s']:.3f} + transfer "
                      f"{run['transfer_s']:.3f} + merge {run['merge_s']:.3f}; bytes to workers "
                      f"{run['bytes_to_workers'] / 1e6:.1f} MB, from workers "
                      f"{run['bytes_from_workers'] / 1e6:.1f} MB", flush=True)
                tm = model._dask_timing
                print(f"    fit parts: read shards {tm['read_s']:.2f}s, prepare {tm['prepare_s']:.2f}s, "
                      f"init model {tm['init_s']:.2f}s, train {tm['train_s']:.2f}s "
                      f"({run['rounds']} rounds an epoch)", flush=True)
    out["loadavg"] = os.getloadavg()
    print(f"load average {out['loadavg'][0]:.2f} {out['loadavg'][1]:.2f}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "RESULTS_dask.json"), "w") as fh:
            json.dump(out, fh, indent=1)
        lines = [f"# bench_dask: {args.rows:,} rows, {args.epochs} epochs",
                 "", "| run | fit s | AUC | round s | scatter | compute | transfer | merge | "
                 "MB to / from workers |", "|---|---|---|---|---|---|---|---|---|"]
        for r in out["runs"]:
            if "round_s" in r:
                lines.append(f"| {r['name']} | {r['fit_s']:.2f} | {r['auc']:.4f} | "
                             f"{r['round_s']:.3f} | {r['scatter_s']:.3f} | "
                             f"{r['compute_s']:.3f} | {r['transfer_s']:.3f} | "
                             f"{r['merge_s']:.3f} | {r['bytes_to_workers'] / 1e6:.1f} / "
                             f"{r['bytes_from_workers'] / 1e6:.1f} |")
            else:
                lines.append(f"| {r['name']} | {r['fit_s']:.2f} | {r['auc']:.4f} | | | | | | |")
        lines.append(f"\nload average {out['loadavg'][0]:.2f}")
        with open(os.path.join(args.out, "RESULTS_dask.md"), "w") as fh:
            fh.write("\n".join(lines) + "\n")
    return out


if __name__ == "__main__":
    main()
