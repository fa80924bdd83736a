"""Side-by-side DeepFM benchmark: cfm vs DeepCTR-Torch vs pytorch-fm (issue 14).

Every library runs in a fresh subprocess (so its peak memory and its first,
cold scoring call are its own) with the same threads (``torch.set_num_threads``
/ cfm ``n_threads``), embedding size, MLP, batch size, optimizer (Adam),
learning rate and epochs; no L2 and no dropout anywhere (so that the settings
match exactly: DeepCTR's default L2 on the embeddings is computed over its
whole table at every step, cfm's over the rows a batch touches).

Libraries
---------
* ``cfm``: ``cfm.DeepFMClassifier`` (one ``fit`` of all the epochs, as a
  user runs it: a new random order every epoch, w0 started at the log-odds
  of the training labels); the epoch time is the training loop's, the test
  rows are scored after each epoch by a callback.
* ``deepctr``: DeepCTR-Torch ``DeepFM`` (``model.fit(..., epochs=1)`` per
  epoch, ``model.predict``), one ``SparseFeat`` per field, its defaults except
  the matched settings (``l2_reg_linear = l2_reg_embedding = 0``).
* ``torchfm``: pytorch-fm ``DeepFactorizationMachineModel`` (its MLP has
  BatchNorm after each hidden layer, part of that model), trained with
  ``BCELoss`` and ``torch.optim.Adam`` in the usual DataLoader loop.
* ``cfm-fm`` / ``cfm-ffm``: ``cfm.FMClassifier`` / ``cfm.FFMClassifier`` with
  their defaults (AdaGrad, their own epochs and normalisation), for context.

Data
----
* ``a``: a 200k-row slice of the 1M-row Criteo-shaped synthetic set
  (``bench_data.make_criteo_like_split(1_000_000, 100_000)``, 39 one-hot fields,
  1.95M ids), tested on 50k rows of its test set; MLP 256-128, k 8, batch 1024.
* ``b``: a small-vocabulary set: 200k rows, 10 one-hot fields of 100 ids
  (``make_criteo_like(n_fields=10, ids_per_field=100)``: labels from a planted
  FM), 50k test rows; MLP 256-128, k 8, batch 1024.  Also the *floor*: the
  time of the same dense layers' GEMMs alone for one epoch (NumPy matmuls of
  the same shapes, forward + backward: 3 per layer), with the same threads.
* ``c``: real CTR data from ``../shared/data``: Criteo 1TB day-0 sample (10k
  rows), DeepCTR's Criteo sample (200 rows) and Avazu sample (100 rows).
  Categorical columns become ids per field (missing -> its own id, values
  seen once in the training fold or not at all -> one "rare" id); integer
  columns are bucketed by log2 (missing, < 0, 0, then 1 + floor(log2 v)) and
  used as categorical ids.  5-fold cross-validation (stratified, seeded),
  AUC / logloss averaged over the folds.  MLP 256-128, k 8, batch 256.

Reported: per-epoch fit time (median over epochs; the first epoch too),
scoring rows/s on the test rows (cold: the process's first scoring call;
warm: best of 3), peak memory (ru_maxrss of the subprocess, and its growth
over the RSS after imports and data loading), test AUC and logloss after
each epoch.  Load averages are recorded: on a shared machine timings are
indicative only; compare ratios within one run.

Example::

    python benchmarks/bench_deepfm.py --out benchmarks/results/RESULTS_deepfm.md
    python benchmarks/bench_deepfm.py --only b --libs cfm,deepctr --epochs 1

``--native-blas`` unsets OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE in the
subprocesses (some machines set them to pin an old OpenBLAS to its Haswell
kernels; the OpenBLAS that SciPy and NumPy bundle today needs no such pin and
then uses the CPU's own kernels).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# ../shared/data beside the repository (a git worktree one level deeper: ../../shared/data)
DATA = next((p for p in (REPO.parent / "shared" / "data", REPO.parent.parent / "shared" / "data")
             if p.is_dir()), REPO.parent / "shared" / "data")
sys.path.insert(0, str(HERE))

LIBS = ("cfm", "deepctr", "torchfm", "cfm-fm", "cfm-ffm")


# --------------------------------------------------------------------------
# data: per-field id matrices (n, F), vocab sizes, labels 0/1
# --------------------------------------------------------------------------
def _ids_from_onehot(X, n_fields, ids_per_field):
    cols = X.indices.reshape(X.shape[0], n_fields).astype(np.int64)
    return cols - np.arange(n_fields, dtype=np.int64) * ids_per_field


def data_a(out_dir):
    from bench_data import make_criteo_like_split

    t = time.perf_counter()
    Xtr, ytr, Xte, yte, _ = make_criteo_like_split(1_000_000, 100_000)
    gen = time.perf_counter() - t
    n, nt = 200_000, 50_000
    p = Path(out_dir) / "a.npz"
    np.savez(p, ids_tr=_ids_from_onehot(Xtr[:n], 39, 50_000), y_tr=ytr[:n],
             ids_te=_ids_from_onehot(Xte[:nt], 39, 50_000), y_te=yte[:nt],
             vocab=np.full(39, 50_000))
    note = (f"a: Criteo-shaped synthetic, first 200,000 of 1M train rows, 50,000 test rows, "
            f"39 one-hot fields, 1,950,000 ids, CTR {ytr[:n].mean():.3f} (generated in {gen:.1f}s)")
    return [p], note


def data_b(out_dir):
    from bench_data import make_criteo_like_split

    Xtr, ytr, Xte, yte, _ = make_criteo_like_split(200_000, 50_000, n_fields=10,
                                                   ids_per_field=100)
    p = Path(out_dir) / "b.npz"
    np.savez(p, ids_tr=_ids_from_onehot(Xtr, 10, 100), y_tr=ytr,
             ids_te=_ids_from_onehot(Xte, 10, 100), y_te=yte, vocab=np.full(10, 100))
    note = (f"b: small vocabulary, 200,000 train / 50,000 test rows, 10 one-hot fields of 100 ids, "
            f"CTR {ytr.mean():.3f}")
    return [p], note


def _read_raw(name):
    """(labels 0/1, integer columns as float with NaN, categorical as str) of a raw CTR file."""
    if name == "criteo_1tb":
        with gzip.open(DATA / "criteo_1tb" / "day_0.part.txt.gz", "rt") as f:
            rows = [line.rstrip("\n").split("\t") for line in f]
        y = np.array([int(r[0]) for r in rows])
        ints = [[r[1 + i] for r in rows] for i in range(13)]
        cats = [[r[14 + i] for r in rows] for i in range(26)]
    elif name == "criteo_sample":
        with open(DATA / "deepctr" / "criteo_sample.txt") as f:
            head = f.readline().rstrip("\n").split(",")
            rows = [line.rstrip("\n").split(",") for line in f]
        col = {h: i for i, h in enumerate(head)}
        y = np.array([int(r[col["label"]]) for r in rows])
        ints = [[r[col[f"I{i}"]] for r in rows] for i in range(1, 14)]
        cats = [[r[col[f"C{i}"]] for r in rows] for i in range(1, 27)]
    else:  # avazu_sample
        with open(DATA / "deepctr" / "avazu_sample.txt") as f:
            head = f.readline().rstrip("\n").split(",")
            rows = [line.rstrip("\n").split(",") for line in f]
        col = {h: i for i, h in enumerate(head)}
        y = np.array([int(r[col["click"]]) for r in rows])
        ints = []
        cats = [[r[col[h]] for r in rows] for h in head if h not in ("id", "click")]
    ints = [np.array([float(v) if v != "" else np.nan for v in c]) for c in ints]
    return y, ints, cats


def _bucket(v):
    """log2 buckets: missing 0, < 0 -> 1, 0 -> 2, v > 0 -> 3 + floor(log2 v)."""
    out = np.zeros(v.shape, dtype=np.int64)
    ok = ~np.isnan(v)
    out[ok & (v < 0)] = 1
    out[ok & (v == 0)] = 2
    pos = ok & (v > 0)
    out[pos] = 3 + np.floor(np.log2(v[pos])).astype(np.int64)
    return out


def _encode_fold(ints, cats, tr, te):
    """Ids per field from the training fold: categorical missing -> 0, seen
    once or unseen -> 1 (rare), else 2..; integer buckets as ids."""
    cols_tr, cols_te, vocab = [], [], []
    for v in ints:
        b = _bucket(v)
        cols_tr.append(b[tr])
        cols_te.append(b[te])
        vocab.append(int(b.max()) + 1)
    for c in cats:
        c = np.asarray(c, dtype=object)
        vals, counts = np.unique(c[tr], return_counts=True)
        keep = [v for v, n in zip(vals, counts) if n >= 2 and v != ""]
        m = {v: i + 2 for i, v in enumerate(keep)}
        enc = np.array([0 if v == "" else m.get(v, 1) for v in c], dtype=np.int64)
        cols_tr.append(enc[tr])
        cols_te.append(enc[te])
        vocab.append(len(keep) + 2)
    return np.stack(cols_tr, axis=1), np.stack(cols_te, axis=1), np.array(vocab)


C_SETS = ("criteo_1tb", "criteo_sample", "avazu_sample")


def data_c(out_dir, n_folds=5, repeats=1, names=C_SETS):
    """The fold files of (c): ``repeats`` stratified ``n_folds``-fold
    partitions per data set (partition r drawn with seed r; r = 0 is the
    single partition of ``--repeats 1``), named ``c_{name}_{r}_{k}.npz``."""
    paths, notes = [], []
    for name in names:
        y, ints, cats = _read_raw(name)
        for r in range(repeats):
            rng = np.random.default_rng(r)
            fold = np.empty(len(y), dtype=np.int64)
            for cls in (0, 1):                    # stratified folds
                idx = rng.permutation(np.flatnonzero(y == cls))
                fold[idx] = np.arange(len(idx)) % n_folds
            for k in range(n_folds):
                tr, te = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
                ids_tr, ids_te, vocab = _encode_fold(ints, cats, tr, te)
                p = Path(out_dir) / f"c_{name}_{r}_{k}.npz"
                np.savez(p, ids_tr=ids_tr, y_tr=y[tr], ids_te=ids_te, y_te=y[te], vocab=vocab)
                paths.append(p)
        notes.append(f"c/{name}: {len(y):,} rows, CTR {y.mean():.3f}, {len(ints)} integer + "
                     f"{len(cats)} categorical fields, "
                     + (f"{repeats} x " if repeats > 1 else "") + f"{n_folds}-fold CV")
    return paths, "; ".join(notes)


def _repeat_of(path):
    """The partition index r of a fold file ``c_{name}_{r}_{k}.npz``."""
    return int(Path(path).stem.rsplit("_", 2)[-2])


# --------------------------------------------------------------------------
# workers (one library, one data file, in a fresh process)
# --------------------------------------------------------------------------
def auc(y, s):
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s)) if 0 < np.mean(y) < 1 else float("nan")


def logloss(y, p):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def to_csr(ids, vocab):
    import scipy.sparse as sp

    offs = np.concatenate([[0], np.cumsum(vocab)[:-1]]).astype(np.int64)
    n, F = ids.shape
    idx = (ids + offs).ravel().astype(np.int32 if vocab.sum() < 2**31 else np.int64)
    X = sp.csr_matrix((np.ones(n * F, np.float32), idx, np.arange(0, n * F + 1, F)),
                      shape=(n, int(vocab.sum())))
    fields = np.repeat(np.arange(F, dtype=np.int32), vocab)
    return X, fields


class Timer:
    def __init__(self):
        self.epochs = []


def score_timing(fn, n_rows, warm_repeats=3):
    ts = []
    for _ in range(warm_repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return n_rows / min(ts)


def worker_cfm(d, s, res):
    """cfm.DeepFMClassifier, as a user runs it: one fit of ``epochs`` epochs;
    each epoch's time is the training loop's (``history_``), and after each
    epoch a callback scores the test rows with the model as it stands."""
    import cfm

    Xtr, fields = to_csr(d["ids_tr"], d["vocab"])
    Xte, _ = to_csr(d["ids_te"], d["vocab"])
    res["rss_data_mb"] = rss_mb()
    m = cfm.DeepFMClassifier(n_factors=s["k"], hidden_layer_sizes=tuple(s["hidden"]),
                             learning_rate=s["lr"], batch_size=s["batch"],
                             init_std=s["cfm_init_std"], n_epochs=s["epochs"],
                             l2_w=0.0, l2_v=0.0,  # matched settings: no L2 anywhere
                             n_jobs=s["threads"], random_state=s["seed"])
    clock = {"cpu": time.process_time()}

    def after_epoch(rec, n_epochs):
        res["epoch_s"].append(rec["time"])
        res["epoch_cpu_s"].append(time.process_time() - clock["cpu"])
        res["phases"].append(m._state.last_phase_times)
        t = time.perf_counter()
        z = m.decision_function(Xte)
        if rec["epoch"] == 1:
            res["score_cold_rows_s"] = Xte.shape[0] / (time.perf_counter() - t)
        p = 1 / (1 + np.exp(-z))
        res["auc"].append(auc(d["y_te"], p))
        res["logloss"].append(logloss(d["y_te"], p))
        clock["cpu"] = time.process_time()

    m.fit(Xtr, d["y_tr"], fields=fields, callback=after_epoch)
    res["score_warm_rows_s"] = score_timing(lambda: m.decision_function(Xte), Xte.shape[0])


def worker_cfm_fm(d, s, res, ffm=False):
    import cfm

    Xtr, fields = to_csr(d["ids_tr"], d["vocab"])
    Xte, _ = to_csr(d["ids_te"], d["vocab"])
    res["rss_data_mb"] = rss_mb()
    cls = cfm.FFMClassifier if ffm else cfm.FMClassifier
    m = cls(n_jobs=s["threads"], random_state=s["seed"])
    t = time.perf_counter()
    if ffm:
        m.fit(Xtr, d["y_tr"], fields=fields)
    else:
        m.fit(Xtr, d["y_tr"])
    fit = time.perf_counter() - t
    n_ep = int(getattr(m, "n_epochs_", 0) or 0)
    res["fit_total_s"] = fit
    res["n_epochs_run"] = n_ep
    res["epoch_s"].append(fit / max(n_ep, 1))
    t = time.perf_counter()
    p = m.predict_proba(Xte)[:, 1]
    res["score_cold_rows_s"] = Xte.shape[0] / (time.perf_counter() - t)
    res["auc"].append(auc(d["y_te"], p))
    res["logloss"].append(logloss(d["y_te"], p))
    res["score_warm_rows_s"] = score_timing(lambda: m.decision_function(Xte), Xte.shape[0])


def worker_deepctr(d, s, res):
    import torch

    torch.set_num_threads(s["threads"])
    torch.manual_seed(s["seed"])
    from deepctr_torch.inputs import SparseFeat
    from deepctr_torch.models import DeepFM

    F = d["ids_tr"].shape[1]
    names = [f"f{i}" for i in range(F)]
    cols = [SparseFeat(nm, vocabulary_size=int(v), embedding_dim=s["k"])
            for nm, v in zip(names, d["vocab"])]
    xtr = {nm: d["ids_tr"][:, i] for i, nm in enumerate(names)}
    xte = {nm: d["ids_te"][:, i] for i, nm in enumerate(names)}
    ytr = d["y_tr"].astype(np.float32)
    res["rss_data_mb"] = rss_mb()
    model = DeepFM(cols, cols, dnn_hidden_units=tuple(s["hidden"]), l2_reg_linear=0.0,
                   l2_reg_embedding=0.0, l2_reg_dnn=0.0, dnn_dropout=0.0, task="binary",
                   device="cpu", seed=s["seed"])
    model.compile(torch.optim.Adam(model.parameters(), lr=s["lr"]), "binary_crossentropy")
    nte = d["ids_te"].shape[0]
    for e in range(s["epochs"]):
        t, c = time.perf_counter(), time.process_time()
        model.fit(xtr, ytr, batch_size=s["batch"], epochs=1, verbose=0, shuffle=True)
        res["epoch_s"].append(time.perf_counter() - t)
        res["epoch_cpu_s"].append(time.process_time() - c)
        t = time.perf_counter()
        p = model.predict(xte, batch_size=s["score_batch"]).ravel()
        if e == 0:
            res["score_cold_rows_s"] = nte / (time.perf_counter() - t)
        res["auc"].append(auc(d["y_te"], p))
        res["logloss"].append(logloss(d["y_te"], p))
    res["score_warm_rows_s"] = score_timing(
        lambda: model.predict(xte, batch_size=s["score_batch"]), nte)


def worker_torchfm(d, s, res):
    import torch

    torch.set_num_threads(s["threads"])
    torch.manual_seed(s["seed"])
    from torch.utils.data import DataLoader, TensorDataset
    from torchfm.model.dfm import DeepFactorizationMachineModel

    xtr = torch.from_numpy(d["ids_tr"].astype(np.int64))
    ytr = torch.from_numpy(d["y_tr"].astype(np.float32))
    xte = torch.from_numpy(d["ids_te"].astype(np.int64))
    res["rss_data_mb"] = rss_mb()
    model = DeepFactorizationMachineModel([int(v) for v in d["vocab"]], embed_dim=s["k"],
                                          mlp_dims=tuple(s["hidden"]), dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=s["lr"])
    crit = torch.nn.BCELoss()
    loader = DataLoader(TensorDataset(xtr, ytr), batch_size=s["batch"], shuffle=True)

    def predict():
        model.eval()
        out = []
        with torch.no_grad():
            for i in range(0, xte.shape[0], s["score_batch"]):
                out.append(model(xte[i:i + s["score_batch"]]))
        return torch.cat(out).numpy()

    for e in range(s["epochs"]):
        t, c = time.perf_counter(), time.process_time()
        model.train()
        for xb, yb in loader:
            opt.zero_grad()
            loss = crit(model(xb), yb)
            loss.backward()
            opt.step()
        res["epoch_s"].append(time.perf_counter() - t)
        res["epoch_cpu_s"].append(time.process_time() - c)
        t = time.perf_counter()
        p = predict()
        if e == 0:
            res["score_cold_rows_s"] = xte.shape[0] / (time.perf_counter() - t)
        res["auc"].append(auc(d["y_te"], p))
        res["logloss"].append(logloss(d["y_te"], p))
    res["score_warm_rows_s"] = score_timing(predict, xte.shape[0])


def worker_floor(d, s, res):
    """The dense layers' GEMMs alone for one epoch (NumPy, same threads)."""
    from threadpoolctl import threadpool_limits

    n, F = d["ids_tr"].shape
    dims = [F * s["k"], *s["hidden"]]
    rng = np.random.default_rng(0)
    Ws = [rng.standard_normal((a, b)).astype(np.float32) for a, b in zip(dims[:-1], dims[1:])]
    B = s["batch"]
    H0 = rng.standard_normal((B, dims[0])).astype(np.float32)

    def batch(H0):
        H = [H0]
        for W in Ws:
            H.append(H[-1] @ W)
        dZ = H[-1]
        for l in range(len(Ws) - 1, -1, -1):
            H[l].T @ dZ                       # dW_l
            dZ = dZ @ Ws[l].T                 # dH_{l-1}

    with threadpool_limits(s["threads"], user_api="blas"):
        batch(H0)
        t, c = time.perf_counter(), time.process_time()
        for b0 in range(0, n, B):
            batch(H0 if b0 + B <= n else H0[:n - b0])
        res["epoch_s"].append(time.perf_counter() - t)
        res["epoch_cpu_s"].append(time.process_time() - c)


