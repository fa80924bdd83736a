"""Side-by-side FM benchmark: cfm vs xLearn vs modern_fm, in one run.

What it measures (per data set and library)
-------------------------------------------
* fit time (s): wall clock of the library's training call, median of
  ``--repeats`` runs, same k, epochs and thread count for every library.

  - cfm / modern_fm: ``fit(X, y)`` on an in-memory scipy CSR matrix
    (modern_fm converts X to float64/int64 inside ``fit``; that is included).
  - xLearn: ``model.fit(param, model_path)`` on a libsvm text file *whose
    binary cache* (``<file>.bin``) *already exists*: a warm-up fit creates the
    cache first (its time is shown as "first fit (text->bin)" in the notes).
    The timed call still includes what xLearn always does in ``fit``: hashing
    the whole text file to validate the cache, reading the .bin, initialising
    the model, the epochs, and writing the binary model file.  The notes also
    give the sum of xLearn's own per-epoch timings parsed from its log, i.e.
    the pure training time.
* scoring rows/s: test rows / median wall time of one scoring call.

  - cfm: ``decision_function(X_test)`` in memory, with ``n_jobs=--threads``;
    a second table shows n_jobs=1 vs n_jobs=threads (thread scaling).
  - modern_fm: ``decision_function(X_test)`` in memory (its Rust predict runs
    on the rayon global pool, pinned to --threads via RAYON_NUM_THREADS).
  - xLearn: ``predict(model_path, out_path)`` on the test file with its .bin
    cache warm: it includes hashing the text file, reading the .bin and the
    model file, scoring and writing the predictions as text.  xLearn has no
    in-memory predict in its pip release, so this is the only honest number.
* metric: test AUC (classification) or test RMSE (MovieLens regression).

Configurations: "defaults" uses each library's default hyper-parameters
except k / epochs / threads (xLearn: adagrad, lr 0.2, lambda 2e-5, init 0.66,
instance normalisation on; modern_fm: adagrad, lr 0.05, l2 1e-5, batch 1;
cfm: its defaults).  With ``--lr-grid`` every library is also trained once
per learning rate of the grid on the real data sets and the best *test*
metric is reported (the grid is picked on the test set for every library
identically: it is a tuning-sensitivity check, not a generalisation claim).

Data: a synthetic Criteo-like set (``bench_data.make_criteo_like``: --rows
training rows + 200k test rows from the same planted FM, 39 fields, ~1.95M
columns) and the real sets in ``<repo>/../shared/data`` (MovieLens 100K fold
u1 -> RMSE, mushroom -> AUC, xLearn's small Criteo sample -> AUC).

Example::

    python benchmarks/bench_fm.py --only real --lr-grid 0.02,0.05,0.1,0.2
    python benchmarks/bench_fm.py --rows 1000000 --out benchmarks/results.md
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# xLearn aborts at import time without $USER.
os.environ.setdefault("USER", "bench")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_data as bds  # noqa: E402

LIBRARIES = ("cfm", "xlearn", "modern_fm")
# extra runners, only when named in --libs: cfm_f32 = cfm FFM with dtype="float32"
# (cfm FFM's default is a float16 factor table on CPUs with AVX2/F16C)
EXTRA_LIBRARIES = ("cfm_f32",)


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

@dataclass
class Dataset:
    name: str
    task: str  # "binary" or "reg"
    X_train: object
    y_train: np.ndarray
    X_test: object
    y_test: np.ndarray
    note: str = ""
    fields: object = None  # field id per column (FFM)

    @property
    def metric_name(self):
        return "AUC" if self.task == "binary" else "RMSE"


@dataclass
class Result:
    dataset: str
    library: str
    config: str
    fit_s: float = float("nan")
    score_rows_s: float = float("nan")
    metric: float = float("nan")
    metric_name: str = ""
    notes: list = field(default_factory=list)
    fit_all: list = field(default_factory=list)
    scaling: dict = field(default_factory=dict)  # n_jobs -> rows/s (cfm)
    error: str = ""


def metric_value(task, y, score):
    score = np.asarray(score, dtype=np.float64).ravel()
    if task == "binary":
        from sklearn.metrics import roc_auc_score
        return float(roc_auc_score(y, score))
    return float(np.sqrt(np.mean((np.asarray(y, dtype=np.float64) - score) ** 2)))


def timed(fn, *a, **kw):
    t = time.perf_counter()
    out = fn(*a, **kw)
    return time.perf_counter() - t, out


def median(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


@contextlib.contextmanager
def capture_fds(path):
    """Redirect the process' fd 1 and 2 (C-level output, e.g. xLearn's) to a file."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def machine_info(threads):
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        avail = len(os.sched_getaffinity(0))
    except AttributeError:
        avail = os.cpu_count()
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) / 2**20:.0f} GiB RAM"
    except OSError:
        pass
    vers = []
    for mod in ("cfm", "xlearn", "modern_fm", "numpy", "scipy", "sklearn"):
        try:
            m = __import__(mod)
            vers.append(f"{mod} {getattr(m, '__version__', '?')}")
        except Exception as e:  # noqa: BLE001
            vers.append(f"{mod} (unavailable: {type(e).__name__})")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return [
        f"- CPU: {model}; {os.cpu_count()} logical CPUs ({avail} usable){mem}",
        f"- Load average at start: {load} (other processes compete for the cores)",
        f"- Threads used by every library: {threads}",
        f"- Python {platform.python_version()} on {platform.platform()}",
        f"- Versions: {', '.join(vers)}",
    ]


