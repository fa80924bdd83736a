"""Encoding speed of raw tabular data: cfm.FieldEncoder vs scikit-learn.

Data: the raw Criteo 1TB sample (``/work/shared/data/criteo_1tb/day_0.part.txt.gz``,
10,000 rows, headerless TSV: label, 13 integer columns I1..I13, 26 hashed
categorical columns C1..C26 as 8-hex-digit strings, many missing values),
read with ``pandas.read_csv`` (reading is not timed) and replicated to
``--rows`` rows (default 1,000,000; the distinct values stay those of the
10,000 rows, so vocabularies are small: ~31.6k values in all).

Timed, side by side in one process on the same DataFrame (``--repeats``
runs each, alternating; the first run and the median are reported):

* vocabulary (26 categorical columns): ``FieldEncoder(min_frequency=m)``
  fit and transform (-> CSR, one field per column) vs scikit-learn's
  ``OrdinalEncoder(min_frequency=m, handle_unknown="use_encoded_value",
  unknown_value=-1)`` fit and transform (-> a dense float array of ids;
  missing values stay NaN), for m = 1 and 2;
* hashing (26 categorical columns): ``FieldEncoder(n_buckets=2**20)``
  transform (-> CSR) vs ``FeatureHasher(n_features=26 * 2**20,
  input_type="string")`` on "column=value" strings, the construction of
  those strings per row from the DataFrame timed separately (FeatureHasher
  cannot read a DataFrame);
* the whole frame (39 columns, numeric columns as quantile buckets):
  ``FieldEncoder().fit_transform``, for reference;
* scoring a CSV file of ``--csv-rows`` raw rows end to end with
  ``model.predict_csv`` (what ``cfm predict --csv`` runs), against reading
  the same blocks with ``pandas.read_csv`` alone.

Outputs are checked to agree: the ids ``FieldEncoder`` gives each row equal
OrdinalEncoder's (same vocabularies: both sort the values; cfm's ids are
``2 + ordinal``, 0 missing, 1 rare/unseen).

Usage::

    python benchmarks/bench_encoder.py [--rows 1000000] [--repeats 3] [--csv-rows 200000]
        [--out benchmarks/results/RESULTS_encoder.md]
"""
import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cfm  # noqa: E402

DATA = Path("/work/shared/data/criteo_1tb/day_0.part.txt.gz")
NAMES = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
CATS = NAMES[14:]
HASH_CFM = "hash, 2^20 buckets per column: cfm FieldEncoder.transform (CSR)"
HASH_SK = "hash: sklearn FeatureHasher.transform (strings ready)"
HASH_STR = "hash: building FeatureHasher's per-row strings (once)"