WORKERS = {"cfm": worker_cfm, "deepctr": worker_deepctr, "torchfm": worker_torchfm,
           "cfm-fm": worker_cfm_fm, "cfm-ffm": lambda d, s, r: worker_cfm_fm(d, s, r, ffm=True),
           "floor": worker_floor}


def run_worker(lib, data_path, settings):
    res = {"lib": lib, "epoch_s": [], "epoch_cpu_s": [], "auc": [], "logloss": [], "phases": [],
           "rss_start_mb": rss_mb()}
    d = dict(np.load(data_path))
    WORKERS[lib](d, settings, res)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        import threadpoolctl

        res["blas"] = sorted({i.get("architecture", "") or i.get("internal_api", "")
                              for i in threadpoolctl.threadpool_info()
                              if i["user_api"] == "blas"})
    except ImportError:
        pass
    return res


# --------------------------------------------------------------------------
# parent
# --------------------------------------------------------------------------
SETTINGS = {
    "a": dict(k=8, hidden=[256, 128], batch=1024, lr=1e-3),
    "b": dict(k=8, hidden=[256, 128], batch=1024, lr=1e-3),
    "c": dict(k=8, hidden=[256, 128], batch=256, lr=1e-3),
}


def spawn(lib, path, settings, native_blas, timeout):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if native_blas:
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", lib, "--data", str(path),
           "--settings", json.dumps(settings)]
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        return {"lib": lib, "error": (p.stderr or p.stdout)[-2000:]}
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["process_s"] = time.perf_counter() - t
    return out


