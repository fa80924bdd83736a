"""Training progress of ``cfm train`` on stderr: the estimator's per-epoch
callback (``fit(..., callback=progress.epoch)``)."""
import sys
import time


class Progress:
    """Per-epoch progress on stderr: plain lines, plus a live bar on a terminal.

    ``n_epochs``: the number of epochs shown, or None to show the count that
    the estimator passes to each callback (the epochs it will run).  ``log``:
    a :class:`cfm.cli._options.Log` (nothing is shown when it is quiet).
    """

    def __init__(self, n_epochs, log, tty):
        self.n_epochs, self.log, self.tty = n_epochs, log, tty
        self.t0 = time.perf_counter()
        self._bar_shown = False

    def epoch(self, rec, n_epochs):
        """The callback: ``rec`` is the epoch's history record."""
        total = self.n_epochs if self.n_epochs is not None else n_epochs
        parts = [f"epoch {rec['epoch']:>3d}/{total}", f"train_loss {rec['train_loss']:.6f}"]
        parts += [f"{k} {v:.6f}" for k, v in rec.items() if k.startswith("eval")]
        parts.append(f"{rec['time']:.2f}s")
        self.clear()
        self.log("  ".join(parts))
        if self.tty and not self.log.quiet and rec["epoch"] < total:
            done = rec["epoch"]
            elapsed = time.perf_counter() - self.t0
            eta = elapsed / done * (total - done)
            width = 30
            fill = int(width * done / total)
            sys.stderr.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{total} "
                             f"epochs  {elapsed:.1f}s elapsed, ~{eta:.1f}s left")
            sys.stderr.flush()
            self._bar_shown = True

    def clear(self):
        """Erase the live bar (before other output, and at the end)."""
        if self._bar_shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self._bar_shown = False
