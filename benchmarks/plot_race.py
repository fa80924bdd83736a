"""Validation curves of the race that ``fit`` runs with the defaults (issue 13), as an SVG.

    python benchmarks/plot_race.py                          # ml100k-side, FMRegressor
    python benchmarks/plot_race.py --dataset criteo1tb-day0 --out /tmp/race.svg

Fits the default estimator (``n_jobs=1``, ``random_state=0``) on the first
training split of a data set of ``benchmarks/real_data.py`` and draws, per
candidate of the race, its validation metric after every epoch
(``race_["candidates"][i]["curve"]``): a curve ends at the rung that dropped
the candidate; the winner's runs on until early stopping, and a marker shows
the best epoch (the epoch count of the refit on all rows).  Also prints the
curves as a table.  Plain SVG written by hand: no plotting library needed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def fit(name, model):
    import cfm
    import real_data as rd

    (ds,) = rd.load_all(names=[name])
    split = ds.repeats()[0][0]
    binary = ds.task == "binary"
    if model == "ffm":
        est = (cfm.FFMClassifier if binary else cfm.FFMRegressor)(n_jobs=1, random_state=0)
        est.fit(split.X_train, split.y_train, fields=split.fields)
    else:
        est = (cfm.FMClassifier if binary else cfm.FMRegressor)(n_jobs=1, random_state=0)
        est.fit(split.X_train, split.y_train)
    return est, split


def svg(race, best_params, title, width=780, height=380):
    """The race's curves as an SVG document (a string)."""
    left, right, top, bottom = 70, 260, 40, 50
    curves = [c["curve"] for c in race["candidates"]]
    values = np.array([v for c in curves for v in c if np.isfinite(v)])
    lo, hi = float(values.min()), float(values.max())
    pad = (hi - lo) * 0.05 or 1e-3
    lo, hi = lo - pad, hi + pad
    n_ep = max(len(c) for c in curves)
    pw, ph = width - left - right, height - top - bottom

    def x(e):  # epoch 1..n_ep
        return left + (e - 1) / max(n_ep - 1, 1) * pw

    def y(v):
        return top + (hi - v) / (hi - lo) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="22" font-size="14">{title}</text>',
           f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>']
    for e in range(1, n_ep + 1):
        out.append(f'<text x="{x(e):.1f}" y="{top + ph + 16}" text-anchor="middle">{e}</text>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{height - 12}" text-anchor="middle">'
               'epoch (training rows only)</text>')
    for t in np.linspace(lo + pad, hi - pad, 5):
        out.append(f'<text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{t:.4f}</text>')
        out.append(f'<line x1="{left}" y1="{y(t):.1f}" x2="{left + pw}" y2="{y(t):.1f}" '
                   'stroke="#ddd"/>')
    out.append(f'<text x="14" y="{top + ph / 2:.1f}" transform="rotate(-90 14 {top + ph / 2:.1f})"'
               f' text-anchor="middle">validation {race["metric"].upper()}</text>')
    for i, (c, colour) in enumerate(zip(race["candidates"], COLOURS)):
        pts = [(x(e + 1), y(v)) for e, v in enumerate(c["curve"]) if np.isfinite(v)]
        win = i == race["winner"]
        out.append('<polyline fill="none" stroke="{}" stroke-width="{}" points="{}"/>'.format(
            colour, 3 if win else 1.5, " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)))
        for a, b in pts:
            out.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.5" fill="{colour}"/>')
        label = (f"lr {c['learning_rate']:g}, normalize {'T' if c['normalize'] else 'F'}"
                 + (" (winner)" if win else f" (dropped {c['dropped_at']})"))
        ly = top + 10 + 18 * i
        out.append(f'<line x1="{left + pw + 12}" y1="{ly}" x2="{left + pw + 30}" y2="{ly}" '
                   f'stroke="{colour}" stroke-width="{3 if win else 1.5}"/>')
        out.append(f'<text x="{left + pw + 34}" y="{ly + 4}">{label}</text>')
    w = race["candidates"][race["winner"]]
    e = race["best_epoch"]
    out.append(f'<circle cx="{x(e):.1f}" cy="{y(w["curve"][e - 1]):.1f}" r="7" fill="none" '
               'stroke="black" stroke-width="2"/>')
    ly = top + 10 + 18 * (len(race["candidates"]) + 1)
    out.append(f'<text x="{left + pw + 12}" y="{ly}">best epoch {e}: refit on</text>')
    out.append(f'<text x="{left + pw + 12}" y="{ly + 16}">all rows for {best_params["n_epochs"]} '
               'epochs</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="ml100k-side")
    ap.add_argument("--model", default="fm", choices=("fm", "ffm"))
    ap.add_argument("--out", default=str(HERE / "results" / "figures" / "race_curves.svg"))
    args = ap.parse_args(argv)
    est, split = fit(args.dataset, args.model)
    race, bp = est.race_, est.best_params_
    if race is None:
        raise SystemExit(f"no race on {args.dataset}: {bp['auto']}")
    for c in race["candidates"]:
        print(f"lr {c['learning_rate']:<5g} normalize {str(c['normalize']):<5s} "
              f"dropped at {str(c['dropped_at']):<4s} "
              + " ".join(f"{v:.4f}" for v in c["curve"]))
    print(f"best_params_: {bp}; {race['row_epochs']:.1f} row-epochs")
    title = (f"{type(est).__name__}() on {args.dataset} ({split.X_train.shape[0]:,} rows): "
             "the race of fit's defaults")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(svg(race, bp, title))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
