"""The ``cfm`` command line: train, predict, convert, info.

::

    cfm train train.svm -o model.cfm --model fm -k 8 --epochs 10 --validate valid.svm
    cfm predict model.cfm test.svm -o pred.txt --eval
    zcat test.svm.gz | cfm predict model.cfm - | head
    cfm convert train.svm            # -> train.svm.cfmdata (binary cache)
    cfm info model.cfm [--json]

Exit status: 0 success; 1 an error in the data, the model file or the system
(missing file, malformed line, wrong kind of file, divergence...); 2 bad
command-line usage or option values; 130 interrupted (Ctrl-C); 141 the output
pipe was closed by the reader (e.g. ``| head``), silently, like a tool killed
by SIGPIPE.  Errors are reported as one line on stderr, ``cfm <command>:
error: <message>``; ``--debug`` (or ``CFM_CLI_DEBUG=1``) shows the Python
traceback instead.
"""
import argparse
import json
import os
import sys
import time

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPT, EXIT_PIPE = 0, 1, 2, 130, 141
_MAX_COUNT = 2**31 - 1  # epochs, sweeps, patience: counts the estimators accept


class UsageError(Exception):
    """Bad option values (exit status 2)."""

    def __init__(self, message, prog=None):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors raised as UsageError (no sys.exit, no usage dump)."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')", prog=self.prog)


# --------------------------------------------------------------------------
# Option types
# --------------------------------------------------------------------------

def _int_at_least(low, high=None):
    def conv(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {v}")
        if high is not None and v > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {v}")
        return v
    return conv


def _float_range(low=0.0, low_open=False):
    def conv(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if v != v or v in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
        if v < low or (low_open and v == low):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low:g}, "
                                             f"got {text}")
        return v
    return conv


