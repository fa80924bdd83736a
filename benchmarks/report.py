"""Render the benchmark report: benchmarks/results/REPORT.md + PNG plots.

Rendering only; ``run_all.py`` runs the benchmarks and saves their outcomes
as JSON (``benchmarks/results/run_all.json``), then calls this module.  To
re-render a report from saved outcomes without running anything::

    python benchmarks/report.py benchmarks/results/run_all.json [--out REPORT.md] [--figures DIR]

(``python benchmarks/run_all.py --replot REPORT.md`` redraws the plots of an
existing report from its tables.)
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


# --------------------------------------------------------------------------
# Markdown helpers
# --------------------------------------------------------------------------

def parse_md_tables(text):
    """Markdown pipe tables in ``text`` -> list of (header, rows as dicts)."""
    tables = []
    lines = text.splitlines()
    i = 0
    while i < len(lines) - 1:
        a, b = lines[i].strip(), lines[i + 1].strip()
        if a.startswith("|") and re.fullmatch(r"\|?(\s*:?-{3,}:?\s*\|)+\s*:?-*:?\s*\|?", b):
            header = [c.strip() for c in a.strip("|").split("|")]
            rows = []
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                rows.append(dict(zip(header, cells)))
                i += 1
            tables.append((header, rows))
        else:
            i += 1
    return tables


def to_number(cell):
    """'5,086,833' / '3.36' / '0.6712' / 'AUC 0.6712' / '1.2x' -> float, else None."""
    if cell is None:
        return None
    m = re.fullmatch(r"(?:[A-Za-z]+\s+)?([-+]?[\d,]*\.?\d+(?:[eE][-+]?\d+)?)\s*(x|s|%|MB|GB)?",
                     str(cell).strip().strip("*`").strip())
    if not m:
        return None
    try:
        return float(m.group(1).replace(",", ""))
    except ValueError:
        return None


def demote_headings(md, levels=2):
    out = []
    fence = False
    for line in md.splitlines():
        if line.strip().startswith("```"):
            fence = not fence
        if not fence and re.match(r"#{1,6} ", line):
            line = "#" * levels + line
        out.append(line)
    return "\n".join(out)


# --------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------

def _plt():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def _bar(plt, ax, labels, values, title, ylabel, log=False):
    vals = [v if v is not None and v == v else 0.0 for v in values]
    ax.bar(range(len(vals)), vals, color=["C%d" % (i % 10) for i in range(len(vals))])
    ax.set_xticks(range(len(vals)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=8)
    pos = [v for v in vals if v > 0]
    # a log axis only for values spanning more than 20x, and with bars
    # starting well below the smallest (else their heights mislead)
    if log and len(pos) > 1 and max(pos) / min(pos) > 20:
        ax.set_yscale("log")
        ax.set_ylim(bottom=min(pos) / 5, top=max(pos) * 3)
    else:
        ax.set_ylim(bottom=0, top=max(vals + [0]) * 1.15 or 1)
    for i, v in enumerate(values):
        if v is not None and v == v:
            ax.annotate(_short(v), (i, vals[i]), ha="center", va="bottom", fontsize=7)


def _short(v):
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.1f}M"
    if a >= 1e4:
        return f"{v / 1e3:.0f}k"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 0.01:
        return f"{v:.2f}"
    return f"{v:.1e}"


def _save(plt, fig, figdir, name):
    figdir.mkdir(parents=True, exist_ok=True)
    path = figdir / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_fm(plt, res, figdir):
    """Fit time and scoring rows/s per dataset and library (defaults config)."""
    doc = res["json"]
    if doc:
        rows = [r for r in doc["rows"] if not r.get("error") and r.get("config") == "defaults"]
        data = [(r["dataset"], r["library"], r["fit_s"], r["score_rows_s"]) for r in rows]
    else:
        data = []
        for header, rows in parse_md_tables(res["markdown"]):
            if "library" in header and "fit time (s)" in header:
                for r in rows:
                    if r.get("config") == "defaults":
                        data.append((r["dataset"], r["library"], to_number(r["fit time (s)"]),
                                     to_number(r.get("scoring rows/s"))))
    if not data:
        return []
    datasets = list(dict.fromkeys(d[0] for d in data))
    fig, axes = plt.subplots(2, len(datasets), figsize=(3.2 * len(datasets) + 1, 6),
                             squeeze=False)
    for j, ds in enumerate(datasets):
        sub = [d for d in data if d[0] == ds]
        _bar(plt, axes[0][j], [d[1] for d in sub], [d[2] for d in sub], f"{ds}: fit time",
             "seconds (lower is better)")
        _bar(plt, axes[1][j], [d[1] for d in sub], [d[3] for d in sub], f"{ds}: scoring",
             "rows/s (higher is better)", log=True)
    return [_save(plt, fig, figdir, res["name"])]


def plot_parse(plt, res, figdir):
    doc = res["json"]
    if doc:
        data = [(r["task"], r["mb_s"]) for r in doc["rows"]]
    else:
        data = []
        for header, rows in parse_md_tables(res["markdown"]):
            if "MB/s" in header:
                data += [(r["task"], to_number(r["MB/s"])) for r in rows]
    if not data:
        return []
    fig, ax = plt.subplots(figsize=(7, 4))
    _bar(plt, ax, [d[0][:38] for d in data], [d[1] for d in data], "parsing throughput",
         "MB/s (higher is better)", log=True)
    return [_save(plt, fig, figdir, res["name"])]


def plot_outofcore(plt, res, figdir):
    doc = res["json"]
    if doc:
        data = [(r["mode"], r["fit_s"], r["max_rss_mb"]) for r in doc["results"]]
    else:
        data = []
        for header, rows in parse_md_tables(res["markdown"]):
            if "peak RSS (MB)" in header:
                data += [(r["mode"], to_number(r["fit time (s)"]), to_number(r["peak RSS (MB)"]))
                         for r in rows]
    if not data:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.5))
    _bar(plt, axes[0], [d[0] for d in data], [d[1] for d in data], "fit time", "seconds")
    _bar(plt, axes[1], [d[0] for d in data], [d[2] for d in data], "peak memory (max RSS)", "MB")
    return [_save(plt, fig, figdir, res["name"])]


def plot_xlearn_import(plt, res, figdir):
    doc = res["json"]
    if doc:
        rows = [r for r in doc["rows"] if "error" not in r]
    else:  # from the Markdown table
        rows = []
        for header, trs in parse_md_tables(res["markdown"]):
            if "max abs diff" in header:
                for r in trs:
                    parse_score = [to_number(x) for x in
                                   r.get("cfm parse + score s", "").split("+")]
                    if None in parse_score or len(parse_score) != 2:
                        continue
                    rows.append({"kind": r["model"], "rows": int(to_number(r["rows"]) or 0),
                                 "max_abs_diff": to_number(r["max abs diff"]),
                                 "xlearn_predict_s": to_number(r["xLearn predict s"]),
                                 "cfm_parse_s": parse_score[0], "cfm_score_s": parse_score[1]})
    if not rows:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.5))
    labels = [r["kind"] for r in rows]
    _bar(plt, axes[0], labels, [r["max_abs_diff"] for r in rows],
         "max |p_cfm - p_xLearn| (tolerance 1e-5)", "probability", log=True)
    axes[0].axhline(1e-5, color="red", linestyle="--", linewidth=1)
    xs = range(len(rows))
    axes[1].bar([x - 0.2 for x in xs], [r["xlearn_predict_s"] for r in rows], width=0.4,
                label="xLearn predict (file -> file)")
    axes[1].bar([x + 0.2 for x in xs], [r["cfm_parse_s"] + r["cfm_score_s"] for r in rows],
                width=0.4, label="cfm parse + score (in memory)")
    axes[1].set_xticks(list(xs))
    axes[1].set_xticklabels(labels)
    axes[1].set_ylabel("seconds", fontsize=8)
    axes[1].set_title(f"scoring {rows[0]['rows']:,} rows", fontsize=9)
    axes[1].legend(fontsize=7)
    return [_save(plt, fig, figdir, res["name"])]


def _grouped(plt, ax, labels, series, title):
    """Grouped bars: ``series`` is [(name, values)], one group per label."""
    n = max(len(series), 1)
    width = 0.8 / n
    for i, (name, vals) in enumerate(series):
        xs = [x - 0.4 + width * (i + 0.5) for x in range(len(labels))]
        ax.bar(xs, [v if v is not None else 0.0 for v in vals], width=width, label=name)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def plot_generic(plt, res, figdir):
    """Plots of the numeric columns of a script's first tables (for scripts
    without a dedicated plot, e.g. bench_predict / bench_mcmc).  Columns named
    "<library> <quantity>" that share the quantity (e.g. "cfm time (s)" and
    "myFM time (s)") are drawn as grouped bars, one group per row."""
    tables = []
    doc = res["json"]
    if doc and isinstance(doc.get("rows"), list) and doc["rows"] and isinstance(
            doc["rows"][0], dict):
        tables.append((list(doc["rows"][0].keys()), doc["rows"]))
    tables += parse_md_tables(res["markdown"])
    paths = []
    for t, (header, rows) in enumerate(tables[:4]):
        if not rows:
            continue
        num = [h for h in header if all(to_number(r.get(h)) is not None or r.get(h) in ("", None)
                                        for r in rows)
               and any(to_number(r.get(h)) is not None for r in rows)]
        text = [h for h in header if h not in num]
        if not num:
            continue
        labels = [" / ".join(str(r.get(h, "")).strip("*` ") for h in text[:2])[:40]
                  for r in rows]
        groups = {}
        for h in num:
            who, _, what = h.partition(" ")
            groups.setdefault(what if what else h, []).append((who if what else h, h))
        panels = [(what, cols) for what, cols in groups.items() if len(cols) > 1]
        panels += [(cols[0][1], cols) for what, cols in groups.items() if len(cols) == 1]
        panels = panels[:4]
        fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels) + 0.5, 4),
                                 squeeze=False)
        for j, (what, cols) in enumerate(panels):
            if len(cols) > 1:
                _grouped(plt, axes[0][j], labels,
                         [(who, [to_number(r.get(h)) for r in rows]) for who, h in cols], what)
            else:
                vals = [to_number(r.get(cols[0][1])) for r in rows]
                pos = [v for v in vals if v]
                log = len(pos) > 1 and min(pos) > 0 and max(pos) / min(pos) > 100
                _bar(plt, axes[0][j], labels, vals, what, what, log=log)
        paths.append(_save(plt, fig, figdir, f"{res['name']}_{t + 1}"))
    return paths


PLOTTERS = {"fm": plot_fm, "parse": plot_parse, "outofcore": plot_outofcore,
            "xlearn_import": plot_xlearn_import, "generic": plot_generic}


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def build_report(results, specs, machine, args, figdir, out_path, plt, started):
    lines = ["# cfm benchmark report", ""]
    when = started.strftime("%Y-%m-%d %H:%M UTC")
    argv = " ".join(shlex.quote(a) for a in args.argv)
    lines += [f"Generated {when} by `python benchmarks/run_all.py{(' ' + argv) if argv else ''}`"
              f" (total {sum(r['seconds'] for r in results) / 60:.1f} min).", ""]
    if args.quick:
        lines += ["> **Quick smoke run** (`--quick`): small data sets, one repeat. The figures "
                  "below only show that every benchmark runs; they are **not** representative "
                  "performance numbers.", ""]
    busy = getattr(args, "busy_note", "")
    if busy:
        lines += [f"> **Busy machine**: {busy} Timings are slower and noisier than on an idle "
                  "machine; the comparisons within each benchmark (same run, same load) remain "
                  "meaningful.", ""]
    lines += ["Every figure here comes from the command shown with it; rerun "
              "`python benchmarks/run_all.py` (or one script) to reproduce it. Libraries are "
              "compared side by side within each run, on the same machine, with the same "
              "thread count.", ""]
    lines += ["## Machine", ""] + machine + [""]
    if plt is None:
        lines += ["Plots: matplotlib is not installed, so this report has tables only "
                  "(`pip install matplotlib`, or the `bench` extra, to get PNG plots).", ""]
    lines += ["## Summary", "", "| benchmark | status | wall time | command |", "|---|---|---:|---|"]
    for r in results:
        cmd = f"`{r['command']}`" if r.get("command") else ""
        lines.append(f"| [{r['name']}](#{r['name'].replace('_', '-')}) | {r['status']} | "
                     f"{r['seconds']:.0f}s | {cmd} |")
    lines.append("")
    for r in results:
        lines += [f"<a id=\"{r['name'].replace('_', '-')}\"></a>", "",
                  f"## {r['name']}: {r['title']}", ""]
        if r.get("command"):
            lines += [f"Command: `{r['command']}` -- status: **{r['status']}**, "
                      f"{r['seconds']:.0f}s.", ""]
        if r["note"]:
            lines += [f"Note: {r['note'].strip()}", ""]
        for p in r.get("figures", []):
            rel = os.path.relpath(p, out_path.parent)
            lines += [f"![{r['name']}]({rel})", ""]
        if r.get("plot_note"):
            lines += [f"(plot: {r['plot_note']})", ""]
        if r["markdown"].strip():
            lines += [demote_headings(r["markdown"].strip()), ""]
        elif r["status"] == "ok":
            lines += ["(the script printed no Markdown)", ""]
        if r["status"] not in ("ok", "skipped") and r["log_tail"]:
            lines += ["Last lines of its log:", "", "```", r["log_tail"], "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def make_figures(results, specs, figdir, plt):
    for r in results:
        r["figures"] = []
        if plt is None or r["status"] == "skipped":
            continue
        kind = r.get("plot") or specs[r["name"]]["plot"]
        try:
            r["figures"] = PLOTTERS[kind](plt, r, figdir)
            if not r["figures"]:
                r["plot_note"] = "no numbers to plot"
        except Exception as exc:  # noqa: BLE001  (a plot must not kill the report)
            r["plot_note"] = f"plotting failed: {type(exc).__name__}: {exc}"


def replot(report_path, figdir, specs):
    """Redraw the plots of a report from the tables it contains (``specs``:
    benchmark name -> {"plot": kind}, as run_all.benchmarks gives)."""
    text = Path(report_path).read_text()
    parts = re.split(r'<a id="([\w-]+)"></a>', text)
    plt = _plt()
    if plt is None:
        print("[run_all] matplotlib is not installed", file=sys.stderr)
        return 1
    results = []
    for anchor, body in zip(parts[1::2], parts[2::2]):
        name = anchor.replace("-", "_")
        if name in specs:
            results.append({"name": name, "status": "ok", "json": None, "markdown": body})
    make_figures(results, specs, Path(figdir), plt)
    for r in results:
        print(f"[run_all] {r['name']}: {[str(p) for p in r['figures']] or r.get('plot_note')}",
              file=sys.stderr)
    return 0


# --------------------------------------------------------------------------
# Saved outcomes -> report
# --------------------------------------------------------------------------

def save_outcomes(path, results, machine, args, started):
    """Write what run_all measured (everything the report is built from) as JSON."""
    doc = {"started": started.isoformat(), "argv": list(args.argv), "quick": bool(args.quick),
           "busy_note": getattr(args, "busy_note", ""), "machine": list(machine),
           "results": [{k: v for k, v in r.items() if k not in ("figures", "plot_note")}
                       for r in results]}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(doc, indent=1, default=str) + "\n")


def render(results, specs, machine, args, figdir, out_path, started, plt=None, new=None):
    """Draw the plots of ``new`` (default: every result) and write the report."""
    make_figures(results if new is None else new, specs, Path(figdir), plt)
    for r in results:
        r.setdefault("figures", [])
    Path(out_path).write_text(build_report(results, specs, machine, args, Path(figdir),
                                           Path(out_path), plt, started))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outcomes", type=Path, help="JSON written by run_all.py "
                    "(default benchmarks/results/run_all.json)", nargs="?",
                    default=RESULTS / "run_all.json")
    ap.add_argument("--out", type=Path, default=None,
                    help="report path (default: REPORT.md next to the JSON file)")
    ap.add_argument("--figures", type=Path, default=None,
                    help="PNG directory (default: figures/ next to the report)")
    a = ap.parse_args(argv)
    doc = json.loads(a.outcomes.read_text())
    out = a.out or a.outcomes.parent / ("REPORT_quick.md" if doc["quick"] else "REPORT.md")
    figdir = a.figures or out.parent / ("figures_quick" if doc["quick"] else "figures")
    args = argparse.Namespace(argv=doc["argv"], quick=doc["quick"], busy_note=doc["busy_note"])
    results = doc["results"]
    specs = {r["name"]: {"plot": r.get("plot", "generic")} for r in results}
    plt = _plt()
    render(results, specs, doc["machine"], args, figdir, out,
           _dt.datetime.fromisoformat(doc["started"]), plt)
    print(f"[report] wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