def med(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def mean(xs):
    xs = [x for x in xs if x == x]
    return sum(xs) / len(xs) if xs else float("nan")


def fmt_rate(x):
    return f"{x:,.0f}" if x == x else "n/a"


def render(results, notes, args, header):
    L = ["# DeepFM benchmark: cfm vs DeepCTR-Torch vs pytorch-fm", ""]
    L += [f"- {h}" for h in header]
    L += ["", "Data:"] + [f"- {n}" for n in notes] + [""]
    L += ["Command: `python benchmarks/bench_deepfm.py " + " ".join(args.argv) + "`", ""]
    for key in ("a", "b"):
        if key not in results:
            continue
        rows = results[key]
        s = SETTINGS[key]
        L += [f"## ({key}) " + ("Criteo-shaped synthetic, 200k rows, 1.95M ids" if key == "a"
                                else "small vocabulary, 200k rows, 10 fields"),
              "", f"k={s['k']}, MLP {'-'.join(map(str, s['hidden']))}, batch {s['batch']}, "
              f"Adam lr {s['lr']}, {args.epochs} epochs, {args.threads} threads.", "",
              "| library | epoch (s), median | first epoch (s) | epoch CPU (s) | scoring rows/s "
              "cold | warm | peak RSS (MB) | RSS growth (MB) | test AUC per epoch | "
              "test logloss (last) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
        for r in rows:
            if r["lib"] == "floor":
                continue
            if "error" in r:
                L.append(f"| {r['lib']} | error: {r['error'].splitlines()[-1][:120]} ||||||||")
                continue
            ep = r["epoch_s"]
            note = ""
            if r["lib"] in ("cfm-fm", "cfm-ffm"):
                note = f" ({r.get('n_epochs_run')} epochs, {r['fit_total_s']:.1f}s fit, defaults)"
            L.append(f"| {r['lib']}{note} | {med(ep):.2f} | {ep[0]:.2f} | "
                     f"{med(r.get('epoch_cpu_s') or [float('nan')]):.2f} | "
                     f"{fmt_rate(r.get('score_cold_rows_s', float('nan')))} | "
                     f"{fmt_rate(r.get('score_warm_rows_s', float('nan')))} | "
                     f"{r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] - r['rss_data_mb']:.0f} | "
                     f"{' '.join(f'{a:.4f}' for a in r['auc'])} | {r['logloss'][-1]:.4f} |")
        by = {r["lib"]: r for r in rows if "error" not in r}
        L.append("")
        if "cfm" in by:
            c = by["cfm"]
            torch_libs = [lib for lib in ("deepctr", "torchfm") if lib in by]
            for lib in torch_libs:
                t = by[lib]
                L.append(f"- cfm vs {lib}: epoch {med(t['epoch_s']) / med(c['epoch_s']):.1f}x "
                         f"faster (CPU time: "
                         f"{med(t['epoch_cpu_s']) / med(c['epoch_cpu_s']):.1f}x), scoring {c['score_warm_rows_s'] / t['score_warm_rows_s']:.1f}x "
                         f"(warm) / {c['score_cold_rows_s'] / t['score_cold_rows_s']:.1f}x (cold), "
                         f"AUC after the last epoch {c['auc'][-1]:.4f} vs {t['auc'][-1]:.4f}")
            if torch_libs:
                fast = min(torch_libs, key=lambda lib: med(by[lib]["epoch_s"]))
                L.append(f"- faster torch library per epoch: {fast}; cfm is "
                         f"{med(by[fast]['epoch_s']) / med(c['epoch_s']):.1f}x faster")
            if "floor" in by:
                fl = by["floor"]["epoch_s"][0]
                L.append(f"- floor (the dense layers' GEMMs alone, NumPy, {args.threads} threads): "
                         f"{fl:.2f} s per epoch; cfm's epoch = {med(c['epoch_s']) / fl:.2f}x the "
                         f"floor")
            ph = [p for p in c.get("phases", []) if p]
            if ph:
                L.append("- cfm epoch phases (s, median over epochs): " + ", ".join(
                    f"{k} {med([p[k] for p in ph]):.2f}" for k in ph[0]))
        L.append("")
    if "c" in results:
        R = getattr(args, "repeats", 1)
        L += [f"## (c) real CTR data ({f'{R} x ' if R > 1 else ''}5-fold CV, mean over folds)",
              "",
              f"k={SETTINGS['c']['k']}, MLP {'-'.join(map(str, SETTINGS['c']['hidden']))}, batch "
              f"{SETTINGS['c']['batch']}, Adam lr {SETTINGS['c']['lr']}, {args.epochs_c} epochs, "
              f"{args.threads} threads.  AUC after epoch 1 .. {args.epochs_c} (mean over folds)."
              + (f" Last-epoch AUC: mean over the {R} partitions ± its standard error "
                 "(the spread of the partition means / sqrt(R)); partition r trains every "
                 "library with model seed seed + r." if R > 1 else ""), "",
              "| data | library | test AUC per epoch | logloss (last) | epoch (s) |"
              + (" last AUC, mean ± SE over partitions |" if R > 1 else ""),
              "|---|---|---|---:|---:|" + ("---:|" if R > 1 else "")]
        for name, per_lib in results["c"].items():
            for lib, folds in per_lib.items():
                ok = [f for f in folds if "error" not in f]
                if not ok:
                    L.append(f"| {name} | {lib} | error: "
                             f"{folds[0]['error'].splitlines()[-1][:100]} | | |")
                    continue
                n_ep = max(len(f["auc"]) for f in ok)
                aucs = [mean([f["auc"][e] for f in ok if len(f["auc"]) > e]) for e in range(n_ep)]
                note = f" ({ok[0].get('n_epochs_run')} epochs, defaults)" if lib.startswith("cfm-") else ""
                line = (f"| {name} | {lib}{note} | {' '.join(f'{a:.4f}' for a in aucs)} | "
                        f"{mean([f['logloss'][-1] for f in ok]):.4f} | "
                        f"{med([med(f['epoch_s']) for f in ok]):.3f} |")
                if R > 1:
                    parts = [mean([f["auc"][-1] for f in ok if f.get("repeat", 0) == r])
                             for r in sorted({f.get("repeat", 0) for f in ok})]
                    se = float(np.std(parts, ddof=1) / np.sqrt(len(parts))) if len(parts) > 1 \
                        else float("nan")
                    line += f" {mean(parts):.4f} ± {se:.4f} |"
                L.append(line)
        L.append("")
    return "\n".join(L) + "\n"


def machine_header(args):
    import numpy
    import scipy

    vers = [f"numpy {numpy.__version__}", f"scipy {scipy.__version__}"]
    for mod in ("torch", "deepctr_torch", "torchfm"):
        try:
            from importlib.metadata import version

            vers.append(f"{mod} {version(mod.replace('_', '-'))}")
        except Exception:  # noqa: BLE001 - optional
            pass
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return [f"CPU: {cpu}; {os.cpu_count()} logical CPUs; Python {platform.python_version()}",
            "Versions: " + ", ".join(vers),
            f"Threads for every library: {args.threads}; BLAS in the subprocesses: "
            + ("native kernels (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset)" if args.native_blas
               else "environment as is (OPENBLAS_CORETYPE="
               + os.environ.get("OPENBLAS_CORETYPE", "unset") + ")")]


def main(argv=None):
    global DATA
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="a,b,c", help="data sets: a, b, c (comma-separated)")
    ap.add_argument("--libs", default=",".join(LIBS), help="libraries (comma-separated)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs on (a) and (b)")
    ap.add_argument("--epochs-c", type=int, default=10, help="epochs on the real data (c)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--score-batch", type=int, default=8192, help="torch libraries' scoring batch")
    ap.add_argument("--cfm-init-std", type=float, default=0.01)
    ap.add_argument("--repeats", type=int, default=1,
                    help="(c): stratified 5-fold partitions per data set (repeated CV; "
                         "partition r uses model seed --seed + r)")
    ap.add_argument("--c-sets", default="", help=f"(c): data sets (default {','.join(C_SETS)})")
    ap.add_argument("--native-blas", action="store_true")
    ap.add_argument("--data-dir", default=None, help=f"real data (default {DATA})")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--out", default=None, help="markdown file (default: print)")
    ap.add_argument("--json", default=None, help="also write raw results as JSON")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--settings", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.data, json.loads(args.settings))))
        return 0
    if args.data_dir:
        DATA = Path(args.data_dir)

    only = [x for x in args.only.split(",") if x]
    libs = [x for x in args.libs.split(",") if x]
    header = machine_header(args)
    header.append("Load average at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    results, notes = {}, []
    with tempfile.TemporaryDirectory(prefix="cfm-bench-deepfm-") as tmp:
        for key in only:
            if key in ("a", "b"):
                paths, note = (data_a if key == "a" else data_b)(tmp)
                notes.append(note)
                s = dict(SETTINGS[key], epochs=args.epochs, threads=args.threads, seed=args.seed,
                         score_batch=args.score_batch, cfm_init_std=args.cfm_init_std)
                rows = []
                for lib in libs + (["floor"] if key == "b" else []):
                    load = os.getloadavg()[0]
                    r = spawn(lib, paths[0], s, args.native_blas, args.timeout)
                    r["load_before"] = load
                    print(f"[{key}] {lib}: " + (r.get("error", "").splitlines()[-1:] and
                                                 r["error"].splitlines()[-1] if "error" in r else
                                                 f"epochs {[round(x, 2) for x in r['epoch_s']]} "
                                                 f"auc {[round(x, 4) for x in r['auc']]}"),
                          file=sys.stderr, flush=True)
                    rows.append(r)
                results[key] = rows
            elif key == "c":
                if not DATA.is_dir():
                    notes.append(f"c: skipped, {DATA} not found")
                    continue
                names = [n for n in (args.c_sets.split(",") if args.c_sets else C_SETS) if n]
                paths, note = data_c(tmp, repeats=args.repeats, names=names)
                notes.append(note)
                s = dict(SETTINGS["c"], epochs=args.epochs_c, threads=args.threads,
                         seed=args.seed, score_batch=args.score_batch,
                         cfm_init_std=args.cfm_init_std)
                results["c"] = {}
                for name in names:
                    per = {}
                    for lib in libs:
                        # partition r trains every library with model seed seed + r
                        folds = [dict(spawn(lib, p, dict(s, seed=args.seed + _repeat_of(p)),
                                            args.native_blas, args.timeout),
                                      repeat=_repeat_of(p))
                                 for p in paths if p.name.startswith(f"c_{name}_")]
                        per[lib] = folds
                        ok = [f for f in folds if "error" not in f]
                        print(f"[c/{name}] {lib}: mean AUC "
                              f"{mean([f['auc'][-1] for f in ok]) if ok else 'error'}",
                              file=sys.stderr, flush=True)
                    results["c"][name] = per
    header.append("Load average at end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    text = render(results, notes, args, header)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "notes": notes,
                                               "results": results}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
