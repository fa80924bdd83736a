"""cfm's ALS and MCMC solvers side by side with myFM (and cfm's SGD solvers).

    python benchmarks/bench_mcmc.py      # full run, writes benchmarks/results/RESULTS_mcmc.md
    python benchmarks/bench_mcmc.py --quick        # u1 only, 1 timing run, 50 sweeps

What it measures, in one run (data from ../shared/data, see benchmarks/bench_data.py):

* MovieLens 100k, official folds u1..u5, one-hot user + item, k=8, 200 sweeps:
  cfm ``FMRegressor(solver="mcmc")`` vs myFM ``MyFMGibbsRegressor(rank=8)`` --
  test RMSE per fold and mean, wall time of fit + test prediction (median of
  ``--repeats`` runs, the two libraries alternating), cfm with ``n_jobs=2``
  (myFM's sampler has no thread setting), and the speed ratio.  Both with
  their defaults (cfm: one prior group per detected one-hot field, here users
  and items; myFM: one group); a second table compares them with identical
  priors (one group for both; user / item groups for both, libFM's -meta).
* cfm ``solver="als"`` (default L2, 30 sweeps) RMSE per fold vs the best of
  cfm's SGD / AdaGrad over a small learning-rate grid (chosen on the test
  fold itself, so the SGD figure is optimistic).
* Mushroom (agaricus) binary classification, k=8, 200 sweeps: AUC of cfm's
  probit MCMC vs ``MyFMGibbsClassifier``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench_data as bds
import numpy as np
from bench_fm import capture_fds, machine_info, median

SGD_GRID = [("adagrad", lr) for lr in (0.05, 0.1, 0.15, 0.2, 0.3)] + \
           [("sgd", lr) for lr in (0.02, 0.05, 0.1)]


def rmse(y, p):
    return float(np.sqrt(np.mean((np.asarray(p, dtype=np.float64) - y) ** 2)))


def auc(y, s):
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


class Quiet:
    """Send C-level and tqdm output (myFM's progress bar) to a log file."""

    def __init__(self, log):
        self.log = log

    def __enter__(self):
        self.cm = capture_fds(self.log)
        self.cm.__enter__()

    def __exit__(self, *exc):
        return self.cm.__exit__(*exc)


def run_cfm_mcmc(cls, Xtr, ytr, Xte, k, sweeps, threads, seed, groups=None, proba=False):
    t = time.perf_counter()
    m = cls(n_factors=k, solver="mcmc", n_epochs=sweeps, n_jobs=threads, random_state=seed)
    m.fit(Xtr, ytr, groups=groups)
    p = m.predict_proba(Xte)[:, 1] if proba else m.predict(Xte)
    return time.perf_counter() - t, p, m


def run_myfm(cls_name, Xtr, ytr, Xte, k, sweeps, seed, log, grouping=None, proba=False):
    import myfm

    cls = getattr(myfm, cls_name)
    with Quiet(log):
        t = time.perf_counter()
        m = cls(rank=k, random_seed=seed)
        m.fit(Xtr, ytr, n_iter=sweeps, grouping=grouping)
        p = m.predict_proba(Xte) if proba else m.predict(Xte)
        dt = time.perf_counter() - t
    return dt, p


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folds", default="u1,u2,u3,u4,u5")
    ap.add_argument("--sweeps", type=int, default=200)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="timing runs per fold (median)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(HERE / "results" / "RESULTS_mcmc.md"))
    ap.add_argument("--quick", action="store_true", help="u1 only, 1 run, 50 sweeps")
    ap.add_argument("--no-groups", action="store_true", help="skip the grouped-prior table")
    args = ap.parse_args(argv)
    if args.quick:
        args.folds, args.repeats, args.sweeps = "u1", 1, 50
    folds = [f.strip() for f in args.folds.split(",") if f.strip()]

    import cfm

    try:
        import myfm
        have_myfm = True
    except ImportError:
        have_myfm = False
        print("myfm is not installed (pip install myfm): cfm figures only", file=sys.stderr)
    log = os.path.join(tempfile.gettempdir(), "bench_mcmc_myfm.log")
    lines = ["# ALS / MCMC benchmark: cfm vs myFM", "",
             "Command (rerun to regenerate this file): `python benchmarks/bench_mcmc.py"
             + (" --quick" if args.quick else "") + "`", ""]
    lines += machine_info(args.threads)
    lines.append(f"- myFM: {'myfm ' + myfm.__version__ if have_myfm else 'not installed'}")
    lines.append(f"- Settings: k={args.k}, sweeps={args.sweeps}, cfm n_jobs={args.threads}, "
                 f"timing = median of {args.repeats} run(s) of fit + test prediction, "
                 f"seed={args.seed}")
    lines.append("")
    print("\n".join(lines), flush=True)

    # ------------------------------------------------------------ MovieLens
    rows, grows, arows = [], [], []
    for fold in folds:
        Xtr, ytr, Xte, yte = bds.load_movielens_fold(fold, args.data_dir)
        times_c, times_m, times_1 = [], [], []
        r_c = r_m = float("nan")
        n_groups = None
        for rep in range(args.repeats):
            order = ("cfm", "myfm", "cfm1") if rep % 2 == 0 else ("cfm1", "myfm", "cfm")
            for lib in order:
                if lib == "cfm":
                    dt, p, m = run_cfm_mcmc(cfm.FMRegressor, Xtr, ytr, Xte, args.k, args.sweeps,
                                            args.threads, args.seed)
                    times_c.append(dt)
                    r_c = rmse(yte, p)
                    n_groups = m.n_prior_groups_
                elif lib == "cfm1":  # the same fit on one thread (identical results)
                    dt, p, _ = run_cfm_mcmc(cfm.FMRegressor, Xtr, ytr, Xte, args.k, args.sweeps,
                                            1, args.seed)
                    times_1.append(dt)
                    if not np.isnan(r_c) and rmse(yte, p) != r_c:
                        raise AssertionError("cfm results depend on n_jobs")
                elif have_myfm:
                    dt, p = run_myfm("MyFMGibbsRegressor", Xtr, ytr, Xte, args.k, args.sweeps,
                                     args.seed, log)
                    times_m.append(dt)
                    r_m = rmse(yte, p)
        tc, tm, t1 = median(times_c), median(times_m), median(times_1)
        rows.append((fold, r_c, r_m, tc, tm, n_groups, t1))
        print(f"{fold}: mcmc RMSE cfm {r_c:.4f} myfm {r_m:.4f}  time cfm {tc:.2f}s "
              f"myfm {tm:.2f}s  ratio {tm / tc:.2f}x", flush=True)
        if not args.no_groups:
            # identical priors: one group for both; users / items for both
            one = np.zeros(Xtr.shape[1], int)
            _, p, _ = run_cfm_mcmc(cfm.FMRegressor, Xtr, ytr, Xte, args.k, args.sweeps,
                                   args.threads, args.seed, groups=one)
            s_c = rmse(yte, p)
            ui = np.r_[np.zeros(bds.ML100K_N_USERS, int), np.ones(bds.ML100K_N_ITEMS, int)]
            _, p, _ = run_cfm_mcmc(cfm.FMRegressor, Xtr, ytr, Xte, args.k, args.sweeps,
                                   args.threads, args.seed, groups=ui)
            g_c = rmse(yte, p)
            g_m = float("nan")
            if have_myfm:
                _, p = run_myfm("MyFMGibbsRegressor", Xtr, ytr, Xte, args.k, args.sweeps,
                                args.seed, log, grouping=list(ui))
                g_m = rmse(yte, p)
            grows.append((fold, s_c, r_m, g_c, g_m))
            print(f"{fold}: one group RMSE cfm {s_c:.4f} myfm {r_m:.4f}; user/item groups "
                  f"cfm {g_c:.4f} myfm {g_m:.4f}", flush=True)
        # ALS vs the best SGD-type setting
        t = time.perf_counter()
        als = cfm.FMRegressor(n_factors=args.k, solver="als", n_jobs=args.threads,
                              random_state=args.seed).fit(Xtr, ytr)
        t_als = time.perf_counter() - t
        r_als = rmse(yte, als.predict(Xte))
        best = (float("inf"), None)
        for solver, lr in SGD_GRID:
            m = cfm.FMRegressor(n_factors=args.k, solver=solver, learning_rate=lr,
                                n_jobs=args.threads, random_state=args.seed).fit(Xtr, ytr)
            best = min(best, (rmse(yte, m.predict(Xte)), f"{solver} lr={lr}"))
        arows.append((fold, r_als, t_als, best[0], best[1]))
        print(f"{fold}: ALS RMSE {r_als:.4f} ({t_als:.2f}s)  best SGD-type {best[0]:.4f} "
              f"({best[1]})", flush=True)

    def mean(xs):
        return float(np.mean(xs))

    out = ["## MovieLens 100k: MCMC (Bayesian FM, Gibbs sampling)", "",
           f"One-hot user + item (2,625 columns), k={args.k}, {args.sweeps} sweeps, both "
           "libraries with their defaults. cfm: `FMRegressor(solver=\"mcmc\", n_epochs="
           f"{args.sweeps}, n_jobs={args.threads})` (burn-in: default n_epochs // 10, at "
           "most 50; predictions clipped to the training rating range, as libFM; prior "
           "groups: one per detected one-hot field, here "
           f"{sorted(set(r[5] for r in rows))} groups = users, items). myFM: "
           f"`MyFMGibbsRegressor(rank={args.k}).fit(X, y, n_iter={args.sweeps})` (one prior "
           "group). Time = fit + prediction of the test fold (median of runs).", "",
           f"| fold | cfm RMSE | myFM RMSE | cfm time (s), n_jobs={args.threads} | myFM time (s) "
           "| cfm speed-up | cfm time (s), n_jobs=1 |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for fold, r_c, r_m, tc, tm, _, t1 in rows:
        out.append(f"| {fold} | {r_c:.4f} | {r_m:.4f} | {tc:.2f} | {tm:.2f} | {tm / tc:.2f}x | "
                   f"{t1:.2f} |")
    out.append(f"| **mean** | **{mean([r[1] for r in rows]):.4f}** | "
               f"**{mean([r[2] for r in rows]):.4f}** | {mean([r[3] for r in rows]):.2f} | "
               f"{mean([r[4] for r in rows]):.2f} | "
               f"**{mean([r[4] for r in rows]) / mean([r[3] for r in rows]):.2f}x** | "
               f"{mean([r[6] for r in rows]):.2f} |")
    out.append("")
    if grows:
        out += ["Identical priors in both libraries, test RMSE: one prior group for all "
                "columns (cfm `fit(..., groups=np.zeros(n_features))`, myFM's default), and "
                "one group for the users and one for the items (cfm `groups=`, myFM "
                "`grouping=`; libFM's -meta):", "",
                "| fold | one group: cfm | one group: myFM | user/item: cfm | user/item: myFM |",
                "|---|---:|---:|---:|---:|"]
        for fold, s_c, s_m, g_c, g_m in grows:
            out.append(f"| {fold} | {s_c:.4f} | {s_m:.4f} | {g_c:.4f} | {g_m:.4f} |")
        out.append("| **mean** | " + " | ".join(
            f"**{mean([r[i] for r in grows]):.4f}**" for i in range(1, 5)) + " |")
        out.append("")
    out += ["## MovieLens 100k: ALS vs SGD-type solvers", "",
            f"cfm `FMRegressor(solver=\"als\")` with its defaults (30 sweeps, l2_w=5, l2_v=12 on "
            "the total loss) vs the best test RMSE of cfm's SGD / AdaGrad (10 epochs) over "
            f"the grid {', '.join(f'{s} lr={lr}' for s, lr in SGD_GRID)} (picked on the test "
            "fold: optimistic for SGD).", "",
            "| fold | ALS RMSE | ALS time (s) | best SGD-type RMSE | best setting | ALS - SGD |",
            "|---|---:|---:|---:|---|---:|"]
    for fold, r_als, t_als, r_sgd, cfg in arows:
        out.append(f"| {fold} | {r_als:.4f} | {t_als:.2f} | {r_sgd:.4f} | {cfg} | "
                   f"{r_als - r_sgd:+.4f} |")
    out.append(f"| **mean** | **{mean([r[1] for r in arows]):.4f}** | "
               f"{mean([r[2] for r in arows]):.2f} | **{mean([r[3] for r in arows]):.4f}** | | "
               f"{mean([r[1] for r in arows]) - mean([r[3] for r in arows]):+.4f} |")
    out.append("")
    print("\n".join(out), flush=True)

    # ------------------------------------------------------------ mushroom
    Xtr, ytr, Xte, yte = bds.load_mushroom(args.data_dir)
    tcs, tms = [], []
    a_m = float("nan")
    for _ in range(args.repeats):
        dt, pc, _ = run_cfm_mcmc(cfm.FMClassifier, Xtr, ytr, Xte, args.k, args.sweeps,
                                 args.threads, args.seed, proba=True)
        tcs.append(dt)
        a_c = auc(yte, pc)
        if have_myfm:
            dt, pm = run_myfm("MyFMGibbsClassifier", Xtr, ytr, Xte, args.k, args.sweeps,
                              args.seed, log, proba=True)
            tms.append(dt)
            a_m = auc(yte, pm)
    tc, tm = median(tcs), median(tms)
    mush = ["## Mushroom (agaricus): probit MCMC classification", "",
            f"{Xtr.shape[0]:,} train / {Xte.shape[0]:,} test rows, {Xtr.shape[1]} columns, "
            f"k={args.k}, {args.sweeps} sweeps. cfm `FMClassifier(solver=\"mcmc\")` vs myFM "
            "`MyFMGibbsClassifier`; AUC of the posterior-mean probability; time = fit + "
            "prediction (median of runs).", "",
            "| library | test AUC | time (s) |", "|---|---:|---:|",
            f"| cfm | {a_c:.6f} | {tc:.2f} |", f"| myFM | {a_m:.6f} | {tm:.2f} |", ""]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    mush += [f"- Load average at end: {load}", ""]
    print("\n".join(mush), flush=True)
    Path(args.out).write_text("\n".join(lines + out + mush))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
