"""Threads on a busy machine: n_jobs=2 and the default n_jobs against n_jobs=1,
with K CPU-bound background processes competing for the cores, and without.

    python benchmarks/bench_under_load.py                 # quiet (K=0) and loaded (K=3)
    python benchmarks/bench_under_load.py --loads 3       # loaded only
    python benchmarks/bench_under_load.py --ab /work/main # quiet A/B: this build vs another

What a service or a mini-batch consumer does -- many small calls -- is where
threads that wait for each other at barriers lose most when another process
holds a core (issue 11, item 9).  Cases, each timed with n_jobs=1, 2 and None
(the default) in the same worker process, in turns (the order rotates every
round), median of the rounds:

* ``small_fm`` / ``small_ffm`` / ``small_lr``: 50 ``decision_function`` calls
  of 2,000 rows (Criteo-shaped: 39 one-hot fields; LR is n_factors=0);
* ``large_fm`` / ``large_ffm``: one ``decision_function`` call on
  ``--large-rows`` rows (default 1M; FFM a fifth of it);
* ``train_fm`` / ``train_ffm``: ``fit`` of 3 / 2 epochs on 200k / 50k rows;
* ``small_deepfm`` / ``train_deepfm``: DeepFM (k=8, MLP 256-128, on the FFM
  data): 50 ``decision_function`` calls of 2,000 rows; ``fit`` of one epoch
  on 50k rows (batch 256);
* ``mcmc``: 50 MCMC sweeps on MovieLens-100k u1 (synthetic user x item
  ratings when /work/shared/data is absent);
* ``cli_predict``: ``cfm predict model data.svm -o out --threads N`` on a
  200k-row libsvm file (whole process, from a shell's point of view).

The background load is K processes each spinning a busy loop (default 3 on
top of the benchmark: with 2 cores, about what the issue measured).  Every
measurement runs in a fresh worker process that imports the build under
test (``--repo``, default this checkout), so ``--ab OTHER`` can time another
build (e.g. the main checkout, ``PYTHONPATH=/work/main``) in alternation
with this one, on the same prepared data.

Writes benchmarks/results/RESULTS_under_load.md (``--out``) with the load average
at the start of each phase: on a machine shared with other work the figures
move; the ratios inside one phase are what to compare.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

CASES = ("small_fm", "small_ffm", "small_lr", "large_fm", "large_ffm", "train_fm",
         "train_ffm", "small_deepfm", "train_deepfm", "mcmc", "cli_predict")
JOBS = (1, 2, None)


# --------------------------------------------------------------------------
# Data (prepared once, in the parent, with this checkout's build)
# --------------------------------------------------------------------------


def _fixed():
    """Fixed training settings (issue 13: otherwise a fit that leaves
    learning_rate / normalize unset chooses them by a race); builds without
    ``auto_tune`` (an --ab baseline) get nothing."""
    import cfm

    return {"auto_tune": False} if "auto_tune" in cfm.FMClassifier().get_params() else {}


def _save_csr(path, X, y, fields=None):
    import numpy as np

    np.savez(path, data=X.data, indices=X.indices, indptr=X.indptr,
             shape=np.array(X.shape), y=y,
             fields=fields if fields is not None else np.zeros(0, np.int32))


def _load_csr(path):
    import numpy as np
    import scipy.sparse as sp

    z = np.load(path)
    X = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
    return X, z["y"], z["fields"]


def prepare(work, large_rows):
    """Data sets and fitted models the workers load (in ``work``)."""
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(HERE))
    import numpy as np
    import cfm
    from bench_data import DEFAULT_DATA_DIR, load_movielens_fold, make_criteo_like

    t0 = time.perf_counter()
    w = Path(work)
    # FM / LR: the default Criteo shape (1.95M columns)
    X, y, fields = make_criteo_like(max(large_rows, 200_000), seed=0)
    _save_csr(w / "fm_large.npz", X[:large_rows], y[:large_rows])
    _save_csr(w / "fm_train.npz", X[:200_000], y[:200_000])
    _save_csr(w / "fm_small.npz", X[:100_000], y[:100_000])
    cfm.FMClassifier(n_factors=8, n_epochs=1, n_jobs=1, random_state=0).fit(
        X[:200_000], y[:200_000]).save(w / "fm.cfm")
    cfm.FMClassifier(n_factors=0, n_epochs=1, n_jobs=1, random_state=0).fit(
        X[:200_000], y[:200_000]).save(w / "lr.cfm")
    cfm.dump_libsvm(X[:200_000], y[:200_000], str(w / "data.svm"))
    del X, y
    # FFM: 5,000 ids per field (195k columns x 39 fields x k=4)
    n_ffm = max(large_rows // 5, 100_000)
    X, y, fields = make_criteo_like(n_ffm, seed=1, ids_per_field=5_000)
    _save_csr(w / "ffm_large.npz", X, y, fields)
    _save_csr(w / "ffm_train.npz", X[:50_000], y[:50_000], fields)
    cfm.FFMClassifier(n_factors=4, n_epochs=1, n_jobs=1, random_state=0).fit(
        X[:50_000], y[:50_000], fields=fields).save(w / "ffm.cfm")
    cfm.DeepFMClassifier(n_epochs=1, random_state=0).fit(
        X[:50_000], y[:50_000], fields=fields).save(w / "deepfm.cfm")
    del X, y
    # MCMC: MovieLens-100k u1 (or a synthetic stand-in)
    try:
        # the shared data folder next to the checkout (or a worktree's checkout)
        data_dir = next((d for d in (DEFAULT_DATA_DIR, REPO.parents[1] / "shared" / "data")
                         if (d / "ml-100k").is_dir()), DEFAULT_DATA_DIR)
        Xm, ym, _, _ = load_movielens_fold("u1", data_dir=data_dir)
        mcmc_data = "MovieLens-100k u1 (80,000 ratings)"
    except (OSError, FileNotFoundError):
        import scipy.sparse as sp

        rng = np.random.default_rng(0)
        u = rng.integers(0, 943, 80_000)
        i = rng.integers(0, 1682, 80_000)
        Xm = sp.csr_matrix((np.ones(160_000, np.float32),
                            np.stack([u, 943 + i], 1).ravel(), np.arange(0, 160_001, 2)),
                           shape=(80_000, 2625))
        ym = rng.integers(1, 6, 80_000).astype(np.float32)
        mcmc_data = "synthetic user x item ratings (80,000)"
    _save_csr(w / "mcmc.npz", Xm, ym)
    print(f"prepared data in {time.perf_counter() - t0:.0f}s (MCMC: {mcmc_data})",
          file=sys.stderr, flush=True)
    return {"mcmc_data": mcmc_data, "ffm_rows": n_ffm}


# --------------------------------------------------------------------------
# Worker: one case, every n_jobs variant, several rounds
# --------------------------------------------------------------------------

def _case_fn(case, work, repo):
    import numpy as np
    import cfm

    w = Path(work)
    if case in ("small_fm", "small_lr", "small_ffm", "small_deepfm"):
        model = cfm.load(w / {"small_fm": "fm.cfm", "small_lr": "lr.cfm",
                              "small_ffm": "ffm.cfm", "small_deepfm": "deepfm.cfm"}[case])
        X, _, _ = _load_csr(w / ("fm_small.npz" if case in ("small_fm", "small_lr")
                                 else "ffm_large.npz"))
        batches = [X[i * 2000:(i + 1) * 2000] for i in range(50)]

        def run(nj):
            model.n_jobs = nj
            for b in batches:
                model.decision_function(b)
        return run
    if case in ("large_fm", "large_ffm"):
        model = cfm.load(w / ("fm.cfm" if case == "large_fm" else "ffm.cfm"))
        X, _, _ = _load_csr(w / ("fm_large.npz" if case == "large_fm" else "ffm_large.npz"))

        def run(nj):
            model.n_jobs = nj
            model.decision_function(X)
        return run
    if case == "train_fm":
        X, y, _ = _load_csr(w / "fm_train.npz")

        def run(nj):
            cfm.FMClassifier(n_factors=8, n_epochs=3, n_jobs=nj, random_state=0, **_fixed()).fit(
                X, y)
        return run
    if case == "train_ffm":
        X, y, fields = _load_csr(w / "ffm_train.npz")

        def run(nj):
            cfm.FFMClassifier(n_factors=4, n_epochs=2, n_jobs=nj, random_state=0,
                              **_fixed()).fit(
                X, y, fields=fields)
        return run
    if case == "train_deepfm":
        X, y, fields = _load_csr(w / "ffm_train.npz")

        def run(nj):
            cfm.DeepFMClassifier(n_epochs=1, n_jobs=nj, random_state=0).fit(
                X, y, fields=fields)
        return run
    if case == "mcmc":
        X, y, _ = _load_csr(w / "mcmc.npz")

        def run(nj):
            cfm.FMRegressor(n_factors=8, solver="mcmc", n_epochs=50, n_jobs=nj,
                            random_state=0).fit(X, y)
        return run
    if case == "cli_predict":
        env = dict(os.environ, PYTHONPATH=str(repo))
        out = w / f"scores.{os.getpid()}.txt"

        def run(nj):
            cmd = [sys.executable, "-m", "cfm", "predict", str(w / "fm.cfm"), str(w / "data.svm"),
                   "-o", str(out), "-q"]
            if nj is not None:
                cmd += ["--threads", str(nj)]
            subprocess.run(cmd, check=True, env=env, cwd=str(w))
        return run
    raise ValueError(case)


def worker(case, work, repo, rounds):
    sys.path.insert(0, str(repo))
    import cfm

    assert Path(cfm.__file__).resolve().parent.parent == Path(repo).resolve(), cfm.__file__
    run = _case_fn(case, work, repo)
    times = {str(nj): [] for nj in JOBS}
    first = {}
    for r in range(rounds):
        order = JOBS[r % 3:] + JOBS[:r % 3]
        for nj in order:
            t0 = time.perf_counter()
            run(nj)
            dt = time.perf_counter() - t0
            if str(nj) not in first:
                first[str(nj)] = dt
            times[str(nj)].append(dt)
    print(json.dumps({"times": times, "first": first}))


def run_worker(case, work, repo, rounds):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", case, "--work", str(work),
           "--repo", str(repo), "--rounds", str(rounds)]
    env = dict(os.environ, PYTHONPATH=str(repo))
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=str(work))
    if res.returncode != 0:
        raise RuntimeError(f"worker {case} ({repo}) failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------
# Background load
# --------------------------------------------------------------------------

class Load:
    """K processes spinning a busy loop (a core's worth of work each)."""

    def __init__(self, k):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                       stdin=subprocess.DEVNULL)
                      for _ in range(k)]
        if k:
            time.sleep(1.0)

    def close(self):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def _med(xs):
    return statistics.median(xs)