def _threads(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v == 0:
        raise argparse.ArgumentTypeError("0 threads has no meaning (use N > 0, or -1 for all "
                                         "cores)")
    return v


def _zero_based(text):
    t = text.strip().lower()
    if t in ("auto",):
        return "auto"
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected auto, true or false, got {text!r}")


# --------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------

def build_parser():
    from . import __version__

    p = _Parser(prog="cfm", description="Fast factorization machines (FM, FFM) from the shell.",
                epilog="Run 'cfm <command> --help' for the options of a command.")
    p.add_argument("--version", action="version", version=f"cfm {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true",
                        help="show Python tracebacks on errors (also CFM_CLI_DEBUG=1)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    # ---- train
    t = sub.add_parser("train", parents=[common], help="train a model on a data file",
                       description="Train an LR, FM or FFM model on a libsvm / libFM / libffm "
                       "text file (plain or gzip) or a .cfmdata cache, streamed in blocks.")
    t.add_argument("train", metavar="TRAIN", help="training data file")
    t.add_argument("-o", "--output", metavar="MODEL", required=True, help="model file to write")
    t.add_argument("--model", choices=("lr", "fm", "ffm"), default="fm",
                   help="lr: linear model (FM with 0 factors); fm; ffm: field-aware FM "
                   "(needs a libffm file). Default: fm")
    t.add_argument("--task", choices=("binary", "reg"), default=None,
                   help="binary classification or regression; default: binary when the "
                   "training labels take exactly two values, else reg")
    t.add_argument("--solver", choices=("adagrad", "sgd", "ftrl", "als", "mcmc"),
                   default="adagrad",
                   help="per-sample optimizers adagrad (default), sgd, ftrl; or libFM's "
                   "coordinate-wise solvers als and mcmc (Gibbs sampling; --model fm/lr, "
                   "training file read into memory)")
    t.add_argument("-k", "--factors", type=_int_at_least(1, 256), default=None, metavar="K",
                   help="number of factors (fm, ffm; default 8 for fm, 4 for ffm)")
    t.add_argument("-e", "--epochs", type=_int_at_least(1, _MAX_COUNT), default=None,
                   help="epochs, or sweeps for als/mcmc (default 10; als 30, mcmc 200)")
    t.add_argument("--burn-in", type=_int_at_least(0, _MAX_COUNT), default=None, metavar="N",
                   help="mcmc: sweeps discarded before averaging (default: epochs // 10, "
                   "at most 50)")
    t.add_argument("-r", "--lr", type=_float_range(0, low_open=True), default=None,
                   metavar="RATE", help="learning rate (default: the estimator's, 0.1 binary / "
                   "0.15 reg)")
    t.add_argument("--l2", type=_float_range(), default=None, metavar="L",
                   help="L2 of the linear weights and the factors (sets --l2-w and --l2-v)")
    t.add_argument("--l2-w", type=_float_range(), default=None, metavar="L")
    t.add_argument("--l2-v", type=_float_range(), default=None, metavar="L")
    t.add_argument("--l2-w0", type=_float_range(), default=0.0, metavar="L", help="L2 of the bias")
    t.add_argument("--l1", type=_float_range(), default=0.0, metavar="L",
                   help="L1 of the linear weights (--solver ftrl only)")
    t.add_argument("--ftrl-beta", type=_float_range(), default=1.0, metavar="B")
    t.add_argument("--init-std", type=_float_range(), default=None, metavar="S",
                   help="std of the factors' initialisation (default 0.03; 0.1 for als/mcmc)")
    t.add_argument("--no-norm", action="store_true",
                   help="no instance-wise L2 normalisation of the rows (on by default, as in "
                   "xLearn/libffm)")
    t.add_argument("--no-bias", action="store_true", help="no bias term")
    t.add_argument("--no-shuffle", action="store_true",
                   help="visit rows in file order (default: shuffled within each block)")
    t.add_argument("--validate", metavar="FILE", default=None,
                   help="validation file: metric printed per epoch, early stopping and the "
                   "best epoch's model kept")
    t.add_argument("--metric", choices=("auc", "logloss", "rmse", "mae"), default=None,
                   help="validation metric (default logloss for binary, rmse for reg)")
    t.add_argument("--patience", type=_int_at_least(1, _MAX_COUNT), default=3, metavar="N",
                   help="early stopping: epochs without improvement (default 3)")
    t.add_argument("--tol", type=_float_range(), default=1e-4,
                   help="early stopping: minimum improvement (default 1e-4)")
    t.add_argument("--dtype", choices=("float32", "float64", "float16"), default=None,
                   help="parameter precision (default float32; ffm: float16 factor storage "
                   "on CPUs with AVX2/F16C)")
    t.add_argument("--block-rows", type=_int_at_least(1), default=100_000, metavar="N",
                   help="rows per block when streaming the file (memory ~ one block)")
    t.add_argument("--zero-based", type=_zero_based, default="auto", metavar="{auto,true,false}",
                   help="libsvm column ids: true = as written, false = one-based (shifted "
                   "down), auto = one-based when the file has no id 0 (scikit-learn's rule; "
                   "default). Recorded in the model for 'cfm predict'")
    t.add_argument("--threads", type=_threads, default=None, metavar="N",
                   help="threads (default: all cores; -1 all cores)")
    t.add_argument("--seed", type=_int_at_least(0, 2**32 - 1), default=None, metavar="N",
                   help="random seed, 0 .. 2**32-1 (with --threads 1: bit-for-bit "
                   "reproducible)")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    t.set_defaults(func=cmd_train)

    # ---- predict
    pr = sub.add_parser("predict", parents=[common], help="score a data file",
                        description="Score a data file, one prediction per line in input "
                        "order: probabilities of the positive class (binary models) or "
                        "predicted values (regression). Streams the file in blocks with "
                        "bounded memory.")
    pr.add_argument("model", metavar="MODEL",
                    help="cfm model file (or an xLearn TXT model when cfm.load_xlearn is "
                    "available)")
    pr.add_argument("data", metavar="DATA",
                    help="libsvm / libFM / libffm text (plain or gzip) or .cfmdata cache; "
                    "'-' reads stdin")
    pr.add_argument("-o", "--output", metavar="OUT", default="-",
                    help="output file; '-' (default) writes stdout")
    pr.add_argument("--raw", action="store_true",
                    help="binary models: raw scores (log-odds) instead of probabilities")
    pr.add_argument("--eval", action="store_true",
                    help="print metrics against the file's labels on stderr (AUC and log "
                    "loss, or RMSE and MAE); keeps 12 bytes per row in memory")
    pr.add_argument("--precision", type=_int_at_least(1, 17), default=9, metavar="P",
                    help="significant digits written (1-17, default 9)")
    pr.add_argument("--block-rows", type=_int_at_least(1), default=65_536, metavar="N",
                    help="most rows scored at once")
    pr.add_argument("--zero-based", type=_zero_based, default=None, metavar="{auto,true,false}",
                    help="libsvm column ids (default: as the model's training file was read)")
    pr.add_argument("--threads", type=_threads, default=None, metavar="N")
    pr.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    xl = pr.add_argument_group("xLearn TXT models (what the text file does not record)")
    xl.add_argument("--xlearn-task", choices=("binary", "reg"), default="binary",
                    help="the model's task (default binary)")
    xl.add_argument("--xlearn-no-norm", action="store_true",
                    help="the model is scored without instance-wise normalisation "
                    "(xLearn's disableNorm / --no-norm)")
    xl.add_argument("--xlearn-fields", metavar="FILE", default=None,
                    help="FFM: a libffm file giving each feature's field (e.g. the training "
                    "file)")
    pr.set_defaults(func=cmd_predict)

    # ---- convert
    c = sub.add_parser("convert", parents=[common], help="convert a text file to a .cfmdata cache",
                       description="Convert a libsvm / libFM / libffm text file (plain or gzip) "
                       "to cfm's binary .cfmdata cache (memory-mapped, checksummed), which "
                       "'cfm train' and 'cfm predict' read without parsing.")
    c.add_argument("text", metavar="TEXT", help="text data file")
    c.add_argument("-o", "--output", metavar="OUT", default=None,
                   help="cache file (default: TEXT.cfmdata)")
    c.add_argument("--format", choices=("auto", "libsvm", "libfm", "libffm"), default="auto")
    c.add_argument("--zero-based", type=_zero_based, default="auto", metavar="{auto,true,false}")
    c.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    c.add_argument("--threads", type=_threads, default=None, metavar="N")
    c.add_argument("-q", "--quiet", action="store_true")
    c.set_defaults(func=cmd_convert)

    # ---- info
    i = sub.add_parser("info", parents=[common], help="describe a model file (or a .cfmdata cache)",
                       description="Show a model file's kind, task, shapes, solver, training "
                       "parameters, history and checksums (or a .cfmdata cache's header).")
    i.add_argument("model", metavar="MODEL")
    i.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    i.set_defaults(func=cmd_info)
    return p


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

class _Log:
    def __init__(self, quiet):
        self.quiet = quiet

    def __call__(self, msg):
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)


def _check_input(path, what="file"):
    if path == "-":
        return
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such {what}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory, expected a {what}")


def _is_model_file(path):
    """True when ``path`` is a regular file starting with a cfm model's magic
    bytes (a pipe or device is not opened for reading: nothing is consumed)."""
    from ._files import open_regular, pread_into
    from ._io import MAGIC

    try:
        fd, _ = open_regular(path)
    except (OSError, ValueError):
        return False
    try:
        head = bytearray(len(MAGIC))
        return pread_into(fd, head, 0) == len(MAGIC) and bytes(head) == MAGIC
    except OSError:
        return False
    finally:
        os.close(fd)


def _check_model_path(path):
    """A model path must name an existing regular file (a FIFO or a device
    would block or never end)."""
    import stat

    from ._files import _kind
    from .exceptions import ModelFileError

    _check_input(path, "model file")
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise ModelFileError(f"{path} is {_kind(mode)}, not a model file (only regular files "
                             "are read)")


def _check_output(path, inputs, what="-o/--output"):
    """Refuse an empty output path or one naming an input file (it would be
    replaced by the output)."""
    from ._files import same_file

    if path == "":
        raise UsageError(f"{what} must not be empty")
    for name in inputs:
        if name not in (None, "-") and os.path.exists(path) and same_file(path, name):
            raise UsageError(f"{what} {path} is the input file {name}: it would be "
                             "overwritten; choose another output path")


def _check_data_file(path):
    _check_input(path, "data file")
    if path != "-" and _is_model_file(path):
        raise ValueError(f"{path} is a cfm model file, not a data file")


def _fmt_int(n):
    return f"{n:,}"


def _load_model(path, xlearn=None, scoring_only=False):
    """A cfm model file, or an xLearn TXT model when cfm.xlearn.load_xlearn exists
    (``xlearn``: keyword arguments for cfm.load_xlearn; ``scoring_only``: see
    cfm.load)."""
    from . import _loader
    from .exceptions import ModelFileError

    _check_model_path(path)
    try:
        return _loader.load(path, scoring_only=scoring_only)
    except ModelFileError as exc:
        if _is_model_file(path):
            raise  # a damaged cfm model: its own message is the useful one
        try:
            from .xlearn import load_xlearn
        except ImportError:
            raise exc from None
        from .xlearn import FieldsNeeded

        try:
            model = load_xlearn(path, **(xlearn or {}))
        except FieldsNeeded as exc2:
            raise ValueError(f"{path} is an xLearn FFM model with {exc2.n_fields} fields; cfm "
                             "needs the field of each feature, which xLearn's TXT model does "
                             "not record: pass --xlearn-fields FILE, a libffm data file (e.g. "
                             "the training file) whose first field for each feature is taken"
                             ) from None
        except (ModelFileError, ValueError) as exc2:
            raise ModelFileError(f"{path} is neither a cfm model file nor an xLearn TXT model "
                                 f"({exc2})") from None
        if getattr(model, "_input_zero_based", None) is None:
            model._input_zero_based = True  # xLearn reads libsvm ids as written
        return model


# --------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------

class _Progress:
    """Per-epoch progress on stderr: plain lines, plus a live bar on a terminal."""

    def __init__(self, n_epochs, log, tty):
        self.n_epochs, self.log, self.tty = n_epochs, log, tty
        self.t0 = time.perf_counter()
        self._bar_shown = False

    def epoch(self, rec, n_epochs):
        parts = [f"epoch {rec['epoch']:>3d}/{self.n_epochs}",
                 f"train_loss {rec['train_loss']:.6f}"]
        parts += [f"{k} {v:.6f}" for k, v in rec.items() if k.startswith("eval")]
        parts.append(f"{rec['time']:.2f}s")
        self.clear()
        self.log("  ".join(parts))
        if self.tty and not self.log.quiet and rec["epoch"] < self.n_epochs:
            done = rec["epoch"]
            elapsed = time.perf_counter() - self.t0
            eta = elapsed / done * (self.n_epochs - done)
            width = 30
            fill = int(width * done / self.n_epochs)
            sys.stderr.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{self.n_epochs} "
                             f"epochs  {elapsed:.1f}s elapsed, ~{eta:.1f}s left")
            sys.stderr.flush()
            self._bar_shown = True

    def clear(self):
        if self._bar_shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self._bar_shown = False


