"""Fuzz suite of issue 11: seeded mutations of model files, data files
(libsvm / libffm / libFM text, gzip, .cfmdata caches) and xLearn text models,
each through the Python API and a sample through the command line, in
runner subprocesses whose address space is limited (see
tests/fuzz_harness.py for the mutations and the allowed outcomes).

Bounded by count and time: ``CFM_FUZZ_CASES`` cases (default 2400), seed
``CFM_FUZZ_SEED`` (default 0).  A deeper offline run::

    CFM_FUZZ_CASES=24000 CFM_FUZZ_SEED=1 PYTHONPATH=$PWD python -m pytest -q tests/test_fuzz.py -s

The counts of a run are printed (``-s``) and written to
``$CFM_FUZZ_RECORD`` (default: ``fuzz-summary.json`` in pytest's cache
folder, ``.pytest_cache/d/cfm-fuzz/``, or the temporary folder without
the cache plugin): counts per seed file and outcome, timings, the slowest
cases and any failures.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import fuzz_harness as fh

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.path.join(ROOT, "tests", "fuzz_harness.py")
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           MALLOC_ARENA_MAX="2", OMP_NUM_THREADS="2", USER=os.environ.get("USER", "root"))
N_CASES = int(os.environ.get("CFM_FUZZ_CASES", "2400"))
SEED = int(os.environ.get("CFM_FUZZ_SEED", "0"))
MEM_BYTES = 1 << 30          # address space a runner may add to its baseline
TOTAL_SECONDS = max(600, N_CASES // 4)  # hard bound on the whole run
N_RUNNERS = 2
CLI_SAMPLE = 24              # cases also run as real `python -m cfm` processes


def _run_batches(cases, folder, deadline):
    """Run ``cases`` in N_RUNNERS runner subprocesses (restarted after a case
    that kills one); returns ({id: result}, [failures])."""
    results, failures = {}, []
    pending = [cases[i::N_RUNNERS] for i in range(N_RUNNERS)]
    procs = {}

    def launch(slot, batch):
        path = os.path.join(folder, f"batch{slot}-{batch[0]['id']}.json")
        with open(path, "w") as f:
            json.dump(batch, f)
        p = subprocess.Popen([sys.executable, HARNESS, "run", path, str(MEM_BYTES)], env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs[slot] = (p, batch)

    for slot, batch in enumerate(pending):
        if batch:
            launch(slot, batch)
    while procs:
        for slot in list(procs):
            p, batch = procs.pop(slot)
            try:
                out, err = p.communicate(timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
                err += "\n(timed out: the whole fuzz run exceeded its time bound)"
            started = None
            for line in out.splitlines():
                rec = json.loads(line)
                if "start" in rec:
                    started = rec["start"]
                else:
                    results[rec["id"]] = rec
                    started = None
            if p.returncode != 0 or started is not None:
                case = next((c for c in batch if c["id"] == started), None)
                if case is not None:
                    failures.append((case, f"runner died (status {p.returncode}): "
                                           f"{err.strip()[-400:]}"))
                    results[case["id"]] = {"id": case["id"], "fail": "crash", "outcome": None}
                rest = [c for c in batch if c["id"] not in results]
                if rest and time.monotonic() < deadline:
                    launch(slot, rest)
                elif rest:
                    failures.append((rest[0], f"{len(rest)} cases not run: out of time"))
    for c in cases:
        r = results.get(c["id"])
        if r is not None and r["fail"] and r["fail"] != "crash":
            failures.append((c, r["fail"]))
    return results, failures


def _cli_subprocess(case, folder):
    """The case as a real ``python -m cfm`` process: exit status 0 or 1, no
    traceback, no signal; an error names the file."""
    path, kind = case["path"], case["kind"]
    out = os.path.join(folder, f"sub-out-{case['id']}")
    if kind == "model":
        argv = ["info", path] if case["id"] % 2 else \
            ["predict", path, case["aux"]["ffm" if "ffm" in case["seed"] else "svm"], "-o", out]
    elif kind == "xlearn":
        argv = ["predict", path, case["aux"]["svm"], "-o", out]
        if "ffm" in case["seed"]:
            argv += ["--xlearn-fields", case["aux"]["ffm"]]
    elif case["id"] % 2:
        argv = ["train", path, "-o", out, "-e", "1", "-k", "2", "-q"] + (
            ["--model", "ffm"] if "ffm" in case["seed"] else [])
    else:
        argv = ["predict", case["good_model"], path, "-o", out]
    return argv, subprocess.Popen([sys.executable, "-m", "cfm", *argv], env=ENV,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _record(summary, request):
    path = os.environ.get("CFM_FUZZ_RECORD")
    if not path:
        cache = getattr(request.config, "cache", None)
        folder = str(cache.mkdir("cfm-fuzz")) if cache is not None else tempfile.gettempdir()
        path = os.path.join(folder, "fuzz-summary.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=1)
    return path


def test_fuzz_readers(tmp_path, request):
    t0 = time.monotonic()
    deadline = t0 + TOTAL_SECONDS
    seeds_dir = tmp_path / "seeds"
    seeds_dir.mkdir()
    seeds, aux = fh.make_seeds(str(seeds_dir))
    cases_dir = tmp_path / "cases"
    cases_dir.mkdir()
    cases = fh.generate_cases(seeds, aux, str(cases_dir), N_CASES, seed=SEED)
    t_gen = time.monotonic() - t0
    results, failures = _run_batches(cases, str(tmp_path), deadline)
    t_api = time.monotonic() - t0 - t_gen

    # a sample through real `python -m cfm` processes, two at a time
    sample = [c for c in cases if c["cli"]][:CLI_SAMPLE]
    sub_failures, running = [], []
    for case in sample + [None] * 2:
        if case is not None:
            running.append((case, *_cli_subprocess(case, str(tmp_path))))
        while len(running) >= 2 or (case is None and running):
            c, argv, p = running.pop(0)
            try:
                _, err = p.communicate(timeout=max(5, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                _, err = p.communicate()
                sub_failures.append((c, f"cfm {argv[0]} hung"))
                continue
            if p.returncode not in (0, 1):
                sub_failures.append((c, f"cfm {' '.join(argv[:1])}: exit {p.returncode}: "
                                        f"{err[-300:]}"))
            elif "Traceback" in err or "internal error" in err:
                sub_failures.append((c, f"cfm {argv[0]}: {err[-300:]}"))
            elif p.returncode == 1 and not any(os.path.basename(a) in err for a in argv[1:]
                                               if os.path.sep in a) and not (
                    argv[0] == "train" and "training diverged" in err):
                sub_failures.append((c, f"cfm {argv[0]}: error does not name the file: "
                                        f"{err[-300:]}"))
            if case is None:
                break
    failures += sub_failures
    wall = time.monotonic() - t0

    by_kind = {}
    for c in cases:
        r = results.get(c["id"])
        k = by_kind.setdefault(c["seed"], {"cases": 0, "ok": 0, "errors": 0, "failed": 0,
                                           "cli": 0})
        k["cases"] += 1
        if r is None:
            continue
        k["cli"] += bool(r.get("cli"))
        if r["fail"]:
            k["failed"] += 1
        elif (r["outcome"] or "").startswith("ok"):
            k["ok"] += 1
        else:
            k["errors"] += 1
    n_run = len(results)
    summary = {"seed": SEED, "cases": N_CASES, "run": n_run,
               "cli_in_process": sum(v["cli"] for v in by_kind.values()),
               "cli_subprocess": len(sample), "failed": len(failures),
               "seconds": {"generate": round(t_gen, 1), "api": round(t_api, 1),
                           "total": round(wall, 1)},
               "by_seed": by_kind,
               "failures": [{"id": c["id"], "seed": c["seed"], "desc": c["desc"], "why": why}
                            for c, why in failures[:50]]}
    slow = sorted(results.values(), key=lambda r: -r.get("t", 0))[:10]
    summary["slowest"] = [{"id": r["id"], "t": r.get("t"), "seed": cases[r["id"]]["seed"],
                           "desc": cases[r["id"]]["desc"], "cli": r.get("cli"),
                           "outcome": r["outcome"]} for r in slow]
    summary["case_seconds"] = round(sum(r.get("t", 0) for r in results.values()), 1)
    where = _record(summary, request)
    print(f"\ncfm fuzz: {n_run}/{N_CASES} cases (seed {SEED}), "
          f"{summary['cli_in_process']} through cfm.cli.main, {len(sample)} as `python -m cfm`, "
          f"{len(failures)} failed, {wall:.1f} s; record: {where}")
    assert n_run == N_CASES, f"only {n_run} of {N_CASES} cases ran"
    msg = "\n".join(f"case {c['id']} ({c['seed']}, {c['desc']}, {c['path']}): {why}"
                    for c, why in failures[:20])
    assert not failures, f"{len(failures)} fuzz cases failed:\n{msg}"
