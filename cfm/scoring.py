"""Batch scoring of data files: ``model.predict_file(path, out_path)``.

The file is scored as a pipeline of three stages over blocks of rows, each in
its own thread, connected by bounded queues (so memory holds a few blocks,
whatever the file size, and the output keeps the input order):

1. read + parse: text is read in chunks of whole lines (``chunk_bytes``, the
   next chunk read ahead by a helper thread) and parsed by cfm's compiled
   parser (OpenMP, without the GIL) into CSR blocks; a ``.cfmdata`` cache is
   sliced from its memory map instead;
2. score: the model's compiled kernel (OpenMP, without the GIL), at most
   ``block_rows`` rows at a time;
3. format + write: a compiled formatter (``cfm._format``, without the GIL)
   and the file write.

Input rules (what a user scoring a production file expects):

* Feature ids the model has never seen (>= ``model.n_features_in_``) are
  ignored: they contribute nothing to the score, as a feature with zero
  weight would.  Their count is returned (``ignored_values``).
* FFM models take the field of each feature from the model (``fields_``); the
  field tokens of a libffm file are ignored, so libsvm files score with FFM
  models too.  FM models ignore libffm field tokens.  Except FFM models
  fitted on (or imported from xLearn with) per-entry fields: they take each
  entry's field from the libffm file, as libffm and xLearn do (entries kept as
  written, repeats included; an entry whose field is beyond the model's is
  ignored, like a feature beyond it); other formats are refused for them.
* Within a line, unsorted feature ids are accepted and duplicates summed (as
  ``load_libffm`` does).
* libsvm column ids are read the way the model reads them, recorded in every
  model: as its training file's ids were read when it was fitted on a file,
  zero-based (id j is column j) when it was fitted on arrays or chunks (and
  for model files written before cfm recorded it).  Never guessed per scored
  file: ``zero_based=True`` / ``False`` overrides it, and ``"auto"`` asks for
  scikit-learn's per-file rule explicitly (a first pass over the file).
* A malformed line raises :class:`cfm.DataFormatError` naming file, line and
  token (nothing is left in ``out_path``); NaN / infinite values raise it too,
  and so do NaN / infinite labels when evaluating.

Output: one line per row, numbers as ``'%.{precision}g'`` (default 9
significant digits, which round-trips float32): probabilities of
``classes_[1]`` for binary classifiers (``raw=True``: log-odds), predicted
values for regressors; for multiclass models (more than two classes) the
n_classes probabilities of the row separated by single spaces, in
``classes_`` order (``raw=True``: the per-class scores, softmax logits).
``labels=True``: the predicted class label of each row instead (any
classifier), written as ``str(label)`` (a whole float as an integer: "3",
not "3.0").
"""
import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ._lazy import sparse as sp
from . import _format
from ._fields import EntryFields
from ._files import atomic_output
from ._metrics import METRICS
from ._validation import CSRInput, effective_n_threads
from .data import _source
from .data.blocks import score_blocks
from .data.text import _where_row
from .exceptions import DataFormatError

__all__ = ["Scorer", "predict_file", "read_for_model"]


# --------------------------------------------------------------------------
# What the pipeline needs of a model
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Scorer:
    """What batch scoring needs of a fitted model (the pipeline knows no
    estimator class).

    ``decision(Xc, n_threads)`` returns raw float64 scores of a
    :class:`cfm._validation.CSRInput` block; it is bound to ONE snapshot of
    the model's tables taken when the Scorer was made, so that a refit on
    another thread cannot change the tables under a running scoring job.
    ``zero_based``: how the training input's libsvm ids were read (None:
    unknown, read as zero-based).  ``logistic``: scores are log-odds (the
    sigmoid gives probabilities).  ``encode_y(y)``: labels as the metrics
    take them (None: as they are).  ``n_jobs``: the estimator's own threads
    (never one read from a model file).  ``classes``: a classifier's labels
    (``labels=True`` output); with more than two, ``decision`` returns
    (n_rows, n_classes) scores (a softmax model).
    """
    n_features: int
    zero_based: Optional[bool]
    logistic: bool
    decision: Optional[Callable] = None
    encode_y: Optional[Callable] = None
    n_jobs: Optional[int] = None
    # FFM fitted on per-entry fields: the file's field of each entry is needed
    # (n_fields: the model's, entries with larger ones are ignored)
    entry_fields: bool = False
    n_fields: Optional[int] = None
    classes: Optional[np.ndarray] = None

    @property
    def multiclass(self):
        return self.classes is not None and len(self.classes) > 2

    def describes_same_model(self, other):
        """Same input rules and task (a loaded model against its header)."""
        return (self.n_features, self._zb(), self.logistic, self.entry_fields) == \
            (other.n_features, other._zb(), other.logistic, other.entry_fields)

    def _zb(self):
        return True if self.zero_based is None else bool(self.zero_based)

    @classmethod
    def from_header(cls, header):
        """The Scorer of a model file's header, without ``decision`` (what the
        reader needs before the model is loaded), or None when the header
        does not say."""
        try:
            n = int(header["n_features"])
            # no key: a file written before every model recorded it
            zb = header.get("input_zero_based", True)
            if n < 1:
                return None
            classes = None
            if header["task"] == "multiclass":  # (validated: n_classes labels)
                classes = np.arange(int(header["n_classes"]))
            entry = header.get("entry_fields") is True
            return cls(n, zb if isinstance(zb, bool) else True, header["task"] == "binary",
                       classes=classes, entry_fields=entry,
                       n_fields=int(header["n_fields"]) if entry else None)
        except (KeyError, TypeError, ValueError):
            return None


