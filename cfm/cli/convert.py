"""``cfm convert TEXT``: a text data file to a binary ``.cfmdata`` cache."""
import os
import time

from ._options import EXIT_OK, add_quiet, add_threads, add_zero_based, fmt_int
from ._paths import cache_header, check_data_file, check_output, is_cache


def add_parser(sub, common):
    c = sub.add_parser("convert", parents=[common], help="convert a text file to a .cfmdata cache",
                       description="Convert a libsvm / libFM / libffm text file (plain or gzip) "
                       "to cfm's binary .cfmdata cache (memory-mapped, checksummed), which "
                       "'cfm train' and 'cfm predict' read without parsing.")
    c.add_argument("text", metavar="TEXT", help="text data file")
    c.add_argument("-o", "--output", metavar="OUT", default=None,
                   help="cache file (default: TEXT.cfmdata)")
    c.add_argument("--format", choices=("auto", "libsvm", "libfm", "libffm"), default="auto")
    add_zero_based(c, "auto")
    c.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    c.add_argument("--entry-fields", action="store_true",
                   help="libffm: also store the field of each entry, the entries as written "
                   "(for 'cfm train --model ffm --entry-fields' and models that take "
                   "per-entry fields)")
    add_threads(c)
    add_quiet(c)
    return c


def run(args, log):
    from .. import convert_to_cache

    check_data_file(args.text, not_stdin="TEXT must be a file")
    if is_cache(args.text):
        raise ValueError(f"{args.text} is already a .cfmdata cache")
    if args.output is not None:
        check_output(args.output, [args.text])
    t0 = time.perf_counter()
    dst = convert_to_cache(args.text, args.output, format=args.format, dtype=args.dtype,
                           zero_based=args.zero_based, n_jobs=args.threads,
                           entry_fields=args.entry_fields)
    if not os.path.isfile(dst):  # e.g. /dev/null, written in place: nothing to read back
        log(f"wrote {dst} ({time.perf_counter() - t0:.1f}s)")
        return EXIT_OK
    h = cache_header(dst)
    log(f"wrote {dst}: {fmt_int(h['n_rows'])} rows, {fmt_int(h['n_features'])} features, "
        f"{fmt_int(h['nnz'])} values, {os.path.getsize(dst) / 1e6:.1f} MB "
        f"({time.perf_counter() - t0:.1f}s)")
    return EXIT_OK
