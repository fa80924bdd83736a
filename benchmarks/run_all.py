"""Run every cfm benchmark and write one report: benchmarks/results/REPORT.md + PNG plots.

    python benchmarks/run_all.py                 # full runs (an hour or more on 2 cores)
    python benchmarks/run_all.py --quick         # small data: a smoke test of the whole chain
    python benchmarks/run_all.py --only fm,ffm   # a subset (names below)
    python benchmarks/run_all.py --list          # what would run, with the commands
    python benchmarks/run_all.py --replot benchmarks/results/REPORT.md   # redraw the plots only

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

This module runs; ``report.py`` renders.  The outcomes of a run are saved
next to the report as JSON (``benchmarks/results/run_all.json``, or
``run_all_quick.json``) after every benchmark, and
``python benchmarks/report.py benchmarks/results/run_all.json`` re-renders the
report from them without running anything.
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
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

import report  # noqa: E402  (benchmarks/report.py: rendering)


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
           "plot": spec["plot"], "seconds": 0.0, "markdown": "", "json": None, "log_tail": "",
           "note": ""}
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
                    help="report path (default benchmarks/results/REPORT.md, REPORT_quick.md "
                    "with --quick)")
    ap.add_argument("--figures", type=Path, default=None,
                    help="PNG directory (default benchmarks/results/figures, figures_quick with "
                    "--quick)")
    ap.add_argument("--list", action="store_true", help="print the benchmarks and exit")
    ap.add_argument("--replot", type=Path, default=None, metavar="REPORT",
                    help="redraw the PNG plots from the tables of an existing report, "
                         "without running anything")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.timeout is None:
        args.timeout = 20 * 60 if args.quick else 3 * 3600
    out = args.out or RESULTS / ("REPORT_quick.md" if args.quick else "REPORT.md")
    figdir = args.figures or out.parent / ("figures_quick" if args.quick else "figures")
    outcomes = out.parent / ("run_all_quick.json" if args.quick else "run_all.json")

    if args.replot:
        return report.replot(args.replot, args.figures or args.replot.parent / "figures",
                             benchmarks(1, Path(".")))
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
        plt = report._plt()
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
                                "plot": specs[n]["plot"],
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
            out.parent.mkdir(parents=True, exist_ok=True)
            report.save_outcomes(outcomes, results, machine, args, started)
            pending = [{"name": m, "title": specs[m]["title"], "script": specs[m]["script"],
                        "plot": specs[m]["plot"],
                        "status": "not run yet (run in progress or interrupted)",
                        "seconds": 0.0, "markdown": "", "json": None, "log_tail": "",
                        "note": "", "figures": []} for m in names[i + 1:]]
            report.render(results + pending, specs, machine, args, figdir, out, started,
                          plt, new=results[-1:])
    print(f"[run_all] wrote {out}" + (f" and {sum(len(r['figures']) for r in results)} plot(s) "
                                      f"in {figdir}" if plt else ""), file=sys.stderr)
    failed = [r["name"] for r in results if r["status"] not in ("ok", "skipped")]
    if failed:
        print(f"[run_all] failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