def _scorer_from_model(model):
    """The Scorer of a fitted estimator (``model._scorer()``: bound to one
    snapshot of its state)."""
    model._check_fitted()
    return model._scorer()


# --------------------------------------------------------------------------
# Pipeline plumbing
# --------------------------------------------------------------------------

class _Prefetch:
    """Run an iterator in a background thread, at most ``depth`` items ahead;
    exceptions are re-raised in the consumer."""

    def __init__(self, make_iter, depth=2, name="cfm-read"):
        self._q = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.busy = 0.0
        self._t = threading.Thread(target=self._run, args=(make_iter,), daemon=True, name=name)
        self._t.start()

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def _run(self, make_iter):
        it = None
        try:
            it = iter(make_iter())
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    break
                self.busy += time.perf_counter() - t0
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(("error", exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001
                    pass

    def __iter__(self):
        while True:
            kind, item = self._q.get()
            if kind == "item":
                yield item
            elif kind == "end":
                return
            else:
                raise item

    def close(self):
        self._stop.set()
        self._t.join()


def _label_text(c):
    """A class label as written by labels=True: str(label), whole floats (the
    labels of a libsvm file) without their ".0"."""
    v = c.item() if isinstance(c, np.generic) else c
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v)


def format_block(s, precision, sigmoid, n_threads):
    """Text of a block of scores, one row a line: (n,) scores (``sigmoid``:
    as probabilities), or (n, C) multiclass scores as C numbers separated
    by spaces (``sigmoid``: the row-wise softmax)."""
    if s.ndim == 1:
        return _format.format_scores(s, precision, sigmoid, n_threads)
    if sigmoid:  # probabilities: row-wise softmax
        e = np.exp(s - s.max(axis=1, keepdims=True))
        s = e / e.sum(axis=1, keepdims=True)
    out = _format.format_scores(np.ascontiguousarray(s).ravel(), precision, False, n_threads)
    buf = np.frombuffer(out, dtype=np.uint8).copy()
    nl = np.flatnonzero(buf == 10)
    buf[nl[(np.arange(len(nl)) + 1) % s.shape[1] != 0]] = 32  # "\n" -> " " within a row
    return buf.tobytes()


class _Writer:
    """Format and write score blocks in a background thread, in order."""

    def __init__(self, fh, precision, sigmoid, n_threads, depth=2, labels=None):
        self._fh, self._precision, self._sigmoid, self._nt = fh, precision, sigmoid, n_threads
        # labels=True output: each class's label as bytes, indexed by class
        self._labels = None if labels is None else np.array(
            [_label_text(c).encode("utf-8") for c in labels], dtype=object)
        self._q = queue.Queue(maxsize=depth)
        self.error = None
        self.busy = 0.0
        self._t = threading.Thread(target=self._run, daemon=True, name="cfm-write")
        self._t.start()

    def _run(self):
        while True:
            item = self._q.get()
            if item is None:
                return
            if self.error is not None:
                continue  # drain after a failure
            try:
                t0 = time.perf_counter()
                self._fh.write(self._format(item))
                self.busy += time.perf_counter() - t0
            except BaseException as exc:  # noqa: BLE001 - re-raised by the producer
                self.error = exc

    def _format(self, s):
        if self._labels is not None:  # predicted labels, one per line
            idx = s.argmax(axis=1) if s.ndim == 2 else (s > 0).astype(np.intp)
            return b"".join(self._labels[idx] + b"\n") if len(idx) else b""
        return format_block(s, self._precision, self._sigmoid, self._nt)

    def put(self, scores):
        if self.error is not None:
            raise self.error
        while True:
            try:
                self._q.put(scores, timeout=0.05)
                return
            except queue.Full:
                if self.error is not None:
                    raise self.error

    def finish(self):
        self._q.put(None)
        self._t.join()
        if self.error is not None:
            raise self.error

    def abort(self):
        self.error = self.error or RuntimeError("aborted")
        try:
            while True:
                self._q.get_nowait()
        except queue.Empty:
            pass
        self._q.put(None)
        self._t.join()


# --------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------

def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def predict_file(model, path, out_path, *, raw=False, block_rows=65_536, n_jobs=None,
                 zero_based=None, precision=9, evaluate=False, format="auto",
                 chunk_bytes=8 << 20, labels=False):
    """Score the rows of a data file with a fitted model into a text file.

    Parameters
    ----------
    model : fitted cfm estimator (FM / FFM, classifier or regressor)
    path : str, path-like or binary file object (e.g. ``sys.stdin.buffer``)
        libsvm / libFM / libffm text, plain or gzip, or a ``.cfmdata`` cache
        (path only).
    out_path : str, path-like or binary file object (e.g. ``sys.stdout.buffer``)
        Written one prediction per line, in input order.  A path is written
        through a temporary file and renamed at the end, so a failure leaves
        no partial output.
    raw : bool, default=False
        Classifiers: log-odds instead of probabilities of ``classes_[1]``
        (multiclass: per-class scores instead of per-class probabilities).
    block_rows : int, default=65536
        Most rows scored at once.
    n_jobs : int or None
        Threads of the parser, kernel and formatter (None: ``model.n_jobs``).
    zero_based : None, bool or "auto"
        libsvm column ids: None reads them as the model does (recorded in
        every model: its training file's rule, or zero-based for a model
        fitted on arrays); True / False override it; "auto" applies
        scikit-learn's rule to this file (one-based when it has no id 0;
        costs a first pass over the file, and cannot read a stream).
    precision : int in [1, 17], default=9
        Significant digits written (``'%.{precision}g'``).
    evaluate : bool, default=False
        Also compute metrics against the file's labels (AUC and log loss for
        classifiers, RMSE and MAE for regressors).  Keeps labels and scores,
        12 bytes per row.
    format : {"auto", "libsvm", "libfm", "libffm", "cache"}
    chunk_bytes : int, default=8 MiB
        Text read and parsed at once.
    labels : bool, default=False
        Classifiers: write the predicted class label of each row.

    Returns
    -------
    dict
        ``n_rows``, ``seconds``, ``ignored_values`` (stored values of feature
        ids beyond the model, which were ignored), stage busy times
        ``read_parse_s`` / ``score_s`` / ``write_s`` (they overlap), and
        ``metrics`` when ``evaluate``.
    """
    scorer = model if isinstance(model, Scorer) else _scorer_from_model(model)
    return _predict_file(lambda: scorer, scorer, path, out_path, raw=raw, block_rows=block_rows,
                         n_jobs=n_jobs, zero_based=zero_based, precision=precision,
                         evaluate=evaluate, format=format, chunk_bytes=chunk_bytes,
                         labels=labels)


def _predict_file(get_scorer, info, path, out_path, *, raw=False, block_rows=65_536,
                  n_jobs=None, zero_based=None, precision=9, evaluate=False, format="auto",
                  chunk_bytes=8 << 20, labels=False):
    """predict_file, with the Scorer from ``get_scorer()`` called once the
    reader thread has started (``info``: a Scorer, possibly without
    ``decision``, saying what the reader needs before; its ``n_jobs`` is
    the threads when ``n_jobs`` is None)."""
    t_start = time.perf_counter()
    block_rows = _check_int("block_rows", block_rows, 1)
    chunk_bytes = _check_int("chunk_bytes", chunk_bytes, 1)
    precision = _check_int("precision", precision, 1)
    if precision > 17:
        raise ValueError(f"precision must be <= 17, got {precision}")
    n_threads = effective_n_threads(info.n_jobs if n_jobs is None else n_jobs)
    write_labels = bool(labels)  # (``labels`` below: the file's, with evaluate)
    if write_labels and raw:
        raise ValueError("labels=True and raw=True exclude each other")
    if write_labels and not (info.logistic or info.multiclass):
        raise ValueError("labels=True needs a classifier (a regressor writes its predictions)")
    sigmoid = (info.logistic or info.multiclass) and not raw

    if zero_based is None:
        zero_based = info._zb()
    blocks = score_blocks(path, info.n_features, block_rows, chunk_bytes, n_threads,
                          zero_based, format, labels=evaluate,
                          n_fields=info.n_fields if info.entry_fields else None)
    own_file = not _source._is_fileobj(out_path)
    # a path: written through a unique temporary file renamed at the end (a
    # device or FIFO is written in place; see cfm._files.atomic_output)
    output = atomic_output(out_path) if own_file else None
    fh = output.__enter__() if own_file else out_path
    reader = _Prefetch(lambda: blocks, depth=2)
    writer = None
    n_rows = ignored = 0
    score_s = 0.0
    labels, scores = [], []
    ok = False
    try:
        scorer = get_scorer()  # while the reader parses the first blocks
        if write_labels and scorer.classes is None:
            raise ValueError("labels=True needs a classifier that knows its class labels")
        writer = _Writer(fh, precision, sigmoid, n_threads,
                         labels=scorer.classes if write_labels else None)
        for b in reader:
            t0 = time.perf_counter()
            Xc = CSRInput(b.data, b.indices, b.indptr, (b.n_rows, info.n_features), b.fields)
            # the parser and the formatter use the cores meanwhile: the kernels
            # hand out chunks of rows, so a thread the OS sets aside costs little
            s = scorer.decision(Xc, n_threads) if b.n_rows else \
                np.zeros((0, len(scorer.classes)) if scorer.multiclass else 0)
            score_s += time.perf_counter() - t0
            writer.put(s)
            n_rows += b.n_rows
            ignored += b.ignored
            if evaluate:
                labels.append(b.y)
                scores.append(s)
        writer.finish()
        if own_file:
            done, output = output, None
            done.__exit__(None, None, None)  # closes and renames onto out_path
        else:
            fh.flush()
        ok = True
    finally:
        reader.close()
        if not ok:
            if writer is not None:
                writer.abort()
            if output is not None:  # removes the temporary file
                exc = sys.exc_info()
                output.__exit__(*(exc if exc[0] is not None else
                                  (RuntimeError, RuntimeError("aborted"), None)))
    stats = {"n_rows": n_rows, "ignored_values": ignored,
             "seconds": time.perf_counter() - t_start, "read_parse_s": reader.busy,
             "score_s": score_s, "write_s": writer.busy, "threads": n_threads}
    if evaluate:
        stats["metrics"] = _evaluate(scorer, labels, scores, path)
    return stats


def _evaluate(scorer, labels, scores, src):
    y = np.concatenate(labels) if labels else np.zeros(0)
    s = np.concatenate(scores) if scores else np.zeros(0)
    if not len(y):
        return {}
    try:
        y_enc = y if scorer.encode_y is None else scorer.encode_y(y)
    except ValueError as exc:  # a label the model does not know: where it is
        row = getattr(exc, "row", None)
        if _source._is_fileobj(src) or row is None:
            where = _source._name(src) + ("" if row is None else f": row {row} (0-based)")
        else:
            where = _where_row(src, _source._resolve_format(src, "auto"), row)
        raise DataFormatError(f"{where}: {exc}") from None
    names = ("auc", "logloss") if scorer.logistic else \
        ("accuracy", "logloss") if scorer.multiclass else ("rmse", "mae")
    return {n: METRICS[n][0](y_enc, s) for n in names}


def read_for_model(path, n_features, zero_based=True, n_jobs=None, n_fields=None):
    """Load a whole data file as ``(X, y)`` with exactly ``n_features`` columns.

    Columns beyond ``n_features`` are dropped (as :func:`predict_file` ignores
    feature ids beyond the model); libsvm ids are read with ``zero_based``.
    Used for validation files, whose ids may exceed the training file's.
    ``n_fields``: a libffm file read with the field of each entry (entries
    of a field >= n_fields dropped), returned as ``(X, y, EntryFields)``.
    """
    nt = effective_n_threads(n_jobs)
    parts = list(score_blocks(path, n_features, 1 << 30, _source.CHUNK_BYTES, nt, zero_based,
                              "auto", labels=True, n_fields=n_fields))
    if not parts:
        raise ValueError(f"{_source._name(path)}: no data rows")
    Xs = [sp.csr_matrix((b.data, b.indices, b.indptr), shape=(b.n_rows, n_features))
          for b in parts]
    X = Xs[0] if len(Xs) == 1 else sp.vstack(Xs, format="csr")
    y = np.concatenate([b.y for b in parts])
    if n_fields is not None:
        return X, y, EntryFields(np.concatenate([b.fields for b in parts]))
    return X, y