def load(rows):
    df = pd.read_csv(DATA, sep="\t", header=None, names=NAMES)
    reps = -(-rows // len(df))
    big = pd.concat([df] * reps, ignore_index=True).iloc[:rows].reset_index(drop=True)
    return big.drop(columns="label")


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def race(cases, repeats):
    """{name: [seconds per run]}, the cases alternating run by run."""
    times = {name: [] for name in cases}
    outs = {}
    for _ in range(repeats):
        for name, fn in cases.items():
            t, out = timed(fn)
            times[name].append(t)
            outs[name] = out
    return times, outs


def check_same_ids(cfm_X, ord_ids, enc):
    """FieldEncoder's ids equal OrdinalEncoder's (2 + ordinal; NaN -> 0, rare -> 1)."""
    ids = cfm_X.indices.reshape(cfm_X.shape[0], -1) - enc.offsets_[:-1]
    want = np.where(np.isnan(ord_ids), 0, np.where(ord_ids < 0, 1, ord_ids + 2))
    return bool(np.array_equal(ids, want.astype(ids.dtype)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--csv-rows", type=int, default=200_000,
                    help="rows of the CSV file scored end to end")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                         "RESULTS_encoder.md"))
    args = ap.parse_args(argv)
    if not DATA.exists():
        print(f"{DATA} not found: nothing to measure", file=sys.stderr)
        return 1
    import sklearn
    from sklearn.feature_extraction import FeatureHasher
    from sklearn.preprocessing import OrdinalEncoder

    X = load(args.rows)
    C = X[CATS]
    n = len(X)
    load0 = os.getloadavg()
    rows = []

    def report(what, times, note=""):
        first, med = times[0], statistics.median(times)
        rows.append((what, first, med, n / med, note))
        print(f"{what:<62} first {first:7.2f}s  median {med:7.2f}s  {n / med:12,.0f} rows/s",
              flush=True)

    # --- vocabulary -------------------------------------------------------
    checks = {}
    for m in (1, 2):
        def cfm_fit(m=m):
            return cfm.FieldEncoder(min_frequency=m).fit(C)

        def sk_fit(m=m):
            return OrdinalEncoder(min_frequency=m if m > 1 else None,
                                  handle_unknown="use_encoded_value", unknown_value=-1,
                                  dtype=np.float64).fit(C)
        times, outs = race({"cfm": cfm_fit, "sk": sk_fit}, args.repeats)
        report(f"fit, min_frequency={m}: cfm FieldEncoder", times["cfm"])
        report(f"fit, min_frequency={m}: sklearn OrdinalEncoder", times["sk"])
        enc, ordenc = outs["cfm"], outs["sk"]
        times, outs = race({"cfm": lambda: enc.transform(C), "sk": lambda: ordenc.transform(C)},
                           args.repeats)
        report(f"transform, min_frequency={m}: cfm FieldEncoder (CSR)", times["cfm"])
        report(f"transform, min_frequency={m}: sklearn OrdinalEncoder (dense ids)", times["sk"])
        checks[m] = check_same_ids(outs["cfm"], outs["sk"], enc)

    # --- hashing ----------------------------------------------------------
    nb = 2 ** 20
    henc = cfm.FieldEncoder(n_buckets=nb).fit(C.iloc[:1000])
    cols = [C[c] for c in CATS]

    def strings():
        parts = [(c + "=" + s.astype(object).where(s.notna(), "")).tolist() for c, s in
                 zip(CATS, cols)]
        return [list(r) for r in zip(*parts)]
    fh = FeatureHasher(n_features=len(CATS) * nb, input_type="string")
    t_str, docs = timed(strings)
    times, outs = race({"cfm": lambda: henc.transform(C), "sk": lambda: fh.transform(docs)},
                       args.repeats)
    report(HASH_CFM, times["cfm"])
    report(HASH_SK, times["sk"])
    report(HASH_STR, [t_str])
    del docs

    # --- whole frame ------------------------------------------------------
    times, outs = race({"cfm": lambda: cfm.FieldEncoder().fit_transform(X)}, args.repeats)
    report("all 39 columns (kinds as \"auto\" picks them): cfm fit_transform", times["cfm"])
    Xall = outs["cfm"]

    # --- scoring a CSV file end to end (cfm predict --csv) ---------------------
    csv_rows = min(args.csv_rows, n)
    tmp = Path(tempfile.mkdtemp(prefix="cfm_bench_enc_"))
    try:
        small = pd.read_csv(DATA, sep="\t", header=None, names=NAMES)
        model = cfm.FFMClassifier(encoder=cfm.FieldEncoder(), n_factors=4, n_epochs=2,
                                  auto_tune=False, random_state=0)
        model.fit(small.drop(columns="label"), small["label"])
        path = tmp / "rows.csv"
        X.iloc[:csv_rows].to_csv(path, index=False)
        t_read = []
        t_score = []
        for _ in range(args.repeats):
            t_read.append(timed(lambda: sum(len(c) for c in pd.read_csv(
                path, chunksize=65_536, dtype={c: str for c in CATS})))[0])
            t_score.append(timed(lambda: model.predict_csv(path, tmp / "out.txt"))[0])
        csv_note = (f"Scoring a CSV file of {csv_rows:,} raw rows (39 columns, "
                    f"{path.stat().st_size / 1e6:.0f} MB) with an FFM trained with an encoder, "
                    f"`model.predict_csv` (= `cfm predict --csv`, blocks of 65,536 rows): "
                    f"{statistics.median(t_score):.2f} s ({csv_rows / statistics.median(t_score):,.0f} "
                    f"rows/s), of which reading the same blocks with `pandas.read_csv` alone "
                    f"takes {statistics.median(t_read):.2f} s (medians of {args.repeats}).")
        print(csv_note, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load1 = os.getloadavg()

    lines = [
        "# Encoding raw tabular data: cfm.FieldEncoder vs scikit-learn",
        "",
        f"Produced by `python benchmarks/bench_encoder.py --rows {args.rows} --repeats "
        f"{args.repeats} --csv-rows {args.csv_rows}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
        "",
        f"Data: the raw Criteo 1TB sample (10,000 rows of day 0; 13 integer and 26 categorical "
        f"columns, many missing) replicated to {n:,} rows, as read by `pandas.read_csv` "
        f"(categorical columns: pandas `{C.dtypes.iloc[0]}` dtype). Reading the file is not "
        "timed. The distinct values are those of the 10,000 rows (small vocabularies): a "
        "set with more distinct values costs both encoders more per row.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, shared; load average "
        f"{load0[0]:.2f} before, {load1[0]:.2f} after. pandas {pd.__version__}, "
        f"scikit-learn {sklearn.__version__}, NumPy {np.__version__}. Runs alternate between "
        "the two libraries; \"first\" is the first call, \"median\" of "
        f"{args.repeats}.",
        "",
        "| what | first (s) | median (s) | rows/s (median) |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {w} | {f:.2f} | {m:.2f} | {r:,.0f} |" for w, f, m, r, _ in rows]
    med = {w: m for w, _, m, _, _ in rows}

    def ratio(sk, cf):
        return med[sk] / med[cf]
    fit_c, fit_s = "fit, min_frequency={}: cfm FieldEncoder", "fit, min_frequency={}: sklearn OrdinalEncoder"
    tr_c = "transform, min_frequency={}: cfm FieldEncoder (CSR)"
    tr_s = "transform, min_frequency={}: sklearn OrdinalEncoder (dense ids)"
    h_c, h_s, h_str = HASH_CFM, HASH_SK, HASH_STR
    lines += [
        "",
        "Ratios (scikit-learn time / cfm time, medians):",
        "",
        f"* fit: {ratio(fit_s.format(1), fit_c.format(1)):.1f}x (min_frequency=1), "
        f"{ratio(fit_s.format(2), fit_c.format(2)):.1f}x (min_frequency=2)",
        f"* transform: {ratio(tr_s.format(1), tr_c.format(1)):.1f}x (min_frequency=1), "
        f"{ratio(tr_s.format(2), tr_c.format(2)):.1f}x (min_frequency=2)",
        f"* hashing: {ratio(h_s, h_c):.1f}x against FeatureHasher.transform alone, "
        f"{(med[h_s] + med[h_str]) / med[h_c]:.1f}x counting the per-row strings it needs",
        "",
        f"Same ids as OrdinalEncoder (cfm id = 2 + ordinal, 0 missing, 1 rare): "
        f"min_frequency=1 {'yes' if checks[1] else 'NO'}, min_frequency=2 "
        f"{'yes' if checks[2] else 'NO'}. Whole frame: {Xall.shape[1]:,} features, "
        f"{Xall.nnz:,} entries.",
        "",
        csv_note,
        "",
        "cfm's output is the CSR matrix FM / FFM train on (plus `fields_`); OrdinalEncoder's "
        "is a dense array of ids that still has to become one (offsets per column, missing "
        "and unknown ids), and FeatureHasher needs one Python list of strings per row.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
