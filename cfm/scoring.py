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
  models too.  FM models ignore libffm field tokens.
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

Output: one number per line, ``'%.{precision}g'`` (default 9 significant
digits, which round-trips float32); probabilities of ``classes_[1]`` for
classifiers (``raw=True``: log-odds), predicted values for regressors.
"""
import os
import queue
import sys
import threading
import time

import numpy as np

from ._lazy import sparse as sp
from . import _fastparse, _format
from . import data as cfm_data
from ._files import atomic_output
from ._metrics import METRICS
from ._validation import CSRInput, effective_n_threads
from .exceptions import DataFormatError

__all__ = ["predict_file", "read_for_model"]



# --------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------

def _is_fileobj(obj):
    return hasattr(obj, "read") and not isinstance(obj, (str, bytes, os.PathLike))


def _name(src):
    if _is_fileobj(src):
        name = getattr(src, "name", None)
        return "<stdin>" if name in (None, 0, "<stdin>") or not isinstance(name, str) else name
    return os.fspath(src)


def _fileobj_chunks(fh, chunk_bytes, name="<stdin>"):
    """Buffers of complete lines read from a binary file object (a pipe is
    fine); a line longer than MAX_LINE_BYTES raises cfm.data._LineTooLong,
    corrupted gzip data DataFormatError."""
    import gzip

    head = fh.peek(2)[:2] if hasattr(fh, "peek") else b""
    if head == b"\x1f\x8b":
        fh = gzip.GzipFile(fileobj=fh, mode="rb")
    parts, n_rest = [], 0  # the last line so far, without a newline yet
    while True:
        try:
            block = fh.read(chunk_bytes)
        except cfm_data._GZIP_ERRORS as exc:
            raise cfm_data._gzip_error(name, exc) from None
        if not block:
            if parts:
                yield b"".join(parts)
            return
        cut = block.rfind(b"\n") + 1
        if cut == 0:
            parts.append(block)
            n_rest += len(block)
            if n_rest > cfm_data.MAX_LINE_BYTES:
                raise cfm_data._LineTooLong(f"{name}: {cfm_data._too_long()}")
            continue
        if n_rest + cut - 1 > cfm_data.MAX_LINE_BYTES:
            raise cfm_data._LineTooLong(f"{name}: {cfm_data._too_long()}")
        buf = b"".join(parts + [memoryview(block)[:cut]]) if parts else block[:cut]
        parts, n_rest = ([block[cut:]], len(block) - cut) if cut < len(block) else ([], 0)
        yield buf


def _sniff_format(buf):
    """'libffm' or 'libsvm' from the first data line of a buffer."""
    for line in bytes(buf[:1 << 20]).split(b"\n"):
        toks = line.split(b"#", 1)[0].split()
        feats = [t for t in toks[1:] if not t.startswith(b"qid")]
        if feats:
            return "libffm" if feats[0].count(b":") >= 2 else "libsvm"
    return "libsvm"


class _Block:
    """Rows of the input as CSR arrays the kernels take, plus their labels."""

    __slots__ = ("data", "indices", "indptr", "y", "ignored")

    def __init__(self, data, indices, indptr, y, ignored=0):
        self.data, self.indices, self.indptr, self.y = data, indices, indptr, y
        self.ignored = ignored

    @property
    def n_rows(self):
        return len(self.y)


def _fit_to_model(data, indices, indptr, n_features, unsorted):
    """Canonical rows with only the model's columns; returns (data, indices, indptr, n_dropped)."""
    dropped = 0
    if len(indices) and int(indices.max()) >= n_features:
        keep = indices < n_features
        dropped = int(len(keep) - np.count_nonzero(keep))
        c = np.empty(len(indices) + 1, dtype=np.int64)
        c[0] = 0
        np.cumsum(keep, out=c[1:])
        indptr = c[indptr]
        indices, data = indices[keep], data[keep]
    if unsorted:
        M = sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, n_features))
        M.sum_duplicates()
        data, indices = M.data, M.indices
        indptr = M.indptr.astype(np.int64, copy=False)
    return data, indices, indptr, dropped


