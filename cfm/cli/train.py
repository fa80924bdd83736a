"""``cfm train TRAIN -o MODEL``: train an LR, FM, FFM, FwFM or DeepFM model on a data file."""
import sys
import time

from ._options import (EXIT_OK, MAX_COUNT, UsageError, add_block_rows, add_quiet, add_threads,
                       add_zero_based, class_weight, float_range, fmt_int, int_range,
                       layer_sizes)
from ._paths import check_data_file, check_output
from ._csv import add_options as add_csv_options, train as read_csv_model
from .progress import Progress
from .rank import add_train_options, check_options, train as train_ranker


def add_parser(sub, common):
    t = sub.add_parser("train", parents=[common], help="train a model on a data file",
                       description="Train an LR, FM, FFM, FwFM or DeepFM model on a libsvm / libFM / "
                       "libffm "
                       "text file (plain or gzip) or a .cfmdata cache, streamed in blocks.")
    t.add_argument("train", metavar="TRAIN", nargs="?",
                   help="training data file (or --csv FILE: raw columns)")
    t.add_argument("-o", "--output", metavar="MODEL", required=True, help="model file to write")
    t.add_argument("--model", choices=("lr", "fm", "ffm", "fwfm", "deepfm"), default="fm",
                   help="lr: linear model (FM with 0 factors); fm; ffm: field-aware FM; "
                   "fwfm: field-weighted FM (fields from a libffm file; from a libsvm file one "
                   "field per column up to 64 columns, else one field); "
                   "deepfm: FM + MLP over the fields' embeddings (ffm and deepfm need a libffm "
                   "file, or --csv: one field per column). Default: fm")
    t.add_argument("--task", choices=("binary", "multiclass", "reg", "rank"), default=None,
                   help="binary classification, multiclass classification (a softmax FM or FFM: "
                   "--model fm, lr or ffm, solver adagrad / sgd / ftrl; every distinct label is a "
                   "class) or regression; default: binary when the training labels take "
                   "exactly two values, else reg. rank: a cfm.FMRanker on an interactions "
                   "file (see the ranking options)")
    t.add_argument("--solver", choices=("adagrad", "sgd", "ftrl", "als", "mcmc"),
                   default=None,
                   help="lr / fm / ffm / fwfm: per-sample optimizers adagrad (default), sgd, ftrl; or "
                   "libFM's coordinate-wise solvers als and mcmc (Gibbs sampling; --model "
                   "fm/lr, training file read into memory)")
    t.add_argument("--entry-fields", action="store_true",
                   help="ffm: train on the field of each entry, as libffm and xLearn do (hashed "
                   "data may put one feature under several fields); the model then scores "
                   "libffm data. Default: each column keeps the first field it has")
    t.add_argument("-k", "--factors", type=int_range(1, 256), default=None, metavar="K",
                   help="number of factors (default 8 for fm and deepfm, 4 for ffm)")
    d = t.add_argument_group("deepfm options (--model deepfm)")
    d.add_argument("--hidden", type=layer_sizes, default=None, metavar="N,N,...",
                   help="hidden layer sizes of the MLP (default 256,128; 'none': no hidden "
                   "layer)")
    d.add_argument("--optimizer", choices=("adam", "adagrad"), default=None,
                   help="mini-batch optimizer (default adam)")
    d.add_argument("--batch-size", type=int_range(1, MAX_COUNT), default=None, metavar="N",
                   help="rows per mini-batch (default 256)")
    d.add_argument("--dropout", type=float_range(), default=None, metavar="P",
                   help="fraction of hidden units dropped in training, in [0, 1) (default 0)")
    d.add_argument("--l2-dense", type=float_range(), default=None, metavar="L",
                   help="L2 of the MLP's weights (default 0)")
    d.add_argument("--norm", action="store_true",
                   help="instance-wise L2 normalisation of the rows (off by default for "
                   "deepfm)")
    t.add_argument("-e", "--epochs", type=int_range(1, MAX_COUNT), default=None,
                   help="epochs, or sweeps for als/mcmc (default 10; als 30, mcmc 200)")
    t.add_argument("--burn-in", type=int_range(0, MAX_COUNT), default=None, metavar="N",
                   help="mcmc: sweeps discarded before averaging (default: epochs // 10, "
                   "at most 50)")
    t.add_argument("-r", "--lr", type=float_range(0, low_open=True), default=None,
                   metavar="RATE", help="learning rate (default: the estimator's, 0.1 binary / "
                   "0.15 reg; deepfm 0.001 adam / 0.01 adagrad)")
    t.add_argument("--l2", type=float_range(), default=None, metavar="L",
                   help="L2 of the linear weights and the factors (sets --l2-w and --l2-v)")
    t.add_argument("--l2-w", type=float_range(), default=None, metavar="L")
    t.add_argument("--l2-v", type=float_range(), default=None, metavar="L")
    t.add_argument("--l2-w0", type=float_range(), default=0.0, metavar="L", help="L2 of the bias")
    t.add_argument("--l1", type=float_range(), default=0.0, metavar="L",
                   help="L1 of the linear weights (--solver ftrl only)")
    t.add_argument("--ftrl-beta", type=float_range(), default=1.0, metavar="B")
    t.add_argument("--init-std", type=float_range(), default=None, metavar="S",
                   help="std of the factors' initialisation (default 0.03; 0.1 for als/mcmc; "
                   "0.01 for deepfm)")
    t.add_argument("--no-norm", action="store_true",
                   help="no instance-wise L2 normalisation of the rows (on by default, as in "
                   "xLearn/libffm)")
    t.add_argument("--no-bias", action="store_true", help="no bias term")
    t.add_argument("--no-shuffle", action="store_true",
                   help="visit rows in file order (default: shuffled within each block)")
    t.add_argument("--validate", metavar="FILE", default=None,
                   help="validation file: metric printed per epoch, early stopping and the "
                   "best epoch's model kept")
    t.add_argument("--class-weight", type=class_weight, default=None, metavar="W",
                   help="classifiers: weights of the classes in the loss: 'balanced' "
                   "(n_rows / (n_classes * rows of the class); costs one more pass over the "
                   "file's labels) or LABEL:WEIGHT pairs, e.g. 1:5,0:1 (other labels weigh 1)")
    t.add_argument("--metric", choices=("auc", "logloss", "accuracy", "rmse", "mae"),
                   default=None,
                   help="validation metric (default logloss for binary and multiclass -- the "
                   "multi-class log loss --, rmse for reg; auc: binary only)")
    t.add_argument("--patience", type=int_range(1, MAX_COUNT), default=3, metavar="N",
                   help="early stopping: epochs without improvement (default 3)")
    t.add_argument("--tol", type=float_range(), default=1e-4,
                   help="early stopping: minimum improvement (default 1e-4)")
    t.add_argument("--dtype", choices=("float32", "float64", "float16"), default=None,
                   help="parameter precision (default float32; ffm: float16 factor storage "
                   "on CPUs with AVX2/F16C; float32 for --task multiclass)")
    add_block_rows(t, 100_000, "rows per block when streaming the file (memory ~ one block)")
    add_zero_based(t, "auto", "libsvm column ids: true = as written, false = one-based (shifted "
                   "down), auto = one-based when the file has no id 0 (scikit-learn's rule; "
                   "default). Recorded in the model for 'cfm predict'")
    add_threads(t, "threads (default: all cores; -1 all cores)")
    t.add_argument("--seed", type=int_range(0, 2**32 - 1), default=None, metavar="N",
                   help="random seed, 0 .. 2**32-1 (with --threads 1: bit-for-bit "
                   "reproducible)")
    add_quiet(t, "no progress output")
    add_csv_options(t, train=True)
    add_train_options(t)
    return t