# --------------------------------------------------------------------------
# Runners
# --------------------------------------------------------------------------

class _InMemoryRunner:
    """Fit / score loop shared by the libraries that train from in-memory arrays.

    Subclasses provide ``_est(ds, lr)``; ``_fit`` and ``_score_note`` may be
    overridden.  ``run`` records the median fit time over ``repeats``, the
    test metric and the scoring speed for every thread count in
    ``_score_jobs``.
    """

    _score_note = "score: in-memory decision_function"

    def _fit(self, m, ds):
        return m.fit(ds.X_train, ds.y_train)

    def _score(self, m, ds, X):
        return m.decision_function(X) if ds.task == "binary" else m.predict(X)

    def _score_jobs(self):
        return [None]  # score with the threads the estimator was built with

    def run(self, ds, lr=None, repeats=1, time_scoring=True):
        r = Result(ds.name, self.name, "", metric_name=ds.metric_name)
        m = None
        for _ in range(repeats):
            m = None
            gc.collect()
            m = self._est(ds, lr)
            dt, _ = timed(self._fit, m, ds)
            r.fit_all.append(dt)
        r.fit_s = median(r.fit_all)
        r.metric = metric_value(ds.task, ds.y_test, self._score(m, ds, ds.X_test))
        if time_scoring:
            n = ds.X_test.shape[0]
            jobs = self._score_jobs()
            for nj in jobs:
                if nj is not None:
                    m.set_params(n_jobs=nj)
                self._score(m, ds, ds.X_test)  # warm-up
                ts = [timed(self._score, m, ds, ds.X_test)[0] for _ in range(max(3, repeats))]
                r.scaling[nj] = n / median(ts)
            if jobs == [None]:
                r.score_rows_s = r.scaling.pop(None)
            else:
                m.set_params(n_jobs=self.args.threads)
                r.score_rows_s = r.scaling[self.args.threads]
            r.notes.append(self._score_note)
        return r


class CfmRunner(_InMemoryRunner):
    name = "cfm"

    def __init__(self, args):
        import cfm
        self.cfm = cfm
        self.args = args

    def _est(self, ds, lr):
        kw = dict(n_factors=self.args.k, n_epochs=self.args.epochs,
                  n_jobs=self.args.threads, random_state=0)
        # fixed settings, as the other libraries are told (issue 13: otherwise a
        # fit that leaves normalize / learning_rate unset chooses them by a race)
        if "auto_tune" in self.cfm.FMClassifier().get_params():
            kw["auto_tune"] = False
        if lr is not None:
            kw["learning_rate"] = lr
        if self.args.model == "ffm":
            cls = self.cfm.FFMClassifier if ds.task == "binary" else self.cfm.FFMRegressor
        else:
            cls = self.cfm.FMClassifier if ds.task == "binary" else self.cfm.FMRegressor
        return cls(**kw)

    def _fit(self, m, ds):
        if self.args.model == "ffm":
            return m.fit(ds.X_train, ds.y_train, fields=ds.fields)
        return m.fit(ds.X_train, ds.y_train)

    def _score_jobs(self):
        return sorted({1, self.args.threads})  # thread scaling table


