"""``cfm recommend MODEL -o RECS``: the top-k items of users from a ranking
model (``cfm train --task rank``), or ranking metrics on held-out
interactions (``--eval``)."""
import os
import sys

from ._options import EXIT_OK, UsageError, add_quiet, add_threads, float_range, int_range
from ._paths import check_data_file, check_model_path, check_output


def add_parser(sub, common):
    r = sub.add_parser("recommend", parents=[common], help="top-k items from a ranking model",
                       description="Write the k best items of each user of a ranking model "
                       "(cfm.FMRanker), one 'user<TAB>item<TAB>score' line per item, best "
                       "first; or, with --eval, print precision@k, recall@k, NDCG@k and "
                       "MAP@k of held-out interactions.")
    r.add_argument("model", metavar="MODEL", help="cfm ranking model file")
    r.add_argument("-o", "--output", metavar="OUT", default="-",
                   help="output file; '-' (default) writes stdout")
    r.add_argument("-k", type=int_range(1, 100_000), default=10, help="items per user "
                   "(default 10)")
    r.add_argument("--users", metavar="IDS", default=None,
                   help="user ids: a comma-separated list, or a file of one id per line "
                   "(default: every user of the model)")
    r.add_argument("--exclude", metavar="FILE", default=None,
                   help="interactions file ('user item [value]' lines, e.g. the training "
                   "file): items never recommended to that user")
    r.add_argument("--eval", metavar="TEST", default=None,
                   help="held-out interactions file: print the ranking metrics of its users "
                   "(ranking every item minus --exclude) instead of recommendations")
    r.add_argument("--min-value", type=float_range(-float("inf")), default=None, metavar="V",
                   help="--eval: lines whose value is >= V are relevant (default: every line)")
    add_threads(r)
    add_quiet(r, "no summary on stderr")
    return r


def _users(spec, n_users):
    import numpy as np

    if spec is None:
        return np.arange(n_users)
    if os.path.exists(spec):
        with open(spec) as f:
            text = f.read().split()
    else:
        text = [t for t in spec.split(",") if t.strip()]
    try:
        ids = np.array([int(t) for t in text], dtype=np.int64)
    except ValueError:
        raise UsageError(f"--users: expected integer ids (a list or a file), got {spec!r}") \
            from None
    bad = ids[(ids < 0) | (ids >= n_users)]
    if len(bad):
        raise ValueError(f"--users: user {int(bad[0])} is not in the model (ids 0 .. "
                         f"{n_users - 1})")
    return ids


def _read(path, shape, log, min_value=None):
    """An interactions file as a matrix of the model's shape; pairs of users
    or items the model does not have are dropped (they cannot be ranked)."""
    from .. import load_interactions

    M = load_interactions(path, min_value=min_value)
    if M.shape[0] > shape[0] or M.shape[1] > shape[1]:
        kept = M[:shape[0]][:, :shape[1]]
        log(f"{path}: {M.nnz - kept.nnz} pairs of users or items unknown to the model ignored")
        M = kept
    M.resize(shape)
    return M


def run(args, log):
    from .. import FMRanker, load
    from .._files import atomic_output

    check_model_path(args.model)
    for path in (args.exclude, args.eval):
        if path is not None:
            check_data_file(path, not_stdin="interactions must be a file")
    if args.output != "-":
        check_output(args.output, [args.model, args.exclude, args.eval])
    model = load(args.model, scoring_only=True)
    if not isinstance(model, FMRanker):
        raise ValueError(f"{args.model} holds a {type(model).__name__}, not a ranking model "
                         "(train one with 'cfm train --task rank')")
    shape = (model.n_users_, model.n_items_)
    exclude = _read(args.exclude, shape, log) if args.exclude else None
    if args.eval is not None:
        test = _read(args.eval, shape, log, args.min_value)
        m = model.evaluate(test, args.k, exclude=exclude, n_jobs=args.threads)
        text = "".join(f"{name}\t{v:.6g}\n" for name, v in m.items())
        if args.output == "-":
            sys.stdout.write(text)
        else:
            with atomic_output(args.output) as f:
                f.write(text.encode())
        return EXIT_OK
    users = _users(args.users, model.n_users_)
    items, scores = model.recommend(users, args.k, exclude=exclude, n_jobs=args.threads)
    lines = []
    for r, u in enumerate(users.tolist()):
        for i, s in zip(items[r].tolist(), scores[r].tolist()):
            if i >= 0:
                lines.append(f"{u}\t{i}\t{s:.7g}\n")
    if args.output == "-":
        sys.stdout.write("".join(lines))
        sys.stdout.flush()
    else:
        with atomic_output(args.output) as f:
            f.write("".join(lines).encode())
    log(f"{len(users)} users, top {args.k} of {model.n_items_} items")
    return EXIT_OK