def _detect_task(info):
    labels = [float(v) for v in info.get("label_values_sample", [])]
    return "binary" if len(labels) == 2 else "reg"


def cmd_train(args, log):
    from . import data as cfm_data
    from .ffm import FFMClassifier, FFMRegressor
    from .models import FMClassifier, FMRegressor
    from .scoring import read_for_model

    if args.metric in ("auc", "logloss") and args.task == "reg" or \
            args.metric in ("rmse", "mae") and args.task == "binary":
        raise UsageError(f"--metric {args.metric} does not apply to --task {args.task}")
    if args.l1 > 0 and args.solver != "ftrl":
        raise UsageError("--l1 needs --solver ftrl")
    if args.model == "lr" and args.factors is not None:
        raise UsageError("-k/--factors does not apply to --model lr (a linear model)")
    _check_data_file(args.train)
    if args.train == "-":
        raise UsageError("TRAIN must be a file (training reads it once per epoch)")
    if args.validate is not None:
        _check_data_file(args.validate)
        if args.validate == "-":
            raise UsageError("--validate must be a file")
    _check_output(args.output, [args.train, args.validate])
    from ._files import check_writable

    check_writable(args.output)  # before training, not after the last epoch

    k = 0 if args.model == "lr" else (args.factors if args.factors is not None
                                      else (4 if args.model == "ffm" else 8))
    l2_w = args.l2_w if args.l2_w is not None else args.l2
    l2_v = args.l2_v if args.l2_v is not None else args.l2
    params = dict(n_factors=k, solver=args.solver, learning_rate=args.lr, n_epochs=args.epochs,
                  l2_w0=args.l2_w0, l2_w=l2_w, l2_v=l2_v, l1=args.l1, ftrl_beta=args.ftrl_beta,
                  init_std=args.init_std, normalize=False if args.no_norm else None,
                  fit_intercept=not args.no_bias, shuffle=not args.no_shuffle,
                  n_iter_no_change=args.patience, tol=args.tol, eval_metric=args.metric,
                  dtype=args.dtype, n_jobs=args.threads, random_state=args.seed,
                  verbose=0 if args.quiet else 1, n_burn_in=args.burn_in)
    try:  # before reading anything
        (FMRegressor if args.metric in ("rmse", "mae") else FMClassifier)(
            **params)._validate_params()
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    t0 = time.perf_counter()
    # nan / inf labels or values: refused here, at file:line, before any training
    info = cfm_data.scan_file(args.train,
                              zero_based=args.zero_based if args.zero_based != "auto" else "auto",
                              allow_nonfinite=False)
    fmt = info["format"]
    if info["n_rows"] == 0:
        raise ValueError(f"{args.train}: no data rows")
    if args.model == "ffm" and fmt == "libsvm":
        raise ValueError(f"{args.train} is a libsvm file; --model ffm needs a libffm file "
                         "(label field:feature:value ...) or a cache made from one")
    if args.model == "ffm" and fmt == "cache" and not info.get("n_fields"):
        raise ValueError(f"{args.train} is a cache made from a libsvm file; --model ffm needs "
                         "field ids (a libffm file)")
    task = args.task
    if task is None:
        task = _detect_task(info)
        if args.metric in ("rmse", "mae"):
            task = "reg"
        elif args.metric in ("auc", "logloss"):
            task = "binary"
        labels = info.get("label_values_sample", [])
        shown = ", ".join(f"{v:g}" for v in list(labels)[:5]) + (", ..." if len(labels) > 5 else "")
        log(f"task: {task} (labels {shown}; set --task to override)")
    cls = {("binary", False): FMClassifier, ("reg", False): FMRegressor,
           ("binary", True): FFMClassifier, ("reg", True): FFMRegressor}[(task, args.model == "ffm")]
    model = cls(**params)
    n_features = info["n_features"]
    # a model sized by a huge id: refused (naming the line) before reading further
    model._check_model_size(n_features, info.get("n_fields"), model._validate_params(),
                            source=args.train, info=info)
    zero_based = info.get("zero_based", True) if fmt in ("libsvm", "cache") else True
    log(f"training {cls.__name__}(k={k}, solver={args.solver}) on {args.train}: "
        f"{_fmt_int(info['n_rows'])} rows, {_fmt_int(n_features)} features, {fmt}"
        + (f", {'zero' if zero_based else 'one'}-based ids" if fmt == "libsvm" else ""))
    eval_set = None
    if args.validate is not None:
        Xv, yv = read_for_model(args.validate, n_features, zero_based=zero_based,
                                n_jobs=args.threads)
        eval_set = (Xv, yv)
        log(f"validation: {args.validate}, {_fmt_int(Xv.shape[0])} rows")
    progress = _Progress(model._n_epochs(), log, sys.stderr.isatty())
    model._print_epoch = progress.epoch  # per-epoch lines and the live bar
    try:
        if args.solver in ("als", "mcmc"):
            # coordinate-wise solvers sweep over columns: the data must be in memory
            Xt, yt = read_for_model(args.train, n_features, zero_based=zero_based,
                                    n_jobs=args.threads)
            model.fit(Xt, yt, eval_set=eval_set)
            model._input_zero_based = bool(zero_based)
        elif fmt == "libsvm" and args.zero_based != "auto":
            # fit(path) reads ids with the "auto" rule: stream the blocks ourselves
            def chunks():
                for Xb, yb, _ in cfm_data.iter_blocks(args.train, block_rows=args.block_rows,
                                                      n_features=n_features,
                                                      zero_based=zero_based,
                                                      n_jobs=args.threads,
                                                      allow_nonfinite=False):
                    yield Xb, yb
            model.fit(chunks, eval_set=eval_set)
            model._input_zero_based = bool(zero_based)
        else:
            model.fit(args.train, eval_set=eval_set, block_rows=args.block_rows)
    finally:
        progress.clear()
        model.__dict__.pop("_print_epoch", None)
    model.verbose = 0  # the saved parameters: a loaded model trains silently
    model.save(args.output)
    best = getattr(model, "best_epoch_", model.n_epochs_)
    log(f"saved {args.output} ({model.n_epochs_} epochs, best epoch {best}, "
        f"{time.perf_counter() - t0:.1f}s)")
    return EXIT_OK


