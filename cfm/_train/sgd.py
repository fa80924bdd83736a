"""Per-sample solvers (sgd, adagrad, ftrl): in memory, partial_fit, streams.

The kernels do the work (one call per epoch, or per block of a stream, with
Hogwild updates across threads); this module orders the rows and feeds the
blocks.  Inputs are explicit: a model state, validated data, a Hyper, the
row-order generator and thread budget.  Nothing here knows an estimator.
"""
from dataclasses import replace

import numpy as np

from .loop import run_epochs

# Training uses at most one thread per this many rows (see train_threads).
MIN_ROWS_PER_THREAD = 10_000


def train_threads(n_threads, n_rows, min_rows=MIN_ROWS_PER_THREAD):
    """Hogwild gains nothing on small data (thread start-up and conflicts on
    shared parameters dominate): at most one training thread per
    MIN_ROWS_PER_THREAD rows, so small fits are also deterministic.  A state
    whose epoch is deterministic for any thread count and costs more per row
    (DeepFM's mini-batches) sets its own ``rows_per_thread``."""
    return max(1, min(n_threads, n_rows // min_rows))


def block_epoch(state, Xc, y, sw, hyper, rng, shuffle, n_threads, rows=None):
    """One pass over an in-memory block, rows in a fresh random order.

    ``rows``: visit only these rows (sorted int64 ids; the kernels take a row
    order, so a subset needs no copy of X), in an order drawn as for a block
    of ``len(rows)`` rows; None: every row."""
    if rows is None:
        n = Xc.n_rows
        order = (rng.permutation(n) if shuffle else np.arange(n)).astype(np.int64)
    else:
        n = len(rows)
        order = rows[rng.permutation(n)] if shuffle else rows
    sw_arr = sw if sw is not None else np.empty(0)
    nt = train_threads(n_threads, n, getattr(state, "rows_per_thread", MIN_ROWS_PER_THREAD))
    return state.train_epoch(Xc, y, sw_arr, order, hyper, nt, rng)


def _with_lr(hyper, lr):
    return hyper if lr == hyper.learning_rate else replace(hyper, learning_rate=lr)


def fit_arrays(state, Xc, y, sw, evals, *, hyper, rng, shuffle, n_epochs, config,
               early_stopping=True):
    """``n_epochs`` epochs over in-memory rows (fit, warm start, partial_fit)."""
    def epoch(lr):
        return block_epoch(state, Xc, y, sw, _with_lr(hyper, lr), rng, shuffle,
                           config.n_threads)

    return run_epochs(epoch, state=state, n_epochs=n_epochs, evals=evals, config=config,
                      lr=hyper.learning_rate, early_stopping=early_stopping)


def fit_stream(blocks, prepare, get_state, evals, *, hyper, rng, shuffle, n_epochs, config):
    """Epochs over a re-readable stream of blocks (a data file or chunks).

    ``blocks()`` yields (X, y, fields) blocks afresh for every epoch;
    ``prepare(X, y, fields, row0) -> (Xc, y_enc)`` validates a block (and
    builds the state on the very first block of a fresh fit); ``get_state()``
    is the current state and ``rng()`` the row-order generator (both exist
    once the first block is prepared).  ``prepare`` may return a third item,
    the block's per-sample weights (class weights of a classifier).  ``evals`` may be filled by
    ``prepare``."""
    def epoch(lr):
        h = _with_lr(hyper, lr)
        loss_sum = w_sum = 0.0
        n_bad = n_blocks = row0 = 0
        for Xb, yb, fb in blocks():
            out = prepare(Xb, yb, fb, row0)
            Xc, y_enc = out[0], out[1]
            row0 += Xc.n_rows
            ls, ws, nb = block_epoch(get_state(), Xc, y_enc, out[2] if len(out) > 2 else None,
                                     h, rng(), shuffle, config.n_threads)
            loss_sum, w_sum, n_bad, n_blocks = loss_sum + ls, w_sum + ws, n_bad + nb, \
                n_blocks + 1
        if n_blocks == 0:
            raise ValueError("the training data stream is empty (a one-shot iterator "
                             "can only be used for one epoch: pass a list or a function "
                             "returning a fresh iterator)")
        return loss_sum, w_sum, n_bad

    return run_epochs(epoch, state=None, state_fn=get_state, n_epochs=n_epochs, evals=evals,
                      config=config, lr=hyper.learning_rate)
