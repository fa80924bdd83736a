"""Design study for issue 13: validation-driven training and settings chosen from the data.

A standalone prototype, *outside* the estimators: it drives cfm's public API
only (``warm_start=True`` + ``n_epochs``, ``learning_rate``, ``normalize``,
``l2_w`` / ``l2_v``, ``decision_function`` / ``predict``), so that candidate
policies can be measured before anything in cfm/ changes.  Findings and the
recommended policy: ``AUTOTUNE_FINDINGS.md`` next to this file.

    python benchmarks/studies/autotune_study.py policies        # every policy x data set
    python benchmarks/studies/autotune_study.py policies --quick
    python benchmarks/studies/autotune_study.py policies --synthetic   # + 1M-row timing
    python benchmarks/studies/autotune_study.py normalize       # data shape vs winning setting
    python benchmarks/studies/autotune_study.py mcmc            # MCMC classifier vs myFM
    python benchmarks/studies/autotune_study.py curves          # validation curves (figure data)

What ``policies`` measures, per policy and data set x model, evaluated exactly
as ``bench_defaults.py`` evaluates the defaults (same splits, seeds, pooled
test metric over folds, mean over repeats):

* the test metric of the prototype's fit, and its shortfall against cfm's
  best of the test-set grid and against the best of xLearn / modern_fm (both
  read from ``benchmarks/results/RESULTS_defaults.json``, written by
  ``bench_defaults.py --json``);
* its cost: *row-epochs* (rows trained, summed over every candidate's epochs,
  divided by the rows of one epoch over the whole training set; a fixed
  10-epoch fit is 10.0) -- deterministic and machine-independent -- and the
  wall-clock ratio to a fixed 10-epoch fit measured alongside on the same fold
  (indicative only on a shared machine).

The prototype (``autotune_fit``): hold out a seeded ``val_fraction`` of the rows
(stratified for classifiers); race the candidate settings by successive
halving on the validation metric with warm-started epochs (each candidate is
judged by the best validation score over its epochs so far); continue the
winner with early stopping (``patience``), restore its best epoch; optionally
refit on all rows.  Below ``small_rows`` rows, a k-fold race replaces the
single holdout.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("USER", "root")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
sys.path.insert(0, str(BENCH))

import bench_defaults as bd  # noqa: E402
import real_data as rd  # noqa: E402

# cfm's per-task L2 defaults (cfm/models.py FMRegressor._defaults; the
# classifiers use BaseFM._defaults); candidates scale both by a factor
DEFAULT_L2 = {"binary": (1e-5, 1e-5), "reg": (1e-3, 3e-2)}
DEFAULT_LR = {"binary": 0.1, "reg": 0.15}


# --------------------------------------------------------------------------
# Metrics on validation rows
# --------------------------------------------------------------------------

def _logloss(y01, z):
    z = np.asarray(z, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, -z) * y01 + np.logaddexp(0.0, z) * (1 - y01)))


def val_score(task, metric, y, z):
    """Higher is better: AUC, -logloss, -RMSE."""
    if not np.all(np.isfinite(z)):
        return -np.inf
    if task == "reg":
        return -float(np.sqrt(np.mean((np.asarray(y, np.float64) - z) ** 2)))
    if metric == "logloss":
        return -_logloss(y, z)
    if metric == "auc+logloss":  # AUC, ties (e.g. tiny val sets) broken by log loss
        return rd.metric_value("binary", y, z) - 1e-3 * _logloss(y, z)
    return rd.metric_value("binary", y, z)


def holdout_indices(y, fraction, seed, stratify):
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    strat = y if stratify and len(np.unique(y)) == 2 and \
        min(np.bincount(y.astype(int))) >= 2 else None
    tr, va = train_test_split(idx, test_size=fraction, random_state=seed, stratify=strat)
    return np.sort(tr), np.sort(va)


# --------------------------------------------------------------------------
# Policy and prototype
# --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Policy:
    name: str
    # (learning_rate or None for the default, normalize, l2 multiplier)
    candidates: tuple = ((None, True, 1.0),)
    val_fraction: float = 0.15
    rungs: tuple = (1, 2, 4)          # cumulative epochs at which the race eliminates
    eta: int = 2                      # keep ceil(alive / eta) at each rung
    patience: int = 3
    max_epochs: int = 40
    budget: float = 25.0              # row-epochs (10.0 = one fixed 10-epoch fit)
    metric: str = "auc"               # classifiers: auc / logloss / auc+logloss
    refit: str = "never"              # never / always
    refit_scale: bool = False         # refit epochs x 1 / (1 - val_fraction)
    small_rows: int = 0               # below: k-fold race (small_mode)
    small_mode: str = "kfold"         # kfold / fixed
    small_fixed: tuple = (None, True, 1.0, 10)  # small_mode="fixed": lr, norm, l2 mult, epochs
    kfolds: int = 5
    tol: float = 0.0
    # classifiers: at least this many minority-class rows in the validation
    # split, else the holdout grows (up to 0.5) to reach it
    min_val_minority: int = 0
    # guard: when the validation split cannot resolve the candidates (fewer
    # minority-class rows than this for classifiers, fewer rows than
    # guard_reg_rows for regressors), do not race: fit the fixed defaults
    guard_minority: int = 0
    guard_reg_rows: int = 0

    def describe(self):
        c = ", ".join(f"{'d' if lr is None else f'{lr:g}'}/{'T' if n else 'F'}"
                      + (f"/l2x{m:g}" if m != 1 else "") for lr, n, m in self.candidates)
        return c


class _Cand:
    def __init__(self, cfg, est):
        self.cfg, self.est = cfg, est
        self.epochs = 0
        self.best, self.best_epoch, self.snapshot = -np.inf, 0, None
        self.since_best = 0
        self.curve = []


class Tuner:
    """Runs a policy on one training set; records cost and choices."""

    def __init__(self, task, model, policy, seed, threads=1):
        self.task, self.model, self.p = task, model, policy
        self.seed, self.threads = seed, threads
        self.row_epochs = 0.0   # rows trained / n (full training set)
        self.val_rows = 0.0     # rows scored for validation / n

    # -- estimators
    def make(self, cfg, **extra):
        lr, norm, mult = cfg
        l2w, l2v = DEFAULT_L2[self.task]
        params = dict(random_state=self.seed, n_jobs=self.threads, normalize=norm,
                      l2_w=l2w * mult, l2_v=l2v * mult, **extra)
        if lr is not None:
            params["learning_rate"] = lr
        return bd.switch_auto_off(bd.cfm_estimator(self.task, self.model, **params))

    def _fit(self, est, X, y, fields):
        if self.model == "ffm":
            est.fit(X, y, fields=fields)
        else:
            est.fit(X, y)

    def _score(self, est, X):
        return bd.cfm_score(est, X, self.task)

    # -- one epoch of a candidate, then its validation score
    def step(self, c, Xt, yt, Xv, yv, fields):
        c.est.set_params(n_epochs=1)
        try:
            self._fit(c.est, Xt, yt, fields)
            z = self._score(c.est, Xv)
        except Exception:  # noqa: BLE001 - a diverging candidate loses the race
            z = np.full(Xv.shape[0], np.nan)
        c.epochs += 1
        self.row_epochs += Xt.shape[0] / self.n
        self.val_rows += Xv.shape[0] / self.n
        s = val_score(self.task, self.p.metric, yv, z)
        c.curve.append(s)
        if s > c.best + self.p.tol:
            c.best, c.best_epoch, c.since_best = s, c.epochs, 0
            c.snapshot = copy.deepcopy(c.est)
        else:
            c.since_best += 1
        return s

    def fit(self, X, y, fields=None):
        self.n = X.shape[0]
        t0 = time.perf_counter()
        p = self.p
        if p.small_rows and self.n < p.small_rows:
            out = self._fit_small(X, y, fields)
        else:
            out = self._fit_holdout(X, y, fields)
        self.seconds = time.perf_counter() - t0
        return out

    def _holdout(self, y):
        p = self.p
        frac = p.val_fraction
        if self.task == "binary" and p.min_val_minority:
            minority = min(int((y > 0).sum()), int((y <= 0).sum()))
            need = p.min_val_minority / max(minority, 1)
            frac = min(max(frac, need), 0.5)
        self.used_val_fraction = frac
        return holdout_indices(y, frac, self.seed, self.task == "binary")

    def _race(self, cands, Xt, yt, Xv, yv, fields):
        p = self.p
        alive = list(cands)
        for r in p.rungs:
            if len(alive) == 1:
                break
            for c in alive:
                while c.epochs < r:
                    self.step(c, Xt, yt, Xv, yv, fields)
            alive.sort(key=lambda c: -c.best)
            alive = alive[:max(1, math.ceil(len(alive) / p.eta))]
        return max(alive, key=lambda c: c.best)

    def _fit_holdout(self, X, y, fields):
        p = self.p
        tr, va = self._holdout(y)
        if p.guard_minority or p.guard_reg_rows:
            yv = y[va]
            small = (self.task == "binary" and min(int((yv > 0).sum()), int((yv <= 0).sum()))
                     < p.guard_minority) or (self.task == "reg" and len(va) < p.guard_reg_rows)
            if small:
                est = self.make((None, True, 1.0), n_epochs=10)
                self._fit(est, X, y, fields)
                self.row_epochs += 10
                self.choice = {"cfg": (None, True, 1.0), "epoch": 10, "val": float("nan"),
                               "val_fraction": 0.0, "guard": True}
                return est
        Xt, yt, Xv, yv = X[tr], y[tr], X[va], y[va]
        cands = [_Cand(cfg, self.make(cfg, warm_start=True)) for cfg in p.candidates]
        w = self._race(cands, Xt, yt, Xv, yv, fields)
        refit_cost = 0.0
        if p.refit == "always":
            refit_cost = None  # unknown yet; counted after
        # continue the winner: early stopping, budget
        while w.epochs < p.max_epochs and w.since_best < p.patience:
            if self.row_epochs + Xt.shape[0] / self.n > p.budget:
                break
            self.step(w, Xt, yt, Xv, yv, fields)
        del refit_cost
        self.choice = {"cfg": w.cfg, "epoch": w.best_epoch, "val": w.best,
                       "val_fraction": self.used_val_fraction,
                       "curves": {str(c.cfg): c.curve for c in cands}}
        best = w.snapshot if w.snapshot is not None else w.est
        if p.refit == "always":
            ep = w.best_epoch
            if p.refit_scale:
                ep = max(1, round(ep / (1 - self.used_val_fraction)))
            est = self.make(w.cfg, n_epochs=max(ep, 1))
            self._fit(est, X, y, fields)
            self.row_epochs += max(ep, 1)
            return est
        return best

    def _fit_small(self, X, y, fields):
        """k-fold: every candidate trained on each fold up to max_epochs; the
        (candidate, epoch) with the best pooled validation score wins; refit on
        all rows for that many epochs."""
        p = self.p
        if p.small_mode == "fixed":
            lr, norm, mult, ep = p.small_fixed
            est = self.make((lr, norm, mult), n_epochs=ep)
            self._fit(est, X, y, fields)
            self.row_epochs += ep
            self.choice = {"cfg": (lr, norm, mult), "epoch": ep, "val": float("nan"),
                           "val_fraction": 0.0}
            self.used_val_fraction = 0.0
            return est
        folds = rd.kfold_indices(y, p.kfolds, self.seed, self.task == "binary")
        best = (-np.inf, None, 0)
        for cfg in p.candidates:
            preds = np.zeros((p.max_epochs, len(y)))
            for tr, va in folds:
                est = self.make(cfg, warm_start=True, n_epochs=1)
                for e in range(p.max_epochs):
                    try:
                        self._fit(est, X[tr], y[tr], fields)
                        preds[e, va] = self._score(est, X[va])
                    except Exception:  # noqa: BLE001
                        preds[e:, va] = np.nan
                        break
                    self.row_epochs += len(tr) / self.n
                    self.val_rows += len(va) / self.n
            for e in range(p.max_epochs):
                s = val_score(self.task, p.metric, y, preds[e])
                if s > best[0] + p.tol:
                    best = (s, cfg, e + 1)
        s, cfg, ep = best
        self.used_val_fraction = 1.0 / p.kfolds
        self.choice = {"cfg": cfg, "epoch": ep, "val": s, "val_fraction": 0.0}
        est = self.make(cfg, n_epochs=ep)
        self._fit(est, X, y, fields)
        self.row_epochs += ep
        return est


# --------------------------------------------------------------------------
# Candidate sets and policies
# --------------------------------------------------------------------------

LRS = (0.02, 0.05, 0.1, 0.2, 0.5)


def grid_candidates(lrs=LRS, norms=(True, False), l2=(1.0,)):
    return tuple((lr, n, m) for n in norms for lr in lrs for m in l2)


def policies():
    """Every policy measured (name -> Policy)."""
    C10 = grid_candidates()                                   # the 10 grid settings
    C6 = grid_candidates((0.05, 0.1, 0.2))                    # 6: middle learning rates
    C4 = grid_candidates((0.05, 0.2))                         # 4
    C8L2 = grid_candidates((0.05, 0.2), l2=(1.0, 10.0))       # lr x norm x l2
    out = [
        Policy("es-only", ((None, True, 1.0),), rungs=()),
        Policy("es-only-normF", ((None, False, 1.0),), rungs=()),
        Policy("race4", C4),
        Policy("race6", C6),
        Policy("race10", C10),
        Policy("race10-eta3", C10, rungs=(1, 3), eta=3),
        Policy("race8-l2", C8L2),
        Policy("race6-val10", C6, val_fraction=0.10),
        Policy("race6-val20", C6, val_fraction=0.20),
        Policy("race6-logloss", C6, metric="logloss"),
        Policy("race6-refit", C6, refit="always"),
        Policy("race6-refit-scaled", C6, refit="always", refit_scale=True),
        Policy("race6-refit-val10", C6, val_fraction=0.10, refit="always"),
        Policy("race6-refit-guard", C6, refit="always", guard_minority=200, guard_reg_rows=1000),
        Policy("race6-pat5", C6, patience=5),
        Policy("race6-small2k", C6, small_rows=2000, max_epochs=20),
        Policy("race6-small2k-l2", C6 + grid_candidates((0.05, 0.2), l2=(10.0, 100.0)),
               small_rows=2000, max_epochs=20),
    ]
    return {p.name: p for p in out}


# --------------------------------------------------------------------------
# Evaluation over the data sets (as bench_defaults evaluates the defaults)
# --------------------------------------------------------------------------

@dataclasses.dataclass
class PolicyResult:
    dataset: str
    model: str
    metric: str
    policy: str
    metrics: list
    row_epochs: list
    time_ratio: list
    seconds: list
    choices: list


def run_policy(ds, model, policy, threads, n_seeds):
    res = PolicyResult(ds.name, model, ds.metric, policy.name, [], [], [], [], [])
    for _, seed, folds in bd.runs_of(ds, n_seeds):
        ys, preds = [], []
        re, tr, secs = 0.0, 0.0, 0.0
        for split in folds:
            tuner = Tuner(ds.task, model, policy, seed, threads)
            est = tuner.fit(split.X_train, split.y_train, split.fields)
            # a fixed 10-epoch fit alongside, for the wall-clock ratio
            ref = tuner.make((None, True, 1.0), n_epochs=10)
            t = time.perf_counter()
            tuner._fit(ref, split.X_train, split.y_train, split.fields)
            t10 = time.perf_counter() - t
            ys.append(split.y_test)
            preds.append(bd.cfm_score(est, split.X_test, ds.task))
            re += tuner.row_epochs / len(folds)
            tr += tuner.seconds
            secs += t10
            ch = dict(tuner.choice)
            ch.pop("curves", None)
            res.choices.append(ch)
        res.metrics.append(rd.metric_value(ds.task, np.concatenate(ys), np.concatenate(preds)))
        res.row_epochs.append(re)
        res.time_ratio.append(tr / secs if secs > 0 else float("nan"))
        res.seconds.append(tr)
    return res


def load_reference(paths):
    """bench_defaults rows by (dataset, model), from one or more --json files
    (later files win)."""
    rows = []
    for path in paths if isinstance(paths, (list, tuple)) else [paths]:
        if path and Path(path).exists():
            rows += bd.rows_from_json(json.loads(Path(path).read_text())["rows"])
    return {(r.dataset, r.model): r for r in bd.merge_rows(rows)}


def _ref_figures(ref_row):
    if ref_row is None:
        return None, None, None
    _, cb = ref_row.best("cfm")
    anchors = [c.mean for c in (ref_row.best("xlearn")[1], ref_row.best("modern_fm")[1]) if c]
    anc = (max(anchors) if ref_row.metric == "AUC" else min(anchors)) if anchors else None
    return (cb.mean if cb else None), anc, ref_row.defaults.mean if ref_row.defaults else None


def shortfall(metric, value, ref):
    if ref is None or value != value:
        return float("nan")
    return ref - value if metric == "AUC" else value - ref


def render_policies(results, refs, pols, args, machine):
    out = ["# Autotune study: candidate policies on every data set", "",
           f"Command: `python benchmarks/studies/autotune_study.py {' '.join(args.argv)}`", ""]
    out += machine
    out += ["- Reference figures (cfm defaults, cfm best of test-set grid, best of xLearn / "
            "modern_fm grids) from `benchmarks/results/RESULTS_defaults.json`.",
            "- shortfall > 0: behind the reference. row-ep: rows trained / training rows "
            "(fixed 10-epoch fit = 10). time x: wall clock / a fixed 10-epoch fit on the "
            "same fold (indicative: 2 shared cores; tiny sets are dominated by per-call "
            "overhead).", ""]
    out += ["## Policies", "", "| policy | candidates (lr/normalize[/l2 mult]) | settings |",
            "|---|---|---|"]
    for p in pols:
        s = (f"val {p.val_fraction:g}, rungs {list(p.rungs)}, eta {p.eta}, patience "
             f"{p.patience}, max {p.max_epochs} ep, budget {p.budget:g} row-ep, metric "
             f"{p.metric}, refit {p.refit}{' (scaled)' if p.refit_scale else ''}")
        if p.small_rows:
            s += f", below {p.small_rows} rows: {p.small_mode} ({p.kfolds} folds)"
        out.append(f"| {p.name} | {p.describe()} | {s} |")
    # summary: per policy, worst and mean shortfall
    keys = list(dict.fromkeys((r.dataset, r.model) for r in results))
    out += ["", "## Summary per policy", "",
            "| policy | sets within 0.003 of cfm best | sets at/above best anchor | mean "
            "shortfall vs cfm best | worst (set) | max row-ep | median time x |",
            "|---|---:|---:|---:|---|---:|---:|"]
    by = {(r.policy, r.dataset, r.model): r for r in results}
    for p in pols:
        sf, an, worst, rep, tx = [], [], (-1e9, ""), [], []
        for k in keys:
            r = by.get((p.name, *k))
            if r is None:
                continue
            cb, anc, _ = _ref_figures(refs.get(k))
            m = float(np.mean(r.metrics))
            s = shortfall(r.metric, m, cb)
            a = shortfall(r.metric, m, anc)
            if s == s:
                sf.append(s)
                if s > worst[0]:
                    worst = (s, f"{k[0]}/{k[1]}")
            if a == a:
                an.append(a)
            rep.append(max(r.row_epochs))
            tx.append(float(np.median(r.time_ratio)))
        if not rep:
            continue
        out.append(f"| {p.name} | {sum(s <= 0.003 for s in sf)}/{len(sf)} | "
                   f"{sum(a <= 0 for a in an)}/{len(an)} | {np.mean(sf):+.4f} | "
                   f"{worst[0]:+.4f} ({worst[1]}) | {max(rep):.1f} | {np.median(tx):.2f} |")
    # detail per data set
    out += ["", "## Per data set", "",
            "| data set | model | metric | defaults | cfm best | best anchor | policy | "
            "test metric | vs cfm best | vs anchor | row-ep | time x | choices |",
            "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    for k in keys:
        cb, anc, dflt = _ref_figures(refs.get(k))
        for p in pols:
            r = by.get((p.name, *k))
            if r is None:
                continue
            m = float(np.mean(r.metrics))
            pm = f"{m:.4f}" + (f" ±{np.std(r.metrics):.3f}" if len(r.metrics) > 1 else "")
            ch = _summarise_choices(r.choices)
            out.append(f"| {k[0]} | {k[1]} | {r.metric} | {bd._f(dflt)} | {bd._f(cb)} | "
                       f"{bd._f(anc)} | {p.name} | {pm} | "
                       f"{shortfall(r.metric, m, cb):+.4f} | {shortfall(r.metric, m, anc):+.4f} "
                       f"| {np.mean(r.row_epochs):.1f} | {np.median(r.time_ratio):.2f} | {ch} |")
    return "\n".join(out) + "\n"


def _summarise_choices(choices):
    from collections import Counter

    cnt = Counter()
    eps = []
    for c in choices:
        lr, norm, mult = c["cfg"]
        key = f"{'d' if lr is None else f'{lr:g}'}/{'T' if norm else 'F'}" + \
            (f"/l2x{mult:g}" if mult != 1 else "")
        cnt[key] += 1
        eps.append(c["epoch"])
    top = ", ".join(f"{k}:{v}" for k, v in cnt.most_common(3))
    return f"{top}; ep {int(np.median(eps))}"


def cmd_policies(args, log):
    pols_all = policies()
    names = args.policies or list(pols_all)
    pols = [pols_all[n] for n in names]
    sets = rd.load_all(args.data_dir, args.only, include_synthetic=args.synthetic,
                       synthetic_rows=args.synthetic_rows)
    refs = load_reference(args.reference)
    results = []
    for ds in sets:
        log(f"[{ds.name}]")
        for model in bd.models_for(ds, args.models):
            cb, anc, dflt = _ref_figures(refs.get((ds.name, model)))
            for p in pols:
                t = time.perf_counter()
                r = run_policy(ds, model, p, args.threads, args.seeds)
                results.append(r)
                m = float(np.mean(r.metrics))
                log(f"  {model} {p.name:20s} {ds.metric} {m:.4f} (vs cfm best "
                    f"{shortfall(ds.metric, m, cb):+.4f}, vs anchor "
                    f"{shortfall(ds.metric, m, anc):+.4f}) row-ep {np.mean(r.row_epochs):.1f} "
                    f"time x {np.median(r.time_ratio):.2f} [{_summarise_choices(r.choices)}] "
                    f"({time.perf_counter() - t:.1f}s)")
        ds.release()
        if args.json:  # after every data set: a long run keeps what it measured
            args.json.write_text(json.dumps([dataclasses.asdict(r) for r in results],
                                            default=str))
    return results, refs, pols


# --------------------------------------------------------------------------
# normalize: data shape vs the winning setting
# --------------------------------------------------------------------------

def data_shape(ds):
    s = ds.repeats()[0][0]
    X = s.X_train
    nnz = np.diff(X.indptr)
    vals = X.data
    row_norm = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    return {"rows": X.shape[0], "cols": X.shape[1], "nnz_mean": float(nnz.mean()),
            "nnz_cv": float(nnz.std() / max(nnz.mean(), 1e-12)),
            "binary": float(np.mean(vals == 1.0)),
            "row_norm_median": float(np.median(row_norm[row_norm > 0])),
            "rows_per_col": X.shape[0] / max(X.shape[1], 1)}


def cmd_normalize(args, log):
    refs = load_reference(args.reference)
    sets = rd.load_all(args.data_dir, args.only)
    out = ["# normalize: data shape vs the setting that wins cfm's test-set grid", "",
           f"Command: `python benchmarks/studies/autotune_study.py {' '.join(args.argv)}`", "",
           "Grid figures from `benchmarks/results/RESULTS_defaults.json`. 'T - F' is how much better "
           "normalize=True's best is (AUC: higher better; RMSE: lower better; > 0: True wins).",
           "", "| data set | model | rows | cols | nnz/row (mean, cv) | share of values = 1 | "
           "median row L2 norm | best T | best F | T - F | rule: nnz/row <= 8 -> F |",
           "|---|---|---:|---:|---|---:|---:|---|---|---:|:-:|"]
    for ds in sets:
        sh = data_shape(ds)
        for model in bd.models_for(ds, args.models):
            r = refs.get((ds.name, model))
            if r is None:
                continue
            _, t = r.best("cfm", norm=True)
            _, f = r.best("cfm", norm=False)
            if t is None or f is None:
                continue
            d = r.shortfall(f.mean, t.mean)
            rule_f = sh["nnz_mean"] <= 8
            agree = (d <= 0) == rule_f or abs(d) < 0.002
            out.append(f"| {ds.name} | {model} | {sh['rows']:,} | {sh['cols']:,} | "
                       f"{sh['nnz_mean']:.1f}, {sh['nnz_cv']:.2f} | {sh['binary']:.2f} | "
                       f"{sh['row_norm_median']:.2f} | {t.mean:.4f} [{bd._cfg(t)}] | "
                       f"{f.mean:.4f} [{bd._cfg(f)}] | {d:+.4f} | "
                       f"{'ok' if agree else 'WRONG'} |")
        ds.release()
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------
# Validation curves (figure data for the README section)
# --------------------------------------------------------------------------

def cmd_curves(args, log):
    """Per-epoch validation score of every grid setting on one fold of each set."""
    sets = rd.load_all(args.data_dir, args.only)
    pol = Policy("curves", grid_candidates(), rungs=(), max_epochs=40)
    doc = {}
    for ds in sets:
        split = ds.repeats()[0][0]
        for model in bd.models_for(ds, args.models):
            tuner = Tuner(ds.task, model, pol, 0, args.threads)
            tuner.n = split.X_train.shape[0]
            tr, va = tuner._holdout(split.y_train)
            X, y = split.X_train, split.y_train
            curves = {}
            for cfg in pol.candidates:
                c = _Cand(cfg, tuner.make(cfg, warm_start=True))
                for _ in range(pol.max_epochs):
                    tuner.step(c, X[tr], y[tr], X[va], y[va], split.fields)
                curves[f"{cfg[0]:g}/{'T' if cfg[1] else 'F'}"] = c.curve
            doc[f"{ds.name}/{model}"] = {"metric": ds.metric, "curves": curves}
            log(f"  {ds.name}/{model}: done")
        ds.release()
    return doc


# --------------------------------------------------------------------------
# MCMC classification vs myFM
# --------------------------------------------------------------------------

def import_myfm():
    """myfm 0.4 imports pkg_resources (gone from recent setuptools) only for its
    version string: give it a stand-in built on importlib.metadata."""
    try:
        import myfm
    except ModuleNotFoundError as exc:
        if exc.name != "pkg_resources":
            raise
        import importlib.metadata as md
        import types

        shim = types.ModuleType("pkg_resources")

        class DistributionNotFound(Exception):
            pass

        def get_distribution(name):
            try:
                return types.SimpleNamespace(version=md.version(name))
            except md.PackageNotFoundError:
                raise DistributionNotFound(name) from None

        shim.DistributionNotFound, shim.get_distribution = DistributionNotFound, get_distribution
        sys.modules["pkg_resources"] = shim
        import myfm
    return myfm


def _myfm_fit(cls_name, X, y, Xt, k, sweeps, seed, grouping=None, proba=True):
    myfm = import_myfm()

    from bench_fm import capture_fds

    with capture_fds(os.devnull):
        m = getattr(myfm, cls_name)(rank=k, random_seed=seed)
        m.fit(X, y, n_iter=sweeps, grouping=grouping)
        return m.predict_proba(Xt) if proba else m.predict(Xt)


def onehot_fields(X):
    """Greedy one-hot fields of a binary matrix: consecutive columns that never
    share a row form a field (what a one-hot encoding of categorical
    attributes gives)."""
    import scipy.sparse as sp

    C = sp.csc_matrix(X)
    fields = np.zeros(X.shape[1], dtype=np.int64)
    f, rows_in_field = 0, np.zeros(X.shape[0], dtype=bool)
    for j in range(X.shape[1]):
        rows = C.indices[C.indptr[j]:C.indptr[j + 1]]
        if rows_in_field[rows].any():
            f += 1
            rows_in_field[:] = False
        rows_in_field[rows] = True
        fields[j] = f
    return fields


def mcmc_variants(task):
    """(name, estimator params, fit kwargs builder) of cfm MCMC variants."""
    return [
        ("cfm default (auto groups)", {}, lambda s: {}),
        ("cfm one group (myFM's default)", {}, lambda s: {"groups": np.zeros(s.X_train.shape[1],
                                                                             np.int64)}),
        ("cfm one group per one-hot field", {}, lambda s: {"groups": onehot_fields(
            s.X_train) if s.fields is None else s.fields}),
        ("cfm default, init_std 0.03", {"init_std": 0.03}, lambda s: {}),
        ("cfm default, normalize", {"normalize": True}, lambda s: {}),
    ]


def cmd_mcmc(args, log):
    import cfm

    names = args.only or ["mushroom", "titanic", "criteo1tb-day0", "w8a", "deepctr-criteo",
                          "criteo-xlearn", "ml100k", "ml100k-side", "house-price"]
    sets = rd.load_all(args.data_dir, names)
    sweeps, k = args.sweeps, 8
    out = ["# MCMC (Gibbs) defaults: cfm vs myFM's default samplers", "",
           f"Command: `python benchmarks/studies/autotune_study.py {' '.join(args.argv)}`", "",
           f"k = {k}, {sweeps} sweeps, seeds 0..{args.mcmc_seeds - 1} per repeat; classifiers: "
           "test AUC of P(y=1); regressors: test RMSE. myFM: MyFMGibbsClassifier / "
           "MyFMGibbsRegressor(rank=8) with its defaults (one prior group, reg_0 = 1).", "",
           "| data set | metric | variant | mean | ± (runs) | fit s |", "|---|---|---|---:|---:|---:|"]
    for ds in sets:
        reps = ds.repeats()[:args.mcmc_repeats]
        variants = [(n, p, g, "cfm") for n, p, g in mcmc_variants(ds.task)] + \
                   [("myFM default", {}, None, "myfm"),
                    ("myFM, one group per one-hot field", {}, "fields", "myfm")]
        for name, params, groups_of, lib in variants:
            metrics, secs = [], []
            for r, folds in enumerate(reps):
                for s_ in range(args.mcmc_seeds):
                    seed = r * args.mcmc_seeds + s_
                    ys, preds, t = [], [], 0.0
                    for split in folds:
                        t0 = time.perf_counter()
                        if lib == "cfm":
                            cls = cfm.FMClassifier if ds.task == "binary" else cfm.FMRegressor
                            m = cls(n_factors=k, solver="mcmc", n_epochs=sweeps,
                                    random_state=seed, n_jobs=args.threads, **params)
                            m.fit(split.X_train, split.y_train, **groups_of(split))
                            p = m.predict_proba(split.X_test)[:, 1] if ds.task == "binary" \
                                else m.predict(split.X_test)
                        else:
                            grouping = None
                            if groups_of == "fields":
                                grouping = list(map(int, onehot_fields(split.X_train)
                                                    if split.fields is None else split.fields))
                            p = _myfm_fit("MyFMGibbsClassifier" if ds.task == "binary"
                                          else "MyFMGibbsRegressor", split.X_train,
                                          split.y_train, split.X_test, k, sweeps, seed,
                                          grouping, proba=ds.task == "binary")
                        t += time.perf_counter() - t0
                        ys.append(split.y_test)
                        preds.append(p)
                    metrics.append(rd.metric_value(ds.task, np.concatenate(ys),
                                                   np.concatenate(preds)))
                    secs.append(t)
            line = (f"| {ds.name} | {ds.metric} | {name} | {np.mean(metrics):.4f} | "
                    f"{np.std(metrics):.4f} ({len(metrics)}) | {np.mean(secs):.2f} |")
            out.append(line)
            log(line)
        ds.release()
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("policies", "normalize", "curves", "mcmc"))
    ap.add_argument("--quick", action="store_true",
                    help="policies: 3 small sets, 3 policies, one repeat")
    ap.add_argument("--only", default="")
    ap.add_argument("--policies", default="", help="comma-separated policy names")
    ap.add_argument("--models", default="fm,ffm")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=bd.NOISY_SEEDS)
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--synthetic-rows", type=int, default=1_000_000)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--reference", type=Path, nargs="+",
                    default=[BENCH / "results" / "RESULTS_defaults.json"],
                    help="bench_defaults.py --json file(s) with the grid figures")
    ap.add_argument("--sweeps", type=int, default=200, help="mcmc: Gibbs sweeps")
    ap.add_argument("--mcmc-seeds", type=int, default=3)
    ap.add_argument("--mcmc-repeats", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--render", type=Path, nargs="+", default=None,
                    help="policies: only render the Markdown from --json file(s)")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.only = [x for x in args.only.split(",") if x]
    args.policies = [x for x in args.policies.split(",") if x]
    args.models = [x for x in args.models.split(",") if x]
    if args.quick:
        args.only = args.only or ["titanic", "deepctr-avazu", "criteo-xlearn"]
        args.policies = args.policies or ["es-only", "race6", "race6-small2k"]
        bd.MAX_REPEATS = 1

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    from bench_fm import machine_info

    machine = machine_info(args.threads)
    suffix = "_quick" if args.quick else ""
    if args.command == "policies" and args.render:
        results = [PolicyResult(**r) for path in args.render
                   for r in json.loads(path.read_text())]
        for r in results:
            for c in r.choices:
                c["cfg"] = tuple(c["cfg"])
        pols_all = policies()
        pols = [pols_all[n] for n in dict.fromkeys(r.policy for r in results)]
        md = render_policies(results, load_reference(args.reference), pols, args, machine)
        out = args.out or BENCH / "results" / "RESULTS_autotune.md"
    elif args.command == "policies":
        results, refs, pols = cmd_policies(args, log)
        md = render_policies(results, refs, pols, args, machine)
        if args.json:
            args.json.write_text(json.dumps([dataclasses.asdict(r) for r in results],
                                            default=str))
        out = args.out or BENCH / "results" / f"RESULTS_autotune{suffix}.md"
    elif args.command == "normalize":
        md = cmd_normalize(args, log)
        out = args.out or BENCH / "results" / "RESULTS_normalize.md"
    elif args.command == "mcmc":
        md = cmd_mcmc(args, log)
        out = args.out or BENCH / "results" / "RESULTS_mcmc_defaults.md"
    else:
        doc = cmd_curves(args, log)
        out = args.out or BENCH / "results" / "curves.json"
        out.write_text(json.dumps(doc))
        log(f"wrote {out}")
        return 0
    print(md)
    out.write_text(md)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