class CfmF32Runner(CfmRunner):
    """cfm FFM with a float32 factor table (dtype="float32")."""
    name = "cfm (float32)"

    def _est(self, ds, lr):
        return super()._est(ds, lr).set_params(dtype="float32")


class ModernFmRunner(_InMemoryRunner):
    name = "modern_fm"
    _score_note = "score: in-memory decision_function (converts X to float64)"

    def __init__(self, args):
        # Its Rust predict uses the rayon global pool: pin it before import.
        os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))
        import modern_fm
        self.mfm = modern_fm
        self.args = args

    def _est(self, ds, lr):
        kw = dict(n_factors=self.args.k, max_iter=self.args.epochs,
                  n_jobs=self.args.threads, random_state=0)
        if lr is not None:
            kw["learning_rate"] = lr
        cls = self.mfm.FMClassifier if ds.task == "binary" else self.mfm.FMRegressor
        return cls(**kw)


_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
_XL_EPOCH_RE = re.compile(r"^\s*\[\s*[\d.]+%\s*\]\s+(\d+)\s+([-\d.]+)\s+([\d.]+)\s*$")


class XLearnRunner:
    name = "xlearn"

    def __init__(self, args):
        import xlearn
        self.xl = xlearn
        self.args = args
        self._tmp = tempfile.TemporaryDirectory(prefix="bench_xlearn_")
        self.tmp = Path(self._tmp.name)
        self._files = {}

    def close(self):
        self._tmp.cleanup()

    def _paths(self, ds):
        """Write (once per data set) the libsvm train/test files."""
        if ds.name not in self._files:
            safe = re.sub(r"[^A-Za-z0-9]+", "_", ds.name)
            tr = self.tmp / f"{safe}_train.svm"
            te = self.tmp / f"{safe}_test.svm"
            t0 = time.perf_counter()
            if self.args.model == "ffm":
                bds.write_libffm(tr, ds.X_train, ds.y_train, ds.fields)
                bds.write_libffm(te, ds.X_test, ds.y_test, ds.fields)
            else:
                bds.write_libsvm(tr, ds.X_train, ds.y_train)
                bds.write_libsvm(te, ds.X_test, ds.y_test)
            self._files[ds.name] = (str(tr), str(te), time.perf_counter() - t0, {})
        return self._files[ds.name]

    def _param(self, ds, lr):
        p = {"task": "binary" if ds.task == "binary" else "reg",
             "k": self.args.k, "epoch": self.args.epochs, "nthread": self.args.threads,
             "log": str(self.tmp / "xlearn_log")}
        if lr is not None:
            p["lr"] = lr
        return p

    def _fit(self, ds, train, lr, model_path, log):
        m = self.xl.create_ffm() if self.args.model == "ffm" else self.xl.create_fm()
        m.setTrain(train)
        with capture_fds(log):
            dt, _ = timed(m.fit, self._param(ds, lr), model_path)
        return dt

    def _predict(self, ds, test, model_path, out_path, log):
        m = self.xl.create_ffm() if self.args.model == "ffm" else self.xl.create_fm()
        m.setTest(test)
        if ds.task == "binary":
            m.setSigmoid()
        p = {"nthread": self.args.threads, "log": str(self.tmp / "xlearn_log")}
        m._set_Param(p)
        with capture_fds(log):
            dt, _ = timed(m.predict, model_path, out_path)
        return dt

    @staticmethod
    def _parse_log(text):
        text = _ANSI_RE.sub("", text)
        epochs = [float(m.group(3)) for m in map(_XL_EPOCH_RE.match, text.splitlines()) if m]

        def last(pat):
            v = re.findall(pat, text)
            return float(v[-1]) if v else float("nan")

        return {
            "epoch_times": epochs,
            "total": last(r"Total time cost: ([\d.]+)"),
            "read": last(r"Time cost for reading problem: ([\d.]+)"),
            "save": last(r"Time cost for saving model: ([\d.]+)"),
            "bin_found": "found. Skip converting" in text,
            "bin_missing": "NOT found" in text,
            "threads": re.findall(r"xLearn uses (\d+) threads", text),
        }

    def run(self, ds, lr=None, repeats=1, time_scoring=True):
        r = Result(ds.name, self.name, "", metric_name=ds.metric_name)
        train, test, write_s, state = self._paths(ds)
        model_path = str(self.tmp / "model.out")
        out_path = str(self.tmp / "pred.txt")
        if "warm" not in state:
            log = self.tmp / "warm.log"
            log.write_text("")
            state["warm"] = self._fit(ds, train, lr, model_path, log)
            info = self._parse_log(log.read_text())
            state["warm_converted"] = info["bin_missing"]
            r.notes.append(f"text write {write_s:.1f}s; first fit (text->bin) {state['warm']:.2f}s")
        epoch_sums, cache_hits, parts = [], 0, []
        for i in range(repeats):
            gc.collect()
            log = self.tmp / f"fit{i}.log"
            log.write_text("")
            dt = self._fit(ds, train, lr, model_path, log)
            info = self._parse_log(log.read_text())
            cache_hits += bool(info["bin_found"])
            epoch_sums.append(sum(info["epoch_times"]))
            parts.append((info["read"], info["save"], info["total"]))
            r.fit_all.append(dt)
            if info["threads"] and int(info["threads"][0]) != self.args.threads:
                r.notes.append(f"WARNING xLearn used {info['threads'][0]} threads")
        r.fit_s = median(r.fit_all)
        r.notes.append(
            f"fit on warm .bin cache ({cache_hits}/{repeats} runs hit it); xLearn's own log "
            f"(median, 10 ms resolution): epochs {median(epoch_sums):.2f}s, read problem "
            f"{median([p[0] for p in parts]):.2f}s, save model {median([p[1] for p in parts]):.2f}s, "
            f"'Total time cost' {median([p[2] for p in parts]):.2f}s")
        log = self.tmp / "pred.log"
        log.write_text("")
        self._predict(ds, test, model_path, out_path, log)  # warm-up: creates test .bin
        pred = np.loadtxt(out_path, dtype=np.float64, ndmin=1)
        r.metric = metric_value(ds.task, ds.y_test, pred)
        if time_scoring:
            ts = []
            for _ in range(max(3, repeats)):
                log.write_text("")
                ts.append(self._predict(ds, test, model_path, out_path, log))
            r.score_rows_s = ds.X_test.shape[0] / median(ts)
            hit = self._parse_log(log.read_text())["bin_found"]
            r.notes.append("score: predict() file->file incl. reading test"
                           + (" .bin" if hit else " text") + " and writing text output")
        return r


