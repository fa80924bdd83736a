"""Run every cfm benchmark and write one report: benchmarks/REPORT.md + PNG plots.

    python benchmarks/run_all.py                 # full runs (an hour or more on 2 cores)
    python benchmarks/run_all.py --quick         # small data: a smoke test of the whole chain
    python benchmarks/run_all.py --only fm,ffm   # a subset (names below)
    python benchmarks/run_all.py --list          # what would run, with the commands
    python benchmarks/run_all.py --replot benchmarks/REPORT.md   # redraw the plots only

Benchmarks (each its own script, run in its own process, side by side with
the other libraries within that script):

=============  =================================================================
fm             bench_fm.py: FM training + in-memory scoring, cfm vs xLearn vs
               modern_fm (synthetic Criteo-shaped 1M rows + real data sets)
ffm            bench_fm.py --model ffm: FFM, cfm vs xLearn
parse          bench_parse.py: text parsing vs scikit-learn / xLearn
outofcore      bench_outofcore.py: training from a 2.4 GB file, peak memory
predict        bench_predict.py: batch scoring file -> file and in memory
               (skipped with a note when the script is absent)
mcmc           bench_mcmc.py: MCMC/ALS vs myFM (skipped when absent)
xlearn_import  bench_xlearn_import.py: imported xLearn models vs xLearn predict
=============  =================================================================

Every benchmark gets ``--json`` when its script supports it (result rows for
the plots); otherwise the Markdown tables it prints are parsed.  A benchmark
that fails or times out is reported with the tail of its log; the others
still run, and the report is always written.  Plots need matplotlib
(``pip install cfm[bench]``); without it the report says so and has tables
only.  ``--quick`` writes to REPORT_quick.md / figures_quick/ unless ``--out``
/ ``--figures`` say otherwise, so a smoke test never overwrites the full
report.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


# --------------------------------------------------------------------------
# What runs
# --------------------------------------------------------------------------

def benchmarks(threads, workdir):
    """name -> spec: script, full args, quick args, plot kind, description.

    ``workdir`` is where quick runs put their (small) data files, so they do
    not mix with the full runs' cached files in /tmp/cfm_bench.
    """
    t = str(threads)
    wd = str(workdir)
    return {
        "fm": dict(
            script="bench_fm.py",
            full=["--lr-grid", "0.05,0.1,0.2", "--threads", t],
            quick=["--rows", "50000", "--test-rows", "10000", "--repeats", "1", "--epochs", "2",
                   "--only", "synthetic", "--threads", t],
            title="FM training and scoring: cfm vs xLearn vs modern_fm",
            plot="fm"),
        "ffm": dict(
            script="bench_fm.py",
            # as the README's FFM command: float32 table too, and the lr grid
            full=["--model", "ffm", "--libs", "cfm,cfm_f32,xlearn", "--lr-grid",
                  "0.05,0.1,0.2", "--threads", t],
            quick=["--model", "ffm", "--repeats", "1", "--epochs", "2", "--k", "4",
                   "--only", "real", "--threads", t],
            title="FFM training and scoring: cfm vs xLearn",
            plot="fm"),
        "parse": dict(
            script="bench_parse.py",
            full=["--threads", t],
            quick=["--threads", t, "--size-mb", "20", "--repeats", "1", "--workdir", wd],
            title="Text parsing: cfm vs scikit-learn vs xLearn",
            plot="parse"),
        "outofcore": dict(
            script="bench_outofcore.py",
            full=["--threads", t],
            quick=["--threads", t, "--rows", "200000", "--test-rows", "20000", "--epochs", "1",
                   "--workdir", wd],
            title="Out-of-core training: fit time and peak memory",
            plot="outofcore"),
        "predict": dict(
            script="bench_predict.py",
            full=["--threads", t],
            # bench_predict.py (branch issue5a) has no --quick: small sizes instead
            quick=["--threads", t, "--rows", "50000", "--train-rows", "20000", "--repeats", "1",
                   "--scales", "1", "--workdir", wd],
            quick_opts=["--quick"],
            title="Batch scoring: file -> file and in memory, cfm vs xLearn",
            plot="generic"),
        "mcmc": dict(
            script="bench_mcmc.py",
            full=["--threads", t],
            quick=["--threads", t],
            quick_opts=["--quick"],
            title="MCMC / ALS: cfm vs myFM",
            plot="generic"),
        "xlearn_import": dict(
            script="bench_xlearn_import.py",
            full=["--threads", t],
            quick=["--threads", t, "--rows", "50000", "--train-rows", "20000"],
            title="xLearn model import: predictions and ranking vs xLearn",
            plot="xlearn_import"),
    }


# --------------------------------------------------------------------------
# Machine description
# --------------------------------------------------------------------------

def _cmd_out(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_description(threads):
    lines = []
    lscpu = _cmd_out(["lscpu"])
    keep = ("Model name", "Architecture", "CPU(s)", "Thread(s) per core", "Core(s) per socket",
            "Socket(s)", "CPU max MHz", "L1d cache", "L2 cache", "L3 cache", "Flags")
    info = {}
    for line in lscpu.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            info[k.strip()] = " ".join(v.split())
    for k in keep:
        if k in info:
            v = info[k]
            if k == "Flags":  # only the SIMD levels that matter to the kernels
                simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f") if f in v.split()]
                v = " ".join(simd) or "none of sse4_2/avx/avx2/fma/avx512f"
                k = "SIMD flags"
            lines.append(f"- {k}: {v}")
    nproc = _cmd_out(["nproc"]).strip() or str(os.cpu_count())
    lines.append(f"- nproc (usable CPUs): {nproc}")
    try:
        mem = next(line for line in open("/proc/meminfo") if line.startswith("MemTotal"))
        lines.append(f"- RAM: {int(mem.split()[1]) / 2**20:.1f} GiB")
    except (OSError, StopIteration):
        pass
    if hasattr(os, "getloadavg"):
        lines.append("- Load average at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg())
                     + " (the machine may be shared: timings are noisy)")
    lines.append(f"- Threads given to every library: {threads}")
    lines.append(f"- OS: {platform.platform()}")
    lines.append(f"- Python {platform.python_version()} ({sys.executable})")
    vers = []
    env = _bench_env()
    code = ("import importlib\n"
            "for m in ('cfm','numpy','scipy','sklearn','xlearn','modern_fm','myfm','matplotlib'):\n"
            "    try:\n"
            "        mod = importlib.import_module(m); print(m, getattr(mod, '__version__', '?'))\n"
            "    except Exception as e:\n"
            "        print(m, 'not installed')\n"
            "import cfm; print('cfm-openmp', cfm.openmp_enabled()); print('cfm-path', cfm.__file__)\n")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=120, env=env).stdout
    except subprocess.SubprocessError:
        out = ""
    for line in out.splitlines():
        name, _, ver = line.partition(" ")
        if name == "cfm-openmp":
            lines.append(f"- cfm kernels built with OpenMP: {ver}")
        elif name == "cfm-path":
            lines.append(f"- cfm imported from: {ver}")
        else:
            vers.append(f"{name} {ver}")
    if vers:
        lines.append("- Versions: " + ", ".join(vers))
    import sysconfig
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    ccv = _cmd_out([cc, "--version"]).splitlines()
    lines.append(f"- C compiler (builds the extensions): {ccv[0] if ccv else cc}")
    rev = _cmd_out(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).strip()
    dirty = _cmd_out(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    if rev:
        lines.append(f"- cfm git revision: {rev}" + (" (with uncommitted changes)" if dirty.strip()
                                                     else ""))
    return lines


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------

def _bench_env():
    env = dict(os.environ)
    # the repository's cfm first, whatever is installed
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                     else "")
    env.setdefault("USER", "bench")  # xLearn aborts without $USER
    return env


def _help_text(script):
    try:
        p = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                           text=True, timeout=120, env=_bench_env())
        return p.stdout + p.stderr
    except subprocess.SubprocessError:
        return ""


def run_one(name, spec, args, tmp):
    """Run one benchmark script; return a dict describing the outcome."""
    script = HERE / spec["script"]
    res = {"name": name, "title": spec["title"], "script": spec["script"], "status": "skipped",
           "seconds": 0.0, "markdown": "", "json": None, "log_tail": "", "note": ""}
    if not script.exists():
        res["note"] = (f"benchmarks/{spec['script']} is not in this checkout; skipped "
                       "(it comes from another branch)")
        return res
    help_text = _help_text(script)
    cmd_args = list(spec["quick"] if args.quick else spec["full"])
    if args.quick:
        for opt in spec.get("quick_opts", []):
            if opt in help_text:
                cmd_args.append(opt)
    # only pass options the script knows (colleagues' scripts may lack some)
    known = []
    i = 0
    while i < len(cmd_args):
        a = cmd_args[i]
        takes_value = i + 1 < len(cmd_args) and not cmd_args[i + 1].startswith("--")
        if a.startswith("--") and a not in help_text:
            res["note"] += f"{a} not supported by the script, not passed. "
            i += 2 if takes_value else 1
            continue
        known.append(a)
        if takes_value:
            known.append(cmd_args[i + 1])
        i += 2 if takes_value else 1
    cmd_args = known
    res["command"] = " ".join(["python", "benchmarks/" + spec["script"]]
                              + [shlex.quote(a) for a in cmd_args]).replace(str(tmp), "<tmpdir>")
    json_path = tmp / f"{name}.json"
    md_path = tmp / f"{name}.md"
    if "--json" in help_text:
        cmd_args += ["--json", str(json_path)]
    if re.search(r"--out\b", help_text):
        cmd_args += ["--out", str(md_path)]
    cmd = [sys.executable, str(script)] + cmd_args
    if args.nice and shutil.which("nice"):
        cmd = ["nice", "-n", str(args.nice)] + cmd
    log_path = tmp / f"{name}.log"
    print(f"[run_all] {name}: {' '.join(shlex.quote(c) for c in cmd)}", file=sys.stderr,
          flush=True)
    t0 = time.perf_counter()
    try:
        with open(log_path, "w") as log:
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True,
                               timeout=args.timeout, env=_bench_env(), cwd=str(ROOT))
        stdout, rc = p.stdout, p.returncode
        res["status"] = "ok" if rc == 0 else f"failed (exit code {rc})"
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (
            exc.stdout or "")
        res["status"] = f"timed out after {args.timeout:.0f}s"
    except OSError as exc:
        stdout = ""
        res["status"] = f"could not start: {exc}"
    res["seconds"] = time.perf_counter() - t0
    md = md_path.read_text() if md_path.exists() else ""
    if not md.strip():
        md = stdout
    res["markdown"] = md
    if json_path.exists():
        try:
            res["json"] = json.loads(json_path.read_text())
        except ValueError as exc:
            res["note"] += f"unreadable JSON ({exc}). "
    try:
        log_lines = [_clean(line) for line in log_path.read_text(errors="replace").splitlines()]
    except OSError:
        log_lines = []
    # the error lines (a child's traceback may be followed by other output,
    # e.g. /usr/bin/time's), then the end of the log
    errors = [line for line in log_lines
              if re.search(r"Error\b|Traceback|error:|failed", line)][-12:]
    tail = log_lines[-20:]
    res["log_tail"] = "\n".join((["...error lines:"] + errors + ["...last lines:"]
                                 if errors else []) + tail)
    print(f"[run_all] {name}: {res['status']} in {res['seconds']:.0f}s", file=sys.stderr,
          flush=True)
    return res


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _clean(line):
    return _ANSI.sub("", line).rstrip()


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
        kind = specs[r["name"]]["plot"]
        try:
            r["figures"] = PLOTTERS[kind](plt, r, figdir)
            if not r["figures"]:
                r["plot_note"] = "no numbers to plot"
        except Exception as exc:  # noqa: BLE001  (a plot must not kill the report)
            r["plot_note"] = f"plotting failed: {type(exc).__name__}: {exc}"


def replot(report_path, figdir):
    """Redraw the plots of a report from the tables it contains."""
    text = Path(report_path).read_text()
    parts = re.split(r'<a id="([\w-]+)"></a>', text)
    specs = benchmarks(1, Path("."))
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--quick", action="store_true", help="small data, one repeat: smoke test")
    ap.add_argument("--only", default="", help="comma-separated benchmark names to run")
    ap.add_argument("--skip", default="", help="comma-separated benchmark names to leave out")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="threads for every library (default: all CPUs)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per benchmark (default 3 h, 20 min with --quick)")
    ap.add_argument("--nice", type=int, default=10, help="run benchmarks under nice -n N "
                    "(0: no nice)")
    ap.add_argument("--out", type=Path, default=None,
                    help="report path (default benchmarks/REPORT.md, REPORT_quick.md with --quick)")
    ap.add_argument("--figures", type=Path, default=None,
                    help="PNG directory (default benchmarks/figures, figures_quick with --quick)")
    ap.add_argument("--list", action="store_true", help="print the benchmarks and exit")
    ap.add_argument("--replot", type=Path, default=None, metavar="REPORT",
                    help="redraw the PNG plots from the tables of an existing report, "
                         "without running anything")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.timeout is None:
        args.timeout = 20 * 60 if args.quick else 3 * 3600
    out = args.out or HERE / ("REPORT_quick.md" if args.quick else "REPORT.md")
    figdir = args.figures or HERE / ("figures_quick" if args.quick else "figures")

    if args.replot:
        return replot(args.replot, args.figures or args.replot.parent / "figures")
    started = _dt.datetime.now(_dt.timezone.utc)
    with tempfile.TemporaryDirectory(prefix="cfm_run_all_") as d:
        tmp = Path(d)
        specs = benchmarks(args.threads, tmp / "data")
        names = list(specs)
        if args.only:
            want = [n.strip() for n in args.only.split(",") if n.strip()]
            bad = [n for n in want if n not in specs]
            if bad:
                ap.error(f"unknown benchmark(s) {bad}; choose from {names}")
            names = [n for n in names if n in want]
        skip = {n.strip() for n in args.skip.split(",") if n.strip()}
        names = [n for n in names if n not in skip]
        if args.list:
            for n in names:
                s = specs[n]
                a = s["quick"] if args.quick else s["full"]
                present = "" if (HERE / s["script"]).exists() else "   (script absent: skipped)"
                print(f"{n:14s} python benchmarks/{s['script']} {' '.join(a)}{present}")
            return 0
        (tmp / "data").mkdir()
        machine = machine_description(args.threads)
        plt = _plt()
        if plt is None:
            print("[run_all] matplotlib is not installed: no plots (tables only)",
                  file=sys.stderr)
        results = []
        load_max = [os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0]
        ncpu = os.cpu_count() or 1
        for i, n in enumerate(names):
            try:
                results.append(run_one(n, specs[n], args, tmp))
            except Exception as exc:  # noqa: BLE001  (one benchmark must not kill the report)
                results.append({"name": n, "title": specs[n]["title"], "script": specs[n]["script"],
                                "status": f"runner error: {type(exc).__name__}: {exc}",
                                "seconds": 0.0, "markdown": "", "json": None, "log_tail": "",
                                "note": ""})
            if hasattr(os, "getloadavg"):
                load_max.append(os.getloadavg()[0])
            # our own benchmark keeps up to --threads cores busy: more load
            # than that comes from other processes
            if max(load_max) > args.threads + 0.5 * ncpu:
                args.busy_note = (f"the 1-minute load average reached {max(load_max):.1f} on "
                                  f"{ncpu} CPUs during the run (sampled between benchmarks), "
                                  "so other processes competed for the cores.")
            # rewrite the report after every benchmark: an interrupted run
            # still leaves the results so far
            make_figures(results[-1:], specs, figdir, plt)
            pending = [{"name": m, "title": specs[m]["title"], "script": specs[m]["script"],
                        "status": "not run yet (run in progress or interrupted)",
                        "seconds": 0.0, "markdown": "", "json": None, "log_tail": "",
                        "note": "", "figures": []} for m in names[i + 1:]]
            out.write_text(build_report(results + pending, specs, machine, args, figdir, out,
                                        plt, started))
    print(f"[run_all] wrote {out}" + (f" and {sum(len(r['figures']) for r in results)} plot(s) "
                                      f"in {figdir}" if plt else ""), file=sys.stderr)
    failed = [r["name"] for r in results if r["status"] not in ("ok", "skipped")]
    if failed:
        print(f"[run_all] failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