def _split(data, indices, indptr, y, block_rows, ignored):
    n = len(y)
    if n <= block_rows:
        yield _Block(data, indices, indptr, y, ignored)
        return
    for r0 in range(0, n, block_rows):
        r1 = min(n, r0 + block_rows)
        a, b = int(indptr[r0]), int(indptr[r1])
        yield _Block(data[a:b], indices[a:b], indptr[r0:r1 + 1] - a, y[r0:r1],
                     ignored if r0 == 0 else 0)


def _resolve_zero_based(src, fmt, zero_based, n_threads):
    if fmt != "libsvm":
        return True
    if zero_based is None:
        zero_based = "auto"
    if zero_based not in (True, False, "auto"):
        raise ValueError(f"zero_based must be None, True, False or 'auto', got {zero_based!r}")
    if zero_based == "auto":
        if _is_fileobj(src):
            raise ValueError("zero_based='auto' needs two passes over the input and cannot "
                             "read a stream twice; pass zero_based=True or False")
        zero_based = bool(cfm_data.scan_file(src, format="libsvm", n_jobs=n_threads)["zero_based"])
    return zero_based


def _text_blocks(src, fmt, n_features, zero_based, block_rows, chunk_bytes, n_threads,
                 chunks=None, labels=False):
    """Blocks of a text input: each chunk of lines goes through the fast parser
    (cfm._fastparse: plain machine-written lines, bit-identical results), and
    through cfm's general parser when it holds anything else (comments,
    exponents, ...) -- which also reports malformed lines as file:line
    (``labels``: nan / inf labels too; the fast path reads only finite ones)."""
    name = _name(src)
    shift = fmt == "libsvm" and not zero_based
    if chunks is None:
        chunks = cfm_data._read_chunks(src, chunk_bytes)
    lines = 0
    it = iter(chunks)
    while True:
        try:
            buf = next(it)
        except StopIteration:
            return
        except cfm_data._LineTooLong:
            raise DataFormatError(f"{name}:{lines + 1}: {cfm_data._too_long()}") \
                from None
        pieces = _fastparse.parse_plain(buf, fmt == "libffm", shift, n_features, n_threads)
        if pieces is None:
            yield from _general_blocks(name, buf, fmt, n_features, shift, block_rows, n_threads,
                                       lines, labels)
            lines += buf.count(b"\n")
        else:
            # the fast path takes only data lines: a row per line
            lines += sum(len(p[0]) for p in pieces)
            for y, indptr, indices, data, dropped, unsorted in pieces:
                if unsorted:
                    data, indices, indptr, _ = _fit_to_model(data, indices, indptr, n_features,
                                                             True)
                yield from _split(data, indices, indptr, y, block_rows, dropped)


def _general_blocks(name, buf, fmt, n_features, shift, block_rows, n_threads, first_line,
                    labels=False):
    # non-finite values (labels: when evaluating) cannot be scored: file:line
    for r in cfm_data._parse_stream(name, fmt, f32=True, zero_ok=not shift, strict_order=False,
                                    n_threads=n_threads, chunks=[buf], first_line=first_line,
                                    finite=True if labels else "values"):
        y = r["labels"]
        indptr = np.empty(len(y) + 1, dtype=np.int64)
        indptr[0] = 0
        indptr[1:] = r["row_end"]
        indices, data = r["indices"], r["values"]
        if shift and len(indices):
            indices = indices - 1
        data, indices, indptr, dropped = _fit_to_model(data, indices, indptr, n_features,
                                                       r["unsorted"])
        yield from _split(data, indices, indptr, y, block_rows, dropped)


def _cache_blocks(src, n_features, block_rows, labels=False):
    c = cfm_data._CacheFile(src)
    width = c.header["n_features"]
    r0 = 0
    for X, y, _ in cfm_data.iter_blocks(src, block_rows=block_rows, format="cache"):
        indptr = np.ascontiguousarray(X.indptr, dtype=np.int64)
        data, indices = X.data, X.indices
        if not np.isfinite(data).all() or (labels and not np.isfinite(y).all()):
            raise cfm_data._first_nonfinite(c, r0, indptr, data, y if labels else y[:0])
        r0 += len(y)
        if width > n_features:
            data, indices, indptr, dropped = _fit_to_model(data, indices, indptr, n_features,
                                                           False)
        else:
            dropped = 0
        yield _Block(data, indices, indptr, y, dropped)


