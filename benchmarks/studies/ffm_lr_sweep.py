"""FFM learning-rate sweep behind the README's note on the default learning rate.

* Criteo demo (xLearn's 200-row libffm sample in ``<repo>/../shared/data``):
  mean test AUC of ``FFMClassifier`` over 5 seeds and k = 4, 8 for each rate
  (a few seconds).
* ``--synthetic``: also the 1M-row Criteo-shaped synthetic set of
  ``bench_fm.py`` (k=8, 5 epochs, 2 threads), test AUC per rate (about 30 s
  per rate).

    python benchmarks/studies/ffm_lr_sweep.py [--synthetic] [--rates 0.1,0.15,0.2]
"""
import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # benchmarks/: bench_data
sys.path.insert(0, str(HERE.parents[1]))  # the checkout: cfm

import cfm  # noqa: E402
import bench_data as bds  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="0.1,0.15,0.2")
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--data-dir", type=Path, default=bds.DEFAULT_DATA_DIR)
    args = ap.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    print(f"FFMClassifier default learning_rate: {cfm.FFMClassifier()._hp('learning_rate')}")
    d = Path(args.data_dir) / "xlearn" / "criteo_ctr"
    if (d / "small_train.txt").exists():
        Xtr, ytr, ftr = cfm.load_libffm(d / "small_train.txt")
        Xte, yte, _ = cfm.load_libffm(d / "small_test.txt", n_features=Xtr.shape[1])
        for lr in rates:
            aucs = [roc_auc_score(yte, cfm.FFMClassifier(n_factors=k, random_state=s, n_jobs=1,
                                                         learning_rate=lr)
                                  .fit(Xtr, ytr, fields=ftr).decision_function(Xte))
                    for k in (4, 8) for s in range(5)]
            print(f"criteo demo  lr={lr:<5} mean test AUC {np.mean(aucs):.4f} "
                  f"(5 seeds x k=4,8; min {min(aucs):.4f}, max {max(aucs):.4f})")
    else:
        print(f"criteo demo: {d} not found, skipped")
    if args.synthetic:
        X, y, Xt, yt, fields = bds.make_criteo_like_split(1_000_000, 200_000, n_factors=8, seed=0)
        fields = np.maximum(fields, 0).astype(np.int32)
        for lr in rates:
            m = cfm.FFMClassifier(n_factors=8, n_epochs=5, n_jobs=2, random_state=0,
                                  learning_rate=lr).fit(X, y, fields=fields)
            print(f"synthetic 1M lr={lr:<5} test AUC {roc_auc_score(yt, m.decision_function(Xt)):.4f}")


if __name__ == "__main__":
    main()