def phase(work, repo, cases, k, rounds):
    load = Load(k)
    try:
        la = os.getloadavg()
        res = {}
        for case in cases:
            res[case] = run_worker(case, work, repo, rounds[case])
            t = {nj: _med(v) for nj, v in res[case]["times"].items()}
            print(f"  K={k} {case:12s} n_jobs=1 {t['1']:.3f}s  2: {t['2']:.3f}s "
                  f"({t['2'] / t['1']:.2f}x)  None: {t['None']:.3f}s "
                  f"({t['None'] / t['1']:.2f}x)", file=sys.stderr, flush=True)
        return {"k": k, "loadavg": la, "results": res}
    finally:
        load.close()


def render(phases, info, args):
    lines = ["# Threads on a busy machine (issue 11, item 9)", "",
             f"`python benchmarks/bench_under_load.py {' '.join(args.argv)}`".replace(" `", "`"),
             "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, usable "
             f"{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'}; "
             f"Python {platform.python_version()}; {time.strftime('%Y-%m-%d %H:%M')}.",
             "",
             "Each cell: median seconds of the rounds (the first, cold call in brackets when "
             "it differs by more than 20%), and the ratio to n_jobs=1 of the same phase. "
             f"K = background processes each spinning a busy loop, started by the benchmark; "
             "the load average at the start of each phase says what else was running (on 2 "
             "cores, above about 1 + K the machine was shared with other work). "
             f"MCMC data: {info['mcmc_data']}; large FFM call: {info['ffm_rows']:,} rows.", ""]
    for ph in phases:
        la = ", ".join(f"{x:.2f}" for x in ph["loadavg"])
        lines += [f"## K = {ph['k']} background processes (load average at start: {la})", "",
                  "| case | n_jobs=1 | n_jobs=2 | default (None) | 2 / 1 | None / 1 |",
                  "|---|---|---|---|---|---|"]
        for case, r in ph["results"].items():
            t = {nj: _med(v) for nj, v in r["times"].items()}

            def cell(nj):
                f = r["first"][nj]
                s = f"{t[nj]:.3f}"
                if abs(f - t[nj]) > 0.2 * t[nj]:
                    s += f" [{f:.3f}]"
                return s
            lines.append(f"| {case} | {cell('1')} | {cell('2')} | {cell('None')} | "
                         f"{t['2'] / t['1']:.2f} | {t['None'] / t['1']:.2f} |")
        lines.append("")
    if len(phases) > 1:
        lines += ["## Ratio n_jobs=2 / n_jobs=1, side by side", "",
                  "| case | " + " | ".join(f"K={p['k']}" for p in phases) + " |",
                  "|---|" + "---|" * len(phases)]
        for case in phases[0]["results"]:
            row = []
            for p in phases:
                t = {nj: _med(v) for nj, v in p["results"][case]["times"].items()}
                row.append(f"{t['2'] / t['1']:.2f} (None {t['None'] / t['1']:.2f})")
            lines.append(f"| {case} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def ab(work, repo, other, cases, rounds, pairs):
    """Quiet A/B: this build (A) and ``other`` (B), alternately, per case."""
    out = {}
    for case in cases:
        a_t, b_t = {str(nj): [] for nj in JOBS}, {str(nj): [] for nj in JOBS}
        for _ in range(pairs):
            for build, acc in ((repo, a_t), (other, b_t)):
                r = run_worker(case, work, build, rounds[case])
                for nj, v in r["times"].items():
                    acc[nj].append(_med(v))
        out[case] = (a_t, b_t)
        print(f"  A/B {case:12s} " + "  ".join(
            f"n_jobs={nj}: {_med(a_t[nj]):.3f}s / {_med(b_t[nj]):.3f}s = "
            f"{_med(a_t[nj]) / _med(b_t[nj]):.2f}" for nj in a_t), file=sys.stderr, flush=True)
    return out


def render_ab(res, repo, other, la):
    lines = [f"## A/B without added load: this build (A, {repo}) vs {other} (B)", "",
             f"`python benchmarks/bench_under_load.py --ab {other}`. No background processes are "
             "started: on a quiet machine this is the quiet-speed comparison; load average at "
             f"start: {', '.join(f'{x:.2f}' for x in la)} (above about 1 on 2 cores, other work "
             "was running and the figures are not quiet ones). Median seconds over alternating "
             "worker processes (A B A B ...); ratio A / B (below 1: A faster).", "",
             "| case | n_jobs | A | B | A / B |", "|---|---|---|---|---|"]
    for case, (a_t, b_t) in res.items():
        for nj in a_t:
            a, b = _med(a_t[nj]), _med(b_t[nj])
            lines.append(f"| {case} | {nj} | {a:.3f} | {b:.3f} | {a / b:.2f} |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loads", default="0,3",
                    help="background processes of each phase (default 0,3: quiet, then loaded)")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--rounds", type=int, default=5, help="rounds per worker (large cases: 3)")
    ap.add_argument("--large-rows", type=int, default=1_000_000)
    ap.add_argument("--repo", default=str(REPO), help="build under test (a checkout with "
                    "compiled extensions)")
    ap.add_argument("--ab", default=None, metavar="OTHER_REPO",
                    help="instead of the load phases: quiet A/B of --repo against OTHER_REPO")
    ap.add_argument("--ab-pairs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None,
                    help="Markdown report (default benchmarks/results/RESULTS_under_load.md; "
                    "with --ab: benchmarks/results/RESULTS_under_load_ab.md)")
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.worker:
        return worker(args.worker, args.work, args.repo, args.rounds)

    cases = [c for c in args.cases.split(",") if c]
    rounds = {c: (3 if c.startswith(("large", "train", "mcmc")) else args.rounds)
              for c in cases}
    with tempfile.TemporaryDirectory(prefix="cfm-load-") as work:
        info = prepare(work, args.large_rows)
        if args.ab:
            la = os.getloadavg()
            res = ab(work, args.repo, args.ab, cases, rounds, args.ab_pairs)
            text = render_ab(res, args.repo, args.ab, la)
            out = args.out or HERE / "results" / "RESULTS_under_load_ab.md"
        else:
            phases = [phase(work, args.repo, cases, int(k), rounds)
                      for k in args.loads.split(",")]
            text = render(phases, info, args)
            out = args.out or HERE / "results" / "RESULTS_under_load.md"
    out.write_text(text + "\n")
    print(text)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
