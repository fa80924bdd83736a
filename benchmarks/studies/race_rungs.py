"""Study: at which epochs a race with fewer than six candidates decides.

A race of 6 candidates (the defaults) halves at epochs 1, 2 and 4
(6 -> 3 -> 2 -> 1).  Until 2026-12-03 a race of fewer candidates used the
same first rungs: two candidates (``learning_rate`` given, or a table too
large for memory to hold more: large FFMs) were decided after ONE epoch,
three (``normalize`` given) after epochs 1 and 2.  ``race_rungs`` now
keeps the last ceil(log2 n) rungs, so the last two candidates are always
compared after epoch 4.  This script fits the same estimators with both
rules in one process (the old one by replacing ``race_rungs``) on every
real data set of ``../shared/data`` and on the synthetic Criteo-shaped set
at 30k and 100k training rows (FFM there holds only two candidates: the
memory limit), and prints the test metric of each.

    python benchmarks/studies/race_rungs.py [--out benchmarks/results/RESULTS_race_rungs.md]

n_jobs=1 and fixed seeds: every figure is reproducible bit for bit.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import real_data as rd  # noqa: E402
from bench_defaults import cfm_estimator, cfm_fit, cfm_score, models_for, runs_of  # noqa: E402

from cfm._train import autotune  # noqa: E402

NEW = autotune.race_rungs


def old_rungs(n_candidates, n_epochs=None):
    """The rule before 2026-12-03: every race starts at RUNGS[0]."""
    if n_epochs is None:
        return autotune.RUNGS
    return tuple(sorted({min(r, n_epochs) for r in autotune.RUNGS}))


SETTINGS = {  # what the user passes -> how many candidates race
    "learning_rate=0.1 (2 candidates)": {"learning_rate": 0.1},
    "normalize=True (3 candidates)": {"normalize": True},
}


def evaluate(ds, model, params, rule):
    autotune.race_rungs = rule
    try:
        vals, secs, chosen = [], 0.0, []
        for _, seed, folds in runs_of(ds, 3):
            ys, preds = [], []
            for split in folds:
                est = cfm_estimator(ds.task, model, random_state=seed, n_jobs=1, **params)
                t = time.perf_counter()
                cfm_fit(est, split, model)
                secs += time.perf_counter() - t
                ys.append(split.y_test)
                preds.append(cfm_score(est, split.X_test, ds.task))
                bp = est.best_params_
                chosen.append(f"{bp['learning_rate']:g}/{'T' if bp['normalize'] else 'F'}/"
                              f"{bp['n_epochs']}" if bp.get("auto") == "race" else "guard")
            vals.append(rd.metric_value(ds.task, np.concatenate(ys), np.concatenate(preds)))
        return float(np.mean(vals)), secs, chosen
    finally:
        autotune.race_rungs = NEW


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--only", default="")
    ap.add_argument("--synthetic-rows", default="30000,100000")
    args = ap.parse_args(argv)
    only = [x for x in args.only.split(",") if x]
    sets = [d for d in rd.load_all(None, only or None) if d.name != "synthetic-1000k"]
    syn = [int(x) for x in args.synthetic_rows.split(",") if x]
    lines = ["| data set | model | user passes | metric | old rule (decided from epoch 1) | "
             "new rule (last two compared at epoch 4) | new - old (> 0: better) | chosen old -> new |",
             "|---|---|---|---|---:|---:|---:|---|"]

    def row(ds, model, label, params):
        o, _, co = evaluate(ds, model, params, old_rungs)
        n, _, cn = evaluate(ds, model, params, NEW)
        sign = 1 if ds.task == "binary" else -1
        same = "same" if co == cn else f"{' '.join(co)} -> {' '.join(cn)}"
        line = (f"| {ds.name} | {model} | {label} | {ds.metric} | {o:.4f} | {n:.4f} | "
                f"{sign * (n - o):+.4f} | {same} |")
        print(line, flush=True)
        lines.append(line)

    for ds in sets:
        for model in models_for(ds, ["fm", "ffm"]):
            for label, params in SETTINGS.items():
                row(ds, model, label, params)
        ds.release()
    for n in syn:
        ds = [d for d in rd.catalogue(None, include_synthetic=True, synthetic_rows=n)
              if d.name.startswith("synthetic")][0]
        for model in ("fm", "ffm"):
            row(ds, model, "defaults (FFM: 2 candidates, memory)" if model == "ffm"
                else "defaults (6 candidates)", {})
        ds.release()
    text = "\n".join(["# Race rungs: when a race of fewer than six candidates decides", "",
                      "Command: `python benchmarks/studies/race_rungs.py"
                      + (f" --out {args.out}" if args.out else "") + "` (n_jobs=1, seeded: "
                      "reproducible). Test metric, mean over repeats (as bench_defaults.py); "
                      "'chosen' lists lr/normalize/epochs per fit (guard: no race).", ""]
                     + lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