RUNNERS = {"cfm": CfmRunner, "xlearn": XLearnRunner, "modern_fm": ModernFmRunner,
           "cfm_f32": CfmF32Runner}


# --------------------------------------------------------------------------
# Data sets
# --------------------------------------------------------------------------

def synthetic_datasets(args):
    t = time.perf_counter()
    X, y, Xt, yt, fields = bds.make_criteo_like_split(args.rows, args.test_rows, n_factors=8,
                                                      seed=0)
    info = bds.make_criteo_like(20_000, seed=0, row_seed=99, return_info=True)[3]
    dt = time.perf_counter() - t
    note = (f"{args.rows:,} train / {args.test_rows:,} test rows, {X.shape[1]:,} columns, "
            f"39 nnz/row, CTR {y.mean():.3f}, oracle AUC ~{info['oracle_auc']:.3f} "
            f"(generated in {dt:.1f}s)")
    yield Dataset(f"synthetic {args.rows // 1000}k", "binary", X, y, Xt, yt, note,
                  fields=np.maximum(fields, 0).astype(np.int32))


def real_datasets(args):
    d = args.data_dir
    Xtr, ytr, Xte, yte = bds.load_movielens_fold("u1", d)
    ml_fields = np.r_[np.zeros(943, np.int32), np.ones(Xtr.shape[1] - 943, np.int32)]
    yield Dataset("ml-100k u1", "reg", Xtr, ytr, Xte, yte,
                  "80k/20k ratings, one-hot user+item (2,625 cols; FFM fields: user, item)",
                  fields=ml_fields)
    if args.model == "fm":  # libsvm data without fields
        Xtr, ytr, Xte, yte = bds.load_mushroom(d)
        yield Dataset("mushroom", "binary", Xtr, ytr, Xte, yte, "6,513/1,611 rows, 126 cols")
    Xtr, ytr, Xte, yte, fields = bds.load_criteo_small(d)
    yield Dataset("criteo small", "binary", Xtr, ytr, Xte, yte,
                  "200/200 rows (xLearn demo), 9,991 cols, 18 fields; AUC is very noisy",
                  fields=np.maximum(fields, 0).astype(np.int32))


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------