# --------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------

def cmd_predict(args, log):
    _check_data_file(args.data)
    xl = {"task": args.xlearn_task, "norm": not args.xlearn_no_norm}
    if args.xlearn_fields is not None:
        _check_data_file(args.xlearn_fields)
        xl["fields"] = args.xlearn_fields
    _check_output(args.output, [args.data, args.model, args.xlearn_fields])
    _check_model_path(args.model)
    cfm_model = _is_model_file(args.model)
    model = None if cfm_model else _load_model(args.model, xl, scoring_only=True)
    if args.output != "-" and os.path.isdir(args.output):
        raise IsADirectoryError(f"{args.output}: is a directory")
    if args.data == "-":
        if args.zero_based == "auto":
            raise UsageError("--zero-based auto reads the data twice and cannot read stdin; "
                             "pass --zero-based true or false (default: as the model reads "
                             "ids)")
        if sys.stdin is None:  # started with stdin closed (<&-)
            raise OSError("DATA is '-' but stdin is closed")
        src = sys.stdin.buffer
    else:
        src = args.data
    if args.output == "-":
        if sys.stdout is None:  # started with stdout closed (>&-)
            raise OSError("OUT is '-' (stdout) but stdout is closed; pass -o FILE")
        out = sys.stdout.buffer
        sys.stdout.flush()
    else:
        out = args.output
    kw = dict(raw=args.raw, block_rows=args.block_rows, n_jobs=args.threads,
              zero_based=args.zero_based, precision=args.precision, evaluate=args.eval)
    if cfm_model:
        # a cfm model file loads while the first blocks of data are parsed
        from ._loader import predict_model_file

        model, stats = predict_model_file(args.model, src, out, scoring_only=True, **kw)
    else:
        stats = model.predict_file(src, out, **kw)
    n, secs = stats["n_rows"], stats["seconds"]
    where = "stdout" if args.output == "-" else args.output
    log(f"scored {_fmt_int(n)} rows in {secs:.2f}s ({n / max(secs, 1e-9):,.0f} rows/s) -> {where}")
    if stats["ignored_values"]:
        log(f"note: {_fmt_int(stats['ignored_values'])} values of feature ids beyond the "
            f"model's {_fmt_int(model.n_features_in_)} features were ignored")
    if args.eval:
        m = stats.get("metrics", {})
        # evaluation is what --eval asked for: printed even with --quiet
        print("  ".join([f"rows {_fmt_int(n)}"] + [f"{k} {v:.6f}" for k, v in m.items()]),
              file=sys.stderr, flush=True)
    return EXIT_OK