_METRIC_TASK = {"auc": "binary", "logloss": "binary", "accuracy": "binary", "rmse": "reg",
                "mae": "reg"}
# tasks each metric applies to
_METRIC_TASKS = {"auc": ("binary",), "logloss": ("binary", "multiclass"),
                 "accuracy": ("binary", "multiclass"), "rmse": ("reg",), "mae": ("reg",)}


# options of one model family only: (attribute, option, default)
_DEEPFM_ONLY = (("hidden", "--hidden", None), ("optimizer", "--optimizer", None),
                ("batch_size", "--batch-size", None), ("dropout", "--dropout", None),
                ("l2_dense", "--l2-dense", None), ("norm", "--norm", False))
_FM_ONLY = (("solver", "--solver", None), ("l1", "--l1", 0.0), ("ftrl_beta", "--ftrl-beta", 1.0),
            ("burn_in", "--burn-in", None), ("no_norm", "--no-norm", False))


def _check_args(args):
    """Usage errors found from the options alone."""
    if args.metric is not None and args.task not in (None,) + _METRIC_TASKS[args.metric]:
        raise UsageError(f"--metric {args.metric} does not apply to --task {args.task}")
    if args.task == "multiclass" and args.model not in ("fm", "lr", "ffm"):
        raise UsageError(f"--task multiclass needs --model fm, lr or ffm (a softmax model), not "
                         f"{args.model}")
    if args.task == "multiclass" and args.solver in ("als", "mcmc"):
        raise UsageError(f"--task multiclass needs --solver adagrad, sgd or ftrl, not "
                         f"{args.solver}")
    deep = args.model == "deepfm"
    for attr, opt, default in _FM_ONLY if deep else _DEEPFM_ONLY:
        if getattr(args, attr) != default:
            raise UsageError(f"{opt} does not apply to --model {args.model}"
                             + (" (its optimizer is set by --optimizer)" if attr == "solver"
                                else ""))
    if args.l1 > 0 and args.solver != "ftrl":
        raise UsageError("--l1 needs --solver ftrl")
    if args.entry_fields and args.model != "ffm":
        raise UsageError(f"--entry-fields does not apply to --model {args.model}")
    if args.model == "lr" and args.factors is not None:
        raise UsageError("-k/--factors does not apply to --model lr (a linear model)")
    if (args.train is None) == (args.csv is None):
        raise UsageError("give either TRAIN (a data file) or --csv FILE (raw columns)")
    train = args.train if args.csv is None else args.csv
    check_data_file(train, not_stdin="TRAIN must be a file (training reads it once per "
                    "epoch)")
    if args.validate is not None:
        check_data_file(args.validate, not_stdin="--validate must be a file")
    check_output(args.output, [train, args.validate])
    from .._files import check_writable

    check_writable(args.output)  # before training, not after the last epoch


