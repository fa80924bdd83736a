"""Rebuild bench_defaults JSON rows from its progress log (stderr).

The first full run of bench_defaults.py (before results were saved per data
set) died in xLearn on w8a; its log holds, per data set and model, cfm's
defaults / fixed-10 figures and every library's best grid point.  This turns
those lines into the JSON that ``bench_defaults.py --render`` and
``autotune_study.py --reference`` read (one value per cell: the log has no
per-repeat spread, and only the best grid point of each library).

    python benchmarks/studies/log_to_json.py LOG --only ml100k,house-price > out.json
"""
import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_defaults as bd  # noqa: E402
import real_data as rd  # noqa: E402

HEAD = re.compile(r"^\[(?P<ds>[^\]]+)\]")
DEF = re.compile(r"^\s+(?P<m>\w+): cfm defaults (?P<metric>AUC|RMSE) (?P<d>[\d.]+) \((?P<dt>[\d.]+)s\), "
                 r"fixed 10 epochs (?P<f>[\d.]+) \((?P<ft>[\d.]+)s\)")
BEST = re.compile(r"^\s+(?P<m>\w+): (?P<lib>\w+)\s+best of grid (?P<metric>AUC|RMSE) (?P<v>[\d.]+) "
                  r"\[lr=(?P<lr>[\d.]+) norm=(?P<n>[TF]) ep=(?P<e>\d+)\]")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("log", type=Path)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    only = [x for x in a.only.split(",") if x]
    rows, cur = {}, None
    for line in a.log.read_text().splitlines():
        m = HEAD.match(line)
        if m:
            cur = m["ds"]
            continue
        if only and cur not in only:
            continue
        m = DEF.match(line)
        if m:
            r = bd.Row(cur, m["m"], m["metric"], 0)
            r.defaults = bd.Cell([float(m["d"])], [float(m["dt"])])
            r.fixed10 = bd.Cell([float(m["f"])], [float(m["ft"])])
            rows[(cur, m["m"])] = r
            continue
        m = BEST.match(line)
        if m and (cur, m["m"]) in rows:
            cfg = {"lr": float(m["lr"]), "norm": m["n"] == "T", "epochs": int(m["e"])}
            key = bd.config_key(cfg["lr"], cfg["norm"], cfg["epochs"])
            rows[(cur, m["m"])].grid[m["lib"]] = {key: bd.Cell([float(m["v"])], [], cfg)}
    notes = {d.name: d.note for d in rd.catalogue() if any(k[0] == d.name for k in rows)}
    doc = {"rows": bd.rows_to_json(list(rows.values())),
           "meta": {"unknown_files": [], "seconds": 0.0, "notes": notes},
           "machine": [f"- (rebuilt from the log {a.log.name} by log_to_json.py: one value per "
                       "cell, best grid point only)"]}
    json.dump(doc, sys.stdout, default=float)


if __name__ == "__main__":
    main()
