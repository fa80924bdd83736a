"""How cfm.FMRanker's defaults were chosen: NDCG@10 on a validation split of
MovieLens 100K's *training* set (ua.base, ratings >= 4; ua.test is never
looked at): two random positives per user (users with >= 3) held out, two
seeds.  Grid: loss x learning rate x L2 (l2_w = l2_v), read at 20, 50 and 100
epochs (one warm-started fit per setting: a warm start continues exactly).

    PYTHONPATH=$PWD python benchmarks/studies/rank_defaults.py   # -> results/RESULTS_ranking_defaults.md
"""
import itertools
import os
import sys

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import cfm  # noqa: E402
from bench_ranking import read_split  # noqa: E402

EPOCHS = (20, 50, 100)


def split(train, seed):
    rng = np.random.default_rng(100 + seed)
    R, V = train.tolil(), sp.lil_matrix(train.shape)
    for u in range(train.shape[0]):
        items = train[u].indices
        if len(items) >= 3:
            for i in rng.choice(items, 2, replace=False):
                R[u, i], V[u, i] = 0, 1
    R = R.tocsr()
    R.eliminate_zeros()
    return R, V.tocsr()


def main():
    train = read_split("ua.base")
    res = {}
    for seed in range(2):
        R, V = split(train, seed)
        for loss, lr, l2 in itertools.product(("bpr", "warp"), (0.02, 0.05, 0.1), (1e-4, 1e-3)):
            m = cfm.FMRanker(loss=loss, learning_rate=lr, l2_w=l2, l2_v=l2, warm_start=True,
                             random_state=seed, n_jobs=2)
            done = 0
            for e in EPOCHS:
                m.set_params(n_epochs=e - done).fit(R)
                done = e
                res.setdefault((loss, lr, l2, e), []).append(
                    m.evaluate(V, 10, exclude=R)["ndcg@10"])
            print(loss, lr, l2, [round(np.mean(res[(loss, lr, l2, e)]), 4) for e in EPOCHS],
                  flush=True)
    lines = ["# FMRanker defaults: validation NDCG@10 on MovieLens 100K (ua.base only)", "",
             "Command: `PYTHONPATH=$PWD python benchmarks/studies/rank_defaults.py`  ",
             "Two positives per user held out of ua.base (ratings >= 4), mean of 2 seeds; 32 "
             "factors, AdaGrad, uniform negatives, 2 threads.", "",
             "| loss | learning_rate | l2 | " + " | ".join(f"{e} epochs" for e in EPOCHS) + " |",
             "|---|---:|---:|" + "---:|" * len(EPOCHS)]
    for loss, lr, l2 in itertools.product(("bpr", "warp"), (0.02, 0.05, 0.1), (1e-4, 1e-3)):
        lines.append(f"| {loss} | {lr} | {l2:g} | " + " | ".join(
            f"{np.mean(res[(loss, lr, l2, e)]):.4f}" for e in EPOCHS) + " |")
    out = os.path.join(os.path.dirname(__file__), "..", "results",
                       "RESULTS_ranking_defaults.md")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
