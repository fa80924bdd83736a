"""A/B of the DeepFM kernels: another build's ``_deepfm`` extension (e.g. the
OpenMP-prange kernels of main @1b24122) against this checkout's (cfm's worker
pool), in one process, alternating, on the same Criteo-shaped data (39 one-hot
fields x 1,000 ids, k=8, MLP 256-128, batch 1024, Adam).

    python benchmarks/studies/deepfm_pool_ab.py OLD_DEEPFM_SO [ROWS [ROUNDS]]
    # e.g. OLD_DEEPFM_SO = /work/main/cfm/_deepfm.cpython-311-x86_64-linux-gnu.so

Prints median epoch time, one 40k-row scoring call, 20 scoring calls of 2,000
rows, for 1 and 2 threads, and whether every run left bit-identical tables.
Measured on the shared 2-core machine (issue 14; load average 4.6-4.8 from
other work, so these are "under load" figures):

    load 4.81: openmp 1 thread: epoch 0.879 s, predict 40k 0.233 s, 20x2000 0.210 s
               pool   1 thread: epoch 0.829 s, predict 40k 0.220 s, 20x2000 0.241 s
               openmp 2 threads: epoch 2.183 s, predict 40k 0.209 s, 20x2000 0.479 s
               pool   2 threads: epoch 0.946 s, predict 40k 0.227 s, 20x2000 0.238 s
    load 4.61: openmp 2 threads: epoch 0.330 s, 20x2000 0.100 s; pool 0.298 s, 0.055 s
"""
import importlib.util, sys, time, os
import numpy as np, scipy.sparse as sp
from threadpoolctl import threadpool_limits
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import cfm
from cfm import _deepfm as new
from cfm._state.deepfm import DeepFMState
spec = importlib.util.spec_from_file_location("oldpkg._deepfm", sys.argv[1])
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
rng = np.random.default_rng(0)
n, F, ids = int(sys.argv[2]) if len(sys.argv) > 2 else 40000, 39, 1000
cols = (np.arange(F) * ids)[None, :] + rng.integers(0, ids, (n, F))
X = sp.csr_matrix((np.ones(n * F, np.float32), cols.ravel(), np.arange(0, n * F + 1, F)), shape=(n, F * ids))
fields = np.repeat(np.arange(F), ids)
y = rng.choice([-1.0, 1.0], n)
order = rng.permutation(n).astype(np.int64)
def epoch(mod, nt):
    st = DeepFMState(X.shape[1], fields, 8, (256, 128), seed=1)
    t = time.perf_counter()
    mod.deepfm_train_epoch(data=X.data, indices=X.indices, indptr=X.indptr.astype(np.int64), y=y,
        sample_weight=np.zeros(0), order=order, table=st.table, mlp=st.mlp, mlp_state=st.mlp_state,
        bias_state=st.bias, counters=st.counters, layer_sizes=st.layer_sizes, n_factors=8,
        loss=new.LOGISTIC, optimizer=new.ADAM, batch_size=1024, n_threads=nt)
    te = time.perf_counter() - t
    out = np.empty(n)
    t = time.perf_counter()
    kw = dict(data=X.data, indices=X.indices, indptr=X.indptr.astype(np.int64), table=st.table, mlp=st.mlp,
              layer_sizes=st.layer_sizes, w0=0.0, n_factors=8, normalize=False, out=out, n_threads=nt)
    mod.deepfm_predict(**kw)
    tp = time.perf_counter() - t
    # many small calls (2000 rows)
    small = dict(kw); Xs = X[:2000]
    small.update(data=Xs.data, indices=Xs.indices, indptr=Xs.indptr.astype(np.int64), out=np.empty(2000))
    t = time.perf_counter()
    for _ in range(20):
        mod.deepfm_predict(**small)
    ts = time.perf_counter() - t
    return te, tp, ts, st.table.copy()
res = {}
with threadpool_limits(1, user_api="blas"):
    for r in range(int(sys.argv[3]) if len(sys.argv) > 3 else 3):
        for nt in (1, 2):
            for name, mod in (("openmp", old), ("pool", new)) if r % 2 == 0 else (("pool", new), ("openmp", old)):
                te, tp, ts, tab = epoch(mod, nt)
                res.setdefault((name, nt), []).append((te, tp, ts))
                res.setdefault(("tab", nt), []).append(tab)
print("load", os.getloadavg(), "rows", n)
for nt in (1, 2):
    for name in ("openmp", "pool"):
        a = np.array(res[(name, nt)])
        print(f"{name:7s} n_threads={nt}: epoch median {np.median(a[:,0]):.3f}s  predict {n} rows {np.median(a[:,1]):.3f}s  20x predict 2000 rows {np.median(a[:,2]):.3f}s")
    tabs = res[("tab", nt)]
    print("  tables identical across kernels/runs:", all(np.array_equal(tabs[0], t) for t in tabs))
