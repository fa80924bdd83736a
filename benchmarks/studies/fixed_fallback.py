"""Study: is there a better fixed setting for the fits the race's guard skips?

When the validation split is too small to resolve the race (fewer than 200
minority-class rows, or 1,000 rows for regression), ``fit(X, y)`` trains the
fixed defaults (learning_rate 0.1, normalize=True, 10 epochs).  This reads
the cfm grid of ``benchmarks/results/RESULTS_defaults.json`` (test metric of
every learning_rate x normalize x epochs point) on the guarded data sets and
ranks every grid point by its shortfall against the best grid point of each
set (AUC: best - value; RMSE: value - best), averaged over the sets.

    python benchmarks/studies/fixed_fallback.py [--json benchmarks/results/RESULTS_defaults.json]

A fixed fallback within 0.003 of the best on every guarded set would be the
issue-13 target for them; the output says whether one exists.
"""
import argparse
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GUARDED = ("criteo-xlearn", "mushroom", "titanic", "house-price", "w8a", "criteo1tb-day0",
           "deepctr-criteo", "deepctr-avazu", "deepctr-movielens")
DEFAULT = "lr=0.1 norm=T ep=10"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, default=HERE.parent / "results" / "RESULTS_defaults.json")
    ap.add_argument("--top", type=int, default=8)
    args = ap.parse_args(argv)
    rows = json.loads(args.json.read_text())["rows"]
    table = {}
    for r in rows:
        grid = r["grid"].get("cfm", {})
        if r["dataset"] not in GUARDED or len(grid) < 40:  # sets with the whole grid only
            continue
        sign = 1.0 if r["metric"].startswith("AUC") else -1.0
        vals = {k: float(np.mean(v["metrics"])) for k, v in grid.items() if v["metrics"]}
        best = max(sign * v for v in vals.values())
        table[f"{r['dataset']}/{r['model']}"] = {k: best - sign * v for k, v in vals.items()}
    keys = set.intersection(*(set(t) for t in table.values()))
    ranked = sorted(keys, key=lambda k: np.mean([t[k] for t in table.values()]))
    names = list(table)
    print(f"guarded sets with the whole grid ({len(names)}): {', '.join(names)}\n")
    print("| fixed setting | mean shortfall | max shortfall | sets within 0.003 |")
    print("|---|---:|---:|---:|")
    for k in ranked[:args.top] + ([DEFAULT] if DEFAULT not in ranked[:args.top] else []):
        s = [table[n][k] for n in names]
        mark = " (today's fallback)" if k == DEFAULT else ""
        print(f"| {k}{mark} | {np.mean(s):.4f} | {max(s):.4f} | "
              f"{sum(x <= 0.003 for x in s)}/{len(s)} |")
    ok = [k for k in keys if all(table[n][k] <= 0.003 for n in names)]
    print(f"\nfixed settings within 0.003 of the best on every guarded set: {len(ok)}")


if __name__ == "__main__":
    main()
