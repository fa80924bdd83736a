"""``cfm predict MODEL DATA``: score a data file, one prediction per line."""
import os
import sys

from ._csv import add_options as add_csv_options, predict as predict_csv
from ._options import (EXIT_OK, UsageError, add_block_rows, add_quiet, add_threads,
                       add_zero_based, fmt_int, int_range)
from ._paths import check_data_file, check_model_path, check_output, is_model_file


def add_parser(sub, common):
    pr = sub.add_parser("predict", parents=[common], help="score a data file",
                        description="Score a data file, one prediction per line in input "
                        "order: probabilities of the positive class (binary models), the "
                        "probabilities of every class separated by spaces, in the order of "
                        "the model's classes as `cfm info` lists them (multiclass models), or "
                        "predicted values (regression); --labels writes predicted labels. "
                        "Streams the file in blocks with bounded memory.")
    pr.add_argument("model", metavar="MODEL",
                    help="cfm model file (or an xLearn TXT model when cfm.load_xlearn is "
                    "available)")
    pr.add_argument("data", metavar="DATA", nargs="?",
                    help="libsvm / libFM / libffm text (plain or gzip) or .cfmdata cache; "
                    "'-' reads stdin (or --csv FILE: raw rows)")
    pr.add_argument("-o", "--output", metavar="OUT", default="-",
                    help="output file; '-' (default) writes stdout")
    pr.add_argument("--raw", action="store_true",
                    help="classifiers: raw scores (log-odds; multiclass: one score per class) "
                    "instead of probabilities")
    pr.add_argument("--labels", action="store_true",
                    help="classifiers: the predicted class label of each row instead of "
                    "probabilities")
    pr.add_argument("--eval", action="store_true",
                    help="print metrics against the file's labels on stderr (AUC and log "
                    "loss, or RMSE and MAE); keeps 12 bytes per row in memory")
    pr.add_argument("--precision", type=int_range(1, 17), default=9, metavar="P",
                    help="significant digits written (1-17, default 9)")
    add_block_rows(pr, 65_536, "most rows scored at once")
    add_zero_based(pr, None, "libsvm column ids (default: as the model's training file was "
                   "read)")
    add_threads(pr)
    add_quiet(pr, "no summary on stderr")
    add_csv_options(pr, train=False)
    xl = pr.add_argument_group("xLearn TXT models (what the text file does not record)")
    xl.add_argument("--xlearn-task", choices=("binary", "reg"), default="binary",
                    help="the model's task (default binary)")
    xl.add_argument("--xlearn-no-norm", action="store_true",
                    help="the model is scored without instance-wise normalisation "
                    "(xLearn's disableNorm / --no-norm)")
    xl.add_argument("--xlearn-fields", metavar="FILE", default=None,
                    help="FFM: a libffm file giving each feature one field (its first, e.g. "
                    "in the training file); default: each entry's own field, as xLearn "
                    "scores (DATA must then be libffm)")
    return pr


def load_xlearn_model(path, xlearn):
    """An xLearn TXT model (``xlearn``: keyword arguments for cfm.load_xlearn),
    when ``path`` is not a cfm model file."""
    from .. import load_xlearn
    from ..exceptions import ModelFileError

    try:
        return load_xlearn(path, **xlearn)
    except (ModelFileError, ValueError) as exc:
        raise ModelFileError(f"{path} is neither a cfm model file nor an xLearn TXT model "
                             f"({exc})") from None


def _input(args):
    """DATA as a path or stdin's binary stream."""
    if args.data != "-":
        return args.data
    if args.zero_based == "auto":
        raise UsageError("--zero-based auto reads the data twice and cannot read stdin; "
                         "pass --zero-based true or false (default: as the model reads "
                         "ids)")
    if sys.stdin is None:  # started with stdin closed (<&-)
        raise OSError("DATA is '-' but stdin is closed")
    return sys.stdin.buffer


def _output(args):
    """OUT as a path or stdout's binary stream."""
    if args.output != "-":
        return args.output
    if sys.stdout is None:  # started with stdout closed (>&-)
        raise OSError("OUT is '-' (stdout) but stdout is closed; pass -o FILE")
    sys.stdout.flush()
    return sys.stdout.buffer


def run(args, log):
    if (args.data is None) == (args.csv is None):
        raise UsageError("give either DATA (a data file) or --csv FILE (raw rows)")
    if args.csv is not None:
        return _run_csv(args, log)
    check_data_file(args.data)
    xl = {"task": args.xlearn_task, "norm": not args.xlearn_no_norm}
    if args.xlearn_fields is not None:
        check_data_file(args.xlearn_fields)
        xl["fields"] = args.xlearn_fields
    check_output(args.output, [args.data, args.model, args.xlearn_fields])
    check_model_path(args.model)
    cfm_model = is_model_file(args.model)
    model = None if cfm_model else load_xlearn_model(args.model, xl)
    if args.output != "-" and os.path.isdir(args.output):
        raise IsADirectoryError(f"{args.output}: is a directory")
    src, out = _input(args), _output(args)
    if args.labels and args.raw:
        raise UsageError("--labels and --raw exclude each other")
    kw = dict(raw=args.raw, block_rows=args.block_rows, n_jobs=args.threads,
              zero_based=args.zero_based, precision=args.precision, evaluate=args.eval,
              labels=args.labels)
    if cfm_model:
        # a cfm model file loads while the first blocks of data are parsed
        from .._loader import predict_model_file

        model, stats = predict_model_file(args.model, src, out, scoring_only=True, **kw)
    else:
        stats = model.predict_file(src, out, **kw)
    return _report(args, log, model, stats)


def _run_csv(args, log):
    """``--csv FILE``: raw rows through the model's encoder."""
    import time

    from .. import load

    check_data_file(args.csv)
    check_output(args.output, [args.csv, args.model])
    check_model_path(args.model)
    if args.output != "-" and os.path.isdir(args.output):
        raise IsADirectoryError(f"{args.output}: is a directory")
    t0 = time.perf_counter()
    model = load(args.model, scoring_only=True)
    stats = predict_csv(args, model, _output(args))
    stats.update(seconds=time.perf_counter() - t0, ignored_values=0)
    return _report(args, log, model, stats)


def _report(args, log, model, stats):
    n, secs = stats["n_rows"], stats["seconds"]
    where = "stdout" if args.output == "-" else args.output
    log(f"scored {fmt_int(n)} rows in {secs:.2f}s ({n / max(secs, 1e-9):,.0f} rows/s) -> {where}")
    if stats["ignored_values"]:
        log(f"note: {fmt_int(stats['ignored_values'])} values of feature ids beyond the "
            f"model's {fmt_int(model.n_features_in_)} features were ignored")
    if args.eval:
        m = stats.get("metrics", {})
        # evaluation is what --eval asked for: printed even with --quiet
        print("  ".join([f"rows {fmt_int(n)}"] + [f"{k} {v:.6f}" for k, v in m.items()]),
              file=sys.stderr, flush=True)
    return EXIT_OK