def _n_factors(args):
    if args.model == "lr":
        return 0
    if args.factors is not None:
        return args.factors
    return 4 if args.model == "ffm" else 8


def _params(args):
    """The estimator's parameters from the options."""
    if args.model == "deepfm":
        # options not given keep the estimator's defaults
        given = dict(hidden_layer_sizes=args.hidden, optimizer=args.optimizer,
                     batch_size=args.batch_size, dropout=args.dropout, l2_dense=args.l2_dense,
                     learning_rate=args.lr, n_epochs=args.epochs, init_std=args.init_std,
                     l2_w=args.l2_w if args.l2_w is not None else args.l2,
                     l2_v=args.l2_v if args.l2_v is not None else args.l2)
        return dict({k: v for k, v in given.items() if v is not None},
                    n_factors=_n_factors(args), l2_w0=args.l2_w0, normalize=args.norm,
                    fit_intercept=not args.no_bias, shuffle=not args.no_shuffle,
                    n_iter_no_change=args.patience, tol=args.tol, eval_metric=args.metric,
                    dtype=args.dtype, n_jobs=args.threads, random_state=args.seed,
                    verbose=0 if args.quiet else 1)
    return dict(n_factors=_n_factors(args), solver=args.solver or "adagrad",
                learning_rate=args.lr,
                n_epochs=args.epochs, l2_w0=args.l2_w0,
                l2_w=args.l2_w if args.l2_w is not None else args.l2,
                l2_v=args.l2_v if args.l2_v is not None else args.l2,
                l1=args.l1, ftrl_beta=args.ftrl_beta,
                init_std=args.init_std, normalize=False if args.no_norm else None,
                fit_intercept=not args.no_bias, shuffle=not args.no_shuffle,
                n_iter_no_change=args.patience, tol=args.tol, eval_metric=args.metric,
                dtype=args.dtype, n_jobs=args.threads, random_state=args.seed,
                verbose=0 if args.quiet else 1, n_burn_in=args.burn_in)


