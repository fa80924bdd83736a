"""Raw CSV rows on the command line: ``cfm train --csv`` and ``cfm predict --csv``.

Training reads the CSV into memory (pandas), encodes its columns with a
``cfm.FieldEncoder`` (one field per column) and fits the estimator with
``encoder=``; the encoder is saved inside the model file.  Scoring streams
the CSV in blocks through ``model.predict_csv``.
"""
import time

from ._options import UsageError, fmt_int, int_range


def separator(text):
    """``--sep``: one character; ``tab`` / ``\\t`` for a tab."""
    if text in ("tab", "\\t", "\t"):
        return "\t"
    if len(text) != 1:
        import argparse

        raise argparse.ArgumentTypeError(f"expected one character (or 'tab'), got {text!r}")
    return text


def add_options(p, train):
    g = p.add_argument_group("raw rows (CSV with categorical / numeric columns)")
    g.add_argument("--csv", metavar="FILE", default=None,
                   help=("train on a CSV file of raw columns (read into memory), encoded by "
                         "cfm.FieldEncoder, one field per column; the encoder is saved in the "
                         "model" if train else
                         "score a CSV file of raw rows ('-': stdin) with a model trained on "
                         "raw columns (its encoder is in the model file), instead of DATA"))
    g.add_argument("--label", metavar="COL", default=None,
                   help=("the label column (required with --csv)" if train else
                         "the label column, ignored when scoring (needed by --eval)"))
    g.add_argument("--sep", type=separator, default=",", metavar="C",
                   help="field separator (default ','; 'tab' for TSV)")
    g.add_argument("--no-header", action="store_true",
                   help="the file has no header line: columns are named by position 0, 1, "
                   "... (--label then gives a position)")
    if train:
        g.add_argument("--min-frequency", type=int_range(1), default=2, metavar="N",
                       help="categorical values seen fewer times share one 'other' id per "
                       "column (default 2)")
        g.add_argument("--n-buckets", type=int_range(1, 2**31 - 3), default=None, metavar="N",
                       help="hash each categorical column into N buckets instead of keeping a "
                       "vocabulary")
        g.add_argument("--numeric", choices=("bucket", "value"), default="bucket",
                       help="numeric columns as quantile buckets (default) or values")


def _label(args):
    if args.label is None or not args.no_header:
        return args.label
    try:
        return int(args.label)
    except ValueError:
        raise UsageError(f"with --no-header, --label is a column position (0, 1, ...), got "
                         f"{args.label!r}") from None


def read_frame(path, args):
    """(X, y) of a CSV file read whole, y the label column."""
    import pandas as pd

    from ..exceptions import DataFormatError

    label = _label(args)
    try:
        df = pd.read_csv(path, sep=args.sep, header=None if args.no_header else 0)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: {exc}") from None
    if label not in df.columns:
        raise DataFormatError(f"{path}: no label column {label!r} (columns: "
                              f"{list(df.columns)[:8]}...)")
    if len(df) == 0:
        raise DataFormatError(f"{path}: no data rows")
    y = df.pop(label)
    if y.isna().any():
        row = int(y.isna().to_numpy().argmax())
        raise DataFormatError(f"{path}: line {row + 1 + (not args.no_header)}: missing label")
    return df, y.to_numpy()


def train(args, log, params, estimator_class):
    """``cfm train --csv``: returns the fitted model (saved by the caller)."""
    import numpy as np

    from .. import FieldEncoder

    if args.label is None:
        raise UsageError("--csv needs --label COL (the column of labels)")
    t0 = time.perf_counter()
    X, y = read_frame(args.csv, args)
    task = args.task
    if task is None:
        values = np.unique(y)
        task = "binary" if len(values) == 2 else "reg"
        log(f"task: {task} ({len(values)} distinct labels; set --task to override)")
    enc = FieldEncoder(min_frequency=args.min_frequency, n_buckets=args.n_buckets,
                       numeric=args.numeric)
    model = estimator_class(task, args.model)(encoder=enc, **params)
    log(f"read {args.csv}: {fmt_int(len(X))} rows, {X.shape[1]} columns "
        f"({time.perf_counter() - t0:.1f}s)")
    eval_set = None
    if args.validate is not None:
        eval_set = read_frame(args.validate, args)
    return model, (X, y, eval_set)


def predict(args, model, out):
    """``cfm predict --csv``: the stats of ``model.predict_csv``."""
    if getattr(model, "encoder_", None) is None:
        raise ValueError(f"{args.model} was trained on encoded data (no encoder in the model "
                         "file): score libsvm / libffm files as DATA, not --csv")
    src = args.csv
    if src == "-":
        import sys

        if sys.stdin is None:
            raise OSError("--csv is '-' but stdin is closed")
        src = sys.stdin.buffer
    return model.predict_csv(src, out, label=_label(args), sep=args.sep,
                             header=not args.no_header, raw=args.raw,
                             block_rows=args.block_rows, precision=args.precision,
                             evaluate=args.eval, n_jobs=args.threads)