def _blocks(src, n_features, block_rows, chunk_bytes, n_threads, zero_based, format,
            labels=False):
    """Iterator of _Block over ``src`` (path or binary file object);
    ``labels``: nan / inf labels are errors too."""
    if format not in ("auto", "libsvm", "libfm", "libffm", "cache"):
        raise ValueError(f"format must be 'auto', 'libsvm', 'libfm', 'libffm' or 'cache', "
                         f"got {format!r}")
    fmt = "libsvm" if format == "libfm" else format
    if _is_fileobj(src):
        name = _name(src)
        chunks = _fileobj_chunks(src, chunk_bytes, name)
        try:
            first = next(chunks, b"")
        except cfm_data._LineTooLong:
            raise DataFormatError(f"{name}:1: {cfm_data._too_long()}") from None
        if first[:8] == cfm_data.CACHE_MAGIC:
            raise ValueError("a .cfmdata cache cannot be read from a stream; pass its path")
        if fmt == "auto":
            fmt = _sniff_format(first)
        if fmt == "cache":
            raise ValueError("a .cfmdata cache cannot be read from a stream; pass its path")

        def all_chunks():
            if first:
                yield first
            yield from chunks

        zb = _resolve_zero_based(src, fmt, zero_based, n_threads)
        return _text_blocks(src, fmt, n_features, zb, block_rows, chunk_bytes, n_threads,
                            chunks=all_chunks(), labels=labels)
    if not os.path.exists(os.fspath(src)):
        raise FileNotFoundError(f"{os.fspath(src)}: no such file")
    if os.path.isdir(os.fspath(src)):
        raise IsADirectoryError(f"{os.fspath(src)}: is a directory")
    fmt = cfm_data._resolve_format(src, fmt)
    if fmt == "cache":
        return _cache_blocks(src, n_features, block_rows, labels)
    zb = _resolve_zero_based(src, fmt, zero_based, n_threads)
    return _text_blocks(src, fmt, n_features, zb, block_rows, chunk_bytes, n_threads,
                        labels=labels)


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