# --------------------------------------------------------------------------
# convert / info
# --------------------------------------------------------------------------

def cmd_convert(args, log):
    from . import data as cfm_data

    _check_data_file(args.text)
    if args.text == "-":
        raise UsageError("TEXT must be a file")
    if cfm_data._is_cache(args.text):
        raise ValueError(f"{args.text} is already a .cfmdata cache")
    if args.output is not None:
        _check_output(args.output, [args.text])
    t0 = time.perf_counter()
    dst = cfm_data.convert_to_cache(args.text, args.output, format=args.format,
                                    dtype=args.dtype, zero_based=args.zero_based,
                                    n_jobs=args.threads)
    if not os.path.isfile(dst):  # e.g. /dev/null, written in place: nothing to read back
        log(f"wrote {dst} ({time.perf_counter() - t0:.1f}s)")
        return EXIT_OK
    h = cfm_data._CacheFile(dst).header
    log(f"wrote {dst}: {_fmt_int(h['n_rows'])} rows, {_fmt_int(h['n_features'])} features, "
        f"{_fmt_int(h['nnz'])} values, {os.path.getsize(dst) / 1e6:.1f} MB "
        f"({time.perf_counter() - t0:.1f}s)")
    return EXIT_OK


def _model_summary(path):
    from ._io import FORMAT_VERSION, describe_model_file

    # validated and checksum-verified, read in bounded memory
    header, shapes, facts = describe_model_file(path)
    classes = header.get("classes")
    out = {
        "file": os.fspath(path),
        "kind": header["kind"],
        "model": ("lr" if header["kind"] == "fm" and header["n_factors"] == 0
                  else header["kind"]),
        "estimator": header["estimator"],
        "task": header["task"],
        "n_features": header["n_features"],
        "n_factors": header["n_factors"],
        "n_fields": header.get("n_fields"),
        "dtype": header["dtype"],
        "solver": header["solver"],
        "normalize": header["normalize"],
        "classes": classes["values"] if classes else None,
        "n_epochs": header.get("n_epochs_"),
        "best_epoch": header.get("best_epoch_"),
        "input_zero_based": header.get("input_zero_based"),
        "params": header.get("params", {}),
        "history": header.get("history", []),
        "cfm_version": header.get("cfm_version"),
        "format_version": facts["format_version"],
        "reader_format_version": f"{FORMAT_VERSION[0]}.{FORMAT_VERSION[1]}",
        "file_bytes": facts["file_bytes"],
        "crc32": facts["crc32"],
        "sha256": facts["sha256"],
        "arrays": {k: {"shape": list(shape), "dtype": dt} for k, (shape, dt) in shapes.items()},
    }
    return out


