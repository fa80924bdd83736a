"""``cfm train --task rank INTERACTIONS -o MODEL``: train a cfm.FMRanker on
an interactions file (``user item [value ...]`` lines, see
cfm.load_interactions), users and items as one-hot ids.  Called by
``cfm.cli.train`` when ``--task rank`` is given; its own options are declared
here."""
import time

from ._options import EXIT_OK, UsageError, float_range, fmt_int
from ._paths import check_data_file, check_output
from .recommend import _read

# train options that do not apply to a ranker: (attribute, option, default)
_NOT_RANK = (("model", "--model", "fm"), ("solver", "--solver", None),
             ("metric", "--metric", None),
             ("l1", "--l1", 0.0), ("burn_in", "--burn-in", None), ("hidden", "--hidden", None),
             ("optimizer", "--optimizer", None), ("batch_size", "--batch-size", None),
             ("dropout", "--dropout", None), ("l2_dense", "--l2-dense", None),
             ("norm", "--norm", False), ("no_norm", "--no-norm", False),
             ("no_bias", "--no-bias", False), ("l2_w0", "--l2-w0", 0.0))
# ranking options: (attribute, option)
_RANK_ONLY = (("loss", "--loss"), ("negatives", "--negatives"), ("min_value", "--min-value"))


def add_train_options(t):
    """The options of ``cfm train --task rank``."""
    r = t.add_argument_group("ranking options (--task rank: TRAIN is an interactions file of "
                             "'user item [value ...]' lines)")
    r.add_argument("--loss", choices=("bpr", "warp"), default=None,
                   help="pairwise loss (default bpr)")
    r.add_argument("--negatives", choices=("uniform", "popularity"), default=None,
                   help="negative sampling (default uniform)")
    r.add_argument("--min-value", type=float_range(-float("inf")), default=None, metavar="V",
                   help="lines whose value (third column) is >= V are positives (default: "
                   "every line)")


def check_options(args):
    """Usage errors of the ranking options, whatever the task."""
    if args.task != "rank":
        for attr, opt in _RANK_ONLY:
            if getattr(args, attr) is not None:
                raise UsageError(f"{opt} applies to --task rank only")
        return
    for attr, opt, default in _NOT_RANK:
        if getattr(args, attr, default) != default:
            raise UsageError(f"{opt} does not apply to --task rank")


def train(args, log):
    from .. import FMRanker, load_interactions
    from .._files import check_writable

    check_options(args)
    check_data_file(args.train, not_stdin="TRAIN must be a file")
    if args.validate is not None:
        check_data_file(args.validate, not_stdin="--validate must be a file")
    check_output(args.output, [args.train, args.validate])
    check_writable(args.output)
    params = dict(n_factors=args.factors or 32, loss=args.loss or "bpr",
                  negative_sampling=args.negatives or "uniform", n_jobs=args.threads,
                  random_state=args.seed, dtype=args.dtype, n_iter_no_change=args.patience)
    for attr, name in (("epochs", "n_epochs"), ("lr", "learning_rate"),
                       ("init_std", "init_std")):
        if getattr(args, attr) is not None:
            params[name] = getattr(args, attr)
    for attr in ("l2_w", "l2_v"):
        v = getattr(args, attr) if getattr(args, attr) is not None else args.l2
        if v is not None:
            params[attr] = v
    if args.dtype == "float16":
        raise UsageError("--dtype float16 does not apply to --task rank")
    try:
        model = FMRanker(**params)
        model._check_params()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    t0 = time.perf_counter()
    R = load_interactions(args.train, min_value=args.min_value)
    log(f"training FMRanker(k={model.n_factors}, loss={model.loss}) on {args.train}: "
        f"{fmt_int(R.nnz)} positive pairs, {fmt_int(R.shape[0])} users, "
        f"{fmt_int(R.shape[1])} items")
    V = None
    if args.validate is not None:
        V = _read(args.validate, R.shape, log, args.min_value)
        log(f"validation: {args.validate}, {fmt_int(V.nnz)} held-out pairs (NDCG@10, early "
            f"stopping after {args.patience} epochs without improvement)")
    model.fit(R, eval_set=V, callback=lambda rec: log(
        f"epoch {rec['epoch']:4d}  {model.loss} loss {rec['train_' + model.loss]:.5f}"
        + (f"  ndcg@10 {rec['ndcg@10']:.5f}" if "ndcg@10" in rec else "")
        + f"  {rec['time']:.2f}s"))
    model.save(args.output)
    log(f"saved {args.output} ({model.n_epochs_} epochs, best epoch {model.best_epoch_}, "
        f"{time.perf_counter() - t0:.1f}s)")
    return EXIT_OK
