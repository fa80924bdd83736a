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

PARTS = ("round_s", "scatter_s", "compute_s", "transfer_s", "merge_s")
BYTES = ("bytes_to_workers", "bytes_from_workers")


def _parts(run, which):
    g = {k: run[f"{which}_{k}"] for k in PARTS + BYTES}
    return (f"{g['round_s']:.3f}s = scatter {g['scatter_s']:.3f} + compute {g['compute_s']:.3f} "
            f"+ transfer {g['transfer_s']:.3f} + merge {g['merge_s']:.3f}; MB to workers "
            f"{g['bytes_to_workers'] / 1e6:.1f}, from workers {g['bytes_from_workers'] / 1e6:.1f}")


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
    ap.add_argument("--seed", type=int, default=0, help="random_state of every fit")
    ap.add_argument("--rounds", default="1", help="rounds per epoch to try, e.g. 1,4 (auto: the estimator's default)")
    ap.add_argument("--out", default=None,
                    help="write RESULTS_<name>.md/.json here (e.g. benchmarks/results)")
    ap.add_argument("--name", default="dask", help="results file stem: RESULTS_<name>.md")
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
    common = dict(n_epochs=args.epochs, random_state=args.seed, auto_tune=False)
    out = {"rows": args.rows, "test_rows": n_test, "epochs": args.epochs,
           "workers": args.workers, "threads": args.threads, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        cut = np.linspace(0, args.rows, args.parts + 1).astype(int)
        for i in range(args.parts):
            p = os.path.join(tmp, f"part{i:03d}.svm")
            cfm.dump_libsvm(Xtr[cut[i]:cut[i + 1]], ytr[cut[i]:cut[i + 1]], p, zero_based=False)
            paths.append(p)

        t, c = time.perf_counter(), time.process_time()
        local = cfm.FMClassifier(n_jobs=args.threads, **common).fit(Xtr, ytr)
        t_local = time.perf_counter() - t
        cpu_local = time.process_time() - c
        auc_local = _auc(yte, local.decision_function(Xte))
        t = time.perf_counter()
        cfm.load_libsvm(paths[0])
        t_read1 = time.perf_counter() - t
        run = {"name": f"local {args.threads} threads", "fit_s": t_local, "auc": auc_local,
               "cpu_s": cpu_local,
               "read_one_file_s": t_read1}
        out["runs"].append(run)
        print(f"local  {args.threads} threads: fit {t_local:.2f}s ({cpu_local:.1f} CPU s)  "
              f"AUC {auc_local:.4f}  "
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
                # the local fit again just before (the machine's load drifts: the
                # ratio is taken to this neighbour), then the Dask fit; CPU seconds of
                # every process (client + scheduler, workers) measure the work whatever
                # the load
                t = time.perf_counter()
                cfm.FMClassifier(n_jobs=args.threads, **common).fit(Xtr, ytr)
                t_near = time.perf_counter() - t
                w0 = client.run(time.process_time)
                t, c = time.perf_counter(), time.process_time()
                model = DaskFMClassifier(mixing=mixing, rounds_per_epoch=rounds, client=client,
                                         **common).fit(paths)
                t_fit = time.perf_counter() - t
                cpu_client = time.process_time() - c
                w1 = client.run(time.process_time)
                cpu_workers = sum(w1[w] - w0[w] for w in w1 if w in w0)
                h = model.history_
                rounds_s = sum(r["round_s"] * r["rounds"] for r in h)
                # (a model fitted on files has as many features as their largest id)
                a = _auc(yte, model.decision_function(Xte[:, :model.n_features_in_]))
                mixing = f"{mixing} r={rounds}"
                run = {"name": f"dask {args.workers}x1 {mixing}", "fit_s": t_fit,
                       "rounds_s": rounds_s, "setup_s": t_fit - rounds_s, "auc": a,
                       "rounds_per_epoch": [int(r["rounds"]) for r in h],
                       "local_near_s": t_near, "cpu_s": cpu_client + cpu_workers,
                       "cpu_client_s": cpu_client, "cpu_workers_s": cpu_workers}
                # totals over the fit, and per round in the first / the last epoch
                # (with the default, the first epoch's rounds are short, later ones long)
                for k in PARTS + BYTES:
                    run[f"total_{k}"] = float(sum(r[k] * r["rounds"] for r in h))
                    run[f"first_{k}"] = float(h[0][k])
                    run[f"last_{k}"] = float(h[-1][k])
                tm = getattr(model, "_dask_timing", None) or {}  # (older cfm: none)
                run.update({f"setup_{k}": v for k, v in tm.items()})
                out["runs"].append(run)
                print(f"dask {args.workers}x1 {mixing:11s}: fit {t_fit:.2f}s (setup {t_fit - rounds_s:.2f}s + "
                      f"rounds {rounds_s:.2f}s)  AUC {a:.4f} ({a - auc_local:+.4f})  "
                      f"x{t_fit / t_near:.2f} of the local fit just before ({t_near:.2f}s)",
                      flush=True)
                print(f"    CPU seconds: {cpu_client + cpu_workers:.1f} (client + scheduler "
                      f"{cpu_client:.1f}, workers {cpu_workers:.1f}) against the local fit's "
                      f"{cpu_local:.1f}", flush=True)
                if tm:
                    print(f"    fit parts: read shards {tm['read_s']:.2f}s, prepare {tm['prepare_s']:.2f}s, "
                          f"init model {tm['init_s']:.2f}s, train {tm['train_s']:.2f}s; "
                          f"rounds per epoch {run['rounds_per_epoch']}", flush=True)
                print("    all rounds: " + _parts(run, "total"), flush=True)
                for which in ("first", "last"):
                    print(f"    a round of the {which} epoch: " + _parts(run, which), flush=True)
    out["loadavg"] = os.getloadavg()
    print(f"load average {out['loadavg'][0]:.2f} {out['loadavg'][1]:.2f}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, f"RESULTS_{args.name}.json"), "w") as fh:
            json.dump(out, fh, indent=1)
        # (the markdown is written from the same figures)
        lines = [f"# bench_dask: {args.rows:,} rows, {args.epochs} epochs", "",
                 f"Command: `PYTHONPATH=. python benchmarks/bench_dask.py {' '.join(argv or sys.argv[1:])}`; "
                 f"load average {out['loadavg'][0]:.2f} / {out['loadavg'][1]:.2f} (1 / 5 min) at the end; "
                 f"the workers imported cfm before the fits ({out.get('worker_import_s', 0):.1f}s, not "
                 "counted, as the local process's import is not).", "",
                 "| run | fit s | x local (fit just before) | CPU s (client / workers) | AUC | "
                 "rounds | read + prepare + init s | rounds s = scatter + compute + transfer + "
                 "merge | MB to / from workers |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for r in out["runs"]:
            if "total_round_s" in r:
                setup = "+".join(f"{r.get('setup_' + k, float('nan')):.2f}"
                                 for k in ("read_s", "prepare_s", "init_s"))
                lines.append(
                    f"| {r['name']} | {r['fit_s']:.2f} | {r['fit_s'] / r['local_near_s']:.2f} "
                    f"({r['local_near_s']:.2f}) | {r['cpu_s']:.1f} ({r['cpu_client_s']:.1f} / "
                    f"{r['cpu_workers_s']:.1f}) | {r['auc']:.4f} "
                    f"| {sum(r['rounds_per_epoch'])} ({'/'.join(map(str, r['rounds_per_epoch']))}) "
                    f"| {setup} | {r['total_round_s']:.2f} = {r['total_scatter_s']:.2f} + "
                    f"{r['total_compute_s']:.2f} + {r['total_transfer_s']:.2f} + "
                    f"{r['total_merge_s']:.2f} | {r['total_bytes_to_workers'] / 1e6:.0f} / "
                    f"{r['total_bytes_from_workers'] / 1e6:.0f} |")
            else:
                lines.append(f"| {r['name']} | {r['fit_s']:.2f} | 1 | {r['cpu_s']:.1f} | "
                             f"{r['auc']:.4f} | | | | |")
        lines.append("")
        lines.append("Per round, first and last epoch (s; MB to / from workers):")
        lines.append("")
        for r in out["runs"]:
            if "total_round_s" in r:
                for which in ("first", "last"):
                    lines.append(f"- {r['name']}, {which} epoch: {_parts(r, which)}")
        with open(os.path.join(args.out, f"RESULTS_{args.name}.md"), "w") as fh:
            fh.write("\n".join(lines) + "\n")
    return out


if __name__ == "__main__":
    main()