def _cache_summary(path):
    from . import data as cfm_data

    c = cfm_data._CacheFile(path)
    h = {k: v for k, v in c.header.items() if not k.startswith("_")}
    return {"file": os.fspath(path), "kind": "cfmdata cache",
            **{k: h.get(k) for k in ("n_rows", "n_features", "nnz", "has_fields",
                                     "source_format", "source", "file_size")},
            "arrays": {a["name"]: {"shape": a["shape"], "dtype": a["dtype"],
                                   "crc32": f"{a['crc32']:08x}"} for a in h.get("arrays", [])}}


def cmd_info(args, log):
    from . import data as cfm_data

    _check_model_path(args.model)
    if cfm_data._is_cache(args.model):
        s = _cache_summary(args.model)
    else:
        s = _model_summary(args.model)
    if args.json:
        print(json.dumps(s, indent=2, sort_keys=False, default=str))
        return EXIT_OK
    if s["kind"] == "cfmdata cache":
        lines = [f"file          {s['file']}", "kind          cfmdata cache (binary data)"]
        for k in ("n_rows", "n_features", "nnz", "has_fields", "source_format", "source",
                  "file_size"):
            lines.append(f"{k:<13} {s[k]}")
        for name, a in s["arrays"].items():
            lines.append(f"array         {name} {a['dtype']} {a['shape']} crc32 {a['crc32']}")
        print("\n".join(lines))
        return EXIT_OK
    shape = f"n_features={s['n_features']}, n_factors={s['n_factors']}"
    if s["n_fields"] is not None:
        shape += f", n_fields={s['n_fields']}"
    p = s["params"]
    lines = [
        f"file          {s['file']} ({s['file_bytes']:,} bytes, format {s['format_version']})",
        f"model         {s['model']} ({s['estimator']})",
        f"task          {s['task']}" + (f", classes {s['classes']}" if s["classes"] else ""),
        f"shape         {shape}, dtype {s['dtype']}",
        f"solver        {s['solver']}, normalize={s['normalize']}",
        f"training      {s['n_epochs']} epochs, best epoch {s['best_epoch']}",
        "params        " + ", ".join(f"{k}={p[k]}" for k in sorted(p)),
    ]
    if s["input_zero_based"] is not None:
        lines.append(f"input ids     {'zero' if s['input_zero_based'] else 'one'}-based (libsvm)")
    if s["history"]:
        last = s["history"][-1]
        lines.append("last epoch    " + ", ".join(
            f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items()))
    lines += [f"checksum      crc32 {s['crc32']} (verified), sha256 {s['sha256']}",
              f"cfm version   {s['cfm_version']}"]
    print("\n".join(lines))
    return EXIT_OK


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def _silence_stdout():
    """After a broken pipe: point stdout at /dev/null so that the interpreter's
    final flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def main(argv=None):
    """Entry point of the ``cfm`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("CFM_CLI_DEBUG", "").strip() not in ("", "0")
    prog = "cfm"
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help / --version
            return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        prog = f"cfm {args.command}"
        return args.func(args, _Log(getattr(args, "quiet", False)))
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPT
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_PIPE
    except UsageError as exc:
        if debug:
            raise
        print(f"{exc.prog or prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        if debug:
            raise
        print(f"{prog}: error: {_describe(exc)}", file=sys.stderr)
        return EXIT_ERROR


def _describe(exc):
    from .exceptions import DataFormatError, DivergenceError, ModelFileError

    if isinstance(exc, (DataFormatError, ModelFileError, DivergenceError)):
        return str(exc)
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)) and \
            exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, (OSError, ValueError, MemoryError)):
        msg = str(exc) or type(exc).__name__
        return msg if not isinstance(exc, MemoryError) else f"out of memory ({msg})"
    return f"{type(exc).__name__}: {exc} (internal error; rerun with --debug for a traceback)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