class _Writer:
    """Format and write score blocks in a background thread, in order."""

    def __init__(self, fh, precision, sigmoid, n_threads, depth=2):
        self._fh, self._precision, self._sigmoid, self._nt = fh, precision, sigmoid, n_threads
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
                self._fh.write(_format.format_scores(item, self._precision, self._sigmoid,
                                                     self._nt))
                self.busy += time.perf_counter() - t0
            except BaseException as exc:  # noqa: BLE001 - re-raised by the producer
                self.error = exc

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
                 chunk_bytes=8 << 20):
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
        Classifiers: log-odds instead of probabilities of ``classes_[1]``.
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

    Returns
    -------
    dict
        ``n_rows``, ``seconds``, ``ignored_values`` (stored values of feature
        ids beyond the model, which were ignored), stage busy times
        ``read_parse_s`` / ``score_s`` / ``write_s`` (they overlap), and
        ``metrics`` when ``evaluate``.
    """
    model._check_fitted()
    return _predict_file(lambda: model, _ModelInfo.of(model), path, out_path, raw=raw, block_rows=block_rows,
                         n_jobs=n_jobs, zero_based=zero_based, precision=precision,
                         evaluate=evaluate, format=format, chunk_bytes=chunk_bytes)


class _ModelInfo:
    """What scoring a file needs to know of the model before it is loaded.

    ``n_jobs``: the threads when the caller gives none -- a model object's
    own ``n_jobs``, but never one read from a model file's header (a file
    does not choose how many threads score it: ``predict_model_file`` and
    ``cfm predict`` use their ``n_jobs`` / ``--threads`` or the default).
    """

    __slots__ = ("n_features", "n_jobs", "classifier", "zero_based")
    _DESCRIBES_MODEL = ("n_features", "classifier", "zero_based")

    def __init__(self, n_features, n_jobs, classifier, zero_based):
        self.n_features, self.n_jobs = n_features, n_jobs
        self.classifier, self.zero_based = classifier, zero_based

    @classmethod
    def of(cls, model):
        zb = getattr(model, "_input_zero_based", None)  # None: fitted before it was recorded
        return cls(int(model.n_features_in_), model.n_jobs, model._loss == "logistic",
                   True if zb is None else bool(zb))

    def __eq__(self, other):
        return all(getattr(self, a) == getattr(other, a) for a in self._DESCRIBES_MODEL)

    @classmethod
    def from_header(cls, header):
        try:
            n = int(header["n_features"])
            # no key: a file written before every model recorded it (see _import_common)
            zb = header.get("input_zero_based", True)
            if n < 1:
                return None
            return cls(n, None, header["task"] == "binary", zb if isinstance(zb, bool) else True)
        except (KeyError, TypeError, ValueError):
            return None


def _predict_file(get_model, info, path, out_path, *, raw=False, block_rows=65_536, n_jobs=None,
                  zero_based=None, precision=9, evaluate=False, format="auto",
                  chunk_bytes=8 << 20):
    """predict_file, with the model from ``get_model()`` called once the
    reader thread has started (``info``: what the reader needs before)."""
    t_start = time.perf_counter()
    block_rows = _check_int("block_rows", block_rows, 1)
    chunk_bytes = _check_int("chunk_bytes", chunk_bytes, 1)
    precision = _check_int("precision", precision, 1)
    if precision > 17:
        raise ValueError(f"precision must be <= 17, got {precision}")
    n_threads = effective_n_threads(info.n_jobs if n_jobs is None else n_jobs)
    sigmoid = info.classifier and not raw

    if zero_based is None:
        zero_based = info.zero_based
    blocks = _blocks(path, info.n_features, block_rows, chunk_bytes, n_threads,
                     zero_based, format, labels=evaluate)
    own_file = not _is_fileobj(out_path)
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
        model = get_model()  # while the reader parses the first blocks
        tables = model._current_tables()  # one consistent set for the whole file
        writer = _Writer(fh, precision, sigmoid, n_threads)
        for b in reader:
            t0 = time.perf_counter()
            Xc = CSRInput(b.data, b.indices, b.indptr, (b.n_rows, info.n_features))
            # the parser and the formatter use the cores meanwhile: the kernels
            # hand out chunks of rows, so a thread the OS sets aside costs little
            s = model._decision(Xc, n_threads, tables=tables) if b.n_rows else np.zeros(0)
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
        stats["metrics"] = _evaluate(model, labels, scores, path)
    return stats


def _evaluate(model, labels, scores, src):
    y = np.concatenate(labels) if labels else np.zeros(0)
    s = np.concatenate(scores) if scores else np.zeros(0)
    if not len(y):
        return {}
    try:
        y_enc = model._encode_eval_y(y, len(y))
    except ValueError as exc:  # a label the model does not know: where it is
        row = getattr(exc, "row", None)
        if _is_fileobj(src) or row is None:
            where = _name(src) + ("" if row is None else f": row {row} (0-based)")
        else:
            where = cfm_data._where_row(src, cfm_data._resolve_format(src, "auto"), row)
        raise DataFormatError(f"{where}: {exc}") from None
    names = ("auc", "logloss") if model._loss == "logistic" else ("rmse", "mae")
    return {n: METRICS[n][0](y_enc, s) for n in names}


def read_for_model(path, n_features, zero_based=True, n_jobs=None):
    """Load a whole data file as ``(X, y)`` with exactly ``n_features`` columns.

    Columns beyond ``n_features`` are dropped (as :func:`predict_file` ignores
    feature ids beyond the model); libsvm ids are read with ``zero_based``.
    Used for validation files, whose ids may exceed the training file's.
    """
    nt = effective_n_threads(n_jobs)
    parts = list(_blocks(path, n_features, 1 << 30, cfm_data.CHUNK_BYTES, nt, zero_based, "auto",
                         labels=True))
    if not parts:
        raise ValueError(f"{_name(path)}: no data rows")
    Xs = [sp.csr_matrix((b.data, b.indices, b.indptr), shape=(b.n_rows, n_features))
          for b in parts]
    X = Xs[0] if len(Xs) == 1 else sp.vstack(Xs, format="csr")
    y = np.concatenate([b.y for b in parts])
    return X, y

