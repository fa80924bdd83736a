"""Batch scoring on Spark (optional extra ``cfm[spark]``; pyspark needs Java 17).

    import cfm.spark
    scored = cfm.spark.predict(df, "model.cfm", input_col="line")   # adds "prediction"

:func:`predict` adds a column of predictions to a Spark DataFrame whose
``input_col`` holds lines of a libsvm / libFM / libffm file (``"1 3:1 17:0.5"``;
the label is read and ignored, as ``cfm predict`` does) -- or, with
``indices_col`` / ``values_col``, arrays of feature ids and values.  It is
``df.mapInPandas(scorer(...), schema)``: :func:`scorer` gives the function
for your own ``mapInPandas`` pipelines.

The model file's bytes are broadcast (shipped once per executor); each
Python worker loads them once with ``cfm.load(..., scoring_only=True)`` and
scores Arrow batches with ``spark.task.cpus`` threads.  Values are those of
``cfm predict`` on the same lines (probabilities of ``classes_[1]``, raw
scores with ``raw=True``, or regression values), as float64: the text path
is cfm's own batch scorer (``predict_file``) with 17 significant digits, so
formatting them with ``'%.9g'`` gives ``cfm predict``'s output.  Ids beyond
the model's features are ignored, as there.
"""
import hashlib
import io
import os
import tempfile
import threading

import numpy as np

try:  # the optional extra
    import pyspark  # noqa: F401
    from pyspark.sql import types as T
except ImportError as _exc:  # pragma: no cover - exercised without the extra
    raise ImportError("cfm.spark needs pyspark (and Java 17): pip install 'cfm[spark]'") \
        from _exc

__all__ = ["predict", "scorer"]

# {digest of the model file: model} in each Python worker process: loaded once
_MODELS = {}
_LOCK = threading.Lock()


def _model(bc, key):
    """The model of broadcast ``bc`` (its bytes' digest ``key``) in this
    process, loaded on first use."""
    from . import load

    with _LOCK:
        model = _MODELS.get(key)
        if model is None:
            fd, path = tempfile.mkstemp(suffix=".cfm")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(bc.value)
                model = load(path, scoring_only=True)
            finally:
                os.unlink(path)
            _MODELS[key] = model
        return model


def _task_threads():
    from pyspark import TaskContext

    ctx = TaskContext.get()
    try:
        return max(1, int(ctx.cpus())) if ctx is not None else 1
    except (AttributeError, TypeError, ValueError):
        return 1


def _score_lines(model, lines, raw, zero_based, format, n_jobs):
    """Scores of text lines (None / empty: NaN) through predict_file."""
    out = np.full(len(lines), np.nan)
    keep = [i for i, s in enumerate(lines) if s is not None and str(s).strip()]
    if not keep:
        return out
    text = []
    for i in keep:
        s = str(lines[i])
        if "\n" in s.rstrip("\n") or "\r" in s:
            raise ValueError(f"row {i} of a batch holds several lines: one data line per row")
        text.append(s.rstrip("\n"))
    src = io.BytesIO(("\n".join(text) + "\n").encode())
    dst = io.BytesIO()
    model.predict_file(src, dst, raw=raw, zero_based=zero_based, precision=17, format=format,
                       n_jobs=n_jobs)
    vals = np.array(dst.getvalue().split(), dtype=np.float64)
    if len(vals) != len(keep):  # cannot happen: predict_file writes a line per row
        raise RuntimeError(f"{len(vals)} scores for {len(keep)} lines")
    out[keep] = vals
    return out


def _score_arrays(model, indices, values, raw):
    """Scores of rows given as arrays of feature ids and values."""
    import scipy.sparse as sp

    n_feat = int(model.n_features_in_)
    idx, val, ptr = [], [], [0]
    for i, (ind, v) in enumerate(zip(indices, values)):
        ind = np.asarray(ind if ind is not None else [], dtype=np.int64)
        v = np.ones(len(ind)) if v is None else np.asarray(v, dtype=np.float64)
        if ind.shape != v.shape:
            raise ValueError(f"row {i}: {len(ind)} indices but {len(v)} values")
        if len(ind) and ind.min() < 0:
            raise ValueError(f"row {i}: negative feature id {int(ind.min())}")
        ok = ind < n_feat  # ids beyond the model are ignored (as cfm predict)
        idx.append(ind[ok])
        val.append(v[ok])
        ptr.append(ptr[-1] + int(ok.sum()))
    X = sp.csr_matrix((np.concatenate(val) if val else np.zeros(0),
                       np.concatenate(idx) if idx else np.zeros(0, np.int64), ptr),
                      shape=(len(ptr) - 1, n_feat))
    X.sum_duplicates()
    if X.shape[0] == 0:
        return np.zeros(0)
    from . import _format

    logistic = getattr(model, "_loss", None) == "logistic"
    d = np.ascontiguousarray(model.decision_function(X) if logistic else model.predict(X),
                             dtype=np.float64)
    # the values cfm predict writes (its sigmoid), at full precision
    text = _format.format_scores(d, 17, logistic and not raw, 1)
    return np.array(bytes(text).split(), dtype=np.float64)


def scorer(model_path, *, input_col="features", indices_col=None, values_col=None,
           output_col="prediction", raw=False, zero_based=None, format="auto", spark=None):
    """A function for ``df.mapInPandas(fn, schema)`` adding ``output_col``.

    The model file is read here and broadcast (once per executor).  Either
    ``input_col`` (data-file lines) or ``indices_col`` (+ optional
    ``values_col``, default all 1.0) names the input.  ``zero_based`` and
    ``format``: how lines are read, as in ``cfm predict`` (None: as the
    model's training file was read).
    """
    from pyspark.sql import SparkSession

    spark = spark or SparkSession.builder.getOrCreate()
    with open(model_path, "rb") as fh:
        blob = fh.read()
    from ._model_file import peek_header

    header = peek_header(model_path)
    if header is None:
        from . import load

        load(model_path)  # raises the precise error for a file that is no model
    elif header.get("task") == "multiclass":
        raise ValueError(f"{model_path}: cfm.spark scores binary and regression models (one "
                         "value per row); score a multiclass model with cfm predict or "
                         "predict_file")
    bc = spark.sparkContext.broadcast(blob)
    key = hashlib.sha256(blob).hexdigest()

    def fn(batches):
        model = _model(bc, key)
        n_jobs = _task_threads()
        for pdf in batches:
            if indices_col is not None:
                vals = pdf[values_col] if values_col is not None else [None] * len(pdf)
                scores = _score_arrays(model, pdf[indices_col], vals, raw)
            else:
                scores = _score_lines(model, list(pdf[input_col]), raw, zero_based, format,
                                      n_jobs)
            yield pdf.assign(**{output_col: scores})

    return fn


def predict(df, model_path, *, input_col="features", indices_col=None, values_col=None,
            output_col="prediction", raw=False, zero_based=None, format="auto"):
    """``df`` with a float64 column ``output_col`` of the model's predictions
    (see :func:`scorer` and the module docstring)."""
    if output_col in df.columns:
        raise ValueError(f"column {output_col!r} exists already; pass output_col=")
    fn = scorer(model_path, input_col=input_col, indices_col=indices_col,
                values_col=values_col, output_col=output_col, raw=raw, zero_based=zero_based,
                format=format, spark=df.sparkSession)
    schema = T.StructType(df.schema.fields + [T.StructField(output_col, T.DoubleType())])
    return df.mapInPandas(fn, schema)
