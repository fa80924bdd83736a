"""DeepFM defaults across every real data set (issue 14): test metric per epoch
of a few candidate settings, to choose the estimators' defaults.

For each data set of ``benchmarks/real_data.py`` (first repeat; all its folds,
test predictions pooled, as bench_defaults.py does) and each setting, a
DeepFM is trained one epoch at a time (warm start continues exactly) and
scored on the test folds after every epoch: the curve says both which setting
is best and after how many epochs.  Fields: the data set's own when it has
them, else one field per column (<= 500 columns), else cfm's one-hot field
detection (the MCMC prior groups).

    python benchmarks/studies/deepfm_defaults.py                  # every set
    python benchmarks/studies/deepfm_defaults.py --sets criteo1tb-day0,ml100k --epochs 10

Output: one table per data set (metric after epochs 1, 2, 3, 5, 10, 15 and the
best epoch) and a summary; ``--out FILE`` writes it as Markdown too.  Small
sets are noisy (see real_data.py); read the trend over sets, not one cell.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1]))

import cfm  # noqa: E402
import real_data  # noqa: E402

SETTINGS = {
    "default": {},
    "l2=0": {"l2_v": 0.0, "l2_w": 0.0},
    "lr3e-3": {"learning_rate": 3e-3},
    "batch1024": {"batch_size": 1024},
    "batch64": {"batch_size": 64},
    "l2=1e-2": {"l2_v": 1e-2, "l2_w": 1e-2},
    "l2=1e-3": {"l2_v": 1e-3, "l2_w": 1e-3},
    "normalize": {"normalize": True},
}


def fields_for(split, X):
    if split.fields is not None:
        return np.maximum(np.asarray(split.fields), 0)
    if X.shape[1] <= 500:
        return np.arange(X.shape[1])
    from cfm._train import Data
    from cfm._train.coordinate import auto_groups

    groups, _ = auto_groups(Data(X, False, None))
    return groups


def curve(ds, setting, n_epochs, n_jobs, max_folds):
    """Pooled test metric after each epoch (first repeat of ``ds``)."""
    folds = ds.repeats()[0][:max_folds]
    scores = [[] for _ in range(n_epochs)]
    ys = []
    cls = cfm.DeepFMClassifier if ds.task == "binary" else cfm.DeepFMRegressor
    for s in folds:
        f = fields_for(s, s.X_train)
        m = cls(n_epochs=1, warm_start=True, n_jobs=n_jobs, random_state=0, **setting)
        for e in range(n_epochs):
            m.fit(s.X_train, s.y_train, fields=f)
            scores[e].append(m.decision_function(s.X_test) if ds.task == "binary"
                             else m.predict(s.X_test))
        ys.append(s.y_test)
    y = np.concatenate(ys)
    return [real_data.metric_value(ds.task, y, np.concatenate(sc)) for sc in scores]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default=None, help="comma-separated data set names")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-folds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    names = args.sets.split(",") if args.sets else None
    settings = args.settings.split(",")
    shown = [e for e in (1, 2, 3, 5, 10, 15, 20, 30) if e <= args.epochs]
    defaults = {k: v for k, v in cfm.DeepFMClassifier().get_params().items()
                if k in ("n_factors", "hidden_layer_sizes", "optimizer", "learning_rate",
                         "batch_size", "l2_w", "l2_v", "l2_dense", "dropout", "normalize")}
    lines = ["# DeepFM settings x epochs on the real data sets", "",
             f"`python benchmarks/studies/deepfm_defaults.py {' '.join(sys.argv[1:])}` "
             f"(load average at start {', '.join(f'{x:.2f}' for x in os.getloadavg())}); "
             f"default: the estimator's defaults {defaults} (learning_rate None: 1e-3 for "
             "Adam). First repeat of each set, test predictions of its folds pooled.", ""]
    summary = {}
    for ds in real_data.load_all(names=names):
        t0 = time.perf_counter()
        lines += [f"## {ds.name} ({ds.metric}; {ds.note})", "",
                  "| setting | " + " | ".join(f"ep {e}" for e in shown) + " | best (epoch) |",
                  "|---|" + "---|" * (len(shown) + 1)]
        for name in settings:
            c = curve(ds, SETTINGS[name], args.epochs, args.threads, args.max_folds)
            best = int(np.argmax(c) if ds.greater_is_better else np.argmin(c))
            lines.append(f"| {name} | " + " | ".join(f"{c[e - 1]:.4f}" for e in shown)
                         + f" | {c[best]:.4f} ({best + 1}) |")
            summary.setdefault(name, {})[ds.name] = c
            print(lines[-1], file=sys.stderr, flush=True)
        lines += ["", f"({time.perf_counter() - t0:.0f}s)", ""]
        print(f"{ds.name} done in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
        ds.release()
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