def fmt(x, spec):
    return "n/a" if x != x else format(x, spec)


def fmt_s(x):
    if x != x:
        return "n/a"
    return f"{x:.2f}" if x >= 1 else f"{x:.3f}"


def render(results, header, datasets_notes, args):
    out = ["# FM benchmark: cfm vs xLearn vs modern_fm", ""]
    out += header
    out += [f"- Settings: model={args.model}, k={args.k}, epochs={args.epochs}, threads={args.threads}, "
            f"repeats={args.repeats} (medians)", ""]
    out += ["Data sets:"] + [f"- {n}: {d}" for n, d in datasets_notes] + [""]
    out += ["| dataset | library | config | fit time (s) | scoring rows/s | metric |",
            "|---|---|---|---:|---:|---|"]
    for r in results:
        if r.error:
            out.append(f"| {r.dataset} | {r.library} | {r.config} | error | | {r.error} |")
            continue
        metric = f"{r.metric_name} {fmt(r.metric, '.4f')}"
        out.append(f"| {r.dataset} | {r.library} | {r.config} | {fmt_s(r.fit_s)} | "
                   f"{fmt(r.score_rows_s, ',.0f')} | {metric} |")
    scal = [r for r in results if r.scaling]
    if scal:
        out += ["", "cfm scoring thread scaling (in-memory decision_function, rows/s):", "",
                "| dataset | library | n_jobs=1 | n_jobs=%d | speed-up |" % args.threads,
                "|---|---|---:|---:|---:|"]
        for r in scal:
            a, b = r.scaling.get(1, float("nan")), r.scaling.get(args.threads, float("nan"))
            out.append(f"| {r.dataset} | {r.library} | {fmt(a, ',.0f')} | {fmt(b, ',.0f')} | "
                       f"{fmt(b / a, '.2f')}x |")
    notes = [(r, n) for r in results for n in r.notes]
    if notes:
        out += ["", "Notes:"]
        out += [f"- {r.dataset} / {r.library} / {r.config}: {n}" for r, n in notes]
        fits = [r for r in results if len(r.fit_all) > 1]
        out += [f"- {r.dataset} / {r.library} / {r.config}: all fit times "
                + ", ".join(f"{x:.2f}" for x in r.fit_all) for r in fits]
    return "\n".join(out) + "\n"


def write_json(path, results, header, datasets_notes, args):
    """The result rows (one per dataset x library x config) as JSON."""
    import dataclasses
    import json

    doc = {"benchmark": f"bench_fm --model {args.model}", "machine": header,
           "settings": {"model": args.model, "k": args.k, "epochs": args.epochs,
                        "threads": args.threads, "repeats": args.repeats},
           "datasets": dict(datasets_notes),
           "rows": [dataclasses.asdict(r) for r in results]}
    Path(path).write_text(json.dumps(doc, indent=1, default=str, allow_nan=True))


