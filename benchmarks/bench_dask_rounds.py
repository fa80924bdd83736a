"""Test AUC of parameter mixing against the round schedule (issue 15).

An in-process simulation of a cfm.dask fit with W workers: the same shards
(``cfm._dask_tasks.prepare``), worker rounds (``run_round``: resident model
rows, passes over one or more slices), messages (``mix.ResidentRows``) and
merge (``mix.merge``) as the Dask fit, without the cluster -- so that the
accuracy of many schedules can be measured in the time of a few Dask fits
(it measures AUC only; time and bytes are bench_dask.py's).  Compared with
the local fit (``cfm.FMClassifier``, 2 threads) on the same data and epochs.

Schedules: ``fixed:R`` -- R rounds every epoch (``rounds_per_epoch=R``);
``grow:R:G`` -- the shard cut into R slices, epoch e (from 0) in rounds of
G**e slices (the estimator's default is fixed:ceil(rows/50k); grow:ceil(rows/50k):4 with
cfm.dask.ROUND_GROWTH = 4).

    PYTHONPATH=$PWD python benchmarks/bench_dask_rounds.py --rows 1000000 \\
        --schedules fixed:20,fixed:8,fixed:4,grow:20:4,grow:20:20
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_data import _auc, make_criteo_like_split  # noqa: E402


def simulate(Xtr, ytr, Xte, yte, schedule, *, workers, epochs, mixing, seed=0):
    """Test AUC and rounds of a simulated distributed fit."""
    import cfm
    from cfm import _dask_tasks as tasks
    from cfm._train import mix
    from cfm.dask import DaskFMClassifier

    kind, *nums = schedule.split(":")
    n_parts = int(nums[0])
    growth = int(nums[1]) if kind == "grow" else 1
    n, nf = Xtr.shape
    est = DaskFMClassifier(n_epochs=epochs, random_state=seed, auto_tune=False, mixing=mixing)
    dtype = est._validate_params()
    est._prepare_y(np.unique(ytr), 2, reset=True)
    fields = est._check_fields(None, nf, reset=True)
    enc = cfm.FMClassifier(**est._local_params())
    enc.classes_ = est.classes_
    cut = np.linspace(0, n, workers + 1).astype(int)
    shards = [tasks.prepare(tasks.RawShard(Xtr[a:b], ytr[a:b], None, None, 0, "arrays", None),
                            enc, nf, 0, n_parts, seed + 1 + i, True)
              for i, (a, b) in enumerate(zip(cut[:-1], cut[1:]))]
    state = est._init_state(nf, np.array([s.y_sum / s.w_sum for s in shards]),
                            np.array([s.w_sum for s in shards]), dtype, fields)
    hyper = est._hyper()
    sync = mix.ResidentRows(nf, [s.held for s in shards])
    sync.nonce = b"sim"
    rng = np.random.default_rng(seed)
    n_rounds = 0
    for epoch in range(epochs):
        g = min(n_parts, growth ** epoch)
        order = rng.permutation(n_parts)
        for a in range(0, n_parts, g):
            parts = tuple(int(p) for p in order[a:a + g])
            n_rounds += 1
            ups, groups = [], []
            for k, s in enumerate(shards):
                pos, counts = mix.group_positions([s.slices[p].pos for p in parts],
                                                  [s.slices[p].counts for p in parts],
                                                  len(s.held))
                rows = s.held[pos]
                full, idx, tabs = sync.message(k, state, rows, pos)
                msg = tasks.RowsMsg(full, idx, tabs, state.w0_state.copy(),
                                    None if full is not None else (b"sim", sync.round),
                                    (b"sim", sync.round + 1))
                up = tasks.run_round(s, msg, hyper, int(rng.integers(2**62)), True, 1, parts)
                up.rows, up.counts = rows, counts
                ups.append(up)
                groups.append((rows, pos))
            shared = mix.merge(state, ups, hyper, mixing)
            sync.merged([g_[0] for g_ in groups], [g_[1] for g_ in groups], shared)
    est._state = state
    return _auc(yte, est.decision_function(Xte)), n_rounds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--mixing", default="sum")
    ap.add_argument("--schedules", default="fixed:20,fixed:8,fixed:4,grow:20:4")
    args = ap.parse_args(argv)
    import cfm

    n_test = max(10_000, args.rows // 5)
    Xtr, ytr, Xte, yte, _ = make_criteo_like_split(args.rows, n_test)
    t = time.perf_counter()
    local = cfm.FMClassifier(n_jobs=2, n_epochs=args.epochs, random_state=0,
                             auto_tune=False).fit(Xtr, ytr)
    a_loc = _auc(yte, local.decision_function(Xte))
    print(f"{args.rows:,} rows, {args.epochs} epochs, {args.workers} workers, "
          f"mixing={args.mixing}; local 2 threads: AUC {a_loc:.4f} "
          f"({time.perf_counter() - t:.1f}s)", flush=True)
    for sched in args.schedules.split(","):
        t = time.perf_counter()
        a, rounds = simulate(Xtr, ytr, Xte, yte, sched, workers=args.workers,
                             epochs=args.epochs, mixing=args.mixing)
        print(f"  {sched:12s} {rounds:4d} rounds: AUC {a:.4f} ({a - a_loc:+.4f})  "
              f"[{time.perf_counter() - t:.0f}s]", flush=True)


if __name__ == "__main__":
    main()