def _estimator_class(task, model):
    from .. import (DeepFMClassifier, DeepFMRegressor, FFMClassifier, FFMRegressor,
                    FMClassifier, FMRegressor, FwFMClassifier, FwFMRegressor)

    family = "fm" if model == "lr" else model
    return {("binary", "fm"): FMClassifier, ("reg", "fm"): FMRegressor,
            ("multiclass", "fm"): FMClassifier, ("multiclass", "ffm"): FFMClassifier,
            ("binary", "ffm"): FFMClassifier, ("reg", "ffm"): FFMRegressor,
            ("binary", "fwfm"): FwFMClassifier, ("reg", "fwfm"): FwFMRegressor,
            ("binary", "deepfm"): DeepFMClassifier,
            ("reg", "deepfm"): DeepFMRegressor}[(task, family)]


def _check_format(args, info):
    """The scanned training file can train the model asked for."""
    fmt = info["format"]
    if info["n_rows"] == 0:
        raise ValueError(f"{args.train}: no data rows")
    fielded = args.model in ("ffm", "deepfm")
    if fielded and fmt in ("libsvm", "libfm"):
        raise ValueError(f"{args.train} is a {fmt} file; --model {args.model} needs a libffm "
                         "file (label field:feature:value ...) or a cache made from one")
    if fielded and fmt == "cache" and not info.get("n_fields"):
        raise ValueError(f"{args.train} is a cache made from a libsvm file; --model "
                         f"{args.model} needs field ids (a libffm file)")


def _task(args, info, log):
    """--task, or the task the metric or the training labels imply (logged)."""
    if args.task is not None:
        return args.task
    labels = info.get("label_values_sample", [])
    task = "binary" if len(labels) == 2 else "reg"
    if args.metric is not None:
        task = _METRIC_TASK[args.metric]
    shown = ", ".join(f"{v:g}" for v in list(labels)[:5]) + (", ..." if len(labels) > 5 else "")
    log(f"task: {task} (labels {shown}; set --task to override)")
    return task


def _fit(model, args, info, zero_based, eval_set, callback):
    """Train ``model`` on the training file, the way its solver and the ids need."""
    from .. import iter_blocks
    from ..scoring import read_for_model

    n_features = info["n_features"]
    if args.solver in ("als", "mcmc"):
        # coordinate-wise solvers sweep over columns: the data must be in memory
        Xt, yt = read_for_model(args.train, n_features, zero_based=zero_based,
                                n_jobs=args.threads)
        model.fit(Xt, y=yt, eval_set=eval_set, callback=callback,
                  input_zero_based=bool(zero_based))
    elif info["format"] == "libsvm" and args.zero_based != "auto":
        # fit(path) reads ids with the "auto" rule: stream the blocks ourselves
        def chunks():
            for Xb, yb, _ in iter_blocks(args.train, block_rows=args.block_rows,
                                         n_features=n_features, zero_based=zero_based,
                                         n_jobs=args.threads, allow_nonfinite=False):
                yield Xb, yb
        # every label of the file (the scan's sorted distinct labels): a
        # classifier's classes, whatever the first block holds
        chunks.labels = info.get("label_values_sample")
        model.fit(chunks, eval_set=eval_set, callback=callback,
                  input_zero_based=bool(zero_based))
    else:
        kw = {"fields": "entry"} if args.entry_fields else {}
        model.fit(args.train, eval_set=eval_set, block_rows=args.block_rows, callback=callback,
                  **kw)