# --------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(
        description="cfm vs xLearn vs modern_fm: fit time, scoring speed and test metric.",
        epilog="See the module docstring (top of this file) for exactly what is timed.")
    ap.add_argument("--rows", type=int, default=1_000_000, help="synthetic training rows")
    ap.add_argument("--test-rows", type=int, default=200_000, help="synthetic test rows")
    ap.add_argument("--model", choices=("fm", "ffm"), default="fm",
                    help="fm: cfm FM vs xLearn FM vs modern_fm; ffm: cfm FFM vs xLearn FFM")
    ap.add_argument("--k", type=int, default=8, help="number of factors")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (medians reported)")
    ap.add_argument("--only", choices=("synthetic", "real", "all"), default="all")
    ap.add_argument("--libs", default=",".join(LIBRARIES),
                    help="comma-separated subset of " + ",".join(LIBRARIES + EXTRA_LIBRARIES))
    ap.add_argument("--lr-grid", default="",
                    help="comma-separated learning rates tried identically for every library "
                         "on the real data sets (best test metric reported), e.g. 0.02,0.05,0.1,0.2")
    ap.add_argument("--lr-grid-synthetic", action="store_true",
                    help="also run the lr grid on the synthetic set (slow)")
    ap.add_argument("--data-dir", type=Path, default=bds.DEFAULT_DATA_DIR)
    ap.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    ap.add_argument("--json", type=Path, default=None,
                    help="also write the result rows as JSON (used by run_all.py)")
    args = ap.parse_args(argv)

    grid = [float(x) for x in args.lr_grid.split(",") if x.strip()]
    runners = {}
    load_errors = []
    libs = [s.strip() for s in args.libs.split(",") if s.strip()]
    if args.model == "ffm":
        libs = [x for x in libs if x != "modern_fm"]  # modern_fm has no FFM
    elif "cfm_f32" in libs:
        print("[bench] cfm_f32 is for FFM (FM's default is float32); skipped", file=sys.stderr)
        libs = [x for x in libs if x != "cfm_f32"]
    for name in libs:
        try:
            runners[name] = RUNNERS[name](args)
        except Exception as e:  # noqa: BLE001
            load_errors.append(f"- {name} unavailable: {type(e).__name__}: {e}")
            print(f"[bench] {name} unavailable: {e}", file=sys.stderr)

    header = machine_info(args.threads) + load_errors
    print("\n".join(header), file=sys.stderr)

    gens = []
    if args.only in ("synthetic", "all"):
        gens.append((synthetic_datasets, args.lr_grid_synthetic))
    if args.only in ("real", "all"):
        gens.append((real_datasets, True))

    results, ds_notes = [], []
    for gen, use_grid in gens:
        for ds in gen(args):
            ds_notes.append((ds.name, ds.note))
            print(f"[bench] {ds.name}: {ds.note}", file=sys.stderr)
            for name, runner in runners.items():
                try:
                    r = runner.run(ds, lr=None, repeats=args.repeats)
                    r.config = "defaults"
                except Exception as e:  # noqa: BLE001
                    r = Result(ds.name, name, "defaults", error=f"{type(e).__name__}: {e}")
                results.append(r)
                print(f"[bench]   {name:9s} defaults fit {r.fit_s:.2f}s "
                      f"score {r.score_rows_s:,.0f} rows/s {ds.metric_name} {r.metric:.4f} {r.error}",
                      file=sys.stderr)
                if grid and use_grid:
                    best = None
                    for lr in grid:
                        try:
                            g = runner.run(ds, lr=lr, repeats=1, time_scoring=False)
                        except Exception as e:  # noqa: BLE001
                            print(f"[bench]   {name} lr={lr}: {e}", file=sys.stderr)
                            continue
                        print(f"[bench]   {name:9s} lr={lr:<6g} fit {g.fit_s:.2f}s "
                              f"{ds.metric_name} {g.metric:.4f}", file=sys.stderr)
                        better = (best is None or
                                  (g.metric > best[1].metric if ds.task == "binary"
                                   else g.metric < best[1].metric))
                        if better:
                            best = (lr, g)
                    if best is not None:
                        g = best[1]
                        g.config = f"best of lr grid (lr={best[0]:g})"
                        g.notes = []
                        results.append(g)
            del ds
            gc.collect()

    for r in runners.values():
        if hasattr(r, "close"):
            r.close()
    if hasattr(os, "getloadavg"):
        header.append("- Load average at end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    md = render(results, header, ds_notes, args)
    print(md)
    if args.out:
        args.out.write_text(md)
    if args.json:
        write_json(args.json, results, header, ds_notes, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
