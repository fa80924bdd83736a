"""Estimators on raw columns: the ``encoder`` parameter (a :class:`cfm.FieldEncoder`).

``BaseFM`` calls three hooks: ``_encode_fit`` before a fit (fits a clone of
``encoder`` on X -- or, on a warm start / later ``partial_fit``, keeps the
fitted ``encoder_`` -- and returns the encoded X, eval_set and fields),
``_keep_encoder`` after it succeeded, and ``_encode_rows`` before a
prediction.  The fitted encoder is saved in the model file (header entry
``encoder`` and three arrays, cfm/_encoder_file.py) and comes back with
``cfm.load``; ``predict_csv`` scores a CSV file of raw rows in blocks
(``cfm predict --csv``).
"""
import os

import numpy as np

from . import scoring
from ._files import atomic_output
from ._metrics import METRICS
from ._validation import effective_n_threads, is_stream
from .encoder import FieldEncoder
from .exceptions import DataFormatError


def _clone(enc):
    return FieldEncoder(**enc.get_params())


class EncoderMixin:
    """The ``encoder`` parameter of the FM / FFM estimators (see the module docstring)."""

    def _encode_fit(self, X, eval_set, fields, *, partial=False):
        """(X, eval_set, fields, fitted encoder or None) for a fit on raw rows."""
        enc = getattr(self, "encoder", None)
        if enc is None:
            return X, eval_set, fields, None
        if not isinstance(enc, FieldEncoder):
            raise ValueError(f"encoder must be a cfm.FieldEncoder or None, got "
                             f"{type(enc).__name__}")
        if is_stream(X):
            raise ValueError("with an encoder, X must be raw rows in memory (a pandas "
                             "DataFrame); data files are already encoded: pass "
                             "encoder=None to train from them")
        fitted = self.__dict__.get("encoder_")
        keep = fitted is not None and "_state" in self.__dict__ and (
            partial or self.warm_start)
        if not keep:
            if partial and enc.__sklearn_is_fitted__():
                fitted = enc  # partial_fit: an encoder fitted beforehand, as given
            else:
                fitted = _clone(enc).fit(X)
        Xe = fitted.transform(X)
        if eval_set is not None:
            pairs = [eval_set] if isinstance(eval_set, tuple) else list(eval_set)
            if any(not isinstance(p, tuple) or len(p) != 2 for p in pairs):
                raise ValueError("eval_set must be a pair (X_val, y_val) or a list of pairs")
            enc_pairs = [(fitted.transform(Xv), yv) for Xv, yv in pairs]
            eval_set = enc_pairs[0] if isinstance(eval_set, tuple) else enc_pairs
        if fields is None and self._state_class.uses_fields:
            fields = fitted.fields_
        return Xe, eval_set, fields, fitted

    def _keep_encoder(self, fitted):
        """After a fit: the encoder it used, or none (a fit on encoded data)."""
        if fitted is not None:
            self.encoder_ = fitted
        else:
            self.__dict__.pop("encoder_", None)

    def _encode_rows(self, X):
        """Rows to score: raw rows encoded when the model has an encoder."""
        enc = self.__dict__.get("encoder_")
        return X if enc is None else enc.transform(X)

    # ------------------------------------------------------------ model files
    def _export_encoder(self, header, arrays):
        enc = self.__dict__.get("encoder_")
        if enc is not None:
            entry, arrs = enc._to_file()
            header["encoder"] = entry
            arrays.update(arrs)

    def _import_encoder(self, header, arrays, state):
        self.__dict__.pop("encoder_", None)
        entry = header.get("encoder")
        if entry is None:
            return
        enc = FieldEncoder._from_file(entry, arrays)
        if enc.n_features_out_ != state.n_features:
            raise ValueError(f"the encoder gives {enc.n_features_out_} features, the model "
                             f"has {state.n_features}")
        self.encoder = _clone(enc)
        self.encoder_ = enc

    # ---------------------------------------------------------------- scoring
    def predict_csv(self, path, out_path, *, label=None, sep=",", header=True, raw=False,
                    block_rows=65_536, precision=9, evaluate=False, n_jobs=None):
        """Score a CSV file of raw rows (needs a model fitted with an encoder).

        The file is read with pandas in blocks of ``block_rows`` rows
        (bounded memory); the encoder's columns are taken by name (other
        columns are ignored; categorical ones are read as text) and one
        prediction per line is written to ``out_path`` (a path, written
        atomically, or a binary file object), as :meth:`predict_file`
        writes them.  ``header=False``: the file has no header line and its
        columns are named by position (0, 1, ...), as
        ``pandas.read_csv(header=None)`` names them, so the encoder must have
        been fitted on such a frame.  ``label``: the label column (ignored
        when scoring), needed by ``evaluate=True`` (metrics against it).
        ``sep``: the field separator ("\\t" for TSV; gzip is recognised from
        a ``.gz`` suffix).

        Returns a dict with ``n_rows`` (and ``metrics`` when evaluating).
        """
        import pandas as pd

        enc = self.__dict__.get("encoder_")
        if enc is None:
            self._check_fitted()
            raise ValueError(f"this {type(self).__name__} was fitted on encoded data (no "
                             "encoder): score data files with predict_file")
        if evaluate and label is None:
            raise ValueError("evaluate=True needs the label column (label=...)")
        if not (1 <= precision <= 17 and block_rows >= 1):
            raise ValueError("precision must be in [1, 17] and block_rows >= 1")
        cols = list(enc.feature_names_in_)
        where = os.fspath(path) if isinstance(path, (str, os.PathLike)) else "stdin" \
            if getattr(path, "name", None) in ("<stdin>", 0) else "the input"
        if not header and not all(isinstance(c, int) for c in cols + [label or 0]):
            raise ValueError("header=False names columns by position, but the encoder's "
                             f"columns are named ({cols[:3]}...) and label is {label!r}: "
                             "the file needs a header line")
        key = (lambda c: c) if not header else str
        wanted = [key(c) for c in cols] + ([key(label)] if label is not None else [])
        text = {key(c): str for c, k in zip(cols, enc.kinds_) if k in ("category", "hash")}
        try:
            reader = pd.read_csv(path, sep=sep, header=0 if header else None, usecols=wanted,
                                 dtype=text, chunksize=block_rows)
        except (ValueError, OSError) as exc:
            if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)):
                raise
            raise DataFormatError(f"{where}: {exc}") from None
        n_threads = effective_n_threads(self.n_jobs if n_jobs is None else n_jobs)
        logistic = self._loss == "logistic"
        ys, scores, n = [], [], 0
        rename = {key(c): c for c in cols}
        with _output(out_path) as fh:
            for chunk in _chunks(reader, where):
                y = chunk.pop(key(label)) if label is not None else None
                chunk = chunk.rename(columns=rename)
                try:
                    s = np.ascontiguousarray(self._raw_predict(chunk[cols]), dtype=np.float64)
                except (ValueError, TypeError) as exc:
                    first = n + 1 + bool(header)
                    if getattr(exc, "row", None) is not None:
                        raise DataFormatError(f"{where}: line {first + exc.row}: "
                                              f"{exc.detail}") from None
                    raise DataFormatError(f"{where}: lines {first}-{first + len(chunk) - 1}: "
                                          f"{exc}") from None
                fh.write(scoring.format_block(s, precision, logistic and not raw, n_threads))
                if evaluate:
                    ys.append(np.asarray(y))
                    scores.append(s)
                n += len(chunk)
        stats = {"n_rows": n}
        if evaluate:
            stats["metrics"] = self._csv_metrics(ys, scores)
        return stats

    def _csv_metrics(self, ys, scores):
        s = np.concatenate(scores) if scores else np.empty(0)
        y = np.concatenate(ys) if ys else np.empty(0)
        if self._loss == "logistic":
            y01 = self._encode_eval_y(y, len(y))
            if s.ndim == 2:  # multiclass: class indices against (n, C) scores
                return {m: METRICS[m][0](y01, s) for m in ("accuracy", "logloss")}
            return {m: METRICS[m][0](y01, s) for m in ("auc", "logloss")}
        yv = self._encode_eval_y(y, len(y))
        return {m: METRICS[m][0](yv, s) for m in ("rmse", "mae")}


def _chunks(reader, where):
    """The reader's blocks, its parse errors as DataFormatError naming the file."""
    it = iter(reader)
    while True:
        try:
            chunk = next(it)
        except StopIteration:
            return
        except ValueError as exc:  # pandas' ParserError is a ValueError
            raise DataFormatError(f"{os.fspath(where)}: {exc}") from None
        yield chunk


class _output:
    """A path (written atomically) or an open binary file object."""

    def __init__(self, out):
        self._out, self._cm = out, None

    def __enter__(self):
        if isinstance(self._out, (str, os.PathLike)):
            self._cm = atomic_output(self._out)
            return self._cm.__enter__()
        return self._out

    def __exit__(self, *exc):
        if self._cm is not None:
            return self._cm.__exit__(*exc)
        return False
