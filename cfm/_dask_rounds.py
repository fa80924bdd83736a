"""The training rounds of cfm.dask's estimators (client side).

Each round: send every worker the model rows it lacks (cfm._train.mix.ResidentRows),
run the workers' local passes (cfm._dask_tasks.run_round), merge their updates
(cfm._train.mix.merge); an epoch is a sequence of rounds over the shards' slices
(one slice a round, or groups growing with the epoch: DaskMixin._slices_per_round).
A round whose worker died is retried.  Imported by cfm.dask only (needs
distributed).
"""
import os
import time
from dataclasses import replace

import distributed
import numpy as np

from . import _dask_tasks as tasks
from ._train import mix
from ._train.loop import run_epochs

# Attempts of a training round before its error is raised, and the errors
# that make a round be retried (a worker lost while it ran).
ROUND_ATTEMPTS = 3
# Models and updates travel straight between the client and the workers (not
# through the scheduler) in a round's first attempt.
DIRECT = True
_RETRIED = (distributed.client.FutureCancelledError, distributed.scheduler.KilledWorker,
            distributed.comm.CommClosedError, OSError, TimeoutError, tasks.StaleShard)


class RoundsMixin:
    """The fit's rounds, for cfm.dask's estimator mixin."""

    def _round_updates(self, client, shards, groups, sync, state, hyper, seeds, shuffle, n_jobs,
                       parts, where):
        """Send each worker the model rows it lacks, run a round's local
        passes, return (Updates, bytes sent, scatter time, wait time).

        Each worker keeps its shard's model rows between rounds and is sent
        only those of its slices ``parts`` (touching ``groups[k]`` = (rows,
        positions in held, counts)) that changed since (``sync``, a
        mix.ResidentRows), directly to the worker that holds the shard.
        A round whose worker died is retried from the same model and seeds,
        every worker being sent all its rows (Dask rebuilds the lost shards
        from their sources): the result is the same as without the failure.
        After ROUND_ATTEMPTS failures the error is raised."""
        last = None
        for attempt in range(ROUND_ATTEMPTS):
            # first straight between the client and the workers; a retry goes
            # through the scheduler (which knows which workers are alive)
            direct = attempt == 0 and DIRECT
            t0 = time.perf_counter()
            msgs, futs = [], []
            sent = 0
            try:
                if attempt or not where:
                    where.clear()
                    where.update(client.who_has(shards))
                for k, (s, (rows, pos, _)) in enumerate(zip(shards, groups)):
                    at = list(where.get(s.key, ()))
                    full, idx, tabs = sync.message(k, state, rows, pos)
                    msg = tasks.RowsMsg(full, idx, tabs, state.w0_state.copy(),
                                        None if full is not None else (sync.nonce, sync.round),
                                        (sync.nonce, sync.round + 1))
                    sent += msg.nbytes
                    msgs.append(client.scatter(msg, hash=False, workers=at[:1] or None,
                                               direct=direct))
                t1 = time.perf_counter()
                futs = [client.submit(tasks.run_round, s, m, hyper, int(seeds[i]), shuffle,
                                      n_jobs, parts, pure=False)
                        for i, (s, m) in enumerate(zip(shards, msgs))]
                updates = client.gather(futs, direct=direct)
                for u, (rows, _, counts) in zip(updates, groups):
                    u.rows, u.counts = rows, counts
                return updates, sent, t1 - t0, time.perf_counter() - t1
            except _RETRIED as exc:
                last = exc
                sync.reset()
            finally:
                for f in futs + msgs:
                    f.release()
        raise RuntimeError(f"{type(self).__name__}: a training round failed "
                           f"{ROUND_ATTEMPTS} times; last error: {last!r}") from last

    def _run_rounds(self, client, shards, summ, state, evals, callback):
        hyper = self._hyper()
        config = self._loop_config(callback)
        n_jobs, shuffle = self.n_jobs, bool(self.shuffle)
        sync = mix.ResidentRows(state.n_features, [sm["held"] for sm in summ])
        sync.nonce = os.urandom(8)  # names this fit's rounds on the shards (no seed drawn)
        where = {}

        n_parts = len(summ[0]["rows"])
        keys = ("round_s", "scatter_s", "compute_s", "transfer_s", "merge_s",
                "bytes_to_workers", "bytes_from_workers")

        epochs_run = [0]

        def group(k, parts):
            """(rows, positions in held, counts) of worker k's slices ``parts``."""
            sm = summ[k]
            if len(parts) == 1:
                p = parts[0]
                return sm["rows"][p], sm["pos"][p], sm["counts"][p]
            pos, counts = mix.group_positions([sm["pos"][p] for p in parts],
                                              [sm["counts"][p] for p in parts],
                                              len(sm["held"]))
            return sm["held"][pos], pos, counts

        def one_epoch(lr):
            """An epoch: its rounds (each: send, local passes, merge)."""
            h = hyper if lr == hyper.learning_rate else replace(hyper, learning_rate=lr)
            seeds = np.random.SeedSequence(int(self._rng.integers(2**63))).generate_state(
                len(shards) * n_parts, np.uint64).reshape(n_parts, len(shards))
            order = self._rng.permutation(n_parts) if shuffle else np.arange(n_parts)
            g = self._slices_per_round(n_parts, epochs_run[0])
            epochs_run[0] += 1
            rounds = [tuple(int(p) for p in order[a:a + g]) for a in range(0, n_parts, g)]
            loss = wsum = 0.0
            n_bad = 0
            tot = dict.fromkeys(keys, 0.0)
            for i, parts in enumerate(rounds):
                t0 = time.perf_counter()
                groups = [group(k, parts) for k in range(len(shards))]
                updates, bytes_out, scatter_s, wait_s = self._round_updates(
                    client, shards, groups, sync, state, h, seeds[i], shuffle, n_jobs, parts,
                    where)
                t2 = time.perf_counter()
                shared = mix.merge(state, updates, h, self.mixing)
                sync.merged([gr[0] for gr in groups], [gr[1] for gr in groups], shared)
                t3 = time.perf_counter()
                compute = max(u.seconds for u in updates)
                # scatter: the client sends the model rows; compute: the slowest
                # worker's passes (and copying its rows in and out); transfer: the
                # rest of the wait (fetching, (de)serialising, returning updates,
                # scheduling); merge: on the client (with the bookkeeping)
                for k, v in (("round_s", t3 - t0), ("scatter_s", scatter_s),
                             ("compute_s", compute), ("transfer_s", max(0.0, wait_s - compute)),
                             ("merge_s", t3 - t2), ("bytes_to_workers", bytes_out),
                             ("bytes_from_workers",
                              sum(sum(t.nbytes for t in u.tables) + u.w0_state.nbytes
                                  for u in updates))):
                    tot[k] += v
                loss += sum(u.loss_sum for u in updates)
                wsum += sum(u.weight_sum for u in updates)
                n_bad += sum(u.n_bad for u in updates)
                if n_bad:
                    break
            # per round (means over the epoch's rounds)
            stats = {k: (int(v / len(rounds)) if k.startswith("bytes") else v / len(rounds))
                     for k, v in tot.items()}
            stats["rounds"] = len(rounds)
            return loss, wsum, n_bad, stats

        res = run_epochs(one_epoch, state=state, n_epochs=self._n_epochs(), evals=evals,
                         config=config, lr=hyper.learning_rate)
        self.best_epoch_ = res.best_epoch
