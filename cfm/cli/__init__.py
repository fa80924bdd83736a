"""The ``cfm`` command line: train, predict, convert, info.

::

    cfm train train.svm -o model.cfm --model fm -k 8 --epochs 10 --validate valid.svm
    cfm predict model.cfm test.svm -o pred.txt --eval
    zcat test.svm.gz | cfm predict model.cfm - | head
    cfm convert train.svm            # -> train.svm.cfmdata (binary cache)
    cfm info model.cfm [--json]
    cfm train --task rank u.data -o rank.cfm --min-value 4 -k 32   # FMRanker
    cfm recommend rank.cfm -k 10 --exclude u.data -o recs.tsv

Exit status: 0 success; 1 an error in the data, the model file or the system
(missing file, malformed line, wrong kind of file, divergence...); 2 bad
command-line usage or option values; 130 interrupted (Ctrl-C); 141 the output
pipe was closed by the reader (e.g. ``| head``), silently, like a tool killed
by SIGPIPE.  Errors are reported as one line on stderr, ``cfm <command>:
error: <message>``; ``--debug`` (or ``CFM_CLI_DEBUG=1``) shows the Python
traceback instead.

A front end: the commands use cfm's public API (estimators, ``fit``,
``save``, ``cfm.load``, ``predict_file``, the data functions) and a few
low helpers (``cfm._files``, ``cfm.exceptions``); nothing in cfm imports
this package.  Layout: one module per command (``train``, ``predict``,
``convert``, ``info``: each ``add_parser(sub, common)`` and ``run(args,
log)``), ``_options`` (parser, option types, shared options, exit
statuses), ``_paths`` (checks of input and output paths), ``progress``
(the per-epoch training callback).
"""
import argparse
import os
import sys

from . import convert, info, predict, recommend, train
from ._options import (EXIT_ERROR, EXIT_INTERRUPT, EXIT_OK, EXIT_PIPE, EXIT_USAGE, Log, Parser,
                       UsageError)

COMMANDS = (train, predict, recommend, convert, info)  # a module each: add_parser(), run()

__all__ = ["main", "build_parser", "UsageError", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE",
           "EXIT_INTERRUPT", "EXIT_PIPE"]


def build_parser():
    """The ``cfm`` argument parser; each command's ``func`` is its ``run``."""
    from .. import __version__

    p = Parser(prog="cfm", description="Fast factorization machines (FM, FFM, DeepFM) from the "
                "shell.",
               epilog="Run 'cfm <command> --help' for the options of a command.")
    p.add_argument("--version", action="version", version=f"cfm {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true",
                        help="show Python tracebacks on errors (also CFM_CLI_DEBUG=1)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(sub, common).set_defaults(func=command.run)
    return p


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
        return args.func(args, Log(getattr(args, "quiet", False)))
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_PIPE
    except (KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - one line, no traceback
        if debug:
            raise
        status, message = _report(exc, prog)
        print(message, file=sys.stderr)
        return status


def _report(exc, prog):
    """The exit status and the one line on stderr for an error of command ``prog``."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPT, f"\n{prog}: interrupted"
    if isinstance(exc, UsageError):
        return EXIT_USAGE, f"{exc.prog or prog}: error: {exc}"
    return EXIT_ERROR, f"{prog}: error: {_describe(exc)}"


def _describe(exc):
    """One line for an error: the message of cfm's own errors and of OSError /
    ValueError, else the exception's type and a hint to rerun with --debug."""
    from ..exceptions import DataFormatError, DivergenceError, ModelFileError

    if isinstance(exc, (DataFormatError, ModelFileError, DivergenceError)):
        return str(exc)
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)) and \
            exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, (OSError, ValueError, MemoryError)):
        msg = str(exc) or type(exc).__name__
        return msg if not isinstance(exc, MemoryError) else f"out of memory ({msg})"
    return f"{type(exc).__name__}: {exc} (internal error; rerun with --debug for a traceback)"