def run(args, log):
    from .. import scan_file
    from .._validation import check_estimator_params, check_fit_size
    from ..scoring import read_for_model

    if args.task == "rank":
        return train_ranker(args, log)
    check_options(args)
    _check_args(args)
    params = _params(args)
    try:  # before reading anything (the task is not known yet: the metric's, else binary)
        check_estimator_params(_estimator_class(_METRIC_TASK.get(args.metric, "binary"),
                                      args.model)(**params))
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    t0 = time.perf_counter()
    if args.csv is not None:  # raw columns, encoded by a FieldEncoder saved in the model
        model, (X, y, eval_set) = read_csv_model(args, log, params, _estimator_class)
        progress = Progress(None, log, sys.stderr.isatty())
        try:
            model.fit(X, y, eval_set=eval_set, callback=progress.epoch)
        finally:
            progress.clear()
        return _save(model, args, log, t0)
    # nan / inf labels or values: refused here, at file:line, before any training
    info = scan_file(args.train, zero_based=args.zero_based, allow_nonfinite=False)
    _check_format(args, info)
    task = _task(args, info, log)
    cls = _estimator_class(task, args.model)
    if args.class_weight is not None:
        if task == "reg":
            raise UsageError("--class-weight applies to classification (--task binary or "
                             "multiclass), not regression")
        params["class_weight"] = args.class_weight
    model = cls(**params)
    fmt, n_features = info["format"], info["n_features"]
    # a model sized by a huge id: refused (naming the line) before reading further
    check_fit_size(model, n_features, info.get("n_fields"), source=args.train, info=info)
    zero_based = info.get("zero_based", True) if fmt in ("libsvm", "cache") else True
    what = (f"optimizer={model.optimizer}, hidden={'-'.join(map(str, model.hidden_layer_sizes))}"
            if args.model == "deepfm" else f"solver={model.solver}")
    log(f"training {cls.__name__}(k={params['n_factors']}, {what}) on "
        f"{args.train}: {fmt_int(info['n_rows'])} rows, {fmt_int(n_features)} features, {fmt}"
        + (f", {'zero' if zero_based else 'one'}-based ids" if fmt == "libsvm" else ""))
    eval_set = None
    if args.validate is not None:
        if args.entry_fields:  # with the field of each entry
            eval_set = read_for_model(args.validate, n_features, n_jobs=args.threads,
                                      n_fields=max(int(info.get("n_fields") or 1), 1))
            Xv = eval_set[0]
        else:
            Xv, yv = read_for_model(args.validate, n_features, zero_based=zero_based,
                                    n_jobs=args.threads)
            eval_set = (Xv, yv)
        log(f"validation: {args.validate}, {fmt_int(Xv.shape[0])} rows")
    progress = Progress(None, log, sys.stderr.isatty())  # per-epoch lines and the live bar
    try:
        _fit(model, args, info, zero_based, eval_set, progress.epoch)
    finally:
        progress.clear()
    return _save(model, args, log, t0)


def _save(model, args, log, t0):
    bp = getattr(model, "best_params_", None)
    if bp:  # how the settings were chosen (issue 13; a file never races)
        lr = bp.get("learning_rate")
        log(f"settings: learning_rate {'-' if lr is None else f'{lr:g}'}, normalize "
            f"{bp.get('normalize')}, {bp.get('n_epochs')} epochs ({bp.get('auto')})")
    model.set_params(verbose=0)  # the saved parameters: a loaded model trains silently
    model.save(args.output)
    best = getattr(model, "best_epoch_", model.n_epochs_)
    log(f"saved {args.output} ({model.n_epochs_} epochs, best epoch {best}, "
        f"{time.perf_counter() - t0:.1f}s)")
    return EXIT_OK
