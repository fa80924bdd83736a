"""The one training loop: epochs, evaluation, early stopping, history, progress.

Every solver (per-sample sgd / adagrad / ftrl, in memory or streamed; als;
mcmc) runs its epochs through :func:`run_epochs`.  A solver supplies
``epoch_fn(lr) -> (loss_sum, weight_sum, n_bad)`` (or a 4-tuple whose last
item is a dict of extra history entries, e.g. MCMC's ``alpha``), and the
loop owns everything around it.  Snapshot / restore of the state make
early stopping restore the best epoch; running ``k`` more epochs of a state
is one more call (issue 13 races learning rates on top of it).
"""
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .._metrics import METRICS
from ..exceptions import DivergenceError


@dataclass
class LoopConfig:
    """What the loop needs besides the epoch function and the state.

    ``history`` is the list appended to (the estimator's ``history_``), or
    a function returning it; ``on_epoch()`` is called as soon as an epoch
    passed the divergence check (the estimator counts ``n_epochs_``);
    ``callback(record, n_epochs)`` after each epoch with the record just
    appended (progress); ``verbose`` prints the early-stopping line; ``name``
    names the model in errors."""

    name: str
    metric: str
    n_threads: int
    history: list = field(default_factory=list)
    tol: float = 1e-4
    n_iter_no_change: int = 3
    on_epoch: object = None
    callback: object = None
    verbose: int = 0


@dataclass
class LoopResult:
    n_epochs: int              # epochs run by this call
    best_epoch: int            # best epoch (history numbering), or the last


def _diverged(name, lr, epoch=None):
    at = f" at epoch {epoch} (non-finite parameters or predictions)" if epoch is not None \
        else " (non-finite parameters)"
    return DivergenceError(
        f"{name}: training diverged{at}. Try a smaller learning_rate (currently {lr:g}), "
        "stronger regularisation, or normalize=True.")


def run_epochs(epoch_fn, *, state, n_epochs, evals, config, lr, early_stopping=True,
               score=None, state_fn=None):
    """Run up to ``n_epochs`` epochs; return a LoopResult.

    ``evals``: [(X_val (validated), y_val encoded for the metric)]; the first
    drives early stopping (``config.n_iter_no_change`` epochs without an
    improvement of more than ``config.tol``; the best epoch's parameters are
    restored).  ``score(i, Xv, n_threads)``: raw scores of eval set i
    (default: the state's decision).  ``state_fn()``: the current state when
    the epoch function may replace it (streaming builds it on the first
    block); else ``state``.  Raises DivergenceError when an epoch reports
    non-finite predictions or leaves non-finite parameters.
    """
    current = state_fn if state_fn is not None else (lambda: state)
    n_threads = config.n_threads
    history_of = config.history if callable(config.history) else (lambda: config.history)
    metric_fn, greater_better = METRICS[config.metric]
    if score is None:
        def score(i, Xv, nt):
            return current().decision(Xv, nt)
    best_score, best_epoch, best_snap, since_best = None, None, None, 0
    done = 0
    for _ in range(n_epochs):
        t0 = time.perf_counter()
        out = epoch_fn(lr)
        loss_sum, w_sum, n_bad = out[:3]
        st = current()
        history = history_of()
        epoch = len(history) + 1
        # A non-finite parameter makes later predictions non-finite, which
        # the kernel counts; the tables are checked after the loop.
        if n_bad or not np.isfinite(st.w0_state).all():
            raise _diverged(config.name, lr, epoch)
        done += 1
        if config.on_epoch is not None:
            config.on_epoch()
        rec = {"epoch": epoch, "train_loss": loss_sum / w_sum if w_sum > 0 else float("nan")}
        if len(out) > 3:
            rec.update(out[3])
        # metrics take raw scores: values for RMSE/MAE, log-odds for logloss/AUC
        for i, (Xv, yv) in enumerate(evals):
            key = f"eval{i}_{config.metric}" if i else f"eval_{config.metric}"
            rec[key] = metric_fn(yv, score(i, Xv, n_threads))
        rec["time"] = time.perf_counter() - t0
        history.append(rec)
        if config.callback is not None:
            config.callback(rec, n_epochs)
        if early_stopping and evals:
            s = rec[f"eval_{config.metric}"]
            improved = best_score is None or (
                s > best_score + config.tol if greater_better else s < best_score - config.tol)
            if improved:
                best_score, best_epoch, since_best = s, epoch, 0
                best_snap = st.snapshot()
            else:
                since_best += 1
                if since_best >= config.n_iter_no_change:
                    if config.verbose:
                        print(f"early stopping: best epoch {best_epoch} "
                              f"({config.metric} {best_score:.6g})", file=sys.stderr)
                    break
    st = current()
    if st is not None and not st.finite(n_threads):
        raise _diverged(config.name, lr)
    n_hist = len(history_of())
    if best_snap is not None and best_epoch != n_hist:
        st.restore(best_snap)
    return LoopResult(done, best_epoch if best_epoch is not None else n_hist)


def print_epoch(rec, n_epochs):
    """The default progress callback (verbose > 0): one line per epoch on stderr."""
    parts = [f"epoch {rec['epoch']:>3d}", f"train_loss {rec['train_loss']:.6f}"]
    parts += [f"{k} {v:.6f}" for k, v in rec.items() if k.startswith("eval")]
    parts.append(f"{rec['time']:.2f}s")
    print("  ".join(parts), file=sys.stderr, flush=True)
